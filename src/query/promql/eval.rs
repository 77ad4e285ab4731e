//! The evaluator: every expression is evaluated over a grid of steps at
//! once. An instant vector is a list of series with one optional value per
//! step; a range vector keeps the fetched samples and, per step, the end of
//! its window, so functions slide over samples without re-selecting.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use promql_parser::parser::token::*;
use promql_parser::parser::{
    AggregateExpr, AtModifier, BinaryExpr, Expr, LabelModifier, Offset, SubqueryExpr,
    VectorMatchCardinality, VectorSelector,
};

use super::functions;
use super::{
    is_stale, selector_matchers, PromError, QueryLimits, QueryValue, RegexCache, Sample, Series,
    SeriesSource, METRIC_NAME,
};
use crate::model::series::Labels;

/// Default subquery resolution when the step is omitted (`x[5m:]`).
const DEFAULT_SUBQUERY_STEP_MS: i64 = 60_000;

#[derive(Debug, Clone, Copy)]
pub(crate) struct Grid {
    pub start: i64,
    pub step: i64,
    pub n: usize,
}

impl Grid {
    pub fn ts(&self, i: usize) -> i64 {
        self.start + i as i64 * self.step
    }
}

/// One series of an instant vector over the grid.
#[derive(Debug, Clone)]
pub(crate) struct Sv {
    pub labels: Labels,
    pub vals: Vec<Option<f64>>,
}

/// A range vector over the grid: samples (stale markers removed) and, per
/// step, the window `(end - range, end]`.
pub(crate) struct Windows {
    pub series: Vec<Series>,
    pub ends: Vec<i64>,
    pub range: i64,
}

impl Windows {
    /// Calls `f(step, first index, window)` for every step; slides two
    /// cursors when the window ends ascend (the usual case), else
    /// binary-searches.
    pub fn each_window(&self, s: &Series, mut f: impl FnMut(usize, usize, &[Sample])) {
        let ascending = self.ends.windows(2).all(|w| w[0] <= w[1]);
        if !ascending {
            for i in 0..self.ends.len() {
                let (lo, hi) = self.bounds(s, i);
                f(i, lo, &s.samples[lo..hi]);
            }
            return;
        }
        let (mut lo, mut hi) = (0usize, 0usize);
        let n = s.samples.len();
        for (i, &end) in self.ends.iter().enumerate() {
            while lo < n && s.samples[lo].t_ms <= end - self.range {
                lo += 1;
            }
            if hi < lo {
                hi = lo;
            }
            while hi < n && s.samples[hi].t_ms <= end {
                hi += 1;
            }
            f(i, lo, &s.samples[lo..hi]);
        }
    }

    fn bounds(&self, s: &Series, i: usize) -> (usize, usize) {
        let end = self.ends[i];
        let lo = s.samples.partition_point(|x| x.t_ms <= end - self.range);
        let hi = s.samples.partition_point(|x| x.t_ms <= end);
        (lo, hi.max(lo))
    }

    pub fn window<'s>(&self, s: &'s Series, i: usize) -> &'s [Sample] {
        let (lo, hi) = self.bounds(s, i);
        &s.samples[lo..hi]
    }
}

pub(crate) enum Val {
    Scalar(Vec<f64>),
    Str(String),
    Vector(Vec<Sv>),
    Matrix(Windows),
}

impl Val {
    pub fn kind(&self) -> &'static str {
        match self {
            Val::Scalar(_) => "scalar",
            Val::Str(_) => "string",
            Val::Vector(_) => "instant vector",
            Val::Matrix(_) => "range vector",
        }
    }
}

pub(crate) struct Ctx<'a> {
    src: &'a dyn SeriesSource,
    pub q_start: i64,
    pub q_end: i64,
    lookback: i64,
    deadline: Instant,
    max_samples: usize,
    samples: Cell<usize>,
    cancel: Option<Arc<AtomicBool>>,
    pub regex: RegexCache,
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn run(
    src: &dyn SeriesSource,
    expr: &Expr,
    start: i64,
    end: i64,
    step: i64,
    instant: bool,
    limits: &QueryLimits,
    cancel: Option<Arc<AtomicBool>>,
) -> Result<QueryValue, PromError> {
    let n = ((end - start) / step) as usize + 1;
    let ctx = Ctx {
        src,
        q_start: start,
        q_end: end,
        lookback: limits.lookback.as_millis() as i64,
        deadline: Instant::now() + limits.timeout,
        max_samples: limits.max_samples,
        samples: Cell::new(0),
        cancel,
        regex: RegexCache::default(),
    };
    ctx.add_samples(n)?;
    let g = Grid { start, step, n };
    let v = ctx.eval(expr, g)?;
    Ok(match v {
        Val::Scalar(vals) => {
            if instant {
                QueryValue::Scalar(start, vals[0])
            } else {
                QueryValue::Matrix(vec![Series {
                    labels: Vec::new(),
                    samples: vals
                        .iter()
                        .enumerate()
                        .map(|(i, &v)| Sample { t_ms: g.ts(i), v })
                        .collect(),
                }])
            }
        }
        Val::Str(s) => QueryValue::String(start, s),
        Val::Vector(svs) => {
            if instant {
                QueryValue::Vector(
                    svs.into_iter()
                        .filter_map(|s| s.vals[0].map(|v| (s.labels, start, v)))
                        .collect(),
                )
            } else {
                let mut out: Vec<Series> = svs
                    .into_iter()
                    .filter_map(|s| {
                        let samples: Vec<Sample> = s
                            .vals
                            .iter()
                            .enumerate()
                            .filter_map(|(i, v)| v.map(|v| Sample { t_ms: g.ts(i), v }))
                            .collect();
                        (!samples.is_empty()).then_some(Series {
                            labels: s.labels,
                            samples,
                        })
                    })
                    .collect();
                out.sort_by(|a, b| a.labels.cmp(&b.labels));
                QueryValue::Matrix(out)
            }
        }
        Val::Matrix(w) => {
            let mut out: Vec<Series> = w
                .series
                .iter()
                .filter_map(|s| {
                    let win = w.window(s, 0);
                    (!win.is_empty()).then(|| Series {
                        labels: s.labels.clone(),
                        samples: win.to_vec(),
                    })
                })
                .collect();
            out.sort_by(|a, b| a.labels.cmp(&b.labels));
            QueryValue::Matrix(out)
        }
    })
}

