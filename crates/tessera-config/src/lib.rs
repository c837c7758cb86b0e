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
pub mod network;
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
pub use network::UserServersConfig;

/// Default values for every optional key. The only place defaults are written down in code.
pub mod defaults {
    use std::time::Duration;

    /// `listen`
    pub const LISTEN: &str = "127.0.0.1:8080";
    /// `data_dir`
    pub const DATA_DIR: &str = "./data";
    /// The SQLite file in `data_dir` when `storage` is not set.
    pub const DB_FILE: &str = "tessera.db";
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
    /// `upstream_idle_timeout`
    pub const UPSTREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(600);
    /// `max_upstream_sessions_per_user`
    pub const MAX_UPSTREAM_SESSIONS_PER_USER: usize = 64;
    /// `activity_retention_days`
    pub const ACTIVITY_RETENTION_DAYS: usize = 30;
    /// `activity_max_records`
    pub const ACTIVITY_MAX_RECORDS: usize = 100_000;
    /// `max_upstream_sessions`
    pub const MAX_UPSTREAM_SESSIONS: usize = 10_000;
    /// `max_user_servers`
    pub const MAX_USER_SERVERS: usize = 20;
    /// `tools_limit`: results of one `retrieve_tools` search unless the call asks otherwise.
    pub const TOOLS_LIMIT: usize = 15;
    /// `mcpServers.*.enabled`
    pub const SERVER_ENABLED: bool = true;
    /// `mcpServers.*.auth_broker.header`
    pub const BROKER_HEADER: &str = "Authorization";
    /// `mcpServers.*.auth_broker.header_format`
    pub const BROKER_HEADER_FORMAT: &str = "Bearer {token}";
    /// `auth.provider`
    pub const AUTH_PROVIDER: &str = "oidc";
    /// `auth.scopes` for `oidc`, `google` (and `microsoft` plus `User.Read`).
    pub const AUTH_SCOPES: &[&str] = &["openid", "email", "profile"];
    /// `auth.scopes` for `microsoft` (the reference's list).
    pub const AUTH_SCOPES_MICROSOFT: &[&str] = &["openid", "email", "profile", "User.Read"];
    /// `auth.scopes` for `github` (the reference's list).
    pub const AUTH_SCOPES_GITHUB: &[&str] = &["user:email", "read:user"];
    /// `auth.tenant_id` (microsoft)
    pub const AUTH_TENANT_ID: &str = "common";
    /// `auth.resource` is `public_url` (or `http://<listen>` for a loopback `listen`) plus this path.
    pub const AUTH_RESOURCE_PATH: &str = "/mcp";
    /// `auth.algorithms`
    pub const AUTH_ALGORITHMS: &[crate::JwtAlgorithm] =
        &[crate::JwtAlgorithm::RS256, crate::JwtAlgorithm::ES256];
    /// `auth.introspection_cache`
    pub const AUTH_INTROSPECTION_CACHE: Duration = Duration::from_secs(30);
    /// `auth.jwks_cache`
    pub const AUTH_JWKS_CACHE: Duration = Duration::from_secs(600);
    /// `auth.session_ttl` (and `server_edition.session_ttl`)
    pub const AUTH_SESSION_TTL: Duration = Duration::from_secs(24 * 3600);
    /// `auth.store_idp_tokens`
    pub const AUTH_STORE_IDP_TOKENS: bool = false;
    /// `auth.authorization_server.access_token_ttl`
    pub const AS_ACCESS_TOKEN_TTL: Duration = Duration::from_secs(3600);
    /// `auth.authorization_server.refresh_token_ttl`
    pub const AS_REFRESH_TOKEN_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
    /// `auth.authorization_server.code_ttl`
    pub const AS_CODE_TTL: Duration = Duration::from_secs(60);
    /// `auth.authorization_server.dynamic_registration`
    pub const AS_DYNAMIC_REGISTRATION: bool = true;
    /// `auth.authorization_server.client_metadata_documents`
    pub const AS_CLIENT_METADATA_DOCUMENTS: bool = true;
    /// `auth.authorization_server.registration_rate_limit.per_minute`
    pub const AS_REGISTRATION_PER_MINUTE: u32 = 10;
    /// `auth.authorization_server.registration_rate_limit.burst`
    pub const AS_REGISTRATION_BURST: u32 = 20;
}

