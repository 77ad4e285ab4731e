//! The RocksDB trace store.
//!
//! Column families:
//! - `spans`: span bodies ([`codec::encode_span`]: what the span's row
//!   does not hold) keyed `trace id | row start | row first span id |
//!   position in the row` ([`codec::body_key`]): a trace is one prefix
//!   scan plus one read per row for the heads, and the bodies of one row
//!   share all but the last bytes of their keys.
//! - `summaries`: `trace id` → [`TraceSummary`], updated as spans arrive.
//! - `rows`: search rows, one per trace and write batch (split so that a
//!   row's spans start less than [`codec::ROW_SPREAD_NS`] after its first),
//!   keyed `first start | trace id | first span id`. A row holds each
//!   span's id, start, duration, parent, interned name and resource, kind
//!   and status, and one Bloom filter over the `key=value` span attributes
//!   of all its spans ([`codec::encode_row`]). Searches scan rows newest first and
//!   decide every filter from the row except span attributes the Bloom
//!   filter may hold, for which the span body is read; SQL span heads
//!   come from rows alone.
//! - `stats`: `R service minute operation` RED aggregates and
//!   `D minute caller callee` dependency counts, summed by a merge operator.
//! - `meta`: the format version, the durable WAL sequence number, the
//!   span count, interned resources (`r`), scopes (`c`) and span names
//!   (`n`), services (`s`) and operations (`o`) with the last time they
//!   were seen.
//!
//! Format: version 2 (search rows and span bodies instead of whole span
//! records and one index entry per span, service, operation and
//! attribute). A directory written by another version is refused at open,
//! not read.
//!
//! Durability: RocksDB's own WAL is off (tern's WAL covers the gap). Every
//! batch carries its sequence number in the same `WriteBatch`, and all
//! column families flush atomically, so what reaches SST files is always a
//! prefix of the batches together with the sequence number that covers it.
//!
//! Retention: one compaction filter per column family drops records older
//! than the retention (span start, summary end, row start plus the row
//! spread, stats minute, service last seen), and periodic compaction makes
//! RocksDB revisit files
//! at least daily, so expiry never needs a scan. Queries clamp their time
//! ranges to the retention window so expired data not yet compacted away
//! is not reported.

use crate::model::time::now_ns;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use rocksdb::compaction_filter::Decision;
use rocksdb::{
    BlockBasedOptions, BottommostLevelCompaction, ColumnFamily, ColumnFamilyDescriptor,
    CompactOptions, DBCompressionType, Direction, FlushOptions, IteratorMode, MergeOperands,
    Options, ReadOptions, SliceTransform, WriteBatch, WriteOptions, DB,
};

use super::codec::{self, RowId, RowSpan};
use super::plan::{plan_trace, DepDelta, RedDelta, StoredSpan};
use super::types::*;
use crate::model::{Resource, Scope, Span, SpanKind, TraceId};
use crate::storage::{ScanStats, StorageError, StoreLifecycle, StoreStats, TraceStore};

const CF_SPANS: &str = "spans";
const CF_SUMMARIES: &str = "summaries";
const CF_ROWS: &str = "rows";
const CF_STATS: &str = "stats";
const CF_META: &str = "meta";
const CFS: [&str; 5] = [CF_SPANS, CF_SUMMARIES, CF_ROWS, CF_STATS, CF_META];

const META_SEQ: &[u8] = b"#seq";
const META_COUNT: &[u8] = b"#count";
const META_FORMAT: &[u8] = b"#format";
/// On-disk format version; a store written in another one is not opened.
const FORMAT: u64 = 2;
const TAG_RESOURCE: u8 = b'r';
const TAG_SCOPE: u8 = b'c';
const TAG_SERVICE: u8 = b's';
const TAG_OPERATION: u8 = b'o';
const TAG_NAME: u8 = b'n';

/// Most spans of one trace read back to plan a late batch of that trace.
const MAX_STORED_SCAN: usize = 200_000;

/// How the trace store is opened.
#[derive(Debug, Clone)]
pub struct TraceStoreOptions {
    pub path: PathBuf,
    /// Data older than this is deleted.
    pub retention: Duration,
    /// Memtable size per column family.
    pub write_buffer_bytes: usize,
    /// Shared block cache.
    pub block_cache_bytes: usize,
}

impl TraceStoreOptions {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        TraceStoreOptions {
            path: path.into(),
            retention: Duration::from_secs(7 * 86_400),
            write_buffer_bytes: 64 << 20,
            block_cache_bytes: 256 << 20,
        }
    }
}

fn backend(e: impl std::fmt::Display) -> StorageError {
    StorageError::Backend(e.to_string())
}

/// Interned resources and scopes: small, loaded at open, shared by spans.
#[derive(Default)]
struct Interner {
    resource_ids: HashMap<Vec<u8>, u64>,
    resources: HashMap<u64, (Arc<Resource>, String)>,
    scope_ids: HashMap<Vec<u8>, u64>,
    scopes: HashMap<u64, Arc<Scope>>,
    /// Span names (operations) by id and back.
    names: HashMap<u64, Arc<str>>,
    name_ids: HashMap<Arc<str>, u64>,
}

impl Interner {
    fn add_resource(&mut self, id: u64, bytes: Vec<u8>, r: Resource) {
        let svc = r.service_name().to_string();
        self.resources.insert(id, (Arc::new(r), svc));
        self.resource_ids.insert(bytes, id);
    }

    fn add_name(&mut self, id: u64, name: &str) {
        let name: Arc<str> = Arc::from(name);
        self.names.insert(id, name.clone());
        self.name_ids.insert(name, id);
    }

    fn name(&self, id: u64) -> &str {
        self.names.get(&id).map_or("", |n| n)
    }

    /// Ids of the resources whose attributes satisfy `f`.
    fn resources_where(&self, f: impl Fn(&Resource, &str) -> bool) -> HashSet<u64> {
        self.resources
            .iter()
            .filter(|(_, (r, svc))| f(r, svc))
            .map(|(id, _)| *id)
            .collect()
    }

    fn service(&self, id: u64) -> &str {
        self.resources
            .get(&id)
            .map_or(crate::model::UNKNOWN_SERVICE, |(_, s)| s.as_str())
    }
}

/// State of the single writer.
#[derive(Default)]
struct WriterState {
    /// Last minute a service / operation key was written, by interned
    /// resource (several resources may share a service) and name.
    services: HashMap<u64, u64>,
    operations: HashMap<(u64, u64, SpanKind), u64>,
}

pub struct RocksTraceStore {
    db: DB,
    retention_ns: u64,
    interner: RwLock<Interner>,
    writer: Mutex<WriterState>,
    written: AtomicU64,
    durable: AtomicU64,
    records: AtomicU64,
}

