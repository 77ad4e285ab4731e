//! Realistic telemetry generators: a graph of services calling each other
//! (trace trees with fan-out, log-normal durations, errors that propagate),
//! log lines from templates correlated with those traces, and metric series
//! (counters, histograms, gauges) over a configurable number of series.
//! Deterministic for a given seed.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1 as pm;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span, ResourceSpans, ScopeSpans, Span, Status};

/// A small, fast, seedable PRNG (SplitMix64): reproducible loads without a dependency.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, n).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Log-normal with the given median and spread (sigma of the log).
    pub fn log_normal(&mut self, median: f64, sigma: f64) -> f64 {
        // Box-Muller.
        let u1 = self.unit().max(1e-12);
        let u2 = self.unit();
        let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
        median * (sigma * z).exp()
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// One of `items`, chosen uniformly.
fn pick_str<'a>(r: &mut Rng, items: &[&'a str]) -> &'a str {
    items[r.below(items.len() as u64) as usize]
}

fn kv(k: &str, v: any_value::Value) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

fn s(k: &str, v: impl Into<String>) -> KeyValue {
    kv(k, any_value::Value::StringValue(v.into()))
}

fn i(k: &str, v: i64) -> KeyValue {
    kv(k, any_value::Value::IntValue(v))
}

/// One service of the simulated system and whom it calls.
struct Service {
    name: &'static str,
    operations: &'static [&'static str],
    /// Indices of services this one calls.
    calls: &'static [usize],
    median_ms: f64,
    error_rate: f64,
}

const SERVICES: &[Service] = &[
    Service {
        name: "frontend",
        operations: &["GET /", "GET /product/{id}", "POST /cart", "POST /checkout"],
        calls: &[1],
        median_ms: 4.0,
        error_rate: 0.002,
    },
    Service {
        name: "api-gateway",
        operations: &[
            "route /api/products",
            "route /api/cart",
            "route /api/checkout",
        ],
        calls: &[2, 3, 4],
        median_ms: 2.0,
        error_rate: 0.002,
    },
    Service {
        name: "catalog",
        operations: &["ListProducts", "GetProduct", "SearchProducts"],
        calls: &[6, 7],
        median_ms: 6.0,
        error_rate: 0.005,
    },
    Service {
        name: "cart",
        operations: &["GetCart", "AddItem", "EmptyCart"],
        calls: &[7],
        median_ms: 3.0,
        error_rate: 0.005,
    },
    Service {
        name: "checkout",
        operations: &["PlaceOrder", "PrepareOrder"],
        calls: &[3, 5, 6],
        median_ms: 12.0,
        error_rate: 0.01,
    },
    Service {
        name: "payment",
        operations: &["Charge", "Refund"],
        calls: &[],
        median_ms: 40.0,
        error_rate: 0.03,
    },
    Service {
        name: "postgres",
        operations: &["SELECT products", "INSERT orders", "UPDATE stock"],
        calls: &[],
        median_ms: 1.5,
        error_rate: 0.001,
    },
    Service {
        name: "redis",
        operations: &["GET", "SET", "HGETALL"],
        calls: &[],
        median_ms: 0.3,
        error_rate: 0.0005,
    },
];

/// Service names the generator uses, for queries.
pub fn service_names() -> Vec<&'static str> {
    SERVICES.iter().map(|s| s.name).collect()
}

fn resource(service: &str, instance: u64) -> Option<Resource> {
    Some(Resource {
        attributes: vec![
            s("service.name", service),
            s("service.version", "1.4.2"),
            s("service.instance.id", format!("{service}-{instance}")),
            s("host.name", format!("node-{}", instance % 4)),
            s("deployment.environment", "production"),
            s("telemetry.sdk.language", "rust"),
        ],
        ..Default::default()
    })
}

fn scope(name: &str) -> Option<InstrumentationScope> {
    Some(InstrumentationScope {
        name: name.into(),
        version: "0.1.0".into(),
        ..Default::default()
    })
}

/// Generates traces: each call of `batch` returns a request with about
/// `spans` spans, grouped by service as an SDK per service would send them.
pub struct TraceGen {
    rng: Rng,
    pub now_ns: fn() -> u64,
    /// Trace ids of recent traces, for correlated logs.
    pub recent: Vec<[u8; 16]>,
}

impl TraceGen {
    pub fn new(seed: u64) -> Self {
        TraceGen {
            rng: Rng::new(seed),
            now_ns: crate::loadgen::now_ns,
            recent: Vec::new(),
        }
    }

