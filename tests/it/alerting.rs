//! Alerting end to end over real HTTP: a webhook channel pointing at a
//! local receiver, a Prometheus rule file imported through the API,
//! metrics pushed over OTLP, the alert in `/api/v1/alerts` and
//! `/api/v1/rules`, the webhook delivered, the recording rule's series
//! queryable, Alertmanager v2 alerts received, and alert state kept
//! across a restart.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::post;
use axum::{Json, Router};
use parking_lot::Mutex;
use prost::Message;
use serde_json::{json, Value};

use crate::support::*;

const OVERRIDES: &[&str] = &[
    "alerting.resolution=\"20ms\"",
    "alerting.evaluation_interval=\"100ms\"",
    "alerting.group_wait=\"100ms\"",
    "alerting.group_interval=\"200ms\"",
    "alerting.retry_initial_backoff=\"50ms\"",
];

const RULES: &str = r#"
groups:
  - name: queues
    interval: 100ms
    rules:
      - record: job:queue_depth:max
        expr: max by (job) (queue_depth)
      - alert: QueueTooDeep
        expr: queue_depth > 100
        labels:
          severity: page
        annotations:
          summary: "{{ $labels.job }} queue at {{ $value }}"
"#;

async fn receiver() -> (Arc<Mutex<Vec<Value>>>, String) {
    let got = Arc::new(Mutex::new(Vec::new()));
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
    let url = format!("http://{}/hook", l.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });
    (got, url)
}

async fn get_json(s: &TestServer, path: &str) -> Value {
    let r = s.http.get(s.api_url(path)).send().await.unwrap();
    assert_eq!(r.status(), 200, "{path}");
    r.json().await.unwrap()
}

