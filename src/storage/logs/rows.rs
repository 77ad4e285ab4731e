//! Row blocks: the stored part of log records, outside tantivy's document
//! store. The records of one block ([`super::bloom`], up to 4096
//! consecutive records of a partition) are kept together, column by
//! column, each column compressed with zstd on its own (version 4):
//!
//! - `head`: observed time (delta), flags, dropped attribute count, trace
//!   and span ids, event name ([`codec::encode_head`]);
//! - `attributes`, key by key: the block's distinct keys, its distinct key
//!   lists (*shapes*), each record's shape, then per key the values of the
//!   records that have it (`transpose_attributes`);
//! - `templates`: per record `varint 0` (the body is a value) or
//!   `varint n + 1` (the body is template `n`, [`super::template`]);
//! - `values`: the bodies that are values ([`codec::encode_value`]);
//! - `variables` and `packed`: the variables of templated bodies, by
//!   template (ascending), then by variable (a *slot*), each slot with its
//!   records in order and written by type ([`super::slots`]: one constant,
//!   numbers between one prefix and suffix, hex digits, or text), so that
//!   like values (the ids of one place in one line shape) sit together
//!   and numbers cost about their bits. Reading them back needs each
//!   template's number of variables, from the partition's templates;
//! - `shared`: the block's distinct shared parts (severity, resource,
//!   scope; [`codec::encode_shared`]) as `varint count | (varint length |
//!   bytes) each`, then each record's index among them.
//!
//! Earlier versions are still read. Version 3 kept each record's attribute
//! list whole ([`codec::encode_attributes`], one after another). Version 2
//! had the first five columns, its variables as `varint length | text`
//! each; version 1 had four: the fourth held values and, for a templated
//! body, `varint length | its variables` in record order. In versions 1
//! and 2 the shared part is in the index's `shared` column.
//!
//! Columns of like values compress far better than whole rows, and a
//! templated body keeps only its variables. A record's document holds its
//! `slot` (block number << [`SLOT_BITS`] | index in the block) in a fast
//! column; its time stays in the index's own column.
//!
//! File format (`rows` in a partition directory): an append-only entry file
//! ([`super::framed`]), one block per entry, payload `u64 block | u8
//! version | varint records | per column (varint raw length | varint
//! compressed length) | the compressed columns`. Entries are appended and
//! synced before the index commit that makes their records searchable; on
//! open only entry heads are read (and the last entry checked whole).
//! Decoded blocks go to a cache shared by a store's partitions.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use parking_lot::Mutex;

use super::codec::{self, CodecError, Pieces, Shared};
use super::framed::{frame, FramedFile};
use super::template::Templates;
use crate::model::{AnyValue, LogRecord};
use crate::storage::varint::{put_prefixed, put_varint, read_prefixed, read_varint};
use crate::storage::StorageError;

/// File name of a partition's row blocks.
pub const FILE: &str = "rows";
/// Bits of a record's index in its block within its slot number.
pub const SLOT_BITS: u32 = 16;
const VERSION: u8 = 4;
const COLUMNS: usize = 7;
/// Largest entry payload and decompressed column accepted (guards against
/// a damaged length).
const MAX_PAYLOAD: usize = 256 << 20;
const MAX_COLUMN: usize = 1 << 30;
/// Bytes of decoded blocks a store keeps in memory by default.
pub const CACHE_BYTES: usize = 64 << 20;

/// The slot number of the `index`-th record of `block`.
pub fn slot(block: u64, index: usize) -> u64 {
    (block << SLOT_BITS) | index as u64
}

/// The body of a row.
#[derive(Debug, Clone, PartialEq)]
pub enum RowBody {
    /// An encoded value ([`codec::encode_value`]).
    Value(Vec<u8>),
    /// A template number and the variables ([`super::template::Shape::values`]).
    Template(u32, Vec<u8>),
}

/// One record's stored part, encoded, before its block is written.
#[derive(Debug, Clone, PartialEq)]
pub struct RowParts {
    pub head: Vec<u8>,
    pub attributes: Vec<u8>,
    pub body: RowBody,
    /// The shared part ([`codec::encode_shared`]).
    pub shared: Vec<u8>,
}

impl RowParts {
    /// The parts of `r`, its body as a value.
    pub fn of(r: &LogRecord) -> RowParts {
        let mut head = Vec::with_capacity(16);
        codec::encode_head(r, &mut head);
        let mut attributes = Vec::with_capacity(64);
        codec::encode_attributes(r, &mut attributes);
        let mut body = Vec::new();
        codec::encode_value(&r.body, &mut body);
        let mut shared = Vec::with_capacity(64);
        codec::encode_shared(r, &mut shared);
        RowParts {
            head,
            attributes,
            body: RowBody::Value(body),
            shared,
        }
    }
}

/// Splits encoded variables (`varint length | bytes` each) into their
/// byte ranges; `None` when they are damaged.
fn split_values(values: &[u8]) -> Option<Vec<(usize, usize)>> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < values.len() {
        let v = read_prefixed(values, &mut pos)?;
        out.push((pos - v.len(), pos));
    }
    Some(out)
}

