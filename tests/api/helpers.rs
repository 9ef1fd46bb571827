//! Shared test harness: one isolated [`TestApp`] per test, zero-to-production style.
//!
//! [`spawn_app`] gives a test its own freshly migrated MariaDB database
//! (`seckill_test_<random>`) and its own Redis key prefix (`test_<random>`), so tests run in
//! parallel against the same servers without seeing each other. A test that needs more says
//! so through [`TestApp::builder`]:
//!
//! ```ignore
//! let app = TestApp::builder()
//!     .redis(own.url())                      // a Redis of the test's own
//!     .tune(|c| c.redis.response_timeout_ms = 500)
//!     .pipeline()                            // quick consumer timings for consumers and the binary
//!     .sale(vec![spec(100, 1, 1)])           // an activity on sale: app.activity, app.product
//!     .serve()                               // an in-process server: app.buy, app.get, app.post_json
//!     .build()
//!     .await;
//! ```
//!
//! Nothing is mocked: the library talks to the real Redis and MySQL, [`TestApp::cli`] runs
//! the real `seckill` binary against the same database and prefix, and [`TestApp::command`]
//! runs it with the app's config file. Redis servers of a test's own live in
//! [`crate::redis_servers`].
//!
//! Servers: `SECKILL_TEST_MYSQL_URL` (no database part) and `SECKILL_TEST_REDIS_URL`; by
//! default the application's own, as `seckill` would find them from the repository root
//! (`SECKILL_DATABASE_URL`'s server and `SECKILL_REDIS_URL`, else `config.yaml`'s).
//! `scripts/setup.sh` prepares both; `scripts/test.sh` sets both.
//!
//! Clean-up: dropping a [`TestApp`] drops its database and deletes its Redis keys (also when
//! the test panics). Set `SECKILL_TEST_KEEP=1` to keep them for inspection; `scripts/test.sh`
//! drops test databases older than an hour left by interrupted runs.

#![allow(dead_code)] // Not every test module uses every helper.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, SubsecRound, Utc};
use redis::AsyncCommands;
use reqwest::StatusCode;
use rust_decimal::Decimal;
use seckill::buy::{self, Purchase};
use seckill::durability::Durability;
use seckill::model::{Activity, Product};
use seckill::ops::catalog::{self, NewActivity, NewProduct};
use seckill::server::{self, AppState};
use seckill::token::Signer;
use seckill::{Config, Db, RedisClient};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The variables through which `seckill` takes settings from its environment; processes the
/// tests start get them from the test's own configuration only.
pub const SECKILL_ENV: [&str; 6] = [
    "SECKILL_DATABASE_URL",
    "SECKILL_REDIS_URL",
    "SECKILL_KEY_PREFIX",
    "SECKILL_HTTP_BIND",
    "SECKILL_TOKEN_SECRET",
    "SECKILL_REDIS_DURABILITY",
];

