//! The reservation stream's own API: finding a queued reservation by its order number, and a
//! consumer group that disappeared (Redis's NOGROUP) being created again by the consumer,
//! never with the stream itself.

use std::time::Duration;

use redis::AsyncCommands;
use rust_decimal::Decimal;
use seckill::reservation::{self, field};

use crate::helpers::{phone, users, TestApp};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_decodes_a_queued_reservation() {
    let f = TestApp::builder().pipeline().sale(vec![phone(10, 5)]).build().await;
    let before = chrono::Utc::now().timestamp_millis();
    let nos = f.reserve(["alice".to_string()], 3).await;
    let r = reservation::lookup(&f.redis, &nos[0])
        .await
        .unwrap()
        .expect("the queued reservation is in the stream");
    assert_eq!(r.order_no, nos[0]);
    assert_eq!((r.activity_id, r.product_id), (f.activity, f.product));
    assert_eq!((r.user_id.as_str(), r.quantity), ("alice", 3));
    assert_eq!(r.price, Decimal::new(19_99, 2));
    // Redis's clock, which may run a little apart from this process's.
    assert!((r.reserved_at.timestamp_millis() - before).abs() < 60_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_misses_unknown_numbers_and_names_unreadable_entries() {
    let f = TestApp::builder().pipeline().sale(vec![phone(10, 5)]).build().await;
    let a = f.activity;
    for unknown in [format!("{a}-1-0"), format!("{}-1-0", a + 1000), "nonsense".into()] {
        assert_eq!(
            reservation::lookup(&f.redis, &unknown).await.unwrap(),
            None,
            "{unknown}"
        );
    }
    let mut conn = f.redis.conn();
    let id: String = conn
        .xadd(
            f.redis.keys().orders_stream(a),
            "*",
            &[
                (field::ACTIVITY, a.to_string()),
                (field::RESERVED_MS, "1".to_string()),
                (field::PRODUCT, f.product.to_string()),
                (field::USER, "alice".to_string()),
                (field::QUANTITY, "0".to_string()),
                (field::PRICE, "1".to_string()),
            ],
        )
        .await
        .unwrap();
    let err = reservation::lookup(&f.redis, &seckill::keys::order_no(a, &id))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("unreadable") && err.contains("\"quantity\" out of range"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_creates_a_destroyed_group_again() {
    let f = TestApp::builder().pipeline().sale(vec![phone(100, 1)]).build().await;
    assert_eq!(f.reserve(users("u", 20), 1).await.len(), 20);
    let mut conn = f.redis.conn();
    let destroyed: u64 = conn
        .xgroup_destroy(f.redis.keys().orders_stream(f.activity), &f.config.consumer.group)
        .await
        .unwrap();
    assert_eq!(destroyed, 1);
    let report = tokio::time::timeout(Duration::from_secs(60), f.drain())
        .await
        .expect("the consumer did not get past the missing group");
    assert_eq!((report.persisted, report.retries), (20, 0));
    assert_eq!(f.orders().await, 20);
    assert_eq!(f.backlog().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_finds_every_purchase_of_a_batched_entry_by_its_own_number() {
    let f = TestApp::builder().pipeline().sale(vec![phone(10, 5)]).build().await;
    let nos = f.reserve(users("b", 3), 1).await;
    let entry = seckill::keys::parse_order_no(&nos[0]).unwrap().1.to_string();
    assert_eq!(
        nos,
        vec![
            seckill::keys::order_no(f.activity, &entry),
            format!("{}-{entry}-1", f.activity),
            format!("{}-{entry}-2", f.activity)
        ],
        "one script call, one entry"
    );
    for (i, no) in nos.iter().enumerate() {
        let r = reservation::lookup(&f.redis, no).await.unwrap().expect("queued");
        assert_eq!((r.order_no.as_str(), r.user_id.clone()), (no.as_str(), format!("b{i}")));
    }
    assert_eq!(
        reservation::lookup(&f.redis, &format!("{}-{entry}-3", f.activity))
            .await
            .unwrap(),
        None,
        "past the entry's last purchase"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpersisted_is_what_the_group_has_not_acknowledged_and_the_dead_letters() {
    let f = TestApp::builder().pipeline().sale(vec![phone(100, 5)]).build().await;
    let group = f.config.consumer.group.clone();
    f.reserve(users("early", 3), 1).await;
    f.drain().await;
    assert_eq!(
        reservation::unpersisted(&f.redis, f.activity, &group).await.unwrap(),
        vec![]
    );

    // Three entries: two purchases, one, one.
    let mut late = f.reserve(users("late", 2), 1).await;
    late.extend(f.reserve(users("later", 1), 1).await);
    late.extend(f.reserve(users("last", 1), 1).await);
    // The first two entries are delivered (pending), the last is not; the first is then buried
    // whole.
    let consumer = reservation::stream::GroupConsumer {
        redis: &f.redis,
        group: &group,
        name: "t",
    };
    let stream = f.redis.keys().orders_stream(f.activity);
    let read = consumer.read_new(&[stream], 2, None).await.unwrap();
    let delivered = read.into_iter().next().unwrap().1;
    assert_eq!(delivered.len(), 2);
    reservation::dlq::bury(&f.redis, f.activity, &group, "t", &delivered[0], "poisoned", 3)
        .await
        .unwrap();

    let found = reservation::unpersisted(&f.redis, f.activity, &group).await.unwrap();
    let nos: Vec<&str> = found.iter().map(|r| r.order_no.as_str()).collect();
    assert_eq!(nos, vec![&late[2], &late[3], &late[0], &late[1]]);
    // The dead letter comes back as the reservations it holds.
    assert_eq!(
        found[3],
        reservation::lookup(&f.redis, &late[1]).await.unwrap().unwrap()
    );
    assert_eq!(found[3].user_id, "late1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restoring_the_group_never_brings_a_flushed_stream_back() {
    let f = TestApp::builder().pipeline().sale(vec![phone(100, 1)]).build().await;
    assert_eq!(f.reserve(users("u", 5), 1).await.len(), 5);
    f.drain().await;
    let group = f.config.consumer.group.clone();
    let stream = f.redis.keys().orders_stream(f.activity);
    let mut conn = f.redis.conn();

    // A live stream that lost its group gets it back, reading from its first entry.
    let destroyed: u64 = conn.xgroup_destroy(&stream, &group).await.unwrap();
    assert_eq!(destroyed, 1);
    reservation::restore_group(&f.redis, f.activity, &group).await.unwrap();
    let info: redis::streams::StreamInfoGroupsReply = conn.xinfo_groups(&stream).await.unwrap();
    assert_eq!(
        info.groups.iter().map(|g| g.name.as_str()).collect::<Vec<_>>(),
        [group.as_str()]
    );
    // Once there, restoring it again changes nothing.
    reservation::restore_group(&f.redis, f.activity, &group).await.unwrap();

    // What a consumer does when `flush` removes the stream between its listing the streams
    // and reading them: the stream stays gone (the group's creation with MKSTREAM, which
    // `hot` uses, would have made it an empty key again).
    f.cli(&["flush", "-y", "--force", &f.activity.to_string()]).await.ok();
    assert!(!conn.exists::<_, bool>(&stream).await.unwrap());
    reservation::restore_group(&f.redis, f.activity, &group).await.unwrap();
    assert!(!conn.exists::<_, bool>(&stream).await.unwrap());
    assert!(
        f.activity_keys(f.activity).await.is_empty(),
        "{:?}",
        f.activity_keys(f.activity).await
    );

    // A key of another type under the stream's name is an error, not a silent success.
    let _: () = conn.set(&stream, "not a stream").await.unwrap();
    let err = reservation::restore_group(&f.redis, f.activity, &group)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("WRONGTYPE"), "{err}");
}
