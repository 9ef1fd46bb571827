//! Reading, claiming and acknowledging reservation entries (the consumer group's side), reading
//! a stream, finding one reservation by its order number, and listing those that may not be
//! in MySQL yet.

use std::collections::HashMap;

use redis::Value;

use super::dlq;
use super::entry::{decode_all, decode_at, Entry, Reservation};
use super::group::unacked_from;
use super::reply::{items, pairs, text};
use crate::error::{Error, RedisContext, Result};
use crate::keys;
use crate::redis_client::RedisClient;

/// Why a read through the consumer group failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The stream has no such consumer group (Redis's `NOGROUP`): put it back where the
    /// stream still exists ([`super::restore_group`]) and read again.
    #[error(transparent)]
    NoGroup(Error),
    /// Any other failure.
    #[error(transparent)]
    Failed(Error),
}

impl From<ReadError> for Error {
    fn from(e: ReadError) -> Error {
        match e {
            ReadError::NoGroup(e) | ReadError::Failed(e) => e,
        }
    }
}

fn group_read_error(redis: &RedisClient, e: redis::RedisError) -> ReadError {
    if e.code() == Some("NOGROUP") {
        ReadError::NoGroup(redis.err(e))
    } else {
        ReadError::Failed(redis.err(e))
    }
}

/// Decodes `[[id, [f, v, ...]], ...]`; entries deleted from the stream (nil fields) are kept
/// with no fields, so the caller can still acknowledge them.
pub fn decode_entries(v: Value) -> Vec<Entry> {
    items(v)
        .into_iter()
        .filter_map(|e| {
            let mut parts = items(e).into_iter();
            let id = text(&parts.next()?)?;
            let fields = parts.next().map(pairs).unwrap_or_default();
            Some(Entry { id, fields })
        })
        .collect()
}

/// How long an idle consumer waits between rounds of per-stream reads in a cluster.
const CLUSTER_IDLE_POLL_MS: u64 = 50;

/// One consumer of a stream's consumer group: reads, claims and delivery counts on its behalf.
#[derive(Clone, Copy)]
pub struct GroupConsumer<'a> {
    /// The Redis to ask (a blocking read wants a client of its own).
    pub redis: &'a RedisClient,
    /// The consumer group.
    pub group: &'a str,
    /// The consumer's name within the group.
    pub name: &'a str,
}

