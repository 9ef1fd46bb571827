//! What `seckill consumer --metrics-bind` exports: counters recorded by the worker, and
//! per-activity gauges (pending, lag, dead letters) refreshed from Redis by a side task.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram};
use redis::AsyncCommands;

use crate::metrics::{self as names, Metrics};
use crate::redis_client::RedisClient;

/// The worker's recording handles (no-ops when the consumer runs without metrics).
#[derive(Clone)]
pub struct ConsumerMetrics {
    registry: Option<Arc<Metrics>>,
    /// Entries read (new and reclaimed).
    pub read: Counter,
    /// Orders inserted.
    pub persisted: Counter,
    /// Entries whose order existed already.
    pub duplicates: Counter,
    /// Seconds per persisted batch.
    pub batch_seconds: Histogram,
    /// Failures waited out.
    pub retries: Counter,
    /// Entries moved to the dead-letter stream.
    pub dead_lettered: Counter,
}

impl ConsumerMetrics {
    /// Handles that record nothing.
    pub fn noop() -> ConsumerMetrics {
        ConsumerMetrics {
            registry: None,
            read: Counter::noop(),
            persisted: Counter::noop(),
            duplicates: Counter::noop(),
            batch_seconds: Histogram::noop(),
            retries: Counter::noop(),
            dead_lettered: Counter::noop(),
        }
    }

    /// Handles registered in `registry`.
    pub fn new(registry: Arc<Metrics>) -> ConsumerMetrics {
        registry.scope(|| ConsumerMetrics {
            read: metrics::counter!(names::CONSUMER_READ),
            persisted: metrics::counter!(names::CONSUMER_PERSISTED),
            duplicates: metrics::counter!(names::CONSUMER_DUPLICATES),
            batch_seconds: metrics::histogram!(names::CONSUMER_BATCH_SECONDS),
            retries: metrics::counter!(names::CONSUMER_RETRIES),
            dead_lettered: metrics::counter!(names::CONSUMER_DEAD_LETTERED),
            registry: Some(registry.clone()),
        })
    }

    /// The registry, when recording.
    pub fn registry(&self) -> Option<&Arc<Metrics>> {
        self.registry.as_ref()
    }
}

/// The backlog gauges of one activity.
pub struct Backlog {
    pending: Gauge,
    lag: Gauge,
    dlq: Gauge,
}

/// Sets pending, lag and dead-letter gauges of every preheated activity from Redis.
/// `gauges` caches the handles between calls.
pub async fn refresh_backlog(
    redis: &RedisClient,
    group: &str,
    registry: &Metrics,
    gauges: &mut HashMap<u64, Backlog>,
) -> crate::Result<()> {
    let keys = redis.keys();
    let mut conn = redis.conn();
    let activities: Vec<u64> = conn.smembers(keys.activities()).await.map_err(|e| redis.err(e))?;
    for activity in activities {
        let backlog = crate::reservation::backlog_of(redis, activity, group).await?;
        let dlq = crate::reservation::dlq::count(redis, activity).await?;
        let g = gauges.entry(activity).or_insert_with(|| {
            let label = activity.to_string();
            registry.scope(|| Backlog {
                pending: metrics::gauge!(names::CONSUMER_PENDING, "activity" => label.clone()),
                lag: metrics::gauge!(names::CONSUMER_LAG, "activity" => label.clone()),
                dlq: metrics::gauge!(names::DLQ_LENGTH, "activity" => label),
            })
        });
        g.pending.set(backlog.pending as f64);
        g.lag.set(backlog.undelivered as f64);
        g.dlq.set(dlq as f64);
    }
    Ok(())
}

/// Refreshes the backlog gauges every `every` until `stop` changes or its sender is dropped.
pub fn spawn_backlog_refresh(
    redis: RedisClient,
    group: String,
    registry: Arc<Metrics>,
    every: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        let mut gauges = HashMap::new();
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return,
            }
            if let Err(e) = refresh_backlog(&redis, &group, &registry, &mut gauges).await {
                tracing::debug!(error = %e, "backlog gauge refresh failed");
            }
        }
    });
}
