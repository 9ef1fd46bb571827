//! What the Redis server must be set up to do for "never lose an order" to hold, and the
//! check that it is. An acknowledged order lives only in Redis until a consumer persists
//! it, so a Redis that forgets writes on a crash, evicts keys under memory pressure, or
//! (with `replicas`) has no replica to fail over to, breaks the promise silently.
//!
//! `hot`, `start` and `serve` call [`require`]; `seckill doctor` shows [`assess`]'s findings.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, RedisContext, Result};
use crate::redis_client::{RedisClient, RedisConn};

/// How acknowledged orders must survive a Redis failure (`redis.durability`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// Append-only file fsynced on every write: a crash loses nothing acknowledged.
    #[default]
    AofAlways,
    /// Append-only file fsynced once a second: a crash can lose the last second.
    AofEverysec,
    /// At least `redis.wait_replicas` connected replicas (each purchase batch waits for them).
    Replicas,
    /// No requirement: a Redis restart loses every unpersisted order. Demos and tests only.
    None,
}

impl Durability {
    /// The config spelling (`aof_always`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Durability::AofAlways => "aof_always",
            Durability::AofEverysec => "aof_everysec",
            Durability::Replicas => "replicas",
            Durability::None => "none",
        }
    }
}

impl fmt::Display for Durability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Durability {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "aof_always" => Ok(Durability::AofAlways),
            "aof_everysec" => Ok(Durability::AofEverysec),
            "replicas" => Ok(Durability::Replicas),
            "none" => Ok(Durability::None),
            other => Err(format!(
                "unknown durability {other:?}: one of aof_always, aof_everysec, replicas, none"
            )),
        }
    }
}

/// What the Redis server says about itself. `None`: the server would not tell (CONFIG
/// disabled or renamed, and INFO has no such field).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RedisSetup {
    /// `redis_version` from INFO.
    pub version: Option<String>,
    /// `appendonly` (from CONFIG GET, else INFO's `aof_enabled`).
    pub appendonly: Option<bool>,
    /// `appendfsync` (CONFIG GET only).
    pub appendfsync: Option<String>,
    /// `maxmemory-policy` (CONFIG GET, else INFO's `maxmemory_policy`).
    pub maxmemory_policy: Option<String>,
    /// `connected_slaves` from INFO replication.
    pub connected_replicas: u32,
    /// `role` from INFO replication (`master` or `slave`).
    pub role: Option<String>,
}

/// One way the server falls short of the policy: what, and the redis.conf line that fixes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Shortfall {
    /// The Redis setting concerned (`appendonly`, `maxmemory-policy`, ...).
    pub setting: &'static str,
    /// What is wrong, in words.
    pub problem: String,
    /// The redis.conf line (or action) that fixes it.
    pub remedy: String,
}

impl fmt::Display for Shortfall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (put `{}` in redis.conf)", self.problem, self.remedy)
    }
}

/// Compares what the server does with what `policy` (and `wait_replicas`) need. Empty: met.
pub fn assess(policy: Durability, wait_replicas: u32, setup: &RedisSetup) -> Vec<Shortfall> {
    let mut short = Vec::new();
    match setup.maxmemory_policy.as_deref() {
        Some("noeviction") => {}
        Some(other) => short.push(Shortfall {
            setting: "maxmemory-policy",
            problem: format!("maxmemory-policy is {other}: Redis may evict a stock key or an order stream"),
            remedy: "maxmemory-policy noeviction".into(),
        }),
        None => short.push(Shortfall {
            setting: "maxmemory-policy",
            problem: "Redis did not tell its maxmemory-policy (CONFIG GET and INFO memory)".into(),
            remedy: "maxmemory-policy noeviction".into(),
        }),
    }
    let wants_fsync = match policy {
        Durability::AofAlways => Some("always"),
        Durability::AofEverysec => Some("everysec"),
        Durability::Replicas | Durability::None => None,
    };
    if let Some(fsync) = wants_fsync {
        if setup.appendonly != Some(true) {
            short.push(Shortfall {
                setting: "appendonly",
                problem: format!(
                    "redis.durability is {policy} but appendonly is {}: a Redis restart loses every order not yet persisted",
                    flag(setup.appendonly)
                ),
                remedy: "appendonly yes".into(),
            });
        }
        let acceptable = match fsync {
            // `always` is stronger than `everysec`, so it satisfies both.
            "everysec" => matches!(setup.appendfsync.as_deref(), Some("everysec" | "always")),
            _ => setup.appendfsync.as_deref() == Some("always"),
        };
        if !acceptable {
            short.push(Shortfall {
                setting: "appendfsync",
                problem: format!(
                    "redis.durability is {policy} but appendfsync is {}",
                    setup
                        .appendfsync
                        .as_deref()
                        .unwrap_or("unknown (CONFIG GET is disabled)")
                ),
                remedy: format!("appendfsync {fsync}"),
            });
        }
    }
    if policy == Durability::Replicas || wait_replicas > 0 {
        let needed = wait_replicas.max(1);
        if setup.connected_replicas < needed {
            short.push(Shortfall {
                setting: "replicas",
                problem: format!(
                    "{} replica(s) connected, {needed} needed (redis.wait_replicas)",
                    setup.connected_replicas
                ),
                remedy: "replicaof <primary-host> <port>  (on each replica)".into(),
            });
        }
    }
    if setup.role.as_deref().is_some_and(|r| r != "master") {
        short.push(Shortfall {
            setting: "role",
            problem: format!(
                "this Redis is a {}, not the primary: writes would be refused",
                setup.role.as_deref().unwrap_or_default()
            ),
            remedy: "point redis.url at the primary (or at the sentinels)".into(),
        });
    }
    short
}

