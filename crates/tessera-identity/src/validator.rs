//! Bearer-token validation: JWTs against the provider's JWKS, opaque tokens through RFC 7662
//! introspection, and a cache keyed by the token's SHA-256 so a repeated token costs one hash
//! and one map lookup.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use tessera_config::{AuthConfig, JwtAlgorithm};
use url::Url;

use crate::error::{AuthError, InvalidToken};
use crate::identity::{Identity, Role, TokenKind, UserKey};

/// Clock skew allowed on `exp` and `nbf`, in seconds.
const LEEWAY_SECS: u64 = 60;
/// A validated JWT is reused for at most this long (and never past its `exp`).
const JWT_CACHE_MAX: Duration = Duration::from_secs(300);
/// At most one JWKS refetch for an unknown `kid` per this interval.
const DEFAULT_REFETCH_INTERVAL: Duration = Duration::from_secs(10);
/// Entries in the token cache before expired ones are swept (and, if still full, all dropped).
const TOKEN_CACHE_CAPACITY: usize = 10_000;
/// Deadline of one request to the provider.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest discovery / JWKS / introspection answer read.
const MAX_BODY: usize = 1024 * 1024;

/// Validates bearer tokens for one identity provider. Cheap to clone (shared state).
#[derive(Clone)]
pub struct TokenValidator {
    inner: Arc<Inner>,
}

struct Inner {
    config: Arc<AuthConfig>,
    http: reqwest::Client,
    /// `resource` plus the configured extra audiences.
    audiences: Vec<String>,
    algorithms: Vec<Algorithm>,
    refetch_interval: Duration,
    /// The current signing keys; read without waiting.
    keys: RwLock<Option<Arc<KeySet>>>,
    /// Serialises fetches (one at a time; the others wait and reuse the result).
    fetch: tokio::sync::Mutex<FetchState>,
    tokens: Mutex<HashMap<[u8; 32], Cached>>,
}

#[derive(Default)]
struct FetchState {
    jwks_uri: Option<String>,
    last_fetch: Option<Instant>,
}

struct KeySet {
    keys: Vec<Key>,
    fetched_at: Instant,
}

struct Key {
    kid: Option<String>,
    /// The JWK's `alg`, if it names one.
    alg: Option<Algorithm>,
    key: DecodingKey,
}

struct Cached {
    until: Instant,
    identity: Arc<Identity>,
}

