//! Trace store benchmark (a plain `main`, `harness = false`). Prints one JSON
//! object per measurement:
//!
//! - `otlp_ingest`: spans/s end to end over OTLP/gRPC into an in-process
//!   server (WAL with group commit, then the RocksDB store): the rate at
//!   which requests are acknowledged and the rate at which the store has
//!   applied them.
//! - `store_load`: spans written directly into a `RocksTraceStore` with a
//!   realistic mix (10 services, 50 operations, trees of 4–40 spans, 5–15
//!   attributes with some high-cardinality values), then flushed and
//!   compacted: stored bytes per span from the data directory size, and
//!   SST bytes per span of each column family.
//! - `trace_by_id`: p50/p99 latency of reading whole traces.
//! - `search`: p50/p99 latency of a service + minimum duration search
//!   (limit 20, last hour), and of a search for a rare span attribute value
//!   (one `user.id` of 100k, last hour: fewer hits than the limit).
//!
//! Sizes come from environment variables so CI can run it small:
//! `TERN_BENCH_OTLP_SPANS` (default 1,000,000), `TERN_BENCH_STORE_SPANS`
//! (10,000,000), `TERN_BENCH_QUERIES` (1,000), `TERN_BENCH_CLIENTS` (4).
//!
//! Run: `cargo bench --bench trace_store` (release profile). Without
//! `--bench` (as `cargo test --benches` runs it) the defaults are tiny.

use std::sync::Arc;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue as PAny, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource as PResource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span as PSpan};
use tern::model::time::now_ns;
use tern::model::{AnyValue, Resource, Scope, Span, SpanId, SpanKind, Status, StatusCode, TraceId};
use tern::storage::traces::{RocksTraceStore, TraceSearch, TraceStoreOptions};
use tern::storage::{StoreLifecycle, TraceStore};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

/// xorshift64*: deterministic and dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

const SERVICES: [&str; 10] = [
    "frontend",
    "checkout",
    "cart",
    "payment",
    "shipping",
    "currency",
    "catalog",
    "ads",
    "recommendation",
    "email",
];
const METHODS: [&str; 4] = ["GET", "POST", "PUT", "DELETE"];

fn op_name(svc: usize, op: usize) -> String {
    format!(
        "{} /api/{}/{}",
        METHODS[op % 4],
        SERVICES[svc],
        ["items", "orders", "users", "quotes", "health"][op % 5]
    )
}

/// One generated span in model form.
struct Gen {
    resources: Vec<Arc<Resource>>,
    scope: Arc<Scope>,
    rng: Rng,
}

impl Gen {
    fn new() -> Self {
        let resources = SERVICES
            .iter()
            .enumerate()
            .map(|(i, s)| {
                Arc::new(Resource {
                    attributes: vec![
                        ("service.name".into(), AnyValue::String((*s).into())),
                        (
                            "service.version".into(),
                            AnyValue::String(format!("1.{i}.3")),
                        ),
                        (
                            "host.name".into(),
                            AnyValue::String(format!("node-{}", i % 3)),
                        ),
                        (
                            "telemetry.sdk.name".into(),
                            AnyValue::String("opentelemetry".into()),
                        ),
                        (
                            "telemetry.sdk.language".into(),
                            AnyValue::String("go".into()),
                        ),
                        (
                            "telemetry.sdk.version".into(),
                            AnyValue::String("1.28.0".into()),
                        ),
                    ],
                    ..Default::default()
                })
            })
            .collect();
        Gen {
            resources,
            scope: Arc::new(Scope {
                name: "io.opentelemetry.http".into(),
                version: "0.50.0".into(),
                ..Default::default()
            }),
            rng: Rng(0x9E37_79B9_7F4A_7C15),
        }
    }

