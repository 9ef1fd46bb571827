//! Deciding purchases: the typed face of `lua/reserve.lua`.
//!
//! [`reserve`] sends a batch of purchases of one activity in a single script call
//! (group commit); the script decides them one after another in arrival order, exactly
//! as if each had been sent alone.

use foldhash::HashSet;

use redis::Value;
use serde::{Deserialize, Serialize};

use crate::error::{Error, RedisContext, Result};
use crate::keys;
use crate::redis_client::RedisClient;
use crate::scripts;
use crate::totals;

/// One purchase attempt.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Purchase {
    /// The product.
    pub product_id: u64,
    /// The buyer.
    pub user_id: String,
    /// Units wanted.
    pub quantity: u32,
    /// The buyer's purchase token for the product's activity. Its signature and expiry are
    /// the caller's to check (`serve` does, before the batch: [`crate::token::Signer`]);
    /// [`reserve`] never sends it to Redis, which only refuses users whose token the operator
    /// revoked.
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
    /// The token is not valid: badly signed or expired (checked by `serve`), or the
    /// operator revoked the user's token (checked in Redis).
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

    /// The refusal `lua/reserve.lua` names with the character `letter` (see its header).
    fn from_letter(letter: u8) -> Option<Outcome> {
        Some(match letter {
            b'S' => Outcome::Suspended,
            b'N' => Outcome::NotFound,
            b'T' => Outcome::NotStarted,
            b'P' => Outcome::Paused,
            b'E' => Outcome::Ended,
            b'B' => Outcome::Blacklisted,
            b'I' => Outcome::InvalidToken,
            b'R' => Outcome::BadRequest,
            b'L' => Outcome::LimitExceeded,
            b'O' => Outcome::SoldOut,
            _ => return None,
        })
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
/// `unpack`, whose Lua limit is a few thousand values (eight per run of one product, at
/// worst one run per purchase).
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
    // The stream entry lists a run's buyers space-separated (lua/reserve.lua); `serve` refuses
    // such ids before they get here, and no other caller may queue an entry nobody can read.
    if let Some(bad) = purchases
        .iter()
        .find(|p| p.user_id.is_empty() || p.user_id.contains(' '))
    {
        return Err(Error::invalid(format!(
            "user id {:?}: must be non-empty and hold no space",
            bad.user_id
        )));
    }
    let (invocation, places) = invocation(
        &scripts::RESERVE,
        redis.keys(),
        redis.numeric_user_ids_below(),
        activity,
        min_persist_seq,
        purchases,
    );
    let mut conn = redis.conn();
    let reply: Value = invocation.invoke_async(&mut conn).await.at(redis)?;
    verdicts(activity, purchases, &places, &reply)
}

/// The distinct products of a batch in first-seen order, and each item's place (from 0)
/// among them: a script call passes a product's keys once and each purchase names its product
/// by place (see the headers of lua/reserve.lua, quota.lua and bucket_reserve.lua).
pub(crate) fn product_places(product_ids: impl Iterator<Item = u64>) -> (Vec<u64>, Vec<usize>) {
    let mut products: Vec<u64> = Vec::with_capacity(2);
    let places = product_ids
        .map(|product| match products.iter().position(|&id| id == product) {
            Some(i) => i,
            None => {
                products.push(product);
                products.len() - 1
            }
        })
        .collect();
    (products, places)
}

/// The call of `script` (`lua/reserve.lua`, or a version of it with the same arguments)
/// deciding `purchases`, and each purchase's product place (0-based) in the call. A batch of
/// one product, one unit each and every buyer alone, whose user ids are all numbers below
/// `numbered_below` (`redis.numeric_user_ids_below`, the bound `hot` stamps on the products)
/// is passed numbered: each id as `#<id>`, the offset of its total in the product's totals
/// array ([`totals::array_offset`]), which the script then need not build per buyer. Public
/// for `examples/redis_cost.rs`, which compares script versions.
pub fn invocation<'a>(
    script: &'a redis::Script,
    keys: &keys::Keys,
    numbered_below: u64,
    activity: u64,
    min_persist_seq: u64,
    purchases: &[Purchase],
) -> (redis::ScriptInvocation<'a>, Vec<usize>) {
    let per = keys.for_activity(activity);
    let (products, places) = product_places(purchases.iter().map(|p| p.product_id));
    let mut invocation = script.prepare_invoke();
    invocation
        .key(keys.activity(activity))
        .key(keys.orders_stream(activity))
        .key(keys.blacklist(activity))
        .key(keys.revoked(activity))
        .arg(min_persist_seq);
    for &product in &products {
        invocation
            .key(per.product(product))
            .key(per.bought(product))
            .key(per.totals(product))
            .arg(product);
    }
    // The usual purchase (first product, one unit, its buyer's only one of that product in
    // the batch) passes only its user id. The script keeps the buyers' totals so far only for
    // the unusual ones, so every purchase of a buyer who asks twice is unusual.
    // foldhash (seeded per process), not std's SipHash: these sets hash every buyer of every
    // call, and a call holds at most `batch_max` of them, so colliding ids cannot cost much.
    let mut seen: HashSet<(usize, &str)> = HashSet::with_capacity_and_hasher(purchases.len(), Default::default());
    let mut repeated: HashSet<(usize, &str)> = HashSet::default();
    for (p, &place) in purchases.iter().zip(&places) {
        if !seen.insert((place, p.user_id.as_str())) {
            repeated.insert((place, p.user_id.as_str()));
        }
    }
    let unusual: Vec<(usize, &Purchase)> = purchases
        .iter()
        .enumerate()
        .filter(|(i, p)| places[*i] != 0 || p.quantity != 1 || repeated.contains(&(places[*i], p.user_id.as_str())))
        .collect();
    if unusual.is_empty() && products.len() == 1 {
        let offsets: Option<Vec<String>> = purchases
            .iter()
            .map(|p| totals::array_offset(&p.user_id, numbered_below))
            .collect();
        if let Some(offsets) = offsets {
            // A Vec is passed as one argument per element.
            invocation.arg("#").arg(offsets);
            return (invocation, places);
        }
    }
    invocation.arg(unusual.len());
    for (i, p) in unusual {
        invocation.arg(i + 1).arg(places[i] + 1).arg(p.quantity);
    }
    for p in purchases {
        invocation.arg(&p.user_id);
    }
    (invocation, places)
}

