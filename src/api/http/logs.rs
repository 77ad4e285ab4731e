//! Log search HTTP API: search with pagination, count-over-time histogram,
//! live tail (server-sent events) and the logs of a trace.
//!
//! Handlers parse parameters and render JSON; the query language is
//! `query::logs`, the work is done by the `LogStore` on the blocking pool
//! under a deadline.

use crate::model::time::now_ns;
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use axum::{Json, Router};
use futures::Stream;
use serde_json::{json, Value};

use crate::api::error::{ApiError, ErrorKind};
use crate::api::{ApiState, Phase};
use crate::model::log::severity_name;
use crate::model::time::{civil_from_days, days_from_civil};
use crate::model::{attributes_json, TraceId};
use crate::storage::logs::{
    self, Buckets, LogCursor, LogFilter, LogPage, LogSearch, StoredLog, TailEvent, MAX_BUCKETS,
    MAX_PAGE, SEVERITY_CLASSES,
};
use crate::storage::{LogStore, StorageError};

/// Longest a search may run before the request fails.
const QUERY_DEADLINE: Duration = Duration::from_secs(30);
/// Default page size.
const DEFAULT_LIMIT: usize = 100;
/// Default look-back when `start` is absent.
const DEFAULT_RANGE: Duration = Duration::from_secs(3600);
/// Slack after now for the default `end` (clocks of senders run ahead).
const DEFAULT_END_SLACK: Duration = Duration::from_secs(300);
/// Buckets of the histogram when `step` is absent.
const DEFAULT_BUCKETS: u64 = 100;

pub fn router() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/logs/search", get(search))
        .route("/api/v1/logs/histogram", get(histogram))
        .route("/api/v1/logs/tail", get(tail))
        .route("/api/v1/logs/trace/{trace_id}", get(trace_logs))
}

fn bad(code: &'static str, msg: impl Into<String>) -> ApiError {
    ApiError::new(ErrorKind::BadRequest, code, msg)
}

fn store(st: &ApiState) -> Result<Arc<dyn LogStore>, ApiError> {
    st.runtime
        .read()
        .as_ref()
        .map(|r| r.stores.logs.clone())
        .ok_or_else(|| {
            ApiError::new(
                ErrorKind::Unavailable,
                "starting",
                "the server is still starting",
            )
        })
}

fn storage_error(e: StorageError) -> ApiError {
    tracing::error!(error = %e, "log search failed");
    ApiError::new(ErrorKind::Internal, e.code(), e.to_string())
}

/// Runs a store call on the blocking pool under the query deadline.
async fn run<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StorageError> + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::time::timeout(QUERY_DEADLINE, tokio::task::spawn_blocking(f)).await {
        Ok(Ok(r)) => r.map_err(storage_error),
        Ok(Err(e)) => Err(ApiError::new(
            ErrorKind::Internal,
            "internal",
            format!("search task failed: {e}"),
        )),
        Err(_) => Err(ApiError::new(
            ErrorKind::Unavailable,
            "query_timeout",
            format!(
                "the search did not finish within {}s: narrow the time range or the query",
                QUERY_DEADLINE.as_secs()
            ),
        )),
    }
}

/// Query parameters, with unknown names refused.
struct Params(HashMap<String, String>);

