//! Ingest: turns OTLP requests into validated model batches, writes them to
//! the WAL and acknowledges them once durable.
//!
//! Owns decoding (protobuf, JSON, gzip), validation and limits, the memory
//! budget for in-flight requests, and the hand-off to the WAL. It knows
//! nothing of HTTP or gRPC types beyond raw bytes: the servers in `api` call
//! [`Pipeline`] and map [`IngestError`] to status codes in `api::error`.

pub mod body;
pub mod budget;
pub mod cardinality;
pub mod otlp;
pub mod redact;
pub mod remote_write;

use crate::model::time::now_ns;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::model::{Batch, Signal};
use crate::storage::metrics::SeriesGuard;
use crate::storage::wal::{Wal, WalError};
use crate::telemetry::Telemetry;
pub use budget::{MemoryBudget, Reservation};
pub use otlp::{OtlpRequest, PayloadFormat};

/// A model batch travelling through the WAL to the store writers, with the
/// size of its WAL payload (used to bound the writer queues).
pub struct WalItem {
    pub batch: Batch,
    pub payload_bytes: usize,
}

/// Which front door a request came through, for metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    Http,
    RemoteWrite,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Grpc => "grpc",
            Protocol::Http => "http",
            Protocol::RemoteWrite => "remote_write",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The payload cannot be decoded; retrying will not help.
    #[error("{0}")]
    Malformed(String),
    #[error("request body exceeds the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("unsupported content type {0:?}: use application/x-protobuf or application/json")]
    UnsupportedContentType(String),
    #[error("unsupported content encoding {0:?}: use gzip or identity")]
    UnsupportedEncoding(String),
    /// Too much memory is held by requests in flight; retry after a pause.
    #[error("too many requests in flight: {0}")]
    Overloaded(String),
    /// The WAL or the stores cannot take more right now; retry after a pause.
    #[error("ingest is saturated: {0}")]
    Saturated(String),
    /// The server is shutting down or the WAL failed; nothing was acknowledged.
    #[error("ingest is unavailable: {0}")]
    Unavailable(String),
}

impl IngestError {
    pub fn code(&self) -> &'static str {
        match self {
            IngestError::Malformed(_) => "malformed",
            IngestError::TooLarge { .. } => "too_large",
            IngestError::UnsupportedContentType(_) => "unsupported_content_type",
            IngestError::UnsupportedEncoding(_) => "unsupported_encoding",
            IngestError::Overloaded(_) => "overloaded",
            IngestError::Saturated(_) => "saturated",
            IngestError::Unavailable(_) => "unavailable",
        }
    }

    /// Whether the sender should retry the same request later.
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            IngestError::Overloaded(_) | IngestError::Saturated(_) | IngestError::Unavailable(_)
        )
    }
}

/// The answer to an accepted request: how many records were stored and how
/// many were rejected (an OTLP partial success when non-zero or with a message).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Accepted {
    pub accepted: u64,
    pub rejected: u64,
    pub message: String,
}

/// Validated batch ready for the WAL.
struct Prepared {
    payload: Vec<u8>,
    batch: Batch,
    accepted: Accepted,
}

pub struct Pipeline {
    wal: Arc<Wal<WalItem>>,
    limits: otlp::Limits,
    budget: MemoryBudget,
    telemetry: Arc<Telemetry>,
    retry_after: Duration,
    redactor: Option<Arc<redact::Redactor>>,
    metric_guard: Option<Arc<SeriesGuard>>,
    max_body_bytes: u64,
}

impl Pipeline {
    pub fn new(
        wal: Arc<Wal<WalItem>>,
        limits: otlp::Limits,
        budget: MemoryBudget,
        telemetry: Arc<Telemetry>,
        retry_after: Duration,
    ) -> Self {
        Pipeline {
            wal,
            limits,
            budget,
            telemetry,
            retry_after,
            redactor: None,
            metric_guard: None,
            max_body_bytes: 16 << 20,
        }
    }

    /// The cap on request bodies as received (used by remote_write, whose
    /// decompressed body may be up to 4 times larger).
    pub fn with_max_body_bytes(mut self, n: u64) -> Self {
        self.max_body_bytes = n;
        self
    }

    pub fn max_body_bytes(&self) -> u64 {
        self.max_body_bytes
    }

    /// Consults `guard` (cardinality limits) before acknowledging metrics.
    pub fn with_metric_guard(mut self, guard: Option<Arc<SeriesGuard>>) -> Self {
        self.metric_guard = guard;
        self
    }

    /// Decodes, validates and stores a remote_write body (snappy-compressed
    /// protobuf) of at most `max_bytes` once decompressed.
    pub async fn ingest_remote_write(
        &self,
        body: Bytes,
        max_bytes: u64,
    ) -> Result<Accepted, IngestError> {
        let guard = self.metric_guard.clone();
        let limits = self.limits.clone();
        let prepared = tokio::task::spawn_blocking(move || {
            let raw = remote_write::unsnappy(&body, max_bytes)?;
            let mut req = remote_write::decode(&raw)?;
            let now = crate::storage::metrics::core::now_ms();
            let too_new = remote_write::validate(&mut req, &limits, now)?;
            let mut over_limit = 0u64;
            if let Some(g) = &guard {
                req.timeseries.retain(|ts| {
                    let labels: crate::model::Labels = ts
                        .labels
                        .iter()
                        .map(|l| (l.name.clone(), l.value.clone()))
                        .collect();
                    let ok = g.admit_group(&[&labels], now).is_ok();
                    if !ok {
                        over_limit += ts.samples.len() as u64;
                    }
                    ok
                });
            }
            let payload = remote_write::wal_payload(&req);
            let batch = Batch::Series(remote_write::to_series(req));
            let mut reasons = Vec::new();
            if too_new > 0 {
                reasons.push(format!(
                    "{too_new} samples more than ingest.max_future_skew ahead of the server's clock were rejected"
                ));
            }
            if over_limit > 0 {
                reasons.push(format!(
                    "{over_limit} samples of new series over the cardinality limits were rejected"
                ));
            }
            let accepted = Accepted {
                accepted: batch.len() as u64,
                rejected: too_new + over_limit,
                message: reasons.join("; "),
            };
            Ok::<_, IngestError>(Prepared {
                payload,
                batch,
                accepted,
            })
        })
        .await
        .map_err(|e| IngestError::Unavailable(format!("decoder task failed: {e}")))??;
        self.commit(prepared, Protocol::RemoteWrite).await
    }