/// The verdicts on `purchases` (of activity `activity`, their products at `places`) from
/// `lua/reserve.lua`'s reply, one string of space-separated words: one character per purchase,
/// each product's stock before the batch, from which each purchase's remaining stock follows
/// (only the batch's accepted purchases change it), and the entry id when any was queued.
fn verdicts(activity: u64, purchases: &[Purchase], places: &[usize], reply: &Value) -> Result<Vec<Verdict>> {
    let unexpected = || Error::Internal(format!("reserve.lua answered {reply:?}"));
    let Value::BulkString(reply) = reply else {
        return Err(unexpected());
    };
    let reply = std::str::from_utf8(reply).map_err(|_| unexpected())?;
    let mut words = reply.split(' ');
    let letters = words.next().ok_or_else(unexpected)?.as_bytes();
    let product_count = places.iter().max().map_or(0, |&p| p + 1);
    let mut stocks: Vec<i64> = words
        .by_ref()
        .take(product_count)
        .map(|s| s.parse().map_err(|_| unexpected()))
        .collect::<Result<_>>()?;
    let entry_id = words.next().unwrap_or("");
    if letters.len() != purchases.len() || stocks.len() != product_count || words.next().is_some() {
        return Err(unexpected());
    }
    if letters.contains(&b'.') && !keys::is_entry_id(entry_id) {
        return Err(unexpected());
    }
    let mut queued = 0u32;
    let mut out = Vec::with_capacity(purchases.len());
    for ((purchase, &place), &letter) in purchases.iter().zip(places).zip(letters.iter()) {
        let stock = &mut stocks[place];
        if letter == b'.' {
            *stock -= i64::from(purchase.quantity);
            out.push(Verdict {
                outcome: Outcome::Ok,
                order_no: Some(keys::purchase_order_no(activity, entry_id, queued)),
                remaining: *stock,
            });
            queued += 1;
        } else {
            out.push(Verdict {
                outcome: Outcome::from_letter(letter).ok_or_else(unexpected)?,
                order_no: None,
                remaining: *stock,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_has_its_own_letter() {
        let letters: Vec<Outcome> = b"SNTPEBIRLO".iter().filter_map(|&l| Outcome::from_letter(l)).collect();
        assert_eq!(letters, Outcome::REFUSALS);
        assert_eq!(Outcome::from_letter(b'.'), None);
    }

    fn purchase(product_id: u64, quantity: u32) -> Purchase {
        Purchase {
            product_id,
            user_id: "u".into(),
            quantity,
            token: String::new(),
        }
    }

    #[test]
    fn remaining_stock_follows_the_accepted_purchases_of_each_product() {
        let purchases = [purchase(1, 2), purchase(2, 1), purchase(1, 1), purchase(1, 5)];
        let reply = Value::BulkString(b"..OL 3 4 1700000000000-3".to_vec());
        let got = verdicts(7, &purchases, &[0, 1, 0, 0], &reply).unwrap();
        let summary: Vec<(Outcome, Option<&str>, i64)> = got
            .iter()
            .map(|v| (v.outcome, v.order_no.as_deref(), v.remaining))
            .collect();
        assert_eq!(
            summary,
            [
                (Outcome::Ok, Some("7-1700000000000-3"), 1),
                (Outcome::Ok, Some("7-1700000000000-3-1"), 3),
                (Outcome::SoldOut, None, 1),
                (Outcome::LimitExceeded, None, 1),
            ]
        );
        let short = Value::BulkString(b"..OL 3".to_vec());
        assert!(verdicts(7, &purchases, &[0, 1, 0, 0], &short).is_err());
        let refused = Value::BulkString(b"OLOL 0 4".to_vec());
        let got = verdicts(7, &purchases, &[0, 1, 0, 0], &refused).unwrap();
        assert!(got.iter().all(|v| v.order_no.is_none()), "{got:?}");
        assert_eq!(got.iter().map(|v| v.remaining).collect::<Vec<_>>(), [0, 4, 0, 0]);
    }
}
