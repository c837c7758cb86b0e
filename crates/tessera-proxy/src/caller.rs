//! Who is calling. Every client session carries a caller; today it is always anonymous.
//! The identity layer (sign-in, MCP authorization) will set it, and the router will key
//! upstream sessions and credentials by it.

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// No authentication configured: the gateway proxies with its own upstream settings.
    Anonymous,
}

impl Caller {
    pub fn label(&self) -> &str {
        match self {
            Caller::Anonymous => "anonymous",
        }
    }
}
