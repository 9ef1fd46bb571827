//! The buckets' side of the operator's commands: loading them (`hot`), their streams
//! (consumers, backlog, `flush`), their totals (`reconcile`, `status`) and putting units
//! back into them (`order cancel|expire`), into the buyer's bucket with the buyer's total. Live stock changes are in [`live`].

pub mod live;

use redis::AsyncCommands;

use super::split;
use crate::error::{RedisContext, Result};
use crate::redis_client::RedisClient;
use crate::scripts;

/// The activity hash's field holding how many bucket streams the activity may have.
const BUCKETS_FIELD: &str = "buckets";

/// How many bucket streams activity `activity` may have (0: none).
pub async fn count(redis: &RedisClient, activity: u64) -> Result<u16> {
    let n: Option<u16> = redis
        .conn()
        .hget(redis.keys().activity(activity), BUCKETS_FIELD)
        .await
        .at(redis)?;
    Ok(n.unwrap_or(0))
}

/// Every reservation stream of the activity: its own, then one per bucket number.
pub async fn streams(redis: &RedisClient, activity: u64) -> Result<Vec<String>> {
    let keys = redis.keys();
    let mut streams = vec![keys.orders_stream(activity)];
    streams.extend((0..count(redis, activity).await?).map(|k| keys.bucket_orders(activity, k)));
    Ok(streams)
}

/// A product to load: id, units to put on sale, bucket count, and what a purchase checks of it.
#[derive(Debug, Clone)]
pub struct Load {
    /// The product.
    pub product: u64,
    /// Units to spread over its buckets.
    pub remaining: u64,
    /// Its bucket count (1: no buckets).
    pub shards: u16,
    /// Units one buyer may hold.
    pub limit: u32,
    /// Units one order may ask.
    pub max_per_order: u32,
    /// Unit price, as `preheat.lua` stores it.
    pub price: String,
}

/// What is in Redis before `hot` rewrites it: the bucket count and the products whose
/// buckets may exist. Read before `preheat.lua` (which rewrites the activity hash).
#[derive(Debug, Clone, Default)]
pub struct Before {
    buckets: u16,
    products: Vec<u64>,
}

/// Reads [`Before`].
pub async fn before(redis: &RedisClient, activity: u64) -> Result<Before> {
    let products: Vec<u64> = redis.conn().smembers(redis.keys().products(activity)).await.at(redis)?;
    Ok(Before {
        buckets: count(redis, activity).await?,
        products,
    })
}

