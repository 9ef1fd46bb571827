//! The operator's commands on a product whose stock is in buckets, while it is on sale:
//! `stock add` spread over the buckets and `stock sold-out` emptying them, each exactly once
//! per bucket (a change stopped midway is resumed by `reconcile --fix`, a late call of it adds
//! nothing); `reconcile` judging each bucket and `--fix` repairing drifted counters; a return
//! cut short finished once. Real Redis and MariaDB; the cluster case is in buckets.rs.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use redis::AsyncCommands;
use seckill::buckets::quota::held;
use seckill::buckets::stock::live::{self, Change};
use seckill::buckets::stock::Return;
use seckill::ops::stock::Applied;
use serde_json::Value;

use crate::helpers::{spec, ProductSpec, TestApp};

fn sharded(stock: u32, shards: u16) -> ProductSpec {
    ProductSpec {
        shards: Some(shards),
        ..spec(stock, 1, 1)
    }
}

/// Each bucket's (stock, sold).
async fn buckets(app: &TestApp, shards: u16) -> Vec<(i64, i64)> {
    let keys = app.redis.keys();
    let mut out = Vec::new();
    for k in 0..shards {
        let (stock, sold): (Option<i64>, Option<i64>) = app
            .redis
            .conn()
            .hmget(keys.bucket_product(app.activity, k, app.product), &["stock", "sold"])
            .await
            .unwrap();
        out.push((stock.expect("bucket loaded"), sold.unwrap_or(0)));
    }
    out
}

async fn on_sale(app: &TestApp, shards: u16) -> i64 {
    buckets(app, shards).await.iter().map(|b| b.0).sum()
}

/// `n` fresh buyers (`prefix0`...) each buy one unit at once; how many were queued (every
/// other answer must be `sold_out`).
async fn burst(sale: &Arc<TestApp>, prefix: &str, n: usize) -> usize {
    let users = (0..n).map(|i| format!("{prefix}{i}")).collect();
    let answers = sale.buy_at_once(sale.product, users).await;
    let refused: Vec<_> = answers.iter().filter(|(_, (s, _))| *s != 200).collect();
    assert!(
        refused.iter().all(|(_, (_, body))| body["error"] == "sold_out"),
        "{refused:?}"
    );
    answers.len() - refused.len()
}

/// `serve` answers sold_out from memory for funnel.sold_out_cache_ms (1 s) after it last saw 0.
async fn past_the_sold_out_cache() {
    tokio::time::sleep(Duration::from_millis(1200)).await;
}

async fn ledger_states(app: &TestApp) -> Vec<(String, i64, String)> {
    sqlx::query_as(
        "SELECT op, delta, state FROM stock_ledger WHERE activity_id = ? AND op IN ('adjust', 'sold_out', 'remove') \
         AND (ref IS NULL OR ref <> 'reconcile') ORDER BY id",
    )
    .bind(app.activity)
    .fetch_all(app.db.pool())
    .await
    .unwrap()
}

