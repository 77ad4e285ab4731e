//! The tantivy log store: one index per time partition under the store
//! directory (`p-<start secs>-<length secs>/`), so a search opens only the
//! partitions that overlap its time range and retention deletes whole
//! directories.
//!
//! Schema (nothing is stored twice): `time`, `id` (WAL seq << 24 | index,
//! the pagination tie-breaker) and `severity_number` are fast columns (time
//! ranges run on the fast column, which tantivy prefers over an inverted
//! index); `severity`, `service`, `trace_id`, `span_id`, `attributes` and
//! `resource` are untokenized keyword fields (`path=value` pairs for
//! attributes, see [`super::keywords`]); `body` is full text with positions
//! (for a body with a template, [`super::template`], only its variable
//! words, the rest being found through the indexed `template` number).
//! The record itself is rebuilt from two places, each piece kept once:
//! its time from the `time` column and the rest from the partition's row
//! blocks ([`super::rows`]) at the record's `slot`, including the part its
//! OTLP block shares (severity, resource, scope;
//! [`super::codec::encode_shared`]) once per block. The document store
//! holds nothing but tantivy's own entry per document.
//!
//! Earlier formats, still read and written: row blocks before version 3
//! leave the shared part in the dictionary-encoded `shared` bytes column
//! (records of partitions without row blocks keep it there too);
//! partitions made before row blocks (no `slot` field) keep the rest
//! ([`super::codec::encode_row`]) in `record` in the zstd document store;
//! before templates (no `template`
//! field) every body is indexed word by word; before block filters
//! (default analyzer) every word is in the postings. Indexes written with
//! version 1 of the codec (the whole record in the document store) are not
//! readable.
//!
//! Durability: every `commit_interval` a background thread commits each
//! partition written since the last commit (the commit payload holds the
//! WAL seq), reloads its reader (new logs become searchable), and then
//! records that seq in the `durable_seq` file (written atomically), which
//! is what [`durable_seq`](crate::storage::StoreLifecycle::durable_seq)
//! reports. A crash between partition commits leaves data above the durable
//! seq in some partitions; on open the store finds the highest id present
//! and, while the WAL replays seqs up to it, deletes a seq's records before
//! writing them again, so replay never duplicates.

use crate::model::time::now_ns;
use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, RwLock};
use tantivy::collector::{Collector, Count, SegmentCollector};
use tantivy::columnar::Column;
use tantivy::query::{
    AllQuery, BooleanQuery, EmptyQuery, Occur, PhraseQuery, Query, RangeQuery, TermQuery,
    TermSetQuery,
};
use tantivy::schema::{
    BytesOptions, Field, IndexRecordOption, NumericOptions, Schema, TextFieldIndexing, TextOptions,
    Value, STORED,
};
use tantivy::store::{Compressor, ZstdCompressor};
use tantivy::tokenizer::{TextAnalyzer, Token, TokenStream, Tokenizer};
use tantivy::{
    DocAddress, DocId, Index, IndexReader, IndexSettings, IndexWriter, ReloadPolicy, Score,
    SegmentOrdinal, SegmentReader, TantivyDocument, Term,
};

use super::bloom::{self, BlockBuilder, BlockFilter, FilterFile};
use super::rows::{self, BlockCache, RowBody, RowFile, RowParts};
use super::template::{self, Templates};
use super::{
    attribute_keywords, body_text, codec, record_id, resource_keywords, severity_class,
    severity_keywords, tokenize, Buckets, LogChunk, LogCursor, LogField, LogFilter, LogPage,
    LogScan, LogSearch, NumField, StoredLog, TailHub, TailReceiver, ID_SHIFT, MAX_PAGE,
};
use crate::model::LogRecord;
use crate::storage::{LogStore, ScanStats, StorageError, StoreLifecycle, StoreStats};

/// Partitions that may have an open writer at once; more close the least
/// recently written one.
const MAX_OPEN_WRITERS: usize = 4;
/// Commit ticks without writes after which a partition's writer is closed.
const IDLE_TICKS: u32 = 30;
const DURABLE_FILE: &str = "durable_seq";
/// Written records held in memory until a commit; more commit at once.
const MAX_PENDING: usize = 500_000;

/// How the store is laid out and behaves.
#[derive(Debug, Clone)]
pub struct LogIndexOptions {
    /// Length of one partition (one index).
    pub partition: Duration,
    /// How often written records are committed (searchable and durable).
    pub commit_interval: Duration,
    /// Partitions that end before now minus this are deleted; `None` keeps all.
    pub retention: Option<Duration>,
    /// Indexing memory of one partition's writer.
    pub writer_memory_bytes: usize,
    /// Indexing threads of one partition's writer.
    pub writer_threads: usize,
    /// zstd level of row blocks.
    pub zstd_level: i32,
    /// zstd level of the document store of new partitions. With row
    /// blocks it holds only tantivy's entry per document (an empty field
    /// list and a 4-byte offset): levels from about 14 model the counting
    /// offsets (~1 byte a document, against ~2.5 at level 3) and still
    /// compress over 10 MB/s, a few percent of a core at full ingest.
    pub docstore_zstd_level: i32,
    /// Uncompressed bytes per document store block.
    pub docstore_block_bytes: usize,
    /// Bytes of decoded row blocks kept in memory (all partitions).
    pub row_cache_bytes: usize,
    /// Body templates one partition numbers (at most
    /// [`template::MAX_TEMPLATES`]); bodies of further shapes are indexed
    /// word by word.
    pub max_templates: usize,
}

impl Default for LogIndexOptions {
    fn default() -> Self {
        LogIndexOptions {
            partition: Duration::from_secs(86_400),
            commit_interval: Duration::from_secs(1),
            retention: Some(Duration::from_secs(7 * 86_400)),
            writer_memory_bytes: 64 << 20,
            writer_threads: 1,
            zstd_level: 3,
            docstore_zstd_level: 15,
            docstore_block_bytes: 128 << 10,
            row_cache_bytes: rows::CACHE_BYTES,
            max_templates: template::MAX_TEMPLATES,
        }
    }
}

fn backend(e: impl std::fmt::Display) -> StorageError {
    StorageError::Backend(format!("log index: {e}"))
}

#[derive(Clone, Copy)]
struct Fields {
    time: Field,
    id: Field,
    severity_number: Field,
    severity: Field,
    service: Field,
    trace_id: Field,
    span_id: Field,
    body: Field,
    attributes: Field,
    resource: Field,
    shared: Field,
    record: Field,
    /// Block words that repeat within their block ([`super::bloom`]).
    body_repeated: Field,
    /// The record's block number ([`super::bloom`]), indexed.
    block: Field,
    /// The number of the body's template ([`super::template`]), indexed.
    template: Field,
    /// Where the record's row is ([`super::rows::slot`]), a fast column.
    slot: Field,
}

/// The body analyzer: [`super::tokenize`]'s words, except block words
/// ([`bloom::is_block_word`]), which keep their position but are left to the
/// block filters.
const BODY_TOKENIZER: &str = "body_v3";

#[derive(Clone, Default)]
struct BodyTokenizer;

struct BodyTokenStream<'a> {
    words: super::Words<'a>,
    /// Position of the next word.
    position: usize,
    token: Token,
}

impl TokenStream for BodyTokenStream<'_> {
    fn advance(&mut self) -> bool {
        while let Some((from, to)) = self.words.next_into(&mut self.token.text) {
            let position = self.position;
            self.position += 1;
            if !bloom::is_block_word(&self.token.text) {
                self.token.offset_from = from;
                self.token.offset_to = to;
                self.token.position = position;
                self.token.position_length = 1;
                return true;
            }
        }
        false
    }

    fn token(&self) -> &Token {
        &self.token
    }

    fn token_mut(&mut self) -> &mut Token {
        &mut self.token
    }
}

impl Tokenizer for BodyTokenizer {
    type TokenStream<'a> = BodyTokenStream<'a>;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> BodyTokenStream<'a> {
        BodyTokenStream {
            words: super::Words::new(text),
            position: 0,
            token: Token::default(),
        }
    }
}

/// The distinct block words of a body text with their filter hashes.
fn block_words(text: &str, out: &mut Vec<(u64, String)>) {
    super::for_each_word(text, |w| {
        if bloom::is_block_word(w) {
            out.push((bloom::word_hash(w), w.to_string()));
        }
    });
    out.sort_unstable();
    out.dedup();
}

fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let fast = NumericOptions::default().set_fast();
    let keyword = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer("raw")
            .set_index_option(IndexRecordOption::Basic)
            .set_fieldnorms(false),
    );
    let text = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(BODY_TOKENIZER)
            .set_index_option(IndexRecordOption::WithFreqsAndPositions)
            .set_fieldnorms(false),
    );
    let fields = Fields {
        time: b.add_u64_field("time", fast.clone()),
        id: b.add_u64_field("id", fast.clone()),
        severity_number: b.add_u64_field("severity_number", fast),
        severity: b.add_text_field("severity", keyword.clone()),
        service: b.add_text_field("service", keyword.clone()),
        trace_id: b.add_text_field("trace_id", keyword.clone()),
        span_id: b.add_text_field("span_id", keyword.clone()),
        body: b.add_text_field("body", text),
        attributes: b.add_text_field("attributes", keyword.clone()),
        resource: b.add_text_field("resource", keyword.clone()),
        shared: b.add_bytes_field("shared", BytesOptions::default().set_fast()),
        record: b.add_bytes_field("record", STORED),
        body_repeated: b.add_text_field("body_repeated", keyword.clone()),
        block: b.add_u64_field("block", NumericOptions::default().set_indexed()),
        template: b.add_u64_field("template", NumericOptions::default().set_indexed()),
        slot: b.add_u64_field("slot", NumericOptions::default().set_fast()),
    };
    (b.build(), fields)
}

/// A record's document, before its body text is added.
struct NewDoc {
    doc: TantivyDocument,
    /// Distinct block words of the body with their filter hashes.
    words: Vec<(u64, String)>,
    /// The body text to index word by word, for a body without a shape.
    text: Option<String>,
    /// The shape of a string body: its template and variable words.
    shape: Option<template::Shape>,
    /// The stored part (the body left empty when it has a shape).
    row: RowParts,
}

/// A document held until its block ends (then its block words are known
/// to be single or repeated within the block).
struct StagedDoc {
    id: u64,
    doc: TantivyDocument,
    /// Distinct block words of the body with their filter hashes.
    words: Vec<(u64, String)>,
    /// The stored part, for a partition with row blocks.
    row: Option<RowParts>,
}

/// A partition's block in progress.
struct Blocks {
    builder: BlockBuilder,
    staged: Vec<StagedDoc>,
    /// Filters of ended blocks whose documents went to the writer, to be
    /// written to the filter file before the next commit.
    done: Vec<BlockFilter>,
    /// Row blocks of those blocks ([`rows::encode_block`] payloads), to be
    /// written to the row file before the next commit.
    done_rows: Vec<Vec<u8>>,
    /// zstd level of row blocks.
    level: i32,
}

impl Blocks {
    /// Adds a document to the block; a full block ends.
    fn add(
        &mut self,
        w: &IndexWriter,
        fields: &Fields,
        id: u64,
        doc: TantivyDocument,
        words: Vec<(u64, String)>,
        row: Option<RowParts>,
    ) -> Result<(), StorageError> {
        self.builder.add(words.iter().map(|(h, _)| *h));
        self.staged.push(StagedDoc {
            id,
            doc,
            words,
            row,
        });
        if self.builder.is_full() {
            self.finish(w, fields)?;
        }
        Ok(())
    }

