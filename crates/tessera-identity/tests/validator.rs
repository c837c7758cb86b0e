//! Token validation against a mock provider (wiremock): discovery, JWKS, rollover, introspection.
//! The keys under `tests/keys/` are test-only keys generated once with openssl.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use tessera_config::{AdminClaim, AuthConfig};
use tessera_identity::{AuthError, InvalidToken, Role, TokenKind, TokenValidator};
use url::Url;
use wiremock::matchers::{body_string_contains, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const RSA1: &[u8] = include_bytes!("keys/rsa1.pem");
const RSA2: &[u8] = include_bytes!("keys/rsa2.pem");
const EC1: &[u8] = include_bytes!("keys/ec1.pem");
const RESOURCE: &str = "https://mcp.example.com/mcp";

fn rsa1() -> EncodingKey {
    EncodingKey::from_rsa_pem(RSA1).unwrap()
}
fn rsa2() -> EncodingKey {
    EncodingKey::from_rsa_pem(RSA2).unwrap()
}
fn ec1() -> EncodingKey {
    EncodingKey::from_ec_pem(EC1).unwrap()
}

fn jwk(key: &EncodingKey, alg: Algorithm, kid: &str) -> Value {
    let mut jwk = Jwk::from_encoding_key(key, alg).unwrap();
    jwk.common.key_id = Some(kid.to_string());
    serde_json::to_value(jwk).unwrap()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A mock identity provider: discovery and a JWKS with `keys`.
struct Idp {
    server: MockServer,
}

impl Idp {
    async fn start(keys: Vec<Value>) -> Idp {
        let server = MockServer::start().await;
        let idp = Idp { server };
        idp.mount(keys).await;
        idp
    }

    async fn mount(&self, keys: Vec<Value>) {
        let issuer = self.issuer();
        Mock::given(method("GET"))
            .and(path("/.well-known/openid-configuration"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "issuer": issuer,
                "jwks_uri": format!("{issuer}/jwks"),
            })))
            .mount(&self.server)
            .await;
        Mock::given(method("GET"))
            .and(path("/jwks"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "keys": keys })))
            .mount(&self.server)
            .await;
    }

    fn issuer(&self) -> String {
        self.server.uri()
    }

    fn config(&self) -> AuthConfig {
        AuthConfig::oidc(self.issuer(), "tessera", Url::parse(RESOURCE).unwrap())
    }

    fn claims(&self) -> Value {
        json!({
            "iss": self.issuer(),
            "aud": RESOURCE,
            "sub": "alice-sub",
            "email": "Alice@Example.com",
            "name": "Alice",
            "scope": "openid mcp",
            "azp": "claude-code",
            "iat": now(),
            "exp": now() + 600,
        })
    }

    async fn requests_to(&self, p: &str) -> usize {
        self.server
            .received_requests()
            .await
            .unwrap_or_default()
            .iter()
            .filter(|r| r.url.path() == p)
            .count()
    }
}

fn sign(claims: &Value, alg: Algorithm, kid: Option<&str>, key: &EncodingKey) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_string);
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

fn validator(config: AuthConfig) -> TokenValidator {
    TokenValidator::new(Arc::new(config), reqwest::Client::new())
}

fn invalid(result: Result<Arc<tessera_identity::Identity>, AuthError>) -> InvalidToken {
    match result {
        Err(AuthError::InvalidToken(reason)) => reason,
        other => panic!("expected invalid_token, got {other:?}"),
    }
}

async fn standard_idp() -> Idp {
    Idp::start(vec![
        jwk(&rsa1(), Algorithm::RS256, "k1"),
        jwk(&ec1(), Algorithm::ES256, "e1"),
    ])
    .await
}

