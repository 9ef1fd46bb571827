//! `seckill hot`: preheat an activity's stock, rules and scripts into Redis from MySQL.

use std::collections::HashMap;

use redis::AsyncCommands;
use serde::Serialize;

use crate::db::Db;
use crate::error::{DbContext, Error, RedisContext, Result};
use crate::model::{Activity, ActivityStatus, Product};
use crate::ops::catalog;
use crate::redis_client::RedisClient;
use crate::{buckets, durability, lost_state, progress, reservation, scripts, totals};

/// What `hot` loaded.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct HotReport {
    /// The activity.
    pub activity_id: u64,
    /// Its status, as loaded into Redis.
    pub status: ActivityStatus,
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
    refuse_unless_preheatable(redis, consumer_group, &activity).await?;
    let snapshot = Snapshot::read(db, activity_id).await?;
    load(db, redis, consumer_group, &activity, &snapshot).await?;
    record_in_ledger(db, activity_id, &snapshot.products).await?;
    Ok(HotReport {
        activity_id,
        status: activity.status,
        products: snapshot.products.len(),
        remaining: snapshot
            .products
            .iter()
            .map(|p| u64::from(p.total_stock - p.sold))
            .sum(),
        holders: snapshot.holdings.len(),
        blacklisted: snapshot.blacklist.len(),
    })
}

