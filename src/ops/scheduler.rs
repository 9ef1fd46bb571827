//! `seckill scheduler`: preheats each `draft` activity at its `hot_at` (when it has one),
//! opens each preheated one at its `start_at` and ends each opened one at its `end_at`,
//! through [`ops::hot`](crate::ops::hot::hot), [`ops::start`](crate::ops::start) and
//! [`ops::stop`](crate::ops::stop), so MySQL and Redis change together and every refusal of
//! theirs (reservations not yet persisted, Redis lost its state, products changed after
//! `hot`) holds.
//!
//! Several schedulers may run at once (one per host, for availability): each tick runs under
//! a MySQL named lock of the database, and the due activities are read after taking it, so
//! a transition another scheduler just made is seen and not made again.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::db::Db;
use crate::error::{DbContext, Result};
use crate::model::ActivityStatus;
use crate::ops::catalog;
use crate::ops::hot;
use crate::ops::lifecycle;
use crate::redis_client::RedisClient;

/// What the scheduler did to one activity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Preheated (`hot`) at its `hot_at`; still `draft`.
    Preheated,
    /// Opened at its `start_at`.
    Opened,
    /// Ended at its `end_at`.
    Ended,
}

impl Transition {
    /// The status it leads to.
    fn target(self) -> ActivityStatus {
        match self {
            Transition::Preheated => ActivityStatus::Draft,
            Transition::Opened => ActivityStatus::Online,
            Transition::Ended => ActivityStatus::Ended,
        }
    }
}

/// One transition made by a tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Done {
    /// The activity.
    pub activity_id: u64,
    /// What happened to it.
    pub transition: Transition,
}

/// Why a due activity was left as it is (logged once per activity and reason, not every tick).
#[derive(Debug, Default)]
pub struct Refusals {
    last: HashMap<u64, String>,
}

impl Refusals {
    /// True when `why` is news for `activity` (so worth a log line).
    fn record(&mut self, activity: u64, why: &str) -> bool {
        if self.last.get(&activity).map(String::as_str) == Some(why) {
            return false;
        }
        self.last.insert(activity, why.to_string());
        true
    }
}

/// The name of the lock every scheduler of this database takes for a tick. Named locks are
/// server-wide, so the database is part of the name (hashed: names are at most 64 bytes).
const LOCK_NAME: &str = "CONCAT('seckill.scheduler.', MD5(COALESCE(DATABASE(), '')))";

/// Runs ticks every `tick` until `shutdown` completes. A tick that fails (a backend is
/// down) is logged and the next one tries again. `consumer_group` is the one `hot` checks
/// for unpersisted reservations.
pub async fn run(
    db: &Db,
    redis: &RedisClient,
    consumer_group: &str,
    tick: Duration,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut refusals = Refusals::default();
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tracing::info!(tick_ms = tick.as_millis() as u64, "scheduler running");
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            _ = interval.tick() => {}
        }
        if let Err(e) = run_tick(db, redis, consumer_group, Utc::now(), &mut refusals).await {
            tracing::error!(error = %e, "scheduler tick failed; trying again");
        }
    }
}

/// One tick at `now`: preheats the `draft` activities whose `hot_at` has passed (see
/// [`due_preheats`]), opens the due `draft` activities and ends the `online` and `paused`
/// ones past their end, unless another scheduler holds the tick lock (then nothing).
/// Returns the transitions made.
///
/// Only `draft` activities are opened: a `paused` one was paused by an operator (`stop`),
/// and resuming it is theirs to decide. An activity whose window passed entirely while no
/// scheduler ran is not opened.
pub async fn run_tick(
    db: &Db,
    redis: &RedisClient,
    consumer_group: &str,
    now: DateTime<Utc>,
    refusals: &mut Refusals,
) -> Result<Vec<Done>> {
    let mut lock = db.pool().acquire().await.at(db)?;
    let got: Option<i64> = sqlx::query_scalar(&format!("SELECT GET_LOCK({LOCK_NAME}, 0)"))
        .fetch_one(&mut *lock)
        .await
        .at(db)?;
    if got != Some(1) {
        return Ok(Vec::new());
    }
    // A preheat that cannot be looked into must not hold up the openings and endings.
    let preheated = due_preheats(db, redis, consumer_group, now, refusals).await;
    let done = due_transitions(db, redis, now, refusals)
        .await
        .and_then(|more| Ok(preheated?.into_iter().chain(more).collect()));
    let released: std::result::Result<Option<i64>, _> =
        sqlx::query_scalar(&format!("SELECT RELEASE_LOCK({LOCK_NAME})"))
            .fetch_one(&mut *lock)
            .await;
    if released.is_err() {
        // A connection that may still hold the lock must not go back to the pool: closing
        // it releases the lock.
        drop(lock.detach());
    }
    done
}

