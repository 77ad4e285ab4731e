//! Validation of decoded OTLP requests before they are written to the WAL.
//!
//! Invalid records are removed in place and counted, so the caller can answer
//! with an OTLP partial success; what remains is exactly what gets written to
//! the WAL and converted to the model. The checks that depend on the clock
//! (future timestamps) run here only, never on WAL replay.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, ExponentialHistogramDataPoint, HistogramDataPoint, Metric, NumberDataPoint,
    SummaryDataPoint,
};
use prost::Message;

use crate::model::FLAG_NO_RECORDED_VALUE;

/// Bounds applied to every record at ingest.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Most attributes on one record (span, event, link, log record, data point).
    pub max_attributes: usize,
    /// Deepest nesting of array/map attribute values and log bodies.
    pub max_attribute_depth: usize,
    /// Largest encoded size of one span, log record or metric point.
    pub max_record_bytes: usize,
    /// How far in the future a timestamp may be.
    pub max_future_skew_ns: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_attributes: 1024,
            max_attribute_depth: 32,
            max_record_bytes: 1 << 20,
            max_future_skew_ns: 3_600 * 1_000_000_000,
        }
    }
}

/// What validation removed from a request.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Rejections {
    /// Records removed (spans, data points or log records).
    pub count: u64,
    /// Warnings or errors worth telling the sender, even with no rejection.
    messages: Vec<String>,
    extra_messages: usize,
    /// Whether the request was changed at all (records removed or fields filled).
    pub modified: bool,
}

const MAX_MESSAGES: usize = 5;

impl Rejections {
    fn reject(&mut self, n: u64, path: impl FnOnce() -> String, why: &str) {
        self.count += n;
        self.modified = true;
        self.note(path, why);
    }

    fn note(&mut self, path: impl FnOnce() -> String, why: &str) {
        if self.messages.len() < MAX_MESSAGES {
            self.messages.push(format!("{}: {why}", path()));
        } else {
            self.extra_messages += 1;
        }
    }

    /// The partial-success error message, empty when there is nothing to say.
    pub fn message(&self) -> String {
        let mut m = self.messages.join("; ");
        if self.extra_messages > 0 {
            m.push_str(&format!(" (and {} more)", self.extra_messages));
        }
        m
    }
}

fn check_id(b: &[u8], len: usize, what: &str, optional: bool) -> Result<(), String> {
    if b.is_empty() && optional {
        return Ok(());
    }
    if b.len() != len {
        return Err(format!("{what} must be {len} bytes, got {}", b.len()));
    }
    if b.iter().all(|&x| x == 0) && !optional {
        return Err(format!("{what} must not be all zeros"));
    }
    Ok(())
}

fn value_depth(v: &AnyValue) -> usize {
    match &v.value {
        Some(any_value::Value::ArrayValue(a)) => {
            1 + a.values.iter().map(value_depth).max().unwrap_or(0)
        }
        Some(any_value::Value::KvlistValue(kv)) => {
            1 + kv
                .values
                .iter()
                .filter_map(|k| k.value.as_ref())
                .map(value_depth)
                .max()
                .unwrap_or(0)
        }
        _ => 0,
    }
}

