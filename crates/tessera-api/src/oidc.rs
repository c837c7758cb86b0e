//! Browser sign-in against an OpenID Connect provider: `/auth/login`, `/auth/callback`,
//! `/auth/logout`.
//!
//! Authorization code + PKCE S256 with `state` and `nonce`, both kept server-side in a
//! [`PendingLogin`] whose random id is the browser's login cookie: a callback without that
//! cookie, with another browser's state, or replayed, is rejected (login CSRF). The ID token is
//! verified by `openidconnect` against the provider's JWKS (`iss`, `aud`, `exp`, signature,
//! `nonce`). Provider errors are reduced to their RFC 6749 error code; no provider body, token
//! or secret reaches a response or a log line.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreJwsSigningAlgorithm, CoreProviderMetadata,
};
use openidconnect::{
    AuthType, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointMaybeSet,
    EndpointNotSet, EndpointSet, IssuerUrl, Nonce, OAuth2TokenResponse as _, PkceCodeChallenge,
    PkceCodeVerifier, RedirectUrl, RequestTokenError, Scope, TokenResponse as _,
};
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq as _;
use tessera_config::{AuthConfig, AuthProvider, JwtAlgorithm};
use tessera_store::{IdpTokens, Role, UserLogin};

use crate::ApiState;
use crate::cookies::CookiePolicy;
use crate::error::ApiError;
use crate::github::{self, GithubEndpoints};
use crate::peer::PeerAddr;
use crate::pending::{LOGIN_TTL, PendingLogin};
use crate::return_to;

pub(crate) type OidcClient = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// Largest response accepted from the provider.
const MAX_RESPONSE: usize = 1 << 20;
/// Time limit of one request to the provider.
const PROVIDER_TIMEOUT: Duration = Duration::from_secs(30);
/// After a signature failure the provider's keys are fetched again (key rollover), at most this
/// often.
const MIN_REFRESH: Duration = Duration::from_secs(10);

/// The provider: settings, discovery document (with its JWKS) cached for `jwks_cache`.
pub struct Provider {
    pub(crate) config: AuthConfig,
    redirect_uri: RedirectUrl,
    pub(crate) http: reqwest::Client,
    metadata: tokio::sync::Mutex<Option<(Arc<CoreProviderMetadata>, Instant)>>,
    /// The `github` preset's endpoints (GitHub has no discovery).
    pub(crate) github: GithubEndpoints,
}

