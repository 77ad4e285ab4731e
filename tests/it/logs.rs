//! Log search end to end: the HTTP API over the tantivy store, fed by the
//! OpenTelemetry Python SDK and by raw OTLP; live tail; redaction; bad
//! queries and bad input; restart and SIGKILL keep every acknowledged log
//! searchable.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use opentelemetry_proto::tonic::common::v1::{
    any_value, AnyValue, ArrayValue, KeyValue, KeyValueList,
};
use prost::Message;
use serde_json::Value;

use crate::support::*;

const PB: &str = "application/x-protobuf";

async fn get(http: &reqwest::Client, url: String) -> (u16, Value) {
    let r = http.get(url).send().await.expect("request sent");
    let status = r.status().as_u16();
    let body = r.json::<Value>().await.expect("json body");
    (status, body)
}

async fn search(s: &TestServer, params: &[(&str, &str)]) -> Value {
    let url = reqwest::Url::parse_with_params(&s.api_url("/api/v1/logs/search"), params).unwrap();
    let (status, body) = get(&s.http, url.to_string()).await;
    assert_eq!(status, 200, "{params:?}: {body}");
    body
}

async fn total(s: &TestServer, q: &str, start: &str, end: &str) -> u64 {
    search(
        s,
        &[("q", q), ("start", start), ("end", end), ("limit", "0")],
    )
    .await["total"]
        .as_u64()
        .unwrap()
}

