//! Stock sharding of one hot product (`product add|update --shards N`): its remaining stock
//! is split over N buckets, each in its own Redis Cluster slot (`P:{a:A:b:K}:...`, see
//! [`crate::keys`]) with its own reservation stream, so a cluster spreads one product's load
//! over its primaries.
//!
//! The purchases of sharded products in a group-commit batch take two steps, because the
//! per-user limit must hold across buckets and a script touches one slot:
//! 1. [`quota`]: one `lua/quota.lua` call in the activity's slot decides every check of
//!    `lua/reserve.lua` but the stock for all of them, and raises the accepted buyers' totals
//!    (the limit is checked there, once);
//! 2. `fill`: the accepted purchases, dealt out over the buckets, one `lua/bucket_reserve.lua`
//!    call per bucket (the buckets concurrently; one stream entry per call); those a bucket
//!    cannot fill move on to the next bucket in a follow-up round;
//! 3. `gather`: an order of several units no bucket holds alone has its units gathered into
//!    one bucket when the buckets together hold them, as a noted [`moves::Move`];
//! 4. only the purchases that fit nowhere have their quotas given back (one
//!    `lua/quota_return.lua` call) and are answered `sold_out`.
//!
//! A crash or a lost answer between 1 and 2 (or 2 and 4) leaves the buyer's total raised
//! without a reservation: the buyer may be refused a unit they could have had, a unit is
//! never sold twice. `reconcile` reports such totals (drift in `bought`) and `--fix` sets
//! them to MySQL's orders.

mod fill;
mod gather;
pub mod moves;
pub mod quota;
pub mod stock;

use std::collections::HashMap;
use std::sync::RwLock;

use crate::buy::{self, Outcome, Purchase, Verdict};
use crate::error::{Error, Result};
use crate::redis_client::RedisClient;
use fill::{Item, Known};
use quota::Quota;

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
/// `reserve.lua` ([`buy::reserve_above`]), those of sharded products through their buckets
/// ([`decide_sharded`]), both at the same time. One verdict per purchase, in order.
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
        // `plain` holds indices in order, so all of them is the whole batch: the usual case
        // (no sharded product) sends it as it is, without copying every purchase.
        let subset: Vec<Purchase>;
        let plain_batch: &[Purchase] = if plain.len() == purchases.len() {
            purchases
        } else {
            subset = plain.iter().map(|&i| purchases[i].clone()).collect();
            &subset
        };
        let sharded_batch: Vec<Purchase> = bucketed.iter().map(|&i| purchases[i].clone()).collect();
        let (plain_decided, sharded_decided) = tokio::join!(
            async {
                if plain_batch.is_empty() {
                    Ok(Vec::new())
                } else {
                    buy::reserve_above(redis, activity, min_persist_seq, plain_batch).await
                }
            },
            async {
                if sharded_batch.is_empty() {
                    Ok(Vec::new())
                } else {
                    decide_sharded(redis, activity, min_persist_seq, &sharded_batch).await
                }
            }
        );
        let (plain_decided, sharded_decided) = (plain_decided?, sharded_decided?);
        let mut checked: HashMap<u64, bool> = HashMap::new();
        for (&i, verdict) in plain.iter().zip(plain_decided) {
            let product = purchases[i].product_id;
            if verdict.outcome == Outcome::NotFound && verdict.remaining < 0 {
                let is_sharded = match checked.get(&product) {
                    Some(&s) => s,
                    None => {
                        let s = stock::shards_of(redis, activity, product).await? > 1;
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
        for (&i, verdict) in bucketed.iter().zip(sharded_decided) {
            match verdict {
                Some(verdict) => verdicts[i] = Some(verdict),
                None => {
                    sharded.set(purchases[i].product_id, false);
                    retry_plain.push(i);
                }
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

/// Decides `purchases` of sharded products (the steps in the module docs). One verdict per
/// purchase, in order; `None` for one whose product has no buckets in Redis (decide it with
/// `reserve.lua`).
pub async fn decide_sharded(
    redis: &RedisClient,
    activity: u64,
    min_persist_seq: u64,
    purchases: &[Purchase],
) -> Result<Vec<Option<Verdict>>> {
    let quotas = quota::take(redis, activity, min_persist_seq, purchases).await?;
    let mut verdicts: Vec<Option<Verdict>> = vec![None; purchases.len()];
    let mut items = Vec::new();
    // Each product's purchases are dealt out over its buckets from a random one on.
    let mut next: HashMap<u64, u16> = HashMap::new();
    for (i, (purchase, quota)) in purchases.iter().zip(&quotas.verdicts).enumerate() {
        match *quota {
            Quota::NotSharded => {}
            Quota::Refused(outcome) => verdicts[i] = Some(refused(outcome)),
            Quota::Taken => {
                let product = quotas.products.get(&purchase.product_id).ok_or_else(|| {
                    Error::Internal(format!(
                        "quota.lua took a quota of product {} without buckets",
                        purchase.product_id
                    ))
                })?;
                let start = next
                    .entry(purchase.product_id)
                    .or_insert_with(|| rand::random_range(0..product.shards));
                items.push(Item::new(
                    i,
                    purchase.clone(),
                    product.shards,
                    product.price.clone(),
                    *start,
                ));
                *start = (*start + 1) % product.shards;
            }
        }
    }
    let mut known = Known::new();
    let (queued, unfit) = fill::fill(redis, activity, items, &mut known).await?;
    for (i, verdict) in queued {
        verdicts[i] = Some(verdict);
    }
    let mut returned = Vec::new();
    for item in &unfit {
        verdicts[item.index] = Some(match gather::gather(redis, activity, item, &mut known).await? {
            Some(verdict) => verdict,
            None => {
                returned.push(&item.purchase);
                Verdict {
                    outcome: Outcome::SoldOut,
                    order_no: None,
                    remaining: gather::known_total(&known, item.purchase.product_id, item.shards),
                }
            }
        });
    }
    quota::give_back(redis, activity, &returned).await?;
    Ok(verdicts)
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
