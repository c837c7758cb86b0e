use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use super::test_db::{TestDb, both_backends};
use super::*;
use crate::error::PatRejection;
use crate::seal::{SealError, SealingKey};

const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const ISSUER: &str = "https://idp.example.test";

fn keyring() -> Arc<Keyring> {
    let key = SealingKey::parse(&SecretString::from(KEY), "test").unwrap();
    Arc::new(Keyring::new(key, vec![]).unwrap())
}

async fn open_store(db: &TestDb) -> Store {
    db.open().await.with_keyring(keyring())
}

fn login<'a>(subject: &'a str, email: &'a str) -> UserLogin<'a> {
    UserLogin {
        issuer: ISSUER,
        subject,
        email: Some(email),
        display_name: Some("Alice A."),
        role_if_new: Role::User,
    }
}

async fn user(store: &Store, subject: &str) -> User {
    store
        .upsert_user(&login(subject, &format!("{subject}@example.test")))
        .await
        .unwrap()
}

#[test]
fn migration_list_matches_the_migrations_directory() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    let listed: Vec<String> = MIGRATIONS
        .iter()
        .map(|(v, d, _)| format!("{v:04}_{d}.sql"))
        .collect();
    assert_eq!(files, listed);
}

#[tokio::test]
async fn open_creates_the_database_and_migrations_are_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("nested/data");
    let store = Store::open(&data_dir).await.unwrap();
    assert_eq!(store.path(), Some(data_dir.join("tessera.db").as_path()));
    assert!(store.path().unwrap().exists());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(store.path().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let alice = user(&store, "alice").await;
    store.migrate().await.unwrap();
    store.close().await;

    // A second start runs the migrator again over the same file; data survives.
    let store = Store::open(&data_dir).await.unwrap();
    store.migrate().await.unwrap();
    assert_eq!(store.get_user(&alice.id).await.unwrap(), Some(alice));
    let applied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations")
        .fetch_one(&store.pool)
        .await
        .unwrap();
    assert_eq!(applied, MIGRATIONS.len() as i64);
    let journal: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&store.pool)
        .await
        .unwrap();
    assert_eq!(journal, "wal");
    let fk: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
        .fetch_one(&store.pool)
        .await
        .unwrap();
    assert_eq!(fk, 1);
}

async fn upsert_creates_once_per_identity_and_updates_profile(db: TestDb) {
    let store = open_store(&db).await;
    let first = store
        .upsert_user(&UserLogin {
            issuer: ISSUER,
            subject: "sub-1",
            email: Some("  Alice@Example.TEST "),
            display_name: Some("Alice"),
            role_if_new: Role::Admin,
        })
        .await
        .unwrap();
    assert_eq!(first.email.as_deref(), Some("alice@example.test"));
    assert_eq!(first.role, Role::Admin);
    assert!(!first.disabled);
    assert_eq!(first.last_login_at, Some(first.created_at));

    store.set_role(&first.id, Role::User).await.unwrap();
    let again = store
        .upsert_user(&UserLogin {
            issuer: ISSUER,
            subject: "sub-1",
            email: Some("alice@new.example"),
            display_name: Some("Alice B."),
            role_if_new: Role::Admin,
        })
        .await
        .unwrap();
    assert_eq!(again.id, first.id);
    assert_eq!(again.created_at, first.created_at);
    assert_eq!(again.email.as_deref(), Some("alice@new.example"));
    assert_eq!(again.display_name.as_deref(), Some("Alice B."));
    assert_eq!(again.role, Role::User, "an existing user's role is kept");

    // Same subject at another issuer is another user; same email is allowed.
    let other = store
        .upsert_user(&UserLogin {
            issuer: "https://other.example.test",
            subject: "sub-1",
            email: Some("alice@new.example"),
            display_name: None,
            role_if_new: Role::User,
        })
        .await
        .unwrap();
    assert_ne!(other.id, first.id);
    assert_eq!(
        store
            .find_user_by_identity(ISSUER, "sub-1")
            .await
            .unwrap()
            .map(|u| u.id),
        Some(first.id.clone())
    );
    assert_eq!(store.get_user("nope").await.unwrap(), None);
    assert!(matches!(
        store.set_role("nope", Role::Admin).await,
        Err(StoreError::UserNotFound(id)) if id == "nope"
    ));
}

