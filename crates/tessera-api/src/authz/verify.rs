//! Access tokens of Tessera's authorization server, as presented on `/mcp`.
//!
//! A check answers from an in-memory cache (keyed by the token's SHA-256) for up to
//! [`CACHE_TTL`], never past the token's expiry, so a call costs no database round trip.
//! Revocation through this process (a replayed code, a reused refresh token, `/oauth/revoke`)
//! evicts at once. Through another replica sharing a PostgreSQL store: at once while this
//! replica's change listener is connected (the revoking replica publishes a
//! `tessera_store::Change`, applied here by [`apply_change`]); after the listener reconnects
//! every cached check is dropped; and in any case within [`CACHE_TTL`].
//!
//! A token is only as good as the user's sign-in at the provider it federates: on a cache miss
//! the user's provider tokens are checked (and refreshed ahead of expiry). If the provider
//! refuses to renew them, the token is refused with "authorize again" (401 `invalid_token`),
//! which sends an MCP client through authorization again — never a silent downgrade. If the
//! provider cannot be reached, the token stands: brokered calls then fail on their own, and
//! unbrokered ones need nothing from the provider.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, UNIX_EPOCH};

use secrecy::SecretString;
use tessera_identity::{Identity, TokenKind, UserKey};

use sha2::{Digest, Sha256};
use tessera_store::{Change, OauthTokenRejection, Role, StoreError, UnixTime, now_unix};

use crate::ApiState;
use crate::subject_token::{REFRESH_SKEW, SubjectKind, SubjectTokenError};

/// How long a verified token is reused without asking the database.
pub const CACHE_TTL: Duration = Duration::from_secs(30);
const CACHE_MAX: usize = 10_000;

/// The user an access token speaks for, and for which client. Carries no secret.
#[derive(Debug, Clone)]
pub struct VerifiedClientToken {
    pub user_id: String,
    /// The provider's issuer and subject for this user.
    pub issuer: String,
    pub subject: String,
    pub email: Option<String>,
    pub display_name: Option<String>,
    pub role: Role,
    pub client_id: String,
    pub scopes: Vec<String>,
    /// Unix seconds.
    pub expires_at: UnixTime,
    /// The same as the MCP identity `/mcp` hands to the gateway, built once per cache entry so
    /// that a cached check costs an `Arc` clone, not a new `Identity` per request.
    pub identity: Arc<Identity>,
}

/// Why an access token was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum AccessTokenError {
    /// Unknown, expired, revoked, user disabled (401).
    #[error("access token rejected: {0}")]
    Rejected(OauthTokenRejection),
    /// The user's sign-in at the provider has ended and cannot be renewed (401, authorize
    /// again).
    #[error("the sign-in at the identity provider has ended")]
    SignInAgain,
    /// The token lacks scopes `auth.scopes_required` names (403); space-separated.
    #[error("insufficient scope: requires {0}")]
    InsufficientScope(String),
    /// The authorization server is not configured (401).
    #[error("this gateway issues no access tokens")]
    Disabled,
    /// The database failed (503).
    #[error("cannot check the access token: {0}")]
    Store(StoreError),
}

struct Cached {
    token: Arc<VerifiedClientToken>,
    family_id: String,
    until: Instant,
}

/// The verification cache.
#[derive(Default)]
pub(crate) struct VerifyCache {
    map: Mutex<HashMap<[u8; 32], Cached>>,
}

impl VerifyCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Cached>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Drops the cached checks of every token of a family (after it was revoked).
    pub(crate) fn forget_family(&self, family_id: &str) {
        self.lock().retain(|_, c| c.family_id != family_id);
    }

    /// Drops the cached checks of every token of one user (disabled, or changed elsewhere).
    pub(crate) fn forget_user(&self, user_id: &str) {
        self.lock().retain(|_, c| c.token.user_id != user_id);
    }

    /// Drops every cached check (when the family of a revoked token is not known).
    pub(crate) fn forget_all(&self) {
        self.lock().clear();
    }

    /// Drops the cached check of the token whose SHA-256 is `hex` (everything if that is not a
    /// SHA-256 in hex).
    fn forget_token_hash(&self, hex: &str) {
        match parse_hash(hex) {
            Some(key) => {
                self.lock().remove(&key);
            }
            None => self.forget_all(),
        }
    }
}