impl TokenValidator {
    /// A validator for `config`, making its requests to the provider with `http`.
    pub fn new(config: Arc<AuthConfig>, http: reqwest::Client) -> Self {
        let mut audiences = vec![config.resource.as_str().to_string()];
        // `https://host/mcp` and `https://host/mcp/` name the same resource.
        let trimmed = config.resource.as_str().trim_end_matches('/');
        if trimmed != audiences[0] {
            audiences.push(trimmed.to_string());
        }
        audiences.extend(config.audiences.iter().cloned());
        let algorithms = config.algorithms.iter().map(|a| to_jwt(*a)).collect();
        TokenValidator {
            inner: Arc::new(Inner {
                config,
                http,
                audiences,
                algorithms,
                refetch_interval: DEFAULT_REFETCH_INTERVAL,
                keys: RwLock::new(None),
                fetch: tokio::sync::Mutex::new(FetchState::default()),
                tokens: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The same validator with another minimum interval between JWKS refetches for unknown
    /// key ids (default 10 s). Call before sharing it.
    pub fn with_refetch_interval(mut self, interval: Duration) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.refetch_interval = interval;
        }
        self
    }

    /// The configuration this validator enforces.
    pub fn config(&self) -> &AuthConfig {
        &self.inner.config
    }

    /// Checks the `Authorization: Bearer` header of a request.
    pub async fn authenticate(
        &self,
        headers: &http::HeaderMap,
    ) -> Result<Arc<Identity>, AuthError> {
        let token = crate::metadata::bearer_token(headers)?;
        self.validate(token).await
    }

    /// Checks one bearer token (the part after `Bearer `).
    pub async fn validate(&self, token: &str) -> Result<Arc<Identity>, AuthError> {
        if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(InvalidToken::Malformed.into());
        }
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(identity) = self.cached(&hash) {
            return Ok(identity);
        }
        let (identity, until) = match token.bytes().filter(|b| *b == b'.').count() {
            2 => match jws_header(token) {
                Some(header) => self.validate_jwt(token, header).await?,
                None => self.introspect(token).await?,
            },
            // A JWE: Tessera is not the recipient of encrypted tokens.
            4 => return Err(InvalidToken::Malformed.into()),
            _ => self.introspect(token).await?,
        };
        let identity = Arc::new(identity);
        self.remember(hash, until, identity.clone());
        Ok(identity)
    }

    fn cached(&self, hash: &[u8; 32]) -> Option<Arc<Identity>> {
        let tokens = self
            .inner
            .tokens
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let hit = tokens.get(hash)?;
        (hit.until > Instant::now()).then(|| hit.identity.clone())
    }

    fn remember(&self, hash: [u8; 32], until: Instant, identity: Arc<Identity>) {
        let mut tokens = self
            .inner
            .tokens
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if tokens.len() >= TOKEN_CACHE_CAPACITY {
            let now = Instant::now();
            tokens.retain(|_, c| c.until > now);
            if tokens.len() >= TOKEN_CACHE_CAPACITY {
                tokens.clear();
            }
        }
        tokens.insert(hash, Cached { until, identity });
    }

    // -----------------------------------------------------------------------------------------
    // JWT

    async fn validate_jwt(
        &self,
        token: &str,
        header: JwsHeader,
    ) -> Result<(Identity, Instant), AuthError> {
        let alg = JwtAlgorithm::from_name(&header.alg)
            .map(to_jwt)
            .filter(|a| self.inner.algorithms.contains(a))
            .ok_or(InvalidToken::UnsupportedAlgorithm)?;

        let keys = self.keys_for(header.kid.as_deref()).await?;
        let candidates: Vec<&Key> = keys
            .keys
            .iter()
            .filter(|k| header.kid.is_none() || k.kid == header.kid)
            .filter(|k| k.alg.is_none_or(|a| a == alg))
            .filter(|k| k.key.family() == alg.family())
            .collect();
        if candidates.is_empty() {
            let kid_known = header
                .kid
                .as_deref()
                .is_some_and(|kid| keys.keys.iter().any(|k| k.kid.as_deref() == Some(kid)));
            return Err(if kid_known {
                // The kid is known but its key is of another kind than `alg`.
                InvalidToken::BadSignature
            } else {
                InvalidToken::UnknownKey
            }
            .into());
        }

        let mut validation = Validation::new(alg);
        validation.leeway = LEEWAY_SECS;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        // `aud` and `iss` are checked below, with Tessera's rules and reasons.
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp"]);

        let mut result = Err(InvalidToken::BadSignature);
        for key in candidates {
            match jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation) {
                Ok(data) => {
                    result = Ok(data.claims);
                    break;
                }
                Err(e) => {
                    result = Err(match e.kind() {
                        ErrorKind::InvalidSignature => continue,
                        ErrorKind::ExpiredSignature => InvalidToken::Expired,
                        ErrorKind::ImmatureSignature => InvalidToken::NotYetValid,
                        ErrorKind::InvalidAlgorithm
                        | ErrorKind::UnsupportedAlgorithm
                        | ErrorKind::InvalidAlgorithmName => InvalidToken::UnsupportedAlgorithm,
                        _ => InvalidToken::Malformed,
                    });
                    break;
                }
            }
        }
        let claims = result?;

        self.check_issuer(claims.get("iss"), &claims, true)?;
        self.check_audience(claims.get("aud"), true)?;
        let expires_at = claims.get("exp").and_then(Value::as_u64).map(epoch);
        let identity = self.identity(&claims, token, TokenKind::Jwt, expires_at)?;
        let mut until = Instant::now() + JWT_CACHE_MAX;
        if let Some(left) = expires_at.and_then(|e| e.duration_since(SystemTime::now()).ok()) {
            until = until.min(Instant::now() + left);
        }
        Ok((identity, until))
    }

