//! The server's own telemetry: structured logs via `tracing`, and its own
//! metrics exposed on `/metrics` in the Prometheus text format.
//!
//! Owns the metric registry and the names of every self-metric. Other modules
//! record into the handles of [`Telemetry`]; nothing here reads the stores.

use std::time::Instant;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// Handles for every metric the server exports about itself.
pub struct Telemetry {
    registry: Registry,
    started: Instant,
    /// Records accepted by ingest, by signal and protocol.
    pub ingest_records: IntCounterVec,
    /// Records rejected by validation (partial success), by signal and protocol.
    pub ingest_rejected: IntCounterVec,
    /// Request body bytes received on the wire, by signal and protocol.
    pub ingest_bytes: IntCounterVec,
    /// Ingest requests by signal, protocol and outcome.
    pub ingest_requests: IntCounterVec,
    /// Ingest request latency (receive to acknowledgement).
    pub ingest_latency: HistogramVec,
    /// Bytes held by in-flight ingest requests.
    pub ingest_inflight_bytes: IntGauge,
    /// Batches waiting for each store writer.
    pub store_queue_depth: IntGaugeVec,
    /// Records written to each store.
    pub store_records: IntCounterVec,
    /// Store write failures.
    pub store_errors: IntCounterVec,
    pub wal_disk_bytes: IntGauge,
    pub wal_segments: IntGauge,
    pub wal_queue_bytes: IntGauge,
    pub wal_last_seq: IntGauge,
    /// Highest WAL sequence number up to which every store has made its data durable.
    pub wal_checkpoint_seq: IntGauge,
    /// HTTP API requests by route and status code.
    pub http_requests: IntCounterVec,
}

fn counter(reg: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| panic!("metric {name} definition is invalid: {e}"));
    reg.register(Box::new(c.clone()))
        .unwrap_or_else(|e| panic!("metric {name} registered twice: {e}"));
    c
}

fn gauge(reg: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help)
        .unwrap_or_else(|e| panic!("metric {name} definition is invalid: {e}"));
    reg.register(Box::new(g.clone()))
        .unwrap_or_else(|e| panic!("metric {name} registered twice: {e}"));
    g
}

impl Telemetry {
    /// Builds the registry. Metric definitions are static, so a failure here
    /// is a programming error caught by the unit test below.
    pub fn new() -> Self {
        let registry = Registry::new();
        let r = &registry;
        let ingest_latency = HistogramVec::new(
            HistogramOpts::new(
                "tern_ingest_request_duration_seconds",
                "Time from receiving an ingest request to acknowledging it",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ]),
            &["signal", "protocol"],
        )
        .unwrap_or_else(|e| panic!("latency histogram definition is invalid: {e}"));
        registry
            .register(Box::new(ingest_latency.clone()))
            .unwrap_or_else(|e| panic!("latency histogram registered twice: {e}"));
        let store_queue_depth = IntGaugeVec::new(
            Opts::new(
                "tern_store_queue_batches",
                "Batches waiting to be written to each store",
            ),
            &["signal"],
        )
        .unwrap_or_else(|e| panic!("queue gauge definition is invalid: {e}"));
        registry
            .register(Box::new(store_queue_depth.clone()))
            .unwrap_or_else(|e| panic!("queue gauge registered twice: {e}"));
        Telemetry {
            ingest_records: counter(
                r,
                "tern_ingest_records_total",
                "Records (spans, data points, log records) accepted",
                &["signal", "protocol"],
            ),
            ingest_rejected: counter(
                r,
                "tern_ingest_rejected_records_total",
                "Records rejected as invalid and reported in partial success",
                &["signal", "protocol"],
            ),
            ingest_bytes: counter(
                r,
                "tern_ingest_bytes_total",
                "Request body bytes received as sent on the wire",
                &["signal", "protocol"],
            ),
            ingest_requests: counter(
                r,
                "tern_ingest_requests_total",
                "Ingest requests by outcome",
                &["signal", "protocol", "outcome"],
            ),
            ingest_latency,
            ingest_inflight_bytes: gauge(
                r,
                "tern_ingest_inflight_bytes",
                "Bytes held by ingest requests being decoded",
            ),
            store_queue_depth,
            store_records: counter(
                r,
                "tern_store_records_total",
                "Records written to the stores",
                &["signal"],
            ),
            store_errors: counter(
                r,
                "tern_store_errors_total",
                "Store write failures",
                &["signal"],
            ),
            wal_disk_bytes: gauge(r, "tern_wal_disk_bytes", "Bytes of WAL segments on disk"),
            wal_segments: gauge(r, "tern_wal_segments", "WAL segment files on disk"),
            wal_queue_bytes: gauge(
                r,
                "tern_wal_queue_bytes",
                "Bytes queued for the WAL writer and not yet written",
            ),
            wal_last_seq: gauge(r, "tern_wal_last_seq", "Last durable WAL sequence number"),
            wal_checkpoint_seq: gauge(
                r,
                "tern_wal_checkpoint_seq",
                "WAL sequence number up to which all stores are durable",
            ),
            http_requests: counter(
                r,
                "tern_http_requests_total",
                "HTTP API requests by route and status",
                &["route", "status"],
            ),
            started: Instant::now(),
            registry,
        }
    }

    /// The registry, for subsystems that register metrics of their own.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Seconds since the server started.
    pub fn uptime_secs(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Renders every metric in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let families = self.registry.gather();
        if let Err(e) = TextEncoder::new().encode(&families, &mut buf) {
            tracing::error!(error = %e, "encoding self metrics failed");
        }
        String::from_utf8_lossy(&buf).into_owned()
    }
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}

/// Installs the global `tracing` subscriber. `level` is an env-filter
/// directive such as `info` or `tern=debug,tower=warn`; `RUST_LOG` wins when set.
pub fn init_logging(level: &str, json: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second init (tests) is harmless: the first subscriber stays.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_registered_metrics() {
        let t = Telemetry::new();
        t.ingest_records
            .with_label_values(&["traces", "grpc"])
            .inc_by(3);
        let text = t.render();
        assert!(text.contains("tern_ingest_records_total{protocol=\"grpc\",signal=\"traces\"} 3"));
        assert!(text.contains("# TYPE tern_wal_disk_bytes gauge"));
    }
}
