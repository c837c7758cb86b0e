//! `StoreCredentials` over a real (temp-dir SQLite) store, and the resolver's audit trail.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use secrecy::SecretString;
use tessera_broker::{
    ActivityAction, ActivityMethod, ActivityOutcome, Auditor, BrokeredServer, Resolver,
    StoreCredentials, SubjectTokenError, SubjectTokenSource, TokenExchanger,
};
use tessera_config::{AuthBrokerConfig, BrokerMode, ClientAuth, SubjectTokenType};
use tessera_store::{
    ActivityEntry, ActivityFilter, ActivityRecord, Keyring, Role, SealingKey, Store, UserLogin,
};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const CLIENT_SECRET: &str = "client-s3cret-value";
const ACCESS: &str = "upstream-access-token-XYZ";
const REFRESH: &str = "upstream-refresh-token-XYZ";
const BODY_SECRET: &str = "leaked-secret-in-error-body";

/// Subject tokens `subject-secret-<user>`.
struct Subjects;

impl SubjectTokenSource for Subjects {
    fn subject_token<'a>(
        &'a self,
        user: &'a str,
        _kind: SubjectTokenType,
    ) -> BoxFuture<'a, Result<SecretString, SubjectTokenError>> {
        Box::pin(async move { Ok(SecretString::from(format!("subject-secret-{user}"))) })
    }
}

fn secrets(users: &[&str]) -> Vec<String> {
    let mut out = vec![
        CLIENT_SECRET.to_owned(),
        ACCESS.to_owned(),
        REFRESH.to_owned(),
        BODY_SECRET.to_owned(),
    ];
    out.extend(users.iter().map(|u| format!("subject-secret-{u}")));
    out
}

async fn open_store(dir: &Path) -> Store {
    let key = SealingKey::parse(&SecretString::from(KEY), "test").unwrap();
    Store::open(dir)
        .await
        .unwrap()
        .with_keyring(Arc::new(Keyring::new(key, vec![]).unwrap()))
}

async fn user(store: &Store, subject: &str) -> String {
    let email = format!("{subject}@example.test");
    store
        .upsert_user(&UserLogin {
            issuer: "https://idp.example.test",
            subject,
            email: Some(&email),
            display_name: None,
            role_if_new: Role::User,
        })
        .await
        .unwrap()
        .id
}

fn server(endpoint: &str, mode: BrokerMode) -> BrokeredServer {
    let config = AuthBrokerConfig {
        mode,
        token_endpoint: Some(format!("{endpoint}/token").parse().unwrap()),
        authorization_endpoint: None,
        resource: Some("https://upstream.example/mcp".into()),
        scopes: vec!["read".into()],
        client_id: Some("tessera".into()),
        client_secret: Some(SecretString::from(CLIENT_SECRET)),
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
    BrokeredServer::from_parts("files", "https://upstream.example/mcp", config).unwrap()
}

fn resolver(store: &Store, auditor: Option<Auditor>) -> Resolver {
    let mut builder = Resolver::builder(
        TokenExchanger::new(reqwest::Client::new()),
        Arc::new(StoreCredentials::new(store.clone())),
        Arc::new(Subjects),
    );
    if let Some(auditor) = auditor {
        builder = builder.auditor(auditor);
    }
    builder.build()
}

async fn mount_ok(mock: &MockServer) {
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "access_token": ACCESS,
            "refresh_token": REFRESH,
            "token_type": "Bearer",
            "expires_in": 3600,
        })))
        .mount(mock)
        .await;
}

/// Every column of every row of `table`, read raw (nothing is opened), rendered as text.
async fn raw_rows(db: &Path, table: &str) -> Vec<String> {
    use sqlx::Row as _;
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    let sql = match table {
        "credentials" => "SELECT * FROM credentials",
        "activity" => "SELECT * FROM activity",
        _ => panic!("unknown table"),
    };
    let rows = sqlx::query(sql).fetch_all(&pool).await.unwrap();
    pool.close().await;
    rows.iter()
        .map(|row| {
            (0..row.len())
                .map(|i| match row.try_get::<Option<String>, _>(i) {
                    Ok(text) => text.unwrap_or_default(),
                    Err(_) => format!("{:?}", row.try_get::<Option<i64>, _>(i).unwrap()),
                })
                .collect::<Vec<_>>()
                .join("|")
        })
        .collect()
}

