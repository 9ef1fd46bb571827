//! `redis+cluster://` URLs: a whole sale (CLI, `seckill serve`, consumer, reconcile, flush) on a
//! real three-primary Redis Cluster, two activities on different primaries at once, and bad
//! cluster URLs failing clearly.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::AsyncCommands;
use serde_json::{json, Value};

use crate::helpers::{free_port, open_window, scan_keys, spec, wait_for_serve, KillOnDrop, TestApp};
use crate::redis_servers::OwnCluster;

/// redis-server arguments for a cluster node that keeps nothing on disk.
pub const NO_DISK: [&str; 4] = ["--save", "", "--appendonly", "no"];

/// `user_id -> token` from the CSV `seckill token --out` wrote.
pub fn read_tokens(app: &TestApp, file: &str) -> HashMap<String, String> {
    std::fs::read_to_string(app.workdir.join(file))
        .expect("token CSV")
        .lines()
        .filter_map(|line| line.split_once(','))
        .filter(|(user, _)| *user != "user_id")
        .map(|(user, token)| (user.to_string(), token.to_string()))
        .collect()
}

/// Every `users` buys one unit of `product` at once; (queued order number -> buyer, other answers).
pub async fn buy_all(
    http: &reqwest::Client,
    base: &str,
    product: u64,
    tokens: &HashMap<String, String>,
) -> (HashMap<String, String>, Vec<Value>) {
    let tasks: Vec<_> = tokens
        .iter()
        .map(|(user, token)| {
            let (http, url) = (http.clone(), format!("{base}/api/v1/buy"));
            let body = json!({"product_id": product, "user_id": user, "quantity": 1, "token": token});
            let user = user.clone();
            tokio::spawn(async move {
                let res = http.post(url).json(&body).send().await.expect("serve answers");
                let status = res.status().as_u16();
                (user, status, res.json::<Value>().await.unwrap_or(Value::Null))
            })
        })
        .collect();
    let (mut queued, mut other) = (HashMap::new(), Vec::new());
    for task in tasks {
        let (user, status, body) = task.await.expect("buyer task");
        match (status, body["order_no"].as_str()) {
            (200, Some(no)) => {
                assert_eq!(body["status"], "queued", "{body}");
                assert!(
                    queued.insert(no.to_string(), user).is_none(),
                    "order number given twice"
                );
            }
            _ => other.push(body),
        }
    }
    (queued, other)
}

/// Creates an activity with one product of `stock` units, limit 1, preheated (`hot`), tokens
/// issued for users `first..=last` (`token --range`) and started (`start`), all by the CLI.
async fn cli_sale(app: &TestApp, activity: u64, stock: u32, first: u32, last: u32) -> (u64, HashMap<String, String>) {
    let product = app.add_product(activity, spec(stock, 1, 1)).await.id;
    let a = activity.to_string();
    app.cli(&["hot", &a]).await.ok();
    let csv = format!("tokens-{activity}.csv");
    let range = format!("{first}-{last}");
    app.cli(&["token", &a, "--range", &range, "--out", &csv]).await.ok();
    app.cli(&["start", &a]).await.ok();
    (product, read_tokens(app, &csv))
}

/// Starts the `seckill serve` binary on a free port; returns it (killed on drop), its base URL
/// and an HTTP client, once it answers.
pub async fn serve_on_a_free_port(app: &TestApp) -> (KillOnDrop, String, reqwest::Client) {
    let base = format!("http://127.0.0.1:{}", free_port());
    let bind = base.trim_start_matches("http://").to_string();
    let serve = app.spawn(&["serve", "--bind", &bind]);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    wait_for_serve(&http, &base).await;
    (serve, base, http)
}

/// Orders of `activity` in MySQL with `status`.
pub async fn orders_of(app: &TestApp, activity: u64, status: &str) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM orders WHERE activity_id = ? AND status = ?")
        .bind(activity)
        .bind(status)
        .fetch_one(app.db.pool())
        .await
        .unwrap()
}

