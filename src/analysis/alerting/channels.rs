//! Notification channels and their delivery: a webhook with the
//! Alertmanager webhook payload, a Slack-compatible incoming webhook, and
//! email over plain SMTP (no TLS: point it at a local relay).
//!
//! Each channel has a worker task with a bounded queue: [`Delivery::send`]
//! never waits (a full queue drops the notification and counts it), and a
//! failed delivery is retried with exponential backoff up to a number of
//! attempts. Per-channel status (last success, last error, consecutive
//! failures) is kept for the API and exported as metrics.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::notify::Notification;
use super::time::{format_rfc3339, now_ms};
use super::AlertingError;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ChannelKind {
    /// POSTs the Alertmanager webhook payload (version 4).
    Webhook {
        url: String,
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        headers: BTreeMap<String, String>,
    },
    /// POSTs `{"text": ..., "attachments": [...]}` to an incoming webhook.
    Slack {
        url: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        channel: Option<String>,
    },
    /// Sends a plain-text mail through an SMTP server (`host:port`),
    /// with AUTH PLAIN when a username is set.
    Email {
        smtp: String,
        from: String,
        to: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        username: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        password: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChannelDef {
    pub name: String,
    #[serde(default = "yes")]
    pub send_resolved: bool,
    #[serde(flatten)]
    pub kind: ChannelKind,
}

fn yes() -> bool {
    true
}

impl ChannelDef {
    pub fn validate(&self) -> Result<(), AlertingError> {
        let bad = |m: String| {
            Err(AlertingError::InvalidRequest(format!(
                "channel {:?}: {m}",
                self.name
            )))
        };
        if self.name.is_empty()
            || self.name.len() > 128
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return bad("a name of 1 to 128 letters, digits, '-', '_' or '.' is required".into());
        }
        match &self.kind {
            ChannelKind::Webhook { url, .. } | ChannelKind::Slack { url, .. } => {
                match reqwest::Url::parse(url) {
                    Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {}
                    _ => return bad(format!("invalid http(s) url {url:?}")),
                }
            }
            ChannelKind::Email { smtp, from, to, .. } => {
                if !smtp.contains(':') {
                    return bad(format!("smtp must be host:port, got {smtp:?}"));
                }
                if !from.contains('@') || to.is_empty() || to.iter().any(|t| !t.contains('@')) {
                    return bad("from and at least one to address are required".into());
                }
                if [from]
                    .into_iter()
                    .chain(to.iter())
                    .any(|a| a.contains(['\r', '\n', '<', '>']))
                {
                    return bad("addresses must not contain line breaks or angle brackets".into());
                }
            }
        }
        Ok(())
    }
}

/// Retry policy of deliveries.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    pub max_attempts: u32,
    pub timeout: Duration,
    pub queue_capacity: usize,
}

/// The delivery status of one channel.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ChannelStatus {
    pub last_success_ms: Option<i64>,
    pub last_error: Option<String>,
    pub last_error_ms: Option<i64>,
    pub consecutive_failures: u64,
    pub delivered: u64,
    pub failed: u64,
    pub dropped: u64,
    /// Whether the last attempt failed.
    pub failing: bool,
}

struct Job {
    notification: Notification,
}

struct Worker {
    def: ChannelDef,
    tx: mpsc::Sender<Job>,
    stop: CancellationToken,
}

#[derive(Clone)]
struct Metrics {
    sent: IntCounterVec,
    failing: IntGaugeVec,
}

/// The channel workers.
pub struct Delivery {
    workers: Mutex<HashMap<String, Worker>>,
    status: Arc<Mutex<BTreeMap<String, ChannelStatus>>>,
    policy: RetryPolicy,
    external_url: String,
    http: reqwest::Client,
    metrics: Metrics,
}

