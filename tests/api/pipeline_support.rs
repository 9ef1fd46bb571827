//! Fixture for the pipeline tests: a [`TestApp`] (own database and key prefix, removed on
//! drop) with one online activity of one product, and a config file for the binary.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use chrono::{Duration as ChronoDuration, Utc};
use rust_decimal::Decimal;
use seckill::buy::{self, Purchase};
use seckill::ops::catalog::{self, NewActivity, NewProduct};
use seckill::{Config, Db, RedisClient};

use crate::helpers::{TestApp, SECKILL_ENV};

pub struct Fixture {
    pub config: Config,
    pub config_path: PathBuf,
    pub db: Db,
    pub redis: RedisClient,
    pub activity: u64,
    pub product: u64,
    /// Owns the database, key prefix and config file; dropping it removes them.
    _app: TestApp,
}

impl Fixture {
    /// A sale of `stock` units, `limit` per user, online now.
    pub async fn new(stock: u32, limit: u32) -> Fixture {
        Self::new_with(stock, limit, |_| {}).await
    }

    /// [`Fixture::new`] with `tune` adjusting the configuration last (another Redis, timeouts).
    pub async fn new_with(stock: u32, limit: u32, tune: impl FnOnce(&mut Config)) -> Fixture {
        let app = TestApp::with_config(|c| {
            c.database.max_connections = 8;
            c.consumer.claim_idle_ms = 300;
            c.consumer.block_ms = 200;
            c.consumer.max_deliveries = 3;
            c.consumer.retry_base_ms = 50;
            c.consumer.retry_max_ms = 300;
            c.orders.in_flight_grace_secs = 60;
            tune(c);
        })
        .await;
        let config_path = app.write_file("config.yaml", &serde_yaml::to_string(&app.config).unwrap());
        let (config, db, redis) = (app.config.clone(), app.db.clone(), app.redis.clone());
        let activity = catalog::create_activity(
            &db,
            &NewActivity {
                name: "flash".into(),
                start_at: Utc::now() - ChronoDuration::minutes(1),
                end_at: Utc::now() + ChronoDuration::hours(1),
            },
        )
        .await
        .unwrap()
        .id;
        let product = catalog::add_product(
            &db,
            &NewProduct {
                activity_id: activity,
                name: "phone".into(),
                price: Decimal::new(19_99, 2),
                stock,
                per_user_limit: limit,
                max_per_order: None,
            },
        )
        .await
        .unwrap()
        .id;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        seckill::ops::hot(&db, &redis, &config.consumer.group, activity)
            .await
            .unwrap();
        seckill::ops::start(&db, &redis, activity).await.unwrap();
        Fixture {
            config,
            config_path,
            db,
            redis,
            activity,
            product,
            _app: app,
        }
    }

    /// Registers tokens and reserves `qty` units for each of `users`; returns the order numbers.
    pub async fn reserve(&self, users: impl IntoIterator<Item = String>, qty: u32) -> Vec<String> {
        let users: Vec<String> = users.into_iter().collect();
        let mut conn = self.redis.conn();
        let mut out = Vec::new();
        for chunk in users.chunks(500) {
            let mut pipe = redis::pipe();
            for u in chunk {
                pipe.set(self.redis.keys().token(self.activity, u), format!("tok-{u}"))
                    .ignore();
            }
            let () = pipe.query_async(&mut conn).await.unwrap();
            let purchases: Vec<Purchase> = chunk
                .iter()
                .map(|u| Purchase {
                    product_id: self.product,
                    user_id: u.clone(),
                    quantity: qty,
                    token: format!("tok-{u}"),
                })
                .collect();
            for v in buy::reserve(&self.redis, self.activity, &purchases).await.unwrap() {
                out.extend(v.order_no);
            }
        }
        out
    }

    /// The binary with this fixture's config, and nothing from the caller's `SECKILL_*`
    /// variables (which would override the file).
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_seckill"));
        for name in SECKILL_ENV {
            c.env_remove(name);
        }
        c.arg("--config")
            .arg(&self.config_path)
            .args(args)
            .env("RUST_LOG", "warn");
        c
    }

    /// Waits (up to 20 s) until a `seckill serve` at `base` answers `/health`.
    pub async fn wait_for_serve(http: &reqwest::Client, base: &str) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while http.get(format!("{base}/health")).send().await.is_err() {
            assert!(std::time::Instant::now() < deadline, "serve did not come up");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// `user`'s token for the fixture's activity, from `POST /api/v1/token` of the server at `base`.
    pub async fn issue_token(&self, http: &reqwest::Client, base: &str, user: &str) -> String {
        let issued: serde_json::Value = http
            .post(format!("{base}/api/v1/token"))
            .json(&serde_json::json!({"activity_id": self.activity, "user_id": user}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        issued["token"].as_str().expect("token").to_string()
    }

    /// Runs the binary to completion; returns (exit code, stdout).
    pub fn run(&self, args: &[&str]) -> (i32, String) {
        let out = self.command(args).stderr(Stdio::inherit()).output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    pub fn spawn(&self, args: &[&str]) -> Child {
        self.command(args).stdout(Stdio::null()).spawn().unwrap()
    }

    pub async fn scalar(&self, sql: &str) -> i64 {
        sqlx::query_scalar::<_, i64>(sql)
            .bind(self.activity)
            .fetch_one(self.db.pool())
            .await
            .unwrap()
    }

    /// Orders of the activity.
    pub async fn orders(&self) -> i64 {
        self.scalar("SELECT COUNT(*) FROM orders WHERE activity_id = ?").await
    }

    /// Reservations not yet acknowledged.
    pub async fn backlog(&self) -> u64 {
        seckill::reservation::backlog(&self.redis, self.activity, &self.config.consumer.group)
            .await
            .unwrap()
    }

    /// Redis stock, sold, total.
    pub async fn redis_counters(&self) -> (i64, i64, i64) {
        let mut conn = self.redis.conn();
        let (a, b, c): (i64, i64, i64) = redis::cmd("HMGET")
            .arg(self.redis.keys().product(self.activity, self.product))
            .arg("stock")
            .arg("sold")
            .arg("total")
            .query_async(&mut conn)
            .await
            .unwrap();
        (a, b, c)
    }

    pub async fn mysql_sold(&self) -> i64 {
        sqlx::query_scalar::<_, i64>("SELECT CAST(sold AS SIGNED) FROM products WHERE id = ?")
            .bind(self.product)
            .fetch_one(self.db.pool())
            .await
            .unwrap()
    }

    /// Drains everything in-process.
    pub async fn drain(&self) -> seckill::consumer::ConsumerReport {
        let opts = seckill::consumer::ConsumerOptions {
            name: "drain".into(),
            batch: 1000,
            once: true,
        };
        seckill::consumer::run(&self.config, opts, std::future::pending())
            .await
            .unwrap()
    }
}

pub fn users(prefix: &str, n: usize) -> impl Iterator<Item = String> + '_ {
    (0..n).map(move |i| format!("{prefix}{i}"))
}
