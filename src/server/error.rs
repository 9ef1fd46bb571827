//! The one error shape of the HTTP API: a non-2xx status and `{"error": CODE, "message": text}`,
//! including for axum's own rejections (bad JSON, too large, wrong route or method).

use std::borrow::Cow;
use std::future::Future;
use std::task::Poll;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::{Body as _, Frame};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::connections::CutReason;
use super::AppState;
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
        super::metrics::set_result_code(self.code);
        match self.body {
            Some(body) => {
                let mut response = Response::new(Body::from(body));
                *response.status_mut() = self.status;
                response
                    .headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
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

/// A JSON request body, like `axum::Json`, but every rejection (content type, size, syntax,
/// types, unknown fields) becomes our `bad_request`. See [`JsonBody`] and [`parse_json`].
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let JsonBody(body) = JsonBody::from_request(req, state).await?;
        parse_json(&body).map(ApiJson)
    }
}

/// The raw body of a JSON request: the content type checked, the size limit applied, not yet
/// parsed. A handler parses it with [`parse_json`] into a type that borrows its strings from
/// the body, so a request refused early (sold out) costs no string copies.
pub struct JsonBody(pub Bytes);

impl FromRequest<AppState> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers()) {
            return Err(ApiError::bad_request("expected Content-Type: application/json"));
        }
        let http = &state.config.http;
        match read_body(req.into_body(), http.max_body_bytes, http.body_read_timeout()).await {
            Ok(body) => Ok(JsonBody(body)),
            Err(BodyFault::TooSlow) => {
                state.stats.connection_cut(CutReason::BodyTimeout);
                Err(ApiError::bad_request(format!(
                    "request body not received within http.body_read_timeout_ms ({} ms)",
                    http.body_read_timeout_ms
                )))
            }
            Err(BodyFault::TooLarge) => Err(ApiError::bad_request("request body too large or unreadable")),
        }
    }
}

/// Why a request body was not read.
enum BodyFault {
    /// Over the size limit, or broken off by the client.
    TooLarge,
    /// Not complete within the body-read timeout (the connection is closed after the answer,
    /// since the rest of the body is never read).
    TooSlow,
}

/// The whole body, unless it is over `limit` bytes, fails to arrive, or is not complete
/// within `patience` of the first wait for it. A body that arrives in one frame (nearly every
/// request) is handed on as that frame, not copied, and costs no timer.
async fn read_body(mut body: Body, limit: usize, patience: Duration) -> Result<Bytes, BodyFault> {
    if body.size_hint().lower() > limit as u64 {
        return Err(BodyFault::TooLarge);
    }
    let mut first = Bytes::new();
    let mut joined: Option<BytesMut> = None;
    let mut total = 0usize;
    let mut deadline = None;
    while !body.is_end_stream() {
        let Some(frame) = next_frame(&mut body, &mut deadline, patience).await? else {
            break;
        };
        let Ok(data) = frame.map_err(|_| BodyFault::TooLarge)?.into_data() else {
            continue;
        };
        total += data.len();
        if total > limit {
            return Err(BodyFault::TooLarge);
        }
        match &mut joined {
            Some(all) => all.extend_from_slice(&data),
            None if first.is_empty() => first = data,
            None => {
                let mut all = BytesMut::with_capacity(total);
                all.extend_from_slice(&first);
                all.extend_from_slice(&data);
                joined = Some(all);
            }
        }
    }
    Ok(joined.map_or(first, BytesMut::freeze))
}

/// The body's next frame. One already received is taken without a timer; a wait is bounded
/// by `deadline`, set `patience` from the first wait of the body.
async fn next_frame(
    body: &mut Body,
    deadline: &mut Option<tokio::time::Instant>,
    patience: Duration,
) -> Result<Option<Result<Frame<Bytes>, axum::Error>>, BodyFault> {
    let mut frame = std::pin::pin!(body.frame());
    if let Poll::Ready(ready) = std::future::poll_fn(|cx| Poll::Ready(frame.as_mut().poll(cx))).await {
        return Ok(ready);
    }
    let deadline = *deadline.get_or_insert_with(|| tokio::time::Instant::now() + patience);
    tokio::time::timeout_at(deadline, frame)
        .await
        .map_err(|_| BodyFault::TooSlow)
}

/// Parses a JSON body; any failure is a `bad_request` naming the field at fault. Parsed
/// straight from the bytes; only a body that fails is parsed again to find that field, so
/// the hot path pays for neither the path tracking nor a MIME parse.
pub fn parse_json<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|_| {
        let why = match serde_path_to_error::deserialize::<_, T>(&mut serde_json::Deserializer::from_slice(body)) {
            Err(e) if e.path().iter().next().is_some() => {
                format!("invalid JSON body: {}: {}", e.path(), e.inner())
            }
            Err(e) => format!("invalid JSON body: {}", e.inner()),
            Ok(_) => "invalid JSON body".to_string(),
        };
        ApiError::bad_request(why)
    })
}

/// `application/json` or `application/<anything>+json`, parameters (charset) allowed.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return false;
    };
    // What nearly every client sends, settled without taking the value apart.
    if value.as_bytes().eq_ignore_ascii_case(b"application/json") {
        return true;
    }
    let Ok(value) = value.to_str() else { return false };
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
