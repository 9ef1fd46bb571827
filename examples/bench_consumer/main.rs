//! Consumer throughput against its ceiling, in one run (issue 20, `scripts/bench.sh` rows 5
//! and 5c):
//!
//! 1. one `seckill consumer --once --json` (the release binary) drains the queued
//!    reservations into MariaDB: orders per second by the consumer's own clock, its CPU
//!    time, the MySQL server's and Redis's CPU time and MySQL's statement count over the drain;
//! 2. the ceiling: the very rows it wrote, read back and inserted again into a fresh database
//!    with the same schema (same indexes), with nothing around them but multi-row INSERTs, in
//!    the shapes of [`ceiling::SHAPES`]: the consumer's own (2,000 bound rows per INSERT,
//!    committed in transactions of the consumer's average batch, one connection), SQL text,
//!    bigger INSERTs, one transaction per INSERT, two connections at once. The best of them
//!    is the ceiling, and consumer / ceiling the ratio; consumer / its own shape says what is
//!    left to gain without changing how it talks to MySQL. The server's settings are printed.
//!
//! With `--rounds R` the shapes run R times, in alternating order, and each counts its median.
//!
//! Standalone, it first reserves N units (default 200,000) through `seckill::buy::reserve`,
//! 30 purchases per script call (one stream entry each, as `serve` batches them), into a
//! database and key prefix of its own, and removes them afterwards. With `--config PATH` it
//! drains whatever that configuration's streams hold instead and leaves that database as the
//! consumer left it (`bench.sh` does this right after row 3).
//! Servers: the application's own (`config.yaml`, overridden by `SECKILL_DATABASE_URL` and
//! `SECKILL_REDIS_URL`).
//!
//! cargo build --release --bin seckill --example bench_consumer
//! target/release/examples/bench_consumer [N] [--config PATH] [--bin SECKILL] [--rounds R] [--json]
//!
//! CPU times come from `/proc` (the MySQL server's only when it runs on this machine, found as
//! a `mariadbd` or `mysqld` process) and `getrusage` of the consumer child; MySQL's statement
//! count is its global `Questions` counter, so other clients of the same server add to it.

use std::path::{Path, PathBuf};
use std::time::Instant;

use chrono::{Duration, Utc};
use rust_decimal::Decimal;
use seckill::buy::{self, Purchase};
use seckill::ops::catalog::{self, NewActivity, NewProduct};
use seckill::{Config, Db, RedisClient};
use sqlx::Row;

mod ceiling;
use ceiling::{bare_insert, read_orders, Shape, SHAPES};

/// Purchases per reserve script call in the standalone run (what `serve` batches under load).
const PER_CALL: usize = 30;

struct Args {
    n: usize,
    config: Option<PathBuf>,
    json: bool,
    /// The `seckill` binary whose consumer is measured (another build, for an A/B run).
    bin: Option<PathBuf>,
    /// Rounds of the ceiling's shapes, in alternating order; each shape's median counts.
    rounds: usize,
}

fn args() -> anyhow::Result<Args> {
    let mut out = Args {
        n: 200_000,
        config: None,
        json: false,
        bin: None,
        rounds: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--config" => {
                out.config = Some(
                    it.next()
                        .ok_or_else(|| anyhow::anyhow!("--config needs a path"))?
                        .into(),
                )
            }
            "--json" => out.json = true,
            "--rounds" => {
                out.rounds = it
                    .next()
                    .and_then(|r| r.parse().ok())
                    .filter(|r| *r >= 1)
                    .ok_or_else(|| anyhow::anyhow!("--rounds needs a count of at least 1"))?
            }
            "--bin" => out.bin = Some(it.next().ok_or_else(|| anyhow::anyhow!("--bin needs a path"))?.into()),
            n => {
                out.n = n.parse().map_err(|_| {
                    anyhow::anyhow!("usage: bench_consumer [N] [--config PATH] [--bin SECKILL] [--rounds R] [--json]")
                })?
            }
        }
    }
    Ok(out)
}

/// utime + stime of a process from `/proc/<pid>/stat`, in seconds.
fn proc_cpu(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces: fields are counted after its closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some(ticks / hz)
}

/// The local MySQL server process, if there is one.
fn mysql_pid() -> Option<String> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let name = e.file_name().into_string().ok()?;
        let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
        matches!(comm.trim(), "mariadbd" | "mysqld").then_some(name)
    })
}

