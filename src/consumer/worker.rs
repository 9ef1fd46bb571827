//! The consumer loop: reclaim, read, persist, acknowledge; back off on failures.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::AsyncCommands;
use tokio::sync::watch;

use super::metrics::{spawn_backlog_refresh, ConsumerMetrics};
use super::{ConsumerOptions, ConsumerReport};
use crate::config::Config;
use crate::db::Db;
use crate::error::{DbContext, Error, RedisContext, Result};
use crate::metrics::Metrics;
use crate::persist::{self, Persisted};
use crate::redis_client::RedisClient;
use crate::reservation::stream::{self, GroupConsumer, ReadError};
use crate::reservation::{self, dlq, Entry, Reservation};

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
    cursors: HashMap<String, String>,
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
    /// Entries persisted, on a terminal during a `--once` drain (see [`crate::progress`]).
    progress: indicatif::ProgressBar,
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
    let opts_once = opts.once;
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
        progress: if opts_once {
            crate::progress::counter("persisted")
        } else {
            indicatif::ProgressBar::hidden()
        },
    };
    tracing::info!(consumer = %worker.opts.name, batch = worker.opts.batch, once = worker.opts.once, "consumer started");
    worker.run_loop().await;
    worker.progress.finish_and_clear();
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
            let short = held.len() < self.opts.batch;
            if !self.process(held).await {
                return;
            }
            let linger = Duration::from_millis(self.config.consumer.linger_ms);
            if short && !self.opts.once && !linger.is_zero() {
                // Let more entries gather (see `consumer.linger_ms`); a stop is seen at the top.
                let mut stop = self.stop.clone();
                sleep_or_stop(&mut stop, linger).await;
            }
        }
    }
}

/// The activity streams that exist, as (activity, stream name), by activity id.
type Streams = [(u64, String)];

/// The activity whose stream is named `name`.
fn activity_of(streams: &Streams, name: &str) -> Option<u64> {
    streams.iter().find(|(_, n)| n == name).map(|(activity, _)| *activity)
}

fn stream_names(streams: &Streams) -> Vec<String> {
    streams.iter().map(|(_, s)| s.clone()).collect()
}

/// Why (part of) an entry cannot be persisted.
struct Reject {
    /// The purchase's place within the entry; `None`: the entry as a whole is unreadable.
    index: Option<u32>,
    why: String,
}

/// A batch in hand, decoded: the reservations (purchases of the entries) to persist, and why
/// the others cannot be.
struct Decoded {
    reservations: Vec<Reservation>,
    /// Where each reservation's entry is in the batch, by the reservation's place.
    entry_of: Vec<usize>,
    /// What of an entry cannot be persisted, by the entry's place in the batch.
    rejected: HashMap<usize, Vec<Reject>>,
}

fn decode_batch(held: &[Held]) -> Decoded {
    let mut decoded = Decoded {
        reservations: Vec::with_capacity(held.len()),
        entry_of: Vec::with_capacity(held.len()),
        rejected: HashMap::new(),
    };
    for (i, h) in held.iter().enumerate() {
        match reservation::decode_all(h.activity, &h.entry) {
            Ok(all) => {
                for (index, one) in (0u32..).zip(all) {
                    match one {
                        Ok(r) => {
                            decoded.entry_of.push(i);
                            decoded.reservations.push(r);
                        }
                        Err(why) => decoded.rejected.entry(i).or_default().push(Reject {
                            index: Some(index),
                            why,
                        }),
                    }
                }
            }
            Err(why) => {
                decoded.rejected.insert(i, vec![Reject { index: None, why }]);
            }
        }
    }
    decoded
}

