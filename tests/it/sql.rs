//! The SQL API end to end: aggregates over data sent by the OpenTelemetry
//! Python SDK equal the truth the sender reports, joins across signals,
//! result formats, pushdown that reads only the partitions of the time
//! range (30 days of logs, 10 hours of metrics), the read-only guard, the
//! deadline and the memory limit.

use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::metrics::v1 as pm;
use prost::Message;
use serde_json::Value;

use crate::support::*;

const PB: &str = "application/x-protobuf";
const HOUR_NS: u64 = 3_600_000_000_000;

async fn sql_raw(s: &TestServer, q: &str, extra: &[(&str, &str)]) -> (u16, Value) {
    let mut params = vec![("q", q)];
    params.extend_from_slice(extra);
    let url = reqwest::Url::parse_with_params(&s.api_url("/api/v1/sql"), &params).unwrap();
    let r = s.http.get(url).send().await.expect("request sent");
    let status = r.status().as_u16();
    let body = r.json::<Value>().await.expect("json body");
    (status, body)
}

/// Runs a query that must succeed and returns the whole answer.
async fn sql(s: &TestServer, q: &str) -> Value {
    let (status, body) = sql_raw(s, q, &[]).await;
    assert_eq!(status, 200, "{q}: {}", short(&body));
    body
}

/// The rows of a successful query.
async fn rows(s: &TestServer, q: &str) -> Vec<Vec<Value>> {
    sql(s, q).await["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| r.as_array().expect("row").clone())
        .collect()
}

/// An answer cut to a readable length for assertion messages.
fn short(v: &Value) -> String {
    let s = v.to_string();
    match s.char_indices().nth(600) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s,
    }
}