/// Why the provider client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("auth.issuer {0:?} is not a valid URL: {1}")]
    Issuer(String, String),
    #[error("the sign-in redirect URI {0:?} is not a valid URL: {1}")]
    RedirectUri(String, String),
    #[error("cannot build the HTTP client for the identity provider: {0}")]
    Http(reqwest::Error),
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum HttpError {
    #[error("{0}")]
    Reqwest(#[from] reqwest::Error),
    #[error("response larger than {MAX_RESPONSE} bytes")]
    TooLarge,
    #[error("{0}")]
    Http(#[from] http::Error),
}

pub(crate) async fn send(
    client: reqwest::Client,
    request: openidconnect::HttpRequest,
) -> Result<openidconnect::HttpResponse, HttpError> {
    let (parts, body) = request.into_parts();
    let mut response = client
        .request(parts.method, parts.uri.to_string())
        .headers(parts.headers)
        .body(body)
        .send()
        .await?;
    let status = response.status();
    let headers = std::mem::take(response.headers_mut());
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if bytes.len() + chunk.len() > MAX_RESPONSE {
            return Err(HttpError::TooLarge);
        }
        bytes.extend_from_slice(&chunk);
    }
    let mut out = http::Response::builder().status(status).body(bytes)?;
    *out.headers_mut() = headers;
    Ok(out)
}

pub(crate) fn signing_alg(a: JwtAlgorithm) -> CoreJwsSigningAlgorithm {
    match a {
        JwtAlgorithm::RS256 => CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
        JwtAlgorithm::RS384 => CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha384,
        JwtAlgorithm::RS512 => CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha512,
        JwtAlgorithm::PS256 => CoreJwsSigningAlgorithm::RsaSsaPssSha256,
        JwtAlgorithm::PS384 => CoreJwsSigningAlgorithm::RsaSsaPssSha384,
        JwtAlgorithm::PS512 => CoreJwsSigningAlgorithm::RsaSsaPssSha512,
        JwtAlgorithm::ES256 => CoreJwsSigningAlgorithm::EcdsaP256Sha256,
        JwtAlgorithm::ES384 => CoreJwsSigningAlgorithm::EcdsaP384Sha384,
        JwtAlgorithm::EdDSA => CoreJwsSigningAlgorithm::EdDsa,
    }
}

impl Provider {
    pub fn new(config: &AuthConfig, redirect_uri: String) -> Result<Self, ProviderError> {
        IssuerUrl::new(config.issuer.clone())
            .map_err(|e| ProviderError::Issuer(config.issuer.clone(), e.to_string()))?;
        let redirect_uri = RedirectUrl::new(redirect_uri.clone())
            .map_err(|e| ProviderError::RedirectUri(redirect_uri, e.to_string()))?;
        // No redirects: a provider endpoint that redirects elsewhere is an error, not a hop
        // to follow with our client credentials (openidconnect's advice against SSRF).
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(PROVIDER_TIMEOUT)
            .build()
            .map_err(ProviderError::Http)?;
        Ok(Provider {
            config: config.clone(),
            redirect_uri,
            http,
            metadata: tokio::sync::Mutex::new(None),
            github: GithubEndpoints::default(),
        })
    }

    /// Replaces the `github` preset's endpoints (tests; GitHub Enterprise).
    pub fn with_github_endpoints(mut self, endpoints: GithubEndpoints) -> Self {
        self.github = endpoints;
        self
    }

    /// The discovery document with the provider's keys: cached for `jwks_cache`; `refresh`
    /// fetches it again unless it was fetched within the last [`MIN_REFRESH`].
    pub(crate) async fn metadata(
        &self,
        refresh: bool,
    ) -> Result<Arc<CoreProviderMetadata>, ApiError> {
        let mut slot = self.metadata.lock().await;
        if let Some((meta, at)) = slot.as_ref() {
            let age = at.elapsed();
            if age < MIN_REFRESH || (!refresh && age < self.config.jwks_cache) {
                return Ok(meta.clone());
            }
        }
        let issuer = IssuerUrl::new(self.config.issuer.clone())
            .map_err(|e| ApiError::internal("invalid issuer", &e))?;
        let http = |req| send(self.http.clone(), req);
        let meta = CoreProviderMetadata::discover_async(issuer, &http)
            .await
            .map_err(|e| {
                tracing::warn!(issuer = %self.config.issuer, error = %e, "OpenID Connect discovery failed");
                ApiError::bad_gateway("The identity provider's discovery document is unavailable")
            })?;
        let meta = Arc::new(meta);
        *slot = Some((meta.clone(), Instant::now()));
        Ok(meta)
    }

    pub(crate) fn client(&self, meta: &CoreProviderMetadata) -> OidcClient {
        let secret = self
            .config
            .client_secret
            .as_ref()
            .map(|s| ClientSecret::new(s.expose_secret().to_owned()));
        let post_only = meta
            .token_endpoint_auth_methods_supported()
            .is_some_and(|m| {
                let names: Vec<String> = m
                    .iter()
                    .filter_map(|x| serde_json::to_value(x).ok())
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect();
                !names.iter().any(|n| n == "client_secret_basic")
                    && names.iter().any(|n| n == "client_secret_post")
            });
        let auth_type = if post_only {
            AuthType::RequestBody
        } else {
            AuthType::BasicAuth
        };
        CoreClient::from_provider_metadata(
            meta.clone(),
            ClientId::new(self.config.client_id.clone()),
            secret,
        )
        .set_redirect_uri(self.redirect_uri.clone())
        .set_auth_type(auth_type)
    }
}

fn redirect(location: &str) -> Response {
    let mut r = StatusCode::FOUND.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// An RFC 6749 error code as the provider sent it, reduced to its allowed characters and a sane
/// length, so nothing else of the provider's answer reaches the response.
pub(crate) fn error_code(code: &str) -> String {
    let clean: String = code
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .take(64)
        .collect();
    if clean.is_empty() {
        "unknown_error".into()
    } else {
        clean
    }
}

/// `GET /auth/login?return_to=/path`: starts a sign-in and redirects to the provider.
pub(crate) async fn login(
    State(state): State<Arc<ApiState>>,
    RawQuery(query): RawQuery,
) -> Response {
    match start_login(&state, query.as_deref()).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn start_login(state: &ApiState, query: Option<&str>) -> Result<Response, ApiError> {
    let target = query_param(query, "return_to");
    let return_to = return_to::validate(target.as_deref()).to_owned();
    let (url, csrf, nonce, verifier) = authorization_request(&state.provider).await?;
    let login_cookie = state
        .pending
        .start(PendingLogin::new(
            csrf.secret().clone(),
            nonce,
            verifier,
            return_to,
        ))
        .map_err(|_| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "Too many sign-ins in progress; try again in a few minutes",
            )
        })?;
    let mut response = redirect(url.as_str());
    if let Some(c) = state
        .cookies
        .set(state.cookies.login_name(), &login_cookie, LOGIN_TTL)
    {
        response.headers_mut().append(header::SET_COOKIE, c);
    }
    Ok(response)
}

/// The provider's authorization URL with a fresh `state`, `nonce` and PKCE verifier (GitHub:
/// no PKCE and no nonce; the verifier and nonce kept are unused).
async fn authorization_request(
    provider: &Provider,
) -> Result<(url::Url, CsrfToken, Nonce, PkceCodeVerifier), ApiError> {
    let config = &provider.config;
    if config.provider == AuthProvider::Github {
        let csrf = CsrfToken::new_random();
        let url = github::authorize_url(
            &provider.github,
            &config.client_id,
            provider.redirect_uri.as_str(),
            &config.scopes,
            csrf.secret(),
        );
        let (_, verifier) = PkceCodeChallenge::new_random_sha256();
        return Ok((url, csrf, Nonce::new_random(), verifier));
    }
    let meta = provider.metadata(false).await?;
    let client = provider.client(&meta);
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let mut request = client
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .set_pkce_challenge(challenge);
    for scope in config.scopes.iter().filter(|s| *s != "openid") {
        request = request.add_scope(Scope::new(scope.clone()));
    }
    if config.store_idp_tokens {
        // Ask for a refresh token (reference §1.3): Google through `access_type=offline`
        // (and `prompt=consent`, or a returning user gets none), Microsoft through the
        // `offline_access` scope.
        match config.provider {
            AuthProvider::Google => {
                request = request
                    .add_extra_param("access_type", "offline")
                    .add_extra_param("prompt", "consent");
            }
            AuthProvider::Microsoft { .. }
                if !config.scopes.iter().any(|s| s == "offline_access") =>
            {
                request = request.add_scope(Scope::new("offline_access".into()));
            }
            _ => {}
        }
    }
    let (url, csrf, nonce) = request.url();
    Ok((url, csrf, nonce, verifier))
}

/// `GET /auth/callback?code&state`: finishes the sign-in this browser started.
pub(crate) async fn callback(
    State(state): State<Arc<ApiState>>,
    PeerAddr(peer): PeerAddr,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let mut response = match finish_login(&state, &headers, peer, query.as_deref()).await {
        Ok((session_cookie, target)) => {
            let mut r = redirect(&target);
            if let Some(c) = state.cookies.set(
                state.cookies.session_name(),
                session_cookie.expose_secret(),
                state.session_ttl,
            ) {
                r.headers_mut().append(header::SET_COOKIE, c);
            }
            r
        }
        Err(e) => {
            tracing::info!(status = e.status.as_u16(), reason = %e.message, "sign-in callback rejected");
            e.into_response()
        }
    };
    if let Some(c) = state.cookies.clear(state.cookies.login_name()) {
        response.headers_mut().append(header::SET_COOKIE, c);
    }
    response
}

async fn finish_login(
    state: &ApiState,
    headers: &HeaderMap,
    peer: Option<IpAddr>,
    query: Option<&str>,
) -> Result<(SecretString, String), ApiError> {
    let login_id = CookiePolicy::get(headers, state.cookies.login_name()).ok_or_else(|| {
        ApiError::bad_request(
            "Sign-in rejected (login CSRF): this browser has no sign-in in progress (no login cookie); start again at /auth/login",
        )
    })?;
    let pending = state.pending.finish(login_id).ok_or_else(|| {
        ApiError::bad_request(
            "Sign-in rejected: it expired or was already completed; start again at /auth/login",
        )
    })?;
    let got_state = query_param(query, "state").unwrap_or_default();
    if !bool::from(got_state.as_bytes().ct_eq(pending.state.as_bytes())) {
        return Err(ApiError::bad_request(
            "Sign-in rejected: state mismatch (the callback does not belong to the sign-in started in this browser)",
        ));
    }
    if let Some(code) = query_param(query, "error") {
        return Err(ApiError::bad_request(format!(
            "The identity provider refused the sign-in: {}",
            error_code(&code)
        )));
    }
    let code = query_param(query, "code")
        .filter(|c| !c.is_empty())
        .ok_or_else(|| ApiError::bad_request("missing code parameter"))?;
    if state.provider.config.provider == AuthProvider::Github {
        let cookie = finish_github_login(state, headers, peer, &code).await?;
        return Ok((cookie, pending.return_to));
    }

    let provider = &state.provider;
    let meta = provider.metadata(false).await?;
    let client = provider.client(&meta);
    let http = |req| send(provider.http.clone(), req);
    let token = client
        .exchange_code(AuthorizationCode::new(code))
        .map_err(|e| ApiError::internal("The provider has no token endpoint", &e))?
        .set_pkce_verifier(pending.pkce_verifier)
        .request_async(&http)
        .await
        .map_err(|e| match e {
            RequestTokenError::ServerResponse(r) => {
                let code = error_code(r.error().as_ref());
                let status = if code == "invalid_grant" {
                    StatusCode::BAD_REQUEST
                } else {
                    StatusCode::BAD_GATEWAY
                };
                ApiError::new(
                    status,
                    format!("The identity provider rejected the code exchange: {code}"),
                )
            }
            RequestTokenError::Request(e) => {
                tracing::warn!(error = %e, "token request to the identity provider failed");
                ApiError::bad_gateway("The identity provider's token endpoint is unreachable")
            }
            RequestTokenError::Parse(_, _) | RequestTokenError::Other(_) => {
                ApiError::bad_gateway("The identity provider's token response is unreadable")
            }
        })?;
    let id_token = token
        .id_token()
        .ok_or_else(|| ApiError::bad_gateway("The identity provider returned no ID token"))?;
    let algs: Vec<_> = provider
        .config
        .algorithms
        .iter()
        .copied()
        .map(signing_alg)
        .collect();
    let verify = |client: &OidcClient| {
        id_token
            .claims(
                &client.id_token_verifier().set_allowed_algs(algs.clone()),
                &pending.nonce,
            )
            .cloned()
    };
    let claims = match verify(&client) {
        Err(openidconnect::ClaimsVerificationError::SignatureVerification(_)) => {
            // Perhaps the provider rolled its keys: fetch them again, once.
            let meta = provider.metadata(true).await?;
            verify(&provider.client(&meta))
        }
        other => other,
    }
    .map_err(|e| {
        let status = match e {
            openidconnect::ClaimsVerificationError::InvalidNonce(_) => StatusCode::BAD_REQUEST,
            _ => StatusCode::BAD_GATEWAY,
        };
        ApiError::new(
            status,
            format!("The identity provider's ID token was rejected: {e}"),
        )
    })?;

    let email_verified = claims.email_verified() != Some(false);
    let email = claims.email().map(|e| e.as_str().trim().to_lowercase());
    let name = claims
        .name()
        .and_then(|n| n.get(None))
        .map(|n| n.as_str().to_owned())
        .or_else(|| claims.preferred_username().map(|u| u.as_str().to_owned()));
    let config = &provider.config;
    let admin_by_claim = config
        .admin_claim
        .as_ref()
        .is_some_and(|ac| claim_matches(&id_token.to_string(), &ac.claim, &ac.value));
    let tokens = config.store_idp_tokens.then(|| IdpTokens {
        access_token: SecretString::from(token.access_token().secret().clone()),
        refresh_token: token
            .refresh_token()
            .map(|t| SecretString::from(t.secret().clone())),
        id_token: Some(SecretString::from(id_token.to_string())),
        expires_at: expiry(token.expires_in().map(|d| d.as_secs())),
        scopes: token
            .scopes()
            .map(|s| s.iter().map(|x| x.to_string()).collect())
            .unwrap_or_default(),
    });
    let account = Account {
        subject: claims.subject().as_str(),
        email: email.as_deref(),
        email_verified,
        display_name: name.as_deref(),
        admin_by_claim,
    };
    let cookie = complete_sign_in(state, headers, peer, &account, tokens).await?;
    Ok((cookie, pending.return_to))
}

/// `expires_in` seconds from now, as a Unix time.
fn expiry(expires_in: Option<u64>) -> Option<tessera_store::UnixTime> {
    expires_in
        .and_then(|s| i64::try_from(s).ok())
        .map(|s| tessera_store::now_unix().saturating_add(s))
}

/// The GitHub half of `/auth/callback`: code exchange, then `/user` and `/user/emails`.
async fn finish_github_login(
    state: &ApiState,
    headers: &HeaderMap,
    peer: Option<IpAddr>,
    code: &str,
) -> Result<SecretString, ApiError> {
    let provider = &state.provider;
    let config = &provider.config;
    let token = github::exchange_code(
        &provider.http,
        &provider.github,
        &config.client_id,
        config.client_secret.as_ref(),
        provider.redirect_uri.as_str(),
        code,
    )
    .await?;
    let user = github::user(&provider.http, &provider.github, &token.access_token).await?;
    let tokens = config.store_idp_tokens.then(|| IdpTokens {
        access_token: token.access_token.clone(),
        refresh_token: token.refresh_token.clone(),
        id_token: None,
        expires_at: expiry(token.expires_in),
        scopes: token.scopes.clone(),
    });
    let account = Account {
        subject: &user.subject,
        email: Some(&user.email),
        email_verified: true,
        display_name: user.display_name.as_deref(),
        admin_by_claim: false,
    };
    complete_sign_in(state, headers, peer, &account, tokens).await
}

/// Who the provider says signed in.
struct Account<'a> {
    subject: &'a str,
    /// Lower-cased.
    email: Option<&'a str>,
    email_verified: bool,
    display_name: Option<&'a str>,
    /// The configured `admin_claim` matched (OpenID Connect providers only).
    admin_by_claim: bool,
}

