//! Wiring: opens the data directory, the stores and the WAL, replays the WAL,
//! starts the servers and background tasks, and shuts everything down in the
//! order that loses nothing.
//!
//! Shutdown order: stop accepting requests and let in-flight ones finish
//! (their data reaches the WAL and is acknowledged), close the WAL (every
//! queued record is written, synced and handed to the store writers), drain
//! the store writers, flush the stores, then delete the WAL segments the
//! stores have made durable.

use std::fs::File;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::grpc::OtlpGrpc;
use crate::api::http::otlp::{otlp_router, OtlpHttpState};
use crate::api::{ApiState, Phase, PhaseCell, Running};
use crate::config::{Config, SyncMode};
use crate::ingest::otlp::{decode_wal_payload, Limits};
use crate::ingest::{MemoryBudget, Pipeline, WalItem};
use crate::storage::wal::{SyncPolicy, Wal, WalOptions};
use crate::storage::writer::{StoreWriters, Stores};
use crate::telemetry::Telemetry;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("cannot use data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("data directory {0} is in use by another process")]
    Locked(PathBuf),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("write-ahead log: {0}")]
    Wal(#[from] crate::storage::wal::WalError),
    #[error("storage: {0}")]
    Storage(#[from] crate::storage::StorageError),
    #[error("{0}")]
    Other(String),
}

impl AppError {
    pub fn code(&self) -> &'static str {
        match self {
            AppError::DataDir { .. } => "data_dir",
            AppError::Locked(_) => "data_dir_locked",
            AppError::Bind { .. } => "bind",
            AppError::Wal(e) => e.code(),
            AppError::Storage(e) => e.code(),
            AppError::Other(_) => "internal",
        }
    }
}

/// The addresses the servers actually listen on (useful with port 0).
#[derive(Debug, Clone, Copy)]
pub struct BoundAddrs {
    pub http: SocketAddr,
    pub otlp_grpc: SocketAddr,
    pub otlp_http: SocketAddr,
}

/// A running server.
pub struct Server {
    pub addrs: BoundAddrs,
    stores: Stores,
    settled: Arc<dyn Fn() -> bool + Send + Sync>,
    telemetry: Arc<Telemetry>,
    cancel: CancellationToken,
    task: JoinHandle<Result<(), AppError>>,
}

impl Server {
    pub fn stores(&self) -> &Stores {
        &self.stores
    }

    /// Whether every acknowledged record has reached its store (reads see it).
    pub fn settled(&self) -> bool {
        (self.settled)()
    }

    pub fn telemetry(&self) -> &Arc<Telemetry> {
        &self.telemetry
    }

    /// A token that starts a graceful shutdown when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Shuts down gracefully and waits until everything is flushed.
    pub async fn shutdown(self) -> Result<(), AppError> {
        self.cancel.cancel();
        self.wait().await
    }

    /// Waits until the server stops (after its shutdown token is cancelled).
    pub async fn wait(self) -> Result<(), AppError> {
        self.task
            .await
            .map_err(|e| AppError::Other(format!("server task failed: {e}")))?
    }
}

fn wal_options(cfg: &Config) -> WalOptions {
    let mut o = WalOptions::new(cfg.wal_dir());
    o.segment_bytes = cfg.wal.segment_bytes.0;
    o.max_disk_bytes = cfg.wal.max_disk_bytes.0;
    o.max_queue_bytes = cfg.wal.max_queue_bytes.0 as usize;
    o.sync = match cfg.wal.sync {
        SyncMode::Batch => SyncPolicy::Batch,
        SyncMode::Interval => SyncPolicy::Interval(cfg.wal.sync_interval.0),
        SyncMode::Never => SyncPolicy::Never,
    };
    o
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, AppError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| AppError::Bind { addr, source })
}

