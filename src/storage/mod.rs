//! Storage: the traits every signal store implements, their in-memory
//! implementations, the write-ahead log, and the writers that move batches
//! from the WAL into the stores in WAL order.
//!
//! Only `storage/<signal>/` may import a storage engine (RocksDB, tantivy,
//! Parquet); everything above talks to the traits defined here.

pub mod logs;
pub mod memory;
pub mod meta;
pub mod metrics;
pub mod open;
pub mod traces;
pub mod varint;
pub mod wal;
pub mod writer;

use crate::model::{
    LabelMatcher, Labels, LogRecord, Metric, MetricMeta, Series, Span, SpanId, TraceId,
};

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("storage i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("storage backend error: {0}")]
    Backend(String),
    #[error("storage is closed")]
    Closed,
    #[error("storage unavailable: {0}")]
    Unavailable(String),
}

impl StorageError {
    pub fn code(&self) -> &'static str {
        match self {
            StorageError::Io(_) => "storage_io",
            StorageError::Backend(_) => "storage_backend",
            StorageError::Closed => "storage_closed",
            StorageError::Unavailable(_) => "storage_unavailable",
        }
    }
}

/// What one scan touched: time partitions (or index ranges) opened and
/// records produced. Shown by SQL's `EXPLAIN ANALYZE` and counted in the
/// server's own metrics, so pushdown is observable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScanStats {
    pub partitions: u64,
    pub rows: u64,
}

impl ScanStats {
    pub fn add(&mut self, o: ScanStats) {
        self.partitions += o.partitions;
        self.rows += o.rows;
    }
}

/// Counters every store reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Records held: spans, data points or log records.
    pub records: u64,
    /// Bytes the store occupies on disk (0 for memory stores).
    pub disk_bytes: u64,
}

/// What every signal store has in common: durability bookkeeping.
///
/// Writes carry the WAL sequence number of the record they came from and
/// arrive in increasing sequence order. A store reports, through
/// [`durable_seq`](StoreLifecycle::durable_seq), the highest sequence number
/// whose data it has made durable by itself (persisted together with its
/// data, so it survives a restart). The WAL keeps every record above the
/// lowest such number, and on start replays to each store only the records
/// above its own. A memory store never makes anything durable and returns 0.
pub trait StoreLifecycle: Send + Sync + 'static {
    fn durable_seq(&self) -> u64;
    /// Makes everything written so far durable (called periodically and at shutdown).
    fn flush(&self) -> Result<(), StorageError>;
    fn stats(&self) -> StoreStats;
    /// Flushes and stops background work; called once at shutdown, after
    /// the last write.
    fn close(&self) -> Result<(), StorageError> {
        self.flush()
    }
}

/// Spans, per-trace summaries and the aggregates derived from them at
/// ingest (RED figures, service dependencies). Query types live in
/// [`traces::types`]; search semantics are documented on
/// [`traces::types::TraceSearch`].
pub trait TraceStore: StoreLifecycle {
    /// Stores spans; a span whose (trace id, span id) is already stored is
    /// ignored, so summaries and aggregates count each span once.
    fn write(&self, seq: u64, spans: Vec<Span>) -> Result<(), StorageError>;
    /// Every stored span of one trace, in start-time order.
    fn trace(&self, id: &TraceId) -> Result<Vec<Span>, StorageError>;
    /// The summary of one trace.
    fn summary(&self, id: &TraceId) -> Result<Option<traces::TraceSummary>, StorageError>;
    /// Traces with a span matching every filter, newest matching span first.
    fn search(&self, q: &traces::TraceSearch) -> Result<traces::SearchOutcome, StorageError>;
    /// Service names, sorted, at most `limit`.
    fn services(&self, limit: usize) -> Result<Vec<String>, StorageError>;
    /// Operations of a service, sorted, at most `limit`.
    fn operations(
        &self,
        service: &str,
        limit: usize,
    ) -> Result<Vec<traces::OperationInfo>, StorageError>;
    /// Caller → callee edges of spans starting in `[start_ns, end_ns)`,
    /// summed over the range, sorted by caller then callee.
    fn dependencies(
        &self,
        start_ns: u64,
        end_ns: u64,
    ) -> Result<Vec<traces::DependencyEdge>, StorageError>;
    /// RED minute rows in the range, by service, minute, then operation
    /// (service row first).
    fn red(&self, q: &traces::RedQuery) -> Result<Vec<traces::RedRow>, StorageError>;
    /// Streams the spans matching `q` in chunks (any order) until `sink`
    /// returns false or `q.limit` spans were produced.
    fn scan_spans(
        &self,
        q: &traces::SpanScan,
        sink: &mut dyn FnMut(traces::SpanChunk) -> bool,
    ) -> Result<ScanStats, StorageError>;
}

