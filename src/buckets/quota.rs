//! Step one and its undoing, in the activity's slot: `lua/quota.lua` decides a batch's
//! purchases of sharded products (every check but the stock, and the buyers' totals raised),
//! `lua/quota_return.lua` gives back the quotas of those no bucket could fill. One call each
//! per batch.

use std::collections::HashMap;

use redis::Value;

use crate::buy::{Outcome, Purchase};
use crate::error::{Error, RedisContext, Result};
use crate::redis_client::RedisClient;
use crate::scripts;

/// What `quota.lua` said about one purchase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quota {
    /// The buyer's total now includes the quantity: take the units from a bucket.
    Taken,
    /// The product has no buckets: decide the purchase with `reserve.lua`.
    NotSharded,
    /// Refused (never [`Outcome::Ok`] or [`Outcome::SoldOut`]).
    Refused(Outcome),
}

/// A sharded product as `quota.lua` read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Product {
    /// Its bucket count.
    pub shards: u16,
    /// Its unit price, as stored.
    pub price: String,
}

/// `quota.lua`'s answer for a batch.
#[derive(Debug, Clone, Default)]
pub struct Quotas {
    /// One per purchase, in order.
    pub verdicts: Vec<Quota>,
    /// The sharded products of the batch.
    pub products: HashMap<u64, Product>,
}

/// Takes the quotas of `purchases` (all of activity `activity`) in one call of `quota.lua`,
/// deciding them in order; `min_persist_seq` as in [`crate::buy::reserve_above`].
pub async fn take(redis: &RedisClient, activity: u64, min_persist_seq: u64, purchases: &[Purchase]) -> Result<Quotas> {
    if purchases.is_empty() {
        return Ok(Quotas::default());
    }
    let keys = redis.keys();
    let per = keys.for_activity(activity);
    let (products, places) = crate::buy::product_places(purchases.iter().map(|p| p.product_id));
    let mut invocation = scripts::QUOTA.prepare_invoke();
    invocation
        .key(keys.activity(activity))
        .key(keys.blacklist(activity))
        .arg(purchases.len())
        .arg(products.len())
        .arg(min_persist_seq);
    for &product in &products {
        invocation.key(per.product(product)).key(per.bought(product));
    }
    invocation.key(keys.revoked(activity));
    for (p, place) in purchases.iter().zip(places) {
        invocation.arg(place + 1).arg(&p.user_id).arg(p.quantity);
    }
    let reply: Vec<Value> = invocation.invoke_async(&mut redis.conn()).await.at(redis)?;
    let unexpected = || Error::Internal(format!("quota.lua answered {reply:?}"));
    let m = products.len();
    if reply.len() != 2 * m + purchases.len() {
        return Err(unexpected());
    }
    let mut quotas = Quotas::default();
    for (j, &product) in products.iter().enumerate() {
        let (Value::Int(shards), Value::BulkString(price)) = (&reply[2 * j], &reply[2 * j + 1]) else {
            return Err(unexpected());
        };
        let shards = u16::try_from(*shards).map_err(|_| unexpected())?;
        if shards > 1 {
            let price = String::from_utf8_lossy(price).into_owned();
            quotas.products.insert(product, Product { shards, price });
        }
    }
    for value in &reply[2 * m..] {
        let Value::BulkString(code) = value else {
            return Err(unexpected());
        };
        quotas.verdicts.push(match code.as_slice() {
            b"ok" => Quota::Taken,
            b"not_sharded" => Quota::NotSharded,
            code => Quota::Refused(
                Outcome::REFUSALS
                    .into_iter()
                    .find(|o| o.code().as_bytes() == code && *o != Outcome::SoldOut)
                    .ok_or_else(unexpected)?,
            ),
        });
    }
    Ok(quotas)
}

/// Gives back the quotas of `purchases` (taken by [`take`], filled by no bucket) in one call
/// of `quota_return.lua`.
pub async fn give_back(redis: &RedisClient, activity: u64, purchases: &[&Purchase]) -> Result<()> {
    if purchases.is_empty() {
        return Ok(());
    }
    let per = redis.keys().for_activity(activity);
    let (products, places) = crate::buy::product_places(purchases.iter().map(|p| p.product_id));
    let mut invocation = scripts::QUOTA_RETURN.prepare_invoke();
    for &product in &products {
        invocation.key(per.bought(product));
    }
    for (p, place) in purchases.iter().zip(places) {
        invocation.arg(place + 1).arg(&p.user_id).arg(p.quantity);
    }
    let _: i64 = invocation.invoke_async(&mut redis.conn()).await.at(redis)?;
    Ok(())
}
