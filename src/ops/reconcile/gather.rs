//! Reading both sides for reconcile: the activity's stream and group state, Redis
//! counters, and MySQL orders, products and ledger.

use std::collections::{BTreeMap, HashMap, HashSet};

use redis::AsyncCommands;

use crate::consumer::stream::{self, Entry};
use crate::db::Db;
use crate::error::Result;
use crate::model::Product;
use crate::ops::catalog;
use crate::redis_client::RedisClient;

/// Where a stream entry stands in the consumer group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Acknowledged by a consumer.
    Acked,
    /// Delivered, not acknowledged.
    Pending,
    /// Not delivered yet.
    Undelivered,
}

/// A snapshot of one activity on both sides.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Products in MySQL.
    pub products: Vec<Product>,
    /// Stream entries with their delivery state.
    pub entries: Vec<(Entry, Delivery)>,
    /// Original entry ids sitting in the dead-letter stream.
    pub dead_lettered: HashSet<String>,
    /// Orders: order_no -> (product, user, quantity, status).
    pub orders: HashMap<String, (u64, String, u32, String)>,
    /// The released set.
    pub released: HashSet<String>,
    /// Redis product hash fields (stock, sold, total) per loaded product.
    pub redis_products: BTreeMap<u64, (i64, i64, i64)>,
    /// Bought hash per product.
    pub bought: BTreeMap<u64, HashMap<String, i64>>,
    /// Ledger net delta since the last preheat, per product.
    pub ledger_net: HashMap<u64, i64>,
    /// Redis server time, ms.
    pub now_ms: i64,
}

const PAGE: usize = 10_000;

/// Reads everything reconcile compares.
pub async fn snapshot(db: &Db, redis: &RedisClient, group: &str, activity: u64) -> Result<Snapshot> {
    let mut s = Snapshot {
        products: catalog::list_products(db, activity).await?,
        ..Default::default()
    };
    let keys = redis.keys();
    let mut conn = redis.conn();
    let (secs, micros): (i64, i64) = redis::cmd("TIME")
        .query_async(&mut conn)
        .await
        .map_err(|e| redis.err(e))?;
    s.now_ms = secs * 1000 + micros / 1000;

    let name = keys.orders_stream(activity);
    let entries = stream::read_all(redis, &name).await?;
    let (last_delivered, pending) = group_state(redis, &name, group).await?;
    s.entries = entries
        .into_iter()
        .map(|e| {
            let d = if pending.contains(&e.id) {
                Delivery::Pending
            } else if last_delivered
                .as_deref()
                .is_none_or(|l| stream::cmp_ids(&e.id, l).is_gt())
            {
                Delivery::Undelivered
            } else {
                Delivery::Acked
            };
            (e, d)
        })
        .collect();
    let raw: redis::Value = redis::cmd("XRANGE")
        .arg(keys.dlq(activity))
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .map_err(|e| redis.err(e))?;
    s.dead_lettered = stream::decode_entries(raw)
        .iter()
        .filter_map(|e| e.get("dlq_entry").map(str::to_string))
        .collect();
    s.released = conn.smembers(keys.released(activity)).await.map_err(|e| redis.err(e))?;
    for p in &s.products {
        let fields: (Option<i64>, Option<i64>, Option<i64>) = redis::cmd("HMGET")
            .arg(keys.product(activity, p.id))
            .arg("stock")
            .arg("sold")
            .arg("total")
            .query_async(&mut conn)
            .await
            .map_err(|e| redis.err(e))?;
        if let (Some(stock), Some(sold), Some(total)) = fields {
            s.redis_products.insert(p.id, (stock, sold, total));
            let bought: HashMap<String, i64> = conn
                .hgetall(keys.bought(activity, p.id))
                .await
                .map_err(|e| redis.err(e))?;
            s.bought.insert(p.id, bought);
        }
    }

    let rows: Vec<(String, u64, String, u32, String)> = sqlx::query_as(
        "SELECT order_no, product_id, CAST(user_id AS CHAR), quantity, status FROM orders WHERE activity_id = ?",
    )
    .bind(activity)
    .fetch_all(db.pool())
    .await
    .map_err(|e| db.err(e))?;
    s.orders = rows.into_iter().map(|(no, p, u, q, st)| (no, (p, u, q, st))).collect();
    let ledger: Vec<(u64, i64)> = sqlx::query_as(
        "SELECT l.product_id, CAST(SUM(l.delta) AS SIGNED) FROM stock_ledger l \
         WHERE l.activity_id = ? AND l.id >= (SELECT COALESCE(MAX(p.id), 0) FROM stock_ledger p \
         WHERE p.product_id = l.product_id AND p.op = 'preheat') GROUP BY l.product_id",
    )
    .bind(activity)
    .fetch_all(db.pool())
    .await
    .map_err(|e| db.err(e))?;
    s.ledger_net = ledger.into_iter().collect();
    Ok(s)
}

/// The group's last delivered id (None: no group) and every pending entry id.
async fn group_state(redis: &RedisClient, stream_name: &str, group: &str) -> Result<(Option<String>, HashSet<String>)> {
    let mut conn = redis.conn();
    let exists: bool = conn.exists(stream_name).await.map_err(|e| redis.err(e))?;
    if !exists {
        return Ok((None, HashSet::new()));
    }
    let groups: Vec<HashMap<String, redis::Value>> = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(stream_name)
        .query_async(&mut conn)
        .await
        .map_err(|e| redis.err(e))?;
    let Some(info) = groups.into_iter().find(|g| {
        g.get("name")
            .and_then(|v| redis::from_redis_value::<String>(v.clone()).ok())
            .as_deref()
            == Some(group)
    }) else {
        return Ok((None, HashSet::new()));
    };
    let last = info
        .get("last-delivered-id")
        .and_then(|v| redis::from_redis_value::<String>(v.clone()).ok());
    let mut pending = HashSet::new();
    let mut start = "-".to_string();
    loop {
        let rows: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
            .arg(stream_name)
            .arg(group)
            .arg(&start)
            .arg("+")
            .arg(PAGE)
            .query_async(&mut conn)
            .await
            .map_err(|e| redis.err(e))?;
        let full = rows.len() == PAGE;
        if let Some(last) = rows.last() {
            start = format!("({}", last.0);
        }
        pending.extend(rows.into_iter().map(|r| r.0));
        if !full {
            break;
        }
    }
    Ok((last, pending))
}