    /// Masks log records with `redactor` before they are written.
    pub fn with_redactor(mut self, redactor: Option<redact::Redactor>) -> Self {
        self.redactor = redactor.map(Arc::new);
        self
    }

    pub fn budget(&self) -> &MemoryBudget {
        &self.budget
    }

    /// How long a sender should wait before retrying a saturated request.
    pub fn retry_after(&self) -> Duration {
        self.retry_after
    }

    /// Decodes, validates and stores an OTLP/HTTP body (already decompressed).
    pub async fn ingest_body(
        &self,
        signal: Signal,
        format: PayloadFormat,
        body: Bytes,
    ) -> Result<Accepted, IngestError> {
        let limits = self.limits.clone();
        let redactor = self.redactor.clone();
        let guard = self.metric_guard.clone();
        let prepared = tokio::task::spawn_blocking(move || {
            let req = otlp::decode(signal, format, &body)?;
            let raw = (format == PayloadFormat::Protobuf).then_some(body);
            Ok::<_, IngestError>(prepare(
                req,
                raw,
                &limits,
                redactor.as_deref(),
                guard.as_deref(),
            ))
        })
        .await
        .map_err(|e| IngestError::Unavailable(format!("decoder task failed: {e}")))??;
        self.commit(prepared, Protocol::Http).await
    }

    /// Validates and stores a request decoded by the gRPC server.
    pub async fn ingest_request(&self, req: OtlpRequest) -> Result<Accepted, IngestError> {
        let limits = self.limits.clone();
        let redactor = self.redactor.clone();
        let guard = self.metric_guard.clone();
        let prepared = tokio::task::spawn_blocking(move || {
            prepare(req, None, &limits, redactor.as_deref(), guard.as_deref())
        })
        .await
        .map_err(|e| IngestError::Unavailable(format!("decoder task failed: {e}")))?;
        self.commit(prepared, Protocol::Grpc).await
    }

    async fn commit(&self, p: Prepared, protocol: Protocol) -> Result<Accepted, IngestError> {
        let signal = p.batch.signal();
        let labels = [signal.as_str(), protocol.as_str()];
        if p.accepted.rejected > 0 {
            self.telemetry
                .ingest_rejected
                .with_label_values(&labels)
                .inc_by(p.accepted.rejected);
        }
        if p.batch.is_empty() {
            return Ok(p.accepted);
        }
        let item = WalItem {
            payload_bytes: p.payload.len(),
            batch: p.batch,
        };
        let ticket = self
            .wal
            .append(p.payload, item)
            .map_err(|e| self.wal_error(e))?;
        ticket.await.map_err(|e| self.wal_error(e))?;
        self.telemetry
            .ingest_records
            .with_label_values(&labels)
            .inc_by(p.accepted.accepted);
        Ok(p.accepted)
    }

    fn wal_error(&self, e: WalError) -> IngestError {
        match e {
            WalError::Busy => IngestError::Saturated("the write-ahead log queue is full".into()),
            WalError::Full => IngestError::Saturated(
                "the write-ahead log is at its disk limit while stores catch up".into(),
            ),
            WalError::Closed => IngestError::Unavailable("the server is shutting down".into()),
            WalError::TooLarge { max, .. } => IngestError::TooLarge { limit: max as u64 },
            other => {
                tracing::error!(error = %other, "write-ahead log append failed");
                IngestError::Unavailable(format!("write-ahead log failure: {other}"))
            }
        }
    }
}

/// Validation, WAL encoding and model conversion: the CPU part of ingest.
fn prepare(
    mut req: OtlpRequest,
    raw: Option<Bytes>,
    limits: &otlp::Limits,
    redactor: Option<&redact::Redactor>,
    guard: Option<&SeriesGuard>,
) -> Prepared {
    let rej = otlp::validate(&mut req, limits, now_ns());
    let redacted = match (&mut req, redactor) {
        (OtlpRequest::Logs(r), Some(red)) => red.redact_logs(r),
        _ => 0,
    };
    // Unchanged protobuf bodies go to the WAL as received: no re-encoding.
    let mut payload = match raw {
        Some(raw) if !rej.modified && redacted == 0 => {
            otlp::wal_payload_from_raw(req.signal(), &raw)
        }
        _ => otlp::wal_payload(&req),
    };
    let mut batch = otlp::to_model(req);
    // Cardinality limits are decided here, before the WAL acknowledges.
    let mut refused = 0;
    if let (Some(g), Batch::Metrics(m)) = (guard, &mut batch) {
        refused = cardinality::apply(g, m, &mut payload);
    }
    let mut message = rej.message();
    if refused > 0 {
        if !message.is_empty() {
            message.push_str("; ");
        }
        message.push_str(&format!(
            "{refused} data points of new series over the cardinality limits were rejected"
        ));
    }
    let accepted = Accepted {
        accepted: batch.len() as u64,
        rejected: rej.count + refused,
        message,
    };
    Prepared {
        payload,
        batch,
        accepted,
    }
}
