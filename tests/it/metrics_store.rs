//! The metrics store end to end: the OpenTelemetry Python SDK's metrics as
//! Prometheus series, remote_write, cardinality limits, and restarts.

use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::metrics::v1 as pm;
use prost::Message;
use tern::app::Server;
use tern::ingest::remote_write::{Label, PromSample, TimeSeries, WriteRequest};
use tern::model::{label, LabelMatcher, MatchOp, Series, METRIC_NAME};

use crate::support::*;
use tern::model::time::now_ms;

const PB: &str = "application/x-protobuf";

pub fn eq(name: &str, value: &str) -> LabelMatcher {
    LabelMatcher {
        name: name.into(),
        op: MatchOp::Equal,
        value: value.into(),
    }
}

/// Every series of a metric name, over all time.
pub fn select_name(srv: &Server, name: &str) -> Vec<Series> {
    srv.stores()
        .metrics
        .select(&[eq(METRIC_NAME, name)], i64::MIN, i64::MAX)
        .unwrap()
}

fn last(series: &[Series], key: &str, value: &str) -> f64 {
    let s = series
        .iter()
        .find(|s| label(&s.labels, key) == Some(value))
        .unwrap_or_else(|| panic!("series with {key}={value} in {series:?}"));
    s.samples.last().unwrap().v
}

async fn run_sdk(s: &TestServer, service: &str, temporality: &str) {
    run_python(
        s,
        "metrics_e2e.py",
        &["--service", service, "--temporality", temporality],
    )
    .await;
}