impl Worker {
    /// Collects up to a batch: what this consumer let go of and still holds (after a MySQL
    /// outage), entries idle past `claim_idle_ms` (any idle time with `once`), then new ones.
    /// `drained` is true when nothing is left anywhere.
    async fn fetch(&mut self) -> Result<(Vec<Held>, bool)> {
        let streams = self.active_streams().await?;
        self.no_streams = streams.is_empty();
        let mut held = Vec::new();
        if std::mem::take(&mut self.retake_own) && !streams.is_empty() {
            held = self.retake_own_pending(&streams).await?;
        }
        let mut drained = self.reclaim_idle(&streams, &mut held).await?;
        if held.len() < self.opts.batch && !streams.is_empty() {
            self.read_new(&streams, &mut held).await?;
        }
        if !held.is_empty() {
            drained = false;
        }
        let purchases: usize = held
            .iter()
            .map(|h| reservation::purchases(&h.entry).map_or(1, |p| p.len()))
            .sum();
        self.stats.read.increment(purchases as u64);
        Ok((held, drained))
    }

    /// The streams of the preheated activities that exist (each activity's own, then its
    /// buckets', see [`crate::buckets`]), by activity id.
    async fn active_streams(&self) -> Result<Vec<(u64, String)>> {
        let keys = self.redis.keys();
        let mut conn = self.redis.conn();
        let mut ids: Vec<u64> = conn.smembers(keys.activities()).await.at(&self.redis)?;
        ids.sort_unstable();
        let mut streams = Vec::new();
        for id in ids {
            for name in crate::buckets::stock::streams(&self.redis, id).await? {
                let exists: bool = conn.exists(&name).await.at(&self.redis)?;
                if exists {
                    streams.push((id, name));
                }
            }
        }
        Ok(streams)
    }

    /// Up to a batch of the entries this consumer let go of and still holds (nobody reclaimed
    /// them meanwhile); asks for another round when there may be more.
    async fn retake_own_pending(&mut self, streams: &Streams) -> Result<Vec<Held>> {
        let batch = self.opts.batch;
        let own = self
            .group_consumer(&self.redis)
            .read_own_pending(&stream_names(streams), batch)
            .await?;
        let mut held = Vec::new();
        for (s, entries) in own {
            let Some(activity) = activity_of(streams, &s) else {
                continue;
            };
            held.extend(self.with_deliveries(activity, &s, entries).await?);
        }
        held.truncate(batch);
        if held.len() == batch {
            // More may be held: take them back on the next round too.
            self.retake_own = true;
        }
        Ok(held)
    }

    /// This consumer of the group, asking `redis` (the reader for blocking reads).
    fn group_consumer<'a>(&'a self, redis: &'a RedisClient) -> GroupConsumer<'a> {
        GroupConsumer {
            redis,
            group: &self.config.consumer.group,
            name: &self.opts.name,
        }
    }

    /// `entries` of `stream`, pending for this consumer, with how often each was delivered.
    async fn with_deliveries(&self, activity: u64, stream: &str, entries: Vec<Entry>) -> Result<Vec<Held>> {
        let ids: Vec<&str> = entries.iter().map(|e| e.id.as_str()).collect();
        let counts = self.group_consumer(&self.redis).delivery_counts(stream, &ids).await?;
        Ok(entries
            .into_iter()
            .map(|entry| Held {
                activity,
                stream: stream.to_string(),
                deliveries: counts.get(&entry.id).copied().unwrap_or(1),
                entry,
            })
            .collect())
    }

