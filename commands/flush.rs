//! `seckill flush`.

use std::io::{BufRead, IsTerminal, Write};

use clap::Args;

use crate::context::Context;
use crate::output::{self, OutputArgs};

/// Arguments of `seckill flush`.
#[derive(Debug, Args)]
pub struct FlushArgs {
    /// Activity id.
    activity: u64,
    /// Flush even while the activity is online or reservations wait to be persisted.
    #[arg(long)]
    force: bool,
    /// Do not ask for confirmation.
    #[arg(short = 'y', long = "yes")]
    yes: bool,
    #[command(flatten)]
    output: OutputArgs,
}

pub async fn run(ctx: &Context, args: FlushArgs) -> anyhow::Result<()> {
    if !args.yes && !confirm(args.activity)? {
        anyhow::bail!(
            "flush of activity {} not confirmed; nothing removed (pass -y to skip the question)",
            args.activity
        );
    }
    let (db, redis) = (ctx.db().await?, ctx.redis().await?);
    let report = seckill::ops::flush(&db, &redis, ctx.group(), args.activity, args.force).await?;
    if args.output.json {
        return output::json(&report);
    }
    for key in &report.removed {
        println!("removed {key}");
    }
    println!(
        "flushed activity {}: {} keys removed",
        report.activity_id,
        report.removed.len()
    );
    Ok(())
}

fn confirm(activity: u64) -> anyhow::Result<bool> {
    if !std::io::stdin().is_terminal() {
        return Ok(false);
    }
    eprint!("remove every Redis key of activity {activity}? [y/N] ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}
