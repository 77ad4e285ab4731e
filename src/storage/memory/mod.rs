//! In-memory stores: the reference implementations of the storage traits,
//! used by tests and until a persistent store exists for a signal. Nothing
//! here is durable: `durable_seq` is always 0, so the WAL keeps everything.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use parking_lot::RwLock;

use super::logs::{self, LogPage, LogSearch, StoredLog, TailHub, TailReceiver};
use super::metrics::{CardinalityStats, Core, MetricsOptions, SeriesGuard};
use super::traces::plan::{plan_trace, DepDelta, RedDelta, StoredSpan};
use super::traces::types::{
    minute_of, Agg, DependencyEdge, OperationInfo, RedQuery, RedRow, SearchOutcome, SpanChunk,
    SpanHead, SpanScan, TraceSearch, TraceSummary,
};
use super::{
    LogStore, MetricStore, ScanStats, SeriesSource, StorageError, StoreLifecycle, StoreStats,
    TraceStore,
};
use crate::model::{
    LabelMatcher, Labels, LogRecord, Metric, MetricMeta, Series, Span, SpanId, SpanKind, TraceId,
};

/// Everything the memory trace store holds.
#[derive(Default)]
struct TraceState {
    traces: HashMap<TraceId, Vec<Span>>,
    summaries: HashMap<TraceId, TraceSummary>,
    red: BTreeMap<(String, u64, Option<String>), Agg>,
    deps: BTreeMap<(u64, String, String), (u64, u64)>,
    operations: BTreeMap<String, BTreeSet<(String, i32)>>,
}

