//! Lost-state detection: noticing that Redis "went back in time" (restarted without
//! persistence, restored from an older snapshot, or replaced by a lagging replica) before it
//! sells units MySQL already counts as sold.
//!
//! MySQL keeps a durable mark per preheated activity (`redis_watermarks`): the epoch `hot`
//! stamped into Redis, and a sequence number. Every batch the consumers (or reconcile)
//! persist first raises the sequence in Redis (`HINCRBY`), then, after the MySQL commit,
//! records the value it got in MySQL (`GREATEST`). So at any moment Redis's sequence is at
//! least MySQL's, unless Redis lost writes it had acknowledged. Redis has lost state when:
//! - MySQL says the activity is preheated but Redis has no activity hash (keys vanished);
//! - Redis holds another epoch than the last `hot` stamped (an older snapshot);
//! - Redis's sequence is below MySQL's (rolled back past a persisted batch).
//!
//! A loss that happened before any batch was persisted after the snapshot leaves no trace
//! in MySQL and cannot be seen here; `redis.durability` is what prevents it.
//!
//! What is done about it: [`suspend`] sets the Redis status to `lost`, which `reserve.lua`
//! answers with `suspended` (HTTP 503 `busy`), so every `serve` stops selling that
//! activity; `reconcile` exits 1 with class `redis_state_lost`; `status` says so first;
//! `start` refuses. The way back is `stop`, `hot` (stock rebuilt from MySQL, a new epoch),
//! `start`.

use std::collections::BTreeMap;

use redis::AsyncCommands;
use serde::Serialize;

use crate::db::Db;
use crate::error::{DbContext, RedisContext, Result};
use crate::redis_client::RedisClient;
use crate::scripts;

/// The Redis status [`suspend`] sets; `reserve.lua` refuses every purchase under it.
pub const LOST_STATUS: &str = "lost";

/// How Redis lost the activity's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LossKind {
    /// No activity hash at all: Redis restarted empty, or the keys were deleted.
    Vanished,
    /// Another epoch (or none) than the last `hot` stamped: an older snapshot.
    EpochChanged,
    /// The persist sequence went backwards: rolled back past a batch MySQL persisted.
    RolledBack,
}

/// A detected loss of one activity's Redis state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Loss {
    /// The activity.
    pub activity_id: u64,
    /// How.
    pub kind: LossKind,
    /// What was found, in words.
    pub detail: String,
    /// Units MySQL counts as sold that Redis does not: each could be sold a second time.
    pub units_at_risk: i64,
}

impl std::fmt::Display for Loss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Redis lost the state of activity {}: {} ({} unit(s) at risk of being sold twice); \
             recover with `seckill stop {id}`, `seckill hot {id}`, `seckill start {id}`",
            self.activity_id,
            self.detail,
            self.units_at_risk,
            id = self.activity_id
        )
    }
}

/// A fresh epoch: random, so no two preheats share one.
fn new_epoch() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// A new epoch for `activity` and the persist sequence MySQL holds, for `preheat.lua` to
/// write into the activity hash; [`stamp`] records the epoch in MySQL once it is loaded.
/// (`hot` runs with an empty backlog, so no batch is being persisted meanwhile.)
pub async fn next_epoch(db: &Db, activity: u64) -> Result<(String, u64)> {
    let seq: Option<u64> = sqlx::query_scalar("SELECT persist_seq FROM redis_watermarks WHERE activity_id = ?")
        .bind(activity)
        .fetch_optional(db.pool())
        .await
        .at(db)?;
    Ok((new_epoch(), seq.unwrap_or(0)))
}

/// Records `epoch` as the one Redis must hold for `activity`. After Redis has it: an
/// interrupted `hot` leaves the two different, which reads as a loss until `hot` runs again,
/// never the reverse (a live sale is never told it lost state by a refused `hot`).
pub async fn stamp(db: &Db, activity: u64, epoch: &str) -> Result<()> {
    sqlx::query(
        "INSERT INTO redis_watermarks (activity_id, epoch, persist_seq) VALUES (?, ?, 0) \
         ON DUPLICATE KEY UPDATE epoch = VALUES(epoch), stamped_at = CURRENT_TIMESTAMP(3)",
    )
    .bind(activity)
    .bind(epoch)
    .execute(db.pool())
    .await
    .at(db)?;
    Ok(())
}

