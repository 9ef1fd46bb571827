//! `seckill product ...`.

use clap::{Args, Subcommand};
use rust_decimal::Decimal;
use seckill::model::Product;
use seckill::ops::catalog::{self, NewProduct, ProductChanges};

use crate::context::Context;
use crate::output::{self, OutputArgs};
use crate::parse;

/// Product subcommands.
#[derive(Debug, Subcommand)]
pub enum ProductCommand {
    /// Add a product to an activity that is not online; prints its id.
    Add(AddArgs),
    /// Change a product of an activity that is not online.
    Update(UpdateArgs),
    /// List an activity's products.
    List(ListArgs),
    /// Show one product.
    Show(IdArgs),
    /// Delete a product of an activity that is not online (if it has no orders and no reservations wait to be persisted).
    Delete(IdArgs),
}

/// Arguments of `product add`.
#[derive(Debug, Args)]
pub struct AddArgs {
    /// The activity selling it.
    #[arg(long)]
    activity: u64,
    /// Name shown to buyers.
    #[arg(long)]
    name: String,
    /// Unit price, e.g. 99.90 (0 to 9999999999.99, at most two decimals).
    #[arg(long, value_parser = parse::price, allow_hyphen_values = true)]
    price: Decimal,
    /// Units on sale (0 to 4294967295).
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..=u32::MAX as i64), allow_hyphen_values = true)]
    stock: u32,
    /// Most units one user may hold (1 to 4294967295).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=u32::MAX as i64), allow_hyphen_values = true)]
    limit_per_user: u32,
    /// Most units in one order, 1 to 4294967295 [default: the per-user limit].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=u32::MAX as i64), allow_hyphen_values = true)]
    max_per_order: Option<u32>,
    /// Stock buckets in Redis, 1 to 1024: a hot product's stock split over N slots (README "Stock sharding").
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1024), allow_hyphen_values = true)]
    shards: u16,
    #[command(flatten)]
    output: OutputArgs,
}

/// Arguments of `product update`.
#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// Product id.
    id: u64,
    /// New name.
    #[arg(long)]
    name: Option<String>,
    /// New unit price.
    #[arg(long, value_parser = parse::price, allow_hyphen_values = true)]
    price: Option<Decimal>,
    /// New total stock.
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..=u32::MAX as i64), allow_hyphen_values = true)]
    stock: Option<u32>,
    /// New per-user limit.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=u32::MAX as i64), allow_hyphen_values = true)]
    limit_per_user: Option<u32>,
    /// New per-order maximum.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=u32::MAX as i64), allow_hyphen_values = true)]
    max_per_order: Option<u32>,
    /// New number of stock buckets, 1 to 1024 (takes effect at the next `hot`).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1024), allow_hyphen_values = true)]
    shards: Option<u16>,
    #[command(flatten)]
    output: OutputArgs,
}

/// Arguments of `product list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// The activity.
    #[arg(long)]
    activity: u64,
    #[command(flatten)]
    output: OutputArgs,
}

/// A product id plus output format.
#[derive(Debug, Args)]
pub struct IdArgs {
    /// Product id.
    id: u64,
    #[command(flatten)]
    output: OutputArgs,
}

pub async fn run(ctx: &Context, command: ProductCommand) -> anyhow::Result<()> {
    let db = ctx.db().await?;
    match command {
        ProductCommand::Add(args) => {
            let new = NewProduct {
                activity_id: args.activity,
                name: args.name,
                price: args.price,
                stock: args.stock,
                per_user_limit: args.limit_per_user,
                max_per_order: args.max_per_order,
                shards: Some(args.shards),
            };
            let product = catalog::add_product(&db, &new).await?;
            if args.output.json {
                return output::json(&product);
            }
            println!("{}", product.id);
        }
        ProductCommand::Update(args) => {
            let changes = ProductChanges {
                name: args.name,
                price: args.price,
                stock: args.stock,
                per_user_limit: args.limit_per_user,
                max_per_order: args.max_per_order,
                shards: args.shards,
            };
            let product = catalog::update_product(&db, args.id, &changes).await?;
            print(&[product], args.output)?;
        }
        ProductCommand::List(args) => print(&catalog::list_products(&db, args.activity).await?, args.output)?,
        ProductCommand::Show(args) => print(&[catalog::get_product(&db, args.id).await?], args.output)?,
        ProductCommand::Delete(args) => {
            let redis = ctx.redis().await?;
            let product = catalog::delete_product(&db, &redis, ctx.group(), args.id).await?;
            if args.output.json {
                return output::json(&product);
            }
            println!("deleted product {} ({})", product.id, product.name);
        }
    }
    Ok(())
}

fn print(products: &[Product], output: OutputArgs) -> anyhow::Result<()> {
    output::rows(
        products,
        output,
        &[
            "id",
            "activity",
            "name",
            "price",
            "stock",
            "sold",
            "limit/user",
            "max/order",
            "shards",
        ],
        |p| {
            vec![
                p.id.to_string(),
                p.activity_id.to_string(),
                p.name.clone(),
                p.price.to_string(),
                p.total_stock.to_string(),
                p.sold.to_string(),
                p.per_user_limit.to_string(),
                p.max_per_order.to_string(),
                p.shards.to_string(),
            ]
        },
    )
}