    fn id<const N: usize>(&mut self) -> [u8; N] {
        let mut b = [0u8; N];
        for chunk in b.chunks_mut(8) {
            let r = self.rng.next_u64().to_le_bytes();
            chunk.copy_from_slice(&r[..chunk.len()]);
        }
        if b.iter().all(|&x| x == 0) {
            b[0] = 1;
        }
        b
    }

    /// One trace rooted at the frontend; spans appended per service index.
    fn trace(&mut self, out: &mut [Vec<Span>]) {
        let trace_id: [u8; 16] = self.id();
        if self.recent.len() < 1024 {
            self.recent.push(trace_id);
        } else {
            let k = self.rng.below(1024) as usize;
            self.recent[k] = trace_id;
        }
        let end = (self.now_ns)();
        self.span(out, trace_id, None, 0, end, 0);
    }

    /// Emits a span of `svc` (and its children) ending at `end`; returns its start and error flag.
    fn span(
        &mut self,
        out: &mut [Vec<Span>],
        trace_id: [u8; 16],
        parent: Option<[u8; 8]>,
        svc: usize,
        end: u64,
        depth: usize,
    ) -> (u64, bool) {
        let service = &SERVICES[svc];
        let own_ns = (self.rng.log_normal(service.median_ms, 0.8) * 1e6) as u64 + 1_000;
        let span_id: [u8; 8] = self.id();
        let mut error = self.rng.unit() < service.error_rate;
        let mut children_ns = 0u64;
        let mut cursor = end.saturating_sub(own_ns / 4);
        if depth < 4 {
            for &callee in service.calls {
                // Fan-out: each downstream called 0–2 times.
                let n = if SERVICES[callee].calls.is_empty() {
                    1 + self.rng.below(2)
                } else {
                    1
                };
                for _ in 0..n {
                    // A CLIENT span in the caller wraps the callee's SERVER span.
                    let client_id: [u8; 8] = self.id();
                    let (child_start, child_err) =
                        self.span(out, trace_id, Some(client_id), callee, cursor, depth + 1);
                    let client_start = child_start.saturating_sub(200_000);
                    out[svc].push(Span {
                        trace_id: trace_id.to_vec(),
                        span_id: client_id.to_vec(),
                        parent_span_id: span_id.to_vec(),
                        name: format!("call {}", SERVICES[callee].name),
                        kind: span::SpanKind::Client as i32,
                        start_time_unix_nano: client_start,
                        end_time_unix_nano: cursor + 100_000,
                        attributes: vec![
                            s("rpc.system", "grpc"),
                            s("server.address", SERVICES[callee].name),
                            i("server.port", 8080),
                        ],
                        status: child_err.then(|| Status {
                            code: 2,
                            message: "downstream error".into(),
                        }),
                        ..Default::default()
                    });
                    children_ns += cursor.saturating_sub(client_start);
                    cursor = client_start.saturating_sub(50_000);
                    error |= child_err && self.rng.unit() < 0.5;
                }
            }
        }
        let start = end.saturating_sub(own_ns + children_ns);
        let op = *self.rng.pick(service.operations);
        let status_code = if error {
            500
        } else {
            *self.rng.pick(&[200i64, 200, 200, 201, 204, 304, 404])
        };
        let mut attrs = vec![
            s(
                "http.request.method",
                if op.starts_with("POST") {
                    "POST"
                } else {
                    "GET"
                },
            ),
            s("http.route", op),
            i("http.response.status_code", status_code),
            s("url.scheme", "http"),
            s("network.protocol.version", "1.1"),
        ];
        if service.name == "postgres" {
            attrs.push(s("db.system", "postgresql"));
            attrs.push(s("db.statement", format!("{op} WHERE id = $1")));
        }
        if depth == 0 {
            attrs.push(s(
                "user_agent.original",
                "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36",
            ));
            attrs.push(s("enduser.id", format!("user-{}", self.rng.below(50_000))));
        }
        let events = if error {
            vec![span::Event {
                time_unix_nano: end - 1_000,
                name: "exception".into(),
                attributes: vec![
                    s("exception.type", "TimeoutError"),
                    s(
                        "exception.message",
                        format!("{} timed out after {}ms", op, own_ns / 1_000_000),
                    ),
                ],
                ..Default::default()
            }]
        } else {
            vec![]
        };
        out[svc].push(Span {
            trace_id: trace_id.to_vec(),
            span_id: span_id.to_vec(),
            parent_span_id: parent.map(|p| p.to_vec()).unwrap_or_default(),
            name: op.into(),
            kind: span::SpanKind::Server as i32,
            start_time_unix_nano: start,
            end_time_unix_nano: end,
            attributes: attrs,
            events,
            status: error.then(|| Status {
                code: 2,
                message: "internal error".into(),
            }),
            ..Default::default()
        });
        (start, error)
    }

