//! Live stock changes (`stock add`, `stock sold-out`, `stock remove`) of a product whose stock
//! is in buckets.
//!
//! A change touches the activity's slot and every bucket's, and no script spans slots, so it
//! is made in steps that can each be repeated and that a change, once begun, only ever
//! completes (MySQL's pending ledger row comes first, as for a product without buckets; see
//! [`crate::ops::stock`]):
//! 1. `sharded_stock_begin.lua` (activity slot): the checks of `stock_add.lua` /
//!    `sold_out.lua`, then the change is marked `part` in `stock_ops` under its ledger row id;
//! 2. `bucket_stock_op.lua` in each bucket: its share of an add (the units split as evenly as
//!    whole units allow, from a bucket the ledger id picks) or, for a sold-out, its whole
//!    stock withdrawn, or, for a remove, what it has of the units left to take (fullest
//!    buckets first); recorded in the bucket as `op:<ledger id>`, so never applied twice;
//! 3. `sharded_stock_finish.lua` (activity slot): the units every bucket added or withdrew
//!    recorded in `stock_ops` and `total` moved by as much, once.
//!
//! Between 1 and 3 each bucket's units are right for what it did: an added unit is counted
//! by MySQL before it reaches a bucket, a withdrawn one leaves its bucket before MySQL hears of
//! it, so nothing can be oversold at any step. A change stopped midway is still `part`:
//! `reconcile --fix` ([`crate::ops::stock::settle`]) resumes it from step 1 with `*`.

use redis::Value;

use crate::buckets::split;
use crate::error::{Error, RedisContext, Result};
use crate::ops::stock::Applied;
use crate::redis_client::RedisClient;
use crate::scripts;

/// The change to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Put this many units on sale.
    Add(u64),
    /// Withdraw every unit still on sale.
    SoldOut,
    /// Withdraw this many units, as far as the buckets have them.
    Remove(u64),
}

impl Change {
    fn name(self) -> &'static str {
        match self {
            Change::Add(_) => "add",
            Change::SoldOut => "sold_out",
            Change::Remove(_) => "remove",
        }
    }
}

/// Which bucket gets the first share of a change: the ledger row picks it, so a resumed
/// change sends every bucket the share it sent the first time, and the odd units of small
/// adds do not all land in bucket 0.
fn first_bucket(ledger_id: u64, shards: u16) -> u16 {
    (ledger_id % u64::from(shards.max(1))) as u16
}

/// Each bucket's share of `units`: `(bucket, units)`, the buckets getting none left out.
pub fn shares(ledger_id: u64, shards: u16, units: u64) -> Vec<(u16, u64)> {
    let first = first_bucket(ledger_id, shards);
    split(units, shards)
        .into_iter()
        .enumerate()
        .filter(|&(_, share)| share > 0)
        .map(|(step, share)| ((first + step as u16) % shards, share))
        .collect()
}

fn script_error(e: &redis::RedisError) -> Option<Applied> {
    let text = e.to_string();
    if text.contains("NOT_LOADED") {
        Some(Applied::NotLoaded)
    } else if text.contains("VOIDED") {
        Some(Applied::Void)
    } else {
        None
    }
}

