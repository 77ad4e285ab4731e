//! Reuse of range-query results over settled time.
//!
//! A range query is a series of independent instant evaluations at `start`,
//! `start + step`, …; a point at time `t` reads samples at or before `t`
//! only (no `@`, no negative `offset`). Once `t` is older than
//! [`SETTLED_MS`](crate::storage::SETTLED_MS), its samples change only
//! through late writes or retention, which the source reports by changing
//! its [`settled_generation`](SeriesSource::settled_generation). So the
//! points of a query up to that boundary are kept, keyed by the query text,
//! step, the phase of `start` within the step and the lookback; a repeated
//! or moved-forward query (a dashboard refresh) evaluates only the steps
//! after the cached ones and joins the two by label set.
//!
//! Entries are dropped least recently used first beyond the configured
//! size, and whenever the source's generation changes.

use std::collections::HashMap;

use parking_lot::Mutex;
use promql_parser::parser::{Expr, Offset};

use super::{parse, range_query, PromError, QueryLimits, QueryValue, Sample, Series, SeriesSource};

#[derive(Clone, PartialEq, Eq, Hash)]
struct Key {
    query: String,
    step: i64,
    phase: i64,
    lookback_ms: i64,
}

struct Entry {
    generation: u64,
    /// First and last cached step.
    from: i64,
    to: i64,
    /// Sorted by labels; points within `[from, to]`.
    series: Vec<Series>,
    bytes: usize,
    used: u64,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<Key, Entry>,
    bytes: usize,
    clock: u64,
}

/// Range-query results over settled time, at most `max_bytes` of them.
pub struct ResultCache {
    max_bytes: usize,
    inner: Mutex<Inner>,
}

/// Hits and misses, for the caller's metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheUse {
    /// Steps answered from the cache.
    pub cached_steps: i64,
    /// Steps evaluated.
    pub evaluated_steps: i64,
}

