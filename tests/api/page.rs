//! The buyer page's server side without a browser: `GET /api/v1/activities/{id}/result`
//! ("did I win?") through every state of an order, its refusals and its identity rules, and
//! the page's own answers (`GET /`, `GET /sale/{id}`, `GET /assets/{file}`) with their headers.
//! The page's behaviour in a browser is in `browser.rs`.

use std::time::Duration;

use jsonwebtoken::{encode, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{assert_error, phone, spec, TestApp};
use seckill::config::AuthMode;
use seckill::ops::order;

/// `GET /api/v1/activities/{activity}/result` with `query` and an optional bearer JWT.
async fn result(app: &TestApp, activity: u64, query: &str, jwt: Option<&str>) -> (StatusCode, Value) {
    let mut request = app
        .http
        .get(format!("{}/api/v1/activities/{activity}/result{query}", app.base));
    if let Some(jwt) = jwt {
        request = request.header("authorization", format!("Bearer {jwt}"));
    }
    let answer = request.send().await.expect("http");
    let status = answer.status();
    (status, answer.json().await.unwrap_or(Value::Null))
}

/// The result of `user` in the app's sale, which must be answered 200.
async fn result_of(app: &TestApp, user: &str) -> Value {
    let (status, body) = result(app, app.activity, &format!("?user_id={user}"), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["user_id"], user);
    assert_eq!(body["activity_id"], app.activity);
    body
}

/// `user` buys one unit of the sale's product over HTTP; the order number.
async fn bought(app: &TestApp, user: &str) -> String {
    let token = app.token(user).await;
    let (status, body) = app.buy(app.product, user, 1, &token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["order_no"].as_str().unwrap().to_string()
}

/// The single order of a result: (order_no, status, persisted).
fn only_order(result: &Value) -> (String, String, bool) {
    let orders = result["orders"].as_array().expect("orders");
    assert_eq!(orders.len(), 1, "{result}");
    (
        orders[0]["order_no"].as_str().unwrap().to_string(),
        orders[0]["status"].as_str().unwrap().to_string(),
        orders[0]["persisted"].as_bool().unwrap(),
    )
}

#[tokio::test]
async fn result_follows_an_order_from_queued_to_paid_cancelled_or_expired() {
    // Many questions of one buyer in a row: not what the rate limit is for.
    let app = TestApp::builder()
        .sale(vec![phone(10, 1)])
        .pipeline()
        .tune(|c| c.funnel.token_per_user_rps = 0)
        .serve()
        .build()
        .await;

    let nobody = result_of(&app, "alice").await;
    assert_eq!(nobody["reserved"], false);
    assert_eq!(nobody["orders"], json!([]));

    // Queued: in the stream only (read there, since Redis holds units MySQL does not).
    let alice = bought(&app, "alice").await;
    let won = result_of(&app, "alice").await;
    assert_eq!(won["reserved"], true);
    assert_eq!(only_order(&won), (alice.clone(), "queued".into(), false));
    assert_eq!(won["orders"][0]["product_id"], app.product);
    assert_eq!(won["orders"][0]["quantity"], 1);

    let bob = bought(&app, "bob").await;
    let carol = bought(&app, "carol").await;
    app.drain().await;
    for (user, no) in [("alice", &alice), ("bob", &bob), ("carol", &carol)] {
        let persisted = result_of(&app, user).await;
        assert_eq!(persisted["reserved"], true);
        assert_eq!(only_order(&persisted), (no.clone(), "pending".into(), true), "{user}");
    }

    order::pay(&app.db, &alice).await.unwrap();
    order::cancel(&app.db, &app.redis, &bob).await.unwrap();
    let paid = result_of(&app, "alice").await;
    assert_eq!(only_order(&paid).1, "paid");
    assert_eq!(paid["reserved"], true);
    let cancelled = result_of(&app, "bob").await;
    assert_eq!(only_order(&cancelled).1, "cancelled");
    assert_eq!(cancelled["reserved"], false, "a cancelled order holds nothing");

    order::expire(&app.db, &app.redis, Duration::ZERO, Some(app.activity))
        .await
        .unwrap();
    let expired = result_of(&app, "carol").await;
    assert_eq!(only_order(&expired).1, "expired");
    assert_eq!(expired["reserved"], false);
    // Someone else's result is their own: alice's paid order is not carol's.
    assert_eq!(only_order(&result_of(&app, "alice").await).1, "paid");

    // After the sale, its Redis keys flushed: MySQL still answers.
    let id = app.activity.to_string();
    app.cli(&["stop", &id, "--end"]).await.ok();
    app.cli(&["flush", "-y", &id]).await.ok();
    let after = result_of(&app, "alice").await;
    assert_eq!(only_order(&after), (alice, "paid".into(), true));
    assert_eq!(after["reserved"], true);
    app.finish().await;
}

#[tokio::test]
async fn result_refuses_unknown_activities_and_missing_or_bad_buyers() {
    let app = TestApp::builder().sale(vec![phone(10, 1)]).serve().build().await;
    let answer = result(&app, app.activity + 1000, "?user_id=alice", None).await;
    assert_error(&answer, 404, "not_found");
    assert_error(
        &app.get("/api/v1/activities/abc/result?user_id=alice").await,
        404,
        "not_found",
    );
    assert_error(&result(&app, app.activity, "", None).await, 400, "bad_request");
    assert_error(
        &result(&app, app.activity, "?user_id=a%20b", None).await,
        400,
        "bad_request",
    );
    let too_long = "x".repeat(65);
    assert_error(
        &result(&app, app.activity, &format!("?user_id={too_long}"), None).await,
        400,
        "bad_request",
    );
    assert_error(
        &result(&app, app.activity, "?user_id=alice&extra=1", None).await,
        400,
        "bad_request",
    );
    assert_error(
        &app.post_json(&format!("/api/v1/activities/{}/result", app.activity), &json!({}))
            .await,
        405,
        "method_not_allowed",
    );
    // A buyer asking in a loop is held to the token requests' per-user limit (burst 5, 1/s).
    let mut answers = Vec::new();
    for _ in 0..8 {
        answers.push(result(&app, app.activity, "?user_id=looper", None).await.0.as_u16());
    }
    assert_eq!(answers[0], 200, "{answers:?}");
    assert!(answers.contains(&429), "{answers:?}");
    app.finish().await;
}

/// The HS256 secret of the JWT-mode app.
const JWT_SECRET: &str = "page-jwt-test-secret-0123456789abcdef";

fn jwt_of(sub: &str) -> String {
    let now = chrono::Utc::now().timestamp();
    let claims = json!({"sub": sub, "exp": now + 3600, "iat": now});
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap()
}

#[tokio::test]
async fn in_jwt_mode_the_result_is_the_subjects_own() {
    let app = TestApp::builder()
        .sale(vec![spec(10, 1, 1)])
        .tune(|c| {
            c.auth.mode = AuthMode::Jwt;
            c.auth.jwt_secret = JWT_SECRET.into();
        })
        .serve()
        .build()
        .await;
    let alice = jwt_of("alice");
    assert_error(
        &result(&app, app.activity, "?user_id=alice", None).await,
        401,
        "unauthenticated",
    );
    assert_error(
        &result(&app, app.activity, "", Some("not.a.jwt")).await,
        401,
        "unauthenticated",
    );
    assert_error(
        &result(&app, app.activity, "?user_id=bob", Some(&alice)).await,
        403,
        "forbidden",
    );
    let token = app.token("alice").await;
    let status = app
        .http
        .post(format!("{}/api/v1/buy", app.base))
        .header("authorization", format!("Bearer {alice}"))
        .json(&json!({"product_id": app.product, "user_id": "alice", "quantity": 1, "token": token}))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, StatusCode::OK);
    for query in ["", "?user_id=alice"] {
        let (status, body) = result(&app, app.activity, query, Some(&alice)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["user_id"], "alice");
        assert_eq!(body["reserved"], true);
        assert_eq!(body["orders"][0]["status"], "queued");
    }
    let (_, bob) = result(&app, app.activity, "", Some(&jwt_of("bob"))).await;
    assert_eq!(bob["reserved"], false, "{bob}");
    app.finish().await;
}

/// `GET path` with optional request headers: (status, headers, body text).
async fn fetch(
    app: &TestApp,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, reqwest::header::HeaderMap, String) {
    let mut request = app.http.get(format!("{}{path}", app.base));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let answer = request.send().await.expect("http");
    let (status, headers) = (answer.status(), answer.headers().clone());
    (status, headers, answer.text().await.unwrap())
}

fn header<'a>(headers: &'a reqwest::header::HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
}

