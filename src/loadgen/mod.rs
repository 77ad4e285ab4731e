//! The load generator (`tern loadgen`): sends realistic telemetry to a
//! running server over real OTLP (gRPC or HTTP/protobuf) and reports the
//! achieved throughput, rejected and retried requests, and ingest latency
//! percentiles as JSON.
//!
//! With `--records N` the requests are generated before the clock starts,
//! so the figures measure the server, not the generator.

pub mod bench;
pub mod gen;

pub use crate::model::time::now_ns;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use serde::Serialize;

use crate::model::Signal;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Grpc,
    Http,
}

impl std::str::FromStr for Protocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "grpc" => Ok(Protocol::Grpc),
            "http" | "http/protobuf" => Ok(Protocol::Http),
            other => Err(format!("unknown protocol {other:?}: use grpc or http")),
        }
    }
}

#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub signal: Signal,
    pub protocol: Protocol,
    /// host:port of the OTLP/gRPC receiver.
    pub grpc_addr: String,
    /// Base URL of the OTLP/HTTP receiver, e.g. http://127.0.0.1:4318.
    pub http_url: String,
    /// Records to send; generated up front. Without it, run for `duration`.
    pub records: Option<u64>,
    pub duration: Duration,
    /// Records per second across all workers; 0 = as fast as the server takes them.
    pub rate: u64,
    pub concurrency: usize,
    /// Records per request.
    pub batch_size: usize,
    /// Distinct metric series (metrics only).
    pub series: usize,
    pub seed: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LatencyMs {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl LatencyMs {
    /// Percentiles of durations in microseconds.
    pub fn from_micros(mut v: Vec<u64>) -> Self {
        if v.is_empty() {
            return LatencyMs {
                p50: 0.0,
                p90: 0.0,
                p99: 0.0,
                max: 0.0,
            };
        }
        v.sort_unstable();
        let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize] as f64 / 1000.0;
        LatencyMs {
            p50: at(0.5),
            p90: at(0.9),
            p99: at(0.99),
            max: at(1.0),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    pub signal: &'static str,
    pub protocol: Protocol,
    pub requests: u64,
    /// Records acknowledged by the server (sent minus rejected).
    pub records_accepted: u64,
    /// Records the server rejected as invalid (partial success).
    pub records_rejected: u64,
    /// Requests that failed for good (after retries).
    pub requests_failed: u64,
    /// Retries after 429/503/UNAVAILABLE.
    pub retries: u64,
    /// Protobuf bytes sent (uncompressed).
    pub bytes_sent: u64,
    pub elapsed_secs: f64,
    pub records_per_sec: f64,
    pub bytes_per_sec: f64,
    pub latency_ms: LatencyMs,
    /// Time spent generating requests before the clock started.
    pub generate_secs: f64,
}

/// One ready-to-send request.
#[derive(Clone)]
enum Payload {
    Traces(ExportTraceServiceRequest),
    Metrics(ExportMetricsServiceRequest),
    Logs(ExportLogsServiceRequest),
}

impl Payload {
    fn records(&self) -> u64 {
        (match self {
            Payload::Traces(r) => gen::count_traces(r),
            Payload::Metrics(r) => gen::count_metrics(r),
            Payload::Logs(r) => gen::count_logs(r),
        }) as u64
    }

    fn encode(&self) -> Vec<u8> {
        match self {
            Payload::Traces(r) => r.encode_to_vec(),
            Payload::Metrics(r) => r.encode_to_vec(),
            Payload::Logs(r) => r.encode_to_vec(),
        }
    }
}

struct Generators {
    traces: gen::TraceGen,
    logs: gen::LogGen,
    metrics: gen::MetricGen,
}

impl Generators {
    fn new(opts: &LoadOptions, worker: u64) -> Self {
        let seed = opts.seed.wrapping_mul(1_000_003).wrapping_add(worker);
        // Each worker owns a disjoint slice of the metric series.
        let per_worker = opts.series.div_ceil(opts.concurrency.max(1)).max(1);
        Generators {
            traces: gen::TraceGen::new(seed),
            logs: gen::LogGen::new(seed),
            metrics: gen::MetricGen::new(seed, per_worker),
        }
    }

    fn next(&mut self, signal: Signal, batch: usize) -> Payload {
        match signal {
            Signal::Traces => Payload::Traces(self.traces.batch(batch)),
            Signal::Logs => {
                if self.traces.recent.is_empty() {
                    self.traces.batch(50);
                }
                Payload::Logs(self.logs.batch(batch, &self.traces.recent))
            }
            Signal::Metrics => Payload::Metrics(self.metrics.batch(batch)),
        }
    }
}

enum Client {
    Grpc(Box<GrpcClients>),
    Http {
        client: reqwest::Client,
        base: String,
    },
}

struct GrpcClients {
    traces: TraceServiceClient<tonic::transport::Channel>,
    metrics: MetricsServiceClient<tonic::transport::Channel>,
    logs: LogsServiceClient<tonic::transport::Channel>,
}

/// What one send achieved.
enum Sent {
    Ok { rejected: u64 },
    Retry(Duration),
    Failed(String),
}

impl Client {
    async fn connect(opts: &LoadOptions) -> Result<Self, String> {
        match opts.protocol {
            Protocol::Grpc => {
                let ch =
                    tonic::transport::Endpoint::from_shared(format!("http://{}", opts.grpc_addr))
                        .map_err(|e| format!("bad grpc address: {e}"))?
                        .connect()
                        .await
                        .map_err(|e| format!("cannot connect to {}: {e}", opts.grpc_addr))?;
                let max = 256 << 20;
                Ok(Client::Grpc(Box::new(GrpcClients {
                    traces: TraceServiceClient::new(ch.clone()).max_decoding_message_size(max),
                    metrics: MetricsServiceClient::new(ch.clone()).max_decoding_message_size(max),
                    logs: LogsServiceClient::new(ch).max_decoding_message_size(max),
                })))
            }
            Protocol::Http => Ok(Client::Http {
                client: reqwest::Client::builder()
                    .pool_max_idle_per_host(64)
                    .build()
                    .map_err(|e| format!("http client: {e}"))?,
                base: opts.http_url.trim_end_matches('/').to_string(),
            }),
        }
    }

    async fn send(&mut self, p: &Payload, body: Option<&bytes::Bytes>) -> Sent {
        match self {
            Client::Grpc(c) => {
                let GrpcClients {
                    traces,
                    metrics,
                    logs,
                } = &mut **c;
                let res = match p {
                    Payload::Traces(r) => traces.export(r.clone()).await.map(|r| {
                        r.into_inner()
                            .partial_success
                            .map_or(0, |p| p.rejected_spans as u64)
                    }),
                    Payload::Metrics(r) => metrics.export(r.clone()).await.map(|r| {
                        r.into_inner()
                            .partial_success
                            .map_or(0, |p| p.rejected_data_points as u64)
                    }),
                    Payload::Logs(r) => logs.export(r.clone()).await.map(|r| {
                        r.into_inner()
                            .partial_success
                            .map_or(0, |p| p.rejected_log_records as u64)
                    }),
                };
                match res {
                    Ok(rejected) => Sent::Ok { rejected },
                    Err(st) if st.code() == tonic::Code::Unavailable => {
                        use tonic_types::StatusExt;
                        let delay = st
                            .get_details_retry_info()
                            .and_then(|i| i.retry_delay)
                            .unwrap_or(Duration::from_millis(200));
                        Sent::Retry(delay)
                    }
                    Err(st) => Sent::Failed(format!("{:?}: {}", st.code(), st.message())),
                }
            }
            Client::Http { client, base } => {
                let path = match p {
                    Payload::Traces(_) => "/v1/traces",
                    Payload::Metrics(_) => "/v1/metrics",
                    Payload::Logs(_) => "/v1/logs",
                };
                let body = body.cloned().unwrap_or_else(|| p.encode().into());
                let resp = client
                    .post(format!("{base}{path}"))
                    .header("content-type", "application/x-protobuf")
                    .body(body)
                    .send()
                    .await;
                let resp = match resp {
                    Ok(r) => r,
                    Err(e) => return Sent::Failed(e.to_string()),
                };
                let status = resp.status().as_u16();
                if status == 429 || status == 503 {
                    let secs = resp
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<u64>().ok())
                        .unwrap_or(1);
                    // Benchmarks want the pipe full: wait a fraction of Retry-After.
                    return Sent::Retry(Duration::from_millis((secs * 1000 / 10).max(50)));
                }
                let bytes = resp.bytes().await.unwrap_or_default();
                if status != 200 {
                    return Sent::Failed(format!(
                        "status {status}: {}",
                        String::from_utf8_lossy(&bytes)
                    ));
                }
                use opentelemetry_proto::tonic::collector::{logs, metrics, trace};
                let rejected = match p {
                    Payload::Traces(_) => trace::v1::ExportTraceServiceResponse::decode(bytes)
                        .ok()
                        .and_then(|r| r.partial_success)
                        .map_or(0, |p| p.rejected_spans as u64),
                    Payload::Metrics(_) => metrics::v1::ExportMetricsServiceResponse::decode(bytes)
                        .ok()
                        .and_then(|r| r.partial_success)
                        .map_or(0, |p| p.rejected_data_points as u64),
                    Payload::Logs(_) => logs::v1::ExportLogsServiceResponse::decode(bytes)
                        .ok()
                        .and_then(|r| r.partial_success)
                        .map_or(0, |p| p.rejected_log_records as u64),
                };
                Sent::Ok { rejected }
            }
        }
    }
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    accepted: AtomicU64,
    rejected: AtomicU64,
    failed: AtomicU64,
    retries: AtomicU64,
    bytes: AtomicU64,
}

const MAX_RETRIES: u32 = 20;

/// Runs the load and returns the report.
pub async fn run(opts: LoadOptions) -> Result<LoadReport, String> {
    if opts.concurrency == 0 || opts.batch_size == 0 {
        return Err("concurrency and batch size must be positive".into());
    }
    let workers = opts.concurrency;
    // Pre-generate when a record count is given.
    let gen_started = Instant::now();
    let mut queues: Vec<Vec<(Payload, Option<bytes::Bytes>)>> = vec![Vec::new(); workers];
    if let Some(total) = opts.records {
        let signal = opts.signal;
        let per_request = opts.batch_size;
        let requests = total.div_ceil(per_request as u64) as usize;
        let o = opts.clone();
        queues = tokio::task::spawn_blocking(move || {
            let mut queues: Vec<Vec<(Payload, Option<bytes::Bytes>)>> = vec![Vec::new(); workers];
            let mut gens: Vec<Generators> = (0..workers)
                .map(|w| Generators::new(&o, w as u64))
                .collect();
            for r in 0..requests {
                let w = r % workers;
                let p = gens[w].next(signal, per_request);
                let body = (o.protocol == Protocol::Http).then(|| bytes::Bytes::from(p.encode()));
                queues[w].push((p, body));
            }
            queues
        })
        .await
        .map_err(|e| format!("generator failed: {e}"))?;
    }
    let generate_secs = gen_started.elapsed().as_secs_f64();

    let counters = Arc::new(Counters::default());
    let started = Instant::now();
    let deadline = started + opts.duration;
    let per_worker_rate = if opts.rate > 0 {
        Some(opts.rate as f64 / workers as f64)
    } else {
        None
    };
    let mut tasks = Vec::new();
    for (w, queue) in queues.into_iter().enumerate() {
        let opts = opts.clone();
        let counters = counters.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = Client::connect(&opts).await?;
            let mut gens = Generators::new(&opts, w as u64);
            let mut latencies = Vec::new();
            let mut sent_records = 0u64;
            let mut queue = queue.into_iter();
            loop {
                let (payload, body) = if opts.records.is_some() {
                    match queue.next() {
                        Some(p) => p,
                        None => break,
                    }
                } else {
                    if Instant::now() >= deadline {
                        break;
                    }
                    (gens.next(opts.signal, opts.batch_size), None)
                };
                let n = payload.records();
                if let Some(rate) = per_worker_rate {
                    let due = started + Duration::from_secs_f64(sent_records as f64 / rate);
                    tokio::time::sleep_until(due.into()).await;
                }
                let t0 = Instant::now();
                let mut attempt = 0;
                loop {
                    match client.send(&payload, body.as_ref()).await {
                        Sent::Ok { rejected } => {
                            counters
                                .accepted
                                .fetch_add(n - rejected.min(n), Ordering::Relaxed);
                            counters.rejected.fetch_add(rejected, Ordering::Relaxed);
                            break;
                        }
                        Sent::Retry(d) if attempt < MAX_RETRIES => {
                            attempt += 1;
                            counters.retries.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(d).await;
                        }
                        Sent::Retry(_) => {
                            counters.failed.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                        Sent::Failed(e) => {
                            counters.failed.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(error = %e, "request failed");
                            break;
                        }
                    }
                }
                latencies.push(t0.elapsed().as_micros() as u64);
                sent_records += n;
                counters.requests.fetch_add(1, Ordering::Relaxed);
                let size = body
                    .as_ref()
                    .map_or_else(|| payload.encode().len(), |b| b.len());
                counters.bytes.fetch_add(size as u64, Ordering::Relaxed);
            }
            Ok::<_, String>(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.map_err(|e| format!("worker failed: {e}"))??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let c = &counters;
    let accepted = c.accepted.load(Ordering::Relaxed);
    let bytes = c.bytes.load(Ordering::Relaxed);
    Ok(LoadReport {
        signal: opts.signal.as_str(),
        protocol: opts.protocol,
        requests: c.requests.load(Ordering::Relaxed),
        records_accepted: accepted,
        records_rejected: c.rejected.load(Ordering::Relaxed),
        requests_failed: c.failed.load(Ordering::Relaxed),
        retries: c.retries.load(Ordering::Relaxed),
        bytes_sent: bytes,
        elapsed_secs: elapsed,
        records_per_sec: accepted as f64 / elapsed.max(1e-9),
        bytes_per_sec: bytes as f64 / elapsed.max(1e-9),
        latency_ms: LatencyMs::from_micros(latencies),
        generate_secs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let l = LatencyMs::from_micros((1..=100).map(|i| i * 1000).collect());
        assert_eq!(l.p50, 51.0);
        assert_eq!(l.p99, 99.0);
        assert_eq!(l.max, 100.0);
        assert_eq!(LatencyMs::from_micros(vec![]).max, 0.0);
    }
}
