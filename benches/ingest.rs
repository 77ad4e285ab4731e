//! Micro-benchmarks of the ingest hot path: OTLP decode (protobuf and JSON),
//! validation + conversion to the model, and WAL append under group commit.
//!
//! Run: `cargo bench --bench ingest`

use std::hint::black_box;
use std::time::{SystemTime, UNIX_EPOCH};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use tern::ingest::otlp::{self, Limits};
use tern::ingest::PayloadFormat;
use tern::model::Signal;

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

/// 512 spans (an SDK's default batch) with typical HTTP attributes.
fn trace_batch() -> ExportTraceServiceRequest {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let spans = (0..512u64)
        .map(|i| {
            let mut trace_id = [0u8; 16];
            trace_id[..8].copy_from_slice(&(i / 8 + 1).to_le_bytes());
            Span {
                trace_id: trace_id.to_vec(),
                span_id: (i + 1).to_le_bytes().to_vec(),
                parent_span_id: if i % 8 == 0 {
                    vec![]
                } else {
                    (i / 8 * 8 + 1).to_le_bytes().to_vec()
                },
                name: format!("GET /api/v1/items/{}", i % 20),
                kind: 2,
                start_time_unix_nano: now - 1_000_000 - i * 1000,
                end_time_unix_nano: now - i * 1000,
                attributes: vec![
                    kv("http.request.method", "GET"),
                    kv("http.route", "/api/v1/items/{id}"),
                    kv("url.scheme", "https"),
                    kv("server.address", "items.internal"),
                    kv("user_agent.original", "Mozilla/5.0 (X11; Linux x86_64)"),
                ],
                ..Default::default()
            }
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", "items"), kv("host.name", "node-1")],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn to_json(req: &ExportTraceServiceRequest) -> Vec<u8> {
    // Hand-built OTLP/JSON with hex ids, as SDKs send it.
    let spans: Vec<serde_json::Value> = req.resource_spans[0].scope_spans[0]
        .spans
        .iter()
        .map(|s| {
            serde_json::json!({
                "traceId": hex::encode(&s.trace_id), "spanId": hex::encode(&s.span_id),
                "parentSpanId": hex::encode(&s.parent_span_id), "name": s.name, "kind": s.kind,
                "startTimeUnixNano": s.start_time_unix_nano.to_string(),
                "endTimeUnixNano": s.end_time_unix_nano.to_string(),
                "attributes": s.attributes.iter().map(|kv| serde_json::json!({
                    "key": kv.key, "value": {"stringValue": match &kv.value.as_ref().unwrap().value {
                        Some(any_value::Value::StringValue(v)) => v.clone(), _ => String::new() }}
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "items"}}]},
        "scopeSpans": [{"spans": spans}]
    }]}))
    .unwrap()
}

fn decode(c: &mut Criterion) {
    let req = trace_batch();
    let pb = req.encode_to_vec();
    let json = to_json(&req);
    let mut g = c.benchmark_group("decode_512_spans");
    g.throughput(Throughput::Elements(512));
    g.bench_function("protobuf", |b| {
        b.iter(|| otlp::decode(Signal::Traces, PayloadFormat::Protobuf, black_box(&pb)).unwrap())
    });
    g.bench_function("json", |b| {
        b.iter(|| otlp::decode(Signal::Traces, PayloadFormat::Json, black_box(&json)).unwrap())
    });
    g.finish();
}

fn validate_convert(c: &mut Criterion) {
    let req = otlp::OtlpRequest::Traces(trace_batch());
    let limits = Limits::default();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut g = c.benchmark_group("validate_convert_512_spans");
    g.throughput(Throughput::Elements(512));
    g.bench_function("validate+to_model", |b| {
        b.iter_batched(
            || req.clone(),
            |mut r| {
                otlp::validate(&mut r, &limits, now);
                otlp::to_model(r)
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn wal_append(c: &mut Criterion) {
    use tern::storage::wal::{SyncPolicy, Wal, WalOptions};
    let dir = tempfile::tempdir().unwrap();
    let mut opts = WalOptions::new(dir.path());
    opts.sync = SyncPolicy::Never;
    let wal: Wal<()> = Wal::open(opts, |_, _| Ok::<(), std::io::Error>(()), |_, _| {}).unwrap();
    let payload = otlp::wal_payload(&otlp::OtlpRequest::Traces(trace_batch()));
    let mut g = c.benchmark_group("wal_append");
    g.throughput(Throughput::Bytes(payload.len() as u64));
    g.bench_function("512_span_payload_no_fsync", |b| {
        b.iter(|| {
            wal.append(payload.clone(), ())
                .unwrap()
                .wait_blocking()
                .unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, decode, validate_convert, wal_append);
criterion_main!(benches);
