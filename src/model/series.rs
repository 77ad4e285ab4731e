//! Prometheus-style series: the form metrics take in the metrics store and
//! in PromQL. OTLP metrics become series in the metrics store (per the
//! OpenTelemetry/Prometheus compatibility rules); remote_write sends them
//! directly.

/// A label set sorted by name, names unique. The metric name is the label
/// `__name__`.
pub type Labels = Vec<(String, String)>;

/// The label holding the metric name.
pub const METRIC_NAME: &str = "__name__";

/// One sample: milliseconds since the Unix epoch and a value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub t_ms: i64,
    pub v: f64,
}

/// A series with samples in increasing time order.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub labels: Labels,
    pub samples: Vec<Sample>,
}

impl Series {
    /// The `__name__` label, or "" when absent.
    pub fn metric_name(&self) -> &str {
        label(&self.labels, METRIC_NAME).unwrap_or("")
    }
}

/// Looks up a label value in a sorted label set.
pub fn label<'a>(labels: &'a Labels, name: &str) -> Option<&'a str> {
    labels
        .binary_search_by(|(k, _)| k.as_str().cmp(name))
        .ok()
        .map(|i| labels[i].1.as_str())
}

/// How a label matcher compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchOp {
    Equal,
    NotEqual,
    /// Fully anchored regular expression (RE2 syntax, as in Prometheus).
    Regex,
    NotRegex,
}

/// A label matcher as in `{job="api", path=~"/v1/.*"}`. A label that is
/// absent matches as the empty string, as in Prometheus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelMatcher {
    pub name: String,
    pub op: MatchOp,
    pub value: String,
}

/// Metadata of one metric family, as `/api/v1/metadata` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricMeta {
    pub metric: String,
    /// `counter`, `gauge`, `histogram`, `summary` or `unknown`.
    pub kind: String,
    pub help: String,
    pub unit: String,
}
