//! The buyers' totals of a sharded product live in their buyers' buckets (`P:{a:A:b:K}:bought:ID`)
//! and every purchase is decided there alone, against the bucket's copies of the activity's
//! switches: on the shared Redis and on a real three-primary cluster, the limit across
//! buckets, a paused sale, blacklisted and revoked buyers in whatever bucket, a cancelled
//! order's return lowering the total once, reconcile clean, a drifted total found and fixed.

use std::collections::HashMap;
use std::sync::Arc;

use redis::AsyncCommands;
use seckill::buckets::quota::{bucket_of_user, held};
use seckill::buckets::{reserve_routed, Sharded};
use seckill::buy::{Outcome, Purchase};

use crate::cluster::NO_DISK;
use crate::helpers::{spec, ProductSpec, TestApp};
use crate::redis_servers::OwnCluster;

const SHARDS: u16 = 4;

/// `n` user names starting with `prefix` whose bucket of `shards` is `bucket`.
pub(crate) fn users_in(prefix: &str, bucket: u16, shards: u16, n: usize) -> Vec<String> {
    (0..)
        .map(|i| format!("{prefix}{i}"))
        .filter(|u| bucket_of_user(u, shards) == bucket)
        .take(n)
        .collect()
}

/// One buyer in each bucket.
fn one_per_bucket(prefix: &str) -> Vec<String> {
    (0..SHARDS).map(|k| users_in(prefix, k, SHARDS, 1).remove(0)).collect()
}

/// Decides one purchase of one unit per user in one batch, as `serve`'s batcher does (the
/// token's signature is `serve`'s to check; Redis checks the rest).
async fn decide(app: &TestApp, users: &[String]) -> Vec<Outcome> {
    let purchases: Vec<Purchase> = users
        .iter()
        .map(|u| Purchase {
            product_id: app.product,
            user_id: u.clone(),
            quantity: 1,
            token: String::new(),
        })
        .collect();
    reserve_routed(&app.redis, app.activity, 0, &purchases, &Sharded::default())
        .await
        .unwrap()
        .iter()
        .map(|v| v.outcome)
        .collect()
}

/// Units on sale over the buckets.
async fn on_sale(app: &TestApp) -> i64 {
    let mut units = 0;
    for k in 0..SHARDS {
        let stock: Option<i64> = app
            .redis
            .conn()
            .hget(app.redis.keys().bucket_product(app.activity, k, app.product), "stock")
            .await
            .unwrap();
        units += stock.unwrap();
    }
    units
}

/// `n` parallel one-unit buys of `user` through `serve`: how many were queued, and the order
/// numbers.
async fn parallel_buys(sale: &Arc<TestApp>, user: &str, n: usize) -> Vec<String> {
    let token = sale.token(user).await;
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (sale, token, user) = (sale.clone(), token.clone(), user.to_string());
            tokio::spawn(async move { sale.buy(sale.product, &user, 1, &token).await })
        })
        .collect();
    let mut queued = Vec::new();
    let mut refused: HashMap<String, usize> = HashMap::new();
    for task in tasks {
        let (status, body) = task.await.unwrap();
        if status == 200 {
            queued.push(body["order_no"].as_str().unwrap().to_string());
        } else {
            *refused
                .entry(body["error"].as_str().unwrap_or("?").to_string())
                .or_default() += 1;
        }
    }
    assert!(refused.keys().all(|code| code == "limit_exceeded"), "{refused:?}");
    queued
}

