//! Trace query routes: the Jaeger query API (`/api/services`,
//! `/api/services/{service}/operations`, `/api/operations`,
//! `/api/traces/{id}`, `/api/traces`, `/api/dependencies`, with Jaeger's
//! `{data,total,limit,offset,errors}` envelope and span shape) so the Jaeger
//! UI and Grafana's Jaeger data source can read tern, and the native JSON
//! API under `/api/v1/traces` and `/api/v1/services` (see README).
//!
//! Handlers parse and render only; the work runs in `query::traces` on the
//! blocking pool.

use crate::model::time::now_ns;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::super::error::{ApiError, ErrorKind};
use super::super::ApiState;
use crate::model::{
    attributes_json, AnyValue, Resource, Span, SpanKind, StatusCode as Otel, TraceId,
};
use crate::query::traces::{
    parse_attribute, parse_duration, parse_kind, time_range, Limits, TraceQueries, TraceQueryError,
    MAX_NAMES,
};
use crate::storage::traces::types::{TraceSearch, TraceSummary};
use crate::storage::StorageError;

/// The trace routes, to be merged into the API router.
pub fn router() -> Router<ApiState> {
    Router::new()
        .route("/api/services", get(jaeger_services))
        .route(
            "/api/services/{service}/operations",
            get(jaeger_service_operations),
        )
        .route("/api/operations", get(jaeger_operations))
        .route("/api/traces", get(jaeger_search))
        .route("/api/traces/{id}", get(jaeger_trace))
        .route("/api/dependencies", get(jaeger_dependencies))
        .route("/api/v1/traces", get(native_search))
        .route("/api/v1/traces/{id}", get(native_trace))
        .route("/api/v1/services", get(native_services))
        .route(
            "/api/v1/services/{service}/operations",
            get(native_operations),
        )
        .route(
            "/api/v1/services/{service}/overview",
            get(native_service_overview),
        )
        .route("/api/v1/overview", get(native_overview))
        .route("/api/v1/dependencies", get(native_dependencies))
}

type Params = Query<Vec<(String, String)>>;

fn to_api(e: TraceQueryError) -> ApiError {
    let kind = match &e {
        TraceQueryError::BadRequest(_) => ErrorKind::BadRequest,
        TraceQueryError::NotFound(_) => ErrorKind::NotFound,
        TraceQueryError::Timeout(_) => ErrorKind::Unavailable,
        TraceQueryError::Storage(StorageError::Closed | StorageError::Unavailable(_)) => {
            ErrorKind::Unavailable
        }
        TraceQueryError::Storage(_) => ErrorKind::Internal,
    };
    if kind == ErrorKind::Internal {
        tracing::error!(error = %e, "trace query failed");
    }
    ApiError::new(kind, e.code(), e.to_string())
}

fn bad(m: impl Into<String>) -> ApiError {
    ApiError::new(ErrorKind::BadRequest, "bad_request", m)
}

fn queries(st: &ApiState) -> Result<TraceQueries, ApiError> {
    let guard = st.runtime.read();
    let r = guard.as_ref().ok_or_else(|| {
        ApiError::new(
            ErrorKind::Unavailable,
            "starting",
            "the server is still starting",
        )
    })?;
    Ok(TraceQueries::new(
        r.stores.traces.clone(),
        Limits::default(),
    ))
}

/// Runs a blocking query on the blocking pool.
async fn run<T: Send + 'static>(
    st: &ApiState,
    f: impl FnOnce(TraceQueries) -> Result<T, TraceQueryError> + Send + 'static,
) -> Result<T, ApiError> {
    let q = queries(st)?;
    tokio::task::spawn_blocking(move || f(q))
        .await
        .map_err(|e| {
            ApiError::new(
                ErrorKind::Internal,
                "internal",
                format!("query task failed: {e}"),
            )
        })?
        .map_err(to_api)
}

