//! Load benchmark of the metrics store (not a timed test). Modes:
//!
//! - `disk [SERIES] [HOURS]`: bytes per sample on disk for SERIES series
//!   scraped every 15 s for HOURS hours of realistic values, written
//!   directly to the Parquet store (flushed every 2 h of data, as the head
//!   would be), plus memory per active series of the head.
//! - `ingest [SECONDS]`: starts tern in-process on a temp dir and measures
//!   samples/s over remote_write (HTTP) and over OTLP/gRPC.
//! - `remote-write URL [SECONDS] [DATA_DIR]`: sends the same remote_write
//!   load to any receiver (tern, Prometheus, VictoriaMetrics) and reports
//!   samples/s and, with DATA_DIR, bytes on disk per sample afterwards
//!   (used by `scripts/bench-metrics-compare.sh`).
//!
//! Every result is one JSON line on stdout.
//!
//! Run: `cargo bench --bench metrics_store -- disk 10000 24`

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::metrics::v1 as pm;
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use tern::ingest::remote_write::{Label, PromSample, TimeSeries, WriteRequest};
use tern::model::{Sample, Series};
use tern::storage::metrics::{MetricsOptions, ParquetMetricStore};
use tern::storage::{MetricStore, StoreLifecycle};

const STEP_MS: i64 = 15_000;

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// How a synthetic series evolves.
#[derive(Clone, Copy)]
enum Kind {
    /// Monotonic integer counter with bursty increments (requests, bytes).
    Counter,
    /// Slowly wandering float gauge with 2 decimals (temperatures, load).
    Gauge,
    /// Integer gauge that changes rarely (memory in bytes, open fds).
    Steady,
    /// Constant (up, info series, build info).
    Constant,
}

struct SynthSeries {
    labels: Vec<(String, String)>,
    kind: Kind,
    value: f64,
}

/// `n` series like a fleet of scraped services: 100 metric names over
/// n/100 instances, a mix of counters, gauges and constants.
fn fleet(n: usize, seed: u64) -> Vec<SynthSeries> {
    let mut rng = Rng(seed | 1);
    (0..n)
        .map(|i| {
            let metric = i % 100;
            let instance = i / 100;
            let kind = match metric % 10 {
                0..=4 => Kind::Counter,
                5 | 6 => Kind::Gauge,
                7 | 8 => Kind::Steady,
                _ => Kind::Constant,
            };
            let name = match kind {
                Kind::Counter => format!("app_requests_{metric}_total"),
                Kind::Gauge => format!("app_load_{metric}"),
                Kind::Steady => format!("process_memory_{metric}_bytes"),
                Kind::Constant => format!("app_up_{metric}"),
            };
            let mut labels = vec![
                ("__name__".to_string(), name),
                (
                    "instance".into(),
                    format!("10.0.{}.{}:9100", instance / 250, instance % 250),
                ),
                ("job".into(), format!("service-{}", instance % 20)),
            ];
            if metric % 3 == 0 {
                labels.push(("method".into(), ["GET", "POST", "PUT"][i % 3].into()));
            }
            labels.sort();
            let value = match kind {
                Kind::Counter => rng.below(1_000_000) as f64,
                Kind::Gauge => rng.below(10_000) as f64 / 100.0,
                Kind::Steady => (rng.below(512) as f64 + 64.0) * 1_048_576.0,
                Kind::Constant => 1.0,
            };
            SynthSeries {
                labels,
                kind,
                value,
            }
        })
        .collect()
}

fn advance(s: &mut SynthSeries, rng: &mut Rng) {
    match s.kind {
        Kind::Counter => s.value += rng.below(200) as f64,
        Kind::Gauge => {
            let step = (rng.below(21) as f64 - 10.0) / 100.0;
            s.value = ((s.value + step) * 100.0).round() / 100.0;
        }
        Kind::Steady => {
            if rng.below(20) == 0 {
                s.value += (rng.below(64) as f64 - 32.0) * 4096.0;
            }
        }
        Kind::Constant => {}
    }
}

/// Scrape timestamps jitter by a few milliseconds, as real scrapes do.
fn scrape_ts(base: i64, step: i64, rng: &mut Rng) -> i64 {
    base + step * STEP_MS + rng.below(5) as i64
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map(|pages| pages * 4096)
        .unwrap_or(0)
}

