//! Sign-ins in progress: what `/auth/login` started and `/auth/callback` must finish.
//!
//! With a keyring (a sealing key is configured) the sign-in travels *in* the browser's login
//! cookie, sealed ([`crate::sealed_state`]): the callback may reach any replica. Single use
//! within a replica is kept by remembering the ids taken (the provider's one-time code stops a
//! replay on another). Without a keyring, the sign-in stays in this process's memory, keyed by
//! the random id in the cookie. Either way: 10-minute expiry, bounded.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openidconnect::{CsrfToken, Nonce, PkceCodeVerifier};
use serde::{Deserialize, Serialize};
use tessera_store::{Keyring, UnixTime, now_unix};

use crate::sealed_state;

/// How long a sign-in may take between `/auth/login` and `/auth/callback`.
pub const LOGIN_TTL: Duration = Duration::from_secs(600);
/// At most this many sign-ins in progress at once (further logins get 503 until some finish or
/// expire): a flood of `/auth/login` requests cannot exhaust memory.
const MAX_PENDING: usize = 10_000;

/// One sign-in in progress.
pub struct PendingLogin {
    pub state: String,
    pub nonce: Nonce,
    pub pkce_verifier: PkceCodeVerifier,
    pub return_to: String,
    created: Instant,
}

impl PendingLogin {
    pub fn new(
        state: String,
        nonce: Nonce,
        pkce_verifier: PkceCodeVerifier,
        return_to: String,
    ) -> Self {
        PendingLogin {
            state,
            nonce,
            pkce_verifier,
            return_to,
            created: Instant::now(),
        }
    }

    fn expired(&self, now: Instant) -> bool {
        now.duration_since(self.created) >= LOGIN_TTL
    }
}

/// The table is full.
#[derive(Debug)]
pub struct TooManyLogins;

/// A sign-in as sealed into the login cookie.
#[derive(Serialize, Deserialize)]
struct SealedLogin {
    id: String,
    state: String,
    nonce: String,
    verifier: String,
    return_to: String,
    created: UnixTime,
}

const PURPOSE: &str = "pending-login";

pub struct PendingLogins {
    map: Mutex<HashMap<String, PendingLogin>>,
    keyring: Option<Arc<Keyring>>,
    /// Ids of sealed sign-ins completed here (single use), until they would have expired.
    taken: sealed_state::Spent,
}

impl Default for PendingLogins {
    fn default() -> Self {
        Self::new(None)
    }
}

impl PendingLogins {
    /// Sign-ins sealed into their cookies with `keyring`, or kept in memory without one.
    pub fn new(keyring: Option<Arc<Keyring>>) -> Self {
        PendingLogins {
            map: Mutex::new(HashMap::new()),
            keyring,
            taken: sealed_state::Spent::new(LOGIN_TTL),
        }
    }

    /// Records a sign-in; returns the login cookie's value (the sealed sign-in, or a random id).
    pub fn start(&self, login: PendingLogin) -> Result<String, TooManyLogins> {
        let id = CsrfToken::new_random().secret().clone();
        if let Some(keyring) = &self.keyring {
            let sealed = SealedLogin {
                id,
                state: login.state,
                nonce: login.nonce.secret().clone(),
                verifier: login.pkce_verifier.secret().clone(),
                return_to: login.return_to,
                created: now_unix(),
            };
            return sealed_state::seal(keyring, PURPOSE, &sealed).ok_or(TooManyLogins);
        }
        self.insert(id.clone(), login)?;
        Ok(id)
    }

