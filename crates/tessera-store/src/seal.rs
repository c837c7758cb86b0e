//! Sealing: authenticated encryption of secrets at rest.
//!
//! **This module is the only code in Tessera that encrypts or decrypts.** Everything else hands a
//! plaintext secret and an [`Aad`] naming its record to a [`Keyring`] and stores the resulting
//! text; it gets the secret back only by presenting the same record's [`Aad`].
//!
//! A sealed value is ASCII text:
//!
//! ```text
//! tsv1.<kid>.<base64url nonce>.<base64url ciphertext+tag>
//! ```
//!
//! - AES-256-GCM with a fresh 12-byte random nonce for every seal.
//! - `kid` names the key that sealed the value, so a keyring holding the active key and older
//!   keys can open values sealed before a rotation (`Keyring::open` picks the key by `kid`;
//!   `Keyring::seal` always uses the active key).
//! - The associated data is `tsv1.<kid>` followed by the record's [`Aad`]: a value copied to
//!   another user's or another server's record fails to open, and so does a value whose header
//!   was edited.
//!
//! Keys are base64 (standard alphabet) of exactly 32 bytes. A key's id is the first 8 hex
//! characters of the SHA-256 of the key, or an explicit id written as `<kid>:<base64 key>`.

use std::fmt;
use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD_PAD_INDIFFERENT, URL_SAFE_NO_PAD};
use secrecy::{ExposeSecret, SecretBox, SecretString};
use sha2::{Digest, Sha256};

/// Version tag at the start of every sealed value.
pub const FORMAT_TAG: &str = "tsv1";
/// The environment variable holding the active sealing key.
pub const ENV_KEY: &str = "TESSERA_SEALING_KEY";
/// The environment variable holding older keys (comma-separated), used only to open.
pub const ENV_OLD_KEYS: &str = "TESSERA_SEALING_KEYS_OLD";
/// The reference's variable, accepted when [`ENV_KEY`] is unset.
pub const ENV_REFERENCE_KEY: &str = "MCPPROXY_CRED_KEY";

const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const MAX_KID_LEN: usize = 32;
const HOW_TO_MAKE_A_KEY: &str = "generate one with `openssl rand -base64 32`";

/// Why a key could not be loaded. Never contains key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// No key was configured where one is needed.
    #[error(
        "no sealing key configured: set {ENV_KEY} (or {ENV_REFERENCE_KEY}) to the base64 of 32 random bytes; {HOW_TO_MAKE_A_KEY}"
    )]
    Missing,
    /// A configured key could not be used; `origin` names the variable or file line.
    #[error("{origin}: {problem}; {HOW_TO_MAKE_A_KEY}")]
    Malformed {
        /// Where the key came from, e.g. `TESSERA_SEALING_KEY` or `/etc/tessera/keys line 2`.
        origin: String,
        /// What is wrong, without the key itself.
        problem: String,
    },
    /// Two keys in one keyring have the same id.
    #[error(
        "{origin}: key id {kid} is used by two keys; give one of them an explicit id as `<kid>:<base64 key>`"
    )]
    DuplicateKeyId {
        /// Where the second key came from.
        origin: String,
        /// The repeated key id.
        kid: String,
    },
    /// The key file could not be read.
    #[error("cannot read sealing key file {path}: {source}")]
    File {
        /// The key file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The key file has no key in it.
    #[error(
        "sealing key file {path} holds no key: put one base64 key per line, the active key first; {HOW_TO_MAKE_A_KEY}"
    )]
    EmptyFile {
        /// The key file.
        path: PathBuf,
    },
}

/// Why a value could not be sealed or opened. Never contains plaintext or key material.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The text is not a sealed value of a known format.
    #[error(
        "sealed value is malformed (expected {FORMAT_TAG}.<key id>.<nonce>.<ciphertext>); was it written by Tessera?"
    )]
    Malformed,
    /// The value names a key that is not in the keyring.
    #[error(
        "sealed value was sealed with key id {0}, which is not in the keyring; add that key to {ENV_OLD_KEYS} (or to the key file after the active key) to read it"
    )]
    UnknownKeyId(String),
    /// Authentication failed: wrong record (associated data), edited text, or a different key
    /// with the same id.
    #[error("sealed value does not belong to this record or was altered")]
    Mismatch,
    /// The plaintext was asked for as text but is not UTF-8.
    #[error("sealed value is not UTF-8 text")]
    NotUtf8,
    /// The operating system's random number generator failed.
    #[error("no secure random numbers available for a nonce: {0}")]
    Random(getrandom::Error),
    /// The cipher refused to seal (the message is too long for AES-GCM).
    #[error("value is too long to seal")]
    TooLong,
}

