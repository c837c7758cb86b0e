//! Why a request was not let in, decided by who is at fault (RFC 6750 §3.1).

use http::StatusCode;

/// Why a presented token is not accepted (`error="invalid_token"`). The description is short,
/// fixed text: it never quotes the token or its claims.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidToken {
    #[error("token expired")]
    Expired,
    #[error("token not yet valid")]
    NotYetValid,
    #[error("wrong audience")]
    WrongAudience,
    #[error("wrong issuer")]
    WrongIssuer,
    #[error("bad signature")]
    BadSignature,
    #[error("unsupported algorithm")]
    UnsupportedAlgorithm,
    #[error("unknown signing key")]
    UnknownKey,
    #[error("token inactive")]
    Inactive,
    #[error("malformed token")]
    Malformed,
    #[error("token has no subject")]
    NoSubject,
    #[error("opaque tokens are not accepted")]
    OpaqueNotAccepted,
    /// A token Tessera issued whose user's sign-in at the identity provider has ended (the
    /// provider refused to renew it): the client must authorise again.
    #[error("the sign-in at the identity provider has ended; authorize again")]
    SignInAgain,
}

/// A request that may not pass.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No bearer token (401, challenge without an error code).
    #[error("no bearer token")]
    Missing,
    /// The Authorization header is unusable, e.g. sent twice (400 `invalid_request`).
    #[error("invalid request: {0}")]
    InvalidRequest(&'static str),
    /// The caller's token is not accepted (401 `invalid_token`).
    #[error("invalid token: {0}")]
    InvalidToken(InvalidToken),
    /// The token lacks scopes (403 `insufficient_scope`); `required` is space-separated.
    #[error("insufficient scope: requires {required}")]
    InsufficientScope { required: String },
    /// A valid token of a user who may not use this gateway (403), e.g. a foreign email domain.
    #[error("forbidden: {0}")]
    Forbidden(&'static str),
    /// The identity provider could not be asked (503); never a reason to let anyone in.
    #[error("identity provider unavailable: {0}")]
    Unavailable(String),
}

impl From<InvalidToken> for AuthError {
    fn from(reason: InvalidToken) -> Self {
        AuthError::InvalidToken(reason)
    }
}

impl AuthError {
    /// The HTTP status for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            AuthError::Missing | AuthError::InvalidToken(_) => StatusCode::UNAUTHORIZED,
            AuthError::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            AuthError::InsufficientScope { .. } | AuthError::Forbidden(_) => StatusCode::FORBIDDEN,
            AuthError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The RFC 6750 `error` code, if any.
    pub fn error_code(&self) -> Option<&'static str> {
        match self {
            AuthError::Missing | AuthError::Forbidden(_) => None,
            AuthError::InvalidRequest(_) => Some("invalid_request"),
            AuthError::InvalidToken(_) => Some("invalid_token"),
            AuthError::InsufficientScope { .. } => Some("insufficient_scope"),
            AuthError::Unavailable(_) => Some("temporarily_unavailable"),
        }
    }
}