async fn sessions_are_found_by_cookie_and_expire(db: TestDb) {
    let store = open_store(&db).await;
    let alice = user(&store, "alice").await;
    let live = store
        .create_session(
            &alice.id,
            Duration::from_secs(3600),
            Some("curl/8"),
            Some("127.0.0.1"),
        )
        .await
        .unwrap();
    let cookie = live.cookie_value.expose_secret().to_owned();
    assert_eq!(cookie.len(), 43);
    assert_ne!(live.session.id_hash, cookie);

    let found = store.get_session(&cookie).await.unwrap().unwrap();
    assert_eq!(found, live.session);
    assert_eq!(found.user_agent.as_deref(), Some("curl/8"));

    // The cookie value itself is nowhere in the table.
    let ids: Vec<String> = sqlx::query_scalar("SELECT id FROM sessions")
        .fetch_all(&store.pool)
        .await
        .unwrap();
    assert!(ids.iter().all(|id| *id != cookie));

    let expired = store
        .create_session(&alice.id, Duration::ZERO, None, None)
        .await
        .unwrap();
    assert_eq!(
        store
            .get_session(expired.cookie_value.expose_secret())
            .await
            .unwrap(),
        None
    );
    assert_eq!(store.get_session("not-a-cookie").await.unwrap(), None);
    assert_eq!(store.purge_expired_sessions().await.unwrap(), 1);
    assert!(store.get_session(&cookie).await.unwrap().is_some());

    assert!(store.delete_session(&cookie).await.unwrap());
    assert!(!store.delete_session(&cookie).await.unwrap());
    assert_eq!(store.get_session(&cookie).await.unwrap(), None);

    assert!(matches!(
        store
            .create_session("ghost", Duration::from_secs(60), None, None)
            .await,
        Err(StoreError::UserNotFound(_))
    ));
}

async fn disabling_a_user_ends_their_sessions(db: TestDb) {
    let store = open_store(&db).await;
    let alice = user(&store, "alice").await;
    let s = store
        .create_session(&alice.id, Duration::from_secs(60), None, None)
        .await
        .unwrap();
    store.set_disabled(&alice.id, true).await.unwrap();
    assert_eq!(
        store
            .get_session(s.cookie_value.expose_secret())
            .await
            .unwrap(),
        None
    );
    assert!(store.get_user(&alice.id).await.unwrap().unwrap().disabled);
}

async fn pat_is_shown_once_verified_and_revoked(db: TestDb) {
    let store = open_store(&db).await;
    let alice = user(&store, "alice").await;
    let bob = user(&store, "bob").await;
    let new = store
        .create_pat(&alice.id, "laptop agent", &["mcp", "api:read"], None)
        .await
        .unwrap();
    let token = new.token.expose_secret().to_owned();
    assert!(token.starts_with("tsr_pat_"));
    assert_eq!(token.len(), "tsr_pat_".len() + 43);
    assert_eq!(new.pat.prefix, token[..12]);
    assert_eq!(new.pat.scopes, vec!["mcp", "api:read"]);

    // Stored as a hash only.
    let row: (String, String) =
        sqlx::query_as("SELECT token_hash, prefix FROM personal_access_tokens WHERE id = $1")
            .bind(&new.pat.id)
            .fetch_one(&store.pool)
            .await
            .unwrap();
    assert_eq!(row.0, hash_secret(&token));
    assert!(!row.0.contains(&token[8..]) && !row.1.contains(&token[12..]));
    // Listing never returns the token.
    let listed = store.list_pats(&alice.id).await.unwrap();
    assert_eq!(listed, vec![new.pat.clone()]);
    assert!(!format!("{listed:?}").contains(&token[12..]));

    let ok = store.verify_pat(&token).await.unwrap();
    assert_eq!(ok.user.id, alice.id);
    assert_eq!(ok.pat.id, new.pat.id);
    assert!(ok.pat.last_used_at.is_some());
    assert!(
        store.list_pats(&alice.id).await.unwrap()[0]
            .last_used_at
            .is_some()
    );

    for bad in [
        "",
        "tsr_pat_",
        "tsr_pat_AAAA",
        &token[..token.len() - 1],
        "Bearer x",
    ] {
        assert!(matches!(
            store.verify_pat(bad).await,
            Err(StoreError::PatRejected(PatRejection::Unknown))
        ));
    }

    // Bob cannot revoke Alice's token.
    assert!(matches!(
        store.revoke_pat(&bob.id, &new.pat.id).await,
        Err(StoreError::PatNotFound { .. })
    ));
    store.revoke_pat(&alice.id, &new.pat.id).await.unwrap();
    store.revoke_pat(&alice.id, &new.pat.id).await.unwrap();
    let err = store.verify_pat(&token).await.unwrap_err();
    assert!(matches!(
        err,
        StoreError::PatRejected(PatRejection::Revoked)
    ));
    assert_eq!(
        err.to_string(),
        "personal access token rejected: token revoked"
    );
    assert!(!err.to_string().contains(&token));
}

