//! `seckill bench`: a rehearsal of a flash sale with invariant checks.
//!
//! [`run`] sets up a throwaway activity ([`setup`]), issues the tokens, starts the sale,
//! fires the herd at a server ([`load`]; one started in-process with `--spawn`, see
//! [`harness`]), waits for the consumers to persist every reservation, runs reconcile and
//! judges the promises from MySQL and the stream ([`verify`]), then removes the activity.
//! [`probe`] measures the load generator itself against a cheap GET.

pub mod conn;
pub mod during;
pub mod harness;
pub mod live;
pub mod load;
pub mod report;
pub mod setup;
pub mod verify;

use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::AsyncCommands;

use crate::config::Config;
use crate::db::Db;
use crate::error::{Error, RedisContext, Result};
use crate::ops::reconcile;
use crate::redis_client::RedisClient;
use crate::token::Signer;
use harness::{Consumers, SpawnedServer};
use load::{LiveCounts, LoadPlan, LoadResult, Target};
pub use report::{BenchReport, Latency, ProbeReport};
use setup::Sale;
use verify::Invariants;

/// Which server takes the herd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Server {
    /// A running `seckill serve` (`http://host:port`), with its own configuration; it must
    /// share this configuration's Redis, key prefix and token secret.
    Url(String),
    /// One started in this process on 127.0.0.1:0 with the rate limits relaxed
    /// ([`harness::relaxed`]), stopped after the load.
    Spawn,
}

/// What a bench run does.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Units on sale.
    pub stock: u32,
    /// Distinct buyers (each gets a token).
    pub users: u64,
    /// Buy requests in all (buyers are used round-robin).
    pub requests: u64,
    /// Keep-alive connections.
    pub concurrency: usize,
    /// Units one user may hold.
    pub limit_per_user: u32,
    /// Stock buckets of the product (1: none; see [`crate::buckets`]).
    pub shards: u16,
    /// Where the requests go.
    pub server: Server,
    /// Consumers started in-process; 0: running `seckill consumer` daemons persist.
    pub consumers: usize,
    /// How long to wait for every reservation to be persisted.
    pub drain_timeout: Duration,
    /// Leave the activity, its orders and keys in place.
    pub keep: bool,
    /// Fault injection: units added to the Redis stock behind MySQL's back right after the
    /// start, so the run oversells and must fail. Only tests set it (the CLI has no flag
    /// for it); 0 otherwise.
    pub chaos_extra_stock: u32,
}

/// `host:port` of an `http://host:port[/...]` URL.
pub fn authority_of(url: &str) -> Result<String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| Error::invalid(format!("{url:?}: only http://host:port URLs are supported")))?;
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() {
        return Err(Error::invalid(format!("{url:?}: no host:port")));
    }
    Ok(authority.to_string())
}

fn check(opts: &BenchOptions) -> Result<()> {
    if opts.stock == 0 || opts.users == 0 || opts.requests == 0 || opts.concurrency == 0 {
        return Err(Error::invalid(
            "--stock, --users, --requests and --concurrency must be positive",
        ));
    }
    if opts.limit_per_user == 0 {
        return Err(Error::invalid("--limit-per-user must be at least 1"));
    }
    if !(1..=crate::ops::catalog::MAX_SHARDS).contains(&opts.shards) {
        return Err(Error::invalid("--shards: 1 to 1024"));
    }
    if opts.users > 10_000_000 {
        return Err(Error::invalid("--users: at most 10,000,000"));
    }
    Ok(())
}

/// Runs one rehearsal against the configured MySQL and Redis and reports it. The report
/// says whether the invariants held; an `Err` means the rehearsal itself could not run.
pub async fn run(config: &Config, opts: BenchOptions) -> Result<BenchReport> {
    check(&opts)?;
    let target = match &opts.server {
        Server::Url(url) => Some(authority_of(url)?),
        Server::Spawn => None,
    };
    let db = Db::connect(config).await?;
    let redis = RedisClient::connect(config).await?;
    let group = config.consumer.group.clone();
    let sale = setup::create(&db, &redis, &group, opts.stock, opts.limit_per_user, opts.shards).await?;
    tracing::info!(activity = sale.activity, name = %sale.name, "bench activity created");
    let outcome = rehearse(config, &opts, &db, &redis, &sale, target).await;
    if opts.keep {
        tracing::info!(
            activity = sale.activity,
            "--keep: the bench activity, its orders and keys stay"
        );
    } else if let Err(e) = setup::remove(&db, &redis, &group, sale.activity).await {
        tracing::error!(activity = sale.activity, error = %e, "could not remove the bench activity");
        if outcome.is_ok() {
            return Err(e);
        }
    }
    db.close().await;
    outcome
}

