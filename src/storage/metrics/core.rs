//! The metrics store engine shared by the in-memory and the Parquet store:
//! the series registry and inverted label index, the in-memory head, delta
//! accumulation, and the merge of head and on-disk samples at query time.
//!
//! Policy for out-of-order and duplicate samples: any sample inside the
//! retention window is accepted, whatever its order; for identical
//! timestamps of one series the last write wins (the head over files, newer
//! files over older ones). Delta points are added to a running total per
//! series; a delta point whose end time is not after the last one added is
//! a re-send and is ignored, so identical re-exports never double count.

pub use crate::model::time::now_ms;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::{Mutex, RwLock};
use regex::Regex;

use super::guard::SeriesGuard;
use super::head::HeadChunk;
use super::mapping::{map_metrics, MappingOptions, PointKind};
use super::packed::{PackedLabels, SeriesIds};
use super::{CardinalityStats, MetricsOptions};
use crate::model::{
    LabelMatcher, Labels, MatchOp, Metric, MetricMeta, Sample, Series, METRIC_NAME,
};
use crate::storage::{ScanStats, StorageError, StoreStats};

/// Running total of a series fed by delta points.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct DeltaState {
    pub total: f64,
    pub last_ns: u64,
}

pub(super) struct SeriesEntry {
    pub labels: PackedLabels,
    /// Unflushed samples, compressed.
    pub head: HeadChunk,
    /// Time range of every sample of the series (head and files).
    pub min_t: i64,
    pub max_t: i64,
    /// Only for series fed by delta points (boxed: most series are not).
    pub delta: Option<Box<DeltaState>>,
}

/// Samples moved out of the head while they are written to disk.
pub(super) struct Frozen {
    pub samples: Vec<(u32, HeadChunk)>,
}

/// One on-disk file as the index knows it.
pub struct FileRef {
    pub name: String,
    pub partition: i64,
    pub min_t: i64,
    pub max_t: i64,
    pub samples: u64,
    pub bytes: u64,
    /// Write order: larger wins for identical timestamps.
    pub generation: u64,
    /// File-local series number → global series id.
    pub ids: Vec<u32>,
    /// First row of each local series in the samples file, plus the row
    /// count at the end (`ids.len() + 1` entries), so a read decodes only
    /// the rows of the series it wants. `None` for files whose series table
    /// predates row counts: those are read whole.
    pub offsets: Option<Vec<u64>>,
}

/// Reads the samples of a file for the given local series numbers.
pub trait FileReader: Send + Sync {
    /// Appends the samples in `[start, end]` of each local series
    /// `wanted[k]` (ascending), in time order, to `out[k]`; returns how
    /// many it appended.
    fn read_into(
        &self,
        file: &FileRef,
        wanted: &[u32],
        start: i64,
        end: i64,
        out: &mut [&mut Vec<Sample>],
    ) -> Result<usize, StorageError>;

    /// The samples in `[start, end]` of the local series `wanted`
    /// (ascending): one time-ordered run per series that has any, in
    /// `wanted` order.
    fn read(
        &self,
        file: &FileRef,
        wanted: &[u32],
        start: i64,
        end: i64,
    ) -> Result<Vec<(u32, Vec<Sample>)>, StorageError> {
        let mut runs: Vec<Vec<Sample>> = vec![Vec::new(); wanted.len()];
        let mut out: Vec<&mut Vec<Sample>> = runs.iter_mut().collect();
        self.read_into(file, wanted, start, end, &mut out)?;
        Ok(wanted
            .iter()
            .copied()
            .zip(runs)
            .filter(|(_, r)| !r.is_empty())
            .collect())
    }
}

#[derive(Default)]
pub(super) struct State {
    pub series: Vec<SeriesEntry>,
    /// Series ids by labels (hashed with a per-process seed, so clients
    /// cannot aim for collisions).
    pub ids: SeriesIds,
    /// label name → value → series ids (ascending).
    pub postings: HashMap<String, HashMap<String, Vec<u32>>>,
    pub meta: BTreeMap<String, MetricMeta>,
    pub frozen: Vec<Arc<Frozen>>,
    pub files: Vec<Arc<FileRef>>,
    pub last_seq: u64,
    pub head_samples: u64,
    pub disk_samples: u64,
    pub oldest_unflushed: Option<Instant>,
    pub dropped_too_old: u64,
}

impl State {
    pub fn get_or_create(&mut self, labels: Labels) -> u32 {
        let hash = super::guard::labels_hash(&labels);
        let series = &self.series;
        if let Some(id) = self.ids.find(&labels, hash, |i| &series[i as usize].labels) {
            return id;
        }
        let id = self.series.len() as u32;
        for (k, v) in labels.iter() {
            self.postings
                .entry(k.clone())
                .or_default()
                .entry(v.clone())
                .or_default()
                .push(id);
        }
        if self.series.len() == self.series.capacity() {
            // Grow by an eighth: the table is large and lives long.
            let more = (self.series.len() / 8).max(1024);
            self.series.reserve_exact(more);
        }
        self.series.push(SeriesEntry {
            labels: PackedLabels::pack(&labels),
            head: HeadChunk::default(),
            min_t: i64::MAX,
            max_t: i64::MIN,
            delta: None,
        });
        let series = &self.series;
        self.ids.insert(id, hash, |i| &series[i as usize].labels);
        id
    }