impl Params {
    fn new(raw: HashMap<String, String>, allowed: &[&str]) -> Result<Self, ApiError> {
        if let Some(k) = raw.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(bad(
                "invalid_parameter",
                format!(
                    "unknown parameter {k:?}: expected one of {}",
                    allowed.join(", ")
                ),
            ));
        }
        Ok(Params(raw))
    }

    fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str).filter(|v| !v.is_empty())
    }

    fn filter(&self) -> Result<LogFilter, ApiError> {
        crate::query::logs::parse(self.get("q").unwrap_or(""))
            .map_err(|e| bad(e.code(), format!("invalid query: {e}")))
    }

    /// `start` and `end`: nanoseconds, RFC 3339, `now` or `now-<duration>`.
    fn range(&self) -> Result<(u64, u64), ApiError> {
        let now = now_ns();
        let end = match self.get("end") {
            Some(v) => {
                parse_time(v, now).map_err(|m| bad("invalid_parameter", format!("end: {m}")))?
            }
            None => now.saturating_add(DEFAULT_END_SLACK.as_nanos() as u64),
        };
        let start = match self.get("start") {
            Some(v) => {
                parse_time(v, now).map_err(|m| bad("invalid_parameter", format!("start: {m}")))?
            }
            None => now.saturating_sub(DEFAULT_RANGE.as_nanos() as u64),
        };
        if start >= end {
            return Err(bad("invalid_parameter", "start must be before end"));
        }
        Ok((start, end))
    }

    fn limit(&self) -> Result<usize, ApiError> {
        match self.get("limit") {
            None => Ok(DEFAULT_LIMIT),
            Some(v) => match v.parse::<usize>() {
                Ok(n) if n <= MAX_PAGE => Ok(n),
                _ => Err(bad(
                    "invalid_parameter",
                    format!("limit must be an integer from 0 to {MAX_PAGE}"),
                )),
            },
        }
    }

    fn cursor(&self) -> Result<Option<LogCursor>, ApiError> {
        self.get("cursor")
            .map(|c| {
                LogCursor::decode(c).ok_or_else(|| {
                    bad(
                        "invalid_parameter",
                        "cursor is not one returned as next_cursor by this API",
                    )
                })
            })
            .transpose()
    }

    /// Histogram buckets for `step` (a duration such as `1m`), or about
    /// [`DEFAULT_BUCKETS`] buckets over the range.
    fn buckets(&self, start: u64, end: u64, required: bool) -> Result<Option<Buckets>, ApiError> {
        let span = end - start;
        let step_ns = match self.get("step") {
            Some(v) => {
                let d = crate::config::parse_duration(v)
                    .map_err(|m| bad("invalid_parameter", format!("step: {m}")))?;
                d.as_nanos().min(u64::MAX as u128) as u64
            }
            None if required => span.div_ceil(DEFAULT_BUCKETS).max(1),
            None => return Ok(None),
        };
        if step_ns == 0 {
            return Err(bad("invalid_parameter", "step must be positive"));
        }
        let count = span.div_ceil(step_ns);
        if count > MAX_BUCKETS as u64 {
            return Err(bad(
                "invalid_parameter",
                format!(
                    "step gives {count} buckets over the time range; at most {MAX_BUCKETS} are allowed"
                ),
            ));
        }
        Ok(Some(Buckets {
            start_ns: start,
            step_ns,
            count: count as usize,
        }))
    }
}

/// Parses a time: integer nanoseconds, RFC 3339, `now`, `now-15m`.
pub fn parse_time(v: &str, now: u64) -> Result<u64, String> {
    let v = v.trim();
    if let Ok(n) = v.parse::<u64>() {
        return Ok(n);
    }
    if v == "now" {
        return Ok(now);
    }
    if let Some(rest) = v.strip_prefix("now-") {
        let d = crate::config::parse_duration(rest)?;
        return Ok(now.saturating_sub(d.as_nanos().min(u64::MAX as u128) as u64));
    }
    if let Some(rest) = v.strip_prefix("now+") {
        let d = crate::config::parse_duration(rest)?;
        return Ok(now.saturating_add(d.as_nanos().min(u64::MAX as u128) as u64));
    }
    parse_rfc3339(v).ok_or_else(|| {
        format!(
            "invalid time {v:?}: use nanoseconds since the epoch, RFC 3339 \
             (2024-01-02T03:04:05Z) or now-<duration>"
        )
    })
}

