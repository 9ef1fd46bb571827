//! A lost-state check racing `hot`: `hot` preheats Redis with a new epoch and then stamps it in
//! MySQL, so a check that read the old mark before the stamp and Redis after the preheat sees
//! two epochs although nothing was lost. Its suspension must not outlive the `hot`, or the sale
//! would be refused (`start` says the state was lost) right after a clean preheat.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use std::collections::HashMap;

use redis::AsyncCommands;
use seckill::buckets::quota::{self, Bought};
use seckill::buy::{Outcome, Purchase};
use seckill::lost_state::{self, LossKind};

use crate::helpers::{spec, ProductSpec, TestApp};

/// Stock buckets of the sale's second product.
const SHARDS: u16 = 2;

/// A preheated sale, paused (so `hot` may run again): a product, and one split into
/// [`SHARDS`] stock buckets, which decide purchases from their own copy of the status.
async fn paused_sale() -> TestApp {
    let sharded = ProductSpec {
        shards: Some(SHARDS),
        ..spec(10, 1, 1)
    };
    let sale = TestApp::builder().sale(vec![spec(10, 1, 1), sharded]).build().await;
    seckill::ops::stop(&sale.db, &sale.redis, sale.activity, false)
        .await
        .unwrap();
    sale
}

async fn hot(sale: &TestApp) {
    seckill::ops::hot(&sale.db, &sale.redis, &sale.config.consumer.group, sale.activity)
        .await
        .unwrap();
}

/// The activity's Redis status and lost reason.
async fn redis_status(sale: &TestApp) -> (Option<String>, Option<String>) {
    let key = sale.redis.keys().activity(sale.activity);
    let mut conn = sale.redis.conn();
    redis::pipe()
        .hget(&key, "status")
        .hget(&key, "lost_reason")
        .query_async(&mut conn)
        .await
        .unwrap()
}

/// Every stock bucket's copy of the status is `status`.
async fn gates_hold(sale: &TestApp, status: &str, when: &str) {
    let mut conn = sale.redis.conn();
    for k in 0..SHARDS {
        let copy: Option<String> = conn
            .hget(sale.redis.keys().bucket_gate(sale.activity, k), "status")
            .await
            .unwrap();
        assert_eq!(copy.as_deref(), Some(status), "bucket {k}'s copy of the status {when}");
    }
}

/// The sale is paused, not suspended, in the activity hash and every bucket's gate, and a
/// lost-state check finds Redis whole.
async fn paused_and_whole(sale: &TestApp, when: &str) {
    assert_eq!(redis_status(sale).await, (Some("paused".into()), None), "{when}");
    gates_hold(sale, "paused", when).await;
    assert_eq!(
        lost_state::inspect(&sale.db, &sale.redis, sale.activity).await.unwrap(),
        None,
        "{when}"
    );
}

/// The activity hash's status change number (0 when it has none).
async fn gate_ver(sale: &TestApp) -> i64 {
    let ver: Option<i64> = sale
        .redis
        .conn()
        .hget(sale.redis.keys().activity(sale.activity), "gate_ver")
        .await
        .unwrap();
    ver.unwrap_or(0)
}

/// Starts the sale: the activity and every stock bucket's copy of its status are online.
async fn start(sale: &TestApp) {
    seckill::ops::start(&sale.db, &sale.redis, sale.activity).await.unwrap();
    assert_eq!(redis_status(sale).await, (Some("online".into()), None));
    gates_hold(sale, "online", "after start").await;
}

/// Another session's lock on the activity's lost-state mark, as a slow MySQL session would
/// hold it: whoever writes or lock-reads the mark waits until it is rolled back.
pub async fn hold_mark(sale: &TestApp) -> sqlx::Transaction<'static, sqlx::MySql> {
    let mut holder = sale.db.pool().begin().await.unwrap();
    let held: Vec<u64> =
        sqlx::query_scalar("SELECT activity_id FROM redis_watermarks WHERE activity_id = ? FOR UPDATE")
            .bind(sale.activity)
            .fetch_all(&mut *holder)
            .await
            .unwrap();
    assert_eq!(held, vec![sale.activity]);
    holder
}