async fn expired_pat_and_disabled_user_are_rejected(db: TestDb) {
    let store = open_store(&db).await;
    let alice = user(&store, "alice").await;
    let expired = store
        .create_pat(&alice.id, "old", &["mcp"], Some(now_unix() - 1))
        .await
        .unwrap();
    assert!(matches!(
        store.verify_pat(expired.token.expose_secret()).await,
        Err(StoreError::PatRejected(PatRejection::Expired))
    ));
    let live = store
        .create_pat(&alice.id, "new", &["mcp"], Some(now_unix() + 3600))
        .await
        .unwrap();
    store.verify_pat(live.token.expose_secret()).await.unwrap();
    store.set_disabled(&alice.id, true).await.unwrap();
    assert!(matches!(
        store.verify_pat(live.token.expose_secret()).await,
        Err(StoreError::PatRejected(PatRejection::UserDisabled))
    ));
    assert!(matches!(
        store.create_pat(&alice.id, "x", &["two words"], None).await,
        Err(StoreError::InvalidScope(_))
    ));
    assert!(matches!(
        store.create_pat("ghost", "x", &["mcp"], None).await,
        Err(StoreError::UserNotFound(_))
    ));
}

fn tokens(access: &str) -> IdpTokens {
    IdpTokens {
        access_token: SecretString::from(access),
        refresh_token: Some(SecretString::from(format!("{access}-refresh"))),
        id_token: Some(SecretString::from(format!("{access}-id"))),
        expires_at: Some(1_900_000_000),
        scopes: vec!["openid".into(), "email".into()],
    }
}

