//! Stock sharding of one hot product (`product add --shards N`): the stock split over buckets
//! in slots of their own, on a real three-primary Redis Cluster and on the shared Redis; the
//! per-user limit across buckets, the last units, returns, reconcile, flush and bad input.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use redis::AsyncCommands;
use serde_json::Value;

use crate::cluster::{buy_all, orders_of, read_tokens, serve_on_a_free_port, NO_DISK};
use crate::helpers::{open_window, scan_keys, spec, ProductSpec, TestApp};
use crate::redis_servers::OwnCluster;

/// `spec(stock, limit, max_per_order)` with `shards` buckets.
fn sharded(stock: u32, limit: u32, max_per_order: u32, shards: u16) -> ProductSpec {
    ProductSpec {
        shards: Some(shards),
        ..spec(stock, limit, max_per_order)
    }
}

/// Each bucket's (stock, sold) in Redis.
async fn buckets_of(app: &TestApp, activity: u64, product: u64, shards: u16) -> Vec<(i64, i64)> {
    let keys = app.redis.keys();
    let mut conn = app.redis.conn();
    let mut out = Vec::new();
    for k in 0..shards {
        let (stock, sold): (Option<i64>, Option<i64>) = conn
            .hmget(keys.bucket_product(activity, k, product), &["stock", "sold"])
            .await
            .unwrap();
        out.push((stock.expect("bucket loaded"), sold.unwrap_or(0)));
    }
    out
}

