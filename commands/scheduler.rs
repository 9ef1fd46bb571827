//! `seckill scheduler`.

use std::time::Duration;

use clap::Args;

use crate::context::Context;

/// Arguments of `seckill scheduler`.
#[derive(Debug, Args)]
pub struct SchedulerArgs {}

pub async fn run(ctx: &Context, _args: SchedulerArgs) -> anyhow::Result<()> {
    let (db, redis) = (ctx.db().await?, ctx.redis().await?);
    let tick = Duration::from_millis(ctx.config.scheduler.tick_ms);
    seckill::ops::scheduler::run(&db, &redis, tick, seckill::shutdown::signal()).await;
    Ok(())
}
