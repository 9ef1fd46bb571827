//! Redis going back in time: restarted empty (durability `none`), or restored from an older
//! snapshot. Each is detected, `serve` stops selling, `status` and `start` say so, and
//! `stop`, `hot`, `start` recover with the stock MySQL counts, so no unit is sold twice.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use seckill::durability::Durability;
use seckill::lost_state::LossKind;

use crate::helpers::{spec, TestApp};
use crate::redis_servers::OwnRedis;

const STOCK: u32 = 100;

async fn sale_on(own: &OwnRedis) -> Arc<TestApp> {
    Arc::new(
        TestApp::builder()
            .redis(own.url())
            .tune(|c| {
                c.redis.durability = Durability::None;
                c.redis.response_timeout_ms = 500;
                c.redis.connect_timeout_ms = 300;
                c.funnel.per_user_rps = 0;
                c.funnel.breaker_open_ms = 100;
                // Sold-out answers from memory would hide what Redis says.
                c.funnel.sold_out_cache_ms = 0;
            })
            .sale(vec![spec(STOCK, 1, 1)])
            .serve()
            .build()
            .await,
    )
}

/// `n` fresh buyers named `{prefix}{i}` each buy one unit; the number answered `queued`.
async fn buy(sale: &Arc<TestApp>, prefix: &str, n: usize) -> usize {
    let users: Vec<String> = (0..n).map(|i| format!("{prefix}{i}")).collect();
    sale.buy_at_once(sale.product, users)
        .await
        .iter()
        .filter(|(_, (status, _))| *status == StatusCode::OK)
        .count()
}

async fn drain(sale: &TestApp) -> u64 {
    sale.drain().await.persisted
}

async fn orders(sale: &TestApp) -> Vec<String> {
    sqlx::query_scalar("SELECT CAST(user_id AS CHAR) FROM orders WHERE activity_id = ?")
        .bind(sale.activity)
        .fetch_all(sale.db.pool())
        .await
        .unwrap()
}

