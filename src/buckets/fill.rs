//! The follow-up in the buckets' slots: the purchases whose quota is taken in their buyer's
//! bucket, which was short, get their units from the other buckets, one
//! `lua/bucket_reserve.lua` call per bucket and round, the buckets called concurrently (in a
//! cluster they live on different primaries).
//!
//! A purchase its buyer's bucket could not fill (`lua/bucket_buy.lua` took its quota there)
//! moves on to the next bucket, one round after another, skipping those this batch has seen holding fewer
//! units than it asks; one that has passed every bucket is unfit (see [`super::gather`]).

use std::collections::{BTreeMap, HashMap};

use redis::Value;

use crate::buy::{Outcome, Purchase, Verdict, MAX_PURCHASES_PER_CALL};
use crate::error::{Error, RedisContext, Result};
use crate::keys;
use crate::redis_client::RedisClient;
use crate::scripts;

/// The stock the batch has seen in a bucket, per (product, bucket): the last answer of that
/// bucket's script, lowered by the units the batch has sent there since.
pub(super) type Known = HashMap<(u64, u16), i64>;

/// A purchase whose quota is taken, on its way through the product's buckets.
#[derive(Debug, Clone)]
pub(super) struct Item {
    /// Its place in the batch.
    pub index: usize,
    /// The purchase.
    pub purchase: Purchase,
    /// The product's bucket count.
    pub shards: u16,
    /// The product's unit price.
    pub price: String,
    /// The first bucket it goes to.
    start: u16,
    /// Buckets tried or passed so far.
    step: u16,
}

impl Item {
    /// A purchase that starts at bucket `start` of `shards`.
    pub fn new(index: usize, purchase: Purchase, shards: u16, price: String, start: u16) -> Self {
        Item {
            index,
            purchase,
            shards,
            price,
            start,
            step: 0,
        }
    }

    /// A purchase whose buyer's bucket `bucket` (of `shards`) was short: it goes on to the
    /// buckets after that one.
    pub fn after(index: usize, purchase: Purchase, shards: u16, price: String, bucket: u16) -> Self {
        Item {
            step: 1,
            ..Item::new(index, purchase, shards, price, bucket)
        }
    }

    /// The next bucket to try, passing those `estimate` says hold too few units (and counting
    /// this purchase's units out of the one chosen); `None` once every bucket was passed.
    fn next_bucket(&mut self, estimate: &mut Known) -> Option<u16> {
        let quantity = i64::from(self.purchase.quantity);
        while self.step < self.shards {
            let k = (self.start + self.step) % self.shards;
            self.step += 1;
            match estimate.get_mut(&(self.purchase.product_id, k)) {
                Some(stock) if *stock < quantity => continue,
                Some(stock) => {
                    *stock -= quantity;
                    return Some(k);
                }
                None => return Some(k),
            }
        }
        None
    }

    /// What one bucket call sells: this purchase.
    pub fn sale(&self) -> Sale {
        Sale {
            product: self.purchase.product_id,
            user: self.purchase.user_id.clone(),
            quantity: self.purchase.quantity,
            price: self.price.clone(),
        }
    }
}

/// One purchase as a bucket call sends it.
#[derive(Debug, Clone)]
pub(super) struct Sale {
    /// The product.
    pub product: u64,
    /// The buyer.
    pub user: String,
    /// Units.
    pub quantity: u32,
    /// Unit price.
    pub price: String,
}

/// A bucket's answer for one purchase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Placed {
    /// The order number when queued; `None`: the bucket holds too few units, or is missing.
    pub order_no: Option<String>,
    /// The bucket's stock after this purchase (-1: no such bucket).
    pub remaining: i64,
}

/// Units a move withdrew from buckets of `product` in preheat epoch `epoch`, to add to a
/// bucket and sell in the same call (see [`super::moves`]).
#[derive(Debug, Clone)]
pub(super) struct Add {
    /// The product.
    pub product: u64,
    /// Units.
    pub units: u64,
    /// The epoch of the buckets they came from.
    pub epoch: String,
    /// The move's id: the target bucket's `m:<id>` must still be open.
    pub id: String,
}

/// Sells `sales` from bucket `bucket` (`lua/bucket_reserve.lua`, one stream entry per call of
/// at most [`MAX_PURCHASES_PER_CALL`]), after adding `add`'s units to that product's bucket
/// (see [`super::moves`]). One answer per sale, in order.
pub(super) async fn reserve_in(
    redis: &RedisClient,
    activity: u64,
    bucket: u16,
    sales: &[Sale],
    add: Option<&Add>,
) -> Result<Vec<Placed>> {
    let mut placed = Vec::with_capacity(sales.len());
    for chunk in sales.chunks(MAX_PURCHASES_PER_CALL) {
        placed.extend(reserve_call(redis, activity, bucket, chunk, add).await?);
    }
    Ok(placed)
}

