//! The persistent metrics store: the [`Core`] head and index, plus Parquet
//! files per time partition.
//!
//! Layout under the store directory:
//!
//! - `p<partition start ms>/<generation>.samples.parquet`: columns
//!   `series` (u32, file-local series number), `t` (i64 ms,
//!   DELTA_BINARY_PACKED) and the value, sorted by (series, t), zstd. A
//!   series whose values are all decimals of at most 6 digits (counters,
//!   most gauges) stores them as integer mantissas in `vi`
//!   (DELTA_BINARY_PACKED, so a steady counter costs a few bits a sample)
//!   with the digit count in `scale` (RLE); any other series stores floats
//!   in `vf` (BYTE_STREAM_SPLIT). Values round-trip bit for bit. Files
//!   written before this encoding have one float column `v` and are read
//!   as such;
//! - `p<partition>/<generation>.series.parquet`: the file's series table,
//!   one row per series (`labels` as JSON, dictionary-encoded, `min_t`,
//!   `max_t`), so labels are stored once per file, never per sample;
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
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;
use serde::{Deserialize, Serialize};

use super::core::{now_ms, Core, DeltaState, FileReader, FileRef, Frozen};
use super::guard::SeriesGuard;
use super::{CardinalityStats, MetricsOptions};
use crate::model::{LabelMatcher, Labels, Metric, MetricMeta, Sample, Series};
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
}

impl FileReader for Reader {
    fn read(
        &self,
        file: &FileRef,
        wanted: &HashSet<u32>,
        start: i64,
        end: i64,
    ) -> Result<Vec<(u32, Sample)>, StorageError> {
        let path = self.dir.join(format!("{}.samples.parquet", file.name));
        let f = File::open(&path)?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(f)
            .map_err(be)?
            .build()
            .map_err(be)?;
        let mut out = Vec::new();
        for batch in reader {
            let batch = batch.map_err(be)?;
            let (s, t, v) = columns(&batch)?;
            for i in 0..batch.num_rows() {
                let t_ms = t.value(i);
                if t_ms < start || t_ms > end || !wanted.contains(&s.value(i)) {
                    continue;
                }
                out.push((
                    s.value(i),
                    Sample {
                        t_ms,
                        v: v.value(i),
                    },
                ));
            }
        }
        Ok(out)
    }
}

/// The value column(s) of a samples file.
enum Values<'a> {
    /// Files written before decimal encoding: one float column `v`.
    Float(&'a Float64Array),
    /// `vi` (an integer, with `scale` decimal digits) or else `vf`.
    Decimal {
        vi: &'a Int64Array,
        vf: &'a Float64Array,
        scale: &'a Int8Array,
    },
}

impl Values<'_> {
    fn value(&self, i: usize) -> f64 {
        match self {
            Values::Float(v) => v.value(i),
            Values::Decimal { vi, vf, scale } => {
                if vi.is_null(i) {
                    vf.value(i)
                } else {
                    decode_decimal(vi.value(i), scale.value(i))
                }
            }
        }
    }
}

const POW10: [f64; 7] = [1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6];
/// Integers up to 2^53 convert to f64 exactly.
const MAX_EXACT: f64 = 9_007_199_254_740_992.0;

fn decode_decimal(m: i64, scale: i8) -> f64 {
    m as f64 / POW10[scale.clamp(0, 6) as usize]
}

/// The fewest decimal digits (0 to 6) that represent every value exactly
/// as an integer mantissa, or `None` (NaN, infinities, -0.0, more digits,
/// too large): such a series keeps its float values.
fn decimal_scale(values: &[Sample]) -> Option<i8> {
    // Checked through the integer the file stores, exactly as it is decoded.
    let fits = |v: f64, k: usize| {
        let m = (v * POW10[k]).round();
        m.abs() < MAX_EXACT && decode_decimal(m as i64, k as i8).to_bits() == v.to_bits()
    };
    let mut scale = 0usize;
    for x in values {
        while !fits(x.v, scale) {
            scale += 1;
            if scale >= POW10.len() {
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

fn columns(b: &RecordBatch) -> Result<(&UInt32Array, &Int64Array, Values<'_>), StorageError> {
    let bad = || be("unexpected samples file schema");
    let s = b
        .column(0)
        .as_any()
        .downcast_ref::<UInt32Array>()
        .ok_or_else(bad)?;
    let t = b
        .column(1)
        .as_any()
        .downcast_ref::<Int64Array>()
        .ok_or_else(bad)?;
    let col = |name: &str| b.column_by_name(name).ok_or_else(bad);
    let values = if b.num_columns() == 3 {
        Values::Float(
            col("v")?
                .as_any()
                .downcast_ref::<Float64Array>()
                .ok_or_else(bad)?,
        )
    } else {
        Values::Decimal {
            vi: col("vi")?
                .as_any()
                .downcast_ref::<Int64Array>()
                .ok_or_else(bad)?,
            vf: col("vf")?
                .as_any()
                .downcast_ref::<Float64Array>()
                .ok_or_else(bad)?,
            scale: col("scale")?
                .as_any()
                .downcast_ref::<Int8Array>()
                .ok_or_else(bad)?,
        }
    };
    Ok((s, t, values))
}

fn samples_schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("series", DataType::UInt32, false),
        Field::new("t", DataType::Int64, false),
        Field::new("vi", DataType::Int64, true),
        Field::new("vf", DataType::Float64, true),
        Field::new("scale", DataType::Int8, false),
    ]))
}

