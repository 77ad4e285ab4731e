//! The shared behaviour suite every implementation of a storage trait must
//! pass. Each function takes a fresh, empty store.

use std::sync::Arc;

use super::{LogQuery, LogStore, MetricStore, TraceStore};
use crate::model::*;

fn resource(service: &str) -> Arc<Resource> {
    Arc::new(Resource {
        attributes: vec![("service.name".into(), AnyValue::String(service.into()))],
        ..Default::default()
    })
}

/// A span of trace `t` with span id `s` starting at `start` ns.
pub fn span(t: u8, s: u8, start: u64, service: &str) -> Span {
    Span {
        resource: resource(service),
        scope: Arc::new(Scope::default()),
        trace_id: TraceId([t; 16]),
        span_id: SpanId([s; 8]),
        parent_span_id: None,
        trace_state: String::new(),
        flags: 0,
        name: format!("op-{s}"),
        kind: SpanKind::Server,
        start_time_ns: start,
        end_time_ns: start + 1_000,
        attributes: vec![("k".into(), AnyValue::Int(s as i64))],
        dropped_attributes_count: 0,
        events: vec![],
        dropped_events_count: 0,
        links: vec![],
        dropped_links_count: 0,
        status: Status::default(),
    }
}

pub fn log(time: u64, service: &str, body: &str, trace: Option<u8>) -> LogRecord {
    LogRecord {
        resource: resource(service),
        scope: Arc::new(Scope::default()),
        time_ns: time,
        observed_time_ns: time,
        severity_number: 9,
        severity_text: "INFO".into(),
        body: AnyValue::String(body.into()),
        attributes: vec![],
        dropped_attributes_count: 0,
        flags: 0,
        trace_id: trace.map(|t| TraceId([t; 16])),
        span_id: None,
        event_name: String::new(),
    }
}

pub fn gauge(name: &str, time: u64, value: f64) -> Metric {
    Metric {
        resource: resource("svc"),
        scope: Arc::new(Scope::default()),
        name: name.into(),
        description: String::new(),
        unit: String::new(),
        metadata: vec![],
        data: MetricData::Gauge(vec![NumberPoint {
            attributes: vec![],
            start_time_ns: 0,
            time_ns: time,
            value,
            exemplars: vec![],
            flags: 0,
        }]),
    }
}

pub fn trace_store(store: &dyn TraceStore) {
    assert!(store.trace(&TraceId([1; 16])).unwrap().is_empty());
    // Spans of one trace arrive in two batches, out of order.
    store
        .write(1, vec![span(1, 2, 200, "a"), span(2, 1, 50, "b")])
        .unwrap();
    store.write(2, vec![span(1, 1, 100, "a")]).unwrap();
    let t = store.trace(&TraceId([1; 16])).unwrap();
    assert_eq!(
        t.iter().map(|s| s.span_id).collect::<Vec<_>>(),
        vec![SpanId([1; 8]), SpanId([2; 8])],
        "spans of a trace come back together in start order"
    );
    assert_eq!(t[0].attributes, vec![("k".to_string(), AnyValue::Int(1))]);
    assert_eq!(t[0].service_name(), "a");
    assert_eq!(store.trace(&TraceId([2; 16])).unwrap().len(), 1);
    assert_eq!(store.stats().records, 3);
    store.flush().unwrap();
}

pub fn log_store(store: &dyn LogStore) {
    let all = LogQuery {
        limit: 100,
        ..Default::default()
    };
    assert!(store.query(&all).unwrap().is_empty());
    store
        .write(
            1,
            vec![
                log(10, "a", "first", Some(7)),
                log(30, "b", "third", None),
                log(20, "a", "second", Some(7)),
            ],
        )
        .unwrap();
    let got = store.query(&all).unwrap();
    assert_eq!(
        got.iter().map(|r| r.time_ns).collect::<Vec<_>>(),
        vec![30, 20, 10],
        "newest first"
    );
    let q = |f: &dyn Fn(&mut LogQuery)| {
        let mut q = all.clone();
        f(&mut q);
        store
            .query(&q)
            .unwrap()
            .into_iter()
            .map(|r| r.time_ns)
            .collect::<Vec<_>>()
    };
    assert_eq!(q(&|q| q.start_ns = Some(20)), vec![30, 20]);
    assert_eq!(q(&|q| q.end_ns = Some(20)), vec![10]);
    assert_eq!(q(&|q| q.service = Some("a".into())), vec![20, 10]);
    assert_eq!(q(&|q| q.trace_id = Some(TraceId([7; 16]))), vec![20, 10]);
    assert_eq!(q(&|q| q.limit = 1), vec![30]);
    assert_eq!(store.stats().records, 3);
    store.flush().unwrap();
}