    /// Inserts a sample into a series' head; true if it added a sample
    /// (false when it replaced one with the same timestamp).
    fn insert(&mut self, id: u32, s: Sample) -> bool {
        let e = &mut self.series[id as usize];
        e.min_t = e.min_t.min(s.t_ms);
        e.max_t = e.max_t.max(s.t_ms);
        if !e.head.insert(s) {
            return false;
        }
        self.head_samples += 1;
        if self.oldest_unflushed.is_none() {
            self.oldest_unflushed = Some(Instant::now());
        }
        true
    }
}

fn compile(m: &LabelMatcher) -> Result<Option<Regex>, StorageError> {
    match m.op {
        MatchOp::Regex | MatchOp::NotRegex => {
            regex::RegexBuilder::new(&format!("^(?:{})$", m.value))
                .size_limit(1 << 20)
                .build()
                .map(Some)
                .map_err(|e| {
                    StorageError::Backend(format!("invalid regular expression {:?}: {e}", m.value))
                })
        }
        _ => Ok(None),
    }
}

struct Compiled<'a> {
    m: &'a LabelMatcher,
    re: Option<Regex>,
}

impl Compiled<'_> {
    fn matches(&self, v: &str) -> bool {
        match self.m.op {
            MatchOp::Equal => v == self.m.value,
            MatchOp::NotEqual => v != self.m.value,
            MatchOp::Regex => self.re.as_ref().is_some_and(|r| r.is_match(v)),
            MatchOp::NotRegex => !self.re.as_ref().is_some_and(|r| r.is_match(v)),
        }
    }
}

/// The engine; the Parquet store adds a [`FileReader`] and persistence.
pub struct Core {
    pub(super) opts: MetricsOptions,
    pub(super) state: RwLock<State>,
    pub(super) guard: Option<Arc<SeriesGuard>>,
    pub(super) durable: AtomicU64,
    pub(super) flush_lock: Mutex<()>,
    pub(super) generation: AtomicU64,
    /// See [`crate::storage::SeriesSource::settled_generation`].
    pub(super) settled: AtomicU64,
}

impl Core {
    pub fn new(opts: MetricsOptions, guard: Option<Arc<SeriesGuard>>) -> Self {
        Core {
            opts,
            state: RwLock::new(State::default()),
            guard,
            durable: AtomicU64::new(0),
            flush_lock: Mutex::new(()),
            generation: AtomicU64::new(1),
            settled: AtomicU64::new(0),
        }
    }

    pub fn mapping(&self) -> &MappingOptions {
        &self.opts.mapping
    }

    pub fn guard(&self) -> Option<Arc<SeriesGuard>> {
        self.guard.clone()
    }

    fn min_time(&self) -> i64 {
        if self.opts.retention_ms <= 0 {
            i64::MIN
        } else {
            now_ms() - self.opts.retention_ms
        }
    }

