//! Crash-safe write-ahead log (WAL) with group commit.
//!
//! Ingest appends opaque payloads here before handing the decoded items to
//! the storage writers; after a crash the log is replayed so that nothing
//! that was acknowledged is lost. The module knows nothing about OTLP or
//! about what the payloads mean: they are opaque bytes, and the `T` item
//! handed to the sink is whatever the caller wants delivered in WAL order.
//!
//! # File format
//!
//! A WAL is a directory of *segment* files named after the sequence number
//! of their first record, zero-padded to 20 digits:
//! `00000000000000000001.wal`, `00000000000000004097.wal`, ... A segment is a
//! plain concatenation of records (no file header). Each record is
//!
//! ```text
//! offset  size  field
//!      0     4  len    payload length in bytes, u32 little endian
//!      4     4  crc    CRC-32 (IEEE, crc32fast) over seq (8 bytes LE) ++ payload
//!      8     8  seq    sequence number, u64 little endian
//!     16   len  payload
//! ```
//!
//! Sequence numbers are global: they start at 1 and increase by exactly 1
//! from record to record, across segments and across restarts. The first
//! record of a segment carries the number in its file name. A new segment
//! is started before writing a record once the active segment has reached
//! `segment_bytes`, so a segment exceeds that size by at most one record.
//! An empty segment is valid; it is how the next sequence number is
//! remembered when everything older has been truncated. A `LOCK` file in the
//! directory holds an advisory lock so that two processes (or two `Wal`s)
//! never write the same directory.
//!
//! On [`Wal::open`] the segments are read in order and every intact record is
//! passed to the `replay` callback. A damaged record in the **last** segment
//! (partial header, short payload, CRC mismatch, or an unexpected sequence
//! number) is taken to be a torn write from a crash: the file is truncated
//! to the last good record boundary and a warning is logged. Writes are
//! only acknowledged after they completed, so under [`SyncPolicy::Batch`]
//! such a tail never held acknowledged data. The same damage in any other
//! segment, or a gap between segments, is [`WalError::Corrupt`]: the WAL
//! refuses to open rather than silently drop data in the middle. (A bit
//! flip inside the last segment cannot be told apart from a torn tail and
//! loses the rest of that segment, with a warning.)
//!
//! # Writing and sync policies
//!
//! [`Wal::append`] never blocks: it queues the record and returns a
//! [`Ticket`], a future that resolves to the record's sequence number once
//! it is durable per the policy below. A single writer thread takes
//! everything queued so far, assigns sequence numbers, writes it with one
//! `write`, syncs per the policy, then for each record in order calls the
//! `sink` and completes the ticket. The sink therefore sees every record
//! exactly once, strictly in sequence order, after it is durable and before
//! its appender hears about it. The sink may block; while it does the queue
//! grows and `append` starts returning [`WalError::Busy`].
//!
//! | policy | ticket completes after | data lost on power loss | on kill -9 |
//! |---|---|---|---|
//! | [`SyncPolicy::Batch`] (default) | write + `fdatasync` (one per batch: group commit) | nothing acknowledged | nothing acknowledged |
//! | [`SyncPolicy::Interval`]`(d)` | write to the OS; fsync at least every `d` | up to about `d` of acknowledged writes | nothing acknowledged |
//! | [`SyncPolicy::Never`] | write to the OS; fsync only on rotation and close | everything since the last rotation | nothing acknowledged |
//!
//! New segment files and deletions are made durable with a directory fsync.
//!
//! # Failures and back-pressure
//!
//! * [`WalError::Busy`]: more than `max_queue_bytes` (header + payload) are
//!   queued but not yet written; retry later (HTTP 503/429 + `Retry-After`).
//! * [`WalError::Full`]: the bytes on disk plus those queued would exceed
//!   `max_disk_bytes`; the stores are not keeping up with
//!   [`Wal::truncate_through`].
//! * If a write or fsync fails, every ticket of the affected batch and every
//!   queued one resolves to [`WalError::Io`], the sink is not called for
//!   them, and the WAL stays failed: every later append returns that error
//!   until the process reopens it (data whose fsync failed may or may not be
//!   on disk; it is never acknowledged). An error ticket means "not known to
//!   be durable", not "certainly absent": replay may still find the record.
//! * If the sink panics the WAL closes: pending tickets resolve to
//!   [`WalError::Closed`].
//!
//! # What this module does not do
//!
//! It does not interpret payloads, deduplicate, compress or encrypt them,
//! checkpoint the stores, or decide when to truncate: the caller calls
//! [`Wal::truncate_through`] once the stores have persisted everything up
//! to a sequence number (periodically, not per record: a fully covered
//! active segment is rotated to be reclaimed). Replay may deliver records
//! the stores already hold, so applying them must be idempotent or filtered
//! by sequence number. It does not limit the size of one segment beyond
//! `segment_bytes` plus one record, nor protect against a second process
//! that ignores the lock file.

