//! The shared behaviour suite every implementation of a storage trait must
//! pass. Each function takes a fresh, empty store.

use std::sync::Arc;

use super::traces::types::{OperationInfo, RedQuery, TraceSearch, MINUTE_NS};
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

/// Trace id byte of the sample's checkout trace (frontend → backend).
pub const CHECKOUT: u8 = 0x11;
/// Trace id byte of the sample's health-check trace (backend only).
pub const HEALTH: u8 = 0x12;
const MS: u64 = 1_000_000;

/// Writes the sample used by [`trace_store_queries`]: a checkout trace
/// (frontend server span → frontend client span → backend server span with
/// an error) whose backend span arrives first, in its own batch, and again
/// as a duplicate; and a health-check trace of the backend one second
/// earlier, on a resource with `deployment.environment=prod`.
pub fn write_sample(store: &dyn TraceStore, now: u64) {
    let mut root = span(CHECKOUT, 1, now, "frontend");
    root.name = "GET /checkout".into();
    root.end_time_ns = now + 10 * MS;
    root.attributes = vec![("http.route".into(), AnyValue::String("/checkout".into()))];
    let mut client = span(CHECKOUT, 2, now + MS, "frontend");
    client.name = "call backend".into();
    client.kind = SpanKind::Client;
    client.parent_span_id = Some(SpanId([1; 8]));
    client.end_time_ns = now + 9 * MS;
    let mut server = span(CHECKOUT, 3, now + 2 * MS, "backend");
    server.name = "POST /charge".into();
    server.parent_span_id = Some(SpanId([2; 8]));
    server.end_time_ns = now + 7 * MS;
    server.attributes = vec![("http.status_code".into(), AnyValue::Int(500))];
    server.status = Status {
        code: StatusCode::Error,
        message: "declined".into(),
    };
    server.events = vec![SpanEvent {
        time_ns: now + 3 * MS,
        name: "exception".into(),
        attributes: vec![(
            "exception.type".into(),
            AnyValue::String("ValueError".into()),
        )],
        dropped_attributes_count: 0,
    }];
    let mut health = span(HEALTH, 1, now - 1_000 * MS, "backend");
    health.name = "GET /health".into();
    health.end_time_ns = health.start_time_ns + MS;
    health.resource = Arc::new(Resource {
        attributes: vec![
            ("service.name".into(), AnyValue::String("backend".into())),
            (
                "deployment.environment".into(),
                AnyValue::String("prod".into()),
            ),
        ],
        ..Default::default()
    });
    store.write(1, vec![server.clone(), health]).unwrap();
    store.write(2, vec![root, client, server]).unwrap();
}

