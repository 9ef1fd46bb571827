//! `seckill status`.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use clap::Args;
use seckill::model::OrderStatus;
use seckill::ops::status::StatusReport;

use crate::context::Context;
use crate::output::{self, opt, OutputArgs};
use crate::parse;

/// Arguments of `seckill status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Activity id.
    activity: u64,
    /// Refresh the view until ctrl-c (plain lines when stdout is not a terminal).
    #[arg(long)]
    watch: bool,
    /// Refresh interval for --watch, e.g. 1s, 500ms (100ms to 1h).
    #[arg(long, default_value = "1s", value_parser = parse::refresh_interval)]
    interval: Duration,
    /// Also list each stock bucket of the sharded products (see `product add --shards`).
    #[arg(long)]
    buckets: bool,
    #[command(flatten)]
    output: OutputArgs,
}

pub async fn run(ctx: &Context, args: StatusArgs) -> anyhow::Result<()> {
    let (db, redis) = (ctx.db().await?, ctx.redis().await?);
    if args.watch {
        return watch(ctx, &db, &redis, args).await;
    }
    let report = seckill::ops::status(&db, &redis, ctx.group(), args.activity).await?;
    if args.output.json {
        return output::json(&report);
    }
    print_report(&report);
    if args.buckets {
        print_buckets(&report);
    }
    Ok(())
}

fn print_buckets(report: &StatusReport) {
    output::table(
        &["product", "bucket", "remaining", "reserved since hot"],
        report.products.iter().flat_map(|p| {
            p.buckets.iter().flatten().map(move |b| {
                vec![
                    p.id.to_string(),
                    b.bucket.to_string(),
                    b.stock.to_string(),
                    b.sold.to_string(),
                ]
            })
        }),
    );
}

fn print_report(report: &StatusReport) {
    if let Some(loss) = &report.redis_state_lost {
        println!("REDIS LOST STATE: {loss}");
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
        &[
            "product",
            "name",
            "total",
            "remaining",
            "reserved",
            "sold",
            "orders",
            "cancelled",
            "expired",
        ],
        report.products.iter().map(|p| {
            let count = |s: OrderStatus| p.orders_by_status.get(&s).copied().unwrap_or(0).to_string();
            vec![
                p.id.to_string(),
                p.name.clone(),
                p.total_stock.to_string(),
                opt(p.remaining),
                opt(p.reserved),
                p.sold.to_string(),
                p.orders.to_string(),
                count(OrderStatus::Cancelled),
                count(OrderStatus::Expired),
            ]
        }),
    );
}

/// Units reserved in Redis across all products.
fn reserved_units(report: &StatusReport) -> i64 {
    report.products.iter().filter_map(|p| p.reserved).sum()
}

async fn watch(ctx: &Context, db: &seckill::Db, redis: &seckill::RedisClient, args: StatusArgs) -> anyhow::Result<()> {
    let terminal = std::io::stdout().is_terminal() && !args.output.json;
    let mut previous: Option<(Instant, i64)> = None;
    let mut ticker = tokio::time::interval(args.interval);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            _ = &mut ctrl_c => break,
            _ = ticker.tick() => {}
        }
        let report = seckill::ops::status(db, redis, ctx.group(), args.activity).await?;
        let now = Instant::now();
        let reserved = reserved_units(&report);
        let rate = previous
            .map(|(at, before)| (reserved - before) as f64 / now.duration_since(at).as_secs_f64())
            .unwrap_or(0.0);
        previous = Some((now, reserved));
        if args.output.json {
            let line = serde_json::json!({ "buy_rate": rate, "status": report });
            println!("{line}");
        } else if terminal {
            // Clear the screen and draw from the top, so the view refreshes in place.
            print!("\x1b[H\x1b[2J");
            print_report(&report);
            println!(
                "buy rate {rate:.1} units/s, consumer lag {} entries  (ctrl-c to quit)",
                report.unpersisted
            );
        } else {
            let stamp = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            for p in &report.products {
                println!(
                    "{stamp} activity={} product={} remaining={} sold={} persisted={} pending={} rate={rate:.1} lag={}",
                    report.activity.row.id,
                    p.id,
                    opt(p.remaining),
                    opt(p.reserved),
                    p.sold,
                    p.reserved
                        .map(|r| r - i64::from(p.sold))
                        .map_or("-".into(), |v| v.to_string()),
                    report.unpersisted
                );
            }
        }
    }
    Ok(())
}