fn parse_rfc3339(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        if !t.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        t.parse().ok()
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let mut i = 19;
    let mut frac_ns = 0i64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let st = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let digits = s.get(st..i)?;
        if digits.is_empty() {
            return None;
        }
        let mut padded: String = digits.chars().take(9).collect();
        while padded.len() < 9 {
            padded.push('0');
        }
        frac_ns = padded.parse().ok()?;
    }
    let offset_s = match s.get(i..)? {
        "Z" | "z" => 0,
        tz if tz.len() == 6
            && (tz.starts_with('+') || tz.starts_with('-'))
            && tz.as_bytes()[3] == b':' =>
        {
            let oh = num(i + 1..i + 3)?;
            let om = num(i + 4..i + 6)?;
            let o = oh * 3600 + om * 60;
            if tz.starts_with('-') {
                -o
            } else {
                o
            }
        }
        _ => return None,
    };
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + se - offset_s;
    if secs < 0 {
        return None;
    }
    (secs as u64)
        .checked_mul(1_000_000_000)?
        .checked_add(frac_ns as u64)
}

/// RFC 3339 in UTC with nanoseconds.
pub fn format_rfc3339(ns: u64) -> String {
    let secs = (ns / 1_000_000_000) as i64;
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let r = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:09}Z",
        r / 3600,
        r % 3600 / 60,
        r % 60,
        ns % 1_000_000_000
    )
}

/// The JSON form of a record.
pub fn record_json(r: &StoredLog) -> Value {
    let rec = &r.record;
    json!({
        "id": format!("{:016x}", r.id),
        "timestamp": format_rfc3339(rec.time_ns),
        "time_ns": rec.time_ns.to_string(),
        "observed_time_ns": rec.observed_time_ns.to_string(),
        "severity_number": rec.severity_number,
        "severity_text": rec.severity_text,
        "severity": severity_name(rec.severity_number).to_lowercase(),
        "service": rec.service_name(),
        "body": rec.body.to_json(),
        "attributes": attributes_json(&rec.attributes),
        "resource": attributes_json(&rec.resource.attributes),
        "scope": {"name": rec.scope.name, "version": rec.scope.version},
        "trace_id": rec.trace_id.map(|t| t.to_hex()),
        "span_id": rec.span_id.map(|s| s.to_hex()),
        "flags": rec.flags,
        "event_name": rec.event_name,
    })
}

fn histogram_json(b: &Buckets, h: &[[u64; 7]]) -> Value {
    let buckets: Vec<Value> = h
        .iter()
        .enumerate()
        .map(|(i, counts)| {
            let by: serde_json::Map<String, Value> = SEVERITY_CLASSES
                .iter()
                .zip(counts)
                .filter(|(_, c)| **c > 0)
                .map(|(k, c)| (k.to_string(), json!(c)))
                .collect();
            let start = b
                .start_ns
                .saturating_add(b.step_ns.saturating_mul(i as u64));
            json!({
                "start_ns": start.to_string(),
                "timestamp": format_rfc3339(start),
                "total": counts.iter().sum::<u64>(),
                "by_severity": by,
            })
        })
        .collect();
    json!({"step_ns": b.step_ns.to_string(), "buckets": buckets})
}

fn page_json(page: &LogPage, start: u64, end: u64, buckets: Option<&Buckets>) -> Value {
    let mut v = json!({
        "records": page.records.iter().map(record_json).collect::<Vec<_>>(),
        "total": page.total,
        "next_cursor": page.next_cursor.map(|c| c.encode()),
        "start_ns": start.to_string(),
        "end_ns": end.to_string(),
    });
    if let Some(b) = buckets {
        v["histogram"] = histogram_json(b, &page.histogram);
    }
    v
}

/// `GET /api/v1/logs/search?q=&start=&end=&limit=&cursor=&step=`
async fn search(
    State(st): State<ApiState>,
    Query(raw): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let p = Params::new(raw, &["q", "start", "end", "limit", "cursor", "step"])?;
    let filter = p.filter()?;
    let (start, end) = p.range()?;
    let mut s = LogSearch::new(filter, start, end, p.limit()?);
    s.cursor = p.cursor()?;
    s.buckets = p.buckets(start, end, false)?;
    let store = store(&st)?;
    let q = s.clone();
    let page = run(move || store.search(&q)).await?;
    Ok(Json(page_json(&page, start, end, s.buckets.as_ref())))
}

