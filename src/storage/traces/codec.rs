//! Binary encodings of the trace store: span records (resource and scope
//! referenced by id), resources, scopes, trace summaries, RED aggregates,
//! and the index keys. Engine-free, so it is tested on its own.
//!
//! Span record layout (all integers LEB128 varints unless noted):
//! `start_ns u64 LE | duration | has_parent u8 [parent 8 B] | kind u8 |
//! status u8 | resource id | scope id | name | status message | trace_state
//! | flags | attributes | dropped | events | dropped | links | dropped`.
//! The start time leads so that the retention filter reads it without
//! decoding; the head (through the scope id) is decodable on its own.
//!
//! Search rows (one per trace and batch, split when spans start
//! [`ROW_SPREAD_NS`] apart) are keyed `first start u64 BE | trace id |
//! first span id` and hold a Bloom filter of the spans' attributes and
//! compact span heads ([`encode_row`]).

pub use crate::storage::varint::put_varint;
use crate::storage::varint::{put_prefixed, unzigzag, zigzag};
use std::sync::Arc;

use super::types::{Agg, Histogram, TraceSummary, MAX_INDEXED_VALUE};
use crate::model::{
    AnyValue, Attributes, Resource, Scope, Span, SpanEvent, SpanId, SpanKind, SpanLink, Status,
    StatusCode, TraceId,
};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("corrupt trace store record: {0}")]
pub struct CodecError(pub &'static str);

/// Deepest attribute value nesting decoded.
const MAX_DEPTH: usize = 64;

/// A cursor over an encoded record.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    pub fn u8(&mut self) -> Result<u8, CodecError> {
        let b = *self.buf.get(self.pos).ok_or(CodecError("truncated"))?;
        self.pos += 1;
        Ok(b)
    }

    pub fn fixed<const N: usize>(&mut self) -> Result<[u8; N], CodecError> {
        let s = self
            .buf
            .get(self.pos..self.pos + N)
            .ok_or(CodecError("truncated"))?;
        self.pos += N;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    pub fn varint(&mut self) -> Result<u64, CodecError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(CodecError("varint too long"))
    }

    fn len(&mut self) -> Result<usize, CodecError> {
        let n = self.varint()? as usize;
        if n > self.buf.len() - self.pos.min(self.buf.len()) {
            return Err(CodecError("length past the end"));
        }
        Ok(n)
    }

    pub fn bytes(&mut self) -> Result<&'a [u8], CodecError> {
        let n = self.len()?;
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    pub fn string(&mut self) -> Result<String, CodecError> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| CodecError("invalid utf-8"))
    }

    /// A count of items that each take at least one byte.
    fn count(&mut self) -> Result<usize, CodecError> {
        self.len()
    }
}

pub fn put_value(out: &mut Vec<u8>, v: &AnyValue) {
    match v {
        AnyValue::Empty => out.push(0),
        AnyValue::String(s) => {
            out.push(1);
            put_prefixed(out, s.as_bytes());
        }
        AnyValue::Bool(b) => out.push(if *b { 3 } else { 2 }),
        AnyValue::Int(i) => {
            out.push(4);
            put_varint(out, zigzag(*i));
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
            put_varint(out, items.len() as u64);
            for i in items {
                put_value(out, i);
            }
        }
        AnyValue::Map(items) => {
            out.push(8);
            put_attrs(out, items);
        }
    }
}

fn value(r: &mut Reader<'_>, depth: usize) -> Result<AnyValue, CodecError> {
    if depth > MAX_DEPTH {
        return Err(CodecError("value nested too deep"));
    }
    Ok(match r.u8()? {
        0 => AnyValue::Empty,
        1 => AnyValue::String(r.string()?),
        2 => AnyValue::Bool(false),
        3 => AnyValue::Bool(true),
        4 => AnyValue::Int(unzigzag(r.varint()?)),
        5 => AnyValue::Double(f64::from_le_bytes(r.fixed()?)),
        6 => AnyValue::Bytes(r.bytes()?.to_vec()),
        7 => {
            let n = r.count()?;
            let mut items = Vec::with_capacity(n);
            for _ in 0..n {
                items.push(value(r, depth + 1)?);
            }
            AnyValue::Array(items)
        }
        8 => AnyValue::Map(attrs_at(r, depth + 1)?),
        _ => return Err(CodecError("unknown value tag")),
    })
}

pub fn put_attrs(out: &mut Vec<u8>, attrs: &[(String, AnyValue)]) {
    put_varint(out, attrs.len() as u64);
    for (k, v) in attrs {
        put_prefixed(out, k.as_bytes());
        put_value(out, v);
    }
}

fn attrs_at(r: &mut Reader<'_>, depth: usize) -> Result<Attributes, CodecError> {
    let n = r.count()?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let k = r.string()?;
        out.push((k, value(r, depth)?));
    }
    Ok(out)
}