#[tokio::test]
async fn valid_token_is_accepted_with_claims_mapped() {
    let idp = standard_idp().await;
    let mut config = idp.config();
    config.admin_emails = vec!["alice@example.com".into()];
    let v = validator(config);
    let token = sign(&idp.claims(), Algorithm::RS256, Some("k1"), &rsa1());
    let id = v.validate(&token).await.unwrap();
    assert_eq!(id.user.issuer, idp.issuer());
    assert_eq!(id.user.subject, "alice-sub");
    assert_eq!(id.email.as_deref(), Some("alice@example.com"));
    assert_eq!(id.display_name, "Alice");
    assert_eq!(id.role, Role::Admin);
    assert_eq!(id.token_kind, TokenKind::Jwt);
    assert_eq!(id.scopes, ["openid", "mcp"]);
    assert_eq!(id.client_id.as_deref(), Some("claude-code"));
    assert!(id.expires_at.unwrap() > SystemTime::now());
    assert_eq!(id.token.expose_secret(), token);

    // ES256 too, and a user not in admin_emails is a user.
    let mut claims = idp.claims();
    claims["email"] = json!("bob@example.com");
    let token = sign(&claims, Algorithm::ES256, Some("e1"), &ec1());
    let id = v.validate(&token).await.unwrap();
    assert_eq!(id.role, Role::User);
}

#[tokio::test]
async fn a_repeated_token_comes_from_the_cache() {
    let idp = standard_idp().await;
    let v = validator(idp.config());
    let token = sign(&idp.claims(), Algorithm::RS256, Some("k1"), &rsa1());
    let a = v.validate(&token).await.unwrap();
    let b = v.validate(&token).await.unwrap();
    assert!(Arc::ptr_eq(&a, &b));
    assert_eq!(idp.requests_to("/jwks").await, 1);
    assert_eq!(
        idp.requests_to("/.well-known/openid-configuration").await,
        1
    );
}

#[tokio::test]
async fn expired_token_is_rejected() {
    let idp = standard_idp().await;
    let v = validator(idp.config());
    let mut claims = idp.claims();
    claims["exp"] = json!(now() - 120);
    let token = sign(&claims, Algorithm::RS256, Some("k1"), &rsa1());
    assert_eq!(invalid(v.validate(&token).await), InvalidToken::Expired);
    // Within the 60 s leeway it still passes.
    claims["exp"] = json!(now() - 10);
    let token = sign(&claims, Algorithm::RS256, Some("k1"), &rsa1());
    assert!(v.validate(&token).await.is_ok());
}

#[tokio::test]
async fn token_not_yet_valid_is_rejected() {
    let idp = standard_idp().await;
    let v = validator(idp.config());
    let mut claims = idp.claims();
    claims["nbf"] = json!(now() + 300);
    let token = sign(&claims, Algorithm::RS256, Some("k1"), &rsa1());
    assert_eq!(invalid(v.validate(&token).await), InvalidToken::NotYetValid);
}

#[tokio::test]
async fn wrong_audience_is_rejected_and_configured_audiences_are_accepted() {
    let idp = standard_idp().await;
    let mut claims = idp.claims();
    claims["aud"] = json!(["https://other.example.com/mcp"]);
    let token = sign(&claims, Algorithm::RS256, Some("k1"), &rsa1());
    let v = validator(idp.config());
    assert_eq!(
        invalid(v.validate(&token).await),
        InvalidToken::WrongAudience
    );

    claims["aud"] = json!(["api://other", "api://tessera"]);
    let token = sign(&claims, Algorithm::RS256, Some("k1"), &rsa1());
    let mut config = idp.config();
    config.audiences = vec!["api://tessera".into()];
    assert!(validator(config).validate(&token).await.is_ok());

    // No aud at all: not for us.
    let mut claims = idp.claims();
    claims.as_object_mut().unwrap().remove("aud");
    let token = sign(&claims, Algorithm::RS256, Some("k1"), &rsa1());
    assert_eq!(
        invalid(v.validate(&token).await),
        InvalidToken::WrongAudience
    );
}

