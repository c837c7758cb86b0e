//! Personal servers, shared-server preferences, agent tokens, the admin's session list, the
//! dashboard counts and the replicas' reports — on both backends.

use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use super::test_db::{TestDb, both_backends};
use super::*;
use crate::seal::SealingKey;

const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

fn keyring() -> Arc<Keyring> {
    let key = SealingKey::parse(&SecretString::from(KEY), "test").unwrap();
    Arc::new(Keyring::new(key, vec![]).unwrap())
}

async fn open_store(db: &TestDb) -> Store {
    db.open().await.with_keyring(keyring())
}

async fn user(store: &Store, subject: &str) -> User {
    store
        .upsert_user(&UserLogin {
            issuer: "https://idp.example.test",
            subject,
            email: Some(&format!("{subject}@example.test")),
            display_name: None,
            role_if_new: Role::User,
        })
        .await
        .unwrap()
}

fn headers(pairs: &[(&str, &str)]) -> Vec<(String, SecretString)> {
    pairs
        .iter()
        .map(|(n, v)| ((*n).to_owned(), SecretString::from(*v)))
        .collect()
}

fn new<'a>(name: &'a str, headers: &'a [(String, SecretString)]) -> NewUserServer<'a> {
    NewUserServer {
        name,
        url: "https://mcp.example.test/mcp",
        protocol: "streamable-http",
        headers,
        enabled: true,
        auth_broker: None,
    }
}

async fn user_server_auth_broker_is_sealed_to_its_row(db: TestDb) {
    let store = open_store(&db).await;
    let alice = user(&store, "alice").await;
    let block = SecretString::from(
        r#"{"mode":"oauth_connect","client_id":"c","client_secret":"br0ker-s3cret"}"#,
    );
    let created = store
        .create_user_server(
            &alice.id,
            &NewUserServer {
                auth_broker: Some(&block),
                ..new("crm", &[])
            },
            10,
        )
        .await
        .unwrap();
    assert!(created.brokered);
    assert_eq!(
        store.get_user_server(&alice.id, "crm").await.unwrap(),
        Some(created.clone())
    );
    let sealed: Option<String> =
        sqlx::query_scalar("SELECT auth_broker_sealed FROM user_servers WHERE id = $1")
            .bind(&created.id)
            .fetch_one(&store.pool)
            .await
            .unwrap();
    let sealed = sealed.unwrap();
    assert!(sealed.starts_with("tsv1."), "{sealed}");
    assert!(!sealed.contains("br0ker"));
    let opened = store
        .user_server_auth_broker(&created)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(opened.expose_secret(), block.expose_secret());

    // A plain server has none; the block copied to another row does not open there.
    let plain = store
        .create_user_server(&alice.id, &new("plain", &[]), 10)
        .await
        .unwrap();
    assert!(!plain.brokered);
    assert!(
        store
            .user_server_auth_broker(&plain)
            .await
            .unwrap()
            .is_none()
    );
    sqlx::query("UPDATE user_servers SET auth_broker_sealed = $1 WHERE id = $2")
        .bind(&sealed)
        .bind(&plain.id)
        .execute(&store.pool)
        .await
        .unwrap();
    assert!(store.user_server_auth_broker(&plain).await.is_err());
    // Listed with the flag, never the block.
    let listed = store.list_user_servers(&alice.id).await.unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|s| (s.name.as_str(), s.brokered))
            .collect::<Vec<_>>(),
        [("crm", true), ("plain", true)]
    );
}

