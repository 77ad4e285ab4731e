//! Trace store and query APIs end to end: a two-service trace sent by the
//! real OpenTelemetry Python SDK (tests/python/traces_e2e.py) read back
//! through the Jaeger API and the native API, every search filter, the
//! dependency edge and the RED figures; bad input; restart.

use serde_json::Value;
use tern::model::TraceId;

use crate::support::*;

const FRONTEND: &str = "shop-frontend";
const BACKEND: &str = "shop-backend";

async fn send_trace(s: &TestServer, protocol: &str) -> Value {
    run_python(s, "traces_e2e.py", &["--protocol", protocol]).await
}

async fn get(s: &TestServer, path: &str) -> (u16, Value) {
    let r = s.http.get(s.api_url(path)).send().await.unwrap();
    let status = r.status().as_u16();
    let body = r.json::<Value>().await.unwrap_or(Value::Null);
    (status, body)
}

async fn get_ok(s: &TestServer, path: &str) -> Value {
    let (status, body) = get(s, path).await;
    assert_eq!(status, 200, "{path}: {body}");
    body
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Trace ids found by a native search with `query`.
async fn native_ids(s: &TestServer, query: &str) -> Vec<String> {
    let body = get_ok(s, &format!("/api/v1/traces?{query}")).await;
    assert_eq!(body["complete"], true);
    body["traces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["trace_id"].as_str().unwrap().to_string())
        .collect()
}

async fn wait_for_trace(s: &TestServer, id: TraceId, spans: u64) {
    s.eventually("the trace to be stored", |srv| {
        srv.stores()
            .traces
            .summary(&id)
            .unwrap()
            .is_some_and(|sum| sum.span_count == spans)
    })
    .await;
}

fn span_by_id<'a>(spans: &'a [Value], id: &Value, field: &str) -> &'a Value {
    spans
        .iter()
        .find(|s| &s[field] == id)
        .unwrap_or_else(|| panic!("span {id}"))
}

