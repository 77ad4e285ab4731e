//! Alerting and SLO routes (documented in `docs/alerting.md`):
//!
//! - Prometheus compatible: `GET /api/v1/rules`, `GET /api/v1/alerts`.
//! - Alertmanager v2 compatible: `POST /api/v2/alerts` (receive alerts from
//!   Prometheus or vmalert), `GET /api/v2/alerts`, silences
//!   (`/api/v2/silences`, `/api/v2/silence/{id}`) and `/api/v2/status`.
//! - Management (tern JSON): rule groups and rule-file import under
//!   `/api/v1/alerting/rules`, `/api/v1/alerting/history`, channels with
//!   their delivery status, the routing tree, silences, and SLOs under
//!   `/api/v1/slos` with reports and burn-down.
//!
//! Service calls touch the meta store, so they run on the blocking pool.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::analysis::alerting::channels::ChannelDef;
use crate::analysis::alerting::notify::{Alert, Matcher, RoutingConfig, Silence};
use crate::analysis::alerting::rules::RuleGroup;
use crate::analysis::alerting::service::AlertingService;
use crate::analysis::alerting::state::AlertState;
use crate::analysis::alerting::time::{format_rfc3339, parse_rfc3339};
use crate::analysis::alerting::AlertingError;
use crate::analysis::slo::{self, SloDef};
use crate::api::error::ApiError;
use crate::api::ApiState;
use crate::query::promql::format_value;
use crate::storage::meta::HistoryQuery;

pub fn router() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/rules", get(prom_rules))
        .route("/api/v1/alerts", get(prom_alerts))
        .route("/api/v2/alerts", get(am_alerts).post(am_post_alerts))
        .route("/api/v2/silences", get(am_silences).post(am_post_silence))
        .route(
            "/api/v2/silence/{id}",
            get(am_silence).delete(am_expire_silence),
        )
        .route("/api/v2/status", get(am_status))
        .route(
            "/api/v1/alerting/rules",
            get(list_groups).post(import_rules),
        )
        .route(
            "/api/v1/alerting/rules/{group}",
            get(get_group).put(put_group).delete(delete_group),
        )
        .route("/api/v1/alerting/history", get(history))
        .route("/api/v1/alerting/channels", get(list_channels))
        .route(
            "/api/v1/alerting/channels/{name}",
            axum::routing::put(put_channel).delete(delete_channel),
        )
        .route(
            "/api/v1/alerting/routing",
            get(get_routing).put(put_routing),
        )
        .route(
            "/api/v1/alerting/silences",
            get(list_silences).post(post_silence),
        )
        .route(
            "/api/v1/alerting/silences/{id}",
            axum::routing::delete(expire_silence),
        )
        .route("/api/v1/slos", get(list_slos))
        .route(
            "/api/v1/slos/{name}",
            get(get_slo).put(put_slo).delete(delete_slo),
        )
        .route("/api/v1/slos/{name}/burndown", get(slo_burndown))
}

fn service(st: &ApiState) -> Result<Arc<AlertingService>, ApiError> {
    let guard = st.runtime.read();
    let r = guard.as_ref().ok_or_else(|| {
        ApiError::new(
            crate::api::error::ErrorKind::Unavailable,
            "starting",
            "the server is still starting",
        )
    })?;
    r.alerting
        .clone()
        .ok_or_else(|| ApiError::from_alerting(&AlertingError::Disabled))
}

/// Runs `f` on the blocking pool with the service.
async fn blocking<T: Send + 'static>(
    st: &ApiState,
    f: impl FnOnce(&AlertingService) -> Result<T, AlertingError> + Send + 'static,
) -> Result<T, ApiError> {
    let svc = service(st)?;
    tokio::task::spawn_blocking(move || f(&svc))
        .await
        .map_err(|e| {
            ApiError::from_alerting(&AlertingError::Internal(format!("task failed: {e}")))
        })?
        .map_err(|e| ApiError::from_alerting(&e))
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::from_alerting(&AlertingError::InvalidRequest(msg.into()))
}

fn body_text(body: &Bytes) -> Result<&str, ApiError> {
    std::str::from_utf8(body).map_err(|_| bad("the body is not UTF-8"))
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| bad(format!("invalid JSON body: {e}")))
}

fn secs(ms: i64) -> f64 {
    ms as f64 / 1000.0
}

