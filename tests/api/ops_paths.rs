//! Operator paths that existed without a test: `hot` and `flush` refused while reservations
//! wait, the `order` CLI end to end, the reconcile classes `quota_drift`, `unreleased` and
//! `order_without_reservation` through the CLI, a successful `consumer dlq replay`, and an
//! optimistic-lock conflict in the consumer. Each against real Redis and MariaDB.

use std::process::Stdio;

use redis::AsyncCommands;
use serde_json::Value;

use crate::helpers::{future_window, phone, users, KillOnDrop, TestApp};
use crate::stock_live::wait_for_lock_wait;

/// The classes of a `reconcile --json` report's `key` list (`findings` or `remaining`).
fn classes(report: &Value, key: &str) -> Vec<String> {
    let mut out: Vec<String> = report[key]
        .as_array()
        .unwrap_or_else(|| panic!("no {key} in {report}"))
        .iter()
        .map(|f| f["class"].as_str().unwrap().to_string())
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_and_flush_are_refused_while_reservations_wait_then_work() {
    let f = TestApp::builder().pipeline().sale(vec![phone(10, 1)]).build().await;
    f.reserve(users("w", 3), 1).await;
    seckill::ops::stop(&f.db, &f.redis, f.activity, false).await.unwrap();
    let a = f.activity.to_string();
    let before = f.snapshot().await;
    f.cli(&["hot", &a])
        .await
        .fails_with(1, &["3 reservations not yet persisted"]);
    f.cli(&["flush", "-y", &a])
        .await
        .fails_with(1, &["3 reservations not yet persisted"]);
    assert_eq!(f.snapshot().await, before, "a refusal changes nothing");

    f.drain().await;
    f.cli(&["hot", &a]).await.ok();
    assert_eq!(f.redis_counters().await, (7, 3, 10), "reloaded from MySQL: 3 sold");
    f.cli(&["flush", "-y", &a]).await.ok();
    assert!(f.activity_keys(f.activity).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_order_cli_shows_lists_pays_cancels_and_expires_returning_units() {
    let f = TestApp::builder().pipeline().sale(vec![phone(10, 1)]).build().await;
    let nos = f.reserve(users("o", 4), 1).await;
    f.drain().await;
    let a = f.activity.to_string();
    assert_eq!((f.redis_counters().await, f.mysql_sold().await), ((6, 4, 10), 4));

    let listed = f.cli(&["order", "list", "--activity", &a, "--json"]).await.json();
    let listed: Vec<(&str, &str)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|o| (o["order_no"].as_str().unwrap(), o["status"].as_str().unwrap()))
        .collect();
    assert_eq!(listed, nos.iter().map(|n| (n.as_str(), "pending")).collect::<Vec<_>>());
    let shown = f.cli(&["order", "show", &nos[0], "--json"]).await.json();
    assert_eq!(shown["user_id"], "o0", "{shown}");
    assert_eq!(shown["amount"], shown["unit_price"], "one unit: {shown}");
    let table = f.cli(&["order", "show", &nos[0]]).await;
    assert!(
        table.ok().stdout.contains(&nos[0]) && table.stdout.contains("pending"),
        "{}",
        table.stdout
    );

    let paid = f.cli(&["order", "pay", &nos[0]]).await;
    assert!(paid.ok().stdout.contains("pending -> paid"), "{}", paid.stdout);
    let again = f.cli(&["order", "pay", &nos[0]]).await;
    assert!(again.ok().stdout.contains("already paid"), "{}", again.stdout);

    let cancelled = f.cli(&["order", "cancel", &nos[1]]).await;
    assert!(
        cancelled
            .ok()
            .stdout
            .contains("pending -> cancelled, units back on sale"),
        "{}",
        cancelled.stdout
    );
    assert_eq!((f.redis_counters().await, f.mysql_sold().await), ((7, 3, 10), 3));
    let again = f.cli(&["order", "cancel", &nos[1]]).await;
    assert!(again.ok().stdout.contains("already cancelled"), "{}", again.stdout);
    assert_eq!(f.redis_counters().await, (7, 3, 10), "returned once");
    f.cli(&["order", "cancel", &nos[0]])
        .await
        .fails_with(1, &["is paid and cannot be cancelled"]);
    f.cli(&["order", "pay", &nos[1]])
        .await
        .fails_with(1, &["cannot be paid"]);
    f.cli(&["order", "show", &format!("{a}-1-0")])
        .await
        .fails_with(1, &["not found"]);

    let expired = f
        .cli(&["order", "expire", "--older-than", "0s", "--activity", &a])
        .await;
    assert!(
        expired.ok().stdout.contains("2 expired, 0 paid or cancelled meanwhile"),
        "{}",
        expired.stdout
    );
    assert_eq!((f.redis_counters().await, f.mysql_sold().await), ((9, 1, 10), 1));
    let expired = f
        .cli(&["order", "list", "--activity", &a, "--status", "expired", "--json"])
        .await
        .json();
    let expired: Vec<&str> = expired
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["order_no"].as_str().unwrap())
        .collect();
    assert_eq!(expired, vec![nos[2].as_str(), nos[3].as_str()]);
    let mine = f
        .cli(&["order", "list", "--activity", &a, "--user", "o0", "--json"])
        .await
        .json();
    assert_eq!(mine[0]["status"], "paid", "{mine}");
    assert_eq!(mine.as_array().unwrap().len(), 1);

    // The buyers' totals came back too: each may buy again (limit 1).
    assert_eq!(f.reserve(["o1".to_string(), "o2".to_string()], 1).await.len(), 2);
    assert!(
        f.reserve(["o0".to_string()], 1).await.is_empty(),
        "o0 still holds a paid unit"
    );
    f.drain().await;
    assert_eq!(f.run(&["reconcile", &a]).0, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_sees_and_fixes_quota_drift_and_unreleased_and_reports_orders_without_reservation() {
    let f = TestApp::builder().pipeline().sale(vec![phone(10, 2)]).build().await;
    // One script call each: one stream entry per order, so deleting one entry loses one order.
    let mut nos = Vec::new();
    for user in users("q", 3) {
        nos.extend(f.reserve([user], 1).await);
    }
    f.drain().await;
    let a = f.activity.to_string();
    let keys = f.redis.keys();
    let mut conn = f.redis.conn();
    let (product_key, bought_key) = (keys.product(f.activity, f.product), keys.bought(f.activity, f.product));

    // Unreleased: cancelled in MySQL while Redis never got the unit back.
    let product_before: Vec<(String, String)> = conn.hgetall(&product_key).await.unwrap();
    let bought_before: Vec<(String, String)> = conn.hgetall(&bought_key).await.unwrap();
    seckill::ops::order::cancel(&f.db, &f.redis, &nos[0]).await.unwrap();
    let _: () = conn.hset_multiple(&product_key, &product_before).await.unwrap();
    let _: () = conn.hset_multiple(&bought_key, &bought_before).await.unwrap();
    let _: () = conn.srem(keys.released(f.activity), &nos[0]).await.unwrap();
    // Quota drift: Redis says q2 holds a unit more than their orders.
    let _: i64 = conn.hincr(&bought_key, "q2", 1).await.unwrap();
    // An order whose stream entry is gone.
    let (_, entry) = seckill::keys::parse_order_no(&nos[1]).unwrap();
    let _: u64 = conn.xdel(keys.orders_stream(f.activity), &[entry]).await.unwrap();

    let out = f.cli(&["reconcile", &a, "--json"]).await;
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert_eq!(
        classes(&out.json(), "findings"),
        ["order_without_reservation", "quota_drift", "unreleased"]
    );
    let ledger = || f.scalar("SELECT COUNT(*) FROM stock_ledger WHERE activity_id = ? AND ref = 'reconcile'");
    assert_eq!(ledger().await, 0, "no repair without --fix");

    let fixed = f.cli(&["reconcile", &a, "--fix", "--json"]).await;
    assert_eq!(
        fixed.code, 1,
        "an order without its reservation needs a person:\n{}",
        fixed.stdout
    );
    assert_eq!(classes(&fixed.json(), "remaining"), ["order_without_reservation"]);
    assert_eq!(ledger().await, 2, "one ledger row per repair:\n{}", fixed.stdout);
    assert_eq!(
        f.redis_counters().await,
        (8, 2, 10),
        "the cancelled unit is back on sale"
    );
    let held: Option<i64> = conn.hget(&bought_key, "q2").await.unwrap();
    assert_eq!(held, Some(1));

    let next = f.cli(&["reconcile", &a, "--json"]).await;
    assert_eq!(classes(&next.json(), "findings"), ["order_without_reservation"]);
    assert_eq!(ledger().await, 2, "nothing repaired twice");
    assert_eq!(f.orders().await, 3, "reconcile never deletes an order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_whose_cause_is_fixed_is_replayed_and_persisted_once() {
    let f = TestApp::builder().pipeline().sale(vec![phone(10, 1)]).build().await;
    let a = f.activity.to_string();
    let nos = f.reserve(users("d", 1), 1).await;
    // The cause: MySQL says the product belongs to another activity, so persisting is refused.
    let elsewhere = f.create_activity(future_window()).await.id;
    let move_product = |to: u64| {
        sqlx::query("UPDATE products SET activity_id = ? WHERE id = ?")
            .bind(to)
            .bind(f.product)
            .execute(f.db.pool())
    };
    move_product(elsewhere).await.unwrap();
    let report = f.drain().await;
    assert_eq!((report.persisted, report.dead_lettered), (0, 1), "{report:?}");
    let listed = f.cli(&["consumer", "dlq", "list", &a, "--json"]).await;
    assert!(listed.ok().stdout.contains(&nos[0]), "{}", listed.stdout);
    assert_eq!(f.run(&["reconcile", &a]).0, 1, "a dead letter needs a person");

    move_product(f.activity).await.unwrap();
    let replayed = f.cli(&["consumer", "dlq", "replay", &a, "--json"]).await.json();
    assert_eq!(replayed[0]["order_no"], nos[0].as_str(), "{replayed}");
    assert_eq!(replayed[0]["outcome"], "persisted", "{replayed}");
    assert_eq!((f.orders().await, f.mysql_sold().await), (1, 1));
    let listed = f.cli(&["consumer", "dlq", "list", &a, "--json"]).await.json();
    assert_eq!(listed, serde_json::json!([]));

    // Replaying again, and draining again, persist nothing more.
    let again = f.cli(&["consumer", "dlq", "replay", &a, "--json"]).await.json();
    assert_eq!(again, serde_json::json!([]));
    f.drain().await;
    assert_eq!((f.orders().await, f.mysql_sold().await), (1, 1));
    assert_eq!(f.redis_counters().await, (9, 1, 10));
    assert_eq!(f.run(&["reconcile", &a]).0, 0);
}

/// The consumer reads `products.version`, then another writer bumps it before the consumer's
/// conditional update: the update matches nothing, the transaction is retried, and the order
/// is persisted and counted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_conflict_in_the_consumer_is_retried_and_counted_once() {
    let f = TestApp::builder().pipeline().sale(vec![phone(10, 1)]).build().await;
    f.reserve(users("v", 2), 1).await;
    let version = "SELECT CAST(version AS SIGNED) FROM products WHERE activity_id = ?";
    let version_before = f.scalar(version).await;
    // Another writer holds the row with its version bumped, not yet committed.
    let mut writer = f.db.pool().begin().await.unwrap();
    sqlx::query("UPDATE products SET version = version + 1 WHERE id = ?")
        .bind(f.product)
        .execute(&mut *writer)
        .await
        .unwrap();
    let consumer = KillOnDrop(
        f.command(&["consumer", "--once"])
            .env("RUST_LOG", "seckill::persist=debug")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // The consumer read the old version and now waits in its update for the writer's lock.
    wait_for_lock_wait(&f).await;
    writer.commit().await.unwrap();
    let out = consumer.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains("persist transaction retried") && log.contains("changed concurrently"),
        "no conflict was met:\n{log}"
    );
    assert_eq!((f.orders().await, f.mysql_sold().await), (2, 2), "{log}");
    let reserve_rows = f
        .scalar("SELECT COUNT(*) FROM stock_ledger WHERE activity_id = ? AND op = 'reserve'")
        .await;
    assert_eq!(reserve_rows, 1, "one batch, one ledger row");
    assert_eq!(
        f.scalar(version).await,
        version_before + 2,
        "the writer's bump and the consumer's"
    );
    assert_eq!(f.backlog().await, 0);
    assert_eq!(f.run(&["reconcile", &f.activity.to_string()]).0, 0);
}

/// The newest stream entry gone (deleted by hand, lost): its order was taken for a purchase
/// made after reconcile's view, left out of the count, and `--fix` put its unit back on sale
/// and cleared its buyer's total (an oversell). It is an order without its reservation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_fix_never_sells_again_the_unit_of_an_order_whose_newest_entry_is_gone() {
    let f = TestApp::builder().pipeline().sale(vec![phone(10, 1)]).build().await;
    // One script call each: one stream entry per order, so deleting one entry loses one order.
    let mut nos = Vec::new();
    for user in users("n", 3) {
        nos.extend(f.reserve([user], 1).await);
    }
    f.drain().await;
    let (_, entry) = seckill::keys::parse_order_no(&nos[2]).unwrap();
    let _: u64 = f
        .redis
        .conn()
        .xdel(f.redis.keys().orders_stream(f.activity), &[entry])
        .await
        .unwrap();
    let fixed = f.cli(&["reconcile", &f.activity.to_string(), "--fix", "--json"]).await;
    assert_eq!(fixed.code, 1, "{}", fixed.stdout);
    assert_eq!(classes(&fixed.json(), "findings"), ["order_without_reservation"]);
    assert_eq!(f.redis_counters().await, (7, 3, 10), "{}", fixed.stdout);
    let bought_key = f.redis.keys().bought(f.activity, f.product);
    let held: Option<i64> = f.redis.conn().hget(&bought_key, "n2").await.unwrap();
    assert_eq!(held, Some(1), "{}", fixed.stdout);
}
