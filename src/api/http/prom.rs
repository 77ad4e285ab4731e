//! The Prometheus HTTP query API over a [`SeriesSource`]: `/api/v1/query`,
//! `query_range`, `series`, `labels`, `label/<name>/values`, `metadata`,
//! `query_exemplars`, `status/buildinfo`. GET and form-encoded POST,
//! repeated `match[]`, times as RFC 3339 or Unix seconds, durations as
//! Prometheus durations or float seconds.
//!
//! Responses use Prometheus's envelope (`{"status":"success","data":...}`,
//! errors `{"status":"error","errorType":...,"error":...}`) rather than
//! tern's own error body, because Prometheus clients (Grafana) parse it;
//! for the same reason the error-type → status mapping (bad_data 400,
//! execution 422, timeout 503, canceled 499, internal 500) lives here.
//! Queries run on the blocking pool with the deadline and sample limit of
//! [`PromLimits`].

use crate::model::time::now_ms;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};

use crate::query::promql::{
    format_value, instant_query, selector_matchers, LabelMatcher, Labels, PromError, QueryLimits,
    QueryValue, ResultCache, SeriesSource,
};

/// Limits of the Prometheus API.
#[derive(Debug, Clone)]
pub struct PromLimits {
    /// Deadline, sample limit and lookback of one query. A request's
    /// `timeout` parameter can only shorten the deadline.
    pub query: QueryLimits,
    /// Most points per series a range query may return (Prometheus: 11,000).
    pub max_points_per_series: i64,
    /// Most entries `series`, `labels` and `label/<name>/values` return
    /// (a smaller `limit` parameter wins).
    pub max_list_results: usize,
    /// Memory of the range-query result cache (0: none).
    pub result_cache_bytes: usize,
}

impl Default for PromLimits {
    fn default() -> Self {
        PromLimits {
            query: QueryLimits::default(),
            max_points_per_series: 11_000,
            max_list_results: 100_000,
            result_cache_bytes: 256 << 20,
        }
    }
}

#[derive(Clone)]
pub struct PromState {
    pub source: Arc<dyn SeriesSource>,
    pub limits: PromLimits,
    pub cache: Arc<ResultCache>,
}

/// The Prometheus API router (paths under `/api/v1`).
pub fn prom_router(source: Arc<dyn SeriesSource>, limits: PromLimits) -> Router {
    Router::new()
        .route("/api/v1/query", get(query).post(query))
        .route("/api/v1/query_range", get(query_range).post(query_range))
        .route("/api/v1/series", get(series).post(series))
        .route("/api/v1/labels", get(labels).post(labels))
        .route("/api/v1/label/{name}/values", get(label_values))
        .route("/api/v1/metadata", get(metadata))
        .route("/api/v1/query_exemplars", get(exemplars).post(exemplars))
        .route("/api/v1/status/buildinfo", get(buildinfo))
        .with_state(PromState {
            source,
            cache: Arc::new(ResultCache::new(limits.result_cache_bytes)),
            limits,
        })
}

/// An API error in Prometheus's terms.
#[derive(Debug)]
pub struct PromApiError {
    pub error_type: &'static str,
    pub message: String,
}

