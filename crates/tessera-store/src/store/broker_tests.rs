//! Credential store, connect flows, activity and key rotation (REFERENCE.md §4.1 as ours).

use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use super::test_db::{TestDb, both_backends};
use super::*;
use crate::seal::{Aad, IdpTokenKind, SealError, SealingKey};
use crate::{
    ActivityAction, ActivityFilter, ActivityMethod, ActivityOutcome, ActivityRecord,
    CredentialRecord, CredentialSource, IdpTokens, NewConnectFlow, Role, UserLogin,
};

const KEY_A: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

fn key_a() -> SealingKey {
    SealingKey::parse(&SecretString::from(KEY_A), "test").unwrap()
}

fn key_b() -> SealingKey {
    SealingKey::with_kid("rotated", &[7u8; 32]).unwrap()
}

fn ring(active: SealingKey, older: Vec<SealingKey>) -> Arc<Keyring> {
    Arc::new(Keyring::new(active, older).unwrap())
}

async fn open_store(db: &TestDb) -> Store {
    db.open().await.with_keyring(ring(key_a(), vec![]))
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

fn cred(user_id: &str, server_key: &str, access: &str) -> CredentialRecord {
    CredentialRecord {
        user_id: user_id.to_owned(),
        server_key: server_key.to_owned(),
        access_token: SecretString::from(access),
        refresh_token: Some(SecretString::from(format!("{access}-refresh"))),
        expires_at: Some(1_900_000_000),
        scopes: vec!["repo".into(), "read:user".into()],
        token_type: "Bearer".into(),
        source: CredentialSource::Exchange,
        audience: Some("https://api.example.test".into()),
    }
}

async fn raw_credential(store: &Store, user_id: &str, key: &str) -> (String, Option<String>) {
    sqlx::query_as(
        "SELECT access_token_sealed, refresh_token_sealed FROM credentials \
         WHERE user_id = $1 AND server_key = $2",
    )
    .bind(user_id)
    .bind(key)
    .fetch_one(&store.pool)
    .await
    .unwrap()
}

async fn all_sealed(store: &Store) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for sql in [
        "SELECT access_token_sealed FROM credentials",
        "SELECT refresh_token_sealed FROM credentials WHERE refresh_token_sealed IS NOT NULL",
        "SELECT access_token_sealed FROM idp_tokens",
        "SELECT refresh_token_sealed FROM idp_tokens WHERE refresh_token_sealed IS NOT NULL",
        "SELECT id_token_sealed FROM idp_tokens WHERE id_token_sealed IS NOT NULL",
        "SELECT code_verifier_sealed FROM connect_flows",
    ] {
        out.extend(
            sqlx::query_scalar::<_, String>(sql)
                .fetch_all(&store.pool)
                .await
                .unwrap(),
        );
    }
    out
}

#[test]
fn server_key_is_the_references() {
    // name + "_" + first 16 hex of SHA-256("name|url").
    assert_eq!(
        server_key("github", "https://api.github.com/mcp"),
        "github_2007c932672817f5"
    );
    assert_ne!(
        server_key("github", "https://api.github.com/mcp"),
        server_key("github", "https://api.github.com/mcp2")
    );
}

