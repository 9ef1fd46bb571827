//! `seckill migrate`: creates the database, applies the schema, and is harmless twice.

use crate::helpers::{drop_database, mysql_server_url, random_suffix, spawn_app};

#[tokio::test]
async fn migrate_twice_changes_nothing() {
    let app = spawn_app().await; // already migrated once by the library
    let before = app.snapshot().await;
    let out = app.cli(&["migrate"]).await;
    out.ok();
    assert_eq!(out.stdout.trim(), "database is up to date");
    let out = app.cli(&["migrate", "--json"]).await;
    out.ok();
    assert_eq!(out.json(), serde_json::json!({ "applied": [] }));
    let applied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE success = 1")
        .fetch_one(app.db.pool())
        .await
        .unwrap();
    assert_eq!(applied as usize, seckill::db::MIGRATOR.iter().count());
    assert_eq!(app.snapshot().await, before);
}

#[tokio::test]
async fn migrate_creates_a_missing_database_then_is_up_to_date() {
    let app = spawn_app().await;
    let name = format!("seckill_test_{}", random_suffix());
    let url = format!("{}/{name}", mysql_server_url());
    let env = [("SECKILL_DATABASE_URL", url.as_str())];

    let first = app.cli_with(&["migrate"], &env, None).await;
    let second = app.cli_with(&["migrate"], &env, None).await;
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = ? ORDER BY table_name",
    )
    .bind(&name)
    .fetch_all(app.db.pool())
    .await
    .unwrap();
    drop_database(&name).await.unwrap();

    first.ok();
    let expected: Vec<String> = seckill::db::MIGRATOR
        .iter()
        .map(|m| format!("applied {} {}", m.version, m.description))
        .collect();
    assert_eq!(first.stdout.lines().collect::<Vec<_>>(), expected);
    second.ok();
    assert_eq!(second.stdout.trim(), "database is up to date");
    for table in [
        "_sqlx_migrations",
        "activities",
        "blacklist",
        "orders",
        "products",
        "stock_ledger",
    ] {
        assert!(tables.iter().any(|t| t == table), "{table} missing from {tables:?}");
    }
}

#[tokio::test]
async fn migrate_refuses_a_database_name_it_cannot_quote() {
    let app = spawn_app().await;
    let url = format!("{}/bad-name", mysql_server_url());
    let out = app
        .cli_with(&["migrate"], &[("SECKILL_DATABASE_URL", url.as_str())], None)
        .await;
    out.fails_with(2, &["database.url", "bad-name"]);
    let exists: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name = 'bad-name'")
            .fetch_one(app.db.pool())
            .await
            .unwrap();
    assert_eq!(exists, 0);
}