fn int(v: &Value) -> i64 {
    v.as_i64()
        .unwrap_or_else(|| panic!("{v} is not an integer"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_over_python_sdk_data_matches_the_truth() {
    let s = TestServer::start().await;
    let truth = run_python(&s, "sql_e2e.py", &["--orders", "100"]).await;
    assert_eq!(truth["ok"], true, "{truth}");
    s.eventually("all spans stored", |srv| {
        srv.stores().traces.stats().records == 300
    })
    .await;
    s.eventually("all logs stored", |srv| {
        srv.stores().logs.stats().records == 100
    })
    .await;

    // Spans per service, with errors.
    let r = rows(
        &s,
        "SELECT service, count(*) AS n, sum(CASE WHEN error THEN 1 ELSE 0 END) AS errors \
         FROM spans GROUP BY service ORDER BY service",
    )
    .await;
    let want: Vec<Vec<Value>> = ["pay", "shop"]
        .iter()
        .map(|svc| {
            vec![
                Value::from(*svc),
                truth["spans"][svc].clone(),
                truth["errors"][svc].clone(),
            ]
        })
        .collect();
    assert_eq!(r, want);

    // Durations, pushed down to one (service, operation) index range.
    let body = sql(
        &s,
        "SELECT sum(duration_ms) AS total, count(*) AS n FROM spans \
         WHERE service = 'shop' AND name = 'checkout' AND kind = 'server'",
    )
    .await;
    let total = body["rows"][0][0].as_f64().unwrap();
    let want = truth["shop_duration_ms_sum"].as_f64().unwrap();
    assert!((total - want).abs() < 1e-6, "{total} vs {want}");
    assert_eq!(int(&body["rows"][0][1]), 100);
    assert_eq!(body["scanned"]["spans"]["partitions"], 1, "{body}");
    assert_eq!(body["scanned"]["spans"]["rows"], 100, "{body}");

    // Percentiles per service.
    let r = rows(
        &s,
        "SELECT service, approx_percentile_cont(duration_ms, 0.5) AS p50 FROM spans \
         WHERE kind = 'server' GROUP BY service ORDER BY service",
    )
    .await;
    assert_eq!(r.len(), 2);
    let p50_pay = r[0][1].as_f64().unwrap();
    assert!((5.0..=15.0).contains(&p50_pay), "{p50_pay}");

    // Logs by severity, full-text search and phrase match.
    let r = rows(
        &s,
        "SELECT severity, count(*) FROM logs WHERE service = 'pay' GROUP BY severity ORDER BY severity",
    )
    .await;
    assert_eq!(
        r,
        vec![
            vec![Value::from("error"), truth["logs"]["error"].clone()],
            vec![Value::from("info"), truth["logs"]["info"].clone()],
        ]
    );
    let body = sql(&s, "SELECT count(*) FROM logs WHERE search('declined')").await;
    assert_eq!(body["rows"][0][0], truth["logs"]["error"]);
    let r = rows(
        &s,
        "SELECT count(*) FROM logs WHERE text_match(body, 'charged order')",
    )
    .await;
    assert_eq!(r[0][0], truth["logs"]["info"]);
    let r = rows(
        &s,
        "SELECT count(*) FROM logs WHERE search('severity:error AND service:pay')",
    )
    .await;
    assert_eq!(r[0][0], truth["logs"]["error"]);

    // The counter, by label.
    let r = rows(
        &s,
        "SELECT labels['outcome'] AS outcome, max(value) FROM metrics \
         WHERE metric = 'orders_total' GROUP BY 1 ORDER BY 1",
    )
    .await;
    assert_eq!(r.len(), 2, "{r:?}");
    assert_eq!(r[0][0], "failed");
    assert_eq!(r[0][1].as_f64(), truth["orders"]["failed"].as_f64());
    assert_eq!(r[1][0], "ok");
    assert_eq!(r[1][1].as_f64(), truth["orders"]["ok"].as_f64());

    // Logs of the slowest trace: a join of spans and logs on the trace id.
    let r = rows(
        &s,
        "SELECT l.body, s.trace_id FROM logs l JOIN \
         (SELECT trace_id FROM spans WHERE service = 'shop' AND name = 'checkout' \
          ORDER BY duration_ms DESC, start_time ASC LIMIT 1) s ON l.trace_id = s.trace_id",
    )
    .await;
    let order = truth["slowest"]["order"].as_i64().unwrap();
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(r[0][0], format!("charged order {order}").as_str());
    assert_eq!(r[0][1], truth["slowest"]["trace_id"]);

    // Error count per service from spans next to a metric.
    let r = rows(
        &s,
        "SELECT s.service, s.errors, m.orders FROM \
         (SELECT service, sum(CASE WHEN error THEN 1 ELSE 0 END) AS errors FROM spans \
          WHERE kind = 'server' GROUP BY service) s \
         JOIN (SELECT job, sum(v) AS orders FROM \
               (SELECT job, labels['outcome'] AS o, max(value) AS v FROM metrics \
                WHERE metric = 'orders_total' GROUP BY 1, 2) GROUP BY job) m \
         ON s.service = m.job",
    )
    .await;
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(r[0][0], "shop");
    assert_eq!(r[0][1], truth["errors"]["shop"]);
    assert_eq!(r[0][2].as_f64(), Some(100.0));

    // Time buckets: aligned to the minute, counting every span once.
    let r = rows(
        &s,
        "SELECT time_bucket('1m', start_time) AS b, count(*) FROM spans \
         WHERE service = 'pay' GROUP BY b ORDER BY b",
    )
    .await;
    assert!(!r.is_empty() && r.len() <= 3, "{r:?}");
    assert_eq!(r.iter().map(|row| int(&row[1])).sum::<i64>(), 100);
    for row in &r {
        let b = row[0].as_str().unwrap();
        assert!(b.ends_with(":00Z"), "bucket {b} is not a whole minute");
    }
    let r = rows(
        &s,
        "SELECT count(*) FROM (SELECT date_bin(INTERVAL '1 minute', start_time) FROM spans)",
    )
    .await;
    assert_eq!(int(&r[0][0]), 300);

    // Attribute access by key.
    let r = rows(
        &s,
        "SELECT name FROM spans WHERE attributes['order.id'] = '7'",
    )
    .await;
    assert_eq!(r, vec![vec![Value::from("checkout")]]);
    let r = rows(
        &s,
        "SELECT resource['deployment.environment'] FROM spans WHERE service = 'pay' LIMIT 1",
    )
    .await;
    assert_eq!(r, vec![vec![Value::from("sql-e2e")]]);

    // The row limit truncates and says so.
    let (status, body) = sql_raw(&s, "SELECT trace_id FROM spans", &[("limit", "10")]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["row_count"], 10);
    assert_eq!(body["rows"].as_array().unwrap().len(), 10);
    assert_eq!(body["truncated"], true);
    let body = sql(&s, "SELECT count(*) FROM spans").await;
    assert_eq!(body["truncated"], false);
    assert_eq!(body["columns"][0]["type"], "Int64");

    // CSV by Accept, Arrow IPC by format=.
    let url = reqwest::Url::parse_with_params(
        &s.api_url("/api/v1/sql"),
        &[(
            "q",
            "SELECT service, count(*) AS n FROM spans GROUP BY service ORDER BY service",
        )],
    )
    .unwrap();
    let r = s
        .http
        .get(url.clone())
        .header("accept", "text/csv")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    assert_eq!(
        r.text().await.unwrap(),
        "service,n\r\npay,100\r\nshop,200\r\n"
    );
    let r = s
        .http
        .post(s.api_url("/api/v1/sql?format=arrow"))
        .header("content-type", "application/json")
        .body(r#"{"query": "SELECT service, count(*) AS n FROM spans GROUP BY service"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"],
        "application/vnd.apache.arrow.stream"
    );
    let bytes = r.bytes().await.unwrap();
    let reader = arrow_ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None)
        .expect("an Arrow IPC stream");
    let batches: Vec<_> = reader.map(|b| b.expect("batch")).collect();
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 2);
    assert_eq!(batches[0].schema().field(0).name(), "service");

    // A plain-text body works too.
    let r = s
        .http
        .post(s.api_url("/api/v1/sql"))
        .header("content-type", "application/sql")
        .body("SELECT count(*) AS n FROM logs")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["rows"][0][0], 100);
}

