//! SQL benchmark (not a timed test): fills the real stores on a temp dir
//! straight through their write APIs, then times three queries through the
//! SQL engine (DataFusion over the table providers):
//!
//! - a group-by over every metric sample, by the `code` label column and
//!   by a lookup in the `labels` map:
//!   `SELECT code, count(*), avg(value) FROM metrics
//!    WHERE metric = 'http_requests_total' GROUP BY 1`,
//! - a full-text count over every log line:
//!   `SELECT count(*) FROM logs WHERE search('timeout')`,
//! - a percentile per service over every span:
//!   `SELECT service, approx_percentile_cont(duration_ms, 0.99) FROM spans GROUP BY service`.
//!
//! Data: metrics are 10 000 series (`http_requests_total` by job, instance,
//! code, method) with one sample every 15 s; logs are ~150-byte lines of 6
//! services and 8 templates, one in 10 containing `timeout`; spans are traces
//! of 6 services and 5 operations each with log-normal durations. Prints one
//! JSON object with the fill rates and p50/min/max latency per query.
//!
//! Run: `cargo bench --bench sql` (defaults 100M samples, 10M lines, 10M
//! spans; override with `SQL_BENCH_SAMPLES`, `SQL_BENCH_LOGS`,
//! `SQL_BENCH_SPANS`, `SQL_BENCH_RUNS`). Without `--bench` (as
//! `cargo test --benches` runs it) it is a tiny smoke run that checks the
//! answers.

mod support;

use support::{env, now_ns, percentile, Rng};

use std::sync::Arc;
use std::time::{Duration, Instant};

use tern::model::{
    AnyValue, LogRecord, Resource, Sample, Scope, Series, Span, SpanId, SpanKind, Status,
    StatusCode, TraceId,
};
use tern::query::sql::{Sources, SqlEngine, SqlLimits};
use tern::storage::logs::index::{LogIndex, LogIndexOptions};
use tern::storage::metrics::{MetricsOptions, ParquetMetricStore};
use tern::storage::traces::{RocksTraceStore, TraceStoreOptions};
use tern::storage::{LogStore, MetricStore, StoreLifecycle, TraceStore};

const SERVICES: [&str; 6] = ["checkout", "cart", "payment", "auth", "search", "inventory"];
const OPS: [&str; 5] = [
    "GET /",
    "POST /items",
    "GET /items/{id}",
    "db query",
    "cache get",
];

fn resource(service: &str) -> Arc<Resource> {
    Arc::new(Resource {
        attributes: vec![
            ("service.name".into(), AnyValue::String(service.into())),
            ("host.name".into(), AnyValue::String(format!("{service}-1"))),
        ],
        ..Default::default()
    })
}

fn fill_metrics(store: &ParquetMetricStore, samples: u64) -> Duration {
    let started = Instant::now();
    let series_n = 10_000u64.min(samples.max(1));
    let per_series = samples.div_ceil(series_n);
    let step_ms = 15_000i64;
    let end_ms = (now_ns() / 1_000_000) as i64;
    let start_ms = end_ms - per_series as i64 * step_ms;
    let codes = ["200", "201", "404", "500"];
    let labels: Vec<Vec<(String, String)>> = (0..series_n)
        .map(|i| {
            let mut l = vec![
                ("__name__".to_string(), "http_requests_total".to_string()),
                ("code".into(), codes[(i % 4) as usize].into()),
                (
                    "instance".into(),
                    format!("10.0.{}.{}:8080", i / 250, i % 250),
                ),
                ("job".into(), SERVICES[(i % 6) as usize].into()),
                (
                    "method".into(),
                    if i % 3 == 0 { "POST" } else { "GET" }.into(),
                ),
            ];
            l.sort();
            l
        })
        .collect();
    // Written in time slices of every series, as a scraper would; the head
    // is flushed to Parquet every 10M samples.
    let slice = 360u64;
    let mut seq = 1;
    let mut since_flush = 0u64;
    let mut t0 = 0u64;
    while t0 < per_series {
        let t1 = (t0 + slice).min(per_series);
        let batch: Vec<Series> = labels
            .iter()
            .enumerate()
            .map(|(i, l)| Series {
                labels: l.clone(),
                samples: (t0..t1)
                    .map(|k| Sample {
                        t_ms: start_ms + k as i64 * step_ms,
                        v: (k * (i as u64 % 7 + 1)) as f64,
                    })
                    .collect(),
            })
            .collect();
        store.write_series(seq, batch).expect("write series");
        seq += 1;
        since_flush += (t1 - t0) * series_n;
        if since_flush >= 10_000_000 {
            store.flush_head(true).expect("flush");
            since_flush = 0;
        }
        t0 = t1;
    }
    store.flush_head(true).expect("flush");
    started.elapsed()
}

