//! `POST /api/v1/buy`: the funnel (values, sold-out cache, admission, rate limits, token,
//! circuit breaker), then the purchase decided in Redis by group commit.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use redis::AsyncCommands;
use serde::Serialize;

use super::batcher::BatchError;
use super::body::{check_user_id, parse_buy, BuyRequest, JsonBody};
use super::client_addr::Client;
use super::error::{json_response, ApiError};
use super::funnel::ProductSlot;
use super::identity::Caller;
use super::metrics::BusyReason;
use super::state::{AppState, Subject};
use crate::buy::{Outcome, Purchase};
use crate::token::unix_now;

/// Most units one request may ask for; anything above is a client bug, not a purchase.
pub const MAX_QUANTITY: u32 = 10_000;
/// Longest token accepted (well above the 54 characters of a real one).
const MAX_TOKEN_LEN: usize = 128;

/// Answer of a successful `POST /api/v1/buy`.
#[derive(Debug, Serialize)]
pub struct BuyResponse {
    /// Always `queued`: reserved in Redis, being persisted.
    pub status: &'static str,
    /// Look it up with `GET /api/v1/orders/{order_no}`.
    pub order_no: String,
    /// Units of the product left.
    pub remaining: i64,
}

impl IntoResponse for BuyResponse {
    /// The same JSON as `Json(self)` gives, written in one go: every accepted purchase is
    /// answered with it, and serde's writer, which copies the body token by token, cost more
    /// instructions than parsing the request did.
    fn into_response(self) -> Response {
        let verbatim = |text: &str| text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !verbatim(self.status) || !verbatim(&self.order_no) {
            return Json(self).into_response();
        }
        let mut remaining = itoa::Buffer::new();
        let body = [
            "{\"status\":\"",
            self.status,
            "\",\"order_no\":\"",
            &self.order_no,
            "\",\"remaining\":",
            remaining.format(self.remaining),
            "}",
        ]
        .concat();
        json_response(body)
    }
}

/// `POST /api/v1/buy` as a route of the router (`seckill serve` answers it through
/// `api::Api`, which calls [`answer`] without the router).
pub async fn buy(
    State(state): State<AppState>,
    caller: Caller,
    client: Client,
    JsonBody(body): JsonBody,
) -> Result<BuyResponse, ApiError> {
    answer(&state, &caller, client, &body).await
}

/// The answer to a buy request by `caller` from `client` with body `body`: runs the funnel,
/// then decides the purchase in Redis (group commit).
pub async fn answer(state: &AppState, caller: &Caller, client: Client, body: &[u8]) -> Result<BuyResponse, ApiError> {
    let req = parse_buy(body)?;
    caller.may_act_as(&req.user_id)?;
    let mut activity = None;
    let result = match screen(state, &req, &mut activity) {
        Err(refused) => Err(refused),
        Ok(()) => {
            let mut purchase = Purchase {
                product_id: req.product_id,
                user_id: req.user_id.clone().into_owned(),
                quantity: req.quantity,
                token: req.token.clone().into_owned(),
            };
            decide(state, client, &mut purchase, &mut activity).await
        }
    };
    // The token never appears in logs: it is a bearer credential.
    let (product, user) = (req.product_id, &*req.user_id);
    match &result {
        Ok(ok) => {
            tracing::debug!(activity, product, user, %client, order_no = %ok.order_no, remaining = ok.remaining, "buy: queued")
        }
        Err(e) => tracing::debug!(activity, product, user, %client, code = e.code, "buy: refused"),
    }
    result
}