/// The `storage` key: which database the gateway keeps users, sessions, tokens, credentials,
/// connect flows and activity in.
#[derive(Debug, Clone)]
pub enum Storage {
    /// `sqlite://<path>` (default `<data_dir>/tessera.db`): one replica.
    Sqlite(PathBuf),
    /// `postgres://user[:password]@host[:port]/database[?…]`: any number of replicas. Kept secret:
    /// the URL may carry a password.
    Postgres(SecretString),
}

impl Storage {
    /// The URL to hand to `tessera_store::Store::connect` (it may contain a password).
    pub fn url(&self) -> SecretString {
        match self {
            Storage::Sqlite(path) => SecretString::from(format!("sqlite://{}", path.display())),
            Storage::Postgres(url) => url.clone(),
        }
    }
}

/// What an MCP endpoint offers as tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RoutingMode {
    /// Every tool the caller may use, as `<server>__<tool>`.
    #[default]
    Direct,
    /// Two tools: `retrieve_tools` (BM25 search over the tools the caller may use) and
    /// `call_tool` (calls one of them by name): an agent's context holds only what it found.
    RetrieveTools,
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
    /// Where the gateway's database is (`storage`): by default the SQLite file
    /// `<data_dir>/tessera.db`.
    pub storage: Storage,
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
    /// A brokered (per-user) upstream session with no call for this long is ended (HTTP DELETE
    /// at the upstream); the next call opens a new one.
    pub upstream_idle_timeout: Duration,
    /// Most brokered upstream sessions one user may hold open at once.
    pub max_upstream_sessions_per_user: usize,
    /// Most brokered upstream sessions open at once, all users together.
    pub max_upstream_sessions: usize,
    /// Activity records older than this many days are purged (`activity_retention_days`,
    /// default 30; 0 = no age limit).
    pub activity_retention_days: usize,
    /// At most this many activity records are kept, the newest (`activity_max_records`,
    /// default 100 000; 0 = no count limit).
    pub activity_max_records: usize,
    /// Extra `Origin` values allowed on `/mcp`, normalised to `scheme://host[:port]`.
    pub allowed_origins: Vec<String>,
    /// The upstream servers from `mcpServers`, in file order, enabled and disabled alike.
    pub servers: Vec<ServerConfig>,
    /// What `/mcp` offers (`routing_mode`): every tool as `<server>__<tool>` (`direct`, the
    /// default) or the search tools (`retrieve_tools`). `/mcp/all` and `/mcp/call` always
    /// serve one each.
    pub routing_mode: RoutingMode,
    /// How many tools one `retrieve_tools` search returns unless it asks for a `limit`.
    pub tools_limit: usize,
    /// Personal upstream servers: quota and reachable networks.
    pub user_servers: UserServersConfig,
    /// Who the callers are: the `auth` key, or the reference's `server_edition` (alias `teams`)
    /// block mapped onto the same settings.
    pub auth: AuthMode,
    /// The reference's `server_edition.credential_encryption_key` (base64 of 32 bytes), if set.
    /// The sealing code decides how it ranks against the environment.
    pub credential_encryption_key: Option<SecretString>,
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
            storage: Storage::Sqlite(PathBuf::from(defaults::DATA_DIR).join(defaults::DB_FILE)),
            tool_separator: defaults::TOOL_SEPARATOR.to_string(),
            call_tool_timeout: defaults::CALL_TOOL_TIMEOUT,
            init_timeout: defaults::INIT_TIMEOUT,
            list_page_size: defaults::LIST_PAGE_SIZE,
            session_idle_timeout: defaults::SESSION_IDLE_TIMEOUT,
            upstream_idle_timeout: defaults::UPSTREAM_IDLE_TIMEOUT,
            max_upstream_sessions_per_user: defaults::MAX_UPSTREAM_SESSIONS_PER_USER,
            max_upstream_sessions: defaults::MAX_UPSTREAM_SESSIONS,
            activity_retention_days: defaults::ACTIVITY_RETENTION_DAYS,
            activity_max_records: defaults::ACTIVITY_MAX_RECORDS,
            allowed_origins: Vec::new(),
            servers: Vec::new(),
            routing_mode: RoutingMode::Direct,
            tools_limit: defaults::TOOLS_LIMIT,
            user_servers: UserServersConfig::default(),
            auth: AuthMode::default(),
            credential_encryption_key: None,
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
    /// Policy allow-list: store user ids or IdP subjects. All three lists empty = everyone.
    pub allowed_users: Vec<String>,
    /// Policy allow-list: exact addresses (case-insensitive) or `*@domain`.
    pub allowed_emails: Vec<String>,
    /// Policy allow-list: IdP group names.
    pub allowed_groups: Vec<String>,
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