/// Waits until a buy is answered 503 `busy` (the guard suspended the sale).
async fn wait_until_suspended(sale: &Arc<TestApp>) -> Duration {
    let started = Instant::now();
    for i in 0.. {
        let user = format!("probe{i}");
        let token = sale.token(&user).await;
        let (status, body) = sale.buy(sale.product, &user, 1, &token).await;
        if status == StatusCode::SERVICE_UNAVAILABLE && body["error"] == "busy" {
            return started.elapsed();
        }
        assert_ne!(status, StatusCode::OK, "sold on a Redis that lost state: {body}");
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "serve never suspended the sale"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    unreachable!()
}

async fn status_line(sale: &TestApp) -> String {
    let out = sale.command(&["status", &sale.activity.to_string()]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Waits until the sale's shared connection works again after a Redis restart (its first
/// command after the restart fails, then it reconnects).
async fn reconnected(sale: &TestApp) {
    for _ in 0..100 {
        let mut conn = sale.redis.conn();
        if redis::cmd("PING").query_async::<String>(&mut conn).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the sale never reconnected to Redis");
}

/// stop, hot, start: the operator's way back.
async fn recover(sale: &TestApp) {
    seckill::ops::stop(&sale.db, &sale.redis, sale.activity, false)
        .await
        .unwrap();
    seckill::ops::hot(&sale.db, &sale.redis, &sale.config.consumer.group, sale.activity)
        .await
        .unwrap();
    seckill::ops::start(&sale.db, &sale.redis, sale.activity).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_without_persistence_suspends_the_sale_until_it_is_preheated_again() {
    let mut own = OwnRedis::start().await;
    let sale = sale_on(&own).await;
    assert_eq!(buy(&sale, "early", 30).await, 30);
    assert_eq!(drain(&sale).await, 30);
    assert_eq!(
        buy(&sale, "unpersisted", 10).await,
        10,
        "queued, never persisted: lost with Redis"
    );

    own.kill();
    own.restart().await;
    reconnected(&sale).await;
    let loss = seckill::lost_state::inspect(&sale.db, &sale.redis, sale.activity)
        .await
        .unwrap()
        .expect("the loss is seen");
    assert_eq!(loss.kind, LossKind::Vanished);
    assert_eq!(loss.units_at_risk, 30, "MySQL counts 30 sold, the empty Redis none");
    let took = wait_until_suspended(&sale).await;
    let (_, metrics) = sale.get("/metrics").await;
    let metrics = metrics.as_str().unwrap().to_string();
    assert!(
        metrics.contains(&format!("seckill_redis_state_lost{{activity=\"{}\"}} 1", sale.activity)),
        "{metrics}"
    );
    assert!(
        metrics.contains("seckill_busy_total{reason=\"suspended\"}"),
        "{metrics}"
    );
    assert!(
        status_line(&sale).await.starts_with("REDIS LOST STATE"),
        "status says so first"
    );
    let refused = seckill::ops::start(&sale.db, &sale.redis, sale.activity)
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("seckill hot"), "{refused}");

    recover(&sale).await;
    assert_eq!(
        seckill::lost_state::inspect(&sale.db, &sale.redis, sale.activity)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        sale.counters(sale.product).await.0,
        i64::from(STOCK) - 30,
        "stock rebuilt from MySQL"
    );
    // Everything left sells once, no more.
    assert_eq!(buy(&sale, "late", 100).await, STOCK as usize - 30);
    drain(&sale).await;
    let users = orders(&sale).await;
    assert_eq!(users.len(), STOCK as usize, "every unit sold exactly once");
    assert_eq!(users.iter().collect::<HashSet<_>>().len(), users.len());
    println!(
        "restart without persistence: suspended {:.1} s after the restart",
        took.as_secs_f64()
    );
    Arc::try_unwrap(sale).ok().expect("sole owner").finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_from_an_older_snapshot_is_caught_and_no_unit_is_sold_twice() {
    let mut own = OwnRedis::start_with(&["--appendonly", "no", "--save", ""]).await;
    let sale = sale_on(&own).await;
    assert_eq!(buy(&sale, "first", 20).await, 20);
    assert_eq!(drain(&sale).await, 20);
    let mut conn = redis::Client::open(own.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let () = redis::cmd("SAVE").query_async(&mut conn).await.unwrap();
    let backup = own.dir().join("older.rdb");
    std::fs::copy(own.dir().join("dump.rdb"), &backup).unwrap();
    assert_eq!(buy(&sale, "second", 20).await, 20);
    assert_eq!(drain(&sale).await, 20, "persisted after the snapshot");
    // The server learns MySQL's persist sequence within one guard period; from then on a
    // Redis that went back past these orders refuses its very first purchase.
    tokio::time::sleep(seckill::server::guard::GUARD_EVERY * 3).await;

    own.kill();
    std::fs::copy(&backup, own.dir().join("dump.rdb")).unwrap();
    own.restart().await;
    reconnected(&sale).await;
    assert_eq!(
        sale.counters(sale.product).await.0,
        i64::from(STOCK) - 20,
        "Redis went back 20 units"
    );
    let loss = seckill::lost_state::inspect(&sale.db, &sale.redis, sale.activity)
        .await
        .unwrap()
        .expect("the rollback is seen");
    assert_eq!(loss.kind, LossKind::RolledBack);
    assert_eq!(loss.units_at_risk, 20);
    let token = sale.token("right-after").await;
    let (status, body) = sale.buy(sale.product, "right-after", 1, &token).await;
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "the first purchase is refused: {body}"
    );
    assert_eq!(body["error"], "busy", "{body}");
    wait_until_suspended(&sale).await;

    recover(&sale).await;
    assert_eq!(sale.counters(sale.product).await.0, i64::from(STOCK) - 40);
    assert_eq!(buy(&sale, "third", 100).await, STOCK as usize - 40);
    drain(&sale).await;
    let users = orders(&sale).await;
    assert_eq!(users.len(), STOCK as usize, "no unit sold twice");
    assert_eq!(users.iter().collect::<HashSet<_>>().len(), users.len());
    Arc::try_unwrap(sale).ok().expect("sole owner").finish().await;
}
