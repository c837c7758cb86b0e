//! A user's servers: the shared (configured) ones with the user's own on/off switch, and the
//! user's **personal** servers — HTTP upstreams they add themselves.
//!
//! - `GET /api/v1/user/servers` → `{"shared": [...], "personal": [...]}`
//! - `POST /api/v1/user/servers` → 201, the personal server
//! - `GET|PUT|DELETE /api/v1/user/servers/{name}` (a shared server can be read, not changed)
//! - `POST /api/v1/user/servers/{name}/enable` `{"enabled": bool}`: the user's switch for a
//!   shared server, or a personal server's `enabled`
//!
//! What a personal server may be: HTTP only (no `command`: nothing runs on the gateway's host),
//! an `auth_broker` block of mode `oauth_connect` only (validated by the configuration's own
//! rules, [`personal_auth_broker`]; sealed at rest, never echoed), a name of 1–64 characters of `[A-Za-z0-9_.-]` without the tool
//! separator and unlike any shared server's (case-insensitive), an `http`/`https` URL without
//! user info whose host — the literal address and every address the name resolves to — is not
//! internal unless `user_server_allowed_networks` allows it (SSRF: a user must not reach the
//! gateway's own network through it), at most `max_user_servers` per user. Header values are
//! sealed at rest and **never echoed**: every answer shows header names only, and the URL without
//! user info, query or fragment. Every successful write tells the gateway
//! ([`crate::UserEvents::servers_changed`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use secrecy::SecretString;
use serde::Deserialize;
use tessera_broker::BrokeredServer;
use tessera_config::UserServersConfig;
use tessera_store::{NewUserServer, StoreError, UserServer, UserServerUpdate};
use url::Url;

use crate::ApiState;
use crate::caller::Caller;
use crate::error::ApiError;
use crate::pat::rfc3339;
use crate::servers::{ServerView, redact_url, visible};

/// The longest server name.
pub const MAX_NAME_LEN: usize = 64;
/// The longest URL.
const MAX_URL_LEN: usize = 2048;
/// At most this many headers per server.
const MAX_HEADERS: usize = 32;
/// The longest header value.
const MAX_HEADER_VALUE: usize = 8 * 1024;
/// The protocols a personal server may speak.
pub const PROTOCOLS: [&str; 3] = ["streamable-http", "sse", "http"];
/// Headers the gateway sets itself (or that would break the connection).
const RESERVED_HEADERS: [&str; 9] = [
    "host",
    "content-length",
    "mcp-session-id",
    "connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "keep-alive",
];

/// Personal servers' limits and the tool separator ([`ApiState::set_user_servers_config`]).
#[derive(Debug, Clone)]
pub struct Limits {
    pub config: UserServersConfig,
    pub tool_separator: String,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            config: UserServersConfig::default(),
            tool_separator: tessera_config::defaults::TOOL_SEPARATOR.to_owned(),
        }
    }
}

// ------------------------------------------------------------------------------ views

/// The prefix of the problems [`personal_auth_broker`] reports (its one-server document).
const BROKER_PATH: &str = "mcpServers[0].auth_broker";

