use super::{AnyValue, Attributes, SharedResource, SharedScope, SpanId, TraceId};

/// One log record. `time_ns` is always set after ingest: when the sender left
/// it at zero it is the observed time (or the receive time if that is zero too).
#[derive(Clone, Debug, PartialEq)]
pub struct LogRecord {
    pub resource: SharedResource,
    pub scope: SharedScope,
    pub time_ns: u64,
    pub observed_time_ns: u64,
    /// OTLP severity number, 0 (unspecified) to 24.
    pub severity_number: i32,
    pub severity_text: String,
    pub body: AnyValue,
    pub attributes: Attributes,
    pub dropped_attributes_count: u32,
    pub flags: u32,
    pub trace_id: Option<TraceId>,
    pub span_id: Option<SpanId>,
    pub event_name: String,
}

impl LogRecord {
    pub fn service_name(&self) -> &str {
        self.resource.service_name()
    }

    /// The severity text if the sender gave one, else the name of the
    /// severity number's range (`TRACE`, `DEBUG`, `INFO`, `WARN`, `ERROR`, `FATAL`).
    pub fn severity_label(&self) -> &str {
        if !self.severity_text.is_empty() {
            return &self.severity_text;
        }
        severity_name(self.severity_number)
    }
}

/// The short name of an OTLP severity number's range.
pub fn severity_name(n: i32) -> &'static str {
    match n {
        1..=4 => "TRACE",
        5..=8 => "DEBUG",
        9..=12 => "INFO",
        13..=16 => "WARN",
        17..=20 => "ERROR",
        21..=24 => "FATAL",
        _ => "UNSPECIFIED",
    }
}
