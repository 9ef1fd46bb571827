//! Collecting a batch: entries this consumer let go of, entries idle past `claim_idle_ms`
//! (reclaimed from dead consumers), then new ones.

use redis::AsyncCommands;

use super::batch::Held;
use super::Worker;
use crate::error::{RedisContext, Result};
use crate::redis_client::RedisClient;
use crate::reservation::stream::{self, GroupConsumer, ReadError};
use crate::reservation::{self, Entry};

/// The activity streams that exist, as (activity, stream name), by activity id.
type Streams = [(u64, String)];

/// The activity whose stream is named `name`.
fn activity_of(streams: &Streams, name: &str) -> Option<u64> {
    streams.iter().find(|(_, n)| n == name).map(|(activity, _)| *activity)
}

fn stream_names(streams: &Streams) -> Vec<String> {
    streams.iter().map(|(_, s)| s.clone()).collect()
}

impl Worker {
    /// Collects up to a batch: what this consumer let go of and still holds (after a MySQL
    /// outage), entries idle past `claim_idle_ms` (any idle time with `once`), then new ones.
    /// `drained` is true when nothing is left anywhere. `ahead`: a batch is in flight, so
    /// only new entries are read, without blocking (see [`Worker::may_read_ahead`]), and
    /// `drained` is false.
    pub(super) async fn fetch(&mut self, ahead: bool) -> Result<(Vec<Held>, bool)> {
        let streams = self.active_streams().await?;
        self.no_streams = streams.is_empty();
        let mut held = Vec::new();
        let mut drained = false;
        if !ahead {
            if std::mem::take(&mut self.retake_own) && !streams.is_empty() {
                held = self.retake_own_pending(&streams).await?;
            }
            self.last_reclaim = std::time::Instant::now();
            drained = self.reclaim_idle(&streams, &mut held).await?;
        }
        if held.len() < self.opts.batch && !streams.is_empty() {
            self.read_new(&streams, &mut held, ahead).await?;
        }
        if !held.is_empty() {
            drained = false;
        }
        let purchases: usize = held.iter().map(|h| reservation::purchase_count(&h.entry)).sum();
        self.stats.read.increment(purchases as u64);
        Ok((held, drained))
    }

    /// The streams of the preheated activities that exist (each activity's own, then its
    /// buckets', see [`crate::buckets`]), by activity id.
    async fn active_streams(&self) -> Result<Vec<(u64, String)>> {
        let keys = self.redis.keys();
        let mut conn = self.redis.conn();
        let mut ids: Vec<u64> = conn.smembers(keys.activities()).await.at(&self.redis)?;
        ids.sort_unstable();
        let mut streams = Vec::new();
        for id in ids {
            for name in crate::buckets::stock::streams(&self.redis, id).await? {
                let exists: bool = conn.exists(&name).await.at(&self.redis)?;
                if exists {
                    streams.push((id, name));
                }
            }
        }
        Ok(streams)
    }

    /// Up to a batch of the entries this consumer let go of and still holds (nobody reclaimed
    /// them meanwhile); asks for another round when there may be more.
    async fn retake_own_pending(&mut self, streams: &Streams) -> Result<Vec<Held>> {
        let batch = self.opts.batch;
        let own = self
            .group_consumer(&self.redis)
            .read_own_pending(&stream_names(streams), batch)
            .await?;
        let mut held = Vec::new();
        for (s, entries) in own {
            let Some(activity) = activity_of(streams, &s) else {
                continue;
            };
            held.extend(self.with_deliveries(activity, &s, entries).await?);
        }
        held.truncate(batch);
        if held.len() == batch {
            // More may be held: take them back on the next round too.
            self.retake_own = true;
        }
        Ok(held)
    }

    /// This consumer of the group, asking `redis` (the reader for blocking reads).
    fn group_consumer<'a>(&'a self, redis: &'a RedisClient) -> GroupConsumer<'a> {
        GroupConsumer {
            redis,
            group: &self.config.consumer.group,
            name: &self.opts.name,
        }
    }

    /// `entries` of `stream`, pending for this consumer, with how often each was delivered.
    async fn with_deliveries(&self, activity: u64, stream: &str, entries: Vec<Entry>) -> Result<Vec<Held>> {
        let ids: Vec<&str> = entries.iter().map(|e| e.id.as_str()).collect();
        let counts = self.group_consumer(&self.redis).delivery_counts(stream, &ids).await?;
        Ok(entries
            .into_iter()
            .map(|entry| Held {
                activity,
                stream: stream.to_string(),
                deliveries: counts.get(&entry.id).copied().unwrap_or(1),
                entry,
            })
            .collect())
    }

    /// Takes over entries idle past `claim_idle_ms` (any idle time with `once`) until `held`
    /// is a full batch, going on with each stream's scan where the last call stopped. True
    /// when every scan went through its whole pending list.
    async fn reclaim_idle(&mut self, streams: &Streams, held: &mut Vec<Held>) -> Result<bool> {
        let batch = self.opts.batch;
        let group = self.config.consumer.group.clone();
        let min_idle_ms = if self.opts.once {
            0
        } else {
            self.config.consumer.claim_idle_ms
        };
        let mut drained = true;
        for (activity, s) in streams {
            if held.len() >= batch {
                drained = false;
                break;
            }
            let start = self.cursors.get(s).cloned().unwrap_or_else(|| "0-0".into());
            let claim = stream::Claim {
                stream: s,
                min_idle_ms,
                start: &start,
                count: batch - held.len(),
            };
            let claimed = self.group_consumer(&self.redis).autoclaim(claim).await;
            let (next, entries) = match claimed {
                Err(ReadError::NoGroup(_)) => {
                    reservation::restore_group(&self.redis, *activity, &group).await?;
                    continue;
                }
                other => other?,
            };
            if next != "0-0" {
                drained = false;
            }
            self.cursors.insert(s.clone(), next);
            if entries.is_empty() {
                continue;
            }
            let claimed = self.with_deliveries(*activity, s, entries).await?;
            self.report.reclaimed += claimed.len() as u64;
            held.extend(claimed);
        }
        Ok(drained)
    }

    /// New entries until `held` is a full batch, waiting up to `block_ms` for them when
    /// nothing is in hand yet (never with `once`, nor `ahead` of a batch in flight).
    async fn read_new(&mut self, streams: &Streams, held: &mut Vec<Held>, ahead: bool) -> Result<()> {
        let group = &self.config.consumer.group;
        let block = (held.is_empty() && !self.opts.once && !ahead).then_some(self.config.consumer.block_ms);
        let read = self
            .group_consumer(&self.reader)
            .read_new(&stream_names(streams), self.opts.batch - held.len(), block)
            .await;
        let read = match read {
            Err(ReadError::NoGroup(_)) => {
                for (activity, _) in streams {
                    reservation::restore_group(&self.redis, *activity, group).await?;
                }
                return Ok(());
            }
            other => other?,
        };
        for (s, entries) in read {
            let Some(activity) = activity_of(streams, &s) else {
                continue;
            };
            held.extend(entries.into_iter().map(|entry| Held {
                activity,
                stream: s.clone(),
                entry,
                deliveries: 1,
            }));
        }
        Ok(())
    }
}
