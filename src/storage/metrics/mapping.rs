//! OTLP metrics to Prometheus series, per the OpenTelemetry "Prometheus and
//! OpenMetrics compatibility" rules:
//!
//! - names: invalid characters become `_`, runs of `_` collapse, the unit
//!   becomes a suffix (`ms` → `_milliseconds`, `By` → `_bytes`, `1` →
//!   `_ratio` on gauges, `{...}` annotations dropped), monotonic sums get
//!   `_total`;
//! - gauges and non-monotonic sums are gauges; monotonic sums are counters;
//! - explicit histograms become `_bucket{le}` (cumulative, with `+Inf`),
//!   `_sum` and `_count`; exponential histograms are converted to the same
//!   classic form (bucket upper bounds `base^(i+1)`); summaries become
//!   `{quantile}`, `_sum` and `_count`;
//! - labels: point attributes (names sanitised, `key_` before a leading
//!   digit, colliding names joined with `;`), `job` from
//!   `service.namespace/service.name`, `instance` from
//!   `service.instance.id`, configured resource attributes, and
//!   `otel_scope_name` / `otel_scope_version` / `otel_scope_<attr>`;
//! - each resource also yields `target_info{job,instance,<resource attrs>} 1`;
//! - points flagged "no recorded value" become Prometheus stale markers.
//!
//! Delta points are marked as such; the store accumulates them into
//! cumulative values (see [`super::core`]).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use crate::model::{
    AnyValue, Attributes, Labels, Metric, MetricData, MetricMeta, Resource, Scope, Temporality,
    FLAG_NO_RECORDED_VALUE, METRIC_NAME,
};

/// The value Prometheus uses to mark a series stale.
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// How a mapped point combines with earlier points of its series.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PointKind {
    /// The value is the series value at `t_ms`.
    Absolute,
    /// The value is an increment over `(start_ns, time_ns]`, to be added to
    /// the series' running total.
    Delta { time_ns: u64 },
}

/// One sample of one Prometheus series.
#[derive(Debug, Clone, PartialEq)]
pub struct MappedPoint {
    pub labels: Labels,
    pub t_ms: i64,
    pub v: f64,
    pub kind: PointKind,
    /// Ordinal of the OTLP data point this sample came from, in batch order
    /// (resource, scope, metric, point); `usize::MAX` for `target_info`.
    pub src: usize,
}

/// Settings of the mapping.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MappingOptions {
    /// Resource attributes copied onto every series.
    pub promote_resource_attributes: Vec<String>,
}

/// The result of mapping a batch.
#[derive(Debug, Default)]
pub struct Mapped {
    pub points: Vec<MappedPoint>,
    pub meta: Vec<MetricMeta>,
    /// Number of OTLP data points mapped.
    pub otlp_points: usize,
}

/// Replaces characters invalid in a metric name with `_`, collapses runs of
/// `_` and prefixes `_` to a leading digit.
pub fn sanitize_metric_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        let c = if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            c
        } else {
            '_'
        };
        if c == '_' && out.ends_with('_') {
            continue;
        }
        out.push(c);
    }
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    if out.is_empty() {
        out.push('_');
    }
    out
}

/// Replaces characters invalid in a label name with `_` and prefixes `key_`
/// to a leading digit.
pub fn sanitize_label_name(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert_str(0, "key_");
    }
    if out.is_empty() {
        out.push('_');
    }
    out
}

fn unit_word(u: &str) -> Option<&'static str> {
    Some(match u {
        "d" => "days",
        "h" => "hours",
        "min" => "minutes",
        "s" => "seconds",
        "ms" => "milliseconds",
        "us" => "microseconds",
        "ns" => "nanoseconds",
        "By" => "bytes",
        "KiBy" => "kibibytes",
        "MiBy" => "mebibytes",
        "GiBy" => "gibibytes",
        "TiBy" => "tebibytes",
        "KBy" => "kilobytes",
        "MBy" => "megabytes",
        "GBy" => "gigabytes",
        "TBy" => "terabytes",
        "m" => "meters",
        "V" => "volts",
        "A" => "amperes",
        "J" => "joules",
        "W" => "watts",
        "g" => "grams",
        "Cel" => "celsius",
        "Hz" => "hertz",
        "%" => "percent",
        _ => return None,
    })
}

