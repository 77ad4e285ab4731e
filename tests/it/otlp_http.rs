//! OTLP/HTTP: formats, encodings, status codes and partial success.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;
use tern::model::{AnyValue, TraceId};
use tern::storage::metrics::mapping::{family_name, histogram_family_name};

use crate::support::*;

const PB: &str = "application/x-protobuf";
const JSON: &str = "application/json";

#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

#[tokio::test]
async fn protobuf_traces_are_stored_and_answered_in_protobuf() {
    let s = TestServer::start().await;
    let req = trace_request(
        "cart",
        vec![
            span([7; 16], [1; 8], "root"),
            span([7; 16], [2; 8], "child"),
        ],
    );
    let r = s.post("/v1/traces", PB, req.encode_to_vec()).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], PB);
    let resp = ExportTraceServiceResponse::decode(r.bytes().await.unwrap()).unwrap();
    assert!(resp.partial_success.is_none());
    let t = s.srv().stores().traces.trace(&TraceId([7; 16])).unwrap();
    assert_eq!(t.len(), 2);
    assert_eq!(t[0].service_name(), "cart");
}

#[tokio::test]
async fn gzip_and_chunked_bodies() {
    let s = TestServer::start().await;
    let req = logs_request("gz", vec![log_record("compressed hello", 1)]);
    let r = s
        .http
        .post(s.otlp_http_url("/v1/logs"))
        .header("content-type", PB)
        .header("content-encoding", "gzip")
        .body(gzip(&req.encode_to_vec()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body = logs_request("chunked", vec![log_record("chunked hello", 2)]).encode_to_vec();
    let (a, b) = body.split_at(body.len() / 2);
    let (status, resp) = post_chunked(s.srv().addrs.otlp_http, "/v1/logs", PB, &[a, b]).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&resp));
    let logs = s
        .srv()
        .stores()
        .logs
        .query(&tern::storage::LogQuery {
            limit: 10,
            ..Default::default()
        })
        .unwrap();
    let bodies: Vec<_> = logs.iter().map(|l| l.body.to_text()).collect();
    assert!(
        bodies.contains(&"compressed hello".to_string()),
        "{bodies:?}"
    );
    assert!(bodies.contains(&"chunked hello".to_string()), "{bodies:?}");
}

#[tokio::test]
async fn json_is_answered_in_json_with_partial_success() {
    let s = TestServer::start().await;
    let now = now_ns();
    let body = serde_json::json!({
        "resourceSpans": [{
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "web"}}]},
            "scopeSpans": [{"spans": [
                {"traceId": "0102030405060708090a0b0c0d0e0f10", "spanId": "0102030405060708",
                 "name": "ok", "kind": 2, "startTimeUnixNano": (now - 10).to_string(),
                 "endTimeUnixNano": now, "unknownField": 1},
                {"traceId": "01020304", "spanId": "0102030405060708", "name": "short id",
                 "startTimeUnixNano": "1", "endTimeUnixNano": "2"}
            ]}]
        }]
    });
    let r = s
        .post("/v1/traces", JSON, serde_json::to_vec(&body).unwrap())
        .await;
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with(JSON));
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["partialSuccess"]["rejectedSpans"], "1");
    let msg = v["partialSuccess"]["errorMessage"].as_str().unwrap();
    assert!(msg.contains("trace id must be 16 bytes, got 4"), "{msg}");
    let id = TraceId::from_hex("0102030405060708090a0b0c0d0e0f10").unwrap();
    let t = s.srv().stores().traces.trace(&id).unwrap();
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].end_time_ns, now);
}