/// Traces by their latest matching start, latest first.
fn ranked(best: HashMap<TraceId, u64>) -> Vec<(u64, TraceId)> {
    let mut v: Vec<(u64, TraceId)> = best.into_iter().map(|(t, s)| (s, t)).collect();
    v.sort_unstable_by(|a, b| b.cmp(a));
    v
}

/// The oldest timestamp kept under `retention_ns` right now.
fn cutoff(retention_ns: u64) -> u64 {
    now_ns().saturating_sub(retention_ns)
}

fn cf_options(
    name: &str,
    retention_ns: u64,
    cache: &rocksdb::Cache,
    write_buffer: usize,
) -> Options {
    let mut o = Options::default();
    o.set_write_buffer_size(write_buffer);
    o.set_compression_type(DBCompressionType::Lz4);
    o.set_bottommost_compression_type(DBCompressionType::Zstd);
    // Level 3, a 64 KiB dictionary trained on up to 4 MiB of samples.
    o.set_bottommost_compression_options(-14, 3, 0, 64 << 10, true);
    o.set_bottommost_zstd_max_train_bytes(4 << 20, true);
    o.set_periodic_compaction_seconds(86_400);
    let mut t = BlockBasedOptions::default();
    t.set_block_cache(cache);
    // Larger blocks for what is read in runs (a trace's bodies, rows in
    // time order) give block compression more context.
    t.set_block_size(match name {
        CF_SPANS => 64 << 10,
        CF_ROWS => 32 << 10,
        _ => 16 << 10,
    });
    if name == CF_SPANS || name == CF_SUMMARIES {
        t.set_bloom_filter(10.0, false);
    }
    if name == CF_SPANS {
        // Trace ids only (the prefix extractor's): traces are read by
        // prefix, and a filter entry per body would cost more than it saves.
        t.set_whole_key_filtering(false);
    }
    o.set_block_based_table_factory(&t);
    let r = retention_ns;
    match name {
        CF_SPANS => {
            o.set_prefix_extractor(SliceTransform::create_fixed_prefix(16));
            o.set_compaction_filter("tern-span-retention", move |_: u32, k: &[u8], _: &[u8]| {
                // A body expires with its row.
                keep_if(
                    codec::parse_body_key(k)
                        .map(|(row, _)| row.start_ns.saturating_add(codec::ROW_SPREAD_NS)),
                    r,
                )
            });
        }
        CF_SUMMARIES => {
            o.set_compaction_filter(
                "tern-summary-retention",
                move |_: u32, _: &[u8], v: &[u8]| keep_if(codec::summary_end(v), r),
            );
        }
        CF_ROWS => {
            // A row holds spans starting up to ROW_SPREAD_NS after its key.
            o.set_compaction_filter("tern-row-retention", move |_: u32, k: &[u8], _: &[u8]| {
                keep_if(
                    codec::parse_row_key(k)
                        .map(|(_, row)| row.start_ns.saturating_add(codec::ROW_SPREAD_NS)),
                    r,
                )
            });
        }
        CF_STATS => {
            o.set_merge_operator_associative("tern-agg-sum", merge_aggs);
            o.set_compaction_filter("tern-stats-retention", move |_: u32, k: &[u8], _: &[u8]| {
                keep_if(
                    codec::stats_key_minute(k).map(|m| m.saturating_add(1) * MINUTE_NS),
                    r,
                )
            });
        }
        _ => {
            o.set_compaction_filter(
                "tern-meta-retention",
                move |_: u32, k: &[u8], v: &[u8]| match k.first() {
                    Some(&TAG_SERVICE) | Some(&TAG_OPERATION) => keep_if(codec::span_start(v), r),
                    _ => Decision::Keep,
                },
            );
        }
    }
    o
}

fn keep_if(time_ns: Option<u64>, retention_ns: u64) -> Decision {
    match time_ns {
        Some(t) if t < cutoff(retention_ns) => Decision::Remove,
        _ => Decision::Keep,
    }
}

fn merge_aggs(_key: &[u8], existing: Option<&[u8]>, ops: &MergeOperands) -> Option<Vec<u8>> {
    let mut acc = existing
        .and_then(|b| codec::decode_agg(b).ok())
        .unwrap_or_default();
    for op in ops.iter() {
        if let Ok(a) = codec::decode_agg(op) {
            acc.merge(&a);
        }
    }
    Some(codec::encode_agg(&acc))
}

fn meta_key(tag: u8, parts: &[&[u8]]) -> Vec<u8> {
    let mut k = vec![tag];
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            k.push(0);
        }
        k.extend_from_slice(p);
    }
    k
}

/// The key just after every key starting with `p`.
fn prefix_end(p: &[u8]) -> Vec<u8> {
    let mut e = p.to_vec();
    while let Some(last) = e.pop() {
        if last < 0xff {
            e.push(last + 1);
            return e;
        }
    }
    vec![0xff; p.len() + 1]
}

impl RocksTraceStore {
    pub fn open(opts: &TraceStoreOptions) -> Result<Self, StorageError> {
        std::fs::create_dir_all(&opts.path)?;
        let retention_ns = opts.retention.as_nanos().min(u128::from(u64::MAX)) as u64;
        let cache = rocksdb::Cache::new_lru_cache(opts.block_cache_bytes);
        let mut db_opts = Options::default();
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        db_opts.set_atomic_flush(true);
        db_opts.set_max_background_jobs(2);
        db_opts.set_keep_log_file_num(3);
        let cfs = CFS.iter().map(|name| {
            ColumnFamilyDescriptor::new(
                *name,
                cf_options(name, retention_ns, &cache, opts.write_buffer_bytes),
            )
        });
        let db = DB::open_cf_descriptors(&db_opts, &opts.path, cfs).map_err(backend)?;
        let store = RocksTraceStore {
            db,
            retention_ns,
            interner: RwLock::new(Interner::default()),
            writer: Mutex::new(WriterState::default()),
            written: AtomicU64::new(0),
            durable: AtomicU64::new(0),
            records: AtomicU64::new(0),
        };
        store.load_meta()?;
        Ok(store)
    }

    fn cf(&self, name: &str) -> Result<&ColumnFamily, StorageError> {
        self.db
            .cf_handle(name)
            .ok_or_else(|| StorageError::Backend(format!("column family {name} is missing")))
    }

