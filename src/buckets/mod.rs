//! Stock sharding of one hot product (`product add|update --shards N`): its remaining stock
//! is split over N buckets, each in its own Redis Cluster slot (`P:{a:A:b:K}:...`, see
//! [`crate::keys`]) with its own reservation stream, so a cluster spreads one product's load
//! over its primaries.
//!
//! A buyer's total of a sharded product lives in one bucket, picked by the user id
//! ([`quota::bucket_of_user`]), with copies of the activity's sale switches ([`gate`]), so the
//! purchases of sharded products in a group-commit batch are decided without the activity's
//! slot:
//! 1. [`quota`]: the purchases are grouped by their buyers' bucket, one `lua/bucket_buy.lua`
//!    call per bucket (the buckets concurrently): every check of `lua/reserve.lua`, the buyer's
//!    total raised and checked against the limit, and, when the bucket holds the units, the
//!    units deducted and queued in its stream, in one step (one stream entry per call);
//! 2. `fill`: a purchase its buyer's bucket is short for (the quota taken there) moves on to
//!    the next buckets (`lua/bucket_reserve.lua`, one call per bucket and round);
//! 3. `gather`: an order of several units no bucket holds alone has its units gathered into
//!    one bucket when the buckets together hold them, as a noted [`moves::Move`];
//! 4. only the purchases that fit nowhere have their quotas given back in their buyer's bucket
//!    (one `lua/quota_return.lua` call per bucket) and are answered `sold_out`.
//!
//! A crash or a lost answer between 1 and 2 (or 2 and 4) leaves the buyer's total raised
//! without a reservation: the buyer may be refused a unit they could have had, a unit is
//! never sold twice. `reconcile` reports such totals (drift in `bought`) and `--fix` sets
//! them to MySQL's orders.

mod fill;
pub mod gate;
mod gather;
pub mod moves;
pub mod quota;
pub mod stock;

use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;

use crate::buy::{self, Outcome, Purchase, Verdict};
use crate::error::{Error, Result};
use crate::redis_client::RedisClient;
use fill::{Item, Known};
use quota::Bought;

/// Splits `units` over `shards` buckets as evenly as whole units allow (the first buckets get
/// the odd units).
pub fn split(units: u64, shards: u16) -> Vec<u64> {
    let n = u64::from(shards.max(1));
    (0..n).map(|k| units / n + u64::from(k < units % n)).collect()
}

/// Which products `serve` has seen to be sharded, with their bucket counts (0: not sharded);
/// a wrong guess is corrected by the scripts' answers (`not_found` from `bucket_buy.lua` or
/// `reserve.lua`), so `hot` with a new `--shards` needs no restart.
#[derive(Debug, Default)]
pub struct Sharded {
    known: RwLock<HashMap<u64, u16>>,
}