    /// Signing keys that know `kid`: the cached set while it is fresh; otherwise (expired, or
    /// `kid` unknown and the last fetch older than the refetch interval) a new fetch.
    async fn keys_for(&self, kid: Option<&str>) -> Result<Arc<KeySet>, AuthError> {
        let ttl = self.inner.config.jwks_cache;
        let usable = |set: &KeySet| {
            set.fetched_at.elapsed() < ttl
                && kid.is_none_or(|kid| set.keys.iter().any(|k| k.kid.as_deref() == Some(kid)))
        };
        if let Some(set) = self.current_keys()
            && usable(&set)
        {
            return Ok(set);
        }
        let mut state = self.inner.fetch.lock().await;
        let current = self.current_keys();
        if let Some(set) = &current {
            if usable(set) {
                // Fetched by another request while this one waited.
                return Ok(set.clone());
            }
            let fresh = set.fetched_at.elapsed() < ttl;
            let recently = state
                .last_fetch
                .is_some_and(|t| t.elapsed() < self.inner.refetch_interval);
            if fresh && recently {
                // Unknown kid, but the keys were just fetched: do not hammer the provider.
                return Ok(set.clone());
            }
        }
        state.last_fetch = Some(Instant::now());
        match self.fetch_keys(&mut state).await {
            Ok(set) => {
                let set = Arc::new(set);
                *self
                    .inner
                    .keys
                    .write()
                    .unwrap_or_else(PoisonError::into_inner) = Some(set.clone());
                Ok(set)
            }
            Err(e) => match current {
                // Keep verifying with the keys we have; the provider may be back soon.
                Some(set) if set.fetched_at.elapsed() < ttl * 2 => {
                    tracing::warn!(error = %e, "cannot refresh the identity provider's signing keys; using the cached ones");
                    Ok(set)
                }
                _ => Err(e),
            },
        }
    }

