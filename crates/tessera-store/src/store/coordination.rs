//! Coordination between replicas that share one PostgreSQL database.
//!
//! - **Refresh locks** ([`Store::lock`]): one refresh or exchange per (user, server) — and one
//!   refresh of a user's provider tokens — across every replica, because providers that rotate
//!   refresh tokens revoke the whole family when one is used twice. On PostgreSQL a
//!   transaction-scoped advisory lock (`pg_advisory_xact_lock`) on a stable 64-bit key
//!   ([`RefreshLock::key`]); the [`LockGuard`] holds the open transaction, and dropping it rolls
//!   back, which releases the lock (also when the replica dies: its connection closes). On
//!   SQLite a no-op: one process owns the file, and it single-flights in memory.
//! - **Change messages** ([`Store::publish`], [`Store::subscribe`]): PostgreSQL `LISTEN` /
//!   `NOTIFY` on one channel ([`CHANGES_CHANNEL`]), JSON payloads that carry the publishing
//!   replica's id, so a replica never receives its own. A change is delivered **immediately
//!   while the listener is connected; after a reconnect every cache is dropped**
//!   ([`Change::Resync`]), because messages sent while it was away are lost. On SQLite nothing
//!   is published and there is nothing to subscribe to.
//!
//! Both use their own small PostgreSQL pool ([`COORDINATION_POOL_SIZE`] connections, opened on
//! demand), never the store's: a replica holding refresh locks must still be able to read and
//! write credentials while it holds them.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::Store;
use crate::error::StoreError;

/// The PostgreSQL notification channel replicas publish changes on.
pub const CHANGES_CHANNEL: &str = "tessera_changes";

/// Connections of the coordination pool (refresh locks, publishing) per replica. A lock holds
/// one for as long as its refresh takes; a refresh that finds the pool busy waits, within its
/// lock wait.
pub const COORDINATION_POOL_SIZE: u32 = 10;

/// Changes queued for a subscriber that has not taken them yet.
pub const SUBSCRIBER_QUEUE: usize = 1024;

/// Delay before the first attempt to reconnect a lost listener; it doubles up to
/// [`LISTENER_BACKOFF_MAX`].
pub const LISTENER_BACKOFF_MIN: Duration = Duration::from_millis(250);
/// The longest delay between two attempts to reconnect the listener.
pub const LISTENER_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// What a refresh lock serializes. Its [`key`](Self::key) is the same on every replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshLock<'a> {
    /// Refresh or exchange of the broker's credential of one user for one server.
    Broker {
        /// The store's user id.
        user_id: &'a str,
        /// The server's key (`name_<16 hex>`).
        server_key: &'a str,
    },
    /// Refresh of one user's provider (identity provider) tokens.
    Idp {
        /// The store's user id.
        user_id: &'a str,
    },
}

impl RefreshLock<'_> {
    /// The advisory-lock key: the first 8 bytes, big-endian, of SHA-256 of
    /// `broker|<user_id>|<server_key>` or `idp|<user_id>`.
    pub fn key(&self) -> i64 {
        let name = match self {
            RefreshLock::Broker {
                user_id,
                server_key,
            } => format!("broker|{user_id}|{server_key}"),
            RefreshLock::Idp { user_id } => format!("idp|{user_id}"),
        };
        let digest = Sha256::digest(name.as_bytes());
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        i64::from_be_bytes(first)
    }
}

/// A held refresh lock. Released when dropped (the transaction holding it rolls back on its
/// connection's return to the pool) or, awaited, by [`LockGuard::release`].
#[must_use = "the lock is released when the guard is dropped"]
pub struct LockGuard {
    #[cfg(feature = "postgres")]
    tx: Option<sqlx::Transaction<'static, sqlx::Postgres>>,
}

impl std::fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockGuard")
            .field("in_database", &self.in_database())
            .finish()
    }
}

impl LockGuard {
    fn noop() -> Self {
        LockGuard {
            #[cfg(feature = "postgres")]
            tx: None,
        }
    }

    /// Whether the lock is held in the database (false on SQLite, where it is a no-op).
    pub fn in_database(&self) -> bool {
        #[cfg(feature = "postgres")]
        return self.tx.is_some();
        #[cfg(not(feature = "postgres"))]
        false
    }

    /// Releases the lock and waits until the database has released it.
    pub async fn release(self) {
        #[cfg(feature = "postgres")]
        if let Some(tx) = self.tx {
            // A failed rollback closes the connection, which releases the lock as well.
            let _ = tx.rollback().await;
        }
    }
}

