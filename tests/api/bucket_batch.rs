//! The batched bucket path (`seckill::buckets`): one group-commit batch mixing plain and
//! sharded products with several buyers per bucket (one call and one stream entry per
//! bucket, the buyers' totals in their buckets), a purchase moving on to the next bucket, and orders of several units no single
//! bucket holds (gathered into one bucket, nothing oversold, nothing left behind).

use std::collections::HashMap;
use std::sync::Arc;

use redis::AsyncCommands;
use seckill::buckets::quota::bucket_of_user;
use seckill::buckets::{reserve_routed, Sharded};
use seckill::buy::{Outcome, Purchase, Verdict};

use crate::bucket_quota::users_in;
use crate::helpers::{spec, ProductSpec, TestApp};

/// `spec(stock, limit, max_per_order)` with `shards` buckets.
fn sharded(stock: u32, limit: u32, max_per_order: u32, shards: u16) -> ProductSpec {
    ProductSpec {
        shards: Some(shards),
        ..spec(stock, limit, max_per_order)
    }
}

/// Each bucket's (stock, sold).
async fn buckets_of(app: &TestApp, product: u64, shards: u16) -> Vec<(i64, i64)> {
    let keys = app.redis.keys();
    let mut out = Vec::new();
    for k in 0..shards {
        let (stock, sold): (Option<i64>, Option<i64>) = app
            .redis
            .conn()
            .hmget(keys.bucket_product(app.activity, k, product), &["stock", "sold"])
            .await
            .unwrap();
        out.push((stock.expect("bucket loaded"), sold.unwrap_or(0)));
    }
    out
}

/// Purchases in each entry of a stream, in order.
async fn entry_sizes(app: &TestApp, stream: &str) -> Vec<usize> {
    seckill::reservation::read_all(&app.redis, stream)
        .await
        .unwrap()
        .iter()
        .map(|e| seckill::reservation::purchases(e).unwrap().len())
        .collect()
}

/// One batch as `serve`'s batcher sends it: (product, user, quantity, with the user's token
/// or a wrong one); each buyer's token registered once first.
async fn decide(app: &TestApp, sharded: &Sharded, batch: &[(u64, &str, u32, bool)]) -> Vec<Verdict> {
    let mut tokens: HashMap<&str, String> = HashMap::new();
    let mut purchases = Vec::new();
    for &(product, user, quantity, not_revoked) in batch {
        if !tokens.contains_key(user) {
            tokens.insert(user, app.token(user).await);
        }
        // `serve` checks the token's signature before the batch; Redis refuses revoked users.
        if !not_revoked {
            seckill::ops::token::revoke(&app.redis, app.activity, user)
                .await
                .unwrap();
        }
        purchases.push(Purchase {
            product_id: product,
            user_id: user.to_string(),
            quantity,
            token: tokens[user].clone(),
        });
    }
    reserve_routed(&app.redis, app.activity, 0, &purchases, sharded)
        .await
        .unwrap()
}

fn outcomes(verdicts: &[Verdict]) -> Vec<Outcome> {
    verdicts.iter().map(|v| v.outcome).collect()
}

