//! The broker's errors: coarse reasons, never a token, a response body or a description.

/// An OAuth error code as RFC 6749 §5.2 / RFC 8693 §2.2.2 define them. Anything else an
/// authorization server says is reduced to [`OAuthErrorCode::ServerError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OAuthErrorCode {
    InvalidRequest,
    InvalidClient,
    InvalidGrant,
    UnauthorizedClient,
    UnsupportedGrantType,
    InvalidScope,
    InvalidTarget,
    ServerError,
}

impl OAuthErrorCode {
    /// Allow-list a code from a token endpoint's error response.
    pub fn from_wire(code: &str) -> Self {
        match code {
            "invalid_request" => Self::InvalidRequest,
            "invalid_client" => Self::InvalidClient,
            "invalid_grant" => Self::InvalidGrant,
            "unauthorized_client" => Self::UnauthorizedClient,
            "unsupported_grant_type" => Self::UnsupportedGrantType,
            "invalid_scope" => Self::InvalidScope,
            "invalid_target" => Self::InvalidTarget,
            _ => Self::ServerError,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::InvalidClient => "invalid_client",
            Self::InvalidGrant => "invalid_grant",
            Self::UnauthorizedClient => "unauthorized_client",
            Self::UnsupportedGrantType => "unsupported_grant_type",
            Self::InvalidScope => "invalid_scope",
            Self::InvalidTarget => "invalid_target",
            Self::ServerError => "server_error",
        }
    }
}

impl std::fmt::Display for OAuthErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why no credential could be produced. Every variant is safe to log and to show the caller.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum BrokerError {
    /// The caller has no user identity.
    #[error("broker: unauthenticated caller")]
    Unauthenticated,
    /// The server has no `auth_broker` block.
    #[error("broker: server {0:?} has no auth_broker configuration")]
    NotConfigured(String),
    /// The configuration asks for something this build cannot do yet (or a field is missing).
    #[error("broker: {what} is not supported for server {server:?}")]
    Unsupported { server: String, what: &'static str },
    /// A required `auth_broker` field is missing.
    #[error("broker: auth_broker.{0} is required")]
    MissingField(&'static str),
    /// An `auth_broker` field has a value that cannot be used.
    #[error("broker: auth_broker.{0} is invalid")]
    InvalidField(&'static str),
    /// The user's subject token is gone or expired and cannot be refreshed: sign in again.
    #[error("broker: the user's sign-in has expired; sign in again")]
    SignInAgain,
    /// The user's subject token could not be obtained for another reason.
    #[error("broker: no subject token available for the user")]
    SubjectTokenUnavailable,
    /// The user has not connected this server (oauth_connect), or the connection expired and
    /// cannot be refreshed. `connect_url` is Tessera's own connect page, never the upstream's
    /// authorization URL.
    #[error(
        "broker: upstream {server:?} is not connected for this user; connect at: {connect_url}"
    )]
    NotConnected { server: String, connect_url: String },
    /// The policy does not allow this user this server.
    #[error("broker: policy denies this user a credential for {server:?}")]
    PolicyDenied { server: String },
    /// A connect callback arrived from another signed-in user than the one who started the flow.
    #[error("broker: this connect flow was started by another user")]
    ConnectUserMismatch,
    /// The user (or the authorization server) refused consent; `code` is allow-listed.
    #[error("broker: connect denied ({code})")]
    ConnectDenied { code: &'static str },
    /// The connect `state` is unknown, expired or already used.
    #[error("broker: unknown, expired or already used connect state")]
    UnknownState,
    /// RFC 8414 discovery of the issuer's metadata failed (`why` is a fixed phrase).
    #[error("broker: authorization server metadata for {issuer} could not be used ({why})")]
    Discovery { issuer: String, why: &'static str },
    /// The token endpoint could not be reached.
    #[error("broker: token endpoint unreachable")]
    Unreachable,
    /// The token endpoint did not answer in time.
    #[error("broker: token endpoint timed out")]
    Timeout,
    /// The token endpoint refused: HTTP status and the allow-listed OAuth code.
    #[error("broker: token endpoint refused (status {status}, error {code})")]
    Rejected { status: u16, code: OAuthErrorCode },
    /// HTTP 200 whose body is not the JSON we expect (or exceeds the size cap).
    #[error("broker: malformed token endpoint response (status {status})")]
    MalformedResponse { status: u16 },
    /// HTTP 200 JSON without `access_token`.
    #[error("broker: token endpoint response has no access_token")]
    MissingAccessToken,
    /// The token cannot be written into the configured header.
    #[error("broker: issued token cannot be used as a header value")]
    InvalidHeaderValue,
    /// The credential store failed.
    #[error("broker: credential store failed ({0})")]
    Store(&'static str),
    /// The caller waited longer than the acquisition timeout.
    #[error("broker: timed out waiting for the credential")]
    AcquireTimeout,
    /// The acquisition task ended without an answer (panicked or was cancelled).
    #[error("broker: credential acquisition aborted")]
    Aborted,
}

impl BrokerError {
    /// The coarse reason, for audit records and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Unauthenticated => "unauthenticated",
            Self::NotConfigured(_) => "not_configured",
            Self::Unsupported { .. } => "unsupported",
            Self::MissingField(_) | Self::InvalidField(_) => "misconfigured",
            Self::SignInAgain => "sign_in_again",
            Self::SubjectTokenUnavailable => "no_subject_token",
            Self::NotConnected { .. } => "not_connected",
            Self::PolicyDenied { .. } => "policy_denied",
            Self::ConnectUserMismatch => "user_mismatch",
            Self::ConnectDenied { code } => code,
            Self::UnknownState => "unknown_state",
            Self::Discovery { .. } => "discovery_failed",
            Self::Unreachable => "unreachable",
            Self::Timeout => "timeout",
            Self::Rejected { code, .. } => code.as_str(),
            Self::MalformedResponse { .. } => "malformed_response",
            Self::MissingAccessToken => "missing_access_token",
            Self::InvalidHeaderValue => "invalid_header_value",
            Self::Store(_) => "store",
            Self::AcquireTimeout => "acquire_timeout",
            Self::Aborted => "aborted",
        }
    }
}
