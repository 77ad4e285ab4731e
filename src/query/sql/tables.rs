//! The `spans`, `logs` and `metrics` tables: DataFusion table providers over
//! the storage traits.
//!
//! Each provider declares which `WHERE` conjuncts it takes over (time range,
//! service, operation, trace id, metric name and labels, full-text search)
//! and turns them into a store scan, so a query reads only the partitions,
//! index ranges and series it needs. Pushed-down conjuncts are applied
//! exactly by the store, so DataFusion does not re-check them, and a
//! `count(*)` over logs asks the index for counts without reading records.
//! Only the projected columns are built.
//!
//! The scan runs on a blocking thread and hands record batches to the query
//! through a small bounded channel: when the query stops early (a `LIMIT`,
//! the row limit, the deadline) the channel closes and the scan stops at
//! its next batch.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{
    ArrayRef, BooleanBuilder, DictionaryArray, Float64Builder, Int32Array, Int32Builder,
    Int64Builder, MapBuilder, MapFieldNames, StringArray, StringBuilder,
    TimestampNanosecondBuilder,
};
use datafusion::arrow::datatypes::Int32Type;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result as DfResult, ScalarValue};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{
    BinaryExpr, Expr, Operator, TableProviderFilterPushDown, TableType,
};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{
    Count, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet,
};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
    SendableRecordBatchStream,
};

use crate::model::{
    label, Attributes, LabelMatcher, LogRecord, MatchOp, Series, Span, TraceId, METRIC_NAME,
};
use crate::storage::logs::{LogChunk, LogField, LogFilter, LogScan, SEVERITY_CLASSES};
use crate::storage::traces::{SpanChunk, SpanHead, SpanScan};
use crate::storage::{LogStore, MetricStore, ScanStats, StorageError, TraceStore};

/// Rows per record batch a scan produces.
const BATCH_ROWS: usize = 8192;
/// Record batches buffered between a scan thread and the query.
const CHANNEL_BATCHES: usize = 4;
/// Name of the full-text filter function over the whole log record.
pub const SEARCH_FN: &str = "search";
/// Name of the full-text filter function over one text column.
pub const MATCH_FN: &str = "text_match";

fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))
}

fn map_type() -> DataType {
    DataType::Map(
        Arc::new(Field::new(
            "entries",
            DataType::Struct(
                vec![
                    Field::new("keys", DataType::Utf8, false),
                    Field::new("values", DataType::Utf8, true),
                ]
                .into(),
            ),
            false,
        )),
        false,
    )
}

fn map_builder() -> MapBuilder<StringBuilder, StringBuilder> {
    MapBuilder::new(
        Some(MapFieldNames {
            entry: "entries".into(),
            key: "keys".into(),
            value: "values".into(),
        }),
        StringBuilder::new(),
        StringBuilder::new(),
    )
}

fn push_map<'a>(
    b: &mut MapBuilder<StringBuilder, StringBuilder>,
    entries: impl Iterator<Item = (&'a str, String)>,
) {
    let mut v: Vec<(&str, String)> = entries.collect();
    v.sort_by(|a, b| a.0.cmp(b.0));
    for (k, val) in v {
        b.keys().append_value(k);
        b.values().append_value(val);
    }
    // Appending an entry list cannot fail for a non-null map.
    let _ = b.append(true);
}

fn attrs_map(b: &mut MapBuilder<StringBuilder, StringBuilder>, a: &Attributes) {
    push_map(b, a.iter().map(|(k, v)| (k.as_str(), v.to_text())));
}

/// The signal a table reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    Spans,
    Logs,
    Metrics,
}

