//! A real Prometheus server (Debian `prometheus`, installed by the README's
//! test command) scrapes itself and remote-writes to tern; the same PromQL
//! queries are then answered by both and must agree.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::support::*;

struct Prometheus {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_prometheus(write_url: &str) -> Prometheus {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = format!(
        r#"global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: prometheus
    static_configs:
      - targets: ["127.0.0.1:{port}"]
remote_write:
  - url: "{write_url}"
    queue_config:
      batch_send_deadline: 500ms
      max_samples_per_send: 5000
"#
    );
    let cfg_path = dir.path().join("prometheus.yml");
    std::fs::write(&cfg_path, config).unwrap();
    let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", cfg_path.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("prometheus runs (the README test command installs the Debian package)");
    Prometheus {
        child,
        url: format!("http://127.0.0.1:{port}"),
        _dir: dir,
    }
}

async fn query(http: &reqwest::Client, base: &str, expr: &str, time: f64) -> Value {
    let r = http
        .post(format!("{base}/api/v1/query"))
        .form(&[("query", expr.to_string()), ("time", format!("{time:.3}"))])
        .send()
        .await
        .expect("query sent");
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["status"], "success", "{base} {expr}: {body}");
    body["data"].clone()
}

async fn query_range(
    http: &reqwest::Client,
    base: &str,
    expr: &str,
    start: f64,
    end: f64,
) -> Value {
    let r = http
        .post(format!("{base}/api/v1/query_range"))
        .form(&[
            ("query", expr.to_string()),
            ("start", format!("{start:.3}")),
            ("end", format!("{end:.3}")),
            ("step", "1".to_string()),
        ])
        .send()
        .await
        .expect("query sent");
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["status"], "success", "{base} {expr}: {body}");
    body["data"].clone()
}

/// A result as (labels, [(time, value)]) sorted by labels, for comparison.
fn normalize(data: &Value) -> Vec<(String, Vec<(f64, f64)>)> {
    let point = |p: &Value| -> (f64, f64) {
        let v = p[1].as_str().unwrap();
        let v = match v {
            "NaN" => f64::NAN,
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap(),
        };
        (p[0].as_f64().unwrap(), v)
    };
    let mut out: Vec<(String, Vec<(f64, f64)>)> = match data["resultType"].as_str().unwrap() {
        "vector" => data["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| (s["metric"].to_string(), vec![point(&s["value"])]))
            .collect(),
        "matrix" => data["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                let pts = s["values"].as_array().unwrap().iter().map(point).collect();
                (s["metric"].to_string(), pts)
            })
            .collect(),
        "scalar" => vec![(String::new(), vec![point(&data["result"])])],
        other => panic!("unexpected result type {other}"),
    };
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn same(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

fn assert_same(expr: &str, ours: &Value, theirs: &Value) {
    let (o, t) = (normalize(ours), normalize(theirs));
    let names = |r: &[(String, Vec<(f64, f64)>)]| r.iter().map(|s| s.0.clone()).collect::<Vec<_>>();
    assert_eq!(names(&o), names(&t), "{expr}: series differ");
    for ((labels, op), (_, tp)) in o.iter().zip(&t) {
        assert_eq!(op.len(), tp.len(), "{expr} {labels}: point counts differ");
        for (x, y) in op.iter().zip(tp) {
            assert!(
                x.0 == y.0 && same(x.1, y.1),
                "{expr} {labels}: tern {x:?} vs prometheus {y:?}"
            );
        }
    }
}

fn now_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_remote_write_and_promql_agree() {
    let s = TestServer::start().await;
    let prom = start_prometheus(&s.api_url("/api/v1/write"));
    let http = reqwest::Client::new();

    // Let Prometheus scrape itself for a while (and get ready).
    let started = Instant::now();
    loop {
        let ready = http
            .get(format!("{}/-/ready", prom.url))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200);
        if ready {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "prometheus did not become ready"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // At least 15 scrapes, so that every window below starts after the
    // first scrape. Series born inside a window are avoided on purpose:
    // Prometheus 2.42 (the Debian package) clamps rate extrapolation to the
    // counter's zero point before its 1.1x-interval check, Prometheus 3 (whose
    // semantics tern follows) after it, so the two differ there.
    loop {
        let d = query(&http, &prom.url, "count_over_time(up[1m])", now_s()).await;
        let n = d["result"][0]["value"][1]
            .as_str()
            .and_then(|v| v.parse::<f64>().ok());
        if n.is_some_and(|n| n >= 15.0) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "prometheus is not scraping: {d}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Evaluate at a moment a few seconds back (off the scrape grid), once
    // remote_write has delivered everything up to it.
    let t = (now_s() - 2.0).floor() + 0.437;
    let probe = "count_over_time(up[1m])";
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ours = query(&http, &s.api_url(""), probe, t).await;
        let theirs = query(&http, &prom.url, probe, t).await;
        if normalize(&ours) == normalize(&theirs) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "remote_write did not catch up: tern {ours} vs prometheus {theirs}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    let exprs = [
        "up",
        "sum by (job) (up)",
        "scrape_samples_scraped",
        "prometheus_tsdb_head_series",
        "rate(prometheus_http_requests_total{handler=\"/metrics\"}[5s])",
        "sum by (code) (increase(prometheus_http_requests_total{handler=\"/metrics\"}[8s]))",
        "histogram_quantile(0.9, sum by (le) (rate(prometheus_http_request_duration_seconds_bucket{handler=\"/metrics\"}[8s])))",
        "rate(prometheus_tsdb_head_samples_appended_total[4s])",
        "max_over_time(scrape_duration_seconds[10s]) > 0",
        "count by (__name__) ({__name__=~\"prometheus_tsdb_head_.*\"})",
        "topk(3, go_memstats_alloc_bytes)",
        "delta(process_resident_memory_bytes[6s])",
        "go_goroutines offset 4s",
        "time() - process_start_time_seconds > 0",
        "count(up == 1)",
    ];
    for expr in exprs {
        let ours = query(&http, &s.api_url(""), expr, t).await;
        let theirs = query(&http, &prom.url, expr, t).await;
        assert!(
            !normalize(&theirs).is_empty(),
            "{expr}: prometheus has data"
        );
        assert_same(expr, &ours, &theirs);
    }
    for expr in [
        "irate(prometheus_http_requests_total{handler=\"/metrics\"}[3s])",
        "rate(go_memstats_alloc_bytes_total[5s])",
        "sum(scrape_series_added)",
        "avg_over_time(go_goroutines[4s])",
    ] {
        let ours = query_range(&http, &s.api_url(""), expr, t - 8.0, t).await;
        let theirs = query_range(&http, &prom.url, expr, t - 8.0, t).await;
        assert!(
            !normalize(&theirs).is_empty(),
            "{expr}: prometheus has data"
        );
        assert_same(expr, &ours, &theirs);
    }
}
