//! `POST /api/v1/token`: a buyer's purchase token for an activity.

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::body::{check_user_id, ApiJson};
use super::client_addr::Client;
use super::error::ApiError;
use super::identity::Caller;
use super::state::{AppState, Subject};
use crate::buy::Outcome;
use crate::ops::token::{self, Gate};

/// Body of `POST /api/v1/token`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// The activity to buy in.
    pub activity_id: u64,
    /// The buyer; may be left out when the caller is authenticated (`auth.mode` jwt or
    /// gateway), and must then be the caller.
    #[serde(default)]
    pub user_id: Option<String>,
}

/// Answer of `POST /api/v1/token`.
#[derive(Debug, Serialize)]
pub struct TokenResponse {
    /// Present it with every purchase in the activity.
    pub token: String,
    /// Unix seconds after which it is refused.
    pub expires_at: u64,
}

/// `POST /api/v1/token`: the user's token for a preheated, unended activity (the existing
/// one when already registered), from `token.open_before_secs` before its start on
/// (`not_started` until then); `revoked` while the operator has the user revoked. With
/// `auth.mode` jwt or gateway, only to the authenticated caller, for themselves. Limited per
/// client address and per named user (`too_many_requests`).
pub async fn token(
    State(state): State<AppState>,
    caller: Caller,
    client: Client,
    ApiJson(req): ApiJson<TokenRequest>,
) -> Result<Json<TokenResponse>, ApiError> {
    let user_id = match (caller, req.user_id) {
        (Caller::User(me), None) => me,
        (caller, Some(named)) => {
            caller.may_act_as(&named)?;
            named
        }
        (Caller::Anyone, None) => return Err(ApiError::bad_request("missing field `user_id`")),
    };
    check_user_id(&user_id)?;
    if !state.limits.allow_token_request(&user_id, client.0) {
        tracing::debug!(activity = req.activity_id, user = %user_id, %client, "token: rate limited");
        state.stats.rate_limited.increment(1);
        return Err(ApiError::too_many_requests());
    }
    state.admit_redis()?;
    let gate = token::gate(&state.redis, req.activity_id).await;
    let issued = match gate {
        Ok(Gate::Open { starts_in_ms }) if !state.config.token.open_for(starts_in_ms) => {
            state.breaker.success();
            return Err(ApiError::from_outcome(Outcome::NotStarted));
        }
        Ok(Gate::Open { .. }) => {
            token::register_own(
                &state.redis,
                &state.signer,
                req.activity_id,
                &user_id,
                state.config.token.ttl_secs,
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
        Ok(Some(t)) => {
            state.breaker.success();
            tracing::debug!(activity = req.activity_id, user = %user_id, %client, "token issued");
            Ok(Json(TokenResponse {
                token: t.token,
                expires_at: t.expires_at,
            }))
        }
        Ok(None) => {
            state.breaker.success();
            Err(ApiError::revoked())
        }
        Err(e) => Err(state.redis_failed(
            "token: redis failed",
            &e,
            Subject {
                activity: Some(req.activity_id),
                product: None,
                user: &user_id,
            },
        )),
    }
}