#[tokio::test]
async fn wrong_issuer_is_rejected() {
    let idp = standard_idp().await;
    let v = validator(idp.config());
    let mut claims = idp.claims();
    claims["iss"] = json!("https://evil.example.com");
    let token = sign(&claims, Algorithm::RS256, Some("k1"), &rsa1());
    assert_eq!(invalid(v.validate(&token).await), InvalidToken::WrongIssuer);
}

#[tokio::test]
async fn bad_signature_is_rejected() {
    let idp = standard_idp().await;
    let v = validator(idp.config());
    // Signed with another key but claiming k1.
    let token = sign(&idp.claims(), Algorithm::RS256, Some("k1"), &rsa2());
    assert_eq!(
        invalid(v.validate(&token).await),
        InvalidToken::BadSignature
    );
    // A tampered payload.
    let good = sign(&idp.claims(), Algorithm::RS256, Some("k1"), &rsa1());
    let parts: Vec<&str> = good.split('.').collect();
    let mut claims = idp.claims();
    claims["sub"] = json!("mallory");
    let payload = base64_url(&serde_json::to_vec(&claims).unwrap());
    let forged = format!("{}.{payload}.{}", parts[0], parts[2]);
    assert_eq!(
        invalid(v.validate(&forged).await),
        InvalidToken::BadSignature
    );
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[tokio::test]
async fn alg_none_is_rejected() {
    let idp = standard_idp().await;
    let v = validator(idp.config());
    let header = base64_url(br#"{"alg":"none","typ":"JWT","kid":"k1"}"#);
    let payload = base64_url(&serde_json::to_vec(&idp.claims()).unwrap());
    for token in [
        format!("{header}.{payload}."),
        format!("{header}.{payload}.AAAA"),
    ] {
        assert_eq!(
            invalid(v.validate(&token).await),
            InvalidToken::UnsupportedAlgorithm
        );
    }
    let header = base64_url(br#"{"alg":"NONE"}"#);
    let token = format!("{header}.{payload}.");
    assert_eq!(
        invalid(v.validate(&token).await),
        InvalidToken::UnsupportedAlgorithm
    );
}

#[tokio::test]
async fn hs256_signed_with_the_public_key_is_rejected() {
    // Algorithm confusion: the attacker uses the provider's public key as an HMAC secret.
    let idp = standard_idp().await;
    let v = validator(idp.config());
    let public_pem = {
        let jwk = jwk(&rsa1(), Algorithm::RS256, "k1");
        serde_json::to_vec(&jwk).unwrap()
    };
    for secret in [public_pem.as_slice(), RSA1] {
        let token = sign(
            &idp.claims(),
            Algorithm::HS256,
            Some("k1"),
            &EncodingKey::from_secret(secret),
        );
        assert_eq!(
            invalid(v.validate(&token).await),
            InvalidToken::UnsupportedAlgorithm
        );
    }
}

#[tokio::test]
async fn algorithms_not_configured_are_rejected() {
    let idp = standard_idp().await;
    let v = validator(idp.config()); // RS256 + ES256
    let token = sign(&idp.claims(), Algorithm::RS384, Some("k1"), &rsa1());
    assert_eq!(
        invalid(v.validate(&token).await),
        InvalidToken::UnsupportedAlgorithm
    );
    let mut config = idp.config();
    config.algorithms = vec![tessera_config::JwtAlgorithm::ES256];
    let token = sign(&idp.claims(), Algorithm::RS256, Some("k1"), &rsa1());
    assert_eq!(
        invalid(validator(config).validate(&token).await),
        InvalidToken::UnsupportedAlgorithm
    );
}

#[tokio::test]
async fn unknown_kid_is_followed_to_the_rolled_over_jwks() {
    let idp = Idp::start(vec![jwk(&rsa1(), Algorithm::RS256, "k1")]).await;
    let v = validator(idp.config()).with_refetch_interval(Duration::ZERO);
    let old = sign(&idp.claims(), Algorithm::RS256, Some("k1"), &rsa1());
    assert!(v.validate(&old).await.is_ok());

    let new = sign(&idp.claims(), Algorithm::RS256, Some("k2"), &rsa2());
    assert_eq!(invalid(v.validate(&new).await), InvalidToken::UnknownKey);

    // The provider rolls its keys over: k2 is published.
    idp.server.reset().await;
    idp.mount(vec![
        jwk(&rsa1(), Algorithm::RS256, "k1"),
        jwk(&rsa2(), Algorithm::RS256, "k2"),
    ])
    .await;
    let id = v.validate(&new).await.unwrap();
    assert_eq!(id.user.subject, "alice-sub");
}

#[tokio::test]
async fn unknown_kids_refetch_the_jwks_at_most_once_per_interval() {
    let idp = standard_idp().await;
    let v = validator(idp.config()); // default: 10 s
    let good = sign(&idp.claims(), Algorithm::RS256, Some("k1"), &rsa1());
    assert!(v.validate(&good).await.is_ok());
    assert_eq!(idp.requests_to("/jwks").await, 1);
    for kid in ["x1", "x2", "x3", "x4"] {
        let token = sign(&idp.claims(), Algorithm::RS256, Some(kid), &rsa2());
        assert_eq!(invalid(v.validate(&token).await), InvalidToken::UnknownKey);
    }
    assert_eq!(idp.requests_to("/jwks").await, 1, "no refetch within 10 s");
}

#[tokio::test]
async fn rfc8414_metadata_is_the_discovery_fallback() {
    let server = MockServer::start().await;
    let issuer = format!("{}/tenant", server.uri());
    Mock::given(method("GET"))
        .and(path("/.well-known/oauth-authorization-server/tenant"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "issuer": issuer, "jwks_uri": format!("{}/keys", server.uri()),
        })))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/keys"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"keys": [jwk(&rsa1(), Algorithm::RS256, "k1")]})),
        )
        .mount(&server)
        .await;
    let config = AuthConfig::oidc(issuer.clone(), "tessera", Url::parse(RESOURCE).unwrap());
    let claims = json!({"iss": issuer, "aud": RESOURCE, "sub": "s", "exp": now() + 60});
    let token = sign(&claims, Algorithm::RS256, Some("k1"), &rsa1());
    assert!(validator(config).validate(&token).await.is_ok());
}

