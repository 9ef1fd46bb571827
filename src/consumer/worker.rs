//! The consumer loop: reclaim, read, persist, acknowledge; back off on failures.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::AsyncCommands;
use tokio::sync::watch;

use super::metrics::{spawn_backlog_refresh, ConsumerMetrics};
use super::persist::{self, Reservation};
use super::stream::{self, Entry};
use super::{dlq, ConsumerOptions, ConsumerReport};
use crate::config::Config;
use crate::db::Db;
use crate::error::Result;
use crate::metrics::Metrics;
use crate::redis_client::RedisClient;

/// One entry in hand: its activity, stream, the entry and how often it was delivered.
struct Held {
    activity: u64,
    stream: String,
    entry: Entry,
    deliveries: u64,
}

struct Worker {
    config: Config,
    opts: ConsumerOptions,
    db: Db,
    redis: RedisClient,
    /// Blocking reads get their own connection: a BLOCK on the shared one would stall
    /// every other command queued behind it.
    reader: RedisClient,
    stop: watch::Receiver<bool>,
    cursors: HashMap<u64, String>,
    /// No activity stream exists yet, so reads return at once and the loop must pause.
    no_streams: bool,
    report: ConsumerReport,
    backoff: Duration,
    /// Entries of the last batch MySQL refused, left pending (unacknowledged) in Redis for
    /// whichever consumer reclaims them first; `Some` while MySQL has not answered since.
    let_go: Option<u64>,
    /// MySQL answers again after an outage: take back first what this consumer let go of
    /// and nobody reclaimed meanwhile, instead of leaving it for `claim_idle_ms`.
    retake_own: bool,
    stats: ConsumerMetrics,
}

/// How often the backlog gauges (pending, lag, dead letters) are read from Redis.
const BACKLOG_REFRESH: Duration = Duration::from_secs(5);

