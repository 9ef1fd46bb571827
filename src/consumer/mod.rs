//! `seckill consumer`: the daemons that persist reservations from the activity streams
//! into MySQL orders, through one Redis Streams consumer group shared by all of them.
//!
//! An entry is acknowledged only after the transaction holding its order committed, so
//! a crash at any point leaves it pending; another consumer reclaims it after
//! `consumer.claim_idle_ms` and persisting it again is a no-op (see [`crate::persist`]).
//! The stream itself (entries, group, reads, dead letters) is [`crate::reservation`]'s.

pub mod metrics;
pub mod metrics_endpoint;
mod worker;

use serde::Serialize;

pub use worker::{run, run_with_metrics};

/// How one consumer runs.
#[derive(Debug, Clone)]
pub struct ConsumerOptions {
    /// Consumer name within the group; must be unique among live consumers.
    pub name: String,
    /// Entries per batch (one MySQL transaction).
    pub batch: usize,
    /// Drain everything pending (reclaiming entries of any idle time) and exit.
    pub once: bool,
}

impl ConsumerOptions {
    /// `hostname-pid`, the default consumer name.
    pub fn default_name() -> String {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| "consumer".into());
        format!("{host}-{}", std::process::id())
    }
}

/// What a consumer did before it stopped.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ConsumerReport {
    /// Consumer name.
    pub name: String,
    /// Batches committed.
    pub batches: u64,
    /// Orders inserted.
    pub persisted: u64,
    /// Entries that already had their order (redelivered).
    pub duplicates: u64,
    /// Entries moved to the dead-letter stream.
    pub dead_lettered: u64,
    /// Entries reclaimed from other (or earlier) consumers.
    pub reclaimed: u64,
    /// MySQL or Redis failures waited out.
    pub retries: u64,
    /// Entries still held (not acknowledged) when it stopped: shutdown during an outage.
    pub left_pending: u64,
    /// Wall time in seconds.
    pub seconds: f64,
}
