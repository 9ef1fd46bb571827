//! An order of several units that no single bucket holds, while the buckets together do: its
//! units are gathered into one bucket and sold there, so the buyer gets what the product still
//! has ("no units left behind").
//!
//! 1. `lua/bucket_take.lua` withdraws the units from the buckets, the fullest first, until the
//!    order's quantity is in hand (the first bucket taken from is the target);
//! 2. one `lua/bucket_reserve.lua` call on the target adds them back and sells them to the
//!    buyer in one step, so no other buyer can take them in between.
//!
//! When the buckets yield fewer units than asked (other buyers were quicker), the units in hand
//! go back where they came from (`lua/bucket_add.lua`) and the buyer is told `sold_out`. A
//! crash, or a lost answer, between the steps leaves the units in hand withdrawn from sale:
//! `reconcile` reports the product's stock short; a unit is never sold twice. While units are
//! in hand, another buyer may be told `sold_out` although they come back a moment later.

use super::fill::{reserve_in, Item, Known};
use crate::buy::{Outcome, Verdict};
use crate::error::{RedisContext, Result};
use crate::redis_client::RedisClient;
use crate::scripts;

/// The units `known` says the product's buckets hold together.
pub(super) fn known_total(known: &Known, product: u64, shards: u16) -> i64 {
    (0..shards)
        .map(|k| known.get(&(product, k)).copied().unwrap_or(0).max(0))
        .sum()
}

/// Sells `item` (unfit: every bucket was seen holding fewer units than it asks) by gathering
/// its units into one bucket (module docs); `None` when there are not enough, or the order is
/// of one unit (which any bucket with a unit would have filled). Keeps `known` up to date.
pub(super) async fn gather(
    redis: &RedisClient,
    activity: u64,
    item: &Item,
    known: &mut Known,
) -> Result<Option<Verdict>> {
    let (product, quantity) = (item.purchase.product_id, u64::from(item.purchase.quantity));
    if quantity < 2 || known_total(known, product, item.shards) < quantity as i64 {
        return Ok(None);
    }
    let mut fullest: Vec<(u16, i64)> = (0..item.shards)
        .filter_map(|k| known.get(&(product, k)).map(|&s| (k, s)))
        .filter(|&(_, s)| s > 0)
        .collect();
    fullest.sort_by_key(|&(k, s)| (std::cmp::Reverse(s), k));
    let keys = redis.keys();
    let mut in_hand: Vec<(u16, u64)> = Vec::new();
    let mut wanted = quantity;
    for (k, seen) in fullest {
        let taken: i64 = scripts::BUCKET_TAKE
            .key(keys.bucket_product(activity, k, product))
            .arg(wanted)
            .invoke_async(&mut redis.conn())
            .await
            .at(redis)?;
        let taken = taken.max(0) as u64;
        // What it held is unknown past this call: at least what was taken from it is gone.
        known.insert((product, k), (seen - taken as i64).max(0));
        if taken > 0 {
            in_hand.push((k, taken));
            wanted -= taken;
        }
        if wanted == 0 {
            break;
        }
    }
    let Some(&(target, _)) = in_hand.first().filter(|_| wanted == 0) else {
        put_back(redis, activity, product, &in_hand, known).await?;
        return Ok(None);
    };
    let placed = reserve_in(redis, activity, target, &[item.sale()], Some((product, quantity))).await?;
    let placed = placed.into_iter().next();
    match placed {
        Some(placed) if placed.order_no.is_some() => {
            known.insert((product, target), placed.remaining.max(0));
            Ok(Some(Verdict {
                outcome: Outcome::Ok,
                order_no: placed.order_no,
                remaining: placed.remaining,
            }))
        }
        _ => {
            // The target bucket is gone (its script added nothing): the units go home.
            put_back(redis, activity, product, &in_hand, known).await?;
            Ok(None)
        }
    }
}

/// Units in hand back into the buckets they came from. A bucket gone meanwhile keeps its
/// units out of sale (reported by `reconcile`; the next `hot` loads the stock from MySQL).
async fn put_back(
    redis: &RedisClient,
    activity: u64,
    product: u64,
    in_hand: &[(u16, u64)],
    known: &mut Known,
) -> Result<()> {
    for &(k, units) in in_hand {
        let after: i64 = scripts::BUCKET_ADD
            .key(redis.keys().bucket_product(activity, k, product))
            .arg(units)
            .invoke_async(&mut redis.conn())
            .await
            .at(redis)?;
        if after >= 0 {
            known.insert((product, k), after);
        } else {
            tracing::warn!(
                activity,
                product,
                bucket = k,
                units,
                "units withdrawn to gather an order could not go back: their bucket is gone"
            );
        }
    }
    Ok(())
}