impl Sharded {
    fn get(&self, product: u64) -> u16 {
        self.known
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&product)
            .copied()
            .unwrap_or(0)
    }

    fn set(&self, product: u64, shards: u16) {
        self.known
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(product, if shards > 1 { shards } else { 0 });
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
        (0..purchases.len()).partition(|&i| sharded.get(purchases[i].product_id) < 2);
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
                    decide_sharded(redis, activity, min_persist_seq, &sharded_batch, sharded).await
                }
            }
        );
        let (plain_decided, sharded_decided) = (plain_decided?, sharded_decided?);
        let mut checked: HashMap<u64, u16> = HashMap::new();
        for (&i, verdict) in plain.iter().zip(plain_decided) {
            let product = purchases[i].product_id;
            if verdict.outcome == Outcome::NotFound && verdict.remaining < 0 {
                let shards = match checked.get(&product) {
                    Some(&s) => s,
                    None => {
                        let s = stock::shards_of(redis, activity, product).await?;
                        checked.insert(product, s);
                        s
                    }
                };
                if shards > 1 {
                    sharded.set(product, shards);
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
                    sharded.set(purchases[i].product_id, 0);
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

/// Decides `purchases` of sharded products (the steps in the module docs), each product's
/// bucket count as `sharded` knows it (corrected when a bucket says otherwise). One verdict per
/// purchase, in order; `None` for one whose product has no buckets in Redis (decide it with
/// `reserve.lua`).
pub async fn decide_sharded(
    redis: &RedisClient,
    activity: u64,
    min_persist_seq: u64,
    purchases: &[Purchase],
    sharded: &Sharded,
) -> Result<Vec<Option<Verdict>>> {
    let mut verdicts: Vec<Option<Verdict>> = vec![None; purchases.len()];
    let mut known = Known::new();
    let mut items = Vec::new();
    let mut pending: Vec<usize> = (0..purchases.len()).collect();
    // Two rounds at most: a bucket of another count than `sharded` knew sends its purchases
    // round again with the count read from the activity's product hash.
    for round in 0..2 {
        if pending.is_empty() {
            break;
        }
        let shards: HashMap<u64, u16> = pending
            .iter()
            .map(|&i| (purchases[i].product_id, sharded.get(purchases[i].product_id)))
            .collect();
        let mut groups: BTreeMap<u16, Vec<usize>> = BTreeMap::new();
        for &i in &pending {
            let n = shards[&purchases[i].product_id];
            if n > 1 {
                groups
                    .entry(quota::bucket_of_user(&purchases[i].user_id, n))
                    .or_default()
                    .push(i);
            }
        }
        let shards = std::sync::Arc::new(shards);
        let mut tasks = tokio::task::JoinSet::new();
        for (k, group) in groups {
            let (redis, shards) = (redis.clone(), shards.clone());
            let batch: Vec<Purchase> = group.iter().map(|&i| purchases[i].clone()).collect();
            tasks.spawn(async move {
                let answer = quota::buy_in(&redis, activity, k, min_persist_seq, &batch, &shards, true).await;
                (k, group, answer)
            });
        }
        let (mut failed, mut again) = (None, Vec::new());
        while let Some(joined) = tasks.join_next().await {
            let (k, group, answer) = joined.map_err(|e| Error::Internal(format!("a bucket call panicked: {e}")))?;
            let answer = match answer {
                Ok(answer) => answer,
                Err(e) => {
                    failed = Some(e);
                    continue;
                }
            };
            for (i, bought) in group.into_iter().zip(answer.bought) {
                let purchase = &purchases[i];
                let product = purchase.product_id;
                verdicts[i] = match bought {
                    Bought::Queued(order_no, remaining) => {
                        known.insert((product, k), remaining.max(0));
                        Some(Verdict {
                            outcome: Outcome::Ok,
                            order_no: Some(order_no),
                            remaining,
                        })
                    }
                    Bought::Short(remaining) => {
                        known.insert((product, k), remaining.max(0));
                        let price = answer.prices.get(&product).cloned().unwrap_or_default();
                        items.push(Item::after(i, purchase.clone(), shards[&product], price, k));
                        continue;
                    }
                    Bought::Refused(outcome) => Some(refused(outcome)),
                    Bought::NotFound => {
                        again.push(i);
                        continue;
                    }
                };
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }
        pending.clear();
        let mut checked: HashMap<u64, u16> = HashMap::new();
        for i in again {
            let product = purchases[i].product_id;
            let now = match checked.get(&product) {
                Some(&n) => n,
                None => {
                    let n = stock::shards_of(redis, activity, product).await?;
                    checked.insert(product, n);
                    n
                }
            };
            if now < 2 {
                // Not sharded (any more): `None` sends it to `reserve.lua`.
                sharded.set(product, 0);
            } else if now != shards[&product] && round == 0 {
                sharded.set(product, now);
                pending.push(i);
            } else {
                verdicts[i] = Some(refused(Outcome::NotFound));
            }
        }
    }
    let (queued, unfit) = fill::fill(redis, activity, items, &mut known).await?;
    for (i, verdict) in queued {
        verdicts[i] = Some(verdict);
    }
    let mut returned: BTreeMap<u16, Vec<&Purchase>> = BTreeMap::new();
    for item in &unfit {
        verdicts[item.index] = Some(match gather::gather(redis, activity, item, &mut known).await? {
            Some(verdict) => verdict,
            None => {
                returned
                    .entry(quota::bucket_of_user(&item.purchase.user_id, item.shards))
                    .or_default()
                    .push(&item.purchase);
                Verdict {
                    outcome: Outcome::SoldOut,
                    order_no: None,
                    remaining: gather::known_total(&known, item.purchase.product_id, item.shards),
                }
            }
        });
    }
    for (k, back) in returned {
        quota::give_back(redis, activity, k, &back).await?;
    }
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