fn series_schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("labels", DataType::Utf8, false),
        Field::new("min_t", DataType::Int64, false),
        Field::new("max_t", DataType::Int64, false),
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
        .set_column_encoding(ColumnPath::from("t"), Encoding::DELTA_BINARY_PACKED)
        .set_column_encoding(ColumnPath::from("vi"), Encoding::DELTA_BINARY_PACKED)
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
                let rows = read_series_table(&dir.join(format!("{}.series.parquet", mf.name)))?;
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
                }));
            }
            for d in manifest.deltas {
                let id = st.get_or_create(d.labels);
                st.series[id as usize].delta = Some(DeltaState {
                    total: d.total,
                    last_ns: d.last_ns,
                });
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
                g.register(
                    st.series
                        .iter()
                        .filter(|e| e.max_t >= now_ms() - g.limits().window_ms)
                        .map(|e| &*e.labels),
                    now_ms(),
                );
            }
        }
        Ok(ParquetMetricStore {
            core,
            dir: dir.to_path_buf(),
            reader: Reader {
                dir: dir.to_path_buf(),
            },
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
                    e.delta.map(|d| ManifestDelta {
                        labels: (*e.labels).clone(),
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
                // Put the samples back so nothing is lost; the WAL still covers them.
                for (id, samples) in &frozen.samples {
                    for s in samples {
                        st.series[*id as usize].head.push(*s);
                    }
                    st.series[*id as usize].head.sort_by_key(|s| s.t_ms);
                    st.series[*id as usize].head.dedup_by_key(|s| s.t_ms);
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
            for (id, samples) in &frozen.samples {
                let labels = st.series[*id as usize].labels.clone();
                let mut i = 0;
                while i < samples.len() {
                    let p = samples[i].t_ms.div_euclid(part_ms) * part_ms;
                    let j = i + samples[i..].partition_point(|s| s.t_ms < p + part_ms);
                    parts
                        .entry(p)
                        .or_default()
                        .push((*id, labels.clone(), samples[i..j].to_vec()));
                    i = j;
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
        let (mut labels, mut mins, mut maxs) = (Vec::new(), Vec::new(), Vec::new());
        let (mut min_t, mut max_t) = (i64::MAX, i64::MIN);
        let mut ids = Vec::with_capacity(rows.len());
        for (local, (id, l, samples)) in rows.iter().enumerate() {
            let scale = decimal_scale(samples);
            for x in samples {
                s.push(local as u32);
                t.push(x.t_ms);
                match scale {
                    Some(k) => {
                        vi.push(Some((x.v * POW10[k as usize]).round() as i64));
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
            let mut merged: HashMap<u32, Vec<(i64, u64, f64)>> = HashMap::new();
            for f in &files {
                let all: HashSet<u32> = (0..f.ids.len() as u32).collect();
                for (local, s) in self.reader.read(f, &all, i64::MIN, i64::MAX)? {
                    if let Some(g) = f.ids.get(local as usize) {
                        merged
                            .entry(*g)
                            .or_default()
                            .push((s.t_ms, f.generation, s.v));
                    }
                }
            }
            let rows: FileRows = {
                let st = self.core.state.read();
                merged
                    .into_iter()
                    .map(|(id, mut v)| {
                        v.sort_by_key(|a| (a.0, a.1));
                        let mut out: Vec<Sample> = Vec::with_capacity(v.len());
                        for (t, _, x) in v {
                            match out.last_mut() {
                                Some(l) if l.t_ms == t => l.v = x,
                                _ => out.push(Sample { t_ms: t, v: x }),
                            }
                        }
                        (id, st.series[id as usize].labels.clone(), out)
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

fn read_series_table(path: &Path) -> Result<Vec<(Labels, i64, i64)>, StorageError> {
    let f = File::open(path)?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(f)
        .map_err(be)?
        .build()
        .map_err(be)?;
    let mut out = Vec::new();
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
        for i in 0..batch.num_rows() {
            let labels: Labels = serde_json::from_str(l.value(i)).map_err(be)?;
            out.push((labels, a.value(i), b.value(i)));
        }
    }
    Ok(out)
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{MatchOp, METRIC_NAME};
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

    #[test]
    fn files_with_one_float_value_column_are_still_read() {
        let old = RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("series", DataType::UInt32, false),
                Field::new("t", DataType::Int64, false),
                Field::new("v", DataType::Float64, false),
            ])),
            vec![
                Arc::new(UInt32Array::from(vec![0, 0])) as ArrayRef,
                Arc::new(Int64Array::from(vec![1, 2])),
                Arc::new(Float64Array::from(vec![0.5, f64::NAN])),
            ],
        )
        .unwrap();
        let (_, t, v) = columns(&old).unwrap();
        assert_eq!(t.value(1), 2);
        assert_eq!(v.value(0), 0.5);
        assert!(v.value(1).is_nan());
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
        s.close().unwrap();
        assert_eq!(
            vals(&s, "r"),
            vec![(now - 1000, 2.0), (now, 3.0)],
            "old partition and too-old sample dropped"
        );
        let old_part = (now - 10 * 3_600_000).div_euclid(3_600_000) * 3_600_000;
        assert!(!dir.path().join(format!("p{old_part}")).exists());
    }
}