/// Writes the attribute lists of `rows` key by key (version 4): `varint
/// keys | (varint length | key) each`, `varint shapes | (varint n | n key
/// indexes) each` (a shape: the keys of one record, in order), each
/// record's shape index, then per key `varint length` and the encoded
/// values of that key, record after record. Values of one key sit
/// together (a status code next to status codes), which zstd compresses
/// far better than whole lists.
fn transpose_attributes(rows: &[&RowParts], out: &mut Vec<u8>) -> Result<(), StorageError> {
    let mut keys: HashMap<&[u8], u32> = HashMap::new();
    let mut key_list: Vec<&[u8]> = Vec::new();
    let mut values: Vec<Vec<u8>> = Vec::new();
    let mut shapes: HashMap<Vec<u32>, u64> = HashMap::new();
    let mut shape_list: Vec<Vec<u32>> = Vec::new();
    let mut of_record = Vec::with_capacity(rows.len());
    let (mut pieces, mut shape) = (Vec::new(), Vec::new());
    for r in rows {
        let mut p = Pieces::new(&r.attributes);
        p.attribute_pieces(&mut pieces)
            .and_then(|_| p.end())
            .map_err(|e| StorageError::Backend(format!("log rows: attributes: {e}")))?;
        shape.clear();
        for (k, v) in &pieces {
            let i = *keys.entry(k).or_insert_with(|| {
                key_list.push(k);
                values.push(Vec::new());
                key_list.len() as u32 - 1
            });
            shape.push(i);
            values[i as usize].extend_from_slice(v);
        }
        let n = match shapes.get(&shape) {
            Some(n) => *n,
            None => {
                let n = shape_list.len() as u64;
                shapes.insert(shape.clone(), n);
                shape_list.push(shape.clone());
                n
            }
        };
        put_varint(&mut of_record, n);
    }
    put_varint(out, key_list.len() as u64);
    for k in key_list {
        put_prefixed(out, k);
    }
    put_varint(out, shape_list.len() as u64);
    for shape in &shape_list {
        put_varint(out, shape.len() as u64);
        for i in shape {
            put_varint(out, *i as u64);
        }
    }
    out.extend_from_slice(&of_record);
    for v in &values {
        put_varint(out, v.len() as u64);
    }
    for v in &values {
        out.extend_from_slice(v);
    }
    Ok(())
}

/// Reads attribute lists written by [`transpose_attributes`] back into
/// their row form ([`codec::encode_attributes`], one after another) for
/// `count` records.
fn untranspose_attributes(col: &[u8], count: usize) -> Result<Vec<u8>, CodecError> {
    let bad = || damaged("attribute column");
    let mut pos = 0;
    // Every item takes at least one byte: counts beyond the data are damage.
    let items = |pos: &mut usize| -> Result<usize, CodecError> {
        let n = read_varint(col, pos).ok_or(bad())?;
        usize::try_from(n)
            .ok()
            .filter(|n| *n <= col.len())
            .ok_or(bad())
    };
    // An index into a list of `len`.
    let index = |pos: &mut usize, len: usize| -> Result<usize, CodecError> {
        read_varint(col, pos)
            .map(|i| i as usize)
            .filter(|i| *i < len)
            .ok_or(bad())
    };
    let keys: Vec<&[u8]> = (0..items(&mut pos)?)
        .map(|_| read_prefixed(col, &mut pos).ok_or(bad()))
        .collect::<Result<_, _>>()?;
    let mut shapes: Vec<Vec<usize>> = Vec::new();
    for _ in 0..items(&mut pos)? {
        let n = items(&mut pos)?;
        let shape = (0..n)
            .map(|_| index(&mut pos, keys.len()))
            .collect::<Result<_, _>>()?;
        shapes.push(shape);
    }
    let of_record: Vec<usize> = (0..count)
        .map(|_| index(&mut pos, shapes.len()))
        .collect::<Result<_, _>>()?;
    let mut spans = Vec::with_capacity(keys.len());
    let lengths: Vec<usize> = (0..keys.len())
        .map(|_| items(&mut pos))
        .collect::<Result<_, _>>()?;
    for len in lengths {
        let end = pos
            .checked_add(len)
            .filter(|e| *e <= col.len())
            .ok_or(bad())?;
        spans.push(&col[pos..end]);
        pos = end;
    }
    if pos != col.len() {
        return Err(bad());
    }
    let mut at = vec![0usize; keys.len()];
    let mut out = Vec::with_capacity(col.len() * 4);
    for shape in of_record.into_iter().map(|n| &shapes[n]) {
        put_varint(&mut out, shape.len() as u64);
        for &k in shape {
            let mut p = Pieces::at(spans[k], at[k]);
            p.skip_value()?;
            put_prefixed(&mut out, keys[k]);
            out.extend_from_slice(&spans[k][at[k]..p.pos()]);
            at[k] = p.pos();
        }
        if out.len() > MAX_COLUMN {
            return Err(bad());
        }
    }
    if at.iter().zip(&spans).any(|(a, s)| *a != s.len()) {
        return Err(bad());
    }
    Ok(out)
}

