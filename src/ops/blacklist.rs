//! `seckill blacklist`: users who may not buy. MySQL's `blacklist` table is the truth;
//! every change is mirrored into the blacklist set of each preheated activity, which is
//! what `reserve.lua` reads (`hot` copies the whole table in when preheating).

use chrono::{DateTime, Utc};
use redis::AsyncCommands;
use serde::Serialize;
use sqlx::FromRow;

use crate::buckets::gate;
use crate::db::Db;
use crate::error::{DbContext, Error, RedisContext, Result};
use crate::redis_client::RedisClient;
use crate::user_id;

/// A row of `blacklist`.
#[derive(Debug, Clone, FromRow, Serialize, PartialEq)]
pub struct Entry {
    /// The barred user.
    pub user_id: String,
    /// Why.
    pub reason: String,
    /// Since when.
    pub created_at: DateTime<Utc>,
}

/// Bars `user` from buying; returns whether they were not barred already.
/// Effective at once in every preheated activity.
pub async fn add(db: &Db, redis: &RedisClient, user: &str, reason: &str) -> Result<bool> {
    user_id::validate(user)?;
    let activities = preheated(redis).await?;
    let inserted = sqlx::query("INSERT IGNORE INTO blacklist (user_id, reason) VALUES (?, ?)")
        .bind(user)
        .bind(reason)
        .execute(db.pool())
        .await
        .at(db)?
        .rows_affected();
    // Mirrored even when the row existed: a preheat racing an earlier add may have missed it.
    mirror(redis, &activities, user, true).await?;
    Ok(inserted > 0)
}

/// Lets `user` buy again; returns whether they were barred.
pub async fn remove(db: &Db, redis: &RedisClient, user: &str) -> Result<bool> {
    user_id::validate(user)?;
    let activities = preheated(redis).await?;
    let deleted = sqlx::query("DELETE FROM blacklist WHERE user_id = ?")
        .bind(user)
        .execute(db.pool())
        .await
        .at(db)?
        .rows_affected();
    mirror(redis, &activities, user, false).await?;
    Ok(deleted > 0)
}

/// Every barred user, oldest first.
pub async fn list(db: &Db) -> Result<Vec<Entry>> {
    sqlx::query_as(
        "SELECT CAST(user_id AS CHAR) AS user_id, reason, created_at FROM blacklist ORDER BY created_at, blacklist.user_id",
    )
        .fetch_all(db.pool())
        .await
        .at(db)
}

/// The preheated activities, read before MySQL is touched so that an unreachable Redis
/// fails the command while nothing has changed yet.
async fn preheated(redis: &RedisClient) -> Result<Vec<u64>> {
    redis.conn().smembers(redis.keys().activities()).await.at(redis)
}

async fn mirror(redis: &RedisClient, activities: &[u64], user: &str, barred: bool) -> Result<()> {
    let mut conn = redis.conn();
    let mut pipe = redis::pipe();
    for &activity in activities {
        let key = redis.keys().blacklist(activity);
        if barred {
            pipe.sadd(key, user).ignore();
        } else {
            pipe.srem(key, user).ignore();
        }
    }
    let unfinished = |why: String| {
        Error::Internal(format!(
            "MySQL's blacklist was changed for {user:?}, but the preheated activities were not \
             updated ({why}); run the command again to finish"
        ))
    };
    let mirrored: redis::RedisResult<()> = pipe.query_async(&mut conn).await;
    mirrored.map_err(|e| unfinished(redis.err(e).to_string()))?;
    // The stock buckets decide their buyers' purchases from their own copy.
    for &activity in activities {
        gate::member(redis, activity, gate::Set::Blacklist, user, barred)
            .await
            .map_err(|e| unfinished(e.to_string()))?;
    }
    Ok(())
}
