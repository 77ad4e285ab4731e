//! Query and aggregate types shared by every trace store implementation and
//! by `query::traces`: search requests and results, trace summaries,
//! dependency edges, and the RED aggregates (counts plus a log-linear
//! latency histogram) kept per service, operation and minute.

use std::collections::BTreeMap;
use std::time::Instant;

use crate::model::{AnyValue, Span, SpanKind, TraceId};

/// Nanoseconds in one aggregation bucket of the RED and dependency figures.
pub const MINUTE_NS: u64 = 60_000_000_000;

/// The minute bucket a timestamp falls in.
pub fn minute_of(ns: u64) -> u64 {
    ns / MINUTE_NS
}

/// A trace search. A trace matches when one of its spans satisfies every
/// filter at once: it starts in `[start_ns, end_ns)`, belongs to `service`,
/// is named `operation`, has `kind`, has an error status (`error_only`), a
/// duration within `[min_duration_ns, max_duration_ns]`, and carries every
/// attribute `key=value` among its own or its resource's attributes (values
/// compared as text: `200`, `true`, `GET`).
#[derive(Debug, Clone, Default)]
pub struct TraceSearch {
    pub service: Option<String>,
    pub operation: Option<String>,
    pub kind: Option<SpanKind>,
    pub attributes: Vec<(String, String)>,
    pub min_duration_ns: Option<u64>,
    pub max_duration_ns: Option<u64>,
    pub error_only: bool,
    pub start_ns: u64,
    pub end_ns: u64,
    /// Most traces returned.
    pub limit: usize,
    /// When set, the search stops here and returns what it found.
    pub deadline: Option<Instant>,
}

impl TraceSearch {
    /// Whether `span` satisfies every span-level filter (time included).
    pub fn matches(&self, span: &Span) -> bool {
        span.start_time_ns >= self.start_ns
            && span.start_time_ns < self.end_ns
            && self.matches_head(span.duration_ns(), span.kind, span.is_error())
            && self
                .service
                .as_deref()
                .is_none_or(|s| span.service_name() == s)
            && self.operation.as_deref().is_none_or(|o| span.name == o)
            && self.attributes.iter().all(|(k, v)| {
                has_attr(&span.attributes, k, v) || has_attr(&span.resource.attributes, k, v)
            })
    }

    /// The filters an index entry can decide without reading the span.
    pub fn matches_head(&self, duration_ns: u64, kind: SpanKind, error: bool) -> bool {
        self.min_duration_ns.is_none_or(|m| duration_ns >= m)
            && self.max_duration_ns.is_none_or(|m| duration_ns <= m)
            && self.kind.is_none_or(|k| k == kind)
            && (!self.error_only || error)
    }

    pub fn deadline_passed(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }
}

fn has_attr(attrs: &[(String, AnyValue)], key: &str, value: &str) -> bool {
    attrs
        .iter()
        .any(|(k, v)| k == key && attr_text(v).as_deref() == Some(value))
}

/// The text form under which an attribute value is indexed and compared,
/// or `None` for values that are not searchable (arrays, maps, bytes,
/// strings over [`MAX_INDEXED_VALUE`] bytes).
pub fn attr_text(v: &AnyValue) -> Option<String> {
    match v {
        AnyValue::String(s) if s.len() <= MAX_INDEXED_VALUE => Some(s.clone()),
        AnyValue::Int(i) => Some(i.to_string()),
        AnyValue::Bool(b) => Some(b.to_string()),
        AnyValue::Double(d) => Some(d.to_string()),
        _ => None,
    }
}

/// Longest string attribute value that is indexed for search.
pub const MAX_INDEXED_VALUE: usize = 256;

/// A span scan (SQL's `spans` table): spans starting in `[start_ns,
/// end_ns)`, optionally of one service, operation or trace. With `full`
/// false only the fields an index entry holds are needed ([`SpanHead`]), so
/// a store may answer from its indexes without reading span records.
#[derive(Debug, Clone, Default)]
pub struct SpanScan {
    pub start_ns: u64,
    pub end_ns: u64,
    pub service: Option<String>,
    pub name: Option<String>,
    pub trace_id: Option<TraceId>,
    /// Most spans produced; `None` is unbounded.
    pub limit: Option<usize>,
    pub full: bool,
}

