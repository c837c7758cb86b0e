//! Resolve (user, server) to the header value that user sends to that server.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use http::{HeaderName, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use tessera_config::{AuthBrokerConfig, BrokerMode, ServerConfig, SubjectTokenType, Transport};

use crate::audit::{ActivityAction, ActivityMethod, ActivityOutcome, Auditor};
use crate::connector::{Connector, expires_within};
use crate::error::BrokerError;
use crate::exchange::{IssuedToken, TokenExchanger};
use crate::policy::{ConfigPolicy, Policy};
use crate::store::{CredentialStore, LockError, StoredCredential};

/// How long a caller waits for a credential (its own acquisition or another caller's) by default.
pub const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(35);
/// Opened credentials kept in memory by default.
pub const DEFAULT_CACHE_CAPACITY: usize = 10_000;
/// A credential expiring within this margin is treated as expired.
pub const EXPIRY_SKEW: Duration = Duration::from_secs(60);

/// Why a user's subject token (the token the gateway holds from the user's sign-in) is unavailable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SubjectTokenError {
    /// Expired and not refreshable: the user must sign in again.
    #[error("sign in again")]
    SignInAgain,
    /// Not available for another reason.
    #[error("unavailable")]
    Unavailable,
}

/// Supplies the user's current subject token (refreshing it first if it has expired).
pub trait SubjectTokenSource: Send + Sync + 'static {
    fn subject_token<'a>(
        &'a self,
        user: &'a str,
        kind: SubjectTokenType,
    ) -> BoxFuture<'a, Result<SecretString, SubjectTokenError>>;
}

/// Who asks for a credential. Borrowed from the caller's identity; nothing is copied unless an
/// acquisition starts.
#[derive(Debug, Clone, Copy, Default)]
pub struct Requester<'a> {
    /// The store's user id (`users.id`).
    pub user_id: &'a str,
    pub email: Option<&'a str>,
    pub groups: &'a [String],
    /// MCP request id / correlation id for audit.
    pub request_id: Option<&'a str>,
    /// The caller's inbound IdP access token when it can serve as subject token (None for PAT
    /// callers: then the [`SubjectTokenSource`] is asked).
    pub subject_token: Option<&'a SecretString>,
    /// The caller's IdP subject (`sub`), matched by `allowed_users` beside the user id.
    pub subject: Option<&'a str>,
}

impl<'a> Requester<'a> {
    /// A requester known only by user id.
    pub fn new(user_id: &'a str) -> Self {
        Self {
            user_id,
            ..Self::default()
        }
    }
}

/// A server prepared for brokering: its key and header name computed once.
#[derive(Debug, Clone)]
pub struct BrokeredServer {
    name: Arc<str>,
    key: Arc<str>,
    config: Arc<AuthBrokerConfig>,
    header: HeaderName,
    /// A user's personal server: its authorization server is the user's choice, so every
    /// request to it goes through the connector's guarded client.
    personal: bool,
}

impl BrokeredServer {
    pub fn new(server: &ServerConfig) -> Result<Self, BrokerError> {
        let config = server
            .auth_broker
            .clone()
            .ok_or_else(|| BrokerError::NotConfigured(server.name.clone()))?;
        let url = match &server.transport {
            Transport::Http { url, .. } => url.as_str().to_owned(),
            Transport::Stdio { .. } => {
                return Err(BrokerError::Unsupported {
                    server: server.name.clone(),
                    what: "auth_broker on a stdio server",
                });
            }
        };
        Self::from_parts(&server.name, &url, config)
    }

    /// From a name, the server URL and its `auth_broker` block.
    pub fn from_parts(
        name: &str,
        url: &str,
        config: AuthBrokerConfig,
    ) -> Result<Self, BrokerError> {
        let header = HeaderName::from_bytes(config.header.as_bytes())
            .map_err(|_| BrokerError::InvalidField("header"))?;
        if !config.header_format.contains("{token}") {
            return Err(BrokerError::InvalidField("header_format"));
        }
        Ok(Self {
            name: Arc::from(name),
            key: Arc::from(crate::server_key(name, url)),
            config: Arc::new(config),
            header,
            personal: false,
        })
    }

