//! Trace queries over the [`TraceStore`] trait: request validation and
//! defaults (time range, limit, deadline), parsing of the duration and
//! attribute syntaxes the APIs accept, and the service overview (RED
//! figures and time series) computed from the store's minute rows.
//!
//! Calls here block on storage: run them on the blocking pool.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::model::SpanKind;
use crate::storage::traces::types::{
    minute_of, Agg, DependencyEdge, RedQuery, RedRow, SearchOutcome, TraceSearch, MINUTE_NS,
};
use crate::storage::{StorageError, TraceStore};

#[derive(Debug, thiserror::Error)]
pub enum TraceQueryError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("the query did not finish within {0:?}")]
    Timeout(Duration),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl TraceQueryError {
    pub fn code(&self) -> &'static str {
        match self {
            TraceQueryError::BadRequest(_) => "bad_request",
            TraceQueryError::NotFound(_) => "not_found",
            TraceQueryError::Timeout(_) => "query_timeout",
            TraceQueryError::Storage(e) => e.code(),
        }
    }
}

fn bad(m: impl Into<String>) -> TraceQueryError {
    TraceQueryError::BadRequest(m.into())
}

/// Default time range of a query that gives none.
pub const DEFAULT_LOOKBACK: Duration = Duration::from_secs(3600);
/// Default number of traces a search returns.
pub const DEFAULT_SEARCH_LIMIT: usize = 20;
/// Most points of an overview time series.
pub const MAX_POINTS: u64 = 1440;
/// Most RED rows read for one overview.
pub const MAX_RED_ROWS: usize = 1_000_000;
/// Most services or operations listed.
pub const MAX_NAMES: usize = 10_000;

/// Query limits, from the `traces` configuration.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_search_limit: usize,
    pub timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_search_limit: 1000,
            timeout: Duration::from_secs(10),
        }
    }
}

/// A time range in nanoseconds `[start, end)`, from optional bounds and a
/// lookback (default one hour before `end`, which defaults to now).
pub fn time_range(
    start_ns: Option<u64>,
    end_ns: Option<u64>,
    lookback: Option<Duration>,
    now_ns: u64,
) -> Result<(u64, u64), TraceQueryError> {
    let end = end_ns.unwrap_or(now_ns);
    let start = match start_ns {
        Some(s) => s,
        None => end.saturating_sub(lookback.unwrap_or(DEFAULT_LOOKBACK).as_nanos() as u64),
    };
    if start >= end {
        return Err(bad(format!(
            "the time range is empty: start {start} is not before end {end}"
        )));
    }
    Ok((start, end))
}

/// Parses a duration such as `1.5s`, `250ms`, `100us`, `2m`, `1h` (Go's
/// syntax, as Jaeger uses) or a plain number of `default_unit`s.
pub fn parse_duration(s: &str, default_unit_ns: f64) -> Result<Duration, TraceQueryError> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().map_err(|_| {
        bad(format!(
            "invalid duration {s:?}: expected e.g. 250ms, 1.5s, 2m"
        ))
    })?;
    let mult = match unit {
        "" => default_unit_ns,
        "ns" => 1.0,
        "us" | "µs" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        "m" => 60e9,
        "h" => 3600e9,
        "d" => 86_400e9,
        other => {
            return Err(bad(format!(
                "invalid duration unit {other:?} in {s:?}: use ns, us, ms, s, m, h or d"
            )))
        }
    };
    let ns = n * mult;
    if !ns.is_finite() || ns < 0.0 || ns > u64::MAX as f64 {
        return Err(bad(format!("duration {s:?} is out of range")));
    }
    Ok(Duration::from_nanos(ns as u64))
}

/// Parses a span kind name (`server`, `client`, `producer`, `consumer`,
/// `internal`, `unspecified`), case-insensitively.
pub fn parse_kind(s: &str) -> Result<SpanKind, TraceQueryError> {
    Ok(match s.to_ascii_lowercase().as_str() {
        "server" => SpanKind::Server,
        "client" => SpanKind::Client,
        "producer" => SpanKind::Producer,
        "consumer" => SpanKind::Consumer,
        "internal" => SpanKind::Internal,
        "unspecified" => SpanKind::Unspecified,
        _ => {
            return Err(bad(format!(
                "unknown span kind {s:?}: use server, client, producer, consumer or internal"
            )))
        }
    })
}

/// Parses `key=value` (or `key:value`) attribute filters.
pub fn parse_attribute(s: &str) -> Result<(String, String), TraceQueryError> {
    let i = s
        .find(['=', ':'])
        .ok_or_else(|| bad(format!("attribute filter {s:?} must be key=value")))?;
    let (k, v) = (&s[..i], &s[i + 1..]);
    if k.is_empty() {
        return Err(bad(format!("attribute filter {s:?} has an empty key")));
    }
    Ok((k.to_string(), v.to_string()))
}

