//! Micro-benchmarks of the store hot paths (criterion): span key and record
//! encoding for the trace store, log document building and indexing (tantivy
//! `add_document`, no commit), and metric sample append into the head plus
//! the head flush to Parquet.
//!
//! Run: `cargo bench --bench store_paths`

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use tern::model::time::now_ns;
use tern::model::{
    AnyValue, LogRecord, Resource, Sample, Scope, Series, Span, SpanId, SpanKind, Status,
    StatusCode, TraceId,
};
use tern::storage::logs::index::{LogIndex, LogIndexOptions};
use tern::storage::metrics::{MetricsOptions, ParquetMetricStore};
use tern::storage::traces::codec;
use tern::storage::{LogStore, MetricStore, StoreLifecycle};

fn resource(service: &str) -> Arc<Resource> {
    Arc::new(Resource {
        attributes: vec![
            ("service.name".into(), AnyValue::String(service.into())),
            ("host.name".into(), AnyValue::String("node-7".into())),
        ],
        dropped_attributes_count: 0,
        schema_url: String::new(),
    })
}

fn scope() -> Arc<Scope> {
    Arc::new(Scope {
        name: "bench".into(),
        version: "1.0".into(),
        attributes: vec![],
        dropped_attributes_count: 0,
        schema_url: String::new(),
    })
}

/// 512 server spans with typical HTTP attributes.
fn spans() -> Vec<Span> {
    let (res, sc, t0) = (resource("checkout"), scope(), now_ns());
    (0..512u64)
        .map(|i| {
            let mut tid = [0u8; 16];
            tid[..8].copy_from_slice(&(i * 7919 + 1).to_be_bytes());
            tid[8..].copy_from_slice(&(i ^ 0x5bd1_e995).to_be_bytes());
            Span {
                resource: res.clone(),
                scope: sc.clone(),
                trace_id: TraceId(tid),
                span_id: SpanId((i + 1).to_be_bytes()),
                parent_span_id: None,
                trace_state: String::new(),
                flags: 1,
                name: format!("GET /api/cart/{}", i % 20),
                kind: SpanKind::Server,
                start_time_ns: t0 + i * 1_000_000,
                end_time_ns: t0 + i * 1_000_000 + 25_000_000,
                attributes: vec![
                    ("http.request.method".into(), AnyValue::String("GET".into())),
                    (
                        "http.route".into(),
                        AnyValue::String("/api/cart/{id}".into()),
                    ),
                    ("http.response.status_code".into(), AnyValue::Int(200)),
                    ("user.id".into(), AnyValue::String(format!("u-{}", i * 31))),
                ],
                dropped_attributes_count: 0,
                events: vec![],
                dropped_events_count: 0,
                links: vec![],
                dropped_links_count: 0,
                status: Status {
                    code: StatusCode::Ok,
                    message: String::new(),
                },
            }
        })
        .collect()
}

fn trace_codec(c: &mut Criterion) {
    let spans = spans();
    let mut g = c.benchmark_group("trace_codec");
    g.throughput(Throughput::Elements(spans.len() as u64));
    g.bench_function("row_key_and_body_key_512", |b| {
        b.iter(|| {
            for (i, s) in spans.iter().enumerate() {
                let row = codec::RowId {
                    start_ns: s.start_time_ns,
                    first: s.span_id,
                };
                black_box(codec::row_key(s.start_time_ns, &s.trace_id, &s.span_id));
                black_box(codec::body_key(&s.trace_id, &row, i as u32));
            }
        })
    });
    g.bench_function("encode_span_512", |b| {
        b.iter(|| {
            for s in &spans {
                black_box(codec::encode_span(s, 1));
            }
        })
    });
    g.finish();
}

