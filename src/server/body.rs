//! Request bodies: reading them (content type, size limit, read timeout), parsing them with
//! every fault answered `bad_request`, and the body of `POST /api/v1/buy` with its fast path.
//!
//! The buy endpoint answers sold-out requests by the thousand, and reading its JSON is the
//! largest part of that answer, so the buy body has a reader of its own: a strict
//! fast path for the plain JSON object every buyer page sends, and serde_json for everything
//! else. The fast path accepts only what it is sure of: an object holding exactly the four
//! fields once each, whole non-negative numbers without leading zeros, strings, spaces wherever
//! JSON allows whitespace, and neither escapes nor control characters (tabs and newlines
//! included) anywhere. On any other body it gives up and serde_json decides: it accepts the
//! rest of JSON and writes the error message for bad input. So every body gets serde_json's
//! answer, which the tests check on random mutations. (`scripts/bench/README.md` has what
//! the fast path saves.)

use std::borrow::Cow;
use std::future::Future;
use std::task::Poll;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderMap};
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::{Body as _, Frame};
use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::connections::CutReason;
use super::error::ApiError;
use super::state::AppState;
use crate::user_id::validate as validate_user_id;

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

/// A valid user id, or a `bad_request` saying why not.
pub fn check_user_id(user: &str) -> Result<(), ApiError> {
    validate_user_id(user).map_err(|e| ApiError::bad_request(e.to_string()))
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
    /// Units (the buy handler takes 1..=`MAX_QUANTITY`).
    pub quantity: u32,
    /// The buyer's token for the product's activity.
    #[serde(borrow)]
    pub token: Cow<'a, str>,
}

/// The buy request in `body`: the fast path when it can, else [`parse_json`]; a `bad_request`
/// naming the fault when it is not a valid one.
pub fn parse_buy(body: &[u8]) -> Result<BuyRequest<'_>, ApiError> {
    match fast(body) {
        Some(request) => Ok(request),
        None => parse_json(body),
    }
}

/// The buy request when `body` is in the plain form described in the module docs; `None` when serde_json
/// must decide (which may still accept it).
fn fast(body: &[u8]) -> Option<BuyRequest<'_>> {
    // Checked once as a whole, so every string in it can be sliced out without a check of
    // its own (slices end at ASCII quotes, which are character boundaries).
    let text = std::str::from_utf8(body).ok()?;
    // No escapes and no control characters anywhere (so no string holds one, and whitespace
    // is spaces only). Folded over the whole body rather than searched: with no early exit,
    // the check runs on whole vectors.
    let plain = body.iter().fold(true, |ok, &b| ok & (b >= 0x20) & (b != b'\\'));
    if !plain {
        return None;
    }
    let mut r = Reader { text, body, at: 0 };
    let (mut product_id, mut user_id, mut quantity, mut token) = (None, None, None, None);
    r.expect(b'{')?;
    loop {
        let key = r.string()?;
        r.expect(b':')?;
        let fresh = match key {
            "product_id" => product_id.replace(r.number()?).is_none(),
            "quantity" => quantity.replace(u32::try_from(r.number()?).ok()?).is_none(),
            "user_id" => user_id.replace(r.string()?).is_none(),
            "token" => token.replace(r.string()?).is_none(),
            _ => false,
        };
        if !fresh {
            return None;
        }
        match r.next()? {
            b',' => continue,
            b'}' => break,
            _ => return None,
        }
    }
    r.skip_whitespace();
    if r.at != body.len() {
        return None;
    }
    Some(BuyRequest {
        product_id: product_id?,
        user_id: Cow::Borrowed(user_id?),
        quantity: quantity?,
        token: Cow::Borrowed(token?),
    })
}

