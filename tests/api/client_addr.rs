//! The client address (`server::client_addr`) and the limits keyed by it: the peer, or what a
//! proxy in `auth.trusted_proxies` reports in `X-Forwarded-For`; `funnel.per_ip_rps` on buys,
//! `funnel.token_per_ip_rps` / `token_per_user_rps` on token minting; the tables' memory
//! bounded by `funnel.rate_limit_keys_max` under a flood of distinct addresses.

use std::sync::Arc;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{assert_error, spec, TestApp};
use crate::metrics::sample;

/// `POST path` with `body`, as the client `forwarded_for` claims to be (`X-Forwarded-For`).
async fn post_from(app: &TestApp, path: &str, forwarded_for: &str, body: &Value) -> (StatusCode, Value) {
    let answer = app
        .http
        .post(format!("{}{path}", app.base))
        .header("x-forwarded-for", forwarded_for)
        .json(body)
        .send()
        .await
        .expect("http");
    let status = answer.status();
    (status, answer.json().await.unwrap_or(Value::Null))
}

/// A sale of `stock` units (limit 1) behind proxies `trusted`, buys limited to 1/s with a
/// burst of 3 per client address.
async fn limited_app(stock: u32, trusted: &str) -> TestApp {
    let trusted = trusted.parse().unwrap();
    TestApp::builder()
        .sale(vec![spec(stock, 1, 1)])
        .tune(move |c| {
            c.auth.trusted_proxies = vec![trusted];
            c.funnel.per_ip_rps = 1;
            c.funnel.per_ip_burst = 3;
        })
        .serve()
        .build()
        .await
}

/// Buys one unit as `user` (with a registered token) from the client `forwarded_for`.
async fn buy_from(app: &TestApp, forwarded_for: &str, user: &str) -> (StatusCode, Value) {
    let token = app.token(user).await;
    let body = json!({"product_id": app.product, "user_id": user, "quantity": 1, "token": token});
    post_from(app, "/api/v1/buy", forwarded_for, &body).await
}

#[tokio::test]
async fn one_address_over_its_rate_is_refused_while_another_still_buys() {
    let app = limited_app(100, "127.0.0.1").await;
    // Different buyers, one address (as the trusted proxy on 127.0.0.1 reports it).
    for n in 0..3 {
        let (status, body) = buy_from(&app, "203.0.113.7", &format!("a{n}")).await;
        assert_eq!(status, 200, "{body}");
    }
    assert_error(&buy_from(&app, "203.0.113.7", "a3").await, 429, "too_many_requests");
    // The client claims an address left of the one the proxy saw: the proxy's entry counts.
    assert_error(
        &buy_from(&app, "198.51.100.1, 203.0.113.7", "a4").await,
        429,
        "too_many_requests",
    );
    let (status, body) = buy_from(&app, "203.0.113.8", "b0").await;
    assert_eq!(status, 200, "another address still buys: {body}");
    assert_eq!(
        app.counters(app.product).await,
        (96, 4, 4),
        "the refused bought nothing"
    );
    app.finish().await;
}

#[tokio::test]
async fn forwarded_for_from_an_untrusted_peer_is_ignored() {
    // The test client (127.0.0.1) is not a trusted proxy: whatever it claims, it is one client.
    let app = limited_app(100, "10.0.0.0/8").await;
    for n in 0..3 {
        let (status, body) = buy_from(&app, &format!("198.51.100.{n}"), &format!("s{n}")).await;
        assert_eq!(status, 200, "{body}");
    }
    assert_error(&buy_from(&app, "198.51.100.9", "s3").await, 429, "too_many_requests");
    let real_ip = app
        .http
        .post(format!("{}/api/v1/buy", app.base))
        .header("x-real-ip", "198.51.100.10")
        .json(&json!({"product_id": app.product, "user_id": "s4", "quantity": 1, "token": app.token("s4").await}))
        .send()
        .await
        .unwrap();
    assert_eq!(real_ip.status(), 429, "X-Real-IP is not believed either");
    assert_eq!(app.counters(app.product).await, (97, 3, 3));
    app.finish().await;
}

