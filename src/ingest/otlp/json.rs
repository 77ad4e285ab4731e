//! OTLP/HTTP JSON ("application/json") request decoding and response encoding.
//!
//! The mapping is written by hand over [`serde_json::Value`] so that every error
//! names the exact location of the offending value, for example
//! `resourceSpans[0].scopeSpans[1].spans[2].traceId`.
//!
//! Decoding follows the OTLP specification's JSON encoding, which is the proto3
//! JSON mapping with two OTLP-specific exceptions:
//!
//! * trace and span ids are hex strings (either case), not base64;
//! * enum values may be given as integers (the recommended form) or as names.
//!
//! Beyond that the decoder is tolerant where the proto3 JSON mapping allows it:
//! lowerCamelCase and original snake_case field names are both accepted, unknown
//! fields are ignored, `null` means "default", 64-bit integers may be numbers or
//! decimal strings, and doubles may be numbers, numeric strings or the strings
//! `"NaN"`, `"Infinity"` and `"-Infinity"`.
//!
//! The decoder does not validate semantics: for instance an id of valid hex but
//! of the wrong length decodes to those bytes, so that the caller can reject the
//! record through a partial success instead of failing the whole request.

use std::fmt::Write as _;

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{
    any_value, AnyValue, ArrayValue, EntityRef, InstrumentationScope, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs, SeverityNumber};
use opentelemetry_proto::tonic::metrics::v1::{
    exemplar, exponential_histogram_data_point, metric, number_data_point, summary_data_point,
    AggregationTemporality, Exemplar, ExponentialHistogram, ExponentialHistogramDataPoint, Gauge,
    Histogram, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
    Summary, SummaryDataPoint,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    span, status, ResourceSpans, ScopeSpans, Span, Status,
};
use serde_json::{Map, Value};

/// Error for a request body that is not valid OTLP JSON.
///
/// `path` names the offending value (`resourceSpans[0].scopeSpans[1].spans[2].traceId`),
/// or is `(root)` for the document as a whole (including JSON syntax errors,
/// whose message carries the line and column).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid otlp json at {path}: {message}")]
pub struct JsonError {
    pub path: String,
    pub message: String,
}

type Res<T> = Result<T, JsonError>;

/// Maximum nesting of `arrayValue` / `kvlistValue` inside one attribute value.
const MAX_ANY_VALUE_DEPTH: usize = 32;

/// Largest magnitude below which every integer is exactly representable as f64.
const MAX_EXACT_FLOAT_INT: f64 = 9_007_199_254_740_992.0; // 2^53

/// Rendering of the empty path (the document itself).
const ROOT: &str = "(root)";

/// Longest prefix of an offending string value quoted back in an error message.
const MAX_QUOTED: usize = 64;

/// Standard base64, padding optional (proto3 JSON accepts both).
const B64_STANDARD: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// URL-safe base64, padding optional (proto3 JSON accepts it too).
const B64_URL_SAFE: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

// ---------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------

/// Decodes an OTLP/JSON `ExportTraceServiceRequest`.
pub fn decode_traces(body: &[u8]) -> Result<ExportTraceServiceRequest, JsonError> {
    let root = parse_document(body)?;
    let path = Path::Root;
    let o = Obj::new(&root, &path)?;
    Ok(ExportTraceServiceRequest {
        resource_spans: o.repeated("resourceSpans", "resource_spans", resource_spans)?,
    })
}

/// Decodes an OTLP/JSON `ExportMetricsServiceRequest`.
pub fn decode_metrics(body: &[u8]) -> Result<ExportMetricsServiceRequest, JsonError> {
    let root = parse_document(body)?;
    let path = Path::Root;
    let o = Obj::new(&root, &path)?;
    Ok(ExportMetricsServiceRequest {
        resource_metrics: o.repeated("resourceMetrics", "resource_metrics", resource_metrics)?,
    })
}

/// Decodes an OTLP/JSON `ExportLogsServiceRequest`.
pub fn decode_logs(body: &[u8]) -> Result<ExportLogsServiceRequest, JsonError> {
    let root = parse_document(body)?;
    let path = Path::Root;
    let o = Obj::new(&root, &path)?;
    Ok(ExportLogsServiceRequest {
        resource_logs: o.repeated("resourceLogs", "resource_logs", resource_logs)?,
    })
}

/// Encodes an `ExportTraceServiceResponse` as proto3 JSON:
/// `{}` without partial success, else
/// `{"partialSuccess":{"errorMessage":"...","rejectedSpans":"3"}}` (defaults omitted).
pub fn encode_trace_response(r: &ExportTraceServiceResponse) -> Vec<u8> {
    encode_partial_success(
        r.partial_success
            .as_ref()
            .map(|p| (p.rejected_spans, p.error_message.as_str())),
        "rejectedSpans",
    )
}

/// Encodes an `ExportMetricsServiceResponse` as proto3 JSON (`rejectedDataPoints`).
pub fn encode_metrics_response(r: &ExportMetricsServiceResponse) -> Vec<u8> {
    encode_partial_success(
        r.partial_success
            .as_ref()
            .map(|p| (p.rejected_data_points, p.error_message.as_str())),
        "rejectedDataPoints",
    )
}

/// Encodes an `ExportLogsServiceResponse` as proto3 JSON (`rejectedLogRecords`).
pub fn encode_logs_response(r: &ExportLogsServiceResponse) -> Vec<u8> {
    encode_partial_success(
        r.partial_success
            .as_ref()
            .map(|p| (p.rejected_log_records, p.error_message.as_str())),
        "rejectedLogRecords",
    )
}

/// Encodes a `google.rpc.Status` as proto3 JSON, e.g. `{"code":3,"message":"..."}`.
/// Following the proto3 mapping, a zero code or an empty message is omitted.
pub fn encode_status(code: i32, message: &str) -> Vec<u8> {
    let mut m = Map::new();
    if code != 0 {
        m.insert("code".to_owned(), Value::from(code));
    }
    if !message.is_empty() {
        m.insert("message".to_owned(), Value::from(message));
    }
    Value::Object(m).to_string().into_bytes()
}

fn encode_partial_success(partial: Option<(i64, &str)>, count_field: &str) -> Vec<u8> {
    let mut root = Map::new();
    if let Some((rejected, message)) = partial {
        let mut p = Map::new();
        if rejected != 0 {
            // int64 is a JSON string in the proto3 mapping.
            p.insert(count_field.to_owned(), Value::String(rejected.to_string()));
        }
        if !message.is_empty() {
            p.insert("errorMessage".to_owned(), Value::from(message));
        }
        root.insert("partialSuccess".to_owned(), Value::Object(p));
    }
    Value::Object(root).to_string().into_bytes()
}

// ---------------------------------------------------------------------------
// Paths and object access
// ---------------------------------------------------------------------------

/// Location of a value in the document, as a chain of borrowed parents; only
/// rendered into a string when an error is reported.
#[derive(Clone, Copy)]
enum Path<'a> {
    Root,
    Field(&'a Path<'a>, &'static str),
    Index(&'a Path<'a>, usize),
}

impl Path<'_> {
    fn render(&self) -> String {
        let mut out = String::new();
        self.write_to(&mut out);
        if out.is_empty() {
            out.push_str(ROOT);
        }
        out
    }

    fn write_to(&self, out: &mut String) {
        match *self {
            Path::Root => {}
            Path::Field(parent, name) => {
                parent.write_to(out);
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(name);
            }
            Path::Index(parent, index) => {
                parent.write_to(out);
                let _ = write!(out, "[{index}]");
            }
        }
    }

    fn err(&self, message: impl Into<String>) -> JsonError {
        JsonError {
            path: self.render(),
            message: message.into(),
        }
    }
}

fn parse_document(body: &[u8]) -> Res<Value> {
    serde_json::from_slice(body).map_err(|e| JsonError {
        path: ROOT.to_owned(),
        message: e.to_string(),
    })
}

/// A JSON object being decoded as a protobuf message.
struct Obj<'v, 'p> {
    map: &'v Map<String, Value>,
    path: &'p Path<'p>,
}

impl<'v, 'p> Obj<'v, 'p> {
    fn new(v: &'v Value, path: &'p Path<'p>) -> Res<Self> {
        match v {
            Value::Object(map) => Ok(Obj { map, path }),
            other => Err(path.err(format!("expected object, got {}", kind(other)))),
        }
    }