    pub fn settled_generation(&self) -> u64 {
        self.settled.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Marks settled data as changed (see `settled_generation`).
    pub fn settled_changed(&self) {
        self.settled
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// OTLP metrics, mapped and accumulated.
    pub fn write_metrics(&self, seq: u64, metrics: &[Metric]) {
        let mapped = map_metrics(metrics, &self.opts.mapping);
        let min_t = self.min_time();
        let settled = now_ms() - crate::storage::SETTLED_MS;
        let mut late = false;
        let mut touched = Vec::new();
        {
            let mut st = self.state.write();
            for m in mapped.meta {
                st.meta.insert(m.metric.clone(), m);
            }
            for p in mapped.points {
                if p.t_ms < min_t {
                    st.dropped_too_old += 1;
                    continue;
                }
                let id = st.get_or_create(p.labels);
                let v = match p.kind {
                    PointKind::Absolute => p.v,
                    PointKind::Delta { time_ns } => {
                        let e = &mut st.series[id as usize];
                        let d = e.delta.get_or_insert_with(|| {
                            Box::new(DeltaState {
                                total: 0.0,
                                last_ns: 0,
                            })
                        });
                        if time_ns <= d.last_ns {
                            continue;
                        }
                        d.total += p.v;
                        d.last_ns = time_ns;
                        d.total
                    }
                };
                late |= p.t_ms <= settled;
                st.insert(id, Sample { t_ms: p.t_ms, v });
                touched.push(id);
            }
            st.last_seq = st.last_seq.max(seq);
            touched.dedup();
            self.register(&st, &touched);
            if late {
                self.settled_changed();
            }
        }
    }

    /// Tells the cardinality guard that the series `ids` were written.
    fn register(&self, st: &State, ids: &[u32]) {
        if let Some(g) = &self.guard {
            let series = ids.iter().map(|i| {
                let l = &st.series[*i as usize].labels;
                (l.hash(), l.get(METRIC_NAME).unwrap_or(""))
            });
            g.register_hashed(series, now_ms());
        }
    }

    /// Prometheus series as given (remote_write).
    pub fn write_series(&self, seq: u64, series: Vec<Series>) {
        let min_t = self.min_time();
        let settled = now_ms() - crate::storage::SETTLED_MS;
        let mut late = false;
        let mut touched = Vec::new();
        let mut st = self.state.write();
        for s in series {
            let id = st.get_or_create(s.labels);
            for x in s.samples {
                if x.t_ms < min_t {
                    st.dropped_too_old += 1;
                    continue;
                }
                late |= x.t_ms <= settled;
                st.insert(id, x);
            }
            touched.push(id);
        }
        st.last_seq = st.last_seq.max(seq);
        self.register(&st, &touched);
        if late {
            self.settled_changed();
        }
    }

    /// Ids of the series matching every matcher, ascending.
    fn matching(st: &State, matchers: &[LabelMatcher]) -> Result<Vec<u32>, StorageError> {
        let compiled: Vec<Compiled> = matchers
            .iter()
            .map(|m| compile(m).map(|re| Compiled { m, re }))
            .collect::<Result<_, StorageError>>()?;
        // Candidates from the postings of matchers that reject the empty
        // value (so only series having the label can match).
        let mut candidates: Option<Vec<u32>> = None;
        for c in &compiled {
            if c.matches("") {
                continue;
            }
            let mut ids: Vec<u32> = Vec::new();
            if let Some(values) = st.postings.get(&c.m.name) {
                if c.m.op == MatchOp::Equal {
                    if let Some(p) = values.get(&c.m.value) {
                        ids.extend_from_slice(p);
                    }
                } else {
                    for (v, p) in values {
                        if c.matches(v) {
                            ids.extend_from_slice(p);
                        }
                    }
                    ids.sort_unstable();
                }
            }
            candidates = Some(match candidates {
                None => ids,
                Some(prev) => intersect(&prev, &ids),
            });
            if candidates.as_ref().is_some_and(|c| c.is_empty()) {
                return Ok(vec![]);
            }
        }
        let candidates = candidates.unwrap_or_else(|| (0..st.series.len() as u32).collect());
        Ok(candidates
            .into_iter()
            .filter(|id| {
                let l = &st.series[*id as usize].labels;
                compiled
                    .iter()
                    .all(|c| c.matches(l.get(&c.m.name).unwrap_or("")))
            })
            .collect())
    }

    /// Label sets of matching series with samples in the range.
    pub fn series(
        &self,
        matchers: &[LabelMatcher],
        start: i64,
        end: i64,
    ) -> Result<Vec<Labels>, StorageError> {
        let st = self.state.read();
        let ids = Self::matching(&st, matchers)?;
        let mut out: Vec<Labels> = ids
            .into_iter()
            .map(|id| &st.series[id as usize])
            .filter(|e| e.max_t >= start && e.min_t <= end && e.min_t <= e.max_t)
            .map(|e| e.labels.unpack())
            .collect();
        if out.len() > self.opts.max_query_series {
            return Err(too_many(self.opts.max_query_series));
        }
        out.sort();
        Ok(out)
    }

    pub fn label_names(
        &self,
        matchers: &[LabelMatcher],
        start: i64,
        end: i64,
    ) -> Result<Vec<String>, StorageError> {
        if matchers.is_empty() {
            let st = self.state.read();
            let mut names: Vec<String> = st
                .postings
                .iter()
                .filter(|(_, values)| {
                    values.values().flatten().any(|id| {
                        let e = &st.series[*id as usize];
                        e.max_t >= start && e.min_t <= end
                    })
                })
                .map(|(k, _)| k.clone())
                .collect();
            names.sort();
            return Ok(names);
        }
        let mut names: Vec<String> = self
            .series(matchers, start, end)?
            .into_iter()
            .flat_map(|l| l.into_iter().map(|(k, _)| k))
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    }

    pub fn label_values(
        &self,
        name: &str,
        matchers: &[LabelMatcher],
        start: i64,
        end: i64,
    ) -> Result<Vec<String>, StorageError> {
        if matchers.is_empty() {
            let st = self.state.read();
            let mut values: Vec<String> = st
                .postings
                .get(name)
                .map(|vals| {
                    vals.iter()
                        .filter(|(_, ids)| {
                            ids.iter().any(|id| {
                                let e = &st.series[*id as usize];
                                e.max_t >= start && e.min_t <= end
                            })
                        })
                        .map(|(v, _)| v.clone())
                        .collect()
                })
                .unwrap_or_default();
            values.sort();
            return Ok(values);
        }
        let mut values: Vec<String> = self
            .series(matchers, start, end)?
            .into_iter()
            .filter_map(|l| crate::model::label(&l, name).map(str::to_string))
            .collect();
        values.sort();
        values.dedup();
        Ok(values)
    }

    pub fn metadata(&self) -> Vec<MetricMeta> {
        self.state.read().meta.values().cloned().collect()
    }

    /// Matching series with their samples in `[start, end]`, merged over
    /// head, frozen head and files.
    pub fn select(
        &self,
        reader: Option<&dyn FileReader>,
        matchers: &[LabelMatcher],
        start: i64,
        end: i64,
    ) -> Result<Vec<Series>, StorageError> {
        let (s, n) = (self.opts.max_query_series, self.opts.max_query_samples);
        self.select_limited(reader, matchers, start, end, s, n)
    }

    /// Streams matching series one time partition at a time (so memory
    /// holds one partition's samples), skipping time where no matching
    /// series has samples. Not bounded by the PromQL query limits.
    pub fn scan(
        &self,
        reader: Option<&dyn FileReader>,
        matchers: &[LabelMatcher],
        start: i64,
        end: i64,
        sink: &mut dyn FnMut(Vec<Series>) -> bool,
    ) -> Result<ScanStats, StorageError> {
        let mut stats = ScanStats::default();
        let (lo, hi) = {
            let st = self.state.read();
            Self::matching(&st, matchers)?
                .into_iter()
                .map(|id| &st.series[id as usize])
                .fold((i64::MAX, i64::MIN), |(lo, hi), e| {
                    (lo.min(e.min_t), hi.max(e.max_t))
                })
        };
        let (lo, hi) = (lo.max(start), hi.min(end));
        let part = self.opts.partition_ms.max(1);
        let mut w = lo.saturating_sub(lo.rem_euclid(part));
        while lo <= hi && w <= hi {
            let (a, b) = (w.max(lo), w.saturating_add(part - 1).min(hi));
            let series = self.select_limited(reader, matchers, a, b, usize::MAX, usize::MAX)?;
            if !series.is_empty() {
                stats.partitions += 1;
                stats.rows += series.iter().map(|s| s.samples.len() as u64).sum::<u64>();
                if !sink(series) {
                    break;
                }
            }
            w = w.saturating_add(part);
            if w == i64::MAX {
                break;
            }
        }
        Ok(stats)
    }

    fn select_limited(
        &self,
        reader: Option<&dyn FileReader>,
        matchers: &[LabelMatcher],
        start: i64,
        end: i64,
        max_series: usize,
        max_samples: usize,
    ) -> Result<Vec<Series>, StorageError> {
        // Per selected series (in `ids` order), the time-ordered runs found
        // in each source with the source's generation, which orders
        // duplicates: files by write order, then the frozen head, then the
        // head.
        let (ids, labels, files, runs) = {
            let st = self.state.read();
            let ids: Vec<u32> = Self::matching(&st, matchers)?
                .into_iter()
                .filter(|id| {
                    let e = &st.series[*id as usize];
                    e.max_t >= start && e.min_t <= end
                })
                .collect();
            if ids.len() > max_series {
                return Err(too_many(max_series));
            }
            let mut runs: Vec<Vec<(u64, Vec<Sample>)>> = vec![Vec::new(); ids.len()];
            let mut held = 0usize;
            for f in st.frozen.iter() {
                for (id, chunk) in &f.samples {
                    if let Ok(i) = ids.binary_search(id) {
                        let mut v = Vec::new();
                        chunk.read(start, end, &mut v);
                        if !v.is_empty() {
                            held += v.len();
                            runs[i].push((u64::MAX - 1, v));
                        }
                    }
                }
            }
            for (i, id) in ids.iter().enumerate() {
                let mut v = Vec::new();
                st.series[*id as usize].head.read(start, end, &mut v);
                if !v.is_empty() {
                    held += v.len();
                    runs[i].push((u64::MAX, v));
                }
            }
            if held > max_samples {
                return Err(too_many_samples(max_samples));
            }
            let files: Vec<Arc<FileRef>> = st
                .files
                .iter()
                .filter(|f| f.max_t >= start && f.min_t <= end)
                .cloned()
                .collect();
            let labels: Vec<Labels> = ids
                .iter()
                .map(|id| st.series[*id as usize].labels.unpack())
                .collect();
            (ids, labels, files, runs)
        };
        // Gathered in label order, which is also the row order of every
        // file, so a contiguous slice of the series reads contiguous rows.
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_by(|&a, &b| labels[a].cmp(&labels[b]));
        let held: usize = runs.iter().flatten().map(|r| r.1.len()).sum();
        let mut runs = runs;
        let tails: Vec<Vec<(u64, Vec<Sample>)>> = order
            .iter()
            .map(|&i| std::mem::take(&mut runs[i]))
            .collect();
        let ordered: Vec<u32> = order.iter().map(|&i| ids[i]).collect();
        let files = if reader.is_some() { files } else { Vec::new() };
        let gathered = gather(
            reader,
            files,
            &ordered,
            start,
            end,
            max_samples - held,
            tails,
            read_threads(),
        )?;
        let mut labels = labels;
        let out: Vec<Series> = order
            .iter()
            .zip(gathered)
            .filter_map(|(&i, samples)| {
                (!samples.is_empty()).then(|| Series {
                    labels: std::mem::take(&mut labels[i]),
                    samples,
                })
            })
            .collect();
        Ok(out)
    }

    pub fn stats(&self) -> StoreStats {
        let st = self.state.read();
        StoreStats {
            records: st.head_samples + st.disk_samples,
            disk_bytes: st.files.iter().map(|f| f.bytes).sum(),
        }
    }

    /// Series counts by metric name and label, the top `limit` of each.
    pub fn cardinality(&self, limit: usize) -> CardinalityStats {
        let st = self.state.read();
        let top = |mut v: Vec<(String, u64)>| {
            v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            v.truncate(limit);
            v
        };
        let by_metric: Vec<(String, u64)> = st
            .postings
            .get(METRIC_NAME)
            .map(|vals| {
                vals.iter()
                    .map(|(k, ids)| (k.clone(), ids.len() as u64))
                    .collect()
            })
            .unwrap_or_default();
        let value_counts: Vec<(String, u64)> = st
            .postings
            .iter()
            .map(|(k, vals)| (k.clone(), vals.len() as u64))
            .collect();
        let pairs: Vec<(String, u64)> = st
            .postings
            .iter()
            .flat_map(|(k, vals)| {
                vals.iter()
                    .map(move |(v, ids)| (format!("{k}={v}"), ids.len() as u64))
            })
            .collect();
        let memory: Vec<(String, u64)> = st
            .postings
            .iter()
            .map(|(k, vals)| {
                (
                    k.clone(),
                    vals.iter()
                        .map(|(v, ids)| (v.len() * ids.len()) as u64)
                        .sum::<u64>(),
                )
            })
            .collect();
        CardinalityStats {
            num_series: st.series.len() as u64,
            head_samples: st.head_samples,
            head_bytes: st.series.iter().map(|e| e.head.heap_bytes() as u64).sum(),
            series_bytes: (st.series.capacity() * std::mem::size_of::<SeriesEntry>()) as u64
                + st.series
                    .iter()
                    .map(|e| e.labels.heap_bytes() as u64)
                    .sum::<u64>(),
            active_series: self.guard.as_ref().map(|g| g.active() as u64),
            series_count_by_metric_name: top(by_metric),
            label_value_count_by_label_name: top(value_counts),
            memory_in_bytes_by_label_name: top(memory),
            series_count_by_label_value_pair: top(pairs),
        }
    }
}

fn too_many(n: usize) -> StorageError {
    StorageError::Backend(format!(
        "the query matches more than {n} series: narrow the selector"
    ))
}

fn too_many_samples(n: usize) -> StorageError {
    StorageError::Backend(format!(
        "the query would load more than {n} samples: narrow the selector or the time range"
    ))
}

/// Threads that read files for one query: one per core, up to 8.
fn read_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 8)
}