    /// A request of at least `min_spans` spans.
    pub fn batch(&mut self, min_spans: usize) -> ExportTraceServiceRequest {
        let mut per_service: Vec<Vec<Span>> = vec![Vec::new(); SERVICES.len()];
        let mut n = 0;
        while n < min_spans {
            self.trace(&mut per_service);
            n = per_service.iter().map(Vec::len).sum();
        }
        let instance = self.rng.below(3);
        ExportTraceServiceRequest {
            resource_spans: per_service
                .into_iter()
                .enumerate()
                .filter(|(_, v)| !v.is_empty())
                .map(|(k, spans)| ResourceSpans {
                    resource: resource(SERVICES[k].name, instance),
                    scope_spans: vec![ScopeSpans {
                        scope: scope("loadgen"),
                        spans,
                        ..Default::default()
                    }],
                    ..Default::default()
                })
                .collect(),
        }
    }
}

/// A term that appears in about one log line in 100,000: the "rare term"
/// of the search benchmark.
pub const RARE_TERM: &str = "xqzfloodgate";
/// A term in most lines: the "common term" of the search benchmark.
pub const COMMON_TERM: &str = "request";

const TEMPLATES: &[(i32, &str)] = &[
    (9, "request completed method={method} path={path} status={status} duration_ms={ms} user={user} bytes={bytes}"),
    (9, "request started method={method} path={path} remote_addr={ip}:{port} request_id={rid}"),
    (5, "cache lookup key=product:{id} hit={hit} latency_us={us} request served from {node}"),
    (13, "slow request path={path} duration_ms={ms} threshold_ms=250 user={user} request_id={rid}"),
    (17, "request failed path={path} error=\"connection reset by peer\" upstream={ip}:{port} attempt={attempt}"),
    (9, "order placed order_id=ord-{rid} user={user} items={items} total_cents={bytes} currency=EUR request ok"),
    (13, "retrying request to {node} after timeout attempt={attempt} backoff_ms={ms} request_id={rid}"),
];

/// Generates log requests from templates, with trace context from `TraceGen`.
pub struct LogGen {
    rng: Rng,
    counter: u64,
}

impl LogGen {
    pub fn new(seed: u64) -> Self {
        LogGen {
            rng: Rng::new(seed ^ 0x5151),
            counter: 0,
        }
    }

    fn line(&mut self, template: &str) -> String {
        let mut out = String::with_capacity(256);
        let mut rest = template;
        while let Some(open) = rest.find('{') {
            out.push_str(&rest[..open]);
            let Some(close) = rest[open..].find('}') else {
                break;
            };
            let field = &rest[open + 1..open + close];
            let r = &mut self.rng;
            match field {
                "method" => out.push_str(pick_str(r, &["GET", "GET", "POST", "PUT", "DELETE"])),
                "path" => out.push_str(pick_str(
                    r,
                    &[
                        "/api/products",
                        "/api/cart",
                        "/api/checkout",
                        "/api/users/me",
                        "/healthz",
                        "/api/search",
                    ],
                )),
                "status" => out.push_str(pick_str(
                    r,
                    &["200", "200", "200", "201", "204", "404", "500"],
                )),
                "ms" => out.push_str(&format!("{}", r.log_normal(30.0, 1.0) as u64)),
                "us" => out.push_str(&format!("{}", r.below(900) + 20)),
                "user" => out.push_str(&format!("u{}", r.below(50_000))),
                "bytes" => out.push_str(&format!("{}", r.below(100_000))),
                "ip" => out.push_str(&format!(
                    "10.{}.{}.{}",
                    r.below(4),
                    r.below(256),
                    r.below(256)
                )),
                "port" => out.push_str(&format!("{}", 30_000 + r.below(30_000))),
                "rid" => out.push_str(&format!("{:016x}", r.next_u64())),
                "id" => out.push_str(&format!("{}", r.below(10_000))),
                "hit" => out.push_str(pick_str(r, &["true", "true", "false"])),
                "node" => out.push_str(pick_str(
                    r,
                    &["cache-1", "cache-2", "db-primary", "db-replica"],
                )),
                "attempt" => out.push_str(&format!("{}", 1 + r.below(3))),
                "items" => out.push_str(&format!("{}", 1 + r.below(9))),
                other => out.push_str(other),
            }
            rest = &rest[open + close + 1..];
        }
        out.push_str(rest);
        out
    }