/// The whole workflow on three primaries: `hot`, `token`, `start`, `seckill serve`, 2,000 buyers
/// for 100 units (limit 1) while a second activity, whose slot lives on another primary, sells
/// at the same time; `consumer`, `reconcile`; a cancelled unit is bought again; `doctor`
/// judges every primary; `flush` leaves no key of the activity on any node. Scripts flushed
/// from every node before the sale are loaded again where needed (NOSCRIPT handled).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_sale_runs_on_a_three_primary_cluster() {
    let cluster = OwnCluster::start(&NO_DISK).await;
    let app = TestApp::builder().redis(cluster.url()).pipeline().build().await;
    assert!(app.redis.is_cluster());
    let keys = app.redis.keys().clone();

    let first = app.create_activity(open_window()).await.id;
    let first_port = cluster.port_of(&keys.activity(first)).await;
    // Another activity whose keys hash to a slot of another primary.
    let mut second = app.create_activity(open_window()).await.id;
    while cluster.port_of(&keys.activity(second)).await == first_port {
        second = app.create_activity(open_window()).await.id;
    }
    let second_port = cluster.port_of(&keys.activity(second)).await;
    assert_ne!(first_port, second_port);

    let (p1, tokens1) = cli_sale(&app, first, 100, 1, 2000).await;
    let (p2, tokens2) = cli_sale(&app, second, 50, 5001, 5300).await;
    assert_eq!((tokens1.len(), tokens2.len()), (2000, 300));
    for (port, key) in [
        (first_port, keys.product(first, p1)),
        (second_port, keys.product(second, p2)),
    ] {
        let conns = cluster.node_conns().await;
        let (_, mut on) = conns.into_iter().find(|(p, _)| *p == port).unwrap();
        let exists: bool = on.exists(&key).await.unwrap();
        assert!(
            exists,
            "{key} is on the primary CLUSTER NODES names for its slot ({port})"
        );
    }
    // A failover or resharding leaves nodes without the scripts: forget them everywhere.
    for (_, mut conn) in cluster.node_conns().await {
        let () = redis::cmd("SCRIPT").arg("FLUSH").query_async(&mut conn).await.unwrap();
    }

    let (_serve, base, http) = serve_on_a_free_port(&app).await;

    let (one, two) = tokio::join!(buy_all(&http, &base, p1, &tokens1), buy_all(&http, &base, p2, &tokens2));
    for ((queued, other), stock, buyers) in [(&one, 100, 2000), (&two, 50, 300)] {
        assert_eq!(queued.len(), stock, "queued");
        assert_eq!(queued.values().collect::<HashSet<_>>().len(), stock, "distinct buyers");
        assert_eq!(other.len(), buyers - stock);
        assert!(other.iter().all(|b| b["error"] == "sold_out"), "{other:?}");
    }

    let consumed = app.cli(&["consumer", "--once"]).await;
    assert_eq!(consumed.code, 0, "{consumed:?}");
    assert_eq!(orders_of(&app, first, "pending").await, 100);
    assert_eq!(orders_of(&app, second, "pending").await, 50);
    for a in [first, second] {
        let rec = app.cli(&["reconcile", &a.to_string()]).await;
        assert_eq!(rec.code, 0, "reconcile {a}: {rec:?}");
    }

    // A cancelled order's unit goes back on sale and is bought again.
    let (cancelled, _) = one.0.iter().next().unwrap();
    app.cli(&["order", "cancel", cancelled]).await.ok();
    let late = app.cli(&["token", &first.to_string(), "--user", "late"]).await;
    let late = late
        .ok()
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("late,"))
        .unwrap()
        .to_string();
    let late = HashMap::from([("late".to_string(), late)]);
    // `serve` answers sold_out from memory for funnel.sold_out_cache_ms (1 s) after it last saw 0.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (again, other) = buy_all(&http, &base, p1, &late).await;
    assert_eq!((again.len(), other.len()), (1, 0), "{other:?}");
    // The consumer daemon: reads both activities' streams (two primaries) one by one.
    let consumer = app.spawn(&["consumer"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while orders_of(&app, first, "pending").await < 100 {
        assert!(
            Instant::now() < deadline,
            "the consumer daemon did not persist the resale"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(consumer);
    assert_eq!(orders_of(&app, first, "pending").await, 100);
    assert_eq!(orders_of(&app, first, "cancelled").await, 1);
    let rec = app.cli(&["reconcile", &first.to_string()]).await;
    assert_eq!(rec.code, 0, "reconcile after the resale: {rec:?}");

    // doctor judges every primary, naming each.
    let doctor = app.cli(&["doctor", "--json"]).await;
    let json: Value = serde_json::from_str(&doctor.stdout).unwrap_or_else(|_| panic!("{doctor:?}"));
    let persistence: Vec<String> = json["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["name"] == "persistence")
        .map(|c| c["detail"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(persistence.len(), 3, "{json}");
    for node in &cluster.nodes {
        let addr = format!("127.0.0.1:{}", node.port);
        assert!(
            persistence.iter().any(|d| d.starts_with(&addr)),
            "{addr}: {persistence:?}"
        );
    }

    // Commands that reach several activities (so several primaries) at once, and the rest.
    app.cli(&["blacklist", "add", "mallory", "--reason", "bot"]).await.ok();
    let mut conn = app.redis.conn();
    for a in [first, second] {
        let barred: bool = conn.sismember(keys.blacklist(a), "mallory").await.unwrap();
        assert!(barred, "activity {a} got the blacklist entry");
    }
    app.cli(&["blacklist", "remove", "mallory"]).await.ok();
    let barred: bool = conn.sismember(keys.blacklist(second), "mallory").await.unwrap();
    assert!(!barred);
    app.cli(&["stock", "add", &p2.to_string(), "5"]).await.ok();
    assert_eq!(app.product_hash(second, p2).await["stock"], "5");
    app.cli(&["stock", "sold-out", &p2.to_string()]).await.ok();
    assert_eq!(app.product_hash(second, p2).await["stock"], "0");
    app.cli(&["degrade", &second.to_string(), "on"]).await.ok();
    let degraded = app.cli(&["degrade", &second.to_string(), "status", "--json"]).await;
    assert!(degraded.ok().stdout.contains("true"), "{degraded:?}");
    app.cli(&["degrade", &second.to_string(), "off"]).await.ok();
    let all = app.cli(&["reconcile", "--all"]).await;
    assert_eq!(all.code, 0, "reconcile --all: {all:?}");
    app.cli(&["consumer", "dlq", "list"]).await.ok();

    app.cli(&["stop", &first.to_string(), "--end"]).await.ok();
    app.cli(&["flush", "-y", &first.to_string()]).await.ok();
    for (port, mut conn) in cluster.node_conns().await {
        let left = scan_keys(&mut conn, &keys.activity_pattern(first)).await;
        assert!(left.is_empty(), "node {port} still holds {left:?}");
    }
    let preheated: HashSet<u64> = conn.smembers(keys.activities()).await.unwrap();
    assert_eq!(preheated, HashSet::from([second]));
    let owner: Option<u64> = conn.hget(keys.product_activity(), p1).await.unwrap();
    assert_eq!(owner, None);
    let status = app.cli(&["status", &second.to_string(), "--json"]).await;
    assert_eq!(status.code, 0, "the other activity is untouched: {status:?}");

    // A whole rehearsal on the cluster, which removes its throwaway activity afterwards.
    let before = app.all_keys().await;
    let bench = app
        .cli(&[
            "bench",
            "--spawn",
            "--stock",
            "50",
            "--users",
            "500",
            "--requests",
            "2000",
            "--consumers",
            "1",
            "--json",
        ])
        .await;
    let report = bench.ok().json();
    assert_eq!(report["passed"], true, "{report:#}");
    assert_eq!(report["outcomes"]["queued"], 50, "{report:#}");
    assert_eq!(app.all_keys().await, before, "bench left keys behind");
}

/// The activity's slot moves to another primary mid-sale (keys migrated, the new node without
/// the scripts): the running `serve` follows MOVED and loads the scripts there, the consumer
/// persists reservations made on both nodes, reconcile is clean and flush finds the keys on
/// their new node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sale_survives_its_slot_moving_to_another_primary() {
    let cluster = OwnCluster::start(&NO_DISK).await;
    let sale = Arc::new(
        TestApp::builder()
            .redis(cluster.url())
            .pipeline()
            .sale(vec![spec(30, 1, 1)])
            .serve()
            .build()
            .await,
    );
    let keys = sale.redis.keys().clone();
    let before: Vec<String> = (0..10).map(|i| format!("early{i}")).collect();
    let answers = sale.buy_at_once(sale.product, before).await;
    assert!(answers.iter().all(|(_, (status, _))| *status == 200), "{answers:?}");

    let from = cluster.port_of(&keys.activity(sale.activity)).await;
    let to = cluster.nodes.iter().map(|n| n.port).find(|p| *p != from).unwrap();
    cluster.move_slot_of(&keys.activity(sale.activity), to).await;
    let conns: HashMap<u16, _> = cluster.node_conns().await.into_iter().collect();
    let () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut conns[&to].clone())
        .await
        .unwrap();

    let after: Vec<String> = (0..10).map(|i| format!("late{i}")).collect();
    let answers = sale.buy_at_once(sale.product, after).await;
    assert!(answers.iter().all(|(_, (status, _))| *status == 200), "{answers:?}");
    assert_eq!(sale.counters(sale.product).await, (10, 20, 20));

    sale.drain().await;
    assert_eq!(sale.orders().await, 20);
    let activity = sale.activity.to_string();
    let rec = sale.cli(&["reconcile", &activity]).await;
    assert_eq!(rec.code, 0, "{rec:?}");
    let pattern = keys.activity_pattern(sale.activity);
    assert!(scan_keys(&mut conns[&from].clone(), &pattern).await.is_empty());
    assert!(!scan_keys(&mut conns[&to].clone(), &pattern).await.is_empty());
    sale.cli(&["stop", &activity, "--end"]).await.ok();
    let flushed = sale.cli(&["flush", "-y", &activity, "--json"]).await;
    assert!(
        flushed.ok().stdout.contains(&keys.activity(sale.activity)),
        "{flushed:?}"
    );
    for (port, mut conn) in cluster.node_conns().await {
        assert!(scan_keys(&mut conn, &pattern).await.is_empty(), "node {port}");
    }
    Arc::into_inner(sale).unwrap().finish().await;
}

/// Three primaries with a replica each, `wait_replicas: 1`. The activity's primary is killed
/// after 20 confirmed buys: its replica takes over (cluster failover), the running `serve`
/// finds the new primary without a restart (buys answer `busy` or `unknown_outcome` until
/// then, never a wrong `queued`), and once the old node is back as a replica, buys are
/// `queued` again. Before that, another primary losing its replica does not matter: a batch's
/// `WAIT` goes to the primary of its activity only. Every `queued` buyer has exactly one order
/// after the drain; reconcile is clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_failover_keeps_every_confirmed_order() {
    let settings = ["--save", "", "--appendonly", "no", "--cluster-node-timeout", "1000"];
    let mut cluster = OwnCluster::start_with_replicas(&settings, 1).await;
    let sale = Arc::new(
        TestApp::builder()
            .redis(cluster.url())
            .pipeline()
            .tune(|c| {
                c.redis.wait_replicas = 1;
                c.redis.response_timeout_ms = 1000;
                c.redis.connect_timeout_ms = 300;
                c.funnel.per_user_rps = 0;
                c.funnel.breaker_open_ms = 200;
            })
            .sale(vec![spec(200, 1, 1)])
            .serve()
            .build()
            .await,
    );
    let keys = sale.redis.keys().clone();
    let mut queued: HashSet<String> = HashSet::new();
    let early: Vec<String> = (0..20).map(|i| format!("early{i}")).collect();
    for (user, (status, body)) in sale.buy_at_once(sale.product, early).await {
        assert_eq!(status, 200, "{body}");
        queued.insert(user);
    }

    let old = cluster.port_of(&keys.activity(sale.activity)).await;
    // Another primary loses its replica: the sale's batches WAIT on their own primary only
    // (which still has its replica), so they are still confirmed.
    let mut other = 0;
    for port in cluster.nodes.iter().map(|n| n.port).filter(|p| *p != old) {
        if cluster.is_primary(port).await {
            other = port;
            break;
        }
    }
    let lonely = cluster.replica_of(other).await;
    let replica = cluster.nodes.iter_mut().find(|n| n.port == lonely).unwrap();
    replica.kill();
    let other_url = format!("redis://127.0.0.1:{other}/0");
    crate::redis_servers::wait_until("the other primary noticed", || async {
        crate::redis_servers::info(&other_url, "replication")
            .await
            .contains("connected_slaves:0")
    })
    .await;
    let middle: Vec<String> = (0..5).map(|i| format!("middle{i}")).collect();
    for (user, (status, body)) in sale.buy_at_once(sale.product, middle).await {
        assert_eq!(status, 200, "another primary's lost replica does not matter: {body}");
        queued.insert(user);
    }
    let replica = cluster.nodes.iter_mut().find(|n| n.port == lonely).unwrap();
    replica.restart().await;

    let dead = cluster.nodes.iter_mut().find(|n| n.port == old).unwrap();
    dead.kill();
    let started = Instant::now();
    let activity_key = keys.activity(sale.activity);
    crate::redis_servers::wait_until("a replica took over the slot", || async {
        cluster.try_port_of(&activity_key).await.is_some_and(|p| p != old)
    })
    .await;
    let new = cluster.port_of(&activity_key).await;
    // Back as a replica of the new primary: `wait_replicas: 1` can be met again.
    let back = cluster.nodes.iter_mut().find(|n| n.port == old).unwrap();
    back.restart().await;
    let back_url = back.url();
    crate::redis_servers::wait_until("the old primary replicates the new one", || async {
        crate::redis_servers::info(&back_url, "replication")
            .await
            .contains("master_link_status:up")
    })
    .await;

    let mut n = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut later = 0;
    while later < 20 {
        assert!(Instant::now() < deadline, "serve never sold again after the failover");
        let user = format!("late{n}");
        n += 1;
        let token = sale.token(&user).await;
        let (status, body) = sale.buy(sale.product, &user, 1, &token).await;
        match status.as_u16() {
            200 => {
                queued.insert(user);
                later += 1;
            }
            503 => {
                let code = body["error"].as_str().unwrap_or_default();
                assert!(["busy", "unknown_outcome", "unconfirmed"].contains(&code), "{body}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            _ => panic!("{status}: {body}"),
        }
    }
    eprintln!(
        "failover {old} -> {new}: selling again {:?} after the kill",
        started.elapsed()
    );

    sale.drain().await;
    let users: HashSet<String> = sqlx::query_scalar("SELECT CAST(user_id AS CHAR) FROM orders WHERE activity_id = ?")
        .bind(sale.activity)
        .fetch_all(sale.db.pool())
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert!(
        users.is_superset(&queued),
        "lost: {:?}",
        queued.difference(&users).collect::<Vec<_>>()
    );
    let rec = sale.cli(&["reconcile", &sale.activity.to_string()]).await;
    assert_eq!(rec.code, 0, "{rec:?}");
    Arc::into_inner(sale).unwrap().finish().await;
}

/// Three consecutive ports from 20000 up, each free with its cluster bus port (+10000).
fn free_base_port() -> u16 {
    let free = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
    let seed = std::process::id() as u16 % 3000;
    (0..3000u16)
        .map(|i| 20000 + (seed + i * 7) % 9000)
        .find(|base| (0..3).all(|k| free(base + k) && free(base + k + 10000)))
        .expect("three free ports with their bus ports")
}

/// `scripts/redis-cluster.sh start BASE` gives a cluster every subcommand can use and that
/// meets `redis.durability: aof_always` on every primary; `stop BASE` kills the three by PID
/// and removes their directories; a bad BASE_PORT is a usage error.
#[tokio::test]
async fn the_cluster_script_starts_a_durable_cluster_and_stops_it() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/redis-cluster.sh");
    let base = free_base_port();
    let dir = std::env::temp_dir().join(format!("seckill-cluster-script-{base}"));
    let run = |action: &str, port: &str| {
        std::process::Command::new(script)
            .args([action, port])
            .env("SECKILL_CLUSTER_DIR", &dir)
            .output()
            .unwrap()
    };
    let started = run("start", &base.to_string());
    let said = String::from_utf8_lossy(&started.stdout).to_string();
    assert!(
        started.status.success(),
        "{said} {}",
        String::from_utf8_lossy(&started.stderr)
    );
    let url = format!("redis+cluster://127.0.0.1:{base},127.0.0.1:{}/", base + 1);
    assert!(said.contains(&format!("redis+cluster://127.0.0.1:{base},")), "{said}");
    let app = TestApp::builder().build().await;
    let doctor = app
        .cli_with(
            &["doctor", "--json"],
            &[("SECKILL_REDIS_URL", &url), ("SECKILL_REDIS_DURABILITY", "aof_always")],
            None,
        )
        .await;
    let stopped = run("stop", &base.to_string());
    assert!(stopped.status.success());
    let json: Value = serde_json::from_str(&doctor.stdout).unwrap_or_else(|_| panic!("{doctor:?}"));
    let persistence: Vec<&Value> = json["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["name"] == "persistence")
        .collect();
    assert_eq!(persistence.len(), 3, "{json}");
    assert!(persistence.iter().all(|c| c["verdict"] == "pass"), "{json}");
    for k in 0..3 {
        assert!(
            std::net::TcpListener::bind(("127.0.0.1", base + k)).is_ok(),
            "port {} still taken",
            base + k
        );
    }
    assert!(!dir.exists(), "{} left behind", dir.display());
    assert_eq!(run("start", "80").status.code(), Some(2));
    assert_eq!(run("restart", "").status.code(), Some(2));
}

#[tokio::test]
async fn bad_cluster_urls_fail_fast_and_clearly() {
    let app = TestApp::builder().build().await;
    let dead = format!("redis+cluster://127.0.0.1:{},127.0.0.1:{}/", free_port(), free_port());
    for (url, code, says) in [
        (dead.as_str(), 1, "cluster 127.0.0.1:"),
        ("redis+cluster://127.0.0.1:x/", 2, "is not host[:port]"),
        ("redis+cluster:///", 2, "names no node"),
        ("redis+cluster://127.0.0.1:7000/2", 2, "only database 0"),
    ] {
        let started = Instant::now();
        let out = app
            .cli_with(&["status", "1"], &[("SECKILL_REDIS_URL", url)], None)
            .await;
        assert_eq!(out.code, code, "{url}: {out:?}");
        assert!(out.stderr.contains(says), "{url}: {}", out.stderr);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{url}: took {:?}",
            started.elapsed()
        );
    }
}