/// One batch of 14 purchases: a product of 6 units in 2 buckets (six buyers, then one of them
/// over the limit, and one whose token was revoked), a plain product (two buyers) and a product of
/// 3 units in 2 buckets (2 + 1) with four buyers, two in each bucket. Every sharded purchase is
/// decided in its buyer's bucket: each bucket gets exactly one call and one stream entry
/// holding both products' purchases (5 in bucket 0, 4 in bucket 1), no activity-slot call; the plain ones one entry in the activity's
/// stream. The fourth buyer of the small product is `sold_out` with their quota given back.
/// The consumer persists 11 orders and reconcile is clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_batch_mixes_plain_and_sharded_products_with_one_entry_per_bucket() {
    let app = TestApp::builder()
        .pipeline()
        .sale(vec![sharded(6, 2, 2, 2), spec(5, 1, 1), sharded(3, 1, 1, 2)])
        .build()
        .await;
    let (hot, plain, small) = (app.products[0], app.products[1], app.products[2]);
    assert_eq!(buckets_of(&app, hot, 2).await, vec![(3, 0), (3, 0)]);
    assert_eq!(buckets_of(&app, small, 2).await, vec![(2, 0), (1, 0)]);
    // Buyers picked by their bucket (of 2): three of the big product's in each, two of the
    // small product's in bucket 0 (2 units) and two in bucket 1 (1 unit).
    let (h0, h1) = (users_in("h", 0, 2, 3), users_in("h", 1, 2, 3));
    let (s0, s1) = (users_in("s", 0, 2, 2), users_in("s", 1, 2, 2));
    let a = h0[0].as_str();
    let batch = [
        (hot, a, 1, true),
        (small, s0[0].as_str(), 1, true),
        (plain, "p1", 1, true),
        (hot, h1[0].as_str(), 1, true),
        (hot, h0[1].as_str(), 1, true),
        (small, s1[0].as_str(), 1, true),
        (hot, h1[1].as_str(), 1, true),
        (hot, a, 2, true),
        (hot, "g", 1, false),
        (small, s0[1].as_str(), 1, true),
        (hot, h0[2].as_str(), 1, true),
        (plain, "p2", 1, true),
        (small, s1[1].as_str(), 1, true),
        (hot, h1[2].as_str(), 1, true),
    ];
    let verdicts = decide(&app, &Sharded::default(), &batch).await;
    let got = outcomes(&verdicts);
    use Outcome::{InvalidToken, LimitExceeded, Ok as Queued};
    for (i, &(product, user, _, _)) in batch.iter().enumerate() {
        match (product == small, user) {
            (_, "g") => assert_eq!(got[i], InvalidToken, "{verdicts:?}"),
            (false, u) if u == a && i == 7 => assert_eq!(got[i], LimitExceeded, "{verdicts:?}"),
            (false, _) => assert_eq!(got[i], Queued, "{i}: {verdicts:?}"),
            (true, _) => {}
        }
    }
    assert_eq!(
        got[12],
        Outcome::SoldOut,
        "the small product's second buyer in bucket 1 finds it empty, and bucket 0 too: {verdicts:?}"
    );
    let small_outcomes: Vec<Outcome> = (0..batch.len())
        .filter(|&i| batch[i].0 == small)
        .map(|i| got[i])
        .collect();
    assert_eq!(
        small_outcomes.iter().filter(|&&o| o == Queued).count(),
        3,
        "{verdicts:?}"
    );
    assert_eq!(
        small_outcomes.iter().filter(|&&o| o == Outcome::SoldOut).count(),
        1,
        "{verdicts:?}"
    );
    let numbers: Vec<&str> = verdicts.iter().filter_map(|v| v.order_no.as_deref()).collect();
    assert_eq!(numbers.len(), 11);
    assert_eq!(
        numbers.iter().collect::<std::collections::HashSet<_>>().len(),
        11,
        "distinct order numbers: {numbers:?}"
    );

    let keys = app.redis.keys();
    assert_eq!(
        entry_sizes(&app, &keys.bucket_orders(app.activity, 0)).await,
        vec![5],
        "one entry for bucket 0's call"
    );
    assert_eq!(entry_sizes(&app, &keys.bucket_orders(app.activity, 1)).await, vec![4]);
    assert_eq!(entry_sizes(&app, &keys.orders_stream(app.activity)).await, vec![2]);
    assert_eq!(buckets_of(&app, hot, 2).await, vec![(0, 3), (0, 3)]);
    assert_eq!(buckets_of(&app, small, 2).await, vec![(0, 2), (0, 1)]);
    let bought = app.bucket_totals(app.activity, hot, 2).await;
    assert_eq!(
        bought.get(a),
        Some(&1),
        "the refused second purchase took nothing: {bought:?}"
    );
    assert_eq!(bought.values().sum::<i64>(), 6, "{bought:?}");
    for (user, _) in bought.iter() {
        let k = bucket_of_user(user, 2);
        let there: Option<i64> = app
            .redis
            .conn()
            .hget(keys.bucket_bought(app.activity, k, hot), user)
            .await
            .unwrap();
        assert_eq!(there, Some(1), "{user}'s total is in their bucket {k}");
    }
    let small_bought = app.bucket_totals(app.activity, small, 2).await;
    assert_eq!(
        small_bought.len(),
        3,
        "the sold_out buyer's quota was given back: {small_bought:?}"
    );

    app.drain().await;
    assert_eq!(app.orders().await, 11);
    app.cli(&["reconcile", &app.activity.to_string()]).await.ok();
}

/// One bucket call with two sharded products reads each product's buyers' totals with its own
/// HMGET: a buyer of the second product who already holds its limit is refused there even when
/// the call's first requests are of the first product (each request finds its buyer's total in
/// its own product's reply), while a buyer of the first product with nothing yet is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_product_bucket_call_reads_each_buyers_own_total() {
    let app = TestApp::builder()
        .sale(vec![sharded(6, 1, 1, 2), sharded(6, 1, 1, 2)])
        .build()
        .await;
    let (first, second) = (app.products[0], app.products[1]);
    let users = users_in("t", 0, 2, 3);
    let (x, y, z) = (users[0].as_str(), users[1].as_str(), users[2].as_str());
    let earlier = decide(&app, &Sharded::default(), &[(second, x, 1, true)]).await;
    assert_eq!(outcomes(&earlier), vec![Outcome::Ok]);
    let batch = [
        (first, y, 1, true),
        (first, z, 1, true),
        (second, x, 1, true),
        (first, x, 1, true),
    ];
    let verdicts = decide(&app, &Sharded::default(), &batch).await;
    assert_eq!(
        outcomes(&verdicts),
        vec![Outcome::Ok, Outcome::Ok, Outcome::LimitExceeded, Outcome::Ok],
        "{verdicts:?}"
    );
    let firsts = app.bucket_totals(app.activity, first, 2).await;
    assert_eq!(firsts.values().sum::<i64>(), 3, "{firsts:?}");
    let seconds = app.bucket_totals(app.activity, second, 2).await;
    assert_eq!(seconds.get(x), Some(&1), "{seconds:?}");
}