mod error;
mod format;
mod segments;
mod writer;

#[cfg(test)]
mod tests;

pub use error::WalError;

use std::collections::VecDeque;
use std::fmt;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use parking_lot::{Condvar, Mutex};
use tokio::sync::oneshot;
use tracing::{info, warn};

use error::Failure;
use segments::{SegmentLog, SegmentMeta};

/// Default size at which a new segment is started: 64 MiB.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;
/// Default disk budget: 4 GiB.
pub const DEFAULT_MAX_DISK_BYTES: u64 = 4 << 30;
/// Default cap on queued, not yet written bytes: 256 MiB.
pub const DEFAULT_MAX_QUEUE_BYTES: usize = 256 << 20;
/// Size of a record header on disk; a record takes this plus its payload.
pub const RECORD_HEADER_BYTES: usize = format::HEADER_LEN;

const LOCK_FILE: &str = "LOCK";

/// When the writer fsyncs, and so when tickets complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncPolicy {
    /// Group commit: one write and one `fdatasync` per batch of queued
    /// records; tickets complete after the fsync.
    #[default]
    Batch,
    /// Tickets complete once written to the OS; fsync at least this often.
    Interval(Duration),
    /// Tickets complete once written to the OS; fsync only on segment
    /// rotation and close.
    Never,
}

/// Options for [`Wal::open`].
#[derive(Debug, Clone)]
pub struct WalOptions {
    /// Directory holding the segment files; created if missing.
    pub dir: PathBuf,
    /// A new segment is started once the active one has reached this size.
    pub segment_bytes: u64,
    /// When data is fsynced.
    pub sync: SyncPolicy,
    /// `append` returns [`WalError::Full`] beyond this many bytes on disk
    /// (counting queued records).
    pub max_disk_bytes: u64,
    /// `append` returns [`WalError::Busy`] beyond this many queued bytes.
    pub max_queue_bytes: usize,
}

impl WalOptions {
    /// Options with the defaults: 64 MiB segments, [`SyncPolicy::Batch`],
    /// 4 GiB on disk, 256 MiB queued.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        WalOptions {
            dir: dir.into(),
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            sync: SyncPolicy::default(),
            max_disk_bytes: DEFAULT_MAX_DISK_BYTES,
            max_queue_bytes: DEFAULT_MAX_QUEUE_BYTES,
        }
    }
}

/// A cheap snapshot of the WAL's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WalStats {
    /// Bytes in all segment files.
    pub disk_bytes: u64,
    /// Number of segment files, including the active one.
    pub segments: usize,
    /// Last sequence number that is durable per the sync policy (0: none).
    pub last_seq: u64,
    /// Bytes (headers included) queued but not yet written.
    pub queue_bytes: usize,
}

/// Completion of one [`Wal::append`]: resolves to the record's sequence
/// number once it is durable per the sync policy and the sink has taken it.
#[derive(Debug)]
#[must_use = "a ticket tells whether the record was made durable"]
pub struct Ticket {
    rx: oneshot::Receiver<Result<u64, WalError>>,
}

impl Ticket {
    /// Blocks the current thread until the ticket resolves. Must not be
    /// called from an async context (it panics there); `.await` it instead.
    pub fn wait_blocking(self) -> Result<u64, WalError> {
        self.rx.blocking_recv().unwrap_or(Err(WalError::Closed))
    }
}

impl Future for Ticket {
    type Output = Result<u64, WalError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rx)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(WalError::Closed)))
    }
}

struct Pending<T> {
    payload: Vec<u8>,
    item: T,
    done: oneshot::Sender<Result<u64, WalError>>,
}

struct Queue<T> {
    items: Vec<Pending<T>>,
    closed: bool,
    failure: Option<Failure>,
}

