//! An order of several units that no single bucket holds, while the buckets together do: its
//! units are gathered into one bucket and sold there, so the buyer gets what the product still
//! has ("no units left behind"). The units travel as a [`super::moves::Move`]: noted in the
//! activity's slot first, withdrawn from the fullest buckets, then added to the first of them
//! and sold to the buyer in one `lua/bucket_reserve.lua` call, so no other buyer can take them
//! in between.
//!
//! When the buckets yield fewer units than asked (other buyers were quicker), the units in
//! hand go back where they came from and the buyer is told `sold_out`. A crash, or a lost
//! answer, between the steps leaves the move noted: `reconcile` counts its units as in flight
//! and `--fix` ends it once it is older than `orders.in_flight_grace_secs` (see
//! [`super::moves`]); a unit is never sold twice. While units are in hand, another buyer may
//! be told `sold_out` although they come back a moment later.

use super::fill::{Item, Known};
use super::moves::Move;
use crate::buy::{Outcome, Verdict};
use crate::error::Result;
use crate::redis_client::RedisClient;

/// The units `known` says the product's buckets hold together.
pub(super) fn known_total(known: &Known, product: u64, shards: u16) -> i64 {
    (0..shards)
        .map(|k| known.get(&(product, k)).copied().unwrap_or(0).max(0))
        .sum()
}

/// Sells `item` (unfit: every bucket was seen holding fewer units than it asks) by gathering
/// its units into one bucket (module docs); `None` when there are not enough, or the order is
/// of one unit (which any bucket with a unit would have filled). Keeps `known` up to date.
/// An error leaves the move noted, for `reconcile`.
pub(super) async fn gather(
    redis: &RedisClient,
    activity: u64,
    item: &Item,
    known: &mut Known,
) -> Result<Option<Verdict>> {
    let (product, quantity) = (item.purchase.product_id, item.purchase.quantity);
    if quantity < 2 || known_total(known, product, item.shards) < i64::from(quantity) {
        return Ok(None);
    }
    let mut fullest: Vec<(u16, i64)> = (0..item.shards)
        .filter_map(|k| known.get(&(product, k)).map(|&s| (k, s)))
        .filter(|&(_, s)| s > 0)
        .collect();
    fullest.sort_by_key(|&(k, s)| (std::cmp::Reverse(s), k));
    let plan: Vec<u16> = fullest.iter().map(|&(k, _)| k).collect();
    let mut mv = Move::note(redis, activity, product, quantity, &plan, &item.purchase.user_id).await?;
    let whole = mv.take(redis).await?;
    for &(k, seen) in &fullest {
        // What a bucket held is unknown past the take: at least what was taken from it is gone.
        let taken = mv
            .in_hand()
            .iter()
            .find(|&&(b, _)| b == k)
            .map_or(0, |&(_, n)| n as i64);
        known.insert((product, k), (seen - taken).max(0));
    }
    if whole {
        if let Some((order_no, remaining)) = mv.sell(redis, &item.price).await? {
            let target = mv.in_hand()[0].0;
            known.insert((product, target), remaining.max(0));
            mv.clear(redis).await?;
            return Ok(Some(Verdict {
                outcome: Outcome::Ok,
                order_no: Some(order_no),
                remaining,
            }));
        }
    }
    for (k, put) in mv.put_back(redis).await? {
        if put > 0 {
            *known.entry((product, k)).or_default() += put;
        }
    }
    mv.clear(redis).await?;
    Ok(None)
}
