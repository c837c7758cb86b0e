//! `Connector::disconnect`: RFC 7009 revocation (configured or discovered endpoint, refresh
//! token then access token, client authentication), deletion whatever revocation did, the
//! `disconnect` audit record and the `Disconnected` event. Against wiremock.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;
use tessera_broker::{Auditor, BrokeredServer, ConnectOutcome, Connector, Disconnected};
use tessera_config::{AuthBrokerConfig, BrokerMode, ClientAuth, SubjectTokenType};
use tessera_store::{
    ActivityAction, ActivityFilter, ActivityOutcome, CredentialRecord, CredentialSource, Keyring,
    Role, SealingKey, Store, UserLogin,
};
use wiremock::matchers::{body_string_contains, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const SECRET: &str = "revoke-client-secret";
const ACCESS: &str = "alice-access-token-R";
const REFRESH: &str = "alice-refresh-token-R";

async fn open_store(dir: &Path) -> Store {
    let key = SealingKey::parse(&SecretString::from(KEY), "test").unwrap();
    Store::open(dir)
        .await
        .unwrap()
        .with_keyring(Arc::new(Keyring::new(key, vec![]).unwrap()))
}

async fn user(store: &Store, subject: &str) -> String {
    store
        .upsert_user(&UserLogin {
            issuer: "https://idp.example.test",
            subject,
            email: None,
            display_name: None,
            role_if_new: Role::User,
        })
        .await
        .unwrap()
        .id
}

fn server(as_uri: &str, revocation: Option<&str>, issuer: Option<&str>) -> BrokeredServer {
    let config = AuthBrokerConfig {
        mode: BrokerMode::OauthConnect,
        token_endpoint: Some(format!("{as_uri}/token").parse().unwrap()),
        authorization_endpoint: Some(format!("{as_uri}/authorize").parse().unwrap()),
        resource: None,
        scopes: vec!["read".into()],
        client_id: Some("tessera".into()),
        client_secret: Some(SecretString::from(SECRET)),
        header: "Authorization".into(),
        header_format: "Bearer {token}".into(),
        audience: None,
        subject_token_type: SubjectTokenType::AccessToken,
        client_auth: ClientAuth::ClientSecretBasic,
        private_key_file: None,
        revocation_endpoint: revocation.map(|r| r.parse().unwrap()),
        issuer: issuer.map(|i| i.parse().unwrap()),
        allowed_users: Vec::new(),
        allowed_emails: Vec::new(),
        allowed_groups: Vec::new(),
    };
    BrokeredServer::from_parts("github", "https://gh.example.test/mcp", config).unwrap()
}

async fn store_credential(store: &Store, user_id: &str, server: &BrokeredServer) {
    store
        .put_credential(&CredentialRecord {
            user_id: user_id.to_owned(),
            server_key: server.key().to_owned(),
            access_token: SecretString::from(ACCESS),
            refresh_token: Some(SecretString::from(REFRESH)),
            expires_at: None,
            scopes: vec!["read".into()],
            token_type: "Bearer".into(),
            source: CredentialSource::Connect,
            audience: None,
        })
        .await
        .unwrap();
}

struct Fixture {
    _dir: tempfile::TempDir,
    store: Store,
    connector: Connector,
    alice: String,
    bob: String,
}

async fn fixture(server: &BrokeredServer) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path()).await;
    let alice = user(&store, "alice").await;
    let bob = user(&store, "bob").await;
    store_credential(&store, &alice, server).await;
    store_credential(&store, &bob, server).await;
    let connector = Connector::builder(
        store.clone(),
        reqwest::Client::new(),
        "http://127.0.0.1:9".parse().unwrap(),
    )
    .auditor(Auditor::spawn(store.clone(), 16))
    .timeout(Duration::from_secs(5))
    .servers([server])
    .build();
    Fixture {
        _dir: dir,
        store,
        connector,
        alice,
        bob,
    }
}

