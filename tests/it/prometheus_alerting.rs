//! Compatibility with a real Prometheus (Debian `prometheus`, installed by
//! the README's test command): the same rule file loaded by both gives
//! `/api/v1/rules` and `/api/v1/alerts` answers that agree, tern's having
//! every field Prometheus's has; and Prometheus uses tern as its
//! Alertmanager (`POST /api/v2/alerts`), tern routing its alerts to a
//! webhook.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use std::sync::Arc;

use axum::routing::post;
use axum::{Json, Router};
use parking_lot::Mutex;
use serde_json::{json, Value};

use crate::support::*;

const RULES: &str = r#"groups:
  - name: compat
    interval: 1s
    rules:
      - record: compat:one
        expr: vector(1)
      - alert: AlwaysOn
        expr: vector(1) > 0
        labels:
          severity: page
        annotations:
          summary: "value {{ $value }}"
"#;

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

/// Starts Prometheus with the rule file; with `alertmanager`, it sends its
/// alerts there (resending every second, so that the first alert, sent
/// before the Alertmanager is discovered and dropped, comes again soon).
fn start_prometheus(alertmanager: Option<&str>) -> Prometheus {
    let dir = tempfile::tempdir().unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(dir.path().join("rules.yml"), RULES).unwrap();
    let config = format!(
        r#"global:
  evaluation_interval: 1s
  external_labels:
    source: prometheus
rule_files: ["{}"]
{}"#,
        dir.path().join("rules.yml").display(),
        alertmanager
            .map(|a| format!(
                "alerting:\n  alertmanagers:\n    - api_version: v2\n      static_configs:\n        - targets: [\"{a}\"]\n"
            ))
            .unwrap_or_default()
    );
    let cfg = dir.path().join("prometheus.yml");
    std::fs::write(&cfg, config).unwrap();
    let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--rules.alert.resend-delay=1s")
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

async fn get(http: &reqwest::Client, url: &str) -> Option<Value> {
    let r = http.get(url).send().await.ok()?;
    r.json().await.ok()
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_and_alerts_answer_like_prometheus() {
    let s = TestServer::start_with(&["alerting.resolution=\"20ms\""]).await;
    let r = s
        .http
        .post(s.api_url("/api/v1/alerting/rules"))
        .body(RULES)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let prom = start_prometheus(None);
    let deadline = Instant::now() + Duration::from_secs(60);
    // Both evaluate the same file: compare the shapes of the answers.
    let (p_rules, p_alerts) = loop {
        assert!(
            Instant::now() < deadline,
            "Prometheus did not fire; its log:\n{}",
            std::fs::read_to_string(prom._dir.path().join("prometheus.log")).unwrap_or_default()
        );
        let p_rules = get(&s.http, &format!("{}/api/v1/rules", prom.url))
            .await
            .unwrap_or_default();
        let p_alerts = get(&s.http, &format!("{}/api/v1/alerts", prom.url))
            .await
            .unwrap_or_default();
        if p_alerts["data"]["alerts"][0]["state"] == "firing" {
            break (p_rules, p_alerts);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let t_rules = get(&s.http, &s.api_url("/api/v1/rules")).await.unwrap();
    let t_alerts = get(&s.http, &s.api_url("/api/v1/alerts")).await.unwrap();
    let (pg, tg) = (&p_rules["data"]["groups"][0], &t_rules["data"]["groups"][0]);
    assert_eq!(pg["name"], tg["name"]);
    assert_eq!(pg["interval"].as_f64(), tg["interval"].as_f64());
    let missing =
        |p: &Value, t: &Value| -> Vec<String> { keys(p).difference(&keys(t)).cloned().collect() };
    assert!(
        missing(pg, tg).is_empty(),
        "group fields missing: {:?}",
        missing(pg, tg)
    );
    for i in 0..2 {
        let (pr, tr) = (&pg["rules"][i], &tg["rules"][i]);
        assert_eq!(pr["type"], tr["type"]);
        assert_eq!(pr["name"], tr["name"]);
        assert_eq!(pr["query"], tr["query"]);
        assert_eq!(pr["labels"], tr["labels"]);
        assert_eq!(pr["health"], tr["health"]);
        assert!(
            missing(pr, tr).is_empty(),
            "rule fields missing: {:?}",
            missing(pr, tr)
        );
    }
    assert_eq!(pg["rules"][1]["state"], tg["rules"][1]["state"]);
    let (pa, ta) = (
        &p_alerts["data"]["alerts"][0],
        &t_alerts["data"]["alerts"][0],
    );
    assert_eq!(pa["state"], "firing", "{p_alerts}");
    assert_eq!(pa["state"], ta["state"]);
    assert_eq!(pa["labels"], ta["labels"]);
    assert_eq!(pa["annotations"], ta["annotations"]);
    assert_eq!(pa["value"], ta["value"]);
    assert!(
        missing(pa, ta).is_empty(),
        "alert fields missing: {:?}",
        missing(pa, ta)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_uses_tern_as_its_alertmanager() {
    let s = TestServer::start_with(&[
        "alerting.resolution=\"20ms\"",
        "alerting.group_wait=\"100ms\"",
        "alerting.group_interval=\"200ms\"",
    ])
    .await;
    let got = Arc::new(Mutex::new(Vec::<Value>::new()));
    let g = got.clone();
    let app = Router::new().route(
        "/hook",
        post(move |Json(v): Json<Value>| {
            let g = g.clone();
            async move {
                g.lock().push(v);
                "ok"
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", l.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });
    let r = s
        .http
        .put(s.api_url("/api/v1/alerting/channels/hook"))
        .json(&json!({"type": "webhook", "url": hook}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let prom = start_prometheus(Some(&s.srv().addrs.http.to_string()));
    let from_prometheus = |v: &Value| v["labels"]["source"] == "prometheus";
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let delivered = got.lock().iter().any(|h| {
            h["alerts"]
                .as_array()
                .is_some_and(|a| a.iter().any(from_prometheus))
        });
        if delivered {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no alert from Prometheus reached the webhook; its log:\n{}",
            std::fs::read_to_string(prom._dir.path().join("prometheus.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let am = get(&s.http, &s.api_url("/api/v2/alerts")).await.unwrap();
    let a = am
        .as_array()
        .unwrap()
        .iter()
        .find(|a| from_prometheus(a))
        .expect("Prometheus's alert listed");
    assert_eq!(a["labels"]["alertname"], "AlwaysOn");
    assert_eq!(a["labels"]["severity"], "page");
    assert_eq!(a["annotations"]["summary"], "value 1");
    assert_eq!(a["status"]["state"], "active");
    let hook = got.lock()[0].clone();
    assert_eq!(hook["receiver"], "hook");
    assert_eq!(hook["alerts"][0]["status"], "firing");
}
