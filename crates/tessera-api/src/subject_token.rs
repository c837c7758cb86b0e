//! The signed-in user's provider tokens as *subject tokens* (for token exchange later), kept
//! fresh: [`SubjectTokens::current`] opens the sealed tokens and, when the access token expires
//! within [`REFRESH_SKEW`], refreshes them at the provider's token endpoint first (the
//! reference's `GetValidIDPSubjectToken`, REFERENCE.md §2.3).
//!
//! - Concurrent calls for one user share one refresh (single flight: a per-user lock; the
//!   tokens are read again once it is held). Across replicas sharing a PostgreSQL store the
//!   refresh runs under the store's lock on `idp|<user id>` as well, so a provider that rotates
//!   refresh tokens never sees one used twice: a replica that waited reads the tokens the other
//!   stored (the wait is bounded by [`REFRESH_LOCK_WAIT`]).
//! - The new tokens are sealed and stored; the previous refresh token is kept when the provider
//!   does not rotate it.
//! - A user whose provider session cannot be refreshed gets [`SubjectTokenError::ReauthRequired`]
//!   ("sign in again at /auth/login"), never a stale token.
//! - No token, and no provider response body, reaches a log line or an error message.
//!
//! `GET /api/v1/user/idp-token` makes this observable: `{"status":"valid","expires_at":…}` or a
//! 401 with `reauth_url`, never the token itself.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use openidconnect::{
    Nonce, OAuth2TokenResponse as _, RefreshToken, RequestTokenError, TokenResponse as _,
};
use secrecy::{ExposeSecret as _, SecretString};
use tessera_store::{IdpTokens, RefreshLock, Store, StoreError, UnixTime, now_unix};

use crate::ApiState;
use crate::caller::Caller;
use crate::oidc::{self, Provider};

/// An access token expiring within this many seconds is refreshed before use (the reference's
/// `idpRefreshSkew`).
pub const REFRESH_SKEW: i64 = 60;

/// Where a user signs in again.
pub const REAUTH_URL: &str = "/auth/login";

/// How long a refresh waits for another replica's refresh of the same user's tokens (their
/// own request to the provider is bounded by 30 s) before giving up as unavailable.
pub const REFRESH_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(35);

/// Above this many per-user locks, locks nobody holds are dropped.
const LOCKS_PRUNE_AT: usize = 1024;

/// Which of the user's provider tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubjectKind {
    AccessToken,
    IdToken,
}

/// Why no subject token is available.
#[derive(Debug, thiserror::Error)]
pub enum SubjectTokenError {
    /// No stored tokens, no refresh token, tokens that no longer open, or the provider refused
    /// the refresh token (`invalid_grant`): the user must sign in again.
    #[error("your identity provider session has ended: sign in again at {REAUTH_URL}")]
    ReauthRequired,
    /// The provider answered the refresh with this RFC 6749 error code.
    #[error("the identity provider refused to refresh the session: {0}")]
    Provider(String),
    /// The provider could not be reached, or its answer was unreadable.
    #[error("the identity provider is unavailable")]
    Unavailable,
    /// Provider tokens are not kept (`auth.store_idp_tokens` is off, or no sealing key).
    #[error("provider tokens are not kept (auth.store_idp_tokens is off)")]
    SealingDisabled,
    /// Tessera's own storage failed.
    #[error("storage error: {0}")]
    Store(StoreError),
}

/// A fresh subject token and when it expires (`None` = unknown).
#[derive(Debug)]
pub struct CurrentToken {
    pub token: SecretString,
    pub expires_at: Option<UnixTime>,
}

/// The users' provider tokens, refreshed when near expiry.
pub struct SubjectTokens {
    store: Store,
    provider: Arc<Provider>,
    enabled: bool,
    locks: Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>,
}

/// Whether an access token expiring at `expires_at` must be refreshed at `now`. An unknown
/// expiry is taken as "does not expire" (the reference's zero `expires_at`).
pub fn needs_refresh(expires_at: Option<UnixTime>, now: UnixTime) -> bool {
    expires_at.is_some_and(|at| at.saturating_sub(now) <= REFRESH_SKEW)
}

