//! Fixture of the buy tests: a fresh MariaDB database and Redis key prefix, one activity
//! with products, preheated and started, and a server on 127.0.0.1:0 with a typed client.

use std::net::TcpListener as StdListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use redis::AsyncCommands;
use reqwest::StatusCode;
use rust_decimal::Decimal;
use seckill::ops::catalog::{self, NewActivity, NewProduct};
use seckill::server::{self, AppState};
use seckill::token::Signer;
use seckill::{Config, Db, RedisClient};

use crate::helpers::TestApp;
use serde_json::{json, Value};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// One product of a sale: stock, per-user limit, max per order.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    pub stock: u32,
    pub limit: u32,
    pub max_per_order: u32,
}

pub fn spec(stock: u32, limit: u32, max_per_order: u32) -> Spec {
    Spec {
        stock,
        limit,
        max_per_order,
    }
}

/// How to set a sale up.
pub struct Options {
    pub products: Vec<Spec>,
    /// Seconds from now until the sale opens (negative: already open).
    pub starts_in_secs: i64,
    /// Another Redis (the outage test's own server).
    pub redis_url: Option<String>,
    pub tune: fn(&mut Config),
}

impl Default for Options {
    fn default() -> Self {
        Options {
            products: vec![spec(100, 1, 1)],
            starts_in_secs: -60,
            redis_url: None,
            tune: |_| {},
        }
    }
}

/// A running sale and its server.
pub struct Sale {
    pub config: Config,
    pub db: Db,
    pub redis: RedisClient,
    pub activity: u64,
    pub products: Vec<u64>,
    pub signer: Signer,
    pub base: String,
    pub http: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<seckill::Result<()>>>,
    /// Owns the database and key prefix; dropping it removes both.
    _app: TestApp,
}