/// A personal server's `auth_broker` block checked by exactly the rules (and messages) of the
/// configuration — a one-server document through [`tessera_config::load_str`], without
/// `${VAR}` interpolation from the gateway's environment — plus what a personal server may not
/// have: a mode other than `oauth_connect` (token exchange and on-behalf-of would hand the
/// user's sign-in token to an authorization server of the user's choosing), and
/// `private_key_jwt` / `private_key_file` (a key file on the gateway's host). Messages name
/// fields (`auth_broker.client_id`), never values.
pub fn personal_auth_broker(
    url: &Url,
    block: &serde_json::Value,
) -> Result<tessera_config::AuthBrokerConfig, ApiError> {
    let Some(object) = block.as_object() else {
        return Err(ApiError::bad_request("auth_broker must be an object"));
    };
    if object.contains_key("private_key_file")
        || object.get("client_auth").and_then(|v| v.as_str()) == Some("private_key_jwt")
    {
        return Err(ApiError::bad_request(
            "auth_broker.client_auth \"private_key_jwt\" (a key file on the gateway's host) is not available on personal servers; use client_secret_post or client_secret_basic",
        ));
    }
    if let Some("token_exchange" | "entra_obo") = object.get("mode").and_then(|v| v.as_str()) {
        return Err(ApiError::bad_request(
            "auth_broker.mode: only \"oauth_connect\" is supported on personal servers (token_exchange and entra_obo would send your sign-in token to an authorization server of your choosing; ask an admin to add such a server to the configuration)",
        ));
    }
    let document = serde_json::json!({
        // Brokered servers need an identity; this one only satisfies the rule.
        "auth": { "issuer": "https://idp.invalid", "client_id": "tessera" },
        "mcpServers": [{ "name": "personal", "url": url.as_str(), "auth_broker": block }],
    });
    let no_env = |_: &str| None;
    let config = tessera_config::load_str(&document.to_string(), &no_env).map_err(|errors| {
        let problems: Vec<String> = errors
            .0
            .iter()
            .map(|p| match p.path.strip_prefix(BROKER_PATH) {
                Some(rest) => format!("auth_broker{rest}: {}", p.message),
                None => format!("auth_broker: {}", p.message),
            })
            .collect();
        ApiError::bad_request(format!("Invalid auth_broker: {}", problems.join("; ")))
    })?;
    let broker = config
        .servers
        .into_iter()
        .next()
        .and_then(|s| s.auth_broker)
        .ok_or_else(|| ApiError::bad_request("Invalid auth_broker"))?;
    if broker.mode != tessera_config::BrokerMode::OauthConnect {
        return Err(ApiError::bad_request(
            "auth_broker.mode: only \"oauth_connect\" is supported on personal servers",
        ));
    }
    Ok(broker)
}

/// The addresses the gateway itself fetches for a personal `auth_broker` (token, revocation,
/// metadata) must be allowed for personal servers, like the server's own URL.
async fn check_broker_hosts(
    broker: &tessera_config::AuthBrokerConfig,
    config: &UserServersConfig,
) -> Result<(), ApiError> {
    let fetched = [
        ("token_endpoint", &broker.token_endpoint),
        ("revocation_endpoint", &broker.revocation_endpoint),
        ("issuer", &broker.issuer),
    ];
    for (field, url) in fetched {
        let Some(url) = url else { continue };
        let Some(host) = url.host_str() else { continue };
        let port = url.port_or_known_default().unwrap_or(443);
        config
            .check_host(host, port)
            .await
            .map_err(|e| ApiError::bad_request(format!("Invalid auth_broker.{field}: {e}")))?;
    }
    Ok(())
}

/// The caller's personal server `name` prepared for the broker, when it has an `auth_broker`
/// block (opened from the store; not on the MCP path).
pub(crate) async fn personal_brokered(
    state: &ApiState,
    user_id: &str,
    name: &str,
) -> Result<Option<BrokeredServer>, ApiError> {
    let Some(server) = personal(state, user_id, name.trim()).await? else {
        return Ok(None);
    };
    brokered_of(state, &server).await
}

/// [`personal_brokered`] of a row already read.
pub(crate) async fn brokered_of(
    state: &ApiState,
    server: &UserServer,
) -> Result<Option<BrokeredServer>, ApiError> {
    if !server.brokered {
        return Ok(None);
    }
    let block = state
        .store
        .user_server_auth_broker(server)
        .await
        .map_err(|e| ApiError::internal("Failed to read the server", &e))?;
    let Some(block) = block else { return Ok(None) };
    let url = Url::parse(&server.url).map_err(|_| {
        ApiError::internal("Failed to read the server", &"stored URL does not parse")
    })?;
    let value: serde_json::Value =
        serde_json::from_str(secrecy::ExposeSecret::expose_secret(&block)).map_err(|_| {
            ApiError::internal(
                "Failed to read the server",
                &"stored auth_broker does not parse",
            )
        })?;
    let config = personal_auth_broker(&url, &value)?;
    BrokeredServer::personal(&server.name, &server.url, &server.id, config)
        .map(Some)
        .map_err(|e| ApiError::internal("Failed to prepare the server", &e))
}