#[derive(Default)]
pub struct MemoryTraceStore {
    state: RwLock<TraceState>,
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
        let mut st = self.state.write();
        let mut order: Vec<TraceId> = Vec::new();
        let mut groups: HashMap<TraceId, Vec<&Span>> = HashMap::new();
        for s in &spans {
            groups
                .entry(s.trace_id)
                .or_insert_with(|| {
                    order.push(s.trace_id);
                    Vec::new()
                })
                .push(s);
        }
        let (mut red, mut deps) = (RedDelta::new(), DepDelta::new());
        for tid in order {
            let group = &groups[&tid];
            let stored: Vec<StoredSpan> = st
                .traces
                .get(&tid)
                .map(|v| {
                    v.iter()
                        .map(|s| StoredSpan {
                            span_id: s.span_id,
                            parent: s.parent_span_id,
                            service: s.service_name().to_string(),
                            start_ns: s.start_time_ns,
                            error: s.is_error(),
                        })
                        .collect()
                })
                .unwrap_or_default();
            let prev = st.summaries.get(&tid).cloned();
            let (accepted, summary) = plan_trace(tid, prev, &stored, group, &mut red, &mut deps);
            if accepted.is_empty() {
                continue;
            }
            st.summaries.insert(tid, summary);
            self.count
                .fetch_add(accepted.len() as u64, std::sync::atomic::Ordering::Relaxed);
            for i in accepted {
                let s = group[i];
                st.operations
                    .entry(s.service_name().to_string())
                    .or_default()
                    .insert((s.name.clone(), s.kind.as_i32()));
                st.traces.entry(tid).or_default().push(s.clone());
            }
        }
        for (k, a) in red {
            st.red.entry(k).or_default().merge(&a);
        }
        for (k, (c, e)) in deps {
            let d = st.deps.entry(k).or_default();
            d.0 += c;
            d.1 += e;
        }
        Ok(())
    }

    fn trace(&self, id: &TraceId) -> Result<Vec<Span>, StorageError> {
        let mut spans = self
            .state
            .read()
            .traces
            .get(id)
            .cloned()
            .unwrap_or_default();
        spans.sort_by_key(|s| (s.start_time_ns, s.span_id));
        Ok(spans)
    }

    fn summary(&self, id: &TraceId) -> Result<Option<TraceSummary>, StorageError> {
        Ok(self.state.read().summaries.get(id).cloned())
    }

    fn search(&self, q: &TraceSearch) -> Result<SearchOutcome, StorageError> {
        let st = self.state.read();
        // (latest matching start, trace id, span id): the order of the index scan.
        let mut hits: Vec<(u64, TraceId, SpanId)> = Vec::new();
        for (tid, spans) in &st.traces {
            let best = spans
                .iter()
                .filter(|s| q.matches(s))
                .map(|s| (s.start_time_ns, s.span_id))
                .max();
            if let Some((start, sid)) = best {
                hits.push((start, *tid, sid));
            }
        }
        hits.sort_by(|a, b| b.cmp(a));
        let traces = hits
            .into_iter()
            .take(q.limit)
            .filter_map(|(_, t, _)| st.summaries.get(&t).cloned())
            .collect();
        Ok(SearchOutcome {
            traces,
            complete: true,
        })
    }

    fn services(&self, limit: usize) -> Result<Vec<String>, StorageError> {
        Ok(self
            .state
            .read()
            .operations
            .keys()
            .take(limit)
            .cloned()
            .collect())
    }

    fn operations(&self, service: &str, limit: usize) -> Result<Vec<OperationInfo>, StorageError> {
        Ok(self
            .state
            .read()
            .operations
            .get(service)
            .map(|ops| {
                ops.iter()
                    .take(limit)
                    .map(|(name, kind)| OperationInfo {
                        name: name.clone(),
                        kind: SpanKind::from_i32(*kind),
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    fn dependencies(
        &self,
        start_ns: u64,
        end_ns: u64,
    ) -> Result<Vec<DependencyEdge>, StorageError> {
        if end_ns <= start_ns {
            return Ok(vec![]);
        }
        let (first, last) = (minute_of(start_ns), minute_of(end_ns - 1));
        let mut edges: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
        for ((m, caller, callee), (c, e)) in &self.state.read().deps {
            if (first..=last).contains(m) {
                let d = edges.entry((caller.clone(), callee.clone())).or_default();
                d.0 += c;
                d.1 += e;
            }
        }
        Ok(edges
            .into_iter()
            .map(|((caller, callee), (calls, errors))| DependencyEdge {
                caller,
                callee,
                calls,
                errors,
            })
            .collect())
    }

    fn red(&self, q: &RedQuery) -> Result<Vec<RedRow>, StorageError> {
        if q.end_ns <= q.start_ns {
            return Ok(vec![]);
        }
        let (first, last) = (minute_of(q.start_ns), minute_of(q.end_ns - 1));
        Ok(self
            .state
            .read()
            .red
            .iter()
            .filter(|((svc, m, _), _)| {
                (first..=last).contains(m) && q.service.as_deref().is_none_or(|s| s == svc)
            })
            .take(q.max_rows)
            .map(|((service, minute, operation), agg)| RedRow {
                service: service.clone(),
                operation: operation.clone(),
                minute: *minute,
                agg: agg.clone(),
            })
            .collect())
    }

    fn scan_spans(
        &self,
        q: &SpanScan,
        sink: &mut dyn FnMut(SpanChunk) -> bool,
    ) -> Result<ScanStats, StorageError> {
        let st = self.state.read();
        let limit = q.limit.unwrap_or(usize::MAX);
        let mut hits: Vec<&Span> = Vec::new();
        let traces: Box<dyn Iterator<Item = &Vec<Span>>> = match &q.trace_id {
            Some(t) => Box::new(st.traces.get(t).into_iter()),
            None => Box::new(st.traces.values()),
        };
        'outer: for spans in traces {
            for s in spans {
                if hits.len() >= limit {
                    break 'outer;
                }
                if q.matches(&SpanHead::of(s)) {
                    hits.push(s);
                }
            }
        }
        let stats = ScanStats {
            partitions: 1,
            rows: hits.len() as u64,
        };
        if !hits.is_empty() {
            sink(if q.full {
                SpanChunk::Spans(hits.into_iter().cloned().collect())
            } else {
                SpanChunk::Heads(hits.into_iter().map(SpanHead::of).collect())
            });
        }
        Ok(stats)
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

    fn cardinality(&self, limit: usize) -> Result<CardinalityStats, StorageError> {
        Ok(self.core.cardinality(limit))
    }

    fn series_guard(&self) -> Option<Arc<SeriesGuard>> {
        self.core.guard()
    }
    fn scan(
        &self,
        matchers: &[LabelMatcher],
        start_ms: i64,
        end_ms: i64,
        sink: &mut dyn FnMut(Vec<Series>) -> bool,
    ) -> Result<crate::storage::ScanStats, StorageError> {
        self.core.scan(None, matchers, start_ms, end_ms, sink)
    }
}

impl SeriesSource for MemoryMetricStore {
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
    fn settled_generation(&self) -> Option<u64> {
        Some(self.core.settled_generation())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_trace_store_passes_suite() {
        crate::storage::suite::trace_store(&MemoryTraceStore::default());
        crate::storage::suite::span_scans(&MemoryTraceStore::default());
        crate::storage::suite::trace_store_queries(&MemoryTraceStore::default());
    }

    #[test]
    fn memory_log_store_passes_suite() {
        crate::storage::suite::log_store(&MemoryLogStore::default());
        crate::storage::suite::log_scans(&MemoryLogStore::default());
    }

    #[test]
    fn memory_metric_store_passes_suite() {
        crate::storage::suite::metric_store(&MemoryMetricStore::default());
        crate::storage::suite::metric_scans(&MemoryMetricStore::default());
    }
}