/// `stock add` while the sale runs spreads the units over the 4 buckets (6 as 2+2+1+1) and a
/// burst then buys exactly the old and the added units; a second add after a sell-out sells
/// again; `stock sold-out` empties every bucket, so every buyer is answered `sold_out`; the
/// ledger rows are done, MySQL's total follows, reconcile is clean. Bad input (0 units, more
/// than the total can hold, an unknown product) is refused with nothing changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_stock_changes_spread_over_the_buckets() {
    let sale = Arc::new(
        TestApp::builder()
            .pipeline()
            .sale(vec![sharded(10, 4)])
            .serve()
            .build()
            .await,
    );
    let p = sale.product.to_string();
    let a = sale.activity.to_string();
    let loaded = buckets(&sale, 4).await;
    assert_eq!(loaded.iter().map(|b| b.0).collect::<Vec<_>>(), vec![3, 3, 2, 2]);

    let added = sale.cli(&["stock", "add", &p, "6", "--json"]).await.json();
    assert_eq!(
        (added["delta"].as_i64(), added["redis_stock"].as_i64()),
        (Some(6), Some(16)),
        "{added}"
    );
    assert_eq!(added["total_stock"], 16, "{added}");
    let mut shares: Vec<i64> = buckets(&sale, 4)
        .await
        .iter()
        .zip(&loaded)
        .map(|(after, before)| after.0 - before.0)
        .collect();
    shares.sort();
    assert_eq!(shares, vec![1, 1, 2, 2], "6 units as evenly as whole units allow");
    let status = sale.cli(&["status", &a, "--buckets", "--json"]).await.json();
    let listed: Vec<i64> = status["products"][0]["buckets"]
        .as_array()
        .expect("buckets listed")
        .iter()
        .map(|b| b["stock"].as_i64().unwrap())
        .collect();
    let now: Vec<i64> = buckets(&sale, 4).await.iter().map(|b| b.0).collect();
    assert_eq!(
        (listed, status["products"][0]["remaining"].as_i64()),
        (now, Some(16)),
        "{status}"
    );
    assert_eq!(burst(&sale, "first", 40).await, 16);
    assert_eq!(on_sale(&sale, 4).await, 0);

    sale.cli(&["stock", "add", &p, "3"]).await.ok();
    past_the_sold_out_cache().await;
    assert_eq!(burst(&sale, "second", 10).await, 3);

    sale.cli(&["stock", "add", &p, "5"]).await.ok();
    let withdrawn = sale.cli(&["stock", "sold-out", &p, "--json"]).await.json();
    assert_eq!(
        (withdrawn["delta"].as_i64(), withdrawn["redis_stock"].as_i64()),
        (Some(-5), Some(0)),
        "{withdrawn}"
    );
    assert_eq!(withdrawn["total_stock"], 19, "{withdrawn}");
    assert_eq!(on_sale(&sale, 4).await, 0);
    past_the_sold_out_cache().await;
    assert_eq!(burst(&sale, "third", 10).await, 0, "no bucket sells after sold-out");
    assert_eq!(
        ledger_states(&sale).await,
        vec![
            ("adjust".to_string(), 6, "done".to_string()),
            ("adjust".to_string(), 3, "done".to_string()),
            ("adjust".to_string(), 5, "done".to_string()),
            ("sold_out".to_string(), -5, "done".to_string()),
        ]
    );

    sale.drain().await;
    assert_eq!(sale.orders().await, 19);
    sale.cli(&["reconcile", &a]).await.ok();

    let before = sale.snapshot().await;
    sale.cli(&["stock", "add", &p, "0"]).await.fails_with(2, &["UNITS"]);
    sale.cli(&["stock", "add", &p, "4294967295"])
        .await
        .fails_with(1, &["total stock"]);
    sale.cli(&["stock", "add", "999999999", "1"])
        .await
        .fails_with(1, &["999999999"]);
    sale.cli(&["stock", "sold-out", "999999999"])
        .await
        .fails_with(1, &["999999999"]);
    assert_eq!(sale.snapshot().await, before, "bad input changed something");
    Arc::into_inner(sale).unwrap().finish().await;
}