/// CPU seconds (user + system) of the children this process has waited for.
fn children_cpu() -> f64 {
    // SAFETY: getrusage writes into the zeroed struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut u) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(u.ru_utime) + secs(u.ru_stime)
}

fn self_cpu() -> f64 {
    proc_cpu("self").unwrap_or(0.0)
}

async fn questions(db: &Db) -> anyhow::Result<u64> {
    let row = sqlx::query("SHOW GLOBAL STATUS LIKE 'Questions'")
        .fetch_one(db.pool())
        .await?;
    Ok(row.try_get::<String, _>(1)?.parse()?)
}

async fn redis_cpu(redis: &RedisClient) -> anyhow::Result<f64> {
    let info: String = redis::cmd("INFO").arg("cpu").query_async(&mut redis.conn()).await?;
    Ok(info
        .lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(k, _)| *k == "used_cpu_sys" || *k == "used_cpu_user")
        .filter_map(|(_, v)| v.trim().parse::<f64>().ok())
        .sum())
}

/// CPU and statement counters around one phase.
struct Meter {
    wall: Instant,
    mysql: Option<f64>,
    redis: f64,
    questions: u64,
}

/// What one phase cost: wall seconds; CPU seconds of the client, MySQL and Redis; statements.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
struct Cost {
    seconds: f64,
    client_cpu_s: f64,
    mysql_cpu_s: Option<f64>,
    redis_cpu_s: f64,
    statements: u64,
}

impl Meter {
    async fn start(db: &Db, redis: &RedisClient, mysql: &Option<String>) -> anyhow::Result<Meter> {
        Ok(Meter {
            questions: questions(db).await?,
            redis: redis_cpu(redis).await?,
            mysql: mysql.as_deref().and_then(proc_cpu),
            wall: Instant::now(),
        })
    }

    async fn stop(
        self,
        db: &Db,
        redis: &RedisClient,
        mysql: &Option<String>,
        client_cpu_s: f64,
    ) -> anyhow::Result<Cost> {
        let seconds = self.wall.elapsed().as_secs_f64();
        let mysql_cpu_s = match (self.mysql, mysql.as_deref().and_then(proc_cpu)) {
            (Some(a), Some(b)) => Some(b - a),
            _ => None,
        };
        Ok(Cost {
            seconds,
            client_cpu_s,
            mysql_cpu_s,
            redis_cpu_s: redis_cpu(redis).await? - self.redis,
            // The SHOW itself counts once.
            statements: questions(db).await?.saturating_sub(self.questions + 1),
        })
    }
}

/// The configuration of a standalone run: a database and key prefix of its own.
fn own_config(tag: u32) -> anyhow::Result<(String, PathBuf)> {
    let app = Config::load(Path::new("config.yaml"), false)?;
    let server = server_url(&app.database.url);
    let yaml = format!(
        "database:\n  url: {server}/seckill_bench_{tag}\nredis:\n  url: {}\n  key_prefix: bench{tag}\n  durability: none\n",
        app.redis.url
    );
    let path = std::env::temp_dir().join(format!("seckill-bench-{tag}.yaml"));
    std::fs::write(&path, &yaml)?;
    Ok((yaml, path))
}

/// The server part of a database URL: without its database and options.
fn server_url(url: &str) -> String {
    let server = url.split('?').next().unwrap_or_default();
    let authority = server.find("://").map_or(0, |scheme| scheme + 3);
    server[..server[authority..]
        .find('/')
        .map_or(server.len(), |slash| authority + slash)]
        .to_string()
}

