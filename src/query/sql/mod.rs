//! SQL over every signal, run by DataFusion.
//!
//! Owns the query engine: the `spans`, `logs` and `metrics` tables
//! ([`tables`]), tern's extra functions ([`functions`]), the read-only
//! guard, the per-query deadline, memory and row limits, and the result
//! encodings ([`output`]). Queries run on a runtime of their own, so a
//! heavy query cannot starve ingest or the rest of the API. Knows nothing
//! of HTTP; `api::http::sql` serves it.

pub mod functions;
pub mod output;
pub mod tables;

use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::DataFusionError;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::execution::SessionStateBuilder;
use datafusion::physical_plan::{execute_stream, ExecutionPlan};
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};
use futures::StreamExt;
use prometheus::{IntCounterVec, Opts, Registry};

use crate::storage::{ScanStats, StorageError};
pub use tables::{Sources, Table};

/// Bounds of every SQL query.
#[derive(Debug, Clone)]
pub struct SqlLimits {
    /// A query still running after this is cancelled.
    pub timeout: Duration,
    /// Memory the query's operators (aggregations, sorts, joins) may hold.
    pub memory_bytes: usize,
    /// Rows returned when the request does not ask for fewer.
    pub default_rows: usize,
    /// Most rows one answer may return.
    pub max_rows: usize,
    /// Most bytes of result batches one answer may hold.
    pub max_result_bytes: usize,
    /// Longest query text accepted.
    pub max_query_bytes: usize,
    /// Worker threads of the query runtime.
    pub threads: usize,
}

impl Default for SqlLimits {
    fn default() -> Self {
        SqlLimits {
            timeout: Duration::from_secs(30),
            memory_bytes: 1 << 30,
            default_rows: 10_000,
            max_rows: 100_000,
            max_result_bytes: 64 << 20,
            max_query_bytes: 64 << 10,
            threads: 2,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    /// A mistake in the query: syntax, unknown table or column, types.
    #[error("{0}")]
    Invalid(String),
    /// A statement that would change something or read outside the stores.
    #[error("{0}")]
    Forbidden(String),
    #[error("the query did not finish within its deadline of {0:?} and was cancelled")]
    Timeout(Duration),
    #[error("{0}")]
    ResourcesExhausted(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl SqlError {
    pub fn code(&self) -> &'static str {
        match self {
            SqlError::Invalid(_) => "invalid_sql",
            SqlError::Forbidden(_) => "forbidden_statement",
            SqlError::Timeout(_) => "query_timeout",
            SqlError::ResourcesExhausted(_) => "resources_exhausted",
            SqlError::Storage(e) => e.code(),
            SqlError::Internal(_) => "internal",
        }
    }

    fn from_df(e: DataFusionError) -> SqlError {
        let root = e.find_root();
        match root {
            DataFusionError::External(inner) => match inner.downcast_ref::<StorageError>() {
                Some(StorageError::Unavailable(m)) => {
                    SqlError::Storage(StorageError::Unavailable(m.clone()))
                }
                Some(s) => SqlError::Storage(StorageError::Backend(s.to_string())),
                None => SqlError::Internal(root.to_string()),
            },
            DataFusionError::ResourcesExhausted(m) => SqlError::ResourcesExhausted(format!(
                "the query needs more memory than allowed: {m}"
            )),
            DataFusionError::Internal(m) => SqlError::Internal(m.clone()),
            DataFusionError::IoError(m) => SqlError::Internal(m.to_string()),
            // Parser, planner, schema, type and evaluation errors (casts,
            // division by zero...) are the query's own.
            other => SqlError::Invalid(other.to_string()),
        }
    }
}

/// An answer.
#[derive(Debug)]
pub struct QueryOutput {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
    pub rows: usize,
    /// More rows (or bytes) were available than the limits allow.
    pub truncated: bool,
    /// Partitions and rows each table scan read.
    pub scanned: Vec<(Table, ScanStats)>,
    pub elapsed: Duration,
}

/// The engine: limits, the query runtime and the query counters.
pub struct SqlEngine {
    limits: SqlLimits,
    runtime: QueryRuntime,
    env: Arc<RuntimeEnv>,
    queries: IntCounterVec,
    scanned_partitions: IntCounterVec,
    scanned_rows: IntCounterVec,
}

/// The runtime queries run on; shut down without blocking when dropped
/// (it may be dropped from async code).
struct QueryRuntime(Option<tokio::runtime::Runtime>);

impl Drop for QueryRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

fn register(reg: &Registry, name: &str, help: &str, label: &str) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), &[label])
        .unwrap_or_else(|e| panic!("metric {name} definition is invalid: {e}"));
    // A second engine on the same registry (tests) shares the counters.
    match reg.register(Box::new(c.clone())) {
        Ok(()) => c,
        Err(prometheus::Error::AlreadyReg) => c,
        Err(e) => panic!("metric {name} cannot be registered: {e}"),
    }
}

