//! Conversion of validated OTLP requests into the model.
//!
//! Infallible: it runs on requests that passed `validate` (or were replayed
//! from the WAL after passing it), and skips defensively anything that still
//! does not fit rather than failing. Attribute keys are de-duplicated (the
//! last value wins), all-zero optional ids become `None`, integer points
//! become `f64`.

use std::sync::Arc;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1 as pc;
use opentelemetry_proto::tonic::metrics::v1 as pm;
use opentelemetry_proto::tonic::resource::v1::Resource as PResource;

use crate::model::{
    AnyValue, Attributes, Exemplar, ExpBuckets, ExpHistogramPoint, HistogramPoint, LogRecord,
    Metric, MetricData, NumberPoint, Resource, Scope, Span, SpanEvent, SpanId, SpanKind, SpanLink,
    Status, StatusCode, SummaryPoint, Temporality, TraceId,
};

pub fn any_value(v: pc::AnyValue) -> AnyValue {
    use pc::any_value::Value;
    match v.value {
        None => AnyValue::Empty,
        Some(Value::StringValue(s)) => AnyValue::String(s),
        Some(Value::BoolValue(b)) => AnyValue::Bool(b),
        Some(Value::IntValue(i)) => AnyValue::Int(i),
        Some(Value::DoubleValue(d)) => AnyValue::Double(d),
        Some(Value::BytesValue(b)) => AnyValue::Bytes(b),
        Some(Value::ArrayValue(a)) => {
            AnyValue::Array(a.values.into_iter().map(any_value).collect())
        }
        Some(Value::KvlistValue(kv)) => AnyValue::Map(attributes(kv.values)),
        // Only meaningful inside profiles (an index into their string table).
        Some(Value::StringValueStrindex(_)) => AnyValue::Empty,
    }
}

/// Converts key/values, keeping the first position and the last value of a repeated key.
pub fn attributes(kvs: Vec<pc::KeyValue>) -> Attributes {
    let mut out: Attributes = Vec::with_capacity(kvs.len());
    for kv in kvs {
        let v = kv.value.map(any_value).unwrap_or_default();
        // Small attribute lists dominate; a linear scan beats hashing here.
        if let Some(slot) = out.iter_mut().find(|(k, _)| *k == kv.key) {
            slot.1 = v;
        } else {
            out.push((kv.key, v));
        }
    }
    out
}

fn resource(r: Option<PResource>, schema_url: String) -> Arc<Resource> {
    let r = r.unwrap_or_default();
    Arc::new(Resource {
        attributes: attributes(r.attributes),
        dropped_attributes_count: r.dropped_attributes_count,
        schema_url,
    })
}

fn scope(s: Option<pc::InstrumentationScope>, schema_url: String) -> Arc<Scope> {
    let s = s.unwrap_or_default();
    Arc::new(Scope {
        name: s.name,
        version: s.version,
        attributes: attributes(s.attributes),
        dropped_attributes_count: s.dropped_attributes_count,
        schema_url,
    })
}

fn opt_trace_id(b: &[u8]) -> Option<TraceId> {
    TraceId::from_bytes(b).ok()
}

fn opt_span_id(b: &[u8]) -> Option<SpanId> {
    SpanId::from_bytes(b).ok()
}

pub fn traces(req: ExportTraceServiceRequest) -> Vec<Span> {
    let mut out = Vec::new();
    for rs in req.resource_spans {
        let res = resource(rs.resource, rs.schema_url);
        for ss in rs.scope_spans {
            let sc = scope(ss.scope, ss.schema_url);
            for s in ss.spans {
                let (Some(trace_id), Some(span_id)) =
                    (opt_trace_id(&s.trace_id), opt_span_id(&s.span_id))
                else {
                    continue;
                };
                let status = s.status.unwrap_or_default();
                out.push(Span {
                    resource: res.clone(),
                    scope: sc.clone(),
                    trace_id,
                    span_id,
                    parent_span_id: opt_span_id(&s.parent_span_id),
                    trace_state: s.trace_state,
                    flags: s.flags,
                    name: s.name,
                    kind: SpanKind::from_i32(s.kind),
                    start_time_ns: s.start_time_unix_nano,
                    end_time_ns: s.end_time_unix_nano,
                    attributes: attributes(s.attributes),
                    dropped_attributes_count: s.dropped_attributes_count,
                    events: s
                        .events
                        .into_iter()
                        .map(|e| SpanEvent {
                            time_ns: e.time_unix_nano,
                            name: e.name,
                            attributes: attributes(e.attributes),
                            dropped_attributes_count: e.dropped_attributes_count,
                        })
                        .collect(),
                    dropped_events_count: s.dropped_events_count,
                    links: s
                        .links
                        .into_iter()
                        .filter_map(|l| {
                            Some(SpanLink {
                                trace_id: opt_trace_id(&l.trace_id)?,
                                span_id: opt_span_id(&l.span_id)?,
                                trace_state: l.trace_state,
                                attributes: attributes(l.attributes),
                                dropped_attributes_count: l.dropped_attributes_count,
                                flags: l.flags,
                            })
                        })
                        .collect(),
                    dropped_links_count: s.dropped_links_count,
                    status: Status {
                        code: StatusCode::from_i32(status.code),
                        message: status.message,
                    },
                });
            }
        }
    }
    out
}