/// A bounded scan of log records.
#[derive(Debug, Clone, Default)]
pub struct LogQuery {
    /// Inclusive start, exclusive end, in nanoseconds; `None` is unbounded.
    pub start_ns: Option<u64>,
    pub end_ns: Option<u64>,
    pub service: Option<String>,
    pub trace_id: Option<TraceId>,
    pub limit: usize,
}

/// Most span ids [`LogStore::span_ids_with_logs`] reports for one trace.
pub const MAX_SPANS_WITH_LOGS: usize = 10_000;

pub trait LogStore: StoreLifecycle {
    /// Stores records. Writing the same `seq` again (WAL replay after a
    /// crash) replaces what that `seq` wrote before.
    fn write(&self, seq: u64, records: Vec<LogRecord>) -> Result<(), StorageError>;

    /// Searches: a page of matching records newest first (by time, then id),
    /// the total count in the time range, and the optional histogram.
    fn search(&self, s: &logs::LogSearch) -> Result<logs::LogPage, StorageError>;

    /// Follows newly written records.
    fn subscribe(&self) -> logs::TailReceiver;

    /// Streams the records matching `q` in chunks (any order) until `sink`
    /// returns false or `q.limit` records were produced; with `count_only`
    /// it reports counts instead of records. This default pages through
    /// [`search`](LogStore::search); stores override it with a cheaper scan.
    fn scan(
        &self,
        q: &logs::LogScan,
        sink: &mut dyn FnMut(logs::LogChunk) -> bool,
    ) -> Result<ScanStats, StorageError> {
        let mut stats = ScanStats {
            partitions: 1,
            rows: 0,
        };
        let limit = q.limit.unwrap_or(usize::MAX);
        if q.count_only {
            let page = self.search(&logs::LogSearch::new(
                q.filter.clone(),
                q.start_ns,
                q.end_ns,
                0,
            ))?;
            let n = page.total.min(limit as u64);
            stats.rows = n;
            sink(logs::LogChunk::Count(n));
            return Ok(stats);
        }
        let mut s = logs::LogSearch::new(q.filter.clone(), q.start_ns, q.end_ns, logs::MAX_PAGE);
        while (stats.rows as usize) < limit {
            s.limit = (limit - stats.rows as usize).min(logs::MAX_PAGE);
            let page = self.search(&s)?;
            stats.rows += page.records.len() as u64;
            let recs = page.records.into_iter().map(|r| r.record).collect();
            if !sink(logs::LogChunk::Records(recs)) {
                break;
            }
            match page.next_cursor {
                Some(c) => s.cursor = Some(c),
                None => break,
            }
        }
        Ok(stats)
    }

    /// Matching records, newest first, at most `limit`.
    fn query(&self, q: &LogQuery) -> Result<Vec<LogRecord>, StorageError> {
        let mut f = Vec::new();
        if let Some(s) = &q.service {
            f.push(logs::LogFilter::Term {
                field: logs::LogField::Service,
                value: s.clone(),
            });
        }
        if let Some(t) = &q.trace_id {
            f.push(logs::LogFilter::Term {
                field: logs::LogField::TraceId,
                value: t.to_hex(),
            });
        }
        let filter = if f.is_empty() {
            logs::LogFilter::All
        } else {
            logs::LogFilter::And(f)
        };
        let mut s = logs::LogSearch::new(
            filter,
            q.start_ns.unwrap_or(0),
            q.end_ns.unwrap_or(u64::MAX),
            q.limit.min(logs::MAX_PAGE),
        );
        let mut out = Vec::new();
        while out.len() < q.limit {
            s.limit = (q.limit - out.len()).min(logs::MAX_PAGE);
            let page = self.search(&s)?;
            out.extend(page.records.into_iter().map(|r| r.record));
            match page.next_cursor {
                Some(c) => s.cursor = Some(c),
                None => break,
            }
        }
        Ok(out)
    }