pub fn attrs(r: &mut Reader<'_>) -> Result<Attributes, CodecError> {
    attrs_at(r, 0)
}

pub fn encode_resource(res: &Resource) -> Vec<u8> {
    let mut out = Vec::new();
    put_attrs(&mut out, &res.attributes);
    put_varint(&mut out, u64::from(res.dropped_attributes_count));
    put_prefixed(&mut out, res.schema_url.as_bytes());
    out
}

pub fn decode_resource(b: &[u8]) -> Result<Resource, CodecError> {
    let mut r = Reader::new(b);
    Ok(Resource {
        attributes: attrs(&mut r)?,
        dropped_attributes_count: r.varint()? as u32,
        schema_url: r.string()?,
    })
}

pub fn encode_scope(s: &Scope) -> Vec<u8> {
    let mut out = Vec::new();
    put_prefixed(&mut out, s.name.as_bytes());
    put_prefixed(&mut out, s.version.as_bytes());
    put_attrs(&mut out, &s.attributes);
    put_varint(&mut out, u64::from(s.dropped_attributes_count));
    put_prefixed(&mut out, s.schema_url.as_bytes());
    out
}

pub fn decode_scope(b: &[u8]) -> Result<Scope, CodecError> {
    let mut r = Reader::new(b);
    Ok(Scope {
        name: r.string()?,
        version: r.string()?,
        attributes: attrs(&mut r)?,
        dropped_attributes_count: r.varint()? as u32,
        schema_url: r.string()?,
    })
}

fn kind_from_u8(k: u8) -> SpanKind {
    SpanKind::from_i32(i32::from(k))
}

/// Encodes the body of a span, what its search row does not hold.
pub fn encode_span(span: &Span, scope_id: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    put_varint(&mut out, scope_id);
    put_prefixed(&mut out, span.status.message.as_bytes());
    put_prefixed(&mut out, span.trace_state.as_bytes());
    put_varint(&mut out, u64::from(span.flags));
    put_attrs(&mut out, &span.attributes);
    put_varint(&mut out, u64::from(span.dropped_attributes_count));
    put_varint(&mut out, span.events.len() as u64);
    for e in &span.events {
        put_varint(
            &mut out,
            zigzag((e.time_ns as i64).wrapping_sub(span.start_time_ns as i64)),
        );
        put_prefixed(&mut out, e.name.as_bytes());
        put_attrs(&mut out, &e.attributes);
        put_varint(&mut out, u64::from(e.dropped_attributes_count));
    }
    put_varint(&mut out, u64::from(span.dropped_events_count));
    put_varint(&mut out, span.links.len() as u64);
    for l in &span.links {
        out.extend_from_slice(&l.trace_id.0);
        out.extend_from_slice(&l.span_id.0);
        put_prefixed(&mut out, l.trace_state.as_bytes());
        put_attrs(&mut out, &l.attributes);
        put_varint(&mut out, u64::from(l.dropped_attributes_count));
        put_varint(&mut out, u64::from(l.flags));
    }
    put_varint(&mut out, u64::from(span.dropped_links_count));
    out
}

/// The little-endian time a record starts with (the retention filter's
/// view of summaries and last-seen entries).
pub fn span_start(b: &[u8]) -> Option<u64> {
    b.get(..8)
        .and_then(|s| s.try_into().ok())
        .map(u64::from_le_bytes)
}

/// Decodes a span from its row head and body; the closures resolve the
/// interned resource, scope and name ids.
pub fn decode_span(
    trace_id: TraceId,
    head: &RowSpan,
    b: &[u8],
    resource: impl FnOnce(u64) -> Option<Arc<Resource>>,
    scope: impl FnOnce(u64) -> Option<Arc<Scope>>,
    name: impl FnOnce(u64) -> Option<String>,
) -> Result<Span, CodecError> {
    let mut r = Reader::new(b);
    let scope_id = r.varint()?;
    let message = r.string()?;
    let trace_state = r.string()?;
    let flags = r.varint()? as u32;
    let attributes = attrs(&mut r)?;
    let dropped_attributes_count = r.varint()? as u32;
    let n = r.count()?;
    let mut events = Vec::with_capacity(n);
    for _ in 0..n {
        let delta = unzigzag(r.varint()?);
        events.push(SpanEvent {
            time_ns: (head.start_ns as i64).wrapping_add(delta) as u64,
            name: r.string()?,
            attributes: attrs(&mut r)?,
            dropped_attributes_count: r.varint()? as u32,
        });
    }
    let dropped_events_count = r.varint()? as u32;
    let n = r.count()?;
    let mut links = Vec::with_capacity(n);
    for _ in 0..n {
        links.push(SpanLink {
            trace_id: TraceId(r.fixed()?),
            span_id: SpanId(r.fixed()?),
            trace_state: r.string()?,
            attributes: attrs(&mut r)?,
            dropped_attributes_count: r.varint()? as u32,
            flags: r.varint()? as u32,
        });
    }
    let dropped_links_count = r.varint()? as u32;
    Ok(Span {
        resource: resource(head.resource_id).ok_or(CodecError("unknown resource id"))?,
        scope: scope(scope_id).ok_or(CodecError("unknown scope id"))?,
        trace_id,
        span_id: head.span_id,
        parent_span_id: head.parent,
        trace_state,
        flags,
        name: name(head.name_id).ok_or(CodecError("unknown name id"))?,
        kind: head.kind,
        start_time_ns: head.start_ns,
        end_time_ns: head.start_ns.saturating_add(head.duration_ns),
        attributes,
        dropped_attributes_count,
        events,
        dropped_events_count,
        links,
        dropped_links_count,
        status: Status {
            code: head.status,
            message,
        },
    })
}

