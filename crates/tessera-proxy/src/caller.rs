//! Who is calling. Every client session carries a caller: the user whose validated token
//! opened it, or `Anonymous` when the configuration explicitly runs without identity.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tessera_identity::{AuthError, Identity};

#[derive(Debug, Clone)]
pub enum Caller {
    /// No identity configured (`"auth": "none"` or no `auth` at all): single-user, local use.
    Anonymous,
    /// A user proven by a bearer token (JWT, introspected token, or personal access token).
    User(Arc<Identity>),
}

impl Caller {
    /// How logs name the caller: the email, else issuer-independent subject; never a token.
    pub fn label(&self) -> &str {
        match self {
            Caller::Anonymous => "anonymous",
            Caller::User(identity) => identity.email.as_deref().unwrap_or(&identity.user.subject),
        }
    }

    /// Whether `other` is the same principal: a session opened by one user is never usable by
    /// another (their requests get 404, as if the session did not exist).
    pub fn same_principal(&self, other: &Caller) -> bool {
        match (self, other) {
            (Caller::Anonymous, Caller::Anonymous) => true,
            (Caller::User(a), Caller::User(b)) => a.user == b.user,
            _ => false,
        }
    }

    pub fn identity(&self) -> Option<&Arc<Identity>> {
        match self {
            Caller::User(identity) => Some(identity),
            Caller::Anonymous => None,
        }
    }
}

/// Checks Tessera's own tokens (`tsr_pat_…` personal access tokens, `tsr_at_…` access tokens of
/// its authorization server). Implemented where the store is
/// (the API crate) and handed to the gateway, so the data path needs no database code; the
/// implementation caches so that a call costs no database round trip.
pub trait PatVerifier: Send + Sync {
    fn verify<'a>(
        &'a self,
        token: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<Arc<Identity>, AuthError>> + Send + 'a>>;
}

/// Prefix of Tessera's personal access tokens.
pub const PAT_PREFIX: &str = "tsr_pat_";

/// Prefix of every token Tessera issues (personal access tokens, its authorization server's
/// access tokens): such a token goes to the [`PatVerifier`], never to the provider's validator.
pub const TESSERA_TOKEN_PREFIX: &str = "tsr_";
