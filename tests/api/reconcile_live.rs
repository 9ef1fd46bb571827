//! `reconcile` during a live sale: `--fix` in a loop while buyers buy and a consumer
//! persists must never hand a buyer a second unit or put a sold unit back on sale; and
//! dead-lettered reservations are reservations, not drift.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::AsyncCommands;
use seckill::buy::{self, Purchase};
use seckill::ops::reconcile;
use seckill::reservation::dlq;
use seckill::reservation::stream::GroupConsumer;

use crate::helpers::{phone, users, TestApp};

const STOCK: u32 = 3_000;
const BUYERS: usize = 4_000;

/// Buys, for `run_for`, one unit for random users of `pool` (each may try many times), in
/// small batches as the HTTP funnel would; returns the number of accepted purchases.
async fn buy_randomly(f: Arc<TestApp>, pool: Arc<Vec<String>>, stop: Arc<AtomicBool>, seed: u64) -> u64 {
    let mut accepted = 0;
    let mut state = seed | 1;
    while !stop.load(Ordering::Relaxed) {
        let purchases: Vec<Purchase> = (0..8)
            .map(|_| {
                // xorshift: cheap and good enough to pick buyers.
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let user = &pool[(state % pool.len() as u64) as usize];
                Purchase {
                    product_id: f.product,
                    user_id: user.clone(),
                    quantity: 1,
                    token: format!("tok-{user}"),
                }
            })
            .collect();
        let verdicts = buy::reserve(&f.redis, f.activity, &purchases).await.unwrap();
        accepted += verdicts.iter().filter(|v| v.order_no.is_some()).count() as u64;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    accepted
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fix_in_a_loop_during_a_live_sale_keeps_the_limit_and_the_stock() {
    let f = Arc::new(TestApp::builder().pipeline().sale(vec![phone(STOCK, 1)]).build().await);
    let pool: Arc<Vec<String>> = Arc::new(users("live", BUYERS).collect());
    f.plain_tokens(&pool).await;
    let mut consumer = f.spawn(&["consumer", "--name", "live", "--batch", "50"]);
    let stop = Arc::new(AtomicBool::new(false));
    let buyers: Vec<_> = (0..2)
        .map(|i| tokio::spawn(buy_randomly(f.clone(), pool.clone(), stop.clone(), 0x9e37_79b9 + i)))
        .collect();
    let (runs, repairs) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let fixer = {
        let (f, stop, runs, repairs) = (f.clone(), stop.clone(), runs.clone(), repairs.clone());
        tokio::spawn(async move {
            let group = f.config.consumer.group.clone();
            while !stop.load(Ordering::Relaxed) {
                let r = reconcile::reconcile(&f.db, &f.redis, &group, f.activity, Duration::from_secs(60), true)
                    .await
                    .unwrap();
                runs.fetch_add(1, Ordering::Relaxed);
                repairs.fetch_add(r.repairs.len() as u64, Ordering::Relaxed);
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(20)).await;
    stop.store(true, Ordering::Relaxed);
    let mut accepted = 0;
    for b in buyers {
        accepted += b.await.unwrap();
    }
    fixer.await.unwrap();
    unsafe { libc_kill(consumer.id() as i32, 15) };
    assert!(consumer.wait().unwrap().success());
    f.drain().await;
    assert_eq!(f.backlog().await, 0);

    let over_limit: Vec<(String, i64)> = sqlx::query_as(
        "SELECT user_id, COUNT(*) FROM orders WHERE activity_id = ? GROUP BY user_id HAVING COUNT(*) > 1",
    )
    .bind(f.activity)
    .fetch_all(f.db.pool())
    .await
    .unwrap();
    let orders = f.orders().await;
    let total: i64 = sqlx::query_scalar("SELECT CAST(total_stock AS SIGNED) FROM products WHERE id = ?")
        .bind(f.product)
        .fetch_one(f.db.pool())
        .await
        .unwrap();
    let (stock, sold, redis_total) = f.redis_counters().await;
    let mut conn = f.redis.conn();
    let bought: HashMap<String, i64> = conn
        .hgetall(f.redis.keys().bought(f.activity, f.product))
        .await
        .unwrap();
    let summary = format!(
        "{} reconcile --fix runs ({} repairs); {accepted} purchases accepted; {orders} orders for {total} units; \
         {} users over the limit of 1 (first: {:?}); Redis stock/sold/total {stock}/{sold}/{redis_total}",
        runs.load(Ordering::Relaxed),
        repairs.load(Ordering::Relaxed),
        over_limit.len(),
        over_limit.first()
    );
    eprintln!("{summary}");
    assert!(runs.load(Ordering::Relaxed) >= 5, "{summary}");
    assert!(over_limit.is_empty(), "{summary}");
    assert!(orders <= i64::from(STOCK) && total == i64::from(STOCK), "{summary}");
    assert_eq!(orders as u64, accepted, "{summary}");
    assert_eq!((stock + sold, redis_total, sold), (total, total, orders), "{summary}");
    assert!(
        bought.values().all(|&n| n == 1) && bought.len() as i64 == orders,
        "{summary}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_lettered_reservation_still_holds_its_unit_and_the_users_total() {
    let f = TestApp::builder().pipeline().sale(vec![phone(10, 1)]).build().await;
    f.reserve(users("ok", 3), 1).await;
    f.drain().await;
    let buried = f.reserve(["buried".to_string()], 1).await;
    // Deliver the reservation, then bury it the way a consumer does after max_deliveries.
    let mut conn = f.redis.conn();
    let stream = f.redis.keys().orders_stream(f.activity);
    let group = f.config.consumer.group.clone();
    let poisoned = GroupConsumer {
        redis: &f.redis,
        group: &group,
        name: "poisoned",
    };
    let raw = poisoned
        .read_new(std::slice::from_ref(&stream), 10, None)
        .await
        .unwrap();
    let (_, id) = seckill::keys::parse_order_no(&buried[0]).unwrap();
    let entry = seckill::reservation::read_all(&f.redis, &stream)
        .await
        .unwrap()
        .into_iter()
        .find(|e| e.id == id)
        .unwrap_or_else(|| panic!("entry {id} not in the stream ({raw:?})"));
    dlq::bury(&f.redis, f.activity, &group, "poisoned", &entry, "persisting failed", 3)
        .await
        .unwrap();
    assert_eq!(f.backlog().await, 0);
    let bought_key = f.redis.keys().bought(f.activity, f.product);
    let before = (
        f.redis_counters().await,
        conn.hget::<_, _, Option<i64>>(&bought_key, "buried").await.unwrap(),
    );
    assert_eq!(before, ((6, 4, 10), Some(1)));

    let (code, out) = f.run(&["reconcile", &f.activity.to_string(), "--fix"]);
    let after = (
        f.redis_counters().await,
        conn.hget::<_, _, Option<i64>>(&bought_key, "buried").await.unwrap(),
    );
    assert_eq!(
        after, before,
        "reconcile --fix changed the dead letter's unit or total:\n{out}"
    );
    assert!(out.contains("dead_lettered") && out.contains(&buried[0]), "{out}");
    assert_eq!(code, 1, "a dead letter needs a person: not consistent\n{out}");

    let report = reconcile::reconcile(&f.db, &f.redis, &group, f.activity, Duration::from_secs(60), false)
        .await
        .unwrap();
    assert_eq!(report.dead_letters, 1);
    let classes: Vec<_> = report.findings.iter().map(|x| x.class.as_str()).collect();
    assert_eq!(classes, vec!["dead_lettered"], "{:?}", report.findings);
    assert_eq!(report.products[0].dead_lettered_units, 1, "{:?}", report.products);
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}
