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
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::{Migration, MigrationType, Migrator};

use crate::error::StoreError;

type AnyPool = sqlx::Pool<sqlx::Any>;
use crate::seal::Keyring;

mod activity;
mod coordination;
mod credentials;
mod idp;
mod oauth;
mod pats;
mod replica_reports;
mod reseal;
mod sessions;
mod user_servers;
mod users;

pub use activity::{
    ActivityAction, ActivityEntry, ActivityFilter, ActivityMethod, ActivityOutcome, ActivityRecord,
    MAX_REASON_LEN,
};
pub use coordination::{
    CHANGES_CHANNEL, COORDINATION_POOL_SIZE, Change, LISTENER_BACKOFF_MAX, LISTENER_BACKOFF_MIN,
    LockGuard, RefreshLock, SUBSCRIBER_QUEUE,
};
pub use credentials::{
    ConnectFlow, CredentialRecord, CredentialSource, CredentialSummary, MAX_PENDING_CONNECT_FLOWS,
    NewConnectFlow, OpenedCredential, server_key,
};
pub use idp::{IdpTokens, StoredIdpTokens};
pub use oauth::{
    ACCESS_TOKEN_PREFIX, CodeGrant, CodeRedemption, IssuedTokens, NewOauthClient, OauthClient,
    OauthClientSource, OauthTokenRejection, REFRESH_TOKEN_PREFIX, RefreshRefused, RotatedGrant,
    TokenGrant, VerifiedAccessToken,
};
pub use pats::{ALL_PERMISSIONS, NewPat, PAT_PREFIX, PersonalAccessToken, VerifiedPat};
pub use replica_reports::ReplicaReport;
pub use reseal::{ResealReport, UnreadableRow};
pub use sessions::{NewSession, Session, SessionInfo};
pub use user_servers::{NewUserServer, OpenedUserServer, UserServer, UserServerUpdate};
pub use users::{DashboardCounts, Role, User, UserLogin};

/// Seconds since the Unix epoch, UTC. Every timestamp in the store is one.
pub type UnixTime = i64;

/// The database file's name inside the data directory.
pub const DB_FILE: &str = "tessera.db";

/// Migrations, oldest first: (version, description, SQL). A test checks this list against the
/// `migrations/` directory, so a new file cannot be forgotten here. Both backends run the same
/// files: they are written in the SQL both accept (0003's table rebuild, which SQLite needs to
/// change a CHECK constraint, is plain SQL that PostgreSQL runs as well).
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
    (
        5,
        "activity_authorization_server",
        include_str!("../migrations/0005_activity_authorization_server.sql"),
    ),
    (
        6,
        "user_servers",
        include_str!("../migrations/0006_user_servers.sql"),
    ),
    (
        7,
        "replica_reports",
        include_str!("../migrations/0007_replica_reports.sql"),
    ),
];

/// Which database a [`Store`] is on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file (one replica).
    Sqlite {
        /// The database file.
        path: PathBuf,
    },
    /// A PostgreSQL database (any number of replicas).
    Postgres {
        /// The connection URL without its password.
        url: String,
    },
}

/// The store: a SQLite file in the data directory or a PostgreSQL database, with the same SQL
/// on both (through sqlx's `Any` driver: one code path, no per-backend query).
///
/// Cheap to clone (the pool and keyring are shared).
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    keyring: Option<Arc<Keyring>>,
    backend: Arc<Backend>,
    /// Refresh locks and change messages between replicas (PostgreSQL only).
    #[cfg(feature = "postgres")]
    coord: Option<Arc<coordination::Coordination>>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend)
            .field("keyring", &self.keyring)
            .finish_non_exhaustive()
    }
}

/// SQLite settings for every pooled connection: WAL, foreign keys on, a busy timeout.
const SQLITE_PRAGMAS: &str = "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
     PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;";

