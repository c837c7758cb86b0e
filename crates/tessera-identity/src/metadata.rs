//! RFC 9728 protected-resource metadata, `WWW-Authenticate` challenges (RFC 6750 §3), the
//! rejection responses, and the axum middleware that lets only identified callers through.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderValue, StatusCode};
use serde_json::{Value, json};
use tessera_config::AuthConfig;

use crate::error::AuthError;
use crate::validator::TokenValidator;

/// The root well-known path (RFC 9728 §3), the fallback for clients that do not insert the
/// resource's path.
pub const ROOT_METADATA_PATH: &str = "/.well-known/oauth-protected-resource";

/// The RFC 9728 metadata document for `config`: `resource`, `authorization_servers`
/// (the issuer), `scopes_supported`, `bearer_methods_supported`, `resource_name`.
pub fn protected_resource_metadata(config: &AuthConfig) -> Value {
    let mut scopes: Vec<&str> = config.scopes.iter().map(String::as_str).collect();
    for s in &config.scopes_required {
        if !scopes.contains(&s.as_str()) {
            scopes.push(s);
        }
    }
    // With Tessera's own authorization server, clients are sent to Tessera, which federates
    // the sign-in to the provider.
    let authorization_server = config
        .local_issuer()
        .unwrap_or_else(|| config.issuer.clone());
    let local_scopes = config.local_scopes();
    if config.authorization_server.is_some() {
        scopes = local_scopes.iter().map(String::as_str).collect();
    }
    json!({
        "resource": config.resource.as_str(),
        "authorization_servers": [authorization_server],
        "scopes_supported": scopes,
        "bearer_methods_supported": ["header"],
        "resource_name": "Tessera",
    })
}

/// Tessera as an OAuth protected resource: its metadata, where it is served, and how requests
/// without a usable token are answered. Everything is computed once.
#[derive(Debug, Clone)]
pub struct ProtectedResource {
    document: Arc<str>,
    metadata_path: String,
    metadata_url: String,
    challenge: HeaderValue,
}

impl ProtectedResource {
    pub fn new(config: &AuthConfig) -> Self {
        let document = protected_resource_metadata(config).to_string();
        let resource = &config.resource;
        // RFC 9728 §3.1: the well-known segment goes between the host and the resource's path.
        let path = resource.path().trim_end_matches('/');
        let metadata_path = format!("{ROOT_METADATA_PATH}{path}");
        let origin = resource.origin().ascii_serialization();
        let metadata_url = format!("{origin}{metadata_path}");
        let challenge = header_value(&format!("Bearer resource_metadata=\"{metadata_url}\""));
        ProtectedResource {
            document: document.into(),
            metadata_path,
            metadata_url,
            challenge,
        }
    }

    /// The metadata document as JSON text.
    pub fn document(&self) -> &str {
        &self.document
    }

    /// The path-aware well-known path, e.g. `/.well-known/oauth-protected-resource/mcp`.
    pub fn metadata_path(&self) -> &str {
        &self.metadata_path
    }

    /// The absolute URL of the metadata, as named in every challenge.
    pub fn metadata_url(&self) -> &str {
        &self.metadata_url
    }

    /// The `WWW-Authenticate` value for a rejection (`None`: no token was presented).
    ///
    /// - no token: `Bearer resource_metadata="…"`
    /// - bad token: `…, error="invalid_token", error_description="token expired"`
    /// - missing scope: `…, error="insufficient_scope", scope="mcp"`
    pub fn www_authenticate(&self, error: Option<&AuthError>) -> HeaderValue {
        let base = &self.metadata_url;
        match error {
            None | Some(AuthError::Missing) => self.challenge.clone(),
            Some(AuthError::InvalidToken(reason)) => header_value(&format!(
                "Bearer resource_metadata=\"{base}\", error=\"invalid_token\", error_description=\"{reason}\""
            )),
            Some(AuthError::InsufficientScope { required }) => header_value(&format!(
                "Bearer resource_metadata=\"{base}\", error=\"insufficient_scope\", scope=\"{required}\""
            )),
            Some(AuthError::InvalidRequest(what)) => header_value(&format!(
                "Bearer resource_metadata=\"{base}\", error=\"invalid_request\", error_description=\"{what}\""
            )),
            Some(AuthError::Forbidden(_) | AuthError::Unavailable(_)) => self.challenge.clone(),
        }
    }

