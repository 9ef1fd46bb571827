//! The consumer group of each reservation stream: creating it, its state (XINFO GROUPS,
//! read here only), what it has not acknowledged yet, and which entries it holds.

use std::collections::{HashMap, HashSet};

use redis::streams::StreamPendingReply;
use redis::AsyncCommands;

use super::entry::purchases;
use super::reply::pairs;
use super::stream::{cmp_ids, read_from};
use crate::error::{RedisContext, Result};
use crate::redis_client::RedisClient;

/// Creates the consumer group `group` on each of the activity's streams (its own and its
/// buckets', see [`crate::buckets`]; and the streams themselves), reading from the very first
/// entry. Harmless when they exist. For `hot`, which owns the streams; the consumer uses
/// [`restore_group`], which never creates a stream.
pub async fn ensure_group(redis: &RedisClient, activity: u64, group: &str) -> Result<()> {
    let mut conn = redis.conn();
    for stream in crate::buckets::stock::streams(redis, activity).await? {
        let created: redis::RedisResult<()> = conn.xgroup_create_mkstream(&stream, group, "0").await;
        match created {
            Ok(()) => {}
            Err(e) if e.code() == Some("BUSYGROUP") => {}
            Err(e) => return Err(redis.err(e)),
        }
    }
    Ok(())
}

/// Puts the consumer group `group` back on each of the activity's streams that exists and
/// lost it (Redis's NOGROUP), reading from the very first entry; a stream that does not
/// exist is left absent. This is the consumer's repair: a stream can vanish between the
/// consumer listing it and reading it (`flush`), and [`ensure_group`] would bring it back
/// as an empty key.
pub async fn restore_group(redis: &RedisClient, activity: u64, group: &str) -> Result<()> {
    let mut conn = redis.conn();
    for stream in crate::buckets::stock::streams(redis, activity).await? {
        let _: i64 = crate::scripts::RESTORE_GROUP
            .key(&stream)
            .arg(group)
            .invoke_async(&mut conn)
            .await
            .at(redis)?;
    }
    Ok(())
}

/// What XINFO GROUPS says about one consumer group.
#[derive(Debug, Clone, PartialEq, Eq)]
struct GroupInfo {
    /// Entries delivered and not acknowledged.
    pending: u64,
    /// The last entry id delivered to any consumer (`0-0`: none yet).
    last_delivered_id: String,
    /// Entries never delivered, when Redis can tell cheaply.
    lag: Option<u64>,
}

/// The state of `group` on `stream`, which must exist; `None` when there is no such group.
async fn group_info(redis: &RedisClient, stream: &str, group: &str) -> Result<Option<GroupInfo>> {
    let groups: Vec<redis::Value> = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(stream)
        .query_async(&mut redis.conn())
        .await
        .at(redis)?;
    Ok(groups
        .into_iter()
        .map(|info| pairs(info).into_iter().collect::<HashMap<String, String>>())
        .find(|fields| fields.get("name").map(String::as_str) == Some(group))
        .map(|fields| GroupInfo {
            pending: fields.get("pending").and_then(|v| v.parse().ok()).unwrap_or(0),
            last_delivered_id: fields.get("last-delivered-id").cloned().unwrap_or_default(),
            lag: fields.get("lag").and_then(|v| v.parse().ok()),
        }))
}

/// Reservations of an activity the consumers of a group have not acknowledged yet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backlog {
    /// Delivered to a consumer, not acknowledged.
    pub pending: u64,
    /// Never delivered.
    pub undelivered: u64,
}

impl Backlog {
    /// Every reservation not acknowledged: pending plus undelivered.
    pub fn total(&self) -> u64 {
        self.pending + self.undelivered
    }
}

/// The activity's reservations (purchases, not entries: one entry holds a script call's
/// purchases) not yet acknowledged by the consumers of `group`, split into delivered (pending)
/// and never delivered, over all its streams (its buckets' too, see [`crate::buckets`]).
/// Without the group, every purchase is undelivered.
pub async fn backlog_of(redis: &RedisClient, activity: u64, group: &str) -> Result<Backlog> {
    let mut total = Backlog::default();
    for stream in crate::buckets::stock::streams(redis, activity).await? {
        let one = stream_backlog(redis, &stream, group).await?;
        total.pending += one.pending;
        total.undelivered += one.undelivered;
    }
    Ok(total)
}

