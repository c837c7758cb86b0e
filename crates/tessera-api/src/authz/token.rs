//! `POST /oauth/token` (authorization code + PKCE S256, refresh-token rotation) and
//! `POST /oauth/revoke` (RFC 7009).
//!
//! Client authentication: a public client names itself (`client_id`, no secret; PKCE is its
//! proof); a confidential one sends its secret by HTTP Basic or in the body. Errors are the
//! RFC 6749 §5.2 JSON (`invalid_client` is 401). Codes and refresh tokens are single use; a
//! second use revokes every token descending from the same code (the *family*), so a stolen
//! code or refresh token is worth one race at most.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use secrecy::ExposeSecret as _;
use serde_json::json;
use sha2::{Digest, Sha256};
use tessera_store::{
    ActivityAction, ActivityOutcome, Change, CodeRedemption, OauthTokenRejection, RefreshRefused,
    TokenGrant,
};

use super::authorize::is_our_resource;
use super::{AuthorizationServer, verify};
use crate::ApiState;
use crate::subject_token::{SubjectKind, SubjectTokenError};

/// Largest token or revocation request.
const MAX_BODY: usize = 16 * 1024;

/// An RFC 6749 §5.2 error.
struct TokenError {
    status: StatusCode,
    code: &'static str,
    description: String,
    /// `invalid_client` after HTTP Basic: answer with a Basic challenge.
    basic_challenge: bool,
}

impl TokenError {
    fn new(code: &'static str, description: impl Into<String>) -> Self {
        TokenError {
            status: StatusCode::BAD_REQUEST,
            code,
            description: description.into(),
            basic_challenge: false,
        }
    }

    fn invalid_client(description: &str, basic: bool) -> Self {
        TokenError {
            status: StatusCode::UNAUTHORIZED,
            code: "invalid_client",
            description: description.into(),
            basic_challenge: basic,
        }
    }

    fn server_error(what: &str, cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "{what}");
        TokenError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "server_error",
            description: what.into(),
            basic_challenge: false,
        }
    }
}

impl IntoResponse for TokenError {
    fn into_response(self) -> Response {
        let mut r = (
            self.status,
            Json(json!({"error": self.code, "error_description": self.description})),
        )
            .into_response();
        let h = r.headers_mut();
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if self.basic_challenge {
            h.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"tessera\""),
            );
        }
        r
    }
}

type Params = HashMap<String, String>;

/// The form body; a parameter given twice is an error (RFC 6749 §3.2).
fn form(body: &Bytes) -> Result<Params, TokenError> {
    if body.len() > MAX_BODY {
        return Err(TokenError::new("invalid_request", "request too large"));
    }
    let mut params = Params::new();
    for (k, v) in url::form_urlencoded::parse(body) {
        if params.insert(k.to_string(), v.into_owned()).is_some() {
            return Err(TokenError::new(
                "invalid_request",
                format!("the parameter {k:?} is given more than once"),
            ));
        }
    }
    Ok(params)
}

fn param<'a>(params: &'a Params, name: &str) -> Option<&'a str> {
    params
        .get(name)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
}

/// Authenticates the client of a token or revocation request; returns its id.
async fn client(
    state: &ApiState,
    headers: &HeaderMap,
    params: &Params,
) -> Result<String, TokenError> {
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("basic").then(|| rest.trim())
        });
    let (client_id, secret, via_basic) = match basic {
        Some(encoded) => {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| TokenError::invalid_client("malformed Basic credentials", true))?;
            let (id, secret) = decoded
                .split_once(':')
                .ok_or_else(|| TokenError::invalid_client("malformed Basic credentials", true))?;
            // RFC 6749 §2.3.1: both parts are form-urlencoded.
            let unescape = |s: &str| -> String {
                url::form_urlencoded::parse(format!("x={s}").as_bytes())
                    .next()
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default()
            };
            (unescape(id), Some(unescape(secret)), true)
        }
        None => (
            param(params, "client_id")
                .ok_or_else(|| TokenError::invalid_client("client_id is missing", false))?
                .to_owned(),
            param(params, "client_secret").map(str::to_owned),
            false,
        ),
    };
    if let Some(body_id) = param(params, "client_id")
        && body_id != client_id
    {
        return Err(TokenError::invalid_client(
            "client_id differs from the authenticated client",
            via_basic,
        ));
    }
    let stored = state
        .store
        .oauth_client(&client_id)
        .await
        .map_err(|e| TokenError::server_error("reading the client failed", &e))?
        .ok_or_else(|| TokenError::invalid_client("unknown client", via_basic))?;
    match (stored.confidential, secret) {
        (true, Some(secret)) => {
            let ok = state
                .store
                .check_oauth_client_secret(&client_id, &secret)
                .await
                .map_err(|e| TokenError::server_error("checking the client failed", &e))?;
            if !ok {
                return Err(TokenError::invalid_client(
                    "client authentication failed",
                    via_basic,
                ));
            }
        }
        (true, None) => {
            return Err(TokenError::invalid_client(
                "this client must authenticate with its secret",
                via_basic,
            ));
        }
        (false, Some(_)) => {
            return Err(TokenError::invalid_client(
                "a public client has no secret",
                via_basic,
            ));
        }
        (false, None) => {}
    }
    Ok(client_id)
}

