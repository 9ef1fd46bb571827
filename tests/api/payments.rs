//! `POST /api/v1/payments/callback`: the payment provider's signed report of a payment, against
//! a real server, MariaDB and Redis.

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sha2::Sha256;

use crate::helpers::{assert_error, phone, users, TestApp};

const WEBHOOK_SECRET: &str = "provider-webhook-secret-0123456789";
const CALLBACK: &str = "/api/v1/payments/callback";
/// The phone's price: each test order is one unit.
const PRICE: &str = "19.99";

/// A served sale with `orders` pending orders (one unit each) in MySQL and callbacks enabled.
async fn sale_with_orders(
    orders: usize,
    tune: impl FnOnce(&mut seckill::config::Config) + Send + 'static,
) -> (TestApp, Vec<String>) {
    let app = TestApp::builder()
        .pipeline()
        .tune(|c| {
            c.payment.webhook_secret = WEBHOOK_SECRET.into();
            tune(c);
        })
        .sale(vec![phone(orders as u32, 1)])
        .serve()
        .build()
        .await;
    let order_nos = app.reserve(users("payer", orders), 1).await;
    app.drain().await;
    assert_eq!(app.orders().await, orders as i64);
    (app, order_nos)
}

fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    let tag = mac.finalize().into_bytes();
    format!("sha256={}", tag.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// Posts `body` as the callback with the `signature` header value (none: no header).
async fn post_signed(app: &TestApp, body: &[u8], signature: Option<&str>) -> (StatusCode, Value) {
    let mut req = app
        .http
        .post(format!("{}{CALLBACK}", app.base))
        .header("content-type", "application/json")
        .body(body.to_vec());
    if let Some(signature) = signature {
        req = req.header("X-Seckill-Signature", signature);
    }
    let res = req.send().await.expect("http");
    let status = res.status();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// The provider's callback for `order_no`, correctly signed.
async fn callback(app: &TestApp, order_no: &str, amount: &str, transaction_id: &str) -> (StatusCode, Value) {
    let body = json!({"order_no": order_no, "amount": amount, "transaction_id": transaction_id}).to_string();
    post_signed(app, body.as_bytes(), Some(&signature(WEBHOOK_SECRET, body.as_bytes()))).await
}

/// Status and transaction id of an order.
async fn order_row(app: &TestApp, order_no: &str) -> (String, Option<String>) {
    sqlx::query_as("SELECT status, transaction_id FROM orders WHERE order_no = ?")
        .bind(order_no)
        .fetch_one(app.db.pool())
        .await
        .unwrap()
}

/// `(order_no, transaction_id, amount, outcome)` of every recorded callback, oldest first.
async fn events(app: &TestApp) -> Vec<(String, String, String, String)> {
    sqlx::query_as("SELECT order_no, transaction_id, CAST(amount AS CHAR), outcome FROM payment_events ORDER BY id")
        .fetch_all(app.db.pool())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_wrong_signature_is_refused_and_changes_nothing() {
    let (app, orders) = sale_with_orders(1, |_| {}).await;
    let body = json!({"order_no": orders[0], "amount": PRICE, "transaction_id": "tx-1"}).to_string();
    let good = signature(WEBHOOK_SECRET, body.as_bytes());
    let tampered = body.replace(PRICE, "0.01");
    let forged = [
        None,
        Some(signature("another-secret-entirely-0123456789", body.as_bytes())),
        Some(good.trim_start_matches("sha256=").to_string()),
        Some(format!("sha256={}", &good[7..good.len() - 2])),
        Some("sha256=zz".to_string()),
        Some(good.to_uppercase()),
    ];
    for signature in &forged {
        let answer = post_signed(&app, body.as_bytes(), signature.as_deref()).await;
        assert_error(&answer, 401, "bad_signature");
    }
    // The signature of the original body does not cover a changed one.
    assert_error(
        &post_signed(&app, tampered.as_bytes(), Some(&good)).await,
        401,
        "bad_signature",
    );
    assert_eq!(order_row(&app, &orders[0]).await, ("pending".to_string(), None));
    assert!(events(&app).await.is_empty());
    // The same body correctly signed (hex in either case) is accepted.
    let upper_hex = format!("sha256={}", good[7..].to_uppercase());
    let (status, _) = post_signed(&app, body.as_bytes(), Some(&upper_hex)).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_callback_twice_pays_once_and_answers_200_both_times() {
    let (app, orders) = sale_with_orders(2, |_| {}).await;
    let (first, second) = (&orders[0], &orders[1]);
    let (status, answer) = callback(&app, first, PRICE, "tx-1").await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["status"], "paid");
    assert_eq!(answer["duplicate"], false);
    let paid_at: String = sqlx::query_scalar("SELECT CAST(updated_at AS CHAR) FROM orders WHERE order_no = ?")
        .bind(first)
        .fetch_one(app.db.pool())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let (status, answer) = callback(&app, first, PRICE, "tx-1").await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["duplicate"], true);
    let still: String = sqlx::query_scalar("SELECT CAST(updated_at AS CHAR) FROM orders WHERE order_no = ?")
        .bind(first)
        .fetch_one(app.db.pool())
        .await
        .unwrap();
    assert_eq!(still, paid_at, "the repeated callback must not touch the order row");
    assert_eq!(
        order_row(&app, first).await,
        ("paid".to_string(), Some("tx-1".to_string()))
    );

    // Sent twice at once: one pays, the other finds it paid.
    let (a, b) = tokio::join!(
        callback(&app, second, PRICE, "tx-2"),
        callback(&app, second, PRICE, "tx-2")
    );
    assert_eq!((a.0, b.0), (StatusCode::OK, StatusCode::OK), "{a:?} {b:?}");
    let outcomes: Vec<String> = events(&app).await.into_iter().map(|e| e.3).collect();
    assert_eq!(outcomes.iter().filter(|o| *o == "paid").count(), 2, "{outcomes:?}");
    assert_eq!(outcomes.iter().filter(|o| *o == "duplicate").count(), 2, "{outcomes:?}");
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM orders WHERE activity_id = ? AND status = 'paid'")
            .await,
        2
    );

    // Another transaction for a paid order must be refunded; nothing changes.
    let answer = callback(&app, first, PRICE, "tx-other").await;
    assert_error(&answer, 409, "paid_by_other");
    assert_eq!(
        order_row(&app, first).await,
        ("paid".to_string(), Some("tx-1".to_string()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_amount_is_refused_and_recorded() {
    let (app, orders) = sale_with_orders(1, |_| {}).await;
    let answer = callback(&app, &orders[0], "9.90", "tx-short").await;
    assert_error(&answer, 409, "amount_mismatch");
    assert_eq!(order_row(&app, &orders[0]).await, ("pending".to_string(), None));
    assert_eq!(
        events(&app).await,
        vec![(
            orders[0].clone(),
            "tx-short".into(),
            "9.90".into(),
            "amount_mismatch".into()
        )]
    );
    // Amounts have at most two places (the column's); the right amount then pays it.
    let (status, answer) = callback(&app, &orders[0], "19.990", "tx-right").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "three places are refused: {answer}");
    let (status, answer) = callback(&app, &orders[0], PRICE, "tx-right").await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        order_row(&app, &orders[0]).await,
        ("paid".to_string(), Some("tx-right".to_string()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_orders_cancelled_orders_and_reused_transactions_are_refused() {
    let (app, orders) = sale_with_orders(3, |_| {}).await;
    assert_error(&callback(&app, "999-0-0", PRICE, "tx-x").await, 404, "not_found");

    seckill::ops::order::cancel(&app.db, &app.redis, &orders[0])
        .await
        .unwrap();
    assert_error(&callback(&app, &orders[0], PRICE, "tx-late").await, 409, "cancelled");
    assert_eq!(order_row(&app, &orders[0]).await, ("cancelled".to_string(), None));

    let (status, _) = callback(&app, &orders[1], PRICE, "tx-once").await;
    assert_eq!(status, StatusCode::OK);
    assert_error(
        &callback(&app, &orders[2], PRICE, "tx-once").await,
        409,
        "transaction_reused",
    );
    assert_eq!(order_row(&app, &orders[2]).await, ("pending".to_string(), None));

    let outcomes: Vec<String> = events(&app).await.into_iter().map(|e| e.3).collect();
    assert_eq!(outcomes, ["unknown_order", "cancelled", "paid", "transaction_reused"]);

    // Malformed bodies, even when signed, are bad requests.
    for body in [
        json!({"order_no": orders[2], "amount": "abc", "transaction_id": "t"}),
        json!({"order_no": orders[2], "amount": "-1.00", "transaction_id": "t"}),
        json!({"order_no": orders[2], "amount": PRICE, "transaction_id": ""}),
        json!({"order_no": orders[2], "amount": PRICE}),
    ] {
        let body = body.to_string();
        let answer = post_signed(&app, body.as_bytes(), Some(&signature(WEBHOOK_SECRET, body.as_bytes()))).await;
        assert_error(&answer, 400, "bad_request");
    }
    assert_eq!(order_row(&app, &orders[2]).await, ("pending".to_string(), None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_webhook_secret_the_callback_is_disabled() {
    let (app, orders) = sale_with_orders(1, |c| c.payment.webhook_secret.clear()).await;
    assert_error(&callback(&app, &orders[0], PRICE, "tx-1").await, 503, "disabled");
    assert_eq!(order_row(&app, &orders[0]).await, ("pending".to_string(), None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_racing_order_expire_end_paid_or_expired_never_both() {
    const ORDERS: usize = 200;
    let (app, orders) = sale_with_orders(ORDERS, |c| c.payment.timeout = Duration::from_secs(1)).await;
    let app = Arc::new(app);
    // Every order is now past the payment window: expire and the provider race for each.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // Two expire runs (as two overlapping timer runs would) walk the orders oldest first; the
    // provider sends its callbacks newest first, a few at a time, so they meet in the middle.
    let expire_runs: Vec<_> = (0..2)
        .map(|_| {
            let app = app.clone();
            tokio::spawn(async move {
                seckill::ops::order::expire(&app.db, &app.redis, app.config.payment.timeout, Some(app.activity))
                    .await
                    .unwrap()
            })
        })
        .collect();
    let in_flight = Arc::new(tokio::sync::Semaphore::new(4));
    let mut callbacks = tokio::task::JoinSet::new();
    for (i, order_no) in orders.iter().enumerate().rev() {
        let (app, order_no, in_flight) = (app.clone(), order_no.clone(), in_flight.clone());
        callbacks.spawn(async move {
            let _slot = in_flight.acquire().await.unwrap();
            let answer = callback(&app, &order_no, PRICE, &format!("tx-{i}")).await;
            (order_no, i, answer)
        });
    }
    let mut expired_by_run = Vec::new();
    for run in expire_runs {
        let report = run.await.unwrap();
        expired_by_run.extend(report.expired.into_iter().map(|t| t.order_no));
    }
    let mut paid = Vec::new();
    let mut expired = Vec::new();
    while let Some(done) = callbacks.join_next().await {
        let (order_no, i, (status, answer)) = done.unwrap();
        let row = order_row(&app, &order_no).await;
        match status {
            StatusCode::OK => {
                assert_eq!(row, ("paid".to_string(), Some(format!("tx-{i}"))), "{order_no}");
                paid.push(order_no);
            }
            StatusCode::CONFLICT => {
                assert_eq!(answer["error"], "expired", "{order_no}: {answer}");
                assert_eq!(row, ("expired".to_string(), None), "{order_no}");
                expired.push(order_no);
            }
            other => panic!("{order_no}: {other} {answer}"),
        }
    }
    assert_eq!(paid.len() + expired.len(), ORDERS);
    expired_by_run.sort();
    expired.sort();
    assert_eq!(
        expired_by_run, expired,
        "expire's report names exactly the orders the callbacks lost"
    );

    // Units came back exactly for the expired orders: in Redis, the released set and MySQL.
    let (stock, sold, _total) = app.redis_counters().await;
    assert_eq!((stock, sold), (expired.len() as i64, paid.len() as i64));
    let mut released: Vec<String> =
        redis::AsyncCommands::smembers(&mut app.redis.conn(), app.redis.keys().released(app.activity))
            .await
            .unwrap();
    released.sort();
    assert_eq!(released, expired);
    assert_eq!(app.mysql_sold().await, paid.len() as i64);
    let released_rows = app
        .scalar("SELECT COUNT(*) FROM stock_ledger WHERE activity_id = ? AND op = 'release'")
        .await;
    assert_eq!(released_rows, expired.len() as i64);
    let outcomes: Vec<String> = events(&app).await.into_iter().map(|e| e.3).collect();
    assert_eq!(outcomes.iter().filter(|o| *o == "paid").count(), paid.len());
    assert_eq!(outcomes.iter().filter(|o| *o == "expired").count(), expired.len());
    eprintln!("race: {} paid, {} expired", paid.len(), expired.len());
    assert!(
        !paid.is_empty() && !expired.is_empty(),
        "the callbacks and expire did not overlap ({} paid, {} expired)",
        paid.len(),
        expired.len()
    );
}
