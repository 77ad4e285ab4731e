//! The trace store: spans on RocksDB with secondary indexes for search,
//! per-trace summaries, and RED and dependency aggregates maintained at
//! ingest. Only `rocks` imports the engine; `types`, `codec` and `plan` are
//! engine-free and shared with the in-memory store.

pub mod codec;
pub mod plan;
mod rocks;
pub mod types;

pub use rocks::{RocksTraceStore, TraceStoreOptions};
pub use types::{
    DependencyEdge, OperationInfo, RedQuery, RedRow, SearchOutcome, SpanChunk, SpanHead, SpanScan,
    TraceSearch, TraceSummary,
};