#[derive(Debug, Default)]
struct Counters {
    disk_bytes: AtomicU64,
    segments: AtomicUsize,
    last_seq: AtomicU64,
    queue_bytes: AtomicUsize,
    /// `disk_bytes + queue_bytes`, kept as one counter so that the `Full`
    /// check never sees a record counted twice (or not at all) while the
    /// writer moves it from the queue to the disk.
    reserved_bytes: AtomicU64,
    /// fdatasync calls on segment files (group-commit tests).
    syncs: AtomicU64,
    #[cfg(test)]
    fail_next_write: std::sync::atomic::AtomicBool,
}

/// State shared by the handle and the writer thread.
///
/// Lock order: `log` before `queue`; never take `log` while holding `queue`.
struct Shared<T> {
    opts: WalOptions,
    queue: Mutex<Queue<T>>,
    /// Wakes the writer: new items or close.
    wake: Condvar,
    log: Mutex<SegmentLog>,
    counters: Counters,
    /// Set by [`Wal::shutdown_then`]: the writer keeps the directory lock
    /// when it stops, so the final checkpoint can still delete segments.
    hold_on_close: std::sync::atomic::AtomicBool,
}

impl<T> Shared<T> {
    /// Enters the failed state and fails everything queued.
    fn fail(&self, failure: &Failure) {
        let drained = {
            let mut queue = self.queue.lock();
            if queue.failure.is_none() {
                queue.failure = Some(failure.clone());
            }
            drain_queue(&mut queue.items, &self.counters)
        };
        for pending in drained {
            writer::reject(pending, failure.to_error());
        }
    }

    /// Closes after a writer panic and fails everything queued.
    fn abandon(&self) {
        self.log.lock().release();
        let drained = {
            let mut queue = self.queue.lock();
            queue.closed = true;
            drain_queue(&mut queue.items, &self.counters)
        };
        for pending in drained {
            writer::reject(pending, WalError::Closed);
        }
    }
}

fn drain_queue<T>(items: &mut Vec<Pending<T>>, counters: &Counters) -> Vec<Pending<T>> {
    let drained = std::mem::take(items);
    let bytes: usize = drained
        .iter()
        .map(|p| RECORD_HEADER_BYTES + p.payload.len())
        .sum();
    counters.queue_bytes.fetch_sub(bytes, Ordering::Relaxed);
    counters
        .reserved_bytes
        .fetch_sub(bytes as u64, Ordering::Relaxed);
    drained
}

