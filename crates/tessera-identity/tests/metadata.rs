//! RFC 9728 metadata, WWW-Authenticate challenges, rejections and the /mcp middleware.

use std::sync::Arc;
use std::time::SystemTime;

use axum::Router;
use axum::body::Body;
use axum::extract::Extension;
use axum::routing::post;
use http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use secrecy::SecretString;
use serde_json::{Value, json};
use tessera_config::AuthConfig;
use tessera_identity::{
    AuthError, Identity, InvalidToken, McpAuth, ProtectedResource, ROOT_METADATA_PATH, Role,
    TokenKind, UserKey, bearer_token, protected_resource_metadata, require_identity,
};
use tower::ServiceExt;
use url::Url;

fn config() -> AuthConfig {
    let mut c = AuthConfig::oidc(
        "https://idp.example.com",
        "tessera",
        Url::parse("https://mcp.example.com/mcp").unwrap(),
    );
    c.scopes_required = vec!["mcp".into()];
    c
}

#[test]
fn metadata_document_names_the_provider() {
    assert_eq!(
        protected_resource_metadata(&config()),
        json!({
            "resource": "https://mcp.example.com/mcp",
            "authorization_servers": ["https://idp.example.com"],
            "scopes_supported": ["openid", "email", "profile", "mcp"],
            "bearer_methods_supported": ["header"],
            "resource_name": "Tessera",
        })
    );
}

#[test]
fn www_authenticate_values() {
    let pr = ProtectedResource::new(&config());
    assert_eq!(
        pr.metadata_url(),
        "https://mcp.example.com/.well-known/oauth-protected-resource/mcp"
    );
    assert_eq!(
        pr.metadata_path(),
        "/.well-known/oauth-protected-resource/mcp"
    );
    let meta = "Bearer resource_metadata=\"https://mcp.example.com/.well-known/oauth-protected-resource/mcp\"";
    assert_eq!(pr.www_authenticate(None), meta);
    assert_eq!(
        pr.www_authenticate(Some(&AuthError::InvalidToken(InvalidToken::Expired))),
        format!("{meta}, error=\"invalid_token\", error_description=\"token expired\"")
    );
    assert_eq!(
        pr.www_authenticate(Some(&AuthError::InvalidToken(InvalidToken::WrongAudience))),
        format!("{meta}, error=\"invalid_token\", error_description=\"wrong audience\"")
    );
    assert_eq!(
        pr.www_authenticate(Some(&AuthError::InsufficientScope {
            required: "mcp tools:call".into()
        })),
        format!("{meta}, error=\"insufficient_scope\", scope=\"mcp tools:call\"")
    );
}

#[test]
fn path_prefixed_resource_gets_a_path_aware_metadata_url() {
    let c = AuthConfig::oidc(
        "https://idp.example.com",
        "t",
        Url::parse("https://example.com/tessera/mcp").unwrap(),
    );
    let pr = ProtectedResource::new(&c);
    assert_eq!(
        pr.metadata_url(),
        "https://example.com/.well-known/oauth-protected-resource/tessera/mcp"
    );
}

async fn body_json(response: axum::response::Response) -> Value {
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test]
async fn metadata_is_served_at_both_well_known_paths() {
    let pr = Arc::new(ProtectedResource::new(&config()));
    let app: Router = pr.router();
    for p in [
        "/.well-known/oauth-protected-resource/mcp",
        ROOT_METADATA_PATH,
    ] {
        let response = app
            .clone()
            .oneshot(Request::get(p).body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{p}");
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        assert_eq!(
            body_json(response).await["authorization_servers"],
            json!(["https://idp.example.com"])
        );
    }
}

fn mcp_app() -> Router {
    // The provider is unreachable: only requests that never reach it can pass or fail here.
    let mut c = config();
    c.issuer = "http://127.0.0.1:9".into();
    let auth = McpAuth::new(Arc::new(c), reqwest::Client::new());
    Router::new()
        .route(
            "/mcp",
            post(|Extension(id): Extension<Arc<Identity>>| async move { id.user.subject.clone() }),
        )
        .layer(axum::middleware::from_fn_with_state(auth, require_identity))
}

#[tokio::test]
async fn mcp_without_a_token_is_401_with_the_metadata_challenge() {
    let response = mcp_app()
        .oneshot(Request::post("/mcp").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        response.headers()[header::WWW_AUTHENTICATE],
        "Bearer resource_metadata=\"https://mcp.example.com/.well-known/oauth-protected-resource/mcp\""
    );
}

#[tokio::test]
async fn mcp_with_a_bad_token_is_401_invalid_token_and_never_echoes_it() {
    let response = mcp_app()
        .oneshot(
            Request::post("/mcp")
                .header(header::AUTHORIZATION, "Bearer not-a-jwt-SECRETVALUE")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let challenge = response.headers()[header::WWW_AUTHENTICATE]
        .to_str()
        .unwrap()
        .to_string();
    assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
    let body = body_json(response).await;
    assert_eq!(body["error"], "invalid_token");
    assert!(!body.to_string().contains("SECRETVALUE"));
    assert!(!challenge.contains("SECRETVALUE"));
}

#[tokio::test]
async fn mcp_with_an_unreachable_provider_is_503() {
    let header_b64 = "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0"; // {"alg":"RS256","kid":"k1"}
    let response = mcp_app()
        .oneshot(
            Request::post("/mcp")
                .header(
                    header::AUTHORIZATION,
                    format!("Bearer {header_b64}.e30.c2ln"),
                )
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
}

#[test]
fn bearer_token_extraction() {
    let mut h = http::HeaderMap::new();
    assert_eq!(bearer_token(&h), Err(AuthError::Missing));
    h.insert(header::AUTHORIZATION, "Basic dXNlcjpwdw==".parse().unwrap());
    assert_eq!(bearer_token(&h), Err(AuthError::Missing));
    h.insert(header::AUTHORIZATION, "bearer abc.def".parse().unwrap());
    assert_eq!(bearer_token(&h), Ok("abc.def"));
    h.append(header::AUTHORIZATION, "Bearer other".parse().unwrap());
    assert!(matches!(
        bearer_token(&h),
        Err(AuthError::InvalidRequest(_))
    ));
}

#[test]
fn identity_debug_never_shows_the_token() {
    let id = Identity {
        user: UserKey {
            issuer: "https://idp.example.com".into(),
            subject: "alice".into(),
        },
        email: Some("alice@example.com".into()),
        display_name: "Alice".into(),
        role: Role::User,
        token_kind: TokenKind::Jwt,
        client_id: None,
        scopes: vec!["mcp".into()],
        groups: Vec::new(),
        expires_at: Some(SystemTime::now()),
        token: SecretString::from("eyJ-TOPSECRET-token"),
        agent: None,
    };
    let debug = format!("{id:?} {id:#?}");
    assert!(!debug.contains("TOPSECRET"), "{debug}");
    assert!(debug.contains("[redacted]"));
    assert!(debug.contains("alice@example.com"));
}
