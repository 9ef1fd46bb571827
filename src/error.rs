//! The library's error type. Each variant maps to one CLI exit code, by
//! [`Error::exit_code`]. A driver error becomes [`Error::Database`] or [`Error::Redis`] with
//! the server's address through [`DbContext::at`] and [`RedisContext::at`]. The HTTP API does not answer with these variants: its routes turn
//! a failed library call into their own `ApiError` (`src/server/error.rs`), most often
//! 503 `busy` for a backend that failed.

/// Shorthand for results of library operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything a library operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration file or an override is wrong.
    #[error("configuration error: {0}")]
    Config(String),
    /// The caller's input is invalid; nothing was changed.
    #[error("invalid input: {0}")]
    Invalid(String),
    /// The named thing does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The operation is not allowed in the current state; nothing was changed.
    #[error("refused: {0}")]
    Refused(String),
    /// Redis could not be reached or answered with an error.
    #[error("redis at {addr}: {source}")]
    Redis {
        /// Address (never with a password).
        addr: String,
        /// The driver's error.
        #[source]
        source: redis::RedisError,
    },
    /// MySQL could not be reached or answered with an error.
    #[error("mysql at {addr}: {source}")]
    Database {
        /// Address (never with a password).
        addr: String,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },
    /// Applying migrations failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Something that should not happen; a bug or corrupted state.
    #[error("{0}")]
    Internal(String),
}

/// Exit code of a command that failed or was refused.
pub const EXIT_FAILED: u8 = 1;
/// Exit code of a usage error: a flag value clap rejects, or a configuration that cannot work.
pub const EXIT_USAGE: u8 = 2;

impl Error {
    /// The `seckill` binary's exit code for this error: [`EXIT_USAGE`] for a configuration
    /// that cannot work (a usage error, like a malformed flag), [`EXIT_FAILED`] for the rest
    /// (invalid input read from a file or found against stored data, not found, refused, a
    /// backend failing).
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Config(_) => EXIT_USAGE,
            Error::Invalid(_)
            | Error::NotFound(_)
            | Error::Refused(_)
            | Error::Redis { .. }
            | Error::Database { .. }
            | Error::Migrate(_)
            | Error::Io { .. }
            | Error::Internal(_) => EXIT_FAILED,
        }
    }

    /// Builds an [`Error::Invalid`].
    pub fn invalid(message: impl Into<String>) -> Self {
        Error::Invalid(message.into())
    }

    /// Builds an [`Error::Refused`].
    pub fn refused(message: impl Into<String>) -> Self {
        Error::Refused(message.into())
    }

    /// Builds an [`Error::NotFound`] for `what` (e.g. "activity 7").
    pub fn not_found(what: impl Into<String>) -> Self {
        Error::NotFound(what.into())
    }
}

/// Attaches the MySQL server's address to a driver error: `query.fetch_one(db.pool()).await.at(db)?`.
pub trait DbContext<T> {
    /// Turns the driver's error into an [`Error::Database`] naming `db`'s address.
    fn at(self, db: &crate::db::Db) -> Result<T>;
}

impl<T> DbContext<T> for std::result::Result<T, sqlx::Error> {
    fn at(self, db: &crate::db::Db) -> Result<T> {
        self.map_err(|source| db.err(source))
    }
}

/// Attaches the Redis server's address to a driver error: `conn.get(key).await.at(redis)?`.
pub trait RedisContext<T> {
    /// Turns the driver's error into an [`Error::Redis`] naming `redis`'s address.
    fn at(self, redis: &crate::redis_client::RedisClient) -> Result<T>;
}

impl<T> RedisContext<T> for std::result::Result<T, redis::RedisError> {
    fn at(self, redis: &crate::redis_client::RedisClient) -> Result<T> {
        self.map_err(|source| redis.err(source))
    }
}