/// The checks that need neither Redis nor a copy of the request: its values, and layer 1 of
/// the funnel, the local sold-out cache. `activity` is filled in when the product is known.
fn screen(state: &AppState, req: &BuyRequest<'_>, activity: &mut Option<u64>) -> Result<(), ApiError> {
    check_user_id(&req.user_id)?;
    if req.quantity == 0 || req.quantity > MAX_QUANTITY {
        return Err(ApiError::bad_request(format!("quantity must be 1..={MAX_QUANTITY}")));
    }
    if req.token.is_empty() || req.token.len() > MAX_TOKEN_LEN {
        return Err(ApiError::invalid_token());
    }
    if state.degraded.any() {
        if let Some(known_in) = state.catalog.known_activity(req.product_id) {
            *activity = Some(known_in);
            refuse_if_degraded(state, known_in)?;
        }
    }
    if let Some(sold_out_in) = state.catalog.sold_out_activity(req.product_id) {
        *activity = Some(sold_out_in);
        state.stats.sold_out_cache_hits.increment(1);
        return Err(ApiError::from_outcome(Outcome::SoldOut));
    }
    Ok(())
}

/// The `degraded` answer when the operator switched `activity`'s buys off (`seckill degrade`):
/// answered from memory, before anything could reach the sale's stock.
fn refuse_if_degraded(state: &AppState, activity: u64) -> Result<(), ApiError> {
    match state.degraded.message(activity) {
        Some(message) => Err(ApiError::degraded(&message)),
        None => Ok(()),
    }
}

/// The rest of the funnel and the decision, for a request from `client` that [`screen`] let
/// through. `activity` is filled in once the product is resolved.
async fn decide(
    state: &AppState,
    client: Client,
    purchase: &mut Purchase,
    activity: &mut Option<u64>,
) -> Result<BuyResponse, ApiError> {
    let stats = &state.stats;
    let known = state.catalog.get(purchase.product_id);
    // First of the limits: one address asking too often must not use up the admission
    // slots or the global allowance of everyone else.
    if !state.limits.allow_address(client.0) {
        stats.rate_limited.increment(1);
        return Err(ApiError::too_many_requests());
    }
    let Some(_admitted) = state.admission.try_enter() else {
        stats.busy(BusyReason::Admission);
        return Err(ApiError::busy("too many requests in flight, retry shortly"));
    };
    if !state.limits.allow_global() {
        stats.rate_limited.increment(1);
        return Err(ApiError::too_many_requests());
    }
    let slot = match known {
        Some(slot) => slot,
        None => {
            let slot = resolve(state, purchase.product_id, &purchase.user_id).await?;
            *activity = Some(slot.activity);
            refuse_if_degraded(state, slot.activity)?;
            slot
        }
    };
    *activity = Some(slot.activity);
    if !state
        .signer
        .verify(slot.activity, &purchase.user_id, &purchase.token, unix_now())
    {
        return Err(ApiError::invalid_token());
    }
    // Only now, with the signature checked: requests forged in someone's name must not use
    // up that user's allowance.
    if !state.limits.allow_user(&purchase.user_id) {
        stats.rate_limited.increment(1);
        return Err(ApiError::too_many_requests());
    }
    state.admit_redis()?;
    let (returned, decided) = state.batchers.submit(slot.activity, std::mem::take(purchase)).await;
    if let Some(returned) = returned {
        *purchase = returned;
    }
    match decided {
        Ok(verdict) => {
            state.breaker.success();
            if verdict.remaining >= 0 {
                slot.remaining.set(verdict.remaining as f64);
            }
            match (verdict.outcome, verdict.order_no) {
                (Outcome::Ok, Some(order_no)) => {
                    stats.reservations.increment(1);
                    Ok(BuyResponse {
                        status: "queued",
                        order_no,
                        remaining: verdict.remaining,
                    })
                }
                (Outcome::SoldOut, _) => {
                    if verdict.remaining <= 0 {
                        state.catalog.mark_sold_out(&slot);
                    }
                    Err(ApiError::from_outcome(Outcome::SoldOut))
                }
                (Outcome::Suspended, _) => {
                    // Logged once per detection by the guard (server::guard), not per buyer.
                    stats.busy(BusyReason::Suspended);
                    Err(ApiError::from_outcome(Outcome::Suspended))
                }
                (Outcome::Ok, None) => {
                    tracing::error!(activity = slot.activity, product = purchase.product_id, user = %purchase.user_id, "buy: reservation without order number");
                    Err(ApiError::unknown_outcome(slot.activity))
                }
                (outcome, _) => Err(ApiError::from_outcome(outcome)),
            }
        }
        // The buyer is told the truth: `busy` only when the purchase certainly was not
        // made, `unknown_outcome` when it may have been.
        Err(BatchError::Undecided(why)) => {
            state.breaker.failure();
            tracing::warn!(activity = slot.activity, product = purchase.product_id, user = %purchase.user_id, error = %why, "buy: no verdict from redis, outcome unknown");
            Err(ApiError::unknown_outcome(slot.activity))
        }
        Err(BatchError::Unconfirmed { order_no, why }) => {
            stats.reservations.increment(1);
            tracing::warn!(activity = slot.activity, product = purchase.product_id, user = %purchase.user_id, %order_no, %why, "buy: reserved, replicas did not confirm");
            Err(ApiError::unconfirmed(order_no))
        }
        Err(BatchError::Closed) => {
            tracing::warn!(activity = slot.activity, product = purchase.product_id, user = %purchase.user_id, "buy: batcher closed (shutting down)");
            Err(ApiError::busy("shutting down, retry shortly"))
        }
    }
}

