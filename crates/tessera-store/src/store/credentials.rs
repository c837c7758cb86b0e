//! Users' credentials for upstream servers and pending connect flows, sealed at rest.
//!
//! - A credential's access token is sealed with AAD `credential|<user_id>|<server_key>`, its
//!   refresh token with `credential|<user_id>|<server_key>|refresh`: a row copied to another user
//!   or server, or one token swapped for the other, does not open.
//! - A connect flow is stored under the SHA-256 of its state (the state itself is never stored);
//!   its PKCE code verifier is sealed with AAD `connect_flow|<state_hash>|<user_id>|<server_key>`.

use std::fmt;
use std::time::Duration;

use secrecy::SecretString;
use sha2::{Digest, Sha256};
use sqlx::Row as _;

use super::{Store, UnixTime, hash_secret, join_scopes, now_unix, split_scopes, user_fk};
use crate::error::StoreError;
use crate::seal::Aad;

/// The most connect flows one user may have pending at once.
pub const MAX_PENDING_CONNECT_FLOWS: u32 = 10;

/// The key a user's credential for one upstream server is stored under, as the reference
/// computes it: `<name>_<first 16 hex chars of SHA-256("<name>|<url>")>`.
pub fn server_key(name: &str, url: &str) -> String {
    let digest = Sha256::digest(format!("{name}|{url}").as_bytes());
    let mut key = String::with_capacity(name.len() + 17);
    key.push_str(name);
    key.push('_');
    for b in &digest[..8] {
        key.push_str(&format!("{b:02x}"));
    }
    key
}

/// How a credential was obtained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CredentialSource {
    /// RFC 8693 token exchange.
    Exchange,
    /// Entra ID on-behalf-of.
    Obo,
    /// The user's connect flow (authorization code + PKCE).
    Connect,
    /// A refresh of an earlier credential.
    Refresh,
}

impl CredentialSource {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialSource::Exchange => "exchange",
            CredentialSource::Obo => "obo",
            CredentialSource::Connect => "connect",
            CredentialSource::Refresh => "refresh",
        }
    }

    fn parse(s: &str) -> Result<Self, StoreError> {
        Ok(match s {
            "exchange" => CredentialSource::Exchange,
            "obo" => CredentialSource::Obo,
            "connect" => CredentialSource::Connect,
            "refresh" => CredentialSource::Refresh,
            _ => {
                return Err(StoreError::Corrupt {
                    what: "credentials.source",
                    value: s.to_owned(),
                });
            }
        })
    }
}

/// A credential to store for (user, server). `Debug` redacts the tokens.
pub struct CredentialRecord {
    /// The user it belongs to.
    pub user_id: String,
    /// The upstream server's key ([`server_key`]).
    pub server_key: String,
    /// The access token.
    pub access_token: SecretString,
    /// The refresh token, if any.
    pub refresh_token: Option<SecretString>,
    /// When the access token expires; `None` = never / unknown.
    pub expires_at: Option<UnixTime>,
    /// The granted scopes.
    pub scopes: Vec<String>,
    /// The token type (`Bearer`, ...).
    pub token_type: String,
    /// How it was obtained.
    pub source: CredentialSource,
    /// The audience / resource it was issued for.
    pub audience: Option<String>,
}

impl fmt::Debug for CredentialRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CredentialRecord")
            .field("user_id", &self.user_id)
            .field("server_key", &self.server_key)
            .field("has_refresh_token", &self.refresh_token.is_some())
            .field("expires_at", &self.expires_at)
            .field("scopes", &self.scopes)
            .field("token_type", &self.token_type)
            .field("source", &self.source)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

/// A stored credential, opened. `Debug` redacts the tokens (they are `SecretString`s).
#[derive(Debug)]
pub struct OpenedCredential {
    /// The access token.
    pub access_token: SecretString,
    /// The refresh token, if any.
    pub refresh_token: Option<SecretString>,
    /// When the access token expires; `None` = never / unknown.
    pub expires_at: Option<UnixTime>,
    /// The granted scopes.
    pub scopes: Vec<String>,
    /// The token type.
    pub token_type: String,
    /// How it was obtained.
    pub source: CredentialSource,
    /// The audience / resource.
    pub audience: Option<String>,
    /// When the (user, server) credential was first stored.
    pub created_at: UnixTime,
    /// When it was last stored.
    pub updated_at: UnixTime,
}

/// A credential's metadata, without any secret (for listings).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CredentialSummary {
    /// The upstream server's key.
    pub server_key: String,
    /// When the access token expires.
    pub expires_at: Option<UnixTime>,
    /// The granted scopes.
    pub scopes: Vec<String>,
    /// The token type.
    pub token_type: String,
    /// How it was obtained.
    pub source: CredentialSource,
    /// The audience / resource.
    pub audience: Option<String>,
    /// Whether a refresh token is stored.
    pub has_refresh_token: bool,
    /// When first stored.
    pub created_at: UnixTime,
    /// When last stored.
    pub updated_at: UnixTime,
}

