//! `reconcile --all` checks every activity on sale and every one ended recently, with the
//! worst exit code and one textfile; every `--fix` repair leaves a ledger row.

use redis::AsyncCommands;

use crate::helpers::{phone, users, TestApp};
use crate::metrics::sample;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_names_the_one_activity_that_drifted_and_writes_every_gauge() {
    let app = TestApp::builder().pipeline().build().await;
    let mut online = Vec::new();
    for _ in 0..3 {
        online.push(app.online_activity().await.0.id);
    }
    // Ended two days ago, beyond `orders.reconcile_window`: not checked.
    let (old, _) = app.activity_with_products().await;
    app.sql(&format!(
        "UPDATE activities SET status = 'ended', start_at = NOW(3) - INTERVAL 3 DAY, \
         end_at = NOW(3) - INTERVAL 2 DAY, updated_at = NOW(3) - INTERVAL 2 DAY WHERE id = {}",
        old.id
    ))
    .await;
    let path = app.workdir.join("reconcile.prom");
    let (code, out) = app.run(&["reconcile", "--all", "--metrics-file", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");

    // Redis puts a unit on sale that MySQL does not account for, in the middle activity.
    let drifted = online[1];
    let product: u64 = sqlx::query_scalar("SELECT MIN(id) FROM products WHERE activity_id = ?")
        .bind(drifted)
        .fetch_one(app.db.pool())
        .await
        .unwrap();
    let _: i64 = app
        .redis
        .conn()
        .hincr(app.redis.keys().product(drifted, product), "stock", 1)
        .await
        .unwrap();

    let out = app
        .cli(&["reconcile", "--all", "--metrics-file", path.to_str().unwrap()])
        .await;
    out.fails_with(1, &[&format!("drift in activity(ies) {drifted}")]);
    assert!(
        out.stdout.contains(&format!("== activity {drifted}: drift")),
        "{}",
        out.stdout
    );
    for clean in [online[0], online[2]] {
        assert!(
            out.stdout.contains(&format!("== activity {clean}: consistent")),
            "{}",
            out.stdout
        );
    }
    assert!(
        !out.stdout.contains(&format!("== activity {}:", old.id)),
        "{}",
        out.stdout
    );

    let text = std::fs::read_to_string(&path).unwrap();
    for id in &online {
        let id = id.to_string();
        let drift = sample(&text, "seckill_reconcile_drift", &[("activity", &id)]).unwrap_or_else(|| panic!("{text}"));
        assert_eq!(drift > 0.0, id == drifted.to_string(), "activity {id}: {text}");
        assert!(
            sample(
                &text,
                "seckill_reconcile_last_run_timestamp_seconds",
                &[("activity", &id)]
            )
            .is_some(),
            "{text}"
        );
    }
    assert!(sample(&text, "seckill_reconcile_drift", &[("activity", &old.id.to_string())]).is_none());
    assert_eq!(
        text.matches("# TYPE seckill_reconcile_drift gauge").count(),
        1,
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_exits_2_when_one_activity_cannot_be_checked_and_keeps_its_last_gauges() {
    let app = TestApp::builder().pipeline().build().await;
    let checked = app.online_activity().await.0.id;
    let broken = app.online_activity().await.0.id;
    let path = app.workdir.join("reconcile.prom");
    let path_arg = path.to_str().unwrap();
    app.cli(&["reconcile", "--all", "--metrics-file", path_arg]).await.ok();
    let first = std::fs::read_to_string(&path).unwrap();
    let last_run = |text: &str, id: u64| {
        sample(
            text,
            "seckill_reconcile_last_run_timestamp_seconds",
            &[("activity", &id.to_string())],
        )
    };
    let broken_checked_at = last_run(&first, broken).unwrap_or_else(|| panic!("{first}"));

    // The activity's stream key holds a string: reading its reservations fails.
    let mut conn = app.redis.conn();
    let stream = app.redis.keys().orders_stream(broken);
    let _: () = conn.del(&stream).await.unwrap();
    let _: () = conn.set(&stream, "not a stream").await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let out = app.cli(&["reconcile", "--all", "--metrics-file", path_arg]).await;
    out.fails_with(2, &[&format!("could not check activity(ies) {broken}")]);
    assert!(
        out.stdout.contains(&format!("== activity {checked}: consistent")),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains(&format!("== activity {broken}: could not check")),
        "{}",
        out.stdout
    );

    // The one checked is fresh; the other keeps its last check's time, which goes stale.
    let second = std::fs::read_to_string(&path).unwrap();
    assert!(
        last_run(&second, checked) > last_run(&first, checked),
        "{first}\n{second}"
    );
    assert_eq!(last_run(&second, broken), Some(broken_checked_at), "{second}");
    assert_eq!(
        sample(&second, "seckill_reconcile_drift", &[("activity", &broken.to_string())]),
        Some(0.0),
        "{second}"
    );
}

/// Rows `reconcile --fix` wrote to the ledger whose reason contains `needle`.
async fn ledger_rows(app: &TestApp, needle: &str) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM stock_ledger WHERE ref = 'reconcile' AND reason LIKE ?")
        .bind(format!("%{needle}%"))
        .fetch_one(app.db.pool())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_and_unreleased_repairs_write_ledger_rows() {
    let app = TestApp::builder().pipeline().sale(vec![phone(10, 2)]).build().await;
    let orders = app.reserve(users("q", 2), 1).await;
    app.drain().await;
    let keys = app.redis.keys();
    let mut conn = app.redis.conn();

    // Unreleased: the order is cancelled in MySQL, and Redis never got its unit back.
    let (product_key, bought_key) = (
        keys.product(app.activity, app.product),
        keys.bought(app.activity, app.product),
    );
    let product_before: Vec<(String, String)> = conn.hgetall(&product_key).await.unwrap();
    let bought_before: Vec<(String, String)> = conn.hgetall(&bought_key).await.unwrap();
    seckill::ops::order::cancel(&app.db, &app.redis, &orders[0])
        .await
        .unwrap();
    let _: () = conn
        .hset_multiple(&product_key, product_before.as_slice())
        .await
        .unwrap();
    let _: () = conn.hset_multiple(&bought_key, bought_before.as_slice()).await.unwrap();
    let _: () = conn.srem(keys.released(app.activity), &orders[0]).await.unwrap();
    // Quota drift: Redis says the other buyer holds a unit more than their orders.
    let _: i64 = conn.hincr(&bought_key, "q1", 1).await.unwrap();

    let report = seckill::ops::reconcile::reconcile(
        &app.db,
        &app.redis,
        app.group(),
        app.activity,
        std::time::Duration::from_secs(60),
        true,
    )
    .await
    .unwrap();
    assert!(report.consistent, "{report:?}");
    let classes: Vec<&str> = report.findings.iter().map(|f| f.class.as_str()).collect();
    assert!(
        classes.contains(&"unreleased") && classes.contains(&"quota_drift"),
        "{classes:?}"
    );
    assert_eq!(
        ledger_rows(&app, &format!("order {}: 1 unit(s) back on sale", orders[0])).await,
        1
    );
    assert_eq!(ledger_rows(&app, "user q1: units held 2 -> 1").await, 1);
}
