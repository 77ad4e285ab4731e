//! The end-to-end benchmark (`tern bench`): starts a server on a temporary
//! data directory, drives each signal's load through real OTLP, stops the
//! server gracefully so everything is durable, measures bytes on disk per
//! record, restarts it and measures query latency percentiles. Writes the
//! results as JSON and as a Markdown table.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{LatencyMs, LoadOptions, LoadReport, Protocol};
use crate::model::Signal;

#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub out_dir: PathBuf,
    pub protocol: Protocol,
    pub spans: u64,
    pub logs: u64,
    pub samples: u64,
    pub series: usize,
    pub concurrency: usize,
    pub batch_size: usize,
    /// Repetitions of each query.
    pub query_runs: usize,
    /// Extra `--set key=value` for the server.
    pub server_settings: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ResourceUse {
    /// Peak resident memory of the server during the phase, bytes.
    pub peak_rss_bytes: u64,
    /// CPU seconds (user + system) the server used during the phase.
    pub cpu_secs: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct IngestResult {
    pub load: LoadReport,
    pub server: ResourceUse,
}

#[derive(Debug, Clone, Serialize)]
pub struct StorageResult {
    pub signal: &'static str,
    pub records: u64,
    pub dir: String,
    pub bytes: u64,
    pub bytes_per_record: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct QueryResult {
    pub name: String,
    pub request: String,
    pub runs: usize,
    pub errors: usize,
    pub latency_ms: LatencyMs,
    /// First error seen, if any.
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub machine: String,
    pub started_unix: u64,
    pub ingest: Vec<IngestResult>,
    pub storage: Vec<StorageResult>,
    pub wal_bytes_after_shutdown: u64,
    pub restart_secs: f64,
    pub idle_rss_bytes_after_restart: u64,
    pub queries: Vec<QueryResult>,
}

/// A `tern serve` child process and the addresses it bound.
pub struct ServerProc {
    pub child: Child,
    pub http: SocketAddr,
    pub grpc: SocketAddr,
    pub otlp_http: SocketAddr,
}

/// Starts `exe serve` over `data` on port 0 (with `--set` `settings`) and
/// reads the bound addresses from its JSON "tern is ready" log line.
pub fn spawn_server(exe: &Path, data: &Path, settings: &[String]) -> Result<ServerProc, String> {
    let mut cmd = Command::new(exe);
    cmd.arg("serve")
        .arg("--data-dir")
        .arg(data)
        .args([
            "--http-addr",
            "127.0.0.1:0",
            "--otlp-grpc-addr",
            "127.0.0.1:0",
            "--otlp-http-addr",
            "127.0.0.1:0",
        ])
        .args([
            "--set",
            "log.format=json",
            "--log-level",
            "warn,tern::app=info",
        ])
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for s in settings {
        cmd.args(["--set", s]);
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start the server: {e}"))?;
    let stderr = child.stderr.take().ok_or("no stderr")?;
    let mut lines = BufReader::new(stderr).lines();
    let ready = loop {
        let Some(line) = lines.next() else {
            return Err("the server exited before it was ready".into());
        };
        let line = line.map_err(|e| e.to_string())?;
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
            if v["fields"]["message"] == "tern is ready" {
                break v;
            }
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let addr = |k: &str| -> Result<SocketAddr, String> {
        ready["fields"][k]
            .as_str()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("ready line lacks {k}"))
    };
    Ok(ServerProc {
        http: addr("http")?,
        grpc: addr("otlp_grpc")?,
        otlp_http: addr("otlp_http")?,
        child,
    })
}

/// (rss bytes, cpu seconds) of a process from /proc.
fn proc_usage(pid: u32) -> Option<(u64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = 100.0; // USER_HZ on Linux
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    let rss_pages: u64 = f.get(21)?.parse().ok()?;
    Some((rss_pages * 4096, (utime + stime) / ticks))
}

fn dir_size(p: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(p) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn stop(mut p: ServerProc) -> Result<(), String> {
    let pid = p.child.id().to_string();
    let ok = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .map_err(|e| e.to_string())?;
    if !ok.success() {
        return Err("kill -TERM failed".into());
    }
    let status = p.child.wait().map_err(|e| e.to_string())?;
    if !status.success() {
        return Err(format!("the server exited with {status} on SIGTERM"));
    }
    Ok(())
}

async fn ingest_phase(
    p: &ServerProc,
    o: &BenchOptions,
    signal: Signal,
    records: u64,
) -> Result<IngestResult, String> {
    let pid = p.child.id();
    let (_, cpu0) = proc_usage(pid).unwrap_or((0, 0.0));
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let stop_sampling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let (peak, stop_sampling) = (peak.clone(), stop_sampling.clone());
        std::thread::spawn(move || {
            while !stop_sampling.load(std::sync::atomic::Ordering::Relaxed) {
                if let Some((rss, _)) = proc_usage(pid) {
                    peak.fetch_max(rss, std::sync::atomic::Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let load = super::run(LoadOptions {
        signal,
        protocol: o.protocol,
        grpc_addr: p.grpc.to_string(),
        http_url: format!("http://{}", p.otlp_http),
        records: Some(records),
        duration: Duration::from_secs(3600),
        rate: 0,
        concurrency: o.concurrency,
        batch_size: o.batch_size,
        series: o.series,
        seed: 1,
    })
    .await;
    stop_sampling.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = sampler.join();
    let load = load?;
    let (_, cpu1) = proc_usage(pid).unwrap_or((0, cpu0));
    Ok(IngestResult {
        load,
        server: ResourceUse {
            peak_rss_bytes: peak.load(std::sync::atomic::Ordering::Relaxed),
            cpu_secs: cpu1 - cpu0,
        },
    })
}

/// One query of the latency phase: a name and a GET path on the API port.
pub struct BenchQuery {
    pub name: String,
    pub path: String,
}

/// The standard queries, over what the load generator sent.
async fn standard_queries(client: &reqwest::Client, http: SocketAddr) -> Vec<BenchQuery> {
    let mut q = Vec::new();
    let now_s = super::now_ns() / 1_000_000_000;
    // The trace and log APIs take times in nanoseconds or relative to now.
    // A trace id to fetch: the newest trace of the frontend.
    let search = "/api/v1/traces?service=frontend&limit=20&lookback=24h";
    if let Ok(r) = client.get(format!("http://{http}{search}")).send().await {
        if let Ok(v) = r.json::<serde_json::Value>().await {
            if let Some(id) = v["data"][0]["trace_id"]
                .as_str()
                .or(v["traces"][0]["trace_id"].as_str())
            {
                q.push(BenchQuery {
                    name: "trace by id".into(),
                    path: format!("/api/v1/traces/{id}"),
                });
            }
        }
    }
    q.push(BenchQuery {
        name: "trace search service+duration".into(),
        path: "/api/v1/traces?service=checkout&min_duration=50ms&limit=20&lookback=24h".into(),
    });
    let enc = |s: &str| {
        s.replace(' ', "%20")
            .replace('(', "%28")
            .replace(')', "%29")
            .replace('[', "%5B")
            .replace(']', "%5D")
            .replace('"', "%22")
    };
    q.push(BenchQuery {
        name: "log search rare term".into(),
        path: format!(
            "/api/v1/logs/search?q={}&limit=100&start=now-24h&end=now%2B1m",
            super::gen::RARE_TERM,
        ),
    });
    q.push(BenchQuery {
        name: "log search common term".into(),
        path: format!(
            "/api/v1/logs/search?q={}&limit=100&start=now-24h&end=now%2B1m",
            super::gen::COMMON_TERM,
        ),
    });
    q.push(BenchQuery {
        name: "promql rate range".into(),
        path: format!(
            "/api/v1/query_range?query={}&start={}&end={}&step=60",
            enc("sum by (code) (rate(http_server_requests_total[5m]))"),
            now_s - 3600,
            now_s
        ),
    });
    q.push(BenchQuery {
        name: "sql aggregate".into(),
        path: format!(
            "/api/v1/sql?q={}",
            enc("SELECT service, count(*) FROM spans GROUP BY service")
        ),
    });
    q
}

async fn query_phase(http: SocketAddr, runs: usize) -> Vec<QueryResult> {
    let client = reqwest::Client::new();
    let mut out = Vec::new();
    for q in standard_queries(&client, http).await {
        let mut lat = Vec::new();
        let mut errors = 0;
        let mut first_error = None;
        for _ in 0..runs {
            let t0 = Instant::now();
            let res = client.get(format!("http://{http}{}", q.path)).send().await;
            let el = t0.elapsed().as_micros() as u64;
            match res {
                Ok(r) if r.status().is_success() => {
                    let _ = r.bytes().await;
                    lat.push(t0.elapsed().as_micros() as u64);
                }
                Ok(r) => {
                    errors += 1;
                    let status = r.status();
                    let body = r.text().await.unwrap_or_default();
                    first_error.get_or_insert(format!(
                        "{status}: {}",
                        body.chars().take(200).collect::<String>()
                    ));
                    let _ = el;
                }
                Err(e) => {
                    errors += 1;
                    first_error.get_or_insert(e.to_string());
                }
            }
        }
        out.push(QueryResult {
            name: q.name,
            request: q.path,
            runs,
            errors,
            latency_ms: LatencyMs::from_micros(lat),
            error: first_error,
        });
    }
    out
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines().next().map(|l| {
                l.split_whitespace()
                    .nth(1)
                    .unwrap_or("0")
                    .parse::<u64>()
                    .unwrap_or(0)
            })
        })
        .unwrap_or(0);
    format!("{cores} cores ({cpu}), {} GiB RAM", mem / (1 << 20))
}

/// Runs the whole benchmark.
pub async fn run(o: BenchOptions) -> Result<BenchReport, String> {
    let tmp = std::env::temp_dir().join(format!("tern-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
    let started_unix = super::now_ns() / 1_000_000_000;
    let exe = std::env::current_exe().map_err(|e| format!("cannot find own binary: {e}"))?;
    let server = spawn_server(&exe, &tmp, &o.server_settings)?;
    let mut ingest = Vec::new();
    for (signal, n) in [
        (Signal::Traces, o.spans),
        (Signal::Logs, o.logs),
        (Signal::Metrics, o.samples),
    ] {
        if n == 0 {
            continue;
        }
        eprintln!(
            "bench: ingesting {n} {} over {:?}",
            signal.as_str(),
            o.protocol
        );
        ingest.push(ingest_phase(&server, &o, signal, n).await?);
    }
    eprintln!("bench: stopping the server so everything is durable");
    stop(server)?;
    let mut storage = Vec::new();
    for r in &ingest {
        let dir = match r.load.signal {
            "traces" => "traces",
            "logs" => "logs",
            _ => "metrics",
        };
        let bytes = dir_size(&tmp.join(dir));
        storage.push(StorageResult {
            signal: r.load.signal,
            records: r.load.records_accepted,
            dir: dir.into(),
            bytes,
            bytes_per_record: bytes as f64 / (r.load.records_accepted.max(1)) as f64,
        });
    }
    let wal_bytes_after_shutdown = dir_size(&tmp.join("wal"));
    let t0 = Instant::now();
    let server = spawn_server(&exe, &tmp, &o.server_settings)?;
    let restart_secs = t0.elapsed().as_secs_f64();
    let idle_rss = proc_usage(server.child.id()).map_or(0, |u| u.0);
    eprintln!("bench: running queries");
    let queries = query_phase(server.http, o.query_runs).await;
    stop(server)?;
    let _ = std::fs::remove_dir_all(&tmp);
    let report = BenchReport {
        machine: machine(),
        started_unix,
        ingest,
        storage,
        wal_bytes_after_shutdown,
        restart_secs,
        idle_rss_bytes_after_restart: idle_rss,
        queries,
    };
    std::fs::create_dir_all(&o.out_dir)
        .map_err(|e| format!("cannot create {}: {e}", o.out_dir.display()))?;
    let json = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
    std::fs::write(o.out_dir.join("bench.json"), &json).map_err(|e| e.to_string())?;
    std::fs::write(o.out_dir.join("bench.md"), markdown(&report)).map_err(|e| e.to_string())?;
    Ok(report)
}

/// The report as Markdown tables.
pub fn markdown(r: &BenchReport) -> String {
    let mut s = format!("Machine: {}\n\n", r.machine);
    s.push_str("| ingest | protocol | records/s | MB/s | p50 ms | p99 ms | rejected | retries | failed | server peak RSS MiB | server CPU s |\n|---|---|---|---|---|---|---|---|---|---|---|\n");
    for i in &r.ingest {
        let l = &i.load;
        s.push_str(&format!(
            "| {} | {:?} | {:.0} | {:.1} | {:.1} | {:.1} | {} | {} | {} | {:.0} | {:.1} |\n",
            l.signal,
            l.protocol,
            l.records_per_sec,
            l.bytes_per_sec / 1e6,
            l.latency_ms.p50,
            l.latency_ms.p99,
            l.records_rejected,
            l.retries,
            l.requests_failed,
            i.server.peak_rss_bytes as f64 / (1 << 20) as f64,
            i.server.cpu_secs
        ));
    }
    s.push_str("\n| storage | records | bytes on disk | bytes/record |\n|---|---|---|---|\n");
    for st in &r.storage {
        s.push_str(&format!(
            "| {} | {} | {} | {:.1} |\n",
            st.signal, st.records, st.bytes, st.bytes_per_record
        ));
    }
    s.push_str(&format!(
        "\nWAL after graceful shutdown: {} bytes. Restart: {:.2} s, idle RSS {:.0} MiB.\n",
        r.wal_bytes_after_shutdown,
        r.restart_secs,
        r.idle_rss_bytes_after_restart as f64 / (1 << 20) as f64
    ));
    s.push_str("\n| query | runs | errors | p50 ms | p99 ms |\n|---|---|---|---|---|\n");
    for q in &r.queries {
        s.push_str(&format!(
            "| {} | {} | {} | {:.2} | {:.2} |\n",
            q.name, q.runs, q.errors, q.latency_ms.p50, q.latency_ms.p99
        ));
    }
    s
}
