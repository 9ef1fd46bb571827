//! The library's error type. Each variant maps to one CLI exit code and one HTTP answer.

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

impl Error {
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
