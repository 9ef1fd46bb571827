//! A consumer that cannot reach MySQL must let go of its entries, so a healthy consumer
//! persists them within `consumer.claim_idle_ms` (plus its read loop).

use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::helpers::{mysql_server_url, phone, random_suffix, users, KillOnDrop, TestApp};

const CLAIM_IDLE_MS: u64 = 1_000;

/// Entries of the activity's stream pending for `consumer`.
async fn held_by(f: &TestApp, consumer: &str) -> u64 {
    let mut conn = f.redis.conn();
    let summary: redis::Value = redis::cmd("XPENDING")
        .arg(f.redis.keys().orders_stream(f.activity))
        .arg(&f.config.consumer.group)
        .query_async(&mut conn)
        .await
        .unwrap();
    let redis::Value::Array(parts) = summary else { return 0 };
    let Some(redis::Value::Array(owners)) = parts.get(3) else {
        return 0;
    };
    owners
        .iter()
        .filter_map(|o| match o {
            redis::Value::Array(pair) => Some(pair),
            _ => None,
        })
        .filter(|pair| matches!(&pair[0], redis::Value::BulkString(b) if b == consumer.as_bytes()))
        .filter_map(|pair| match &pair[1] {
            redis::Value::BulkString(n) => String::from_utf8_lossy(n).parse::<u64>().ok(),
            _ => None,
        })
        .sum()
}

