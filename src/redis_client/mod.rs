//! The Redis side: one multiplexed, auto-reconnecting connection shared by all tasks.
//!
//! With a Sentinel URL ([`target`]) the connection goes to the primary the sentinels name,
//! and a watcher asks them again every [`SENTINEL_POLL`]: after a failover the shared
//! connection is swapped for one to the new primary, so `serve` and the consumers follow
//! without a restart.
//!
//! With a cluster URL the handle is the redis crate's cluster connection: each command goes to
//! the primary of its key's slot (every activity's keys share one slot, see [`crate::keys`]),
//! MOVED/ASK after a resharding or failover are followed, and a script missing on a node is
//! loaded there by `Script::invoke_async` (NOSCRIPT, then SCRIPT LOAD on every node, then
//! EVALSHA again). Commands about a node (SCAN, INFO, CONFIG GET) go to each of [`RedisClient::primaries`].

pub mod conn;
pub mod target;

use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{Sentinel, SentinelNodeConnectionInfo};
use redis::RedisConnectionInfo;

use crate::config::Config;
use crate::durability::Durability;
use crate::error::{Error, Result};
use crate::keys::Keys;
pub use conn::{Node, RedisConn};
pub use target::RedisTarget;

/// How often the sentinels are asked which server is the primary.
pub const SENTINEL_POLL: Duration = Duration::from_millis(500);

/// A Redis connection plus the key map of this deployment.
#[derive(Clone)]
pub struct RedisClient {
    conn: Backend,
    keys: Keys,
    addr: String,
    durability: (Durability, u32),
    numeric_user_ids_below: u64,
}

#[derive(Clone)]
enum Backend {
    /// One server; swapped after a Sentinel failover.
    Single(Arc<ArcSwap<ConnectionManager>>),
    Cluster(ClusterConnection),
}

impl RedisClient {
    /// Connects to `redis.url` (through the sentinels for a `redis+sentinel://` URL, learning
    /// the slot map from the first node that answers for a `redis+cluster://` URL); fails
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
                Backend::Single(Arc::new(ArcSwap::from_pointee(manager)))
            }
            RedisTarget::Cluster { .. } => {
                let cluster = tokio::time::timeout(deadline, cluster(config, &target))
                    .await
                    .map_err(|_| fail(timed_out()))?
                    .map_err(fail)?;
                Backend::Cluster(cluster)
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
                Backend::Single(conn)
            }
        };
        Ok(RedisClient {
            conn,
            keys: Keys::new(config.redis.key_prefix.clone()),
            addr,
            durability: (config.redis.durability, config.redis.wait_replicas),
            numeric_user_ids_below: config.redis.numeric_user_ids_below,
        })
    }

    /// A handle on the shared connection (cheap to clone; commands are pipelined). Take a
    /// fresh one per operation: after a Sentinel failover the next one goes to the new primary.
    pub fn conn(&self) -> RedisConn {
        match &self.conn {
            Backend::Single(slot) => RedisConn::Single(slot.load().as_ref().clone()),
            Backend::Cluster(cluster) => RedisConn::Cluster(cluster.clone()),
        }
    }

    /// True when `redis.url` names a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.conn, Backend::Cluster(_))
    }

    /// Every primary, each with a connection whose commands all go to it: the one server,
    /// or (in a cluster) each primary serving slots, as `CLUSTER NODES` lists them now. For
    /// the commands that see one node only: SCAN, INFO, CONFIG GET.
    pub async fn primaries(&self) -> Result<Vec<Node>> {
        let cluster = match &self.conn {
            Backend::Single(_) => {
                return Ok(vec![Node {
                    addr: self.addr.clone(),
                    conn: self.conn(),
                }])
            }
            Backend::Cluster(cluster) => cluster,
        };
        let listing: String = redis::cmd("CLUSTER")
            .arg("NODES")
            .query_async(&mut cluster.clone())
            .await
            .map_err(|e| self.err(e))?;
        let nodes: Vec<Node> = conn::primaries_in(&listing)
            .into_iter()
            .map(|(host, port)| Node {
                addr: match host.contains(':') {
                    true => format!("[{host}]:{port}"),
                    false => format!("{host}:{port}"),
                },
                conn: RedisConn::Node(cluster.clone(), host, port),
            })
            .collect();
        if nodes.is_empty() {
            return Err(self.err(redis::RedisError::from((
                redis::ErrorKind::Client,
                "CLUSTER NODES lists no primary serving slots",
            ))));
        }
        Ok(nodes)
    }

    /// Every key matching `pattern` on every primary (SCAN, never KEYS), sorted.
    pub async fn scan_match(&self, pattern: &str) -> Result<Vec<String>> {
        let mut found = Vec::new();
        for node in self.primaries().await? {
            let mut conn = node.conn;
            let mut cursor: u64 = 0;
            loop {
                let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| self.err(e))?;
                found.extend(batch);
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        found.sort();
        found.dedup();
        Ok(found)
    }

    /// The key map.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// `redis.numeric_user_ids_below`, which `hot` stamps on the products it preheats (see
    /// [`crate::totals`]).
    pub fn numeric_user_ids_below(&self) -> u64 {
        self.numeric_user_ids_below
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

/// Connects to a cluster: learns the slot map from the first seed node that answers, with
/// the same connection and response timeouts as a single server, and few retries so that a
/// cluster that cannot answer fails fast instead of backing off for seconds.
async fn cluster(config: &Config, target: &RedisTarget) -> redis::RedisResult<ClusterConnection> {
    let RedisTarget::Cluster {
        nodes,
        username,
        password,
    } = target
    else {
        unreachable!("cluster() is only called for cluster targets");
    };
    let urls: Vec<String> = nodes
        .iter()
        .map(|(host, port)| match host.contains(':') {
            true => format!("redis://[{host}]:{port}"),
            false => format!("redis://{host}:{port}"),
        })
        .collect();
    let mut builder = ClusterClientBuilder::new(urls)
        .connection_timeout(config.redis_connect_timeout())
        .response_timeout(config.redis_response_timeout())
        .retries(3)
        .min_retry_wait(10)
        .max_retry_wait(200);
    if let Some(user) = username {
        builder = builder.username(user);
    }
    if let Some(password) = password {
        builder = builder.password(password);
    }
    builder.build()?.get_async_connection().await
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
