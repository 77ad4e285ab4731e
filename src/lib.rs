//! tern: a one-binary observability backend. OTLP in (gRPC and HTTP), a
//! crash-safe write-ahead log, per-signal stores, and query APIs on top.
//!
//! See ARCHITECTURE.md for the map of modules; dependencies point one way:
//! `api` → `ingest` / `query` / `analysis` → `storage` traits → `model`.

/// mimalloc for everything linking the crate (server, tests, benchmarks):
/// ingest and queries allocate and free many short-lived buffers, which
/// glibc's allocator serves markedly slower.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub mod analysis;
pub mod api;
pub mod app;
pub mod config;
pub mod ingest;
pub mod loadgen;
pub mod model;
pub mod query;
pub mod storage;
pub mod telemetry;

#[cfg(test)]
pub(crate) mod testutil;
