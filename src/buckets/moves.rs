//! A move: the units of an order no single bucket holds, withdrawn from several buckets and
//! sold in one of them (see [`super::gather`] for when). Units in hand are neither on sale nor
//! sold, so a move is recorded where `reconcile` looks, and ends exactly once:
//!
//! 1. [`Move::note`] (`lua/move_note.lua`, the activity's slot) notes the move BEFORE any unit
//!    leaves a bucket: product, units, buyer, the buckets to take from, when, and the `hot`;
//! 2. [`Move::take`] (`lua/bucket_take.lua`, each bucket's slot) withdraws units bucket by
//!    bucket; each bucket records them in `m:<move id>` atomically with its stock, so any view
//!    of a bucket tells how many of its units the move holds ([`units_out`]);
//! 3. [`Move::sell`]: one `lua/bucket_reserve.lua` call adds them to the target (the first
//!    bucket that gave units) and sells them, only while the target's `m:<id>` is open;
//!    or [`Move::put_back`] closes the buckets, their units back (`bucket_take.lua` `back`);
//! 4. [`Move::clear`] drops the note.
//!
//! Each bucket's `m:<id>` is a fence: once closed, the move can neither take from it nor sell
//! in it. `reconcile` counts units in hand as in flight (from the buckets' fields, which are
//! right whatever the order its views were read in), leaves a young move alone, and `--fix`
//! finishes one left behind by a crash ([`finish_left`]): it closes the buckets in the
//! note's order and stops at a target that sold, so a live mover and `--fix` never both
//! dispose of the same units. The fields stay until the next `hot` (as `r:ORDER`, `op:L`):
//! a move is rare (the end of a sale) and dropping them would make a view read between
//! two buckets' updates see units vanish.

use redis::AsyncCommands;

use super::fill::{reserve_in, Add, Sale};
use crate::error::{RedisContext, Result};
use crate::redis_client::RedisClient;
use crate::scripts;

/// A move under way (see the module docs).
#[derive(Debug, Clone)]
pub struct Move {
    activity: u64,
    product: u64,
    quantity: u32,
    user: String,
    id: String,
    epoch: String,
    plan: Vec<u16>,
    in_hand: Vec<(u16, u64)>,
}

impl Move {
    /// Notes a move of `quantity` units of `product` for `user`, to be taken from the buckets
    /// `plan`, in that order (step 1).
    pub async fn note(
        redis: &RedisClient,
        activity: u64,
        product: u64,
        quantity: u32,
        plan: &[u16],
        user: &str,
    ) -> Result<Move> {
        let id = format!("{:016x}", rand::random::<u64>());
        let buckets = plan.iter().map(u16::to_string).collect::<Vec<_>>().join(",");
        let keys = redis.keys();
        let epoch: String = scripts::MOVE_NOTE
            .key(keys.moving(activity))
            .key(keys.activity(activity))
            .arg(&id)
            .arg(product)
            .arg(quantity)
            .arg(buckets)
            .arg(user)
            .invoke_async(&mut redis.conn())
            .await
            .at(redis)?;
        Ok(Move {
            activity,
            product,
            quantity,
            user: user.to_string(),
            id,
            epoch,
            plan: plan.to_vec(),
            in_hand: Vec::new(),
        })
    }

    /// The move's id (its field in `moving`, `m:<id>` in the buckets).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The buckets it took units from, with how many, in order (the first is the target).
    pub fn in_hand(&self) -> &[(u16, u64)] {
        &self.in_hand
    }

    /// Withdraws units from the planned buckets in order until the quantity is in hand
    /// (step 2). False when the buckets yield fewer, or one is closed for this move or gone:
    /// then put back what is in hand.
    pub async fn take(&mut self, redis: &RedisClient) -> Result<bool> {
        let mut wanted = u64::from(self.quantity) - self.in_hand.iter().map(|(_, n)| n).sum::<u64>();
        for k in self.plan.clone() {
            if wanted == 0 {
                break;
            }
            if self.in_hand.iter().any(|&(b, _)| b == k) {
                continue;
            }
            let taken = self.call(redis, k, "take", wanted).await?;
            if taken < 0 {
                return Ok(false);
            }
            if taken > 0 {
                self.in_hand.push((k, taken as u64));
                wanted -= taken as u64;
            }
        }
        Ok(wanted == 0)
    }

    /// Adds the units in hand to the target bucket and sells them to the buyer there, in one
    /// `bucket_reserve.lua` call (step 3). `Some((order number, the bucket's stock after))`
    /// when sold; `None` when the target is closed for this move, gone or reloaded (put back
    /// what is in hand then).
    pub async fn sell(&self, redis: &RedisClient, price: &str) -> Result<Option<(String, i64)>> {
        let Some(&(target, _)) = self.in_hand.first() else {
            return Ok(None);
        };
        let sale = Sale {
            product: self.product,
            user: self.user.clone(),
            quantity: self.quantity,
            price: price.to_string(),
        };
        let add = Add {
            product: self.product,
            units: u64::from(self.quantity),
            epoch: self.epoch.clone(),
            id: self.id.clone(),
        };
        let placed = reserve_in(redis, self.activity, target, &[sale], Some(&add)).await?;
        Ok(placed
            .into_iter()
            .next()
            .and_then(|p| p.order_no.map(|no| (no, p.remaining))))
    }