fn ok(data: Value) -> Json<Value> {
    Json(json!({"status": "success", "data": data}))
}

// ---- Prometheus shapes ------------------------------------------------

/// A value as Prometheus shows an alert's (Go's `%e` with the shortest
/// precision: `1e+00`, `2.5e-01`).
fn go_exp(v: f64) -> String {
    if !v.is_finite() {
        return format_value(v);
    }
    let s = format!("{v:e}");
    match s.split_once('e') {
        Some((m, e)) => {
            let (sign, digits) = match e.strip_prefix('-') {
                Some(d) => ('-', d),
                None => ('+', e),
            };
            format!("{m}e{sign}{digits:0>2}")
        }
        None => s,
    }
}

fn prom_alert(a: &crate::analysis::alerting::state::ActiveAlert) -> Value {
    let mut v = json!({
        "labels": a.labels,
        "annotations": a.annotations,
        "state": a.state.as_str(),
        "activeAt": format_rfc3339(a.active_at_ms),
        "value": go_exp(a.value),
    });
    if let Some(k) = a.keep_firing_since_ms {
        v["keepFiringSince"] = json!(format_rfc3339(k));
    }
    if let Some(r) = a.resolved_at_ms {
        v["resolvedAt"] = json!(format_rfc3339(r));
    }
    v
}

#[derive(Deserialize)]
struct RulesParams {
    /// `alert` or `record`: only rules of that type (as Prometheus).
    #[serde(rename = "type")]
    kind: Option<String>,
}

async fn prom_rules(
    State(st): State<ApiState>,
    Query(p): Query<RulesParams>,
) -> Result<Json<Value>, ApiError> {
    let svc = service(&st)?;
    let want_recording = match p.kind.as_deref() {
        None | Some("") => None,
        Some("alert") => Some(false),
        Some("record") => Some(true),
        Some(other) => {
            return Err(bad(format!(
                "unsupported rule type {other:?}: use alert or record"
            )))
        }
    };
    let groups: Vec<Value> = svc
        .rule_views()
        .into_iter()
        .map(|gv| {
            let (g, generated, last, took) =
                (&gv.group, gv.generated, gv.last_eval_ms, gv.eval_seconds);
            let rules: Vec<Value> = gv
                .rules
                .iter()
                .filter(|v| want_recording.is_none_or(|w| w == v.rule.recording))
                .map(|v| {
                    let r = &v.rule;
                    let health = serde_json::to_value(v.state.health).unwrap_or(json!("unknown"));
                    let last_eval = v
                        .state
                        .last_eval_ms
                        .map(format_rfc3339)
                        .unwrap_or_else(|| "0001-01-01T00:00:00Z".into());
                    let labels: BTreeMap<&String, &String> = r.def.labels.iter().collect();
                    if r.recording {
                        let mut o = json!({
                            "type": "recording",
                            "name": r.name,
                            "query": r.query.describe(),
                            "health": health,
                            "lastError": v.state.last_error.clone().unwrap_or_default(),
                            "evaluationTime": v.state.eval_seconds,
                            "lastEvaluation": last_eval,
                        });
                        // Prometheus omits empty labels of recording rules.
                        if !labels.is_empty() {
                            o["labels"] = json!(labels);
                        }
                        o
                    } else {
                        let alerts: Vec<Value> = v
                            .state
                            .alerts
                            .values()
                            .filter(|a| a.state != AlertState::Resolved)
                            .map(prom_alert)
                            .collect();
                        json!({
                            "type": "alerting",
                            "name": r.name,
                            "query": r.query.describe(),
                            "duration": secs(r.for_.ms()),
                            "keepFiringFor": secs(r.keep_firing_for.ms()),
                            "labels": labels,
                            "annotations": r.def.annotations,
                            "alerts": alerts,
                            "state": v.state.rule_state().as_str(),
                            "health": health,
                            "lastError": v.state.last_error.clone().unwrap_or_default(),
                            "evaluationTime": v.state.eval_seconds,
                            "lastEvaluation": last_eval,
                        })
                    }
                })
                .collect();
            json!({
                "name": g.name,
                "file": if generated { "slo" } else { "api" },
                "interval": secs(g.interval.ms()),
                "limit": g.limit,
                "rules": rules,
                "evaluationTime": took,
                "lastEvaluation": last.map(format_rfc3339).unwrap_or_else(|| "0001-01-01T00:00:00Z".into()),
            })
        })
        .collect();
    Ok(ok(json!({ "groups": groups })))
}

