//! The SQL store: one pool, embedded migrations, and typed repository methods per table.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use secrecy::SecretString;
use sha2::{Digest, Sha256};
use sqlx::SqlSafeStr as _;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::error::StoreError;
use crate::seal::Keyring;

mod activity;
mod credentials;
mod idp;
mod oauth;
mod pats;
mod reseal;
mod sessions;
mod users;

pub use activity::{
    ActivityAction, ActivityEntry, ActivityFilter, ActivityMethod, ActivityOutcome, ActivityRecord,
    MAX_REASON_LEN,
};
pub use credentials::{
    ConnectFlow, CredentialRecord, CredentialSource, CredentialSummary, MAX_PENDING_CONNECT_FLOWS,
    NewConnectFlow, OpenedCredential, server_key,
};
pub use idp::{IdpTokens, StoredIdpTokens};
pub use oauth::{
    ACCESS_TOKEN_PREFIX, CodeGrant, CodeRedemption, IssuedTokens, NewOauthClient, OauthClient,
    OauthClientSource, OauthTokenRejection, REFRESH_TOKEN_PREFIX, RotatedGrant, TokenGrant,
    VerifiedAccessToken,
};
pub use pats::{NewPat, PAT_PREFIX, PersonalAccessToken, VerifiedPat};
pub use reseal::{ResealReport, UnreadableRow};
pub use sessions::{NewSession, Session};
pub use users::{Role, User, UserLogin};

/// Seconds since the Unix epoch, UTC. Every timestamp in the store is one.
pub type UnixTime = i64;

/// The database file's name inside the data directory.
pub const DB_FILE: &str = "tessera.db";

/// Migrations, oldest first: (version, description, SQL). A test checks this list against the
/// `migrations/` directory, so a new file cannot be forgotten here.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "init", include_str!("../migrations/0001_init.sql")),
    (2, "broker", include_str!("../migrations/0002_broker.sql")),
    (
        3,
        "activity_tool_calls",
        include_str!("../migrations/0003_activity_tool_calls.sql"),
    ),
    (
        4,
        "oauth_server",
        include_str!("../migrations/0004_oauth_server.sql"),
    ),
];

/// The store: a SQLite database in the data directory (PostgreSQL later, with the same SQL).
///
/// Cheap to clone (the pool and keyring are shared).
#[derive(Clone)]
pub struct Store {
    pool: SqlitePool,
    keyring: Option<Arc<Keyring>>,
    path: PathBuf,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .field("keyring", &self.keyring)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens `<data_dir>/tessera.db`, creating the directory and the file on first start
    /// (file mode 0600 on Unix), with WAL journaling, foreign keys on and a busy timeout, and
    /// runs the embedded migrations.
    pub async fn open(data_dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::DataDir {
            path: data_dir.to_owned(),
            source,
        })?;
        let path = data_dir.join(DB_FILE);
        create_private_file(&path)?;
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(|source| StoreError::Open {
                path: path.clone(),
                source,
            })?;
        migrator().run(&pool).await?;
        Ok(Store {
            pool,
            keyring: None,
            path,
        })
    }

    /// Gives the store the keyring it seals provider tokens with. Without one, the provider-token
    /// methods return [`StoreError::SealingDisabled`].
    #[must_use]
    pub fn with_keyring(mut self, keyring: Arc<Keyring>) -> Self {
        self.keyring = Some(keyring);
        self
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs the migrations again (they are applied once; a no-op when up to date).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        migrator().run(&self.pool).await?;
        Ok(())
    }

    /// Closes the pool, waiting for connections to be returned.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    fn keyring(&self) -> Result<&Keyring, StoreError> {
        self.keyring.as_deref().ok_or(StoreError::SealingDisabled)
    }
}

fn migrator() -> Migrator {
    Migrator::with_migrations(
        MIGRATIONS
            .iter()
            .map(|&(version, description, sql)| {
                Migration::new(
                    version,
                    description.into(),
                    MigrationType::Simple,
                    sql.into_sql_str(),
                    false,
                )
            })
            .collect(),
    )
}

#[cfg(unix)]
fn create_private_file(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(StoreError::DataDir {
            path: path.to_owned(),
            source,
        }),
    }
}

#[cfg(not(unix))]
fn create_private_file(_path: &Path) -> Result<(), StoreError> {
    Ok(())
}

/// The current time in unix seconds.
pub fn now_unix() -> UnixTime {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// 32 random bytes, base64url without padding (43 characters).
fn random_secret() -> Result<SecretString, StoreError> {
    let mut bytes = secrecy::SecretBox::new(Box::new([0u8; 32]));
    getrandom::fill(secrecy::ExposeSecretMut::expose_secret_mut(&mut bytes))
        .map_err(StoreError::Random)?;
    Ok(SecretString::from(
        URL_SAFE_NO_PAD.encode(secrecy::ExposeSecret::expose_secret(&bytes)),
    ))
}

/// Hex SHA-256: how a high-entropy secret (cookie, token) is stored and looked up.
fn hash_secret(secret: &str) -> String {
    Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn join_scopes<S: AsRef<str>>(scopes: &[S]) -> Result<String, StoreError> {
    let mut out = String::new();
    for scope in scopes {
        let scope = scope.as_ref();
        if scope.is_empty() || scope.chars().any(char::is_whitespace) {
            return Err(StoreError::InvalidScope(scope.to_owned()));
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(scope);
    }
    Ok(out)
}

fn split_scopes(stored: &str) -> Vec<String> {
    stored.split_whitespace().map(str::to_owned).collect()
}

fn expires_at(ttl: Duration) -> UnixTime {
    now_unix().saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX))
}

/// Maps a foreign-key violation (an unknown user id) to [`StoreError::UserNotFound`].
fn user_fk(user_id: &str) -> impl FnOnce(sqlx::Error) -> StoreError + '_ {
    move |e| match &e {
        sqlx::Error::Database(db) if db.is_foreign_key_violation() => {
            StoreError::UserNotFound(user_id.to_owned())
        }
        _ => StoreError::Database(e),
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod broker_tests;
