//! The one data model shared by every signal.
//!
//! Owns the pure data types that ingest produces and storage and query consume:
//! resources, scopes, attribute values, spans, log records and metric points.
//! Nothing here performs I/O or knows about OTLP, HTTP or any store; the mapping
//! from OTLP lives in `ingest::otlp` and is documented in ARCHITECTURE.md.

mod ids;
pub mod log;
mod metric;
pub mod series;
pub mod time;
mod trace;
mod value;

use std::sync::Arc;

pub use ids::{IdError, SpanId, TraceId};
pub use log::LogRecord;
pub use metric::{
    Exemplar, ExpBuckets, ExpHistogramPoint, HistogramPoint, Metric, MetricData, NumberPoint,
    SummaryPoint, Temporality, FLAG_NO_RECORDED_VALUE,
};
pub use series::{label, LabelMatcher, Labels, MatchOp, MetricMeta, Sample, Series, METRIC_NAME};
pub use trace::{Span, SpanEvent, SpanKind, SpanLink, Status, StatusCode};
pub use value::{attr, attributes_json, AnyValue, Attributes};

/// The entity that produced telemetry (service, host, container...).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Resource {
    pub attributes: Attributes,
    pub dropped_attributes_count: u32,
    pub schema_url: String,
}

/// Service name used when a resource carries no `service.name`, as the
/// OpenTelemetry SDKs do.
pub const UNKNOWN_SERVICE: &str = "unknown_service";

impl Resource {
    /// The `service.name` attribute, or [`UNKNOWN_SERVICE`].
    pub fn service_name(&self) -> &str {
        match attr(&self.attributes, "service.name") {
            Some(AnyValue::String(s)) if !s.is_empty() => s,
            _ => UNKNOWN_SERVICE,
        }
    }
}

/// The instrumentation scope (library) that produced a record.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Scope {
    pub name: String,
    pub version: String,
    pub attributes: Attributes,
    pub dropped_attributes_count: u32,
    pub schema_url: String,
}

/// Resource and scope shared by all records of one OTLP scope block.
pub type SharedResource = Arc<Resource>;
pub type SharedScope = Arc<Scope>;

/// The three telemetry signals.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Signal {
    Traces,
    Metrics,
    Logs,
}

impl Signal {
    pub const ALL: [Signal; 3] = [Signal::Traces, Signal::Metrics, Signal::Logs];

    pub fn as_str(self) -> &'static str {
        match self {
            Signal::Traces => "traces",
            Signal::Metrics => "metrics",
            Signal::Logs => "logs",
        }
    }

    pub fn index(self) -> usize {
        match self {
            Signal::Traces => 0,
            Signal::Metrics => 1,
            Signal::Logs => 2,
        }
    }
}

/// A normalised batch of one signal, as handed from ingest to storage.
#[derive(Clone, Debug, PartialEq)]
pub enum Batch {
    Traces(Vec<Span>),
    Metrics(Vec<Metric>),
    Logs(Vec<LogRecord>),
    /// Metric samples already in Prometheus form (remote_write).
    Series(Vec<series::Series>),
}

impl Batch {
    pub fn signal(&self) -> Signal {
        match self {
            Batch::Traces(_) => Signal::Traces,
            Batch::Metrics(_) => Signal::Metrics,
            Batch::Logs(_) => Signal::Logs,
            Batch::Series(_) => Signal::Metrics,
        }
    }

    /// Number of records: spans, data points or log records.
    pub fn len(&self) -> usize {
        match self {
            Batch::Traces(s) => s.len(),
            Batch::Metrics(m) => m.iter().map(Metric::point_count).sum(),
            Batch::Logs(l) => l.len(),
            Batch::Series(s) => s.iter().map(|s| s.samples.len()).sum(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