/// Opens everything and starts serving. Returns once the WAL is replayed and
/// every listener is bound.
pub async fn start(cfg: Config) -> Result<Server, AppError> {
    let data_dir = cfg.data_dir.clone();
    std::fs::create_dir_all(&data_dir).map_err(|source| AppError::DataDir {
        path: data_dir.clone(),
        source,
    })?;
    let lock = File::create(data_dir.join("LOCK")).map_err(|source| AppError::DataDir {
        path: data_dir.clone(),
        source,
    })?;
    if lock.try_lock().is_err() {
        return Err(AppError::Locked(data_dir));
    }

    let telemetry = Arc::new(Telemetry::new());
    let phase = PhaseCell::default();
    let runtime = Arc::new(parking_lot::RwLock::new(None));
    let cancel = CancellationToken::new();

    // The API server comes up first so that /healthz and /readyz answer
    // while the WAL is replayed.
    let api_listener = bind(cfg.server.http_addr).await?;
    let grpc_listener = bind(cfg.server.otlp_grpc_addr).await?;
    let otlp_http_listener = bind(cfg.server.otlp_http_addr).await?;
    let local = |l: &TcpListener, addr| {
        l.local_addr()
            .map_err(|source| AppError::Bind { addr, source })
    };
    let addrs = BoundAddrs {
        http: local(&api_listener, cfg.server.http_addr)?,
        otlp_grpc: local(&grpc_listener, cfg.server.otlp_grpc_addr)?,
        otlp_http: local(&otlp_http_listener, cfg.server.otlp_http_addr)?,
    };
    let api_state = ApiState {
        telemetry: telemetry.clone(),
        phase: phase.clone(),
        runtime: runtime.clone(),
    };
    let api_stop = CancellationToken::new();
    let api_task = tokio::spawn(serve_http(
        api_listener,
        crate::api::http::api_router(
            api_state,
            sql_limits(&cfg.sql),
            crate::api::http::prom::PromLimits {
                result_cache_bytes: cfg.metrics.query_cache_size.0 as usize,
                ..Default::default()
            },
        ),
        api_stop.clone(),
    ));

    phase.set(Phase::Replaying);
    let stores = {
        let cfg = cfg.clone();
        let telemetry = telemetry.clone();
        tokio::task::spawn_blocking(move || crate::storage::open::open_stores(&cfg, &telemetry))
            .await
            .map_err(|e| AppError::Other(format!("store open task failed: {e}")))??
    };
    let writers = StoreWriters::start(
        stores.clone(),
        cfg.ingest.store_queue_bytes.0 as usize,
        telemetry.clone(),
    )
    .map_err(|e| AppError::Other(format!("cannot start store writers: {e}")))?;
    let writers = Arc::new(writers);
    let wal = {
        let opts = wal_options(&cfg);
        let writers_replay = writers.clone();
        let dispatcher = writers.dispatcher();
        tokio::task::spawn_blocking(move || {
            let mut replayed = 0u64;
            let started = std::time::Instant::now();
            let wal = Wal::open(
                opts,
                |seq, payload: &[u8]| {
                    let batch = decode_wal_payload(payload).map_err(|e| {
                        std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            format!("record {seq}: {e}"),
                        )
                    })?;
                    writers_replay
                        .apply_replayed(seq, batch)
                        .map_err(|e| std::io::Error::other(format!("record {seq}: {e}")))?;
                    replayed += 1;
                    Ok::<(), std::io::Error>(())
                },
                move |seq, item: WalItem| dispatcher.dispatch(seq, item.batch, item.payload_bytes),
            )?;
            tracing::info!(
                records = replayed,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "write-ahead log replayed"
            );
            Ok::<_, AppError>(wal)
        })
        .await
        .map_err(|e| AppError::Other(format!("wal open task failed: {e}")))??
    };
    let wal = Arc::new(wal);

    let limits = Limits {
        max_attributes: cfg.ingest.max_attributes,
        max_attribute_depth: cfg.ingest.max_attribute_depth,
        max_record_bytes: cfg.ingest.max_record_bytes.0 as usize,
        max_future_skew_ns: cfg.ingest.max_future_skew.0.as_nanos() as u64,
    };
    let pipeline = Arc::new(
        Pipeline::new(
            wal.clone(),
            limits,
            MemoryBudget::new(cfg.ingest.max_inflight_bytes.0, telemetry.clone()),
            telemetry.clone(),
            cfg.ingest.retry_after.0,
        )
        .with_redactor(
            crate::ingest::redact::Redactor::new(&cfg.logs.redaction, telemetry.registry())
                .map_err(|e| AppError::Other(format!("log redaction: {e}")))?,
        )
        .with_metric_guard(stores.metrics.series_guard())
        .with_max_body_bytes(cfg.ingest.max_body_bytes.0),
    );
    let alerting_stop = CancellationToken::new();
    let alerting = start_alerting(
        &cfg,
        &stores,
        &pipeline,
        &telemetry,
        addrs.http,
        &alerting_stop,
    )
    .await?;
    *runtime.write() = Some(
        Running::new(stores.clone(), pipeline.clone(), wal.clone())
            .with_alerting(alerting.as_ref().map(|a| a.0.clone())),
    );

    let ingest_stop = CancellationToken::new();
    let grpc_task = {
        let routes = crate::api::grpc::routes(
            OtlpGrpc::new(pipeline.clone(), telemetry.clone()),
            cfg.ingest.max_body_bytes.0 as usize,
        );
        let stop = ingest_stop.clone();
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .layer(tower::util::MapResponseLayer::new(
                    crate::api::grpc::oversize_as_resource_exhausted,
                ))
                .add_routes(routes)
                .serve_with_incoming_shutdown(
                    // Without TCP_NODELAY, Nagle's algorithm holds back the
                    // small HTTP/2 frames (window updates, responses) that
                    // a client waits for before sending more.
                    tonic::transport::server::TcpIncoming::from(grpc_listener)
                        .with_nodelay(Some(true)),
                    stop.cancelled_owned(),
                )
                .await
                .map_err(|e| AppError::Other(format!("otlp grpc server failed: {e}")))
        })
    };
    let otlp_http_task = tokio::spawn(serve_http(
        otlp_http_listener,
        otlp_router(OtlpHttpState {
            pipeline: pipeline.clone(),
            telemetry: telemetry.clone(),
            max_body_bytes: cfg.ingest.max_body_bytes.0,
        }),
        ingest_stop.clone(),
    ));

    let checkpoint_task = {
        let writers = writers.clone();
        let wal = wal.clone();
        let telemetry = telemetry.clone();
        let every = cfg.wal.checkpoint_interval.0;
        let stop = cancel.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tick.tick() => checkpoint(&writers, &wal, &telemetry).await,
                }
            }
        })
    };

    phase.set(Phase::Ready);
    tracing::info!(
        http = %addrs.http,
        otlp_grpc = %addrs.otlp_grpc,
        otlp_http = %addrs.otlp_http,
        data_dir = %cfg.data_dir.display(),
        "tern is ready"
    );

    let settled: Arc<dyn Fn() -> bool + Send + Sync> = {
        let writers = Arc::downgrade(&writers);
        Arc::new(move || writers.upgrade().is_none_or(|w| w.settled()))
    };
    let shutdown_timeout = cfg.server.shutdown_timeout.0;
    let task = {
        let cancel = cancel.clone();
        let telemetry = telemetry.clone();
        tokio::spawn(async move {
            cancel.cancelled().await;
            phase.set(Phase::ShuttingDown);
            tracing::info!("shutting down: no new requests, finishing in-flight ones");
            ingest_stop.cancel();
            alerting_stop.cancel();
            if let Some((_, task)) = alerting {
                let _ = task.await;
            }
            let drained = tokio::time::timeout(shutdown_timeout, async {
                let _ = grpc_task.await;
                let _ = otlp_http_task.await;
            })
            .await;
            if drained.is_err() {
                tracing::warn!(timeout = ?shutdown_timeout, "in-flight ingest requests did not finish in time");
            }
            let _ = checkpoint_task.await;
            *runtime.write() = None;
            drop(pipeline);
            // Close the WAL (queued records are written, synced and
            // dispatched; its writer thread drops its handle on the store
            // writers), close the stores (drain, flush), then delete the WAL
            // segments they made durable before the WAL lets go of its files.
            let final_cp = {
                let wal = wal.clone();
                let telemetry = telemetry.clone();
                tokio::task::spawn_blocking(move || {
                    wal.shutdown_then(|wal| {
                        let writers = Arc::try_unwrap(writers).map_err(|_| {
                            AppError::Other("store writers still in use at shutdown".into())
                        })?;
                        let cp = writers.close()?;
                        truncate(wal, cp, &telemetry);
                        Ok::<_, AppError>(cp)
                    })
                })
                .await
                .map_err(|e| AppError::Other(format!("store close task failed: {e}")))?
            };
            api_stop.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(5), api_task).await;
            drop(lock);
            final_cp?;
            tracing::info!("shutdown complete");
            Ok(())
        })
    };

    Ok(Server {
        addrs,
        stores,
        settled,
        telemetry,
        cancel,
        task,
    })
}