/// The trace query service.
#[derive(Clone)]
pub struct TraceQueries {
    store: Arc<dyn TraceStore>,
    limits: Limits,
}

impl TraceQueries {
    pub fn new(store: Arc<dyn TraceStore>, limits: Limits) -> Self {
        TraceQueries { store, limits }
    }

    pub fn store(&self) -> &Arc<dyn TraceStore> {
        &self.store
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Checks and runs a search. `limit` 0 means the default; above the
    /// maximum is an error. The deadline is the configured timeout; a
    /// search stopped by it returns what it found, flagged incomplete.
    pub fn search(&self, mut q: TraceSearch) -> Result<SearchOutcome, TraceQueryError> {
        if q.limit == 0 {
            q.limit = DEFAULT_SEARCH_LIMIT.min(self.limits.max_search_limit);
        }
        if q.limit > self.limits.max_search_limit {
            return Err(bad(format!(
                "limit {} is above the maximum {}",
                q.limit, self.limits.max_search_limit
            )));
        }
        if let (Some(a), Some(b)) = (q.min_duration_ns, q.max_duration_ns) {
            if a > b {
                return Err(bad("minimum duration is above the maximum duration"));
            }
        }
        if q.start_ns >= q.end_ns {
            return Err(bad("the time range is empty"));
        }
        q.deadline = Some(Instant::now() + self.limits.timeout);
        Ok(self.store.search(&q)?)
    }

    pub fn dependencies(
        &self,
        start_ns: u64,
        end_ns: u64,
    ) -> Result<Vec<DependencyEdge>, TraceQueryError> {
        Ok(self.store.dependencies(start_ns, end_ns)?)
    }

    /// RED figures of one service (or all) over `[start, end)`, with time
    /// series at `step` (a whole number of minutes; chosen for about 60
    /// points when `None`).
    pub fn overview(
        &self,
        service: Option<&str>,
        start_ns: u64,
        end_ns: u64,
        step: Option<Duration>,
    ) -> Result<Vec<ServiceOverview>, TraceQueryError> {
        if start_ns >= end_ns {
            return Err(bad("the time range is empty"));
        }
        let span_min = minute_of(end_ns - 1) - minute_of(start_ns) + 1;
        let step_min = match step {
            Some(d) => {
                let ns = d.as_nanos() as u64;
                if ns == 0 || !ns.is_multiple_of(MINUTE_NS) {
                    return Err(bad("step must be a whole number of minutes, e.g. 1m or 5m"));
                }
                ns / MINUTE_NS
            }
            None => span_min.div_ceil(60).max(1),
        };
        if span_min.div_ceil(step_min) > MAX_POINTS {
            return Err(bad(format!(
                "the range needs more than {MAX_POINTS} points at this step: use a larger step"
            )));
        }
        let started = Instant::now();
        let rows = self.store.red(&RedQuery {
            service: service.map(str::to_string),
            start_ns,
            end_ns,
            max_rows: MAX_RED_ROWS,
        })?;
        if started.elapsed() > self.limits.timeout {
            return Err(TraceQueryError::Timeout(self.limits.timeout));
        }
        Ok(build_overview(
            &rows,
            minute_of(start_ns),
            span_min,
            step_min,
        ))
    }
}

/// RED figures of one aggregate over a window.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RedFigures {
    pub requests: u64,
    pub errors: u64,
    /// Requests per second over the window.
    pub rate: f64,
    /// errors / requests (0 when there are no requests).
    pub error_rate: f64,
    pub avg_ms: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

impl RedFigures {
    pub fn from_agg(a: &Agg, window_ns: u64) -> Self {
        let ms = |ns: u64| ns as f64 / 1e6;
        RedFigures {
            requests: a.count,
            errors: a.errors,
            rate: a.count as f64 / (window_ns as f64 / 1e9),
            error_rate: if a.count == 0 {
                0.0
            } else {
                a.errors as f64 / a.count as f64
            },
            avg_ms: (a.count > 0).then(|| ms(a.sum_ns) / a.count as f64),
            p50_ms: a.hist.quantile(0.50).map(ms),
            p95_ms: a.hist.quantile(0.95).map(ms),
            p99_ms: a.hist.quantile(0.99).map(ms),
        }
    }
}

/// One point of a RED time series: the window starting at `time_ms`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RedPoint {
    pub time_ms: u64,
    #[serde(flatten)]
    pub figures: RedFigures,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct OperationOverview {
    pub operation: String,
    pub totals: RedFigures,
    pub series: Vec<RedPoint>,
}

/// A service's requests (its entry spans: server, consumer and root spans)
/// and each of its operations.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ServiceOverview {
    pub service: String,
    pub step_seconds: u64,
    pub totals: RedFigures,
    pub series: Vec<RedPoint>,
    pub operations: Vec<OperationOverview>,
}