pub fn encode_summary(s: &TraceSummary) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    // End first: the retention filter reads it.
    out.extend_from_slice(&s.end_ns.to_le_bytes());
    put_varint(&mut out, s.end_ns.saturating_sub(s.start_ns));
    put_prefixed(&mut out, s.root_service.as_bytes());
    put_prefixed(&mut out, s.root_name.as_bytes());
    out.push(u8::from(s.root_known));
    put_varint(&mut out, s.root_start_ns.saturating_sub(s.start_ns));
    put_varint(&mut out, s.span_count);
    put_varint(&mut out, s.error_count);
    put_varint(&mut out, s.services.len() as u64);
    for svc in &s.services {
        put_prefixed(&mut out, svc.as_bytes());
    }
    out
}

pub fn decode_summary(trace_id: TraceId, b: &[u8]) -> Result<TraceSummary, CodecError> {
    let mut r = Reader::new(b);
    let end_ns = u64::from_le_bytes(r.fixed()?);
    let start_ns = end_ns.saturating_sub(r.varint()?);
    let root_service = r.string()?;
    let root_name = r.string()?;
    let root_known = r.u8()? == 1;
    let root_start_ns = start_ns.saturating_add(r.varint()?);
    let span_count = r.varint()?;
    let error_count = r.varint()?;
    let n = r.count()?;
    let mut services = Vec::with_capacity(n);
    for _ in 0..n {
        services.push(r.string()?);
    }
    Ok(TraceSummary {
        trace_id,
        root_service,
        root_name,
        root_known,
        root_start_ns,
        start_ns,
        end_ns,
        span_count,
        error_count,
        services,
    })
}

/// The end time of a summary record (the retention filter's view).
pub fn summary_end(b: &[u8]) -> Option<u64> {
    span_start(b)
}

pub fn encode_agg(a: &Agg) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + a.hist.buckets.len() * 3);
    put_varint(&mut out, a.count);
    put_varint(&mut out, a.errors);
    put_varint(&mut out, a.sum_ns);
    put_varint(&mut out, a.hist.buckets.len() as u64);
    let mut prev = 0u64;
    for (&idx, &n) in &a.hist.buckets {
        put_varint(&mut out, u64::from(idx) - prev);
        put_varint(&mut out, n);
        prev = u64::from(idx);
    }
    out
}

pub fn decode_agg(b: &[u8]) -> Result<Agg, CodecError> {
    let mut r = Reader::new(b);
    let count = r.varint()?;
    let errors = r.varint()?;
    let sum_ns = r.varint()?;
    let n = r.count()?;
    let mut hist = Histogram::default();
    let mut idx = 0u64;
    for _ in 0..n {
        idx += r.varint()?;
        let idx16 = u16::try_from(idx).map_err(|_| CodecError("histogram bucket out of range"))?;
        hist.buckets.insert(idx16, r.varint()?);
    }
    Ok(Agg {
        count,
        errors,
        sum_ns,
        hist,
    })
}

/// Longest gap between the first and any other span start of one search
/// row: a row keyed at `t` holds spans starting in `[t, t + ROW_SPREAD_NS)`.
pub const ROW_SPREAD_NS: u64 = 1_000_000_000;

/// Length of a search row key: `first start u64 BE | trace id | first span id`.
pub const ROW_KEY_LEN: usize = 8 + 16 + 8;

/// Key of a search row: the start of its first (earliest) span, the trace,
/// and the first span's id (unique within the trace, so two rows of one
/// trace never collide).
pub fn row_key(start_ns: u64, trace: &TraceId, first: &SpanId) -> [u8; ROW_KEY_LEN] {
    let mut k = [0u8; ROW_KEY_LEN];
    k[..8].copy_from_slice(&start_ns.to_be_bytes());
    k[8..24].copy_from_slice(&trace.0);
    k[24..].copy_from_slice(&first.0);
    k
}

