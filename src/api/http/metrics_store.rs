//! Routes of the metrics store on the API server:
//!
//! - `POST /api/v1/write`: Prometheus remote_write 1.0 (snappy block
//!   compressed protobuf). 204 when stored; 400 for an undecodable or
//!   invalid request (too many or too large labels, bad label names), or
//!   when samples were refused (new series over the cardinality limits,
//!   timestamps more than `ingest.max_future_skew` ahead): the others are
//!   stored, as Prometheus does for rejected samples; 413
//!   over the body cap; 429/503 with `Retry-After` when ingest is saturated.
//! - `GET /api/v1/status/tsdb?limit=N`: series counts by metric name and
//!   label, in the shape of Prometheus' TSDB status.

use std::time::Instant;

use axum::extract::{Query, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use crate::api::error::{ApiError, ErrorKind};
use crate::api::ApiState;
use crate::ingest::body::{read_body, Encoding};
use crate::ingest::IngestError;

pub fn router() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/write", post(remote_write))
        .route("/api/v1/status/tsdb", get(tsdb_status))
}

fn starting() -> ApiError {
    ApiError::new(
        ErrorKind::Unavailable,
        "starting",
        "the server is still starting",
    )
}

async fn remote_write(State(st): State<ApiState>, req: Request) -> Response {
    let started = Instant::now();
    let Some(pipeline) = st.runtime.read().as_ref().map(|r| r.pipeline.clone()) else {
        return starting().into_response();
    };
    let (parts, body) = req.into_parts();
    let hv = |n: header::HeaderName| parts.headers.get(n).and_then(|v| v.to_str().ok());
    let result = async {
        match hv(header::CONTENT_ENCODING).map(|s| s.trim().to_ascii_lowercase()) {
            Some(e) if e == "snappy" => {}
            None => {}
            Some(other) => {
                return Err(IngestError::UnsupportedEncoding(format!(
                    "{other} (remote_write bodies are snappy-compressed)"
                )))
            }
        }
        let content_length = hv(header::CONTENT_LENGTH).and_then(|v| v.parse().ok());
        let max = pipeline.max_body_bytes();
        let read = read_body(
            body,
            content_length,
            Encoding::Identity,
            max,
            pipeline.budget(),
        )
        .await?;
        st.telemetry
            .ingest_bytes
            .with_label_values(&["metrics", "remote_write"])
            .inc_by(read.wire_len as u64);
        let r = pipeline
            .ingest_remote_write(read.bytes, max.saturating_mul(4))
            .await;
        drop(read.reservation);
        r
    }
    .await;
    st.telemetry
        .ingest_latency
        .with_label_values(&["metrics", "remote_write"])
        .observe(started.elapsed().as_secs_f64());
    let outcome = match &result {
        Ok(_) => "ok",
        Err(e) => e.code(),
    };
    st.telemetry
        .ingest_requests
        .with_label_values(&["metrics", "remote_write", outcome])
        .inc();
    match result {
        Ok(a) if a.rejected > 0 => {
            ApiError::new(ErrorKind::BadRequest, "samples_rejected", a.message).into_response()
        }
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => {
            if e.retryable() {
                tracing::warn!(error = %e, "remote_write request refused");
            }
            ApiError::from_ingest(&e, pipeline.retry_after()).into_response()
        }
    }
}

#[derive(Deserialize)]
struct TsdbParams {
    limit: Option<usize>,
}

async fn tsdb_status(
    State(st): State<ApiState>,
    Query(p): Query<TsdbParams>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let limit = p.limit.unwrap_or(10);
    if limit == 0 || limit > 10_000 {
        return Err(ApiError::new(
            ErrorKind::BadRequest,
            "bad_limit",
            "limit must be between 1 and 10000",
        ));
    }
    let store = st
        .runtime
        .read()
        .as_ref()
        .map(|r| r.stores.metrics.clone())
        .ok_or_else(starting)?;
    let c = tokio::task::spawn_blocking(move || store.cardinality(limit))
        .await
        .map_err(|e| ApiError::new(ErrorKind::Internal, "internal", format!("task failed: {e}")))?
        .map_err(|e| ApiError::new(ErrorKind::Internal, e.code(), e.to_string()))?;
    let list = |v: &[(String, u64)]| {
        v.iter()
            .map(|(n, c)| serde_json::json!({"name": n, "value": c}))
            .collect::<Vec<_>>()
    };
    Ok(Json(serde_json::json!({
        "status": "success",
        "data": {
            "headStats": {
                "numSeries": c.num_series,
                "numSamples": c.head_samples,
                "headBytes": c.head_bytes,
                "seriesBytes": c.series_bytes,
                "activeSeries": c.active_series,
            },
            "seriesCountByMetricName": list(&c.series_count_by_metric_name),
            "labelValueCountByLabelName": list(&c.label_value_count_by_label_name),
            "memoryInBytesByLabelName": list(&c.memory_in_bytes_by_label_name),
            "seriesCountByLabelValuePair": list(&c.series_count_by_label_value_pair),
        }
    })))
}
