//! Activity and product create / update / list / show / delete, in text and `--json`.

use rust_decimal::Decimal;
use serde_json::json;

use crate::helpers::{future_window, open_window, rfc3339, spawn_app, ProductSpec};

#[tokio::test]
async fn activity_crud_through_the_cli() {
    let app = spawn_app().await;
    let (start, end) = future_window();
    let id = app
        .cli(&[
            "activity",
            "create",
            "--name",
            "Double 11",
            "--start",
            &rfc3339(start),
            "--end",
            &rfc3339(end),
        ])
        .await
        .id();
    let row = app.activity(id).await;
    assert_eq!((row.name.as_str(), row.status.as_str()), ("Double 11", "draft"));
    assert_eq!((row.start_at, row.end_at), (start, end));

    let shown = app.cli(&["activity", "show", &id.to_string()]).await;
    shown.ok();
    for needle in [id.to_string().as_str(), "Double 11", "draft", &rfc3339(start)] {
        assert!(shown.stdout.contains(needle), "{needle:?} not in\n{}", shown.stdout);
    }

    let new_end = end + chrono::Duration::hours(3);
    app.cli(&[
        "activity",
        "update",
        &id.to_string(),
        "--name",
        "Double 12",
        "--end",
        &rfc3339(new_end),
    ])
    .await
    .ok();
    let row = app.activity(id).await;
    assert_eq!(
        (row.name.as_str(), row.start_at, row.end_at),
        ("Double 12", start, new_end)
    );

    let other = app.create_activity(open_window()).await;
    let listed = app.cli(&["activity", "list"]).await;
    listed.ok();
    assert!(
        listed.stdout.contains("Double 12") && listed.stdout.contains(&other.name),
        "{}",
        listed.stdout
    );

    let deleted = app.cli(&["activity", "delete", &id.to_string()]).await;
    deleted.ok();
    assert_eq!(deleted.stdout.trim(), format!("deleted activity {id} (Double 12)"));
    let ids: Vec<u64> = sqlx::query_scalar("SELECT id FROM activities")
        .fetch_all(app.db.pool())
        .await
        .unwrap();
    assert_eq!(ids, vec![other.id]);
}