    fn current_keys(&self) -> Option<Arc<KeySet>> {
        self.inner
            .keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    async fn fetch_keys(&self, state: &mut FetchState) -> Result<KeySet, AuthError> {
        let jwks_uri = match &state.jwks_uri {
            Some(uri) => uri.clone(),
            None => {
                let uri = self.discover_jwks_uri().await?;
                state.jwks_uri = Some(uri.clone());
                uri
            }
        };
        let doc = self.get_json(&jwks_uri).await?;
        let Some(list) = doc.get("keys").and_then(Value::as_array) else {
            return Err(AuthError::Unavailable(
                "the provider's JWKS has no \"keys\" array".into(),
            ));
        };
        let keys: Vec<Key> = list.iter().filter_map(parse_jwk).collect();
        tracing::debug!(
            keys = keys.len(),
            "fetched the identity provider's signing keys"
        );
        Ok(KeySet {
            keys,
            fetched_at: Instant::now(),
        })
    }

    /// `jwks_uri` from OpenID discovery, or from RFC 8414 metadata as a fallback.
    async fn discover_jwks_uri(&self) -> Result<String, AuthError> {
        let issuer = self.inner.config.issuer.trim_end_matches('/');
        let oidc = format!("{issuer}/.well-known/openid-configuration");
        let mut last_error = None;
        let mut urls = vec![oidc];
        if let Ok(url) = Url::parse(issuer) {
            let path = url.path().trim_end_matches('/');
            let mut rfc8414 = url.clone();
            rfc8414.set_path(&format!("/.well-known/oauth-authorization-server{path}"));
            urls.push(rfc8414.to_string());
        }
        for url in urls {
            match self.get_json(&url).await {
                Ok(doc) => {
                    if !self.inner.config.provider.is_multi_tenant() {
                        let named = doc.get("issuer").and_then(Value::as_str).unwrap_or("");
                        if named.trim_end_matches('/') != issuer {
                            return Err(AuthError::Unavailable(format!(
                                "the provider's metadata at {url} names another issuer (check auth.issuer)"
                            )));
                        }
                    }
                    if let Some(uri) = doc.get("jwks_uri").and_then(Value::as_str) {
                        return Ok(uri.to_string());
                    }
                    last_error = Some(AuthError::Unavailable(format!(
                        "the provider's metadata at {url} has no jwks_uri"
                    )));
                }
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| AuthError::Unavailable("no metadata URL".into())))
    }

    // -----------------------------------------------------------------------------------------
    // Introspection (RFC 7662)

    async fn introspect(&self, token: &str) -> Result<(Identity, Instant), AuthError> {
        let config = &self.inner.config;
        let Some(endpoint) = &config.introspection_endpoint else {
            return Err(InvalidToken::OpaqueNotAccepted.into());
        };
        let body = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("token", token)
            .append_pair("token_type_hint", "access_token")
            .finish();
        // client_secret_basic: both parts form-encoded first (RFC 6749 §2.3.1).
        let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        let secret = config
            .client_secret
            .as_ref()
            .map(|s| enc(s.expose_secret()))
            .unwrap_or_default();
        let response = self
            .inner
            .http
            .post(endpoint.as_str())
            .timeout(HTTP_TIMEOUT)
            .basic_auth(enc(&config.client_id), Some(secret))
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(http::header::ACCEPT, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| unavailable("introspection", endpoint.as_str(), &e))?;
        let claims = read_json(response, endpoint.as_str()).await?;
        let Value::Object(claims) = claims else {
            return Err(AuthError::Unavailable(
                "the introspection answer is not a JSON object".into(),
            ));
        };
        if claims.get("active") != Some(&Value::Bool(true)) {
            return Err(InvalidToken::Inactive.into());
        }
        self.check_issuer(claims.get("iss"), &claims, false)?;
        self.check_audience(claims.get("aud"), false)?;
        let now = now_secs();
        let exp = claims.get("exp").and_then(Value::as_u64);
        if exp.is_some_and(|exp| exp + LEEWAY_SECS <= now) {
            return Err(InvalidToken::Expired.into());
        }
        if claims
            .get("nbf")
            .and_then(Value::as_u64)
            .is_some_and(|nbf| nbf > now + LEEWAY_SECS)
        {
            return Err(InvalidToken::NotYetValid.into());
        }
        let expires_at = exp.map(epoch);
        let identity = self.identity(&claims, token, TokenKind::Introspected, expires_at)?;
        let mut until = Instant::now() + config.introspection_cache;
        if let Some(left) = expires_at.and_then(|e| e.duration_since(SystemTime::now()).ok()) {
            until = until.min(Instant::now() + left);
        }
        Ok((identity, until))
    }

    // -----------------------------------------------------------------------------------------
    // Claims

    /// `iss` must be the issuer (`required`: it must be present).
    fn check_issuer(
        &self,
        iss: Option<&Value>,
        claims: &Map<String, Value>,
        required: bool,
    ) -> Result<(), InvalidToken> {
        let Some(iss) = iss else {
            return if required {
                Err(InvalidToken::WrongIssuer)
            } else {
                Ok(())
            };
        };
        let iss = iss.as_str().ok_or(InvalidToken::WrongIssuer)?;
        let config = &self.inner.config;
        let expected = if config.provider.is_multi_tenant() {
            // Entra multi-tenant: the token's own tenant.
            let tid = claims
                .get("tid")
                .and_then(Value::as_str)
                .filter(|t| t.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
                .ok_or(InvalidToken::WrongIssuer)?;
            format!("https://login.microsoftonline.com/{tid}/v2.0")
        } else {
            config.issuer.clone()
        };
        if iss.trim_end_matches('/') == expected.trim_end_matches('/') {
            Ok(())
        } else {
            Err(InvalidToken::WrongIssuer)
        }
    }

    /// `aud` (string or array) must name Tessera's resource or a configured audience.
    fn check_audience(&self, aud: Option<&Value>, required: bool) -> Result<(), InvalidToken> {
        let accepted = |a: &str| self.inner.audiences.iter().any(|x| x == a);
        match aud {
            None => {
                if required {
                    Err(InvalidToken::WrongAudience)
                } else {
                    Ok(())
                }
            }
            Some(Value::String(a)) if accepted(a) => Ok(()),
            Some(Value::Array(list)) if list.iter().any(|a| a.as_str().is_some_and(&accepted)) => {
                Ok(())
            }
            Some(_) => Err(InvalidToken::WrongAudience),
        }
    }

    /// The identity from validated claims, with role, domain and scope rules applied.
    fn identity(
        &self,
        claims: &Map<String, Value>,
        token: &str,
        kind: TokenKind,
        expires_at: Option<SystemTime>,
    ) -> Result<Identity, AuthError> {
        let config = &self.inner.config;
        let str_claim = |k: &str| {
            claims
                .get(k)
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|s| !s.is_empty())
        };
        let subject = str_claim("sub")
            .or_else(|| str_claim("username"))
            .ok_or(InvalidToken::NoSubject)?
            .to_string();
        let issuer = str_claim("iss").unwrap_or(&config.issuer).to_string();
        let email = str_claim("email").map(str::to_lowercase);
        let verified = claims.get("email_verified") != Some(&Value::Bool(false))
            && claims.get("email_verified") != Some(&Value::String("false".into()));
        let display_name = str_claim("name")
            .or_else(|| str_claim("preferred_username"))
            .map(str::to_string)
            .or_else(|| email.clone())
            .unwrap_or_else(|| subject.clone());

        if !config.allowed_domains.is_empty() {
            let domain = email
                .as_deref()
                .filter(|_| verified)
                .and_then(|e| e.rsplit_once('@'))
                .map(|(_, d)| d);
            if !domain.is_some_and(|d| config.allowed_domains.iter().any(|a| a == d)) {
                return Err(AuthError::Forbidden("email domain not allowed"));
            }
        }

        let scopes = scopes(claims);
        let missing: Vec<&str> = config
            .scopes_required
            .iter()
            .filter(|s| !scopes.contains(s))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            return Err(AuthError::InsufficientScope {
                required: config.scopes_required.join(" "),
            });
        }

        let admin_by_email = verified
            && email
                .as_deref()
                .is_some_and(|e| config.admin_emails.iter().any(|a| a == e));
        let admin_by_claim =
            config
                .admin_claim
                .as_ref()
                .is_some_and(|c| match claims.get(&c.claim) {
                    Some(Value::String(v)) => *v == c.value,
                    Some(Value::Array(list)) => list.iter().any(|v| v.as_str() == Some(&c.value)),
                    _ => false,
                });
        let role = if admin_by_email || admin_by_claim {
            Role::Admin
        } else {
            Role::User
        };
        let client_id = str_claim("azp")
            .or_else(|| str_claim("client_id"))
            .map(str::to_string);

        let groups = match claims.get("groups") {
            Some(Value::Array(list)) => list
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            Some(Value::String(one)) => vec![one.clone()],
            _ => Vec::new(),
        };
        Ok(Identity {
            user: UserKey { issuer, subject },
            email,
            display_name,
            role,
            token_kind: kind,
            client_id,
            scopes,
            groups,
            expires_at,
            token: SecretString::from(token.to_string()),
            agent: None,
        })
    }