/// The payload of the file entry of `block` holding `rows`, in order.
pub fn encode_block(block: u64, rows: &[&RowParts], level: i32) -> Result<Vec<u8>, StorageError> {
    let mut cols: [Vec<u8>; COLUMNS] = Default::default();
    // Per template, per variable: the values of its records in order.
    let mut slots: BTreeMap<u32, Vec<Vec<&[u8]>>> = BTreeMap::new();
    // Distinct shared parts in order of first use, and each record's.
    let mut shared: HashMap<&[u8], u64> = HashMap::new();
    let mut distinct: Vec<&[u8]> = Vec::new();
    let mut shared_of = Vec::with_capacity(rows.len());
    for r in rows {
        let n = *shared.entry(&r.shared).or_insert_with(|| {
            distinct.push(&r.shared);
            distinct.len() as u64 - 1
        });
        put_varint(&mut shared_of, n);
        cols[0].extend_from_slice(&r.head);
        match &r.body {
            RowBody::Value(v) => {
                cols[2].push(0);
                cols[3].extend_from_slice(v);
            }
            RowBody::Template(n, values) => {
                put_varint(&mut cols[2], *n as u64 + 1);
                let ranges = split_values(values).ok_or_else(|| {
                    StorageError::Backend("log rows: damaged template variables".into())
                })?;
                let per = slots.entry(*n).or_default();
                if per.is_empty() {
                    per.resize(ranges.len(), Vec::new());
                } else if per.len() != ranges.len() {
                    return Err(StorageError::Backend(
                        "log rows: records of one template with other variable counts".into(),
                    ));
                }
                for ((from, to), out) in ranges.into_iter().zip(per.iter_mut()) {
                    out.push(&values[from..to]);
                }
            }
        }
    }
    transpose_attributes(rows, &mut cols[1])?;
    let [.., vars, packed, shared_col] = &mut cols;
    for per in slots.values() {
        for values in per {
            super::slots::encode(values, vars, packed);
        }
    }
    put_varint(shared_col, distinct.len() as u64);
    for d in distinct {
        put_prefixed(shared_col, d);
    }
    shared_col.extend_from_slice(&shared_of);
    let mut out = Vec::new();
    out.extend_from_slice(&block.to_le_bytes());
    out.push(VERSION);
    put_varint(&mut out, rows.len() as u64);
    let mut packed = Vec::with_capacity(COLUMNS);
    for c in &cols {
        packed.push(zstd::bulk::compress(c, level)?);
    }
    for (c, z) in cols.iter().zip(&packed) {
        put_varint(&mut out, c.len() as u64);
        put_varint(&mut out, z.len() as u64);
    }
    for z in packed {
        out.extend_from_slice(&z);
    }
    Ok(out)
}

/// A block's columns, decompressed, with where each record starts.
#[derive(Debug)]
pub struct DecodedBlock {
    /// The distinct shared parts of the block's records (version 3).
    shared: Vec<Shared>,
    head: Vec<u8>,
    attributes: Vec<u8>,
    /// Bodies that are values.
    values: Vec<u8>,
    /// Template variables.
    vars: Vec<u8>,
    /// Byte ranges of template variables in `vars`, record after record.
    var_ranges: Vec<(u32, u32)>,
    rows: Vec<RowAt>,
}

#[derive(Debug, Clone, Copy)]
struct RowAt {
    /// Index of its shared part, or [`NO_SHARED`].
    shared: u32,
    head: u32,
    attributes: u32,
    /// A value: its offset in `values`; a template: the index of its first
    /// variable in `var_ranges`.
    body: u32,
    /// 0: the body is a value; n + 1: template n.
    template: u64,
}

/// A record of a block written before blocks held shared parts.
const NO_SHARED: u32 = u32::MAX;

fn damaged(what: &'static str) -> CodecError {
    CodecError::new(what)
}

/// The block number of an entry payload.
fn block_of(payload: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(payload.get(..8)?.try_into().ok()?))
}