pub fn logs(req: ExportLogsServiceRequest) -> Vec<LogRecord> {
    let mut out = Vec::new();
    for rl in req.resource_logs {
        let res = resource(rl.resource, rl.schema_url);
        for sl in rl.scope_logs {
            let sc = scope(sl.scope, sl.schema_url);
            for r in sl.log_records {
                out.push(LogRecord {
                    resource: res.clone(),
                    scope: sc.clone(),
                    time_ns: if r.time_unix_nano != 0 {
                        r.time_unix_nano
                    } else {
                        r.observed_time_unix_nano
                    },
                    observed_time_ns: r.observed_time_unix_nano,
                    severity_number: r.severity_number,
                    severity_text: r.severity_text,
                    body: r.body.map(any_value).unwrap_or_default(),
                    attributes: attributes(r.attributes),
                    dropped_attributes_count: r.dropped_attributes_count,
                    flags: r.flags,
                    trace_id: opt_trace_id(&r.trace_id),
                    span_id: opt_span_id(&r.span_id),
                    event_name: r.event_name,
                });
            }
        }
    }
    out
}

fn exemplars(ex: Vec<pm::Exemplar>) -> Vec<Exemplar> {
    ex.into_iter()
        .map(|e| Exemplar {
            filtered_attributes: attributes(e.filtered_attributes),
            time_ns: e.time_unix_nano,
            value: match e.value {
                Some(pm::exemplar::Value::AsDouble(d)) => d,
                Some(pm::exemplar::Value::AsInt(i)) => i as f64,
                None => f64::NAN,
            },
            trace_id: opt_trace_id(&e.trace_id),
            span_id: opt_span_id(&e.span_id),
        })
        .collect()
}

fn number_points(points: Vec<pm::NumberDataPoint>) -> Vec<NumberPoint> {
    points
        .into_iter()
        .map(|p| NumberPoint {
            attributes: attributes(p.attributes),
            start_time_ns: p.start_time_unix_nano,
            time_ns: p.time_unix_nano,
            value: match p.value {
                Some(pm::number_data_point::Value::AsDouble(d)) => d,
                Some(pm::number_data_point::Value::AsInt(i)) => i as f64,
                None => f64::NAN,
            },
            exemplars: exemplars(p.exemplars),
            flags: p.flags,
        })
        .collect()
}

fn exp_buckets(b: Option<pm::exponential_histogram_data_point::Buckets>) -> ExpBuckets {
    b.map(|b| ExpBuckets {
        offset: b.offset,
        bucket_counts: b.bucket_counts,
    })
    .unwrap_or_default()
}

pub fn metrics(req: ExportMetricsServiceRequest) -> Vec<Metric> {
    let mut out = Vec::new();
    for rm in req.resource_metrics {
        let res = resource(rm.resource, rm.schema_url);
        for sm in rm.scope_metrics {
            let sc = scope(sm.scope, sm.schema_url);
            for m in sm.metrics {
                let data = match m.data {
                    None => continue,
                    Some(pm::metric::Data::Gauge(g)) => {
                        MetricData::Gauge(number_points(g.data_points))
                    }
                    Some(pm::metric::Data::Sum(s)) => MetricData::Sum {
                        points: number_points(s.data_points),
                        temporality: Temporality::from_i32(s.aggregation_temporality),
                        monotonic: s.is_monotonic,
                    },
                    Some(pm::metric::Data::Histogram(h)) => MetricData::Histogram {
                        temporality: Temporality::from_i32(h.aggregation_temporality),
                        points: h
                            .data_points
                            .into_iter()
                            .map(|p| HistogramPoint {
                                attributes: attributes(p.attributes),
                                start_time_ns: p.start_time_unix_nano,
                                time_ns: p.time_unix_nano,
                                count: p.count,
                                sum: p.sum,
                                bucket_counts: p.bucket_counts,
                                explicit_bounds: p.explicit_bounds,
                                min: p.min,
                                max: p.max,
                                exemplars: exemplars(p.exemplars),
                                flags: p.flags,
                            })
                            .collect(),
                    },
                    Some(pm::metric::Data::ExponentialHistogram(h)) => {
                        MetricData::ExponentialHistogram {
                            temporality: Temporality::from_i32(h.aggregation_temporality),
                            points: h
                                .data_points
                                .into_iter()
                                .map(|p| ExpHistogramPoint {
                                    attributes: attributes(p.attributes),
                                    start_time_ns: p.start_time_unix_nano,
                                    time_ns: p.time_unix_nano,
                                    count: p.count,
                                    sum: p.sum,
                                    scale: p.scale,
                                    zero_count: p.zero_count,
                                    zero_threshold: p.zero_threshold,
                                    positive: exp_buckets(p.positive),
                                    negative: exp_buckets(p.negative),
                                    min: p.min,
                                    max: p.max,
                                    exemplars: exemplars(p.exemplars),
                                    flags: p.flags,
                                })
                                .collect(),
                        }
                    }
                    Some(pm::metric::Data::Summary(s)) => MetricData::Summary(
                        s.data_points
                            .into_iter()
                            .map(|p| SummaryPoint {
                                attributes: attributes(p.attributes),
                                start_time_ns: p.start_time_unix_nano,
                                time_ns: p.time_unix_nano,
                                count: p.count,
                                sum: p.sum,
                                quantiles: p
                                    .quantile_values
                                    .into_iter()
                                    .map(|q| (q.quantile, q.value))
                                    .collect(),
                                flags: p.flags,
                            })
                            .collect(),
                    ),
                };
                out.push(Metric {
                    resource: res.clone(),
                    scope: sc.clone(),
                    name: m.name,
                    description: m.description,
                    unit: m.unit,
                    metadata: attributes(m.metadata),
                    data,
                });
            }
        }
    }
    out
}