/// A `stock add` killed midway (its ledger row pending, begun in Redis, one bucket of four
/// given its share): reconcile reports it (exit 1) and `--fix` resumes it, giving every other
/// bucket its share and none a second one; a late call of the killed change adds nothing.
/// A `stock remove` killed midway is resumed to take exactly the units asked. A burst then
/// buys exactly what is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_change_stopped_midway_is_resumed_exactly_once() {
    let sale = Arc::new(
        TestApp::builder()
            .pipeline()
            .tune(|c| c.orders.in_flight_grace_secs = 1)
            .sale(vec![sharded(8, 4)])
            .serve()
            .build()
            .await,
    );
    let (activity, product) = (sale.activity, sale.product);
    let preheated_at = sale.activity_hash(activity).await["preheated_at"].clone();
    // Step 1 of `stock add 6` in MySQL, as the command makes it.
    sale.sql(&format!(
        "UPDATE products SET total_stock = total_stock + 6 WHERE id = {product}"
    ))
    .await;
    let ledger: u64 = sqlx::query(
        "INSERT INTO stock_ledger (activity_id, product_id, op, delta, reason, state) VALUES (?, ?, 'adjust', 6, 'stock add', 'pending')",
    )
    .bind(activity)
    .bind(product)
    .execute(sale.db.pool())
    .await
    .unwrap()
    .last_insert_id();
    // Redis: begun, and the first share in its bucket; then the process is gone.
    let keys = sale.redis.keys().clone();
    let begun: Vec<redis::Value> = seckill::scripts::SHARDED_STOCK_BEGIN
        .key(keys.product(activity, product))
        .key(keys.stock_ops(activity))
        .key(keys.activity(activity))
        .arg(ledger)
        .arg("add")
        .arg(&preheated_at)
        .invoke_async(&mut sale.redis.conn())
        .await
        .unwrap();
    let redis::Value::BulkString(epoch) = &begun[2] else {
        panic!("{begun:?}")
    };
    let (first, share) = live::shares(ledger, 4, 6)[0];
    let did: i64 = seckill::scripts::BUCKET_STOCK_OP
        .key(keys.bucket_product(activity, first, product))
        .arg(ledger)
        .arg("add")
        .arg(share)
        .arg(epoch.as_slice())
        .invoke_async(&mut sale.redis.conn())
        .await
        .unwrap();
    assert_eq!(did, share as i64);
    assert_eq!(on_sale(&sale, 4).await, 8 + share as i64);

    let a = activity.to_string();
    // With this test's config (its 1 s in-flight grace).
    let config = sale.config_path.to_str().unwrap().to_string();
    let reconcile = |extra: &'static str| {
        let mut args = vec!["--config", config.as_str(), "reconcile", a.as_str()];
        if !extra.is_empty() {
            args.push(extra);
        }
        args.iter().map(|s| s.to_string()).collect::<Vec<String>>()
    };
    let run = |args: Vec<String>| {
        let sale = sale.clone();
        async move { sale.cli(&args.iter().map(String::as_str).collect::<Vec<_>>()).await }
    };
    let young = run(reconcile("--json")).await;
    assert!(young.ok().stdout.contains("not in every bucket yet"), "{young:?}");
    // Past orders.in_flight_grace_secs the change no longer counts as in flight.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let found = run(reconcile("--json")).await;
    assert_eq!(found.code, 1, "{found:?}");
    assert!(found.stdout.contains("unsettled_stock_change"), "{}", found.stdout);
    let fixed = run(reconcile("--fix")).await;
    assert!(fixed.ok().stdout.contains("completed"), "{fixed:?}");
    assert_eq!(on_sale(&sale, 4).await, 14, "every share once");
    let state: String = sqlx::query_scalar("SELECT state FROM stock_ledger WHERE id = ?")
        .bind(ledger)
        .fetch_one(sale.db.pool())
        .await
        .unwrap();
    assert_eq!(state, "done");
    let total: Option<i64> = sale
        .redis
        .conn()
        .hget(keys.product(activity, product), "total")
        .await
        .unwrap();
    assert_eq!(total, Some(14));
    // The killed process's late call: already done, nothing added.
    let late = live::apply(&sale.redis, activity, product, ledger, Change::Add(6), &preheated_at)
        .await
        .unwrap();
    assert_eq!(late, Applied::Units(6));
    assert_eq!(on_sale(&sale, 4).await, 14);
    sale.cli(&["reconcile", &a]).await.ok();

    // A `stock remove 3` killed after one bucket gave 1 unit: resumed, 3 taken in all.
    let remove: u64 = sqlx::query(
        "INSERT INTO stock_ledger (activity_id, product_id, op, delta, reason, state) VALUES (?, ?, 'remove', -3, 'stock remove', 'pending')",
    )
    .bind(activity)
    .bind(product)
    .execute(sale.db.pool())
    .await
    .unwrap()
    .last_insert_id();
    let _: Vec<redis::Value> = seckill::scripts::SHARDED_STOCK_BEGIN
        .key(keys.product(activity, product))
        .key(keys.stock_ops(activity))
        .key(keys.activity(activity))
        .arg(remove)
        .arg("remove")
        .arg("")
        .invoke_async(&mut sale.redis.conn())
        .await
        .unwrap();
    let took: i64 = seckill::scripts::BUCKET_STOCK_OP
        .key(keys.bucket_product(activity, 0, product))
        .arg(remove)
        .arg("remove")
        .arg(1)
        .arg(epoch.as_slice())
        .invoke_async(&mut sale.redis.conn())
        .await
        .unwrap();
    assert_eq!(took, 1);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    run(reconcile("--fix")).await.ok();
    assert_eq!(on_sale(&sale, 4).await, 11);
    let (delta, state): (i64, String) = sqlx::query_as("SELECT delta, state FROM stock_ledger WHERE id = ?")
        .bind(remove)
        .fetch_one(sale.db.pool())
        .await
        .unwrap();
    assert_eq!((delta, state.as_str()), (-3, "done"));
    assert_eq!(sale.product(product).await.total_stock, 11);
    sale.cli(&["reconcile", &a]).await.ok();

    assert_eq!(burst(&sale, "b", 30).await, 11);
    sale.drain().await;
    assert_eq!(sale.orders().await, 11);
    sale.cli(&["reconcile", &a]).await.ok();
    Arc::into_inner(sale).unwrap().finish().await;
}