/// `GET /api/v1/logs/histogram?q=&start=&end=&step=`
async fn histogram(
    State(st): State<ApiState>,
    Query(raw): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let p = Params::new(raw, &["q", "start", "end", "step"])?;
    let filter = p.filter()?;
    let (start, end) = p.range()?;
    let mut s = LogSearch::new(filter, start, end, 0);
    let buckets = p.buckets(start, end, true)?;
    s.buckets = buckets;
    let store = store(&st)?;
    let page = run(move || store.search(&s)).await?;
    let mut v = buckets
        .as_ref()
        .map(|b| histogram_json(b, &page.histogram))
        .unwrap_or_else(|| json!({}));
    v["total"] = json!(page.total);
    v["start_ns"] = json!(start.to_string());
    v["end_ns"] = json!(end.to_string());
    Ok(Json(v))
}

/// `GET /api/v1/logs/trace/{trace_id}?limit=`: the logs of a trace, oldest
/// first, and the spans that have logs.
async fn trace_logs(
    State(st): State<ApiState>,
    Path(trace_id): Path<String>,
    Query(raw): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let p = Params::new(raw, &["limit"])?;
    let id = TraceId::from_hex(&trace_id)
        .map_err(|e| bad("invalid_parameter", format!("trace id: {e}")))?;
    let limit = match p.get("limit") {
        None => MAX_PAGE,
        Some(_) => p.limit()?,
    };
    let store = store(&st)?;
    let (page, spans) = run(move || {
        let s = LogSearch::new(
            LogFilter::Term {
                field: logs::LogField::TraceId,
                value: id.to_hex(),
            },
            0,
            u64::MAX,
            limit,
        );
        Ok((store.search(&s)?, store.span_ids_with_logs(&id)?))
    })
    .await?;
    let mut records: Vec<Value> = page.records.iter().map(record_json).collect();
    records.reverse();
    Ok(Json(json!({
        "trace_id": id.to_hex(),
        "records": records,
        "total": page.total,
        "truncated": page.next_cursor.is_some(),
        "span_ids_with_logs": spans.iter().map(|s| s.to_hex()).collect::<Vec<_>>(),
    })))
}

/// `GET /api/v1/logs/tail?q=`: server-sent events. Each matching record
/// written from now on is an event `log` with the record as JSON; a
/// subscriber too slow to keep up gets an event `lagged` with the number of
/// records it missed. The stream ends when the server shuts down.
async fn tail(
    State(st): State<ApiState>,
    Query(raw): Query<HashMap<String, String>>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let p = Params::new(raw, &["q"])?;
    let filter = p.filter()?;
    let rx = store(&st)?.subscribe();
    let phase = st.phase.clone();
    let stream =
        futures::stream::unfold((rx, filter, phase), |(mut rx, filter, phase)| async move {
            loop {
                if phase.get() == Phase::ShuttingDown {
                    return None;
                }
                let ev = tokio::select! {
                    ev = rx.next() => ev,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                };
                let event = match ev? {
                    TailEvent::Record(r) => {
                        if !logs::matches(&filter, &r.record) {
                            continue;
                        }
                        Event::default()
                            .event("log")
                            .data(record_json(&r).to_string())
                    }
                    TailEvent::Lagged(n) => Event::default()
                        .event("lagged")
                        .data(json!({"skipped": n}).to_string()),
                };
                return Some((Ok(event), (rx, filter, phase)));
            }
        });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_and_format() {
        assert_eq!(
            parse_time("1700000000000000000", 0),
            Ok(1_700_000_000_000_000_000)
        );
        assert_eq!(parse_time("now-1m", 120_000_000_000), Ok(60_000_000_000));
        assert_eq!(
            parse_time("2023-11-14T22:13:20Z", 0),
            Ok(1_700_000_000_000_000_000)
        );
        assert_eq!(
            parse_time("2023-11-14T23:13:20.5+01:00", 0),
            Ok(1_700_000_000_500_000_000)
        );
        assert!(parse_time("yesterday", 0).is_err());
        assert!(parse_time("2023-13-14T22:13:20Z", 0).is_err());
        assert_eq!(
            format_rfc3339(1_700_000_000_000_000_001),
            "2023-11-14T22:13:20.000000001Z"
        );
    }
}