#[tokio::test]
async fn token_minting_is_limited_per_address_and_per_user() {
    let app = TestApp::builder()
        .sale(vec![spec(10, 1, 1)])
        .tune(|c| {
            c.auth.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
            c.funnel.token_per_ip_rps = 1;
            c.funnel.token_per_ip_burst = 2;
            c.funnel.token_per_user_rps = 1;
            c.funnel.token_per_user_burst = 2;
        })
        .serve()
        .build()
        .await;
    let ask = |user: &str| json!({"activity_id": app.activity, "user_id": user});
    // One address minting for invented users: its burst, then 429.
    for user in ["m1", "m2"] {
        let (status, body) = post_from(&app, "/api/v1/token", "203.0.113.7", &ask(user)).await;
        assert_eq!(status, 200, "{body}");
    }
    assert_error(
        &post_from(&app, "/api/v1/token", "203.0.113.7", &ask("m3")).await,
        429,
        "too_many_requests",
    );
    let minted: Vec<String> = app
        .scan(&format!("{}:{{a:{}}}:token:*", app.prefix, app.activity))
        .await
        .into_iter()
        .collect();
    assert_eq!(minted.len(), 2, "the refused request registered nothing: {minted:?}");
    // One user asked for from many addresses: the user's burst, then 429.
    for n in 0..2 {
        let (status, body) = post_from(&app, "/api/v1/token", &format!("198.51.100.{n}"), &ask("u1")).await;
        assert_eq!(status, 200, "{body}");
    }
    assert_error(
        &post_from(&app, "/api/v1/token", "198.51.100.9", &ask("u1")).await,
        429,
        "too_many_requests",
    );
    // Another address, another user: served.
    let (status, body) = post_from(&app, "/api/v1/token", "192.0.2.1", &ask("u2")).await;
    assert_eq!(status, 200, "{body}");
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_distinct_addresses_keeps_the_table_under_its_cap() {
    const ADDRESSES: u32 = 50_000;
    const CAP: usize = 1_000;
    let app = Arc::new(
        TestApp::builder()
            .sale(vec![spec(10, 1, 1)])
            .tune(|c| {
                c.auth.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
                // Slow enough that no bucket is full again during the flood.
                c.funnel.per_ip_rps = 1;
                c.funnel.per_ip_burst = 1;
                c.funnel.rate_limit_keys_max = CAP;
                c.funnel.global_rps = 0;
            })
            .serve()
            .build()
            .await,
    );
    // Each address sends one buy with a token that does not verify: charged to the address's
    // bucket (the first check), answered 401 before the purchase reaches Redis.
    let body = json!({"product_id": app.product, "user_id": "flood", "quantity": 1, "token": "1.x"});
    let gate = Arc::new(tokio::sync::Semaphore::new(64));
    let mut tasks = Vec::new();
    for n in 0..ADDRESSES {
        let (app, gate, body) = (app.clone(), gate.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire().await.unwrap();
            let address = format!("10.{}.{}.{}", n >> 16, (n >> 8) & 255, n & 255);
            post_from(&app, "/api/v1/buy", &address, &body).await.0
        }));
    }
    for task in tasks {
        let status = task.await.unwrap();
        assert_eq!(status, 401, "a new address is never refused for the table being full");
    }
    let (_, metrics) = app.get("/metrics").await;
    let tracked = sample(
        metrics.as_str().unwrap(),
        "seckill_rate_limit_tracked_keys",
        &[("table", "per_ip")],
    )
    .expect("the per_ip gauge");
    assert!(tracked <= CAP as f64, "{tracked} keys tracked, cap {CAP}");
    assert!(tracked >= (CAP / 2) as f64, "the table was used: {tracked}");
    Arc::into_inner(app).expect("every request done").finish().await;
}

#[tokio::test]
async fn a_minted_token_costs_what_the_readme_says_and_expires() {
    let app = TestApp::builder()
        .sale(vec![spec(10, 1, 1)])
        .tune(|c| c.token.ttl_secs = 600)
        .serve()
        .build()
        .await;
    let longest = "x".repeat(64);
    // README (Identity and abuse): about 150 bytes with a short prefix and user id, up to
    // about 250 with a 64-byte id; this app's prefix is 17 bytes.
    for (user, most) in [("alice", 180), (longest.as_str(), 250)] {
        let (status, body) = app
            .post_json("/api/v1/token", &json!({"activity_id": app.activity, "user_id": user}))
            .await;
        assert_eq!(status, 200, "{body}");
        let key = app.redis.keys().token(app.activity, user);
        let mut conn = app.redis.conn();
        let bytes: i64 = redis::cmd("MEMORY")
            .arg("USAGE")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        let ttl: i64 = redis::cmd("TTL").arg(&key).query_async(&mut conn).await.unwrap();
        assert!((100..=most).contains(&bytes), "{key}: {bytes} bytes");
        assert!((590..=600).contains(&ttl), "{key}: expires in {ttl} s");
    }
    app.finish().await;
}
