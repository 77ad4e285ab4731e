//! The compact binary encoding of a log record, split in two parts so that
//! the index stores each piece of a record once and where it costs least:
//!
//! - the *shared* part ([`encode_shared`]): severity number and text,
//!   resource and scope. Records of one OTLP block share it, so the index
//!   keeps it in a dictionary-encoded fast column: each distinct value once
//!   per segment, a few bits per record.
//! - the *row* ([`encode_row`]): everything else except the time, which the
//!   index already keeps in its `time` fast column. It goes to the zstd
//!   document store.
//!
//! Layout (version 2; version 1 kept the whole record, time included, in
//! the row): varints for integers, the observed time as a zigzag delta from
//! the time, length-prefixed bytes for strings, a tag byte per value.
//! Decoding checks every length and nests at most [`MAX_DEPTH`] levels, so a
//! damaged document is an error, not a panic.

use crate::storage::varint::{put_prefixed, put_varint as varint, unzigzag, zigzag};
use std::sync::Arc;

use crate::model::{
    AnyValue, LogRecord, Resource, Scope, SharedResource, SharedScope, SpanId, TraceId,
};

const VERSION: u8 = 2;
/// Deepest value nesting the decoder accepts.
pub const MAX_DEPTH: usize = 128;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("damaged log record encoding: {0}")]
pub struct CodecError(&'static str);

impl CodecError {
    pub(crate) fn new(what: &'static str) -> Self {
        CodecError(what)
    }
}

/// The decoded shared part of records.
#[derive(Debug, Clone, PartialEq)]
pub struct Shared {
    pub severity_number: i32,
    pub severity_text: String,
    pub resource: SharedResource,
    pub scope: SharedScope,
}

/// Encodes the part a record shares with the other records of its block.
pub fn encode_shared(r: &LogRecord, out: &mut Vec<u8>) {
    out.push(VERSION);
    varint(out, zigzag(r.severity_number as i64));
    string(out, &r.severity_text);
    attrs(out, &r.resource.attributes);
    varint(out, r.resource.dropped_attributes_count as u64);
    string(out, &r.resource.schema_url);
    string(out, &r.scope.name);
    string(out, &r.scope.version);
    attrs(out, &r.scope.attributes);
    varint(out, r.scope.dropped_attributes_count as u64);
    string(out, &r.scope.schema_url);
}

pub fn decode_shared(buf: &[u8]) -> Result<Shared, CodecError> {
    let mut d = Decoder { buf, pos: 0 };
    if d.byte()? != VERSION {
        return Err(CodecError("unknown version"));
    }
    let severity_number = unzigzag(d.varint()?) as i32;
    let severity_text = d.string()?;
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
    d.end()?;
    Ok(Shared {
        severity_number,
        severity_text,
        resource: Arc::new(resource),
        scope: Arc::new(scope),
    })
}

/// Encodes the rest of a record, without its time.
pub fn encode_row(r: &LogRecord, out: &mut Vec<u8>) {
    out.push(VERSION);
    encode_head(r, out);
    attrs(out, &r.attributes);
    value(out, &r.body);
}

/// The record of a row, its time and its shared part.
pub fn decode_row(buf: &[u8], time_ns: u64, shared: &Shared) -> Result<LogRecord, CodecError> {
    let mut d = Decoder { buf, pos: 0 };
    if d.byte()? != VERSION {
        return Err(CodecError("unknown version"));
    }
    let observed_time_ns = time_ns.wrapping_add(unzigzag(d.varint()?) as u64);
    let flags = d.varint()? as u32;
    let dropped_attributes_count = d.varint()? as u32;
    let trace_id = TraceId::from_optional_bytes(d.bytes()?).map_err(|_| CodecError("trace id"))?;
    let span_id = SpanId::from_optional_bytes(d.bytes()?).map_err(|_| CodecError("span id"))?;
    let event_name = d.string()?;
    let attributes = d.attrs(0)?;
    let body = d.value(0)?;
    d.end()?;
    Ok(LogRecord {
        resource: shared.resource.clone(),
        scope: shared.scope.clone(),
        time_ns,
        observed_time_ns,
        severity_number: shared.severity_number,
        severity_text: shared.severity_text.clone(),
        body,
        attributes,
        dropped_attributes_count,
        flags,
        trace_id,
        span_id,
        event_name,
    })
}

/// Only the body of a row (what a body-text check needs).
pub fn decode_body(buf: &[u8]) -> Result<AnyValue, CodecError> {
    let mut d = Decoder { buf, pos: 0 };
    if d.byte()? != VERSION {
        return Err(CodecError("unknown version"));
    }
    for _ in 0..3 {
        d.varint()?;
    }
    d.bytes()?;
    d.bytes()?;
    d.string()?;
    d.attrs(0)?;
    let body = d.value(0)?;
    d.end()?;
    Ok(body)
}

/// The head of a row as row blocks keep it ([`super::rows`]): the
/// observed time as a delta from the time, flags, dropped attribute count,
/// trace and span ids, event name.
pub fn encode_head(r: &LogRecord, out: &mut Vec<u8>) {
    varint(
        out,
        zigzag(r.observed_time_ns.wrapping_sub(r.time_ns) as i64),
    );
    varint(out, r.flags as u64);
    varint(out, r.dropped_attributes_count as u64);
    put_prefixed(out, r.trace_id.as_ref().map_or(&[][..], |t| t.as_bytes()));
    put_prefixed(out, r.span_id.as_ref().map_or(&[][..], |s| s.as_bytes()));
    string(out, &r.event_name);
}

/// A record's attributes as row blocks keep them.
pub fn encode_attributes(r: &LogRecord, out: &mut Vec<u8>) {
    attrs(out, &r.attributes);
}

/// A value (a body) as row blocks keep it.
pub fn encode_value(v: &AnyValue, out: &mut Vec<u8>) {
    value(out, v);
}

/// Reads row pieces laid out one after another (a row block's columns).
pub struct Pieces<'a>(Decoder<'a>);