/// The application's configuration as `seckill` run from the repository root sees it.
fn application_config() -> Config {
    Config::load(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/config.yaml")), false)
        .expect("the repository's config.yaml")
}

/// The MySQL server the tests use, without a database (`mysql://user@host:port`).
pub fn mysql_server_url() -> String {
    let url = std::env::var("SECKILL_TEST_MYSQL_URL")
        .unwrap_or_else(|_| server_part(&application_config().database.url).to_string());
    url.trim_end_matches('/').to_string()
}

/// `url` without its database (path) and options: `mysql://user@host:port`.
fn server_part(url: &str) -> &str {
    let url = url.split('?').next().unwrap_or_default();
    let authority = url.find("://").map_or(0, |scheme| scheme + 3);
    match url[authority..].find('/') {
        Some(slash) => &url[..authority + slash],
        None => url,
    }
}

/// The Redis server the tests use.
pub fn redis_url() -> String {
    std::env::var("SECKILL_TEST_REDIS_URL").unwrap_or_else(|_| application_config().redis.url)
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process killed when the test ends, also when it fails.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl KillOnDrop {
    /// [`std::process::Child::wait_with_output`], which takes the child by value: the guard
    /// lets go of it, since the wait itself ends with the process.
    pub fn wait_with_output(self) -> std::io::Result<std::process::Output> {
        let this = std::mem::ManuallyDrop::new(self);
        // SAFETY: `this` is never used or dropped again, so the child is moved out exactly once.
        let child = unsafe { std::ptr::read(&this.0) };
        child.wait_with_output()
    }
}

impl std::ops::Deref for KillOnDrop {
    type Target = std::process::Child;
    fn deref(&self) -> &std::process::Child {
        &self.0
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        &mut self.0
    }
}

/// Sends `sig` (such as `-TERM`) to `child`.
pub fn signal(child: &std::process::Child, sig: &str) {
    std::process::Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
}

/// A random lowercase hex suffix, unique enough for database names and key prefixes.
pub fn random_suffix() -> String {
    format!("{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff)
}

/// A sale window that is open now: from one minute ago to one hour ahead (whole seconds,
/// so it round-trips through `DATETIME(3)` exactly).
pub fn open_window() -> (DateTime<Utc>, DateTime<Utc>) {
    let now = Utc::now().trunc_subsecs(0);
    (now - chrono::Duration::minutes(1), now + chrono::Duration::hours(1))
}

/// A sale window entirely in the future: opens in a day, lasts two hours.
pub fn future_window() -> (DateTime<Utc>, DateTime<Utc>) {
    let now = Utc::now().trunc_subsecs(0);
    (
        now + chrono::Duration::days(1),
        now + chrono::Duration::days(1) + chrono::Duration::hours(2),
    )
}

/// `t` as RFC 3339, the format the CLI takes.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339()
}

/// What a test wants of a product; `Default` is a plain 10-unit product at 9.90.
#[derive(Debug, Clone)]
pub struct ProductSpec {
    /// Name shown to buyers.
    pub name: String,
    /// Unit price, e.g. `"99.90"`.
    pub price: &'static str,
    /// Units on sale.
    pub stock: u32,
    /// Most units per user.
    pub limit: u32,
    /// Most units per order (`None`: the per-user limit).
    pub max_per_order: Option<u32>,
    /// Stock buckets (`None`: 1).
    pub shards: Option<u16>,
}

impl Default for ProductSpec {
    fn default() -> Self {
        Self {
            name: "widget".into(),
            price: "9.90",
            stock: 10,
            limit: 1,
            max_per_order: None,
            shards: None,
        }
    }
}

/// A product of a buy-test sale at 9.99: `stock` units, `limit` per user, `max_per_order`
/// per order.
pub fn spec(stock: u32, limit: u32, max_per_order: u32) -> ProductSpec {
    ProductSpec {
        name: "product".into(),
        price: "9.99",
        stock,
        limit,
        max_per_order: Some(max_per_order),
        shards: None,
    }
}

/// The product of a pipeline-test sale: a phone at 19.99, `stock` units, `limit` per user.
pub fn phone(stock: u32, limit: u32) -> ProductSpec {
    ProductSpec {
        name: "phone".into(),
        price: "19.99",
        stock,
        limit,
        max_per_order: None,
        shards: None,
    }
}

/// `n` user ids: `{prefix}0`, `{prefix}1`, ...
pub fn users(prefix: &str, n: usize) -> impl Iterator<Item = String> + '_ {
    (0..n).map(move |i| format!("{prefix}{i}"))
}

/// Asserts a JSON error answer.
#[track_caller]
pub fn assert_error(answer: &(StatusCode, Value), status: u16, code: &str) {
    assert_eq!(answer.0.as_u16(), status, "{answer:?}");
    assert_eq!(answer.1["error"], code, "{answer:?}");
    assert!(answer.1["message"].is_string(), "{answer:?}");
}

/// Waits (up to 20 s) until a `seckill serve` at `base` answers `/health`.
pub async fn wait_for_serve(http: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while http.get(format!("{base}/health")).send().await.is_err() {
        assert!(Instant::now() < deadline, "serve did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The result of one run of the `seckill` binary.
#[derive(Debug, Clone)]
pub struct CliOutput {
    /// Exit code (`-1` when killed by a signal).
    pub code: i32,
    /// Everything printed on stdout.
    pub stdout: String,
    /// Everything printed on stderr.
    pub stderr: String,
    /// How long the process ran.
    pub elapsed: Duration,
}

impl CliOutput {
    /// Panics (showing both streams) unless the exit code was 0; returns `self` for chaining.
    #[track_caller]
    pub fn ok(&self) -> &Self {
        assert_eq!(
            self.code, 0,
            "expected success\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    /// Panics unless the exit code was `code` and stderr contains every one of `needles`.
    #[track_caller]
    pub fn fails_with(&self, code: i32, needles: &[&str]) -> &Self {
        assert_eq!(
            self.code, code,
            "expected exit {code}\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        for needle in needles {
            assert!(
                self.stderr.contains(needle),
                "stderr lacks {needle:?}:\n{}",
                self.stderr
            );
        }
        self
    }

    /// stdout parsed as JSON (panics when it is not).
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}\nstderr:\n{}", self.stdout, self.stderr))
    }

    /// stdout trimmed and parsed as an id (what `activity create` and `product add` print).
    #[track_caller]
    pub fn id(&self) -> u64 {
        self.ok();
        self.stdout
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("stdout is not an id: {:?}", self.stdout))
    }
}

/// Everything a test can observe, for "nothing changed" assertions: every row of the
/// app's tables (as text) and every Redis key under the app's prefix (rendered by type).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Table name -> sorted rows, each `col1|col2|...`.
    pub mysql: BTreeMap<String, Vec<String>>,
    /// Key -> rendered value.
    pub redis: BTreeMap<String, String>,
}

/// One isolated deployment, built by [`spawn_app`] or [`TestApp::builder`]: its own database,
/// its own Redis key prefix, a working directory without `config.yaml` for the CLI, a config
/// file for the binary, and connected [`Db`] / [`RedisClient`] handles; with
/// [`AppBuilder::sale`] an activity on sale, and with [`AppBuilder::serve`] an in-process
/// server and a client for it.
pub struct TestApp {
    /// The configuration of this app (database URL and key prefix are its own).
    pub config: Config,
    /// Connected to the app's database.
    pub db: Db,
    /// Connected to Redis, with the app's key prefix.
    pub redis: RedisClient,
    /// The database name, `seckill_test_<random>`.
    pub db_name: String,
    /// The Redis key prefix, `test_<random>`.
    pub prefix: String,
    /// Working directory of CLI runs (empty, so no `config.yaml` is picked up).
    pub workdir: PathBuf,
    /// [`Self::config`] as a file, for `seckill --config` ([`Self::command`]).
    pub config_path: PathBuf,
    /// The sale's activity (0 without [`AppBuilder::sale`]).
    pub activity: u64,
    /// The sale's products, in the order they were asked for.
    pub products: Vec<u64>,
    /// The sale's first product (0 without a sale).
    pub product: u64,
    /// Signs tokens with the configuration's secret.
    pub signer: Signer,
    /// `http://127.0.0.1:PORT` of the in-process server ("" until [`Self::serve`]).
    pub base: String,
    /// Client for the in-process server (10 s timeout).
    pub http: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<seckill::Result<()>>>,
}

/// A plain [`TestApp`]: a fresh database and key prefix, nothing on sale.
pub async fn spawn_app() -> TestApp {
    TestApp::builder().build().await
}

/// The token secret of every test app: 32+ bytes, as `seckill serve` demands.
pub const TEST_SECRET: &str = "test-secret-0123456789abcdef0123456789";

/// One adjustment of the configuration, see [`AppBuilder::tune`].
type Tune = Box<dyn FnOnce(&mut Config) + Send>;

/// What a test wants of its [`TestApp`]; [`AppBuilder::build`] makes it.
pub struct AppBuilder {
    redis_url: Option<String>,
    tunes: Vec<Tune>,
    pipeline: bool,
    sale: Option<Vec<ProductSpec>>,
    opens_in_secs: i64,
    serve: bool,
}

impl AppBuilder {
    /// Another Redis than the shared one (a server of the test's own).
    pub fn redis(mut self, url: impl Into<String>) -> Self {
        self.redis_url = Some(url.into());
        self
    }

    /// Adjusts the configuration (timeouts, funnel, durability) after every other setting
    /// and before anything connects; several run in order.
    pub fn tune(mut self, tune: impl FnOnce(&mut Config) + Send + 'static) -> Self {
        self.tunes.push(Box::new(tune));
        self
    }

    /// Consumer timings short enough for tests (claim after 300 ms, 3 deliveries, retries
    /// from 50 ms), a 60 s in-flight grace and 8 database connections: for tests that run
    /// consumers and the binary against the sale.
    pub fn pipeline(mut self) -> Self {
        self.pipeline = true;
        self
    }

    /// An activity with these products (product `i` is named `"{name} {i}"`), preheated and
    /// started: on sale in MySQL and Redis.
    pub fn sale(mut self, products: Vec<ProductSpec>) -> Self {
        self.sale = Some(products);
        self
    }

    /// The sale opens this many seconds from now (default -60: open a minute ago).
    pub fn opens_in_secs(mut self, secs: i64) -> Self {
        self.opens_in_secs = secs;
        self
    }

    /// An in-process server on 127.0.0.1:0 (signing tokens with [`TEST_SECRET`]),
    /// reached through [`TestApp::post_json`], [`TestApp::get`], [`TestApp::buy`] and friends.
    pub fn serve(mut self) -> Self {
        self.serve = true;
        self
    }

    /// Creates and migrates a fresh database, picks a fresh key prefix, connects, and sets up
    /// what was asked for. Dropping the app removes the database and the keys.
    pub async fn build(self) -> TestApp {
        let suffix = random_suffix();
        let db_name = format!("seckill_test_{suffix}");
        let prefix = format!("test_{suffix}");
        let mut config = Config::default();
        config.database.url = format!("{}/{db_name}", mysql_server_url());
        config.database.max_connections = 4;
        config.redis.url = redis_url();
        config.redis.key_prefix = prefix.clone();
        // The shared test Redis keeps nothing on disk; tests about durability start their own.
        config.redis.durability = Durability::None;
        // A secret of the test's own, long enough that `seckill serve` accepts it.
        config.token.secret = TEST_SECRET.into();
        if self.pipeline {
            config.database.max_connections = 8;
            config.consumer.claim_idle_ms = 300;
            config.consumer.block_ms = 200;
            config.consumer.max_deliveries = 3;
            config.consumer.retry_base_ms = 50;
            config.consumer.retry_max_ms = 300;
            config.orders.in_flight_grace_secs = 60;
        }
        if let Some(url) = self.redis_url {
            config.redis.url = url;
        }
        for tune in self.tunes {
            tune(&mut config);
        }
        seckill::db::migrate(&config)
            .await
            .unwrap_or_else(|e| panic!("migrating {db_name} failed (is MariaDB up? run scripts/setup.sh): {e}"));
        let db = Db::connect(&config).await.expect("connect to the test database");
        let redis = RedisClient::connect(&config)
            .await
            .expect("connect to Redis (run scripts/setup.sh)");
        let workdir = std::env::temp_dir().join(format!("seckill-test-{suffix}"));
        std::fs::create_dir_all(&workdir).expect("create the CLI working directory");
        let signer = Signer::new(&config.token.secret);
        let mut app = TestApp {
            config,
            db,
            redis,
            db_name,
            prefix,
            workdir,
            config_path: PathBuf::new(),
            activity: 0,
            products: Vec::new(),
            product: 0,
            signer,
            base: String::new(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
            shutdown: None,
            server: None,
        };
        // Not `config.yaml`: CLI runs in `workdir` must not pick it up.
        app.config_path = app.write_config("seckill.yaml", &app.config);
        if let Some(products) = self.sale {
            app.put_on_sale(products, self.opens_in_secs).await;
        }
        if self.serve {
            app.serve().await;
        }
        app
    }
}

impl TestApp {
    /// Starts describing a [`TestApp`]; see [`AppBuilder`].
    pub fn builder() -> AppBuilder {
        AppBuilder {
            redis_url: None,
            tunes: Vec::new(),
            pipeline: false,
            sale: None,
            opens_in_secs: -60,
            serve: false,
        }
    }

    /// Creates the sale's activity and products, preheats and starts it.
    async fn put_on_sale(&mut self, products: Vec<ProductSpec>, opens_in_secs: i64) {
        let now = Utc::now();
        let activity = catalog::create_activity(
            &self.db,
            &NewActivity {
                name: "test sale".into(),
                start_at: now + chrono::Duration::seconds(opens_in_secs),
                end_at: now + chrono::Duration::hours(2),
                hot: Default::default(),
            },
        )
        .await
        .expect("activity")
        .id;
        for (i, spec) in products.into_iter().enumerate() {
            let name = format!("{} {i}", spec.name);
            let product = self.add_product(activity, ProductSpec { name, ..spec }).await;
            self.products.push(product.id);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        self.go_online(activity).await;
        self.activity = activity;
        self.product = self.products.first().copied().unwrap_or_default();
    }

    /// The consumer group of the configuration.
    pub fn group(&self) -> &str {
        &self.config.consumer.group
    }

    // ------------------------------------------------------------------ CLI

    /// Runs `seckill ARGS` against this app's database and prefix; stdin is empty (not a tty).
    pub async fn cli(&self, args: &[&str]) -> CliOutput {
        self.cli_with(args, &[], None).await
    }

    /// Runs `seckill ARGS` with extra environment variables (which override the app's own,
    /// e.g. `SECKILL_REDIS_URL`) and, optionally, text written to its stdin (a pipe, never a tty).
    pub async fn cli_with(&self, args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> CliOutput {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_seckill"));
        command.args(args).current_dir(&self.workdir).kill_on_drop(true);
        for name in SECKILL_ENV.into_iter().chain(["RUST_LOG"]) {
            command.env_remove(name);
        }
        command
            .env("SECKILL_DATABASE_URL", &self.config.database.url)
            .env("SECKILL_REDIS_URL", &self.config.redis.url)
            .env("SECKILL_KEY_PREFIX", &self.prefix)
            .env("SECKILL_REDIS_DURABILITY", self.config.redis.durability.as_str());
        // The test's own secret, unless a `--config` file the test names decides it.
        if !args.contains(&"--config") {
            command.env("SECKILL_TOKEN_SECRET", &self.config.token.secret);
        }
        for (name, value) in env {
            command.env(name, value);
        }
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let started = Instant::now();
        let mut child = command.spawn().expect("run the seckill binary");
        let mut pipe = child.stdin.take().expect("stdin pipe");
        if let Some(text) = stdin {
            // The child may exit without reading; a broken pipe is fine.
            let _ = pipe.write_all(text.as_bytes()).await;
        }
        drop(pipe);
        let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("seckill {args:?} ran for over 60 s"))
            .expect("wait for the seckill binary");
        CliOutput {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            elapsed: started.elapsed(),
        }
    }

    /// Writes `text` to a file named `name` in the CLI working directory; returns its path
    /// (for `--config`).
    pub fn write_file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.workdir.join(name);
        std::fs::write(&path, text).expect("write a test file");
        path
    }

    /// Writes `config` as YAML to a file named `name` in the working directory (removed with
    /// the app); returns its path, for `seckill --config`.
    pub fn write_config(&self, name: &str, config: &Config) -> PathBuf {
        self.write_file(name, &serde_yaml::to_string(config).expect("config as YAML"))
    }

    // ------------------------------------------------------------------ catalog

    /// Creates a `draft` activity with the given window through the library.
    pub async fn create_activity(&self, (start_at, end_at): (DateTime<Utc>, DateTime<Utc>)) -> Activity {
        let new = NewActivity {
            name: format!("sale {}", random_suffix()),
            start_at,
            end_at,
            hot: Default::default(),
        };
        catalog::create_activity(&self.db, &new).await.expect("create activity")
    }

    /// Adds a product to `activity_id` through the library.
    pub async fn add_product(&self, activity_id: u64, spec: ProductSpec) -> Product {
        let new = NewProduct {
            activity_id,
            name: spec.name,
            price: spec.price.parse::<Decimal>().expect("a decimal price"),
            stock: spec.stock,
            per_user_limit: spec.limit,
            max_per_order: spec.max_per_order,
            shards: spec.shards,
        };
        catalog::add_product(&self.db, &new).await.expect("add product")
    }

    /// A draft activity in an open window with two products:
    /// `phone` (100 units at 4999.00, 2 per user, 1 per order) and `case` (50 units at 19.90, 5 per user).
    pub async fn activity_with_products(&self) -> (Activity, Vec<Product>) {
        let activity = self.create_activity(open_window()).await;
        let phone = self
            .add_product(
                activity.id,
                ProductSpec {
                    name: "phone".into(),
                    price: "4999.00",
                    stock: 100,
                    limit: 2,
                    max_per_order: Some(1),
                    shards: None,
                },
            )
            .await;
        let case = self
            .add_product(
                activity.id,
                ProductSpec {
                    name: "case".into(),
                    price: "19.90",
                    stock: 50,
                    limit: 5,
                    max_per_order: None,
                    shards: None,
                },
            )
            .await;
        (activity, vec![phone, case])
    }

    /// [`Self::activity_with_products`], preheated and started: on sale in Redis and MySQL.
    pub async fn online_activity(&self) -> (Activity, Vec<Product>) {
        let (activity, products) = self.activity_with_products().await;
        (self.go_online(activity.id).await, products)
    }

    /// Preheats and starts `activity_id` through the library; the started activity.
    pub async fn go_online(&self, activity_id: u64) -> Activity {
        self.hot(activity_id).await;
        seckill::ops::start(&self.db, &self.redis, activity_id)
            .await
            .expect("start")
    }

    /// Preheats `activity_id` through the library.
    pub async fn hot(&self, activity_id: u64) -> seckill::ops::hot::HotReport {
        seckill::ops::hot(&self.db, &self.redis, self.group(), activity_id)
            .await
            .expect("hot")
    }

    /// The activity row as MySQL has it now.
    pub async fn activity(&self, id: u64) -> Activity {
        catalog::get_activity(&self.db, id).await.expect("activity exists")
    }

    /// The product row as MySQL has it now.
    pub async fn product(&self, id: u64) -> Product {
        catalog::get_product(&self.db, id).await.expect("product exists")
    }

    /// Runs one statement on the app's database (test set-up the CLI cannot do, e.g. `sold`).
    pub async fn sql(&self, statement: &str) {
        sqlx::query(statement)
            .execute(self.db.pool())
            .await
            .unwrap_or_else(|e| panic!("{statement}: {e}"));
    }

    /// `SELECT COUNT(*) FROM table`.
    pub async fn count(&self, table: &str) -> i64 {
        sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
            .fetch_one(self.db.pool())
            .await
            .expect("count rows")
    }

    // ------------------------------------------------------------------ Redis

    /// A Redis hash as a map (empty when the key is missing).
    pub async fn redis_hash(&self, key: &str) -> HashMap<String, String> {
        self.redis.conn().hgetall(key).await.expect("HGETALL")
    }

    /// The product hash `P:{a:A}:product:ID`.
    pub async fn product_hash(&self, activity_id: u64, product_id: u64) -> HashMap<String, String> {
        self.redis_hash(&self.redis.keys().product(activity_id, product_id))
            .await
    }

    /// Every buyer's total of product `product_id` (without buckets) in the bought hash, and
    /// apart those kept in its totals array (`src/totals.rs`): (hash, array).
    pub async fn totals_apart(
        &self,
        activity_id: u64,
        product_id: u64,
    ) -> (HashMap<String, i64>, HashMap<String, i64>) {
        let keys = self.redis.keys();
        let mut conn = self.redis.conn();
        let hashed: HashMap<String, i64> = conn.hgetall(keys.bought(activity_id, product_id)).await.unwrap();
        let array: Vec<u8> = conn.get(keys.totals(activity_id, product_id)).await.unwrap();
        (hashed, seckill::totals::decode(&array).collect())
    }

    /// Every buyer's total of product `product_id` (without buckets), wherever it is kept.
    pub async fn totals(&self, activity_id: u64, product_id: u64) -> HashMap<String, i64> {
        let (mut all, array) = self.totals_apart(activity_id, product_id).await;
        all.extend(array);
        all
    }

    /// Every buyer's total of sharded product `product_id` (`shards` buckets), from the
    /// buckets holding them (`P:{a:A:b:K}:bought:ID`).
    pub async fn bucket_totals(&self, activity_id: u64, product_id: u64, shards: u16) -> HashMap<String, i64> {
        let mut all = HashMap::new();
        for k in 0..shards {
            let key = self.redis.keys().bucket_bought(activity_id, k, product_id);
            let some: HashMap<String, i64> = self.redis.conn().hgetall(key).await.unwrap();
            all.extend(some);
        }
        all
    }

    /// The activity hash `P:{a:A}:activity`.
    pub async fn activity_hash(&self, activity_id: u64) -> HashMap<String, String> {
        self.redis_hash(&self.redis.keys().activity(activity_id)).await
    }

    /// Every key matching a SCAN `pattern`, sorted (on every primary of a cluster).
    pub async fn scan(&self, pattern: &str) -> BTreeSet<String> {
        self.redis
            .scan_match(pattern)
            .await
            .expect("SCAN")
            .into_iter()
            .collect()
    }

    /// Every key of one activity under this app's prefix.
    pub async fn activity_keys(&self, activity_id: u64) -> BTreeSet<String> {
        self.scan(&self.redis.keys().activity_pattern(activity_id)).await
    }

    /// Every key under this app's prefix.
    pub async fn all_keys(&self) -> BTreeSet<String> {
        self.scan(&format!("{}:*", self.prefix)).await
    }

    // ------------------------------------------------------------------ snapshots

    /// Everything observable of this app; compare two with `assert_eq!` to prove a refused
    /// or failed command changed nothing.
    pub async fn snapshot(&self) -> Snapshot {
        let mut mysql = BTreeMap::new();
        for table in ["activities", "products", "orders", "stock_ledger", "blacklist"] {
            let columns: Vec<String> = sqlx::query_scalar(
                "SELECT column_name FROM information_schema.columns \
                 WHERE table_schema = DATABASE() AND table_name = ? ORDER BY ordinal_position",
            )
            .bind(table)
            .fetch_all(self.db.pool())
            .await
            .expect("list columns");
            let row = columns
                .iter()
                .map(|c| format!("COALESCE(CAST(`{c}` AS CHAR), 'NULL')"))
                .collect::<Vec<_>>()
                .join(", ");
            let mut rows: Vec<String> = sqlx::query_scalar(&format!("SELECT CONCAT_WS('|', {row}) FROM {table}"))
                .fetch_all(self.db.pool())
                .await
                .expect("read table");
            rows.sort();
            mysql.insert(table.to_string(), rows);
        }
        let mut conn = self.redis.conn();
        let mut redis = BTreeMap::new();
        for key in self.all_keys().await {
            let kind: String = redis::cmd("TYPE").arg(&key).query_async(&mut conn).await.expect("TYPE");
            let rendered = match kind.as_str() {
                "string" => format!("{:?}", conn.get::<_, Option<String>>(&key).await.expect("GET")),
                "hash" => format!(
                    "{:?}",
                    conn.hgetall::<_, BTreeMap<String, String>>(&key)
                        .await
                        .expect("HGETALL")
                ),
                "set" => format!(
                    "{:?}",
                    conn.smembers::<_, BTreeSet<String>>(&key).await.expect("SMEMBERS")
                ),
                _ => {
                    let dump: Vec<u8> = redis::cmd("DUMP").arg(&key).query_async(&mut conn).await.expect("DUMP");
                    format!("{kind} {dump:?}")
                }
            };
            redis.insert(key, rendered);
        }
        Snapshot { mysql, redis }
    }
}

// ------------------------------------------------------------------ the in-process server

impl TestApp {
    /// (Re)starts the HTTP server on a fresh port.
    pub async fn serve(&mut self) {
        let listeners = server::bind("127.0.0.1:0", self.config.http.threads).unwrap();
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

    /// Stops the server; the database and the Redis keys go when the app is dropped.
    pub async fn finish(mut self) {
        self.stop_server().await;
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

    /// One registered token for `user`.
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

    /// A burst for fault tests: `buyers` fresh buyers (`buyer0`, `buyer1`, ...) each buy one
    /// unit of the sale's product, 32 at a time. Returns once `reserved` reservations are in the
    /// activity's stream on the Redis at `watch_url` (watched on a connection of its own), with
    /// the burst still running: the caller breaks something now, then collects the answers.
    pub async fn burst_until_reserved(self: &Arc<Self>, buyers: usize, watch_url: &str, reserved: usize) -> Burst {
        let users: Vec<String> = (0..buyers).map(|i| format!("buyer{i}")).collect();
        let tokens = self.tokens(&users).await;
        let gate = Arc::new(tokio::sync::Semaphore::new(32));
        let product = self.product;
        let tasks = users
            .into_iter()
            .zip(tokens)
            .map(|(user, token)| {
                let (sale, gate) = (self.clone(), gate.clone());
                tokio::spawn(async move {
                    let _permit = gate.acquire().await.expect("the gate stays open");
                    let answer = sale.buy(product, &user, 1, &token).await;
                    (user, answer)
                })
            })
            .collect();
        // Units sold, which the reserve script counts with each queued purchase (one unit each).
        let product_key = self.redis.keys().product(self.activity, product);
        let mut watcher = redis::Client::open(watch_url)
            .expect("a Redis URL")
            .get_multiplexed_async_connection()
            .await
            .expect("the watched Redis answers");
        let deadline = Instant::now() + Duration::from_secs(30);
        while watcher
            .hget::<_, _, Option<usize>>(&product_key, "sold")
            .await
            .ok()
            .flatten()
            .unwrap_or(0)
            < reserved
        {
            assert!(
                Instant::now() < deadline,
                "the burst never reached {reserved} reservations"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Burst { tasks }
    }

    /// `POST path` with a JSON body to the in-process server; the answer's JSON (`null` when none).
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

    /// `POST path` with a raw body and an optional content type (malformed-request tests).
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

    /// `GET path` from the in-process server; a body that is not JSON comes back as a JSON string.
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

    /// Stock, sold (Redis product hash) and purchases queued in the stream.
    pub async fn counters(&self, product: u64) -> (i64, i64, usize) {
        let keys = self.redis.keys();
        let mut conn = self.redis.conn();
        let (stock, sold): (i64, i64) = conn
            .hmget(keys.product(self.activity, product), &["stock", "sold"])
            .await
            .unwrap();
        (stock, sold, self.queued_purchases().await)
    }

    /// Every purchase in the activity's stream, decoded (panics on one that cannot be).
    pub async fn stream_reservations(&self) -> Vec<seckill::reservation::Reservation> {
        let stream = self.redis.keys().orders_stream(self.activity);
        let mut out = Vec::new();
        for e in seckill::reservation::read_all(&self.redis, &stream).await.unwrap() {
            for r in seckill::reservation::decode_all(self.activity, &e).unwrap() {
                out.push(r.unwrap());
            }
        }
        out
    }

    /// Purchases in the activity's stream (an entry holds a script call's purchases).
    pub async fn queued_purchases(&self) -> usize {
        let stream = self.redis.keys().orders_stream(self.activity);
        seckill::reservation::read_all(&self.redis, &stream)
            .await
            .unwrap()
            .iter()
            .map(|e| seckill::reservation::purchases(e).map_or(1, |p| p.len()))
            .sum()
    }
}

// ------------------------------------------------------------------ the pipeline and the binary

impl TestApp {
    /// Registers the token `tok-{user}` of each of `users` for the sale, straight into Redis
    /// (the reserve script compares the token with the registered one; it checks no signature).
    pub async fn plain_tokens(&self, users: &[String]) {
        let mut conn = self.redis.conn();
        for chunk in users.chunks(500) {
            let mut pipe = redis::pipe();
            for u in chunk {
                pipe.set(self.redis.keys().token(self.activity, u), format!("tok-{u}"))
                    .ignore();
            }
            let () = pipe.query_async(&mut conn).await.unwrap();
        }
    }

    /// Registers tokens and reserves `qty` units for each of `users`; returns the order numbers.
    pub async fn reserve(&self, users: impl IntoIterator<Item = String>, qty: u32) -> Vec<String> {
        let users: Vec<String> = users.into_iter().collect();
        let mut out = Vec::new();
        for chunk in users.chunks(500) {
            self.plain_tokens(chunk).await;
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

    /// The binary with this app's config file, and nothing from the caller's `SECKILL_*`
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

    /// `user`'s token for the sale's activity, from `POST /api/v1/token` of the server at `base`.
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

    /// Starts the binary in the background (stdout discarded, stderr inherited); killed when
    /// the guard drops, so a failing test leaves no process behind.
    pub fn spawn(&self, args: &[&str]) -> KillOnDrop {
        KillOnDrop(self.command(args).stdout(Stdio::null()).spawn().unwrap())
    }

    /// One integer from `sql`, whose one `?` is bound to the sale's activity.
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

    /// The first product's `sold` in MySQL.
    pub async fn mysql_sold(&self) -> i64 {
        sqlx::query_scalar::<_, i64>("SELECT CAST(sold AS SIGNED) FROM products WHERE id = ?")
            .bind(self.product)
            .fetch_one(self.db.pool())
            .await
            .unwrap()
    }

    /// Drains everything in-process, as consumer `drain`.
    pub async fn drain(&self) -> seckill::consumer::ConsumerReport {
        self.drain_as("drain").await
    }

    /// Drains everything in-process, as consumer `name`.
    pub async fn drain_as(&self, name: &str) -> seckill::consumer::ConsumerReport {
        let opts = seckill::consumer::ConsumerOptions {
            name: name.into(),
            batch: 1000,
            once: true,
        };
        seckill::consumer::run(&self.config, opts, std::future::pending())
            .await
            .unwrap()
    }
}

/// Every key matching `pattern` (SCAN, never KEYS), sorted.
pub async fn scan_keys(conn: &mut impl redis::aio::ConnectionLike, pattern: &str) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await
            .expect("SCAN");
        keys.extend(batch);
        if next == 0 {
            return keys;
        }
        cursor = next;
    }
}

/// Drops database `name` on the test server (best effort; returns the error text on failure).
pub async fn drop_database(name: &str) -> Result<(), String> {
    use sqlx::Connection;
    let mut conn = sqlx::mysql::MySqlConnection::connect(&mysql_server_url())
        .await
        .map_err(|e| e.to_string())?;
    // A test that failed may leave a transaction open on an idle pooled connection (the
    // rollback of a dropped transaction is only sent when the pool next runs, and the
    // test's runtime is blocked in `Drop`); its locks would make the DROP wait forever.
    let holders: Vec<i64> =
        sqlx::query_scalar("SELECT ID FROM information_schema.PROCESSLIST WHERE DB = ? AND ID <> CONNECTION_ID()")
            .bind(name)
            .fetch_all(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
    for id in holders {
        let _ = sqlx::query(&format!("KILL {id}")).execute(&mut conn).await;
    }
    sqlx::query(&format!("DROP DATABASE IF EXISTS `{name}`"))
        .execute(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    let _ = conn.close().await;
    Ok(())
}

/// Deletes every key whose name starts with `prefix` (best effort).
async fn delete_prefixed_keys(prefix: &str) -> Result<(), String> {
    let client = redis::Client::open(redis_url()).map_err(|e| e.to_string())?;
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| e.to_string())?;
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        if !batch.is_empty() {
            let () = conn.del(&batch).await.map_err(|e| e.to_string())?;
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

fn remove_dir(path: &Path) {
    let _ = std::fs::remove_dir_all(path);
}

impl Drop for TestApp {
    /// Drops the database and deletes every key starting with the prefix (including keys of
    /// derived prefixes such as `<prefix>x` that a test made), on a separate thread with its
    /// own runtime because `Drop` cannot await.
    fn drop(&mut self) {
        if std::env::var_os("SECKILL_TEST_KEEP").is_some() {
            eprintln!(
                "SECKILL_TEST_KEEP: kept database {} and Redis prefix {}",
                self.db_name, self.prefix
            );
            return;
        }
        let (db_name, prefix) = (self.db_name.clone(), self.prefix.clone());
        remove_dir(&self.workdir);
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                if let Err(e) = drop_database(&db_name).await {
                    eprintln!("could not drop test database {db_name}: {e}");
                }
                if let Err(e) = delete_prefixed_keys(&prefix).await {
                    eprintln!("could not delete Redis keys {prefix}*: {e}");
                }
            });
            Some(())
        });
        let _ = cleanup.join();
    }
}

/// A buy burst still running (see [`TestApp::burst_until_reserved`]).
pub struct Burst {
    tasks: Vec<JoinHandle<(String, (StatusCode, Value))>>,
}

impl Burst {
    /// Waits for every buyer: order number -> buyer of each `queued` answer, and how many
    /// buyers got anything else.
    pub async fn answers(self) -> (HashMap<String, String>, usize) {
        let mut queued = HashMap::new();
        let mut other = 0;
        for task in self.tasks {
            let (user, (status, body)) = task.await.expect("buyer task");
            match body["order_no"].as_str() {
                Some(order_no) if status == StatusCode::OK => {
                    queued.insert(order_no.to_string(), user);
                }
                _ => other += 1,
            }
        }
        (queued, other)
    }
}
