//! `seckill hot`: preheat an activity's stock, rules and scripts into Redis from MySQL.

use std::collections::HashMap;

use redis::AsyncCommands;
use serde::Serialize;

use crate::db::Db;
use crate::error::{Error, Result};
use crate::model::ActivityStatus;
use crate::ops::catalog;
use crate::redis_client::RedisClient;
use crate::{durability, lost_state, progress, reservation, scripts};

/// What `hot` loaded.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct HotReport {
    /// The activity.
    pub activity_id: u64,
    /// Its status, as loaded into Redis.
    pub status: String,
    /// Products loaded.
    pub products: usize,
    /// Units on sale after loading (sum of remaining stock).
    pub remaining: u64,
    /// Users with units held, restored into the per-user totals.
    pub holders: usize,
    /// Blacklisted users copied in.
    pub blacklisted: usize,
}

/// Writes per chunk of pipelined commands.
const CHUNK: usize = 1000;

/// Loads activity `activity_id` into Redis. Refuses while it is online (in MySQL or in
/// Redis) and while reservations wait to be persisted, because the stock loaded is
/// MySQL's `total_stock - sold` and either case would put sold units on sale again.
pub async fn hot(db: &Db, redis: &RedisClient, consumer_group: &str, activity_id: u64) -> Result<HotReport> {
    let activity = catalog::get_activity(db, activity_id).await?;
    if activity.status() == ActivityStatus::Online {
        return Err(Error::refused(format!(
            "activity {activity_id} is online: preheating would overwrite its live stock; \
             run `seckill stop {activity_id}` first"
        )));
    }
    durability::require(redis).await?;
    let backlog = reservation::backlog(redis, activity_id, consumer_group).await?;
    if backlog > 0 {
        return Err(Error::refused(format!(
            "activity {activity_id} has {backlog} reservations not yet persisted; \
             let `seckill consumer` drain them first"
        )));
    }
    // MySQL's own clock, read before the products: `start` compares it with `updated_at`
    // to notice products changed after this preheat. It is read 2 ms after this preheat
    // began, so that a product written just before (`product add` then `hot` in a script)
    // cannot share the snapshot's millisecond and pass for a change made after it.
    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    let snapshot_ms: i64 = sqlx::query_scalar("SELECT CAST(UNIX_TIMESTAMP(NOW(3)) * 1000 AS SIGNED)")
        .fetch_one(db.pool())
        .await
        .map_err(|e| db.err(e))?;
    let products = catalog::list_products(db, activity_id).await?;
    if products.is_empty() {
        return Err(Error::refused(format!("activity {activity_id} has no products")));
    }
    let holdings: Vec<(u64, String, i64)> = sqlx::query_as(
        "SELECT product_id, CAST(user_id AS CHAR), CAST(SUM(quantity) AS SIGNED) FROM orders \
         WHERE activity_id = ? AND status IN ('pending', 'paid') GROUP BY product_id, user_id",
    )
    .bind(activity_id)
    .fetch_all(db.pool())
    .await
    .map_err(|e| db.err(e))?;
    let released: Vec<String> =
        sqlx::query_scalar("SELECT order_no FROM orders WHERE activity_id = ? AND status IN ('cancelled', 'expired')")
            .bind(activity_id)
            .fetch_all(db.pool())
            .await
            .map_err(|e| db.err(e))?;
    let blacklist: Vec<String> = sqlx::query_scalar("SELECT CAST(user_id AS CHAR) FROM blacklist")
        .fetch_all(db.pool())
        .await
        .map_err(|e| db.err(e))?;

    let (epoch, persist_seq) = lost_state::next_epoch(db, activity_id).await?;
    let keys = redis.keys();
    let mut conn = redis.conn();
    for script in scripts::all() {
        script.load_async(&mut conn).await.map_err(|e| redis.err(e))?;
    }

    let mut invocation = scripts::PREHEAT.prepare_invoke();
    invocation
        .key(keys.activity(activity_id))
        .key(keys.products(activity_id))
        .key(keys.blacklist(activity_id))
        .key(keys.released(activity_id))
        .arg(activity_id)
        .arg(&activity.name)
        .arg(activity.status.as_str())
        .arg(activity.start_at.timestamp_millis())
        .arg(activity.end_at.timestamp_millis())
        .arg(products.len())
        .arg(&epoch)
        .arg(persist_seq);
    for p in &products {
        invocation
            .key(keys.product(activity_id, p.id))
            .key(keys.bought(activity_id, p.id));
        invocation
            .arg(p.id)
            .arg(p.total_stock - p.sold)
            .arg(p.sold)
            .arg(p.total_stock)
            .arg(p.per_user_limit)
            .arg(p.max_per_order)
            .arg(p.price.to_string())
            .arg(&p.name);
    }
    let loaded: redis::RedisResult<i64> = invocation.invoke_async(&mut conn).await;
    match loaded {
        Ok(_) => {}
        Err(e) if e.to_string().contains("ONLINE") => {
            return Err(Error::refused(format!(
                "activity {activity_id} is online in Redis: preheating would overwrite its live stock"
            )))
        }
        Err(e) => return Err(redis.err(e)),
    }
    lost_state::stamp(db, activity_id, &epoch).await?;

    let bar = progress::bar(products.len() as u64, "hot");
    let mut by_product: HashMap<u64, Vec<(String, i64)>> = HashMap::new();
    for (product, user, units) in holdings.iter().cloned() {
        by_product.entry(product).or_default().push((user, units));
    }
    for p in &products {
        let holders = by_product.remove(&p.id).unwrap_or_default();
        for chunk in holders.chunks(CHUNK) {
            let () = conn
                .hset_multiple(keys.bought(activity_id, p.id), chunk)
                .await
                .map_err(|e| redis.err(e))?;
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let owners: Vec<(u64, u64)> = products.iter().map(|p| (p.id, activity_id)).collect();
    let () = conn
        .hset_multiple(keys.product_activity(), &owners)
        .await
        .map_err(|e| redis.err(e))?;
    for chunk in blacklist.chunks(CHUNK) {
        let () = conn
            .sadd(keys.blacklist(activity_id), chunk)
            .await
            .map_err(|e| redis.err(e))?;
    }
    for chunk in released.chunks(CHUNK) {
        let () = conn
            .sadd(keys.released(activity_id), chunk)
            .await
            .map_err(|e| redis.err(e))?;
    }
    reservation::ensure_group(redis, activity_id, consumer_group).await?;
    let () = conn
        .sadd(keys.activities(), activity_id)
        .await
        .map_err(|e| redis.err(e))?;
    let () = conn
        .hset(keys.activity(activity_id), "preheated_at", snapshot_ms)
        .await
        .map_err(|e| redis.err(e))?;

    let mut tx = db.pool().begin().await.map_err(|e| db.err(e))?;
    for p in &products {
        sqlx::query(
            "INSERT INTO stock_ledger (activity_id, product_id, op, delta, reason) VALUES (?, ?, 'preheat', ?, 'hot')",
        )
        .bind(activity_id)
        .bind(p.id)
        .bind(i64::from(p.total_stock - p.sold))
        .execute(&mut *tx)
        .await
        .map_err(|e| db.err(e))?;
    }
    tx.commit().await.map_err(|e| db.err(e))?;

    Ok(HotReport {
        activity_id,
        status: activity.status.clone(),
        products: products.len(),
        remaining: products.iter().map(|p| u64::from(p.total_stock - p.sold)).sum(),
        holders: holdings.len(),
        blacklisted: blacklist.len(),
    })
}
