//! The dead-letter stream of each activity: purchases (or whole entries, when an entry cannot
//! be split into purchases) that failed `consumer.max_deliveries` times, kept with their error
//! until an operator replays them. A purchase is buried alone, as a one-purchase entry with its
//! place in the original entry (`dlq_index`), so the other purchases of its entry, persisted
//! meanwhile, are not held back with it.

use redis::AsyncCommands;
use serde::Serialize;

use super::entry::{decode_at, purchases, Entry};
use super::stream::read_all;
use crate::db::Db;
use crate::error::{Error, RedisContext, Result};
use crate::keys;
use crate::redis_client::RedisClient;

/// Fields added to the original ones when an entry is buried.
const META: [&str; 6] = [
    "dlq_entry",
    "dlq_error",
    "dlq_deliveries",
    "dlq_consumer",
    "dlq_ms",
    "dlq_index",
];

/// One letter to bury: a whole entry (`index` `None`), or one purchase of it as [`purchases`]
/// makes it, with its place in the entry.
#[derive(Debug, Clone)]
pub struct Letter<'a> {
    /// The entry, or the one-purchase entry.
    pub entry: &'a Entry,
    /// The purchase's place within the original entry; `None` for the whole entry.
    pub index: Option<u32>,
    /// Why it cannot be persisted.
    pub error: &'a str,
}

/// Moves `entry` as a whole to the activity's dead-letter stream and acknowledges it,
/// atomically.
pub async fn bury(
    redis: &RedisClient,
    activity: u64,
    group: &str,
    consumer: &str,
    entry: &Entry,
    error: &str,
    deliveries: u64,
) -> Result<()> {
    let letter = Letter {
        entry,
        index: None,
        error,
    };
    bury_letters(redis, (activity, group, consumer), &entry.id, &[letter], deliveries).await
}

/// Moves `letters` (all of the entry `entry_id`) to the activity's dead-letter stream and
/// acknowledges the entry, atomically: the entry's other purchases must already be in MySQL.
pub async fn bury_letters(
    redis: &RedisClient,
    (activity, group, consumer): (u64, &str, &str),
    entry_id: &str,
    letters: &[Letter<'_>],
    deliveries: u64,
) -> Result<()> {
    let keys = redis.keys();
    let now = chrono::Utc::now().timestamp_millis();
    let mut pipe = redis::pipe();
    pipe.atomic();
    for letter in letters {
        let mut fields: Vec<(String, String)> = letter
            .entry
            .fields
            .iter()
            .filter(|(k, _)| !META.contains(&k.as_str()))
            .cloned()
            .collect();
        for (k, v) in META.iter().zip([
            entry_id.to_string(),
            letter.error.to_string(),
            deliveries.to_string(),
            consumer.to_string(),
            now.to_string(),
        ]) {
            fields.push((k.to_string(), v));
        }
        if let Some(index) = letter.index {
            fields.push(("dlq_index".into(), index.to_string()));
        }
        pipe.xadd(keys.dlq(activity), "*", &fields).ignore();
    }
    pipe.xack(keys.orders_stream(activity), group, &[entry_id]).ignore();
    let () = pipe.query_async(&mut redis.conn()).await.at(redis)?;
    Ok(())
}

/// One dead-lettered reservation.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DeadLetter {
    /// The activity.
    pub activity_id: u64,
    /// Id in the dead-letter stream.
    pub dlq_id: String,
    /// Id of the original entry in the order stream.
    pub entry_id: String,
    /// The purchase's place within the original entry; `None` when the whole entry was buried.
    pub index: Option<u32>,
    /// The order number it would get.
    pub order_no: String,
    /// Why persisting failed.
    pub error: String,
    /// Deliveries before it was buried.
    pub deliveries: u64,
    /// The consumer that buried it.
    pub consumer: String,
    /// The original fields.
    pub fields: Vec<(String, String)>,
}

fn dead_letter(activity: u64, e: Entry) -> DeadLetter {
    let entry_id = e.get("dlq_entry").unwrap_or_default().to_string();
    let index: Option<u32> = e.get("dlq_index").and_then(|i| i.parse().ok());
    DeadLetter {
        activity_id: activity,
        order_no: keys::purchase_order_no(activity, &entry_id, index.unwrap_or(0)),
        index,
        error: e.get("dlq_error").unwrap_or_default().to_string(),
        deliveries: e.get("dlq_deliveries").and_then(|d| d.parse().ok()).unwrap_or(0),
        consumer: e.get("dlq_consumer").unwrap_or_default().to_string(),
        fields: e
            .fields
            .iter()
            .filter(|(k, _)| !META.contains(&k.as_str()))
            .cloned()
            .collect(),
        dlq_id: e.id,
        entry_id,
    }
}