async fn check_e2e(protocol: &str) {
    let s = TestServer::start().await;
    let sent = send_trace(&s, protocol).await;
    let tid = sent["trace_id"].as_str().unwrap().to_string();
    let trace_id = TraceId::from_hex(&tid).unwrap();
    wait_for_trace(&s, trace_id, 5).await;

    // Jaeger: by id, with parent links and two processes.
    let j = get_ok(&s, &format!("/api/traces/{tid}")).await;
    assert_eq!(j["total"], 1);
    assert_eq!(j["errors"], Value::Null);
    let t = &j["data"][0];
    assert_eq!(t["traceID"], tid.as_str());
    let spans = t["spans"].as_array().unwrap();
    assert_eq!(spans.len(), 5);
    let parent_of = |id: &Value| -> Option<String> {
        let refs = span_by_id(spans, id, "spanID")["references"]
            .as_array()
            .unwrap()
            .clone();
        refs.iter()
            .find(|r| r["refType"] == "CHILD_OF")
            .map(|r| r["spanID"].as_str().unwrap().to_string())
    };
    assert_eq!(parent_of(&sent["root"]), None);
    let sid = |k: &str| sent[k].as_str().unwrap().to_string();
    assert_eq!(parent_of(&sent["validate"]), Some(sid("root")));
    assert_eq!(parent_of(&sent["client"]), Some(sid("root")));
    assert_eq!(parent_of(&sent["server"]), Some(sid("client")));
    assert_eq!(parent_of(&sent["db"]), Some(sid("server")));
    let server = span_by_id(spans, &sent["server"], "spanID");
    let procs = &t["processes"];
    assert_eq!(
        procs[server["processID"].as_str().unwrap()]["serviceName"],
        BACKEND
    );
    let root = span_by_id(spans, &sent["root"], "spanID");
    assert_eq!(
        procs[root["processID"].as_str().unwrap()]["serviceName"],
        FRONTEND
    );
    assert_eq!(procs.as_object().unwrap().len(), 2);
    let tag = |span: &Value, k: &str| -> Value {
        span["tags"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["key"] == k)
            .map(|t| t["value"].clone())
            .unwrap_or(Value::Null)
    };
    assert_eq!(tag(server, "error"), true);
    assert_eq!(tag(server, "span.kind"), "server");
    assert_eq!(tag(server, "http.status_code"), 500);
    let log = &server["logs"][0];
    assert!(log["fields"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["key"] == "exception.type" && f["value"] == "ValueError"));
    assert!(server["duration"].as_u64().unwrap() >= 20_000, "µs");

    // Native: by id with the summary.
    let n = get_ok(&s, &format!("/api/v1/traces/{tid}")).await;
    let sum = &n["summary"];
    assert_eq!(sum["root_service"], FRONTEND);
    assert_eq!(sum["root_name"], "GET /checkout");
    assert_eq!(sum["root_known"], true);
    assert_eq!(sum["span_count"], 5);
    assert_eq!(sum["error_count"], 1);
    let nspans = n["spans"].as_array().unwrap();
    let nserver = span_by_id(nspans, &sent["server"], "span_id");
    assert_eq!(nserver["parent_span_id"], sent["client"]);
    assert_eq!(nserver["status"]["code"], "error");
    assert_eq!(nserver["status"]["message"], "card declined");
    assert_eq!(nserver["events"][0]["name"], "exception");
    assert_eq!(nserver["kind"], "server");
    assert_eq!(
        span_by_id(nspans, &sent["client"], "span_id")["kind"],
        "client"
    );

    assert!(nspans.iter().all(|s| s["has_logs"] == false));

    // A log of the server span: the trace says which span has logs.
    let log = serde_json::json!({"resourceLogs": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": BACKEND}}]},
        "scopeLogs": [{"logRecords": [{
            "timeUnixNano": sum["start_time_unix_nano"],
            "severityNumber": 17,
            "body": {"stringValue": "card declined by the bank"},
            "traceId": tid,
            "spanId": sent["server"],
        }]}],
    }]});
    let r = s
        .post("/v1/logs", "application/json", log.to_string().into_bytes())
        .await;
    assert_eq!(r.status(), 200);
    s.eventually("the log to be stored", |srv| srv.settled())
        .await;
    let n = get_ok(&s, &format!("/api/v1/traces/{tid}")).await;
    let nspans = n["spans"].as_array().unwrap();
    assert_eq!(n["span_ids_with_logs"], serde_json::json!([sent["server"]]));
    for sp in nspans {
        assert_eq!(sp["has_logs"], sp["span_id"] == sent["server"], "{sp}");
    }

    // Every search filter finds it; a contradicting one does not.
    let found = |ids: Vec<String>| ids == vec![tid.clone()];
    let none = |ids: Vec<String>| ids.is_empty();
    let b = format!("service={BACKEND}");
    assert!(found(native_ids(&s, &b).await));
    assert!(found(native_ids(&s, &format!("service={FRONTEND}")).await));
    assert!(none(native_ids(&s, "service=nope").await));
    assert!(found(
        native_ids(&s, &format!("{b}&operation={}", enc("POST /charge"))).await
    ));
    assert!(none(
        native_ids(&s, &format!("{b}&operation={}", enc("GET /checkout"))).await
    ));
    assert!(found(
        native_ids(&s, &format!("operation={}", enc("db query"))).await
    ));
    assert!(found(native_ids(&s, "attr=http.status_code%3D500").await));
    assert!(none(native_ids(&s, "attr=http.status_code%3D200").await));
    assert!(found(native_ids(&s, "attr=db.system%3Dpostgresql").await));
    assert!(found(
        native_ids(&s, &format!("{b}&attr=deployment.environment%3De2e")).await
    ));
    assert!(found(
        native_ids(&s, "attr=deployment.environment%3De2e").await
    ));
    assert!(none(
        native_ids(
            &s,
            &format!("service={FRONTEND}&attr=http.status_code%3D500")
        )
        .await
    ));
    assert!(found(
        native_ids(&s, &format!("{b}&min_duration=15ms")).await
    ));
    assert!(none(
        native_ids(
            &s,
            &format!("{b}&operation={}&max_duration=1ms", enc("POST /charge"))
        )
        .await
    ));
    assert!(found(native_ids(&s, "error=true").await));
    assert!(none(
        native_ids(&s, &format!("service={FRONTEND}&error=true")).await
    ));
    assert!(found(
        native_ids(&s, &format!("service={FRONTEND}&kind=client")).await
    ));
    assert!(none(native_ids(&s, &format!("{b}&kind=client")).await));
    let start: u64 = sum["start_time_unix_nano"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(found(
        native_ids(&s, &format!("start={}&end={}", start, start + 1)).await
    ));
    assert!(none(
        native_ids(
            &s,
            &format!(
                "start={}&end={}",
                start + 60_000_000_000,
                start + 120_000_000_000
            )
        )
        .await
    ));
    assert!(none(native_ids(&s, &format!("end={start}")).await));
    assert!(found(
        native_ids(&s, &format!("{b}&limit=1&lookback=2h")).await
    ));

    // Jaeger search: full traces back.
    let tags = enc(r#"{"http.status_code":"500"}"#);
    let js = get_ok(
        &s,
        &format!("/api/traces?service={BACKEND}&tags={tags}&minDuration=10ms&lookback=1h&limit=20"),
    )
    .await;
    assert_eq!(js["data"].as_array().unwrap().len(), 1);
    assert_eq!(js["data"][0]["traceID"], tid.as_str());
    assert_eq!(js["data"][0]["spans"].as_array().unwrap().len(), 5);
    let js = get_ok(
        &s,
        &format!("/api/traces?service={BACKEND}&maxDuration=1us"),
    )
    .await;
    assert!(js["data"].as_array().unwrap().is_empty());

    // Services and operations.
    let svcs = get_ok(&s, "/api/services").await;
    assert_eq!(svcs["data"], serde_json::json!([BACKEND, FRONTEND]));
    let ops = get_ok(&s, &format!("/api/services/{FRONTEND}/operations")).await;
    assert_eq!(
        ops["data"],
        serde_json::json!(["GET /checkout", "POST /charge", "validate cart"])
    );
    let ops = get_ok(
        &s,
        &format!("/api/operations?service={BACKEND}&spanKind=server"),
    )
    .await;
    assert_eq!(
        ops["data"],
        serde_json::json!([{"name": "POST /charge", "spanKind": "server"}])
    );
    let nops = get_ok(&s, &format!("/api/v1/services/{BACKEND}/operations")).await;
    assert_eq!(nops["operations"].as_array().unwrap().len(), 2);

    // Dependencies: frontend → backend, one call, one error.
    let now_ms = now_ns() / 1_000_000;
    let d = get_ok(
        &s,
        &format!(
            "/api/dependencies?endTs={}&lookback=3600000",
            now_ms + 60_000
        ),
    )
    .await;
    assert_eq!(
        d["data"],
        serde_json::json!([{"parent": FRONTEND, "child": BACKEND, "callCount": 1}])
    );
    let d = get_ok(&s, "/api/v1/dependencies?lookback=1h").await;
    assert_eq!(
        d["edges"],
        serde_json::json!([{"caller": FRONTEND, "callee": BACKEND, "calls": 1, "errors": 1}])
    );

    // RED: the backend served one request, which failed.
    let o = get_ok(
        &s,
        &format!("/api/v1/services/{BACKEND}/overview?lookback=1h&step=5m"),
    )
    .await;
    assert_eq!(o["totals"]["requests"], 1);
    assert_eq!(o["totals"]["errors"], 1);
    assert_eq!(o["totals"]["error_rate"], 1.0);
    let p50 = o["totals"]["p50_ms"].as_f64().unwrap();
    assert!((18.0..10_000.0).contains(&p50), "{p50}");
    assert!(o["totals"]["p99_ms"].as_f64().unwrap() >= p50);
    assert_eq!(o["step_seconds"], 300);
    let series_total: u64 = o["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["requests"].as_u64().unwrap())
        .sum();
    assert_eq!(series_total, 1);
    let op = |name: &str| {
        o["operations"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["operation"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("operation {name}"))
    };
    assert_eq!(op("POST /charge")["totals"]["requests"], 1);
    assert_eq!(op("db query")["totals"]["errors"], 0);
    let all = get_ok(&s, "/api/v1/overview?lookback=1h").await;
    let front = all["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["service"] == FRONTEND)
        .unwrap()
        .clone();
    assert_eq!(
        front["totals"]["requests"], 1,
        "the client span is not a request"
    );
    assert_eq!(front["totals"]["errors"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_python_sdk_multi_service_grpc() {
    check_e2e("grpc").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_python_sdk_multi_service_http() {
    check_e2e("http").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_bad_input_gets_clear_errors() {
    let s = TestServer::start().await;
    let (st, body) = get(&s, "/api/traces/zz").await;
    assert_eq!(st, 400);
    assert!(body["errors"][0]["msg"]
        .as_str()
        .unwrap()
        .contains("trace id"));
    let (st, body) = get(&s, "/api/traces/0123456789abcdef0123456789abcdef").await;
    assert_eq!(st, 404);
    assert_eq!(body["errors"][0]["code"], 404);
    let (st, body) = get(&s, "/api/v1/traces/0123456789abcdef").await;
    assert_eq!(st, 404, "{body}");
    assert_eq!(body["error"]["code"], "not_found");
    for bad in [
        "/api/v1/traces?limit=100000",
        "/api/v1/traces?min_duration=fast",
        "/api/v1/traces?min_duration=2s&max_duration=1s",
        "/api/v1/traces?kind=boss",
        "/api/v1/traces?attr=nokey",
        "/api/v1/traces?error=maybe",
        "/api/v1/traces?start=10&end=5",
        "/api/v1/traces?start=-1",
        "/api/v1/overview?step=90s",
        "/api/v1/overview?lookback=30d&step=1m",
    ] {
        let (st, body) = get(&s, bad).await;
        assert_eq!(st, 400, "{bad}: {body}");
        assert_eq!(body["error"]["code"], "bad_request", "{bad}");
    }
    let (st, body) = get(&s, "/api/traces?tags=notjson").await;
    assert_eq!(st, 400);
    assert!(body["errors"][0]["msg"].as_str().unwrap().contains("tags"));
    let (st, _) = get(&s, "/api/operations").await;
    assert_eq!(st, 400, "service is required");
    let (st, _) = get(&s, "/api/v1/services/nope/overview").await;
    assert_eq!(st, 404);
    let empty = get_ok(&s, "/api/v1/traces").await;
    assert_eq!(empty["traces"], serde_json::json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_survive_restart_and_late_spans_join_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = TestServer::start_in(dir.path(), &[]).await;
    let trace = [7u8; 16];
    let mut child = span(trace, [2; 8], "child");
    child.parent_span_id = vec![1; 8];
    let body = prost::Message::encode_to_vec(&trace_request("late-backend", vec![child]));
    assert_eq!(
        s.post("/v1/traces", "application/x-protobuf", body)
            .await
            .status(),
        200
    );
    let id = TraceId(trace);
    wait_for_trace(&s, id, 1).await;
    s.shutdown().await;
    assert!(
        std::fs::read_dir(dir.path().join("traces"))
            .unwrap()
            .count()
            > 0,
        "the trace store lives under data_dir/traces"
    );

    let s = TestServer::start_in(dir.path(), &[]).await;
    wait_for_trace(&s, id, 1).await;
    // The parent arrives after the restart, in another service.
    let root = span(trace, [1; 8], "root");
    let body = prost::Message::encode_to_vec(&trace_request("late-frontend", vec![root]));
    assert_eq!(
        s.post("/v1/traces", "application/x-protobuf", body)
            .await
            .status(),
        200
    );
    wait_for_trace(&s, id, 2).await;
    let n = get_ok(&s, &format!("/api/v1/traces/{}", id.to_hex())).await;
    assert_eq!(n["summary"]["root_service"], "late-frontend");
    assert_eq!(n["summary"]["root_known"], true);
    assert_eq!(n["spans"].as_array().unwrap().len(), 2);
    let d = get_ok(&s, "/api/v1/dependencies?lookback=1h").await;
    assert_eq!(
        d["edges"],
        serde_json::json!([{"caller": "late-frontend", "callee": "late-backend", "calls": 1, "errors": 0}])
    );
}
