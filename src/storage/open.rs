//! Opens the store of each signal under the data directory, as configured.

use std::sync::Arc;

use super::writer::Stores;
use super::{LogStore, MetricStore, StorageError, TraceStore};
use crate::config::Config;
use crate::telemetry::Telemetry;

/// Opens every store.
pub fn open_stores(cfg: &Config, telemetry: &Arc<Telemetry>) -> Result<Stores, StorageError> {
    Ok(Stores {
        traces: open_trace_store(cfg, telemetry)?,
        metrics: open_metric_store(cfg, telemetry)?,
        logs: open_log_store(cfg, telemetry)?,
    })
}

/// The trace store: RocksDB under `data_dir/traces`.
fn open_trace_store(
    cfg: &Config,
    _telemetry: &Arc<Telemetry>,
) -> Result<Arc<dyn TraceStore>, StorageError> {
    let mut o = super::traces::TraceStoreOptions::new(cfg.data_dir.join("traces"));
    o.retention = cfg.traces.retention.0;
    o.write_buffer_bytes = cfg.traces.write_buffer.0 as usize;
    o.block_cache_bytes = cfg.traces.block_cache.0 as usize;
    Ok(Arc::new(super::traces::RocksTraceStore::open(&o)?))
}

/// The metrics store: Parquet files under `<data_dir>/metrics`, with the
/// cardinality guard shared with ingest (its refusals are counted in
/// `tern_metrics_series_rejected_total`).
fn open_metric_store(
    cfg: &Config,
    telemetry: &Arc<Telemetry>,
) -> Result<Arc<dyn MetricStore>, StorageError> {
    use super::metrics::{
        MappingOptions, MetricsOptions, ParquetMetricStore, SeriesGuard, SeriesLimits,
    };
    let m = &cfg.metrics;
    let ms = |d: std::time::Duration| d.as_millis().min(i64::MAX as u128) as i64;
    let mapping = MappingOptions {
        promote_resource_attributes: m.promote_resource_attributes.clone(),
    };
    let opts = MetricsOptions {
        mapping: mapping.clone(),
        retention_ms: ms(m.retention.0),
        partition_ms: ms(m.partition_duration.0),
        head_flush_ms: ms(m.head_flush_interval.0),
        compaction_files: m.compaction_files,
        ..MetricsOptions::default()
    };
    let rejected = prometheus::IntCounterVec::new(
        prometheus::Opts::new(
            "tern_metrics_series_rejected_total",
            "Samples or data points of new series refused by the cardinality limits",
        ),
        &["reason"],
    )
    .map_err(|e| StorageError::Backend(format!("self-metric definition: {e}")))?;
    // A second store opened in the same process (tests) reuses the name.
    let rejected = match telemetry.registry().register(Box::new(rejected.clone())) {
        Ok(()) => Some(rejected),
        Err(_) => None,
    };
    let guard = Arc::new(SeriesGuard::new(
        SeriesLimits {
            per_metric: m.max_series_per_metric,
            total: m.max_series,
            window_ms: ms(m.active_series_window.0),
        },
        mapping,
        rejected,
    ));
    Ok(Arc::new(ParquetMetricStore::open(
        &cfg.data_dir.join("metrics"),
        opts,
        Some(guard),
    )?))
}

/// The log store: tantivy indexes, one per time partition, under `data_dir/logs`.
fn open_log_store(
    cfg: &Config,
    _telemetry: &Arc<Telemetry>,
) -> Result<Arc<dyn LogStore>, StorageError> {
    let opts = super::logs::index::LogIndexOptions {
        partition: cfg.logs.partition.0,
        commit_interval: cfg.logs.commit_interval.0,
        retention: Some(cfg.logs.retention.0),
        writer_memory_bytes: cfg.logs.writer_memory.0 as usize,
        ..Default::default()
    };
    Ok(Arc::new(super::logs::index::LogIndex::open(
        &cfg.data_dir.join("logs"),
        opts,
    )?))
}
