//! The gateway's shared state: configured upstreams with their discovered catalogs and health,
//! the client sessions, and the discovery loop that keeps each catalog current.

use crate::FastMap as HashMap;
use crate::caller::Caller;
use crate::catalog::{ListKind, ServerCatalog};
use crate::jsonrpc::{self, Envelope, RawObject};
use crate::session::{ClientSession, FrontEnd};
use crate::upstream::{Connect, Downstream, LATEST_VERSION, Outbound, UpstreamSession};
use serde::Serialize;
use serde_json::value::RawValue;
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, Instant};
use tessera_config::{Config, ServerConfig};
use tessera_identity::UserKey;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

/// Health of one upstream as discovery sees it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    Connecting,
    Ready,
    Down,
    Disabled,
    /// A brokered server: no shared discovery session (the gateway holds no credential of its
    /// own for it); each user's catalogue is discovered with that user's credential.
    PerUser,
}

struct ServerState {
    health: Health,
    error: Option<String>,
    catalog: Arc<ServerCatalog>,
}

/// One configured upstream server.
pub struct ServerEntry {
    pub config: Arc<ServerConfig>,
    pub call_timeout: Duration,
    pub init_timeout: Duration,
    state: RwLock<ServerState>,
    /// Poked when any session of this server reports a list change.
    refresh: Notify,
    /// Poked by an admin's restart: the discovery session is replaced at once (and a backoff
    /// after a failure is cut short).
    pub(crate) restart: Notify,
    /// Counters for `/metrics` (relaxed atomics: one increment per call).
    pub stats: ServerStats,
    /// Whether each user reaches this server with their own credential (`auth_broker`).
    pub brokered: bool,
    /// Brokered servers: each user's catalogue, discovered with that user's credential. Never
    /// served to another user.
    user_catalogs: RwLock<HashMap<UserKey, Arc<ServerCatalog>>>,
    /// A personal server: the one user who added it (and the only one who can reach it).
    pub owner: Option<UserKey>,
}

/// Per-upstream counters exported at `/metrics`.
#[derive(Default)]
pub struct ServerStats {
    /// Discovery sessions the gateway opened to this upstream (the first, reconnects after a
    /// failure, an admin's restarts).
    pub discovery_connects: std::sync::atomic::AtomicU64,
    /// Client requests routed to this upstream.
    pub calls: std::sync::atomic::AtomicU64,
    /// Of those, answered by the gateway because the upstream was unavailable or failed.
    pub unavailable: std::sync::atomic::AtomicU64,
    /// Of those, answered by the gateway because the upstream did not answer in time.
    pub timeouts: std::sync::atomic::AtomicU64,
    /// Routed requests whose final answer was a JSON-RPC error.
    pub errors: std::sync::atomic::AtomicU64,
    /// Time from routing to the final answer of every routed request.
    pub latency: crate::observe::Histogram,
}

impl ServerEntry {
    fn new(config: ServerConfig, defaults: &Config, owner: Option<UserKey>) -> Arc<Self> {
        let health = if !config.enabled {
            Health::Disabled
        } else if config.auth_broker.is_some() || owner.is_some() {
            Health::PerUser
        } else {
            Health::Connecting
        };
        Arc::new(ServerEntry {
            call_timeout: config.call_timeout.unwrap_or(defaults.call_tool_timeout),
            init_timeout: config.init_timeout.unwrap_or(defaults.init_timeout),
            state: RwLock::new(ServerState {
                health,
                error: None,
                catalog: Arc::default(),
            }),
            refresh: Notify::new(),
            restart: Notify::new(),
            stats: ServerStats::default(),
            brokered: config.auth_broker.is_some(),
            user_catalogs: RwLock::new(HashMap::default()),
            owner,
            config: Arc::new(config),
        })
    }

    /// A user's own server: no discovery session of the gateway; its catalogue is discovered
    /// through the owner's session, like a brokered server's.
    pub(crate) fn personal(config: ServerConfig, owner: UserKey, defaults: &Config) -> Arc<Self> {
        Self::new(config, defaults, Some(owner))
    }

    /// Whether each user's catalogue is discovered through their own session (brokered and
    /// personal servers) rather than by the gateway's discovery session.
    pub fn per_user(&self) -> bool {
        self.brokered || self.owner.is_some()
    }

    pub fn catalog(&self) -> Arc<ServerCatalog> {
        self.state
            .read()
            .map(|s| s.catalog.clone())
            .unwrap_or_default()
    }

    pub fn health(&self) -> (Health, Option<String>) {
        self.state
            .read()
            .map(|s| (s.health.clone(), s.error.clone()))
            .unwrap_or((Health::Down, None))
    }

    /// Records discovery's view of the upstream. A server that is down lists nothing, so that
    /// clients do not see tools they cannot call.
    fn set_health(&self, health: Health, error: Option<String>) {
        if let Ok(mut s) = self.state.write() {
            if health == Health::Down {
                s.catalog = Arc::default();
            }
            s.health = health;
            s.error = error;
        }
    }

    pub fn request_refresh(&self) {
        self.refresh.notify_one();
    }

    /// A brokered server's catalogue as `user` sees it, if discovered.
    pub fn user_catalog(&self, user: &UserKey) -> Option<Arc<ServerCatalog>> {
        self.user_catalogs
            .read()
            .ok()
            .and_then(|m| m.get(user).cloned())
    }

    pub fn set_user_catalog(&self, user: &UserKey, catalog: Arc<ServerCatalog>) {
        if let Ok(mut m) = self.user_catalogs.write() {
            m.insert(user.clone(), catalog);
        }
    }

    /// Users whose catalogue of this (brokered) server is cached.
    pub fn user_catalog_count(&self) -> usize {
        self.user_catalogs.read().map(|m| m.len()).unwrap_or(0)
    }

    /// Forgets every user's catalogue of this server.
    fn forget_all_user_catalogs(&self) {
        if let Ok(mut m) = self.user_catalogs.write() {
            m.clear();
        }
    }

