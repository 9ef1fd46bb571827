//! The buy path end to end: tokens, the funnel, group commit, failures.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::AsyncCommands;
use seckill::buy::{self, Purchase};
use serde_json::{json, Value};

use crate::helpers::{assert_error, spec, TestApp};
use crate::redis_servers::OwnRedis;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_buyers_exactly_one_hundred_win() {
    two_thousand_buyers(false).await;
}

/// The same with numbered buyers, the first 1,500 keeping their totals in the product's array
/// and the rest in its hash (`redis.numeric_user_ids_below`), so batches mix the two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_numbered_buyers_exactly_one_hundred_win() {
    two_thousand_buyers(true).await;
}

async fn two_thousand_buyers(numbered: bool) {
    let builder = TestApp::builder().sale(vec![spec(100, 1, 1)]).serve();
    let builder = if numbered {
        builder.tune(|c| c.redis.numeric_user_ids_below = 1500)
    } else {
        builder
    };
    let sale = Arc::new(builder.build().await);
    let users: Vec<String> = (0..2000)
        .map(|i| {
            if numbered {
                format!("{}", i + 1)
            } else {
                format!("buyer{i}")
            }
        })
        .collect();
    let product = sale.product;
    let mut winners = HashSet::new();
    let mut order_nos = HashSet::new();
    for (user, (status, body)) in sale.buy_at_once(product, users).await {
        match status.as_u16() {
            200 => {
                assert_eq!(body["status"], "queued");
                assert!(order_nos.insert(body["order_no"].as_str().unwrap().to_string()));
                assert!(winners.insert(user));
            }
            409 => assert_eq!(body["error"], "sold_out", "{body}"),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(winners.len(), 100);
    let (hashed, array) = sale.totals_apart(sale.activity, product).await;
    let holders: HashSet<String> = hashed.keys().chain(array.keys()).cloned().collect();
    assert_eq!(holders, winners, "each winner holds one unit, nobody else any");
    assert!(hashed.values().chain(array.values()).all(|&n| n == 1));
    if numbered {
        assert!(array.keys().all(|u| u.parse::<u64>().unwrap() < 1500), "{array:?}");
        assert!(hashed.keys().all(|u| u.parse::<u64>().unwrap() >= 1500), "{hashed:?}");
    } else {
        assert!(array.is_empty());
    }
    assert_eq!(sale.counters(product).await, (0, 100, 100));
    let queued = sale.stream_reservations().await;
    let stream_users: HashSet<String> = queued.iter().map(|r| r.user_id.clone()).collect();
    assert_eq!(stream_users, winners);
    let stream_nos: HashSet<String> = queued.into_iter().map(|r| r.order_no).collect();
    assert_eq!(
        stream_nos, order_nos,
        "each answer's order number names its purchase in the stream"
    );
    Arc::into_inner(sale).unwrap().finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_user_fifty_parallel_requests_limit_two() {
    fifty_parallel_requests("greedy", 0).await;
}

/// The same for a numbered buyer whose total lives in the product's array.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_numbered_user_fifty_parallel_requests_limit_two() {
    fifty_parallel_requests("42", 1000).await;
}

async fn fifty_parallel_requests(user: &'static str, numeric_user_ids_below: u64) {
    let sale = Arc::new(
        TestApp::builder()
            .tune(move |c| c.redis.numeric_user_ids_below = numeric_user_ids_below)
            .sale(vec![spec(100, 2, 1)])
            .serve()
            .build()
            .await,
    );
    let token = sale.token(user).await;
    let product = sale.product;
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let (sale, token) = (sale.clone(), token.clone());
            tokio::spawn(async move { sale.buy(product, user, 1, &token).await })
        })
        .collect();
    let mut ok = 0;
    for task in tasks {
        let (status, body) = task.await.unwrap();
        if status == 200 {
            ok += 1;
        } else {
            let code = body["error"].as_str().unwrap().to_string();
            assert!(code == "limit_exceeded" || code == "too_many_requests", "{body}");
        }
    }
    assert_eq!(ok, 2);
    assert_eq!(sale.counters(product).await, (98, 2, 2));
    let (hashed, array) = sale.totals_apart(sale.activity, product).await;
    let (here, elsewhere) = if numeric_user_ids_below > 0 {
        (array, hashed)
    } else {
        (hashed, array)
    };
    assert_eq!(here, HashMap::from([(user.to_string(), 2)]));
    assert!(elsewhere.is_empty(), "{elsewhere:?}");
    Arc::into_inner(sale).unwrap().finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_refused_and_deduct_nothing() {
    let sale = TestApp::builder().sale(vec![spec(100, 1, 1)]).serve().build().await;
    let p = sale.product;
    let alice = sale.token("alice").await;
    let bob = sale.token("bob").await;
    let mut altered = alice.clone().into_bytes();
    let last = altered.len() - 3;
    altered[last] = if altered[last] == b'x' { b'y' } else { b'x' };
    let altered = String::from_utf8(altered).unwrap();
    let later_expiry = alice.replacen(alice.split('.').next().unwrap(), "9999999999", 1);
    let expired = sale.signer.sign(sale.activity, "alice", 1_000_000);
    let unregistered = sale
        .signer
        .sign(sale.activity, "carol", seckill::token::unix_now() + 600);
    for token in [
        "",
        "garbage",
        "1.AAAA",
        "9999999999.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        &altered,
        &later_expiry,
        &expired,
        &bob,
    ] {
        assert_error(&sale.buy(p, "alice", 1, token).await, 401, "invalid_token");
    }
    assert_error(&sale.buy(p, "carol", 1, &altered).await, 401, "invalid_token");
    assert_eq!(sale.counters(p).await, (100, 0, 0));
    // Revoked: refused whatever token the user presents, even a freshly signed one.
    assert!(seckill::ops::token::revoke(&sale.redis, sale.activity, "bob")
        .await
        .unwrap());
    let fresh_bob = sale.signer.sign(sale.activity, "bob", seckill::token::unix_now() + 600);
    assert_error(&sale.buy(p, "bob", 1, &bob).await, 401, "invalid_token");
    assert_error(&sale.buy(p, "bob", 1, &fresh_bob).await, 401, "invalid_token");
    assert_eq!(sale.counters(p).await, (100, 0, 0));
    // The genuine token still works.
    assert_eq!(sale.buy(p, "alice", 1, &alice).await.0, 200);
    // Signed correctly but never registered: the signature is the proof.
    assert_eq!(sale.buy(p, "carol", 1, &unregistered).await.0, 200);
    // Lifted: a new token works.
    assert!(seckill::ops::token::lift(&sale.redis, sale.activity, "bob")
        .await
        .unwrap());
    let new_bob = sale.token("bob").await;
    assert_eq!(sale.buy(p, "bob", 1, &new_bob).await.0, 200);
    assert_eq!(sale.counters(p).await, (97, 3, 3));
    sale.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sale_states_and_blacklist() {
    let early = TestApp::builder()
        .sale(vec![spec(100, 1, 1)])
        .opens_in_secs(3600)
        .serve()
        .build()
        .await;
    let t = early.token("u1").await;
    assert_error(&early.buy(early.product, "u1", 1, &t).await, 403, "not_started");
    assert_eq!(early.counters(early.product).await, (100, 0, 0));
    let (status, page) = early.get(&format!("/api/v1/activities/{}", early.activity)).await;
    assert_eq!(status, 200);
    assert!(page["starts_in_secs"].as_i64().unwrap() > 3500, "{page}");
    early.finish().await;

    let sale = TestApp::builder().sale(vec![spec(100, 1, 1)]).serve().build().await;
    let p = sale.product;
    let (u1, u2) = (sale.token("u1").await, sale.token("u2").await);
    seckill::ops::blacklist::add(&sale.db, &sale.redis, "u2", "bot")
        .await
        .unwrap();
    assert_error(&sale.buy(p, "u2", 1, &u2).await, 403, "blacklisted");
    seckill::ops::blacklist::remove(&sale.db, &sale.redis, "u2")
        .await
        .unwrap();

    seckill::ops::stop(&sale.db, &sale.redis, sale.activity, false)
        .await
        .unwrap();
    assert_error(&sale.buy(p, "u1", 1, &u1).await, 403, "paused");
    seckill::ops::start(&sale.db, &sale.redis, sale.activity).await.unwrap();

    // Past the window (the clock moved on) ...
    let mut conn = sale.redis.conn();
    let key = sale.redis.keys().activity(sale.activity);
    let end_ms: i64 = conn.hget(&key, "end_ms").await.unwrap();
    let () = conn.hset(&key, "end_ms", 1_000).await.unwrap();
    assert_error(&sale.buy(p, "u1", 1, &u1).await, 403, "ended");
    let () = conn.hset(&key, "end_ms", end_ms).await.unwrap();
    // ... and ended by the operator.
    seckill::ops::stop(&sale.db, &sale.redis, sale.activity, true)
        .await
        .unwrap();
    assert_error(&sale.buy(p, "u1", 1, &u1).await, 403, "ended");
    assert_error(
        &sale
            .post_json("/api/v1/token", &json!({"activity_id": sale.activity, "user_id": "u9"}))
            .await,
        403,
        "ended",
    );
    assert_eq!(sale.counters(p).await, (100, 0, 0));
    sale.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_bad_request_and_changes_nothing() {
    let sale = TestApp::builder().sale(vec![spec(100, 5, 5)]).serve().build().await;
    let p = sale.product;
    let t = sale.token("u1").await;
    let long_user = "x".repeat(65);
    let bodies: Vec<Value> = vec![
        json!({"product_id": p, "user_id": "u1", "quantity": 1, "token": t, "extra": 1}),
        json!({"product_id": p, "user_id": "u1", "quantity": "1", "token": t}),
        json!({"product_id": "p", "user_id": "u1", "quantity": 1, "token": t}),
        json!({"product_id": p, "user_id": "u1", "quantity": 0, "token": t}),
        json!({"product_id": p, "user_id": "u1", "quantity": -1, "token": t}),
        json!({"product_id": p, "user_id": "u1", "quantity": 1.5, "token": t}),
        json!({"product_id": p, "user_id": "u1", "quantity": 99_999_999_999u64, "token": t}),
        json!({"product_id": p, "user_id": "u1", "quantity": 1_000_000, "token": t}),
        json!({"product_id": p, "user_id": "", "quantity": 1, "token": t}),
        json!({"product_id": p, "user_id": long_user, "quantity": 1, "token": t}),
        json!({"product_id": p, "user_id": "u 1", "quantity": 1, "token": t}),
        json!({"product_id": p, "user_id": "u1", "quantity": 1}),
        json!({"product_id": -5, "user_id": "u1", "quantity": 1, "token": t}),
        json!([1, 2]),
        json!(null),
    ];
    for body in &bodies {
        assert_error(&sale.post_json("/api/v1/buy", body).await, 400, "bad_request");
    }
    let good = json!({"product_id": p, "user_id": "u1", "quantity": 1, "token": t}).to_string();
    assert_error(
        &sale
            .post_raw("/api/v1/buy", "{\"product_id\": ", Some("application/json"))
            .await,
        400,
        "bad_request",
    );
    assert_error(
        &sale.post_raw("/api/v1/buy", good.clone(), Some("text/plain")).await,
        400,
        "bad_request",
    );
    assert_error(
        &sale.post_raw("/api/v1/buy", good.clone(), None).await,
        400,
        "bad_request",
    );
    let padded = format!("{}{}", good, " ".repeat(sale.config.http.max_body_bytes));
    assert_error(
        &sale.post_raw("/api/v1/buy", padded, Some("application/json")).await,
        400,
        "bad_request",
    );
    assert_error(
        &sale
            .post_json("/api/v1/token", &json!({"activity_id": sale.activity}))
            .await,
        400,
        "bad_request",
    );
    assert_error(
        &sale
            .post_json("/api/v1/token", &json!({"activity_id": sale.activity, "user_id": ""}))
            .await,
        400,
        "bad_request",
    );
    assert_error(&sale.get("/api/v1/nope").await, 404, "not_found");
    assert_error(&sale.get("/api/v1/buy").await, 405, "method_not_allowed");
    assert_eq!(sale.counters(p).await, (100, 0, 0));
    assert_eq!(
        sale.post_raw("/api/v1/buy", good, Some("application/json")).await.0,
        200
    );
    // Valid JSON outside the plain form buyer pages send (escapes, tabs, newlines, a
    // charset parameter) is read all the same.
    let t2 = sale.token("u2").await;
    let spread = format!("{{\n\t\"token\": \"{t2}\",\r\n\t\"user_id\": \"\\u0075\\u0032\",\n\t\"quantity\": 2, \"product_id\": {p}\n}}\n");
    let (status, answer) = sale
        .post_raw("/api/v1/buy", spread, Some("application/json; charset=utf-8"))
        .await;
    assert_eq!(
        (status.as_u16(), answer["status"].as_str()),
        (200, Some("queued")),
        "{answer}"
    );
    assert_eq!(sale.counters(p).await, (97, 3, 2));
    sale.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_endpoints_tokens_and_orders() {
    let sale = TestApp::builder()
        .sale(vec![spec(10, 1, 1), spec(5, 1, 1)])
        .serve()
        .build()
        .await;
    assert_eq!(sale.get("/health").await.0, 200);
    assert_eq!(sale.get("/ready").await.0, 200);
    let (status, time) = sale.get("/api/v1/time").await;
    assert_eq!(status, 200);
    assert!(time["server_time_ms"].as_i64().unwrap() > 1_700_000_000_000);

    let (status, issued) = sale
        .post_json(
            "/api/v1/token",
            &json!({"activity_id": sale.activity, "user_id": "web1"}),
        )
        .await;
    assert_eq!(status, 200, "{issued}");
    let (_, again) = sale
        .post_json(
            "/api/v1/token",
            &json!({"activity_id": sale.activity, "user_id": "web1"}),
        )
        .await;
    assert_eq!(issued["token"], again["token"]);
    assert_error(
        &sale
            .post_json("/api/v1/token", &json!({"activity_id": 987654321, "user_id": "web1"}))
            .await,
        404,
        "not_found",
    );

    let (status, bought) = sale
        .buy(sale.products[1], "web1", 1, issued["token"].as_str().unwrap())
        .await;
    assert_eq!(status, 200, "{bought}");
    assert_eq!(bought["remaining"], 4);
    let order_no = bought["order_no"].as_str().unwrap().to_string();
    let (status, order) = sale.get(&format!("/api/v1/orders/{order_no}")).await;
    assert_eq!(status, 200, "{order}");
    assert_eq!(order["status"], "queued");
    assert_eq!(order["user_id"], "web1");
    // Once persisted, MySQL's status wins.
    sqlx::query(
        "INSERT INTO orders (order_no, activity_id, product_id, user_id, quantity, unit_price, amount, status, reserved_at) \
         VALUES (?, ?, ?, 'web1', 1, 9.99, 9.99, 'paid', NOW(3))",
    )
    .bind(&order_no)
    .bind(sale.activity)
    .bind(sale.products[1])
    .execute(sale.db.pool())
    .await
    .unwrap();
    let (_, order) = sale.get(&format!("/api/v1/orders/{order_no}")).await;
    assert_eq!(order["status"], "paid");
    assert_error(
        &sale.get(&format!("/api/v1/orders/{}-1-0", sale.activity)).await,
        404,
        "not_found",
    );
    assert_error(&sale.get("/api/v1/orders/garbage").await, 404, "not_found");

    let (status, page) = sale.get(&format!("/api/v1/activities/{}", sale.activity)).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["status"], "online");
    assert_eq!(page["starts_in_secs"], 0);
    let remaining: Vec<i64> = page["products"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["remaining"].as_i64().unwrap())
        .collect();
    assert_eq!(remaining, vec![10, 4]);
    let names: Vec<&str> = page["products"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["product 0", "product 1"]);
    assert_error(&sale.get("/api/v1/activities/987654321").await, 404, "not_found");
    assert_error(&sale.get("/api/v1/activities/x").await, 404, "not_found");
    sale.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sold_out_is_answered_locally() {
    let sale = TestApp::builder()
        .tune(|c| c.funnel.sold_out_cache_ms = 60_000)
        .sale(vec![spec(1, 1, 1)])
        .serve()
        .build()
        .await;
    let p = sale.product;
    let (a, b) = (sale.token("a").await, sale.token("b").await);
    assert_eq!(sale.buy(p, "a", 1, &a).await.0, 200);
    assert_error(&sale.buy(p, "b", 1, &b).await, 409, "sold_out");
    // Redis would now say something else; the cache answers without asking it.
    let mut conn = sale.redis.conn();
    let () = conn
        .hset(sale.redis.keys().product(sale.activity, p), "stock", 5)
        .await
        .unwrap();
    assert_error(&sale.buy(p, "b", 1, &b).await, 409, "sold_out");
    assert_eq!(sale.counters(p).await, (5, 1, 1));
    sale.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_answers_busy_fast_and_recovers() {
    let mut own = OwnRedis::start().await;
    let mut sale = TestApp::builder()
        .redis(own.url())
        .tune(|c| {
            c.redis.response_timeout_ms = 300;
            c.redis.connect_timeout_ms = 300;
            c.funnel.breaker_failures = 3;
            c.funnel.breaker_open_ms = 200;
            c.funnel.per_user_rps = 0;
        })
        .sale(vec![spec(100, 1, 1)])
        .serve()
        .build()
        .await;
    let p = sale.product;
    let users: Vec<String> = (0..40).map(|i| format!("u{i}")).collect();
    let tokens = sale.tokens(&users).await;
    assert_eq!(sale.buy(p, &users[0], 1, &tokens[0]).await.0, 200);

    // Frozen: commands time out. A purchase sent before the breaker opened may still be
    // made when Redis resumes (unknown_outcome); the rest are refused unsent (busy).
    own.signal("-STOP");
    for i in 1..8 {
        let started = Instant::now();
        let answer = sale.buy(p, &users[i], 1, &tokens[i]).await;
        if i <= 3 {
            assert_error(&answer, 503, "unknown_outcome");
        } else {
            // The breaker's probe, once it half-opens, is sent again.
            assert_eq!(answer.0, 503, "{answer:?}");
            assert!(
                matches!(answer.1["error"].as_str(), Some("busy" | "unknown_outcome")),
                "{answer:?}"
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "busy took {:?}",
            started.elapsed()
        );
    }
    assert_error(&sale.get("/ready").await, 503, "busy");
    assert_eq!(sale.get("/health").await.0, 200);
    own.signal("-CONT");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut i = 8;
    loop {
        let (status, _) = sale.buy(p, &users[i], 1, &tokens[i]).await;
        i += 1;
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "no recovery after SIGCONT");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Gone: connections refused. Whether the purchase reached Redis before it died cannot
    // be known here, so either answer is honest.
    own.kill();
    let started = Instant::now();
    let answer = sale.buy(p, &users[i], 1, &tokens[i]).await;
    assert_eq!(answer.0, 503, "{answer:?}");
    assert!(
        matches!(answer.1["error"].as_str(), Some("busy" | "unknown_outcome")),
        "{answer:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "busy took {:?}",
        started.elapsed()
    );
    own.restart().await;
    // Its data is gone (no persistence): preheat again, as an operator would.
    seckill::ops::stop(&sale.db, &sale.redis, sale.activity, false)
        .await
        .ok();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let hot = seckill::ops::hot(&sale.db, &sale.redis, &sale.config.consumer.group, sale.activity).await;
        if hot.is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "hot never succeeded: {hot:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    seckill::ops::start(&sale.db, &sale.redis, sale.activity).await.unwrap();
    let tokens = sale.tokens(&users).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        i += 1;
        let (status, body) = sale.buy(p, &users[i], 1, &tokens[i]).await;
        if status == 200 {
            break;
        }
        assert!(
            matches!(body["error"].as_str(), Some("busy" | "unknown_outcome")),
            "{body}"
        );
        assert!(Instant::now() < deadline, "no recovery after restart");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sale.stop_server().await;
    sale.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_matches_one_by_one() {
    // The third product allows bigger orders than its per-user limit.
    let specs = vec![spec(5, 2, 2), spec(3, 3, 3), spec(4, 1, 3)];
    let batched = TestApp::builder().sale(specs.clone()).serve().build().await;
    let single = TestApp::builder().sale(specs).serve().build().await;
    // (product index, user, quantity, token not revoked?)
    let plan: Vec<(usize, &str, u32, bool)> = vec![
        (0, "a", 2, true),
        (0, "a", 1, true), // over a's limit
        (0, "b", 3, true), // over max per order
        (1, "b", 2, true),
        (0, "c", 1, true),
        (0, "d", 2, true), // only 2 left: takes them
        (0, "e", 1, true), // sold out mid-batch
        (1, "c", 2, true), // 1 left: sold out with remaining 1
        (1, "c", 1, true),
        (1, "h", 1, false), // revoked
        (1, "e", 0, true),  // bad quantity
        (1, "e", 1, true),  // sold out
        (2, "f", 2, true),  // over the limit of a user with nothing yet
        (2, "f", 1, true),
        (2, "f", 1, true), // over the limit of a user holding one
        (2, "g", 3, true), // over the limit: leaves no total behind
    ];
    let mut outcomes = Vec::new();
    for sale in [&batched, &single] {
        let users: Vec<String> = ["a", "b", "c", "d", "e", "f", "g", "h"]
            .iter()
            .map(|u| u.to_string())
            .collect();
        let tokens = sale.tokens(&users).await;
        for (_, user, _, valid) in &plan {
            if !valid {
                seckill::ops::token::revoke(&sale.redis, sale.activity, user)
                    .await
                    .unwrap();
            }
        }
        let purchases: Vec<Purchase> = plan
            .iter()
            .map(|(p, user, quantity, _)| Purchase {
                product_id: sale.products[*p],
                user_id: user.to_string(),
                quantity: *quantity,
                token: tokens[users.iter().position(|u| u == user).unwrap()].clone(),
            })
            .collect();
        let verdicts = if std::ptr::eq(sale, &batched) {
            buy::reserve(&sale.redis, sale.activity, &purchases).await.unwrap()
        } else {
            let mut v = Vec::new();
            for p in &purchases {
                v.extend(
                    buy::reserve(&sale.redis, sale.activity, std::slice::from_ref(p))
                        .await
                        .unwrap(),
                );
            }
            v
        };
        outcomes.push(
            verdicts
                .iter()
                .map(|v| (v.outcome, v.remaining, v.order_no.is_some()))
                .collect::<Vec<_>>(),
        );
    }
    assert_eq!(outcomes[0], outcomes[1]);
    let codes: Vec<&str> = outcomes[0].iter().map(|o| o.0.code()).collect();
    assert_eq!(
        codes,
        [
            "ok",
            "limit_exceeded",
            "limit_exceeded",
            "ok",
            "ok",
            "ok",
            "sold_out",
            "sold_out",
            "ok",
            "invalid_token",
            "bad_request",
            "sold_out",
            "limit_exceeded",
            "ok",
            "limit_exceeded",
            "limit_exceeded"
        ]
    );
    for sale in [&batched, &single] {
        assert_eq!(sale.counters(sale.products[0]).await.0, 0);
        assert_eq!(sale.counters(sale.products[1]).await.0, 0);
        assert_eq!(sale.counters(sale.products[2]).await.0, 3);
        let mut conn = sale.redis.conn();
        let totals: HashMap<String, i64> = conn
            .hgetall(sale.redis.keys().bought(sale.activity, sale.products[2]))
            .await
            .unwrap();
        assert_eq!(
            totals,
            HashMap::from([("f".to_string(), 1)]),
            "refusals leave no total behind"
        );
    }
    batched.finish().await;
    single.finish().await;
}

/// reserve.lua keeps stock in Lua during a batch and writes it back at the end; a command
/// that fails mid-batch must still leave every queued reservation deducted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_mid_batch_keeps_queued_units_deducted() {
    let sale = TestApp::builder()
        .sale(vec![spec(5, 1, 1), spec(5, 1, 1)])
        .serve()
        .build()
        .await;
    let users: Vec<String> = ["a", "b", "c"].iter().map(|u| u.to_string()).collect();
    let tokens = sale.tokens(&users).await;
    // Product 2's per-user totals are not a hash: its purchases fail inside the script.
    let mut conn = sale.redis.conn();
    let broken = sale.redis.keys().bought(sale.activity, sale.products[1]);
    let _: () = conn.set(&broken, "not a hash").await.unwrap();
    let purchase = |product: usize, user: usize| Purchase {
        product_id: sale.products[product],
        user_id: users[user].clone(),
        quantity: 1,
        token: tokens[user].clone(),
    };
    let batch = [purchase(0, 0), purchase(0, 1), purchase(1, 2), purchase(0, 2)];
    let failed = buy::reserve(&sale.redis, sale.activity, &batch).await;
    assert!(failed.is_err(), "the batch reports the failure: {failed:?}");
    // The two purchases decided before the failure are queued and deducted; none after it.
    assert_eq!(sale.counters(sale.products[0]).await, (3, 2, 2));
    let (stock, sold, _) = sale.counters(sale.products[1]).await;
    assert!(stock + sold == 5 && stock >= 4, "product 2: stock {stock}, sold {sold}");
    sale.finish().await;
}

/// `seckill ARGS` with the sale's config file, run to completion.
fn cli(sale: &TestApp, args: &[&str]) -> std::process::Output {
    sale.command(args).output().expect("run seckill")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_and_blacklist_cli() {
    let sale = TestApp::builder().sale(vec![spec(100, 1, 1)]).serve().build().await;
    let a = sale.activity.to_string();
    let out = std::env::temp_dir().join(format!("seckill-tokens-{}.csv", rand::random::<u64>()));
    let out_s = out.to_str().unwrap();
    let run = cli(&sale, &["token", &a, "--range", "1-1000", "--out", out_s]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let first = std::fs::read_to_string(&out).unwrap();
    assert_eq!(first.lines().count(), 1000);
    let run = cli(&sale, &["token", &a, "--range", "1-1000", "--out", out_s]);
    assert!(run.status.success());
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        first,
        "asking again returns the same tokens"
    );
    std::fs::remove_file(&out).ok();

    let line7 = first.lines().find(|l| l.starts_with("7,")).unwrap();
    let token7 = line7.split_once(',').unwrap().1;
    let run = cli(&sale, &["token", &a, "--user", "7"]);
    assert_eq!(String::from_utf8_lossy(&run.stdout).trim(), line7, "stdout, same token");

    let run = cli(&sale, &["token", "revoke", &a, "--user", "7"]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert_error(&sale.buy(sale.product, "7", 1, token7).await, 401, "invalid_token");
    let run = cli(&sale, &["token", "lift", &a, "--user", "7"]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let run = cli(&sale, &["token", &a, "--user", "7"]);
    let new7 = String::from_utf8_lossy(&run.stdout)
        .trim()
        .split_once(',')
        .unwrap()
        .1
        .to_string();
    assert_eq!(sale.buy(sale.product, "7", 1, &new7).await.0, 200);
    let token8 = first
        .lines()
        .find(|l| l.starts_with("8,"))
        .unwrap()
        .split_once(',')
        .unwrap()
        .1;
    assert_eq!(sale.buy(sale.product, "8", 1, token8).await.0, 200);

    let run = cli(&sale, &["token", "987654321", "--user", "x"]);
    assert_eq!(run.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&run.stderr).contains("not found"),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let run = cli(&sale, &["token", &a, "--user", "bad user"]);
    assert_eq!(run.status.code(), Some(2), "a usage error");

    assert!(cli(&sale, &["blacklist", "add", "9", "--reason", "bot"])
        .status
        .success());
    let token9 = first
        .lines()
        .find(|l| l.starts_with("9,"))
        .unwrap()
        .split_once(',')
        .unwrap()
        .1;
    assert_error(&sale.buy(sale.product, "9", 1, token9).await, 403, "blacklisted");
    let list = cli(&sale, &["blacklist", "list", "--json"]);
    let listed: Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(listed[0]["user_id"], "9");
    assert_eq!(listed[0]["reason"], "bot");
    assert!(cli(&sale, &["blacklist", "remove", "9"]).status.success());
    let listed: Value = serde_json::from_slice(&cli(&sale, &["blacklist", "list", "--json"]).stdout).unwrap();
    assert_eq!(listed, json!([]));
    assert_eq!(sale.buy(sale.product, "9", 1, token9).await.0, 200);
    sale.finish().await;
}

/// The stream entry lists buyers space-separated: a user id it could not hold is refused
/// before anything is sent, and nothing changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserve_refuses_user_ids_the_stream_cannot_hold() {
    let sale = TestApp::builder().sale(vec![spec(5, 1, 1)]).build().await;
    for user in ["", "a b"] {
        let purchase = Purchase {
            product_id: sale.product,
            user_id: user.into(),
            quantity: 1,
            token: String::new(),
        };
        let refused = buy::reserve(&sale.redis, sale.activity, &[purchase]).await;
        assert!(refused.is_err(), "{user:?}: {refused:?}");
    }
    assert_eq!(sale.counters(sale.product).await, (5, 0, 0));
    sale.finish().await;
}
