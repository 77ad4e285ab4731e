//! Command-line entry point.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use tern::config::{Config, LogFormat, Sources, ENV_CONFIG_FILE};

#[derive(Parser)]
#[command(
    name = "tern",
    version,
    about = "One-binary observability backend: metrics, logs and traces over OTLP"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (OTLP gRPC and HTTP receivers, HTTP API and UI).
    Serve(ConfigArgs),
    /// Load and validate the configuration, then print the effective values.
    CheckConfig(ConfigArgs),
    /// Send realistic telemetry to a running server over OTLP and report
    /// throughput and latency as JSON.
    Loadgen(LoadgenArgs),
    /// Run the end-to-end benchmark: start a server on a temporary data dir,
    /// load every signal over OTLP, measure bytes on disk, resource use and
    /// query latency, and write bench.json and bench.md.
    Bench(BenchArgs),
}

#[derive(Args)]
struct BenchArgs {
    /// Where bench.json and bench.md are written.
    #[arg(long, default_value = "bench-results")]
    out: PathBuf,
    /// grpc or http (protobuf).
    #[arg(long, default_value = "grpc")]
    protocol: tern::loadgen::Protocol,
    /// Spans to send (0 skips traces).
    #[arg(long, default_value_t = 1_000_000)]
    spans: u64,
    /// Log records to send (0 skips logs).
    #[arg(long, default_value_t = 1_000_000)]
    logs: u64,
    /// Metric data points to send (0 skips metrics).
    #[arg(long, default_value_t = 1_000_000)]
    samples: u64,
    /// Distinct metric series.
    #[arg(long, default_value_t = 10_000)]
    series: usize,
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    #[arg(long, default_value_t = 1000)]
    batch_size: usize,
    /// Repetitions of each query.
    #[arg(long, default_value_t = 50)]
    query_runs: usize,
    /// Server setting for the benchmarked server, e.g. --set wal.sync=never (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

#[derive(Args)]
struct LoadgenArgs {
    /// traces, metrics or logs.
    #[arg(long, default_value = "traces")]
    signal: String,
    /// grpc or http (protobuf).
    #[arg(long, default_value = "grpc")]
    protocol: tern::loadgen::Protocol,
    /// OTLP/gRPC receiver (host:port).
    #[arg(long, default_value = "127.0.0.1:4317")]
    grpc_addr: String,
    /// OTLP/HTTP receiver base URL.
    #[arg(long, default_value = "http://127.0.0.1:4318")]
    http_url: String,
    /// Records to send, generated before the clock starts. Without it the
    /// load runs for --duration, generating as it goes.
    #[arg(long)]
    records: Option<u64>,
    /// How long to run without --records, e.g. 30s.
    #[arg(long, default_value = "10s", value_parser = tern::config::parse_duration)]
    duration: std::time::Duration,
    /// Records per second in total; 0 sends as fast as the server accepts.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Concurrent connections/workers.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Records per request.
    #[arg(long, default_value_t = 500)]
    batch_size: usize,
    /// Distinct metric series (metrics only).
    #[arg(long, default_value_t = 10_000)]
    series: usize,
    /// Seed of the generators: the same seed sends the same data.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

#[derive(Args)]
struct ConfigArgs {
    /// TOML configuration file (also TERN_CONFIG).
    #[arg(long, short, env = ENV_CONFIG_FILE)]
    config: Option<PathBuf>,
    /// Directory for all data (default ./data).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Address of the HTTP API and UI (default 127.0.0.1:3000).
    #[arg(long)]
    http_addr: Option<String>,
    /// Address of the OTLP/gRPC receiver (default 127.0.0.1:4317).
    #[arg(long)]
    otlp_grpc_addr: Option<String>,
    /// Address of the OTLP/HTTP receiver (default 127.0.0.1:4318).
    #[arg(long)]
    otlp_http_addr: Option<String>,
    /// Log filter such as info or tern=debug (RUST_LOG wins).
    #[arg(long)]
    log_level: Option<String>,
    /// Any configuration key, e.g. --set wal.sync=never (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

impl ConfigArgs {
    fn load(&self) -> Result<Config, tern::config::ConfigError> {
        let mut overrides = Vec::new();
        let mut flag = |key: &str, v: Option<String>| {
            if let Some(v) = v {
                // Quote so that the value is taken as a string whatever it looks like.
                overrides.push(format!("{key}={}", toml_string(&v)));
            }
        };
        flag(
            "data_dir",
            self.data_dir.as_ref().map(|p| p.display().to_string()),
        );
        flag("server.http_addr", self.http_addr.clone());
        flag("server.otlp_grpc_addr", self.otlp_grpc_addr.clone());
        flag("server.otlp_http_addr", self.otlp_http_addr.clone());
        flag("log.level", self.log_level.clone());
        overrides.extend(self.set.iter().cloned());
        Config::load(&Sources {
            file: self.config.clone(),
            env: std::env::vars().collect(),
            overrides,
        })
    }
}

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig(args) => match args.load() {
            Ok(cfg) => {
                print!("{}", cfg.to_toml());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
        Command::Loadgen(args) => match loadgen(args) {
            Ok(report) => {
                println!("{report}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Bench(args) => match bench(args) {
            Ok(md) => {
                println!("{md}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Serve(args) => {
            let cfg = match args.load() {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            tern::telemetry::init_logging(&cfg.log.level, cfg.log.format == LogFormat::Json);
            match serve(cfg) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "tern stopped with an error");
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn serve(cfg: Config) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("tern-worker")
        .build()?;
    rt.block_on(async move {
        let server = tern::app::start(cfg).await?;
        let token = server.shutdown_token();
        tokio::spawn(async move {
            tern::app::shutdown_signal().await;
            token.cancel();
        });
        server.wait().await?;
        Ok(())
    })
}

fn loadgen(args: LoadgenArgs) -> anyhow::Result<String> {
    let signal = match args.signal.as_str() {
        "traces" => tern::model::Signal::Traces,
        "metrics" => tern::model::Signal::Metrics,
        "logs" => tern::model::Signal::Logs,
        other => anyhow::bail!("unknown signal {other:?}: use traces, metrics or logs"),
    };
    tern::telemetry::init_logging("warn", false);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = rt
        .block_on(tern::loadgen::run(tern::loadgen::LoadOptions {
            signal,
            protocol: args.protocol,
            grpc_addr: args.grpc_addr,
            http_url: args.http_url,
            records: args.records,
            duration: args.duration,
            rate: args.rate,
            concurrency: args.concurrency,
            batch_size: args.batch_size,
            series: args.series,
            seed: args.seed,
        }))
        .map_err(anyhow::Error::msg)?;
    Ok(serde_json::to_string_pretty(&report)?)
}

fn bench(args: BenchArgs) -> anyhow::Result<String> {
    tern::telemetry::init_logging("warn", false);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = rt
        .block_on(tern::loadgen::bench::run(
            tern::loadgen::bench::BenchOptions {
                out_dir: args.out,
                protocol: args.protocol,
                spans: args.spans,
                logs: args.logs,
                samples: args.samples,
                series: args.series,
                concurrency: args.concurrency,
                batch_size: args.batch_size,
                query_runs: args.query_runs,
                server_settings: args.set,
            },
        ))
        .map_err(anyhow::Error::msg)?;
    Ok(tern::loadgen::bench::markdown(&report))
}
