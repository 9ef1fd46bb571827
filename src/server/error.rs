//! The one error shape of the HTTP API: a non-2xx status and `{"error": CODE, "message": text}`,
//! including for axum's own rejections (bad JSON, too large, wrong route or method).

use std::borrow::Cow;

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
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
}

#[derive(Serialize)]
struct Body<'a> {
    error: &'a str,
    message: &'a str,
}

impl ApiError {
    /// An error with an explicit status and code.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        ApiError { status, code, message: message.into() }
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
        Self::new(StatusCode::TOO_MANY_REQUESTS, "too_many_requests", "rate limit exceeded, slow down")
    }

    /// `invalid_token` (401).
    pub fn invalid_token() -> Self {
        Self::from_outcome(Outcome::InvalidToken)
    }

    /// The answer to a purchase refused by `reserve.lua` (never [`Outcome::Ok`]).
    pub fn from_outcome(outcome: Outcome) -> Self {
        let (status, message) = match outcome {
            Outcome::Ok => (StatusCode::INTERNAL_SERVER_ERROR, "not an error"),
            Outcome::NotFound => (StatusCode::NOT_FOUND, "no such product on sale"),
            Outcome::NotStarted => (StatusCode::FORBIDDEN, "the sale has not started"),
            Outcome::Paused => (StatusCode::FORBIDDEN, "the sale is paused"),
            Outcome::Ended => (StatusCode::FORBIDDEN, "the sale has ended"),
            Outcome::Blacklisted => (StatusCode::FORBIDDEN, "this user may not buy"),
            Outcome::InvalidToken => (StatusCode::UNAUTHORIZED, "missing, invalid, expired or revoked token"),
            Outcome::BadRequest => (StatusCode::BAD_REQUEST, "invalid quantity"),
            Outcome::LimitExceeded => (StatusCode::CONFLICT, "over the per-order or per-user limit"),
            Outcome::SoldOut => (StatusCode::CONFLICT, "sold out"),
        };
        Self::new(status, outcome.code(), message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(Body { error: self.code, message: &self.message })).into_response();
        response.extensions_mut().insert(super::metrics::ResultCode(self.code));
        response
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
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "method not allowed on this endpoint")
}
