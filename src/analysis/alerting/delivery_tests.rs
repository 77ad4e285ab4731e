//! Notification delivery through the running service to real local
//! receivers (an axum webhook receiver and a tiny SMTP server on port 0),
//! with timings shortened to milliseconds.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use parking_lot::Mutex;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio_util::sync::CancellationToken;

use super::channels::{ChannelDef, ChannelKind, RetryPolicy};
use super::notify::{Alert, InhibitRule, Matcher, Route, RoutingConfig, Silence, Timing};
use super::service::{AlertingOptions, AlertingService};
use super::tests::sources;
use super::time::now_ms;
use crate::storage::meta::MetaStore;

#[derive(Clone, Default)]
struct Receiver {
    bodies: Arc<Mutex<Vec<Value>>>,
    /// Requests answered 500 before the receiver starts accepting.
    fail_first: Arc<AtomicUsize>,
    attempts: Arc<AtomicUsize>,
}

async fn hook(State(r): State<Receiver>, Json(body): Json<Value>) -> StatusCode {
    let n = r.attempts.fetch_add(1, Ordering::SeqCst);
    if n < r.fail_first.load(Ordering::SeqCst) {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    r.bodies.lock().push(body);
    StatusCode::OK
}

async fn start_receiver(fail_first: usize) -> (Receiver, String) {
    let r = Receiver::default();
    r.fail_first.store(fail_first, Ordering::SeqCst);
    let app = Router::new()
        .route("/hook", post(hook))
        .with_state(r.clone());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", l.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });
    (r, url)
}

fn opts() -> AlertingOptions {
    AlertingOptions {
        tick: Duration::from_millis(20),
        timing: Timing {
            group_wait_ms: 100,
            group_interval_ms: 300,
            repeat_interval_ms: 1500,
        },
        retry: RetryPolicy {
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(200),
            max_attempts: 4,
            timeout: Duration::from_secs(2),
            queue_capacity: 16,
        },
        external_url: "http://tern.test".into(),
        ..AlertingOptions::default()
    }
}

struct Running {
    svc: Arc<AlertingService>,
    stop: CancellationToken,
    registry: prometheus::Registry,
    dir: Option<tempfile::TempDir>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn start_service(channels: Vec<ChannelDef>, routing: RoutingConfig) -> Running {
    start_service_in(tempfile::tempdir().unwrap(), channels, routing, opts()).await
}

async fn start_service_in(
    dir: tempfile::TempDir,
    channels: Vec<ChannelDef>,
    routing: RoutingConfig,
    opts: AlertingOptions,
) -> Running {
    let registry = prometheus::Registry::new();
    let svc = AlertingService::open(
        Arc::new(MetaStore::open(dir.path()).unwrap()),
        sources(vec![]),
        None,
        opts,
        &registry,
        Arc::new(now_ms),
    )
    .unwrap();
    for c in channels {
        svc.put_channel(c).unwrap();
    }
    svc.put_routing(routing).unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(svc.clone().run(stop.clone()));
    Running {
        svc,
        stop,
        registry,
        dir: Some(dir),
    }
}

fn webhook(name: &str, url: &str) -> ChannelDef {
    ChannelDef {
        name: name.into(),
        send_resolved: true,
        kind: ChannelKind::Webhook {
            url: url.into(),
            headers: BTreeMap::new(),
        },
    }
}

fn by_alertname() -> RoutingConfig {
    RoutingConfig {
        route: Route {
            group_by: Some(vec!["alertname".into()]),
            ..Default::default()
        },
        inhibit_rules: vec![],
    }
}

fn alert(pairs: &[(&str, &str)], ends: Option<i64>) -> Alert {
    Alert {
        labels: pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        annotations: [("summary".to_string(), "it broke".to_string())].into(),
        starts_at_ms: now_ms(),
        ends_at_ms: ends,
        generator_url: String::new(),
        updated_at_ms: 0,
    }
}

async fn wait_for(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn statuses(body: &Value) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = body["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["labels"]["instance"].as_str().unwrap_or("").to_string(),
                a["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_groups_dedups_repeats_and_sends_resolved() {
    let (rx, url) = start_receiver(0).await;
    let run = start_service(vec![webhook("hook", &url)], by_alertname()).await;
    let far = Some(now_ms() + 60_000);
    run.svc
        .receive_alerts(vec![
            alert(&[("alertname", "Down"), ("instance", "a")], far),
            alert(&[("alertname", "Down"), ("instance", "b")], far),
        ])
        .unwrap();
    wait_for("the first notification", || rx.bodies.lock().len() == 1).await;
    let first = rx.bodies.lock()[0].clone();
    assert_eq!(first["version"], "4");
    assert_eq!(first["status"], "firing");
    assert_eq!(first["receiver"], "hook");
    assert_eq!(
        first["groupLabels"],
        serde_json::json!({"alertname": "Down"})
    );
    assert_eq!(first["commonLabels"]["alertname"], "Down");
    assert_eq!(first["commonAnnotations"]["summary"], "it broke");
    assert_eq!(first["externalURL"], "http://tern.test");
    assert_eq!(
        statuses(&first),
        vec![("a".into(), "firing".into()), ("b".into(), "firing".into())],
        "both alerts in one grouped notification"
    );
    // Dedup: the same alerts again change nothing for several group intervals.
    run.svc
        .receive_alerts(vec![alert(
            &[("alertname", "Down"), ("instance", "a")],
            far,
        )])
        .unwrap();
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(rx.bodies.lock().len(), 1, "no duplicate notifications");
    // Repeat after repeat_interval (1.5 s).
    wait_for("the repeated notification", || rx.bodies.lock().len() == 2).await;
    assert_eq!(statuses(&rx.bodies.lock()[1]).len(), 2);
    // Resolve one: the next notification carries it as resolved.
    run.svc
        .receive_alerts(vec![alert(
            &[("alertname", "Down"), ("instance", "b")],
            Some(now_ms()),
        )])
        .unwrap();
    wait_for("the resolved notification", || rx.bodies.lock().len() == 3).await;
    let third = rx.bodies.lock()[2].clone();
    assert_eq!(
        statuses(&third),
        vec![
            ("a".into(), "firing".into()),
            ("b".into(), "resolved".into())
        ]
    );
    // Resolving the last one sends an all-resolved notification.
    run.svc
        .receive_alerts(vec![alert(
            &[("alertname", "Down"), ("instance", "a")],
            Some(now_ms()),
        )])
        .unwrap();
    wait_for("the final notification", || rx.bodies.lock().len() == 4).await;
    let last = rx.bodies.lock()[3].clone();
    assert_eq!(last["status"], "resolved");
    assert_eq!(statuses(&last), vec![("a".into(), "resolved".into())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_deliveries_are_retried_and_failing_channels_are_visible() {
    let (rx, url) = start_receiver(2).await;
    // A port nobody listens on.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/hook", l.local_addr().unwrap())
    };
    let routing = RoutingConfig {
        route: Route {
            receiver: Some("flaky".into()),
            routes: vec![Route {
                receiver: Some("dead".into()),
                matchers: vec![Matcher::parse("team=ghost").unwrap()],
                ..Default::default()
            }],
            ..Default::default()
        },
        inhibit_rules: vec![],
    };
    let run = start_service(
        vec![webhook("flaky", &url), webhook("dead", &dead)],
        routing,
    )
    .await;
    let far = Some(now_ms() + 60_000);
    run.svc
        .receive_alerts(vec![
            alert(&[("alertname", "A"), ("instance", "x")], far),
            alert(&[("alertname", "B"), ("team", "ghost")], far),
        ])
        .unwrap();
    wait_for("delivery after two failures", || {
        rx.bodies.lock().len() == 1
    })
    .await;
    assert_eq!(rx.attempts.load(Ordering::SeqCst), 3);
    wait_for("the dead channel giving up", || {
        run.svc
            .channel_status()
            .get("dead")
            .is_some_and(|s| s.failed == 1)
    })
    .await;
    let st = run.svc.channel_status();
    let flaky = &st["flaky"];
    assert_eq!(flaky.delivered, 1);
    assert_eq!(flaky.consecutive_failures, 0);
    assert!(!flaky.failing);
    assert!(
        flaky.last_error.as_deref().unwrap_or("").contains("500"),
        "{flaky:?}"
    );
    let dead = &st["dead"];
    assert!(dead.failing);
    assert_eq!(dead.consecutive_failures, 4, "max_attempts = 4");
    let mut buf = Vec::new();
    prometheus::Encoder::encode(
        &prometheus::TextEncoder::new(),
        &run.registry.gather(),
        &mut buf,
    )
    .unwrap();
    let text = String::from_utf8(buf).unwrap();
    for line in [
        "tern_alerting_notifications_total{channel=\"flaky\",outcome=\"retry\"} 2",
        "tern_alerting_notifications_total{channel=\"flaky\",outcome=\"success\"} 1",
        "tern_alerting_notifications_total{channel=\"dead\",outcome=\"failed\"} 1",
        "tern_alerting_channel_failing{channel=\"dead\"} 1",
        "tern_alerting_channel_failing{channel=\"flaky\"} 0",
    ] {
        assert!(text.contains(line), "{line} missing in\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silences_mute_until_they_expire_and_inhibition_mutes_targets() {
    let (rx, url) = start_receiver(0).await;
    let mut routing = by_alertname();
    routing.inhibit_rules = vec![InhibitRule {
        source_matchers: vec![Matcher::parse("severity=critical").unwrap()],
        target_matchers: vec![Matcher::parse("severity=warning").unwrap()],
        equal: vec!["cluster".into()],
    }];
    let run = start_service(vec![webhook("hook", &url)], routing).await;
    let now = now_ms();
    let id = run
        .svc
        .put_silence(Silence {
            id: String::new(),
            matchers: vec![Matcher::parse("alertname=Maintenance").unwrap()],
            starts_at_ms: now,
            ends_at_ms: now + 1000,
            created_by: "ops".into(),
            comment: "planned work".into(),
            expiry_handled: false,
        })
        .unwrap();
    let far = Some(now + 60_000);
    run.svc
        .receive_alerts(vec![
            alert(&[("alertname", "Maintenance"), ("instance", "m")], far),
            alert(
                &[
                    ("alertname", "DiskFull"),
                    ("instance", "crit"),
                    ("severity", "critical"),
                    ("cluster", "eu"),
                ],
                far,
            ),
            alert(
                &[
                    ("alertname", "DiskFull"),
                    ("instance", "warn"),
                    ("severity", "warning"),
                    ("cluster", "eu"),
                ],
                far,
            ),
        ])
        .unwrap();
    wait_for("the DiskFull notification", || rx.bodies.lock().len() == 1).await;
    let first = rx.bodies.lock()[0].clone();
    assert_eq!(
        statuses(&first),
        vec![("crit".into(), "firing".into())],
        "the warning is inhibited by the critical alert in the same cluster"
    );
    let silences = run.svc.silences().unwrap();
    assert_eq!(silences[0].id, id);
    assert_eq!(silences[0].created_by, "ops");
    // Nothing for the silenced alert while the silence lasts...
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(rx.bodies.lock().len(), 1);
    // ...and a notification as soon as it expires.
    wait_for("the notification after the silence expired", || {
        rx.bodies.lock().len() == 2
    })
    .await;
    let second = rx.bodies.lock()[1].clone();
    assert_eq!(second["groupLabels"]["alertname"], "Maintenance");
    let arrived = now_ms() - now;
    assert!(
        arrived < 1000 + 250,
        "sent {arrived} ms after the silence was made"
    );
    assert!(run.svc.silences().unwrap()[0].expiry_handled);
}

async fn smtp_server() -> (Arc<Mutex<Vec<String>>>, String) {
    let mails = Arc::new(Mutex::new(Vec::new()));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let m = mails.clone();
    tokio::spawn(async move {
        while let Ok((sock, _)) = l.accept().await {
            let m = m.clone();
            tokio::spawn(async move {
                let (r, mut w) = sock.into_split();
                let mut r = BufReader::new(r);
                w.write_all(b"220 test ESMTP\r\n").await.unwrap();
                let mut line = String::new();
                let mut transcript = String::new();
                loop {
                    line.clear();
                    if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                        break;
                    }
                    transcript.push_str(&line);
                    let cmd = line.trim_end().to_ascii_uppercase();
                    let reply: &[u8] = if cmd.starts_with("EHLO") {
                        b"250-test\r\n250 AUTH PLAIN\r\n"
                    } else if cmd.starts_with("AUTH PLAIN") {
                        b"235 ok\r\n"
                    } else if cmd == "DATA" {
                        w.write_all(b"354 go on\r\n").await.unwrap();
                        loop {
                            line.clear();
                            r.read_line(&mut line).await.unwrap();
                            if line == ".\r\n" {
                                break;
                            }
                            transcript.push_str(&line);
                        }
                        b"250 queued\r\n"
                    } else if cmd == "QUIT" {
                        w.write_all(b"221 bye\r\n").await.unwrap();
                        break;
                    } else {
                        b"250 ok\r\n"
                    };
                    w.write_all(reply).await.unwrap();
                }
                m.lock().push(transcript);
            });
        }
    });
    (mails, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_over_smtp_and_slack_messages() {
    let (mails, smtp) = smtp_server().await;
    let (slack, slack_url) = start_receiver(0).await;
    let channels = vec![
        ChannelDef {
            name: "mail".into(),
            send_resolved: true,
            kind: ChannelKind::Email {
                smtp,
                from: "tern@example.com".into(),
                to: vec!["oncall@example.com".into()],
                username: Some("u".into()),
                password: Some("p".into()),
            },
        },
        ChannelDef {
            name: "slack".into(),
            send_resolved: false,
            kind: ChannelKind::Slack {
                url: slack_url,
                channel: Some("#alerts".into()),
            },
        },
    ];
    let run = start_service(channels, by_alertname()).await;
    let far = Some(now_ms() + 60_000);
    run.svc
        .receive_alerts(vec![alert(
            &[("alertname", "Down"), ("instance", "db1")],
            far,
        )])
        .unwrap();
    wait_for("the mail", || !mails.lock().is_empty()).await;
    wait_for("the slack message", || !slack.bodies.lock().is_empty()).await;
    let mail = mails.lock()[0].clone();
    assert!(mail.contains("MAIL FROM:<tern@example.com>"), "{mail}");
    assert!(mail.contains("RCPT TO:<oncall@example.com>"), "{mail}");
    assert!(mail.contains("AUTH PLAIN AHUAcA=="), "{mail}");
    assert!(mail.contains("Subject: [FIRING:1] Down"), "{mail}");
    assert!(mail.contains("instance=db1"), "{mail}");
    let msg = slack.bodies.lock()[0].clone();
    assert_eq!(msg["text"], "[FIRING:1] Down");
    assert_eq!(msg["channel"], "#alerts");
    assert!(msg["attachments"][0]["text"]
        .as_str()
        .unwrap()
        .contains("it broke"));
    // Resolved: mailed (send_resolved), not posted to Slack (send_resolved: false).
    run.svc
        .receive_alerts(vec![alert(
            &[("alertname", "Down"), ("instance", "db1")],
            Some(now_ms()),
        )])
        .unwrap();
    wait_for("the resolved mail", || mails.lock().len() == 2).await;
    assert!(mails.lock()[1].contains("Subject: [RESOLVED] Down"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(slack.bodies.lock().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_does_not_repeat_notifications_inside_repeat_interval() {
    let (rx, url) = start_receiver(0).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    // A repeat interval long enough that a slow restart cannot reach it
    // before the check below.
    let mut o = opts();
    o.timing.repeat_interval_ms = 4000;
    let run = start_service_in(dir, vec![webhook("hook", &url)], by_alertname(), o.clone()).await;
    let far = Some(now_ms() + 60_000);
    let a = alert(&[("alertname", "Down"), ("instance", "a")], far);
    run.svc.receive_alerts(vec![a.clone()]).unwrap();
    wait_for("the first notification", || rx.bodies.lock().len() == 1).await;
    let sent_at = Instant::now();
    // Stop, keep the data directory, start again.
    let mut run = run;
    let dir = run.dir.take().unwrap();
    drop(run);
    assert_eq!(dir.path(), path.as_path());
    // Channels come back from the meta store.
    let run = start_service_in(dir, vec![], by_alertname(), o).await;
    run.svc.receive_alerts(vec![a]).unwrap();
    // group_wait (100 ms) and a few group intervals pass: the notification
    // log says it was sent, so nothing is repeated...
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(rx.bodies.lock().len(), 1);
    assert!(
        sent_at.elapsed() < Duration::from_millis(3800),
        "the check came too late to mean anything"
    );
    // ...until repeat_interval (4 s after the first send).
    wait_for("the repeat", || rx.bodies.lock().len() == 2).await;
    assert!(
        sent_at.elapsed() >= Duration::from_millis(3900),
        "{:?}",
        sent_at.elapsed()
    );
}

/// A source whose selects of `slow_metric` take 2 s.
struct SlowSource(crate::query::promql::VecSource);

impl crate::storage::SeriesSource for SlowSource {
    fn select(
        &self,
        m: &[crate::model::LabelMatcher],
        s: i64,
        e: i64,
    ) -> Result<Vec<crate::model::Series>, crate::storage::StorageError> {
        if m.iter().any(|x| x.value == "slow_metric") {
            std::thread::sleep(Duration::from_secs(2));
        }
        self.0.select(m, s, e)
    }
    fn series(
        &self,
        m: &[crate::model::LabelMatcher],
        s: i64,
        e: i64,
    ) -> Result<Vec<crate::model::Labels>, crate::storage::StorageError> {
        self.0.series(m, s, e)
    }
    fn label_names(
        &self,
        m: &[crate::model::LabelMatcher],
        s: i64,
        e: i64,
    ) -> Result<Vec<String>, crate::storage::StorageError> {
        self.0.label_names(m, s, e)
    }
    fn label_values(
        &self,
        n: &str,
        m: &[crate::model::LabelMatcher],
        s: i64,
        e: i64,
    ) -> Result<Vec<String>, crate::storage::StorageError> {
        self.0.label_values(n, m, s, e)
    }
    fn metadata(&self) -> Result<Vec<crate::model::MetricMeta>, crate::storage::StorageError> {
        self.0.metadata()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_group_delays_neither_other_groups_nor_notifications() {
    let (rx, url) = start_receiver(0).await;
    let dir = tempfile::tempdir().unwrap();
    let mut src = sources(vec![]);
    src.series = Arc::new(SlowSource(crate::query::promql::VecSource::default()));
    let svc = AlertingService::open(
        Arc::new(MetaStore::open(dir.path()).unwrap()),
        src,
        None,
        opts(),
        &prometheus::Registry::new(),
        Arc::new(now_ms),
    )
    .unwrap();
    svc.put_channel(webhook("hook", &url)).unwrap();
    svc.import_rule_file(
        "groups:\n  - name: slow\n    interval: 100ms\n    rules:\n      - alert: Slow\n        expr: slow_metric > 0\n  - name: fast\n    interval: 100ms\n    rules:\n      - alert: Always\n        expr: vector(1)\n",
        false,
    )
    .unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(svc.clone().run(stop.clone()));
    let started = Instant::now();
    // The fast group fires and is notified while the slow one is still in
    // its first evaluation.
    wait_for("the fast group's notification", || {
        !rx.bodies.lock().is_empty()
    })
    .await;
    assert!(
        started.elapsed() < Duration::from_millis(1800),
        "{:?}",
        started.elapsed()
    );
    let evals = |name: &str| {
        svc.rule_views()
            .into_iter()
            .find(|g| g.group.name == name)
            .and_then(|g| g.last_eval_ms)
    };
    let first = evals("fast").unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        evals("fast").unwrap() > first,
        "the fast group keeps its interval"
    );
    assert!(started.elapsed() < Duration::from_secs(2) || evals("slow").is_some());
    stop.cancel();
}
