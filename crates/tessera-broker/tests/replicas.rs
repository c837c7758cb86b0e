//! Two replicas on one PostgreSQL database (a throwaway cluster, `tessera_store::test_pg`): each
//! has its own `Store` (own pools), connector and resolver, as two processes would. Refresh and
//! exchange of one (user, server) happen once across both, under the store's advisory lock.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use secrecy::{ExposeSecret as _, SecretString};
use tessera_broker::{
    BrokeredServer, Connector, CredentialSource, CredentialStore, Requester, Resolver,
    StoreCredentials, StoredCredential, SubjectTokenError, SubjectTokenSource, TokenExchanger,
};
use tessera_config::{AuthBrokerConfig, BrokerMode, ClientAuth, SubjectTokenType};
use tessera_store::{Keyring, Role, SealingKey, Store, UserLogin};
use tessera_test_pg::Cluster;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

struct NoSubjects;

impl SubjectTokenSource for NoSubjects {
    fn subject_token<'a>(
        &'a self,
        _user: &'a str,
        _kind: SubjectTokenType,
    ) -> BoxFuture<'a, Result<SecretString, SubjectTokenError>> {
        Box::pin(async { Err(SubjectTokenError::Unavailable) })
    }
}

fn server(as_uri: &str, mode: BrokerMode) -> BrokeredServer {
    let config = AuthBrokerConfig {
        mode,
        token_endpoint: Some(format!("{as_uri}/token").parse().unwrap()),
        authorization_endpoint: Some(format!("{as_uri}/authorize").parse().unwrap()),
        resource: None,
        scopes: vec!["read".into()],
        client_id: Some("tessera".into()),
        client_secret: Some(SecretString::from("s3cret")),
        header: "Authorization".into(),
        header_format: "Bearer {token}".into(),
        audience: None,
        subject_token_type: SubjectTokenType::AccessToken,
        client_auth: ClientAuth::ClientSecretPost,
        private_key_file: None,
        revocation_endpoint: None,
        issuer: None,
        allowed_users: Vec::new(),
        allowed_emails: Vec::new(),
        allowed_groups: Vec::new(),
    };
    BrokeredServer::from_parts("github", "https://gh.example.test/mcp", config).unwrap()
}

/// One replica: its own store handle on the shared database, connector and resolver.
struct Replica {
    store: Store,
    connector: Arc<Connector>,
    resolver: Resolver,
}

async fn replica(url: &str, server: &BrokeredServer) -> Replica {
    let key = SealingKey::parse(&SecretString::from(KEY), "test").unwrap();
    let store = Store::connect(url)
        .await
        .unwrap()
        .with_keyring(Arc::new(Keyring::new(key, vec![]).unwrap()));
    let http = reqwest::Client::new();
    let connector = Arc::new(
        Connector::builder(
            store.clone(),
            http.clone(),
            "https://tessera.example.test".parse().unwrap(),
        )
        .servers([server])
        .build(),
    );
    let resolver = Resolver::builder(
        TokenExchanger::new(http),
        Arc::new(StoreCredentials::new(store.clone())),
        Arc::new(NoSubjects),
    )
    .connector(connector.clone())
    .acquire_timeout(Duration::from_secs(20))
    .build();
    Replica {
        store,
        connector,
        resolver,
    }
}

struct Setup {
    _cluster: Arc<Cluster>,
    mock: MockServer,
    server: BrokeredServer,
    a: Replica,
    b: Replica,
    user_id: String,
}

/// Two replicas, one user, and the token endpoint answering every request (slowly, so that
/// every caller arrives while the first refresh is still out) with `access-2` / `refresh-2`.
async fn setup(mode: BrokerMode) -> Setup {
    let cluster = tokio::task::spawn_blocking(Cluster::shared).await.unwrap();
    let url = cluster.database().await;
    let mock = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({
                    "access_token": "access-2",
                    "refresh_token": "refresh-2",
                    "token_type": "Bearer",
                    "expires_in": 3600,
                }))
                .set_delay(Duration::from_millis(400)),
        )
        .mount(&mock)
        .await;
    let server = server(&mock.uri(), mode);
    let a = replica(&url, &server).await;
    let b = replica(&url, &server).await;
    let user_id = a
        .store
        .upsert_user(&UserLogin {
            issuer: "https://idp.example.test",
            subject: "alice",
            email: Some("alice@example.test"),
            display_name: None,
            role_if_new: Role::User,
        })
        .await
        .unwrap()
        .id;
    Setup {
        _cluster: cluster,
        mock,
        server,
        a,
        b,
        user_id,
    }
}

fn credential(access: &str, refresh: Option<&str>, expires_in: Duration) -> StoredCredential {
    StoredCredential {
        access_token: SecretString::from(access.to_owned()),
        refresh_token: refresh.map(|r| SecretString::from(r.to_owned())),
        token_type: "Bearer".into(),
        expires_at: Some(SystemTime::now() + expires_in),
        scopes: vec!["read".into()],
        source: CredentialSource::Connect,
        obtained_at: SystemTime::now(),
        audience: None,
    }
}