impl ResultCache {
    pub fn new(max_bytes: usize) -> Self {
        ResultCache {
            max_bytes,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.inner.lock().bytes
    }

    /// [`range_query`] answered from the cache where it can be.
    #[allow(clippy::too_many_arguments)]
    pub fn range_query(
        &self,
        src: &dyn SeriesSource,
        query: &str,
        start: i64,
        end: i64,
        step: i64,
        limits: &QueryLimits,
        cancel: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
        now_ms: i64,
    ) -> Result<(QueryValue, CacheUse), PromError> {
        let steps = |a: i64, b: i64| if b < a { 0 } else { (b - a) / step + 1 };
        let all = |v| {
            Ok((
                v,
                CacheUse {
                    cached_steps: 0,
                    evaluated_steps: steps(start, end),
                },
            ))
        };
        let generation = match src.settled_generation() {
            Some(g) if self.max_bytes > 0 && step > 0 && end >= start => g,
            _ => return all(range_query(src, query, start, end, step, limits, cancel)?),
        };
        let expr = parse(query)?;
        if !reads_only_the_past(&expr) {
            return all(range_query(src, query, start, end, step, limits, cancel)?);
        }
        // The last step of the query whose samples are all settled (on the
        // step grid, so later queries continue the same grid after it).
        let boundary = (now_ms - crate::storage::SETTLED_MS).min(end);
        let settled_to = if boundary < start {
            None
        } else {
            Some(start + (boundary - start) / step * step)
        };
        let key = Key {
            query: query.trim().to_string(),
            step,
            phase: start.rem_euclid(step),
            lookback_ms: limits.lookback.as_millis() as i64,
        };
        // Cached points for [start, cached_to].
        let cached: Option<(Vec<Series>, i64)> = {
            let mut inner = self.inner.lock();
            inner.clock += 1;
            let clock = inner.clock;
            match inner.entries.get_mut(&key) {
                Some(e) if e.generation == generation && e.from <= start && e.to >= start => {
                    e.used = clock;
                    let to = e.to.min(end);
                    Some((slice(&e.series, start, to), to))
                }
                Some(_) => {
                    inner.remove(&key);
                    None
                }
                None => None,
            }
        };
        let (series, usage) = match cached {
            Some((head, cached_to)) => {
                let tail = if cached_to < end {
                    matrix(range_query(
                        src,
                        query,
                        cached_to + step,
                        end,
                        step,
                        limits,
                        cancel,
                    )?)?
                } else {
                    Vec::new()
                };
                let usage = CacheUse {
                    cached_steps: steps(start, cached_to),
                    evaluated_steps: steps(cached_to + step, end),
                };
                (join(head, tail), usage)
            }
            None => {
                let v = range_query(src, query, start, end, step, limits, cancel)?;
                let QueryValue::Matrix(series) = v else {
                    return all(v);
                };
                let usage = CacheUse {
                    cached_steps: 0,
                    evaluated_steps: steps(start, end),
                };
                (series, usage)
            }
        };
        if let Some(to) = settled_to {
            self.store(key, generation, start, to, &series);
        }
        Ok((QueryValue::Matrix(series), usage))
    }

    fn store(&self, key: Key, generation: u64, from: i64, to: i64, series: &[Series]) {
        let kept = slice(series, from, to);
        let bytes = key.query.len()
            + kept
                .iter()
                .map(|s| {
                    64 + s
                        .labels
                        .iter()
                        .map(|(k, v)| k.len() + v.len() + 48)
                        .sum::<usize>()
                        + s.samples.len() * std::mem::size_of::<Sample>()
                })
                .sum::<usize>();
        if bytes > self.max_bytes / 4 {
            return; // one query may not take over the cache
        }
        let mut inner = self.inner.lock();
        inner.clock += 1;
        let used = inner.clock;
        inner.remove(&key);
        while inner.bytes + bytes > self.max_bytes {
            let Some(oldest) = inner
                .entries
                .iter()
                .min_by_key(|(_, e)| e.used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            inner.remove(&oldest);
        }
        inner.bytes += bytes;
        inner.entries.insert(
            key,
            Entry {
                generation,
                from,
                to,
                series: kept,
                bytes,
                used,
            },
        );
    }
}

impl Inner {
    fn remove(&mut self, key: &Key) {
        if let Some(e) = self.entries.remove(key) {
            self.bytes -= e.bytes;
        }
    }
}

fn matrix(v: QueryValue) -> Result<Vec<Series>, PromError> {
    match v {
        QueryValue::Matrix(m) => Ok(m),
        _ => Err(PromError::Execution(
            "a range query gave a value other than a matrix".into(),
        )),
    }
}

/// The points of `series` within `[from, to]`, series without any dropped.
fn slice(series: &[Series], from: i64, to: i64) -> Vec<Series> {
    series
        .iter()
        .filter_map(|s| {
            let a = s.samples.partition_point(|x| x.t_ms < from);
            let b = s.samples.partition_point(|x| x.t_ms <= to);
            (a < b).then(|| Series {
                labels: s.labels.clone(),
                samples: s.samples[a..b].to_vec(),
            })
        })
        .collect()
}

/// Joins earlier and later points of series sorted by labels.
fn join(head: Vec<Series>, tail: Vec<Series>) -> Vec<Series> {
    let mut out = Vec::with_capacity(head.len().max(tail.len()));
    let mut tail = tail.into_iter().peekable();
    for mut h in head {
        while let Some(t) = tail.next_if(|t| t.labels < h.labels) {
            out.push(t);
        }
        if let Some(t) = tail.next_if(|t| t.labels == h.labels) {
            h.samples.extend(t.samples);
        }
        out.push(h);
    }
    out.extend(tail);
    out
}

/// Whether every point at `t` depends only on samples at or before `t`
/// and on nothing else that moves with the query range (`@ start()`).
fn reads_only_the_past(e: &Expr) -> bool {
    let offset_ok = |o: &Option<Offset>| !matches!(o, Some(Offset::Neg(_)));
    match e {
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) => true,
        Expr::Paren(p) => reads_only_the_past(&p.expr),
        Expr::Unary(u) => reads_only_the_past(&u.expr),
        Expr::Binary(b) => reads_only_the_past(&b.lhs) && reads_only_the_past(&b.rhs),
        Expr::Aggregate(a) => {
            reads_only_the_past(&a.expr) && a.param.as_deref().is_none_or(reads_only_the_past)
        }
        Expr::Call(c) => c.args.args.iter().all(|a| reads_only_the_past(a)),
        Expr::VectorSelector(vs) => vs.at.is_none() && offset_ok(&vs.offset),
        Expr::MatrixSelector(ms) => ms.vs.at.is_none() && offset_ok(&ms.vs.offset),
        Expr::Subquery(sq) => {
            sq.at.is_none() && offset_ok(&sq.offset) && reads_only_the_past(&sq.expr)
        }
        Expr::Extension(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use parking_lot::RwLock;

    use super::*;
    use crate::model::{LabelMatcher, Labels, MetricMeta};
    use crate::query::promql::VecSource;
    use crate::storage::StorageError;

    /// A source whose data can be replaced, bumping the generation as a
    /// store does for late writes.
    struct Source {
        data: RwLock<VecSource>,
        generation: AtomicU64,
    }

    impl Source {
        fn new(series: Vec<Series>) -> Self {
            Source {
                data: RwLock::new(VecSource::new(series)),
                generation: AtomicU64::new(0),
            }
        }

        fn replace(&self, series: Vec<Series>) {
            *self.data.write() = VecSource::new(series);
            self.generation.fetch_add(1, Ordering::SeqCst);
        }
    }

    impl SeriesSource for Source {
        fn select(&self, m: &[LabelMatcher], a: i64, b: i64) -> Result<Vec<Series>, StorageError> {
            self.data.read().select(m, a, b)
        }
        fn series(&self, m: &[LabelMatcher], a: i64, b: i64) -> Result<Vec<Labels>, StorageError> {
            self.data.read().series(m, a, b)
        }
        fn label_names(
            &self,
            m: &[LabelMatcher],
            a: i64,
            b: i64,
        ) -> Result<Vec<String>, StorageError> {
            self.data.read().label_names(m, a, b)
        }
        fn label_values(
            &self,
            n: &str,
            m: &[LabelMatcher],
            a: i64,
            b: i64,
        ) -> Result<Vec<String>, StorageError> {
            self.data.read().label_values(n, m, a, b)
        }
        fn metadata(&self) -> Result<Vec<MetricMeta>, StorageError> {
            self.data.read().metadata()
        }
        fn settled_generation(&self) -> Option<u64> {
            Some(self.generation.load(Ordering::SeqCst))
        }
    }

    const NOW: i64 = 1_764_000_000_000;
    const MIN: i64 = 60_000;

    /// Counters of three codes; `late` series appear only in the last
    /// 20 minutes, `gone` ones stop an hour before now.
    fn data(bump: f64) -> Vec<Series> {
        let mut out = Vec::new();
        for (i, code) in ["200", "404", "500", "late", "gone"].iter().enumerate() {
            for inst in 0..3 {
                let labels: Labels = vec![
                    ("__name__".into(), "req_total".into()),
                    ("code".into(), code.to_string()),
                    ("instance".into(), format!("i{inst}")),
                ];
                let (from, to) = match *code {
                    "late" => (NOW - 20 * MIN, NOW),
                    "gone" => (NOW - 3 * 60 * MIN, NOW - 60 * MIN),
                    _ => (NOW - 3 * 60 * MIN, NOW),
                };
                let samples = (0..)
                    .map(|k| from + k * 15_000)
                    .take_while(|t| *t <= to)
                    .enumerate()
                    .map(|(k, t)| Sample {
                        t_ms: t,
                        v: (k * (i + inst + 1)) as f64 * bump,
                    })
                    .collect();
                out.push(Series { labels, samples });
            }
        }
        out
    }

    fn eval(src: &dyn SeriesSource, q: &str, start: i64, end: i64, step: i64) -> Vec<Series> {
        match range_query(src, q, start, end, step, &QueryLimits::default(), None).unwrap() {
            QueryValue::Matrix(m) => m,
            _ => panic!("not a matrix"),
        }
    }

    fn cached(
        c: &ResultCache,
        src: &dyn SeriesSource,
        q: &str,
        start: i64,
        end: i64,
        now: i64,
    ) -> (Vec<Series>, CacheUse) {
        let (v, u) = c
            .range_query(src, q, start, end, MIN, &QueryLimits::default(), None, now)
            .unwrap();
        match v {
            QueryValue::Matrix(m) => (m, u),
            _ => panic!("not a matrix"),
        }
    }

    fn same(a: &[Series], b: &[Series]) -> bool {
        a.len() == b.len()
            && a.iter().zip(b).all(|(x, y)| {
                x.labels == y.labels
                    && x.samples.len() == y.samples.len()
                    && x.samples
                        .iter()
                        .zip(&y.samples)
                        .all(|(p, q)| p.t_ms == q.t_ms && p.v.to_bits() == q.v.to_bits())
            })
    }

    const QUERIES: [&str; 4] = [
        "sum by (code) (rate(req_total[5m]))",
        "req_total",
        "max_over_time(sum(req_total)[10m:1m]) / 2",
        "count(req_total offset 10m) by (instance)",
    ];

    #[test]
    fn repeated_and_moved_queries_equal_fresh_evaluation() {
        let src = Source::new(data(1.0));
        let cache = ResultCache::new(64 << 20);
        for q in QUERIES {
            let (start, end) = (NOW - 120 * MIN, NOW);
            let (first, u) = cached(&cache, &src, q, start, end, NOW);
            assert!(same(&first, &eval(&src, q, start, end, MIN)), "{q}");
            assert_eq!(u.cached_steps, 0);
            let (again, u) = cached(&cache, &src, q, start, end, NOW);
            assert!(same(&again, &first), "{q}");
            // Steps up to now - 5 min are reused; the last five are not.
            assert_eq!(u.cached_steps, 116, "{q}");
            assert_eq!(u.evaluated_steps, 5, "{q}");
            // A dashboard refresh ten minutes later (the source unchanged).
            let (s2, e2) = (start + 10 * MIN, end + 10 * MIN);
            let (moved, u) = cached(&cache, &src, q, s2, e2, NOW + 10 * MIN);
            assert!(same(&moved, &eval(&src, q, s2, e2, MIN)), "{q}");
            assert_eq!(u.cached_steps, 106, "{q}");
            assert_eq!(u.evaluated_steps, 15, "{q}");
            // A query ending in the cached range.
            let (s3, e3) = (start + 30 * MIN, NOW - 60 * MIN);
            let (inner, u) = cached(&cache, &src, q, s3, e3, NOW + 10 * MIN);
            assert!(same(&inner, &eval(&src, q, s3, e3, MIN)), "{q}");
            assert_eq!(u.evaluated_steps, 0, "{q}");
        }
        assert!(cache.bytes() > 0);
    }

    #[test]
    fn an_end_between_steps_keeps_later_queries_on_the_grid() {
        let src = Source::new(data(1.0));
        let cache = ResultCache::new(64 << 20);
        let q = QUERIES[0];
        let start = NOW - 120 * MIN;
        // Ends 30 s after a step, an hour before now: all of it settled.
        let short_end = NOW - 60 * MIN + 30_000;
        let (short, _) = cached(&cache, &src, q, start, short_end, NOW);
        assert!(same(&short, &eval(&src, q, start, short_end, MIN)));
        let (long, u) = cached(&cache, &src, q, start, NOW, NOW);
        assert!(u.cached_steps > 0);
        assert!(same(&long, &eval(&src, q, start, NOW, MIN)));
    }

    #[test]
    fn a_changed_generation_is_never_answered_from_the_cache() {
        let src = Source::new(data(1.0));
        let cache = ResultCache::new(64 << 20);
        let q = QUERIES[0];
        let (start, end) = (NOW - 120 * MIN, NOW);
        cached(&cache, &src, q, start, end, NOW);
        src.replace(data(3.0));
        let (after, u) = cached(&cache, &src, q, start, end, NOW);
        assert_eq!(u.cached_steps, 0);
        assert!(same(&after, &eval(&src, q, start, end, MIN)));
        assert!(!same(
            &after,
            &eval(&Source::new(data(1.0)), q, start, end, MIN)
        ));
    }

    #[test]
    fn queries_that_read_ahead_or_move_with_the_range_are_not_cached() {
        let src = Source::new(data(1.0));
        let cache = ResultCache::new(64 << 20);
        let (start, end) = (NOW - 120 * MIN, NOW);
        for q in [
            "req_total offset -10m",
            "rate(req_total[5m] @ end())",
            "req_total @ start()",
            "max_over_time(req_total[10m:1m] @ 1764000000)",
            "sum(rate(req_total[5m] offset -1m))",
        ] {
            for _ in 0..2 {
                let (got, u) = cached(&cache, &src, q, start, end, NOW);
                assert_eq!(u.cached_steps, 0, "{q}");
                assert!(same(&got, &eval(&src, q, start, end, MIN)), "{q}");
            }
        }
        assert_eq!(cache.bytes(), 0);
    }

    #[test]
    fn another_step_phase_or_lookback_is_another_entry_and_size_is_bounded() {
        let src = Source::new(data(1.0));
        let q = "req_total";
        let (start, end) = (NOW - 120 * MIN, NOW);
        let cache = ResultCache::new(64 << 20);
        cached(&cache, &src, q, start, end, NOW);
        let (got, u) = cached(&cache, &src, q, start + 7_000, end, NOW);
        assert_eq!(u.cached_steps, 0, "another phase");
        assert!(same(&got, &eval(&src, q, start + 7_000, end, MIN)));
        // A cache too small for one result stores nothing.
        let tiny = ResultCache::new(4096);
        cached(&tiny, &src, q, start, end, NOW);
        let (_, u) = cached(&tiny, &src, q, start, end, NOW);
        assert_eq!(u.cached_steps, 0);
        assert_eq!(tiny.bytes(), 0);
        // Older entries are evicted to make room.
        let small = ResultCache::new(400_000);
        for i in 0..20 {
            let q = format!("req_total * {i}");
            cached(&small, &src, &q, start, end, NOW);
            assert!(small.bytes() <= 400_000);
        }
        let (_, u) = cached(&small, &src, "req_total * 19", start, end, NOW);
        assert!(u.cached_steps > 0, "the newest entry stays");
        let (_, u) = cached(&small, &src, "req_total * 0", start, end, NOW);
        assert_eq!(u.cached_steps, 0, "the oldest entry was evicted");
    }
}
