//! The persistent metrics store: the [`Core`] head and index, plus Parquet
//! files per time partition.
//!
//! Layout under the store directory:
//!
//! - `p<partition start ms>/<generation>.samples.parquet`: rows sorted by
//!   (series, t), zstd. Columns: `series` (u32, file-local series number,
//!   DELTA_BINARY_PACKED); `dt`, the milliseconds since the series'
//!   previous sample (its first row holds the timestamp itself); and the
//!   value. A series whose values are all decimals of at most 6 digits
//!   (counters, most gauges) stores the zigzag difference of its integer
//!   mantissas in `vd` (the first row holds the mantissa) with the digit
//!   count in `scale` (RLE); any other series stores floats in `vf`.
//!   `dt`, `vd` and `vf` are BYTE_STREAM_SPLIT, so the mostly-zero high
//!   bytes of small differences compress to almost nothing and zstd's
//!   entropy coder sees the informative low bytes on their own: a regular
//!   scrape costs next to nothing for its timestamp, a counter about as
//!   many bits as its increments carry. Values round-trip bit for bit.
//!   Older layouts (absolute `t` with mantissas `vi`, or one float column
//!   `v`) are still read;
//! - `p<partition>/<generation>.series.parquet`: the file's series table,
//!   one row per series (`labels` as JSON, `min_t`, `max_t`, `rows`), so
//!   labels are stored once per file, never per sample. From the row
//!   counts a read selects exactly the rows of the series it wants, and
//!   the samples file's offset index lets it skip every page holding none
//!   of them; the files a query touches are read in parallel;
//! - `MANIFEST.json`: the live files, the WAL sequence number they cover
//!   (`durable_seq`), the running totals of delta-fed series at that point,
//!   and metric metadata. It is replaced atomically (write, fsync, rename),
//!   so a crash leaves either the old or the new set of files.
//!
//! A flush moves the whole head into files (one per partition it touches)
//! and then publishes the manifest; head data above `durable_seq` is
//! replayed from the WAL on start. Retention deletes whole partitions;
//! compaction merges the files of a partition once there are more than
//! `compaction_files`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use arrow_array::{
    Array, ArrayRef, Float64Array, Int64Array, Int8Array, RecordBatch, StringArray, UInt32Array,
};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::arrow_reader::{
    ArrowReaderOptions, ParquetRecordBatchReaderBuilder, RowSelection, RowSelector,
};
use parquet::arrow::{ArrowWriter, ProjectionMask};
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::metadata::PageIndexPolicy;
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;
use serde::{Deserialize, Serialize};

use super::core::{merge_runs, now_ms, Core, DeltaState, FileReader, FileRef, Frozen};
use super::decimal::{self, mantissa};
use super::guard::SeriesGuard;
use super::{CardinalityStats, MetricsOptions};
use crate::model::{LabelMatcher, Labels, Metric, MetricMeta, Sample, Series, METRIC_NAME};
use crate::storage::varint::{unzigzag, zigzag};
use crate::storage::{MetricStore, SeriesSource, StorageError, StoreLifecycle, StoreStats};

const MANIFEST: &str = "MANIFEST.json";

fn be(e: impl std::fmt::Display) -> StorageError {
    StorageError::Backend(format!("metrics parquet: {e}"))
}

#[derive(Serialize, Deserialize, Default)]
struct Manifest {
    version: u32,
    durable_seq: u64,
    files: Vec<ManifestFile>,
    deltas: Vec<ManifestDelta>,
    meta: Vec<ManifestMeta>,
}

#[derive(Serialize, Deserialize, Clone)]
struct ManifestFile {
    /// Relative path of the samples file, without the `.samples.parquet` suffix.
    name: String,
    partition: i64,
    min_t: i64,
    max_t: i64,
    samples: u64,
    bytes: u64,
    generation: u64,
}

#[derive(Serialize, Deserialize)]
struct ManifestDelta {
    labels: Labels,
    total: f64,
    last_ns: u64,
}

#[derive(Serialize, Deserialize)]
struct ManifestMeta {
    metric: String,
    kind: String,
    help: String,
    unit: String,
}

struct Reader {
    dir: PathBuf,
    /// Rows decoded per batch.
    batch_rows: usize,
}

impl Reader {
    fn new(dir: &Path) -> Self {
        Reader {
            dir: dir.to_path_buf(),
            batch_rows: 64 * 1024,
        }
    }
}

impl FileReader for Reader {
    fn read_into(
        &self,
        file: &FileRef,
        wanted: &[u32],
        start: i64,
        end: i64,
        out: &mut [&mut Vec<Sample>],
    ) -> Result<usize, StorageError> {
        if out.len() != wanted.len() {
            return Err(be("one output per wanted series expected"));
        }
        let path = self.dir.join(format!("{}.samples.parquet", file.name));
        let f = File::open(&path)?;
        let mut builder = ParquetRecordBatchReaderBuilder::try_new_with_options(
            f,
            ArrowReaderOptions::new().with_offset_index_policy(if file.offsets.is_some() {
                PageIndexPolicy::Optional
            } else {
                PageIndexPolicy::Skip
            }),
        )
        .map_err(be)?
        .with_batch_size(self.batch_rows);
        let mut added = 0usize;
        let Some(off) = &file.offsets else {
            // Without row counts the file is read whole and its `series`
            // column says whose each row is.
            let mut slot = vec![usize::MAX; file.ids.len()];
            for (k, &l) in wanted.iter().enumerate() {
                if let Some(x) = slot.get_mut(l as usize) {
                    *x = k;
                }
            }
            let reader = builder.build().map_err(be)?;
            let (mut cur, mut t, mut m) = (u32::MAX, 0i64, 0i64);
            for batch in reader {
                let batch = batch.map_err(be)?;
                let cols = columns(&batch)?;
                let series = cols
                    .series
                    .ok_or_else(|| be("samples file without series"))?;
                for i in 0..batch.num_rows() {
                    let local = series.value(i);
                    if local != cur {
                        cur = local;
                        (t, m) = (0, 0);
                    }
                    let Some(&k) = slot.get(local as usize).filter(|k| **k != usize::MAX) else {
                        continue;
                    };
                    let (t_ms, v) = cols.sample(i, &mut t, &mut m);
                    if t_ms >= start && t_ms <= end {
                        out[k].push(Sample { t_ms, v });
                        added += 1;
                    }
                }
            }
            return Ok(added);
        };
        // Only the rows of the wanted series (pages holding none are not
        // even decompressed), and not the `series` column: the row counts
        // say where each series' rows end.
        let mut ranges: Vec<(u64, u64)> = Vec::with_capacity(wanted.len());
        let mut pos = 0u64;
        for &l in wanted {
            let (Some(&a), Some(&b)) = (off.get(l as usize), off.get(l as usize + 1)) else {
                return Err(be(format!("series {l} beyond the file's series table")));
            };
            if a < pos || b < a {
                return Err(be("wanted series must ascend and row offsets too"));
            }
            ranges.push((a, b));
            pos = b;
        }
        let counts: Vec<usize> = ranges.iter().map(|&(a, b)| (b - a) as usize).collect();
        // Only the row groups holding wanted rows are opened at all (each
        // column of each costs a decompressor); the selection counts rows
        // of those groups only.
        let starts: Vec<u64> = std::iter::once(0)
            .chain(
                builder
                    .metadata()
                    .row_groups()
                    .iter()
                    .scan(0u64, |acc, rg| {
                        *acc += rg.num_rows().max(0) as u64;
                        Some(*acc)
                    }),
            )
            .collect();
        let groups = starts.len() - 1;
        let group_of = |row: u64| starts.partition_point(|&s| s <= row).saturating_sub(1);
        let mut used = vec![false; groups];
        for &(a, b) in ranges.iter().filter(|r| r.1 > r.0) {
            if b > starts[groups] {
                return Err(be("samples file shorter than its series table"));
            }
            for u in &mut used[group_of(a)..=group_of(b - 1)] {
                *u = true;
            }
        }
        // Rows of unused groups before each group.
        let mut skipped = Vec::with_capacity(groups);
        let mut acc = 0u64;
        for g in 0..groups {
            skipped.push(acc);
            if !used[g] {
                acc += starts[g + 1] - starts[g];
            }
        }
        let mut sel: Vec<RowSelector> = Vec::new();
        let mut pos = 0u64;
        for &(a, b) in ranges.iter().filter(|r| r.1 > r.0) {
            let at = a - skipped[group_of(a)];
            if at > pos {
                sel.push(RowSelector::skip((at - pos) as usize));
            }
            sel.push(RowSelector::select((b - a) as usize));
            pos = at + (b - a);
        }
        let used: Vec<usize> = (0..groups).filter(|&g| used[g]).collect();
        if used.is_empty() {
            return Ok(0);
        }
        // Nor a value column no row of the file uses (files of counters and
        // decimal gauges hold no floats), as the chunk statistics tell.
        let schema = builder.parquet_schema();
        let meta = builder.metadata().clone();
        let unused = |i: usize| {
            meta.row_groups().iter().all(|rg| {
                let nulls = rg.column(i).statistics().and_then(|s| s.null_count_opt());
                nulls == Some(rg.num_rows() as u64)
            })
        };
        let named =
            |name: &str| (0..schema.num_columns()).find(|&i| schema.column(i).name() == name);
        let mut skip: Vec<usize> = named("series").into_iter().collect();
        if let (Some(vd), Some(vf)) = (named("vd"), named("vf")) {
            if unused(vf) {
                skip.push(vf);
            } else if unused(vd) {
                skip.push(vd);
            }
        }
        let leaves: Vec<usize> = (0..schema.num_columns())
            .filter(|i| !skip.contains(i))
            .collect();
        let mask = ProjectionMask::leaves(schema, leaves);
        builder = builder
            .with_projection(mask)
            .with_row_groups(used)
            .with_row_selection(RowSelection::from(sel));
        let reader = builder.build().map_err(be)?;
        // The series being decoded, the rows of it still to come, and its
        // running time and mantissa (the diff columns restart at every
        // series' first row).
        let (mut k, mut left) = (0usize, counts.first().copied().unwrap_or(0));
        let (mut t, mut m) = (0i64, 0i64);
        for batch in reader {
            let batch = batch.map_err(be)?;
            let cols = columns(&batch)?;
            let n = batch.num_rows();
            let mut i = 0;
            while i < n {
                while left == 0 {
                    k += 1;
                    let Some(&c) = counts.get(k) else {
                        return Err(be("samples file longer than its series table"));
                    };
                    left = c;
                    (t, m) = (0, 0);
                }
                let take = left.min(n - i);
                added += cols.decode_run(i, take, &mut t, &mut m, start, end, out[k]);
                i += take;
                left -= take;
            }
        }
        if left > 0 || counts.iter().skip(k + 1).any(|&c| c > 0) {
            return Err(be("samples file shorter than its series table"));
        }
        Ok(added)
    }
}

