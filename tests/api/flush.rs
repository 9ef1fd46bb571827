//! `seckill flush`: removes every key of one activity and nothing else.

use std::collections::BTreeSet;

use redis::AsyncCommands;

use crate::helpers::spawn_app;

#[tokio::test]
async fn flush_is_refused_while_online_without_force() {
    let app = spawn_app().await;
    let (activity, _) = app.online_activity().await;
    let before = app.snapshot().await;
    app.cli(&["flush", "-y", &activity.id.to_string()])
        .await
        .fails_with(1, &["online", "--force"]);
    assert_eq!(app.snapshot().await, before);

    let report = app
        .cli(&["flush", "-y", "--force", "--json", &activity.id.to_string()])
        .await
        .json();
    let removed: BTreeSet<String> = report["removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        removed,
        before.redis.keys().filter(|k| k.contains("{a:")).cloned().collect()
    );
    assert!(app.activity_keys(activity.id).await.is_empty());
}

#[tokio::test]
async fn flush_removes_one_activity_and_leaves_the_rest() {
    let app = spawn_app().await;
    let (activity, products) = app.activity_with_products().await;
    let (other, other_products) = app.activity_with_products().await;
    let a = activity.id.to_string();
    app.hot(activity.id).await;
    app.hot(other.id).await;
    // The same activity under another prefix that starts with ours (`<prefix>x`): another
    // deployment sharing this Redis. Dropping the app deletes `<prefix>*`, so it is cleaned too.
    let other_prefix = format!("{}x", app.prefix);
    app.cli_with(&["hot", &a], &[("SECKILL_KEY_PREFIX", other_prefix.as_str())], None)
        .await
        .ok();
    let foreign_before = app.scan(&format!("{other_prefix}:*")).await;
    assert!(foreign_before.len() >= 4, "{foreign_before:?}");
    let other_before = app.activity_keys(other.id).await;
    let mine = app.activity_keys(activity.id).await;
    assert!(mine.contains(&app.redis.keys().activity(activity.id)));

    let out = app.cli(&["flush", "-y", &a]).await;
    out.ok();
    assert!(
        out.stdout
            .contains(&format!("flushed activity {a}: {} keys removed", mine.len())),
        "{}",
        out.stdout
    );

    assert!(app.activity_keys(activity.id).await.is_empty());
    assert_eq!(app.activity_keys(other.id).await, other_before);
    assert_eq!(app.scan(&format!("{other_prefix}:*")).await, foreign_before);
    let keys = app.redis.keys();
    let mut conn = app.redis.conn();
    let active: BTreeSet<u64> = conn.smembers(keys.activities()).await.unwrap();
    assert_eq!(active, BTreeSet::from([other.id]));
    let owners: std::collections::HashMap<u64, u64> = conn.hgetall(keys.product_activity()).await.unwrap();
    assert!(products.iter().all(|p| !owners.contains_key(&p.id)), "{owners:?}");
    assert!(
        other_products.iter().all(|p| owners.get(&p.id) == Some(&other.id)),
        "{owners:?}"
    );
    // MySQL is untouched by a flush.
    assert_eq!(app.count("products").await, 4);

    // Flushing again finds nothing to remove; `start` now needs a new `hot`.
    let again = app.cli(&["flush", "-y", "--json", &a]).await.json();
    assert_eq!(again["removed"], serde_json::json!([]));
    app.cli(&["start", &a]).await.fails_with(1, &["not preheated"]);
}

#[tokio::test]
async fn flush_without_yes_on_a_pipe_refuses() {
    let app = spawn_app().await;
    let (activity, _) = app.activity_with_products().await;
    app.hot(activity.id).await;
    let before = app.snapshot().await;
    let a = activity.id.to_string();
    app.cli(&["flush", &a])
        .await
        .fails_with(1, &["not confirmed", "nothing removed"]);
    // Even a "y" on a pipe is not a confirmation: only a terminal can answer.
    app.cli_with(&["flush", &a], &[], Some("y\n"))
        .await
        .fails_with(1, &["not confirmed"]);
    assert_eq!(app.snapshot().await, before);
}

#[tokio::test]
async fn flush_after_stop_then_hot_again_restores_the_sale() {
    let app = spawn_app().await;
    let (activity, products) = app.online_activity().await;
    let a = activity.id.to_string();
    app.cli(&["stop", &a]).await.ok();
    app.cli(&["flush", "-y", &a]).await.ok();
    assert!(app.all_keys().await.iter().all(|k| !k.contains(&format!("{{a:{a}}}"))));
    app.cli(&["hot", &a]).await.ok();
    app.cli(&["start", &a]).await.ok();
    assert_eq!(app.activity_hash(activity.id).await["status"], "online");
    assert_eq!(app.product_hash(activity.id, products[0].id).await["stock"], "100");
}