/// Reads a search row key back: the trace and the row's id.
pub fn parse_row_key(k: &[u8]) -> Option<(TraceId, RowId)> {
    if k.len() != ROW_KEY_LEN {
        return None;
    }
    let start_ns = u64::from_be_bytes(k[..8].try_into().ok()?);
    Some((
        TraceId(k[8..24].try_into().ok()?),
        RowId {
            start_ns,
            first: SpanId(k[24..].try_into().ok()?),
        },
    ))
}

/// A search row within its trace: the start and id of its first span.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RowId {
    pub start_ns: u64,
    pub first: SpanId,
}

/// Most spans in one row (positions are u32 in body keys).
pub const MAX_ROW_SPANS: usize = 1 << 16;

/// Length of a span body key: `trace id | row start u64 BE | row first
/// span id | position in the row u32 BE`.
pub const BODY_KEY_LEN: usize = 16 + 8 + 8 + 4;

/// Key of a span body: a trace is one prefix, and the bodies of one row
/// share all but the last bytes, which block prefix compression removes.
pub fn body_key(trace: &TraceId, row: &RowId, position: u32) -> [u8; BODY_KEY_LEN] {
    let mut k = [0u8; BODY_KEY_LEN];
    k[..16].copy_from_slice(&trace.0);
    k[16..24].copy_from_slice(&row.start_ns.to_be_bytes());
    k[24..32].copy_from_slice(&row.first.0);
    k[32..].copy_from_slice(&position.to_be_bytes());
    k
}

/// Reads a span body key back: the row and the position in it.
pub fn parse_body_key(k: &[u8]) -> Option<(RowId, u32)> {
    if k.len() != BODY_KEY_LEN {
        return None;
    }
    let row = RowId {
        start_ns: u64::from_be_bytes(k[16..24].try_into().ok()?),
        first: SpanId(k[24..32].try_into().ok()?),
    };
    Some((row, u32::from_be_bytes(k[32..].try_into().ok()?)))
}

/// One span in a search row: everything a search filter or a span head
/// needs except span attributes, which the row's Bloom filter stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowSpan {
    pub span_id: SpanId,
    pub parent: Option<SpanId>,
    pub start_ns: u64,
    pub duration_ns: u64,
    /// Interned span name.
    pub name_id: u64,
    /// Interned resource (which gives the service and resource attributes).
    pub resource_id: u64,
    pub kind: SpanKind,
    pub status: StatusCode,
}

impl RowSpan {
    /// The head of `span` with its name and resource interned as given.
    pub fn of(span: &Span, name_id: u64, resource_id: u64) -> RowSpan {
        RowSpan {
            span_id: span.span_id,
            parent: span.parent_span_id,
            start_ns: span.start_time_ns,
            duration_ns: span.duration_ns(),
            name_id,
            resource_id,
            kind: span.kind,
            status: span.status.code,
        }
    }

    pub fn is_error(&self) -> bool {
        self.status == StatusCode::Error
    }
}

/// Bits per distinct attribute in a row's Bloom filter (about 2 % false
/// positives with [`BLOOM_PROBES`] probes).
const BLOOM_BITS_PER_ITEM: usize = 8;
const BLOOM_PROBES: u64 = 5;