impl DeadLetter {
    /// The purchases the letter holds, each as a one-purchase entry under the original entry's
    /// id with its place in that entry: itself when it is one purchase; each purchase of a
    /// buried whole entry; the whole entry as it is (place 0) when it cannot be split.
    pub fn purchases(&self) -> Vec<(u32, Entry)> {
        let entry = Entry {
            id: self.entry_id.clone(),
            fields: self.fields.clone(),
        };
        match self.index {
            Some(index) => vec![(index, entry)],
            None => match purchases(&entry) {
                Ok(list) => (0u32..).zip(list).collect(),
                Err(_) => vec![(0, entry)],
            },
        }
    }
}

/// How many dead letters `activity` has.
pub async fn count(redis: &RedisClient, activity: u64) -> Result<u64> {
    redis.conn().xlen(redis.keys().dlq(activity)).await.at(redis)
}

/// Dead letters of `activity`, or of every preheated activity.
pub async fn list(redis: &RedisClient, activity: Option<u64>) -> Result<Vec<DeadLetter>> {
    let mut conn = redis.conn();
    let activities: Vec<u64> = match activity {
        Some(a) => vec![a],
        None => {
            let mut ids: Vec<u64> = conn.smembers(redis.keys().activities()).await.at(redis)?;
            ids.sort_unstable();
            ids
        }
    };
    let mut out = Vec::new();
    for a in activities {
        let letters = read_all(redis, &redis.keys().dlq(a)).await?;
        out.extend(letters.into_iter().map(|e| dead_letter(a, e)));
    }
    Ok(out)
}

/// The fate of one replayed dead letter.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Replayed {
    /// Id in the dead-letter stream.
    pub dlq_id: String,
    /// The order number.
    pub order_no: String,
    /// `persisted`, `already_persisted` or `failed`.
    pub outcome: String,
    /// Why it failed again.
    pub error: Option<String>,
}

/// Re-persists the dead letters of `activity` (only the one whose dead-letter or original
/// entry id is `id`, when given) under their original order numbers, so replaying twice, or
/// replaying an entry that did get persisted, never makes a second order. Replayed entries
/// leave the dead-letter stream; those still failing stay, with the new error reported.
pub async fn replay(db: &Db, redis: &RedisClient, activity: u64, id: Option<&str>) -> Result<Vec<Replayed>> {
    let letters: Vec<DeadLetter> = list(redis, Some(activity))
        .await?
        .into_iter()
        .filter(|d| id.is_none_or(|id| d.dlq_id == id || d.entry_id == id))
        .collect();
    if let (Some(id), true) = (id, letters.is_empty()) {
        return Err(Error::not_found(format!("dead letter {id} of activity {activity}")));
    }
    let mut conn = redis.conn();
    let mut out = Vec::new();
    let bar = crate::progress::bar(letters.len() as u64, "replay");
    for d in letters {
        bar.inc(1);
        let decoded: std::result::Result<Vec<_>, String> = d
            .purchases()
            .into_iter()
            .map(|(index, entry)| decode_at(activity, &entry, index))
            .collect();
        let result = match decoded {
            Err(why) => Err(why),
            Ok(rs) => {
                let done = crate::persist::persist(db, redis, &rs, "dlq replay").await?;
                match done.rejected.into_iter().next() {
                    Some((_, why)) => Err(why),
                    None if done.inserted > 0 => Ok("persisted"),
                    None => Ok("already_persisted"),
                }
            }
        };
        let (outcome, error) = match result {
            Ok(outcome) => {
                let _: u64 = conn.xdel(redis.keys().dlq(activity), &[&d.dlq_id]).await.at(redis)?;
                (outcome.to_string(), None)
            }
            Err(why) => ("failed".to_string(), Some(why)),
        };
        out.push(Replayed {
            dlq_id: d.dlq_id,
            order_no: d.order_no,
            outcome,
            error,
        });
    }
    bar.finish_and_clear();
    Ok(out)
}
