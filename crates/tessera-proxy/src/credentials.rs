//! The seam between the data path and the credential broker.
//!
//! The proxy knows brokered servers only through [`CredentialBroker`]: "which header does this
//! user send to this server". The binary implements it over `tessera-broker` (cache, store,
//! token exchange, connect flows); tests implement it with fakes. The data path never sees a
//! refresh token, a subject token or a cipher, and never decides *how* a credential is obtained.
//!
//! Invariants: **no brokered upstream request leaves without the user's own credential** (no
//! credential → no request); **the inbound token never reaches an upstream** (upstream requests
//! are built from scratch: only the configured static headers and the brokered header are set).

use std::sync::Arc;

use futures::future::BoxFuture;
use http::{HeaderName, HeaderValue};
use tessera_identity::Identity;

/// The header one user's upstream request carries. Cloning is cheap (shared bytes); the value
/// is marked sensitive so that `Debug` of a header map never prints it.
#[derive(Clone)]
pub struct BrokeredHeader {
    pub name: HeaderName,
    pub value: HeaderValue,
}

impl std::fmt::Debug for BrokeredHeader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokeredHeader")
            .field("name", &self.name)
            .field("value", &"[redacted]")
            .finish()
    }
}

/// Why a user has no credential for a server. Every variant is safe to show the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialFailure {
    /// `oauth_connect`: the user has not connected (or must reconnect) at `connect_url`, a page
    /// of Tessera's own.
    NotConnected { connect_url: String },
    /// Policy does not let this user use this server.
    Denied,
    /// The user's own sign-in has expired and cannot be renewed: sign in again.
    SignInAgain,
    /// The caller is anonymous: brokered servers need a signed-in user.
    Unauthenticated,
    /// No credential could be obtained now; a coarse reason (never a token or a body).
    Unavailable(String),
}

impl CredentialFailure {
    /// The coarse, secret-free reason for audit records and error data.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NotConnected { .. } => "not_connected",
            Self::Denied => "denied",
            Self::SignInAgain => "sign_in_again",
            Self::Unauthenticated => "unauthenticated",
            Self::Unavailable(_) => "credential_unavailable",
        }
    }
}

impl std::fmt::Display for CredentialFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotConnected { connect_url } => {
                write!(f, "not connected for this user; connect at {connect_url}")
            }
            Self::Denied => f.write_str("access denied by policy"),
            Self::SignInAgain => f.write_str("your sign-in has expired; sign in again"),
            Self::Unauthenticated => f.write_str("sign in required"),
            Self::Unavailable(reason) => write!(f, "no credential available: {reason}"),
        }
    }
}

/// How one call's credential step ended, for the per-call `inject` audit record.
#[derive(Debug, Clone, Copy)]
pub enum InjectOutcome<'a> {
    Injected,
    Failed(&'a CredentialFailure),
    /// The upstream refused the user's (re-acquired) credential twice.
    UpstreamRejected,
}

/// Obtains per-user credentials for brokered servers.
pub trait CredentialBroker: Send + Sync + 'static {
    /// The credential in memory, if fresh: no await, no database, no decryption.
    fn cached(&self, who: &Identity, server: &str) -> Option<BrokeredHeader>;

    /// The credential, obtained if needed (single flight per user and server, bounded by the
    /// broker's acquisition timeout). `request_id` attributes audit records.
    fn acquire<'a>(
        &'a self,
        who: &'a Identity,
        server: &'a str,
        request_id: Option<&'a str>,
    ) -> BoxFuture<'a, Result<BrokeredHeader, CredentialFailure>>;

    /// The upstream answered 401 to `rejected`: drop it and obtain a new one (once).
    fn rejected<'a>(
        &'a self,
        who: &'a Identity,
        server: &'a str,
        rejected: &'a HeaderValue,
    ) -> BoxFuture<'a, Result<BrokeredHeader, CredentialFailure>>;

    /// A URL-mode elicitation for connecting `server` (MCP 2025-11-25): its id and the URL of
    /// Tessera's connect page, which only the user it was made for can use.
    fn connect_elicitation(&self, who: &Identity, server: &str) -> Option<(String, String)>;

    /// Records the per-call `inject` audit event (secret-free, never blocks).
    fn audit_inject(
        &self,
        who: &Identity,
        server: &str,
        request_id: Option<&str>,
        outcome: InjectOutcome<'_>,
    );

    /// Appends the broker's counters to `/metrics` (Prometheus text format).
    fn metrics(&self, _out: &mut String) {}
}

/// The latest identity of one client session's user: the client may present a renewed token on
/// later requests, and a new exchange must use the current one, not the one the session began
/// with. Shared by the client session and its upstream sessions.
#[derive(Clone)]
pub struct IdentityCell(Arc<std::sync::RwLock<Arc<Identity>>>);

impl IdentityCell {
    pub fn new(identity: Arc<Identity>) -> Self {
        Self(Arc::new(std::sync::RwLock::new(identity)))
    }

    pub fn get(&self) -> Arc<Identity> {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Takes `identity` (the same principal, proven by a later request) if it is another token.
    pub fn update(&self, identity: &Arc<Identity>) {
        let current = self.get();
        if Arc::ptr_eq(&current, identity) || current.user != identity.user {
            return;
        }
        *self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = identity.clone();
    }
}

/// One user's credential source for one upstream session: the transport asks it for the header
/// of every HTTP request, so a refreshed credential takes effect without reconnecting.
pub struct UpstreamAuth {
    pub broker: Arc<dyn CredentialBroker>,
    pub identity: IdentityCell,
    pub server: Arc<str>,
}

impl UpstreamAuth {
    /// The header for the next request: from the cache, else obtained.
    pub async fn header(&self) -> Result<BrokeredHeader, CredentialFailure> {
        let identity = self.identity.get();
        if let Some(header) = self.broker.cached(&identity, &self.server) {
            return Ok(header);
        }
        self.broker.acquire(&identity, &self.server, None).await
    }

    /// The upstream refused `rejected`; a new header to retry with once.
    pub async fn after_rejection(
        &self,
        rejected: &HeaderValue,
    ) -> Result<BrokeredHeader, CredentialFailure> {
        let identity = self.identity.get();
        self.broker
            .rejected(&identity, &self.server, rejected)
            .await
    }
}