/// Makes (or, with `preheated_at` = `*`, resumes) change `ledger_id` of `product` in Redis,
/// in the steps of the module docs. Returns what Redis did: the units added or withdrawn,
/// [`Applied::NotLoaded`] (the product is not loaded with buckets, or a `hot` since
/// `preheated_at` loaded MySQL's count) or [`Applied::Void`] (reconcile settled it as undone,
/// or, for a sold-out, a `hot` midway put MySQL's stock back on sale).
pub async fn apply(
    redis: &RedisClient,
    activity: u64,
    product: u64,
    ledger_id: u64,
    change: Change,
    preheated_at: &str,
) -> Result<Applied> {
    let keys = redis.keys();
    let begun = scripts::SHARDED_STOCK_BEGIN
        .key(keys.product(activity, product))
        .key(keys.stock_ops(activity))
        .key(keys.activity(activity))
        .arg(ledger_id)
        .arg(change.name())
        .arg(preheated_at)
        .invoke_async::<Vec<Value>>(&mut redis.conn())
        .await;
    let reply = match begun {
        Ok(reply) => reply,
        Err(e) => return script_error(&e).ok_or_else(|| redis.err(e)),
    };
    let unexpected = || Error::Internal(format!("sharded_stock_begin.lua answered {reply:?}"));
    let [Value::BulkString(state), Value::Int(shards), Value::BulkString(epoch)] = reply.as_slice() else {
        return Err(unexpected());
    };
    let state = String::from_utf8_lossy(state);
    if state != "part" {
        return Ok(Applied::Units(state.parse().map_err(|_| unexpected())?));
    }
    let shards = u16::try_from(*shards).map_err(|_| unexpected())?;
    let epoch = String::from_utf8_lossy(epoch).into_owned();
    let bucket_op = |k: u16, units: u64| {
        let (redis, epoch) = (redis.clone(), epoch.clone());
        async move {
            scripts::BUCKET_STOCK_OP
                .key(redis.keys().bucket_product(activity, k, product))
                .arg(ledger_id)
                .arg(change.name())
                .arg(units)
                .arg(&epoch)
                .invoke_async::<i64>(&mut redis.conn())
                .await
                .at(&redis)
        }
    };
    let mut moved: i64 = 0;
    match change {
        Change::Add(units) => {
            for (k, share) in shares(ledger_id, shards, units) {
                // -1: another `hot` loaded the bucket; step 3 sees the new epoch and records that.
                moved += bucket_op(k, share).await?.max(0);
            }
        }
        Change::SoldOut => {
            for k in 0..shards {
                moved += bucket_op(k, 0).await?.max(0);
            }
        }
        Change::Remove(units) => moved = take(redis, activity, product, shards, units, &bucket_op).await?,
    }
    let finished = scripts::SHARDED_STOCK_FINISH
        .key(keys.product(activity, product))
        .key(keys.stock_ops(activity))
        .key(keys.activity(activity))
        .arg(ledger_id)
        .arg(change.name())
        .arg(moved)
        .arg(&epoch)
        .invoke_async::<i64>(&mut redis.conn())
        .await;
    match finished {
        Ok(units) => Ok(Applied::Units(units)),
        Err(e) => script_error(&e).ok_or_else(|| redis.err(e)),
    }
}

/// A remove's buckets: first what each already took (a resumed change), then, while units are
/// still to take, from the buckets that took nothing yet, fullest first, each as many as it
/// has of what is left (so none goes below zero and no reserved unit is taken). Fewer than
/// `units` are taken only when buyers took the rest meanwhile. Returns the units taken.
async fn take<F, Fut>(
    redis: &RedisClient,
    activity: u64,
    product: u64,
    shards: u16,
    units: u64,
    bucket_op: &F,
) -> Result<i64>
where
    F: Fn(u16, u64) -> Fut,
    Fut: std::future::Future<Output = Result<i64>>,
{
    let mut taken: i64 = 0;
    let mut untouched = Vec::new();
    for k in 0..shards {
        match bucket_op(k, 0).await? {
            -2 => untouched.push(k),
            did => taken += did.max(0),
        }
    }
    let stock = crate::buckets::stock::per_bucket(redis, activity, product, shards).await?;
    untouched.sort_by_key(|&k| -stock[usize::from(k)].stock);
    for k in untouched {
        let left = units as i64 - taken;
        if left <= 0 {
            break;
        }
        let ask = left.min(stock[usize::from(k)].stock);
        if ask > 0 {
            taken += bucket_op(k, ask as u64).await?.max(0);
        }
    }
    Ok(taken)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_cover_every_unit_from_the_bucket_the_ledger_row_picks() {
        assert_eq!(shares(6, 4, 6), vec![(2, 2), (3, 2), (0, 1), (1, 1)]);
        assert_eq!(shares(5, 4, 2), vec![(1, 1), (2, 1)]);
        assert_eq!(shares(7, 4, 0), vec![]);
        let spread = shares(123, 16, 1000);
        assert_eq!(spread.iter().map(|s| s.1).sum::<u64>(), 1000);
        assert_eq!(spread, shares(123, 16, 1000), "a resumed change sends the same shares");
    }
}