    /// Closes the buckets the move took from, their units back (step 3, when not sold); safe
    /// to repeat and to race [`finish_left`]. Returns (bucket, units put back now) for each.
    pub async fn put_back(&self, redis: &RedisClient) -> Result<Vec<(u16, i64)>> {
        let mut back = Vec::with_capacity(self.in_hand.len());
        for &(k, units) in &self.in_hand {
            let put = self.call(redis, k, "back", 0).await?;
            if put == -1 {
                tracing::warn!(
                    activity = self.activity,
                    product = self.product,
                    bucket = k,
                    units,
                    "units withdrawn to gather an order did not go back: their bucket is gone or was loaded again"
                );
            }
            back.push((k, put));
        }
        Ok(back)
    }

    /// Drops the note (step 4): the move is over.
    pub async fn clear(&self, redis: &RedisClient) -> Result<()> {
        let () = redis
            .conn()
            .hdel(redis.keys().moving(self.activity), &self.id)
            .await
            .at(redis)?;
        Ok(())
    }

    async fn call(&self, redis: &RedisClient, bucket: u16, mode: &str, units: u64) -> Result<i64> {
        take_call(
            redis,
            self.activity,
            self.product,
            bucket,
            mode,
            &self.id,
            units,
            &self.epoch,
        )
        .await
    }
}

#[allow(clippy::too_many_arguments)]
async fn take_call(
    redis: &RedisClient,
    activity: u64,
    product: u64,
    bucket: u16,
    mode: &str,
    id: &str,
    units: u64,
    epoch: &str,
) -> Result<i64> {
    scripts::BUCKET_TAKE
        .key(redis.keys().bucket_product(activity, bucket, product))
        .arg(mode)
        .arg(id)
        .arg(units)
        .arg(epoch)
        .invoke_async(&mut redis.conn())
        .await
        .at(redis)
}

/// A move as its note in `moving` tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// The product.
    pub product: u64,
    /// The order's units.
    pub quantity: u32,
    /// When it was noted (Redis time, ms).
    pub noted_ms: i64,
    /// The buckets to take from, in order.
    pub buckets: Vec<u16>,
    /// The buyer (whose total the order's units are in while the move is under way).
    pub user: String,
    /// The preheat epoch of its buckets.
    pub epoch: String,
}

impl Note {
    /// Parses a note as `move_note.lua` writes it (`None`: not one).
    pub fn parse(text: &str) -> Option<Note> {
        let mut parts = text.splitn(6, ' ');
        let product = parts.next()?.parse().ok()?;
        let quantity = parts.next()?.parse().ok()?;
        let noted_ms = parts.next()?.parse().ok()?;
        let buckets = parts
            .next()?
            .split(',')
            .filter(|b| !b.is_empty())
            .map(str::parse)
            .collect::<std::result::Result<_, _>>()
            .ok()?;
        let user = parts.next()?.to_string();
        let epoch = parts.next().unwrap_or_default().to_string();
        Some(Note {
            product,
            quantity,
            noted_ms,
            buckets,
            user,
            epoch,
        })
    }
}

/// The units a bucket's `m:<id>` value says the move holds out of that bucket's counters:
/// taken and in hand, less what came in (a target's sale). Over all the move's buckets this
/// is its units in hand (0 once sold or put back).
pub fn units_out(value: &str) -> Option<i64> {
    let mut parts = value.split(':');
    let taken: i64 = parts.next()?.parse().ok()?;
    match (parts.next(), parts.next()) {
        (None, _) => Some(taken),
        (Some("back"), None) => Some(0),
        (Some("in"), Some(added)) => Some(taken - added.parse::<i64>().ok()?),
        _ => None,
    }
}

/// How [`finish_left`] ended a move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finished {
    /// Its target had sold the units: nothing put back.
    Sold,
    /// Its buckets are closed, these units put back now.
    Back(u64),
}

/// Ends a move left behind (its mover crashed or stalled), exactly once: closes its buckets
/// in the note's order, each putting back what the move took from it, and stops at a
/// target that sold (the buckets before it gave nothing); then drops the note. A mover
/// still alive finds a bucket closed and gives up.
pub async fn finish_left(redis: &RedisClient, activity: u64, id: &str, note: &Note) -> Result<Finished> {
    let mut back = 0;
    let mut finished = None;
    for &k in &note.buckets {
        let put = take_call(redis, activity, note.product, k, "back", id, 0, &note.epoch).await?;
        if put == -3 {
            finished = Some(Finished::Sold);
            break;
        }
        back += put.max(0) as u64;
    }
    let () = redis.conn().hdel(redis.keys().moving(activity), id).await.at(redis)?;
    Ok(finished.unwrap_or(Finished::Back(back)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_note_and_the_buckets_fields_read_back() {
        let note = Note::parse("7 5 1732250000123 2,0,3 buyer-1 e:42 x").unwrap();
        assert_eq!(note.buckets, vec![2, 0, 3]);
        assert_eq!((note.product, note.quantity, note.user.as_str()), (7, 5, "buyer-1"));
        assert_eq!(note.epoch, "e:42 x", "the epoch is last and taken whole");
        assert_eq!(units_out("3"), Some(3));
        assert_eq!(units_out("3:back"), Some(0));
        assert_eq!(units_out("2:in:5"), Some(-3));
        assert_eq!(units_out("x"), None);
    }
}
