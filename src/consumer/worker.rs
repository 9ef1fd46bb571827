//! The consumer loop: reclaim, read, persist, acknowledge; back off on failures.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::metrics::{spawn_backlog_refresh, ConsumerMetrics};
use super::{ConsumerOptions, ConsumerReport};
use crate::config::Config;
use crate::db::Db;
use crate::error::{DbContext, Error, Result};
use crate::metrics::Metrics;
use crate::persist::Persisted;
use crate::redis_client::RedisClient;
use crate::reservation::stream;
use crate::reservation::{self, dlq};

mod batch;
mod flight;
mod read;

use batch::{Batch, Held, Reject};
use flight::{Flight, Landed};

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
    /// When the last read that reclaimed idle entries began: reads ahead skip that step, so
    /// one runs at least once per `claim_idle_ms` (see [`Worker::may_read_ahead`]).
    last_reclaim: Instant,
    /// The last read found less than a full batch: the stream is not backlogged, so the next
    /// read waits `consumer.linger_ms` first and no read ahead is made (each read is a write
    /// Redis fsyncs under `appendfsync always`; fewer, larger reads cost the sale less).
    last_read_short: bool,
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
        last_reclaim: Instant::now(),
        last_read_short: false,
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

    /// Reads a batch and sends it to MySQL; while it is in flight, reads the next one ahead,
    /// sends that too (two transactions in flight, see [`persist::persist_after`]), then
    /// lands the older one (acknowledges what committed) and reads ahead again. Until asked
    /// to stop or, with `once`, until nothing is left.
    ///
    /// Every read that starts with nothing in flight nor in hand is the `fetch(false)` below,
    /// and the only one that may block; after a short read it waits `consumer.linger_ms`
    /// first, so batches grow when there is no backlog.
    async fn run_loop(&mut self) {
        let mut ahead: Option<Batch> = None;
        let mut flying: Option<Flight> = None;
        loop {
            let batch = match ahead.take() {
                // Read while the previous batch was in flight: sent even when a stop came
                // meanwhile, like any batch in hand.
                Some(batch) => batch,
                None => {
                    if let Some(older) = flying.take() {
                        // Nothing read ahead: land what is in flight before a read that may block.
                        if !self.land_alone(older, 0).await {
                            return;
                        }
                        continue;
                    }
                    if self.stopping() {
                        self.report.left_pending += self.let_go.unwrap_or(0);
                        return;
                    }
                    if self.let_go.is_some() && !self.mysql_answers().await {
                        continue;
                    }
                    if self.last_read_short && !self.opts.once && self.config.consumer.linger_ms > 0 {
                        // Let more entries gather (see `consumer.linger_ms`); a stop is seen at the top.
                        self.last_read_short = false;
                        let mut stop = self.stop.clone();
                        sleep_or_stop(&mut stop, Duration::from_millis(self.config.consumer.linger_ms)).await;
                        continue;
                    }
                    let (held, drained) = match self.fetch(false).await {
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
                    self.last_read_short = held.len() < self.opts.batch;
                    Batch::new(held)
                }
            };
            let newer = self.launch(batch, flying.as_ref());
            if let Some(older) = flying.take() {
                match self.land(older).await {
                    Landed::Committed => {}
                    Landed::Stop => {
                        self.report.left_pending += newer.held.len() as u64;
                        newer.task.abort();
                        return;
                    }
                    Landed::Refused { entries, orders, error } => {
                        // Both let go of together: the newer one is landed first (it may commit).
                        let more = match self.land(newer).await {
                            Landed::Committed => 0,
                            Landed::Refused { entries, .. } => entries,
                            Landed::Stop => {
                                self.report.left_pending += entries;
                                return;
                            }
                        };
                        if !self.let_go_of_batch(entries + more, orders, &error).await {
                            return;
                        }
                        continue;
                    }
                }
            }
            ahead = if self.may_read_ahead() {
                self.read_ahead().await
            } else {
                None
            };
            if self.two_in_flight() {
                flying = Some(newer);
            } else {
                let read_ahead = ahead.as_ref().map_or(0, |b| b.held.len() as u64);
                if !self.land_alone(newer, read_ahead).await {
                    return;
                }
                if self.let_go.is_some() {
                    ahead = None;
                }
            }
        }
    }

    /// Whether two batches may be in flight at once: each holds a MySQL connection.
    fn two_in_flight(&self) -> bool {
        self.config.database.max_connections >= 2
    }

    /// Whether to read the next batch while this one commits. Not when stopping (the batch
    /// in hand is the last), nor after a short read (no backlog: the next read lingers first), nor while this consumer takes back what it let go of (a read
    /// from its own pending entries would return the batch in flight), nor when the last
    /// reclaim of idle entries is `claim_idle_ms` old: a read ahead leaves those out, since
    /// with `--once` it would claim the batch in flight, and a consumer kept busy by reads
    /// ahead must still take over a dead one's entries.
    fn may_read_ahead(&self) -> bool {
        !self.stopping()
            && !self.last_read_short
            && !self.retake_own
            && self.last_reclaim.elapsed() < Duration::from_millis(self.config.consumer.claim_idle_ms)
    }
}

impl Worker {
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
