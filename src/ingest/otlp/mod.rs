//! OTLP: decoding (protobuf and JSON), validation, conversion to the model,
//! the WAL record format, and the encoding of OTLP responses.
//!
//! WAL payload format: one byte naming the signal (1 traces, 2 metrics,
//! 3 logs) followed by the protobuf encoding of the validated
//! `Export*ServiceRequest` (tag 4 is a remote_write request, see
//! `ingest::remote_write`). Replay decodes it and converts it to the model
//! without validating again, so what is replayed is exactly what was
//! acknowledged.

mod convert;
pub mod json;
mod validate;

use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;

use super::{Accepted, IngestError};
use crate::model::{Batch, Signal};
pub use convert::{any_value, attributes};
pub use validate::{Limits, Rejections};

/// A decoded OTLP export request of any signal.
#[derive(Debug, Clone, PartialEq)]
pub enum OtlpRequest {
    Traces(ExportTraceServiceRequest),
    Metrics(ExportMetricsServiceRequest),
    Logs(ExportLogsServiceRequest),
}

impl OtlpRequest {
    pub fn signal(&self) -> Signal {
        match self {
            OtlpRequest::Traces(_) => Signal::Traces,
            OtlpRequest::Metrics(_) => Signal::Metrics,
            OtlpRequest::Logs(_) => Signal::Logs,
        }
    }
}

/// The body encodings OTLP/HTTP allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadFormat {
    Protobuf,
    Json,
}

impl PayloadFormat {
    /// Maps a Content-Type header value (parameters such as charset ignored).
    pub fn from_content_type(ct: &str) -> Option<Self> {
        let mime = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match mime.as_str() {
            "application/x-protobuf" | "application/protobuf" => Some(PayloadFormat::Protobuf),
            "application/json" => Some(PayloadFormat::Json),
            _ => None,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            PayloadFormat::Protobuf => "application/x-protobuf",
            PayloadFormat::Json => "application/json",
        }
    }
}

/// Decodes a request body of the given signal and format.
pub fn decode(
    signal: Signal,
    format: PayloadFormat,
    body: &[u8],
) -> Result<OtlpRequest, IngestError> {
    let proto_err = |e: prost::DecodeError| {
        IngestError::Malformed(format!(
            "invalid otlp protobuf {} request: {e}",
            signal.as_str()
        ))
    };
    let json_err = |e: json::JsonError| IngestError::Malformed(e.to_string());
    Ok(match (signal, format) {
        (Signal::Traces, PayloadFormat::Protobuf) => {
            OtlpRequest::Traces(ExportTraceServiceRequest::decode(body).map_err(proto_err)?)
        }
        (Signal::Metrics, PayloadFormat::Protobuf) => {
            OtlpRequest::Metrics(ExportMetricsServiceRequest::decode(body).map_err(proto_err)?)
        }
        (Signal::Logs, PayloadFormat::Protobuf) => {
            OtlpRequest::Logs(ExportLogsServiceRequest::decode(body).map_err(proto_err)?)
        }
        (Signal::Traces, PayloadFormat::Json) => {
            OtlpRequest::Traces(json::decode_traces(body).map_err(json_err)?)
        }
        (Signal::Metrics, PayloadFormat::Json) => {
            OtlpRequest::Metrics(json::decode_metrics(body).map_err(json_err)?)
        }
        (Signal::Logs, PayloadFormat::Json) => {
            OtlpRequest::Logs(json::decode_logs(body).map_err(json_err)?)
        }
    })
}

/// Removes invalid records in place; see [`validate`](self::validate).
pub fn validate(req: &mut OtlpRequest, limits: &Limits, now_ns: u64) -> Rejections {
    match req {
        OtlpRequest::Traces(r) => validate::validate_traces(r, limits, now_ns),
        OtlpRequest::Metrics(r) => validate::validate_metrics(r, limits, now_ns),
        OtlpRequest::Logs(r) => validate::validate_logs(r, limits, now_ns),
    }
}

pub fn to_model(req: OtlpRequest) -> Batch {
    match req {
        OtlpRequest::Traces(r) => Batch::Traces(convert::traces(r)),
        OtlpRequest::Metrics(r) => Batch::Metrics(convert::metrics(r)),
        OtlpRequest::Logs(r) => Batch::Logs(convert::logs(r)),
    }
}

fn signal_tag(s: Signal) -> u8 {
    match s {
        Signal::Traces => 1,
        Signal::Metrics => 2,
        Signal::Logs => 3,
    }
}