async fn credential_round_trips_and_is_sealed_at_rest(db: TestDb) {
    let store = open_store(&db).await;
    let alice = user(&store, "alice").await;
    let key = server_key("github", "https://api.github.com/mcp");
    store
        .put_credential(&cred(&alice, &key, "gho_alice_access"))
        .await
        .unwrap();

    let got = store.get_credential(&alice, &key).await.unwrap().unwrap();
    assert_eq!(got.access_token.expose_secret(), "gho_alice_access");
    assert_eq!(
        got.refresh_token.as_ref().unwrap().expose_secret(),
        "gho_alice_access-refresh"
    );
    assert_eq!(got.expires_at, Some(1_900_000_000));
    assert_eq!(got.scopes, ["repo", "read:user"]);
    assert_eq!(got.token_type, "Bearer");
    assert_eq!(got.source, CredentialSource::Exchange);
    assert_eq!(got.audience.as_deref(), Some("https://api.example.test"));
    assert!(got.created_at > 0 && got.updated_at >= got.created_at);
    assert!(!format!("{got:?}").contains("gho_alice"));
    assert!(!format!("{:?}", cred(&alice, &key, "gho_x")).contains("gho_x"));

    // At rest: sealed values, no plaintext, a fresh nonce on each write.
    let (access, refresh) = raw_credential(&store, &alice, &key).await;
    assert!(access.starts_with("tsv1."), "{access}");
    assert!(!access.contains("gho_alice") && !refresh.as_ref().unwrap().contains("gho_alice"));
    store
        .put_credential(&cred(&alice, &key, "gho_alice_access"))
        .await
        .unwrap();
    let (again, _) = raw_credential(&store, &alice, &key).await;
    assert_ne!(access, again, "same credential, different ciphertext");

    // Absent → None; unknown user → UserNotFound; no keyring → SealingDisabled.
    assert!(
        store
            .get_credential(&alice, "other_0000")
            .await
            .unwrap()
            .is_none()
    );
    assert!(matches!(
        store.put_credential(&cred("no-such-user", &key, "t")).await,
        Err(StoreError::UserNotFound(_))
    ));
    let plain = db.open().await;
    assert!(matches!(
        plain.get_credential(&alice, &key).await,
        Err(StoreError::SealingDisabled)
    ));
}

async fn a_credential_copied_to_another_user_or_server_does_not_open(db: TestDb) {
    let store = open_store(&db).await;
    let alice = user(&store, "alice").await;
    let bob = user(&store, "bob").await;
    let key = server_key("github", "https://api.github.com/mcp");
    store
        .put_credential(&cred(&alice, &key, "alice-token"))
        .await
        .unwrap();
    store
        .put_credential(&cred(&bob, &key, "bob-token"))
        .await
        .unwrap();
    assert_eq!(
        store
            .get_credential(&bob, &key)
            .await
            .unwrap()
            .unwrap()
            .access_token
            .expose_secret(),
        "bob-token"
    );

    // Copy alice's sealed tokens over bob's row: it is an error for bob, never alice's token.
    let (a_access, a_refresh) = raw_credential(&store, &alice, &key).await;
    sqlx::query(
        "UPDATE credentials SET access_token_sealed = $1, refresh_token_sealed = $2 \
         WHERE user_id = $3",
    )
    .bind(&a_access)
    .bind(&a_refresh)
    .bind(&bob)
    .execute(&store.pool)
    .await
    .unwrap();
    assert!(matches!(
        store.get_credential(&bob, &key).await,
        Err(StoreError::Seal(SealError::Mismatch))
    ));

    // Copied to another server key of the same user: also refused.
    let other = server_key("gitlab", "https://gitlab.example.test/mcp");
    sqlx::query(
        "INSERT INTO credentials (user_id, server_key, access_token_sealed, refresh_token_sealed, \
           source, created_at, updated_at) VALUES ($1, $2, $3, NULL, 'exchange', 0, 0)",
    )
    .bind(&alice)
    .bind(&other)
    .bind(&a_access)
    .execute(&store.pool)
    .await
    .unwrap();
    assert!(matches!(
        store.get_credential(&alice, &other).await,
        Err(StoreError::Seal(SealError::Mismatch))
    ));

    // The refresh token does not open as the access token (distinct AAD field).
    sqlx::query(
        "UPDATE credentials SET access_token_sealed = $1 WHERE user_id = $2 AND server_key = $3",
    )
    .bind(a_refresh.as_ref().unwrap())
    .bind(&alice)
    .bind(&key)
    .execute(&store.pool)
    .await
    .unwrap();
    assert!(matches!(
        store.get_credential(&alice, &key).await,
        Err(StoreError::Seal(SealError::Mismatch))
    ));
}