    /// The HTTP response for `error`: status, `WWW-Authenticate` (401, 400, 403) and a small
    /// JSON body. The body never holds the token; for 503 it does not name the provider either
    /// (the detail is logged).
    pub fn reject(&self, error: &AuthError) -> Response {
        let status = error.status();
        let description = match error {
            AuthError::Missing => "a bearer token is required".to_string(),
            AuthError::Unavailable(detail) => {
                tracing::warn!(%detail, "identity provider unavailable; request refused");
                "the identity provider is unavailable; try again later".to_string()
            }
            other => other.to_string(),
        };
        let mut body = json!({ "error_description": description });
        if let Some(code) = error.error_code() {
            body["error"] = Value::from(code);
        } else if status == StatusCode::FORBIDDEN {
            body["error"] = Value::from("access_denied");
        } else {
            body["error"] = Value::from("unauthorized");
        }
        let mut response = (status, axum::Json(body)).into_response();
        if status != StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(WWW_AUTHENTICATE, self.www_authenticate(Some(error)));
        } else {
            response
                .headers_mut()
                .insert(http::header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        response
    }

    /// The metadata document as an HTTP response.
    pub fn metadata_response(&self) -> Response {
        let mut response = Response::new(Body::from(self.document.to_string()));
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(
            CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=3600"),
        );
        response
    }

    /// A router serving the metadata at the path-aware well-known path and at the root
    /// fallback; merge it into the gateway's router (no authentication in front of it).
    pub fn router<S: Clone + Send + Sync + 'static>(self: Arc<Self>) -> Router<S> {
        let path_aware = self.metadata_path.clone();
        let a = self.clone();
        let mut router = Router::new().route(
            ROOT_METADATA_PATH,
            get(move || async move { a.metadata_response() }),
        );
        if path_aware != ROOT_METADATA_PATH {
            router = router.route(
                &path_aware,
                get(move || async move { self.metadata_response() }),
            );
        }
        router
    }
}

/// A header value from text Tessera wrote itself (URLs, fixed reasons, configured scopes):
/// visible ASCII only, so this cannot fail; anything else is dropped rather than panicking.
fn header_value(text: &str) -> HeaderValue {
    let clean: String = text
        .chars()
        .filter(|c| c.is_ascii() && (*c == ' ' || c.is_ascii_graphic()))
        .collect();
    HeaderValue::from_str(&clean).unwrap_or_else(|_| HeaderValue::from_static("Bearer"))
}

/// The token of the request's `Authorization: Bearer` header. No header or another scheme:
/// [`AuthError::Missing`]; the header twice or not text: [`AuthError::InvalidRequest`].
/// Tokens in the query string or form body are not accepted (RFC 6750 §2.3 is not used).
pub fn bearer_token(headers: &HeaderMap) -> Result<&str, AuthError> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Err(AuthError::Missing);
    };
    if values.next().is_some() {
        return Err(AuthError::InvalidRequest(
            "more than one Authorization header",
        ));
    }
    let value = value
        .to_str()
        .map_err(|_| AuthError::InvalidRequest("Authorization header is not text"))?;
    let Some((scheme, token)) = value.split_once(' ') else {
        return Err(AuthError::Missing);
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::Missing);
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(AuthError::Missing);
    }
    Ok(token)
}

/// What [`require_identity`] needs: the validator and the resource's challenges.
#[derive(Clone)]
pub struct McpAuth {
    pub validator: TokenValidator,
    pub resource: Arc<ProtectedResource>,
}

impl McpAuth {
    /// Validator and metadata for `config`, with `http` for the calls to the provider.
    pub fn new(config: Arc<AuthConfig>, http: reqwest::Client) -> Self {
        let resource = Arc::new(ProtectedResource::new(&config));
        McpAuth {
            validator: TokenValidator::new(config, http),
            resource,
        }
    }
}

/// axum middleware for `/mcp`: validates the bearer token and inserts `Arc<Identity>` into the
/// request's extensions, or answers 401/403/503 with the challenge. Mount with
/// `axum::middleware::from_fn_with_state(mcp_auth, require_identity)`.
pub async fn require_identity(
    State(auth): State<McpAuth>,
    mut req: Request,
    next: Next,
) -> Response {
    match auth.validator.authenticate(req.headers()).await {
        Ok(identity) => {
            req.extensions_mut().insert(identity);
            next.run(req).await
        }
        Err(error) => auth.resource.reject(&error),
    }
}
