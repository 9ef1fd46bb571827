//! The one error shape of the HTTP API: a non-2xx status and `{"error": CODE, "message": text}`,
//! including for axum's own rejections (bad JSON, too large, wrong route or method).

use std::borrow::Cow;

use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
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

/// A JSON request body, like `axum::Json`, but every rejection (content type, size, syntax,
/// types, unknown fields) becomes our `bad_request`. Parsed straight from the buffered body;
/// only a body that fails is parsed again to name the field at fault, so the hot path pays
/// for neither the path tracking nor a MIME parse.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers()) {
            return Err(ApiError::bad_request("expected Content-Type: application/json"));
        }
        let body = Bytes::from_request(req, state)
            .await
            .map_err(|_| ApiError::bad_request("request body too large or unreadable"))?;
        match serde_json::from_slice(&body) {
            Ok(value) => Ok(ApiJson(value)),
            Err(_) => {
                let why =
                    match serde_path_to_error::deserialize::<_, T>(&mut serde_json::Deserializer::from_slice(&body)) {
                        Err(e) if e.path().iter().next().is_some() => {
                            format!("invalid JSON body: {}: {}", e.path(), e.inner())
                        }
                        Err(e) => format!("invalid JSON body: {}", e.inner()),
                        Ok(_) => "invalid JSON body".to_string(),
                    };
                Err(ApiError::bad_request(why))
            }
        }
    }
}

/// `application/json` or `application/<anything>+json`, parameters (charset) allowed.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or("").trim();
    let Some((kind, subtype)) = essence.split_once('/') else {
        return false;
    };
    kind.eq_ignore_ascii_case("application")
        && (subtype.eq_ignore_ascii_case("json")
            || subtype.len() > 5 && subtype[subtype.len() - 5..].eq_ignore_ascii_case("+json"))
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
    fn json_content_types() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, v.parse().unwrap());
            is_json(&h)
        };
        for ok in [
            "application/json",
            "Application/JSON; charset=utf-8",
            "application/problem+json",
        ] {
            assert!(with(ok), "{ok}");
        }
        for bad in [
            "text/plain",
            "application/jsonx",
            "application/+json",
            "json",
            "application/x-www-form-urlencoded",
        ] {
            assert!(!with(bad), "{bad}");
        }
        assert!(!is_json(&HeaderMap::new()));
    }

    #[test]
    fn static_bodies_are_what_serde_would_write() {
        for e in Outcome::REFUSALS
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