impl Delivery {
    pub fn new(policy: RetryPolicy, external_url: String, registry: &Registry) -> Self {
        let sent = IntCounterVec::new(
            Opts::new(
                "tern_alerting_notifications_total",
                "Notification delivery attempts by channel and outcome (success, retry, failed, dropped)",
            ),
            &["channel", "outcome"],
        )
        .unwrap_or_else(|e| panic!("notification counter definition is invalid: {e}"));
        let failing = IntGaugeVec::new(
            Opts::new(
                "tern_alerting_channel_failing",
                "1 while the last delivery attempt of a channel failed",
            ),
            &["channel"],
        )
        .unwrap_or_else(|e| panic!("channel gauge definition is invalid: {e}"));
        // A second registration (another service on the same registry in
        // tests) keeps the first one's series.
        let _ = registry.register(Box::new(sent.clone()));
        let _ = registry.register(Box::new(failing.clone()));
        let http = reqwest::Client::builder()
            .timeout(policy.timeout)
            .build()
            .unwrap_or_default();
        Delivery {
            workers: Mutex::new(HashMap::new()),
            status: Arc::new(Mutex::new(BTreeMap::new())),
            policy,
            external_url,
            http,
            metrics: Metrics { sent, failing },
        }
    }

    /// Starts, restarts or stops workers so that they match `defs`.
    pub fn set_channels(&self, defs: &[ChannelDef]) {
        let mut workers = self.workers.lock();
        let wanted: BTreeMap<&str, &ChannelDef> =
            defs.iter().map(|d| (d.name.as_str(), d)).collect();
        workers.retain(|name, w| {
            let keep = wanted.get(name.as_str()).is_some_and(|d| **d == w.def);
            if !keep {
                w.stop.cancel();
            }
            keep
        });
        self.status
            .lock()
            .retain(|n, _| wanted.contains_key(n.as_str()));
        for (name, def) in wanted {
            if workers.contains_key(name) {
                continue;
            }
            let (tx, rx) = mpsc::channel(self.policy.queue_capacity.max(1));
            let stop = CancellationToken::new();
            self.status.lock().entry(name.to_string()).or_default();
            tokio::spawn(run_worker(
                def.clone(),
                rx,
                stop.clone(),
                self.policy,
                self.external_url.clone(),
                self.http.clone(),
                self.status.clone(),
                self.metrics.clone(),
            ));
            workers.insert(
                name.to_string(),
                Worker {
                    def: def.clone(),
                    tx,
                    stop,
                },
            );
        }
    }

    /// Queues a notification for its receiver without waiting.
    pub fn send(&self, n: Notification) {
        let workers = self.workers.lock();
        let Some(w) = workers.get(&n.receiver) else {
            tracing::warn!(receiver = %n.receiver, "notification for an unknown channel dropped");
            return;
        };
        if !n.firing() && !w.def.send_resolved {
            return;
        }
        let name = n.receiver.clone();
        if w.tx.try_send(Job { notification: n }).is_err() {
            self.metrics
                .sent
                .with_label_values(&[&name, "dropped"])
                .inc();
            if let Some(s) = self.status.lock().get_mut(&name) {
                s.dropped += 1;
            }
            tracing::warn!(channel = %name, "notification queue full, notification dropped");
        }
    }

    pub fn status(&self) -> BTreeMap<String, ChannelStatus> {
        self.status.lock().clone()
    }