fn get_param<'a>(p: &'a [(String, String)], k: &str) -> Option<&'a str> {
    p.iter()
        .rev()
        .find(|(key, v)| key == k && !v.is_empty())
        .map(|(_, v)| v.as_str())
}

fn get_u64(p: &[(String, String)], k: &str) -> Result<Option<u64>, ApiError> {
    get_param(p, k)
        .map(|v| {
            v.parse::<u64>()
                .map_err(|_| bad(format!("{k} must be a non-negative integer, got {v:?}")))
        })
        .transpose()
}

fn parse_trace_id(s: &str) -> Result<TraceId, ApiError> {
    let s = s.trim();
    if s.is_empty() || s.len() > 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad(format!(
            "invalid trace id {s:?}: expected up to 32 hex digits"
        )));
    }
    // Jaeger clients may drop leading zeros.
    TraceId::from_hex(&format!("{s:0>32}")).map_err(|e| bad(format!("invalid trace id: {e}")))
}

// ---------------------------------------------------------------- Jaeger

/// An error in Jaeger's envelope, with the status of the matching `ApiError`.
struct JaegerError(ApiError);

impl From<ApiError> for JaegerError {
    fn from(e: ApiError) -> Self {
        JaegerError(e)
    }
}

impl IntoResponse for JaegerError {
    fn into_response(self) -> Response {
        let status = self.0.http_status();
        let body = json!({
            "data": null, "total": 0, "limit": 0, "offset": 0,
            "errors": [{"code": status.as_u16(), "msg": self.0.message}],
        });
        (status, Json(body)).into_response()
    }
}

fn envelope(data: Value, total: usize) -> Json<Value> {
    Json(json!({"data": data, "total": total, "limit": 0, "offset": 0, "errors": null}))
}

async fn jaeger_services(State(st): State<ApiState>) -> Result<Json<Value>, JaegerError> {
    let names = run(&st, |q| Ok(q.store().services(MAX_NAMES)?)).await?;
    let n = names.len();
    Ok(envelope(json!(names), n))
}

async fn jaeger_service_operations(
    State(st): State<ApiState>,
    Path(service): Path<String>,
) -> Result<Json<Value>, JaegerError> {
    let ops = run(&st, move |q| {
        Ok(q.store().operations(&service, MAX_NAMES)?)
    })
    .await?;
    let mut names: Vec<String> = ops.into_iter().map(|o| o.name).collect();
    names.dedup();
    let n = names.len();
    Ok(envelope(json!(names), n))
}

async fn jaeger_operations(
    State(st): State<ApiState>,
    Query(p): Params,
) -> Result<Json<Value>, JaegerError> {
    let service = get_param(&p, "service")
        .ok_or_else(|| bad("service is required"))?
        .to_string();
    let kind = get_param(&p, "spanKind")
        .map(parse_kind)
        .transpose()
        .map_err(to_api)?;
    let ops = run(&st, move |q| {
        Ok(q.store().operations(&service, MAX_NAMES)?)
    })
    .await?;
    let data: Vec<Value> = ops
        .into_iter()
        .filter(|o| kind.is_none_or(|k| k == o.kind))
        .map(|o| json!({"name": o.name, "spanKind": o.kind.as_str()}))
        .collect();
    let n = data.len();
    Ok(envelope(Value::Array(data), n))
}