/// A change one replica tells the others about. Serialized as JSON
/// (`{"kind": "credential", …}`) inside the notification payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Change {
    /// A user connected (or replaced) or disconnected their credential for a brokered server:
    /// drop the cached credential and treat it as a local connect event.
    Credential {
        /// The store's user id.
        user_id: String,
        /// The server's name.
        server: String,
        /// The server's key.
        server_key: String,
        /// Connected (true) or disconnected (false).
        connected: bool,
    },
    /// Every token of one family of Tessera's authorization server was revoked.
    OauthFamilyRevoked {
        /// The family id.
        family_id: String,
    },
    /// One token of Tessera's authorization server was revoked.
    OauthTokenRevoked {
        /// Lowercase hex SHA-256 of the token (how the store keeps it).
        token_sha256: String,
    },
    /// Tokens were revoked whose family is not known: drop every cached token check.
    OauthRevokedUnknown,
    /// A user's personal servers, shared-server preferences or disabled flag changed: reload
    /// what is cached for them.
    UserChanged {
        /// The store's user id.
        user_id: String,
    },
    /// An admin ended an MCP client session: the replica holding it ends it, and none resumes
    /// it from its sealed id afterwards.
    McpSessionEnded {
        /// SHA-256 (lowercase hex) of the session id; never the id.
        handle: String,
    },
    /// An admin restarted a shared upstream server: each replica replaces its discovery session
    /// and ends its clients' upstream sessions to it.
    ServerRestarted {
        /// The server's name.
        server: String,
    },
    /// Never published: a subscriber's listener reconnected (or read a message it does not
    /// understand), so changes may have been missed. Drop every cache.
    Resync,
}

#[cfg(feature = "postgres")]
#[derive(Serialize)]
struct OutgoingMessage<'a> {
    /// The publishing replica.
    r: &'a str,
    c: &'a Change,
}

#[cfg(feature = "postgres")]
#[derive(Deserialize)]
struct IncomingMessage {
    r: String,
    c: serde_json::Value,
}

/// The PostgreSQL side of coordination: the full URL (for the listener, which needs its own
/// connection), the coordination pool and this replica's id.
#[cfg(feature = "postgres")]
pub(crate) struct Coordination {
    url: secrecy::SecretString,
    pool: sqlx::PgPool,
    replica: String,
}

#[cfg(feature = "postgres")]
impl Coordination {
    pub(crate) fn new(url: &str) -> Result<Self, sqlx::Error> {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(COORDINATION_POOL_SIZE)
            .acquire_timeout(Duration::from_secs(10))
            .connect_lazy(url)?;
        let mut id = [0u8; 16];
        // A replica id only has to differ between processes; the clock will do if the OS
        // random source fails.
        if getrandom::fill(&mut id).is_err() {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            id = (nanos ^ u128::from(std::process::id())).to_be_bytes();
        }
        Ok(Coordination {
            url: secrecy::SecretString::from(url.to_owned()),
            pool,
            replica: id.iter().map(|b| format!("{b:02x}")).collect(),
        })
    }

    pub(crate) async fn close(&self) {
        self.pool.close().await;
    }
}

impl Store {
    /// This replica's id in change messages (`None` on SQLite). Random per
    /// [`Store::connect`]: the binary connects once per process.
    pub fn replica_id(&self) -> Option<&str> {
        #[cfg(feature = "postgres")]
        return self.coord.as_deref().map(|c| c.replica.as_str());
        #[cfg(not(feature = "postgres"))]
        None
    }

    /// Takes a refresh lock, waiting at most `wait` for another replica to release it
    /// ([`StoreError::LockTimeout`] after that). Hold the guard across "read the stored token
    /// again, refresh if still needed, store the result": a replica that waited then finds the
    /// other's fresh token. A no-op on SQLite.
    pub async fn lock(
        &self,
        lock: RefreshLock<'_>,
        wait: Duration,
    ) -> Result<LockGuard, StoreError> {
        #[cfg(feature = "postgres")]
        if let Some(coord) = &self.coord {
            let started = tokio::time::Instant::now();
            let take = async {
                let mut tx = coord.pool.begin().await?;
                // The server bounds the wait itself (lock_timeout applies to advisory locks),
                // so the connection is never left blocked behind an abandoned request.
                let left = wait.saturating_sub(started.elapsed());
                let ms = left.as_millis().clamp(1, u128::from(u32::MAX));
                sqlx::query("SELECT set_config('lock_timeout', $1, true)")
                    .bind(format!("{ms}ms"))
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(lock.key())
                    .execute(&mut *tx)
                    .await?;
                Ok::<_, sqlx::Error>(tx)
            };
            // A backstop in case the server does not answer: the server's own bound comes first.
            return match tokio::time::timeout(wait + Duration::from_secs(2), take).await {
                Ok(Ok(tx)) => Ok(LockGuard { tx: Some(tx) }),
                Ok(Err(sqlx::Error::Database(e))) if e.code().as_deref() == Some("55P03") => {
                    Err(StoreError::LockTimeout)
                }
                Ok(Err(sqlx::Error::PoolTimedOut)) | Err(_) => Err(StoreError::LockTimeout),
                Ok(Err(e)) => Err(StoreError::Database(e)),
            };
        }
        let _ = (lock, wait);
        Ok(LockGuard::noop())
    }

