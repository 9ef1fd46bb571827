//! `seckill degrade`: the switch that makes every `serve` instance answer the buys of one
//! activity with `503 degraded` from memory, without asking Redis to decide them (so the
//! sale's stock is untouched while it is on). The switch is a key of the activity in Redis
//! (`keys::Keys::degraded`), holding the message for buyers; each server reads it in its
//! periodic refresh (`server::refresh`).

use redis::AsyncCommands;
use serde::Serialize;

use crate::db::Db;
use crate::error::{Error, RedisContext, Result};
use crate::ops::catalog;
use crate::redis_client::RedisClient;

/// What buyers are told when the operator gave no message.
pub const DEFAULT_MESSAGE: &str = "the sale is temporarily unavailable, retry later";

/// Longest message accepted, in characters: it goes into every refused buy's answer.
pub const MAX_MESSAGE_CHARS: usize = 500;

/// The switch of one activity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DegradeStatus {
    /// The activity.
    pub activity_id: u64,
    /// Whether buys are answered `degraded`.
    pub degraded: bool,
    /// What buyers are told (present while on).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Checks a message for buyers: not blank, at most [`MAX_MESSAGE_CHARS`] characters, no
/// control characters (it is written into JSON answers and log lines).
pub fn check_message(message: &str) -> Result<()> {
    if message.trim().is_empty() || message.chars().count() > MAX_MESSAGE_CHARS || message.chars().any(char::is_control)
    {
        return Err(Error::invalid(format!(
            "the message must be 1..={MAX_MESSAGE_CHARS} characters, not blank, without control characters"
        )));
    }
    Ok(())
}

/// Turns the switch of `activity` on with `message` (or [`DEFAULT_MESSAGE`]); every server
/// answers its buys `degraded` within a second. Refuses an activity unknown in MySQL.
pub async fn on(db: &Db, redis: &RedisClient, activity: u64, message: Option<&str>) -> Result<DegradeStatus> {
    let message = message.unwrap_or(DEFAULT_MESSAGE);
    check_message(message)?;
    catalog::get_activity(db, activity).await?;
    let () = redis
        .conn()
        .set(redis.keys().degraded(activity), message)
        .await
        .at(redis)?;
    Ok(DegradeStatus {
        activity_id: activity,
        degraded: true,
        message: Some(message.to_string()),
    })
}

/// Turns the switch of `activity` off; buys are decided again within a second.
pub async fn off(db: &Db, redis: &RedisClient, activity: u64) -> Result<DegradeStatus> {
    catalog::get_activity(db, activity).await?;
    let () = redis.conn().del(redis.keys().degraded(activity)).await.at(redis)?;
    Ok(DegradeStatus {
        activity_id: activity,
        degraded: false,
        message: None,
    })
}

/// Whether the switch of `activity` is on, and its message.
pub async fn status(db: &Db, redis: &RedisClient, activity: u64) -> Result<DegradeStatus> {
    catalog::get_activity(db, activity).await?;
    let message: Option<String> = redis.conn().get(redis.keys().degraded(activity)).await.at(redis)?;
    Ok(DegradeStatus {
        activity_id: activity,
        degraded: message.is_some(),
        message,
    })
}
