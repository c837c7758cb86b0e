//! Tessera broker: obtains a credential that belongs to one user for one upstream server.
//!
//! - [`TokenExchanger`] speaks RFC 8693 token exchange and Entra on-behalf-of to a token endpoint.
//! - [`Resolver`] answers "which header does this user send to this server": an in-memory cache of
//!   opened credentials keyed by (user id, server key), then the [`CredentialStore`], then one
//!   exchange per (user, server) at a time (single flight), never a shared fallback. Across
//!   replicas sharing a PostgreSQL store the refresh or exchange itself runs under the store's
//!   lock on (user, server) ([`CredentialStore::lock`]): a replica that waited reads the store
//!   again and uses the other's result.
//! - [`StoreCredentials`] is the [`CredentialStore`] over `tessera_store::Store` (sealed at rest).
//! - [`Auditor`] writes a secret-free activity record per acquisition, refresh and failure through
//!   a bounded queue that drops (and counts) rather than block the caller.
//!
//! The broker never names a cipher: the store behind [`CredentialStore`] seals and opens records.

#![deny(clippy::unwrap_used, clippy::expect_used)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod audit;
mod connector;
mod discovery;
mod elicitation;
mod error;
mod exchange;
mod metrics;
mod policy;
mod resolver;
mod store;
mod store_binding;
mod token;

pub use audit::{ActivityAction, ActivityMethod, ActivityOutcome, Auditor, DEFAULT_AUDIT_QUEUE};
pub use connector::{
    CALLBACK_ERROR_CODES, CONNECT_EVENTS_CAPACITY, CONNECT_FLOW_TTL, ConnectDone, ConnectEvent,
    ConnectOutcome, Connector, ConnectorBuilder, Disconnected, callback_error_code,
    revocation_code,
};
pub use discovery::{Discovery, Endpoints};
pub use elicitation::{ELICITATION_TTL, Elicitations, MAX_ELICITATIONS};
pub use error::{BrokerError, OAuthErrorCode};
pub use exchange::{IssuedToken, TokenExchanger};
pub use policy::{AllowAll, ConfigPolicy, Policy};
pub use resolver::{
    BrokeredServer, DEFAULT_ACQUIRE_TIMEOUT, DEFAULT_CACHE_CAPACITY, EXPIRY_SKEW, Requester,
    ResolvedCredential, Resolver, ResolverBuilder, SubjectTokenError, SubjectTokenSource,
};
pub use store::{
    CredentialLock, CredentialSource, CredentialStore, LockError, MemoryCredentialStore,
    StoreError, StoredCredential,
};
pub use store_binding::StoreCredentials;
pub use token::{
    CLIENT_ASSERTION_TTL, DEFAULT_EXCHANGE_TIMEOUT, MAX_RESPONSE_BYTES, client_assertion,
};

use sha2::{Digest, Sha256};

/// The key a server's credentials are stored under: `name + "_" + first 16 hex digits of
/// SHA-256("name|url")`, as the reference computes it.
pub fn server_key(name: &str, url: &str) -> String {
    let digest = Sha256::digest(format!("{name}|{url}").as_bytes());
    let mut key = String::with_capacity(name.len() + 17);
    key.push_str(name);
    key.push('_');
    for byte in &digest[..8] {
        key.push_str(&format!("{byte:02x}"));
    }
    key
}

/// The key a personal server's credentials are stored under: [`server_key`] of the name and
/// `"<url>|user_server|<id>"`, where `id` is its row in `user_servers` — unique per server, so
/// it cannot equal a configured server's key or another user's, and it changes with the URL
/// (a credential is never sent to another address than the one it was obtained for).
pub fn personal_server_key(name: &str, url: &str, id: &str) -> String {
    server_key(name, &format!("{url}|user_server|{id}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_key_is_name_and_sixteen_hex_of_sha256() {
        let key = server_key("github", "https://api.example.com/mcp");
        let (name, hex) = key.split_once('_').unwrap();
        assert_eq!(name, "github");
        assert_eq!(hex.len(), 16);
        let digest = Sha256::digest(b"github|https://api.example.com/mcp");
        let full: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, &full[..16]);
        assert_ne!(key, server_key("github", "https://other.example.com/mcp"));
    }

    #[test]
    fn personal_keys_differ_per_row_and_from_configured_ones() {
        let url = "https://api.example.com/mcp";
        let a = personal_server_key("github", url, "row-a");
        let b = personal_server_key("github", url, "row-b");
        assert_ne!(a, b);
        assert_ne!(a, server_key("github", url));
        assert!(a.starts_with("github_"));
        assert_ne!(
            a,
            personal_server_key("github", "https://x.example.com/mcp", "row-a")
        );
    }
}
