//! Result encodings: JSON (columns with their types, then rows as arrays),
//! CSV (a header line, then RFC 4180 rows) and the Arrow IPC stream format.
//!
//! JSON keeps numbers and booleans as JSON values, turns maps and structs
//! into objects and lists into arrays, and prints everything else
//! (timestamps, dates, decimals, intervals) as Arrow displays it: a
//! timestamp is an RFC 3339 string. Non-finite floats become the strings
//! `"NaN"`, `"+Inf"` and `"-Inf"`, as in Prometheus's API.

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{
    DataType, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Int8Type, SchemaRef,
    UInt16Type, UInt32Type, UInt64Type, UInt8Type,
};
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use serde_json::{Map, Number, Value};

use super::QueryOutput;

/// A result format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Csv,
    Arrow,
}

impl Format {
    /// From a `format=` parameter value.
    pub fn from_name(s: &str) -> Option<Format> {
        match s.to_ascii_lowercase().as_str() {
            "json" => Some(Format::Json),
            "csv" => Some(Format::Csv),
            "arrow" | "ipc" | "arrow-ipc" => Some(Format::Arrow),
            _ => None,
        }
    }

    /// From an `Accept` header: the first media type we produce, JSON when
    /// none is named.
    pub fn from_accept(accept: &str) -> Format {
        for part in accept.split(',') {
            let mt = part
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            match mt.as_str() {
                "text/csv" => return Format::Csv,
                "application/vnd.apache.arrow.stream" => return Format::Arrow,
                "application/json" => return Format::Json,
                _ => {}
            }
        }
        Format::Json
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Csv => "text/csv; charset=utf-8",
            Format::Arrow => "application/vnd.apache.arrow.stream",
        }
    }
}

fn float(v: f64) -> Value {
    if v.is_nan() {
        Value::String("NaN".into())
    } else if v.is_infinite() {
        Value::String(if v > 0.0 { "+Inf" } else { "-Inf" }.into())
    } else {
        Number::from_f64(v).map_or(Value::Null, Value::Number)
    }
}

fn display(a: &dyn Array, i: usize) -> Value {
    match ArrayFormatter::try_new(a, &FormatOptions::default()) {
        Ok(f) => Value::String(f.value(i).to_string()),
        Err(_) => Value::Null,
    }
}

/// One cell as a JSON value.
pub fn cell(a: &ArrayRef, i: usize) -> Value {
    cell_of(a.as_ref(), i)
}

