//! `seckill hot`: Redis gets exactly what MySQL holds; repeating it is harmless; it refuses
//! to overwrite a live sale.

use std::collections::{BTreeSet, HashMap};

use redis::AsyncCommands;

use crate::helpers::{spawn_app, ProductSpec};

fn expected_product_hash(p: &seckill::model::Product) -> HashMap<String, String> {
    [
        ("id", p.id.to_string()),
        ("stock", (p.total_stock - p.sold).to_string()),
        ("sold", p.sold.to_string()),
        ("total", p.total_stock.to_string()),
        ("limit", p.per_user_limit.to_string()),
        ("max_per_order", p.max_per_order.to_string()),
        ("price", p.price.to_string()),
        ("name", p.name.clone()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

#[tokio::test]
async fn hot_loads_what_mysql_holds() {
    let app = spawn_app().await;
    let (activity, products) = app.activity_with_products().await;
    // A product with units already sold: Redis must offer only the rest.
    app.sql(&format!("UPDATE products SET sold = 40 WHERE id = {}", products[1].id))
        .await;
    let out = app.cli(&["hot", &activity.id.to_string()]).await;
    out.ok();
    assert!(out.stdout.contains("2 products, 110 units on sale"), "{}", out.stdout);

    let keys = app.redis.keys();
    for p in &products {
        let row = app.product(p.id).await;
        assert_eq!(
            app.product_hash(activity.id, p.id).await,
            expected_product_hash(&row),
            "product {}",
            p.id
        );
    }
    assert_eq!(app.product_hash(activity.id, products[1].id).await["stock"], "10");
    assert_eq!(app.product_hash(activity.id, products[0].id).await["price"], "4999.00");

    let hash = app.activity_hash(activity.id).await;
    assert_eq!(hash["id"], activity.id.to_string());
    assert_eq!(hash["name"], activity.name);
    assert_eq!(hash["status"], "draft");
    assert_eq!(hash["start_ms"], activity.start_at.timestamp_millis().to_string());
    assert_eq!(hash["end_ms"], activity.end_at.timestamp_millis().to_string());
    let preheated: i64 = hash["preheated_at"].parse().expect("preheated_at is set");
    assert!(
        (preheated - chrono::Utc::now().timestamp_millis()).abs() < 60_000,
        "{preheated}"
    );

    let mut conn = app.redis.conn();
    let ids: BTreeSet<u64> = conn.smembers(keys.products(activity.id)).await.unwrap();
    assert_eq!(ids, products.iter().map(|p| p.id).collect());
    let active: BTreeSet<u64> = conn.smembers(keys.activities()).await.unwrap();
    assert_eq!(active, BTreeSet::from([activity.id]));
    let owner: HashMap<u64, u64> = conn.hgetall(keys.product_activity()).await.unwrap();
    assert_eq!(owner, products.iter().map(|p| (p.id, activity.id)).collect());

    let ledger: Vec<(u64, String, i32)> =
        sqlx::query_as("SELECT product_id, op, delta FROM stock_ledger ORDER BY product_id")
            .fetch_all(app.db.pool())
            .await
            .unwrap();
    assert_eq!(
        ledger,
        vec![
            (products[0].id, "preheat".into(), 100),
            (products[1].id, "preheat".into(), 10)
        ]
    );
}

#[tokio::test]
async fn hot_reports_as_json() {
    let app = spawn_app().await;
    let (activity, _) = app.activity_with_products().await;
    let report = app.cli(&["hot", "--json", &activity.id.to_string()]).await.json();
    assert_eq!(
        report,
        serde_json::json!({
            "activity_id": activity.id, "status": "draft", "products": 2, "remaining": 150,
            "holders": 0, "blacklisted": 0
        })
    );
}

#[tokio::test]
async fn hot_twice_is_harmless_and_drops_removed_products() {
    let app = spawn_app().await;
    let (activity, products) = app.activity_with_products().await;
    let a = activity.id.to_string();
    app.cli(&["hot", &a]).await.ok();
    let first = app.snapshot().await;
    app.cli(&["hot", &a]).await.ok();
    let second = app.snapshot().await;
    assert_eq!(
        first.redis.keys().collect::<Vec<_>>(),
        second.redis.keys().collect::<Vec<_>>()
    );
    for p in &products {
        let key = app.redis.keys().product(activity.id, p.id);
        assert_eq!(first.redis[&key], second.redis[&key]);
    }

    // Remove one product and re-preheat: its Redis hash must go, the other stays exact.
    app.cli(&["product", "delete", &products[1].id.to_string()]).await.ok();
    app.cli(&["hot", &a]).await.ok();
    assert!(app.product_hash(activity.id, products[1].id).await.is_empty());
    let row = app.product(products[0].id).await;
    assert_eq!(
        app.product_hash(activity.id, products[0].id).await,
        expected_product_hash(&row)
    );
    let ids: BTreeSet<u64> = app
        .redis
        .conn()
        .smembers(app.redis.keys().products(activity.id))
        .await
        .unwrap();
    assert_eq!(ids, BTreeSet::from([products[0].id]));
}

#[tokio::test]
async fn hot_is_refused_while_online() {
    let app = spawn_app().await;
    let (activity, _) = app.online_activity().await;
    let before = app.snapshot().await;
    app.cli(&["hot", &activity.id.to_string()])
        .await
        .fails_with(1, &["refused", "online"]);
    assert_eq!(app.snapshot().await, before);
}

#[tokio::test]
async fn hot_is_refused_when_redis_alone_says_online() {
    // MySQL says paused but Redis still says online (e.g. a stop that died halfway):
    // the script itself must refuse to overwrite live stock.
    let app = spawn_app().await;
    let (activity, _) = app.online_activity().await;
    app.sql(&format!(
        "UPDATE activities SET status = 'paused' WHERE id = {}",
        activity.id
    ))
    .await;
    let before = app.snapshot().await;
    app.cli(&["hot", &activity.id.to_string()])
        .await
        .fails_with(1, &["online in Redis"]);
    assert_eq!(app.snapshot().await, before);
}

#[tokio::test]
async fn hot_needs_products() {
    let app = spawn_app().await;
    let activity = app.create_activity(crate::helpers::open_window()).await;
    app.cli(&["hot", &activity.id.to_string()])
        .await
        .fails_with(1, &["has no products"]);
    assert!(app.all_keys().await.is_empty());
    app.add_product(activity.id, ProductSpec::default()).await;
    app.cli(&["hot", &activity.id.to_string()]).await.ok();
    assert!(!app.activity_keys(activity.id).await.is_empty());
}

/// A product written just before `hot` (as `product update` then `hot` in a script do) is
/// part of the preheat, not a change after it: `start` right after must not refuse, however
/// close together the three run. Without a guard the write and the preheat's snapshot time
/// often share a millisecond and `start` refuses.
#[tokio::test]
async fn a_product_written_just_before_hot_does_not_block_start() {
    let app = spawn_app().await;
    let (activity, products) = app.activity_with_products().await;
    for round in 0..40 {
        app.sql(&format!(
            "UPDATE products SET name = 'phone {round}' WHERE id = {}",
            products[0].id
        ))
        .await;
        app.hot(activity.id).await;
        seckill::ops::lifecycle::start(&app.db, &app.redis, activity.id)
            .await
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        seckill::ops::lifecycle::stop(&app.db, &app.redis, activity.id, false)
            .await
            .expect("pause");
    }
    // And a change after the preheat is still noticed.
    app.hot(activity.id).await;
    app.sql(&format!(
        "UPDATE products SET name = 'tablet' WHERE id = {}",
        products[0].id
    ))
    .await;
    let refused = seckill::ops::lifecycle::start(&app.db, &app.redis, activity.id)
        .await
        .expect_err("a product changed after the preheat");
    assert!(
        refused.to_string().contains("changed after the last preheat"),
        "{refused}"
    );
}
