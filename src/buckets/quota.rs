//! The buyers' totals of sharded products, split by buyer: a buyer's total of product ID lives
//! in one bucket only, [`bucket_of_user`] (`P:{a:A:b:K}:bought:ID`), so the per-user limit
//! holds across buckets while no slot sees every purchase.
//!
//! `lua/bucket_buy.lua` decides a batch's purchases whose buyers' bucket is K in that bucket's
//! slot alone: every check (against the bucket's copies of the activity's switches, see
//! [`super::gate`]), the buyer's total raised, and the units taken when the bucket holds them,
//! one call per bucket. A purchase whose bucket is short keeps its quota there while another
//! bucket fills it; `lua/quota_return.lua` gives back, in K, the quotas of those no bucket
//! could fill.

use std::collections::HashMap;

use redis::Value;

use crate::buy::{Outcome, Purchase};
use crate::error::{Error, RedisContext, Result};
use crate::keys;
use crate::redis_client::RedisClient;
use crate::scripts;

/// The bucket holding `user`'s total of a product with `shards` buckets (FNV-1a of the user id:
/// stable across processes and builds, unlike the std hasher).
pub fn bucket_of_user(user: &str, shards: u16) -> u16 {
    let hash = user.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    (hash % u64::from(shards.max(1))) as u16
}

/// What `bucket_buy.lua` said about one purchase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bought {
    /// Queued in the bucket's stream under this order number; the bucket holds this many
    /// units after it.
    Queued(String, i64),
    /// The buyer's total includes the quantity, the bucket holds only this many units: fill it
    /// from another bucket or give the quota back.
    Short(i64),
    /// No such bucket, or one of another bucket count (the product was loaded again).
    NotFound,
    /// Refused (never [`Outcome::Ok`] or [`Outcome::SoldOut`]).
    Refused(Outcome),
}

/// One bucket's answer for a call: each product's unit price ('' when unknown) and one
/// [`Bought`] per purchase, in order.
#[derive(Debug, Clone, Default)]
pub struct BucketAnswer {
    /// Unit price per product id, as the bucket holds it.
    pub prices: HashMap<u64, String>,
    /// One per purchase.
    pub bought: Vec<Bought>,
}

/// Decides `purchases` (every buyer's bucket is `bucket`; each product has `shards(product)`
/// buckets) in one `bucket_buy.lua` call per [`crate::buy::MAX_PURCHASES_PER_CALL`];
/// `take_units` false takes the quotas only (every accepted purchase answers
/// [`Bought::Short`]).
pub async fn buy_in(
    redis: &RedisClient,
    activity: u64,
    bucket: u16,
    min_persist_seq: u64,
    purchases: &[Purchase],
    shards: &HashMap<u64, u16>,
    take_units: bool,
) -> Result<BucketAnswer> {
    let mut answer = BucketAnswer::default();
    for chunk in purchases.chunks(crate::buy::MAX_PURCHASES_PER_CALL) {
        let part = buy_call(redis, activity, bucket, min_persist_seq, chunk, shards, take_units).await?;
        for (product, price) in part.prices {
            answer.prices.entry(product).or_insert(price);
        }
        answer.bought.extend(part.bought);
    }
    Ok(answer)
}

async fn buy_call(
    redis: &RedisClient,
    activity: u64,
    bucket: u16,
    min_persist_seq: u64,
    purchases: &[Purchase],
    shards: &HashMap<u64, u16>,
    take_units: bool,
) -> Result<BucketAnswer> {
    let keys = redis.keys();
    let (products, places) = crate::buy::product_places(purchases.iter().map(|p| p.product_id));
    let mut invocation = scripts::BUCKET_BUY.prepare_invoke();
    invocation
        .key(keys.bucket_orders(activity, bucket))
        .key(keys.bucket_seq(activity, bucket))
        .key(keys.bucket_gate(activity, bucket))
        .key(keys.bucket_blacklist(activity, bucket))
        .key(keys.bucket_revoked(activity, bucket))
        .arg(activity)
        .arg(bucket)
        .arg(keys::BUCKET_SEQ_BASE)
        .arg(purchases.len())
        .arg(products.len())
        .arg(min_persist_seq)
        .arg(u8::from(take_units));
    for &product in &products {
        invocation
            .key(keys.bucket_product(activity, bucket, product))
            .key(keys.bucket_bought(activity, bucket, product))
            .arg(product)
            .arg(shards.get(&product).copied().unwrap_or(0));
    }
    for (p, place) in purchases.iter().zip(places) {
        invocation.arg(place + 1).arg(&p.user_id).arg(p.quantity);
    }
    let reply: Vec<Value> = invocation.invoke_async(&mut redis.conn()).await.at(redis)?;
    let unexpected = || Error::Internal(format!("bucket_buy.lua answered {reply:?}"));
    let m = products.len();
    if reply.len() != 1 + m + 2 * purchases.len() {
        return Err(unexpected());
    }
    let text = |v: &Value| match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        _ => None,
    };
    let entry_id = text(&reply[0]).ok_or_else(unexpected)?;
    let mut answer = BucketAnswer::default();
    for (j, &product) in products.iter().enumerate() {
        answer
            .prices
            .insert(product, text(&reply[1 + j]).ok_or_else(unexpected)?);
    }
    for pair in reply[1 + m..].chunks_exact(2) {
        let Value::Int(remaining) = pair[1] else {
            return Err(unexpected());
        };
        answer.bought.push(match &pair[0] {
            Value::Int(index) if keys::is_entry_id(&entry_id) => Bought::Queued(
                keys::purchase_order_no(activity, &entry_id, u32::try_from(*index).map_err(|_| unexpected())?),
                remaining,
            ),
            Value::BulkString(code) => match code.as_slice() {
                b"short" => Bought::Short(remaining),
                b"not_found" => Bought::NotFound,
                code => Bought::Refused(
                    Outcome::REFUSALS
                        .into_iter()
                        .find(|o| o.code().as_bytes() == code && *o != Outcome::SoldOut)
                        .ok_or_else(unexpected)?,
                ),
            },
            _ => return Err(unexpected()),
        });
    }
    Ok(answer)
}

