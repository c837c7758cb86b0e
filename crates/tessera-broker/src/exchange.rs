//! RFC 8693 token exchange and Entra on-behalf-of against a token endpoint.

use std::time::{Duration, SystemTime};

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tessera_config::{AuthBrokerConfig, BrokerMode, ClientAuth, SubjectTokenType};
use url::form_urlencoded;

use crate::error::{BrokerError, OAuthErrorCode};
use crate::store::CredentialSource;

/// Whole-request bound (connect, send, read) when none is configured.
pub const DEFAULT_EXCHANGE_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest token endpoint response body read; a longer one is an error.
pub const MAX_RESPONSE_BYTES: usize = 1 << 20;

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

/// Exchanges a user's subject token for an upstream token. Cheap to clone: the HTTP client is shared.
#[derive(Debug, Clone)]
pub struct TokenExchanger {
    client: reqwest::Client,
    timeout: Duration,
}

#[derive(Deserialize)]
struct SuccessBody {
    access_token: Option<String>,
    token_type: Option<String>,
    expires_in: Option<serde_json::Value>,
    scope: Option<String>,
    refresh_token: Option<String>,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: Option<String>,
}

impl TokenExchanger {
    /// `client` is the process's shared HTTP client.
    pub fn new(client: reqwest::Client) -> Self {
        Self {
            client,
            timeout: DEFAULT_EXCHANGE_TIMEOUT,
        }
    }

    /// Bound every exchange (connect, send, read the body) by `timeout`.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Exchange `subject` (the user's IdP token) for a token for the upstream `cfg` describes.
    /// `server` names the server in errors.
    pub async fn exchange(
        &self,
        server: &str,
        cfg: &AuthBrokerConfig,
        subject: &SecretString,
    ) -> Result<IssuedToken, BrokerError> {
        let endpoint = cfg
            .token_endpoint
            .as_ref()
            .ok_or(BrokerError::MissingField("token_endpoint"))?;
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
        let body = form_body(server, cfg, subject)?;
        let mut request = self
            .client
            .post(endpoint.clone())
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(http::header::ACCEPT, "application/json");
        if cfg.client_auth == ClientAuth::ClientSecretBasic {
            let id = cfg
                .client_id
                .as_deref()
                .ok_or(BrokerError::MissingField("client_id"))?;
            let secret = cfg
                .client_secret
                .as_ref()
                .ok_or(BrokerError::MissingField("client_secret"))?;
            // RFC 6749 §2.3.1: id and secret are form-urlencoded before Basic encoding.
            let id: String = form_urlencoded::byte_serialize(id.as_bytes()).collect();
            let secret: String =
                form_urlencoded::byte_serialize(secret.expose_secret().as_bytes()).collect();
            request = request.basic_auth(id, Some(secret));
        }
        let request = request.body(body);

        let (status, bytes) = tokio::time::timeout(self.timeout, async {
            let mut response = request.send().await.map_err(|e| {
                if e.is_timeout() {
                    BrokerError::Timeout
                } else {
                    BrokerError::Unreachable
                }
            })?;
            let status = response.status().as_u16();
            if response
                .content_length()
                .is_some_and(|n| n > MAX_RESPONSE_BYTES as u64)
            {
                return Ok((status, None));
            }
            let mut bytes = Vec::new();
            loop {
                match response.chunk().await {
                    Ok(Some(chunk)) => {
                        if bytes.len() + chunk.len() > MAX_RESPONSE_BYTES {
                            return Ok((status, None));
                        }
                        bytes.extend_from_slice(&chunk);
                    }
                    Ok(None) => break,
                    Err(e) if e.is_timeout() => return Err(BrokerError::Timeout),
                    Err(_) => return Err(BrokerError::Unreachable),
                }
            }
            Ok((status, Some(bytes)))
        })
        .await
        .map_err(|_| BrokerError::Timeout)??;

        if status != 200 {
            let code = bytes
                .as_deref()
                .and_then(|b| serde_json::from_slice::<ErrorBody>(b).ok())
                .and_then(|e| e.error)
                .map_or(OAuthErrorCode::ServerError, |c| {
                    OAuthErrorCode::from_wire(&c)
                });
            tracing::debug!(
                server,
                status,
                code = code.as_str(),
                "token endpoint refused"
            );
            return Err(BrokerError::Rejected { status, code });
        }
        let bytes = bytes.ok_or(BrokerError::MalformedResponse { status })?;
        let parsed: SuccessBody = serde_json::from_slice(&bytes)
            .map_err(|_| BrokerError::MalformedResponse { status })?;
        let access_token = match parsed.access_token {
            Some(t) if !t.is_empty() => SecretString::from(t),
            _ => return Err(BrokerError::MissingAccessToken),
        };
        let expires_in = match parsed.expires_in {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::Number(n)) => n.as_u64(),
            Some(serde_json::Value::String(s)) => s.parse::<u64>().ok(),
            Some(_) => return Err(BrokerError::MalformedResponse { status }),
        };
        let scopes = match parsed.scope.as_deref() {
            Some(s) if !s.trim().is_empty() => s.split_whitespace().map(str::to_owned).collect(),
            _ => cfg.scopes.clone(),
        };
        Ok(IssuedToken {
            access_token,
            refresh_token: parsed
                .refresh_token
                .filter(|t| !t.is_empty())
                .map(SecretString::from),
            token_type: parsed.token_type.unwrap_or_else(|| "Bearer".to_owned()),
            expires_at: expires_in
                .filter(|&s| s > 0)
                .map(|s| SystemTime::now() + Duration::from_secs(s)),
            scopes,
            source,
        })
    }
}

fn form_body(
    server: &str,
    cfg: &AuthBrokerConfig,
    subject: &SecretString,
) -> Result<String, BrokerError> {
    let mut form = form_urlencoded::Serializer::new(String::new());
    match cfg.mode {
        BrokerMode::TokenExchange => {
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
        BrokerMode::EntraObo => {
            form.append_pair("grant_type", GRANT_JWT_BEARER);
            form.append_pair("assertion", subject.expose_secret());
            form.append_pair("requested_token_use", "on_behalf_of");
        }
        BrokerMode::OauthConnect => {
            return Err(BrokerError::Unsupported {
                server: server.to_owned(),
                what: "token exchange in oauth_connect mode",
            });
        }
    }
    if !cfg.scopes.is_empty() {
        form.append_pair("scope", &cfg.scopes.join(" "));
    }
    match cfg.client_auth {
        ClientAuth::ClientSecretPost => {
            if let Some(id) = cfg.client_id.as_deref() {
                form.append_pair("client_id", id);
            }
            if let Some(secret) = cfg.client_secret.as_ref() {
                form.append_pair("client_secret", secret.expose_secret());
            }
        }
        ClientAuth::ClientSecretBasic => {}
        ClientAuth::PrivateKeyJwt => {
            return Err(BrokerError::Unsupported {
                server: server.to_owned(),
                what: "client_auth private_key_jwt",
            });
        }
    }
    Ok(form.finish())
}
