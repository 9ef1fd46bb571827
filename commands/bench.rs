//! `seckill bench`.

use std::time::Duration;

use clap::builder::RangedU64ValueParser;
use clap::Args;
use seckill::bench::{self, BenchOptions, BenchReport, ProbeReport, Server};

use crate::context::Context;
use crate::exit::{CliError, CliResult};
use crate::output::{self, opt, OutputArgs};
use crate::parse;

/// Arguments of `seckill bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Units on sale (1 to 4294967295).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=u32::MAX as i64))]
    stock: u32,
    /// Distinct buyers, each with a pre-issued token (1 to 10000000).
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    users: u64,
    /// Buy requests in all, buyers taking turns (1 to 1000000000).
    #[arg(long, default_value_t = 200_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000_000))]
    requests: u64,
    /// Keep-alive HTTP/1.1 connections (1 to 10000).
    #[arg(long, default_value_t = 256, value_parser = RangedU64ValueParser::<usize>::new().range(1..=10_000))]
    concurrency: usize,
    /// Units one user may hold (1 to 4294967295).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=u32::MAX as i64))]
    limit_per_user: u32,
    /// Stock buckets of the product, 1 to 1024 (see `product add --shards`).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1024))]
    shards: u16,
    /// A running `seckill serve` (same Redis, key prefix and token secret; its own rate limits apply).
    #[arg(long, default_value = "http://127.0.0.1:8080", conflicts_with = "spawn", value_parser = parse::http_url)]
    url: String,
    /// Start a server in-process on 127.0.0.1:0 instead, with the rate limits off
    /// (global and per-user) so the herd measures the buy path rather than 429s.
    #[arg(long)]
    spawn: bool,
    /// Consumers to run in-process (0 to 64); 0 relies on running `seckill consumer` daemons.
    #[arg(long, default_value_t = 0, value_parser = RangedU64ValueParser::<usize>::new().range(0..=64))]
    consumers: usize,
    /// How long to wait for every reservation to be persisted, e.g. 60s (1s to 1d).
    #[arg(long, default_value = "60s", value_parser = parse::drain_timeout)]
    drain_timeout: Duration,
    /// Keep the bench activity, its orders and Redis keys afterwards.
    #[arg(long)]
    keep: bool,
    /// Only measure the load generator: GET this path (e.g. /health) `--requests` times
    /// over `--concurrency` connections at --url, no sale.
    #[arg(long, value_name = "PATH", conflicts_with_all = ["spawn", "keep"])]
    probe: Option<String>,
    #[command(flatten)]
    output: OutputArgs,
}

/// Exit 1, after the report, when an invariant failed or the rehearsal could not finish.
pub async fn run(ctx: &Context, args: BenchArgs) -> CliResult {
    if let Some(path) = &args.probe {
        let report = bench::probe(&args.url, path, args.requests, args.concurrency).await?;
        if args.output.json {
            output::json(&report)?;
        } else {
            print_probe(&report);
        }
        return Ok(());
    }
    let opts = BenchOptions {
        stock: args.stock,
        users: args.users,
        requests: args.requests,
        concurrency: args.concurrency,
        limit_per_user: args.limit_per_user,
        shards: args.shards,
        server: if args.spawn {
            Server::Spawn
        } else {
            Server::Url(args.url.clone())
        },
        consumers: args.consumers,
        drain_timeout: args.drain_timeout,
        keep: args.keep,
        chaos_extra_stock: 0,
    };
    let report = bench::run(&ctx.config, opts).await?;
    if args.output.json {
        output::json(&report)?;
    } else {
        print_report(&report);
    }
    if report.passed {
        return Ok(());
    }
    let mut why = Vec::new();
    let failed = report.failures();
    if !failed.is_empty() {
        why.push(format!("invariants failed: {}", failed.join(", ")));
    }
    why.extend(report.error.clone());
    Err(CliError::failed(format!("bench failed: {}", why.join("; "))))
}

fn print_probe(r: &ProbeReport) {
    output::table(
        &[
            "url",
            "requests",
            "connections",
            "seconds",
            "req/s",
            "p50 ms",
            "p99 ms",
            "outcomes",
        ],
        [vec![
            r.url.clone(),
            r.requests.to_string(),
            r.concurrency.to_string(),
            format!("{:.2}", r.duration_s),
            format!("{:.0}", r.rps),
            format!("{:.2}", r.latency_ms.p50),
            format!("{:.2}", r.latency_ms.p99),
            outcomes(&r.outcomes),
        ]],
    );
}

fn outcomes(o: &std::collections::BTreeMap<String, u64>) -> String {
    o.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ")
}

/// Script calls and purchases per call, from the server's metrics.
fn batches(r: &BenchReport) -> String {
    let d = &r.during_load;
    match (d.batches, d.batched_purchases) {
        (Some(calls), Some(purchases)) if calls > 0 => format!(
            "{calls} script calls, {:.1} purchases each",
            purchases as f64 / calls as f64
        ),
        (Some(_), Some(_)) => "no script call".into(),
        _ => "-".into(),
    }
}

fn print_report(r: &BenchReport) {
    let l = &r.latency_ms;
    println!(
        "bench activity {} ({}), product {}: {} units, {} per user, {} users; {} ({}), {} in-process consumers",
        r.activity_id,
        r.activity_name,
        r.product_id,
        r.stock,
        r.limit_per_user,
        r.users,
        r.url,
        if r.spawned {
            "spawned, rate limits off"
        } else {
            "running server"
        },
        r.consumers
    );
    output::table(
        &["figure", "value"],
        [
            ("requests", r.requests.to_string()),
            ("connections", r.concurrency.to_string()),
            ("duration", format!("{:.2} s", r.duration_s)),
            ("throughput", format!("{:.0} req/s", r.rps)),
            (
                "latency p50 / p90 / p99 / max",
                format!("{:.2} / {:.2} / {:.2} / {:.2} ms", l.p50, l.p90, l.p99, l.max),
            ),
            ("outcomes", outcomes(&r.outcomes)),
            ("sold", format!("{} of {}", r.sold, r.stock)),
            ("sold out after", opt(r.sellout_s.map(|s| format!("{s:.3} s")))),
            ("orders persisted", r.orders_persisted.to_string()),
            ("drain after the load", format!("{:.2} s", r.drain_s)),
            ("group commit during the load", batches(r)),
        ]
        .into_iter()
        .map(|(k, v)| vec![k.to_string(), v]),
    );
    let i = &r.invariants;
    let e = &r.evidence;
    let mark = |ok: bool| if ok { "yes".to_string() } else { "NO".to_string() };
    output::table(
        &["invariant", "held", "evidence"],
        [
            (
                "no_oversell",
                i.no_oversell,
                format!(
                    "MySQL {} units, stream {} units, stock {}",
                    e.mysql_units, e.stream_units, e.stock
                ),
            ),
            (
                "per_user_limit_held",
                i.per_user_limit_held,
                format!(
                    "most per user: MySQL {}, stream {}, limit {}",
                    e.mysql_max_per_user, e.stream_max_per_user, e.limit
                ),
            ),
            (
                "orders_equal_reservations",
                i.orders_equal_reservations,
                format!(
                    "MySQL {} orders, {} queued answers, {} stream entries",
                    e.mysql_orders,
                    r.outcomes.get("queued").copied().unwrap_or(0),
                    e.stream_entries
                ),
            ),
            ("reconcile_clean", i.reconcile_clean, outcomes(&r.reconcile_findings)),
        ]
        .into_iter()
        .map(|(k, ok, ev)| vec![k.to_string(), mark(ok), ev]),
    );
}
