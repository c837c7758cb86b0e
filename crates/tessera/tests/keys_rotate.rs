//! `tessera keys rotate` against a real store: A-sealed rows move to B, a re-run is a no-op, the
//! store then opens with B alone, and a missing old key is reported with exit 1.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

use secrecy::{ExposeSecret as _, SecretString};
use tessera_store::{IdpTokens, Keyring, Role, SealingKey, Store, UserLogin};

const KEY_A: &str = "ka:QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE=";
const KEY_B: &str = "kb:QkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkI=";
const ACCESS: &str = "alice-idp-access-token";

fn keyring(active: &str, older: &[&str]) -> Arc<Keyring> {
    let parse = |k: &str| SealingKey::parse(&SecretString::from(k), "test").expect("key");
    Arc::new(Keyring::new(parse(active), older.iter().map(|k| parse(k)).collect()).expect("ring"))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// A store in `dir` holding alice's provider tokens sealed under key A; returns her user id.
fn store_sealed_with_a(dir: &Path) -> String {
    runtime().block_on(async {
        let store = Store::open(dir)
            .await
            .expect("open")
            .with_keyring(keyring(KEY_A, &[]));
        let user = store
            .upsert_user(&UserLogin {
                issuer: "https://idp.example",
                subject: "alice",
                email: Some("alice@example.com"),
                display_name: Some("Alice"),
                role_if_new: Role::User,
            })
            .await
            .expect("user");
        store
            .put_idp_tokens(
                &user.id,
                &IdpTokens {
                    access_token: SecretString::from(ACCESS),
                    refresh_token: Some(SecretString::from("alice-idp-refresh-token")),
                    id_token: None,
                    expires_at: None,
                    scopes: vec!["openid".into()],
                },
            )
            .await
            .expect("put");
        store.close().await;
        user.id
    })
}

fn rotate(dir: &Path, active: &str, old: Option<&str>, extra: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tessera"));
    cmd.args(["keys", "rotate", "--data-dir"])
        .arg(dir)
        .args(extra)
        .env("TESSERA_SEALING_KEY", active)
        .env_remove("TESSERA_SEALING_KEYS_OLD")
        .env_remove("MCPPROXY_CRED_KEY")
        .env("RUST_LOG", "warn");
    if let Some(old) = old {
        cmd.env("TESSERA_SEALING_KEYS_OLD", old);
    }
    cmd.output().expect("run tessera")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn rotation_moves_rows_to_the_new_key_and_is_idempotent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let user = store_sealed_with_a(dir.path());

    let first = rotate(dir.path(), KEY_B, Some(KEY_A), &[]);
    let stdout = text(&first.stdout);
    assert!(
        first.status.success(),
        "exit {:?}\nstdout: {stdout}\nstderr: {}",
        first.status,
        text(&first.stderr)
    );
    assert!(
        stdout.contains("resealed 1, already current 0, unreadable 0"),
        "{stdout}"
    );

    let again = rotate(dir.path(), KEY_B, Some(KEY_A), &["--output", "json"]);
    assert!(again.status.success(), "{}", text(&again.stderr));
    let report: serde_json::Value = serde_json::from_slice(&again.stdout).expect("json");
    assert_eq!(report["resealed"], 0, "{report}");
    assert_eq!(report["already_current"], 1, "{report}");
    assert_eq!(report["complete"], true, "{report}");
    assert_eq!(report["active_kid"], "kb", "{report}");

    // Key A is no longer needed.
    runtime().block_on(async {
        let store = Store::open(dir.path())
            .await
            .expect("open")
            .with_keyring(keyring(KEY_B, &[]));
        let tokens = store
            .get_idp_tokens(&user)
            .await
            .expect("opens with B only")
            .expect("tokens");
        assert_eq!(tokens.tokens.access_token.expose_secret(), ACCESS);
        store.close().await;
    });
}

#[test]
fn keys_file_first_line_is_active() {
    let dir = tempfile::tempdir().expect("tempdir");
    store_sealed_with_a(dir.path());
    let file = dir.path().join("keys");
    std::fs::write(&file, format!("# new key first\n{KEY_B}\n{KEY_A}\n")).expect("write");
    // The environment names some other key: --keys-file wins.
    let out = rotate(
        dir.path(),
        "kc:Q0NDQ0NDQ0NDQ0NDQ0NDQ0NDQ0NDQ0NDQ0NDQ0NDQ0M=",
        None,
        &["--keys-file", file.to_str().expect("utf-8"), "-o", "json"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(report["resealed"], 1, "{report}");
    assert_eq!(report["active_kid"], "kb", "{report}");
}

#[test]
fn a_missing_old_key_fails_with_what_to_do() {
    let dir = tempfile::tempdir().expect("tempdir");
    store_sealed_with_a(dir.path());

    let out = rotate(dir.path(), KEY_B, None, &[]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(
        text(&out.stdout).contains("resealed 0, already current 0, unreadable 1"),
        "{}",
        text(&out.stdout)
    );
    assert!(stderr.contains("rotation incomplete"), "{stderr}");
    assert!(stderr.contains("TESSERA_SEALING_KEYS_OLD"), "{stderr}");
    assert!(stderr.contains("key id ka"), "{stderr}");
    assert!(!stderr.contains(ACCESS), "{stderr}");
}

#[test]
fn a_missing_store_is_an_error_not_an_empty_success() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = rotate(&dir.path().join("nope"), KEY_B, None, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no store at"),
        "{}",
        text(&out.stderr)
    );
    assert!(!dir.path().join("nope").exists());
}