/// The broker's view of a personal server about to be deleted or moved to another URL, read
/// before the change (`None`: not brokered, or its block does not open — logged).
async fn brokered_before_change(state: &ApiState, server: &UserServer) -> Option<BrokeredServer> {
    state.broker.get()?;
    brokered_of(state, server).await.unwrap_or_else(|e| {
        tracing::warn!(server = %server.name, error = %e.message, "cannot open a personal server's auth_broker; its credential stays until the user disconnects it");
        None
    })
}

/// Removes the owner's credential for a brokered personal server as it was (deleted, or moved
/// to another URL): revoked at the upstream where it can be, deleted from the store (audited
/// as a disconnect), dropped from the broker's cache. Failures are logged.
async fn forget_credential(state: &ApiState, user_id: &str, server: Option<BrokeredServer>) {
    let (Some(server), Some(broker)) = (server, state.broker.get()) else {
        return;
    };
    if let Err(e) = broker.connector.disconnect(user_id, &server, None).await {
        tracing::warn!(server = %server.name(), error = %e, "removing a personal server's credential failed");
    }
    broker.resolver.forget_user_server(user_id, server.key());
}

fn personal_json(server: &UserServer) -> serde_json::Value {
    let url = Url::parse(&server.url)
        .map(|u| redact_url(&u))
        .unwrap_or_default();
    serde_json::json!({
        "name": server.name,
        "url": url,
        "protocol": server.protocol,
        "header_names": server.header_names,
        "brokered": server.brokered,
        "enabled": server.enabled,
        "ownership": "personal",
        "created_at": rfc3339(Some(server.created_at)),
        "updated_at": rfc3339(Some(server.updated_at)),
    })
}

/// The user's own switch for shared server `name` (on unless they switched it off).
fn switched_on(prefs: &[(String, bool)], name: &str) -> bool {
    prefs
        .iter()
        .find(|(n, _)| n == name)
        .is_none_or(|(_, on)| *on)
}

fn shared_json(view: &ServerView, user_enabled: bool) -> serde_json::Value {
    let mut value = serde_json::to_value(view).unwrap_or_default();
    if let Some(object) = value.as_object_mut() {
        object.insert("ownership".into(), "shared".into());
        object.insert("user_enabled".into(), user_enabled.into());
    }
    value
}

// ------------------------------------------------------------------------------ checks

/// A name of 1–64 characters of `[A-Za-z0-9_.-]` without the tool separator.
pub fn check_name(name: &str, separator: &str) -> Result<(), ApiError> {
    if name.is_empty() {
        return Err(ApiError::bad_request("Server name is required"));
    }
    if name.len() > MAX_NAME_LEN
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        return Err(ApiError::bad_request(format!(
            "Invalid server name {name:?}: use 1 to {MAX_NAME_LEN} characters of A-Z, a-z, 0-9, '_', '.' and '-'"
        )));
    }
    if !separator.is_empty() && name.contains(separator) {
        return Err(ApiError::bad_request(format!(
            "Invalid server name {name:?}: it must not contain {separator:?}, the separator between server and tool names"
        )));
    }
    Ok(())
}

fn check_protocol(protocol: &str) -> Result<(), ApiError> {
    if PROTOCOLS.contains(&protocol) {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "Invalid protocol {protocol:?}: use streamable-http, sse or http"
        )))
    }
}

/// An `http`/`https` URL with a host and no user info, whose addresses a personal server may
/// reach ([`UserServersConfig::check_host`]: the literal address, or every address the name
/// resolves to).
pub async fn check_url(text: &str, config: &UserServersConfig) -> Result<Url, ApiError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(ApiError::bad_request("url is required"));
    }
    if text.len() > MAX_URL_LEN {
        return Err(ApiError::bad_request(format!(
            "Invalid url: at most {MAX_URL_LEN} characters"
        )));
    }
    let url = Url::parse(text).map_err(|e| ApiError::bad_request(format!("Invalid url: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ApiError::bad_request(
            "Invalid url: the scheme must be http or https",
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ApiError::bad_request(
            "Invalid url: it must not contain user info (user:password@); send credentials as headers",
        ));
    }
    let Some(host) = url.host_str().filter(|h| !h.is_empty()) else {
        return Err(ApiError::bad_request("Invalid url: it has no host"));
    };
    let port = url.port_or_known_default().unwrap_or(443);
    config
        .check_host(host, port)
        .await
        .map_err(|e| ApiError::bad_request(format!("Invalid url: {e}")))?;
    Ok(url)
}