/// 1000 log records of ~150 bytes with attributes and trace context.
fn log_records(t0: u64) -> Vec<LogRecord> {
    let (res, sc) = (resource("payments"), scope());
    (0..1000u64)
        .map(|i| LogRecord {
            resource: res.clone(),
            scope: sc.clone(),
            time_ns: t0 + i * 1000,
            observed_time_ns: t0 + i * 1000,
            severity_number: if i % 10 == 0 { 17 } else { 9 },
            severity_text: String::new(),
            body: AnyValue::String(format!(
                "payment {i} for order o-{} declined by upstream 10.0.{}.{} after {} ms: insufficient funds",
                i * 13,
                i % 7,
                i % 250,
                i % 900
            )),
            attributes: vec![
                ("order.id".into(), AnyValue::String(format!("o-{}", i * 13))),
                ("amount".into(), AnyValue::Double(i as f64 * 1.25)),
            ],
            dropped_attributes_count: 0,
            flags: 0,
            trace_id: Some(TraceId([(i % 251) as u8 + 1; 16])),
            span_id: Some(SpanId([(i % 241) as u8 + 1; 8])),
            event_name: String::new(),
        })
        .collect()
}

fn log_documents(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let opts = LogIndexOptions {
        // Commits only when the benchmark ends: this measures building and
        // adding documents.
        commit_interval: Duration::from_secs(3600),
        ..LogIndexOptions::default()
    };
    let index = LogIndex::open(dir.path(), opts).unwrap();
    let t0 = now_ns() - 3_600_000_000_000;
    let mut seq = 0u64;
    let mut g = c.benchmark_group("log_documents");
    g.throughput(Throughput::Elements(1000));
    g.bench_function("build_and_add_1000", |b| {
        b.iter_batched(
            || {
                seq += 1;
                (seq, log_records(t0 + seq * 1_000_000))
            },
            |(seq, records)| index.write(seq, records).unwrap(),
            BatchSize::LargeInput,
        )
    });
    g.finish();
    index.close().unwrap();
}

/// Ten samples of every series in `series`, 15 ms apart from step `step`.
fn samples_at(series: &[Series], t0: i64, step: i64) -> Vec<Series> {
    series
        .iter()
        .map(|s| Series {
            labels: s.labels.clone(),
            samples: (0..10)
                .map(|k| Sample {
                    t_ms: t0 + (step + k) * 15,
                    v: (step + k) as f64,
                })
                .collect(),
        })
        .collect()
}

fn metric_append_flush(c: &mut Criterion) {
    let series: Vec<Series> = (0..1000)
        .map(|i| Series {
            labels: vec![
                ("__name__".into(), "http_requests_total".into()),
                ("code".into(), ["200", "404", "500"][i % 3].into()),
                ("instance".into(), format!("10.0.0.{}:9100", i % 250)),
                ("job".into(), format!("svc-{}", i / 250)),
            ],
            samples: vec![],
        })
        .collect();
    let t0 = (now_ns() / 1_000_000) as i64 - 3_600_000;
    let mut g = c.benchmark_group("metric_store");
    g.throughput(Throughput::Elements(1000 * 10));
    g.bench_function("append_1000_series_x10_samples", |b| {
        let dir = tempfile::tempdir().unwrap();
        let store = ParquetMetricStore::open(dir.path(), MetricsOptions::default(), None).unwrap();
        let mut step = 0i64;
        b.iter_batched(
            || {
                step += 10;
                (step, samples_at(&series, t0, step))
            },
            |(step, batch)| store.write_series(step as u64, batch).unwrap(),
            BatchSize::LargeInput,
        )
    });
    g.bench_function("append_and_flush_1000_series_x10_samples", |b| {
        let dir = tempfile::tempdir().unwrap();
        let store = ParquetMetricStore::open(dir.path(), MetricsOptions::default(), None).unwrap();
        let mut step = 0i64;
        b.iter_batched(
            || {
                step += 10;
                (step, samples_at(&series, t0, step))
            },
            |(step, batch)| {
                store.write_series(step as u64, batch).unwrap();
                store.flush_head(true).unwrap();
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, trace_codec, log_documents, metric_append_flush);
criterion_main!(benches);
