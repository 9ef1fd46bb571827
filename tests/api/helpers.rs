//! Shared test harness: one isolated [`TestApp`] per test.
//!
//! Every [`TestApp`] gets its own freshly migrated MariaDB database (`seckill_test_<random>`)
//! and its own Redis key prefix (`test_<random>`), so tests run in parallel against the same
//! servers without seeing each other. Nothing is mocked: the library talks to the real Redis
//! and MySQL, and [`TestApp::cli`] runs the real `seckill` binary against the same database
//! and prefix.
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
use std::process::Stdio;
use std::time::{Duration, Instant};

use chrono::{DateTime, SubsecRound, Utc};
use redis::AsyncCommands;
use rust_decimal::Decimal;
use seckill::durability::Durability;
use seckill::model::{Activity, Product};
use seckill::ops::catalog::{self, NewActivity, NewProduct};
use seckill::{Config, Db, RedisClient};
use tokio::io::AsyncWriteExt;

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
}

impl Default for ProductSpec {
    fn default() -> Self {
        Self {
            name: "widget".into(),
            price: "9.90",
            stock: 10,
            limit: 1,
            max_per_order: None,
        }
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

/// One isolated deployment: its own database, its own Redis key prefix, a working directory
/// without `config.yaml` for the CLI, and connected [`Db`] / [`RedisClient`] handles.
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
}

impl TestApp {
    /// Creates and migrates a fresh database, picks a fresh key prefix, and connects.
    pub async fn new() -> TestApp {
        Self::with_config(|_| {}).await
    }

    /// Like [`TestApp::new`], with `tune` adjusting the configuration (timeouts, funnel,
    /// another Redis) before anything connects. Cleanup on drop is the same.
    pub async fn with_config(tune: impl FnOnce(&mut Config)) -> TestApp {
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
        tune(&mut config);
        seckill::db::migrate(&config)
            .await
            .unwrap_or_else(|e| panic!("migrating {db_name} failed (is MariaDB up? run scripts/setup.sh): {e}"));
        let db = Db::connect(&config).await.expect("connect to the test database");
        let redis = RedisClient::connect(&config)
            .await
            .expect("connect to Redis (run scripts/setup.sh)");
        let workdir = std::env::temp_dir().join(format!("seckill-test-{suffix}"));
        std::fs::create_dir_all(&workdir).expect("create the CLI working directory");
        TestApp {
            config,
            db,
            redis,
            db_name,
            prefix,
            workdir,
        }
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
        // A secret of the test's own; the default one is left to a `--config` file to change.
        if self.config.token.secret != seckill::config::TokenConfig::default().secret {
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

    // ------------------------------------------------------------------ catalog

    /// Creates a `draft` activity with the given window through the library.
    pub async fn create_activity(&self, (start_at, end_at): (DateTime<Utc>, DateTime<Utc>)) -> Activity {
        let new = NewActivity {
            name: format!("sale {}", random_suffix()),
            start_at,
            end_at,
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
                },
            )
            .await;
        (activity, vec![phone, case])
    }

    /// [`Self::activity_with_products`], preheated and started: on sale in Redis and MySQL.
    pub async fn online_activity(&self) -> (Activity, Vec<Product>) {
        let (activity, products) = self.activity_with_products().await;
        self.hot(activity.id).await;
        let activity = seckill::ops::start(&self.db, &self.redis, activity.id)
            .await
            .expect("start");
        (activity, products)
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

    /// The activity hash `P:{a:A}:activity`.
    pub async fn activity_hash(&self, activity_id: u64) -> HashMap<String, String> {
        self.redis_hash(&self.redis.keys().activity(activity_id)).await
    }

    /// Every key matching a SCAN `pattern`, sorted.
    pub async fn scan(&self, pattern: &str) -> BTreeSet<String> {
        scan_keys(&mut self.redis.conn(), pattern).await
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

/// Every key matching `pattern` (SCAN, never KEYS), sorted.
pub async fn scan_keys(conn: &mut redis::aio::ConnectionManager, pattern: &str) -> BTreeSet<String> {
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