    /// A request of `n` log records spread over the services.
    pub fn batch(&mut self, n: usize, traces: &[[u8; 16]]) -> ExportLogsServiceRequest {
        let mut per_service: Vec<Vec<LogRecord>> = vec![Vec::new(); SERVICES.len()];
        let now = crate::loadgen::now_ns();
        for _ in 0..n {
            self.counter += 1;
            let svc = self.rng.below(SERVICES.len() as u64) as usize;
            let (sev, template) = *self.rng.pick(TEMPLATES);
            let mut body = self.line(template);
            if self.counter % 100_000 == 7 {
                body.push(' ');
                body.push_str(RARE_TERM);
            }
            let (trace_id, span_id) = if !traces.is_empty() && self.rng.unit() < 0.6 {
                (
                    self.rng.pick(traces).to_vec(),
                    self.rng.next_u64().max(1).to_le_bytes().to_vec(),
                )
            } else {
                (vec![], vec![])
            };
            per_service[svc].push(LogRecord {
                time_unix_nano: now - self.rng.below(1_000_000),
                observed_time_unix_nano: now,
                severity_number: sev,
                severity_text: crate::model::log::severity_name(sev).into(),
                body: Some(AnyValue {
                    value: Some(any_value::Value::StringValue(body)),
                }),
                attributes: vec![
                    s(
                        "code.function",
                        *self
                            .rng
                            .pick(&["handle_request", "serve", "process_order", "lookup"]),
                    ),
                    i("thread.id", self.rng.below(16) as i64),
                ],
                trace_id,
                span_id,
                ..Default::default()
            });
        }
        let instance = self.rng.below(3);
        ExportLogsServiceRequest {
            resource_logs: per_service
                .into_iter()
                .enumerate()
                .filter(|(_, v)| !v.is_empty())
                .map(|(k, log_records)| ResourceLogs {
                    resource: resource(SERVICES[k].name, instance),
                    scope_logs: vec![ScopeLogs {
                        scope: scope("loadgen"),
                        log_records,
                        ..Default::default()
                    }],
                    ..Default::default()
                })
                .collect(),
        }
    }
}

/// Generates metric exports over a fixed set of series. Counters and
/// histograms are cumulative and grow between exports, as an SDK's are.
pub struct MetricGen {
    rng: Rng,
    series: usize,
    /// Cumulative state per counter series.
    counters: Vec<f64>,
    start_ns: u64,
    cursor: usize,
}

/// Series per "target" (service instance) in the generated set: a counter
/// per route/code, a histogram per route, and gauges.
const ROUTES: &[&str] = &[
    "/api/products",
    "/api/cart",
    "/api/checkout",
    "/api/users",
    "/api/search",
];
const CODES: &[&str] = &["200", "404", "500"];

impl MetricGen {
    pub fn new(seed: u64, series: usize) -> Self {
        MetricGen {
            rng: Rng::new(seed ^ 0xA11CE),
            series: series.max(1),
            counters: vec![0.0; series.max(1)],
            start_ns: crate::loadgen::now_ns(),
            cursor: 0,
        }
    }