/// Valid header names (not ones the gateway sets itself, no duplicates) with non-empty values
/// that can be sent. Messages name the header, never its value.
pub fn check_headers(
    headers: BTreeMap<String, String>,
) -> Result<Vec<(String, SecretString)>, ApiError> {
    if headers.len() > MAX_HEADERS {
        return Err(ApiError::bad_request(format!(
            "Too many headers: at most {MAX_HEADERS}"
        )));
    }
    let mut out: Vec<(String, SecretString)> = Vec::with_capacity(headers.len());
    for (name, value) in headers {
        let value = SecretString::from(value);
        let name = name.trim().to_owned();
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(ApiError::bad_request(format!(
                "Invalid header name {name:?}: use letters, digits and !#$%&'*+-.^_`|~"
            )));
        }
        let lower = name.to_ascii_lowercase();
        if RESERVED_HEADERS.contains(&lower.as_str()) {
            return Err(ApiError::bad_request(format!(
                "Header {name:?} cannot be set: the gateway sets it itself"
            )));
        }
        if out.iter().any(|(n, _)| n.eq_ignore_ascii_case(&name)) {
            return Err(ApiError::bad_request(format!(
                "Header {name:?} is given twice"
            )));
        }
        let text = secrecy::ExposeSecret::expose_secret(&value);
        if text.trim().is_empty() {
            return Err(ApiError::bad_request(format!(
                "Header {name:?} has an empty value"
            )));
        }
        if text.len() > MAX_HEADER_VALUE || http::HeaderValue::from_str(text).is_err() {
            return Err(ApiError::bad_request(format!(
                "Header {name:?} has a value that cannot be sent (at most {MAX_HEADER_VALUE} visible characters, no line breaks)"
            )));
        }
        out.push((name, value));
    }
    Ok(out)
}

/// Refuses what a personal server cannot have: stdio fields, unknown fields (`auth_broker` is
/// taken out before).
fn check_extra(extra: &serde_json::Map<String, serde_json::Value>) -> Result<(), ApiError> {
    const STDIO: [&str; 4] = ["command", "args", "env", "working_dir"];
    if let Some(field) = extra.keys().find(|k| STDIO.contains(&k.as_str())) {
        return Err(ApiError::bad_request(format!(
            "Personal servers are HTTP only: {field:?} (a stdio server runs on the gateway's host) is for servers in the configuration; give a url"
        )));
    }
    if extra.contains_key("auth_broker") {
        return Err(ApiError::bad_request(
            "auth_broker cannot be changed: delete the server and add it again",
        ));
    }
    if let Some(field) = extra.keys().next() {
        return Err(ApiError::bad_request(format!(
            "Unknown field {field:?}: a personal server has name, url, protocol, headers, auth_broker and enabled"
        )));
    }
    Ok(())
}

fn body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    body.map(|Json(b)| b)
        .map_err(|e| ApiError::bad_request(format!("Invalid request body: {}", e.body_text())))
}

fn store_error(e: StoreError, name: &str) -> ApiError {
    match e {
        StoreError::UserServerExists { .. } => ApiError::new(
            StatusCode::CONFLICT,
            format!("Server \"{name}\" already exists"),
        ),
        StoreError::UserServerQuota { max } => ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "Personal server limit reached: at most {max} per user (max_user_servers = {max}); delete one to add another"
            ),
        ),
        StoreError::UserServerNotFound { .. } => not_found(name),
        StoreError::SealingDisabled => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Headers of personal servers are sealed at rest and this gateway has no sealing key (TESSERA_SEALING_KEY); ask an admin, or add the server without headers",
        ),
        other => ApiError::internal("Failed to save the server", &other),
    }
}

fn not_found(name: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("Server \"{name}\" not found"),
    )
}

/// The shared server the caller may see whose name is `name`, ignoring case.
async fn find_shared(
    state: &ApiState,
    caller: &Caller,
    name: &str,
) -> Result<Option<ServerView>, ApiError> {
    Ok(visible(state, caller)
        .await?
        .into_iter()
        .find(|s| s.name.eq_ignore_ascii_case(name)))
}