struct Reader<'a> {
    text: &'a str,
    body: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn skip_whitespace(&mut self) {
        while let Some(b' ') = self.body.get(self.at) {
            self.at += 1;
        }
    }

    /// The next byte that is not whitespace, consumed.
    fn next(&mut self) -> Option<u8> {
        self.skip_whitespace();
        let byte = *self.body.get(self.at)?;
        self.at += 1;
        Some(byte)
    }

    fn expect(&mut self, byte: u8) -> Option<()> {
        (self.next()? == byte).then_some(())
    }

    /// A string (the body holds no escapes or control characters: see [`fast`]).
    fn string(&mut self) -> Option<&'a str> {
        self.expect(b'"')?;
        let start = self.at;
        let len = self.body[start..].iter().position(|&b| b == b'"')?;
        self.at = start + len + 1;
        self.text.get(start..start + len)
    }

    /// A whole number in 0..=u64::MAX, written without sign, fraction, exponent or leading zero.
    fn number(&mut self) -> Option<u64> {
        self.skip_whitespace();
        let digits = self.body[self.at..].iter().take_while(|b| b.is_ascii_digit()).count();
        let text = &self.body[self.at..self.at + digits];
        if digits == 0 || (digits > 1 && text[0] == b'0') {
            return None;
        }
        if let Some(b'.' | b'e' | b'E') = self.body.get(self.at + digits) {
            return None;
        }
        self.at += digits;
        text.iter()
            .try_fold(0u64, |n, &d| n.checked_mul(10)?.checked_add(u64::from(d - b'0')))
    }
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

    fn by_serde(body: &[u8]) -> Option<(u64, String, u32, String)> {
        parse_json::<BuyRequest<'_>>(body)
            .ok()
            .map(|r| (r.product_id, r.user_id.into_owned(), r.quantity, r.token.into_owned()))
    }

    fn by_fast(body: &[u8]) -> Option<(u64, String, u32, String)> {
        fast(body).map(|r| (r.product_id, r.user_id.into_owned(), r.quantity, r.token.into_owned()))
    }

    const PLAIN: &str = r#"{"product_id":7,"user_id":"u-1","quantity":2,"token":"1.abc_DEF-42"}"#;

    #[test]
    fn plain_bodies_take_the_fast_path() {
        let expected = Some((7, "u-1".to_string(), 2, "1.abc_DEF-42".to_string()));
        for body in [
            PLAIN,
            r#" { "token" : "1.abc_DEF-42" , "quantity":2,"user_id":"u-1", "product_id": 7 }  "#,
        ] {
            assert_eq!(by_fast(body.as_bytes()), expected, "{body}");
            assert_eq!(by_serde(body.as_bytes()), expected, "{body}");
        }
        // Other whitespace is serde_json's to read.
        let spread = "{\"product_id\":7,\t\"user_id\":\"u-1\",\r\n\"quantity\":2,\"token\":\"1.abc_DEF-42\"}\n";
        assert_eq!(by_fast(spread.as_bytes()), None);
        assert_eq!(parse_buy(spread.as_bytes()).map(|r| r.product_id).ok(), Some(7));
        let accented = r#"{"product_id":7,"user_id":"José","quantity":2,"token":"t"}"#;
        assert_eq!(by_fast(accented.as_bytes()), Some((7, "José".into(), 2, "t".into())));
        assert_eq!(by_fast(accented.as_bytes()), by_serde(accented.as_bytes()));
        let max = format!(
            r#"{{"product_id":{},"user_id":"u","quantity":{},"token":"t"}}"#,
            u64::MAX,
            u32::MAX
        );
        assert_eq!(
            by_fast(max.as_bytes()),
            Some((u64::MAX, "u".into(), u32::MAX, "t".into()))
        );
    }

    #[test]
    fn anything_else_is_left_to_serde() {
        for body in [
            r#"{"product_id":7,"user_id":"\u0075","quantity":2,"token":"t"}"#,
            r#"{"product_id":7,"user_id":"u","quantity":2,"token":"t","extra":1}"#,
            r#"{"product_id":7,"product_id":8,"user_id":"u","quantity":2,"token":"t"}"#,
            r#"{"product_id":7,"user_id":"u","quantity":2}"#,
            r#"{"product_id":07,"user_id":"u","quantity":2,"token":"t"}"#,
            r#"{"product_id":7.0,"user_id":"u","quantity":2,"token":"t"}"#,
            r#"{"product_id":7e0,"user_id":"u","quantity":2,"token":"t"}"#,
            r#"{"product_id":-7,"user_id":"u","quantity":2,"token":"t"}"#,
            r#"{"product_id":7,"user_id":"u","quantity":4294967296,"token":"t"}"#,
            r#"{"product_id":18446744073709551616,"user_id":"u","quantity":1,"token":"t"}"#,
            r#"{"product_id":7,"user_id":1,"quantity":2,"token":"t"}"#,
            r#"{"product_id":"7","user_id":"u","quantity":2,"token":"t"}"#,
            r#"{"product_id":7,"user_id":"u","quantity":2,"token":"t"} x"#,
            r#"{"product_id":7,"user_id":"u","quantity":2,"token":"t",}"#,
            r#"{"product_id":7,"user_id":"u","quantity":2,"token":"t""#,
            r#"[{"product_id":7,"user_id":"u","quantity":2,"token":"t"}]"#,
            "{\"product_id\":7,\"user_id\":\"u\u{1f}\",\"quantity\":2,\"token\":\"t\"}",
            "{}",
            "",
        ] {
            assert_eq!(by_fast(body.as_bytes()), None, "{body}");
        }
        let not_utf8 = b"{\"product_id\":7,\"user_id\":\"\xff\",\"quantity\":2,\"token\":\"t\"}";
        assert_eq!(by_fast(not_utf8), None);
        assert_eq!(by_serde(not_utf8), None);
    }

    /// Every byte-level mutation of plain bodies: wherever the fast path answers, serde_json
    /// answers the same; wherever serde_json refuses, so does the fast path.
    #[test]
    fn agrees_with_serde_on_mutations() {
        let seeds = [
            PLAIN.as_bytes().to_vec(),
            br#" {"quantity" :10, "token":"x", "product_id":0 ,"user_id":"9"} "#.to_vec(),
        ];
        let alphabet = b"{}[]\":,. -+0129eE\\uatx \t\n\r\x01\x7f\xc3\xa9";
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut random = |below: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % below as u64) as usize
        };
        let mut fast_answers = 0;
        for round in 0..20_000 {
            let mut body = seeds[round % seeds.len()].clone();
            for _ in 0..1 + random(3) {
                let at = random(body.len() + 1);
                match random(3) {
                    0 if at < body.len() => {
                        body.remove(at);
                    }
                    1 if at < body.len() => body[at] = alphabet[random(alphabet.len())],
                    _ => body.insert(at, alphabet[random(alphabet.len())]),
                }
            }
            let fast = by_fast(&body);
            if fast.is_some() {
                fast_answers += 1;
                assert_eq!(fast, by_serde(&body), "{}", String::from_utf8_lossy(&body));
            }
            assert_eq!(
                parse_buy(&body).is_ok(),
                by_serde(&body).is_some(),
                "{}",
                String::from_utf8_lossy(&body)
            );
        }
        assert!(
            fast_answers > 1_000,
            "the mutations should keep many bodies valid: {fast_answers}"
        );
    }
}