/// The columns of a samples file, in one of its layouts.
enum Layout<'a> {
    /// Current: `dt` is the time since the series' previous row (the first
    /// row holds the time itself), `vd` the zigzag difference of decimal
    /// mantissas (the first row holds the mantissa), or `vf` a float.
    /// A read may leave out `vd` or `vf` when no row of the file has one.
    Diff {
        dt: &'a Int64Array,
        vd: Option<&'a Int64Array>,
        vf: Option<&'a Float64Array>,
        scale: &'a Int8Array,
    },
    /// Absolute `t` with absolute mantissas `vi` or floats `vf`.
    Decimal {
        t: &'a Int64Array,
        vi: &'a Int64Array,
        vf: &'a Float64Array,
        scale: &'a Int8Array,
    },
    /// The first layout: absolute `t` and one float column `v`.
    Float {
        t: &'a Int64Array,
        v: &'a Float64Array,
    },
}

struct Columns<'a> {
    /// Absent when the read leaves the column out.
    series: Option<&'a UInt32Array>,
    layout: Layout<'a>,
}

impl Columns<'_> {
    /// Decodes rows `i..i + len`, all of one series, appending those in
    /// `[start, end]` to `out`; returns how many it appended. `t` and `m`
    /// carry the running time and mantissa as in [`Columns::sample`].
    #[allow(clippy::too_many_arguments)]
    fn decode_run(
        &self,
        i: usize,
        len: usize,
        t: &mut i64,
        m: &mut i64,
        start: i64,
        end: i64,
        out: &mut Vec<Sample>,
    ) -> usize {
        let before = out.len();
        match &self.layout {
            // A series holds either mantissas or floats in every row: whole
            // runs decode in a loop without per-row checks.
            Layout::Diff { dt, vd, vf, scale } => {
                let dts = &dt.values()[i..i + len];
                let nulls = vd.map_or(len, |vd| {
                    vd.nulls().map_or(0, |n| n.slice(i, len).null_count())
                });
                let (mut tt, mut mm) = (*t, *m);
                if let (0, Some(vd)) = (nulls, vd) {
                    let rows = dts
                        .iter()
                        .zip(&vd.values()[i..i + len])
                        .zip(&scale.values()[i..i + len]);
                    out.extend(rows.map(|((&d, &z), &k)| {
                        tt = tt.wrapping_add(d);
                        mm = mm.wrapping_add(unzigzag(z as u64));
                        Sample {
                            t_ms: tt,
                            v: decimal::decode(mm, k),
                        }
                    }));
                } else if let (true, Some(vf)) = (nulls == len, vf) {
                    out.extend(dts.iter().zip(&vf.values()[i..i + len]).map(|(&d, &v)| {
                        tt = tt.wrapping_add(d);
                        Sample { t_ms: tt, v }
                    }));
                } else {
                    out.extend((i..i + len).map(|r| {
                        let (t_ms, v) = self.sample(r, &mut tt, &mut mm);
                        Sample { t_ms, v }
                    }));
                }
                (*t, *m) = (tt, mm);
            }
            _ => {
                out.extend((i..i + len).map(|r| {
                    let (t_ms, v) = self.sample(r, t, m);
                    Sample { t_ms, v }
                }));
            }
        }
        // Rows are in time order, so only a run at an edge of the range
        // (files partly inside it) has rows to drop.
        let run = &out[before..];
        let inside = |x: &Sample| x.t_ms >= start && x.t_ms <= end;
        if !(run.first().is_none_or(inside) && run.last().is_none_or(inside)) {
            let mut w = before;
            for r in before..out.len() {
                if inside(&out[r]) {
                    out[w] = out[r];
                    w += 1;
                }
            }
            out.truncate(w);
        }
        out.len() - before
    }

    /// Row `i` as `(t, value)`; `t` and `m` carry the series' running time
    /// and mantissa between rows (zero at a series' first row).
    #[inline]
    fn sample(&self, i: usize, t: &mut i64, m: &mut i64) -> (i64, f64) {
        match &self.layout {
            Layout::Diff { dt, vd, vf, scale } => {
                *t = t.wrapping_add(dt.value(i));
                let v = match vd.filter(|vd| !vd.is_null(i)) {
                    Some(vd) => {
                        *m = m.wrapping_add(unzigzag(vd.value(i) as u64));
                        decimal::decode(*m, scale.value(i))
                    }
                    None => vf.map_or(f64::NAN, |vf| vf.value(i)),
                };
                (*t, v)
            }
            Layout::Decimal { t, vi, vf, scale } => {
                let v = if vi.is_null(i) {
                    vf.value(i)
                } else {
                    decimal::decode(vi.value(i), scale.value(i))
                };
                (t.value(i), v)
            }
            Layout::Float { t, v } => (t.value(i), v.value(i)),
        }
    }
}