#[tokio::test]
async fn the_page_is_served_from_the_binary_with_its_security_headers() {
    let app = TestApp::builder().sale(vec![phone(10, 1)]).serve().build().await;

    let (status, headers, home) = fetch(&app, "/", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(header(&headers, "content-type").starts_with("text/html"));
    assert!(home.contains(&format!("href=\"/sale/{}\"", app.activity)), "{home}");
    assert!(home.contains("test sale"), "{home}");

    let (status, headers, page) = fetch(&app, &format!("/sale/{}", app.activity), &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains(&format!("data-activity=\"{}\"", app.activity)), "{page}");
    assert!(page.contains("data-auth=\"none\""));
    assert!(page.contains("<script src=\"/assets/sale.js\" defer></script>"));
    let csp = header(&headers, "content-security-policy");
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "{csp}");
    }
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(header(&headers, "x-content-type-options"), "nosniff");
    assert_eq!(header(&headers, "cache-control"), "no-cache");
    assert_eq!(header(&headers, "referrer-policy"), "no-referrer");

    let (status, headers, script) = fetch(&app, "/assets/sale.js", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(header(&headers, "content-type").starts_with("text/javascript"));
    assert!(script.contains("/api/v1/time"));
    let etag = header(&headers, "etag").to_string();
    let (status, _, empty) = fetch(&app, "/assets/sale.js", &[("if-none-match", &etag)]).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    assert!(empty.is_empty());
    let (status, headers, _) = fetch(&app, "/assets/sale.css", &[("if-none-match", "\"stale\"")]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(header(&headers, "content-type").starts_with("text/css"));

    assert_error(&app.get("/assets/../Cargo.toml").await, 404, "not_found");
    assert_error(&app.get("/assets/secret.txt").await, 404, "not_found");
    assert_error(
        &app.get(&format!("/sale/{}", app.activity + 1000)).await,
        404,
        "not_found",
    );
    assert_error(&app.get("/sale/abc").await, 404, "not_found");

    // An ended activity leaves the home page.
    app.cli(&["stop", &app.activity.to_string(), "--end"]).await.ok();
    let (_, _, home) = fetch(&app, "/", &[]).await;
    assert!(!home.contains(&format!("/sale/{}", app.activity)), "{home}");
    assert!(home.contains("Nothing is on sale"), "{home}");
    app.finish().await;
}