    /// A user's personal server (row `id` of `user_servers`): the same as [`Self::from_parts`]
    /// but keyed by [`crate::personal_server_key`], so two users' servers of the same name and
    /// URL — or a personal and a configured one — never share a key, even in maps not keyed by
    /// user (the connector's).
    pub fn personal(
        name: &str,
        url: &str,
        id: &str,
        config: AuthBrokerConfig,
    ) -> Result<Self, BrokerError> {
        let mut server = Self::from_parts(name, url, config)?;
        server.key = Arc::from(crate::personal_server_key(name, url, id));
        server.personal = true;
        Ok(server)
    }

    /// Whether a user added this server (its endpoints are the user's choice).
    pub fn is_personal(&self) -> bool {
        self.personal
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// How credentials for this server are obtained.
    pub fn mode(&self) -> BrokerMode {
        self.config.mode
    }

    /// The server's `auth_broker` block.
    pub fn config(&self) -> &AuthBrokerConfig {
        &self.config
    }

    /// The store key: see [`crate::server_key`].
    pub fn key(&self) -> &str {
        &self.key
    }
}

/// What to send upstream for one user: a header, pre-computed and marked sensitive.
pub struct ResolvedCredential {
    pub header_name: HeaderName,
    pub header_value: HeaderValue,
    pub expires_at: Option<SystemTime>,
}

impl std::fmt::Debug for ResolvedCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResolvedCredential")
            .field("header_name", &self.header_name)
            .field("header_value", &"[redacted]")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

impl ResolvedCredential {
    fn fresh(&self, now: SystemTime) -> bool {
        self.expires_at.is_none_or(|at| at > now + EXPIRY_SKEW)
    }
}

type FlightResult = Result<Arc<ResolvedCredential>, BrokerError>;
type Flight = Shared<BoxFuture<'static, FlightResult>>;
/// user id → server key → opened credential.
type CacheMap = HashMap<String, HashMap<Arc<str>, Arc<ResolvedCredential>>>;
/// (user id, server key, forced) → (flight id, the shared acquisition). `forced` flights ignore
/// the stored access token (re-acquisition after an upstream 401).
type FlightKey = (String, Arc<str>, bool);
type FlightMap = HashMap<FlightKey, (u64, Flight)>;

/// Resolves credentials. Cheap to clone.
#[derive(Clone)]
pub struct Resolver {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver")
            .field("acquire_timeout", &self.inner.acquire_timeout)
            .field("cache_capacity", &self.inner.cache_capacity)
            .finish_non_exhaustive()
    }
}

struct Inner {
    exchanger: TokenExchanger,
    store: Arc<dyn CredentialStore>,
    subjects: Arc<dyn SubjectTokenSource>,
    connector: Option<Arc<Connector>>,
    policy: Arc<dyn Policy>,
    acquire_timeout: Duration,
    cache_capacity: usize,
    /// Where acquisitions and failures are recorded; `None` = not audited.
    auditor: Option<Auditor>,
    /// user id → server key → opened credential. Never keyed by a token.
    cache: RwLock<CacheMap>,
    cache_len: AtomicU64,
    /// (user id, server key, forced) → the acquisition in progress.
    flights: Mutex<FlightMap>,
    next_flight: AtomicU64,
    metrics: crate::metrics::ResolverMetrics,
}

/// Builds a [`Resolver`].
pub struct ResolverBuilder {
    exchanger: TokenExchanger,
    store: Arc<dyn CredentialStore>,
    subjects: Arc<dyn SubjectTokenSource>,
    connector: Option<Arc<Connector>>,
    policy: Arc<dyn Policy>,
    acquire_timeout: Duration,
    cache_capacity: usize,
    auditor: Option<Auditor>,
}

impl ResolverBuilder {
    /// Record every acquisition, refresh, denial and failure (secret-free) through `auditor`.
    pub fn auditor(mut self, auditor: Auditor) -> Self {
        self.auditor = Some(auditor);
        self
    }

