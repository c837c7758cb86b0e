//! The configured (shared) MCP servers as the caller sees them, **secrets redacted**
//! (`GET /api/v1/user/servers` lists them beside the caller's personal servers:
//! [`crate::user_servers`]). A [`ServerView`] is built from the configuration by the binary
//! ([`ServerView::from_config`], handed over with [`crate::ApiState::set_servers`]) and holds
//! no secret at all: header and environment variable *names* only, a URL without user info,
//! query or fragment, the command without its arguments, and the broker's mode without its
//! client secret. A brokered server whose allow-lists exclude the caller is not listed.

use serde::Serialize;
use tessera_config::{BrokerMode, HttpProtocol, ServerConfig, Transport};

use crate::ApiState;
use crate::caller::Caller;
use crate::error::ApiError;

/// One configured server, without any secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServerView {
    pub name: String,
    pub enabled: bool,
    /// `stdio`, `streamable-http`, `sse` or `http` (streamable HTTP with SSE fallback).
    pub transport: &'static str,
    /// HTTP servers: scheme, host, port and path only.
    pub url: Option<String>,
    /// stdio servers: the program (arguments are not shown: they may hold secrets).
    pub command: Option<String>,
    /// Names of the static headers sent upstream (values are secrets).
    pub header_names: Vec<String>,
    /// Names of the environment variables given to the child (values are secrets).
    pub env_names: Vec<String>,
    /// `token_exchange`, `entra_obo` or `oauth_connect` for a brokered server.
    pub brokered: Option<&'static str>,
    /// The broker's scopes (not secret).
    pub scopes: Vec<String>,
}

/// The configuration name of a broker mode.
pub fn mode_name(mode: BrokerMode) -> &'static str {
    match mode {
        BrokerMode::TokenExchange => "token_exchange",
        BrokerMode::EntraObo => "entra_obo",
        BrokerMode::OauthConnect => "oauth_connect",
    }
}

/// `url` without user info, query or fragment.
pub(crate) fn redact_url(url: &url::Url) -> String {
    let mut u = url.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.set_query(None);
    u.set_fragment(None);
    u.to_string()
}

impl ServerView {
    /// The secret-free view of one `mcpServers` entry.
    pub fn from_config(server: &ServerConfig) -> Self {
        let (transport, url, command, header_names, env_names) = match &server.transport {
            Transport::Stdio { command, env, .. } => (
                "stdio",
                None,
                Some(command.clone()),
                Vec::new(),
                env.iter().map(|(k, _)| k.clone()).collect(),
            ),
            Transport::Http {
                url,
                protocol,
                headers,
            } => (
                match protocol {
                    HttpProtocol::StreamableHttp => "streamable-http",
                    HttpProtocol::Sse => "sse",
                    HttpProtocol::Auto => "http",
                },
                Some(redact_url(url)),
                None,
                headers.iter().map(|(k, _)| k.clone()).collect(),
                Vec::new(),
            ),
        };
        ServerView {
            name: server.name.clone(),
            enabled: server.enabled,
            transport,
            url,
            command,
            header_names,
            env_names,
            brokered: server.auth_broker.as_ref().map(|b| mode_name(b.mode)),
            scopes: server
                .auth_broker
                .as_ref()
                .map(|b| b.scopes.clone())
                .unwrap_or_default(),
        }
    }

    /// Views of every entry, in configuration order.
    pub fn list(servers: &[ServerConfig]) -> Vec<Self> {
        servers.iter().map(Self::from_config).collect()
    }
}

/// The configured servers the caller may see: every unbrokered one, and the brokered ones whose
/// policy lets the caller in.
pub(crate) async fn visible(
    state: &ApiState,
    caller: &Caller,
) -> Result<Vec<ServerView>, ApiError> {
    let servers = state.shared_servers();
    let who = crate::credentials::Who::load(state, caller).await?;
    Ok(servers
        .iter()
        .filter(|s| s.brokered.is_none() || who.may_use(state, &s.name))
        .cloned()
        .collect())
}

#[cfg(test)]
mod tests {
    use secrecy::SecretString;

    use super::*;

    #[test]
    fn views_carry_no_secret() {
        let http = ServerConfig {
            name: "files".into(),
            enabled: true,
            transport: Transport::Http {
                url: "https://user:pw-secret@files.example.test/mcp?api_key=query-secret#frag"
                    .parse()
                    .unwrap(),
                protocol: HttpProtocol::StreamableHttp,
                headers: vec![("X-Api-Key".into(), SecretString::from("header-secret"))],
            },
            call_timeout: None,
            init_timeout: None,
            auth_broker: None,
        };
        let stdio = ServerConfig {
            name: "local".into(),
            enabled: false,
            transport: Transport::Stdio {
                command: "npx".into(),
                args: vec!["--token".into(), "arg-secret".into()],
                env: vec![("GITHUB_TOKEN".into(), SecretString::from("env-secret"))],
                working_dir: None,
            },
            call_timeout: None,
            init_timeout: None,
            auth_broker: None,
        };
        let views = ServerView::list(&[http, stdio]);
        let text = serde_json::to_string(&views).unwrap();
        for secret in [
            "pw-secret",
            "query-secret",
            "header-secret",
            "arg-secret",
            "env-secret",
            "user:",
        ] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert_eq!(
            views[0].url.as_deref(),
            Some("https://files.example.test/mcp")
        );
        assert_eq!(views[0].header_names, ["X-Api-Key"]);
        assert_eq!(views[0].transport, "streamable-http");
        assert_eq!(views[1].env_names, ["GITHUB_TOKEN"]);
        assert_eq!(views[1].command.as_deref(), Some("npx"));
        assert!(!views[1].enabled);
    }
}
