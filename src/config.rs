//! Layered configuration: built-in defaults, then a TOML file, then
//! environment variables, then command-line flags (the last one wins).
//!
//! Every key of the file can also be set by an environment variable named
//! `TERN_` + the key path in upper case with `__` between sections
//! (`TERN_DATA_DIR`, `TERN_WAL__SYNC`, `TERN_SERVER__HTTP_ADDR`), or by the
//! flag `--set wal.sync=never`. Unknown keys are errors wherever they come from.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Environment variables with this prefix are configuration overrides.
pub const ENV_PREFIX: &str = "TERN_";
/// The one `TERN_` variable that is not a key: the config file path.
pub const ENV_CONFIG_FILE: &str = "TERN_CONFIG";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid toml: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid override {0:?}: expected key=value with a dotted key such as wal.sync=never")]
    Override(String),
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl ConfigError {
    pub fn code(&self) -> &'static str {
        match self {
            ConfigError::Read { .. } => "config_read",
            ConfigError::Parse { .. } => "config_parse",
            ConfigError::Override(_) => "config_override",
            ConfigError::Invalid(_) => "config_invalid",
        }
    }
}

/// A duration written as `250ms`, `10s`, `5m`, `2h` or `7d` (or an integer of seconds).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl fmt::Debug for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        let (n, unit) = if ms.is_multiple_of(86_400_000) && ms > 0 {
            (ms / 86_400_000, "d")
        } else if ms.is_multiple_of(3_600_000) && ms > 0 {
            (ms / 3_600_000, "h")
        } else if ms.is_multiple_of(60_000) && ms > 0 {
            (ms / 60_000, "m")
        } else if ms.is_multiple_of(1000) {
            (ms / 1000, "s")
        } else {
            (ms, "ms")
        };
        write!(f, "{n}{unit}")
    }
}

/// Parses `250ms`, `10s`, `5m`, `2h`, `7d`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| {
        format!("invalid duration {s:?}: expected a number followed by ms, s, m, h or d")
    })?;
    let ms = match unit.trim() {
        "ms" => Some(n),
        "s" | "" => n.checked_mul(1000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        "d" => n.checked_mul(86_400_000),
        other => {
            return Err(format!(
                "invalid duration unit {other:?} in {s:?}: use ms, s, m, h or d"
            ))
        }
    }
    .ok_or_else(|| format!("duration {s:?} is too large"))?;
    Ok(Duration::from_millis(ms))
}

impl Serialize for HumanDuration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Secs(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Secs(n) => Ok(HumanDuration(Duration::from_secs(n))),
            Raw::Text(t) => parse_duration(&t)
                .map(HumanDuration)
                .map_err(serde::de::Error::custom),
        }
    }
}

/// A size in bytes, written as an integer or as `64MiB`, `512KiB`, `4GiB`, `10MB`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl fmt::Debug for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(&str, u64); 3] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
        for (name, size) in UNITS {
            if self.0 >= size && self.0.is_multiple_of(size) {
                return write!(f, "{}{name}", self.0 / size);
            }
        }
        write!(f, "{}", self.0)
    }
}

pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| {
        format!("invalid size {s:?}: expected a number with an optional unit such as MiB")
    })?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => {
            return Err(format!(
                "invalid size unit {other:?} in {s:?}: use B, KiB, MiB, GiB, KB, MB or GB"
            ))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("size {s:?} is too large"))
}

impl Serialize for ByteSize {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(n) => Ok(ByteSize(n)),
            Raw::Text(t) => parse_bytes(&t)
                .map(ByteSize)
                .map_err(serde::de::Error::custom),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where every store and the WAL keep their files.
    pub data_dir: PathBuf,
    pub server: ServerConfig,
    pub ingest: IngestConfig,
    pub wal: WalConfig,
    pub traces: TracesConfig,
    pub logs: LogsConfig,
    pub metrics: MetricsConfig,
    pub sql: SqlConfig,
    pub alerting: AlertingConfig,
    pub log: LogConfig,
}

/// The SQL API's limits.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SqlConfig {
    /// A query still running after this is cancelled (answered 408).
    pub timeout: HumanDuration,
    /// Memory one query's aggregations, sorts and joins may hold (beyond it: 503).
    pub memory_limit: ByteSize,
    /// Rows returned when the request does not set `limit`.
    pub default_rows: usize,
    /// Most rows one answer may return.
    pub max_rows: usize,
    /// Most bytes of result data one answer may hold (then it is truncated).
    pub max_result_bytes: ByteSize,
    /// Worker threads that run queries (apart from ingest and the rest of the API).
    pub threads: usize,
}

