//! The live state of this replica as an admin or a user asks for it: the client sessions and
//! ending one ([`Gateway::live_sessions`], [`Gateway::end_session_by_handle`]), and how each
//! server looks to one user now ([`Gateway::diagnostics_for`]).
//!
//! A session is named by its **handle**, the SHA-256 of its id (lowercase hex), never by the id:
//! the id is what a client presents, and an admin's list must not hand it to anyone. The handle
//! is the same on every replica (a resumed session keeps its id), so "end the session with this
//! handle" can be told to the other replicas: each ends it if it holds it, and none resumes it
//! from its sealed id afterwards ([`Gateway::end_session_by_handle`]).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use sha2::{Digest, Sha256};
use tessera_identity::TokenKind;

use crate::gateway::{Gateway, Health, ServerEntry};
use crate::session::{ClientSession, FrontEnd};
use tessera_identity::UserKey;

/// The handle of the session `id`: lowercase hex SHA-256.
pub fn session_handle(id: &str) -> String {
    use std::fmt::Write as _;
    Sha256::digest(id.as_bytes())
        .iter()
        .fold(String::with_capacity(64), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
}

/// How logs name a session: the first 16 hex digits of its handle, never the id (for a signed-in
/// user `<random>.<sealed state>`, what a client presents). Hashed only when the log line is
/// written: `tracing` formats a field only for an enabled event or span.
pub struct LogId<'a>(pub &'a str);

impl std::fmt::Display for LogId<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&session_handle(self.0)[..16])
    }
}

/// One live client session, without its id or any token.
#[derive(Debug, Clone, Serialize)]
pub struct SessionInfo {
    /// [`session_handle`] of the id.
    pub handle: String,
    /// The provider's issuer and subject of the user; `None` for an anonymous session.
    pub issuer: Option<String>,
    pub subject: Option<String>,
    pub email: Option<String>,
    /// How the session's caller proved who they are: `jwt`, `introspected`,
    /// `personal_access_token`, `session`, `oauth_access_token`; `anonymous` without identity.
    pub via: &'static str,
    /// Whether the caller is a scoped agent token.
    pub agent: bool,
    /// The OAuth client the caller's token was issued to, if stated.
    pub client_id: Option<String>,
    /// `initialize`'s `clientInfo.name` and `.version`, and the protocol version agreed.
    pub client_name: Option<String>,
    pub client_version: Option<String>,
    pub protocol_version: Option<String>,
    /// `streamable_http` (`/mcp`) or `sse` (`/sse`).
    pub front_end: &'static str,
    /// `direct` or `retrieve_tools`.
    pub routing: &'static str,
    /// RFC 3339, seconds.
    pub opened_at: String,
    pub last_active_at: String,
    /// Servers this session has an upstream session with now.
    pub upstreams: Vec<String>,
    pub calls_in_flight: usize,
}

fn rfc3339(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(at).to_string()
}

fn token_kind(kind: TokenKind) -> &'static str {
    match kind {
        TokenKind::Jwt => "jwt",
        TokenKind::Introspected => "introspected",
        TokenKind::PersonalAccessToken => "personal_access_token",
        TokenKind::Session => "session",
        TokenKind::OauthAccessToken => "oauth_access_token",
    }
}

impl SessionInfo {
    fn of(session: &ClientSession, now_ms: u64, now: SystemTime) -> Self {
        let identity = session.caller.identity();
        let client_info = session
            .negotiated()
            .and_then(|n| n.client_params.get("clientInfo"))
            .and_then(|v| serde_json::from_str::<serde_json::Value>(v.get()).ok());
        let info_str = |key: &str| {
            client_info
                .as_ref()
                .and_then(|c| c.get(key))
                .and_then(|v| v.as_str())
                .map(|s| s.chars().take(200).collect::<String>())
        };
        let idle = Duration::from_millis(now_ms.saturating_sub(session.last_active_ms()));
        let mut upstreams: Vec<String> = session
            .open_upstreams()
            .iter()
            .map(|u| u.server.name.clone())
            .collect();
        upstreams.sort();
        SessionInfo {
            handle: session_handle(&session.id),
            issuer: identity.map(|i| i.user.issuer.clone()),
            subject: identity.map(|i| i.user.subject.clone()),
            email: identity.and_then(|i| i.email.clone()),
            via: identity.map_or("anonymous", |i| token_kind(i.token_kind)),
            agent: identity.is_some_and(|i| i.agent.is_some()),
            client_id: identity.and_then(|i| i.client_id.clone()),
            client_name: info_str("name"),
            client_version: info_str("version"),
            protocol_version: session.negotiated().map(|n| n.protocol_version.clone()),
            front_end: match session.front_end {
                FrontEnd::Streamable => "streamable_http",
                FrontEnd::LegacySse => "sse",
            },
            routing: match session.routing {
                tessera_config::RoutingMode::Direct => "direct",
                tessera_config::RoutingMode::RetrieveTools => "retrieve_tools",
            },
            opened_at: rfc3339(session.opened_at),
            last_active_at: rfc3339(now.checked_sub(idle).unwrap_or(now)),
            upstreams,
            calls_in_flight: session.calls_in_flight(),
        }
    }
}