/// Folds minute rows into totals and series of `step_min`-minute windows
/// starting at `first_min`, covering `span_min` minutes.
pub fn build_overview(
    rows: &[RedRow],
    first_min: u64,
    span_min: u64,
    step_min: u64,
) -> Vec<ServiceOverview> {
    let points = span_min.div_ceil(step_min) as usize;
    type Acc = (Agg, Vec<Agg>);
    let mut by: BTreeMap<&str, (Acc, BTreeMap<&str, Acc>)> = BTreeMap::new();
    let fresh = || (Agg::default(), vec![Agg::default(); points]);
    for r in rows {
        if r.minute < first_min || r.minute >= first_min + span_min {
            continue;
        }
        let slot = ((r.minute - first_min) / step_min) as usize;
        let entry = by
            .entry(r.service.as_str())
            .or_insert_with(|| (fresh(), BTreeMap::new()));
        let acc = match &r.operation {
            None => &mut entry.0,
            Some(op) => entry.1.entry(op.as_str()).or_insert_with(fresh),
        };
        acc.0.merge(&r.agg);
        acc.1[slot].merge(&r.agg);
    }
    let window = span_min * MINUTE_NS;
    let step_ns = step_min * MINUTE_NS;
    let series = |v: &[Agg]| {
        v.iter()
            .enumerate()
            .map(|(i, a)| RedPoint {
                time_ms: (first_min + i as u64 * step_min) * 60_000,
                figures: RedFigures::from_agg(a, step_ns),
            })
            .collect::<Vec<_>>()
    };
    by.into_iter()
        .map(|(svc, ((tot, ser), ops))| ServiceOverview {
            service: svc.to_string(),
            step_seconds: step_min * 60,
            totals: RedFigures::from_agg(&tot, window),
            series: series(&ser),
            operations: ops
                .into_iter()
                .map(|(op, (t, s))| OperationOverview {
                    operation: op.to_string(),
                    totals: RedFigures::from_agg(&t, window),
                    series: series(&s),
                })
                .collect(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_jaeger_syntax() {
        assert_eq!(
            parse_duration("1.5s", 1e3).unwrap(),
            Duration::from_millis(1500)
        );
        assert_eq!(
            parse_duration("250ms", 1e3).unwrap(),
            Duration::from_millis(250)
        );
        assert_eq!(
            parse_duration("100us", 1.0).unwrap(),
            Duration::from_micros(100)
        );
        assert_eq!(parse_duration("7", 1e3).unwrap(), Duration::from_micros(7));
        assert!(parse_duration("fast", 1.0).is_err());
        assert!(parse_duration("3 parsecs", 1.0).is_err());
    }

    #[test]
    fn attribute_filters_and_ranges() {
        assert_eq!(
            parse_attribute("http.status_code=500").unwrap(),
            ("http.status_code".into(), "500".into())
        );
        assert_eq!(
            parse_attribute("a:b=c").unwrap(),
            ("a".into(), "b=c".into())
        );
        assert!(parse_attribute("novalue").is_err());
        assert!(parse_attribute("=x").is_err());
        let now = 10 * 3_600_000_000_000;
        assert_eq!(
            time_range(None, None, None, now).unwrap(),
            (now - 3_600_000_000_000, now)
        );
        assert!(time_range(Some(5), Some(5), None, now).is_err());
        assert_eq!(parse_kind("SERVER").unwrap(), SpanKind::Server);
        assert!(parse_kind("boss").is_err());
    }

    #[test]
    fn overview_folds_minutes_into_steps() {
        let mut a = Agg::default();
        a.record(10_000_000, false);
        a.record(20_000_000, true);
        let row = |minute, op: Option<&str>| RedRow {
            service: "svc".into(),
            operation: op.map(str::to_string),
            minute,
            agg: a.clone(),
        };
        let rows = vec![
            row(100, None),
            row(101, None),
            row(101, Some("GET")),
            row(200, None),
        ];
        let o = build_overview(&rows, 100, 4, 2);
        assert_eq!(o.len(), 1);
        let s = &o[0];
        assert_eq!(s.totals.requests, 4, "the row outside the range is ignored");
        assert_eq!(s.totals.errors, 2);
        assert!((s.totals.rate - 4.0 / 240.0).abs() < 1e-9);
        assert_eq!(s.totals.error_rate, 0.5);
        assert_eq!(s.series.len(), 2);
        assert_eq!(s.series[0].figures.requests, 4);
        assert_eq!(s.series[1].figures.requests, 0);
        assert_eq!(s.series[1].time_ms, 102 * 60_000);
        assert_eq!(s.operations[0].operation, "GET");
        assert_eq!(s.operations[0].totals.requests, 2);
        let p99 = s.totals.p99_ms.unwrap();
        assert!((p99 - 20.0).abs() / 20.0 < 0.07, "{p99}");
    }
}
