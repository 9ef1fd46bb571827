//! `start` / `stop` / `stop --end` / `status`: MySQL and Redis move together.

use crate::helpers::{spawn_app, TestApp};

/// The status MySQL and Redis each hold for the activity.
async fn statuses(app: &TestApp, id: u64) -> (String, Option<String>) {
    let redis = app.activity_hash(id).await.get("status").cloned();
    (app.activity(id).await.status.to_string(), redis)
}

fn pair(mysql: &str, redis: &str) -> (String, Option<String>) {
    (mysql.to_string(), Some(redis.to_string()))
}

#[tokio::test]
async fn start_is_refused_before_hot() {
    let app = spawn_app().await;
    let (activity, _) = app.activity_with_products().await;
    let before = app.snapshot().await;
    app.cli(&["start", &activity.id.to_string()])
        .await
        .fails_with(1, &["not preheated", "seckill hot"]);
    assert_eq!(app.snapshot().await, before);
    assert_eq!(statuses(&app, activity.id).await, ("draft".to_string(), None));
}

#[tokio::test]
async fn start_stop_start_end() {
    let app = spawn_app().await;
    let (activity, _) = app.activity_with_products().await;
    let a = activity.id.to_string();
    app.cli(&["hot", &a]).await.ok();
    assert_eq!(statuses(&app, activity.id).await, pair("draft", "draft"));

    let out = app.cli(&["start", &a]).await;
    out.ok();
    assert_eq!(out.stdout.trim(), format!("activity {a} is online"));
    assert_eq!(statuses(&app, activity.id).await, pair("online", "online"));

    app.cli(&["stop", &a]).await.ok();
    assert_eq!(statuses(&app, activity.id).await, pair("paused", "paused"));
    app.cli(&["stop", &a]).await.fails_with(1, &["paused, not online"]);

    let resumed = app.cli(&["start", "--json", &a]).await.json();
    assert_eq!(resumed["status"], "online");
    assert_eq!(statuses(&app, activity.id).await, pair("online", "online"));

    let ended = app.cli(&["stop", "--end", "--json", &a]).await.json();
    assert_eq!(ended["status"], "ended");
    assert_eq!(statuses(&app, activity.id).await, pair("ended", "ended"));

    let before = app.snapshot().await;
    app.cli(&["start", &a]).await.fails_with(1, &["has ended"]);
    app.cli(&["stop", &a]).await.fails_with(1, &["already ended"]);
    app.cli(&["stop", "--end", &a]).await.fails_with(1, &["already ended"]);
    assert_eq!(app.snapshot().await, before);
}

#[tokio::test]
async fn stopping_a_draft_is_refused_but_ending_it_works() {
    let app = spawn_app().await;
    let (activity, _) = app.activity_with_products().await;
    let a = activity.id.to_string();
    app.cli(&["stop", &a]).await.fails_with(1, &["draft, not online"]);
    assert_eq!(
        app.activity(activity.id).await.status,
        seckill::model::ActivityStatus::Draft
    );
    app.cli(&["stop", "--end", &a]).await.ok();
    assert_eq!(statuses(&app, activity.id).await, ("ended".to_string(), None));
}

#[tokio::test]
async fn start_is_refused_when_products_changed_after_hot() {
    let app = spawn_app().await;
    let (activity, products) = app.activity_with_products().await;
    let a = activity.id.to_string();
    app.cli(&["hot", &a]).await.ok();
    app.cli(&["product", "update", &products[0].id.to_string(), "--stock", "5"])
        .await
        .ok();
    let before = app.snapshot().await;
    app.cli(&["start", &a])
        .await
        .fails_with(1, &["changed after the last preheat"]);
    assert_eq!(app.snapshot().await, before);
    app.cli(&["hot", &a]).await.ok();
    app.cli(&["start", &a]).await.ok();
    assert_eq!(app.product_hash(activity.id, products[0].id).await["stock"], "5");
}

/// A product written in the very millisecond before `hot` read its clock was seen by that
/// preheat and must not pass for a later change (`product add` then `hot` then `start` in a
/// script used to fail now and then, and the suite with it).
#[tokio::test]
async fn start_accepts_a_product_written_just_before_hot() {
    let app = spawn_app().await;
    let (activity, _) = app.activity_with_products().await;
    // As if written at the preheat's first millisecond: the latest a write that happened
    // before `hot` can carry.
    app.sql(&format!(
        "UPDATE products SET updated_at = NOW(3) + INTERVAL 1000 MICROSECOND WHERE activity_id = {}",
        activity.id
    ))
    .await;
    app.hot(activity.id).await;
    seckill::ops::start(&app.db, &app.redis, activity.id)
        .await
        .expect("a product written before the preheat is not a change after it");
}

#[tokio::test]
async fn status_shows_both_sides() {
    let app = spawn_app().await;
    let (activity, products) = app.activity_with_products().await;
    let a = activity.id.to_string();

    let cold = app.cli(&["status", "--json", &a]).await.json();
    assert_eq!(cold["activity"]["preheated"], false);
    assert_eq!(cold["activity"]["redis_status"], serde_json::Value::Null);
    assert_eq!(cold["products"][0]["remaining"], serde_json::Value::Null);

    app.cli(&["hot", &a]).await.ok();
    app.cli(&["start", &a]).await.ok();
    let live = app.cli(&["status", "--json", &a]).await.json();
    assert_eq!(live["activity"]["status"], "online");
    assert_eq!(live["activity"]["redis_status"], "online");
    assert_eq!(live["activity"]["preheated"], true);
    assert_eq!(live["unpersisted"], 0);
    let figures: Vec<(u64, i64, i64, u64)> = live["products"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["id"].as_u64().unwrap(),
                p["remaining"].as_i64().unwrap(),
                p["reserved"].as_i64().unwrap(),
                p["total_stock"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        figures,
        vec![(products[0].id, 100, 0, 100), (products[1].id, 50, 0, 50)]
    );

    let text = app.cli(&["status", &a]).await;
    text.ok();
    assert!(
        text.stdout.contains("online in MySQL, online in Redis"),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout.contains("phone") && text.stdout.contains("case"),
        "{}",
        text.stdout
    );
}

#[tokio::test]
async fn start_is_refused_when_a_product_was_deleted_after_hot() {
    // Redis would otherwise keep selling a product MySQL no longer has.
    let app = spawn_app().await;
    let (activity, products) = app.activity_with_products().await;
    let a = activity.id.to_string();
    app.cli(&["hot", &a]).await.ok();
    app.cli(&["product", "delete", &products[1].id.to_string()]).await.ok();
    let before = app.snapshot().await;
    app.cli(&["start", &a])
        .await
        .fails_with(1, &["changed after the last preheat", "seckill hot"]);
    assert_eq!(app.snapshot().await, before);
    app.cli(&["hot", &a]).await.ok();
    app.cli(&["start", &a]).await.ok();
    assert!(app.product_hash(activity.id, products[1].id).await.is_empty());
}