    /// Ends the block: its documents get the block number, their slot and
    /// their repeated block words, and go to the writer; their rows form
    /// the block's row block.
    fn finish(&mut self, w: &IndexWriter, fields: &Fields) -> Result<(), StorageError> {
        // The row block first: if it fails, nothing has changed.
        let block = self.builder.block();
        let rows: Vec<&RowParts> = self.staged.iter().filter_map(|s| s.row.as_ref()).collect();
        let payload = if rows.is_empty() {
            None
        } else {
            Some(rows::encode_block(block, &rows, self.level)?)
        };
        let Some(done) = self.builder.finish() else {
            return Ok(());
        };
        debug_assert_eq!(done.filter.block, block);
        self.done_rows.extend(payload);
        let mut index = 0;
        for s in &mut self.staged {
            if s.row.take().is_some() {
                s.doc.add_u64(fields.slot, rows::slot(block, index));
                index += 1;
            }
        }
        for mut s in self.staged.drain(..) {
            s.doc.add_u64(fields.block, block);
            for (h, word) in s.words {
                if done.repeated.contains(&h) {
                    s.doc.add_text(fields.body_repeated, word);
                }
            }
            w.add_document(s.doc).map_err(backend)?;
        }
        self.done.push(done.filter);
        Ok(())
    }

    /// Drops the staged documents with ids in `lo..hi` (a seq written again).
    fn forget(&mut self, lo: u64, hi: u64) {
        self.staged.retain(|s| s.id < lo || s.id >= hi);
    }
}

struct Partition {
    start_ns: u64,
    end_ns: u64,
    dir: PathBuf,
    index: Index,
    reader: IndexReader,
    writer: RwLock<Option<IndexWriter>>,
    fields: Fields,
    /// Written with the default analyzer (every word in the postings, no
    /// block filters): indexes made before block filters.
    legacy: bool,
    /// Has the `template` field: string bodies are indexed by template
    /// (indexes made before templates lack it).
    templated: bool,
    /// Has the `slot` field: records are stored in row blocks (indexes
    /// made before keep them in the document store, field `record`).
    rowed: bool,
    /// Body templates, numbered at ingest; the file holds every template
    /// a committed record uses.
    templates: Arc<RwLock<Templates>>,
    /// Row blocks; the file holds the rows of every committed record.
    rows: Arc<RwLock<RowFile>>,
    /// Block filters of the committed records (and of records being
    /// committed).
    filters: RwLock<FilterFile>,
    /// The block being written and finished blocks not yet in `filters`;
    /// changed under the writer's read lock, taken under its write lock.
    blocks: Mutex<Blocks>,
    dirty: AtomicBool,
    idle_ticks: AtomicU32,
    last_write: AtomicU64,
}

impl Partition {
    fn dir_name(start_ns: u64, len_ns: u64) -> String {
        format!("p-{}-{}", start_ns / 1_000_000_000, len_ns / 1_000_000_000)
    }

    fn parse_dir_name(name: &str) -> Option<(u64, u64)> {
        let rest = name.strip_prefix("p-")?;
        let (a, b) = rest.split_once('-')?;
        let start = a.parse::<u64>().ok()?.checked_mul(1_000_000_000)?;
        let len = b.parse::<u64>().ok()?.checked_mul(1_000_000_000)?;
        Some((start, start.saturating_add(len)))
    }

    fn open(
        dir: &Path,
        start_ns: u64,
        end_ns: u64,
        opts: &LogIndexOptions,
        cache: &Arc<BlockCache>,
    ) -> Result<Self, StorageError> {
        std::fs::create_dir_all(dir)?;
        let (schema, fields) = self::schema();
        let settings = IndexSettings {
            docstore_compression: Compressor::Zstd(ZstdCompressor {
                compression_level: Some(opts.docstore_zstd_level),
            }),
            docstore_blocksize: opts.docstore_block_bytes,
            ..Default::default()
        };
        let mmap = tantivy::directory::MmapDirectory::open(dir).map_err(backend)?;
        let index = if Index::exists(&mmap).map_err(backend)? {
            Index::open(mmap).map_err(backend)?
        } else {
            Index::builder()
                .schema(schema.clone())
                .settings(settings)
                .open_or_create(mmap)
                .map_err(backend)?
        };
        // The same fields in the same order; indexes made before row blocks
        // lack the last field, before templates the last two, before block
        // filters (default analyzer) the last four. Checked by name before
        // the body's entry is looked up by its number.
        let names = |s: &Schema| {
            s.fields()
                .map(|(_, e)| e.name().to_string())
                .collect::<Vec<_>>()
        };
        let (have, want) = (names(&index.schema()), names(&schema));
        let body_tokenizer = if (want.len() - 4..=want.len()).contains(&have.len())
            && have[..] == want[..have.len()]
        {
            match index.schema().get_field_entry(fields.body).field_type() {
                tantivy::schema::FieldType::Str(o) => {
                    o.get_indexing_options().map(|i| i.tokenizer().to_string())
                }
                _ => None,
            }
        } else {
            None
        };
        let legacy = body_tokenizer.as_deref() == Some("default");
        let known = match body_tokenizer.as_deref() {
            Some(BODY_TOKENIZER) => have.len() + 2 >= want.len(),
            Some("default") => have.len() + 4 == want.len(),
            _ => false,
        };
        let templated = have.len() + 1 >= want.len();
        let rowed = have == want;
        if !known {
            return Err(StorageError::Backend(format!(
                "log index: {} has an unknown schema",
                dir.display()
            )));
        }
        index
            .tokenizers()
            .register(BODY_TOKENIZER, TextAnalyzer::from(BodyTokenizer));
        let filters = FilterFile::open(dir)?;
        let mut templates = Templates::open(dir)?;
        templates.limit(opts.max_templates);
        let rows = RowFile::open(dir, &templates, start_ns, cache.clone())?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(backend)?;
        Ok(Partition {
            start_ns,
            end_ns,
            dir: dir.to_path_buf(),
            index,
            reader,
            writer: RwLock::new(None),
            fields,
            legacy,
            templated,
            rowed,
            templates: Arc::new(RwLock::new(templates)),
            rows: Arc::new(RwLock::new(rows)),
            blocks: Mutex::new(Blocks {
                builder: BlockBuilder::starting_at(filters.next_block()),
                staged: Vec::new(),
                done: Vec::new(),
                done_rows: Vec::new(),
                level: opts.zstd_level,
            }),
            filters: RwLock::new(filters),
            dirty: AtomicBool::new(false),
            idle_ticks: AtomicU32::new(0),
            last_write: AtomicU64::new(0),
        })
    }

    /// The highest record id in the partition (0 when empty).
    fn max_id(&self) -> u64 {
        let searcher = self.reader.searcher();
        searcher
            .segment_readers()
            .iter()
            .filter_map(|s| s.fast_fields().u64("id").ok())
            .filter(|c| c.num_docs() > 0)
            .map(|c| c.max_value())
            .max()
            .unwrap_or(0)
    }

    /// Where this partition keeps its records' bodies.
    fn stored_bodies(&self, record: Field) -> StoredBodies {
        if self.rowed {
            StoredBodies::Rows {
                rows: self.rows.clone(),
                templates: self.templates.clone(),
            }
        } else {
            StoredBodies::Documents(record)
        }
    }

    fn has_writer(&self) -> bool {
        self.writer.read().is_some()
    }

    /// Commits pending documents with `payload`. They become visible to
    /// searches at the next reader reload (done by the commit round).
    fn commit(&self, payload: u64) -> Result<(), StorageError> {
        let mut w = self.writer.write();
        self.commit_locked(&mut w, payload)
    }

    /// The block filters of the written records go to disk first, then the
    /// records are committed: every committed record has its filter.
    fn commit_locked(
        &self,
        writer: &mut Option<IndexWriter>,
        payload: u64,
    ) -> Result<(), StorageError> {
        self.dirty.store(false, Ordering::SeqCst);
        let Some(w) = writer.as_mut() else {
            return Ok(());
        };
        let (finished, finished_rows) = {
            let mut blocks = self.blocks.lock();
            blocks.finish(w, &self.fields)?;
            (
                std::mem::take(&mut blocks.done),
                std::mem::take(&mut blocks.done_rows),
            )
        };
        // Templates, rows, then filters: a file that is written is not
        // written again by a retry (nothing is appended twice).
        // One lock at a time: readers take the templates' lock, then the
        // rows'.
        let mut rows_written = false;
        let persisted = self.templates.write().persist();
        let written = persisted.and_then(|()| {
            self.rows.write().append(&finished_rows)?;
            rows_written = true;
            self.filters.write().append(&finished)
        });
        if let Err(e) = written {
            // Their documents are in the writer: the rows and filters (and
            // the templates, kept unwritten) must reach the files before
            // any commit does.
            let mut blocks = self.blocks.lock();
            blocks.done.splice(0..0, finished);
            if !rows_written {
                blocks.done_rows.splice(0..0, finished_rows);
            }
            return Err(e);
        }
        let mut prepared = w.prepare_commit().map_err(backend)?;
        prepared.set_payload(&payload.to_string());
        prepared.commit().map_err(backend)?;
        Ok(())
    }

    /// Commits and closes the writer (its merge threads finish first).
    fn close_writer(&self, payload: u64) -> Result<(), StorageError> {
        let mut guard = self.writer.write();
        self.commit_locked(&mut guard, payload)?;
        if let Some(w) = guard.take() {
            drop(guard);
            w.wait_merging_threads().map_err(backend)?;
        }
        Ok(())
    }
}

struct WriteState {
    last_written: u64,
    /// The first seq whose write failed: durability stops below it.
    failed: Option<u64>,
}

struct Inner {
    dir: PathBuf,
    opts: LogIndexOptions,
    fields: Fields,
    parts: RwLock<BTreeMap<u64, Arc<Partition>>>,
    write: Mutex<WriteState>,
    /// Serialises commit rounds (background, flush and close).
    commit_lock: Mutex<()>,
    durable: AtomicU64,
    /// Records written since the last commit round, searched from memory so
    /// that a record is visible as soon as it is written. Cleared, under
    /// this lock, together with the reader reloads that make the committed
    /// documents visible, so a search never sees a record twice.
    pending: RwLock<Vec<StoredLog>>,
    /// Seqs at or below this may already be in an index (written before a crash).
    replay_floor: u64,
    tail: TailHub,
    /// Decoded row blocks of every partition.
    cache: Arc<BlockCache>,
    stop: Mutex<bool>,
    wake: Condvar,
}