impl Default for SqlConfig {
    fn default() -> Self {
        SqlConfig {
            timeout: HumanDuration(Duration::from_secs(30)),
            memory_limit: ByteSize(1 << 30),
            default_rows: 10_000,
            max_rows: 100_000,
            max_result_bytes: ByteSize(64 << 20),
            threads: 2,
        }
    }
}

impl SqlConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: &str| Err(ConfigError::Invalid(m.into()));
        if self.timeout.0 < Duration::from_millis(10) {
            return bad("sql.timeout must be at least 10ms");
        }
        if self.memory_limit.0 < (1 << 20) {
            return bad("sql.memory_limit must be at least 1MiB");
        }
        if self.default_rows == 0 || self.default_rows > self.max_rows {
            return bad("sql.default_rows must be between 1 and sql.max_rows");
        }
        if self.max_result_bytes.0 < 1024 {
            return bad("sql.max_result_bytes must be at least 1KiB");
        }
        if self.threads == 0 || self.threads > 256 {
            return bad("sql.threads must be between 1 and 256");
        }
        Ok(())
    }
}

/// Alert rules, notifications and SLOs (`analysis::alerting`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AlertingConfig {
    /// Evaluate rules and send notifications.
    pub enabled: bool,
    /// Evaluation interval of rule groups that set none.
    pub evaluation_interval: HumanDuration,
    /// Evaluation interval of the burn-rate rules generated for SLOs.
    pub slo_evaluation_interval: HumanDuration,
    /// How often due evaluations and notifications are checked.
    pub resolution: HumanDuration,
    /// The server's URL as links in notifications should show it; empty
    /// means `http://` + `server.http_addr`.
    pub external_url: String,
    /// Notification defaults of the routing tree's root.
    pub group_wait: HumanDuration,
    pub group_interval: HumanDuration,
    pub repeat_interval: HumanDuration,
    /// How long an alert posted to /api/v2/alerts without endsAt stays firing.
    pub resolve_timeout: HumanDuration,
    /// Delivery retries: exponential backoff from the initial to the
    /// maximum delay, at most `retry_max_attempts` attempts.
    pub retry_initial_backoff: HumanDuration,
    pub retry_max_backoff: HumanDuration,
    pub retry_max_attempts: u32,
    /// Timeout of one delivery attempt.
    pub delivery_timeout: HumanDuration,
    /// Notifications waiting per channel; beyond it they are dropped and counted.
    pub queue_capacity: usize,
    /// Most alerts the notifier holds (rule alerts and received ones).
    pub max_alerts: usize,
    /// Alert history bounds: rows kept and their age.
    pub history_max_rows: usize,
    pub history_retention: HumanDuration,
}

impl Default for AlertingConfig {
    fn default() -> Self {
        AlertingConfig {
            enabled: true,
            evaluation_interval: HumanDuration(Duration::from_secs(30)),
            slo_evaluation_interval: HumanDuration(Duration::from_secs(60)),
            resolution: HumanDuration(Duration::from_secs(1)),
            external_url: String::new(),
            group_wait: HumanDuration(Duration::from_secs(30)),
            group_interval: HumanDuration(Duration::from_secs(300)),
            repeat_interval: HumanDuration(Duration::from_secs(4 * 3600)),
            resolve_timeout: HumanDuration(Duration::from_secs(300)),
            retry_initial_backoff: HumanDuration(Duration::from_secs(1)),
            retry_max_backoff: HumanDuration(Duration::from_secs(60)),
            retry_max_attempts: 10,
            delivery_timeout: HumanDuration(Duration::from_secs(10)),
            queue_capacity: 1024,
            max_alerts: 100_000,
            history_max_rows: 100_000,
            history_retention: HumanDuration(Duration::from_secs(30 * 86_400)),
        }
    }
}