/// How one server looks to one user on this replica now.
#[derive(Debug, Clone, Serialize)]
pub struct ServerDiagnostics {
    pub name: String,
    /// A shared server the gateway discovers: `ready`, `connecting`, `down` or `disabled`. A
    /// server discovered through each user's own session (brokered, personal): `ready` once this
    /// user's catalogue was discovered here, else `not_connected`.
    pub state: &'static str,
    /// Why a shared server is down (never a secret: the upstream's error as the gateway logs it).
    pub error: Option<String>,
    /// Tools listed, for this user; `None` while not discovered.
    pub tool_count: Option<usize>,
    /// This user's upstream sessions open to it here (one per client session that used it).
    pub upstream_sessions: usize,
}

impl Gateway {
    /// Every server `user` may reach here — the shared ones (whatever their switches: the caller
    /// says which are off) and the personal ones of their loaded settings — with its live state.
    pub fn diagnostics_for(&self, user: &UserKey) -> Vec<ServerDiagnostics> {
        let mut open: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
        for session in self.sessions_of(user) {
            for upstream in session.open_upstreams() {
                *open.entry(upstream.server.name.clone()).or_default() += 1;
            }
        }
        let view = self.user_view(user);
        let personal = view.as_deref().map_or(&[][..], |v| v.personal_servers());
        self.servers
            .iter()
            .chain(personal)
            .map(|entry| diagnose(entry, user, &open))
            .collect()
    }

    /// Every client session open here, most recently active first.
    pub fn live_sessions(&self) -> Vec<SessionInfo> {
        let sessions: Vec<Arc<ClientSession>> = self
            .sessions
            .read()
            .map(|s| s.values().cloned().collect())
            .unwrap_or_default();
        let (now_ms, now) = (self.now_ms(), SystemTime::now());
        let mut sessions: Vec<(u64, SessionInfo)> = sessions
            .iter()
            .map(|s| (s.last_active_ms(), SessionInfo::of(s, now_ms, now)))
            .collect();
        sessions.sort_by_key(|(last, _)| std::cmp::Reverse(*last));
        sessions.into_iter().map(|(_, info)| info).collect()
    }

    /// Restarts the upstream server `name` here: its discovery session (a shared server the
    /// gateway discovers) is replaced at once, and every client's upstream session to it ends
    /// (the next call opens a new one). Personal servers of one user are not restartable this
    /// way. The number of client upstream sessions ended, or `None` for no such shared server.
    pub async fn restart_server(&self, name: &str) -> Option<usize> {
        let entry = self.server(name)?.clone();
        if !entry.per_user() && entry.config.enabled {
            entry.restart.notify_one();
        }
        let sessions: Vec<Arc<ClientSession>> = self
            .sessions
            .read()
            .map(|s| s.values().cloned().collect())
            .unwrap_or_default();
        let mut ended = 0;
        for session in sessions {
            if session.close_upstream(name).await {
                ended += 1;
            }
        }
        tracing::info!(server = %name, client_upstream_sessions = ended, "upstream server restarted by an admin");
        Some(ended)
    }

    /// Ends the session with this handle if it is open here (and its upstream sessions), and
    /// remembers the handle so that this replica does not resume the session from its sealed
    /// id. Whether the session was open here.
    pub async fn end_session_by_handle(&self, handle: &str) -> bool {
        self.remember_ended(handle.to_owned());
        let id = self
            .sessions
            .read()
            .ok()
            .and_then(|s| s.keys().find(|id| session_handle(id) == handle).cloned());
        let Some(id) = id else {
            return false;
        };
        let ended = self.end_session(&id).await;
        if ended {
            // The admin's request logs it (with who asked); this is the replica that held it.
            tracing::debug!(
                session = handle.get(..16).unwrap_or(handle),
                "client session ended by an admin"
            );
        }
        ended
    }
}

fn diagnose(
    entry: &ServerEntry,
    user: &UserKey,
    open: &std::collections::HashMap<String, usize>,
) -> ServerDiagnostics {
    let name = entry.config.name.clone();
    let upstream_sessions = open.get(&name).copied().unwrap_or(0);
    let (health, error) = entry.health();
    let (state, error, tool_count) = match health {
        Health::PerUser => match entry.user_catalog(user) {
            Some(catalog) => ("ready", None, Some(catalog.tools.len())),
            None => ("not_connected", None, None),
        },
        Health::Ready => ("ready", None, Some(entry.catalog().tools.len())),
        Health::Connecting => ("connecting", error, None),
        Health::Down => ("down", error, None),
        Health::Disabled => ("disabled", None, None),
    };
    ServerDiagnostics {
        name,
        state,
        error,
        tool_count,
        upstream_sessions,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_name_a_session_by_its_handles_prefix() {
        assert_eq!(LogId("abc").to_string(), session_handle("abc")[..16]);
    }

    #[test]
    fn a_handle_is_the_ids_sha256_and_not_the_id() {
        let handle = session_handle("abc");
        assert_eq!(
            handle,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(!handle.contains("abc"));
    }
}
