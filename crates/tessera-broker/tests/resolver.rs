//! Resolver against wiremock: cache, store, single flight, failures, isolation.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use secrecy::SecretString;
use tessera_broker::{
    BrokerError, BrokeredServer, CredentialSource, MemoryCredentialStore, OAuthErrorCode, Resolver,
    StoredCredential, SubjectTokenError, SubjectTokenSource, TokenExchanger,
};
use tessera_config::{
    AuthBrokerConfig, BrokerMode, ClientAuth, ServerConfig, SubjectTokenType, Transport,
};
use wiremock::matchers::{body_string_contains, method};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// Subject tokens `subject-<user>`; `carol` must sign in again; counts calls.
#[derive(Default)]
struct Subjects {
    calls: AtomicUsize,
}

impl SubjectTokenSource for Subjects {
    fn subject_token<'a>(
        &'a self,
        user: &'a str,
        _kind: SubjectTokenType,
    ) -> BoxFuture<'a, Result<SecretString, SubjectTokenError>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            if user == "carol" {
                Err(SubjectTokenError::SignInAgain)
            } else {
                Ok(SecretString::from(format!("subject-{user}")))
            }
        })
    }
}

fn broker_config(endpoint: &str, mode: BrokerMode) -> AuthBrokerConfig {
    AuthBrokerConfig {
        mode,
        token_endpoint: Some(format!("{endpoint}/token").parse().unwrap()),
        authorization_endpoint: None,
        resource: Some("https://upstream.example/mcp".into()),
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
    }
}

struct Fixture {
    mock: MockServer,
    store: Arc<MemoryCredentialStore>,
    subjects: Arc<Subjects>,
    resolver: Resolver,
    server: BrokeredServer,
}

async fn fixture_with(mode: BrokerMode, acquire_timeout: Duration) -> Fixture {
    let mock = MockServer::start().await;
    let store = Arc::new(MemoryCredentialStore::new());
    let subjects = Arc::new(Subjects::default());
    let resolver = Resolver::builder(
        TokenExchanger::new(reqwest::Client::new()),
        store.clone(),
        subjects.clone(),
    )
    .acquire_timeout(acquire_timeout)
    .build();
    let server = BrokeredServer::from_parts(
        "files",
        "https://upstream.example/mcp",
        broker_config(&mock.uri(), mode),
    )
    .unwrap();
    Fixture {
        mock,
        store,
        subjects,
        resolver,
        server,
    }
}

async fn fixture() -> Fixture {
    fixture_with(BrokerMode::TokenExchange, Duration::from_secs(10)).await
}

/// Answers `token-for-<user>` to `subject-<user>`.
async fn mount_per_user_tokens(mock: &MockServer, users: &[&str], delay: Duration) {
    for user in users {
        Mock::given(method("POST"))
            .and(body_string_contains(format!("subject_token=subject-{user}&")))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(serde_json::json!({"access_token": format!("token-for-{user}"), "expires_in": 3600}))
                    .set_delay(delay),
            )
            .mount(mock)
            .await;
    }
}

fn stored(token: &str, expires_in: Duration) -> StoredCredential {
    StoredCredential {
        access_token: SecretString::from(token.to_owned()),
        refresh_token: None,
        token_type: "Bearer".into(),
        expires_at: Some(SystemTime::now() + expires_in),
        scopes: vec![],
        source: CredentialSource::Exchange,
        obtained_at: SystemTime::now(),
        audience: None,
    }
}

fn value(c: &tessera_broker::ResolvedCredential) -> &str {
    c.header_value.to_str().unwrap()
}

async fn token_requests(mock: &MockServer) -> usize {
    mock.received_requests().await.unwrap().len()
}

#[tokio::test]
async fn no_cache_exchanges_once_stores_and_then_hits_memory_without_storage() {
    let f = fixture().await;
    mount_per_user_tokens(&f.mock, &["alice"], Duration::ZERO).await;
    let first = f
        .resolver
        .resolve(&tessera_broker::Requester::new("alice"), &f.server)
        .await
        .unwrap();
    assert_eq!(first.header_name, "authorization");
    assert_eq!(value(&first), "Bearer token-for-alice");
    assert!(first.header_value.is_sensitive());
    assert_eq!(token_requests(&f.mock).await, 1);
    assert_eq!((f.store.loads(), f.store.saves()), (1, 1));
    let record = f.store.get("alice", f.server.key()).unwrap();
    assert_eq!(record.source, CredentialSource::Exchange);

    for _ in 0..10 {
        let again = f
            .resolver
            .resolve(&tessera_broker::Requester::new("alice"), &f.server)
            .await
            .unwrap();
        assert!(Arc::ptr_eq(&first, &again));
    }
    assert_eq!(token_requests(&f.mock).await, 1);
    assert_eq!(
        (f.store.loads(), f.store.saves()),
        (1, 1),
        "a cache hit touches no storage"
    );
}