async fn jaeger_trace(
    State(st): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, JaegerError> {
    let id = parse_trace_id(&id)?;
    let spans = run(&st, move |q| Ok(q.store().trace(&id)?)).await?;
    if spans.is_empty() {
        return Err(ApiError::new(ErrorKind::NotFound, "not_found", "trace not found").into());
    }
    Ok(envelope(json!([jaeger_trace_json(&id, &spans)]), 1))
}

/// Jaeger's search: `service`, `operation`, `tags` (a JSON object) or
/// `tag=key:value`, `minDuration`/`maxDuration` (e.g. `1.2s`, `100ms`),
/// `limit`, `start`/`end` (µs) or `lookback` (e.g. `1h`).
async fn jaeger_search(
    State(st): State<ApiState>,
    Query(p): Params,
) -> Result<Json<Value>, JaegerError> {
    let mut attributes = Vec::new();
    if let Some(tags) = get_param(&p, "tags") {
        let map: HashMap<String, Value> = serde_json::from_str(tags)
            .map_err(|e| bad(format!("tags must be a JSON object of strings: {e}")))?;
        for (k, v) in map {
            let v = match v {
                Value::String(s) => s,
                other => other.to_string(),
            };
            attributes.push((k, v));
        }
    }
    for (k, v) in &p {
        if k == "tag" {
            attributes.push(parse_attribute(v).map_err(to_api)?);
        }
    }
    let dur = |k: &str| -> Result<Option<u64>, ApiError> {
        get_param(&p, k)
            .map(|v| parse_duration(v, 1e3).map(|d| d.as_nanos() as u64))
            .transpose()
            .map_err(to_api)
    };
    let us = |k: &str| -> Result<Option<u64>, ApiError> {
        Ok(get_u64(&p, k)?.map(|v| v.saturating_mul(1000)))
    };
    let lookback = match get_param(&p, "lookback") {
        Some("custom") | None => None,
        Some(v) => Some(parse_duration(v, 1e6).map_err(to_api)?),
    };
    let (start_ns, end_ns) =
        time_range(us("start")?, us("end")?, lookback, now_ns()).map_err(to_api)?;
    let limit = get_u64(&p, "limit")?.unwrap_or(20) as usize;
    let q = TraceSearch {
        service: get_param(&p, "service").map(str::to_string),
        operation: get_param(&p, "operation").map(str::to_string),
        kind: None,
        attributes,
        min_duration_ns: dur("minDuration")?,
        max_duration_ns: dur("maxDuration")?,
        error_only: false,
        start_ns,
        end_ns,
        limit,
        deadline: None,
    };
    let traces = run(&st, move |qs| {
        let found = qs.search(q)?;
        let mut out = Vec::with_capacity(found.traces.len());
        for s in found.traces {
            let spans = qs.store().trace(&s.trace_id)?;
            if !spans.is_empty() {
                out.push(jaeger_trace_json(&s.trace_id, &spans));
            }
        }
        Ok(out)
    })
    .await?;
    let n = traces.len();
    Ok(envelope(Value::Array(traces), n))
}

/// Jaeger's dependencies: `endTs` (ms, default now) and `lookback` (ms,
/// default one day).
async fn jaeger_dependencies(
    State(st): State<ApiState>,
    Query(p): Params,
) -> Result<Json<Value>, JaegerError> {
    let end = get_u64(&p, "endTs")?.map_or(now_ns(), |ms| ms.saturating_mul(1_000_000));
    let lookback =
        get_u64(&p, "lookback")?.map_or(86_400_000_000_000, |ms| ms.saturating_mul(1_000_000));
    let start = end.saturating_sub(lookback);
    if start >= end {
        return Err(bad("lookback must be positive").into());
    }
    let edges = run(&st, move |q| q.dependencies(start, end)).await?;
    let data: Vec<Value> = edges
        .iter()
        .map(|e| json!({"parent": e.caller, "child": e.callee, "callCount": e.calls}))
        .collect();
    let n = data.len();
    Ok(envelope(Value::Array(data), n))
}

fn jaeger_value(key: &str, v: &AnyValue) -> Value {
    match v {
        AnyValue::Bool(b) => json!({"key": key, "type": "bool", "value": b}),
        AnyValue::Int(i) => json!({"key": key, "type": "int64", "value": i}),
        AnyValue::Double(d) => json!({"key": key, "type": "float64", "value": d}),
        AnyValue::Bytes(b) => json!({"key": key, "type": "binary", "value": hex::encode(b)}),
        other => json!({"key": key, "type": "string", "value": other.to_text()}),
    }
}

fn jaeger_tags(attrs: &[(String, AnyValue)]) -> Vec<Value> {
    attrs.iter().map(|(k, v)| jaeger_value(k, v)).collect()
}

/// A trace in Jaeger's JSON shape: spans with `references` and a
/// `processID`, processes keyed `p1`, `p2`..., times in microseconds.
pub fn jaeger_trace_json(id: &TraceId, spans: &[Span]) -> Value {
    let mut processes: Vec<(Arc<Resource>, String)> = Vec::new();
    let mut out_spans = Vec::with_capacity(spans.len());
    for s in spans {
        let pid = match processes
            .iter()
            .find(|(r, _)| Arc::ptr_eq(r, &s.resource) || **r == *s.resource)
        {
            Some((_, pid)) => pid.clone(),
            None => {
                let pid = format!("p{}", processes.len() + 1);
                processes.push((s.resource.clone(), pid.clone()));
                pid
            }
        };
        let mut refs = Vec::new();
        if let Some(p) = s.parent_span_id {
            refs.push(json!({"refType": "CHILD_OF", "traceID": id.to_hex(), "spanID": p.to_hex()}));
        }
        for l in &s.links {
            refs.push(json!({"refType": "FOLLOWS_FROM", "traceID": l.trace_id.to_hex(), "spanID": l.span_id.to_hex()}));
        }
        let mut tags = jaeger_tags(&s.attributes);
        if s.kind != SpanKind::Unspecified {
            tags.push(json!({"key": "span.kind", "type": "string", "value": s.kind.as_str()}));
        }
        match s.status.code {
            Otel::Error => {
                tags.push(json!({"key": "error", "type": "bool", "value": true}));
                tags.push(json!({"key": "otel.status_code", "type": "string", "value": "ERROR"}));
                if !s.status.message.is_empty() {
                    tags.push(json!({"key": "otel.status_description", "type": "string", "value": s.status.message}));
                }
            }
            Otel::Ok => {
                tags.push(json!({"key": "otel.status_code", "type": "string", "value": "OK"}))
            }
            Otel::Unset => {}
        }
        if !s.scope.name.is_empty() {
            tags.push(json!({"key": "otel.scope.name", "type": "string", "value": s.scope.name}));
        }
        let logs: Vec<Value> = s
            .events
            .iter()
            .map(|e| {
                let mut fields = vec![json!({"key": "event", "type": "string", "value": e.name})];
                fields.extend(jaeger_tags(&e.attributes));
                json!({"timestamp": e.time_ns / 1000, "fields": fields})
            })
            .collect();
        out_spans.push(json!({
            "traceID": id.to_hex(),
            "spanID": s.span_id.to_hex(),
            "operationName": s.name,
            "references": refs,
            "startTime": s.start_time_ns / 1000,
            "duration": s.duration_ns() / 1000,
            "tags": tags,
            "logs": logs,
            "processID": pid,
            "flags": s.flags,
            "warnings": null,
        }));
    }
    let procs: serde_json::Map<String, Value> = processes
        .into_iter()
        .map(|(r, pid)| {
            let tags: Vec<Value> = r
                .attributes
                .iter()
                .filter(|(k, _)| k != "service.name")
                .map(|(k, v)| jaeger_value(k, v))
                .collect();
            (pid, json!({"serviceName": r.service_name(), "tags": tags}))
        })
        .collect();
    json!({"traceID": id.to_hex(), "spans": out_spans, "processes": procs, "warnings": null})
}

// ---------------------------------------------------------------- native

fn status_str(c: Otel) -> &'static str {
    match c {
        Otel::Unset => "unset",
        Otel::Ok => "ok",
        Otel::Error => "error",
    }
}