fn success(
    server: &AuthorizationServer,
    issued: &tessera_store::IssuedTokens,
    scopes: &[String],
) -> Response {
    let mut r = Json(json!({
        "access_token": issued.access_token.expose_secret(),
        "token_type": "Bearer",
        "expires_in": AuthorizationServer::secs(server.config.access_token_ttl),
        "refresh_token": issued.refresh_token.expose_secret(),
        "scope": scopes.join(" "),
    }))
    .into_response();
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    r
}

/// The user's provider sign-in must still be renewable for Tessera to issue tokens on it.
async fn provider_session_alive(state: &ApiState, user_id: &str) -> Result<(), TokenError> {
    match state
        .subject_tokens
        .current(user_id, SubjectKind::AccessToken)
        .await
    {
        Ok(_) => Ok(()),
        Err(SubjectTokenError::ReauthRequired) => Err(TokenError::new(
            "invalid_grant",
            "the sign-in at the identity provider has ended; authorize again",
        )),
        // The provider is down: the tokens Tessera issues stand; brokered calls will say so.
        Err(e) => {
            tracing::warn!(user = %user_id, error = %e, "cannot renew the provider sign-in now");
            Ok(())
        }
    }
}

/// `POST /oauth/token`.
pub(crate) async fn token(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match token_inner(&state, &headers, &body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn token_inner(
    state: &ApiState,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, TokenError> {
    let Some(server) = &state.authz else {
        return Ok(StatusCode::NOT_FOUND.into_response());
    };
    let params = form(body)?;
    let grant_type = param(&params, "grant_type")
        .ok_or_else(|| TokenError::new("invalid_request", "grant_type is missing"))?
        .to_owned();
    let client_id = client(state, headers, &params).await?;
    if let Some(resource) = param(&params, "resource")
        && !is_our_resource(server, resource)
    {
        return Err(TokenError::new(
            "invalid_target",
            "this server issues tokens only for its own resource (its /mcp URL)",
        ));
    }
    match grant_type.as_str() {
        "authorization_code" => authorization_code(state, server, &client_id, &params).await,
        "refresh_token" => refresh(state, server, &client_id, &params).await,
        _ => Err(TokenError::new(
            "unsupported_grant_type",
            "supported: authorization_code, refresh_token",
        )),
    }
}

async fn authorization_code(
    state: &ApiState,
    server: &AuthorizationServer,
    client_id: &str,
    params: &Params,
) -> Result<Response, TokenError> {
    let code = param(params, "code")
        .ok_or_else(|| TokenError::new("invalid_request", "code is missing"))?;
    let verifier = param(params, "code_verifier")
        .ok_or_else(|| TokenError::new("invalid_request", "code_verifier is missing (PKCE)"))?;
    let grant = match state
        .store
        .redeem_oauth_code(code)
        .await
        .map_err(|e| TokenError::server_error("redeeming the code failed", &e))?
    {
        CodeRedemption::Redeemed(grant) => grant,
        CodeRedemption::Replayed { revoked, family_id } => {
            tracing::warn!(
                client_id,
                revoked,
                "authorization code replayed; its tokens are revoked"
            );
            verify::revoked(state, Change::OauthFamilyRevoked { family_id }).await;
            super::audit(
                state,
                None,
                client_id,
                ActivityAction::GrantRevoke,
                ActivityOutcome::Denied,
                Some("code_replayed"),
            );
            return Err(TokenError::new(
                "invalid_grant",
                "the authorization code was already used; the tokens issued for it are revoked",
            ));
        }
        CodeRedemption::Expired => {
            return Err(TokenError::new(
                "invalid_grant",
                "the authorization code has expired",
            ));
        }
        CodeRedemption::Unknown => {
            return Err(TokenError::new(
                "invalid_grant",
                "unknown authorization code",
            ));
        }
    };
    if grant.client_id != client_id {
        return Err(TokenError::new(
            "invalid_grant",
            "the authorization code was issued to another client",
        ));
    }
    if let Some(redirect_uri) = param(params, "redirect_uri")
        && redirect_uri != grant.redirect_uri
    {
        return Err(TokenError::new(
            "invalid_grant",
            "redirect_uri does not match the authorization request",
        ));
    }
    let valid_verifier = (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(Sha256::digest(verifier.as_bytes()));
    let matches: bool =
        subtle::ConstantTimeEq::ct_eq(challenge.as_bytes(), grant.code_challenge.as_bytes()).into();
    if !valid_verifier || !matches {
        return Err(TokenError::new("invalid_grant", "PKCE verification failed"));
    }
    provider_session_alive(state, &grant.user_id).await?;
    issue(
        state,
        server,
        &TokenGrant {
            family_id: &grant.family_id,
            client_id,
            user_id: &grant.user_id,
            scopes: &grant.scopes,
            resource: &grant.resource,
            access_ttl_secs: AuthorizationServer::secs(server.config.access_token_ttl),
            refresh_ttl_secs: AuthorizationServer::secs(server.config.refresh_token_ttl),
        },
        ActivityAction::TokenIssue,
    )
    .await
}

async fn refresh(
    state: &ApiState,
    server: &AuthorizationServer,
    client_id: &str,
    params: &Params,
) -> Result<Response, TokenError> {
    let refresh_token = param(params, "refresh_token")
        .ok_or_else(|| TokenError::new("invalid_request", "refresh_token is missing"))?;
    let rotated = match state
        .store
        .rotate_oauth_refresh_token(refresh_token, client_id)
        .await
        .map_err(|e| TokenError::server_error("rotating the refresh token failed", &e))?
    {
        Ok(rotated) => rotated,
        Err(RefreshRefused {
            reason: OauthTokenRejection::Reused,
            revoked_family,
        }) => {
            tracing::warn!(client_id, "refresh token reused; its grant is revoked");
            let change = match revoked_family {
                Some(family_id) => Change::OauthFamilyRevoked { family_id },
                None => Change::OauthRevokedUnknown,
            };
            verify::revoked(state, change).await;
            super::audit(
                state,
                None,
                client_id,
                ActivityAction::GrantRevoke,
                ActivityOutcome::Denied,
                Some("refresh_token_reused"),
            );
            return Err(TokenError::new(
                "invalid_grant",
                "the refresh token was already used; the grant is revoked, authorize again",
            ));
        }
        Err(refused) => {
            return Err(TokenError::new(
                "invalid_grant",
                format!("refresh token rejected: {}", refused.reason),
            ));
        }
    };
    let scopes = match param(params, "scope") {
        None => rotated.scopes.clone(),
        Some(asked) => {
            let asked: Vec<String> = asked.split_whitespace().map(str::to_owned).collect();
            if let Some(extra) = asked.iter().find(|s| !rotated.scopes.contains(s)) {
                return Err(TokenError::new(
                    "invalid_scope",
                    format!("scope {extra:?} was not granted"),
                ));
            }
            asked
        }
    };
    if let Err(e) = provider_session_alive(state, &rotated.user_id).await {
        let _ = state.store.revoke_oauth_family(&rotated.family_id).await;
        verify::revoked(
            state,
            Change::OauthFamilyRevoked {
                family_id: rotated.family_id.clone(),
            },
        )
        .await;
        super::audit(
            state,
            Some(&rotated.user_id),
            client_id,
            ActivityAction::TokenRefresh,
            ActivityOutcome::Failure,
            Some("sign_in_again"),
        );
        return Err(e);
    }
    issue(
        state,
        server,
        &TokenGrant {
            family_id: &rotated.family_id,
            client_id,
            user_id: &rotated.user_id,
            scopes: &scopes,
            resource: &rotated.resource,
            access_ttl_secs: AuthorizationServer::secs(server.config.access_token_ttl),
            refresh_ttl_secs: AuthorizationServer::secs(server.config.refresh_token_ttl),
        },
        ActivityAction::TokenRefresh,
    )
    .await
}

/// Mints the tokens of `grant`, audits it as `action` (issue or refresh) and answers with them.
async fn issue(
    state: &ApiState,
    server: &AuthorizationServer,
    grant: &TokenGrant<'_>,
    action: ActivityAction,
) -> Result<Response, TokenError> {
    let issued = state
        .store
        .issue_oauth_tokens(grant)
        .await
        .map_err(|e| TokenError::server_error("issuing tokens failed", &e))?;
    tracing::debug!(user = %grant.user_id, client_id = grant.client_id, action = action.as_str(), "access token issued");
    super::audit(
        state,
        Some(grant.user_id),
        grant.client_id,
        action,
        ActivityOutcome::Success,
        None,
    );
    Ok(success(server, &issued, grant.scopes))
}

/// `POST /oauth/revoke` (RFC 7009): 200 whether or not the token was known.
pub(crate) async fn revoke(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if state.authz.is_none() {
        return StatusCode::NOT_FOUND.into_response();
    }
    let result = async {
        let params = form(&body)?;
        let client_id = client(&state, &headers, &params).await?;
        let token = param(&params, "token")
            .ok_or_else(|| TokenError::new("invalid_request", "token is missing"))?;
        match state
            .store
            .revoke_oauth_token(token, &client_id)
            .await
            .map_err(|e| TokenError::server_error("revoking failed", &e))?
        {
            Some(family) => {
                if token.starts_with(tessera_store::REFRESH_TOKEN_PREFIX) {
                    verify::revoked(&state, Change::OauthFamilyRevoked { family_id: family }).await;
                } else {
                    verify::revoked(&state, verify::token_revoked(token)).await;
                }
                tracing::info!(client_id, "token revoked");
                super::audit(
                    &state,
                    None,
                    &client_id,
                    ActivityAction::TokenRevoke,
                    ActivityOutcome::Success,
                    None,
                );
            }
            None => tracing::debug!(client_id, "revocation of an unknown token"),
        }
        Ok::<_, TokenError>(())
    }
    .await;
    match result {
        Ok(()) => {
            let mut r = StatusCode::OK.into_response();
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        Err(e) => e.into_response(),
    }
}