/// After `preheat.lua` loaded the products with their whole stock in their own hash: moves
/// each sharded product's stock into its buckets (its hash keeps no `stock`, and gets
/// `shards`), removes the buckets the previous preheat left, and records the activity's
/// bucket count (never lowered, so no stream with a backlog drops out of sight).
pub async fn load(redis: &RedisClient, activity: u64, before: &Before, products: &[Load]) -> Result<()> {
    let keys = redis.keys();
    let buckets = products.iter().map(|p| p.shards).filter(|&s| s > 1).max().unwrap_or(0);
    let mut conn = redis.conn();
    let stale_buckets = before.buckets.max(buckets);
    if stale_buckets > 0 {
        let mut stale = redis::pipe();
        let ids = before
            .products
            .iter()
            .copied()
            .chain(products.iter().map(|p| p.product));
        for product in ids {
            for k in 0..stale_buckets {
                stale.del(keys.bucket_product(activity, k, product)).ignore();
                stale.del(keys.bucket_bought(activity, k, product)).ignore();
            }
        }
        let () = stale.query_async(&mut conn).await.at(redis)?;
    }
    // Returns and moves under way belong to the stock being replaced: MySQL's count, loaded
    // now, has their units.
    let () = conn
        .del(&[keys.returning(activity), keys.moving(activity)])
        .await
        .at(redis)?;
    // The epoch `preheat.lua` just wrote tells a late live change or repair of the previous
    // load to keep off; `from` is where this load's reservations start in the bucket's stream.
    let epoch: String = conn
        .hget::<_, _, Option<String>>(keys.activity(activity), "epoch")
        .await
        .at(redis)?
        .unwrap_or_default();
    let mut from = Vec::new();
    for k in 0..buckets {
        from.push(
            last_generated(redis, &keys.bucket_orders(activity, k))
                .await?
                .unwrap_or_default(),
        );
    }
    for p in products.iter().filter(|p| p.shards > 1) {
        let mut pipe = redis::pipe();
        for (k, units) in split(p.remaining, p.shards).into_iter().enumerate() {
            pipe.hset_multiple(
                keys.bucket_product(activity, k as u16, p.product),
                &[
                    ("stock", units.to_string()),
                    ("sold", "0".to_string()),
                    ("epoch", epoch.clone()),
                    ("from", from[k].clone()),
                    ("shards", p.shards.to_string()),
                    ("limit", p.limit.to_string()),
                    ("max_per_order", p.max_per_order.to_string()),
                    ("price", p.price.clone()),
                ],
            )
            .ignore();
        }
        let () = pipe.query_async(&mut conn).await.at(redis)?;
        let product = keys.product(activity, p.product);
        let () = redis::pipe()
            .atomic()
            .hdel(&product, "stock")
            .ignore()
            .hset(&product, "shards", p.shards)
            .ignore()
            .query_async(&mut conn)
            .await
            .at(redis)?;
    }
    let buckets = before.buckets.max(buckets);
    if buckets > 0 {
        let () = conn
            .hset(keys.activity(activity), BUCKETS_FIELD, buckets)
            .await
            .at(redis)?;
    }
    Ok(())
}

/// The buyers' totals `hot` read from MySQL, `(user, units)` of sharded `product`, each into
/// the user's bucket (see [`super::quota::bucket_of_user`]).
pub async fn load_totals(
    redis: &RedisClient,
    activity: u64,
    product: u64,
    shards: u16,
    holders: &[(String, i64)],
) -> Result<()> {
    let mut by_bucket: std::collections::BTreeMap<u16, Vec<(String, i64)>> = Default::default();
    for (user, units) in holders {
        by_bucket
            .entry(super::quota::bucket_of_user(user, shards))
            .or_default()
            .push((user.clone(), *units));
    }
    let mut conn = redis.conn();
    for (k, holders) in by_bucket {
        for chunk in holders.chunks(1000) {
            let () = conn
                .hset_multiple(redis.keys().bucket_bought(activity, k, product), chunk)
                .await
                .at(redis)?;
        }
    }
    Ok(())
}

/// The units on sale and the units reserved since `hot`, summed over the product's buckets.
pub async fn totals(redis: &RedisClient, activity: u64, product: u64, shards: u16) -> Result<(i64, i64)> {
    let per = per_bucket(redis, activity, product, shards).await?;
    Ok(per
        .iter()
        .fold((0, 0), |(stock, sold), b| (stock + b.stock, sold + b.sold)))
}

/// One bucket's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Bucket {
    /// The bucket number.
    pub bucket: u16,
    /// Units on sale in it.
    pub stock: i64,
    /// Units it reserved since `hot`.
    pub sold: i64,
}

/// Each bucket's counters (a missing bucket counts zero).
pub async fn per_bucket(redis: &RedisClient, activity: u64, product: u64, shards: u16) -> Result<Vec<Bucket>> {
    let keys = redis.keys();
    let mut pipe = redis::pipe();
    for k in 0..shards {
        pipe.cmd("HMGET")
            .arg(keys.bucket_product(activity, k, product))
            .arg("stock")
            .arg("sold");
    }
    let rows: Vec<(Option<i64>, Option<i64>)> = pipe.query_async(&mut redis.conn()).await.at(redis)?;
    Ok(rows
        .into_iter()
        .enumerate()
        .map(|(k, (stock, sold))| Bucket {
            bucket: k as u16,
            stock: stock.unwrap_or(0),
            sold: sold.unwrap_or(0),
        })
        .collect())
}