/// The tantivy log store.
pub struct LogIndex {
    inner: Arc<Inner>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl LogIndex {
    /// Opens (or creates) the store in `dir` and starts its commit thread.
    pub fn open(dir: &Path, opts: LogIndexOptions) -> Result<Self, StorageError> {
        if opts.partition < Duration::from_secs(1) {
            return Err(StorageError::Backend(
                "log partition length must be at least 1s".into(),
            ));
        }
        std::fs::create_dir_all(dir)?;
        let (_, fields) = schema();
        let cache = BlockCache::new(opts.row_cache_bytes);
        let mut parts = BTreeMap::new();
        let mut replay_floor = 0;
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some((start, end)) = name.to_str().and_then(Partition::parse_dir_name) else {
                continue;
            };
            let p = Partition::open(&entry.path(), start, end, &opts, &cache)?;
            replay_floor = replay_floor.max(p.max_id() >> ID_SHIFT);
            parts.insert(start, Arc::new(p));
        }
        let durable = match std::fs::read_to_string(dir.join(DURABLE_FILE)) {
            Ok(s) => s.trim().parse::<u64>().map_err(|_| {
                StorageError::Backend(format!("log index: damaged {DURABLE_FILE} file"))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e.into()),
        };
        let inner = Arc::new(Inner {
            dir: dir.to_path_buf(),
            fields,
            parts: RwLock::new(parts),
            write: Mutex::new(WriteState {
                last_written: durable,
                failed: None,
            }),
            commit_lock: Mutex::new(()),
            durable: AtomicU64::new(durable),
            pending: RwLock::new(Vec::new()),
            replay_floor,
            tail: TailHub::default(),
            cache,
            stop: Mutex::new(false),
            wake: Condvar::new(),
            opts,
        });
        inner.apply_retention()?;
        let bg = inner.clone();
        let thread = std::thread::Builder::new()
            .name("log-index-commit".into())
            .spawn(move || bg.run())?;
        Ok(LogIndex {
            inner,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Partition directories and their time ranges, oldest first.
    pub fn partitions(&self) -> Vec<(u64, u64, PathBuf)> {
        self.inner
            .parts
            .read()
            .values()
            .map(|p| (p.start_ns, p.end_ns, p.dir.clone()))
            .collect()
    }

    /// Deletes partitions older than the retention now (also done periodically).
    pub fn apply_retention(&self) -> Result<usize, StorageError> {
        self.inner.apply_retention()
    }

    /// Committed bytes by index component (`store`, `postings`, `positions`,
    /// `termdict`, `fast_fields`, `fieldnorms`, `deletes`, and `blooms` for
    /// the block filter files) and field (empty for the document store and
    /// deletes), summed over every partition and segment; for benchmarks and
    /// diagnostics.
    pub fn space_usage(&self) -> Result<BTreeMap<(String, String), u64>, StorageError> {
        let mut out: BTreeMap<(String, String), u64> = BTreeMap::new();
        let parts: Vec<Arc<Partition>> = self.inner.parts.read().values().cloned().collect();
        for p in parts {
            let usage = p.reader.searcher().space_usage().map_err(backend)?;
            for seg in usage.segments() {
                let per_field = [
                    ("termdict", seg.termdict()),
                    ("postings", seg.postings()),
                    ("positions", seg.positions()),
                    ("fast_fields", seg.fast_fields()),
                    ("fieldnorms", seg.fieldnorms()),
                ];
                for (kind, fields) in per_field {
                    for f in fields.fields() {
                        *out.entry((kind.into(), f.field_name().into())).or_default() +=
                            f.total().get_bytes();
                    }
                }
                *out.entry(("store".into(), String::new())).or_default() +=
                    seg.store().total().get_bytes();
                *out.entry(("deletes".into(), String::new())).or_default() +=
                    seg.deletes().get_bytes();
            }
            *out.entry(("blooms".into(), "body".into())).or_default() += p.filters.read().bytes();
            *out.entry(("templates".into(), "body".into())).or_default() +=
                p.templates.read().bytes();
            *out.entry(("rows".into(), String::new())).or_default() += p.rows.read().bytes();
        }
        Ok(out)
    }
}

impl Inner {
    fn run(&self) {
        let mut stop = self.stop.lock();
        let mut last_retention = Instant::now();
        while !*stop {
            self.wake.wait_for(&mut stop, self.opts.commit_interval);
            if *stop {
                break;
            }
            drop(stop);
            if let Err(e) = self.commit_round(false) {
                tracing::error!(error = %e, "log index commit failed");
            }
            if last_retention.elapsed() >= Duration::from_secs(60) {
                last_retention = Instant::now();
                if let Err(e) = self.apply_retention() {
                    tracing::error!(error = %e, "log retention failed");
                }
            }
            stop = self.stop.lock();
        }
    }

    /// Commits every partition written since the last round, makes the
    /// commits visible and records the durable seq. With `close`, also
    /// closes every writer. Writes wait while the partitions commit.
    fn commit_round(&self, close: bool) -> Result<(), StorageError> {
        let _round = self.commit_lock.lock();
        let mut state = self.write.lock();
        let (target, failed) = (state.last_written, state.failed);
        let parts: Vec<Arc<Partition>> = self.parts.read().values().cloned().collect();
        for p in &parts {
            let committed = if close {
                p.close_writer(target)
            } else if p.dirty.load(Ordering::SeqCst) {
                p.idle_ticks.store(0, Ordering::Relaxed);
                p.commit(target)
            } else if p.has_writer() && p.idle_ticks.fetch_add(1, Ordering::Relaxed) >= IDLE_TICKS {
                p.close_writer(target)
            } else {
                Ok(())
            };
            if let Err(e) = committed {
                // Documents handed to a writer in this round may be lost:
                // durability stops here (the WAL keeps them for a restart).
                let next = self.durable.load(Ordering::SeqCst) + 1;
                state.failed = Some(state.failed.map_or(next, |f| f.min(next)));
                return Err(e);
            }
        }
        {
            let mut pending = self.pending.write();
            for p in &parts {
                p.reader.reload().map_err(backend)?;
            }
            pending.clear();
        }
        drop(state);
        let durable = match failed {
            Some(f) => target.min(f.saturating_sub(1)),
            None => target,
        };
        if durable > self.durable.load(Ordering::SeqCst) {
            write_atomically(&self.dir, DURABLE_FILE, durable.to_string().as_bytes())?;
            self.durable.store(durable, Ordering::SeqCst);
        }
        Ok(())
    }

    fn apply_retention(&self) -> Result<usize, StorageError> {
        let Some(retention) = self.opts.retention else {
            return Ok(0);
        };
        let cutoff = now_ns().saturating_sub(retention.as_nanos().min(u64::MAX as u128) as u64);
        let old: Vec<Arc<Partition>> = {
            let mut parts = self.parts.write();
            let keys: Vec<u64> = parts
                .values()
                .filter(|p| p.end_ns <= cutoff)
                .map(|p| p.start_ns)
                .collect();
            keys.iter().filter_map(|k| parts.remove(k)).collect()
        };
        for p in &old {
            if let Some(w) = p.writer.write().take() {
                // The partition is deleted anyway: discard pending documents.
                drop(w);
            }
            std::fs::remove_dir_all(&p.dir)?;
            self.cache.forget(p.start_ns);
            tracing::info!(partition = %p.dir.display(), "log partition deleted by retention");
        }
        Ok(old.len())
    }

    fn partition_len_ns(&self) -> u64 {
        self.opts.partition.as_nanos().min(u64::MAX as u128) as u64
    }

    /// The partition for time `t`, created (with an open writer) as needed.
    fn writable_partition(&self, t: u64, seq: u64) -> Result<Arc<Partition>, StorageError> {
        let len = self.partition_len_ns();
        let existing = self
            .parts
            .read()
            .range(..=t)
            .next_back()
            .filter(|(_, p)| t < p.end_ns)
            .map(|(_, p)| p.clone());
        let p = match existing {
            Some(p) => p,
            None => {
                let start = t - t % len;
                let end = start.saturating_add(len);
                let dir = self.dir.join(Partition::dir_name(start, len));
                let p = Arc::new(Partition::open(&dir, start, end, &self.opts, &self.cache)?);
                self.parts.write().insert(start, p.clone());
                p
            }
        };
        if !p.has_writer() {
            self.limit_open_writers(seq)?;
            let mut w = p.writer.write();
            if w.is_none() {
                let threads = self.opts.writer_threads.max(1);
                let budget = self.opts.writer_memory_bytes.max((threads * 16) << 20);
                *w = Some(
                    p.index
                        .writer_with_num_threads(threads, budget)
                        .map_err(backend)?,
                );
            }
        }
        p.last_write.store(seq, Ordering::Relaxed);
        Ok(p)
    }

    /// Closes the least recently written writers beyond the limit.
    fn limit_open_writers(&self, seq: u64) -> Result<(), StorageError> {
        let mut open: Vec<Arc<Partition>> = self
            .parts
            .read()
            .values()
            .filter(|p| p.has_writer())
            .cloned()
            .collect();
        if open.len() < MAX_OPEN_WRITERS {
            return Ok(());
        }
        open.sort_by_key(|p| p.last_write.load(Ordering::Relaxed));
        for p in open.iter().take(open.len() + 1 - MAX_OPEN_WRITERS) {
            // The payload is informational; durability is tracked by the
            // store-level file.
            p.close_writer(seq.saturating_sub(1))?;
        }
        Ok(())
    }

    /// The document of a record and the filter hashes of its block words.
    fn document(&self, id: u64, r: &LogRecord) -> NewDoc {
        let f = &self.fields;
        let mut d = TantivyDocument::new();
        d.add_u64(f.time, r.time_ns);
        d.add_u64(f.id, id);
        d.add_u64(f.severity_number, r.severity_number.max(0) as u64);
        // The first keyword, the class, is found through the number's
        // column: only a severity text other than the class is indexed.
        for s in severity_keywords(r).into_iter().skip(1) {
            d.add_text(f.severity, s);
        }
        d.add_text(f.service, r.service_name());
        if let Some(t) = r.trace_id {
            d.add_text(f.trace_id, t.to_hex());
        }
        if let Some(s) = r.span_id {
            d.add_text(f.span_id, s.to_hex());
        }
        let mut words = Vec::new();
        let (mut text, mut shape) = (None, None);
        match &r.body {
            crate::model::AnyValue::String(s) if !s.is_empty() => {
                block_words(s, &mut words);
                shape = template::shape(s);
                if shape.is_none() {
                    text = Some(s.clone());
                }
            }
            crate::model::AnyValue::String(_) => {}
            other => {
                let body = body_text(other);
                if !body.is_empty() {
                    block_words(&body, &mut words);
                    text = Some(body);
                }
            }
        }
        for k in attribute_keywords(r) {
            d.add_text(f.attributes, k);
        }
        for k in resource_keywords(r) {
            d.add_text(f.resource, k);
        }
        let mut shared = Vec::with_capacity(64);
        codec::encode_shared(r, &mut shared);
        let mut head = Vec::with_capacity(16);
        codec::encode_head(r, &mut head);
        let mut attributes = Vec::with_capacity(64);
        codec::encode_attributes(r, &mut attributes);
        let mut value = Vec::new();
        if shape.is_none() {
            codec::encode_value(&r.body, &mut value);
        }
        NewDoc {
            doc: d,
            words,
            text,
            shape,
            row: RowParts {
                head,
                attributes,
                body: RowBody::Value(value),
                shared,
            },
        }
    }

    /// Completes the document of record `r` for partition `p`: the body
    /// text, by template in a partition with templates (while it has
    /// room), else word by word; and the stored part, for a row block
    /// (returned) or in the document store.
    fn complete(&self, p: &Partition, r: &LogRecord, new: &mut NewDoc) -> Option<RowParts> {
        self.add_body(p, r, new);
        if !p.rowed {
            new.doc
                .add_bytes(self.fields.shared, new.row.shared.as_slice());
            let mut buf = Vec::with_capacity(256);
            codec::encode_row(r, &mut buf);
            new.doc.add_bytes(self.fields.record, buf.as_slice());
            return None;
        }
        let mut row = std::mem::replace(
            &mut new.row,
            RowParts {
                head: Vec::new(),
                attributes: Vec::new(),
                body: RowBody::Value(Vec::new()),
                shared: Vec::new(),
            },
        );
        if matches!(&row.body, RowBody::Value(v) if v.is_empty()) {
            let mut value = Vec::new();
            codec::encode_value(&r.body, &mut value);
            row.body = RowBody::Value(value);
        }
        Some(row)
    }

    fn add_body(&self, p: &Partition, r: &LogRecord, new: &mut NewDoc) {
        let body = self.fields.body;
        if let Some(text) = new.text.take() {
            new.doc.add_text(body, text);
            return;
        }
        let Some(shape) = new.shape.take() else {
            return;
        };
        let number = if p.templated {
            p.templates.write().number(&shape.key)
        } else {
            None
        };
        match number {
            Some(n) => {
                new.doc.add_u64(self.fields.template, n as u64);
                new.row.body = RowBody::Template(n, shape.values);
                let tokens = shape
                    .vars
                    .into_iter()
                    .map(|(position, text)| Token {
                        position,
                        text,
                        ..Default::default()
                    })
                    .collect();
                new.doc.add_pre_tokenized_text(
                    body,
                    tantivy::tokenizer::PreTokenizedString {
                        text: String::new(),
                        tokens,
                    },
                );
            }
            None => {
                if let crate::model::AnyValue::String(s) = &r.body {
                    new.doc.add_text(body, s.as_str());
                }
            }
        }
    }

    fn write(&self, seq: u64, records: Vec<LogRecord>) -> Result<(), StorageError> {
        // Records past the retention are not indexed: they would be deleted
        // right away. Documents are built before taking the write lock, so
        // the next batch is prepared while a commit round holds it.
        let cutoff = self.retention_cutoff();
        let docs: Vec<Option<NewDoc>> = records
            .iter()
            .enumerate()
            .map(|(i, r)| {
                (!self.expired(r.time_ns, cutoff)).then(|| self.document(record_id(seq, i), r))
            })
            .collect();
        let mut state = self.write.lock();
        let rewrite = seq <= self.replay_floor.max(state.last_written);
        let result = self.write_locked(seq, &records, docs, rewrite);
        match &result {
            Ok(()) => state.last_written = state.last_written.max(seq),
            Err(_) => {
                state.failed.get_or_insert(seq);
            }
        }
        if let Err(e) = result {
            drop(state);
            return Err(e);
        }
        // What the index got: records past the retention are neither
        // searchable meanwhile nor tailed.
        let stored: Vec<StoredLog> = records
            .into_iter()
            .enumerate()
            .filter(|(_, record)| !self.expired(record.time_ns, cutoff))
            .map(|(i, record)| StoredLog {
                id: record_id(seq, i),
                record,
            })
            .collect();
        self.tail.publish(&stored);
        let pending_len = {
            let mut pending = self.pending.write();
            if rewrite {
                let (lo, hi) = (record_id(seq, 0), record_id(seq + 1, 0));
                pending.retain(|r| r.id < lo || r.id >= hi);
            }
            pending.extend(stored);
            pending.len()
        };
        drop(state);
        if pending_len >= MAX_PENDING {
            // Bound memory: commit now rather than at the next tick.
            self.commit_round(false)?;
        }
        Ok(())
    }

    /// Records at or before this time are past the retention (0: none).
    fn retention_cutoff(&self) -> u64 {
        self.opts.retention.map_or(0, |r| {
            now_ns().saturating_sub(r.as_nanos().min(u64::MAX as u128) as u64)
        })
    }

    /// Whether a record at `time_ns` falls in a partition that retention
    /// deletes at `cutoff`.
    fn expired(&self, time_ns: u64, cutoff: u64) -> bool {
        let len = self.partition_len_ns();
        time_ns.saturating_sub(time_ns % len).saturating_add(len) <= cutoff
    }

    fn write_locked(
        &self,
        seq: u64,
        records: &[LogRecord],
        docs: Vec<Option<NewDoc>>,
        rewrite: bool,
    ) -> Result<(), StorageError> {
        // Partitions (by start) where this seq's earlier copy was deleted.
        let mut replaced: Vec<u64> = Vec::new();
        for ((i, r), doc) in records.iter().enumerate().zip(docs) {
            let mut doc = match doc {
                Some(d) => Some(d),
                None => continue,
            };
            // The writer can be closed meanwhile (writer limit, retention):
            // the second attempt reopens it.
            let mut added = false;
            for _ in 0..2 {
                let p = self.writable_partition(r.time_ns, seq)?;
                let guard = p.writer.read();
                let Some(w) = guard.as_ref() else {
                    continue;
                };
                if rewrite && !replaced.contains(&p.start_ns) {
                    // A seq that may be indexed already (WAL replay): replace it.
                    let q = RangeQuery::new(
                        Bound::Included(Term::from_field_u64(self.fields.id, record_id(seq, 0))),
                        Bound::Excluded(Term::from_field_u64(
                            self.fields.id,
                            record_id(seq + 1, 0),
                        )),
                    );
                    w.delete_query(Box::new(q)).map_err(backend)?;
                    // And the copy still waiting for its block to end.
                    p.blocks
                        .lock()
                        .forget(record_id(seq, 0), record_id(seq + 1, 0));
                    replaced.push(p.start_ns);
                }
                if let Some(mut new) = doc.take() {
                    // Under the writer's read lock: the commit (write lock)
                    // ends the block and sees its documents, filter and
                    // templates.
                    let row = self.complete(&p, r, &mut new);
                    if p.legacy {
                        w.add_document(new.doc).map_err(backend)?;
                    } else {
                        p.blocks.lock().add(
                            w,
                            &self.fields,
                            record_id(seq, i),
                            new.doc,
                            new.words,
                            row,
                        )?;
                    }
                }
                p.dirty.store(true, Ordering::SeqCst);
                added = true;
                break;
            }
            if !added {
                return Err(StorageError::Backend(
                    "log index: no writer for the record's partition".into(),
                ));
            }
        }
        Ok(())
    }

    /// The query of a filter on partition `p`.
    fn to_query(&self, f: &LogFilter, p: &Partition) -> Box<dyn Query> {
        let fl = &self.fields;
        match f {
            LogFilter::All => Box::new(AllQuery),
            LogFilter::Text(t) | LogFilter::Phrase(t) => {
                let words = tokenize(t);
                if words.is_empty() {
                    return Box::new(EmptyQuery);
                }
                let by_words = self.words_query(&words, p);
                // Words with digits only: every record has them in its
                // postings or block filters, so `by_words` finds them all.
                if !p.templated || words.iter().all(|w| template::is_variable(w)) {
                    return by_words;
                }
                let numbers = p.templates.read().matching(&words);
                if numbers.is_empty() {
                    return by_words;
                }
                let in_templates: Box<dyn Query> = Box::new(TermSetQuery::new(
                    numbers
                        .into_iter()
                        .map(|n| Term::from_field_u64(fl.template, n as u64)),
                ));
                let by_template = if words.iter().any(|w| template::is_variable(w)) {
                    // The templates have variables where the digit words
                    // are: records with those words are candidates.
                    let mut must = vec![(Occur::Must, in_templates)];
                    for w in words.iter().filter(|w| template::is_variable(w)) {
                        let place: Box<dyn Query> = if bloom::is_block_word(w) {
                            self.block_word_places(w, p).any
                        } else {
                            Box::new(TermQuery::new(
                                Term::from_field_text(fl.body, w),
                                IndexRecordOption::Basic,
                            ))
                        };
                        must.push((Occur::Must, place));
                    }
                    let candidates: Box<dyn Query> = Box::new(BooleanQuery::new(must));
                    Box::new(CheckedText::new(
                        words,
                        None,
                        Some(candidates.into()),
                        p.stored_bodies(fl.record),
                    ))
                } else {
                    in_templates
                };
                Box::new(BooleanQuery::new(vec![
                    (Occur::Should, by_words),
                    (Occur::Should, by_template),
                ]))
            }
            LogFilter::Term { field, value } => {
                let (field, text) = match field {
                    LogField::Severity => return self.severity_query(value),
                    LogField::Service => (fl.service, value.clone()),
                    LogField::TraceId => (fl.trace_id, value.to_lowercase()),
                    LogField::SpanId => (fl.span_id, value.to_lowercase()),
                    LogField::Attribute(p) => (fl.attributes, super::keyword(p, value)),
                    LogField::Resource(p) => (fl.resource, super::keyword(p, value)),
                };
                Box::new(TermQuery::new(
                    Term::from_field_text(field, &text),
                    IndexRecordOption::Basic,
                ))
            }
            LogFilter::Range {
                field,
                lower,
                upper,
            } => {
                let field = match field {
                    NumField::SeverityNumber => fl.severity_number,
                    NumField::Time => fl.time,
                };
                range_query(field, *lower, *upper)
            }
            LogFilter::And(fs) => Box::new(BooleanQuery::new(
                fs.iter()
                    .map(|f| (Occur::Must, self.to_query(f, p)))
                    .collect(),
            )),
            LogFilter::Or(fs) => {
                if fs.is_empty() {
                    return Box::new(EmptyQuery);
                }
                Box::new(BooleanQuery::new(
                    fs.iter()
                        .map(|f| (Occur::Should, self.to_query(f, p)))
                        .collect(),
                ))
            }
            LogFilter::Not(f) => Box::new(BooleanQuery::new(vec![
                (Occur::Must, Box::new(AllQuery) as Box<dyn Query>),
                (Occur::MustNot, self.to_query(f, p)),
            ])),
        }
    }

    /// The records of partition `p` whose body postings (and block
    /// filters) hold `words` (not empty) adjacent: every match of a body
    /// indexed word by word, and of a body with a template when all the
    /// words are its variables.
    fn words_query(&self, words: &[String], p: &Partition) -> Box<dyn Query> {
        let fl = &self.fields;
        let has_block_words = !p.legacy && words.iter().any(|w| bloom::is_block_word(w));
        // The indexed words at their offsets in the phrase.
        let terms: Vec<(usize, Term)> = words
            .iter()
            .enumerate()
            .filter(|(_, w)| p.legacy || !bloom::is_block_word(w))
            .map(|(i, w)| (i, Term::from_field_text(fl.body, w)))
            .collect();
        let indexed: Option<Box<dyn Query>> = match terms.len() {
            0 => None,
            1 => Some(Box::new(TermQuery::new(
                terms[0].1.clone(),
                IndexRecordOption::Basic,
            ))),
            _ => Some(Box::new(PhraseQuery::new_with_offset(terms))),
        };
        if !has_block_words {
            return indexed.unwrap_or_else(|| Box::new(EmptyQuery));
        }
        if let [w] = words {
            // One word: its postings are matches as they are; only the
            // candidate blocks' records need a check.
            let places = self.block_word_places(w, p);
            return Box::new(CheckedText::new(
                words.to_vec(),
                Some(places.repeated.into()),
                places.blocks.map(Arc::from),
                p.stored_bodies(fl.record),
            ));
        }
        let mut must: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        for w in words.iter().filter(|w| bloom::is_block_word(w)) {
            must.push((Occur::Must, self.block_word_places(w, p).any));
        }
        must.extend(indexed.map(|q| (Occur::Must, q)));
        let candidates: Box<dyn Query> = Box::new(BooleanQuery::new(must));
        Box::new(CheckedText::new(
            words.to_vec(),
            None,
            Some(candidates.into()),
            p.stored_bodies(fl.record),
        ))
    }

    /// The records of severity `value`: its class (by number; earlier
    /// indexes also hold the class as a keyword) or that severity text.
    fn severity_query(&self, value: &str) -> Box<dyn Query> {
        let fl = &self.fields;
        let text = value.to_lowercase();
        let by_text: Box<dyn Query> = Box::new(TermQuery::new(
            Term::from_field_text(fl.severity, &text),
            IndexRecordOption::Basic,
        ));
        let Some(class) = super::SEVERITY_CLASSES.iter().position(|c| *c == text) else {
            return by_text;
        };
        // The numbers of a class ([`super::severity_class`]): four per
        // class from 1; class 0 is 0 and 25 up (negative numbers are
        // indexed as 0).
        let numbers = |lo: u64, hi: Bound<u64>| {
            (
                Occur::Should,
                range_query(fl.severity_number, Bound::Included(lo), hi),
            )
        };
        let mut any = vec![(Occur::Should, by_text)];
        if class == 0 {
            any.push(numbers(0, Bound::Included(0)));
            any.push(numbers(25, Bound::Unbounded));
        } else {
            let lo = (class as u64 - 1) * 4 + 1;
            any.push(numbers(lo, Bound::Included(lo + 3)));
        }
        Box::new(BooleanQuery::new(any))
    }

    /// Where block word `w` may be in partition `p`.
    fn block_word_places(&self, w: &str, p: &Partition) -> Places {
        let fl = &self.fields;
        let repeated = || -> Box<dyn Query> {
            Box::new(TermQuery::new(
                Term::from_field_text(fl.body_repeated, w),
                IndexRecordOption::Basic,
            ))
        };
        let blocks: Vec<Term> = p
            .filters
            .read()
            .candidates(&[bloom::word_hash(w)])
            .into_iter()
            .map(|b| Term::from_field_u64(fl.block, b))
            .collect();
        if blocks.is_empty() {
            return Places {
                any: repeated(),
                repeated: repeated(),
                blocks: None,
            };
        }
        let blocks = || -> Box<dyn Query> { Box::new(TermSetQuery::new(blocks.clone())) };
        let either = Box::new(BooleanQuery::new(vec![
            (Occur::Should, repeated()),
            (Occur::Should, blocks()),
        ]));
        Places {
            any: either,
            repeated: repeated(),
            blocks: Some(blocks()),
        }
    }

    fn search(&self, s: &LogSearch) -> Result<LogPage, StorageError> {
        let limit = s.limit.min(MAX_PAGE);
        let mut page = LogPage {
            histogram: vec![[0; 7]; s.buckets.map_or(0, |b| b.count)],
            ..Default::default()
        };
        if s.start_ns >= s.end_ns {
            return Ok(page);
        }
        // Searchers and the uncommitted records from one consistent moment.
        let (searchers, fresh) = {
            let pending = self.pending.read();
            let searchers: Vec<_> = self
                .parts
                .read()
                .values()
                .filter(|p| p.start_ns < s.end_ns && s.start_ns < p.end_ns)
                .rev()
                .map(|p| (p.clone(), p.reader.searcher()))
                .collect();
            let fresh: Vec<&StoredLog> = pending
                .iter()
                .filter(|r| {
                    let t = r.record.time_ns;
                    t >= s.start_ns && t < s.end_ns && super::matches(&s.filter, &r.record)
                })
                .collect();
            let mut hits = Vec::new();
            for r in fresh {
                let t = r.record.time_ns;
                page.total += 1;
                if let Some(i) = s.buckets.and_then(|b| b.index(t)) {
                    page.histogram[i][severity_class(r.record.severity_number as i64)] += 1;
                }
                if limit > 0 && s.cursor.is_none_or(|c| r.cursor() < c) {
                    hits.push(r.clone());
                }
            }
            hits.sort_by_key(|r| std::cmp::Reverse(r.cursor()));
            hits.truncate(limit + 1);
            (searchers, hits)
        };
        let query = |p: &Partition| {
            BooleanQuery::new(vec![
                (Occur::Must, self.to_query(&s.filter, p)),
                (
                    Occur::Must,
                    range_query(
                        self.fields.time,
                        Bound::Included(s.start_ns),
                        Bound::Excluded(s.end_ns),
                    ),
                ),
            ])
        };
        let collector = PageCollector {
            limit,
            cursor: s.cursor,
            buckets: s.buckets,
        };
        // Candidates: (cursor, searcher index or usize::MAX for `fresh`, address).
        let mut candidates: Vec<(LogCursor, usize, DocAddress)> = fresh
            .iter()
            .enumerate()
            .map(|(i, r)| (r.cursor(), usize::MAX, DocAddress::new(0, i as DocId)))
            .collect();
        for (pi, (part, searcher)) in searchers.iter().enumerate() {
            let fruit = searcher.search(&query(part), &collector).map_err(backend)?;
            page.total += fruit.total;
            for (h, f) in page.histogram.iter_mut().zip(&fruit.histogram) {
                for (a, b) in h.iter_mut().zip(f) {
                    *a += b;
                }
            }
            candidates.extend(fruit.top.into_iter().map(|(c, a)| (c, pi, a)));
        }
        candidates.sort_by_key(|b| std::cmp::Reverse(b.0));
        if candidates.len() > limit && limit > 0 {
            page.next_cursor = Some(candidates[limit - 1].0);
        }
        candidates.truncate(limit);
        let mut loaders: BTreeMap<(usize, SegmentOrdinal), RecordLoader> = BTreeMap::new();
        for (c, pi, addr) in candidates {
            if pi == usize::MAX {
                page.records.push(fresh[addr.doc_id as usize].clone());
                continue;
            }
            let loader = match loaders.entry((pi, addr.segment_ord)) {
                std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::btree_map::Entry::Vacant(e) => e.insert(RecordLoader::new(
                    searchers[pi].1.segment_reader(addr.segment_ord),
                    &searchers[pi].0,
                )?),
            };
            let record = loader.load(&searchers[pi].1, self.fields.record, addr)?;
            page.records.push(StoredLog { id: c.id, record });
        }
        Ok(page)
    }

    fn scan(
        &self,
        q: &LogScan,
        sink: &mut dyn FnMut(LogChunk) -> bool,
    ) -> Result<ScanStats, StorageError> {
        const CHUNK: usize = 4096;
        let mut stats = ScanStats::default();
        let start = q.start_ns;
        let mut left = q.limit.unwrap_or(usize::MAX);
        if start >= q.end_ns || left == 0 {
            return Ok(stats);
        }
        let in_range = |t: u64| t >= start && t < q.end_ns;
        let (searchers, fresh) = {
            let pending = self.pending.read();
            let searchers: Vec<_> = self
                .parts
                .read()
                .values()
                .filter(|p| p.start_ns < q.end_ns && start < p.end_ns)
                .map(|p| (p.clone(), p.reader.searcher()))
                .collect();
            let fresh: Vec<LogRecord> = pending
                .iter()
                .filter(|r| in_range(r.record.time_ns) && super::matches(&q.filter, &r.record))
                .take(left)
                .map(|r| r.record.clone())
                .collect();
            (searchers, fresh)
        };
        if !fresh.is_empty() {
            left -= fresh.len();
            stats.rows += fresh.len() as u64;
            let chunk = if q.count_only {
                LogChunk::Count(fresh.len() as u64)
            } else {
                LogChunk::Records(fresh)
            };
            if !sink(chunk) {
                return Ok(stats);
            }
        }
        for (part, searcher) in searchers {
            if left == 0 {
                break;
            }
            let query = BooleanQuery::new(vec![
                (Occur::Must, self.to_query(&q.filter, &part)),
                (
                    Occur::Must,
                    range_query(
                        self.fields.time,
                        Bound::Included(start),
                        Bound::Excluded(q.end_ns),
                    ),
                ),
            ]);
            stats.partitions += 1;
            if q.count_only {
                let n = (searcher.search(&query, &Count).map_err(backend)? as usize).min(left);
                left -= n;
                stats.rows += n as u64;
                if !sink(LogChunk::Count(n as u64)) {
                    break;
                }
                continue;
            }
            let mut docs = searcher.search(&query, &DocIds).map_err(backend)?;
            docs.truncate(left);
            let mut loader: Option<(SegmentOrdinal, RecordLoader)> = None;
            for addrs in docs.chunks(CHUNK) {
                let mut recs = Vec::with_capacity(addrs.len());
                for a in addrs {
                    if loader.as_ref().is_none_or(|l| l.0 != a.segment_ord) {
                        let reader = searcher.segment_reader(a.segment_ord);
                        loader = Some((a.segment_ord, RecordLoader::new(reader, &part)?));
                    }
                    if let Some((_, l)) = loader.as_mut() {
                        recs.push(l.load(&searcher, self.fields.record, *a)?);
                    }
                }
                left -= recs.len();
                stats.rows += recs.len() as u64;
                if !sink(LogChunk::Records(recs)) {
                    return Ok(stats);
                }
            }
        }
        Ok(stats)
    }

    fn disk_bytes(&self) -> u64 {
        fn walk(p: &Path) -> u64 {
            let Ok(rd) = std::fs::read_dir(p) else {
                return 0;
            };
            rd.flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => walk(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        }
        walk(&self.dir)
    }
}

/// Where a block word may be in a partition.
struct Places {
    /// Every record that may hold it: `repeated` or `blocks`.
    any: Box<dyn Query>,
    /// The records with the word in their repeated postings (exact).
    repeated: Box<dyn Query>,
    /// The records of the blocks whose filter may hold it (`None`: no
    /// such block).
    blocks: Option<Box<dyn Query>>,
}

/// Rebuilds records of one segment from its document store row, its `time`
/// column and its `shared` column (each distinct shared value decoded once).
struct RecordLoader {
    time: Column<u64>,
    shared: Option<tantivy::columnar::BytesColumn>,
    decoded: std::collections::HashMap<u64, codec::Shared>,
    buf: Vec<u8>,
    /// The row blocks of a partition with them.
    rows: Option<RowSource>,
}

/// Where the rows of a partition with row blocks are: the segment's `slot`
/// column, the partition's row file and templates.
struct RowSource {
    slot: Column<u64>,
    rows: Arc<RwLock<RowFile>>,
    templates: Arc<RwLock<Templates>>,
}

impl RowSource {
    fn new(reader: &SegmentReader, p: &Partition) -> tantivy::Result<Option<RowSource>> {
        if !p.rowed {
            return Ok(None);
        }
        Ok(Some(RowSource {
            slot: reader.fast_fields().u64("slot")?,
            rows: p.rows.clone(),
            templates: p.templates.clone(),
        }))
    }

    /// The row block of document `doc` and the record's index in it.
    fn block(&self, doc: DocId) -> Result<(Arc<rows::DecodedBlock>, usize), StorageError> {
        let slot = self
            .slot
            .first(doc)
            .ok_or_else(|| StorageError::Backend("log index: document without slot".into()))?;
        let templates = self.templates.read();
        let block = self
            .rows
            .read()
            .block(slot >> rows::SLOT_BITS, &templates)?;
        Ok((block, (slot & ((1 << rows::SLOT_BITS) - 1)) as usize))
    }

    fn body(&self, doc: DocId) -> Result<crate::model::AnyValue, StorageError> {
        let (block, i) = self.block(doc)?;
        let body = block.body(i, &self.templates.read());
        body.map_err(backend)
    }
}

impl RecordLoader {
    fn new(reader: &SegmentReader, p: &Partition) -> Result<Self, StorageError> {
        let ff = reader.fast_fields();
        Ok(RecordLoader {
            time: ff.u64("time").map_err(backend)?,
            shared: ff.bytes("shared").map_err(backend)?,
            decoded: Default::default(),
            buf: Vec::new(),
            rows: RowSource::new(reader, p).map_err(backend)?,
        })
    }

    fn load(
        &mut self,
        searcher: &tantivy::Searcher,
        record: Field,
        addr: DocAddress,
    ) -> Result<LogRecord, StorageError> {
        let damaged =
            |what: &str| StorageError::Backend(format!("log index: document without {what}"));
        let time = self
            .time
            .first(addr.doc_id)
            .ok_or_else(|| damaged("time"))?;
        let row = match &self.rows {
            Some(source) => Some((source.block(addr.doc_id)?, source.templates.clone())),
            None => None,
        };
        if let Some(((block, i), templates)) = &row {
            // Row blocks since version 3 hold the shared part themselves.
            if block.shared(*i).is_some() {
                let record = block.record(*i, time, None, &templates.read());
                return record.map_err(backend);
            }
        }
        let ord = self
            .shared
            .as_ref()
            .and_then(|c| c.term_ords(addr.doc_id).next())
            .ok_or_else(|| damaged("shared part"))?;
        let shared = match self.decoded.entry(ord) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                self.buf.clear();
                let col = self.shared.as_ref().ok_or_else(|| damaged("shared part"))?;
                if !col.ord_to_bytes(ord, &mut self.buf)? {
                    return Err(damaged("shared part"));
                }
                e.insert(codec::decode_shared(&self.buf).map_err(backend)?)
            }
        };
        if let Some(((block, i), templates)) = &row {
            let record = block.record(*i, time, Some(shared), &templates.read());
            return record.map_err(backend);
        }
        let doc: TantivyDocument = searcher.doc(addr).map_err(backend)?;
        let row = doc
            .get_first(record)
            .and_then(|v| v.as_bytes())
            .ok_or_else(|| damaged("record"))?;
        codec::decode_row(row, time, shared).map_err(backend)
    }
}

/// Body text with block words: records known to match (`exact`) and
/// candidate records (those of the blocks whose filter may hold the block
/// words, with the phrase's indexed words at their offsets) each checked
/// against their stored body.
#[derive(Clone)]
struct CheckedText {
    /// Every word of the phrase, in order.
    words: Arc<Vec<String>>,
    /// ASCII-case-insensitive search for the longest word: a body that is
    /// ASCII and lacks it cannot match, without tokenizing it (`None`: no
    /// such search, every candidate is tokenized).
    longest: Option<Arc<regex::bytes::Regex>>,
    exact: Option<Arc<dyn Query>>,
    candidates: Option<Arc<dyn Query>>,
    bodies: StoredBodies,
}

/// Where a partition keeps its records' bodies.
#[derive(Clone)]
enum StoredBodies {
    /// In the document store, field `record`.
    Documents(Field),
    /// In row blocks.
    Rows {
        rows: Arc<RwLock<RowFile>>,
        templates: Arc<RwLock<Templates>>,
    },
}

impl CheckedText {
    fn new(
        words: Vec<String>,
        exact: Option<Arc<dyn Query>>,
        candidates: Option<Arc<dyn Query>>,
        bodies: StoredBodies,
    ) -> CheckedText {
        let longest = words
            .iter()
            .max_by_key(|w| w.len())
            .and_then(|w| regex::bytes::Regex::new(&format!("(?i-u){}", regex::escape(w))).ok())
            .map(Arc::new);
        CheckedText {
            words: Arc::new(words),
            longest,
            exact,
            candidates,
            bodies,
        }
    }
}

impl std::fmt::Debug for CheckedText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckedText")
            .field("words", &self.words)
            .field("exact", &self.exact)
            .field("candidates", &self.candidates)
            .finish()
    }
}

impl Query for CheckedText {
    fn weight(
        &self,
        scoring: tantivy::query::EnableScoring<'_>,
    ) -> tantivy::Result<Box<dyn tantivy::query::Weight>> {
        Ok(Box::new(CheckedTextWeight {
            text: self.clone(),
            exact: self.exact.as_ref().map(|q| q.weight(scoring)).transpose()?,
            candidates: self
                .candidates
                .as_ref()
                .map(|q| q.weight(scoring))
                .transpose()?,
        }))
    }
}

struct CheckedTextWeight {
    text: CheckedText,
    exact: Option<Box<dyn tantivy::query::Weight>>,
    candidates: Option<Box<dyn tantivy::query::Weight>>,
}

impl CheckedTextWeight {
    /// The matching documents of a segment.
    fn matches(&self, reader: &SegmentReader) -> tantivy::Result<tantivy::BitSet> {
        use tantivy::{DocSet, TERMINATED};
        let t = &self.text;
        let mut out = tantivy::BitSet::with_max_value(reader.max_doc());
        if let Some(w) = &self.exact {
            let mut s = w.scorer(reader, 1.0)?;
            let mut doc = s.doc();
            while doc != TERMINATED {
                out.insert(doc);
                doc = s.advance();
            }
        }
        let Some(candidates) = &self.candidates else {
            return Ok(out);
        };
        let internal = |e: String| tantivy::TantivyError::InternalError(e);
        let (store, rows) = match &t.bodies {
            StoredBodies::Documents(record) => (Some((reader.get_store_reader(2)?, *record)), None),
            StoredBodies::Rows { rows, templates } => (
                None,
                Some(RowSource {
                    slot: reader.fast_fields().u64("slot")?,
                    rows: rows.clone(),
                    templates: templates.clone(),
                }),
            ),
        };
        let mut s = candidates.scorer(reader, 1.0)?;
        let mut doc = s.doc();
        while doc != TERMINATED {
            if out.contains(doc) {
                doc = s.advance();
                continue;
            }
            let body = match (&store, &rows) {
                (_, Some(rows)) => rows.body(doc).map_err(|e| internal(e.to_string()))?,
                (Some((store, record)), None) => {
                    let d: TantivyDocument = store.get(doc)?;
                    let row = d
                        .get_first(*record)
                        .and_then(|v| v.as_bytes())
                        .ok_or_else(|| internal("log document without record".into()))?;
                    codec::decode_body(row).map_err(|e| internal(e.to_string()))?
                }
                (None, None) => return Err(internal("no stored bodies".into())),
            };
            let possible = match &body {
                crate::model::AnyValue::String(b) if b.is_ascii() => {
                    t.longest.as_ref().is_none_or(|l| l.is_match(b.as_bytes()))
                }
                _ => true,
            };
            if possible && super::matcher::holds_phrase(&tokenize(&body_text(&body)), &t.words) {
                out.insert(doc);
            }
            doc = s.advance();
        }
        Ok(out)
    }
}

impl tantivy::query::Weight for CheckedTextWeight {
    fn scorer(
        &self,
        reader: &SegmentReader,
        boost: Score,
    ) -> tantivy::Result<Box<dyn tantivy::query::Scorer>> {
        let docs = tantivy::query::BitSetDocSet::from(self.matches(reader)?);
        Ok(Box::new(tantivy::query::ConstScorer::new(docs, boost)))
    }

