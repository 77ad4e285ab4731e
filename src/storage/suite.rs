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
    use super::logs::*;
    use std::ops::Bound;

    let all = LogQuery {
        limit: 100,
        ..Default::default()
    };
    assert!(store.query(&all).unwrap().is_empty());
    let mut tail = store.subscribe();
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
    store.flush().unwrap();
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
    // Live tail saw the three records in write order.
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let tailed: Vec<u64> = rt.block_on(async {
        let mut out = Vec::new();
        for _ in 0..3 {
            match tail.next().await {
                Some(TailEvent::Record(r)) => out.push(r.record.time_ns),
                other => panic!("unexpected tail event {other:?}"),
            }
        }
        out
    });
    assert_eq!(tailed, vec![10, 30, 20]);

    // Search: a richer batch.
    let mut recs = Vec::new();
    let sev = [(5, "DEBUG"), (9, "INFO"), (13, "WARN"), (17, "ERROR")];
    for i in 0..40u64 {
        let (n, text) = sev[(i % 4) as usize];
        let body = match i % 5 {
            0 => "connection reset by peer".to_string(),
            1 => format!("request {i} timeout after 30s"),
            2 => "reset the connection pool".to_string(),
            3 => format!("user u{i} logged in"),
            _ => "Cache MISS for key".to_string(),
        };
        let mut r = log(
            1_000 + i * 10,
            if i % 2 == 0 { "checkout" } else { "cart" },
            &body,
            None,
        );
        r.severity_number = n;
        r.severity_text = text.into();
        r.attributes = vec![
            (
                "http.status_code".into(),
                AnyValue::Int(if i % 3 == 0 { 500 } else { 200 }),
            ),
            (
                "user".into(),
                AnyValue::Map(vec![("id".into(), AnyValue::String(format!("u{}", i % 7)))]),
            ),
        ];
        if i % 8 == 0 {
            r.trace_id = Some(TraceId([9; 16]));
            r.span_id = Some(SpanId([(i / 8 + 1) as u8; 8]));
        }
        recs.push(r);
    }
    let truth = recs.clone();
    store.write(2, recs).unwrap();
    store.flush().unwrap();
    let window = |f: LogFilter| LogSearch::new(f, 1_000, 2_000, MAX_PAGE);
    let times = |f: LogFilter| -> Vec<u64> {
        store
            .search(&window(f))
            .unwrap()
            .records
            .into_iter()
            .map(|r| r.record.time_ns)
            .collect()
    };
    let expect = |pred: &dyn Fn(&LogRecord) -> bool| -> Vec<u64> {
        let mut v: Vec<u64> = truth
            .iter()
            .filter(|r| pred(r))
            .map(|r| r.time_ns)
            .collect();
        v.reverse();
        v
    };
    let body = |r: &LogRecord| r.body.to_text();
    let term = |field: LogField, v: &str| LogFilter::Term {
        field,
        value: v.into(),
    };
    assert_eq!(
        times(LogFilter::Text("timeout".into())),
        expect(&|r| body(r).contains("timeout"))
    );
    assert_eq!(
        times(LogFilter::Text("TIMEOUT".into())).len(),
        8,
        "case-insensitive"
    );
    assert_eq!(
        times(LogFilter::Phrase("connection reset".into())),
        expect(&|r| body(r).contains("connection reset"))
    );
    assert_eq!(
        times(LogFilter::Text("reset".into())).len(),
        16,
        "a word matches wherever it occurs"
    );
    assert_eq!(
        times(term(LogField::Severity, "error")),
        expect(&|r| r.severity_number == 17)
    );
    assert_eq!(
        times(term(LogField::Severity, "Warn")),
        expect(&|r| r.severity_number == 13)
    );
    assert_eq!(
        times(term(LogField::Service, "cart")),
        expect(&|r| r.service_name() == "cart")
    );
    assert!(
        times(term(LogField::Service, "CART")).is_empty(),
        "service is exact"
    );
    assert_eq!(
        times(term(LogField::Attribute("http.status_code".into()), "500")),
        expect(&|r| (r.time_ns - 1_000) / 10 % 3 == 0)
    );
    assert_eq!(
        times(term(LogField::Attribute("user.id".into()), "u3")).len(),
        6
    );
    assert_eq!(
        times(term(LogField::Resource("service.name".into()), "checkout")).len(),
        20
    );
    assert_eq!(times(term(LogField::TraceId, &"09".repeat(16))).len(), 5);
    assert_eq!(times(term(LogField::SpanId, &"02".repeat(8))), vec![1_080]);
    assert_eq!(
        times(LogFilter::Range {
            field: NumField::SeverityNumber,
            lower: Bound::Included(13),
            upper: Bound::Unbounded,
        }),
        expect(&|r| r.severity_number >= 13)
    );
    assert_eq!(
        times(LogFilter::Range {
            field: NumField::Time,
            lower: Bound::Excluded(1_100),
            upper: Bound::Included(1_130),
        }),
        vec![1_130, 1_120, 1_110]
    );
    assert_eq!(
        times(LogFilter::And(vec![
            term(LogField::Service, "checkout"),
            LogFilter::Not(Box::new(term(LogField::Severity, "debug"))),
        ])),
        expect(&|r| r.service_name() == "checkout" && r.severity_number != 5)
    );
    assert_eq!(
        times(LogFilter::Or(vec![
            LogFilter::Text("timeout".into()),
            LogFilter::Phrase("cache miss".into()),
        ])),
        expect(&|r| body(r).contains("timeout") || body(r).contains("MISS"))
    );
    assert!(
        times(LogFilter::Text("!!".into())).is_empty(),
        "no words match nothing"
    );
    assert!(
        times(LogFilter::Phrase("reset connection".into())).is_empty(),
        "order matters"
    );

    // Count and histogram cover the whole range; pagination returns every
    // record once.
    let mut s = window(LogFilter::All);
    s.limit = 7;
    s.buckets = Some(Buckets {
        start_ns: 1_000,
        step_ns: 100,
        count: 10,
    });
    let mut seen = Vec::new();
    let first = store.search(&s).unwrap();
    assert_eq!(first.total, 40);
    assert_eq!(first.histogram.len(), 10);
    assert_eq!(first.histogram.iter().flatten().sum::<u64>(), 40);
    // Bucket 0 holds times 1000..1090: i = 0..9, classes cycle debug/info/warn/error.
    assert_eq!(first.histogram[0], [0, 0, 3, 3, 2, 2, 0]);
    let mut page = first;
    loop {
        seen.extend(page.records.iter().map(|r| r.id));
        assert!(page.records.len() <= 7);
        match page.next_cursor {
            Some(c) => {
                s.cursor = Some(c);
                page = store.search(&s).unwrap();
                assert_eq!(page.total, 40, "the total ignores the cursor");
            }
            None => break,
        }
    }
    let mut dedup = seen.clone();
    dedup.sort();
    dedup.dedup();
    assert_eq!(seen.len(), 40);
    assert_eq!(dedup.len(), 40, "no record twice across pages");
    // Equal timestamps are ordered by id and still paginate exactly.
    store
        .write(3, (0..5).map(|_| log(5_000, "same", "tie", None)).collect())
        .unwrap();
    store.flush().unwrap();
    let mut s = LogSearch::new(term(LogField::Service, "same"), 0, 10_000, 2);
    let mut ids = Vec::new();
    loop {
        let p = store.search(&s).unwrap();
        ids.extend(p.records.iter().map(|r| r.id));
        match p.next_cursor {
            Some(c) => s.cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(
        ids,
        (0..5).rev().map(|i| record_id(3, i)).collect::<Vec<_>>()
    );
    // Writing a seq again replaces it (WAL replay).
    store
        .write(3, (0..5).map(|_| log(5_000, "same", "tie", None)).collect())
        .unwrap();
    store.flush().unwrap();
    assert_eq!(
        store
            .search(&LogSearch::new(
                term(LogField::Service, "same"),
                0,
                10_000,
                10
            ))
            .unwrap()
            .total,
        5
    );
    // Logs of a trace and the spans that have logs.
    assert_eq!(
        store.span_ids_with_logs(&TraceId([9; 16])).unwrap(),
        (1..=5u8).map(|i| SpanId([i; 8])).collect::<Vec<_>>()
    );
    assert!(store
        .span_ids_with_logs(&TraceId([1; 16]))
        .unwrap()
        .is_empty());
    // An empty or reversed range finds nothing.
    assert_eq!(
        store
            .search(&LogSearch::new(LogFilter::All, 2_000, 1_000, 10))
            .unwrap()
            .total,
        0
    );
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
