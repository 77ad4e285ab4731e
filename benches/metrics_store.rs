//! Load benchmark of the metrics store (not a timed test). Modes:
//!
//! - `disk [SERIES] [HOURS]`: bytes per sample on disk for SERIES series
//!   scraped every 15 s for HOURS hours of realistic values, written
//!   directly to the Parquet store (flushed every 2 h of data, as the head
//!   would be), plus memory per active series of the head once it holds
//!   10 min of samples (the default flush interval) and 2 h of samples.
//! - `store-query [SERIES] [HOURS] [RUNS]`: fills the store as `disk` does,
//!   adds 100 request-duration histograms (10 buckets each), then times
//!   PromQL range queries (24 h, 60 s step) evaluated in-process over it:
//!   `rate()` over 1k series, `histogram_quantile()` over the 1k bucket
//!   series and `sum by (code) (rate())` over 3k; each also repeated
//!   through the range-query result cache (`cached_repeat_p50_ms`).
//! - `ingest [SERIES] [HOURS] [SECONDS]`: starts tern in-process on a temp
//!   dir and measures samples/s over remote_write (HTTP; SERIES series
//!   scraped every 15 s over the HOURS before now) and over OTLP/gRPC (for
//!   SECONDS).
//! - `remote-write URL [SERIES] [HOURS]`: sends that remote_write load to any
//!   receiver (tern, Prometheus, VictoriaMetrics) and reports samples/s.
//! - `query BASE_URL [EXPR] [HOURS] [STEP_S] [RUNS]`: times a PromQL range
//!   query over the last HOURS against any Prometheus-compatible API.
//!   `scripts/bench-metrics-compare.sh` runs both against each system.
//!
//! Every result is one JSON line on stdout.
//!
//! Run: `cargo bench --bench metrics_store -- disk 10000 24`

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::metrics::v1 as pm;
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use tern::ingest::remote_write::{Label, PromSample, TimeSeries, WriteRequest};
use tern::model::time::now_ms;
use tern::model::{Sample, Series};
use tern::storage::metrics::{MetricsOptions, ParquetMetricStore};
use tern::storage::{MetricStore, SeriesSource, StoreLifecycle};

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
            if metric < 30 {
                // 30% of the series: the request counters that the compare
                // mode's `sum by (code) (rate(http_requests_total[5m]))` reads.
                let mut labels = vec![
                    ("__name__".to_string(), "http_requests_total".to_string()),
                    (
                        "code".into(),
                        ["200", "200", "404", "500", "503"][metric % 5].into(),
                    ),
                    ("handler".into(), format!("/api/v1/h{metric}")),
                    (
                        "instance".into(),
                        format!("10.0.{}.{}:9100", instance / 250, instance % 250),
                    ),
                    ("job".into(), format!("service-{}", instance % 20)),
                ];
                labels.sort();
                return SynthSeries {
                    labels,
                    kind: Kind::Counter,
                    value: rng.below(1_000_000) as f64,
                };
            }
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

