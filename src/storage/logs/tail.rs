//! Live tail: a bounded broadcast of newly written records. Publishing never
//! blocks: a subscriber that falls behind loses the oldest records and is
//! told how many.

use std::sync::Arc;

use tokio::sync::broadcast;

use super::StoredLog;

/// Records kept for subscribers that are behind.
const TAIL_CAPACITY: usize = 4096;

/// What a tail subscriber receives.
#[derive(Debug, Clone)]
pub enum TailEvent {
    Record(Arc<StoredLog>),
    /// This many records were skipped because the subscriber was too slow.
    Lagged(u64),
}

/// The broadcast side, owned by a store.
pub struct TailHub {
    tx: broadcast::Sender<Arc<StoredLog>>,
}

impl Default for TailHub {
    fn default() -> Self {
        TailHub {
            tx: broadcast::channel(TAIL_CAPACITY).0,
        }
    }
}

impl TailHub {
    /// Publishes written records (a no-op without subscribers).
    pub fn publish(&self, records: &[StoredLog]) {
        if self.tx.receiver_count() == 0 {
            return;
        }
        for r in records {
            // An error only means every subscriber left meanwhile.
            let _ = self.tx.send(Arc::new(r.clone()));
        }
    }

    pub fn subscribe(&self) -> TailReceiver {
        TailReceiver {
            rx: self.tx.subscribe(),
        }
    }
}

/// One subscriber.
pub struct TailReceiver {
    rx: broadcast::Receiver<Arc<StoredLog>>,
}

impl TailReceiver {
    /// The next event; `None` once the store is gone.
    pub async fn next(&mut self) -> Option<TailEvent> {
        match self.rx.recv().await {
            Ok(r) => Some(TailEvent::Record(r)),
            Err(broadcast::error::RecvError::Lagged(n)) => Some(TailEvent::Lagged(n)),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}