    fn load_meta(&self) -> Result<(), StorageError> {
        let meta = self.cf(CF_META)?;
        let read_u64 = |k: &[u8]| -> Result<u64, StorageError> {
            Ok(self
                .db
                .get_cf(meta, k)
                .map_err(backend)?
                .and_then(|v| v.get(..8).and_then(|s| s.try_into().ok()))
                .map_or(0, u64::from_le_bytes))
        };
        let format = read_u64(META_FORMAT)?;
        let empty = self
            .db
            .iterator_cf(self.cf(CF_SPANS)?, IteratorMode::Start)
            .next()
            .is_none();
        if format != FORMAT && !(format == 0 && empty) {
            return Err(StorageError::Backend(format!(
                "trace store format {format} is not {FORMAT}: move the old trace directory away"
            )));
        }
        if format == 0 {
            self.db
                .put_cf(meta, META_FORMAT, FORMAT.to_le_bytes())
                .map_err(backend)?;
        }
        let seq = read_u64(META_SEQ)?;
        self.durable.store(seq, Ordering::SeqCst);
        self.written.store(seq, Ordering::SeqCst);
        self.records.store(read_u64(META_COUNT)?, Ordering::SeqCst);
        let mut int = self.interner.write();
        for item in self.db.prefix_iterator_cf(meta, [TAG_NAME]) {
            let (k, v) = item.map_err(backend)?;
            if k.first() != Some(&TAG_NAME) {
                break;
            }
            let id = k
                .get(1..9)
                .and_then(|s| s.try_into().ok())
                .map(u64::from_be_bytes)
                .ok_or_else(|| backend("bad interned name key"))?;
            int.add_name(id, std::str::from_utf8(&v).map_err(backend)?);
        }
        for tag in [TAG_RESOURCE, TAG_SCOPE] {
            for item in self.db.prefix_iterator_cf(meta, [tag]) {
                let (k, v) = item.map_err(backend)?;
                if k.first() != Some(&tag) {
                    break;
                }
                let id = k
                    .get(1..9)
                    .and_then(|s| s.try_into().ok())
                    .map(u64::from_be_bytes)
                    .ok_or_else(|| backend("bad interned key"))?;
                if tag == TAG_RESOURCE {
                    let r = codec::decode_resource(&v).map_err(backend)?;
                    int.add_resource(id, v.to_vec(), r);
                } else {
                    let s = codec::decode_scope(&v).map_err(backend)?;
                    int.scopes.insert(id, Arc::new(s));
                    int.scope_ids.insert(v.to_vec(), id);
                }
            }
        }
        Ok(())
    }

    fn cutoff(&self) -> u64 {
        cutoff(self.retention_ns)
    }

    /// Compacts every column family to the bottom level, applying the
    /// retention filter to everything (benchmarks and tests; normal
    /// operation relies on background and periodic compaction).
    pub fn compact_all(&self) -> Result<(), StorageError> {
        let mut o = CompactOptions::default();
        o.set_bottommost_level_compaction(BottommostLevelCompaction::Force);
        for name in CFS {
            self.db
                .compact_range_cf_opt(self.cf(name)?, None::<&[u8]>, None::<&[u8]>, &o);
        }
        Ok(())
    }

    /// Bytes in SST files per column family (benchmarks and diagnostics).
    pub fn column_family_sizes(&self) -> Vec<(&'static str, u64)> {
        CFS.iter()
            .map(|name| {
                let bytes = self
                    .cf(name)
                    .ok()
                    .and_then(|cf| {
                        self.db
                            .property_int_value_cf(cf, "rocksdb.total-sst-files-size")
                            .ok()
                            .flatten()
                    })
                    .unwrap_or(0);
                (*name, bytes)
            })
            .collect()
    }

    /// Interns resource and scope of `span`, adding new ones to `batch`.
    fn intern(&self, span: &Span, batch: &mut WriteBatch, meta: &ColumnFamily) -> (u64, u64) {
        let rb = codec::encode_resource(&span.resource);
        let sb = codec::encode_scope(&span.scope);
        {
            let int = self.interner.read();
            if let (Some(r), Some(s)) = (int.resource_ids.get(&rb), int.scope_ids.get(&sb)) {
                return (*r, *s);
            }
        }
        let mut int = self.interner.write();
        let rid = match int.resource_ids.get(&rb) {
            Some(id) => *id,
            None => {
                let id = int.resources.len() as u64 + 1;
                batch.put_cf(meta, meta_key(TAG_RESOURCE, &[&id.to_be_bytes()]), &rb);
                int.add_resource(id, rb, (*span.resource).clone());
                id
            }
        };
        let sid = match int.scope_ids.get(&sb) {
            Some(id) => *id,
            None => {
                let id = int.scopes.len() as u64 + 1;
                batch.put_cf(meta, meta_key(TAG_SCOPE, &[&id.to_be_bytes()]), &sb);
                int.scopes.insert(id, span.scope.clone());
                int.scope_ids.insert(sb, id);
                id
            }
        };
        (rid, sid)
    }