    /// Keeps only the catalogues of users in `live` (users with a client session).
    fn retain_user_catalogs(&self, live: &crate::FastSet<UserKey>) {
        if let Ok(mut m) = self.user_catalogs.write() {
            m.retain(|user, _| live.contains(user));
        }
    }

    /// Forgets `user`'s catalogue (list_changed, credential change, disconnect).
    pub fn forget_user_catalog(&self, user: &UserKey) -> bool {
        self.user_catalogs
            .write()
            .map(|mut m| m.remove(user).is_some())
            .unwrap_or(false)
    }
}

/// Counts the brokered upstream sessions open, per user and in all, against the configured caps.
#[derive(Default)]
pub struct SessionCaps {
    per_user: std::sync::Mutex<HashMap<UserKey, usize>>,
    total: std::sync::atomic::AtomicUsize,
}

/// A brokered upstream session's place under the caps; given back when dropped.
pub struct CapSlot {
    caps: Weak<Gateway>,
    user: UserKey,
}

impl Drop for CapSlot {
    fn drop(&mut self) {
        if let Some(gw) = self.caps.upgrade() {
            gw.caps.release(&self.user);
        }
    }
}

impl SessionCaps {
    fn take(&self, user: &UserKey, per_user_max: usize, total_max: usize) -> Result<(), String> {
        use std::sync::atomic::Ordering::Relaxed;
        let mut per_user = self
            .per_user
            .lock()
            .map_err(|_| "session accounting unavailable".to_owned())?;
        let mine = per_user.get(user).copied().unwrap_or(0);
        if mine >= per_user_max {
            return Err(format!(
                "you have {mine} upstream sessions open, the most allowed per user (max_upstream_sessions_per_user); close idle MCP clients or try again later"
            ));
        }
        if self.total.load(Relaxed) >= total_max {
            return Err(
                "the gateway holds as many upstream sessions as it allows (max_upstream_sessions); try again later"
                    .to_owned(),
            );
        }
        per_user.insert(user.clone(), mine + 1);
        self.total.fetch_add(1, Relaxed);
        Ok(())
    }

    fn release(&self, user: &UserKey) {
        use std::sync::atomic::Ordering::Relaxed;
        if let Ok(mut per_user) = self.per_user.lock()
            && let Some(n) = per_user.get_mut(user)
        {
            *n -= 1;
            if *n == 0 {
                per_user.remove(user);
            }
            self.total.fetch_sub(1, Relaxed);
        }
    }

    /// Brokered upstream sessions open now.
    pub fn total(&self) -> usize {
        self.total.load(std::sync::atomic::Ordering::Relaxed)
    }
}

pub struct Gateway {
    pub config: Arc<Config>,
    /// Bearer-token validation and RFC 9728 challenges for the MCP front ends; `None` only when
    /// the configuration runs without identity.
    pub auth: Option<tessera_identity::McpAuth>,
    pat_verifier: std::sync::OnceLock<Arc<dyn crate::caller::PatVerifier>>,
    /// Seals session state into session ids so another replica can resume a session.
    session_sealer: std::sync::OnceLock<Arc<dyn crate::resume::SessionSealer>>,
    /// Sessions ended here (their client's DELETE, an admin), which must not be resumed here:
    /// [`crate::live::session_handle`] → when.
    pub(crate) ended_sessions: std::sync::Mutex<HashMap<String, Instant>>,
    /// MCP requests refused by authentication (for `/metrics`).
    pub auth_rejections: std::sync::atomic::AtomicU64,
    /// The one pooled HTTP client for every HTTP upstream.
    pub http: crate::upstream::client::HttpClient,
    /// The pooled HTTP client of users' personal servers: its resolver refuses internal
    /// addresses (`user_server_allowed_networks` aside) at connection time.
    pub personal_http: crate::upstream::client::HttpClient,
    pub servers: Vec<Arc<ServerEntry>>,
    by_name: HashMap<String, usize>,
    pub(crate) sessions: RwLock<HashMap<String, Arc<ClientSession>>>,
    pub shutdown: CancellationToken,
    pub started: Instant,
    /// Obtains per-user credentials for brokered servers (set once at start-up).
    broker: std::sync::OnceLock<Arc<dyn crate::credentials::CredentialBroker>>,
    /// Brokered upstream sessions open, against `max_upstream_sessions[_per_user]`.
    pub caps: SessionCaps,
    /// Receives every finished `tools/call` of a signed-in user (the activity log).
    observer: std::sync::OnceLock<Arc<dyn crate::observe::CallObserver>>,
    /// MCP messages received, by method (`observe::METHODS`).
    pub requests: [std::sync::atomic::AtomicU64; crate::observe::METHODS.len()],
    /// Loads users' settings (personal servers, switched-off shared servers, disabled flag);
    /// without one, every user sees the shared servers only.
    directory: std::sync::OnceLock<Arc<dyn crate::users::UserDirectory>>,
    /// The settings of users with a session here (and of those who just arrived), with when
    /// each was loaded.
    users: RwLock<HashMap<UserKey, (Arc<crate::users::UserView>, Instant)>>,
    /// MCP requests refused because an admin disabled their user (for `/metrics`).
    pub disabled_rejections: std::sync::atomic::AtomicU64,
}

/// Why a signed-in user's request is not admitted.
#[derive(Debug, thiserror::Error)]
pub enum AdmitError {
    #[error("your account is disabled; ask a Tessera administrator")]
    Disabled,
    #[error("your settings could not be loaded: {0}")]
    Unavailable(String),
}

/// Why a caller cannot reach a server by that name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// No such server for this caller (or it is disabled): as if it did not exist.
    Unknown,
    /// A shared server the user switched off for themselves.
    SwitchedOff,
    /// The caller's scoped agent token does not include this server.
    OutsideToken,
}