/// A purchase whose bucket is empty moves on to a bucket that has units: 8 buckets of one unit,
/// 8 buyers one after another (each its own batch, each starting at the buyer's bucket; without
/// moving on, two buyers sharing a bucket would leave a unit behind) all get one; the ninth
/// is `sold_out` with their quota given back, every bucket empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purchase_moves_on_to_a_bucket_with_units() {
    let app = TestApp::builder()
        .pipeline()
        .sale(vec![sharded(8, 1, 1, 8)])
        .build()
        .await;
    let sharded_seen = Sharded::default();
    for i in 0..8 {
        let user = format!("u{i}");
        let verdicts = decide(&app, &sharded_seen, &[(app.product, &user, 1, true)]).await;
        assert_eq!(outcomes(&verdicts), vec![Outcome::Ok], "buyer {i}: {verdicts:?}");
    }
    let late = decide(&app, &sharded_seen, &[(app.product, "late", 1, true)]).await;
    assert_eq!((late[0].outcome, late[0].remaining), (Outcome::SoldOut, 0), "{late:?}");
    assert_eq!(buckets_of(&app, app.product, 8).await, vec![(0, 1); 8]);
    let held = app.bucket_totals(app.activity, app.product, 8).await;
    assert_eq!(held.get("late"), None, "{held:?}");
    assert_eq!(held.len(), 8, "{held:?}");
    app.drain().await;
    assert_eq!(app.orders().await, 8);
    app.cli(&["reconcile", &app.activity.to_string()]).await.ok();
}

/// Orders of several units that no single bucket holds: 2 buckets of 1 unit, one buyer asking
/// 2 (limit 2) through `seckill serve` gets both, as one order; the next buyer is `sold_out`.
/// 3 buckets of 1 unit and two buyers asking 2 in one batch: exactly one gets 2, the other is
/// `sold_out` with their quota given back, and the third unit is still on sale in a bucket
/// (nothing oversold, nothing left off sale). The consumer persists the orders and reconcile is
/// clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_no_single_bucket_holds_gathers_its_units() {
    let sale = Arc::new(
        TestApp::builder()
            .pipeline()
            .sale(vec![sharded(2, 2, 2, 2), sharded(3, 2, 2, 3)])
            .serve()
            .build()
            .await,
    );
    let (pair, three) = (sale.products[0], sale.products[1]);
    assert_eq!(buckets_of(&sale, pair, 2).await, vec![(1, 0), (1, 0)]);
    let token = sale.token("whole").await;
    let (status, body) = sale.buy(pair, "whole", 2, &token).await;
    assert_eq!(status.as_u16(), 200, "{body}");
    let stock: Vec<i64> = buckets_of(&sale, pair, 2).await.iter().map(|b| b.0).collect();
    let sold: i64 = buckets_of(&sale, pair, 2).await.iter().map(|b| b.1).sum();
    assert_eq!((stock, sold), (vec![0, 0], 2));
    let token = sale.token("next").await;
    let (status, body) = sale.buy(pair, "next", 1, &token).await;
    assert_eq!(
        (status.as_u16(), body["error"].as_str()),
        (409, Some("sold_out")),
        "{body}"
    );

    let verdicts = decide(
        &sale,
        &Sharded::default(),
        &[(three, "x", 2, true), (three, "y", 2, true)],
    )
    .await;
    let mut got = outcomes(&verdicts);
    got.sort_by_key(|o| o.code());
    assert_eq!(got, vec![Outcome::Ok, Outcome::SoldOut], "{verdicts:?}");
    let buckets = buckets_of(&sale, three, 3).await;
    assert_eq!(
        buckets.iter().map(|b| b.0).sum::<i64>(),
        1,
        "one unit still on sale: {buckets:?}"
    );
    assert_eq!(buckets.iter().map(|b| b.1).sum::<i64>(), 2, "{buckets:?}");
    let bought = sale.bucket_totals(sale.activity, three, 3).await;
    assert_eq!(bought.values().collect::<Vec<_>>(), vec![&2], "{bought:?}");

    sale.drain().await;
    assert_eq!(sale.orders().await, 2);
    let units = sale
        .scalar("SELECT CAST(SUM(quantity) AS SIGNED) FROM orders WHERE activity_id = ?")
        .await;
    assert_eq!(units, 4);
    sale.cli(&["reconcile", &sale.activity.to_string()]).await.ok();
    Arc::into_inner(sale).unwrap().finish().await;
}
