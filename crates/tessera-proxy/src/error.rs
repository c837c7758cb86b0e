//! Errors of the data path, by who is at fault.

use std::time::Duration;

/// Something went wrong talking to an upstream server. The upstream is at fault (or the
/// network), never the client; messages name what happened but carry no secret.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    #[error("could not start process: {0}")]
    Spawn(String),
    #[error("connection failed: {0}")]
    Connect(String),
    #[error("HTTP status {0}")]
    Status(u16),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("upstream error: {0}")]
    Rpc(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("session closed: {0}")]
    Closed(String),
    #[error("bad configuration: {0}")]
    Config(String),
    #[error("session expired")]
    SessionExpired,
    /// A brokered server: no credential for this user, so no request was sent.
    #[error("{0}")]
    Credential(crate::credentials::CredentialFailure),
    /// A cap on upstream sessions is reached; the message names it.
    #[error("{0}")]
    Capacity(String),
    /// A brokered server refused the user's credential, and the re-acquired one too (HTTP 401).
    #[error("the upstream rejected this user's credential (HTTP 401) after a re-acquisition")]
    CredentialRejected,
}