impl Gateway {
    pub fn new(config: Config) -> Result<Arc<Self>, crate::error::UpstreamError> {
        let http = crate::upstream::client::HttpClient::new()?;
        let personal_http =
            crate::upstream::client::HttpClient::guarded(config.user_servers.clone())?;
        let auth = match config.auth.oidc() {
            Some(auth_config) => {
                // The identity provider is asked rarely (JWKS, introspection; results cached), so
                // a plain reqwest client with a timeout is fine here, off the per-call path.
                let idp_http = reqwest::Client::builder()
                    .timeout(Duration::from_secs(15))
                    .redirect(reqwest::redirect::Policy::none())
                    .build()
                    .map_err(|e| {
                        crate::error::UpstreamError::Config(format!(
                            "HTTP client for the identity provider: {e}"
                        ))
                    })?;
                Some(tessera_identity::McpAuth::new(
                    Arc::new(auth_config.clone()),
                    idp_http,
                ))
            }
            None => None,
        };
        let config = Arc::new(config);
        let servers: Vec<Arc<ServerEntry>> = config
            .servers
            .iter()
            .map(|s| ServerEntry::new(s.clone(), &config, None))
            .collect();
        let by_name = servers
            .iter()
            .enumerate()
            .map(|(i, s)| (s.config.name.clone(), i))
            .collect();
        Ok(Arc::new(Gateway {
            config,
            auth,
            pat_verifier: std::sync::OnceLock::new(),
            session_sealer: std::sync::OnceLock::new(),
            ended_sessions: std::sync::Mutex::new(HashMap::default()),
            auth_rejections: std::sync::atomic::AtomicU64::new(0),
            http,
            personal_http,
            servers,
            by_name,
            sessions: RwLock::new(HashMap::default()),
            shutdown: CancellationToken::new(),
            started: Instant::now(),
            broker: std::sync::OnceLock::new(),
            caps: SessionCaps::default(),
            observer: std::sync::OnceLock::new(),
            requests: Default::default(),
            directory: std::sync::OnceLock::new(),
            users: RwLock::new(HashMap::default()),
            disabled_rejections: std::sync::atomic::AtomicU64::new(0),
        }))
    }

    /// Sets where users' settings come from (once, at start-up).
    pub fn set_user_directory(&self, directory: Arc<dyn crate::users::UserDirectory>) {
        let _ = self.directory.set(directory);
    }

    /// `user`'s settings if loaded (every admitted request loaded them).
    pub fn user_view(&self, user: &UserKey) -> Option<Arc<crate::users::UserView>> {
        self.users
            .read()
            .ok()
            .and_then(|u| u.get(user).map(|(v, _)| v.clone()))
    }

    /// Admits a signed-in user's request: loads their settings on their first request (one
    /// database read; later requests read memory) and refuses a disabled user.
    pub async fn admit(&self, identity: &tessera_identity::Identity) -> Result<(), AdmitError> {
        let view = match self.user_view(&identity.user) {
            Some(view) => view,
            None => {
                let Some(directory) = self.directory.get() else {
                    return Ok(());
                };
                let settings = directory
                    .load(&identity.user)
                    .await
                    .map_err(AdmitError::Unavailable)?;
                let view = Arc::new(crate::users::UserView::build(
                    settings,
                    &identity.user,
                    &self.config,
                    None,
                ));
                let mut users = self
                    .users
                    .write()
                    .map_err(|_| AdmitError::Unavailable("lock poisoned".into()))?;
                // A reload that raced with this first load keeps the newer view.
                users
                    .entry(identity.user.clone())
                    .or_insert((view, Instant::now()))
                    .0
                    .clone()
            }
        };
        if view.disabled {
            self.disabled_rejections
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Err(AdmitError::Disabled);
        }
        Ok(())
    }

    /// `user`'s settings changed (REST API, admin, another replica): load them again. Their
    /// sessions lose upstream sessions to personal servers that went away or changed and are
    /// told their lists changed; a disabled user's sessions end at once.
    pub async fn reload_user(&self, user: &UserKey) {
        let Some(directory) = self.directory.get() else {
            return;
        };
        let settings = match directory.load(user).await {
            Ok(s) => s,
            Err(e) => {
                // Cannot tell what changed: forget the view, so the next request loads it.
                tracing::warn!(error = %e, "reloading a user's settings failed");
                if let Ok(mut users) = self.users.write() {
                    users.remove(user);
                }
                return;
            }
        };
        let previous = self.user_view(user);
        let view = Arc::new(crate::users::UserView::build(
            settings,
            user,
            &self.config,
            previous.as_deref(),
        ));
        if let Ok(mut users) = self.users.write() {
            users.insert(user.clone(), (view.clone(), Instant::now()));
        }
        if view.disabled {
            self.end_sessions_of(user).await;
            return;
        }
        let gone = previous.map(|p| p.gone_in(&view)).unwrap_or_default();
        for session in self.sessions_of(user) {
            for name in &gone {
                session.close_upstream(name).await;
            }
            if session.is_initialized() {
                for kind in [ListKind::Tools, ListKind::Prompts, ListKind::Resources] {
                    session
                        .send_standalone(jsonrpc::notification(kind.changed_notification(), None));
                }
            }
        }
    }

    /// Ends every client session of `user` here (and so their upstream sessions).
    pub async fn end_sessions_of(&self, user: &UserKey) -> usize {
        let ids: Vec<String> = self
            .sessions_of(user)
            .iter()
            .map(|s| s.id.clone())
            .collect();
        for id in &ids {
            self.end_session(id).await;
        }
        if !ids.is_empty() {
            tracing::info!(
                sessions = ids.len(),
                "ended the client sessions of a disabled user"
            );
        }
        ids.len()
    }