    fn explain(
        &self,
        reader: &SegmentReader,
        doc: DocId,
    ) -> tantivy::Result<tantivy::query::Explanation> {
        if self.matches(reader)?.contains(doc) {
            Ok(tantivy::query::Explanation::new("CheckedText", 1.0))
        } else {
            Err(tantivy::TantivyError::InvalidArgument(format!(
                "document {doc} does not match"
            )))
        }
    }
}

fn range_query(field: Field, lower: Bound<u64>, upper: Bound<u64>) -> Box<dyn Query> {
    let t = |v: u64| Term::from_field_u64(field, v);
    match (lower, upper) {
        (Bound::Unbounded, Bound::Unbounded) => Box::new(AllQuery),
        (lo, hi) => Box::new(RangeQuery::new(lo.map(t), hi.map(t))),
    }
}

fn write_atomically(dir: &Path, name: &str, data: &[u8]) -> Result<(), StorageError> {
    use std::io::Write;
    let tmp = dir.join(format!("{name}.tmp"));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, dir.join(name))?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

/// One pass over the matches of a partition: total, histogram and the
/// newest `limit` records before the cursor.
struct PageCollector {
    limit: usize,
    cursor: Option<LogCursor>,
    buckets: Option<Buckets>,
}

struct PageFruit {
    total: u64,
    histogram: Vec<[u64; 7]>,
    top: Vec<(LogCursor, DocAddress)>,
}

struct PageSegment {
    segment: SegmentOrdinal,
    time: Column<u64>,
    id: Column<u64>,
    severity: Column<u64>,
    limit: usize,
    cursor: Option<LogCursor>,
    buckets: Option<Buckets>,
    total: u64,
    histogram: Vec<[u64; 7]>,
    /// Min-heap of the best `limit` hits so far.
    top: std::collections::BinaryHeap<std::cmp::Reverse<(LogCursor, DocId)>>,
}

impl Collector for PageCollector {
    type Fruit = PageFruit;
    type Child = PageSegment;