/// Checks everything the sample must answer.
pub fn check_sample(store: &dyn TraceStore, now: u64) {
    let checkout = TraceId([CHECKOUT; 16]);
    let health = TraceId([HEALTH; 16]);
    let t = store.trace(&checkout).unwrap();
    assert_eq!(t.len(), 3, "the duplicate is stored once");
    assert_eq!(t[0].parent_span_id, None);
    assert_eq!(t[1].parent_span_id, Some(SpanId([1; 8])));
    assert_eq!(t[2].parent_span_id, Some(SpanId([2; 8])));
    assert_eq!(t[2].events[0].name, "exception");
    assert_eq!(t[2].status.message, "declined");
    assert_eq!(store.stats().records, 4);

    let sum = store.summary(&checkout).unwrap().expect("summary");
    assert_eq!(sum.root_service, "frontend");
    assert_eq!(sum.root_name, "GET /checkout");
    assert!(sum.root_known, "the root arrived after its descendant");
    assert_eq!((sum.start_ns, sum.end_ns), (now, now + 10 * MS));
    assert_eq!((sum.span_count, sum.error_count), (3, 1));
    assert_eq!(
        sum.services,
        vec!["backend".to_string(), "frontend".to_string()]
    );
    assert_eq!(store.summary(&TraceId([0x99; 16])).unwrap(), None);

    let base = TraceSearch {
        start_ns: now - 3_600_000 * MS,
        end_ns: now + 3_600_000 * MS,
        limit: 20,
        ..Default::default()
    };
    let search = |f: &dyn Fn(&mut TraceSearch)| {
        let mut q = base.clone();
        f(&mut q);
        let out = store.search(&q).unwrap();
        assert!(out.complete);
        out.traces
            .into_iter()
            .map(|s| s.trace_id.0[0])
            .collect::<Vec<_>>()
    };
    let backend = || Some("backend".to_string());
    assert_eq!(search(&|_| {}), vec![CHECKOUT, HEALTH], "newest first");
    assert_eq!(search(&|q| q.service = backend()), vec![CHECKOUT, HEALTH]);
    assert_eq!(
        search(&|q| q.service = Some("nope".into())),
        Vec::<u8>::new()
    );
    assert_eq!(
        search(&|q| {
            q.service = backend();
            q.operation = Some("GET /health".into())
        }),
        vec![HEALTH]
    );
    assert_eq!(
        search(&|q| q.operation = Some("call backend".into())),
        vec![CHECKOUT],
        "operation without service"
    );
    assert_eq!(
        search(&|q| q.attributes = vec![("http.status_code".into(), "500".into())]),
        vec![CHECKOUT]
    );
    assert_eq!(
        search(&|q| {
            q.service = backend();
            q.attributes = vec![("deployment.environment".into(), "prod".into())]
        }),
        vec![HEALTH],
        "resource attribute with service"
    );
    assert_eq!(
        search(&|q| q.attributes = vec![("deployment.environment".into(), "prod".into())]),
        vec![HEALTH],
        "resource attribute alone"
    );
    assert_eq!(
        search(&|q| {
            q.service = Some("frontend".into());
            q.attributes = vec![("http.status_code".into(), "500".into())]
        }),
        Vec::<u8>::new(),
        "filters apply to one span"
    );
    assert_eq!(
        search(&|q| q.min_duration_ns = Some(6 * MS)),
        vec![CHECKOUT]
    );
    assert_eq!(
        search(&|q| {
            q.service = backend();
            q.min_duration_ns = Some(6 * MS)
        }),
        Vec::<u8>::new()
    );
    assert_eq!(
        search(&|q| {
            q.service = backend();
            q.max_duration_ns = Some(2 * MS)
        }),
        vec![HEALTH]
    );
    assert_eq!(search(&|q| q.error_only = true), vec![CHECKOUT]);
    assert_eq!(search(&|q| q.kind = Some(SpanKind::Client)), vec![CHECKOUT]);
    assert_eq!(search(&|q| q.start_ns = now), vec![CHECKOUT]);
    assert_eq!(search(&|q| q.end_ns = now), vec![HEALTH]);
    assert_eq!(
        search(&|q| {
            q.service = backend();
            q.limit = 1
        }),
        vec![CHECKOUT]
    );
    let found = store
        .search(&TraceSearch {
            service: backend(),
            ..base.clone()
        })
        .unwrap();
    assert_eq!(found.traces[1].trace_id, health);
    assert_eq!(found.traces[1].span_count, 1);

    assert_eq!(
        store.services(10).unwrap(),
        vec!["backend".to_string(), "frontend".to_string()]
    );
    assert_eq!(store.services(1).unwrap().len(), 1);
    assert_eq!(
        store.operations("frontend", 10).unwrap(),
        vec![
            OperationInfo {
                name: "GET /checkout".into(),
                kind: SpanKind::Server
            },
            OperationInfo {
                name: "call backend".into(),
                kind: SpanKind::Client
            },
        ]
    );
    assert!(store.operations("nope", 10).unwrap().is_empty());

    let deps = store
        .dependencies(now - 10 * MINUTE_NS, now + 10 * MINUTE_NS)
        .unwrap();
    assert_eq!(deps.len(), 1, "{deps:?}");
    assert_eq!(
        (deps[0].caller.as_str(), deps[0].callee.as_str()),
        ("frontend", "backend")
    );
    assert_eq!((deps[0].calls, deps[0].errors), (1, 1));
    assert!(store
        .dependencies(now + 10 * MINUTE_NS, now + 20 * MINUTE_NS)
        .unwrap()
        .is_empty());

    let rows = store
        .red(&RedQuery {
            service: Some("backend".into()),
            start_ns: now - 10 * MINUTE_NS,
            end_ns: now + 10 * MINUTE_NS,
            max_rows: 1000,
        })
        .unwrap();
    let total = |op: Option<&str>| {
        rows.iter()
            .filter(|r| r.operation.as_deref() == op)
            .fold((0, 0, 0), |(c, e, n), r| {
                (c + r.agg.count, e + r.agg.errors, n + r.agg.hist.count())
            })
    };
    assert!(rows.iter().all(|r| r.service == "backend"));
    assert_eq!(total(None), (2, 1, 2), "service row: both server spans");
    assert_eq!(total(Some("POST /charge")), (1, 1, 1));
    assert_eq!(total(Some("GET /health")), (1, 0, 1));
    let charge = rows
        .iter()
        .find(|r| r.operation.as_deref() == Some("POST /charge"))
        .unwrap();
    assert_eq!(charge.agg.sum_ns, 5 * MS);
    let p50 = charge.agg.hist.quantile(0.5).unwrap() as f64;
    assert!((p50 - 5e6).abs() / 5e6 < 0.07, "{p50}");
    let all = store
        .red(&RedQuery {
            service: None,
            start_ns: now - 10 * MINUTE_NS,
            end_ns: now + 10 * MINUTE_NS,
            max_rows: 1000,
        })
        .unwrap();
    let frontend: u64 = all
        .iter()
        .filter(|r| r.service == "frontend" && r.operation.is_none())
        .map(|r| r.agg.count)
        .sum();
    assert_eq!(frontend, 1, "client spans are not requests of the service");
    assert!(all
        .iter()
        .any(|r| r.operation.as_deref() == Some("call backend")));
}

