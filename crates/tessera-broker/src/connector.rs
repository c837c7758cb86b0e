//! The `oauth_connect` flow (REFERENCE.md §2.5, with §3 C fixed): the user connects an upstream
//! account in the browser; Tessera keeps the resulting credential, sealed, per user.
//!
//! - [`Connector::start`]: PKCE S256 verifier, 256-bit random `state`, the pending flow
//!   **persisted** in the store (sealed verifier, 10-minute TTL, at most 10 per user) so a restart
//!   between authorize and callback loses nothing; returns the upstream authorization URL.
//! - [`Connector::complete`]: the flow is taken (single use, even on failure); the signed-in user
//!   must be the user who started it; the code is exchanged (with the verifier and the same
//!   redirect URI) and the credential stored under the flow's user.
//! - [`Connector::deny`]: consent refused → a clean "denied" outcome, audited.
//! - [`Connector::refresh`]: the refresh-token grant (the previous refresh token is kept when the
//!   response has none), used by the [`crate::Resolver`].
//!
//! The redirect URI comes from the configured public base URL only, never from request headers.
//! Every step is audited (secret-free) and announced on [`Connector::subscribe`]; connected
//! and disconnected are also published to the other replicas sharing the store
//! (`tessera_store::Change::Credential`).

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant, SystemTime};

use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use tessera_store::{
    ActivityRecord, CredentialRecord, NewConnectFlow, Store, StoreError as DbError,
};
use tokio::sync::broadcast;
use url::{Url, form_urlencoded};

use crate::audit::{ActivityAction, ActivityMethod, ActivityOutcome, Auditor};
use crate::discovery::Discovery;
use crate::error::BrokerError;
use crate::exchange::IssuedToken;
use crate::resolver::BrokeredServer;
use crate::store::CredentialSource;
use crate::token::{DEFAULT_EXCHANGE_TIMEOUT, random_token, token_request};

mod revoke;

pub use revoke::{Disconnected, revocation_code};

/// How long a started connect flow can be completed.
pub const CONNECT_FLOW_TTL: Duration = Duration::from_secs(600);
/// Connect events buffered for slow subscribers.
pub const CONNECT_EVENTS_CAPACITY: usize = 256;

/// The authorization-callback error codes passed through as they are (REFERENCE.md §2.9);
/// anything else becomes `authorization_denied`.
pub const CALLBACK_ERROR_CODES: &[&str] = &[
    "access_denied",
    "invalid_scope",
    "server_error",
    "temporarily_unavailable",
    "interaction_required",
    "login_required",
    "account_selection_required",
    "consent_required",
];

/// Reduce an authorization server's callback `error` to the allow-list.
pub fn callback_error_code(code: &str) -> &'static str {
    CALLBACK_ERROR_CODES
        .iter()
        .find(|c| **c == code)
        .copied()
        .unwrap_or("authorization_denied")
}

/// A finished flow (connected or denied).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectDone {
    pub user_id: String,
    pub server_name: String,
}

/// How a connect flow ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectOutcome {
    Connected,
    Denied,
    Failed,
    /// The user removed the credential ([`Connector::disconnect`]): drop their cached
    /// credential and catalogue of the server.
    Disconnected,
}

/// Sent to every subscriber when a flow completes, is denied or fails at the callback, and when
/// a user disconnects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectEvent {
    pub user_id: String,
    /// The server's name.
    pub server: String,
    pub outcome: ConnectOutcome,
}

/// Builds a [`Connector`].
pub struct ConnectorBuilder {
    store: Store,
    http: reqwest::Client,
    personal_http: Option<reqwest::Client>,
    public_base: Url,
    auditor: Option<Auditor>,
    timeout: Duration,
    flow_ttl: Duration,
    discovery: Discovery,
    servers: Vec<BrokeredServer>,
}

impl ConnectorBuilder {
    /// The client for personal servers' authorization servers (users choose those endpoints):
    /// give it a resolver that refuses internal addresses. Without one they use the main client.
    pub fn personal_http(mut self, http: reqwest::Client) -> Self {
        self.personal_http = Some(http);
        self
    }

    pub fn auditor(mut self, auditor: Auditor) -> Self {
        self.auditor = Some(auditor);
        self
    }

    /// Bound every token request and discovery fetch (default 30 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How long a started flow stays valid (default 10 minutes).
    pub fn flow_ttl(mut self, ttl: Duration) -> Self {
        self.flow_ttl = ttl;
        self
    }

