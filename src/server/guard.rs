//! The server's watch for a Redis that lost state (see [`crate::lost_state`]). Every
//! [`GUARD_EVERY`] the server state runs [`check`], which
//! - copies MySQL's persist sequences into [`KnownSeqs`], which every purchase batch hands to
//!   `reserve.lua`: a Redis that went back past a batch persisted before that moment refuses
//!   the very first purchase after the restart, before anyone looks;
//! - compares each preheated activity's Redis state with MySQL's mark and suspends the
//!   activity in Redis when it was lost (vanished keys, an older epoch, a rollback of the
//!   latest batches), so every `serve` stops selling it. Logged once per detection, and shown
//!   as `seckill_redis_state_lost{activity}`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use metrics::Gauge;

use super::metrics::ServerMetrics;
use crate::db::Db;
use crate::lost_state;
use crate::redis_client::RedisClient;

/// How often the guard looks. A Redis that lost only batches persisted within this long
/// before its failure may sell until the next look; earlier ones are refused at once.
pub const GUARD_EVERY: Duration = Duration::from_millis(500);

/// The persist sequence MySQL is known to have recorded per activity (a lower bound: it only
/// grows, and is refreshed every [`GUARD_EVERY`]).
#[derive(Default)]
pub struct KnownSeqs(ArcSwap<HashMap<u64, u64>>);

impl KnownSeqs {
    /// The known sequence of `activity` (0: none known).
    pub fn get(&self, activity: u64) -> u64 {
        self.0.load().get(&activity).copied().unwrap_or(0)
    }

    fn set(&self, seqs: HashMap<u64, u64>) {
        self.0.store(Arc::new(seqs));
    }
}

/// One look: refreshes `known_seqs` from MySQL, suspends the activities whose Redis state was
/// lost, and sets their gauges (`gauges`: one per preheated activity, kept between looks).
pub async fn check(
    db: &Db,
    redis: &RedisClient,
    stats: &ServerMetrics,
    known_seqs: &KnownSeqs,
    gauges: &mut HashMap<u64, Gauge>,
) {
    // One read of MySQL's marks serves both the batches' known sequences and the check.
    let marks = match lost_state::marks(db).await {
        Ok(marks) => marks,
        Err(e) => {
            tracing::debug!(error = %e, "reading the lost-state marks failed");
            return;
        }
    };
    // Every preheated activity gets its gauge, 0 until a loss is seen.
    for activity in marks.keys() {
        gauges
            .entry(*activity)
            .or_insert_with(|| stats.redis_state_lost(*activity));
    }
    known_seqs.set(marks.iter().map(|(a, m)| (*a, m.persist_seq)).collect());
    let losses = match lost_state::inspect_all(db, redis, &marks).await {
        Ok(losses) => losses,
        Err(e) => {
            tracing::debug!(error = %e, "lost-state check failed");
            return;
        }
    };
    for gauge in gauges.values() {
        gauge.set(0.0);
    }
    for loss in losses {
        match lost_state::suspend(db, redis, &loss).await {
            Ok(true) => tracing::error!(
                activity = loss.activity_id,
                kind = ?loss.kind,
                units_at_risk = loss.units_at_risk,
                "{loss}; selling suspended"
            ),
            Ok(false) => {}
            Err(e) => tracing::warn!(activity = loss.activity_id, error = %e, "could not suspend the activity"),
        }
        gauges
            .entry(loss.activity_id)
            .or_insert_with(|| stats.redis_state_lost(loss.activity_id))
            .set(1.0);
    }
}