impl GroupConsumer<'_> {
    /// XREADGROUP of new entries (`>`) over several streams, waiting up to `block_ms` when
    /// given; returns (stream, entries) pairs.
    pub async fn read_new(
        &self,
        streams: &[String],
        count: usize,
        block_ms: Option<u64>,
    ) -> std::result::Result<Vec<(String, Vec<Entry>)>, ReadError> {
        self.read(streams, ">", count, block_ms).await
    }

    /// XREADGROUP from `0`: the entries this consumer holds (delivered to it, not
    /// acknowledged and not claimed by another consumer since), over several streams.
    pub async fn read_own_pending(
        &self,
        streams: &[String],
        count: usize,
    ) -> std::result::Result<Vec<(String, Vec<Entry>)>, ReadError> {
        self.read(streams, "0", count, None).await
    }

    async fn read(
        &self,
        streams: &[String],
        from: &str,
        count: usize,
        block_ms: Option<u64>,
    ) -> std::result::Result<Vec<(String, Vec<Entry>)>, ReadError> {
        if self.redis.is_cluster() && streams.len() > 1 {
            return self.read_each(streams, from, count, block_ms).await;
        }
        self.read_together(streams, from, count, block_ms).await
    }

    /// In a cluster the activities' streams sit in different slots, and one XREADGROUP may
    /// name only one slot's keys: each stream is read on its own, without blocking (a blocked
    /// read on one stream would hold back the others), and an idle round waits a little here.
    async fn read_each(
        &self,
        streams: &[String],
        from: &str,
        count: usize,
        block_ms: Option<u64>,
    ) -> std::result::Result<Vec<(String, Vec<Entry>)>, ReadError> {
        let mut out = Vec::new();
        let mut left = count;
        for stream in streams {
            if left == 0 {
                break;
            }
            for (name, entries) in self
                .read_together(std::slice::from_ref(stream), from, left, None)
                .await?
            {
                left = left.saturating_sub(entries.len());
                out.push((name, entries));
            }
        }
        if out.iter().all(|(_, entries)| entries.is_empty()) {
            if let Some(ms) = block_ms {
                tokio::time::sleep(std::time::Duration::from_millis(ms.min(CLUSTER_IDLE_POLL_MS))).await;
            }
        }
        Ok(out)
    }

    async fn read_together(
        &self,
        streams: &[String],
        from: &str,
        count: usize,
        block_ms: Option<u64>,
    ) -> std::result::Result<Vec<(String, Vec<Entry>)>, ReadError> {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP").arg(self.group).arg(self.name).arg("COUNT").arg(count);
        if let Some(ms) = block_ms {
            cmd.arg("BLOCK").arg(ms);
        }
        cmd.arg("STREAMS").arg(streams);
        for _ in streams {
            cmd.arg(from);
        }
        let reply: Value = cmd
            .query_async(&mut self.redis.conn())
            .await
            .map_err(|e| group_read_error(self.redis, e))?;
        let mut out = Vec::new();
        let flat = items(reply);
        // RESP3 gives a map (flattened to k, v, k, v); RESP2 gives [[k, v], ...].
        let pairs: Vec<(Value, Value)> = if flat.iter().all(|v| matches!(v, Value::Array(_))) {
            flat.into_iter()
                .filter_map(|p| {
                    let mut it = items(p).into_iter();
                    Some((it.next()?, it.next()?))
                })
                .collect()
        } else {
            let mut it = flat.into_iter();
            std::iter::from_fn(|| Some((it.next()?, it.next()?))).collect()
        };
        for (name, entries) in pairs {
            if let Some(name) = text(&name) {
                out.push((name, decode_entries(entries)));
            }
        }
        Ok(out)
    }

    /// XAUTOCLAIM: takes over the entries `claim` names; returns the next cursor (`0-0` when
    /// the scan wrapped) and the entries claimed.
    pub async fn autoclaim(&self, claim: Claim<'_>) -> std::result::Result<(String, Vec<Entry>), ReadError> {
        let reply: Value = redis::cmd("XAUTOCLAIM")
            .arg(claim.stream)
            .arg(self.group)
            .arg(self.name)
            .arg(claim.min_idle_ms)
            .arg(claim.start)
            .arg("COUNT")
            .arg(claim.count)
            .query_async(&mut self.redis.conn())
            .await
            .map_err(|e| group_read_error(self.redis, e))?;
        let mut parts = items(reply).into_iter();
        let next = parts.next().as_ref().and_then(text).unwrap_or_else(|| "0-0".into());
        let entries = parts.next().map(decode_entries).unwrap_or_default();
        Ok((next, entries))
    }

    /// Delivery counts (from XPENDING) of `ids` of `stream`, all pending for this consumer.
    pub async fn delivery_counts(&self, stream: &str, ids: &[&str]) -> Result<HashMap<String, u64>> {
        let (Some(first), Some(last)) = (
            ids.iter().min_by(|a, b| cmp_ids(a, b)),
            ids.iter().max_by(|a, b| cmp_ids(a, b)),
        ) else {
            return Ok(HashMap::new());
        };
        let reply: Value = redis::cmd("XPENDING")
            .arg(stream)
            .arg(self.group)
            .arg(*first)
            .arg(*last)
            .arg(ids.len() * 4 + 16)
            .arg(self.name)
            .query_async(&mut self.redis.conn())
            .await
            .at(self.redis)?;
        Ok(items(reply)
            .into_iter()
            .filter_map(|row| {
                let row = items(row);
                let id = text(row.first()?)?;
                let count = text(row.get(3)?)?.parse().ok()?;
                Some((id, count))
            })
            .collect())
    }
}

/// Which entries of a stream a [`GroupConsumer::autoclaim`] takes over.
#[derive(Debug, Clone, Copy)]
pub struct Claim<'a> {
    /// The stream.
    pub stream: &'a str,
    /// Only entries idle (delivered and not acknowledged) at least this long.
    pub min_idle_ms: u64,
    /// Where the scan of the pending list goes on (`0-0` from the start).
    pub start: &'a str,
    /// At most this many entries.
    pub count: usize,
}

/// Orders stream ids numerically (`ms-seq`).
pub fn cmp_ids(a: &str, b: &str) -> std::cmp::Ordering {
    parse_id(a).cmp(&parse_id(b))
}

/// `ms-seq` as numbers; malformed ids sort first.
pub fn parse_id(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
}