fn consumer(config: &std::path::Path, name: &str, database_url: Option<&str>) -> KillOnDrop {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_seckill"));
    cmd.arg("--config")
        .arg(config)
        .args(["consumer", "--name", name, "--batch", "100"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(url) = database_url {
        cmd.env("SECKILL_DATABASE_URL", url);
    }
    KillOnDrop(cmd.spawn().unwrap())
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

fn stop(mut child: KillOnDrop) {
    unsafe { libc_kill(child.id() as i32, 15) };
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_without_mysql_lets_a_healthy_one_persist_its_batch() {
    let f = TestApp::builder().pipeline().sale(vec![phone(200, 1)]).build().await;
    let mut config = f.config.clone();
    config.consumer.claim_idle_ms = CLAIM_IDLE_MS;
    config.consumer.retry_base_ms = 50;
    config.consumer.retry_max_ms = 300;
    let path = f.write_config("handover.yaml", &config);

    // One script call each, so one stream entry each: 100 entries to hold and hand over.
    for user in users("h", 100) {
        f.reserve([user], 1).await;
    }
    // A database that does not exist on the right server: connecting fails on every try.
    let wrong = format!("{}/seckill_missing_{}", mysql_server_url(), random_suffix());
    let broken = consumer(&path, "broken", Some(&wrong));
    let deadline = Instant::now() + Duration::from_secs(20);
    while held_by(&f, "broken").await < 100 {
        assert!(Instant::now() < deadline, "the broken consumer never took the entries");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let started = Instant::now();
    let healthy = consumer(&path, "healthy", None);
    let limit = Duration::from_millis(CLAIM_IDLE_MS) + Duration::from_secs(4);
    let mut orders = 0;
    while started.elapsed() < limit + Duration::from_secs(6) {
        orders = f.orders().await;
        if orders == 100 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = started.elapsed();
    let still_broken = held_by(&f, "broken").await;
    stop(healthy);
    stop(broken);
    eprintln!(
        "healthy consumer: {orders} of 100 orders after {took:?}; {still_broken} entries still held by the broken one"
    );
    assert_eq!(
        orders, 100,
        "after {took:?}, {still_broken} still held by the broken consumer"
    );
    assert!(took <= limit, "took {took:?}, more than claim_idle_ms + 4 s");
    assert_eq!(f.backlog().await, 0);
}

/// A TCP proxy to the test MariaDB on a free port: while `up` is false it accepts and drops
/// every connection (MySQL unreachable), then it forwards them. Returns its port.
async fn mysql_proxy(up: Arc<AtomicBool>) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = mysql_server_url();
    let target = server
        .rsplit('@')
        .next()
        .unwrap()
        .trim_start_matches("mysql://")
        .to_string();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            if !up.load(Ordering::SeqCst) {
                continue;
            }
            let target = target.clone();
            tokio::spawn(async move {
                if let Ok(mut server) = tokio::net::TcpStream::connect(&target).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
    port
}

/// The other side of letting go: when MySQL comes back, a lone consumer takes back at once
/// what it let go of (nobody else reclaimed it), rather than after `claim_idle_ms`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_consumer_persists_its_batch_as_soon_as_mysql_is_back() {
    let f = TestApp::builder().pipeline().sale(vec![phone(100, 1)]).build().await;
    let mut config = f.config.clone();
    config.consumer.claim_idle_ms = 60_000;
    config.consumer.retry_base_ms = 50;
    config.consumer.retry_max_ms = 300;
    let path = f.write_config("lone.yaml", &config);
    for user in users("l", 20) {
        f.reserve([user], 1).await;
    }

    let up = Arc::new(AtomicBool::new(false));
    let port = mysql_proxy(up.clone()).await;
    let url = &f.config.database.url;
    let (user, database) = (url.rsplit_once('@').unwrap().0, url.rsplit_once('/').unwrap().1);
    let proxied = format!("{user}@127.0.0.1:{port}/{database}");
    let lone = consumer(&path, "lone", Some(&proxied));
    let deadline = Instant::now() + Duration::from_secs(20);
    while held_by(&f, "lone").await < 20 {
        assert!(Instant::now() < deadline, "the consumer never took the entries");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(f.orders().await, 0);

    up.store(true, Ordering::SeqCst);
    let started = Instant::now();
    while f.orders().await < 20 && started.elapsed() < Duration::from_secs(15) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = started.elapsed();
    let orders = f.orders().await;
    stop(lone);
    eprintln!("MySQL back: {orders} of 20 orders after {took:?} (claim_idle_ms 60000)");
    assert_eq!(orders, 20, "after {took:?}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert_eq!(f.backlog().await, 0);
}

/// Polls until `orders` rows exist; how long that took from `since`.
async fn orders_reach(f: &TestApp, orders: i64, since: Instant) -> Duration {
    while f.count("orders").await < orders {
        assert!(since.elapsed() < Duration::from_secs(30), "{orders} orders never came");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    since.elapsed()
}

/// `consumer.linger_ms`: a backlog is read in full batches without waiting, and after a read
/// that found less than a batch the consumer waits before reading again (so entries gather
/// into fewer batches: fewer writes for Redis to fsync, fewer MySQL commits), losing nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_lingers_after_a_short_read_but_never_through_a_backlog() {
    const LINGER: Duration = Duration::from_millis(3_000);
    let f = TestApp::builder()
        .pipeline()
        .tune(|c| c.consumer.linger_ms = LINGER.as_millis() as u64)
        .sale(vec![phone(100, 1)])
        .build()
        .await;
    // Six entries (one per reserve call), two per batch: three full reads.
    for u in users("backlog", 6) {
        f.reserve([u], 1).await;
    }
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let config = f.config.clone();
    let consumer = tokio::spawn(async move {
        let opts = seckill::consumer::ConsumerOptions {
            name: "lingerer".into(),
            batch: 2,
            once: false,
        };
        seckill::consumer::run(&config, opts, async move {
            let _ = stopped.await;
        })
        .await
    });
    let started = Instant::now();
    let took = orders_reach(&f, 6, started).await;
    // Lingering after any of the first two reads would take at least two lingers.
    assert!(took < 2 * LINGER, "the backlog took {took:?}");
    // A short read (one entry of two) ...
    f.reserve(["alone".to_string()], 1).await;
    let first = Instant::now();
    orders_reach(&f, 7, first).await;
    // ... makes the consumer wait before reading the next one.
    f.reserve(["late".to_string()], 1).await;
    let waited = orders_reach(&f, 8, first).await;
    assert!(
        waited >= LINGER - Duration::from_millis(300),
        "the next entry was read {waited:?} after the short read"
    );
    let _ = stop.send(());
    let report = consumer.await.unwrap().unwrap();
    assert_eq!((report.persisted, report.batches), (8, 5), "{report:?}");
}