/// Whether and how callers of `/mcp` are identified (top-level `auth`).
#[derive(Debug, Clone)]
pub enum AuthMode {
    /// No identity: single-user, local use. `explicit` is true for `"auth": "none"`, false when
    /// the file says nothing about identity (the binary should warn then).
    None { explicit: bool },
    /// Callers present tokens from an OpenID Connect / OAuth provider.
    Oidc(Box<AuthConfig>),
}

impl Default for AuthMode {
    fn default() -> Self {
        AuthMode::None { explicit: false }
    }
}

impl AuthMode {
    /// The provider settings, if identity is configured.
    pub fn oidc(&self) -> Option<&AuthConfig> {
        match self {
            AuthMode::Oidc(config) => Some(config),
            AuthMode::None { .. } => None,
        }
    }
}

/// Which kind of identity provider signs users in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthProvider {
    /// Any OpenID Connect provider, found through `issuer` discovery.
    Oidc,
    /// Google (issuer `https://accounts.google.com`).
    Google,
    /// GitHub: OAuth 2.0, not OpenID Connect (no ID token, no JWKS; tokens are opaque).
    Github,
    /// Microsoft Entra ID; `tenant_id` may be a tenant GUID or domain, or `common`,
    /// `organizations`, `consumers` (multi-tenant: the token's `iss` names its own tenant).
    Microsoft { tenant_id: String },
}

impl AuthProvider {
    /// The name as written in the config file.
    pub fn name(&self) -> &'static str {
        match self {
            AuthProvider::Oidc => "oidc",
            AuthProvider::Google => "google",
            AuthProvider::Github => "github",
            AuthProvider::Microsoft { .. } => "microsoft",
        }
    }

    /// Microsoft with `common`, `organizations` or `consumers`: tokens come from many tenants,
    /// each with its own issuer `https://login.microsoftonline.com/<tid>/v2.0`.
    pub fn is_multi_tenant(&self) -> bool {
        matches!(self, AuthProvider::Microsoft { tenant_id }
            if matches!(tenant_id.as_str(), "common" | "organizations" | "consumers"))
    }
}

/// A JWS algorithm Tessera may accept on access tokens. Only asymmetric ones: `none` and the
/// HMAC family (`HS256`, …) are rejected when the file is loaded.
#[allow(clippy::upper_case_acronyms)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JwtAlgorithm {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
}

