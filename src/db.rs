//! The MySQL side: connecting, creating the database, migrations.

use std::str::FromStr;
use std::time::Duration;

use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions};
use sqlx::{ConnectOptions, Connection};

use crate::config::{url_address, Config};
use crate::error::{Error, Result};

/// The migrations under `migrations/`, embedded at compile time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// A MySQL connection pool and the address it talks to (for error messages).
#[derive(Debug, Clone)]
pub struct Db {
    pool: MySqlPool,
    addr: String,
}

impl Db {
    /// Connects to `database.url`; fails within `database.connect_timeout_ms` when MySQL is unreachable.
    pub async fn connect(config: &Config) -> Result<Db> {
        let addr = url_address(&config.database.url);
        let options = connect_options(&config.database.url)?;
        let timeout = Duration::from_millis(config.database.connect_timeout_ms);
        let pool = MySqlPoolOptions::new()
            .max_connections(config.database.max_connections)
            .acquire_timeout(timeout)
            .connect_with(options);
        let pool = within(&addr, timeout + Duration::from_millis(500), pool).await?;
        Ok(Db { pool, addr })
    }

    /// A pool that connects on first use, so a daemon can start (and keep retrying)
    /// while MySQL is down.
    pub fn connect_lazy(config: &Config) -> Result<Db> {
        let addr = url_address(&config.database.url);
        let options = connect_options(&config.database.url)?;
        let pool = MySqlPoolOptions::new()
            .max_connections(config.database.max_connections)
            .acquire_timeout(Duration::from_millis(config.database.connect_timeout_ms))
            .connect_lazy_with(options);
        Ok(Db { pool, addr })
    }

    /// The pool, for queries.
    pub fn pool(&self) -> &MySqlPool {
        &self.pool
    }

    /// Wraps a driver error with the server address (a `Result` does it with
    /// [`DbContext::at`](crate::error::DbContext::at)).
    pub fn err(&self, source: sqlx::Error) -> Error {
        Error::Database {
            addr: self.addr.clone(),
            source,
        }
    }

    /// Closes every connection.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// MySQL's error number of a driver error, when the server sent one.
pub fn error_number(e: &sqlx::Error) -> Option<u16> {
    match e {
        sqlx::Error::Database(d) => d
            .try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
            .map(|m| m.number()),
        _ => None,
    }
}

/// Whether a transaction failed only because another got in its way, so running it again
/// can succeed: 1213 a deadlock, 1205 a lock wait timeout, 1020 a row changed since this
/// transaction's snapshot (MariaDB's `innodb_snapshot_isolation`, on by default from 11.8:
/// the version conflict an optimistic UPDATE would otherwise see as no row matched).
pub fn is_transaction_conflict(e: &sqlx::Error) -> bool {
    error_number(e).is_some_and(is_conflict_number)
}

/// [`is_transaction_conflict`] by MySQL error number.
pub fn is_conflict_number(number: u16) -> bool {
    matches!(number, 1213 | 1205 | 1020)
}

/// Awaits a connection attempt for at most `limit`, so an unreachable server fails fast
/// with its address instead of hanging.
async fn within<T>(
    addr: &str,
    limit: Duration,
    attempt: impl std::future::Future<Output = std::result::Result<T, sqlx::Error>>,
) -> Result<T> {
    let source = match tokio::time::timeout(limit, attempt).await {
        Ok(Ok(value)) => return Ok(value),
        Ok(Err(source)) => source,
        Err(_) => sqlx::Error::PoolTimedOut,
    };
    Err(Error::Database {
        addr: addr.to_string(),
        source,
    })
}

fn connect_options(url: &str) -> Result<MySqlConnectOptions> {
    let options = MySqlConnectOptions::from_str(url).map_err(|e| Error::Config(format!("database.url: {e}")))?;
    // Statement logging at INFO would drown the operator's output; slow ones still show.
    Ok(options
        .log_statements(tracing::log::LevelFilter::Debug)
        .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_secs(1)))
}

/// Creates the database named in `database.url` when it does not exist yet.
pub async fn create_database_if_missing(config: &Config) -> Result<()> {
    let addr = url_address(&config.database.url);
    let options = connect_options(&config.database.url)?;
    let Some(name) = options.get_database().map(str::to_string) else {
        return Err(Error::Config("database.url: names no database".into()));
    };
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(Error::Config(format!(
            "database.url: database name {name:?} must be [A-Za-z0-9_]"
        )));
    }
    let server = options.database("");
    let timeout = Duration::from_millis(config.database.connect_timeout_ms);
    let mut conn = within(&addr, timeout, sqlx::mysql::MySqlConnection::connect_with(&server)).await?;
    sqlx::query(&format!(
        "CREATE DATABASE IF NOT EXISTS `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
    ))
    .execute(&mut conn)
    .await
    .map_err(|source| Error::Database {
        addr: addr.clone(),
        source,
    })?;
    let _ = conn.close().await;
    Ok(())
}

/// Creates the database if needed and applies every pending migration. Safe to run twice.
pub async fn migrate(config: &Config) -> Result<Vec<String>> {
    create_database_if_missing(config).await?;
    let db = Db::connect(config).await?;
    let applied_before: Vec<i64> = applied_versions(&db).await;
    MIGRATOR.run(db.pool()).await?;
    let newly = MIGRATOR
        .iter()
        .filter(|m| !applied_before.contains(&m.version))
        .map(|m| format!("{} {}", m.version, m.description))
        .collect();
    db.close().await;
    Ok(newly)
}

async fn applied_versions(db: &Db) -> Vec<i64> {
    sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success = 1")
        .fetch_all(db.pool())
        .await
        .unwrap_or_default()
}
