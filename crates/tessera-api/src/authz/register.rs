//! RFC 7591 dynamic client registration: `POST /oauth/register`.
//!
//! Open registration (MCP clients register themselves on first use). A client asking for
//! `token_endpoint_auth_method: none` is public (PKCE is its proof); any other gets a secret,
//! returned once and stored hashed.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use secrecy::ExposeSecret as _;
use serde_json::{Value, json};
use tessera_store::OauthClientSource;

use super::clients::{self, AuthMethod};
use crate::ApiState;

/// Largest registration request.
const MAX_BODY: usize = 16 * 1024;

/// An RFC 7591 §3.2.2 error.
pub(crate) fn registration_error(code: &str, description: &str) -> Response {
    let mut r = (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": code, "error_description": description})),
    )
        .into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// `POST /oauth/register`.
pub(crate) async fn register(State(state): State<Arc<ApiState>>, body: Bytes) -> Response {
    let Some(server) = &state.authz else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if !server.config.dynamic_registration {
        return registration_error(
            "invalid_client_metadata",
            "dynamic registration is disabled here; use a client ID metadata document",
        );
    }
    if body.len() > MAX_BODY {
        return registration_error("invalid_client_metadata", "registration request too large");
    }
    let Ok(doc) = serde_json::from_slice::<Value>(&body) else {
        return registration_error("invalid_client_metadata", "the body must be a JSON object");
    };
    // The id is not known yet; the metadata does not depend on it for a registration.
    let (info, stored) = match clients::parse(&doc, "", OauthClientSource::Registered) {
        Ok(parsed) => parsed,
        Err(why) if why.contains("redirect") => {
            return registration_error("invalid_redirect_uri", &why);
        }
        Err(why) => return registration_error("invalid_client_metadata", &why),
    };
    let confidential = info.auth_method != AuthMethod::None;
    let new = match state
        .store
        .register_oauth_client(&stored.to_string(), confidential)
        .await
    {
        Ok(new) => new,
        Err(e) => {
            tracing::error!(error = %e, "registering an OAuth client failed");
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(json!({"error": "server_error"})),
            )
                .into_response();
        }
    };
    tracing::info!(
        client_id = %new.client.client_id,
        auth_method = info.auth_method.as_str(),
        "registered an OAuth client"
    );
    let mut answer = stored;
    answer["client_id"] = Value::from(new.client.client_id.clone());
    answer["client_id_issued_at"] = Value::from(new.client.created_at);
    if let Some(secret) = &new.client_secret {
        answer["client_secret"] = Value::from(secret.expose_secret());
        answer["client_secret_expires_at"] = Value::from(0);
    }
    let mut r = (StatusCode::CREATED, Json(answer)).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}