#[tokio::test]
async fn unreachable_provider_is_unavailable_never_anonymous() {
    // Nothing listens on port 9 of loopback.
    let config = AuthConfig::oidc(
        "http://127.0.0.1:9",
        "tessera",
        Url::parse(RESOURCE).unwrap(),
    );
    let v = validator(config);
    let claims =
        json!({"iss": "http://127.0.0.1:9", "aud": RESOURCE, "sub": "s", "exp": now() + 60});
    let token = sign(&claims, Algorithm::RS256, Some("k1"), &rsa1());
    let err = v.validate(&token).await.unwrap_err();
    assert!(matches!(err, AuthError::Unavailable(_)), "{err:?}");
    assert_eq!(err.status(), http::StatusCode::SERVICE_UNAVAILABLE);
    assert!(!err.to_string().contains(&token));
}

#[tokio::test]
async fn missing_scope_is_insufficient_scope() {
    let idp = standard_idp().await;
    let mut config = idp.config();
    config.scopes_required = vec!["mcp".into(), "tools:call".into()];
    let v = validator(config);
    let token = sign(&idp.claims(), Algorithm::RS256, Some("k1"), &rsa1());
    let err = v.validate(&token).await.unwrap_err();
    assert_eq!(
        err,
        AuthError::InsufficientScope {
            required: "mcp tools:call".into()
        }
    );
    assert_eq!(err.status(), http::StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn admin_claim_and_allowed_domains_apply() {
    let idp = standard_idp().await;
    let mut config = idp.config();
    config.admin_claim = Some(AdminClaim {
        claim: "groups".into(),
        value: "admins".into(),
    });
    config.allowed_domains = vec!["example.com".into()];
    let v = validator(config);
    let mut claims = idp.claims();
    claims["groups"] = json!(["staff", "admins"]);
    let token = sign(&claims, Algorithm::RS256, Some("k1"), &rsa1());
    assert_eq!(v.validate(&token).await.unwrap().role, Role::Admin);

    claims["email"] = json!("eve@evil.example");
    let token = sign(&claims, Algorithm::RS256, Some("k1"), &rsa1());
    assert_eq!(
        v.validate(&token).await.unwrap_err(),
        AuthError::Forbidden("email domain not allowed")
    );

    // An unverified email neither passes the domain rule nor makes an admin.
    claims["email"] = json!("alice@example.com");
    claims["email_verified"] = json!(false);
    let token = sign(&claims, Algorithm::RS256, Some("k1"), &rsa1());
    assert!(matches!(
        v.validate(&token).await,
        Err(AuthError::Forbidden(_))
    ));
}

// ---------------------------------------------------------------------------------------------
// introspection

async fn introspection_idp(answer: Value) -> (MockServer, AuthConfig) {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/introspect"))
        // client_secret_basic: base64("tessera:s3cret")
        .and(header("authorization", "Basic dGVzc2VyYTpzM2NyZXQ="))
        .and(body_string_contains("token=opaque-"))
        .and(body_string_contains("token_type_hint=access_token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(answer))
        .mount(&server)
        .await;
    let mut config = AuthConfig::oidc(server.uri(), "tessera", Url::parse(RESOURCE).unwrap());
    config.client_secret = Some(SecretString::from("s3cret"));
    config.introspection_endpoint =
        Some(Url::parse(&format!("{}/introspect", server.uri())).unwrap());
    (server, config)
}

#[tokio::test]
async fn active_opaque_token_is_introspected_once_then_cached() {
    // `iss` is optional in an introspection answer; when present it must be the issuer.
    let (server2, config) = introspection_idp(json!({
        "active": true, "sub": "bob-sub", "aud": [RESOURCE],
        "scope": "mcp", "client_id": "cursor", "exp": now() + 600,
    }))
    .await;
    let v = validator(config);
    let id = v.validate("opaque-token-1").await.unwrap();
    assert_eq!(id.user.subject, "bob-sub");
    assert_eq!(id.token_kind, TokenKind::Introspected);
    assert_eq!(id.scopes, ["mcp"]);
    assert_eq!(id.client_id.as_deref(), Some("cursor"));
    let again = v.validate("opaque-token-1").await.unwrap();
    assert!(Arc::ptr_eq(&id, &again));
    let calls = server2.received_requests().await.unwrap();
    assert_eq!(calls.len(), 1, "second use is served from the cache");
}

#[tokio::test]
async fn inactive_opaque_token_is_rejected() {
    let (_server, config) = introspection_idp(json!({"active": false})).await;
    let v = validator(config);
    assert_eq!(
        invalid(v.validate("opaque-token-2").await),
        InvalidToken::Inactive
    );
}

#[tokio::test]
async fn introspected_token_for_another_resource_is_rejected() {
    let (server, mut config) = introspection_idp(json!({
        "active": true, "sub": "s", "aud": "https://other.example.com/mcp",
    }))
    .await;
    config.issuer = server.uri();
    let v = validator(config);
    assert_eq!(
        invalid(v.validate("opaque-token-3").await),
        InvalidToken::WrongAudience
    );
}

#[tokio::test]
async fn opaque_token_without_introspection_is_rejected() {
    let idp = standard_idp().await;
    let v = validator(idp.config());
    assert_eq!(
        invalid(v.validate("some-opaque-token").await),
        InvalidToken::OpaqueNotAccepted
    );
    assert_eq!(idp.requests_to("/jwks").await, 0);
}
