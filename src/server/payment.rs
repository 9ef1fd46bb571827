//! `POST /api/v1/payments/callback`: the payment provider reports a payment.
//!
//! The provider signs the raw body with `payment.webhook_secret`
//! (`X-Seckill-Signature: sha256=<hex HMAC-SHA256>`), so the body is checked as bytes before it
//! is parsed. [`order::settle`] decides under the order's row lock; every refusal the provider
//! must refund is a 409 with its own code.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use hmac::{Hmac, Mac};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::body::{parse_json, JsonBody};
use super::error::ApiError;
use super::state::AppState;
use crate::ops::order::{self, PaymentNotice, Settlement};

/// The header carrying the body's signature.
pub const SIGNATURE_HEADER: &str = "x-seckill-signature";
/// Longest order number MySQL stores (`orders.order_no`).
const MAX_ORDER_NO: usize = 48;
/// Longest transaction id MySQL stores (`orders.transaction_id`).
const MAX_TRANSACTION_ID: usize = 128;

/// Body of the callback.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallbackRequest {
    /// The order paid for.
    pub order_no: String,
    /// What was paid, a decimal string with at most two places (`"9.90"`).
    pub amount: String,
    /// The provider's id of the payment.
    pub transaction_id: String,
}

/// Answer of an accepted callback.
#[derive(Debug, Serialize)]
pub struct CallbackAnswer {
    /// The order.
    pub order_no: String,
    /// Always `paid`.
    pub status: &'static str,
    /// The transaction that paid it.
    pub transaction_id: String,
    /// The order was already paid by this transaction (a repeated callback).
    pub duplicate: bool,
}

/// `POST /api/v1/payments/callback`.
pub async fn callback(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<JsonBody, ApiError>,
) -> Result<Json<CallbackAnswer>, ApiError> {
    let secret = state.config.payment.webhook_secret.as_bytes();
    if secret.is_empty() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "disabled",
            "payment callbacks are off: payment.webhook_secret is not set",
        ));
    }
    let JsonBody(body) = body?;
    verify_signature(secret, &headers, &body)?;
    let request: CallbackRequest = parse_json(&body)?;
    let notice = notice(request)?;
    let settlement = order::settle(&state.db, &notice).await.map_err(|e| {
        tracing::warn!(order_no = %notice.order_no, error = %e, "payment callback: mysql failed");
        ApiError::database_unavailable()
    })?;
    tracing::info!(
        order_no = %notice.order_no,
        transaction_id = %notice.transaction_id,
        amount = %notice.amount,
        outcome = settlement.as_str(),
        "payment callback"
    );
    let conflict = |code, message: String| ApiError::new(StatusCode::CONFLICT, code, message);
    let no = &notice.order_no;
    match settlement {
        Settlement::Paid | Settlement::AlreadyPaid => Ok(Json(CallbackAnswer {
            duplicate: settlement == Settlement::AlreadyPaid,
            order_no: notice.order_no,
            status: "paid",
            transaction_id: notice.transaction_id,
        })),
        Settlement::UnknownOrder => Err(ApiError::not_found(format!("no order {no}"))),
        Settlement::AmountMismatch { expected } => Err(conflict(
            "amount_mismatch",
            format!(
                "order {no} costs {expected}, not {}; nothing changed, refund it",
                notice.amount
            ),
        )),
        Settlement::TooLate(status) => Err(conflict(
            settlement.as_str(),
            format!("order {no} was {status} before the payment arrived; refund it"),
        )),
        Settlement::PaidByOther => Err(conflict(
            "paid_by_other",
            format!("order {no} is already paid by another transaction; refund this one"),
        )),
        Settlement::TransactionReused => Err(conflict(
            "transaction_reused",
            format!("transaction {} already paid another order", notice.transaction_id),
        )),
    }
}

/// Checks `X-Seckill-Signature: sha256=<hex>` against the HMAC-SHA256 of `body`, in constant
/// time; any fault is 401 `bad_signature`.
fn verify_signature(secret: &[u8], headers: &HeaderMap, body: &[u8]) -> Result<(), ApiError> {
    let refused = || {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "bad_signature",
            "missing or wrong X-Seckill-Signature (expected sha256=<hex HMAC-SHA256 of the body>)",
        )
    };
    let tag = headers
        .get(SIGNATURE_HEADER)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("sha256="))
        .and_then(decode_hex)
        .ok_or_else(refused)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(body);
    mac.verify_slice(&tag).map_err(|_| refused())
}

/// The bytes of a hex string (either case); `None` if it is not one.
fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16);
    text.as_bytes()
        .chunks(2)
        .map(|pair| Some((digit(pair[0])? * 16 + digit(pair[1])?) as u8))
        .collect()
}

/// The request as a [`PaymentNotice`], or `bad_request` naming the field at fault.
fn notice(request: CallbackRequest) -> Result<PaymentNotice, ApiError> {
    if request.order_no.is_empty() || request.order_no.len() > MAX_ORDER_NO {
        return Err(ApiError::bad_request(format!(
            "order_no: must be 1 to {MAX_ORDER_NO} bytes"
        )));
    }
    if request.transaction_id.is_empty() || request.transaction_id.len() > MAX_TRANSACTION_ID {
        return Err(ApiError::bad_request(format!(
            "transaction_id: must be 1 to {MAX_TRANSACTION_ID} bytes"
        )));
    }
    let amount = request
        .amount
        .parse::<Decimal>()
        .ok()
        .filter(|a| !a.is_sign_negative() && a.scale() <= 2 && *a < Decimal::from(1_000_000_000_000i64))
        .ok_or_else(|| {
            ApiError::bad_request("amount: must be a non-negative decimal string with at most 2 places, e.g. \"9.90\"")
        })?;
    Ok(PaymentNotice {
        order_no: request.order_no,
        amount,
        transaction_id: request.transaction_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_decodes_both_cases_and_refuses_the_rest() {
        assert_eq!(decode_hex("00ffAB"), Some(vec![0, 255, 171]));
        assert_eq!(decode_hex(""), Some(vec![]));
        assert_eq!(decode_hex("abc"), None);
        assert_eq!(decode_hex("zz"), None);
        assert_eq!(decode_hex("+1"), None);
    }
}
