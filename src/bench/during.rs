//! What the servers did while the load ran, and nothing else of the run (setup, drain): the
//! group-commit batches the server made and the commands Redis ran, so a benchmark can say
//! what bounded it (under `appendfsync always`, how many purchases shared each fsync, and
//! how many writes the consumer added), plus the load's wall-clock window to line up traces
//! taken outside the process (e.g. of Redis's fsyncs).

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::conn::Conn;
use crate::metrics::BATCH_SIZE;
use crate::redis_client::RedisClient;

/// Counters read before and after the load; the report holds their differences.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// (script calls, purchases) of the server's group commit, when its `/metrics` answered.
    batches: Option<(u64, u64)>,
    /// Calls per Redis command, when Redis is one server (not a cluster).
    redis_calls: Option<BTreeMap<String, u64>>,
}

/// What the servers did during the load.
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct DuringLoad {
    /// Wall clock when the first request went out, Unix milliseconds.
    pub started_unix_ms: u64,
    /// Wall clock when the last answer came back, Unix milliseconds.
    pub ended_unix_ms: u64,
    /// Group-commit script calls the server made (its `seckill_group_commit_batch_size`
    /// count); `None` when its `/metrics` could not be read.
    pub batches: Option<u64>,
    /// Purchases those calls decided (the histogram's sum).
    pub batched_purchases: Option<u64>,
    /// Calls per Redis command (`INFO commandstats`, lower-case names, only those that ran),
    /// whoever sent them: the server, the consumers, anything else on that Redis. `None` on a
    /// cluster, whose commands are spread over several servers.
    pub redis_calls: Option<BTreeMap<String, u64>>,
}

/// Now, in Unix milliseconds.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Reads the counters: the server's at `authority`, and Redis's. A counter that cannot be read
/// is left out (`None`): the figures are diagnostics, never a reason to fail the bench.
pub async fn snapshot(authority: &str, redis: &RedisClient) -> Snapshot {
    Snapshot {
        batches: server_batches(authority).await,
        redis_calls: redis_calls(redis).await,
    }
}

/// The differences between `before` and `after`, over the load from `started_unix_ms` to
/// `ended_unix_ms`.
pub fn between(before: &Snapshot, after: &Snapshot, started_unix_ms: u64, ended_unix_ms: u64) -> DuringLoad {
    let batches = before
        .batches
        .zip(after.batches)
        .map(|((c0, s0), (c1, s1))| (c1.saturating_sub(c0), s1.saturating_sub(s0)));
    let redis_calls = before
        .redis_calls
        .as_ref()
        .zip(after.redis_calls.as_ref())
        .map(|(b, a)| {
            a.iter()
                .map(|(cmd, n)| (cmd.clone(), n.saturating_sub(b.get(cmd).copied().unwrap_or(0))))
                .filter(|(_, n)| *n > 0)
                .collect()
        });
    DuringLoad {
        started_unix_ms,
        ended_unix_ms,
        batches: batches.map(|b| b.0),
        batched_purchases: batches.map(|b| b.1),
        redis_calls,
    }
}

/// The group commit's (count, sum) from the server's `/metrics`.
async fn server_batches(authority: &str) -> Option<(u64, u64)> {
    let mut conn = Conn::connect(authority).await.ok()?;
    let request = format!("GET /metrics HTTP/1.1\r\nhost: {authority}\r\n\r\n");
    let (status, body) = conn.round_trip(request.as_bytes()).await.ok()?;
    if status != 200 {
        return None;
    }
    batch_totals(std::str::from_utf8(body).ok()?)
}

/// (count, sum) of the batch-size histogram in a Prometheus exposition; (0, 0) when the
/// server has not made a batch yet (the histogram is not rendered before its first value).
fn batch_totals(exposition: &str) -> Option<(u64, u64)> {
    let value = |suffix: &str| -> Option<u64> {
        let name = format!("{BATCH_SIZE}_{suffix}");
        exposition.lines().find_map(|line| {
            let (metric, value) = line.rsplit_once(' ')?;
            let bare = metric.split('{').next()?;
            (bare == name).then(|| value.trim().parse::<f64>().ok().map(|v| v as u64))?
        })
    };
    if !exposition.contains("# TYPE") && !exposition.contains("seckill_") {
        return None;
    }
    Some((value("count").unwrap_or(0), value("sum").unwrap_or(0)))
}

/// Calls per command from `INFO commandstats` of a single Redis server.
async fn redis_calls(redis: &RedisClient) -> Option<BTreeMap<String, u64>> {
    if redis.is_cluster() {
        return None;
    }
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut redis.conn())
        .await
        .ok()?;
    Some(command_calls(&info))
}

/// `cmdstat_<name>:calls=<n>,...` lines, as name -> n.
fn command_calls(info: &str) -> BTreeMap<String, u64> {
    info.lines()
        .filter_map(|line| {
            let (name, stats) = line.trim().strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = stats.split(',').find_map(|kv| kv.strip_prefix("calls="))?;
            Some((name.to_lowercase(), calls.parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commandstats_lines_give_calls_per_command() {
        let info = "# Commandstats\r\ncmdstat_evalsha:calls=12,usec=340,usec_per_call=28.33,rejected_calls=0,failed_calls=0\r\n\
                    cmdstat_xack:calls=3,usec=9,usec_per_call=3.00,rejected_calls=0,failed_calls=0\r\n";
        let calls = command_calls(info);
        assert_eq!(calls.get("evalsha"), Some(&12));
        assert_eq!(calls.get("xack"), Some(&3));
        assert_eq!(calls.len(), 2);
    }

    #[test]
    fn the_batch_histogram_gives_count_and_sum() {
        let text = format!(
            "# TYPE {BATCH_SIZE} histogram\n{BATCH_SIZE}_bucket{{le=\"1\"}} 2\n{BATCH_SIZE}_sum 130\n{BATCH_SIZE}_count 7\n"
        );
        assert_eq!(batch_totals(&text), Some((7, 130)));
        assert_eq!(batch_totals("# TYPE seckill_requests_total counter\n"), Some((0, 0)));
        assert_eq!(batch_totals("not found"), None);
    }

    #[test]
    fn differences_drop_commands_that_did_not_run() {
        let before = Snapshot {
            batches: Some((10, 100)),
            redis_calls: Some([("evalsha".to_string(), 5), ("get".to_string(), 2)].into()),
        };
        let after = Snapshot {
            batches: Some((14, 190)),
            redis_calls: Some(
                [
                    ("evalsha".to_string(), 9),
                    ("get".to_string(), 2),
                    ("xack".to_string(), 1),
                ]
                .into(),
            ),
        };
        let d = between(&before, &after, 1, 2);
        assert_eq!((d.batches, d.batched_purchases), (Some(4), Some(90)));
        let calls = d.redis_calls.unwrap();
        assert_eq!(calls.get("evalsha"), Some(&4));
        assert_eq!(calls.get("xack"), Some(&1));
        assert!(!calls.contains_key("get"));
        let none = between(&Snapshot::default(), &after, 1, 2);
        assert_eq!((none.batches, none.redis_calls), (None, None));
    }
}
