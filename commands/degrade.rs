//! `seckill degrade`.

use clap::{Args, Subcommand};
use seckill::ops::degrade::{self, DegradeStatus};

use crate::context::Context;
use crate::output::{self, OutputArgs};

/// Arguments of `seckill degrade ACTIVITY_ID on|off|status`.
#[derive(Debug, Args)]
pub struct DegradeArgs {
    /// Activity id.
    activity: u64,
    #[command(subcommand)]
    switch: Switch,
}

/// What to do with the activity's switch.
#[derive(Debug, Subcommand)]
pub enum Switch {
    /// Answer every buy of the activity `503 degraded` (every `serve`, within a second;
    /// stock untouched).
    On {
        /// What buyers are told (1..=500 characters) [default: the sale is temporarily
        /// unavailable, retry later].
        #[arg(long, value_name = "TEXT", value_parser = message)]
        message: Option<String>,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Decide the activity's buys again.
    Off {
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Show whether the activity is degraded, and its message.
    Status {
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

pub async fn run(ctx: &Context, args: DegradeArgs) -> anyhow::Result<()> {
    let (db, redis) = (ctx.db().await?, ctx.redis().await?);
    let activity = args.activity;
    let (status, out) = match args.switch {
        Switch::On { message, output } => (degrade::on(&db, &redis, activity, message.as_deref()).await?, output),
        Switch::Off { output } => (degrade::off(&db, &redis, activity).await?, output),
        Switch::Status { output } => (degrade::status(&db, &redis, activity).await?, output),
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