/// Resident set size, after the allocator returned the pages it holds
/// for freed memory (write batches are freed after each write; they are
/// not memory per series).
fn rss_bytes() -> u64 {
    extern "C" {
        /// mimalloc (the global allocator, linked in by tern).
        fn mi_collect(force: bool);
    }
    // SAFETY: a plain C call without arguments to check; it only walks
    // the allocator's own free lists.
    unsafe { mi_collect(true) };
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

/// Series per write in `fill`.
const WRITE_BATCH: usize = 2000;

/// What `fill` wrote.
struct Filled {
    store: ParquetMetricStore,
    dir: tempfile::TempDir,
    samples: u64,
    seconds: f64,
    /// Resident memory per series once the head holds 10 min of samples
    /// (the server's default `head_flush_interval`) and 2 h of samples.
    head_rss_per_series_10m: f64,
    head_rss_per_series: f64,
    /// The store's own account (`head_bytes + series_bytes` of the
    /// cardinality stats) per series at the same two moments.
    accounted_per_series_10m: f64,
    accounted_per_series: f64,
    end_ms: i64,
}

/// Writes `series` series × `hours` of 15 s samples ending now directly to
/// a Parquet store, flushing every 2 h of data as the head would.
fn fill(series: usize, hours: i64) -> Filled {
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
    // One write batch built and freed first, so the allocator's pages for
    // the batches (freed after every write) are already in the baseline.
    let warm: Vec<Series> = fleet[..series.min(WRITE_BATCH)]
        .iter()
        .map(|s| Series {
            labels: s.labels.clone(),
            samples: vec![Sample { t_ms: 0, v: 0.0 }],
        })
        .collect();
    drop(warm);
    let rss0 = rss_bytes();
    let mut rss_after_first_head = 0;
    let mut rss_after_10m = 0;
    let (mut accounted_10m, mut accounted_2h) = (0, 0);
    let accounted = |store: &ParquetMetricStore| {
        let c = store.core().cardinality(0);
        c.head_bytes + c.series_bytes
    };
    let steps_10m = 10 * 60_000 / STEP_MS;
    let started = Instant::now();
    let per_flush = 2 * 3_600_000 / STEP_MS;
    let mut seq = 0;
    for step in 0..steps {
        // In requests of 2,000 series, as Prometheus sends them.
        for part in fleet.chunks_mut(WRITE_BATCH) {
            seq += 1;
            let batch: Vec<Series> = part
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
        }
        if step + 1 == steps_10m {
            rss_after_10m = rss_bytes();
            accounted_10m = accounted(&store);
        }
        if (step + 1) % per_flush == 0 {
            if rss_after_first_head == 0 {
                rss_after_first_head = rss_bytes();
                accounted_2h = accounted(&store);
            }
            store.flush_head(true).expect("flush");
        }
    }
    Filled {
        store,
        dir,
        samples: steps as u64 * series as u64,
        seconds: started.elapsed().as_secs_f64(),
        head_rss_per_series_10m: rss_after_10m.saturating_sub(rss0) as f64 / series as f64,
        accounted_per_series_10m: accounted_10m as f64 / series as f64,
        accounted_per_series: accounted_2h as f64 / series as f64,
        head_rss_per_series: rss_after_first_head.saturating_sub(rss0) as f64 / series as f64,
        end_ms: base + steps * STEP_MS,
    }
}

/// Upper bounds of the request-duration histograms' buckets.
const LES: [&str; 10] = [
    "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "+Inf",
];

/// Writes `histograms` request-duration histograms (10 `le` buckets each:
/// 10 handlers on histograms/10 instances) scraped every 15 s over the
/// `hours` before `end_ms` to `store`, flushing every 2 h of data as the
/// head would.
fn fill_histograms(store: &ParquetMetricStore, histograms: usize, hours: i64, end_ms: i64) {
    /// One histogram: labels of each bucket, cumulative counts, and how
    /// slow its handler is (the bucket index latencies centre on).
    type Histogram = (Vec<Vec<(String, String)>>, [f64; 10], u64);
    let mut rng = Rng(11);
    let mut hists: Vec<Histogram> = (0..histograms)
        .map(|i| {
            let (handler, instance) = (i % 10, i / 10);
            let labels = LES
                .iter()
                .map(|le| {
                    vec![
                        (
                            "__name__".to_string(),
                            "http_request_duration_seconds_bucket".to_string(),
                        ),
                        ("handler".into(), format!("/api/v1/h{handler}")),
                        (
                            "instance".into(),
                            format!("10.0.{}.{}:9100", instance / 250, instance % 250),
                        ),
                        ("job".into(), format!("service-{}", instance % 20)),
                        ("le".into(), le.to_string()),
                    ]
                })
                .collect();
            (labels, [0.0; 10], 2 + handler as u64 % 5)
        })
        .collect();
    let steps = hours * 3_600_000 / STEP_MS;
    let start = end_ms - steps * STEP_MS;
    let per_flush = 2 * 3_600_000 / STEP_MS;
    for step in 0..steps {
        let mut batch = Vec::with_capacity(histograms * LES.len());
        for (labels, counts, centre) in hists.iter_mut() {
            // A few dozen requests per scrape, each counted in the bucket
            // of its latency and every bucket above.
            for _ in 0..rng.below(40) {
                let b = (*centre + rng.below(5)).saturating_sub(2).min(9) as usize;
                for c in &mut counts[b..] {
                    *c += 1.0;
                }
            }
            let t_ms = scrape_ts(start, step, &mut rng);
            for (l, &v) in labels.iter().zip(counts.iter()) {
                batch.push(Series {
                    labels: l.clone(),
                    samples: vec![Sample { t_ms, v }],
                });
            }
        }
        store.write_series(0, batch).expect("write");
        if (step + 1) % per_flush == 0 {
            store.flush_head(true).expect("flush");
        }
    }
    store.flush_head(true).expect("flush");
}

/// Compressed bytes per column over every samples file under `p`, and the
/// series tables' total, from the Parquet footers.
fn column_bytes(p: &std::path::Path, out: &mut std::collections::BTreeMap<String, u64>) {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    for e in std::fs::read_dir(p).into_iter().flatten().flatten() {
        let path = e.path();
        if path.is_dir() {
            column_bytes(&path, out);
            continue;
        }
        let name = path.to_string_lossy().to_string();
        if name.ends_with(".series.parquet") {
            *out.entry("series table".into()).or_default() += e.metadata().map_or(0, |m| m.len());
        } else if name.ends_with(".samples.parquet") {
            let Ok(r) = std::fs::File::open(&path).map(SerializedFileReader::new) else {
                continue;
            };
            let Ok(r) = r else { continue };
            for rg in r.metadata().row_groups() {
                for c in rg.columns() {
                    *out.entry(c.column_path().string()).or_default() += c.compressed_size() as u64;
                }
            }
        }
    }
}

fn disk(series: usize, hours: i64) {
    let f = fill(series, hours);
    f.store.close().expect("close");
    let bytes = dir_bytes(f.dir.path());
    let mut columns = std::collections::BTreeMap::new();
    column_bytes(f.dir.path(), &mut columns);
    let per_sample: serde_json::Map<String, serde_json::Value> = columns
        .into_iter()
        .map(|(k, v)| (k, serde_json::json!(v as f64 / f.samples as f64)))
        .collect();
    let stats = f.store.stats();
    println!(
        "{}",
        serde_json::json!({
            "bench": "metrics_disk",
            "series": series,
            "hours": hours,
            "scrape_interval_s": STEP_MS / 1000,
            "samples": f.samples,
            "disk_bytes": bytes,
            "bytes_per_sample": bytes as f64 / f.samples as f64,
            "store_disk_bytes": stats.disk_bytes,
            "write_seconds": f.seconds,
            "write_samples_per_s": f.samples as f64 / f.seconds,
            "head_rss_bytes_per_series_10m": f.head_rss_per_series_10m,
            "head_rss_bytes_per_series_2h": f.head_rss_per_series,
            "head_accounted_bytes_per_series_10m": f.accounted_per_series_10m,
            "head_accounted_bytes_per_series_2h": f.accounted_per_series,
            "bytes_per_sample_by_column": per_sample,
        })
    );
}

/// PromQL range queries (24 h at a 60 s step) evaluated in-process over the
/// Parquet store: the storage read path plus the evaluator, no HTTP.
fn store_query(series: usize, hours: i64, runs: usize) {
    use tern::query::promql::{range_query, QueryLimits, QueryValue};
    let f = fill(series, hours);
    f.store.flush_head(true).expect("flush");
    // 100 histograms × 10 buckets beside the fleet.
    fill_histograms(&f.store, 100, hours, f.end_ms);
    eprintln!("filled {} samples; querying", f.store.stats().records);
    let end = f.end_ms;
    let start = end - hours * 3_600_000;
    let limits = QueryLimits::default();
    let queries = [
        // 10 handlers × every instance: 1,000 series at 10k series.
        (
            "rate_1k",
            r#"rate(http_requests_total{handler=~"/api/v1/h(1|2|3|4|5|6|7|8|9|10)"}[5m])"#,
        ),
        // 100 histograms × 10 buckets: 1,000 series.
        (
            "histogram_quantile_1k",
            "histogram_quantile(0.9, sum by (le, handler) (rate(http_request_duration_seconds_bucket[5m])))",
        ),
        (
            "sum_by_code_rate_3k",
            "sum by (code) (rate(http_requests_total[5m]))",
        ),
    ];
    for (name, q) in queries {
        let mut times = Vec::new();
        let mut select_times = Vec::new();
        let mut result_series = 0;
        // The storage read alone: the query's selector over its 5m windows.
        let selector = q
            .split_once("rate(")
            .and_then(|(_, r)| r.split_once("[5m]"))
            .map(|(sel, _)| sel)
            .expect("a rate() query");
        let matchers = match tern::query::promql::parse(selector).expect("selector") {
            promql_parser::parser::Expr::VectorSelector(vs) => {
                tern::query::promql::selector_matchers(&vs).remove(0)
            }
            _ => panic!("not a selector: {selector}"),
        };
        for _ in 0..runs.max(1) {
            let t0 = Instant::now();
            let r = range_query(&f.store, q, start, end, 60_000, &limits, None).expect("query");
            times.push(t0.elapsed().as_secs_f64() * 1000.0);
            if let QueryValue::Matrix(m) = r {
                result_series = m.len();
            }
            let t0 = Instant::now();
            let got = SeriesSource::select(&f.store, &matchers, start - 300_000 + 1, end)
                .expect("select");
            select_times.push(t0.elapsed().as_secs_f64() * 1000.0);
            drop(got);
        }
        // Repeats through the range-query result cache (the API's path)
        // with the range ending now: one run fills it, the timed runs
        // evaluate only the last 5 min.
        let cache = tern::query::promql::ResultCache::new(256 << 20);
        let mut cached_times = Vec::new();
        for _ in 0..runs.max(1) + 1 {
            let t0 = Instant::now();
            cache
                .range_query(&f.store, q, start, end, 60_000, &limits, None, end)
                .expect("cached query");
            cached_times.push(t0.elapsed().as_secs_f64() * 1000.0);
        }
        cached_times.remove(0);
        cached_times.sort_by(|a, b| a.total_cmp(b));
        times.sort_by(|a, b| a.total_cmp(b));
        select_times.sort_by(|a, b| a.total_cmp(b));
        let pick = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
        let select_p50 = select_times[(select_times.len() - 1) / 2];
        let cached_p50 = cached_times[(cached_times.len() - 1) / 2];
        println!(
            "{}",
            serde_json::json!({
                "bench": "metrics_store_query",
                "query": name,
                "expr": q,
                "series": series,
                "hours": hours,
                "step_s": 60,
                "result_series": result_series,
                "runs": times.len(),
                "p50_ms": pick(0.5),
                "p99_ms": pick(0.99),
                "select_p50_ms": select_p50,
                "cached_repeat_p50_ms": cached_p50,
            })
        );
    }
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

/// What a load run achieved.
struct LoadResult {
    samples: u64,
    seconds: f64,
    retries: u64,
    failed_requests: u64,
}

/// Sends `series` series scraped every 15 s for the `hours` before now, in
/// time order, from `clients` concurrent senders (each owns a slice of the
/// series; a request holds up to 1000 series × 10 samples). 429/503 answers
/// are retried after a pause.
async fn remote_write_load(url: String, series: usize, hours: i64, clients: usize) -> LoadResult {
    let sent = Arc::new(AtomicU64::new(0));
    let retries = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let steps = hours * 3_600_000 / STEP_MS;
    let start_t = now_ms() - hours * 3_600_000;
    let mut all = fleet(series, 42);
    let per_client = series.div_ceil(clients.max(1));
    let mut tasks = Vec::new();
    let started = Instant::now();
    for c in 0..clients {
        let mut mine: Vec<SynthSeries> = all.drain(..per_client.min(all.len())).collect();
        let (url, sent, retries, failed) =
            (url.clone(), sent.clone(), retries.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut rng = Rng(99 + c as u64);
            let mut step = 0i64;
            while step < steps {
                let n = (steps - step).min(10) as usize;
                for chunk in mine.chunks_mut(1000) {
                    let req = write_request(chunk, &mut rng, start_t + step * STEP_MS, n);
                    let samples = (chunk.len() * n) as u64;
                    let body = snap::raw::Encoder::new()
                        .compress_vec(&req.encode_to_vec())
                        .expect("snappy");
                    loop {
                        let r = http
                            .post(&url)
                            .header("content-type", "application/x-protobuf")
                            .header("content-encoding", "snappy")
                            .header("x-prometheus-remote-write-version", "0.1.0")
                            .body(body.clone())
                            .send()
                            .await;
                        match r {
                            Ok(r) if r.status().is_success() => {
                                sent.fetch_add(samples, Ordering::Relaxed);
                                break;
                            }
                            Ok(r) if r.status() == 429 || r.status() == 503 => {
                                retries.fetch_add(1, Ordering::Relaxed);
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                            Ok(r) => {
                                let code = r.status();
                                let text = r.text().await.unwrap_or_default();
                                if failed.fetch_add(1, Ordering::Relaxed) < 3 {
                                    eprintln!("remote_write answered {code}: {text}");
                                }
                                break;
                            }
                            Err(e) => {
                                if failed.fetch_add(1, Ordering::Relaxed) < 3 {
                                    eprintln!("remote_write failed: {e}");
                                }
                                break;
                            }
                        }
                    }
                }
                step += n as i64;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    LoadResult {
        samples: sent.load(Ordering::Relaxed),
        seconds: started.elapsed().as_secs_f64(),
        retries: retries.load(Ordering::Relaxed),
        failed_requests: failed.load(Ordering::Relaxed),
    }
}

/// Times a PromQL range query over the last `hours` (step `step_s`) against
/// any Prometheus-compatible API at `base`, `runs` times.
async fn query_bench(base: String, expr: String, hours: i64, step_s: u64, runs: usize) {
    let http = reqwest::Client::new();
    let end = now_ms() / 1000;
    let start = end - hours * 3600;
    let mut times = Vec::new();
    let mut series = 0;
    for _ in 0..runs.max(1) {
        let t0 = Instant::now();
        let r = http
            .post(format!("{base}/api/v1/query_range"))
            .form(&[
                ("query", expr.clone()),
                ("start", start.to_string()),
                ("end", end.to_string()),
                ("step", step_s.to_string()),
            ])
            .send()
            .await
            .expect("query sent");
        let body: serde_json::Value = r.json().await.expect("json answer");
        times.push(t0.elapsed().as_secs_f64() * 1000.0);
        if body["status"] != "success" {
            eprintln!("query failed: {body}");
            std::process::exit(1);
        }
        series = body["data"]["result"].as_array().map_or(0, |a| a.len());
    }
    times.sort_by(f64::total_cmp);
    let pct = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize];
    println!(
        "{}",
        serde_json::json!({
            "bench": "promql_range_query",
            "url": base,
            "query": expr,
            "hours": hours,
            "step_s": step_s,
            "result_series": series,
            "runs": times.len(),
            "p50_ms": pct(0.5),
            "p99_ms": pct(0.99),
        })
    );
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

/// One OTLP request: 100 gauges × 100 instances of `client`, at the
/// `round`-th 15 s step of the hour before now (a sender stops after the
/// hour's 240 steps).
fn otlp_request(client: usize, round: u64, start_ms: u64) -> ExportMetricsServiceRequest {
    let t = (start_ms + (round % 240) * 15_000) * 1_000_000;
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
            let start_ms = now_ms() as u64 - 3_600_000;
            while Instant::now() < deadline && round < 240 {
                let req = otlp_request(c, round, start_ms);
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

async fn ingest(series: usize, hours: i64, seconds: u64) {
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
    let rw = remote_write_load(
        format!("http://{}/api/v1/write", srv.addrs.http),
        series,
        hours,
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
            "remote_write_series": series,
            "remote_write_hours": hours,
            "remote_write_samples_per_s": rw.samples as f64 / rw.seconds,
            "remote_write_samples": rw.samples,
            "remote_write_retries": rw.retries,
            "remote_write_failed_requests": rw.failed_requests,
            "otlp_seconds": seconds,
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
        "ingest" => rt.block_on(ingest(
            arg(1, "10000").parse().unwrap_or(10_000),
            arg(2, "2").parse().unwrap_or(2),
            arg(3, "20").parse().unwrap_or(20),
        )),
        "remote-write" => {
            let url = arg(1, "http://127.0.0.1:3000/api/v1/write");
            let series = arg(2, "10000").parse().unwrap_or(10_000);
            let hours = arg(3, "24").parse().unwrap_or(24);
            let r = rt.block_on(remote_write_load(url.clone(), series, hours, 4));
            println!(
                "{}",
                serde_json::json!({
                    "bench": "metrics_remote_write",
                    "url": url,
                    "series": series,
                    "hours": hours,
                    "samples": r.samples,
                    "seconds": r.seconds,
                    "samples_per_s": r.samples as f64 / r.seconds,
                    "retries": r.retries,
                    "failed_requests": r.failed_requests,
                })
            );
        }
        "store-query" => store_query(
            arg(1, "10000").parse().unwrap_or(10_000),
            arg(2, "24").parse().unwrap_or(24),
            arg(3, "5").parse().unwrap_or(5),
        ),
        "query" => {
            let base = arg(1, "http://127.0.0.1:3000");
            let expr = arg(2, "sum by (code) (rate(http_requests_total[5m]))");
            let hours = arg(3, "24").parse().unwrap_or(24);
            let step = arg(4, "60").parse().unwrap_or(60);
            let runs = arg(5, "5").parse().unwrap_or(5);
            rt.block_on(query_bench(base, expr, hours, step, runs));
        }
        other => {
            eprintln!("unknown mode {other}: use disk, store-query, ingest, remote-write or query");
            std::process::exit(2);
        }
    }
}