fn flag(value: Option<bool>) -> &'static str {
    match value {
        Some(true) => "yes",
        Some(false) => "no",
        None => "unknown",
    }
}

/// Reads every primary's persistence, eviction and replication settings (one server, or each
/// primary of a cluster: each holds the orders of its own slots), as (`host:port`, settings).
pub async fn inspect(redis: &RedisClient) -> Result<Vec<(String, RedisSetup)>> {
    let mut found = Vec::new();
    for node in redis.primaries().await? {
        found.push((node.addr, inspect_node(redis, node.conn).await?));
    }
    Ok(found)
}

/// One server's settings. CONFIG GET is preferred; where it is disabled (managed Redis often
/// renames it), INFO alone is used.
async fn inspect_node(redis: &RedisClient, mut conn: RedisConn) -> Result<RedisSetup> {
    let info: String = redis::cmd("INFO")
        .arg("server")
        .arg("persistence")
        .arg("memory")
        .arg("replication")
        .query_async(&mut conn)
        .await
        .at(redis)?;
    let field = |name: &str| info_field(&info, name);
    let mut setup = RedisSetup {
        version: field("redis_version"),
        appendonly: field("aof_enabled").map(|v| v == "1"),
        appendfsync: None,
        maxmemory_policy: field("maxmemory_policy"),
        connected_replicas: field("connected_slaves").and_then(|v| v.parse().ok()).unwrap_or(0),
        role: field("role"),
    };
    let config: redis::RedisResult<Vec<(String, String)>> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("appendonly")
        .arg("appendfsync")
        .arg("maxmemory-policy")
        .query_async(&mut conn)
        .await;
    match config {
        Ok(pairs) => {
            for (name, value) in pairs {
                match name.as_str() {
                    "appendonly" => setup.appendonly = Some(value == "yes"),
                    "appendfsync" => setup.appendfsync = Some(value),
                    "maxmemory-policy" => setup.maxmemory_policy = Some(value),
                    _ => {}
                }
            }
        }
        Err(e) => tracing::debug!(error = %e, "CONFIG GET refused; judging Redis by INFO alone"),
    }
    Ok(setup)
}

/// `name:value` from an INFO reply.
fn info_field(info: &str, name: &str) -> Option<String> {
    info.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key == name).then(|| value.trim().to_string())
    })
}

/// Refuses (with every shortfall named, and the redis.conf lines) unless the server meets
/// the client's durability policy. Even `none` requires `noeviction`: an evicted stock key
/// or stream loses orders whatever the persistence.
pub async fn require(redis: &RedisClient) -> Result<()> {
    let (policy, wait_replicas) = redis.durability();
    let nodes = inspect(redis).await?;
    let several = nodes.len() > 1;
    let mut lines = Vec::new();
    for (addr, setup) in &nodes {
        for s in assess(policy, wait_replicas, setup) {
            lines.push(match several {
                true => format!("  - {addr}: {s}"),
                false => format!("  - {s}"),
            });
        }
    }
    if lines.is_empty() {
        return Ok(());
    }
    Err(Error::refused(format!(
        "Redis at {} does not meet redis.durability: {policy}:\n{}\n\
         (set redis.durability: none only for demos and tests: a Redis restart then loses unpersisted orders)",
        redis.addr(),
        lines.join("\n")
    )))
}