async fn user_servers_crud(db: TestDb) {
    let store = open_store(&db).await;
    let alice = user(&store, "alice").await;
    let bob = user(&store, "bob").await;
    let h = headers(&[("Authorization", "Bearer s3cret"), ("X-Api-Key", "k3y")]);

    let created = store
        .create_user_server(&alice.id, &new("notes", &h), 10)
        .await
        .unwrap();
    assert_eq!(created.name, "notes");
    assert_eq!(created.header_names, ["Authorization", "X-Api-Key"]);
    assert!(created.enabled);
    assert_eq!(
        store.get_user_server(&alice.id, "notes").await.unwrap(),
        Some(created.clone())
    );
    // Nothing readable at rest.
    let sealed: Option<String> =
        sqlx::query_scalar("SELECT headers_sealed FROM user_servers WHERE id = $1")
            .bind(&created.id)
            .fetch_one(&store.pool)
            .await
            .unwrap();
    let sealed = sealed.unwrap();
    assert!(sealed.starts_with("tsv1."), "{sealed}");
    assert!(!sealed.contains("s3cret"));
    let opened = store.user_server_headers(&created).await.unwrap();
    assert_eq!(opened.len(), 2);
    assert_eq!(opened[0].0, "Authorization");
    assert_eq!(opened[0].1.expose_secret(), "Bearer s3cret");
    assert_eq!(opened[1].1.expose_secret(), "k3y");

    // Unique per user; the same name for another user is fine.
    assert!(matches!(
        store.create_user_server(&alice.id, &new("notes", &[]), 10).await,
        Err(StoreError::UserServerExists { name }) if name == "notes"
    ));
    let bobs = store
        .create_user_server(&bob.id, &new("notes", &[]), 10)
        .await
        .unwrap();
    assert!(bobs.header_names.is_empty());
    assert!(store.user_server_headers(&bobs).await.unwrap().is_empty());
    store
        .create_user_server(&alice.id, &new("alpha", &[]), 10)
        .await
        .unwrap();
    let names: Vec<String> = store
        .list_user_servers(&alice.id)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["alpha", "notes"]);
    assert_eq!(store.list_user_servers(&bob.id).await.unwrap().len(), 1);

    // Update: only what is given changes.
    let updated = store
        .update_user_server(
            &alice.id,
            "notes",
            &UserServerUpdate {
                url: Some("https://other.example.test/sse"),
                protocol: Some("sse"),
                enabled: Some(false),
                ..UserServerUpdate::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(updated.url, "https://other.example.test/sse");
    assert_eq!(updated.protocol, "sse");
    assert!(!updated.enabled);
    assert_eq!(updated.header_names, created.header_names);
    assert_eq!(store.user_server_headers(&updated).await.unwrap().len(), 2);
    let h2 = headers(&[("X-Token", "new")]);
    let updated = store
        .update_user_server(
            &alice.id,
            "notes",
            &UserServerUpdate {
                headers: Some(&h2),
                ..UserServerUpdate::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(updated.header_names, ["X-Token"]);
    assert!(!updated.enabled, "unchanged");
    let opened = store.user_server_headers(&updated).await.unwrap();
    assert_eq!(opened.len(), 1);
    assert_eq!(opened[0].1.expose_secret(), "new");
    let cleared = store
        .update_user_server(
            &alice.id,
            "notes",
            &UserServerUpdate {
                headers: Some(&[]),
                ..UserServerUpdate::default()
            },
        )
        .await
        .unwrap();
    assert!(cleared.header_names.is_empty());
    assert!(
        store
            .user_server_headers(&cleared)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        store
            .update_user_server(&bob.id, "alpha", &UserServerUpdate::default())
            .await,
        Err(StoreError::UserServerNotFound { name }) if name == "alpha"
    ));

    // Delete: only the owner's.
    assert!(!store.delete_user_server(&bob.id, "alpha").await.unwrap());
    assert!(store.delete_user_server(&alice.id, "alpha").await.unwrap());
    assert!(!store.delete_user_server(&alice.id, "alpha").await.unwrap());
    assert_eq!(
        store.get_user_server(&alice.id, "alpha").await.unwrap(),
        None
    );

    // Unknown user.
    assert!(matches!(
        store.create_user_server("ghost", &new("x", &[]), 10).await,
        Err(StoreError::UserNotFound(_))
    ));
}

async fn user_server_quota_is_exact(db: TestDb) {
    let store = open_store(&db).await;
    let alice = user(&store, "alice").await;
    for i in 0..3 {
        store
            .create_user_server(&alice.id, &new(&format!("s{i}"), &[]), 3)
            .await
            .unwrap();
    }
    assert!(matches!(
        store
            .create_user_server(&alice.id, &new("s3", &[]), 3)
            .await,
        Err(StoreError::UserServerQuota { max: 3 })
    ));
    // Another user has their own quota; a deletion frees a place.
    let bob = user(&store, "bob").await;
    store
        .create_user_server(&bob.id, &new("s0", &[]), 3)
        .await
        .unwrap();
    store.delete_user_server(&alice.id, "s0").await.unwrap();
    store
        .create_user_server(&alice.id, &new("s3", &[]), 3)
        .await
        .unwrap();
    assert_eq!(store.list_user_servers(&alice.id).await.unwrap().len(), 3);

    // Concurrent adds cannot pass the quota together.
    let carol = user(&store, "carol").await;
    let attempts = (0..6).map(|i| {
        let store = store.clone();
        let carol = carol.id.clone();
        tokio::spawn(async move {
            store
                .create_user_server(&carol, &new(&format!("c{i}"), &[]), 2)
                .await
        })
    });
    let mut ok = 0;
    for attempt in attempts {
        if attempt.await.unwrap().is_ok() {
            ok += 1;
        }
    }
    assert!(ok <= 2, "{ok} adds passed a quota of 2");
    assert_eq!(store.list_user_servers(&carol.id).await.unwrap().len(), ok);
}

async fn user_server_headers_do_not_open_in_another_row(db: TestDb) {
    let store = open_store(&db).await;
    let alice = user(&store, "alice").await;
    let bob = user(&store, "bob").await;
    let h = headers(&[("Authorization", "Bearer alice-only")]);
    let alices = store
        .create_user_server(&alice.id, &new("notes", &h), 10)
        .await
        .unwrap();
    let h_bob = headers(&[("Authorization", "Bearer bob")]);
    let bobs = store
        .create_user_server(&bob.id, &new("notes", &h_bob), 10)
        .await
        .unwrap();
    let other = store
        .create_user_server(&alice.id, &new("other", &h_bob), 10)
        .await
        .unwrap();
    // Copy alice's sealed headers into bob's row and into alice's other row.
    for target in [&bobs.id, &other.id] {
        sqlx::query(
            "UPDATE user_servers SET headers_sealed = \
               (SELECT headers_sealed FROM user_servers WHERE id = $1) WHERE id = $2",
        )
        .bind(&alices.id)
        .bind(target)
        .execute(&store.pool)
        .await
        .unwrap();
    }
    assert!(matches!(
        store.user_server_headers(&bobs).await,
        Err(StoreError::Seal(_))
    ));
    assert!(matches!(
        store.user_server_headers(&other).await,
        Err(StoreError::Seal(_))
    ));
    assert_eq!(
        store.user_server_headers(&alices).await.unwrap()[0]
            .1
            .expose_secret(),
        "Bearer alice-only"
    );
    // Without a keyring, headers cannot be stored (none is fine).
    let plain = db.open().await;
    assert!(matches!(
        plain.create_user_server(&alice.id, &new("x", &h), 10).await,
        Err(StoreError::SealingDisabled)
    ));
    plain
        .create_user_server(&alice.id, &new("x", &[]), 10)
        .await
        .unwrap();
    // Key rotation re-seals personal servers' headers too; the copied values stay unreadable.
    let old = SealingKey::parse(&SecretString::from(KEY), "test").unwrap();
    let rotated =
        Arc::new(Keyring::new(SealingKey::with_kid("k2", &[7u8; 32]).unwrap(), vec![old]).unwrap());
    let report = store.reseal_all(&rotated, |_, _| {}).await.unwrap();
    assert_eq!(report.resealed, 1, "{report:?}");
    assert_eq!(report.unreadable.len(), 2, "{report:?}");
    assert!(report.unreadable.iter().all(|r| r.table == "user_servers"));
    let after = db.open().await.with_keyring(Arc::new(
        Keyring::new(SealingKey::with_kid("k2", &[7u8; 32]).unwrap(), vec![]).unwrap(),
    ));
    assert_eq!(after.user_server_headers(&alices).await.unwrap().len(), 1);
}

async fn user_data_cascades_with_the_user(db: TestDb) {
    let store = open_store(&db).await;
    let alice = user(&store, "alice").await;
    let h = headers(&[("X-Key", "v")]);
    store
        .create_user_server(&alice.id, &new("notes", &h), 10)
        .await
        .unwrap();
    store
        .set_server_preference(&alice.id, "github", false)
        .await
        .unwrap();
    sqlx::query("DELETE FROM users WHERE id = $1")
        .bind(&alice.id)
        .execute(&store.pool)
        .await
        .unwrap();
    let left: i64 = sqlx::query_scalar(
        "SELECT (SELECT COUNT(*) FROM user_servers) + (SELECT COUNT(*) FROM user_server_prefs)",
    )
    .fetch_one(&store.pool)
    .await
    .unwrap();
    assert_eq!(left, 0);
}

async fn server_preferences_upsert(db: TestDb) {
    let store = open_store(&db).await;
    let alice = user(&store, "alice").await;
    let bob = user(&store, "bob").await;
    assert!(
        store
            .server_preferences(&alice.id)
            .await
            .unwrap()
            .is_empty()
    );
    store
        .set_server_preference(&alice.id, "github", false)
        .await
        .unwrap();
    store
        .set_server_preference(&alice.id, "atlassian", true)
        .await
        .unwrap();
    store
        .set_server_preference(&alice.id, "github", true)
        .await
        .unwrap();
    store
        .set_server_preference(&bob.id, "github", false)
        .await
        .unwrap();
    assert_eq!(
        store.server_preferences(&alice.id).await.unwrap(),
        [("atlassian".to_owned(), true), ("github".to_owned(), true)]
    );
    assert_eq!(
        store.server_preferences(&bob.id).await.unwrap(),
        [("github".to_owned(), false)]
    );
    assert!(matches!(
        store.set_server_preference("ghost", "github", true).await,
        Err(StoreError::UserNotFound(_))
    ));
}

async fn agent_pat_round_trip(db: TestDb) {
    let store = open_store(&db).await;
    let alice = user(&store, "alice").await;
    let servers = vec!["github".to_owned(), "notes".to_owned()];
    let agent = store
        .create_agent_pat(&alice.id, "ci", Some(&servers), &["read", "write"], None)
        .await
        .unwrap();
    assert_eq!(agent.pat.allowed_servers.as_deref(), Some(&servers[..]));
    assert_eq!(agent.pat.permissions, ["read", "write"]);
    let verified = store.verify_pat(agent.token.expose_secret()).await.unwrap();
    assert_eq!(verified.pat.allowed_servers.as_deref(), Some(&servers[..]));
    assert_eq!(verified.pat.permissions, ["read", "write"]);

    // No server list = every server; an empty list = none.
    let none = store
        .create_agent_pat(&alice.id, "none", Some(&[]), &["read"], None)
        .await
        .unwrap();
    let verified = store.verify_pat(none.token.expose_secret()).await.unwrap();
    assert_eq!(verified.pat.allowed_servers, Some(vec![]));
    assert_eq!(verified.pat.permissions, ["read"]);

    // A plain token has every permission on every server.
    let full = store
        .create_pat(&alice.id, "full", &["mcp"], None)
        .await
        .unwrap();
    let verified = store.verify_pat(full.token.expose_secret()).await.unwrap();
    assert_eq!(verified.pat.allowed_servers, None);
    assert_eq!(verified.pat.permissions, ALL_PERMISSIONS);

    let listed = store.list_pats(&alice.id).await.unwrap();
    let ci = listed.iter().find(|p| p.name == "ci").unwrap();
    assert_eq!(ci.allowed_servers.as_deref(), Some(&servers[..]));
    assert_eq!(ci.permissions, ["read", "write"]);

    // A name that would not survive the comma-joined column is refused.
    assert!(matches!(
        store
            .create_agent_pat(&alice.id, "x", Some(&["a,b".to_owned()]), &["read"], None)
            .await,
        Err(StoreError::InvalidScope(_))
    ));
}

async fn sessions_of_every_user_are_listed_and_deleted_by_id(db: TestDb) {
    let store = open_store(&db).await;
    let alice = user(&store, "alice").await;
    let bob = user(&store, "bob").await;
    let a = store
        .create_session(
            &alice.id,
            Duration::from_secs(3600),
            Some("firefox"),
            Some("10.0.0.1"),
        )
        .await
        .unwrap();
    let b = store
        .create_session(&bob.id, Duration::from_secs(3600), None, None)
        .await
        .unwrap();
    let all = store.list_all_sessions().await.unwrap();
    assert_eq!(all.len(), 2);
    let alices = all.iter().find(|s| s.user_id == alice.id).unwrap();
    assert_eq!(alices.id, a.session.id_hash);
    assert_eq!(alices.user_email.as_deref(), Some("alice@example.test"));
    assert_eq!(alices.user_agent.as_deref(), Some("firefox"));
    assert_eq!(alices.ip.as_deref(), Some("10.0.0.1"));
    // Never the cookie.
    assert!(
        all.iter()
            .all(|s| s.id != a.cookie_value.expose_secret()
                && s.id != b.cookie_value.expose_secret())
    );

    // Deleting by the cookie value does nothing; by the stored id ends the session.
    assert!(
        !store
            .delete_session_by_id(a.cookie_value.expose_secret())
            .await
            .unwrap()
    );
    assert!(
        store
            .delete_session_by_id(&a.session.id_hash)
            .await
            .unwrap()
    );
    assert!(
        !store
            .delete_session_by_id(&a.session.id_hash)
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .get_session(a.cookie_value.expose_secret())
            .await
            .unwrap(),
        None
    );
    assert!(
        store
            .get_session(b.cookie_value.expose_secret())
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(store.list_all_sessions().await.unwrap().len(), 1);
}

fn tool_call(ts: UnixTime, user: &str, outcome: ActivityOutcome) -> ActivityRecord {
    ActivityRecord {
        ts,
        user_id: Some(user.to_owned()),
        server: "github".into(),
        tool: Some("search".into()),
        request_id: None,
        method: ActivityMethod::Mcp,
        action: ActivityAction::ToolCall,
        outcome,
        reason: None,
        duration_ms: Some(3),
    }
}

async fn dashboard_counts_add_up(db: TestDb) {
    let store = open_store(&db).await;
    assert_eq!(
        store.dashboard_counts(0).await.unwrap(),
        DashboardCounts::default()
    );
    let alice = user(&store, "alice").await;
    let bob = user(&store, "bob").await;
    let carol = user(&store, "carol").await;
    store.set_disabled(&carol.id, true).await.unwrap();
    store
        .create_session(&alice.id, Duration::from_secs(3600), None, None)
        .await
        .unwrap();
    store
        .create_session(&bob.id, Duration::ZERO, None, None)
        .await
        .unwrap();
    let now = now_unix();
    let since = now - 3600;
    store
        .record_activities(&[
            tool_call(now, &alice.id, ActivityOutcome::Success),
            tool_call(now, &alice.id, ActivityOutcome::Failure),
            tool_call(now, &bob.id, ActivityOutcome::Denied),
            tool_call(now, &bob.id, ActivityOutcome::Success),
            // Too old to count.
            tool_call(since - 10, &carol.id, ActivityOutcome::Failure),
            ActivityRecord {
                action: ActivityAction::Inject,
                method: ActivityMethod::TokenExchange,
                tool: None,
                ..tool_call(now, &bob.id, ActivityOutcome::Failure)
            },
        ])
        .await
        .unwrap();
    let counts = store.dashboard_counts(since).await.unwrap();
    assert_eq!(
        counts,
        DashboardCounts {
            total_users: 3,
            disabled_users: 1,
            active_sessions: 1,
            tool_calls: 4,
            tool_errors: 2,
            active_users: 2,
        }
    );
}

async fn enabled_user_servers_open_in_one_query(db: TestDb) {
    let store = open_store(&db).await;
    let alice = user(&store, "alice").await;
    let bob = user(&store, "bob").await;
    let block = SecretString::from(r#"{"mode":"oauth_connect","client_id":"c"}"#);
    let h = headers(&[("X-B", "b-value"), ("X-A", "a-value")]);
    let crm = store
        .create_user_server(
            &alice.id,
            &NewUserServer {
                auth_broker: Some(&block),
                ..new("crm", &h)
            },
            10,
        )
        .await
        .unwrap();
    store
        .create_user_server(
            &alice.id,
            &NewUserServer {
                enabled: false,
                ..new("off", &h)
            },
            10,
        )
        .await
        .unwrap();
    let plain = store
        .create_user_server(&alice.id, &new("plain", &[]), 10)
        .await
        .unwrap();
    let broken = store
        .create_user_server(&alice.id, &new("zz-broken", &h), 10)
        .await
        .unwrap();
    store
        .create_user_server(&bob.id, &new("bobs", &h), 10)
        .await
        .unwrap();
    // A value copied from another row does not open there: only that part is an error.
    sqlx::query(
        "UPDATE user_servers SET headers_sealed = \
           (SELECT headers_sealed FROM user_servers WHERE id = $1) WHERE id = $2",
    )
    .bind(&crm.id)
    .bind(&broken.id)
    .execute(&store.pool)
    .await
    .unwrap();

    let opened = store.open_user_servers(&alice.id).await.unwrap();
    let names: Vec<&str> = opened.iter().map(|o| o.server.name.as_str()).collect();
    assert_eq!(
        names,
        ["crm", "plain", "zz-broken"],
        "enabled ones, by name, alice's only"
    );
    assert_eq!(opened[0].server, crm);
    let crm_headers = opened[0].headers.as_ref().unwrap();
    assert_eq!(
        crm_headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.expose_secret()))
            .collect::<Vec<_>>(),
        [("X-B", "b-value"), ("X-A", "a-value")],
        "in the order of header_names"
    );
    assert_eq!(
        opened[0]
            .auth_broker
            .as_ref()
            .unwrap()
            .as_ref()
            .unwrap()
            .expose_secret(),
        block.expose_secret()
    );
    assert_eq!(opened[1].server, plain);
    assert!(opened[1].headers.as_ref().unwrap().is_empty());
    assert!(opened[1].auth_broker.as_ref().unwrap().is_none());
    assert!(matches!(opened[2].headers, Err(StoreError::Seal(_))));
    assert!(opened[2].auth_broker.as_ref().unwrap().is_none());
    // The same values as the one-server openers.
    assert_eq!(
        store.user_server_headers(&crm).await.unwrap().len(),
        crm_headers.len()
    );
}

async fn regenerating_a_pat_revokes_it_and_keeps_its_limits(db: TestDb) {
    let store = open_store(&db).await;
    let alice = user(&store, "alice").await;
    let bob = user(&store, "bob").await;
    let servers = vec!["github".to_owned()];
    let old = store
        .create_agent_pat(
            &alice.id,
            "ci",
            Some(&servers),
            &["read"],
            Some(now_unix() + 60),
        )
        .await
        .unwrap();
    let later = now_unix() + 3600;
    // Not bob's to regenerate.
    assert!(matches!(
        store
            .regenerate_pat(&bob.id, &old.pat.id, Some(later))
            .await,
        Err(StoreError::PatNotFound { .. })
    ));
    let (new, replaced) = store
        .regenerate_pat(&alice.id, &old.pat.id, Some(later))
        .await
        .unwrap();
    assert_eq!(replaced.id, old.pat.id);
    assert_ne!(new.pat.id, old.pat.id);
    assert_ne!(new.token.expose_secret(), old.token.expose_secret());
    assert_eq!(new.pat.name, "ci");
    assert_eq!(new.pat.allowed_servers.as_deref(), Some(&servers[..]));
    assert_eq!(new.pat.permissions, ["read"]);
    assert_eq!(new.pat.expires_at, Some(later));
    assert!(matches!(
        store.verify_pat(old.token.expose_secret()).await,
        Err(StoreError::PatRejected(_))
    ));
    let verified = store.verify_pat(new.token.expose_secret()).await.unwrap();
    assert_eq!(verified.pat.allowed_servers.as_deref(), Some(&servers[..]));
    // Once revoked, it cannot be regenerated again (a second, concurrent attempt loses).
    assert!(matches!(
        store
            .regenerate_pat(&alice.id, &old.pat.id, Some(later))
            .await,
        Err(StoreError::PatNotFound { .. })
    ));
    assert_eq!(store.list_pats(&alice.id).await.unwrap().len(), 2);
}

async fn replicas_report_and_read_the_others(db: TestDb) {
    let store = open_store(&db).await;
    assert!(store.replica_reports("a", 0).await.unwrap().is_empty());
    store
        .report_replica("a", r#"[{"handle":"h1"}]"#, "[]")
        .await
        .unwrap();
    store.report_replica("b", "[]", "[]").await.unwrap();
    store
        .report_replica(
            "b",
            r#"[{"handle":"h2"}]"#,
            r#"[{"name":"up","state":"ready"}]"#,
        )
        .await
        .unwrap();
    let now = now_unix();
    let seen_by_a = store.replica_reports("a", now - 15).await.unwrap();
    assert_eq!(
        seen_by_a.len(),
        1,
        "only the others, each once: {seen_by_a:?}"
    );
    assert_eq!(seen_by_a[0].replica, "b");
    assert_eq!(
        seen_by_a[0].sessions, r#"[{"handle":"h2"}]"#,
        "the latest report"
    );
    assert_eq!(seen_by_a[0].upstreams, r#"[{"name":"up","state":"ready"}]"#);
    assert!(seen_by_a[0].reported_at >= now - 1);
    assert_eq!(
        store.replica_reports("b", now - 15).await.unwrap()[0].replica,
        "a"
    );
    assert!(
        store
            .replica_reports("a", now + 60)
            .await
            .unwrap()
            .is_empty(),
        "a report older than the bound is not read"
    );
    // "a" shuts down; then "b" is purged as stopped.
    assert!(store.forget_replica_report("a").await.unwrap());
    assert!(!store.forget_replica_report("a").await.unwrap());
    assert_eq!(store.purge_replica_reports(now - 3600).await.unwrap(), 0);
    assert_eq!(store.replica_reports("c", 0).await.unwrap().len(), 1);
    assert_eq!(store.purge_replica_reports(now + 60).await.unwrap(), 1);
    assert!(store.replica_reports("c", 0).await.unwrap().is_empty());
}

both_backends!(
    replicas_report_and_read_the_others,
    regenerating_a_pat_revokes_it_and_keeps_its_limits,
    enabled_user_servers_open_in_one_query,
    user_servers_crud,
    user_server_auth_broker_is_sealed_to_its_row,
    user_server_quota_is_exact,
    user_server_headers_do_not_open_in_another_row,
    user_data_cascades_with_the_user,
    server_preferences_upsert,
    agent_pat_round_trip,
    sessions_of_every_user_are_listed_and_deleted_by_id,
    dashboard_counts_add_up,
);