fn parse_hash(hex: &str) -> Option<[u8; 32]> {
    let bytes = hex.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut key = [0u8; 32];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        let text = std::str::from_utf8(pair).ok()?;
        key[i] = u8::from_str_radix(text, 16).ok()?;
    }
    Some(key)
}

fn hex(key: &[u8; 32]) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

/// A revocation in this process: evicts from this replica's cache at once, then tells the other
/// replicas sharing the store ([`Change`] on PostgreSQL; nothing on SQLite). A failure to
/// publish is logged: the others still stop accepting the token within [`CACHE_TTL`].
pub(crate) async fn revoked(state: &ApiState, change: Change) {
    apply_change(state, &change);
    if let Err(e) = state.store.publish(&change).await {
        tracing::warn!(error = %e, "cannot tell the other replicas about a revocation; they follow within the cache's 30 s");
    }
}

/// The [`Change`] for the revocation of one token.
pub(crate) fn token_revoked(token: &str) -> Change {
    Change::OauthTokenRevoked {
        token_sha256: hex(&cache_key(token)),
    }
}

/// Applies a change another replica published to this replica's verification cache:
/// a revoked family or token is evicted; a revocation whose family is unknown, or
/// [`Change::Resync`] (the listener reconnected, so changes may have been missed), drops every
/// cached check. Credential changes are not this cache's business.
pub fn apply_change(state: &ApiState, change: &Change) {
    let Some(server) = &state.authz else {
        return;
    };
    match change {
        Change::OauthFamilyRevoked { family_id } => server.verified.forget_family(family_id),
        Change::OauthTokenRevoked { token_sha256 } => {
            server.verified.forget_token_hash(token_sha256);
        }
        Change::OauthRevokedUnknown | Change::Resync => server.verified.forget_all(),
        Change::UserChanged { user_id } => server.verified.forget_user(user_id),
        Change::Credential { .. }
        | Change::McpSessionEnded { .. }
        | Change::ServerRestarted { .. } => {}
    }
}

/// Drops this replica's cached checks of every access token of `user_id` (after an admin
/// disabled the user: the next `/mcp` request asks the store, which refuses a disabled user).
pub fn forget_user(state: &ApiState, user_id: &str) {
    if let Some(server) = &state.authz {
        server.verified.forget_user(user_id);
    }
}

fn cache_key(token: &str) -> [u8; 32] {
    let mut key = [0u8; 32];
    key.copy_from_slice(&Sha256::digest(token.as_bytes()));
    key
}