impl SqlEngine {
    pub fn new(limits: SqlLimits, registry: &Registry) -> Result<SqlEngine, SqlError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(limits.threads.max(1))
            .thread_name("tern-sql")
            .enable_all()
            .build()
            .map_err(|e| SqlError::Internal(format!("cannot start the query runtime: {e}")))?;
        // No spilling: no file is ever written, and the memory limit is a
        // limit.
        let env = RuntimeEnvBuilder::new()
            .with_memory_limit(limits.memory_bytes, 1.0)
            .with_disk_manager_builder(
                DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled),
            )
            .build_arc()
            .map_err(SqlError::from_df)?;
        Ok(SqlEngine {
            limits,
            runtime: QueryRuntime(Some(runtime)),
            env,
            queries: register(
                registry,
                "tern_sql_queries_total",
                "SQL queries by outcome",
                "outcome",
            ),
            scanned_partitions: register(
                registry,
                "tern_sql_scanned_partitions_total",
                "Time partitions or index ranges SQL queries read, by table",
                "table",
            ),
            scanned_rows: register(
                registry,
                "tern_sql_scanned_rows_total",
                "Records SQL table scans produced, by table",
                "table",
            ),
        })
    }

    pub fn limits(&self) -> &SqlLimits {
        &self.limits
    }

    /// A session with the three tables and tern's functions; read-only
    /// settings, no file or URL tables.
    fn context(&self, sources: &Sources) -> Result<SessionContext, SqlError> {
        let config = SessionConfig::new()
            .with_information_schema(true)
            .with_target_partitions(self.limits.threads.max(1))
            .with_batch_size(8192);
        let state = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(self.env.clone())
            .with_default_features()
            .build();
        let ctx = SessionContext::new_with_state(state);
        for t in [Table::Spans, Table::Logs, Table::Metrics] {
            ctx.register_table(
                t.name(),
                Arc::new(tables::SignalTable::new(t, sources.clone())),
            )
            .map_err(SqlError::from_df)?;
        }
        for f in functions::udfs() {
            ctx.register_udf(f);
        }
        Ok(ctx)
    }

    /// Runs one query, returning at most `max_rows` rows.
    pub async fn query(
        &self,
        sources: Sources,
        sql: &str,
        max_rows: usize,
    ) -> Result<QueryOutput, SqlError> {
        let res = self.query_inner(sources, sql, max_rows).await;
        let outcome = match &res {
            Ok(_) => "ok",
            Err(e) => e.code(),
        };
        self.queries.with_label_values(&[outcome]).inc();
        if let Ok(out) = &res {
            for (t, s) in &out.scanned {
                self.scanned_partitions
                    .with_label_values(&[t.name()])
                    .inc_by(s.partitions);
                self.scanned_rows
                    .with_label_values(&[t.name()])
                    .inc_by(s.rows);
            }
        }
        res
    }

    async fn query_inner(
        &self,
        sources: Sources,
        sql: &str,
        max_rows: usize,
    ) -> Result<QueryOutput, SqlError> {
        if sql.trim().is_empty() {
            return Err(SqlError::Invalid("the query is empty".into()));
        }
        if sql.len() > self.limits.max_query_bytes {
            return Err(SqlError::Invalid(format!(
                "the query is {} bytes long; at most {} are accepted",
                sql.len(),
                self.limits.max_query_bytes
            )));
        }
        let started = Instant::now();
        let ctx = self.context(&sources)?;
        let sql = sql.to_string();
        let max_rows = max_rows.min(self.limits.max_rows);
        let max_bytes = self.limits.max_result_bytes;
        let timeout = self.limits.timeout;
        let rt = self
            .runtime
            .0
            .as_ref()
            .ok_or_else(|| SqlError::Internal("the query runtime is stopped".into()))?;
        let task = rt.spawn(async move {
            match tokio::time::timeout(timeout, run(ctx, &sql, max_rows, max_bytes)).await {
                Ok(r) => r,
                Err(_) => Err(SqlError::Timeout(timeout)),
            }
        });
        let abort = task.abort_handle();
        // The task enforces the deadline itself; this guard also covers a
        // query runtime too busy to notice.
        match tokio::time::timeout(timeout + Duration::from_secs(5), task).await {
            Ok(Ok(r)) => r.map(|mut out| {
                out.elapsed = started.elapsed();
                out
            }),
            Ok(Err(e)) => Err(SqlError::Internal(format!("the query task failed: {e}"))),
            Err(_) => {
                abort.abort();
                Err(SqlError::Timeout(timeout))
            }
        }
    }
}