/// The provider-independent end of a sign-in: allowed domains, role, the user row, the
/// provider tokens (sealed) and a new session, whose cookie value is returned. The session
/// records `peer`, the TCP peer's address (never `X-Forwarded-For`: see [`crate::peer`]).
async fn complete_sign_in(
    state: &ApiState,
    headers: &HeaderMap,
    peer: Option<IpAddr>,
    account: &Account<'_>,
    tokens: Option<IdpTokens>,
) -> Result<SecretString, ApiError> {
    let config = &state.provider.config;
    let email = account.email;
    let email_verified = account.email_verified;
    if !config.allowed_domains.is_empty() {
        let domain = email
            .filter(|_| email_verified)
            .and_then(|e| e.rsplit_once('@'))
            .map(|(_, d)| d);
        if !domain.is_some_and(|d| {
            config
                .allowed_domains
                .iter()
                .any(|a| a.eq_ignore_ascii_case(d))
        }) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "email domain not allowed",
            ));
        }
    }
    let admin_by_email = email_verified
        && email.is_some_and(|e| {
            config
                .admin_emails
                .iter()
                .any(|a| a.eq_ignore_ascii_case(e))
        });
    let role = if admin_by_email || account.admin_by_claim {
        Role::Admin
    } else {
        Role::User
    };
    let store = &state.store;
    let mut user = store
        .upsert_user(&UserLogin {
            issuer: &config.issuer,
            subject: account.subject,
            email,
            display_name: account.display_name,
            role_if_new: role,
        })
        .await
        .map_err(|e| ApiError::internal("Failed to create user account", &e))?;
    if user.disabled {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "This account is disabled",
        ));
    }
    if user.role != role {
        store
            .set_role(&user.id, role)
            .await
            .map_err(|e| ApiError::internal("Failed to update user role", &e))?;
        crate::pat::forget_user(&user.id);
        user.role = role;
    }
    if let Some(tokens) = tokens {
        store
            .put_idp_tokens(&user.id, &tokens)
            .await
            .map_err(|e| ApiError::internal("Failed to store the provider tokens", &e))?;
    }
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.chars().take(256).collect::<String>());
    let ip = peer.map(|ip| ip.to_string());
    let session = store
        .create_session(
            &user.id,
            state.session_ttl,
            user_agent.as_deref(),
            ip.as_deref(),
        )
        .await
        .map_err(|e| ApiError::internal("Failed to create session", &e))?;
    tracing::info!(user = %user.id, role = %user.role, "signed in");
    Ok(session.cookie_value)
}