/// The hash of an attribute `key=value` (value in its [`attr_text`] form)
/// used by row Bloom filters: FNV-1a 64 with a final avalanche, fixed
/// forever because it is on disk.
///
/// [`attr_text`]: super::types::attr_text
pub fn attr_hash(key: &str, value: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |b: u8| {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    };
    for &b in key.as_bytes() {
        eat(b);
    }
    eat(0xff);
    for &b in value.as_bytes() {
        eat(b);
    }
    // splitmix64 finaliser.
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// [`attr_hash`] of an attribute, `None` when its value is not searchable:
/// the same as hashing its [`attr_text`] without allocating for strings,
/// integers and booleans.
///
/// [`attr_text`]: super::types::attr_text
pub fn attr_value_hash(key: &str, v: &AnyValue) -> Option<u64> {
    use std::io::Write;
    match v {
        AnyValue::String(s) if s.len() <= MAX_INDEXED_VALUE => Some(attr_hash(key, s)),
        AnyValue::Int(i) => {
            let mut buf = [0u8; 24];
            let mut w = &mut buf[..];
            write!(w, "{i}").ok()?;
            let n = 24 - w.len();
            Some(attr_hash(key, std::str::from_utf8(&buf[..n]).ok()?))
        }
        AnyValue::Bool(b) => Some(attr_hash(key, if *b { "true" } else { "false" })),
        other => super::types::attr_text(other).map(|t| attr_hash(key, &t)),
    }
}

fn bloom_bits(hash: u64, m: u64) -> impl Iterator<Item = u64> {
    let (h1, h2) = (hash & 0xffff_ffff, (hash >> 32) | 1);
    (0..BLOOM_PROBES).map(move |i| h1.wrapping_add(i.wrapping_mul(h2)) % m)
}

/// A Bloom filter over attribute hashes.
pub fn bloom(hashes: &[u64]) -> Vec<u8> {
    let mut distinct = hashes.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.is_empty() {
        return Vec::new();
    }
    let bytes = (distinct.len() * BLOOM_BITS_PER_ITEM).div_ceil(8);
    let mut f = vec![0u8; bytes];
    let m = (bytes * 8) as u64;
    for h in distinct {
        for bit in bloom_bits(h, m) {
            f[(bit / 8) as usize] |= 1 << (bit % 8);
        }
    }
    f
}

/// Whether a Bloom filter may hold `hash` (never false for one it holds).
pub fn bloom_may_contain(filter: &[u8], hash: u64) -> bool {
    if filter.is_empty() {
        return false;
    }
    let m = (filter.len() * 8) as u64;
    bloom_bits(hash, m).all(|bit| filter[(bit / 8) as usize] & (1 << (bit % 8)) != 0)
}

/// Encodes a search row: `bloom length | bloom | span count`, then per
/// span, in start order, `span id 8 B | start − previous start | duration |
/// parent | name id | resource id | kind + 8 × status` (varints). The
/// parent is 0 for none, 2 + its index when it is in the row, else 1 and
/// its 8-byte id. `spans` must be sorted by start and start at or after
/// `first_start`.
pub fn encode_row(first_start: u64, spans: &[RowSpan], bloom: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bloom.len() + 4 + spans.len() * 24);
    put_prefixed(&mut out, bloom);
    put_varint(&mut out, spans.len() as u64);
    let position: std::collections::HashMap<SpanId, usize> = spans
        .iter()
        .enumerate()
        .map(|(i, s)| (s.span_id, i))
        .collect();
    let mut prev = first_start;
    for s in spans {
        out.extend_from_slice(&s.span_id.0);
        put_varint(&mut out, s.start_ns.wrapping_sub(prev));
        prev = s.start_ns;
        put_varint(&mut out, s.duration_ns);
        match s.parent {
            None => out.push(0),
            Some(p) => match position.get(&p) {
                Some(i) => put_varint(&mut out, 2 + *i as u64),
                None => {
                    out.push(1);
                    out.extend_from_slice(&p.0);
                }
            },
        }
        put_varint(&mut out, s.name_id);
        put_varint(&mut out, s.resource_id);
        out.push(s.kind.as_i32() as u8 & 7 | ((s.status.as_i32() as u8 & 3) << 3));
    }
    out
}

/// The Bloom filter of a search row, without decoding its spans.
pub fn row_bloom(b: &[u8]) -> Result<&[u8], CodecError> {
    Reader::new(b).bytes()
}

/// Decodes a search row into its Bloom filter and spans.
pub fn decode_row(first_start: u64, b: &[u8]) -> Result<(&[u8], Vec<RowSpan>), CodecError> {
    let mut r = Reader::new(b);
    let bloom = r.bytes()?;
    let n = r.varint()? as usize;
    // Every span takes at least 14 bytes.
    if n > b.len() / 14 {
        return Err(CodecError("row span count past the end"));
    }
    let mut spans = Vec::with_capacity(n);
    let mut in_row: Vec<(usize, usize)> = Vec::new();
    let mut prev = first_start;
    for i in 0..n {
        let span_id = SpanId(r.fixed()?);
        let start_ns = prev.wrapping_add(r.varint()?);
        prev = start_ns;
        let duration_ns = r.varint()?;
        let parent = match r.varint()? {
            0 => None,
            1 => Some(SpanId(r.fixed()?)),
            p => {
                in_row.push((i, (p - 2) as usize));
                None
            }
        };
        let name_id = r.varint()?;
        let resource_id = r.varint()?;
        let flags = r.u8()?;
        spans.push(RowSpan {
            span_id,
            parent,
            start_ns,
            duration_ns,
            name_id,
            resource_id,
            kind: kind_from_u8(flags & 7),
            status: StatusCode::from_i32(i32::from((flags >> 3) & 3)),
        });
    }
    for (i, p) in in_row {
        let parent = spans
            .get(p)
            .ok_or(CodecError("parent index past the row"))?;
        spans[i].parent = Some(parent.span_id);
    }
    Ok((bloom, spans))
}

/// Key of a RED row: `service 0 minute(u32 BE) tag [operation]`, tag 0 for
/// the service row and 1 for an operation row.
pub fn red_key(service: &str, minute: u64, operation: Option<&str>) -> Vec<u8> {
    let mut k = Vec::with_capacity(service.len() + 6 + operation.map_or(0, str::len));
    k.extend_from_slice(service.as_bytes());
    k.push(0);
    k.extend_from_slice(&(minute as u32).to_be_bytes());
    match operation {
        None => k.push(0),
        Some(op) => {
            k.push(1);
            k.extend_from_slice(op.as_bytes());
        }
    }
    k
}

