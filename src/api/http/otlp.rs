//! OTLP/HTTP receiver: `POST /v1/traces`, `/v1/metrics`, `/v1/logs` with
//! protobuf or JSON bodies, optionally gzip-compressed, chunked or not.
//! Responses use the request's content type; errors carry a
//! `google.rpc.Status` body and, when retryable, `Retry-After`.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;

use crate::api::error::ApiError;
use crate::ingest::body::{read_body, Encoding};
use crate::ingest::otlp::{encode_response, encode_status};
use crate::ingest::{IngestError, PayloadFormat, Pipeline};
use crate::model::Signal;
use crate::telemetry::Telemetry;

#[derive(Clone)]
pub struct OtlpHttpState {
    pub pipeline: Arc<Pipeline>,
    pub telemetry: Arc<Telemetry>,
    pub max_body_bytes: u64,
}

pub fn otlp_router(state: OtlpHttpState) -> Router {
    Router::new()
        .route("/v1/traces", post(traces))
        .route("/v1/metrics", post(metrics))
        .route("/v1/logs", post(logs))
        .with_state(state)
}

async fn traces(State(st): State<OtlpHttpState>, req: Request) -> Response {
    handle(st, Signal::Traces, req).await
}

async fn metrics(State(st): State<OtlpHttpState>, req: Request) -> Response {
    handle(st, Signal::Metrics, req).await
}

async fn logs(State(st): State<OtlpHttpState>, req: Request) -> Response {
    handle(st, Signal::Logs, req).await
}

fn header_str(h: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

async fn handle(st: OtlpHttpState, signal: Signal, req: Request) -> Response {
    let started = Instant::now();
    let (parts, body) = req.into_parts();
    let ct = header_str(&parts.headers, header::CONTENT_TYPE).unwrap_or("");
    let Some(format) = PayloadFormat::from_content_type(ct) else {
        // No format to answer in: use JSON, which any client can read.
        let e = IngestError::UnsupportedContentType(ct.to_string());
        return error_response(&st, signal, PayloadFormat::Json, e);
    };
    let result = ingest(&st, signal, format, &parts.headers, body).await;
    let labels = [signal.as_str(), "http"];
    st.telemetry
        .ingest_latency
        .with_label_values(&labels)
        .observe(started.elapsed().as_secs_f64());
    match result {
        Ok(accepted) => {
            st.telemetry
                .ingest_requests
                .with_label_values(&[signal.as_str(), "http", "ok"])
                .inc();
            let body = encode_response(signal, format, &accepted);
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, format.content_type())],
                body,
            )
                .into_response()
        }
        Err(e) => error_response(&st, signal, format, e),
    }
}

async fn ingest(
    st: &OtlpHttpState,
    signal: Signal,
    format: PayloadFormat,
    headers: &HeaderMap,
    body: Body,
) -> Result<crate::ingest::Accepted, IngestError> {
    let encoding = Encoding::from_header(header_str(headers, header::CONTENT_ENCODING))?;
    let content_length = header_str(headers, header::CONTENT_LENGTH).and_then(|v| v.parse().ok());
    let read = read_body(
        body,
        content_length,
        encoding,
        st.max_body_bytes,
        st.pipeline.budget(),
    )
    .await?;
    st.telemetry
        .ingest_bytes
        .with_label_values(&[signal.as_str(), "http"])
        .inc_by(read.wire_len as u64);
    let result = st.pipeline.ingest_body(signal, format, read.bytes).await;
    drop(read.reservation);
    result
}

fn error_response(
    st: &OtlpHttpState,
    signal: Signal,
    format: PayloadFormat,
    e: IngestError,
) -> Response {
    st.telemetry
        .ingest_requests
        .with_label_values(&[signal.as_str(), "http", e.code()])
        .inc();
    let api = ApiError::from_ingest(&e, st.pipeline.retry_after());
    if e.retryable() {
        tracing::warn!(signal = signal.as_str(), error = %e, "ingest request refused");
    } else {
        tracing::debug!(signal = signal.as_str(), error = %e, "bad ingest request");
    }
    let body = encode_status(format, api.grpc_code() as i32, &api.message);
    let mut resp = (
        api.http_status(),
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(format.content_type()),
        )],
        body,
    )
        .into_response();
    api.add_headers(&mut resp);
    resp
}