impl Table {
    pub fn name(self) -> &'static str {
        match self {
            Table::Spans => "spans",
            Table::Logs => "logs",
            Table::Metrics => "metrics",
        }
    }

    pub fn schema(self) -> SchemaRef {
        let f = |n: &str, t: DataType, null: bool| Field::new(n, t, null);
        let s = DataType::Utf8;
        Arc::new(Schema::new(match self {
            Table::Spans => vec![
                f("trace_id", s.clone(), false),
                f("span_id", s.clone(), false),
                f("parent_span_id", s.clone(), true),
                f("service", s.clone(), false),
                f("name", s.clone(), false),
                f("kind", s.clone(), false),
                f("start_time", ts_type(), false),
                f("end_time", ts_type(), false),
                f("duration_ns", DataType::Int64, false),
                f("duration_ms", DataType::Float64, false),
                f("error", DataType::Boolean, false),
                f("status_code", s.clone(), false),
                f("status_message", s.clone(), false),
                f("attributes", map_type(), false),
                f("resource", map_type(), false),
            ],
            Table::Logs => vec![
                f("timestamp", ts_type(), false),
                f("observed_timestamp", ts_type(), false),
                f("severity", s.clone(), false),
                f("severity_number", DataType::Int32, false),
                f("severity_text", s.clone(), false),
                f("service", s.clone(), false),
                f("body", s.clone(), false),
                f("trace_id", s.clone(), true),
                f("span_id", s.clone(), true),
                f("attributes", map_type(), false),
                f("resource", map_type(), false),
            ],
            Table::Metrics => vec![
                f("metric", s.clone(), false),
                f("labels", map_type(), false),
                f("job", s.clone(), true),
                f("instance", s.clone(), true),
                f("timestamp", ts_type(), false),
                f("value", DataType::Float64, false),
            ],
        }))
    }

    fn time_column(self) -> &'static str {
        match self {
            Table::Spans => "start_time",
            Table::Logs | Table::Metrics => "timestamp",
        }
    }

    fn eq_columns(self) -> &'static [&'static str] {
        match self {
            Table::Spans => &["service", "name", "trace_id"],
            Table::Logs => &["service", "trace_id", "span_id"],
            Table::Metrics => &["metric", "job", "instance"],
        }
    }
}

/// One pushed-down condition.
#[derive(Debug, Clone, PartialEq)]
enum Cond {
    /// Time in `[lo, hi)` nanoseconds.
    Time(u64, u64),
    Eq(String, String),
    /// `map['key'] = 'value'` on the labels (metrics) or attributes (logs).
    MapEq(String, String),
    /// `search('query')`: the log search syntax.
    Search(String),
    /// `text_match(body, 'words')`.
    Text(String),
}

fn literal_str(e: &Expr) -> Option<&str> {
    match e {
        Expr::Literal(v, _) => scalar_str(v),
        _ => None,
    }
}

fn scalar_str(v: &ScalarValue) -> Option<&str> {
    match v {
        ScalarValue::Utf8(Some(s))
        | ScalarValue::LargeUtf8(Some(s))
        | ScalarValue::Utf8View(Some(s)) => Some(s),
        ScalarValue::Dictionary(_, inner) => scalar_str(inner),
        _ => None,
    }
}

/// A timestamp literal in nanoseconds since the epoch (negative clamps to 0).
fn literal_ns(e: &Expr) -> Option<u64> {
    let v: i128 = match e {
        Expr::Literal(ScalarValue::TimestampNanosecond(Some(v), _), _) => *v as i128,
        Expr::Literal(ScalarValue::TimestampMicrosecond(Some(v), _), _) => *v as i128 * 1_000,
        Expr::Literal(ScalarValue::TimestampMillisecond(Some(v), _), _) => *v as i128 * 1_000_000,
        Expr::Literal(ScalarValue::TimestampSecond(Some(v), _), _) => *v as i128 * 1_000_000_000,
        _ => return None,
    };
    Some(v.clamp(0, u64::MAX as i128) as u64)
}

fn column_name(e: &Expr) -> Option<&str> {
    match e {
        Expr::Column(c) => Some(c.name.as_str()),
        _ => None,
    }
}

/// `map_column['key']` as DataFusion plans it.
fn map_access<'a>(e: &'a Expr, column: &str) -> Option<&'a str> {
    match e {
        Expr::ScalarFunction(f) if f.name() == "get_field" && f.args.len() == 2 => {
            (column_name(&f.args[0])? == column).then_some(())?;
            literal_str(&f.args[1])
        }
        _ => None,
    }
}