impl AlertingConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: &str| Err(ConfigError::Invalid(format!("alerting.{m}")));
        let ms = Duration::from_millis(10);
        if self.resolution.0 < ms {
            return bad("resolution must be at least 10ms");
        }
        if self.evaluation_interval.0 < self.resolution.0
            || self.slo_evaluation_interval.0 < self.resolution.0
        {
            return bad("evaluation_interval and slo_evaluation_interval must be at least alerting.resolution");
        }
        if self.group_interval.0 < ms || self.repeat_interval.0 < self.group_interval.0 {
            return bad(
                "group_interval must be at least 10ms and repeat_interval at least group_interval",
            );
        }
        if self.resolve_timeout.0 < ms {
            return bad("resolve_timeout must be at least 10ms");
        }
        if self.retry_initial_backoff.0 < ms
            || self.retry_max_backoff.0 < self.retry_initial_backoff.0
        {
            return bad(
                "retry_initial_backoff must be at least 10ms and at most retry_max_backoff",
            );
        }
        if self.retry_max_attempts == 0 || self.queue_capacity == 0 || self.max_alerts == 0 {
            return bad("retry_max_attempts, queue_capacity and max_alerts must be positive");
        }
        if self.delivery_timeout.0 < ms {
            return bad("delivery_timeout must be at least 10ms");
        }
        if self.history_max_rows == 0 || self.history_retention.0 < Duration::from_secs(60) {
            return bad("history_max_rows must be positive and history_retention at least 1m");
        }
        let url = &self.external_url;
        if !(url.is_empty() || url.starts_with("http://") || url.starts_with("https://")) {
            return bad("external_url must be empty or an http(s) URL");
        }
        Ok(())
    }
}

/// The trace store.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TracesConfig {
    /// Traces older than this are deleted.
    pub retention: HumanDuration,
    /// Memtable size of each RocksDB column family.
    pub write_buffer: ByteSize,
    /// RocksDB block cache shared by the trace store's column families.
    pub block_cache: ByteSize,
}

impl Default for TracesConfig {
    fn default() -> Self {
        TracesConfig {
            retention: HumanDuration(Duration::from_secs(7 * 86_400)),
            write_buffer: ByteSize(64 << 20),
            block_cache: ByteSize(256 << 20),
        }
    }
}

impl TracesConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: &str| Err(ConfigError::Invalid(m.into()));
        if self.retention.0 < Duration::from_secs(60) {
            return bad("traces.retention must be at least 1m");
        }
        if self.write_buffer.0 < (1 << 20) {
            return bad("traces.write_buffer must be at least 1MiB");
        }
        Ok(())
    }
}

/// The log store.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogsConfig {
    /// Logs older than this are deleted (whole partitions at a time).
    pub retention: HumanDuration,
    /// Time span of one index partition; a search opens only the partitions
    /// of its time range, retention deletes whole partitions.
    pub partition: HumanDuration,
    /// How often new logs are committed: searchable and durable after at most this.
    pub commit_interval: HumanDuration,
    /// Indexing memory of each partition being written.
    pub writer_memory: ByteSize,
    /// PII masking of log bodies and attributes at ingest.
    pub redaction: RedactionConfig,
}

/// Log redaction: patterns masked in log bodies and attributes before
/// anything is written. Empty lists (the default) disable it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RedactionConfig {
    /// Built-in patterns: `email`, `card_number`, `bearer_token`.
    pub builtin: Vec<String>,
    /// Extra regular expressions (Rust `regex` syntax).
    pub custom: Vec<String>,
    /// What each match is replaced with.
    pub mask: String,
}

impl Default for RedactionConfig {
    fn default() -> Self {
        RedactionConfig {
            builtin: Vec::new(),
            custom: Vec::new(),
            mask: "[REDACTED]".into(),
        }
    }
}

impl Default for LogsConfig {
    fn default() -> Self {
        LogsConfig {
            retention: HumanDuration(Duration::from_secs(7 * 86_400)),
            partition: HumanDuration(Duration::from_secs(86_400)),
            commit_interval: HumanDuration(Duration::from_secs(1)),
            writer_memory: ByteSize(64 << 20),
            redaction: RedactionConfig::default(),
        }
    }
}

impl LogsConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: &str| Err(ConfigError::Invalid(m.into()));
        if self.partition.0 < Duration::from_secs(60) || self.partition.0.subsec_nanos() != 0 {
            return bad("logs.partition must be whole seconds and at least 1m");
        }
        if self.commit_interval.0 < Duration::from_millis(10) {
            return bad("logs.commit_interval must be at least 10ms");
        }
        if self.writer_memory.0 < (16 << 20) || self.writer_memory.0 > (2 << 30) {
            return bad("logs.writer_memory must be between 16MiB and 2GiB");
        }
        crate::ingest::redact::Redactor::new(&self.redaction, &prometheus::Registry::new())
            .map_err(|e| ConfigError::Invalid(format!("logs.redaction: {e}")))?;
        Ok(())
    }
}

