//! `seckill stock`.

use clap::Subcommand;
use seckill::ops::stock::{self, StockChange};

use crate::context::Context;
use crate::output::{self, OutputArgs};

/// `seckill stock ...`
#[derive(Debug, Subcommand)]
pub enum StockCommand {
    /// Top up a product's live stock (MySQL first, then Redis; ledger 'adjust').
    Add {
        /// Product id.
        product: u64,
        /// Units to add (1 to 4294967295; refused when the product's total stock could not hold them).
        #[arg(value_parser = clap::value_parser!(u32).range(1..))]
        units: u32,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Take a number of units off sale, never reserved ones (Redis first, then MySQL; ledger
    /// 'remove'); refused when fewer are on sale.
    Remove {
        /// Product id.
        product: u64,
        /// Units to take off sale (1 to 4294967295).
        #[arg(value_parser = clap::value_parser!(u32).range(1..))]
        units: u32,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// The source sold out: withdraw every unit still on sale at once (ledger 'sold_out').
    SoldOut {
        /// Product id.
        product: u64,
        #[command(flatten)]
        output: OutputArgs,
    },
}

pub async fn run(ctx: &Context, cmd: StockCommand) -> anyhow::Result<()> {
    let (db, redis) = (ctx.db().await?, ctx.redis().await?);
    let (change, json): (StockChange, bool) = match cmd {
        StockCommand::Add { product, units, output } => (stock::add(&db, &redis, product, units).await?, output.json),
        StockCommand::Remove { product, units, output } => {
            (stock::remove(&db, &redis, product, units).await?, output.json)
        }
        StockCommand::SoldOut { product, output } => (stock::sold_out(&db, &redis, product).await?, output.json),
    };
    if json {
        return output::json(&change);
    }
    println!(
        "product {}: {:+} units; total stock {}; on sale in Redis: {}",
        change.product_id,
        change.delta,
        change.total_stock,
        output::opt(change.redis_stock)
    );
    Ok(())
}