/// Below this many samples a query's files are read on the calling thread.
const PARALLEL_READ_SAMPLES: usize = 100_000;

/// One series' samples as they are gathered: runs appended source after
/// source, each noted with its generation and where it starts.
#[derive(Default)]
struct Gathered {
    samples: Vec<Sample>,
    runs: Vec<(u64, usize)>,
}

impl Gathered {
    fn push_run(&mut self, generation: u64) -> &mut Vec<Sample> {
        self.runs.push((generation, self.samples.len()));
        &mut self.samples
    }

    /// The series' samples: as gathered when each run starts after the one
    /// before ends (the usual case: files in time order, then the head),
    /// else merged by [`merge_runs`].
    fn finish(mut self) -> Vec<Sample> {
        let mut last: Option<i64> = None;
        let mut ordered = true;
        for (k, &(_, a)) in self.runs.iter().enumerate() {
            let b = self.runs.get(k + 1).map_or(self.samples.len(), |r| r.1);
            let run = &self.samples[a..b];
            if let (Some(l), Some(first)) = (last, run.first()) {
                if l >= first.t_ms {
                    ordered = false;
                    break;
                }
            }
            if let Some(x) = run.last() {
                last = Some(x.t_ms);
            }
        }
        if ordered {
            // Estimates reserve little more than is read; trim a larger
            // excess rather than hold it for the query's lifetime.
            if self.samples.capacity() > self.samples.len() + self.samples.len() / 4 + 64 {
                self.samples.shrink_to_fit();
            }
            return self.samples;
        }
        let mut runs = Vec::with_capacity(self.runs.len());
        for &(g, a) in self.runs.iter().rev() {
            runs.push((g, self.samples.split_off(a)));
        }
        merge_runs(runs)
    }
}