fn gauge_points(name: &str, points: &[(u64, f64)]) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![pm::ResourceMetrics {
            resource: resource("history"),
            scope_metrics: vec![pm::ScopeMetrics {
                metrics: vec![pm::Metric {
                    name: name.into(),
                    data: Some(pm::metric::Data::Gauge(pm::Gauge {
                        data_points: points
                            .iter()
                            .map(|(t, v)| pm::NumberDataPoint {
                                time_unix_nano: *t,
                                value: Some(pm::number_data_point::Value::AsDouble(*v)),
                                ..Default::default()
                            })
                            .collect(),
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_pushdown_reads_only_the_partitions_in_range() {
    let s = TestServer::start_with(&[
        "logs.partition=\"1d\"",
        "logs.retention=\"40d\"",
        "metrics.partition_duration=\"2h\"",
        "metrics.retention=\"40d\"",
    ])
    .await;
    // One log record per hour over 30 days, each day in its own partition.
    let day_ns = 24 * HOUR_NS;
    let now = now_ns();
    let first = (now - 30 * day_ns) / day_ns * day_ns;
    let mut records = Vec::new();
    for h in 0..(30 * 24) {
        let mut r = log_record(&format!("hourly record {h}"), h as i64);
        r.time_unix_nano = first + h * HOUR_NS;
        r.observed_time_unix_nano = r.time_unix_nano;
        records.push(r);
    }
    let resp = s
        .post(
            "/v1/logs",
            PB,
            logs_request("history", records).encode_to_vec(),
        )
        .await;
    assert_eq!(resp.status(), 200);
    // Ten hours of one gauge, one sample a minute, in 2 h partitions.
    let hour_start = (now - 12 * HOUR_NS) / (2 * HOUR_NS) * (2 * HOUR_NS);
    let points: Vec<(u64, f64)> = (0..600)
        .map(|m| (hour_start + m * 60_000_000_000, m as f64))
        .collect();
    let resp = s
        .post(
            "/v1/metrics",
            PB,
            gauge_points("queue_depth", &points).encode_to_vec(),
        )
        .await;
    assert_eq!(resp.status(), 200);
    s.eventually("logs stored", |srv| {
        srv.stores().logs.stats().records == 720
    })
    .await;

    let ts = |ns: u64| {
        let secs = ns / 1_000_000_000;
        format!("to_timestamp_seconds({secs})")
    };
    // The whole month reads every partition.
    let all = sql(&s, "SELECT count(*) FROM logs").await;
    assert_eq!(all["rows"][0][0], 720);
    let month_parts = all["scanned"]["logs"]["partitions"].as_u64().unwrap();
    assert!(month_parts >= 30, "{all}");

    // One hour in the middle of the month reads one partition.
    let lo = first + 15 * day_ns + 7 * HOUR_NS;
    let q = format!(
        "SELECT count(*) FROM logs WHERE timestamp >= {} AND timestamp < {}",
        ts(lo),
        ts(lo + HOUR_NS)
    );
    let before = partitions_metric(&s, "logs").await;
    let hour = sql(&s, &q).await;
    assert_eq!(hour["rows"][0][0], 1, "{hour}");
    assert_eq!(hour["scanned"]["logs"]["partitions"], 1, "{hour}");
    assert_eq!(partitions_metric(&s, "logs").await - before, 1.0);
    // EXPLAIN shows the time range reaching the scan.
    let plan = sql(&s, &format!("EXPLAIN {q}")).await;
    let physical = plan["rows"][1][1].as_str().unwrap();
    assert!(
        physical.contains(&format!(
            "ScanExec: table=logs, pushed=[time=[{lo}, {})",
            lo + HOUR_NS
        )),
        "{physical}"
    );
    // The records themselves come back from that hour only.
    let r = rows(
        &s,
        &format!(
            "SELECT body FROM logs WHERE timestamp BETWEEN {} AND {}",
            ts(lo),
            ts(lo + HOUR_NS - 1_000_000_000)
        ),
    )
    .await;
    assert_eq!(r, vec![vec![Value::from("hourly record 367")]]);

    // Metrics: one hour of a ten-hour series reads one 2 h partition.
    let all = sql(
        &s,
        "SELECT count(*), sum(value) FROM metrics WHERE metric = 'queue_depth'",
    )
    .await;
    assert_eq!(all["rows"][0][0], 600, "{all}");
    assert!(
        all["scanned"]["metrics"]["partitions"].as_u64().unwrap() >= 5,
        "{all}"
    );
    let lo = hour_start + 2 * HOUR_NS;
    let one = sql(
        &s,
        &format!(
            "SELECT count(*), min(value), max(value) FROM metrics \
             WHERE metric = 'queue_depth' AND timestamp >= {} AND timestamp < {}",
            ts(lo),
            ts(lo + HOUR_NS)
        ),
    )
    .await;
    assert_eq!(
        one["rows"][0],
        serde_json::json!([60, 120.0, 179.0]),
        "{one}"
    );
    assert_eq!(one["scanned"]["metrics"]["partitions"], 1, "{one}");
}

async fn partitions_metric(s: &TestServer, table: &str) -> f64 {
    let text = s.self_metrics().await;
    let prefix = format!("tern_sql_scanned_partitions_total{{table=\"{table}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_is_read_only_bounded_and_reports_mistakes() {
    let s = TestServer::start_with(&["sql.timeout=\"2s\"", "sql.memory_limit=\"16MiB\""]).await;
    let resp = s
        .post(
            "/v1/logs",
            PB,
            logs_request("guard", vec![log_record("secret-free record", 1)]).encode_to_vec(),
        )
        .await;
    assert_eq!(resp.status(), 200);

    for q in [
        "CREATE EXTERNAL TABLE passwd (line VARCHAR) STORED AS CSV LOCATION '/etc/passwd'",
        "COPY (SELECT * FROM logs) TO '/tmp/tern-sql-copy.csv'",
        "INSERT INTO logs SELECT * FROM logs",
        "CREATE TABLE t AS SELECT 1",
        "CREATE VIEW v AS SELECT * FROM logs",
        "DROP TABLE logs",
        "DELETE FROM logs",
        "UPDATE logs SET body = 'x'",
        "SET datafusion.execution.batch_size = 1",
        "EXPLAIN COPY (SELECT 1) TO '/tmp/tern-sql-copy.csv'",
    ] {
        let (status, body) = sql_raw(&s, q, &[]).await;
        assert_eq!(status, 400, "{q}: {body}");
        assert_eq!(body["error"]["code"], "forbidden_statement", "{q}: {body}");
    }
    assert!(!std::path::Path::new("/tmp/tern-sql-copy.csv").exists());
    // Files, URLs and file-reading functions do not exist.
    for q in [
        "SELECT * FROM '/etc/passwd'",
        "SELECT * FROM 'https://example.com/data.csv'",
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM read_parquet('/etc/passwd')",
    ] {
        let (status, body) = sql_raw(&s, q, &[]).await;
        assert_eq!(status, 400, "{q}: {body}");
        assert_eq!(body["error"]["code"], "invalid_sql", "{q}: {body}");
        assert!(!body.to_string().contains("root:"), "{q}: {body}");
    }

    // User mistakes: 400 with DataFusion's message.
    let (status, body) = sql_raw(&s, "SELECT count(* FROM logs", &[]).await;
    assert_eq!(status, 400, "{body}");
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("Expected") && msg.contains("Column: 16"),
        "{body}"
    );
    let (status, body) = sql_raw(&s, "SELECT nope FROM logs", &[]).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("nope"),
        "{body}"
    );
    let (status, body) = sql_raw(
        &s,
        "SELECT count(*) FROM logs WHERE search('a AND (b')",
        &[],
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("search("),
        "{body}"
    );
    let (status, body) = sql_raw(&s, "SELECT search('x') FROM logs", &[]).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = sql_raw(&s, "SELECT time_bucket('soon', timestamp) FROM logs", &[]).await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = sql_raw(&s, "  ", &[]).await;
    assert_eq!(status, 400);
    let (status, body) = sql_raw(&s, "SELECT 1", &[("limit", "0")]).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = sql_raw(&s, "SELECT 1", &[("format", "xml")]).await;
    assert_eq!(status, 400, "{body}");
    let r = s
        .http
        .post(s.api_url("/api/v1/sql"))
        .header("content-type", "image/png")
        .body("SELECT 1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    let r = s
        .http
        .post(s.api_url("/api/v1/sql"))
        .header("content-type", "text/plain")
        .body(format!("SELECT 1 -- {}", "x".repeat(200_000)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "query_too_large");
    let r = s
        .http
        .post(s.api_url("/api/v1/sql"))
        .header("content-type", "application/json")
        .body("{\"query\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // A runaway query is cancelled at the deadline; the server keeps serving.
    let started = Instant::now();
    let (status, body) = sql_raw(
        &s,
        "SELECT count(*) FROM generate_series(1, 100000000000) AS a",
        &[],
    )
    .await;
    assert_eq!(status, 408, "{body}");
    assert_eq!(body["error"]["code"], "query_timeout");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    s.assert_healthy().await;
    let r = rows(&s, "SELECT count(*) FROM logs").await;
    assert_eq!(r[0][0], 1);

    // A query needing more memory than allowed stops with 503.
    let (status, body) = sql_raw(
        &s,
        "SELECT (v * 7919) % 20000003 AS k, count(*) FROM generate_series(1, 20000000) AS t(v) \
         GROUP BY k",
        &[],
    )
    .await;
    assert_eq!(status, 503, "{}", short(&body));
    assert_eq!(body["error"]["code"], "resources_exhausted", "{body}");
    s.assert_healthy().await;
    let metrics = s.self_metrics().await;
    assert!(
        metrics.contains("tern_sql_queries_total{outcome=\"query_timeout\"} 1"),
        "{metrics}"
    );
}
