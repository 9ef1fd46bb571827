//! The server's periodic look at Redis: remaining stock of every product of every preheated
//! activity, for the `seckill_remaining_stock` gauges and the sold-out cache.
//!
//! Marking sold-out products from here (not only from a purchase's verdict) means a flood on
//! a product that sold out elsewhere (another server, or `stock sold-out`) is answered from
//! memory at once, even when the requests themselves would never reach Redis (bad tokens).
//!
//! The server state runs [`refresh`] periodically (see `state`), and [`refresh_degraded`]
//! (the degrade switches of `seckill degrade`) often enough that a switch takes effect on
//! every server within a second.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use metrics::Gauge;
use redis::AsyncCommands;

use super::funnel::{Catalog, DegradeSwitches, ProductSlot};
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

/// Reads the degrade switch of every preheated activity into `switches`, logging each one
/// that changed, and sets each activity's gauge (`gauges` keeps the handles). On a Redis
/// error the switches stay as they were.
pub async fn refresh_degraded(
    redis: &RedisClient,
    switches: &DegradeSwitches,
    stats: &ServerMetrics,
    gauges: &mut HashMap<u64, Gauge>,
) -> crate::Result<()> {
    let (activities, on) = read_degraded(redis).await.at(redis)?;
    for activity in activities {
        gauges
            .entry(activity)
            .or_insert_with(|| stats.degraded(activity))
            .set(if on.contains_key(&activity) { 1.0 } else { 0.0 });
    }
    let before = switches.current();
    if *before == on {
        return Ok(());
    }
    for (activity, message) in &on {
        if before.get(activity) != Some(message) {
            tracing::warn!(activity, %message, "activity degraded: its buys are answered `degraded`");
        }
    }
    for activity in before.keys().filter(|a| !on.contains_key(a)) {
        tracing::info!(activity, "activity no longer degraded: buys are decided again");
        if let Some(gauge) = gauges.get(activity) {
            gauge.set(0.0);
        }
    }
    switches.set(on);
    Ok(())
}

/// The preheated activities, and the message of each one whose switch is on.
async fn read_degraded(redis: &RedisClient) -> redis::RedisResult<(Vec<u64>, HashMap<u64, Arc<str>>)> {
    let keys = redis.keys();
    let mut conn = redis.conn();
    let activities: Vec<u64> = conn.smembers(keys.activities()).await?;
    if activities.is_empty() {
        return Ok((activities, HashMap::new()));
    }
    let mut pipe = redis::pipe();
    for activity in &activities {
        pipe.get(keys.degraded(*activity));
    }
    let messages: Vec<Option<String>> = pipe.query_async(&mut conn).await?;
    let on = activities
        .iter()
        .zip(messages)
        .filter_map(|(activity, message)| Some((*activity, Arc::from(message?))))
        .collect();
    Ok((activities, on))
}
