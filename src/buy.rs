//! Deciding purchases: the typed face of `lua/reserve.lua`.
//!
//! [`reserve`] sends a batch of purchases of one activity in a single script call
//! (group commit); the script decides them one after another in arrival order, exactly
//! as if each had been sent alone.

use redis::Value;
use serde::{Deserialize, Serialize};

use crate::error::{Error, RedisContext, Result};
use crate::keys;
use crate::redis_client::RedisClient;
use crate::scripts;

/// One purchase attempt.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Purchase {
    /// The product.
    pub product_id: u64,
    /// The buyer.
    pub user_id: String,
    /// Units wanted.
    pub quantity: u32,
    /// The buyer's purchase token for the product's activity.
    pub token: String,
}

/// How Redis answered one purchase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Reserved and queued.
    Ok,
    /// Selling stopped because Redis lost the activity's state (see [`crate::lost_state`]).
    Suspended,
    /// No such product in Redis (not preheated, or flushed).
    NotFound,
    /// Before the window, or the activity is still a draft.
    NotStarted,
    /// Paused by an operator.
    Paused,
    /// After the window, or ended.
    Ended,
    /// The user may not buy.
    Blacklisted,
    /// No registered token matches.
    InvalidToken,
    /// The quantity is not a positive whole number.
    BadRequest,
    /// Over the per-order maximum or the per-user limit.
    LimitExceeded,
    /// Not enough stock left.
    SoldOut,
}

impl Outcome {
    /// The code used in HTTP answers and metrics.
    pub fn code(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Suspended => "suspended",
            Outcome::NotFound => "not_found",
            Outcome::NotStarted => "not_started",
            Outcome::Paused => "paused",
            Outcome::Ended => "ended",
            Outcome::Blacklisted => "blacklisted",
            Outcome::InvalidToken => "invalid_token",
            Outcome::BadRequest => "bad_request",
            Outcome::LimitExceeded => "limit_exceeded",
            Outcome::SoldOut => "sold_out",
        }
    }

    /// The refusal named by `code` (never [`Outcome::Ok`]: a queued purchase is answered with
    /// its stream entry id instead).
    fn refusal(code: &[u8]) -> Option<Outcome> {
        Outcome::REFUSALS.into_iter().find(|o| o.code().as_bytes() == code)
    }

    /// Every outcome but [`Outcome::Ok`].
    pub const REFUSALS: [Outcome; 10] = [
        Outcome::Suspended,
        Outcome::NotFound,
        Outcome::NotStarted,
        Outcome::Paused,
        Outcome::Ended,
        Outcome::Blacklisted,
        Outcome::InvalidToken,
        Outcome::BadRequest,
        Outcome::LimitExceeded,
        Outcome::SoldOut,
    ];
}

/// The verdict on one purchase.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// What happened.
    pub outcome: Outcome,
    /// The order number, when reserved.
    pub order_no: Option<String>,
    /// Stock left after this purchase (-1 when the product is unknown).
    pub remaining: i64,
}

/// Decides `purchases` (all of activity `activity`) in one atomic script call, in order.
/// Returns one verdict per purchase, in the same order.
pub async fn reserve(redis: &RedisClient, activity: u64, purchases: &[Purchase]) -> Result<Vec<Verdict>> {
    reserve_above(redis, activity, 0, purchases).await
}

/// Most purchases one script call decides: `lua/reserve.lua` builds its one XADD with
/// `unpack`, whose Lua limit is a few thousand values (eight per purchase).
pub const MAX_PURCHASES_PER_CALL: usize = 900;

/// [`reserve`], refusing every purchase (`suspended`) when the activity's persist sequence in
/// Redis is below `min_persist_seq`, a value MySQL is known to have recorded: Redis then went
/// back in time past persisted orders (see [`crate::lost_state`]). More than
/// [`MAX_PURCHASES_PER_CALL`] purchases are decided in consecutive calls, in order.
pub async fn reserve_above(
    redis: &RedisClient,
    activity: u64,
    min_persist_seq: u64,
    purchases: &[Purchase],
) -> Result<Vec<Verdict>> {
    let mut verdicts = Vec::with_capacity(purchases.len());
    for chunk in purchases.chunks(MAX_PURCHASES_PER_CALL) {
        verdicts.extend(reserve_one_call(redis, activity, min_persist_seq, chunk).await?);
    }
    Ok(verdicts)
}

