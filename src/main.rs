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