async fn preference(state: &ApiState, user_id: &str, server: &str) -> Result<bool, ApiError> {
    let prefs = state
        .store
        .server_preferences(user_id)
        .await
        .map_err(|e| ApiError::internal("Failed to read preferences", &e))?;
    Ok(prefs
        .into_iter()
        .find(|(s, _)| s == server)
        .is_none_or(|(_, on)| on))
}

async fn personal(
    state: &ApiState,
    user_id: &str,
    name: &str,
) -> Result<Option<UserServer>, ApiError> {
    state
        .store
        .get_user_server(user_id, name)
        .await
        .map_err(|e| ApiError::internal("Failed to read the server", &e))
}

// ------------------------------------------------------------------------------ handlers

/// `GET /api/v1/user/servers` → `{"shared": [ServerView + ownership + user_enabled…],
/// "personal": [personal server…]}`.
pub(crate) async fn list(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
) -> Result<Json<serde_json::Value>, ApiError> {
    let mine = MyServers::load(&state, &caller).await?;
    let shared: Vec<serde_json::Value> = mine
        .shared
        .iter()
        .map(|(s, on)| shared_json(s, *on))
        .collect();
    let personal: Vec<serde_json::Value> = mine.personal.iter().map(personal_json).collect();
    Ok(Json(
        serde_json::json!({ "shared": shared, "personal": personal }),
    ))
}

/// The servers a caller sees: the shared ones they may use with their own switch (on unless
/// they switched it off), and their personal ones.
struct MyServers {
    shared: Vec<(ServerView, bool)>,
    personal: Vec<UserServer>,
}

impl MyServers {
    async fn load(state: &ApiState, caller: &Caller) -> Result<Self, ApiError> {
        let prefs = state
            .store
            .server_preferences(&caller.user_id)
            .await
            .map_err(|e| ApiError::internal("Failed to read preferences", &e))?;
        let shared = visible(state, caller)
            .await?
            .into_iter()
            .map(|s| {
                let on = switched_on(&prefs, &s.name);
                (s, on)
            })
            .collect();
        let personal = state
            .store
            .list_user_servers(&caller.user_id)
            .await
            .map_err(|e| ApiError::internal("Failed to list servers", &e))?;
        Ok(MyServers { shared, personal })
    }
}

/// `GET /api/v1/user/diagnostics` → `{"servers": [{name, ownership, enabled, protocol,
/// brokered, connected, state, error, tool_count, upstream_sessions}…]}`: the caller's servers
/// (as `GET /api/v1/user/servers` lists them) with their live state on the replica that
/// answers (the reference's were always "not connected, 0 tools"). `enabled` is the caller's
/// own switch; a server switched off is `state: "switched_off"`. A personal server the gateway
/// has not loaded yet (no MCP request of the caller here) is `not_connected`.
pub(crate) async fn diagnostics(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
) -> Result<Json<serde_json::Value>, ApiError> {
    let user = state
        .store
        .get_user(&caller.user_id)
        .await
        .map_err(|e| ApiError::internal("Failed to read the user", &e))?
        .ok_or_else(ApiError::unauthorized)?;
    let live = state.events().user_diagnostics(&user.issuer, &user.subject);
    let live_of = |name: &str| live.iter().find(|d| d["name"] == name);
    // `off`: why a server that is not enabled for the caller is not (`switched_off` by the
    // caller, `disabled` in the configuration or by its owner).
    let row = |name: &str, ownership: &str, off: Option<&str>, protocol: &str, brokered: bool| {
        let live = live_of(name);
        let field = |key: &str| live.map_or(serde_json::Value::Null, |d| d[key].clone());
        let enabled = off.is_none();
        let state = if let Some(off) = off {
            off.into()
        } else {
            live.map_or_else(|| "not_connected".into(), |d| d["state"].clone())
        };
        let upstream_sessions = live
            .and_then(|d| d["upstream_sessions"].as_u64())
            .unwrap_or(0);
        serde_json::json!({
            "name": name,
            "ownership": ownership,
            "enabled": enabled,
            "protocol": protocol,
            "brokered": brokered,
            "connected": enabled && (state == "ready" || upstream_sessions > 0),
            "state": state,
            "error": if enabled { field("error") } else { serde_json::Value::Null },
            "tool_count": if enabled { field("tool_count") } else { serde_json::Value::Null },
            "upstream_sessions": upstream_sessions,
        })
    };
    let mine = MyServers::load(&state, &caller).await?;
    let mut servers: Vec<serde_json::Value> = mine
        .shared
        .iter()
        .map(|(s, on)| {
            let off = if !s.enabled {
                Some("disabled")
            } else if !on {
                Some("switched_off")
            } else {
                None
            };
            row(&s.name, "shared", off, s.transport, s.brokered.is_some())
        })
        .collect();
    servers.extend(mine.personal.iter().map(|s| {
        let off = (!s.enabled).then_some("disabled");
        row(&s.name, "personal", off, &s.protocol, s.brokered)
    }));
    Ok(Json(serde_json::json!({ "servers": servers })))
}