/// Forgets the mark of `activity` (at `flush`: Redis is no longer expected to hold it) and
/// returns it (`None`: there was none), so that a flush that fails while keys of the activity
/// are still in Redis can [`restore`] it. Read and deleted under one row lock, so a batch
/// recorded meanwhile is either in the mark returned or waits for the delete and finds no row.
pub async fn forget(db: &Db, activity: u64) -> Result<Option<Mark>> {
    let mut tx = db.pool().begin().await.at(db)?;
    let mark: Option<(String, u64)> =
        sqlx::query_as("SELECT epoch, persist_seq FROM redis_watermarks WHERE activity_id = ? FOR UPDATE")
            .bind(activity)
            .fetch_optional(&mut *tx)
            .await
            .at(db)?;
    if mark.is_some() {
        sqlx::query("DELETE FROM redis_watermarks WHERE activity_id = ?")
            .bind(activity)
            .execute(&mut *tx)
            .await
            .at(db)?;
    }
    tx.commit().await.at(db)?;
    Ok(mark.map(|(epoch, persist_seq)| Mark { epoch, persist_seq }))
}

/// Puts back the mark [`forget`] returned, when the flush it was forgotten for failed with
/// keys of the activity possibly still in Redis: MySQL watches them again, so a Redis that
/// comes back from an older snapshot holding them is noticed instead of selling from them.
/// A mark stamped meanwhile (a `hot` that ran since) keeps its epoch.
pub async fn restore(db: &Db, activity: u64, mark: &Mark) -> Result<()> {
    sqlx::query(
        "INSERT INTO redis_watermarks (activity_id, epoch, persist_seq) VALUES (?, ?, ?) \
         ON DUPLICATE KEY UPDATE persist_seq = GREATEST(persist_seq, VALUES(persist_seq))",
    )
    .bind(activity)
    .bind(&mark.epoch)
    .bind(mark.persist_seq)
    .execute(db.pool())
    .await
    .at(db)?;
    Ok(())
}

/// First half of a persisted batch's mark: raises the Redis sequence (and the stock buckets'
/// copies of it) and returns it (0 when
/// Redis has no such activity), to be [`record`]ed once the batch's MySQL transaction committed.
pub async fn advance(redis: &RedisClient, activity: u64) -> Result<u64> {
    let (seq, buckets): (u64, u16) = scripts::PERSIST_MARK
        .key(redis.keys().activity(activity))
        .invoke_async(&mut redis.conn())
        .await
        .at(redis)?;
    // The stock buckets check their own copy of the sequence (`lua/bucket_buy.lua`): it must
    // not fall below MySQL's either, so it rises before the commit too.
    if seq > 0 && buckets > 0 {
        crate::buckets::gate::seq(redis, activity, buckets, seq).await?;
    }
    Ok(seq)
}

/// Second half: MySQL's sequence becomes at least `seq`. Only for activities `hot` stamped.
pub async fn record(db: &Db, activity: u64, seq: u64) -> Result<()> {
    sqlx::query("UPDATE redis_watermarks SET persist_seq = GREATEST(persist_seq, ?) WHERE activity_id = ?")
        .bind(seq)
        .bind(activity)
        .execute(db.pool())
        .await
        .at(db)?;
    Ok(())
}

/// What MySQL expects Redis to hold of one activity: the epoch `hot` stamped and the persist
/// sequence recorded so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    /// The epoch of the last `hot`.
    pub epoch: String,
    /// The persist sequence MySQL recorded.
    pub persist_seq: u64,
}

/// The mark of every activity MySQL expects Redis to hold, in one read.
pub async fn marks(db: &Db) -> Result<BTreeMap<u64, Mark>> {
    let rows: Vec<(u64, String, u64)> = sqlx::query_as("SELECT activity_id, epoch, persist_seq FROM redis_watermarks")
        .fetch_all(db.pool())
        .await
        .at(db)?;
    Ok(rows
        .into_iter()
        .map(|(activity, epoch, persist_seq)| (activity, Mark { epoch, persist_seq }))
        .collect())
}

/// Checks one activity; `None` when Redis holds what MySQL expects (or MySQL has no mark).
pub async fn inspect(db: &Db, redis: &RedisClient, activity: u64) -> Result<Option<Loss>> {
    match mark_of(db, activity).await? {
        Some(mark) => inspect_against(db, redis, activity, &mark).await,
        None => Ok(None),
    }
}

