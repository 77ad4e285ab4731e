//! The SQL API: `POST /api/v1/sql` and `GET /api/v1/sql?q=…`.
//!
//! The query comes as JSON (`{"query": "…", "limit": 100, "format":
//! "csv"}`), as a plain-text body (`text/plain` or `application/sql`), or as
//! the `q` parameter. The answer's format is `format=` or else the `Accept`
//! header: JSON (default), CSV or the Arrow IPC stream. `limit` caps the
//! rows returned (default and maximum from [`SqlLimits`]).

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};

use crate::api::error::{ApiError, ErrorKind};
use crate::api::ApiState;
use crate::query::sql::output::{self, Format};
use crate::query::sql::{Sources, SqlEngine, SqlLimits};

pub fn router(engine: Arc<SqlEngine>) -> Router<ApiState> {
    let body_limit = engine.limits().max_query_bytes + 4096;
    Router::new()
        .route("/api/v1/sql", get(get_sql).post(post_sql))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(Extension(engine))
}

fn bad(code: &'static str, msg: impl Into<String>) -> ApiError {
    ApiError::new(ErrorKind::BadRequest, code, msg)
}

/// The request, however it arrived.
#[derive(Debug, Default)]
struct Request {
    query: String,
    limit: Option<usize>,
    format: Option<Format>,
}

fn read_params(p: &HashMap<String, String>, r: &mut Request) -> Result<(), ApiError> {
    if let Some(q) = p.get("q").or_else(|| p.get("query")) {
        r.query = q.clone();
    }
    if let Some(l) = p.get("limit") {
        r.limit = Some(
            l.parse()
                .map_err(|_| bad("invalid_limit", format!("limit {l:?} is not a row count")))?,
        );
    }
    if let Some(f) = p.get("format") {
        r.format = Some(Format::from_name(f).ok_or_else(|| {
            bad(
                "invalid_format",
                format!("unknown format {f:?}; use json, csv or arrow"),
            )
        })?);
    }
    Ok(())
}

async fn get_sql(
    State(st): State<ApiState>,
    Extension(engine): Extension<Arc<SqlEngine>>,
    headers: HeaderMap,
    Query(p): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let mut r = Request::default();
    read_params(&p, &mut r)?;
    run(st, engine, &headers, r).await
}

async fn post_sql(
    State(st): State<ApiState>,
    Extension(engine): Extension<Arc<SqlEngine>>,
    headers: HeaderMap,
    Query(p): Query<HashMap<String, String>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|e| {
        let too_large = e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE;
        ApiError::new(
            if too_large {
                ErrorKind::PayloadTooLarge
            } else {
                ErrorKind::BadRequest
            },
            if too_large {
                "query_too_large"
            } else {
                "invalid_body"
            },
            format!("the request body cannot be read: {}", e.body_text()),
        )
    })?;
    let mut r = Request::default();
    read_params(&p, &mut r)?;
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match ct.as_str() {
        "application/json" => {
            let v: serde_json::Value = serde_json::from_slice(&body)
                .map_err(|e| bad("invalid_json", format!("the body is not valid JSON: {e}")))?;
            let q = v
                .get("query")
                .or_else(|| v.get("q"))
                .and_then(|q| q.as_str())
                .ok_or_else(|| bad("missing_query", "the JSON body needs a \"query\" string"))?;
            r.query = q.to_string();
            if let Some(l) = v.get("limit") {
                r.limit = Some(l.as_u64().ok_or_else(|| {
                    bad("invalid_limit", "\"limit\" must be a non-negative integer")
                })? as usize);
            }
            if let Some(f) = v.get("format").and_then(|f| f.as_str()) {
                let mut p = HashMap::new();
                p.insert("format".to_string(), f.to_string());
                read_params(&p, &mut r)?;
            }
        }
        "application/x-www-form-urlencoded" => {
            let p: HashMap<String, String> = serde_urlencoded::from_bytes(&body)
                .map_err(|e| bad("invalid_form", format!("the form body cannot be read: {e}")))?;
            read_params(&p, &mut r)?;
        }
        "text/plain" | "application/sql" | "" => {
            if !body.is_empty() {
                r.query = String::from_utf8(body.to_vec())
                    .map_err(|_| bad("invalid_query", "the query is not valid UTF-8"))?;
            }
        }
        other => {
            return Err(ApiError::new(
                ErrorKind::UnsupportedMediaType,
                "unsupported_content_type",
                format!(
                    "content type {other:?} is not accepted; send application/json, \
                     text/plain, application/sql or a form"
                ),
            ))
        }
    }
    run(st, engine, &headers, r).await
}

async fn run(
    st: ApiState,
    engine: Arc<SqlEngine>,
    headers: &HeaderMap,
    r: Request,
) -> Result<Response, ApiError> {
    if r.query.trim().is_empty() {
        return Err(bad(
            "missing_query",
            "no query: send it as q=, as a JSON \"query\" or as the request body",
        ));
    }
    let limits: &SqlLimits = engine.limits();
    let max_rows = r.limit.unwrap_or(limits.default_rows);
    if max_rows == 0 || max_rows > limits.max_rows {
        return Err(bad(
            "invalid_limit",
            format!("limit must be between 1 and {}", limits.max_rows),
        ));
    }
    let format = r.format.unwrap_or_else(|| {
        Format::from_accept(
            headers
                .get(header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .unwrap_or(""),
        )
    });
    let sources = {
        let guard = st.runtime.read();
        let run = guard.as_ref().ok_or_else(|| {
            ApiError::new(
                ErrorKind::Unavailable,
                "starting",
                "the server is still starting",
            )
        })?;
        Sources {
            traces: run.stores.traces.clone(),
            logs: run.stores.logs.clone(),
            metrics: run.stores.metrics.clone(),
        }
    };
    let out = engine
        .query(sources, &r.query, max_rows)
        .await
        .map_err(|e| ApiError::from_sql(&e))?;
    let mut resp = match format {
        Format::Json => Json(output::to_json(&out)).into_response(),
        Format::Csv => output::to_csv(&out).into_response(),
        Format::Arrow => output::to_arrow(&out.schema, &out.batches)
            .map_err(|e| {
                ApiError::new(
                    ErrorKind::Internal,
                    "encoding_failed",
                    format!("cannot encode the result as Arrow IPC: {e}"),
                )
            })?
            .into_response(),
    };
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    h.insert("x-tern-row-count", HeaderValue::from(out.rows));
    h.insert(
        "x-tern-truncated",
        HeaderValue::from_static(if out.truncated { "true" } else { "false" }),
    );
    Ok(resp)
}