    /// The connect flow (refresh of `oauth_connect` credentials, connect URLs).
    pub fn connector(mut self, connector: Arc<Connector>) -> Self {
        self.connector = Some(connector);
        self
    }

    /// Replace the default policy ([`ConfigPolicy`]: the servers' allow-lists).
    pub fn policy(mut self, policy: Arc<dyn Policy>) -> Self {
        self.policy = policy;
        self
    }

    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    pub fn cache_capacity(mut self, capacity: usize) -> Self {
        self.cache_capacity = capacity.max(1);
        self
    }

    pub fn build(self) -> Resolver {
        Resolver {
            inner: Arc::new(Inner {
                exchanger: self.exchanger,
                store: self.store,
                subjects: self.subjects,
                connector: self.connector,
                policy: self.policy,
                acquire_timeout: self.acquire_timeout,
                cache_capacity: self.cache_capacity,
                auditor: self.auditor,
                cache: RwLock::new(HashMap::new()),
                cache_len: AtomicU64::new(0),
                flights: Mutex::new(HashMap::new()),
                next_flight: AtomicU64::new(0),
                metrics: crate::metrics::ResolverMetrics::default(),
            }),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What one acquisition needs, owned (it runs in its own task).
struct Job {
    user: String,
    server: BrokeredServer,
    subject: Option<SecretString>,
    request_id: Option<String>,
    forced: bool,
    /// For a forced flight: the header value the upstream refused.
    rejected: Option<HeaderValue>,
}

impl Resolver {
    pub fn builder(
        exchanger: TokenExchanger,
        store: Arc<dyn CredentialStore>,
        subjects: Arc<dyn SubjectTokenSource>,
    ) -> ResolverBuilder {
        ResolverBuilder {
            exchanger,
            store,
            subjects,
            connector: None,
            policy: Arc::new(ConfigPolicy),
            acquire_timeout: DEFAULT_ACQUIRE_TIMEOUT,
            cache_capacity: DEFAULT_CACHE_CAPACITY,
            auditor: None,
        }
    }

    /// The connector, if one was configured.
    pub fn connector(&self) -> Option<&Arc<Connector>> {
        self.inner.connector.as_ref()
    }

    /// Sync fast path: a fresh cached credential, no await, no allocation beyond the Arc clone.
    /// (No policy check: call [`Self::resolve`] for a caller the policy has not seen.)
    pub fn cached(
        &self,
        user_id: &str,
        server: &BrokeredServer,
    ) -> Option<Arc<ResolvedCredential>> {
        let hit = self.inner.cached(user_id, &server.key);
        if hit.is_some() {
            self.inner.metrics.hits.fetch_add(1, Ordering::Relaxed);
        }
        hit
    }

    /// Appends the resolver's counters (cache hits and misses, coalesced waits, acquisitions by
    /// mode and outcome, acquisition latency) in Prometheus text format.
    pub fn render_metrics(&self, out: &mut String) {
        self.inner.metrics.render(out);
    }

    /// Policy check first (denied → [`BrokerError::PolicyDenied`], audited `policy_deny` /
    /// `denied`, no token request), then cache → store → refresh / exchange / OBO, one
    /// acquisition per (user, server) at a time, each caller bounded by the acquisition timeout.
    pub async fn resolve(
        &self,
        who: &Requester<'_>,
        server: &BrokeredServer,
    ) -> Result<Arc<ResolvedCredential>, BrokerError> {
        self.check(who, server)?;
        if let Some(hit) = self.inner.cached(who.user_id, &server.key) {
            self.inner.metrics.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(hit);
        }
        self.fly(who, server, false, None).await
    }

    /// The upstream answered 401 to `rejected`. If the cache already holds a different value
    /// (another caller re-acquired), that is returned. Otherwise the cached value is dropped and
    /// a new credential obtained **ignoring the stored access token if it is the rejected one**
    /// (a fresh stored token other than the rejected one — another replica already replaced it
    /// — is used as it is): `oauth_connect` → the refresh-token grant (none, or it fails →
    /// [`BrokerError::NotConnected`]); token exchange / OBO → a new exchange. Single flight as
    /// [`Self::resolve`], across replicas too; audited (action `refresh`).
    pub async fn reacquire(
        &self,
        who: &Requester<'_>,
        server: &BrokeredServer,
        rejected: &HeaderValue,
    ) -> Result<Arc<ResolvedCredential>, BrokerError> {
        self.check(who, server)?;
        if let Some(hit) = self.inner.cached(who.user_id, &server.key) {
            if hit.header_value != rejected {
                return Ok(hit);
            }
            self.invalidate(who.user_id, server);
        }
        self.fly(who, server, true, Some(rejected)).await
    }

    /// Record that injecting the credential failed (e.g. the upstream refused it even after
    /// [`Self::reacquire`]); `reason` must be a fixed, secret-free phrase.
    pub fn record_inject_failure(
        &self,
        who: &Requester<'_>,
        server: &BrokeredServer,
        reason: &str,
    ) {
        self.inner.audit_record(
            who.user_id,
            who.request_id,
            server,
            ActivityAction::Inject,
            ActivityOutcome::Failure,
            Some(reason),
            None,
        );
    }

    fn check(&self, who: &Requester<'_>, server: &BrokeredServer) -> Result<(), BrokerError> {
        if who.user_id.is_empty() {
            return Err(BrokerError::Unauthenticated);
        }
        if !self.inner.policy.allows(who, server) {
            self.inner.audit_record(
                who.user_id,
                who.request_id,
                server,
                ActivityAction::PolicyDeny,
                ActivityOutcome::Denied,
                Some("policy"),
                None,
            );
            return Err(BrokerError::PolicyDenied {
                server: server.name.to_string(),
            });
        }
        Ok(())
    }

    async fn fly(
        &self,
        who: &Requester<'_>,
        server: &BrokeredServer,
        forced: bool,
        rejected: Option<&HeaderValue>,
    ) -> Result<Arc<ResolvedCredential>, BrokerError> {
        let user = who.user_id;
        self.inner.metrics.misses.fetch_add(1, Ordering::Relaxed);
        let flight = {
            let mut flights = lock(&self.inner.flights);
            // A finished flight filled the cache before leaving the map: check again under the lock.
            if let Some(hit) = self.inner.cached(user, &server.key)
                && rejected.is_none_or(|r| hit.header_value != r)
            {
                return Ok(hit);
            }
            // A re-acquisition in progress serves plain resolves too (it skips the stored token).
            let forced_key = (user.to_owned(), server.key.clone(), true);
            let key = (user.to_owned(), server.key.clone(), forced);
            match flights.get(&forced_key).or_else(|| flights.get(&key)) {
                Some((_, flight)) => {
                    self.inner.metrics.coalesced.fetch_add(1, Ordering::Relaxed);
                    flight.clone()
                }
                None => {
                    let id = self.inner.next_flight.fetch_add(1, Ordering::Relaxed);
                    let inner = self.inner.clone();
                    let subject = match (who.subject_token, server.config.subject_token_type) {
                        (Some(t), SubjectTokenType::AccessToken) => Some(t.clone()),
                        _ => None,
                    };
                    let job = Job {
                        user: user.to_owned(),
                        server: server.clone(),
                        subject,
                        request_id: who.request_id.map(str::to_owned),
                        forced,
                        rejected: rejected.cloned(),
                    };
                    let task_key = key.clone();
                    // Spawned so that a cancelled caller does not cancel its co-waiters.
                    let handle = tokio::spawn(async move {
                        let started = std::time::Instant::now();
                        let result = inner.acquire(&job).await;
                        inner.metrics.acquisition(
                            job.server.mode(),
                            result.is_ok(),
                            started.elapsed(),
                        );
                        let mut flights = lock(&inner.flights);
                        if flights.get(&task_key).is_some_and(|(fid, _)| *fid == id) {
                            flights.remove(&task_key);
                        }
                        result
                    });
                    let flight: Flight =
                        async move { handle.await.unwrap_or(Err(BrokerError::Aborted)) }
                            .boxed()
                            .shared();
                    flights.insert(key, (id, flight.clone()));
                    flight
                }
            }
        };
        tokio::time::timeout(self.inner.acquire_timeout, flight)
            .await
            .map_err(|_| BrokerError::AcquireTimeout)?
    }

    /// Forget the cached credential (e.g. the upstream answered 401 with it).
    pub fn invalidate(&self, user: &str, server: &BrokeredServer) {
        self.forget_user_server(user, &server.key);
    }

    /// Drop every cached credential (another replica's changes may have been missed, see
    /// `tessera_store::Change::Resync`): the next resolve of each reads the store again.
    pub fn forget_all(&self) {
        let mut cache = self
            .inner
            .cache
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        cache.clear();
        self.inner.cache_len.store(0, Ordering::Relaxed);
    }

    /// Drop every cached credential of one user for one server key (after disconnect /
    /// connect), so the next resolve reads the store again.
    pub fn forget_user_server(&self, user_id: &str, server_key: &str) {
        let mut cache = self
            .inner
            .cache
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(per_user) = cache.get_mut(user_id) {
            if per_user.remove(server_key).is_some() {
                self.inner.cache_len.fetch_sub(1, Ordering::Relaxed);
            }
            if per_user.is_empty() {
                cache.remove(user_id);
            }
        }
    }
}

impl Inner {
    fn cached(&self, user: &str, key: &str) -> Option<Arc<ResolvedCredential>> {
        let cache = self
            .cache
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let hit = cache.get(user)?.get(key)?;
        hit.fresh(SystemTime::now()).then(|| hit.clone())
    }

    fn remember(&self, user: &str, key: &Arc<str>, credential: Arc<ResolvedCredential>) {
        let mut cache = self
            .cache
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if self.cache_len.load(Ordering::Relaxed) as usize >= self.cache_capacity {
            // Drop what has expired; if that is not enough, drop whole users until there is room.
            let now = SystemTime::now();
            let mut removed = 0u64;
            cache.retain(|_, per_user| {
                let before = per_user.len();
                per_user.retain(|_, c| c.fresh(now));
                removed += (before - per_user.len()) as u64;
                !per_user.is_empty()
            });
            self.cache_len.fetch_sub(removed, Ordering::Relaxed);
            while self.cache_len.load(Ordering::Relaxed) as usize >= self.cache_capacity {
                let Some(victim) = cache.keys().next().cloned() else {
                    break;
                };
                if let Some(per_user) = cache.remove(&victim) {
                    self.cache_len
                        .fetch_sub(per_user.len() as u64, Ordering::Relaxed);
                }
            }
        }
        if cache
            .entry(user.to_owned())
            .or_default()
            .insert(key.clone(), credential)
            .is_none()
        {
            self.cache_len.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn not_connected(&self, server: &BrokeredServer) -> BrokerError {
        match &self.connector {
            Some(c) => BrokerError::NotConnected {
                server: server.name.to_string(),
                connect_url: c.connect_url(server),
            },
            None => BrokerError::Unsupported {
                server: server.name.to_string(),
                what: "oauth_connect without a connector",
            },
        }
    }

    /// Cache miss: the stored credential if it is usable; otherwise refresh / exchange / OBO at
    /// the authorization server **under the store's lock on (user, server)**, so that across
    /// replicas sharing the store only one asks at a time. A replica that waited for the lock
    /// reads the store again and uses what the other stored instead of asking again (a second
    /// use of a rotated refresh token would revoke the whole family). The wait for the lock is
    /// bounded by the acquisition timeout.
    async fn acquire(&self, job: &Job) -> FlightResult {
        let started = std::time::Instant::now();
        let (user, server) = (job.user.as_str(), &job.server);
        let audit = |action, result: Result<(), &BrokerError>| {
            let (outcome, reason) = match result {
                Ok(()) => (ActivityOutcome::Success, None),
                Err(e) => (ActivityOutcome::Failure, Some(e.reason())),
            };
            self.audit_record(
                user,
                job.request_id.as_deref(),
                server,
                action,
                outcome,
                reason,
                Some(started),
            );
        };
        let load = || async {
            self.store.load(user, &server.key).await.map_err(|e| {
                let err = BrokerError::Store(e.0);
                audit(ActivityAction::Inject, Err(&err));
                err
            })
        };
        let stored = load().await?;
        if let Some(done) = self.settle(job, stored.as_ref(), &audit) {
            return done;
        }
        // The authorization server must be asked: one process at a time per (user, server).
        let action = if stored.is_some() || job.forced {
            ActivityAction::Refresh
        } else {
            ActivityAction::Acquire
        };
        let lock = match self
            .store
            .lock(user, &server.key, self.acquire_timeout)
            .await
        {
            Ok(lock) => lock,
            Err(e) => {
                let err = match e {
                    LockError::Timeout => BrokerError::AcquireTimeout,
                    LockError::Store(e) => BrokerError::Store(e.0),
                };
                audit(action, Err(&err));
                return Err(err);
            }
        };
        // Another replica may have refreshed (or the user disconnected) while this one waited.
        let stored = if lock.is_shared() {
            let stored = load().await?;
            if let Some(done) = self.settle(job, stored.as_ref(), &audit) {
                return done;
            }
            stored
        } else {
            stored
        };
        match server.config.mode {
            BrokerMode::TokenExchange | BrokerMode::EntraObo => {
                let result = self.obtain(job).await;
                audit(action, result.as_ref().map(|_| ()));
                result
            }
            BrokerMode::OauthConnect => {
                // `settle` answered every case without a stored refresh token and a connector.
                let (Some(stored), Some(connector)) = (stored, &self.connector) else {
                    let err = self.not_connected(server);
                    audit(ActivityAction::Refresh, Err(&err));
                    return Err(err);
                };
                let Some(refresh) = &stored.refresh_token else {
                    let err = self.not_connected(server);
                    audit(ActivityAction::Refresh, Err(&err));
                    return Err(err);
                };
                match connector.refresh(server, refresh, &stored.scopes).await {
                    Ok(issued) => {
                        let result = self.keep(user, server, issued).await;
                        audit(ActivityAction::Refresh, result.as_ref().map(|_| ()));
                        result
                    }
                    Err(e) => {
                        audit(ActivityAction::Refresh, Err(&e));
                        tracing::debug!(server = %server.name, reason = e.reason(), "connect refresh failed");
                        Err(self.not_connected(server))
                    }
                }
            }
        }
    }

    /// What the stored credential answers without asking the authorization server, if anything:
    /// a fresh token (for a re-acquisition: a fresh token other than the rejected one — another
    /// replica already replaced it), or for `oauth_connect`, "connect first" or a token that
    /// cannot be refreshed.
    fn settle(
        &self,
        job: &Job,
        stored: Option<&StoredCredential>,
        audit: &dyn Fn(ActivityAction, Result<(), &BrokerError>),
    ) -> Option<FlightResult> {
        let (user, server) = (job.user.as_str(), &job.server);
        if let Some(stored) = stored
            && !expires_within(stored.expires_at, EXPIRY_SKEW)
        {
            let resolved = header_for(server, &stored.access_token, stored.expires_at);
            let usable = match (&resolved, job.forced, &job.rejected) {
                (Err(_), _, _) | (Ok(_), false, _) => true,
                (Ok(r), true, Some(rejected)) => r.header_value != rejected,
                (Ok(_), true, None) => false,
            };
            if usable {
                audit(ActivityAction::Inject, resolved.as_ref().map(|_| ()));
                let resolved = match resolved {
                    Ok(r) => Arc::new(r),
                    Err(e) => return Some(Err(e)),
                };
                self.remember(user, &server.key, resolved.clone());
                return Some(Ok(resolved));
            }
        }
        if server.config.mode != BrokerMode::OauthConnect {
            return None;
        }
        let Some(stored) = stored else {
            let err = self.not_connected(server);
            audit(ActivityAction::Acquire, Err(&err));
            return Some(Err(err));
        };
        if stored.refresh_token.is_some() && self.connector.is_some() {
            return None;
        }
        // No way to refresh: serve the token until it actually expires (unless the upstream
        // just refused it), then ask the user to connect again.
        if !job.forced && !expires_within(stored.expires_at, Duration::ZERO) {
            return Some(header_for(server, &stored.access_token, stored.expires_at).map(Arc::new));
        }
        let err = self.not_connected(server);
        audit(ActivityAction::Refresh, Err(&err));
        Some(Err(err))
    }

    /// Exchange / OBO with the user's current subject token, then store and cache the result.
    async fn obtain(&self, job: &Job) -> FlightResult {
        let server = &job.server;
        let subject = match &job.subject {
            Some(t) => t.clone(),
            None => self
                .subjects
                .subject_token(&job.user, server.config.subject_token_type)
                .await
                .map_err(|e| match e {
                    SubjectTokenError::SignInAgain => BrokerError::SignInAgain,
                    SubjectTokenError::Unavailable => BrokerError::SubjectTokenUnavailable,
                })?,
        };
        let issued = self
            .exchanger
            .exchange(&server.name, &server.config, &subject)
            .await?;
        self.keep(&job.user, server, issued).await
    }

    /// Store and cache a newly issued token.
    async fn keep(&self, user: &str, server: &BrokeredServer, issued: IssuedToken) -> FlightResult {
        let resolved = Arc::new(header_for(server, &issued.access_token, issued.expires_at)?);
        let record = StoredCredential {
            access_token: issued.access_token,
            refresh_token: issued.refresh_token,
            token_type: issued.token_type,
            expires_at: issued.expires_at,
            scopes: issued.scopes,
            source: issued.source,
            obtained_at: SystemTime::now(),
            audience: server
                .config
                .resource
                .clone()
                .or_else(|| server.config.audience.clone()),
        };
        self.store
            .save(user, &server.key, &record)
            .await
            .map_err(|e| BrokerError::Store(e.0))?;
        self.remember(user, &server.key, resolved.clone());
        tracing::debug!(server = %server.name, source = record.source.as_str(), "credential acquired");
        Ok(resolved)
    }

    /// Queue one secret-free audit record: who, which server, how, what, the outcome, the coarse
    /// reason ([`BrokerError::reason`]) and how long it took. A no-op without an auditor.
    #[allow(clippy::too_many_arguments)]
    fn audit_record(
        &self,
        user: &str,
        request_id: Option<&str>,
        server: &BrokeredServer,
        action: ActivityAction,
        outcome: ActivityOutcome,
        reason: Option<&str>,
        started: Option<std::time::Instant>,
    ) {
        let Some(auditor) = &self.auditor else {
            return;
        };
        let method = match server.config.mode {
            BrokerMode::TokenExchange => ActivityMethod::TokenExchange,
            BrokerMode::EntraObo => ActivityMethod::EntraObo,
            BrokerMode::OauthConnect => ActivityMethod::Connect,
        };
        auditor.record(tessera_store::ActivityRecord {
            ts: tessera_store::now_unix(),
            user_id: Some(user.to_owned()),
            server: server.name.to_string(),
            tool: None,
            request_id: request_id.map(str::to_owned),
            method,
            action,
            outcome,
            reason: reason.map(str::to_owned),
            duration_ms: started
                .map(|s| i64::try_from(s.elapsed().as_millis()).unwrap_or(i64::MAX)),
        });
    }
}

fn header_for(
    server: &BrokeredServer,
    token: &SecretString,
    expires_at: Option<SystemTime>,
) -> Result<ResolvedCredential, BrokerError> {
    let value = server
        .config
        .header_format
        .replace("{token}", token.expose_secret());
    let mut header_value =
        HeaderValue::from_str(&value).map_err(|_| BrokerError::InvalidHeaderValue)?;
    header_value.set_sensitive(true);
    Ok(ResolvedCredential {
        header_name: server.header.clone(),
        header_value,
        expires_at,
    })
}