/// Parses a RED key into service, minute and operation.
pub fn parse_red_key(k: &[u8]) -> Option<(String, u64, Option<String>)> {
    let z = k.iter().position(|&b| b == 0)?;
    let service = String::from_utf8(k[..z].to_vec()).ok()?;
    let rest = &k[z + 1..];
    let minute = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?);
    let op = match *rest.get(4)? {
        0 => None,
        _ => Some(String::from_utf8(rest[5..].to_vec()).ok()?),
    };
    Some((service, u64::from(minute), op))
}

/// Key of a dependency row: `minute(u32 BE) caller 0 callee`.
pub fn dep_key(minute: u64, caller: &str, callee: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(5 + caller.len() + callee.len());
    k.extend_from_slice(&(minute as u32).to_be_bytes());
    k.extend_from_slice(caller.as_bytes());
    k.push(0);
    k.extend_from_slice(callee.as_bytes());
    k
}

pub fn parse_dep_key(k: &[u8]) -> Option<(u64, String, String)> {
    let minute = u32::from_be_bytes(k.get(..4)?.try_into().ok()?);
    let rest = &k[4..];
    let z = rest.iter().position(|&b| b == 0)?;
    Some((
        u64::from(minute),
        String::from_utf8(rest[..z].to_vec()).ok()?,
        String::from_utf8(rest[z + 1..].to_vec()).ok()?,
    ))
}