    /// Takes over entries idle past `claim_idle_ms` (any idle time with `once`) until `held`
    /// is a full batch, going on with each stream's scan where the last call stopped. True
    /// when every scan went through its whole pending list.
    async fn reclaim_idle(&mut self, streams: &Streams, held: &mut Vec<Held>) -> Result<bool> {
        let batch = self.opts.batch;
        let group = self.config.consumer.group.clone();
        let min_idle_ms = if self.opts.once {
            0
        } else {
            self.config.consumer.claim_idle_ms
        };
        let mut drained = true;
        for (activity, s) in streams {
            if held.len() >= batch {
                drained = false;
                break;
            }
            let start = self.cursors.get(s).cloned().unwrap_or_else(|| "0-0".into());
            let claim = stream::Claim {
                stream: s,
                min_idle_ms,
                start: &start,
                count: batch - held.len(),
            };
            let claimed = self.group_consumer(&self.redis).autoclaim(claim).await;
            let (next, entries) = match claimed {
                Err(ReadError::NoGroup(_)) => {
                    reservation::ensure_group(&self.redis, *activity, &group).await?;
                    continue;
                }
                other => other?,
            };
            if next != "0-0" {
                drained = false;
            }
            self.cursors.insert(s.clone(), next);
            if entries.is_empty() {
                continue;
            }
            let claimed = self.with_deliveries(*activity, s, entries).await?;
            self.report.reclaimed += claimed.len() as u64;
            held.extend(claimed);
        }
        Ok(drained)
    }

    /// New entries until `held` is a full batch, waiting up to `block_ms` for them when
    /// nothing is in hand yet (never with `once`).
    async fn read_new(&mut self, streams: &Streams, held: &mut Vec<Held>) -> Result<()> {
        let group = &self.config.consumer.group;
        let block = (held.is_empty() && !self.opts.once).then_some(self.config.consumer.block_ms);
        let read = self
            .group_consumer(&self.reader)
            .read_new(&stream_names(streams), self.opts.batch - held.len(), block)
            .await;
        let read = match read {
            Err(ReadError::NoGroup(_)) => {
                for (activity, _) in streams {
                    reservation::ensure_group(&self.redis, *activity, group).await?;
                }
                return Ok(());
            }
            other => other?,
        };
        for (s, entries) in read {
            let Some(activity) = activity_of(streams, &s) else {
                continue;
            };
            held.extend(entries.into_iter().map(|entry| Held {
                activity,
                stream: s.clone(),
                entry,
                deliveries: 1,
            }));
        }
        Ok(())
    }

    /// Persists the batch (waiting out MySQL outages), acknowledges what committed and
    /// buries entries that failed too often. Returns false when asked to stop meanwhile.
    async fn process(&mut self, held: Vec<Held>) -> bool {
        let started = Instant::now();
        let Decoded {
            reservations,
            entry_of,
            mut rejected,
        } = decode_batch(&held);
        let reason = format!("consumer {}", self.opts.name);
        let done = match persist::persist(&self.db, &self.redis, &reservations, &reason).await {
            Ok(done) => done,
            Err(e) => return self.let_go_of_batch(held.len() as u64, reservations.len(), &e).await,
        };
        // Rare (a product missing from MySQL): indexed only when it happens.
        let by_order: HashMap<&str, usize> = if done.rejected.is_empty() {
            HashMap::new()
        } else {
            reservations
                .iter()
                .map(|r| r.order_no.as_str())
                .zip(entry_of.iter().copied())
                .collect()
        };
        for (order_no, why) in &done.rejected {
            if let (Some(i), Some((_, _, index))) = (
                by_order.get(order_no.as_str()),
                crate::keys::parse_purchase_no(order_no),
            ) {
                rejected.entry(*i).or_default().push(Reject {
                    index: Some(index),
                    why: why.clone(),
                });
            }
        }
        if !self.ack_committed(&held, &rejected).await {
            return false;
        }
        self.bury_or_keep(&held, rejected).await;
        self.record_batch(&done, started);
        true
    }

    /// MySQL refused the batch of `entries` entries (`orders` of them decoded): lets go of it
    /// rather than hold it through the outage. The entries stay pending, and once idle for
    /// `claim_idle_ms` a consumer that can reach MySQL reclaims them; this one reads nothing
    /// until MySQL answers again. Returns false when asked to stop meanwhile.
    async fn let_go_of_batch(&mut self, entries: u64, orders: usize, e: &Error) -> bool {
        self.let_go = Some(entries);
        let what = format!("persisting {orders} orders failed; leaving them pending for another consumer");
        if self.failed(&what, e).await {
            self.report.left_pending += entries;
            return false;
        }
        true
    }