/// The whole workflow on three primaries with a product of 4 buckets, limit 1: the buckets'
/// slots sit on more than one primary (`CLUSTER KEYSLOT` / `CLUSTER NODES`); 2,000 buyers for
/// 100 units through `seckill serve` -> exactly 100 queued, 100 distinct buyers, 1,900
/// `sold_out`, every bucket empty; `consumer --once` -> 100 orders from the four bucket streams;
/// `reconcile` exit 0; `status --buckets`; a cancelled order's unit goes back into a bucket and
/// is bought again, reconcile still clean; `stock add` sells exactly the added units, a drifted
/// bucket is repaired by `reconcile --fix`, `stock sold-out` empties every bucket; `flush` leaves no key of the activity or its buckets
/// on any node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sharded_product_sells_across_the_primaries_of_a_cluster() {
    let cluster = OwnCluster::start(&NO_DISK).await;
    let app = TestApp::builder().redis(cluster.url()).pipeline().build().await;
    let keys = app.redis.keys().clone();

    // Bucket slots are spread by hashing: four of them land on one primary of three about
    // once in 27 activities; the test wants an activity where they do not.
    let (activity, ports) = loop {
        let activity = app.create_activity(open_window()).await.id;
        let mut ports = BTreeSet::new();
        for k in 0..4 {
            ports.insert(cluster.port_of(&keys.bucket_orders(activity, k)).await);
        }
        if ports.len() > 1 {
            break (activity, ports);
        }
    };
    let a = activity.to_string();
    let product = app
        .cli(&[
            "product",
            "add",
            "--activity",
            &a,
            "--name",
            "hot",
            "--price",
            "9.99",
            "--stock",
            "100",
            "--limit-per-user",
            "1",
            "--shards",
            "4",
        ])
        .await
        .id();
    app.cli(&["hot", &a]).await.ok();
    app.cli(&["token", &a, "--range", "1-2000", "--out", "tokens.csv"])
        .await
        .ok();
    app.cli(&["start", &a]).await.ok();
    let tokens = read_tokens(&app, "tokens.csv");
    assert_eq!(tokens.len(), 2000);
    // Each bucket's keys are where CLUSTER NODES says their slot is, and not all on one node.
    let conns: HashMap<u16, _> = cluster.node_conns().await.into_iter().collect();
    let mut holders = BTreeSet::new();
    for k in 0..4 {
        let key = keys.bucket_product(activity, k, product);
        let port = cluster.port_of(&key).await;
        let exists: bool = conns[&port].clone().exists(&key).await.unwrap();
        assert!(exists, "{key} on {port}");
        holders.insert(port);
    }
    assert_eq!(holders, ports);
    assert!(holders.len() > 1, "buckets on {holders:?}");
    assert_eq!(
        buckets_of(&app, activity, product, 4)
            .await
            .iter()
            .map(|b| b.0)
            .sum::<i64>(),
        100
    );

    let (_serve, base, http) = serve_on_a_free_port(&app).await;

    let (queued, other) = buy_all(&http, &base, product, &tokens).await;
    assert_eq!(queued.len(), 100, "queued");
    assert_eq!(queued.values().collect::<HashSet<_>>().len(), 100, "distinct buyers");
    assert_eq!(other.len(), 1900);
    assert!(other.iter().all(|b| b["error"] == "sold_out"), "{other:?}");
    let buckets = buckets_of(&app, activity, product, 4).await;
    assert_eq!(
        buckets.iter().map(|b| b.0).collect::<Vec<_>>(),
        vec![0; 4],
        "{buckets:?}"
    );
    assert_eq!(buckets.iter().map(|b| b.1).sum::<i64>(), 100, "{buckets:?}");
    // Every bucket sold its share, into its own stream (an entry per call: fewer than 25).
    for k in 0..4 {
        let stream = keys.bucket_orders(activity, k);
        let entries = seckill::reservation::read_all(&app.redis, &stream).await.unwrap();
        let purchases: usize = entries
            .iter()
            .map(|e| seckill::reservation::purchases(e).unwrap().len())
            .sum();
        assert_eq!(purchases, 25, "bucket {k}");
        assert!(entries.len() <= 25, "bucket {k}: {} entries", entries.len());
    }
    let bought = app.bucket_totals(activity, product, 4).await;
    assert_eq!(bought.len(), 100, "every quota of a sold_out buyer was given back");
    assert!(bought.values().all(|&n| n == 1), "{bought:?}");

    app.cli(&["consumer", "--once"]).await.ok();
    assert_eq!(orders_of(&app, activity, "pending").await, 100);
    let rec = app.cli(&["reconcile", &a]).await;
    assert_eq!(rec.code, 0, "{rec:?}");
    let status = app.cli(&["status", &a, "--buckets", "--json"]).await.json();
    let listed = status["products"][0]["buckets"]
        .as_array()
        .expect("buckets listed")
        .clone();
    assert_eq!(listed.len(), 4, "{status}");
    assert_eq!(status["products"][0]["remaining"], 0, "{status}");
    assert_eq!(status["products"][0]["reserved"], 100, "{status}");
    let table = app.cli(&["status", &a, "--buckets"]).await;
    assert!(table.ok().stdout.contains("bucket"), "{table:?}");

    // A cancelled order's unit goes back on sale in a bucket and is bought again.
    let (cancelled, _) = queued.iter().next().unwrap();
    app.cli(&["order", "cancel", cancelled]).await.ok();
    let buckets = buckets_of(&app, activity, product, 4).await;
    assert_eq!(buckets.iter().map(|b| b.0).sum::<i64>(), 1, "{buckets:?}");
    let late = app.cli(&["token", &a, "--user", "late"]).await;
    let late = late
        .ok()
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("late,"))
        .unwrap()
        .to_string();
    // `serve` answers sold_out from memory for funnel.sold_out_cache_ms (1 s) after it last saw 0.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (again, other) = buy_all(&http, &base, product, &HashMap::from([("late".to_string(), late)])).await;
    assert_eq!((again.len(), other.len()), (1, 0), "{other:?}");
    // `GET /api/v1/orders/NO` finds a bucket's reservation in its bucket's stream.
    let no = again.keys().next().unwrap();
    let view: Value = http
        .get(format!("{base}/api/v1/orders/{no}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (view["status"].as_str(), view["user_id"].as_str()),
        (Some("queued"), Some("late")),
        "{view}"
    );
    app.cli(&["consumer", "--once"]).await.ok();
    assert_eq!(orders_of(&app, activity, "pending").await, 100);
    assert_eq!(orders_of(&app, activity, "cancelled").await, 1);
    let rec = app.cli(&["reconcile", &a]).await;
    assert_eq!(rec.code, 0, "reconcile after the resale: {rec:?}");
    let shown = app.cli(&["order", "show", no, "--json"]).await.json();
    assert_eq!(shown["user_id"], "late", "{shown}");

    // Live stock changes on the cluster: `stock add` spreads 6 units over the buckets on their
    // primaries and exactly 6 of 40 fresh buyers get one; a bucket's stock raised behind
    // reconcile's back is reported and taken off sale by --fix; `stock sold-out` empties
    // every bucket.
    let p = product.to_string();
    app.cli(&["stock", "add", &p, "6"]).await.ok();
    let buckets = buckets_of(&app, activity, product, 4).await;
    assert_eq!(buckets.iter().map(|b| b.0).sum::<i64>(), 6, "{buckets:?}");
    assert!(buckets.iter().all(|b| b.0 > 0), "spread over every bucket: {buckets:?}");
    let bought: HashSet<&String> = queued.values().collect();
    let fresh: HashMap<String, String> = tokens
        .iter()
        .filter(|(user, _)| !bought.contains(user))
        .take(40)
        .map(|(u, t)| (u.clone(), t.clone()))
        .collect();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (more, other) = buy_all(&http, &base, product, &fresh).await;
    assert_eq!((more.len(), other.len()), (6, 34), "{other:?}");
    assert!(other.iter().all(|b| b["error"] == "sold_out"), "{other:?}");
    app.cli(&["consumer", "--once"]).await.ok();
    assert_eq!(orders_of(&app, activity, "pending").await, 106);
    let () = app
        .redis
        .conn()
        .hset(keys.bucket_product(activity, 2, product), "stock", 5)
        .await
        .unwrap();
    let found = app.cli(&["reconcile", &a]).await;
    assert!(found.fails_with(1, &[]).stdout.contains("redis stock"), "{found:?}");
    app.cli(&["reconcile", &a, "--fix"]).await.ok();
    app.cli(&["reconcile", &a]).await.ok();
    let buckets = buckets_of(&app, activity, product, 4).await;
    assert_eq!(buckets.iter().map(|b| b.0).sum::<i64>(), 0, "{buckets:?}");
    app.cli(&["stock", "add", &p, "5"]).await.ok();
    let withdrawn = app.cli(&["stock", "sold-out", &p, "--json"]).await.json();
    assert_eq!(withdrawn["delta"], -5, "{withdrawn}");
    let buckets = buckets_of(&app, activity, product, 4).await;
    assert_eq!(
        buckets.iter().map(|b| b.0).collect::<Vec<_>>(),
        vec![0; 4],
        "{buckets:?}"
    );
    app.cli(&["reconcile", &a]).await.ok();

    app.cli(&["stop", &a, "--end"]).await.ok();
    app.cli(&["flush", "-y", &a]).await.ok();
    for (port, mut conn) in cluster.node_conns().await {
        for pattern in [keys.activity_pattern(activity), keys.buckets_pattern(activity)] {
            let left = scan_keys(&mut conn, &pattern).await;
            assert!(left.is_empty(), "node {port} still holds {left:?}");
        }
    }
}