    /// The sign-in a login cookie holds or names, once.
    pub fn finish(&self, cookie: &str) -> Option<PendingLogin> {
        if !sealed_state::is_sealed(cookie) {
            return self.take(cookie);
        }
        let keyring = self.keyring.as_ref()?;
        let s: SealedLogin = sealed_state::open(keyring, PURPOSE, cookie)?;
        let age = sealed_state::age_within(s.created, LOGIN_TTL)?;
        if !self.taken.first_use(s.id) {
            return None;
        }
        Some(PendingLogin {
            state: s.state,
            nonce: Nonce::new(s.nonce),
            pkce_verifier: PkceCodeVerifier::new(s.verifier),
            return_to: s.return_to,
            created: Instant::now() - age,
        })
    }

    pub fn insert(&self, id: String, login: PendingLogin) -> Result<(), TooManyLogins> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_PENDING {
            let now = Instant::now();
            map.retain(|_, l| !l.expired(now));
            if map.len() >= MAX_PENDING {
                return Err(TooManyLogins);
            }
        }
        map.insert(id, login);
        Ok(())
    }

    /// Removes and returns the sign-in for `id` if it exists and has not expired: a callback can
    /// be completed once.
    pub fn take(&self, id: &str) -> Option<PendingLogin> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(id).filter(|l| !l.expired(Instant::now()))
    }

    /// Drops every expired sign-in (and forgets taken sealed ones past their expiry). Returns
    /// how many sign-ins.
    pub fn purge_expired(&self) -> usize {
        self.taken.purge();
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let before = map.len();
        let now = Instant::now();
        map.retain(|_, l| !l.expired(now));
        before - map.len()
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn expired_login() -> PendingLogin {
        let mut l = login();
        l.created = Instant::now() - LOGIN_TTL - Duration::from_secs(1);
        l
    }

    fn login() -> PendingLogin {
        PendingLogin::new(
            "s".into(),
            Nonce::new("n".into()),
            PkceCodeVerifier::new("v".repeat(43)),
            "/".into(),
        )
    }

    #[test]
    fn a_sealed_login_opens_on_another_instance_once_each_and_not_without_the_key() {
        let key = || tessera_store::SealingKey::from_bytes(&[5u8; 32]).unwrap();
        let ring = Arc::new(Keyring::new(key(), vec![]).unwrap());
        let a = PendingLogins::new(Some(ring.clone()));
        let b = PendingLogins::new(Some(ring));
        let cookie = a.start(login()).unwrap();
        assert!(sealed_state::is_sealed(&cookie));
        assert!(
            !cookie.contains(&"v".repeat(43)),
            "the verifier is not readable"
        );
        let got = b.finish(&cookie).expect("another replica opens it");
        assert_eq!(got.state, "s");
        assert_eq!(got.pkce_verifier.secret(), &"v".repeat(43));
        assert!(b.finish(&cookie).is_none(), "single use");
        assert!(PendingLogins::new(None).finish(&cookie).is_none());
        let other = Arc::new(
            Keyring::new(
                tessera_store::SealingKey::from_bytes(&[6u8; 32]).unwrap(),
                vec![],
            )
            .unwrap(),
        );
        assert!(PendingLogins::new(Some(other)).finish(&cookie).is_none());
    }

    #[test]
    fn a_login_is_taken_once() {
        let p = PendingLogins::default();
        p.insert("id".into(), login()).unwrap();
        assert!(p.take("id").is_some());
        assert!(p.take("id").is_none());
    }

    #[test]
    fn an_expired_login_is_not_returned() {
        let p = PendingLogins::default();
        let mut l = login();
        l.created = Instant::now() - LOGIN_TTL - Duration::from_secs(1);
        p.insert("id".into(), l).unwrap();
        assert!(p.take("id").is_none());
    }

    #[test]
    fn purge_drops_only_expired_logins() {
        let p = PendingLogins::default();
        let mut old = login();
        old.created = Instant::now() - LOGIN_TTL - Duration::from_secs(1);
        p.insert("old".into(), old).unwrap();
        p.insert("new".into(), login()).unwrap();
        assert_eq!(p.purge_expired(), 1);
        assert_eq!(p.purge_expired(), 0);
        assert!(p.take("new").is_some());
    }
}