async fn audit_rows(store: &Store, user: &str) -> Vec<tessera_store::ActivityEntry> {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let rows = store
            .list_activity(&ActivityFilter {
                user_id: Some(user),
                action: Some(ActivityAction::Disconnect),
                ..ActivityFilter::default()
            })
            .await
            .unwrap();
        if !rows.is_empty() || std::time::Instant::now() > deadline {
            return rows;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn disconnect_revokes_refresh_then_access_token_and_deletes_only_the_callers_record() {
    let mock = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/revoke"))
        .respond_with(ResponseTemplate::new(200))
        .expect(2)
        .mount(&mock)
        .await;
    let server = server(&mock.uri(), Some(&format!("{}/revoke", mock.uri())), None);
    let f = fixture(&server).await;
    let mut events = f.connector.subscribe();

    let done = f
        .connector
        .disconnect(&f.alice, &server, Some("rq-1"))
        .await
        .unwrap();
    assert_eq!(
        done,
        Disconnected {
            had_credential: true,
            revoked: true,
            revocation_error: None
        }
    );
    let requests = mock.received_requests().await.unwrap();
    let bodies: Vec<String> = requests
        .iter()
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .collect();
    assert!(
        bodies[0].contains(&format!("token={REFRESH}")),
        "{bodies:?}"
    );
    assert!(bodies[0].contains("token_type_hint=refresh_token"));
    assert!(bodies[1].contains(&format!("token={ACCESS}")));
    assert!(bodies[1].contains("token_type_hint=access_token"));
    // client_secret_basic: the secret travels in the header, not the body.
    assert!(requests[0].headers.get("authorization").is_some());
    assert!(!bodies[0].contains(SECRET));

    assert!(
        f.store
            .get_credential(&f.alice, server.key())
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        f.store
            .get_credential(&f.bob, server.key())
            .await
            .unwrap()
            .is_some()
    );
    let event = events.recv().await.unwrap();
    assert_eq!(event.outcome, ConnectOutcome::Disconnected);
    assert_eq!(event.user_id, f.alice);
    let rows = audit_rows(&f.store, &f.alice).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].record.outcome, ActivityOutcome::Success);
    assert_eq!(rows[0].record.request_id.as_deref(), Some("rq-1"));

    // Again: nothing stored, nothing revoked, nothing announced.
    let again = f
        .connector
        .disconnect(&f.alice, &server, None)
        .await
        .unwrap();
    assert!(!again.had_credential && !again.revoked && again.revocation_error.is_none());
    assert_eq!(mock.received_requests().await.unwrap().len(), 2);
}

#[tokio::test]
async fn a_failed_revocation_is_reported_and_audited_but_the_record_is_gone() {
    let mock = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/revoke"))
        .respond_with(ResponseTemplate::new(401).set_body_string(format!(
            "{{\"error\":\"invalid_client\",\"token\":\"{ACCESS}\"}}"
        )))
        .mount(&mock)
        .await;
    let server = server(&mock.uri(), Some(&format!("{}/revoke", mock.uri())), None);
    let f = fixture(&server).await;
    let done = f
        .connector
        .disconnect(&f.alice, &server, None)
        .await
        .unwrap();
    assert!(done.had_credential);
    assert!(!done.revoked);
    assert_eq!(done.revocation_error, Some("invalid_client"));
    assert!(
        f.store
            .get_credential(&f.alice, server.key())
            .await
            .unwrap()
            .is_none()
    );
    let rows = audit_rows(&f.store, &f.alice).await;
    assert_eq!(rows[0].record.outcome, ActivityOutcome::Failure);
    let reason = rows[0].record.reason.clone().unwrap();
    assert_eq!(reason, "revocation failed: invalid_client");
    assert!(!format!("{done:?}{reason}").contains(ACCESS));
}

#[tokio::test]
async fn the_revocation_endpoint_is_discovered_from_the_issuer() {
    let mock = MockServer::start().await;
    let issuer = mock.uri();
    Mock::given(method("GET"))
        .and(path("/.well-known/oauth-authorization-server"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "issuer": issuer,
            "token_endpoint": format!("{issuer}/token"),
            "revocation_endpoint": format!("{issuer}/oauth/revoke"),
        })))
        .mount(&mock)
        .await;
    Mock::given(method("POST"))
        .and(path("/oauth/revoke"))
        .and(body_string_contains("token_type_hint"))
        .respond_with(ResponseTemplate::new(200).set_body_string("{}"))
        .expect(2)
        .mount(&mock)
        .await;
    let server = server(&mock.uri(), None, Some(&issuer));
    let f = fixture(&server).await;
    let done = f
        .connector
        .disconnect(&f.alice, &server, None)
        .await
        .unwrap();
    assert!(done.revoked, "{done:?}");
}

#[tokio::test]
async fn without_any_revocation_endpoint_the_record_is_still_deleted() {
    let server = server("http://127.0.0.1:9", None, None);
    let f = fixture(&server).await;
    let done = f
        .connector
        .disconnect(&f.alice, &server, None)
        .await
        .unwrap();
    assert_eq!(done.revocation_error, Some("no_revocation_endpoint"));
    assert!(
        f.store
            .get_credential(&f.alice, server.key())
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn a_jwt_access_token_the_server_cannot_revoke_counts_once_the_grant_is_revoked() {
    let mock = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/revoke"))
        .and(body_string_contains("token_type_hint=refresh_token"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&mock)
        .await;
    Mock::given(method("POST"))
        .and(path("/revoke"))
        .and(body_string_contains("token_type_hint=access_token"))
        .respond_with(
            ResponseTemplate::new(400)
                .set_body_json(serde_json::json!({"error": "unsupported_token_type"})),
        )
        .mount(&mock)
        .await;
    let server = server(&mock.uri(), Some(&format!("{}/revoke", mock.uri())), None);
    let f = fixture(&server).await;
    let done = f
        .connector
        .disconnect(&f.alice, &server, None)
        .await
        .unwrap();
    assert!(done.revoked, "{done:?}");
    assert_eq!(tessera_broker::revocation_code("<script>"), "server_error");
    assert_eq!(
        tessera_broker::revocation_code("unsupported_token_type"),
        "unsupported_token_type"
    );
}
