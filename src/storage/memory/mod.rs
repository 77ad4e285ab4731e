//! In-memory stores: the reference implementations of the storage traits,
//! used by tests and until a persistent store exists for a signal. Nothing
//! here is durable: `durable_seq` is always 0, so the WAL keeps everything.

use std::collections::HashMap;

use parking_lot::RwLock;

use super::logs::{self, LogPage, LogSearch, StoredLog, TailHub, TailReceiver};
use super::{LogStore, MetricStore, StorageError, StoreLifecycle, StoreStats, TraceStore};
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

/// Log records in arrival order with their ids; search scans them all.
#[derive(Default)]
pub struct MemoryLogStore {
    records: RwLock<Vec<StoredLog>>,
    tail: TailHub,
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
    fn write(&self, seq: u64, records: Vec<LogRecord>) -> Result<(), StorageError> {
        let stored: Vec<StoredLog> = records
            .into_iter()
            .enumerate()
            .map(|(i, record)| StoredLog {
                id: logs::record_id(seq, i),
                record,
            })
            .collect();
        {
            let mut all = self.records.write();
            let lo = logs::record_id(seq, 0);
            let hi = logs::record_id(seq + 1, 0);
            all.retain(|r| r.id < lo || r.id >= hi);
            all.extend(stored.iter().cloned());
        }
        self.tail.publish(&stored);
        Ok(())
    }

    fn search(&self, s: &LogSearch) -> Result<LogPage, StorageError> {
        let recs = self.records.read();
        let mut page = LogPage {
            histogram: vec![[0; 7]; s.buckets.map_or(0, |b| b.count)],
            ..Default::default()
        };
        let mut hits: Vec<&StoredLog> = Vec::new();
        for r in recs.iter() {
            let t = r.record.time_ns;
            if t < s.start_ns || t >= s.end_ns || !logs::matches(&s.filter, &r.record) {
                continue;
            }
            page.total += 1;
            if let Some(i) = s.buckets.and_then(|b| b.index(t)) {
                page.histogram[i][logs::severity_class(r.record.severity_number as i64)] += 1;
            }
            if s.cursor.is_none_or(|c| r.cursor() < c) {
                hits.push(r);
            }
        }
        hits.sort_by_key(|r| std::cmp::Reverse(r.cursor()));
        let limit = s.limit.min(logs::MAX_PAGE);
        if hits.len() > limit && limit > 0 {
            page.next_cursor = Some(hits[limit - 1].cursor());
        }
        page.records = hits.into_iter().take(limit).cloned().collect();
        Ok(page)
    }

    fn subscribe(&self) -> TailReceiver {
        self.tail.subscribe()
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
