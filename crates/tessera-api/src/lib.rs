//! Tessera's browser sign-in and REST API.
//!
//! - [`oidc`]: `GET /auth/login`, `GET /auth/callback`, `POST /auth/logout` — OpenID Connect
//!   authorization code + PKCE, `state` and `nonce` bound to a login cookie, ID token verified
//!   against the provider's JWKS.
//!   Presets: `google` (offline access when provider tokens are kept), `microsoft`
//!   (`offline_access`), `github` ([`github`]: OAuth 2.0, no ID token; `/user` + `/user/emails`).
//! - [`pat`]: personal access tokens — [`pat::verify`] for any front end (cached; it carries an
//!   agent token's [`tessera_identity::AgentScope`]), and `POST/GET /api/v1/user/tokens`
//!   (`allowed_servers`, `permissions`: agent tokens), `DELETE /api/v1/user/tokens/{id}`.
//! - `GET /api/v1/me`: the signed-in user.
//! - [`credentials`]: `GET /api/v1/user/credentials` (status of every brokered server the user
//!   may use), `DELETE /api/v1/user/credentials/{server}` (RFC 7009 revocation, then delete),
//!   and the connect flow's `…/{server}/connect` and `…/{server}/callback`.
//! - [`user_servers`]: `GET/POST /api/v1/user/servers` (shared servers with the caller's own
//!   switch, and personal HTTP servers: SSRF-checked, quota, headers sealed and never echoed),
//!   `GET/PUT/DELETE /api/v1/user/servers/{name}`, `POST …/{name}/enable`.
//!   [`servers`]: the configured servers' secret-free view.
//! - [`admin`] (admins only): `GET /api/v1/admin/users`, `POST …/users/{id}/disable|enable`,
//!   `GET /api/v1/admin/sessions`, `DELETE …/sessions/{id}`, `GET /api/v1/admin/mcp-sessions`,
//!   `DELETE …/mcp-sessions/{handle}`, `POST /api/v1/admin/servers/{name}/restart`,
//!   `GET /api/v1/admin/dashboard`.
//! - [`events`]: [`UserEvents`], the gateway's hook ([`ApiState::set_user_events`]): told when a
//!   user's servers change or an admin disables a user, asked for the dashboard's live figures.
//! - [`activity`]: `GET /api/v1/activity` (filters, cursor pagination), `…/stream` (SSE),
//!   `…/export` (NDJSON); users see their own records, admins all. Retention in the purge.
//! - [`csrf`]: cookie-authenticated POST/DELETE must be same-origin (bearer callers exempt).
//! - [`openapi`]: `GET /api/v1/openapi.json`, the OpenAPI 3.1 document of all of the above
//!   (a test keeps it and the router in step).
//! - [`subject_token`]: the user's provider tokens, refreshed when near expiry;
//!   `GET /api/v1/user/idp-token`.
//!
//! Every REST error is `{"error": <status text>, "message": <reason>, "status_code": <n>}`.
//!
//! Invariants: **no response and no log line carries a token, a cookie value, a client secret
//! or a provider response body**; **a return target after sign-in is a same-origin relative
//! path** ([`return_to`]); **a callback is accepted once, only from the browser that started the
//! sign-in**.
#![deny(clippy::unwrap_used, clippy::expect_used)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod activity;
pub mod admin;
pub mod authz;
pub mod caller;
pub mod cookies;
pub mod credentials;
pub mod csrf;
pub mod error;
pub mod events;
pub mod github;
pub mod oidc;
pub mod openapi;
pub mod pat;
pub mod peer;
mod pending;
pub mod replicas;
pub mod return_to;
mod sealed_state;
pub mod servers;
pub mod subject_token;
mod ui;
#[cfg(test)]
mod user_api_tests;
pub mod user_servers;

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
pub use credentials::BrokerRoutes;
pub use error::ApiError;
pub use events::{NoEvents, UserEvents};
pub use pat::{PatError, UserIdentity};
pub use peer::PeerAddr;