async fn prom_alerts(State(st): State<ApiState>) -> Result<Json<Value>, ApiError> {
    let svc = service(&st)?;
    let alerts: Vec<Value> = svc
        .rule_views()
        .into_iter()
        .flat_map(|g| g.rules)
        .flat_map(|v| {
            v.state
                .alerts
                .values()
                .filter(|a| matches!(a.state, AlertState::Pending | AlertState::Firing))
                .map(prom_alert)
                .collect::<Vec<_>>()
        })
        .collect();
    Ok(ok(json!({ "alerts": alerts })))
}

// ---- Alertmanager v2 --------------------------------------------------

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PostableAlert {
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    #[serde(default)]
    starts_at: Option<String>,
    #[serde(default)]
    ends_at: Option<String>,
    #[serde(default, rename = "generatorURL")]
    generator_url: String,
}

/// Most alerts one POST may carry.
const MAX_POSTED_ALERTS: usize = 10_000;

async fn am_post_alerts(State(st): State<ApiState>, body: Bytes) -> Result<Response, ApiError> {
    let posted: Vec<PostableAlert> = parse_json(&body)?;
    if posted.len() > MAX_POSTED_ALERTS {
        return Err(bad(format!(
            "at most {MAX_POSTED_ALERTS} alerts per request"
        )));
    }
    let now = crate::analysis::alerting::time::now_ms();
    let mut alerts = Vec::with_capacity(posted.len());
    for p in posted {
        let parse = |s: &Option<String>| -> Result<Option<i64>, ApiError> {
            match s.as_deref() {
                None | Some("") | Some("0001-01-01T00:00:00Z") => Ok(None),
                Some(t) => parse_rfc3339(t).map(Some).map_err(bad),
            }
        };
        let starts = parse(&p.starts_at)?.unwrap_or(now);
        let ends = parse(&p.ends_at)?;
        if p.labels.len() > 128
            || p.labels
                .iter()
                .any(|(k, v)| k.len() > 256 || v.len() > 16384)
        {
            return Err(bad("too many or too large labels"));
        }
        alerts.push(Alert {
            labels: p.labels,
            annotations: p.annotations,
            starts_at_ms: starts,
            ends_at_ms: ends,
            generator_url: p.generator_url,
            updated_at_ms: now,
        });
    }
    blocking(&st, move |s| s.receive_alerts(alerts)).await?;
    Ok(StatusCode::OK.into_response())
}

async fn am_alerts(State(st): State<ApiState>) -> Result<Json<Value>, ApiError> {
    let svc = service(&st)?;
    let now = svc.now();
    let out: Vec<Value> = svc
        .alert_statuses()
        .into_iter()
        .filter(|s| !s.alert.resolved(now))
        .map(|s| {
            let suppressed = !s.silenced_by.is_empty() || !s.inhibited_by.is_empty();
            json!({
                "labels": s.alert.labels,
                "annotations": s.alert.annotations,
                "startsAt": format_rfc3339(s.alert.starts_at_ms),
                "endsAt": s.alert.ends_at_ms.map(format_rfc3339),
                "updatedAt": format_rfc3339(s.alert.updated_at_ms),
                "generatorURL": s.alert.generator_url,
                "fingerprint": s.fingerprint,
                "receivers": s.receivers.iter().map(|r| json!({"name": r})).collect::<Vec<_>>(),
                "status": {
                    "state": if suppressed { "suppressed" } else { "active" },
                    "silencedBy": s.silenced_by,
                    "inhibitedBy": s.inhibited_by,
                },
            })
        })
        .collect();
    Ok(Json(Value::Array(out)))
}

fn am_matcher(m: &Matcher) -> Value {
    use crate::analysis::alerting::notify::MatchKind;
    json!({
        "name": m.name,
        "value": m.value,
        "isRegex": matches!(m.op, MatchKind::Re | MatchKind::NotRe),
        "isEqual": matches!(m.op, MatchKind::Eq | MatchKind::Re),
    })
}