fn per_unit_word(u: &str) -> Option<&'static str> {
    Some(match u {
        "s" => "second",
        "m" => "minute",
        "h" => "hour",
        "d" => "day",
        "w" => "week",
        "mo" => "month",
        "y" => "year",
        _ => return None,
    })
}

fn unit_part(u: &str, word: fn(&str) -> Option<&'static str>) -> String {
    match word(u) {
        Some(w) => w.to_string(),
        None => sanitize_metric_name(u).trim_matches('_').to_string(),
    }
}

/// The Prometheus unit word for an OTLP (UCUM) unit; "" for none. `1` is
/// `ratio` on gauges and nothing on counters.
pub fn prometheus_unit(unit: &str, counter: bool) -> String {
    // Annotations in braces carry no unit.
    let mut cleaned = String::new();
    let mut depth = 0;
    for c in unit.chars() {
        match c {
            '{' => depth += 1,
            '}' if depth > 0 => depth -= 1,
            _ if depth == 0 => cleaned.push(c),
            _ => {}
        }
    }
    let unit = cleaned.trim();
    if unit.is_empty() {
        return String::new();
    }
    if unit == "1" {
        return if counter {
            String::new()
        } else {
            "ratio".into()
        };
    }
    match unit.split_once('/') {
        Some((a, b)) => {
            let a = if a.is_empty() || a == "1" {
                String::new()
            } else {
                unit_part(a, unit_word)
            };
            let b = unit_part(b, per_unit_word);
            match (a.is_empty(), b.is_empty()) {
                (_, true) => a,
                (true, false) => format!("per_{b}"),
                (false, false) => format!("{a}_per_{b}"),
            }
        }
        None => unit_part(unit, unit_word),
    }
}

/// The Prometheus family name of an OTLP metric (before `_bucket` & co.).
pub fn family_name(name: &str, unit: &str, counter: bool) -> String {
    let mut n = sanitize_metric_name(name);
    let u = prometheus_unit(unit, counter);
    if !u.is_empty() && !n.ends_with(&format!("_{u}")) && !n.contains(&format!("_{u}_")) {
        n.push('_');
        n.push_str(&u);
    }
    if counter && !n.ends_with("_total") {
        n.push_str("_total");
    }
    n
}

/// The family name of a histogram or summary: the unit suffix, but never
/// `_ratio` or `_total` (the series add `_bucket`, `_sum`, `_count`).
pub fn histogram_family_name(name: &str, unit: &str) -> String {
    let mut n = sanitize_metric_name(name);
    let u = prometheus_unit(unit, true);
    if !u.is_empty() && !n.ends_with(&format!("_{u}")) {
        n.push('_');
        n.push_str(&u);
    }
    n
}

/// Sanitised attribute labels; colliding names have their values joined
/// with `;` in the order of the original keys.
fn attribute_labels(attrs: &Attributes, out: &mut BTreeMap<String, String>, overwrite: bool) {
    let mut sorted: Vec<(&String, &AnyValue)> = attrs.iter().map(|(k, v)| (k, v)).collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let mut seen = HashSet::new();
    let mut local: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in sorted {
        let name = sanitize_label_name(k);
        let value = v.to_text();
        if value.is_empty() {
            continue;
        }
        if seen.insert(name.clone()) {
            local.insert(name, value);
        } else if let Some(existing) = local.get_mut(&name) {
            existing.push(';');
            existing.push_str(&value);
        }
    }
    for (k, v) in local {
        if k == METRIC_NAME {
            continue;
        }
        if overwrite || !out.contains_key(&k) {
            out.insert(k, v);
        }
    }
}

fn str_attr(attrs: &Attributes, key: &str) -> Option<String> {
    attrs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.to_text())
        .filter(|s| !s.is_empty())
}

/// `job` and `instance` of a resource.
pub fn job_and_instance(r: &Resource) -> (String, Option<String>) {
    let name = r.service_name().to_string();
    let job = match str_attr(&r.attributes, "service.namespace") {
        Some(ns) => format!("{ns}/{name}"),
        None => name,
    };
    (job, str_attr(&r.attributes, "service.instance.id"))
}

