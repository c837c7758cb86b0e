//! Exchanger against wiremock: request shape, client authentication and every error path.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use tessera_broker::{BrokerError, CredentialSource, OAuthErrorCode, TokenExchanger};
use tessera_config::{AuthBrokerConfig, BrokerMode, ClientAuth, SubjectTokenType};
use wiremock::matchers::{body_string_contains, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const SUBJECT: &str = "subject-token-of-alice-SECRET";
const LEAK: &str = "LEAKED-secret-value-12345";

fn config(server: &MockServer, mode: BrokerMode, auth: ClientAuth) -> AuthBrokerConfig {
    AuthBrokerConfig {
        mode,
        token_endpoint: Some(format!("{}/token", server.uri()).parse().unwrap()),
        authorization_endpoint: None,
        resource: Some("https://upstream.example/mcp".into()),
        scopes: vec!["read".into(), "write".into()],
        client_id: Some("tessera gw".into()),
        client_secret: Some(SecretString::from("s3cret&=:")),
        header: "Authorization".into(),
        header_format: "Bearer {token}".into(),
        audience: Some("upstream-api".into()),
        subject_token_type: SubjectTokenType::AccessToken,
        client_auth: auth,
        private_key_file: None,
        revocation_endpoint: None,
        issuer: None,
        allowed_users: Vec::new(),
        allowed_emails: Vec::new(),
        allowed_groups: Vec::new(),
    }
}

fn exchanger() -> TokenExchanger {
    TokenExchanger::new(reqwest::Client::new())
}

fn subject() -> SecretString {
    SecretString::from(SUBJECT)
}

async fn refused(template: ResponseTemplate) -> BrokerError {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(template)
        .mount(&server)
        .await;
    let cfg = config(
        &server,
        BrokerMode::TokenExchange,
        ClientAuth::ClientSecretPost,
    );
    exchanger()
        .exchange("up", &cfg, &subject())
        .await
        .unwrap_err()
}

fn assert_no_secret(err: &BrokerError) {
    for text in [err.to_string(), format!("{err:?}")] {
        assert!(!text.contains(LEAK), "{text}");
        assert!(!text.contains(SUBJECT), "{text}");
        assert!(!text.contains("s3cret"), "{text}");
    }
}

#[tokio::test]
async fn rfc8693_request_carries_every_parameter_and_post_client_auth() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .and(header("content-type", "application/x-www-form-urlencoded"))
        .and(header("accept", "application/json"))
        .and(body_string_contains(
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange",
        ))
        .and(body_string_contains(format!("subject_token={SUBJECT}")))
        .and(body_string_contains(
            "subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aaccess_token",
        ))
        .and(body_string_contains(
            "requested_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aaccess_token",
        ))
        .and(body_string_contains("audience=upstream-api"))
        .and(body_string_contains(
            "resource=https%3A%2F%2Fupstream.example%2Fmcp",
        ))
        .and(body_string_contains("scope=read+write"))
        .and(body_string_contains("client_id=tessera+gw"))
        .and(body_string_contains("client_secret=s3cret%26%3D%3A"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "access_token": "up-token", "token_type": "Bearer", "expires_in": 3600,
            "issued_token_type": "urn:ietf:params:oauth:token-type:access_token"
        })))
        .expect(1)
        .mount(&server)
        .await;
    let cfg = config(
        &server,
        BrokerMode::TokenExchange,
        ClientAuth::ClientSecretPost,
    );
    let issued = exchanger().exchange("up", &cfg, &subject()).await.unwrap();
    assert_eq!(issued.access_token.expose_secret(), "up-token");
    assert_eq!(issued.token_type, "Bearer");
    assert_eq!(issued.scopes, ["read", "write"]);
    assert_eq!(issued.source, CredentialSource::Exchange);
    let left = issued
        .expires_at
        .unwrap()
        .duration_since(std::time::SystemTime::now())
        .unwrap();
    assert!(left > Duration::from_secs(3590) && left <= Duration::from_secs(3600));
    assert!(!format!("{issued:?}").contains("up-token"));
}

#[tokio::test]
async fn id_token_subject_type_is_sent_when_configured() {
    let server = MockServer::start().await;
    Mock::given(body_string_contains(
        "subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aid_token",
    ))
    .respond_with(
        ResponseTemplate::new(200).set_body_json(serde_json::json!({"access_token": "t"})),
    )
    .expect(1)
    .mount(&server)
    .await;
    let mut cfg = config(
        &server,
        BrokerMode::TokenExchange,
        ClientAuth::ClientSecretPost,
    );
    cfg.subject_token_type = SubjectTokenType::IdToken;
    exchanger().exchange("up", &cfg, &subject()).await.unwrap();
}