/// The metrics store.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Samples older than this are deleted (whole partitions at a time).
    pub retention: HumanDuration,
    /// Time span of one on-disk partition.
    pub partition_duration: HumanDuration,
    /// The in-memory head is written to Parquet once its oldest unflushed
    /// write is this old (and at shutdown); the WAL covers it until then.
    pub head_flush_interval: HumanDuration,
    /// A partition with more files than this is compacted into one.
    pub compaction_files: usize,
    /// Active series allowed per metric name; 0 means no limit.
    pub max_series_per_metric: usize,
    /// Active series allowed in total; 0 means no limit.
    pub max_series: usize,
    /// A series counts as active while it received a sample this recently.
    pub active_series_window: HumanDuration,
    /// Resource attributes copied onto every series as labels (after
    /// `job` and `instance`, which are always derived).
    pub promote_resource_attributes: Vec<String>,
    /// Memory for PromQL range-query results over settled time (older
    /// than 5 minutes), reused by repeated and moved-forward queries; 0
    /// turns the cache off.
    pub query_cache_size: ByteSize,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            retention: HumanDuration(Duration::from_secs(15 * 86_400)),
            partition_duration: HumanDuration(Duration::from_secs(2 * 3600)),
            head_flush_interval: HumanDuration(Duration::from_secs(10 * 60)),
            compaction_files: 8,
            max_series_per_metric: 50_000,
            max_series: 2_000_000,
            active_series_window: HumanDuration(Duration::from_secs(3600)),
            promote_resource_attributes: vec![],
            query_cache_size: ByteSize(256 << 20),
        }
    }
}

impl MetricsConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: &str| Err(ConfigError::Invalid(m.into()));
        let p = self.partition_duration.0;
        if p < Duration::from_secs(60) || p.subsec_nanos() != 0 || 86_400 % p.as_secs() != 0 {
            return bad(
                "metrics.partition_duration must be whole seconds, at least 1m, and divide a day",
            );
        }
        if self.retention.0 < p {
            return bad("metrics.retention must be at least metrics.partition_duration");
        }
        if self.head_flush_interval.0 < Duration::from_secs(1) {
            return bad("metrics.head_flush_interval must be at least 1s");
        }
        if self.compaction_files < 2 {
            return bad("metrics.compaction_files must be at least 2");
        }
        if self.active_series_window.0 < Duration::from_secs(60) {
            return bad("metrics.active_series_window must be at least 1m");
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// HTTP API, `/metrics`, health checks and the web UI.
    pub http_addr: SocketAddr,
    /// OTLP over gRPC.
    pub otlp_grpc_addr: SocketAddr,
    /// OTLP over HTTP (`/v1/traces`, `/v1/metrics`, `/v1/logs`).
    pub otlp_http_addr: SocketAddr,
    /// How long shutdown waits for in-flight requests before closing anyway.
    pub shutdown_timeout: HumanDuration,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Largest request body, after decompression (413 above it).
    pub max_body_bytes: ByteSize,
    /// Bytes all in-flight ingest requests may hold together (429 above it).
    pub max_inflight_bytes: ByteSize,
    /// Most attributes on one record.
    pub max_attributes: usize,
    /// Deepest nesting of attribute values and log bodies.
    pub max_attribute_depth: usize,
    /// Largest single span, log record or data point (rejected in partial success above it).
    pub max_record_bytes: ByteSize,
    /// Timestamps further in the future than this are rejected.
    pub max_future_skew: HumanDuration,
    /// Bytes of batches waiting for each store writer.
    pub store_queue_bytes: ByteSize,
    /// The Retry-After value sent with 429/503 answers.
    pub retry_after: HumanDuration,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SyncMode {
    /// Group commit: acknowledge after fsync (no acknowledged write is lost).
    Batch,
    /// Acknowledge after the write reaches the OS; fsync every `sync_interval`.
    Interval,
    /// Acknowledge after the write reaches the OS; fsync only on rotation.
    Never,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WalConfig {
    pub sync: SyncMode,
    pub sync_interval: HumanDuration,
    pub segment_bytes: ByteSize,
    /// WAL bytes on disk above which ingest answers 503 until stores catch up.
    pub max_disk_bytes: ByteSize,
    /// Bytes waiting for the WAL writer above which ingest answers 503.
    pub max_queue_bytes: ByteSize,
    /// How often fully persisted WAL segments are deleted.
    pub checkpoint_interval: HumanDuration,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// An env-filter directive such as `info` or `tern=debug`; `RUST_LOG` wins.
    pub level: String,
    /// `text` or `json`.
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./data"),
            server: ServerConfig::default(),
            ingest: IngestConfig::default(),
            wal: WalConfig::default(),
            traces: TracesConfig::default(),
            logs: LogsConfig::default(),
            metrics: MetricsConfig::default(),
            sql: SqlConfig::default(),
            alerting: AlertingConfig::default(),
            log: LogConfig::default(),
        }
    }
}