/// A connect flow to persist. `Debug` redacts the state and verifier.
#[derive(Debug)]
pub struct NewConnectFlow<'a> {
    /// The OAuth `state` (random, high entropy); stored only as its SHA-256.
    pub state: &'a SecretString,
    /// The user who started the flow.
    pub user_id: &'a str,
    /// The upstream server's key.
    pub server_key: &'a str,
    /// The PKCE code verifier.
    pub code_verifier: &'a SecretString,
    /// The redirect URI sent in the authorization request.
    pub redirect_uri: &'a str,
    /// How long the flow stays valid.
    pub ttl: Duration,
}

/// A pending connect flow, taken (and so deleted).
#[derive(Debug)]
pub struct ConnectFlow {
    /// The user who started it (the callback must check it is the signed-in user).
    pub user_id: String,
    /// The upstream server's key.
    pub server_key: String,
    /// The PKCE code verifier.
    pub code_verifier: SecretString,
    /// The redirect URI sent in the authorization request.
    pub redirect_uri: String,
    /// When it was started.
    pub created_at: UnixTime,
    /// When it expires.
    pub expires_at: UnixTime,
}

pub(super) fn access_aad(user_id: &str, server_key: &str) -> Aad {
    Aad::credential(user_id, server_key)
}

pub(super) fn refresh_aad(user_id: &str, server_key: &str) -> Aad {
    Aad::credential(user_id, server_key).field("refresh")
}

pub(super) fn verifier_aad(state_hash: &str, user_id: &str, server_key: &str) -> Aad {
    Aad::new("connect_flow")
        .field(state_hash)
        .field(user_id)
        .field(server_key)
}

impl Store {
    /// Seals and stores a user's credential for a server, replacing any before (the first
    /// `created_at` is kept).
    pub async fn put_credential(&self, cred: &CredentialRecord) -> Result<(), StoreError> {
        let keyring = self.keyring()?;
        let (user_id, key) = (cred.user_id.as_str(), cred.server_key.as_str());
        let access = keyring.seal_str(&cred.access_token, &access_aad(user_id, key))?;
        let refresh = cred
            .refresh_token
            .as_ref()
            .map(|t| keyring.seal_str(t, &refresh_aad(user_id, key)))
            .transpose()?;
        let now = now_unix();
        sqlx::query(
            "INSERT INTO credentials (user_id, server_key, access_token_sealed, \
               refresh_token_sealed, expires_at, scopes, token_type, source, audience, \
               created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10) \
             ON CONFLICT (user_id, server_key) DO UPDATE SET \
               access_token_sealed = excluded.access_token_sealed, \
               refresh_token_sealed = excluded.refresh_token_sealed, \
               expires_at = excluded.expires_at, scopes = excluded.scopes, \
               token_type = excluded.token_type, source = excluded.source, \
               audience = excluded.audience, updated_at = excluded.updated_at",
        )
        .bind(user_id)
        .bind(key)
        .bind(access)
        .bind(refresh)
        .bind(cred.expires_at)
        .bind(join_scopes(&cred.scopes)?)
        .bind(&cred.token_type)
        .bind(cred.source.as_str())
        .bind(cred.audience.as_deref())
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(user_fk(user_id))?;
        Ok(())
    }

    /// Reads and opens a user's credential for a server. A row that does not open for this
    /// (user, server) — copied, altered, or sealed with a key no longer in the keyring — is an
    /// error, never `None`.
    pub async fn get_credential(
        &self,
        user_id: &str,
        server_key: &str,
    ) -> Result<Option<OpenedCredential>, StoreError> {
        let keyring = self.keyring()?;
        let Some(row) = sqlx::query(
            "SELECT access_token_sealed, refresh_token_sealed, expires_at, scopes, token_type, \
               source, audience, created_at, updated_at \
             FROM credentials WHERE user_id = $1 AND server_key = $2",
        )
        .bind(user_id)
        .bind(server_key)
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        let access: String = row.try_get("access_token_sealed")?;
        let refresh: Option<String> = row.try_get("refresh_token_sealed")?;
        let scopes: String = row.try_get("scopes")?;
        let source: String = row.try_get("source")?;
        Ok(Some(OpenedCredential {
            access_token: keyring.open_string(&access, &access_aad(user_id, server_key))?,
            refresh_token: refresh
                .map(|s| keyring.open_string(&s, &refresh_aad(user_id, server_key)))
                .transpose()?,
            expires_at: row.try_get("expires_at")?,
            scopes: split_scopes(&scopes),
            token_type: row.try_get("token_type")?,
            source: CredentialSource::parse(&source)?,
            audience: row.try_get("audience")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
        }))
    }

