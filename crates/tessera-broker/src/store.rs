//! The storage seam: the resolver reads and writes opened credentials through [`CredentialStore`];
//! the implementation (tessera-store) seals them. [`MemoryCredentialStore`] is for tests.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use secrecy::SecretString;

/// How a credential was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialSource {
    Exchange,
    Obo,
    Connect,
    Refresh,
}

impl CredentialSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Exchange => "exchange",
            Self::Obo => "obo",
            Self::Connect => "connect",
            Self::Refresh => "refresh",
        }
    }
}

/// An opened per-user credential for one server. `Debug` redacts the tokens.
#[derive(Debug, Clone)]
pub struct StoredCredential {
    pub access_token: SecretString,
    pub refresh_token: Option<SecretString>,
    pub token_type: String,
    pub expires_at: Option<SystemTime>,
    pub scopes: Vec<String>,
    pub source: CredentialSource,
    pub obtained_at: SystemTime,
    /// The resource (RFC 8707) or audience the token was issued for, if known.
    pub audience: Option<String>,
}

/// A storage failure, reduced to a coarse reason.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("credential store: {0}")]
pub struct StoreError(pub &'static str);

/// Why a [`CredentialStore::lock`] was not taken.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum LockError {
    /// Another replica held it for longer than the wait.
    #[error("timed out waiting for another replica's refresh")]
    Timeout,
    /// The store failed.
    #[error(transparent)]
    Store(StoreError),
}

/// A held cross-replica lock on one (user, server): released when dropped. Empty where the store
/// needs none (one process owns it).
#[derive(Default)]
#[must_use = "the lock is released when dropped"]
pub struct CredentialLock(Option<Box<dyn std::any::Any + Send>>);

impl CredentialLock {
    /// A lock held by `guard` until it is dropped.
    pub fn held(guard: impl std::any::Any + Send) -> Self {
        Self(Some(Box::new(guard)))
    }

    /// Whether another process could have written while this one waited for the lock (then
    /// the stored credential must be read again).
    pub fn is_shared(&self) -> bool {
        self.0.is_some()
    }
}

impl std::fmt::Debug for CredentialLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("CredentialLock")
            .field(&self.is_shared())
            .finish()
    }
}

/// Where opened credentials are kept, keyed by (user id, server key).
pub trait CredentialStore: Send + Sync + 'static {
    fn load<'a>(
        &'a self,
        user: &'a str,
        server_key: &'a str,
    ) -> BoxFuture<'a, Result<Option<StoredCredential>, StoreError>>;

    fn save<'a>(
        &'a self,
        user: &'a str,
        server_key: &'a str,
        credential: &'a StoredCredential,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Serializes refresh and exchange of one (user, server) across every process sharing the
    /// store (providers that rotate refresh tokens revoke the family when one is used twice),
    /// waiting at most `wait`. The resolver holds it across "read again, refresh if still
    /// needed, save". The default is a no-op, for a store only one process uses.
    fn lock<'a>(
        &'a self,
        user: &'a str,
        server_key: &'a str,
        wait: Duration,
    ) -> BoxFuture<'a, Result<CredentialLock, LockError>> {
        let _ = (user, server_key, wait);
        Box::pin(async { Ok(CredentialLock::default()) })
    }
}

/// An in-memory [`CredentialStore`] that counts its calls (tests, examples).
#[derive(Debug, Default)]
pub struct MemoryCredentialStore {
    records: Mutex<HashMap<(String, String), StoredCredential>>,
    loads: AtomicUsize,
    saves: AtomicUsize,
    locks: AtomicUsize,
    fail: std::sync::atomic::AtomicBool,
}

impl MemoryCredentialStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of `load` calls so far.
    pub fn loads(&self) -> usize {
        self.loads.load(Ordering::SeqCst)
    }

    /// Number of `save` calls so far.
    pub fn saves(&self) -> usize {
        self.saves.load(Ordering::SeqCst)
    }

    /// Number of `lock` calls so far (the lock itself is a no-op).
    pub fn locks(&self) -> usize {
        self.locks.load(Ordering::SeqCst)
    }

    /// Make every later call fail (tests of the failure path).
    pub fn set_failing(&self, fail: bool) {
        self.fail.store(fail, Ordering::SeqCst);
    }

    /// Put a record directly (test set-up).
    pub fn insert(&self, user: &str, server_key: &str, credential: StoredCredential) {
        self.lock()
            .insert((user.to_owned(), server_key.to_owned()), credential);
    }

    /// A copy of a record (test assertions).
    pub fn get(&self, user: &str, server_key: &str) -> Option<StoredCredential> {
        self.lock()
            .get(&(user.to_owned(), server_key.to_owned()))
            .cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), StoredCredential>> {
        self.records
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl CredentialStore for MemoryCredentialStore {
    fn load<'a>(
        &'a self,
        user: &'a str,
        server_key: &'a str,
    ) -> BoxFuture<'a, Result<Option<StoredCredential>, StoreError>> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        let result = if self.fail.load(Ordering::SeqCst) {
            Err(StoreError("unavailable"))
        } else {
            Ok(self.get(user, server_key))
        };
        Box::pin(async move { result })
    }

    fn save<'a>(
        &'a self,
        user: &'a str,
        server_key: &'a str,
        credential: &'a StoredCredential,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.saves.fetch_add(1, Ordering::SeqCst);
        let result = if self.fail.load(Ordering::SeqCst) {
            Err(StoreError("unavailable"))
        } else {
            self.insert(user, server_key, credential.clone());
            Ok(())
        };
        Box::pin(async move { result })
    }

    fn lock<'a>(
        &'a self,
        _user: &'a str,
        _server_key: &'a str,
        _wait: Duration,
    ) -> BoxFuture<'a, Result<CredentialLock, LockError>> {
        self.locks.fetch_add(1, Ordering::SeqCst);
        Box::pin(async { Ok(CredentialLock::default()) })
    }
}
