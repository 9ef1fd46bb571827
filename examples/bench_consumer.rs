//! Consumer throughput bench: reserves N units (default 200,000) through
//! `seckill::buy::reserve` into a fresh database and key prefix, then times
//! `seckill consumer --once` (the release binary) draining them into MariaDB.
//! Servers: the application's own (`config.yaml`, overridden by `SECKILL_DATABASE_URL` and
//! `SECKILL_REDIS_URL`), with a database and key prefix of the run's own.
//!
//! cargo build --release --bin seckill && cargo run --release --example bench_consumer [N]

use std::time::Instant;

use chrono::{Duration, Utc};
use rust_decimal::Decimal;
use seckill::buy::{self, Purchase};
use seckill::ops::catalog::{self, NewActivity, NewProduct};
use seckill::{Config, Db, RedisClient};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(200_000);
    let tag = std::process::id();
    let app = Config::load(std::path::Path::new("config.yaml"), false)?;
    // The server part of the URL: without its database and options.
    let server = app.database.url.split('?').next().unwrap_or_default();
    let authority = server.find("://").map_or(0, |scheme| scheme + 3);
    let server = &server[..server[authority..]
        .find('/')
        .map_or(server.len(), |slash| authority + slash)];
    let yaml = format!(
        "database:\n  url: {server}/seckill_bench_{tag}\nredis:\n  url: {}\n  key_prefix: bench{tag}\n",
        app.redis.url
    );
    let path = std::env::temp_dir().join(format!("seckill-bench-{tag}.yaml"));
    std::fs::write(&path, &yaml)?;
    let config = Config::parse(&yaml).map_err(anyhow::Error::msg)?;
    seckill::db::migrate(&config).await?;
    let db = Db::connect(&config).await?;
    let redis = RedisClient::connect(&config).await?;
    let activity = catalog::create_activity(
        &db,
        &NewActivity {
            name: "bench".into(),
            start_at: Utc::now() - Duration::minutes(1),
            end_at: Utc::now() + Duration::hours(1),
            hot: Default::default(),
        },
    )
    .await?
    .id;
    let product = catalog::add_product(
        &db,
        &NewProduct {
            activity_id: activity,
            name: "unit".into(),
            price: Decimal::new(999, 2),
            stock: n as u32,
            per_user_limit: 1,
            max_per_order: None,
            shards: None,
        },
    )
    .await?
    .id;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    seckill::ops::hot(&db, &redis, &config.consumer.group, activity).await?;
    seckill::ops::start(&db, &redis, activity).await?;

    let started = Instant::now();
    let mut conn = redis.conn();
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let mut pipe = redis::pipe();
        for i in chunk {
            pipe.set(redis.keys().token(activity, &format!("u{i}")), "t").ignore();
        }
        let () = pipe.query_async(&mut conn).await?;
        let purchases: Vec<Purchase> = chunk
            .iter()
            .map(|i| Purchase {
                product_id: product,
                user_id: format!("u{i}"),
                quantity: 1,
                token: "t".into(),
            })
            .collect();
        buy::reserve(&redis, activity, &purchases).await?;
    }
    eprintln!("reserved {n} units in {:.2}s", started.elapsed().as_secs_f64());

    let bin = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/seckill");
    let started = Instant::now();
    let mut consumer = std::process::Command::new(&bin);
    // The run's own file only: an exported SECKILL_KEY_PREFIX would point it elsewhere.
    for name in ["SECKILL_DATABASE_URL", "SECKILL_REDIS_URL", "SECKILL_KEY_PREFIX"] {
        consumer.env_remove(name);
    }
    let status = consumer
        .arg("--config")
        .arg(&path)
        .args(["consumer", "--once"])
        .status()?;
    let secs = started.elapsed().as_secs_f64();
    let orders: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM orders")
        .fetch_one(db.pool())
        .await?;
    println!(
        "consumer --once: {status}; {orders} orders in {secs:.2}s = {:.0} orders/s (process wall time incl. start-up)",
        orders as f64 / secs
    );

    sqlx::query(&format!("DROP DATABASE seckill_bench_{tag}"))
        .execute(db.pool())
        .await?;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("bench{tag}:*"))
        .query_async(&mut conn)
        .await?;
    if !keys.is_empty() {
        let () = redis::cmd("DEL").arg(keys).query_async(&mut conn).await?;
    }
    let _ = std::fs::remove_file(path);
    Ok(())
}
