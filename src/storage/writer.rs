//! Store writers: one thread per signal that takes batches from the WAL, in
//! WAL order, and writes them to that signal's store; plus the checkpoint
//! arithmetic that tells the WAL which segments every store has made durable.
//!
//! The WAL calls [`Dispatcher::dispatch`] on its writer thread for each record
//! once it is durable. Queues between the WAL and the store threads are bounded
//! in bytes: a slow store blocks the WAL thread, the WAL queue fills, and
//! ingest answers "busy" instead of growing memory.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::{Condvar, Mutex};

use super::{LogStore, MetricStore, StoreLifecycle, TraceStore};
use crate::model::{Batch, Signal};
use crate::telemetry::Telemetry;

/// The three signal stores.
#[derive(Clone)]
pub struct Stores {
    pub traces: Arc<dyn TraceStore>,
    pub metrics: Arc<dyn MetricStore>,
    pub logs: Arc<dyn LogStore>,
}

impl Stores {
    /// Fresh in-memory stores.
    pub fn memory() -> Self {
        use super::memory::*;
        Stores {
            traces: Arc::new(MemoryTraceStore::default()),
            metrics: Arc::new(MemoryMetricStore::default()),
            logs: Arc::new(MemoryLogStore::default()),
        }
    }

    fn lifecycle(&self, s: Signal) -> &dyn StoreLifecycle {
        match s {
            Signal::Traces => &*self.traces,
            Signal::Metrics => &*self.metrics,
            Signal::Logs => &*self.logs,
        }
    }

    /// Writes one batch to its store.
    fn write(&self, seq: u64, batch: Batch) -> Result<(), super::StorageError> {
        match batch {
            Batch::Traces(s) => self.traces.write(seq, s),
            Batch::Metrics(m) => self.metrics.write(seq, m),
            Batch::Logs(l) => self.logs.write(seq, l),
            Batch::Series(s) => self.metrics.write_series(seq, s),
        }
    }

    /// Flushes every store; returns the first error after trying all.
    pub fn flush_all(&self) -> Result<(), super::StorageError> {
        self.each(|s| s.flush(), "flush")
    }

    /// Closes every store (flush and stop background work).
    pub fn close_all(&self) -> Result<(), super::StorageError> {
        self.each(|s| s.close(), "close")
    }