/// The condition an expression pushes down, and whether the store applies
/// it exactly (then DataFusion does not re-check it).
fn classify(
    table: Table,
    label_columns: &[String],
    e: &Expr,
) -> Option<(Cond, TableProviderFilterPushDown)> {
    use TableProviderFilterPushDown::{Exact, Inexact};
    match e {
        Expr::ScalarFunction(f) if table == Table::Logs && f.name() == SEARCH_FN => {
            let q = literal_str(f.args.first()?)?;
            (f.args.len() == 1).then(|| (Cond::Search(q.to_string()), Exact))
        }
        Expr::ScalarFunction(f) if table == Table::Logs && f.name() == MATCH_FN => {
            (f.args.len() == 2 && column_name(&f.args[0])? == "body").then_some(())?;
            let q = literal_str(&f.args[1])?;
            Some((Cond::Text(q.to_string()), Exact))
        }
        Expr::Between(b) if !b.negated => {
            (column_name(&b.expr)? == table.time_column()).then_some(())?;
            let (lo, hi) = (literal_ns(&b.low)?, literal_ns(&b.high)?);
            Some((Cond::Time(lo, hi.saturating_add(1)), Exact))
        }
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            let (col, lit, op) = match (column_name(left), column_name(right)) {
                (Some(_), None) => (left.as_ref(), right.as_ref(), *op),
                (None, Some(_)) => (right.as_ref(), left.as_ref(), op.swap()?),
                _ => {
                    // `map['key'] = 'value'`
                    if *op != Operator::Eq {
                        return None;
                    }
                    let map_col = match table {
                        Table::Metrics => "labels",
                        Table::Logs => "attributes",
                        Table::Spans => return None,
                    };
                    let (key, v) = match (map_access(left, map_col), map_access(right, map_col)) {
                        (Some(k), None) => (k, literal_str(right)?),
                        (None, Some(k)) => (k, literal_str(left)?),
                        _ => return None,
                    };
                    // Metric labels match exactly; a log attribute term also
                    // matches keys of a structured body, so DataFusion
                    // re-checks the column.
                    let exact = if table == Table::Metrics {
                        Exact
                    } else {
                        Inexact
                    };
                    return Some((Cond::MapEq(key.to_string(), v.to_string()), exact));
                }
            };
            let name = column_name(col)?;
            if name == table.time_column() {
                let t = literal_ns(lit)?;
                let (lo, hi) = match op {
                    Operator::Gt => (t.saturating_add(1), u64::MAX),
                    Operator::GtEq => (t, u64::MAX),
                    Operator::Lt => (0, t),
                    Operator::LtEq => (0, t.saturating_add(1)),
                    Operator::Eq => (t, t.saturating_add(1)),
                    _ => return None,
                };
                return Some((Cond::Time(lo, hi), Exact));
            }
            let label_column = label_columns.iter().any(|c| c == name);
            if op == Operator::Eq && (table.eq_columns().contains(&name) || label_column) {
                return Some((
                    Cond::Eq(name.to_string(), literal_str(lit)?.to_string()),
                    Exact,
                ));
            }
            None
        }
        _ => None,
    }
}

/// What a scan must do: the pushed-down conditions, combined.
#[derive(Debug, Clone, Default)]
struct Plan {
    start_ns: u64,
    end_ns: u64,
    eq: Vec<(String, String)>,
    map_eq: Vec<(String, String)>,
    search: Vec<String>,
    text: Vec<String>,
}

impl Plan {
    fn from_filters(table: Table, label_columns: &[String], filters: &[Expr]) -> Plan {
        let mut p = Plan {
            end_ns: u64::MAX,
            ..Default::default()
        };
        for f in filters {
            match classify(table, label_columns, f).map(|c| c.0) {
                Some(Cond::Time(lo, hi)) => {
                    p.start_ns = p.start_ns.max(lo);
                    p.end_ns = p.end_ns.min(hi);
                }
                Some(Cond::Eq(c, v)) => p.eq.push((c, v)),
                Some(Cond::MapEq(k, v)) => p.map_eq.push((k, v)),
                Some(Cond::Search(q)) => p.search.push(q),
                Some(Cond::Text(q)) => p.text.push(q),
                None => {}
            }
        }
        p
    }

    /// The single value a column must equal; `Err` when two conditions
    /// contradict each other (the scan is empty).
    fn eq_value(&self, col: &str) -> Result<Option<&str>, ()> {
        let mut out: Option<&str> = None;
        for (c, v) in &self.eq {
            if c == col {
                match out {
                    Some(o) if o != v => return Err(()),
                    _ => out = Some(v),
                }
            }
        }
        Ok(out)
    }

    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.start_ns > 0 || self.end_ns < u64::MAX {
            parts.push(format!("time=[{}, {})", self.start_ns, self.end_ns));
        }
        for (c, v) in &self.eq {
            parts.push(format!("{c}={v:?}"));
        }
        for (k, v) in &self.map_eq {
            parts.push(format!("[{k:?}]={v:?}"));
        }
        for q in &self.search {
            parts.push(format!("search({q:?})"));
        }
        for q in &self.text {
            parts.push(format!("text_match(body, {q:?})"));
        }
        parts.join(", ")
    }
}

