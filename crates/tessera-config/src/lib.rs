//! Tessera configuration: the types (they are the schema), loading, `${VAR}` interpolation and
//! validation.
//!
//! The file is JSON. [`load_file`] and [`load_str`] read it, replace `${VAR}` references in string
//! values, check every key and value, and return either a [`Config`] or *every* problem found,
//! each with the JSON path of the offending value and what to do about it ([`ConfigErrors`]).
//!
//! Defaults live in [`defaults`] and nowhere else; `docs/config.md` documents them.

mod duration;
mod error;
mod interpolate;
mod json;
mod keys;
mod load;
mod path;
mod suggest;
mod validate;

#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use url::Url;

pub use error::{ConfigErrors, Problem};
pub use load::{load_file, load_str};

/// Default values for every optional key. The only place defaults are written down in code.
pub mod defaults {
    use std::time::Duration;

    /// `listen`
    pub const LISTEN: &str = "127.0.0.1:8080";
    /// `data_dir`
    pub const DATA_DIR: &str = "./data";
    /// `tool_separator`
    pub const TOOL_SEPARATOR: &str = "__";
    /// `call_tool_timeout`
    pub const CALL_TOOL_TIMEOUT: Duration = Duration::from_secs(120);
    /// `init_timeout`
    pub const INIT_TIMEOUT: Duration = Duration::from_secs(30);
    /// `list_page_size`
    pub const LIST_PAGE_SIZE: usize = 100;
    /// `session_idle_timeout`
    pub const SESSION_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
    /// `mcpServers.*.enabled`
    pub const SERVER_ENABLED: bool = true;
    /// `mcpServers.*.auth_broker.header`
    pub const BROKER_HEADER: &str = "Authorization";
    /// `mcpServers.*.auth_broker.header_format`
    pub const BROKER_HEADER_FORMAT: &str = "Bearer {token}";
}

/// The whole configuration file.
#[derive(Debug, Clone)]
pub struct Config {
    /// Socket address the gateway listens on (`IP:port`).
    pub listen: String,
    /// The externally visible base URL (http or https), if the gateway sits behind a proxy.
    pub public_url: Option<Url>,
    /// Directory for the gateway's state.
    pub data_dir: PathBuf,
    /// Separator between server and tool name in exposed tool names (`<server>__<tool>`).
    pub tool_separator: String,
    /// Default deadline of one `tools/call` (JSON key `call_tool_timeout`).
    pub call_tool_timeout: Duration,
    /// Default deadline of an upstream's `initialize` handshake.
    pub init_timeout: Duration,
    /// Page size of aggregated `*/list` results; 0 disables pagination.
    pub list_page_size: usize,
    /// A client session with no request, no open stream and no call in flight for this long is
    /// ended (with its upstream sessions).
    pub session_idle_timeout: Duration,
    /// Extra `Origin` values allowed on `/mcp`, normalised to `scheme://host[:port]`.
    pub allowed_origins: Vec<String>,
    /// The upstream servers from `mcpServers`, in file order, enabled and disabled alike.
    pub servers: Vec<ServerConfig>,
    /// JSON paths of keys that were accepted (the reference, mcpproxy-go, writes them) but are not
    /// used by Tessera, in file order, e.g. `api_key`, `mcpServers[0].shared`. The binary warns.
    pub ignored: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: defaults::LISTEN.to_string(),
            public_url: None,
            data_dir: PathBuf::from(defaults::DATA_DIR),
            tool_separator: defaults::TOOL_SEPARATOR.to_string(),
            call_tool_timeout: defaults::CALL_TOOL_TIMEOUT,
            init_timeout: defaults::INIT_TIMEOUT,
            list_page_size: defaults::LIST_PAGE_SIZE,
            session_idle_timeout: defaults::SESSION_IDLE_TIMEOUT,
            allowed_origins: Vec::new(),
            servers: Vec::new(),
            ignored: Vec::new(),
        }
    }
}

impl Config {
    /// The server named `name`, enabled or not.
    pub fn server(&self, name: &str) -> Option<&ServerConfig> {
        self.servers.iter().find(|s| s.name == name)
    }
}

/// One entry of `mcpServers`.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Unique, `[A-Za-z0-9_.-]+`, without the tool separator.
    pub name: String,
    /// Default true.
    pub enabled: bool,
    /// How to reach the server.
    pub transport: Transport,
    /// Per-server key `timeout`; overrides [`Config::call_tool_timeout`].
    pub call_timeout: Option<Duration>,
    /// Per-server key `init_timeout`; overrides [`Config::init_timeout`].
    pub init_timeout: Option<Duration>,
    /// Per-user credential brokering (HTTP-family servers only).
    pub auth_broker: Option<AuthBrokerConfig>,
}

/// How an upstream server is reached.
#[derive(Debug, Clone)]
pub enum Transport {
    /// A child process speaking MCP on stdin/stdout.
    Stdio {
        command: String,
        args: Vec<String>,
        /// Extra environment variables (values are secrets), in file order.
        env: Vec<(String, SecretString)>,
        working_dir: Option<PathBuf>,
    },
    /// An MCP server over HTTP.
    Http {
        url: Url,
        protocol: HttpProtocol,
        /// Static headers sent on every request (values are secrets), in file order.
        headers: Vec<(String, SecretString)>,
    },
}

/// Which HTTP flavour of MCP to speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpProtocol {
    /// `http`, `streamable-http` (or `type: "streamableHttp"`).
    StreamableHttp,
    /// `sse`: the legacy HTTP+SSE transport.
    Sse,
    /// `auto` or absent: try streamable HTTP, fall back to SSE.
    Auto,
}

/// The `auth_broker` block of an HTTP-family server.
#[derive(Debug, Clone)]
pub struct AuthBrokerConfig {
    pub mode: BrokerMode,
    pub token_endpoint: Option<Url>,
    pub authorization_endpoint: Option<Url>,
    /// RFC 8707 resource indicator.
    pub resource: Option<String>,
    pub scopes: Vec<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<SecretString>,
    /// Outbound header name, default `Authorization`.
    pub header: String,
    /// Outbound header value; `{token}` is replaced by the access token. Default `Bearer {token}`.
    pub header_format: String,
    pub audience: Option<String>,
    pub subject_token_type: SubjectTokenType,
    pub client_auth: ClientAuth,
    /// PEM private key for `client_auth: private_key_jwt`.
    pub private_key_file: Option<PathBuf>,
    pub revocation_endpoint: Option<Url>,
    /// RFC 8414 issuer; endpoints not given are discovered from its metadata.
    pub issuer: Option<Url>,
}

/// `auth_broker.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerMode {
    /// RFC 8693 token exchange of the user's IdP token.
    TokenExchange,
    /// Microsoft Entra on-behalf-of.
    EntraObo,
    /// Per-user OAuth authorization-code connect flow against the upstream's AS.
    OauthConnect,
}

/// `auth_broker.subject_token_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SubjectTokenType {
    #[default]
    AccessToken,
    IdToken,
}

/// `auth_broker.client_auth`: how the gateway authenticates to the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientAuth {
    #[default]
    ClientSecretPost,
    ClientSecretBasic,
    PrivateKeyJwt,
}