/// XRANGE `start` `end`, at most `count` entries when given.
async fn range(
    redis: &RedisClient,
    stream: &str,
    (start, end): (&str, &str),
    count: Option<usize>,
) -> Result<Vec<Entry>> {
    let mut cmd = redis::cmd("XRANGE");
    cmd.arg(stream).arg(start).arg(end);
    if let Some(count) = count {
        cmd.arg("COUNT").arg(count);
    }
    let raw: Value = cmd.query_async(&mut redis.conn()).await.at(redis)?;
    Ok(decode_entries(raw))
}

/// Every entry of `stream`, oldest first, read in pages so a long stream never becomes
/// one huge reply.
pub async fn read_all(redis: &RedisClient, stream: &str) -> Result<Vec<Entry>> {
    read_from(redis, stream, "-").await
}

/// The entries of `stream` from `start` (an XRANGE start: an id, `(id` after it, `-`) on,
/// oldest first, read in pages.
pub async fn read_from(redis: &RedisClient, stream: &str, start: &str) -> Result<Vec<Entry>> {
    const PAGE: usize = 10_000;
    let mut entries = Vec::new();
    let mut start = start.to_string();
    loop {
        let page = range(redis, stream, (&start, "+"), Some(PAGE)).await?;
        let full = page.len() == PAGE;
        if let Some(last) = page.last() {
            start = format!("({}", last.id);
        }
        entries.extend(page);
        if !full {
            return Ok(entries);
        }
    }
}

/// Every reservation of `activity` that may not be in MySQL yet, oldest entry of each stream
/// first: the purchases of the stream's entries the consumers of `group` have not
/// acknowledged (see [`unacked_from`]; the activity's own stream and its buckets'), then the
/// dead letters. Purchases that cannot be decoded are left out. Read Redis before MySQL: an
/// entry persisted meanwhile is then found in MySQL too.
pub async fn unpersisted(redis: &RedisClient, activity: u64, group: &str) -> Result<Vec<Reservation>> {
    let mut entries = Vec::new();
    for stream in crate::buckets::stock::streams(redis, activity).await? {
        if let Some(start) = unacked_from(redis, &stream, group).await? {
            entries.extend(read_from(redis, &stream, &start).await?);
        }
    }
    let mut out: Vec<Reservation> = entries
        .iter()
        .filter_map(|e| decode_all(activity, e).ok())
        .flatten()
        .filter_map(|r| r.ok())
        .collect();
    // A dead letter without its original id cannot be named by an order number.
    for d in dlq::list(redis, Some(activity)).await? {
        if d.entry_id.is_empty() {
            continue;
        }
        out.extend(
            d.purchases()
                .into_iter()
                .filter_map(|(index, e)| decode_at(activity, &e, index).ok()),
        );
    }
    Ok(out)
}

/// The reservation `order_no` names, while its entry is in the activity's stream (or the
/// bucket stream its entry id names, see [`keys::bucket_of_entry`]): `None` when the number is
/// malformed or no such purchase is there (never queued, or gone since).
/// A purchase that is there but cannot be decoded is an [`Error::Internal`] saying why.
pub async fn lookup(redis: &RedisClient, order_no: &str) -> Result<Option<Reservation>> {
    let Some((activity, entry_id, index)) = keys::parse_purchase_no(order_no) else {
        return Ok(None);
    };
    let stream = match keys::bucket_of_entry(entry_id) {
        Some(bucket) => redis.keys().bucket_orders(activity, bucket),
        None => redis.keys().orders_stream(activity),
    };
    let Some(entry) = range(redis, &stream, (entry_id, entry_id), None).await?.pop() else {
        return Ok(None);
    };
    let unreadable = |why: String| Error::Internal(format!("reservation {order_no} in Redis is unreadable: {why}"));
    let mut all = decode_all(activity, &entry).map_err(unreadable)?;
    match usize::try_from(index).ok().filter(|i| *i < all.len()) {
        Some(i) => all.swap_remove(i).map(Some).map_err(unreadable),
        None => Ok(None),
    }
}

/// XACK: the consumers of `group` are done with `ids` of `stream`.
pub async fn ack(redis: &RedisClient, stream: &str, group: &str, ids: &[&str]) -> Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let _: u64 = redis::cmd("XACK")
        .arg(stream)
        .arg(group)
        .arg(ids)
        .query_async(&mut redis.conn())
        .await
        .at(redis)?;
    Ok(())
}