/// Runs a consumer until `shutdown` resolves (the batch in hand is finished and acked
/// first) or, with `once`, until nothing is left to persist. MySQL and Redis outages are
/// waited out with backoff; they never end the loop.
pub async fn run(
    config: &Config,
    opts: ConsumerOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<ConsumerReport> {
    run_with_metrics(config, opts, None, shutdown).await
}

/// [`run`], recording into `metrics` (when given) what it does and, every few seconds,
/// the backlog of every activity.
pub async fn run_with_metrics(
    config: &Config,
    opts: ConsumerOptions,
    metrics: Option<Arc<Metrics>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<ConsumerReport> {
    let started = Instant::now();
    let (stop_tx, stop) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let mut reader_config = config.clone();
    reader_config.redis.response_timeout_ms = config.redis.response_timeout_ms + config.consumer.block_ms;
    let base = Duration::from_millis(config.consumer.retry_base_ms);
    let mut stop_wait = stop.clone();
    let (redis, reader) = loop {
        let connected = async {
            Ok::<_, crate::Error>((
                RedisClient::connect(config).await?,
                RedisClient::connect(&reader_config).await?,
            ))
        };
        match connected.await {
            Ok(pair) => break pair,
            Err(e) => {
                tracing::warn!(error = %e, "cannot reach Redis; retrying");
                if sleep_or_stop(&mut stop_wait, base).await {
                    return Ok(ConsumerReport {
                        name: opts.name,
                        ..Default::default()
                    });
                }
            }
        }
    };
    // The refresh task ends when `_done` is dropped, i.e. when this function returns.
    let (_done, done) = watch::channel(false);
    let stats = match metrics {
        Some(registry) => {
            spawn_backlog_refresh(
                redis.clone(),
                config.consumer.group.clone(),
                registry.clone(),
                BACKLOG_REFRESH,
                done,
            );
            ConsumerMetrics::new(registry)
        }
        None => ConsumerMetrics::noop(),
    };
    let mut worker = Worker {
        stats,
        db: Db::connect_lazy(config)?,
        config: config.clone(),
        report: ConsumerReport {
            name: opts.name.clone(),
            ..Default::default()
        },
        opts,
        redis,
        reader,
        stop,
        cursors: HashMap::new(),
        no_streams: false,
        backoff: base,
        let_go: None,
        retake_own: false,
    };
    tracing::info!(consumer = %worker.opts.name, batch = worker.opts.batch, once = worker.opts.once, "consumer started");
    worker.run_loop().await;
    if let Some(registry) = worker.stats.registry() {
        // Final figures, so a `--once` run's backlog gauges show where it left off.
        let mut gauges = std::collections::HashMap::new();
        let group = &worker.config.consumer.group;
        if let Err(e) = super::metrics::refresh_backlog(&worker.redis, group, registry, &mut gauges).await {
            tracing::debug!(error = %e, "backlog gauge refresh failed");
        }
    }
    worker.db.close().await;
    worker.report.seconds = started.elapsed().as_secs_f64();
    Ok(worker.report)
}

/// Sleeps `d` unless a stop is requested first; returns whether to stop.
async fn sleep_or_stop(stop: &mut watch::Receiver<bool>, d: Duration) -> bool {
    if *stop.borrow() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => *stop.borrow(),
        _ = stop.changed() => true,
    }
}

impl Worker {
    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    async fn failed(&mut self, what: &str, e: &crate::Error) -> bool {
        self.report.retries += 1;
        self.stats.retries.increment(1);
        tracing::warn!(error = %e, retry_in_ms = self.backoff.as_millis() as u64, "{what}; retrying");
        let d = self.backoff;
        self.backoff = (self.backoff * 2).min(Duration::from_millis(self.config.consumer.retry_max_ms));
        let mut stop = self.stop.clone();
        sleep_or_stop(&mut stop, d).await
    }

    async fn run_loop(&mut self) {
        loop {
            if self.stopping() {
                self.report.left_pending += self.let_go.unwrap_or(0);
                return;
            }
            if self.let_go.is_some() && !self.mysql_answers().await {
                continue;
            }
            let (held, drained) = match self.fetch().await {
                Ok(x) => x,
                Err(e) => {
                    if self.failed("reading the order streams failed", &e).await {
                        return;
                    }
                    continue;
                }
            };
            if held.is_empty() {
                if self.opts.once && drained {
                    return;
                }
                if self.opts.once {
                    continue;
                }
                // Nothing to read (or no activity yet): XREADGROUP did not block, so pause here.
                let idle = Duration::from_millis(self.config.consumer.block_ms.min(1000));
                let mut stop = self.stop.clone();
                if self.no_streams && sleep_or_stop(&mut stop, idle).await {
                    return;
                }
                continue;
            }
            if !self.process(held).await {
                return;
            }
        }
    }
}

impl Worker {
    /// Collects up to a batch: entries idle past `claim_idle_ms` (any idle time with
    /// `once`) first, then new ones. `drained` is true when nothing is left anywhere.
    async fn fetch(&mut self) -> Result<(Vec<Held>, bool)> {
        let keys = self.redis.keys().clone();
        let mut conn = self.redis.conn();
        let mut ids: Vec<u64> = conn.smembers(keys.activities()).await.map_err(|e| self.redis.err(e))?;
        ids.sort_unstable();
        let mut streams = Vec::new();
        for id in ids {
            let name = keys.orders_stream(id);
            let exists: bool = conn.exists(&name).await.map_err(|e| self.redis.err(e))?;
            if exists {
                streams.push((id, name));
            }
        }
        self.no_streams = streams.is_empty();
        let (batch, group, name) = (
            self.opts.batch,
            self.config.consumer.group.clone(),
            self.opts.name.clone(),
        );
        let min_idle = if self.opts.once {
            0
        } else {
            self.config.consumer.claim_idle_ms
        };
        let mut held = Vec::new();
        if std::mem::take(&mut self.retake_own) && !streams.is_empty() {
            let names: Vec<String> = streams.iter().map(|(_, s)| s.clone()).collect();
            for (s, entries) in stream::read_own_pending(&mut conn, &self.redis, &group, &name, &names, batch).await? {
                let Some((activity, _)) = streams.iter().find(|(_, n)| *n == s) else {
                    continue;
                };
                let ids: Vec<&str> = entries.iter().map(|e| e.id.as_str()).collect();
                let counts = stream::delivery_counts(&mut conn, &self.redis, &s, &group, &name, &ids).await?;
                for entry in entries {
                    let deliveries = counts.get(&entry.id).copied().unwrap_or(1);
                    held.push(Held {
                        activity: *activity,
                        stream: s.clone(),
                        entry,
                        deliveries,
                    });
                }
            }
            held.truncate(batch);
            if held.len() == batch {
                // More may be held: take them back on the next round too.
                self.retake_own = true;
            }
        }
        let mut drained = true;
        for (activity, s) in &streams {
            if held.len() >= batch {
                drained = false;
                break;
            }
            let start = self.cursors.get(activity).cloned().unwrap_or_else(|| "0-0".into());
            let claim = stream::Claim {
                stream: s,
                min_idle_ms: min_idle,
                start: &start,
                count: batch - held.len(),
            };
            let claimed = stream::autoclaim(&mut conn, &self.redis, &group, &name, claim).await;
            let (next, entries) = match claimed {
                Err(e) if e.to_string().contains("NOGROUP") => {
                    crate::queue::ensure_group(&self.redis, *activity, &group).await?;
                    continue;
                }
                other => other?,
            };
            if next != "0-0" {
                drained = false;
            }
            self.cursors.insert(*activity, next);
            if entries.is_empty() {
                continue;
            }
            let ids: Vec<&str> = entries.iter().map(|e| e.id.as_str()).collect();
            let counts = stream::delivery_counts(&mut conn, &self.redis, s, &group, &name, &ids).await?;
            self.report.reclaimed += entries.len() as u64;
            for entry in entries {
                let deliveries = counts.get(&entry.id).copied().unwrap_or(1);
                held.push(Held {
                    activity: *activity,
                    stream: s.clone(),
                    entry,
                    deliveries,
                });
            }
        }
        if held.len() < batch && !streams.is_empty() {
            let block = (held.is_empty() && !self.opts.once).then_some(self.config.consumer.block_ms);
            let names: Vec<String> = streams.iter().map(|(_, s)| s.clone()).collect();
            let mut reader = self.reader.conn();
            let read = stream::read_new(
                &mut reader,
                &self.reader,
                &group,
                &name,
                &names,
                batch - held.len(),
                block,
            )
            .await;
            let read = match read {
                Err(e) if e.to_string().contains("NOGROUP") => {
                    for (activity, _) in &streams {
                        crate::queue::ensure_group(&self.redis, *activity, &group).await?;
                    }
                    Vec::new()
                }
                other => other?,
            };
            for (s, entries) in read {
                let Some((activity, _)) = streams.iter().find(|(_, n)| *n == s) else {
                    continue;
                };
                for entry in entries {
                    held.push(Held {
                        activity: *activity,
                        stream: s.clone(),
                        entry,
                        deliveries: 1,
                    });
                }
            }
        }
        if !held.is_empty() {
            drained = false;
        }
        self.stats.read.increment(held.len() as u64);
        Ok((held, drained))
    }

    /// Persists the batch (waiting out MySQL outages), acknowledges what committed and
    /// buries entries that failed too often. Returns false when asked to stop meanwhile.
    async fn process(&mut self, held: Vec<Held>) -> bool {
        let started = Instant::now();
        let mut reservations: Vec<Reservation> = Vec::with_capacity(held.len());
        let mut rejected: HashMap<usize, String> = HashMap::new();
        let mut by_order: HashMap<String, usize> = HashMap::with_capacity(held.len());
        for (i, h) in held.iter().enumerate() {
            match persist::parse(h.activity, &h.entry) {
                Ok(r) => {
                    by_order.insert(r.order_no.clone(), i);
                    reservations.push(r);
                }
                Err(why) => {
                    rejected.insert(i, why);
                }
            }
        }
        let reason = format!("consumer {}", self.opts.name);
        let done = match persist::persist(&self.db, &self.redis, &reservations, &reason).await {
            Ok(done) => done,
            Err(e) => {
                // Let go of the batch rather than hold it through the outage: the entries stay
                // pending, and once idle for `claim_idle_ms` a consumer that can reach MySQL
                // reclaims them. This one reads nothing until MySQL answers again.
                self.let_go = Some(held.len() as u64);
                let what = format!(
                    "persisting {} orders failed; leaving them pending for another consumer",
                    reservations.len()
                );
                if self.failed(&what, &e).await {
                    self.report.left_pending += held.len() as u64;
                    return false;
                }
                return true;
            }
        };
        for (order_no, why) in done.rejected {
            if let Some(i) = by_order.get(&order_no) {
                rejected.insert(*i, why);
            }
        }
        let mut acks: HashMap<&str, Vec<&str>> = HashMap::new();
        for (i, h) in held.iter().enumerate() {
            if !rejected.contains_key(&i) {
                acks.entry(h.stream.as_str()).or_default().push(h.entry.id.as_str());
            }
        }
        let group = self.config.consumer.group.clone();
        for (s, ids) in acks {
            loop {
                let mut conn = self.redis.conn();
                match stream::ack(&mut conn, &self.redis, s, &group, &ids).await {
                    Ok(()) => break,
                    Err(e) => {
                        // Committed but not acked: redelivery later is harmless (idempotent).
                        if self.failed("acknowledging persisted entries failed", &e).await {
                            self.report.left_pending += ids.len() as u64;
                            return false;
                        }
                    }
                }
            }
        }
        for (i, why) in rejected {
            let h = &held[i];
            if h.deliveries >= self.config.consumer.max_deliveries {
                match dlq::bury(
                    &self.redis,
                    h.activity,
                    &group,
                    &self.opts.name,
                    &h.entry,
                    &why,
                    h.deliveries,
                )
                .await
                {
                    Ok(()) => {
                        self.report.dead_lettered += 1;
                        self.stats.dead_lettered.increment(1);
                        tracing::error!(activity = h.activity, entry = %h.entry.id, deliveries = h.deliveries, error = %why, "entry moved to the dead-letter stream");
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, entry = %h.entry.id, "could not move entry to the dead-letter stream; it stays pending")
                    }
                }
            } else {
                tracing::warn!(activity = h.activity, entry = %h.entry.id, deliveries = h.deliveries, error = %why, "entry cannot be persisted; left pending for another try");
            }
        }
        self.backoff = Duration::from_millis(self.config.consumer.retry_base_ms);
        self.report.batches += 1;
        self.report.persisted += done.inserted;
        self.report.duplicates += done.duplicates;
        self.stats.persisted.increment(done.inserted);
        self.stats.duplicates.increment(done.duplicates);
        self.stats.batch_seconds.record(started.elapsed().as_secs_f64());
        tracing::debug!(
            inserted = done.inserted,
            duplicates = done.duplicates,
            "batch persisted"
        );
        true
    }

    /// After a failed batch: waits out the back-off, then asks MySQL whether the orders
    /// table answers. True when it does (reading may resume), false to wait again.
    async fn mysql_answers(&mut self) -> bool {
        let probe = sqlx::query("SELECT 1 FROM orders LIMIT 0")
            .execute(self.db.pool())
            .await
            .map_err(|e| self.db.err(e));
        match probe {
            Ok(_) => {
                self.let_go = None;
                self.retake_own = true;
                self.backoff = Duration::from_millis(self.config.consumer.retry_base_ms);
                true
            }
            Err(e) => {
                self.failed("MySQL still unreachable", &e).await;
                false
            }
        }
    }
}
