use super::*;

const KEY_A: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="; // bytes 0..32
const KEY_B: &str = "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8="; // bytes 32..64

fn key(b64: &str) -> SealingKey {
    SealingKey::parse(&SecretString::from(b64), "test").unwrap()
}

fn ring(active: &str, older: &[&str]) -> Keyring {
    Keyring::new(key(active), older.iter().map(|k| key(k)).collect()).unwrap()
}

fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let vars: Vec<(String, String)> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
}

#[test]
fn round_trip_and_format() {
    let ring = ring(KEY_A, &[]);
    let aad = Aad::idp_token("alice", IdpTokenKind::Access);
    let sealed = ring
        .seal_str(&SecretString::from("access-token-123"), &aad)
        .unwrap();
    let parts: Vec<&str> = sealed.split('.').collect();
    assert_eq!(parts.len(), 4);
    assert_eq!(parts[0], "tsv1");
    assert_eq!(parts[1], ring.active_kid());
    assert_eq!(URL_SAFE_NO_PAD.decode(parts[2]).unwrap().len(), 12);
    assert!(!sealed.contains("access-token-123"));
    let opened = ring.open_string(&sealed, &aad).unwrap();
    assert_eq!(opened.expose_secret(), "access-token-123");
    let bytes = ring.open(&sealed, &aad).unwrap();
    assert_eq!(bytes.expose_secret(), b"access-token-123");
}

#[test]
fn each_seal_uses_a_fresh_nonce() {
    let ring = ring(KEY_A, &[]);
    let aad = Aad::credential("alice", "github_0123");
    let a = ring.seal(b"same", &aad).unwrap();
    let b = ring.seal(b"same", &aad).unwrap();
    assert_ne!(a, b);
}