/// Drifted bucket counters while the sale runs (one bucket's stock raised by 7 units that
/// MySQL does not have, another's `sold` by 3): reconcile reports the stock and the bucket
/// (exit 1); `--fix` takes the 7 units off sale and sets the bucket's `sold` right, after which
/// reconcile is clean and a burst buys exactly the units MySQL has; a bucket with units
/// missing gets them back the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drifted_bucket_counters_are_found_and_repaired_on_sale() {
    let sale = Arc::new(
        TestApp::builder()
            .pipeline()
            .sale(vec![sharded(20, 4)])
            .serve()
            .build()
            .await,
    );
    let (activity, product) = (sale.activity, sale.product);
    let keys = sale.redis.keys().clone();
    let a = activity.to_string();
    assert_eq!(burst(&sale, "early", 6).await, 6);
    sale.drain().await;

    let before = buckets(&sale, 4).await;
    let mut conn = sale.redis.conn();
    let () = conn
        .hset(keys.bucket_product(activity, 1, product), "stock", before[1].0 + 7)
        .await
        .unwrap();
    let () = conn
        .hset(keys.bucket_product(activity, 2, product), "sold", before[2].1 + 3)
        .await
        .unwrap();
    let found = sale.cli(&["reconcile", &a, "--json"]).await;
    assert_eq!(found.code, 1, "{found:?}");
    let report: Value = serde_json::from_str(&found.stdout).unwrap();
    let subjects: Vec<&str> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["subject"].as_str())
        .collect();
    assert!(subjects.contains(&"bucket 2 sold"), "{subjects:?}");
    assert!(subjects.contains(&"redis stock"), "{subjects:?}");

    sale.cli(&["reconcile", &a, "--fix"]).await.ok();
    sale.cli(&["reconcile", &a]).await.ok();
    let after = buckets(&sale, 4).await;
    assert_eq!(after[2].1, before[2].1, "bucket 2's sold set back: {after:?}");
    assert_eq!(after.iter().map(|b| b.0).sum::<i64>(), 14, "{after:?}");

    // Units missing from a bucket come back.
    let fullest = (0..4u16).max_by_key(|&k| after[usize::from(k)].0).unwrap();
    let () = conn
        .hset(keys.bucket_product(activity, fullest, product), "stock", 0)
        .await
        .unwrap();
    sale.cli(&["reconcile", &a]).await.fails_with(1, &[]);
    sale.cli(&["reconcile", &a, "--fix"]).await.ok();
    sale.cli(&["reconcile", &a]).await.ok();
    assert_eq!(on_sale(&sale, 4).await, 14);

    assert_eq!(burst(&sale, "late", 40).await, 14);
    sale.drain().await;
    assert_eq!(sale.orders().await, 20);
    sale.cli(&["reconcile", &a]).await.ok();
    Arc::into_inner(sale).unwrap().finish().await;
}