/// On a cluster, 4 buckets: the per-user limit holds across buckets (limit 2: one user's 50
/// parallel requests get exactly 2 units), and the last units are all sold (4 buckets of 1
/// unit, 100 buyers: exactly 4 sold, nothing left in any bucket, reconcile clean).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_limit_holds_across_buckets_and_the_last_units_sell() {
    let cluster = OwnCluster::start(&NO_DISK).await;
    let limited = Arc::new(
        TestApp::builder()
            .redis(cluster.url())
            .pipeline()
            .tune(|c| c.funnel.per_user_rps = 0)
            .sale(vec![sharded(40, 2, 1, 4)])
            .serve()
            .build()
            .await,
    );
    let token = limited.token("greedy").await;
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let (sale, token) = (limited.clone(), token.clone());
            tokio::spawn(async move { sale.buy(sale.product, "greedy", 1, &token).await })
        })
        .collect();
    let mut codes: HashMap<String, usize> = HashMap::new();
    for task in tasks {
        let (status, body) = task.await.unwrap();
        let code = if status == 200 {
            "queued".to_string()
        } else {
            body["error"].as_str().unwrap_or("?").to_string()
        };
        *codes.entry(code).or_default() += 1;
    }
    assert_eq!(codes.get("queued"), Some(&2), "{codes:?}");
    let buckets = buckets_of(&limited, limited.activity, limited.product, 4).await;
    assert_eq!(buckets.iter().map(|b| b.0).sum::<i64>(), 38, "{buckets:?}");
    limited.drain().await;
    let held: i64 = limited
        .scalar("SELECT CAST(COALESCE(SUM(quantity), 0) AS SIGNED) FROM orders WHERE user_id = 'greedy'")
        .await;
    assert_eq!(held, 2);
    let rec = limited.cli(&["reconcile", &limited.activity.to_string()]).await;
    assert_eq!(rec.code, 0, "{rec:?}");
    Arc::into_inner(limited).unwrap().finish().await;

    let last = Arc::new(
        TestApp::builder()
            .redis(cluster.url())
            .pipeline()
            .sale(vec![sharded(4, 1, 1, 4)])
            .serve()
            .build()
            .await,
    );
    assert_eq!(buckets_of(&last, last.activity, last.product, 4).await, vec![(1, 0); 4]);
    let users: Vec<String> = (0..100).map(|i| format!("buyer{i}")).collect();
    let answers = last.buy_at_once(last.product, users).await;
    let sold = answers.iter().filter(|(_, (status, _))| *status == 200).count();
    assert_eq!(sold, 4, "{answers:?}");
    assert!(
        answers
            .iter()
            .filter(|(_, (status, _))| *status != 200)
            .all(|(_, (_, body))| body["error"] == "sold_out"),
        "{answers:?}"
    );
    assert_eq!(buckets_of(&last, last.activity, last.product, 4).await, vec![(0, 1); 4]);
    last.drain().await;
    assert_eq!(last.orders().await, 4);
    let rec = last.cli(&["reconcile", &last.activity.to_string()]).await;
    assert_eq!(rec.code, 0, "{rec:?}");
    Arc::into_inner(last).unwrap().finish().await;

    // `seckill bench --shards 4`: a whole rehearsal with its invariants, leaving no key behind.
    let bench = TestApp::builder().redis(cluster.url()).build().await;
    let before = bench.all_keys().await;
    let report = bench
        .cli(&[
            "bench",
            "--spawn",
            "--shards",
            "4",
            "--stock",
            "50",
            "--users",
            "300",
            "--requests",
            "1000",
            "--consumers",
            "1",
            "--json",
        ])
        .await
        .ok()
        .json();
    assert_eq!(report["passed"], true, "{report:#}");
    assert_eq!(report["outcomes"]["queued"], 50, "{report:#}");
    assert_eq!(bench.all_keys().await, before, "bench left keys behind");
}