impl JwtAlgorithm {
    /// Every accepted algorithm, in the order documented.
    pub const ALL: &[JwtAlgorithm] = &[
        JwtAlgorithm::RS256,
        JwtAlgorithm::RS384,
        JwtAlgorithm::RS512,
        JwtAlgorithm::PS256,
        JwtAlgorithm::PS384,
        JwtAlgorithm::PS512,
        JwtAlgorithm::ES256,
        JwtAlgorithm::ES384,
        JwtAlgorithm::EdDSA,
    ];

    /// The JOSE name (`"RS256"`).
    pub fn name(self) -> &'static str {
        match self {
            JwtAlgorithm::RS256 => "RS256",
            JwtAlgorithm::RS384 => "RS384",
            JwtAlgorithm::RS512 => "RS512",
            JwtAlgorithm::PS256 => "PS256",
            JwtAlgorithm::PS384 => "PS384",
            JwtAlgorithm::PS512 => "PS512",
            JwtAlgorithm::ES256 => "ES256",
            JwtAlgorithm::ES384 => "ES384",
            JwtAlgorithm::EdDSA => "EdDSA",
        }
    }

    /// The algorithm with this JOSE name, exactly (case-sensitive, as in a JWS header).
    pub fn from_name(name: &str) -> Option<JwtAlgorithm> {
        JwtAlgorithm::ALL.iter().copied().find(|a| a.name() == name)
    }
}

/// `auth.admin_claim`: a user is an admin when the token's `claim` equals `value` or, for an
/// array claim (`groups`, `roles`), contains it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminClaim {
    pub claim: String,
    pub value: String,
}

/// The identity provider and the rules for accepting its tokens on `/mcp` (the `auth` object).
#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub provider: AuthProvider,
    /// The authorization server's issuer identifier, as written (no trailing-slash
    /// normalisation: `iss` is compared with it). For `microsoft` it is
    /// `https://login.microsoftonline.com/<tenant_id>/v2.0`.
    pub issuer: String,
    /// Tessera's client id at the provider (browser sign-in, introspection).
    pub client_id: String,
    /// Tessera's client secret (browser sign-in, introspection with `client_secret_basic`).
    pub client_secret: Option<SecretString>,
    /// Scopes asked for at sign-in and advertised in the protected-resource metadata.
    pub scopes: Vec<String>,
    /// Tessera's own resource identifier (RFC 8707 / RFC 9728): the absolute URL of `/mcp`.
    /// Access tokens must name it (or one of `audiences`) in `aud`.
    pub resource: Url,
    /// Further accepted `aud` values (e.g. an Entra application id URI).
    pub audiences: Vec<String>,
    /// JWS algorithms accepted on access tokens.
    pub algorithms: Vec<JwtAlgorithm>,
    /// RFC 7662 endpoint for opaque (non-JWT) access tokens; Tessera authenticates with
    /// `client_id` and `client_secret` (HTTP Basic).
    pub introspection_endpoint: Option<Url>,
    /// How long an introspection answer is reused (at most until the token's `exp`).
    pub introspection_cache: Duration,
    /// How long the provider's signing keys are reused before they are fetched again.
    pub jwks_cache: Duration,
    /// Scopes every access token must carry (403 `insufficient_scope` otherwise).
    pub scopes_required: Vec<String>,
    /// Users with these emails (lower-cased) are admins.
    pub admin_emails: Vec<String>,
    /// Users whose token carries this claim value are admins.
    pub admin_claim: Option<AdminClaim>,
    /// When non-empty, only emails in these domains (lower-cased) are let in.
    pub allowed_domains: Vec<String>,
    /// Keep the user's provider tokens (sealed) for brokering later.
    pub store_idp_tokens: bool,
    /// Lifetime of a browser session.
    pub session_ttl: Duration,
    /// Tessera as the OAuth authorization server MCP clients talk to (`auth.authorization_server`),
    /// federating sign-in to this provider. Implies `store_idp_tokens`.
    pub authorization_server: Option<AuthorizationServerConfig>,
}