async fn list_is_per_user_metadata_without_secrets(db: TestDb) {
    let store = open_store(&db).await;
    let alice = user(&store, "alice").await;
    let alice2 = user(&store, "alice2").await;
    let gh = server_key("github", "https://api.github.com/mcp");
    let gl = server_key("gitlab", "https://gitlab.example.test/mcp");
    store
        .put_credential(&cred(&alice, &gh, "tok-1"))
        .await
        .unwrap();
    let mut no_refresh = cred(&alice, &gl, "tok-2");
    no_refresh.refresh_token = None;
    no_refresh.source = CredentialSource::Connect;
    store.put_credential(&no_refresh).await.unwrap();
    store
        .put_credential(&cred(&alice2, &gh, "tok-3"))
        .await
        .unwrap();

    let list = store.list_credentials(&alice).await.unwrap();
    let mut keys: Vec<&str> = list.iter().map(|c| c.server_key.as_str()).collect();
    keys.sort_unstable();
    let mut want = vec![gh.as_str(), gl.as_str()];
    want.sort_unstable();
    assert_eq!(keys, want);
    let gl_entry = list.iter().find(|c| c.server_key == gl).unwrap();
    assert!(!gl_entry.has_refresh_token);
    assert_eq!(gl_entry.source, CredentialSource::Connect);
    assert!(
        list.iter()
            .find(|c| c.server_key == gh)
            .unwrap()
            .has_refresh_token
    );
    let text = format!("{list:?}");
    assert!(!text.contains("tok-") && !text.contains("tsv1."), "{text}");
    assert_eq!(store.list_credentials(&alice2).await.unwrap().len(), 1);

    // Listing reads no sealed column: it works without a keyring.
    let plain = db.open().await;
    assert_eq!(plain.list_credentials(&alice).await.unwrap(), list);
}

async fn overwrite_replaces_tokens_and_keeps_created_at(db: TestDb) {
    let store = open_store(&db).await;
    let alice = user(&store, "alice").await;
    let key = server_key("github", "https://api.github.com/mcp");
    store
        .put_credential(&cred(&alice, &key, "first"))
        .await
        .unwrap();
    let created = store
        .get_credential(&alice, &key)
        .await
        .unwrap()
        .unwrap()
        .created_at;
    sqlx::query("UPDATE credentials SET created_at = created_at - 100")
        .execute(&store.pool)
        .await
        .unwrap();
    let mut second = cred(&alice, &key, "second");
    second.refresh_token = None;
    second.source = CredentialSource::Refresh;
    second.expires_at = None;
    second.scopes = vec![];
    store.put_credential(&second).await.unwrap();
    let got = store.get_credential(&alice, &key).await.unwrap().unwrap();
    assert_eq!(got.access_token.expose_secret(), "second");
    assert!(got.refresh_token.is_none());
    assert_eq!(got.source, CredentialSource::Refresh);
    assert_eq!(got.expires_at, None);
    assert!(got.scopes.is_empty());
    assert_eq!(got.created_at, created - 100);
    assert!(got.updated_at >= created);
    assert_eq!(store.list_credentials(&alice).await.unwrap().len(), 1);
}

async fn delete_and_not_found(db: TestDb) {
    let store = open_store(&db).await;
    let alice = user(&store, "alice").await;
    let key = server_key("github", "https://api.github.com/mcp");
    assert!(store.get_credential(&alice, &key).await.unwrap().is_none());
    assert!(!store.delete_credential(&alice, &key).await.unwrap());
    store
        .put_credential(&cred(&alice, &key, "t"))
        .await
        .unwrap();
    assert!(store.delete_credential(&alice, &key).await.unwrap());
    assert!(store.get_credential(&alice, &key).await.unwrap().is_none());
    assert!(store.list_credentials(&alice).await.unwrap().is_empty());
}