/// Decodes an entry payload; templated bodies need the partition's
/// `templates` (every length checked: a damaged payload is an error, not
/// a panic). Version 1 (bodies and variables in one column, each record's
/// variables together) is read too.
pub fn decode_block(payload: &[u8], templates: &Templates) -> Result<DecodedBlock, CodecError> {
    let mut pos = 8;
    let version = *payload.get(8).ok_or(damaged("row block version"))?;
    let columns = match version {
        1 => 4,
        2 => 5,
        3 | VERSION => COLUMNS,
        _ => return Err(damaged("row block version")),
    };
    pos += 1;
    let count = read_varint(payload, &mut pos).ok_or(damaged("row count"))? as usize;
    if count > super::bloom::BLOCK_RECORDS {
        return Err(damaged("row count"));
    }
    let mut sizes = Vec::with_capacity(columns);
    for _ in 0..columns {
        let raw = read_varint(payload, &mut pos).ok_or(damaged("column size"))? as usize;
        let packed = read_varint(payload, &mut pos).ok_or(damaged("column size"))? as usize;
        if raw > MAX_COLUMN {
            return Err(damaged("column size"));
        }
        sizes.push((raw, packed));
    }
    let mut cols: VecDeque<Vec<u8>> = VecDeque::with_capacity(columns);
    for (raw, packed) in sizes {
        let end = pos.checked_add(packed).ok_or(damaged("column size"))?;
        let z = payload.get(pos..end).ok_or(damaged("truncated column"))?;
        pos = end;
        let c = zstd::bulk::decompress(z, raw).map_err(|_| damaged("column compression"))?;
        if c.len() != raw {
            return Err(damaged("column size"));
        }
        cols.push_back(c);
    }
    if pos != payload.len() {
        return Err(damaged("row block length"));
    }
    let mut next = || cols.pop_front().unwrap_or_default();
    let (head, mut attributes, template_col, values) = (next(), next(), next(), next());
    if version >= 4 {
        attributes = untranspose_attributes(&attributes, count)?;
    }
    let vars = if version == 1 { Vec::new() } else { next() };
    let (packed, shared_col) = (next(), next());
    // Version 3: the block's distinct shared parts, then each record's.
    let mut shared = Vec::new();
    let mut s = 0;
    if version >= 3 {
        let n = read_varint(&shared_col, &mut s).ok_or(damaged("shared column"))?;
        for _ in 0..n.min(count as u64 + 1) {
            let bytes = read_prefixed(&shared_col, &mut s).ok_or(damaged("shared column"))?;
            shared.push(codec::decode_shared(bytes)?);
        }
        if n > shared.len() as u64 {
            return Err(damaged("shared column"));
        }
    }
    let (mut h, mut a, mut b) = (
        Pieces::new(&head),
        Pieces::new(&attributes),
        Pieces::new(&values),
    );
    let mut t = 0;
    let mut rows = Vec::with_capacity(count);
    let mut var_ranges: Vec<(u32, u32)> = Vec::new();
    // Version 2: per template, its records (index in `rows`, first
    // variable) in order.
    let mut by_template: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
    for i in 0..count {
        let template = read_varint(&template_col, &mut t).ok_or(damaged("template column"))?;
        let shared_at = if version >= 3 {
            let n = read_varint(&shared_col, &mut s).ok_or(damaged("shared column"))?;
            if n >= shared.len() as u64 {
                return Err(damaged("shared column"));
            }
            n as u32
        } else {
            NO_SHARED
        };
        let at = RowAt {
            shared: shared_at,
            head: h.pos() as u32,
            attributes: a.pos() as u32,
            body: if template == 0 {
                b.pos() as u32
            } else {
                var_ranges.len() as u32
            },
            template,
        };
        h.skip_head()?;
        a.skip_attributes()?;
        if template == 0 {
            b.skip_value()?;
        } else {
            let n = u32::try_from(template - 1).map_err(|_| damaged("template number"))?;
            let slots = templates.slots(n).ok_or(damaged("unknown template"))?;
            if slots > MAX_COLUMN / 2 {
                return Err(damaged("template"));
            }
            if version == 1 {
                // The record's variables follow its length, in the body column.
                let len = b.varint()? as usize;
                let from = b.pos();
                b.skip_raw(len)?;
                let ranges =
                    split_values(&values[from..from + len]).ok_or(damaged("body variables"))?;
                if ranges.len() != slots {
                    return Err(damaged("body variables"));
                }
                var_ranges.extend(
                    ranges
                        .into_iter()
                        .map(|(f, e)| ((from + f) as u32, (from + e) as u32)),
                );
            } else {
                var_ranges.resize(var_ranges.len() + slots, (0, 0));
                by_template.entry(template).or_default().push(i);
            }
        }
        rows.push(at);
    }
    h.end()?;
    a.end()?;
    b.end()?;
    if t != template_col.len() {
        return Err(damaged("template column"));
    }
    if s != shared_col.len() {
        return Err(damaged("shared column"));
    }
    let vars = match version {
        1 => values.clone(),
        2 => {
            let mut v = Pieces::new(&vars);
            for (template, records) in &by_template {
                let slots = templates
                    .slots((*template - 1) as u32)
                    .ok_or(damaged("unknown template"))?;
                for slot in 0..slots {
                    for r in records {
                        let len = v.varint()? as usize;
                        let from = v.pos();
                        v.skip_raw(len)?;
                        var_ranges[rows[*r].body as usize + slot] = (from as u32, v.pos() as u32);
                    }
                }
            }
            v.end()?;
            vars
        }
        _ => {
            // Typed slots: the values are written out as text again.
            let (mut tpos, mut ppos) = (0, 0);
            let mut text = Vec::with_capacity(vars.len() + 2 * packed.len());
            let mut ranges = Vec::new();
            for (template, records) in &by_template {
                let slots = templates
                    .slots((*template - 1) as u32)
                    .ok_or(damaged("unknown template"))?;
                for slot in 0..slots {
                    ranges.clear();
                    let (t, p) = (&mut tpos, &mut ppos);
                    super::slots::decode(
                        records.len(),
                        &vars,
                        t,
                        &packed,
                        p,
                        &mut text,
                        &mut ranges,
                    )
                    .ok_or(damaged("template variables"))?;
                    for (r, range) in records.iter().zip(&ranges) {
                        var_ranges[rows[*r].body as usize + slot] = *range;
                    }
                }
            }
            if tpos != vars.len() || ppos != packed.len() {
                return Err(damaged("template variables"));
            }
            text
        }
    };
    Ok(DecodedBlock {
        shared,
        head,
        attributes,
        vars,
        values,
        var_ranges,
        rows,
    })
}

