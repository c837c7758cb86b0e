//! Sign-ins in progress: what `/auth/login` started and `/auth/callback` must finish, keyed by
//! the random id in the browser's login cookie. In memory, single-use, 10-minute expiry, bounded.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use openidconnect::{Nonce, PkceCodeVerifier};

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

#[derive(Default)]
pub struct PendingLogins {
    map: Mutex<HashMap<String, PendingLogin>>,
}

impl PendingLogins {
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

    /// Drops every expired sign-in. Returns how many.
    pub fn purge_expired(&self) -> usize {
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
