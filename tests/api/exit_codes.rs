//! The exit code of each way a command ends, as `commands/exit.rs` decides it: 0 success,
//! 1 failed or refused, 2 a usage or configuration error; `reconcile` 0 consistent,
//! 1 drift, 2 could not check.

use redis::AsyncCommands;

use crate::helpers::spawn_app;

#[tokio::test]
async fn reconcile_exits_0_consistent_1_drift_2_could_not_check() {
    let app = spawn_app().await;
    let (activity, products) = app.online_activity().await;
    let a = activity.id.to_string();
    app.cli(&["reconcile", &a]).await.ok();

    let unreachable = [("SECKILL_REDIS_URL", "redis://127.0.0.1:1/0")];
    app.cli_with(&["reconcile", &a], &unreachable, None)
        .await
        .fails_with(2, &["error:", "redis at 127.0.0.1:1"]);
    app.cli(&["reconcile", "424242"])
        .await
        .fails_with(2, &["error:", "424242"]);
    let missing_dir = app
        .write_file("here.txt", "")
        .with_file_name("no-such-dir")
        .join("r.prom");
    app.cli(&["reconcile", &a, "--metrics-file", missing_dir.to_str().unwrap()])
        .await
        .fails_with(2, &["error: cannot write", "no-such-dir"]);
    // A configuration that cannot work is a usage error here too, before anything is checked.
    app.cli_with(&["reconcile", &a], &[("SECKILL_REDIS_DURABILITY", "sometimes")], None)
        .await
        .fails_with(2, &["SECKILL_REDIS_DURABILITY"]);

    // Drift: Redis claims a unit more on sale than MySQL accounts for.
    let mut conn = app.redis.conn();
    let _: i64 = conn
        .hincr(app.redis.keys().product(activity.id, products[0].id), "stock", 1)
        .await
        .unwrap();
    let drift = app.cli(&["reconcile", &a]).await;
    drift.fails_with(1, &[]);
    assert!(drift.stdout.contains("drift found"), "{}", drift.stdout);
}

#[tokio::test]
async fn doctor_that_finds_a_failing_check_exits_1() {
    let app = spawn_app().await;
    let out = app
        .cli_with(&["doctor"], &[("SECKILL_REDIS_URL", "redis://127.0.0.1:1/0")], None)
        .await;
    out.fails_with(1, &["doctor: some checks failed"]);
    assert!(
        out.stdout.contains("FAIL"),
        "the table is printed first: {}",
        out.stdout
    );
}

#[tokio::test]
async fn status_interval_out_of_range_is_a_usage_error_with_or_without_watch() {
    let app = spawn_app().await;
    let (activity, _) = app.online_activity().await;
    let a = activity.id.to_string();
    // Before: 10ms..100ms passed clap and `--watch` then refused with exit 1 (without
    // `--watch`, exit 0); 1ms was already exit 2.
    for args in [
        vec!["status", &a, "--watch", "--interval", "50ms"],
        vec!["status", &a, "--interval", "50ms"],
        vec!["status", &a, "--watch", "--interval", "1ms"],
        vec!["status", &a, "--interval", "2h"],
    ] {
        app.cli(&args).await.fails_with(2, &["--interval", "from 100ms to 1h"]);
    }
    app.cli(&["status", &a, "--interval", "100ms"]).await.ok();
}

#[tokio::test]
async fn bad_flag_values_exit_2_and_refusals_exit_1() {
    let app = spawn_app().await;
    let (activity, products) = app.online_activity().await;
    let (a, p) = (activity.id.to_string(), products[0].id.to_string());
    let before = app.snapshot().await;
    app.cli(&["order", "list", "--activity", &a, "--status", "bogus"])
        .await
        .fails_with(2, &["--status", "pending"]);
    app.cli(&["token", &a, "--range", "5-1"])
        .await
        .fails_with(2, &["--range", "FIRST must not exceed LAST"]);
    // Before: exit 1, from the library, once the rehearsal had begun to run.
    app.cli(&["bench", "--url", "https://127.0.0.1:8080"])
        .await
        .fails_with(2, &["--url", "only http://host:port URLs"]);
    app.cli(&["bench", "--url", "http:///health", "--probe", "/health"])
        .await
        .fails_with(2, &["--url", "no host:port"]);
    // The chaos flag is gone from the binary: an unknown flag.
    app.cli(&["bench", "--spawn", "--chaos-extra-stock", "10"])
        .await
        .fails_with(2, &["--chaos-extra-stock"]);
    // Refused by the library: exit 1, nothing changed.
    app.cli(&["product", "update", &p, "--stock", "0"])
        .await
        .fails_with(1, &["refused"]);
    app.cli(&["consumer", "--once", "--metrics-bind", "not-an-address"])
        .await
        .fails_with(1, &["cannot listen on not-an-address"]);
    assert_eq!(app.snapshot().await, before);
}