    /// A request carrying `points` data points (counter points for the next
    /// `points` series of the set, cycling), at the current time.
    pub fn batch(&mut self, points: usize) -> ExportMetricsServiceRequest {
        let now = crate::loadgen::now_ns();
        let mut counters: Vec<pm::NumberDataPoint> = Vec::with_capacity(points);
        let mut gauges: Vec<pm::NumberDataPoint> = Vec::new();
        for _ in 0..points {
            let k = self.cursor % self.series;
            self.cursor += 1;
            let route = ROUTES[k % ROUTES.len()];
            let code = CODES[(k / ROUTES.len()) % CODES.len()];
            let instance = k / (ROUTES.len() * CODES.len());
            if k % 10 == 9 {
                gauges.push(pm::NumberDataPoint {
                    attributes: vec![s("instance_id", format!("i-{instance}")), s("pool", route)],
                    time_unix_nano: now,
                    value: Some(pm::number_data_point::Value::AsDouble(
                        20.0 + self.rng.unit() * 60.0,
                    )),
                    ..Default::default()
                });
                continue;
            }
            self.counters[k] += (self.rng.below(20) + if code == "200" { 10 } else { 0 }) as f64;
            counters.push(pm::NumberDataPoint {
                attributes: vec![
                    s("route", route),
                    s("code", code),
                    s("instance_id", format!("i-{instance}")),
                ],
                start_time_unix_nano: self.start_ns,
                time_unix_nano: now,
                value: Some(pm::number_data_point::Value::AsDouble(self.counters[k])),
                ..Default::default()
            });
        }
        let mut metrics = vec![pm::Metric {
            name: "http.server.requests".into(),
            unit: "1".into(),
            description: "requests served".into(),
            data: Some(pm::metric::Data::Sum(pm::Sum {
                data_points: counters,
                aggregation_temporality: pm::AggregationTemporality::Cumulative as i32,
                is_monotonic: true,
            })),
            ..Default::default()
        }];
        if !gauges.is_empty() {
            metrics.push(pm::Metric {
                name: "process.cpu.utilization".into(),
                unit: "%".into(),
                data: Some(pm::metric::Data::Gauge(pm::Gauge {
                    data_points: gauges,
                })),
                ..Default::default()
            });
        }
        ExportMetricsServiceRequest {
            resource_metrics: vec![pm::ResourceMetrics {
                resource: resource("loadgen-metrics", 0),
                scope_metrics: vec![pm::ScopeMetrics {
                    scope: scope("loadgen"),
                    metrics,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }
}

/// Counts the records of a request: spans, data points or log records.
pub fn count_traces(r: &ExportTraceServiceRequest) -> usize {
    r.resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len())
        .sum()
}

pub fn count_logs(r: &ExportLogsServiceRequest) -> usize {
    r.resource_logs
        .iter()
        .flat_map(|r| &r.scope_logs)
        .map(|s| s.log_records.len())
        .sum()
}

pub fn count_metrics(r: &ExportMetricsServiceRequest) -> usize {
    r.resource_metrics
        .iter()
        .flat_map(|r| &r.scope_metrics)
        .flat_map(|s| &s.metrics)
        .map(|m| match &m.data {
            Some(pm::metric::Data::Sum(s)) => s.data_points.len(),
            Some(pm::metric::Data::Gauge(g)) => g.data_points.len(),
            Some(pm::metric::Data::Histogram(h)) => h.data_points.len(),
            _ => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traces_are_valid_trees() {
        let mut g = TraceGen::new(1);
        let req = g.batch(500);
        let spans: Vec<&Span> = req
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
            .collect();
        assert!(spans.len() >= 500);
        let ids: std::collections::HashSet<_> =
            spans.iter().map(|s| (&s.trace_id, &s.span_id)).collect();
        for s in &spans {
            assert_eq!(s.trace_id.len(), 16);
            assert!(s.end_time_unix_nano >= s.start_time_unix_nano);
            if !s.parent_span_id.is_empty() {
                assert!(
                    ids.contains(&(&s.trace_id, &s.parent_span_id)),
                    "parent of {} exists",
                    s.name
                );
            }
        }
        // Same seed, same load.
        assert_eq!(count_traces(&TraceGen::new(1).batch(500)), spans.len());
    }

    #[test]
    fn logs_have_realistic_sizes() {
        let mut g = LogGen::new(1);
        let req = g.batch(1000, &[[7; 16]]);
        assert_eq!(count_logs(&req), 1000);
        let lens: Vec<usize> = req
            .resource_logs
            .iter()
            .flat_map(|r| &r.scope_logs)
            .flat_map(|s| &s.log_records)
            .map(|l| match &l.body.as_ref().unwrap().value {
                Some(any_value::Value::StringValue(s)) => s.len(),
                _ => 0,
            })
            .collect();
        let avg = lens.iter().sum::<usize>() / lens.len();
        assert!((60..=300).contains(&avg), "average body {avg} bytes");
    }

    #[test]
    fn metric_counters_grow() {
        let mut g = MetricGen::new(1, 30);
        let a = g.batch(30);
        let b = g.batch(30);
        assert_eq!(count_metrics(&a), 30);
        let first = |r: &ExportMetricsServiceRequest| match &r.resource_metrics[0].scope_metrics[0]
            .metrics[0]
            .data
        {
            Some(pm::metric::Data::Sum(s)) => match s.data_points[0].value {
                Some(pm::number_data_point::Value::AsDouble(v)) => v,
                _ => 0.0,
            },
            _ => 0.0,
        };
        assert!(first(&b) >= first(&a));
    }
}
