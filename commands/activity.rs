//! `seckill activity ...`.

use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use seckill::model::Activity;
use seckill::ops::catalog::{self, ActivityChanges, HotAt, NewActivity};

use crate::context::Context;
use crate::output::{self, OutputArgs};
use crate::parse;

/// Activity subcommands.
#[derive(Debug, Subcommand)]
pub enum ActivityCommand {
    /// Create an activity (in `draft`); prints its id.
    Create(CreateArgs),
    /// Change an activity's name, or its window while it is not online.
    Update(UpdateArgs),
    /// List every activity.
    List(OutputArgs),
    /// Show one activity.
    Show(IdArgs),
    /// Delete an activity that is not online, has no orders and no reservations waiting to be persisted.
    Delete(IdArgs),
}

/// Arguments of `activity create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Name shown to operators.
    #[arg(long)]
    name: String,
    /// When the sale opens (RFC 3339, e.g. 2026-11-11T00:00:00+08:00; 1970 to 9999).
    #[arg(long, value_parser = parse::time)]
    start: DateTime<Utc>,
    /// When the sale closes (RFC 3339).
    #[arg(long, value_parser = parse::time)]
    end: DateTime<Utc>,
    #[command(flatten)]
    hot: HotArgs,
    #[command(flatten)]
    output: OutputArgs,
}

/// When `seckill scheduler` preheats the activity (`hot`).
#[derive(Debug, Args)]
pub struct HotArgs {
    /// Preheat at this time (RFC 3339, at or before the start); `seckill scheduler` runs `hot`.
    #[arg(long, value_parser = parse::time, group = "hot_schedule")]
    hot_at: Option<DateTime<Utc>>,
    /// Preheat this many minutes before the start (0 to 525600); `seckill scheduler` runs `hot`.
    #[arg(long, value_name = "MINUTES", group = "hot_schedule",
          value_parser = clap::value_parser!(u32).range(0..=i64::from(catalog::MAX_HOT_BEFORE_MINUTES)))]
    hot_before: Option<u32>,
}

impl HotArgs {
    /// The schedule given, if any.
    fn given(&self) -> Option<HotAt> {
        match (self.hot_at, self.hot_before) {
            (Some(at), _) => Some(HotAt::At(at)),
            (None, Some(minutes)) => Some(HotAt::MinutesBefore(minutes)),
            (None, None) => None,
        }
    }
}

/// Arguments of `activity update`.
#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// Activity id.
    id: u64,
    /// New name.
    #[arg(long)]
    name: Option<String>,
    /// New opening time (RFC 3339); refused while the activity is online.
    #[arg(long, value_parser = parse::time)]
    start: Option<DateTime<Utc>>,
    /// New closing time (RFC 3339); refused while the activity is online.
    #[arg(long, value_parser = parse::time)]
    end: Option<DateTime<Utc>>,
    /// A scheduled preheat moves with `--start` unless one of these is given.
    #[command(flatten)]
    hot: HotArgs,
    /// Unschedule the preheat (run `seckill hot` by hand).
    #[arg(long, conflicts_with = "hot_schedule")]
    no_hot: bool,
    #[command(flatten)]
    output: OutputArgs,
}

/// An activity id plus output format.
#[derive(Debug, Args)]
pub struct IdArgs {
    /// Activity id.
    id: u64,
    #[command(flatten)]
    output: OutputArgs,
}

pub async fn run(ctx: &Context, command: ActivityCommand) -> anyhow::Result<()> {
    let db = ctx.db().await?;
    match command {
        ActivityCommand::Create(args) => {
            let new = NewActivity {
                name: args.name,
                start_at: args.start,
                end_at: args.end,
                hot: args.hot.given().unwrap_or_default(),
            };
            let activity = catalog::create_activity(&db, &new).await?;
            if args.output.json {
                return output::json(&activity);
            }
            println!("{}", activity.id);
        }
        ActivityCommand::Update(args) => {
            let changes = ActivityChanges {
                name: args.name,
                start_at: args.start,
                end_at: args.end,
                hot: if args.no_hot {
                    Some(HotAt::Unscheduled)
                } else {
                    args.hot.given()
                },
            };
            let activity = catalog::update_activity(&db, args.id, &changes).await?;
            print(&[activity], args.output)?;
        }
        ActivityCommand::List(output) => print(&catalog::list_activities(&db).await?, output)?,
        ActivityCommand::Show(args) => print(&[catalog::get_activity(&db, args.id).await?], args.output)?,
        ActivityCommand::Delete(args) => {
            let redis = ctx.redis().await?;
            let activity = catalog::delete_activity(&db, &redis, ctx.group(), args.id).await?;
            if args.output.json {
                return output::json(&activity);
            }
            println!("deleted activity {} ({})", activity.id, activity.name);
        }
    }
    Ok(())
}

fn print(activities: &[Activity], output: OutputArgs) -> anyhow::Result<()> {
    output::rows(
        activities,
        output,
        &["id", "name", "status", "start", "end", "hot at"],
        |a| {
            vec![
                a.id.to_string(),
                a.name.clone(),
                a.status.to_string(),
                a.start_at.to_rfc3339(),
                a.end_at.to_rfc3339(),
                output::opt(a.hot_at.map(|t| t.to_rfc3339())),
            ]
        },
    )
}