/// On the single shared Redis a sharded product sells the same way: 30 buyers for 10 units
/// in 4 buckets, 10 queued, orders persisted, a cancelled unit bought again, reconcile clean;
/// a product without buckets in the same activity is decided by `reserve.lua` as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sharded_product_sells_on_one_redis() {
    let sale = Arc::new(
        TestApp::builder()
            .pipeline()
            .sale(vec![sharded(10, 1, 1, 4), spec(5, 1, 1)])
            .serve()
            .build()
            .await,
    );
    let (hot, plain) = (sale.products[0], sale.products[1]);
    let hash = sale.product_hash(sale.activity, hot).await;
    assert_eq!((hash.get("stock"), hash["shards"].as_str()), (None, "4"), "{hash:?}");
    assert_eq!(
        buckets_of(&sale, sale.activity, hot, 4).await,
        vec![(3, 0), (3, 0), (2, 0), (2, 0)]
    );

    let remaining = |view: &Value| {
        let products = view["products"].as_array().unwrap().clone();
        products
            .iter()
            .map(|p| p["remaining"].as_i64().unwrap())
            .collect::<Vec<_>>()
    };
    let path = format!("/api/v1/activities/{}", sale.activity);
    assert_eq!(remaining(&sale.get(&path).await.1), vec![10, 5], "the buckets' sum");

    let users: Vec<String> = (0..30).map(|i| format!("u{i}")).collect();
    let answers = sale.buy_at_once(hot, users.clone()).await;
    let queued: Vec<&Value> = answers
        .iter()
        .filter(|(_, (status, _))| *status == 200)
        .map(|(_, (_, body))| body)
        .collect();
    assert_eq!(queued.len(), 10, "{answers:?}");
    let plain_answers = sale.buy_at_once(plain, users[..8].to_vec()).await;
    assert_eq!(plain_answers.iter().filter(|(_, (s, _))| *s == 200).count(), 5);
    assert_eq!(
        sale.counters(plain).await,
        (0, 5, 5),
        "reserve.lua's stream holds the plain product's"
    );

    sale.drain().await;
    assert_eq!(sale.orders().await, 15);
    let a = sale.activity.to_string();
    sale.cli(&["reconcile", &a]).await.ok();
    let no = queued[0]["order_no"].as_str().unwrap();
    sale.cli(&["order", "cancel", no]).await.ok();
    // `serve` answers sold_out from memory for funnel.sold_out_cache_ms (1 s) after it last saw 0.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let again = sale.buy_at_once(hot, vec!["late".to_string()]).await;
    assert_eq!(again[0].1 .0, 200, "{again:?}");
    sale.drain().await;
    sale.cli(&["reconcile", &a]).await.ok();
    Arc::into_inner(sale).unwrap().finish().await;
}

