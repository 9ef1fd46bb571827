//! Unreachable or silent servers fail fast, with a message naming the address, and the
//! other side is left unchanged.

use std::time::{Duration, Instant};

use seckill::{Config, Db, Error, RedisClient};

use crate::helpers::spawn_app;

/// Generous bound for "fails within a few seconds" (connect timeouts are 1 s / 3 s).
const BOUND: Duration = Duration::from_secs(10);

/// A TCP port that accepts connections (the kernel completes the handshake) but never
/// says a word: the timeout path, unlike a refused connection.
fn silent_server() -> (std::net::TcpListener, String) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().unwrap().to_string();
    (listener, addr)
}

#[tokio::test]
async fn unreachable_redis_fails_fast_naming_the_address() {
    let app = spawn_app().await;
    let (activity, _) = app.activity_with_products().await;
    let a = activity.id.to_string();
    let before = app.snapshot().await;
    let env = [("SECKILL_REDIS_URL", "redis://127.0.0.1:1/0")];
    for args in [
        vec!["hot", &a],
        vec!["start", &a],
        vec!["status", &a],
        vec!["flush", "-y", &a],
    ] {
        let out = app.cli_with(&args, &env, None).await;
        out.fails_with(1, &["redis at 127.0.0.1:1"]);
        assert!(out.elapsed < BOUND, "{args:?} took {:?}", out.elapsed);
    }
    assert_eq!(app.snapshot().await, before);
}

#[tokio::test]
async fn unreachable_mysql_fails_fast_naming_the_address() {
    let app = spawn_app().await;
    let env = [("SECKILL_DATABASE_URL", "mysql://root@127.0.0.1:1/x")];
    for args in [
        vec!["migrate"],
        vec!["activity", "list"],
        vec!["product", "show", "1"],
        vec!["hot", "1"],
        vec!["status", "1"],
    ] {
        let out = app.cli_with(&args, &env, None).await;
        out.fails_with(1, &["mysql at 127.0.0.1:1"]);
        assert!(out.elapsed < BOUND, "{args:?} took {:?}", out.elapsed);
    }
}

#[tokio::test]
async fn silent_servers_time_out_naming_the_address() {
    let app = spawn_app().await;
    let (activity, _) = app.activity_with_products().await;
    let before = app.snapshot().await;
    let (_redis_listener, redis_addr) = silent_server();
    let (_mysql_listener, mysql_addr) = silent_server();

    let redis_url = format!("redis://{redis_addr}/0");
    let out = app
        .cli_with(
            &["hot", &activity.id.to_string()],
            &[("SECKILL_REDIS_URL", &redis_url)],
            None,
        )
        .await;
    out.fails_with(1, &[&format!("redis at {redis_addr}")]);
    assert!(out.elapsed < BOUND, "took {:?}", out.elapsed);

    let mysql_url = format!("mysql://root@{mysql_addr}/x");
    let out = app
        .cli_with(&["activity", "list"], &[("SECKILL_DATABASE_URL", &mysql_url)], None)
        .await;
    out.fails_with(1, &[&format!("mysql at {mysql_addr}")]);
    assert!(out.elapsed < BOUND, "took {:?}", out.elapsed);

    assert_eq!(app.snapshot().await, before);
}

#[tokio::test]
async fn the_library_reports_the_address_too() {
    let mut config = Config::default();
    config.redis.url = "redis://127.0.0.1:1/0".into();
    config.database.url = "mysql://root:secret@127.0.0.1:1/x".into();
    let started = Instant::now();
    let err = RedisClient::connect(&config).await.err().expect("redis must fail");
    assert!(
        matches!(err, Error::Redis { ref addr, .. } if addr == "127.0.0.1:1"),
        "{err:?}"
    );
    let err = Db::connect(&config).await.expect_err("mysql must fail");
    assert!(
        matches!(err, Error::Database { ref addr, .. } if addr == "127.0.0.1:1"),
        "{err:?}"
    );
    assert!(!err.to_string().contains("secret"), "password leaked: {err}");
    assert!(started.elapsed() < BOUND, "took {:?}", started.elapsed());
}