    fn for_segment(
        &self,
        segment: SegmentOrdinal,
        reader: &SegmentReader,
    ) -> tantivy::Result<PageSegment> {
        let ff = reader.fast_fields();
        Ok(PageSegment {
            segment,
            time: ff.u64("time")?,
            id: ff.u64("id")?,
            severity: ff.u64("severity_number")?,
            limit: self.limit,
            cursor: self.cursor,
            buckets: self.buckets,
            total: 0,
            histogram: vec![[0; 7]; self.buckets.map_or(0, |b| b.count)],
            top: Default::default(),
        })
    }

    fn requires_scoring(&self) -> bool {
        false
    }

    fn merge_fruits(&self, fruits: Vec<PageFruit>) -> tantivy::Result<PageFruit> {
        let mut out = PageFruit {
            total: 0,
            histogram: vec![[0; 7]; self.buckets.map_or(0, |b| b.count)],
            top: Vec::new(),
        };
        for f in fruits {
            out.total += f.total;
            for (h, g) in out.histogram.iter_mut().zip(&f.histogram) {
                for (a, b) in h.iter_mut().zip(g) {
                    *a += b;
                }
            }
            out.top.extend(f.top);
        }
        out.top.sort_by_key(|b| std::cmp::Reverse(b.0));
        out.top.truncate(self.limit + 1);
        Ok(out)
    }
}

impl SegmentCollector for PageSegment {
    type Fruit = PageFruit;