/// The fewest decimal digits (0 to 6) that represent every value exactly
/// as an integer mantissa, or `None` (NaN, infinities, -0.0, more digits,
/// too large): such a series keeps its float values.
fn decimal_scale(values: &[Sample]) -> Option<i8> {
    // Checked through the integer the file stores, exactly as it is decoded.
    let fits = |v: f64, k: usize| mantissa(v, k).is_some();
    let mut scale = 0usize;
    for x in values {
        while !fits(x.v, scale) {
            scale += 1;
            if scale > decimal::MAX_DIGITS {
                return None;
            }
        }
    }
    // Larger scales found later must still hold for the earlier values.
    values
        .iter()
        .all(|x| fits(x.v, scale))
        .then_some(scale as i8)
}

fn columns(b: &RecordBatch) -> Result<Columns<'_>, StorageError> {
    let bad = || be("unexpected samples file schema");
    let col = |name: &str| b.column_by_name(name).ok_or_else(bad);
    let i64s = |name: &str| -> Result<&Int64Array, StorageError> {
        col(name)?
            .as_any()
            .downcast_ref::<Int64Array>()
            .ok_or_else(bad)
    };
    let f64s = |name: &str| -> Result<&Float64Array, StorageError> {
        col(name)?
            .as_any()
            .downcast_ref::<Float64Array>()
            .ok_or_else(bad)
    };
    let i8s = |name: &str| -> Result<&Int8Array, StorageError> {
        col(name)?
            .as_any()
            .downcast_ref::<Int8Array>()
            .ok_or_else(bad)
    };
    let series = match b.column_by_name("series") {
        Some(c) => Some(c.as_any().downcast_ref::<UInt32Array>().ok_or_else(bad)?),
        None => None,
    };
    let layout = if b.column_by_name("dt").is_some() {
        let vd = b.column_by_name("vd").map(|_| i64s("vd")).transpose()?;
        let vf = b.column_by_name("vf").map(|_| f64s("vf")).transpose()?;
        if vd.is_none() && vf.is_none() {
            return Err(bad());
        }
        Layout::Diff {
            dt: i64s("dt")?,
            vd,
            vf,
            scale: i8s("scale")?,
        }
    } else if b.column_by_name("vi").is_some() {
        Layout::Decimal {
            t: i64s("t")?,
            vi: i64s("vi")?,
            vf: f64s("vf")?,
            scale: i8s("scale")?,
        }
    } else {
        Layout::Float {
            t: i64s("t")?,
            v: f64s("v")?,
        }
    };
    Ok(Columns { series, layout })
}

fn samples_schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("series", DataType::UInt32, false),
        Field::new("dt", DataType::Int64, false),
        Field::new("vd", DataType::Int64, true),
        Field::new("vf", DataType::Float64, true),
        Field::new("scale", DataType::Int8, false),
    ]))
}

fn series_schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("labels", DataType::Utf8, false),
        Field::new("min_t", DataType::Int64, false),
        Field::new("max_t", DataType::Int64, false),
        Field::new("rows", DataType::UInt32, false),
    ]))
}

fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir)?.sync_all()?;
    Ok(())
}

/// Writes `batch` to `path` (via a temporary file, fsynced).
fn write_parquet(
    path: &Path,
    batch: RecordBatch,
    props: WriterProperties,
) -> Result<u64, StorageError> {
    let tmp = path.with_extension("tmp");
    let file = File::create(&tmp)?;
    let mut w = ArrowWriter::try_new(file, batch.schema(), Some(props)).map_err(be)?;
    w.write(&batch).map_err(be)?;
    let file = w.into_inner().map_err(be)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)?;
    Ok(std::fs::metadata(path)?.len())
}

fn samples_props() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(6).unwrap_or_default()))
        .set_dictionary_enabled(false)
        .set_column_encoding(ColumnPath::from("series"), Encoding::DELTA_BINARY_PACKED)
        .set_column_encoding(ColumnPath::from("dt"), Encoding::BYTE_STREAM_SPLIT)
        .set_column_encoding(ColumnPath::from("vd"), Encoding::BYTE_STREAM_SPLIT)
        .set_column_encoding(ColumnPath::from("vf"), Encoding::BYTE_STREAM_SPLIT)
        .set_column_dictionary_enabled(ColumnPath::from("scale"), true)
        .set_max_row_group_row_count(Some(1 << 20))
        .build()
}

fn series_props() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).unwrap_or_default()))
        .build()
}

/// Rows of one file: series (global id, labels, samples sorted by time).
type FileRows = Vec<(u32, Arc<Labels>, Vec<Sample>)>;

/// The Parquet-backed metrics store.
pub struct ParquetMetricStore {
    core: Core,
    dir: PathBuf,
    reader: Reader,
    manifest_lock: parking_lot::Mutex<()>,
}