    pub fn stop(&self) {
        for w in self.workers.lock().values() {
            w.stop.cancel();
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn run_worker(
    def: ChannelDef,
    mut rx: mpsc::Receiver<Job>,
    stop: CancellationToken,
    policy: RetryPolicy,
    external_url: String,
    http: reqwest::Client,
    status: Arc<Mutex<BTreeMap<String, ChannelStatus>>>,
    metrics: Metrics,
) {
    loop {
        let job = tokio::select! {
            _ = stop.cancelled() => return,
            j = rx.recv() => match j { Some(j) => j, None => return },
        };
        let mut backoff = policy.initial_backoff;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let res = deliver(
                &def,
                &job.notification,
                &external_url,
                &http,
                policy.timeout,
            )
            .await;
            let now = now_ms();
            let done = {
                let mut st = status.lock();
                let s = st.entry(def.name.clone()).or_default();
                match res {
                    Ok(()) => {
                        s.last_success_ms = Some(now);
                        s.consecutive_failures = 0;
                        s.delivered += 1;
                        s.failing = false;
                        metrics
                            .sent
                            .with_label_values(&[&def.name, "success"])
                            .inc();
                        metrics.failing.with_label_values(&[&def.name]).set(0);
                        true
                    }
                    Err(e) => {
                        s.last_error = Some(e.clone());
                        s.last_error_ms = Some(now);
                        s.consecutive_failures += 1;
                        s.failing = true;
                        metrics.failing.with_label_values(&[&def.name]).set(1);
                        if attempt >= policy.max_attempts {
                            s.failed += 1;
                            metrics.sent.with_label_values(&[&def.name, "failed"]).inc();
                            tracing::error!(channel = %def.name, attempts = attempt, error = %e, "notification delivery failed");
                            true
                        } else {
                            metrics.sent.with_label_values(&[&def.name, "retry"]).inc();
                            tracing::warn!(channel = %def.name, attempt, error = %e, "notification delivery failed, retrying");
                            false
                        }
                    }
                }
            };
            if done {
                break;
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(policy.max_backoff);
        }
    }
}

async fn deliver(
    def: &ChannelDef,
    n: &Notification,
    external_url: &str,
    http: &reqwest::Client,
    timeout: Duration,
) -> Result<(), String> {
    match &def.kind {
        ChannelKind::Webhook { url, headers } => {
            let mut req = http.post(url).json(&webhook_payload(n, external_url));
            for (k, v) in headers {
                req = req.header(k, v);
            }
            check(req.send().await).await
        }
        ChannelKind::Slack { url, channel } => {
            let mut body = slack_payload(n, external_url);
            if let Some(c) = channel {
                body["channel"] = serde_json::json!(c);
            }
            check(http.post(url).json(&body).send().await).await
        }
        ChannelKind::Email {
            smtp,
            from,
            to,
            username,
            password,
        } => {
            let (subject, body) = email_text(n, external_url);
            let auth = username
                .as_ref()
                .map(|u| (u.clone(), password.clone().unwrap_or_default()));
            tokio::time::timeout(timeout, send_mail(smtp, from, to, &subject, &body, auth))
                .await
                .map_err(|_| format!("smtp {smtp}: timed out"))?
        }
    }
}

async fn check(r: Result<reqwest::Response, reqwest::Error>) -> Result<(), String> {
    let r = r.map_err(|e| format!("request failed: {e}"))?;
    if r.status().is_success() {
        Ok(())
    } else {
        Err(format!("receiver answered {}", r.status()))
    }
}

fn common(
    n: &Notification,
    f: impl Fn(&super::notify::Alert) -> &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut it = n.alerts.iter();
    let Some(first) = it.next() else {
        return BTreeMap::new();
    };
    let mut c = f(&first.alert).clone();
    for a in it {
        let m = f(&a.alert);
        c.retain(|k, v| m.get(k) == Some(v));
    }
    c
}

/// The Alertmanager webhook payload (version 4).
pub fn webhook_payload(n: &Notification, external_url: &str) -> serde_json::Value {
    let alerts: Vec<serde_json::Value> = n
        .alerts
        .iter()
        .map(|a| {
            serde_json::json!({
                "status": if a.resolved { "resolved" } else { "firing" },
                "labels": a.alert.labels,
                "annotations": a.alert.annotations,
                "startsAt": format_rfc3339(a.alert.starts_at_ms),
                "endsAt": if a.resolved {
                    format_rfc3339(a.alert.ends_at_ms.unwrap_or(a.alert.updated_at_ms))
                } else {
                    "0001-01-01T00:00:00Z".to_string()
                },
                "generatorURL": a.alert.generator_url,
                "fingerprint": a.fingerprint,
            })
        })
        .collect();
    serde_json::json!({
        "version": "4",
        "groupKey": n.group_key,
        "truncatedAlerts": 0,
        "status": if n.firing() { "firing" } else { "resolved" },
        "receiver": n.receiver,
        "groupLabels": n.group_labels,
        "commonLabels": common(n, |a| &a.labels),
        "commonAnnotations": common(n, |a| &a.annotations),
        "externalURL": external_url,
        "alerts": alerts,
    })
}

fn title(n: &Notification) -> String {
    let firing = n.alerts.iter().filter(|a| !a.resolved).count();
    let name = common(n, |a| &a.labels)
        .get("alertname")
        .cloned()
        .unwrap_or_else(|| "alerts".into());
    if firing > 0 {
        format!("[FIRING:{firing}] {name}")
    } else {
        format!("[RESOLVED] {name}")
    }
}

fn alert_lines(n: &Notification) -> String {
    let mut s = String::new();
    for a in &n.alerts {
        let summary = a
            .alert
            .annotations
            .get("summary")
            .or_else(|| a.alert.annotations.get("description"))
            .cloned()
            .unwrap_or_default();
        let labels: Vec<String> = a
            .alert
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        s.push_str(&format!(
            "- [{}] {} {}\n",
            if a.resolved { "resolved" } else { "firing" },
            labels.join(", "),
            summary
        ));
    }
    s
}

/// A Slack incoming-webhook message.
pub fn slack_payload(n: &Notification, external_url: &str) -> serde_json::Value {
    serde_json::json!({
        "text": title(n),
        "attachments": [{
            "color": if n.firing() { "danger" } else { "good" },
            "title": title(n),
            "title_link": format!("{external_url}/alerts"),
            "text": alert_lines(n),
        }],
    })
}

/// Subject and plain-text body of a notification mail.
pub fn email_text(n: &Notification, external_url: &str) -> (String, String) {
    (
        title(n),
        format!(
            "{}\n{}\n\n{external_url}/alerts\n",
            title(n),
            alert_lines(n)
        ),
    )
}

async fn smtp_reply<R: tokio::io::AsyncBufRead + Unpin>(
    r: &mut R,
    want: u16,
) -> Result<(), String> {
    let mut line = String::new();
    loop {
        line.clear();
        let n = r
            .read_line(&mut line)
            .await
            .map_err(|e| format!("smtp read: {e}"))?;
        if n == 0 {
            return Err("smtp server closed the connection".into());
        }
        if line.len() > 4096 {
            return Err("smtp reply line too long".into());
        }
        let code: u16 = line
            .get(..3)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| format!("bad smtp reply {line:?}"))?;
        if line.as_bytes().get(3) == Some(&b'-') {
            continue;
        }
        if code / 100 != want / 100 {
            return Err(format!("smtp server answered {}", line.trim_end()));
        }
        return Ok(());
    }
}

/// Sends one mail over plain SMTP.
pub async fn send_mail(
    server: &str,
    from: &str,
    to: &[String],
    subject: &str,
    body: &str,
    auth: Option<(String, String)>,
) -> Result<(), String> {
    use base64::Engine;
    let stream = tokio::net::TcpStream::connect(server)
        .await
        .map_err(|e| format!("smtp connect {server}: {e}"))?;
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    macro_rules! cmd {
        ($line:expr, $want:expr) => {{
            w.write_all(format!("{}\r\n", $line).as_bytes())
                .await
                .map_err(|e| format!("smtp write: {e}"))?;
            smtp_reply(&mut r, $want).await?;
        }};
    }
    smtp_reply(&mut r, 220).await?;
    cmd!("EHLO tern", 250);
    if let Some((user, pass)) = auth {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{pass}"));
        cmd!(format!("AUTH PLAIN {token}"), 235);
    }
    cmd!(format!("MAIL FROM:<{from}>"), 250);
    for t in to {
        cmd!(format!("RCPT TO:<{t}>"), 250);
    }
    cmd!("DATA", 354);
    let mut msg = format!(
        "From: {from}\r\nTo: {}\r\nSubject: {}\r\nDate: {}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n",
        to.join(", "),
        subject.replace(['\r', '\n'], " "),
        format_rfc3339(now_ms())
    );
    for line in body.lines() {
        if line.starts_with('.') {
            msg.push('.');
        }
        msg.push_str(line);
        msg.push_str("\r\n");
    }
    msg.push('.');
    cmd!(msg, 250);
    let _ = w.write_all(b"QUIT\r\n").await;
    Ok(())
}
