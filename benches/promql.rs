//! PromQL range-query benchmarks over an in-memory source: 24 h of 15 s
//! samples.
//!
//! - `rate_1k`: `rate(http_requests_total[5m])`, 1k series, step 60 s
//! - `histogram_quantile_1k`: `histogram_quantile(0.99, sum by (le)
//!   (rate(http_request_duration_seconds_bucket[5m])))`, 1k bucket series
//! - `sum_by_code_rate_3k`: `sum by (code) (rate(http_requests_total[5m]))`,
//!   3k series, step 60 s
//!
//! Run: `cargo bench --bench promql` (or build once with `--no-run` and run
//! the binary from `target/release/deps`).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use tern::query::promql::{range_query, QueryLimits, Sample, Series, VecSource};

const DAY_MS: i64 = 86_400_000;
const SCRAPE_MS: i64 = 15_000;

fn counter(labels: Vec<(&str, String)>, rate: f64) -> Series {
    let mut labels: Vec<(String, String)> = labels
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    labels.sort();
    let n = DAY_MS / SCRAPE_MS + 1;
    let mut v = 0.0;
    let samples = (0..n)
        .map(|i| {
            v += rate * 15.0 * (1.0 + (i % 7) as f64 * 0.01);
            Sample {
                t_ms: i * SCRAPE_MS,
                v,
            }
        })
        .collect();
    Series { labels, samples }
}

fn requests(n: usize) -> VecSource {
    let codes = [
        "200", "201", "204", "301", "400", "404", "429", "500", "502", "503",
    ];
    VecSource::new(
        (0..n)
            .map(|i| {
                counter(
                    vec![
                        ("__name__", "http_requests_total".into()),
                        ("code", codes[i % codes.len()].into()),
                        ("instance", format!("host-{}", i / codes.len())),
                    ],
                    1.0 + (i % 13) as f64,
                )
            })
            .collect(),
    )
}

fn buckets(n: usize) -> VecSource {
    let les = [
        "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "+Inf",
    ];
    VecSource::new(
        (0..n)
            .map(|i| {
                let b = i % les.len();
                counter(
                    vec![
                        ("__name__", "http_request_duration_seconds_bucket".into()),
                        ("le", les[b].into()),
                        ("instance", format!("host-{}", i / les.len())),
                    ],
                    1.0 + b as f64,
                )
            })
            .collect(),
    )
}

fn run(src: &VecSource, q: &str) -> usize {
    match range_query(src, q, 0, DAY_MS, 60_000, &QueryLimits::default(), None) {
        Ok(tern::query::promql::QueryValue::Matrix(m)) => m.len(),
        other => panic!("unexpected {other:?}"),
    }
}

fn benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("promql_24h");
    g.sample_size(10);
    let r1k = requests(1_000);
    g.bench_function("rate_1k", |b| {
        b.iter(|| black_box(run(&r1k, "rate(http_requests_total[5m])")))
    });
    let h1k = buckets(1_000);
    g.bench_function("histogram_quantile_1k", |b| {
        b.iter(|| {
            black_box(run(
                &h1k,
                "histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket[5m])))",
            ))
        })
    });
    let r3k = requests(3_000);
    g.bench_function("sum_by_code_rate_3k", |b| {
        b.iter(|| black_box(run(&r3k, "sum by (code) (rate(http_requests_total[5m]))")))
    });
    g.finish();
}

criterion_group!(promql, benches);
criterion_main!(promql);