#[tokio::test]
async fn malformed_bodies_get_400_with_a_reason() {
    let s = TestServer::start().await;
    let full = trace_request("x", vec![span([1; 16], [1; 8], "a")]).encode_to_vec();
    let r = s
        .post("/v1/traces", PB, full[..full.len() - 3].to_vec())
        .await;
    assert_eq!(r.status(), 400);
    assert_eq!(r.headers()["content-type"], PB);
    let st = RpcStatus::decode(r.bytes().await.unwrap()).unwrap();
    assert_eq!(st.code, 3, "INVALID_ARGUMENT");
    assert!(
        st.message.contains("invalid otlp protobuf traces request"),
        "{}",
        st.message
    );

    let r = s
        .post("/v1/logs", JSON, b"{\"resourceLogs\": [".to_vec())
        .await;
    assert_eq!(r.status(), 400);
    let v: serde_json::Value = r.json().await.unwrap();
    assert!(
        v["message"].as_str().unwrap().contains("invalid otlp json"),
        "{v}"
    );

    let r = s
        .post(
            "/v1/logs",
            JSON,
            br#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"traceId":"zz"}]}]}]}"#.to_vec(),
        )
        .await;
    assert_eq!(r.status(), 400);
    let v: serde_json::Value = r.json().await.unwrap();
    assert!(v["message"].as_str().unwrap().contains("traceId"), "{v}");

    let r = s
        .http
        .post(s.otlp_http_url("/v1/logs"))
        .header("content-type", PB)
        .header("content-encoding", "gzip")
        .body(b"definitely not gzip".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    s.assert_healthy().await;
}

#[tokio::test]
async fn wrong_content_type_and_encoding_get_415() {
    let s = TestServer::start().await;
    let r = s.post("/v1/metrics", "text/plain", b"hello".to_vec()).await;
    assert_eq!(r.status(), 415);
    let v: serde_json::Value = r.json().await.unwrap();
    assert!(v["message"].as_str().unwrap().contains("text/plain"), "{v}");
    let r = s
        .http
        .post(s.otlp_http_url("/v1/metrics"))
        .body(b"{}".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415, "a missing content type is unsupported");
    let r = s
        .http
        .post(s.otlp_http_url("/v1/metrics"))
        .header("content-type", JSON)
        .header("content-encoding", "br")
        .body(b"{}".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    s.assert_healthy().await;
}

#[tokio::test]
async fn oversize_bodies_and_gzip_bombs_get_413() {
    let s = TestServer::start_with(&[
        "ingest.max_body_bytes=\"1MiB\"",
        "ingest.max_record_bytes=\"64KiB\"",
    ])
    .await;
    let big = vec![0u8; (1 << 20) + 1];
    let r = s.post("/v1/logs", PB, big.clone()).await;
    assert_eq!(r.status(), 413);
    let (status, _) = post_chunked(
        s.srv().addrs.otlp_http,
        "/v1/logs",
        PB,
        &[&big[..600_000], &big[600_000..]],
    )
    .await;
    assert_eq!(status, 413, "chunked bodies are capped too");
    // 64 MiB of zeros compresses to about 64 KiB.
    let bomb = gzip(&vec![0u8; 64 << 20]);
    assert!(bomb.len() < 1 << 20);
    let r = s
        .http
        .post(s.otlp_http_url("/v1/logs"))
        .header("content-type", PB)
        .header("content-encoding", "gzip")
        .body(bomb)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let st = RpcStatus::decode(r.bytes().await.unwrap()).unwrap();
    assert!(
        st.message.contains("exceeds the limit of 1048576 bytes"),
        "{}",
        st.message
    );
    assert_eq!(
        s.srv().telemetry().ingest_inflight_bytes.get(),
        0,
        "budget released"
    );
    s.assert_healthy().await;
}

#[tokio::test]
async fn empty_requests_succeed() {
    let s = TestServer::start().await;
    for path in ["/v1/traces", "/v1/metrics", "/v1/logs"] {
        let r = s.post(path, PB, vec![]).await;
        assert_eq!(r.status(), 200, "{path} protobuf");
        let r = s.post(path, JSON, b"{}".to_vec()).await;
        assert_eq!(r.status(), 200, "{path} json");
    }
}

#[tokio::test]
async fn bad_ids_nan_and_huge_label_sets() {
    let s = TestServer::start().await;
    let mut bad_log = log_record("bad span id", 1);
    bad_log.span_id = vec![1, 2, 3];
    let r = s
        .post(
            "/v1/logs",
            PB,
            logs_request("x", vec![bad_log, log_record("fine", 2)]).encode_to_vec(),
        )
        .await;
    assert_eq!(r.status(), 200);
    let resp = ExportLogsServiceResponse::decode(r.bytes().await.unwrap()).unwrap();
    let ps = resp.partial_success.unwrap();
    assert_eq!(ps.rejected_log_records, 1);
    assert!(
        ps.error_message.contains("span id must be 8 bytes, got 3"),
        "{}",
        ps.error_message
    );

    let r = s
        .post(
            "/v1/metrics",
            PB,
            gauge_request("weird", &[f64::NAN, f64::INFINITY, f64::NEG_INFINITY]).encode_to_vec(),
        )
        .await;
    assert_eq!(r.status(), 200);
    // Three points of one series at one timestamp: the last one wins.
    s.eventually("the weird gauge", |srv| {
        !crate::metrics_store::select_name(srv, "weird").is_empty()
    })
    .await;
    let m = crate::metrics_store::select_name(s.srv(), "weird");
    assert_eq!(m[0].samples.len(), 1);
    assert_eq!(m[0].samples[0].v, f64::NEG_INFINITY);
    let r = s
        .post(
            "/v1/metrics",
            PB,
            gauge_request("weird_nan", &[f64::NAN]).encode_to_vec(),
        )
        .await;
    assert_eq!(r.status(), 200);
    s.eventually("the NaN gauge", |srv| {
        !crate::metrics_store::select_name(srv, "weird_nan").is_empty()
    })
    .await;
    assert!(
        crate::metrics_store::select_name(s.srv(), "weird_nan")[0].samples[0]
            .v
            .is_nan()
    );

    let mut huge = span([3; 16], [3; 8], "huge");
    huge.attributes = (0..5000)
        .map(|i| kv_str(&format!("label{i}"), "v"))
        .collect();
    let r = s
        .post(
            "/v1/traces",
            PB,
            trace_request("x", vec![huge, span([3; 16], [4; 8], "small")]).encode_to_vec(),
        )
        .await;
    assert_eq!(r.status(), 200);
    let resp = ExportTraceServiceResponse::decode(r.bytes().await.unwrap()).unwrap();
    assert_eq!(resp.partial_success.unwrap().rejected_spans, 1);
    let t = s.srv().stores().traces.trace(&TraceId([3; 16])).unwrap();
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].name, "small");
    s.assert_healthy().await;
}

