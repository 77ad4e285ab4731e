use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue as PAny, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord as PLog, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1 as pm;
use opentelemetry_proto::tonic::resource::v1::Resource as PResource;
use opentelemetry_proto::tonic::trace::v1::{span, ResourceSpans, ScopeSpans, Span as PSpan};

use super::*;
use crate::model::{AnyValue, MetricData, SpanKind, StatusCode, Temporality};

const NOW: u64 = 1_700_000_000_000_000_000;

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(PAny {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

fn resource() -> Option<PResource> {
    Some(PResource {
        attributes: vec![kv("service.name", "checkout")],
        ..Default::default()
    })
}

fn pspan(trace: Vec<u8>, span_id: Vec<u8>) -> PSpan {
    PSpan {
        trace_id: trace,
        span_id,
        name: "GET /cart".into(),
        kind: span::SpanKind::Server as i32,
        start_time_unix_nano: NOW - 1_000,
        end_time_unix_nano: NOW,
        attributes: vec![
            kv("http.route", "/cart"),
            kv("dup", "first"),
            kv("dup", "second"),
        ],
        ..Default::default()
    }
}

fn traces(spans: Vec<PSpan>) -> OtlpRequest {
    OtlpRequest::Traces(ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: resource(),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    })
}

fn logs(records: Vec<PLog>) -> OtlpRequest {
    OtlpRequest::Logs(ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: resource(),
            scope_logs: vec![ScopeLogs {
                log_records: records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    })
}

fn metrics(ms: Vec<pm::Metric>) -> OtlpRequest {
    OtlpRequest::Metrics(ExportMetricsServiceRequest {
        resource_metrics: vec![pm::ResourceMetrics {
            resource: resource(),
            scope_metrics: vec![pm::ScopeMetrics {
                metrics: ms,
                ..Default::default()
            }],
            ..Default::default()
        }],
    })
}

fn number(v: f64) -> pm::NumberDataPoint {
    pm::NumberDataPoint {
        time_unix_nano: NOW,
        value: Some(pm::number_data_point::Value::AsDouble(v)),
        ..Default::default()
    }
}

fn gauge(name: &str, points: Vec<pm::NumberDataPoint>) -> pm::Metric {
    pm::Metric {
        name: name.into(),
        data: Some(pm::metric::Data::Gauge(pm::Gauge {
            data_points: points,
        })),
        ..Default::default()
    }
}

fn run(mut req: OtlpRequest) -> (Rejections, Batch, OtlpRequest) {
    let rej = validate(&mut req, &Limits::default(), NOW);
    let batch = to_model(req.clone());
    (rej, batch, req)
}

#[test]
fn valid_span_converts_with_its_fields() {
    let mut s = pspan(vec![1; 16], vec![2; 8]);
    s.parent_span_id = vec![3; 8];
    s.status = Some(opentelemetry_proto::tonic::trace::v1::Status {
        code: 2,
        message: "boom".into(),
    });
    let (rej, batch, _) = run(traces(vec![s]));
    assert_eq!(rej.count, 0);
    assert!(!rej.modified);
    let Batch::Traces(spans) = batch else {
        panic!("not traces")
    };
    let s = &spans[0];
    assert_eq!(s.trace_id.to_hex(), "01".repeat(16));
    assert_eq!(s.parent_span_id.map(|p| p.to_hex()), Some("03".repeat(8)));
    assert_eq!(s.kind, SpanKind::Server);
    assert_eq!(s.status.code, StatusCode::Error);
    assert_eq!(s.service_name(), "checkout");
    assert_eq!(s.duration_ns(), 1_000);
    // Duplicate keys: first position, last value.
    assert_eq!(
        s.attributes,
        vec![
            ("http.route".to_string(), AnyValue::String("/cart".into())),
            ("dup".to_string(), AnyValue::String("second".into())),
        ]
    );
}

#[test]
fn invalid_spans_are_rejected_individually() {
    let mut end_before_start = pspan(vec![1; 16], vec![5; 8]);
    end_before_start.end_time_unix_nano = end_before_start.start_time_unix_nano - 1;
    let mut future = pspan(vec![1; 16], vec![6; 8]);
    future.end_time_unix_nano = NOW + 2 * 3_600_000_000_000;
    let mut too_many = pspan(vec![1; 16], vec![7; 8]);
    too_many.attributes = (0..1025).map(|i| kv(&format!("k{i}"), "v")).collect();
    let (rej, batch, req) = run(traces(vec![
        pspan(vec![1; 10], vec![2; 8]),
        pspan(vec![0; 16], vec![2; 8]),
        pspan(vec![1; 16], vec![2; 9]),
        pspan(vec![1; 16], vec![3; 8]),
        end_before_start,
        future,
        too_many,
    ]));
    assert_eq!(rej.count, 6);
    assert!(rej.modified);
    let msg = rej.message();
    assert!(
        msg.contains(
            "resource_spans[0].scope_spans[0].spans[0]: trace id must be 16 bytes, got 10"
        ),
        "{msg}"
    );
    assert!(msg.contains("all zeros"), "{msg}");
    assert!(msg.contains("(and 1 more)"), "{msg}");
    assert_eq!(batch.len(), 1);
    // The request written to the WAL holds only the valid span.
    let OtlpRequest::Traces(r) = req else {
        panic!()
    };
    assert_eq!(r.resource_spans[0].scope_spans[0].spans.len(), 1);
}

#[test]
fn logs_get_times_filled_and_bad_ids_rejected() {
    let ok = PLog {
        observed_time_unix_nano: NOW - 5,
        body: Some(PAny {
            value: Some(any_value::Value::StringValue("hello".into())),
        }),
        severity_number: 17,
        trace_id: vec![9; 16],
        span_id: vec![8; 8],
        ..Default::default()
    };
    let no_times = PLog::default();
    let bad_trace = PLog {
        trace_id: vec![1; 15],
        ..Default::default()
    };
    let bad_sev = PLog {
        severity_number: 99,
        ..Default::default()
    };
    let (rej, batch, _) = run(logs(vec![ok, no_times, bad_trace, bad_sev]));
    assert_eq!(rej.count, 2);
    assert!(rej.modified);
    let Batch::Logs(recs) = batch else { panic!() };
    assert_eq!(recs.len(), 2);
    assert_eq!(recs[0].time_ns, NOW - 5, "time falls back to observed time");
    assert_eq!(recs[0].body, AnyValue::String("hello".into()));
    assert_eq!(recs[0].severity_label(), "ERROR");
    assert_eq!(recs[0].trace_id.map(|t| t.to_hex()), Some("09".repeat(16)));
    assert_eq!(recs[1].time_ns, NOW, "no times at all: receive time");
    assert_eq!(recs[1].observed_time_ns, NOW);
}

#[test]
fn deeply_nested_and_oversized_logs_are_rejected() {
    let mut v = PAny {
        value: Some(any_value::Value::StringValue("leaf".into())),
    };
    for _ in 0..40 {
        v = PAny {
            value: Some(any_value::Value::ArrayValue(
                opentelemetry_proto::tonic::common::v1::ArrayValue { values: vec![v] },
            )),
        };
    }
    let nested = PLog {
        time_unix_nano: NOW,
        body: Some(v),
        ..Default::default()
    };
    let huge = PLog {
        time_unix_nano: NOW,
        body: Some(PAny {
            value: Some(any_value::Value::StringValue("x".repeat(2 << 20))),
        }),
        ..Default::default()
    };
    let (rej, batch, _) = run(logs(vec![nested, huge]));
    assert_eq!(rej.count, 2);
    assert!(batch.is_empty());
    assert!(
        rej.message().contains("nested deeper than 32"),
        "{}",
        rej.message()
    );
    assert!(
        rej.message().contains("more than the limit"),
        "{}",
        rej.message()
    );
}

#[test]
fn metrics_keep_nan_and_reject_broken_points() {
    let hist_bad = pm::Metric {
        name: "latency".into(),
        data: Some(pm::metric::Data::Histogram(pm::Histogram {
            aggregation_temporality: 1,
            data_points: vec![
                pm::HistogramDataPoint {
                    time_unix_nano: NOW,
                    count: 3,
                    bucket_counts: vec![1, 2],
                    explicit_bounds: vec![1.0, 2.0],
                    ..Default::default()
                },
                pm::HistogramDataPoint {
                    time_unix_nano: NOW,
                    count: 3,
                    sum: Some(4.5),
                    bucket_counts: vec![1, 1, 1],
                    explicit_bounds: vec![1.0, 2.0],
                    ..Default::default()
                },
            ],
        })),
        ..Default::default()
    };
    let no_time = pm::NumberDataPoint {
        value: Some(pm::number_data_point::Value::AsInt(1)),
        ..Default::default()
    };
    let (rej, batch, _) = run(metrics(vec![
        gauge("g", vec![number(f64::NAN), number(f64::INFINITY), no_time]),
        gauge("", vec![number(1.0)]),
        hist_bad,
    ]));
    assert_eq!(rej.count, 3, "{}", rej.message());
    let Batch::Metrics(ms) = batch else { panic!() };
    assert_eq!(ms.len(), 2);
    let MetricData::Gauge(points) = &ms[0].data else {
        panic!()
    };
    assert!(points[0].value.is_nan());
    assert_eq!(points[1].value, f64::INFINITY);
    let MetricData::Histogram {
        points,
        temporality,
    } = &ms[1].data
    else {
        panic!()
    };
    assert_eq!(*temporality, Temporality::Delta);
    assert_eq!(points[0].bucket_counts, vec![1, 1, 1]);
    assert_eq!(points[0].sum, Some(4.5));
}

#[test]
fn wal_payload_round_trips_to_the_same_model() {
    for req in [
        traces(vec![
            pspan(vec![1; 16], vec![2; 8]),
            pspan(vec![1; 10], vec![2; 8]),
        ]),
        logs(vec![PLog {
            time_unix_nano: NOW,
            ..Default::default()
        }]),
        metrics(vec![gauge("g", vec![number(2.5)])]),
    ] {
        let mut req = req;
        validate(&mut req, &Limits::default(), NOW);
        let payload = wal_payload(&req);
        let back = decode_wal_payload(&payload).unwrap();
        assert_eq!(back, to_model(req));
    }
    assert!(decode_wal_payload(&[]).is_err());
    assert!(decode_wal_payload(&[9, 1, 2]).is_err());
    assert!(decode_wal_payload(&[1, 0xff, 0xff, 0xff]).is_err());
}

#[test]
fn empty_request_is_accepted_with_nothing_stored() {
    let (rej, batch, _) = run(OtlpRequest::Traces(ExportTraceServiceRequest::default()));
    assert_eq!(rej.count, 0);
    assert!(batch.is_empty());
}

#[test]
fn content_types() {
    assert_eq!(
        PayloadFormat::from_content_type("application/json; charset=utf-8"),
        Some(PayloadFormat::Json)
    );
    assert_eq!(
        PayloadFormat::from_content_type("Application/X-Protobuf"),
        Some(PayloadFormat::Protobuf)
    );
    assert_eq!(PayloadFormat::from_content_type("text/plain"), None);
    assert_eq!(PayloadFormat::from_content_type(""), None);
}

#[test]
fn partial_success_responses() {
    let a = Accepted {
        accepted: 1,
        rejected: 2,
        message: "bad".into(),
    };
    let r = trace_response(&a);
    assert_eq!(r.partial_success.unwrap().rejected_spans, 2);
    assert!(trace_response(&Accepted::default())
        .partial_success
        .is_none());
    let json = encode_response(Signal::Logs, PayloadFormat::Json, &a);
    let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(v["partialSuccess"]["rejectedLogRecords"], "2");
}
