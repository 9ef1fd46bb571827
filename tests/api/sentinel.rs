//! `redis+sentinel://` URLs: every subcommand reaches the primary the sentinels name, bad
//! URLs fail clearly, and after a failover `serve` and the consumer follow the new primary
//! without a restart.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::AsyncCommands;
use seckill::durability::Durability;
use serde_json::Value;

use crate::helpers::{open_window, spec, ProductSpec, TestApp};
use crate::redis_servers::{info, OwnRedis, SentinelSet, MASTER};

const NO_DISK: [&str; 4] = ["--save", "", "--appendonly", "no"];

#[tokio::test]
async fn cli_reaches_the_primary_through_sentinels_and_bad_urls_fail_clearly() {
    let set = SentinelSet::start(&NO_DISK).await;
    let app = TestApp::builder()
        .redis(set.url())
        .tune(|c| {
            c.redis.durability = Durability::Replicas;
            c.redis.wait_replicas = 1;
        })
        .build()
        .await;
    let activity = app.create_activity(open_window()).await.id;
    app.add_product(activity, ProductSpec::default()).await;
    let hot = app.cli(&["hot", &activity.to_string()]).await;
    assert_eq!(hot.code, 0, "{hot:?}");
    let mut primary = redis::Client::open(set.primary.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let exists: bool = primary.exists(app.redis.keys().activity(activity)).await.unwrap();
    assert!(exists, "hot wrote to the primary the sentinels name");
    let doctor = app.cli(&["doctor", "--json"]).await;
    let json: Value = serde_json::from_str(&doctor.stdout).unwrap_or_else(|_| panic!("{doctor:?}"));
    let replicas = json["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "replicas")
        .unwrap();
    assert_eq!(replicas["verdict"], "pass", "{json}");

    for (bad, code, says) in [
        ("redis+sentinel://127.0.0.1:1/x".to_string(), 1, "127.0.0.1:1"),
        (
            format!("redis+sentinel://127.0.0.1:{}/no-such-master", set.sentinel_ports[0]),
            1,
            "no-such-master",
        ),
        ("redis+sentinel://127.0.0.1:26379".to_string(), 2, "names no master"),
        (
            "redis+sentinel://127.0.0.1:26379/m/zero".to_string(),
            2,
            "is not a number",
        ),
    ] {
        let started = Instant::now();
        let out = app
            .cli_with(&["status", &activity.to_string()], &[("SECKILL_REDIS_URL", &bad)], None)
            .await;
        assert_eq!(out.code, code, "{bad}: {out:?}");
        assert!(out.stderr.contains(says), "{bad}: {}", out.stderr);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{bad}: took {:?}",
            started.elapsed()
        );
    }
}

/// Primary + replica + three sentinels, `wait_replicas: 1`; the primary is `kill -9`ed in the
/// middle of a buy burst and comes back empty. Every buyer answered `queued` has exactly one
/// order after the consumer drains (through the sentinels, on the new primary), nothing is
/// oversold, and `serve` sells again without a restart once the old node replicates the new
/// primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_mid_burst_loses_no_queued_order() {
    const STOCK: u32 = 1000;
    const BUYERS: usize = 600;
    let mut set = SentinelSet::start(&NO_DISK).await;
    let sale = Arc::new(
        TestApp::builder()
            .redis(set.url())
            .tune(|c| {
                c.redis.durability = Durability::Replicas;
                c.redis.wait_replicas = 1;
                c.redis.response_timeout_ms = 500;
                c.redis.connect_timeout_ms = 300;
                c.funnel.per_user_rps = 0;
                c.funnel.breaker_open_ms = 200;
            })
            .sale(vec![spec(STOCK, 1, 1)])
            .serve()
            .build()
            .await,
    );
    let p = sale.product;
    let burst = sale.burst_until_reserved(BUYERS, &set.primary.url(), 150).await;
    let old_primary = set.primary.port;
    set.primary.kill();
    let killed = Instant::now();
    let (mut queued, _) = burst.answers().await;
    assert!(queued.len() >= 100, "only {} queued before the kill", queued.len());
    // A new node replaces the failed one as a replica of the new primary: until it is in
    // sync, `wait_replicas: 1` has nobody to confirm buys, which answer `unconfirmed`, never
    // `queued`. (Restarting the failed node empty while the sentinels still disagree would
    // bring it back as an empty primary: the lost-state guard then suspends the sale.)
    crate::redis_servers::wait_until("the sentinels agree on the promoted replica", || async {
        set.primary_port().await.is_some_and(|p| p != old_primary)
    })
    .await;
    let new_port = set.replica.port.to_string();
    let _replacement = OwnRedis::start_with(&[
        "--save",
        "",
        "--appendonly",
        "no",
        "--replicaof",
        "127.0.0.1",
        &new_port,
    ])
    .await;

    // Sells again once the sentinels promoted the replica, without a restart.
    let mut n = 0;
    let resumed = loop {
        assert!(
            killed.elapsed() < Duration::from_secs(60),
            "serve never sold again after the failover"
        );
        n += 1;
        let user = format!("late{n}");
        let Ok(token) = seckill::ops::token::register(
            &sale.redis,
            &sale.signer,
            sale.activity,
            std::slice::from_ref(&user),
            600,
            |_| {},
        )
        .await
        else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let (status, body) = sale.buy(p, &user, 1, &token[0].token).await;
        if status == 200 {
            queued.insert(body["order_no"].as_str().unwrap().to_string(), user);
            break killed.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        set.primary_port().await,
        Some(set.replica.port),
        "the sentinels promoted the replica"
    );
    assert!(info(&set.replica.url(), "replication").await.contains("role:master"));

    sale.drain_as("after-failover").await;
    let orders: Vec<(String, String)> =
        sqlx::query_as("SELECT order_no, CAST(user_id AS CHAR) FROM orders WHERE activity_id = ?")
            .bind(sale.activity)
            .fetch_all(sale.db.pool())
            .await
            .unwrap();
    let persisted: HashMap<&str, &str> = orders.iter().map(|(o, u)| (o.as_str(), u.as_str())).collect();
    let lost: Vec<&String> = queued.keys().filter(|o| !persisted.contains_key(o.as_str())).collect();
    assert!(
        lost.is_empty(),
        "{} of {} queued orders lost in the failover: {lost:?}",
        lost.len(),
        queued.len()
    );
    for (order_no, user) in &queued {
        assert_eq!(persisted[order_no.as_str()], user.as_str());
    }
    let buyers: HashSet<&str> = orders.iter().map(|(_, u)| u.as_str()).collect();
    assert_eq!(buyers.len(), orders.len(), "limit 1: one order per buyer");
    assert!(orders.len() <= STOCK as usize, "oversold: {} orders", orders.len());
    println!(
        "failover ({MASTER}): {} queued, {} orders, selling again {:.1} s after the kill",
        queued.len(),
        orders.len(),
        resumed.as_secs_f64()
    );
    Arc::try_unwrap(sale).ok().expect("sole owner").finish().await;
}