impl SpanScan {
    /// Whether a span head satisfies the scan's filters.
    pub fn matches(&self, h: &SpanHead) -> bool {
        h.start_ns >= self.start_ns
            && h.start_ns < self.end_ns
            && self.service.as_deref().is_none_or(|s| h.service == s)
            && self.name.as_deref().is_none_or(|n| h.name == n)
            && self.trace_id.is_none_or(|t| h.trace_id == t)
    }
}

/// The indexed fields of a span.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanHead {
    pub trace_id: TraceId,
    pub span_id: crate::model::SpanId,
    pub service: String,
    pub name: String,
    pub start_ns: u64,
    pub duration_ns: u64,
    pub kind: SpanKind,
    pub error: bool,
}

impl SpanHead {
    pub fn of(s: &Span) -> SpanHead {
        SpanHead {
            trace_id: s.trace_id,
            span_id: s.span_id,
            service: s.service_name().to_string(),
            name: s.name.clone(),
            start_ns: s.start_time_ns,
            duration_ns: s.duration_ns(),
            kind: s.kind,
            error: s.is_error(),
        }
    }
}

/// One chunk of a span scan: heads when the scan is not `full`, else spans.
#[derive(Debug, Clone)]
pub enum SpanChunk {
    Heads(Vec<SpanHead>),
    Spans(Vec<Span>),
}

/// What a search found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SearchOutcome {
    /// Matching traces, the one with the latest matching span first.
    pub traces: Vec<TraceSummary>,
    /// False when the deadline stopped the search early.
    pub complete: bool,
}

/// A trace at a glance, maintained as its spans arrive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceSummary {
    pub trace_id: TraceId,
    /// Service and name of the root span (the earliest span without a
    /// parent); while no such span has arrived, of the earliest span.
    pub root_service: String,
    pub root_name: String,
    /// False while the root span has not arrived.
    pub root_known: bool,
    /// Start of the span the root fields come from.
    pub root_start_ns: u64,
    pub start_ns: u64,
    pub end_ns: u64,
    pub span_count: u64,
    pub error_count: u64,
    /// Distinct services of the trace (at most [`MAX_SUMMARY_SERVICES`]).
    pub services: Vec<String>,
}

/// Most services listed in a summary.
pub const MAX_SUMMARY_SERVICES: usize = 32;

impl TraceSummary {
    pub fn duration_ns(&self) -> u64 {
        self.end_ns.saturating_sub(self.start_ns)
    }

    /// An empty summary to fold spans into.
    pub fn new(trace_id: TraceId) -> Self {
        TraceSummary {
            trace_id,
            start_ns: u64::MAX,
            ..Default::default()
        }
    }

    /// Adds one new span.
    pub fn add(&mut self, span: &Span) {
        let first = self.span_count == 0;
        self.span_count += 1;
        if span.is_error() {
            self.error_count += 1;
        }
        let is_root = span.parent_span_id.is_none();
        let earlier = span.start_time_ns < self.root_start_ns;
        // A root replaces a non-root or a later root; a non-root replaces
        // only a later non-root while no root is known.
        let replace = first
            || (is_root && !self.root_known)
            || (is_root && earlier)
            || (!self.root_known && earlier);
        if replace {
            self.root_service = span.service_name().to_string();
            self.root_name = span.name.clone();
            self.root_known = is_root;
            self.root_start_ns = span.start_time_ns;
        }
        self.start_ns = self.start_ns.min(span.start_time_ns);
        self.end_ns = self.end_ns.max(span.end_time_ns);
        let svc = span.service_name();
        if self.services.len() < MAX_SUMMARY_SERVICES && !self.services.iter().any(|s| s == svc) {
            self.services.push(svc.to_string());
        }
    }
}

/// An operation (span name) of a service, with the span kind it was seen with.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OperationInfo {
    pub name: String,
    pub kind: SpanKind,
}

/// Calls from one service to another: spans of `callee` whose parent span
/// belongs to `caller`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DependencyEdge {
    pub caller: String,
    pub callee: String,
    pub calls: u64,
    /// Calls whose callee span has an error status.
    pub errors: u64,
}

/// A RED query: the minute rows of one service (or of every service) in a
/// time range.
#[derive(Debug, Clone)]
pub struct RedQuery {
    /// `None`: every service.
    pub service: Option<String>,
    pub start_ns: u64,
    pub end_ns: u64,
    /// Most rows returned; the store stops there.
    pub max_rows: usize,
}