/// The stores a query reads.
#[derive(Clone)]
pub struct Sources {
    pub traces: Arc<dyn TraceStore>,
    pub logs: Arc<dyn LogStore>,
    pub metrics: Arc<dyn MetricStore>,
}

/// A table provider over one signal.
pub struct SignalTable {
    table: Table,
    schema: SchemaRef,
    sources: Sources,
    /// `metrics` only: one dictionary-encoded column per label name.
    label_columns: Vec<String>,
}

/// Most label columns the `metrics` table gets (label names in sort order).
pub const MAX_LABEL_COLUMNS: usize = 256;

impl fmt::Debug for SignalTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SignalTable({})", self.table.name())
    }
}

impl SignalTable {
    pub fn new(table: Table, sources: Sources) -> Result<Self, StorageError> {
        let mut schema = table.schema();
        let mut label_columns = Vec::new();
        if table == Table::Metrics {
            // Every label name becomes a column of its own, so grouping and
            // filtering by a label need no map lookups per row.
            let fixed: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
            label_columns = sources
                .metrics
                .label_names(&[], i64::MIN, i64::MAX)?
                .into_iter()
                .filter(|n| n != METRIC_NAME && !fixed.contains(n))
                .take(MAX_LABEL_COLUMNS)
                .collect();
            let mut fields: Vec<Field> = schema.fields().iter().map(|f| (**f).clone()).collect();
            fields.extend(label_columns.iter().map(|n| {
                Field::new(
                    n,
                    DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
                    true,
                )
            }));
            schema = Arc::new(Schema::new(fields));
        }
        Ok(SignalTable {
            table,
            schema,
            sources,
            label_columns,
        })
    }
}

#[async_trait]
impl TableProvider for SignalTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        filters
            .iter()
            .map(|f| match classify(self.table, &self.label_columns, f) {
                Some((Cond::Search(q), how)) => match crate::query::logs::parse(&q) {
                    Ok(_) => Ok(how),
                    Err(e) => Err(DataFusionError::Plan(format!("search({q:?}): {e}"))),
                },
                Some((_, how)) => Ok(how),
                None => Ok(TableProviderFilterPushDown::Unsupported),
            })
            .collect()
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let columns: Vec<usize> = match projection {
            Some(p) => p.clone(),
            None => (0..self.schema.fields().len()).collect(),
        };
        let schema = Arc::new(self.schema.project(&columns)?);
        let names: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
        let plan = Plan::from_filters(self.table, &self.label_columns, filters);
        Ok(Arc::new(ScanExec::new(ScanJob {
            table: self.table,
            schema,
            names,
            plan,
            limit,
            sources: self.sources.clone(),
        })))
    }
}

/// Everything one scan needs, movable to its thread.
#[derive(Clone)]
struct ScanJob {
    table: Table,
    /// The projected schema and its column names.
    schema: SchemaRef,
    names: Vec<String>,
    plan: Plan,
    limit: Option<usize>,
    sources: Sources,
}

impl ScanJob {
    fn wants(&self, col: &str) -> bool {
        self.names.iter().any(|n| n == col)
    }

    /// A batch of `rows` rows with no columns (what `count(*)` reads).
    fn empty_batch(&self, rows: usize) -> Result<RecordBatch, StorageError> {
        RecordBatch::try_new_with_options(
            self.schema.clone(),
            vec![],
            &RecordBatchOptions::new().with_row_count(Some(rows)),
        )
        .map_err(|e| StorageError::Backend(e.to_string()))
    }

    fn run(&self, out: &mut dyn FnMut(RecordBatch) -> bool) -> Result<ScanStats, StorageError> {
        match self.table {
            Table::Spans => self.run_spans(out),
            Table::Logs => self.run_logs(out),
            Table::Metrics => self.run_metrics(out),
        }
    }