fn store_error(e: StoreError) -> SubjectTokenError {
    match e {
        StoreError::SealingDisabled => SubjectTokenError::SealingDisabled,
        // Tokens that no longer open (other key, altered, copied): only a new sign-in helps.
        StoreError::Seal(e) => {
            tracing::warn!(error = %e, "stored provider tokens do not open; the user must sign in again");
            SubjectTokenError::ReauthRequired
        }
        other => SubjectTokenError::Store(other),
    }
}

/// A refresh refused by the provider: `invalid_grant` means the provider session is over.
fn provider_refusal(code: &str) -> SubjectTokenError {
    let code = oidc::error_code(code);
    if code == "invalid_grant" {
        SubjectTokenError::ReauthRequired
    } else {
        SubjectTokenError::Provider(code)
    }
}

fn pick(tokens: &IdpTokens, kind: SubjectKind) -> Result<CurrentToken, SubjectTokenError> {
    let token = match kind {
        SubjectKind::AccessToken => tokens.access_token.clone(),
        SubjectKind::IdToken => tokens
            .id_token
            .clone()
            .ok_or(SubjectTokenError::ReauthRequired)?,
    };
    Ok(CurrentToken {
        token,
        expires_at: tokens.expires_at,
    })
}

impl SubjectTokens {
    /// `enabled` is `auth.store_idp_tokens`.
    pub fn new(store: Store, provider: Arc<Provider>, enabled: bool) -> Self {
        SubjectTokens {
            store,
            provider,
            enabled,
            locks: Mutex::new(HashMap::new()),
        }
    }

    /// The user's current provider token of `kind`, refreshed first if the access token expires
    /// within [`REFRESH_SKEW`].
    pub async fn current(
        &self,
        user_id: &str,
        kind: SubjectKind,
    ) -> Result<SecretString, SubjectTokenError> {
        Ok(self.current_with_expiry(user_id, kind).await?.token)
    }

    /// [`Self::current`] with the access token's expiry.
    pub async fn current_with_expiry(
        &self,
        user_id: &str,
        kind: SubjectKind,
    ) -> Result<CurrentToken, SubjectTokenError> {
        if !self.enabled {
            return Err(SubjectTokenError::SealingDisabled);
        }
        let stored = self.load(user_id).await?;
        if !needs_refresh(stored.expires_at, now_unix()) {
            return pick(&stored, kind);
        }
        let lock = self.lock_for(user_id);
        let _held = lock.lock().await;
        // Another call may have refreshed while this one waited.
        let stored = self.load(user_id).await?;
        if !needs_refresh(stored.expires_at, now_unix()) {
            return pick(&stored, kind);
        }
        // Another replica may be refreshing them: one at a time, and whoever waited reads the
        // tokens again (held until the new tokens are stored).
        let shared = self
            .store
            .lock(RefreshLock::Idp { user_id }, REFRESH_LOCK_WAIT)
            .await
            .map_err(|e| match e {
                StoreError::LockTimeout => SubjectTokenError::Unavailable,
                other => store_error(other),
            })?;
        let stored = if shared.in_database() {
            let stored = self.load(user_id).await?;
            if !needs_refresh(stored.expires_at, now_unix()) {
                return pick(&stored, kind);
            }
            stored
        } else {
            stored
        };
        let fresh = self.refresh(&stored).await?;
        self.store
            .put_idp_tokens(user_id, &fresh)
            .await
            .map_err(store_error)?;
        shared.release().await;
        tracing::info!(user = %user_id, "refreshed the user's identity provider tokens");
        pick(&fresh, kind)
    }

    async fn load(&self, user_id: &str) -> Result<IdpTokens, SubjectTokenError> {
        match self.store.get_idp_tokens(user_id).await {
            Ok(Some(stored)) => Ok(stored.tokens),
            Ok(None) => Err(SubjectTokenError::ReauthRequired),
            Err(e) => Err(store_error(e)),
        }
    }

    fn lock_for(&self, user_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(lock) = locks.get(user_id).and_then(Weak::upgrade) {
            return lock;
        }
        if locks.len() >= LOCKS_PRUNE_AT {
            locks.retain(|_, w| w.strong_count() > 0);
        }
        let lock = Arc::new(tokio::sync::Mutex::new(()));
        locks.insert(user_id.to_owned(), Arc::downgrade(&lock));
        lock
    }

