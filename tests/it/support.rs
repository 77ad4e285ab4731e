//! Test harness: an in-process server on port 0, request builders and helpers.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1 as pm;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use tern::app::Server;
use tern::config::{Config, Sources};
pub use tern::model::time::now_ns;

pub struct TestServer {
    pub server: Option<Server>,
    pub dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    pub http: reqwest::Client,
}

/// A config on port 0 over `dir`, with `overrides` applied.
pub fn test_config(dir: &Path, overrides: &[&str]) -> Config {
    let mut o = vec![
        format!("data_dir={:?}", dir.display().to_string()),
        "server.http_addr=\"127.0.0.1:0\"".to_string(),
        "server.otlp_grpc_addr=\"127.0.0.1:0\"".to_string(),
        "server.otlp_http_addr=\"127.0.0.1:0\"".to_string(),
        "wal.checkpoint_interval=\"1s\"".to_string(),
    ];
    o.extend(overrides.iter().map(|s| s.to_string()));
    Config::load(&Sources {
        overrides: o,
        ..Default::default()
    })
    .expect("test config is valid")
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    pub async fn start_with(overrides: &[&str]) -> Self {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path().to_path_buf();
        let mut s = Self::start_in(&dir, overrides).await;
        s._tmp = Some(tmp);
        s
    }

    /// Starts over an existing data dir (the caller keeps it alive).
    pub async fn start_in(dir: &Path, overrides: &[&str]) -> Self {
        let server = tern::app::start(test_config(dir, overrides))
            .await
            .expect("server starts");
        TestServer {
            server: Some(server),
            dir: dir.to_path_buf(),
            _tmp: None,
            http: reqwest::Client::new(),
        }
    }

    /// The running server, once every acknowledged record has reached its
    /// store (store writers apply batches asynchronously after the WAL).
    pub fn srv(&self) -> &Server {
        let s = self.server.as_ref().expect("server running");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !s.settled() {
            assert!(
                std::time::Instant::now() < deadline,
                "store writers did not settle"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        s
    }

    pub fn otlp_http_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.srv().addrs.otlp_http)
    }

    pub fn api_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.srv().addrs.http)
    }

    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.srv().addrs.otlp_grpc)
    }

    pub async fn shutdown(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await.expect("clean shutdown");
        }
    }

    /// Asserts the server still answers its health check.
    pub async fn assert_healthy(&self) {
        let r = self
            .http
            .get(self.api_url("/healthz"))
            .send()
            .await
            .expect("healthz");
        assert_eq!(r.status(), 200);
    }

    pub async fn post(&self, path: &str, content_type: &str, body: Vec<u8>) -> reqwest::Response {
        self.http
            .post(self.otlp_http_url(path))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("request sent")
    }

    /// Runs a PromQL instant query at `time` (Unix seconds; now when None)
    /// through the Prometheus HTTP API and returns the `data` of a success.
    pub async fn promql(&self, expr: &str, time: Option<f64>) -> serde_json::Value {
        let mut params = vec![("query", expr.to_string())];
        if let Some(t) = time {
            params.push(("time", format!("{t:.3}")));
        }
        let r = self
            .http
            .post(self.api_url("/api/v1/query"))
            .form(&params)
            .send()
            .await
            .expect("query sent");
        let status = r.status();
        let body: serde_json::Value = r.json().await.expect("json answer");
        assert_eq!(status, 200, "{expr}: {body}");
        assert_eq!(body["status"], "success", "{expr}: {body}");
        body["data"].clone()
    }

    /// The server's own Prometheus metrics (`/metrics`) as text.
    pub async fn self_metrics(&self) -> String {
        self.http
            .get(self.api_url("/metrics"))
            .send()
            .await
            .expect("/metrics answers")
            .text()
            .await
            .expect("/metrics body")
    }

    /// Polls until `f` holds, for at most 10 s.
    pub async fn eventually(&self, what: &str, f: impl Fn(&Server) -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !f(self.srv()) {
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown_token().cancel();
        }
    }
}

pub fn kv_str(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

pub fn kv_int(k: &str, v: i64) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(v)),
        }),
        ..Default::default()
    }
}

pub fn resource(service: &str) -> Option<Resource> {
    Some(Resource {
        attributes: vec![kv_str("service.name", service)],
        ..Default::default()
    })
}

