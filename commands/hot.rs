//! `seckill hot`.

use clap::Args;

use crate::context::Context;
use crate::output::{self, OutputArgs};

/// Arguments of `seckill hot`.
#[derive(Debug, Args)]
pub struct HotArgs {
    /// Activity id.
    activity: u64,
    #[command(flatten)]
    output: OutputArgs,
}

pub async fn run(ctx: &Context, args: HotArgs) -> anyhow::Result<()> {
    let db = ctx.db().await?;
    let redis = ctx.redis().await?;
    let report = seckill::ops::hot(&db, &redis, ctx.group(), args.activity).await?;
    if args.output.json {
        return output::json(&report);
    }
    println!(
        "preheated activity {} ({}): {} products, {} units on sale, {} holders, {} blacklisted",
        report.activity_id, report.status, report.products, report.remaining, report.holders, report.blacklisted
    );
    Ok(())
}
