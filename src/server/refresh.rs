//! The server's periodic look at Redis: remaining stock of every product of every preheated
//! activity, for the `seckill_remaining_stock` gauges and the sold-out cache.
//!
//! Marking sold-out products from here (not only from a purchase's verdict) means a flood on
//! a product that sold out elsewhere (another server, or `stock sold-out`) is answered from
//! memory at once, even when the requests themselves would never reach Redis (bad tokens).
//!
//! The server state runs [`refresh`] periodically (see `state`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use metrics::Gauge;
use redis::AsyncCommands;

use super::funnel::{Catalog, ProductSlot};
use super::metrics::ServerMetrics;
use crate::error::RedisContext;
use crate::model::ActivityStatus;
use crate::redis_client::RedisClient;

/// Reads every preheated product's stock: sets its gauge, and marks it sold out in `catalog`
/// when its activity is online, inside its window, and the stock is gone (what reserve.lua
/// would answer to any valid purchase). `gauges` caches handles of products not in `catalog`.
pub async fn refresh(
    redis: &RedisClient,
    catalog: &Catalog,
    stats: &ServerMetrics,
    gauges: &mut HashMap<(u64, u64), Gauge>,
) -> crate::Result<()> {
    read_stock(redis, catalog, stats, gauges).await.at(redis)
}

async fn read_stock(
    redis: &RedisClient,
    catalog: &Catalog,
    stats: &ServerMetrics,
    gauges: &mut HashMap<(u64, u64), Gauge>,
) -> redis::RedisResult<()> {
    let keys = redis.keys();
    let mut conn = redis.conn();
    let activities: Vec<u64> = conn.smembers(keys.activities()).await?;
    for activity in activities {
        let (status, start_ms, end_ms): (Option<String>, Option<i64>, Option<i64>) = conn
            .hmget(keys.activity(activity), &["status", "start_ms", "end_ms"])
            .await?;
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let selling = status.as_deref() == Some(ActivityStatus::Online.as_str())
            && start_ms.is_some_and(|s| s <= now_ms)
            && end_ms.is_some_and(|e| now_ms < e);
        let products: Vec<u64> = conn.smembers(keys.products(activity)).await?;
        if products.is_empty() {
            continue;
        }
        let mut pipe = redis::pipe();
        for p in &products {
            pipe.hget(keys.product(activity, *p), "stock");
        }
        let stocks: Vec<Option<i64>> = pipe.query_async(&mut conn).await?;
        for (product, stock) in products.into_iter().zip(stocks) {
            let Some(stock) = stock else { continue };
            let slot: Option<Arc<ProductSlot>> = match catalog.get(product) {
                Some(slot) if slot.activity == activity => Some(slot),
                Some(_) => None,
                None if selling && stock <= 0 => {
                    Some(catalog.insert(product, activity, stats.remaining_stock(activity, product)))
                }
                None => None,
            };
            match slot {
                Some(slot) => {
                    slot.remaining.set(stock as f64);
                    if selling && stock <= 0 {
                        catalog.mark_sold_out(&slot);
                    }
                }
                None => gauges
                    .entry((activity, product))
                    .or_insert_with(|| stats.remaining_stock(activity, product))
                    .set(stock as f64),
            }
        }
    }
    Ok(())
}