async fn rehearse(
    config: &Config,
    opts: &BenchOptions,
    db: &Db,
    redis: &RedisClient,
    sale: &Sale,
    target: Option<String>,
) -> Result<BenchReport> {
    let signer = Signer::new(&config.token.secret);
    let buyers = setup::buyers(redis, &signer, sale.activity, opts.users).await?;
    crate::ops::start(db, redis, sale.activity).await?;
    if opts.chaos_extra_stock > 0 {
        let mut conn = redis.conn();
        let key = redis.keys().product(sale.activity, sale.product);
        let _: i64 = conn.hincr(&key, "stock", opts.chaos_extra_stock).await.at(redis)?;
        tracing::warn!(
            units = opts.chaos_extra_stock,
            "chaos: stock added in Redis behind MySQL's back"
        );
    }
    let spawned = match target {
        Some(_) => None,
        None => {
            Some(SpawnedServer::start(harness::relaxed(config, opts.concurrency), redis.clone(), db.clone()).await?)
        }
    };
    let consumers = Consumers::start(config, opts.consumers);
    let authority = target.unwrap_or_else(|| spawned.as_ref().map(|s| s.authority.clone()).unwrap_or_default());
    let live = Arc::new(LiveCounts::default());
    let bar = live::LiveBar::start(opts.requests, live.clone());
    let plan = LoadPlan {
        authority: authority.clone(),
        target: Target::Buy {
            product_id: sale.product,
            buyers: Arc::new(buyers),
        },
        requests: opts.requests,
        concurrency: opts.concurrency,
    };
    let before = during::snapshot(&authority, redis).await;
    let started_unix_ms = during::unix_ms();
    let loaded = load::run(plan, live).await;
    let ended_unix_ms = during::unix_ms();
    bar.finish();
    let after = during::snapshot(&authority, redis).await;
    let during_load = during::between(&before, &after, started_unix_ms, ended_unix_ms);
    if let Some(server) = spawned {
        server.stop().await;
    }
    let loaded = match loaded {
        Ok(l) => l,
        Err(e) => {
            consumers.stop().await;
            return Err(e);
        }
    };
    let drain_started = Instant::now();
    let drained = drain(redis, &config.consumer.group, sale.activity, opts.drain_timeout).await;
    let drain = drain_started.elapsed();
    consumers.stop().await;
    let left = drained?;
    crate::ops::stop(db, redis, sale.activity, true).await?;
    let grace = Duration::from_secs(config.orders.in_flight_grace_secs);
    let reconciled = reconcile::reconcile(db, redis, &config.consumer.group, sale.activity, grace, false).await?;
    let evidence = verify::gather(db, redis, sale.activity, sale.product).await?;
    let queued = loaded.outcomes.get("queued").copied().unwrap_or(0);
    let invariants = Invariants::judge(&evidence, queued, &reconciled);
    let error = (left > 0).then(|| not_drained(left, opts));
    Ok(report::build(
        opts,
        sale,
        &authority,
        &loaded,
        &evidence,
        invariants,
        &reconciled,
        drain,
        during_load,
        error,
    ))
}

fn not_drained(left: u64, opts: &BenchOptions) -> String {
    let hint = if opts.consumers == 0 {
        "with --consumers 0 running `seckill consumer` daemons must persist them; start some or pass --consumers 1"
    } else {
        "the consumers could not persist them; see the log"
    };
    format!(
        "{left} reservations were still not persisted after {}: {hint}",
        humantime::format_duration(opts.drain_timeout)
    )
}

/// Waits until the activity has no reservation left to persist, or `timeout` passes;
/// returns how many are left.
async fn drain(redis: &RedisClient, group: &str, activity: u64, timeout: Duration) -> Result<u64> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = crate::reservation::backlog(redis, activity, group).await?;
        if left == 0 || Instant::now() >= deadline {
            return Ok(left);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Measures the load generator alone: `requests` GETs of `path` over `concurrency`
/// keep-alive connections to a running server (compare with `wrk` against `/health`).
pub async fn probe(url: &str, path: &str, requests: u64, concurrency: usize) -> Result<ProbeReport> {
    let authority = authority_of(url)?;
    let live = Arc::new(LiveCounts::default());
    let bar = live::LiveBar::start(requests, live.clone());
    let plan = LoadPlan {
        authority: authority.clone(),
        target: Target::Get { path: path.into() },
        requests,
        concurrency,
    };
    let result: Result<LoadResult> = load::run(plan, live).await;
    bar.finish();
    let result = result?;
    Ok(ProbeReport {
        url: format!("http://{authority}{path}"),
        requests: result.requests,
        concurrency,
        duration_s: result.duration.as_secs_f64(),
        rps: report::rate(result.requests, result.duration),
        latency_ms: Latency::of(&result),
        outcomes: result.outcomes,
    })
}