/// The product's bucket count in Redis (0 or 1: no buckets).
pub async fn shards_of(redis: &RedisClient, activity: u64, product: u64) -> Result<u16> {
    let shards: Option<u16> = redis
        .conn()
        .hget(redis.keys().product(activity, product), "shards")
        .await
        .at(redis)?;
    Ok(shards.unwrap_or(0))
}

/// Returns a cancelled or expired order's units of a sharded product, exactly once: marks
/// the order released, lowers `sold` and notes the return (`release_sharded.lua`), puts the
/// units into the buyer's bucket and lowers the buyer's total there, once
/// (`bucket_return.lua`), then drops the note. Returns what `release_sharded.lua` returned
/// (1 released now, 0 earlier, -1 not loaded).
pub async fn release(
    redis: &RedisClient,
    activity: u64,
    product: u64,
    shards: u16,
    order_no: &str,
    user: &str,
    quantity: u32,
) -> Result<i64> {
    let keys = redis.keys();
    let released: i64 = scripts::RELEASE_SHARDED
        .key(keys.released(activity))
        .key(keys.product(activity, product))
        .key(keys.returning(activity))
        .key(keys.activity(activity))
        .arg(order_no)
        .arg(quantity)
        .arg(product)
        .invoke_async(&mut redis.conn())
        .await
        .at(redis)?;
    if released == 1 {
        // The note gone already: a `hot` reloaded the activity from MySQL, which has the units.
        let note: Option<String> = redis.conn().hget(keys.returning(activity), order_no).await.at(redis)?;
        if let Some(epoch) = note.as_deref().and_then(|n| n.splitn(3, ':').nth(2)) {
            let back = Return {
                order_no,
                user,
                quantity,
                epoch,
            };
            finish_return(redis, activity, product, shards, &back).await?;
        }
    }
    Ok(released)
}

/// A return under way (see [`release`]): the order, its buyer and units, and the preheat
/// epoch it was noted in.
#[derive(Debug, Clone, Copy)]
pub struct Return<'a> {
    /// The order number.
    pub order_no: &'a str,
    /// The buyer, whose bucket gets the units and whose total drops.
    pub user: &'a str,
    /// Units.
    pub quantity: u32,
    /// The epoch `release_sharded.lua` noted.
    pub epoch: &'a str,
}

/// Steps two and three of a return (see [`release`]); safe to repeat. Returns
/// `bucket_return.lua`'s answer (1 done now, 0 earlier, -1 no such bucket or one of another
/// epoch).
pub async fn finish_return(
    redis: &RedisClient,
    activity: u64,
    product: u64,
    shards: u16,
    back: &Return<'_>,
) -> Result<i64> {
    let keys = redis.keys();
    let k = super::quota::bucket_of_user(back.user, shards);
    let added: i64 = scripts::BUCKET_RETURN
        .key(keys.bucket_product(activity, k, product))
        .key(keys.bucket_bought(activity, k, product))
        .arg(back.order_no)
        .arg(back.quantity)
        .arg(back.epoch)
        .arg(back.user)
        .invoke_async(&mut redis.conn())
        .await
        .at(redis)?;
    let () = redis
        .conn()
        .hdel(keys.returning(activity), back.order_no)
        .await
        .at(redis)?;
    Ok(added)
}

/// The last entry id `stream` generated (`None`: no stream or no entry yet).
pub async fn last_generated(redis: &RedisClient, stream: &str) -> Result<Option<String>> {
    let exists: bool = redis::cmd("EXISTS")
        .arg(stream)
        .query_async(&mut redis.conn())
        .await
        .at(redis)?;
    if !exists {
        return Ok(None);
    }
    let info: redis::Value = redis::cmd("XINFO")
        .arg("STREAM")
        .arg(stream)
        .query_async(&mut redis.conn())
        .await
        .at(redis)?;
    Ok(crate::reservation::pairs(info)
        .into_iter()
        .find(|(k, _)| k == "last-generated-id")
        .map(|(_, v)| v)
        .filter(|v| v != "0-0"))
}
