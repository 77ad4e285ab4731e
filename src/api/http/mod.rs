//! HTTP routers: the API/UI server (`server.http_addr`) and the OTLP/HTTP
//! receiver (`server.otlp_http_addr`).

pub mod alerting;
pub mod logs;
pub mod metrics_store;
pub mod otlp;
pub mod prom;
pub mod sql;
pub mod traces;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use super::error::{ApiError, ErrorKind};
use super::{ApiState, Phase};
use crate::model::{LabelMatcher, Labels, MetricMeta, Series, Signal};
use crate::query::promql::SeriesSource;
use crate::query::sql::{SqlEngine, SqlLimits};
use crate::storage::{MetricStore, StorageError};
use std::sync::Arc;

/// The API router: health, readiness, self-metrics, status, the trace, log
/// and metrics APIs, the Prometheus query API over the metrics store, the
/// SQL API, and the embedded web UI for every other path (`api::ui`).
pub fn api_router(state: ApiState, sql_limits: SqlLimits, prom_limits: prom::PromLimits) -> Router {
    let promql = prom::prom_router(Arc::new(RuntimeSeries(state.clone())), prom_limits);
    let sql = match SqlEngine::new(sql_limits, state.telemetry.registry()) {
        Ok(engine) => sql::router(Arc::new(engine)),
        Err(e) => {
            tracing::error!(error = %e, "the SQL engine cannot start; /api/v1/sql is unavailable");
            Router::new()
        }
    };
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/v1/status", get(status))
        .merge(traces::router())
        .merge(logs::router())
        .merge(metrics_store::router())
        .merge(sql)
        .merge(alerting::router())
        .fallback(super::ui::fallback)
        .with_state(state)
        .merge(promql)
}

/// The metrics store as PromQL's series source; it answers "unavailable"
/// until start-up has opened the stores.
struct RuntimeSeries(ApiState);

impl RuntimeSeries {
    fn store(&self) -> Result<Arc<dyn MetricStore>, StorageError> {
        self.0
            .runtime
            .read()
            .as_ref()
            .map(|r| r.stores.metrics.clone())
            .ok_or_else(|| StorageError::Unavailable("the server is still starting".into()))
    }
}

impl SeriesSource for RuntimeSeries {
    fn select(
        &self,
        matchers: &[LabelMatcher],
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<Series>, StorageError> {
        self.store()?.select(matchers, start_ms, end_ms)
    }

    fn series(
        &self,
        matchers: &[LabelMatcher],
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<Labels>, StorageError> {
        self.store()?.series(matchers, start_ms, end_ms)
    }

    fn label_names(
        &self,
        matchers: &[LabelMatcher],
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<String>, StorageError> {
        self.store()?.label_names(matchers, start_ms, end_ms)
    }

    fn label_values(
        &self,
        name: &str,
        matchers: &[LabelMatcher],
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<String>, StorageError> {
        self.store()?.label_values(name, matchers, start_ms, end_ms)
    }

    fn metadata(&self) -> Result<Vec<MetricMeta>, StorageError> {
        self.store()?.metadata()
    }

    fn settled_generation(&self) -> Option<u64> {
        self.store().ok()?.settled_generation()
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(st): State<ApiState>) -> Response {
    let phase = st.phase.get();
    let body = Json(serde_json::json!({"status": phase.as_str()}));
    if phase == Phase::Ready {
        (StatusCode::OK, body).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
    }
}

async fn metrics(State(st): State<ApiState>) -> Response {
    if let Some(r) = st.runtime.read().as_ref() {
        let w = (r.wal_stats)();
        st.telemetry.wal_disk_bytes.set(w.disk_bytes as i64);
        st.telemetry.wal_segments.set(w.segments as i64);
        st.telemetry.wal_queue_bytes.set(w.queue_bytes as i64);
        st.telemetry.wal_last_seq.set(w.last_seq as i64);
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        st.telemetry.render(),
    )
        .into_response()
}

async fn status(State(st): State<ApiState>) -> Result<Json<serde_json::Value>, ApiError> {
    let guard = st.runtime.read();
    let r = guard.as_ref().ok_or_else(|| {
        ApiError::new(
            ErrorKind::Unavailable,
            "starting",
            "the server is still starting",
        )
    })?;
    let w = (r.wal_stats)();
    let store = |s: Signal| {
        let stats = match s {
            Signal::Traces => r.stores.traces.stats(),
            Signal::Metrics => r.stores.metrics.stats(),
            Signal::Logs => r.stores.logs.stats(),
        };
        serde_json::json!({"records": stats.records, "disk_bytes": stats.disk_bytes})
    };
    Ok(Json(serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "phase": st.phase.get().as_str(),
        "uptime_seconds": st.telemetry.uptime_secs(),
        "stores": {
            "traces": store(Signal::Traces),
            "metrics": store(Signal::Metrics),
            "logs": store(Signal::Logs),
        },
        "wal": {
            "disk_bytes": w.disk_bytes,
            "segments": w.segments,
            "last_seq": w.last_seq,
            "queue_bytes": w.queue_bytes,
        },
        "ingest_inflight_bytes": r.pipeline.budget().used_bytes(),
    })))
}