/// What [`take`] said about one purchase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quota {
    /// The buyer's total now includes the quantity (in the buyer's bucket).
    Taken,
    /// The product has no buckets.
    NotSharded,
    /// Refused (never [`Outcome::Ok`] or [`Outcome::SoldOut`]).
    Refused(Outcome),
}

/// Takes the quotas of `purchases` in their buyers' buckets without taking units: what a
/// purchase holds while another bucket fills it (the end-of-sale path). One verdict each.
pub async fn take(
    redis: &RedisClient,
    activity: u64,
    min_persist_seq: u64,
    purchases: &[Purchase],
) -> Result<Vec<Quota>> {
    let mut shards = HashMap::new();
    for p in purchases {
        if let std::collections::hash_map::Entry::Vacant(e) = shards.entry(p.product_id) {
            e.insert(super::stock::shards_of(redis, activity, p.product_id).await?);
        }
    }
    let mut verdicts = Vec::with_capacity(purchases.len());
    for p in purchases {
        let n = shards[&p.product_id];
        if n < 2 {
            verdicts.push(Quota::NotSharded);
            continue;
        }
        let k = bucket_of_user(&p.user_id, n);
        let answer = buy_in(
            redis,
            activity,
            k,
            min_persist_seq,
            std::slice::from_ref(p),
            &shards,
            false,
        )
        .await?;
        verdicts.push(match answer.bought.first() {
            Some(Bought::Short(_)) => Quota::Taken,
            Some(Bought::Refused(outcome)) => Quota::Refused(*outcome),
            _ => Quota::NotSharded,
        });
    }
    Ok(verdicts)
}

/// Gives back the quotas of `purchases` (taken in bucket `bucket`, filled by no bucket) in one
/// call of `quota_return.lua`.
pub async fn give_back(redis: &RedisClient, activity: u64, bucket: u16, purchases: &[&Purchase]) -> Result<()> {
    if purchases.is_empty() {
        return Ok(());
    }
    let keys = redis.keys();
    let (products, places) = crate::buy::product_places(purchases.iter().map(|p| p.product_id));
    let mut invocation = scripts::QUOTA_RETURN.prepare_invoke();
    for &product in &products {
        invocation.key(keys.bucket_bought(activity, bucket, product));
    }
    for (p, place) in purchases.iter().zip(places) {
        invocation.arg(place + 1).arg(&p.user_id).arg(p.quantity);
    }
    let _: i64 = invocation.invoke_async(&mut redis.conn()).await.at(redis)?;
    Ok(())
}

/// `user`'s total of sharded `product` (`shards` buckets), read from the user's bucket.
pub async fn held(redis: &RedisClient, activity: u64, product: u64, shards: u16, user: &str) -> Result<i64> {
    use redis::AsyncCommands;
    let key = redis
        .keys()
        .bucket_bought(activity, bucket_of_user(user, shards), product);
    let units: Option<i64> = redis.conn().hget(key, user).await.at(redis)?;
    Ok(units.unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buyer_has_one_bucket_and_buyers_spread_over_all() {
        assert_eq!(bucket_of_user("alice", 4), bucket_of_user("alice", 4));
        assert_eq!(bucket_of_user("alice", 1), 0);
        let mut seen = [0u32; 4];
        for n in 0..4000 {
            seen[usize::from(bucket_of_user(&n.to_string(), 4))] += 1;
        }
        assert!(seen.iter().all(|&c| (800..1200).contains(&c)), "{seen:?}");
    }
}
