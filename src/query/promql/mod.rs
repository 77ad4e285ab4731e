//! PromQL: parsing (the `promql-parser` crate) and our own evaluator over a
//! [`SeriesSource`], with Prometheus's semantics (5 minute lookback, stale
//! markers, left-open range windows, `@` and `offset`, subqueries).
//!
//! Range queries are evaluated step-wise over series fetched once per
//! selector: each selector asks the source for the whole time span the
//! query needs, then every step finds its sample (or its window) by binary
//! search. Nothing here knows HTTP; `api::http::prom` renders the results.
//! This module must not touch storage engines or the `MetricStore` trait.

mod cache;
mod eval;
pub(crate) mod functions;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

pub use crate::model::series::{
    label, LabelMatcher, Labels, MatchOp, MetricMeta, Sample, Series, METRIC_NAME,
};
use crate::storage::StorageError;

/// The bit pattern Prometheus uses for a stale marker (a NaN that ends a
/// series). Any other NaN is an ordinary value.
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// A stale marker value.
pub fn stale_nan() -> f64 {
    f64::from_bits(STALE_NAN_BITS)
}

/// Whether `v` is a stale marker.
pub fn is_stale(v: f64) -> bool {
    v.to_bits() == STALE_NAN_BITS
}

pub use crate::storage::SeriesSource;
pub use cache::{CacheUse, ResultCache};

/// Compiles label matchers once (regexes fully anchored, as in Prometheus).
pub struct CompiledMatchers {
    items: Vec<(String, CompiledOp)>,
}

enum CompiledOp {
    Eq(String),
    Ne(String),
    Re(regex::Regex),
    NotRe(regex::Regex),
}

impl CompiledMatchers {
    pub fn new(matchers: &[LabelMatcher]) -> Result<Self, PromError> {
        let mut items = Vec::with_capacity(matchers.len());
        for m in matchers {
            let op = match m.op {
                MatchOp::Equal => CompiledOp::Eq(m.value.clone()),
                MatchOp::NotEqual => CompiledOp::Ne(m.value.clone()),
                MatchOp::Regex => CompiledOp::Re(anchored(&m.value)?),
                MatchOp::NotRegex => CompiledOp::NotRe(anchored(&m.value)?),
            };
            items.push((m.name.clone(), op));
        }
        Ok(CompiledMatchers { items })
    }

    /// Whether a label set matches; an absent label matches as "".
    pub fn matches(&self, labels: &Labels) -> bool {
        self.items.iter().all(|(name, op)| {
            let v = label(labels, name).unwrap_or("");
            match op {
                CompiledOp::Eq(s) => v == s,
                CompiledOp::Ne(s) => v != s,
                CompiledOp::Re(r) => r.is_match(v),
                CompiledOp::NotRe(r) => !r.is_match(v),
            }
        })
    }
}

fn anchored(re: &str) -> Result<regex::Regex, PromError> {
    regex::Regex::new(&format!("^(?:{re})$"))
        .map_err(|e| PromError::BadData(format!("invalid regular expression {re:?}: {e}")))
}

/// An in-memory [`SeriesSource`]: a list of series, matched by scanning.
#[derive(Default)]
pub struct VecSource {
    series: Vec<Series>,
    meta: Vec<MetricMeta>,
}

impl VecSource {
    /// Series with the same label set are merged (samples sorted by time,
    /// a later sample at the same timestamp replaces the earlier one).
    pub fn new(series: Vec<Series>) -> Self {
        let mut by_labels: HashMap<Labels, Vec<Sample>> = HashMap::new();
        for s in series {
            let mut labels = s.labels;
            labels.sort();
            by_labels.entry(labels).or_default().extend(s.samples);
        }
        let mut series: Vec<Series> = by_labels
            .into_iter()
            .map(|(labels, mut samples)| {
                samples.sort_by_key(|s| s.t_ms);
                let mut out: Vec<Sample> = Vec::with_capacity(samples.len());
                for s in samples {
                    match out.last_mut() {
                        Some(last) if last.t_ms == s.t_ms => *last = s,
                        _ => out.push(s),
                    }
                }
                Series {
                    labels,
                    samples: out,
                }
            })
            .collect();
        series.sort_by(|a, b| a.labels.cmp(&b.labels));
        VecSource {
            series,
            meta: Vec::new(),
        }
    }

    pub fn with_metadata(mut self, meta: Vec<MetricMeta>) -> Self {
        self.meta = meta;
        self
    }

