//! Short-lived state that travels with the browser instead of living in one replica's memory
//! (a sign-in in progress, a consent page), sealed with the store's keyring so any replica can
//! open it and nobody can read or forge it. Record-bound: the associated data names the
//! purpose, so one kind of state never opens as another.
//!
//! Sealed values are prefixed `s.` so they cannot be mistaken for the random ids used when no
//! keyring is configured (then the state stays in memory, as one replica needs).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;
use tessera_store::{Aad, Keyring, UnixTime, now_unix};

/// At most this many spent ids are remembered (older ones go first).
const MAX_SPENT: usize = 10_000;

const PREFIX: &str = "s.";

/// `value` as JSON, sealed for `purpose`; `None` if sealing failed.
pub(crate) fn seal<T: Serialize>(
    keyring: &Keyring,
    purpose: &'static str,
    value: &T,
) -> Option<String> {
    let plain = serde_json::to_vec(value).ok()?;
    let sealed = keyring.seal(&plain, &Aad::new(purpose)).ok()?;
    Some(format!("{PREFIX}{sealed}"))
}

/// Whether `text` is a sealed value (rather than a random id).
pub(crate) fn is_sealed(text: &str) -> bool {
    text.starts_with(PREFIX)
}

/// The value sealed in `text` for `purpose`; `None` if it does not open or parse.
pub(crate) fn open<T: DeserializeOwned>(
    keyring: &Keyring,
    purpose: &'static str,
    text: &str,
) -> Option<T> {
    let sealed = text.strip_prefix(PREFIX)?;
    let plain = keyring.open(sealed, &Aad::new(purpose)).ok()?;
    serde_json::from_slice(secrecy::ExposeSecret::expose_secret(&plain)).ok()
}

/// How old a value sealed at `created` is, if younger than `ttl`.
pub(crate) fn age_within(created: UnixTime, ttl: Duration) -> Option<Duration> {
    let age = Duration::from_secs(u64::try_from(now_unix().saturating_sub(created)).ok()?);
    (age < ttl).then_some(age)
}

/// The ids of sealed values already used here, for `ttl` (after which the values themselves
/// no longer open): single use within one replica.
pub(crate) struct Spent {
    ttl: Duration,
    ids: Mutex<HashMap<String, Instant>>,
}

impl Spent {
    pub(crate) fn new(ttl: Duration) -> Self {
        Spent {
            ttl,
            ids: Mutex::new(HashMap::new()),
        }
    }

    /// Whether this is the first use of `id` (and records it).
    pub(crate) fn first_use(&self, id: String) -> bool {
        let mut ids = self.ids.lock().unwrap_or_else(|p| p.into_inner());
        if ids.len() >= MAX_SPENT {
            ids.retain(|_, at| at.elapsed() < self.ttl);
        }
        ids.insert(id, Instant::now()).is_none()
    }

    /// Forgets ids older than the ttl.
    pub(crate) fn purge(&self) {
        self.ids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, at| at.elapsed() < self.ttl);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_store::SealingKey;

    #[test]
    fn sealed_state_opens_only_for_its_purpose_and_key() {
        let ring = |b| Keyring::new(SealingKey::from_bytes(&[b; 32]).unwrap(), vec![]).unwrap();
        let a = ring(3);
        let text = seal(&a, "login", &("x".to_string(), 5u32)).unwrap();
        assert!(is_sealed(&text));
        assert!(!text.contains('x') || !text.contains("\"x\""));
        assert_eq!(
            open::<(String, u32)>(&a, "login", &text),
            Some(("x".into(), 5))
        );
        assert_eq!(open::<(String, u32)>(&a, "consent", &text), None);
        assert_eq!(open::<(String, u32)>(&ring(4), "login", &text), None);
        assert_eq!(open::<(String, u32)>(&a, "login", "random-id"), None);
    }
}