/// A cancelled order's return cut short after its first step (released, units not in their
/// bucket): reconcile reports it, `--fix` puts the unit into its bucket once (a second try
/// adds nothing) and it is bought again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_return_cut_short_is_finished_once() {
    let sale = Arc::new(
        TestApp::builder()
            .pipeline()
            .sale(vec![sharded(2, 4)])
            .serve()
            .build()
            .await,
    );
    let (activity, product) = (sale.activity, sale.product);
    let keys = sale.redis.keys().clone();
    let a = activity.to_string();
    let answers = sale.buy_at_once(product, vec!["x".into(), "y".into()]).await;
    let x = answers.iter().find(|(user, _)| user == "x").unwrap();
    let order_no = x.1 .1["order_no"].as_str().unwrap().to_string();
    sale.drain().await;
    // The command's MySQL side, then only step one of the return.
    sale.sql(&format!(
        "UPDATE orders SET status = 'cancelled' WHERE order_no = '{order_no}'"
    ))
    .await;
    sale.sql(&format!("UPDATE products SET sold = sold - 1 WHERE id = {product}"))
        .await;
    let released: i64 = seckill::scripts::RELEASE_SHARDED
        .key(keys.released(activity))
        .key(keys.product(activity, product))
        .key(keys.returning(activity))
        .key(keys.activity(activity))
        .arg(&order_no)
        .arg(1)
        .arg(product)
        .invoke_async(&mut sale.redis.conn())
        .await
        .unwrap();
    assert_eq!(released, 1);
    assert_eq!(on_sale(&sale, 4).await, 0);
    let total = || held(&sale.redis, activity, product, 4, "x");
    assert_eq!(
        total().await.unwrap(),
        1,
        "the buyer's total drops with the units going back"
    );
    // A bucket another `hot` loaded (its stock read from MySQL, which has the unit) takes none.
    let stale_return = Return {
        order_no: &order_no,
        user: "x",
        quantity: 1,
        epoch: "an-older-hot",
    };
    let stale = seckill::buckets::stock::finish_return(&sale.redis, activity, product, 4, &stale_return)
        .await
        .unwrap();
    assert_eq!(stale, -1);
    assert_eq!(on_sale(&sale, 4).await, 0);
    let () = sale
        .redis
        .conn()
        .hset(
            keys.returning(activity),
            &order_no,
            format!("{product}:1:{}", sale.activity_hash(activity).await["epoch"]),
        )
        .await
        .unwrap();

    let found = sale.cli(&["reconcile", &a]).await;
    assert_eq!(found.code, 1, "{found:?}");
    assert!(found.stdout.contains(&order_no), "{}", found.stdout);
    sale.cli(&["reconcile", &a, "--fix"]).await.ok();
    assert_eq!(on_sale(&sale, 4).await, 1);
    assert_eq!(total().await.unwrap(), 0, "lowered with the units");
    let epoch = sale.activity_hash(activity).await["epoch"].clone();
    let late_return = Return {
        order_no: &order_no,
        user: "x",
        quantity: 1,
        epoch: &epoch,
    };
    let again = seckill::buckets::stock::finish_return(&sale.redis, activity, product, 4, &late_return)
        .await
        .unwrap();
    assert_eq!(again, 0, "the bucket has it already");
    assert_eq!(on_sale(&sale, 4).await, 1);
    assert_eq!(total().await.unwrap(), 0, "lowered once");
    let left: HashMap<String, String> = sale.redis.conn().hgetall(keys.returning(activity)).await.unwrap();
    assert!(left.is_empty(), "{left:?}");
    sale.cli(&["reconcile", &a]).await.ok();

    past_the_sold_out_cache().await;
    assert_eq!(burst(&sale, "z", 5).await, 1);
    sale.drain().await;
    sale.cli(&["reconcile", &a]).await.ok();
    Arc::into_inner(sale).unwrap().finish().await;
}

