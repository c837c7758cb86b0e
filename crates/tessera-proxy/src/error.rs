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
}