    fn collect(&mut self, doc: DocId, _score: Score) {
        let time = self.time.first(doc).unwrap_or(0);
        self.total += 1;
        if let Some(b) = self.buckets {
            if let Some(i) = b.index(time) {
                let sev = self.severity.first(doc).unwrap_or(0);
                self.histogram[i][severity_class(sev as i64)] += 1;
            }
        }
        if self.limit == 0 {
            return;
        }
        let c = LogCursor {
            time_ns: time,
            id: self.id.first(doc).unwrap_or(0),
        };
        if self.cursor.is_some_and(|cur| c >= cur) {
            return;
        }
        // One more than the limit tells whether another page follows.
        if self.top.len() <= self.limit {
            self.top.push(std::cmp::Reverse((c, doc)));
        } else if let Some(min) = self.top.peek() {
            if c > min.0 .0 {
                self.top.pop();
                self.top.push(std::cmp::Reverse((c, doc)));
            }
        }
    }

    fn harvest(self) -> PageFruit {
        let segment = self.segment;
        PageFruit {
            total: self.total,
            histogram: self.histogram,
            top: self
                .top
                .into_iter()
                .map(|std::cmp::Reverse((c, d))| (c, DocAddress::new(segment, d)))
                .collect(),
        }
    }
}

/// Collects the addresses of every matching live document, in segment and
/// document order (the order the document store reads fastest).
struct DocIds;

impl Collector for DocIds {
    type Fruit = Vec<DocAddress>;
    type Child = DocIdsSegment;

