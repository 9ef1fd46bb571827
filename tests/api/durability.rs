//! `redis.durability`: `hot`, `start`, `serve` and `doctor` against Redis servers of the
//! tests' own (persistence off, eviction on, AOF fsynced always), and the promise itself:
//! a Redis `kill -9` mid-burst loses no order a buyer was told is queued.

use std::collections::{HashMap, HashSet};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use seckill::durability::Durability;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::helpers::{open_window, spawn_app, spec, ProductSpec, TestApp};
use crate::redis_servers::OwnRedis;

/// Long enough that `doctor` passes the secret.
const SECRET: &str = "durability-test-secret-0123456789abcdef";

async fn app_on(own: &OwnRedis, durability: Durability) -> TestApp {
    TestApp::builder()
        .redis(own.url())
        .tune(move |c| {
            c.redis.durability = durability;
            c.token.secret = SECRET.into();
        })
        .build()
        .await
}

async fn config_set(own: &OwnRedis, pairs: &[(&str, &str)]) {
    let client = redis::Client::open(own.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    for (name, value) in pairs {
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg(name)
            .arg(value)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
}

fn doctor_row<'a>(json: &'a Value, name: &str) -> &'a Value {
    json["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no {name} row in {json}"))
}

#[tokio::test]
async fn persistence_off_is_refused_until_redis_is_configured() {
    let own = OwnRedis::start().await;
    let app = app_on(&own, Durability::AofAlways).await;
    let activity = app.create_activity(open_window()).await.id.to_string();
    app.add_product(activity.parse().unwrap(), ProductSpec::default()).await;

    let hot = app.cli(&["hot", &activity]).await;
    assert_eq!(hot.code, 1, "{hot:?}");
    assert!(
        hot.stderr.contains("appendonly yes"),
        "names the redis.conf line: {}",
        hot.stderr
    );
    assert!(hot.stderr.contains("appendfsync always"), "{}", hot.stderr);
    assert!(
        app.activity_keys(activity.parse().unwrap()).await.is_empty(),
        "hot refused, nothing loaded"
    );

    let doctor = app.cli(&["doctor", "--json"]).await;
    assert_eq!(doctor.code, 1, "{doctor:?}");
    let json: Value = serde_json::from_str(&doctor.stdout).unwrap();
    assert_eq!(json["passed"], false);
    assert_eq!(doctor_row(&json, "persistence")["verdict"], "fail", "{json}");
    assert!(doctor_row(&json, "persistence")["detail"]
        .as_str()
        .unwrap()
        .contains("appendonly"));
    for ok in ["redis", "maxmemory-policy", "replicas", "mysql", "token secret"] {
        assert_eq!(doctor_row(&json, ok)["verdict"], "pass", "{ok}: {json}");
    }

    // Preheated under an explicit `none`, the sale still cannot be started under aof_always.
    let hot = app
        .cli_with(&["hot", &activity], &[("SECKILL_REDIS_DURABILITY", "none")], None)
        .await;
    assert_eq!(hot.code, 0, "{hot:?}");
    let start = app.cli(&["start", &activity]).await;
    assert_eq!(start.code, 1, "{start:?}");
    assert!(start.stderr.contains("appendonly"), "{}", start.stderr);
    let status: String = sqlx::query_scalar("SELECT status FROM activities WHERE id = ?")
        .bind(activity.parse::<u64>().unwrap())
        .fetch_one(app.db.pool())
        .await
        .unwrap();
    assert_eq!(status, "draft", "a refused start changes nothing");
    let serve = app.cli(&["serve", "--bind", "127.0.0.1:0"]).await;
    assert_eq!(serve.code, 1, "{serve:?}");
    assert!(serve.stderr.contains("appendonly"), "{}", serve.stderr);

    config_set(&own, &[("appendonly", "yes"), ("appendfsync", "always")]).await;
    let doctor = app.cli(&["doctor"]).await;
    assert_eq!(doctor.code, 0, "{doctor:?}");
    assert!(doctor.stdout.contains("appendfsync always"), "{}", doctor.stdout);
    let start = app.cli(&["start", &activity]).await;
    assert_eq!(start.code, 0, "{start:?}");
}

