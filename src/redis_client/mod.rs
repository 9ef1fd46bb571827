//! The Redis side: one multiplexed, auto-reconnecting connection shared by all tasks.
//!
//! With a Sentinel URL ([`target`]) the connection goes to the primary the sentinels name,
//! and a watcher asks them again every [`SENTINEL_POLL`]: after a failover the shared
//! connection is swapped for one to the new primary, so `serve` and the consumers follow
//! without a restart.

pub mod target;

use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::sentinel::{Sentinel, SentinelNodeConnectionInfo};
use redis::RedisConnectionInfo;

use crate::config::Config;
use crate::durability::Durability;
use crate::error::{Error, Result};
use crate::keys::Keys;
pub use target::RedisTarget;

/// How often the sentinels are asked which server is the primary.
pub const SENTINEL_POLL: Duration = Duration::from_millis(500);

/// A Redis connection plus the key map of this deployment.
#[derive(Clone)]
pub struct RedisClient {
    conn: Arc<ArcSwap<ConnectionManager>>,
    keys: Keys,
    addr: String,
    durability: (Durability, u32),
}

impl RedisClient {
    /// Connects to `redis.url` (through the sentinels for a `redis+sentinel://` URL); fails
    /// within a few `redis.connect_timeout_ms` when Redis is unreachable.
    pub async fn connect(config: &Config) -> Result<RedisClient> {
        let target = RedisTarget::parse(&config.redis.url).map_err(|e| Error::Config(format!("redis.url: {e}")))?;
        let addr = target.describe();
        let fail = |source: redis::RedisError| Error::Redis {
            addr: addr.clone(),
            source,
        };
        let deadline = config.redis_connect_timeout() * 3;
        let timed_out = || redis::RedisError::from((redis::ErrorKind::Io, "connect timed out"));
        let conn = match &target {
            RedisTarget::Direct(url) => {
                let client = redis::Client::open(url.as_str()).map_err(|e| Error::Config(format!("redis.url: {e}")))?;
                let manager = tokio::time::timeout(deadline, manager(config, client))
                    .await
                    .map_err(|_| fail(timed_out()))?
                    .map_err(fail)?;
                Arc::new(ArcSwap::from_pointee(manager))
            }
            RedisTarget::Sentinel { .. } => {
                let mut primary = Primary::new(&target).map_err(fail)?;
                let (client, at) = tokio::time::timeout(deadline, primary.find())
                    .await
                    .map_err(|_| fail(timed_out()))?
                    .map_err(fail)?;
                let manager = tokio::time::timeout(deadline, manager(config, client))
                    .await
                    .map_err(|_| fail(timed_out()))?
                    .map_err(fail)?;
                let conn = Arc::new(ArcSwap::from_pointee(manager));
                tokio::spawn(follow_failovers(
                    Arc::downgrade(&conn),
                    primary,
                    at,
                    config.clone(),
                    addr.clone(),
                ));
                conn
            }
        };
        Ok(RedisClient {
            conn,
            keys: Keys::new(config.redis.key_prefix.clone()),
            addr,
            durability: (config.redis.durability, config.redis.wait_replicas),
        })
    }

    /// A handle on the shared connection (cheap to clone; commands are pipelined). Take a
    /// fresh one per operation: after a Sentinel failover the next one goes to the new primary.
    pub fn conn(&self) -> ConnectionManager {
        self.conn.load().as_ref().clone()
    }

    /// The key map.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// Wraps a driver error with the server address (a `Result` does it with
    /// [`RedisContext::at`](crate::error::RedisContext::at)).
    pub fn err(&self, source: redis::RedisError) -> Error {
        Error::Redis {
            addr: self.addr.clone(),
            source,
        }
    }

    /// `redis.durability` and `redis.wait_replicas`: what this deployment requires of the server.
    pub fn durability(&self) -> (Durability, u32) {
        self.durability
    }

    /// The server address (no password), for messages.
    pub fn addr(&self) -> &str {
        &self.addr
    }
}

async fn manager(config: &Config, client: redis::Client) -> redis::RedisResult<ConnectionManager> {
    let manager_config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(config.redis_connect_timeout()))
        .set_response_timeout(Some(config.redis_response_timeout()))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_millis(500));
    ConnectionManager::new_with_config(client, manager_config).await
}

/// Finds the primary through the sentinels (the redis crate checks that the server it
/// names really has the master role).
struct Primary {
    sentinel: Sentinel,
    master: String,
    node: SentinelNodeConnectionInfo,
}

impl Primary {
    fn new(target: &RedisTarget) -> redis::RedisResult<Primary> {
        let RedisTarget::Sentinel {
            sentinels,
            master,
            db,
            username,
            password,
        } = target
        else {
            unreachable!("Primary is only built for Sentinel targets");
        };
        let urls: Vec<String> = sentinels
            .iter()
            .map(|(host, port)| match host.contains(':') {
                true => format!("redis://[{host}]:{port}"),
                false => format!("redis://{host}:{port}"),
            })
            .collect();
        let mut info = RedisConnectionInfo::default().set_db(*db);
        if let Some(user) = username {
            info = info.set_username(user);
        }
        if let Some(password) = password {
            info = info.set_password(password);
        }
        Ok(Primary {
            sentinel: Sentinel::build(urls)?,
            master: master.clone(),
            node: SentinelNodeConnectionInfo::default().set_redis_connection_info(info),
        })
    }

    /// A client for the current primary and its `host:port`.
    async fn find(&mut self) -> redis::RedisResult<(redis::Client, String)> {
        let client = self.sentinel.async_master_for(&self.master, Some(&self.node)).await?;
        let at = client.get_connection_info().addr().to_string();
        Ok((client, at))
    }
}

/// Asks the sentinels for the primary every [`SENTINEL_POLL`] and, when it moved, swaps the
/// shared connection for one to the new primary. Ends when every [`RedisClient`] is dropped.
async fn follow_failovers(
    conn: Weak<ArcSwap<ConnectionManager>>,
    mut primary: Primary,
    mut at: String,
    config: Config,
    addr: String,
) {
    let mut tick = tokio::time::interval(SENTINEL_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let limit = config.redis_connect_timeout() * 3;
    loop {
        tick.tick().await;
        let Some(slot) = conn.upgrade() else { return };
        let found = match tokio::time::timeout(limit, primary.find()).await {
            Ok(Ok(found)) => found,
            Ok(Err(e)) => {
                tracing::debug!(redis = %addr, error = %e, "sentinels did not name a primary");
                continue;
            }
            Err(_) => continue,
        };
        if found.1 == at {
            continue;
        }
        match tokio::time::timeout(limit, manager(&config, found.0)).await {
            Ok(Ok(manager)) => {
                tracing::warn!(redis = %addr, from = %at, to = %found.1, "Redis primary moved (Sentinel failover): now using the new primary");
                slot.store(Arc::new(manager));
                at = found.1;
            }
            Ok(Err(e)) => {
                tracing::warn!(redis = %addr, to = %found.1, error = %e, "cannot connect to the new primary yet")
            }
            Err(_) => tracing::warn!(redis = %addr, to = %found.1, "connecting to the new primary timed out"),
        }
    }
}
