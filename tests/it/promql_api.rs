//! The Prometheus HTTP API over a `VecSource`, served by axum on port 0 and
//! called over real HTTP: envelopes, result types, errors and limits, and
//! the calls Grafana's Prometheus data source makes on connect. The runner
//! for Prometheus's PromQL test files sits beside it.

#[path = "promql_conformance.rs"]
mod conformance;

use std::sync::Arc;

use serde_json::Value;
use tern::api::http::prom::{prom_router, PromLimits};
use tern::query::promql::{MetricMeta, QueryLimits, Sample, Series, VecSource};

fn series(labels: &[(&str, &str)], samples: Vec<(i64, f64)>) -> Series {
    let mut labels: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    labels.sort();
    Series {
        labels,
        samples: samples
            .into_iter()
            .map(|(t_ms, v)| Sample { t_ms, v })
            .collect(),
    }
}

/// http_requests_total{code="200"|"500"} increasing 1/s and 0.1/s, scraped
/// every 15 s over the first hour after t = 1000 s.
fn source() -> VecSource {
    let base = 1_000_000;
    let mk = |code: &str, per_s: f64| {
        series(
            &[
                ("__name__", "http_requests_total"),
                ("code", code),
                ("job", "api"),
            ],
            (0..=240)
                .map(|i| (base + i * 15_000, i as f64 * 15.0 * per_s))
                .collect(),
        )
    };
    VecSource::new(vec![
        mk("200", 1.0),
        mk("500", 0.1),
        series(&[("__name__", "up"), ("job", "api")], vec![(base, 1.0)]),
    ])
    .with_metadata(vec![MetricMeta {
        metric: "http_requests_total".into(),
        kind: "counter".into(),
        help: "Requests served.".into(),
        unit: "".into(),
    }])
}

async fn serve(limits: PromLimits) -> String {
    let app = prom_router(Arc::new(source()), limits);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

async fn get(url: &str) -> (u16, Value) {
    let r = reqwest::get(url).await.expect("request");
    let status = r.status().as_u16();
    (status, r.json().await.expect("json body"))
}

#[tokio::test]
async fn instant_query_returns_a_vector_in_the_prometheus_envelope() {
    let base = serve(PromLimits::default()).await;
    let (st, body) = get(&format!(
        "{base}/api/v1/query?query=sum%20by%20(code)%20(rate(http_requests_total%5B1m%5D))&time=2000"
    ))
    .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["status"], "success");
    assert_eq!(body["data"]["resultType"], "vector");
    let result = body["data"]["result"].as_array().unwrap();
    assert_eq!(result.len(), 2);
    for r in result {
        assert_eq!(r["value"][0], 2000);
        let v: f64 = r["value"][1].as_str().unwrap().parse().unwrap();
        let want = if r["metric"]["code"] == "200" {
            1.0
        } else {
            0.1
        };
        assert!((v - want).abs() < 1e-9, "{r}");
        assert!(r["metric"].get("__name__").is_none());
    }
}

#[tokio::test]
async fn scalar_string_and_rfc3339_time() {
    let base = serve(PromLimits::default()).await;
    let (st, body) = get(&format!(
        "{base}/api/v1/query?query=1%2B1&time=2015-07-01T20:10:51.781Z"
    ))
    .await;
    assert_eq!(st, 200);
    assert_eq!(body["data"]["resultType"], "scalar");
    assert_eq!(body["data"]["result"][0], 1435781451.781);
    assert_eq!(body["data"]["result"][1], "2");
    let (_, body) = get(&format!("{base}/api/v1/query?query=%22hi%22&time=10")).await;
    assert_eq!(body["data"]["resultType"], "string");
    assert_eq!(body["data"]["result"][1], "hi");
    let (_, body) = get(&format!("{base}/api/v1/query?query=1%2F0&time=10")).await;
    assert_eq!(body["data"]["result"][1], "+Inf");
}