    fn run_spans(
        &self,
        out: &mut dyn FnMut(RecordBatch) -> bool,
    ) -> Result<ScanStats, StorageError> {
        let p = &self.plan;
        let (Ok(service), Ok(name), Ok(trace)) = (
            p.eq_value("service"),
            p.eq_value("name"),
            p.eq_value("trace_id"),
        ) else {
            return Ok(ScanStats::default());
        };
        let trace_id = match trace {
            Some(t) => match TraceId::from_hex(t) {
                Ok(id) => Some(id),
                // No stored trace has a malformed id.
                Err(_) => return Ok(ScanStats::default()),
            },
            None => None,
        };
        let full = [
            "parent_span_id",
            "status_code",
            "status_message",
            "attributes",
            "resource",
        ]
        .iter()
        .any(|c| self.wants(c));
        let q = SpanScan {
            start_ns: p.start_ns,
            end_ns: p.end_ns,
            service: service.map(str::to_string),
            name: name.map(str::to_string),
            trace_id,
            limit: self.limit,
            full,
        };
        let mut failed = None;
        let stats = self
            .sources
            .traces
            .scan_spans(&q, &mut |chunk| match chunk {
                SpanChunk::Heads(h) => {
                    send_batches(&h, |c| self.span_batch(c, &[]), out, &mut failed)
                }
                SpanChunk::Spans(s) => send_batches(
                    &s,
                    |c| {
                        let heads: Vec<SpanHead> = c.iter().map(SpanHead::of).collect();
                        self.span_batch(&heads, c)
                    },
                    out,
                    &mut failed,
                ),
            })?;
        failed.map_or(Ok(stats), Err)
    }

    /// One batch of spans; `full` holds the records when the projection
    /// needs more than the heads.
    fn span_batch(&self, heads: &[SpanHead], full: &[Span]) -> Result<RecordBatch, StorageError> {
        if self.names.is_empty() {
            return self.empty_batch(heads.len());
        }
        let n = heads.len();
        let strings = |f: &dyn Fn(usize) -> Option<String>| string_column(n, f);
        let times = |f: &dyn Fn(&SpanHead) -> u64| time_column(n, |i| f(&heads[i]));
        let span = |i: usize| full.get(i);
        let mut cols: Vec<ArrayRef> = Vec::with_capacity(self.names.len());
        for name in &self.names {
            cols.push(match name.as_str() {
                "trace_id" => strings(&|i| Some(heads[i].trace_id.to_hex())),
                "span_id" => strings(&|i| Some(heads[i].span_id.to_hex())),
                "parent_span_id" => strings(&|i| span(i)?.parent_span_id.map(|p| p.to_hex())),
                "service" => strings(&|i| Some(heads[i].service.clone())),
                "name" => strings(&|i| Some(heads[i].name.clone())),
                "kind" => strings(&|i| Some(heads[i].kind.as_str().to_string())),
                "start_time" => times(&|h| h.start_ns),
                "end_time" => times(&|h| h.start_ns.saturating_add(h.duration_ns)),
                "duration_ns" => {
                    let mut b = Int64Builder::with_capacity(n);
                    for h in heads {
                        b.append_value(h.duration_ns.min(i64::MAX as u64) as i64);
                    }
                    Arc::new(b.finish())
                }
                "duration_ms" => {
                    let mut b = Float64Builder::with_capacity(n);
                    for h in heads {
                        b.append_value(h.duration_ns as f64 / 1e6);
                    }
                    Arc::new(b.finish())
                }
                "error" => {
                    let mut b = BooleanBuilder::with_capacity(n);
                    for h in heads {
                        b.append_value(h.error);
                    }
                    Arc::new(b.finish())
                }
                "status_code" => strings(&|i| {
                    Some(
                        match span(i).map(|s| s.status.code) {
                            Some(crate::model::StatusCode::Ok) => "ok",
                            Some(crate::model::StatusCode::Error) => "error",
                            _ => "unset",
                        }
                        .to_string(),
                    )
                }),
                "status_message" => strings(&|i| {
                    Some(
                        span(i)
                            .map(|s| s.status.message.clone())
                            .unwrap_or_default(),
                    )
                }),
                "attributes" | "resource" => {
                    let mut b = map_builder();
                    for i in 0..n {
                        match span(i) {
                            Some(s) if name == "attributes" => attrs_map(&mut b, &s.attributes),
                            Some(s) => attrs_map(&mut b, &s.resource.attributes),
                            None => push_map(&mut b, std::iter::empty()),
                        }
                    }
                    Arc::new(b.finish())
                }
                other => return Err(StorageError::Backend(format!("spans: no column {other}"))),
            });
        }
        RecordBatch::try_new(self.schema.clone(), cols)
            .map_err(|e| StorageError::Backend(e.to_string()))
    }