/// The refusals MySQL's status, the server's durability and the unpersisted backlog give;
/// Redis's own status is checked by `preheat.lua` itself.
async fn refuse_unless_preheatable(redis: &RedisClient, consumer_group: &str, activity: &Activity) -> Result<()> {
    let activity_id = activity.id;
    if activity.status == ActivityStatus::Online {
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
    Ok(())
}

/// What MySQL holds for the activity, as loaded into Redis.
struct Snapshot {
    /// MySQL's clock when the snapshot began (ms since the epoch): `start` counts a product
    /// whose `updated_at` is at or after it as changed since this preheat.
    taken_ms: i64,
    products: Vec<Product>,
    /// (product, user, units) of the pending and paid orders.
    holdings: Vec<(u64, String, i64)>,
    /// Order numbers of the cancelled and expired orders.
    released: Vec<String>,
    blacklist: Vec<String>,
}

impl Snapshot {
    async fn read(db: &Db, activity_id: u64) -> Result<Snapshot> {
        let taken_ms = snapshot_time(db, activity_id).await?;
        let products = catalog::list_products(db, activity_id).await?;
        if products.is_empty() {
            return Err(Error::refused(format!("activity {activity_id} has no products")));
        }
        let holdings = sqlx::query_as(
            "SELECT product_id, CAST(user_id AS CHAR), CAST(SUM(quantity) AS SIGNED) FROM orders \
             WHERE activity_id = ? AND status IN ('pending', 'paid') GROUP BY product_id, user_id",
        )
        .bind(activity_id)
        .fetch_all(db.pool())
        .await
        .at(db)?;
        let released = sqlx::query_scalar(
            "SELECT order_no FROM orders WHERE activity_id = ? AND status IN ('cancelled', 'expired')",
        )
        .bind(activity_id)
        .fetch_all(db.pool())
        .await
        .at(db)?;
        let blacklist = sqlx::query_scalar("SELECT CAST(user_id AS CHAR) FROM blacklist")
            .fetch_all(db.pool())
            .await
            .at(db)?;
        Ok(Snapshot {
            taken_ms,
            products,
            holdings,
            released,
            blacklist,
        })
    }
}

/// How far ahead of MySQL's clock a product's `updated_at` may be for `hot` to wait for it.
/// Further ahead means MySQL's clock was set back: `hot` does not wait, and `start` refuses
/// until the products are written again (as it always has).
const MAX_WAIT_FOR_CLOCK_MS: i64 = 1000;

/// MySQL's clock, read before the products and later than every product of the activity
/// was written. `start` refuses when a product's `updated_at` is at or after it, so a change
/// made after the products were read cannot slip through; and a product written in that
/// same millisecond just before (`product add` then `hot` in a script) would pass for a
/// change made after. So while a product's `updated_at` is not yet in MySQL's past, the
/// clock is read again: the condition is MySQL's own, the pause between reads only spares
/// it a busy loop.
async fn snapshot_time(db: &Db, activity_id: u64) -> Result<i64> {
    loop {
        let (now_ms, ahead_ms): (i64, Option<i64>) = sqlx::query_as(
            "SELECT CAST(UNIX_TIMESTAMP(t.now) * 1000 AS SIGNED), \
                    CAST(TIMESTAMPDIFF(MICROSECOND, t.now, MAX(p.updated_at)) DIV 1000 AS SIGNED) \
             FROM (SELECT NOW(3) AS now) t \
             LEFT JOIN products p ON p.activity_id = ? \
             GROUP BY t.now",
        )
        .bind(activity_id)
        .fetch_one(db.pool())
        .await
        .at(db)?;
        match ahead_ms {
            Some(ahead) if (0..=MAX_WAIT_FOR_CLOCK_MS).contains(&ahead) => {
                tokio::time::sleep(std::time::Duration::from_millis(ahead as u64 + 1)).await;
            }
            _ => return Ok(now_ms),
        }
    }
}

/// Loads the snapshot: stock, rules and status by `preheat.lua` (which refuses an activity
/// Redis says is online), then the per-user totals, product owners, blacklist, released
/// orders and the consumer group; `preheated_at` last, so `start` waits for all of it.
async fn load(
    db: &Db,
    redis: &RedisClient,
    consumer_group: &str,
    activity: &Activity,
    snapshot: &Snapshot,
) -> Result<()> {
    let activity_id = activity.id;
    let (epoch, persist_seq) = lost_state::next_epoch(db, activity_id).await?;
    let keys = redis.keys();
    let mut conn = redis.conn();
    for script in scripts::all() {
        script.load_async(&mut conn).await.at(redis)?;
    }

    let before = buckets::stock::before(redis, activity_id).await?;
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
        .arg(snapshot.products.len())
        .arg(&epoch)
        .arg(persist_seq);
    // A product with buckets keeps its buyers' totals in them, never in an array; one whose
    // per-buyer limit is more than the array can count keeps them in its bought hash, so the
    // limit holds as set.
    let ids_below = |p: &Product| {
        if p.shards > 1 || u64::from(p.per_user_limit) > totals::TOTAL_MAX {
            0
        } else {
            redis.numeric_user_ids_below()
        }
    };
    for p in &snapshot.products {
        invocation
            .key(keys.product(activity_id, p.id))
            .key(keys.bought(activity_id, p.id))
            .key(keys.totals(activity_id, p.id));
        invocation
            .arg(p.id)
            .arg(p.total_stock - p.sold)
            .arg(p.sold)
            .arg(p.total_stock)
            .arg(p.per_user_limit)
            .arg(p.max_per_order)
            .arg(p.price.to_string())
            .arg(&p.name)
            .arg(ids_below(p));
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
    let spread: Vec<buckets::stock::Load> = snapshot
        .products
        .iter()
        .map(|p| buckets::stock::Load {
            product: p.id,
            remaining: u64::from(p.total_stock - p.sold),
            shards: p.shards,
            limit: p.per_user_limit,
            max_per_order: p.max_per_order,
            price: p.price.to_string(),
        })
        .collect();
    buckets::stock::load(redis, activity_id, &before, &spread).await?;
    lost_state::stamp(db, activity_id, &epoch).await?;
    // A lost-state check that read the old mark and this preheat's Redis suspended a whole
    // activity; its own second look came too early to see the new mark.
    lost_state::take_back_for_hot(redis, activity_id, &epoch, activity.status.as_str()).await?;

    let bar = progress::bar(snapshot.products.len() as u64, "hot");
    let mut by_product: HashMap<u64, Vec<(String, i64)>> = HashMap::new();
    for (product, user, units) in snapshot.holdings.iter().cloned() {
        by_product.entry(product).or_default().push((user, units));
    }
    for p in &snapshot.products {
        let holders = by_product.remove(&p.id).unwrap_or_default();
        if p.shards > 1 {
            // A sharded product's totals live in their buyers' buckets.
            buckets::stock::load_totals(redis, activity_id, p.id, p.shards, &holders).await?;
            bar.inc(1);
            continue;
        }
        let below = ids_below(p);
        let (mut arrayed, mut hashed) = (Vec::new(), Vec::new());
        for (user, units) in holders {
            match totals::array_offset(&user, below) {
                Some(offset) => arrayed.push((offset, units)),
                None => hashed.push((user, units)),
            }
        }
        for chunk in hashed.chunks(CHUNK) {
            let () = conn
                .hset_multiple(keys.bought(activity_id, p.id), chunk)
                .await
                .at(redis)?;
        }
        for chunk in arrayed.chunks(CHUNK) {
            // Saturating: a total past what the array holds stays at its most (further buys
            // are refused as over the limit, src/totals.rs).
            let mut set = redis::cmd("BITFIELD");
            set.arg(keys.totals(activity_id, p.id)).arg("OVERFLOW").arg("SAT");
            for (offset, units) in chunk {
                set.arg("SET").arg(totals::TOTAL_TYPE).arg(offset).arg(*units);
            }
            let _: redis::Value = set.query_async(&mut conn).await.at(redis)?;
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let owners: Vec<(u64, u64)> = snapshot.products.iter().map(|p| (p.id, activity_id)).collect();
    let () = conn.hset_multiple(keys.product_activity(), &owners).await.at(redis)?;
    for chunk in snapshot.blacklist.chunks(CHUNK) {
        let () = conn.sadd(keys.blacklist(activity_id), chunk).await.at(redis)?;
    }
    let bucket_count = buckets::stock::count(redis, activity_id).await?;
    buckets::gate::load(redis, activity_id, bucket_count).await?;
    for chunk in snapshot.released.chunks(CHUNK) {
        let () = conn.sadd(keys.released(activity_id), chunk).await.at(redis)?;
    }
    reservation::ensure_group(redis, activity_id, consumer_group).await?;
    let () = conn.sadd(keys.activities(), activity_id).await.at(redis)?;
    let () = conn
        .hset(keys.activity(activity_id), "preheated_at", snapshot.taken_ms)
        .await
        .at(redis)?;
    Ok(())
}

/// One `preheat` row per product in the stock ledger: the units put on sale.
async fn record_in_ledger(db: &Db, activity_id: u64, products: &[Product]) -> Result<()> {
    let mut tx = db.pool().begin().await.at(db)?;
    for p in products {
        sqlx::query(
            "INSERT INTO stock_ledger (activity_id, product_id, op, delta, reason) VALUES (?, ?, 'preheat', ?, 'hot')",
        )
        .bind(activity_id)
        .bind(p.id)
        .bind(i64::from(p.total_stock - p.sold))
        .execute(&mut *tx)
        .await
        .at(db)?;
    }
    tx.commit().await.at(db)
}
