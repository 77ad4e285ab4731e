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

pub fn metric_store(store: &dyn MetricStore) {
    assert!(store.metric("m").unwrap().is_empty());
    store
        .write(1, vec![gauge("m", 10, 1.5), gauge("other", 10, 2.0)])
        .unwrap();
    store.write(2, vec![gauge("m", 20, f64::NAN)]).unwrap();
    let m = store.metric("m").unwrap();
    assert_eq!(m.len(), 2);
    let MetricData::Gauge(p) = &m[0].data else {
        panic!("expected a gauge")
    };
    assert_eq!(p[0].value, 1.5);
    let MetricData::Gauge(p) = &m[1].data else {
        panic!("expected a gauge")
    };
    assert!(p[0].value.is_nan(), "NaN values are stored as given");
    assert_eq!(store.stats().records, 3);
    store.flush().unwrap();
}