    /// Looks a field up by its JSON (lowerCamelCase) name and its original proto
    /// (snake_case) name. `null` counts as absent. Giving both names is an error.
    fn get(&self, camel: &'static str, snake: &'static str) -> Res<Option<&'v Value>> {
        let a = self.map.get(camel).filter(|v| !v.is_null());
        let b = if snake == camel {
            None
        } else {
            self.map.get(snake).filter(|v| !v.is_null())
        };
        match (a, b) {
            (Some(_), Some(_)) => Err(Path::Field(self.path, camel)
                .err(format!("field given twice, as \"{camel}\" and \"{snake}\""))),
            (a, b) => Ok(a.or(b)),
        }
    }

    /// Decodes a present, non-null field with `f`; `None` when absent or null.
    fn field<T>(
        &self,
        camel: &'static str,
        snake: &'static str,
        f: impl FnOnce(&'v Value, &Path<'_>) -> Res<T>,
    ) -> Res<Option<T>> {
        match self.get(camel, snake)? {
            None => Ok(None),
            Some(v) => f(v, &Path::Field(self.path, camel)).map(Some),
        }
    }

    /// Errors unless at most one of the members of a oneof is set.
    fn exclusive(&self, members: &[(&'static str, &'static str)]) -> Res<()> {
        let mut first: Option<&'static str> = None;
        for &(camel, snake) in members {
            if self.get(camel, snake)?.is_some() {
                if let Some(prev) = first {
                    return Err(self.path.err(format!(
                        "only one of the oneof fields may be set, got \"{prev}\" and \"{camel}\""
                    )));
                }
                first = Some(camel);
            }
        }
        Ok(())
    }

    fn repeated<T>(
        &self,
        camel: &'static str,
        snake: &'static str,
        f: impl Fn(&'v Value, &Path<'_>) -> Res<T>,
    ) -> Res<Vec<T>> {
        let items = self.field(camel, snake, |v, p| {
            let Value::Array(items) = v else {
                return Err(p.err(format!("expected array, got {}", kind(v))));
            };
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let ip = Path::Index(p, i);
                if item.is_null() {
                    return Err(ip.err("null is not allowed as an element of a repeated field"));
                }
                out.push(f(item, &ip)?);
            }
            Ok(out)
        })?;
        Ok(items.unwrap_or_default())
    }

    fn attributes(&self, camel: &'static str, snake: &'static str) -> Res<Vec<KeyValue>> {
        self.repeated(camel, snake, |v, p| key_value(v, p, 0))
    }

    fn string(&self, camel: &'static str, snake: &'static str) -> Res<String> {
        Ok(self.field(camel, snake, as_string)?.unwrap_or_default())
    }

    fn boolean(&self, camel: &'static str, snake: &'static str) -> Res<bool> {
        Ok(self.field(camel, snake, as_bool)?.unwrap_or_default())
    }

    fn u64(&self, camel: &'static str, snake: &'static str) -> Res<u64> {
        Ok(self.field(camel, snake, as_u64)?.unwrap_or_default())
    }

    fn u32(&self, camel: &'static str, snake: &'static str) -> Res<u32> {
        Ok(self.field(camel, snake, as_u32)?.unwrap_or_default())
    }

    fn i32(&self, camel: &'static str, snake: &'static str) -> Res<i32> {
        Ok(self.field(camel, snake, as_i32)?.unwrap_or_default())
    }

    fn f64(&self, camel: &'static str, snake: &'static str) -> Res<f64> {
        Ok(self.field(camel, snake, as_f64)?.unwrap_or_default())
    }

    fn opt_f64(&self, camel: &'static str, snake: &'static str) -> Res<Option<f64>> {
        self.field(camel, snake, as_f64)
    }

    /// A trace id (`hex_len` 32) or span id (`hex_len` 16) as a hex string.
    fn hex_id(&self, camel: &'static str, snake: &'static str, hex_len: usize) -> Res<Vec<u8>> {
        Ok(self
            .field(camel, snake, |v, p| as_hex_id(v, p, hex_len))?
            .unwrap_or_default())
    }

    fn enumeration(
        &self,
        camel: &'static str,
        snake: &'static str,
        type_name: &'static str,
        from_name: fn(&str) -> Option<i32>,
    ) -> Res<i32> {
        Ok(self
            .field(camel, snake, |v, p| as_enum(v, p, type_name, from_name))?
            .unwrap_or_default())
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Quotes (a prefix of) an offending string for an error message.
fn quote(s: &str) -> String {
    match s.char_indices().nth(MAX_QUOTED) {
        None => format!("{s:?}"),
        Some((end, _)) => format!("{:?}...", &s[..end]),
    }
}

// ---------------------------------------------------------------------------
// Scalars
// ---------------------------------------------------------------------------

fn as_str<'v>(v: &'v Value, p: &Path<'_>, what: &str) -> Res<&'v str> {
    match v {
        Value::String(s) => Ok(s),
        other => Err(p.err(format!("expected {what}, got {}", kind(other)))),
    }
}

fn as_string(v: &Value, p: &Path<'_>) -> Res<String> {
    as_str(v, p, "string").map(str::to_owned)
}

fn as_bool(v: &Value, p: &Path<'_>) -> Res<bool> {
    match v {
        Value::Bool(b) => Ok(*b),
        other => Err(p.err(format!("expected boolean, got {}", kind(other)))),
    }
}

/// Parses a numeric string in JSON-number-like syntax (rejecting the
/// `inf`/`nan` spellings that Rust's float parser would also accept).
fn parse_float_str(s: &str) -> Option<f64> {
    let numeric = s.bytes().any(|b| b.is_ascii_digit())
        && s.bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.' | b'e' | b'E'));
    if numeric {
        s.parse().ok()
    } else {
        None
    }
}

fn integral_float(f: f64, p: &Path<'_>, type_name: &str) -> Res<i128> {
    if !f.is_finite() || f.fract() != 0.0 {
        return Err(p.err(format!("expected {type_name}, got non-integer number {f}")));
    }
    if f.abs() > MAX_EXACT_FLOAT_INT {
        return Err(p.err(format!(
            "{type_name} value {f} in floating-point notation is not exact; send it as a decimal integer string"
        )));
    }
    // Exact: integral and within +-2^53.
    Ok(f as i128)
}

/// An integer given as a JSON number or a decimal string, range-checked by the caller.
fn as_integer(v: &Value, p: &Path<'_>, type_name: &str) -> Res<i128> {
    match v {
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                Ok(i128::from(u))
            } else if let Some(i) = n.as_i64() {
                Ok(i128::from(i))
            } else if let Some(f) = n.as_f64() {
                integral_float(f, p, type_name)
            } else {
                Err(p.err(format!(
                    "expected {type_name}, got unrepresentable number {n}"
                )))
            }
        }
        Value::String(s) => {
            if let Ok(i) = s.parse::<i128>() {
                Ok(i)
            } else if let Some(f) = parse_float_str(s) {
                integral_float(f, p, type_name)
            } else {
                Err(p.err(format!(
                    "expected {type_name} as a number or decimal string, got {}",
                    quote(s)
                )))
            }
        }
        other => Err(p.err(format!(
            "expected {type_name} as a number or decimal string, got {}",
            kind(other)
        ))),
    }
}

fn out_of_range(p: &Path<'_>, value: i128, type_name: &str) -> JsonError {
    p.err(format!("{value} is out of range for {type_name}"))
}

fn as_u64(v: &Value, p: &Path<'_>) -> Res<u64> {
    let i = as_integer(v, p, "uint64")?;
    u64::try_from(i).map_err(|_| out_of_range(p, i, "uint64"))
}

fn as_i64(v: &Value, p: &Path<'_>) -> Res<i64> {
    let i = as_integer(v, p, "int64")?;
    i64::try_from(i).map_err(|_| out_of_range(p, i, "int64"))
}

fn as_u32(v: &Value, p: &Path<'_>) -> Res<u32> {
    let i = as_integer(v, p, "uint32")?;
    u32::try_from(i).map_err(|_| out_of_range(p, i, "uint32"))
}

fn as_i32(v: &Value, p: &Path<'_>) -> Res<i32> {
    let i = as_integer(v, p, "int32")?;
    i32::try_from(i).map_err(|_| out_of_range(p, i, "int32"))
}

fn as_f64(v: &Value, p: &Path<'_>) -> Res<f64> {
    match v {
        Value::Number(n) => n
            .as_f64()
            .ok_or_else(|| p.err(format!("expected double, got unrepresentable number {n}"))),
        Value::String(s) => match s.as_str() {
            "NaN" => Ok(f64::NAN),
            "Infinity" => Ok(f64::INFINITY),
            "-Infinity" => Ok(f64::NEG_INFINITY),
            _ => parse_float_str(s).filter(|f| f.is_finite()).ok_or_else(|| {
                p.err(format!(
                    "expected double as a number, numeric string, \"NaN\", \"Infinity\" or \"-Infinity\", got {}",
                    quote(s)
                ))
            }),
        },
        other => Err(p.err(format!(
            "expected double as a number or string, got {}",
            kind(other)
        ))),
    }
}

fn as_enum(
    v: &Value,
    p: &Path<'_>,
    type_name: &str,
    from_name: fn(&str) -> Option<i32>,
) -> Res<i32> {
    match v {
        Value::String(s) => {
            if let Some(x) = from_name(s) {
                Ok(x)
            } else if let Ok(x) = s.parse::<i32>() {
                Ok(x)
            } else {
                Err(p.err(format!("unknown {type_name} value {}", quote(s))))
            }
        }
        Value::Number(_) => as_i32(v, p),
        other => Err(p.err(format!(
            "expected {type_name} as an integer or value name, got {}",
            kind(other)
        ))),
    }
}

/// Hex-encoded id (OTLP JSON deviates from proto3 here: ids are hex, not base64).
/// Only the encoding is checked; the length is left to the caller to validate.
fn as_hex_id(v: &Value, p: &Path<'_>, hex_len: usize) -> Res<Vec<u8>> {
    let s = as_str(v, p, "hex string")?;
    hex::decode(s).map_err(|e| match e {
        hex::FromHexError::InvalidHexCharacter { c, index } => p.err(format!(
            "expected {hex_len} hex characters, found invalid character {c:?} at position {index}"
        )),
        hex::FromHexError::OddLength => p.err(format!(
            "expected {hex_len} hex characters, got an odd number ({})",
            s.len()
        )),
        other => p.err(format!("expected {hex_len} hex characters: {other}")),
    })
}

fn as_base64(v: &Value, p: &Path<'_>) -> Res<Vec<u8>> {
    let s = as_str(v, p, "base64 string")?;
    B64_STANDARD
        .decode(s)
        .or_else(|e| B64_URL_SAFE.decode(s).map_err(|_| e))
        .map_err(|e| p.err(format!("invalid base64: {e}")))
}

// ---------------------------------------------------------------------------
// Common messages
// ---------------------------------------------------------------------------

/// `depth` is the number of arrayValue/kvlistValue containers enclosing the value.
fn key_value(v: &Value, p: &Path<'_>, depth: usize) -> Res<KeyValue> {
    let o = Obj::new(v, p)?;
    Ok(KeyValue {
        key: o.string("key", "key")?,
        value: o.field("value", "value", |v, p| any_value(v, p, depth))?,
        // Profiling-only dictionary reference; ignored for other signals.
        key_strindex: 0,
    })
}

const ANY_VALUE_MEMBERS: &[(&str, &str)] = &[
    ("stringValue", "string_value"),
    ("boolValue", "bool_value"),
    ("intValue", "int_value"),
    ("doubleValue", "double_value"),
    ("arrayValue", "array_value"),
    ("kvlistValue", "kvlist_value"),
    ("bytesValue", "bytes_value"),
];

fn any_value(v: &Value, p: &Path<'_>, depth: usize) -> Res<AnyValue> {
    use any_value::Value as V;
    let o = Obj::new(v, p)?;
    o.exclusive(ANY_VALUE_MEMBERS)?;
    let value = if let Some(s) = o.field("stringValue", "string_value", as_string)? {
        Some(V::StringValue(s))
    } else if let Some(b) = o.field("boolValue", "bool_value", as_bool)? {
        Some(V::BoolValue(b))
    } else if let Some(i) = o.field("intValue", "int_value", as_i64)? {
        Some(V::IntValue(i))
    } else if let Some(d) = o.field("doubleValue", "double_value", as_f64)? {
        Some(V::DoubleValue(d))
    } else if let Some(a) = o.field("arrayValue", "array_value", |v, p| array_value(v, p, depth))? {
        Some(V::ArrayValue(a))
    } else if let Some(kv) = o.field("kvlistValue", "kvlist_value", |v, p| {
        kvlist_value(v, p, depth)
    })? {
        Some(V::KvlistValue(kv))
    } else {
        o.field("bytesValue", "bytes_value", as_base64)?
            .map(V::BytesValue)
    };
    // `stringValueStrindex` is a profiling-only dictionary reference; per the
    // proto it is treated as absent for other signals (an unknown field here).
    Ok(AnyValue { value })
}

fn check_nesting(p: &Path<'_>, depth: usize) -> Res<()> {
    if depth >= MAX_ANY_VALUE_DEPTH {
        Err(p.err(format!(
            "attribute value nested too deeply (more than {MAX_ANY_VALUE_DEPTH} levels of arrayValue/kvlistValue)"
        )))
    } else {
        Ok(())
    }
}

fn array_value(v: &Value, p: &Path<'_>, depth: usize) -> Res<ArrayValue> {
    check_nesting(p, depth)?;
    let o = Obj::new(v, p)?;
    Ok(ArrayValue {
        values: o.repeated("values", "values", |v, p| any_value(v, p, depth + 1))?,
    })
}

fn kvlist_value(v: &Value, p: &Path<'_>, depth: usize) -> Res<KeyValueList> {
    check_nesting(p, depth)?;
    let o = Obj::new(v, p)?;
    Ok(KeyValueList {
        values: o.repeated("values", "values", |v, p| key_value(v, p, depth + 1))?,
    })
}

