//! In-memory stores: the reference implementations of the storage traits,
//! used by tests and until a persistent store exists for a signal. Nothing
//! here is durable: `durable_seq` is always 0, so the WAL keeps everything.

use std::collections::HashMap;

use parking_lot::RwLock;

use super::{
    LogQuery, LogStore, MetricStore, StorageError, StoreLifecycle, StoreStats, TraceStore,
};
use crate::model::{LogRecord, Metric, Span, TraceId};

#[derive(Default)]
pub struct MemoryTraceStore {
    traces: RwLock<HashMap<TraceId, Vec<Span>>>,
    count: std::sync::atomic::AtomicU64,
}

impl StoreLifecycle for MemoryTraceStore {
    fn durable_seq(&self) -> u64 {
        0
    }
    fn flush(&self) -> Result<(), StorageError> {
        Ok(())
    }
    fn stats(&self) -> StoreStats {
        StoreStats {
            records: self.count.load(std::sync::atomic::Ordering::Relaxed),
            disk_bytes: 0,
        }
    }
}

impl TraceStore for MemoryTraceStore {
    fn write(&self, _seq: u64, spans: Vec<Span>) -> Result<(), StorageError> {
        let mut map = self.traces.write();
        self.count
            .fetch_add(spans.len() as u64, std::sync::atomic::Ordering::Relaxed);
        for s in spans {
            map.entry(s.trace_id).or_default().push(s);
        }
        Ok(())
    }

    fn trace(&self, id: &TraceId) -> Result<Vec<Span>, StorageError> {
        let mut spans = self.traces.read().get(id).cloned().unwrap_or_default();
        spans.sort_by_key(|s| (s.start_time_ns, s.span_id));
        Ok(spans)
    }
}

#[derive(Default)]
pub struct MemoryLogStore {
    records: RwLock<Vec<LogRecord>>,
}

impl StoreLifecycle for MemoryLogStore {
    fn durable_seq(&self) -> u64 {
        0
    }
    fn flush(&self) -> Result<(), StorageError> {
        Ok(())
    }
    fn stats(&self) -> StoreStats {
        StoreStats {
            records: self.records.read().len() as u64,
            disk_bytes: 0,
        }
    }
}

impl LogStore for MemoryLogStore {
    fn write(&self, _seq: u64, records: Vec<LogRecord>) -> Result<(), StorageError> {
        self.records.write().extend(records);
        Ok(())
    }

    fn query(&self, q: &LogQuery) -> Result<Vec<LogRecord>, StorageError> {
        let recs = self.records.read();
        let mut out: Vec<LogRecord> = recs
            .iter()
            .filter(|r| q.start_ns.is_none_or(|s| r.time_ns >= s))
            .filter(|r| q.end_ns.is_none_or(|e| r.time_ns < e))
            .filter(|r| q.service.as_deref().is_none_or(|s| r.service_name() == s))
            .filter(|r| q.trace_id.is_none_or(|t| r.trace_id == Some(t)))
            .cloned()
            .collect();
        out.sort_by_key(|r| std::cmp::Reverse(r.time_ns));
        out.truncate(q.limit);
        Ok(out)
    }
}

#[derive(Default)]
pub struct MemoryMetricStore {
    metrics: RwLock<HashMap<String, Vec<Metric>>>,
    points: std::sync::atomic::AtomicU64,
}

impl StoreLifecycle for MemoryMetricStore {
    fn durable_seq(&self) -> u64 {
        0
    }
    fn flush(&self) -> Result<(), StorageError> {
        Ok(())
    }
    fn stats(&self) -> StoreStats {
        StoreStats {
            records: self.points.load(std::sync::atomic::Ordering::Relaxed),
            disk_bytes: 0,
        }
    }
}

impl MetricStore for MemoryMetricStore {
    fn write(&self, _seq: u64, metrics: Vec<Metric>) -> Result<(), StorageError> {
        let mut map = self.metrics.write();
        for m in metrics {
            self.points
                .fetch_add(m.point_count() as u64, std::sync::atomic::Ordering::Relaxed);
            map.entry(m.name.clone()).or_default().push(m);
        }
        Ok(())
    }

    fn metric(&self, name: &str) -> Result<Vec<Metric>, StorageError> {
        Ok(self.metrics.read().get(name).cloned().unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_trace_store_passes_suite() {
        crate::storage::suite::trace_store(&MemoryTraceStore::default());
    }

    #[test]
    fn memory_log_store_passes_suite() {
        crate::storage::suite::log_store(&MemoryLogStore::default());
    }

    #[test]
    fn memory_metric_store_passes_suite() {
        crate::storage::suite::metric_store(&MemoryMetricStore::default());
    }
}