/// A file's part of a query: its wanted local series, ascending, each with
/// its position in the gather order and the samples it is expected to hold
/// in the time range.
struct FilePart {
    file: Arc<FileRef>,
    wanted: Vec<(u32, u32, usize)>,
}

/// Expected samples of a series with `rows` rows in `f` within
/// `[start, end]`: all of them when the file lies inside, else a share in
/// proportion to the time covered, with some slack for irregular
/// sampling (a buffer that has to grow is copied).
fn expected_rows(f: &FileRef, rows: usize, start: i64, end: i64) -> usize {
    if f.min_t >= start && f.max_t <= end {
        return rows;
    }
    let span = (f.max_t as i128 - f.min_t as i128 + 1).max(1);
    let covered = (end.min(f.max_t) as i128 - start.max(f.min_t) as i128 + 1).clamp(0, span);
    if covered == 0 {
        return 0;
    }
    let est = ((rows as i128 * covered + span - 1) / span) as usize;
    (est + est / 16 + 2).min(rows)
}

/// Reads the series `ids` (global ids, in gather order: label order) from
/// `files` and appends each series' `tails` (frozen head and head runs),
/// writing every sample once, straight into its series' final buffer.
/// The series are split into up to `threads` contiguous slices of about
/// equal size, each read from every file on its own thread. Fails once
/// more than `budget` samples have been read from files.
#[allow(clippy::too_many_arguments)]
fn gather(
    reader: Option<&dyn FileReader>,
    mut files: Vec<Arc<FileRef>>,
    ids: &[u32],
    start: i64,
    end: i64,
    budget: usize,
    tails: Vec<Vec<(u64, Vec<Sample>)>>,
    threads: usize,
) -> Result<Vec<Vec<Sample>>, StorageError> {
    use std::sync::atomic::{AtomicUsize, Ordering as AO};
    // Files in time order, so runs usually arrive in time order too.
    files.sort_by_key(|f| (f.min_t, f.generation));
    // Global id → gather position, through a bitmap then a sorted list.
    let max_id = ids.iter().copied().max().map_or(0, |m| m as usize + 1);
    let mut bits = vec![0u64; max_id.div_ceil(64)];
    let mut by_id: Vec<(u32, u32)> = Vec::with_capacity(ids.len());
    for (pos, &id) in ids.iter().enumerate() {
        bits[id as usize / 64] |= 1 << (id % 64);
        by_id.push((id, pos as u32));
    }
    by_id.sort_unstable();
    let mut expected: Vec<usize> = tails
        .iter()
        .map(|t| t.iter().map(|r| r.1.len()).sum())
        .collect();
    let mut unknown = false;
    let mut parts: Vec<FilePart> = Vec::new();
    if reader.is_some() {
        for f in files {
            let mut wanted = Vec::new();
            for (local, &g) in f.ids.iter().enumerate() {
                let gi = g as usize;
                if gi >= max_id || bits[gi / 64] & (1 << (gi % 64)) == 0 {
                    continue;
                }
                let Ok(k) = by_id.binary_search_by_key(&g, |x| x.0) else {
                    continue;
                };
                let pos = by_id[k].1;
                let est = match &f.offsets {
                    Some(off) => {
                        let rows = match (off.get(local), off.get(local + 1)) {
                            (Some(&a), Some(&b)) => b.saturating_sub(a) as usize,
                            _ => 0,
                        };
                        expected_rows(&f, rows, start, end)
                    }
                    None => {
                        unknown = true;
                        0
                    }
                };
                expected[pos as usize] += est;
                wanted.push((local as u32, pos, est));
            }
            if !wanted.is_empty() {
                parts.push(FilePart { file: f, wanted });
            }
        }
    }
    let total: usize = expected.iter().sum();
    let threads = if unknown || total >= PARALLEL_READ_SAMPLES {
        threads.clamp(1, ids.len().max(1))
    } else {
        1
    };
    // Contiguous slices of the gather order with about equal samples (or
    // series, without estimates).
    let weight = |pos: usize| if total == 0 { 1 } else { expected[pos] };
    let sum = if total == 0 { ids.len() } else { total };
    let mut bounds = vec![0usize];
    let mut acc = 0usize;
    for pos in 0..ids.len() {
        acc += weight(pos);
        if bounds.len() < threads && acc * threads >= sum * bounds.len() && pos + 1 < ids.len() {
            bounds.push(pos + 1);
        }
    }
    bounds.push(ids.len());
    bounds.dedup();
    // A huge estimate is not reserved up front: the budget stops the read.
    let reserve = total <= budget;
    let mut gathered: Vec<Gathered> = Vec::with_capacity(ids.len());
    gathered.resize_with(ids.len(), Gathered::default);
    let read = AtomicUsize::new(0);
    let mut tails = tails;
    let slice = |lo: usize,
                 mine: &mut [Gathered],
                 tails: &mut [Vec<(u64, Vec<Sample>)>]|
     -> Result<(), StorageError> {
        if reserve {
            for (k, g) in mine.iter_mut().enumerate() {
                g.samples.reserve_exact(expected[lo + k]);
            }
        }
        let hi = lo + mine.len();
        if let Some(reader) = reader {
            let mut locals: Vec<u32> = Vec::new();
            for part in &parts {
                locals.clear();
                let mut slots: Vec<Option<&mut Gathered>> = mine.iter_mut().map(Some).collect();
                let mut outs: Vec<&mut Vec<Sample>> = Vec::new();
                for &(local, pos, _) in &part.wanted {
                    let pos = pos as usize;
                    if pos < lo || pos >= hi {
                        continue;
                    }
                    if let Some(g) = slots[pos - lo].take() {
                        locals.push(local);
                        outs.push(g.push_run(part.file.generation));
                    }
                }
                if locals.is_empty() {
                    continue;
                }
                let n = reader.read_into(&part.file, &locals, start, end, &mut outs)?;
                if read.fetch_add(n, AO::Relaxed) + n > budget {
                    return Err(too_many_samples(budget));
                }
            }
        }
        for (g, t) in mine.iter_mut().zip(tails.iter_mut()) {
            for (generation, run) in t.drain(..) {
                g.push_run(generation).extend(run);
            }
        }
        Ok(())
    };
    if bounds.len() <= 2 {
        slice(0, &mut gathered, &mut tails)?;
    } else {
        let mut jobs = Vec::new();
        let (mut rest, mut rest_t) = (&mut gathered[..], &mut tails[..]);
        for w in bounds.windows(2) {
            let (mine, r) = rest.split_at_mut(w[1] - w[0]);
            let (mine_t, rt) = rest_t.split_at_mut(w[1] - w[0]);
            jobs.push((w[0], mine, mine_t));
            (rest, rest_t) = (r, rt);
        }
        let slice = &slice;
        let results: Vec<Result<(), StorageError>> = std::thread::scope(|scope| {
            let handles: Vec<_> = jobs
                .into_iter()
                .map(|(lo, mine, mine_t)| scope.spawn(move || slice(lo, mine, mine_t)))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(StorageError::Backend("file reader panicked".into()))
                    })
                })
                .collect()
        });
        for r in results {
            r?;
        }
    }
    Ok(gathered.into_iter().map(Gathered::finish).collect())
}