/// Search, summaries, services, operations, dependencies and RED figures.
pub fn trace_store_queries(store: &dyn TraceStore) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    write_sample(store, now);
    check_sample(store, now);
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

/// Span scans (SQL's `spans` table): heads and full spans, filters by time,
/// service, operation and trace, the limit, and stopping early.
pub fn span_scans(store: &dyn TraceStore) {
    use super::traces::types::{SpanChunk, SpanScan};
    let base = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        - 3_600 * 1_000_000_000;
    // 3 traces × 4 spans; services a/b alternate, operations op-1..op-4.
    let mut spans = Vec::new();
    for t in 1..=3u8 {
        for s in 1..=4u8 {
            let svc = if s % 2 == 0 { "b" } else { "a" };
            spans.push(span(t, s, base + (t as u64 * 10 + s as u64) * MS, svc));
        }
    }
    store.write(1, spans).unwrap();
    store.flush().unwrap();
    let run = |q: &SpanScan| {
        let mut out: Vec<(u8, u8, String, String, bool)> = Vec::new();
        let stats = store
            .scan_spans(q, &mut |c| {
                match c {
                    SpanChunk::Heads(h) => out.extend(
                        h.into_iter()
                            .map(|h| (h.trace_id.0[0], h.span_id.0[0], h.service, h.name, false)),
                    ),
                    SpanChunk::Spans(s) => out.extend(s.into_iter().map(|s| {
                        let svc = s.service_name().to_string();
                        (s.trace_id.0[0], s.span_id.0[0], svc, s.name, true)
                    })),
                }
                true
            })
            .unwrap();
        out.sort();
        assert_eq!(stats.rows as usize, out.len(), "{q:?}");
        out
    };
    let all = SpanScan {
        start_ns: 0,
        end_ns: u64::MAX,
        ..Default::default()
    };
    let got = run(&all);
    assert_eq!(got.len(), 12);
    assert!(got.iter().all(|g| !g.4), "heads unless full");
    assert_eq!(got[0], (1, 1, "a".into(), "op-1".into(), false));
    let full = run(&SpanScan {
        full: true,
        ..all.clone()
    });
    assert_eq!(full.len(), 12);
    assert!(full.iter().all(|g| g.4));
    let b = run(&SpanScan {
        service: Some("b".into()),
        ..all.clone()
    });
    assert_eq!(b.len(), 6);
    assert!(b.iter().all(|g| g.2 == "b"));
    let op = run(&SpanScan {
        service: Some("a".into()),
        name: Some("op-3".into()),
        ..all.clone()
    });
    assert_eq!(
        op.iter().map(|g| g.0).collect::<Vec<_>>(),
        vec![1, 2, 3],
        "one span per trace"
    );
    let window = run(&SpanScan {
        start_ns: base + 22 * MS,
        end_ns: base + 31 * MS,
        ..all.clone()
    });
    assert_eq!(
        window.iter().map(|g| (g.0, g.1)).collect::<Vec<_>>(),
        vec![(2, 2), (2, 3), (2, 4)],
        "start in [start, end)"
    );
    let trace = run(&SpanScan {
        trace_id: Some(TraceId([3; 16])),
        full: true,
        ..all.clone()
    });
    assert_eq!(trace.len(), 4);
    assert!(trace.iter().all(|g| g.0 == 3));
    let none = run(&SpanScan {
        service: Some("nobody".into()),
        ..all.clone()
    });
    assert!(none.is_empty());
    let limited = run(&SpanScan {
        limit: Some(5),
        ..all.clone()
    });
    assert_eq!(limited.len(), 5);
    // A sink that stops after the first chunk gets no more.
    let mut chunks = 0;
    store
        .scan_spans(&all, &mut |_| {
            chunks += 1;
            false
        })
        .unwrap();
    assert_eq!(chunks, 1);
}

