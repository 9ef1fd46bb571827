//! `seckill start` and `seckill stop`.

use clap::Args;
use seckill::model::Activity;

use crate::context::Context;
use crate::output::{self, OutputArgs};

/// Arguments of `seckill start`.
#[derive(Debug, Args)]
pub struct StartArgs {
    /// Activity id.
    activity: u64,
    #[command(flatten)]
    output: OutputArgs,
}

/// Arguments of `seckill stop`.
#[derive(Debug, Args)]
pub struct StopArgs {
    /// Activity id.
    activity: u64,
    /// End the activity for good instead of pausing it.
    #[arg(long)]
    end: bool,
    #[command(flatten)]
    output: OutputArgs,
}

pub async fn start(ctx: &Context, args: StartArgs) -> anyhow::Result<()> {
    let (db, redis) = (ctx.db().await?, ctx.redis().await?);
    let activity = seckill::ops::start(&db, &redis, args.activity).await?;
    print(&activity, args.output)
}

pub async fn stop(ctx: &Context, args: StopArgs) -> anyhow::Result<()> {
    let (db, redis) = (ctx.db().await?, ctx.redis().await?);
    let activity = seckill::ops::stop(&db, &redis, args.activity, args.end).await?;
    print(&activity, args.output)
}

fn print(activity: &Activity, output: OutputArgs) -> anyhow::Result<()> {
    if output.json {
        return output::json(activity);
    }
    println!("activity {} is {}", activity.id, activity.status);
    Ok(())
}