impl Sale {
    pub async fn start(options: Options) -> Sale {
        let app = TestApp::with_config(|config| {
            config.token.secret = "test-secret-0123456789".into();
            if let Some(url) = &options.redis_url {
                config.redis.url = url.clone();
            }
            (options.tune)(config);
        })
        .await;
        let (config, db, redis) = (app.config.clone(), app.db.clone(), app.redis.clone());
        let now = Utc::now();
        let activity = catalog::create_activity(
            &db,
            &NewActivity {
                name: "test sale".into(),
                start_at: now + chrono::Duration::seconds(options.starts_in_secs),
                end_at: now + chrono::Duration::hours(2),
            },
        )
        .await
        .expect("activity")
        .id;
        let mut products = Vec::new();
        for (i, s) in options.products.iter().enumerate() {
            let p = catalog::add_product(
                &db,
                &NewProduct {
                    activity_id: activity,
                    name: format!("product {i}"),
                    price: Decimal::new(999, 2),
                    stock: s.stock,
                    per_user_limit: s.limit,
                    max_per_order: Some(s.max_per_order),
                },
            )
            .await
            .expect("product");
            products.push(p.id);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        seckill::ops::hot(&db, &redis, &config.consumer.group, activity)
            .await
            .expect("hot");
        seckill::ops::start(&db, &redis, activity).await.expect("start");
        let signer = Signer::new(&config.token.secret);
        let mut sale = Sale {
            config,
            db,
            redis,
            activity,
            products,
            signer,
            base: String::new(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
            shutdown: None,
            server: None,
            _app: app,
        };
        sale.serve().await;
        sale
    }

    /// (Re)starts the HTTP server on a fresh port.
    pub async fn serve(&mut self) {
        let listeners = server::bind("127.0.0.1:0", self.config.http.thread_count()).unwrap();
        self.base = format!("http://{}", listeners[0].local_addr().unwrap());
        let state = AppState::new(self.config.clone(), self.redis.clone(), self.db.clone());
        let (tx, rx) = oneshot::channel::<()>();
        self.shutdown = Some(tx);
        self.server = Some(tokio::spawn(server::run(listeners, state, async move {
            let _ = rx.await;
        })));
    }

    /// Stops the server gracefully; panics when it does not stop within 5 s.
    pub async fn stop_server(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            tokio::time::timeout(Duration::from_secs(5), server)
                .await
                .expect("server stops within 5 s")
                .expect("server task")
                .expect("server ran");
        }
    }

    /// Stops the server; the database and the Redis keys go with the fixture's `TestApp`.
    pub async fn finish(mut self) {
        self.stop_server().await;
    }

    pub fn product(&self) -> u64 {
        self.products[0]
    }

    /// Registers tokens for `users` directly through the library (fast).
    pub async fn tokens(&self, users: &[String]) -> Vec<String> {
        seckill::ops::token::register(&self.redis, &self.signer, self.activity, users, 600, |_| {})
            .await
            .expect("tokens")
            .into_iter()
            .map(|t| t.token)
            .collect()
    }

    pub async fn token(&self, user: &str) -> String {
        self.tokens(&[user.to_string()]).await.remove(0)
    }

    /// `POST /api/v1/buy`.
    pub async fn buy(&self, product: u64, user: &str, quantity: u32, token: &str) -> (StatusCode, Value) {
        self.post_json(
            "/api/v1/buy",
            &json!({"product_id": product, "user_id": user, "quantity": quantity, "token": token}),
        )
        .await
    }

    /// Every user in `users` buys one unit of `product` (with a fresh token) at the same
    /// time; the answers in the order of `users`.
    pub async fn buy_at_once(self: &Arc<Self>, product: u64, users: Vec<String>) -> Vec<(String, (StatusCode, Value))> {
        let tokens = self.tokens(&users).await;
        let mut tasks = Vec::new();
        for (user, token) in users.into_iter().zip(tokens) {
            let sale = self.clone();
            tasks.push(tokio::spawn(async move {
                let answer = sale.buy(product, &user, 1, &token).await;
                (user, answer)
            }));
        }
        let mut answers = Vec::with_capacity(tasks.len());
        for task in tasks {
            answers.push(task.await.expect("buyer task"));
        }
        answers
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        let res = self
            .http
            .post(format!("{}{path}", self.base))
            .json(body)
            .send()
            .await
            .expect("http");
        let status = res.status();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    pub async fn post_raw(
        &self,
        path: &str,
        body: impl Into<reqwest::Body>,
        content_type: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut req = self.http.post(format!("{}{path}", self.base)).body(body);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let res = req.send().await.expect("http");
        let status = res.status();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        let res = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("http");
        let status = res.status();
        let text = res.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// Stock, sold (Redis product hash) and stream length.
    pub async fn counters(&self, product: u64) -> (i64, i64, usize) {
        let keys = self.redis.keys();
        let mut conn = self.redis.conn();
        let (stock, sold): (i64, i64) = conn
            .hmget(keys.product(self.activity, product), &["stock", "sold"])
            .await
            .unwrap();
        let len: usize = conn.xlen(keys.orders_stream(self.activity)).await.unwrap();
        (stock, sold, len)
    }
}

/// Asserts a JSON error answer.
#[track_caller]
pub fn assert_error(answer: &(StatusCode, Value), status: u16, code: &str) {
    assert_eq!(answer.0.as_u16(), status, "{answer:?}");
    assert_eq!(answer.1["error"], code, "{answer:?}");
    assert!(answer.1["message"].is_string(), "{answer:?}");
}

/// A `redis-server` of the test's own, on a free port, in a directory of its own (where its
/// AOF and RDB files live, so [`OwnRedis::restart`] reloads them), killed on drop.
pub struct OwnRedis {
    pub port: u16,
    child: Option<Child>,
    dir: std::path::PathBuf,
    settings: Vec<String>,
}

impl OwnRedis {
    /// A Redis that keeps nothing on disk.
    pub async fn start() -> OwnRedis {
        Self::start_with(&["--save", "", "--appendonly", "no"]).await
    }

    /// A Redis with these settings (redis.conf directives as flags, e.g.
    /// `["--appendonly", "yes", "--appendfsync", "always"]`).
    pub async fn start_with(settings: &[&str]) -> OwnRedis {
        let port = StdListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dir = std::env::temp_dir().join(format!("seckill-redis-{port}-{}", crate::helpers::random_suffix()));
        std::fs::create_dir_all(&dir).expect("create the Redis directory");
        let mut r = OwnRedis {
            port,
            child: None,
            dir,
            settings: settings.iter().map(|s| s.to_string()).collect(),
        };
        r.restart().await;
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Where its AOF and RDB files are.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// Starts it (again) with its settings and directory; waits until it answers PING
    /// (so an AOF is loaded by the time this returns).
    pub async fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.settings)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server on PATH");
        self.child = Some(child);
        for _ in 0..250 {
            if let Ok(client) = redis::Client::open(self.url()) {
                if let Ok(mut conn) = client.get_multiplexed_async_connection().await {
                    if redis::cmd("PING").query_async::<String>(&mut conn).await.is_ok() {
                        return;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("redis-server did not start on port {}", self.port);
    }

    pub fn signal(&self, sig: &str) {
        if let Some(child) = &self.child {
            Command::new("kill")
                .args([sig, &child.id().to_string()])
                .status()
                .unwrap();
        }
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.signal("-CONT");
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