/// The mark of `activity`, if MySQL expects Redis to hold it.
async fn mark_of(db: &Db, activity: u64) -> Result<Option<Mark>> {
    let mark: Option<(String, u64)> =
        sqlx::query_as("SELECT epoch, persist_seq FROM redis_watermarks WHERE activity_id = ?")
            .bind(activity)
            .fetch_optional(db.pool())
            .await
            .at(db)?;
    Ok(mark.map(|(epoch, persist_seq)| Mark { epoch, persist_seq }))
}

/// Every activity MySQL expects Redis to hold (`marks`, read by the caller first), checked.
pub async fn inspect_all(db: &Db, redis: &RedisClient, marks: &BTreeMap<u64, Mark>) -> Result<Vec<Loss>> {
    let mut losses = Vec::new();
    for (activity, mark) in marks {
        if let Some(loss) = inspect_against(db, redis, *activity, mark).await? {
            losses.push(loss);
        }
    }
    Ok(losses)
}

/// Compares Redis with `mark`, which must have been read from MySQL before: a batch recorded
/// in between only raised Redis first.
async fn inspect_against(db: &Db, redis: &RedisClient, activity: u64, mark: &Mark) -> Result<Option<Loss>> {
    let Some((kind, detail)) = judge(redis, activity, mark).await? else {
        return Ok(None);
    };
    let units_at_risk = units_at_risk(db, redis, activity).await?;
    Ok(Some(Loss {
        activity_id: activity,
        kind,
        detail,
        units_at_risk,
    }))
}

/// How Redis's copy of the activity differs from `mark`, in words; `None` when it is whole.
async fn judge(redis: &RedisClient, activity: u64, mark: &Mark) -> Result<Option<(LossKind, String)>> {
    let mut conn = redis.conn();
    let key = redis.keys().activity(activity);
    let (exists, redis_epoch, redis_seq): (bool, Option<String>, Option<u64>) = redis::pipe()
        .exists(&key)
        .hget(&key, "epoch")
        .hget(&key, "persist_seq")
        .query_async(&mut conn)
        .await
        .at(redis)?;
    let (epoch, seq) = (&mark.epoch, mark.persist_seq);
    let (kind, detail) = if !exists {
        (
            LossKind::Vanished,
            "the activity is preheated but Redis holds none of its keys".to_string(),
        )
    } else if redis_epoch.as_deref() != Some(epoch.as_str()) {
        (
            LossKind::EpochChanged,
            format!(
                "Redis holds preheat epoch {} but the last `hot` stamped {epoch}: an older copy of Redis",
                redis_epoch.as_deref().unwrap_or("(none)")
            ),
        )
    } else if redis_seq.unwrap_or(0) < seq {
        (
            LossKind::RolledBack,
            format!(
                "Redis's persist sequence is {} but MySQL recorded {seq}: Redis went back past orders already persisted",
                redis_seq.unwrap_or(0)
            ),
        )
    } else {
        return Ok(None);
    };
    Ok(Some((kind, detail)))
}

/// Units MySQL counts as sold (`products.sold`) beyond what Redis counts, over the products.
async fn units_at_risk(db: &Db, redis: &RedisClient, activity: u64) -> Result<i64> {
    let sold: Vec<(u64, i64)> = sqlx::query_as("SELECT id, CAST(sold AS SIGNED) FROM products WHERE activity_id = ?")
        .bind(activity)
        .fetch_all(db.pool())
        .await
        .at(db)?;
    let mut conn = redis.conn();
    let mut at_risk = 0;
    for (product, mysql_sold) in sold {
        let redis_sold: Option<i64> = conn
            .hget(redis.keys().product(activity, product), "sold")
            .await
            .at(redis)?;
        at_risk += (mysql_sold - redis_sold.unwrap_or(0)).max(0);
    }
    Ok(at_risk)
}