/// `stock remove` takes units off sale, never reserved ones, for a product with buckets (from
/// the fullest buckets, none below zero) and one without: the totals in Redis and MySQL shrink
/// by as many, a burst then buys exactly what is left, reconcile is clean; asking more than is
/// on sale is refused (exit 1) with nothing changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_remove_takes_units_off_sale_and_never_reserved_ones() {
    let sale = Arc::new(
        TestApp::builder()
            .pipeline()
            .sale(vec![sharded(10, 4), spec(5, 1, 1)])
            .serve()
            .build()
            .await,
    );
    let (hot, plain) = (sale.products[0], sale.products[1]);
    let (p, q, a) = (hot.to_string(), plain.to_string(), sale.activity.to_string());
    assert_eq!(burst(&sale, "first", 2).await, 2);

    let removed = sale.cli(&["stock", "remove", &p, "4", "--json"]).await.json();
    assert_eq!(
        (
            removed["delta"].as_i64(),
            removed["redis_stock"].as_i64(),
            removed["total_stock"].as_i64()
        ),
        (Some(-4), Some(4), Some(6)),
        "{removed}"
    );
    let left = buckets(&sale, 4).await;
    assert!(left.iter().all(|b| b.0 >= 0), "{left:?}");
    assert_eq!(left.iter().map(|b| b.0).sum::<i64>(), 4, "{left:?}");
    assert_eq!(
        left.iter().map(|b| b.1).sum::<i64>(),
        2,
        "the reserved units stay sold: {left:?}"
    );
    let plain_removed = sale.cli(&["stock", "remove", &q, "2", "--json"]).await.json();
    assert_eq!(
        (
            plain_removed["delta"].as_i64(),
            plain_removed["redis_stock"].as_i64(),
            plain_removed["total_stock"].as_i64()
        ),
        (Some(-2), Some(3), Some(3)),
        "{plain_removed}"
    );

    let before = sale.snapshot().await;
    sale.cli(&["stock", "remove", &p, "5"]).await.fails_with(1, &["only 4"]);
    sale.cli(&["stock", "remove", &q, "4"]).await.fails_with(1, &["only 3"]);
    sale.cli(&["stock", "remove", &p, "0"]).await.fails_with(2, &["UNITS"]);
    assert_eq!(sale.snapshot().await, before, "a refused remove changed something");

    assert_eq!(burst(&sale, "second", 20).await, 4);
    let answers = sale
        .buy_at_once(plain, (0..10).map(|i| format!("plain{i}")).collect())
        .await;
    assert_eq!(answers.iter().filter(|(_, (s, _))| *s == 200).count(), 3, "{answers:?}");
    sale.drain().await;
    assert_eq!(sale.orders().await, 9);
    let rows: Vec<(String, i64, String)> = ledger_states(&sale)
        .await
        .into_iter()
        .filter(|r| r.0 == "remove")
        .collect();
    assert_eq!(
        rows,
        vec![
            ("remove".to_string(), -4, "done".to_string()),
            ("remove".to_string(), -2, "done".to_string())
        ]
    );
    sale.cli(&["reconcile", &a]).await.ok();
    Arc::into_inner(sale).unwrap().finish().await;
}