/// Labels every series of one resource and scope carries.
fn base_labels(r: &Resource, s: &Scope, opts: &MappingOptions) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for key in &opts.promote_resource_attributes {
        if let Some(v) = str_attr(&r.attributes, key) {
            out.insert(sanitize_label_name(key), v);
        }
    }
    if !s.name.is_empty() {
        out.insert("otel_scope_name".into(), s.name.clone());
    }
    if !s.version.is_empty() {
        out.insert("otel_scope_version".into(), s.version.clone());
    }
    for (k, v) in &s.attributes {
        let value = v.to_text();
        if !value.is_empty() {
            out.insert(format!("otel_scope_{}", sanitize_label_name(k)), value);
        }
    }
    let (job, instance) = job_and_instance(r);
    out.insert("job".into(), job);
    if let Some(i) = instance {
        out.insert("instance".into(), i);
    }
    out
}

fn to_labels(m: BTreeMap<String, String>) -> Labels {
    m.into_iter().collect()
}

/// Formats a bound the way Prometheus writes `le` and `quantile` values.
pub fn format_bound(v: f64) -> String {
    if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else if v.is_nan() {
        "NaN".into()
    } else {
        format!("{v}")
    }
}

fn ms(ns: u64) -> i64 {
    (ns / 1_000_000) as i64
}

/// Maps OTLP metrics to series points and metric metadata.
pub fn map_metrics(metrics: &[Metric], opts: &MappingOptions) -> Mapped {
    let mut out = Mapped::default();
    // target_info once per resource of the batch, at its latest point.
    let mut targets: Vec<(*const Resource, Arc<Resource>, u64)> = Vec::new();
    for m in metrics {
        let base = base_labels(&m.resource, &m.scope, opts);
        let latest = map_metric(m, &base, &mut out);
        let ptr = Arc::as_ptr(&m.resource);
        match targets.iter_mut().find(|t| t.0 == ptr) {
            Some(t) => t.2 = t.2.max(latest),
            None => targets.push((ptr, m.resource.clone(), latest)),
        }
    }
    let mut seen_targets = HashSet::new();
    for (_, r, latest) in targets {
        if latest == 0 || r.attributes.is_empty() {
            continue;
        }
        let mut l = BTreeMap::new();
        let filtered: Attributes = r
            .attributes
            .iter()
            .filter(|(k, _)| {
                !matches!(
                    k.as_str(),
                    "service.name" | "service.namespace" | "service.instance.id"
                )
            })
            .cloned()
            .collect();
        attribute_labels(&filtered, &mut l, true);
        let (job, instance) = job_and_instance(&r);
        l.insert("job".into(), job);
        if let Some(i) = instance {
            l.insert("instance".into(), i);
        }
        l.insert(METRIC_NAME.into(), "target_info".into());
        let labels = to_labels(l);
        if seen_targets.insert(labels.clone()) {
            out.points.push(MappedPoint {
                labels,
                t_ms: ms(latest),
                v: 1.0,
                kind: PointKind::Absolute,
                src: usize::MAX,
            });
        }
    }
    if !out.points.is_empty() && !out.meta.iter().any(|m| m.metric == "target_info") {
        out.meta.push(MetricMeta {
            metric: "target_info".into(),
            kind: "gauge".into(),
            help: "Target metadata".into(),
            unit: String::new(),
        });
    }
    out
}

struct Emitter<'a> {
    out: &'a mut Mapped,
    latest: u64,
    src: usize,
}