/// A write-ahead log whose records carry an item of type `T` to the sink.
///
/// `Wal` is `Send + Sync`; share it with an `Arc`. See the module docs.
pub struct Wal<T: Send + 'static> {
    shared: Arc<Shared<T>>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl<T: Send + 'static> fmt::Debug for Wal<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wal")
            .field("dir", &self.shared.opts.dir)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl<T: Send + 'static> Wal<T> {
    /// Opens (or creates) the WAL in `opts.dir`, replays every intact record
    /// through `replay` in sequence order, repairs a torn tail of the last
    /// segment, and starts the writer thread, which calls `sink` for every
    /// record appended from now on.
    pub fn open<R, E, S>(opts: WalOptions, mut replay: R, sink: S) -> Result<Self, WalError>
    where
        R: FnMut(u64, &[u8]) -> Result<(), E>,
        E: std::error::Error + Send + Sync + 'static,
        S: FnMut(u64, T) + Send + 'static,
    {
        let dir = opts.dir.clone();
        fs::create_dir_all(&dir).map_err(|e| WalError::io(&dir, e))?;
        let lock = lock_dir(&dir)?;

        let mut replay_boxed = |seq: u64, payload: &[u8]| -> Result<(), format::BoxError> {
            replay(seq, payload).map_err(|e| Box::new(e) as format::BoxError)
        };
        let (log, next_seq) = recover(&dir, lock, &mut replay_boxed)?;

        let counters = Counters {
            disk_bytes: AtomicU64::new(log.disk_bytes()),
            reserved_bytes: AtomicU64::new(log.disk_bytes()),
            segments: AtomicUsize::new(log.segment_count()),
            last_seq: AtomicU64::new(next_seq - 1),
            ..Counters::default()
        };
        info!(
            dir = %dir.display(),
            segments = log.segment_count(),
            disk_bytes = log.disk_bytes(),
            last_seq = next_seq - 1,
            "wal opened"
        );
        let shared = Arc::new(Shared {
            opts,
            queue: Mutex::new(Queue {
                items: Vec::new(),
                closed: false,
                failure: None,
            }),
            wake: Condvar::new(),
            log: Mutex::new(log),
            counters,
            hold_on_close: std::sync::atomic::AtomicBool::new(false),
        });

        let thread_shared = Arc::clone(&shared);
        let mut sink = sink;
        let handle = thread::Builder::new()
            .name("tern-wal-writer".to_string())
            .spawn(move || writer::run(&thread_shared, &mut sink, next_seq))
            .map_err(|e| WalError::io(&dir, e))?;

        Ok(Wal {
            shared,
            writer: Mutex::new(Some(handle)),
        })
    }

    /// Queues a record. Never blocks. The ticket resolves once the record
    /// is durable per the sync policy and the sink has been called for it.
    pub fn append(&self, payload: Vec<u8>, item: T) -> Result<Ticket, WalError> {
        let max_queue = self.shared.opts.max_queue_bytes;
        let max_payload = max_queue
            .saturating_sub(RECORD_HEADER_BYTES)
            .min(u32::MAX as usize);
        if payload.len() > max_payload {
            return Err(WalError::TooLarge {
                len: payload.len(),
                max: max_payload,
            });
        }
        let size = RECORD_HEADER_BYTES + payload.len();
        let (done, rx) = oneshot::channel();
        {
            let mut queue = self.shared.queue.lock();
            if queue.closed {
                return Err(WalError::Closed);
            }
            if let Some(failure) = &queue.failure {
                return Err(failure.to_error());
            }
            // Only appends (under this lock) add to the counters, so the
            // checks cannot be raced past.
            let queued = self.shared.counters.queue_bytes.load(Ordering::Relaxed);
            if queued + size > max_queue {
                return Err(WalError::Busy);
            }
            let reserved = self.shared.counters.reserved_bytes.load(Ordering::Relaxed);
            if reserved.saturating_add(size as u64) > self.shared.opts.max_disk_bytes {
                return Err(WalError::Full);
            }
            self.shared
                .counters
                .queue_bytes
                .fetch_add(size, Ordering::Relaxed);
            self.shared
                .counters
                .reserved_bytes
                .fetch_add(size as u64, Ordering::Relaxed);
            queue.items.push(Pending {
                payload,
                item,
                done,
            });
        }
        self.shared.wake.notify_one();
        Ok(Ticket { rx })
    }

    /// Deletes every segment all of whose records have a sequence number
    /// `<= seq`, oldest first. The active segment is rotated first if it
    /// holds records and all of them are covered. Returns the number of
    /// segment files deleted. Safe to call concurrently with appends; it
    /// waits for an in-progress write/fsync but never for the sink.
    pub fn truncate_through(&self, seq: u64) -> Result<usize, WalError> {
        let mut log = self.shared.log.lock();
        if log.is_released() {
            return Err(WalError::Closed);
        }
        if let Err(f) = log.rotate_if_covered(seq, &self.shared.counters) {
            self.shared.fail(&f);
            return Err(f.to_error());
        }
        log.delete_through(seq, &self.shared.counters)
    }

    /// A snapshot of the counters (atomics only; no lock).
    pub fn stats(&self) -> WalStats {
        let c = &self.shared.counters;
        WalStats {
            disk_bytes: c.disk_bytes.load(Ordering::Relaxed),
            segments: c.segments.load(Ordering::Relaxed),
            last_seq: c.last_seq.load(Ordering::Acquire),
            queue_bytes: c.queue_bytes.load(Ordering::Relaxed),
        }
    }

    /// Stops accepting appends, writes and fsyncs everything queued, runs
    /// the sink for it, completes its tickets and joins the writer thread.
    /// Releases the directory lock, so the directory can be reopened even
    /// while this handle lives on (appends then return `Closed`).
    /// Idempotent; concurrent callers all return after the drain. Blocks
    /// for as long as the sink blocks (from async code, call it or drop the
    /// last handle inside `spawn_blocking`). Called from the sink itself it only
    /// stops accepting and returns (the writer finishes on its own).
    pub fn shutdown(&self) {
        self.shared.queue.lock().closed = true;
        self.shared.wake.notify_all();
        let mut writer = self.writer.lock();
        let Some(handle) = writer.take() else {
            return;
        };
        if handle.thread().id() == thread::current().id() {
            warn!("wal shut down from its own sink; not waiting for the writer");
            return;
        }
        if handle.join().is_err() {
            warn!("wal writer thread ended with a panic");
        }
    }

    /// [`Wal::shutdown`], then `f` while the files are still this WAL's (it
    /// may call [`Wal::truncate_through`] once the stores have made the
    /// drained records durable), then releases the directory lock.
    pub fn shutdown_then<R>(&self, f: impl FnOnce(&Self) -> R) -> R {
        self.shared.hold_on_close.store(true, Ordering::SeqCst);
        self.shutdown();
        let r = f(self);
        self.shared.log.lock().release();
        r
    }

    /// [`Wal::shutdown`], consuming the handle.
    pub fn close(self) {
        self.shutdown();
    }
}