    /// The refresh-token grant, with the client authentication of the sign-in.
    async fn refresh(&self, old: &IdpTokens) -> Result<IdpTokens, SubjectTokenError> {
        let refresh_token = old
            .refresh_token
            .as_ref()
            .ok_or(SubjectTokenError::ReauthRequired)?;
        let provider = &self.provider;
        let meta = provider
            .metadata(false)
            .await
            .map_err(|_| SubjectTokenError::Unavailable)?;
        let client = provider.client(&meta);
        let http = |req| oidc::send(provider.http.clone(), req);
        let rt = RefreshToken::new(refresh_token.expose_secret().to_owned());
        let response = client
            .exchange_refresh_token(&rt)
            .map_err(|_| SubjectTokenError::Provider("unsupported_grant_type".into()))?
            .request_async(&http)
            .await
            .map_err(|e| match e {
                RequestTokenError::ServerResponse(r) => provider_refusal(r.error().as_ref()),
                RequestTokenError::Request(e) => {
                    tracing::warn!(error = %e, "refresh request to the identity provider failed");
                    SubjectTokenError::Unavailable
                }
                RequestTokenError::Parse(_, _) | RequestTokenError::Other(_) => {
                    tracing::warn!("the identity provider's refresh response is unreadable");
                    SubjectTokenError::Unavailable
                }
            })?;
        let id_token = match response.id_token() {
            None => old.id_token.clone(),
            Some(new) => {
                let algs: Vec<_> = provider
                    .config
                    .algorithms
                    .iter()
                    .copied()
                    .map(oidc::signing_alg)
                    .collect();
                // No nonce in a refreshed ID token (OIDC Core §12.2); signature, iss, aud, exp
                // are checked, and it must name the same subject.
                let claims = new
                    .claims(
                        &client.id_token_verifier().set_allowed_algs(algs),
                        |_: Option<&Nonce>| Ok(()),
                    )
                    .map_err(|e| {
                        tracing::warn!(error = %e, "the refreshed ID token was rejected");
                        SubjectTokenError::Provider("invalid_id_token".into())
                    })?;
                let old_sub = old
                    .id_token
                    .as_ref()
                    .and_then(|t| jwt_subject(t.expose_secret()));
                if old_sub.is_some_and(|s| s != claims.subject().as_str()) {
                    tracing::warn!("the refreshed ID token names another subject");
                    return Err(SubjectTokenError::ReauthRequired);
                }
                Some(SecretString::from(new.to_string()))
            }
        };
        let expires_at = response
            .expires_in()
            .and_then(|d| i64::try_from(d.as_secs()).ok())
            .map(|s| now_unix().saturating_add(s));
        Ok(IdpTokens {
            access_token: SecretString::from(response.access_token().secret().clone()),
            refresh_token: Some(
                response
                    .refresh_token()
                    .map(|t| SecretString::from(t.secret().clone()))
                    .unwrap_or_else(|| refresh_token.clone()),
            ),
            id_token,
            expires_at,
            scopes: response
                .scopes()
                .map(|s| s.iter().map(|x| x.to_string()).collect())
                .unwrap_or_else(|| old.scopes.clone()),
        })
    }
}

/// The `sub` of an (already verified, stored) JWT.
fn jwt_subject(jwt: &str) -> Option<String> {
    use base64::Engine as _;
    let payload = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let json: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    json.get("sub")?.as_str().map(str::to_owned)
}

impl IntoResponse for SubjectTokenError {
    fn into_response(self) -> Response {
        let (status, extra) = match &self {
            SubjectTokenError::ReauthRequired => (StatusCode::UNAUTHORIZED, Some(REAUTH_URL)),
            SubjectTokenError::Provider(_) => (StatusCode::BAD_GATEWAY, None),
            SubjectTokenError::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, None),
            SubjectTokenError::SealingDisabled => (StatusCode::NOT_FOUND, None),
            SubjectTokenError::Store(e) => {
                tracing::error!(error = %e, "reading the user's provider tokens failed");
                (StatusCode::INTERNAL_SERVER_ERROR, None)
            }
        };
        let message = match &self {
            SubjectTokenError::Store(_) => "Failed to read the provider tokens".to_owned(),
            other => other.to_string(),
        };
        let mut body = serde_json::json!({
            "error": status.canonical_reason().unwrap_or("Error"),
            "message": message,
            "status_code": status.as_u16(),
        });
        if let Some(url) = extra {
            body["reauth_url"] = serde_json::Value::from(url);
        }
        let mut response = (status, Json(body)).into_response();
        response.headers_mut().insert(
            header::CACHE_CONTROL,
            http::HeaderValue::from_static("no-store"),
        );
        response
    }
}

