//! `seckill migrate`.

use clap::Args;

use crate::context::Context;
use crate::output::{self, OutputArgs};

/// Arguments of `seckill migrate`.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    output: OutputArgs,
}

pub async fn run(ctx: &Context, args: MigrateArgs) -> anyhow::Result<()> {
    let applied = seckill::db::migrate(&ctx.config).await?;
    if args.output.json {
        return output::json(&serde_json::json!({ "applied": applied }));
    }
    if applied.is_empty() {
        println!("database is up to date");
    }
    for migration in applied {
        println!("applied {migration}");
    }
    Ok(())
}