    /// A trace of 4–40 spans starting at `start`: a frontend root, fan-out
    /// to services, each server span with client and internal children.
    fn trace(&mut self, start: u64) -> Vec<Span> {
        let mut tid = [0u8; 16];
        tid[..8].copy_from_slice(&self.rng.next().to_le_bytes());
        tid[8..].copy_from_slice(&(self.rng.next() | 1).to_le_bytes());
        let n = 4 + self.rng.below(37) as usize;
        let mut spans: Vec<Span> = Vec::with_capacity(n);
        for i in 0..n {
            let parent = if i == 0 {
                None
            } else {
                Some(self.rng.below(i as u64) as usize)
            };
            let svc = if i == 0 {
                0
            } else if self.rng.below(3) == 0 {
                // Same service as the parent: an internal or client span.
                parent.map_or(0, |p| {
                    SERVICES
                        .iter()
                        .position(|s| *s == spans[p].resource.service_name())
                        .unwrap_or(0)
                })
            } else {
                1 + self.rng.below(9) as usize
            };
            let parent_svc = parent.map(|p| spans[p].resource.service_name().to_string());
            let kind = match (i, parent_svc.as_deref() == Some(SERVICES[svc])) {
                (0, _) => SpanKind::Server,
                (_, false) => SpanKind::Server,
                (_, true) if self.rng.below(2) == 0 => SpanKind::Client,
                _ => SpanKind::Internal,
            };
            let op = self.rng.below(5) as usize;
            let p_start = parent.map_or(start, |p| spans[p].start_time_ns);
            let s_start = p_start + self.rng.below(2_000_000);
            let slow = self.rng.below(50) == 0;
            let dur = 50_000
                + self
                    .rng
                    .below(if slow { 2_000_000_000 } else { 80_000_000 });
            let error = self.rng.below(40) == 0;
            let n_attrs = 5 + self.rng.below(11) as usize;
            let mut attrs: Vec<(String, AnyValue)> = vec![
                (
                    "http.request.method".into(),
                    AnyValue::String(METHODS[op % 4].into()),
                ),
                (
                    "http.route".into(),
                    AnyValue::String(format!("/api/{}/{{id}}", SERVICES[svc])),
                ),
                (
                    "http.response.status_code".into(),
                    AnyValue::Int(if error { 500 } else { 200 }),
                ),
                (
                    "server.address".into(),
                    AnyValue::String(format!("{}.svc.cluster.local", SERVICES[svc])),
                ),
                (
                    "user.id".into(),
                    AnyValue::String(format!("user-{}", self.rng.below(100_000))),
                ),
            ];
            let extra = [
                ("net.peer.port", AnyValue::Int(8080)),
                ("url.scheme", AnyValue::String("https".into())),
                ("network.protocol.version", AnyValue::String("1.1".into())),
                ("thread.id", AnyValue::Int(self.rng.below(64) as i64)),
                (
                    "request.id",
                    AnyValue::String(format!("{:016x}", self.rng.next())),
                ),
                ("db.system", AnyValue::String("postgresql".into())),
                ("cache.hit", AnyValue::Bool(self.rng.below(2) == 0)),
                ("item.count", AnyValue::Int(self.rng.below(20) as i64)),
                ("region", AnyValue::String("eu-west-1".into())),
                ("feature.flag", AnyValue::String("new-checkout".into())),
            ];
            for (k, v) in extra.into_iter().take(n_attrs - 5) {
                attrs.push((k.into(), v));
            }
            spans.push(Span {
                resource: self.resources[svc].clone(),
                scope: self.scope.clone(),
                trace_id: TraceId(tid),
                span_id: SpanId(((self.rng.next() & !0xff) | (i as u64 + 1)).to_le_bytes()),
                parent_span_id: None,
                trace_state: String::new(),
                flags: 1,
                name: op_name(svc, op),
                kind,
                start_time_ns: s_start,
                end_time_ns: s_start + dur,
                attributes: attrs,
                dropped_attributes_count: 0,
                events: vec![],
                dropped_events_count: 0,
                links: vec![],
                dropped_links_count: 0,
                status: Status {
                    code: if error {
                        StatusCode::Error
                    } else {
                        StatusCode::Unset
                    },
                    message: if error {
                        "internal error".into()
                    } else {
                        String::new()
                    },
                },
            });
            let pid = parent.map(|p| spans[p].span_id);
            if let Some(last) = spans.last_mut() {
                last.parent_span_id = pid;
            }
        }
        spans
    }
}

fn pct(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 - 1.0) * q).round() as usize]
}