/// Whether the (already verified) JWT's `claim` equals `value` or, for an array, contains it.
fn claim_matches(jwt: &str, claim: &str, value: &str) -> bool {
    let Some(payload) = jwt.split('.').nth(1) else {
        return false;
    };
    let Ok(bytes) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload) else {
        return false;
    };
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return false;
    };
    match json.get(claim) {
        Some(serde_json::Value::String(s)) => s == value,
        Some(serde_json::Value::Array(a)) => a.iter().any(|v| v.as_str() == Some(value)),
        _ => false,
    }
}

/// `POST /auth/logout`: ends the browser session and clears its cookie.
pub(crate) async fn logout(State(state): State<Arc<ApiState>>, headers: HeaderMap) -> Response {
    if let Some(cookie) = CookiePolicy::get(&headers, state.cookies.session_name())
        && let Err(e) = state.store.delete_session(cookie).await
    {
        return ApiError::internal("Failed to end the session", &e).into_response();
    }
    let mut response = axum::Json(serde_json::json!({ "status": "logged_out" })).into_response();
    if let Some(c) = state.cookies.clear(state.cookies.session_name()) {
        response.headers_mut().append(header::SET_COOKIE, c);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_error_codes_are_reduced_to_their_token() {
        assert_eq!(error_code("invalid_grant"), "invalid_grant");
        assert_eq!(error_code("<script>x</script>"), "scriptxscript");
        assert_eq!(error_code(""), "unknown_error");
        assert_eq!(error_code(&"a".repeat(500)).len(), 64);
    }

    async fn discovery(server: &wiremock::MockServer) {
        use wiremock::matchers::{method, path};
        use wiremock::{Mock, ResponseTemplate};
        let base = server.uri();
        Mock::given(method("GET"))
            .and(path("/.well-known/openid-configuration"))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "issuer": base,
                "authorization_endpoint": format!("{base}/authorize"),
                "token_endpoint": format!("{base}/token"),
                "jwks_uri": format!("{base}/jwks"),
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
            })))
            .mount(server)
            .await;
        Mock::given(method("GET"))
            .and(path("/jwks"))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({"keys": []})))
            .mount(server)
            .await;
    }

    async fn authorize_query(
        provider: AuthProvider,
        issuer: &str,
        store_idp_tokens: bool,
    ) -> std::collections::HashMap<String, String> {
        let resource = url::Url::parse("http://127.0.0.1:9/mcp").unwrap();
        let mut config = AuthConfig::oidc(issuer, "tessera", resource);
        config.provider = provider;
        config.store_idp_tokens = store_idp_tokens;
        let p = Provider::new(&config, "http://127.0.0.1:9/auth/callback".into()).unwrap();
        let (url, csrf, _, _) = authorization_request(&p).await.unwrap();
        let q: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
        assert_eq!(q["state"], *csrf.secret());
        q
    }

    #[tokio::test]
    async fn google_asks_for_offline_access_only_when_provider_tokens_are_kept() {
        let server = wiremock::MockServer::start().await;
        discovery(&server).await;
        let q = authorize_query(AuthProvider::Google, &server.uri(), true).await;
        assert_eq!(q["access_type"], "offline");
        assert_eq!(q["prompt"], "consent");
        assert_eq!(q["code_challenge_method"], "S256");
        let q = authorize_query(AuthProvider::Google, &server.uri(), false).await;
        assert!(!q.contains_key("access_type") && !q.contains_key("prompt"));
    }

    #[tokio::test]
    async fn microsoft_asks_for_offline_access_scope_only_when_provider_tokens_are_kept() {
        let server = wiremock::MockServer::start().await;
        discovery(&server).await;
        let ms = || AuthProvider::Microsoft {
            tenant_id: "contoso".into(),
        };
        let q = authorize_query(ms(), &server.uri(), true).await;
        assert!(
            q["scope"].split(' ').any(|s| s == "offline_access"),
            "{q:?}"
        );
        assert!(!q.contains_key("access_type"));
        let q = authorize_query(ms(), &server.uri(), false).await;
        assert!(!q["scope"].split(' ').any(|s| s == "offline_access"));
    }

    #[tokio::test]
    async fn github_needs_no_discovery_and_uses_no_pkce() {
        let q = authorize_query(AuthProvider::Github, "https://github.com/login/oauth", true).await;
        assert_eq!(q["client_id"], "tessera");
        assert_eq!(q["redirect_uri"], "http://127.0.0.1:9/auth/callback");
        assert!(!q.contains_key("code_challenge") && !q.contains_key("nonce"));
    }

    #[test]
    fn admin_claim_matches_string_and_array() {
        let enc = |v: serde_json::Value| {
            format!(
                "h.{}.s",
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
            )
        };
        let jwt = enc(serde_json::json!({"groups": ["admins", "x"], "role": "boss"}));
        assert!(claim_matches(&jwt, "groups", "admins"));
        assert!(!claim_matches(&jwt, "groups", "admin"));
        assert!(claim_matches(&jwt, "role", "boss"));
        assert!(!claim_matches(&jwt, "missing", "boss"));
        assert!(!claim_matches("garbage", "role", "boss"));
    }
}
