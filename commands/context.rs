//! What every subcommand shares: global flags, logging, configuration, connections.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use seckill::{Config, Db, RedisClient};
use tracing_subscriber::EnvFilter;

/// Flags accepted by every subcommand.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Configuration file, which must exist [default: ./config.yaml, built-in defaults when absent].
    #[arg(long, global = true, value_name = "PATH", value_parser = crate::parse::existing_file)]
    pub config: Option<PathBuf>,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Logs go to stderr so stdout stays clean for tables and JSON. `RUST_LOG` sets the level.
pub fn init_logging(global: &GlobalArgs) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn,seckill=info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match global.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// The loaded configuration; each command opens the connections it needs from it.
pub struct Context {
    /// The loaded configuration.
    pub config: Config,
}

impl Context {
    /// Loads the configuration named by `--config` (or `./config.yaml`).
    pub fn new(global: &GlobalArgs) -> anyhow::Result<Context> {
        let (path, explicit) = match &global.config {
            Some(path) => (path.clone(), true),
            None => (PathBuf::from("config.yaml"), false),
        };
        Ok(Context {
            config: Config::load(&path, explicit)?,
        })
    }

    /// Connects to MySQL.
    pub async fn db(&self) -> anyhow::Result<Db> {
        Ok(Db::connect(&self.config).await?)
    }

    /// Connects to Redis.
    pub async fn redis(&self) -> anyhow::Result<RedisClient> {
        Ok(RedisClient::connect(&self.config).await?)
    }

    /// The consumer group shared by the stream consumers.
    pub fn group(&self) -> &str {
        &self.config.consumer.group
    }
}