    fn matching<'a>(
        &'a self,
        matchers: &[LabelMatcher],
        start_ms: i64,
        end_ms: i64,
    ) -> Result<impl Iterator<Item = (&'a Series, &'a [Sample])>, StorageError> {
        let m =
            CompiledMatchers::new(matchers).map_err(|e| StorageError::Backend(e.to_string()))?;
        Ok(self.series.iter().filter_map(move |s| {
            if !m.matches(&s.labels) {
                return None;
            }
            let lo = s.samples.partition_point(|x| x.t_ms < start_ms);
            let hi = s.samples.partition_point(|x| x.t_ms <= end_ms);
            (lo < hi).then(|| (s, &s.samples[lo..hi]))
        }))
    }
}

impl SeriesSource for VecSource {
    fn select(
        &self,
        matchers: &[LabelMatcher],
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<Series>, StorageError> {
        Ok(self
            .matching(matchers, start_ms, end_ms)?
            .map(|(s, samples)| Series {
                labels: s.labels.clone(),
                samples: samples.to_vec(),
            })
            .collect())
    }

    fn series(
        &self,
        matchers: &[LabelMatcher],
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<Labels>, StorageError> {
        Ok(self
            .matching(matchers, start_ms, end_ms)?
            .map(|(s, _)| s.labels.clone())
            .collect())
    }

    fn label_names(
        &self,
        matchers: &[LabelMatcher],
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<String>, StorageError> {
        let mut names: Vec<String> = self
            .matching(matchers, start_ms, end_ms)?
            .flat_map(|(s, _)| s.labels.iter().map(|(k, _)| k.clone()))
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    }

    fn label_values(
        &self,
        name: &str,
        matchers: &[LabelMatcher],
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<String>, StorageError> {
        let mut values: Vec<String> = self
            .matching(matchers, start_ms, end_ms)?
            .filter_map(|(s, _)| label(&s.labels, name).map(str::to_string))
            .collect();
        values.sort();
        values.dedup();
        Ok(values)
    }

    fn metadata(&self) -> Result<Vec<MetricMeta>, StorageError> {
        Ok(self.meta.clone())
    }
}

/// Query errors. `error_type()` is the Prometheus API `errorType`.
#[derive(Debug, thiserror::Error)]
pub enum PromError {
    /// The query or a parameter is invalid (parse errors, bad arguments).
    #[error("{0}")]
    BadData(String),
    /// The query is valid but cannot be evaluated on this data.
    #[error("{0}")]
    Execution(String),
    #[error("query timed out in {0}")]
    Timeout(&'static str),
    #[error("query processing would load too many samples into memory in {0} (limit {1})")]
    TooManySamples(&'static str, usize),
    #[error("query was canceled")]
    Canceled,
    #[error("{0}")]
    Storage(#[from] StorageError),
}

impl PromError {
    pub fn code(&self) -> &'static str {
        match self {
            PromError::BadData(_) => "bad_data",
            PromError::Execution(_) => "execution",
            PromError::Timeout(_) => "timeout",
            PromError::TooManySamples(..) => "execution",
            PromError::Canceled => "canceled",
            PromError::Storage(e) => e.code(),
        }
    }

    /// The Prometheus API `errorType`.
    pub fn error_type(&self) -> &'static str {
        match self {
            PromError::BadData(_) => "bad_data",
            PromError::Execution(_) | PromError::TooManySamples(..) => "execution",
            PromError::Timeout(_) => "timeout",
            PromError::Canceled => "canceled",
            PromError::Storage(StorageError::Closed | StorageError::Unavailable(_)) => {
                "unavailable"
            }
            PromError::Storage(_) => "internal",
        }
    }
}

/// Bounds every query.
#[derive(Debug, Clone)]
pub struct QueryLimits {
    /// Wall-clock deadline for one query.
    pub timeout: Duration,
    /// Most samples a query may hold: samples read from the source plus
    /// points of intermediate results (like Prometheus's `--query.max-samples`).
    pub max_samples: usize,
    /// How far back an instant selector looks for a sample.
    pub lookback: Duration,
}

impl Default for QueryLimits {
    fn default() -> Self {
        QueryLimits {
            timeout: Duration::from_secs(120),
            max_samples: 50_000_000,
            lookback: Duration::from_secs(300),
        }
    }
}

/// A query result, as the Prometheus API reports it.
#[derive(Debug, Clone, PartialEq)]
pub enum QueryValue {
    /// `(t_ms, value)`.
    Scalar(i64, f64),
    String(i64, String),
    /// An instant vector at one time: `(labels, t_ms, value)`, in the order
    /// the expression produced them (`sort`, `topk` order is kept).
    Vector(Vec<(Labels, i64, f64)>),
    /// Series sorted by labels (range queries, range vector results).
    Matrix(Vec<Series>),
}

/// Parses a PromQL expression.
pub fn parse(query: &str) -> Result<promql_parser::parser::Expr, PromError> {
    promql_parser::parser::parse(query).map_err(PromError::BadData)
}

/// Evaluates `query` at one time.
pub fn instant_query(
    src: &dyn SeriesSource,
    query: &str,
    t_ms: i64,
    limits: &QueryLimits,
    cancel: Option<Arc<std::sync::atomic::AtomicBool>>,
) -> Result<QueryValue, PromError> {
    let expr = parse(query)?;
    eval::run(src, &expr, t_ms, t_ms, 1, true, limits, cancel)
}

/// Evaluates `query` at every step from `start_ms` to `end_ms`; the result is
/// always a matrix.
pub fn range_query(
    src: &dyn SeriesSource,
    query: &str,
    start_ms: i64,
    end_ms: i64,
    step_ms: i64,
    limits: &QueryLimits,
    cancel: Option<Arc<std::sync::atomic::AtomicBool>>,
) -> Result<QueryValue, PromError> {
    if step_ms <= 0 {
        return Err(PromError::BadData(
            "zero or negative query resolution step widths are not accepted. Try a positive integer"
                .into(),
        ));
    }
    if end_ms < start_ms {
        return Err(PromError::BadData(
            "end timestamp must not be before start time".into(),
        ));
    }
    let expr = parse(query)?;
    use promql_parser::parser::value::ValueType;
    let vt = expr.value_type();
    if vt != ValueType::Vector && vt != ValueType::Scalar {
        return Err(PromError::BadData(format!(
            "invalid expression type \"{}\" for range query, must be Scalar or instant Vector",
            match vt {
                ValueType::Matrix => "range vector",
                _ => "string",
            }
        )));
    }
    eval::run(src, &expr, start_ms, end_ms, step_ms, false, limits, cancel)
}

/// Converts the parser's matchers into ours (plus `__name__` when named).
pub fn selector_matchers(vs: &promql_parser::parser::VectorSelector) -> Vec<Vec<LabelMatcher>> {
    use promql_parser::label::MatchOp as P;
    let conv = |m: &promql_parser::label::Matcher| LabelMatcher {
        name: m.name.clone(),
        op: match m.op {
            P::Equal => MatchOp::Equal,
            P::NotEqual => MatchOp::NotEqual,
            P::Re(_) => MatchOp::Regex,
            P::NotRe(_) => MatchOp::NotRegex,
        },
        value: m.value.clone(),
    };
    let name = vs.name.as_ref().map(|n| LabelMatcher {
        name: METRIC_NAME.to_string(),
        op: MatchOp::Equal,
        value: n.clone(),
    });
    let mut groups = Vec::new();
    if vs.matchers.or_matchers.is_empty() {
        let mut g: Vec<LabelMatcher> = vs.matchers.matchers.iter().map(conv).collect();
        g.extend(name.clone());
        groups.push(g);
    } else {
        for og in &vs.matchers.or_matchers {
            let mut g: Vec<LabelMatcher> = vs.matchers.matchers.iter().map(conv).collect();
            g.extend(og.iter().map(conv));
            g.extend(name.clone());
            groups.push(g);
        }
    }
    groups
}

/// Formats a value as Prometheus does (`NaN`, `+Inf`, `-Inf`, shortest
/// decimal otherwise).
pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

/// A per-query cache of regexes used by functions (`label_replace`).
#[derive(Default)]
pub(crate) struct RegexCache(Mutex<HashMap<String, regex::Regex>>);

impl RegexCache {
    pub(crate) fn get(&self, re: &str) -> Result<regex::Regex, PromError> {
        let mut m = self.0.lock();
        if let Some(r) = m.get(re) {
            return Ok(r.clone());
        }
        let r = anchored(re)?;
        m.insert(re.to_string(), r.clone());
        Ok(r)
    }
}

#[cfg(test)]
mod tests;