    fn run_logs(
        &self,
        out: &mut dyn FnMut(RecordBatch) -> bool,
    ) -> Result<ScanStats, StorageError> {
        let p = &self.plan;
        let mut filters = Vec::new();
        for (c, v) in &p.eq {
            let field = match c.as_str() {
                "service" => LogField::Service,
                "trace_id" => LogField::TraceId,
                "span_id" => LogField::SpanId,
                _ => continue,
            };
            filters.push(LogFilter::Term {
                field,
                value: v.clone(),
            });
        }
        for (k, v) in &p.map_eq {
            filters.push(LogFilter::Term {
                field: LogField::Attribute(k.clone()),
                value: v.clone(),
            });
        }
        for q in &p.search {
            // Already validated when the query was planned.
            filters.push(
                crate::query::logs::parse(q).map_err(|e| StorageError::Backend(e.to_string()))?,
            );
        }
        for t in &p.text {
            filters.push(LogFilter::Phrase(t.clone()));
        }
        let filter = match filters.len() {
            0 => LogFilter::All,
            1 => filters.remove(0),
            _ => LogFilter::And(filters),
        };
        let q = LogScan {
            filter,
            start_ns: p.start_ns,
            end_ns: p.end_ns,
            limit: self.limit,
            count_only: self.names.is_empty(),
        };
        let mut failed = None;
        let stats = self.sources.logs.scan(&q, &mut |chunk| match chunk {
            LogChunk::Count(n) => match self.empty_batch(n as usize) {
                Ok(b) => out(b),
                Err(e) => {
                    failed = Some(e);
                    false
                }
            },
            LogChunk::Records(r) => send_batches(&r, |c| self.log_batch(c), out, &mut failed),
        })?;
        failed.map_or(Ok(stats), Err)
    }

    fn log_batch(&self, recs: &[LogRecord]) -> Result<RecordBatch, StorageError> {
        if self.names.is_empty() {
            return self.empty_batch(recs.len());
        }
        let n = recs.len();
        let strings = |f: &dyn Fn(&LogRecord) -> Option<String>| string_column(n, |i| f(&recs[i]));
        let times = |f: &dyn Fn(&LogRecord) -> u64| time_column(n, |i| f(&recs[i]));
        let mut cols: Vec<ArrayRef> = Vec::with_capacity(self.names.len());
        for name in &self.names {
            cols.push(match name.as_str() {
                "timestamp" => times(&|r| r.time_ns),
                "observed_timestamp" => times(&|r| r.observed_time_ns),
                "severity" => strings(&|r| {
                    let class = crate::storage::logs::severity_class(r.severity_number as i64);
                    Some(SEVERITY_CLASSES[class].to_string())
                }),
                "severity_number" => {
                    let mut b = Int32Builder::with_capacity(n);
                    for r in recs {
                        b.append_value(r.severity_number);
                    }
                    Arc::new(b.finish())
                }
                "severity_text" => strings(&|r| Some(r.severity_text.clone())),
                "service" => strings(&|r| Some(r.service_name().to_string())),
                "body" => strings(&|r| Some(r.body.to_text())),
                "trace_id" => strings(&|r| r.trace_id.map(|t| t.to_hex())),
                "span_id" => strings(&|r| r.span_id.map(|s| s.to_hex())),
                "attributes" | "resource" => {
                    let mut b = map_builder();
                    for r in recs {
                        if name == "attributes" {
                            attrs_map(&mut b, &r.attributes);
                        } else {
                            attrs_map(&mut b, &r.resource.attributes);
                        }
                    }
                    Arc::new(b.finish())
                }
                other => return Err(StorageError::Backend(format!("logs: no column {other}"))),
            });
        }
        RecordBatch::try_new(self.schema.clone(), cols)
            .map_err(|e| StorageError::Backend(e.to_string()))
    }