/// Preheats every `draft` activity whose `hot_at` has passed, by `now` and by MySQL's clock,
/// and that Redis holds no preheat of from `hot_at` on (none at all, or an older one: a `hot`
/// run by hand before `hot_at` is run again then, so the sale opens with the catalog as it is
/// at `hot_at`). Redis's `preheated_at` is MySQL's clock when `hot` read the catalog, later
/// than `hot_at` by MySQL's clock, so a preheat this makes is seen by the next tick (of any
/// scheduler) and not made again; one an operator makes after `hot_at` is kept. A refused
/// `hot` (reservations not yet persisted, Redis not durable, no products) is logged once and
/// tried again every tick.
async fn due_preheats(
    db: &Db,
    redis: &RedisClient,
    consumer_group: &str,
    now: DateTime<Utc>,
    refusals: &mut Refusals,
) -> Result<Vec<Done>> {
    // DATETIME columns hold UTC (see catalog): compared with UTC_TIMESTAMP, not NOW.
    let due: Vec<(u64, DateTime<Utc>)> = sqlx::query_as(
        "SELECT id, hot_at FROM activities WHERE status = 'draft' AND hot_at IS NOT NULL \
         AND hot_at <= ? AND hot_at <= UTC_TIMESTAMP(3) AND end_at > ? ORDER BY hot_at, id",
    )
    .bind(now)
    .bind(now)
    .fetch_all(db.pool())
    .await
    .at(db)?;
    let mut done = Vec::new();
    for (id, hot_at) in due {
        let since = lifecycle::preheated_at(redis, id).await?;
        if since.is_some_and(|ms| ms >= hot_at.timestamp_millis()) {
            continue;
        }
        match hot::hot(db, redis, consumer_group, id).await {
            Ok(report) => {
                tracing::info!(
                    activity = id,
                    due_at = %hot_at,
                    products = report.products,
                    remaining = report.remaining,
                    "activity preheated"
                );
                done.push(Done {
                    activity_id: id,
                    transition: Transition::Preheated,
                });
            }
            Err(e) => {
                let why = format!("hot: {e}");
                if refusals.record(id, &why) {
                    tracing::warn!(activity = id, error = %e, "activity is due to be preheated but was left as it is");
                }
            }
        }
    }
    Ok(done)
}

async fn due_transitions(
    db: &Db,
    redis: &RedisClient,
    now: DateTime<Utc>,
    refusals: &mut Refusals,
) -> Result<Vec<Done>> {
    let to_open: Vec<u64> = sqlx::query_scalar(
        "SELECT id FROM activities WHERE status = 'draft' AND start_at <= ? AND end_at > ? ORDER BY start_at, id",
    )
    .bind(now)
    .bind(now)
    .fetch_all(db.pool())
    .await
    .at(db)?;
    let to_end: Vec<u64> = sqlx::query_scalar(
        "SELECT id FROM activities WHERE status IN ('online', 'paused') AND end_at <= ? ORDER BY end_at, id",
    )
    .bind(now)
    .fetch_all(db.pool())
    .await
    .at(db)?;
    let due = to_open
        .into_iter()
        .map(|id| (id, Transition::Opened))
        .chain(to_end.into_iter().map(|id| (id, Transition::Ended)));
    let mut done = Vec::new();
    for (id, transition) in due {
        if transition == Transition::Opened && lifecycle::preheated_at(redis, id).await?.is_none() {
            if refusals.record(id, "not preheated") {
                tracing::warn!(
                    activity = id,
                    "activity is due to open but not preheated: run `seckill hot {id}`"
                );
            }
            continue;
        }
        let (made, message) = match transition {
            Transition::Opened => (lifecycle::start(db, redis, id).await, "activity opened"),
            Transition::Ended => (lifecycle::stop(db, redis, id, true).await, "activity ended"),
            // Made by `due_preheats`, never listed here.
            Transition::Preheated => continue,
        };
        match made {
            Ok(activity) => {
                let at = if transition == Transition::Opened {
                    activity.start_at
                } else {
                    activity.end_at
                };
                tracing::info!(activity = id, due_at = %at, "{message}");
                done.push(Done {
                    activity_id: id,
                    transition,
                });
            }
            Err(e) => refused(db, id, transition.target(), &e, refusals).await?,
        }
    }
    Ok(done)
}

/// Logs a transition `start`/`stop` refused, unless the activity is already where it was to
/// go (an operator got there first), or the same reason was logged before.
async fn refused(
    db: &Db,
    id: u64,
    target: ActivityStatus,
    error: &crate::Error,
    refusals: &mut Refusals,
) -> Result<()> {
    if catalog::get_activity(db, id).await?.status == target {
        return Ok(());
    }
    let why = error.to_string();
    if refusals.record(id, &why) {
        tracing::warn!(activity = id, error = %why, "activity is due for {target} but was left as it is");
    }
    Ok(())
}
