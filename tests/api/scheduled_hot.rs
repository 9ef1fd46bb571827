//! A scheduled preheat (`activity create|update --hot-at | --hot-before`): `seckill scheduler`
//! runs `hot` once at `hot_at` while the activity is `draft`, and opens it at its start.

use std::time::{Duration, Instant};

use chrono::{DateTime, SubsecRound, Utc};
use seckill::model::ActivityStatus;

use crate::helpers::{phone, rfc3339, TestApp};
use crate::scheduler::{count, scheduler, seen, stop};

/// `preheat` rows `hot` wrote to the ledger for the activity (one per product per preheat).
async fn preheats(app: &TestApp, activity: u64) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM stock_ledger WHERE activity_id = ? AND op = 'preheat'")
        .bind(activity)
        .fetch_one(app.db.pool())
        .await
        .unwrap()
}

/// Creates, through the CLI, an activity preheated `hot_in` seconds from now (counted from the
/// whole second: up to one less), opening `opens_in` and lasting `lasts` seconds, with one
/// product of 10 units; returns the activity, its hot_at, its start and the product.
async fn scheduled(app: &TestApp, hot_in: i64, opens_in: i64, lasts: i64) -> (u64, DateTime<Utc>, DateTime<Utc>, u64) {
    let now = Utc::now().trunc_subsecs(0);
    let (hot_at, start) = (
        now + chrono::Duration::seconds(hot_in),
        now + chrono::Duration::seconds(opens_in),
    );
    let end = start + chrono::Duration::seconds(lasts);
    let id = app
        .cli(&[
            "activity",
            "create",
            "--name",
            "scheduled",
            "--start",
            &rfc3339(start),
            "--end",
            &rfc3339(end),
            "--hot-at",
            &rfc3339(hot_at),
        ])
        .await
        .id();
    assert_eq!(app.activity(id).await.hot_at, Some(hot_at));
    let product = app.add_product(id, phone(10, 1)).await.id;
    (id, hot_at, start, product)
}