impl ParquetMetricStore {
    /// Opens (or creates) the store in `dir`, loading the series tables of
    /// every live file.
    pub fn open(
        dir: &Path,
        opts: MetricsOptions,
        guard: Option<Arc<SeriesGuard>>,
    ) -> Result<Self, StorageError> {
        if opts.partition_ms <= 0 {
            return Err(be("partition duration must be positive"));
        }
        std::fs::create_dir_all(dir)?;
        let core = Core::new(opts, guard);
        let manifest: Manifest = match std::fs::read(dir.join(MANIFEST)) {
            Ok(b) => {
                serde_json::from_slice(&b).map_err(|e| be(format!("corrupt manifest: {e}")))?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Manifest::default(),
            Err(e) => return Err(e.into()),
        };
        {
            let mut st = core.state.write();
            let mut max_gen = 0;
            for mf in &manifest.files {
                let (rows, counts) =
                    read_series_table(&dir.join(format!("{}.series.parquet", mf.name)))?;
                let mut ids = Vec::with_capacity(rows.len());
                for (labels, min_t, max_t) in rows {
                    let id = st.get_or_create(labels);
                    let e = &mut st.series[id as usize];
                    e.min_t = e.min_t.min(min_t);
                    e.max_t = e.max_t.max(max_t);
                    ids.push(id);
                }
                st.disk_samples += mf.samples;
                max_gen = max_gen.max(mf.generation);
                st.files.push(Arc::new(FileRef {
                    name: mf.name.clone(),
                    partition: mf.partition,
                    min_t: mf.min_t,
                    max_t: mf.max_t,
                    samples: mf.samples,
                    bytes: mf.bytes,
                    generation: mf.generation,
                    ids,
                    offsets: counts.as_deref().map(offsets),
                }));
            }
            for d in manifest.deltas {
                let id = st.get_or_create(d.labels);
                st.series[id as usize].delta = Some(Box::new(DeltaState {
                    total: d.total,
                    last_ns: d.last_ns,
                }));
            }
            for m in manifest.meta {
                st.meta.insert(
                    m.metric.clone(),
                    MetricMeta {
                        metric: m.metric,
                        kind: m.kind,
                        help: m.help,
                        unit: m.unit,
                    },
                );
            }
            st.last_seq = manifest.durable_seq;
            core.generation.store(max_gen + 1, Ordering::SeqCst);
            core.durable.store(manifest.durable_seq, Ordering::SeqCst);
            if let Some(g) = &core.guard {
                g.register_hashed(
                    st.series
                        .iter()
                        .filter(|e| e.max_t >= now_ms() - g.limits().window_ms)
                        .map(|e| (e.labels.hash(), e.labels.get(METRIC_NAME).unwrap_or(""))),
                    now_ms(),
                );
            }
        }
        Ok(ParquetMetricStore {
            core,
            dir: dir.to_path_buf(),
            reader: Reader::new(dir),
            manifest_lock: parking_lot::Mutex::new(()),
        })
    }

    pub fn core(&self) -> &Core {
        &self.core
    }

    /// Writes the head to disk if `force`, or if it is old or large enough.
    pub fn flush_head(&self, force: bool) -> Result<(), StorageError> {
        let _flush = self.core.flush_lock.lock();
        let opts = &self.core.opts;
        let (frozen, seq, deltas) = {
            let mut st = self.core.state.write();
            let due = force
                || st.head_samples >= opts.head_max_samples
                || st
                    .oldest_unflushed
                    .is_some_and(|t| t.elapsed().as_millis() as i64 >= opts.head_flush_ms);
            let durable = self.core.durable.load(Ordering::SeqCst);
            if st.head_samples == 0 && st.last_seq == durable {
                drop(st);
                return self.maintain();
            }
            if !due && st.head_samples > 0 {
                return Ok(());
            }
            let mut samples = Vec::new();
            for (id, e) in st.series.iter_mut().enumerate() {
                if !e.head.is_empty() {
                    samples.push((id as u32, std::mem::take(&mut e.head)));
                }
            }
            let frozen = Arc::new(Frozen { samples });
            st.frozen.push(frozen.clone());
            let moved = st.head_samples;
            st.head_samples = 0;
            st.disk_samples += moved;
            st.oldest_unflushed = None;
            let deltas: Vec<ManifestDelta> = st
                .series
                .iter()
                .filter_map(|e| {
                    e.delta.as_deref().map(|d| ManifestDelta {
                        labels: e.labels.unpack(),
                        total: d.total,
                        last_ns: d.last_ns,
                    })
                })
                .collect();
            (frozen, st.last_seq, deltas)
        };
        let result = self.write_frozen(&frozen, seq, deltas);
        let mut st = self.core.state.write();
        st.frozen.retain(|f| !Arc::ptr_eq(f, &frozen));
        match result {
            Ok(files) => {
                st.files.extend(files);
                self.core.durable.store(seq, Ordering::SeqCst);
                drop(st);
                self.maintain()
            }
            Err(e) => {
                // Put the samples back so nothing is lost (the WAL still
                // covers them); writes since the freeze are newer.
                for (id, chunk) in &frozen.samples {
                    st.series[*id as usize].head.merge_older(chunk);
                }
                Err(e)
            }
        }
    }

    fn write_frozen(
        &self,
        frozen: &Frozen,
        seq: u64,
        deltas: Vec<ManifestDelta>,
    ) -> Result<Vec<Arc<FileRef>>, StorageError> {
        let part_ms = self.core.opts.partition_ms;
        let mut parts: BTreeMap<i64, FileRows> = BTreeMap::new();
        {
            let st = self.core.state.read();
            for (id, chunk) in &frozen.samples {
                let mut samples = chunk.samples();
                let labels = Arc::new(st.series[*id as usize].labels.unpack());
                // Split off one partition at a time from the end; the
                // oldest (usually the only) piece is moved, not copied.
                while let Some(last) = samples.last() {
                    let p = last.t_ms.div_euclid(part_ms) * part_ms;
                    let i = samples.partition_point(|s| s.t_ms < p);
                    let piece = if i == 0 {
                        std::mem::take(&mut samples)
                    } else {
                        samples.split_off(i)
                    };
                    parts
                        .entry(p)
                        .or_default()
                        .push((*id, labels.clone(), piece));
                }
            }
        }
        let mut new_files = Vec::new();
        for (p, rows) in parts {
            let generation = self.core.generation.fetch_add(1, Ordering::SeqCst);
            new_files.push(Arc::new(self.write_file(p, generation, rows)?));
        }
        self.publish(&new_files, &[], Some((seq, deltas)))?;
        Ok(new_files)
    }

    /// Writes one file pair for partition `p`; rows need not be sorted.
    fn write_file(
        &self,
        p: i64,
        generation: u64,
        mut rows: FileRows,
    ) -> Result<FileRef, StorageError> {
        rows.sort_by(|a, b| a.1.cmp(&b.1));
        let pdir = self.dir.join(format!("p{p}"));
        std::fs::create_dir_all(&pdir)?;
        let unique = self.core.generation.fetch_add(1, Ordering::SeqCst);
        let name = format!("p{p}/{generation:020}-{unique:020}");
        let n: usize = rows.iter().map(|r| r.2.len()).sum();
        let (mut s, mut t) = (Vec::with_capacity(n), Vec::with_capacity(n));
        let (mut vi, mut vf, mut scales) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        let (mut labels, mut mins, mut maxs, mut counts) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut min_t, mut max_t) = (i64::MAX, i64::MIN);
        let mut ids = Vec::with_capacity(rows.len());
        for (local, (id, l, samples)) in rows.iter().enumerate() {
            let scale = decimal_scale(samples);
            let (mut prev_t, mut prev_m) = (0i64, 0i64);
            for x in samples {
                s.push(local as u32);
                t.push(x.t_ms.wrapping_sub(prev_t));
                prev_t = x.t_ms;
                match scale {
                    Some(k) => {
                        // `decimal_scale` checked that every value has one.
                        let m = mantissa(x.v, k as usize).unwrap_or_default();
                        vi.push(Some(zigzag(m.wrapping_sub(prev_m)) as i64));
                        prev_m = m;
                        vf.push(None);
                    }
                    None => {
                        vi.push(None);
                        vf.push(Some(x.v));
                    }
                }
                scales.push(scale.unwrap_or(0));
            }
            let (a, b) = (
                samples.first().map_or(0, |x| x.t_ms),
                samples.last().map_or(0, |x| x.t_ms),
            );
            min_t = min_t.min(a);
            max_t = max_t.max(b);
            labels.push(serde_json::to_string(&**l).map_err(be)?);
            mins.push(a);
            maxs.push(b);
            counts.push(samples.len() as u32);
            ids.push(*id);
        }
        let sb = RecordBatch::try_new(
            samples_schema(),
            vec![
                Arc::new(UInt32Array::from(s)) as ArrayRef,
                Arc::new(Int64Array::from(t)),
                Arc::new(Int64Array::from(vi)),
                Arc::new(Float64Array::from(vf)),
                Arc::new(Int8Array::from(scales)),
            ],
        )
        .map_err(be)?;
        let lb = RecordBatch::try_new(
            series_schema(),
            vec![
                Arc::new(StringArray::from(labels)) as ArrayRef,
                Arc::new(Int64Array::from(mins)),
                Arc::new(Int64Array::from(maxs)),
                Arc::new(UInt32Array::from(counts.clone())),
            ],
        )
        .map_err(be)?;
        let mut bytes = write_parquet(
            &self.dir.join(format!("{name}.samples.parquet")),
            sb,
            samples_props(),
        )?;
        bytes += write_parquet(
            &self.dir.join(format!("{name}.series.parquet")),
            lb,
            series_props(),
        )?;
        sync_dir(&pdir)?;
        Ok(FileRef {
            name,
            partition: p,
            min_t,
            max_t,
            samples: n as u64,
            bytes,
            generation,
            ids,
            offsets: Some(offsets(&counts)),
        })
    }

    /// Writes the manifest: the current files plus `added`, minus
    /// `removed`, with the new durable seq and delta totals if given.
    fn publish(
        &self,
        added: &[Arc<FileRef>],
        removed: &[String],
        checkpoint: Option<(u64, Vec<ManifestDelta>)>,
    ) -> Result<(), StorageError> {
        let _m = self.manifest_lock.lock();
        let path = self.dir.join(MANIFEST);
        let mut manifest: Manifest = match std::fs::read(&path) {
            Ok(b) => {
                serde_json::from_slice(&b).map_err(|e| be(format!("corrupt manifest: {e}")))?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Manifest::default(),
            Err(e) => return Err(e.into()),
        };
        manifest.version = 1;
        manifest.files.retain(|f| !removed.contains(&f.name));
        for f in added {
            manifest.files.push(ManifestFile {
                name: f.name.clone(),
                partition: f.partition,
                min_t: f.min_t,
                max_t: f.max_t,
                samples: f.samples,
                bytes: f.bytes,
                generation: f.generation,
            });
        }
        if let Some((seq, deltas)) = checkpoint {
            manifest.durable_seq = seq;
            manifest.deltas = deltas;
            manifest.meta = self
                .core
                .metadata()
                .into_iter()
                .map(|m| ManifestMeta {
                    metric: m.metric,
                    kind: m.kind,
                    help: m.help,
                    unit: m.unit,
                })
                .collect();
        }
        let tmp = self.dir.join("MANIFEST.json.tmp");
        let mut f = File::create(&tmp)?;
        f.write_all(&serde_json::to_vec(&manifest).map_err(be)?)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, &path)?;
        sync_dir(&self.dir)
    }