fn dir_bytes(p: &std::path::Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => total += dir_bytes(&e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

fn disk(series: usize, hours: i64) {
    let dir = tempfile::tempdir().expect("temp dir");
    let opts = MetricsOptions {
        head_flush_ms: i64::MAX,
        compaction_files: 1000,
        ..MetricsOptions::default()
    };
    let store = ParquetMetricStore::open(dir.path(), opts, None).expect("open store");
    let mut fleet = fleet(series, 42);
    let mut rng = Rng(7);
    let steps = hours * 3600 * 1000 / STEP_MS;
    let start = now_ms() - hours * 3_600_000;
    let base = start - start.rem_euclid(2 * 3_600_000);
    let rss0 = rss_bytes();
    let mut rss_after_first_head = 0;
    let started = Instant::now();
    let per_flush = 2 * 3_600_000 / STEP_MS;
    let mut seq = 0;
    for step in 0..steps {
        seq += 1;
        let batch: Vec<Series> = fleet
            .iter_mut()
            .map(|s| {
                advance(s, &mut rng);
                Series {
                    labels: s.labels.clone(),
                    samples: vec![Sample {
                        t_ms: scrape_ts(base, step, &mut rng),
                        v: s.value,
                    }],
                }
            })
            .collect();
        store.write_series(seq, batch).expect("write");
        if (step + 1) % per_flush == 0 {
            if rss_after_first_head == 0 {
                rss_after_first_head = rss_bytes();
            }
            store.flush_head(true).expect("flush");
        }
    }
    store.close().expect("close");
    let samples = steps as u64 * series as u64;
    let bytes = dir_bytes(dir.path());
    let stats = store.stats();
    println!(
        "{}",
        serde_json::json!({
            "bench": "metrics_disk",
            "series": series,
            "hours": hours,
            "scrape_interval_s": STEP_MS / 1000,
            "samples": samples,
            "disk_bytes": bytes,
            "bytes_per_sample": bytes as f64 / samples as f64,
            "store_disk_bytes": stats.disk_bytes,
            "write_seconds": started.elapsed().as_secs_f64(),
            "write_samples_per_s": samples as f64 / started.elapsed().as_secs_f64(),
            "head_rss_bytes_per_series_2h": (rss_after_first_head.saturating_sub(rss0)) as f64 / series as f64,
        })
    );
}

fn write_request(
    fleet: &mut [SynthSeries],
    rng: &mut Rng,
    t: i64,
    per_series: usize,
) -> WriteRequest {
    WriteRequest {
        timeseries: fleet
            .iter_mut()
            .map(|s| TimeSeries {
                labels: s
                    .labels
                    .iter()
                    .map(|(n, v)| Label {
                        name: n.clone(),
                        value: v.clone(),
                    })
                    .collect(),
                samples: (0..per_series)
                    .map(|k| {
                        advance(s, rng);
                        PromSample {
                            value: s.value,
                            timestamp: t + k as i64 * STEP_MS,
                        }
                    })
                    .collect(),
            })
            .collect(),
    }
}

/// Sends remote_write batches from `clients` concurrent senders for
/// `seconds`; each sender owns 1000 series and sends 10 samples per series
/// per request (10k samples). Returns samples acknowledged per second.
async fn remote_write_load(url: String, seconds: u64, clients: usize) -> (f64, u64) {
    let sent = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let start_t = now_ms() - 3_600_000;
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (url, sent) = (url.clone(), sent.clone());
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut fleet = fleet(1000, 1000 + c as u64);
            for s in &mut fleet {
                s.labels.push(("client".into(), c.to_string()));
                s.labels.sort();
            }
            let mut rng = Rng(99 + c as u64);
            let mut round = 0i64;
            while Instant::now() < deadline {
                let req = write_request(&mut fleet, &mut rng, start_t + round * 10 * STEP_MS, 10);
                round += 1;
                let body = snap::raw::Encoder::new()
                    .compress_vec(&req.encode_to_vec())
                    .expect("snappy");
                let r = http
                    .post(&url)
                    .header("content-type", "application/x-protobuf")
                    .header("content-encoding", "snappy")
                    .header("x-prometheus-remote-write-version", "0.1.0")
                    .body(body)
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status().is_success() => {
                        sent.fetch_add(10_000, Ordering::Relaxed);
                    }
                    Ok(r) => {
                        eprintln!("remote_write answered {}", r.status());
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Err(e) => {
                        eprintln!("remote_write failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        }));
    }
    let started = Instant::now();
    for t in tasks {
        let _ = t.await;
    }
    let n = sent.load(Ordering::Relaxed);
    (n as f64 / started.elapsed().as_secs_f64(), n)
}

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

fn otlp_request(client: usize, round: u64) -> ExportMetricsServiceRequest {
    let t = (now_ms() as u64 - 3_600_000 + round * 15_000) * 1_000_000;
    let metrics = (0..100)
        .map(|m| pm::Metric {
            name: format!("otlp_gauge_{m}"),
            data: Some(pm::metric::Data::Gauge(pm::Gauge {
                data_points: (0..100)
                    .map(|i| pm::NumberDataPoint {
                        attributes: vec![kv("instance", &format!("i-{i}"))],
                        time_unix_nano: t,
                        value: Some(pm::number_data_point::Value::AsDouble((round + i) as f64)),
                        ..Default::default()
                    })
                    .collect(),
            })),
            ..Default::default()
        })
        .collect();
    ExportMetricsServiceRequest {
        resource_metrics: vec![pm::ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![kv("service.name", &format!("bench-{client}"))],
                ..Default::default()
            }),
            scope_metrics: vec![pm::ScopeMetrics {
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

async fn otlp_load(endpoint: String, seconds: u64, clients: usize) -> f64 {
    let sent = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (endpoint, sent) = (endpoint.clone(), sent.clone());
        tasks.push(tokio::spawn(async move {
            let mut client = MetricsServiceClient::connect(endpoint)
                .await
                .expect("grpc connect");
            let mut round = 0;
            while Instant::now() < deadline {
                let req = otlp_request(c, round);
                round += 1;
                if client.export(req).await.is_ok() {
                    sent.fetch_add(10_000, Ordering::Relaxed);
                }
            }
        }));
    }
    let started = Instant::now();
    for t in tasks {
        let _ = t.await;
    }
    sent.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

async fn ingest(seconds: u64) {
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = tern::config::Config::load(&tern::config::Sources {
        overrides: vec![
            format!("data_dir={:?}", dir.path().display().to_string()),
            "server.http_addr=\"127.0.0.1:0\"".into(),
            "server.otlp_grpc_addr=\"127.0.0.1:0\"".into(),
            "server.otlp_http_addr=\"127.0.0.1:0\"".into(),
            "log.level=\"warn\"".into(),
        ],
        ..Default::default()
    })
    .expect("config");
    let srv = tern::app::start(cfg).await.expect("server starts");
    let (rw, n) = remote_write_load(
        format!("http://{}/api/v1/write", srv.addrs.http),
        seconds,
        4,
    )
    .await;
    let otlp = otlp_load(format!("http://{}", srv.addrs.otlp_grpc), seconds, 4).await;
    let records = srv.stores().metrics.stats().records;
    srv.shutdown().await.expect("shutdown");
    println!(
        "{}",
        serde_json::json!({
            "bench": "metrics_ingest",
            "seconds_each": seconds,
            "remote_write_samples_per_s": rw,
            "remote_write_samples": n,
            "otlp_grpc_samples_per_s": otlp,
            "stored_samples": records,
            "disk_bytes_after_shutdown": dir_bytes(dir.path()),
        })
    );
}

fn main() {
    // `cargo test --benches` runs this without `--bench`: a tiny smoke run.
    if !std::env::args().any(|a| a == "--bench") && std::env::args().len() == 1 {
        disk(50, 1);
        return;
    }
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let arg = |i: usize, d: &str| args.get(i).cloned().unwrap_or_else(|| d.to_string());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    match arg(0, "disk").as_str() {
        "disk" => disk(
            arg(1, "10000").parse().unwrap_or(10_000),
            arg(2, "24").parse().unwrap_or(24),
        ),
        "ingest" => rt.block_on(ingest(arg(1, "20").parse().unwrap_or(20))),
        "remote-write" => {
            let url = arg(1, "http://127.0.0.1:3000/api/v1/write");
            let seconds = arg(2, "20").parse().unwrap_or(20);
            let (rate, n) = rt.block_on(remote_write_load(url.clone(), seconds, 4));
            let data = args.get(3).map(std::path::PathBuf::from);
            let bytes = data.as_deref().map(dir_bytes);
            println!(
                "{}",
                serde_json::json!({
                    "bench": "metrics_remote_write",
                    "url": url,
                    "samples_per_s": rate,
                    "samples": n,
                    "data_dir_bytes": bytes,
                    "bytes_per_sample": bytes.map(|b| b as f64 / n.max(1) as f64),
                })
            );
        }
        other => {
            eprintln!("unknown mode {other}: use disk, ingest or remote-write");
            std::process::exit(2);
        }
    }
}