#[tokio::test]
async fn the_scheduler_preheats_at_hot_at_then_opens_at_start() {
    let app = TestApp::builder().build().await;
    let (id, hot_at, start, product) = scheduled(&app, 2, 4, 60).await;
    let child = scheduler(&app);
    assert!(app.activity_hash(id).await.is_empty(), "preheated before hot_at");

    let deadline = Instant::now() + Duration::from_secs(10);
    let preheated = loop {
        if app.product_hash(id, product).await.get("stock").map(String::as_str) == Some("10") {
            break Utc::now();
        }
        assert!(Instant::now() < deadline, "never preheated");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let late = preheated - hot_at;
    assert!(
        late >= chrono::Duration::zero() && late < chrono::Duration::seconds(1),
        "preheated {late} after hot_at"
    );
    assert!(preheated < start, "preheated at {preheated}, the start is {start}");
    assert_eq!(
        app.activity(id).await.status,
        ActivityStatus::Draft,
        "preheating does not open"
    );

    seen(&app, id, ActivityStatus::Online, deadline).await;
    assert_eq!(app.activity_hash(id).await["status"], "online");
    let logs = stop(child);
    assert_eq!(count(&logs, "activity preheated", id), 1, "{logs:?}");
    assert_eq!(count(&logs, "activity opened", id), 1, "{logs:?}");
    assert_eq!(preheats(&app, id).await, 1, "one product, preheated once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_schedulers_preheat_once_and_keep_an_operators_later_hot() {
    // Ticks far shorter than a preheat, so unguarded schedulers would both make it.
    let app = TestApp::builder().tune(|c| c.scheduler.tick_ms = 10).build().await;
    let (id, _, _, _) = scheduled(&app, 2, 5, 60).await;
    // Preheated by hand before its hot_at: run again at hot_at (the catalog may have changed).
    app.hot(id).await;
    // Due at once, preheated by hand after its hot_at: left alone.
    let (kept, _, _, _) = scheduled(&app, -2, 3600, 60).await;
    app.hot(kept).await;
    let children: Vec<_> = (0..2).map(|_| scheduler(&app)).collect();
    seen(
        &app,
        id,
        ActivityStatus::Online,
        Instant::now() + Duration::from_secs(15),
    )
    .await;
    let logs: Vec<serde_json::Value> = children.into_iter().flat_map(stop).collect();
    assert_eq!(count(&logs, "activity preheated", id), 1, "{logs:?}");
    assert_eq!(count(&logs, "activity opened", id), 1, "{logs:?}");
    assert_eq!(preheats(&app, id).await, 2, "the operator's hot and the scheduler's");
    assert_eq!(count(&logs, "activity preheated", kept), 0, "{logs:?}");
    assert_eq!(preheats(&app, kept).await, 1);
    assert_eq!(app.activity(kept).await.status, ActivityStatus::Draft);
    let errors: Vec<_> = logs.iter().filter(|l| l["level"] != "INFO").collect();
    assert!(errors.is_empty(), "{errors:?}");
}

#[tokio::test]
async fn a_preheat_refused_is_logged_once_and_nothing_is_loaded() {
    let app = TestApp::builder().build().await;
    let now = Utc::now().trunc_subsecs(0);
    // Due, but without products: `hot` refuses, and keeps refusing every tick.
    let id = app
        .cli(&[
            "activity",
            "create",
            "--name",
            "empty",
            "--start",
            &rfc3339(now + chrono::Duration::hours(1)),
            "--end",
            &rfc3339(now + chrono::Duration::hours(2)),
            "--hot-before",
            "120",
        ])
        .await
        .id();
    // Online (started ahead of its window), its hot_at then moved past its last preheat:
    // an online sale is never preheated (that would overwrite its live stock).
    let (online, _, _, _) = scheduled(&app, 3000, 3600, 3600).await;
    app.hot(online).await;
    seckill::ops::start(&app.db, &app.redis, online).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let a = online.to_string();
    app.cli(&[
        "activity",
        "update",
        &a,
        "--hot-at",
        &rfc3339(Utc::now().trunc_subsecs(0)),
    ])
    .await
    .ok();
    let child = scheduler(&app);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let logs = stop(child);
    let about_online: Vec<_> = logs.iter().filter(|l| l["fields"]["activity"] == online).collect();
    assert!(about_online.is_empty(), "not even tried: {about_online:?}");
    assert_eq!(preheats(&app, online).await, 1);
    assert_eq!(app.activity(online).await.status, ActivityStatus::Online);
    let warned: Vec<_> = logs
        .iter()
        .filter(|l| l["fields"]["activity"] == id && l["level"] == "WARN")
        .collect();
    assert_eq!(warned.len(), 1, "one warning, not one per tick: {logs:?}");
    assert!(warned[0].to_string().contains("no products"), "{warned:?}");
    assert!(app.activity_hash(id).await.is_empty());
    assert_eq!(app.activity(id).await.status, ActivityStatus::Draft);
}

#[tokio::test]
async fn hot_at_is_set_checked_moved_with_the_start_and_cleared() {
    let app = TestApp::builder().build().await;
    let now = Utc::now().trunc_subsecs(0);
    let (start, end) = (now + chrono::Duration::hours(1), now + chrono::Duration::hours(2));
    let created = app
        .cli(&[
            "activity",
            "create",
            "--json",
            "--name",
            "h",
            "--start",
            &rfc3339(start),
            "--end",
            &rfc3339(end),
            "--hot-before",
            "10",
        ])
        .await
        .json();
    let id = created["id"].as_u64().unwrap();
    let ten_before = start - chrono::Duration::minutes(10);
    assert_eq!(app.activity(id).await.hot_at, Some(ten_before));
    assert_eq!(created["hot_at"], serde_json::to_value(ten_before).unwrap());
    let a = id.to_string();

    // Moving the start keeps the lead.
    let later = start + chrono::Duration::hours(1);
    app.cli(&[
        "activity",
        "update",
        &a,
        "--start",
        &rfc3339(later),
        "--end",
        &rfc3339(end + chrono::Duration::hours(1)),
    ])
    .await
    .ok();
    assert_eq!(
        app.activity(id).await.hot_at,
        Some(later - chrono::Duration::minutes(10))
    );
    let shown = app.cli(&["activity", "show", &a]).await;
    assert!(
        shown
            .ok()
            .stdout
            .contains(&rfc3339(later - chrono::Duration::minutes(10))),
        "{}",
        shown.stdout
    );

    // After the start, or both flags at once: refused, nothing changed.
    let before = app.activity(id).await;
    app.cli(&[
        "activity",
        "update",
        &a,
        "--hot-at",
        &rfc3339(later + chrono::Duration::seconds(1)),
    ])
    .await
    .fails_with(1, &["must be at or before the start"]);
    app.cli(&[
        "activity",
        "update",
        &a,
        "--hot-at",
        &rfc3339(later),
        "--hot-before",
        "5",
    ])
    .await
    .fails_with(2, &["--hot-before"]);
    app.cli(&["activity", "update", &a, "--hot-before", "525601"])
        .await
        .fails_with(2, &["525601"]);
    app.cli(&["activity", "update", &a, "--no-hot", "--hot-before", "5"])
        .await
        .fails_with(2, &["--no-hot"]);
    assert_eq!(app.activity(id).await, before);

    app.cli(&["activity", "update", &a, "--hot-at", &rfc3339(later)])
        .await
        .ok();
    assert_eq!(app.activity(id).await.hot_at, Some(later));
    app.cli(&["activity", "update", &a, "--no-hot"]).await.ok();
    assert_eq!(app.activity(id).await.hot_at, None);
}