/// Merges one series' time-ordered runs from several sources into one
/// sequence; for identical timestamps the run with the larger generation
/// wins. Runs that do not overlap (the usual case: one file per partition)
/// are concatenated without sorting.
pub(super) fn merge_runs(mut runs: Vec<(u64, Vec<Sample>)>) -> Vec<Sample> {
    match runs.len() {
        0 => return Vec::new(),
        1 => return runs.pop().map(|r| r.1).unwrap_or_default(),
        _ => {}
    }
    runs.sort_by_key(|(g, r)| (r.first().map_or(i64::MIN, |x| x.t_ms), *g));
    let disjoint = runs
        .windows(2)
        .all(|w| match (w[0].1.last(), w[1].1.first()) {
            (Some(a), Some(b)) => a.t_ms < b.t_ms,
            _ => true,
        });
    if disjoint {
        let mut out = Vec::with_capacity(runs.iter().map(|r| r.1.len()).sum());
        for (_, r) in runs {
            out.extend(r);
        }
        return out;
    }
    let mut all: Vec<(i64, u64, f64)> = runs
        .into_iter()
        .flat_map(|(g, r)| r.into_iter().map(move |s| (s.t_ms, g, s.v)))
        .collect();
    all.sort_by_key(|a| (a.0, a.1));
    let mut out: Vec<Sample> = Vec::with_capacity(all.len());
    for (t, _, v) in all {
        match out.last_mut() {
            Some(last) if last.t_ms == t => last.v = v,
            _ => out.push(Sample { t_ms: t, v }),
        }
    }
    out
}