    fn run_metrics(
        &self,
        out: &mut dyn FnMut(RecordBatch) -> bool,
    ) -> Result<ScanStats, StorageError> {
        let p = &self.plan;
        let mut matchers = Vec::new();
        for (c, v) in &p.eq {
            let label = match c.as_str() {
                "metric" => "__name__",
                other => other,
            };
            matchers.push(matcher(label, MatchOp::Equal, v));
        }
        for (k, v) in &p.map_eq {
            matchers.push(matcher(k, MatchOp::Equal, v));
        }
        if matchers.is_empty() {
            // Every series: a matcher that accepts any metric name.
            matchers.push(matcher(METRIC_NAME, MatchOp::Regex, ".+"));
        }
        // Samples are whole milliseconds: `[start_ns, end_ns)` becomes the
        // inclusive millisecond range it covers.
        if p.start_ns >= p.end_ns {
            return Ok(ScanStats::default());
        }
        let start_ms = p.start_ns.div_ceil(1_000_000).min(i64::MAX as u64) as i64;
        let end_ms = if p.end_ns == u64::MAX {
            i64::MAX
        } else {
            (p.end_ns.div_ceil(1_000_000) as i64) - 1
        };
        if start_ms > end_ms {
            return Ok(ScanStats::default());
        }
        let mut left = self.limit.unwrap_or(usize::MAX);
        let mut failed = None;
        let stats = self
            .sources
            .metrics
            .scan(&matchers, start_ms, end_ms, &mut |series| {
                // Whole series per batch, a batch closed once it holds
                // BATCH_ROWS samples.
                let mut groups: Vec<Vec<&Series>> = Vec::new();
                let mut n = 0;
                for s in &series {
                    if groups.is_empty() || n >= BATCH_ROWS {
                        groups.push(Vec::new());
                        n = 0;
                    }
                    if let Some(g) = groups.last_mut() {
                        g.push(s);
                    }
                    n += s.samples.len();
                }
                for g in groups {
                    if left == 0 {
                        return false;
                    }
                    match self.metric_batch(&g, left) {
                        Ok((b, used)) => {
                            left -= used;
                            if !out(b) {
                                return false;
                            }
                        }
                        Err(e) => {
                            failed = Some(e);
                            return false;
                        }
                    }
                }
                left > 0
            })?;
        failed.map_or(Ok(stats), Err)
    }

    /// A batch of the samples of `series` (at most `max` rows) and the rows used.
    fn metric_batch(
        &self,
        series: &[&Series],
        max: usize,
    ) -> Result<(RecordBatch, usize), StorageError> {
        let n = series
            .iter()
            .map(|s| s.samples.len())
            .sum::<usize>()
            .min(max);
        if self.names.is_empty() {
            return self.empty_batch(n).map(|b| (b, n));
        }
        // Per-series values, repeated for each sample of the series.
        let label_col = |f: &dyn Fn(&Series) -> Option<String>| -> ArrayRef {
            let mut b = StringBuilder::with_capacity(n, n * 8);
            let mut left = n;
            for s in series {
                let v = f(s);
                let k = s.samples.len().min(left);
                for _ in 0..k {
                    b.append_option(v.as_deref());
                }
                left -= k;
            }
            Arc::new(b.finish())
        };
        let mut cols: Vec<ArrayRef> = Vec::with_capacity(self.names.len());
        for name in &self.names {
            cols.push(match name.as_str() {
                "metric" => label_col(&|s| Some(s.metric_name().to_string())),
                "job" => label_col(&|s| label(&s.labels, "job").map(str::to_string)),
                "instance" => label_col(&|s| label(&s.labels, "instance").map(str::to_string)),
                "labels" => {
                    let mut b = map_builder();
                    let mut left = n;
                    for s in series {
                        let k = s.samples.len().min(left);
                        for _ in 0..k {
                            push_map(
                                &mut b,
                                s.labels
                                    .iter()
                                    .filter(|(k, _)| k != METRIC_NAME)
                                    .map(|(k, v)| (k.as_str(), v.clone())),
                            );
                        }
                        left -= k;
                    }
                    Arc::new(b.finish())
                }
                "timestamp" => {
                    let mut b = TimestampNanosecondBuilder::with_capacity(n).with_timezone("UTC");
                    for smp in series.iter().flat_map(|s| s.samples.iter()).take(n) {
                        b.append_value(smp.t_ms.saturating_mul(1_000_000));
                    }
                    Arc::new(b.finish())
                }
                "value" => {
                    let mut b = Float64Builder::with_capacity(n);
                    for smp in series.iter().flat_map(|s| s.samples.iter()).take(n) {
                        b.append_value(smp.v);
                    }
                    Arc::new(b.finish())
                }
                other => {
                    // A label column: one dictionary entry per distinct value.
                    let mut keys = Vec::with_capacity(n);
                    let mut values: Vec<Option<&str>> = Vec::new();
                    let mut index: HashMap<Option<&str>, i32> = HashMap::new();
                    let mut left = n;
                    for s in series {
                        let v = label(&s.labels, other);
                        let next = values.len() as i32;
                        let k = *index.entry(v).or_insert_with(|| {
                            values.push(v);
                            next
                        });
                        let take = s.samples.len().min(left);
                        keys.extend(std::iter::repeat_n(k, take));
                        left -= take;
                    }
                    let keys = Int32Array::from(keys);
                    let values: ArrayRef = Arc::new(StringArray::from(values));
                    Arc::new(
                        DictionaryArray::<Int32Type>::try_new(keys, values)
                            .map_err(|e| StorageError::Backend(e.to_string()))?,
                    )
                }
            });
        }
        RecordBatch::try_new(self.schema.clone(), cols)
            .map(|b| (b, n))
            .map_err(|e| StorageError::Backend(e.to_string()))
    }
}