/// Stops every `serve` from selling the activity: its Redis status becomes [`LOST_STATUS`]
/// (kept until `hot` rebuilds it). Returns true when the status was not `lost` before and the
/// suspension stands: one that raced a `flush` of the activity, or a `hot` that replaced the
/// mark it was judged against, is taken back (see below).
pub async fn suspend(db: &Db, redis: &RedisClient, loss: &Loss) -> Result<bool> {
    let mut conn = redis.conn();
    let key = redis.keys().activity(loss.activity_id);
    let before: Option<String> = conn.hget(&key, "status").await.at(redis)?;
    let (ver, start_ms, end_ms): (i64, Option<i64>, Option<i64>) = redis::pipe()
        .atomic()
        .hset_multiple(&key, &[("status", LOST_STATUS), ("lost_reason", loss.detail.as_str())])
        .ignore()
        .hincr(&key, "gate_ver", 1)
        .hget(&key, "start_ms")
        .hget(&key, "end_ms")
        .query_async(&mut conn)
        .await
        .at(redis)?;
    // (A vanished activity hash no longer names its buckets: those on primaries that kept their
    // keys keep their stock and buyers' totals intact.)
    copy_to_buckets(redis, loss.activity_id, ver, LOST_STATUS, start_ms, end_ms).await?;
    // `loss` was found against a mark read earlier; a `flush` since then removed the keys and
    // the mark, and the HSET above recreated the activity hash, which nothing would remove.
    // `flush` forgets the mark before it removes the keys, and the mark is read here after
    // the write: either the mark is still there, so the flush removes the hash after this
    // write, or it is gone and the hash is taken back here (unless a `hot` since rebuilt it).
    let Some(mark) = mark_of(db, loss.activity_id).await? else {
        let _: i64 = scripts::LOST_WITHDRAW
            .key(&key)
            .invoke_async(&mut conn)
            .await
            .at(redis)?;
        return Ok(false);
    };
    // `loss` may also have been judged against a mark a `hot` has replaced since: the mark read
    // before `hot` stamped its new epoch, Redis after `hot` preheated it. A fresh look, after
    // the write, then finds the activity whole, and the suspension is taken back (unless the
    // status changed again meanwhile). A look that still read the old mark leaves it standing;
    // `hot` takes it back once it has stamped its epoch (`take_back_for_hot`). A lost status on
    // a whole activity is always such a suspension: `hot` is the only way to a new mark, and
    // it rewrites the status. So when the status was already `lost` (an earlier suspension of
    // the same race, which `hot` may have taken back meanwhile), MySQL's status goes back.
    // (A hash that was missing is not whole: the fresh look finds it lost.)
    if judge(redis, loss.activity_id, &mark).await?.is_none() {
        let status = match before {
            Some(status) if status != LOST_STATUS => status,
            _ => crate::ops::catalog::get_activity(db, loss.activity_id)
                .await?
                .status
                .as_str()
                .to_string(),
        };
        take_back(redis, loss.activity_id, &status, Some(ver), None).await?;
        return Ok(false);
    }
    Ok(before.as_deref() != Some(LOST_STATUS))
}

/// After `hot` stamped `epoch` and loaded the activity: takes back a suspension a lost-state
/// check wrote meanwhile, judged against the mark `hot` replaced (see [`suspend`]). Only a
/// suspension of this preheat's state (the hash holds `epoch`) is taken back, and the
/// activity gets MySQL's `status` again.
pub async fn take_back_for_hot(redis: &RedisClient, activity: u64, epoch: &str, status: &str) -> Result<()> {
    take_back(redis, activity, status, None, Some(epoch)).await
}

/// Puts `status` back in place of the suspension (`lua/lost_undo.lua`; `ver` and `epoch`: what
/// the hash must still hold, when given), in the activity hash and its buckets' gates.
async fn take_back(
    redis: &RedisClient,
    activity: u64,
    status: &str,
    ver: Option<i64>,
    epoch: Option<&str>,
) -> Result<()> {
    let key = redis.keys().activity(activity);
    let mut conn = redis.conn();
    let (new_ver, start_ms, end_ms): (i64, Option<i64>, Option<i64>) = scripts::LOST_UNDO
        .key(&key)
        .arg(status)
        .arg(ver.map(|ver| ver.to_string()).unwrap_or_default())
        .arg(epoch.unwrap_or_default())
        .invoke_async(&mut conn)
        .await
        .at(redis)?;
    if new_ver > 0 {
        copy_to_buckets(redis, activity, new_ver, status, start_ms, end_ms).await?;
    }
    Ok(())
}

/// Copies status change `ver` of the activity into its stock buckets' gates: they decide
/// purchases from their own copy of the status.
async fn copy_to_buckets(
    redis: &RedisClient,
    activity: u64,
    ver: i64,
    status: &str,
    start_ms: Option<i64>,
    end_ms: Option<i64>,
) -> Result<()> {
    crate::buckets::gate::status(redis, activity, ver, status, start_ms.unwrap_or(0), end_ms.unwrap_or(0)).await
}
