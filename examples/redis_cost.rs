//! Redis CPU per purchase, from Redis's side only (no HTTP): a reserve script in batches of
//! `BATCH` purchases, one call at a time as the batcher makes them, against the naive deduct
//! script (`scripts/bench/naive_deduct.lua`), one EVALSHA per purchase with 50 in flight on one
//! multiplexed connection, as `examples/naive_server.rs`'s requests reach Redis. Each round
//! also drains what the reserve script queued the way a consumer does (XREADGROUP COUNT 1000,
//! XACK of the ids read), since that too runs on the Redis core that decides purchases.
//!
//! Every script is called with the arguments the library passes today (`buy::invocation`):
//! to compare with a version of another layout, run that version's own `redis_cost`. A script
//! named `FILE:plain` is called with numbered buyers passed as they are, not as the totals
//! array's offsets (`#<id>`), so one run compares the two forms.
//!
//! Measured three ways over each run: `INFO cpu` (used_cpu_user + used_cpu_sys),
//! `/proc/<redis pid>/stat` utime + stime (same machine only) and `INFO commandstats` (usec
//! of every command, which leaves out reading requests and writing replies). Rounds alternate
//! the scripts; each figure is the median of its rounds. Use a Redis of your own (the
//! counters are server-wide): `scripts/bench/redis_cost.sh` starts one.
//!
//! REDIS_URL=redis://127.0.0.1:6390 SCRIPTS=lua/reserve.lua[,other.lua] \
//!   cargo run --release --example redis_cost
//! Optional: BATCH (30), PURCHASES per run (60000), ROUNDS (5); NUMERIC_USERS=1 names the
//! buyers 1 to PURCHASES, as `seckill token --range` does (every run starts on an empty
//! database, so they are fresh in each), instead of `u<round>-<i>`, and stamps the product with
//! the largest `redis.numeric_user_ids_below`, so their totals live in its array.

use std::collections::HashMap;
use std::time::Instant;

use redis::aio::MultiplexedConnection;
use redis::AsyncCommands;
use seckill::buy::Purchase;
use seckill::keys::Keys;

const ACTIVITY: u64 = 1;
const PRODUCT: u64 = 1;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Redis's CPU counters: INFO cpu seconds, /proc stat ticks (None when unreadable), and
/// commandstats (command -> (calls, usec)).
struct Counters {
    info_us: f64,
    proc_us: Option<f64>,
    stats: HashMap<String, (u64, u64)>,
}

async fn counters(conn: &mut MultiplexedConnection, pid: u32) -> Counters {
    let info: String = redis::cmd("INFO").arg("cpu").query_async(conn).await.unwrap();
    let info_us: f64 = info
        .lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(k, _)| *k == "used_cpu_user" || *k == "used_cpu_sys")
        .map(|(_, v)| v.trim().parse::<f64>().unwrap_or(0.0))
        .sum::<f64>()
        * 1e6;
    let proc_us = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok().and_then(|s| {
        // Fields after the command name (which may hold spaces): utime is the 14th field.
        let rest = &s[s.rfind(')')? + 2..];
        let f: Vec<&str> = rest.split(' ').collect();
        let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
        Some(ticks * 1e6 / 100.0)
    });
    let text: String = redis::cmd("INFO").arg("commandstats").query_async(conn).await.unwrap();
    let stats = text
        .lines()
        .filter_map(|l| l.strip_prefix("cmdstat_"))
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            let field = |k: &str| -> Option<u64> {
                rest.split(',')
                    .find_map(|kv| kv.strip_prefix(k)?.strip_prefix('=')?.parse().ok())
            };
            Some((name.to_string(), (field("calls")?, field("usec")?)))
        })
        .collect();
    Counters {
        info_us,
        proc_us,
        stats,
    }
}

/// What one run cost Redis, per purchase.
struct Cost {
    info_us: f64,
    proc_us: Option<f64>,
    /// Commandstats usec of the calls the clients made (EVALSHA, XREADGROUP, XACK), per
    /// purchase; a script's usec already holds the commands it ran.
    cmd_us: f64,
    /// Commandstats per purchase by command: (calls, usec).
    by_cmd: Vec<(String, f64, f64)>,
    rate: f64,
}