fn cell_of(a: &dyn Array, i: usize) -> Value {
    if a.is_null(i) {
        return Value::Null;
    }
    macro_rules! int {
        ($t:ty) => {
            Value::from(a.as_primitive::<$t>().value(i))
        };
    }
    match a.data_type() {
        DataType::Boolean => Value::Bool(a.as_boolean().value(i)),
        DataType::Int8 => int!(Int8Type),
        DataType::Int16 => int!(Int16Type),
        DataType::Int32 => int!(Int32Type),
        DataType::Int64 => int!(Int64Type),
        DataType::UInt8 => int!(UInt8Type),
        DataType::UInt16 => int!(UInt16Type),
        DataType::UInt32 => int!(UInt32Type),
        DataType::UInt64 => int!(UInt64Type),
        DataType::Float32 => float(f64::from(a.as_primitive::<Float32Type>().value(i))),
        DataType::Float64 => float(a.as_primitive::<Float64Type>().value(i)),
        DataType::Utf8 => Value::String(a.as_string::<i32>().value(i).to_string()),
        DataType::LargeUtf8 => Value::String(a.as_string::<i64>().value(i).to_string()),
        DataType::Utf8View => Value::String(a.as_string_view().value(i).to_string()),
        DataType::Map(_, _) => {
            let entries = a.as_map().value(i);
            let (keys, values) = (entries.column(0), entries.column(1));
            let mut m = Map::new();
            for j in 0..entries.len() {
                let k = match cell_of(keys.as_ref(), j) {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                m.insert(k, cell_of(values.as_ref(), j));
            }
            Value::Object(m)
        }
        DataType::Struct(fields) => {
            let s = a.as_struct();
            let mut m = Map::new();
            for (f, c) in fields.iter().zip(s.columns()) {
                m.insert(f.name().clone(), cell_of(c.as_ref(), i));
            }
            Value::Object(m)
        }
        DataType::List(_) => {
            let v = a.as_list::<i32>().value(i);
            Value::Array((0..v.len()).map(|j| cell_of(v.as_ref(), j)).collect())
        }
        DataType::LargeList(_) => {
            let v = a.as_list::<i64>().value(i);
            Value::Array((0..v.len()).map(|j| cell_of(v.as_ref(), j)).collect())
        }
        _ => display(a, i),
    }
}

/// The JSON answer: `{columns, rows, row_count, truncated, elapsed_ms,
/// scanned}`.
pub fn to_json(out: &QueryOutput) -> Value {
    let columns: Vec<Value> = out
        .schema
        .fields()
        .iter()
        .map(|f| serde_json::json!({"name": f.name(), "type": f.data_type().to_string()}))
        .collect();
    let mut rows: Vec<Value> = Vec::with_capacity(out.rows);
    for b in &out.batches {
        for i in 0..b.num_rows() {
            rows.push(Value::Array(
                b.columns().iter().map(|c| cell(c, i)).collect(),
            ));
        }
    }
    let mut scanned = Map::new();
    for (t, s) in &out.scanned {
        let e = scanned
            .entry(t.name())
            .or_insert_with(|| serde_json::json!({"partitions": 0, "rows": 0}));
        let add = |v: &mut Value, k: &str, n: u64| {
            let cur = v[k].as_u64().unwrap_or(0);
            v[k] = Value::from(cur + n);
        };
        add(e, "partitions", s.partitions);
        add(e, "rows", s.rows);
    }
    serde_json::json!({
        "columns": columns,
        "rows": rows,
        "row_count": out.rows,
        "truncated": out.truncated,
        "elapsed_ms": out.elapsed.as_secs_f64() * 1e3,
        "scanned": scanned,
    })
}

fn csv_field(s: &str, out: &mut String) {
    if s.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&s.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(s);
    }
}

/// CSV with a header line; nulls are empty fields, nested values JSON text.
pub fn to_csv(out: &QueryOutput) -> String {
    let mut s = String::new();
    for (i, f) in out.schema.fields().iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        csv_field(f.name(), &mut s);
    }
    s.push_str("\r\n");
    for b in &out.batches {
        for r in 0..b.num_rows() {
            for (i, c) in b.columns().iter().enumerate() {
                if i > 0 {
                    s.push(',');
                }
                match cell(c, r) {
                    Value::Null => {}
                    Value::String(v) => csv_field(&v, &mut s),
                    other => csv_field(&other.to_string(), &mut s),
                }
            }
            s.push_str("\r\n");
        }
    }
    s
}

/// The Arrow IPC stream of the result batches.
pub fn to_arrow(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<Vec<u8>, String> {
    let mut buf = Vec::new();
    let mut w = StreamWriter::try_new(&mut buf, schema).map_err(|e| e.to_string())?;
    for b in batches {
        w.write(b).map_err(|e| e.to_string())?;
    }
    w.finish().map_err(|e| e.to_string())?;
    drop(w);
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_headers_pick_the_first_known_format() {
        assert_eq!(Format::from_accept("text/csv"), Format::Csv);
        assert_eq!(
            Format::from_accept("application/vnd.apache.arrow.stream, application/json"),
            Format::Arrow
        );
        assert_eq!(
            Format::from_accept("text/html, application/json;q=0.9"),
            Format::Json
        );
        assert_eq!(Format::from_accept("*/*"), Format::Json);
        assert_eq!(Format::from_name("CSV"), Some(Format::Csv));
        assert_eq!(Format::from_name("xml"), None);
    }

    #[test]
    fn csv_fields_are_quoted_when_needed() {
        let mut s = String::new();
        csv_field("plain", &mut s);
        s.push('|');
        csv_field("a,b", &mut s);
        s.push('|');
        csv_field("say \"hi\"\nbye", &mut s);
        assert_eq!(s, "plain|\"a,b\"|\"say \"\"hi\"\"\nbye\"");
    }

    #[test]
    fn floats_keep_non_finite_values_as_strings() {
        assert_eq!(float(1.5), Value::from(1.5));
        assert_eq!(float(f64::NAN), Value::from("NaN"));
        assert_eq!(float(f64::NEG_INFINITY), Value::from("-Inf"));
    }
}