/// A span in the native JSON shape (nanosecond times as strings, as OTLP/JSON does).
pub fn span_json(s: &Span) -> Value {
    json!({
        "trace_id": s.trace_id.to_hex(),
        "span_id": s.span_id.to_hex(),
        "parent_span_id": s.parent_span_id.map(|p| p.to_hex()),
        "name": s.name,
        "kind": s.kind.as_str(),
        "service": s.service_name(),
        "start_time_unix_nano": s.start_time_ns.to_string(),
        "end_time_unix_nano": s.end_time_ns.to_string(),
        "duration_ns": s.duration_ns(),
        "status": {"code": status_str(s.status.code), "message": s.status.message},
        "attributes": attributes_json(&s.attributes),
        "resource": attributes_json(&s.resource.attributes),
        "scope": {"name": s.scope.name, "version": s.scope.version},
        "events": s.events.iter().map(|e| json!({
            "time_unix_nano": e.time_ns.to_string(),
            "name": e.name,
            "attributes": attributes_json(&e.attributes),
        })).collect::<Vec<_>>(),
        "links": s.links.iter().map(|l| json!({
            "trace_id": l.trace_id.to_hex(),
            "span_id": l.span_id.to_hex(),
            "attributes": attributes_json(&l.attributes),
        })).collect::<Vec<_>>(),
        "trace_state": s.trace_state,
        "flags": s.flags,
    })
}