fn matcher(name: &str, op: MatchOp, value: &str) -> LabelMatcher {
    LabelMatcher {
        name: name.to_string(),
        op,
        value: value.to_string(),
    }
}

/// A string column of `n` rows.
fn string_column(n: usize, f: impl Fn(usize) -> Option<String>) -> ArrayRef {
    let mut b = StringBuilder::with_capacity(n, n * 16);
    for i in 0..n {
        b.append_option(f(i));
    }
    Arc::new(b.finish())
}

/// A UTC nanosecond timestamp column of `n` rows.
fn time_column(n: usize, f: impl Fn(usize) -> u64) -> ArrayRef {
    let mut b = TimestampNanosecondBuilder::with_capacity(n).with_timezone("UTC");
    for i in 0..n {
        b.append_value(f(i).min(i64::MAX as u64) as i64);
    }
    Arc::new(b.finish())
}

/// Hands `rows` to `out` in batches of at most [`BATCH_ROWS`] built by
/// `build`. Returns false once the scan should stop: `out` wants no more,
/// or a batch failed (the error is kept in `failed`).
fn send_batches<T>(
    rows: &[T],
    build: impl Fn(&[T]) -> Result<RecordBatch, StorageError>,
    out: &mut dyn FnMut(RecordBatch) -> bool,
    failed: &mut Option<StorageError>,
) -> bool {
    for c in rows.chunks(BATCH_ROWS) {
        match build(c) {
            Ok(b) => {
                if !out(b) {
                    return false;
                }
            }
            Err(e) => {
                *failed = Some(e);
                return false;
            }
        }
    }
    true
}

/// The physical scan of one table: runs the store scan on a blocking
/// thread and streams its batches. `EXPLAIN` shows the pushed-down
/// conditions; `EXPLAIN ANALYZE` adds the partitions and rows scanned.
pub struct ScanExec {
    job: ScanJob,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl fmt::Debug for ScanExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ScanExec({})", self.job.table.name())
    }
}

impl ScanExec {
    fn new(job: ScanJob) -> Self {
        let properties = PlanProperties::new(
            EquivalenceProperties::new(job.schema.clone()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        ScanExec {
            job,
            properties: Arc::new(properties),
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }

    pub fn table(&self) -> Table {
        self.job.table
    }

    /// Partitions and rows scanned so far.
    pub fn scanned(&self) -> ScanStats {
        let m = self.metrics.clone_inner();
        let get = |n: &str| m.sum_by_name(n).map_or(0, |v| v.as_usize() as u64);
        ScanStats {
            partitions: get("partitions_scanned"),
            rows: get("rows_scanned"),
        }
    }
}

impl DisplayAs for ScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "ScanExec: table={}", self.job.table.name())?;
        let pushed = self.job.plan.describe();
        if !pushed.is_empty() {
            write!(f, ", pushed=[{pushed}]")?;
        }
        if let Some(l) = self.job.limit {
            write!(f, ", limit={l}")?;
        }
        if self.job.names.is_empty() {
            write!(f, ", count_only")?;
        }
        Ok(())
    }
}

impl ExecutionPlan for ScanExec {
    fn name(&self) -> &str {
        "ScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(
        &self,
        partition: usize,
        _context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        if partition != 0 {
            return Err(DataFusionError::Internal(format!(
                "ScanExec has one partition, asked for {partition}"
            )));
        }
        let partitions: Count =
            MetricBuilder::new(&self.metrics).global_counter("partitions_scanned");
        let rows: Count = MetricBuilder::new(&self.metrics).global_counter("rows_scanned");
        let (tx, rx) = tokio::sync::mpsc::channel::<DfResult<RecordBatch>>(CHANNEL_BATCHES);
        let job = self.job.clone();
        tokio::task::spawn_blocking(move || {
            let res = job.run(&mut |b| tx.blocking_send(Ok(b)).is_ok());
            match res {
                Ok(s) => {
                    partitions.add(s.partitions as usize);
                    rows.add(s.rows as usize);
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(DataFusionError::External(Box::new(e))));
                }
            }
        });
        let stream =
            futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.job.schema.clone(),
            stream,
        )))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}
