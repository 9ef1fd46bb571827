//! Prometheus metrics. Each server or consumer owns its own recorder (no process-wide
//! global), so several can run in one process (tests, `bench --spawn`) without mixing counts.
//! Record with [`Metrics::scope`] around the `metrics` macros.

use std::sync::Arc;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

use crate::ticks::Ticks;

/// Requests by route and result code (counter).
pub const REQUESTS: &str = "seckill_requests_total";
/// Request latency in seconds, by route (histogram).
pub const REQUEST_SECONDS: &str = "seckill_request_duration_seconds";
/// Reservations queued by the buy path (counter).
pub const RESERVATIONS: &str = "seckill_reservations_total";
/// Buy requests answered from the local sold-out cache (counter).
pub const SOLD_OUT_CACHE_HITS: &str = "seckill_sold_out_cache_hits_total";
/// Buy requests rejected by the rate limits (counter).
pub const RATE_LIMITED: &str = "seckill_rate_limited_total";
/// Buy requests rejected as busy, by reason: admission, breaker, redis, suspended (counter).
pub const BUSY: &str = "seckill_busy_total";
/// Buy requests in flight (gauge).
pub const IN_FLIGHT: &str = "seckill_admission_in_flight";
/// Circuit breaker state: 0 closed, 1 open, 2 half-open (gauge).
pub const BREAKER_STATE: &str = "seckill_breaker_state";
/// Keys tracked by each capped rate-limit table, by table: per_ip, token_per_ip,
/// token_per_user (gauge; each stays at or below `funnel.rate_limit_keys_max`).
pub const RATE_LIMIT_KEYS: &str = "seckill_rate_limit_tracked_keys";
/// Seconds each `WAIT` for `redis.wait_replicas` replicas took (histogram).
pub const WAIT_REPLICAS_SECONDS: &str = "seckill_wait_replicas_seconds";
/// Purchases decided per script call (histogram).
pub const BATCH_SIZE: &str = "seckill_group_commit_batch_size";
/// Connections answered 503 `busy` and closed at once because `http.max_connections` were
/// open (counter).
pub const HTTP_CONNECTIONS_REFUSED: &str = "seckill_http_connections_refused_total";
/// Connections closed by the server because the client was too slow, by reason:
/// header_timeout, body_timeout (counter).
pub const HTTP_CONNECTIONS_CUT: &str = "seckill_http_connections_cut_total";
/// Remaining stock per activity and product (gauge).
pub const REMAINING_STOCK: &str = "seckill_remaining_stock";
/// 1 while `seckill degrade` has the activity's buys answered `degraded`, per activity (gauge).
pub const DEGRADED: &str = "seckill_degraded";
/// 1 while Redis has lost an activity's state and its sale is suspended, per activity (gauge).
pub const REDIS_STATE_LOST: &str = "seckill_redis_state_lost";

/// Reservations (purchases) read by the consumer, whatever the entries holding them (counter;
/// the name predates entries of several purchases).
pub const CONSUMER_READ: &str = "seckill_consumer_entries_read_total";
/// Orders inserted by the consumer (counter).
pub const CONSUMER_PERSISTED: &str = "seckill_consumer_orders_persisted_total";
/// Entries already persisted earlier (counter).
pub const CONSUMER_DUPLICATES: &str = "seckill_consumer_duplicates_total";
/// Seconds per persisted batch (histogram).
pub const CONSUMER_BATCH_SECONDS: &str = "seckill_consumer_batch_duration_seconds";
/// Retries after a MySQL or Redis failure (counter).
pub const CONSUMER_RETRIES: &str = "seckill_consumer_retries_total";
/// Entries moved to the dead-letter stream (counter).
pub const CONSUMER_DEAD_LETTERED: &str = "seckill_consumer_dead_lettered_total";
/// Reservations delivered but not acked, per activity (gauge; counted per purchase).
pub const CONSUMER_PENDING: &str = "seckill_consumer_pending_entries";
/// Reservations not yet delivered to the group, per activity (gauge; counted per purchase).
pub const CONSUMER_LAG: &str = "seckill_consumer_lag_entries";
/// Entries in the dead-letter stream, per activity (gauge).
pub const DLQ_LENGTH: &str = "seckill_dlq_entries";

/// Drift found by the last reconcile, per activity (gauge; textfile).
pub const RECONCILE_DRIFT: &str = "seckill_reconcile_drift";
/// When reconcile last ran (gauge; textfile).
pub const RECONCILE_LAST_RUN: &str = "seckill_reconcile_last_run_timestamp_seconds";

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0];

/// One recorder and its text renderer.
pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
}

impl Metrics {
    /// A fresh, empty registry with our histogram buckets, kept up on a spawned task (see
    /// [`UPKEEP_EVERY`]) until it is dropped. Must be called inside a Tokio runtime.
    pub fn new() -> Arc<Metrics> {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
            .and_then(|b| b.set_buckets_for_metric(Matcher::Full(BATCH_SIZE.into()), BATCH_BUCKETS))
            .expect("bucket lists are non-empty");
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        let metrics = Arc::new(Metrics { recorder, handle });
        let first = tokio::time::Instant::now() + UPKEEP_EVERY;
        let mut ticks = Ticks::new(Arc::downgrade(&metrics), first, UPKEEP_EVERY);
        tokio::spawn(async move {
            while let Some(metrics) = ticks.next().await {
                metrics.handle.run_upkeep();
            }
        });
        metrics
    }

    /// Runs `record` with this registry as the recorder of the `metrics` macros.
    pub fn scope<T>(&self, record: impl FnOnce() -> T) -> T {
        metrics::with_local_recorder(&self.recorder, record)
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        self.handle.run_upkeep();
        self.handle.render()
    }
}

/// How often a registry's histograms are folded into their buckets. The recorder keeps every
/// sample until then (or until a scrape), so a process nobody scrapes would otherwise grow by
/// every request it times. Five seconds, as the Prometheus exporter's own `install` does.
pub const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// One gauge sample of a [`textfile`].
#[derive(Debug, Clone)]
pub struct Gauge<'a> {
    /// Metric name.
    pub name: &'a str,
    /// Its `# HELP` text (written once per name).
    pub help: &'a str,
    /// Label names and values.
    pub labels: Vec<(&'a str, String)>,
    /// The value.
    pub value: f64,
}

/// Renders gauges as a node-exporter textfile (for cron jobs such as reconcile).
pub fn textfile(samples: &[Gauge<'_>]) -> String {
    let mut out = String::new();
    let mut described = std::collections::HashSet::new();
    for Gauge {
        name,
        help,
        labels,
        value,
    } in samples
    {
        if described.insert(*name) {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n"));
        }
        let labels: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", v.replace('"', "\\\"")))
            .collect();
        if labels.is_empty() {
            out.push_str(&format!("{name} {value}\n"));
        } else {
            out.push_str(&format!("{name}{{{}}} {value}\n", labels.join(",")));
        }
    }
    out
}

/// Writes `text` to `path` so a reader (node-exporter) never sees half a file: into a
/// temporary file in the same directory, flushed, then renamed over `path`.
pub fn write_atomically(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "no file name"))?;
    // node-exporter only reads `*.prom`, so the temporary name is ignored while being written.
    let tmp = dir.join(format!(".{}.{}.tmp", name.to_string_lossy(), std::process::id()));
    let written = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}