#[tokio::test]
async fn valid_stored_credential_is_used_without_exchange() {
    let f = fixture().await;
    f.store.insert(
        "alice",
        f.server.key(),
        stored("stored-token", Duration::from_secs(600)),
    );
    let got = f
        .resolver
        .resolve(&tessera_broker::Requester::new("alice"), &f.server)
        .await
        .unwrap();
    assert_eq!(value(&got), "Bearer stored-token");
    assert_eq!(token_requests(&f.mock).await, 0);
    assert_eq!(f.subjects.calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn near_expiry_stored_credential_is_exchanged_again() {
    let f = fixture().await;
    mount_per_user_tokens(&f.mock, &["alice"], Duration::ZERO).await;
    f.store.insert(
        "alice",
        f.server.key(),
        stored("nearly-expired", Duration::from_secs(10)),
    );
    let got = f
        .resolver
        .resolve(&tessera_broker::Requester::new("alice"), &f.server)
        .await
        .unwrap();
    assert_eq!(value(&got), "Bearer token-for-alice");
    assert_eq!(token_requests(&f.mock).await, 1);
}

#[tokio::test]
async fn the_store_lock_is_taken_only_to_ask_the_token_endpoint() {
    let f = fixture().await;
    mount_per_user_tokens(&f.mock, &["alice"], Duration::ZERO).await;
    let alice = tessera_broker::Requester::new("alice");
    f.store.insert(
        "alice",
        f.server.key(),
        stored("stored", Duration::from_secs(3600)),
    );
    f.resolver.resolve(&alice, &f.server).await.unwrap();
    assert_eq!(
        f.store.locks(),
        0,
        "a fresh stored credential needs no lock"
    );
    f.resolver.invalidate("alice", &f.server);
    f.store.insert(
        "alice",
        f.server.key(),
        stored("stale", Duration::from_secs(10)),
    );
    let got = f.resolver.resolve(&alice, &f.server).await.unwrap();
    assert_eq!(value(&got), "Bearer token-for-alice");
    assert_eq!(f.store.locks(), 1);
    // The memory store's lock is process-local: nothing to read again after it.
    assert_eq!(f.store.loads(), 2);
}

#[tokio::test]
async fn reacquire_uses_a_fresh_stored_credential_other_than_the_rejected_one() {
    let f = fixture().await;
    mount_per_user_tokens(&f.mock, &["alice"], Duration::ZERO).await;
    let alice = tessera_broker::Requester::new("alice");
    f.store.insert(
        "alice",
        f.server.key(),
        stored("first", Duration::from_secs(3600)),
    );
    let first = f.resolver.resolve(&alice, &f.server).await.unwrap();
    // Another process replaced it in the store meanwhile.
    f.store.insert(
        "alice",
        f.server.key(),
        stored("second", Duration::from_secs(3600)),
    );
    let got = f
        .resolver
        .reacquire(&alice, &f.server, &first.header_value)
        .await
        .unwrap();
    assert_eq!(value(&got), "Bearer second");
    assert_eq!(token_requests(&f.mock).await, 0);
    // The stored one rejected too: now a new exchange.
    let got = f
        .resolver
        .reacquire(&alice, &f.server, &got.header_value)
        .await
        .unwrap();
    assert_eq!(value(&got), "Bearer token-for-alice");
    assert_eq!(token_requests(&f.mock).await, 1);
}

#[tokio::test]
async fn no_static_fallback_on_exchange_failure() {
    let f = fixture().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(400).set_body_json(serde_json::json!({"error": "invalid_grant"})),
        )
        .mount(&f.mock)
        .await;
    f.store.insert(
        "alice",
        f.server.key(),
        stored("stale-token", Duration::from_secs(5)),
    );
    let err = f
        .resolver
        .resolve(&tessera_broker::Requester::new("alice"), &f.server)
        .await
        .unwrap_err();
    assert_eq!(
        err,
        BrokerError::Rejected {
            status: 400,
            code: OAuthErrorCode::InvalidGrant
        }
    );
    assert_eq!(err.reason(), "invalid_grant");
    // The failure is not cached: the next call tries again.
    f.resolver
        .resolve(&tessera_broker::Requester::new("alice"), &f.server)
        .await
        .unwrap_err();
    assert_eq!(token_requests(&f.mock).await, 2);
}

#[tokio::test]
async fn concurrent_resolves_make_one_token_request() {
    let f = fixture().await;
    mount_per_user_tokens(&f.mock, &["alice"], Duration::from_millis(100)).await;
    let results = futures::future::join_all((0..50).map(|_| async {
        f.resolver
            .resolve(&tessera_broker::Requester::new("alice"), &f.server)
            .await
    }))
    .await;
    for r in &results {
        assert_eq!(value(r.as_ref().unwrap()), "Bearer token-for-alice");
    }
    assert_eq!(token_requests(&f.mock).await, 1);
    assert_eq!(f.store.saves(), 1);
}

#[tokio::test]
async fn concurrent_failure_is_shared_not_retried_per_caller() {
    let f = fixture().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500).set_delay(Duration::from_millis(100)))
        .mount(&f.mock)
        .await;
    let results = futures::future::join_all((0..20).map(|_| async {
        f.resolver
            .resolve(&tessera_broker::Requester::new("alice"), &f.server)
            .await
    }))
    .await;
    assert!(
        results
            .iter()
            .all(|r| matches!(r, Err(BrokerError::Rejected { status: 500, .. })))
    );
    assert_eq!(token_requests(&f.mock).await, 1);
}