/// The value of an instant query that must return exactly one sample.
async fn prom_value(s: &TestServer, expr: &str) -> f64 {
    let data = s.promql(expr, None).await;
    assert_eq!(data["resultType"], "vector", "{data}");
    assert_eq!(
        data["result"].as_array().unwrap().len(),
        1,
        "{expr}: {data}"
    );
    data["result"][0]["value"][1]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

async fn check_sdk_metrics(temporality: &str) {
    let s = TestServer::start().await;
    let service = format!("py-metrics-{temporality}");
    run_sdk(&s, &service, temporality).await;
    s.eventually("the gauge", |srv| {
        !select_name(srv, "e2e_temperature").is_empty()
    })
    .await;
    let srv = s.srv();

    let counter = select_name(srv, "e2e_requests_total");
    assert_eq!(counter.len(), 1, "{counter:?}");
    let c = &counter[0];
    assert_eq!(label(&c.labels, "route"), Some("/checkout"));
    assert_eq!(label(&c.labels, "job"), Some(service.as_str()));
    assert_eq!(label(&c.labels, "instance"), Some("i-1"));
    assert_eq!(label(&c.labels, "otel_scope_name"), Some("e2e.meter"));
    assert_eq!(label(&c.labels, "otel_scope_version"), Some("0.1"));
    let values: Vec<f64> = c.samples.iter().map(|s| s.v).collect();
    assert_eq!(*values.last().unwrap(), 5.0, "{temporality}: {values:?}");
    assert!(
        values.windows(2).all(|w| w[0] <= w[1]),
        "a counter never goes down: {values:?}"
    );
    assert!(
        values.contains(&3.0),
        "the first export is kept: {values:?}"
    );

    let inflight = select_name(srv, "e2e_inflight");
    assert_eq!(inflight[0].samples.last().unwrap().v, 2.0);

    let buckets = select_name(srv, "e2e_latency_milliseconds_bucket");
    assert_eq!(last(&buckets, "le", "0"), 0.0);
    assert_eq!(last(&buckets, "le", "5"), 2.0);
    assert_eq!(last(&buckets, "le", "50"), 3.0);
    assert_eq!(last(&buckets, "le", "+Inf"), 3.0);
    let count = select_name(srv, "e2e_latency_milliseconds_count");
    assert_eq!(count[0].samples.last().unwrap().v, 3.0);
    let sum = select_name(srv, "e2e_latency_milliseconds_sum");
    assert_eq!(sum[0].samples.last().unwrap().v, 56.0);

    let temp = select_name(srv, "e2e_temperature");
    assert_eq!(last(&temp, "room", "a"), 7.5);

    let target = select_name(srv, "target_info");
    assert_eq!(target.len(), 1);
    assert_eq!(label(&target[0].labels, "service_version"), Some("1.2.3"));
    assert_eq!(
        label(&target[0].labels, "telemetry_sdk_language"),
        Some("python")
    );

    // The same through PromQL over the Prometheus HTTP API.
    let job = format!("job=\"{service}\"");
    assert_eq!(
        prom_value(&s, &format!("e2e_requests_total{{{job}}}")).await,
        5.0
    );
    assert_eq!(prom_value(&s, &format!("e2e_inflight{{{job}}}")).await, 2.0);
    assert_eq!(
        prom_value(&s, &format!("e2e_temperature{{{job},room=\"a\"}}")).await,
        7.5
    );
    assert_eq!(
        prom_value(&s, &format!("sum(e2e_latency_milliseconds_count{{{job}}})")).await,
        3.0
    );
    assert_eq!(
        prom_value(&s, &format!(
            "e2e_latency_milliseconds_bucket{{{job},le=\"5\"}} / ignoring(le) e2e_latency_milliseconds_count"
        ))
        .await,
        2.0 / 3.0
    );
    // Two of three observations are at most 5 ms: the median is in (0, 5].
    let median = prom_value(
        &s,
        &format!("histogram_quantile(0.5, e2e_latency_milliseconds_bucket{{{job}}})"),
    )
    .await;
    assert!(median > 0.0 && median <= 5.0, "{median}");
    let names = s
        .promql("count by (__name__) ({__name__=~\"e2e_.*\"})", None)
        .await;
    assert!(names["result"].as_array().unwrap().len() >= 6, "{names}");

    let meta = srv.stores().metrics.metadata().unwrap();
    let m = meta
        .iter()
        .find(|m| m.metric == "e2e_requests_total")
        .unwrap();
    assert_eq!(m.kind, "counter");
    assert_eq!(m.help, "requests served");
    let m = meta
        .iter()
        .find(|m| m.metric == "e2e_latency_milliseconds")
        .unwrap();
    assert_eq!(
        (m.kind.as_str(), m.unit.as_str()),
        ("histogram", "milliseconds")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_cumulative_metrics_as_series() {
    check_sdk_metrics("cumulative").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_delta_metrics_accumulate() {
    check_sdk_metrics("delta").await;
}

fn delta_request(start_s: u64, end_s: u64, value: f64) -> ExportMetricsServiceRequest {
    let base = now_ns() / 1_000_000_000 * 1_000_000_000 - 3_600_000_000_000;
    let mut r = gauge_request("sent", &[]);
    let m = &mut r.resource_metrics[0].scope_metrics[0].metrics[0];
    m.data = Some(pm::metric::Data::Sum(pm::Sum {
        data_points: vec![pm::NumberDataPoint {
            start_time_unix_nano: base + start_s * 1_000_000_000,
            time_unix_nano: base + end_s * 1_000_000_000,
            value: Some(pm::number_data_point::Value::AsInt(value as i64)),
            ..Default::default()
        }],
        aggregation_temporality: 1,
        is_monotonic: true,
    }));
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resent_delta_points_are_added_once() {
    let s = TestServer::start().await;
    for req in [
        delta_request(0, 10, 4.0),
        delta_request(0, 10, 4.0),
        delta_request(10, 20, 1.0),
        delta_request(10, 20, 1.0),
    ] {
        let r = s.post("/v1/metrics", PB, req.encode_to_vec()).await;
        assert_eq!(r.status(), 200);
    }
    s.eventually("two samples", |srv| {
        select_name(srv, "sent_total")
            .first()
            .is_some_and(|x| x.samples.len() == 2)
    })
    .await;
    let got = select_name(s.srv(), "sent_total");
    let v: Vec<f64> = got[0].samples.iter().map(|s| s.v).collect();
    assert_eq!(v, vec![4.0, 5.0]);
}

/// (metric name, job, samples as (ms, value)).
pub type SeriesSpec<'a> = (&'a str, &'a str, &'a [(i64, f64)]);

pub fn write_request(series: &[SeriesSpec]) -> WriteRequest {
    WriteRequest {
        timeseries: series
            .iter()
            .map(|(name, job, samples)| TimeSeries {
                labels: vec![
                    Label {
                        name: "__name__".into(),
                        value: name.to_string(),
                    },
                    Label {
                        name: "job".into(),
                        value: job.to_string(),
                    },
                ],
                samples: samples
                    .iter()
                    .map(|(t, v)| PromSample {
                        value: *v,
                        timestamp: *t,
                    })
                    .collect(),
            })
            .collect(),
    }
}

async fn remote_write(s: &TestServer, body: Vec<u8>) -> reqwest::Response {
    s.http
        .post(s.api_url("/api/v1/write"))
        .header("content-type", "application/x-protobuf")
        .header("content-encoding", "snappy")
        .header("x-prometheus-remote-write-version", "0.1.0")
        .body(body)
        .send()
        .await
        .unwrap()
}

pub fn snappy(r: &WriteRequest) -> Vec<u8> {
    snap::raw::Encoder::new()
        .compress_vec(&r.encode_to_vec())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_write_stores_series_and_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let t = now_ms() - 60_000;
    let mut s = TestServer::start_in(dir.path(), &[]).await;
    let req = write_request(&[
        ("up", "a", &[(t, 1.0), (t + 15_000, 1.0)][..]),
        ("up", "b", &[(t, 0.0)][..]),
    ]);
    let r = remote_write(&s, snappy(&req)).await;
    assert_eq!(r.status(), 204);
    // Out of order and a duplicate timestamp: last write wins.
    let r = remote_write(
        &s,
        snappy(&write_request(&[(
            "up",
            "a",
            &[(t + 15_000, 0.5), (t - 15_000, 1.0)][..],
        )])),
    )
    .await;
    assert_eq!(r.status(), 204);
    s.eventually("samples", |srv| {
        select_name(srv, "up")
            .iter()
            .map(|x| x.samples.len())
            .sum::<usize>()
            == 4
    })
    .await;

    let r = remote_write(&s, b"definitely not snappy".to_vec()).await;
    assert_eq!(r.status(), 400);
    let r = remote_write(
        &s,
        snap::raw::Encoder::new()
            .compress_vec(b"\xff\xff\xff")
            .unwrap(),
    )
    .await;
    assert_eq!(r.status(), 400);
    let no_name = WriteRequest {
        timeseries: vec![TimeSeries {
            labels: vec![Label {
                name: "job".into(),
                value: "x".into(),
            }],
            samples: vec![],
        }],
    };
    let r = remote_write(&s, snappy(&no_name)).await;
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("__name__"),
        "{body}"
    );

    s.shutdown().await;
    let s = TestServer::start_in(dir.path(), &[]).await;
    let up = select_name(s.srv(), "up");
    assert_eq!(up.len(), 2);
    let a: Vec<(i64, f64)> = up[0].samples.iter().map(|x| (x.t_ms, x.v)).collect();
    assert_eq!(a, vec![(t - 15_000, 1.0), (t, 1.0), (t + 15_000, 0.5)]);
    assert_eq!(label(&up[1].labels, "job"), Some("b"));
}

/// `query_range` over the last 2 h at a 1 m step, as (t_s, value) of the
/// one result series.
async fn range_points(s: &TestServer, expr: &str, start_s: i64, end_s: i64) -> Vec<(i64, f64)> {
    let r = s
        .http
        .get(s.api_url("/api/v1/query_range"))
        .query(&[
            ("query", expr.to_string()),
            ("start", start_s.to_string()),
            ("end", end_s.to_string()),
            ("step", "60".to_string()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    let result = body["data"]["result"].as_array().unwrap();
    assert_eq!(result.len(), 1, "{body}");
    result[0]["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p[0].as_f64().unwrap() as i64,
                p[1].as_str().unwrap().parse().unwrap(),
            )
        })
        .collect()
}

/// Repeated range queries may reuse results over settled time; a late
/// sample in that time must still show in the next answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_samples_show_in_repeated_range_queries() {
    let s = TestServer::start_with(&[]).await;
    let now = now_ms() / 60_000 * 60_000;
    let samples: Vec<(i64, f64)> = (0..=120)
        .map(|i| (now - 7_200_000 + i * 60_000, 1.0))
        .collect();
    let r = remote_write(&s, snappy(&write_request(&[("gauge", "a", &samples[..])]))).await;
    assert_eq!(r.status(), 204);
    s.eventually("samples", |srv| {
        select_name(srv, "gauge")
            .first()
            .is_some_and(|x| x.samples.len() == samples.len())
    })
    .await;
    let (start, end) = ((now - 7_200_000) / 1000, now / 1000);
    let first = range_points(&s, "gauge * 2", start, end).await;
    assert_eq!(first.len(), 121);
    assert!(first.iter().all(|p| p.1 == 2.0));
    assert_eq!(range_points(&s, "gauge * 2", start, end).await, first);
    // Rewrite the sample an hour ago.
    let t = now - 3_600_000;
    let r = remote_write(
        &s,
        snappy(&write_request(&[("gauge", "a", &[(t, 5.0)][..])])),
    )
    .await;
    assert_eq!(r.status(), 204);
    s.eventually("the rewrite", |srv| {
        select_name(srv, "gauge")[0]
            .samples
            .iter()
            .any(|x| x.t_ms == t && x.v == 5.0)
    })
    .await;
    let after = range_points(&s, "gauge * 2", start, end).await;
    let changed: Vec<(i64, f64)> = after.iter().filter(|p| p.1 != 2.0).copied().collect();
    assert_eq!(changed, vec![(t / 1000, 10.0)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_write_body_cap() {
    let s = TestServer::start_with(&[
        "ingest.max_body_bytes=\"64KiB\"",
        "ingest.max_record_bytes=\"32KiB\"",
    ])
    .await;
    let big: Vec<(i64, f64)> = (0..100_000)
        .map(|i| (i as i64 * 1000, (i * 7919 % 1000) as f64))
        .collect();
    let body = snappy(&write_request(&[("big", "x", &big[..])]));
    assert!(body.len() > 64 * 1024, "{}", body.len());
    let r = remote_write(&s, body).await;
    assert_eq!(r.status(), 413);
    // The unread body makes the connection unusable: the answer says so,
    // and the client's next request goes over a new one.
    assert_eq!(r.headers()["connection"], "close");
    s.assert_healthy().await;
}

fn gauge_with(name: &str, values: &[&str]) -> ExportMetricsServiceRequest {
    let mut r = gauge_request(name, &vec![1.0; values.len()]);
    let m = &mut r.resource_metrics[0].scope_metrics[0].metrics[0];
    if let Some(pm::metric::Data::Gauge(g)) = &mut m.data {
        for (p, v) in g.data_points.iter_mut().zip(values) {
            p.attributes = vec![kv_str("user", v)];
        }
    }
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cardinality_limits_reject_new_series() {
    let s =
        TestServer::start_with(&["metrics.max_series_per_metric=2", "metrics.max_series=10"]).await;
    let r = s
        .post(
            "/v1/metrics",
            PB,
            gauge_with("users", &["a", "b", "c"]).encode_to_vec(),
        )
        .await;
    assert_eq!(r.status(), 200);
    let resp = ExportMetricsServiceResponse::decode(r.bytes().await.unwrap()).unwrap();
    let ps = resp.partial_success.expect("partial success");
    assert_eq!(ps.rejected_data_points, 1);
    assert!(
        ps.error_message.contains("cardinality"),
        "{}",
        ps.error_message
    );
    // Known series keep being accepted.
    let r = s
        .post(
            "/v1/metrics",
            PB,
            gauge_with("users", &["a"]).encode_to_vec(),
        )
        .await;
    let resp = ExportMetricsServiceResponse::decode(r.bytes().await.unwrap()).unwrap();
    assert!(resp.partial_success.is_none());
    s.eventually("two series", |srv| select_name(srv, "users").len() == 2)
        .await;

    // remote_write: a new series over the total limit is refused with 400.
    let many: Vec<(String, String)> = (0..10)
        .map(|i| (format!("m{i}"), "j".to_string()))
        .collect();
    let one = [(now_ms(), 1.0)];
    let series: Vec<SeriesSpec> = many
        .iter()
        .map(|(n, j)| (n.as_str(), j.as_str(), &one[..]))
        .collect();
    let r = remote_write(&s, snappy(&write_request(&series))).await;
    assert_eq!(r.status(), 400);

    let text = s.self_metrics().await;
    assert!(
        text.contains("tern_metrics_series_rejected_total{reason=\"per_metric_limit\"} 1"),
        "{text}"
    );
    assert!(text.contains("tern_metrics_series_rejected_total{reason=\"total_limit\"}"));

    let tsdb: serde_json::Value = s
        .http
        .get(s.api_url("/api/v1/status/tsdb?limit=3"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(tsdb["status"], "success");
    let by_name = tsdb["data"]["seriesCountByMetricName"].as_array().unwrap();
    assert_eq!(by_name[0]["name"], "users");
    assert_eq!(by_name[0]["value"], 2);
    assert!(by_name.len() <= 3);
    let r = s
        .http
        .get(s.api_url("/api/v1/status/tsdb?limit=0"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}