async fn token_requests(mock: &MockServer) -> Vec<String> {
    mock.received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .collect()
}

/// 25 concurrent resolves on each replica; every one must get `access-2`.
async fn fifty_concurrent_resolves(s: &Setup, subject: Option<&SecretString>) {
    let mut calls = Vec::new();
    for replica in [&s.a, &s.b] {
        for _ in 0..25 {
            let resolver = replica.resolver.clone();
            let server = s.server.clone();
            let user = s.user_id.clone();
            let subject = subject.cloned();
            calls.push(tokio::spawn(async move {
                let who = Requester {
                    subject_token: subject.as_ref(),
                    ..Requester::new(&user)
                };
                resolver.resolve(&who, &server).await
            }));
        }
    }
    for call in futures::future::join_all(calls).await {
        let resolved = call.unwrap().expect("every caller gets a credential");
        assert_eq!(resolved.header_value.to_str().unwrap(), "Bearer access-2");
    }
}

#[tokio::test]
async fn two_replicas_refresh_a_rotating_refresh_token_once() {
    let s = setup(BrokerMode::OauthConnect).await;
    // Stored on A: expires within the refresh margin, so every resolve needs a refresh.
    StoreCredentials::new(s.a.store.clone())
        .save(
            &s.user_id,
            s.server.key(),
            &credential("access-1", Some("refresh-1"), Duration::from_secs(10)),
        )
        .await
        .unwrap();

    fifty_concurrent_resolves(&s, None).await;

    let requests = token_requests(&s.mock).await;
    assert_eq!(
        requests.len(),
        1,
        "one refresh at the provider: {requests:?}"
    );
    assert!(requests[0].contains("grant_type=refresh_token"));
    assert!(requests[0].contains("refresh_token=refresh-1"));
    // Both replicas' stores see the rotated refresh token.
    let stored = StoreCredentials::new(s.b.store.clone())
        .load(&s.user_id, s.server.key())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.access_token.expose_secret(), "access-2");
    assert_eq!(
        stored.refresh_token.as_ref().unwrap().expose_secret(),
        "refresh-2"
    );
}

#[tokio::test]
async fn two_replicas_exchange_once() {
    let s = setup(BrokerMode::TokenExchange).await;
    let subject = SecretString::from("alice-idp-token");
    fifty_concurrent_resolves(&s, Some(&subject)).await;
    let requests = token_requests(&s.mock).await;
    assert_eq!(requests.len(), 1, "one exchange: {requests:?}");
    assert!(requests[0].contains("token-exchange"));
}

#[tokio::test]
async fn a_replica_told_401_uses_the_token_the_other_replica_already_refreshed() {
    let s = setup(BrokerMode::OauthConnect).await;
    StoreCredentials::new(s.a.store.clone())
        .save(
            &s.user_id,
            s.server.key(),
            &credential("access-1", Some("refresh-1"), Duration::from_secs(3600)),
        )
        .await
        .unwrap();
    let who = Requester::new(&s.user_id);
    // Both replicas cache access-1.
    let on_a = s.a.resolver.resolve(&who, &s.server).await.unwrap();
    let on_b = s.b.resolver.resolve(&who, &s.server).await.unwrap();
    assert_eq!(on_a.header_value, on_b.header_value);
    let rejected = on_a.header_value.clone();
    assert!(token_requests(&s.mock).await.is_empty());

    // The upstream refuses access-1 on A, then on B: only A refreshes; B finds access-2 stored.
    let after_a = s.a.resolver.reacquire(&who, &s.server, &rejected).await;
    let after_b = s.b.resolver.reacquire(&who, &s.server, &rejected).await;
    assert_eq!(
        after_a.unwrap().header_value.to_str().unwrap(),
        "Bearer access-2"
    );
    assert_eq!(
        after_b.unwrap().header_value.to_str().unwrap(),
        "Bearer access-2"
    );
    let requests = token_requests(&s.mock).await;
    assert_eq!(requests.len(), 1, "{requests:?}");

    // Told 401 for access-2 as well, B refreshes (the stored token is the rejected one).
    let rejected = s.b.resolver.cached(&s.user_id, &s.server).unwrap();
    let again =
        s.b.resolver
            .reacquire(&who, &s.server, &rejected.header_value)
            .await;
    assert!(again.is_ok());
    let requests = token_requests(&s.mock).await;
    assert_eq!(requests.len(), 2);
    assert!(requests[1].contains("refresh_token=refresh-2"));
}