fn fill_logs(store: &LogIndex, lines: u64) -> Duration {
    let started = Instant::now();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let resources: Vec<Arc<Resource>> = SERVICES.iter().map(|s| resource(s)).collect();
    let scope = Arc::new(Scope::default());
    let end = now_ns();
    let start = end - 6 * 3_600 * 1_000_000_000;
    let span = (end - start) / lines.max(1);
    let mut seq = 1;
    let mut i = 0u64;
    while i < lines {
        let n = 10_000.min(lines - i);
        let batch: Vec<LogRecord> = (0..n)
            .map(|k| {
                let j = i + k;
                let user = rng.below(10_000);
                let ms = rng.below(2_000);
                let body = match rng.below(10) {
                    0 => format!("upstream timeout after {ms}ms calling inventory for user {user}"),
                    1 => format!(
                        "payment {} declined for user {user}: insufficient funds",
                        rng.below(1 << 30)
                    ),
                    2 => format!("cache miss for key session:{user}:{}", rng.below(1 << 20)),
                    3 => format!(
                        "connection reset by peer while talking to db-{}",
                        rng.below(8)
                    ),
                    4 => format!(
                        "user {user} logged in from 10.1.{}.{}",
                        rng.below(256),
                        rng.below(256)
                    ),
                    5 => format!("POST /api/cart/{} 201 {ms}ms", rng.below(1 << 24)),
                    6 => format!(
                        "slow query took {ms}ms: SELECT * FROM orders WHERE user_id = {user}"
                    ),
                    _ => format!(
                        "GET /api/items/{} 200 {ms}ms bytes={}",
                        rng.below(1 << 20),
                        rng.below(1 << 16)
                    ),
                };
                let sev = [9, 9, 9, 13, 17, 5][rng.below(6) as usize];
                LogRecord {
                    resource: resources[(j % 6) as usize].clone(),
                    scope: scope.clone(),
                    time_ns: start + j * span,
                    observed_time_ns: start + j * span,
                    severity_number: sev,
                    severity_text: String::new(),
                    body: AnyValue::String(body),
                    attributes: vec![("user.id".into(), AnyValue::Int(user as i64))],
                    dropped_attributes_count: 0,
                    flags: 0,
                    trace_id: Some(TraceId(
                        rng.next().to_be_bytes().repeat(2).try_into().unwrap(),
                    )),
                    span_id: Some(SpanId(rng.next().to_be_bytes())),
                    event_name: String::new(),
                }
            })
            .collect();
        store.write(seq, batch).expect("write logs");
        seq += 1;
        i += n;
    }
    store.flush().expect("commit");
    started.elapsed()
}

