//! `seckill status`.

use clap::Args;

use crate::context::Context;
use crate::output::{self, opt, OutputArgs};

/// Arguments of `seckill status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Activity id.
    activity: u64,
    #[command(flatten)]
    output: OutputArgs,
}

pub async fn run(ctx: &Context, args: StatusArgs) -> anyhow::Result<()> {
    let (db, redis) = (ctx.db().await?, ctx.redis().await?);
    let report = seckill::ops::status(&db, &redis, ctx.group(), args.activity).await?;
    if args.output.json {
        return output::json(&report);
    }
    let a = &report.activity;
    println!(
        "activity {} ({}): {} in MySQL, {} in Redis; {} to {}; {} reservations not yet persisted",
        a.row.id,
        a.row.name,
        a.row.status,
        a.redis_status.as_deref().unwrap_or("not preheated"),
        a.row.start_at.to_rfc3339(),
        a.row.end_at.to_rfc3339(),
        report.unpersisted
    );
    output::table(
        &["product", "name", "total", "remaining", "reserved", "sold", "orders", "cancelled", "expired"],
        report.products.iter().map(|p| {
            let count = |s: &str| p.orders_by_status.get(s).copied().unwrap_or(0).to_string();
            vec![
                p.id.to_string(),
                p.name.clone(),
                p.total_stock.to_string(),
                opt(p.remaining),
                opt(p.reserved),
                p.sold.to_string(),
                p.orders.to_string(),
                count("cancelled"),
                count("expired"),
            ]
        }),
    );
    Ok(())
}