#[derive(Deserialize)]
pub(crate) struct CreateRequest {
    #[serde(default)]
    name: String,
    #[serde(default)]
    url: String,
    protocol: Option<String>,
    headers: Option<BTreeMap<String, String>>,
    enabled: Option<bool>,
    #[serde(flatten)]
    extra: serde_json::Map<String, serde_json::Value>,
}

/// `POST /api/v1/user/servers` → 201 with the personal server.
pub(crate) async fn create(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    request: Result<Json<CreateRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let mut req = body(request)?;
    let broker_block = req.extra.remove("auth_broker");
    check_extra(&req.extra)?;
    let limits = state.user_server_limits();
    let name = req.name.trim();
    check_name(name, &limits.tool_separator)?;
    if state
        .shared_servers()
        .iter()
        .any(|s| s.name.eq_ignore_ascii_case(name))
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("Server name \"{name}\" conflicts with a shared server"),
        ));
    }
    if limits.config.max_per_user == 0 {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "Personal servers are turned off on this gateway (max_user_servers = 0)",
        ));
    }
    let protocol = req.protocol.as_deref().unwrap_or("streamable-http");
    check_protocol(protocol)?;
    let headers = check_headers(req.headers.unwrap_or_default())?;
    let url = check_url(&req.url, &limits.config).await?;
    let broker_json = match &broker_block {
        Some(block) => {
            let broker = personal_auth_broker(&url, block)?;
            if headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case(&broker.header))
            {
                return Err(ApiError::bad_request(format!(
                    "Header {:?} is set per user by auth_broker: remove it from headers",
                    broker.header
                )));
            }
            check_broker_hosts(&broker, &limits.config).await?;
            if state.store.keyring_handle().is_none() || state.broker.get().is_none() {
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "auth_broker on personal servers needs the credential broker, which needs a sealing key (TESSERA_SEALING_KEY) on this gateway; ask an admin, or add the server without auth_broker",
                ));
            }
            Some(SecretString::from(block.to_string()))
        }
        None => None,
    };
    let server = state
        .store
        .create_user_server(
            &caller.user_id,
            &NewUserServer {
                name,
                url: url.as_str(),
                protocol,
                headers: &headers,
                enabled: req.enabled.unwrap_or(true),
                auth_broker: broker_json.as_ref(),
            },
            limits.config.max_per_user,
        )
        .await
        .map_err(|e| store_error(e, name))?;
    tracing::info!(user = %caller.user_id, server = %server.name, "personal server added");
    state.events().servers_changed(&caller.user_id).await;
    Ok((StatusCode::CREATED, Json(personal_json(&server))).into_response())
}

/// `GET /api/v1/user/servers/{name}`: the personal server of that name, else the shared one
/// (name compared without case).
pub(crate) async fn get_one(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if let Some(server) = personal(&state, &caller.user_id, &name).await? {
        return Ok(Json(personal_json(&server)));
    }
    match find_shared(&state, &caller, &name).await? {
        Some(view) => {
            let on = preference(&state, &caller.user_id, &view.name).await?;
            Ok(Json(shared_json(&view, on)))
        }
        None => Err(not_found(&name)),
    }
}

#[derive(Deserialize)]
pub(crate) struct UpdateRequest {
    url: Option<String>,
    protocol: Option<String>,
    headers: Option<BTreeMap<String, String>>,
    enabled: Option<bool>,
    #[serde(flatten)]
    extra: serde_json::Map<String, serde_json::Value>,
}

