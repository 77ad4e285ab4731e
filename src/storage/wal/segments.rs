//! The set of segment files on disk and the active (appendable) one.
//!
//! A [`SegmentLog`] lives behind one mutex shared by the writer thread
//! (writes, fsyncs, size-based rotation) and `Wal::truncate_through`
//! (deletion, rotation of a fully covered active segment).

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::mem;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use tracing::debug;

use super::error::Failure;
use super::format::segment_file_name;
use super::{Counters, WalError};

/// One segment file. `last_seq == first_seq - 1` while it holds no record.
#[derive(Debug)]
pub(super) struct SegmentMeta {
    pub(super) first_seq: u64,
    pub(super) last_seq: u64,
    pub(super) bytes: u64,
    pub(super) path: PathBuf,
}

impl SegmentMeta {
    pub(super) fn empty(dir: &Path, first_seq: u64) -> Self {
        SegmentMeta {
            first_seq,
            last_seq: first_seq - 1,
            bytes: 0,
            path: dir.join(segment_file_name(first_seq)),
        }
    }
}

#[derive(Debug)]
pub(super) struct SegmentLog {
    dir: PathBuf,
    /// Full, fsynced segments, oldest first.
    closed: VecDeque<SegmentMeta>,
    active: SegmentMeta,
    file: File,
    /// Set after a failed write, fsync or rotation: nothing more is written.
    failed: Option<Failure>,
    /// The advisory directory lock; `None` once the writer has stopped.
    dir_lock: Option<File>,
}

/// fsync a directory so that created or removed entries are durable.
pub(super) fn sync_dir(dir: &Path) -> Result<(), WalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| WalError::io(dir, e))
}

/// Creates a new, empty segment file and makes its directory entry durable.
pub(super) fn create_segment(dir: &Path, first_seq: u64) -> Result<(SegmentMeta, File), WalError> {
    let meta = SegmentMeta::empty(dir, first_seq);
    let file = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(&meta.path)
        .map_err(|e| WalError::io(&meta.path, e))?;
    sync_dir(dir)?;
    Ok((meta, file))
}

fn fail(path: &Path, err: &io::Error) -> Failure {
    Failure::new(path, err)
}

impl SegmentLog {
    pub(super) fn new(
        dir: PathBuf,
        closed: VecDeque<SegmentMeta>,
        active: SegmentMeta,
        file: File,
        dir_lock: File,
    ) -> Self {
        SegmentLog {
            dir,
            closed,
            active,
            file,
            failed: None,
            dir_lock: Some(dir_lock),
        }
    }

    /// Called when the writer stops: releases the directory lock, after
    /// which nothing touches the files any more.
    pub(super) fn release(&mut self) {
        self.dir_lock = None;
    }

    pub(super) fn is_released(&self) -> bool {
        self.dir_lock.is_none()
    }

    pub(super) fn segment_count(&self) -> usize {
        self.closed.len() + 1
    }

    pub(super) fn disk_bytes(&self) -> u64 {
        self.closed.iter().map(|s| s.bytes).sum::<u64>() + self.active.bytes
    }

    pub(super) fn failure(&self) -> Option<&Failure> {
        self.failed.as_ref()
    }

    fn poison<R>(&mut self, result: Result<R, Failure>) -> Result<R, Failure> {
        if let Err(f) = &result {
            if self.failed.is_none() {
                self.failed = Some(f.clone());
            }
        }
        result
    }

    /// Writes an encoded batch whose records carry `first_seq..` and end at
    /// the offsets in `ends`, rotating whenever the active segment has
    /// reached `segment_bytes` before the next record. fsyncs at the end when
    /// `sync` is set. Any error poisons the log.
    pub(super) fn write_batch(
        &mut self,
        buf: &[u8],
        ends: &[usize],
        first_seq: u64,
        segment_bytes: u64,
        sync: bool,
        counters: &Counters,
    ) -> Result<(), Failure> {
        if let Some(f) = &self.failed {
            return Err(f.clone());
        }
        let result = self.write_batch_inner(buf, ends, first_seq, segment_bytes, sync, counters);
        self.poison(result)
    }

