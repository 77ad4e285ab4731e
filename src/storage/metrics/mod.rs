//! The metrics store: OTLP metrics mapped to Prometheus series
//! ([`mapping`]), an inverted label index and an in-memory head
//! ([`core`]), Parquet files per time partition ([`parquet`]), and the
//! cardinality guard shared with ingest ([`guard`]).
//!
//! Only this module imports `parquet`/`arrow`; everything else uses the
//! `MetricStore` trait.

pub mod core;
mod decimal;
pub mod guard;
mod head;
pub mod mapping;
mod packed;
pub mod parquet;

pub use self::core::Core;
pub use guard::{SeriesGuard, SeriesLimits};
pub use mapping::MappingOptions;
pub use parquet::ParquetMetricStore;

/// Settings of the metrics engine.
#[derive(Debug, Clone)]
pub struct MetricsOptions {
    pub mapping: MappingOptions,
    /// Samples older than this are dropped; 0 keeps everything.
    pub retention_ms: i64,
    pub partition_ms: i64,
    /// Age of the oldest unflushed write at which `flush` writes the head.
    pub head_flush_ms: i64,
    /// A head with more samples than this is flushed at the next `flush`
    /// whatever its age.
    pub head_max_samples: u64,
    pub compaction_files: usize,
    /// Bounds of one query.
    pub max_query_series: usize,
    pub max_query_samples: usize,
}

impl Default for MetricsOptions {
    fn default() -> Self {
        MetricsOptions {
            mapping: MappingOptions::default(),
            retention_ms: 0,
            partition_ms: 2 * 3_600_000,
            head_flush_ms: 10 * 60_000,
            head_max_samples: 50_000_000,
            compaction_files: 8,
            max_query_series: 500_000,
            max_query_samples: 100_000_000,
        }
    }
}

/// Series counts for `/api/v1/status/tsdb`, each list the top entries,
/// largest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CardinalityStats {
    pub num_series: u64,
    pub head_samples: u64,
    /// Memory of the unflushed samples (compressed buffers).
    pub head_bytes: u64,
    /// Memory of the series table: entries and their packed labels (not
    /// the label index).
    pub series_bytes: u64,
    pub active_series: Option<u64>,
    pub series_count_by_metric_name: Vec<(String, u64)>,
    pub label_value_count_by_label_name: Vec<(String, u64)>,
    pub memory_in_bytes_by_label_name: Vec<(String, u64)>,
    pub series_count_by_label_value_pair: Vec<(String, u64)>,
}