/// Encodes a validated request as a WAL payload.
pub fn wal_payload(req: &OtlpRequest) -> Vec<u8> {
    let (tag, len) = match req {
        OtlpRequest::Traces(r) => (1u8, r.encoded_len()),
        OtlpRequest::Metrics(r) => (2, r.encoded_len()),
        OtlpRequest::Logs(r) => (3, r.encoded_len()),
    };
    let mut buf = Vec::with_capacity(1 + len);
    buf.push(tag);
    // Encoding into a Vec cannot run out of space.
    let _ = match req {
        OtlpRequest::Traces(r) => r.encode(&mut buf),
        OtlpRequest::Metrics(r) => r.encode(&mut buf),
        OtlpRequest::Logs(r) => r.encode(&mut buf),
    };
    buf
}

/// A WAL payload made from a protobuf body that validation left unchanged.
pub fn wal_payload_from_raw(signal: Signal, raw: &[u8]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(1 + raw.len());
    buf.push(signal_tag(signal));
    buf.extend_from_slice(raw);
    buf
}

/// Decodes a WAL payload back into a model batch.
pub fn decode_wal_payload(payload: &[u8]) -> Result<Batch, String> {
    let (tag, body) = payload.split_first().ok_or("empty wal payload")?;
    let err = |e: prost::DecodeError| format!("undecodable wal payload: {e}");
    let req = match *tag {
        1 => OtlpRequest::Traces(ExportTraceServiceRequest::decode(body).map_err(err)?),
        2 => OtlpRequest::Metrics(ExportMetricsServiceRequest::decode(body).map_err(err)?),
        3 => OtlpRequest::Logs(ExportLogsServiceRequest::decode(body).map_err(err)?),
        super::remote_write::WAL_TAG => {
            let req = super::remote_write::decode(body).map_err(|e| e.to_string())?;
            return Ok(Batch::Series(super::remote_write::to_series(req)));
        }
        other => return Err(format!("unknown wal payload tag {other}")),
    };
    Ok(to_model(req))
}

fn partial<T>(a: &Accepted, make: impl FnOnce(i64, String) -> T) -> Option<T> {
    (a.rejected > 0 || !a.message.is_empty()).then(|| make(a.rejected as i64, a.message.clone()))
}

pub fn trace_response(a: &Accepted) -> ExportTraceServiceResponse {
    ExportTraceServiceResponse {
        partial_success: partial(a, |n, m| ExportTracePartialSuccess {
            rejected_spans: n,
            error_message: m,
        }),
    }
}

pub fn metrics_response(a: &Accepted) -> ExportMetricsServiceResponse {
    ExportMetricsServiceResponse {
        partial_success: partial(a, |n, m| ExportMetricsPartialSuccess {
            rejected_data_points: n,
            error_message: m,
        }),
    }
}

pub fn logs_response(a: &Accepted) -> ExportLogsServiceResponse {
    ExportLogsServiceResponse {
        partial_success: partial(a, |n, m| ExportLogsPartialSuccess {
            rejected_log_records: n,
            error_message: m,
        }),
    }
}

/// The success response body for a signal, in the request's format.
pub fn encode_response(signal: Signal, format: PayloadFormat, a: &Accepted) -> Vec<u8> {
    match (signal, format) {
        (Signal::Traces, PayloadFormat::Protobuf) => trace_response(a).encode_to_vec(),
        (Signal::Metrics, PayloadFormat::Protobuf) => metrics_response(a).encode_to_vec(),
        (Signal::Logs, PayloadFormat::Protobuf) => logs_response(a).encode_to_vec(),
        (Signal::Traces, PayloadFormat::Json) => json::encode_trace_response(&trace_response(a)),
        (Signal::Metrics, PayloadFormat::Json) => {
            json::encode_metrics_response(&metrics_response(a))
        }
        (Signal::Logs, PayloadFormat::Json) => json::encode_logs_response(&logs_response(a)),
    }
}

/// `google.rpc.Status`, the body of OTLP/HTTP error responses.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RpcStatus {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
}

/// An error response body in the request's format.
pub fn encode_status(format: PayloadFormat, grpc_code: i32, message: &str) -> Vec<u8> {
    match format {
        PayloadFormat::Protobuf => RpcStatus {
            code: grpc_code,
            message: message.to_string(),
        }
        .encode_to_vec(),
        PayloadFormat::Json => json::encode_status(grpc_code, message),
    }
}

#[cfg(test)]
mod tests;