async fn wait_for_activity(store: &Store, n: usize) -> Vec<ActivityEntry> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let rows = store
            .list_activity(&ActivityFilter::default())
            .await
            .unwrap();
        if rows.len() >= n || Instant::now() > deadline {
            return rows;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn assert_no_secret(text: &str, users: &[&str]) {
    for secret in secrets(users) {
        assert!(!text.contains(&secret), "{secret:?} found in {text}");
    }
}

#[tokio::test]
async fn store_credentials_persist_sealed_and_a_fresh_resolver_finds_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path()).await;
    let alice = user(&store, "alice").await;
    let mock = MockServer::start().await;
    mount_ok(&mock).await;
    let srv = server(&mock.uri(), BrokerMode::TokenExchange);

    let first = resolver(&store, None)
        .resolve(&tessera_broker::Requester::new(&alice), &srv)
        .await
        .unwrap();
    assert_eq!(
        first.header_value.to_str().unwrap(),
        format!("Bearer {ACCESS}")
    );
    assert_eq!(mock.received_requests().await.unwrap().len(), 1);

    // Sealed at rest: the raw columns hold neither token.
    let (access_raw, refresh_raw): (String, Option<String>) = {
        let pool =
            sqlx::SqlitePool::connect(&format!("sqlite://{}", store.path().unwrap().display()))
                .await
                .unwrap();
        let row = sqlx::query_as(
            "SELECT access_token_sealed, refresh_token_sealed FROM credentials \
             WHERE user_id = $1 AND server_key = $2",
        )
        .bind(&alice)
        .bind(srv.key())
        .fetch_one(&pool)
        .await
        .unwrap();
        pool.close().await;
        row
    };
    assert!(!access_raw.contains(ACCESS));
    let refresh_raw = refresh_raw.expect("refresh token stored");
    assert!(!refresh_raw.contains(REFRESH));
    let raw = raw_rows(store.path().unwrap(), "credentials").await;
    assert_eq!(raw.len(), 1);
    assert!(
        raw[0].contains(srv.key()),
        "the raw scan sees the row: {}",
        raw[0]
    );
    assert_no_secret(&raw[0], &["alice"]);
    // ...and it opens, with its metadata.
    let opened = store
        .get_credential(&alice, srv.key())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        secrecy::ExposeSecret::expose_secret(&opened.access_token),
        ACCESS
    );
    assert_eq!(opened.source, tessera_store::CredentialSource::Exchange);

    // A second resolver (empty cache) over the same store: no provider call.
    let second = resolver(&store, None)
        .resolve(&tessera_broker::Requester::new(&alice), &srv)
        .await
        .unwrap();
    assert_eq!(second.header_value, first.header_value);
    assert_eq!(mock.received_requests().await.unwrap().len(), 1);

    // A reopened store (as after a restart) too.
    drop(store);
    let reopened = open_store(dir.path()).await;
    let third = resolver(&reopened, None)
        .resolve(&tessera_broker::Requester::new(&alice), &srv)
        .await
        .unwrap();
    assert_eq!(third.header_value, first.header_value);
    assert_eq!(mock.received_requests().await.unwrap().len(), 1);
}

#[tokio::test]
async fn audit_records_success_and_failure_without_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path()).await;
    let alice = user(&store, "alice").await;
    let bob = user(&store, "bob").await;
    let ok = MockServer::start().await;
    mount_ok(&ok).await;
    let bad = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(400).set_body_json(serde_json::json!({
            "error": "invalid_grant",
            "error_description": BODY_SECRET,
        })))
        .mount(&bad)
        .await;
    let auditor = Auditor::spawn(store.clone(), 1024);
    let r = resolver(&store, Some(auditor.clone()));

    r.resolve(
        &tessera_broker::Requester::new(&alice),
        &server(&ok.uri(), BrokerMode::TokenExchange),
    )
    .await
    .unwrap();
    let err = r
        .resolve(
            &tessera_broker::Requester::new(&bob),
            &server(&bad.uri(), BrokerMode::EntraObo),
        )
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "invalid_grant");
    // A cache hit is not an acquisition: no record.
    r.resolve(
        &tessera_broker::Requester::new(&alice),
        &server(&ok.uri(), BrokerMode::TokenExchange),
    )
    .await
    .unwrap();

    let rows = wait_for_activity(&store, 2).await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(auditor.dropped(), 0);
    assert_eq!(auditor.write_failures(), 0);
    let find = |u: &str| {
        rows.iter()
            .map(|e| &e.record)
            .find(|r| r.user_id.as_deref() == Some(u))
            .unwrap()
            .clone()
    };
    let success = find(&alice);
    assert_eq!(success.server, "files");
    assert_eq!(success.method, ActivityMethod::TokenExchange);
    assert_eq!(success.action, ActivityAction::Acquire);
    assert_eq!(success.outcome, ActivityOutcome::Success);
    assert_eq!(success.reason, None);
    assert!(success.duration_ms.is_some_and(|d| d >= 0));
    let failure = find(&bob);
    assert_eq!(failure.server, "files");
    assert_eq!(failure.method, ActivityMethod::EntraObo);
    assert_eq!(failure.action, ActivityAction::Acquire);
    assert_eq!(failure.outcome, ActivityOutcome::Failure);
    assert_eq!(failure.reason.as_deref(), Some("invalid_grant"));
    assert!(failure.duration_ms.is_some());

    // No secret in the listed records nor in the raw table.
    assert_no_secret(&format!("{rows:?}"), &["alice", "bob"]);
    let raw = raw_rows(store.path().unwrap(), "activity").await;
    assert_eq!(raw.len(), 2);
    assert!(
        raw.iter().any(|row| row.contains("invalid_grant")),
        "{raw:?}"
    );
    for row in raw {
        assert_no_secret(&row, &["alice", "bob"]);
    }
}