fn intersect(a: &[u32], b: &[u32]) -> Vec<u32> {
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                out.push(a[i]);
                i += 1;
                j += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(g: u64, pts: &[(i64, f64)]) -> (u64, Vec<Sample>) {
        (g, pts.iter().map(|&(t_ms, v)| Sample { t_ms, v }).collect())
    }

    fn pts(s: Vec<Sample>) -> Vec<(i64, f64)> {
        s.into_iter().map(|x| (x.t_ms, x.v)).collect()
    }

    #[test]
    fn late_writes_change_the_settled_generation_and_recent_ones_do_not() {
        let core = Core::new(MetricsOptions::default(), None);
        let labels: Labels = vec![(METRIC_NAME.into(), "up".into())];
        let write = |t_ms: i64| {
            core.write_series(
                1,
                vec![Series {
                    labels: labels.clone(),
                    samples: vec![Sample { t_ms, v: 1.0 }],
                }],
            )
        };
        let g0 = core.settled_generation();
        write(now_ms());
        write(now_ms() - crate::storage::SETTLED_MS + 10_000);
        assert_eq!(core.settled_generation(), g0);
        write(now_ms() - crate::storage::SETTLED_MS - 1);
        let g1 = core.settled_generation();
        assert!(g1 > g0);
        // OTLP points too.
        let ns = |ms: i64| ms as u64 * 1_000_000;
        let recent = crate::storage::suite::gauge("g", ns(now_ms()), 1.0);
        core.write_metrics(2, &[recent]);
        assert_eq!(core.settled_generation(), g1);
        let old = crate::storage::suite::gauge("g", ns(now_ms() - 3_600_000), 1.0);
        core.write_metrics(3, &[old]);
        assert!(core.settled_generation() > g1);
    }

    #[test]
    fn disjoint_runs_are_concatenated_in_time_order() {
        let got = merge_runs(vec![
            run(5, &[(30, 3.0), (40, 4.0)]),
            run(1, &[(10, 1.0), (20, 2.0)]),
        ]);
        assert_eq!(pts(got), vec![(10, 1.0), (20, 2.0), (30, 3.0), (40, 4.0)]);
    }

    #[test]
    fn overlapping_runs_keep_the_newest_generation_per_timestamp() {
        let got = merge_runs(vec![
            run(u64::MAX, &[(20, 20.0), (25, 25.0)]),
            run(1, &[(10, 1.0), (20, 2.0), (30, 3.0)]),
            run(2, &[(20, 200.0), (30, 300.0)]),
        ]);
        assert_eq!(
            pts(got),
            vec![(10, 1.0), (20, 20.0), (25, 25.0), (30, 300.0)]
        );
        assert!(merge_runs(vec![]).is_empty());
        assert_eq!(pts(merge_runs(vec![run(3, &[(1, 1.0)])])), vec![(1, 1.0)]);
    }

    /// Files held in memory: per file name, each local series' samples.
    struct MemFiles(HashMap<String, Vec<Vec<Sample>>>);

    impl FileReader for MemFiles {
        fn read_into(
            &self,
            file: &FileRef,
            wanted: &[u32],
            start: i64,
            end: i64,
            out: &mut [&mut Vec<Sample>],
        ) -> Result<usize, StorageError> {
            let rows = &self.0[&file.name];
            let mut n = 0;
            for (k, &l) in wanted.iter().enumerate() {
                for x in rows[l as usize]
                    .iter()
                    .filter(|x| x.t_ms >= start && x.t_ms <= end)
                {
                    out[k].push(*x);
                    n += 1;
                }
            }
            Ok(n)
        }
    }

    fn file_ref(name: &str, generation: u64, ids: Vec<u32>, rows: &[Vec<Sample>]) -> FileRef {
        let mut offsets = vec![0u64];
        for r in rows {
            offsets.push(offsets.last().copied().unwrap_or(0) + r.len() as u64);
        }
        let all = rows.iter().flatten();
        FileRef {
            name: name.into(),
            partition: 0,
            min_t: all.clone().map(|x| x.t_ms).min().unwrap_or(0),
            max_t: all.clone().map(|x| x.t_ms).max().unwrap_or(0),
            samples: all.count() as u64,
            bytes: 0,
            generation,
            ids,
            offsets: Some(offsets),
        }
    }

    #[test]
    fn gathering_equals_merging_every_run_for_any_thread_count() {
        // Six series (global ids 0..6) over three files: two partitions
        // and, in the first, a newer file overlapping some timestamps; the
        // local order of each file differs from the global one.
        let series = |k: u32, from: i64, to: i64, step: i64, scale: f64| -> Vec<Sample> {
            (from..to)
                .step_by(step as usize)
                .map(|t| Sample {
                    t_ms: t + k as i64,
                    v: t as f64 * scale + k as f64,
                })
                .collect()
        };
        let a_ids = vec![5, 3, 1, 0, 2, 4];
        let a: Vec<Vec<Sample>> = a_ids.iter().map(|&k| series(k, 0, 1000, 10, 1.0)).collect();
        let b_ids = vec![4, 0, 2];
        let b: Vec<Vec<Sample>> = b_ids
            .iter()
            .map(|&k| series(k, 1000, 2000, 10, 1.0))
            .collect();
        let c_ids = vec![3, 1];
        let c: Vec<Vec<Sample>> = c_ids
            .iter()
            .map(|&k| series(k, 500, 700, 20, -1.0))
            .collect();
        let files = vec![
            Arc::new(file_ref("b", 2, b_ids.clone(), &b)),
            Arc::new(file_ref("c", 3, c_ids.clone(), &c)),
            Arc::new(file_ref("a", 1, a_ids.clone(), &a)),
        ];
        let mem = MemFiles(
            [("a", a), ("b", b), ("c", c)]
                .into_iter()
                .map(|(n, r)| (n.to_string(), r))
                .collect(),
        );
        // The head of series 0 continues the files; that of 2 overlaps them.
        let tails = |order: &[u32]| -> Vec<Vec<(u64, Vec<Sample>)>> {
            order
                .iter()
                .map(|&id| match id {
                    0 => vec![(u64::MAX, series(0, 2000, 2100, 10, 1.0))],
                    2 => vec![(u64::MAX, series(2, 1500, 1600, 10, 7.0))],
                    _ => vec![],
                })
                .collect()
        };
        for (start, end) in [(i64::MIN, i64::MAX), (250, 1750), (600, 600), (5000, 6000)] {
            let order = vec![2u32, 0, 5, 3, 4];
            // The reference: every run of a series through merge_runs.
            let want: Vec<Vec<Sample>> = order
                .iter()
                .zip(tails(&order))
                .map(|(&id, tail)| {
                    let mut runs: Vec<(u64, Vec<Sample>)> = Vec::new();
                    for f in &files {
                        if let Some(l) = f.ids.iter().position(|&g| g == id) {
                            let r: Vec<Sample> = mem.0[&f.name][l]
                                .iter()
                                .filter(|x| x.t_ms >= start && x.t_ms <= end)
                                .copied()
                                .collect();
                            runs.push((f.generation, r));
                        }
                    }
                    runs.extend(tail.into_iter().map(|(g, r)| {
                        (
                            g,
                            r.into_iter()
                                .filter(|x| x.t_ms >= start && x.t_ms <= end)
                                .collect(),
                        )
                    }));
                    merge_runs(runs)
                })
                .collect();
            for threads in 1..=4 {
                let tails: Vec<Vec<(u64, Vec<Sample>)>> = tails(&order)
                    .into_iter()
                    .map(|t| {
                        t.into_iter()
                            .map(|(g, r)| {
                                (
                                    g,
                                    r.into_iter()
                                        .filter(|x| x.t_ms >= start && x.t_ms <= end)
                                        .collect(),
                                )
                            })
                            .collect()
                    })
                    .collect();
                let got = gather(
                    Some(&mem),
                    files.clone(),
                    &order,
                    start,
                    end,
                    usize::MAX,
                    tails,
                    threads,
                )
                .unwrap();
                assert_eq!(got.len(), want.len());
                for (g, w) in got.iter().zip(&want) {
                    assert_eq!(
                        pts(g.clone()),
                        pts(w.clone()),
                        "{start}..{end}, {threads} threads"
                    );
                }
            }
        }
        // Series 3 keeps the newer file's values where both files have one.
        let got = gather(
            Some(&mem),
            files.clone(),
            &[3],
            500,
            520,
            usize::MAX,
            vec![vec![]],
            2,
        )
        .unwrap();
        assert_eq!(pts(got[0].clone()), vec![(503, -497.0), (513, 513.0)]);
        // Reading more than the budget fails, whatever the thread count.
        for threads in [1, 3] {
            let err = gather(
                Some(&mem),
                files.clone(),
                &[0, 1, 2],
                i64::MIN,
                i64::MAX,
                150,
                vec![vec![]; 3],
                threads,
            );
            assert!(err.is_err(), "{threads} threads");
        }
    }

    #[test]
    fn gathered_runs_in_time_order_are_kept_as_read_others_merged() {
        let mut g = Gathered::default();
        g.push_run(1).extend(run(1, &[(1, 1.0), (2, 2.0)]).1);
        g.push_run(9).extend(Vec::<Sample>::new());
        g.push_run(2).extend(run(2, &[(3, 3.0)]).1);
        g.push_run(u64::MAX).extend(run(0, &[(4, 4.0)]).1);
        assert_eq!(
            pts(g.finish()),
            vec![(1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0)]
        );

        let mut g = Gathered::default();
        g.samples.reserve_exact(1000);
        g.push_run(2).extend(run(2, &[(5, 50.0), (6, 60.0)]).1);
        g.push_run(1).extend(run(1, &[(1, 1.0), (5, 5.0)]).1);
        g.push_run(u64::MAX).extend(run(0, &[(6, 600.0)]).1);
        let got = g.finish();
        assert!(got.capacity() < 1000, "excess capacity trimmed");
        assert_eq!(pts(got), vec![(1, 1.0), (5, 50.0), (6, 600.0)]);
        assert!(Gathered::default().finish().is_empty());
    }

    #[test]
    fn expected_rows_follow_the_time_covered() {
        let f = |min_t, max_t| FileRef {
            name: String::new(),
            partition: 0,
            min_t,
            max_t,
            samples: 0,
            bytes: 0,
            generation: 0,
            ids: vec![],
            offsets: None,
        };
        assert_eq!(expected_rows(&f(100, 199), 480, 0, 1000), 480);
        assert_eq!(expected_rows(&f(100, 199), 480, 150, 1000), 240 + 15 + 2);
        assert_eq!(expected_rows(&f(100, 199), 480, 0, 100), 5 + 2);
        assert_eq!(expected_rows(&f(100, 199), 480, 200, 300), 0);
        assert_eq!(expected_rows(&f(100, 199), 4, 150, 1000), 4);
        assert_eq!(expected_rows(&f(i64::MIN, i64::MAX), 7, 0, 0), 3);
        assert_eq!(expected_rows(&f(5, 5), 3, i64::MIN, i64::MAX), 3);
    }
}