/// Checks a `tsr_at_…` token presented on `/mcp`.
pub async fn verify(
    state: &ApiState,
    token: &str,
) -> Result<Arc<VerifiedClientToken>, AccessTokenError> {
    let Some(server) = &state.authz else {
        return Err(AccessTokenError::Disabled);
    };
    let key = cache_key(token);
    let now = Instant::now();
    let cached = server
        .verified
        .lock()
        .get(&key)
        .filter(|c| c.until > now)
        .map(|c| c.token.clone());
    if let Some(hit) = cached {
        return Ok(hit);
    }
    let verified = state
        .store
        .verify_oauth_access_token(token)
        .await
        .map_err(AccessTokenError::Store)?
        .map_err(AccessTokenError::Rejected)?;
    if verified.resource.trim_end_matches('/') != server.resource.trim_end_matches('/') {
        return Err(AccessTokenError::Rejected(OauthTokenRejection::Unknown));
    }
    // A client may have asked for fewer scopes than /mcp requires.
    if !server
        .required_scopes
        .iter()
        .all(|s| verified.scopes.contains(s))
    {
        return Err(AccessTokenError::InsufficientScope(
            server.required_scopes.join(" "),
        ));
    }
    // The provider session behind the token: renewed ahead of expiry, or the token is refused.
    let mut ttl = CACHE_TTL;
    match state
        .subject_tokens
        .current_with_expiry(&verified.user.id, SubjectKind::AccessToken)
        .await
    {
        Ok(current) => {
            if let Some(at) = current.expires_at {
                let left = u64::try_from(at - REFRESH_SKEW - now_unix()).unwrap_or(0);
                ttl = ttl.min(Duration::from_secs(left));
            }
        }
        Err(SubjectTokenError::ReauthRequired) => {
            tracing::info!(user = %verified.user.id, "access token refused: the provider sign-in has ended");
            return Err(AccessTokenError::SignInAgain);
        }
        Err(e) => {
            tracing::warn!(user = %verified.user.id, error = %e, "cannot renew the provider sign-in now; the access token stands");
            ttl = Duration::ZERO;
        }
    }
    let left = u64::try_from(verified.expires_at - now_unix()).unwrap_or(0);
    ttl = ttl.min(Duration::from_secs(left));
    let identity = Arc::new(Identity {
        user: UserKey {
            issuer: verified.user.issuer.clone(),
            subject: verified.user.subject.clone(),
        },
        display_name: verified
            .user
            .display_name
            .clone()
            .or_else(|| verified.user.email.clone())
            .unwrap_or_else(|| verified.user.subject.clone()),
        email: verified.user.email.clone(),
        role: match verified.user.role {
            Role::Admin => tessera_identity::Role::Admin,
            Role::User => tessera_identity::Role::User,
        },
        token_kind: TokenKind::OauthAccessToken,
        client_id: Some(verified.client_id.clone()),
        scopes: verified.scopes.clone(),
        groups: Vec::new(),
        expires_at: u64::try_from(verified.expires_at)
            .ok()
            .map(|s| UNIX_EPOCH + Duration::from_secs(s)),
        token: SecretString::from(token.to_owned()),
        agent: None,
    });
    let token_info = Arc::new(VerifiedClientToken {
        user_id: verified.user.id,
        issuer: verified.user.issuer,
        subject: verified.user.subject,
        email: verified.user.email,
        display_name: verified.user.display_name,
        role: verified.user.role,
        client_id: verified.client_id,
        scopes: verified.scopes,
        expires_at: verified.expires_at,
        identity,
    });
    if !ttl.is_zero() {
        let mut cache = server.verified.lock();
        if cache.len() >= CACHE_MAX {
            cache.retain(|_, c| c.until > now);
            if cache.len() >= CACHE_MAX {
                cache.clear();
            }
        }
        cache.insert(
            key,
            Cached {
                token: token_info.clone(),
                family_id: verified.family_id,
                until: now + ttl,
            },
        );
    }
    Ok(token_info)
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::{ExposeSecret as _, SecretString};
    use tessera_config::{AuthConfig, AuthorizationServerConfig};
    use tessera_store::{IdpTokens, Store, TokenGrant, UserLogin};
    use url::Url;

    /// An API state with the authorization server on, one user with live provider tokens
    /// (unless `provider_tokens` is false), and a token pair with `scopes`.
    async fn setup(
        dir: &std::path::Path,
        required: &[&str],
        scopes: &[&str],
        provider_tokens: bool,
    ) -> (Arc<ApiState>, String, tessera_store::IssuedTokens) {
        let store = Store::open(dir).await.unwrap();
        setup_on(store, required, scopes, provider_tokens).await
    }

    fn keyring() -> Arc<tessera_store::Keyring> {
        let key = tessera_store::SealingKey::from_bytes(&[9u8; 32]).unwrap();
        Arc::new(tessera_store::Keyring::new(key, vec![]).unwrap())
    }

    /// The authorization server's API state over `store` (which gets the test keyring).
    fn state_on(store: Store, required: &[&str]) -> Arc<ApiState> {
        let base = Url::parse("http://127.0.0.1:9").unwrap();
        let mut auth = AuthConfig::oidc(
            "http://127.0.0.1:9/idp",
            "tessera",
            base.join("/mcp").unwrap(),
        );
        auth.store_idp_tokens = true;
        auth.scopes_required = required.iter().map(|s| s.to_string()).collect();
        auth.authorization_server = Some(AuthorizationServerConfig::default());
        ApiState::new(&auth, &base, store.with_keyring(keyring())).unwrap()
    }

    async fn setup_on(
        store: Store,
        required: &[&str],
        scopes: &[&str],
        provider_tokens: bool,
    ) -> (Arc<ApiState>, String, tessera_store::IssuedTokens) {
        let state = state_on(store, required);
        let store = state.store.clone();
        let user = store
            .upsert_user(&UserLogin {
                issuer: "http://127.0.0.1:9/idp",
                subject: "alice",
                email: Some("alice@example.com"),
                display_name: None,
                role_if_new: Role::User,
            })
            .await
            .unwrap();
        if provider_tokens {
            store
                .put_idp_tokens(
                    &user.id,
                    &IdpTokens {
                        access_token: SecretString::from("provider-access"),
                        refresh_token: None,
                        id_token: None,
                        expires_at: Some(now_unix() + 3600),
                        scopes: vec![],
                    },
                )
                .await
                .unwrap();
        }
        let client = store.register_oauth_client("{}", false).await.unwrap();
        let scopes: Vec<String> = scopes.iter().map(|s| s.to_string()).collect();
        let issued = store
            .issue_oauth_tokens(&TokenGrant {
                family_id: "fam-1",
                client_id: &client.client.client_id,
                user_id: &user.id,
                scopes: &scopes,
                resource: "http://127.0.0.1:9/mcp",
                access_ttl_secs: 600,
                refresh_ttl_secs: 3600,
            })
            .await
            .unwrap();
        (state, user.id, issued)
    }

    #[tokio::test]
    async fn a_valid_token_is_its_user_and_a_revoked_family_is_evicted_from_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let (state, user_id, issued) = setup(dir.path(), &[], &["mcp"], true).await;
        let token = issued.access_token.expose_secret();
        let first = verify(&state, token).await.unwrap();
        assert_eq!(first.user_id, user_id);
        assert_eq!(first.scopes, vec!["mcp".to_string()]);
        // Revoked in the store: the cached answer stands until evicted...
        state.store.revoke_oauth_family("fam-1").await.unwrap();
        assert!(verify(&state, token).await.is_ok(), "served from the cache");
        // ...which the revoking code path does at once.
        state
            .authz
            .as_ref()
            .unwrap()
            .verified
            .forget_family("fam-1");
        assert!(matches!(
            verify(&state, token).await,
            Err(AccessTokenError::Rejected(OauthTokenRejection::Revoked))
        ));
    }

    #[tokio::test]
    async fn changes_from_other_replicas_evict_what_they_name() {
        let dir = tempfile::tempdir().unwrap();
        let (state, user_id, issued) = setup(dir.path(), &[], &["mcp"], true).await;
        let token = issued.access_token.expose_secret();
        let cached = |state: &ApiState| state.authz.as_ref().unwrap().verified.lock().len();
        verify(&state, token).await.unwrap();
        assert_eq!(cached(&state), 1);
        // Not this cache's business, or another family / token: kept.
        for change in [
            Change::Credential {
                user_id: user_id.clone(),
                server: "github".into(),
                server_key: "github_0123".into(),
                connected: false,
            },
            Change::OauthFamilyRevoked {
                family_id: "fam-2".into(),
            },
            token_revoked("tsr_at_other"),
        ] {
            apply_change(&state, &change);
            assert_eq!(cached(&state), 1, "{change:?}");
        }
        apply_change(&state, &token_revoked(token));
        assert_eq!(cached(&state), 0);
        for change in [
            Change::OauthFamilyRevoked {
                family_id: "fam-1".into(),
            },
            Change::OauthRevokedUnknown,
            Change::Resync,
            Change::OauthTokenRevoked {
                token_sha256: "not hex".into(),
            },
        ] {
            verify(&state, token).await.unwrap();
            assert_eq!(cached(&state), 1);
            apply_change(&state, &change);
            assert_eq!(cached(&state), 0, "{change:?}");
        }
        assert_eq!(parse_hash(&hex(&cache_key(token))), Some(cache_key(token)));
    }

    /// Two replicas on one PostgreSQL database: a family and a token revoked through A are
    /// refused by B as soon as B's listener delivers A's messages, not after B's cache TTL.
    #[tokio::test]
    async fn a_revocation_on_one_replica_reaches_the_others_cache() {
        let cluster = tokio::task::spawn_blocking(tessera_test_pg::Cluster::shared)
            .await
            .unwrap();
        let url = cluster.database().await;
        let (a, user_id, first) =
            setup_on(Store::connect(&url).await.unwrap(), &[], &["mcp"], true).await;
        let b = state_on(Store::connect(&url).await.unwrap(), &[]);
        let mut changes = b.store.subscribe().await.unwrap();
        let client_id = a
            .store
            .verify_oauth_access_token(first.access_token.expose_secret())
            .await
            .unwrap()
            .unwrap()
            .client_id;
        let second = a
            .store
            .issue_oauth_tokens(&TokenGrant {
                family_id: "fam-2",
                client_id: &client_id,
                user_id: &user_id,
                scopes: &["mcp".to_string()],
                resource: "http://127.0.0.1:9/mcp",
                access_ttl_secs: 600,
                refresh_ttl_secs: 3600,
            })
            .await
            .unwrap();
        let (first, second) = (
            first.access_token.expose_secret(),
            second.access_token.expose_secret(),
        );
        // B has checked (and cached) both tokens.
        verify(&b, first).await.unwrap();
        verify(&b, second).await.unwrap();
        let mut next = async || {
            let change = tokio::time::timeout(std::time::Duration::from_secs(10), changes.recv())
                .await
                .expect("A's change within 10 s")
                .unwrap();
            apply_change(&b, &change);
        };

        a.store.revoke_oauth_family("fam-1").await.unwrap();
        revoked(
            &a,
            Change::OauthFamilyRevoked {
                family_id: "fam-1".into(),
            },
        )
        .await;
        next().await;
        assert!(matches!(
            verify(&b, first).await,
            Err(AccessTokenError::Rejected(OauthTokenRejection::Revoked))
        ));
        assert!(verify(&b, second).await.is_ok(), "another family stands");

        a.store
            .revoke_oauth_token(second, &client_id)
            .await
            .unwrap();
        revoked(&a, token_revoked(second)).await;
        next().await;
        assert!(matches!(
            verify(&b, second).await,
            Err(AccessTokenError::Rejected(OauthTokenRejection::Revoked))
        ));
    }

    #[tokio::test]
    async fn a_token_without_the_required_scopes_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (state, _, issued) =
            setup(dir.path(), &["mcp:read", "mcp:call"], &["mcp:read"], true).await;
        match verify(&state, issued.access_token.expose_secret()).await {
            Err(AccessTokenError::InsufficientScope(required)) => {
                assert_eq!(required, "mcp:read mcp:call");
            }
            other => panic!("expected insufficient scope, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_token_whose_provider_sign_in_has_ended_is_refused_with_sign_in_again() {
        let dir = tempfile::tempdir().unwrap();
        let (state, _, issued) = setup(dir.path(), &[], &["mcp"], false).await;
        assert!(matches!(
            verify(&state, issued.access_token.expose_secret()).await,
            Err(AccessTokenError::SignInAgain)
        ));
        assert!(matches!(
            verify(&state, "tsr_at_unknown").await,
            Err(AccessTokenError::Rejected(OauthTokenRejection::Unknown))
        ));
    }
}