/// 403 for a shared server, 404 for none.
async fn refuse_shared(state: &ApiState, caller: &Caller, name: &str, action: &str) -> ApiError {
    match find_shared(state, caller, name).await {
        Ok(Some(_)) => ApiError::new(
            StatusCode::FORBIDDEN,
            format!("Cannot {action} a shared server"),
        ),
        Ok(None) => not_found(name),
        Err(e) => e,
    }
}

/// `PUT /api/v1/user/servers/{name}` `{url?, protocol?, headers?, enabled?}` (headers replace
/// all of them; `{}` removes them).
pub(crate) async fn update(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Path(name): Path<String>,
    request: Result<Json<UpdateRequest>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Some(current) = personal(&state, &caller.user_id, &name).await? else {
        return Err(refuse_shared(&state, &caller, &name, "update").await);
    };
    let before = brokered_before_change(&state, &current).await;
    let mut req = body(request)?;
    if req.extra.remove("name").is_some() {
        return Err(ApiError::bad_request(
            "A server cannot be renamed: delete it and add it again",
        ));
    }
    check_extra(&req.extra)?;
    let limits = state.user_server_limits();
    if let Some(protocol) = req.protocol.as_deref() {
        check_protocol(protocol)?;
    }
    let headers = req.headers.take().map(check_headers).transpose()?;
    let url = match req.url.as_deref() {
        Some(text) => Some(check_url(text, &limits.config).await?),
        None => None,
    };
    let server = state
        .store
        .update_user_server(
            &caller.user_id,
            &name,
            &UserServerUpdate {
                url: url.as_ref().map(Url::as_str),
                protocol: req.protocol.as_deref(),
                headers: headers.as_deref(),
                enabled: req.enabled,
            },
        )
        .await
        .map_err(|e| store_error(e, &name))?;
    // A brokered server's credential is for its URL (the key names it): a new URL drops it.
    if server.url != current.url {
        forget_credential(&state, &caller.user_id, before).await;
    }
    tracing::info!(user = %caller.user_id, server = %server.name, "personal server updated");
    state.events().servers_changed(&caller.user_id).await;
    Ok(Json(personal_json(&server)))
}

/// `DELETE /api/v1/user/servers/{name}` → `{"message": "Server \"<n>\" deleted"}`.
pub(crate) async fn remove(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let before = match personal(&state, &caller.user_id, &name).await? {
        Some(current) => brokered_before_change(&state, &current).await,
        None => None,
    };
    let deleted = state
        .store
        .delete_user_server(&caller.user_id, &name)
        .await
        .map_err(|e| ApiError::internal("Failed to delete the server", &e))?;
    if !deleted {
        return Err(refuse_shared(&state, &caller, &name, "delete").await);
    }
    forget_credential(&state, &caller.user_id, before).await;
    tracing::info!(user = %caller.user_id, server = %name, "personal server deleted");
    state.events().servers_changed(&caller.user_id).await;
    Ok(Json(
        serde_json::json!({ "message": format!("Server \"{name}\" deleted") }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EnableRequest {
    enabled: bool,
}

/// `POST /api/v1/user/servers/{name}/enable` `{"enabled": bool}`: a personal server's switch,
/// or the caller's own switch for a shared server (answered with `user_enabled`).
pub(crate) async fn enable(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Path(name): Path<String>,
    request: Result<Json<EnableRequest>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let req = body(request)?;
    if personal(&state, &caller.user_id, &name).await?.is_some() {
        let server = state
            .store
            .update_user_server(
                &caller.user_id,
                &name,
                &UserServerUpdate {
                    enabled: Some(req.enabled),
                    ..UserServerUpdate::default()
                },
            )
            .await
            .map_err(|e| store_error(e, &name))?;
        state.events().servers_changed(&caller.user_id).await;
        return Ok(Json(personal_json(&server)));
    }
    let Some(view) = find_shared(&state, &caller, &name).await? else {
        return Err(not_found(&name));
    };
    state
        .store
        .set_server_preference(&caller.user_id, &view.name, req.enabled)
        .await
        .map_err(|e| ApiError::internal("Failed to save the preference", &e))?;
    tracing::info!(user = %caller.user_id, server = %view.name, enabled = req.enabled, "shared server switched");
    state.events().servers_changed(&caller.user_id).await;
    Ok(Json(shared_json(&view, req.enabled)))
}