fn truncate<T: Send + 'static>(wal: &Wal<T>, cp: u64, telemetry: &Telemetry) {
    telemetry.wal_checkpoint_seq.set(cp as i64);
    match wal.truncate_through(cp) {
        Ok(0) => {}
        Ok(n) => tracing::debug!(segments = n, through = cp, "deleted durable wal segments"),
        Err(e) => tracing::error!(error = %e, "deleting durable wal segments failed"),
    }
}

async fn checkpoint(
    writers: &Arc<StoreWriters>,
    wal: &Arc<Wal<WalItem>>,
    telemetry: &Arc<Telemetry>,
) {
    let (writers, wal, telemetry) = (writers.clone(), wal.clone(), telemetry.clone());
    let _ = tokio::task::spawn_blocking(move || {
        if let Err(e) = writers.stores().flush_all() {
            tracing::error!(error = %e, "periodic store flush failed");
        }
        truncate(&wal, writers.checkpoint(), &telemetry);
    })
    .await;
}

async fn serve_http(
    listener: TcpListener,
    router: axum::Router,
    stop: CancellationToken,
) -> Result<(), AppError> {
    use axum::serve::ListenerExt;
    // Without TCP_NODELAY, Nagle's algorithm can hold back the last
    // segment of a response until the client's delayed ACK.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, router)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
        .map_err(|e| AppError::Other(format!("http server failed: {e}")))
}