    fn for_segment(
        &self,
        segment: SegmentOrdinal,
        _reader: &SegmentReader,
    ) -> tantivy::Result<DocIdsSegment> {
        Ok(DocIdsSegment(segment, Vec::new()))
    }

    fn requires_scoring(&self) -> bool {
        false
    }

    fn merge_fruits(&self, fruits: Vec<Vec<DocAddress>>) -> tantivy::Result<Vec<DocAddress>> {
        let mut out: Vec<DocAddress> = fruits.into_iter().flatten().collect();
        out.sort_unstable();
        Ok(out)
    }
}

struct DocIdsSegment(SegmentOrdinal, Vec<DocAddress>);

impl SegmentCollector for DocIdsSegment {
    type Fruit = Vec<DocAddress>;

    fn collect(&mut self, doc: DocId, _score: Score) {
        self.1.push(DocAddress::new(self.0, doc));
    }

    fn harvest(self) -> Vec<DocAddress> {
        self.1
    }
}

impl StoreLifecycle for LogIndex {
    fn durable_seq(&self) -> u64 {
        self.inner.durable.load(Ordering::SeqCst)
    }

    fn flush(&self) -> Result<(), StorageError> {
        self.inner.commit_round(false)
    }

    fn stats(&self) -> StoreStats {
        let pending = self.inner.pending.read();
        let records = self
            .inner
            .parts
            .read()
            .values()
            .map(|p| p.reader.searcher().num_docs())
            .sum::<u64>()
            + pending.len() as u64;
        StoreStats {
            records,
            disk_bytes: self.inner.disk_bytes(),
        }
    }

    fn close(&self) -> Result<(), StorageError> {
        *self.inner.stop.lock() = true;
        self.inner.wake.notify_all();
        if let Some(t) = self.thread.lock().take() {
            if t.join().is_err() {
                tracing::error!("the log index commit thread panicked");
            }
        }
        self.inner.commit_round(true)
    }
}

impl LogStore for LogIndex {
    fn write(&self, seq: u64, records: Vec<LogRecord>) -> Result<(), StorageError> {
        self.inner.write(seq, records)
    }

    fn search(&self, s: &LogSearch) -> Result<LogPage, StorageError> {
        self.inner.search(s)
    }

    fn subscribe(&self) -> TailReceiver {
        self.inner.tail.subscribe()
    }

    fn scan(
        &self,
        q: &LogScan,
        sink: &mut dyn FnMut(LogChunk) -> bool,
    ) -> Result<ScanStats, StorageError> {
        self.inner.scan(q, sink)
    }
}

impl Drop for LogIndex {
    fn drop(&mut self) {
        *self.inner.stop.lock() = true;
        self.inner.wake.notify_all();
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::suite;

    fn opts() -> LogIndexOptions {
        LogIndexOptions {
            partition: Duration::from_secs(3600),
            commit_interval: Duration::from_millis(50),
            retention: None,
            writer_memory_bytes: 16 << 20,
            ..Default::default()
        }
    }

    /// Each phrase finds what the reference matcher finds in `all` (at
    /// least one record, all on one page), newest first.
    fn assert_phrases_match(store: &LogIndex, all: &[crate::model::LogRecord], phrases: &[&str]) {
        for q in phrases {
            let f = LogFilter::Phrase(q.to_string());
            let want: Vec<_> = all
                .iter()
                .rev()
                .filter(|r| crate::storage::logs::matches(&f, r))
                .collect();
            let page = store
                .search(&LogSearch::new(f, 0, u64::MAX, MAX_PAGE))
                .unwrap();
            assert!(!want.is_empty(), "{q}");
            let got: Vec<_> = page.records.iter().map(|r| &r.record).collect();
            assert_eq!(got, want, "{q}");
        }
    }

    #[test]
    fn passes_the_shared_suite() {
        let dir = tempfile::tempdir().unwrap();
        let store = LogIndex::open(dir.path(), opts()).unwrap();
        suite::log_store(&store);
        store.close().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = LogIndex::open(dir.path(), opts()).unwrap();
        suite::log_scans(&store);
        store.close().unwrap();
    }

    #[test]
    fn a_partition_with_another_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let part = dir.path().join(Partition::dir_name(0, 3_600_000_000_000));
        std::fs::create_dir_all(&part).unwrap();
        let mut b = Schema::builder();
        b.add_text_field("something", tantivy::schema::TEXT);
        Index::create_in_dir(&part, b.build()).unwrap();
        let err = LogIndex::open(dir.path(), opts()).err().expect("refused");
        assert!(err.to_string().contains("unknown schema"), "{err}");
        // Every field of ours and one more: refused too.
        std::fs::remove_dir_all(&part).unwrap();
        std::fs::create_dir_all(&part).unwrap();
        let mut b = Schema::builder();
        for (_, e) in schema().0.fields() {
            b.add_field(e.clone());
        }
        b.add_text_field("extra", tantivy::schema::TEXT);
        Index::create_in_dir(&part, b.build()).unwrap();
        let err = LogIndex::open(dir.path(), opts()).err().expect("refused");
        assert!(err.to_string().contains("unknown schema"), "{err}");
    }

    #[test]
    fn indexes_of_earlier_formats_are_written_and_searched() {
        // Before templates and row blocks (14 fields), and before row
        // blocks (15 fields, rows in the document store).
        for (fields, templated) in [(14, false), (15, true)] {
            let dir = tempfile::tempdir().unwrap();
            let hour = 3_600_000_000_000u64;
            let part = dir.path().join(Partition::dir_name(hour, hour));
            std::fs::create_dir_all(&part).unwrap();
            let mut b = Schema::builder();
            let (full, _) = schema();
            for (_, e) in full.fields().take(fields) {
                b.add_field(e.clone());
            }
            Index::create_in_dir(&part, b.build()).unwrap();
            let all: Vec<crate::model::LogRecord> = (0..300u64)
                .map(|n| {
                    let body =
                        format!("Connection reset by peer after {}ms id={}", n % 9, n * 7919);
                    suite::log(hour + n, "a", &body, None)
                })
                .collect();
            for restart in [false, true] {
                let store = LogIndex::open(dir.path(), opts()).unwrap();
                if !restart {
                    store.write(1, all.clone()).unwrap();
                    store.flush().unwrap();
                }
                let id = format!("{}", 5 * 7919);
                assert_phrases_match(
                    &store,
                    &all,
                    &["connection reset", "after 3ms", "reset", &id],
                );
                store.close().unwrap();
            }
            assert_eq!(part.join(template::FILE).exists(), templated);
            assert!(!part.join(rows::FILE).exists());
        }
    }

    #[test]
    fn bodies_beyond_the_template_limit_are_indexed_word_by_word() {
        let dir = tempfile::tempdir().unwrap();
        let hour = 3_600_000_000_000u64;
        let words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot"];
        let all: Vec<crate::model::LogRecord> = (0..600u64)
            .map(|n| {
                let w = words[(n % 6) as usize];
                let body = format!("step {w} done in {}ms on node{}", n % 13, n % 3);
                suite::log(hour + n, "a", &body, None)
            })
            .collect();
        let opts = LogIndexOptions {
            max_templates: 2,
            ..opts()
        };
        let check = |store: &LogIndex| {
            let queries = [
                "step",
                "charlie done",
                "foxtrot done in 5ms",
                "alpha",
                "in 7ms on",
            ];
            assert_phrases_match(store, &all, &queries);
        };
        let store = LogIndex::open(dir.path(), opts.clone()).unwrap();
        store.write(1, all.clone()).unwrap();
        store.flush().unwrap();
        check(&store);
        let p = store.inner.parts.read().values().next().unwrap().clone();
        assert_eq!(p.templates.read().len(), 2);
        // Four of the six shapes went word by word.
        let searcher = p.reader.searcher();
        let by_postings = searcher
            .search(
                &TermQuery::new(
                    Term::from_field_text(store.inner.fields.body, "step"),
                    IndexRecordOption::Basic,
                ),
                &Count,
            )
            .unwrap();
        assert_eq!(by_postings, 400);
        store.close().unwrap();
        let store = LogIndex::open(dir.path(), opts).unwrap();
        check(&store);
        store.close().unwrap();
    }

    #[test]
    fn severity_filters_match_the_reference_matcher() {
        let dir = tempfile::tempdir().unwrap();
        let hour = 3_600_000_000_000u64;
        let texts = ["", "INFO", "Warning", "error", "custom", "FATAL"];
        let all: Vec<crate::model::LogRecord> = (0..210i64)
            .map(|n| {
                let mut r = suite::log(hour + n as u64, ["a", "b"][n as usize % 2], "x", None);
                r.severity_number = (n % 35) as i32 - 3;
                r.severity_text = texts[(n % 6) as usize].into();
                r
            })
            .collect();
        let store = LogIndex::open(dir.path(), opts()).unwrap();
        store.write(1, all.clone()).unwrap();
        store.flush().unwrap();
        let values = super::super::SEVERITY_CLASSES
            .iter()
            .copied()
            .chain(["warning", "custom", "WARN", "nope"]);
        for v in values {
            let f = LogFilter::Term {
                field: LogField::Severity,
                value: v.into(),
            };
            let want = all
                .iter()
                .filter(|r| crate::storage::logs::matches(&f, r))
                .count();
            let page = store.search(&LogSearch::new(f, 0, u64::MAX, 0)).unwrap();
            assert_eq!(page.total, want as u64, "{v}");
        }
        // Every record comes back whole, before and after a restart: each
        // has its own shared part (severity number and text, service).
        let check = |store: &LogIndex, reopened: bool| {
            let page = store
                .search(&LogSearch::new(LogFilter::All, 0, u64::MAX, 1000))
                .unwrap();
            let mut got: Vec<_> = page.records.into_iter().map(|h| h.record).collect();
            got.reverse();
            assert_eq!(got, all, "reopened: {reopened}");
        };
        check(&store, false);
        store.close().unwrap();
        let store = LogIndex::open(dir.path(), opts()).unwrap();
        check(&store, true);
        store.close().unwrap();
    }

