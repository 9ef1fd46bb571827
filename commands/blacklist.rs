//! `seckill blacklist`.

use clap::Subcommand;
use seckill::ops::blacklist;

use crate::context::Context;
use crate::output::{self, OutputArgs};
use crate::parse;

/// Subcommands of `seckill blacklist`.
#[derive(Debug, Subcommand)]
pub enum BlacklistCommand {
    /// Bar a user from buying (effective at once in every preheated activity).
    Add {
        /// The user.
        #[arg(value_parser = parse::user_id)]
        user: String,
        /// Why (kept in MySQL).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Let a user buy again.
    Remove {
        /// The user.
        #[arg(value_parser = parse::user_id)]
        user: String,
    },
    /// List barred users.
    List {
        #[command(flatten)]
        output: OutputArgs,
    },
}

pub async fn run(ctx: &Context, cmd: BlacklistCommand) -> anyhow::Result<()> {
    let db = ctx.db().await?;
    match cmd {
        BlacklistCommand::Add { user, reason } => {
            let redis = ctx.redis().await?;
            let added = blacklist::add(&db, &redis, &user, &reason).await?;
            println!(
                "{}",
                if added {
                    format!("blacklisted {user}")
                } else {
                    format!("{user} was already blacklisted")
                }
            );
        }
        BlacklistCommand::Remove { user } => {
            let redis = ctx.redis().await?;
            let removed = blacklist::remove(&db, &redis, &user).await?;
            println!(
                "{}",
                if removed {
                    format!("removed {user} from the blacklist")
                } else {
                    format!("{user} was not blacklisted")
                }
            );
        }
        BlacklistCommand::List { output: out } => {
            let entries = blacklist::list(&db).await?;
            if out.json {
                return output::json(&entries);
            }
            output::table(
                &["user", "reason", "since"],
                entries
                    .iter()
                    .map(|e| vec![e.user_id.clone(), e.reason.clone(), e.created_at.to_rfc3339()]),
            );
        }
    }
    Ok(())
}
