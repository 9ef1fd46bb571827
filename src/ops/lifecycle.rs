//! `seckill start` / `seckill stop`: open, pause or end the sale in MySQL and Redis together.

use redis::AsyncCommands;

use crate::db::Db;
use crate::durability;
use crate::error::{DbContext, Error, RedisContext, Result};
use crate::model::{Activity, ActivityStatus};
use crate::ops::catalog;
use crate::redis_client::RedisClient;
use crate::scripts;

/// Sets the activity online (again). Refuses when it was never preheated, ended, has no
/// products, or its products changed in MySQL after the last `hot`.
pub async fn start(db: &Db, redis: &RedisClient, activity_id: u64) -> Result<Activity> {
    durability::require(redis).await?;
    if let Some(loss) = crate::lost_state::inspect(db, redis, activity_id).await? {
        return Err(Error::refused(loss.to_string()));
    }
    let mut tx = db.pool().begin().await.at(db)?;
    let activity = catalog::lock_activity(db, &mut tx, activity_id).await?;
    if activity.status == ActivityStatus::Ended {
        return Err(Error::refused(format!("activity {activity_id} has ended")));
    }
    let preheated_at = preheated_at(redis, activity_id).await?.ok_or_else(|| {
        Error::refused(format!(
            "activity {activity_id} is not preheated; run `seckill hot {activity_id}` first"
        ))
    })?;
    let changed: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM products WHERE activity_id = ? AND updated_at >= FROM_UNIXTIME(? / 1000)",
    )
    .bind(activity_id)
    .bind(preheated_at)
    .fetch_one(&mut *tx)
    .await
    .at(db)?;
    if changed > 0 {
        return Err(Error::refused(format!(
            "{changed} product(s) of activity {activity_id} changed after the last preheat; \
             run `seckill hot {activity_id}` again"
        )));
    }
    // A product deleted after the preheat leaves no `updated_at` behind, but Redis would
    // keep selling it: the product sets must match too.
    let mut in_mysql: Vec<u64> = sqlx::query_scalar("SELECT id FROM products WHERE activity_id = ?")
        .bind(activity_id)
        .fetch_all(&mut *tx)
        .await
        .at(db)?;
    let mut in_redis: Vec<u64> = redis
        .conn()
        .smembers(redis.keys().products(activity_id))
        .await
        .at(redis)?;
    in_mysql.sort_unstable();
    in_redis.sort_unstable();
    if in_mysql != in_redis {
        return Err(Error::refused(format!(
            "the products of activity {activity_id} changed after the last preheat; \
             run `seckill hot {activity_id}` again"
        )));
    }
    let previous = set_redis_status(redis, &activity, ActivityStatus::Online).await?;
    let updated = sqlx::query("UPDATE activities SET status = 'online' WHERE id = ?")
        .bind(activity_id)
        .execute(&mut *tx)
        .await;
    if let Err(e) = updated.at(db).and(Ok(())) {
        revert(redis, &activity, previous).await;
        return Err(e);
    }
    if let Err(e) = tx.commit().await {
        revert(redis, &activity, previous).await;
        return Err(db.err(e));
    }
    catalog::get_activity(db, activity_id).await
}

/// Pauses the sale (`end == false`; `start` resumes it) or ends it for good.
pub async fn stop(db: &Db, redis: &RedisClient, activity_id: u64, end: bool) -> Result<Activity> {
    let target = if end {
        ActivityStatus::Ended
    } else {
        ActivityStatus::Paused
    };
    let mut tx = db.pool().begin().await.at(db)?;
    let activity = catalog::lock_activity(db, &mut tx, activity_id).await?;
    match (activity.status, target) {
        (ActivityStatus::Ended, _) => return Err(Error::refused(format!("activity {activity_id} has already ended"))),
        (ActivityStatus::Draft, ActivityStatus::Paused) | (ActivityStatus::Paused, ActivityStatus::Paused) => {
            return Err(Error::refused(format!(
                "activity {activity_id} is {}, not online",
                activity.status
            )))
        }
        _ => {}
    }
    // Redis first: once it says paused, no further unit can be sold, whatever MySQL does next.
    if preheated_at(redis, activity_id).await?.is_some() {
        set_redis_status(redis, &activity, target).await?;
    }
    sqlx::query("UPDATE activities SET status = ? WHERE id = ?")
        .bind(target.as_str())
        .bind(activity_id)
        .execute(&mut *tx)
        .await
        .at(db)?;
    tx.commit().await.at(db)?;
    catalog::get_activity(db, activity_id).await
}

/// When the activity was fully preheated (ms since the epoch), if it was.
pub async fn preheated_at(redis: &RedisClient, activity_id: u64) -> Result<Option<i64>> {
    let mut conn = redis.conn();
    let value: Option<String> = conn
        .hget(redis.keys().activity(activity_id), "preheated_at")
        .await
        .at(redis)?;
    Ok(value.and_then(|v| v.parse().ok()))
}

/// Sets the Redis status (and window); returns the status Redis had before.
async fn set_redis_status(redis: &RedisClient, activity: &Activity, status: ActivityStatus) -> Result<String> {
    let key = redis.keys().activity(activity.id);
    let before: Option<String> = redis.conn().hget(&key, "status").await.at(redis)?;
    let before = before.unwrap_or_else(|| activity.status.to_string());
    match write_status(redis, activity, status).await {
        Err(e) if status == ActivityStatus::Online => {
            // Some bucket may not have heard: the others must not go on selling a sale whose
            // `start` failed. (A failed `stop` is left as far as it got: run it again.)
            let previous = before.parse().unwrap_or(ActivityStatus::Paused);
            if let Err(undo) = write_status(redis, activity, previous).await {
                tracing::error!(activity = activity.id, error = %undo, "could not undo a start whose status did not reach every stock bucket");
            }
            Err(e)
        }
        Ok(false) => Err(Error::refused(format!(
            "activity {} is not preheated; run `seckill hot {}` first",
            activity.id, activity.id
        ))),
        written => written.map(|_| before),
    }
}

/// Writes `status` (and the window) into the activity hash, then into every stock bucket's
/// gate, before returning; false (nothing written) when the activity is not preheated.
async fn write_status(redis: &RedisClient, activity: &Activity, status: ActivityStatus) -> Result<bool> {
    let changed: i64 = scripts::SET_STATUS
        .key(redis.keys().activity(activity.id))
        .arg(status.as_str())
        .arg(activity.start_at.timestamp_millis())
        .arg(activity.end_at.timestamp_millis())
        .invoke_async(&mut redis.conn())
        .await
        .at(redis)?;
    if changed == 0 {
        return Ok(false);
    }
    // Every stock bucket decides its buyers' purchases alone: none may sell after a `stop`
    // returned, so the copy reaches them all before this does.
    crate::buckets::gate::status(
        redis,
        activity.id,
        changed,
        status.as_str(),
        activity.start_at.timestamp_millis(),
        activity.end_at.timestamp_millis(),
    )
    .await?;
    Ok(true)
}

async fn revert(redis: &RedisClient, activity: &Activity, previous: String) {
    let status = previous.parse().unwrap_or(ActivityStatus::Paused);
    if let Err(e) = set_redis_status(redis, activity, status).await {
        tracing::error!(activity = activity.id, error = %e, "could not revert the Redis status after a MySQL failure");
    }
}