fn cost(before: &Counters, after: &Counters, purchases: usize, secs: f64) -> Cost {
    let n = purchases as f64;
    let mut by_cmd: Vec<(String, f64, f64)> = after
        .stats
        .iter()
        .filter(|(name, _)| !["info", "config|get", "ping"].contains(&name.as_str()))
        .filter_map(|(name, (calls, usec))| {
            let (c0, u0) = before.stats.get(name).copied().unwrap_or((0, 0));
            (calls > &c0).then(|| (name.clone(), (calls - c0) as f64 / n, (usec - u0) as f64 / n))
        })
        .collect();
    by_cmd.sort_by(|a, b| b.2.total_cmp(&a.2));
    Cost {
        info_us: (after.info_us - before.info_us) / n,
        proc_us: after.proc_us.zip(before.proc_us).map(|(a, b)| (a - b) / n),
        cmd_us: by_cmd
            .iter()
            .filter(|c| ["evalsha", "xreadgroup", "xack"].contains(&c.0.as_str()))
            .map(|c| c.2)
            .sum(),
        by_cmd,
        rate: n / secs,
    }
}

/// Sets up the activity and product as `seckill hot` and `start` leave them (not measured).
async fn setup(conn: &mut MultiplexedConnection, keys: &Keys, ids_below: u64) {
    let _: () = redis::cmd("FLUSHDB").query_async(conn).await.unwrap();
    let _: () = conn
        .hset_multiple(
            keys.activity(ACTIVITY),
            &[
                ("id", "1"),
                ("status", "online"),
                ("start_ms", "0"),
                ("end_ms", "99999999999999"),
                ("persist_seq", "0"),
            ],
        )
        .await
        .unwrap();
    let _: () = conn
        .hset_multiple(
            keys.product(ACTIVITY, PRODUCT),
            &[
                ("id", "1"),
                ("stock", "100000000"),
                ("sold", "0"),
                ("total", "100000000"),
                ("limit", "1"),
                ("max_per_order", "1"),
                ("price", "9.99"),
                (seckill::totals::IDS_BELOW_FIELD, ids_below.to_string().as_str()),
            ],
        )
        .await
        .unwrap();
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(keys.orders_stream(ACTIVITY))
        .arg("persist")
        .arg("0")
        .arg("MKSTREAM")
        .query_async(conn)
        .await
        .unwrap();
}

/// One run of a reserve script over `users`, in batches, then a consumer's drain.
async fn run_reserve(
    conn: &mut MultiplexedConnection,
    keys: &Keys,
    ids_below: u64,
    script: &redis::Script,
    users: &[String],
) {
    let purchases: Vec<Purchase> = users
        .iter()
        .map(|u| Purchase {
            product_id: PRODUCT,
            user_id: u.clone(),
            quantity: 1,
            token: String::new(),
        })
        .collect();
    for batch in purchases.chunks(env_or("BATCH", 30)) {
        // The arguments the library passes (see the header of lua/reserve.lua).
        let (inv, _) = seckill::buy::invocation(script, keys, ids_below, ACTIVITY, 0, batch);
        let _: redis::Value = inv.invoke_async(conn).await.unwrap();
    }
    let stream = keys.orders_stream(ACTIVITY);
    loop {
        let reply: redis::streams::StreamReadReply = conn
            .xread_options(
                &[&stream],
                &[">"],
                &redis::streams::StreamReadOptions::default()
                    .group("persist", "c")
                    .count(1000),
            )
            .await
            .unwrap();
        let ids: Vec<String> = reply.keys.into_iter().flat_map(|k| k.ids).map(|e| e.id).collect();
        if ids.is_empty() {
            break;
        }
        let _: u64 = conn.xack(&stream, "persist", &ids).await.unwrap();
    }
}