#[tokio::test]
async fn range_query_by_form_post() {
    let base = serve(PromLimits::default()).await;
    let r = reqwest::Client::new()
        .post(format!("{base}/api/v1/query_range"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("query=increase(http_requests_total%7Bcode%3D%22200%22%7D%5B2m%5D)&start=1200&end=1500&step=1m")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["data"]["resultType"], "matrix");
    let result = body["data"]["result"].as_array().unwrap();
    assert_eq!(result.len(), 1);
    let values = result[0]["values"].as_array().unwrap();
    let ts: Vec<i64> = values.iter().map(|v| v[0].as_i64().unwrap()).collect();
    assert_eq!(ts, vec![1200, 1260, 1320, 1380, 1440, 1500]);
    for v in values {
        let x: f64 = v[1].as_str().unwrap().parse().unwrap();
        assert!((x - 120.0).abs() < 1e-9, "{v}");
    }
}

#[tokio::test]
async fn errors_have_types_and_status_codes() {
    let base = serve(PromLimits::default()).await;
    let (st, body) = get(&format!("{base}/api/v1/query?query=sum(")).await;
    assert_eq!(st, 400);
    assert_eq!(body["status"], "error");
    assert_eq!(body["errorType"], "bad_data");
    assert!(!body["error"].as_str().unwrap().is_empty());

    let (st, body) = get(&format!(
        "{base}/api/v1/query_range?query=up&start=0&end=100000&step=1"
    ))
    .await;
    assert_eq!(st, 400);
    assert!(body["error"].as_str().unwrap().contains("11000"), "{body}");

    let (st, _) = get(&format!(
        "{base}/api/v1/query_range?query=up&start=10&end=5&step=1"
    ))
    .await;
    assert_eq!(st, 400);
    let (st, _) = get(&format!("{base}/api/v1/query?query=up&time=soon")).await;
    assert_eq!(st, 400);

    // Many-to-many matching fails at execution: 422.
    let (st, body) = get(&format!(
        "{base}/api/v1/query?query=http_requests_total%20%2B%20on(job)%20http_requests_total&time=2000"
    ))
    .await;
    assert_eq!(st, 422, "{body}");
    assert_eq!(body["errorType"], "execution");
}

#[tokio::test]
async fn sample_limit_is_an_execution_error() {
    let limits = PromLimits {
        query: QueryLimits {
            max_samples: 100,
            ..QueryLimits::default()
        },
        ..PromLimits::default()
    };
    let base = serve(limits).await;
    let (st, body) = get(&format!(
        "{base}/api/v1/query?query=http_requests_total%5B1h%5D&time=4600"
    ))
    .await;
    assert_eq!(st, 422, "{body}");
    assert!(body["error"].as_str().unwrap().contains("too many samples"));
}

#[tokio::test]
async fn series_labels_and_values_with_match() {
    let base = serve(PromLimits::default()).await;
    let (st, body) = get(&format!(
        "{base}/api/v1/series?match[]=http_requests_total%7Bcode%3D%22500%22%7D&match[]=up"
    ))
    .await;
    assert_eq!(st, 200);
    let data = body["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert_eq!(data[0]["__name__"], "http_requests_total");
    assert_eq!(data[0]["code"], "500");
    assert_eq!(data[1]["__name__"], "up");

    let (st, body) = get(&format!("{base}/api/v1/series")).await;
    assert_eq!(st, 400, "{body}");

    let (_, body) = get(&format!("{base}/api/v1/labels")).await;
    assert_eq!(body["data"], serde_json::json!(["__name__", "code", "job"]));
    let (_, body) = get(&format!("{base}/api/v1/labels?match[]=up")).await;
    assert_eq!(body["data"], serde_json::json!(["__name__", "job"]));

    let (_, body) = get(&format!("{base}/api/v1/label/__name__/values")).await;
    assert_eq!(
        body["data"],
        serde_json::json!(["http_requests_total", "up"])
    );
    let (_, body) = get(&format!(
        "{base}/api/v1/label/code/values?match[]=http_requests_total&limit=1"
    ))
    .await;
    assert_eq!(body["data"], serde_json::json!(["200"]));
    assert_eq!(body["warnings"][0], "results truncated due to limit");
    // Outside the time range nothing matches.
    let (_, body) = get(&format!("{base}/api/v1/label/code/values?start=0&end=100")).await;
    assert_eq!(body["data"], serde_json::json!([]));
}

#[tokio::test]
async fn grafana_connect_calls_succeed() {
    let base = serve(PromLimits::default()).await;
    let (st, body) = get(&format!("{base}/api/v1/status/buildinfo")).await;
    assert_eq!(st, 200);
    assert!(body["data"]["version"].as_str().unwrap().starts_with('3'));
    let (st, body) = get(&format!("{base}/api/v1/query?query=1%2B1")).await;
    assert_eq!(st, 200);
    assert_eq!(body["data"]["result"][1], "2");
    let (_, body) = get(&format!("{base}/api/v1/metadata")).await;
    assert_eq!(body["data"]["http_requests_total"][0]["type"], "counter");
    let (_, body) = get(&format!(
        "{base}/api/v1/query_exemplars?query=up&start=0&end=10"
    ))
    .await;
    assert_eq!(body["status"], "success");
    assert_eq!(body["data"], serde_json::json!([]));
}