#[test]
fn derived_kid_is_sha256_prefix_and_explicit_kid_is_kept() {
    let k = key(KEY_A);
    let expected: String = Sha256::digest(STANDARD_PAD_INDIFFERENT.decode(KEY_A).unwrap())[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(k.kid(), expected);
    assert_eq!(k.kid().len(), 8);
    let named = key(&format!("2026-11:{KEY_A}"));
    assert_eq!(named.kid(), "2026-11");
}

#[test]
fn record_copied_to_another_user_fails_to_open() {
    let ring = ring(KEY_A, &[]);
    let sealed = ring
        .seal(b"alice-secret", &Aad::credential("alice", "github_0123"))
        .unwrap();
    for other in [
        Aad::credential("bob", "github_0123"),
        Aad::credential("alice", "gitlab_4567"),
        Aad::idp_token("alice", IdpTokenKind::Access),
    ] {
        let err = ring.open(&sealed, &other).unwrap_err();
        assert!(matches!(err, SealError::Mismatch), "{err:?}");
        assert_eq!(
            err.to_string(),
            "sealed value does not belong to this record or was altered"
        );
    }
}

#[test]
fn aad_fields_cannot_be_shifted_across_the_separator() {
    let a = Aad::new("credential").field("alice|x").field("y");
    let b = Aad::new("credential").field("alice").field("x|y");
    assert_ne!(a.as_bytes(), b.as_bytes());
    assert_eq!(
        Aad::idp_token("u1", IdpTokenKind::Refresh).as_bytes(),
        b"idp_token|u1|refresh"
    );
    assert_eq!(
        Aad::credential("u1", "srv_ab").as_bytes(),
        b"credential|u1|srv_ab"
    );
}

#[test]
fn unknown_kid_error_names_the_kid() {
    let old = ring(KEY_A, &[]);
    let aad = Aad::credential("alice", "s");
    let sealed = old.seal(b"x", &aad).unwrap();
    let new = ring(KEY_B, &[]);
    let err = new.open(&sealed, &aad).unwrap_err();
    let kid = old.active_kid().to_owned();
    assert!(matches!(&err, SealError::UnknownKeyId(k) if *k == kid));
    assert!(err.to_string().contains(&kid), "{err}");
    assert!(err.to_string().contains(ENV_OLD_KEYS), "{err}");
}

#[test]
fn rotation_seals_with_active_and_opens_with_older() {
    let old = ring(KEY_A, &[]);
    let aad = Aad::credential("alice", "s");
    let before = old.seal(b"v1", &aad).unwrap();
    let rotated = ring(KEY_B, &[KEY_A]);
    assert_eq!(rotated.open(&before, &aad).unwrap().expose_secret(), b"v1");
    let after = rotated.seal(b"v2", &aad).unwrap();
    assert_eq!(Keyring::kid_of(&after).unwrap(), rotated.active_kid());
    assert_eq!(Keyring::kid_of(&before).unwrap(), old.active_kid());
    assert_eq!(rotated.kids().count(), 2);
}

#[test]
fn same_kid_with_a_different_key_fails_as_mismatch() {
    let aad = Aad::credential("alice", "s");
    let sealed = Keyring::new(key(&format!("k1:{KEY_A}")), vec![])
        .unwrap()
        .seal(b"x", &aad)
        .unwrap();
    let other = Keyring::new(key(&format!("k1:{KEY_B}")), vec![]).unwrap();
    assert!(matches!(
        other.open(&sealed, &aad).unwrap_err(),
        SealError::Mismatch
    ));
}

#[test]
fn tampered_values_fail() {
    let ring = ring(KEY_A, &[]);
    let aad = Aad::credential("alice", "s");
    let sealed = ring.seal(b"secret value", &aad).unwrap();
    let (head, ct) = sealed.rsplit_once('.').unwrap();
    let mut bytes = URL_SAFE_NO_PAD.decode(ct).unwrap();
    for i in [0, bytes.len() / 2, bytes.len() - 1] {
        bytes[i] ^= 0x01;
        let tampered = format!("{head}.{}", URL_SAFE_NO_PAD.encode(&bytes));
        assert!(matches!(
            ring.open(&tampered, &aad).unwrap_err(),
            SealError::Mismatch
        ));
        bytes[i] ^= 0x01;
    }
    // A different nonce.
    let parts: Vec<&str> = sealed.split('.').collect();
    let other_nonce = URL_SAFE_NO_PAD.encode([7u8; 12]);
    let swapped = format!("{}.{}.{}.{}", parts[0], parts[1], other_nonce, parts[3]);
    assert!(matches!(
        ring.open(&swapped, &aad).unwrap_err(),
        SealError::Mismatch
    ));
    // Truncated, garbage, wrong version.
    for bad in [
        "",
        "tsv1",
        "tsv1.abc",
        &sealed[..sealed.len() - 30],
        &sealed.replacen("tsv1", "tsv2", 1),
        "tsv1.a.b.c.d",
        "tsv1.bad kid.AAAA.AAAA",
    ] {
        let err = ring.open(bad, &aad).unwrap_err();
        assert!(
            matches!(err, SealError::Malformed | SealError::Mismatch),
            "{bad}: {err:?}"
        );
    }
}

#[test]
fn malformed_keys_are_rejected_without_echoing_the_key() {
    let cases = [
        ("not base64 at all!!", "not valid base64"),
        ("c2hvcnQ=", "exactly 32 bytes for AES-256 (got 5)"),
        (
            "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gIQ==",
            "(got 34)",
        ),
        (
            "bad kid!:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
            "key id",
        ),
        ("   ", "is empty"),
    ];
    for (text, expected) in cases {
        let err = SealingKey::parse(&SecretString::from(text), ENV_KEY).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(expected), "{msg}");
        assert!(msg.starts_with(ENV_KEY), "{msg}");
        assert!(msg.contains("openssl rand -base64 32"), "{msg}");
        let b64 = text.rsplit(':').next().unwrap().trim();
        if !b64.is_empty() {
            assert!(!msg.contains(b64), "{msg}");
        }
    }
}