/// `GET /api/v1/user/idp-token`: whether the signed-in user's provider session is usable
/// (refreshing it if near expiry). Never the token itself.
pub(crate) async fn status(State(state): State<Arc<ApiState>>, caller: Caller) -> Response {
    match state
        .subject_tokens
        .current_with_expiry(&caller.user_id, SubjectKind::AccessToken)
        .await
    {
        Ok(t) => {
            let mut r = Json(serde_json::json!({
                "status": "valid",
                "expires_at": t.expires_at,
            }))
            .into_response();
            r.headers_mut().insert(
                header::CACHE_CONTROL,
                http::HeaderValue::from_static("no-store"),
            );
            r
        }
        Err(e) => e.into_response(),
    }
}

/// The users' stored provider tokens as the broker's subject-token source (for callers whose
/// inbound token cannot be exchanged itself, e.g. personal access tokens). `ReauthRequired` →
/// "sign in again"; any other failure → unavailable.
impl tessera_broker::SubjectTokenSource for SubjectTokens {
    fn subject_token<'a>(
        &'a self,
        user: &'a str,
        kind: tessera_config::SubjectTokenType,
    ) -> futures::future::BoxFuture<'a, Result<SecretString, tessera_broker::SubjectTokenError>>
    {
        Box::pin(async move {
            let kind = match kind {
                tessera_config::SubjectTokenType::AccessToken => SubjectKind::AccessToken,
                tessera_config::SubjectTokenType::IdToken => SubjectKind::IdToken,
            };
            self.current(user, kind).await.map_err(broker_error)
        })
    }
}

fn broker_error(e: SubjectTokenError) -> tessera_broker::SubjectTokenError {
    match e {
        SubjectTokenError::ReauthRequired => tessera_broker::SubjectTokenError::SignInAgain,
        _ => tessera_broker::SubjectTokenError::Unavailable,
    }
}

/// [`SubjectTokens`] of a shared [`ApiState`] as a `tessera_broker::SubjectTokenSource`:
/// `Arc::new(BrokerSubjects(api_state.clone()))`.
pub struct BrokerSubjects(pub Arc<ApiState>);

