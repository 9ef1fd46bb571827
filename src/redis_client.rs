//! The Redis side: one multiplexed, auto-reconnecting connection shared by all tasks.

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::config::{url_address, Config};
use crate::durability::Durability;
use crate::error::{Error, Result};
use crate::keys::Keys;

/// A Redis connection plus the key map of this deployment.
#[derive(Clone)]
pub struct RedisClient {
    conn: ConnectionManager,
    keys: Keys,
    addr: String,
    durability: (Durability, u32),
}

impl RedisClient {
    /// Connects to `redis.url`; fails within about `redis.connect_timeout_ms` when Redis is unreachable.
    pub async fn connect(config: &Config) -> Result<RedisClient> {
        let addr = url_address(&config.redis.url);
        let client =
            redis::Client::open(config.redis.url.as_str()).map_err(|e| Error::Config(format!("redis.url: {e}")))?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.redis_connect_timeout()))
            .set_response_timeout(Some(config.redis_response_timeout()))
            .set_number_of_retries(1)
            .set_max_delay(std::time::Duration::from_millis(500));
        let deadline = config.redis_connect_timeout() * 3;
        let conn = tokio::time::timeout(deadline, ConnectionManager::new_with_config(client, manager_config))
            .await
            .map_err(|_| Error::Redis {
                addr: addr.clone(),
                source: redis::RedisError::from((redis::ErrorKind::Io, "connect timed out")),
            })?
            .map_err(|source| Error::Redis {
                addr: addr.clone(),
                source,
            })?;
        Ok(RedisClient {
            conn,
            keys: Keys::new(config.redis.key_prefix.clone()),
            addr,
            durability: (config.redis.durability, config.redis.wait_replicas),
        })
    }

    /// A handle on the shared connection (cheap to clone; commands are pipelined).
    pub fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// The key map.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// Wraps a driver error with the server address.
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