impl DecodedBlock {
    /// Bytes held in memory (about).
    pub fn bytes(&self) -> usize {
        self.shared.len() * 256
            + self.head.len()
            + self.attributes.len()
            + self.values.len()
            + self.vars.len()
            + self.var_ranges.len() * std::mem::size_of::<(u32, u32)>()
            + self.rows.len() * std::mem::size_of::<RowAt>()
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The body of the `i`-th record.
    pub fn body(&self, i: usize, templates: &Templates) -> Result<AnyValue, CodecError> {
        let at = self.rows.get(i).ok_or(damaged("row index"))?;
        if at.template == 0 {
            return Pieces::at(&self.values, at.body as usize).value();
        }
        let n = u32::try_from(at.template - 1).map_err(|_| damaged("template number"))?;
        let first = at.body as usize;
        let var = |k: usize| {
            let (from, to) = *self.var_ranges.get(first + k)?;
            self.vars.get(from as usize..to as usize)
        };
        let mut text = String::new();
        if !templates.render_with(n, var, &mut text) {
            return Err(damaged("template or its variables"));
        }
        Ok(AnyValue::String(text))
    }

    /// The shared part of the `i`-th record, if the block holds it
    /// (version 3; before, it is in the index's `shared` column).
    pub fn shared(&self, i: usize) -> Option<&Shared> {
        self.shared.get(self.rows.get(i)?.shared as usize)
    }

    /// The `i`-th record, with its time and shared part (the block's own,
    /// else `shared`).
    pub fn record(
        &self,
        i: usize,
        time_ns: u64,
        shared: Option<&Shared>,
        templates: &Templates,
    ) -> Result<LogRecord, CodecError> {
        let at = self.rows.get(i).ok_or(damaged("row index"))?;
        let shared = self.shared(i).or(shared).ok_or(damaged("shared part"))?;
        let mut r = LogRecord {
            resource: shared.resource.clone(),
            scope: shared.scope.clone(),
            time_ns,
            observed_time_ns: 0,
            severity_number: shared.severity_number,
            severity_text: shared.severity_text.clone(),
            body: self.body(i, templates)?,
            attributes: Pieces::at(&self.attributes, at.attributes as usize).attributes()?,
            dropped_attributes_count: 0,
            flags: 0,
            trace_id: None,
            span_id: None,
            event_name: String::new(),
        };
        Pieces::at(&self.head, at.head as usize).head_into(&mut r)?;
        Ok(r)
    }
}

/// A partition's row blocks: the file and where each block's entry is in
/// it.
#[derive(Debug)]
pub struct RowFile {
    file: FramedFile,
    reader: Option<File>,
    /// Block number → (payload offset, length).
    blocks: HashMap<u64, (u64, usize)>,
    /// This partition's key in `cache`.
    key: u64,
    cache: Arc<BlockCache>,
}

/// Decoded blocks of a store's partitions, least recently used dropped
/// first beyond a byte budget.
#[derive(Debug)]
pub struct BlockCache {
    budget: usize,
    state: Mutex<CacheState>,
}

#[derive(Debug, Default)]
struct CacheState {
    /// (partition, block) → block and its last use.
    blocks: HashMap<(u64, u64), (Arc<DecodedBlock>, u64)>,
    bytes: usize,
    clock: u64,
}

impl BlockCache {
    pub fn new(budget: usize) -> Arc<BlockCache> {
        Arc::new(BlockCache {
            budget,
            state: Mutex::new(CacheState::default()),
        })
    }

    fn get(&self, key: (u64, u64)) -> Option<Arc<DecodedBlock>> {
        let mut st = self.state.lock();
        st.clock += 1;
        let now = st.clock;
        st.blocks.get_mut(&key).map(|(b, used)| {
            *used = now;
            b.clone()
        })
    }

    fn put(&self, key: (u64, u64), block: Arc<DecodedBlock>) {
        let size = block.bytes();
        if size > self.budget {
            return;
        }
        let mut st = self.state.lock();
        st.clock += 1;
        let now = st.clock;
        if let Some((old, _)) = st.blocks.insert(key, (block, now)) {
            st.bytes -= old.bytes();
        }
        st.bytes += size;
        while st.bytes > self.budget {
            let Some(oldest) = st
                .blocks
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| *k)
            else {
                break;
            };
            if let Some((b, _)) = st.blocks.remove(&oldest) {
                st.bytes -= b.bytes();
            }
        }
    }

    /// Drops the blocks of partition `partition` (deleted).
    pub fn forget(&self, partition: u64) {
        let mut st = self.state.lock();
        let gone: Vec<(u64, u64)> = st
            .blocks
            .keys()
            .filter(|k| k.0 == partition)
            .copied()
            .collect();
        for k in gone {
            if let Some((b, _)) = st.blocks.remove(&k) {
                st.bytes -= b.bytes();
            }
        }
    }

    /// Bytes of the blocks held.
    pub fn bytes(&self) -> usize {
        self.state.lock().bytes
    }
}

impl RowFile {
    /// Opens the row blocks of a partition directory (whose templates are
    /// `templates`), dropping a torn tail; decoded blocks go to `cache`
    /// under the partition's `key`.
    pub fn open(
        dir: &Path,
        templates: &Templates,
        key: u64,
        cache: Arc<BlockCache>,
    ) -> Result<RowFile, StorageError> {
        let mut blocks = HashMap::new();
        let file = FramedFile::scan(
            dir.join(FILE),
            MAX_PAYLOAD,
            8,
            "row block",
            |at, len, head| match block_of(head) {
                Some(b) => {
                    blocks.insert(b, (at, len));
                    true
                }
                None => false,
            },
            |last| decode_block(last, templates).is_ok(),
        )?;
        let reader = if blocks.is_empty() {
            None
        } else {
            Some(File::open(file.path())?)
        };
        Ok(RowFile {
            file,
            reader,
            blocks,
            key,
            cache,
        })
    }

    /// Appends block payloads ([`encode_block`]) and syncs them. On an
    /// error the file is cut back and nothing is added.
    pub fn append(&mut self, payloads: &[Vec<u8>]) -> Result<(), StorageError> {
        let mut buf = Vec::with_capacity(payloads.iter().map(|p| p.len() + 8).sum());
        let mut at = Vec::with_capacity(payloads.len());
        let start = self.file.bytes();
        for p in payloads {
            let block = block_of(p).ok_or_else(|| {
                StorageError::Backend("log rows: a block payload without its number".into())
            })?;
            at.push((block, start + buf.len() as u64 + 4, p.len()));
            frame(p, &mut buf);
        }
        self.file.append(&buf)?;
        if self.reader.is_none() && !at.is_empty() {
            self.reader = Some(File::open(self.file.path())?);
        }
        for (block, offset, len) in at {
            self.blocks.insert(block, (offset, len));
        }
        Ok(())
    }