    /// Retention and compaction.
    fn maintain(&self) -> Result<(), StorageError> {
        let opts = &self.core.opts;
        if opts.retention_ms > 0 {
            let cutoff = now_ms() - opts.retention_ms;
            let expired: Vec<Arc<FileRef>> = self
                .core
                .state
                .read()
                .files
                .iter()
                .filter(|f| f.partition + opts.partition_ms <= cutoff)
                .cloned()
                .collect();
            if !expired.is_empty() {
                let names: Vec<String> = expired.iter().map(|f| f.name.clone()).collect();
                self.publish(&[], &names, None)?;
                let mut st = self.core.state.write();
                st.files.retain(|f| !names.contains(&f.name));
                st.disk_samples -= expired.iter().map(|f| f.samples).sum::<u64>();
                drop(st);
                self.core.settled_changed();
                let parts: HashSet<i64> = expired.iter().map(|f| f.partition).collect();
                for p in parts {
                    let still = self
                        .core
                        .state
                        .read()
                        .files
                        .iter()
                        .any(|f| f.partition == p);
                    if !still {
                        let _ = std::fs::remove_dir_all(self.dir.join(format!("p{p}")));
                    }
                }
                tracing::info!(
                    files = names.len(),
                    "metrics retention removed old partitions"
                );
            }
        }
        self.compact()
    }

    fn compact(&self) -> Result<(), StorageError> {
        let limit = self.core.opts.compaction_files.max(2);
        let mut by_part: HashMap<i64, Vec<Arc<FileRef>>> = HashMap::new();
        for f in self.core.state.read().files.iter() {
            by_part.entry(f.partition).or_default().push(f.clone());
        }
        for (p, mut files) in by_part {
            if files.len() <= limit {
                continue;
            }
            let started = Instant::now();
            files.sort_by_key(|f| f.generation);
            let mut merged: HashMap<u32, Vec<(u64, Vec<Sample>)>> = HashMap::new();
            for f in &files {
                let all: Vec<u32> = (0..f.ids.len() as u32).collect();
                for (local, run) in self.reader.read(f, &all, i64::MIN, i64::MAX)? {
                    if let Some(g) = f.ids.get(local as usize) {
                        merged.entry(*g).or_default().push((f.generation, run));
                    }
                }
            }
            let rows: FileRows = {
                let st = self.core.state.read();
                merged
                    .into_iter()
                    .map(|(id, runs)| {
                        let labels = Arc::new(st.series[id as usize].labels.unpack());
                        (id, labels, merge_runs(runs))
                    })
                    .collect()
            };
            let generation = files.iter().map(|f| f.generation).max().unwrap_or(0);
            // The merged file keeps the newest generation of its inputs, so
            // files written later still win over it.
            let merged_file = Arc::new(self.write_file(p, generation, rows)?);
            let names: Vec<String> = files
                .iter()
                .map(|f| f.name.clone())
                .filter(|n| *n != merged_file.name)
                .collect();
            self.publish(std::slice::from_ref(&merged_file), &names, None)?;
            {
                let mut st = self.core.state.write();
                let before: u64 = files.iter().map(|f| f.samples).sum();
                st.files
                    .retain(|f| !(f.partition == p && files.iter().any(|x| x.name == f.name)));
                st.files.push(merged_file.clone());
                st.disk_samples = st.disk_samples - before + merged_file.samples;
            }
            for n in names {
                let _ = std::fs::remove_file(self.dir.join(format!("{n}.samples.parquet")));
                let _ = std::fs::remove_file(self.dir.join(format!("{n}.series.parquet")));
            }
            tracing::debug!(
                partition = p,
                files = files.len(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "compacted metrics partition"
            );
        }
        Ok(())
    }
}

/// Row offsets from per-series row counts (one more entry than counts).
fn offsets(counts: &[u32]) -> Vec<u64> {
    let mut off = Vec::with_capacity(counts.len() + 1);
    let mut total = 0u64;
    off.push(0);
    for c in counts {
        total += u64::from(*c);
        off.push(total);
    }
    off
}

/// A file's series table: labels with time range per series, and the row
/// count per series (`None` in files written before it was recorded).
#[allow(clippy::type_complexity)]
fn read_series_table(
    path: &Path,
) -> Result<(Vec<(Labels, i64, i64)>, Option<Vec<u32>>), StorageError> {
    let f = File::open(path)?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(f)
        .map_err(be)?
        .build()
        .map_err(be)?;
    let mut out = Vec::new();
    let mut counts: Option<Vec<u32>> = Some(Vec::new());
    for batch in reader {
        let batch = batch.map_err(be)?;
        let bad = || be("unexpected series file schema");
        let l = batch
            .column(0)
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or_else(bad)?;
        let a = batch
            .column(1)
            .as_any()
            .downcast_ref::<Int64Array>()
            .ok_or_else(bad)?;
        let b = batch
            .column(2)
            .as_any()
            .downcast_ref::<Int64Array>()
            .ok_or_else(bad)?;
        let rows = match batch.column_by_name("rows") {
            Some(c) => Some(c.as_any().downcast_ref::<UInt32Array>().ok_or_else(bad)?),
            None => None,
        };
        for i in 0..batch.num_rows() {
            let labels: Labels = serde_json::from_str(l.value(i)).map_err(be)?;
            out.push((labels, a.value(i), b.value(i)));
        }
        match (rows, counts.as_mut()) {
            (Some(r), Some(c)) => c.extend(r.values().iter().copied()),
            _ => counts = None,
        }
    }
    Ok((out, counts))
}

impl StoreLifecycle for ParquetMetricStore {
    fn durable_seq(&self) -> u64 {
        self.core.durable.load(Ordering::SeqCst)
    }
    fn flush(&self) -> Result<(), StorageError> {
        if let Some(g) = &self.core.guard {
            g.sweep(now_ms());
        }
        self.flush_head(false)
    }
    fn stats(&self) -> StoreStats {
        self.core.stats()
    }
    fn close(&self) -> Result<(), StorageError> {
        self.flush_head(true)
    }
}

impl MetricStore for ParquetMetricStore {
    fn write(&self, seq: u64, metrics: Vec<Metric>) -> Result<(), StorageError> {
        self.core.write_metrics(seq, &metrics);
        Ok(())
    }
    fn write_series(&self, seq: u64, series: Vec<Series>) -> Result<(), StorageError> {
        self.core.write_series(seq, series);
        Ok(())
    }
    fn cardinality(&self, limit: usize) -> Result<CardinalityStats, StorageError> {
        Ok(self.core.cardinality(limit))
    }
    fn series_guard(&self) -> Option<Arc<SeriesGuard>> {
        self.core.guard()
    }
    fn scan(
        &self,
        matchers: &[LabelMatcher],
        start_ms: i64,
        end_ms: i64,
        sink: &mut dyn FnMut(Vec<Series>) -> bool,
    ) -> Result<crate::storage::ScanStats, StorageError> {
        self.core
            .scan(Some(&self.reader), matchers, start_ms, end_ms, sink)
    }
}

impl SeriesSource for ParquetMetricStore {
    fn select(
        &self,
        matchers: &[LabelMatcher],
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<Series>, StorageError> {
        self.core
            .select(Some(&self.reader), matchers, start_ms, end_ms)
    }
    fn series(
        &self,
        matchers: &[LabelMatcher],
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<Labels>, StorageError> {
        self.core.series(matchers, start_ms, end_ms)
    }
    fn label_names(
        &self,
        matchers: &[LabelMatcher],
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<String>, StorageError> {
        self.core.label_names(matchers, start_ms, end_ms)
    }
    fn label_values(
        &self,
        name: &str,
        matchers: &[LabelMatcher],
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<String>, StorageError> {
        self.core.label_values(name, matchers, start_ms, end_ms)
    }
    fn metadata(&self) -> Result<Vec<MetricMeta>, StorageError> {
        Ok(self.core.metadata())
    }
    fn settled_generation(&self) -> Option<u64> {
        Some(self.core.settled_generation())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::MatchOp;
    use crate::storage::suite;

    fn opts() -> MetricsOptions {
        MetricsOptions {
            head_flush_ms: 0,
            compaction_files: 2,
            ..MetricsOptions::default()
        }
    }

    fn name(n: &str) -> Vec<LabelMatcher> {
        vec![LabelMatcher {
            name: METRIC_NAME.into(),
            op: MatchOp::Equal,
            value: n.into(),
        }]
    }

    fn series(n: &str, samples: &[(i64, f64)]) -> Series {
        Series {
            labels: vec![(METRIC_NAME.into(), n.into())],
            samples: samples
                .iter()
                .map(|(t, v)| Sample { t_ms: *t, v: *v })
                .collect(),
        }
    }

    fn vals(s: &ParquetMetricStore, n: &str) -> Vec<(i64, f64)> {
        s.select(&name(n), i64::MIN, i64::MAX)
            .unwrap()
            .into_iter()
            .flat_map(|s| s.samples)
            .map(|s| (s.t_ms, s.v))
            .collect()
    }

    #[test]
    fn values_round_trip_bit_for_bit_through_files() {
        let cases: Vec<(&str, Vec<f64>)> = vec![
            (
                "counter",
                vec![0.0, 17.0, 123_456.0, 9_007_199_254_740_000.0],
            ),
            ("cents", vec![0.1, 0.25, -3.07, 99.99]),
            ("micros", vec![1e-6, 0.123456, -7.000001]),
            ("floats", vec![1.0 / 3.0, 2.5e-9, 1e300]),
            (
                "special",
                vec![f64::NAN, -0.0, f64::INFINITY, f64::NEG_INFINITY, 1.0],
            ),
            ("huge", vec![1e16, 2.0]),
        ];
        let dir = tempfile::tempdir().unwrap();
        let s = ParquetMetricStore::open(dir.path(), opts(), None).unwrap();
        let batch: Vec<Series> = cases
            .iter()
            .map(|(n, v)| {
                let samples: Vec<(i64, f64)> = v
                    .iter()
                    .enumerate()
                    .map(|(i, x)| (i as i64 * 1000, *x))
                    .collect();
                series(n, &samples)
            })
            .collect();
        s.write_series(1, batch).unwrap();
        s.flush_head(true).unwrap();
        assert!(!s.core.state.read().files.is_empty());
        let s = {
            drop(s);
            ParquetMetricStore::open(dir.path(), opts(), None).unwrap()
        };
        for (n, want) in &cases {
            let got: Vec<u64> = vals(&s, n).iter().map(|(_, v)| v.to_bits()).collect();
            let want: Vec<u64> = want.iter().map(|v| v.to_bits()).collect();
            assert_eq!(got, want, "{n}");
        }
    }

    #[test]
    fn decimal_scales_are_the_fewest_digits_that_round_trip() {
        let smp =
            |v: &[f64]| -> Vec<Sample> { v.iter().map(|x| Sample { t_ms: 0, v: *x }).collect() };
        assert_eq!(decimal_scale(&smp(&[1.0, 2.0, 1e12])), Some(0));
        assert_eq!(decimal_scale(&smp(&[1.0, 0.5, 0.25])), Some(2));
        assert_eq!(decimal_scale(&smp(&[0.25, 3.0])), Some(2));
        assert_eq!(decimal_scale(&smp(&[0.1234567])), None);
        assert_eq!(decimal_scale(&smp(&[f64::NAN])), None);
        assert_eq!(decimal_scale(&smp(&[-0.0])), None);
        assert_eq!(decimal_scale(&smp(&[1e17])), None);
        assert_eq!(decimal_scale(&[]), Some(0));
    }

    /// Writes `batch` as `<dir>/old.samples.parquet` and reads local
    /// series 1 of it the way files without row counts are read.
    fn read_old_layout(dir: &Path, batch: RecordBatch) -> Vec<(u32, Vec<(i64, f64)>)> {
        let props = WriterProperties::builder().build();
        write_parquet(&dir.join("old.samples.parquet"), batch, props).unwrap();
        let file = FileRef {
            name: "old".into(),
            partition: 0,
            min_t: 1,
            max_t: 3,
            samples: 4,
            bytes: 0,
            generation: 1,
            ids: vec![7, 9],
            offsets: None,
        };
        let reader = Reader::new(dir);
        reader
            .read(&file, &[1], 0, 10)
            .unwrap()
            .into_iter()
            .map(|(l, r)| (l, r.into_iter().map(|x| (x.t_ms, x.v)).collect()))
            .collect()
    }

    #[test]
    fn files_in_older_layouts_are_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let float = RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("series", DataType::UInt32, false),
                Field::new("t", DataType::Int64, false),
                Field::new("v", DataType::Float64, false),
            ])),
            vec![
                Arc::new(UInt32Array::from(vec![0, 1, 1, 1])) as ArrayRef,
                Arc::new(Int64Array::from(vec![1, 1, 2, 3])),
                Arc::new(Float64Array::from(vec![9.0, 0.5, f64::NAN, -1.0])),
            ],
        )
        .unwrap();
        let got = read_old_layout(dir.path(), float);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, 1);
        assert_eq!(got[0].1[0], (1, 0.5));
        assert!(got[0].1[1].1.is_nan());
        assert_eq!(got[0].1[2], (3, -1.0));