#[test]
fn from_env_prefers_tessera_key_and_accepts_the_reference_variable() {
    let ring = Keyring::from_lookup(env(&[(ENV_KEY, KEY_A), (ENV_REFERENCE_KEY, KEY_B)])).unwrap();
    assert_eq!(ring.active_kid(), key(KEY_A).kid());
    let ring = Keyring::from_lookup(env(&[(ENV_REFERENCE_KEY, KEY_B)])).unwrap();
    assert_eq!(ring.active_kid(), key(KEY_B).kid());
    let ring = Keyring::from_lookup(env(&[
        (ENV_KEY, KEY_B),
        (ENV_OLD_KEYS, &format!("{KEY_A}, old2:{KEY_A}")),
    ]))
    .unwrap();
    assert_eq!(
        ring.kids().collect::<Vec<_>>(),
        vec![key(KEY_B).kid(), key(KEY_A).kid(), "old2"]
    );
}

#[test]
fn from_env_errors_name_the_variable() {
    let err = Keyring::from_lookup(env(&[])).unwrap_err();
    assert!(matches!(err, KeyError::Missing));
    assert!(err.to_string().contains(ENV_KEY));
    assert!(err.to_string().contains(ENV_REFERENCE_KEY));

    let err = Keyring::from_lookup(env(&[(ENV_REFERENCE_KEY, "c2hvcnQ=")])).unwrap_err();
    assert!(err.to_string().starts_with(ENV_REFERENCE_KEY), "{err}");

    let err =
        Keyring::from_lookup(env(&[(ENV_KEY, KEY_A), (ENV_OLD_KEYS, "x,c2hvcnQ=")])).unwrap_err();
    assert!(
        err.to_string()
            .starts_with(&format!("{ENV_OLD_KEYS} entry 1")),
        "{err}"
    );

    let err = Keyring::from_lookup(env(&[(ENV_KEY, KEY_A), (ENV_OLD_KEYS, KEY_A)])).unwrap_err();
    assert!(matches!(err, KeyError::DuplicateKeyId { .. }), "{err}");
}

#[test]
fn from_file_reads_active_then_older_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys");
    std::fs::write(&path, format!("# rotated 2026-11\n{KEY_B}\n\n{KEY_A}\n")).unwrap();
    let ring = Keyring::from_file(&path).unwrap();
    assert_eq!(ring.active_kid(), key(KEY_B).kid());
    assert_eq!(ring.kids().count(), 2);

    std::fs::write(&path, format!("{KEY_B}\nc2hvcnQ=\n")).unwrap();
    let err = Keyring::from_file(&path).unwrap_err().to_string();
    assert!(err.contains("keys line 2"), "{err}");
    assert!(!err.contains("c2hvcnQ"), "{err}");

    std::fs::write(&path, "# nothing\n").unwrap();
    assert!(matches!(
        Keyring::from_file(&path).unwrap_err(),
        KeyError::EmptyFile { .. }
    ));
    let err = Keyring::from_file(&dir.path().join("missing")).unwrap_err();
    assert!(err.to_string().contains("missing"), "{err}");
}

#[test]
fn debug_prints_key_ids_only() {
    let ring = ring(KEY_B, &[KEY_A]);
    let dbg = format!("{ring:?} {:?}", key(KEY_A));
    assert!(dbg.contains(ring.active_kid()), "{dbg}");
    assert!(dbg.contains(key(KEY_A).kid()), "{dbg}");
    for k in [KEY_A, KEY_B] {
        assert!(!dbg.contains(k), "{dbg}");
        assert!(!dbg.contains(&k[..12]), "{dbg}");
    }
    // Debug of the raw bytes (decimal or hex) must not appear either.
    assert!(!dbg.contains("32, 33, 34"), "{dbg}");
    assert!(!dbg.contains("0x20"), "{dbg}");
}