/// The associated data that binds a sealed value to the record it belongs to.
///
/// Built from a purpose and fields, joined with `|`; a field's own `|` and `\` are escaped, so
/// two different field lists never produce the same bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Aad(Vec<u8>);

/// Which of the user's identity-provider tokens a sealed value holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdpTokenKind {
    /// The access token.
    Access,
    /// The refresh token.
    Refresh,
    /// The ID token.
    Id,
}

impl IdpTokenKind {
    /// The name used in the associated data.
    pub fn as_str(self) -> &'static str {
        match self {
            IdpTokenKind::Access => "access",
            IdpTokenKind::Refresh => "refresh",
            IdpTokenKind::Id => "id",
        }
    }
}

impl Aad {
    /// Starts associated data for a kind of record (`"idp_token"`, `"credential"`, ...).
    pub fn new(purpose: &'static str) -> Self {
        let mut aad = Aad(Vec::with_capacity(64));
        aad.push_escaped(purpose.as_bytes());
        aad
    }

    /// Appends one field that identifies the record (a user id, a server key, ...).
    #[must_use]
    pub fn field(mut self, value: &str) -> Self {
        self.0.push(b'|');
        self.push_escaped(value.as_bytes());
        self
    }

    /// `idp_token|<user_id>|<kind>`: one of a user's identity-provider tokens.
    pub fn idp_token(user_id: &str, kind: IdpTokenKind) -> Self {
        Aad::new("idp_token").field(user_id).field(kind.as_str())
    }

    /// `credential|<user_id>|<server_key>`: a user's credential for one upstream server.
    pub fn credential(user_id: &str, server_key: &str) -> Self {
        Aad::new("credential").field(user_id).field(server_key)
    }

    /// `user_server|<user_id>|<id>`: the headers of one of a user's personal servers.
    pub fn user_server(user_id: &str, id: &str) -> Self {
        Aad::new("user_server").field(user_id).field(id)
    }

    /// `user_server_broker|<user_id>|<id>`: the `auth_broker` block of one of a user's personal
    /// servers.
    pub fn user_server_broker(user_id: &str, id: &str) -> Self {
        Aad::new("user_server_broker").field(user_id).field(id)
    }

    /// The bytes that are authenticated.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    fn push_escaped(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if b == b'|' || b == b'\\' {
                self.0.push(b'\\');
            }
            self.0.push(b);
        }
    }
}

impl fmt::Debug for Aad {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Record identifiers, not secrets.
        write!(f, "Aad({:?})", String::from_utf8_lossy(&self.0))
    }
}

/// One 256-bit sealing key and its id. `Debug` prints the id only.
pub struct SealingKey {
    kid: String,
    cipher: Aes256Gcm,
}

impl SealingKey {
    /// A key from its 32 bytes; the id is derived (first 8 hex chars of its SHA-256).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        Self::build(None, bytes, "key")
    }

    /// A key from its 32 bytes with an explicit id (1–32 of `A-Z a-z 0-9 _ -`).
    pub fn with_kid(kid: &str, bytes: &[u8]) -> Result<Self, KeyError> {
        Self::build(Some(kid), bytes, "key")
    }

    /// Parses `<base64 key>` or `<kid>:<base64 key>`; `origin` names where the text came from
    /// and appears in errors (the text itself never does).
    pub fn parse(text: &SecretString, origin: &str) -> Result<Self, KeyError> {
        let text = text.expose_secret().trim();
        let (kid, b64) = match text.split_once(':') {
            Some((kid, b64)) => (Some(kid.trim()), b64.trim()),
            None => (None, text),
        };
        if b64.is_empty() {
            return Err(malformed(origin, "is empty".to_owned()));
        }
        let bytes = SecretBox::new(
            STANDARD_PAD_INDIFFERENT
                .decode(b64)
                .map_err(|_| {
                    malformed(
                        origin,
                        "is not valid base64 (standard alphabet `A-Z a-z 0-9 + /`)".to_owned(),
                    )
                })?
                .into_boxed_slice(),
        );
        Self::build(kid, bytes.expose_secret(), origin)
    }

    fn build(kid: Option<&str>, bytes: &[u8], origin: &str) -> Result<Self, KeyError> {
        if bytes.len() != KEY_LEN {
            return Err(malformed(
                origin,
                format!(
                    "must decode to exactly {KEY_LEN} bytes for AES-256 (got {})",
                    bytes.len()
                ),
            ));
        }
        let kid = match kid {
            Some(kid) => {
                if !valid_kid(kid) {
                    return Err(malformed(
                        origin,
                        format!(
                            "key id before `:` must be 1-{MAX_KID_LEN} characters of A-Z a-z 0-9 _ -"
                        ),
                    ));
                }
                kid.to_owned()
            }
            None => derive_kid(bytes),
        };
        let cipher = Aes256Gcm::new_from_slice(bytes)
            .map_err(|_| malformed(origin, format!("must decode to exactly {KEY_LEN} bytes")))?;
        Ok(SealingKey { kid, cipher })
    }

    /// The key id written into every value this key seals.
    pub fn kid(&self) -> &str {
        &self.kid
    }
}