    fn each(
        &self,
        f: impl Fn(&dyn StoreLifecycle) -> Result<(), super::StorageError>,
        what: &str,
    ) -> Result<(), super::StorageError> {
        let mut first = None;
        for s in Signal::ALL {
            if let Err(e) = f(self.lifecycle(s)) {
                tracing::error!(signal = s.as_str(), error = %e, "store {what} failed");
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }
}

struct QueueState {
    items: VecDeque<(u64, Batch, usize)>,
    bytes: usize,
    closed: bool,
}

/// A FIFO bounded by the bytes of its items. One item larger than the bound
/// is still admitted into an empty queue, so nothing can wedge.
struct BatchQueue {
    state: Mutex<QueueState>,
    not_empty: Condvar,
    not_full: Condvar,
    max_bytes: usize,
}

impl BatchQueue {
    fn new(max_bytes: usize) -> Self {
        BatchQueue {
            state: Mutex::new(QueueState {
                items: VecDeque::new(),
                bytes: 0,
                closed: false,
            }),
            not_empty: Condvar::new(),
            not_full: Condvar::new(),
            max_bytes,
        }
    }

    fn push(&self, seq: u64, batch: Batch, bytes: usize) {
        let mut st = self.state.lock();
        while !st.items.is_empty() && st.bytes + bytes > self.max_bytes && !st.closed {
            self.not_full.wait(&mut st);
        }
        st.bytes += bytes;
        st.items.push_back((seq, batch, bytes));
        self.not_empty.notify_one();
    }

    fn pop(&self) -> Option<(u64, Batch)> {
        let mut st = self.state.lock();
        loop {
            if let Some((seq, batch, bytes)) = st.items.pop_front() {
                st.bytes -= bytes;
                self.not_full.notify_all();
                return Some((seq, batch));
            }
            if st.closed {
                return None;
            }
            self.not_empty.wait(&mut st);
        }
    }

    fn len(&self) -> usize {
        self.state.lock().items.len()
    }

    fn close(&self) {
        self.state.lock().closed = true;
        self.not_empty.notify_all();
        self.not_full.notify_all();
    }
}

/// WAL sequence numbers handed to each store, for the checkpoint.
#[derive(Default)]
struct Progress {
    last_sent: [AtomicU64; 3],
    dispatched: AtomicU64,
    /// Last sequence number each store writer has finished writing.
    applied: [AtomicU64; 3],
}

impl Progress {
    fn record(&self, seq: u64, s: Signal) {
        // Order matters for `checkpoint`: the per-signal number first.
        self.last_sent[s.index()].store(seq, Ordering::SeqCst);
        self.dispatched.store(seq, Ordering::SeqCst);
    }
}

/// Hands durable WAL records to the store threads.
#[derive(Clone)]
pub struct Dispatcher {
    queues: Arc<[BatchQueue; 3]>,
    progress: Arc<Progress>,
    telemetry: Arc<Telemetry>,
}

impl Dispatcher {
    /// Queues `batch` (whose WAL payload was `bytes` long) for its store;
    /// blocks while that store's queue is full.
    pub fn dispatch(&self, seq: u64, batch: Batch, bytes: usize) {
        let s = batch.signal();
        self.progress.record(seq, s);
        let q = &self.queues[s.index()];
        q.push(seq, batch, bytes);
        self.telemetry
            .store_queue_depth
            .with_label_values(&[s.as_str()])
            .set(q.len() as i64);
    }
}

/// The running store writer threads.
pub struct StoreWriters {
    stores: Stores,
    dispatcher: Dispatcher,
    threads: Vec<JoinHandle<()>>,
}

impl StoreWriters {
    /// Starts one writer thread per signal, each with a queue of at most
    /// `queue_bytes` (measured in WAL payload bytes).
    pub fn start(
        stores: Stores,
        queue_bytes: usize,
        telemetry: Arc<Telemetry>,
    ) -> std::io::Result<Self> {
        let queues = Arc::new([
            BatchQueue::new(queue_bytes),
            BatchQueue::new(queue_bytes),
            BatchQueue::new(queue_bytes),
        ]);
        let mut threads = Vec::new();
        let progress = Arc::new(Progress::default());
        for s in Signal::ALL {
            let progress = progress.clone();
            let queues = queues.clone();
            let stores = stores.clone();
            let telemetry = telemetry.clone();
            let handle = std::thread::Builder::new()
                .name(format!("store-{}", s.as_str()))
                .spawn(move || {
                    let q = &queues[s.index()];
                    while let Some((seq, batch)) = q.pop() {
                        telemetry
                            .store_queue_depth
                            .with_label_values(&[s.as_str()])
                            .set(q.len() as i64);
                        let n = batch.len() as u64;
                        let result = stores.write(seq, batch);
                        progress.applied[s.index()].store(seq, Ordering::SeqCst);
                        match result {
                            Ok(()) => telemetry.store_records.with_label_values(&[s.as_str()]).inc_by(n),
                            Err(e) => {
                                // The record stays in the WAL: the store's durable
                                // sequence number does not pass it.
                                telemetry.store_errors.with_label_values(&[s.as_str()]).inc();
                                tracing::error!(signal = s.as_str(), seq, error = %e, "store write failed");
                            }
                        }
                    }
                })?;
            threads.push(handle);
        }
        Ok(StoreWriters {
            dispatcher: Dispatcher {
                queues,
                progress,
                telemetry,
            },
            stores,
            threads,
        })
    }

    pub fn dispatcher(&self) -> Dispatcher {
        self.dispatcher.clone()
    }

    pub fn stores(&self) -> &Stores {
        &self.stores
    }

    /// Applies a record replayed from the WAL at start-up, synchronously,
    /// unless its store has already made it durable.
    pub fn apply_replayed(&self, seq: u64, batch: Batch) -> Result<bool, super::StorageError> {
        let s = batch.signal();
        let p = &self.dispatcher.progress;
        p.record(seq, s);
        let applied = if seq <= self.stores.lifecycle(s).durable_seq() {
            false
        } else {
            self.stores.write(seq, batch)?;
            true
        };
        p.applied[s.index()].store(seq, Ordering::SeqCst);
        Ok(applied)
    }

    /// Whether every batch handed to the store writers has been written to
    /// its store, so that reads see every acknowledged record.
    pub fn settled(&self) -> bool {
        let p = &self.dispatcher.progress;
        Signal::ALL.iter().all(|s| {
            p.applied[s.index()].load(Ordering::SeqCst)
                >= p.last_sent[s.index()].load(Ordering::SeqCst)
        })
    }

    /// The highest WAL sequence number such that every record at or below it
    /// is durable in its store, so WAL segments up to it can be deleted.
    pub fn checkpoint(&self) -> u64 {
        let p = &self.dispatcher.progress;
        // Read the global number first: any record at or below it has
        // already been counted in its signal's `last_sent`.
        let mut t = p.dispatched.load(Ordering::SeqCst);
        for s in Signal::ALL {
            let durable = self.stores.lifecycle(s).durable_seq();
            let sent = p.last_sent[s.index()].load(Ordering::SeqCst);
            if sent > durable {
                t = t.min(durable);
            }
        }
        t
    }

    /// Drains the queues, stops the threads and closes every store.
    /// Returns the checkpoint after the flush.
    pub fn close(mut self) -> Result<u64, super::StorageError> {
        for q in self.dispatcher.queues.iter() {
            q.close();
        }
        for t in self.threads.drain(..) {
            if t.join().is_err() {
                tracing::error!("a store writer thread panicked");
            }
        }
        self.stores.close_all()?;
        Ok(self.checkpoint())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{StorageError, StoreStats};
    use std::sync::atomic::AtomicU64;

    /// A trace store that "persists" on flush by remembering the last seq.
    #[derive(Default)]
    struct FlushingTraceStore {
        inner: crate::storage::memory::MemoryTraceStore,
        written: AtomicU64,
        durable: AtomicU64,
    }

    impl StoreLifecycle for FlushingTraceStore {
        fn durable_seq(&self) -> u64 {
            self.durable.load(Ordering::SeqCst)
        }
        fn flush(&self) -> Result<(), StorageError> {
            self.durable
                .store(self.written.load(Ordering::SeqCst), Ordering::SeqCst);
            Ok(())
        }
        fn stats(&self) -> StoreStats {
            self.inner.stats()
        }
    }

    impl TraceStore for FlushingTraceStore {
        fn write(&self, seq: u64, spans: Vec<crate::model::Span>) -> Result<(), StorageError> {
            self.written.store(seq, Ordering::SeqCst);
            self.inner.write(seq, spans)
        }
        fn trace(
            &self,
            id: &crate::model::TraceId,
        ) -> Result<Vec<crate::model::Span>, StorageError> {
            self.inner.trace(id)
        }
        fn summary(
            &self,
            id: &crate::model::TraceId,
        ) -> Result<Option<crate::storage::traces::TraceSummary>, StorageError> {
            self.inner.summary(id)
        }
        fn search(
            &self,
            q: &crate::storage::traces::TraceSearch,
        ) -> Result<crate::storage::traces::SearchOutcome, StorageError> {
            self.inner.search(q)
        }
        fn services(&self, limit: usize) -> Result<Vec<String>, StorageError> {
            self.inner.services(limit)
        }
        fn operations(
            &self,
            service: &str,
            limit: usize,
        ) -> Result<Vec<crate::storage::traces::OperationInfo>, StorageError> {
            self.inner.operations(service, limit)
        }
        fn dependencies(
            &self,
            start_ns: u64,
            end_ns: u64,
        ) -> Result<Vec<crate::storage::traces::DependencyEdge>, StorageError> {
            self.inner.dependencies(start_ns, end_ns)
        }
        fn red(
            &self,
            q: &crate::storage::traces::RedQuery,
        ) -> Result<Vec<crate::storage::traces::RedRow>, StorageError> {
            self.inner.red(q)
        }
        fn scan_spans(
            &self,
            q: &crate::storage::traces::SpanScan,
            sink: &mut dyn FnMut(crate::storage::traces::SpanChunk) -> bool,
        ) -> Result<crate::storage::ScanStats, StorageError> {
            self.inner.scan_spans(q, sink)
        }
    }

    fn wait_for(cond: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !cond() {
            assert!(
                std::time::Instant::now() < deadline,
                "condition not reached"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    #[test]
    fn checkpoint_waits_for_the_slowest_store() {
        let traces = Arc::new(FlushingTraceStore::default());
        let mut stores = Stores::memory();
        stores.traces = traces.clone();
        let w = StoreWriters::start(stores, 1 << 20, Arc::new(Telemetry::new())).unwrap();
        let d = w.dispatcher();
        let span = crate::storage::suite::span(1, 1, 100, "a");
        // Nothing dispatched: nothing to keep.
        assert_eq!(w.checkpoint(), 0);
        d.dispatch(1, Batch::Traces(vec![span.clone()]), 10);
        wait_for(|| traces.written.load(Ordering::SeqCst) == 1);
        // Written but not flushed: seq 1 must be kept.
        assert_eq!(w.checkpoint(), 0);
        traces.flush().unwrap();
        assert_eq!(w.checkpoint(), 1);
        // A log record goes to the memory log store, which never persists.
        d.dispatch(2, Batch::Logs(vec![]), 10);
        d.dispatch(3, Batch::Traces(vec![span]), 10);
        wait_for(|| traces.written.load(Ordering::SeqCst) == 3);
        traces.flush().unwrap();
        assert_eq!(
            w.checkpoint(),
            0,
            "the log store holds seq 2 in memory only"
        );
        w.close().unwrap();
    }

    #[test]
    fn queue_blocks_when_full_and_drains_on_close() {
        let q = Arc::new(BatchQueue::new(10));
        q.push(1, Batch::Logs(vec![]), 8);
        let q2 = q.clone();
        let pusher = std::thread::spawn(move || q2.push(2, Batch::Logs(vec![]), 8));
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!pusher.is_finished(), "second push must wait for room");
        assert_eq!(q.pop().map(|(s, _)| s), Some(1));
        pusher.join().unwrap();
        q.close();
        assert_eq!(q.pop().map(|(s, _)| s), Some(2));
        assert!(q.pop().is_none());
    }
}