/// [`require`] for `serve`, which also says out loud at start when nothing is required.
pub async fn require_for_serving(redis: &RedisClient) -> Result<()> {
    require(redis).await?;
    if redis.durability().0 == Durability::None {
        tracing::warn!(
            redis = redis.addr(),
            "redis.durability is none: a Redis crash or restart loses every order not yet persisted"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn safe() -> RedisSetup {
        RedisSetup {
            version: Some("7.0.15".into()),
            appendonly: Some(true),
            appendfsync: Some("always".into()),
            maxmemory_policy: Some("noeviction".into()),
            connected_replicas: 0,
            role: Some("master".into()),
        }
    }

    fn settings(short: &[Shortfall]) -> Vec<&str> {
        short.iter().map(|s| s.setting).collect()
    }

    #[test]
    fn aof_always_needs_appendonly_and_fsync_always() {
        assert!(assess(Durability::AofAlways, 0, &safe()).is_empty());
        let off = RedisSetup {
            appendonly: Some(false),
            appendfsync: Some("everysec".into()),
            ..safe()
        };
        let short = assess(Durability::AofAlways, 0, &off);
        assert_eq!(settings(&short), ["appendonly", "appendfsync"]);
        assert_eq!(short[0].remedy, "appendonly yes");
        assert_eq!(short[1].remedy, "appendfsync always");
    }

    #[test]
    fn everysec_is_met_by_always_but_not_by_no() {
        assert!(assess(Durability::AofEverysec, 0, &safe()).is_empty());
        let no = RedisSetup {
            appendfsync: Some("no".into()),
            ..safe()
        };
        assert_eq!(settings(&assess(Durability::AofEverysec, 0, &no)), ["appendfsync"]);
    }

    #[test]
    fn unknown_fsync_is_not_taken_for_granted() {
        let hidden = RedisSetup {
            appendfsync: None,
            ..safe()
        };
        let short = assess(Durability::AofAlways, 0, &hidden);
        assert_eq!(settings(&short), ["appendfsync"]);
        assert!(
            short[0].problem.contains("CONFIG GET is disabled"),
            "{}",
            short[0].problem
        );
    }

    #[test]
    fn eviction_is_refused_whatever_the_policy() {
        let lru = RedisSetup {
            maxmemory_policy: Some("allkeys-lru".into()),
            ..safe()
        };
        for policy in [Durability::AofAlways, Durability::Replicas, Durability::None] {
            let short = assess(policy, 0, &lru);
            assert!(settings(&short).contains(&"maxmemory-policy"), "{policy}: {short:?}");
        }
    }

    #[test]
    fn replicas_counted_against_wait_replicas() {
        let alone = RedisSetup {
            appendonly: Some(false),
            ..safe()
        };
        assert_eq!(settings(&assess(Durability::Replicas, 0, &alone)), ["replicas"]);
        assert_eq!(settings(&assess(Durability::Replicas, 2, &alone)), ["replicas"]);
        let two = RedisSetup {
            connected_replicas: 2,
            ..alone.clone()
        };
        assert!(assess(Durability::Replicas, 2, &two).is_empty());
        assert_eq!(settings(&assess(Durability::None, 1, &alone)), ["replicas"]);
        assert!(assess(Durability::None, 0, &alone).is_empty());
    }

    #[test]
    fn a_replica_is_not_a_primary() {
        let replica = RedisSetup {
            role: Some("slave".into()),
            ..safe()
        };
        assert_eq!(settings(&assess(Durability::AofAlways, 0, &replica)), ["role"]);
    }

    #[test]
    fn info_fields_are_found() {
        let info = "# Server\r\nredis_version:7.0.15\r\n# Persistence\r\naof_enabled:1\r\n";
        assert_eq!(info_field(info, "redis_version").as_deref(), Some("7.0.15"));
        assert_eq!(info_field(info, "aof_enabled").as_deref(), Some("1"));
        assert_eq!(info_field(info, "role"), None);
    }

    #[test]
    fn policies_parse_and_print_alike() {
        for p in [
            Durability::AofAlways,
            Durability::AofEverysec,
            Durability::Replicas,
            Durability::None,
        ] {
            assert_eq!(p.as_str().parse::<Durability>(), Ok(p));
        }
        assert!("always".parse::<Durability>().unwrap_err().contains("aof_always"));
    }
}