impl fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealingKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// The active key (used to seal) and older keys (used only to open values they sealed).
pub struct Keyring {
    active: SealingKey,
    older: Vec<SealingKey>,
}

impl Keyring {
    /// A keyring with one active key and any number of older keys. Key ids must be distinct.
    pub fn new(active: SealingKey, older: Vec<SealingKey>) -> Result<Self, KeyError> {
        let mut ring = Keyring {
            active,
            older: Vec::with_capacity(older.len()),
        };
        for (i, key) in older.into_iter().enumerate() {
            ring.push_older(key, &format!("older key {}", i + 1))?;
        }
        Ok(ring)
    }

    /// Loads keys from the environment: [`ENV_KEY`] (or, when that is unset or empty,
    /// [`ENV_REFERENCE_KEY`]) is the active key; [`ENV_OLD_KEYS`] lists older keys, comma-separated.
    pub fn from_env() -> Result<Self, KeyError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Like [`Keyring::from_env`], with variables read through `lookup` (for tests and for
    /// callers that already hold the environment).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, KeyError> {
        let get = |name: &str| {
            lookup(name)
                .map(SecretString::from)
                .filter(|v| !v.expose_secret().trim().is_empty())
        };
        let (active, origin) = match (get(ENV_KEY), get(ENV_REFERENCE_KEY)) {
            (Some(v), _) => (v, ENV_KEY),
            (None, Some(v)) => (v, ENV_REFERENCE_KEY),
            (None, None) => return Err(KeyError::Missing),
        };
        let mut ring = Keyring::new(SealingKey::parse(&active, origin)?, Vec::new())?;
        if let Some(old) = get(ENV_OLD_KEYS) {
            for (i, part) in old.expose_secret().split(',').enumerate() {
                if part.trim().is_empty() {
                    continue;
                }
                let origin = format!("{ENV_OLD_KEYS} entry {}", i + 1);
                let key = SealingKey::parse(&SecretString::from(part), &origin)?;
                ring.push_older(key, &origin)?;
            }
        }
        Ok(ring)
    }