fn am_silence_view(s: &Silence, now: i64) -> Value {
    json!({
        "id": s.id,
        "matchers": s.matchers.iter().map(am_matcher).collect::<Vec<_>>(),
        "startsAt": format_rfc3339(s.starts_at_ms),
        "endsAt": format_rfc3339(s.ends_at_ms),
        "updatedAt": format_rfc3339(s.starts_at_ms),
        "createdBy": s.created_by,
        "comment": s.comment,
        "status": {"state": s.state(now)},
    })
}

async fn am_silences(State(st): State<ApiState>) -> Result<Json<Value>, ApiError> {
    let (list, now) = blocking(&st, |s| Ok((s.silences()?, s.now()))).await?;
    Ok(Json(Value::Array(
        list.iter().map(|s| am_silence_view(s, now)).collect(),
    )))
}

async fn am_silence(
    State(st): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (list, now) = blocking(&st, |s| Ok((s.silences()?, s.now()))).await?;
    let s = list.iter().find(|s| s.id == id).ok_or_else(|| {
        ApiError::from_alerting(&AlertingError::NotFound(format!("silence {id:?}")))
    })?;
    Ok(Json(am_silence_view(s, now)))
}

/// Alertmanager's `postableSilence`: matchers as objects, RFC 3339 times.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AmPostableSilence {
    #[serde(default)]
    id: Option<String>,
    matchers: Vec<Matcher>,
    starts_at: String,
    ends_at: String,
    created_by: String,
    #[serde(default)]
    comment: String,
}

async fn am_post_silence(State(st): State<ApiState>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let p: AmPostableSilence = parse_json(&body)?;
    let silence = Silence {
        id: p.id.unwrap_or_default(),
        matchers: p.matchers,
        starts_at_ms: parse_rfc3339(&p.starts_at).map_err(bad)?,
        ends_at_ms: parse_rfc3339(&p.ends_at).map_err(bad)?,
        created_by: p.created_by,
        comment: p.comment,
        expiry_handled: false,
    };
    let id = blocking(&st, move |s| s.put_silence(silence)).await?;
    Ok(Json(json!({ "silenceID": id })))
}

async fn am_expire_silence(
    State(st): State<ApiState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    blocking(&st, move |s| s.expire_silence(&id)).await?;
    Ok(StatusCode::OK)
}

/// Enough of Alertmanager's status for clients that check it first.
async fn am_status(State(st): State<ApiState>) -> Result<Json<Value>, ApiError> {
    let routing = blocking(&st, |s| s.routing()).await?;
    Ok(Json(json!({
        "cluster": {"status": "ready", "peers": []},
        "versionInfo": {"version": env!("CARGO_PKG_VERSION"), "branch": "", "buildDate": "", "buildUser": "", "goVersion": "", "revision": ""},
        "config": {"original": serde_yaml::to_string(&routing).unwrap_or_default()},
        "uptime": format_rfc3339(crate::analysis::alerting::time::now_ms() - (st.telemetry.uptime_secs() * 1000.0) as i64),
    })))
}

// ---- rule groups ------------------------------------------------------

#[derive(Deserialize)]
struct ImportParams {
    #[serde(default)]
    replace: bool,
}

async fn list_groups(State(st): State<ApiState>) -> Result<Json<Value>, ApiError> {
    let groups = blocking(&st, |s| s.stored_groups()).await?;
    Ok(Json(json!({ "groups": groups })))
}

/// Imports a Prometheus rule file (YAML or JSON); `?replace=true` deletes
/// the groups the file does not name.
async fn import_rules(
    State(st): State<ApiState>,
    Query(p): Query<ImportParams>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let text = body_text(&body)?.to_string();
    let names = blocking(&st, move |s| s.import_rule_file(&text, p.replace)).await?;
    Ok(Json(json!({ "imported": names })))
}

async fn get_group(
    State(st): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let g = blocking(&st, move |s| s.group(&name)).await?;
    Ok(Json(json!(g)))
}

async fn put_group(
    State(st): State<ApiState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let text = body_text(&body)?;
    let mut g: RuleGroup = serde_yaml::from_str(text).map_err(|e| {
        ApiError::from_alerting(&AlertingError::InvalidRule(format!("rule group: {e}")))
    })?;
    if g.name.is_empty() {
        g.name = name.clone();
    }
    if g.name != name {
        return Err(bad(format!(
            "the body names group {:?}, the path {name:?}",
            g.name
        )));
    }
    let saved = g.clone();
    blocking(&st, move |s| s.put_groups(vec![g], false)).await?;
    Ok(Json(json!(saved)))
}

