//! Tessera's browser sign-in and REST API.
//!
//! - [`oidc`]: `GET /auth/login`, `GET /auth/callback`, `POST /auth/logout` — OpenID Connect
//!   authorization code + PKCE, `state` and `nonce` bound to a login cookie, ID token verified
//!   against the provider's JWKS.
//! - [`pat`]: personal access tokens — [`pat::verify`] for any front end (cached), and
//!   `POST/GET /api/v1/user/tokens`, `DELETE /api/v1/user/tokens/{id}`.
//! - `GET /api/v1/me`: the signed-in user.
//!
//! Every REST error is `{"error": <status text>, "message": <reason>, "status_code": <n>}`.
//!
//! Invariants: **no response and no log line carries a token, a cookie value, a client secret
//! or a provider response body**; **a return target after sign-in is a same-origin relative
//! path** ([`return_to`]); **a callback is accepted once, only from the browser that started the
//! sign-in**.
#![deny(clippy::unwrap_used, clippy::expect_used)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod caller;
pub mod cookies;
pub mod error;
pub mod oidc;
pub mod pat;
mod pending;
pub mod return_to;

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::routing::{delete, get, post};
use tessera_config::AuthConfig;
use tessera_store::Store;
use url::Url;

pub use caller::{Caller, CallerKind};
pub use cookies::CookiePolicy;
pub use error::ApiError;
pub use pat::{PatError, UserIdentity};

/// Why the API could not be set up (start-up fails with this message).
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Cookies(#[from] cookies::InsecureBaseUrl),
    #[error(transparent)]
    Provider(#[from] oidc::ProviderError),
}

/// Shared state of the sign-in and REST handlers.
pub struct ApiState {
    pub(crate) store: Store,
    pub(crate) provider: oidc::Provider,
    pub(crate) cookies: CookiePolicy,
    pub(crate) pending: pending::PendingLogins,
    pub(crate) session_ttl: Duration,
}

impl ApiState {
    /// `base_url` is how browsers reach the gateway: `public_url`, else `http://<listen
    /// address>`. The provider redirects to `<base_url>/auth/callback`.
    pub fn new(auth: &AuthConfig, base_url: &Url, store: Store) -> Result<Arc<Self>, SetupError> {
        let cookies = CookiePolicy::for_base_url(base_url)?;
        let provider = oidc::Provider::new(auth, cookies::join(base_url, "/auth/callback"))?;
        Ok(Arc::new(ApiState {
            store,
            provider,
            cookies,
            pending: pending::PendingLogins::default(),
            session_ttl: auth.session_ttl,
        }))
    }

    /// The store the API works on.
    pub fn store(&self) -> &Store {
        &self.store
    }
}

/// The sign-in routes and the REST API, to be merged beside the MCP front ends.
pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/auth/login", get(oidc::login))
        .route("/auth/callback", get(oidc::callback))
        .route("/auth/logout", post(oidc::logout))
        .route("/api/v1/me", get(me))
        .route("/api/v1/user/tokens", post(pat::create).get(pat::list))
        .route("/api/v1/user/tokens/{id}", delete(pat::revoke))
        .with_state(state)
}

/// `GET /api/v1/me`: who is signed in (never a token).
async fn me(caller: Caller) -> Json<serde_json::Value> {
    let auth = match caller.kind {
        CallerKind::Session => "session",
        CallerKind::PersonalAccessToken { .. } => "personal_access_token",
    };
    Json(serde_json::json!({
        "id": caller.user_id,
        "email": caller.email,
        "display_name": caller.display_name,
        "role": caller.role.as_str(),
        "auth": auth,
    }))
}