    #[test]
    fn body_analyzer_keeps_the_positions_of_block_words() {
        let long = "y".repeat(crate::storage::logs::MAX_TOKEN_BYTES);
        let text = format!("GET Order ORD-123456 took 12ms {long} Ünïcode end");
        let mut t = BodyTokenizer;
        let mut s = t.token_stream(&text);
        let mut got = Vec::new();
        while s.advance() {
            let tok = s.token();
            got.push((
                tok.text.clone(),
                tok.position,
                &text[tok.offset_from..tok.offset_to],
            ));
        }
        // "123456" is a block word: skipped, its position kept; the long
        // word is dropped as tokenize() drops it, without a position.
        assert_eq!(
            got,
            vec![
                ("get".to_string(), 0, "GET"),
                ("order".to_string(), 1, "Order"),
                ("ord".to_string(), 2, "ORD"),
                ("took".to_string(), 4, "took"),
                ("12ms".to_string(), 5, "12ms"),
                ("ünïcode".to_string(), 6, "Ünïcode"),
                ("end".to_string(), 7, "end"),
            ]
        );
        let words = tokenize(&text);
        assert_eq!(words.len(), 8);
        assert_eq!(words[3], "123456");
    }

    #[test]
    fn body_searches_match_the_reference_matcher() {
        use crate::model::AnyValue;
        let dir = tempfile::tempdir().unwrap();
        let hour = 3_600_000_000_000u64;
        // Three blocks and more: unique ids, durations that repeat within
        // or across blocks, mixed case, a structured body with a number;
        // templates that differ in a literal word or in case, and bodies
        // too long for a template (indexed word by word).
        let make = |n: u64| {
            let body = match n % 7 {
                3 => format!(
                    "Connection reset by peer {} after {}ms",
                    ["alice", "bob"][(n % 2) as usize],
                    n % 40
                ),
                4 if n.is_multiple_of(3) => format!(
                    "connection RESET by peer alice after {}ms{}",
                    n % 40,
                    " pad".repeat(if n.is_multiple_of(2) { 1100 } else { 1 })
                ),
                _ => format!(
                    "GET /items/{} took {}ms req={:016x} Code=ABC{:05}",
                    n * 7919 % 100_003,
                    n % 50,
                    n.wrapping_mul(0x9E37_79B9_7F4A_7C15),
                    n % 3
                ),
            };
            let mut r = suite::log(hour + n, ["a", "b"][(n % 2) as usize], &body, None);
            if n % 1000 == 5 {
                r.body = AnyValue::Map(vec![("order".into(), AnyValue::Int(900_000 + n as i64))]);
            }
            r
        };
        let all: Vec<crate::model::LogRecord> = (0..10_000).map(make).collect();
        let queries = [
            LogFilter::Text(format!(
                "{:016x}",
                4321u64.wrapping_mul(0x9E37_79B9_7F4A_7C15)
            )),
            LogFilter::Text(format!("{}", 4321 * 7919 % 100_003)),
            LogFilter::Phrase("took 17ms".into()),
            LogFilter::Phrase("took 17ms req".into()),
            LogFilter::Text("abc00002".into()),
            LogFilter::Text("ABC00001".into()),
            LogFilter::Text("907005".into()),
            LogFilter::Text("99999999".into()),
            LogFilter::Not(Box::new(LogFilter::Text("abc00001".into()))),
            LogFilter::And(vec![
                LogFilter::Text("23ms".into()),
                LogFilter::Term {
                    field: LogField::Service,
                    value: "b".into(),
                },
            ]),
            LogFilter::Or(vec![
                LogFilter::Text(format!("{:016x}", 7u64.wrapping_mul(0x9E37_79B9_7F4A_7C15))),
                LogFilter::Text("abc00000".into()),
            ]),
            LogFilter::Text("connection".into()),
            LogFilter::Text("GET".into()),
            LogFilter::Phrase("connection reset by peer".into()),
            LogFilter::Phrase("peer alice after".into()),
            LogFilter::Phrase("after 17ms".into()),
            LogFilter::Phrase("reset by peer bob after 17ms".into()),
            LogFilter::Phrase("17ms pad".into()),
            LogFilter::Phrase("items 1234".into()),
            LogFilter::Phrase("reset peer".into()),
            LogFilter::Not(Box::new(LogFilter::Text("reset".into()))),
            LogFilter::And(vec![
                LogFilter::Text("pad".into()),
                LogFilter::Text("alice".into()),
            ]),
        ];
        let check = |store: &LogIndex, upto: usize| {
            for q in &queries {
                let want: Vec<u64> = (0..upto)
                    .filter(|i| crate::storage::logs::matches(q, &all[*i]))
                    .map(|i| all[i].time_ns)
                    .collect();
                let mut s = LogSearch::new(q.clone(), 0, u64::MAX, MAX_PAGE);
                let mut got = Vec::new();
                let mut total = None;
                loop {
                    let page = store.search(&s).unwrap();
                    total.get_or_insert(page.total);
                    got.extend(page.records.iter().map(|r| r.record.time_ns));
                    match page.next_cursor {
                        Some(c) => s.cursor = Some(c),
                        None => break,
                    }
                }
                got.sort_unstable();
                assert_eq!(total, Some(want.len() as u64), "{q:?}");
                assert_eq!(got, want, "{q:?}");
            }
        };
        {
            let store = LogIndex::open(dir.path(), opts()).unwrap();
            for (seq, chunk) in all[..7000].chunks(1000).enumerate() {
                store.write(seq as u64 + 1, chunk.to_vec()).unwrap();
            }
            // From memory before the commit, then from the index.
            check(&store, 7000);
            store.flush().unwrap();
            check(&store, 7000);
            store.close().unwrap();
        }
        // After a restart block numbers go on; the filters are read back.
        let store = LogIndex::open(dir.path(), opts()).unwrap();
        check(&store, 7000);
        for (seq, chunk) in all[7000..].chunks(1000).enumerate() {
            store.write(seq as u64 + 8, chunk.to_vec()).unwrap();
        }
        store.flush().unwrap();
        check(&store, 10_000);
        let usage = store.space_usage().unwrap();
        assert!(usage[&("blooms".to_string(), "body".to_string())] > 0);
        assert!(usage[&("templates".to_string(), "body".to_string())] > 0);
        // The records with a template hold only their variable words in
        // the body postings: a literal word has no postings of its own
        // except in the records too long for a template.
        let searcher = store
            .inner
            .parts
            .read()
            .values()
            .next()
            .unwrap()
            .reader
            .searcher();
        let by_postings = searcher
            .search(
                &TermQuery::new(
                    Term::from_field_text(store.inner.fields.body, "connection"),
                    IndexRecordOption::Basic,
                ),
                &Count,
            )
            .unwrap();
        let long = (0..10_000u64)
            .filter(|n| n % 7 == 4 && n.is_multiple_of(6))
            .count();
        assert_eq!(by_postings, long);
        store.close().unwrap();
    }

    #[test]
    fn restart_keeps_records_and_durable_seq() {
        let dir = tempfile::tempdir().unwrap();
        let hour = 3_600_000_000_000u64;
        {
            let store = LogIndex::open(dir.path(), opts()).unwrap();
            store
                .write(
                    5,
                    vec![
                        suite::log(hour + 1, "a", "one", None),
                        suite::log(3 * hour + 1, "a", "two", None),
                    ],
                )
                .unwrap();
            store.flush().unwrap();
            assert_eq!(store.durable_seq(), 5);
            assert_eq!(store.partitions().len(), 2, "two hour partitions");
            store.close().unwrap();
        }
        let store = LogIndex::open(dir.path(), opts()).unwrap();
        assert_eq!(store.durable_seq(), 5);
        let page = store
            .search(&LogSearch::new(LogFilter::All, 0, u64::MAX, 10))
            .unwrap();
        assert_eq!(page.total, 2);
        // A search limited to one partition's range sees only it.
        let page = store
            .search(&LogSearch::new(LogFilter::All, 3 * hour, 4 * hour, 10))
            .unwrap();
        assert_eq!(page.records.len(), 1);
        assert_eq!(
            page.records[0].record.body,
            crate::model::AnyValue::String("two".into())
        );
    }

    #[test]
    fn replay_after_a_crash_does_not_duplicate() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = LogIndex::open(dir.path(), opts()).unwrap();
            store
                .write(1, vec![suite::log(10, "a", "x", None)])
                .unwrap();
            store
                .write(2, vec![suite::log(20, "a", "y", None)])
                .unwrap();
            // Committed to the index but the durable file says 1: as after a
            // crash between the partition commit and the durable file.
            store.inner.commit_round(true).unwrap();
            write_atomically(dir.path(), DURABLE_FILE, b"1").unwrap();
            // Dropped without `close`: no final commit, as in a crash.
            drop(store);
        }
        let store = LogIndex::open(dir.path(), opts()).unwrap();
        assert_eq!(store.durable_seq(), 1);
        // The WAL replays seq 2.
        store
            .write(2, vec![suite::log(20, "a", "y", None)])
            .unwrap();
        store.flush().unwrap();
        let page = store
            .search(&LogSearch::new(LogFilter::All, 0, u64::MAX, 10))
            .unwrap();
        assert_eq!(
            page.records
                .iter()
                .map(|r| r.record.time_ns)
                .collect::<Vec<_>>(),
            vec![20, 10]
        );
        assert_eq!(store.durable_seq(), 2);
    }

    #[test]
    fn retention_deletes_old_partitions() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = opts();
        o.retention = Some(Duration::from_secs(2 * 3600));
        let store = LogIndex::open(dir.path(), o).unwrap();
        let now = now_ns();
        let hour = 3_600_000_000_000u64;
        // Too old to keep at all: not written.
        store
            .write(1, vec![suite::log(now - 10 * hour, "a", "ancient", None)])
            .unwrap();
        store
            .write(2, vec![suite::log(now, "a", "fresh", None)])
            .unwrap();
        // Not searchable before the commit either.
        let page = store
            .search(&LogSearch::new(LogFilter::All, 0, u64::MAX, 10))
            .unwrap();
        assert_eq!(page.total, 1, "only the fresh record");
        store.flush().unwrap();
        assert_eq!(store.partitions().len(), 1);
        // A partition made when the record was still in retention, found on open.
        let old_dir = dir
            .path()
            .join(Partition::dir_name(hour, 3_600_000_000_000));
        drop(Partition::open(&old_dir, hour, 2 * hour, &opts(), &BlockCache::new(0)).unwrap());
        store.close().unwrap();
        drop(store);
        let store = LogIndex::open(dir.path(), opts_with_retention()).unwrap();
        assert!(!old_dir.exists(), "the old partition directory is deleted");
        assert_eq!(store.partitions().len(), 1);
        let page = store
            .search(&LogSearch::new(LogFilter::All, 0, u64::MAX, 10))
            .unwrap();
        assert_eq!(page.total, 1);
    }

    fn opts_with_retention() -> LogIndexOptions {
        let mut o = opts();
        o.retention = Some(Duration::from_secs(2 * 3600));
        o
    }
}
