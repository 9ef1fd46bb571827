//! `stock add` / `stock sold-out` on a live sale: whatever fails or is killed midway, no
//! unit is on sale in Redis that MySQL does not count, and reconcile settles what was left
//! half done.

use std::process::Stdio;
use std::time::{Duration, Instant};

use seckill::ops::reconcile;

use crate::helpers::{phone, users, KillOnDrop, TestApp};
use crate::redis_servers::OwnRedis;

async fn mysql_total(f: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT CAST(total_stock AS SIGNED) FROM products WHERE id = ?")
        .bind(f.product)
        .fetch_one(f.db.pool())
        .await
        .unwrap()
}

/// Waits until a statement of another session on the fixture's database has been running
/// for a second: a process (`stock`, a consumer) held up by the test's lock.
pub async fn wait_for_lock_wait(f: &TestApp) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM information_schema.processlist WHERE db = DATABASE() \
             AND id <> CONNECTION_ID() AND info IS NOT NULL AND time >= 1",
        )
        .fetch_one(f.db.pool())
        .await
        .unwrap();
        if waiting > 0 {
            return;
        }
        assert!(Instant::now() < deadline, "no other session ever waited for the lock");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs `seckill ARGS` while the test holds a gap lock on the whole ledger (so its ledger
/// write waits), SIGKILLs it once it is waiting, then lets the lock go.
async fn kill_while_the_ledger_is_locked(f: &TestApp, args: &[&str]) {
    let mut lock = f.db.pool().begin().await.unwrap();
    let _: Vec<u64> = sqlx::query_scalar("SELECT id FROM stock_ledger WHERE id >= 0 FOR UPDATE")
        .fetch_all(&mut *lock)
        .await
        .unwrap();
    let mut child = KillOnDrop(
        f.command(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for_lock_wait(f).await;
    child.kill().unwrap();
    child.wait().unwrap();
    lock.rollback().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
}

async fn ledger_rows(f: &TestApp) -> i64 {
    f.scalar("SELECT COUNT(*) FROM stock_ledger WHERE activity_id = ?")
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overflowing_stock_add_is_refused_and_changes_nothing() {
    let f = TestApp::builder().pipeline().sale(vec![phone(5, 1)]).build().await;
    let before = (f.redis_counters().await, mysql_total(&f).await, ledger_rows(&f).await);
    let out = f
        .command(&["stock", "add", &f.product.to_string(), "4294967295"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("units") && stderr.contains("4294967290"), "{stderr}");
    let after = (f.redis_counters().await, mysql_total(&f).await, ledger_rows(&f).await);
    assert_eq!(after, before, "{stderr}");
    // clap refuses what is not a positive u32.
    for bad in ["0", "4294967296", "-1"] {
        let out = f
            .command(&["stock", "add", &f.product.to_string(), bad])
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(2),
            "{bad}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(
        (f.redis_counters().await, mysql_total(&f).await, ledger_rows(&f).await),
        before
    );
    // The largest amount that fits is accepted.
    let (code, out) = f.run(&["stock", "add", &f.product.to_string(), "4294967290", "--json"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(mysql_total(&f).await, 4_294_967_295);
    assert_eq!(f.redis_counters().await, (4_294_967_295, 0, 4_294_967_295));
}

/// The stock process is SIGKILLed while MySQL holds it up (a gap lock of the test's on the
/// ledger makes its ledger insert wait).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stock_add_killed_while_mysql_is_slow_puts_no_phantom_units_on_sale() {
    let f = TestApp::builder().pipeline().sale(vec![phone(5, 1)]).build().await;
    f.reserve(users("k", 2), 1).await;
    kill_while_the_ledger_is_locked(&f, &["stock", "add", &f.product.to_string(), "10"]).await;
    let (stock, sold, total) = f.redis_counters().await;
    let counted = mysql_total(&f).await;
    eprintln!("after the kill: Redis stock/sold/total {stock}/{sold}/{total}, MySQL total_stock {counted}");
    assert!(
        total <= counted && stock + sold <= counted,
        "Redis sells {total} units, MySQL counts {counted}"
    );
    let (code, out) = f.run(&["reconcile", &f.activity.to_string(), "--fix"]);
    assert_eq!(code, 0, "{out}");
    let (stock, sold, total) = f.redis_counters().await;
    assert_eq!((total, stock + sold), (mysql_total(&f).await, total));
}

/// Runs `seckill stock ARGS` on a fixture whose Redis is the test's own: the process commits
/// its MySQL step, then is SIGKILLed while its Redis call hangs (Redis SIGSTOPped); Redis
/// resumes afterwards (and may still run the call). Returns the fixture, its Redis and the
/// Redis counters right after.
async fn kill_between_mysql_and_redis(
    stock: u32,
    buyers: usize,
    args: &[&str],
) -> (TestApp, OwnRedis, (i64, i64, i64)) {
    let own = OwnRedis::start().await;
    let f = TestApp::builder()
        .pipeline()
        .redis(own.url())
        .tune(|c| {
            c.redis.response_timeout_ms = 30_000;
            c.orders.in_flight_grace_secs = 1;
        })
        .sale(vec![phone(stock, 1)])
        .build()
        .await;
    f.reserve(users("p", buyers), 1).await;
    let lock = lock_product(&f).await;
    let product = f.product.to_string();
    let mut full: Vec<&str> = vec!["stock"];
    full.extend(args.iter().map(|a| if *a == "P" { product.as_str() } else { a }));
    let mut child = KillOnDrop(
        f.command(&full)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for_lock_wait(&f).await;
    own.signal("-STOP");
    lock.commit().await.unwrap();
    // With Redis stopped the process cannot get past its Redis call.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    child.kill().unwrap();
    child.wait().unwrap();
    own.signal("-CONT");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let counters = f.redis_counters().await;
    (f, own, counters)
}

/// After the in-flight grace, runs `reconcile --fix` (which must settle what the killed
/// process left); returns its exit code and output.
async fn reconcile_fix_after_grace(f: &TestApp) -> (i32, String) {
    tokio::time::sleep(Duration::from_millis(1200)).await;
    f.run(&["reconcile", &f.activity.to_string(), "--fix"])
}

/// `reconcile --fix` settled everything: it succeeded, no ledger row is pending, and the
/// activity is consistent.
async fn assert_settled(f: &TestApp, code: i32, out: &str) {
    assert_eq!(code, 0, "{out}");
    let pending = f
        .scalar("SELECT COUNT(*) FROM stock_ledger WHERE activity_id = ? AND state = 'pending'")
        .await;
    assert_eq!(pending, 0, "{out}");
    let r = reconcile::reconcile(
        &f.db,
        &f.redis,
        &f.config.consumer.group,
        f.activity,
        Duration::from_secs(1),
        false,
    )
    .await
    .unwrap();
    assert!(r.consistent, "{:?}", r.findings);
    let repairs: Vec<&str> = out.lines().filter(|l| l.starts_with("repaired")).collect();
    eprintln!("{}", repairs.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stock_add_killed_between_mysql_and_redis_is_settled_by_reconcile() {
    let (f, _own, (stock, sold, total)) = kill_between_mysql_and_redis(5, 2, &["add", "P", "10"]).await;
    let counted = mysql_total(&f).await;
    eprintln!("after the kill: Redis stock/sold/total {stock}/{sold}/{total}, MySQL total_stock {counted}");
    assert!(total <= counted, "Redis sells {total} units, MySQL counts {counted}");
    let (code, out) = reconcile_fix_after_grace(&f).await;
    let (stock, sold, total) = f.redis_counters().await;
    assert_eq!((total, stock + sold, sold), (mysql_total(&f).await, total, 2), "{out}");
    assert_settled(&f, code, &out).await;
    assert!(
        out.contains("stock change"),
        "reconcile does not say what it settled:\n{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sold_out_killed_between_mysql_and_redis_is_settled_by_reconcile() {
    let (f, _own, (on_sale, sold, total)) = kill_between_mysql_and_redis(10, 3, &["sold-out", "P"]).await;
    assert!(total <= mysql_total(&f).await);
    let (code, out) = reconcile_fix_after_grace(&f).await;
    let (stock, _, total) = f.redis_counters().await;
    eprintln!("on sale after the kill: {on_sale}; after reconcile --fix: {stock} (total {total})");
    assert!(
        stock <= on_sale,
        "reconcile put withdrawn units back on sale ({on_sale} -> {stock}):\n{out}"
    );
    assert_eq!((total, sold), (mysql_total(&f).await, 3), "{out}");
    assert_settled(&f, code, &out).await;
}

/// `stock sold-out` killed while MySQL holds up its write (a gap lock of the test's on the
/// ledger): units Redis may have withdrawn must not come back on sale, not even through
/// `reconcile --fix`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn withdrawn_units_never_come_back_when_mysql_fails_after_redis() {
    let f = TestApp::builder().pipeline().sale(vec![phone(10, 1)]).build().await;
    f.reserve(users("w", 3), 1).await;
    kill_while_the_ledger_is_locked(&f, &["stock", "sold-out", &f.product.to_string()]).await;
    let on_sale = f.redis_counters().await.0;
    let (code, out) = f.run(&["reconcile", &f.activity.to_string(), "--fix"]);
    let (stock, sold, total) = f.redis_counters().await;
    eprintln!("on sale after the kill: {on_sale}; after reconcile --fix: {stock} (sold {sold}, total {total})");
    assert!(
        stock <= on_sale,
        "reconcile put withdrawn units back on sale ({on_sale} -> {stock}):\n{out}"
    );
    assert_eq!(code, 0, "{out}");
    assert_eq!((total, sold), (mysql_total(&f).await, 3), "{out}");
}

/// A stock add whose Redis is lost right after its MySQL step: it says the change is
/// pending; reconcile voids it in Redis and undoes it in MySQL, and a late script call for
/// that change (a stuck process waking up) then refuses instead of adding phantom units.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stock_add_that_never_reached_redis_is_undone_and_stays_undone() {
    let mut own = OwnRedis::start().await;
    let f = TestApp::builder()
        .pipeline()
        .redis(own.url())
        .tune(|c| {
            c.redis.response_timeout_ms = 2_000;
            c.orders.in_flight_grace_secs = 1;
        })
        .sale(vec![phone(5, 1)])
        .build()
        .await;
    let lock = lock_product(&f).await;
    let child = KillOnDrop(
        f.command(&["stock", "add", &f.product.to_string(), "10"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    wait_for_lock_wait(&f).await;
    own.kill();
    lock.commit().await.unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("is pending") && stderr.contains("reconcile"),
        "{stderr}"
    );
    assert_eq!(mysql_total(&f).await, 15, "MySQL counts the units first");
    let (ledger_id, state): (u64, String) =
        sqlx::query_as("SELECT id, state FROM stock_ledger WHERE op = 'adjust' ORDER BY id DESC LIMIT 1")
            .fetch_one(f.db.pool())
            .await
            .unwrap();
    assert_eq!(state, "pending");

    // Redis comes back empty (no persistence); load the sale again.
    own.restart().await;
    // The shared connection notices the restart on its first command and reconnects.
    let deadline = Instant::now() + Duration::from_secs(10);
    while redis::cmd("PING")
        .query_async::<String>(&mut f.redis.conn())
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "Redis did not come back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    seckill::ops::stop(&f.db, &f.redis, f.activity, false).await.unwrap();
    seckill::ops::hot(&f.db, &f.redis, &f.config.consumer.group, f.activity)
        .await
        .unwrap();
    seckill::ops::start(&f.db, &f.redis, f.activity).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (code, out) = f.run(&["reconcile", &f.activity.to_string(), "--fix"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("never reached Redis; undone"), "{out}");
    let state: String = sqlx::query_scalar("SELECT state FROM stock_ledger WHERE id = ?")
        .bind(ledger_id)
        .fetch_one(f.db.pool())
        .await
        .unwrap();
    assert_eq!((state.as_str(), mysql_total(&f).await), ("undone", 5));
    let counters = f.redis_counters().await;
    assert_eq!(counters.2, 5, "{counters:?}");

    let late: redis::RedisResult<i64> = seckill::scripts::STOCK_ADD
        .key(f.redis.keys().product(f.activity, f.product))
        .key(f.redis.keys().stock_ops(f.activity))
        .key(f.redis.keys().activity(f.activity))
        .arg(10)
        .arg(ledger_id)
        .arg(
            seckill::ops::lifecycle::preheated_at(&f.redis, f.activity)
                .await
                .unwrap()
                .unwrap(),
        )
        .invoke_async(&mut f.redis.conn())
        .await;
    assert!(
        late.as_ref().is_err_and(|e| e.to_string().contains("VOIDED")),
        "{late:?}"
    );
    assert_eq!(f.redis_counters().await, counters);
}

/// Locks the product row in a transaction of the test's (MySQL statements of others on it wait).
async fn lock_product(f: &TestApp) -> sqlx::Transaction<'static, sqlx::MySql> {
    let mut lock = f.db.pool().begin().await.unwrap();
    let _: Vec<u64> = sqlx::query_scalar("SELECT id FROM products WHERE id = ? FOR UPDATE")
        .bind(f.product)
        .fetch_all(&mut *lock)
        .await
        .unwrap();
    lock
}

/// `stock sold-out` whose last MySQL step fails after Redis withdrew the units: the step waits
/// for the product row (the test holds it) and its MySQL connection is killed. The command says
/// the change is pending (exit 1); the withdrawn units stay off sale through `reconcile --fix`
/// inside the in-flight grace and after it, when reconcile completes the change in MySQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sold_out_whose_mysql_fails_after_redis_withdrew_keeps_the_units_off_sale() {
    let own = OwnRedis::start().await;
    let f = TestApp::builder()
        .pipeline()
        .redis(own.url())
        .tune(|c| {
            c.redis.response_timeout_ms = 30_000;
            c.orders.in_flight_grace_secs = 4;
        })
        .sale(vec![phone(10, 1)])
        .build()
        .await;
    f.reserve(users("m", 3), 1).await;
    f.drain().await;
    let pending = || {
        f.scalar("SELECT COUNT(*) FROM stock_ledger WHERE activity_id = ? AND op = 'sold_out' AND state = 'pending'")
    };

    // Step 1 waits for the row while the process is connected; Redis then stalls, so once
    // step 1 commits, step 2 (the script) hangs until the test has the row again.
    let lock = lock_product(&f).await;
    let child = KillOnDrop(
        f.command(&["stock", "sold-out", &f.product.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    wait_for_lock_wait(&f).await;
    own.signal("-STOP");
    lock.commit().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while pending().await != 1 {
        assert!(Instant::now() < deadline, "step 1 never committed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let lock = lock_product(&f).await;
    own.signal("-CONT");
    // Step 3 now waits for the row: Redis has withdrawn the units.
    wait_for_lock_wait(&f).await;
    assert_eq!(
        f.redis_counters().await,
        (0, 3, 3),
        "Redis withdrew the 7 units on sale"
    );
    let connection: i64 = sqlx::query_scalar(
        "SELECT CAST(id AS SIGNED) FROM information_schema.processlist WHERE db = DATABASE() \
         AND id <> CONNECTION_ID() AND info LIKE '%FOR UPDATE%' AND time >= 1",
    )
    .fetch_one(f.db.pool())
    .await
    .unwrap();
    sqlx::query(&format!("KILL {connection}"))
        .execute(f.db.pool())
        .await
        .unwrap();
    let out = child.wait_with_output().unwrap();
    lock.rollback().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("stock change #") && stderr.contains("is pending"),
        "{stderr}"
    );
    assert_eq!(
        (pending().await, mysql_total(&f).await),
        (1, 10),
        "MySQL has not heard yet"
    );

    // Within the grace the change is in flight: nothing may put the units back.
    let (_, early) = f.run(&["reconcile", &f.activity.to_string(), "--fix"]);
    assert_eq!(
        f.redis_counters().await.0,
        0,
        "reconcile put withdrawn units back on sale:\n{early}"
    );
    assert_eq!(pending().await, 1, "{early}");

    tokio::time::sleep(Duration::from_millis(4100)).await;
    let (code, fixed) = f.run(&["reconcile", &f.activity.to_string(), "--fix"]);
    assert!(fixed.contains("applied in Redis; completed in MySQL"), "{fixed}");
    assert_eq!(f.redis_counters().await, (0, 3, 3), "{fixed}");
    assert_eq!((pending().await, mysql_total(&f).await), (0, 3), "{fixed}");
    let delta = f
        .scalar("SELECT delta FROM stock_ledger WHERE activity_id = ? AND op = 'sold_out'")
        .await;
    assert_eq!(delta, -7);
    assert_settled(&f, code, &fixed).await;
}