    // -----------------------------------------------------------------------------------------
    // HTTP

    async fn get_json(&self, url: &str) -> Result<Value, AuthError> {
        let response = self
            .inner
            .http
            .get(url)
            .timeout(HTTP_TIMEOUT)
            .header(http::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| unavailable("metadata", url, &e))?;
        read_json(response, url).await
    }
}

fn unavailable(what: &str, url: &str, e: &reqwest::Error) -> AuthError {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    AuthError::Unavailable(format!("{what} request to {url} {kind}"))
}

/// A 2xx JSON body of at most [`MAX_BODY`] bytes.
async fn read_json(mut response: reqwest::Response, url: &str) -> Result<Value, AuthError> {
    let status = response.status();
    if !status.is_success() {
        return Err(AuthError::Unavailable(format!(
            "{url} answered {}",
            status.as_u16()
        )));
    }
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_BODY {
                    return Err(AuthError::Unavailable(format!(
                        "{url} sent more than {MAX_BODY} bytes"
                    )));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(e) => return Err(unavailable("reading the answer of a", url, &e)),
        }
    }
    serde_json::from_slice(&body)
        .map_err(|_| AuthError::Unavailable(format!("{url} did not answer with JSON")))
}

/// The parts of a JWS header Tessera reads. `alg` stays a string so that `none` and unknown
/// names are seen (and refused) rather than failing to parse.
struct JwsHeader {
    alg: String,
    kid: Option<String>,
}

