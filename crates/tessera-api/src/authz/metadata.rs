//! RFC 8414 authorization server metadata, served at `/.well-known/oauth-authorization-server`
//! and at the OpenID discovery path (MCP clients try both, 2025-06-18 §2.3.3).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::AuthorizationServer;
use crate::ApiState;
use crate::error::ApiError;

/// The metadata document of `server`.
pub(crate) fn metadata(server: &AuthorizationServer) -> Value {
    let mut doc = json!({
        "issuer": server.issuer,
        "authorization_endpoint": server.endpoint("/oauth/authorize"),
        "token_endpoint": server.endpoint("/oauth/token"),
        "revocation_endpoint": server.endpoint("/oauth/revoke"),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["none", "client_secret_basic", "client_secret_post"],
        "revocation_endpoint_auth_methods_supported": ["none", "client_secret_basic", "client_secret_post"],
        "scopes_supported": server.scopes,
        "authorization_response_iss_parameter_supported": true,
        "client_id_metadata_document_supported": server.config.client_metadata_documents,
    });
    if server.config.dynamic_registration {
        doc["registration_endpoint"] = Value::from(server.endpoint("/oauth/register"));
    }
    doc
}

/// `GET /.well-known/oauth-authorization-server` (and `/.well-known/openid-configuration`).
pub(crate) async fn document(State(state): State<Arc<ApiState>>) -> Response {
    let Some(server) = &state.authz else {
        return ApiError::new(axum::http::StatusCode::NOT_FOUND, "no authorization server")
            .into_response();
    };
    let mut r = Json(metadata(server)).into_response();
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    r.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    r
}
