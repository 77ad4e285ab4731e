//! OTLP/gRPC: export with and without gzip, partial success, limits, overload.

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use tern::model::TraceId;
use tonic::codec::CompressionEncoding;
use tonic_types::StatusExt;

use crate::support::*;

#[tokio::test]
async fn export_all_signals_with_gzip() {
    let s = TestServer::start().await;
    let mut traces = TraceServiceClient::connect(s.grpc_url())
        .await
        .unwrap()
        .send_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Gzip);
    let resp = traces
        .export(trace_request("grpc-svc", vec![span([5; 16], [1; 8], "a")]))
        .await
        .unwrap()
        .into_inner();
    assert!(resp.partial_success.is_none());
    let mut logs = LogsServiceClient::connect(s.grpc_url()).await.unwrap();
    logs.export(logs_request("grpc-svc", vec![log_record("over grpc", 1)]))
        .await
        .unwrap();
    let mut metrics = MetricsServiceClient::connect(s.grpc_url()).await.unwrap();
    metrics
        .export(gauge_request("grpc_gauge", &[42.0]))
        .await
        .unwrap();

    let t = s.srv().stores().traces.trace(&TraceId([5; 16])).unwrap();
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].service_name(), "grpc-svc");
    s.eventually("the gauge", |srv| {
        !crate::metrics_store::select_name(srv, "grpc_gauge").is_empty()
    })
    .await;
    let m = crate::metrics_store::select_name(s.srv(), "grpc_gauge");
    assert_eq!(m[0].samples[0].v, 42.0);
    assert_eq!(s.srv().stores().logs.stats().records, 1);
}

#[tokio::test]
async fn bad_ids_are_partial_success() {
    let s = TestServer::start().await;
    let mut c = TraceServiceClient::connect(s.grpc_url()).await.unwrap();
    let mut bad = span([6; 16], [1; 8], "bad");
    bad.trace_id = vec![6; 8];
    let resp = c
        .export(trace_request("x", vec![bad, span([6; 16], [2; 8], "good")]))
        .await
        .unwrap()
        .into_inner();
    let ps = resp.partial_success.unwrap();
    assert_eq!(ps.rejected_spans, 1);
    assert!(
        ps.error_message
            .contains("trace id must be 16 bytes, got 8"),
        "{}",
        ps.error_message
    );
}

#[tokio::test]
async fn oversize_message_is_resource_exhausted_without_retry_info() {
    let s = TestServer::start_with(&[
        "ingest.max_body_bytes=\"64KiB\"",
        "ingest.max_record_bytes=\"64KiB\"",
    ])
    .await;
    let mut c = LogsServiceClient::connect(s.grpc_url()).await.unwrap();
    let big = logs_request("x", vec![log_record(&"z".repeat(100_000), 1)]);
    let err = c.export(big).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err}");
    assert!(err.get_details_retry_info().is_none());
    // The server keeps serving.
    c.export(logs_request("x", vec![log_record("small", 2)]))
        .await
        .unwrap();
}

#[tokio::test]
async fn saturation_is_unavailable_with_retry_info() {
    let s = TestServer::start_with(&[
        "wal.segment_bytes=\"4KiB\"",
        "wal.max_disk_bytes=\"8KiB\"",
        "ingest.max_body_bytes=\"4KiB\"",
        "ingest.max_record_bytes=\"4KiB\"",
        "wal.max_queue_bytes=\"8KiB\"",
    ])
    .await;
    let mut c = LogsServiceClient::connect(s.grpc_url()).await.unwrap();
    let mut saw = None;
    for i in 0..200 {
        match c
            .export(logs_request("x", vec![log_record(&"q".repeat(500), i)]))
            .await
        {
            Ok(_) => {}
            Err(e) => {
                saw = Some(e);
                break;
            }
        }
    }
    let e = saw.expect("saturation reached");
    assert_eq!(e.code(), tonic::Code::Unavailable, "{e}");
    let info = e.get_details_retry_info().expect("RetryInfo detail");
    assert_eq!(info.retry_delay, Some(std::time::Duration::from_secs(1)));
}