fn addr(s: &str) -> SocketAddr {
    // Literal constants below; parsing cannot fail.
    s.parse()
        .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            http_addr: addr("127.0.0.1:3000"),
            otlp_grpc_addr: addr("127.0.0.1:4317"),
            otlp_http_addr: addr("127.0.0.1:4318"),
            shutdown_timeout: HumanDuration(Duration::from_secs(30)),
        }
    }
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            max_body_bytes: ByteSize(64 << 20),
            max_inflight_bytes: ByteSize(512 << 20),
            max_attributes: 1024,
            max_attribute_depth: 32,
            max_record_bytes: ByteSize(1 << 20),
            max_future_skew: HumanDuration(Duration::from_secs(3600)),
            store_queue_bytes: ByteSize(128 << 20),
            retry_after: HumanDuration(Duration::from_secs(1)),
        }
    }
}

impl Default for WalConfig {
    fn default() -> Self {
        WalConfig {
            sync: SyncMode::Batch,
            sync_interval: HumanDuration(Duration::from_millis(100)),
            segment_bytes: ByteSize(64 << 20),
            max_disk_bytes: ByteSize(8 << 30),
            max_queue_bytes: ByteSize(256 << 20),
            checkpoint_interval: HumanDuration(Duration::from_secs(10)),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

/// Parses an override value as a TOML value (`100`, `true`, `"x"`, `[1, 2]`),
/// falling back to a plain string (`127.0.0.1:3000`, `never`).
fn parse_override_value(raw: &str) -> toml::Value {
    match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.into())),
        Err(_) => toml::Value::String(raw.into()),
    }
}

