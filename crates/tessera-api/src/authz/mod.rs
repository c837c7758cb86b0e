//! Tessera as the OAuth 2.1 authorization server MCP clients talk to
//! (`auth.authorization_server`), for providers that cannot serve MCP clients themselves
//! (Entra: no `resource`, no dynamic registration; Google: opaque tokens; GitHub: plain OAuth).
//!
//! The client signs the user in *at Tessera*; Tessera federates that sign-in to the configured
//! provider (the browser sign-in of [`crate::oidc`]) and keeps the provider's tokens sealed as
//! the user's subject tokens for the broker ([`crate::subject_token`]).
//!
//! - [`metadata`]: RFC 8414 at `/.well-known/oauth-authorization-server` and the OIDC discovery
//!   path clients also try.
//! - [`clients`]: who a `client_id` is — registered here ([`register`], RFC 7591) or a client
//!   ID metadata document (an https URL, fetched by [`fetch`] with SSRF protection).
//! - [`authorize`]: `/oauth/authorize` (sign-in, then a consent page for a client the user has
//!   not approved) and the consent decision.
//! - [`token`]: `/oauth/token` (code + PKCE S256, refresh rotation) and `/oauth/revoke`.
//! - [`verify`]: access tokens presented on `/mcp`, cached like PATs.
//!
//! **Tokens are opaque and stored hashed** (`tsr_at_…` / `tsr_rt_…`, SHA-256 in the store), not
//! self-contained JWTs: a replica needs no signing key to check one, revocation (a replayed
//! code, a reused refresh token, RFC 7009) takes effect at the next check rather than at
//! expiry, and the check is a cached lookup, not a signature, on the hot path. Access tokens
//! are bound to Tessera's resource (RFC 8707): the `resource` of the request must be `/mcp`'s
//! URL, and the token records it.
//!
//! Invariants: **no code, token or client secret reaches a log line, a page or an error**;
//! **a redirect goes only to a redirect URI registered for the client, matched exactly**; **an
//! error about the client or its redirect URI is shown, never redirected** (RFC 6749 §4.1.2.1).

mod authorize;
mod clients;
pub mod fetch;
mod metadata;
mod page;
mod register;
mod token;
pub mod verify;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use tessera_config::{AuthConfig, AuthorizationServerConfig};

use crate::ApiState;

pub use verify::{AccessTokenError, VerifiedClientToken};

/// Settings and in-memory state of the authorization server.
pub struct AuthorizationServer {
    pub(crate) config: AuthorizationServerConfig,
    /// Tessera's issuer identifier (`https://mcp.example.com`), also the base of its endpoints.
    pub(crate) issuer: String,
    /// The only resource tokens are issued for: `/mcp`'s absolute URL.
    pub(crate) resource: String,
    /// What may be granted.
    pub(crate) scopes: Vec<String>,
    /// What every token must carry on `/mcp` (`auth.scopes_required`).
    pub(crate) required_scopes: Vec<String>,
    pub(crate) clients: clients::Clients,
    pub(crate) pending: authorize::PendingAuthorizations,
    pub(crate) verified: verify::VerifyCache,
    /// Per-address limit on `/oauth/register` (`registration_rate_limit`).
    pub(crate) registrations: register::RegistrationLimiter,
}

impl AuthorizationServer {
    /// `None` unless `auth.authorization_server` is set.
    pub fn from_config(
        auth: &AuthConfig,
        keyring: Option<Arc<tessera_store::Keyring>>,
    ) -> Result<Option<Self>, fetch::FetchSetupError> {
        let (Some(config), Some(issuer)) = (&auth.authorization_server, auth.local_issuer()) else {
            return Ok(None);
        };
        Ok(Some(AuthorizationServer {
            config: config.clone(),
            issuer,
            resource: auth.resource.as_str().to_owned(),
            scopes: auth.local_scopes(),
            required_scopes: auth.scopes_required.clone(),
            clients: clients::Clients::new(config.client_metadata_documents)?,
            pending: authorize::PendingAuthorizations::new(keyring),
            verified: verify::VerifyCache::default(),
            registrations: register::RegistrationLimiter::new(config.registration_rate_limit),
        }))
    }

    pub(crate) fn endpoint(&self, path: &str) -> String {
        format!("{}{path}", self.issuer)
    }

    fn secs(d: Duration) -> i64 {
        i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
    }
}

/// The authorization server's routes (empty when it is not configured).
pub(crate) fn router(state: &Arc<ApiState>) -> Router<Arc<ApiState>> {
    if state.authz.is_none() {
        return Router::new();
    }
    Router::new()
        .route(
            "/.well-known/oauth-authorization-server",
            get(metadata::document),
        )
        .route("/.well-known/openid-configuration", get(metadata::document))
        .route("/oauth/register", post(register::register))
        .route("/oauth/authorize", get(authorize::authorize))
        .route("/oauth/authorize/decision", post(authorize::decision))
        .route("/oauth/token", post(token::token))
        .route("/oauth/revoke", post(token::revoke))
}

/// Records one of the authorization server's credential events in the activity log: `server`
/// is the OAuth client's id; never a code, token or secret.
pub(crate) fn audit(
    state: &ApiState,
    user_id: Option<&str>,
    client_id: &str,
    action: tessera_store::ActivityAction,
    outcome: tessera_store::ActivityOutcome,
    reason: Option<&str>,
) {
    if let Some(auditor) = state.auditor.get() {
        auditor.record(tessera_store::ActivityRecord {
            ts: tessera_store::now_unix(),
            user_id: user_id.map(str::to_owned),
            server: client_id.to_owned(),
            tool: None,
            request_id: None,
            method: tessera_store::ActivityMethod::AuthorizationServer,
            action,
            outcome,
            reason: reason.map(str::to_owned),
            duration_ms: None,
        });
    }
}

/// Removes expired consent pages in progress (returns how many) and the registration limit's
/// buckets that have filled up again.
pub(crate) fn purge(state: &ApiState) -> usize {
    state.authz.as_ref().map_or(0, |a| {
        a.registrations.purge();
        a.pending.purge_expired()
    })
}
