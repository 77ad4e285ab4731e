//! End-to-end log store benchmark (not a timed test): realistic generated
//! log lines sent over OTLP/HTTP to an in-process server, then
//!
//! - ingest rate end to end (acknowledged lines per second, and the rate
//!   until every line is committed in the index),
//! - bytes on disk per line (the `logs/` directory after a clean shutdown),
//! - search latency p50/p99 for a rare term and a common term (with the
//!   total count), a phrase with a field, and two words kept in block
//!   filters (a request id, a duration) over everything stored, through the
//!   store API.
//!
//! Lines: 6 services, 8 templates with variable fields (ids, durations,
//! addresses, users), 3 attributes, ~150–300 bytes each; one line in 100 000
//! carries the rare word `zebracorn`. Prints one JSON object.
//!
//! Run (release build, then the binary directly):
//! `cargo bench --bench log_store --no-run` and run the printed binary with
//! `--bench` and `LOGS_BENCH_LINES=10000000 LOGS_BENCH_CLIENTS=4 LOGS_BENCH_BATCH=2000`
//! (without `--bench`, as `cargo test --benches` runs it: a tiny smoke run)
//! (`LOGS_BENCH_DIR` keeps the data directory; default: a temp dir).

mod support;

use support::{env, now_ns, percentile, Rng};

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use tern::config::{Config, Sources};
use tern::storage::logs::index::{LogIndex, LogIndexOptions};
use tern::storage::logs::LogSearch;
use tern::storage::{LogStore, StoreLifecycle};

const SERVICES: [&str; 6] = ["checkout", "cart", "payment", "auth", "search", "inventory"];
const USERS: [&str; 8] = [
    "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi",
];

fn kv_str(k: &str, v: String) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v)),
        }),
        ..Default::default()
    }
}

fn kv_int(k: &str, v: i64) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(v)),
        }),
        ..Default::default()
    }
}

/// One line of a service: (severity number, text, body, status).
fn line(r: &mut Rng, n: u64, svc: &str) -> (i32, &'static str, String, i64) {
    if n % 100_000 == 77 {
        return (
            21,
            "FATAL",
            format!(
                "kernel panic zebracorn in worker {} pid={}",
                r.below(64),
                r.below(65_536)
            ),
            500,
        );
    }
    let id = r.below(1_000_000);
    let ms = r.below(2_000);
    let user = USERS[r.below(8) as usize];
    match r.below(16) {
        0..=5 => (
            9,
            "INFO",
            format!(
                "GET /api/v1/{svc}/items/{id} completed status=200 duration={ms}ms user={user} \
                 request_id={:016x} bytes={}",
                r.next(),
                r.below(100_000)
            ),
            200,
        ),
        6..=7 => (
            9,
            "INFO",
            format!(
                "POST /api/v1/{svc}/orders created order_id=ord-{id} items={} total={}.{:02} \
                 currency=EUR user={user}",
                r.below(10) + 1,
                r.below(500),
                r.below(100)
            ),
            201,
        ),
        8 => (
            5,
            "DEBUG",
            format!(
                "cache miss key=user:{id}:profile ttl={}s shard={} backend=redis-{}",
                r.below(3600),
                r.below(16),
                r.below(4)
            ),
            200,
        ),
        9 => (
            5,
            "DEBUG",
            format!(
                "db query select * from orders where customer_id = {id} took {ms}ms rows={}",
                r.below(50)
            ),
            200,
        ),
        10..=11 => (
            13,
            "WARN",
            format!(
                "slow response from upstream {} after {ms}ms retry={} of 3 route=/internal/{svc}/sync",
                SERVICES[r.below(6) as usize],
                r.below(3) + 1
            ),
            200,
        ),
        12 => (
            13,
            "WARN",
            format!(
                "rate limit approaching for client 10.{}.{}.{} usage={}% window=60s",
                r.below(256),
                r.below(256),
                r.below(256),
                80 + r.below(20)
            ),
            429,
        ),
        13 => (
            17,
            "ERROR",
            format!(
                "connection reset by peer addr=10.0.{}.{}:{} while reading response body after {ms}ms",
                r.below(256),
                r.below(256),
                1024 + r.below(60_000)
            ),
            502,
        ),
        14 => (
            17,
            "ERROR",
            format!(
                "payment ord-{id} declined: insufficient funds (card ending {:04}) user={user}",
                r.below(10_000)
            ),
            402,
        ),
        _ => (
            17,
            "ERROR",
            format!(
                "upstream timeout after {ms}ms calling {}.svc.cluster.local:8080 attempt={}",
                SERVICES[r.below(6) as usize],
                r.below(5) + 1
            ),
            504,
        ),
    }
}