    /// The server `name` as `caller` may reach it: their own personal server of that name, else
    /// the shared one unless they switched it off; a scoped agent token reaches only its
    /// servers.
    pub fn entry_for(&self, caller: &Caller, name: &str) -> Result<Arc<ServerEntry>, Denied> {
        let Some(identity) = caller.identity() else {
            return self.server(name).cloned().ok_or(Denied::Unknown);
        };
        let view = self.user_view(&identity.user);
        let entry = match view.as_ref().and_then(|v| v.personal(name)) {
            Some(personal) => personal.clone(),
            None => {
                let shared = self.server(name).ok_or(Denied::Unknown)?;
                if view.as_ref().is_some_and(|v| v.switched_off(name)) {
                    return Err(Denied::SwitchedOff);
                }
                shared.clone()
            }
        };
        if let Some(scope) = &identity.agent
            && !scope.allows_server(name)
        {
            return Err(Denied::OutsideToken);
        }
        Ok(entry)
    }

    /// The per-user servers (brokered shared ones and the caller's personal ones) `caller` may
    /// reach, in list order: shared in configuration order, then personal by name.
    pub fn per_user_entries(&self, caller: &Caller) -> Vec<Arc<ServerEntry>> {
        let Some(identity) = caller.identity() else {
            return Vec::new();
        };
        let view = self.user_view(&identity.user);
        let scope = identity.agent.as_deref();
        let mut out: Vec<Arc<ServerEntry>> = self
            .servers
            .iter()
            .filter(|s| s.config.enabled && s.brokered)
            .filter(|s| {
                view.as_ref().is_none_or(|v| {
                    !v.switched_off(&s.config.name) && v.personal(&s.config.name).is_none()
                })
            })
            .cloned()
            .collect();
        if let Some(view) = &view {
            out.extend(view.personal_servers().iter().cloned());
        }
        out.retain(|s| scope.is_none_or(|a| a.allows_server(&s.config.name)));
        out
    }

    /// Sets the receiver of finished tool calls (once, at start-up).
    pub fn set_observer(&self, observer: Arc<dyn crate::observe::CallObserver>) {
        let _ = self.observer.set(observer);
    }

    pub fn observer(&self) -> Option<&Arc<dyn crate::observe::CallObserver>> {
        self.observer.get()
    }

