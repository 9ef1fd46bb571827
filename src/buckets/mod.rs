//! Stock sharding of one hot product (`product add|update --shards N`): its remaining stock
//! is split over N buckets, each in its own Redis Cluster slot (`P:{a:A:b:K}:...`, see
//! [`crate::keys`]) with its own reservation stream, so a cluster spreads one product's load
//! over its primaries.
//!
//! A purchase of a sharded product takes two scripts, because the per-user limit must hold
//! across buckets and a script touches one slot:
//! 1. `lua/quota.lua` in the activity's slot: every check of `lua/reserve.lua` but the stock,
//!    and the buyer's total raised by the quantity (the limit is checked there, once);
//! 2. `lua/bucket_reserve.lua` in one bucket's slot: deduct and queue (XADD to the bucket's
//!    stream). Buckets are tried from a random one on; an empty one passes to the next;
//! 3. only when every bucket lacks the units, `lua/quota_return.lua` gives the quota back and
//!    the buyer is answered `sold_out`.
//!
//! A crash or a lost answer between 1 and 2 (or 2 and 3) leaves the buyer's total raised
//! without a reservation: the buyer may be refused a unit they could have had, a unit is
//! never sold twice. `reconcile` reports such totals (drift in `bought`) and `--fix` sets
//! them to MySQL's orders.

pub mod stock;

use std::collections::HashMap;
use std::sync::RwLock;

use redis::Value;

use crate::buy::{self, Outcome, Purchase, Verdict};
use crate::error::{Error, RedisContext, Result};
use crate::keys;
use crate::redis_client::RedisClient;
use crate::scripts;

/// Splits `units` over `shards` buckets as evenly as whole units allow (the first buckets get
/// the odd units).
pub fn split(units: u64, shards: u16) -> Vec<u64> {
    let n = u64::from(shards.max(1));
    (0..n).map(|k| units / n + u64::from(k < units % n)).collect()
}

/// Which products `serve` has seen to be sharded (true) or not (false); a wrong guess is
/// corrected by the scripts' answers (`not_sharded` from quota.lua, `not_found` from
/// reserve.lua), so `hot` with a new `--shards` needs no restart.
#[derive(Debug, Default)]
pub struct Sharded {
    known: RwLock<HashMap<u64, bool>>,
}

impl Sharded {
    fn get(&self, product: u64) -> bool {
        self.known
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&product)
            .copied()
            .unwrap_or(false)
    }

    fn set(&self, product: u64, sharded: bool) {
        self.known
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(product, sharded);
    }
}

/// Decides `purchases` of `activity`: those of products without buckets in one call of
/// `reserve.lua` ([`buy::reserve_above`]), those of sharded products each through its buckets
/// ([`reserve_one`]), concurrently. One verdict per purchase, in order.
pub async fn reserve_routed(
    redis: &RedisClient,
    activity: u64,
    min_persist_seq: u64,
    purchases: &[Purchase],
    sharded: &Sharded,
) -> Result<Vec<Verdict>> {
    let mut verdicts: Vec<Option<Verdict>> = vec![None; purchases.len()];
    let (mut plain, mut bucketed): (Vec<usize>, Vec<usize>) =
        (0..purchases.len()).partition(|&i| !sharded.get(purchases[i].product_id));
    // Two rounds at most: a purchase sent the wrong way comes back for the other way once.
    for _ in 0..2 {
        let mut retry_plain = Vec::new();
        let mut retry_bucketed = Vec::new();
        if !plain.is_empty() {
            // `plain` holds indices in order, so all of them is the whole batch: the usual case
            // (no sharded product) sends it as it is, without copying every purchase.
            let subset: Vec<Purchase>;
            let batch: &[Purchase] = if plain.len() == purchases.len() {
                purchases
            } else {
                subset = plain.iter().map(|&i| purchases[i].clone()).collect();
                &subset
            };
            let decided = buy::reserve_above(redis, activity, min_persist_seq, batch).await?;
            let mut checked: HashMap<u64, bool> = HashMap::new();
            for (&i, verdict) in plain.iter().zip(decided) {
                let product = purchases[i].product_id;
                if verdict.outcome == Outcome::NotFound && verdict.remaining < 0 {
                    let is_sharded = match checked.get(&product) {
                        Some(&s) => s,
                        None => {
                            let s = shards_in_redis(redis, activity, product).await? > 1;
                            checked.insert(product, s);
                            s
                        }
                    };
                    if is_sharded {
                        sharded.set(product, true);
                        retry_bucketed.push(i);
                        continue;
                    }
                }
                verdicts[i] = Some(verdict);
            }
        }
        if !bucketed.is_empty() {
            let mut tasks = tokio::task::JoinSet::new();
            for &i in &bucketed {
                let (redis, purchase) = (redis.clone(), purchases[i].clone());
                tasks.spawn(async move { (i, reserve_one(&redis, activity, min_persist_seq, &purchase).await) });
            }
            let mut failed = None;
            while let Some(done) = tasks.join_next().await {
                let (i, decided) = done.map_err(|e| Error::Internal(format!("a bucket purchase panicked: {e}")))?;
                match decided {
                    Ok(Some(verdict)) => verdicts[i] = Some(verdict),
                    Ok(None) => {
                        sharded.set(purchases[i].product_id, false);
                        retry_plain.push(i);
                    }
                    Err(e) => failed = Some(e),
                }
            }
            if let Some(e) = failed {
                return Err(e);
            }
        }
        if retry_plain.is_empty() && retry_bucketed.is_empty() {
            break;
        }
        (plain, bucketed) = (retry_plain, retry_bucketed);
    }
    verdicts
        .into_iter()
        .map(|v| v.ok_or_else(|| Error::Internal("a purchase went back and forth between stock paths".into())))
        .collect()
}