    /// The decoded rows of `block` (`templates`: the partition's).
    pub fn block(
        &self,
        block: u64,
        templates: &Templates,
    ) -> Result<Arc<DecodedBlock>, StorageError> {
        if let Some(b) = self.cache.get((self.key, block)) {
            return Ok(b);
        }
        let missing = || StorageError::Backend(format!("log rows: block {block} is missing"));
        let (offset, len) = *self.blocks.get(&block).ok_or_else(missing)?;
        let reader = self.reader.as_ref().ok_or_else(missing)?;
        let mut payload = vec![0u8; len];
        reader.read_exact_at(&mut payload, offset)?;
        let decoded = Arc::new(
            decode_block(&payload, templates)
                .map_err(|e| StorageError::Backend(format!("log rows: block {block}: {e}")))?,
        );
        self.cache.put((self.key, block), decoded.clone());
        Ok(decoded)
    }

    /// Bytes of the file.
    pub fn bytes(&self) -> u64 {
        self.file.bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{SpanId, TraceId};
    use crate::storage::logs::template;
    use crate::storage::suite;

    /// Records with every field set in some way, and their rows (string
    /// bodies by template where they have one).
    fn records(templates: &mut Templates) -> (Vec<LogRecord>, Vec<RowParts>) {
        let mut out = Vec::new();
        for n in 0..50u64 {
            let body = match n % 5 {
                0 => format!("GET /items/{n} took {}ms by Alice", n * 3),
                1 => format!("cache miss key=user:{n}:profile shard={}", n % 4),
                2 if n % 10 == 2 => format!("{}{}", "long ".repeat(1000), n),
                // Hex ids, one constant, numbers with a prefix, mixed text.
                2 => format!(
                    "req {:016x} v1 at node{} code {}",
                    n.wrapping_mul(0x9e37_79b9_7f4a_7c15),
                    n % 3,
                    ["x1y", "007", "7"][n as usize % 3]
                ),
                _ => String::new(),
            };
            let service = ["svc", "other"][n as usize % 2];
            let mut r = suite::log(1_000_000 + n, service, &body, Some(n as u8));
            // Shared parts: 2 services × 3 severities.
            r.severity_number = [9, 13, 17][n as usize % 3];
            r.severity_text = ["INFO", "WARN", "ERROR"][n as usize % 3].into();
            r.observed_time_ns = if n % 2 == 0 {
                r.time_ns + 500
            } else {
                r.time_ns - 7
            };
            r.flags = (n % 3) as u32;
            r.dropped_attributes_count = (n % 2) as u32;
            // (All-zero ids are not ids.)
            r.span_id = (n % 4 == 0).then_some(SpanId([n as u8 + 1; 8]));
            r.trace_id = (n % 3 != 0).then_some(TraceId([n as u8 + 1; 16]));
            r.event_name = if n % 7 == 0 {
                "evt".into()
            } else {
                String::new()
            };
            r.attributes = vec![
                ("http.status_code".into(), AnyValue::Int(200 + n as i64)),
                (
                    "user".into(),
                    AnyValue::Map(vec![("id".into(), AnyValue::String(format!("u{n}")))]),
                ),
            ];
            // Other key sets: none, one more, a key twice, another order.
            match n % 6 {
                0 => r.attributes.clear(),
                1 => r
                    .attributes
                    .push(("thread".into(), AnyValue::Bool(n % 4 == 1))),
                2 => r
                    .attributes
                    .push(("http.status_code".into(), AnyValue::Empty)),
                3 => r.attributes.reverse(),
                _ => {}
            }
            match n % 5 {
                3 => {
                    r.body = AnyValue::Map(vec![("k".into(), AnyValue::Double(n as f64))]);
                }
                4 => r.body = AnyValue::Empty,
                _ => {}
            }
            out.push(r);
        }
        let rows = out
            .iter()
            .map(|r| {
                let mut row = RowParts::of(r);
                if let AnyValue::String(s) = &r.body {
                    if let Some(shape) = template::shape(s) {
                        let n = templates.number(&shape.key).unwrap();
                        row.body = RowBody::Template(n, shape.values);
                    }
                }
                row
            })
            .collect();
        (out, rows)
    }

    fn refs(rows: &[RowParts]) -> Vec<&RowParts> {
        rows.iter().collect()
    }

    fn shared_of(r: &LogRecord) -> Shared {
        let mut buf = Vec::new();
        codec::encode_shared(r, &mut buf);
        codec::decode_shared(&buf).unwrap()
    }

    #[test]
    fn a_block_gives_back_every_record() {
        let dir = tempfile::tempdir().unwrap();
        let mut templates = Templates::open(dir.path()).unwrap();
        let (recs, rows) = records(&mut templates);
        assert!(rows.iter().any(|r| matches!(r.body, RowBody::Template(..))));
        assert!(rows.iter().any(|r| matches!(r.body, RowBody::Value(..))));
        let payload = encode_block(7, &refs(&rows), 3).unwrap();
        assert_eq!(block_of(&payload), Some(7));
        let block = decode_block(&payload, &templates).unwrap();
        assert_eq!(block.len(), recs.len());
        for (i, r) in recs.iter().enumerate() {
            let got = block.record(i, r.time_ns, None, &templates).unwrap();
            assert_eq!(&got, r, "record {i}");
            assert_eq!(block.shared(i), Some(&shared_of(r)));
            // Without the block's own shared part nothing else would do.
            assert_ne!(block.shared(i), block.shared(i + 1));
            assert_eq!(block.body(i, &templates).unwrap(), r.body);
        }
        assert!(block
            .record(recs.len(), 0, Some(&shared_of(&recs[0])), &templates)
            .is_err());
        // A template the partition does not know: an error.
        let empty = Templates::open(tempfile::tempdir().unwrap().path()).unwrap();
        assert!(block.body(0, &empty).is_err());
        // An empty block.
        let none = decode_block(&encode_block(1, &[], 3).unwrap(), &templates).unwrap();
        assert!(none.is_empty());
    }

    #[test]
    fn the_cache_keeps_recent_blocks_within_its_budget() {
        let dir = tempfile::tempdir().unwrap();
        let mut templates = Templates::open(dir.path()).unwrap();
        let (_, rows) = records(&mut templates);
        let block =
            Arc::new(decode_block(&encode_block(0, &refs(&rows), 3).unwrap(), &templates).unwrap());
        let size = block.bytes();
        assert!(size > 0);
        let cache = BlockCache::new(size * 2);
        cache.put((1, 0), block.clone());
        cache.put((1, 1), block.clone());
        assert!(cache.get((1, 0)).is_some());
        // Over budget: the least recently used goes.
        cache.put((2, 0), block.clone());
        assert!(cache.get((1, 1)).is_none());
        assert!(cache.get((1, 0)).is_some());
        assert!(cache.get((2, 0)).is_some());
        assert_eq!(cache.bytes(), size * 2);
        cache.forget(1);
        assert!(cache.get((1, 0)).is_none());
        assert_eq!(cache.bytes(), size);
        // A block larger than the budget is not kept.
        let tiny = BlockCache::new(size - 1);
        tiny.put((1, 0), block);
        assert_eq!(tiny.bytes(), 0);
    }

    /// An entry payload of `version` with these (uncompressed) columns.
    fn payload_of(block: u64, version: u8, records: usize, cols: &[Vec<u8>]) -> Vec<u8> {
        let mut payload = block.to_le_bytes().to_vec();
        payload.push(version);
        put_varint(&mut payload, records as u64);
        let packed: Vec<Vec<u8>> = cols
            .iter()
            .map(|c| zstd::bulk::compress(c, 3).unwrap())
            .collect();
        for (c, z) in cols.iter().zip(&packed) {
            put_varint(&mut payload, c.len() as u64);
            put_varint(&mut payload, z.len() as u64);
        }
        for z in &packed {
            payload.extend_from_slice(z);
        }
        payload
    }

    /// The uncompressed columns of an entry payload.
    fn columns_of(payload: &[u8]) -> Vec<Vec<u8>> {
        let mut pos = 9;
        let _records = read_varint(payload, &mut pos).unwrap();
        let mut sizes = Vec::new();
        while sizes.len() < COLUMNS {
            let raw = read_varint(payload, &mut pos).unwrap() as usize;
            let packed = read_varint(payload, &mut pos).unwrap() as usize;
            sizes.push((raw, packed));
        }
        sizes
            .into_iter()
            .map(|(raw, packed)| {
                pos += packed;
                zstd::bulk::decompress(&payload[pos - packed..pos], raw).unwrap()
            })
            .collect()
    }

    #[test]
    fn attributes_are_written_key_by_key() {
        let dir = tempfile::tempdir().unwrap();
        let mut templates = Templates::open(dir.path()).unwrap();
        let (_, rows) = records(&mut templates);
        let mut col = Vec::new();
        transpose_attributes(&refs(&rows), &mut col).unwrap();
        let row_form: Vec<u8> = rows.iter().flat_map(|r| r.attributes.clone()).collect();
        assert_eq!(untranspose_attributes(&col, rows.len()).unwrap(), row_form);
        // The keys are written once: the column holds `http.status_code`
        // once where the rows hold it for every record with attributes.
        let key = b"http.status_code";
        let times = |b: &[u8]| b.windows(key.len()).filter(|w| w == key).count();
        assert_eq!(times(&col), 1);
        assert!(times(&row_form) >= 40);
        // Damage: an error or some lists, never a panic.
        for cut in 0..col.len() {
            assert!(untranspose_attributes(&col[..cut], rows.len()).is_err());
            for flip in [0x01u8, 0x80, 0xff] {
                let mut c = col.clone();
                c[cut] ^= flip;
                let _ = untranspose_attributes(&c, rows.len());
            }
        }
        assert!(untranspose_attributes(&col, rows.len() + 1).is_err());
        // No records, no attributes.
        let mut empty = Vec::new();
        transpose_attributes(&[], &mut empty).unwrap();
        assert_eq!(untranspose_attributes(&empty, 0).unwrap(), Vec::<u8>::new());
    }

    #[test]
    fn version_3_blocks_are_read() {
        // Version 3: attribute lists one after another in their column.
        let dir = tempfile::tempdir().unwrap();
        let mut templates = Templates::open(dir.path()).unwrap();
        let (recs, rows) = records(&mut templates);
        let mut cols = columns_of(&encode_block(5, &refs(&rows), 3).unwrap());
        cols[1] = rows.iter().flat_map(|r| r.attributes.clone()).collect();
        let payload = payload_of(5, 3, rows.len(), &cols);
        let block = decode_block(&payload, &templates).unwrap();
        for (i, r) in recs.iter().enumerate() {
            let got = block.record(i, r.time_ns, None, &templates).unwrap();
            assert_eq!(&got, r, "record {i}");
        }
    }

    /// The payload of `rows` in version 1 (four columns; a templated body
    /// is `varint length | variables` in the body column, after the values
    /// of other rows) or 2 (five columns; the variables of templated
    /// bodies as `varint length | text`, by template, variable, then
    /// record).
    fn old_payload(rows: &[RowParts], version: u8) -> Vec<u8> {
        let mut cols: Vec<Vec<u8>> = vec![Vec::new(); 3 + version as usize];
        let mut slots: BTreeMap<u32, Vec<Vec<u8>>> = BTreeMap::new();
        for r in rows {
            cols[0].extend_from_slice(&r.head);
            cols[1].extend_from_slice(&r.attributes);
            match &r.body {
                RowBody::Value(v) => {
                    cols[2].push(0);
                    cols[3].extend_from_slice(v);
                }
                RowBody::Template(n, values) if version == 1 => {
                    put_varint(&mut cols[2], *n as u64 + 1);
                    put_prefixed(&mut cols[3], values);
                }
                RowBody::Template(n, values) => {
                    put_varint(&mut cols[2], *n as u64 + 1);
                    let ranges = split_values(values).unwrap();
                    let per = slots.entry(*n).or_default();
                    per.resize(ranges.len(), Vec::new());
                    for ((from, to), out) in ranges.into_iter().zip(per.iter_mut()) {
                        put_varint(out, (to - from) as u64);
                        out.extend_from_slice(&values[from..to]);
                    }
                }
            }
        }
        for values in slots.values().flatten() {
            cols[4].extend_from_slice(values);
        }
        payload_of(5, version, rows.len(), &cols)
    }

    #[test]
    fn versions_1_and_2_blocks_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let mut templates = Templates::open(dir.path()).unwrap();
        let (recs, rows) = records(&mut templates);
        for version in [1, 2] {
            let mut payload = old_payload(&rows, version);
            let block = decode_block(&payload, &templates).unwrap();
            for (i, r) in recs.iter().enumerate() {
                // The shared part comes from the index's column.
                let got = block
                    .record(i, r.time_ns, Some(&shared_of(r)), &templates)
                    .unwrap();
                assert_eq!(&got, r, "version {version}, record {i}");
                assert!(block.shared(i).is_none());
            }
            // An unknown version is refused.
            payload[8] = 9;
            assert!(decode_block(&payload, &templates).is_err());
        }
    }