/// `--shards` out of 1..=1024 is a usage error (exit 2) and changing it while the activity is
/// online is refused (exit 1); nothing changes either way.
#[tokio::test]
async fn bad_shard_counts_and_changes_while_online_are_refused() {
    let app = TestApp::builder().sale(vec![spec(10, 1, 1)]).build().await;
    let a = app.activity.to_string();
    let before = app.snapshot().await;
    for bad in ["0", "1025", "-1", "x"] {
        app.cli(&[
            "product",
            "add",
            "--activity",
            &a,
            "--name",
            "n",
            "--price",
            "1",
            "--stock",
            "1",
            "--shards",
            bad,
        ])
        .await
        .fails_with(2, &["--shards"]);
        app.cli(&["product", "update", &app.product.to_string(), "--shards", bad])
            .await
            .fails_with(2, &["--shards"]);
    }
    app.cli(&["product", "update", &app.product.to_string(), "--shards", "4"])
        .await
        .fails_with(1, &["online"]);
    assert_eq!(app.snapshot().await, before);
    assert_eq!(app.product(app.product).await.shards, 1);

    app.cli(&["stop", &a]).await.ok();
    let shown = app
        .cli(&[
            "product",
            "update",
            &app.product.to_string(),
            "--shards",
            "1024",
            "--json",
        ])
        .await;
    assert!(shown.ok().stdout.contains("1024"), "{shown:?}");
    assert_eq!(app.product(app.product).await.shards, 1024);
}

/// `serve` dying between a sharded purchase's two steps (the quota taken in the buyer's
/// bucket, which was short, no other bucket reached): nothing is sold, the buyer's total is one unit too high, and
/// `reconcile` reports it (exit 1) and `--fix` gives it back, after which the buyer can buy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_taken_without_a_reservation_is_found_and_given_back() {
    let sale = Arc::new(
        TestApp::builder()
            .pipeline()
            .tune(|c| c.orders.in_flight_grace_secs = 0)
            .sale(vec![sharded(8, 1, 1, 4)])
            .serve()
            .build()
            .await,
    );
    let token = sale.token("torn").await;
    // Step 1 alone, as `serve` runs it.
    let purchase = seckill::buy::Purchase {
        product_id: sale.product,
        user_id: "torn".into(),
        quantity: 1,
        token: token.clone(),
    };
    let quotas = seckill::buckets::quota::take(&sale.redis, sale.activity, 0, &[purchase])
        .await
        .unwrap();
    assert_eq!(quotas, vec![seckill::buckets::quota::Quota::Taken]);
    let (status, body) = sale.buy(sale.product, "torn", 1, &token).await;
    assert_eq!(
        (status.as_u16(), body["error"].as_str()),
        (409, Some("limit_exceeded")),
        "{body}"
    );
    let buckets = buckets_of(&sale, sale.activity, sale.product, 4).await;
    assert_eq!(
        buckets.iter().map(|b| b.0).sum::<i64>(),
        8,
        "nothing was sold: {buckets:?}"
    );

    let a = sale.activity.to_string();
    let found = sale.cli(&["reconcile", &a, "--json"]).await;
    assert_eq!(found.code, 1, "{found:?}");
    assert!(found.stdout.contains("torn"), "{}", found.stdout);
    sale.cli(&["reconcile", &a, "--fix"]).await.ok();
    let held = seckill::buckets::quota::held(&sale.redis, sale.activity, sale.product, 4, "torn")
        .await
        .unwrap();
    assert_eq!(held, 0);
    let (status, body) = sale.buy(sale.product, "torn", 1, &token).await;
    assert_eq!(status.as_u16(), 200, "{body}");
    sale.drain().await;
    sale.cli(&["reconcile", &a]).await.ok();
    Arc::into_inner(sale).unwrap().finish().await;
}
