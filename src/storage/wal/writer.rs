//! The writer thread: group commit, the sink, and ticket completion.

use std::mem;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::time::Instant;

use tracing::{debug, error};

use super::format::{self, HEADER_LEN};
use super::{Pending, Shared, SyncPolicy, WalError};

/// Body of the writer thread. Returns once the WAL is closed and drained.
pub(super) fn run<T: Send + 'static>(
    shared: &Shared<T>,
    sink: &mut dyn FnMut(u64, T),
    next_seq: u64,
) {
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| writer_loop(shared, sink, next_seq)));
    if outcome.is_err() {
        // Most likely the sink panicked. Tickets of the batch in flight were
        // dropped while unwinding (they resolve to `Closed`); refuse and fail
        // everything else so that no ticket waits forever.
        error!("wal writer thread panicked; the wal is closed");
        shared.abandon();
    }
}

struct SyncState {
    policy: SyncPolicy,
    /// Data was written since the last fsync.
    dirty: bool,
    last_sync: Instant,
}

impl SyncState {
    /// Whether the batch about to be written must be fsynced before its
    /// tickets complete (or because the interval has run out).
    fn sync_with_batch(&self) -> bool {
        match self.policy {
            SyncPolicy::Batch => true,
            SyncPolicy::Interval(every) => self.last_sync.elapsed() >= every,
            SyncPolicy::Never => false,
        }
    }

    /// When the idle writer must wake up to fsync, if ever.
    fn deadline(&self) -> Option<Instant> {
        match self.policy {
            SyncPolicy::Interval(every) if self.dirty => self.last_sync.checked_add(every),
            _ => None,
        }
    }

    fn synced(&mut self) {
        self.dirty = false;
        self.last_sync = Instant::now();
    }
}

enum Work<T> {
    Batch(Vec<Pending<T>>),
    IntervalSync,
    Close,
}

fn writer_loop<T: Send + 'static>(
    shared: &Shared<T>,
    sink: &mut dyn FnMut(u64, T),
    mut next_seq: u64,
) {
    let mut state = SyncState {
        policy: shared.opts.sync,
        dirty: false,
        last_sync: Instant::now(),
    };
    loop {
        let work = {
            let mut queue = shared.queue.lock();
            loop {
                if !queue.items.is_empty() {
                    break Work::Batch(mem::take(&mut queue.items));
                }
                if queue.closed {
                    break Work::Close;
                }
                match state.deadline() {
                    Some(deadline) if Instant::now() >= deadline => break Work::IntervalSync,
                    Some(deadline) => {
                        shared.wake.wait_until(&mut queue, deadline);
                    }
                    None => shared.wake.wait(&mut queue),
                }
            }
        };
        match work {
            Work::Batch(batch) => {
                next_seq = write_batch(shared, sink, batch, next_seq, &mut state);
            }
            Work::IntervalSync => {
                let mut log = shared.log.lock();
                if log.failure().is_none() {
                    if let Err(f) = log.sync(&shared.counters) {
                        error!(error = %f.to_error(), "wal fsync failed; the wal is now failed");
                        shared.fail(&f);
                    }
                }
                state.synced();
            }
            Work::Close => {
                let mut log = shared.log.lock();
                if log.failure().is_none() {
                    if let Err(f) = log.sync(&shared.counters) {
                        error!(error = %f.to_error(), "wal fsync on close failed");
                        shared.fail(&f);
                    }
                }
                if !shared
                    .hold_on_close
                    .load(std::sync::atomic::Ordering::SeqCst)
                {
                    log.release();
                }
                debug!(last_seq = next_seq - 1, "wal writer stopped");
                return;
            }
        }
    }
}

/// Writes one group-commit batch, runs the sink and completes the tickets.
/// Returns the next sequence number.
fn write_batch<T: Send + 'static>(
    shared: &Shared<T>,
    sink: &mut dyn FnMut(u64, T),
    batch: Vec<Pending<T>>,
    first_seq: u64,
    state: &mut SyncState,
) -> u64 {
    let count = batch.len() as u64;
    let total: usize = batch.iter().map(|p| HEADER_LEN + p.payload.len()).sum();
    let mut buf = Vec::with_capacity(total);
    let mut ends = Vec::with_capacity(batch.len());
    let mut waiters = Vec::with_capacity(batch.len());
    for (seq, pending) in (first_seq..).zip(batch) {
        format::encode_record(&mut buf, seq, &pending.payload);
        ends.push(buf.len());
        waiters.push((pending.item, pending.done));
    }

    let sync = state.sync_with_batch();
    let result = shared.log.lock().write_batch(
        &buf,
        &ends,
        first_seq,
        shared.opts.segment_bytes,
        sync,
        &shared.counters,
    );
    drop(buf);
    shared
        .counters
        .queue_bytes
        .fetch_sub(total, Ordering::Relaxed);

    match result {
        Ok(()) => {
            if sync {
                state.synced();
            } else {
                state.dirty = true;
            }
            shared
                .counters
                .last_seq
                .store(first_seq + count - 1, Ordering::Release);
            for (seq, (item, done)) in (first_seq..).zip(waiters) {
                sink(seq, item);
                // The receiver may have been dropped; that is fine.
                let _ = done.send(Ok(seq));
            }
            first_seq + count
        }
        Err(f) => {
            // These records are no longer queued and count as not written.
            shared
                .counters
                .reserved_bytes
                .fetch_sub(total as u64, Ordering::Relaxed);
            let err = f.to_error();
            error!(error = %err, records = count, "wal write failed; the wal is now failed");
            shared.fail(&f);
            for (_, done) in waiters {
                let _ = done.send(Err(f.to_error()));
            }
            // Nothing is written after a failure, so the value is moot.
            first_seq
        }
    }
}

/// Resolves a ticket sender with `err` (helper for draining queues).
pub(super) fn reject<T>(pending: Pending<T>, err: WalError) {
    let _ = pending.done.send(Err(err));
}
