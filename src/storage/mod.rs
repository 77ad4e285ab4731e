//! Storage: the traits every signal store implements, their in-memory
//! implementations, the write-ahead log, and the writers that move batches
//! from the WAL into the stores in WAL order.
//!
//! Only `storage/<signal>/` may import a storage engine (RocksDB, tantivy,
//! Parquet); everything above talks to the traits defined here.

pub mod memory;
pub mod metrics;
pub mod open;
pub mod wal;
pub mod writer;

use crate::model::{LabelMatcher, Labels, LogRecord, Metric, MetricMeta, Series, Span, TraceId};

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("storage i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("storage backend error: {0}")]
    Backend(String),
    #[error("storage is closed")]
    Closed,
}

impl StorageError {
    pub fn code(&self) -> &'static str {
        match self {
            StorageError::Io(_) => "storage_io",
            StorageError::Backend(_) => "storage_backend",
            StorageError::Closed => "storage_closed",
        }
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

pub trait TraceStore: StoreLifecycle {
    fn write(&self, seq: u64, spans: Vec<Span>) -> Result<(), StorageError>;
    /// Every stored span of one trace, in start-time order.
    fn trace(&self, id: &TraceId) -> Result<Vec<Span>, StorageError>;
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

pub trait LogStore: StoreLifecycle {
    fn write(&self, seq: u64, records: Vec<LogRecord>) -> Result<(), StorageError>;
    /// Matching records, newest first, at most `limit`.
    fn query(&self, q: &LogQuery) -> Result<Vec<LogRecord>, StorageError>;
}

pub trait MetricStore: StoreLifecycle {
    /// OTLP metrics, mapped to series (delta sums accumulated to cumulative).
    fn write(&self, seq: u64, metrics: Vec<Metric>) -> Result<(), StorageError>;
    /// Samples already in Prometheus form (remote_write).
    fn write_series(&self, seq: u64, series: Vec<Series>) -> Result<(), StorageError>;
    /// Series matching all matchers, with their samples in [start_ms, end_ms], samples time-ordered.
    fn select(
        &self,
        matchers: &[LabelMatcher],
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<Series>, StorageError>;
    /// Label sets of matching series with samples in the range (no samples).
    fn series(
        &self,
        matchers: &[LabelMatcher],
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<Labels>, StorageError>;
    fn label_names(
        &self,
        matchers: &[LabelMatcher],
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<String>, StorageError>;
    fn label_values(
        &self,
        name: &str,
        matchers: &[LabelMatcher],
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<String>, StorageError>;
    fn metadata(&self) -> Result<Vec<MetricMeta>, StorageError>;
    /// Series counts by metric name and label (top `limit` of each).
    fn cardinality(&self, limit: usize) -> Result<metrics::CardinalityStats, StorageError>;
    /// The active-series registry ingest consults before acknowledging
    /// writes, when cardinality limits are configured.
    fn series_guard(&self) -> Option<std::sync::Arc<metrics::SeriesGuard>> {
        None
    }
}

#[cfg(test)]
pub mod suite;