/// The minute a RED or dependency key belongs to (the retention filter's view).
pub fn stats_key_minute(k: &[u8]) -> Option<u64> {
    if k.first() == Some(&b'D') {
        return k
            .get(1..5)
            .and_then(|s| s.try_into().ok())
            .map(|b| u64::from(u32::from_be_bytes(b)));
    }
    // `R service 0 minute ...`
    let rest = k.get(1..)?;
    let z = rest.iter().position(|&b| b == 0)?;
    rest.get(z + 1..z + 5)
        .and_then(|s| s.try_into().ok())
        .map(|b| u64::from(u32::from_be_bytes(b)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn any_value() -> impl Strategy<Value = AnyValue> {
        let leaf = prop_oneof![
            Just(AnyValue::Empty),
            ".{0,12}".prop_map(AnyValue::String),
            any::<bool>().prop_map(AnyValue::Bool),
            any::<i64>().prop_map(AnyValue::Int),
            any::<f64>()
                .prop_filter("NaN never equals itself", |d| !d.is_nan())
                .prop_map(AnyValue::Double),
            proptest::collection::vec(any::<u8>(), 0..8).prop_map(AnyValue::Bytes),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(AnyValue::Array),
                proptest::collection::vec((".{0,6}", inner), 0..4).prop_map(AnyValue::Map),
            ]
        })
    }

    fn span_strategy() -> impl Strategy<Value = Span> {
        (
            (
                proptest::array::uniform16(1u8..),
                proptest::array::uniform8(1u8..),
                proptest::option::of(proptest::array::uniform8(1u8..)),
                ".{0,20}",
                0i32..6,
                0i32..3,
                0u64..(u64::MAX / 2),
                0u64..(1 << 40),
            ),
            (
                proptest::collection::vec((".{0,10}", any_value()), 0..6),
                proptest::collection::vec(
                    (
                        -1_000_000i64..1_000_000,
                        ".{0,8}",
                        proptest::collection::vec((".{0,6}", any_value()), 0..3),
                    ),
                    0..3,
                ),
                proptest::collection::vec(
                    (
                        proptest::array::uniform16(1u8..),
                        proptest::array::uniform8(1u8..),
                    ),
                    0..2,
                ),
                ".{0,8}",
                any::<u32>(),
            ),
        )
            .prop_map(
                |(
                    (t, s, p, name, kind, status, start, dur),
                    (attrs, events, links, msg, dropped),
                )| Span {
                    resource: Arc::new(Resource::default()),
                    scope: Arc::new(Scope::default()),
                    trace_id: TraceId(t),
                    span_id: SpanId(s),
                    parent_span_id: p.map(SpanId),
                    trace_state: "k=v".into(),
                    flags: 1,
                    name,
                    kind: SpanKind::from_i32(kind),
                    start_time_ns: start,
                    end_time_ns: start + dur,
                    attributes: attrs,
                    dropped_attributes_count: dropped,
                    events: events
                        .into_iter()
                        .map(|(d, name, attributes)| SpanEvent {
                            time_ns: (start as i64 + d).max(0) as u64,
                            name,
                            attributes,
                            dropped_attributes_count: 2,
                        })
                        .collect(),
                    dropped_events_count: 3,
                    links: links
                        .into_iter()
                        .map(|(t, s)| SpanLink {
                            trace_id: TraceId(t),
                            span_id: SpanId(s),
                            trace_state: String::new(),
                            attributes: vec![("l".into(), AnyValue::Int(1))],
                            dropped_attributes_count: 0,
                            flags: 7,
                        })
                        .collect(),
                    dropped_links_count: 4,
                    status: Status {
                        code: StatusCode::from_i32(status),
                        message: msg,
                    },
                },
            )
    }

    proptest! {
        #[test]
        fn span_round_trip(span in span_strategy(), row_back in 0u64..1000, sid in any::<u64>()) {
            let row_start = span.start_time_ns.saturating_sub(row_back);
            let b = encode_span(&span, sid);
            let head = RowSpan::of(&span, 7, 9);
            let row = encode_row(row_start, &[head], &[]);
            let (_, heads) = decode_row(row_start, &row).unwrap();
            prop_assert_eq!(heads[0], head);
            let back = decode_span(
                span.trace_id,
                &heads[0],
                &b,
                |id| (id == 9).then(|| span.resource.clone()),
                |id| (id == sid).then(|| span.scope.clone()),
                |id| (id == 7).then(|| span.name.clone()),
            )
            .unwrap();
            prop_assert_eq!(back, span);
        }

        #[test]
        fn truncated_span_records_are_errors_not_panics(span in span_strategy(), cut in 0usize..64) {
            let b = encode_span(&span, 2);
            let cut = cut.min(b.len().saturating_sub(1));
            let head = RowSpan::of(&span, 1, 1);
            let r = decode_span(span.trace_id, &head, &b[..cut], |_| None, |_| None, |_| None);
            prop_assert!(r.is_err());
        }

        #[test]
        fn row_keys_sort_by_time_and_round_trip(
            a in any::<u64>(), b in any::<u64>(),
            t in proptest::array::uniform16(any::<u8>()), u in proptest::array::uniform16(any::<u8>()),
            s in proptest::array::uniform8(1u8..),
        ) {
            let ka = row_key(a, &TraceId(t), &SpanId(s));
            let kb = row_key(b, &TraceId(u), &SpanId(s));
            if a != b {
                prop_assert_eq!(ka.cmp(&kb), a.cmp(&b));
            }
            let row = RowId { start_ns: a, first: SpanId(s) };
            prop_assert_eq!(parse_row_key(&ka), Some((TraceId(t), row)));
            prop_assert_eq!(parse_row_key(&ka[1..]), None);
        }

        #[test]
        fn body_keys_group_by_trace_and_row_and_round_trip(
            a in any::<u64>(), b in any::<u64>(), pa in any::<u32>(), pb in any::<u32>(),
            t in proptest::array::uniform16(any::<u8>()), u in proptest::array::uniform16(any::<u8>()),
            s in proptest::array::uniform8(1u8..),
        ) {
            let ra = RowId { start_ns: a, first: SpanId(s) };
            let rb = RowId { start_ns: b, first: SpanId(s) };
            let ka = body_key(&TraceId(t), &ra, pa);
            let kb = body_key(&TraceId(u), &rb, pb);
            prop_assert!(ka.starts_with(&t));
            prop_assert_eq!(parse_body_key(&ka), Some((ra, pa)));
            prop_assert_eq!(parse_body_key(&ka[1..]), None);
            // Trace first, then row time, then position.
            prop_assert_eq!(ka.cmp(&kb), (t, a, pa).cmp(&(u, b, pb)));
        }

        #[test]
        fn row_round_trip(
            first in 0u64..(1 << 62),
            spans in proptest::collection::vec(
                (0u64..ROW_SPREAD_NS, any::<u64>(), any::<u64>(), any::<u64>(), 0i32..6, 0i32..3,
                 0usize..50, proptest::array::uniform8(1u8..)),
                1..40,
            ),
            hashes in proptest::collection::vec(any::<u64>(), 0..50),
        ) {
            // Distinct ids; parents in the row, outside it, or none.
            let ids: Vec<SpanId> = (0..spans.len() as u64)
                .map(|i| SpanId((i + 1).to_le_bytes()))
                .collect();
            let mut spans: Vec<RowSpan> = spans
                .into_iter()
                .enumerate()
                .map(|(i, (off, d, name, res, kind, status, p, outside))| RowSpan {
                    span_id: ids[i],
                    parent: match p {
                        0..=9 => None,
                        10..=19 => Some(SpanId(outside)),
                        _ => Some(ids[p % ids.len()]),
                    },
                    start_ns: first + off,
                    duration_ns: d,
                    name_id: name,
                    resource_id: res,
                    kind: SpanKind::from_i32(kind),
                    status: StatusCode::from_i32(status),
                })
                .collect();
            spans.sort_by_key(|s| s.start_ns);
            let f = bloom(&hashes);
            let b = encode_row(first, &spans, &f);
            let (back_f, back) = decode_row(first, &b).unwrap();
            prop_assert_eq!(back_f, &f[..]);
            prop_assert_eq!(row_bloom(&b).unwrap(), &f[..]);
            prop_assert_eq!(back, spans);
            for cut in [0, b.len() / 2, b.len() - 1] {
                prop_assert!(decode_row(first, &b[..cut]).is_err());
            }
        }

        #[test]
        fn attr_value_hash_is_the_hash_of_the_text(k in ".{0,8}", v in any_value(), long in 250usize..260) {
            let want = crate::storage::traces::types::attr_text(&v).map(|t| attr_hash(&k, &t));
            prop_assert_eq!(attr_value_hash(&k, &v), want);
            let s = AnyValue::String("x".repeat(long));
            let want = crate::storage::traces::types::attr_text(&s).map(|t| attr_hash(&k, &t));
            prop_assert_eq!(attr_value_hash(&k, &s), want);
        }

        #[test]
        fn bloom_holds_what_was_added(
            items in proptest::collection::vec(("[a-z.]{1,12}", "[a-z0-9]{0,8}"), 0..60),
        ) {
            let hashes: Vec<u64> = items.iter().map(|(k, v)| attr_hash(k, v)).collect();
            let f = bloom(&hashes);
            for h in &hashes {
                prop_assert!(bloom_may_contain(&f, *h));
            }
        }

        #[test]
        fn stats_keys_round_trip(
            svc in "[a-zA-Z0-9._-]{1,12}", op in proptest::option::of(".{0,12}"),
            m in 0u64..u64::from(u32::MAX), callee in "[a-z]{1,8}",
        ) {
            let k = red_key(&svc, m, op.as_deref());
            prop_assert_eq!(parse_red_key(&k), Some((svc.clone(), m, op.clone())));
            let mut tagged = vec![b'R'];
            tagged.extend_from_slice(&k);
            prop_assert_eq!(stats_key_minute(&tagged), Some(m));
            let d = dep_key(m, &svc, &callee);
            prop_assert_eq!(parse_dep_key(&d), Some((m, svc.clone(), callee.clone())));
            let mut tagged = vec![b'D'];
            tagged.extend_from_slice(&d);
            prop_assert_eq!(stats_key_minute(&tagged), Some(m));
            // Minutes of one service sort in time order.
            let later = red_key(&svc, m + 1, None);
            prop_assert!(red_key(&svc, m, op.as_deref()) < later || m + 1 > u64::from(u32::MAX));
        }

        #[test]
        fn agg_round_trip(durs in proptest::collection::vec(0u64..(1 << 45), 0..50), errs in 0u64..5) {
            let mut a = Agg::default();
            for d in &durs {
                a.record(*d, false);
            }
            a.errors += errs;
            prop_assert_eq!(decode_agg(&encode_agg(&a)).unwrap(), a);
        }

        #[test]
        fn summary_round_trip(start in 0u64..(1 << 62), d in 0u64..(1 << 40), n in any::<u32>(), known in any::<bool>()) {
            let s = TraceSummary {
                trace_id: TraceId([3; 16]),
                root_service: "svc".into(),
                root_name: "GET /".into(),
                root_known: known,
                root_start_ns: start + d / 2,
                start_ns: start,
                end_ns: start + d,
                span_count: u64::from(n),
                error_count: 1,
                services: vec!["svc".into(), "db".into()],
            };
            prop_assert_eq!(decode_summary(s.trace_id, &encode_summary(&s)).unwrap(), s);
        }
    }

    #[test]
    fn bloom_rejects_most_absent_attributes() {
        let hashes: Vec<u64> = (0..200)
            .map(|i| attr_hash("user.id", &format!("user-{i}")))
            .collect();
        let f = bloom(&hashes);
        assert_eq!(f.len(), 200, "8 bits per distinct item");
        let false_positives = (1000..11_000)
            .filter(|i| bloom_may_contain(&f, attr_hash("user.id", &format!("user-{i}"))))
            .count();
        assert!(false_positives < 400, "{false_positives} of 10000");
        assert!(!bloom_may_contain(&[], attr_hash("k", "v")));
        // The key and the value are hashed apart.
        assert_ne!(attr_hash("ab", "c"), attr_hash("a", "bc"));
    }

    #[test]
    fn resource_and_scope_round_trip() {
        let r = Resource {
            attributes: vec![("service.name".into(), AnyValue::String("a".into()))],
            dropped_attributes_count: 2,
            schema_url: "s".into(),
        };
        assert_eq!(decode_resource(&encode_resource(&r)).unwrap(), r);
        let s = Scope {
            name: "n".into(),
            version: "1".into(),
            attributes: vec![],
            dropped_attributes_count: 0,
            schema_url: String::new(),
        };
        assert_eq!(decode_scope(&encode_scope(&s)).unwrap(), s);
    }
}
