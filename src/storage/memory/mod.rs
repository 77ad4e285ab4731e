//! In-memory stores: the reference implementations of the storage traits,
//! used by tests and until a persistent store exists for a signal. Nothing
//! here is durable: `durable_seq` is always 0, so the WAL keeps everything.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;

use super::metrics::{CardinalityStats, Core, MetricsOptions, SeriesGuard};

use super::{
    LogQuery, LogStore, MetricStore, StorageError, StoreLifecycle, StoreStats, TraceStore,
};
use crate::model::{LabelMatcher, Labels, LogRecord, Metric, MetricMeta, Series, Span, TraceId};

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

/// The metrics engine without files: head and index only.
pub struct MemoryMetricStore {
    core: Core,
}

impl Default for MemoryMetricStore {
    fn default() -> Self {
        MemoryMetricStore::new(MetricsOptions::default(), None)
    }
}

impl MemoryMetricStore {
    pub fn new(opts: MetricsOptions, guard: Option<Arc<SeriesGuard>>) -> Self {
        MemoryMetricStore {
            core: Core::new(opts, guard),
        }
    }
}

impl StoreLifecycle for MemoryMetricStore {
    fn durable_seq(&self) -> u64 {
        0
    }
    fn flush(&self) -> Result<(), StorageError> {
        Ok(())
    }
    fn stats(&self) -> StoreStats {
        self.core.stats()
    }
}

impl MetricStore for MemoryMetricStore {
    fn write(&self, seq: u64, metrics: Vec<Metric>) -> Result<(), StorageError> {
        self.core.write_metrics(seq, &metrics);
        Ok(())
    }

    fn write_series(&self, seq: u64, series: Vec<Series>) -> Result<(), StorageError> {
        self.core.write_series(seq, series);
        Ok(())
    }

    fn select(
        &self,
        matchers: &[LabelMatcher],
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<Series>, StorageError> {
        self.core.select(None, matchers, start_ms, end_ms)
    }

    fn series(
        &self,
        matchers: &[LabelMatcher],
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<Labels>, StorageError> {
        self.core.series(matchers, start_ms, end_ms)
    }

    fn label_names(
        &self,
        matchers: &[LabelMatcher],
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<String>, StorageError> {
        self.core.label_names(matchers, start_ms, end_ms)
    }

    fn label_values(
        &self,
        name: &str,
        matchers: &[LabelMatcher],
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<String>, StorageError> {
        self.core.label_values(name, matchers, start_ms, end_ms)
    }

    fn metadata(&self) -> Result<Vec<MetricMeta>, StorageError> {
        Ok(self.core.metadata())
    }

    fn cardinality(&self, limit: usize) -> Result<CardinalityStats, StorageError> {
        Ok(self.core.cardinality(limit))
    }

    fn series_guard(&self) -> Option<Arc<SeriesGuard>> {
        self.core.guard()
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