pub fn span(trace: [u8; 16], span_id: [u8; 8], name: &str) -> Span {
    let now = now_ns();
    Span {
        trace_id: trace.to_vec(),
        span_id: span_id.to_vec(),
        name: name.into(),
        kind: 2,
        start_time_unix_nano: now - 5_000_000,
        end_time_unix_nano: now,
        ..Default::default()
    }
}

pub fn trace_request(service: &str, spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: resource(service),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

pub fn log_record(body: &str, id: i64) -> LogRecord {
    LogRecord {
        time_unix_nano: now_ns(),
        severity_number: 9,
        severity_text: "INFO".into(),
        body: Some(AnyValue {
            value: Some(any_value::Value::StringValue(body.into())),
        }),
        attributes: vec![kv_int("seq", id)],
        ..Default::default()
    }
}

pub fn logs_request(service: &str, records: Vec<LogRecord>) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: resource(service),
            scope_logs: vec![ScopeLogs {
                log_records: records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

pub fn gauge_request(name: &str, values: &[f64]) -> ExportMetricsServiceRequest {
    let t = now_ns();
    ExportMetricsServiceRequest {
        resource_metrics: vec![pm::ResourceMetrics {
            resource: resource("metrics-svc"),
            scope_metrics: vec![pm::ScopeMetrics {
                metrics: vec![pm::Metric {
                    name: name.into(),
                    data: Some(pm::metric::Data::Gauge(pm::Gauge {
                        data_points: values
                            .iter()
                            .map(|v| pm::NumberDataPoint {
                                time_unix_nano: t,
                                value: Some(pm::number_data_point::Value::AsDouble(*v)),
                                ..Default::default()
                            })
                            .collect(),
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// Sends a raw HTTP/1.1 request with a chunked body (no Content-Length).
pub async fn post_chunked(
    addr: std::net::SocketAddr,
    path: &str,
    content_type: &str,
    chunks: &[&[u8]],
) -> (u16, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: {content_type}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    for c in chunks {
        req.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
        req.extend_from_slice(c);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    s.write_all(&req).await.unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).await.unwrap();
    let text = String::from_utf8_lossy(&resp);
    let status: u16 = text[9..12].parse().unwrap();
    let body_start = resp.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    (status, resp[body_start..].to_vec())
}

/// The shared conformance data directory, or `None` (reported as skipped).
pub fn conformance_dir(test: &str) -> Option<PathBuf> {
    use std::io::Write;
    if let Ok(dir) = std::env::var("SHARED_TESTDATA") {
        let p = PathBuf::from(dir);
        assert!(
            p.is_dir(),
            "SHARED_TESTDATA={} is not a directory",
            p.display()
        );
        return Some(p);
    }
    let beside = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/testdata");
    if beside.is_dir() {
        return Some(beside);
    }
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED conformance test {test}: no shared test data (set SHARED_TESTDATA)"
    );
    None
}

/// Runs `tests/python/<script>` (OpenTelemetry Python SDK clients, installed
/// by the README's test command) with `args` against `s`'s OTLP endpoints
/// (`--grpc HOST:PORT --http URL` are added) and returns the JSON of its
/// last stdout line, `Null` when it prints none. Fails the test when the
/// script fails.
pub async fn run_python(s: &TestServer, script: &str, args: &[&str]) -> serde_json::Value {
    let path = format!("{}/tests/python/{script}", env!("CARGO_MANIFEST_DIR"));
    let mut argv: Vec<String> = vec![
        path,
        "--grpc".into(),
        s.srv().addrs.otlp_grpc.to_string(),
        "--http".into(),
        format!("http://{}", s.srv().addrs.otlp_http),
    ];
    argv.extend(args.iter().map(|a| a.to_string()));
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(std::env::var("PYTHON").unwrap_or_else(|_| "python3".into()))
            .args(&argv)
            .env("OTEL_SDK_DISABLED", "false")
            .output()
    })
    .await
    .unwrap()
    .expect("python3 runs (the README test command installs the OpenTelemetry SDK)");
    assert!(
        out.status.success(),
        "{script} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    match stdout.trim().lines().last() {
        Some(line) => serde_json::from_str(line).unwrap(),
        None => serde_json::Value::Null,
    }
}