fn flow<'a>(
    state: &'a SecretString,
    user_id: &'a str,
    verifier: &'a SecretString,
    ttl: Duration,
) -> NewConnectFlow<'a> {
    NewConnectFlow {
        state,
        user_id,
        server_key: "github_2007c932672817f5",
        code_verifier: verifier,
        redirect_uri: "https://tessera.example.test/connect/callback",
        ttl,
    }
}

async fn connect_flow_is_single_use_expires_and_is_bounded(db: TestDb) {
    let store = open_store(&db).await;
    let alice = user(&store, "alice").await;
    let bob = user(&store, "bob").await;
    let verifier = SecretString::from("verifier-secret-abcdefghijklmnopqrstuvwxyz0123456789");
    let ten_min = Duration::from_secs(600);

    let state = SecretString::from("state-one");
    store
        .put_connect_flow(&flow(&state, &alice, &verifier, ten_min))
        .await
        .unwrap();
    // At rest: the state only as its hash, the verifier sealed.
    let (hash, sealed): (String, String) =
        sqlx::query_as("SELECT state_hash, code_verifier_sealed FROM connect_flows")
            .fetch_one(&store.pool)
            .await
            .unwrap();
    assert_eq!(hash, hash_secret("state-one"));
    assert!(sealed.starts_with("tsv1.") && !sealed.contains("verifier-secret"));

    let taken = store.take_connect_flow(&state).await.unwrap().unwrap();
    assert_eq!(taken.user_id, alice);
    assert_eq!(taken.server_key, "github_2007c932672817f5");
    assert_eq!(
        taken.code_verifier.expose_secret(),
        verifier.expose_secret()
    );
    assert_eq!(
        taken.redirect_uri,
        "https://tessera.example.test/connect/callback"
    );
    assert_eq!(taken.expires_at - taken.created_at, 600);
    // Single use.
    assert!(store.take_connect_flow(&state).await.unwrap().is_none());
    assert!(
        store
            .take_connect_flow(&SecretString::from("never-issued"))
            .await
            .unwrap()
            .is_none()
    );

    // Expired → None, and gone.
    let old = SecretString::from("state-expired");
    store
        .put_connect_flow(&flow(&old, &alice, &verifier, Duration::ZERO))
        .await
        .unwrap();
    assert!(store.take_connect_flow(&old).await.unwrap().is_none());
    let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM connect_flows")
        .fetch_one(&store.pool)
        .await
        .unwrap();
    assert_eq!(left, 0);

    // Bounded per user: 10 pending, the 11th refused; expired ones do not count; other users
    // are unaffected; taking one frees a slot.
    let stale = SecretString::from("stale");
    store
        .put_connect_flow(&flow(&stale, &alice, &verifier, Duration::ZERO))
        .await
        .unwrap();
    let states: Vec<SecretString> = (0..MAX_PENDING_CONNECT_FLOWS)
        .map(|i| SecretString::from(format!("state-{i}")))
        .collect();
    for s in &states {
        store
            .put_connect_flow(&flow(s, &alice, &verifier, ten_min))
            .await
            .unwrap();
    }
    let extra = SecretString::from("state-extra");
    assert!(matches!(
        store
            .put_connect_flow(&flow(&extra, &alice, &verifier, ten_min))
            .await,
        Err(StoreError::TooManyConnectFlows { max: 10, .. })
    ));
    store
        .put_connect_flow(&flow(&extra, &bob, &verifier, ten_min))
        .await
        .unwrap();
    assert!(store.take_connect_flow(&states[0]).await.unwrap().is_some());
    let another = SecretString::from("state-another");
    store
        .put_connect_flow(&flow(&another, &alice, &verifier, ten_min))
        .await
        .unwrap();
    // The stale flow was purged when alice added a flow.
    assert!(store.take_connect_flow(&stale).await.unwrap().is_none());

    // A verifier row moved to another state does not open.
    let (bob_sealed,): (String,) =
        sqlx::query_as("SELECT code_verifier_sealed FROM connect_flows WHERE user_id = $1")
            .bind(&bob)
            .fetch_one(&store.pool)
            .await
            .unwrap();
    sqlx::query("UPDATE connect_flows SET code_verifier_sealed = $1 WHERE state_hash = $2")
        .bind(&bob_sealed)
        .bind(hash_secret("state-1"))
        .execute(&store.pool)
        .await
        .unwrap();
    assert!(matches!(
        store.take_connect_flow(&states[1]).await,
        Err(StoreError::Seal(SealError::Mismatch))
    ));
}