impl<'a> Pieces<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Pieces(Decoder { buf, pos: 0 })
    }

    /// Starts reading at byte `pos`.
    pub fn at(buf: &'a [u8], pos: usize) -> Self {
        Pieces(Decoder { buf, pos })
    }

    pub fn pos(&self) -> usize {
        self.0.pos
    }

    pub fn end(&self) -> Result<(), CodecError> {
        self.0.end()
    }

    /// Skips one head ([`encode_head`]).
    pub fn skip_head(&mut self) -> Result<(), CodecError> {
        for _ in 0..3 {
            self.0.varint()?;
        }
        for _ in 0..3 {
            self.0.bytes()?;
        }
        Ok(())
    }

    /// Reads one head into `r` (its time already set).
    pub fn head_into(&mut self, r: &mut LogRecord) -> Result<(), CodecError> {
        let d = &mut self.0;
        r.observed_time_ns = r.time_ns.wrapping_add(unzigzag(d.varint()?) as u64);
        r.flags = d.varint()? as u32;
        r.dropped_attributes_count = d.varint()? as u32;
        r.trace_id =
            TraceId::from_optional_bytes(d.bytes()?).map_err(|_| CodecError("trace id"))?;
        r.span_id = SpanId::from_optional_bytes(d.bytes()?).map_err(|_| CodecError("span id"))?;
        r.event_name = d.string()?;
        Ok(())
    }

    /// Skips one attribute list ([`encode_attributes`]).
    pub fn skip_attributes(&mut self) -> Result<(), CodecError> {
        self.0.skip_attrs(0)
    }

    /// Reads one attribute list ([`encode_attributes`]) as pieces: each
    /// key's bytes and the bytes of its encoded value, in order, into `out`
    /// (cleared first).
    pub fn attribute_pieces(
        &mut self,
        out: &mut Vec<(&'a [u8], &'a [u8])>,
    ) -> Result<(), CodecError> {
        out.clear();
        let n = self.0.count()?;
        for _ in 0..n {
            let key = self.0.bytes()?;
            let from = self.0.pos;
            self.0.skip_value(0)?;
            out.push((key, &self.0.buf[from..self.0.pos]));
        }
        Ok(())
    }

    pub fn attributes(&mut self) -> Result<Vec<(String, AnyValue)>, CodecError> {
        self.0.attrs(0)
    }

    /// Skips one value ([`encode_value`]).
    pub fn skip_value(&mut self) -> Result<(), CodecError> {
        self.0.skip_value(0)
    }

    pub fn value(&mut self) -> Result<AnyValue, CodecError> {
        self.0.value(0)
    }

    pub fn varint(&mut self) -> Result<u64, CodecError> {
        self.0.varint()
    }

    /// Skips `n` bytes.
    pub fn skip_raw(&mut self, n: usize) -> Result<(), CodecError> {
        let d = &mut self.0;
        d.pos = d
            .pos
            .checked_add(n)
            .filter(|e| *e <= d.buf.len())
            .ok_or(CodecError("truncated"))?;
        Ok(())
    }
}