    /// The distinct span ids of a trace's records that carry a span id.
    fn span_ids_with_logs(&self, trace: &TraceId) -> Result<Vec<SpanId>, StorageError> {
        let mut ids = std::collections::BTreeSet::new();
        let mut s = logs::LogSearch::new(
            logs::LogFilter::Term {
                field: logs::LogField::TraceId,
                value: trace.to_hex(),
            },
            0,
            u64::MAX,
            logs::MAX_PAGE,
        );
        loop {
            let page = self.search(&s)?;
            ids.extend(page.records.iter().filter_map(|r| r.record.span_id));
            match page.next_cursor {
                Some(c) if ids.len() < MAX_SPANS_WITH_LOGS => s.cursor = Some(c),
                _ => break,
            }
        }
        Ok(ids.into_iter().take(MAX_SPANS_WITH_LOGS).collect())
    }
}

/// The read interface of a metrics store; what the PromQL engine reads.
pub trait SeriesSource: Send + Sync {
    /// Series matching every matcher with their samples in `[start_ms, end_ms]`.
    fn select(
        &self,
        matchers: &[LabelMatcher],
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<Series>, StorageError>;
    /// Label sets of the series matching every matcher with samples in the range.
    fn series(
        &self,
        matchers: &[LabelMatcher],
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<Labels>, StorageError>;
    /// Label names of the matching series (all series when `matchers` is empty).
    fn label_names(
        &self,
        matchers: &[LabelMatcher],
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<String>, StorageError>;
    /// Values of label `name` on the matching series (all when `matchers` is empty).
    fn label_values(
        &self,
        name: &str,
        matchers: &[LabelMatcher],
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<String>, StorageError>;
    fn metadata(&self) -> Result<Vec<MetricMeta>, StorageError>;
    /// A number that changes whenever samples at or before
    /// [`SETTLED_MS`] ago are added, replaced or deleted (late writes,
    /// retention), so query results over that time can be reused while it
    /// stays the same. `None` when the source does not track it.
    fn settled_generation(&self) -> Option<u64> {
        None
    }
}

/// Samples older than this (before now) are "settled": see
/// [`SeriesSource::settled_generation`].
pub const SETTLED_MS: i64 = 5 * 60_000;

pub trait MetricStore: StoreLifecycle + SeriesSource {
    /// OTLP metrics, mapped to series (delta sums accumulated to cumulative).
    fn write(&self, seq: u64, metrics: Vec<Metric>) -> Result<(), StorageError>;
    /// Samples already in Prometheus form (remote_write).
    fn write_series(&self, seq: u64, series: Vec<Series>) -> Result<(), StorageError>;
    /// Series counts by metric name and label (top `limit` of each).
    fn cardinality(&self, limit: usize) -> Result<metrics::CardinalityStats, StorageError>;
    /// The active-series registry ingest consults before acknowledging
    /// writes, when cardinality limits are configured.
    fn series_guard(&self) -> Option<std::sync::Arc<metrics::SeriesGuard>> {
        None
    }
    /// Streams the series matching `matchers` with their samples in
    /// `[start_ms, end_ms]`, in chunks, until `sink` returns false. Unlike
    /// [`select`](SeriesSource::select) it is not bounded by the PromQL
    /// query limits: a store reads one time partition at a time. This
    /// default selects everything at once (fine for the memory store).
    fn scan(
        &self,
        matchers: &[LabelMatcher],
        start_ms: i64,
        end_ms: i64,
        sink: &mut dyn FnMut(Vec<Series>) -> bool,
    ) -> Result<ScanStats, StorageError> {
        let series = self.select(matchers, start_ms, end_ms)?;
        let rows = series.iter().map(|s| s.samples.len() as u64).sum();
        if !series.is_empty() {
            sink(series);
        }
        Ok(ScanStats {
            partitions: 1,
            rows,
        })
    }
}

#[cfg(test)]
pub mod suite;