/// The whole scenario on `sale` (40 units in 4 buckets, limit 2, served).
async fn the_totals_hold_in_their_buckets(sale: Arc<TestApp>) {
    let (activity, product) = (sale.activity, sale.product);
    let a = activity.to_string();
    let keys = sale.redis.keys().clone();
    let total = |user: &'static str| held(&sale.redis, activity, product, SHARDS, user);

    // Limit 2 across 4 buckets: 50 parallel requests of one buyer -> exactly 2 units, the
    // total in the buyer's bucket only, nothing in the activity's slot.
    let first = parallel_buys(&sale, "greedy", 50).await;
    assert_eq!(first.len(), 2, "{first:?}");
    assert_eq!(on_sale(&sale).await, 38);
    assert_eq!(total("greedy").await.unwrap(), 2);
    let all = sale.bucket_totals(activity, product, SHARDS).await;
    assert_eq!(all, HashMap::from([("greedy".to_string(), 2)]));
    let in_activity: HashMap<String, i64> = sale.redis.conn().hgetall(keys.bought(activity, product)).await.unwrap();
    assert!(in_activity.is_empty(), "{in_activity:?}");
    // "Did I win?" reads the buyer's total from the buyer's bucket to know whether the stream
    // must be read: the two units are there, queued or persisted.
    let (_, mine) = sale
        .get(&format!("/api/v1/activities/{activity}/result?user_id=greedy"))
        .await;
    assert_eq!(mine["reserved"], true, "{mine}");
    assert_eq!(mine["orders"].as_array().map(Vec::len), Some(2), "{mine}");

    // Paused: after `stop` returned, no bucket sells, whichever bucket the buyer's is.
    sale.cli(&["stop", &a]).await.ok();
    for k in 0..SHARDS {
        let gate: HashMap<String, String> = sale.redis.conn().hgetall(keys.bucket_gate(activity, k)).await.unwrap();
        assert_eq!(
            gate.get("status").map(String::as_str),
            Some("paused"),
            "bucket {k}: {gate:?}"
        );
    }
    let waiting = one_per_bucket("w");
    assert_eq!(decide(&sale, &waiting).await, vec![Outcome::Paused; 4]);
    let token = sale.token(&waiting[0]).await;
    let (status, body) = sale.buy(product, &waiting[0], 1, &token).await;
    assert_eq!(
        (status.as_u16(), body["error"].as_str()),
        (403, Some("paused")),
        "{body}"
    );
    assert_eq!(on_sale(&sale).await, 38, "nothing sold while paused");
    assert!(
        sale.bucket_totals(activity, product, SHARDS).await.len() == 1,
        "no quota taken"
    );
    sale.cli(&["start", &a]).await.ok();
    assert_eq!(decide(&sale, &waiting).await, vec![Outcome::Ok; 4]);
    assert_eq!(on_sale(&sale).await, 34);

    // Blacklisted and revoked buyers are refused in every bucket; let back in, they buy.
    let barred = one_per_bucket("bad");
    let revoked = one_per_bucket("gone");
    for user in &barred {
        sale.cli(&["blacklist", "add", user]).await.ok();
    }
    for user in &revoked {
        sale.cli(&["token", "revoke", &a, "--user", user]).await.ok();
    }
    assert_eq!(decide(&sale, &barred).await, vec![Outcome::Blacklisted; 4]);
    assert_eq!(decide(&sale, &revoked).await, vec![Outcome::InvalidToken; 4]);
    assert_eq!(on_sale(&sale).await, 34);
    for user in &barred {
        sale.cli(&["blacklist", "remove", user]).await.ok();
    }
    for user in &revoked {
        sale.cli(&["token", "lift", &a, "--user", user]).await.ok();
    }
    assert_eq!(decide(&sale, &barred).await, vec![Outcome::Ok; 4]);
    assert_eq!(decide(&sale, &revoked).await, vec![Outcome::Ok; 4]);
    assert_eq!(on_sale(&sale).await, 26);

    // A cancelled order: its unit back on sale and the buyer's total lowered, once.
    sale.drain().await;
    sale.cli(&["order", "cancel", &first[0]]).await.ok();
    assert_eq!(total("greedy").await.unwrap(), 1);
    assert_eq!(on_sale(&sale).await, 27);
    let again = sale.cli(&["order", "cancel", &first[0]]).await;
    assert_ne!(again.code, 2, "{again:?}");
    assert_eq!(total("greedy").await.unwrap(), 1, "lowered once");
    assert_eq!(on_sale(&sale).await, 27, "returned once");
    // The buyer may buy one more, not two: the limit still holds.
    let second = parallel_buys(&sale, "greedy", 10).await;
    assert_eq!(second.len(), 1, "{second:?}");
    assert_eq!(total("greedy").await.unwrap(), 2);
    sale.drain().await;
    let units: i64 = sale
        .scalar("SELECT CAST(COALESCE(SUM(quantity), 0) AS SIGNED) FROM orders WHERE status = 'pending'")
        .await;
    assert_eq!(units, 14, "2 + 4 + 8 bought, 1 cancelled, 1 bought again");
    let clean = sale.cli(&["reconcile", &a]).await;
    assert_eq!(clean.code, 0, "{clean:?}");

    // A total drifted in its bucket: reported, fixed from the orders, clean again.
    let k = bucket_of_user("greedy", SHARDS);
    let () = sale
        .redis
        .conn()
        .hset(keys.bucket_bought(activity, k, product), "greedy", 5)
        .await
        .unwrap();
    let found = sale.cli(&["reconcile", &a]).await;
    assert_eq!(found.code, 1, "{found:?}");
    assert!(
        found.stdout.contains("quota_drift") && found.stdout.contains("greedy"),
        "{}",
        found.stdout
    );
    sale.cli(&["reconcile", &a, "--fix"]).await.ok();
    assert_eq!(total("greedy").await.unwrap(), 2);
    let clean = sale.cli(&["reconcile", &a]).await;
    assert_eq!(clean.code, 0, "{clean:?}");
    Arc::into_inner(sale).unwrap().finish().await;
}

fn product() -> ProductSpec {
    ProductSpec {
        shards: Some(SHARDS),
        ..spec(40, 2, 2)
    }
}

/// [`the_totals_hold_in_their_buckets`] on the shared Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buyers_totals_live_in_their_buckets_on_one_redis() {
    let sale = TestApp::builder()
        .pipeline()
        .tune(|c| c.funnel.per_user_rps = 0)
        .sale(vec![product()])
        .serve()
        .build()
        .await;
    the_totals_hold_in_their_buckets(Arc::new(sale)).await;
}

/// [`the_totals_hold_in_their_buckets`] on a three-primary cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buyers_totals_live_in_their_buckets_on_a_cluster() {
    let cluster = OwnCluster::start(&NO_DISK).await;
    let sale = TestApp::builder()
        .redis(cluster.url())
        .pipeline()
        .tune(|c| c.funnel.per_user_rps = 0)
        .sale(vec![product()])
        .serve()
        .build()
        .await;
    the_totals_hold_in_their_buckets(Arc::new(sale)).await;
}