/// [`backlog_of`] for one stream. Reads the entries from the oldest unacknowledged one on; an
/// entry that cannot be split counts as one.
async fn stream_backlog(redis: &RedisClient, stream: &str, group: &str) -> Result<Backlog> {
    let Some(start) = unacked_from(redis, stream, group).await? else {
        return Ok(Backlog::default());
    };
    let Delivered {
        last_delivered_id,
        pending,
    } = delivered(redis, stream, group).await?;
    let mut backlog = Backlog::default();
    for entry in read_from(redis, stream, &start).await? {
        let count = purchases(&entry).map_or(1, |p| p.len() as u64);
        if pending.contains(&entry.id) {
            backlog.pending += count;
        } else if last_delivered_id
            .as_deref()
            .is_none_or(|l| cmp_ids(&entry.id, l).is_gt())
        {
            backlog.undelivered += count;
        }
    }
    Ok(backlog)
}

/// Reservations of the activity not yet acknowledged by the consumers of `group`:
/// entries never delivered plus entries delivered but not acked.
pub async fn backlog(redis: &RedisClient, activity: u64, group: &str) -> Result<u64> {
    Ok(backlog_of(redis, activity, group).await?.total())
}

/// Where to start reading `stream` (an XRANGE start) to see every entry the consumers of
/// `group` may not have persisted: its oldest pending entry, else the entry after the last one
/// delivered, or the whole stream when there is no such group. `None` when the stream does
/// not exist. Entries before that point were acknowledged, which happens only after their
/// order committed (or after they moved to the dead-letter stream).
pub async fn unacked_from(redis: &RedisClient, stream: &str, group: &str) -> Result<Option<String>> {
    let mut conn = redis.conn();
    let exists: bool = conn.exists(stream).await.at(redis)?;
    if !exists {
        return Ok(None);
    }
    let Some(info) = group_info(redis, stream, group).await? else {
        return Ok(Some("-".into()));
    };
    let pending: StreamPendingReply = conn.xpending(stream, group).await.at(redis)?;
    Ok(Some(match pending {
        // Pending entries were delivered, so the oldest starts no later than the last delivered.
        StreamPendingReply::Data(oldest) => oldest.start_id,
        _ => format!("({}", info.last_delivered_id),
    }))
}

/// Where a group stands on a stream: the last entry id it delivered and every entry it
/// holds (delivered, not acknowledged).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delivered {
    /// The last entry id delivered to any consumer; `None` when the stream or the group
    /// does not exist.
    pub last_delivered_id: Option<String>,
    /// Ids of the entries delivered and not acknowledged.
    pub pending: HashSet<String>,
}

/// Where `group` stands on `stream` (empty when either does not exist), its pending list
/// read in pages.
pub async fn delivered(redis: &RedisClient, stream: &str, group: &str) -> Result<Delivered> {
    const PAGE: usize = 10_000;
    let mut conn = redis.conn();
    let exists: bool = conn.exists(stream).await.at(redis)?;
    if !exists {
        return Ok(Delivered::default());
    }
    let Some(info) = group_info(redis, stream, group).await? else {
        return Ok(Delivered::default());
    };
    let mut pending = HashSet::new();
    let mut start = "-".to_string();
    loop {
        let rows: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
            .arg(stream)
            .arg(group)
            .arg(&start)
            .arg("+")
            .arg(PAGE)
            .query_async(&mut conn)
            .await
            .at(redis)?;
        let full = rows.len() == PAGE;
        if let Some(last) = rows.last() {
            start = format!("({}", last.0);
        }
        pending.extend(rows.into_iter().map(|r| r.0));
        if !full {
            break;
        }
    }
    Ok(Delivered {
        last_delivered_id: Some(info.last_delivered_id),
        pending,
    })
}