    #[test]
    fn a_damaged_block_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let mut templates = Templates::open(dir.path()).unwrap();
        let (recs, rows) = records(&mut templates);
        let payload = encode_block(3, &refs(&rows[..10]), 3).unwrap();
        for cut in 0..payload.len() {
            assert!(
                decode_block(&payload[..cut], &templates).is_err(),
                "cut at {cut}"
            );
        }
        let shared = shared_of(&recs[0]);
        for i in 0..payload.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut p = payload.clone();
                p[i] ^= flip;
                // Either refused or decoded into something; never a panic.
                if let Ok(b) = decode_block(&p, &templates) {
                    for k in 0..b.len() {
                        let _ = b.record(k, 0, Some(&shared), &templates);
                    }
                }
            }
        }
    }

    #[test]
    fn the_row_file_appends_reopens_and_cuts_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let mut templates = Templates::open(dir.path()).unwrap();
        let (recs, rows) = records(&mut templates);
        let check = |f: &RowFile, block: u64, from: usize| {
            let b = f.block(block, &templates).unwrap();
            for i in 0..b.len() {
                let r = &recs[from + i];
                let got = b
                    .record(i, r.time_ns, Some(&shared_of(r)), &templates)
                    .unwrap();
                assert_eq!(&got, r);
            }
        };
        let payloads: Vec<Vec<u8>> = (0..3)
            .map(|b| {
                encode_block(b, &refs(&rows[b as usize * 10..b as usize * 10 + 10]), 3).unwrap()
            })
            .collect();
        {
            let mut f = RowFile::open(dir.path(), &templates, 1, BlockCache::new(1 << 20)).unwrap();
            assert!(f.block(0, &templates).is_err());
            f.append(&payloads[..2]).unwrap();
            f.append(&payloads[2..]).unwrap();
            f.append(&[]).unwrap();
            for b in 0..3 {
                check(&f, b, b as usize * 10);
            }
        }
        let path = dir.path().join(FILE);
        let f = RowFile::open(dir.path(), &templates, 1, BlockCache::new(1 << 20)).unwrap();
        for b in 0..3 {
            check(&f, b, b as usize * 10);
        }
        assert!(f.block(3, &templates).is_err());
        let whole = f.bytes();
        drop(f);
        // A torn last entry: cut, the blocks before it stay.
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(whole - 5).unwrap();
        drop(file);
        let mut f = RowFile::open(dir.path(), &templates, 1, BlockCache::new(1 << 20)).unwrap();
        assert!(f.block(2, &templates).is_err());
        check(&f, 1, 10);
        assert!(std::fs::metadata(&path).unwrap().len() < whole);
        // Appends go on after the cut.
        f.append(&payloads[2..]).unwrap();
        check(&f, 2, 20);
        drop(f);
        let f = RowFile::open(dir.path(), &templates, 1, BlockCache::new(1 << 20)).unwrap();
        check(&f, 2, 20);
        let whole = f.bytes();
        drop(f);
        // A last entry whose checksum holds but whose payload is not a row
        // block (a zeroed tail): cut too.
        let mut garbage = Vec::new();
        frame(&[0u8; 12], &mut garbage);
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        std::io::Write::write_all(&mut file, &garbage).unwrap();
        drop(file);
        let f = RowFile::open(dir.path(), &templates, 1, BlockCache::new(1 << 20)).unwrap();
        assert_eq!(f.bytes(), whole);
        check(&f, 2, 20);
    }
}