#[tokio::test]
async fn saturated_wal_answers_503_with_retry_after_and_loses_nothing_acknowledged() {
    // A tiny WAL disk budget: memory stores never let it shrink, so it fills.
    let s = TestServer::start_with(&[
        "wal.segment_bytes=\"4KiB\"",
        "wal.max_disk_bytes=\"16KiB\"",
        "ingest.max_body_bytes=\"4KiB\"",
        "ingest.max_record_bytes=\"4KiB\"",
        "wal.max_queue_bytes=\"8KiB\"",
        "ingest.retry_after=\"2s\"",
    ])
    .await;
    let mut acked = Vec::new();
    let mut refused = None;
    for i in 0..200 {
        let body = logs_request("x", vec![log_record(&"y".repeat(500), i)]).encode_to_vec();
        let r = s.post("/v1/logs", PB, body).await;
        match r.status().as_u16() {
            200 => acked.push(i),
            503 => {
                refused = Some(r);
                break;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    let r = refused.expect("the WAL fills up and ingest says so");
    assert_eq!(r.headers()["retry-after"], "2");
    let st = RpcStatus::decode(r.bytes().await.unwrap()).unwrap();
    assert_eq!(st.code, 14, "UNAVAILABLE");
    assert!(!acked.is_empty());
    let stored = s
        .srv()
        .stores()
        .logs
        .query(&tern::storage::LogQuery {
            limit: 1000,
            ..Default::default()
        })
        .unwrap();
    let mut seqs: Vec<i64> = stored
        .iter()
        .map(|l| match &l.attributes[0].1 {
            AnyValue::Int(i) => *i,
            other => panic!("{other:?}"),
        })
        .collect();
    seqs.sort();
    assert_eq!(
        seqs, acked,
        "every acknowledged record is stored, nothing else"
    );
    s.assert_healthy().await;
}

#[tokio::test]
async fn conformance_otlp_json_files_round_trip_into_the_model() {
    let Some(dir) = conformance_dir("otlp_json_files_round_trip_into_the_model") else {
        return;
    };
    let s = TestServer::start_with(&[
        "ingest.max_future_skew=\"3650d\"",
        "metrics.retention=\"36500d\"",
        "logs.retention=\"36500d\"",
        "traces.retention=\"36500d\"",
    ])
    .await;
    let read = |f: &str| std::fs::read(dir.join("otlp").join(f)).unwrap();
    for (path, file) in [
        ("/v1/traces", "trace.json"),
        ("/v1/metrics", "metrics.json"),
        ("/v1/logs", "logs.json"),
        ("/v1/logs", "events.json"),
    ] {
        let r = s.post(path, JSON, read(file)).await;
        assert_eq!(r.status(), 200, "{file}");
        let v: serde_json::Value = r.json().await.unwrap();
        assert!(v.get("partialSuccess").is_none(), "{file}: {v}");
    }
    // Trace: ids, times and attributes as in the file.
    let trace: serde_json::Value = serde_json::from_slice(&read("trace.json")).unwrap();
    let js = &trace["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
    let id = TraceId::from_hex(&js["traceId"].as_str().unwrap().to_lowercase()).unwrap();
    let spans = s.srv().stores().traces.trace(&id).unwrap();
    assert_eq!(spans.len(), 1);
    let sp = &spans[0];
    assert_eq!(
        sp.span_id.to_hex(),
        js["spanId"].as_str().unwrap().to_lowercase()
    );
    assert_eq!(sp.name, js["name"].as_str().unwrap());
    assert_eq!(
        sp.start_time_ns.to_string(),
        js["startTimeUnixNano"].as_str().unwrap()
    );
    assert_eq!(
        sp.end_time_ns.to_string(),
        js["endTimeUnixNano"].as_str().unwrap()
    );
    assert_eq!(sp.service_name(), "my.service");
    assert_eq!(sp.scope.name, "my.library");
    // Metrics: every metric of the file, with its first point's value.
    let metrics: serde_json::Value = serde_json::from_slice(&read("metrics.json")).unwrap();
    for jm in metrics["resourceMetrics"][0]["scopeMetrics"][0]["metrics"]
        .as_array()
        .unwrap()
    {
        let name = jm["name"].as_str().unwrap();
        let unit = jm["unit"].as_str().unwrap_or("");
        let last = |series: &str| -> f64 {
            let got = crate::metrics_store::select_name(s.srv(), series);
            assert!(!got.is_empty(), "{name} as {series}");
            got[0].samples.last().unwrap().v
        };
        let num = |p: &serde_json::Value| {
            p["asDouble"]
                .as_f64()
                .or_else(|| p["asInt"].as_str().and_then(|v| v.parse().ok()))
                .or_else(|| p["asInt"].as_f64())
                .unwrap()
        };
        if let Some(sum) = jm.get("sum") {
            let monotonic = sum["isMonotonic"].as_bool().unwrap_or(false);
            let series = family_name(name, unit, monotonic);
            let v = num(&sum["dataPoints"][0]);
            if sum["aggregationTemporality"].as_i64() != Some(1) {
                assert_eq!(last(&series), v, "{name}");
            }
        } else if let Some(g) = jm.get("gauge") {
            assert_eq!(
                last(&family_name(name, unit, false)),
                num(&g["dataPoints"][0])
            );
        } else {
            let kind = ["histogram", "exponentialHistogram", "summary"]
                .into_iter()
                .find(|k| jm.get(*k).is_some())
                .unwrap_or_else(|| panic!("metric {name} has a known type"));
            let count: f64 = jm[kind]["dataPoints"][0]["count"]
                .as_str()
                .and_then(|v| v.parse().ok())
                .unwrap();
            let fam = histogram_family_name(name, unit);
            assert_eq!(last(&format!("{fam}_count")), count, "{name}");
        }
    }
    // Logs and events: body, severity and trace context.
    let all = s
        .srv()
        .stores()
        .logs
        .query(&tern::storage::LogQuery {
            limit: 100,
            ..Default::default()
        })
        .unwrap();
    let logs: serde_json::Value = serde_json::from_slice(&read("logs.json")).unwrap();
    let jl = &logs["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0];
    let found = all
        .iter()
        .find(|r| {
            r.time_ns.to_string() == jl["timeUnixNano"].as_str().unwrap() && r.event_name.is_empty()
        })
        .expect("the log record of logs.json");
    assert_eq!(
        found.severity_number as i64,
        jl["severityNumber"].as_i64().unwrap()
    );
    assert_eq!(found.severity_text, jl["severityText"].as_str().unwrap());
    if let Some(t) = jl["traceId"].as_str() {
        assert_eq!(found.trace_id.unwrap().to_hex(), t.to_lowercase());
    }
    let events: serde_json::Value = serde_json::from_slice(&read("events.json")).unwrap();
    let je = &events["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0];
    assert!(all
        .iter()
        .any(|r| r.event_name == je["eventName"].as_str().unwrap()));
}