pub(crate) fn offset_ms(o: &Option<Offset>) -> i64 {
    match o {
        None => 0,
        Some(Offset::Pos(d)) => d.as_millis() as i64,
        Some(Offset::Neg(d)) => -(d.as_millis() as i64),
    }
}

fn system_time_ms(t: &SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_millis() as i64,
        Err(e) => -(e.duration().as_millis() as i64),
    }
}

/// The labels without `__name__`.
pub(crate) fn drop_name(l: &Labels) -> Labels {
    l.iter()
        .filter(|(k, _)| k != METRIC_NAME)
        .cloned()
        .collect()
}

pub(crate) fn set_label(l: &mut Labels, name: &str, value: &str) {
    match l.binary_search_by(|(k, _)| k.as_str().cmp(name)) {
        Ok(i) => {
            if value.is_empty() {
                l.remove(i);
            } else {
                l[i].1 = value.to_string();
            }
        }
        Err(i) => {
            if !value.is_empty() {
                l.insert(i, (name.to_string(), value.to_string()));
            }
        }
    }
}

pub(crate) fn labels_string(l: &Labels) -> String {
    let inner: Vec<String> = l.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{{}}}", inner.join(", "))
}

/// Merges series with equal label sets; two values at one step are an error.
pub(crate) fn dedupe(svs: Vec<Sv>, what: &str) -> Result<Vec<Sv>, PromError> {
    let mut index: HashMap<Labels, usize> = HashMap::with_capacity(svs.len());
    let mut out: Vec<Sv> = Vec::with_capacity(svs.len());
    for sv in svs {
        match index.get(&sv.labels) {
            None => {
                index.insert(sv.labels.clone(), out.len());
                out.push(sv);
            }
            Some(&j) => {
                let tgt = &mut out[j];
                for (i, v) in sv.vals.into_iter().enumerate() {
                    if let Some(v) = v {
                        if tgt.vals[i].is_some() {
                            return Err(PromError::Execution(format!(
                                "{what}: {}",
                                labels_string(&tgt.labels)
                            )));
                        }
                        tgt.vals[i] = Some(v);
                    }
                }
            }
        }
    }
    out.retain(|s| s.vals.iter().any(Option::is_some));
    Ok(out)
}

pub(crate) const DUP_LABELSET: &str = "vector cannot contain metrics with the same labelset";

