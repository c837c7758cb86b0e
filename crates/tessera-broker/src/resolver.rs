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
use crate::error::BrokerError;
use crate::exchange::TokenExchanger;
use crate::store::{CredentialStore, StoredCredential};

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

/// A server prepared for brokering: its key and header name computed once.
#[derive(Debug, Clone)]
pub struct BrokeredServer {
    name: Arc<str>,
    key: Arc<str>,
    config: Arc<AuthBrokerConfig>,
    header: HeaderName,
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
        })
    }

    pub fn name(&self) -> &str {
        &self.name
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
/// (user id, server key) → (flight id, the shared acquisition).
type FlightMap = HashMap<(String, Arc<str>), (u64, Flight)>;

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
    acquire_timeout: Duration,
    cache_capacity: usize,
    /// Where acquisitions and failures are recorded; `None` = not audited.
    auditor: Option<Auditor>,
    /// user id → server key → opened credential. Never keyed by a token.
    cache: RwLock<CacheMap>,
    cache_len: AtomicU64,
    /// (user id, server key) → the acquisition in progress.
    flights: Mutex<FlightMap>,
    next_flight: AtomicU64,
}

/// Builds a [`Resolver`].
pub struct ResolverBuilder {
    exchanger: TokenExchanger,
    store: Arc<dyn CredentialStore>,
    subjects: Arc<dyn SubjectTokenSource>,
    acquire_timeout: Duration,
    cache_capacity: usize,
    auditor: Option<Auditor>,
}

impl ResolverBuilder {
    /// Record every acquisition, refresh and failure (secret-free) through `auditor`.
    pub fn auditor(mut self, auditor: Auditor) -> Self {
        self.auditor = Some(auditor);
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
                acquire_timeout: self.acquire_timeout,
                cache_capacity: self.cache_capacity,
                auditor: self.auditor,
                cache: RwLock::new(HashMap::new()),
                cache_len: AtomicU64::new(0),
                flights: Mutex::new(HashMap::new()),
                next_flight: AtomicU64::new(0),
            }),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
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
            acquire_timeout: DEFAULT_ACQUIRE_TIMEOUT,
            cache_capacity: DEFAULT_CACHE_CAPACITY,
            auditor: None,
        }
    }

    /// The credential `user` sends to `server`. A cache hit takes a read lock and clones an `Arc`:
    /// no decryption, no storage. A miss joins or starts the single acquisition for (user, server).
    pub async fn resolve(
        &self,
        user: &str,
        server: &BrokeredServer,
    ) -> Result<Arc<ResolvedCredential>, BrokerError> {
        if user.is_empty() {
            return Err(BrokerError::Unauthenticated);
        }
        if let Some(hit) = self.inner.cached(user, &server.key) {
            return Ok(hit);
        }
        let flight = {
            let mut flights = lock(&self.inner.flights);
            // A finished flight filled the cache before leaving the map: check again under the lock.
            if let Some(hit) = self.inner.cached(user, &server.key) {
                return Ok(hit);
            }
            let key = (user.to_owned(), server.key.clone());
            match flights.get(&key) {
                Some((_, flight)) => flight.clone(),
                None => {
                    let id = self.inner.next_flight.fetch_add(1, Ordering::Relaxed);
                    let inner = self.inner.clone();
                    let server = server.clone();
                    let task_key = key.clone();
                    // Spawned so that a cancelled caller does not cancel its co-waiters.
                    let handle = tokio::spawn(async move {
                        let result = inner.acquire(&task_key.0, &server).await;
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
        let mut cache = self
            .inner
            .cache
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(per_user) = cache.get_mut(user) {
            if per_user.remove(&server.key).is_some() {
                self.inner.cache_len.fetch_sub(1, Ordering::Relaxed);
            }
            if per_user.is_empty() {
                cache.remove(user);
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

    async fn acquire(&self, user: &str, server: &BrokeredServer) -> FlightResult {
        let started = std::time::Instant::now();
        let now = SystemTime::now();
        let stored = match self.store.load(user, &server.key).await {
            Ok(stored) => stored,
            Err(e) => {
                let err = BrokerError::Store(e.0);
                self.audit(user, server, ActivityAction::Acquire, started, Err(&err));
                return Err(err);
            }
        };
        // A stored credential that is stale makes this a refresh rather than a first acquisition.
        let action = match stored {
            Some(stored) if stored.expires_at.is_none_or(|at| at > now + EXPIRY_SKEW) => {
                let resolved =
                    Arc::new(header_for(server, &stored.access_token, stored.expires_at)?);
                self.remember(user, &server.key, resolved.clone());
                return Ok(resolved);
            }
            Some(_) => ActivityAction::Refresh,
            None => ActivityAction::Acquire,
        };
        let result = self.obtain(user, server).await;
        self.audit(user, server, action, started, result.as_ref().map(|_| ()));
        result
    }

    /// Exchange / OBO with the user's current subject token, then store and cache the result.
    async fn obtain(&self, user: &str, server: &BrokeredServer) -> FlightResult {
        match server.config.mode {
            BrokerMode::TokenExchange | BrokerMode::EntraObo => {}
            BrokerMode::OauthConnect => {
                return Err(BrokerError::NotConnected(server.name.to_string()));
            }
        }
        let subject = self
            .subjects
            .subject_token(user, server.config.subject_token_type)
            .await
            .map_err(|e| match e {
                SubjectTokenError::SignInAgain => BrokerError::SignInAgain,
                SubjectTokenError::Unavailable => BrokerError::SubjectTokenUnavailable,
            })?;
        let issued = self
            .exchanger
            .exchange(&server.name, &server.config, &subject)
            .await?;
        let resolved = Arc::new(header_for(server, &issued.access_token, issued.expires_at)?);
        let record = StoredCredential {
            access_token: issued.access_token,
            refresh_token: issued.refresh_token,
            token_type: issued.token_type,
            expires_at: issued.expires_at,
            scopes: issued.scopes,
            source: issued.source,
            obtained_at: SystemTime::now(),
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
    fn audit(
        &self,
        user: &str,
        server: &BrokeredServer,
        action: ActivityAction,
        started: std::time::Instant,
        result: Result<(), &BrokerError>,
    ) {
        let Some(auditor) = &self.auditor else {
            return;
        };
        let method = match server.config.mode {
            BrokerMode::TokenExchange => ActivityMethod::TokenExchange,
            BrokerMode::EntraObo => ActivityMethod::EntraObo,
            BrokerMode::OauthConnect => ActivityMethod::Connect,
        };
        let (outcome, reason) = match result {
            Ok(()) => (ActivityOutcome::Success, None),
            Err(e) => (ActivityOutcome::Failure, Some(e.reason().to_owned())),
        };
        auditor.record(tessera_store::ActivityRecord {
            ts: tessera_store::now_unix(),
            user_id: Some(user.to_owned()),
            server: server.name.to_string(),
            request_id: None,
            method,
            action,
            outcome,
            reason,
            duration_ms: Some(i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX)),
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