#[tokio::test]
async fn stale_stored_credential_is_audited_as_refresh() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path()).await;
    let alice = user(&store, "alice").await;
    let mock = MockServer::start().await;
    mount_ok(&mock).await;
    let srv = server(&mock.uri(), BrokerMode::TokenExchange);
    store
        .put_credential(&tessera_store::CredentialRecord {
            user_id: alice.clone(),
            server_key: srv.key().to_owned(),
            access_token: SecretString::from("old-token"),
            refresh_token: None,
            expires_at: Some(tessera_store::now_unix() + 10),
            scopes: vec![],
            token_type: "Bearer".into(),
            source: tessera_store::CredentialSource::Exchange,
            audience: None,
        })
        .await
        .unwrap();
    let auditor = Auditor::spawn(store.clone(), 16);
    resolver(&store, Some(auditor))
        .resolve(&tessera_broker::Requester::new(&alice), &srv)
        .await
        .unwrap();
    let rows = wait_for_activity(&store, 1).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].record.action, ActivityAction::Refresh);
    assert_eq!(rows[0].record.outcome, ActivityOutcome::Success);
}

#[tokio::test]
async fn a_full_queue_drops_and_counts_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path()).await;
    let auditor = Auditor::spawn(store.clone(), 4);
    let record = ActivityRecord {
        ts: tessera_store::now_unix(),
        user_id: None,
        server: "files".into(),
        tool: None,
        request_id: None,
        method: ActivityMethod::TokenExchange,
        action: ActivityAction::Acquire,
        outcome: ActivityOutcome::Success,
        reason: None,
        duration_ms: Some(1),
    };
    // Single-threaded runtime and no await: the writer cannot drain while we send.
    let started = Instant::now();
    for _ in 0..1000 {
        auditor.record(record.clone());
    }
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(auditor.dropped(), 996);
    // The queued four are written.
    let rows = wait_for_activity(&store, 4).await;
    assert_eq!(rows.len(), 4);
}

#[tokio::test]
async fn store_failure_and_not_connected_are_audited_as_failures() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path()).await;
    let auditor = Auditor::spawn(store.clone(), 16);
    let mock = MockServer::start().await;
    mount_ok(&mock).await;
    let failing = Arc::new(tessera_broker::MemoryCredentialStore::new());
    failing.set_failing(true);
    let r = Resolver::builder(
        TokenExchanger::new(reqwest::Client::new()),
        failing,
        Arc::new(Subjects),
    )
    .auditor(auditor.clone())
    .build();
    let err = r
        .resolve(
            &tessera_broker::Requester::new("alice"),
            &server(&mock.uri(), BrokerMode::TokenExchange),
        )
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "store");

    let connect = resolver(&store, Some(auditor));
    let err = connect
        .resolve(
            &tessera_broker::Requester::new("bob"),
            &server(&mock.uri(), BrokerMode::OauthConnect),
        )
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "unsupported");
    assert!(mock.received_requests().await.unwrap().is_empty());

    let rows = wait_for_activity(&store, 2).await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    let by = |u: &str| {
        rows.iter()
            .map(|e| &e.record)
            .find(|r| r.user_id.as_deref() == Some(u))
            .unwrap()
            .clone()
    };
    let store_failure = by("alice");
    assert_eq!(store_failure.method, ActivityMethod::TokenExchange);
    assert_eq!(store_failure.outcome, ActivityOutcome::Failure);
    assert_eq!(store_failure.reason.as_deref(), Some("store"));
    let not_connected = by("bob");
    assert_eq!(not_connected.method, ActivityMethod::Connect);
    assert_eq!(not_connected.action, ActivityAction::Acquire);
    assert_eq!(not_connected.outcome, ActivityOutcome::Failure);
    assert_eq!(not_connected.reason.as_deref(), Some("unsupported"));
}