/// `auth.authorization_server`: Tessera issues its own tokens to MCP clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizationServerConfig {
    /// Lifetime of an access token.
    pub access_token_ttl: Duration,
    /// Lifetime of a refresh token (each use rotates it).
    pub refresh_token_ttl: Duration,
    /// Lifetime of an authorization code.
    pub code_ttl: Duration,
    /// RFC 7591 registration at `/oauth/register`.
    pub dynamic_registration: bool,
    /// Client ID metadata documents (an https URL as `client_id`).
    pub client_metadata_documents: bool,
    /// How many `/oauth/register` requests one client address may make (`None`: no limit).
    /// Registration is open to anyone, and each one adds a row to the store.
    pub registration_rate_limit: Option<RateLimit>,
}

/// A token bucket: `burst` requests at once, refilled at `per_minute`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Requests allowed per minute, sustained (at least 1).
    pub per_minute: u32,
    /// Requests allowed at once before the per-minute rate applies (at least 1).
    pub burst: u32,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self {
            per_minute: defaults::AS_REGISTRATION_PER_MINUTE,
            burst: defaults::AS_REGISTRATION_BURST,
        }
    }
}

impl Default for AuthorizationServerConfig {
    fn default() -> Self {
        Self {
            access_token_ttl: defaults::AS_ACCESS_TOKEN_TTL,
            refresh_token_ttl: defaults::AS_REFRESH_TOKEN_TTL,
            code_ttl: defaults::AS_CODE_TTL,
            dynamic_registration: defaults::AS_DYNAMIC_REGISTRATION,
            client_metadata_documents: defaults::AS_CLIENT_METADATA_DOCUMENTS,
            registration_rate_limit: Some(RateLimit::default()),
        }
    }
}

impl AuthConfig {
    /// With `authorization_server`, Tessera's own issuer identifier: the resource URL without
    /// its `/mcp` path (`https://mcp.example.com/mcp` → `https://mcp.example.com`), the base URL
    /// of `/.well-known/oauth-authorization-server` and `/oauth/*`.
    pub fn local_issuer(&self) -> Option<String> {
        self.authorization_server.as_ref()?;
        let mut url = self.resource.clone();
        let path = url.path().trim_end_matches('/').to_owned();
        let base = path
            .strip_suffix(defaults::AUTH_RESOURCE_PATH)
            .unwrap_or(&path)
            .to_owned();
        url.set_path(&base);
        url.set_query(None);
        url.set_fragment(None);
        Some(url.as_str().trim_end_matches('/').to_owned())
    }

    /// The scopes Tessera's own authorization server grants: `scopes_required`, or `mcp` when
    /// none are required.
    pub fn local_scopes(&self) -> Vec<String> {
        if self.scopes_required.is_empty() {
            vec!["mcp".to_owned()]
        } else {
            self.scopes_required.clone()
        }
    }

    /// A generic OIDC configuration with every optional setting at its default.
    pub fn oidc(issuer: impl Into<String>, client_id: impl Into<String>, resource: Url) -> Self {
        AuthConfig {
            provider: AuthProvider::Oidc,
            issuer: issuer.into(),
            client_id: client_id.into(),
            client_secret: None,
            scopes: defaults::AUTH_SCOPES
                .iter()
                .map(|s| s.to_string())
                .collect(),
            resource,
            audiences: Vec::new(),
            algorithms: defaults::AUTH_ALGORITHMS.to_vec(),
            introspection_endpoint: None,
            introspection_cache: defaults::AUTH_INTROSPECTION_CACHE,
            jwks_cache: defaults::AUTH_JWKS_CACHE,
            scopes_required: Vec::new(),
            admin_emails: Vec::new(),
            admin_claim: None,
            allowed_domains: Vec::new(),
            store_idp_tokens: defaults::AUTH_STORE_IDP_TOKENS,
            session_ttl: defaults::AUTH_SESSION_TTL,
            authorization_server: None,
        }
    }
}