async fn reserve_one_call(
    redis: &RedisClient,
    activity: u64,
    min_persist_seq: u64,
    purchases: &[Purchase],
) -> Result<Vec<Verdict>> {
    if purchases.is_empty() {
        return Ok(Vec::new());
    }
    let keys = redis.keys();
    let per = keys.for_activity(activity);
    // The batch's distinct products, in first-seen order: their keys go once, and each
    // purchase names its product by place (see the header of lua/reserve.lua).
    let mut products: Vec<u64> = Vec::with_capacity(2);
    let places: Vec<usize> = purchases
        .iter()
        .map(|p| match products.iter().position(|&id| id == p.product_id) {
            Some(i) => i + 1,
            None => {
                products.push(p.product_id);
                products.len()
            }
        })
        .collect();
    let mut invocation = scripts::RESERVE.prepare_invoke();
    invocation
        .key(keys.activity(activity))
        .key(keys.orders_stream(activity))
        .key(keys.blacklist(activity))
        .arg(purchases.len())
        .arg(products.len())
        .arg(min_persist_seq);
    for &product in &products {
        invocation
            .key(per.product(product))
            .key(per.bought(product))
            .arg(product);
    }
    for (p, place) in purchases.iter().zip(places) {
        invocation
            .key(per.token(&p.user_id))
            .arg(place)
            .arg(&p.user_id)
            .arg(p.quantity)
            .arg(&p.token);
    }
    let mut conn = redis.conn();
    let reply: Vec<Value> = invocation.invoke_async(&mut conn).await.at(redis)?;
    let unexpected = |what: String| Error::Internal(format!("reserve.lua answered {what}"));
    if reply.len() != 1 + 2 * purchases.len() {
        return Err(unexpected(format!(
            "{} values for {} purchases",
            reply.len(),
            purchases.len()
        )));
    }
    let entry_id = match &reply[0] {
        Value::BulkString(id) => std::str::from_utf8(id).map_err(|_| unexpected(format!("{:?}", reply[0])))?,
        other => return Err(unexpected(format!("{other:?} as the entry id"))),
    };
    reply[1..]
        .chunks_exact(2)
        .map(|pair| verdict(activity, entry_id, &pair[0], &pair[1]))
        .collect()
}

/// One purchase's verdict from its two reply values and the id of the batch's entry (see
/// `lua/reserve.lua`).
fn verdict(activity: u64, entry_id: &str, verdict: &Value, remaining: &Value) -> Result<Verdict> {
    let unexpected = || {
        Error::Internal(format!(
            "reserve.lua answered {verdict:?}, {remaining:?} (entry {entry_id:?})"
        ))
    };
    match (verdict, remaining) {
        (Value::BulkString(verdict), Value::Int(remaining)) => {
            let outcome = Outcome::refusal(verdict).ok_or_else(unexpected)?;
            Ok(Verdict {
                outcome,
                order_no: None,
                remaining: *remaining,
            })
        }
        (Value::Int(index), Value::Int(remaining)) => {
            let index = u32::try_from(*index).map_err(|_| unexpected())?;
            if !keys::is_entry_id(entry_id) {
                return Err(unexpected());
            }
            Ok(Verdict {
                outcome: Outcome::Ok,
                order_no: Some(keys::purchase_order_no(activity, entry_id, index)),
                remaining: *remaining,
            })
        }
        _ => Err(unexpected()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_codes_round_trip() {
        for outcome in Outcome::REFUSALS {
            assert_eq!(Outcome::refusal(outcome.code().as_bytes()), Some(outcome));
        }
        assert_eq!(Outcome::refusal(b"ok"), None);
        assert_eq!(Outcome::refusal(b"1732250000123-0"), None);
    }
}