/// Every record of a search, page by page.
async fn all_pages(s: &TestServer, q: &str, start: &str, end: &str, limit: usize) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor = String::new();
    let limit = limit.to_string();
    loop {
        let mut p = vec![
            ("q", q),
            ("start", start),
            ("end", end),
            ("limit", limit.as_str()),
        ];
        if !cursor.is_empty() {
            p.push(("cursor", cursor.as_str()));
        }
        let page = search(s, &p).await;
        out.extend(page["records"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = c.to_string(),
            None => return out,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_logs_are_found_by_text_phrase_field_severity_time_and_trace() {
    let s = TestServer::start().await;
    let sent = run_python(
        &s,
        "logs_e2e.py",
        &[
            "--protocol",
            "grpc",
            "--service",
            "py-logs",
            "--count",
            "300",
        ],
    )
    .await;
    let start = sent["start_ns"].as_u64().unwrap().to_string();
    let end = (sent["end_ns"].as_u64().unwrap() + 1).to_string();
    let (st, en) = (start.as_str(), end.as_str());
    let n = |k: &str| sent["sent"][k].as_u64().unwrap();
    let c = |k: &str| sent["counts"][k].as_u64().unwrap();
    let all = sent["total"].as_u64().unwrap();
    assert_eq!(all, 320);

    assert_eq!(total(&s, "", st, en).await, all);
    assert_eq!(total(&s, "service:py-logs", st, en).await, all);
    assert_eq!(total(&s, "timeout", st, en).await, n("timeout"));
    assert_eq!(total(&s, "TimeOut", st, en).await, n("timeout"));
    assert_eq!(
        total(&s, "\"connection reset\"", st, en).await,
        n("connection reset")
    );
    assert_eq!(total(&s, "\"reset connection\"", st, en).await, 0);
    assert_eq!(total(&s, "severity:error", st, en).await, c("error"));
    assert_eq!(total(&s, "level:WARNING", st, en).await, c("warn"));
    assert_eq!(total(&s, "severity_number:>=17", st, en).await, c("error"));
    assert_eq!(
        total(&s, "attributes.http.status_code:500", st, en).await,
        n("status_500")
    );
    assert_eq!(
        total(&s, "service:py-logs AND NOT severity:debug", st, en).await,
        all - c("debug")
    );
    assert_eq!(
        total(&s, "timeout OR \"connection reset\"", st, en).await,
        n("timeout") + n("connection reset")
    );
    assert_eq!(
        total(&s, "resource.deployment.environment:e2e", st, en).await,
        all
    );
    assert_eq!(total(&s, "service:other", st, en).await, 0);

    // Trace context from the active span.
    let trace_id = sent["trace_id"].as_str().unwrap();
    let span_id = sent["span_id"].as_str().unwrap();
    assert_eq!(total(&s, &format!("trace_id:{trace_id}"), st, en).await, 20);
    assert_eq!(
        total(
            &s,
            &format!("span_id:{span_id} AND \"inside the span\""),
            st,
            en
        )
        .await,
        20
    );
    let (status, t) = get(
        &s.http,
        s.api_url(&format!("/api/v1/logs/trace/{trace_id}")),
    )
    .await;
    assert_eq!(status, 200, "{t}");
    assert_eq!(t["records"].as_array().unwrap().len(), 20);
    assert_eq!(t["span_ids_with_logs"], serde_json::json!([span_id]));
    let first = &t["records"][0];
    assert_eq!(
        first["body"], "order step 0 inside the span",
        "oldest first"
    );
    assert_eq!(first["attributes"]["order.id"], "o-42");
    assert_eq!(first["attributes"]["step"], 0);
    assert_eq!(first["trace_id"], trace_id);

    // Pagination returns every record exactly once, newest first.
    let pages = all_pages(&s, "", st, en, 37).await;
    assert_eq!(pages.len() as u64, all);
    let ids: HashSet<&str> = pages.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len() as u64, all, "no record twice");
    let times: Vec<u64> = pages
        .iter()
        .map(|r| r["time_ns"].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "newest first");

    // A time range: exactly the records inside it.
    let mid = times[times.len() / 2];
    let inside = times.iter().filter(|t| **t >= mid).count() as u64;
    assert_eq!(total(&s, "", &mid.to_string(), en).await, inside);

    // The histogram counts every record of the range, by severity.
    let url = reqwest::Url::parse_with_params(
        &s.api_url("/api/v1/logs/histogram"),
        &[("q", ""), ("start", st), ("end", en), ("step", "100ms")],
    )
    .unwrap();
    let (status, h) = get(&s.http, url.to_string()).await;
    assert_eq!(status, 200, "{h}");
    assert_eq!(h["total"].as_u64(), Some(all));
    let buckets = h["buckets"].as_array().unwrap();
    let sum = |k: &str| -> u64 {
        buckets
            .iter()
            .map(|b| b["by_severity"][k].as_u64().unwrap_or(0))
            .sum()
    };
    assert_eq!(
        buckets
            .iter()
            .map(|b| b["total"].as_u64().unwrap())
            .sum::<u64>(),
        all
    );
    for k in ["debug", "info", "warn", "error"] {
        assert_eq!(sum(k), c(k), "{k} histogram count");
    }
    // The same through the search endpoint, for a query.
    let page = search(
        &s,
        &[
            ("q", "severity:error"),
            ("start", st),
            ("end", en),
            ("step", "1s"),
            ("limit", "1"),
        ],
    )
    .await;
    let hb = page["histogram"]["buckets"].as_array().unwrap();
    assert_eq!(
        hb.iter().map(|b| b["total"].as_u64().unwrap()).sum::<u64>(),
        c("error")
    );
}

/// An attribute value `depth` key-value lists deep (keys `a`).
fn nested(depth: usize) -> AnyValue {
    let mut v = AnyValue {
        value: Some(any_value::Value::StringValue("deep".into())),
    };
    for _ in 0..depth {
        v = AnyValue {
            value: Some(any_value::Value::KvlistValue(KeyValueList {
                values: vec![KeyValue {
                    key: "a".into(),
                    value: Some(v),
                    ..Default::default()
                }],
            })),
        };
    }
    v
}

/// An attribute value `depth` arrays deep. Arrays cost protobuf two message
/// levels per level (key-value lists three), so 40 levels stay within the
/// decoder's recursion limit and reach the validator's depth limit.
fn nested_arrays(depth: usize) -> AnyValue {
    let mut v = AnyValue {
        value: Some(any_value::Value::StringValue("deep".into())),
    };
    for _ in 0..depth {
        v = AnyValue {
            value: Some(any_value::Value::ArrayValue(ArrayValue { values: vec![v] })),
        };
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_queries_and_bad_input_get_clear_answers() {
    let s = TestServer::start_with(&["ingest.max_record_bytes=\"4KiB\""]).await;
    // Syntax errors: 400 with the position and what was expected.
    for (q, pos, expected) in [
        ("(timeout OR error", "17", "')'"),
        ("severity:", "9", "a value"),
        ("nosuch:x", "0", "a field"),
        ("\"open", "5", "'\"'"),
    ] {
        let url = reqwest::Url::parse_with_params(&s.api_url("/api/v1/logs/search"), &[("q", q)])
            .unwrap();
        let (status, body) = get(&s.http, url.to_string()).await;
        assert_eq!(status, 400, "{q}");
        assert_eq!(body["error"]["code"], "invalid_query", "{q}");
        let msg = body["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains(&format!("at {pos}")) && msg.contains(expected),
            "{q}: {msg}"
        );
    }
    for path in [
        "/api/v1/logs/search?limit=5000",
        "/api/v1/logs/search?cursor=nope",
        "/api/v1/logs/search?start=10&end=5",
        "/api/v1/logs/search?start=yesterday",
        "/api/v1/logs/search?bogus=1",
        "/api/v1/logs/histogram?start=0&end=1000000000000&step=1ms",
        "/api/v1/logs/trace/xyz",
    ] {
        let (status, body) = get(&s.http, s.api_url(path)).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert!(body["error"]["message"].as_str().unwrap().len() > 5);
    }

    // A record over the size limit is rejected alone; the others are stored.
    let mut big = log_record(&"x".repeat(8 << 10), 1);
    big.severity_number = 17;
    let ok_deep = {
        let mut r = log_record("nested ok", 2);
        r.attributes.push(KeyValue {
            key: "n".into(),
            value: Some(nested(8)),
            ..Default::default()
        });
        r
    };
    let too_deep = {
        let mut r = log_record("nested too deep", 3);
        r.attributes.push(KeyValue {
            key: "n".into(),
            value: Some(nested_arrays(40)),
            ..Default::default()
        });
        r
    };
    let bytes_body = {
        let mut r = log_record("", 4);
        r.body = Some(AnyValue {
            value: Some(any_value::Value::BytesValue(vec![0xff, 0xfe, 0x00, 0x41])),
        });
        r
    };
    let req = logs_request("badinput", vec![big, ok_deep, too_deep, bytes_body]).encode_to_vec();
    let r = s.post("/v1/logs", PB, req).await;
    assert_eq!(r.status(), 200);
    let resp = opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse::decode(
        r.bytes().await.unwrap(),
    )
    .unwrap();
    assert_eq!(resp.partial_success.unwrap().rejected_log_records, 2);
    let page = search(&s, &[("q", "service:badinput")]).await;
    let bodies: Vec<String> = page["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["body"].to_string())
        .collect();
    assert_eq!(page["total"], 2, "{bodies:?}");
    assert!(bodies.contains(&"\"nested ok\"".to_string()), "{bodies:?}");
    assert!(
        bodies.contains(&"\"fffe0041\"".to_string()),
        "bytes come back as hex: {bodies:?}"
    );
    // The nested attribute is searchable by its dotted path.
    let path = format!("attributes.n{}:deep", ".a".repeat(8));
    assert_eq!(total(&s, &path, "0", "now+1h").await, 1);

    // Invalid UTF-8 in a protobuf string: the request is refused, nothing stored.
    let mut raw = logs_request("badutf8", vec![log_record("HELLOZZ", 5)]).encode_to_vec();
    let at = raw.windows(2).position(|w| w == b"ZZ").unwrap();
    raw[at] = 0xff;
    raw[at + 1] = 0xfe;
    let r = s.post("/v1/logs", PB, raw).await;
    assert_eq!(r.status(), 400);
    assert_eq!(total(&s, "service:badutf8", "0", "now+1h").await, 0);
    s.assert_healthy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_tail_streams_matching_records() {
    let s = TestServer::start().await;
    let url = reqwest::Url::parse_with_params(
        &s.api_url("/api/v1/logs/tail"),
        &[("q", "severity:error AND service:tail")],
    )
    .unwrap();
    let mut resp = s.http.get(url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut info = log_record("just info", 1);
    info.severity_number = 9;
    let mut err = log_record("disk on fire", 2);
    err.severity_number = 17;
    err.severity_text = "ERROR".into();
    let r = s
        .post(
            "/v1/logs",
            PB,
            logs_request("tail", vec![info, err]).encode_to_vec(),
        )
        .await;
    assert_eq!(r.status(), 200);
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !text.contains("disk on fire") {
        let chunk = tokio::time::timeout_at(deadline, resp.chunk())
            .await
            .expect("a tail event arrives")
            .unwrap()
            .expect("stream open");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(text.contains("event: log"), "{text}");
    assert!(
        !text.contains("just info"),
        "non-matching records are filtered: {text}"
    );
    let bad =
        reqwest::Url::parse_with_params(&s.api_url("/api/v1/logs/tail"), &[("q", "(")]).unwrap();
    assert_eq!(s.http.get(bad).send().await.unwrap().status(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redaction_masks_before_storage_and_counts() {
    let s = TestServer::start_with(&[
        "logs.redaction.builtin=[\"email\", \"card_number\", \"bearer_token\"]",
        "logs.redaction.custom=[\"secret-[0-9]+\"]",
    ])
    .await;
    let mut r = log_record(
        "user bob@example.com paid 4111-1111-1111-1111 with secret-123",
        1,
    );
    r.attributes.push(kv_str("auth", "Bearer abc.def"));
    let resp = s
        .post("/v1/logs", PB, logs_request("pii", vec![r]).encode_to_vec())
        .await;
    assert_eq!(resp.status(), 200);
    let page = search(&s, &[("q", "service:pii")]).await;
    let rec = &page["records"][0];
    assert_eq!(
        rec["body"],
        "user [REDACTED] paid [REDACTED] with [REDACTED]"
    );
    assert_eq!(rec["attributes"]["auth"], "[REDACTED]");
    assert_eq!(
        total(&s, "bob", "0", "now+1h").await,
        0,
        "the original is not indexed"
    );
    let metrics = s.self_metrics().await;
    assert!(
        metrics.contains("tern_ingest_redactions_total{pattern=\"email\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("tern_ingest_redactions_total{pattern=\"bearer_token\"} 1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_logs_searchable() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let mut s = TestServer::start_in(tmp.path(), &[]).await;
        let recs = (0..100)
            .map(|i| log_record(&format!("restart line {i}"), i))
            .collect();
        let r = s
            .post(
                "/v1/logs",
                PB,
                logs_request("restart", recs).encode_to_vec(),
            )
            .await;
        assert_eq!(r.status(), 200);
        s.shutdown().await;
    }
    assert!(tmp.path().join("logs").join("durable_seq").exists());
    let s = TestServer::start_in(tmp.path(), &[]).await;
    assert_eq!(total(&s, "service:restart", "0", "now+1h").await, 100);
    assert_eq!(total(&s, "\"restart line 42\"", "0", "now+1h").await, 1);
}

struct Proc {
    child: Child,
    otlp_http: SocketAddr,
    http: SocketAddr,
}

fn spawn_server(dir: &Path) -> Proc {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tern"))
        .arg("serve")
        .arg("--data-dir")
        .arg(dir)
        .args([
            "--http-addr",
            "127.0.0.1:0",
            "--otlp-grpc-addr",
            "127.0.0.1:0",
        ])
        .args(["--otlp-http-addr", "127.0.0.1:0"])
        .args(["--set", "log.format=json", "--log-level", "info"])
        .env_remove("RUST_LOG")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn tern");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let ready = loop {
        let line = lines
            .next()
            .expect("server exited before it was ready")
            .unwrap();
        let Ok(v) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        if v["fields"]["message"] == "tern is ready" {
            break v;
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let addr = |k: &str| ready["fields"][k].as_str().unwrap().parse().unwrap();
    Proc {
        child,
        otlp_http: addr("otlp_http"),
        http: addr("http"),
    }
}

/// Every `seq` attribute found by the HTTP search API.
async fn searched_seqs(http: &reqwest::Client, api: SocketAddr) -> Vec<i64> {
    let mut out = Vec::new();
    let mut cursor = String::new();
    loop {
        let mut p = vec![
            ("q", "service:crashlogs"),
            ("start", "0"),
            ("end", "now+1h"),
            ("limit", "1000"),
        ];
        if !cursor.is_empty() {
            p.push(("cursor", cursor.as_str()));
        }
        let url = reqwest::Url::parse_with_params(&format!("http://{api}/api/v1/logs/search"), &p)
            .unwrap();
        let (status, page) = get(http, url.to_string()).await;
        assert_eq!(status, 200, "{page}");
        out.extend(
            page["records"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["attributes"]["seq"].as_i64().unwrap()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = c.to_string(),
            None => break,
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_keeps_every_acknowledged_log_searchable() {
    let tmp = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let mut acked = Vec::new();
    for round in 0..2i64 {
        let mut p = spawn_server(tmp.path());
        let url = format!("http://{}/v1/logs", p.otlp_http);
        // Enough time for several index commits, then a kill mid-stream.
        let until = std::time::Instant::now() + Duration::from_millis(2500);
        let mut b = 0i64;
        loop {
            let first = round * 1_000_000 + b * 50;
            let recs = (first..first + 50)
                .map(|i| log_record("crash line", i))
                .collect();
            let body = logs_request("crashlogs", recs).encode_to_vec();
            let send = client
                .post(&url)
                .header("content-type", PB)
                .body(body)
                .send();
            if std::time::Instant::now() >= until {
                // Kill while this request is in flight.
                let pending = tokio::spawn(send);
                tokio::time::sleep(Duration::from_millis(2)).await;
                p.child.kill().unwrap();
                p.child.wait().unwrap();
                if let Ok(Ok(r)) = pending.await {
                    if r.status() == 200 {
                        acked.extend(first..first + 50);
                    }
                }
                break;
            }
            let r = send.await.unwrap();
            assert_eq!(r.status(), 200);
            acked.extend(first..first + 50);
            b += 1;
        }
    }
    acked.sort();
    let mut p = spawn_server(tmp.path());
    let found = searched_seqs(&client, p.http).await;
    let set: HashSet<i64> = found.iter().copied().collect();
    assert_eq!(set.len(), found.len(), "replay duplicated records");
    let missing: Vec<_> = acked.iter().filter(|s| !set.contains(s)).take(10).collect();
    assert!(
        missing.is_empty(),
        "acknowledged but not searchable: {missing:?}"
    );
    p.child.kill().unwrap();
    p.child.wait().unwrap();
}
