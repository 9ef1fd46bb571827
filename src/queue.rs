//! The reservation stream of each activity: consumer-group set-up and backlog.

use redis::AsyncCommands;

use crate::error::Result;
use crate::redis_client::RedisClient;

/// Creates the consumer group `group` on the activity's stream (and the stream itself),
/// reading from the very first entry. Harmless when it exists.
pub async fn ensure_group(redis: &RedisClient, activity: u64, group: &str) -> Result<()> {
    let mut conn = redis.conn();
    let stream = redis.keys().orders_stream(activity);
    let created: redis::RedisResult<()> = conn.xgroup_create_mkstream(&stream, group, "0").await;
    match created {
        Ok(()) => Ok(()),
        Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
        Err(e) => Err(redis.err(e)),
    }
}

/// Reservations of the activity not yet acknowledged by the consumers of `group`:
/// entries never delivered plus entries delivered but not acked.
pub async fn backlog(redis: &RedisClient, activity: u64, group: &str) -> Result<u64> {
    let mut conn = redis.conn();
    let stream = redis.keys().orders_stream(activity);
    let exists: bool = conn.exists(&stream).await.map_err(|e| redis.err(e))?;
    if !exists {
        return Ok(0);
    }
    let len: u64 = conn.xlen(&stream).await.map_err(|e| redis.err(e))?;
    let groups: Vec<redis::Value> = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(&stream)
        .query_async(&mut conn)
        .await
        .map_err(|e| redis.err(e))?;
    for info in groups {
        let fields = map_of(info);
        if fields.get("name").map(String::as_str) != Some(group) {
            continue;
        }
        let pending: u64 = fields.get("pending").and_then(|v| v.parse().ok()).unwrap_or(0);
        let last_delivered = fields.get("last-delivered-id").cloned().unwrap_or_default();
        // Redis reports `lag` (entries never delivered) unless it cannot compute it cheaply.
        let undelivered = match fields.get("lag").and_then(|v| v.parse::<u64>().ok()) {
            Some(lag) => lag,
            None if last_delivered == "0-0" => len,
            None => {
                let newer: redis::streams::StreamRangeReply = conn
                    .xrange_count(&stream, format!("({last_delivered}"), "+", len as usize + 1)
                    .await
                    .map_err(|e| redis.err(e))?;
                newer.ids.len() as u64
            }
        };
        return Ok(pending + undelivered);
    }
    // No group: nothing was ever consumed.
    Ok(len)
}

fn map_of(value: redis::Value) -> std::collections::HashMap<String, String> {
    let mut out = std::collections::HashMap::new();
    let pairs: Vec<(redis::Value, redis::Value)> = match value {
        redis::Value::Array(items) => items.chunks_exact(2).map(|c| (c[0].clone(), c[1].clone())).collect(),
        redis::Value::Map(pairs) => pairs,
        _ => Vec::new(),
    };
    for (k, v) in pairs {
        let (Ok(k), Ok(v)) = (
            redis::from_redis_value::<String>(k),
            redis::from_redis_value::<String>(v),
        ) else {
            continue;
        };
        out.insert(k, v);
    }
    out
}
