//! `seckill order`.

use std::time::Duration;

use clap::Subcommand;
use seckill::model::{Order, OrderStatus};
use seckill::ops::order::{self, OrderFilter, Transition};

use crate::context::Context;
use crate::output::{self, OutputArgs};
use crate::parse;

/// `seckill order ...`
#[derive(Debug, Subcommand)]
pub enum OrderCommand {
    /// Show one order.
    Show {
        /// Order number.
        order_no: String,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// List an activity's orders.
    List {
        /// Activity id.
        #[arg(long)]
        activity: u64,
        /// Only this user's.
        #[arg(long, value_parser = parse::user_id)]
        user: Option<String>,
        /// Only this status (pending, paid, cancelled, expired).
        #[arg(long, value_parser = parse::order_status)]
        status: Option<OrderStatus>,
        /// At most this many (1 to 1000000).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
        limit: Option<u64>,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Mark a pending order paid (final).
    Pay {
        /// Order number.
        order_no: String,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Cancel a pending order: its units go back on sale and the user's quota is freed.
    Cancel {
        /// Order number.
        order_no: String,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Expire unpaid orders older than a window, returning their units (for cron).
    Expire {
        /// Age after which a pending order expires, e.g. 15m, 1h (0s to 3650d) [default: payment.timeout].
        #[arg(long, value_parser = parse::order_age)]
        older_than: Option<Duration>,
        /// Only this activity's orders.
        #[arg(long)]
        activity: Option<u64>,
        #[command(flatten)]
        output: OutputArgs,
    },
}

fn orders_table(orders: &[Order]) {
    output::table(
        &["order no", "product", "user", "qty", "amount", "status", "reserved at"],
        orders.iter().map(|o| {
            vec![
                o.order_no.clone(),
                o.product_id.to_string(),
                o.user_id.clone(),
                o.quantity.to_string(),
                o.amount.to_string(),
                o.status.to_string(),
                o.reserved_at.to_rfc3339(),
            ]
        }),
    );
}

fn print_transition(t: &Transition) {
    let released = match t.released {
        Some(true) => ", units back on sale",
        Some(false) => ", units NOT yet back on sale (reconcile --fix finishes it)",
        None => "",
    };
    if t.changed {
        println!("order {}: {} -> {}{released}", t.order_no, t.from, t.to);
    } else {
        println!("order {} already {}", t.order_no, t.to);
    }
}

pub async fn run(ctx: &Context, cmd: OrderCommand) -> anyhow::Result<()> {
    let db = ctx.db().await?;
    match cmd {
        OrderCommand::Show { order_no, output: out } => {
            let o = order::get(&db, &order_no).await?;
            if out.json {
                return output::json(&o);
            }
            orders_table(std::slice::from_ref(&o));
        }
        OrderCommand::List {
            activity,
            user,
            status,
            limit,
            output: out,
        } => {
            let orders = order::list(
                &db,
                &OrderFilter {
                    activity_id: activity,
                    user_id: user,
                    status,
                    limit,
                },
            )
            .await?;
            if out.json {
                return output::json(&orders);
            }
            orders_table(&orders);
        }
        OrderCommand::Pay { order_no, output: out } => {
            let t = order::pay(&db, &order_no).await?;
            if out.json {
                return output::json(&t);
            }
            print_transition(&t);
        }
        OrderCommand::Cancel { order_no, output: out } => {
            let redis = ctx.redis().await?;
            let t = order::cancel(&db, &redis, &order_no).await?;
            if out.json {
                return output::json(&t);
            }
            print_transition(&t);
        }
        OrderCommand::Expire {
            older_than,
            activity,
            output: out,
        } => {
            let redis = ctx.redis().await?;
            let older_than = older_than.unwrap_or(ctx.config.payment.timeout);
            let report = order::expire(&db, &redis, older_than, activity).await?;
            if out.json {
                return output::json(&report);
            }
            for t in &report.expired {
                print_transition(t);
            }
            println!(
                "{} expired, {} paid or cancelled meanwhile",
                report.expired.len(),
                report.skipped
            );
        }
    }
    Ok(())
}