/// A request of `n` lines for one service, numbered from `first`.
fn request(r: &mut Rng, first: u64, n: u64, svc: &str, t0: u64) -> ExportLogsServiceRequest {
    let log_records = (first..first + n)
        .map(|i| {
            let (sev, text, body, status) = line(r, i, svc);
            LogRecord {
                time_unix_nano: t0 + i * 1000,
                observed_time_unix_nano: t0 + i * 1000 + 500,
                severity_number: sev,
                severity_text: text.into(),
                body: Some(AnyValue {
                    value: Some(any_value::Value::StringValue(body)),
                }),
                attributes: vec![
                    kv_int("http.status_code", status),
                    kv_str("user.id", USERS[(i % 8) as usize].into()),
                    kv_str("thread", format!("worker-{}", i % 16)),
                ],
                ..Default::default()
            }
        })
        .collect();
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![
                    kv_str("service.name", svc.into()),
                    kv_str("host.name", format!("node-{}", first % 3)),
                ],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                log_records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn dir_bytes(p: &std::path::Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(p) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn main() {
    // `cargo test --benches` runs this without `--bench`: a tiny smoke run.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let lines = env("LOGS_BENCH_LINES", if smoke { 5_000 } else { 1_000_000 });
    let clients = env("LOGS_BENCH_CLIENTS", 4);
    let batch = env("LOGS_BENCH_BATCH", 2000);
    let runs = env("LOGS_BENCH_QUERIES", if smoke { 5 } else { 50 }) as usize;
    let tmp = tempfile::tempdir().unwrap();
    let dir = std::env::var("LOGS_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| tmp.path().to_path_buf());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let cfg = Config::load(&Sources {
        overrides: vec![
            format!("data_dir={:?}", dir.display().to_string()),
            "server.http_addr=\"127.0.0.1:0\"".into(),
            "server.otlp_grpc_addr=\"127.0.0.1:0\"".into(),
            "server.otlp_http_addr=\"127.0.0.1:0\"".into(),
            "log.level=\"warn\"".into(),
            "logs.retention=\"3650d\"".into(),
        ],
        ..Default::default()
    })
    .unwrap();
    let t0 = now_ns() - lines * 1000 - 1_000_000_000;
    let (ack_secs, stored_secs) = rt.block_on(async {
        let server = tern::app::start(cfg).await.unwrap();
        let url = format!("http://{}/v1/logs", server.addrs.otlp_http);
        let next = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let mut tasks = Vec::new();
        for c in 0..clients {
            let (url, next) = (url.clone(), next.clone());
            tasks.push(tokio::spawn(async move {
                let http = reqwest::Client::new();
                let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (c + 1));
                loop {
                    let first = next.fetch_add(batch, Ordering::Relaxed);
                    if first >= lines {
                        return;
                    }
                    let n = batch.min(lines - first);
                    let svc = SERVICES[((first / batch) % 6) as usize];
                    let body = request(&mut rng, first, n, svc, t0).encode_to_vec();
                    loop {
                        let r = http
                            .post(&url)
                            .header("content-type", "application/x-protobuf")
                            .body(body.clone())
                            .send()
                            .await
                            .unwrap();
                        if r.status() == 200 {
                            break;
                        }
                        // 429/503: back off as an OTLP sender does.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let ack = started.elapsed().as_secs_f64();
        while server.stores().logs.stats().records < lines {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        server.stores().logs.flush().unwrap();
        let stored = started.elapsed().as_secs_f64();
        server.shutdown().await.unwrap();
        (ack, stored)
    });
    let logs_dir = dir.join("logs");
    let disk = dir_bytes(&logs_dir);
    let store = LogIndex::open(
        &logs_dir,
        LogIndexOptions {
            retention: None,
            ..Default::default()
        },
    )
    .unwrap();
    let measure = |q: &str| {
        let filter = tern::query::logs::parse(q).unwrap();
        let mut ms = Vec::new();
        let mut total = 0;
        for _ in 0..runs {
            let s = LogSearch::new(filter.clone(), 0, u64::MAX, 100);
            let t = Instant::now();
            total = store.search(&s).unwrap().total;
            ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
        let (p50, p99) = (percentile(&mut ms, 0.5), percentile(&mut ms, 0.99));
        serde_json::json!({"query": q, "matches": total, "p50_ms": p50, "p99_ms": p99})
    };
    // Bytes per line by component and field, largest first.
    let mut usage: Vec<((String, String), u64)> =
        store.space_usage().unwrap().into_iter().collect();
    usage.sort_by_key(|u| std::cmp::Reverse(u.1));
    let mut by_kind: std::collections::BTreeMap<String, f64> = Default::default();
    for ((kind, _), b) in &usage {
        *by_kind.entry(kind.clone()).or_default() += *b as f64 / lines as f64;
    }
    let by_field: Vec<String> = usage
        .iter()
        .filter(|u| u.1 > 0)
        .map(|((kind, field), b)| format!("{kind}/{field} {:.2}", *b as f64 / lines as f64))
        .collect();
    let rare = measure("zebracorn");
    let common = measure("completed");
    let phrase = measure("\"connection reset\" AND service:payment");
    // Words with digits of 5+ bytes live in block filters: a request id
    // (one line) and a duration shared by ~1 line in 3,000.
    let request_id = {
        let s = LogSearch::new(
            tern::query::logs::parse("completed").unwrap(),
            0,
            u64::MAX,
            1,
        );
        let page = store.search(&s).unwrap();
        let body = page.records[0].record.body.to_text();
        let id = body
            .split("request_id=")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .unwrap()
            .to_string();
        measure(&id)
    };
    let duration = measure("1234ms");
    store.close().unwrap();
    let avg_line: f64 = {
        let mut r = Rng(1);
        let n = 10_000;
        (0..n)
            .map(|i| line(&mut r, i, "checkout").2.len())
            .sum::<usize>() as f64
            / n as f64
    };
    println!(
        "{}",
        serde_json::json!({
            "lines": lines,
            "clients": clients,
            "batch": batch,
            "avg_body_bytes": avg_line,
            "ingest_acked_lines_per_s": lines as f64 / ack_secs,
            "ingest_committed_lines_per_s": lines as f64 / stored_secs,
            "disk_bytes": disk,
            "disk_bytes_per_line": disk as f64 / lines as f64,
            "bytes_per_line_by_component": by_kind,
            "bytes_per_line_by_field": by_field,
            "search_rare": rare,
            "search_common": common,
            "search_phrase_and_field": phrase,
            "search_block_word_rare": request_id,
            "search_block_word_common": duration,
        })
    );
}
