use std::path::PathBuf;

use crate::seal::SealError;

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The data directory could not be created or the database file prepared.
    #[error("cannot prepare data directory {path}: {source}; check that it exists and is writable")]
    DataDir {
        /// The directory or file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The database could not be opened.
    #[error("cannot open database {path}: {source}")]
    Open {
        /// The database file.
        path: PathBuf,
        /// The driver's error.
        source: sqlx::Error,
    },
    /// The storage URL names no backend this build supports, or is malformed.
    #[error(
        "unsupported storage URL {url:?}: {reason}; use sqlite://<path> or postgres://user@host:port/database"
    )]
    Url {
        /// The URL, password removed.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The PostgreSQL database could not be reached.
    #[error("cannot connect to database {url}: {source}")]
    Connect {
        /// The URL, password removed.
        url: String,
        /// The driver's error.
        source: sqlx::Error,
    },
    /// A schema migration failed at start-up.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// Any other database error.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// No user has this id.
    #[error("user {0} not found")]
    UserNotFound(String),
    /// The user has no personal access token with this id.
    #[error("personal access token {id} not found for user {user_id}")]
    PatNotFound {
        /// The token's id.
        id: String,
        /// The user asked about.
        user_id: String,
    },
    /// A presented personal access token is not accepted (the caller's fault: 401).
    #[error("personal access token rejected: {0}")]
    PatRejected(PatRejection),
    /// The user already has the maximum number of pending connect flows.
    #[error(
        "user {user_id} already has {max} pending connect flows; finish or wait for one to expire (10 minutes) before starting another"
    )]
    TooManyConnectFlows {
        /// The user.
        user_id: String,
        /// The bound.
        max: u32,
    },
    /// The user already has a personal server with this name.
    #[error("Server \"{name}\" already exists")]
    UserServerExists {
        /// The name.
        name: String,
    },
    /// The user already has as many personal servers as allowed.
    #[error("personal server limit reached: at most {max} per user (max_user_servers)")]
    UserServerQuota {
        /// The limit.
        max: usize,
    },
    /// The user has no personal server with this name.
    #[error("Server \"{name}\" not found")]
    UserServerNotFound {
        /// The name.
        name: String,
    },
    /// A scope contains whitespace or is empty.
    #[error("invalid scope {0:?}: a scope is one or more non-space characters")]
    InvalidScope(String),
    /// Provider tokens were to be stored or read but no sealing key is configured.
    #[error(
        "storing provider tokens needs a sealing key: set TESSERA_SEALING_KEY to the base64 of 32 random bytes (openssl rand -base64 32)"
    )]
    SealingDisabled,
    /// Sealing or opening a secret failed.
    #[error(transparent)]
    Seal(#[from] SealError),
    /// The operating system's random number generator failed.
    #[error("no secure random numbers available: {0}")]
    Random(getrandom::Error),
    /// Another replica held a refresh lock for longer than the caller would wait.
    #[error("timed out waiting for another replica's refresh")]
    LockTimeout,
    /// A stored row holds a value this version does not understand.
    #[error("stored {what} is invalid: {value:?}")]
    Corrupt {
        /// Which column.
        what: &'static str,
        /// The stored value (never a secret column).
        value: String,
    },
}

/// Why a personal access token was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PatRejection {
    /// Not a token Tessera issued (or it was deleted).
    #[error("unknown token")]
    Unknown,
    /// Past its expiry.
    #[error("token expired")]
    Expired,
    /// Revoked by its owner or an admin.
    #[error("token revoked")]
    Revoked,
    /// The owner's account is disabled.
    #[error("the token's user is disabled")]
    UserDisabled,
}
