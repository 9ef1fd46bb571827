//! The hot path: `POST /api/v1/token` and `POST /api/v1/buy`.

use std::borrow::Cow;

use axum::extract::State;
use axum::Json;
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};

use super::batcher::BatchError;
use super::error::{ApiError, ApiJson, JsonBody};
use super::funnel::ProductSlot;
use super::metrics::BusyReason;
use super::AppState;
use crate::buy::{Outcome, Purchase};
use crate::ops::token::{self, Gate};
use crate::token::unix_now;
use crate::user_id::validate as validate_user_id;

/// Most units one request may ask for; anything above is a client bug, not a purchase.
pub const MAX_QUANTITY: u32 = 10_000;
/// Longest token accepted (well above the 54 characters of a real one).
const MAX_TOKEN_LEN: usize = 128;

/// Body of `POST /api/v1/token`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// The activity to buy in.
    pub activity_id: u64,
    /// The buyer.
    pub user_id: String,
}

/// Answer of `POST /api/v1/token`.
#[derive(Debug, Serialize)]
pub struct TokenResponse {
    /// Present it with every purchase in the activity.
    pub token: String,
    /// Unix seconds after which it is refused.
    pub expires_at: u64,
}

/// Body of `POST /api/v1/buy`. Its strings borrow from the request body (they are copied
/// only for a purchase that goes on to Redis).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuyRequest<'a> {
    /// The product.
    pub product_id: u64,
    /// The buyer.
    #[serde(borrow)]
    pub user_id: Cow<'a, str>,
    /// Units, 1..=[`MAX_QUANTITY`].
    pub quantity: u32,
    /// The buyer's token for the product's activity.
    #[serde(borrow)]
    pub token: Cow<'a, str>,
}

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

fn check_user(user: &str) -> Result<(), ApiError> {
    validate_user_id(user).map_err(|e| ApiError::bad_request(e.to_string()))
}

/// `POST /api/v1/token`: the user's token for a preheated, unended activity (the existing
/// one when already registered).
pub async fn token(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<TokenRequest>,
) -> Result<Json<TokenResponse>, ApiError> {
    check_user(&req.user_id)?;
    if !state.limits.allow_token_request(&req.user_id) {
        state.stats.rate_limited.increment(1);
        return Err(ApiError::too_many_requests());
    }
    if !state.breaker.admit() {
        state.stats.busy(BusyReason::Breaker);
        return Err(ApiError::busy("redis unavailable, retry shortly"));
    }
    let gate = token::gate(&state.redis, req.activity_id).await;
    let issued = match gate {
        Ok(Gate::Open) => {
            let users = [req.user_id.clone()];
            token::register(
                &state.redis,
                &state.signer,
                req.activity_id,
                &users,
                state.config.token.ttl_secs,
                |_| {},
            )
            .await
        }
        Ok(Gate::NotPreheated) => {
            state.breaker.success();
            return Err(ApiError::not_found(format!(
                "activity {} is not on sale",
                req.activity_id
            )));
        }
        Ok(Gate::Ended) => {
            state.breaker.success();
            return Err(ApiError::from_outcome(Outcome::Ended));
        }
        Err(e) => Err(e),
    };
    match issued {
        Ok(mut issued) if !issued.is_empty() => {
            state.breaker.success();
            let t = issued.swap_remove(0);
            tracing::debug!(activity = req.activity_id, user = %req.user_id, "token issued");
            Ok(Json(TokenResponse {
                token: t.token,
                expires_at: t.expires_at,
            }))
        }
        Ok(_) => Err(ApiError::busy("no token issued")),
        Err(e) => {
            state.breaker.failure();
            state.stats.busy(BusyReason::Redis);
            tracing::warn!(activity = req.activity_id, user = %req.user_id, error = %e, "token: redis failed");
            Err(ApiError::busy("redis unavailable, retry shortly"))
        }
    }
}

/// `POST /api/v1/buy` as a route of the [`Router`](super::router) (served through
/// [`super::hot_path`], which calls [`answer_buy`] without the router).
pub async fn buy(State(state): State<AppState>, JsonBody(body): JsonBody) -> Result<Json<BuyResponse>, ApiError> {
    answer_buy(&state, &body).await
}

/// The answer to a buy request with body `body`: runs the funnel, then decides the purchase
/// in Redis (group commit).
pub async fn answer_buy(state: &AppState, body: &[u8]) -> Result<Json<BuyResponse>, ApiError> {
    let req = super::buy_body::parse(body)?;
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
            decide(state, &mut purchase, &mut activity).await
        }
    };
    // The token never appears in logs: it is a bearer credential.
    let (product, user) = (req.product_id, &*req.user_id);
    match &result {
        Ok(ok) => {
            tracing::debug!(activity, product, user, order_no = %ok.order_no, remaining = ok.remaining, "buy: queued")
        }
        Err(e) => tracing::debug!(activity, product, user, code = e.code, "buy: refused"),
    }
    result.map(Json)
}

/// The checks that need neither Redis nor a copy of the request: its values, and layer 1 of
/// the funnel, the local sold-out cache. `activity` is filled in when the product is known.
fn screen(state: &AppState, req: &BuyRequest<'_>, activity: &mut Option<u64>) -> Result<(), ApiError> {
    check_user(&req.user_id)?;
    if req.quantity == 0 || req.quantity > MAX_QUANTITY {
        return Err(ApiError::bad_request(format!("quantity must be 1..={MAX_QUANTITY}")));
    }
    if req.token.is_empty() || req.token.len() > MAX_TOKEN_LEN {
        return Err(ApiError::invalid_token());
    }
    if let Some(sold_out_in) = state.catalog.sold_out_activity(req.product_id) {
        *activity = Some(sold_out_in);
        state.stats.sold_out_cache_hits.increment(1);
        return Err(ApiError::from_outcome(Outcome::SoldOut));
    }
    Ok(())
}

/// The rest of the funnel and the decision, for a request [`screen`] let through.
/// `activity` is filled in once the product is resolved.
async fn decide(
    state: &AppState,
    purchase: &mut Purchase,
    activity: &mut Option<u64>,
) -> Result<BuyResponse, ApiError> {
    let stats = &state.stats;
    let known = state.catalog.get(purchase.product_id);
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
        None => resolve(state, purchase.product_id, &purchase.user_id).await?,
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
    if !state.breaker.admit() {
        stats.busy(BusyReason::Breaker);
        return Err(ApiError::busy("redis unavailable, retry shortly"));
    }
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
async fn resolve(state: &AppState, product: u64, user: &str) -> Result<std::sync::Arc<ProductSlot>, ApiError> {
    if !state.breaker.admit() {
        state.stats.busy(BusyReason::Breaker);
        return Err(ApiError::busy("redis unavailable, retry shortly"));
    }
    let mut conn = state.redis.conn();
    let looked_up = tokio::time::timeout(
        state.config.redis_response_timeout(),
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
        Ok(Err(e)) => {
            state.breaker.failure();
            state.stats.busy(BusyReason::Redis);
            tracing::warn!(product, user, error = %e, "buy: product lookup failed");
            Err(ApiError::busy("redis unavailable, retry shortly"))
        }
        Err(_) => {
            state.breaker.failure();
            state.stats.busy(BusyReason::Redis);
            tracing::warn!(product, user, "buy: product lookup timed out");
            Err(ApiError::busy("redis unavailable, retry shortly"))
        }
    }
}
