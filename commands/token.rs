//! `seckill token`: issue purchase tokens ahead of the sale; `seckill token revoke`.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use clap::{Args, Subcommand};
use seckill::ops::token::{self, UserRange};
use seckill::token::Signer;

use crate::context::Context;
use crate::parse;

/// Arguments of `seckill token`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct TokenArgs {
    #[command(subcommand)]
    command: Option<TokenCommand>,
    #[command(flatten)]
    issue: IssueArgs,
}

/// `seckill token ACTIVITY_ID (--user U | --users FILE | --range A-B)`.
#[derive(Debug, Args)]
pub struct IssueArgs {
    /// Activity id (preheated, not ended).
    #[arg(required = true)]
    activity: Option<u64>,
    #[command(flatten)]
    users: UserArgs,
    /// Token lifetime in seconds, 1 to 31536000 (a year) [default: token.ttl_secs].
    #[arg(long, value_parser = parse::ttl_secs)]
    ttl: Option<u64>,
    /// Write the `user_id,token` CSV here instead of stdout.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

/// Whose tokens to issue: exactly one of these.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct UserArgs {
    /// One user.
    #[arg(long, value_parser = parse::user_id)]
    user: Option<String>,
    /// A file with one user id per line.
    #[arg(long, value_name = "FILE")]
    users: Option<PathBuf>,
    /// Numeric user ids FIRST-LAST, inclusive (e.g. 1-100000; at most 10,000,000 users).
    #[arg(long, value_name = "FIRST-LAST", value_parser = parse::user_range)]
    range: Option<UserRange>,
}

/// Subcommands of `seckill token`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Revoke a user's token: their purchases are refused (any token), and
    /// `POST /api/v1/token` gives them no new one until `token lift` (the operator may still
    /// issue one).
    Revoke {
        /// Activity id.
        activity: u64,
        /// The user.
        #[arg(long, value_parser = parse::user_id)]
        user: String,
    },
    /// Let a revoked user buy and fetch tokens over HTTP again (their old token is good
    /// again until it expires).
    Lift {
        /// Activity id.
        activity: u64,
        /// The user.
        #[arg(long, value_parser = parse::user_id)]
        user: String,
    },
}

pub async fn run(ctx: &Context, args: TokenArgs) -> anyhow::Result<()> {
    let redis = ctx.redis().await?;
    if let Some(TokenCommand::Revoke { activity, user }) = args.command {
        let revoked = token::revoke(&redis, activity, &user).await?;
        if revoked {
            println!("revoked the token of user {user} in activity {activity}");
        } else {
            println!("revoked user {user} in activity {activity} (they had no registered token)");
        }
        return Ok(());
    }
    if let Some(TokenCommand::Lift { activity, user }) = args.command {
        if token::lift(&redis, activity, &user).await? {
            println!("user {user} may buy and fetch tokens in activity {activity} again");
        } else {
            println!("user {user} was not revoked in activity {activity}");
        }
        return Ok(());
    }
    let issue = args.issue;
    let activity = issue.activity.ok_or_else(|| anyhow::anyhow!("missing ACTIVITY_ID"))?;
    let users = match (issue.users.user, issue.users.users, issue.users.range) {
        (Some(user), _, _) => vec![user],
        (_, Some(path), _) => token::read_users(&path)?,
        (_, _, Some(range)) => range.ids(),
        _ => anyhow::bail!("name the users: --user, --users or --range"),
    };
    let db = ctx.db().await?;
    let signer = Signer::new(&ctx.config.token.secret);
    let ttl = issue.ttl.unwrap_or(ctx.config.token.ttl_secs);
    let tokens = token::issue(&db, &redis, &signer, activity, &users, ttl).await?;
    match &issue.out {
        Some(path) => {
            let file = File::create(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            token::write_csv(&mut BufWriter::new(file), &tokens)?;
            eprintln!(
                "wrote {} tokens of activity {activity} to {}",
                tokens.len(),
                path.display()
            );
        }
        None => {
            let stdout = std::io::stdout();
            let mut out = BufWriter::new(stdout.lock());
            token::write_csv(&mut out, &tokens)?;
            out.flush()?;
        }
    }
    Ok(())
}
