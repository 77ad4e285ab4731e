//! The one place where error codes become HTTP and gRPC statuses.
//!
//! JSON error bodies are `{"error": {"code": "...", "message": "..."}}`;
//! OTLP endpoints answer with a `google.rpc.Status` in the request's format
//! instead (see `http::otlp`). Retryable errors carry `Retry-After` (HTTP)
//! or a `RetryInfo` detail (gRPC), as OTLP senders expect.

use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::ingest::IngestError;
use crate::query::sql::SqlError;
use crate::storage::StorageError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    BadRequest,
    NotFound,
    PayloadTooLarge,
    UnsupportedMediaType,
    TooManyRequests,
    Unavailable,
    /// The request's query ran past its deadline.
    Timeout,
    Internal,
}

#[derive(Debug, Clone)]
pub struct ApiError {
    pub kind: ErrorKind,
    pub code: &'static str,
    pub message: String,
    pub retry_after: Option<Duration>,
}

impl ApiError {
    pub fn new(kind: ErrorKind, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            kind,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn from_sql(e: &SqlError) -> Self {
        let kind = match e {
            SqlError::Invalid(_) | SqlError::Forbidden(_) => ErrorKind::BadRequest,
            SqlError::Timeout(_) => ErrorKind::Timeout,
            SqlError::ResourcesExhausted(_) => ErrorKind::Unavailable,
            SqlError::Storage(StorageError::Unavailable(_)) => ErrorKind::Unavailable,
            SqlError::Storage(_) | SqlError::Internal(_) => ErrorKind::Internal,
        };
        ApiError::new(kind, e.code(), e.to_string())
    }

    pub fn from_ingest(e: &IngestError, retry_after: Duration) -> Self {
        let kind = match e {
            IngestError::Malformed(_) => ErrorKind::BadRequest,
            IngestError::TooLarge { .. } => ErrorKind::PayloadTooLarge,
            IngestError::UnsupportedContentType(_) | IngestError::UnsupportedEncoding(_) => {
                ErrorKind::UnsupportedMediaType
            }
            IngestError::Overloaded(_) => ErrorKind::TooManyRequests,
            IngestError::Saturated(_) | IngestError::Unavailable(_) => ErrorKind::Unavailable,
        };
        ApiError {
            kind,
            code: e.code(),
            message: e.to_string(),
            retry_after: e.retryable().then_some(retry_after),
        }
    }

    pub fn from_alerting(e: &crate::analysis::alerting::AlertingError) -> Self {
        use crate::analysis::alerting::AlertingError as A;
        let kind = match e {
            A::InvalidRule(_) | A::InvalidRequest(_) | A::LimitExceeded(_) => ErrorKind::BadRequest,
            A::NotFound(_) | A::Disabled => ErrorKind::NotFound,
            A::Meta(_) | A::Internal(_) => ErrorKind::Internal,
        };
        ApiError::new(kind, e.code(), e.to_string())
    }

    pub fn http_status(&self) -> StatusCode {
        match self.kind {
            ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorKind::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Timeout => StatusCode::REQUEST_TIMEOUT,
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn grpc_code(&self) -> tonic::Code {
        match self.kind {
            ErrorKind::BadRequest | ErrorKind::UnsupportedMediaType => tonic::Code::InvalidArgument,
            ErrorKind::NotFound => tonic::Code::NotFound,
            // Without RetryInfo, OTLP senders treat this as permanent: right for oversize.
            ErrorKind::PayloadTooLarge => tonic::Code::ResourceExhausted,
            // UNAVAILABLE is retried by every OTLP sender; RetryInfo adds the delay.
            ErrorKind::TooManyRequests | ErrorKind::Unavailable => tonic::Code::Unavailable,
            ErrorKind::Timeout => tonic::Code::DeadlineExceeded,
            ErrorKind::Internal => tonic::Code::Internal,
        }
    }

    pub fn to_grpc_status(&self) -> tonic::Status {
        use tonic_types::{ErrorDetails, StatusExt};
        match self.retry_after {
            Some(d) => tonic::Status::with_error_details(
                self.grpc_code(),
                self.message.clone(),
                ErrorDetails::with_retry_info(Some(d)),
            ),
            None => tonic::Status::new(self.grpc_code(), self.message.clone()),
        }
    }

    /// The Retry-After header value in whole seconds (at least 1).
    pub fn retry_after_header(&self) -> Option<HeaderValue> {
        self.retry_after
            .map(|d| HeaderValue::from(d.as_secs().max(1)))
    }
}

impl ApiError {
    /// The headers every error answer carries: `Retry-After` when retrying
    /// helps, and `Connection: close` on 413, whose request body was not
    /// read to its end, so the connection cannot carry another request (a
    /// client that pooled it would see its next request fail).
    pub fn add_headers(&self, resp: &mut Response) {
        if let Some(v) = self.retry_after_header() {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        if self.http_status() == StatusCode::PAYLOAD_TOO_LARGE {
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": {"code": self.code, "message": self.message}});
        let mut resp = (self.http_status(), axum::Json(body)).into_response();
        self.add_headers(&mut resp);
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ingest_errors_map_to_spec_statuses() {
        let ra = Duration::from_secs(2);
        let cases = [
            (
                IngestError::Malformed("x".into()),
                400,
                tonic::Code::InvalidArgument,
                false,
            ),
            (
                IngestError::TooLarge { limit: 1 },
                413,
                tonic::Code::ResourceExhausted,
                false,
            ),
            (
                IngestError::UnsupportedContentType("text/plain".into()),
                415,
                tonic::Code::InvalidArgument,
                false,
            ),
            (
                IngestError::Overloaded("x".into()),
                429,
                tonic::Code::Unavailable,
                true,
            ),
            (
                IngestError::Saturated("x".into()),
                503,
                tonic::Code::Unavailable,
                true,
            ),
            (
                IngestError::Unavailable("x".into()),
                503,
                tonic::Code::Unavailable,
                true,
            ),
        ];
        for (e, http, grpc, retry) in cases {
            let a = ApiError::from_ingest(&e, ra);
            assert_eq!(a.http_status().as_u16(), http, "{e}");
            assert_eq!(a.grpc_code(), grpc, "{e}");
            assert_eq!(a.retry_after.is_some(), retry, "{e}");
        }
    }

    #[test]
    fn alerting_errors_map_to_statuses() {
        use crate::analysis::alerting::AlertingError as A;
        let cases = [
            (A::InvalidRule("x".into()), 400, "bad_rule"),
            (A::InvalidRequest("x".into()), 400, "bad_request"),
            (A::LimitExceeded("x".into()), 400, "limit_exceeded"),
            (A::NotFound("x".into()), 404, "not_found"),
            (A::Disabled, 404, "alerting_disabled"),
            (A::Internal("x".into()), 500, "internal"),
        ];
        for (e, status, code) in cases {
            let a = ApiError::from_alerting(&e);
            assert_eq!(a.http_status().as_u16(), status, "{e}");
            assert_eq!(a.code, code);
        }
    }

    #[test]
    fn retryable_grpc_status_carries_retry_info() {
        use tonic_types::StatusExt;
        let a = ApiError::from_ingest(
            &IngestError::Saturated("busy".into()),
            Duration::from_secs(3),
        );
        let st = a.to_grpc_status();
        assert_eq!(st.code(), tonic::Code::Unavailable);
        let info = st.get_details_retry_info().expect("retry info detail");
        assert_eq!(info.retry_delay, Some(Duration::from_secs(3)));
    }
}