    /// Forgets a user's credential for a server; `false` if there was none.
    pub async fn delete_credential(
        &self,
        user_id: &str,
        server_key: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM credentials WHERE user_id = $1 AND server_key = $2")
            .bind(user_id)
            .bind(server_key)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// A user's credentials, metadata only (nothing is opened; no secret is read), by server key.
    pub async fn list_credentials(
        &self,
        user_id: &str,
    ) -> Result<Vec<CredentialSummary>, StoreError> {
        let rows = sqlx::query(
            "SELECT server_key, expires_at, scopes, token_type, source, audience, \
               CASE WHEN refresh_token_sealed IS NULL THEN 0 ELSE 1 END AS has_refresh, created_at, updated_at \
             FROM credentials WHERE user_id = $1 ORDER BY server_key",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let scopes: String = row.try_get("scopes")?;
                let source: String = row.try_get("source")?;
                Ok(CredentialSummary {
                    server_key: row.try_get("server_key")?,
                    expires_at: row.try_get("expires_at")?,
                    scopes: split_scopes(&scopes),
                    token_type: row.try_get("token_type")?,
                    source: CredentialSource::parse(&source)?,
                    audience: row.try_get("audience")?,
                    has_refresh_token: row.try_get::<i64, _>("has_refresh")? != 0,
                    created_at: row.try_get("created_at")?,
                    updated_at: row.try_get("updated_at")?,
                })
            })
            .collect()
    }

    /// Persists a pending connect flow. Expired flows of the user are purged first; a user with
    /// [`MAX_PENDING_CONNECT_FLOWS`] unexpired flows is refused
    /// ([`StoreError::TooManyConnectFlows`]). The count and the insert are one statement.
    pub async fn put_connect_flow(&self, flow: &NewConnectFlow<'_>) -> Result<(), StoreError> {
        let keyring = self.keyring()?;
        let state_hash = hash_secret(secrecy::ExposeSecret::expose_secret(flow.state));
        let verifier = keyring.seal_str(
            flow.code_verifier,
            &verifier_aad(&state_hash, flow.user_id, flow.server_key),
        )?;
        let now = now_unix();
        let expires_at = now.saturating_add(i64::try_from(flow.ttl.as_secs()).unwrap_or(i64::MAX));
        sqlx::query("DELETE FROM connect_flows WHERE user_id = $1 AND expires_at <= $2")
            .bind(flow.user_id)
            .bind(now)
            .execute(&self.pool)
            .await?;
        let done = sqlx::query(
            "INSERT INTO connect_flows (state_hash, user_id, server_key, code_verifier_sealed, \
               redirect_uri, created_at, expires_at) \
             SELECT $1, $2, $3, $4, $5, $6, $7 \
             WHERE (SELECT COUNT(*) FROM connect_flows \
                    WHERE user_id = $2 AND expires_at > $6) < $8",
        )
        .bind(&state_hash)
        .bind(flow.user_id)
        .bind(flow.server_key)
        .bind(verifier)
        .bind(flow.redirect_uri)
        .bind(now)
        .bind(expires_at)
        .bind(i64::from(MAX_PENDING_CONNECT_FLOWS))
        .execute(&self.pool)
        .await
        .map_err(user_fk(flow.user_id))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::TooManyConnectFlows {
                user_id: flow.user_id.to_owned(),
                max: MAX_PENDING_CONNECT_FLOWS,
            });
        }
        Ok(())
    }

    /// Takes the pending flow for `state`: it is deleted whether or not it is still valid, so a
    /// state works once. Unknown or expired → `None`. A row that does not open is an error.
    pub async fn take_connect_flow(
        &self,
        state: &SecretString,
    ) -> Result<Option<ConnectFlow>, StoreError> {
        let keyring = self.keyring()?;
        let state_hash = hash_secret(secrecy::ExposeSecret::expose_secret(state));
        let Some(row) = sqlx::query(
            "DELETE FROM connect_flows WHERE state_hash = $1 \
             RETURNING user_id, server_key, code_verifier_sealed, redirect_uri, created_at, \
               expires_at",
        )
        .bind(&state_hash)
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        let expires_at: UnixTime = row.try_get("expires_at")?;
        if expires_at <= now_unix() {
            return Ok(None);
        }
        let user_id: String = row.try_get("user_id")?;
        let server_key: String = row.try_get("server_key")?;
        let sealed: String = row.try_get("code_verifier_sealed")?;
        let code_verifier =
            keyring.open_string(&sealed, &verifier_aad(&state_hash, &user_id, &server_key))?;
        Ok(Some(ConnectFlow {
            user_id,
            server_key,
            code_verifier,
            redirect_uri: row.try_get("redirect_uri")?,
            created_at: row.try_get("created_at")?,
            expires_at,
        }))
    }

    /// Deletes every expired connect flow; returns how many.
    pub async fn purge_expired_connect_flows(&self) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM connect_flows WHERE expires_at <= $1")
            .bind(now_unix())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}
