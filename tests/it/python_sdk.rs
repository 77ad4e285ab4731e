//! End-to-end with the real OpenTelemetry Python SDK and its OTLP exporters
//! (installed by the README's test command), over gRPC, HTTP and HTTP+gzip.

use tern::model::{AnyValue, SpanId, SpanKind, StatusCode, TraceId};
use tern::storage::LogQuery;

use crate::metrics_store::select_name;
use crate::support::*;

async fn run_sdk(
    s: &TestServer,
    protocol: &str,
    service: &str,
    temporality: &str,
) -> serde_json::Value {
    run_python(
        s,
        "otel_sdk_e2e.py",
        &[
            "--protocol",
            protocol,
            "--service",
            service,
            "--temporality",
            temporality,
        ],
    )
    .await
}

fn str_attr<'a>(attrs: &'a tern::model::Attributes, k: &str) -> Option<&'a str> {
    match tern::model::attr(attrs, k) {
        Some(AnyValue::String(s)) => Some(s),
        _ => None,
    }
}

async fn check_protocol(protocol: &str) {
    let s = TestServer::start().await;
    let service = format!("py-{protocol}");
    let sent = run_sdk(&s, protocol, &service, "cumulative").await;
    let trace_id = TraceId::from_hex(sent["trace_id"].as_str().unwrap()).unwrap();
    let root_id = SpanId::from_hex(sent["root_span_id"].as_str().unwrap()).unwrap();
    let child_id = SpanId::from_hex(sent["child_span_id"].as_str().unwrap()).unwrap();

    // Traces: both spans, linked, with kinds, status and the exception event.
    let spans = s.srv().stores().traces.trace(&trace_id).unwrap();
    assert_eq!(spans.len(), 2, "{protocol}");
    let root = spans
        .iter()
        .find(|s| s.span_id == root_id)
        .expect("root span");
    let child = spans
        .iter()
        .find(|s| s.span_id == child_id)
        .expect("child span");
    assert_eq!(root.parent_span_id, None);
    assert_eq!(child.parent_span_id, Some(root_id));
    assert_eq!(root.name, "checkout");
    assert_eq!(root.kind, SpanKind::Server);
    assert_eq!(child.kind, SpanKind::Client);
    assert_eq!(child.status.code, StatusCode::Error);
    assert_eq!(child.status.message, "declined");
    assert_eq!(str_attr(&root.attributes, "http.route"), Some("/checkout"));
    assert_eq!(root.service_name(), service);
    assert_eq!(
        str_attr(&root.resource.attributes, "service.version"),
        Some("1.2.3")
    );
    assert_eq!(root.scope.name, "e2e.tracer");
    let ev = child
        .events
        .iter()
        .find(|e| e.name == "exception")
        .expect("exception event");
    assert_eq!(
        str_attr(&ev.attributes, "exception.type"),
        Some("ValueError")
    );
    assert_eq!(
        str_attr(&ev.attributes, "exception.message"),
        Some("card declined")
    );
    assert!(child.start_time_ns >= root.start_time_ns && child.end_time_ns <= root.end_time_ns);

    // Logs: three records with trace context, severities and attributes.
    let logs = s
        .srv()
        .stores()
        .logs
        .query(&LogQuery {
            trace_id: Some(trace_id),
            limit: 10,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(logs.len(), 3, "{protocol}");
    let by_body = |b: &str| {
        logs.iter()
            .find(|l| l.body.to_text() == b)
            .unwrap_or_else(|| panic!("log {b:?}"))
    };
    let started = by_body("checkout started");
    assert_eq!(started.severity_number, 9);
    assert_eq!(started.span_id, Some(root_id));
    assert_eq!(str_attr(&started.attributes, "order_id"), Some("o-17"));
    assert_eq!(
        tern::model::attr(&started.attributes, "items"),
        Some(&AnyValue::Int(3))
    );
    assert_eq!(by_body("card retry").severity_number, 13);
    let failed = by_body("payment failed");
    assert_eq!(failed.severity_number, 17);
    assert_eq!(failed.span_id, Some(child_id));
    assert_eq!(failed.service_name(), service);

    // Metrics, as Prometheus series: the last export holds the totals.
    s.eventually("the metrics", |srv| {
        !select_name(srv, "e2e_temperature").is_empty()
    })
    .await;
    let srv = s.srv();
    let last = |name: &str| {
        let got = select_name(srv, name);
        assert_eq!(got.len(), 1, "{name}: {got:?}");
        got[0].samples.last().unwrap().v
    };
    let counter = select_name(srv, "e2e_requests_total");
    assert_eq!(
        tern::model::label(&counter[0].labels, "route"),
        Some("/checkout")
    );
    assert_eq!(
        tern::model::label(&counter[0].labels, "job"),
        Some(service.as_str())
    );
    assert_eq!(last("e2e_requests_total"), 5.0);
    assert_eq!(last("e2e_inflight"), 2.0);
    assert_eq!(last("e2e_latency_milliseconds_count"), 3.0);
    assert_eq!(last("e2e_latency_milliseconds_sum"), 56.0);
    let buckets = select_name(srv, "e2e_latency_milliseconds_bucket");
    assert!(buckets.len() > 2, "{buckets:?}");
    assert_eq!(last("e2e_temperature"), 7.5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_over_grpc() {
    check_protocol("grpc").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_over_http_protobuf() {
    check_protocol("http").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_over_http_gzip() {
    check_protocol("http-gzip").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_delta_points_add_up() {
    let s = TestServer::start().await;
    run_sdk(&s, "http", "py-delta", "delta").await;
    s.eventually("the counter", |srv| {
        !select_name(srv, "e2e_requests_total").is_empty()
    })
    .await;
    let counter = select_name(s.srv(), "e2e_requests_total");
    let total = counter[0].samples.last().unwrap().v;
    assert_eq!(total, 5.0, "delta exports add up to what was counted");
}