impl tessera_broker::SubjectTokenSource for BrokerSubjects {
    fn subject_token<'a>(
        &'a self,
        user: &'a str,
        kind: tessera_config::SubjectTokenType,
    ) -> futures::future::BoxFuture<'a, Result<SecretString, tessera_broker::SubjectTokenError>>
    {
        tessera_broker::SubjectTokenSource::subject_token(&self.0.subject_tokens, user, kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn near_expiry_means_within_sixty_seconds() {
        let now = 1_000_000;
        assert!(!needs_refresh(None, now), "unknown expiry: never refreshed");
        assert!(!needs_refresh(Some(now + 61), now));
        assert!(needs_refresh(Some(now + 60), now));
        assert!(needs_refresh(Some(now + 1), now));
        assert!(needs_refresh(Some(now - 3600), now), "already expired");
        assert!(!needs_refresh(Some(i64::MAX), now));
        assert!(needs_refresh(Some(i64::MIN), now));
    }

    #[test]
    fn invalid_grant_asks_to_sign_in_again_other_codes_are_reduced() {
        assert!(matches!(
            provider_refusal("invalid_grant"),
            SubjectTokenError::ReauthRequired
        ));
        match provider_refusal("invalid_client\"<b>secret body</b>") {
            SubjectTokenError::Provider(code) => assert_eq!(code, "invalid_clientbsecretbodyb"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            store_error(StoreError::SealingDisabled),
            SubjectTokenError::SealingDisabled
        ));
        assert!(matches!(
            store_error(StoreError::UserNotFound("u".into())),
            SubjectTokenError::Store(_)
        ));
    }

    #[tokio::test]
    async fn reauth_response_names_the_sign_in_url_and_no_token() {
        let r = SubjectTokenError::ReauthRequired.into_response();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        let body = http_body_util::BodyExt::collect(r.into_body())
            .await
            .unwrap()
            .to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "error": "Unauthorized",
                "message": "your identity provider session has ended: sign in again at /auth/login",
                "status_code": 401,
                "reauth_url": "/auth/login",
            })
        );
        let r = SubjectTokenError::Provider("temporarily_unavailable".into()).into_response();
        assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
    }

    async fn tokens_for(
        dir: &std::path::Path,
        enabled: bool,
        expires_in: i64,
        refresh: bool,
    ) -> (SubjectTokens, String) {
        let key = tessera_store::SealingKey::from_bytes(&[7u8; 32]).unwrap();
        let keyring = Arc::new(tessera_store::Keyring::new(key, vec![]).unwrap());
        let store = Store::open(dir).await.unwrap().with_keyring(keyring);
        let user = store
            .upsert_user(&tessera_store::UserLogin {
                issuer: "i",
                subject: "alice",
                email: None,
                display_name: None,
                role_if_new: tessera_store::Role::User,
            })
            .await
            .unwrap();
        store
            .put_idp_tokens(
                &user.id,
                &IdpTokens {
                    access_token: SecretString::from("at-1"),
                    refresh_token: refresh.then(|| SecretString::from("rt-1")),
                    id_token: Some(SecretString::from("h.e30.s")),
                    expires_at: Some(now_unix() + expires_in),
                    scopes: vec!["openid".into()],
                },
            )
            .await
            .unwrap();
        // A provider nobody listens on: any refresh attempt would fail as Unavailable.
        let auth = tessera_config::AuthConfig::oidc(
            "http://127.0.0.1:9/idp",
            "tessera",
            url::Url::parse("http://127.0.0.1:9/mcp").unwrap(),
        );
        let provider =
            Arc::new(Provider::new(&auth, "http://127.0.0.1:9/auth/callback".into()).unwrap());
        (SubjectTokens::new(store, provider, enabled), user.id)
    }

    #[tokio::test]
    async fn a_fresh_token_is_returned_without_asking_the_provider() {
        let dir = tempfile::tempdir().unwrap();
        let (st, user) = tokens_for(dir.path(), true, 3600, true).await;
        let t = st.current(&user, SubjectKind::AccessToken).await.unwrap();
        assert_eq!(t.expose_secret(), "at-1");
        let t = st.current(&user, SubjectKind::IdToken).await.unwrap();
        assert_eq!(t.expose_secret(), "h.e30.s");
    }

    #[tokio::test]
    async fn missing_tokens_or_refresh_token_ask_to_sign_in_again() {
        let dir = tempfile::tempdir().unwrap();
        let (st, user) = tokens_for(dir.path(), true, 10, false).await;
        assert!(matches!(
            st.current(&user, SubjectKind::AccessToken).await,
            Err(SubjectTokenError::ReauthRequired)
        ));
        assert!(matches!(
            st.current("nobody", SubjectKind::AccessToken).await,
            Err(SubjectTokenError::ReauthRequired)
        ));
    }

    #[tokio::test]
    async fn an_unreachable_provider_is_unavailable_and_disabled_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let (st, user) = tokens_for(dir.path(), true, 10, true).await;
        assert!(matches!(
            st.current(&user, SubjectKind::AccessToken).await,
            Err(SubjectTokenError::Unavailable)
        ));
        let dir = tempfile::tempdir().unwrap();
        let (st, user) = tokens_for(dir.path(), false, 3600, true).await;
        assert!(matches!(
            st.current(&user, SubjectKind::AccessToken).await,
            Err(SubjectTokenError::SealingDisabled)
        ));
    }

    /// Two replicas (two stores on one PostgreSQL database, two `SubjectTokens`) asked 2 x 10
    /// times at once for a user whose provider token is near expiry: one refresh at the
    /// provider, and every caller gets the new token.
    #[tokio::test]
    async fn two_replicas_refresh_a_users_provider_tokens_once() {
        use wiremock::matchers::{method, path};
        use wiremock::{Mock, MockServer, ResponseTemplate};

        let cluster = tokio::task::spawn_blocking(tessera_test_pg::Cluster::shared)
            .await
            .unwrap();
        let url = cluster.database().await;
        let idp = MockServer::start().await;
        let issuer = idp.uri();
        Mock::given(method("GET"))
            .and(path("/.well-known/openid-configuration"))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "issuer": issuer,
                "authorization_endpoint": format!("{issuer}/authorize"),
                "token_endpoint": format!("{issuer}/token"),
                "jwks_uri": format!("{issuer}/jwks"),
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
            })))
            .mount(&idp)
            .await;
        Mock::given(method("GET"))
            .and(path("/jwks"))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({"keys": []})))
            .mount(&idp)
            .await;
        Mock::given(method("POST"))
            .and(path("/token"))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(serde_json::json!({
                        "access_token": "at-2",
                        "refresh_token": "rt-2",
                        "token_type": "Bearer",
                        "expires_in": 3600,
                    }))
                    .set_delay(std::time::Duration::from_millis(400)),
            )
            .mount(&idp)
            .await;
        let auth = tessera_config::AuthConfig::oidc(
            &issuer,
            "tessera",
            url::Url::parse("http://127.0.0.1:9/mcp").unwrap(),
        );
        let key = tessera_store::SealingKey::from_bytes(&[7u8; 32]).unwrap();
        let keyring = Arc::new(tessera_store::Keyring::new(key, vec![]).unwrap());
        let mut replicas = Vec::new();
        for _ in 0..2 {
            let store = Store::connect(&url)
                .await
                .unwrap()
                .with_keyring(keyring.clone());
            let provider =
                Arc::new(Provider::new(&auth, "http://127.0.0.1:9/auth/callback".into()).unwrap());
            replicas.push(Arc::new(SubjectTokens::new(store, provider, true)));
        }
        let user = replicas[0]
            .store
            .upsert_user(&tessera_store::UserLogin {
                issuer: &issuer,
                subject: "alice",
                email: None,
                display_name: None,
                role_if_new: tessera_store::Role::User,
            })
            .await
            .unwrap()
            .id;
        replicas[0]
            .store
            .put_idp_tokens(
                &user,
                &IdpTokens {
                    access_token: SecretString::from("at-1"),
                    refresh_token: Some(SecretString::from("rt-1")),
                    id_token: None,
                    expires_at: Some(now_unix() + 10),
                    scopes: vec!["openid".into()],
                },
            )
            .await
            .unwrap();
        let mut calls = Vec::new();
        for replica in &replicas {
            for _ in 0..10 {
                let (replica, user) = (replica.clone(), user.clone());
                calls.push(tokio::spawn(async move {
                    replica.current(&user, SubjectKind::AccessToken).await
                }));
            }
        }
        for call in futures::future::join_all(calls).await {
            assert_eq!(call.unwrap().unwrap().expose_secret(), "at-2");
        }
        let refreshes: Vec<String> = idp
            .received_requests()
            .await
            .unwrap()
            .iter()
            .filter(|r| r.url.path() == "/token")
            .map(|r| String::from_utf8_lossy(&r.body).into_owned())
            .collect();
        assert_eq!(refreshes.len(), 1, "{refreshes:?}");
        assert!(refreshes[0].contains("refresh_token=rt-1"));
        let stored = replicas[1]
            .store
            .get_idp_tokens(&user)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored.tokens.refresh_token.unwrap().expose_secret(), "rt-2");
    }

    #[tokio::test]
    async fn one_lock_per_user_while_held_and_dropped_after() {
        let dir = tempfile::tempdir().unwrap();
        let (st, _) = tokens_for(dir.path(), true, 3600, true).await;
        let a = st.lock_for("u1");
        let b = st.lock_for("u1");
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &st.lock_for("u2")));
        drop((a, b));
        let map = st.locks.lock().unwrap();
        assert!(map.values().all(|w| w.strong_count() == 0));
    }
}
