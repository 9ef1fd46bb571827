//! `seckill doctor`: a preflight of everything a sale depends on, each check on its own so
//! one unreachable server does not hide what is wrong with the other.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::config::{AuthConfig, AuthMode, Config, TokenConfig};
use crate::db::{Db, MIGRATOR};
use crate::durability::{self, Durability};
use crate::redis_client::RedisClient;

/// Clocks further apart than this get a warning: the sale window is judged by Redis's
/// clock, order times by this host's and MySQL's.
pub const CLOCK_WARN: Duration = Duration::from_millis(500);

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// As it should be.
    Pass,
    /// Works, but worth a look; does not fail the doctor.
    Warn,
    /// Must be fixed before a sale.
    Fail,
}

/// One line of the preflight.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What was checked.
    pub name: &'static str,
    /// The outcome.
    pub verdict: Verdict,
    /// What was found, and what to do about it.
    pub detail: String,
}

/// The whole preflight.
#[derive(Debug, Clone, Serialize)]
pub struct Diagnosis {
    /// True when no check failed (warnings allowed).
    pub passed: bool,
    /// Every check, in a fixed order.
    pub checks: Vec<Check>,
}

fn check(name: &'static str, verdict: Verdict, detail: impl Into<String>) -> Check {
    Check {
        name,
        verdict,
        detail: detail.into(),
    }
}

/// Runs every check against the servers named in `config`.
pub async fn diagnose(config: &Config) -> Diagnosis {
    let mut checks = Vec::new();
    let redis = match RedisClient::connect(config).await {
        Ok(redis) => Some(redis),
        Err(e) => {
            checks.push(check("redis", Verdict::Fail, e.to_string()));
            None
        }
    };
    if let Some(redis) = &redis {
        redis_checks(config, redis, &mut checks).await;
    }
    let db = match Db::connect(config).await {
        Ok(db) => {
            checks.push(migrations_check(&db).await);
            Some(db)
        }
        Err(e) => {
            checks.push(check("mysql", Verdict::Fail, e.to_string()));
            None
        }
    };
    checks.push(secret_check(&config.token));
    checks.push(auth_check(&config.auth));
    checks.push(clock_check(redis.as_ref(), db.as_ref()).await);
    if let Some(db) = db {
        db.close().await;
    }
    Diagnosis {
        passed: checks.iter().all(|c| c.verdict != Verdict::Fail),
        checks,
    }
}

async fn redis_checks(config: &Config, redis: &RedisClient, checks: &mut Vec<Check>) {
    let nodes = match durability::inspect(redis).await {
        Ok(nodes) => nodes,
        Err(e) => {
            checks.push(check("redis", Verdict::Fail, e.to_string()));
            return;
        }
    };
    // A cluster's primaries each hold their own slots' orders, so each is judged (and named).
    let several = nodes.len() > 1;
    for (addr, setup) in &nodes {
        let first = checks.len();
        node_checks(config, addr, setup, checks);
        if several {
            for c in &mut checks[first..] {
                if !c.detail.starts_with(addr.as_str()) {
                    c.detail = format!("{addr}: {}", c.detail);
                }
            }
        }
    }
}

