//! `seckill serve`.

use clap::Args;
use seckill::server::{self, AppState};

use crate::context::Context;

/// Arguments of `seckill serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Listen address [default: http.bind].
    #[arg(long, value_name = "ADDR")]
    bind: Option<String>,
    /// HTTP threads of their own, each with its own listener on the address; 0: none, the
    /// runtime's workers serve HTTP beside group commit and Redis [default: http.threads]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(0..=256))]
    threads: Option<u16>,
    /// Run with the shipped token secret or one under 32 bytes (demos only: anyone who
    /// knows it can forge purchase tokens).
    #[arg(long)]
    insecure_dev_secret: bool,
}

/// Refuses a secret anyone could know or guess, unless `--insecure-dev-secret` allows it
/// (then only a warning).
fn check_secret(ctx: &Context, args: &ServeArgs) -> anyhow::Result<()> {
    let Some(weak) = ctx.config.token.weak_secret() else {
        return Ok(());
    };
    if args.insecure_dev_secret {
        tracing::warn!("{weak}: anyone who knows it can forge purchase tokens (--insecure-dev-secret)");
        return Ok(());
    }
    Err(seckill::Error::refused(format!(
        "{weak}, so anyone could forge purchase tokens; set SECKILL_TOKEN_SECRET (or token.secret) to \
         {} or more random bytes, e.g. `export SECKILL_TOKEN_SECRET=$(openssl rand -hex 32)`, \
         or pass --insecure-dev-secret for a demo",
        seckill::config::MIN_SECRET_BYTES
    ))
    .into())
}

fn http_threads(ctx: &Context, args: &ServeArgs) -> usize {
    args.threads.map_or_else(|| ctx.config.http.threads, usize::from)
}

/// Workers of the main runtime (Redis, MySQL, group commit, and HTTP when it has no threads
/// of its own): the cores the HTTP threads leave, at least one. `None` when
/// `TOKIO_WORKER_THREADS` sets them (tokio reads it itself).
pub fn runtime_workers(ctx: &Context, args: &ServeArgs) -> Option<usize> {
    if std::env::var_os("TOKIO_WORKER_THREADS").is_some() {
        return None;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    Some(cores.saturating_sub(http_threads(ctx, args)).max(1))
}

/// Refuses an identity mode that cannot be set up (exit 2, like any configuration error);
/// warns when there is none.
fn check_identity(ctx: &Context) -> anyhow::Result<()> {
    seckill::server::identity::Identity::new(&ctx.config.auth).map_err(seckill::Error::Config)?;
    if ctx.config.auth.mode == seckill::config::AuthMode::None {
        tracing::warn!(
            "auth.mode is none: anyone can fetch tokens and buy as any user_id; set auth.mode to jwt or gateway for a real sale"
        );
    }
    Ok(())
}

pub async fn run(ctx: &Context, args: ServeArgs) -> anyhow::Result<()> {
    check_secret(ctx, &args)?;
    check_identity(ctx)?;
    let threads = http_threads(ctx, &args);
    let bind = args.bind.unwrap_or_else(|| ctx.config.http.bind.clone());
    let db = ctx.db().await?;
    let redis = ctx.redis().await?;
    seckill::durability::require_for_serving(&redis).await?;
    let listeners = server::bind(&bind, threads).map_err(|e| anyhow::anyhow!("cannot listen on {bind}: {e}"))?;
    // The address is logged by `server::run` (a plain eprintln would break JSON logs).
    let mut config = ctx.config.clone();
    config.http.threads = threads;
    let state = AppState::new(config, redis, db);
    server::run(listeners, state, seckill::shutdown::signal()).await?;
    Ok(())
}