/// Looks the product's activity up in Redis (first request for a product only).
async fn resolve(state: &AppState, product: u64, user: &str) -> Result<Arc<ProductSlot>, ApiError> {
    state.admit_redis()?;
    let subject = Subject {
        activity: None,
        product: Some(product),
        user,
    };
    let timeout = state.config.redis_response_timeout();
    let mut conn = state.redis.conn();
    let looked_up = tokio::time::timeout(
        timeout,
        conn.hget::<_, _, Option<u64>>(state.redis.keys().product_activity(), product),
    )
    .await;
    match looked_up {
        Ok(Ok(found)) => {
            state.breaker.success();
            match found {
                Some(activity) => {
                    Ok(state
                        .catalog
                        .insert(product, activity, state.stats.remaining_stock(activity, product)))
                }
                None => Err(ApiError::from_outcome(Outcome::NotFound)),
            }
        }
        Ok(Err(e)) => Err(state.redis_failed("buy: product lookup failed", &e, subject)),
        Err(_) => Err(state.redis_failed(
            "buy: product lookup timed out",
            &format_args!("no answer within {timeout:?}"),
            subject,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::header::CONTENT_TYPE;
    use axum::http::HeaderValue;
    use http_body_util::BodyExt;

    async fn written(response: BuyResponse) -> (Option<HeaderValue>, Vec<u8>) {
        let response = response.into_response();
        let content_type = response.headers().get(CONTENT_TYPE).cloned();
        let body = response.into_body().collect().await.unwrap().to_bytes().to_vec();
        (content_type, body)
    }

    #[tokio::test]
    async fn the_answer_is_the_json_serde_writes() {
        let answers = [
            ("queued", "42-1732250000123-0", 7),
            ("queued", "42-1732250000123-0-17", 0),
            (
                "queued",
                "18446744073709551615-18446744073709551615-18446744073709551615-4294967295",
                i64::MIN,
            ),
            ("queued", "7-1-1", i64::MAX),
            ("queued", "-1", -1),
            // Not what an order number looks like: serde's writer escapes it.
            ("queued", "a\"b\\c\n\u{7f}é", 3),
            ("que\"ued", "1-1", 3),
        ];
        for (status, order_no, remaining) in answers {
            let answer = || BuyResponse {
                status,
                order_no: order_no.to_string(),
                remaining,
            };
            let (content_type, body) = written(answer()).await;
            assert_eq!(content_type, Some(HeaderValue::from_static("application/json")));
            assert_eq!(
                String::from_utf8(body).unwrap(),
                serde_json::to_string(&answer()).unwrap(),
                "{order_no:?}"
            );
        }
    }
}
