//! What travels with each request: who the caller is.

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use secrecy::SecretString;

/// A user, as the identity provider names them: issuer plus subject. Stable across email
/// changes; the store maps it to its own user row.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UserKey {
    pub issuer: String,
    pub subject: String,
}

/// What a user may do in Tessera.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Admin,
    User,
}

/// How the caller proved who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// A JWT access token, signature checked against the provider's JWKS.
    Jwt,
    /// An opaque access token, checked through RFC 7662 introspection.
    Introspected,
    /// A Tessera personal access token (headless agents).
    PersonalAccessToken,
    /// A Tessera browser session.
    Session,
    /// An access token issued by Tessera's own authorization server (`tsr_at_…`) to an MCP
    /// client; the user's provider tokens from the federated sign-in are their subject tokens.
    OauthAccessToken,
}

/// The caller of one request.
#[derive(Clone)]
pub struct Identity {
    pub user: UserKey,
    /// Lower-cased; `None` when the token carries none.
    pub email: Option<String>,
    /// `name`, else `preferred_username`, else the email, else the subject.
    pub display_name: String,
    pub role: Role,
    pub token_kind: TokenKind,
    /// The OAuth client the token was issued to (`azp` / `client_id`), if stated.
    pub client_id: Option<String>,
    /// Scopes the token carries (`scope` / `scp`).
    pub scopes: Vec<String>,
    /// Groups the token names (`groups` claim: an array of strings, or one string), for
    /// per-server access policy.
    pub groups: Vec<String>,
    /// When the token stops being valid, if known.
    pub expires_at: Option<SystemTime>,
    /// The validated inbound token: the subject token for the broker. Never logged.
    pub token: SecretString,
    /// What a scoped agent token (a personal access token with `allowed_servers` or fewer
    /// permissions) may reach; `None` = everything its user may.
    pub agent: Option<Arc<AgentScope>>,
}

/// What a tool call may do, from the tool's annotations (MCP `ToolAnnotations`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Permission {
    /// `readOnlyHint: true`.
    Read,
    /// Not read-only, `destructiveHint: false`.
    Write,
    /// Everything else: `destructiveHint` true or absent (the spec's default), and tools
    /// without annotations.
    Destructive,
}

impl Permission {
    pub const ALL: [Permission; 3] = [Permission::Read, Permission::Write, Permission::Destructive];

    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Read => "read",
            Permission::Write => "write",
            Permission::Destructive => "destructive",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "read" => Some(Permission::Read),
            "write" => Some(Permission::Write),
            "destructive" => Some(Permission::Destructive),
            _ => None,
        }
    }

    /// The class of a tool from its `annotations` object's hints (absent = the spec's
    /// defaults: not read-only, destructive).
    pub fn of_tool(read_only_hint: Option<bool>, destructive_hint: Option<bool>) -> Self {
        if read_only_hint == Some(true) {
            Permission::Read
        } else if destructive_hint == Some(false) {
            Permission::Write
        } else {
            Permission::Destructive
        }
    }
}

/// The limits of a scoped agent token (REFERENCE §1.9's agent tokens): which servers it may
/// reach and which classes of tool it may call. Enforced on every MCP request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentScope {
    /// Server names it may reach; `None` = every server its user may.
    pub servers: Option<Vec<String>>,
    /// Always holds `Read`.
    pub permissions: Vec<Permission>,
}

impl AgentScope {
    pub fn allows_server(&self, server: &str) -> bool {
        self.servers
            .as_ref()
            .is_none_or(|s| s.iter().any(|n| n == server))
    }

    pub fn allows(&self, permission: Permission) -> bool {
        self.permissions.contains(&permission)
    }

    /// The permissions, as configured names (`read,write`).
    pub fn permission_names(&self) -> String {
        let names: Vec<&str> = self.permissions.iter().map(|p| p.as_str()).collect();
        names.join(",")
    }
}

impl Identity {
    /// Whether the caller is an admin.
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// Whether the token carries `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("user", &self.user)
            .field("email", &self.email)
            .field("display_name", &self.display_name)
            .field("role", &self.role)
            .field("token_kind", &self.token_kind)
            .field("client_id", &self.client_id)
            .field("scopes", &self.scopes)
            .field("groups", &self.groups)
            .field("expires_at", &self.expires_at)
            .field("agent", &self.agent)
            .field("token", &"[redacted]")
            .finish()
    }
}