/// Log scans (SQL's `logs` table): records, counts, filters, the limit.
pub fn log_scans(store: &dyn LogStore) {
    use super::logs::{LogChunk, LogField, LogFilter, LogScan};
    let recs: Vec<LogRecord> = (0..50u64)
        .map(|i| {
            let svc = if i % 5 == 0 { "db" } else { "api" };
            let body = if i % 10 == 0 {
                "disk full"
            } else {
                "request served"
            };
            log(1_000 + i, svc, body, None)
        })
        .collect();
    store.write(1, recs).unwrap();
    store.flush().unwrap();
    let run = |q: &LogScan| {
        let (mut records, mut counted) = (Vec::new(), 0u64);
        let stats = store
            .scan(q, &mut |c| {
                match c {
                    LogChunk::Records(r) => records.extend(r),
                    LogChunk::Count(n) => counted += n,
                }
                true
            })
            .unwrap();
        (records, counted, stats)
    };
    let all = LogScan {
        filter: LogFilter::All,
        start_ns: 0,
        end_ns: u64::MAX,
        limit: None,
        count_only: false,
    };
    let (r, c, stats) = run(&all);
    assert_eq!((r.len(), c), (50, 0));
    assert_eq!(stats.rows, 50);
    let mut times: Vec<u64> = r.iter().map(|r| r.time_ns).collect();
    times.sort();
    assert_eq!(
        times,
        (1_000..1_050).collect::<Vec<_>>(),
        "each record once"
    );
    let (r, c, _) = run(&LogScan {
        count_only: true,
        ..all.clone()
    });
    assert_eq!((r.len(), c), (0, 50));
    let db = LogScan {
        filter: LogFilter::Term {
            field: LogField::Service,
            value: "db".into(),
        },
        ..all.clone()
    };
    let (r, _, _) = run(&db);
    assert_eq!(r.len(), 10);
    assert!(r.iter().all(|r| r.service_name() == "db"));
    let (_, c, _) = run(&LogScan {
        filter: LogFilter::And(vec![db.filter.clone(), LogFilter::Text("disk".into())]),
        count_only: true,
        ..all.clone()
    });
    assert_eq!(c, 5);
    let (r, _, _) = run(&LogScan {
        start_ns: 1_010,
        end_ns: 1_020,
        ..all.clone()
    });
    assert_eq!(r.len(), 10, "time in [start, end)");
    let (r, _, _) = run(&LogScan {
        limit: Some(7),
        ..all.clone()
    });
    assert_eq!(r.len(), 7);
    let (_, c, _) = run(&LogScan {
        limit: Some(7),
        count_only: true,
        ..all.clone()
    });
    assert_eq!(c, 7);
}

fn metric_scan_base() -> u64 {
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    (now_s - 24 * 3_600) / (2 * 3_600) * (2 * 3_600) * S
}

/// Metric scans (SQL's `metrics` table): every sample once, by time
/// partition, within the requested range.
pub fn metric_scans(store: &dyn MetricStore) {
    let base = metric_scan_base();
    // One sample every 10 minutes for 10 hours, of two series.
    let mut metrics = Vec::new();
    for i in 0..60u64 {
        metrics.push(gauge("scan_a", base + i * 600 * S, i as f64));
        metrics.push(gauge("scan_b", base + i * 600 * S, -(i as f64)));
    }
    store.write(1, metrics).unwrap();
    store.flush().unwrap();
    metric_scans_again(store);
}

/// The checks of [`metric_scans`] over a store that already holds its data.
pub fn metric_scans_again(store: &dyn MetricStore) {
    const H: u64 = 3_600 * S;
    let base = metric_scan_base();
    let run = |matchers: &[LabelMatcher], start: i64, end: i64| {
        let mut got: Vec<(String, i64, f64)> = Vec::new();
        let stats = store
            .scan(matchers, start, end, &mut |series| {
                for s in series {
                    let name = s.metric_name().to_string();
                    got.extend(s.samples.iter().map(|p| (name.clone(), p.t_ms, p.v)));
                }
                true
            })
            .unwrap();
        got.sort_by(|a, b| a.partial_cmp(b).unwrap());
        (got, stats)
    };
    let ms = |ns: u64| (ns / 1_000_000) as i64;
    let (got, stats) = run(&[eq(METRIC_NAME, "scan_a")], 0, i64::MAX);
    assert_eq!(got.len(), 60);
    assert_eq!(
        got[59],
        ("scan_a".to_string(), ms(base + 59 * 600 * S), 59.0)
    );
    assert_eq!(stats.rows, 60);
    assert_eq!(stats.partitions, 5, "ten hours in 2 h partitions");
    let (got, _) = run(
        &[matcher(METRIC_NAME, MatchOp::Regex, "scan_.*")],
        0,
        i64::MAX,
    );
    assert_eq!(got.len(), 120);
    // Two hours starting on the hour: 12 samples of one series, inclusive
    // bounds in milliseconds.
    let (got, stats) = run(
        &[eq(METRIC_NAME, "scan_b")],
        ms(base + 3 * H),
        ms(base + 5 * H) - 1,
    );
    assert_eq!(got.len(), 12);
    assert_eq!(stats.partitions, 2);
    assert!(got.iter().all(|g| g.0 == "scan_b"));
    let (got, _) = run(&[eq(METRIC_NAME, "nothing")], 0, i64::MAX);
    assert!(got.is_empty());
}