/// The product's `shards` field in Redis (0 when absent).
async fn shards_in_redis(redis: &RedisClient, activity: u64, product: u64) -> Result<u16> {
    let shards: Option<u16> = redis::cmd("HGET")
        .arg(redis.keys().product(activity, product))
        .arg("shards")
        .query_async(&mut redis.conn())
        .await
        .at(redis)?;
    Ok(shards.unwrap_or(0))
}

/// One purchase of a sharded product (the steps in the module docs); `None` when the product
/// has no buckets in Redis (decide it with `reserve.lua`).
pub async fn reserve_one(
    redis: &RedisClient,
    activity: u64,
    min_persist_seq: u64,
    purchase: &Purchase,
) -> Result<Option<Verdict>> {
    let keys = redis.keys();
    let per = keys.for_activity(activity);
    let product = purchase.product_id;
    let reply: Vec<Value> = scripts::QUOTA
        .key(keys.activity(activity))
        .key(keys.blacklist(activity))
        .key(per.product(product))
        .key(per.bought(product))
        .key(keys.revoked(activity))
        .arg(min_persist_seq)
        .arg(&purchase.user_id)
        .arg(purchase.quantity)
        .invoke_async(&mut redis.conn())
        .await
        .at(redis)?;
    let unexpected = || Error::Internal(format!("quota.lua answered {reply:?}"));
    let [Value::BulkString(verdict), Value::Int(shards), price] = reply.as_slice() else {
        return Err(unexpected());
    };
    let price = match price {
        Value::BulkString(p) => String::from_utf8_lossy(p).into_owned(),
        _ => return Err(unexpected()),
    };
    match verdict.as_slice() {
        b"ok" => {}
        b"not_sharded" => return Ok(None),
        code => {
            let outcome = Outcome::REFUSALS
                .into_iter()
                .find(|o| o.code().as_bytes() == code)
                .ok_or_else(unexpected)?;
            return Ok(Some(refused(outcome)));
        }
    }
    let shards = u16::try_from(*shards).map_err(|_| unexpected())?.max(1);
    let first: u16 = rand::random_range(0..shards);
    for k in (0..shards).map(|step| (first + step) % shards) {
        let reply: Vec<Value> = scripts::BUCKET_RESERVE
            .key(keys.bucket_product(activity, k, product))
            .key(keys.bucket_orders(activity, k))
            .key(keys.bucket_seq(activity, k))
            .arg(activity)
            .arg(product)
            .arg(&purchase.user_id)
            .arg(purchase.quantity)
            .arg(&price)
            .arg(k)
            .arg(keys::BUCKET_SEQ_BASE)
            .invoke_async(&mut redis.conn())
            .await
            .at(redis)?;
        let [Value::BulkString(verdict), Value::Int(remaining)] = reply.as_slice() else {
            return Err(Error::Internal(format!("bucket_reserve.lua answered {reply:?}")));
        };
        let verdict = String::from_utf8_lossy(verdict);
        if keys::is_entry_id(&verdict) {
            return Ok(Some(Verdict {
                outcome: Outcome::Ok,
                order_no: Some(keys::order_no(activity, &verdict)),
                remaining: *remaining,
            }));
        }
    }
    let () = scripts::QUOTA_RETURN
        .key(per.bought(product))
        .arg(&purchase.user_id)
        .arg(purchase.quantity)
        .invoke_async::<i64>(&mut redis.conn())
        .await
        .at(redis)
        .map(drop)?;
    Ok(Some(Verdict {
        outcome: Outcome::SoldOut,
        order_no: None,
        remaining: 0,
    }))
}

fn refused(outcome: Outcome) -> Verdict {
    Verdict {
        outcome,
        order_no: None,
        remaining: -1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_spreads_every_unit() {
        assert_eq!(split(100, 4), vec![25, 25, 25, 25]);
        assert_eq!(split(6, 4), vec![2, 2, 1, 1]);
        assert_eq!(split(3, 4), vec![1, 1, 1, 0]);
        assert_eq!(split(7, 1), vec![7]);
        assert_eq!(split(0, 3), vec![0, 0, 0]);
        assert_eq!(
            split(u64::from(u32::MAX), 1024).iter().sum::<u64>(),
            u64::from(u32::MAX)
        );
    }
}