    /// The spans of one trace as (row head, body) pairs, at most `max`:
    /// body keys name their row, read once per row. Without `bodies` the
    /// bodies are left empty.
    fn trace_parts(
        &self,
        trace: &TraceId,
        max: usize,
        bodies: bool,
    ) -> Result<Vec<(RowSpan, Vec<u8>)>, StorageError> {
        let spans = self.cf(CF_SPANS)?;
        let rows_cf = self.cf(CF_ROWS)?;
        let mut rows: HashMap<RowId, Vec<RowSpan>> = HashMap::new();
        let mut out = Vec::new();
        for item in self.trace_iter(spans, trace) {
            let (k, v) = item.map_err(backend)?;
            let Some((row, pos)) = codec::parse_body_key(&k) else {
                continue;
            };
            let heads = match rows.entry(row) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    let key = codec::row_key(row.start_ns, trace, &row.first);
                    // A row that retention already removed leaves its
                    // bodies unreadable until they go too.
                    let heads = match self.db.get_pinned_cf(rows_cf, key).map_err(backend)? {
                        Some(b) => codec::decode_row(row.start_ns, &b).map_err(backend)?.1,
                        None => Vec::new(),
                    };
                    e.insert(heads)
                }
            };
            if let Some(h) = heads.get(pos as usize) {
                out.push((*h, if bodies { v.to_vec() } else { Vec::new() }));
            }
            if out.len() >= max {
                break;
            }
        }
        Ok(out)
    }

    /// Heads of the stored spans of one trace.
    fn stored_spans(&self, trace: &TraceId) -> Result<Vec<StoredSpan>, StorageError> {
        let parts = self.trace_parts(trace, MAX_STORED_SCAN, false)?;
        let int = self.interner.read();
        Ok(parts
            .iter()
            .map(|(h, _)| StoredSpan {
                span_id: h.span_id,
                parent: h.parent,
                service: int.service(h.resource_id).to_string(),
                start_ns: h.start_ns,
                error: h.is_error(),
            })
            .collect())
    }

    fn trace_iter<'a>(
        &'a self,
        spans: &'a ColumnFamily,
        trace: &TraceId,
    ) -> rocksdb::DBIteratorWithThreadMode<'a, DB> {
        let mut ro = ReadOptions::default();
        ro.set_iterate_lower_bound(trace.0.to_vec());
        ro.set_iterate_upper_bound(prefix_end(&trace.0));
        ro.set_prefix_same_as_start(true);
        self.db
            .iterator_cf_opt(spans, ro, IteratorMode::From(&trace.0, Direction::Forward))
    }

    fn decode(&self, trace: TraceId, head: &RowSpan, body: &[u8]) -> Result<Span, StorageError> {
        let int = self.interner.read();
        codec::decode_span(
            trace,
            head,
            body,
            |id| int.resources.get(&id).map(|(r, _)| r.clone()),
            |id| int.scopes.get(&id).cloned(),
            |id| int.names.get(&id).map(|n| n.to_string()),
        )
        .map_err(backend)
    }

    /// The span at `pos` in row `row` of `trace`, whose head is `head`.
    fn get_span(
        &self,
        trace: &TraceId,
        row: &RowId,
        pos: usize,
        head: &RowSpan,
    ) -> Result<Option<Span>, StorageError> {
        let spans = self.cf(CF_SPANS)?;
        match self
            .db
            .get_pinned_cf(spans, codec::body_key(trace, row, pos as u32))
            .map_err(backend)?
        {
            Some(v) => self.decode(*trace, head, &v).map(Some),
            None => Ok(None),
        }
    }

    /// The id of span name `name`, interning it in `batch` when new.
    fn name_id(&self, name: &str, batch: &mut WriteBatch, meta: &ColumnFamily) -> u64 {
        if let Some(id) = self.interner.read().name_ids.get(name) {
            return *id;
        }
        let mut int = self.interner.write();
        if let Some(id) = int.name_ids.get(name) {
            return *id;
        }
        let id = int.names.len() as u64 + 1;
        batch.put_cf(meta, meta_key(TAG_NAME, &[&id.to_be_bytes()]), name);
        int.add_name(id, name);
        id
    }

    /// Puts the search rows and span bodies of the new spans of one
    /// trace (each with its scope id): spans in start order, a new row
    /// whenever a span starts [`codec::ROW_SPREAD_NS`] or more after the
    /// row's first span.
    fn put_rows(
        &self,
        trace: &TraceId,
        mut spans: Vec<(RowSpan, &Span, u64)>,
        batch: &mut WriteBatch,
        rows: &ColumnFamily,
        bodies: &ColumnFamily,
    ) {
        spans.sort_by_key(|(r, _, _)| (r.start_ns, r.span_id));
        let mut put = |chunk: &[(RowSpan, &Span, u64)]| {
            let first = &chunk[0].0;
            let row = RowId {
                start_ns: first.start_ns,
                first: first.span_id,
            };
            let mut hashes = Vec::new();
            for (pos, (_, span, scope_id)) in chunk.iter().enumerate() {
                batch.put_cf(
                    bodies,
                    codec::body_key(trace, &row, pos as u32),
                    codec::encode_span(span, *scope_id),
                );
                hashes.extend(
                    span.attributes
                        .iter()
                        .filter_map(|(k, v)| codec::attr_value_hash(k, v)),
                );
            }
            let heads: Vec<RowSpan> = chunk.iter().map(|(r, _, _)| *r).collect();
            batch.put_cf(
                rows,
                codec::row_key(first.start_ns, trace, &first.span_id),
                codec::encode_row(first.start_ns, &heads, &codec::bloom(&hashes)),
            );
        };
        let mut from = 0;
        for i in 1..spans.len() {
            if spans[i].0.start_ns - spans[from].0.start_ns >= codec::ROW_SPREAD_NS
                || i - from >= codec::MAX_ROW_SPANS
            {
                put(&spans[from..i]);
                from = i;
            }
        }
        if from < spans.len() {
            put(&spans[from..]);
        }
    }

    fn write_batch(&self, seq: u64, spans: Vec<Span>) -> Result<(), StorageError> {
        let mut w = self.writer.lock();
        let (spans_cf, sums_cf, rows_cf, stats_cf, meta_cf) = (
            self.cf(CF_SPANS)?,
            self.cf(CF_SUMMARIES)?,
            self.cf(CF_ROWS)?,
            self.cf(CF_STATS)?,
            self.cf(CF_META)?,
        );
        // Group by trace, keeping arrival order.
        let mut order: Vec<TraceId> = Vec::new();
        let mut groups: HashMap<TraceId, Vec<&Span>> = HashMap::new();
        for s in &spans {
            groups
                .entry(s.trace_id)
                .or_insert_with(|| {
                    order.push(s.trace_id);
                    Vec::new()
                })
                .push(s);
        }
        let existing = self.db.multi_get_cf(order.iter().map(|t| (sums_cf, t.0)));
        let mut batch = WriteBatch::default();
        let (mut red, mut deps) = (RedDelta::new(), DepDelta::new());
        let mut added = 0u64;
        let mut intern_cache: HashMap<(*const Resource, *const Scope), (u64, u64)> = HashMap::new();
        for (tid, prev) in order.iter().zip(existing) {
            let prev = match prev.map_err(backend)? {
                Some(b) => Some(codec::decode_summary(*tid, &b).map_err(backend)?),
                None => None,
            };
            let stored = if prev.is_some() {
                self.stored_spans(tid)?
            } else {
                Vec::new()
            };
            let group = &groups[tid];
            let (accepted, summary) = plan_trace(*tid, prev, &stored, group, &mut red, &mut deps);
            if accepted.is_empty() {
                continue;
            }
            let mut heads = Vec::with_capacity(accepted.len());
            for i in accepted {
                let span = group[i];
                let key = (Arc::as_ptr(&span.resource), Arc::as_ptr(&span.scope));
                let (rid, sid) = match intern_cache.get(&key) {
                    Some(ids) => *ids,
                    None => {
                        let ids = self.intern(span, &mut batch, meta_cf);
                        intern_cache.insert(key, ids);
                        ids
                    }
                };
                let name_id = self.name_id(&span.name, &mut batch, meta_cf);
                let head = RowSpan::of(span, name_id, rid);
                self.note_names(&mut w, span, &head, &mut batch, meta_cf);
                heads.push((head, span, sid));
                added += 1;
            }
            self.put_rows(tid, heads, &mut batch, rows_cf, spans_cf);
            batch.put_cf(sums_cf, tid.0, codec::encode_summary(&summary));
        }
        for ((svc, minute, op), agg) in &red {
            let mut k = vec![b'R'];
            k.extend_from_slice(&codec::red_key(svc, *minute, op.as_deref()));
            batch.merge_cf(stats_cf, k, codec::encode_agg(agg));
        }
        for ((minute, caller, callee), (calls, errors)) in &deps {
            let mut k = vec![b'D'];
            k.extend_from_slice(&codec::dep_key(*minute, caller, callee));
            let agg = Agg {
                count: *calls,
                errors: *errors,
                ..Default::default()
            };
            batch.merge_cf(stats_cf, k, codec::encode_agg(&agg));
        }
        let count = self.records.load(Ordering::SeqCst) + added;
        batch.put_cf(meta_cf, META_SEQ, seq.to_le_bytes());
        batch.put_cf(meta_cf, META_COUNT, count.to_le_bytes());
        let mut wo = WriteOptions::default();
        wo.disable_wal(true);
        self.db.write_opt(batch, &wo).map_err(backend)?;
        self.records.store(count, Ordering::SeqCst);
        self.written.store(seq, Ordering::SeqCst);
        Ok(())
    }

    /// Records the service and operation of a span (at most once a minute each).
    fn note_names(
        &self,
        w: &mut WriterState,
        span: &Span,
        head: &RowSpan,
        batch: &mut WriteBatch,
        meta: &ColumnFamily,
    ) {
        let svc = span.service_name();
        let minute = minute_of(span.start_time_ns);
        let seen = span.start_time_ns.to_le_bytes();
        if w.services
            .get(&head.resource_id)
            .is_none_or(|m| *m < minute)
        {
            w.services.insert(head.resource_id, minute);
            batch.put_cf(meta, meta_key(TAG_SERVICE, &[svc.as_bytes()]), seen);
        }
        let op_key = (head.resource_id, head.name_id, span.kind);
        if w.operations.get(&op_key).is_none_or(|m| *m < minute) {
            w.operations.insert(op_key, minute);
            batch.put_cf(
                meta,
                meta_key(
                    TAG_OPERATION,
                    &[
                        svc.as_bytes(),
                        span.name.as_bytes(),
                        &[span.kind.as_i32() as u8][..],
                    ],
                ),
                seen,
            );
        }
    }

    /// Row scan for a search: rows newest first, each span checked against
    /// the filters the row decides (time, duration, kind, error, service,
    /// operation, resource attributes, attributes absent from the row's
    /// Bloom filter); a span whose attributes the filter may hold is read
    /// and checked in full. Returns each matching trace with the start of
    /// its latest matching span, latest first.
    fn scan_rows(
        &self,
        q: &TraceSearch,
        start: u64,
    ) -> Result<(Vec<(u64, TraceId)>, bool), StorageError> {
        let (services, name_id, attrs) = {
            let int = self.interner.read();
            let services = q
                .service
                .as_deref()
                .map(|svc| int.resources_where(|_, s| s == svc));
            let name_id = match q.operation.as_deref() {
                Some(op) => match int.name_ids.get(op) {
                    Some(id) => Some(*id),
                    None => return Ok((vec![], true)),
                },
                None => None,
            };
            let attrs: Vec<(u64, HashSet<u64>)> = q
                .attributes
                .iter()
                .map(|(k, v)| {
                    let on_resource = int.resources_where(|r, _| {
                        r.attributes
                            .iter()
                            .any(|(rk, rv)| rk == k && attr_text(rv).as_deref() == Some(v))
                    });
                    (codec::attr_hash(k, v), on_resource)
                })
                .collect();
            (services, name_id, attrs)
        };
        if services.as_ref().is_some_and(HashSet::is_empty) {
            return Ok((vec![], true));
        }
        let rows = self.cf(CF_ROWS)?;
        let mut ro = ReadOptions::default();
        let lo = start.saturating_sub(codec::ROW_SPREAD_NS - 1);
        ro.set_iterate_lower_bound(lo.to_be_bytes().to_vec());
        ro.set_iterate_upper_bound(q.end_ns.to_be_bytes().to_vec());
        // Latest matching start per trace, and the `limit` best of them.
        let mut best: HashMap<TraceId, u64> = HashMap::new();
        let mut top: std::collections::BTreeSet<(u64, TraceId)> = Default::default();
        // A raw iterator lends keys and values without copying them.
        let mut it = self.db.raw_iterator_cf_opt(rows, ro);
        for n in 0usize.. {
            if n == 0 {
                it.seek_to_last();
            } else {
                it.prev();
            }
            if n % 64 == 63 && q.deadline_passed() {
                return Ok((ranked(best), false));
            }
            let (Some(k), Some(v)) = (it.key(), it.value()) else {
                break;
            };
            let Some((trace, row)) = codec::parse_row_key(k) else {
                continue;
            };
            let row_start = row.start_ns;
            // Rows further on hold only spans older than the limit-th best.
            if top.len() >= q.limit
                && top
                    .first()
                    .is_some_and(|(t, _)| row_start.saturating_add(codec::ROW_SPREAD_NS) <= *t)
            {
                break;
            }
            // An attribute on no resource and not in the Bloom filter rules
            // the whole row out before its spans are decoded.
            let bloom = codec::row_bloom(v).map_err(backend)?;
            if attrs.iter().any(|(h, on_resource)| {
                on_resource.is_empty() && !codec::bloom_may_contain(bloom, *h)
            }) {
                continue;
            }
            let (bloom, spans) = codec::decode_row(row_start, v).map_err(backend)?;
            let known = best.get(&trace).copied();
            for (pos, s) in spans.iter().enumerate().rev() {
                if known.is_some_and(|t| t >= s.start_ns) {
                    break;
                }
                if s.start_ns < start
                    || s.start_ns >= q.end_ns
                    || !q.matches_head(s.duration_ns, s.kind, s.is_error())
                    || services
                        .as_ref()
                        .is_some_and(|r| !r.contains(&s.resource_id))
                    || name_id.is_some_and(|id| id != s.name_id)
                {
                    continue;
                }
                let mut verify = false;
                let mut possible = true;
                for (hash, on_resource) in &attrs {
                    if on_resource.contains(&s.resource_id) {
                        continue;
                    }
                    if codec::bloom_may_contain(bloom, *hash) {
                        verify = true;
                    } else {
                        possible = false;
                        break;
                    }
                }
                if !possible {
                    continue;
                }
                if verify {
                    match self.get_span(&trace, &row, pos, s)? {
                        Some(span) if q.matches(&span) => {}
                        _ => continue,
                    }
                }
                if let Some(old) = best.insert(trace, s.start_ns) {
                    top.remove(&(old, trace));
                }
                top.insert((s.start_ns, trace));
                if top.len() > q.limit {
                    top.pop_first();
                }
                break;
            }
        }
        it.status().map_err(backend)?;
        Ok((ranked(best), true))
    }

    fn meta_scan(
        &self,
        p: &[u8],
        mut f: impl FnMut(&[u8], u64) -> bool,
    ) -> Result<(), StorageError> {
        let meta = self.cf(CF_META)?;
        let mut ro = ReadOptions::default();
        ro.set_iterate_lower_bound(p.to_vec());
        ro.set_iterate_upper_bound(prefix_end(p));
        let cut = self.cutoff();
        for item in self.db.iterator_cf_opt(meta, ro, IteratorMode::Start) {
            let (k, v) = item.map_err(backend)?;
            let seen = codec::span_start(&v).unwrap_or(0);
            if seen >= cut && !f(&k[p.len()..], seen) {
                break;
            }
        }
        Ok(())
    }

    fn stats_scan(
        &self,
        lo: Vec<u8>,
        hi: Vec<u8>,
        mut f: impl FnMut(&[u8], Agg) -> bool,
    ) -> Result<(), StorageError> {
        let stats = self.cf(CF_STATS)?;
        let mut ro = ReadOptions::default();
        ro.set_iterate_lower_bound(lo);
        ro.set_iterate_upper_bound(hi);
        for item in self.db.iterator_cf_opt(stats, ro, IteratorMode::Start) {
            let (k, v) = item.map_err(backend)?;
            let agg = codec::decode_agg(&v).map_err(backend)?;
            if !f(&k, agg) {
                break;
            }
        }
        Ok(())
    }

    /// Minute range `[first, last]` covered by `[start, end)`, clamped to retention.
    fn minutes(&self, start: u64, end: u64) -> Option<(u64, u64)> {
        let start = start.max(self.cutoff());
        (end > start).then(|| (minute_of(start), minute_of(end - 1)))
    }

    #[cfg(test)]
    fn rows_of(&self, trace: &TraceId) -> usize {
        let rows = self.cf(CF_ROWS).unwrap();
        self.db
            .iterator_cf(rows, IteratorMode::Start)
            .filter(|i| {
                let (k, _) = i.as_ref().unwrap();
                codec::parse_row_key(k).is_some_and(|(t, _)| t == *trace)
            })
            .count()
    }
}

