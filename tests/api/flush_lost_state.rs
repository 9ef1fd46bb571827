//! `flush` racing the lost-state check (`serve`'s guard every half second, `reconcile`): the
//! check reads MySQL's marks, then Redis, and suspends an activity whose keys it finds gone by
//! writing the activity hash. However the two interleave, no key of the flushed activity is
//! left on any node of a three-primary cluster. And a flush that fails before its keys are gone
//! leaves them watched.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;

use redis::AsyncCommands;
use seckill::lost_state::{self, LossKind, Mark};

use crate::cluster::NO_DISK;
use crate::helpers::{scan_keys, spec, KillOnDrop, TestApp};
use crate::lost_state_hot::{hold_mark, wait_until_blocked};
use crate::redis_servers::{OwnCluster, OwnRedis};

/// A preheated sale on the Redis at `redis_url`, ended (so `flush` needs no `--force`).
async fn ended_sale(redis_url: String) -> TestApp {
    let sale = TestApp::builder()
        .redis(redis_url)
        .sale(vec![spec(10, 1, 1)])
        .build()
        .await;
    seckill::ops::stop(&sale.db, &sale.redis, sale.activity, true)
        .await
        .unwrap();
    sale
}

/// The keys of the sale's activity on each node that holds any.
async fn left_on_nodes(cluster: &OwnCluster, sale: &TestApp) -> Vec<(u16, BTreeSet<String>)> {
    let pattern = sale.redis.keys().activity_pattern(sale.activity);
    let mut left = Vec::new();
    for (port, mut conn) in cluster.node_conns().await {
        let keys = scan_keys(&mut conn, &pattern).await;
        if !keys.is_empty() {
            left.push((port, keys));
        }
    }
    left
}

/// Looks at Redis against `marks` (read from MySQL earlier) and suspends every activity found
/// lost, as the guard does; each loss's kind and whether its suspension stands.
async fn look(sale: &TestApp, marks: &BTreeMap<u64, Mark>) -> Vec<(LossKind, bool)> {
    let losses = lost_state::inspect_all(&sale.db, &sale.redis, marks).await.unwrap();
    let mut looked = Vec::new();
    for loss in losses {
        let stands = lost_state::suspend(&sale.db, &sale.redis, &loss).await.unwrap();
        looked.push((loss.kind, stands));
    }
    looked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspension_by_a_look_begun_before_flush_does_not_outlive_it() {
    let cluster = OwnCluster::start(&NO_DISK).await;
    let sale = ended_sale(cluster.url()).await;
    // The look reads MySQL's marks first: the activity is expected in Redis.
    let marks = lost_state::marks(&sale.db).await.unwrap();
    assert!(marks.contains_key(&sale.activity), "{marks:?}");

    seckill::ops::flush(&sale.db, &sale.redis, &sale.config.consumer.group, sale.activity, false)
        .await
        .unwrap();
    assert_eq!(left_on_nodes(&cluster, &sale).await, vec![]);

    // Then Redis, where the keys are gone: a vanished activity, suspended.
    let looked = look(&sale, &marks).await;
    assert_eq!(
        left_on_nodes(&cluster, &sale).await,
        vec![],
        "the suspension wrote the flushed activity's hash again"
    );
    assert_eq!(
        looked,
        vec![(LossKind::Vanished, false)],
        "the suspension is taken back"
    );
    let marks = lost_state::marks(&sale.db).await.unwrap();
    assert_eq!(look(&sale, &marks).await, vec![], "the next look expects nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_look_while_flush_is_under_way_leaves_no_key_behind() {
    let cluster = OwnCluster::start(&NO_DISK).await;
    let sale = ended_sale(cluster.url()).await;
    // Another session holds the activity's mark, so `seckill flush` waits at its MySQL step
    // (reading the mark under a row lock before it deletes it).
    let holder = hold_mark(&sale).await;
    let flush = KillOnDrop(
        sale.command(&["flush", "-y", &sale.activity.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // Waiting for the lock is the only way its locking read of the mark can be running.
    wait_until_blocked(
        &sale,
        "SELECT epoch, persist_seq FROM redis_watermarks%FOR UPDATE",
        "flush never reached the mark",
    )
    .await;

    // A whole look meanwhile: whatever it finds, it may suspend the activity.
    let marks = lost_state::marks(&sale.db).await.unwrap();
    assert!(marks.contains_key(&sale.activity), "{marks:?}");
    look(&sale, &marks).await;
    holder.rollback().await.unwrap();
    let out = tokio::task::spawn_blocking(move || flush.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        left_on_nodes(&cluster, &sale).await,
        vec![],
        "a suspension written while flush was under way outlived it"
    );
}

#[tokio::test]
async fn a_flush_that_fails_before_its_keys_are_gone_leaves_them_watched() {
    let own = OwnRedis::start().await;
    let sale = ended_sale(own.url()).await;
    let mark = lost_state::marks(&sale.db).await.unwrap()[&sale.activity].clone();
    let mut admin = redis::Client::open(own.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let pattern = sale.redis.keys().activity_pattern(sale.activity);
    let keys = scan_keys(&mut admin, &pattern).await;
    assert!(keys.contains(&sale.redis.keys().activity(sale.activity)), "{keys:?}");
    // A Redis user that may run everything but UNLINK: the flush fails at its first removal,
    // after it forgot MySQL's mark, with every key still in Redis.
    let () = redis::cmd("ACL")
        .arg(&["SETUSER", "no-unlink", "on", ">secret", "~*", "&*", "+@all", "-unlink"])
        .query_async(&mut admin)
        .await
        .unwrap();
    let mut config = sale.config.clone();
    config.redis.url = format!("redis://no-unlink:secret@127.0.0.1:{}/0", own.port);
    let restricted = seckill::redis_client::RedisClient::connect(&config).await.unwrap();

    let failed = seckill::ops::flush(&sale.db, &restricted, &sale.config.consumer.group, sale.activity, false)
        .await
        .unwrap_err();
    assert!(
        failed
            .to_string()
            .contains("no permissions to run the 'unlink' command"),
        "{failed}"
    );
    assert_eq!(
        scan_keys(&mut admin, &pattern).await,
        keys,
        "the failed flush removed keys"
    );
    assert_eq!(
        lost_state::marks(&sale.db).await.unwrap().get(&sale.activity),
        Some(&mark),
        "the failed flush left the activity's keys unwatched"
    );
    // Watched: a Redis that lost the activity is noticed.
    let () = admin.del(sale.redis.keys().activity(sale.activity)).await.unwrap();
    let loss = lost_state::inspect(&sale.db, &sale.redis, sale.activity).await.unwrap();
    assert_eq!(loss.map(|loss| loss.kind), Some(LossKind::Vanished));

    // Flushed again by a user who may: nothing left, nothing expected.
    seckill::ops::flush(&sale.db, &sale.redis, &sale.config.consumer.group, sale.activity, false)
        .await
        .unwrap();
    assert_eq!(scan_keys(&mut admin, &pattern).await, BTreeSet::new());
    assert!(!lost_state::marks(&sale.db).await.unwrap().contains_key(&sale.activity));
}
