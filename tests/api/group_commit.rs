//! Group commit of one product: `lua/reserve.lua` decides such a batch in locals, keeping the
//! buyers' totals so far only for the buyers who ask more than once (the caller marks them),
//! and writes the totals back with one HSET. Each batch here is decided in one call on one
//! sale and one call per purchase on another, and everything must come out the same.

use std::collections::HashMap;

use redis::AsyncCommands;
use seckill::buy::{self, Purchase};

use crate::helpers::{spec, TestApp};

/// (outcome code, remaining stock, reserved?) per purchase.
pub(crate) type Outcomes = Vec<(&'static str, i64, bool)>;

/// Purchases of one product: (user, quantity).
pub(crate) type Plan = Vec<(&'static str, u32)>;

fn purchases(product: u64, plan: &[(&str, u32)]) -> Vec<Purchase> {
    plan.iter()
        .map(|(user, quantity)| Purchase {
            product_id: product,
            user_id: user.to_string(),
            quantity: *quantity,
            token: String::new(),
        })
        .collect()
}

/// Decides `before` one purchase per call, then `batch` in one call when `batched` (else one
/// per call), on the sale's product `index`; see [`run_mixed`].
pub(crate) async fn run(
    sale: &TestApp,
    index: usize,
    before: &[(&str, u32)],
    batch: &[(&str, u32)],
    batched: bool,
) -> Outcomes {
    let product = sale.products[index];
    for p in purchases(product, before) {
        buy::reserve(&sale.redis, sale.activity, &[p]).await.unwrap();
    }
    let batch: Vec<(usize, &str, u32)> = batch.iter().map(|(u, q)| (index, *u, *q)).collect();
    run_mixed(sale, &batch, batched).await
}

/// Decides `batch` (product index, user, quantity) in one call when `batched`, else one call
/// per purchase; checks that every reserved purchase is in the stream under its order number
/// with its product, buyer and quantity.
pub(crate) async fn run_mixed(sale: &TestApp, batch: &[(usize, &str, u32)], batched: bool) -> Outcomes {
    let batch: Vec<Purchase> = batch
        .iter()
        .map(|(index, user, quantity)| Purchase {
            product_id: sale.products[*index],
            user_id: user.to_string(),
            quantity: *quantity,
            token: String::new(),
        })
        .collect();
    let verdicts = if batched {
        buy::reserve(&sale.redis, sale.activity, &batch).await.unwrap()
    } else {
        let mut v = Vec::new();
        for p in &batch {
            v.extend(
                buy::reserve(&sale.redis, sale.activity, std::slice::from_ref(p))
                    .await
                    .unwrap(),
            );
        }
        v
    };
    let queued: HashMap<String, (u64, String, u32)> = sale
        .stream_reservations()
        .await
        .into_iter()
        .map(|r| (r.order_no, (r.product_id, r.user_id, r.quantity)))
        .collect();
    for (verdict, p) in verdicts.iter().zip(&batch) {
        if let Some(order_no) = &verdict.order_no {
            assert_eq!(
                queued.get(order_no),
                Some(&(p.product_id, p.user_id.clone(), p.quantity)),
                "order {order_no}"
            );
        }
    }
    verdicts
        .iter()
        .map(|v| (v.outcome.code(), v.remaining, v.order_no.is_some()))
        .collect()
}

/// The product's buyers' totals (wherever they are kept) and its (stock, sold, purchases
/// queued).
pub(crate) async fn state(sale: &TestApp, index: usize) -> (HashMap<String, i64>, (i64, i64, usize)) {
    let product = sale.products[index];
    (sale.totals(sale.activity, product).await, sale.counters(product).await)
}

/// (product spec, purchases before the batch, the batch, the verdicts expected) of
/// [`one_product_batches_match_one_by_one`], also run with numbered buyers (numeric_totals.rs).
pub(crate) fn one_product_cases() -> Vec<(crate::helpers::ProductSpec, Plan, Plan, Vec<&'static str>)> {
    vec![
        (
            spec(8, 2, 2),
            vec![("r", 2), ("s", 1)],
            vec![
                ("a", 1),
                ("r", 1), // at the limit already
                ("s", 1), // holds one: now two
                ("b", 1), // b asks three times
                ("b", 1),
                ("b", 1), // over b's limit
                ("c", 3), // over max per order
                ("d", 0), // bad quantity
                ("e", 2), // one left: sold out
                ("f", 1), // takes the last
                ("g", 1),
                ("e", 1), // sold out now, though e was refused before
            ],
            vec![
                "ok",
                "limit_exceeded",
                "ok",
                "ok",
                "ok",
                "limit_exceeded",
                "limit_exceeded",
                "bad_request",
                "sold_out",
                "ok",
                "sold_out",
                "sold_out",
            ],
        ),
        (
            // Only usual purchases (one unit, each buyer once), some refused.
            spec(3, 1, 1),
            vec![("r", 1)],
            vec![("x", 1), ("r", 1), ("y", 1), ("z", 1), ("w", 1)],
            vec!["ok", "limit_exceeded", "ok", "sold_out", "sold_out"],
        ),
        (
            // Only usual purchases, all reserved.
            spec(100, 1, 1),
            vec![("r", 1)],
            vec![("x", 1), ("y", 1), ("z", 1), ("w", 1)],
            vec!["ok", "ok", "ok", "ok"],
        ),
        (
            // Sold out before the batch: a buyer at the limit still hears limit_exceeded.
            spec(2, 2, 2),
            vec![("r", 2)],
            vec![("x", 1), ("r", 1), ("y", 2), ("y", 1)],
            vec!["sold_out", "limit_exceeded", "sold_out", "sold_out"],
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_product_batches_match_one_by_one() {
    for (n, (product, before, batch, expected)) in one_product_cases().into_iter().enumerate() {
        let batched = TestApp::builder().sale(vec![product.clone()]).build().await;
        let single = TestApp::builder().sale(vec![product]).build().await;
        let a = run(&batched, 0, &before, &batch, true).await;
        let b = run(&single, 0, &before, &batch, false).await;
        assert_eq!(a, b, "case {n}: batched against one by one");
        assert_eq!(a.iter().map(|o| o.0).collect::<Vec<_>>(), expected, "case {n}");
        assert_eq!(
            state(&batched, 0).await,
            state(&single, 0).await,
            "case {n}: totals and counters"
        );
        batched.finish().await;
        single.finish().await;
    }
}

/// A stored total that is not a whole number fails a usual batch as the buyer's HINCRBY did,
/// and since the script decides such a batch before writing anything, it changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_total_fails_a_one_product_batch_and_changes_nothing() {
    let sale = TestApp::builder().sale(vec![spec(5, 1, 1)]).build().await;
    let bought = sale.redis.keys().bought(sale.activity, sale.product);
    let mut conn = sale.redis.conn();
    let _: () = conn.hset(&bought, "b", "1.5").await.unwrap();
    let failed = buy::reserve(
        &sale.redis,
        sale.activity,
        &purchases(sale.product, &[("a", 1), ("b", 1), ("c", 1)]),
    )
    .await;
    assert!(failed.is_err(), "{failed:?}");
    let totals: HashMap<String, String> = conn.hgetall(&bought).await.unwrap();
    assert_eq!(totals, HashMap::from([("b".to_string(), "1.5".to_string())]));
    assert_eq!(
        sale.counters(sale.product).await,
        (5, 0, 0),
        "nothing deducted or queued"
    );
    sale.finish().await;
}

/// A one-product batch whose entry cannot be added (the stream's key holds a string) fails
/// after its other writes, as the general loop does: the accepted buyers' totals and the
/// counters are written first, and the call reports the XADD's error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_entry_fails_a_one_product_batch_after_its_other_writes() {
    let sale = TestApp::builder().sale(vec![spec(5, 1, 1)]).build().await;
    let keys = sale.redis.keys();
    let stream = keys.orders_stream(sale.activity);
    let mut conn = sale.redis.conn();
    let _: () = conn.set(&stream, "not a stream").await.unwrap();
    let failed = buy::reserve(
        &sale.redis,
        sale.activity,
        &purchases(sale.product, &[("a", 1), ("b", 1)]),
    )
    .await;
    let error = failed.expect_err("the XADD fails").to_string();
    assert!(error.contains("WRONGTYPE"), "{error}");
    let totals: HashMap<String, i64> = conn.hgetall(keys.bought(sale.activity, sale.product)).await.unwrap();
    assert_eq!(totals, HashMap::from([("a".to_string(), 1), ("b".to_string(), 1)]));
    let counters: (i64, i64) = conn
        .hmget(keys.product(sale.activity, sale.product), &["stock", "sold"])
        .await
        .unwrap();
    assert_eq!(counters, (3, 2));
    let _: () = conn.del(&stream).await.unwrap();
    sale.finish().await;
}

/// The general loop (several products, or a set to probe) keeps the totals so far only for the
/// unusual requests too, so a buyer asking twice for the first product, one unit each, must be
/// marked by the caller there as well.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_products_or_a_blacklist_match_one_by_one() {
    let two = vec![spec(5, 2, 2), spec(5, 1, 1)];
    let plan = [
        (0, "a", 1),
        (1, "a", 1),
        (0, "a", 1),
        (0, "a", 1), // a holds two of the first product
        (1, "b", 1),
        (1, "b", 1), // b holds one of the second
        (0, "c", 1),
        (1, "a", 1), // a holds one of the second
    ];
    let batched = TestApp::builder().sale(two.clone()).build().await;
    let single = TestApp::builder().sale(two).build().await;
    let a = run_mixed(&batched, &plan, true).await;
    assert_eq!(a, run_mixed(&single, &plan, false).await);
    assert_eq!(
        a.iter().map(|o| o.0).collect::<Vec<_>>(),
        [
            "ok",
            "ok",
            "ok",
            "limit_exceeded",
            "ok",
            "limit_exceeded",
            "ok",
            "limit_exceeded"
        ]
    );
    for index in 0..2 {
        assert_eq!(
            state(&batched, index).await,
            state(&single, index).await,
            "product {index}"
        );
    }
    batched.finish().await;
    single.finish().await;

    // One product, with the blacklist set present: probed once per batch (SMISMEMBER).
    let batched = TestApp::builder().sale(vec![spec(3, 2, 2)]).build().await;
    let single = TestApp::builder().sale(vec![spec(3, 2, 2)]).build().await;
    for sale in [&batched, &single] {
        seckill::ops::blacklist::add(&sale.db, &sale.redis, "z", "bot")
            .await
            .unwrap();
    }
    let plan = [("a", 1), ("z", 1), ("a", 1), ("a", 1), ("b", 1), ("c", 1)];
    let a = run(&batched, 0, &[], &plan, true).await;
    assert_eq!(a, run(&single, 0, &[], &plan, false).await);
    assert_eq!(
        a.iter().map(|o| o.0).collect::<Vec<_>>(),
        ["ok", "blacklisted", "ok", "limit_exceeded", "ok", "sold_out"]
    );
    assert_eq!(state(&batched, 0).await, state(&single, 0).await);
    batched.finish().await;
    single.finish().await;
}

/// With both the blacklist and the revoked set present, each probed once per batch: a listed
/// buyer is refused before any other check (blacklisted before revoked), in the usual and the
/// unusual requests alike, in a batch of one product and one of two, and the rest are decided
/// as one by one.
/// Decides `plan` in one call on `batched` and one call per purchase on `single`: the same
/// outcomes on both, with these codes.
pub(crate) async fn same_verdicts(batched: &TestApp, single: &TestApp, plan: &[(usize, &str, u32)], codes: &[&str]) {
    let outcomes = run_mixed(batched, plan, true).await;
    assert_eq!(outcomes, run_mixed(single, plan, false).await);
    assert_eq!(outcomes.iter().map(|o| o.0).collect::<Vec<_>>(), codes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blacklisted_and_revoked_buyers_match_one_by_one() {
    let products = vec![spec(4, 2, 2), spec(4, 2, 2)];
    let batched = TestApp::builder().sale(products.clone()).build().await;
    let single = TestApp::builder().sale(products).build().await;
    for sale in [&batched, &single] {
        seckill::ops::blacklist::add(&sale.db, &sale.redis, "z", "bot")
            .await
            .unwrap();
        seckill::ops::token::revoke(&sale.redis, sale.activity, "r")
            .await
            .unwrap();
        seckill::ops::token::revoke(&sale.redis, sale.activity, "z")
            .await
            .unwrap();
    }
    let one = [
        (0, "a", 1),
        (0, "z", 1),
        (0, "r", 1),
        (0, "r", 2),
        (0, "z", 3),
        (0, "b", 2),
        (0, "a", 1),
    ];
    same_verdicts(
        &batched,
        &single,
        &one,
        &[
            "ok",
            "blacklisted",
            "invalid_token",
            "invalid_token",
            "blacklisted",
            "ok",
            "ok",
        ],
    )
    .await;
    let two = [
        (1, "r", 1),
        (0, "c", 1),
        (1, "z", 1),
        (1, "d", 2),
        (0, "r", 1),
        (1, "d", 1),
    ];
    same_verdicts(
        &batched,
        &single,
        &two,
        &[
            "invalid_token",
            "sold_out",
            "blacklisted",
            "ok",
            "invalid_token",
            "limit_exceeded",
        ],
    )
    .await;
    for index in 0..2 {
        assert_eq!(
            state(&batched, index).await,
            state(&single, index).await,
            "product {index}"
        );
    }
    batched.finish().await;
    single.finish().await;
}

/// A sale of 100 units with one buyer each, built by `builder` (with `serve`): a burst of 20
/// buyers, decided in full, then a lone buyer, whose purchase took the time returned; 79 units
/// are left.
async fn lone_buyer_after_a_burst(builder: crate::helpers::AppBuilder) -> std::time::Duration {
    let sale = std::sync::Arc::new(builder.sale(vec![spec(100, 1, 1)]).serve().build().await);
    let burst = sale
        .buy_at_once(sale.product, crate::helpers::users("burst", 20).collect())
        .await;
    for (user, (status, body)) in &burst {
        assert_eq!(status.as_u16(), 200, "{user}: {body}");
    }
    let token = sale.token("lone").await;
    let started = std::time::Instant::now();
    let (status, body) = sale.buy(sale.product, "lone", 1, &token).await;
    let took = started.elapsed();
    assert_eq!(status.as_u16(), 200, "{body}");
    assert_eq!(sale.product_hash(sale.activity, sale.product).await["stock"], "79");
    std::sync::Arc::try_unwrap(sale)
        .ok()
        .expect("sole owner")
        .finish()
        .await;
    took
}

/// Under `aof_always`, where every call costs an fsync, a short batch after a batch of
/// several buyers waits (`funnel.batch_linger_us_aof_always`) for as many buyers as were just
/// answered, who usually come straight back. Here nobody comes, so a lone buyer right after a
/// burst waits the whole delay.
#[tokio::test]
async fn a_short_batch_after_a_burst_waits_for_the_buyers_just_answered_under_aof_always() {
    const LINGER: std::time::Duration = std::time::Duration::from_millis(100);
    let own =
        crate::redis_servers::OwnRedis::start_with(&["--appendonly", "yes", "--appendfsync", "always", "--save", ""])
            .await;
    let builder = TestApp::builder().redis(own.url()).tune(|c| {
        c.redis.durability = seckill::durability::Durability::AofAlways;
        c.funnel.batch_linger_us_aof_always = LINGER.as_micros() as u64;
        c.funnel.batch_linger_us = 0;
        c.funnel.batch_pipeline_aof_always = 1;
    });
    let took = lone_buyer_after_a_burst(builder).await;
    assert!(
        took >= LINGER,
        "the lone buyer after the burst went in {took:?}, without the delay"
    );
}

/// Under the other policies a batch gathers only while purchases keep arriving
/// (`funnel.batch_linger_us` is the most it gathers): a lone buyer after a burst, whom
/// nobody follows, goes after one turn of the runtime, not after the delay.
#[tokio::test]
async fn a_lone_buyer_after_a_burst_does_not_wait_for_buyers_who_are_not_coming_under_durability_none() {
    const LINGER: std::time::Duration = std::time::Duration::from_secs(5);
    let builder = TestApp::builder().tune(|c| {
        assert_eq!(c.redis.durability, seckill::durability::Durability::None);
        c.funnel.batch_linger_us = LINGER.as_micros() as u64;
        c.funnel.batch_linger_us_aof_always = 0;
        c.funnel.batch_pipeline = 1;
    });
    let took = lone_buyer_after_a_burst(builder).await;
    assert!(
        took < LINGER / 2,
        "the lone buyer after the burst waited {took:?}, for buyers who were not coming"
    );
}