    /// Share an RFC 8414 metadata cache (e.g. with the [`crate::TokenExchanger`]).
    pub fn discovery(mut self, discovery: Discovery) -> Self {
        self.discovery = discovery;
        self
    }

    /// Servers whose callbacks this connector completes (also registered by [`Connector::start`]).
    pub fn servers<'a>(mut self, servers: impl IntoIterator<Item = &'a BrokeredServer>) -> Self {
        self.servers.extend(servers.into_iter().cloned());
        self
    }

    pub fn build(self) -> Connector {
        let (events, _) = broadcast::channel(CONNECT_EVENTS_CAPACITY);
        let connector = Connector {
            store: self.store,
            http: self.http,
            personal_http: self.personal_http,
            public_base: self.public_base,
            auditor: self.auditor,
            timeout: self.timeout,
            flow_ttl: self.flow_ttl,
            discovery: self.discovery,
            servers: RwLock::new(HashMap::new()),
            events,
        };
        for s in &self.servers {
            connector.register(s);
        }
        connector
    }
}

/// The connect flow for every `oauth_connect` server.
pub struct Connector {
    store: Store,
    http: reqwest::Client,
    /// For personal servers ([`ConnectorBuilder::personal_http`]).
    personal_http: Option<reqwest::Client>,
    public_base: Url,
    auditor: Option<Auditor>,
    timeout: Duration,
    flow_ttl: Duration,
    discovery: Discovery,
    /// server key → server.
    servers: RwLock<HashMap<String, BrokeredServer>>,
    events: broadcast::Sender<ConnectEvent>,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("public_base", &self.public_base.as_str())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

fn path_segment(name: &str) -> String {
    url::form_urlencoded::byte_serialize(name.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

fn elapsed_ms(started: Instant) -> Option<i64> {
    Some(i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX))
}

impl Connector {
    /// The HTTP client for `server`'s authorization server: the guarded one for a personal
    /// server (its endpoints are a user's choice), the main one otherwise.
    fn http_for(&self, server: &BrokeredServer) -> &reqwest::Client {
        match &self.personal_http {
            Some(guarded) if server.is_personal() => guarded,
            _ => &self.http,
        }
    }

    /// `public_base` is Tessera's external base URL (`public_url`); redirect URIs and connect
    /// URLs are built from it alone.
    pub fn new(
        store: Store,
        http: reqwest::Client,
        public_base: Url,
        auditor: Option<Auditor>,
    ) -> Self {
        let mut b = Self::builder(store, http, public_base);
        b.auditor = auditor;
        b.build()
    }

    pub fn builder(store: Store, http: reqwest::Client, public_base: Url) -> ConnectorBuilder {
        ConnectorBuilder {
            store,
            http,
            personal_http: None,
            public_base,
            auditor: None,
            timeout: DEFAULT_EXCHANGE_TIMEOUT,
            flow_ttl: CONNECT_FLOW_TTL,
            discovery: Discovery::new(),
            servers: Vec::new(),
        }
    }

    /// Complete callbacks for `server` (flows name servers by key; a restarted process must
    /// register its servers before callbacks arrive).
    pub fn register(&self, server: &BrokeredServer) {
        self.servers
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(server.key().to_owned(), server.clone());
    }

    fn server_by_key(&self, key: &str) -> Option<BrokeredServer> {
        self.servers
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(key)
            .cloned()
    }

    /// Connect / deny / failure events, for whoever wants to resume work once a user connected.
    pub fn subscribe(&self) -> broadcast::Receiver<ConnectEvent> {
        self.events.subscribe()
    }

    /// The store this connector writes to.
    pub fn store(&self) -> &Store {
        &self.store
    }

    fn base(&self) -> &str {
        self.public_base.as_str().trim_end_matches('/')
    }

    /// Tessera's own connect page for `server`:
    /// `{public_base}/api/v1/user/credentials/{name}/connect`.
    pub fn connect_url(&self, server: &BrokeredServer) -> String {
        format!(
            "{}/api/v1/user/credentials/{}/connect",
            self.base(),
            path_segment(server.name())
        )
    }

    /// The redirect URI registered at the upstream:
    /// `{public_base}/api/v1/user/credentials/{name}/callback`.
    pub fn redirect_uri(&self, server: &BrokeredServer) -> String {
        format!(
            "{}/api/v1/user/credentials/{}/callback",
            self.base(),
            path_segment(server.name())
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn audit(
        &self,
        request_id: Option<&str>,
        user_id: Option<&str>,
        server: &str,
        action: ActivityAction,
        outcome: ActivityOutcome,
        reason: Option<&str>,
        started: Instant,
    ) {
        let Some(auditor) = &self.auditor else {
            return;
        };
        auditor.record(ActivityRecord {
            ts: tessera_store::now_unix(),
            user_id: user_id.map(str::to_owned),
            server: server.to_owned(),
            tool: None,
            request_id: request_id.map(str::to_owned),
            method: ActivityMethod::Connect,
            action,
            outcome,
            reason: reason.map(str::to_owned),
            duration_ms: elapsed_ms(started),
        });
    }

    fn announce(&self, user_id: &str, server: &str, outcome: ConnectOutcome) {
        // No subscriber is fine.
        let _ = self.events.send(ConnectEvent {
            user_id: user_id.to_owned(),
            server: server.to_owned(),
            outcome,
        });
    }

    /// Tells the other replicas sharing the store (PostgreSQL `NOTIFY`; nothing on SQLite) that
    /// the user's credential for `server` changed, so they drop what they cached and tell the
    /// user's sessions there, as a [`ConnectEvent`] does here. Delivered at once to every
    /// replica whose listener is connected; one whose listener reconnects drops all its caches
    /// instead. A failure to publish is logged, not returned: the change itself is stored.
    async fn publish_change(&self, user_id: &str, server: &BrokeredServer, connected: bool) {
        let change = tessera_store::Change::Credential {
            user_id: user_id.to_owned(),
            server: server.name().to_owned(),
            server_key: server.key().to_owned(),
            connected,
        };
        if let Err(e) = self.store.publish(&change).await {
            tracing::warn!(server = %server.name(), error = %e, "cannot tell the other replicas about a credential change");
        }
    }

    /// Starts a flow for `user_id`: returns the upstream authorization URL to redirect to.
    pub async fn start(&self, user_id: &str, server: &BrokeredServer) -> Result<Url, BrokerError> {
        self.start_traced(user_id, server, None).await
    }

    /// [`Self::start`] with a request / correlation id for the audit record.
    pub async fn start_traced(
        &self,
        user_id: &str,
        server: &BrokeredServer,
        rid: Option<&str>,
    ) -> Result<Url, BrokerError> {
        let started = Instant::now();
        let result = self.start_inner(user_id, server).await;
        match &result {
            Ok(_) => self.audit(
                rid,
                Some(user_id),
                server.name(),
                ActivityAction::ConnectStart,
                ActivityOutcome::Success,
                None,
                started,
            ),
            Err(e) => self.audit(
                rid,
                Some(user_id),
                server.name(),
                ActivityAction::ConnectStart,
                ActivityOutcome::Failure,
                Some(e.reason()),
                started,
            ),
        }
        result
    }

    async fn start_inner(
        &self,
        user_id: &str,
        server: &BrokeredServer,
    ) -> Result<Url, BrokerError> {
        use base64::Engine as _;
        if user_id.is_empty() {
            return Err(BrokerError::Unauthenticated);
        }
        let cfg = server.config();
        if cfg.mode != tessera_config::BrokerMode::OauthConnect {
            return Err(BrokerError::Unsupported {
                server: server.name().to_owned(),
                what: "a connect flow outside mode oauth_connect",
            });
        }
        let client_id = cfg
            .client_id
            .as_deref()
            .ok_or(BrokerError::MissingField("client_id"))?;
        let endpoints = self
            .discovery
            .endpoints(self.http_for(server), self.timeout, cfg, true)
            .await?;
        let authorize = endpoints
            .authorization
            .ok_or(BrokerError::MissingField("authorization_endpoint"))?;
        self.register(server);
        let state = SecretString::from(random_token(32)?);
        let verifier = SecretString::from(random_token(32)?);
        let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(Sha256::digest(verifier.expose_secret().as_bytes()));
        let redirect_uri = self.redirect_uri(server);
        self.store
            .put_connect_flow(&NewConnectFlow {
                state: &state,
                user_id,
                server_key: server.key(),
                code_verifier: &verifier,
                redirect_uri: &redirect_uri,
                ttl: self.flow_ttl,
            })
            .await
            .map_err(|e| match e {
                DbError::TooManyConnectFlows { .. } => {
                    BrokerError::Store("too many pending connect flows")
                }
                DbError::SealingDisabled => BrokerError::Store("sealing disabled"),
                DbError::UserNotFound(_) => BrokerError::Store("unknown user"),
                _ => BrokerError::Store("unavailable"),
            })?;
        let mut url = authorize;
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("response_type", "code");
            q.append_pair("client_id", client_id);
            q.append_pair("redirect_uri", &redirect_uri);
            q.append_pair("state", state.expose_secret());
            q.append_pair("code_challenge", &challenge);
            q.append_pair("code_challenge_method", "S256");
            if !cfg.scopes.is_empty() {
                q.append_pair("scope", &cfg.scopes.join(" "));
            }
            if let Some(resource) = cfg.resource.as_deref() {
                q.append_pair("resource", resource);
            }
        }
        Ok(url)
    }

    async fn take(&self, state: &str) -> Result<tessera_store::ConnectFlow, BrokerError> {
        let state = SecretString::from(state.to_owned());
        match self.store.take_connect_flow(&state).await {
            Ok(Some(flow)) => Ok(flow),
            Ok(None) => Err(BrokerError::UnknownState),
            Err(DbError::Seal(_)) => Err(BrokerError::UnknownState),
            Err(_) => Err(BrokerError::Store("unavailable")),
        }
    }

    /// The callback with a `code`: completes the flow `state` names for `signed_in_user_id`.
    pub async fn complete(
        &self,
        state: &str,
        code: &str,
        signed_in_user_id: &str,
    ) -> Result<ConnectDone, BrokerError> {
        self.complete_traced(state, code, signed_in_user_id, None)
            .await
    }

    /// [`Self::complete`] with a request / correlation id for the audit records.
    pub async fn complete_traced(
        &self,
        state: &str,
        code: &str,
        signed_in_user_id: &str,
        rid: Option<&str>,
    ) -> Result<ConnectDone, BrokerError> {
        let started = Instant::now();
        let flow = match self.take(state).await {
            Ok(flow) => flow,
            Err(e) => {
                self.audit(
                    rid,
                    None,
                    "",
                    ActivityAction::ConnectFinish,
                    ActivityOutcome::Failure,
                    Some(e.reason()),
                    started,
                );
                return Err(e);
            }
        };
        let Some(server) = self.server_by_key(&flow.server_key) else {
            let e = BrokerError::NotConfigured(flow.server_key.clone());
            self.audit(
                rid,
                Some(&flow.user_id),
                "",
                ActivityAction::ConnectFinish,
                ActivityOutcome::Failure,
                Some(e.reason()),
                started,
            );
            return Err(e);
        };
        let name = server.name().to_owned();
        let fail = |e: BrokerError| {
            self.audit(
                rid,
                Some(&flow.user_id),
                &name,
                ActivityAction::ConnectFinish,
                ActivityOutcome::Failure,
                Some(e.reason()),
                started,
            );
            self.announce(&flow.user_id, &name, ConnectOutcome::Failed);
            e
        };
        if flow.user_id != signed_in_user_id {
            tracing::warn!(server = %name, "connect callback from another user than the one who started the flow");
            return Err(fail(BrokerError::ConnectUserMismatch));
        }
        if code.is_empty() {
            return Err(fail(BrokerError::InvalidField("code")));
        }
        let cfg = server.config();
        let issued = async {
            let endpoints = self
                .discovery
                .endpoints(self.http_for(&server), self.timeout, cfg, false)
                .await?;
            let form = {
                let mut form = form_urlencoded::Serializer::new(String::new());
                form.append_pair("grant_type", "authorization_code");
                form.append_pair("code", code);
                form.append_pair("redirect_uri", &flow.redirect_uri);
                form.append_pair("code_verifier", flow.code_verifier.expose_secret());
                if cfg.client_auth == tessera_config::ClientAuth::ClientSecretBasic
                    && let Some(id) = cfg.client_id.as_deref()
                {
                    // Harmless with Basic and required by some servers.
                    form.append_pair("client_id", id);
                }
                if let Some(resource) = cfg.resource.as_deref() {
                    form.append_pair("resource", resource);
                }
                form.finish()
            };
            token_request(
                self.http_for(&server),
                self.timeout,
                &name,
                &endpoints.token,
                cfg,
                form,
            )
            .await
        }
        .await
        .map_err(&fail)?;
        let record = CredentialRecord {
            user_id: flow.user_id.clone(),
            server_key: server.key().to_owned(),
            access_token: issued.access_token,
            refresh_token: issued.refresh_token,
            expires_at: issued.expires_at.map(crate::store_binding::to_unix),
            scopes: issued.scope.unwrap_or_default(),
            token_type: issued.token_type,
            source: tessera_store::CredentialSource::Connect,
            audience: cfg.resource.clone(),
        };
        self.store
            .put_credential(&record)
            .await
            .map_err(|_| fail(BrokerError::Store("unavailable")))?;
        self.audit(
            rid,
            Some(&flow.user_id),
            &name,
            ActivityAction::ConnectFinish,
            ActivityOutcome::Success,
            None,
            started,
        );
        self.announce(&flow.user_id, &name, ConnectOutcome::Connected);
        self.publish_change(&flow.user_id, &server, true).await;
        tracing::info!(server = %name, "user connected an upstream account");
        Ok(ConnectDone {
            user_id: flow.user_id,
            server_name: name,
        })
    }

    /// The callback with an `error`: consumes the flow and records a denial (reason = the
    /// allow-listed code, see [`callback_error_code`]).
    pub async fn deny(
        &self,
        state: &str,
        error_code: &str,
        signed_in_user_id: &str,
    ) -> Result<ConnectDone, BrokerError> {
        self.deny_traced(state, error_code, signed_in_user_id, None)
            .await
    }

    /// [`Self::deny`] with a request / correlation id for the audit record.
    pub async fn deny_traced(
        &self,
        state: &str,
        error_code: &str,
        signed_in_user_id: &str,
        rid: Option<&str>,
    ) -> Result<ConnectDone, BrokerError> {
        let started = Instant::now();
        let code = callback_error_code(error_code);
        let flow = match self.take(state).await {
            Ok(flow) => flow,
            Err(e) => {
                self.audit(
                    rid,
                    None,
                    "",
                    ActivityAction::ConnectDeny,
                    ActivityOutcome::Failure,
                    Some(e.reason()),
                    started,
                );
                return Err(e);
            }
        };
        let name = self
            .server_by_key(&flow.server_key)
            .map(|s| s.name().to_owned())
            .unwrap_or_default();
        if flow.user_id != signed_in_user_id {
            self.audit(
                rid,
                Some(&flow.user_id),
                &name,
                ActivityAction::ConnectDeny,
                ActivityOutcome::Failure,
                Some(BrokerError::ConnectUserMismatch.reason()),
                started,
            );
            return Err(BrokerError::ConnectUserMismatch);
        }
        self.audit(
            rid,
            Some(&flow.user_id),
            &name,
            ActivityAction::ConnectDeny,
            ActivityOutcome::Denied,
            Some(code),
            started,
        );
        self.announce(&flow.user_id, &name, ConnectOutcome::Denied);
        Ok(ConnectDone {
            user_id: flow.user_id,
            server_name: name,
        })
    }

    /// The refresh-token grant for `server`. The new token keeps `refresh_token` when the
    /// response has none, and `previous_scopes` when the response names none.
    pub async fn refresh(
        &self,
        server: &BrokeredServer,
        refresh_token: &SecretString,
        previous_scopes: &[String],
    ) -> Result<IssuedToken, BrokerError> {
        let cfg = server.config();
        let endpoints = self
            .discovery
            .endpoints(self.http_for(server), self.timeout, cfg, false)
            .await?;
        let form = {
            let mut form = form_urlencoded::Serializer::new(String::new());
            form.append_pair("grant_type", "refresh_token");
            form.append_pair("refresh_token", refresh_token.expose_secret());
            if !cfg.scopes.is_empty() {
                form.append_pair("scope", &cfg.scopes.join(" "));
            }
            if let Some(resource) = cfg.resource.as_deref() {
                form.append_pair("resource", resource);
            }
            form.finish()
        };
        let issued = token_request(
            self.http_for(server),
            self.timeout,
            server.name(),
            &endpoints.token,
            cfg,
            form,
        )
        .await?;
        Ok(IssuedToken {
            access_token: issued.access_token,
            refresh_token: Some(
                issued
                    .refresh_token
                    .unwrap_or_else(|| refresh_token.clone()),
            ),
            token_type: issued.token_type,
            expires_at: issued.expires_at,
            scopes: issued.scope.unwrap_or_else(|| previous_scopes.to_vec()),
            source: CredentialSource::Refresh,
        })
    }
}

/// When `at` lies within `skew` from now (or in the past).
pub(crate) fn expires_within(at: Option<SystemTime>, skew: Duration) -> bool {
    at.is_some_and(|at| at <= SystemTime::now() + skew)
}