impl StoreLifecycle for RocksTraceStore {
    fn durable_seq(&self) -> u64 {
        self.durable.load(Ordering::SeqCst)
    }

    fn flush(&self) -> Result<(), StorageError> {
        let seq = self.written.load(Ordering::SeqCst);
        let cfs = CFS
            .iter()
            .map(|n| self.cf(n))
            .collect::<Result<Vec<_>, _>>()?;
        let mut fo = FlushOptions::default();
        fo.set_wait(true);
        self.db.flush_cfs_opt(&cfs, &fo).map_err(backend)?;
        self.durable.fetch_max(seq, Ordering::SeqCst);
        Ok(())
    }

    fn stats(&self) -> StoreStats {
        let disk_bytes = CFS
            .iter()
            .filter_map(|n| self.cf(n).ok())
            .filter_map(|cf| {
                self.db
                    .property_int_value_cf(cf, "rocksdb.total-sst-files-size")
                    .ok()
                    .flatten()
            })
            .sum();
        StoreStats {
            records: self.records.load(Ordering::SeqCst),
            disk_bytes,
        }
    }
}

impl TraceStore for RocksTraceStore {
    fn write(&self, seq: u64, spans: Vec<Span>) -> Result<(), StorageError> {
        self.write_batch(seq, spans)
    }