pub fn summary_json(s: &TraceSummary) -> Value {
    json!({
        "trace_id": s.trace_id.to_hex(),
        "root_service": s.root_service,
        "root_name": s.root_name,
        "root_known": s.root_known,
        "start_time_unix_nano": s.start_ns.to_string(),
        "duration_ns": s.duration_ns(),
        "span_count": s.span_count,
        "error_count": s.error_count,
        "services": s.services,
    })
}

async fn native_trace(
    State(st): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_trace_id(&id)?;
    let logs = st.runtime.read().as_ref().map(|r| r.stores.logs.clone());
    let (summary, spans, with_logs) = run(&st, move |q| {
        let with_logs = match logs {
            Some(l) => l.span_ids_with_logs(&id)?,
            None => Vec::new(),
        };
        Ok((q.store().summary(&id)?, q.store().trace(&id)?, with_logs))
    })
    .await?;
    let Some(summary) = summary.filter(|_| !spans.is_empty()) else {
        return Err(ApiError::new(
            ErrorKind::NotFound,
            "not_found",
            "trace not found",
        ));
    };
    Ok(Json(json!({
        "summary": summary_json(&summary),
        "spans": spans
            .iter()
            .map(|s| {
                let mut v = span_json(s);
                v["has_logs"] = json!(with_logs.contains(&s.span_id));
                v
            })
            .collect::<Vec<_>>(),
        "span_ids_with_logs": with_logs.iter().map(|s| s.to_hex()).collect::<Vec<_>>(),
    })))
}

/// The time range of a native request: `start`/`end` in Unix nanoseconds,
/// or `lookback` (default `1h`) before `end` (default now).
fn native_range(p: &[(String, String)]) -> Result<(u64, u64), ApiError> {
    let lookback = get_param(p, "lookback")
        .map(|v| parse_duration(v, 1e9))
        .transpose()
        .map_err(to_api)?;
    time_range(get_u64(p, "start")?, get_u64(p, "end")?, lookback, now_ns()).map_err(to_api)
}

