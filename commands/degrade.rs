//! `seckill degrade`.

use clap::Subcommand;
use seckill::ops::degrade::{self, DegradeStatus};

use crate::context::Context;
use crate::output::{self, OutputArgs};

/// Subcommands of `seckill degrade`.
#[derive(Debug, Subcommand)]
pub enum DegradeCommand {
    /// Answer every buy of the activity `503 degraded` (every `serve`, within a second;
    /// stock untouched).
    On {
        /// Activity id.
        activity: u64,
        /// What buyers are told (1..=500 characters) [default: the sale is temporarily
        /// unavailable, retry later].
        #[arg(long, value_name = "TEXT", value_parser = message)]
        message: Option<String>,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Decide the activity's buys again.
    Off {
        /// Activity id.
        activity: u64,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Show whether the activity is degraded, and its message.
    Status {
        /// Activity id.
        activity: u64,
        #[command(flatten)]
        output: OutputArgs,
    },
}

/// A message for buyers that [`degrade::check_message`] accepts.
fn message(text: &str) -> Result<String, String> {
    degrade::check_message(text).map_err(|e| match e {
        seckill::Error::Invalid(message) => message,
        other => other.to_string(),
    })?;
    Ok(text.to_string())
}

pub async fn run(ctx: &Context, cmd: DegradeCommand) -> anyhow::Result<()> {
    let (db, redis) = (ctx.db().await?, ctx.redis().await?);
    let (status, out) = match cmd {
        DegradeCommand::On {
            activity,
            message,
            output,
        } => (degrade::on(&db, &redis, activity, message.as_deref()).await?, output),
        DegradeCommand::Off { activity, output } => (degrade::off(&db, &redis, activity).await?, output),
        DegradeCommand::Status { activity, output } => (degrade::status(&db, &redis, activity).await?, output),
    };
    if out.json {
        return output::json(&status);
    }
    print(&status);
    Ok(())
}

fn print(status: &DegradeStatus) {
    match &status.message {
        Some(message) => println!("activity {} is degraded: {message}", status.activity_id),
        None => println!("activity {} is not degraded", status.activity_id),
    }
}