impl Emitter<'_> {
    /// Starts the samples of the next OTLP data point.
    fn next_point(&mut self) {
        self.src = self.out.otlp_points;
        self.out.otlp_points += 1;
    }

    /// One histogram point as `_bucket{le}` series (cumulative counts, as
    /// given in `buckets`), `_sum` when the point has one, and `_count`.
    fn emit_histogram(
        &mut self,
        base: &BTreeMap<String, String>,
        names: &HistogramNames,
        p: &HistogramPoint,
        buckets: &[(f64, u64)],
        delta: bool,
    ) {
        for (le, c) in buckets {
            self.emit(
                base,
                p.attrs,
                &names.bucket,
                Some(("le", format_bound(*le))),
                p.time_ns,
                *c as f64,
                p.flags,
                delta,
            );
        }
        if let Some(s) = p.sum {
            self.emit(
                base, p.attrs, &names.sum, None, p.time_ns, s, p.flags, delta,
            );
        }
        self.emit(
            base,
            p.attrs,
            &names.count,
            None,
            p.time_ns,
            p.count as f64,
            p.flags,
            delta,
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn emit(
        &mut self,
        base: &BTreeMap<String, String>,
        attrs: &Attributes,
        name: &str,
        extra: Option<(&str, String)>,
        time_ns: u64,
        v: f64,
        flags: u32,
        delta: bool,
    ) {
        let mut l = base.clone();
        attribute_labels(attrs, &mut l, false);
        if let Some((k, val)) = extra {
            l.insert(k.to_string(), val);
        }
        l.insert(METRIC_NAME.into(), name.to_string());
        self.latest = self.latest.max(time_ns);
        let stale = flags & FLAG_NO_RECORDED_VALUE != 0;
        let (v, kind) = if stale {
            (f64::from_bits(STALE_NAN_BITS), PointKind::Absolute)
        } else if delta {
            (v, PointKind::Delta { time_ns })
        } else {
            (v, PointKind::Absolute)
        };
        self.out.points.push(MappedPoint {
            labels: to_labels(l),
            t_ms: ms(time_ns),
            v,
            kind,
            src: self.src,
        });
    }
}

/// The three series names of a histogram family.
struct HistogramNames {
    bucket: String,
    sum: String,
    count: String,
}

impl HistogramNames {
    fn new(family: &str) -> Self {
        HistogramNames {
            bucket: format!("{family}_bucket"),
            sum: format!("{family}_sum"),
            count: format!("{family}_count"),
        }
    }
}

/// What both histogram kinds share besides their buckets.
struct HistogramPoint<'a> {
    attrs: &'a Attributes,
    time_ns: u64,
    flags: u32,
    sum: Option<f64>,
    count: u64,
}

/// Cumulative `(upper bound, count)` pairs of an exponential histogram.
fn exp_buckets(p: &crate::model::ExpHistogramPoint) -> Vec<(f64, u64)> {
    let base = 2f64.powf(2f64.powi(-p.scale));
    let mut out = Vec::new();
    let mut acc = 0u64;
    // Negative buckets, most negative first: bucket i covers
    // [-base^(i+1), -base^i), so its upper bound is -base^i.
    for (i, c) in p.negative.bucket_counts.iter().enumerate().rev() {
        acc += c;
        let idx = p.negative.offset as f64 + i as f64;
        out.push((-base.powf(idx), acc));
    }
    acc += p.zero_count;
    out.push((p.zero_threshold.max(0.0), acc));
    for (i, c) in p.positive.bucket_counts.iter().enumerate() {
        acc += c;
        let idx = p.positive.offset as f64 + i as f64;
        out.push((base.powf(idx + 1.0), acc));
    }
    out.push((f64::INFINITY, p.count.max(acc)));
    out
}

