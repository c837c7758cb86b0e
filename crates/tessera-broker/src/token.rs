//! The one token-endpoint POST every grant uses (token exchange, OBO, authorization code,
//! refresh): client authentication as configured (`client_secret_post`, `client_secret_basic`,
//! `private_key_jwt`), a whole-request timeout, a 1 MiB body cap, success only on HTTP 200 with a
//! JSON `access_token`, errors reduced to an allow-listed RFC 6749 code (never the body).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tessera_config::{AuthBrokerConfig, ClientAuth};
use url::{Url, form_urlencoded};

use crate::error::{BrokerError, OAuthErrorCode};

/// Whole-request bound (connect, send, read) when none is configured.
pub const DEFAULT_EXCHANGE_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest token endpoint response body read; a longer one is an error.
pub const MAX_RESPONSE_BYTES: usize = 1 << 20;
/// Lifetime of a `private_key_jwt` client assertion.
pub const CLIENT_ASSERTION_TTL: Duration = Duration::from_secs(60);

const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// A successful token response. `Debug` redacts the tokens.
#[derive(Debug, Clone)]
pub(crate) struct TokenResponse {
    pub access_token: SecretString,
    pub refresh_token: Option<SecretString>,
    pub token_type: String,
    pub expires_at: Option<SystemTime>,
    /// The response's `scope`, split; `None` when absent or empty.
    pub scope: Option<Vec<String>>,
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

/// Random bytes, base64url without padding (states, verifiers, `jti`s).
pub(crate) fn random_token(bytes: usize) -> Result<String, BrokerError> {
    use base64::Engine as _;
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|_| BrokerError::Store("no randomness"))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The RFC 7523 client assertion for `private_key_jwt`: `iss` = `sub` = client id, `aud` = the
/// token endpoint, a random `jti`, `iat`, `exp` 60 s later; RS256 for an RSA key, ES256 for an
/// EC key (PKCS#1, SEC1 or PKCS#8 PEM at `private_key_file`).
pub fn client_assertion(cfg: &AuthBrokerConfig, endpoint: &Url) -> Result<String, BrokerError> {
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    let client_id = cfg
        .client_id
        .as_deref()
        .ok_or(BrokerError::MissingField("client_id"))?;
    let path = cfg
        .private_key_file
        .as_ref()
        .ok_or(BrokerError::MissingField("private_key_file"))?;
    let pem = std::fs::read(path).map_err(|_| BrokerError::InvalidField("private_key_file"))?;
    let pem = SecretString::from(String::from_utf8_lossy(&pem).into_owned());
    let bytes = pem.expose_secret().as_bytes();
    let (key, alg) = match EncodingKey::from_rsa_pem(bytes) {
        Ok(key) => (key, Algorithm::RS256),
        Err(_) => (
            EncodingKey::from_ec_pem(bytes)
                .map_err(|_| BrokerError::InvalidField("private_key_file"))?,
            Algorithm::ES256,
        ),
    };
    let now = unix_now();
    let claims = serde_json::json!({
        "iss": client_id,
        "sub": client_id,
        "aud": endpoint.as_str(),
        "jti": random_token(16)?,
        "iat": now,
        "exp": now + CLIENT_ASSERTION_TTL.as_secs(),
    });
    jsonwebtoken::encode(&Header::new(alg), &claims, &key)
        .map_err(|_| BrokerError::InvalidField("private_key_file"))
}

/// POST `form` (the grant's own parameters) to `endpoint` with the client authentication `cfg`
/// names, bounded by `timeout`. `server` names the server in logs only.
pub(crate) async fn token_request(
    http: &reqwest::Client,
    timeout: Duration,
    server: &str,
    endpoint: &Url,
    cfg: &AuthBrokerConfig,
    form: String,
) -> Result<TokenResponse, BrokerError> {
    let (body, basic) = with_client_auth(form, endpoint, cfg)?;
    let mut request = http
        .post(endpoint.clone())
        .header(
            http::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .header(http::header::ACCEPT, "application/json");
    if let Some((id, secret)) = basic {
        request = request.basic_auth(id, Some(secret));
    }
    let request = request.body(body);
    finish(server, timeout, request).await
}

/// The form with the client authentication added, and the Basic credentials if any.
#[allow(clippy::type_complexity)]
fn with_client_auth(
    form: String,
    endpoint: &Url,
    cfg: &AuthBrokerConfig,
) -> Result<(String, Option<(String, String)>), BrokerError> {
    let mut form = form_urlencoded::Serializer::for_suffix(form, 0);
    let mut basic = None;
    match cfg.client_auth {
        ClientAuth::ClientSecretPost => {
            if let Some(id) = cfg.client_id.as_deref() {
                form.append_pair("client_id", id);
            }
            if let Some(secret) = cfg.client_secret.as_ref() {
                form.append_pair("client_secret", secret.expose_secret());
            }
        }
        ClientAuth::ClientSecretBasic => {
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
            basic = Some((id, secret));
        }
        ClientAuth::PrivateKeyJwt => {
            let assertion = client_assertion(cfg, endpoint)?;
            if let Some(id) = cfg.client_id.as_deref() {
                form.append_pair("client_id", id);
            }
            form.append_pair("client_assertion_type", ASSERTION_TYPE);
            form.append_pair("client_assertion", &assertion);
        }
    }
    Ok((form.finish(), basic))
}

async fn finish(
    server: &str,
    timeout: Duration,
    request: reqwest::RequestBuilder,
) -> Result<TokenResponse, BrokerError> {
    let (status, bytes) = tokio::time::timeout(timeout, read_capped(request))
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
    let parsed: SuccessBody =
        serde_json::from_slice(&bytes).map_err(|_| BrokerError::MalformedResponse { status })?;
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
    Ok(TokenResponse {
        access_token,
        refresh_token: parsed
            .refresh_token
            .filter(|t| !t.is_empty())
            .map(SecretString::from),
        token_type: parsed.token_type.unwrap_or_else(|| "Bearer".to_owned()),
        expires_at: expires_in
            .filter(|&s| s > 0)
            .map(|s| SystemTime::now() + Duration::from_secs(s)),
        scope: parsed
            .scope
            .filter(|s| !s.trim().is_empty())
            .map(|s| s.split_whitespace().map(str::to_owned).collect()),
    })
}

/// Sends `request` and reads at most [`MAX_RESPONSE_BYTES`] of the body (`None` = too long).
pub(crate) async fn read_capped(
    request: reqwest::RequestBuilder,
) -> Result<(u16, Option<Vec<u8>>), BrokerError> {
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
}