/// Why the API could not be set up (start-up fails with this message).
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Cookies(#[from] cookies::InsecureBaseUrl),
    #[error(transparent)]
    Provider(#[from] oidc::ProviderError),
    #[error(transparent)]
    AuthorizationServer(#[from] authz::fetch::FetchSetupError),
}

/// Shared state of the sign-in and REST handlers.
pub struct ApiState {
    pub(crate) store: Store,
    pub(crate) provider: Arc<oidc::Provider>,
    pub(crate) cookies: CookiePolicy,
    pub(crate) pending: pending::PendingLogins,
    pub(crate) session_ttl: Duration,
    pub(crate) subject_tokens: subject_token::SubjectTokens,
    /// The connect routes' part of the credential broker, once the binary wired it.
    pub(crate) broker: std::sync::OnceLock<credentials::BrokerRoutes>,
    /// The gateway's own origin (`scheme://host[:port]`), for the CSRF check ([`csrf`]).
    pub(crate) origin: String,
    /// The configured servers, secrets redacted ([`ApiState::set_servers`]).
    pub(crate) servers: std::sync::RwLock<Arc<Vec<servers::ServerView>>>,
    /// Activity retention ([`ApiState::set_activity_retention`]).
    pub(crate) retention: std::sync::RwLock<activity::Retention>,
    /// Set once the server shuts down: long-lived responses (the activity stream) end.
    pub(crate) closing: tokio::sync::watch::Sender<bool>,
    /// Tessera's own OAuth authorization server, when `auth.authorization_server` is set.
    pub(crate) authz: Option<authz::AuthorizationServer>,
    /// Where the authorization server's credential events are recorded (the activity log).
    pub(crate) auditor: std::sync::OnceLock<tessera_broker::Auditor>,
    /// The gateway's hook for user changes ([`ApiState::set_user_events`]).
    pub(crate) events: std::sync::RwLock<Arc<dyn UserEvents>>,
    /// Personal servers' limits and the tool separator ([`ApiState::set_user_servers_config`]).
    pub(crate) user_servers: std::sync::RwLock<Arc<user_servers::Limits>>,
}

impl ApiState {
    /// `base_url` is how browsers reach the gateway: `public_url`, else `http://<listen
    /// address>`. The provider redirects to `<base_url>/auth/callback`.
    pub fn new(auth: &AuthConfig, base_url: &Url, store: Store) -> Result<Arc<Self>, SetupError> {
        let cookies = CookiePolicy::for_base_url(base_url)?;
        let provider = Arc::new(oidc::Provider::new(
            auth,
            cookies::join(base_url, "/auth/callback"),
        )?);
        let subject_tokens = subject_token::SubjectTokens::new(
            store.clone(),
            provider.clone(),
            auth.store_idp_tokens,
        );
        let store_keyring = store.keyring_handle();
        let pending = pending::PendingLogins::new(store_keyring.clone());
        Ok(Arc::new(ApiState {
            store,
            provider,
            cookies,
            pending,
            session_ttl: auth.session_ttl,
            subject_tokens,
            broker: std::sync::OnceLock::new(),
            origin: base_url.origin().ascii_serialization(),
            servers: std::sync::RwLock::new(Arc::new(Vec::new())),
            retention: std::sync::RwLock::new(activity::Retention::default()),
            closing: tokio::sync::watch::Sender::new(false),
            authz: authz::AuthorizationServer::from_config(auth, store_keyring)?,
            auditor: std::sync::OnceLock::new(),
            events: std::sync::RwLock::new(Arc::new(NoEvents)),
            user_servers: std::sync::RwLock::new(Arc::new(user_servers::Limits::default())),
        }))
    }

    /// Records the authorization server's credential events in the activity log (set once).
    pub fn set_auditor(&self, auditor: tessera_broker::Auditor) {
        let _ = self.auditor.set(auditor);
    }

    /// Wires the connect routes to the broker (once; a second call is refused: `false`).
    pub fn set_broker(&self, broker: credentials::BrokerRoutes) -> bool {
        self.broker.set(broker).is_ok()
    }

    /// The gateway's hook for user changes: told when a user's personal servers or shared-server
    /// preferences change and when an admin disables or enables a user, and asked for the
    /// dashboard's live figures. May be called again (the last one wins).
    pub fn set_user_events(&self, events: Arc<dyn UserEvents>) {
        *self
            .events
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = events;
    }

    /// The personal servers' limits (`max_user_servers`, `user_server_allowed_networks`) and
    /// the tool separator a server name must not contain. May be called again (reload).
    pub fn set_user_servers_config(
        &self,
        config: tessera_config::UserServersConfig,
        tool_separator: String,
    ) {
        *self
            .user_servers
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(user_servers::Limits {
            config,
            tool_separator,
        });
    }

    pub(crate) fn events(&self) -> Arc<dyn UserEvents> {
        self.events
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn user_server_limits(&self) -> Arc<user_servers::Limits> {
        self.user_servers
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn shared_servers(&self) -> Arc<Vec<servers::ServerView>> {
        self.servers
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The configured servers as `GET /api/v1/user/servers` shows them (secrets already
    /// redacted by [`servers::ServerView::from_config`]). May be called again (reload).
    pub fn set_servers(&self, servers: Vec<servers::ServerView>) {
        *self
            .servers
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(servers);
    }

    /// How long activity records are kept (`activity_retention_days`, default 30) and how many
    /// at most (`activity_max_records`, default 100 000); applied by the periodic purge.
    pub fn set_activity_retention(&self, retention: activity::Retention) {
        *self
            .retention
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = retention;
    }

    /// Ends every open activity stream (`GET /api/v1/activity/stream`) and makes new ones end
    /// at once: call it when shutdown starts, or graceful shutdown waits for those streams.
    pub fn close_streams(&self) {
        self.closing.send_replace(true);
    }

    /// The store the API works on.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Checks an access token of Tessera's authorization server (`tsr_at_…`) for `/mcp`.
    pub async fn verify_access_token(
        &self,
        token: &str,
    ) -> Result<Arc<authz::VerifiedClientToken>, authz::AccessTokenError> {
        authz::verify::verify(self, token).await
    }

    /// The users' provider tokens (subject tokens), refreshed when near expiry.
    pub fn subject_tokens(&self) -> &subject_token::SubjectTokens {
        &self.subject_tokens
    }
}

/// How often expired browser sessions and sign-ins in progress are purged.
pub const PURGE_INTERVAL: Duration = Duration::from_secs(600);

/// Purges expired sessions (store) and expired sign-ins in progress (memory) every `every`,
/// until the state is dropped or the runtime shuts down ([`spawn_every`]).
pub fn spawn_purge(state: &Arc<ApiState>, every: Duration) -> Option<tokio::task::JoinHandle<()>> {
    spawn_every(state, every, |state| async move {
        purge_once(&state).await;
    })
}

/// Runs `job` every `every`, the first time one period after the start, until the state is
/// dropped (the task holds only a weak reference) or the runtime shuts down. Without a Tokio
/// runtime nothing is started.
pub(crate) fn spawn_every<F, Fut>(
    state: &Arc<ApiState>,
    every: Duration,
    job: F,
) -> Option<tokio::task::JoinHandle<()>>
where
    F: Fn(Arc<ApiState>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let handle = tokio::runtime::Handle::try_current().ok()?;
    let weak = Arc::downgrade(state);
    Some(handle.spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await; // the first tick is immediate
        loop {
            tick.tick().await;
            let Some(state) = weak.upgrade() else { break };
            job(state).await;
        }
    }))
}

/// One purge pass; failures are logged, never fatal. Returns how many sessions and sign-ins in
/// progress were removed.
pub async fn purge_once(state: &ApiState) -> (u64, usize) {
    let logins = state.pending.purge_expired() + authz::purge(state);
    let sessions = match state.store.purge_expired_sessions().await {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e, "purging expired sessions failed");
            0
        }
    };
    if sessions > 0 || logins > 0 {
        tracing::debug!(sessions, logins, "purged expired sessions and sign-ins");
    }
    activity::purge(state).await;
    replicas::purge(state).await;
    (sessions, logins)
}

/// The sign-in routes and the REST API, to be merged beside the MCP front ends. Also starts
/// the periodic purge ([`spawn_purge`], every [`PURGE_INTERVAL`]) and, with several replicas,
/// this replica's reports ([`replicas::spawn_reports`]).
pub fn router(state: Arc<ApiState>) -> Router {
    spawn_purge(&state, PURGE_INTERVAL);
    replicas::spawn_reports(&state, replicas::REPORT_INTERVAL);
    Router::new()
        .route("/auth/login", get(oidc::login))
        .route("/auth/callback", get(oidc::callback))
        .route("/auth/logout", post(oidc::logout))
        .route("/api/v1/openapi.json", get(openapi::document))
        .route("/api/v1/me", get(me))
        .route("/api/v1/user/tokens", post(pat::create).get(pat::list))
        .route("/api/v1/user/tokens/{id}", delete(pat::revoke))
        .route("/api/v1/user/tokens/{id}/regenerate", post(pat::regenerate))
        .route("/api/v1/user/idp-token", get(subject_token::status))
        .route(
            "/api/v1/user/servers",
            get(user_servers::list).post(user_servers::create),
        )
        .route(
            "/api/v1/user/servers/{name}",
            get(user_servers::get_one)
                .put(user_servers::update)
                .delete(user_servers::remove),
        )
        .route(
            "/api/v1/user/servers/{name}/enable",
            post(user_servers::enable),
        )
        .route("/api/v1/user/diagnostics", get(user_servers::diagnostics))
        .route("/api/v1/user/credentials", get(credentials::list))
        .route(
            "/api/v1/user/credentials/{server}",
            delete(credentials::disconnect),
        )
        .route("/api/v1/admin/users", get(admin::users))
        .route("/api/v1/admin/users/{id}/disable", post(admin::disable))
        .route("/api/v1/admin/users/{id}/enable", post(admin::enable))
        .route("/api/v1/admin/sessions", get(admin::sessions))
        .route("/api/v1/admin/sessions/{id}", delete(admin::revoke_session))
        .route("/api/v1/admin/mcp-sessions", get(admin::mcp_sessions))
        .route(
            "/api/v1/admin/mcp-sessions/{handle}",
            delete(admin::end_mcp_session),
        )
        .route(
            "/api/v1/admin/servers/{name}/restart",
            post(admin::restart_server),
        )
        .route("/api/v1/admin/dashboard", get(admin::dashboard))
        .route("/api/v1/activity", get(activity::list))
        .route("/api/v1/activity/stream", get(activity::stream))
        .route("/api/v1/activity/export", get(activity::export))
        .route(
            "/api/v1/user/credentials/{server}/connect",
            get(credentials::connect),
        )
        .route(
            "/api/v1/user/credentials/{server}/callback",
            get(credentials::callback),
        )
        .merge(authz::router(&state))
        .with_state(state)
        .merge(ui::router())
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

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret as _;
    use tessera_store::{Role, UserLogin};

    pub(crate) async fn test_state(dir: &std::path::Path) -> Arc<ApiState> {
        let base = Url::parse("http://127.0.0.1:9").unwrap();
        let mut auth = AuthConfig::oidc(
            "http://127.0.0.1:9/idp",
            "tessera",
            base.join("/mcp").unwrap(),
        );
        // Every route is mounted, the authorization server's included.
        auth.authorization_server = Some(tessera_config::AuthorizationServerConfig::default());
        let store = Store::open(dir).await.unwrap();
        ApiState::new(&auth, &base, store).unwrap()
    }

    #[tokio::test]
    async fn a_purge_removes_expired_sessions_and_sign_ins_only() {
        let dir = tempfile::tempdir().unwrap();
        let state = test_state(dir.path()).await;
        let user = state
            .store
            .upsert_user(&UserLogin {
                issuer: "i",
                subject: "s",
                email: None,
                display_name: None,
                role_if_new: Role::User,
            })
            .await
            .unwrap();
        let live = state
            .store
            .create_session(&user.id, Duration::from_secs(3600), None, None)
            .await
            .unwrap();
        state
            .store
            .create_session(&user.id, Duration::ZERO, None, None)
            .await
            .unwrap();
        state
            .pending
            .insert("old".into(), pending::tests::expired_login())
            .unwrap();
        assert_eq!(purge_once(&state).await, (1, 1));
        assert_eq!(purge_once(&state).await, (0, 0));
        let kept = state
            .store
            .get_session(live.cookie_value.expose_secret())
            .await
            .unwrap();
        assert!(kept.is_some());
    }

    #[tokio::test]
    async fn the_periodic_purge_runs_and_stops_with_the_state() {
        let dir = tempfile::tempdir().unwrap();
        let state = test_state(dir.path()).await;
        state
            .pending
            .insert("old".into(), pending::tests::expired_login())
            .unwrap();
        let task = spawn_purge(&state, Duration::from_millis(20)).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while state.pending.len() != 0 {
            assert!(std::time::Instant::now() < deadline, "purge did not run");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        drop(state);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the purge task stops once the state is gone")
            .unwrap();
    }
}
