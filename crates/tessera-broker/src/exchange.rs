//! RFC 8693 token exchange and Entra on-behalf-of against a token endpoint.

use std::time::{Duration, SystemTime};

use secrecy::{ExposeSecret, SecretString};
use tessera_config::{AuthBrokerConfig, BrokerMode, SubjectTokenType};
use url::form_urlencoded;

use crate::discovery::Discovery;
use crate::error::BrokerError;
use crate::store::CredentialSource;
use crate::token::{DEFAULT_EXCHANGE_TIMEOUT, token_request};

const GRANT_TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const GRANT_JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const TT_ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
const TT_ID_TOKEN: &str = "urn:ietf:params:oauth:token-type:id_token";

/// A token issued by the token endpoint. `Debug` redacts the tokens.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    pub access_token: SecretString,
    pub refresh_token: Option<SecretString>,
    /// `token_type` of the response, `Bearer` when absent.
    pub token_type: String,
    pub expires_at: Option<SystemTime>,
    /// The granted scopes (the response's `scope`), else the requested ones.
    pub scopes: Vec<String>,
    pub source: CredentialSource,
}

/// Exchanges a user's subject token for an upstream token. Cheap to clone: the HTTP client and
/// the discovery cache are shared.
#[derive(Debug, Clone)]
pub struct TokenExchanger {
    client: reqwest::Client,
    timeout: Duration,
    discovery: Discovery,
}

impl TokenExchanger {
    /// `client` is the process's shared HTTP client.
    pub fn new(client: reqwest::Client) -> Self {
        Self {
            client,
            timeout: DEFAULT_EXCHANGE_TIMEOUT,
            discovery: Discovery::new(),
        }
    }

    /// Bound every exchange (connect, send, read the body) by `timeout`.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Share an RFC 8414 metadata cache (e.g. with the [`crate::Connector`]).
    pub fn with_discovery(mut self, discovery: Discovery) -> Self {
        self.discovery = discovery;
        self
    }

    /// The RFC 8414 metadata cache.
    pub fn discovery(&self) -> &Discovery {
        &self.discovery
    }

    /// Exchange `subject` (the user's IdP token) for a token for the upstream `cfg` describes.
    /// `server` names the server in errors.
    pub async fn exchange(
        &self,
        server: &str,
        cfg: &AuthBrokerConfig,
        subject: &SecretString,
    ) -> Result<IssuedToken, BrokerError> {
        let source = match cfg.mode {
            BrokerMode::TokenExchange => CredentialSource::Exchange,
            BrokerMode::EntraObo => CredentialSource::Obo,
            BrokerMode::OauthConnect => {
                return Err(BrokerError::Unsupported {
                    server: server.to_owned(),
                    what: "token exchange in oauth_connect mode",
                });
            }
        };
        let endpoints = self
            .discovery
            .endpoints(&self.client, self.timeout, cfg, false)
            .await?;
        let form = form_body(cfg, subject);
        let issued = token_request(
            &self.client,
            self.timeout,
            server,
            &endpoints.token,
            cfg,
            form,
        )
        .await?;
        Ok(IssuedToken {
            access_token: issued.access_token,
            refresh_token: issued.refresh_token,
            token_type: issued.token_type,
            expires_at: issued.expires_at,
            scopes: issued.scope.unwrap_or_else(|| cfg.scopes.clone()),
            source,
        })
    }
}

fn form_body(cfg: &AuthBrokerConfig, subject: &SecretString) -> String {
    let mut form = form_urlencoded::Serializer::new(String::new());
    if cfg.mode == BrokerMode::EntraObo {
        form.append_pair("grant_type", GRANT_JWT_BEARER);
        form.append_pair("assertion", subject.expose_secret());
        form.append_pair("requested_token_use", "on_behalf_of");
    } else {
        form.append_pair("grant_type", GRANT_TOKEN_EXCHANGE);
        form.append_pair("subject_token", subject.expose_secret());
        form.append_pair(
            "subject_token_type",
            match cfg.subject_token_type {
                SubjectTokenType::AccessToken => TT_ACCESS_TOKEN,
                SubjectTokenType::IdToken => TT_ID_TOKEN,
            },
        );
        form.append_pair("requested_token_type", TT_ACCESS_TOKEN);
        if let Some(audience) = cfg.audience.as_deref() {
            form.append_pair("audience", audience);
        }
        if let Some(resource) = cfg.resource.as_deref() {
            form.append_pair("resource", resource);
        }
    }
    if !cfg.scopes.is_empty() {
        form.append_pair("scope", &cfg.scopes.join(" "));
    }
    form.finish()
}