    fn trace(&self, id: &TraceId) -> Result<Vec<Span>, StorageError> {
        let parts = self.trace_parts(id, usize::MAX, true)?;
        let mut out = Vec::with_capacity(parts.len());
        for (h, body) in &parts {
            out.push(self.decode(*id, h, body)?);
        }
        out.sort_by_key(|s| (s.start_time_ns, s.span_id));
        Ok(out)
    }

    fn summary(&self, id: &TraceId) -> Result<Option<TraceSummary>, StorageError> {
        let sums = self.cf(CF_SUMMARIES)?;
        match self.db.get_pinned_cf(sums, id.0).map_err(backend)? {
            Some(b) => Ok(Some(codec::decode_summary(*id, &b).map_err(backend)?)),
            None => Ok(None),
        }
    }

    fn search(&self, q: &TraceSearch) -> Result<SearchOutcome, StorageError> {
        let start = q.start_ns.max(self.cutoff());
        if start >= q.end_ns || q.limit == 0 {
            return Ok(SearchOutcome {
                traces: vec![],
                complete: true,
            });
        }
        let (found, complete) = self.scan_rows(q, start)?;
        let ids: Vec<TraceId> = found.into_iter().take(q.limit).map(|(_, t)| t).collect();
        let sums = self.cf(CF_SUMMARIES)?;
        let got = self.db.multi_get_cf(ids.iter().map(|t| (sums, t.0)));
        let mut traces = Vec::with_capacity(ids.len());
        for (id, v) in ids.iter().zip(got) {
            if let Some(b) = v.map_err(backend)? {
                traces.push(codec::decode_summary(*id, &b).map_err(backend)?);
            }
        }
        Ok(SearchOutcome { traces, complete })
    }

    fn services(&self, limit: usize) -> Result<Vec<String>, StorageError> {
        let mut out = Vec::new();
        self.meta_scan(&[TAG_SERVICE], |k, _| {
            if let Ok(s) = std::str::from_utf8(k) {
                out.push(s.to_string());
            }
            out.len() < limit
        })?;
        Ok(out)
    }

    fn operations(&self, service: &str, limit: usize) -> Result<Vec<OperationInfo>, StorageError> {
        let mut out = Vec::new();
        let p = meta_key(TAG_OPERATION, &[service.as_bytes(), &b""[..]]);
        self.meta_scan(&p, |k, _| {
            // `operation 0 kind`
            if let Some((&kind, name)) = k.split_last() {
                if let Some(name) = name.strip_suffix(&[0u8]) {
                    if let Ok(n) = std::str::from_utf8(name) {
                        out.push(OperationInfo {
                            name: n.to_string(),
                            kind: SpanKind::from_i32(i32::from(kind)),
                        });
                    }
                }
            }
            out.len() < limit
        })?;
        Ok(out)
    }

