//! Reservation -> order pipeline: consumer crash safety, idempotence, outages, poison
//! entries, the order lifecycle races, reconcile and live stock changes.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use redis::AsyncCommands;
use seckill::ops::{order, reconcile, stock};
use seckill::persist;
use seckill::reservation::dlq;
use seckill::reservation::stream::GroupConsumer;

use crate::helpers::{phone, users, KillOnDrop, TestApp};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_consumer_is_reclaimed_exactly_once() {
    let f = TestApp::builder().pipeline().sale(vec![phone(1000, 1)]).build().await;
    let nos = f.reserve(users("u", 1000), 1).await;
    assert_eq!(nos.len(), 1000);
    let mut first = f.spawn(&["consumer", "--batch", "5", "--name", "c1"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while f.orders().await == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    first.kill().unwrap(); // SIGKILL
    first.wait().unwrap();
    let before = f.orders().await;
    assert!(before > 0, "first consumer persisted nothing");
    let (code, _) = f.run(&["consumer", "--once", "--name", "c2"]);
    assert_eq!(code, 0);
    assert_eq!(f.orders().await, 1000, "killed after {before}");
    assert_eq!(
        f.scalar("SELECT COUNT(DISTINCT order_no) FROM orders WHERE activity_id = ?")
            .await,
        1000
    );
    let got: HashSet<String> = sqlx::query_scalar("SELECT order_no FROM orders")
        .fetch_all(f.db.pool())
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(got, nos.into_iter().collect());
    assert_eq!(f.mysql_sold().await, 1000);
    assert_eq!(f.backlog().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_entry_twice_makes_one_order() {
    let f = TestApp::builder().pipeline().sale(vec![phone(10, 5)]).build().await;
    let nos = f.reserve(["alice".to_string()], 3).await;
    let (_, entry_id) = seckill::keys::parse_order_no(&nos[0]).unwrap();
    let entry = stream_entries(&f, entry_id, entry_id).await.remove(0);
    let r = seckill::reservation::decode(f.activity, &entry).unwrap();
    // Two consumers racing on the same entry, then a plain redelivery.
    let (a, b) = tokio::join!(
        persist::persist(&f.db, &f.redis, std::slice::from_ref(&r), "t"),
        persist::persist(&f.db, &f.redis, std::slice::from_ref(&r), "t")
    );
    assert_eq!(a.unwrap().inserted + b.unwrap().inserted, 1);
    let again = persist::persist(&f.db, &f.redis, &[r.clone(), r], "t").await.unwrap();
    assert_eq!((again.inserted, again.duplicates), (0, 2));
    let report = f.drain().await;
    assert_eq!((report.persisted, report.duplicates), (0, 1));
    assert_eq!(f.orders().await, 1);
    assert_eq!(f.mysql_sold().await, 3);
    let o = order::get(&f.db, &nos[0]).await.unwrap();
    assert_eq!(o.amount.to_string(), "59.97");
}

/// A consumer whose product row another transaction changed after the consumer's snapshot:
/// MariaDB with `innodb_snapshot_isolation` (the default from 11.8) refuses the version-checked
/// UPDATE with error 1020 ("Record has changed since last read") instead of matching no row.
/// That is a version conflict like any other: the batch is retried and persisted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_conflict_reported_as_error_1020_is_retried() {
    let f = TestApp::builder().pipeline().sale(vec![phone(10, 5)]).build().await;
    f.reserve(["carol".to_string()], 2).await;
    let entry = stream_entries(&f, "-", "+").await.remove(0);
    let r = seckill::reservation::decode(f.activity, &entry).unwrap();
    let db = snapshot_isolated_db(&f).await;
    let redis = f.redis.clone();
    let persisting = {
        let db = db.clone();
        async move { persist::persist(&db, &redis, &[r], "t").await }
    };
    let done = under_a_version_change(&f, persisting)
        .await
        .expect("a version conflict is retried, not a failure");
    assert_eq!((done.inserted, done.duplicates, done.units), (1, 0, 2));
    assert_eq!(f.orders().await, 1);
    assert_eq!(f.mysql_sold().await, 2);
    db.close().await;
}

/// The same conflict met by `order cancel`: its version-checked UPDATE of `products.sold`
/// refused with error 1020 is tried again, so the cancel succeeds once: the order is
/// cancelled, its units leave `products.sold` with one ledger row and go back on sale.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_whose_version_check_fails_with_error_1020_is_retried() {
    let f = TestApp::builder().pipeline().sale(vec![phone(10, 5)]).build().await;
    let nos = f.reserve(["dora".to_string()], 2).await;
    f.drain().await;
    assert_eq!(f.mysql_sold().await, 2);
    let db = snapshot_isolated_db(&f).await;
    let cancelling = {
        let (db, redis, no) = (db.clone(), f.redis.clone(), nos[0].clone());
        async move { order::cancel(&db, &redis, &no).await }
    };
    let done = under_a_version_change(&f, cancelling)
        .await
        .expect("a version conflict is retried, not a failure");
    assert!(done.changed);
    assert_eq!(done.released, Some(true));
    assert_eq!(
        order::get(&f.db, &nos[0]).await.unwrap().status.to_string(),
        "cancelled"
    );
    assert_eq!(f.mysql_sold().await, 0);
    let releases = f
        .scalar("SELECT COUNT(*) FROM stock_ledger WHERE op = 'release' AND activity_id = ?")
        .await;
    assert_eq!(releases, 1);
    let stock: i64 = f
        .redis
        .conn()
        .hget(f.redis.keys().product(f.activity, f.product), "stock")
        .await
        .unwrap();
    assert_eq!(stock, 10, "the two units are on sale again");
    db.close().await;
}

/// The entries of the fixture's order stream from `from` to `to` (XRANGE bounds), decoded.
async fn stream_entries(f: &TestApp, from: &str, to: &str) -> Vec<seckill::reservation::Entry> {
    let raw: redis::Value = redis::cmd("XRANGE")
        .arg(f.redis.keys().orders_stream(f.activity))
        .arg(from)
        .arg(to)
        .query_async(&mut f.redis.conn())
        .await
        .unwrap();
    seckill::reservation::decode_entries(raw)
}

/// A pool of one connection (so the session setting holds for every statement sent through
/// it) with `innodb_snapshot_isolation` on, MariaDB's default from 11.8.
async fn snapshot_isolated_db(f: &TestApp) -> seckill::Db {
    let mut one = f.config.clone();
    one.database.max_connections = 1;
    let db = seckill::Db::connect(&one).await.unwrap();
    sqlx::query("SET SESSION innodb_snapshot_isolation = ON")
        .execute(db.pool())
        .await
        .expect("MariaDB 10.6.18+ / 10.11.8+ has innodb_snapshot_isolation");
    db
}

/// Runs `work` while the fixture's product row is locked; once `work` waits for the row, its
/// version is raised and the row let go. Work whose snapshot read the old version (and then
/// wants to update the row) meets a version conflict.
async fn under_a_version_change<T: Send + 'static>(
    f: &TestApp,
    work: impl std::future::Future<Output = T> + Send + 'static,
) -> T {
    let mut lock = f.db.pool().begin().await.unwrap();
    let _: Vec<u64> = sqlx::query_scalar("SELECT id FROM products WHERE id = ? FOR UPDATE")
        .bind(f.product)
        .fetch_all(&mut *lock)
        .await
        .unwrap();
    let running = tokio::spawn(work);
    crate::stock_live::wait_for_lock_wait(f).await;
    sqlx::query("UPDATE products SET version = version + 1 WHERE id = ?")
        .bind(f.product)
        .execute(&mut *lock)
        .await
        .unwrap();
    lock.commit().await.unwrap();
    running.await.unwrap()
}

/// A batch part of which is in MySQL already (a consumer died between commit and ack, and
/// the reclaimed batch grew new entries): only the rest is inserted and counted as sold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_partly_persisted_inserts_only_the_rest() {
    let f = TestApp::builder().pipeline().sale(vec![phone(100, 5)]).build().await;
    f.reserve(users("p", 4), 2).await;
    let all: Vec<seckill::reservation::Reservation> = stream_entries(&f, "-", "+")
        .await
        .iter()
        .flat_map(|e| seckill::reservation::decode_all(f.activity, e).unwrap())
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(all.len(), 4);
    let first = persist::persist(&f.db, &f.redis, &all[1..2], "t").await.unwrap();
    assert_eq!((first.inserted, first.units), (1, 2));
    let rest = persist::persist(&f.db, &f.redis, &all, "t").await.unwrap();
    assert_eq!((rest.inserted, rest.duplicates, rest.units), (3, 1, 6));
    assert_eq!(f.orders().await, 4);
    assert_eq!(f.mysql_sold().await, 8);
    assert_eq!(
        f.scalar("SELECT CAST(COALESCE(SUM(-delta), 0) AS SIGNED) FROM stock_ledger WHERE op = 'reserve' AND activity_id = ?")
            .await,
        8
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_down_keeps_everything_pending() {
    let f = TestApp::builder().pipeline().sale(vec![phone(100, 1)]).build().await;
    f.reserve(users("m", 50), 1).await;
    let mut cmd = f.command(&["consumer", "--name", "blind"]);
    cmd.env("SECKILL_DATABASE_URL", "mysql://root@127.0.0.1:1/nowhere")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut blind = KillOnDrop(cmd.spawn().unwrap());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        blind.try_wait().unwrap().is_none(),
        "consumer must not exit while MySQL is down"
    );
    unsafe { libc_kill(blind.id() as i32, 15) };
    let status = blind.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert_eq!(f.orders().await, 0);
    assert_eq!(f.backlog().await, 50, "nothing acked");
    let (code, _) = f.run(&["consumer", "--once"]);
    assert_eq!(code, 0);
    assert_eq!(f.orders().await, 50);
    assert_eq!(f.backlog().await, 0);
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_entry_goes_to_dead_letters() {
    let f = TestApp::builder().pipeline().sale(vec![phone(100, 1)]).build().await;
    f.reserve(users("a", 10), 1).await;
    let mut conn = f.redis.conn();
    let stream = f.redis.keys().orders_stream(f.activity);
    let poison: String = conn
        .xadd(
            &stream,
            "*",
            &[("activity", f.activity.to_string().as_str()), ("quantity", "lots")],
        )
        .await
        .unwrap();
    f.reserve(users("b", 10), 1).await;
    let report = f.drain().await;
    assert_eq!(report.persisted, 20);
    assert_eq!(report.dead_lettered, 1);
    assert_eq!(f.orders().await, 20);
    assert_eq!(f.backlog().await, 0);
    let letters = dlq::list(&f.redis, Some(f.activity)).await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].entry_id, poison);
    assert_eq!(letters[0].deliveries, 3);
    assert!(
        letters[0].error.contains("quantity") || letters[0].error.contains("missing"),
        "{}",
        letters[0].error
    );
    let replayed = dlq::replay(&f.db, &f.redis, f.activity, None).await.unwrap();
    assert_eq!(replayed[0].outcome, "failed");
    assert_eq!(dlq::list(&f.redis, Some(f.activity)).await.unwrap().len(), 1);
    let (code, out) = f.run(&["consumer", "dlq", "list", &f.activity.to_string(), "--json"]);
    assert_eq!(code, 0);
    assert!(out.contains(&poison));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_purchase_is_dead_lettered_alone_and_the_rest_of_its_entry_persisted() {
    let f = TestApp::builder().pipeline().sale(vec![phone(100, 1)]).build().await;
    let (a, p) = (f.activity.to_string(), f.product.to_string());
    let mut conn = f.redis.conn();
    let stream = f.redis.keys().orders_stream(f.activity);
    let now = chrono::Utc::now().timestamp_millis().to_string();
    let mut fields = vec![("activity", a.as_str()), ("reserved_ms", now.as_str())];
    for (user, quantity) in [("good0", "1"), ("bad", "0"), ("good2", "2")] {
        fields.extend([
            ("product", p.as_str()),
            ("user", user),
            ("quantity", quantity),
            ("price", "19.99"),
        ]);
    }
    let id: String = conn.xadd(&stream, "*", &fields).await.unwrap();
    let report = f.drain().await;
    assert_eq!((report.persisted, report.dead_lettered), (2, 1));
    assert_eq!(f.orders().await, 2);
    assert_eq!(
        f.backlog().await,
        0,
        "the entry is acknowledged once its bad purchase is buried"
    );
    let first = order::get(&f.db, &format!("{a}-{id}")).await.unwrap();
    let third = order::get(&f.db, &format!("{a}-{id}-2")).await.unwrap();
    assert_eq!(
        (first.user_id.as_str(), third.user_id.as_str(), third.quantity),
        ("good0", "good2", 2)
    );
    let letters = dlq::list(&f.redis, Some(f.activity)).await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(
        (letters[0].order_no.clone(), letters[0].index),
        (format!("{a}-{id}-1"), Some(1))
    );
    assert!(letters[0].error.contains("quantity"), "{}", letters[0].error);
    assert!(letters[0].fields.contains(&("user".to_string(), "bad".to_string())));
    assert!(
        !letters[0].fields.iter().any(|(_, v)| v == "good0" || v == "good2"),
        "only the bad purchase is buried: {:?}",
        letters[0].fields
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_of_the_old_one_purchase_format_is_persisted_under_its_old_number() {
    let f = TestApp::builder().pipeline().sale(vec![phone(100, 1)]).build().await;
    let (a, p) = (f.activity.to_string(), f.product.to_string());
    let now = chrono::Utc::now().timestamp_millis().to_string();
    let mut conn = f.redis.conn();
    // As reserve.lua wrote entries before they held a batch (a sale in flight during an upgrade).
    let old: String = conn
        .xadd(
            f.redis.keys().orders_stream(f.activity),
            "*",
            &[
                ("activity", a.as_str()),
                ("product", p.as_str()),
                ("user", "before"),
                ("quantity", "1"),
                ("price", "19.99"),
                ("reserved_ms", now.as_str()),
            ],
        )
        .await
        .unwrap();
    let new = f.reserve(["after".to_string()], 1).await;
    let report = f.drain().await;
    assert_eq!((report.persisted, report.dead_lettered), (2, 0));
    let o = order::get(&f.db, &format!("{a}-{old}")).await.unwrap();
    assert_eq!((o.user_id.as_str(), o.quantity), ("before", 1));
    assert_eq!(order::get(&f.db, &new[0]).await.unwrap().user_id, "after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancel_pay_expire_race_returns_each_unit_at_most_once() {
    let f = TestApp::builder().pipeline().sale(vec![phone(60, 2)]).build().await;
    let nos = f.reserve(users("r", 30), 2).await;
    f.drain().await;
    let mut tasks = Vec::new();
    for no in &nos {
        for kind in 0..3 {
            let (db, redis, no) = (f.db.clone(), f.redis.clone(), no.clone());
            tasks.push(tokio::spawn(async move {
                match kind {
                    0 => order::pay(&db, &no).await.map(|_| ()),
                    1 => order::cancel(&db, &redis, &no).await.map(|_| ()),
                    _ => order::expire(&db, &redis, Duration::ZERO, None).await.map(|_| ()),
                }
            }));
        }
    }
    for t in tasks {
        let _ = t.await.unwrap();
    }
    let rows: Vec<(String, String)> = sqlx::query_as("SELECT order_no, status FROM orders")
        .fetch_all(f.db.pool())
        .await
        .unwrap();
    let freed: HashSet<String> = rows
        .iter()
        .filter(|(_, s)| s == "cancelled" || s == "expired")
        .map(|(n, _)| n.clone())
        .collect();
    let held = rows.iter().filter(|(_, s)| s == "pending" || s == "paid").count() as i64;
    let releases: Vec<(String, i64)> =
        sqlx::query_as("SELECT ref, COUNT(*) FROM stock_ledger WHERE op = 'release' GROUP BY ref")
            .fetch_all(f.db.pool())
            .await
            .unwrap();
    assert!(releases.iter().all(|(_, n)| *n == 1), "{releases:?}");
    assert_eq!(releases.iter().map(|(r, _)| r.clone()).collect::<HashSet<_>>(), freed);
    let mut conn = f.redis.conn();
    let released: HashSet<String> = conn.smembers(f.redis.keys().released(f.activity)).await.unwrap();
    assert_eq!(released, freed);
    let (stock, sold, total) = f.redis_counters().await;
    assert_eq!(sold, held * 2);
    assert_eq!(stock + held * 2, total);
    assert_eq!(f.mysql_sold().await, held * 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_classifies_and_fixes() {
    let f = TestApp::builder().pipeline().sale(vec![phone(100, 1)]).build().await;
    let nos = f.reserve(users("c", 20), 1).await;
    f.drain().await;
    let grace = Duration::from_secs(60);
    let group = f.config.consumer.group.clone();
    let clean = reconcile::reconcile(&f.db, &f.redis, &group, f.activity, grace, false)
        .await
        .unwrap();
    assert!(clean.consistent, "{:?}", clean.findings);
    assert_eq!(f.run(&["reconcile", &f.activity.to_string()]).0, 0);

    // Tampered Redis stock, a deleted order, a reservation acked without its order.
    let mut conn = f.redis.conn();
    let _: i64 = conn
        .hincr(f.redis.keys().product(f.activity, f.product), "stock", 5)
        .await
        .unwrap();
    sqlx::query("DELETE FROM orders WHERE order_no = ?")
        .bind(&nos[0])
        .execute(f.db.pool())
        .await
        .unwrap();
    let lost = f.reserve(["late".to_string()], 1).await;
    let stream = f.redis.keys().orders_stream(f.activity);
    let thief = GroupConsumer {
        redis: &f.redis,
        group: &group,
        name: "thief",
    };
    thief.read_new(std::slice::from_ref(&stream), 10, None).await.unwrap();
    let (_, id) = seckill::keys::parse_order_no(&lost[0]).unwrap();
    let _: u64 = conn.xack(&stream, &group, &[id]).await.unwrap();

    let dirty = reconcile::reconcile(&f.db, &f.redis, &group, f.activity, grace, false)
        .await
        .unwrap();
    assert!(!dirty.consistent);
    let classes: HashSet<_> = dirty.findings.iter().map(|x| x.class).collect();
    assert!(classes.contains(&reconcile::Class::StockDrift), "{:?}", dirty.findings);
    let lost_found: HashSet<_> = dirty
        .findings
        .iter()
        .filter(|x| x.class == reconcile::Class::LostReservation)
        .map(|x| x.subject.clone())
        .collect();
    assert_eq!(lost_found, [nos[0].clone(), lost[0].clone()].into_iter().collect());
    assert_eq!(f.run(&["reconcile", &f.activity.to_string()]).0, 1);

    let (code, out) = f.run(&["reconcile", &f.activity.to_string(), "--fix"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(f.run(&["reconcile", &f.activity.to_string(), "--json"]).0, 0);
    assert_eq!(f.orders().await, 21);
    assert_eq!(f.mysql_sold().await, 21);
    assert_eq!(f.redis_counters().await, (79, 21, 100));
    let adjusts = f
        .scalar("SELECT COUNT(*) FROM stock_ledger WHERE activity_id = ? AND op = 'adjust'")
        .await;
    assert!(adjusts >= 2, "{adjusts}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_add_and_sold_out_while_online() {
    let f = TestApp::builder().pipeline().sale(vec![phone(10, 1)]).build().await;
    f.reserve(users("s", 4), 1).await;
    let added = stock::add(&f.db, &f.redis, f.product, 5).await.unwrap();
    assert_eq!((added.delta, added.total_stock, added.redis_stock), (5, 15, Some(11)));
    assert_eq!(f.redis_counters().await, (11, 4, 15));
    f.reserve(users("t", 3), 1).await;
    let (code, out) = f.run(&["stock", "sold-out", &f.product.to_string(), "--json"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("\"delta\": -8"), "{out}");
    assert_eq!(f.redis_counters().await, (0, 7, 7));
    let late = f.reserve(["late".to_string()], 1).await;
    assert!(late.is_empty(), "sold out must refuse");
    f.drain().await;
    let ledger: Vec<(String, i64)> =
        sqlx::query_as("SELECT op, delta FROM stock_ledger WHERE op IN ('adjust', 'sold_out') ORDER BY id")
            .fetch_all(f.db.pool())
            .await
            .unwrap();
    assert_eq!(ledger, vec![("adjust".into(), 5), ("sold_out".into(), -8)]);
    let total: i64 = sqlx::query_scalar("SELECT CAST(total_stock AS SIGNED) FROM products WHERE id = ?")
        .bind(f.product)
        .fetch_one(f.db.pool())
        .await
        .unwrap();
    assert_eq!(total, 7);
    let r = reconcile::reconcile(
        &f.db,
        &f.redis,
        &f.config.consumer.group,
        f.activity,
        Duration::from_secs(60),
        false,
    )
    .await
    .unwrap();
    assert!(r.consistent, "{:?}", r.findings);
}