impl PromApiError {
    fn bad(msg: impl Into<String>) -> Self {
        PromApiError {
            error_type: "bad_data",
            message: msg.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self.error_type {
            "bad_data" => StatusCode::BAD_REQUEST,
            "execution" => StatusCode::UNPROCESSABLE_ENTITY,
            "timeout" | "unavailable" => StatusCode::SERVICE_UNAVAILABLE,
            "canceled" => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<PromError> for PromApiError {
    fn from(e: PromError) -> Self {
        PromApiError {
            error_type: e.error_type(),
            message: e.to_string(),
        }
    }
}

impl IntoResponse for PromApiError {
    fn into_response(self) -> Response {
        let body = json!({"status": "error", "errorType": self.error_type, "error": self.message});
        (self.status(), axum::Json(body)).into_response()
    }
}

fn success(data: Value, warnings: Vec<String>) -> Response {
    let mut body = json!({"status": "success", "data": data});
    if !warnings.is_empty() {
        body["warnings"] = json!(warnings);
    }
    axum::Json(body).into_response()
}

/// Request parameters: the query string plus, for form POSTs, the body.
struct Params(Vec<(String, String)>);

impl Params {
    fn parse(raw: Option<String>, headers: &HeaderMap, body: &Bytes) -> Result<Self, PromApiError> {
        let mut out: Vec<(String, String)> = match raw {
            Some(q) => serde_urlencoded::from_str(&q)
                .map_err(|e| PromApiError::bad(format!("invalid query string: {e}")))?,
            None => Vec::new(),
        };
        let form = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
        if form && !body.is_empty() {
            let more: Vec<(String, String)> = serde_urlencoded::from_bytes(body)
                .map_err(|e| PromApiError::bad(format!("invalid form body: {e}")))?;
            out.extend(more);
        }
        Ok(Params(out))
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// A time parameter: Unix seconds (float) or RFC 3339.
pub fn parse_time(s: &str) -> Result<i64, String> {
    let s = s.trim();
    if let Ok(v) = s.parse::<f64>() {
        if v.is_finite() && v.abs() < 9.2e15 {
            return Ok((v * 1000.0).round() as i64);
        }
        return Err(format!("cannot parse {s:?} to a valid timestamp"));
    }
    parse_rfc3339(s).ok_or_else(|| format!("cannot parse {s:?} to a valid timestamp"))
}

fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> { s.get(r)?.parse().ok() };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if b[13] != b':' || b[16] != b':' || !(1..=12).contains(&mo) || !(1..=31).contains(&d) {
        return None;
    }
    if h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut k = 19;
    let mut frac_ms = 0i64;
    if k < b.len() && b[k] == b'.' {
        k += 1;
        let start = k;
        while k < b.len() && b[k].is_ascii_digit() {
            k += 1;
        }
        let digits = s.get(start..k)?;
        if digits.is_empty() {
            return None;
        }
        let ms: String = digits.chars().chain("000".chars()).take(3).collect();
        frac_ms = ms.parse().ok()?;
    }
    let tz = s.get(k..)?;
    let offset_s = match tz {
        "Z" | "z" => 0,
        _ => {
            let tb = tz.as_bytes();
            if tb.len() != 6 || tb[3] != b':' {
                return None;
            }
            let sign = match tb[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let oh: i64 = tz.get(1..3)?.parse().ok()?;
            let om: i64 = tz.get(4..6)?.parse().ok()?;
            sign * (oh * 3600 + om * 60)
        }
    };
    let days = crate::model::time::days_from_civil(y, mo, d);
    Some(((days * 86_400 + h * 3600 + mi * 60 + sec) - offset_s) * 1000 + frac_ms)
}

/// A duration parameter: float seconds or a Prometheus duration (`1m30s`).
pub fn parse_duration(s: &str) -> Result<i64, String> {
    let s = s.trim();
    if let Ok(v) = s.parse::<f64>() {
        if v.is_finite() && v.abs() < 9.2e15 {
            return Ok((v * 1000.0).round() as i64);
        }
        return Err(format!("cannot parse {s:?} to a valid duration"));
    }
    promql_parser::util::parse_duration(s)
        .map(|d| d.as_millis() as i64)
        .map_err(|_| format!("cannot parse {s:?} to a valid duration"))
}

fn time_param(p: &Params, name: &str, default: i64) -> Result<i64, PromApiError> {
    match p.get(name) {
        None | Some("") => Ok(default),
        Some(s) => {
            parse_time(s).map_err(|e| PromApiError::bad(format!("invalid parameter {name:?}: {e}")))
        }
    }
}

fn limits_for(st: &PromState, p: &Params) -> Result<QueryLimits, PromApiError> {
    let mut l = st.limits.query.clone();
    if let Some(t) = p.get("timeout").filter(|s| !s.is_empty()) {
        let ms = parse_duration(t)
            .map_err(|e| PromApiError::bad(format!("invalid parameter \"timeout\": {e}")))?;
        if ms > 0 {
            l.timeout = l.timeout.min(Duration::from_millis(ms as u64));
        }
    }
    Ok(l)
}

/// Sets the flag when the request future is dropped (client went away).
struct CancelOnDrop(Option<Arc<AtomicBool>>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(f) = &self.0 {
            f.store(true, Ordering::Relaxed);
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce(Arc<AtomicBool>) -> Result<T, PromError> + Send + 'static,
) -> Result<T, PromApiError> {
    let flag = Arc::new(AtomicBool::new(false));
    let mut guard = CancelOnDrop(Some(flag.clone()));
    let res = tokio::task::spawn_blocking(move || f(flag))
        .await
        .map_err(|e| PromApiError {
            error_type: "internal",
            message: format!("query task failed: {e}"),
        })?;
    // Completed normally: disarm the guard.
    guard.0 = None;
    res.map_err(PromApiError::from)
}

fn ts_json(t_ms: i64) -> Value {
    if t_ms % 1000 == 0 {
        json!(t_ms / 1000)
    } else {
        json!(t_ms as f64 / 1000.0)
    }
}

fn labels_json(l: &Labels) -> Value {
    let m: serde_json::Map<String, Value> = l
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    Value::Object(m)
}

fn render(v: QueryValue) -> Value {
    match v {
        QueryValue::Scalar(t, x) => {
            json!({"resultType": "scalar", "result": [ts_json(t), format_value(x)]})
        }
        QueryValue::String(t, s) => json!({"resultType": "string", "result": [ts_json(t), s]}),
        QueryValue::Vector(items) => {
            let result: Vec<Value> = items
                .iter()
                .map(|(l, t, x)| json!({"metric": labels_json(l), "value": [ts_json(*t), format_value(*x)]}))
                .collect();
            json!({"resultType": "vector", "result": result})
        }
        QueryValue::Matrix(series) => {
            let result: Vec<Value> = series
                .iter()
                .map(|s| {
                    let values: Vec<Value> = s
                        .samples
                        .iter()
                        .map(|x| json!([ts_json(x.t_ms), format_value(x.v)]))
                        .collect();
                    json!({"metric": labels_json(&s.labels), "values": values})
                })
                .collect();
            json!({"resultType": "matrix", "result": result})
        }
    }
}

/// The required, non-empty `query` parameter.
fn query_param(p: &Params) -> Result<String, PromApiError> {
    p.get("query")
        .filter(|q| !q.trim().is_empty())
        .map(str::to_string)
        .ok_or_else(|| PromApiError::bad("invalid parameter \"query\": query is empty"))
}

async fn query(
    State(st): State<PromState>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, PromApiError> {
    let p = Params::parse(raw, &headers, &body)?;
    let q = query_param(&p)?;
    let t = time_param(&p, "time", now_ms())?;
    let limits = limits_for(&st, &p)?;
    let src = st.source.clone();
    let v = blocking(move |c| instant_query(src.as_ref(), &q, t, &limits, Some(c))).await?;
    Ok(success(render(v), Vec::new()))
}

async fn query_range(
    State(st): State<PromState>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, PromApiError> {
    let p = Params::parse(raw, &headers, &body)?;
    let q = query_param(&p)?;
    let start = p
        .get("start")
        .ok_or_else(|| PromApiError::bad("invalid parameter \"start\": missing"))
        .and_then(|s| {
            parse_time(s)
                .map_err(|e| PromApiError::bad(format!("invalid parameter \"start\": {e}")))
        })?;
    let end = p
        .get("end")
        .ok_or_else(|| PromApiError::bad("invalid parameter \"end\": missing"))
        .and_then(|s| {
            parse_time(s).map_err(|e| PromApiError::bad(format!("invalid parameter \"end\": {e}")))
        })?;
    if end < start {
        return Err(PromApiError::bad(
            "invalid parameter \"end\": end timestamp must not be before start time",
        ));
    }
    let step = p
        .get("step")
        .ok_or_else(|| PromApiError::bad("invalid parameter \"step\": missing"))
        .and_then(|s| {
            parse_duration(s)
                .map_err(|e| PromApiError::bad(format!("invalid parameter \"step\": {e}")))
        })?;
    if step <= 0 {
        return Err(PromApiError::bad(
            "invalid parameter \"step\": zero or negative query resolution step widths are not accepted. Try a positive integer",
        ));
    }
    if (end - start) / step >= st.limits.max_points_per_series {
        return Err(PromApiError::bad(format!(
            "exceeded maximum resolution of {} points per timeseries. Try decreasing the query resolution (?step=XX)",
            st.limits.max_points_per_series
        )));
    }
    let limits = limits_for(&st, &p)?;
    let src = st.source.clone();
    let cache = st.cache.clone();
    let v = blocking(move |c| {
        let now = now_ms();
        cache
            .range_query(src.as_ref(), &q, start, end, step, &limits, Some(c), now)
            .map(|(v, _)| v)
    })
    .await?;
    Ok(success(render(v), Vec::new()))
}

/// `match[]` selectors as matcher groups (a selector with `or` gives several).
fn match_params(p: &Params) -> Result<Vec<Vec<LabelMatcher>>, PromApiError> {
    let mut out = Vec::new();
    for m in p.all("match[]") {
        let expr = promql_parser::parser::parse(m)
            .map_err(|e| PromApiError::bad(format!("invalid parameter \"match[]\": {e}")))?;
        match expr {
            promql_parser::parser::Expr::VectorSelector(vs) => out.extend(selector_matchers(&vs)),
            _ => {
                return Err(PromApiError::bad(format!(
                    "invalid parameter \"match[]\": {m:?} is not a series selector"
                )))
            }
        }
    }
    Ok(out)
}

fn list_limit(st: &PromState, p: &Params) -> Result<usize, PromApiError> {
    match p.get("limit").filter(|s| !s.is_empty()) {
        None => Ok(st.limits.max_list_results),
        Some(s) => {
            let n: i64 = s
                .parse()
                .map_err(|_| PromApiError::bad(format!("invalid parameter \"limit\": {s:?}")))?;
            if n < 0 {
                return Err(PromApiError::bad(
                    "invalid parameter \"limit\": must be non-negative",
                ));
            }
            Ok(if n == 0 {
                st.limits.max_list_results
            } else {
                (n as usize).min(st.limits.max_list_results)
            })
        }
    }
}

const MIN_TIME: i64 = i64::MIN / 4;
const MAX_TIME: i64 = i64::MAX / 4;

fn truncate<T>(v: &mut Vec<T>, limit: usize, warnings: &mut Vec<String>) {
    if v.len() > limit {
        v.truncate(limit);
        warnings.push("results truncated due to limit".to_string());
    }
}

async fn series(
    State(st): State<PromState>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, PromApiError> {
    let p = Params::parse(raw, &headers, &body)?;
    let groups = match_params(&p)?;
    if groups.is_empty() {
        return Err(PromApiError::bad("no match[] parameter provided"));
    }
    let start = time_param(&p, "start", MIN_TIME)?;
    let end = time_param(&p, "end", MAX_TIME)?;
    let limit = list_limit(&st, &p)?;
    let src = st.source.clone();
    let mut all = blocking(move |_| {
        let mut all: Vec<Labels> = Vec::new();
        for g in &groups {
            all.extend(src.series(g, start, end)?);
        }
        all.sort();
        all.dedup();
        Ok(all)
    })
    .await?;
    let mut warnings = Vec::new();
    truncate(&mut all, limit, &mut warnings);
    Ok(success(
        Value::Array(all.iter().map(labels_json).collect()),
        warnings,
    ))
}

/// The sorted, de-duplicated union of `f` over the `match[]` groups (one
/// call without matchers when there are none).
fn union_over_groups(
    groups: &[Vec<LabelMatcher>],
    f: impl Fn(&[LabelMatcher]) -> Result<Vec<String>, PromError>,
) -> Result<Vec<String>, PromError> {
    let mut out = Vec::new();
    if groups.is_empty() {
        out = f(&[])?;
    } else {
        for g in groups {
            out.extend(f(g)?);
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

async fn labels(
    State(st): State<PromState>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, PromApiError> {
    let p = Params::parse(raw, &headers, &body)?;
    let groups = match_params(&p)?;
    let start = time_param(&p, "start", MIN_TIME)?;
    let end = time_param(&p, "end", MAX_TIME)?;
    let limit = list_limit(&st, &p)?;
    let src = st.source.clone();
    let mut names =
        blocking(move |_| union_over_groups(&groups, |g| Ok(src.label_names(g, start, end)?)))
            .await?;
    let mut warnings = Vec::new();
    truncate(&mut names, limit, &mut warnings);
    Ok(success(json!(names), warnings))
}

async fn label_values(
    State(st): State<PromState>,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, PromApiError> {
    let p = Params::parse(raw, &headers, &Bytes::new())?;
    if name.is_empty() {
        return Err(PromApiError::bad(format!("invalid label name: {name:?}")));
    }
    let groups = match_params(&p)?;
    let start = time_param(&p, "start", MIN_TIME)?;
    let end = time_param(&p, "end", MAX_TIME)?;
    let limit = list_limit(&st, &p)?;
    let src = st.source.clone();
    let mut values = blocking(move |_| {
        union_over_groups(&groups, |g| Ok(src.label_values(&name, g, start, end)?))
    })
    .await?;
    let mut warnings = Vec::new();
    truncate(&mut values, limit, &mut warnings);
    Ok(success(json!(values), warnings))
}

async fn metadata(
    State(st): State<PromState>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, PromApiError> {
    let p = Params::parse(raw, &headers, &Bytes::new())?;
    let limit = match p.get("limit").filter(|s| !s.is_empty()) {
        None => usize::MAX,
        Some(s) => match s.parse::<i64>() {
            Ok(n) if n > 0 => n as usize,
            Ok(_) => usize::MAX,
            Err(_) => {
                return Err(PromApiError::bad(format!(
                    "invalid parameter \"limit\": {s:?}"
                )))
            }
        },
    };
    let per_metric = match p.get("limit_per_metric").filter(|s| !s.is_empty()) {
        None => usize::MAX,
        Some(s) => match s.parse::<i64>() {
            Ok(n) if n > 0 => n as usize,
            Ok(_) => usize::MAX,
            Err(_) => {
                return Err(PromApiError::bad(format!(
                    "invalid parameter \"limit_per_metric\": {s:?}"
                )))
            }
        },
    };
    let only = p
        .get("metric")
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    let src = st.source.clone();
    let meta = blocking(move |_| Ok(src.metadata()?)).await?;
    let mut out: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for m in meta {
        if only.as_ref().is_some_and(|o| *o != m.metric) {
            continue;
        }
        if !out.contains_key(&m.metric) && out.len() >= limit {
            continue;
        }
        let e = out.entry(m.metric.clone()).or_default();
        if e.len() < per_metric {
            e.push(json!({"type": m.kind, "help": m.help, "unit": m.unit}));
        }
    }
    Ok(success(json!(out), Vec::new()))
}

async fn exemplars() -> Response {
    success(json!([]), Vec::new())
}

async fn buildinfo() -> Response {
    success(
        json!({
            "version": "3.0.0",
            "revision": "",
            "branch": "",
            "buildUser": "",
            "buildDate": "",
            "goVersion": "",
            "application": "tern",
            "applicationVersion": env!("CARGO_PKG_VERSION"),
        }),
        Vec::new(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_as_prometheus_does() {
        assert_eq!(parse_time("1435781451.781").unwrap(), 1_435_781_451_781);
        assert_eq!(
            parse_time("2015-07-01T20:10:51.781Z").unwrap(),
            1_435_781_451_781
        );
        assert_eq!(
            parse_time("2015-07-01T22:10:51+02:00").unwrap(),
            1_435_781_451_000
        );
        assert!(parse_time("yesterday").is_err());
        assert_eq!(parse_duration("15").unwrap(), 15_000);
        assert_eq!(parse_duration("1m30s").unwrap(), 90_000);
        assert_eq!(parse_duration("0.5").unwrap(), 500);
        assert!(parse_duration("5 parsecs").is_err());
    }
}