/// Recording-rule results go through the ingest pipeline (WAL, then the
/// metrics store) as a remote_write request.
struct PipelineSink(Arc<Pipeline>);

impl crate::analysis::alerting::service::SeriesSink for PipelineSink {
    fn write(
        &self,
        series: Vec<crate::model::Series>,
    ) -> futures::future::BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            use crate::ingest::remote_write::{Label, PromSample, TimeSeries, WriteRequest};
            use prost::Message;
            let req = WriteRequest {
                timeseries: series
                    .into_iter()
                    .map(|s| TimeSeries {
                        labels: s
                            .labels
                            .into_iter()
                            .map(|(name, value)| Label { name, value })
                            .collect(),
                        samples: s
                            .samples
                            .into_iter()
                            .map(|x| PromSample {
                                value: x.v,
                                timestamp: x.t_ms,
                            })
                            .collect(),
                    })
                    .collect(),
            };
            let raw = req.encode_to_vec();
            let body = snap::raw::Encoder::new()
                .compress_vec(&raw)
                .map_err(|e| e.to_string())?;
            self.0
                .ingest_remote_write(body.into(), (raw.len() as u64).max(1))
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    }
}

type AlertingHandle = (
    Arc<crate::analysis::alerting::service::AlertingService>,
    JoinHandle<()>,
);

/// Opens the meta store and the alerting service and starts its loop.
async fn start_alerting(
    cfg: &Config,
    stores: &crate::storage::writer::Stores,
    pipeline: &Arc<Pipeline>,
    telemetry: &Arc<Telemetry>,
    http_addr: SocketAddr,
    stop: &CancellationToken,
) -> Result<Option<AlertingHandle>, AppError> {
    use crate::analysis::alerting::{eval::Sources, service};
    if !cfg.alerting.enabled {
        return Ok(None);
    }
    let opts = service::AlertingOptions::from_config(&cfg.alerting, http_addr);
    let sources = Sources {
        series: stores.metrics.clone(),
        traces: Some(stores.traces.clone()),
        logs: Some(stores.logs.clone()),
        limits: crate::query::promql::QueryLimits {
            timeout: Duration::from_secs(30),
            ..Default::default()
        },
    };
    let sink: Arc<dyn service::SeriesSink> = Arc::new(PipelineSink(pipeline.clone()));
    let dir = cfg.data_dir.join("meta");
    let registry = telemetry.registry().clone();
    let svc = tokio::task::spawn_blocking(move || {
        let meta = crate::storage::meta::MetaStore::open(&dir)
            .map_err(|e| AppError::Other(format!("meta store: {e}")))?;
        service::AlertingService::open(
            Arc::new(meta),
            sources,
            Some(sink),
            opts,
            &registry,
            Arc::new(crate::analysis::alerting::time::now_ms),
        )
        .map_err(|e| AppError::Other(format!("alerting: {e}")))
    })
    .await
    .map_err(|e| AppError::Other(format!("alerting start task failed: {e}")))??;
    let task = tokio::spawn(svc.clone().run(stop.clone()));
    Ok(Some((svc, task)))
}

/// Resolves when SIGINT or SIGTERM arrives.
/// The SQL engine's limits from its configuration section.
fn sql_limits(c: &crate::config::SqlConfig) -> crate::query::sql::SqlLimits {
    crate::query::sql::SqlLimits {
        timeout: c.timeout.0,
        memory_bytes: c.memory_limit.0.min(usize::MAX as u64) as usize,
        default_rows: c.default_rows,
        max_rows: c.max_rows,
        max_result_bytes: c.max_result_bytes.0.min(usize::MAX as u64) as usize,
        threads: c.threads,
        ..Default::default()
    }
}

pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("received SIGINT"),
        _ = term => tracing::info!("received SIGTERM"),
    }
}