/// Maps one metric; returns the latest point time seen.
fn map_metric(m: &Metric, base: &BTreeMap<String, String>, out: &mut Mapped) -> u64 {
    let (counter, kind) = match &m.data {
        MetricData::Gauge(_) => (false, "gauge"),
        MetricData::Sum { monotonic, .. } => {
            (*monotonic, if *monotonic { "counter" } else { "gauge" })
        }
        MetricData::Histogram { .. } | MetricData::ExponentialHistogram { .. } => {
            (false, "histogram")
        }
        MetricData::Summary(_) => (false, "summary"),
    };
    let unit_counter = counter
        || matches!(
            m.data,
            MetricData::Histogram { .. }
                | MetricData::ExponentialHistogram { .. }
                | MetricData::Summary(_)
        );
    let family = if kind == "histogram" || kind == "summary" {
        histogram_family_name(&m.name, &m.unit)
    } else {
        family_name(&m.name, &m.unit, counter)
    };
    let meta = MetricMeta {
        metric: family.clone(),
        kind: kind.into(),
        help: m.description.clone(),
        unit: prometheus_unit(&m.unit, unit_counter),
    };
    if !out.meta.contains(&meta) {
        out.meta.push(meta);
    }
    let hist_family = || histogram_family_name(&m.name, &m.unit);
    let mut e = Emitter {
        out,
        latest: 0,
        src: 0,
    };
    match &m.data {
        MetricData::Gauge(points) => {
            for p in points {
                e.next_point();
                e.emit(
                    base,
                    &p.attributes,
                    &family,
                    None,
                    p.time_ns,
                    p.value,
                    p.flags,
                    false,
                );
            }
        }
        MetricData::Sum {
            points,
            temporality,
            monotonic,
        } => {
            // A non-monotonic delta sum is still a running total.
            let delta = *temporality == Temporality::Delta;
            let _ = monotonic;
            for p in points {
                e.next_point();
                e.emit(
                    base,
                    &p.attributes,
                    &family,
                    None,
                    p.time_ns,
                    p.value,
                    p.flags,
                    delta,
                );
            }
        }
        MetricData::Histogram {
            points,
            temporality,
        } => {
            let names = HistogramNames::new(&hist_family());
            let delta = *temporality == Temporality::Delta;
            for p in points {
                e.next_point();
                let buckets: Vec<(f64, u64)> = if p.bucket_counts.is_empty() {
                    vec![(f64::INFINITY, p.count)]
                } else {
                    let mut acc = 0u64;
                    p.bucket_counts
                        .iter()
                        .enumerate()
                        .map(|(i, c)| {
                            acc += c;
                            let le = p.explicit_bounds.get(i).copied().unwrap_or(f64::INFINITY);
                            (le, acc)
                        })
                        .collect()
                };
                let point = HistogramPoint {
                    attrs: &p.attributes,
                    time_ns: p.time_ns,
                    flags: p.flags,
                    sum: p.sum,
                    count: p.count,
                };
                e.emit_histogram(base, &names, &point, &buckets, delta);
            }
        }
        MetricData::ExponentialHistogram {
            points,
            temporality,
        } => {
            let names = HistogramNames::new(&hist_family());
            let delta = *temporality == Temporality::Delta;
            for p in points {
                e.next_point();
                let point = HistogramPoint {
                    attrs: &p.attributes,
                    time_ns: p.time_ns,
                    flags: p.flags,
                    sum: p.sum,
                    count: p.count,
                };
                e.emit_histogram(base, &names, &point, &exp_buckets(p), delta);
            }
        }
        MetricData::Summary(points) => {
            let fam = hist_family();
            let (sum, count) = (format!("{fam}_sum"), format!("{fam}_count"));
            for p in points {
                e.next_point();
                for (q, v) in &p.quantiles {
                    e.emit(
                        base,
                        &p.attributes,
                        &fam,
                        Some(("quantile", format_bound(*q))),
                        p.time_ns,
                        *v,
                        p.flags,
                        false,
                    );
                }
                e.emit(
                    base,
                    &p.attributes,
                    &sum,
                    None,
                    p.time_ns,
                    p.sum,
                    p.flags,
                    false,
                );
                e.emit(
                    base,
                    &p.attributes,
                    &count,
                    None,
                    p.time_ns,
                    p.count as f64,
                    p.flags,
                    false,
                );
            }
        }
    }
    e.latest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_units() {
        assert_eq!(
            family_name("http.server.duration", "ms", false),
            "http_server_duration_milliseconds"
        );
        assert_eq!(family_name("e2e_requests", "1", true), "e2e_requests_total");
        assert_eq!(
            family_name("cpu.utilization", "1", false),
            "cpu_utilization_ratio"
        );
        assert_eq!(family_name("requests", "{request}", true), "requests_total");
        assert_eq!(family_name("io", "By/s", false), "io_bytes_per_second");
        assert_eq!(family_name("x_total", "", true), "x_total");
        assert_eq!(family_name("9lives..a", "", false), "_9lives_a");
        assert_eq!(sanitize_label_name("http.method"), "http_method");
        assert_eq!(sanitize_label_name("2x"), "key_2x");
        assert_eq!(format_bound(10.0), "10");
        assert_eq!(format_bound(0.005), "0.005");
        assert_eq!(format_bound(f64::INFINITY), "+Inf");
    }
}