/// Native search: `service`, `operation`, `kind`, `attr=key=value`
/// (repeatable), `min_duration`/`max_duration` (e.g. `250ms`; a bare
/// number is milliseconds), `error=true`, `start`/`end`/`lookback`, `limit`.
async fn native_search(
    State(st): State<ApiState>,
    Query(p): Params,
) -> Result<Json<Value>, ApiError> {
    let (start_ns, end_ns) = native_range(&p)?;
    let dur = |k: &str| -> Result<Option<u64>, ApiError> {
        get_param(&p, k)
            .map(|v| parse_duration(v, 1e6).map(|d| d.as_nanos() as u64))
            .transpose()
            .map_err(to_api)
    };
    let error_only = match get_param(&p, "error") {
        None | Some("false") => false,
        Some("true") => true,
        Some(v) => return Err(bad(format!("error must be true or false, got {v:?}"))),
    };
    let attributes = p
        .iter()
        .filter(|(k, _)| k == "attr")
        .map(|(_, v)| parse_attribute(v))
        .collect::<Result<Vec<_>, _>>()
        .map_err(to_api)?;
    let q = TraceSearch {
        service: get_param(&p, "service").map(str::to_string),
        operation: get_param(&p, "operation").map(str::to_string),
        kind: get_param(&p, "kind")
            .map(parse_kind)
            .transpose()
            .map_err(to_api)?,
        attributes,
        min_duration_ns: dur("min_duration")?,
        max_duration_ns: dur("max_duration")?,
        error_only,
        start_ns,
        end_ns,
        limit: get_u64(&p, "limit")?.unwrap_or(0) as usize,
        deadline: None,
    };
    let out = run(&st, move |qs| qs.search(q)).await?;
    Ok(Json(json!({
        "traces": out.traces.iter().map(summary_json).collect::<Vec<_>>(),
        "complete": out.complete,
    })))
}

async fn native_services(
    State(st): State<ApiState>,
    Query(p): Params,
) -> Result<Json<Value>, ApiError> {
    let limit = get_u64(&p, "limit")?.map_or(MAX_NAMES, |l| (l as usize).min(MAX_NAMES));
    let names = run(&st, move |q| Ok(q.store().services(limit)?)).await?;
    Ok(Json(json!({"services": names})))
}

async fn native_operations(
    State(st): State<ApiState>,
    Path(service): Path<String>,
    Query(p): Params,
) -> Result<Json<Value>, ApiError> {
    let limit = get_u64(&p, "limit")?.map_or(MAX_NAMES, |l| (l as usize).min(MAX_NAMES));
    let ops = run(&st, move |q| Ok(q.store().operations(&service, limit)?)).await?;
    Ok(Json(json!({
        "operations": ops.iter().map(|o| json!({"name": o.name, "kind": o.kind.as_str()})).collect::<Vec<_>>(),
    })))
}

fn step_param(p: &[(String, String)]) -> Result<Option<Duration>, ApiError> {
    get_param(p, "step")
        .map(|v| parse_duration(v, 1e9))
        .transpose()
        .map_err(to_api)
}

/// RED overview of one service: totals, series and per-operation figures.
async fn native_service_overview(
    State(st): State<ApiState>,
    Path(service): Path<String>,
    Query(p): Params,
) -> Result<Json<Value>, ApiError> {
    let (start, end) = native_range(&p)?;
    let step = step_param(&p)?;
    let svc = service.clone();
    let mut all = run(&st, move |q| q.overview(Some(&svc), start, end, step)).await?;
    match all.pop() {
        Some(o) => Ok(Json(json!(o))),
        None => Err(ApiError::new(
            ErrorKind::NotFound,
            "not_found",
            format!("no spans of service {service:?} in the time range"),
        )),
    }
}

/// RED totals and series of every service.
async fn native_overview(
    State(st): State<ApiState>,
    Query(p): Params,
) -> Result<Json<Value>, ApiError> {
    let (start, end) = native_range(&p)?;
    let step = step_param(&p)?;
    let all = run(&st, move |q| q.overview(None, start, end, step)).await?;
    Ok(Json(json!({"services": all})))
}

async fn native_dependencies(
    State(st): State<ApiState>,
    Query(p): Params,
) -> Result<Json<Value>, ApiError> {
    let (start, end) = native_range(&p)?;
    let edges = run(&st, move |q| q.dependencies(start, end)).await?;
    Ok(Json(json!({
        "edges": edges.iter().map(|e| json!({
            "caller": e.caller, "callee": e.callee, "calls": e.calls, "errors": e.errors,
        })).collect::<Vec<_>>(),
    })))
}
