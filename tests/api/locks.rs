//! While an activity is online its products and window are frozen and it cannot be deleted.

use crate::helpers::{rfc3339, spawn_app};

#[tokio::test]
async fn products_and_activity_are_frozen_while_online() {
    let app = spawn_app().await;
    let (activity, products) = app.online_activity().await;
    let (a, p) = (activity.id.to_string(), products[0].id.to_string());
    let before = app.snapshot().await;

    app.cli(&["product", "update", &p, "--stock", "1"])
        .await
        .fails_with(1, &["refused", "online"]);
    app.cli(&["product", "update", &p, "--name", "x"])
        .await
        .fails_with(1, &["online"]);
    app.cli(&["product", "delete", &p]).await.fails_with(1, &["online"]);
    app.cli(&[
        "product",
        "add",
        "--activity",
        &a,
        "--name",
        "late",
        "--price",
        "1",
        "--stock",
        "1",
    ])
    .await
    .fails_with(1, &["online"]);
    app.cli(&["activity", "delete", &a])
        .await
        .fails_with(1, &["online", "stop it first"]);

    assert_eq!(app.snapshot().await, before, "refused commands changed something");
}

#[tokio::test]
async fn products_thaw_after_stop() {
    let app = spawn_app().await;
    let (activity, products) = app.online_activity().await;
    app.cli(&["stop", &activity.id.to_string()]).await.ok();
    app.cli(&["product", "update", &products[0].id.to_string(), "--stock", "7"])
        .await
        .ok();
    assert_eq!(app.product(products[0].id).await.total_stock, 7);
    app.cli(&["product", "delete", &products[1].id.to_string()]).await.ok();
    assert_eq!(app.count("products").await, 1);
}

#[tokio::test]
async fn the_window_is_frozen_while_online() {
    let app = spawn_app().await;
    let (activity, _) = app.online_activity().await;
    let new_end = activity.end_at + chrono::Duration::hours(1);
    app.cli(&[
        "activity",
        "update",
        &activity.id.to_string(),
        "--end",
        &rfc3339(new_end),
    ])
    .await
    .fails_with(1, &["refused", "online"]);
    let row = app.activity(activity.id).await;
    assert_eq!((row.end_at, row.status.as_str()), (activity.end_at, "online"));
}
