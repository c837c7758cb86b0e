//! The hook from the REST API to the gateway: what the gateway must know at once when a user's
//! servers or standing change, and the live figures the admin dashboard shows. The binary
//! implements [`UserEvents`] and hands it over with [`crate::ApiState::set_user_events`];
//! until then [`NoEvents`] ignores everything.

/// Told by the REST handlers after a successful write.
pub trait UserEvents: Send + Sync {
    /// The user's personal servers or shared-server preferences changed.
    fn servers_changed(&self, user_id: &str);
    /// An admin disabled (true) or enabled (false) the user; disabling must end their MCP
    /// sessions at once.
    fn disabled_changed(&self, user_id: &str, disabled: bool);
    /// Live gateway figures for the dashboard:
    /// `{"mcp_sessions": n, "upstreams": [{"name", "state", "error", "tools"}…]}`.
    fn gateway_status(&self) -> serde_json::Value;
}

/// The hook before the binary sets one: nothing to tell, no live figures.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoEvents;

impl UserEvents for NoEvents {
    fn servers_changed(&self, _user_id: &str) {}
    fn disabled_changed(&self, _user_id: &str, _disabled: bool) {}
    fn gateway_status(&self) -> serde_json::Value {
        serde_json::json!({})
    }
}
