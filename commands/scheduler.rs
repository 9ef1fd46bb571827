//! `seckill scheduler`.

use std::time::Duration;

use clap::Args;

use crate::context::Context;

/// Arguments of `seckill scheduler`.
#[derive(Debug, Args)]
pub struct SchedulerArgs {}

pub async fn run(ctx: &Context, _args: SchedulerArgs) -> anyhow::Result<()> {
    // One connection holds the tick lock while `start` and `stop` use others.
    if ctx.config.database.max_connections < 2 {
        return Err(seckill::Error::Config(
            "database.max_connections: the scheduler needs at least 2 (one holds its tick lock)".into(),
        )
        .into());
    }
    let (db, redis) = (ctx.db().await?, ctx.redis().await?);
    let tick = Duration::from_millis(ctx.config.scheduler.tick_ms);
    seckill::ops::scheduler::run(&db, &redis, ctx.group(), tick, seckill::shutdown::signal()).await;
    Ok(())
}