fn set_path(table: &mut toml::Table, path: &[String], value: toml::Value) -> Result<(), String> {
    let (last, parents) = path.split_last().ok_or("empty key")?;
    let mut cur = table;
    for p in parents {
        let entry = cur
            .entry(p.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cur = entry
            .as_table_mut()
            .ok_or_else(|| format!("{p} is not a section"))?;
    }
    cur.insert(last.clone(), value);
    Ok(())
}

/// Where configuration comes from, in increasing precedence.
#[derive(Debug, Default)]
pub struct Sources {
    pub file: Option<PathBuf>,
    /// Environment variables (name, value); only `TERN_` ones are used.
    pub env: Vec<(String, String)>,
    /// `key.path=value` overrides from flags, applied in order.
    pub overrides: Vec<String>,
}

impl Config {
    /// Builds the configuration from all layers and validates it.
    pub fn load(sources: &Sources) -> Result<Config, ConfigError> {
        let mut table = match &sources.file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                toml::from_str::<toml::Table>(&text).map_err(|e| ConfigError::Parse {
                    path: path.clone(),
                    message: e.to_string(),
                })?
            }
            None => toml::Table::new(),
        };
        let mut env: Vec<_> = sources
            .env
            .iter()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX) && k != ENV_CONFIG_FILE)
            .collect();
        env.sort();
        for (k, v) in env {
            let path: Vec<String> = k[ENV_PREFIX.len()..]
                .split("__")
                .map(|p| p.to_ascii_lowercase())
                .collect();
            if path.iter().any(String::is_empty) {
                return Err(ConfigError::Invalid(format!(
                    "environment variable {k} names no key"
                )));
            }
            set_path(&mut table, &path, parse_override_value(v))
                .map_err(|e| ConfigError::Invalid(format!("environment variable {k}: {e}")))?;
        }
        for o in &sources.overrides {
            let (k, v) = o
                .split_once('=')
                .ok_or_else(|| ConfigError::Override(o.clone()))?;
            let path: Vec<String> = k.trim().split('.').map(str::to_string).collect();
            if path.iter().any(String::is_empty) {
                return Err(ConfigError::Override(o.clone()));
            }
            set_path(&mut table, &path, parse_override_value(v.trim()))
                .map_err(|e| ConfigError::Invalid(format!("override {o:?}: {e}")))?;
        }
        let cfg: Config = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Invalid(e.message().to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks relations between values that types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        let s = &self.server;
        let addrs = [
            ("server.http_addr", s.http_addr),
            ("server.otlp_grpc_addr", s.otlp_grpc_addr),
            ("server.otlp_http_addr", s.otlp_http_addr),
        ];
        for (i, (na, a)) in addrs.iter().enumerate() {
            for (nb, b) in &addrs[i + 1..] {
                if a == b && a.port() != 0 {
                    return bad(format!("{na} and {nb} are both {a}"));
                }
            }
        }
        if self.data_dir.as_os_str().is_empty() {
            return bad("data_dir must not be empty".into());
        }
        self.traces.validate()?;
        self.logs.validate()?;
        self.metrics.validate()?;
        self.sql.validate()?;
        self.alerting.validate()?;
        let i = &self.ingest;
        if i.max_body_bytes.0 < 1024 {
            return bad(format!(
                "ingest.max_body_bytes ({}) must be at least 1KiB",
                i.max_body_bytes
            ));
        }
        if i.max_inflight_bytes < i.max_body_bytes {
            return bad(format!(
                "ingest.max_inflight_bytes ({}) must be at least ingest.max_body_bytes ({})",
                i.max_inflight_bytes, i.max_body_bytes
            ));
        }
        if i.max_attributes == 0 || i.max_attribute_depth == 0 {
            return bad(
                "ingest.max_attributes and ingest.max_attribute_depth must be positive".into(),
            );
        }
        if i.max_record_bytes.0 == 0 || i.max_record_bytes > i.max_body_bytes {
            return bad(format!(
                "ingest.max_record_bytes ({}) must be positive and at most ingest.max_body_bytes ({})",
                i.max_record_bytes, i.max_body_bytes
            ));
        }
        let w = &self.wal;
        if w.segment_bytes.0 < 4096 {
            return bad(format!(
                "wal.segment_bytes ({}) must be at least 4KiB",
                w.segment_bytes
            ));
        }
        if w.max_disk_bytes < w.segment_bytes {
            return bad(format!(
                "wal.max_disk_bytes ({}) must be at least wal.segment_bytes ({})",
                w.max_disk_bytes, w.segment_bytes
            ));
        }
        if w.max_queue_bytes.0 < 2 * i.max_body_bytes.0 {
            return bad(format!(
                "wal.max_queue_bytes ({}) must be at least twice ingest.max_body_bytes ({}) so that a full request always fits",
                w.max_queue_bytes, i.max_body_bytes
            ));
        }
        if w.sync == SyncMode::Interval && w.sync_interval.0.is_zero() {
            return bad("wal.sync_interval must be positive with wal.sync = \"interval\"".into());
        }
        if w.checkpoint_interval.0.is_zero() {
            return bad("wal.checkpoint_interval must be positive".into());
        }
        if self.log.level.trim().is_empty() {
            return bad("log.level must not be empty".into());
        }
        Ok(())
    }

    pub fn wal_dir(&self) -> PathBuf {
        self.data_dir.join("wal")
    }

    /// The effective configuration as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }
}