fn fill_spans(store: &RocksTraceStore, spans: u64) -> Duration {
    let started = Instant::now();
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let resources: Vec<Arc<Resource>> = SERVICES.iter().map(|s| resource(s)).collect();
    let scope = Arc::new(Scope::default());
    let end = now_ns();
    let start = end - 6 * 3_600 * 1_000_000_000;
    let per_trace = 5u64;
    let traces = spans.div_ceil(per_trace);
    let gap = (end - start) / traces.max(1);
    let mut seq = 1;
    let mut batch = Vec::with_capacity(10_000);
    for t in 0..traces {
        let mut tid = [0u8; 16];
        tid[..8].copy_from_slice(&rng.next().to_be_bytes());
        tid[8..].copy_from_slice(&rng.next().to_be_bytes());
        let t_start = start + t * gap;
        for s in 0..per_trace {
            let svc = ((t + s) % 6) as usize;
            // Log-normal-ish durations: most fast, a long tail.
            let dur_ms = (rng.unit() * 3.0).exp() * (1.0 + s as f64);
            let error = rng.below(50) == 0;
            batch.push(Span {
                resource: resources[svc].clone(),
                scope: scope.clone(),
                trace_id: TraceId(tid),
                span_id: SpanId((t * per_trace + s + 1).to_be_bytes()),
                parent_span_id: (s > 0).then(|| SpanId((t * per_trace + 1).to_be_bytes())),
                trace_state: String::new(),
                flags: 0,
                name: OPS[(s % 5) as usize].into(),
                kind: if s == 0 {
                    SpanKind::Server
                } else {
                    SpanKind::Client
                },
                start_time_ns: t_start + s * 1_000_000,
                end_time_ns: t_start + s * 1_000_000 + (dur_ms * 1e6) as u64,
                attributes: vec![(
                    "http.status_code".into(),
                    AnyValue::Int(if error { 500 } else { 200 }),
                )],
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
                    message: String::new(),
                },
            });
        }
        if batch.len() >= 10_000 {
            store
                .write(seq, std::mem::take(&mut batch))
                .expect("write spans");
            seq += 1;
        }
    }
    if !batch.is_empty() {
        store.write(seq, batch).expect("write spans");
    }
    store.flush().expect("flush");
    started.elapsed()
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (samples, lines, spans, runs) = if full {
        (
            env("SQL_BENCH_SAMPLES", 100_000_000),
            env("SQL_BENCH_LOGS", 10_000_000),
            env("SQL_BENCH_SPANS", 10_000_000),
            env("SQL_BENCH_RUNS", 5) as usize,
        )
    } else {
        (40_000, 3_000, 3_000, 1)
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let metrics = Arc::new(
        ParquetMetricStore::open(
            &dir.path().join("metrics"),
            MetricsOptions {
                head_flush_ms: i64::MAX,
                ..MetricsOptions::default()
            },
            None,
        )
        .expect("metrics store"),
    );
    let logs = Arc::new(
        LogIndex::open(
            &dir.path().join("logs"),
            LogIndexOptions {
                partition: Duration::from_secs(3_600),
                ..LogIndexOptions::default()
            },
        )
        .expect("log store"),
    );
    let traces = Arc::new(
        RocksTraceStore::open(&TraceStoreOptions::new(dir.path().join("traces")))
            .expect("trace store"),
    );
    let fill_m = fill_metrics(&metrics, samples);
    let fill_l = fill_logs(&logs, lines);
    let fill_s = fill_spans(&traces, spans);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let registry = prometheus::Registry::new();
    let engine = SqlEngine::new(
        SqlLimits {
            timeout: Duration::from_secs(600),
            memory_bytes: 4 << 30,
            ..SqlLimits::default()
        },
        &registry,
    )
    .expect("engine");
    let sources = Sources {
        traces: traces.clone() as Arc<dyn TraceStore>,
        logs: logs.clone() as Arc<dyn LogStore>,
        metrics: metrics.clone() as Arc<dyn MetricStore>,
    };
    let queries = [
        (
            "metrics group-by (map lookup)",
            "SELECT labels['code'] AS code, count(*) AS n, avg(value) AS avg \
             FROM metrics WHERE metric = 'http_requests_total' GROUP BY 1 ORDER BY 1",
        ),
        (
            "metrics group-by (label column)",
            "SELECT code, count(*) AS n, avg(value) AS avg \
             FROM metrics WHERE metric = 'http_requests_total' GROUP BY 1 ORDER BY 1",
        ),
        (
            "logs full-text count",
            "SELECT count(*) FROM logs WHERE search('timeout')",
        ),
        (
            "spans p99 per service",
            "SELECT service, approx_percentile_cont(duration_ms, 0.99) AS p99, count(*) AS n \
             FROM spans GROUP BY service ORDER BY service",
        ),
    ];
    let mut results = Vec::new();
    for (name, q) in queries {
        let mut lat = Vec::new();
        let mut answer = serde_json::Value::Null;
        for _ in 0..runs {
            let t = Instant::now();
            let out = rt
                .block_on(engine.query(sources.clone(), q, 1000))
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            lat.push(t.elapsed().as_secs_f64() * 1e3);
            answer = tern::query::sql::output::to_json(&out);
        }
        lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
        // The answers count every record once.
        let rows = answer["rows"].as_array().cloned().unwrap_or_default();
        match name {
            "metrics group-by (map lookup)" | "metrics group-by (label column)" => {
                let n: u64 = rows.iter().map(|r| r[1].as_u64().unwrap()).sum();
                assert!(n >= samples && n < samples + 10_000, "{n} samples counted");
            }
            "logs full-text count" => {
                let n = rows[0][0].as_u64().unwrap();
                assert!(n > 0 && n < lines, "{n} timeouts among {lines} lines");
            }
            _ => {
                let n: u64 = rows.iter().map(|r| r[2].as_u64().unwrap()).sum();
                assert!(n >= spans && n < spans + 5, "{n} spans counted");
            }
        }
        results.push(serde_json::json!({
            "query": name,
            "sql": q,
            "p50_ms": percentile(&mut lat, 0.5),
            "min_ms": lat[0],
            "max_ms": lat[lat.len() - 1],
            "runs": runs,
            "scanned": answer["scanned"],
            "rows": rows,
        }));
    }
    let report = serde_json::json!({
        "samples": samples,
        "log_lines": lines,
        "spans": spans,
        "fill_seconds": {
            "metrics": fill_m.as_secs_f64(),
            "logs": fill_l.as_secs_f64(),
            "spans": fill_s.as_secs_f64(),
        },
        "queries": results,
    });
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
    logs.close().ok();
    traces.close().ok();
    metrics.close().ok();
}
