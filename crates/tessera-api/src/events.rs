//! The hook from the REST API to the gateway: what the gateway must know at once when a user's
//! servers or standing change, and the live figures the admin dashboard shows. The binary
//! implements [`UserEvents`] and hands it over with [`crate::ApiState::set_user_events`];
//! until then [`NoEvents`] ignores everything.

/// What a hook returns: the REST answer waits for it, so "done" means applied on this replica.
pub type EventFuture<'a, T = ()> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

use std::future::Future;
use std::pin::Pin;

/// Told by the REST handlers after a successful write; the answer is sent once the returned
/// future completes.
pub trait UserEvents: Send + Sync {
    /// The user's personal servers or shared-server preferences changed.
    fn servers_changed<'a>(&'a self, user_id: &'a str) -> EventFuture<'a>;
    /// An admin disabled (true) or enabled (false) the user; disabling must end their MCP
    /// sessions at once.
    fn disabled_changed<'a>(&'a self, user_id: &'a str, disabled: bool) -> EventFuture<'a>;
    /// Live gateway figures for the dashboard:
    /// `{"mcp_sessions": n, "upstreams": [{"name", "state", "error", "tools"}…]}`.
    fn gateway_status(&self) -> serde_json::Value;
    /// The MCP client sessions open on this replica, most recently active first: objects with
    /// `handle` (the SHA-256 of the session id, never the id), `issuer`, `subject`, `email`,
    /// `via`, `client_name`, `opened_at`, `last_active_at`, `upstreams`, …
    fn mcp_sessions(&self) -> Vec<serde_json::Value>;
    /// Ends the MCP client session with this handle here, and tells the other replicas to end
    /// it too and never resume it. Whether it was open on this replica.
    fn end_mcp_session<'a>(&'a self, handle: &'a str) -> EventFuture<'a, bool>;
    /// How each server looks to the user (`issuer`, `subject`) on this replica now: objects
    /// with `name`, `state`, `error`, `tool_count` and `upstream_sessions`, for the shared
    /// servers and the user's personal servers the gateway has loaded.
    fn user_diagnostics(&self, issuer: &str, subject: &str) -> Vec<serde_json::Value>;
    /// Restarts the shared upstream server `name` here (a new discovery session, every client's
    /// upstream session to it ended) and tells the other replicas to do the same. The number
    /// of client upstream sessions ended here; `None` when there is no such server.
    fn restart_server<'a>(&'a self, name: &'a str) -> EventFuture<'a, Option<usize>>;
}

/// The hook before the binary sets one: nothing to tell, no live figures.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoEvents;

impl UserEvents for NoEvents {
    fn servers_changed<'a>(&'a self, _user_id: &'a str) -> EventFuture<'a> {
        Box::pin(async {})
    }
    fn disabled_changed<'a>(&'a self, _user_id: &'a str, _disabled: bool) -> EventFuture<'a> {
        Box::pin(async {})
    }
    fn gateway_status(&self) -> serde_json::Value {
        serde_json::json!({})
    }
    fn mcp_sessions(&self) -> Vec<serde_json::Value> {
        Vec::new()
    }
    fn end_mcp_session<'a>(&'a self, _handle: &'a str) -> EventFuture<'a, bool> {
        Box::pin(async { false })
    }
    fn user_diagnostics(&self, _issuer: &str, _subject: &str) -> Vec<serde_json::Value> {
        Vec::new()
    }
    fn restart_server<'a>(&'a self, _name: &'a str) -> EventFuture<'a, Option<usize>> {
        Box::pin(async { None })
    }
}
