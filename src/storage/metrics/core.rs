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
    /// The samples in `[start, end]` of the local series `wanted`
    /// (ascending): one time-ordered run per series that has any, in
    /// `wanted` order.
    fn read(
        &self,
        file: &FileRef,
        wanted: &[u32],
        start: i64,
        end: i64,
    ) -> Result<Vec<(u32, Vec<Sample>)>, StorageError>;
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
        let (ids, labels, files, mut runs) = {
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
        if let (Some(reader), false) = (reader, files.is_empty()) {
            let held: usize = runs.iter().flatten().map(|r| r.1.len()).sum();
            for (f, got) in read_files(reader, &files, &ids, start, end, max_samples - held)? {
                for (local, samples) in got {
                    if let Some(g) = f.ids.get(local as usize) {
                        if let Ok(i) = ids.binary_search(g) {
                            runs[i].push((f.generation, samples));
                        }
                    }
                }
            }
        }
        let mut out: Vec<Series> = labels
            .into_iter()
            .zip(runs)
            .filter_map(|(l, r)| {
                let samples = merge_runs(r);
                (!samples.is_empty()).then_some(Series { labels: l, samples })
            })
            .collect();
        out.sort_by(|a, b| a.labels.cmp(&b.labels));
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

/// Reads the wanted series (global ids, ascending) from `files`, spread
/// over up to as many threads as there are cores. Fails once more than
/// `budget` samples have been read.
#[allow(clippy::type_complexity)]
fn read_files(
    reader: &dyn FileReader,
    files: &[Arc<FileRef>],
    ids: &[u32],
    start: i64,
    end: i64,
    budget: usize,
) -> Result<Vec<(Arc<FileRef>, Vec<(u32, Vec<Sample>)>)>, StorageError> {
    use std::sync::atomic::{AtomicUsize, Ordering as AO};
    let read = AtomicUsize::new(0);
    let one = |f: &Arc<FileRef>| -> Result<Vec<(u32, Vec<Sample>)>, StorageError> {
        let wanted: Vec<u32> = f
            .ids
            .iter()
            .enumerate()
            .filter(|(_, g)| ids.binary_search(g).is_ok())
            .map(|(l, _)| l as u32)
            .collect();
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let got = reader.read(f, &wanted, start, end)?;
        let n: usize = got.iter().map(|r| r.1.len()).sum();
        if read.fetch_add(n, AO::Relaxed) + n > budget {
            return Err(too_many_samples(budget));
        }
        Ok(got)
    };
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 8)
        .min(files.len());
    if threads <= 1 {
        return files.iter().map(|f| Ok((f.clone(), one(f)?))).collect();
    }
    let next = AtomicUsize::new(0);
    let results: Vec<Result<Vec<(usize, Vec<(u32, Vec<Sample>)>)>, StorageError>> =
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|_| {
                    scope.spawn(|| {
                        let mut mine = Vec::new();
                        loop {
                            let i = next.fetch_add(1, AO::Relaxed);
                            let Some(f) = files.get(i) else { break };
                            mine.push((i, one(f)?));
                        }
                        Ok(mine)
                    })
                })
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
    let mut all = Vec::with_capacity(files.len());
    for r in results {
        all.extend(r?);
    }
    all.sort_by_key(|(i, _)| *i);
    Ok(all
        .into_iter()
        .map(|(i, got)| (files[i].clone(), got))
        .collect())
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
}