#[tokio::test]
async fn eviction_is_refused_and_everysec_accepted() {
    let own = OwnRedis::start_with(&["--appendonly", "yes", "--appendfsync", "everysec", "--save", ""]).await;
    let app = app_on(&own, Durability::AofEverysec).await;
    let activity = app.create_activity(open_window()).await.id;
    app.add_product(activity, ProductSpec::default()).await;
    let a = activity.to_string();

    config_set(&own, &[("maxmemory-policy", "allkeys-lru")]).await;
    let hot = app.cli(&["hot", &a]).await;
    assert_eq!(hot.code, 1, "{hot:?}");
    assert!(hot.stderr.contains("maxmemory-policy noeviction"), "{}", hot.stderr);
    let doctor = app.cli(&["doctor", "--json"]).await;
    assert_eq!(doctor.code, 1);
    let json: Value = serde_json::from_str(&doctor.stdout).unwrap();
    assert_eq!(doctor_row(&json, "maxmemory-policy")["verdict"], "fail", "{json}");
    assert_eq!(doctor_row(&json, "persistence")["verdict"], "pass", "{json}");
    // Even `none` does not allow eviction: an evicted stream is a lost order whatever the fsync.
    let hot = app
        .cli_with(&["hot", &a], &[("SECKILL_REDIS_DURABILITY", "none")], None)
        .await;
    assert_eq!(hot.code, 1, "{hot:?}");

    config_set(&own, &[("maxmemory-policy", "noeviction")]).await;
    let hot = app.cli(&["hot", &a]).await;
    assert_eq!(hot.code, 0, "everysec meets aof_everysec: {hot:?}");
    // ...but not aof_always.
    let start = app
        .cli_with(&["start", &a], &[("SECKILL_REDIS_DURABILITY", "aof_always")], None)
        .await;
    assert_eq!(start.code, 1, "{start:?}");
    assert!(start.stderr.contains("appendfsync always"), "{}", start.stderr);
}