#[tokio::test]
async fn cancelled_first_caller_does_not_fail_the_others() {
    let f = fixture().await;
    mount_per_user_tokens(&f.mock, &["alice"], Duration::from_millis(200)).await;
    let first = tokio::spawn({
        let (resolver, server) = (f.resolver.clone(), f.server.clone());
        async move {
            resolver
                .resolve(&tessera_broker::Requester::new("alice"), &server)
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    first.abort();
    let got = f
        .resolver
        .resolve(&tessera_broker::Requester::new("alice"), &f.server)
        .await
        .unwrap();
    assert_eq!(value(&got), "Bearer token-for-alice");
    assert_eq!(token_requests(&f.mock).await, 1);
}

#[tokio::test]
async fn waiting_caller_is_bounded_by_acquire_timeout() {
    let f = fixture_with(BrokerMode::TokenExchange, Duration::from_millis(200)).await;
    mount_per_user_tokens(&f.mock, &["alice"], Duration::from_secs(3)).await;
    let started = std::time::Instant::now();
    let err = f
        .resolver
        .resolve(&tessera_broker::Requester::new("alice"), &f.server)
        .await
        .unwrap_err();
    assert_eq!(err, BrokerError::AcquireTimeout);
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn users_never_share_a_credential() {
    let f = fixture().await;
    mount_per_user_tokens(&f.mock, &["alice", "bob"], Duration::from_millis(50)).await;
    let (a, b) = (
        tessera_broker::Requester::new("alice"),
        tessera_broker::Requester::new("bob"),
    );
    let (alice, bob) = tokio::join!(
        f.resolver.resolve(&a, &f.server),
        f.resolver.resolve(&b, &f.server)
    );
    assert_eq!(value(&alice.unwrap()), "Bearer token-for-alice");
    assert_eq!(value(&bob.unwrap()), "Bearer token-for-bob");
    assert_eq!(token_requests(&f.mock).await, 2);
}

#[tokio::test]
async fn another_users_valid_credential_is_never_returned() {
    let f = fixture().await;
    f.store.insert(
        "bob",
        f.server.key(),
        stored("bobs-token", Duration::from_secs(600)),
    );
    f.resolver
        .resolve(&tessera_broker::Requester::new("bob"), &f.server)
        .await
        .unwrap();
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&f.mock)
        .await;
    let err = f
        .resolver
        .resolve(&tessera_broker::Requester::new("alice"), &f.server)
        .await
        .unwrap_err();
    assert!(!format!("{err} {err:?}").contains("bobs-token"));
    assert_eq!(token_requests(&f.mock).await, 1);
    assert!(f.store.get("bob", f.server.key()).is_some());
}

#[tokio::test]
async fn empty_user_is_unauthenticated_and_calls_nothing() {
    let f = fixture().await;
    assert_eq!(
        f.resolver
            .resolve(&tessera_broker::Requester::new(""), &f.server)
            .await
            .unwrap_err(),
        BrokerError::Unauthenticated
    );
    assert_eq!(token_requests(&f.mock).await, 0);
    assert_eq!(f.store.loads(), 0);
}

#[tokio::test]
async fn expired_sign_in_asks_to_sign_in_again() {
    let f = fixture().await;
    let err = f
        .resolver
        .resolve(&tessera_broker::Requester::new("carol"), &f.server)
        .await
        .unwrap_err();
    assert_eq!(err, BrokerError::SignInAgain);
    assert_eq!(token_requests(&f.mock).await, 0);
}

#[tokio::test]
async fn store_failure_is_an_error_not_a_fallback() {
    let f = fixture().await;
    mount_per_user_tokens(&f.mock, &["alice"], Duration::ZERO).await;
    f.store.set_failing(true);
    assert!(matches!(
        f.resolver
            .resolve(&tessera_broker::Requester::new("alice"), &f.server)
            .await,
        Err(BrokerError::Store(_))
    ));
}

#[tokio::test]
async fn oauth_connect_without_a_connector_is_unsupported() {
    let f = fixture_with(BrokerMode::OauthConnect, Duration::from_secs(5)).await;
    let err = f
        .resolver
        .resolve(&tessera_broker::Requester::new("alice"), &f.server)
        .await
        .unwrap_err();
    assert!(matches!(err, BrokerError::Unsupported { .. }), "{err}");
}

#[tokio::test]
async fn invalidate_forces_a_new_acquisition() {
    let f = fixture().await;
    mount_per_user_tokens(&f.mock, &["alice"], Duration::ZERO).await;
    f.resolver
        .resolve(&tessera_broker::Requester::new("alice"), &f.server)
        .await
        .unwrap();
    f.resolver.invalidate("alice", &f.server);
    f.resolver
        .resolve(&tessera_broker::Requester::new("alice"), &f.server)
        .await
        .unwrap();
    // The store still held a valid record, so no second exchange.
    assert_eq!(token_requests(&f.mock).await, 1);
    assert_eq!(f.store.loads(), 2);
}

#[tokio::test]
async fn cache_stays_within_capacity() {
    let mock = MockServer::start().await;
    let store = Arc::new(MemoryCredentialStore::new());
    let resolver = Resolver::builder(
        TokenExchanger::new(reqwest::Client::new()),
        store.clone(),
        Arc::new(Subjects::default()),
    )
    .cache_capacity(2)
    .build();
    let server = BrokeredServer::from_parts(
        "files",
        "https://u/mcp",
        broker_config(&mock.uri(), BrokerMode::TokenExchange),
    )
    .unwrap();
    for user in ["a", "b", "c", "d"] {
        store.insert(user, server.key(), stored("t", Duration::from_secs(600)));
        resolver
            .resolve(&tessera_broker::Requester::new(user), &server)
            .await
            .unwrap();
    }
    // d was just cached: a hit.
    let loads = store.loads();
    resolver
        .resolve(&tessera_broker::Requester::new("d"), &server)
        .await
        .unwrap();
    assert_eq!(store.loads(), loads);
    // At most two of the four are cached: the others go back to the store.
    for user in ["a", "b", "c", "d"] {
        resolver
            .resolve(&tessera_broker::Requester::new(user), &server)
            .await
            .unwrap();
    }
    assert!(
        store.loads() - loads >= 2,
        "cache held more than its capacity"
    );
}

#[test]
fn debug_output_redacts_tokens() {
    let record = stored("very-secret-token", Duration::from_secs(60));
    assert!(!format!("{record:?}").contains("very-secret-token"));
    let cfg = broker_config("http://127.0.0.1:1", BrokerMode::TokenExchange);
    let server = BrokeredServer::from_parts("files", "https://u/mcp", cfg).unwrap();
    assert!(!format!("{server:?}").contains("s3cret"));
}

#[test]
fn server_without_broker_or_on_stdio_is_rejected() {
    let mut server = ServerConfig {
        name: "local".into(),
        enabled: true,
        transport: Transport::Stdio {
            command: "x".into(),
            args: vec![],
            env: vec![],
            working_dir: None,
        },
        call_timeout: None,
        init_timeout: None,
        auth_broker: None,
    };
    assert_eq!(
        BrokeredServer::new(&server).unwrap_err(),
        BrokerError::NotConfigured("local".into())
    );
    server.auth_broker = Some(broker_config(
        "http://127.0.0.1:1",
        BrokerMode::TokenExchange,
    ));
    assert!(matches!(
        BrokeredServer::new(&server),
        Err(BrokerError::Unsupported { .. })
    ));
    let mut cfg = broker_config("http://127.0.0.1:1", BrokerMode::TokenExchange);
    cfg.header_format = "Bearer".into();
    assert_eq!(
        BrokeredServer::from_parts("x", "https://u", cfg).unwrap_err(),
        BrokerError::InvalidField("header_format")
    );
}