fn resource(v: &Value, p: &Path<'_>) -> Res<Resource> {
    let o = Obj::new(v, p)?;
    Ok(Resource {
        attributes: o.attributes("attributes", "attributes")?,
        dropped_attributes_count: o.u32("droppedAttributesCount", "dropped_attributes_count")?,
        entity_refs: o.repeated("entityRefs", "entity_refs", entity_ref)?,
    })
}

fn entity_ref(v: &Value, p: &Path<'_>) -> Res<EntityRef> {
    let o = Obj::new(v, p)?;
    Ok(EntityRef {
        schema_url: o.string("schemaUrl", "schema_url")?,
        r#type: o.string("type", "type")?,
        id_keys: o.repeated("idKeys", "id_keys", as_string)?,
        description_keys: o.repeated("descriptionKeys", "description_keys", as_string)?,
    })
}

fn scope(v: &Value, p: &Path<'_>) -> Res<InstrumentationScope> {
    let o = Obj::new(v, p)?;
    Ok(InstrumentationScope {
        name: o.string("name", "name")?,
        version: o.string("version", "version")?,
        attributes: o.attributes("attributes", "attributes")?,
        dropped_attributes_count: o.u32("droppedAttributesCount", "dropped_attributes_count")?,
    })
}

// ---------------------------------------------------------------------------
// Traces
// ---------------------------------------------------------------------------

fn span_kind_from_name(s: &str) -> Option<i32> {
    span::SpanKind::from_str_name(s).map(|k| k as i32)
}

fn status_code_from_name(s: &str) -> Option<i32> {
    status::StatusCode::from_str_name(s).map(|c| c as i32)
}

fn resource_spans(v: &Value, p: &Path<'_>) -> Res<ResourceSpans> {
    let o = Obj::new(v, p)?;
    Ok(ResourceSpans {
        resource: o.field("resource", "resource", resource)?,
        scope_spans: o.repeated("scopeSpans", "scope_spans", scope_spans)?,
        schema_url: o.string("schemaUrl", "schema_url")?,
    })
}

fn scope_spans(v: &Value, p: &Path<'_>) -> Res<ScopeSpans> {
    let o = Obj::new(v, p)?;
    Ok(ScopeSpans {
        scope: o.field("scope", "scope", scope)?,
        spans: o.repeated("spans", "spans", span)?,
        schema_url: o.string("schemaUrl", "schema_url")?,
    })
}

fn span(v: &Value, p: &Path<'_>) -> Res<Span> {
    let o = Obj::new(v, p)?;
    Ok(Span {
        trace_id: o.hex_id("traceId", "trace_id", 32)?,
        span_id: o.hex_id("spanId", "span_id", 16)?,
        trace_state: o.string("traceState", "trace_state")?,
        parent_span_id: o.hex_id("parentSpanId", "parent_span_id", 16)?,
        flags: o.u32("flags", "flags")?,
        name: o.string("name", "name")?,
        kind: o.enumeration("kind", "kind", "SpanKind", span_kind_from_name)?,
        start_time_unix_nano: o.u64("startTimeUnixNano", "start_time_unix_nano")?,
        end_time_unix_nano: o.u64("endTimeUnixNano", "end_time_unix_nano")?,
        attributes: o.attributes("attributes", "attributes")?,
        dropped_attributes_count: o.u32("droppedAttributesCount", "dropped_attributes_count")?,
        events: o.repeated("events", "events", span_event)?,
        dropped_events_count: o.u32("droppedEventsCount", "dropped_events_count")?,
        links: o.repeated("links", "links", span_link)?,
        dropped_links_count: o.u32("droppedLinksCount", "dropped_links_count")?,
        status: o.field("status", "status", span_status)?,
    })
}

fn span_event(v: &Value, p: &Path<'_>) -> Res<span::Event> {
    let o = Obj::new(v, p)?;
    Ok(span::Event {
        time_unix_nano: o.u64("timeUnixNano", "time_unix_nano")?,
        name: o.string("name", "name")?,
        attributes: o.attributes("attributes", "attributes")?,
        dropped_attributes_count: o.u32("droppedAttributesCount", "dropped_attributes_count")?,
    })
}

fn span_link(v: &Value, p: &Path<'_>) -> Res<span::Link> {
    let o = Obj::new(v, p)?;
    Ok(span::Link {
        trace_id: o.hex_id("traceId", "trace_id", 32)?,
        span_id: o.hex_id("spanId", "span_id", 16)?,
        trace_state: o.string("traceState", "trace_state")?,
        attributes: o.attributes("attributes", "attributes")?,
        dropped_attributes_count: o.u32("droppedAttributesCount", "dropped_attributes_count")?,
        flags: o.u32("flags", "flags")?,
    })
}

fn span_status(v: &Value, p: &Path<'_>) -> Res<Status> {
    let o = Obj::new(v, p)?;
    Ok(Status {
        message: o.string("message", "message")?,
        code: o.enumeration("code", "code", "StatusCode", status_code_from_name)?,
    })
}

// ---------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------

fn temporality_from_name(s: &str) -> Option<i32> {
    AggregationTemporality::from_str_name(s).map(|t| t as i32)
}

fn resource_metrics(v: &Value, p: &Path<'_>) -> Res<ResourceMetrics> {
    let o = Obj::new(v, p)?;
    Ok(ResourceMetrics {
        resource: o.field("resource", "resource", resource)?,
        scope_metrics: o.repeated("scopeMetrics", "scope_metrics", scope_metrics)?,
        schema_url: o.string("schemaUrl", "schema_url")?,
    })
}

fn scope_metrics(v: &Value, p: &Path<'_>) -> Res<ScopeMetrics> {
    let o = Obj::new(v, p)?;
    Ok(ScopeMetrics {
        scope: o.field("scope", "scope", scope)?,
        metrics: o.repeated("metrics", "metrics", metric)?,
        schema_url: o.string("schemaUrl", "schema_url")?,
    })
}

const METRIC_DATA_MEMBERS: &[(&str, &str)] = &[
    ("gauge", "gauge"),
    ("sum", "sum"),
    ("histogram", "histogram"),
    ("exponentialHistogram", "exponential_histogram"),
    ("summary", "summary"),
];

fn metric(v: &Value, p: &Path<'_>) -> Res<Metric> {
    use metric::Data;
    let o = Obj::new(v, p)?;
    o.exclusive(METRIC_DATA_MEMBERS)?;
    let data = if let Some(g) = o.field("gauge", "gauge", gauge)? {
        Some(Data::Gauge(g))
    } else if let Some(s) = o.field("sum", "sum", sum)? {
        Some(Data::Sum(s))
    } else if let Some(h) = o.field("histogram", "histogram", histogram)? {
        Some(Data::Histogram(h))
    } else if let Some(e) = o.field(
        "exponentialHistogram",
        "exponential_histogram",
        exponential_histogram,
    )? {
        Some(Data::ExponentialHistogram(e))
    } else {
        o.field("summary", "summary", summary)?.map(Data::Summary)
    };
    Ok(Metric {
        name: o.string("name", "name")?,
        description: o.string("description", "description")?,
        unit: o.string("unit", "unit")?,
        metadata: o.attributes("metadata", "metadata")?,
        data,
    })
}

fn gauge(v: &Value, p: &Path<'_>) -> Res<Gauge> {
    let o = Obj::new(v, p)?;
    Ok(Gauge {
        data_points: o.repeated("dataPoints", "data_points", number_data_point)?,
    })
}

fn sum(v: &Value, p: &Path<'_>) -> Res<Sum> {
    let o = Obj::new(v, p)?;
    Ok(Sum {
        data_points: o.repeated("dataPoints", "data_points", number_data_point)?,
        aggregation_temporality: o.enumeration(
            "aggregationTemporality",
            "aggregation_temporality",
            "AggregationTemporality",
            temporality_from_name,
        )?,
        is_monotonic: o.boolean("isMonotonic", "is_monotonic")?,
    })
}

fn histogram(v: &Value, p: &Path<'_>) -> Res<Histogram> {
    let o = Obj::new(v, p)?;
    Ok(Histogram {
        data_points: o.repeated("dataPoints", "data_points", histogram_data_point)?,
        aggregation_temporality: o.enumeration(
            "aggregationTemporality",
            "aggregation_temporality",
            "AggregationTemporality",
            temporality_from_name,
        )?,
    })
}

fn exponential_histogram(v: &Value, p: &Path<'_>) -> Res<ExponentialHistogram> {
    let o = Obj::new(v, p)?;
    Ok(ExponentialHistogram {
        data_points: o.repeated(
            "dataPoints",
            "data_points",
            exponential_histogram_data_point,
        )?,
        aggregation_temporality: o.enumeration(
            "aggregationTemporality",
            "aggregation_temporality",
            "AggregationTemporality",
            temporality_from_name,
        )?,
    })
}

fn summary(v: &Value, p: &Path<'_>) -> Res<Summary> {
    let o = Obj::new(v, p)?;
    Ok(Summary {
        data_points: o.repeated("dataPoints", "data_points", summary_data_point)?,
    })
}

const NUMBER_VALUE_MEMBERS: &[(&str, &str)] = &[("asDouble", "as_double"), ("asInt", "as_int")];

fn number_data_point(v: &Value, p: &Path<'_>) -> Res<NumberDataPoint> {
    use number_data_point::Value as V;
    let o = Obj::new(v, p)?;
    o.exclusive(NUMBER_VALUE_MEMBERS)?;
    let value = match o.field("asDouble", "as_double", as_f64)? {
        Some(d) => Some(V::AsDouble(d)),
        None => o.field("asInt", "as_int", as_i64)?.map(V::AsInt),
    };
    Ok(NumberDataPoint {
        attributes: o.attributes("attributes", "attributes")?,
        start_time_unix_nano: o.u64("startTimeUnixNano", "start_time_unix_nano")?,
        time_unix_nano: o.u64("timeUnixNano", "time_unix_nano")?,
        exemplars: o.repeated("exemplars", "exemplars", exemplar)?,
        flags: o.u32("flags", "flags")?,
        value,
    })
}

fn histogram_data_point(v: &Value, p: &Path<'_>) -> Res<HistogramDataPoint> {
    let o = Obj::new(v, p)?;
    Ok(HistogramDataPoint {
        attributes: o.attributes("attributes", "attributes")?,
        start_time_unix_nano: o.u64("startTimeUnixNano", "start_time_unix_nano")?,
        time_unix_nano: o.u64("timeUnixNano", "time_unix_nano")?,
        count: o.u64("count", "count")?,
        sum: o.opt_f64("sum", "sum")?,
        bucket_counts: o.repeated("bucketCounts", "bucket_counts", as_u64)?,
        explicit_bounds: o.repeated("explicitBounds", "explicit_bounds", as_f64)?,
        exemplars: o.repeated("exemplars", "exemplars", exemplar)?,
        flags: o.u32("flags", "flags")?,
        min: o.opt_f64("min", "min")?,
        max: o.opt_f64("max", "max")?,
    })
}