async fn reserve_call(
    redis: &RedisClient,
    activity: u64,
    bucket: u16,
    sales: &[Sale],
    add: Option<&Add>,
) -> Result<Vec<Placed>> {
    let keys = redis.keys();
    let (products, places) = crate::buy::product_places(sales.iter().map(|s| s.product));
    let mut invocation = scripts::BUCKET_RESERVE.prepare_invoke();
    invocation
        .key(keys.bucket_orders(activity, bucket))
        .key(keys.bucket_seq(activity, bucket))
        .arg(activity)
        .arg(bucket)
        .arg(keys::BUCKET_SEQ_BASE)
        .arg(sales.len())
        .arg(products.len());
    for &product in &products {
        // A product's price is the same in every sale of it: its first sale's.
        let price = sales
            .iter()
            .find(|s| s.product == product)
            .map_or("", |s| s.price.as_str());
        let (units, epoch, id) = match add.filter(|a| a.product == product) {
            Some(a) => (a.units, a.epoch.as_str(), a.id.as_str()),
            None => (0, "", ""),
        };
        invocation
            .key(keys.bucket_product(activity, bucket, product))
            .arg(product)
            .arg(price)
            .arg(units)
            .arg(epoch)
            .arg(id);
    }
    for (sale, place) in sales.iter().zip(places) {
        invocation.arg(place + 1).arg(&sale.user).arg(sale.quantity);
    }
    let reply: Vec<Value> = invocation.invoke_async(&mut redis.conn()).await.at(redis)?;
    let unexpected = || Error::Internal(format!("bucket_reserve.lua answered {reply:?}"));
    if reply.len() != 1 + 2 * sales.len() {
        return Err(unexpected());
    }
    let entry_id = match &reply[0] {
        Value::BulkString(id) => String::from_utf8_lossy(id).into_owned(),
        _ => return Err(unexpected()),
    };
    reply[1..]
        .chunks_exact(2)
        .map(|pair| match (&pair[0], &pair[1]) {
            (Value::Int(index), Value::Int(remaining)) if keys::is_entry_id(&entry_id) => Ok(Placed {
                order_no: Some(keys::purchase_order_no(
                    activity,
                    &entry_id,
                    u32::try_from(*index).map_err(|_| unexpected())?,
                )),
                remaining: *remaining,
            }),
            (Value::BulkString(code), Value::Int(remaining))
                if code.as_slice() == b"sold_out" || code.as_slice() == b"not_found" =>
            {
                Ok(Placed {
                    order_no: None,
                    remaining: *remaining,
                })
            }
            _ => Err(unexpected()),
        })
        .collect()
}

/// Sells `items` from their buckets in rounds (module docs), updating `known`. Returns the
/// queued purchases' verdicts with their places in the batch, and the unfit purchases.
pub(super) async fn fill(
    redis: &RedisClient,
    activity: u64,
    items: Vec<Item>,
    known: &mut Known,
) -> Result<(Vec<(usize, Verdict)>, Vec<Item>)> {
    let (mut queued, mut unfit) = (Vec::new(), Vec::new());
    let mut pending = items;
    while !pending.is_empty() {
        let mut estimate = known.clone();
        let mut groups: BTreeMap<u16, Vec<Item>> = BTreeMap::new();
        for mut item in pending.drain(..) {
            match item.next_bucket(&mut estimate) {
                Some(k) => groups.entry(k).or_default().push(item),
                None => unfit.push(item),
            }
        }
        let mut tasks = tokio::task::JoinSet::new();
        for (k, group) in groups {
            let redis = redis.clone();
            tasks.spawn(async move {
                let sales: Vec<Sale> = group.iter().map(Item::sale).collect();
                let placed = reserve_in(&redis, activity, k, &sales, None).await;
                (k, group, placed)
            });
        }
        let mut failed = None;
        while let Some(joined) = tasks.join_next().await {
            let (k, group, placed) = joined.map_err(|e| Error::Internal(format!("a bucket call panicked: {e}")))?;
            let placed = match placed {
                Ok(placed) => placed,
                Err(e) => {
                    failed = Some(e);
                    continue;
                }
            };
            for (item, placed) in group.into_iter().zip(placed) {
                known.insert((item.purchase.product_id, k), placed.remaining.max(0));
                match placed.order_no {
                    Some(order_no) => queued.push((
                        item.index,
                        Verdict {
                            outcome: Outcome::Ok,
                            order_no: Some(order_no),
                            remaining: placed.remaining,
                        },
                    )),
                    None => pending.push(item),
                }
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }
    }
    Ok((queued, unfit))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(quantity: u32, shards: u16, start: u16) -> Item {
        let purchase = Purchase {
            product_id: 1,
            quantity,
            ..Purchase::default()
        };
        Item::new(0, purchase, shards, "1".into(), start)
    }

    #[test]
    fn a_purchase_passes_buckets_seen_too_small_and_stops_after_the_last() {
        let mut estimate = Known::from([((1, 1), 0), ((1, 2), 5)]);
        let mut it = item(2, 4, 1);
        assert_eq!(it.next_bucket(&mut estimate), Some(2));
        assert_eq!(estimate[&(1, 2)], 3, "its units counted out of the estimate");
        assert_eq!(it.next_bucket(&mut estimate), Some(3), "unknown: tried");
        assert_eq!(it.next_bucket(&mut estimate), Some(0), "wraps around");
        assert_eq!(
            it.next_bucket(&mut estimate),
            None,
            "bucket 1 was seen empty; all passed"
        );
    }
}