    fn write_batch_inner(
        &mut self,
        buf: &[u8],
        ends: &[usize],
        first_seq: u64,
        segment_bytes: u64,
        sync: bool,
        counters: &Counters,
    ) -> Result<(), Failure> {
        if ends.is_empty() {
            return Ok(());
        }
        let mut chunk_start = 0usize;
        let mut record_start = 0usize;
        for (i, &end) in ends.iter().enumerate() {
            let seq = first_seq + i as u64;
            let size = self.active.bytes + (record_start - chunk_start) as u64;
            if size > 0 && size >= segment_bytes {
                self.write_chunk(&buf[chunk_start..record_start], seq - 1, counters)?;
                self.rotate_inner(counters)?;
                chunk_start = record_start;
            }
            record_start = end;
        }
        let last_seq = first_seq + ends.len() as u64 - 1;
        self.write_chunk(&buf[chunk_start..], last_seq, counters)?;
        if sync {
            self.sync_inner(counters)?;
        }
        Ok(())
    }

    fn write_chunk(
        &mut self,
        bytes: &[u8],
        last_seq: u64,
        counters: &Counters,
    ) -> Result<(), Failure> {
        if bytes.is_empty() {
            return Ok(());
        }
        #[cfg(test)]
        if counters.fail_next_write.swap(false, Ordering::SeqCst) {
            return Err(fail(
                &self.active.path,
                &io::Error::other("injected write failure"),
            ));
        }
        self.file
            .write_all(bytes)
            .map_err(|e| fail(&self.active.path, &e))?;
        let len = bytes.len() as u64;
        self.active.bytes += len;
        self.active.last_seq = last_seq;
        counters.disk_bytes.fetch_add(len, Ordering::Relaxed);
        Ok(())
    }

    /// fdatasync of the active segment. Any error poisons the log.
    pub(super) fn sync(&mut self, counters: &Counters) -> Result<(), Failure> {
        if let Some(f) = &self.failed {
            return Err(f.clone());
        }
        let result = self.sync_inner(counters);
        self.poison(result)
    }

    fn sync_inner(&mut self, counters: &Counters) -> Result<(), Failure> {
        self.file
            .sync_data()
            .map_err(|e| fail(&self.active.path, &e))?;
        counters.syncs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// fsyncs the active segment, then starts a new one named after the next
    /// sequence number.
    fn rotate_inner(&mut self, counters: &Counters) -> Result<(), Failure> {
        self.sync_inner(counters)?;
        let (meta, file) =
            create_segment(&self.dir, self.active.last_seq + 1).map_err(|e| match e {
                WalError::Io { path, source } => fail(&path, &source),
                other => fail(&self.dir, &io::Error::other(other.to_string())),
            })?;
        self.file = file;
        let old = mem::replace(&mut self.active, meta);
        self.closed.push_back(old);
        counters
            .segments
            .store(self.segment_count(), Ordering::Relaxed);
        Ok(())
    }

    /// Rotates if the active segment holds records and all of them are
    /// `<= seq`, so that `delete_through` can reclaim it. Any error poisons
    /// the log. Returns whether it rotated.
    pub(super) fn rotate_if_covered(
        &mut self,
        seq: u64,
        counters: &Counters,
    ) -> Result<bool, Failure> {
        if self.failed.is_some() || self.active.bytes == 0 || self.active.last_seq > seq {
            return Ok(false);
        }
        let result = self.rotate_inner(counters).map(|()| true);
        self.poison(result)
    }

    /// Deletes closed segments, oldest first, while all their records are
    /// `<= seq`. Errors here do not poison the log: no unacknowledged data
    /// is involved.
    pub(super) fn delete_through(
        &mut self,
        seq: u64,
        counters: &Counters,
    ) -> Result<usize, WalError> {
        let mut deleted = 0;
        while let Some(front) = self.closed.front() {
            if front.last_seq > seq {
                break;
            }
            match fs::remove_file(&front.path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(WalError::io(&front.path, e)),
            }
            debug!(
                first_seq = front.first_seq,
                last_seq = front.last_seq,
                file = %front.path.display(),
                "wal segment deleted"
            );
            let bytes = front.bytes;
            self.closed.pop_front();
            counters.disk_bytes.fetch_sub(bytes, Ordering::Relaxed);
            counters.reserved_bytes.fetch_sub(bytes, Ordering::Relaxed);
            counters
                .segments
                .store(self.segment_count(), Ordering::Relaxed);
            deleted += 1;
            // One fsync per unlink keeps the surviving segments contiguous
            // even if the machine crashes half-way through.
            sync_dir(&self.dir)?;
        }
        Ok(deleted)
    }
}