fn eq(name: &str, value: &str) -> LabelMatcher {
    LabelMatcher {
        name: name.into(),
        op: MatchOp::Equal,
        value: value.into(),
    }
}

fn matcher(name: &str, op: MatchOp, value: &str) -> LabelMatcher {
    LabelMatcher {
        name: name.into(),
        op,
        value: value.into(),
    }
}

const S: u64 = 1_000_000_000;

fn sum(name: &str, unit: &str, t_s: u64, value: f64, temporality: Temporality) -> Metric {
    let mut m = gauge(name, t_s * S, value);
    m.unit = unit.into();
    let MetricData::Gauge(points) = m.data else {
        unreachable!()
    };
    m.data = MetricData::Sum {
        points: points
            .into_iter()
            .map(|mut p| {
                p.start_time_ns = if temporality == Temporality::Delta {
                    (t_s - 10) * S
                } else {
                    S
                };
                p.attributes = vec![("http.route".into(), AnyValue::String("/a".into()))];
                p
            })
            .collect(),
        temporality,
        monotonic: true,
    };
    m
}

fn values(store: &dyn MetricStore, matchers: &[LabelMatcher]) -> Vec<(i64, f64)> {
    let got = store.select(matchers, i64::MIN, i64::MAX).unwrap();
    assert_eq!(got.len(), 1, "{got:?}");
    got[0].samples.iter().map(|s| (s.t_ms, s.v)).collect()
}

