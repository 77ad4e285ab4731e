//! The compact binary encoding of a log record, stored once per record in
//! the index's document store (which compresses it with zstd).
//!
//! Layout (version 1): varints for integers, length-prefixed bytes for
//! strings, a tag byte per value. Decoding checks every length and nests at
//! most [`MAX_DEPTH`] levels, so a damaged document is an error, not a panic.

use std::sync::Arc;

use crate::model::{AnyValue, LogRecord, Resource, Scope, SpanId, TraceId};

const VERSION: u8 = 1;
/// Deepest value nesting the decoder accepts.
pub const MAX_DEPTH: usize = 128;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("damaged log record encoding: {0}")]
pub struct CodecError(&'static str);

pub fn encode(r: &LogRecord, out: &mut Vec<u8>) {
    out.push(VERSION);
    varint(out, r.time_ns);
    varint(out, r.observed_time_ns);
    varint(out, zigzag(r.severity_number as i64));
    string(out, &r.severity_text);
    value(out, &r.body);
    attrs(out, &r.attributes);
    varint(out, r.dropped_attributes_count as u64);
    varint(out, r.flags as u64);
    bytes(out, r.trace_id.as_ref().map_or(&[][..], |t| t.as_bytes()));
    bytes(out, r.span_id.as_ref().map_or(&[][..], |s| s.as_bytes()));
    string(out, &r.event_name);
    attrs(out, &r.resource.attributes);
    varint(out, r.resource.dropped_attributes_count as u64);
    string(out, &r.resource.schema_url);
    string(out, &r.scope.name);
    string(out, &r.scope.version);
    attrs(out, &r.scope.attributes);
    varint(out, r.scope.dropped_attributes_count as u64);
    string(out, &r.scope.schema_url);
}

pub fn decode(buf: &[u8]) -> Result<LogRecord, CodecError> {
    let mut d = Decoder { buf, pos: 0 };
    if d.byte()? != VERSION {
        return Err(CodecError("unknown version"));
    }
    let time_ns = d.varint()?;
    let observed_time_ns = d.varint()?;
    let severity_number = unzigzag(d.varint()?) as i32;
    let severity_text = d.string()?;
    let body = d.value(0)?;
    let attributes = d.attrs(0)?;
    let dropped_attributes_count = d.varint()? as u32;
    let flags = d.varint()? as u32;
    let trace_id = TraceId::from_optional_bytes(d.bytes()?).map_err(|_| CodecError("trace id"))?;
    let span_id = SpanId::from_optional_bytes(d.bytes()?).map_err(|_| CodecError("span id"))?;
    let event_name = d.string()?;
    let resource = Resource {
        attributes: d.attrs(0)?,
        dropped_attributes_count: d.varint()? as u32,
        schema_url: d.string()?,
    };
    let scope = Scope {
        name: d.string()?,
        version: d.string()?,
        attributes: d.attrs(0)?,
        dropped_attributes_count: d.varint()? as u32,
        schema_url: d.string()?,
    };
    Ok(LogRecord {
        resource: Arc::new(resource),
        scope: Arc::new(scope),
        time_ns,
        observed_time_ns,
        severity_number,
        severity_text,
        body,
        attributes,
        dropped_attributes_count,
        flags,
        trace_id,
        span_id,
        event_name,
    })
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn bytes(out: &mut Vec<u8>, b: &[u8]) {
    varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn string(out: &mut Vec<u8>, s: &str) {
    bytes(out, s.as_bytes());
}

fn attrs(out: &mut Vec<u8>, a: &[(String, AnyValue)]) {
    varint(out, a.len() as u64);
    for (k, v) in a {
        string(out, k);
        value(out, v);
    }
}

fn value(out: &mut Vec<u8>, v: &AnyValue) {
    match v {
        AnyValue::Empty => out.push(0),
        AnyValue::String(s) => {
            out.push(1);
            string(out, s);
        }
        AnyValue::Bool(b) => out.push(if *b { 3 } else { 2 }),
        AnyValue::Int(i) => {
            out.push(4);
            varint(out, zigzag(*i));
        }
        AnyValue::Double(d) => {
            out.push(5);
            out.extend_from_slice(&d.to_le_bytes());
        }
        AnyValue::Bytes(b) => {
            out.push(6);
            bytes(out, b);
        }
        AnyValue::Array(items) => {
            out.push(7);
            varint(out, items.len() as u64);
            for i in items {
                value(out, i);
            }
        }
        AnyValue::Map(items) => {
            out.push(8);
            attrs(out, items);
        }
    }
}

struct Decoder<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Decoder<'a> {
    fn byte(&mut self) -> Result<u8, CodecError> {
        let b = *self.buf.get(self.pos).ok_or(CodecError("truncated"))?;
        self.pos += 1;
        Ok(b)
    }

    fn varint(&mut self) -> Result<u64, CodecError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= ((b & 0x7f) as u64) << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(CodecError("varint too long"))
    }

    fn bytes(&mut self) -> Result<&'a [u8], CodecError> {
        let n = self.varint()? as usize;
        let end = self.pos.checked_add(n).ok_or(CodecError("length"))?;
        let b = self.buf.get(self.pos..end).ok_or(CodecError("truncated"))?;
        self.pos = end;
        Ok(b)
    }

    fn string(&mut self) -> Result<String, CodecError> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| CodecError("invalid utf-8"))
    }

    /// A count of items that each take at least one byte.
    fn count(&mut self) -> Result<usize, CodecError> {
        let n = self.varint()? as usize;
        if n > self.buf.len() - self.pos {
            return Err(CodecError("count exceeds the data"));
        }
        Ok(n)
    }

    fn attrs(&mut self, depth: usize) -> Result<Vec<(String, AnyValue)>, CodecError> {
        let n = self.count()?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let k = self.string()?;
            out.push((k, self.value(depth)?));
        }
        Ok(out)
    }

    fn value(&mut self, depth: usize) -> Result<AnyValue, CodecError> {
        if depth > MAX_DEPTH {
            return Err(CodecError("nesting too deep"));
        }
        Ok(match self.byte()? {
            0 => AnyValue::Empty,
            1 => AnyValue::String(self.string()?),
            2 => AnyValue::Bool(false),
            3 => AnyValue::Bool(true),
            4 => AnyValue::Int(unzigzag(self.varint()?)),
            5 => {
                let b = self
                    .buf
                    .get(self.pos..self.pos + 8)
                    .ok_or(CodecError("truncated"))?;
                self.pos += 8;
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                AnyValue::Double(f64::from_le_bytes(a))
            }
            6 => AnyValue::Bytes(self.bytes()?.to_vec()),
            7 => {
                let n = self.count()?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.value(depth + 1)?);
                }
                AnyValue::Array(items)
            }
            8 => AnyValue::Map(self.attrs(depth + 1)?),
            _ => return Err(CodecError("unknown value tag")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn any_value() -> impl Strategy<Value = AnyValue> {
        let leaf = prop_oneof![
            Just(AnyValue::Empty),
            any::<String>().prop_map(AnyValue::String),
            any::<bool>().prop_map(AnyValue::Bool),
            any::<i64>().prop_map(AnyValue::Int),
            any::<f64>()
                .prop_filter("NaN is not equal to itself", |d| !d.is_nan())
                .prop_map(AnyValue::Double),
            proptest::collection::vec(any::<u8>(), 0..8).prop_map(AnyValue::Bytes),
        ];
        leaf.prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(AnyValue::Array),
                proptest::collection::vec((any::<String>(), inner), 0..4).prop_map(AnyValue::Map),
            ]
        })
    }

    proptest! {
        #[test]
        fn round_trip(body in any_value(), attr in any_value(), t in any::<u64>(), sev in -3i32..30, text in any::<String>()) {
            let mut r = crate::storage::suite::log(t, "svc", "x", Some(3));
            r.body = body;
            r.attributes = vec![("k".into(), attr)];
            r.severity_number = sev;
            r.severity_text = text;
            r.span_id = Some(SpanId([9; 8]));
            let mut buf = Vec::new();
            encode(&r, &mut buf);
            prop_assert_eq!(decode(&buf).unwrap(), r);
            // Every truncation is an error, never a panic.
            for n in 0..buf.len() {
                prop_assert!(decode(&buf[..n]).is_err());
            }
        }
    }

    #[test]
    fn deep_nesting_is_refused() {
        let mut buf = vec![VERSION, 0, 0, 0, 0];
        buf.extend(std::iter::repeat_n(7u8, 1).chain(std::iter::repeat_n(1u8, 1)));
        for _ in 0..200 {
            buf.extend([7, 1]);
        }
        assert_eq!(decode(&buf), Err(CodecError("nesting too deep")));
    }
}
