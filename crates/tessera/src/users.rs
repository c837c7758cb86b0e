//! Maps MCP identities (issuer, subject) to the store's users, once per process: the first call
//! of a user upserts their row (as a browser sign-in would), later calls are a map lookup.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use tessera_identity::{Identity, UserKey};
use tessera_store::{Role, Store, UserLogin};

pub(crate) struct UserDirectory {
    store: Store,
    users: RwLock<HashMap<UserKey, Arc<str>>>,
    /// The reverse, for events that name the store's user (finished connect flows).
    by_id: RwLock<HashMap<Arc<str>, UserKey>>,
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl UserDirectory {
    pub(crate) fn new(store: Store) -> Self {
        Self {
            store,
            users: RwLock::new(HashMap::new()),
            by_id: RwLock::new(HashMap::new()),
        }
    }

    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    /// The store's user id, if this identity has been seen by this process.
    pub(crate) fn known(&self, who: &Identity) -> Option<Arc<str>> {
        read(&self.users).get(&who.user).cloned()
    }

    /// The store's user id, created on first sight. `None` when the store fails.
    pub(crate) async fn user_id(&self, who: &Identity) -> Option<Arc<str>> {
        if let Some(id) = self.known(who) {
            return Some(id);
        }
        let user = self
            .store
            .upsert_user(&UserLogin {
                issuer: &who.user.issuer,
                subject: &who.user.subject,
                email: who.email.as_deref(),
                display_name: Some(&who.display_name),
                role_if_new: Role::User,
            })
            .await
            .ok()?;
        let id: Arc<str> = Arc::from(user.id);
        write(&self.users).insert(who.user.clone(), id.clone());
        write(&self.by_id).insert(id.clone(), who.user.clone());
        Some(id)
    }

    /// The MCP identity of a store user seen on the MCP path in this process, if any.
    pub(crate) fn user_key(&self, user_id: &str) -> Option<UserKey> {
        read(&self.by_id).get(user_id).cloned()
    }
}