impl Ctx<'_> {
    /// Counts samples held by the query and checks the deadline.
    pub fn add_samples(&self, n: usize) -> Result<(), PromError> {
        let total = self.samples.get().saturating_add(n);
        self.samples.set(total);
        if total > self.max_samples {
            return Err(PromError::TooManySamples(
                "query execution",
                self.max_samples,
            ));
        }
        self.check()
    }

    pub fn check(&self) -> Result<(), PromError> {
        if Instant::now() > self.deadline {
            return Err(PromError::Timeout("query execution"));
        }
        if let Some(c) = &self.cancel {
            if c.load(Ordering::Relaxed) {
                return Err(PromError::Canceled);
            }
        }
        Ok(())
    }

    pub fn at_time(&self, at: &Option<AtModifier>) -> Option<i64> {
        match at {
            None => None,
            Some(AtModifier::Start) => Some(self.q_start),
            Some(AtModifier::End) => Some(self.q_end),
            Some(AtModifier::At(t)) => Some(system_time_ms(t)),
        }
    }

    pub fn eval(&self, e: &Expr, g: Grid) -> Result<Val, PromError> {
        self.check()?;
        match e {
            Expr::NumberLiteral(n) => Ok(Val::Scalar(vec![n.val; g.n])),
            Expr::StringLiteral(s) => Ok(Val::Str(s.val.clone())),
            Expr::Paren(p) => self.eval(&p.expr, g),
            Expr::Unary(u) => match self.eval(&u.expr, g)? {
                Val::Scalar(v) => Ok(Val::Scalar(v.into_iter().map(|x| -x).collect())),
                Val::Vector(svs) => {
                    let out = svs
                        .into_iter()
                        .map(|s| Sv {
                            labels: drop_name(&s.labels),
                            vals: s.vals.into_iter().map(|v| v.map(|x| -x)).collect(),
                        })
                        .collect();
                    Ok(Val::Vector(dedupe(out, DUP_LABELSET)?))
                }
                other => Err(PromError::BadData(format!(
                    "unary expression only allowed on expressions of type scalar or instant vector, got {}",
                    other.kind()
                ))),
            },
            Expr::VectorSelector(vs) => Ok(Val::Vector(self.select_instant(vs, g, false)?)),
            Expr::MatrixSelector(ms) => {
                let off = offset_ms(&ms.vs.offset);
                let at = self.at_time(&ms.vs.at);
                let range = ms.range.as_millis() as i64;
                let ends: Vec<i64> = (0..g.n).map(|i| at.unwrap_or(g.ts(i)) - off).collect();
                let (lo, hi) = min_max(&ends);
                let series = self.fetch_with(&ms.vs, lo - range + 1, hi, true)?;
                Ok(Val::Matrix(Windows {
                    series,
                    ends,
                    range,
                }))
            }
            Expr::Subquery(sq) => Ok(Val::Matrix(self.subquery(sq, g)?)),
            Expr::Call(c) => functions::call(self, c, g),
            Expr::Aggregate(a) => self.aggregate(a, g),
            Expr::Binary(b) => self.binary(b, g),
            Expr::Extension(_) => Err(PromError::BadData("unsupported expression".into())),
        }
    }

    /// Series matching a selector (the union of its `or` groups) with
    /// samples in `[lo, hi]`.
    pub fn fetch(&self, vs: &VectorSelector, lo: i64, hi: i64) -> Result<Vec<Series>, PromError> {
        self.fetch_with(vs, lo, hi, false)
    }

    /// [`Ctx::fetch`], optionally without stale markers (and without series
    /// left empty by their removal).
    fn fetch_with(
        &self,
        vs: &VectorSelector,
        lo: i64,
        hi: i64,
        drop_stale: bool,
    ) -> Result<Vec<Series>, PromError> {
        let groups = selector_matchers(vs);
        let mut out: Vec<Series> = Vec::new();
        for (gi, g) in groups.iter().enumerate() {
            let got = self.src.select(g, lo, hi)?;
            let n: usize = got.iter().map(|s| s.samples.len()).sum();
            self.add_samples(n)?;
            if gi == 0 {
                out = got;
            } else {
                for s in got {
                    if !out.iter().any(|o| o.labels == s.labels) {
                        out.push(s);
                    }
                }
            }
        }
        // Large selections are checked on every core.
        let total: usize = out.iter().map(|s| s.samples.len()).sum();
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, 8);
        if threads > 1 && total >= PARALLEL_CHECK_SAMPLES {
            let chunk = out.len().div_ceil(threads);
            std::thread::scope(|scope| {
                for part in out.chunks_mut(chunk) {
                    scope.spawn(move || {
                        for s in part {
                            normalize(s, lo, hi, drop_stale);
                        }
                    });
                }
            });
        } else {
            for s in &mut out {
                normalize(s, lo, hi, drop_stale);
            }
        }
        if drop_stale {
            out.retain(|s| !s.samples.is_empty());
        }
        Ok(out)
    }

    /// An instant selector: per step, the latest sample within the lookback
    /// window `(t - lookback, t]` unless it is a stale marker. With
    /// `timestamps`, the value is the sample's timestamp in seconds.
    pub fn select_instant(
        &self,
        vs: &VectorSelector,
        g: Grid,
        timestamps: bool,
    ) -> Result<Vec<Sv>, PromError> {
        let off = offset_ms(&vs.offset);
        let at = self.at_time(&vs.at);
        let times: Vec<i64> = (0..g.n).map(|i| at.unwrap_or(g.ts(i)) - off).collect();
        let (lo, hi) = min_max(&times);
        let series = self.fetch(vs, lo - self.lookback + 1, hi)?;
        self.add_samples(series.len() * g.n)?;
        let mut out = Vec::with_capacity(series.len());
        for s in series {
            let mut vals = Vec::with_capacity(g.n);
            let mut any = false;
            for &t in &times {
                let idx = s.samples.partition_point(|x| x.t_ms <= t);
                let v = if idx == 0 {
                    None
                } else {
                    let x = s.samples[idx - 1];
                    (x.t_ms > t - self.lookback && !is_stale(x.v)).then(|| {
                        if timestamps {
                            x.t_ms as f64 / 1000.0
                        } else {
                            x.v
                        }
                    })
                };
                any |= v.is_some();
                vals.push(v);
            }
            if any {
                out.push(Sv {
                    labels: s.labels,
                    vals,
                });
            }
        }
        Ok(out)
    }

    fn subquery(&self, sq: &SubqueryExpr, g: Grid) -> Result<Windows, PromError> {
        let off = offset_ms(&sq.offset);
        let at = self.at_time(&sq.at);
        let range = sq.range.as_millis() as i64;
        let step = sq
            .step
            .map(|d| d.as_millis() as i64)
            .filter(|&s| s > 0)
            .unwrap_or(DEFAULT_SUBQUERY_STEP_MS);
        let ends: Vec<i64> = (0..g.n).map(|i| at.unwrap_or(g.ts(i)) - off).collect();
        let (lo_end, hi) = min_max(&ends);
        let lo = lo_end - range;
        // The first multiple of the step at or after `lo`.
        let start = lo.div_euclid(step) * step + if lo.rem_euclid(step) == 0 { 0 } else { step };
        let n = if hi >= start {
            ((hi - start) / step) as usize + 1
        } else {
            0
        };
        let mut series = Vec::new();
        if n > 0 {
            self.add_samples(n)?;
            let inner = Grid { start, step, n };
            match self.eval(&sq.expr, inner)? {
                Val::Vector(svs) => {
                    for s in svs {
                        let samples: Vec<Sample> = s
                            .vals
                            .iter()
                            .enumerate()
                            .filter_map(|(i, v)| {
                                v.map(|v| Sample {
                                    t_ms: inner.ts(i),
                                    v,
                                })
                            })
                            .collect();
                        self.add_samples(samples.len())?;
                        if !samples.is_empty() {
                            series.push(Series {
                                labels: s.labels,
                                samples,
                            });
                        }
                    }
                }
                Val::Scalar(vals) => {
                    series.push(Series {
                        labels: Vec::new(),
                        samples: vals
                            .iter()
                            .enumerate()
                            .map(|(i, &v)| Sample {
                                t_ms: inner.ts(i),
                                v,
                            })
                            .collect(),
                    });
                }
                other => {
                    return Err(PromError::BadData(format!(
                        "subquery is only allowed on instant vector, got {}",
                        other.kind()
                    )))
                }
            }
        }
        Ok(Windows {
            series,
            ends,
            range,
        })
    }

    fn aggregate(&self, a: &AggregateExpr, g: Grid) -> Result<Val, PromError> {
        let op = a.op.id();
        let param = match &a.param {
            Some(p) => Some(self.eval(p, g)?),
            None => None,
        };
        let svs = match self.eval(&a.expr, g)? {
            Val::Vector(v) => v,
            other => {
                return Err(PromError::BadData(format!(
                    "expected instant vector in aggregation, got {}",
                    other.kind()
                )))
            }
        };
        let grouping = |l: &Labels| -> Labels {
            match &a.modifier {
                None => Vec::new(),
                Some(m) => project(l, m),
            }
        };
        let scalar_param = |name: &str| -> Result<Vec<f64>, PromError> {
            match &param {
                Some(Val::Scalar(v)) => Ok(v.clone()),
                _ => Err(PromError::BadData(format!(
                    "expected scalar parameter in {name}"
                ))),
            }
        };

        if op == T_COUNT_VALUES {
            let lname = match &param {
                Some(Val::Str(s)) => s.clone(),
                _ => {
                    return Err(PromError::BadData(
                        "expected string parameter in count_values".into(),
                    ))
                }
            };
            if lname.is_empty() {
                return Err(PromError::BadData(format!("invalid label name {lname:?}")));
            }
            let mut index: HashMap<Labels, usize> = HashMap::new();
            let mut out: Vec<Sv> = Vec::new();
            let keys: Vec<Labels> = svs.iter().map(|s| grouping(&s.labels)).collect();
            for i in 0..g.n {
                for (s, key) in svs.iter().zip(&keys) {
                    if let Some(v) = s.vals[i] {
                        let mut l = key.clone();
                        set_label(&mut l, &lname, &super::format_value(v));
                        let j = *index.entry(l.clone()).or_insert_with(|| {
                            out.push(Sv {
                                labels: l,
                                vals: vec![None; g.n],
                            });
                            out.len() - 1
                        });
                        *out[j].vals[i].get_or_insert(0.0) += 1.0;
                    }
                }
            }
            self.add_samples(out.len() * g.n)?;
            return Ok(Val::Vector(out));
        }

        // Groups in order of first appearance.
        let mut index: HashMap<Labels, usize> = HashMap::new();
        let mut groups: Vec<(Labels, Vec<usize>)> = Vec::new();
        for (si, s) in svs.iter().enumerate() {
            let key = grouping(&s.labels);
            match index.get(&key) {
                Some(&j) => groups[j].1.push(si),
                None => {
                    index.insert(key.clone(), groups.len());
                    groups.push((key, vec![si]));
                }
            }
        }
        self.add_samples(groups.len() * g.n)?;

        if matches!(op, T_TOPK | T_BOTTOMK | T_LIMITK | T_LIMIT_RATIO) {
            let p = scalar_param("topk")?;
            let mut keep: Vec<Vec<Option<f64>>> = vec![vec![None; g.n]; svs.len()];
            // For instant queries, the output order is the selection order.
            let mut order: Vec<usize> = Vec::new();
            for i in 0..g.n {
                let k_or_ratio = p[i];
                for (_, members) in &groups {
                    let mut present: Vec<(usize, f64)> = members
                        .iter()
                        .filter_map(|&si| svs[si].vals[i].map(|v| (si, v)))
                        .collect();
                    let chosen: Vec<(usize, f64)> = match op {
                        T_LIMIT_RATIO => {
                            if k_or_ratio.is_nan() || !(-1.0..=1.0).contains(&k_or_ratio) {
                                return Err(PromError::Execution(format!(
                                    "Ratio value {k_or_ratio} is outside of [-1, 1]"
                                )));
                            }
                            present
                                .into_iter()
                                .filter(|(si, _)| {
                                    let off = ratio_offset(&svs[*si].labels);
                                    (k_or_ratio >= 0.0 && off < k_or_ratio)
                                        || (k_or_ratio < 0.0 && off >= 1.0 + k_or_ratio)
                                })
                                .collect()
                        }
                        _ => {
                            if k_or_ratio.is_nan() {
                                return Err(PromError::Execution("Parameter value is NaN".into()));
                            }
                            if k_or_ratio.abs() >= 9.2e18 {
                                return Err(PromError::Execution(format!(
                                    "Scalar value {k_or_ratio} overflows int64"
                                )));
                            }
                            let k = k_or_ratio as i64;
                            if k < 1 {
                                continue;
                            }
                            let k = (k as usize).min(present.len());
                            match op {
                                T_TOPK => present.sort_by(|a, b| cmp_desc_nan_last(a.1, b.1)),
                                T_BOTTOMK => present.sort_by(|a, b| cmp_asc_nan_last(a.1, b.1)),
                                _ => {}
                            }
                            present.truncate(k);
                            present
                        }
                    };
                    for (si, v) in chosen {
                        if keep[si][i].is_none() && i == 0 {
                            order.push(si);
                        }
                        keep[si][i] = Some(v);
                    }
                }
            }
            let mut out = Vec::new();
            if g.n == 1 {
                for si in order {
                    out.push(Sv {
                        labels: svs[si].labels.clone(),
                        vals: keep[si].clone(),
                    });
                }
            } else {
                for (si, vals) in keep.into_iter().enumerate() {
                    if vals.iter().any(Option::is_some) {
                        out.push(Sv {
                            labels: svs[si].labels.clone(),
                            vals,
                        });
                    }
                }
            }
            return Ok(Val::Vector(out));
        }

        let qparam = if op == T_QUANTILE {
            Some(scalar_param("quantile")?)
        } else {
            None
        };
        let mut out = Vec::with_capacity(groups.len());
        if matches!(op, T_SUM | T_COUNT | T_GROUP | T_MIN | T_MAX) {
            self.check()?;
            let threads = if svs.len() * g.n >= PARALLEL_AGGREGATE {
                std::thread::available_parallelism().map_or(1, |t| t.get())
            } else {
                1
            };
            return Ok(Val::Vector(accumulate(&svs, groups, op, g.n, threads)));
        }
        let mut buf: Vec<f64> = Vec::new();
        for (key, members) in groups {
            let mut vals = vec![None; g.n];
            for (i, slot) in vals.iter_mut().enumerate() {
                buf.clear();
                buf.extend(members.iter().filter_map(|&si| svs[si].vals[i]));
                if buf.is_empty() {
                    continue;
                }
                *slot =
                    Some(match op {
                        T_SUM => kahan_sum(&buf),
                        T_AVG => mean(&buf),
                        T_COUNT => buf.len() as f64,
                        T_GROUP => 1.0,
                        T_MIN => buf.iter().copied().fold(f64::NAN, |m, v| {
                            if m.is_nan() || v < m {
                                v
                            } else {
                                m
                            }
                        }),
                        T_MAX => buf.iter().copied().fold(f64::NAN, |m, v| {
                            if m.is_nan() || v > m {
                                v
                            } else {
                                m
                            }
                        }),
                        T_STDDEV => variance(&buf).sqrt(),
                        T_STDVAR => variance(&buf),
                        T_QUANTILE => {
                            let q = qparam.as_ref().map(|p| p[i]).unwrap_or(f64::NAN);
                            quantile(q, &mut buf)
                        }
                        _ => {
                            return Err(PromError::BadData(format!(
                                "unsupported aggregation {}",
                                a.op
                            )))
                        }
                    });
            }
            out.push(Sv { labels: key, vals });
        }
        Ok(Val::Vector(out))
    }

    fn binary(&self, b: &BinaryExpr, g: Grid) -> Result<Val, PromError> {
        let op = b.op.id();
        let return_bool = b.modifier.as_ref().map(|m| m.return_bool).unwrap_or(false);
        let lhs = self.eval(&b.lhs, g)?;
        let rhs = self.eval(&b.rhs, g)?;
        let is_cmp = b.op.is_comparison_operator();
        let drops_name = !is_cmp || return_bool;
        match (lhs, rhs) {
            (Val::Scalar(l), Val::Scalar(r)) => {
                let vals = l
                    .iter()
                    .zip(&r)
                    .map(|(&a, &c)| {
                        let (v, keep) = elem_op(op, a, c);
                        if is_cmp {
                            if keep {
                                1.0
                            } else {
                                0.0
                            }
                        } else {
                            v
                        }
                    })
                    .collect();
                Ok(Val::Scalar(vals))
            }
            (Val::Vector(v), Val::Scalar(s)) => {
                self.vector_scalar(op, v, &s, false, is_cmp, return_bool, drops_name)
            }
            (Val::Scalar(s), Val::Vector(v)) => {
                self.vector_scalar(op, v, &s, true, is_cmp, return_bool, drops_name)
            }
            (Val::Vector(l), Val::Vector(r)) => {
                if b.op.is_set_operator() {
                    self.set_op(op, b, l, r, g)
                } else {
                    self.vector_vector(op, b, l, r, g, is_cmp, return_bool, drops_name)
                }
            }
            (l, r) => Err(PromError::BadData(format!(
                "binary expression must contain only scalar and instant vector types, got {} and {}",
                l.kind(),
                r.kind()
            ))),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn vector_scalar(
        &self,
        op: u16,
        v: Vec<Sv>,
        s: &[f64],
        swap: bool,
        is_cmp: bool,
        return_bool: bool,
        drops_name: bool,
    ) -> Result<Val, PromError> {
        let mut out = Vec::with_capacity(v.len());
        for sv in v {
            let vals: Vec<Option<f64>> = sv
                .vals
                .iter()
                .zip(s)
                .map(|(&x, &sc)| {
                    let x = x?;
                    let (l, r) = if swap { (sc, x) } else { (x, sc) };
                    let (mut val, keep) = elem_op(op, l, r);
                    if is_cmp && swap {
                        val = x;
                    }
                    if return_bool {
                        Some(if keep { 1.0 } else { 0.0 })
                    } else if keep {
                        Some(val)
                    } else {
                        None
                    }
                })
                .collect();
            let labels = if drops_name {
                drop_name(&sv.labels)
            } else {
                sv.labels
            };
            out.push(Sv { labels, vals });
        }
        if drops_name {
            out = dedupe(out, DUP_LABELSET)?;
        }
        Ok(Val::Vector(out))
    }

    fn signature(&self, b: &BinaryExpr, l: &Labels) -> Labels {
        match b.modifier.as_ref().and_then(|m| m.matching.as_ref()) {
            Some(m) => project(l, m),
            None => drop_name(l),
        }
    }

    fn set_op(
        &self,
        op: u16,
        b: &BinaryExpr,
        l: Vec<Sv>,
        r: Vec<Sv>,
        g: Grid,
    ) -> Result<Val, PromError> {
        let lsig: Vec<Labels> = l.iter().map(|s| self.signature(b, &s.labels)).collect();
        let rsig: Vec<Labels> = r.iter().map(|s| self.signature(b, &s.labels)).collect();
        match op {
            T_LAND | T_LUNLESS => {
                let mut by_sig: HashMap<&Labels, Vec<usize>> = HashMap::new();
                for (i, s) in rsig.iter().enumerate() {
                    by_sig.entry(s).or_default().push(i);
                }
                let mut out = Vec::new();
                for (sv, sig) in l.into_iter().zip(&lsig) {
                    let cands = by_sig.get(sig).map(Vec::as_slice).unwrap_or(&[]);
                    let vals: Vec<Option<f64>> = (0..g.n)
                        .map(|i| {
                            let v = sv.vals[i]?;
                            let matched = cands.iter().any(|&c| r[c].vals[i].is_some());
                            (matched == (op == T_LAND)).then_some(v)
                        })
                        .collect();
                    if vals.iter().any(Option::is_some) {
                        out.push(Sv {
                            labels: sv.labels,
                            vals,
                        });
                    }
                }
                Ok(Val::Vector(out))
            }
            _ => {
                // or
                let mut by_sig: HashMap<&Labels, Vec<usize>> = HashMap::new();
                for (i, s) in lsig.iter().enumerate() {
                    by_sig.entry(s).or_default().push(i);
                }
                let mut extra = Vec::new();
                for (sv, sig) in r.into_iter().zip(&rsig) {
                    let cands = by_sig.get(sig).map(Vec::as_slice).unwrap_or(&[]);
                    let vals: Vec<Option<f64>> = (0..g.n)
                        .map(|i| {
                            let v = sv.vals[i]?;
                            (!cands.iter().any(|&c| l[c].vals[i].is_some())).then_some(v)
                        })
                        .collect();
                    if vals.iter().any(Option::is_some) {
                        extra.push(Sv {
                            labels: sv.labels,
                            vals,
                        });
                    }
                }
                let mut out = l;
                out.extend(extra);
                Ok(Val::Vector(dedupe(out, DUP_LABELSET)?))
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn vector_vector(
        &self,
        op: u16,
        b: &BinaryExpr,
        l: Vec<Sv>,
        r: Vec<Sv>,
        g: Grid,
        is_cmp: bool,
        return_bool: bool,
        drops_name: bool,
    ) -> Result<Val, PromError> {
        let card = b
            .modifier
            .as_ref()
            .map(|m| m.card.clone())
            .unwrap_or(VectorMatchCardinality::OneToOne);
        let matching = b.modifier.as_ref().and_then(|m| m.matching.clone());
        let (many, one, swapped) = match card {
            VectorMatchCardinality::OneToMany(_) => (r, l, true),
            _ => (l, r, false),
        };
        let include: Vec<String> = card
            .labels()
            .map(|ls| ls.labels.clone())
            .unwrap_or_default();
        let one_to_one = matches!(card, VectorMatchCardinality::OneToOne);
        let msig: Vec<Labels> = many.iter().map(|s| self.signature(b, &s.labels)).collect();
        let osig: Vec<Labels> = one.iter().map(|s| self.signature(b, &s.labels)).collect();
        let mut one_by_sig: HashMap<&Labels, Vec<usize>> = HashMap::new();
        for (i, s) in osig.iter().enumerate() {
            one_by_sig.entry(s).or_default().push(i);
        }
        // The "one" side must be unique per match group at every step.
        let side = if swapped { "left" } else { "right" };
        for (sig, idxs) in &one_by_sig {
            if idxs.len() > 1 {
                for i in 0..g.n {
                    if idxs.iter().filter(|&&j| one[j].vals[i].is_some()).count() > 1 {
                        return Err(PromError::Execution(format!(
                            "found duplicate series for the match group {} on the {side} hand-side of the operation: [{}];many-to-many matching not allowed: matching labels must be unique on one side",
                            labels_string(sig),
                            idxs.iter().filter(|&&j| one[j].vals[i].is_some()).map(|&j| labels_string(&one[j].labels)).collect::<Vec<_>>().join(", ")
                        )));
                    }
                }
            }
        }
        if one_to_one {
            let mut many_by_sig: HashMap<&Labels, Vec<usize>> = HashMap::new();
            for (i, s) in msig.iter().enumerate() {
                many_by_sig.entry(s).or_default().push(i);
            }
            for (sig, idxs) in &many_by_sig {
                if idxs.len() > 1 && one_by_sig.contains_key(sig) {
                    for i in 0..g.n {
                        let n_many = idxs.iter().filter(|&&j| many[j].vals[i].is_some()).count();
                        let has_one = one_by_sig[sig].iter().any(|&j| one[j].vals[i].is_some());
                        if n_many > 1 && has_one {
                            return Err(PromError::Execution(
                                "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)".into(),
                            ));
                        }
                    }
                }
            }
        }
        let mut out = Vec::new();
        for (mi, m) in many.iter().enumerate() {
            self.check()?;
            let Some(cands) = one_by_sig.get(&msig[mi]) else {
                continue;
            };
            for &oi in cands {
                let o = &one[oi];
                let vals: Vec<Option<f64>> = (0..g.n)
                    .map(|i| {
                        let mv = m.vals[i]?;
                        let ov = o.vals[i]?;
                        let (lv, rv) = if swapped { (ov, mv) } else { (mv, ov) };
                        let (val, keep) = elem_op(op, lv, rv);
                        if return_bool {
                            Some(if keep { 1.0 } else { 0.0 })
                        } else if keep {
                            Some(val)
                        } else {
                            None
                        }
                    })
                    .collect();
                if !vals.iter().any(Option::is_some) {
                    continue;
                }
                let mut labels = if drops_name {
                    drop_name(&m.labels)
                } else {
                    m.labels.clone()
                };
                if one_to_one {
                    match &matching {
                        Some(LabelModifier::Include(ls)) => {
                            labels.retain(|(k, _)| ls.labels.iter().any(|x| x == k))
                        }
                        Some(LabelModifier::Exclude(ls)) => {
                            labels.retain(|(k, _)| !ls.labels.iter().any(|x| x == k))
                        }
                        None => {}
                    }
                }
                for ln in &include {
                    let v = super::label(&o.labels, ln).unwrap_or("").to_string();
                    set_label(&mut labels, ln, &v);
                }
                out.push(Sv { labels, vals });
            }
        }
        let _ = is_cmp;
        self.add_samples(out.len() * g.n)?;
        Ok(Val::Vector(dedupe(
            out,
            "multiple matches for labels: grouping labels must ensure unique matches",
        )?))
    }
}

/// Input values (series × steps) above which [`accumulate`] splits the
/// steps over several threads.
const PARALLEL_AGGREGATE: usize = 200_000;

/// `sum`, `count`, `group`, `min` or `max` of each group: every member
/// series is added, in member order, into per-step accumulators in one
/// sequential pass (the same arithmetic as the buffered path). With more
/// than one thread the steps, never a step's additions, are split.
fn accumulate(
    svs: &[Sv],
    groups: Vec<(Labels, Vec<usize>)>,
    op: u16,
    n: usize,
    threads: usize,
) -> Vec<Sv> {
    let mut vals: Vec<Vec<Option<f64>>> = vec![vec![None; n]; groups.len()];
    let one = |members: &[usize],
               range: std::ops::Range<usize>,
               out: &mut [Option<f64>],
               acc: &mut Vec<Acc>| {
        acc.clear();
        acc.resize(range.len(), Acc::EMPTY);
        for &si in members {
            for (a, v) in acc.iter_mut().zip(&svs[si].vals[range.clone()]) {
                if let Some(x) = *v {
                    a.add(x);
                }
            }
        }
        for (o, a) in out.iter_mut().zip(acc.iter()) {
            *o = a.value(op);
        }
    };
    let threads = threads.clamp(1, 8).min(n.max(1));
    if threads > 1 {
        let chunk = n.div_ceil(threads);
        // Per thread, its steps of every group's output.
        let mut parts: Vec<Vec<&mut [Option<f64>]>> = (0..threads).map(|_| Vec::new()).collect();
        for v in vals.iter_mut() {
            for (j, c) in v.chunks_mut(chunk).enumerate() {
                parts[j].push(c);
            }
        }
        let (groups, one) = (&groups, &one);
        std::thread::scope(|scope| {
            for (j, part) in parts.into_iter().enumerate() {
                scope.spawn(move || {
                    let mut acc = Vec::with_capacity(chunk);
                    for ((_, members), out) in groups.iter().zip(part) {
                        let from = j * chunk;
                        one(members, from..from + out.len(), out, &mut acc);
                    }
                });
            }
        });
    } else {
        let mut acc = Vec::with_capacity(n);
        for ((_, members), out) in groups.iter().zip(vals.iter_mut()) {
            one(members, 0..n, out, &mut acc);
        }
    }
    groups
        .into_iter()
        .zip(vals)
        .map(|((labels, _), vals)| Sv { labels, vals })
        .collect()
}

/// Selected samples above which [`normalize`] runs on several threads.
const PARALLEL_CHECK_SAMPLES: usize = 1_000_000;

/// Sources promise time order and the range; enforces both in one pass,
/// which also notes stale markers (removed with `drop_stale`).
fn normalize(s: &mut Series, lo: i64, hi: i64, drop_stale: bool) {
    let mut sorted = true;
    let mut stale = false;
    let mut prev = i64::MIN;
    for x in &s.samples {
        sorted &= x.t_ms > prev;
        stale |= is_stale(x.v);
        prev = x.t_ms;
    }
    if !sorted {
        s.samples.sort_by_key(|x| x.t_ms);
        s.samples.dedup_by_key(|x| x.t_ms);
    }
    let b = s.samples.partition_point(|x| x.t_ms <= hi);
    s.samples.truncate(b);
    let a = s.samples.partition_point(|x| x.t_ms < lo);
    if a > 0 {
        s.samples.drain(..a);
    }
    if drop_stale && stale {
        s.samples.retain(|x| !is_stale(x.v));
    }
}

fn min_max(v: &[i64]) -> (i64, i64) {
    let lo = v.iter().copied().min().unwrap_or(0);
    let hi = v.iter().copied().max().unwrap_or(0);
    (lo, hi)
}

/// The value of `l op r` and, for comparisons, whether it holds.
pub(crate) fn elem_op(op: u16, l: f64, r: f64) -> (f64, bool) {
    match op {
        T_ADD => (l + r, true),
        T_SUB => (l - r, true),
        T_MUL => (l * r, true),
        T_DIV => (l / r, true),
        T_POW => (l.powf(r), true),
        T_MOD => (l % r, true),
        T_ATAN2 => (l.atan2(r), true),
        T_EQLC => (l, l == r),
        T_NEQ => (l, l != r),
        T_GTR => (l, l > r),
        T_LSS => (l, l < r),
        T_GTE => (l, l >= r),
        T_LTE => (l, l <= r),
        _ => (f64::NAN, false),
    }
}

fn cmp_desc_nan_last(a: f64, b: f64) -> std::cmp::Ordering {
    use std::cmp::Ordering::*;
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Equal,
        (true, false) => Greater,
        (false, true) => Less,
        _ => b.partial_cmp(&a).unwrap_or(Equal),
    }
}

pub(crate) fn cmp_asc_nan_last(a: f64, b: f64) -> std::cmp::Ordering {
    use std::cmp::Ordering::*;
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Equal,
        (true, false) => Greater,
        (false, true) => Less,
        _ => a.partial_cmp(&b).unwrap_or(Equal),
    }
}

pub(crate) fn desc_nan_last(a: f64, b: f64) -> std::cmp::Ordering {
    cmp_desc_nan_last(a, b)
}

/// A stable position in [0, 1) derived from the label set (`limit_ratio`).
fn ratio_offset(l: &Labels) -> f64 {
    // FNV-1a over the label pairs.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (k, v) in l {
        for b in k.bytes().chain([0xff]).chain(v.bytes()).chain([0xff]) {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h as f64 / u64::MAX as f64
}

/// A running `sum`, `count`, `group`, `min` or `max` of one step's values:
/// the same arithmetic, in the same order, as [`kahan_sum`] and the folds
/// over a buffer of them.
#[derive(Clone, Copy)]
struct Acc {
    n: u32,
    sum: f64,
    c: f64,
    min: f64,
    max: f64,
}

impl Acc {
    const EMPTY: Acc = Acc {
        n: 0,
        sum: 0.0,
        c: 0.0,
        min: f64::NAN,
        max: f64::NAN,
    };

    #[inline]
    fn add(&mut self, x: f64) {
        self.n += 1;
        let t = self.sum + x;
        if t.is_infinite() {
            self.c = 0.0;
        } else if self.sum.abs() >= x.abs() {
            self.c += (self.sum - t) + x;
        } else {
            self.c += (x - t) + self.sum;
        }
        self.sum = t;
        if self.min.is_nan() || x < self.min {
            self.min = x;
        }
        if self.max.is_nan() || x > self.max {
            self.max = x;
        }
    }

    fn value(&self, op: u16) -> Option<f64> {
        if self.n == 0 {
            return None;
        }
        Some(match op {
            T_SUM if self.c.is_finite() => self.sum + self.c,
            T_SUM => self.sum,
            T_COUNT => self.n as f64,
            T_GROUP => 1.0,
            T_MIN => self.min,
            _ => self.max,
        })
    }
}

/// Kahan-compensated sum.
pub(crate) fn kahan_sum(v: &[f64]) -> f64 {
    let (mut sum, mut c) = (0.0f64, 0.0f64);
    for &x in v {
        let t = sum + x;
        if t.is_infinite() {
            c = 0.0;
        } else if sum.abs() >= x.abs() {
            c += (sum - t) + x;
        } else {
            c += (x - t) + sum;
        }
        sum = t;
    }
    if c.is_finite() {
        sum + c
    } else {
        sum
    }
}

/// The mean: a compensated sum, or an incremental mean when the sum overflows.
pub(crate) fn mean(v: &[f64]) -> f64 {
    let s = kahan_sum(v);
    if s.is_finite() || v.iter().any(|x| x.is_infinite() || x.is_nan()) {
        return s / v.len() as f64;
    }
    let mut m = 0.0;
    for (i, &x) in v.iter().enumerate() {
        m += x / (i + 1) as f64 - m / (i + 1) as f64;
    }
    m
}

/// Population variance (Welford).
pub(crate) fn variance(v: &[f64]) -> f64 {
    let (mut n, mut mean, mut m2) = (0.0f64, 0.0f64, 0.0f64);
    for &x in v {
        n += 1.0;
        let d = x - mean;
        mean += d / n;
        m2 += d * (x - mean);
    }
    m2 / n
}

/// Prometheus's quantile: linear interpolation between the closest ranks.
pub(crate) fn quantile(q: f64, v: &mut [f64]) -> f64 {
    if v.is_empty() || q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let n = v.len() as f64;
    let rank = q * (n - 1.0);
    let lower = rank.floor().max(0.0);
    let upper = (lower + 1.0).min(n - 1.0);
    let w = rank - lower;
    v[lower as usize] * (1.0 - w) + v[upper as usize] * w
}

/// The labels `by (...)`/`on (...)` keep, or those `without (...)`/
/// `ignoring (...)` leave (the metric name never survives `without`).
fn project(l: &Labels, m: &LabelModifier) -> Labels {
    match m {
        LabelModifier::Include(ls) => l
            .iter()
            .filter(|(k, _)| ls.labels.iter().any(|x| x == k))
            .cloned()
            .collect(),
        LabelModifier::Exclude(ls) => l
            .iter()
            .filter(|(k, _)| k != METRIC_NAME && !ls.labels.iter().any(|x| x == k))
            .cloned()
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accumulated_aggregates_equal_the_buffered_ones_for_any_thread_count() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let n = 37;
        let special = [
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            1e300,
            -1e300,
            1e-300,
            -0.0,
        ];
        let svs: Vec<Sv> = (0..40)
            .map(|k| Sv {
                labels: vec![("k".into(), k.to_string())],
                vals: (0..n)
                    .map(|_| match next() % 10 {
                        0..=2 => None,
                        3 => Some(special[(next() % special.len() as u64) as usize]),
                        4 => Some((next() % 1000) as f64 * 1e16),
                        _ => Some((next() % 100_000) as f64 / 7.0 - 5000.0),
                    })
                    .collect(),
            })
            .collect();
        // Members in a scattered order, one group empty of values.
        let groups: Vec<(Labels, Vec<usize>)> = vec![
            (vec![], (0..40).filter(|k| k % 3 == 0).rev().collect()),
            (
                vec![("g".into(), "b".into())],
                (0..40).filter(|k| k % 3 != 0).collect(),
            ),
            (vec![("g".into(), "c".into())], vec![]),
        ];
        let reference = |op: u16, members: &[usize], i: usize| -> Option<f64> {
            let buf: Vec<f64> = members.iter().filter_map(|&m| svs[m].vals[i]).collect();
            if buf.is_empty() {
                return None;
            }
            let fold = |pick: fn(f64, f64) -> bool| {
                buf.iter().copied().fold(
                    f64::NAN,
                    |m, v| if m.is_nan() || pick(v, m) { v } else { m },
                )
            };
            Some(match op {
                T_SUM => kahan_sum(&buf),
                T_COUNT => buf.len() as f64,
                T_GROUP => 1.0,
                T_MIN => fold(|v, m| v < m),
                _ => fold(|v, m| v > m),
            })
        };
        for op in [T_SUM, T_COUNT, T_GROUP, T_MIN, T_MAX] {
            for threads in [1, 2, 3, 8] {
                let got = accumulate(&svs, groups.clone(), op, n, threads);
                assert_eq!(got.len(), groups.len());
                for (sv, (labels, members)) in got.iter().zip(&groups) {
                    assert_eq!(&sv.labels, labels);
                    for i in 0..n {
                        let want = reference(op, members, i).map(f64::to_bits);
                        assert_eq!(
                            sv.vals[i].map(f64::to_bits),
                            want,
                            "op {op} step {i}, {threads} threads"
                        );
                    }
                }
            }
        }
    }
}