/// RED aggregate of one minute. `operation` is `None` for the service's
/// row, which counts its entry spans: server and consumer spans and root
/// spans. Operation rows count every span of that name.
#[derive(Debug, Clone, PartialEq)]
pub struct RedRow {
    pub service: String,
    pub operation: Option<String>,
    pub minute: u64,
    pub agg: Agg,
}

/// Whether a span counts as a request of its service.
pub fn is_entry_span(span: &Span) -> bool {
    matches!(span.kind, SpanKind::Server | SpanKind::Consumer) || span.parent_span_id.is_none()
}

/// Request count, error count, total duration and the duration histogram.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Agg {
    pub count: u64,
    pub errors: u64,
    pub sum_ns: u64,
    pub hist: Histogram,
}

impl Agg {
    pub fn record(&mut self, duration_ns: u64, error: bool) {
        self.count += 1;
        self.errors += u64::from(error);
        self.sum_ns = self.sum_ns.saturating_add(duration_ns);
        self.hist.record(duration_ns);
    }

    pub fn merge(&mut self, o: &Agg) {
        self.count += o.count;
        self.errors += o.errors;
        self.sum_ns = self.sum_ns.saturating_add(o.sum_ns);
        self.hist.merge(&o.hist);
    }
}

/// A log-linear latency histogram over microseconds: exact below 16 µs,
/// then 16 buckets per power of two (at most 6.25 % relative error).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Histogram {
    /// Bucket index → count.
    pub buckets: BTreeMap<u16, u64>,
}

const SUB: u64 = 16;

impl Histogram {
    /// The bucket of a duration.
    pub fn bucket(duration_ns: u64) -> u16 {
        let us = duration_ns / 1000;
        if us < SUB {
            return us as u16;
        }
        let e = 63 - u64::from(us.leading_zeros());
        let m = (us >> (e - 4)) & (SUB - 1);
        (SUB + (e - 4) * SUB + m) as u16
    }

    /// Lowest duration (ns) of a bucket.
    pub fn lower_ns(idx: u16) -> u64 {
        let idx = u64::from(idx);
        let us = if idx < SUB {
            idx
        } else {
            let e = (idx - SUB) / SUB + 4;
            let m = (idx - SUB) % SUB;
            (SUB + m) << (e - 4)
        };
        us.saturating_mul(1000)
    }

    pub fn record(&mut self, duration_ns: u64) {
        *self.buckets.entry(Self::bucket(duration_ns)).or_default() += 1;
    }

    pub fn merge(&mut self, o: &Histogram) {
        for (k, v) in &o.buckets {
            *self.buckets.entry(*k).or_default() += v;
        }
    }

    pub fn count(&self) -> u64 {
        self.buckets.values().sum()
    }

    /// The `q` quantile (0..=1) in nanoseconds: the middle of the bucket
    /// holding it; `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (&idx, &n) in &self.buckets {
            seen += n;
            if seen >= rank {
                let lo = Self::lower_ns(idx);
                let hi = Self::lower_ns(idx.saturating_add(1));
                return Some(lo + (hi - lo) / 2);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn histogram_quantiles() {
        let mut h = Histogram::default();
        for ms in 1..=100u64 {
            h.record(ms * 1_000_000);
        }
        let p50 = h.quantile(0.5).unwrap() as f64;
        let p99 = h.quantile(0.99).unwrap() as f64;
        assert!((p50 - 50e6).abs() / 50e6 < 0.07, "{p50}");
        assert!((p99 - 99e6).abs() / 99e6 < 0.07, "{p99}");
        assert_eq!(Histogram::default().quantile(0.5), None);
        let mut small = Histogram::default();
        small.record(3_000);
        assert_eq!(small.quantile(1.0), Some(3_500));
    }

    proptest! {
        #[test]
        fn bucket_bounds_contain_the_value(ns in 0u64..(1u64 << 50)) {
            let b = Histogram::bucket(ns);
            let us_floor = ns / 1000 * 1000;
            prop_assert!(Histogram::lower_ns(b) <= us_floor);
            prop_assert!(Histogram::lower_ns(b + 1) > us_floor);
        }
    }
}
