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

/// The metrics store.
fn open_metric_store(
    _cfg: &Config,
    _telemetry: &Arc<Telemetry>,
) -> Result<Arc<dyn MetricStore>, StorageError> {
    Ok(Arc::new(super::memory::MemoryMetricStore::default()))
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