#[tokio::test]
async fn entra_obo_sends_jwt_bearer_assertion_with_basic_client_auth() {
    use base64::Engine as _;
    let server = MockServer::start().await;
    // RFC 6749 §2.3.1: form-urlencode id and secret, then Basic.
    let basic = base64::engine::general_purpose::STANDARD.encode("tessera+gw:s3cret%26%3D%3A");
    Mock::given(method("POST"))
        .and(header("authorization", format!("Basic {basic}").as_str()))
        .and(body_string_contains("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer"))
        .and(body_string_contains(format!("assertion={SUBJECT}")))
        .and(body_string_contains("requested_token_use=on_behalf_of"))
        .and(body_string_contains("scope=api%3A%2F%2Fupstream%2F.default"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "access_token": "obo-token", "token_type": "Bearer", "expires_in": "1800", "scope": "files.read"
        })))
        .expect(1)
        .mount(&server)
        .await;
    let mut cfg = config(&server, BrokerMode::EntraObo, ClientAuth::ClientSecretBasic);
    cfg.scopes = vec!["api://upstream/.default".into()];
    let issued = exchanger().exchange("up", &cfg, &subject()).await.unwrap();
    assert_eq!(issued.access_token.expose_secret(), "obo-token");
    assert_eq!(issued.source, CredentialSource::Obo);
    assert_eq!(issued.scopes, ["files.read"]);
    assert!(issued.expires_at.is_some());
    let requests = server.received_requests().await.unwrap();
    let body = String::from_utf8_lossy(&requests[0].body);
    assert!(
        !body.contains("client_secret"),
        "basic auth must not also post the secret"
    );
    assert!(
        !body.contains("subject_token="),
        "OBO sends no subject_token"
    );
}

#[tokio::test]
async fn server_error_500_is_reduced_to_server_error() {
    let err = refused(ResponseTemplate::new(500).set_body_string(format!("boom {LEAK}"))).await;
    assert_eq!(
        err,
        BrokerError::Rejected {
            status: 500,
            code: OAuthErrorCode::ServerError
        }
    );
    assert_no_secret(&err);
}

#[tokio::test]
async fn invalid_grant_surfaces_code_without_description() {
    let err = refused(ResponseTemplate::new(400).set_body_json(serde_json::json!({
        "error": "invalid_grant", "error_description": format!("subject {SUBJECT} rejected {LEAK}")
    })))
    .await;
    assert_eq!(
        err,
        BrokerError::Rejected {
            status: 400,
            code: OAuthErrorCode::InvalidGrant
        }
    );
    assert!(err.to_string().contains("invalid_grant"));
    assert_no_secret(&err);
}

#[tokio::test]
async fn unknown_error_code_is_not_echoed() {
    let err =
        refused(ResponseTemplate::new(400).set_body_json(serde_json::json!({"error": LEAK}))).await;
    assert_eq!(
        err,
        BrokerError::Rejected {
            status: 400,
            code: OAuthErrorCode::ServerError
        }
    );
    assert_no_secret(&err);
}

#[tokio::test]
async fn non_200_success_status_with_token_is_refused() {
    let err = refused(
        ResponseTemplate::new(201).set_body_json(serde_json::json!({"access_token": LEAK})),
    )
    .await;
    assert!(
        matches!(err, BrokerError::Rejected { status: 201, .. }),
        "{err:?}"
    );
    assert_no_secret(&err);
}

#[tokio::test]
async fn malformed_json_is_an_error() {
    let err =
        refused(ResponseTemplate::new(200).set_body_string(format!("{{not json {LEAK}"))).await;
    assert_eq!(err, BrokerError::MalformedResponse { status: 200 });
    assert_no_secret(&err);
}

#[tokio::test]
async fn missing_access_token_is_an_error() {
    let err = refused(
        ResponseTemplate::new(200).set_body_json(serde_json::json!({"token_type": "Bearer"})),
    )
    .await;
    assert_eq!(err, BrokerError::MissingAccessToken);
    let err =
        refused(ResponseTemplate::new(200).set_body_json(serde_json::json!({"access_token": ""})))
            .await;
    assert_eq!(err, BrokerError::MissingAccessToken);
}

#[tokio::test]
async fn oversized_body_is_refused() {
    let big = "x".repeat(tessera_broker::MAX_RESPONSE_BYTES + 10);
    let err = refused(
        ResponseTemplate::new(200).set_body_string(format!("{{\"access_token\":\"{big}\"}}")),
    )
    .await;
    assert_eq!(err, BrokerError::MalformedResponse { status: 200 });
}

#[tokio::test]
async fn slow_token_endpoint_times_out() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({"access_token": "late"}))
                .set_delay(Duration::from_secs(5)),
        )
        .mount(&server)
        .await;
    let cfg = config(
        &server,
        BrokerMode::TokenExchange,
        ClientAuth::ClientSecretPost,
    );
    let started = std::time::Instant::now();
    let err = exchanger()
        .with_timeout(Duration::from_millis(200))
        .exchange("up", &cfg, &subject())
        .await
        .unwrap_err();
    assert_eq!(err, BrokerError::Timeout);
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn unreachable_endpoint_is_an_error() {
    let server = MockServer::start().await;
    let mut cfg = config(
        &server,
        BrokerMode::TokenExchange,
        ClientAuth::ClientSecretPost,
    );
    // A port nobody listens on.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    cfg.token_endpoint = Some(format!("http://127.0.0.1:{port}/token").parse().unwrap());
    let err = exchanger()
        .exchange("up", &cfg, &subject())
        .await
        .unwrap_err();
    assert!(
        matches!(err, BrokerError::Unreachable | BrokerError::Timeout),
        "{err:?}"
    );
}