    fn scan_spans(
        &self,
        q: &SpanScan,
        sink: &mut dyn FnMut(SpanChunk) -> bool,
    ) -> Result<ScanStats, StorageError> {
        let mut stats = ScanStats::default();
        let start = q.start_ns.max(self.cutoff());
        let limit = q.limit.unwrap_or(usize::MAX);
        if start >= q.end_ns || limit == 0 {
            return Ok(stats);
        }
        let q = SpanScan {
            start_ns: start,
            ..q.clone()
        };
        if let Some(t) = &q.trace_id {
            // One trace is one prefix read.
            stats.partitions = 1;
            let spans: Vec<Span> = self
                .trace(t)?
                .into_iter()
                .filter(|s| q.matches(&SpanHead::of(s)))
                .take(limit)
                .collect();
            stats.rows = spans.len() as u64;
            if !spans.is_empty() {
                sink(if q.full {
                    SpanChunk::Spans(spans)
                } else {
                    SpanChunk::Heads(spans.iter().map(SpanHead::of).collect())
                });
            }
            return Ok(stats);
        }
        // Search rows in time order: each holds everything a span head
        // needs, so heads never read a span record.
        let (services, name_id) = {
            let int = self.interner.read();
            let services = q
                .service
                .as_deref()
                .map(|svc| int.resources_where(|_, s| s == svc));
            let name_id = match q.name.as_deref() {
                Some(n) => match int.name_ids.get(n) {
                    Some(id) => Some(*id),
                    None => return Ok(stats),
                },
                None => None,
            };
            (services, name_id)
        };
        if services.as_ref().is_some_and(HashSet::is_empty) {
            return Ok(stats);
        }
        let rows = self.cf(CF_ROWS)?;
        let spans_cf = self.cf(CF_SPANS)?;
        const CHUNK: usize = 4096;
        let mut heads: Vec<(TraceId, RowId, u32, RowSpan)> = Vec::with_capacity(CHUNK);
        // Returns false once the scan should stop.
        let mut emit = |heads: &mut Vec<(TraceId, RowId, u32, RowSpan)>,
                        stats: &mut ScanStats|
         -> Result<bool, StorageError> {
            if heads.is_empty() {
                return Ok(true);
            }
            let batch = std::mem::take(heads);
            stats.rows += batch.len() as u64;
            if !q.full {
                let int = self.interner.read();
                let heads = batch
                    .iter()
                    .map(|(trace_id, _, _, s)| SpanHead {
                        trace_id: *trace_id,
                        span_id: s.span_id,
                        service: int.service(s.resource_id).to_string(),
                        name: int.name(s.name_id).to_string(),
                        start_ns: s.start_ns,
                        duration_ns: s.duration_ns,
                        kind: s.kind,
                        error: s.is_error(),
                    })
                    .collect();
                drop(int);
                return Ok(sink(SpanChunk::Heads(heads)));
            }
            let keys: Vec<[u8; codec::BODY_KEY_LEN]> = batch
                .iter()
                .map(|(t, row, pos, _)| codec::body_key(t, row, *pos))
                .collect();
            let got = self.db.multi_get_cf(keys.iter().map(|k| (spans_cf, k)));
            let mut spans = Vec::with_capacity(batch.len());
            for ((t, _, _, h), v) in batch.iter().zip(got) {
                if let Some(v) = v.map_err(backend)? {
                    spans.push(self.decode(*t, h, &v)?);
                }
            }
            Ok(sink(SpanChunk::Spans(spans)))
        };
        let mut ro = ReadOptions::default();
        let lo = start.saturating_sub(codec::ROW_SPREAD_NS - 1);
        ro.set_iterate_lower_bound(lo.to_be_bytes().to_vec());
        ro.set_iterate_upper_bound(q.end_ns.to_be_bytes().to_vec());
        stats.partitions = 1;
        'rows: for item in self.db.iterator_cf_opt(rows, ro, IteratorMode::Start) {
            let (k, v) = item.map_err(backend)?;
            let Some((trace_id, row)) = codec::parse_row_key(&k) else {
                continue;
            };
            let (_, spans) = codec::decode_row(row.start_ns, &v).map_err(backend)?;
            for (pos, s) in spans.into_iter().enumerate() {
                if s.start_ns < start
                    || s.start_ns >= q.end_ns
                    || services
                        .as_ref()
                        .is_some_and(|r| !r.contains(&s.resource_id))
                    || name_id.is_some_and(|id| id != s.name_id)
                {
                    continue;
                }
                heads.push((trace_id, row, pos as u32, s));
                let produced = stats.rows as usize + heads.len();
                // At the limit, the emit after the loop sends what is left.
                if produced >= limit || (heads.len() >= CHUNK && !emit(&mut heads, &mut stats)?) {
                    break 'rows;
                }
            }
        }
        emit(&mut heads, &mut stats)?;
        Ok(stats)
    }

    fn dependencies(
        &self,
        start_ns: u64,
        end_ns: u64,
    ) -> Result<Vec<DependencyEdge>, StorageError> {
        let Some((first, last)) = self.minutes(start_ns, end_ns) else {
            return Ok(vec![]);
        };
        let mut lo = vec![b'D'];
        lo.extend_from_slice(&(first as u32).to_be_bytes());
        let mut hi = vec![b'D'];
        hi.extend_from_slice(&((last + 1).min(u64::from(u32::MAX)) as u32).to_be_bytes());
        let mut edges: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
        self.stats_scan(lo, hi, |k, agg| {
            if let Some((_, caller, callee)) = codec::parse_dep_key(&k[1..]) {
                let e = edges.entry((caller, callee)).or_default();
                e.0 += agg.count;
                e.1 += agg.errors;
            }
            true
        })?;
        Ok(edges
            .into_iter()
            .map(|((caller, callee), (calls, errors))| DependencyEdge {
                caller,
                callee,
                calls,
                errors,
            })
            .collect())
    }

    fn red(&self, q: &RedQuery) -> Result<Vec<RedRow>, StorageError> {
        let Some((first, last)) = self.minutes(q.start_ns, q.end_ns) else {
            return Ok(vec![]);
        };
        let services = match &q.service {
            Some(s) => vec![s.clone()],
            None => self.services(10_000)?,
        };
        let mut rows = Vec::new();
        for svc in services {
            let base = {
                let mut k = vec![b'R'];
                k.extend_from_slice(svc.as_bytes());
                k.push(0);
                k
            };
            let mut lo = base.clone();
            lo.extend_from_slice(&(first as u32).to_be_bytes());
            let mut hi = base;
            hi.extend_from_slice(&((last + 1).min(u64::from(u32::MAX)) as u32).to_be_bytes());
            self.stats_scan(lo, hi, |k, agg| {
                if let Some((service, minute, operation)) = codec::parse_red_key(&k[1..]) {
                    rows.push(RedRow {
                        service,
                        operation,
                        minute,
                        agg,
                    });
                }
                rows.len() < q.max_rows
            })?;
            if rows.len() >= q.max_rows {
                break;
            }
        }
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::SpanId;
    use crate::storage::suite;

    fn open(dir: &std::path::Path) -> RocksTraceStore {
        let mut o = TraceStoreOptions::new(dir);
        o.write_buffer_bytes = 1 << 20;
        o.block_cache_bytes = 1 << 20;
        RocksTraceStore::open(&o).unwrap()
    }

    #[test]
    fn rocks_trace_store_passes_suite() {
        let dir = tempfile::tempdir().unwrap();
        suite::trace_store(&open(dir.path()));
        let dir = tempfile::tempdir().unwrap();
        suite::trace_store_queries(&open(dir.path()));
        let dir = tempfile::tempdir().unwrap();
        suite::span_scans(&open(dir.path()));
    }

    #[test]
    fn restart_keeps_spans_summaries_aggregates_and_durable_seq() {
        let dir = tempfile::tempdir().unwrap();
        let now = now_ns();
        {
            let s = open(dir.path());
            suite::write_sample(&s, now);
            s.flush().unwrap();
            assert_eq!(s.durable_seq(), 2);
        }
        let s = open(dir.path());
        assert_eq!(s.durable_seq(), 2);
        suite::check_sample(&s, now);
        // A late span of a trace stored before the restart joins it.
        let mut late = suite::span(suite::CHECKOUT, 9, now + 1_000, "late");
        late.parent_span_id = Some(SpanId([1; 8]));
        s.write(3, vec![late]).unwrap();
        let id = TraceId([suite::CHECKOUT; 16]);
        let sum = s.summary(&id).unwrap().unwrap();
        assert_eq!(sum.span_count, 4);
        assert_eq!(s.trace(&id).unwrap().len(), 4);
        let deps = s.dependencies(now - MINUTE_NS, now + MINUTE_NS).unwrap();
        assert!(deps
            .iter()
            .any(|e| e.caller == "frontend" && e.callee == "late" && e.calls == 1));
    }

    #[test]
    fn spans_far_apart_split_rows_and_rank_by_their_latest_match() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path());
        let t0 = now_ns() - 60 * 1_000_000_000;
        let sec = 1_000_000_000;
        // Trace 1: spans at 0, 0.5 s (one row), 3 s and 10 s (a row each),
        // each the child of the one before.
        let mut a: Vec<Span> = [0, sec / 2, 3 * sec, 10 * sec]
            .iter()
            .enumerate()
            .map(|(i, off)| suite::span(1, i as u8 + 1, t0 + off, "api"))
            .collect();
        for i in 1..a.len() {
            a[i].parent_span_id = Some(a[i - 1].span_id);
        }
        // Trace 2: one span at 5 s.
        let b = suite::span(2, 1, t0 + 5 * sec, "api");
        s.write(1, a.iter().cloned().chain([b]).collect()).unwrap();
        let id = TraceId([1; 16]);
        assert_eq!(s.rows_of(&id), 3);
        assert_eq!(s.trace(&id).unwrap(), a, "spans and parents across rows");
        let q = |start: u64, end: u64, limit: usize| {
            let found = s
                .search(&TraceSearch {
                    service: Some("api".into()),
                    start_ns: start,
                    end_ns: end,
                    limit,
                    ..Default::default()
                })
                .unwrap();
            assert!(found.complete);
            found
                .traces
                .iter()
                .map(|t| t.trace_id.0[0])
                .collect::<Vec<_>>()
        };
        let end = t0 + 20 * sec;
        assert_eq!(
            q(t0, end, 10),
            vec![1, 2],
            "trace 1's latest span is at 10 s"
        );
        assert_eq!(q(t0, end, 1), vec![1]);
        assert_eq!(
            q(t0, t0 + 6 * sec, 10),
            vec![2, 1],
            "before 6 s: 5 s beats 3 s"
        );
        assert_eq!(q(t0, t0 + 6 * sec, 1), vec![2]);
        assert_eq!(q(t0 + 4 * sec, t0 + 6 * sec, 10), vec![2]);
        assert_eq!(q(t0 + 6 * sec, end, 10), vec![1]);
        // A late span joins its trace in a new row; a duplicate is dropped.
        let mut late = suite::span(1, 9, t0 + 4 * sec, "db");
        late.parent_span_id = Some(a[2].span_id);
        s.write(2, vec![late.clone(), a[0].clone()]).unwrap();
        assert_eq!(s.rows_of(&id), 4);
        let back = s.trace(&id).unwrap();
        assert_eq!(back.len(), 5);
        assert_eq!(back[3], late);
        assert_eq!(s.summary(&id).unwrap().unwrap().span_count, 5);
    }

    #[test]
    fn unflushed_batches_are_not_reported_durable() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path());
        s.write(5, vec![suite::span(1, 1, now_ns(), "a")]).unwrap();
        assert_eq!(s.durable_seq(), 0, "nothing flushed yet");
        s.flush().unwrap();
        assert_eq!(s.durable_seq(), 5);
    }

    #[test]
    fn retention_removes_old_traces_and_their_rows() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = TraceStoreOptions::new(dir.path());
        o.retention = Duration::from_secs(86_400);
        let s = RocksTraceStore::open(&o).unwrap();
        let now = now_ns();
        let old = now - 3 * 86_400 * 1_000_000_000;
        let mut old_child = suite::span(7, 2, old + 10, "db");
        old_child.parent_span_id = Some(SpanId([1; 8]));
        s.write(1, vec![suite::span(7, 1, old, "api"), old_child])
            .unwrap();
        s.write(2, vec![suite::span(8, 1, now, "api")]).unwrap();
        s.flush().unwrap();
        let old_id = TraceId([7; 16]);
        assert_eq!(s.rows_of(&old_id), 1);
        // Queries already ignore data past retention.
        let q = TraceSearch {
            service: Some("api".into()),
            start_ns: 0,
            end_ns: u64::MAX,
            limit: 10,
            ..Default::default()
        };
        let found = s.search(&q).unwrap().traces;
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].trace_id, TraceId([8; 16]));
        s.compact_all().unwrap();
        assert!(s.trace(&old_id).unwrap().is_empty());
        assert_eq!(s.summary(&old_id).unwrap(), None);
        assert_eq!(s.rows_of(&old_id), 0);
        let stats = s.cf(CF_STATS).unwrap();
        let old_minute = minute_of(old);
        let stale =
            s.db.iterator_cf(stats, IteratorMode::Start)
                .filter(|i| codec::stats_key_minute(&i.as_ref().unwrap().0) == Some(old_minute))
                .count();
        assert_eq!(stale, 0, "old RED and dependency rows are gone");
        // The recent trace and its figures survive compaction and restart.
        drop(s);
        let s = RocksTraceStore::open(&o).unwrap();
        assert_eq!(s.trace(&TraceId([8; 16])).unwrap().len(), 1);
        assert_eq!(s.search(&q).unwrap().traces.len(), 1);
        assert_eq!(s.services(10).unwrap(), vec!["api".to_string()]);
    }
}