/// Path of the example configuration shipped with the project.
pub fn example_path(manifest_dir: &Path) -> PathBuf {
    manifest_dir.join("config.example.toml")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(
        file: Option<&str>,
        env: &[(&str, &str)],
        overrides: &[&str],
    ) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let file = file.map(|text| {
            let p = dir.path().join("tern.toml");
            std::fs::write(&p, text).unwrap();
            p
        });
        Config::load(&Sources {
            file,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            overrides: overrides.iter().map(|s| s.to_string()).collect(),
        })
    }

    #[test]
    fn defaults() {
        let c = load(None, &[], &[]).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("./data"));
        assert_eq!(c.server.otlp_grpc_addr.to_string(), "127.0.0.1:4317");
        assert_eq!(c.server.otlp_http_addr.to_string(), "127.0.0.1:4318");
        assert_eq!(c.server.http_addr.to_string(), "127.0.0.1:3000");
        assert_eq!(c.ingest.max_body_bytes, ByteSize(64 << 20));
        assert_eq!(c.wal.sync, SyncMode::Batch);
    }

    #[test]
    fn layers_apply_in_order() {
        let file = "data_dir = \"/from/file\"\n[wal]\nsync = \"never\"\nsegment_bytes = \"8MiB\"\n";
        let c = load(Some(file), &[], &[]).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/from/file"));
        assert_eq!(c.wal.sync, SyncMode::Never);
        assert_eq!(c.wal.segment_bytes, ByteSize(8 << 20));
        let c = load(
            Some(file),
            &[
                ("TERN_DATA_DIR", "/from/env"),
                ("TERN_WAL__SYNC", "interval"),
                ("HOME", "/x"),
            ],
            &[],
        )
        .unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/from/env"));
        assert_eq!(c.wal.sync, SyncMode::Interval);
        let c = load(
            Some(file),
            &[("TERN_DATA_DIR", "/from/env")],
            &[
                "data_dir=/from/flag",
                "wal.sync_interval=250ms",
                "ingest.max_attributes=7",
            ],
        )
        .unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/from/flag"));
        assert_eq!(
            c.wal.sync_interval,
            HumanDuration(Duration::from_millis(250))
        );
        assert_eq!(c.ingest.max_attributes, 7);
    }

    #[test]
    fn unknown_keys_are_rejected_everywhere() {
        let e = load(Some("[wal]\nsnyc = \"never\"\n"), &[], &[]).unwrap_err();
        assert!(e.to_string().contains("snyc"), "{e}");
        let e = load(None, &[("TERN_WAL__NOPE", "1")], &[]).unwrap_err();
        assert!(e.to_string().contains("nope"), "{e}");
        let e = load(None, &[], &["server.colour=blue"]).unwrap_err();
        assert!(e.to_string().contains("colour"), "{e}");
        assert!(matches!(
            load(None, &[], &["novalue"]),
            Err(ConfigError::Override(_))
        ));
    }

    #[test]
    fn bad_values_have_clear_messages() {
        let e = load(None, &[], &["wal.sync=sometimes"]).unwrap_err();
        assert!(e.to_string().contains("sometimes"), "{e}");
        let e = load(None, &[], &["ingest.max_future_skew=5 fortnights"]).unwrap_err();
        assert!(e.to_string().contains("fortnights"), "{e}");
        let e = load(None, &[], &["server.http_addr=127.0.0.1:4317"]).unwrap_err();
        assert!(
            e.to_string()
                .contains("server.http_addr and server.otlp_grpc_addr"),
            "{e}"
        );
        let e = load(None, &[], &["ingest.max_inflight_bytes=1MiB"]).unwrap_err();
        assert!(e.to_string().contains("max_inflight_bytes"), "{e}");
        let e = load(Some("data_dir = [\n"), &[], &[]).unwrap_err();
        assert!(matches!(e, ConfigError::Parse { .. }), "{e}");
    }

    #[test]
    fn example_config_loads_and_matches_defaults_where_it_says_so() {
        let path = example_path(Path::new(env!("CARGO_MANIFEST_DIR")));
        let c = Config::load(&Sources {
            file: Some(path),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(c, Config::default(), "the example documents the defaults");
    }

    #[test]
    fn rendered_config_round_trips() {
        let c = load(
            None,
            &[],
            &["wal.sync=interval", "ingest.max_body_bytes=3000000"],
        )
        .unwrap();
        let back: Config = toml::from_str(&c.to_toml()).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn units() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(
            parse_duration("7d").unwrap(),
            Duration::from_secs(7 * 86400)
        );
        assert!(parse_duration("x").is_err());
        assert_eq!(parse_bytes("64MiB").unwrap(), 64 << 20);
        assert_eq!(parse_bytes("10MB").unwrap(), 10_000_000);
        assert!(parse_bytes("10 parsecs").is_err());
        let e = load(None, &[], &["alerting.repeat_interval=1s"]).unwrap_err();
        assert!(e.to_string().contains("repeat_interval"), "{e}");
        let e = load(None, &[], &["alerting.external_url=ftp://x"]).unwrap_err();
        assert!(e.to_string().contains("external_url"), "{e}");
        assert_eq!(ByteSize(64 << 20).to_string(), "64MiB");
        assert_eq!(
            HumanDuration(Duration::from_millis(100)).to_string(),
            "100ms"
        );
    }
}