#[tokio::test]
async fn activity_crud_as_json() {
    let app = spawn_app().await;
    let (start, end) = open_window();
    let created = app
        .cli(&[
            "activity",
            "create",
            "--json",
            "--name",
            "j",
            "--start",
            &rfc3339(start),
            "--end",
            &rfc3339(end),
        ])
        .await
        .json();
    let id = created["id"].as_u64().expect("id");
    assert_eq!(created["name"], "j");
    assert_eq!(created["status"], "draft");
    let row = app.activity(id).await;
    assert_eq!(created, serde_json::to_value(&row).unwrap());

    let shown = app.cli(&["activity", "show", "--json", &id.to_string()]).await.json();
    assert_eq!(shown, created);

    let updated = app
        .cli(&["activity", "update", "--json", &id.to_string(), "--name", "k"])
        .await
        .json();
    assert_eq!(updated["name"], "k");
    assert_eq!(updated["start_at"], created["start_at"]);
    assert_eq!(serde_json::to_value(app.activity(id).await).unwrap(), updated);

    let second = app.create_activity(open_window()).await;
    let listed = app.cli(&["activity", "list", "--json"]).await.json();
    let ids: Vec<u64> = listed
        .as_array()
        .expect("array")
        .iter()
        .map(|a| a["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, vec![second.id, id], "newest first");

    let deleted = app.cli(&["activity", "delete", "--json", &id.to_string()]).await.json();
    assert_eq!(deleted["id"], json!(id));
    assert_eq!(app.count("activities").await, 1);
}

#[tokio::test]
async fn product_crud_through_the_cli() {
    let app = spawn_app().await;
    let activity = app.create_activity(future_window()).await;
    let a = activity.id.to_string();
    let id = app
        .cli(&[
            "product",
            "add",
            "--activity",
            &a,
            "--name",
            "phone",
            "--price",
            "4999.00",
            "--stock",
            "100",
            "--limit-per-user",
            "2",
        ])
        .await
        .id();
    let p = app.product(id).await;
    assert_eq!(p.activity_id, activity.id);
    assert_eq!(
        (p.name.as_str(), p.price, p.total_stock),
        ("phone", Decimal::new(499900, 2), 100)
    );
    assert_eq!(
        (p.per_user_limit, p.max_per_order, p.sold),
        (2, 2, 0),
        "max per order defaults to the limit"
    );

    let shown = app.cli(&["product", "show", &id.to_string()]).await;
    shown.ok();
    assert!(
        shown.stdout.contains("phone") && shown.stdout.contains("4999.00"),
        "{}",
        shown.stdout
    );

    app.cli(&[
        "product",
        "update",
        &id.to_string(),
        "--price",
        "3999.5",
        "--stock",
        "80",
        "--max-per-order",
        "1",
    ])
    .await
    .ok();
    let p = app.product(id).await;
    assert_eq!(
        (p.price, p.total_stock, p.per_user_limit, p.max_per_order),
        (Decimal::new(399950, 2), 80, 2, 1)
    );
    assert_eq!(p.name, "phone");

    let second = app.add_product(activity.id, ProductSpec::default()).await;
    let listed = app.cli(&["product", "list", "--activity", &a]).await;
    listed.ok();
    assert!(
        listed.stdout.contains("phone") && listed.stdout.contains(&second.name),
        "{}",
        listed.stdout
    );

    let deleted = app.cli(&["product", "delete", &id.to_string()]).await;
    deleted.ok();
    assert_eq!(deleted.stdout.trim(), format!("deleted product {id} (phone)"));
    let ids: Vec<u64> = sqlx::query_scalar("SELECT id FROM products")
        .fetch_all(app.db.pool())
        .await
        .unwrap();
    assert_eq!(ids, vec![second.id]);
}

#[tokio::test]
async fn product_crud_as_json() {
    let app = spawn_app().await;
    let activity = app.create_activity(future_window()).await;
    let a = activity.id.to_string();
    let added = app
        .cli(&[
            "product",
            "add",
            "--json",
            "--activity",
            &a,
            "--name",
            "case",
            "--price",
            "19.9",
            "--stock",
            "50",
            "--limit-per-user",
            "5",
            "--max-per-order",
            "3",
        ])
        .await
        .json();
    let id = added["id"].as_u64().expect("id");
    assert_eq!(added["price"], "19.90", "prices are exact strings with two decimals");
    assert_eq!(
        (added["total_stock"].as_u64(), added["per_user_limit"].as_u64()),
        (Some(50), Some(5))
    );
    assert_eq!(added["max_per_order"], 3);
    assert_eq!(added, serde_json::to_value(app.product(id).await).unwrap());

    assert_eq!(
        app.cli(&["product", "show", "--json", &id.to_string()]).await.json(),
        added
    );

    let updated = app
        .cli(&["product", "update", "--json", &id.to_string(), "--name", "cover"])
        .await
        .json();
    assert_eq!(updated["name"], "cover");
    assert_eq!(updated["price"], "19.90");

    let other = app.add_product(activity.id, ProductSpec::default()).await;
    let listed = app.cli(&["product", "list", "--json", "--activity", &a]).await.json();
    let ids: Vec<u64> = listed
        .as_array()
        .expect("array")
        .iter()
        .map(|p| p["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, vec![id, other.id]);

    let deleted = app.cli(&["product", "delete", "--json", &id.to_string()]).await.json();
    assert_eq!(deleted["id"], json!(id));
    assert_eq!(app.count("products").await, 1);
}

#[tokio::test]
async fn deleting_an_activity_removes_its_products_and_ledger() {
    let app = spawn_app().await;
    let (activity, _) = app.activity_with_products().await;
    let (keep, kept) = app.activity_with_products().await;
    app.hot(activity.id).await; // writes stock_ledger rows
    assert!(app.count("stock_ledger").await > 0);
    app.cli(&["activity", "delete", &activity.id.to_string()]).await.ok();
    let left: Vec<u64> = sqlx::query_scalar("SELECT activity_id FROM products")
        .fetch_all(app.db.pool())
        .await
        .unwrap();
    assert_eq!(left, vec![keep.id; kept.len()]);
    assert_eq!(app.count("stock_ledger").await, 0);
    assert_eq!(app.count("activities").await, 1);
}

#[tokio::test]
async fn records_with_orders_are_kept() {
    let app = spawn_app().await;
    let (activity, products) = app.activity_with_products().await;
    app.sql(&format!(
        "INSERT INTO orders (order_no, activity_id, product_id, user_id, quantity, unit_price, amount, reserved_at) \
         VALUES ('{a}-1-0', {a}, {p}, 'u1', 1, 4999.00, 4999.00, NOW(3))",
        a = activity.id,
        p = products[0].id
    ))
    .await;
    let before = app.snapshot().await;
    app.cli(&["product", "delete", &products[0].id.to_string()])
        .await
        .fails_with(1, &["has 1 orders"]);
    app.cli(&["activity", "delete", &activity.id.to_string()])
        .await
        .fails_with(1, &["has 1 orders"]);
    assert_eq!(app.snapshot().await, before);
}

#[tokio::test]
async fn stock_cannot_drop_below_sold() {
    let app = spawn_app().await;
    let (_, products) = app.activity_with_products().await;
    let phone = &products[0];
    app.sql(&format!("UPDATE products SET sold = 30 WHERE id = {}", phone.id))
        .await;
    let before = app.snapshot().await;
    app.cli(&["product", "update", &phone.id.to_string(), "--stock", "29"])
        .await
        .fails_with(1, &["below the 30 units already sold"]);
    assert_eq!(app.snapshot().await, before);
    app.cli(&["product", "update", &phone.id.to_string(), "--stock", "30"])
        .await
        .ok();
    assert_eq!(app.product(phone.id).await.total_stock, 30);
}

/// A status name MySQL holds that this build does not know (a hand edit, or a newer release
/// that dropped the CHECK constraint) fails the read instead of passing for `draft`, and the
/// CLI refuses with exit 1 naming it. Before statuses were typed, `activity show` printed
/// such an activity as `draft` and `status` counted such an order nowhere.
#[tokio::test]
async fn an_unknown_status_in_mysql_is_an_error_not_a_default() {
    let app = spawn_app().await;
    let (activity, products) = app.activity_with_products().await;
    let id = activity.id.to_string();
    app.sql("ALTER TABLE activities DROP CONSTRAINT activities_status")
        .await;
    app.sql("ALTER TABLE orders DROP CONSTRAINT orders_status").await;

    app.sql(&format!(
        "INSERT INTO orders (order_no, activity_id, product_id, user_id, quantity, unit_price, amount, status, reserved_at) \
         VALUES ('{id}-1-0', {id}, {}, 'alice', 1, 1.00, 1.00, 'refunded', NOW(3))",
        products[0].id
    ))
    .await;
    app.cli(&["status", &id])
        .await
        .fails_with(1, &["unknown order status \"refunded\""]);

    app.sql(&format!("UPDATE activities SET status = 'archived' WHERE id = {id}"))
        .await;
    let err = seckill::ops::catalog::get_activity(&app.db, activity.id)
        .await
        .expect_err("an unknown activity status is not read as draft");
    assert!(
        err.to_string().contains("unknown activity status \"archived\""),
        "{err}"
    );
    app.cli(&["activity", "show", &id])
        .await
        .fails_with(1, &["unknown activity status \"archived\""]);
}