async fn reserve(db: &Db, redis: &RedisClient, config: &Config, n: usize) -> anyhow::Result<()> {
    let activity = catalog::create_activity(
        db,
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
        db,
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
    seckill::ops::hot(db, redis, &config.consumer.group, activity).await?;
    seckill::ops::start(db, redis, activity).await?;
    let started = Instant::now();
    let mut conn = redis.conn();
    for chunk in (0..n).collect::<Vec<_>>().chunks(PER_CALL) {
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
        buy::reserve(redis, activity, &purchases).await?;
    }
    eprintln!("reserved {n} units in {:.2}s", started.elapsed().as_secs_f64());
    Ok(())
}

/// One shape of the ceiling, measured: the median round and every round's rate.
#[derive(Debug, serde::Serialize)]
struct Ceiling {
    shape: Shape,
    orders_per_s: f64,
    cost: Cost,
    rounds: Vec<f64>,
}

#[derive(Debug, serde::Serialize)]
struct Report {
    orders: u64,
    batches: u64,
    consumer_orders_per_s: f64,
    consumer: Cost,
    ceiling_prepared_orders_per_s: f64,
    ceiling_prepared: Cost,
    ceiling_text_orders_per_s: f64,
    ceiling_text: Cost,
    /// The best of every shape.
    ceiling_orders_per_s: f64,
    consumer_over_ceiling: f64,
    /// Against the consumer's own shape (bound, 2,000 rows per INSERT, its batches, one connection).
    consumer_over_same_shape: f64,
    /// Every shape measured, the consumer's own first.
    ceilings: Vec<Ceiling>,
    /// CPU µs per order: the consumer's own, MySQL's during the drain and during the bound ceiling.
    consumer_cpu_us_per_order: f64,
    consumer_mysql_cpu_us_per_order: Option<f64>,
    ceiling_mysql_cpu_us_per_order: Option<f64>,
    /// The server's settings that bound the ceiling.
    server: Vec<(String, String)>,
}

/// The MySQL server's version and the settings an INSERT's cost depends on.
async fn server_settings(db: &Db) -> anyhow::Result<Vec<(String, String)>> {
    let version: String = sqlx::query_scalar("SELECT VERSION()").fetch_one(db.pool()).await?;
    let rows = sqlx::query(
        "SHOW GLOBAL VARIABLES WHERE Variable_name IN ('innodb_flush_log_at_trx_commit', \
         'innodb_buffer_pool_size', 'innodb_log_file_size', 'innodb_doublewrite', 'innodb_flush_method', \
         'sync_binlog', 'log_bin', 'innodb_snapshot_isolation', 'innodb_autoinc_lock_mode')",
    )
    .fetch_all(db.pool())
    .await?;
    let mut out = vec![("version".to_string(), version)];
    for r in rows {
        out.push((r.try_get(0)?, r.try_get(1)?));
    }
    Ok(out)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = args()?;
    let tag = std::process::id();
    let (config_path, own) = match &args.config {
        Some(p) => (p.clone(), false),
        None => (own_config(tag)?.1, true),
    };
    let config = Config::load(&config_path, false)?;
    if own {
        seckill::db::migrate(&config).await?;
    }
    let db = Db::connect(&config).await?;
    let redis = RedisClient::connect(&config).await?;
    if own {
        reserve(&db, &redis, &config, args.n).await?;
    }
    let mysql = mysql_pid();

    // 1. The consumer.
    let bin = args
        .bin
        .clone()
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/seckill"));
    let mut consumer = std::process::Command::new(&bin);
    // The run's own file only: an exported SECKILL_KEY_PREFIX would point it elsewhere.
    for name in ["SECKILL_DATABASE_URL", "SECKILL_REDIS_URL", "SECKILL_KEY_PREFIX"] {
        consumer.env_remove(name);
    }
    let cpu0 = children_cpu();
    let meter = Meter::start(&db, &redis, &mysql).await?;
    let out = consumer
        .arg("--config")
        .arg(&config_path)
        .args(["consumer", "--once", "--json"])
        .stderr(std::process::Stdio::inherit())
        .output()?;
    let mut cost = meter.stop(&db, &redis, &mysql, children_cpu() - cpu0).await?;
    anyhow::ensure!(out.status.success(), "seckill consumer --once failed: {}", out.status);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let orders = report["persisted"].as_u64().unwrap_or(0);
    let batches = report["batches"].as_u64().unwrap_or(0).max(1);
    // The consumer's own clock (without process start-up), as row 5 always was.
    cost.seconds = report["seconds"].as_f64().unwrap_or(cost.seconds);
    let consumer_rate = orders as f64 / cost.seconds;

    // 2. The ceiling: the same rows into a fresh database with the same schema.
    let rows = read_orders(&db).await?;
    anyhow::ensure!(
        rows.len() as u64 >= orders,
        "fewer orders in MySQL than the consumer persisted"
    );
    let per_tx = rows.len().div_ceil(batches as usize);
    let db_name = config
        .database
        .url
        .split('?')
        .next()
        .unwrap_or_default()
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_string();
    let mut fresh = config.clone();
    fresh.database.url = format!("{}/{db_name}_ceiling", server_url(&config.database.url));
    // Every shape once per round, the order reversed every other round, so a load that
    // comes and goes does not always fall on the same shapes.
    let mut measured: Vec<Vec<(f64, Cost)>> = SHAPES.iter().map(|_| Vec::new()).collect();
    for round in 0..args.rounds {
        let order: Vec<usize> = if round % 2 == 0 {
            (0..SHAPES.len()).collect()
        } else {
            (0..SHAPES.len()).rev().collect()
        };
        for i in order {
            sqlx::query(&format!("DROP DATABASE IF EXISTS `{db_name}_ceiling`"))
                .execute(db.pool())
                .await?;
            seckill::db::migrate(&fresh).await?;
            let target = Db::connect(&fresh).await?;
            let cpu0 = self_cpu();
            let meter = Meter::start(&db, &redis, &mysql).await?;
            bare_insert(&target, &rows, SHAPES[i], per_tx).await?;
            let cost = meter.stop(&db, &redis, &mysql, self_cpu() - cpu0).await?;
            target.close().await;
            measured[i].push((rows.len() as f64 / cost.seconds, cost));
        }
    }
    let ceilings: Vec<Ceiling> = SHAPES
        .iter()
        .zip(measured)
        .map(|(shape, mut runs)| {
            let rounds: Vec<f64> = runs.iter().map(|(rate, _)| *rate).collect();
            runs.sort_by(|a, b| a.0.total_cmp(&b.0));
            let (orders_per_s, cost) = runs[runs.len() / 2];
            Ceiling {
                shape: *shape,
                orders_per_s,
                cost,
                rounds,
            }
        })
        .collect();
    sqlx::query(&format!("DROP DATABASE IF EXISTS `{db_name}_ceiling`"))
        .execute(db.pool())
        .await?;
    let ceiling = ceilings.iter().map(|c| c.orders_per_s).fold(0.0, f64::max);
    let per_order = |s: f64| s * 1e6 / rows.len().max(1) as f64;
    let r = Report {
        orders,
        batches,
        consumer_orders_per_s: consumer_rate,
        consumer: cost,
        ceiling_prepared_orders_per_s: ceilings[0].orders_per_s,
        ceiling_prepared: ceilings[0].cost,
        ceiling_text_orders_per_s: ceilings[1].orders_per_s,
        ceiling_text: ceilings[1].cost,
        ceiling_orders_per_s: ceiling,
        consumer_over_ceiling: consumer_rate / ceiling,
        consumer_over_same_shape: consumer_rate / ceilings[0].orders_per_s,
        consumer_cpu_us_per_order: per_order(cost.client_cpu_s),
        consumer_mysql_cpu_us_per_order: cost.mysql_cpu_s.map(per_order),
        ceiling_mysql_cpu_us_per_order: ceilings[0].cost.mysql_cpu_s.map(per_order),
        ceilings,
        server: server_settings(&db).await?,
    };
    let line = |what: &str, rate: f64, c: &Cost| {
        let per = per_order;
        eprintln!(
            "{what:<36} {rate:>9.0} orders/s  {:>6.2}s wall; CPU per order: client {:.2} µs, MySQL {}, Redis {:.2} µs; {:.2} statements per 1000 orders",
            c.seconds,
            per(c.client_cpu_s),
            c.mysql_cpu_s.map_or("-".into(), |m| format!("{:.2} µs", per(m))),
            per(c.redis_cpu_s),
            c.statements as f64 * 1000.0 / rows.len().max(1) as f64,
        )
    };
    eprintln!("{orders} orders, {batches} consumer batches ({per_tx} rows per ceiling transaction)");
    line("consumer --once", r.consumer_orders_per_s, &r.consumer);
    for c in &r.ceilings {
        line(&format!("ceiling, {}", c.shape.name), c.orders_per_s, &c.cost);
        if c.rounds.len() > 1 {
            let rounds: Vec<String> = c.rounds.iter().map(|r| format!("{r:.0}")).collect();
            eprintln!("{:<36} rounds: {}", "", rounds.join(" "));
        }
    }
    eprintln!(
        "consumer / ceiling: {:.2} (best shape), {:.2} (the consumer's shape)",
        r.consumer_over_ceiling, r.consumer_over_same_shape
    );
    let settings: Vec<String> = r.server.iter().map(|(k, v)| format!("{k}={v}")).collect();
    eprintln!("server: {}", settings.join(" "));
    if args.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    }

    if own {
        sqlx::query(&format!("DROP DATABASE `{db_name}`"))
            .execute(db.pool())
            .await?;
        let mut conn = redis.conn();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("bench{tag}:*"))
            .query_async(&mut conn)
            .await?;
        if !keys.is_empty() {
            let () = redis::cmd("DEL").arg(keys).query_async(&mut conn).await?;
        }
        let _ = std::fs::remove_file(config_path);
    }
    Ok(())
}