#[tokio::test]
async fn doctor_flags_the_default_secret_and_bad_values_are_config_errors() {
    let own = OwnRedis::start_with(&["--appendonly", "yes", "--appendfsync", "always", "--save", ""]).await;
    let app = app_on(&own, Durability::AofAlways).await;
    let doctor = app
        .cli_with(
            &["doctor", "--json"],
            &[("SECKILL_TOKEN_SECRET", &seckill::config::TokenConfig::default().secret)],
            None,
        )
        .await;
    assert_eq!(doctor.code, 1, "{doctor:?}");
    let json: Value = serde_json::from_str(&doctor.stdout).unwrap();
    assert_eq!(doctor_row(&json, "token secret")["verdict"], "fail", "{json}");
    assert_eq!(doctor_row(&json, "persistence")["verdict"], "pass", "{json}");
    assert_eq!(doctor_row(&json, "clocks")["verdict"], "pass", "{json}");

    let bad = app
        .cli_with(&["doctor"], &[("SECKILL_REDIS_DURABILITY", "sometimes")], None)
        .await;
    assert_ne!(bad.code, 0);
    assert!(bad.stderr.contains("SECKILL_REDIS_DURABILITY"), "{}", bad.stderr);
    let path = app.write_file("bad.yaml", "redis:\n  durability: sometimes\n");
    let bad = app.cli(&["--config", path.to_str().unwrap(), "doctor"]).await;
    assert_ne!(bad.code, 0);
    assert!(bad.stderr.contains("aof_always"), "lists the policies: {}", bad.stderr);

    // Redis down: doctor still reports the rest, and fails fast.
    drop(own);
    let started = Instant::now();
    let doctor = app.cli(&["doctor", "--json"]).await;
    assert_eq!(doctor.code, 1, "{doctor:?}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
    let json: Value = serde_json::from_str(&doctor.stdout).unwrap();
    assert_eq!(doctor_row(&json, "redis")["verdict"], "fail", "{json}");
    assert_eq!(doctor_row(&json, "mysql")["verdict"], "pass", "{json}");
}

#[tokio::test]
async fn serve_warns_when_durability_is_none() {
    let app = spawn_app().await;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_seckill"))
        .args(["serve", "--bind", "127.0.0.1:0"])
        .current_dir(&app.workdir)
        .env("SECKILL_DATABASE_URL", &app.config.database.url)
        .env("SECKILL_REDIS_URL", &app.config.redis.url)
        .env("SECKILL_KEY_PREFIX", &app.prefix)
        .env("SECKILL_REDIS_DURABILITY", "none")
        .env("SECKILL_TOKEN_SECRET", &app.config.token.secret)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let warned = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.contains("redis.durability is none") {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    child.kill().await.ok();
    assert!(warned, "serve logs a warning at start under durability: none");
}

/// `kill -9` of Redis (AOF, fsync always) in the middle of a buy burst, restart from the
/// AOF, drain: every buyer answered `queued` has exactly one order, nothing is oversold and
/// Redis agrees with MySQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_burst_loses_no_queued_order() {
    const STOCK: u32 = 1000;
    const BUYERS: usize = 600;
    let mut own = OwnRedis::start_with(&["--appendonly", "yes", "--appendfsync", "always", "--save", ""]).await;
    let sale = Arc::new(
        TestApp::builder()
            .redis(own.url())
            .tune(|c| {
                c.redis.durability = Durability::AofAlways;
                c.redis.response_timeout_ms = 500;
                c.redis.connect_timeout_ms = 300;
                c.funnel.per_user_rps = 0;
            })
            .sale(vec![spec(STOCK, 1, 1)])
            .serve()
            .build()
            .await,
    );
    let p = sale.product;
    // Kill it once a good part of the burst is in the stream, while the rest still arrives.
    let burst = sale.burst_until_reserved(BUYERS, &own.url(), 150).await;
    own.kill();
    let (queued, refused) = burst.answers().await;
    assert!(queued.len() >= 100, "only {} queued before the kill", queued.len());
    assert!(refused > 0, "the kill landed after the burst: nothing was refused");

    own.restart().await;
    let drained = sale.drain_as("after-crash").await;
    let orders: Vec<(String, String)> =
        sqlx::query_as("SELECT order_no, CAST(user_id AS CHAR) FROM orders WHERE activity_id = ?")
            .bind(sale.activity)
            .fetch_all(sale.db.pool())
            .await
            .unwrap();
    let persisted: HashMap<&str, &str> = orders.iter().map(|(o, u)| (o.as_str(), u.as_str())).collect();
    for (order_no, user) in &queued {
        assert_eq!(
            persisted.get(order_no.as_str()),
            Some(&user.as_str()),
            "order {order_no} answered queued to {user} is missing after the crash \
             ({} queued, {} persisted, consumer {drained:?})",
            queued.len(),
            orders.len()
        );
    }
    let buyers: HashSet<&str> = orders.iter().map(|(_, u)| u.as_str()).collect();
    assert_eq!(buyers.len(), orders.len(), "limit 1: one order per buyer");
    assert!(orders.len() <= STOCK as usize);
    let (stock, sold, _) = sale.counters(p).await;
    assert_eq!(sold as usize, orders.len(), "Redis sold = orders after the drain");
    assert_eq!(stock + sold, i64::from(STOCK), "no unit created or lost");
    let report = seckill::ops::reconcile::reconcile(
        &sale.db,
        &sale.redis,
        &sale.config.consumer.group,
        sale.activity,
        Duration::from_secs(60),
        false,
    )
    .await
    .unwrap();
    assert!(report.consistent, "{report:?}");
    let loss = seckill::lost_state::inspect(&sale.db, &sale.redis, sale.activity)
        .await
        .unwrap();
    assert_eq!(loss, None, "a restart from a complete AOF is not a loss");
    println!(
        "kill -9 mid-burst: {} queued answers, {} refused, {} orders after restart",
        queued.len(),
        refused,
        orders.len()
    );
    Arc::try_unwrap(sale).ok().expect("sole owner").finish().await;
}

/// `wait_replicas: 1` with the only replica frozen: buyers hear `503 unconfirmed` with their
/// order number, the order exists (on the primary) and is found by it; with the replica back,
/// buys are `queued` again. Each batch waited once (`seckill_wait_replicas_seconds`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacknowledged_replicas_answer_unconfirmed_with_the_order_number() {
    let primary = OwnRedis::start_with(&["--save", "", "--appendonly", "no"]).await;
    let port = primary.port.to_string();
    let replica = OwnRedis::start_with(&["--save", "", "--appendonly", "no", "--replicaof", "127.0.0.1", &port]).await;
    crate::redis_servers::wait_until("the replica is in sync", || async {
        crate::redis_servers::info(&replica.url(), "replication")
            .await
            .contains("master_link_status:up")
    })
    .await;
    let sale = TestApp::builder()
        .redis(primary.url())
        .tune(|c| {
            c.redis.durability = Durability::Replicas;
            c.redis.wait_replicas = 1;
            c.redis.wait_timeout_ms = 200;
            c.funnel.per_user_rps = 0;
        })
        .sale(vec![spec(10, 1, 1)])
        .serve()
        .build()
        .await;
    let p = sale.product;
    let token = sale.token("calm").await;
    let (status, body) = sale.buy(p, "calm", 1, &token).await;
    assert_eq!(status, 200, "{body}");

    replica.signal("-STOP");
    let token = sale.token("frozen").await;
    let (status, body) = sale.buy(p, "frozen", 1, &token).await;
    replica.signal("-CONT");
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "unconfirmed", "{body}");
    let order_no = body["order_no"].as_str().expect("the order number").to_string();
    let (status, order) = sale.get(&format!("/api/v1/orders/{order_no}")).await;
    assert_eq!(status, 200, "{order}");
    assert_eq!(order["user_id"], "frozen", "{order}");
    let (status, body) = sale.buy(p, "frozen", 1, &token).await;
    assert_eq!(
        (status.as_u16(), body["error"].as_str()),
        (409, Some("limit_exceeded")),
        "it was bought"
    );

    let token = sale.token("later").await;
    let (status, body) = sale.buy(p, "later", 1, &token).await;
    assert_eq!(status, 200, "queued again once the replica answers: {body}");
    let (_, metrics) = sale.get("/metrics").await;
    let metrics = metrics.as_str().unwrap().to_string();
    assert!(metrics.contains("seckill_wait_replicas_seconds_count 3"), "{metrics}");
    assert!(metrics.contains("code=\"unconfirmed\""), "{metrics}");
    sale.finish().await;
}
