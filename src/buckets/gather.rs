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
//! go back where they came from (`lua/bucket_take.lua` again, only into a bucket of the same
//! `hot`) and the buyer is told `sold_out`. A crash, or a lost answer, between the steps leaves
//! the units in hand withdrawn from sale: `reconcile` reports the product's stock short; a
//! unit is never sold twice. While units are in hand, another buyer may be told `sold_out`
//! although they come back a moment later, and a `reconcile --fix` running in that moment sees
//! them missing too (README, Stock sharding: not yet recorded for reconcile).

use super::fill::{reserve_in, Add, Item, Known};
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
    // (bucket, units, epoch) of every take.
    let mut in_hand: Vec<(u16, u64, String)> = Vec::new();
    let mut wanted = quantity;
    for (k, seen) in fullest {
        let (taken, epoch) = move_units(redis, activity, product, k, "take", wanted, "").await?;
        let taken = taken.max(0) as u64;
        // What it held is unknown past this call: at least what was taken from it is gone.
        known.insert((product, k), (seen - taken as i64).max(0));
        if taken > 0 {
            in_hand.push((k, taken, epoch));
            wanted -= taken;
        }
        if wanted == 0 {
            break;
        }
    }
    // Units of two epochs: a `hot` ran meanwhile; they go home, where the epoch decides.
    let one_epoch = in_hand.windows(2).all(|w| w[0].2 == w[1].2);
    let target = in_hand.first().filter(|_| wanted == 0 && one_epoch);
    let Some((target, _, epoch)) = target.cloned() else {
        put_back(redis, activity, product, &in_hand, known).await?;
        return Ok(None);
    };
    let add = Add {
        product,
        units: quantity,
        epoch,
    };
    let placed = reserve_in(redis, activity, target, &[item.sale()], Some(&add)).await?;
    match placed.into_iter().next() {
        Some(placed) if placed.order_no.is_some() => {
            known.insert((product, target), placed.remaining.max(0));
            Ok(Some(Verdict {
                outcome: Outcome::Ok,
                order_no: placed.order_no,
                remaining: placed.remaining,
            }))
        }
        _ => {
            // The target bucket is gone or reloaded (its script added nothing): the units go home.
            put_back(redis, activity, product, &in_hand, known).await?;
            Ok(None)
        }
    }
}

/// One `lua/bucket_take.lua` call: (units taken or put back, -1 for none; the bucket's epoch).
async fn move_units(
    redis: &RedisClient,
    activity: u64,
    product: u64,
    bucket: u16,
    mode: &str,
    units: u64,
    epoch: &str,
) -> Result<(i64, String)> {
    let (moved, epoch): (i64, String) = scripts::BUCKET_TAKE
        .key(redis.keys().bucket_product(activity, bucket, product))
        .arg(mode)
        .arg(units)
        .arg(epoch)
        .invoke_async(&mut redis.conn())
        .await
        .at(redis)?;
    Ok((moved, epoch))
}

/// Units in hand back into the buckets they came from. A bucket gone or reloaded by another
/// `hot` meanwhile takes nothing (that `hot` loaded MySQL's count, which has the units).
async fn put_back(
    redis: &RedisClient,
    activity: u64,
    product: u64,
    in_hand: &[(u16, u64, String)],
    known: &mut Known,
) -> Result<()> {
    for (k, units, epoch) in in_hand {
        let (put, _) = move_units(redis, activity, product, *k, "put", *units, epoch).await?;
        if put >= 0 {
            let seen = known.get(&(product, *k)).copied().unwrap_or(0);
            known.insert((product, *k), seen + put);
        } else {
            tracing::warn!(
                activity,
                product,
                bucket = k,
                units,
                "units withdrawn to gather an order did not go back: their bucket is gone or was loaded again"
            );
        }
    }
    Ok(())
}