/// Waits until another session of the sale's database runs a statement like `pattern` (SQL
/// LIKE), which [`hold_mark`] makes it wait on; panics with `never` after 30 s.
pub async fn wait_until_blocked(sale: &TestApp, pattern: &str, never: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM information_schema.processlist \
             WHERE db = DATABASE() AND id <> CONNECTION_ID() AND info LIKE ?",
        )
        .bind(pattern)
        .fetch_one(sale.db.pool())
        .await
        .unwrap();
        if waiting > 0 {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{never}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

async fn set_mark_epoch(sale: &TestApp, epoch: &str) {
    sqlx::query("UPDATE redis_watermarks SET epoch = ? WHERE activity_id = ?")
        .bind(epoch)
        .bind(sale.activity)
        .execute(sale.db.pool())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_suspension_judged_against_the_mark_hot_replaced_is_taken_back() {
    let sale = paused_sale().await;
    // The check reads MySQL's marks, then `hot` runs whole, then the check reads Redis.
    let marks = lost_state::marks(&sale.db).await.unwrap();
    hot(&sale).await;
    let losses = lost_state::inspect_all(&sale.db, &sale.redis, &marks).await.unwrap();
    assert_eq!(
        losses.iter().map(|l| l.kind).collect::<Vec<_>>(),
        vec![LossKind::EpochChanged]
    );

    let stands = lost_state::suspend(&sale.db, &sale.redis, &losses[0]).await.unwrap();
    assert!(!stands, "the suspension of a whole activity stood");
    paused_and_whole(&sale, "after the take-back").await;
    // And the sale opens.
    start(&sale).await;
}

#[tokio::test]
async fn hot_takes_back_a_suspension_of_its_own_preheat_but_not_of_another() {
    let sale = paused_sale().await;
    let old = lost_state::marks(&sale.db).await.unwrap()[&sale.activity].epoch.clone();
    hot(&sale).await;
    let new = lost_state::marks(&sale.db).await.unwrap()[&sale.activity].epoch.clone();
    assert_ne!(old, new);
    // Where `hot` stands between its preheat and its stamp: Redis holds the new epoch, MySQL
    // the old one. A whole check there suspends, and its second look, also before the stamp,
    // lets the suspension stand.
    set_mark_epoch(&sale, &old).await;
    let losses = lost_state::inspect_all(&sale.db, &sale.redis, &lost_state::marks(&sale.db).await.unwrap())
        .await
        .unwrap();
    assert_eq!(losses.len(), 1, "{losses:?}");
    assert!(lost_state::suspend(&sale.db, &sale.redis, &losses[0]).await.unwrap());
    assert_eq!(redis_status(&sale).await.0.as_deref(), Some("lost"));
    set_mark_epoch(&sale, &new).await;

    // A suspension of another preheat's state (an older snapshot) is not `hot`'s to take back.
    lost_state::take_back_for_hot(&sale.redis, sale.activity, &old, "paused")
        .await
        .unwrap();
    assert_eq!(redis_status(&sale).await.0.as_deref(), Some("lost"));
    // Its own is.
    lost_state::take_back_for_hot(&sale.redis, sale.activity, &new, "paused")
        .await
        .unwrap();
    assert_eq!(redis_status(&sale).await, (Some("paused".into()), None));
    start(&sale).await;
}

/// Checks as `serve`'s guard makes them, back to back, while `hot` runs again and again: after
/// every `hot` the activity is whole and not suspended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_racing_repeated_hots_leave_no_suspension_behind() {
    let sale = Arc::new(paused_sale().await);
    let looking = Arc::new(AtomicBool::new(true));
    let suspended = Arc::new(AtomicUsize::new(0));
    let checks = Arc::new(AtomicUsize::new(0));
    let checker = {
        let (sale, looking, suspended, checks) = (sale.clone(), looking.clone(), suspended.clone(), checks.clone());
        tokio::spawn(async move {
            while looking.load(Ordering::Relaxed) {
                let marks = lost_state::marks(&sale.db).await.unwrap();
                for loss in lost_state::inspect_all(&sale.db, &sale.redis, &marks).await.unwrap() {
                    lost_state::suspend(&sale.db, &sale.redis, &loss).await.unwrap();
                    suspended.fetch_add(1, Ordering::Relaxed);
                }
                checks.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    for round in 0..30 {
        hot(&sale).await;
        // Once a whole check has begun after this `hot`, every check that raced it is done.
        let after = checks.load(Ordering::Relaxed) + 2;
        while checks.load(Ordering::Relaxed) < after {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        assert_eq!(
            redis_status(&sale).await,
            (Some("paused".into()), None),
            "suspended after hot {round}; mark {:?}, Redis {:?}",
            lost_state::marks(&sale.db).await.unwrap()[&sale.activity].epoch,
            sale.redis
                .conn()
                .hgetall::<_, HashMap<String, String>>(sale.redis.keys().activity(sale.activity))
                .await
                .unwrap()
        );
        gates_hold(&sale, "paused", &format!("after hot {round}")).await;
    }
    looking.store(false, Ordering::Relaxed);
    checker.await.unwrap();
    eprintln!(
        "{} suspension(s) written while hot ran",
        suspended.load(Ordering::Relaxed)
    );
    paused_and_whole(&sale, "after the last hot").await;
    let mut conn = sale.redis.conn();
    let epoch: String = conn
        .hget(sale.redis.keys().activity(sale.activity), "epoch")
        .await
        .unwrap();
    assert_eq!(lost_state::marks(&sale.db).await.unwrap()[&sale.activity].epoch, epoch);
    start(&sale).await;
}

/// `hot` whose stamp waits (another session holds the mark's row, as a slow MySQL would): a
/// check meanwhile reads the old mark twice and its suspension stands, until `hot` stamps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_takes_back_a_suspension_written_before_its_stamp() {
    let sale = Arc::new(paused_sale().await);
    let holder = hold_mark(&sale).await;
    let hot_run = {
        let sale = sale.clone();
        tokio::spawn(async move { hot(&sale).await })
    };
    // Waiting for the lock is the only way its stamp can be running: Redis is preheated.
    wait_until_blocked(&sale, "INSERT INTO redis_watermarks%", "hot never reached its stamp").await;
    let marks = lost_state::marks(&sale.db).await.unwrap();
    let losses = lost_state::inspect_all(&sale.db, &sale.redis, &marks).await.unwrap();
    assert_eq!(
        losses.iter().map(|l| l.kind).collect::<Vec<_>>(),
        vec![LossKind::EpochChanged]
    );
    assert!(lost_state::suspend(&sale.db, &sale.redis, &losses[0]).await.unwrap());
    let status: Option<String> = sale
        .redis
        .conn()
        .hget(sale.redis.keys().activity(sale.activity), "status")
        .await
        .unwrap();
    assert_eq!(status.as_deref(), Some("lost"));

    holder.rollback().await.unwrap();
    hot_run.await.unwrap();
    paused_and_whole(&sale, "after hot").await;
    start(&sale).await;
}

/// The status change numbers keep rising across preheats: a copy of a change made before
/// `hot` that reaches a bucket after it (a slow `start`'s fan-out, say) is older than what
/// `hot` wrote, and changes nothing. Were the numbers to start again at each preheat, the
/// bucket would sell on a status the activity no longer has.
#[tokio::test]
async fn a_late_copy_of_a_change_made_before_hot_changes_no_gate() {
    let sale = paused_sale().await;
    let before = gate_ver(&sale).await;
    assert!(before > 0, "stop is a numbered change");
    hot(&sale).await;
    assert!(gate_ver(&sale).await > before, "hot lowered the change number");
    gates_hold(&sale, "paused", "after hot").await;
    for late in [before, before - 1] {
        seckill::buckets::gate::status(&sale.redis, sale.activity, late, "online", 0, i64::MAX)
            .await
            .unwrap();
        gates_hold(&sale, "paused", &format!("after a late copy of change {late}")).await;
    }
    // The bucket decides a buyer of the sharded product as the activity does: paused.
    let (product, user) = (sale.products[1], "late-copy-buyer".to_string());
    let bucket = quota::bucket_of_user(&user, SHARDS);
    let purchase = Purchase {
        product_id: product,
        user_id: user,
        quantity: 1,
        token: String::new(),
    };
    let answer = quota::buy_in(
        &sale.redis,
        sale.activity,
        bucket,
        0,
        &[purchase],
        &HashMap::from([(product, SHARDS)]),
        true,
    )
    .await
    .unwrap();
    assert_eq!(answer.bought, vec![Bought::Refused(Outcome::Paused)]);
    start(&sale).await;
}