/// `flush` is called between steps: a persistent store under test should
/// write its head on every flush, so that queries span head and files.
pub fn metric_store(store: &dyn MetricStore) {
    let all = |name: &str| vec![eq(METRIC_NAME, name)];
    assert!(store.select(&all("m"), 0, i64::MAX).unwrap().is_empty());
    store
        .write(
            1,
            vec![gauge("m", 10 * S, 1.5), gauge("other", 10 * S, 2.0)],
        )
        .unwrap();
    store.flush().unwrap();
    store.write(2, vec![gauge("m", 20 * S, f64::NAN)]).unwrap();
    let got = store.select(&all("m"), 0, i64::MAX).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].labels,
        vec![
            ("__name__".to_string(), "m".to_string()),
            ("job".into(), "svc".into())
        ]
    );
    assert_eq!(
        got[0].samples[0],
        Sample {
            t_ms: 10_000,
            v: 1.5
        }
    );
    assert!(
        got[0].samples[1].v.is_nan(),
        "NaN values are stored as given"
    );
    // Time range is inclusive on both ends.
    let got = store.select(&all("m"), 10_001, 20_000).unwrap();
    assert_eq!(got[0].samples.len(), 1);
    assert!(store.select(&all("m"), 20_001, 30_000).unwrap().is_empty());
    // target_info carries the resource.
    let ti = store.series(&all("target_info"), 0, i64::MAX).unwrap();
    assert_eq!(ti.len(), 1, "{ti:?}");

    // Regex matchers are anchored; an absent label matches "".
    let re = store
        .series(
            &[matcher(METRIC_NAME, MatchOp::Regex, "m|oth.*")],
            0,
            i64::MAX,
        )
        .unwrap();
    assert_eq!(re.len(), 2);
    assert!(store
        .series(&[matcher(METRIC_NAME, MatchOp::Regex, "th")], 0, i64::MAX)
        .unwrap()
        .is_empty());
    let absent = store
        .series(
            &[eq(METRIC_NAME, "m"), matcher("nope", MatchOp::Equal, "")],
            0,
            i64::MAX,
        )
        .unwrap();
    assert_eq!(absent.len(), 1);
    let not = store
        .series(
            &[matcher(METRIC_NAME, MatchOp::NotRegex, "m|target_info")],
            0,
            i64::MAX,
        )
        .unwrap();
    assert_eq!(not.len(), 1);
    assert_eq!(label(&not[0], METRIC_NAME), Some("other"));
    assert!(store
        .series(&[matcher(METRIC_NAME, MatchOp::Regex, "(")], 0, 1)
        .is_err());
    assert_eq!(
        store.label_values(METRIC_NAME, &[], 0, i64::MAX).unwrap(),
        vec!["m", "other", "target_info"]
    );
    assert_eq!(
        store.label_names(&all("m"), 0, i64::MAX).unwrap(),
        vec!["__name__", "job"]
    );

    // Cumulative counters: identical re-exports do not double count.
    let c = || vec![eq(METRIC_NAME, "reqs_total")];
    store
        .write(3, vec![sum("reqs", "1", 30, 5.0, Temporality::Cumulative)])
        .unwrap();
    store
        .write(4, vec![sum("reqs", "1", 30, 5.0, Temporality::Cumulative)])
        .unwrap();
    store.flush().unwrap();
    store
        .write(5, vec![sum("reqs", "1", 30, 5.0, Temporality::Cumulative)])
        .unwrap();
    store
        .write(6, vec![sum("reqs", "1", 40, 7.0, Temporality::Cumulative)])
        .unwrap();
    assert_eq!(values(store, &c()), vec![(30_000, 5.0), (40_000, 7.0)]);
    let got = store.select(&c(), 0, i64::MAX).unwrap();
    assert_eq!(label(&got[0].labels, "http_route"), Some("/a"));

    // Delta sums accumulate; a re-sent delta point is not added twice.
    let d = || vec![eq(METRIC_NAME, "bytes_bytes_total")];
    store
        .write(7, vec![sum("bytes", "By", 100, 3.0, Temporality::Delta)])
        .unwrap();
    store
        .write(8, vec![sum("bytes", "By", 100, 3.0, Temporality::Delta)])
        .unwrap();
    store.flush().unwrap();
    store
        .write(9, vec![sum("bytes", "By", 110, 4.0, Temporality::Delta)])
        .unwrap();
    assert_eq!(values(store, &d()), vec![(100_000, 3.0), (110_000, 7.0)]);

    // remote_write series: out of order accepted, last write wins.
    let lbl =
        |v: &str| -> Labels { vec![(METRIC_NAME.into(), "rw".into()), ("k".into(), v.into())] };
    let series = |samples: &[(i64, f64)]| Series {
        labels: lbl("x"),
        samples: samples
            .iter()
            .map(|(t, v)| Sample { t_ms: *t, v: *v })
            .collect(),
    };
    store
        .write_series(10, vec![series(&[(1000, 1.0), (3000, 3.0)])])
        .unwrap();
    store.flush().unwrap();
    store
        .write_series(11, vec![series(&[(2000, 2.0), (3000, 30.0)])])
        .unwrap();
    assert_eq!(
        values(store, &[eq(METRIC_NAME, "rw")]),
        vec![(1000, 1.0), (2000, 2.0), (3000, 30.0)]
    );
    assert_eq!(
        values(store, &[matcher("k", MatchOp::Regex, "x|y")]),
        vec![(1000, 1.0), (2000, 2.0), (3000, 30.0)]
    );

    // Histograms map to cumulative buckets, sum and count.
    let mut h = gauge("lat", 50 * S, 0.0);
    h.unit = "ms".into();
    h.data = MetricData::Histogram {
        points: vec![HistogramPoint {
            attributes: vec![],
            start_time_ns: S,
            time_ns: 50 * S,
            count: 6,
            sum: Some(60.0),
            bucket_counts: vec![1, 2, 3],
            explicit_bounds: vec![5.0, 10.0],
            min: None,
            max: None,
            exemplars: vec![],
            flags: 0,
        }],
        temporality: Temporality::Cumulative,
    };
    store.write(12, vec![h]).unwrap();
    let buckets = store
        .select(&[eq(METRIC_NAME, "lat_milliseconds_bucket")], 0, i64::MAX)
        .unwrap();
    let by_le: Vec<(String, f64)> = buckets
        .iter()
        .map(|s| (label(&s.labels, "le").unwrap().to_string(), s.samples[0].v))
        .collect();
    assert_eq!(
        by_le,
        vec![("+Inf".into(), 6.0), ("10".into(), 3.0), ("5".into(), 1.0)]
    );
    assert_eq!(
        values(store, &[eq(METRIC_NAME, "lat_milliseconds_count")]),
        vec![(50_000, 6.0)]
    );
    assert_eq!(
        values(store, &[eq(METRIC_NAME, "lat_milliseconds_sum")]),
        vec![(50_000, 60.0)]
    );
    let meta = store.metadata().unwrap();
    let kind = |m: &str| meta.iter().find(|x| x.metric == m).map(|x| x.kind.as_str());
    assert_eq!(kind("lat_milliseconds"), Some("histogram"));
    assert_eq!(kind("reqs_total"), Some("counter"));
    assert_eq!(kind("m"), Some("gauge"));

    let card = store.cardinality(2).unwrap();
    assert_eq!(
        card.series_count_by_metric_name[0],
        ("lat_milliseconds_bucket".into(), 3)
    );
    assert_eq!(card.series_count_by_metric_name.len(), 2);
    // 2 gauges, 1 target_info, counter, delta counter, rw, 3 buckets, sum, count
    assert_eq!(card.num_series, 11);
    store.flush().unwrap();
    assert_eq!(
        values(store, &[eq(METRIC_NAME, "rw")]),
        vec![(1000, 1.0), (2000, 2.0), (3000, 30.0)],
        "same answer after the head is flushed"
    );
}