fn exponential_histogram_data_point(v: &Value, p: &Path<'_>) -> Res<ExponentialHistogramDataPoint> {
    let o = Obj::new(v, p)?;
    Ok(ExponentialHistogramDataPoint {
        attributes: o.attributes("attributes", "attributes")?,
        start_time_unix_nano: o.u64("startTimeUnixNano", "start_time_unix_nano")?,
        time_unix_nano: o.u64("timeUnixNano", "time_unix_nano")?,
        count: o.u64("count", "count")?,
        sum: o.opt_f64("sum", "sum")?,
        scale: o.i32("scale", "scale")?,
        zero_count: o.u64("zeroCount", "zero_count")?,
        positive: o.field("positive", "positive", buckets)?,
        negative: o.field("negative", "negative", buckets)?,
        flags: o.u32("flags", "flags")?,
        exemplars: o.repeated("exemplars", "exemplars", exemplar)?,
        min: o.opt_f64("min", "min")?,
        max: o.opt_f64("max", "max")?,
        zero_threshold: o.f64("zeroThreshold", "zero_threshold")?,
    })
}

fn buckets(v: &Value, p: &Path<'_>) -> Res<exponential_histogram_data_point::Buckets> {
    let o = Obj::new(v, p)?;
    Ok(exponential_histogram_data_point::Buckets {
        offset: o.i32("offset", "offset")?,
        bucket_counts: o.repeated("bucketCounts", "bucket_counts", as_u64)?,
    })
}

fn summary_data_point(v: &Value, p: &Path<'_>) -> Res<SummaryDataPoint> {
    let o = Obj::new(v, p)?;
    Ok(SummaryDataPoint {
        attributes: o.attributes("attributes", "attributes")?,
        start_time_unix_nano: o.u64("startTimeUnixNano", "start_time_unix_nano")?,
        time_unix_nano: o.u64("timeUnixNano", "time_unix_nano")?,
        count: o.u64("count", "count")?,
        sum: o.f64("sum", "sum")?,
        quantile_values: o.repeated("quantileValues", "quantile_values", value_at_quantile)?,
        flags: o.u32("flags", "flags")?,
    })
}

fn value_at_quantile(v: &Value, p: &Path<'_>) -> Res<summary_data_point::ValueAtQuantile> {
    let o = Obj::new(v, p)?;
    Ok(summary_data_point::ValueAtQuantile {
        quantile: o.f64("quantile", "quantile")?,
        value: o.f64("value", "value")?,
    })
}

fn exemplar(v: &Value, p: &Path<'_>) -> Res<Exemplar> {
    use exemplar::Value as V;
    let o = Obj::new(v, p)?;
    o.exclusive(NUMBER_VALUE_MEMBERS)?;
    let value = match o.field("asDouble", "as_double", as_f64)? {
        Some(d) => Some(V::AsDouble(d)),
        None => o.field("asInt", "as_int", as_i64)?.map(V::AsInt),
    };
    Ok(Exemplar {
        filtered_attributes: o.attributes("filteredAttributes", "filtered_attributes")?,
        time_unix_nano: o.u64("timeUnixNano", "time_unix_nano")?,
        span_id: o.hex_id("spanId", "span_id", 16)?,
        trace_id: o.hex_id("traceId", "trace_id", 32)?,
        value,
    })
}

// ---------------------------------------------------------------------------
// Logs
// ---------------------------------------------------------------------------

fn severity_from_name(s: &str) -> Option<i32> {
    SeverityNumber::from_str_name(s).map(|n| n as i32)
}

fn resource_logs(v: &Value, p: &Path<'_>) -> Res<ResourceLogs> {
    let o = Obj::new(v, p)?;
    Ok(ResourceLogs {
        resource: o.field("resource", "resource", resource)?,
        scope_logs: o.repeated("scopeLogs", "scope_logs", scope_logs)?,
        schema_url: o.string("schemaUrl", "schema_url")?,
    })
}

fn scope_logs(v: &Value, p: &Path<'_>) -> Res<ScopeLogs> {
    let o = Obj::new(v, p)?;
    Ok(ScopeLogs {
        scope: o.field("scope", "scope", scope)?,
        log_records: o.repeated("logRecords", "log_records", log_record)?,
        schema_url: o.string("schemaUrl", "schema_url")?,
    })
}