async fn idp_tokens_are_sealed_at_rest_and_bound_to_their_user(db: TestDb) {
    let store = open_store(&db).await;
    let alice = user(&store, "alice").await;
    let bob = user(&store, "bob").await;
    store
        .put_idp_tokens(&alice.id, &tokens("alice-access-SECRET"))
        .await
        .unwrap();
    store
        .put_idp_tokens(&bob.id, &tokens("bob-access-SECRET"))
        .await
        .unwrap();

    let got = store.get_idp_tokens(&alice.id).await.unwrap().unwrap();
    assert_eq!(
        got.tokens.access_token.expose_secret(),
        "alice-access-SECRET"
    );
    assert_eq!(
        got.tokens.refresh_token.unwrap().expose_secret(),
        "alice-access-SECRET-refresh"
    );
    assert_eq!(
        got.tokens.id_token.unwrap().expose_secret(),
        "alice-access-SECRET-id"
    );
    assert_eq!(got.tokens.expires_at, Some(1_900_000_000));
    assert_eq!(got.tokens.scopes, vec!["openid", "email"]);
    assert!(got.updated_at > 0);

    // At rest: sealed values, no plaintext anywhere in the row or in the file.
    let raw: (String, String, String) = sqlx::query_as(
        "SELECT access_token_sealed, refresh_token_sealed, id_token_sealed \
         FROM idp_tokens WHERE user_id = $1",
    )
    .bind(&alice.id)
    .fetch_one(&store.pool)
    .await
    .unwrap();
    for column in [&raw.0, &raw.1, &raw.2] {
        assert!(column.starts_with("tsv1."), "{column}");
        assert!(!column.contains("SECRET"), "{column}");
    }
    if let Some(path) = db.sqlite_path() {
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&store.pool)
            .await
            .unwrap();
        let file = std::fs::read(path).unwrap();
        assert!(!file.windows(6).any(|w| w == b"SECRET"));
    }

    // Alice's sealed row copied onto Bob's does not open for Bob.
    sqlx::query(
        "UPDATE idp_tokens SET access_token_sealed = $1, refresh_token_sealed = $2, \
           id_token_sealed = $3 WHERE user_id = $4",
    )
    .bind(&raw.0)
    .bind(&raw.1)
    .bind(&raw.2)
    .bind(&bob.id)
    .execute(&store.pool)
    .await
    .unwrap();
    let err = store.get_idp_tokens(&bob.id).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Seal(SealError::Mismatch)),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "sealed value does not belong to this record or was altered"
    );

    // Alice's refresh token in her own access-token column does not open either.
    sqlx::query("UPDATE idp_tokens SET access_token_sealed = $1 WHERE user_id = $2")
        .bind(&raw.1)
        .bind(&alice.id)
        .execute(&store.pool)
        .await
        .unwrap();
    assert!(matches!(
        store.get_idp_tokens(&alice.id).await,
        Err(StoreError::Seal(SealError::Mismatch))
    ));

    // Replacing works; deleting forgets.
    store
        .put_idp_tokens(&alice.id, &tokens("alice-2"))
        .await
        .unwrap();
    let got = store.get_idp_tokens(&alice.id).await.unwrap().unwrap();
    assert_eq!(got.tokens.access_token.expose_secret(), "alice-2");
    assert!(store.delete_idp_tokens(&alice.id).await.unwrap());
    assert!(store.get_idp_tokens(&alice.id).await.unwrap().is_none());
}

async fn idp_tokens_need_a_keyring_and_name_an_unknown_key(db: TestDb) {
    let store = open_store(&db).await;
    let alice = user(&store, "alice").await;
    store.put_idp_tokens(&alice.id, &tokens("a")).await.unwrap();
    store.close().await;

    let without = db.open().await;
    assert!(matches!(
        without.get_idp_tokens(&alice.id).await,
        Err(StoreError::SealingDisabled)
    ));
    assert!(matches!(
        without.put_idp_tokens(&alice.id, &tokens("a")).await,
        Err(StoreError::SealingDisabled)
    ));

    let other_key = SealingKey::parse(
        &SecretString::from("ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8="),
        "test",
    )
    .unwrap();
    let rotated = without.with_keyring(Arc::new(Keyring::new(other_key, vec![]).unwrap()));
    let err = rotated.get_idp_tokens(&alice.id).await.unwrap_err();
    let kid = keyring().active_kid().to_owned();
    assert!(
        matches!(&err, StoreError::Seal(SealError::UnknownKeyId(k)) if *k == kid),
        "{err:?}"
    );
    assert!(err.to_string().contains(&kid));
}

async fn debug_of_store_and_secrets_redacts(db: TestDb) {
    let store = open_store(&db).await;
    let alice = user(&store, "alice").await;
    let pat = store
        .create_pat(&alice.id, "n", &["mcp"], None)
        .await
        .unwrap();
    let session = store
        .create_session(&alice.id, Duration::from_secs(60), None, None)
        .await
        .unwrap();
    let dbg = format!("{store:?} {pat:?} {session:?} {:?}", tokens("tok-SECRET"));
    assert!(!dbg.contains(pat.token.expose_secret()), "{dbg}");
    assert!(!dbg.contains(session.cookie_value.expose_secret()), "{dbg}");
    assert!(!dbg.contains("tok-SECRET"), "{dbg}");
    assert!(!dbg.contains(KEY), "{dbg}");
}

both_backends!(
    upsert_creates_once_per_identity_and_updates_profile,
    sessions_are_found_by_cookie_and_expire,
    disabling_a_user_ends_their_sessions,
    pat_is_shown_once_verified_and_revoked,
    expired_pat_and_disabled_user_are_rejected,
    idp_tokens_are_sealed_at_rest_and_bound_to_their_user,
    idp_tokens_need_a_keyring_and_name_an_unknown_key,
    debug_of_store_and_secrets_redacts,
);