impl<T: Send + 'static> Drop for Wal<T> {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Takes the advisory lock on `dir/LOCK`.
fn lock_dir(dir: &Path) -> Result<File, WalError> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| WalError::io(&path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(WalError::io(
            &path,
            io::Error::new(
                io::ErrorKind::WouldBlock,
                "wal directory is already open in another wal instance",
            ),
        )),
        Err(TryLockError::Error(e)) => Err(WalError::io(&path, e)),
    }
}

/// Lists segment files in sequence order.
fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, WalError> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| WalError::io(dir, e))? {
        let entry = entry.map_err(|e| WalError::io(dir, e))?;
        let name = entry.file_name();
        let Some(seq) = name.to_str().and_then(format::parse_segment_name) else {
            continue;
        };
        found.push((seq, entry.path()));
    }
    found.sort_unstable_by_key(|(seq, _)| *seq);
    Ok(found)
}

/// Scans and replays all segments, repairs a torn tail, and opens (or
/// creates) the active segment. Returns the log and the next sequence number.
fn recover(
    dir: &Path,
    dir_lock: File,
    replay: &mut format::ReplayFn<'_>,
) -> Result<(SegmentLog, u64), WalError> {
    let found = list_segments(dir)?;
    let count = found.len();
    let mut closed = VecDeque::with_capacity(count);
    let mut next_seq: Option<u64> = None;
    let mut last: Option<SegmentMeta> = None;

    for (index, (first_seq, path)) in found.into_iter().enumerate() {
        let is_last = index + 1 == count;
        if first_seq == 0 {
            return Err(WalError::Corrupt {
                path,
                offset: 0,
                reason: "segment name carries sequence number 0".to_string(),
            });
        }
        if let Some(expected) = next_seq {
            if first_seq != expected {
                return Err(WalError::Corrupt {
                    path,
                    offset: 0,
                    reason: format!(
                        "segment starts at seq {first_seq} but the previous one ends at seq {}",
                        expected - 1
                    ),
                });
            }
        }
        let scan = format::scan_segment(&path, first_seq, replay)?;
        if let Some(defect) = &scan.defect {
            if !is_last {
                return Err(WalError::Corrupt {
                    path,
                    offset: defect.offset,
                    reason: defect.reason.clone(),
                });
            }
            warn!(
                file = %path.display(),
                offset = defect.offset,
                reason = %defect.reason,
                dropped_bytes = scan.file_len - scan.good_len,
                "wal has a torn or corrupt tail; truncating to the last good record"
            );
            let file = OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|e| WalError::io(&path, e))?;
            file.set_len(scan.good_len)
                .and_then(|()| file.sync_all())
                .map_err(|e| WalError::io(&path, e))?;
        }
        let meta = SegmentMeta {
            first_seq,
            last_seq: scan.next_seq - 1,
            bytes: scan.good_len,
            path,
        };
        next_seq = Some(scan.next_seq);
        if is_last {
            last = Some(meta);
        } else {
            closed.push_back(meta);
        }
    }

    let next_seq = next_seq.unwrap_or(1);
    let (active, file) = match last {
        Some(meta) => {
            let file = OpenOptions::new()
                .append(true)
                .open(&meta.path)
                .map_err(|e| WalError::io(&meta.path, e))?;
            (meta, file)
        }
        None => segments::create_segment(dir, next_seq)?,
    };
    debug_assert_eq!(active.last_seq + 1, next_seq);
    Ok((
        SegmentLog::new(dir.to_path_buf(), closed, active, file, dir_lock),
        next_seq,
    ))
}
