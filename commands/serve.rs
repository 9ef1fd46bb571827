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
}

pub async fn run(ctx: &Context, args: ServeArgs) -> anyhow::Result<()> {
    let bind = args.bind.unwrap_or_else(|| ctx.config.http.bind.clone());
    let db = ctx.db().await?;
    let redis = ctx.redis().await?;
    let listeners = server::bind(&bind, ctx.config.http.thread_count())
        .map_err(|e| anyhow::anyhow!("cannot listen on {bind}: {e}"))?;
    // The address is logged by `server::run` (a plain eprintln would break JSON logs).
    let state = AppState::new(ctx.config.clone(), redis, db);
    server::run(listeners, state, server::shutdown_signal()).await?;
    Ok(())
}