fn string(out: &mut Vec<u8>, s: &str) {
    put_prefixed(out, s.as_bytes());
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
            put_prefixed(out, b);
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
    fn end(&self) -> Result<(), CodecError> {
        if self.pos == self.buf.len() {
            Ok(())
        } else {
            Err(CodecError("trailing bytes"))
        }
    }

    fn byte(&mut self) -> Result<u8, CodecError> {
        let b = *self.buf.get(self.pos).ok_or(CodecError("truncated"))?;
        self.pos += 1;
        Ok(b)
    }

    fn varint(&mut self) -> Result<u64, CodecError> {
        crate::storage::varint::read_varint(self.buf, &mut self.pos)
            .ok_or(CodecError("damaged varint"))
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

    fn skip_attrs(&mut self, depth: usize) -> Result<(), CodecError> {
        let n = self.count()?;
        for _ in 0..n {
            self.bytes()?;
            self.skip_value(depth)?;
        }
        Ok(())
    }

    fn skip_value(&mut self, depth: usize) -> Result<(), CodecError> {
        if depth > MAX_DEPTH {
            return Err(CodecError("nesting too deep"));
        }
        match self.byte()? {
            0 | 2 | 3 => {}
            1 | 6 => {
                self.bytes()?;
            }
            4 => {
                self.varint()?;
            }
            5 => {
                self.pos = self
                    .pos
                    .checked_add(8)
                    .filter(|e| *e <= self.buf.len())
                    .ok_or(CodecError("truncated"))?;
            }
            7 => {
                let n = self.count()?;
                for _ in 0..n {
                    self.skip_value(depth + 1)?;
                }
            }
            8 => self.skip_attrs(depth + 1)?,
            _ => return Err(CodecError("unknown value tag")),
        }
        Ok(())
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

    fn round_trip(r: &LogRecord) -> (Vec<u8>, Vec<u8>) {
        let (mut row, mut shared) = (Vec::new(), Vec::new());
        encode_row(r, &mut row);
        encode_shared(r, &mut shared);
        let s = decode_shared(&shared).unwrap();
        assert_eq!(&decode_row(&row, r.time_ns, &s).unwrap(), r);
        (row, shared)
    }

    proptest! {
        #[test]
        fn round_trips(body in any_value(), attr in any_value(), t in any::<u64>(), observed in any::<u64>(), sev in -3i32..30, text in any::<String>(), res in any_value()) {
            let mut r = crate::storage::suite::log(t, "svc", "x", Some(3));
            r.body = body;
            r.attributes = vec![("k".into(), attr)];
            r.observed_time_ns = observed;
            r.severity_number = sev;
            r.severity_text = text;
            r.span_id = Some(SpanId([9; 8]));
            let mut resource = (*r.resource).clone();
            resource.attributes.push(("r".into(), res));
            r.resource = Arc::new(resource);
            let (row, shared) = round_trip(&r);
            // Every truncation is an error, never a panic.
            let s = decode_shared(&shared).unwrap();
            for n in 0..row.len() {
                prop_assert!(decode_row(&row[..n], t, &s).is_err());
            }
            for n in 0..shared.len() {
                prop_assert!(decode_shared(&shared[..n]).is_err());
            }
        }
    }

    #[test]
    fn the_row_holds_neither_time_nor_shared_parts() {
        let mut r =
            crate::storage::suite::log(1_700_000_000_123_456_789, "checkout", "hello", None);
        r.observed_time_ns = r.time_ns + 500;
        r.severity_text = "SEVERE-TEXT".into();
        let (row, shared) = round_trip(&r);
        // version, observed delta (1000 zigzagged: 2 bytes), flags, dropped,
        // two empty ids, empty event name, attribute count, then the body.
        assert_eq!(&row[..5], &[VERSION, 0xe8, 0x07, 0, 0]);
        let text = String::from_utf8_lossy(&row);
        assert!(!text.contains("checkout") && !text.contains("SEVERE"));
        let text = String::from_utf8_lossy(&shared);
        assert!(text.contains("checkout") && text.contains("SEVERE-TEXT"));
        // Trailing garbage is damage, not ignored.
        let mut long = row.clone();
        long.push(0);
        let s = decode_shared(&shared).unwrap();
        assert_eq!(
            decode_row(&long, r.time_ns, &s),
            Err(CodecError("trailing bytes"))
        );
    }

    #[test]
    fn deep_nesting_is_refused() {
        let r = crate::storage::suite::log(5, "svc", "x", None);
        let mut shared = Vec::new();
        encode_shared(&r, &mut shared);
        let s = decode_shared(&shared).unwrap();
        // version, observed delta, flags, dropped, ids, event name, no
        // attributes, then a body of arrays of one array each.
        let mut buf = vec![VERSION, 0, 0, 0, 0, 0, 0, 0];
        for _ in 0..200 {
            buf.extend([7, 1]);
        }
        buf.push(0);
        assert_eq!(decode_row(&buf, 5, &s), Err(CodecError("nesting too deep")));
    }
}
