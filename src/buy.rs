//! Deciding purchases: the typed face of `lua/reserve.lua`.
//!
//! [`reserve`] sends a batch of purchases of one activity in a single script call
//! (group commit); the script decides them one after another in arrival order, exactly
//! as if each had been sent alone.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
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

    fn parse(code: &str) -> Result<Outcome> {
        Ok(match code {
            "ok" => Outcome::Ok,
            "not_found" => Outcome::NotFound,
            "not_started" => Outcome::NotStarted,
            "paused" => Outcome::Paused,
            "ended" => Outcome::Ended,
            "blacklisted" => Outcome::Blacklisted,
            "invalid_token" => Outcome::InvalidToken,
            "bad_request" => Outcome::BadRequest,
            "limit_exceeded" => Outcome::LimitExceeded,
            "sold_out" => Outcome::SoldOut,
            other => return Err(Error::Internal(format!("reserve.lua answered unknown code {other:?}"))),
        })
    }
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
    if purchases.is_empty() {
        return Ok(Vec::new());
    }
    let keys = redis.keys();
    let mut invocation = scripts::RESERVE.prepare_invoke();
    invocation
        .key(keys.activity(activity))
        .key(keys.orders_stream(activity))
        .key(keys.blacklist(activity))
        .arg(purchases.len());
    let per = keys.for_activity(activity);
    for p in purchases {
        invocation
            .key(per.product(p.product_id))
            .key(per.bought(p.product_id))
            .key(per.token(&p.user_id));
        invocation
            .arg(p.product_id)
            .arg(&p.user_id)
            .arg(p.quantity)
            .arg(&p.token);
    }
    let mut conn = redis.conn();
    let replies: Vec<(String, String, i64)> = invocation.invoke_async(&mut conn).await.map_err(|e| redis.err(e))?;
    if replies.len() != purchases.len() {
        return Err(Error::Internal(format!(
            "reserve.lua answered {} verdicts for {} purchases",
            replies.len(),
            purchases.len()
        )));
    }
    replies
        .into_iter()
        .map(|(code, order_no, remaining)| {
            Ok(Verdict {
                outcome: Outcome::parse(&code)?,
                order_no: (!order_no.is_empty()).then_some(order_no),
                remaining,
            })
        })
        .collect()
}