        let decimal = RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("series", DataType::UInt32, false),
                Field::new("t", DataType::Int64, false),
                Field::new("vi", DataType::Int64, true),
                Field::new("vf", DataType::Float64, true),
                Field::new("scale", DataType::Int8, false),
            ])),
            vec![
                Arc::new(UInt32Array::from(vec![0, 1, 1, 1])) as ArrayRef,
                Arc::new(Int64Array::from(vec![1, 1, 2, 3])),
                Arc::new(Int64Array::from(vec![
                    Some(5),
                    Some(125),
                    Some(-3),
                    Some(7),
                ])),
                Arc::new(Float64Array::from(vec![None, None, None, None])),
                Arc::new(Int8Array::from(vec![0, 2, 2, 2])),
            ],
        )
        .unwrap();
        assert_eq!(
            read_old_layout(dir.path(), decimal),
            vec![(1, vec![(1, 1.25), (2, -0.03), (3, 0.07)])]
        );
    }

    #[test]
    fn reads_of_some_series_and_part_of_the_time_decode_exactly_those() {
        let dir = tempfile::tempdir().unwrap();
        let store = ParquetMetricStore::open(dir.path(), opts(), None).unwrap();
        // 40 series in one file: counters, 2-digit gauges, floats (NaN
        // too), with irregular timestamps.
        let truth: Vec<Series> = (0..40)
            .map(|k| Series {
                labels: vec![
                    (METRIC_NAME.into(), "m".into()),
                    ("k".into(), format!("{k:02}")),
                ],
                samples: (0..300)
                    .map(|i| Sample {
                        t_ms: 1_000 + i * 15_000 + (i * k) % 7,
                        v: match k % 4 {
                            0 => (i * i * 3 + k) as f64,
                            1 => ((i as f64 * 0.37 + k as f64).sin() * 100.0).round() / 100.0,
                            2 if i % 50 == 7 => f64::NAN,
                            2 => (i as f64).sqrt() * 1e-3,
                            _ => -((i * 1_000_003 % 97) as f64),
                        },
                    })
                    .collect(),
            })
            .collect();
        store.write_series(1, truth.clone()).unwrap();
        store.flush_head(true).unwrap();
        assert!(store
            .core()
            .state
            .read()
            .files
            .iter()
            .all(|f| f.offsets.is_some()));
        let pick = LabelMatcher {
            name: "k".into(),
            op: MatchOp::Regex,
            value: "0[3-6]|1[0-1]|2.|39".into(),
        };
        let (a, b) = (200_000, 3_000_000);
        let got = store.select(&[name("m")[0].clone(), pick], a, b).unwrap();
        let want: Vec<&Series> = truth
            .iter()
            .filter(|s| {
                let k: u32 = s.labels[1].1.parse().unwrap();
                (3..=6).contains(&k) || k == 10 || k == 11 || (20..30).contains(&k) || k == 39
            })
            .collect();
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            assert_eq!(g.labels, w.labels);
            let w: Vec<(i64, u64)> = w
                .samples
                .iter()
                .filter(|x| x.t_ms >= a && x.t_ms <= b)
                .map(|x| (x.t_ms, x.v.to_bits()))
                .collect();
            let g: Vec<(i64, u64)> = g.samples.iter().map(|x| (x.t_ms, x.v.to_bits())).collect();
            assert_eq!(g, w);
        }
    }

    #[test]
    fn row_counts_alone_place_rows_across_small_batches() {
        let dir = tempfile::tempdir().unwrap();
        let store = ParquetMetricStore::open(dir.path(), opts(), None).unwrap();
        // Counters, 2-digit gauges and floats, of different lengths (one
        // series has a single sample).
        let truth: Vec<Series> = (0..9)
            .map(|k: i64| Series {
                labels: vec![
                    (METRIC_NAME.into(), "m".into()),
                    ("k".into(), k.to_string()),
                ],
                samples: (0..if k == 4 { 1 } else { 20 + 3 * k })
                    .map(|i| Sample {
                        t_ms: 1_000 + i * 1_000 + k,
                        v: match k % 3 {
                            0 => (i * i + k) as f64,
                            1 => (i as f64 * 0.25 - 1.0) + k as f64,
                            _ => (i as f64 + 0.5).ln() / 3.0,
                        },
                    })
                    .collect(),
            })
            .collect();
        store.write_series(1, truth.clone()).unwrap();
        store.flush_head(true).unwrap();
        let file = store.core().state.read().files[0].clone();
        // Local numbers follow the labels: k = local. The file is read as
        // written (one row group), then rewritten in row groups of 7 rows
        // (so wanted series span groups and some groups are not opened).
        let mut reader = Reader::new(dir.path());
        let path = dir.path().join(format!("{}.samples.parquet", file.name));
        for (groups, batch_rows) in [
            (false, 1),
            (false, 7),
            (false, 64 * 1024),
            (true, 1),
            (true, 5),
            (true, 64 * 1024),
        ] {
            if groups {
                let batches: Vec<RecordBatch> =
                    ParquetRecordBatchReaderBuilder::try_new(File::open(&path).unwrap())
                        .unwrap()
                        .build()
                        .unwrap()
                        .map(|b| b.unwrap())
                        .collect();
                let props = WriterProperties::builder()
                    .set_max_row_group_row_count(Some(7))
                    .build();
                let mut w = ArrowWriter::try_new(
                    File::create(&path).unwrap(),
                    batches[0].schema(),
                    Some(props),
                )
                .unwrap();
                for b in &batches {
                    w.write(b).unwrap();
                }
                w.close().unwrap();
                let meta = ParquetRecordBatchReaderBuilder::try_new(File::open(&path).unwrap())
                    .unwrap()
                    .metadata()
                    .clone();
                assert!(meta.num_row_groups() > 20);
            }
            reader.batch_rows = batch_rows;
            for (start, end) in [(i64::MIN, i64::MAX), (5_000, 12_004)] {
                let wanted = [0u32, 2, 3, 4, 7, 8];
                let mut bufs: Vec<Vec<Sample>> = vec![Vec::new(); wanted.len()];
                let mut out: Vec<&mut Vec<Sample>> = bufs.iter_mut().collect();
                let n = reader
                    .read_into(&file, &wanted, start, end, &mut out)
                    .unwrap();
                assert_eq!(n, bufs.iter().map(Vec::len).sum::<usize>());
                for (&l, got) in wanted.iter().zip(&bufs) {
                    let want: Vec<(i64, u64)> = truth[l as usize]
                        .samples
                        .iter()
                        .filter(|x| x.t_ms >= start && x.t_ms <= end)
                        .map(|x| (x.t_ms, x.v.to_bits()))
                        .collect();
                    let got: Vec<(i64, u64)> =
                        got.iter().map(|x| (x.t_ms, x.v.to_bits())).collect();
                    assert_eq!(got, want, "series {l}, batches of {batch_rows}");
                }
            }
        }
        // Row counts that do not fit the file are an error, not a misread.
        let mut bad = FileRef {
            name: file.name.clone(),
            partition: file.partition,
            min_t: file.min_t,
            max_t: file.max_t,
            samples: file.samples,
            bytes: file.bytes,
            generation: file.generation,
            ids: file.ids.clone(),
            offsets: file.offsets.clone(),
        };
        if let Some(off) = bad.offsets.as_mut() {
            let last = off.len() - 1;
            off[last] += 5;
        }
        let mut buf = Vec::new();
        let err = reader.read_into(&bad, &[8], i64::MIN, i64::MAX, &mut [&mut buf]);
        assert!(err.is_err());
        let mut buf = Vec::new();
        assert!(reader
            .read_into(
                &file,
                &[3, 2],
                i64::MIN,
                i64::MAX,
                &mut [&mut buf, &mut Vec::new()]
            )
            .is_err());
        assert!(reader
            .read_into(&file, &[2], i64::MIN, i64::MAX, &mut [])
            .is_err());
    }

    #[test]
    fn files_of_only_decimals_or_only_floats_read_without_the_unused_column() {
        for (kind, value) in [
            (
                "decimals",
                (|i: i64| (i * 7) as f64 / 4.0) as fn(i64) -> f64,
            ),
            ("floats", |i: i64| (i as f64 + 0.5).sqrt() / 3.0),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let store = ParquetMetricStore::open(dir.path(), opts(), None).unwrap();
            let truth: Vec<Series> = (0..5)
                .map(|k| Series {
                    labels: vec![
                        (METRIC_NAME.into(), "m".into()),
                        ("k".into(), k.to_string()),
                    ],
                    samples: (0..50)
                        .map(|i| Sample {
                            t_ms: 1_000 + i * 15_000,
                            v: value(i + k * 100),
                        })
                        .collect(),
                })
                .collect();
            store.write_series(1, truth.clone()).unwrap();
            store.flush_head(true).unwrap();
            // Only one value column holds values in this file.
            let file = store.core().state.read().files[0].clone();
            let path = dir.path().join(format!("{}.samples.parquet", file.name));
            let meta = ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap())
                .unwrap()
                .metadata()
                .clone();
            let nulls: Vec<Option<u64>> = ["vd", "vf"]
                .iter()
                .map(|c| {
                    let i = (0..meta.file_metadata().schema_descr().num_columns())
                        .find(|&i| meta.file_metadata().schema_descr().column(i).name() == *c)
                        .unwrap();
                    meta.row_group(0)
                        .column(i)
                        .statistics()
                        .and_then(|s| s.null_count_opt())
                })
                .collect();
            let rows = Some(file.samples);
            assert!(nulls.contains(&rows), "{kind}: {nulls:?}");
            let got = store.select(&name("m"), 30_000, 400_000).unwrap();
            assert_eq!(got.len(), 5);
            for (g, w) in got.iter().zip(&truth) {
                let w: Vec<(i64, u64)> = w
                    .samples
                    .iter()
                    .filter(|x| (30_000..=400_000).contains(&x.t_ms))
                    .map(|x| (x.t_ms, x.v.to_bits()))
                    .collect();
                let g: Vec<(i64, u64)> =
                    g.samples.iter().map(|x| (x.t_ms, x.v.to_bits())).collect();
                assert_eq!(g, w, "{kind}");
            }
        }
    }

    #[test]
    fn series_over_partitions_overlapping_files_and_the_head_read_as_written() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = opts();
        o.partition_ms = 100_000;
        o.compaction_files = 100;
        let store = ParquetMetricStore::open(dir.path(), o, None).unwrap();
        let mut truth: BTreeMap<String, BTreeMap<i64, f64>> = BTreeMap::new();
        let mut write = |seq: u64, k: usize, ts: &[i64], base: f64| {
            let name = format!("s{k}");
            let samples: Vec<(i64, f64)> = ts.iter().map(|&t| (t, base + t as f64)).collect();
            for &(t, v) in &samples {
                truth.entry(name.clone()).or_default().insert(t, v);
            }
            store
                .write_series(
                    seq,
                    vec![series("m", &samples)]
                        .into_iter()
                        .map(|mut s| {
                            s.labels.push(("k".into(), name.clone()));
                            s
                        })
                        .collect(),
                )
                .unwrap();
        };
        // Three partitions of regular samples for 30 series...
        let regular: Vec<i64> = (0..300).map(|i| i * 1_000).collect();
        for k in 0..30 {
            write(1, k, &regular, k as f64);
        }
        store.flush_head(true).unwrap();
        // ...rewritten in part by a later flush (same timestamps, new
        // values, and some in between), then a head not yet flushed.
        let rewrite: Vec<i64> = (50..120).map(|i| i * 1_500).collect();
        for k in (0..30).step_by(3) {
            write(2, k, &rewrite, 1e6);
        }
        store.flush_head(true).unwrap();
        let head: Vec<i64> = (290..320).map(|i| i * 1_000 + 7).collect();
        for k in (0..30).step_by(2) {
            write(3, k, &head, -1e6);
        }
        assert!(store.core().state.read().files.len() >= 5);
        for (start, end) in [(i64::MIN, i64::MAX), (75_000, 250_500), (299_000, 400_000)] {
            let got = store.select(&name("m"), start, end).unwrap();
            let want: Vec<(String, Vec<(i64, u64)>)> = truth
                .iter()
                .map(|(k, pts)| {
                    (
                        k.clone(),
                        pts.range(start..=end)
                            .map(|(&t, v)| (t, v.to_bits()))
                            .collect(),
                    )
                })
                .filter(|(_, p): &(String, Vec<(i64, u64)>)| !p.is_empty())
                .collect();
            let got: Vec<(String, Vec<(i64, u64)>)> = got
                .iter()
                .map(|s| {
                    (
                        crate::model::label(&s.labels, "k")
                            .unwrap_or("")
                            .to_string(),
                        s.samples.iter().map(|x| (x.t_ms, x.v.to_bits())).collect(),
                    )
                })
                .collect();
            assert_eq!(got, want, "{start}..{end}");
        }
    }

    #[test]
    fn parquet_store_scans_by_partition() {
        let dir = tempfile::tempdir().unwrap();
        let s = ParquetMetricStore::open(dir.path(), opts(), None).unwrap();
        suite::metric_scans(&s);
        s.flush_head(true).unwrap();
        assert!(!s.core.state.read().files.is_empty());
        // The same answers from files.
        suite::metric_scans_again(&s);
    }

    #[test]
    fn parquet_store_passes_suite() {
        let dir = tempfile::tempdir().unwrap();
        let s = ParquetMetricStore::open(dir.path(), opts(), None).unwrap();
        suite::metric_store(&s);
        assert!(s.stats().disk_bytes > 0);
        assert_eq!(s.durable_seq(), 12);
        // Compaction kept a single file for the one partition.
        assert_eq!(s.core.state.read().files.len(), 1);
    }

    #[test]
    fn restart_keeps_flushed_samples_delta_totals_and_seq() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = opts();
        o.compaction_files = 100;
        {
            let s = ParquetMetricStore::open(dir.path(), o.clone(), None).unwrap();
            s.write_series(1, vec![series("a", &[(1000, 1.0), (2000, 2.0)])])
                .unwrap();
            s.flush().unwrap();
            s.write_series(2, vec![series("a", &[(3000, 3.0)])])
                .unwrap();
            let mut m = suite::gauge("d", 5_000_000_000, 0.0);
            m.data = crate::model::MetricData::Sum {
                points: vec![crate::model::NumberPoint {
                    attributes: vec![],
                    start_time_ns: 4_000_000_000,
                    time_ns: 5_000_000_000,
                    value: 4.0,
                    exemplars: vec![],
                    flags: 0,
                }],
                temporality: crate::model::Temporality::Delta,
                monotonic: true,
            };
            s.write(3, vec![m]).unwrap();
            s.close().unwrap();
            assert_eq!(s.durable_seq(), 3);
        }
        // A store that is dropped without a flush loses only what the WAL
        // still holds (seq above durable_seq).
        {
            let s = ParquetMetricStore::open(dir.path(), o.clone(), None).unwrap();
            assert_eq!(s.durable_seq(), 3);
            assert_eq!(vals(&s, "a"), vec![(1000, 1.0), (2000, 2.0), (3000, 3.0)]);
            assert_eq!(vals(&s, "d_total"), vec![(5000, 4.0)]);
            s.write_series(4, vec![series("a", &[(4000, 4.0)])])
                .unwrap();
        }
        let s = ParquetMetricStore::open(dir.path(), o, None).unwrap();
        assert_eq!(s.durable_seq(), 3, "unflushed seq 4 is not durable");
        assert_eq!(vals(&s, "a").len(), 3);
        // The delta total survives the restart: the next delta adds to it.
        let mut m = suite::gauge("d", 6_000_000_000, 0.0);
        m.data = crate::model::MetricData::Sum {
            points: vec![crate::model::NumberPoint {
                attributes: vec![],
                start_time_ns: 5_000_000_000,
                time_ns: 6_000_000_000,
                value: 1.0,
                exemplars: vec![],
                flags: 0,
            }],
            temporality: crate::model::Temporality::Delta,
            monotonic: true,
        };
        s.write(5, vec![m]).unwrap();
        assert_eq!(vals(&s, "d_total"), vec![(5000, 4.0), (6000, 5.0)]);
        assert_eq!(
            s.metadata()
                .unwrap()
                .iter()
                .filter(|m| m.metric == "d_total")
                .count(),
            1
        );
    }

    #[test]
    fn retention_drops_old_partitions() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = opts();
        o.partition_ms = 3_600_000;
        o.compaction_files = 100;
        let now = now_ms();
        {
            let s = ParquetMetricStore::open(dir.path(), o.clone(), None).unwrap();
            s.write_series(
                1,
                vec![series(
                    "r",
                    &[(now - 10 * 3_600_000, 1.0), (now - 1000, 2.0)],
                )],
            )
            .unwrap();
            s.close().unwrap();
            assert_eq!(s.core.state.read().files.len(), 2);
        }
        o.retention_ms = 3 * 3_600_000;
        let s = ParquetMetricStore::open(dir.path(), o, None).unwrap();
        s.write_series(
            2,
            vec![series("r", &[(now - 20 * 3_600_000, 9.0), (now, 3.0)])],
        )
        .unwrap();
        let generation = s.settled_generation();
        s.close().unwrap();
        assert!(
            s.settled_generation() > generation,
            "dropping partitions changes settled data"
        );
        assert_eq!(
            vals(&s, "r"),
            vec![(now - 1000, 2.0), (now, 3.0)],
            "old partition and too-old sample dropped"
        );
        let old_part = (now - 10 * 3_600_000).div_euclid(3_600_000) * 3_600_000;
        assert!(!dir.path().join(format!("p{old_part}")).exists());
    }
}
