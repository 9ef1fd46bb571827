//! The one error shape of the HTTP API: a non-2xx status and `{"error": CODE, "message": text}`,
//! including for axum's own rejections (bad JSON, too large, wrong route or method).

use std::borrow::Cow;

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use serde::Serialize;

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
struct Body<'a> {
    error: &'a str,
    message: &'a str,
}

impl ApiError {
    /// An error with an explicit status and code.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
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
        debug_assert_eq!(error.code, outcome.code());
        error
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        super::metrics::set_result_code(self.code);
        match self.body {
            Some(body) => (self.status, [(header::CONTENT_TYPE, "application/json")], body).into_response(),
            None => (
                self.status,
                Json(Body {
                    error: self.code,
                    message: &self.message,
                }),
            )
                .into_response(),
        }
    }
}

/// `axum::Json`, but every rejection (syntax, types, unknown fields, content type, size)
/// becomes our `bad_request`.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(ApiError::bad_request(match &rejection {
                JsonRejection::BytesRejection(_) => "request body too large or unreadable".to_string(),
                other => other.body_text(),
            })),
        }
    }
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
        let outcomes = [
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
        for e in outcomes
            .into_iter()
            .map(ApiError::from_outcome)
            .chain([ApiError::too_many_requests()])
        {
            let expected = serde_json::to_string(&Body {
                error: e.code,
                message: &e.message,
            })
            .unwrap();
            assert_eq!(e.body, Some(expected.as_str()));
        }
    }
}