    /// Loads keys from a file: one key per line (`<base64>` or `<kid>:<base64>`), the first is
    /// active; blank lines and lines starting with `#` are skipped.
    pub fn from_file(path: &Path) -> Result<Self, KeyError> {
        let text =
            SecretString::from(
                std::fs::read_to_string(path).map_err(|source| KeyError::File {
                    path: path.to_owned(),
                    source,
                })?,
            );
        let mut ring: Option<Keyring> = None;
        for (i, line) in text.expose_secret().lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let origin = format!("{} line {}", path.display(), i + 1);
            let key = SealingKey::parse(&SecretString::from(line), &origin)?;
            match ring.as_mut() {
                None => ring = Some(Keyring::new(key, Vec::new())?),
                Some(ring) => ring.push_older(key, &origin)?,
            }
        }
        ring.ok_or_else(|| KeyError::EmptyFile {
            path: path.to_owned(),
        })
    }

    fn push_older(&mut self, key: SealingKey, origin: &str) -> Result<(), KeyError> {
        if self.key(&key.kid).is_some() {
            return Err(KeyError::DuplicateKeyId {
                origin: origin.to_owned(),
                kid: key.kid,
            });
        }
        self.older.push(key);
        Ok(())
    }

    /// The id of the key that [`Keyring::seal`] uses.
    pub fn active_kid(&self) -> &str {
        &self.active.kid
    }

    /// Every key id in the ring, the active one first.
    pub fn kids(&self) -> impl Iterator<Item = &str> {
        std::iter::once(&self.active)
            .chain(&self.older)
            .map(|k| k.kid.as_str())
    }

    fn key(&self, kid: &str) -> Option<&SealingKey> {
        std::iter::once(&self.active)
            .chain(&self.older)
            .find(|k| k.kid == kid)
    }

    /// Seals `plaintext` for the record named by `aad` with the active key.
    pub fn seal(&self, plaintext: &[u8], aad: &Aad) -> Result<String, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(SealError::Random)?;
        let key = &self.active;
        let full_aad = full_aad(&key.kid, aad);
        let ciphertext = key
            .cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad: &full_aad,
                },
            )
            .map_err(|_| SealError::TooLong)?;
        Ok(format!(
            "{FORMAT_TAG}.{}.{}.{}",
            key.kid,
            URL_SAFE_NO_PAD.encode(nonce),
            URL_SAFE_NO_PAD.encode(ciphertext)
        ))
    }

    /// Seals a text secret; see [`Keyring::seal`].
    pub fn seal_str(&self, secret: &SecretString, aad: &Aad) -> Result<String, SealError> {
        self.seal(secret.expose_secret().as_bytes(), aad)
    }

    /// Opens a sealed value for the record named by `aad`, with the key its id names.
    pub fn open(&self, sealed: &str, aad: &Aad) -> Result<SecretBox<[u8]>, SealError> {
        self.decrypt(sealed, aad)
            .map(|plaintext| SecretBox::new(plaintext.into_boxed_slice()))
    }

    /// Opens a sealed text secret; see [`Keyring::open`].
    pub fn open_string(&self, sealed: &str, aad: &Aad) -> Result<SecretString, SealError> {
        match String::from_utf8(self.decrypt(sealed, aad)?) {
            Ok(text) => Ok(SecretString::from(text)),
            Err(e) => {
                // Wipe the bytes before reporting.
                drop(SecretBox::new(e.into_bytes().into_boxed_slice()));
                Err(SealError::NotUtf8)
            }
        }
    }

    /// The plaintext; callers wrap it in a secret at once.
    fn decrypt(&self, sealed: &str, aad: &Aad) -> Result<Vec<u8>, SealError> {
        let parsed = parse_sealed(sealed)?;
        let key = self
            .key(parsed.kid)
            .ok_or_else(|| SealError::UnknownKeyId(parsed.kid.to_owned()))?;
        key.cipher
            .decrypt(
                &Nonce::from(parsed.nonce),
                Payload {
                    msg: &parsed.ciphertext,
                    aad: &full_aad(parsed.kid, aad),
                },
            )
            .map_err(|_| SealError::Mismatch)
    }

    /// The key id a sealed value names, if it is well formed (for rotation: a value whose id is
    /// not [`Keyring::active_kid`] should be re-sealed).
    pub fn kid_of(sealed: &str) -> Result<&str, SealError> {
        parse_sealed(sealed).map(|p| p.kid)
    }
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("active", &self.active.kid)
            .field(
                "older",
                &self
                    .older
                    .iter()
                    .map(|k| k.kid.as_str())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

struct Parsed<'a> {
    kid: &'a str,
    nonce: [u8; NONCE_LEN],
    ciphertext: Vec<u8>,
}

fn parse_sealed(sealed: &str) -> Result<Parsed<'_>, SealError> {
    let mut parts = sealed.trim().split('.');
    let (Some(tag), Some(kid), Some(nonce), Some(ct), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(SealError::Malformed);
    };
    if tag != FORMAT_TAG || !valid_kid(kid) {
        return Err(SealError::Malformed);
    }
    let nonce: [u8; NONCE_LEN] = URL_SAFE_NO_PAD
        .decode(nonce)
        .ok()
        .and_then(|n| n.try_into().ok())
        .ok_or(SealError::Malformed)?;
    let ciphertext = URL_SAFE_NO_PAD
        .decode(ct)
        .map_err(|_| SealError::Malformed)?;
    if ciphertext.len() < TAG_LEN {
        return Err(SealError::Malformed);
    }
    Ok(Parsed {
        kid,
        nonce,
        ciphertext,
    })
}

fn full_aad(kid: &str, aad: &Aad) -> Vec<u8> {
    let mut full = Vec::with_capacity(FORMAT_TAG.len() + kid.len() + 2 + aad.0.len());
    full.extend_from_slice(FORMAT_TAG.as_bytes());
    full.push(b'.');
    full.extend_from_slice(kid.as_bytes());
    full.push(0);
    full.extend_from_slice(&aad.0);
    full
}

fn valid_kid(kid: &str) -> bool {
    !kid.is_empty()
        && kid.len() <= MAX_KID_LEN
        && kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn derive_kid(key: &[u8]) -> String {
    let digest = Sha256::digest(key);
    digest[..4].iter().map(|b| format!("{b:02x}")).collect()
}

fn malformed(origin: &str, problem: String) -> KeyError {
    KeyError::Malformed {
        origin: origin.to_owned(),
        problem: format!("the sealing key {problem}"),
    }
}

#[cfg(test)]
mod tests;