impl Store {
    /// Opens `<data_dir>/tessera.db`, creating the directory and the file on first start
    /// (file mode 0600 on Unix), with WAL journaling, foreign keys on and a busy timeout, and
    /// runs the embedded migrations.
    pub async fn open(data_dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::DataDir {
            path: data_dir.to_owned(),
            source,
        })?;
        Self::open_sqlite(data_dir.join(DB_FILE)).await
    }

    /// Opens the store a storage URL names and runs the migrations:
    ///
    /// - `sqlite://<path>` (`sqlite:<path>` too): the SQLite file at `<path>` (absolute, or
    ///   relative to the working directory), created with its directory, as [`Store::open`];
    /// - `postgres://user[:password]@host[:port]/database[?sslmode=…]` (or `postgresql://`):
    ///   a PostgreSQL database, which several replicas may share. The migrations take an
    ///   advisory lock, so replicas starting together apply each one once.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        match parse_url(url)? {
            Backend::Sqlite { path } => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|source| StoreError::DataDir {
                        path: dir.to_owned(),
                        source,
                    })?;
                }
                Self::open_sqlite(path).await
            }
            Backend::Postgres { url: redacted } => Self::open_postgres(url, redacted).await,
        }
    }

    async fn open_sqlite(path: PathBuf) -> Result<Self, StoreError> {
        install_drivers();
        let path = std::path::absolute(&path).map_err(|source| StoreError::DataDir {
            path: path.clone(),
            source,
        })?;
        create_private_file(&path)?;
        let open_error = |source| StoreError::Open {
            path: path.clone(),
            source,
        };
        let options: AnyConnectOptions = format!("sqlite://{}?mode=rwc", encode_path(&path)?)
            .parse()
            .map_err(open_error)?;
        let pool = AnyPoolOptions::new()
            .max_connections(4)
            .after_connect(|conn, _meta| {
                Box::pin(async move {
                    sqlx::Executor::execute(&mut *conn, SQLITE_PRAGMAS).await?;
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(open_error)?;
        Self::migrated(pool, Backend::Sqlite { path }).await
    }

    #[cfg(feature = "postgres")]
    async fn open_postgres(url: &str, redacted: String) -> Result<Self, StoreError> {
        install_drivers();
        let connect_error = |source| StoreError::Connect {
            url: redacted.clone(),
            source,
        };
        let options: AnyConnectOptions = url.parse().map_err(connect_error)?;
        let pool = AnyPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .map_err(connect_error)?;
        let coord = coordination::Coordination::new(url).map_err(connect_error)?;
        let mut store = Self::migrated(pool, Backend::Postgres { url: redacted }).await?;
        store.coord = Some(Arc::new(coord));
        Ok(store)
    }

    #[cfg(not(feature = "postgres"))]
    #[allow(clippy::unused_async)]
    async fn open_postgres(_url: &str, redacted: String) -> Result<Self, StoreError> {
        Err(StoreError::Url {
            url: redacted,
            reason: "this build has no PostgreSQL support (cargo feature `postgres`)",
        })
    }

    async fn migrated(pool: AnyPool, backend: Backend) -> Result<Self, StoreError> {
        migrator().run(&pool).await?;
        Ok(Store {
            pool,
            keyring: None,
            backend: Arc::new(backend),
            #[cfg(feature = "postgres")]
            coord: None,
        })
    }

    /// Gives the store the keyring it seals provider tokens with. Without one, the provider-token
    /// methods return [`StoreError::SealingDisabled`].
    #[must_use]
    pub fn with_keyring(mut self, keyring: Arc<Keyring>) -> Self {
        self.keyring = Some(keyring);
        self
    }

    /// Which database the store is on.
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// The SQLite database file (`None` on PostgreSQL).
    pub fn path(&self) -> Option<&Path> {
        match &*self.backend {
            Backend::Sqlite { path } => Some(path),
            Backend::Postgres { .. } => None,
        }
    }

    /// Runs the migrations again (they are applied once; a no-op when up to date).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        migrator().run(&self.pool).await?;
        Ok(())
    }

    /// Closes the pool, waiting for connections to be returned.
    pub async fn close(&self) {
        self.pool.close().await;
        #[cfg(feature = "postgres")]
        if let Some(coord) = &self.coord {
            coord.close().await;
        }
    }

    fn keyring(&self) -> Result<&Keyring, StoreError> {
        self.keyring.as_deref().ok_or(StoreError::SealingDisabled)
    }

    /// The keyring, if any: for state sealed *outside* the database (a sign-in or consent in
    /// progress, an MCP session id), so that any replica can open it.
    pub fn keyring_handle(&self) -> Option<Arc<Keyring>> {
        self.keyring.clone()
    }
}

/// The `Any` driver dispatches on the URL's scheme to the drivers installed here (once).
fn install_drivers() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        #[cfg(feature = "postgres")]
        sqlx::any::install_drivers(&[sqlx::sqlite::any::DRIVER, sqlx::postgres::any::DRIVER]).ok();
        #[cfg(not(feature = "postgres"))]
        sqlx::any::install_drivers(&[sqlx::sqlite::any::DRIVER]).ok();
    });
}