    /// Tells the other replicas about `change` (`NOTIFY` on [`CHANGES_CHANNEL`]). A no-op on
    /// SQLite, and for [`Change::Resync`], which is never sent.
    pub async fn publish(&self, change: &Change) -> Result<(), StoreError> {
        #[cfg(feature = "postgres")]
        if let Some(coord) = &self.coord
            && *change != Change::Resync
        {
            let payload = serde_json::to_string(&OutgoingMessage {
                r: &coord.replica,
                c: change,
            })
            .map_err(|_| StoreError::Corrupt {
                what: "change message",
                value: String::new(),
            })?;
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(CHANGES_CHANNEL)
                .bind(payload)
                .execute(&coord.pool)
                .await?;
        }
        let _ = change;
        Ok(())
    }

    /// The changes other replicas publish (`None` on SQLite: there are no others).
    ///
    /// Waits (at most 10 s) for the listener's first connection, so that every change
    /// published after this returns is delivered. Delivery is immediate while the listener is
    /// connected; when its connection is lost it reconnects (backoff from
    /// [`LISTENER_BACKOFF_MIN`] doubling to [`LISTENER_BACKOFF_MAX`]) and then sends
    /// [`Change::Resync`]: every cache built from the store must be dropped, since changes
    /// published meanwhile are lost. The same when the first connection fails (then Resync
    /// follows the first success). The listener stops when the receiver is dropped.
    pub async fn subscribe(&self) -> Option<mpsc::Receiver<Change>> {
        #[cfg(feature = "postgres")]
        if let Some(coord) = &self.coord {
            let (tx, rx) = mpsc::channel(SUBSCRIBER_QUEUE);
            let url = secrecy::ExposeSecret::expose_secret(&coord.url).to_owned();
            let replica = coord.replica.clone();
            let first = tokio::time::timeout(Duration::from_secs(10), listen(&url))
                .await
                .unwrap_or_else(|_| Err(sqlx::Error::PoolTimedOut));
            let first = match first {
                Ok(listener) => Some(listener),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for other replicas' changes yet; retrying");
                    None
                }
            };
            tokio::spawn(follow(url, replica, first, tx));
            return Some(rx);
        }
        None
    }
}

#[cfg(feature = "postgres")]
async fn listen(url: &str) -> Result<sqlx::postgres::PgListener, sqlx::Error> {
    let mut listener = sqlx::postgres::PgListener::connect(url).await?;
    // This loop reconnects itself (and must know when it did, to send Resync).
    listener.eager_reconnect(false);
    listener.listen(CHANGES_CHANNEL).await?;
    Ok(listener)
}

/// The listener task: forward other replicas' changes; on a lost connection reconnect with
/// backoff, then send [`Change::Resync`].
#[cfg(feature = "postgres")]
async fn follow(
    url: String,
    replica: String,
    mut listener: Option<sqlx::postgres::PgListener>,
    tx: mpsc::Sender<Change>,
) {
    let mut backoff = LISTENER_BACKOFF_MIN;
    loop {
        let Some(active) = listener.as_mut() else {
            tokio::select! {
                () = tx.closed() => return,
                () = tokio::time::sleep(backoff) => {}
            }
            match listen(&url).await {
                Ok(l) => {
                    tracing::info!("listening for other replicas' changes again; dropping caches");
                    listener = Some(l);
                    backoff = LISTENER_BACKOFF_MIN;
                    if tx.send(Change::Resync).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "cannot listen for other replicas' changes");
                    backoff = (backoff * 2).min(LISTENER_BACKOFF_MAX);
                }
            }
            continue;
        };
        let received = tokio::select! {
            () = tx.closed() => return,
            r = active.try_recv() => r,
        };
        let notification = match received {
            Ok(Some(n)) => n,
            Ok(None) => {
                tracing::warn!("lost the connection listening for other replicas' changes");
                listener = None;
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "listening for other replicas' changes failed");
                listener = None;
                continue;
            }
        };
        let Some(change) = decode(notification.payload(), &replica) else {
            continue;
        };
        if tx.send(change).await.is_err() {
            return;
        }
    }
}

