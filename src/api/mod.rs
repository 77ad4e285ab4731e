//! The network front: the HTTP API (axum), the OTLP/HTTP and OTLP/gRPC
//! receivers, and the one mapping from error codes to HTTP and gRPC statuses.
//!
//! Handlers parse requests and render responses; the work is done by
//! `ingest` (and later `query` and `analysis`).

pub mod error;
pub mod grpc;
pub mod http;
pub mod ui;

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use crate::ingest::Pipeline;
use crate::storage::wal::{Wal, WalStats};
use crate::storage::writer::Stores;
use crate::telemetry::Telemetry;

/// Life stage of the server, as `/readyz` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    Starting = 0,
    Replaying = 1,
    Ready = 2,
    ShuttingDown = 3,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Replaying => "replaying the write-ahead log",
            Phase::Ready => "ready",
            Phase::ShuttingDown => "shutting down",
        }
    }
}

/// Shared, cheap-to-clone handle to the phase.
#[derive(Clone, Default)]
pub struct PhaseCell(Arc<AtomicU8>);

impl PhaseCell {
    pub fn set(&self, p: Phase) {
        self.0.store(p as u8, Ordering::SeqCst);
    }

    pub fn get(&self) -> Phase {
        match self.0.load(Ordering::SeqCst) {
            0 => Phase::Starting,
            1 => Phase::Replaying,
            2 => Phase::Ready,
            _ => Phase::ShuttingDown,
        }
    }
}

/// What the HTTP API handlers can reach.
#[derive(Clone)]
pub struct ApiState {
    pub telemetry: Arc<Telemetry>,
    pub phase: PhaseCell,
    /// Set once the WAL is open; absent while starting.
    pub runtime: Arc<parking_lot::RwLock<Option<Running>>>,
}

/// The parts that exist only once start-up has opened the stores and WAL.
#[derive(Clone)]
pub struct Running {
    pub stores: Stores,
    pub pipeline: Arc<Pipeline>,
    pub wal_stats: Arc<dyn Fn() -> WalStats + Send + Sync>,
    /// The alerting service, unless `alerting.enabled` is false.
    pub alerting: Option<Arc<crate::analysis::alerting::service::AlertingService>>,
}

impl Running {
    pub fn new<T: Send + 'static>(
        stores: Stores,
        pipeline: Arc<Pipeline>,
        wal: Arc<Wal<T>>,
    ) -> Self {
        Running {
            stores,
            pipeline,
            wal_stats: Arc::new(move || wal.stats()),
            alerting: None,
        }
    }

    pub fn with_alerting(
        mut self,
        alerting: Option<Arc<crate::analysis::alerting::service::AlertingService>>,
    ) -> Self {
        self.alerting = alerting;
        self
    }
}
