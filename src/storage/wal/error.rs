//! The error type of the write-ahead log.

use std::io;
use std::path::{Path, PathBuf};

/// Errors returned by the write-ahead log.
///
/// `Busy` and `Full` are transient back-pressure signals (map them to
/// HTTP 503/429 with `Retry-After`); `Io` after a failed write or fsync is
/// sticky until the WAL is reopened.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// A file-system operation failed. After a failed write or fsync the WAL
    /// is in a failed state and every later append returns this error.
    #[error("wal i/o error on {}: {source}", path.display())]
    Io {
        /// The file or directory the operation was on.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A segment that is not the last one holds a damaged record or the
    /// segments do not form one contiguous sequence.
    #[error("wal corrupt in {} at offset {offset}: {reason}", path.display())]
    Corrupt {
        /// The damaged segment file.
        path: PathBuf,
        /// Byte offset of the first bad record in that file.
        offset: u64,
        /// What was wrong.
        reason: String,
    },
    /// More than `max_queue_bytes` are queued but not yet written.
    #[error("wal queue is full, retry later")]
    Busy,
    /// More than `max_disk_bytes` would be held on disk.
    #[error("wal disk budget is exhausted, retry later")]
    Full,
    /// The WAL was shut down.
    #[error("wal is closed")]
    Closed,
    /// A single record can never fit in the queue (or in the 32-bit length field).
    #[error("wal record of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Payload length.
        len: usize,
        /// Largest accepted payload length.
        max: usize,
    },
    /// The replay callback given to [`super::Wal::open`] failed.
    #[error("wal replay callback failed: {0}")]
    Replay(#[source] Box<dyn std::error::Error + Send + Sync + 'static>),
}

impl WalError {
    /// A stable machine-readable code, e.g. for logs and metrics labels.
    pub fn code(&self) -> &'static str {
        match self {
            WalError::Io { .. } => "wal_io",
            WalError::Corrupt { .. } => "wal_corrupt",
            WalError::Busy => "wal_busy",
            WalError::Full => "wal_full",
            WalError::Closed => "wal_closed",
            WalError::TooLarge { .. } => "wal_too_large",
            WalError::Replay(_) => "wal_replay",
        }
    }

    pub(super) fn io(path: &Path, source: io::Error) -> Self {
        WalError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// A write or fsync failure, kept so that it can be reported to every
/// affected ticket and to every later append (`io::Error` is not `Clone`).
#[derive(Debug, Clone)]
pub(super) struct Failure {
    path: PathBuf,
    kind: io::ErrorKind,
    message: String,
}

impl Failure {
    pub(super) fn new(path: &Path, err: &io::Error) -> Self {
        Failure {
            path: path.to_path_buf(),
            kind: err.kind(),
            message: err.to_string(),
        }
    }

    pub(super) fn to_error(&self) -> WalError {
        WalError::Io {
            path: self.path.clone(),
            source: io::Error::new(self.kind, self.message.clone()),
        }
    }
}