/// A notification payload as a change: `None` for this replica's own messages; a message
/// that does not parse (another version's) as [`Change::Resync`], since it may have been
/// anything.
#[cfg(feature = "postgres")]
fn decode(payload: &str, own_replica: &str) -> Option<Change> {
    let Ok(message) = serde_json::from_str::<IncomingMessage>(payload) else {
        tracing::warn!("unreadable change message; dropping caches");
        return Some(Change::Resync);
    };
    if message.r == own_replica {
        return None;
    }
    match serde_json::from_value::<Change>(message.c) {
        Ok(Change::Resync) | Err(_) => {
            tracing::warn!("unknown change message; dropping caches");
            Some(Change::Resync)
        }
        Ok(change) => Some(change),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_db::TestDb;

    #[test]
    fn lock_keys_are_stable_and_distinct() {
        let a = RefreshLock::Broker {
            user_id: "u1",
            server_key: "github_0123456789abcdef",
        };
        let digest = Sha256::digest(b"broker|u1|github_0123456789abcdef");
        let expected = i64::from_be_bytes(digest[..8].try_into().unwrap());
        assert_eq!(a.key(), expected);
        assert_eq!(a.key(), a.key());
        assert_ne!(
            a.key(),
            RefreshLock::Broker {
                user_id: "u2",
                server_key: "github_0123456789abcdef"
            }
            .key()
        );
        let digest = Sha256::digest(b"idp|u1");
        assert_eq!(
            RefreshLock::Idp { user_id: "u1" }.key(),
            i64::from_be_bytes(digest[..8].try_into().unwrap())
        );
    }

    #[cfg(feature = "postgres")]
    #[test]
    fn messages_round_trip_and_own_messages_are_dropped() {
        let change = Change::Credential {
            user_id: "u1".into(),
            server: "github".into(),
            server_key: "github_0123".into(),
            connected: false,
        };
        let payload = serde_json::to_string(&OutgoingMessage {
            r: "replica-a",
            c: &change,
        })
        .unwrap();
        assert_eq!(decode(&payload, "replica-b"), Some(change));
        assert_eq!(decode(&payload, "replica-a"), None);
        // Another version's message, or garbage: drop every cache.
        assert_eq!(
            decode(r#"{"r":"x","c":{"kind":"policy_changed"}}"#, "y"),
            Some(Change::Resync)
        );
        assert_eq!(decode("not json", "y"), Some(Change::Resync));
        // Resync is never accepted from the wire as such (it is a local signal), but means the same.
        assert_eq!(
            decode(r#"{"r":"x","c":{"kind":"resync"}}"#, "y"),
            Some(Change::Resync)
        );
        let family = serde_json::to_value(Change::OauthFamilyRevoked {
            family_id: "f".into(),
        })
        .unwrap();
        assert_eq!(
            family,
            serde_json::json!({"kind": "oauth_family_revoked", "family_id": "f"})
        );
    }

    #[tokio::test]
    async fn on_sqlite_locks_are_no_ops_and_there_is_nothing_to_subscribe_to() {
        let db = TestDb::sqlite();
        let store = db.open().await;
        let lock = RefreshLock::Idp { user_id: "u" };
        let first = store.lock(lock, Duration::from_secs(1)).await.unwrap();
        let second = store.lock(lock, Duration::from_millis(1)).await.unwrap();
        assert!(!first.in_database() && !second.in_database());
        assert_eq!(store.replica_id(), None);
        store.publish(&Change::OauthRevokedUnknown).await.unwrap();
        assert!(store.subscribe().await.is_none());
    }

    #[cfg(feature = "postgres")]
    mod postgres {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};

        use super::*;

        async fn two_replicas() -> (TestDb, Store, Store) {
            let db = TestDb::postgres().await;
            let a = db.open().await;
            let b = db.open().await;
            assert_ne!(a.replica_id(), b.replica_id());
            (db, a, b)
        }

        #[tokio::test]
        async fn two_stores_taking_the_same_lock_serialize_and_other_keys_do_not_wait() {
            let (_db, a, b) = two_replicas().await;
            let key = RefreshLock::Broker {
                user_id: "u1",
                server_key: "github_0123",
            };
            let held = a.lock(key, Duration::from_secs(5)).await.unwrap();
            assert!(held.in_database());

            // Another key, another user: no wait.
            let started = std::time::Instant::now();
            let other = b
                .lock(
                    RefreshLock::Broker {
                        user_id: "u2",
                        server_key: "github_0123",
                    },
                    Duration::from_secs(5),
                )
                .await
                .unwrap();
            let idp = b
                .lock(RefreshLock::Idp { user_id: "u1" }, Duration::from_secs(5))
                .await
                .unwrap();
            assert!(started.elapsed() < Duration::from_secs(2));
            drop((other, idp));

            // The same key from the other store waits until the first guard drops.
            let released = Arc::new(AtomicBool::new(false));
            let waiter = {
                let (b, released) = (b.clone(), released.clone());
                tokio::spawn(async move {
                    let guard = b.lock(key, Duration::from_secs(10)).await.unwrap();
                    // Taken only after the holder let go.
                    assert!(released.load(Ordering::SeqCst), "taken while held");
                    guard.release().await;
                })
            };
            tokio::time::sleep(Duration::from_millis(500)).await;
            assert!(!waiter.is_finished(), "the second store did not wait");
            released.store(true, Ordering::SeqCst);
            drop(held);
            tokio::time::timeout(Duration::from_secs(5), waiter)
                .await
                .expect("the second store got the lock after the first dropped it")
                .unwrap();
        }

        #[tokio::test]
        async fn the_wait_is_bounded_and_the_lock_is_free_afterwards() {
            let (_db, a, b) = two_replicas().await;
            let key = RefreshLock::Idp { user_id: "u1" };
            let held = a.lock(key, Duration::from_secs(5)).await.unwrap();
            let started = std::time::Instant::now();
            let err = b.lock(key, Duration::from_millis(300)).await.unwrap_err();
            assert!(matches!(err, StoreError::LockTimeout), "{err:?}");
            let waited = started.elapsed();
            assert!(
                waited >= Duration::from_millis(250) && waited < Duration::from_secs(2),
                "{waited:?}"
            );
            held.release().await;
            // The timed-out waiter left nothing behind.
            let again = b.lock(key, Duration::from_millis(500)).await.unwrap();
            again.release().await;
            let again = a.lock(key, Duration::from_millis(500)).await.unwrap();
            drop(again);
        }

        async fn next(rx: &mut mpsc::Receiver<Change>) -> Change {
            tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .expect("a change within 10 s")
                .expect("the listener is running")
        }

        #[tokio::test]
        async fn a_change_published_by_one_store_reaches_the_others_subscriber_only() {
            let (_db, a, b) = two_replicas().await;
            let mut from_a = a.subscribe().await.unwrap();
            let mut from_b = b.subscribe().await.unwrap();
            let change = Change::Credential {
                user_id: "u1".into(),
                server: "github".into(),
                server_key: "github_0123".into(),
                connected: false,
            };
            a.publish(&change).await.unwrap();
            assert_eq!(next(&mut from_b).await, change);
            b.publish(&Change::OauthFamilyRevoked {
                family_id: "fam".into(),
            })
            .await
            .unwrap();
            // A sees B's message, never its own (which was sent first).
            assert_eq!(
                next(&mut from_a).await,
                Change::OauthFamilyRevoked {
                    family_id: "fam".into()
                }
            );
            // Resync is a local signal: publishing it sends nothing.
            a.publish(&Change::Resync).await.unwrap();
            a.publish(&Change::OauthRevokedUnknown).await.unwrap();
            assert_eq!(next(&mut from_b).await, Change::OauthRevokedUnknown);
            assert!(from_a.try_recv().is_err());
        }

        #[tokio::test]
        async fn a_lost_listener_reconnects_and_says_resync() {
            let (db, a, b) = two_replicas().await;
            let mut changes = b.subscribe().await.unwrap();
            // Kill the listener's backend from another connection.
            let admin = sqlx::PgPool::connect(&db.any_url()).await.unwrap();
            let killed: Vec<(i32,)> = sqlx::query_as(
                "SELECT pid FROM pg_stat_activity \
                 WHERE datname = current_database() AND query LIKE 'LISTEN %' \
                   AND pid <> pg_backend_pid()",
            )
            .fetch_all(&admin)
            .await
            .unwrap();
            assert_eq!(killed.len(), 1, "one listener");
            sqlx::query("SELECT pg_terminate_backend($1)")
                .bind(killed[0].0)
                .execute(&admin)
                .await
                .unwrap();
            // Reconnected: everything cached must go, as messages may have been missed.
            assert_eq!(next(&mut changes).await, Change::Resync);
            // And it is listening again.
            let change = Change::OauthTokenRevoked {
                token_sha256: "ab".repeat(32),
            };
            a.publish(&change).await.unwrap();
            assert_eq!(next(&mut changes).await, change);
            admin.close().await;
        }
    }
}