/// Which backend a storage URL names (for PostgreSQL, the URL without its password).
pub fn parse_url(url: &str) -> Result<Backend, StoreError> {
    let bad = |reason| StoreError::Url {
        url: redact(url),
        reason,
    };
    let (scheme, rest) = url.split_once(':').ok_or_else(|| bad("no scheme"))?;
    match scheme {
        "sqlite" => {
            let path = rest.strip_prefix("//").unwrap_or(rest);
            if path.contains('?') {
                return Err(bad("a sqlite URL takes no parameters"));
            }
            if path.is_empty() {
                return Err(bad("no file path"));
            }
            Ok(Backend::Sqlite {
                path: PathBuf::from(path),
            })
        }
        "postgres" | "postgresql" => {
            let Some(authority) = rest.strip_prefix("//") else {
                return Err(bad("expected postgres://"));
            };
            let host = authority.split(['/', '?']).next().unwrap_or_default();
            let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
            if host.is_empty() {
                return Err(bad("no host"));
            }
            Ok(Backend::Postgres { url: redact(url) })
        }
        _ => Err(bad("unknown scheme")),
    }
}

/// The URL with any password replaced by `***` (for logs and errors).
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let mut out = format!("{scheme}://");
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            out.push_str(user);
            if userinfo.contains(':') {
                out.push_str(":***");
            }
            out.push('@');
            out.push_str(host);
        }
        None => out.push_str(authority),
    }
    // A password can also ride in the query string.
    match tail.split_once('?') {
        Some((path, query)) => {
            out.push_str(path);
            out.push('?');
            let params: Vec<String> = query
                .split('&')
                .map(|p| match p.split_once('=') {
                    Some(("password", _)) => "password=***".to_owned(),
                    _ => p.to_owned(),
                })
                .collect();
            out.push_str(&params.join("&"));
        }
        None => out.push_str(tail),
    }
    out
}

/// A file path as the path of a `sqlite://` URL: percent-encoded but for unreserved
/// characters and `/`.
fn encode_path(path: &Path) -> Result<String, StoreError> {
    let text = path.to_str().ok_or_else(|| StoreError::DataDir {
        path: path.to_owned(),
        source: std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the database path is not valid UTF-8",
        ),
    })?;
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    Ok(out)
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
mod test_db;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod broker_tests;

#[cfg(test)]
mod user_server_tests;

#[cfg(test)]
mod url_tests {
    use super::*;

    #[test]
    fn storage_urls_name_their_backend() {
        assert_eq!(
            parse_url("sqlite:///var/lib/tessera/tessera.db").unwrap(),
            Backend::Sqlite {
                path: PathBuf::from("/var/lib/tessera/tessera.db")
            }
        );
        assert_eq!(
            parse_url("sqlite:data/t.db").unwrap(),
            Backend::Sqlite {
                path: PathBuf::from("data/t.db")
            }
        );
        assert_eq!(
            parse_url("postgres://tessera:hunter2@db:5432/tessera?sslmode=require").unwrap(),
            Backend::Postgres {
                url: "postgres://tessera:***@db:5432/tessera?sslmode=require".into()
            }
        );
        assert!(matches!(
            parse_url("postgresql://db/tessera"),
            Ok(Backend::Postgres { .. })
        ));
        for bad in [
            "mysql://db/x",
            "tessera.db",
            "sqlite://",
            "sqlite:///x.db?mode=ro",
            "postgres:///x",
        ] {
            assert!(
                matches!(parse_url(bad), Err(StoreError::Url { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn redact_removes_passwords_only() {
        assert_eq!(redact("postgres://u:p@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("postgres://u@h:1/db"), "postgres://u@h:1/db");
        assert_eq!(
            redact("postgres://h/db?user=u&password=p&sslmode=verify-full"),
            "postgres://h/db?user=u&password=***&sslmode=verify-full"
        );
        assert_eq!(redact("postgres://u:p@ss@h/db"), "postgres://u:***@h/db");
    }

    #[cfg(feature = "postgres")]
    #[tokio::test]
    async fn an_unreachable_database_is_a_connect_error_without_the_password() {
        // Port 1 on loopback: refused at once.
        let err = Store::connect("postgres://tessera:hunter2@127.0.0.1:1/tessera")
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, StoreError::Connect { .. }), "{err:?}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(
            text.contains("postgres://tessera:***@127.0.0.1:1/tessera"),
            "{text}"
        );
    }
}