fn dir_bytes(p: &std::path::Path) -> u64 {
    std::fs::read_dir(p)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_bytes(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

fn to_proto(spans: &[Span]) -> ExportTraceServiceRequest {
    let kv = |k: &str, v: &AnyValue| KeyValue {
        key: k.into(),
        value: Some(PAny {
            value: Some(match v {
                AnyValue::Int(i) => any_value::Value::IntValue(*i),
                AnyValue::Bool(b) => any_value::Value::BoolValue(*b),
                other => any_value::Value::StringValue(other.to_text()),
            }),
        }),
        ..Default::default()
    };
    let mut by_res: Vec<(Arc<Resource>, Vec<PSpan>)> = Vec::new();
    for s in spans {
        let ps = PSpan {
            trace_id: s.trace_id.0.to_vec(),
            span_id: s.span_id.0.to_vec(),
            parent_span_id: s.parent_span_id.map_or(vec![], |p| p.0.to_vec()),
            name: s.name.clone(),
            kind: s.kind.as_i32(),
            start_time_unix_nano: s.start_time_ns,
            end_time_unix_nano: s.end_time_ns,
            attributes: s.attributes.iter().map(|(k, v)| kv(k, v)).collect(),
            status: Some(opentelemetry_proto::tonic::trace::v1::Status {
                code: s.status.code.as_i32(),
                message: s.status.message.clone(),
            }),
            ..Default::default()
        };
        match by_res.iter_mut().find(|(r, _)| Arc::ptr_eq(r, &s.resource)) {
            Some((_, v)) => v.push(ps),
            None => by_res.push((s.resource.clone(), vec![ps])),
        }
    }
    ExportTraceServiceRequest {
        resource_spans: by_res
            .into_iter()
            .map(|(r, spans)| ResourceSpans {
                resource: Some(PResource {
                    attributes: r.attributes.iter().map(|(k, v)| kv(k, v)).collect(),
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect(),
    }
}

fn otlp_ingest(total: u64, clients: u64) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    rt.block_on(async {
        let cfg = tern::config::Config::load(&tern::config::Sources {
            overrides: vec![
                format!("data_dir={:?}", tmp.path().display().to_string()),
                "server.http_addr=\"127.0.0.1:0\"".into(),
                "server.otlp_grpc_addr=\"127.0.0.1:0\"".into(),
                "server.otlp_http_addr=\"127.0.0.1:0\"".into(),
                "log.level=\"warn\"".into(),
            ],
            ..Default::default()
        })
        .unwrap();
        let server = tern::app::start(cfg).await.unwrap();
        let url = format!("http://{}", server.addrs.otlp_grpc);
        // Pre-build the requests (512 spans each, an SDK's default batch).
        let mut g = Gen::new();
        let base = now_ns() - 1_800_000_000_000;
        let mut reqs = Vec::new();
        let mut pending: Vec<Span> = Vec::new();
        let mut made = 0u64;
        let mut t = 0u64;
        while made < total {
            let tr = g.trace(base + t * 1_000_000);
            t += 1;
            made += tr.len() as u64;
            pending.extend(tr);
            if pending.len() >= 512 {
                reqs.push(to_proto(&pending));
                pending.clear();
            }
        }
        if !pending.is_empty() {
            reqs.push(to_proto(&pending));
        }
        let reqs = Arc::new(reqs);
        let started = Instant::now();
        let mut tasks = Vec::new();
        for c in 0..clients {
            let reqs = reqs.clone();
            let url = url.clone();
            tasks.push(tokio::spawn(async move {
                let mut client = TraceServiceClient::connect(url)
                    .await
                    .unwrap()
                    .max_encoding_message_size(64 << 20);
                let mut i = c as usize;
                while i < reqs.len() {
                    loop {
                        match client.export(reqs[i].clone()).await {
                            Ok(_) => break,
                            Err(s) if s.code() == tonic::Code::Unavailable => {
                                tokio::time::sleep(Duration::from_millis(20)).await
                            }
                            Err(s) => panic!("export failed: {s}"),
                        }
                    }
                    i += clients as usize;
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let acked = started.elapsed();
        while server.stores().traces.stats().records < made {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let applied = started.elapsed();
        println!(
            "{}",
            serde_json::json!({
                "bench": "otlp_ingest",
                "spans": made,
                "clients": clients,
                "acked_spans_per_sec": (made as f64 / acked.as_secs_f64()).round(),
                "stored_spans_per_sec": (made as f64 / applied.as_secs_f64()).round(),
            })
        );
        server.shutdown().await.unwrap();
    });
}

fn store_bench(total: u64, queries: u64) {
    let tmp = tempfile::tempdir().unwrap();
    let opts = TraceStoreOptions::new(tmp.path().join("traces"));
    let store = RocksTraceStore::open(&opts).unwrap();
    let mut g = Gen::new();
    let end = now_ns();
    // Spread over the last 6 hours.
    let window = 6 * 3_600_000_000_000u64;
    let avg_spans = 22;
    let n_traces = (total / avg_spans).max(1);
    let step = window / n_traces;
    let mut batch = Vec::with_capacity(1200);
    let mut ids = Vec::new();
    let (mut written, mut seq, mut t) = (0u64, 0u64, 0u64);
    let started = Instant::now();
    while written < total {
        let tr = g.trace(end - window + t * step);
        t += 1;
        if t % 97 == 0 {
            ids.push(tr[0].trace_id);
        }
        written += tr.len() as u64;
        batch.extend(tr);
        if batch.len() >= 1000 {
            seq += 1;
            store.write(seq, std::mem::take(&mut batch)).unwrap();
        }
    }
    if !batch.is_empty() {
        seq += 1;
        store.write(seq, batch).unwrap();
    }
    store.flush().unwrap();
    let load = started.elapsed();
    store.compact_all().unwrap();
    let bytes = dir_bytes(&opts.path);
    let per_cf: serde_json::Map<String, serde_json::Value> = store
        .column_family_sizes()
        .into_iter()
        .map(|(name, b)| {
            let per_span = (b as f64 / written as f64 * 10.0).round() / 10.0;
            (name.to_string(), serde_json::json!(per_span))
        })
        .collect();
    println!(
        "{}",
        serde_json::json!({
            "bench": "store_load",
            "spans": written,
            "traces": t,
            "load_spans_per_sec": (written as f64 / load.as_secs_f64()).round(),
            "disk_bytes": bytes,
            "bytes_per_span": (bytes as f64 / written as f64 * 10.0).round() / 10.0,
            "sst_bytes_per_span_by_column_family": per_cf,
        })
    );

    let mut rng = Rng(42);
    let mut lat = Vec::new();
    let mut spans_read = 0;
    for _ in 0..queries {
        let id = ids[rng.below(ids.len() as u64) as usize];
        let t0 = Instant::now();
        spans_read += store.trace(&id).unwrap().len();
        lat.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    println!(
        "{}",
        serde_json::json!({
            "bench": "trace_by_id",
            "queries": queries,
            "avg_spans": spans_read as f64 / queries as f64,
            "p50_ms": pct(&mut lat, 0.5),
            "p99_ms": pct(&mut lat, 0.99),
        })
    );

    time_searches(
        &store,
        "search_service_min_duration",
        queries.min(200),
        |i| TraceSearch {
            service: Some(SERVICES[(i % 10) as usize].into()),
            min_duration_ns: Some(60_000_000),
            start_ns: end - 3_600_000_000_000,
            end_ns: end + 1,
            limit: 20,
            ..Default::default()
        },
    );
    // A rare span attribute value (one of 100k users) over the last hour:
    // fewer hits than the limit, so the whole hour is scanned.
    time_searches(&store, "search_rare_attribute", queries.min(50), |i| {
        TraceSearch {
            attributes: vec![("user.id".into(), format!("user-{}", i * 997 % 100_000))],
            start_ns: end - 3_600_000_000_000,
            end_ns: end + 1,
            limit: 20,
            ..Default::default()
        }
    });
}

/// Runs `n` searches built by `query(i)` and prints their latency.
fn time_searches(store: &RocksTraceStore, bench: &str, n: u64, query: impl Fn(u64) -> TraceSearch) {
    let mut lat = Vec::new();
    let mut hits = 0;
    for i in 0..n {
        let q = query(i);
        let t0 = Instant::now();
        hits += store.search(&q).unwrap().traces.len();
        lat.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    println!(
        "{}",
        serde_json::json!({
            "bench": bench,
            "queries": lat.len(),
            "avg_hits": hits as f64 / lat.len().max(1) as f64,
            "p50_ms": pct(&mut lat, 0.5),
            "p99_ms": pct(&mut lat, 0.99),
        })
    );
}

fn main() {
    // `cargo test --benches` runs this without `--bench`: a tiny smoke run.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let otlp = env(
        "TERN_BENCH_OTLP_SPANS",
        if smoke { 2_000 } else { 1_000_000 },
    );
    let store = env(
        "TERN_BENCH_STORE_SPANS",
        if smoke { 20_000 } else { 10_000_000 },
    );
    let queries = env("TERN_BENCH_QUERIES", if smoke { 10 } else { 1_000 }).max(1);
    let clients = env("TERN_BENCH_CLIENTS", 4).max(1);
    if otlp > 0 {
        otlp_ingest(otlp, clients);
    }
    if store > 0 {
        store_bench(store, queries);
    }
}
