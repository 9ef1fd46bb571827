//! `seckill status`: one activity's stock as Redis and MySQL see it.

use std::collections::HashMap;

use redis::AsyncCommands;
use serde::Serialize;

use crate::db::Db;
use crate::error::{DbContext, RedisContext, Result};
use crate::lost_state::{self, Loss};
use crate::model::{Activity, OrderStatus};
use crate::ops::catalog;
use crate::redis_client::RedisClient;
use crate::reservation;

/// The activity and each product's figures.
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    /// The activity row, plus whether Redis holds it.
    pub activity: ActivityState,
    /// One entry per product.
    pub products: Vec<ProductState>,
    /// Reservations queued in Redis and not yet persisted (all products).
    pub unpersisted: u64,
    /// Set when Redis lost the activity's state (see [`crate::lost_state`]).
    pub redis_state_lost: Option<Loss>,
}

/// The activity as MySQL and Redis know it.
#[derive(Debug, Clone, Serialize)]
pub struct ActivityState {
    /// The MySQL row.
    #[serde(flatten)]
    pub row: Activity,
    /// Status in Redis (`null` when not preheated).
    pub redis_status: Option<String>,
    /// Whether `hot` completed.
    pub preheated: bool,
}

/// One product's figures.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ProductState {
    /// Product id.
    pub id: u64,
    /// Product name.
    pub name: String,
    /// Units put on sale (MySQL).
    pub total_stock: u32,
    /// Units still on sale (Redis; `null` when not preheated).
    pub remaining: Option<i64>,
    /// Units reserved in Redis (`null` when not preheated).
    pub reserved: Option<i64>,
    /// Units held by persisted pending or paid orders (MySQL `products.sold`).
    pub sold: u32,
    /// Each stock bucket of a sharded product (absent for one without buckets in Redis);
    /// `remaining` and `reserved` are then their sums (plus units reserved before `hot`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub buckets: Option<Vec<crate::buckets::stock::Bucket>>,
    /// Orders in MySQL holding units (pending + paid).
    pub orders: i64,
    /// Orders in MySQL by status.
    pub orders_by_status: HashMap<OrderStatus, i64>,
}

/// Gathers the report. Works without Redis data (not preheated, or flushed).
pub async fn status(db: &Db, redis: &RedisClient, consumer_group: &str, activity_id: u64) -> Result<StatusReport> {
    let row = catalog::get_activity(db, activity_id).await?;
    let products = catalog::list_products(db, activity_id).await?;
    let counts: Vec<(u64, OrderStatus, i64)> = sqlx::query_as(
        "SELECT product_id, status, COUNT(*) FROM orders WHERE activity_id = ? GROUP BY product_id, status",
    )
    .bind(activity_id)
    .fetch_all(db.pool())
    .await
    .at(db)?;

    let keys = redis.keys();
    let mut conn = redis.conn();
    let redis_activity: HashMap<String, String> = conn.hgetall(keys.activity(activity_id)).await.at(redis)?;
    let mut pipe = redis::pipe();
    for p in &products {
        pipe.cmd("HMGET")
            .arg(keys.product(activity_id, p.id))
            .arg("stock")
            .arg("sold");
    }
    let live: Vec<(Option<i64>, Option<i64>)> = pipe.query_async(&mut conn).await.at(redis)?;
    let mut spread = Vec::with_capacity(products.len());
    for (p, (remaining, reserved)) in products.iter().zip(&live) {
        let shards = crate::buckets::stock::shards_of(redis, activity_id, p.id).await?;
        if shards < 2 || remaining.is_some() {
            spread.push((*remaining, *reserved, None));
            continue;
        }
        let buckets = crate::buckets::stock::per_bucket(redis, activity_id, p.id, shards).await?;
        let stock = buckets.iter().map(|b| b.stock).sum();
        let sold: i64 = buckets.iter().map(|b| b.sold).sum();
        spread.push((Some(stock), reserved.map(|before| before + sold), Some(buckets)));
    }
    let unpersisted = reservation::backlog(redis, activity_id, consumer_group).await?;
    let redis_state_lost = lost_state::inspect(db, redis, activity_id).await?;

    let products = products
        .into_iter()
        .zip(spread)
        .map(|(p, (remaining, reserved, buckets))| {
            let orders_by_status: HashMap<OrderStatus, i64> = counts
                .iter()
                .filter(|(product, _, _)| *product == p.id)
                .map(|(_, status, n)| (*status, *n))
                .collect();
            let orders = [OrderStatus::Pending, OrderStatus::Paid]
                .iter()
                .filter_map(|s| orders_by_status.get(s))
                .sum();
            ProductState {
                id: p.id,
                name: p.name,
                total_stock: p.total_stock,
                remaining,
                reserved,
                sold: p.sold,
                buckets,
                orders,
                orders_by_status,
            }
        })
        .collect();
    Ok(StatusReport {
        activity: ActivityState {
            preheated: redis_activity.get("preheated_at").is_some_and(|v| !v.is_empty()),
            redis_status: redis_activity.get("status").cloned(),
            row,
        },
        products,
        unpersisted,
        redis_state_lost,
    })
}
