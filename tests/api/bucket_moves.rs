//! Moves of a sharded product's units (an order no single bucket holds, gathered into one
//! bucket: `seckill::buckets::moves`) stopped between their steps, driven here through the
//! library's steps as `serve` runs them: `reconcile --fix` during a live move neither puts its
//! units back nor lets them be sold twice; a move left behind is reported (exit 1) and ended by
//! `--fix` exactly once, also against its mover waking up later. Proven by counting: units
//! sold + units on sale == stock, and a later burst sells exactly the rest.

use std::sync::Arc;

use redis::AsyncCommands;
use seckill::buckets::moves::Move;
use seckill::buckets::quota::{self, Quota};
use seckill::buy::Purchase;
use serde_json::Value;

use crate::helpers::{spec, users, ProductSpec, TestApp};

/// 6 units of limit 5 in 3 buckets of 2: an order of 5 fits in no single bucket.
fn three_buckets_of_two() -> ProductSpec {
    ProductSpec {
        shards: Some(3),
        ..spec(6, 5, 5)
    }
}

/// Each bucket's (stock, sold).
async fn buckets_of(app: &TestApp, product: u64) -> Vec<(i64, i64)> {
    let keys = app.redis.keys();
    let mut out = Vec::new();
    for k in 0..3 {
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

/// Units on sale, units sold (summed over the buckets).
async fn on_sale_and_sold(app: &TestApp, product: u64) -> (i64, i64) {
    let b = buckets_of(app, product).await;
    (b.iter().map(|b| b.0).sum(), b.iter().map(|b| b.1).sum())
}

/// What `serve` does before a move: the buyer's quota of `quantity`, then the move noted
/// (to take from buckets 0, 1, 2).
async fn note_move(app: &TestApp, product: u64, user: &str, quantity: u32) -> Move {
    let purchase = Purchase {
        product_id: product,
        user_id: user.into(),
        quantity,
        token: app.token(user).await,
    };
    let quotas = quota::take(&app.redis, app.activity, 0, &[purchase]).await.unwrap();
    assert_eq!(quotas, vec![Quota::Taken]);
    Move::note(&app.redis, app.activity, product, quantity, &[0, 1, 2], user)
        .await
        .unwrap()
}

/// [`note_move`], then its units taken (all of them in hand).
async fn start_move(app: &TestApp, product: u64, user: &str, quantity: u32) -> Move {
    let mut mv = note_move(app, product, user, quantity).await;
    assert!(mv.take(&app.redis).await.unwrap(), "{:?}", mv.in_hand());
    assert_eq!(mv.in_hand().iter().map(|(_, n)| n).sum::<u64>(), u64::from(quantity));
    mv
}

async fn price(app: &TestApp, product: u64) -> String {
    app.product_hash(app.activity, product).await["price"].clone()
}

/// Classes of the findings in a `reconcile --json` report.
fn classes(report: &Value, list: &str) -> Vec<String> {
    report[list]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| format!("{} {}", f["class"].as_str().unwrap(), f["subject"].as_str().unwrap()))
        .collect()
}

/// `burst` buyers of one unit each: how many got one.
async fn sold_in_burst(sale: &Arc<TestApp>, product: u64, prefix: &str, burst: usize) -> usize {
    let answers = sale.buy_at_once(product, users(prefix, burst).collect()).await;
    answers.iter().filter(|(_, (status, _))| status.as_u16() == 200).count()
}

/// The oversell this guards against: a move has 5 units in hand (taken from the three buckets,
/// not yet sold) when `reconcile --fix` runs on the live sale. Reconcile counts them in flight
/// (exit 0, nothing put back); the move then sells them; 1 unit is left and a burst of 10 gets
/// exactly it. Orders hold 6 units, the stock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_fix_during_a_move_does_not_put_its_units_back() {
    let sale = Arc::new(
        TestApp::builder()
            .pipeline()
            .sale(vec![three_buckets_of_two()])
            .serve()
            .build()
            .await,
    );
    let (a, product) = (sale.activity.to_string(), sale.product);
    let mv = start_move(&sale, product, "mover", 5).await;
    assert_eq!(on_sale_and_sold(&sale, product).await, (1, 0));

    let found = sale.cli(&["reconcile", &a, "--json"]).await;
    assert_eq!(found.code, 0, "{found:?}");
    let report = found.json();
    assert_eq!(
        classes(&report, "findings"),
        vec![format!("in_flight move {}", mv.id())],
        "{report}"
    );
    assert_eq!(report["products"][0]["moving_units"], 5, "{report}");
    let fixed = sale.cli(&["reconcile", &a, "--fix", "--json"]).await;
    assert_eq!(fixed.code, 0, "{fixed:?}");
    assert_eq!(
        on_sale_and_sold(&sale, product).await,
        (1, 0),
        "the units in hand stay off sale"
    );

    let (order_no, remaining) = mv
        .sell(&sale.redis, &price(&sale, product).await)
        .await
        .unwrap()
        .unwrap();
    mv.clear(&sale.redis).await.unwrap();
    assert_eq!(
        remaining,
        buckets_of(&sale, product).await[usize::from(mv.in_hand()[0].0)].0
    );
    assert_eq!(on_sale_and_sold(&sale, product).await, (1, 5));
    assert_eq!(sold_in_burst(&sale, product, "late", 10).await, 1);
    assert_eq!(on_sale_and_sold(&sale, product).await, (0, 6));

    sale.drain().await;
    let units = sale
        .scalar("SELECT CAST(COALESCE(SUM(quantity), 0) AS SIGNED) FROM orders WHERE activity_id = ?")
        .await;
    assert_eq!(units, 6, "units sold == stock");
    assert_eq!(
        sale.scalar(&format!(
            "SELECT CAST(quantity AS SIGNED) FROM orders WHERE activity_id = ? AND order_no = '{order_no}'"
        ))
        .await,
        5
    );
    sale.cli(&["reconcile", &a]).await.ok();
    Arc::into_inner(sale).unwrap().finish().await;
}

