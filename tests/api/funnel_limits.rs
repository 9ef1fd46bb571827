//! The funnel's refusals over HTTP: `429` from the global rate limit and `busy` at
//! `funnel.max_in_flight`, each deducting nothing. (The per-user `429` is tested in
//! `hardening_http::requests_in_a_victims_name_do_not_spend_the_victims_rate_limit`.)

use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::AsyncCommands;

use crate::helpers::{assert_error, spec, TestApp};
use crate::redis_servers::OwnRedis;

/// The value of the sample `name{labels}` in the server's `GET /metrics` (0 when absent).
async fn sample(sale: &TestApp, name_and_labels: &str) -> f64 {
    let text = sale
        .http
        .get(format!("{}/metrics", sale.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Units the buyer holds in Redis.
async fn held(sale: &TestApp, user: &str) -> i64 {
    let key = sale.redis.keys().bought(sale.activity, sale.product);
    let units: Option<i64> = sale.redis.conn().hget(key, user).await.unwrap();
    units.unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_global_rate_limit_answers_429_and_deducts_nothing() {
    let sale = Arc::new(
        TestApp::builder()
            .tune(|c| {
                c.funnel.global_rps = 5;
                c.funnel.per_user_rps = 0;
            })
            .sale(vec![spec(100, 1, 1)])
            .serve()
            .build()
            .await,
    );
    let buyers: Vec<String> = (0..40).map(|i| format!("g{i}")).collect();
    let answers = sale.buy_at_once(sale.product, buyers).await;
    let mut bought = 0;
    for (user, answer) in &answers {
        match answer.0.as_u16() {
            200 => bought += 1,
            _ => {
                assert_error(answer, 429, "too_many_requests");
                assert_eq!(held(&sale, user).await, 0, "{user} was limited but holds a unit");
            }
        }
    }
    // A bucket of 5 per second: at most its burst and what refilled while the 40 ran.
    assert!((1..=15).contains(&bought), "{bought} of 40 got through a 5/s limit");
    let (stock, sold, _) = sale.counters(sale.product).await;
    assert_eq!((stock, sold), (100 - bought, bought), "only the admitted buys deducted");
    assert_eq!(sample(&sale, "seckill_rate_limited_total ").await as i64, 40 - bought);

    // The bucket refills.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let token = sale.token("later").await;
    assert_eq!(sale.buy(sale.product, "later", 1, &token).await.0, 200);
    Arc::into_inner(sale).unwrap().finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_beyond_max_in_flight_is_busy_at_once_and_deducts_nothing() {
    let own = OwnRedis::start().await;
    let sale = Arc::new(
        TestApp::builder()
            .redis(own.url())
            .tune(|c| {
                c.funnel.max_in_flight = 1;
                c.redis.response_timeout_ms = 10_000;
            })
            .sale(vec![spec(10, 1, 1)])
            .serve()
            .build()
            .await,
    );
    let p = sale.product;
    let tokens = sale.tokens(&["first".into(), "second".into(), "warm-up".into()]).await;
    // The server learns the product's activity on its first purchase (a Redis read).
    assert_eq!(sale.buy(p, "warm-up", 1, &tokens[2]).await.0, 200);

    // Redis stalls: the first purchase waits for its verdict, holding the one admission slot.
    own.signal("-STOP");
    let first = {
        let (sale, token) = (sale.clone(), tokens[0].clone());
        tokio::spawn(async move { sale.buy(p, "first", 1, &token).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let asked = Instant::now();
    let second = sale.buy(p, "second", 1, &tokens[1]).await;
    let waited = asked.elapsed();
    own.signal("-CONT");
    assert_error(&second, 503, "busy");
    assert!(waited < Duration::from_secs(1), "busy took {waited:?}");
    assert_eq!(first.await.unwrap().0, 200, "the admitted purchase completes");

    assert_eq!((held(&sale, "first").await, held(&sale, "second").await), (1, 0));
    assert_eq!(sale.counters(p).await.0, 8, "two units sold: warm-up and first");
    assert_eq!(sample(&sale, "seckill_busy_total{reason=\"admission\"}").await, 1.0);
    // The slot is free again.
    assert_eq!(sale.buy(p, "second", 1, &tokens[1]).await.0, 200);
    Arc::into_inner(sale).unwrap().finish().await;
}