fn check_attrs(attrs: &[KeyValue], limits: &Limits, what: &str) -> Result<(), String> {
    if attrs.len() > limits.max_attributes {
        return Err(format!(
            "{what} has {} attributes, more than the limit of {}",
            attrs.len(),
            limits.max_attributes
        ));
    }
    for kv in attrs {
        if let Some(v) = &kv.value {
            if value_depth(v) > limits.max_attribute_depth {
                return Err(format!(
                    "attribute {:?} is nested deeper than {} levels",
                    truncate(&kv.key, 64),
                    limits.max_attribute_depth
                ));
            }
        }
    }
    Ok(())
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

fn check_time(t: u64, now_ns: u64, limits: &Limits, what: &str) -> Result<(), String> {
    if t > now_ns.saturating_add(limits.max_future_skew_ns) {
        return Err(format!(
            "{what} {t} is more than {}s in the future",
            limits.max_future_skew_ns / 1_000_000_000
        ));
    }
    Ok(())
}

fn check_size(len: usize, limits: &Limits, what: &str) -> Result<(), String> {
    if len > limits.max_record_bytes {
        return Err(format!(
            "{what} is {len} bytes, more than the limit of {} bytes",
            limits.max_record_bytes
        ));
    }
    Ok(())
}

/// Removes invalid spans from `req`.
pub fn validate_traces(
    req: &mut ExportTraceServiceRequest,
    limits: &Limits,
    now_ns: u64,
) -> Rejections {
    let mut rej = Rejections::default();
    for (ri, rs) in req.resource_spans.iter_mut().enumerate() {
        if let Some(r) = &rs.resource {
            if let Err(e) = check_attrs(&r.attributes, limits, "resource") {
                let n = rs.scope_spans.iter().map(|s| s.spans.len() as u64).sum();
                rej.reject(n, || format!("resource_spans[{ri}].resource"), &e);
                rs.scope_spans.clear();
                continue;
            }
        }
        for (si, ss) in rs.scope_spans.iter_mut().enumerate() {
            let mut idx = 0usize;
            ss.spans.retain(|span| {
                let i = idx;
                idx += 1;
                let res = (|| {
                    check_id(&span.trace_id, 16, "trace id", false)?;
                    check_id(&span.span_id, 8, "span id", false)?;
                    check_id(&span.parent_span_id, 8, "parent span id", true)?;
                    if span.start_time_unix_nano == 0 {
                        return Err("start time is missing".to_string());
                    }
                    if span.end_time_unix_nano < span.start_time_unix_nano {
                        return Err("end time is before start time".to_string());
                    }
                    check_time(span.end_time_unix_nano, now_ns, limits, "end time")?;
                    check_attrs(&span.attributes, limits, "span")?;
                    for ev in &span.events {
                        check_attrs(&ev.attributes, limits, "span event")?;
                    }
                    for (li, link) in span.links.iter().enumerate() {
                        check_id(&link.trace_id, 16, &format!("link {li} trace id"), false)?;
                        check_id(&link.span_id, 8, &format!("link {li} span id"), false)?;
                        check_attrs(&link.attributes, limits, "span link")?;
                    }
                    check_size(span.encoded_len(), limits, "span")
                })();
                match res {
                    Ok(()) => true,
                    Err(e) => {
                        rej.reject(
                            1,
                            || format!("resource_spans[{ri}].scope_spans[{si}].spans[{i}]"),
                            &e,
                        );
                        false
                    }
                }
            });
        }
        rs.scope_spans.retain(|s| !s.spans.is_empty());
    }
    req.resource_spans.retain(|r| !r.scope_spans.is_empty());
    rej
}

/// Removes invalid log records from `req` and fills in missing timestamps.
pub fn validate_logs(
    req: &mut ExportLogsServiceRequest,
    limits: &Limits,
    now_ns: u64,
) -> Rejections {
    let mut rej = Rejections::default();
    for (ri, rl) in req.resource_logs.iter_mut().enumerate() {
        if let Some(r) = &rl.resource {
            if let Err(e) = check_attrs(&r.attributes, limits, "resource") {
                let n = rl
                    .scope_logs
                    .iter()
                    .map(|s| s.log_records.len() as u64)
                    .sum();
                rej.reject(n, || format!("resource_logs[{ri}].resource"), &e);
                rl.scope_logs.clear();
                continue;
            }
        }
        for (si, sl) in rl.scope_logs.iter_mut().enumerate() {
            let mut idx = 0usize;
            let mut filled = false;
            sl.log_records.retain_mut(|rec| {
                let i = idx;
                idx += 1;
                let res = (|| {
                    check_id(&rec.trace_id, 16, "trace id", true)?;
                    check_id(&rec.span_id, 8, "span id", true)?;
                    if !(0..=24).contains(&rec.severity_number) {
                        return Err(format!(
                            "severity number {} is outside 0..=24",
                            rec.severity_number
                        ));
                    }
                    check_time(rec.time_unix_nano, now_ns, limits, "time")?;
                    check_attrs(&rec.attributes, limits, "log record")?;
                    if let Some(b) = &rec.body {
                        if value_depth(b) > limits.max_attribute_depth {
                            return Err(format!(
                                "body is nested deeper than {} levels",
                                limits.max_attribute_depth
                            ));
                        }
                    }
                    check_size(rec.encoded_len(), limits, "log record")
                })();
                match res {
                    Ok(()) => {
                        if rec.observed_time_unix_nano == 0 {
                            rec.observed_time_unix_nano = now_ns;
                            filled = true;
                        }
                        if rec.time_unix_nano == 0 {
                            rec.time_unix_nano = rec.observed_time_unix_nano;
                            filled = true;
                        }
                        true
                    }
                    Err(e) => {
                        rej.reject(
                            1,
                            || format!("resource_logs[{ri}].scope_logs[{si}].log_records[{i}]"),
                            &e,
                        );
                        false
                    }
                }
            });
            rej.modified |= filled;
        }
        rl.scope_logs.retain(|s| !s.log_records.is_empty());
    }
    req.resource_logs.retain(|r| !r.scope_logs.is_empty());
    rej
}

fn check_point_common(
    attrs: &[KeyValue],
    time: u64,
    now_ns: u64,
    limits: &Limits,
) -> Result<(), String> {
    if time == 0 {
        return Err("time is missing".to_string());
    }
    check_time(time, now_ns, limits, "time")?;
    check_attrs(attrs, limits, "data point")
}

fn check_number(p: &NumberDataPoint, now_ns: u64, limits: &Limits) -> Result<(), String> {
    check_point_common(&p.attributes, p.time_unix_nano, now_ns, limits)?;
    if p.value.is_none() && p.flags & FLAG_NO_RECORDED_VALUE == 0 {
        return Err("data point has no value".to_string());
    }
    check_size(p.encoded_len(), limits, "data point")
}

fn check_bounds(bounds: &[f64]) -> Result<(), String> {
    if bounds.iter().any(|b| b.is_nan()) {
        return Err("histogram bound is NaN".to_string());
    }
    if bounds.windows(2).any(|w| w[0] >= w[1]) {
        return Err("histogram bounds are not strictly increasing".to_string());
    }
    Ok(())
}

fn check_histogram(p: &HistogramDataPoint, now_ns: u64, limits: &Limits) -> Result<(), String> {
    check_point_common(&p.attributes, p.time_unix_nano, now_ns, limits)?;
    if !p.bucket_counts.is_empty() && p.bucket_counts.len() != p.explicit_bounds.len() + 1 {
        return Err(format!(
            "histogram has {} bucket counts for {} bounds (expected {})",
            p.bucket_counts.len(),
            p.explicit_bounds.len(),
            p.explicit_bounds.len() + 1
        ));
    }
    check_bounds(&p.explicit_bounds)?;
    check_size(p.encoded_len(), limits, "data point")
}

fn check_exp_histogram(
    p: &ExponentialHistogramDataPoint,
    now_ns: u64,
    limits: &Limits,
) -> Result<(), String> {
    check_point_common(&p.attributes, p.time_unix_nano, now_ns, limits)?;
    if !(-10..=20).contains(&p.scale) {
        return Err(format!(
            "exponential histogram scale {} is outside -10..=20",
            p.scale
        ));
    }
    check_size(p.encoded_len(), limits, "data point")
}

fn check_summary(p: &SummaryDataPoint, now_ns: u64, limits: &Limits) -> Result<(), String> {
    check_point_common(&p.attributes, p.time_unix_nano, now_ns, limits)?;
    for q in &p.quantile_values {
        if !(0.0..=1.0).contains(&q.quantile) {
            return Err(format!("summary quantile {} is outside [0, 1]", q.quantile));
        }
    }
    check_size(p.encoded_len(), limits, "data point")
}

fn point_count(m: &Metric) -> u64 {
    (match &m.data {
        Some(metric::Data::Gauge(g)) => g.data_points.len(),
        Some(metric::Data::Sum(s)) => s.data_points.len(),
        Some(metric::Data::Histogram(h)) => h.data_points.len(),
        Some(metric::Data::ExponentialHistogram(h)) => h.data_points.len(),
        Some(metric::Data::Summary(s)) => s.data_points.len(),
        None => 0,
    }) as u64
}

fn retain_points<P>(
    points: &mut Vec<P>,
    rej: &mut Rejections,
    path: &dyn Fn(usize) -> String,
    check: impl Fn(&P) -> Result<(), String>,
) {
    let mut idx = 0usize;
    points.retain(|p| {
        let i = idx;
        idx += 1;
        match check(p) {
            Ok(()) => true,
            Err(e) => {
                rej.reject(1, || path(i), &e);
                false
            }
        }
    });
}

/// Removes invalid metrics and data points from `req`.
pub fn validate_metrics(
    req: &mut ExportMetricsServiceRequest,
    limits: &Limits,
    now_ns: u64,
) -> Rejections {
    let mut rej = Rejections::default();
    for (ri, rm) in req.resource_metrics.iter_mut().enumerate() {
        if let Some(r) = &rm.resource {
            if let Err(e) = check_attrs(&r.attributes, limits, "resource") {
                let n = rm
                    .scope_metrics
                    .iter()
                    .flat_map(|s| s.metrics.iter())
                    .map(point_count)
                    .sum();
                rej.reject(n, || format!("resource_metrics[{ri}].resource"), &e);
                rm.scope_metrics.clear();
                continue;
            }
        }
        for (si, sm) in rm.scope_metrics.iter_mut().enumerate() {
            let mut mi = 0usize;
            sm.metrics.retain_mut(|m| {
                let i = mi;
                mi += 1;
                let base = format!("resource_metrics[{ri}].scope_metrics[{si}].metrics[{i}]");
                if m.name.is_empty() {
                    rej.reject(point_count(m), || base.clone(), "metric name is empty");
                    return false;
                }
                if m.name.len() > 1024 {
                    rej.reject(
                        point_count(m),
                        || base.clone(),
                        "metric name is longer than 1024 bytes",
                    );
                    return false;
                }
                let path = |p: usize| format!("{base}.data_points[{p}]");
                match &mut m.data {
                    None => {
                        rej.modified = true;
                        rej.note(|| base.clone(), "metric has no data");
                        return false;
                    }
                    Some(metric::Data::Gauge(g)) => {
                        retain_points(&mut g.data_points, &mut rej, &path, |p| {
                            check_number(p, now_ns, limits)
                        })
                    }
                    Some(metric::Data::Sum(s)) => {
                        retain_points(&mut s.data_points, &mut rej, &path, |p| {
                            check_number(p, now_ns, limits)
                        })
                    }
                    Some(metric::Data::Histogram(h)) => {
                        retain_points(&mut h.data_points, &mut rej, &path, |p| {
                            check_histogram(p, now_ns, limits)
                        })
                    }
                    Some(metric::Data::ExponentialHistogram(h)) => {
                        retain_points(&mut h.data_points, &mut rej, &path, |p| {
                            check_exp_histogram(p, now_ns, limits)
                        })
                    }
                    Some(metric::Data::Summary(s)) => {
                        retain_points(&mut s.data_points, &mut rej, &path, |p| {
                            check_summary(p, now_ns, limits)
                        })
                    }
                }
                let keep = point_count(m) > 0;
                rej.modified |= !keep;
                keep
            });
        }
        rm.scope_metrics.retain(|s| !s.metrics.is_empty());
    }
    req.resource_metrics.retain(|r| !r.scope_metrics.is_empty());
    rej
}
