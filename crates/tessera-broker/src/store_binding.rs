//! [`StoreCredentials`]: the [`CredentialStore`] over `tessera_store::Store`, which seals every
//! token at rest (AAD bound to user and server key). The broker never names a cipher.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use tessera_store::{
    CredentialRecord, OpenedCredential, RefreshLock, Store, StoreError as DbError, UnixTime,
};

use crate::store::{
    CredentialLock, CredentialSource, CredentialStore, LockError, StoreError, StoredCredential,
};

/// Credentials kept in the sealed `credentials` table of a [`Store`] (which must have a keyring).
#[derive(Debug, Clone)]
pub struct StoreCredentials {
    store: Store,
}

impl StoreCredentials {
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    /// The underlying store.
    pub fn store(&self) -> &Store {
        &self.store
    }
}

fn to_store_source(source: CredentialSource) -> tessera_store::CredentialSource {
    match source {
        CredentialSource::Exchange => tessera_store::CredentialSource::Exchange,
        CredentialSource::Obo => tessera_store::CredentialSource::Obo,
        CredentialSource::Connect => tessera_store::CredentialSource::Connect,
        CredentialSource::Refresh => tessera_store::CredentialSource::Refresh,
    }
}

fn from_store_source(source: tessera_store::CredentialSource) -> CredentialSource {
    match source {
        tessera_store::CredentialSource::Exchange => CredentialSource::Exchange,
        tessera_store::CredentialSource::Obo => CredentialSource::Obo,
        tessera_store::CredentialSource::Connect => CredentialSource::Connect,
        tessera_store::CredentialSource::Refresh => CredentialSource::Refresh,
    }
}

pub(crate) fn to_unix(at: SystemTime) -> UnixTime {
    match at.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(_) => 0,
    }
}

fn from_unix(at: UnixTime) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(u64::try_from(at).unwrap_or(0))
}

/// A coarse, secret-free reason (the store's errors may name a user id or a path; drop them).
fn coarse(e: &DbError) -> StoreError {
    StoreError(match e {
        DbError::SealingDisabled => "sealing disabled",
        DbError::Seal(_) => "unreadable record",
        DbError::Corrupt { .. } => "corrupt record",
        DbError::UserNotFound(_) => "unknown user",
        DbError::InvalidScope(_) => "invalid scope",
        _ => "unavailable",
    })
}

fn opened(c: OpenedCredential) -> StoredCredential {
    StoredCredential {
        access_token: c.access_token,
        refresh_token: c.refresh_token,
        token_type: c.token_type,
        expires_at: c.expires_at.map(from_unix),
        scopes: c.scopes,
        source: from_store_source(c.source),
        obtained_at: from_unix(c.updated_at),
        audience: c.audience,
    }
}

impl CredentialStore for StoreCredentials {
    fn load<'a>(
        &'a self,
        user: &'a str,
        server_key: &'a str,
    ) -> BoxFuture<'a, Result<Option<StoredCredential>, StoreError>> {
        Box::pin(async move {
            match self.store.get_credential(user, server_key).await {
                Ok(found) => Ok(found.map(opened)),
                Err(e) => {
                    tracing::warn!(reason = coarse(&e).0, "credential load failed");
                    Err(coarse(&e))
                }
            }
        })
    }

    fn save<'a>(
        &'a self,
        user: &'a str,
        server_key: &'a str,
        credential: &'a StoredCredential,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let record = CredentialRecord {
                user_id: user.to_owned(),
                server_key: server_key.to_owned(),
                access_token: credential.access_token.clone(),
                refresh_token: credential.refresh_token.clone(),
                expires_at: credential.expires_at.map(to_unix),
                scopes: credential.scopes.clone(),
                token_type: credential.token_type.clone(),
                source: to_store_source(credential.source),
                audience: credential.audience.clone(),
            };
            self.store.put_credential(&record).await.map_err(|e| {
                tracing::warn!(reason = coarse(&e).0, "credential save failed");
                coarse(&e)
            })
        })
    }

    /// PostgreSQL: an advisory lock on (user, server) held in an open transaction of the
    /// store's coordination pool; SQLite: a no-op.
    fn lock<'a>(
        &'a self,
        user: &'a str,
        server_key: &'a str,
        wait: Duration,
    ) -> BoxFuture<'a, Result<CredentialLock, LockError>> {
        Box::pin(async move {
            let lock = RefreshLock::Broker {
                user_id: user,
                server_key,
            };
            match self.store.lock(lock, wait).await {
                Ok(guard) if guard.in_database() => Ok(CredentialLock::held(guard)),
                Ok(_) => Ok(CredentialLock::default()),
                Err(DbError::LockTimeout) => Err(LockError::Timeout),
                Err(e) => {
                    tracing::warn!(reason = coarse(&e).0, "credential lock failed");
                    Err(LockError::Store(coarse(&e)))
                }
            }
        })
    }
}
