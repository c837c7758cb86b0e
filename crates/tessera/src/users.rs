//! Maps MCP identities (issuer, subject) to the store's users, once per process: the first call
//! of a user upserts their row (as a browser sign-in would), later calls are a map lookup.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use tessera_broker::BrokeredServer;
use tessera_identity::{Identity, UserKey};
use tessera_store::{Role, Store, UserLogin};

/// A user's brokered personal servers by name.
type Personal = HashMap<String, BrokeredServer>;

pub(crate) struct UserDirectory {
    store: Store,
    users: RwLock<HashMap<UserKey, Arc<str>>>,
    /// The reverse, for events that name the store's user (finished connect flows).
    by_id: RwLock<HashMap<Arc<str>, UserKey>>,
    /// store user id → their brokered personal servers, replaced whenever the gateway loads
    /// the user's settings ([`crate::settings`]), so the broker finds one without the store.
    personal: RwLock<HashMap<Arc<str>, Personal>>,
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
            personal: RwLock::new(HashMap::new()),
        }
    }

    /// Replaces `user_id`'s brokered personal servers (and remembers their identity, so the
    /// broker knows them without an upsert).
    pub(crate) fn set_personal(&self, user_id: &str, key: &UserKey, servers: Personal) {
        let id: Arc<str> = Arc::from(user_id);
        write(&self.users).insert(key.clone(), id.clone());
        write(&self.by_id).insert(id.clone(), key.clone());
        let mut personal = write(&self.personal);
        if servers.is_empty() {
            personal.remove(user_id);
        } else {
            personal.insert(id, servers);
        }
    }

    /// `f` of `user_id`'s brokered personal server `name`, if they have one (a read lock and
    /// two map lookups: no store).
    pub(crate) fn with_personal<T>(
        &self,
        user_id: &str,
        name: &str,
        f: impl FnOnce(&BrokeredServer) -> T,
    ) -> Option<T> {
        read(&self.personal)
            .get(user_id)
            .and_then(|servers| servers.get(name))
            .map(f)
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