    /// Acknowledges every entry of the batch but the `rejected` ones, retrying until Redis
    /// answers. Returns false when asked to stop meanwhile.
    async fn ack_committed(&mut self, held: &[Held], rejected: &HashMap<usize, Vec<Reject>>) -> bool {
        let mut acks: HashMap<&str, Vec<&str>> = HashMap::new();
        for (i, h) in held.iter().enumerate() {
            if !rejected.contains_key(&i) {
                acks.entry(h.stream.as_str()).or_default().push(h.entry.id.as_str());
            }
        }
        let group = self.config.consumer.group.clone();
        for (s, ids) in acks {
            loop {
                match stream::ack(&self.redis, s, &group, &ids).await {
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
        true
    }

    /// Moves what cannot be persisted to the dead-letter stream once its entry was delivered
    /// `max_deliveries` times (each bad purchase alone, or the whole entry when it cannot be
    /// split), acknowledging the entry: its other purchases are in MySQL by now. Leaves the
    /// others pending for another try.
    async fn bury_or_keep(&mut self, held: &[Held], rejected: HashMap<usize, Vec<Reject>>) {
        let group = self.config.consumer.group.clone();
        for (i, rejects) in rejected {
            let h = &held[i];
            let why: Vec<&str> = rejects.iter().map(|r| r.why.as_str()).collect();
            let why = why.join("; ");
            if h.deliveries < self.config.consumer.max_deliveries {
                tracing::warn!(activity = h.activity, entry = %h.entry.id, deliveries = h.deliveries, error = %why, "entry cannot be persisted; left pending for another try");
                continue;
            }
            let split = reservation::purchases(&h.entry).unwrap_or_default();
            let letters: Vec<dlq::Letter<'_>> = rejects
                .iter()
                .map(|r| match r.index.and_then(|k| split.get(k as usize).map(|e| (k, e))) {
                    Some((k, one)) => dlq::Letter {
                        entry: one,
                        index: Some(k),
                        error: &r.why,
                    },
                    None => dlq::Letter {
                        entry: &h.entry,
                        index: None,
                        error: &r.why,
                    },
                })
                .collect();
            let buried = dlq::bury_letters(
                &self.redis,
                (h.activity, &group, &self.opts.name),
                &h.entry.id,
                &letters,
                h.deliveries,
            )
            .await;
            match buried {
                Ok(()) => {
                    self.report.dead_lettered += letters.len() as u64;
                    self.stats.dead_lettered.increment(letters.len() as u64);
                    tracing::error!(activity = h.activity, entry = %h.entry.id, deliveries = h.deliveries, error = %why, "moved to the dead-letter stream");
                }
                Err(e) => {
                    tracing::warn!(error = %e, entry = %h.entry.id, "could not move to the dead-letter stream; the entry stays pending")
                }
            }
        }
    }

    /// Counts a committed batch, and ends the back-off.
    fn record_batch(&mut self, done: &Persisted, started: Instant) {
        self.backoff = Duration::from_millis(self.config.consumer.retry_base_ms);
        self.report.batches += 1;
        self.report.persisted += done.inserted;
        self.report.duplicates += done.duplicates;
        self.progress.inc(done.inserted + done.duplicates);
        self.stats.persisted.increment(done.inserted);
        self.stats.duplicates.increment(done.duplicates);
        self.stats.batch_seconds.record(started.elapsed().as_secs_f64());
        tracing::debug!(
            inserted = done.inserted,
            duplicates = done.duplicates,
            "batch persisted"
        );
    }

    /// After a failed batch: waits out the back-off, then asks MySQL whether the orders
    /// table answers. True when it does (reading may resume), false to wait again.
    async fn mysql_answers(&mut self) -> bool {
        let probe = sqlx::query("SELECT 1 FROM orders LIMIT 0")
            .execute(self.db.pool())
            .await
            .at(&self.db);
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
