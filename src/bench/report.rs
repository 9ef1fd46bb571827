//! What `seckill bench` reports (the `--json` shape).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use super::during::DuringLoad;
use super::load::LoadResult;
use super::setup::Sale;
use super::verify::{Evidence, Invariants};
use super::{BenchOptions, Server};
use crate::ops::reconcile::ReconcileReport;

/// Latency quantiles in milliseconds.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Slowest answer.
    pub max: f64,
}

impl Latency {
    /// The quantiles of a load's answers.
    pub fn of(load: &LoadResult) -> Latency {
        Latency {
            p50: load.latency_ms(0.5),
            p90: load.latency_ms(0.9),
            p99: load.latency_ms(0.99),
            max: load.latency_ms(1.0),
        }
    }
}

/// One bench run.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BenchReport {
    /// The throwaway activity (removed afterwards unless `--keep`).
    pub activity_id: u64,
    /// Its name, `bench <timestamp>`.
    pub activity_name: String,
    /// Its product.
    pub product_id: u64,
    /// `http://host:port` the requests went to.
    pub url: String,
    /// Whether that server was started in-process (rate limits relaxed).
    pub spawned: bool,
    /// Consumers started in-process (0: daemons).
    pub consumers: usize,
    /// Units on sale (MySQL).
    pub stock: u64,
    /// Per-user limit.
    pub limit_per_user: u64,
    /// Distinct buyers.
    pub users: u64,
    /// Connections.
    pub concurrency: usize,
    /// Requests answered (or failed in transport).
    pub requests: u64,
    /// Wall time of the load, in seconds.
    pub duration_s: f64,
    /// Requests per second.
    pub rps: f64,
    /// Latency of the answers.
    pub latency_ms: Latency,
    /// Answers by code (`queued`, `sold_out`, `limit_exceeded`, ...).
    pub outcomes: BTreeMap<String, u64>,
    /// Units reserved, from the Redis stream.
    pub sold: u64,
    /// Seconds from the first request until an answer said nothing was left (`null`: never).
    pub sellout_s: Option<f64>,
    /// Orders in MySQL after the drain.
    pub orders_persisted: u64,
    /// Seconds from the end of the load until every reservation was persisted (or the timeout).
    pub drain_s: f64,
    /// The promises.
    pub invariants: Invariants,
    /// The counts the invariants were judged from.
    pub evidence: Evidence,
    /// Differences reconcile found, by class.
    pub reconcile_findings: BTreeMap<String, u64>,
    /// Units added behind MySQL's back (fault injection; 0 normally).
    pub chaos_extra_stock: u32,
    /// What the server and Redis did during the load (batches, Redis commands, its window).
    pub during_load: DuringLoad,
    /// What went wrong besides the invariants (e.g. reservations left unpersisted).
    pub error: Option<String>,
    /// Every invariant held and nothing went wrong.
    pub passed: bool,
}

impl BenchReport {
    /// Names of the failed invariants.
    pub fn failures(&self) -> Vec<&'static str> {
        self.invariants.failed()
    }
}

/// `seckill bench --probe`: the load generator alone.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ProbeReport {
    /// What was requested.
    pub url: String,
    /// Requests answered.
    pub requests: u64,
    /// Connections.
    pub concurrency: usize,
    /// Wall time, in seconds.
    pub duration_s: f64,
    /// Requests per second.
    pub rps: f64,
    /// Latency of the answers.
    pub latency_ms: Latency,
    /// Answers by HTTP status (`transport_error` for failures).
    pub outcomes: BTreeMap<String, u64>,
}

/// `n` per second over `d`.
pub fn rate(n: u64, d: Duration) -> f64 {
    let secs = d.as_secs_f64();
    if secs > 0.0 {
        n as f64 / secs
    } else {
        0.0
    }
}

#[allow(clippy::too_many_arguments)] // One call site; the parts come from different phases.
pub(super) fn build(
    opts: &BenchOptions,
    sale: &Sale,
    authority: &str,
    load: &LoadResult,
    evidence: &Evidence,
    invariants: Invariants,
    reconciled: &ReconcileReport,
    drain: Duration,
    during_load: DuringLoad,
    error: Option<String>,
) -> BenchReport {
    let mut findings = BTreeMap::new();
    for f in &reconciled.findings {
        *findings.entry(f.class.as_str().to_string()).or_default() += 1;
    }
    BenchReport {
        activity_id: sale.activity,
        activity_name: sale.name.clone(),
        product_id: sale.product,
        url: format!("http://{authority}"),
        spawned: opts.server == Server::Spawn,
        consumers: opts.consumers,
        stock: evidence.stock,
        limit_per_user: evidence.limit,
        users: opts.users,
        concurrency: opts.concurrency,
        requests: load.requests,
        duration_s: load.duration.as_secs_f64(),
        rps: rate(load.requests, load.duration),
        latency_ms: Latency::of(load),
        outcomes: load.outcomes.clone(),
        sold: evidence.stream_units,
        sellout_s: load.sellout.map(|d| d.as_secs_f64()),
        orders_persisted: evidence.mysql_orders,
        drain_s: drain.as_secs_f64(),
        invariants,
        evidence: evidence.clone(),
        reconcile_findings: findings,
        chaos_extra_stock: opts.chaos_extra_stock,
        during_load,
        passed: invariants.failed().is_empty() && error.is_none(),
        error,
    }
}