/// Moves left behind (grace 0: no move is young): one stopped with its units in hand, one
/// stopped after its sale but before dropping its note, one stopped before taking anything.
/// `reconcile` reports all three (exit 1); `--fix` puts the first one's 5 units back (once: a
/// second `--fix` and the mover waking up later, selling, putting back, change nothing), only
/// drops the second one's note, and closes the third one's buckets so it cannot take later.
/// Then bursts sell exactly the rest: 6 of the first product, 1 of the second; orders hold
/// exactly the stock of each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_left_behind_is_reported_and_ended_once() {
    let sale = Arc::new(
        TestApp::builder()
            .pipeline()
            .tune(|c| c.orders.in_flight_grace_secs = 0)
            .sale(vec![three_buckets_of_two(), three_buckets_of_two()])
            .serve()
            .build()
            .await,
    );
    let a = sale.activity.to_string();
    // The CLI reads this test's config (its grace of 0) from the file.
    let config = sale.config_path.to_str().unwrap().to_string();
    let (stalled, sold) = (sale.products[0], sale.products[1]);
    let left = start_move(&sale, stalled, "stalled", 5).await;
    let done = start_move(&sale, sold, "quick", 5).await;
    let mut early = note_move(&sale, stalled, "early", 5).await;
    done.sell(&sale.redis, &price(&sale, sold).await)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(on_sale_and_sold(&sale, stalled).await, (1, 0));
    assert_eq!(on_sale_and_sold(&sale, sold).await, (1, 5));
    sale.drain().await;

    let found = sale.cli(&["--config", &config, "reconcile", &a, "--json"]).await;
    assert_eq!(found.code, 1, "{found:?}");
    let mut want = vec![
        format!("unfinished_move move {}", left.id()),
        format!("unfinished_move move {}", done.id()),
        format!("unfinished_move move {}", early.id()),
    ];
    want.sort();
    let mut got = classes(&found.json(), "findings");
    got.sort();
    assert_eq!(got, want, "{}", found.stdout);

    let fixed = sale
        .cli(&["--config", &config, "reconcile", &a, "--fix", "--json"])
        .await;
    assert_eq!(fixed.code, 0, "{fixed:?}");
    let report = fixed.json();
    let repairs = report["repairs"].to_string();
    assert!(
        repairs.contains(&format!("move {}: 5 unit(s) back", left.id())),
        "{repairs}"
    );
    assert!(
        repairs.contains(&format!("move {}: its units were sold", done.id())),
        "{repairs}"
    );
    assert!(
        repairs.contains(&format!("move {}: 0 unit(s) back", early.id())),
        "{repairs}"
    );
    assert_eq!(on_sale_and_sold(&sale, stalled).await, (6, 0));
    assert_eq!(on_sale_and_sold(&sale, sold).await, (1, 5));
    let moving: usize = sale
        .redis
        .conn()
        .hlen(sale.redis.keys().moving(sale.activity))
        .await
        .unwrap();
    assert_eq!(moving, 0, "every note dropped");

    // Once: a second --fix and the stalled mover waking up change nothing.
    sale.cli(&["--config", &config, "reconcile", &a, "--fix"]).await.ok();
    assert_eq!(
        left.sell(&sale.redis, &price(&sale, stalled).await).await.unwrap(),
        None
    );
    let back = left.put_back(&sale.redis).await.unwrap();
    assert!(back.iter().all(|&(_, n)| n == 0), "{back:?}");
    assert!(!early.take(&sale.redis).await.unwrap(), "its buckets are closed");
    assert!(early.in_hand().is_empty());
    assert_eq!(on_sale_and_sold(&sale, stalled).await, (6, 0));

    assert_eq!(sold_in_burst(&sale, stalled, "rest", 12).await, 6);
    assert_eq!(sold_in_burst(&sale, sold, "last", 5).await, 1);
    assert_eq!(on_sale_and_sold(&sale, stalled).await, (0, 6));
    assert_eq!(on_sale_and_sold(&sale, sold).await, (0, 6));
    sale.drain().await;
    for product in [stalled, sold] {
        let units = sale
            .scalar(&format!(
                "SELECT CAST(COALESCE(SUM(quantity), 0) AS SIGNED) FROM orders WHERE activity_id = ? AND product_id = {product}"
            ))
            .await;
        assert_eq!(units, 6, "product {product}: units sold == stock");
    }
    sale.cli(&["--config", &config, "reconcile", &a]).await.ok();
    Arc::into_inner(sale).unwrap().finish().await;
}