async fn poll(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_file_import_to_webhook_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = TestServer::start_in(dir.path(), OVERRIDES).await;
    let (hooks, url) = receiver().await;

    let r = s
        .http
        .put(s.api_url("/api/v1/alerting/channels/oncall"))
        .json(&json!({"type": "webhook", "url": url}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());

    // A bad rule file is refused with a clear error.
    let r = s
        .http
        .post(s.api_url("/api/v1/alerting/rules"))
        .body("groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: 'rate(x[5m]'\n")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "bad_rule");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("group \"g\""),
        "{body}"
    );

    let r = s
        .http
        .post(s.api_url("/api/v1/alerting/rules"))
        .header("content-type", "application/yaml")
        .body(RULES)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());

    let req = gauge_request("queue_depth", &[250.0]);
    let r = s
        .post("/v1/metrics", "application/x-protobuf", req.encode_to_vec())
        .await;
    assert_eq!(r.status(), 200);

    poll("the alert to fire", async || {
        let v = get_json(&s, "/api/v1/alerts").await;
        v["data"]["alerts"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x["state"] == "firing"))
    })
    .await;
    let v = get_json(&s, "/api/v1/alerts").await;
    let a = &v["data"]["alerts"][0];
    assert_eq!(a["labels"]["alertname"], "QueueTooDeep");
    assert_eq!(a["labels"]["job"], "metrics-svc");
    assert_eq!(a["labels"]["severity"], "page");
    assert_eq!(a["annotations"]["summary"], "metrics-svc queue at 250");
    assert_eq!(a["value"], "2.5e+02", "formatted as Prometheus does");

    poll("the webhook", async || !hooks.lock().is_empty()).await;
    let hook = hooks.lock()[0].clone();
    assert_eq!(hook["status"], "firing");
    assert_eq!(hook["receiver"], "oncall");
    assert_eq!(hook["alerts"][0]["labels"]["alertname"], "QueueTooDeep");
    assert_eq!(
        hook["alerts"][0]["annotations"]["summary"],
        "metrics-svc queue at 250"
    );

    let rules = get_json(&s, "/api/v1/rules").await;
    let g = &rules["data"]["groups"][0];
    assert_eq!(g["name"], "queues");
    assert_eq!(g["interval"], 0.1);
    assert_eq!(g["rules"][0]["type"], "recording");
    assert_eq!(g["rules"][0]["health"], "ok");
    assert_eq!(g["rules"][1]["type"], "alerting");
    assert_eq!(g["rules"][1]["state"], "firing");
    assert_eq!(g["rules"][1]["query"], "queue_depth > 100");
    let only_alerts = get_json(&s, "/api/v1/rules?type=alert").await;
    let rules = only_alerts["data"]["groups"][0]["rules"]
        .as_array()
        .unwrap();
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0]["name"], "QueueTooDeep");

    // The recording rule wrote its series into the metrics store.
    poll("the recorded series", async || {
        let d = s.promql("job:queue_depth:max", None).await;
        d["result"].as_array().is_some_and(|r| !r.is_empty())
    })
    .await;
    let d = s.promql("job:queue_depth:max", None).await;
    assert_eq!(d["result"][0]["metric"]["job"], "metrics-svc");
    assert_eq!(d["result"][0]["value"][1], "250");

    let h = get_json(&s, "/api/v1/alerting/history?rule=queues/QueueTooDeep%231").await;
    let steps: Vec<(&str, &str)> = h["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["from"].as_str().unwrap(), e["to"].as_str().unwrap()))
        .collect();
    assert_eq!(steps, vec![("inactive", "firing")]);

    let ch = get_json(&s, "/api/v1/alerting/channels").await;
    assert_eq!(ch["channels"][0]["name"], "oncall");
    assert!(ch["channels"][0]["status"]["delivered"].as_u64().unwrap() >= 1);

    // The server's own metrics show evaluation and delivery.
    let m = s.self_metrics().await;
    for needle in [
        "tern_alerting_alerts{state=\"firing\"} 1",
        "tern_alerting_notifications_total{channel=\"oncall\",outcome=\"success\"}",
        "tern_alerting_channel_failing{channel=\"oncall\"} 0",
        "tern_alerting_rule_evaluations_total{outcome=\"ok\"}",
    ] {
        assert!(m.contains(needle), "{needle} missing from /metrics");
    }

    // Alertmanager v2: Prometheus/vmalert can send us their alerts.
    let r = s
        .http
        .post(s.api_url("/api/v2/alerts"))
        .json(&json!([{
            "labels": {"alertname": "FromPrometheus", "instance": "x"},
            "annotations": {"summary": "sent by a remote Prometheus"},
            "startsAt": "2024-01-01T00:00:00Z"
        }]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let am = get_json(&s, "/api/v2/alerts").await;
    let remote = am
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["labels"]["alertname"] == "FromPrometheus")
        .expect("posted alert listed");
    assert_eq!(remote["status"]["state"], "active");
    assert_eq!(remote["startsAt"], "2024-01-01T00:00:00.000Z");
    poll("the remote alert's webhook", async || {
        hooks.lock().iter().any(|h| {
            h["alerts"].as_array().is_some_and(|a| {
                a.iter()
                    .any(|x| x["labels"]["alertname"] == "FromPrometheus")
            })
        })
    })
    .await;
    let r = s
        .http
        .post(s.api_url("/api/v2/alerts"))
        .json(&json!([{"labels": {"a": "b"}, "startsAt": "yesterday"}]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // The alert is still firing after a restart (state from the meta store).
    s.shutdown().await;
    let s = TestServer::start_in(dir.path(), OVERRIDES).await;
    let v = get_json(&s, "/api/v1/alerts").await;
    let a = &v["data"]["alerts"][0];
    assert_eq!(a["state"], "firing", "{v}");
    assert_eq!(a["labels"]["alertname"], "QueueTooDeep");
    let rules = get_json(&s, "/api/v1/alerting/rules").await;
    assert_eq!(rules["groups"][0]["name"], "queues");
}

#[tokio::test]
async fn silences_and_slos_over_http() {
    let s = TestServer::start_with(OVERRIDES).await;
    // Silences: create, list, expire; invalid ones are refused.
    let r = s
        .http
        .post(s.api_url("/api/v1/alerting/silences"))
        .json(&json!({"matchers": ["alertname=Noisy"], "duration": "2h", "createdBy": "ops", "comment": "deploy"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let id = r.json::<Value>().await.unwrap()["silenceID"]
        .as_str()
        .unwrap()
        .to_string();
    let l = get_json(&s, "/api/v1/alerting/silences").await;
    assert_eq!(l["silences"][0]["status"]["state"], "active");
    assert_eq!(l["silences"][0]["matchers"][0], "alertname=\"Noisy\"");
    let r = s
        .http
        .delete(s.api_url(&format!("/api/v1/alerting/silences/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let l = get_json(&s, "/api/v1/alerting/silences").await;
    assert_eq!(l["silences"][0]["status"]["state"], "expired");
    let r = s
        .http
        .post(s.api_url("/api/v1/alerting/silences"))
        .json(&json!({"matchers": [], "duration": "1h", "createdBy": "ops"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // The same through the Alertmanager v2 silence API (amtool, Grafana).
    let r = s
        .http
        .post(s.api_url("/api/v2/silences"))
        .json(&json!({
            "matchers": [{"name": "job", "value": "api|web", "isRegex": true, "isEqual": true}],
            "startsAt": "2030-01-01T00:00:00Z",
            "endsAt": "2030-01-01T02:00:00Z",
            "createdBy": "amtool",
            "comment": "later"
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let am_id = r.json::<Value>().await.unwrap()["silenceID"]
        .as_str()
        .unwrap()
        .to_string();
    let one = get_json(&s, &format!("/api/v2/silence/{am_id}")).await;
    assert_eq!(one["status"]["state"], "pending");
    assert_eq!(
        one["matchers"][0],
        json!({"name": "job", "value": "api|web", "isRegex": true, "isEqual": true})
    );
    assert_eq!(
        get_json(&s, "/api/v2/silences")
            .await
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let r = s
        .http
        .delete(s.api_url(&format!("/api/v2/silence/{am_id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let one = get_json(&s, &format!("/api/v2/silence/{am_id}")).await;
    assert_eq!(one["status"]["state"], "expired");
    assert_eq!(
        get_json(&s, "/api/v2/status").await["cluster"]["status"],
        "ready"
    );

    // A routing tree naming an unknown channel is refused.
    let r = s
        .http
        .put(s.api_url("/api/v1/alerting/routing"))
        .body("route:\n  receiver: nowhere\n")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // An SLO: stored, reported, its burn-rate rules generated.
    let r = s
        .http
        .put(s.api_url("/api/v1/slos/api-availability"))
        .json(&json!({
            "target": 0.999,
            "window": "30d",
            "indicator": {"promql": {
                "good": "sum(increase(http_requests_total{code!~\"5..\"}[$window]))",
                "total": "sum(increase(http_requests_total[$window]))"
            }}
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let v = get_json(&s, "/api/v1/slos/api-availability").await;
    assert_eq!(v["slo"]["target"], 0.999);
    assert_eq!(v["report"]["error_budget"]["remaining_percent"], 100.0);
    let rules = get_json(&s, "/api/v1/rules").await;
    let g = rules["data"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "slo:api-availability")
        .expect("generated group");
    assert_eq!(g["rules"].as_array().unwrap().len(), 3);
    assert_eq!(g["rules"][0]["labels"]["severity"], "page");
    assert_eq!(g["rules"][2]["labels"]["long_window"], "3d");
    let b = get_json(&s, "/api/v1/slos/api-availability/burndown?points=3").await;
    assert_eq!(b["points"].as_array().unwrap().len(), 3);
    let r = s
        .http
        .put(s.api_url("/api/v1/slos/bad"))
        .json(&json!({"target": 2, "window": "30d", "indicator": {"spans": {"service": "x"}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = s
        .http
        .get(s.api_url("/api/v1/slos/missing"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "not_found"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_and_span_rules_over_otlp() {
    let s = TestServer::start_with(OVERRIDES).await;
    let rules = r#"
groups:
  - name: signals
    interval: 100ms
    rules:
      - alert: CheckoutTimeouts
        logs: {query: '"timeout"', service: checkout, window: 5m, condition: "> 2"}
        annotations:
          summary: "{{ $value }} timeouts"
      - alert: CheckoutErrors
        spans: {service: checkout, window: 5m, measure: errors, condition: ">= 2"}
"#;
    let r = s
        .http
        .post(s.api_url("/api/v1/alerting/rules"))
        .body(rules)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let logs: Vec<_> = (0..4)
        .map(|i| {
            log_record(
                if i == 0 {
                    "all good"
                } else {
                    "payment timeout"
                },
                i,
            )
        })
        .collect();
    let r = s
        .post(
            "/v1/logs",
            "application/x-protobuf",
            logs_request("checkout", logs).encode_to_vec(),
        )
        .await;
    assert_eq!(r.status(), 200);
    let spans: Vec<_> = (0..3u8)
        .map(|i| {
            let mut sp = span([i + 1; 16], [i + 1; 8], "POST /pay");
            if i < 2 {
                sp.status = Some(opentelemetry_proto::tonic::trace::v1::Status {
                    code: 2,
                    ..Default::default()
                });
            }
            sp
        })
        .collect();
    let r = s
        .post(
            "/v1/traces",
            "application/x-protobuf",
            trace_request("checkout", spans).encode_to_vec(),
        )
        .await;
    assert_eq!(r.status(), 200);
    poll("both alerts to fire", async || {
        let v = get_json(&s, "/api/v1/alerts").await;
        v["data"]["alerts"].as_array().is_some_and(|a| a.len() == 2)
    })
    .await;
    let v = get_json(&s, "/api/v1/alerts").await;
    let by_name = |n: &str| {
        v["data"]["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["labels"]["alertname"] == n)
            .cloned()
            .unwrap()
    };
    let logs = by_name("CheckoutTimeouts");
    assert_eq!(logs["labels"]["service"], "checkout");
    assert_eq!(logs["annotations"]["summary"], "3 timeouts");
    let spans = by_name("CheckoutErrors");
    assert_eq!(spans["value"], "2e+00");
    assert_eq!(spans["state"], "firing");
}