fn log_record(v: &Value, p: &Path<'_>) -> Res<LogRecord> {
    let o = Obj::new(v, p)?;
    Ok(LogRecord {
        time_unix_nano: o.u64("timeUnixNano", "time_unix_nano")?,
        observed_time_unix_nano: o.u64("observedTimeUnixNano", "observed_time_unix_nano")?,
        severity_number: o.enumeration(
            "severityNumber",
            "severity_number",
            "SeverityNumber",
            severity_from_name,
        )?,
        severity_text: o.string("severityText", "severity_text")?,
        body: o.field("body", "body", |v, p| any_value(v, p, 0))?,
        attributes: o.attributes("attributes", "attributes")?,
        dropped_attributes_count: o.u32("droppedAttributesCount", "dropped_attributes_count")?,
        flags: o.u32("flags", "flags")?,
        trace_id: o.hex_id("traceId", "trace_id", 32)?,
        span_id: o.hex_id("spanId", "span_id", 16)?,
        event_name: o.string("eventName", "event_name")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsPartialSuccess;
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsPartialSuccess;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTracePartialSuccess;
    use prost::Message as _;

    type V = any_value::Value;

    // ---- helpers ----------------------------------------------------------

    /// Reads `<testdata>/otlp/<name>`, or `None` when the shared test data
    /// is absent (the skip is reported by `conformance_dir`).
    fn testdata(name: &str) -> Option<Vec<u8>> {
        let dir = crate::testutil::conformance_dir(&format!("otlp json {name}"))?;
        let path = dir.join("otlp").join(name);
        Some(std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display())))
    }

    fn hexb(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> &'a V {
        attrs
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref())
            .and_then(|v| v.value.as_ref())
            .unwrap_or_else(|| panic!("attribute {key} missing in {attrs:?}"))
    }

    fn s(v: &str) -> V {
        V::StringValue(v.to_owned())
    }

    fn check_resource_and_scope(res: &Option<Resource>, sc: &Option<InstrumentationScope>) {
        let res = res.as_ref().unwrap();
        assert_eq!(res.attributes.len(), 1);
        assert_eq!(attr(&res.attributes, "service.name"), &s("my.service"));
        let sc = sc.as_ref().unwrap();
        assert_eq!(sc.name, "my.library");
        assert_eq!(sc.version, "1.0.0");
        assert_eq!(
            attr(&sc.attributes, "my.scope.attribute"),
            &s("some scope attribute")
        );
    }

    fn one_span(json: &str) -> String {
        format!(r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{json}]}}]}}]}}"#)
    }

    fn one_log(json: &str) -> String {
        format!(r#"{{"resourceLogs":[{{"scopeLogs":[{{"logRecords":[{json}]}}]}}]}}"#)
    }

    fn one_metric(json: &str) -> String {
        format!(r#"{{"resourceMetrics":[{{"scopeMetrics":[{{"metrics":[{json}]}}]}}]}}"#)
    }

    fn span_of(json: &str) -> Result<Span, JsonError> {
        let mut req = decode_traces(one_span(json).as_bytes())?;
        Ok(req
            .resource_spans
            .remove(0)
            .scope_spans
            .remove(0)
            .spans
            .remove(0))
    }

    fn log_of(json: &str) -> Result<LogRecord, JsonError> {
        let mut req = decode_logs(one_log(json).as_bytes())?;
        Ok(req
            .resource_logs
            .remove(0)
            .scope_logs
            .remove(0)
            .log_records
            .remove(0))
    }

    fn metric_of(json: &str) -> Result<Metric, JsonError> {
        let mut req = decode_metrics(one_metric(json).as_bytes())?;
        Ok(req
            .resource_metrics
            .remove(0)
            .scope_metrics
            .remove(0)
            .metrics
            .remove(0))
    }

    fn number_point(m: &Metric) -> &NumberDataPoint {
        match &m.data {
            Some(metric::Data::Gauge(g)) => &g.data_points[0],
            Some(metric::Data::Sum(s)) => &s.data_points[0],
            other => panic!("not a number metric: {other:?}"),
        }
    }

    fn body_of(any_json: &str) -> Result<Option<V>, JsonError> {
        Ok(log_of(&format!(r#"{{"body":{any_json}}}"#))?
            .body
            .unwrap()
            .value)
    }

    // ---- conformance files --------------------------------------------------

    #[test]
    fn conformance_trace() {
        let Some(body) = testdata("trace.json") else {
            return;
        };
        let req = decode_traces(&body).unwrap();
        assert_eq!(req.resource_spans.len(), 1);
        let rs = &req.resource_spans[0];
        assert_eq!(rs.scope_spans.len(), 1);
        check_resource_and_scope(&rs.resource, &rs.scope_spans[0].scope);
        let spans = &rs.scope_spans[0].spans;
        assert_eq!(spans.len(), 1);
        let sp = &spans[0];
        assert_eq!(
            sp.trace_id,
            vec![
                0x5B, 0x8E, 0xFF, 0xF7, 0x98, 0x03, 0x81, 0x03, 0xD2, 0x69, 0xB6, 0x33, 0x81, 0x3F,
                0xC6, 0x0C
            ]
        );
        assert_eq!(
            sp.span_id,
            vec![0xEE, 0xE1, 0x9B, 0x7E, 0xC3, 0xC1, 0xB1, 0x74]
        );
        assert_eq!(
            sp.parent_span_id,
            vec![0xEE, 0xE1, 0x9B, 0x7E, 0xC3, 0xC1, 0xB1, 0x73]
        );
        assert_eq!(sp.name, "I'm a server span");
        assert_eq!(sp.start_time_unix_nano, 1_544_712_660_000_000_000);
        assert_eq!(sp.end_time_unix_nano, 1_544_712_661_000_000_000);
        assert_eq!(sp.kind, span::SpanKind::Server as i32);
        assert_eq!(attr(&sp.attributes, "my.span.attr"), &s("some value"));
        assert!(sp.status.is_none());
        assert!(sp.events.is_empty() && sp.links.is_empty());
    }

    #[test]
    fn conformance_metrics() {
        let Some(body) = testdata("metrics.json") else {
            return;
        };
        let req = decode_metrics(&body).unwrap();
        let rm = &req.resource_metrics[0];
        check_resource_and_scope(&rm.resource, &rm.scope_metrics[0].scope);
        let ms = &rm.scope_metrics[0].metrics;
        assert_eq!(ms.len(), 4);
        const T: u64 = 1_544_712_660_300_000_000;

        assert_eq!(ms[0].name, "my.counter");
        assert_eq!(ms[0].unit, "1");
        assert_eq!(ms[0].description, "I am a Counter");
        let Some(metric::Data::Sum(sum)) = &ms[0].data else {
            panic!("expected sum: {:?}", ms[0].data);
        };
        assert_eq!(
            sum.aggregation_temporality,
            AggregationTemporality::Delta as i32
        );
        assert!(sum.is_monotonic);
        let dp = &sum.data_points[0];
        assert_eq!(dp.value, Some(number_data_point::Value::AsDouble(5.0)));
        assert_eq!(dp.start_time_unix_nano, T);
        assert_eq!(dp.time_unix_nano, T);
        assert_eq!(attr(&dp.attributes, "my.counter.attr"), &s("some value"));

        assert_eq!(ms[1].name, "my.gauge");
        let Some(metric::Data::Gauge(g)) = &ms[1].data else {
            panic!("expected gauge: {:?}", ms[1].data);
        };
        assert_eq!(
            g.data_points[0].value,
            Some(number_data_point::Value::AsDouble(10.0))
        );
        assert_eq!(g.data_points[0].start_time_unix_nano, 0);
        assert_eq!(g.data_points[0].time_unix_nano, T);

        assert_eq!(ms[2].name, "my.histogram");
        let Some(metric::Data::Histogram(h)) = &ms[2].data else {
            panic!("expected histogram: {:?}", ms[2].data);
        };
        assert_eq!(h.aggregation_temporality, 1);
        let hp = &h.data_points[0];
        assert_eq!(hp.count, 2);
        assert_eq!(hp.sum, Some(2.0));
        assert_eq!(hp.bucket_counts, vec![1, 1]);
        assert_eq!(hp.explicit_bounds, vec![1.0]);
        assert_eq!(hp.min, Some(0.0));
        assert_eq!(hp.max, Some(2.0));
        assert_eq!(hp.start_time_unix_nano, T);
        assert_eq!(attr(&hp.attributes, "my.histogram.attr"), &s("some value"));

        assert_eq!(ms[3].name, "my.exponential.histogram");
        let Some(metric::Data::ExponentialHistogram(e)) = &ms[3].data else {
            panic!("expected exponential histogram: {:?}", ms[3].data);
        };
        assert_eq!(e.aggregation_temporality, 1);
        let ep = &e.data_points[0];
        assert_eq!(ep.count, 3);
        assert_eq!(ep.sum, Some(10.0));
        assert_eq!(ep.scale, 0);
        assert_eq!(ep.zero_count, 1);
        let pos = ep.positive.as_ref().unwrap();
        assert_eq!(pos.offset, 1);
        assert_eq!(pos.bucket_counts, vec![0, 2]);
        assert!(ep.negative.is_none());
        assert_eq!(ep.min, Some(0.0));
        assert_eq!(ep.max, Some(5.0));
        assert_eq!(ep.zero_threshold, 0.0);
        assert_eq!(
            attr(&ep.attributes, "my.exponential.histogram.attr"),
            &s("some value")
        );
    }

    #[test]
    fn conformance_logs() {
        let Some(body) = testdata("logs.json") else {
            return;
        };
        let req = decode_logs(&body).unwrap();
        let rl = &req.resource_logs[0];
        check_resource_and_scope(&rl.resource, &rl.scope_logs[0].scope);
        let recs = &rl.scope_logs[0].log_records;
        assert_eq!(recs.len(), 1);
        let r = &recs[0];
        assert_eq!(r.time_unix_nano, 1_544_712_660_300_000_000);
        assert_eq!(r.observed_time_unix_nano, 1_544_712_660_300_000_000);
        assert_eq!(r.severity_number, SeverityNumber::Info2 as i32);
        assert_eq!(r.severity_text, "Information");
        assert_eq!(r.trace_id, hexb("5b8efff798038103d269b633813fc60c"));
        assert_eq!(r.span_id, hexb("eee19b7ec3c1b174"));
        assert_eq!(
            r.body.as_ref().unwrap().value,
            Some(s("Example log record"))
        );
        assert_eq!(r.attributes.len(), 6);
        assert_eq!(attr(&r.attributes, "string.attribute"), &s("some string"));
        assert_eq!(
            attr(&r.attributes, "boolean.attribute"),
            &V::BoolValue(true)
        );
        assert_eq!(attr(&r.attributes, "int.attribute"), &V::IntValue(10));
        assert_eq!(
            attr(&r.attributes, "double.attribute"),
            &V::DoubleValue(637.704)
        );
        let V::ArrayValue(arr) = attr(&r.attributes, "array.attribute") else {
            panic!("expected array");
        };
        let items: Vec<_> = arr.values.iter().map(|v| v.value.clone()).collect();
        assert_eq!(items, vec![Some(s("many")), Some(s("values"))]);
        let V::KvlistValue(kv) = attr(&r.attributes, "map.attribute") else {
            panic!("expected kvlist");
        };
        assert_eq!(kv.values.len(), 1);
        assert_eq!(attr(&kv.values, "some.map.key"), &s("some value"));
        assert!(r.event_name.is_empty());
    }

    #[test]
    fn conformance_events() {
        let Some(body) = testdata("events.json") else {
            return;
        };
        let req = decode_logs(&body).unwrap();
        let rl = &req.resource_logs[0];
        check_resource_and_scope(&rl.resource, &rl.scope_logs[0].scope);
        let r = &rl.scope_logs[0].log_records[0];
        assert_eq!(r.event_name, "browser.page_view");
        assert_eq!(r.time_unix_nano, 1_544_712_660_300_000_000);
        assert_eq!(r.observed_time_unix_nano, 1_544_712_660_300_000_000);
        assert_eq!(r.severity_number, SeverityNumber::Info as i32);
        assert_eq!(r.severity_text, "test severity text");
        assert!(r.trace_id.is_empty() && r.span_id.is_empty());
        assert_eq!(
            attr(&r.attributes, "event.attribute"),
            &s("some event attribute")
        );
        let Some(V::KvlistValue(kv)) = &r.body.as_ref().unwrap().value else {
            panic!("expected kvlist body: {:?}", r.body);
        };
        let keys: Vec<_> = kv.values.iter().map(|k| k.key.as_str()).collect();
        assert_eq!(keys, vec!["type", "url", "referrer", "title"]);
        assert_eq!(attr(&kv.values, "type"), &V::IntValue(0));
        assert_eq!(
            attr(&kv.values, "url"),
            &s("https://www.guidgenerator.com/online-guid-generator.aspx")
        );
        assert_eq!(attr(&kv.values, "referrer"), &s("https://wwww.google.com"));
        assert_eq!(attr(&kv.values, "title"), &s("Free Online GUID Generator"));
    }

    #[test]
    fn conformance_files_roundtrip_through_protobuf() {
        if let Some(b) = testdata("trace.json") {
            let req = decode_traces(&b).unwrap();
            let back = ExportTraceServiceRequest::decode(req.encode_to_vec().as_slice()).unwrap();
            assert_eq!(back, req);
        }
        if let Some(b) = testdata("metrics.json") {
            let req = decode_metrics(&b).unwrap();
            let back = ExportMetricsServiceRequest::decode(req.encode_to_vec().as_slice()).unwrap();
            assert_eq!(back, req);
        }
        for name in ["logs.json", "events.json"] {
            if let Some(b) = testdata(name) {
                let req = decode_logs(&b).unwrap();
                let back =
                    ExportLogsServiceRequest::decode(req.encode_to_vec().as_slice()).unwrap();
                assert_eq!(back, req);
            }
        }
    }

    // ---- self-written fixtures ---------------------------------------------

    const RICH_TRACE: &str = r#"{
      "resourceSpans": [{
        "resource": {
          "attributes": [{"key": "service.name", "value": {"stringValue": "checkout"}}],
          "droppedAttributesCount": 2,
          "entityRefs": [{"type": "service", "idKeys": ["service.name"], "schemaUrl": "s"}]
        },
        "schemaUrl": "https://opentelemetry.io/schemas/1.26.0",
        "scopeSpans": [{
          "scope": {"name": "lib", "version": "2", "droppedAttributesCount": "1"},
          "schemaUrl": "scope-schema",
          "spans": [{
            "traceId": "0102030405060708090a0b0c0d0e0f10",
            "spanId": "a1a2a3a4a5a6a7a8",
            "parentSpanId": "",
            "traceState": "k=v",
            "flags": 257,
            "name": "GET /cart",
            "kind": "SPAN_KIND_CLIENT",
            "startTimeUnixNano": 1700000000000000000,
            "endTimeUnixNano": "1700000000500000000",
            "attributes": [
              {"key": "http.status_code", "value": {"intValue": 200}},
              {"key": "ratio", "value": {"doubleValue": "0.25"}},
              {"key": "raw", "value": {"bytesValue": "aGVsbG8="}},
              {"key": "empty", "value": {}},
              {"key": "novalue"}
            ],
            "droppedAttributesCount": 3,
            "events": [{
              "timeUnixNano": "1700000000100000000",
              "name": "exception",
              "attributes": [{"key": "exception.type", "value": {"stringValue": "IOError"}}],
              "droppedAttributesCount": 1
            }],
            "droppedEventsCount": 4,
            "links": [{
              "traceId": "ffeeddccbbaa99887766554433221100",
              "spanId": "0011223344556677",
              "traceState": "a=b",
              "attributes": [{"key": "link.kind", "value": {"stringValue": "follows"}}],
              "droppedAttributesCount": 5,
              "flags": 1
            }],
            "droppedLinksCount": 6,
            "status": {"message": "boom", "code": "STATUS_CODE_ERROR"}
          }]
        }]
      }]
    }"#;

    const RICH_METRICS: &str = r#"{
      "resourceMetrics": [{
        "resource": {"attributes": [{"key": "host", "value": {"stringValue": "h1"}}]},
        "scopeMetrics": [{
          "scope": {"name": "m"},
          "metrics": [
            {
              "name": "requests", "unit": "{request}", "description": "d",
              "metadata": [{"key": "meta", "value": {"boolValue": false}}],
              "sum": {
                "aggregationTemporality": "AGGREGATION_TEMPORALITY_CUMULATIVE",
                "isMonotonic": true,
                "dataPoints": [{
                  "asInt": "-42",
                  "startTimeUnixNano": "1", "timeUnixNano": 2, "flags": 1,
                  "exemplars": [{
                    "filteredAttributes": [{"key": "user", "value": {"stringValue": "u"}}],
                    "timeUnixNano": "3",
                    "spanId": "1112131415161718",
                    "traceId": "2122232425262728292a2b2c2d2e2f30",
                    "asDouble": 1.5
                  }]
                }]
              }
            },
            {"name": "temp", "gauge": {"dataPoints": [{"asDouble": "-Infinity", "timeUnixNano": "9"}]}},
            {
              "name": "latency",
              "histogram": {
                "aggregationTemporality": 2,
                "dataPoints": [{
                  "count": 6, "sum": "12.5", "bucketCounts": [1, "2", 3],
                  "explicitBounds": [0.5, "1"], "min": "Infinity", "max": 9,
                  "exemplars": [{"asInt": 7, "timeUnixNano": "4"}]
                }]
              }
            },
            {
              "name": "size",
              "exponentialHistogram": {
                "aggregationTemporality": 1,
                "dataPoints": [{
                  "count": "10", "scale": -3, "zeroCount": 2, "zeroThreshold": 0.001,
                  "positive": {"offset": -2, "bucketCounts": ["3", "4"]},
                  "negative": {"offset": "5", "bucketCounts": [1]},
                  "flags": 0
                }]
              }
            },
            {
              "name": "rpc",
              "summary": {
                "dataPoints": [{
                  "count": "5", "sum": 17.5, "timeUnixNano": "8",
                  "quantileValues": [{"quantile": 0.5, "value": 3}, {"quantile": 1, "value": "9.5"}]
                }]
              }
            },
            {"name": "nodata"}
          ]
        }]
      }]
    }"#;

    const RICH_LOGS: &str = r#"{
      "resourceLogs": [{
        "resource": {},
        "schemaUrl": "rs",
        "scopeLogs": [{
          "scope": {"name": "logger"},
          "schemaUrl": "ss",
          "logRecords": [{
            "timeUnixNano": "1700000000000000001",
            "observedTimeUnixNano": 1700000000,
            "severityNumber": "SEVERITY_NUMBER_WARN",
            "severityText": "WARN",
            "body": {"arrayValue": {"values": [{"intValue": "9223372036854775807"}, {"kvlistValue": {"values": [{"key": "k", "value": {"doubleValue": 2}}]}}]}},
            "attributes": [{"key": "a", "value": {"stringValue": "b"}}],
            "droppedAttributesCount": 7,
            "flags": 1,
            "traceId": "5B8EFFF798038103D269B633813FC60C",
            "spanId": "eee19b7ec3c1b174",
            "eventName": "app.started"
          }]
        }]
      }]
    }"#;

    #[test]
    fn rich_trace_fixture_decodes_every_field() {
        let req = decode_traces(RICH_TRACE.as_bytes()).unwrap();
        let rs = &req.resource_spans[0];
        assert_eq!(rs.schema_url, "https://opentelemetry.io/schemas/1.26.0");
        let res = rs.resource.as_ref().unwrap();
        assert_eq!(res.dropped_attributes_count, 2);
        assert_eq!(res.entity_refs[0].r#type, "service");
        assert_eq!(res.entity_refs[0].id_keys, vec!["service.name"]);
        let ss = &rs.scope_spans[0];
        assert_eq!(ss.schema_url, "scope-schema");
        assert_eq!(ss.scope.as_ref().unwrap().dropped_attributes_count, 1);
        let sp = &ss.spans[0];
        assert_eq!(sp.trace_id, (1u8..=16).collect::<Vec<_>>());
        assert_eq!(sp.span_id, hexb("a1a2a3a4a5a6a7a8"));
        assert!(sp.parent_span_id.is_empty());
        assert_eq!(sp.trace_state, "k=v");
        assert_eq!(sp.flags, 257);
        assert_eq!(sp.kind, span::SpanKind::Client as i32);
        assert_eq!(sp.start_time_unix_nano, 1_700_000_000_000_000_000);
        assert_eq!(sp.end_time_unix_nano, 1_700_000_000_500_000_000);
        assert_eq!(attr(&sp.attributes, "http.status_code"), &V::IntValue(200));
        assert_eq!(attr(&sp.attributes, "ratio"), &V::DoubleValue(0.25));
        assert_eq!(
            attr(&sp.attributes, "raw"),
            &V::BytesValue(b"hello".to_vec())
        );
        assert_eq!(sp.attributes[3].value, Some(AnyValue { value: None }));
        assert_eq!(sp.attributes[4].value, None);
        assert_eq!(sp.dropped_attributes_count, 3);
        let ev = &sp.events[0];
        assert_eq!(ev.time_unix_nano, 1_700_000_000_100_000_000);
        assert_eq!(ev.name, "exception");
        assert_eq!(attr(&ev.attributes, "exception.type"), &s("IOError"));
        assert_eq!(ev.dropped_attributes_count, 1);
        assert_eq!(sp.dropped_events_count, 4);
        let ln = &sp.links[0];
        assert_eq!(ln.trace_id, hexb("ffeeddccbbaa99887766554433221100"));
        assert_eq!(ln.span_id, hexb("0011223344556677"));
        assert_eq!(ln.trace_state, "a=b");
        assert_eq!(attr(&ln.attributes, "link.kind"), &s("follows"));
        assert_eq!(ln.dropped_attributes_count, 5);
        assert_eq!(ln.flags, 1);
        assert_eq!(sp.dropped_links_count, 6);
        let st = sp.status.as_ref().unwrap();
        assert_eq!(st.message, "boom");
        assert_eq!(st.code, status::StatusCode::Error as i32);
    }

    #[test]
    fn rich_metrics_fixture_decodes_every_field() {
        let req = decode_metrics(RICH_METRICS.as_bytes()).unwrap();
        let ms = &req.resource_metrics[0].scope_metrics[0].metrics;
        assert_eq!(ms.len(), 6);

        assert_eq!(ms[0].unit, "{request}");
        assert_eq!(attr(&ms[0].metadata, "meta"), &V::BoolValue(false));
        let Some(metric::Data::Sum(sum)) = &ms[0].data else {
            panic!("sum expected");
        };
        assert_eq!(sum.aggregation_temporality, 2);
        assert!(sum.is_monotonic);
        let dp = &sum.data_points[0];
        assert_eq!(dp.value, Some(number_data_point::Value::AsInt(-42)));
        assert_eq!(
            (dp.start_time_unix_nano, dp.time_unix_nano, dp.flags),
            (1, 2, 1)
        );
        let ex = &dp.exemplars[0];
        assert_eq!(attr(&ex.filtered_attributes, "user"), &s("u"));
        assert_eq!(ex.time_unix_nano, 3);
        assert_eq!(ex.span_id, hexb("1112131415161718"));
        assert_eq!(ex.trace_id, hexb("2122232425262728292a2b2c2d2e2f30"));
        assert_eq!(ex.value, Some(exemplar::Value::AsDouble(1.5)));

        assert_eq!(
            number_point(&ms[1]).value,
            Some(number_data_point::Value::AsDouble(f64::NEG_INFINITY))
        );

        let Some(metric::Data::Histogram(h)) = &ms[2].data else {
            panic!("histogram expected");
        };
        let hp = &h.data_points[0];
        assert_eq!(hp.count, 6);
        assert_eq!(hp.sum, Some(12.5));
        assert_eq!(hp.bucket_counts, vec![1, 2, 3]);
        assert_eq!(hp.explicit_bounds, vec![0.5, 1.0]);
        assert_eq!(hp.min, Some(f64::INFINITY));
        assert_eq!(hp.max, Some(9.0));
        assert_eq!(hp.exemplars[0].value, Some(exemplar::Value::AsInt(7)));

        let Some(metric::Data::ExponentialHistogram(e)) = &ms[3].data else {
            panic!("exponential histogram expected");
        };
        let ep = &e.data_points[0];
        assert_eq!((ep.count, ep.scale, ep.zero_count), (10, -3, 2));
        assert_eq!(ep.zero_threshold, 0.001);
        assert_eq!(ep.sum, None);
        assert_eq!(ep.positive.as_ref().unwrap().offset, -2);
        assert_eq!(ep.positive.as_ref().unwrap().bucket_counts, vec![3, 4]);
        assert_eq!(ep.negative.as_ref().unwrap().offset, 5);
        assert_eq!(ep.negative.as_ref().unwrap().bucket_counts, vec![1]);

        let Some(metric::Data::Summary(sm)) = &ms[4].data else {
            panic!("summary expected");
        };
        let sp = &sm.data_points[0];
        assert_eq!((sp.count, sp.sum, sp.time_unix_nano), (5, 17.5, 8));
        let q: Vec<_> = sp
            .quantile_values
            .iter()
            .map(|q| (q.quantile, q.value))
            .collect();
        assert_eq!(q, vec![(0.5, 3.0), (1.0, 9.5)]);

        assert_eq!(ms[5].name, "nodata");
        assert!(ms[5].data.is_none());
    }

    #[test]
    fn rich_logs_fixture_decodes_every_field() {
        let req = decode_logs(RICH_LOGS.as_bytes()).unwrap();
        let rl = &req.resource_logs[0];
        assert_eq!(rl.schema_url, "rs");
        assert_eq!(rl.resource, Some(Resource::default()));
        assert_eq!(rl.scope_logs[0].schema_url, "ss");
        let r = &rl.scope_logs[0].log_records[0];
        assert_eq!(r.time_unix_nano, 1_700_000_000_000_000_001);
        assert_eq!(r.observed_time_unix_nano, 1_700_000_000);
        assert_eq!(r.severity_number, 13);
        assert_eq!(r.severity_text, "WARN");
        assert_eq!(r.dropped_attributes_count, 7);
        assert_eq!(r.flags, 1);
        assert_eq!(r.trace_id, hexb("5b8efff798038103d269b633813fc60c"));
        assert_eq!(r.span_id, hexb("eee19b7ec3c1b174"));
        assert_eq!(r.event_name, "app.started");
        let Some(V::ArrayValue(arr)) = &r.body.as_ref().unwrap().value else {
            panic!("array body expected");
        };
        assert_eq!(arr.values[0].value, Some(V::IntValue(i64::MAX)));
        let Some(V::KvlistValue(kv)) = &arr.values[1].value else {
            panic!("kvlist expected");
        };
        assert_eq!(attr(&kv.values, "k"), &V::DoubleValue(2.0));
    }

    #[test]
    fn decode_then_prost_roundtrip_is_identity() {
        let t = decode_traces(RICH_TRACE.as_bytes()).unwrap();
        let bytes = t.encode_to_vec();
        assert!(!bytes.is_empty());
        assert_eq!(
            ExportTraceServiceRequest::decode(bytes.as_slice()).unwrap(),
            t
        );

        let m = decode_metrics(RICH_METRICS.as_bytes()).unwrap();
        let bytes = m.encode_to_vec();
        assert_eq!(
            ExportMetricsServiceRequest::decode(bytes.as_slice()).unwrap(),
            m
        );

        let l = decode_logs(RICH_LOGS.as_bytes()).unwrap();
        let bytes = l.encode_to_vec();
        assert_eq!(
            ExportLogsServiceRequest::decode(bytes.as_slice()).unwrap(),
            l
        );
    }

    #[test]
    fn int64_as_number_and_as_string() {
        let a = span_of(r#"{"startTimeUnixNano": 1544712660300000000, "endTimeUnixNano": 18446744073709551615}"#).unwrap();
        let b = span_of(r#"{"startTimeUnixNano": "1544712660300000000", "endTimeUnixNano": "18446744073709551615"}"#).unwrap();
        assert_eq!(a.start_time_unix_nano, 1_544_712_660_300_000_000);
        assert_eq!(a.end_time_unix_nano, u64::MAX);
        assert_eq!(a, b);

        assert_eq!(
            body_of(r#"{"intValue": -9223372036854775808}"#).unwrap(),
            Some(V::IntValue(i64::MIN))
        );
        assert_eq!(
            body_of(r#"{"intValue": "-9223372036854775808"}"#).unwrap(),
            Some(V::IntValue(i64::MIN))
        );
        assert_eq!(
            body_of(r#"{"intValue": "10"}"#).unwrap(),
            Some(V::IntValue(10))
        );
        assert_eq!(
            body_of(r#"{"intValue": 10}"#).unwrap(),
            Some(V::IntValue(10))
        );
        // Integral values in float notation are exact below 2^53.
        assert_eq!(
            body_of(r#"{"intValue": 1e3}"#).unwrap(),
            Some(V::IntValue(1000))
        );
        assert_eq!(
            body_of(r#"{"intValue": 5.0}"#).unwrap(),
            Some(V::IntValue(5))
        );
        // uint32 fields accept strings too.
        let sp = span_of(r#"{"droppedAttributesCount": "12", "flags": 3}"#).unwrap();
        assert_eq!((sp.dropped_attributes_count, sp.flags), (12, 3));
    }

    #[test]
    fn integers_out_of_range_are_errors() {
        let e = span_of(r#"{"startTimeUnixNano": "-1"}"#).unwrap_err();
        assert_eq!(
            e.path,
            "resourceSpans[0].scopeSpans[0].spans[0].startTimeUnixNano"
        );
        assert!(e.message.contains("out of range for uint64"), "{e}");
        let e = span_of(r#"{"startTimeUnixNano": 18446744073709551616}"#).unwrap_err();
        assert!(e.message.contains("not exact"), "{e}");
        let e = span_of(r#"{"startTimeUnixNano": "18446744073709551616"}"#).unwrap_err();
        assert!(e.message.contains("out of range for uint64"), "{e}");
        let e = body_of(r#"{"intValue": "9223372036854775808"}"#).unwrap_err();
        assert!(e.message.contains("out of range for int64"), "{e}");
        let e = span_of(r#"{"droppedLinksCount": 4294967296}"#).unwrap_err();
        assert_eq!(
            e.path,
            "resourceSpans[0].scopeSpans[0].spans[0].droppedLinksCount"
        );
        let e = span_of(r#"{"startTimeUnixNano": "12abc"}"#).unwrap_err();
        assert!(e.message.contains("\"12abc\""), "{e}");
        let e = span_of(r#"{"startTimeUnixNano": true}"#).unwrap_err();
        assert!(e.message.contains("got boolean"), "{e}");
    }

    #[test]
    fn fractional_integer_is_an_error() {
        let e = span_of(r#"{"startTimeUnixNano": 1.5}"#).unwrap_err();
        assert_eq!(
            e.path,
            "resourceSpans[0].scopeSpans[0].spans[0].startTimeUnixNano"
        );
        assert!(e.message.contains("non-integer"), "{e}");
        let e = span_of(r#"{"startTimeUnixNano": "1.5"}"#).unwrap_err();
        assert!(e.message.contains("non-integer"), "{e}");
        let e = metric_of(r#"{"sum": {"dataPoints": [{"asInt": 0.1}]}}"#).unwrap_err();
        assert_eq!(
            e.path,
            "resourceMetrics[0].scopeMetrics[0].metrics[0].sum.dataPoints[0].asInt"
        );
        let e = metric_of(r#"{"histogram": {"dataPoints": [{"bucketCounts": [1, 2.5]}]}}"#)
            .unwrap_err();
        assert_eq!(
            e.path,
            "resourceMetrics[0].scopeMetrics[0].metrics[0].histogram.dataPoints[0].bucketCounts[1]"
        );
    }

    #[test]
    fn enums_by_name_and_number() {
        assert_eq!(span_of(r#"{"kind": "SPAN_KIND_SERVER"}"#).unwrap().kind, 2);
        assert_eq!(span_of(r#"{"kind": 2}"#).unwrap().kind, 2);
        assert_eq!(span_of(r#"{"kind": "3"}"#).unwrap().kind, 3);
        // Unknown integers are kept.
        assert_eq!(span_of(r#"{"kind": 99}"#).unwrap().kind, 99);
        let st = span_of(r#"{"status": {"code": "STATUS_CODE_ERROR"}}"#)
            .unwrap()
            .status
            .unwrap();
        assert_eq!(st.code, 2);
        let st = span_of(r#"{"status": {"code": 1}}"#)
            .unwrap()
            .status
            .unwrap();
        assert_eq!(st.code, 1);
        assert_eq!(
            log_of(r#"{"severityNumber": "SEVERITY_NUMBER_WARN"}"#)
                .unwrap()
                .severity_number,
            13
        );
        assert_eq!(
            log_of(r#"{"severityNumber": 17}"#).unwrap().severity_number,
            17
        );
        let m =
            metric_of(r#"{"sum": {"aggregationTemporality": "AGGREGATION_TEMPORALITY_DELTA"}}"#)
                .unwrap();
        let Some(metric::Data::Sum(sum)) = m.data else {
            panic!("sum")
        };
        assert_eq!(sum.aggregation_temporality, 1);

        let e = span_of(r#"{"kind": "SPAN_KIND_BOGUS"}"#).unwrap_err();
        assert_eq!(e.path, "resourceSpans[0].scopeSpans[0].spans[0].kind");
        assert!(
            e.message
                .contains("unknown SpanKind value \"SPAN_KIND_BOGUS\""),
            "{e}"
        );
        let e = log_of(r#"{"severityNumber": "WARN"}"#).unwrap_err();
        assert_eq!(
            e.path,
            "resourceLogs[0].scopeLogs[0].logRecords[0].severityNumber"
        );
        let e = span_of(r#"{"kind": 1.5}"#).unwrap_err();
        assert!(e.message.contains("non-integer"), "{e}");
    }

    #[test]
    fn snake_case_field_names_are_accepted() {
        let snake = r#"{"resource_spans": [{"schema_url": "u", "scope_spans": [{"spans": [{
            "trace_id": "5b8efff798038103d269b633813fc60c",
            "span_id": "eee19b7ec3c1b174",
            "parent_span_id": "eee19b7ec3c1b173",
            "trace_state": "x=y",
            "start_time_unix_nano": "5",
            "end_time_unix_nano": 6,
            "dropped_attributes_count": 1,
            "dropped_events_count": 2,
            "dropped_links_count": 3,
            "attributes": [{"key": "k", "value": {"string_value": "v"}}],
            "events": [{"time_unix_nano": "7"}]
        }]}]}]}"#;
        let camel = r#"{"resourceSpans": [{"schemaUrl": "u", "scopeSpans": [{"spans": [{
            "traceId": "5b8efff798038103d269b633813fc60c",
            "spanId": "eee19b7ec3c1b174",
            "parentSpanId": "eee19b7ec3c1b173",
            "traceState": "x=y",
            "startTimeUnixNano": "5",
            "endTimeUnixNano": 6,
            "droppedAttributesCount": 1,
            "droppedEventsCount": 2,
            "droppedLinksCount": 3,
            "attributes": [{"key": "k", "value": {"stringValue": "v"}}],
            "events": [{"timeUnixNano": "7"}]
        }]}]}]}"#;
        let a = decode_traces(snake.as_bytes()).unwrap();
        let b = decode_traces(camel.as_bytes()).unwrap();
        assert_eq!(a, b);
        let sp = &a.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(sp.start_time_unix_nano, 5);
        assert_eq!(sp.dropped_links_count, 3);
        assert_eq!(sp.events[0].time_unix_nano, 7);
        assert_eq!(attr(&sp.attributes, "k"), &s("v"));

        let l = decode_logs(br#"{"resource_logs": [{"scope_logs": [{"log_records": [{"severity_number": 5, "observed_time_unix_nano": "8", "event_name": "e"}]}]}]}"#).unwrap();
        let r = &l.resource_logs[0].scope_logs[0].log_records[0];
        assert_eq!(
            (
                r.severity_number,
                r.observed_time_unix_nano,
                r.event_name.as_str()
            ),
            (5, 8, "e")
        );

        let m = decode_metrics(br#"{"resource_metrics": [{"scope_metrics": [{"metrics": [{"exponential_histogram": {"aggregation_temporality": 2, "data_points": [{"zero_count": "4", "positive": {"bucket_counts": [1]}}]}}]}]}]}"#).unwrap();
        let Some(metric::Data::ExponentialHistogram(e)) =
            &m.resource_metrics[0].scope_metrics[0].metrics[0].data
        else {
            panic!("exponential histogram expected");
        };
        assert_eq!(e.aggregation_temporality, 2);
        assert_eq!(e.data_points[0].zero_count, 4);
        assert_eq!(
            e.data_points[0].positive.as_ref().unwrap().bucket_counts,
            vec![1]
        );

        // Both spellings of one field at once is ambiguous.
        let e = span_of(r#"{"traceId": "00", "trace_id": "01"}"#).unwrap_err();
        assert_eq!(e.path, "resourceSpans[0].scopeSpans[0].spans[0].traceId");
        assert!(e.message.contains("given twice"), "{e}");
    }

    #[test]
    fn unknown_fields_are_ignored_and_null_means_default() {
        let json = r#"{"futureTopLevel": {"a": [1, 2]}, "resourceSpans": [{
            "unknownResourceField": null,
            "resource": null,
            "scopeSpans": [{"scope": {"name": "n", "extra": {"deep": [{}]}}, "spans": [{
                "name": "s", "newField": "whatever", "kind": null, "attributes": null,
                "status": {"message": "m", "futureCode": 9},
                "events": [{"name": "e", "mystery": [null, true]}]
            }]}]
        }]}"#;
        let req = decode_traces(json.as_bytes()).unwrap();
        let rs = &req.resource_spans[0];
        assert!(rs.resource.is_none());
        assert_eq!(rs.scope_spans[0].scope.as_ref().unwrap().name, "n");
        let sp = &rs.scope_spans[0].spans[0];
        assert_eq!(sp.name, "s");
        assert_eq!(sp.kind, 0);
        assert!(sp.attributes.is_empty());
        assert_eq!(sp.status.as_ref().unwrap().message, "m");
        assert_eq!(sp.status.as_ref().unwrap().code, 0);
        assert_eq!(sp.events[0].name, "e");
        // A profiling-only member of AnyValue is treated as absent.
        assert_eq!(body_of(r#"{"stringValueStrindex": 3}"#).unwrap(), None);
    }

    #[test]
    fn nan_and_infinity_strings() {
        let dbl = |j: &str| match body_of(&format!(r#"{{"doubleValue": {j}}}"#)).unwrap() {
            Some(V::DoubleValue(d)) => d,
            other => panic!("double expected, got {other:?}"),
        };
        assert!(dbl(r#""NaN""#).is_nan());
        assert_eq!(dbl(r#""Infinity""#), f64::INFINITY);
        assert_eq!(dbl(r#""-Infinity""#), f64::NEG_INFINITY);
        assert_eq!(dbl(r#""1.5e3""#), 1500.0);
        assert_eq!(dbl("-0.125"), -0.125);
        assert_eq!(dbl("7"), 7.0);
        let m = metric_of(r#"{"gauge": {"dataPoints": [{"asDouble": "NaN"}]}}"#).unwrap();
        let Some(number_data_point::Value::AsDouble(d)) = number_point(&m).value else {
            panic!("asDouble expected");
        };
        assert!(d.is_nan());
        for bad in [
            r#""nan""#,
            r#""inf""#,
            r#""infinity""#,
            r#""""#,
            r#""1.5x""#,
            "true",
        ] {
            let e = body_of(&format!(r#"{{"doubleValue": {bad}}}"#)).unwrap_err();
            assert_eq!(
                e.path, "resourceLogs[0].scopeLogs[0].logRecords[0].body.doubleValue",
                "{bad}"
            );
        }
    }

    #[test]
    fn bad_hex_is_an_error_naming_the_path() {
        let json = r#"{"resourceSpans": [{"scopeSpans": [{}, {"spans": [{}, {}, {
            "traceId": "5B8EFFF798038103D269B633813FC6ZZ"
        }]}]}]}"#;
        let e = decode_traces(json.as_bytes()).unwrap_err();
        assert_eq!(e.path, "resourceSpans[0].scopeSpans[1].spans[2].traceId");
        assert!(e.message.starts_with("expected 32 hex characters"), "{e}");
        assert!(e.message.contains("'Z'"), "{e}");
        assert_eq!(
            e.to_string(),
            format!("invalid otlp json at {}: {}", e.path, e.message)
        );

        let e = span_of(r#"{"spanId": "abc"}"#).unwrap_err();
        assert_eq!(e.path, "resourceSpans[0].scopeSpans[0].spans[0].spanId");
        assert!(e.message.contains("odd"), "{e}");
        let e = span_of(r#"{"links": [{"spanId": "g000000000000000"}]}"#).unwrap_err();
        assert_eq!(
            e.path,
            "resourceSpans[0].scopeSpans[0].spans[0].links[0].spanId"
        );
        let e = log_of(r#"{"traceId": 12}"#).unwrap_err();
        assert_eq!(e.path, "resourceLogs[0].scopeLogs[0].logRecords[0].traceId");
        // Base64 (the proto3 default for bytes) is not accepted for ids.
        let e = span_of(r#"{"traceId": "W47/95gDgQPSabYzgT/GDA=="}"#).unwrap_err();
        assert!(e.message.contains("hex"), "{e}");
        let e = metric_of(r#"{"gauge": {"dataPoints": [{"exemplars": [{"traceId": "xyz0"}]}]}}"#)
            .unwrap_err();
        assert_eq!(
            e.path,
            "resourceMetrics[0].scopeMetrics[0].metrics[0].gauge.dataPoints[0].exemplars[0].traceId"
        );
    }

    #[test]
    fn wrong_length_hex_decodes_to_those_bytes() {
        let sp =
            span_of(r#"{"traceId": "0102030405060708090A", "spanId": "aBcD", "parentSpanId": ""}"#)
                .unwrap();
        assert_eq!(sp.trace_id, vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
        assert_eq!(sp.span_id, vec![0xab, 0xcd]);
        assert!(sp.parent_span_id.is_empty());
        let r = log_of(r#"{"traceId": "00000000000000000000000000000000ff"}"#).unwrap();
        assert_eq!(r.trace_id.len(), 17);
        assert_eq!(r.trace_id[16], 0xff);
    }

    #[test]
    fn any_value_oneof_rules() {
        assert_eq!(body_of("{}").unwrap(), None);
        assert_eq!(
            body_of(r#"{"boolValue": true}"#).unwrap(),
            Some(V::BoolValue(true))
        );
        assert_eq!(
            body_of(r#"{"bytesValue": "AAEC/w=="}"#).unwrap(),
            Some(V::BytesValue(vec![0, 1, 2, 255]))
        );
        assert_eq!(
            body_of(r#"{"bytesValue": "AAEC_w"}"#).unwrap(),
            Some(V::BytesValue(vec![0, 1, 2, 255]))
        );
        assert_eq!(
            body_of(r#"{"stringValue": null, "intValue": 4}"#).unwrap(),
            Some(V::IntValue(4))
        );
        let e = body_of(r#"{"stringValue": "a", "intValue": 1}"#).unwrap_err();
        assert_eq!(e.path, "resourceLogs[0].scopeLogs[0].logRecords[0].body");
        assert!(e.message.contains("only one"), "{e}");
        let e = body_of(r#"{"bytesValue": "not base64!"}"#).unwrap_err();
        assert_eq!(
            e.path,
            "resourceLogs[0].scopeLogs[0].logRecords[0].body.bytesValue"
        );
        let e = body_of(r#"{"boolValue": "true"}"#).unwrap_err();
        assert!(e.message.contains("expected boolean"), "{e}");
        let e = body_of(r#"{"arrayValue": {"values": [{"stringValue": 1}]}}"#).unwrap_err();
        assert_eq!(
            e.path,
            "resourceLogs[0].scopeLogs[0].logRecords[0].body.arrayValue.values[0].stringValue"
        );
        let e = body_of(r#""plain string""#).unwrap_err();
        assert!(e.message.contains("expected object, got string"), "{e}");
        let e = metric_of(r#"{"gauge": {}, "sum": {}}"#).unwrap_err();
        assert_eq!(e.path, "resourceMetrics[0].scopeMetrics[0].metrics[0]");
        let e =
            metric_of(r#"{"gauge": {"dataPoints": [{"asInt": 1, "asDouble": 1}]}}"#).unwrap_err();
        assert!(e.message.contains("only one"), "{e}");
    }

    #[test]
    fn repeated_and_message_shape_errors() {
        let e = span_of(r#"{"attributes": {"key": "k"}}"#).unwrap_err();
        assert_eq!(e.path, "resourceSpans[0].scopeSpans[0].spans[0].attributes");
        assert!(e.message.contains("expected array, got object"), "{e}");
        let e = span_of(r#"{"attributes": [null]}"#).unwrap_err();
        assert_eq!(
            e.path,
            "resourceSpans[0].scopeSpans[0].spans[0].attributes[0]"
        );
        let e = span_of(r#"{"status": "ok"}"#).unwrap_err();
        assert_eq!(e.path, "resourceSpans[0].scopeSpans[0].spans[0].status");
        let e = span_of(r#"{"name": 5}"#).unwrap_err();
        assert!(e.message.contains("expected string, got number"), "{e}");
    }

    fn nested(levels: usize, kvlist_every: usize) -> String {
        let mut v = r#"{"stringValue": "leaf"}"#.to_owned();
        for i in 0..levels {
            v = if kvlist_every != 0 && i % kvlist_every == 0 {
                format!(r#"{{"kvlistValue": {{"values": [{{"key": "k", "value": {v}}}]}}}}"#)
            } else {
                format!(r#"{{"arrayValue": {{"values": [{v}]}}}}"#)
            };
        }
        v
    }

    #[test]
    fn deep_nesting_is_an_error() {
        // 32 levels are allowed.
        let mut v = body_of(&nested(32, 0)).unwrap();
        let mut depth = 0;
        while let Some(V::ArrayValue(a)) = v {
            depth += 1;
            v = a.values.into_iter().next().and_then(|x| x.value);
        }
        assert_eq!(depth, 32);
        assert_eq!(v, Some(s("leaf")));

        for (levels, kv_every) in [(33, 0), (33, 16), (36, 0)] {
            let e = body_of(&nested(levels, kv_every)).unwrap_err();
            assert!(
                e.message.contains("attribute value nested too deeply"),
                "{levels}/{kv_every}: {e}"
            );
            assert!(
                e.path
                    .starts_with("resourceLogs[0].scopeLogs[0].logRecords[0].body."),
                "{e}"
            );
        }
        // Attributes count nesting the same way.
        let e = span_of(&format!(
            r#"{{"attributes": [{{"key": "k", "value": {}}}]}}"#,
            nested(33, 0)
        ))
        .unwrap_err();
        assert!(e.message.contains("nested too deeply"), "{e}");
        // Beyond serde_json's recursion limit the parser itself refuses.
        let e = body_of(&nested(200, 0)).unwrap_err();
        assert_eq!(e.path, "(root)");
        assert!(e.message.contains("recursion limit"), "{e}");
    }

    #[test]
    fn non_object_top_level_is_an_error() {
        for body in ["[]", "null", "1", r#""x""#, "true"] {
            let e = decode_traces(body.as_bytes()).unwrap_err();
            assert_eq!(e.path, "(root)");
            assert!(e.message.starts_with("expected object"), "{body}: {e}");
            assert!(decode_metrics(body.as_bytes()).is_err());
            assert!(decode_logs(body.as_bytes()).is_err());
        }
        for body in ["", "{", "{\"resourceSpans\": [}", "{} x"] {
            let e = decode_traces(body.as_bytes()).unwrap_err();
            assert_eq!(e.path, "(root)", "{body}");
        }
        let e = decode_traces(br#"{"resourceSpans": {}}"#).unwrap_err();
        assert_eq!(e.path, "resourceSpans");
        let e = decode_logs(br#"{"resourceLogs": [1]}"#).unwrap_err();
        assert_eq!(e.path, "resourceLogs[0]");
    }

    #[test]
    fn empty_object_is_an_empty_request() {
        assert_eq!(
            decode_traces(b"{}").unwrap(),
            ExportTraceServiceRequest::default()
        );
        assert_eq!(
            decode_metrics(b"{}").unwrap(),
            ExportMetricsServiceRequest::default()
        );
        assert_eq!(
            decode_logs(b" {} ").unwrap(),
            ExportLogsServiceRequest::default()
        );
        assert_eq!(
            decode_traces(br#"{"resourceSpans": null}"#).unwrap(),
            ExportTraceServiceRequest::default()
        );
    }

    fn json(bytes: &[u8]) -> Value {
        serde_json::from_slice(bytes).unwrap()
    }

    #[test]
    fn response_encoding() {
        let r = ExportTraceServiceResponse {
            partial_success: Some(ExportTracePartialSuccess {
                rejected_spans: 3,
                error_message: "bad \"ids\"".to_owned(),
            }),
        };
        let out = encode_trace_response(&r);
        assert_eq!(
            String::from_utf8(out.clone()).unwrap(),
            r#"{"partialSuccess":{"errorMessage":"bad \"ids\"","rejectedSpans":"3"}}"#
        );
        assert_eq!(
            json(&out),
            serde_json::json!({"partialSuccess": {"rejectedSpans": "3", "errorMessage": "bad \"ids\""}})
        );
        assert_eq!(
            encode_trace_response(&ExportTraceServiceResponse::default()),
            b"{}"
        );

        let m = ExportMetricsServiceResponse {
            partial_success: Some(ExportMetricsPartialSuccess {
                rejected_data_points: i64::MAX,
                error_message: String::new(),
            }),
        };
        assert_eq!(
            json(&encode_metrics_response(&m)),
            serde_json::json!({"partialSuccess": {"rejectedDataPoints": "9223372036854775807"}})
        );
        assert_eq!(
            encode_metrics_response(&ExportMetricsServiceResponse::default()),
            b"{}"
        );

        let l = ExportLogsServiceResponse {
            partial_success: Some(ExportLogsPartialSuccess {
                rejected_log_records: 0,
                error_message: "warning only".to_owned(),
            }),
        };
        assert_eq!(
            json(&encode_logs_response(&l)),
            serde_json::json!({"partialSuccess": {"errorMessage": "warning only"}})
        );
        assert_eq!(
            encode_logs_response(&ExportLogsServiceResponse::default()),
            b"{}"
        );

        assert_eq!(
            json(&encode_status(3, "invalid otlp json at x: y")),
            serde_json::json!({"code": 3, "message": "invalid otlp json at x: y"})
        );
        assert_eq!(encode_status(0, ""), b"{}");
    }

    #[test]
    fn long_bad_values_are_truncated_in_messages() {
        let long = "z".repeat(10_000);
        let e = span_of(&format!(r#"{{"startTimeUnixNano": "{long}"}}"#)).unwrap_err();
        assert!(e.message.len() < 200, "{}", e.message.len());
        assert!(e.message.ends_with("\"..."), "{e}");
    }
}