fn activity(
    ts: i64,
    user_id: Option<&str>,
    server: &str,
    action: ActivityAction,
    outcome: ActivityOutcome,
) -> ActivityRecord {
    ActivityRecord {
        ts,
        user_id: user_id.map(str::to_owned),
        server: server.to_owned(),
        tool: None,
        request_id: Some(format!("req-{ts}")),
        method: ActivityMethod::TokenExchange,
        action,
        outcome,
        reason: (outcome != ActivityOutcome::Success).then(|| "invalid_grant".to_owned()),
        duration_ms: Some(12),
    }
}

async fn activity_is_recorded_and_filtered_without_secret_columns(db: TestDb) {
    let store = open_store(&db).await;
    use ActivityAction as A;
    use ActivityOutcome as O;
    let records = [
        activity(100, Some("alice"), "github", A::Acquire, O::Success),
        activity(101, Some("alice"), "gitlab", A::Refresh, O::Failure),
        activity(102, Some("bob"), "github", A::PolicyDeny, O::Denied),
        activity(103, None, "github", A::ConnectFinish, O::Failure),
        activity(104, Some("alice"), "github", A::Inject, O::Success),
    ];
    for r in &records {
        store.record_activity(r).await.unwrap();
    }
    let all = store
        .list_activity(&ActivityFilter::default())
        .await
        .unwrap();
    let ts: Vec<i64> = all.iter().map(|e| e.record.ts).collect();
    assert_eq!(ts, [104, 103, 102, 101, 100], "newest first");
    assert_eq!(all[4].record, records[0]);

    let alice = store
        .list_activity(&ActivityFilter {
            user_id: Some("alice"),
            ..ActivityFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(alice.len(), 3);
    let alice_gh = store
        .list_activity(&ActivityFilter {
            user_id: Some("alice"),
            server: Some("github"),
            limit: 0,
            ..ActivityFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(
        alice_gh.iter().map(|e| e.record.ts).collect::<Vec<_>>(),
        [104, 100]
    );
    let github_1 = store
        .list_activity(&ActivityFilter {
            server: Some("github"),
            limit: 1,
            ..ActivityFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(github_1.len(), 1);
    assert_eq!(github_1[0].record.ts, 104);

    // Every vocabulary value round-trips.
    for action in [
        A::Acquire,
        A::Refresh,
        A::Inject,
        A::ConnectStart,
        A::ConnectFinish,
        A::ConnectDeny,
        A::PolicyDeny,
        A::Disconnect,
    ] {
        for method in [
            ActivityMethod::TokenExchange,
            ActivityMethod::EntraObo,
            ActivityMethod::Connect,
        ] {
            let mut r = activity(200, Some("carol"), "s", action, O::Denied);
            r.method = method;
            store.record_activity(&r).await.unwrap();
        }
    }
    assert_eq!(
        store
            .list_activity(&ActivityFilter {
                user_id: Some("carol"),
                limit: 1000,
                ..ActivityFilter::default()
            })
            .await
            .unwrap()
            .len(),
        24
    );

    // Long reasons are cut.
    let mut long = activity(300, Some("dave"), "s", A::Acquire, O::Failure);
    long.reason = Some("é".repeat(400));
    store.record_activity(&long).await.unwrap();
    let stored = store
        .list_activity(&ActivityFilter {
            user_id: Some("dave"),
            ..ActivityFilter::default()
        })
        .await
        .unwrap();
    assert!(stored[0].record.reason.as_ref().unwrap().len() <= MAX_REASON_LEN);

    // The table has exactly the secret-free columns.
    let columns: Vec<String> = sqlx::query_scalar(if db.sqlite_path().is_some() {
        "SELECT name FROM pragma_table_info('activity') ORDER BY cid"
    } else {
        "SELECT column_name::text FROM information_schema.columns \
         WHERE table_schema = current_schema() AND table_name = 'activity' \
         ORDER BY ordinal_position"
    })
    .fetch_all(&store.pool)
    .await
    .unwrap();
    assert_eq!(
        columns,
        [
            "id",
            "ts",
            "user_id",
            "server",
            "tool",
            "request_id",
            "method",
            "action",
            "outcome",
            "reason",
            "duration_ms"
        ]
    );
}

async fn reseal_all_moves_every_sealed_column_to_the_active_key(db: TestDb) {
    let store_a = open_store(&db).await;
    let alice = user(&store_a, "alice").await;
    let bob = user(&store_a, "bob").await;
    let gh = server_key("github", "https://api.github.com/mcp");
    store_a
        .put_credential(&cred(&alice, &gh, "a-tok"))
        .await
        .unwrap();
    let mut no_refresh = cred(&bob, &gh, "b-tok");
    no_refresh.refresh_token = None;
    store_a.put_credential(&no_refresh).await.unwrap();
    store_a
        .put_idp_tokens(
            &alice,
            &IdpTokens {
                access_token: SecretString::from("idp-access"),
                refresh_token: Some(SecretString::from("idp-refresh")),
                id_token: Some(SecretString::from("idp-id")),
                expires_at: None,
                scopes: vec!["openid".into()],
            },
        )
        .await
        .unwrap();
    let state = SecretString::from("pending-state");
    let verifier = SecretString::from("pending-verifier");
    store_a
        .put_connect_flow(&flow(&state, &alice, &verifier, Duration::from_secs(600)))
        .await
        .unwrap();
    let kid_a = key_a().kid().to_owned();
    assert!(
        all_sealed(&store_a)
            .await
            .iter()
            .all(|s| Keyring::kid_of(s).unwrap() == kid_a)
    );

    // Rotation: B active, A still readable. Old rows open before resealing.
    let rotating = ring(key_b(), vec![key_a()]);
    let store_ab = store_a.clone().with_keyring(rotating.clone());
    assert_eq!(
        store_ab
            .get_credential(&alice, &gh)
            .await
            .unwrap()
            .unwrap()
            .access_token
            .expose_secret(),
        "a-tok"
    );

    let mut calls = Vec::new();
    let report = store_ab
        .reseal_all(&rotating, |done, total| calls.push((done, total)))
        .await
        .unwrap();
    assert_eq!(report.total, 4);
    assert_eq!(report.resealed, 4);
    assert_eq!(report.skipped, 0);
    assert!(report.complete());
    assert_eq!(calls, [(1, 4), (2, 4), (3, 4), (4, 4)]);
    let sealed = all_sealed(&store_ab).await;
    assert_eq!(sealed.len(), 7);
    assert!(
        sealed
            .iter()
            .all(|s| Keyring::kid_of(s).unwrap() == "rotated")
    );

    // Everything opens with B alone.
    let store_b = db.open().await.with_keyring(ring(key_b(), vec![]));
    let a = store_b.get_credential(&alice, &gh).await.unwrap().unwrap();
    assert_eq!(a.access_token.expose_secret(), "a-tok");
    assert_eq!(a.refresh_token.unwrap().expose_secret(), "a-tok-refresh");
    let b = store_b.get_credential(&bob, &gh).await.unwrap().unwrap();
    assert_eq!(b.access_token.expose_secret(), "b-tok");
    assert!(b.refresh_token.is_none());
    let idp = store_b
        .get_idp_tokens(&alice)
        .await
        .unwrap()
        .unwrap()
        .tokens;
    assert_eq!(idp.access_token.expose_secret(), "idp-access");
    assert_eq!(idp.refresh_token.unwrap().expose_secret(), "idp-refresh");
    assert_eq!(idp.id_token.unwrap().expose_secret(), "idp-id");
    // Still bound to their records after resealing.
    let row = raw_credential(&store_b, &alice, &gh).await.0;
    assert!(matches!(
        rotating.open_string(&row, &Aad::credential(&bob, &gh)),
        Err(SealError::Mismatch)
    ));
    assert!(matches!(
        rotating.open_string(&row, &Aad::idp_token(&alice, IdpTokenKind::Access)),
        Err(SealError::Mismatch)
    ));

    // Re-running is a no-op.
    let again = store_ab.reseal_all(&rotating, |_, _| {}).await.unwrap();
    assert_eq!((again.total, again.resealed, again.skipped), (4, 0, 4));
    assert_eq!(all_sealed(&store_ab).await, sealed);

    // A row under a key the ring lacks is reported, left alone, and not fatal.
    let carol = user(&store_a, "carol").await;
    store_a
        .put_credential(&cred(&carol, &gh, "c-tok"))
        .await
        .unwrap();
    let b_only = ring(key_b(), vec![]);
    let partial = store_b.reseal_all(&b_only, |_, _| {}).await.unwrap();
    assert_eq!(partial.total, 5);
    assert_eq!(partial.skipped, 4);
    assert_eq!(partial.unreadable.len(), 1);
    assert_eq!(partial.unreadable[0].table, "credentials");
    assert_eq!(partial.unreadable[0].row, format!("{carol}/{gh}"));
    assert!(!partial.complete());
    // Interrupted-then-rerun with the full ring finishes it.
    let finished = store_ab.reseal_all(&rotating, |_, _| {}).await.unwrap();
    assert_eq!((finished.resealed, finished.skipped), (1, 4));
    assert_eq!(
        store_b
            .get_credential(&carol, &gh)
            .await
            .unwrap()
            .unwrap()
            .access_token
            .expose_secret(),
        "c-tok"
    );

    // The pending flow survived rotation and still opens.
    let taken = store_b.take_connect_flow(&state).await.unwrap().unwrap();
    assert_eq!(taken.code_verifier.expose_secret(), "pending-verifier");
}

/// Two stores on one database — two replicas — see each other's writes at once: users,
/// sessions, PATs, provider tokens, credentials, connect flows (single use across both),
/// activity.
async fn two_stores_on_one_database_see_each_others_writes(db: TestDb) {
    let a = open_store(&db).await;
    let b = open_store(&db).await;

    // A user signed in on A is known on B, with the same id; a profile update on B shows on A.
    let alice = user(&a, "alice").await;
    assert_eq!(b.get_user(&alice).await.unwrap().unwrap().id, alice);
    assert_eq!(user(&b, "alice").await, alice, "one row per identity");
    b.set_role(&alice, Role::Admin).await.unwrap();
    assert_eq!(a.get_user(&alice).await.unwrap().unwrap().role, Role::Admin);

    // A session made on A is found on B; signing out on B ends it on A.
    let session = a
        .create_session(&alice, Duration::from_secs(600), None, None)
        .await
        .unwrap();
    let cookie = session.cookie_value.expose_secret();
    assert_eq!(b.get_session(cookie).await.unwrap().unwrap().user_id, alice);
    assert!(b.delete_session(cookie).await.unwrap());
    assert!(a.get_session(cookie).await.unwrap().is_none());

    // A PAT made on B verifies on A; revoked on A, it is rejected on B.
    let pat = b.create_pat(&alice, "ci", &["mcp"], None).await.unwrap();
    let verified = a.verify_pat(pat.token.expose_secret()).await.unwrap();
    assert_eq!(verified.user.id, alice);
    a.revoke_pat(&alice, &pat.pat.id).await.unwrap();
    assert!(matches!(
        b.verify_pat(pat.token.expose_secret()).await,
        Err(StoreError::PatRejected(_))
    ));

    // A credential stored on A opens on B (same keyring); a disconnect on B is seen on A.
    let gh = server_key("github", "https://api.github.com/mcp");
    a.put_credential(&cred(&alice, &gh, "a-tok")).await.unwrap();
    let opened = b.get_credential(&alice, &gh).await.unwrap().unwrap();
    assert_eq!(opened.access_token.expose_secret(), "a-tok");
    b.put_credential(&cred(&alice, &gh, "b-tok")).await.unwrap();
    assert_eq!(
        a.get_credential(&alice, &gh)
            .await
            .unwrap()
            .unwrap()
            .access_token
            .expose_secret(),
        "b-tok"
    );
    assert!(b.delete_credential(&alice, &gh).await.unwrap());
    assert!(a.get_credential(&alice, &gh).await.unwrap().is_none());

    // A connect started on A finishes on B, once: A cannot take it again.
    let state = SecretString::from("replica-state");
    let verifier = SecretString::from("replica-verifier");
    a.put_connect_flow(&flow(&state, &alice, &verifier, Duration::from_secs(600)))
        .await
        .unwrap();
    let taken = b.take_connect_flow(&state).await.unwrap().unwrap();
    assert_eq!(taken.code_verifier.expose_secret(), "replica-verifier");
    assert!(a.take_connect_flow(&state).await.unwrap().is_none());

    // Activity written on either is listed on both.
    let record = |server: &str| ActivityRecord {
        ts: now_unix(),
        user_id: Some(alice.clone()),
        server: server.to_owned(),
        tool: None,
        request_id: None,
        method: ActivityMethod::Connect,
        action: ActivityAction::ConnectFinish,
        outcome: ActivityOutcome::Success,
        reason: None,
        duration_ms: None,
    };
    a.record_activity(&record("from-a")).await.unwrap();
    b.record_activities(&[record("from-b")]).await.unwrap();
    for store in [&a, &b] {
        let mut servers: Vec<String> = store
            .list_activity(&ActivityFilter::default())
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.record.server)
            .collect();
        servers.sort();
        assert_eq!(servers, ["from-a", "from-b"]);
    }

    // Both migrated the same database once.
    let applied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations")
        .fetch_one(&b.pool)
        .await
        .unwrap();
    assert_eq!(applied, MIGRATIONS.len() as i64);
}

/// Replicas starting together migrate one fresh PostgreSQL database without tripping over each
/// other (the migrator's advisory lock). SQLite is one replica's file: not tested that way.
#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_opened_concurrently_migrate_once() {
    let db = Arc::new(TestDb::postgres().await);
    let opens: Vec<_> = (0..4)
        .map(|_| {
            let db = db.clone();
            tokio::spawn(async move { db.open().await })
        })
        .collect();
    for open in opens {
        let store = open.await.unwrap();
        assert!(store.list_users().await.unwrap().is_empty());
    }
}

both_backends!(
    two_stores_on_one_database_see_each_others_writes,
    credential_round_trips_and_is_sealed_at_rest,
    a_credential_copied_to_another_user_or_server_does_not_open,
    list_is_per_user_metadata_without_secrets,
    overwrite_replaces_tokens_and_keeps_created_at,
    delete_and_not_found,
    connect_flow_is_single_use_expires_and_is_bounded,
    activity_is_recorded_and_filtered_without_secret_columns,
    reseal_all_moves_every_sealed_column_to_the_active_key,
);
