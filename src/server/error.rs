//! The one error shape of the HTTP API: a non-2xx status and `{"error": CODE, "message": text}`,
//! including for axum's own rejections (bad JSON, too large, wrong route or method).

use std::borrow::Cow;

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use super::metrics::set_result_code;
use crate::buy::Outcome;

/// A failed request.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code.
    pub code: &'static str,
    /// For people.
    pub message: Cow<'static, str>,
    /// The order concerned, for answers about a reservation that exists (`unconfirmed`).
    pub order_no: Option<String>,
    // The JSON body, when known at compile time (refusals answered by the thousand, such as
    // sold out or rate limited, then cost no serialization).
    body: Option<&'static str>,
}

/// `{"error": CODE, "message": MESSAGE}` as a string literal (neither may need escaping).
macro_rules! static_body {
    ($code:literal, $message:literal) => {
        concat!("{\"error\":\"", $code, "\",\"message\":\"", $message, "\"}")
    };
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    order_no: Option<&'a str>,
}

impl ApiError {
    /// An error with an explicit status and code.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            order_no: None,
            body: None,
        }
    }

    /// `bad_request` (400).
    pub fn bad_request(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// `not_found` (404).
    pub fn not_found(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// `busy` (503): shed load, or Redis/MySQL unavailable; retry later.
    pub fn busy(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "busy", message)
    }

    /// `busy` (503) because Redis failed, timed out, or is held off by the circuit breaker.
    pub fn redis_unavailable() -> Self {
        Self::busy("redis unavailable, retry shortly")
    }

    /// `busy` (503) because MySQL failed.
    pub fn database_unavailable() -> Self {
        Self::busy("database unavailable, retry shortly")
    }

    /// `unknown_outcome` (503): the purchase was sent to Redis but no verdict came back in
    /// time, so it may or may not have been made. Unlike `busy`, retrying blindly may buy
    /// again: the buyer looks the activity's orders up first.
    pub fn unknown_outcome(activity: u64) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unknown_outcome",
            format!(
                "no verdict in time: the purchase may or may not have been made; before buying again, \
                 look it up with GET /api/v1/orders?activity_id={activity}&user_id=... and your token"
            ),
        )
    }

    /// `unconfirmed` (503): reserved on the primary (`order_no`), but not acknowledged by
    /// `redis.wait_replicas` replicas in time, so a failover now could lose it. The buyer looks
    /// it up with `GET /api/v1/orders/{order_no}` before buying again.
    pub fn unconfirmed(order_no: String) -> Self {
        let mut error = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unconfirmed",
            format!(
                "reserved, but not yet safe from a Redis failover; look it up with GET /api/v1/orders/{order_no} \
                 before buying again"
            ),
        );
        error.order_no = Some(order_no);
        error
    }

    /// `degraded` (503): the operator switched the activity's buys off for now
    /// (`seckill degrade`); `message` is theirs.
    pub fn degraded(message: &str) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "degraded", message.to_string())
    }

    /// `too_many_requests` (429).
    pub fn too_many_requests() -> Self {
        let body = static_body!("too_many_requests", "rate limit exceeded, slow down");
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_requests",
            "rate limit exceeded, slow down",
        )
        .with_body(body)
    }

    fn with_body(mut self, body: &'static str) -> Self {
        self.body = Some(body);
        self
    }

    /// `unauthenticated` (401): the buyer's credentials (JWT, or the gateway's header) are
    /// missing or not believed.
    pub fn unauthenticated() -> Self {
        let body = static_body!("unauthenticated", "missing, invalid or expired credentials");
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "missing, invalid or expired credentials",
        )
        .with_body(body)
    }

    /// `forbidden` (403): the authenticated buyer asked to act as another user.
    pub fn forbidden() -> Self {
        let body = static_body!("forbidden", "you may act only as yourself");
        Self::new(StatusCode::FORBIDDEN, "forbidden", "you may act only as yourself").with_body(body)
    }

    /// `revoked` (403): the operator revoked the user's token; no new one until they lift it.
    pub fn revoked() -> Self {
        let body = static_body!(
            "revoked",
            "your token was revoked; none is issued until the operator lifts it"
        );
        Self::new(
            StatusCode::FORBIDDEN,
            "revoked",
            "your token was revoked; none is issued until the operator lifts it",
        )
        .with_body(body)
    }

    /// `invalid_token` (401).
    pub fn invalid_token() -> Self {
        Self::from_outcome(Outcome::InvalidToken)
    }

    /// The answer to a purchase refused by `reserve.lua` (never [`Outcome::Ok`]).
    pub fn from_outcome(outcome: Outcome) -> Self {
        macro_rules! refusal {
            ($status:ident, $code:literal, $message:literal) => {
                ApiError::new(StatusCode::$status, $code, $message).with_body(static_body!($code, $message))
            };
        }
        let error = match outcome {
            Outcome::Ok => refusal!(INTERNAL_SERVER_ERROR, "ok", "not an error"),
            // Buyers see `busy` (retry later), as for any other outage; metrics and logs
            // keep the outcome's own name.
            Outcome::Suspended => refusal!(
                SERVICE_UNAVAILABLE,
                "busy",
                "the sale is suspended while its stock is being restored; retry later"
            ),
            Outcome::NotFound => refusal!(NOT_FOUND, "not_found", "no such product on sale"),
            Outcome::NotStarted => refusal!(FORBIDDEN, "not_started", "the sale has not started"),
            Outcome::Paused => refusal!(FORBIDDEN, "paused", "the sale is paused"),
            Outcome::Ended => refusal!(FORBIDDEN, "ended", "the sale has ended"),
            Outcome::Blacklisted => refusal!(FORBIDDEN, "blacklisted", "this user may not buy"),
            Outcome::InvalidToken => refusal!(
                UNAUTHORIZED,
                "invalid_token",
                "missing, invalid, expired or revoked token"
            ),
            Outcome::BadRequest => refusal!(BAD_REQUEST, "bad_request", "invalid quantity"),
            Outcome::LimitExceeded => refusal!(CONFLICT, "limit_exceeded", "over the per-order or per-user limit"),
            Outcome::SoldOut => refusal!(CONFLICT, "sold_out", "sold out"),
        };
        debug_assert!(error.code == outcome.code() || outcome == Outcome::Suspended);
        error
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        set_result_code(self.code);
        match self.body {
            Some(body) => {
                let mut response = json_response(body);
                *response.status_mut() = self.status;
                response
            }
            None => (
                self.status,
                Json(ErrorBody {
                    error: self.code,
                    message: &self.message,
                    order_no: self.order_no.as_deref(),
                }),
            )
                .into_response(),
        }
    }
}

/// A 200 response with `body`, JSON already written, as `Json` would send it: for the answers
/// written ahead (refusals) or by hand (an accepted buy), which skip serde's writer.
pub fn json_response(body: impl Into<Body>) -> Response {
    let mut response = Response::new(body.into());
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// Fallback for unknown routes.
pub async fn no_route() -> ApiError {
    ApiError::not_found("no such endpoint")
}

/// Fallback for a known route with the wrong method.
pub async fn wrong_method() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this endpoint",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_bodies_are_what_serde_would_write() {
        for e in Outcome::REFUSALS
            .into_iter()
            .map(ApiError::from_outcome)
            .chain([ApiError::too_many_requests()])
        {
            let expected = serde_json::to_string(&ErrorBody {
                error: e.code,
                message: &e.message,
                order_no: None,
            })
            .unwrap();
            assert_eq!(e.body, Some(expected.as_str()));
        }
    }
}