#[tokio::test]
async fn private_key_jwt_without_a_key_file_is_refused_before_any_request() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .expect(0)
        .mount(&server)
        .await;
    let mut cfg = config(
        &server,
        BrokerMode::TokenExchange,
        ClientAuth::PrivateKeyJwt,
    );
    cfg.private_key_file = None;
    let err = exchanger()
        .exchange("up", &cfg, &subject())
        .await
        .unwrap_err();
    assert_eq!(err, BrokerError::MissingField("private_key_file"));
    cfg.private_key_file = Some(keys().join("README.md"));
    let err = exchanger()
        .exchange("up", &cfg, &subject())
        .await
        .unwrap_err();
    assert_eq!(err, BrokerError::InvalidField("private_key_file"));
}

fn keys() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/keys")
}

/// RFC 7523: the assertion is signed with the configured key (ES256 for an EC key, RS256 for
/// RSA), `iss` = `sub` = client id, `aud` = the token endpoint, a fresh `jti`, 60 s lifetime;
/// no client secret is sent.
#[tokio::test]
async fn private_key_jwt_sends_a_signed_client_assertion() {
    use jsonwebtoken::{Algorithm, DecodingKey, Validation};
    for (key, public, alg) in [
        ("ec.pem", "ec.pub.pem", Algorithm::ES256),
        ("rsa.pem", "rsa.pub.pem", Algorithm::RS256),
    ] {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(200).set_body_json(
                serde_json::json!({"access_token": "upstream-token", "expires_in": 60}),
            ))
            .expect(2)
            .mount(&server)
            .await;
        let mut cfg = config(&server, BrokerMode::EntraObo, ClientAuth::PrivateKeyJwt);
        cfg.client_secret = None;
        cfg.private_key_file = Some(keys().join(key));
        let ex = exchanger();
        ex.exchange("up", &cfg, &subject()).await.unwrap();
        ex.exchange("up", &cfg, &subject()).await.unwrap();
        let requests = server.received_requests().await.unwrap();
        let mut jtis = Vec::new();
        for r in &requests {
            let form: std::collections::HashMap<String, String> =
                url::form_urlencoded::parse(&r.body).into_owned().collect();
            assert_eq!(
                form["client_assertion_type"],
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
            );
            assert!(!form.contains_key("client_secret"));
            assert!(!r.headers.contains_key("authorization"));
            let pem = std::fs::read(keys().join(public)).unwrap();
            let decoding = match alg {
                Algorithm::ES256 => DecodingKey::from_ec_pem(&pem).unwrap(),
                _ => DecodingKey::from_rsa_pem(&pem).unwrap(),
            };
            let endpoint = format!("{}/token", server.uri());
            let mut v = Validation::new(alg);
            v.set_audience(&[endpoint.as_str()]);
            v.set_issuer(&[cfg.client_id.as_deref().unwrap()]);
            let data =
                jsonwebtoken::decode::<serde_json::Value>(&form["client_assertion"], &decoding, &v)
                    .unwrap_or_else(|e| panic!("{key}: {e}"));
            let c = data.claims;
            assert_eq!(data.header.alg, alg);
            assert_eq!(c["sub"], c["iss"]);
            let (iat, exp) = (c["iat"].as_u64().unwrap(), c["exp"].as_u64().unwrap());
            assert_eq!(exp - iat, 60);
            jtis.push(c["jti"].as_str().unwrap().to_owned());
        }
        assert_ne!(jtis[0], jtis[1], "jti is fresh per assertion");
    }
}

/// An explicitly configured token endpoint never waits for the issuer's metadata.
#[tokio::test]
async fn explicit_token_endpoint_skips_discovery() {
    let issuer = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(500))
        .expect(2)
        .mount(&issuer)
        .await;
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({"access_token": "upstream-token"})),
        )
        .expect(1)
        .mount(&server)
        .await;
    let mut cfg = config(
        &server,
        BrokerMode::TokenExchange,
        ClientAuth::ClientSecretPost,
    );
    cfg.issuer = Some(issuer.uri().parse().unwrap());
    exchanger().exchange("up", &cfg, &subject()).await.unwrap();
    // Without the token endpoint, the broken issuer is a discovery error naming it.
    cfg.token_endpoint = None;
    let err = exchanger()
        .exchange("up", &cfg, &subject())
        .await
        .unwrap_err();
    assert!(matches!(err, BrokerError::Discovery { .. }), "{err:?}");
}