/// Plans, checks and runs a query, collecting at most `max_rows` rows.
async fn run(
    ctx: SessionContext,
    sql: &str,
    max_rows: usize,
    max_bytes: usize,
) -> Result<QueryOutput, SqlError> {
    let state = ctx.state();
    let dialect = state.config().options().sql_parser.dialect;
    let statement = state
        .sql_to_statement(sql, &dialect)
        .map_err(SqlError::from_df)?;
    check_read_only(&statement)?;
    let plan = state
        .statement_to_plan(statement)
        .await
        .map_err(SqlError::from_df)?;
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
        .verify_plan(&plan)
        .map_err(|e| {
            SqlError::Forbidden(format!(
                "only read-only queries over the spans, logs and metrics tables are allowed ({})",
                e.find_root()
            ))
        })?;
    let df = ctx
        .execute_logical_plan(plan)
        .await
        .map_err(SqlError::from_df)?;
    let physical = df.create_physical_plan().await.map_err(SqlError::from_df)?;
    let schema = physical.schema();
    let mut stream = execute_stream(physical.clone(), ctx.task_ctx()).map_err(SqlError::from_df)?;
    let mut batches = Vec::new();
    let (mut rows, mut bytes, mut truncated) = (0usize, 0usize, false);
    while let Some(b) = stream.next().await {
        let b = b.map_err(SqlError::from_df)?;
        if b.num_rows() == 0 {
            continue;
        }
        let room = max_rows - rows;
        let b = if b.num_rows() > room {
            truncated = true;
            b.slice(0, room)
        } else {
            b
        };
        bytes += b.get_array_memory_size();
        if bytes > max_bytes && !batches.is_empty() {
            truncated = true;
            break;
        }
        rows += b.num_rows();
        batches.push(b);
        if truncated || rows >= max_rows {
            // One more row tells whether the answer was cut.
            if !truncated {
                truncated = next_nonempty(&mut stream).await?;
            }
            break;
        }
    }
    drop(stream);
    let mut scanned = Vec::new();
    collect_scans(physical.as_ref(), &mut scanned);
    Ok(QueryOutput {
        schema,
        batches,
        rows,
        truncated,
        scanned,
        elapsed: Duration::ZERO,
    })
}

/// Accepts queries, `EXPLAIN` of a query, `DESCRIBE` and `SHOW`; anything
/// else (DDL, DML, `COPY`, `SET`, transactions...) is refused before it is
/// planned.
fn check_read_only(st: &datafusion::sql::parser::Statement) -> Result<(), SqlError> {
    use datafusion::sql::parser::Statement as Df;
    use datafusion::sql::sqlparser::ast::Statement as Ast;
    let refuse = |what: &str| {
        Err(SqlError::Forbidden(format!(
            "{what} is not allowed: the SQL API is read-only and accepts only queries \
             (SELECT, WITH, EXPLAIN, DESCRIBE, SHOW) over the spans, logs and metrics tables"
        )))
    };
    match st {
        Df::Statement(s) => match s.as_ref() {
            Ast::Query(_)
            | Ast::ExplainTable { .. }
            | Ast::ShowTables { .. }
            | Ast::ShowColumns { .. }
            | Ast::ShowFunctions { .. }
            | Ast::ShowVariable { .. } => Ok(()),
            Ast::Explain { statement, .. } => check_read_only(&Df::Statement(statement.clone())),
            other => {
                let text = other.to_string();
                let verb: String = text
                    .split_whitespace()
                    .take(2)
                    .collect::<Vec<_>>()
                    .join(" ")
                    .to_uppercase();
                refuse(&verb)
            }
        },
        Df::Explain(e) => check_read_only(&e.statement),
        Df::CreateExternalTable(_) => refuse("CREATE EXTERNAL TABLE"),
        Df::CopyTo(_) => refuse("COPY"),
        Df::Reset(_) => refuse("RESET"),
    }
}

async fn next_nonempty(
    stream: &mut datafusion::physical_plan::SendableRecordBatchStream,
) -> Result<bool, SqlError> {
    while let Some(b) = stream.next().await {
        if b.map_err(SqlError::from_df)?.num_rows() > 0 {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The table scans of a physical plan with what each read.
fn collect_scans(plan: &dyn ExecutionPlan, out: &mut Vec<(Table, ScanStats)>) {
    if let Some(scan) = plan.downcast_ref::<tables::ScanExec>() {
        out.push((scan.table(), scan.scanned()));
    }
    for c in plan.children() {
        collect_scans(c.as_ref(), out);
    }
}