async fn delete_group(
    State(st): State<ApiState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    blocking(&st, move |s| s.delete_group(&name)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct HistoryParams {
    rule: Option<String>,
    start: Option<String>,
    end: Option<String>,
    limit: Option<usize>,
}

fn time_param(s: &Option<String>) -> Result<Option<i64>, ApiError> {
    match s.as_deref() {
        None | Some("") => Ok(None),
        Some(t) => match t.parse::<f64>() {
            Ok(secs) if secs.is_finite() => Ok(Some((secs * 1000.0) as i64)),
            _ => parse_rfc3339(t).map(Some).map_err(bad),
        },
    }
}

async fn history(
    State(st): State<ApiState>,
    Query(p): Query<HistoryParams>,
) -> Result<Json<Value>, ApiError> {
    let q = HistoryQuery {
        rule_key: p.rule,
        start_ms: time_param(&p.start)?,
        end_ms: time_param(&p.end)?,
        limit: p.limit.unwrap_or(100).clamp(1, 1000),
    };
    let entries = blocking(&st, move |s| s.history(&q)).await?;
    let out: Vec<Value> = entries
        .into_iter()
        .map(|e| {
            json!({
                "time": format_rfc3339(e.t_ms),
                "rule": e.rule_key,
                "fingerprint": e.fingerprint,
                "from": e.from_state,
                "to": e.to_state,
                "value": e.value,
                "labels": e.labels,
            })
        })
        .collect();
    Ok(Json(json!({ "history": out })))
}

// ---- channels and routing ---------------------------------------------

async fn list_channels(State(st): State<ApiState>) -> Result<Json<Value>, ApiError> {
    let (defs, status) = blocking(&st, |s| Ok((s.channels()?, s.channel_status()))).await?;
    let out: Vec<Value> = defs
        .into_iter()
        .map(|d| {
            let mut v = json!(d);
            // Secrets are write-only.
            if let Some(o) = v.as_object_mut() {
                if o.contains_key("password") {
                    o.insert("password".into(), json!("<secret>"));
                }
            }
            v["status"] = json!(status.get(&d.name).cloned().unwrap_or_default());
            v
        })
        .collect();
    Ok(Json(json!({ "channels": out })))
}

async fn put_channel(
    State(st): State<ApiState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let mut v: Value = parse_json(&body)?;
    if let Some(o) = v.as_object_mut() {
        o.entry("name").or_insert(json!(name.clone()));
    }
    let def: ChannelDef = serde_json::from_value(v).map_err(|e| bad(format!("channel: {e}")))?;
    if def.name != name {
        return Err(bad(format!(
            "the body names channel {:?}, the path {name:?}",
            def.name
        )));
    }
    let saved = def.clone();
    blocking(&st, move |s| s.put_channel(def)).await?;
    Ok(Json(json!(saved)))
}

async fn delete_channel(
    State(st): State<ApiState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    blocking(&st, move |s| s.delete_channel(&name)).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn get_routing(State(st): State<ApiState>) -> Result<Json<Value>, ApiError> {
    let r = blocking(&st, |s| s.routing()).await?;
    Ok(Json(json!(r)))
}

async fn put_routing(State(st): State<ApiState>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let text = body_text(&body)?;
    let r: RoutingConfig = serde_yaml::from_str(text).map_err(|e| bad(format!("routing: {e}")))?;
    let saved = r.clone();
    blocking(&st, move |s| s.put_routing(r)).await?;
    Ok(Json(json!(saved)))
}

// ---- silences -----------------------------------------------------------

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PostableSilence {
    #[serde(default)]
    id: Option<String>,
    matchers: Vec<Matcher>,
    #[serde(default)]
    starts_at: Option<String>,
    #[serde(default)]
    ends_at: Option<String>,
    /// Alternative to endsAt: a duration from the start, such as `2h`.
    #[serde(default)]
    duration: Option<String>,
    created_by: String,
    #[serde(default)]
    comment: String,
}

fn silence_view(s: &Silence, now: i64) -> Value {
    json!({
        "id": s.id,
        "matchers": s.matchers,
        "startsAt": format_rfc3339(s.starts_at_ms),
        "endsAt": format_rfc3339(s.ends_at_ms),
        "createdBy": s.created_by,
        "comment": s.comment,
        "status": {"state": s.state(now)},
    })
}

async fn list_silences(State(st): State<ApiState>) -> Result<Json<Value>, ApiError> {
    let (list, now) = blocking(&st, |s| Ok((s.silences()?, s.now()))).await?;
    Ok(Json(json!({
        "silences": list.iter().map(|s| silence_view(s, now)).collect::<Vec<_>>()
    })))
}

async fn post_silence(State(st): State<ApiState>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let p: PostableSilence = parse_json(&body)?;
    let now = service(&st)?.now();
    let starts = match p.starts_at.as_deref() {
        None | Some("") => now,
        Some(t) => parse_rfc3339(t).map_err(bad)?,
    };
    let ends = match (p.ends_at.as_deref(), p.duration.as_deref()) {
        (Some(t), None) => parse_rfc3339(t).map_err(bad)?,
        (None, Some(d)) => {
            starts
                + crate::analysis::alerting::rules::PromDuration::parse(d)
                    .map_err(bad)?
                    .ms()
        }
        _ => return Err(bad("a silence needs exactly one of endsAt and duration")),
    };
    let silence = Silence {
        id: p.id.unwrap_or_default(),
        matchers: p.matchers,
        starts_at_ms: starts,
        ends_at_ms: ends,
        created_by: p.created_by,
        comment: p.comment,
        expiry_handled: false,
    };
    let id = blocking(&st, move |s| s.put_silence(silence)).await?;
    Ok(Json(json!({ "silenceID": id })))
}

async fn expire_silence(
    State(st): State<ApiState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    blocking(&st, move |s| s.expire_silence(&id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- SLOs -------------------------------------------------------------

fn slo_json(def: &SloDef, report: Result<slo::SloReport, String>) -> Value {
    let mut v = json!({ "slo": def });
    match report {
        Ok(r) => v["report"] = json!(r),
        Err(e) => v["error"] = json!(e),
    }
    v
}

async fn list_slos(State(st): State<ApiState>) -> Result<Json<Value>, ApiError> {
    let out = blocking(&st, |s| {
        let now = s.now();
        Ok(s.slos()?
            .iter()
            .map(|d| slo_json(d, slo::report(d, s.sources(), now)))
            .collect::<Vec<_>>())
    })
    .await?;
    Ok(Json(json!({ "slos": out })))
}

async fn get_slo(
    State(st): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let out = blocking(&st, move |s| {
        let d = s.slo(&name)?;
        Ok(slo_json(&d, slo::report(&d, s.sources(), s.now())))
    })
    .await?;
    Ok(Json(out))
}

async fn put_slo(
    State(st): State<ApiState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let mut v: Value = parse_json(&body)?;
    if let Some(o) = v.as_object_mut() {
        o.entry("name").or_insert(json!(name.clone()));
    }
    let def: SloDef = serde_json::from_value(v).map_err(|e| bad(format!("slo: {e}")))?;
    if def.name != name {
        return Err(bad(format!(
            "the body names slo {:?}, the path {name:?}",
            def.name
        )));
    }
    let saved = def.clone();
    blocking(&st, move |s| s.put_slo(def)).await?;
    Ok(Json(json!(saved)))
}

async fn delete_slo(
    State(st): State<ApiState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    blocking(&st, move |s| s.delete_slo(&name)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct BurndownParams {
    points: Option<usize>,
}

async fn slo_burndown(
    State(st): State<ApiState>,
    Path(name): Path<String>,
    Query(p): Query<BurndownParams>,
) -> Result<Json<Value>, ApiError> {
    let points = p.points.unwrap_or(30).clamp(1, 200);
    let out = blocking(&st, move |s| {
        let d = s.slo(&name)?;
        slo::burn_down(&d, s.sources(), s.now(), points).map_err(AlertingError::Internal)
    })
    .await?;
    let pts: Vec<Value> = out
        .iter()
        .map(|p| json!({"time": format_rfc3339(p.t_ms), "remaining_percent": p.remaining_percent, "consumed": p.consumed}))
        .collect();
    Ok(Json(json!({ "points": pts })))
}
