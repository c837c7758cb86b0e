//! MCP sessions that survive a request landing on another replica.
//!
//! With a [`SessionSealer`] (the binary gives one when a sealing key is configured), the session
//! id of a signed-in user's streamable-HTTP session carries its own sealed state:
//! `<random id>.<sealed {issuer, subject, initialize params}>`. A replica that does not know the
//! id opens the state, checks that the caller is the user it names (the same issuer and
//! subject, with a token valid *now*), and re-creates the session under the same id, negotiated
//! from the same `initialize` params — the client notices nothing. No shared table, no sticky
//! routing.
//!
//! What does not move with it: calls in flight on the old replica, its open server-to-client
//! stream (the client re-opens `GET /mcp`, now here), resource subscriptions and the logging
//! level set on the old replica, and upstream requests waiting for the client's answer there.
//! Upstream sessions are opened afresh on first use, as for any new client session.
//!
//! Sealing (AES-256-GCM, record-bound) is the store's; this module only sees the trait.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::caller::Caller;

/// Longest session id handed out; a larger sealed state (a huge `initialize`) gets a plain id,
/// which only its own replica knows.
pub const MAX_SESSION_ID: usize = 4096;

/// Seals and opens session state (implemented by the binary over the store's keyring).
pub trait SessionSealer: Send + Sync {
    /// The sealed form of `plaintext`, URL-safe visible ASCII; `None` if sealing failed.
    fn seal(&self, plaintext: &[u8]) -> Option<String>;
    /// The plaintext of a value [`SessionSealer::seal`] made; `None` if it does not open.
    fn open(&self, sealed: &str) -> Option<Vec<u8>>;
}

#[derive(Serialize, Deserialize)]
struct SealedState<'a> {
    /// Format version.
    v: u8,
    iss: String,
    sub: String,
    #[serde(borrow)]
    params: &'a RawValue,
}

/// The id for a new session of `caller` initialised with `params`: `<random>.<sealed state>`,
/// or just `<random>` when the caller is anonymous or the state does not fit.
pub(crate) fn session_id(
    random: String,
    sealer: Option<&dyn SessionSealer>,
    caller: &Caller,
    params: &str,
) -> String {
    let (Some(sealer), Some(identity)) = (sealer, caller.identity()) else {
        return random;
    };
    let Ok(params) = serde_json::from_str::<&RawValue>(params) else {
        return random;
    };
    let state = SealedState {
        v: 1,
        iss: identity.user.issuer.clone(),
        sub: identity.user.subject.clone(),
        params,
    };
    let Ok(plain) = serde_json::to_vec(&state) else {
        return random;
    };
    match sealer.seal(&plain) {
        Some(sealed) if random.len() + 1 + sealed.len() <= MAX_SESSION_ID => {
            format!("{random}.{sealed}")
        }
        _ => random,
    }
}

/// The `initialize` params of session `id` if it carries sealed state that opens and names
/// `caller`; `None` otherwise (an unknown session, answered 404 as before).
pub(crate) fn resumable_params(
    id: &str,
    sealer: Option<&dyn SessionSealer>,
    caller: &Caller,
) -> Option<String> {
    let sealer = sealer?;
    let identity = caller.identity()?;
    let (_, sealed) = id.split_once('.')?;
    let plain = sealer.open(sealed)?;
    let state: SealedState<'_> = serde_json::from_slice(&plain).ok()?;
    (state.v == 1 && state.iss == identity.user.issuer && state.sub == identity.user.subject)
        .then(|| state.params.get().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use tessera_identity::{Identity, Role, TokenKind, UserKey};

    /// A test sealer: reversible, and refuses anything it did not make.
    struct Rot;
    impl SessionSealer for Rot {
        fn seal(&self, plaintext: &[u8]) -> Option<String> {
            Some(format!("s{}", hex(plaintext)))
        }
        fn open(&self, sealed: &str) -> Option<Vec<u8>> {
            let h = sealed.strip_prefix('s')?;
            (0..h.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(h.get(i..i + 2)?, 16).ok())
                .collect()
        }
    }
    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    fn user(sub: &str) -> Caller {
        Caller::User(Arc::new(Identity {
            user: UserKey {
                issuer: "https://idp".into(),
                subject: sub.into(),
            },
            display_name: sub.into(),
            email: None,
            role: Role::User,
            token_kind: TokenKind::Jwt,
            client_id: None,
            scopes: vec![],
            groups: vec![],
            expires_at: None,
            token: secrecy::SecretString::from("t"),
            agent: None,
        }))
    }

    #[test]
    fn a_sealed_id_resumes_for_its_user_only() {
        let params =
            r#"{"protocolVersion":"2025-06-18","capabilities":{"x":1},"clientInfo":{"name":"c"}}"#;
        let alice = user("alice");
        let id = session_id("abc".into(), Some(&Rot), &alice, params);
        assert!(id.starts_with("abc.s"), "{id}");
        assert_eq!(
            resumable_params(&id, Some(&Rot), &alice).as_deref(),
            Some(params)
        );
        assert_eq!(resumable_params(&id, Some(&Rot), &user("bob")), None);
        assert_eq!(resumable_params(&id, Some(&Rot), &Caller::Anonymous), None);
        assert_eq!(resumable_params(&id, None, &alice), None);
        assert_eq!(resumable_params("abc.sZZ", Some(&Rot), &alice), None);
        assert_eq!(resumable_params("abc", Some(&Rot), &alice), None);
    }

    #[test]
    fn anonymous_or_unsealed_sessions_get_plain_ids() {
        assert_eq!(
            session_id("abc".into(), Some(&Rot), &Caller::Anonymous, "{}"),
            "abc"
        );
        assert_eq!(session_id("abc".into(), None, &user("alice"), "{}"), "abc");
        let huge = format!("{{\"pad\":\"{}\"}}", "x".repeat(MAX_SESSION_ID));
        assert_eq!(
            session_id("abc".into(), Some(&Rot), &user("alice"), &huge),
            "abc"
        );
    }
}