/// The header of a compact JWS, if `token` looks like one.
fn jws_header(token: &str) -> Option<JwsHeader> {
    let (head, _) = token.split_once('.')?;
    let bytes = URL_SAFE_NO_PAD.decode(head).ok()?;
    let Value::Object(header) = serde_json::from_slice(&bytes).ok()? else {
        return None;
    };
    let alg = header.get("alg")?.as_str()?.to_string();
    let kid = header
        .get("kid")
        .and_then(Value::as_str)
        .map(str::to_string);
    Some(JwsHeader { alg, kid })
}

/// A JWK Tessera can verify with: a signing key (`use` absent or `sig`) of a supported kind.
fn parse_jwk(value: &Value) -> Option<Key> {
    if value
        .get("use")
        .and_then(Value::as_str)
        .is_some_and(|u| u != "sig")
    {
        return None;
    }
    // Symmetric keys are never verification keys for Tessera.
    if value.get("kty").and_then(Value::as_str) == Some("oct") {
        return None;
    }
    let jwk: Jwk = serde_json::from_value(value.clone()).ok()?;
    let key = DecodingKey::from_jwk(&jwk).ok()?;
    let alg = value
        .get("alg")
        .and_then(Value::as_str)
        .and_then(JwtAlgorithm::from_name)
        .map(to_jwt);
    if value.get("alg").is_some() && alg.is_none() {
        return None;
    }
    Some(Key {
        kid: jwk.common.key_id.clone(),
        alg,
        key,
    })
}

/// `scope` (space-separated) or `scp` (string or array).
fn scopes(claims: &Map<String, Value>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for key in ["scope", "scp"] {
        match claims.get(key) {
            Some(Value::String(s)) => out.extend(s.split_whitespace().map(str::to_string)),
            Some(Value::Array(list)) => {
                out.extend(list.iter().filter_map(Value::as_str).map(str::to_string))
            }
            _ => {}
        }
    }
    out.dedup();
    out
}

fn to_jwt(alg: JwtAlgorithm) -> Algorithm {
    match alg {
        JwtAlgorithm::RS256 => Algorithm::RS256,
        JwtAlgorithm::RS384 => Algorithm::RS384,
        JwtAlgorithm::RS512 => Algorithm::RS512,
        JwtAlgorithm::PS256 => Algorithm::PS256,
        JwtAlgorithm::PS384 => Algorithm::PS384,
        JwtAlgorithm::PS512 => Algorithm::PS512,
        JwtAlgorithm::ES256 => Algorithm::ES256,
        JwtAlgorithm::ES384 => Algorithm::ES384,
        JwtAlgorithm::EdDSA => Algorithm::EdDSA,
    }
}

fn epoch(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
