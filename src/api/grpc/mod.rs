//! OTLP/gRPC receiver: the collector Trace, Metrics and Logs services, with
//! gzip, a message size cap and the memory budget shared with OTLP/HTTP.

use std::sync::Arc;
use std::time::Instant;

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use tonic::codec::CompressionEncoding;
use tonic::{Request, Response, Status};

use crate::api::error::ApiError;
use crate::ingest::otlp::{logs_response, metrics_response, trace_response};
use crate::ingest::{Accepted, IngestError, OtlpRequest, Pipeline};
use crate::telemetry::Telemetry;

#[derive(Clone)]
pub struct OtlpGrpc {
    pipeline: Arc<Pipeline>,
    telemetry: Arc<Telemetry>,
}

impl OtlpGrpc {
    pub fn new(pipeline: Arc<Pipeline>, telemetry: Arc<Telemetry>) -> Self {
        OtlpGrpc {
            pipeline,
            telemetry,
        }
    }

    async fn ingest(&self, req: OtlpRequest) -> Result<Accepted, Status> {
        let started = Instant::now();
        let signal = req.signal();
        let size = match &req {
            OtlpRequest::Traces(r) => r.encoded_len(),
            OtlpRequest::Metrics(r) => r.encoded_len(),
            OtlpRequest::Logs(r) => r.encoded_len(),
        } as u64;
        self.telemetry
            .ingest_bytes
            .with_label_values(&[signal.as_str(), "grpc"])
            .inc_by(size);
        // tonic already holds the decoded message; account for it so that
        // gRPC and HTTP share one in-flight bound.
        let mut reservation = self.pipeline.budget().reservation();
        let result = if reservation.grow_to(size) {
            self.pipeline.ingest_request(req).await
        } else {
            Err(IngestError::Overloaded(
                "the ingest memory budget is exhausted".into(),
            ))
        };
        drop(reservation);
        self.telemetry
            .ingest_latency
            .with_label_values(&[signal.as_str(), "grpc"])
            .observe(started.elapsed().as_secs_f64());
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) => e.code(),
        };
        self.telemetry
            .ingest_requests
            .with_label_values(&[signal.as_str(), "grpc", outcome])
            .inc();
        result.map_err(|e| {
            if e.retryable() {
                tracing::warn!(signal = signal.as_str(), error = %e, "ingest request refused");
            }
            ApiError::from_ingest(&e, self.pipeline.retry_after()).to_grpc_status()
        })
    }
}

#[tonic::async_trait]
impl TraceService for OtlpGrpc {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let a = self
            .ingest(OtlpRequest::Traces(request.into_inner()))
            .await?;
        Ok(Response::new(trace_response(&a)))
    }
}

#[tonic::async_trait]
impl MetricsService for OtlpGrpc {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        let a = self
            .ingest(OtlpRequest::Metrics(request.into_inner()))
            .await?;
        Ok(Response::new(metrics_response(&a)))
    }
}

#[tonic::async_trait]
impl LogsService for OtlpGrpc {
    async fn export(
        &self,
        request: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        let a = self.ingest(OtlpRequest::Logs(request.into_inner())).await?;
        Ok(Response::new(logs_response(&a)))
    }
}

/// The three services, configured for gzip and the body limit.
pub fn routes(svc: OtlpGrpc, max_message_bytes: usize) -> tonic::service::Routes {
    let traces = TraceServiceServer::new(svc.clone())
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(max_message_bytes);
    let metrics = MetricsServiceServer::new(svc.clone())
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(max_message_bytes);
    let logs = LogsServiceServer::new(svc)
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(max_message_bytes);
    tonic::service::Routes::new(traces)
        .add_service(metrics)
        .add_service(logs)
}

/// tonic answers an over-limit message with OUT_OF_RANGE, which OTLP
/// senders retry forever. This rewrites it to RESOURCE_EXHAUSTED without
/// RetryInfo, which they treat as permanent. The receivers never produce
/// OUT_OF_RANGE themselves, so nothing else is affected.
pub fn oversize_as_resource_exhausted<B>(mut resp: http::Response<B>) -> http::Response<B> {
    let out_of_range = (tonic::Code::OutOfRange as i32).to_string();
    if resp
        .headers()
        .get("grpc-status")
        .is_some_and(|v| v.as_bytes() == out_of_range.as_bytes())
    {
        let code = (tonic::Code::ResourceExhausted as i32).to_string();
        if let Ok(v) = http::HeaderValue::from_str(&code) {
            resp.headers_mut().insert("grpc-status", v);
        }
    }
    resp
}
