//! `seckill flush`: remove every Redis key of one activity (SCAN + UNLINK, never KEYS). In a
//! cluster the activity's keys share one slot, so they sit on one primary; every primary is
//! scanned anyway, so keys left behind by a resharding in progress are not missed. The stock
//! buckets of sharded products (see [`crate::buckets`]) have a slot each and go too.

use redis::AsyncCommands;
use serde::Serialize;

use crate::db::Db;
use crate::error::{Error, RedisContext, Result};
use crate::model::ActivityStatus;
use crate::ops::catalog;
use crate::redis_client::RedisClient;

/// What `flush` removed.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FlushReport {
    /// The activity.
    pub activity_id: u64,
    /// Every key unlinked, sorted.
    pub removed: Vec<String>,
}

/// Removes the activity's keys. Refuses while MySQL says it is online, unless `force`.
/// Reservations still in its stream are lost to Redis, so it also refuses while any wait
/// to be persisted, unless `force`.
pub async fn flush(
    db: &Db,
    redis: &RedisClient,
    consumer_group: &str,
    activity_id: u64,
    force: bool,
) -> Result<FlushReport> {
    let activity = catalog::get_activity(db, activity_id).await?;
    if activity.status == ActivityStatus::Online && !force {
        return Err(Error::refused(format!(
            "activity {activity_id} is online; stop it first or pass --force"
        )));
    }
    let backlog = crate::reservation::backlog(redis, activity_id, consumer_group).await?;
    if backlog > 0 && !force {
        return Err(Error::refused(format!(
            "activity {activity_id} has {backlog} reservations not yet persisted; \
             run the consumers first or pass --force"
        )));
    }
    // Redis is no longer expected to hold the activity: its absence is not a loss. Forgotten
    // before any key goes, so a lost-state check that still saw the mark and suspends the
    // activity (writing its hash) either writes before the keys below are gathered, or reads
    // the mark again after its write, finds it gone and takes the write back
    // (`lost_state::suspend`): no activity hash outlives the flush.
    let mark = crate::lost_state::forget(db, activity_id).await?;
    match remove_keys(redis, activity_id).await {
        Ok(removed) => Ok(FlushReport { activity_id, removed }),
        Err(failed) => {
            // Keys of the activity may still be in Redis: unwatched, a Redis that came back
            // from an older snapshot holding them would sell from them unnoticed.
            if let Some(mark) = mark {
                if let Err(unrestored) = crate::lost_state::restore(db, activity_id, &mark).await {
                    tracing::error!(
                        activity = activity_id,
                        error = %unrestored,
                        "flush failed and MySQL's lost-state mark could not be put back: \
                         Redis may hold keys of the activity that nothing watches; run flush again"
                    );
                }
            }
            Err(failed)
        }
    }
}

/// Unlinks every key of the activity (its hash-tagged keys, then its stock buckets) and its
/// entries in the shared index keys; the keys removed, sorted.
async fn remove_keys(redis: &RedisClient, activity_id: u64) -> Result<Vec<String>> {
    let keys = redis.keys();
    let mut conn = redis.conn();
    let product_ids: Vec<u64> = conn.smembers(keys.products(activity_id)).await.at(redis)?;
    let mut removed = redis.scan_match(&keys.activity_pattern(activity_id)).await?;
    let bar = crate::progress::counter("keys");
    // The keys share the activity's hash tag, so a batch is one slot even in a cluster.
    for batch in removed.chunks(1000) {
        let () = conn.unlink(batch).await.at(redis)?;
        bar.inc(batch.len() as u64);
    }
    // Each bucket is a slot of its own: one UNLINK per key (the pipeline sends them apart).
    let buckets = redis.scan_match(&keys.buckets_pattern(activity_id)).await?;
    for batch in buckets.chunks(1000) {
        let mut pipe = redis::pipe();
        for key in batch {
            pipe.unlink(key).ignore();
        }
        let () = pipe.query_async(&mut conn).await.at(redis)?;
        bar.inc(batch.len() as u64);
    }
    removed.extend(buckets);
    removed.sort();
    bar.finish_and_clear();
    let () = conn.srem(keys.activities(), activity_id).await.at(redis)?;
    if !product_ids.is_empty() {
        let () = conn.hdel(keys.product_activity(), &product_ids).await.at(redis)?;
    }
    Ok(removed)
}