#[tokio::test]
async fn concurrent_refreshes_of_different_users_do_not_wait_for_each_other() {
    let s = setup(BrokerMode::OauthConnect).await;
    let bob =
        s.a.store
            .upsert_user(&UserLogin {
                issuer: "https://idp.example.test",
                subject: "bob",
                email: None,
                display_name: None,
                role_if_new: Role::User,
            })
            .await
            .unwrap()
            .id;
    for user in [&s.user_id, &bob] {
        StoreCredentials::new(s.a.store.clone())
            .save(
                user,
                s.server.key(),
                &credential("access-1", Some("refresh-1"), Duration::from_secs(10)),
            )
            .await
            .unwrap();
    }
    let started = std::time::Instant::now();
    let alice = Requester::new(&s.user_id);
    let bob_who = Requester::new(&bob);
    let (x, y) = tokio::join!(
        s.a.resolver.resolve(&alice, &s.server),
        s.b.resolver.resolve(&bob_who, &s.server)
    );
    assert!(x.is_ok() && y.is_ok());
    assert_eq!(token_requests(&s.mock).await.len(), 2);
    // Each refresh takes 400 ms at the provider; serialized they would take 800 ms.
    assert!(
        started.elapsed() < Duration::from_millis(780),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_disconnect_seen_after_the_wait_is_not_refreshed() {
    let s = setup(BrokerMode::OauthConnect).await;
    StoreCredentials::new(s.a.store.clone())
        .save(
            &s.user_id,
            s.server.key(),
            &credential("access-1", Some("refresh-1"), Duration::from_secs(10)),
        )
        .await
        .unwrap();
    // B holds the lock (as if refreshing) while the user disconnects; A waits, then reads the
    // store again and finds nothing to refresh.
    let held =
        s.b.store
            .lock(
                tessera_store::RefreshLock::Broker {
                    user_id: &s.user_id,
                    server_key: s.server.key(),
                },
                Duration::from_secs(5),
            )
            .await
            .unwrap();
    let resolve = {
        let (resolver, server, user) = (s.a.resolver.clone(), s.server.clone(), s.user_id.clone());
        tokio::spawn(async move { resolver.resolve(&Requester::new(&user), &server).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!resolve.is_finished(), "A waits for B's lock");
    s.b.store
        .delete_credential(&s.user_id, s.server.key())
        .await
        .unwrap();
    held.release().await;
    let result = resolve.await.unwrap();
    assert!(
        matches!(
            result,
            Err(tessera_broker::BrokerError::NotConnected { .. })
        ),
        "{result:?}"
    );
    assert!(token_requests(&s.mock).await.is_empty());
}

#[tokio::test]
async fn a_disconnect_on_one_replica_is_published_to_the_others() {
    let s = setup(BrokerMode::OauthConnect).await;
    StoreCredentials::new(s.a.store.clone())
        .save(
            &s.user_id,
            s.server.key(),
            &credential("access-1", Some("refresh-1"), Duration::from_secs(3600)),
        )
        .await
        .unwrap();
    let who = Requester::new(&s.user_id);
    // B serves the credential from its cache.
    s.b.resolver.resolve(&who, &s.server).await.unwrap();
    assert!(s.b.resolver.cached(&s.user_id, &s.server).is_some());
    let mut changes = s.b.store.subscribe().await.unwrap();

    let done = s.a.connector.disconnect(&s.user_id, &s.server, None).await;
    assert!(done.unwrap().had_credential);

    let change = tokio::time::timeout(Duration::from_secs(10), changes.recv())
        .await
        .expect("A's change within 10 s")
        .unwrap();
    assert_eq!(
        change,
        tessera_store::Change::Credential {
            user_id: s.user_id.clone(),
            server: "github".into(),
            server_key: s.server.key().to_owned(),
            connected: false,
        }
    );
    // What the binary does with it on B: drop the cached credential; the next call asks to
    // connect.
    s.b.resolver.forget_user_server(&s.user_id, s.server.key());
    let result = s.b.resolver.resolve(&who, &s.server).await;
    assert!(
        matches!(
            result,
            Err(tessera_broker::BrokerError::NotConnected { .. })
        ),
        "{result:?}"
    );
}

#[tokio::test]
async fn a_connect_started_on_one_replica_and_finished_on_another_is_published() {
    let s = setup(BrokerMode::OauthConnect).await;
    let who = Requester::new(&s.user_id);
    // A answers "connect first" (nothing stored).
    assert!(matches!(
        s.a.resolver.resolve(&who, &s.server).await,
        Err(tessera_broker::BrokerError::NotConnected { .. })
    ));
    let mut changes = s.a.store.subscribe().await.unwrap();
    let url = s.a.connector.start(&s.user_id, &s.server).await.unwrap();
    let state = url
        .query_pairs()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned())
        .unwrap();

    // The provider redirects the browser to B.
    s.b.connector
        .complete(&state, "the-code", &s.user_id)
        .await
        .unwrap();

    let change = tokio::time::timeout(Duration::from_secs(10), changes.recv())
        .await
        .expect("B's change within 10 s")
        .unwrap();
    assert_eq!(
        change,
        tessera_store::Change::Credential {
            user_id: s.user_id.clone(),
            server: "github".into(),
            server_key: s.server.key().to_owned(),
            connected: true,
        }
    );
    let got = s.a.resolver.resolve(&who, &s.server).await.unwrap();
    assert_eq!(got.header_value.to_str().unwrap(), "Bearer access-2");
}