    /// Counts one MCP message by method.
    pub fn count_request(&self, method: &str) {
        self.requests[crate::observe::method_index(method)]
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Sets the credential broker for brokered servers (once, at start-up). Without one, a
    /// brokered server refuses every call: there is never a fallback to a shared identity.
    pub fn set_broker(&self, broker: Arc<dyn crate::credentials::CredentialBroker>) {
        let _ = self.broker.set(broker);
    }

    pub fn broker(&self) -> Option<&Arc<dyn crate::credentials::CredentialBroker>> {
        self.broker.get()
    }

    /// Takes a place for one more brokered upstream session of `user`, or says why not.
    pub fn take_session_slot(self: &Arc<Self>, user: &UserKey) -> Result<CapSlot, String> {
        self.caps.take(
            user,
            self.config.max_upstream_sessions_per_user,
            self.config.max_upstream_sessions,
        )?;
        Ok(CapSlot {
            caps: Arc::downgrade(self),
            user: user.clone(),
        })
    }

    /// The client sessions opened by `user`.
    pub fn sessions_of(&self, user: &UserKey) -> Vec<Arc<ClientSession>> {
        self.sessions
            .read()
            .map(|s| {
                s.values()
                    .filter(|c| c.caller.identity().is_some_and(|i| &i.user == user))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `user`'s credential for `server` changed (connected, refreshed by the user, disconnected):
    /// their catalogue of it is rediscovered, their clients are told the lists changed, and URL
    /// elicitations waiting for this connection are completed.
    /// Forgets every per-user catalogue of every brokered server: they are discovered again on
    /// the next list (after changes from other replicas may have been missed).
    pub fn forget_all_user_catalogs(&self) {
        for entry in &self.servers {
            entry.forget_all_user_catalogs();
        }
    }

    /// Users whose settings are held here (to reload them all after a resync).
    pub fn loaded_users(&self) -> Vec<UserKey> {
        self.users
            .read()
            .map(|u| u.keys().cloned().collect())
            .unwrap_or_default()
    }

    pub fn credential_changed(&self, user: &UserKey, server: &str) {
        // The server that name means for this user: their personal one, else the shared one.
        let personal = self
            .user_view(user)
            .and_then(|view| view.personal(server).cloned());
        if let Some(entry) = personal.as_ref().or_else(|| self.server(server)) {
            let forgot = entry.forget_user_catalog(user);
            tracing::debug!(
                server,
                personal = personal.is_some(),
                forgot,
                "credential changed: catalogue forgotten"
            );
        }
        for session in self.sessions_of(user) {
            if !session.is_initialized() {
                continue;
            }
            for id in session.take_elicitations(server) {
                let params = serde_json::json!({ "elicitationId": id });
                session.send_standalone(jsonrpc::notification(
                    "notifications/elicitation/complete",
                    Some(&jsonrpc::to_raw(&params)),
                ));
            }
            for kind in [ListKind::Tools, ListKind::Prompts, ListKind::Resources] {
                session.send_standalone(jsonrpc::notification(kind.changed_notification(), None));
            }
        }
    }

    /// Accepts Tessera's personal access tokens on the MCP front ends (set once, at start-up).
    pub fn set_pat_verifier(&self, verifier: Arc<dyn crate::caller::PatVerifier>) {
        let _ = self.pat_verifier.set(verifier);
    }

    pub fn pat_verifier(&self) -> Option<&Arc<dyn crate::caller::PatVerifier>> {
        self.pat_verifier.get()
    }

    /// Lets session ids carry sealed state, so any replica can resume a session (set once, at
    /// start-up; see [`crate::resume`]).
    pub fn set_session_sealer(&self, sealer: Arc<dyn crate::resume::SessionSealer>) {
        let _ = self.session_sealer.set(sealer);
    }

    pub(crate) fn session_sealer(&self) -> Option<&dyn crate::resume::SessionSealer> {
        self.session_sealer.get().map(|s| s.as_ref())
    }

    /// Starts one discovery loop per enabled upstream.
    pub fn start(self: &Arc<Self>) {
        for entry in self
            .servers
            .iter()
            .filter(|s| s.config.enabled && !s.brokered)
        {
            tokio::spawn(discovery_loop(Arc::downgrade(self), entry.clone()));
        }
        tokio::spawn(reap_idle_sessions(Arc::downgrade(self)));
    }

    /// Milliseconds since the gateway started (the clock of session activity).
    pub fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    pub fn server(&self, name: &str) -> Option<&Arc<ServerEntry>> {
        self.by_name
            .get(name)
            .and_then(|&i| self.servers.get(i))
            .filter(|s| s.config.enabled)
    }

    pub fn create_session(
        self: &Arc<Self>,
        front_end: FrontEnd,
        caller: Caller,
    ) -> Arc<ClientSession> {
        self.create_session_with_id(
            front_end,
            caller,
            crate::session::new_session_id(),
            self.config.routing_mode,
        )
    }

    /// [`Gateway::create_session`] under a given id.
    pub fn create_session_with_id(
        self: &Arc<Self>,
        front_end: FrontEnd,
        caller: Caller,
        id: String,
        routing: tessera_config::RoutingMode,
    ) -> Arc<ClientSession> {
        if let Some(identity) = caller.identity() {
            // Who opened a session, for the operator (once per session; every tool call is in
            // the activity log).
            tracing::info!(user = caller.label(), subject = %identity.user.subject, "client session opened");
        }
        let session = ClientSession::with_id(Arc::downgrade(self), front_end, caller, id, routing);
        session.touch(self.now_ms());
        if let Ok(mut sessions) = self.sessions.write() {
            sessions.insert(session.id.clone(), session.clone());
        }
        session
    }

    /// The session `id` names: a known one of `caller` ([`Gateway::session`]), or one another
    /// replica opened, re-created here from the state sealed in its id ([`crate::resume`]).
    pub fn session_or_resume(
        self: &Arc<Self>,
        id: &str,
        caller: &Caller,
        routing: tessera_config::RoutingMode,
    ) -> Option<Arc<ClientSession>> {
        if let Some(session) = self.session(id, caller) {
            return Some(session);
        }
        if self.was_ended(id) {
            return None;
        }
        let params = crate::resume::resumable_params(id, self.session_sealer(), caller)?;
        let session = ClientSession::with_id(
            Arc::downgrade(self),
            FrontEnd::Streamable,
            caller.clone(),
            id.to_owned(),
            routing,
        );
        if !crate::router::negotiate(&session, &params) {
            return None;
        }
        session.touch(self.now_ms());
        let mut sessions = self.sessions.write().ok()?;
        // Two requests may resume the same session at once: the first one in wins.
        let session = sessions
            .entry(id.to_owned())
            .or_insert_with(|| session)
            .clone();
        drop(sessions);
        if !session.caller.same_principal(caller) {
            return None;
        }
        tracing::info!(
            user = caller.label(),
            "client session resumed from another replica"
        );
        Some(session)
    }

    /// The session with this id if `caller` opened it; counts as activity on it. Another user's
    /// session is `None`, exactly like an unknown one, for every front end alike.
    pub fn session(&self, id: &str, caller: &crate::caller::Caller) -> Option<Arc<ClientSession>> {
        let session = self.sessions.read().ok().and_then(|s| s.get(id).cloned())?;
        if !session.caller.same_principal(caller) {
            return None;
        }
        session.renew_caller(caller);
        session.touch(self.now_ms());
        Some(session)
    }

    pub fn session_count(&self) -> usize {
        self.sessions.read().map(|s| s.len()).unwrap_or(0)
    }

    /// Ends a session its client deleted: also remembered (for `session_idle_timeout`, at most
    /// 10 000) so that this replica does not resume it from its sealed id.
    pub async fn delete_session(&self, id: &str) -> bool {
        if id.contains('.') {
            self.remember_ended(crate::live::session_handle(id));
        }
        self.end_session(id).await
    }

    /// Remembers that the session with this handle ended here and must not be resumed (for
    /// `session_idle_timeout`, at most 10 000 at a time).
    pub(crate) fn remember_ended(&self, handle: String) {
        let Ok(mut ended) = self.ended_sessions.lock() else {
            return;
        };
        let keep = self.config.session_idle_timeout;
        if ended.len() >= 10_000 {
            ended.retain(|_, at| at.elapsed() < keep);
            if ended.len() >= 10_000 {
                ended.clear();
            }
        }
        ended.insert(handle, Instant::now());
    }

    /// Whether the session `id` ended here (so it is not resumed from its sealed id). Hashes
    /// the id only when something ended: this is on the resume path, not the call path.
    fn was_ended(&self, id: &str) -> bool {
        self.ended_sessions.lock().is_ok_and(|ended| {
            !ended.is_empty() && ended.contains_key(&crate::live::session_handle(id))
        })
    }

    /// Ends a client session and its upstream sessions.
    pub async fn end_session(&self, id: &str) -> bool {
        let removed = self.sessions.write().ok().and_then(|mut s| s.remove(id));
        match removed {
            Some(session) => {
                session.close().await;
                true
            }
            None => false,
        }
    }

    /// Sends a notification to every client session's server-to-client stream.
    pub fn broadcast(&self, text: &str) {
        let sessions: Vec<Arc<ClientSession>> = self
            .sessions
            .read()
            .map(|s| s.values().cloned().collect())
            .unwrap_or_default();
        for s in sessions {
            if s.is_initialized() {
                s.send_standalone(text.to_owned());
            }
        }
    }

    /// The merged items of one list kind over all ready shared upstreams, in config order.
    pub fn merged(&self, kind: ListKind) -> Vec<Arc<ServerCatalog>> {
        self.servers
            .iter()
            .filter(|s| s.config.enabled && !s.brokered)
            .map(|s| s.catalog())
            .filter(|c| !c.items(kind).is_empty())
            .collect()
    }

    /// [`Gateway::merged`] as `caller` may see it: without shared servers they switched off
    /// (or that a personal server of theirs shadows), and only their scoped token's servers.
    pub fn merged_for(&self, caller: &Caller, kind: ListKind) -> Vec<Arc<ServerCatalog>> {
        let identity = caller.identity();
        let view = identity.and_then(|i| self.user_view(&i.user));
        let scope = identity.and_then(|i| i.agent.as_deref());
        self.servers
            .iter()
            .filter(|s| s.config.enabled && !s.brokered)
            .filter(|s| {
                let name = s.config.name.as_str();
                view.as_ref()
                    .is_none_or(|v| !v.switched_off(name) && v.personal(name).is_none())
                    && scope.is_none_or(|a| a.allows_server(name))
            })
            .map(|s| s.catalog())
            .filter(|c| !c.items(kind).is_empty())
            .collect()
    }

    /// Graceful stop: ends every client session (and so every upstream session and child).
    pub async fn stop(&self) {
        self.shutdown.cancel();
        let sessions: Vec<String> = self
            .sessions
            .read()
            .map(|s| s.keys().cloned().collect())
            .unwrap_or_default();
        let ends = sessions.iter().map(|id| self.end_session(id));
        futures::future::join_all(ends).await;
    }

    /// Prometheus text exposition (format 0.0.4) of the gateway's counters.
    pub fn metrics(&self) -> String {
        use std::fmt::Write;
        use std::sync::atomic::Ordering::Relaxed;
        let mut out = String::with_capacity(1024);
        let _ = writeln!(
            out,
            "# HELP tessera_client_sessions MCP client sessions open now.\n# TYPE tessera_client_sessions gauge\ntessera_client_sessions {}",
            self.session_count()
        );
        let _ = writeln!(
            out,
            "# HELP tessera_upstream_up Whether discovery reaches the upstream (1) or not (0).\n# TYPE tessera_upstream_up gauge"
        );
        for s in self.servers.iter().filter(|s| s.config.enabled) {
            let up = u8::from(s.health().0 == Health::Ready);
            let _ = writeln!(
                out,
                "tessera_upstream_up{{server=\"{}\"}} {up}",
                s.config.name
            );
        }
        let _ = writeln!(
            out,
            "# HELP tessera_upstream_discovery_connects_total Discovery sessions opened to an upstream (reconnects and restarts included).\n# TYPE tessera_upstream_discovery_connects_total counter"
        );
        for s in self
            .servers
            .iter()
            .filter(|s| s.config.enabled && !s.per_user())
        {
            let _ = writeln!(
                out,
                "tessera_upstream_discovery_connects_total{{server=\"{}\"}} {}",
                s.config.name,
                s.stats.discovery_connects.load(Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP tessera_upstream_calls_total Client requests routed to an upstream.\n# TYPE tessera_upstream_calls_total counter"
        );
        for s in &self.servers {
            let _ = writeln!(
                out,
                "tessera_upstream_calls_total{{server=\"{}\"}} {}",
                s.config.name,
                s.stats.calls.load(Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP tessera_upstream_failures_total Routed requests the gateway had to answer itself.\n# TYPE tessera_upstream_failures_total counter"
        );
        for s in &self.servers {
            let name = &s.config.name;
            let _ = writeln!(
                out,
                "tessera_upstream_failures_total{{server=\"{name}\",reason=\"unavailable\"}} {}",
                s.stats.unavailable.load(Relaxed)
            );
            let _ = writeln!(
                out,
                "tessera_upstream_failures_total{{server=\"{name}\",reason=\"timeout\"}} {}",
                s.stats.timeouts.load(Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP tessera_upstream_errors_total Routed requests whose answer was a JSON-RPC error.\n# TYPE tessera_upstream_errors_total counter"
        );
        for s in &self.servers {
            let _ = writeln!(
                out,
                "tessera_upstream_errors_total{{server=\"{}\"}} {}",
                s.config.name,
                s.stats.errors.load(Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP tessera_upstream_request_duration_seconds Time from routing a request to its final answer.\n# TYPE tessera_upstream_request_duration_seconds histogram"
        );
        for s in &self.servers {
            s.stats.latency.render(
                "tessera_upstream_request_duration_seconds",
                &format!("server=\"{}\"", s.config.name),
                &mut out,
            );
        }
        let _ = writeln!(
            out,
            "# HELP tessera_mcp_messages_total MCP messages received from clients, by method.\n# TYPE tessera_mcp_messages_total counter"
        );
        for (i, method) in crate::observe::METHODS.iter().enumerate() {
            let _ = writeln!(
                out,
                "tessera_mcp_messages_total{{method=\"{method}\"}} {}",
                self.requests[i].load(Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP tessera_auth_rejections_total MCP requests refused for want of a valid token.\n# TYPE tessera_auth_rejections_total counter\ntessera_auth_rejections_total {}",
            self.auth_rejections.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP tessera_disabled_user_rejections_total MCP requests refused because an admin disabled their user.\n# TYPE tessera_disabled_user_rejections_total counter\ntessera_disabled_user_rejections_total {}",
            self.disabled_rejections.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP tessera_users_loaded Users whose settings (personal servers, switches) are held in memory.\n# TYPE tessera_users_loaded gauge\ntessera_users_loaded {}",
            self.users.read().map(|u| u.len()).unwrap_or(0)
        );
        let _ = writeln!(
            out,
            "# HELP tessera_brokered_user_catalogs Per-user catalogues of brokered servers held in memory.\n# TYPE tessera_brokered_user_catalogs gauge\ntessera_brokered_user_catalogs {}",
            self.servers
                .iter()
                .map(|s| s.user_catalog_count())
                .sum::<usize>()
        );
        let _ = writeln!(
            out,
            "# HELP tessera_upstream_sessions Upstream MCP sessions alive (per-client and discovery).\n# TYPE tessera_upstream_sessions gauge\ntessera_upstream_sessions {}",
            crate::upstream::LIVE_SESSIONS.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP tessera_brokered_upstream_sessions Per-user upstream sessions of brokered servers open now.\n# TYPE tessera_brokered_upstream_sessions gauge\ntessera_brokered_upstream_sessions {}",
            self.caps.total()
        );
        if let Some(broker) = self.broker() {
            broker.metrics(&mut out);
        }
        out
    }

    /// `/readyz` body and whether every enabled upstream is ready.
    pub fn readiness(&self) -> (bool, serde_json::Value) {
        let mut upstreams = serde_json::Map::new();
        let mut ready = true;
        for s in &self.servers {
            let (health, error) = s.health();
            if s.config.enabled && !matches!(health, Health::Ready | Health::PerUser) {
                ready = false;
            }
            let c = s.catalog();
            upstreams.insert(
                s.config.name.clone(),
                serde_json::json!({ "state": health, "error": error, "tools": c.tools.len(), "prompts": c.prompts.len(), "resources": c.resources.len() }),
            );
        }
        (
            ready,
            serde_json::json!({ "ready": ready, "sessions": self.session_count(), "upstreams": upstreams }),
        )
    }
}

/// Ends client sessions that went quiet (clients that vanished without DELETE), so that their
/// upstream sessions and child processes do not accumulate.
async fn reap_idle_sessions(gateway: Weak<Gateway>) {
    let Some(gw) = gateway.upgrade() else { return };
    let idle = gw.config.session_idle_timeout;
    let shutdown = gw.shutdown.clone();
    let every = (idle.min(gw.config.upstream_idle_timeout) / 4)
        .clamp(Duration::from_secs(1), Duration::from_secs(60));
    drop(gw);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let Some(gw) = gateway.upgrade() else { return };
        let cutoff = gw
            .now_ms()
            .saturating_sub(u64::try_from(idle.as_millis()).unwrap_or(u64::MAX));
        let stale: Vec<String> = gw
            .sessions
            .read()
            .map(|s| {
                s.values()
                    .filter(|c| c.idle_since(cutoff))
                    .map(|c| c.id.clone())
                    .collect()
            })
            .unwrap_or_default();
        for id in stale {
            tracing::info!(session = %crate::live::LogId(&id), "ending idle client session");
            gw.end_session(&id).await;
        }
        // Per-user catalogues of brokered servers, and users' settings, live as long as their
        // user has a session (settings just loaded for a session being opened stay a while).
        let live: crate::FastSet<UserKey> = gw
            .sessions
            .read()
            .map(|s| {
                s.values()
                    .filter_map(|c| c.caller.identity().map(|i| i.user.clone()))
                    .collect()
            })
            .unwrap_or_default();
        for entry in gw.servers.iter().filter(|e| e.brokered) {
            entry.retain_user_catalogs(&live);
        }
        if let Ok(mut users) = gw.users.write() {
            users.retain(|user, (_, loaded)| live.contains(user) || loaded.elapsed() < idle);
        }
        if gw.caps.total() > 0 {
            let sessions: Vec<Arc<ClientSession>> = gw
                .sessions
                .read()
                .map(|s| s.values().cloned().collect())
                .unwrap_or_default();
            for s in sessions {
                s.evict_idle_upstreams(gw.config.upstream_idle_timeout)
                    .await;
            }
        }
    }
}

/// The gateway's own `initialize` params for discovery sessions. They declare every client
/// capability the gateway can forward, because upstreams may list some tools only to clients
/// that can serve them (server-everything lists its sampling and elicitation triggers only to
/// such clients); each client's own session still declares exactly that client's capabilities.
pub fn gateway_init_params() -> RawObject {
    let mut obj = RawObject::default();
    obj.set(
        "capabilities",
        jsonrpc::raw(r#"{"sampling":{},"elicitation":{},"roots":{"listChanged":true}}"#),
    );
    obj.set(
        "clientInfo",
        jsonrpc::to_raw(
            &serde_json::json!({ "name": "tessera", "version": env!("CARGO_PKG_VERSION") }),
        ),
    );
    obj
}

/// Receives what a discovery session's upstream originates: list changes trigger a refresh;
/// requests are refused (no user is behind a discovery session).
struct DiscoveryDownstream {
    entry: Weak<ServerEntry>,
    closed: Notify,
}

impl Downstream for DiscoveryDownstream {
    fn upstream_request(
        &self,
        from: &Arc<UpstreamSession>,
        id: Box<RawValue>,
        message: &Envelope,
        _related: Option<mpsc::Sender<Outbound>>,
    ) {
        let from = from.clone();
        let answer = if message.method() == "ping" {
            jsonrpc::response(&id, Some(&jsonrpc::raw("{}")), None)
        } else {
            jsonrpc::error(
                Some(&id),
                jsonrpc::METHOD_NOT_FOUND,
                "the gateway's discovery session cannot answer this",
                None,
            )
        };
        tokio::spawn(async move {
            let _ = from.send_raw(answer).await;
        });
    }

    fn upstream_notification(
        &self,
        _from: &Arc<UpstreamSession>,
        message: &Envelope,
        _raw: &str,
        _related: Option<mpsc::Sender<Outbound>>,
    ) {
        if message.method().ends_with("/list_changed")
            && let Some(entry) = self.entry.upgrade()
        {
            entry.request_refresh();
        }
    }

    fn upstream_closed(&self, _from: &Arc<UpstreamSession>, _reason: &str) {
        self.closed.notify_one();
    }
}

/// Keeps one upstream's catalog current: connect, list everything, wait for a change or a
/// failure, reconnect with exponential backoff (1 s … 30 s) while the gateway runs.
async fn discovery_loop(gateway: Weak<Gateway>, entry: Arc<ServerEntry>) {
    let name = entry.config.name.clone();
    let mut failures: u32 = 0;
    // Clients connected before the first listing need no change notice; later changes do.
    let mut first = true;
    loop {
        let Some(gw) = gateway.upgrade() else { return };
        let shutdown = gw.shutdown.clone();
        if shutdown.is_cancelled() {
            return;
        }
        let downstream = Arc::new(DiscoveryDownstream {
            entry: Arc::downgrade(&entry),
            closed: Notify::new(),
        });
        let weak_down: Weak<dyn Downstream> = {
            let d: Arc<dyn Downstream> = downstream.clone();
            Arc::downgrade(&d)
        };
        let connect = UpstreamSession::connect(Connect {
            server: entry.config.clone(),
            http: &gw.http,
            downstream: weak_down,
            init_params: gateway_init_params(),
            protocol_version: LATEST_VERSION,
            init_timeout: entry.init_timeout,
            call_timeout: entry.init_timeout.max(entry.call_timeout),
            auth: None,
        });
        let session = tokio::select! {
            _ = shutdown.cancelled() => return,
            s = connect => s,
        };
        drop(gw);
        match session {
            Ok(session) => {
                failures = 0;
                entry
                    .stats
                    .discovery_connects
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let mut restarting = false;
                loop {
                    match refresh_catalog(&session, &entry, &gateway).await {
                        Ok(changed) => {
                            entry.set_health(Health::Ready, None);
                            if !first && let Some(gw) = gateway.upgrade() {
                                let mut notices: Vec<&str> =
                                    changed.iter().map(|k| k.changed_notification()).collect();
                                notices.dedup();
                                for notice in notices {
                                    gw.broadcast(&jsonrpc::notification(notice, None));
                                }
                            }
                            first = false;
                            tracing::info!(server = %name, tools = entry.catalog().tools.len(), "upstream ready");
                        }
                        Err(e) => {
                            tracing::warn!(server = %name, error = %e, "listing upstream capabilities failed");
                            entry.set_health(Health::Down, Some(e.to_string()));
                            break;
                        }
                    }
                    tokio::select! {
                        _ = shutdown.cancelled() => {
                            session.close("gateway shutting down").await;
                            return;
                        }
                        _ = entry.refresh.notified() => continue,
                        _ = entry.restart.notified() => {
                            restarting = true;
                            break;
                        }
                        _ = downstream.closed.notified() => break,
                    }
                }
                session.close("discovery session ended").await;
                if restarting {
                    // An admin's restart: connect again at once; the catalogue stays listed
                    // until the new session's listing replaces it (clients are told if it
                    // changed).
                    tracing::info!(server = %name, "discovery session restarted by an admin");
                    continue;
                }
                if entry.health().0 == Health::Ready {
                    entry.set_health(Health::Down, Some("upstream session ended".into()));
                }
                // Its tools, prompts and resources are gone from the lists until it is back.
                if let Some(gw) = gateway.upgrade() {
                    for kind in [ListKind::Tools, ListKind::Prompts, ListKind::Resources] {
                        gw.broadcast(&jsonrpc::notification(kind.changed_notification(), None));
                    }
                }
            }
            Err(e) => {
                tracing::warn!(server = %name, error = %e, "upstream unavailable");
                entry.set_health(Health::Down, Some(e.to_string()));
            }
        }
        failures = failures.saturating_add(1);
        let backoff = Duration::from_secs(1u64 << failures.min(5).saturating_sub(1))
            .min(Duration::from_secs(30));
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
            _ = entry.restart.notified() => {}
        }
    }
}

/// Lists every kind the upstream supports (following cursors) and swaps in the new catalog.
/// Returns the kinds whose contents changed.
async fn refresh_catalog(
    session: &Arc<UpstreamSession>,
    entry: &ServerEntry,
    gateway: &Weak<Gateway>,
) -> Result<Vec<ListKind>, crate::error::UpstreamError> {
    let separator = gateway
        .upgrade()
        .map(|g| g.config.tool_separator.clone())
        .unwrap_or_else(|| "__".into());
    let old = entry.catalog();
    let catalog = discover(session, &entry.config.name, &separator).await?;
    let mut changed = Vec::new();
    for kind in [
        ListKind::Tools,
        ListKind::Prompts,
        ListKind::Resources,
        ListKind::Templates,
    ] {
        let same = old.items(kind).len() == catalog.items(kind).len()
            && old
                .items(kind)
                .iter()
                .zip(catalog.items(kind))
                .all(|(a, b)| a.get() == b.get());
        if !same {
            changed.push(kind);
        }
    }
    if let Ok(mut s) = entry.state.write() {
        s.catalog = Arc::new(catalog);
    }
    Ok(changed)
}

/// Lists every kind `session`'s upstream supports, namespaced for clients.
pub(crate) async fn discover(
    session: &Arc<UpstreamSession>,
    server: &str,
    separator: &str,
) -> Result<ServerCatalog, crate::error::UpstreamError> {
    let caps = session.info().capabilities;
    let mut catalog = ServerCatalog::default();
    for kind in [
        ListKind::Tools,
        ListKind::Prompts,
        ListKind::Resources,
        ListKind::Templates,
    ] {
        if caps.get(kind.capability()).is_none() {
            continue;
        }
        let items = list_all(session, kind).await?;
        catalog.set(kind, server, separator, items);
    }
    Ok(catalog)
}

async fn list_all(
    session: &Arc<UpstreamSession>,
    kind: ListKind,
) -> Result<Vec<Box<RawValue>>, crate::error::UpstreamError> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    // A bound on pages protects against an upstream that cycles its cursors.
    for _ in 0..1000 {
        let params = cursor
            .as_ref()
            .map(|c| jsonrpc::to_raw(&serde_json::json!({ "cursor": c })));
        let result = session.request(kind.method(), params).await?;
        let obj = RawObject::parse(result.get())
            .map_err(|e| crate::error::UpstreamError::Protocol(e.to_string()))?;
        if let Some(items) = obj.get(kind.field()) {
            let items: Vec<Box<RawValue>> = serde_json::from_str(items.get())
                .map_err(|e| crate::error::UpstreamError::Protocol(e.to_string()))?;
            out.extend(items);
        }
        cursor = obj.get_str("nextCursor");
        if cursor.is_none() {
            return Ok(out);
        }
    }
    Err(crate::error::UpstreamError::Protocol(format!(
        "{} did not end after 1000 pages",
        kind.method()
    )))
}