/// One run of the naive deduct script: one EVALSHA per purchase, 50 in flight.
async fn run_naive(conn: &MultiplexedConnection, script: &redis::Script, n: usize, round: usize) {
    let _: () = conn.clone().set("naive:stock", 100_000_000).await.unwrap();
    let mut tasks = Vec::new();
    for t in 0..50 {
        let (mut conn, script) = (conn.clone(), script.clone());
        tasks.push(tokio::spawn(async move {
            for i in (t..n).step_by(50) {
                let _: i64 = script
                    .key(format!("naive:bought:{round}:{i}"))
                    .key("naive:stock")
                    .arg(1)
                    .invoke_async(&mut conn)
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6390".into());
    let scripts: Vec<String> = std::env::var("SCRIPTS")
        .unwrap_or_else(|_| "lua/reserve.lua".into())
        .split(',')
        .map(String::from)
        .collect();
    let (n, rounds) = (env_or("PURCHASES", 60_000), env_or("ROUNDS", 5));
    let numeric_users = env_or("NUMERIC_USERS", 0) == 1;
    // Numbered buyers keep their totals in the product's array, as `hot` stamps it with the
    // largest `redis.numeric_user_ids_below` (bench.sh's setting).
    let ids_below = if numeric_users {
        seckill::totals::MAX_IDS_BELOW
    } else {
        0
    };
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let info: String = redis::cmd("INFO").arg("server").query_async(&mut conn).await.unwrap();
    let pid: u32 = info
        .lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let keys = Keys::new("cost");
    let naive = redis::Script::new(&std::fs::read_to_string("scripts/bench/naive_deduct.lua").unwrap());
    let plain: Vec<bool> = scripts.iter().map(|s| s.ends_with(":plain")).collect();
    let reserve: Vec<redis::Script> = scripts
        .iter()
        .map(|s| s.trim_end_matches(":plain"))
        // Behind what src/scripts.rs puts in front of reserve.lua (a version with its own
        // probe_sets or array_offset shadows them).
        .map(|p| {
            redis::Script::new(&(seckill::scripts::RESERVE_PRELUDE.to_owned() + &std::fs::read_to_string(p).unwrap()))
        })
        .collect();
    let mut names = vec!["naive".to_string()];
    names.extend(scripts.iter().cloned());
    let mut results: Vec<Vec<Cost>> = (0..names.len()).map(|_| Vec::new()).collect();
    for round in 0..rounds {
        for (k, name) in names.iter().enumerate() {
            // Every run starts on an empty database (`setup`), so 1..=n are fresh buyers in each.
            let users: Vec<String> = if numeric_users {
                (1..=n).map(|i| i.to_string()).collect()
            } else {
                (0..n).map(|i| format!("u{round}-{i}")).collect()
            };
            setup(&mut conn, &keys, ids_below).await;
            let before = counters(&mut conn, pid).await;
            let started = Instant::now();
            if k == 0 {
                run_naive(&conn, &naive, n, round).await;
            } else {
                let numbered_below = if plain[k - 1] { 0 } else { ids_below };
                run_reserve(&mut conn, &keys, numbered_below, &reserve[k - 1], &users).await;
            }
            let secs = started.elapsed().as_secs_f64();
            let after = counters(&mut conn, pid).await;
            let c = cost(&before, &after, n, secs);
            println!(
                "round {round} {name}: INFO cpu {:.2} µs, /proc {} µs, commandstats {:.2} µs per purchase; {:.0} purchases/s",
                c.info_us,
                c.proc_us.map_or("-".into(), |p| format!("{p:.2}")),
                c.cmd_us,
                c.rate
            );
            results[k].push(c);
        }
    }
    println!(
        "\nmedians of {rounds} rounds, {n} purchases per run, batch {}:",
        env_or("BATCH", 30)
    );
    let naive_info = median(results[0].iter().map(|c| c.info_us).collect());
    let naive_cmd = median(results[0].iter().map(|c| c.cmd_us).collect());
    for (name, runs) in names.iter().zip(&results) {
        let info = median(runs.iter().map(|c| c.info_us).collect());
        let procs: Vec<f64> = runs.iter().filter_map(|c| c.proc_us).collect();
        let cmd = median(runs.iter().map(|c| c.cmd_us).collect());
        let spread = |f: &dyn Fn(&Cost) -> f64| {
            let v: Vec<f64> = runs.iter().map(f).collect();
            format!(
                "{:.2}-{:.2}",
                v.iter().copied().fold(f64::MAX, f64::min),
                v.iter().copied().fold(0.0, f64::max)
            )
        };
        println!(
            "{name}: INFO cpu {info:.2} µs ({}), /proc {} µs, commandstats {cmd:.2} µs ({}) per purchase; naive/this: {:.2} (cpu), {:.2} (commandstats)",
            spread(&|c| c.info_us),
            if procs.is_empty() { "-".into() } else { format!("{:.2}", median(procs)) },
            spread(&|c| c.cmd_us),
            naive_info / info,
            naive_cmd / cmd
        );
        let last = runs.last().unwrap();
        let parts: Vec<String> = last
            .by_cmd
            .iter()
            .map(|(c, calls, us)| format!("{c} {calls:.3} calls {us:.2} µs"))
            .collect();
        println!("    per purchase, last round: {}", parts.join("; "));
    }
}