fn node_checks(config: &Config, addr: &str, setup: &durability::RedisSetup, checks: &mut Vec<Check>) {
    let version = setup.version.clone().unwrap_or_else(|| "unknown".into());
    let mut parts = version.split('.').map(|n| n.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    checks.push(if (major, minor) >= (6, 2) {
        check("redis", Verdict::Pass, format!("{} answers, version {version}", addr))
    } else {
        check(
            "redis",
            Verdict::Fail,
            format!(
                "{} runs Redis {version}; seckill needs 6.2 or later (streams, XAUTOCLAIM)",
                addr
            ),
        )
    });
    let (policy, wait_replicas) = (config.redis.durability, config.redis.wait_replicas);
    let short = durability::assess(policy, wait_replicas, setup);
    let about = |setting: &str| short.iter().find(|s| s.setting == setting);
    let persistence = about("appendonly").or(about("appendfsync"));
    checks.push(match (persistence, policy) {
        (Some(s), _) => check("persistence", Verdict::Fail, s.to_string()),
        (None, Durability::None) => check(
            "persistence",
            Verdict::Warn,
            format!(
                "redis.durability is none (appendonly {}, appendfsync {}): a Redis restart loses unpersisted orders",
                if setup.appendonly == Some(true) { "yes" } else { "no" },
                setup.appendfsync.as_deref().unwrap_or("unknown")
            ),
        ),
        (None, _) => check(
            "persistence",
            Verdict::Pass,
            format!(
                "redis.durability {policy}: appendonly {}, appendfsync {}",
                if setup.appendonly == Some(true) { "yes" } else { "no" },
                setup.appendfsync.as_deref().unwrap_or("unknown")
            ),
        ),
    });
    checks.push(match about("maxmemory-policy") {
        Some(s) => check("maxmemory-policy", Verdict::Fail, s.to_string()),
        None => check("maxmemory-policy", Verdict::Pass, "noeviction"),
    });
    let role = about("role").map(|s| s.to_string());
    checks.push(match (about("replicas"), role) {
        (Some(s), _) => check("replicas", Verdict::Fail, s.to_string()),
        (None, Some(role)) => check("replicas", Verdict::Fail, role),
        (None, None) => check(
            "replicas",
            Verdict::Pass,
            format!(
                "{} connected, redis.wait_replicas {wait_replicas}",
                setup.connected_replicas
            ),
        ),
    });
}

async fn migrations_check(db: &Db) -> Check {
    let applied: Result<Vec<i64>, sqlx::Error> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success = 1")
            .fetch_all(db.pool())
            .await;
    let applied = match applied {
        Ok(applied) => applied,
        Err(e) => {
            return check(
                "mysql",
                Verdict::Fail,
                format!("reachable, but no migration table ({e}); run `seckill migrate`"),
            )
        }
    };
    let pending: Vec<String> = MIGRATOR
        .iter()
        .filter(|m| !applied.contains(&m.version))
        .map(|m| m.version.to_string())
        .collect();
    if pending.is_empty() {
        check(
            "mysql",
            Verdict::Pass,
            format!("reachable, {} migrations applied", applied.len()),
        )
    } else {
        check(
            "mysql",
            Verdict::Fail,
            format!(
                "{} migration(s) pending ({}); run `seckill migrate`",
                pending.len(),
                pending.join(", ")
            ),
        )
    }
}

fn secret_check(token: &TokenConfig) -> Check {
    // The same rule `serve` refuses to start under.
    match token.weak_secret() {
        Some(why) => check(
            "token secret",
            Verdict::Fail,
            format!("{why}: anyone who guesses it can forge purchase tokens; set SECKILL_TOKEN_SECRET"),
        ),
        None => check("token secret", Verdict::Pass, "set"),
    }
}

fn auth_check(auth: &AuthConfig) -> Check {
    // The same setup `serve` starts with, so a key it cannot read fails here too.
    if let Err(why) = crate::server::identity::Identity::new(auth) {
        return check("buyer identity", Verdict::Fail, why);
    }
    match auth.mode {
        AuthMode::None => check(
            "buyer identity",
            Verdict::Warn,
            "auth.mode is none: anyone can fetch tokens and buy as any user_id; set jwt or gateway for a real sale",
        ),
        AuthMode::Jwt => check("buyer identity", Verdict::Pass, "jwt (the buyer is the token's sub)"),
        AuthMode::Gateway => check(
            "buyer identity",
            Verdict::Pass,
            format!(
                "gateway ({} from {} trusted network(s))",
                auth.user_header,
                auth.trusted_proxies.len()
            ),
        ),
    }
}

/// This host's clock against Redis `TIME` and MySQL `NOW(3)`, each read halfway through
/// its round trip.
async fn clock_check(redis: Option<&RedisClient>, db: Option<&Db>) -> Check {
    let mut offsets = Vec::new();
    if let Some(redis) = redis {
        let mut conn = redis.conn();
        let before = now_ms();
        let time: redis::RedisResult<(i64, i64)> = redis::cmd("TIME").query_async(&mut conn).await;
        let after = now_ms();
        if let Ok((secs, micros)) = time {
            offsets.push(("Redis", secs * 1000 + micros / 1000 - (before + after) / 2));
        }
    }
    if let Some(db) = db {
        let before = now_ms();
        let time: Result<i64, sqlx::Error> = sqlx::query_scalar("SELECT CAST(UNIX_TIMESTAMP(NOW(3)) * 1000 AS SIGNED)")
            .fetch_one(db.pool())
            .await;
        let after = now_ms();
        if let Ok(ms) = time {
            offsets.push(("MySQL", ms - (before + after) / 2));
        }
    }
    if offsets.is_empty() {
        return check("clocks", Verdict::Warn, "no server answered; offsets unknown");
    }
    let worst = offsets.iter().map(|(_, o)| o.abs()).max().unwrap_or(0);
    let detail = offsets
        .iter()
        .map(|(who, o)| format!("{who} {o:+} ms"))
        .collect::<Vec<_>>()
        .join(", ");
    if worst as u128 > CLOCK_WARN.as_millis() {
        check(
            "clocks",
            Verdict::Warn,
            format!(
                "{detail} from this host (over {} ms): check NTP",
                CLOCK_WARN.as_millis()
            ),
        )
    } else {
        check("clocks", Verdict::Pass, format!("{detail} from this host"))
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
