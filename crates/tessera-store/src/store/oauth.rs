//! Tessera's own OAuth authorization server: clients, consent, authorization codes, and the
//! access and refresh tokens it issues to MCP clients.
//!
//! Every secret (client secret, code, token) is random, shown once, and stored only as its
//! SHA-256. Tokens are opaque and carry a prefix (`tsr_at_`, `tsr_rt_`) so the MCP front end
//! can tell them from provider JWTs and PATs without a lookup.
//!
//! Codes and refresh tokens are single use, enforced by one conditional `UPDATE … RETURNING`
//! (atomic with any number of gateway replicas on one database). Every token descends from one
//! code: its *family*. A replayed code or a refresh token presented a second time revokes the
//! whole family (RFC 6749 §4.1.2, OAuth 2.1 §4.3.1 refresh-token rotation).

use secrecy::{ExposeSecret as _, SecretString};
use sqlx::Row as _;
use sqlx::any::AnyRow;
use subtle::ConstantTimeEq as _;

use super::users::User;
use super::{Store, UnixTime, hash_secret, join_scopes, new_id, now_unix, random_secret};
use crate::error::StoreError;

/// Prefix of the access tokens Tessera's authorization server issues.
pub const ACCESS_TOKEN_PREFIX: &str = "tsr_at_";
/// Prefix of its refresh tokens.
pub const REFRESH_TOKEN_PREFIX: &str = "tsr_rt_";
const CODE_PREFIX: &str = "tsr_code_";
const CLIENT_SECRET_PREFIX: &str = "tsr_cs_";

/// How a client became known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OauthClientSource {
    /// RFC 7591 dynamic registration.
    Registered,
    /// A client ID metadata document (the client id is its URL).
    MetadataDocument,
}

impl OauthClientSource {
    fn as_str(self) -> &'static str {
        match self {
            Self::Registered => "registered",
            Self::MetadataDocument => "metadata_document",
        }
    }
}

/// A client as stored: its metadata (JSON text, as validated by the authorization server).
#[derive(Clone, Debug)]
pub struct OauthClient {
    pub client_id: String,
    pub metadata: String,
    pub source: OauthClientSource,
    /// Whether it authenticates with a client secret (a confidential client).
    pub confidential: bool,
    pub created_at: UnixTime,
    pub updated_at: UnixTime,
}

/// A newly registered client: the only time its secret exists outside the caller.
#[derive(Debug)]
pub struct NewOauthClient {
    pub client: OauthClient,
    pub client_secret: Option<SecretString>,
}

/// What a code was issued for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CodeGrant {
    pub client_id: String,
    pub user_id: String,
    pub redirect_uri: String,
    /// The PKCE S256 challenge (base64url).
    pub code_challenge: String,
    pub scopes: Vec<String>,
    pub resource: String,
    pub family_id: String,
}

/// The result of presenting an authorization code.
#[derive(Debug)]
pub enum CodeRedemption {
    /// First use, in time: the grant it stands for.
    Redeemed(CodeGrant),
    /// Used before: the tokens issued for it have been revoked (their count).
    Replayed { revoked: u64, family_id: String },
    /// Past its short life.
    Expired,
    /// Not a code Tessera issued.
    Unknown,
}

/// A pair just issued.
#[derive(Debug)]
pub struct IssuedTokens {
    pub access_token: SecretString,
    pub refresh_token: SecretString,
    pub access_expires_at: UnixTime,
    pub family_id: String,
}

/// An accepted access token.
#[derive(Clone, Debug)]
pub struct VerifiedAccessToken {
    pub user: User,
    pub client_id: String,
    pub scopes: Vec<String>,
    pub resource: String,
    pub family_id: String,
    pub expires_at: UnixTime,
}

/// Why an access or refresh token is not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OauthTokenRejection {
    #[error("unknown token")]
    Unknown,
    #[error("token expired")]
    Expired,
    #[error("token revoked")]
    Revoked,
    #[error("the token's user is disabled")]
    UserDisabled,
    /// A refresh token presented by another client than the one it was issued to.
    #[error("token issued to another client")]
    WrongClient,
    /// A refresh token used a second time: its whole family has been revoked.
    #[error("refresh token reused; the grant has been revoked")]
    Reused,
}

/// Why a refresh token was refused, and the family revoked because of it (on reuse), so the
/// caller can evict exactly that family from caches and tell the other replicas.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefreshRefused {
    pub reason: OauthTokenRejection,
    pub revoked_family: Option<String>,
}

impl From<OauthTokenRejection> for RefreshRefused {
    fn from(reason: OauthTokenRejection) -> Self {
        RefreshRefused {
            reason,
            revoked_family: None,
        }
    }
}

impl PartialEq<OauthTokenRejection> for RefreshRefused {
    fn eq(&self, other: &OauthTokenRejection) -> bool {
        self.reason == *other
    }
}

/// Everything needed to mint tokens for one grant.
#[derive(Clone, Debug)]
pub struct TokenGrant<'a> {
    pub family_id: &'a str,
    pub client_id: &'a str,
    pub user_id: &'a str,
    pub scopes: &'a [String],
    pub resource: &'a str,
    pub access_ttl_secs: i64,
    pub refresh_ttl_secs: i64,
}

/// The grant behind a refresh token that was just rotated.
#[derive(Clone, Debug)]
pub struct RotatedGrant {
    pub family_id: String,
    pub user_id: String,
    pub scopes: Vec<String>,
    pub resource: String,
}

fn client_from_row(row: &AnyRow) -> Result<OauthClient, StoreError> {
    let source: String = row.try_get("source")?;
    let secret_hash: Option<String> = row.try_get("secret_hash")?;
    Ok(OauthClient {
        client_id: row.try_get("client_id")?,
        metadata: row.try_get("metadata")?,
        source: if source == "metadata_document" {
            OauthClientSource::MetadataDocument
        } else {
            OauthClientSource::Registered
        },
        confidential: secret_hash.is_some(),
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn prefixed_secret(prefix: &str) -> Result<SecretString, StoreError> {
    Ok(SecretString::from(format!(
        "{prefix}{}",
        random_secret()?.expose_secret()
    )))
}

fn scopes_of(stored: &str) -> Vec<String> {
    super::split_scopes(stored)
}

impl Store {
    /// Registers a client (RFC 7591). `confidential` clients get a secret, returned once.
    pub async fn register_oauth_client(
        &self,
        metadata: &str,
        confidential: bool,
    ) -> Result<NewOauthClient, StoreError> {
        let client_id = format!("tsr_client_{}", new_id());
        let client_secret = if confidential {
            Some(prefixed_secret(CLIENT_SECRET_PREFIX)?)
        } else {
            None
        };
        let now = now_unix();
        sqlx::query(
            "INSERT INTO oauth_clients (client_id, metadata, created_at, secret_hash, source, \
               updated_at) VALUES ($1, $2, $3, $4, 'registered', $3)",
        )
        .bind(&client_id)
        .bind(metadata)
        .bind(now)
        .bind(
            client_secret
                .as_ref()
                .map(|s| hash_secret(s.expose_secret())),
        )
        .execute(&self.pool)
        .await?;
        Ok(NewOauthClient {
            client: OauthClient {
                client_id,
                metadata: metadata.to_owned(),
                source: OauthClientSource::Registered,
                confidential,
                created_at: now,
                updated_at: now,
            },
            client_secret,
        })
    }

    /// Records (or refreshes) a client known by its metadata document, so codes, consent and
    /// tokens can refer to it.
    pub async fn upsert_metadata_client(
        &self,
        client_id: &str,
        metadata: &str,
    ) -> Result<(), StoreError> {
        let now = now_unix();
        sqlx::query(
            "INSERT INTO oauth_clients (client_id, metadata, created_at, source, updated_at) \
             VALUES ($1, $2, $3, $4, $3) \
             ON CONFLICT (client_id) DO UPDATE SET metadata = excluded.metadata, \
               updated_at = excluded.updated_at \
             WHERE oauth_clients.source = 'metadata_document'",
        )
        .bind(client_id)
        .bind(metadata)
        .bind(now)
        .bind(OauthClientSource::MetadataDocument.as_str())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The client with this id, if known.
    pub async fn oauth_client(&self, client_id: &str) -> Result<Option<OauthClient>, StoreError> {
        sqlx::query(
            "SELECT client_id, metadata, created_at, secret_hash, source, updated_at \
             FROM oauth_clients WHERE client_id = $1",
        )
        .bind(client_id)
        .fetch_optional(&self.pool)
        .await?
        .map(|row| client_from_row(&row))
        .transpose()
    }

    /// Whether `secret` is the client's secret (constant-time). A public client has none.
    pub async fn check_oauth_client_secret(
        &self,
        client_id: &str,
        secret: &str,
    ) -> Result<bool, StoreError> {
        let stored: Option<Option<String>> =
            sqlx::query_scalar("SELECT secret_hash FROM oauth_clients WHERE client_id = $1")
                .bind(client_id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(match stored.flatten() {
            Some(hash) => bool::from(hash.as_bytes().ct_eq(hash_secret(secret).as_bytes())),
            None => false,
        })
    }

    /// The scopes `user_id` approved for `client_id`, if they approved it (and did not revoke).
    pub async fn oauth_consent(
        &self,
        user_id: &str,
        client_id: &str,
    ) -> Result<Option<Vec<String>>, StoreError> {
        let scopes: Option<String> = sqlx::query_scalar(
            "SELECT scopes FROM oauth_grants \
             WHERE user_id = $1 AND client_id = $2 AND revoked_at IS NULL",
        )
        .bind(user_id)
        .bind(client_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(scopes.map(|s| scopes_of(&s)))
    }

    /// Remembers that `user_id` approved `client_id` for `scopes` (added to what they approved
    /// before).
    pub async fn record_oauth_consent(
        &self,
        user_id: &str,
        client_id: &str,
        scopes: &[String],
    ) -> Result<(), StoreError> {
        let mut all = self
            .oauth_consent(user_id, client_id)
            .await?
            .unwrap_or_default();
        for s in scopes {
            if !all.contains(s) {
                all.push(s.clone());
            }
        }
        let text = join_scopes(&all)?;
        sqlx::query(
            "INSERT INTO oauth_grants (id, user_id, client_id, scopes, created_at) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (user_id, client_id) DO UPDATE SET scopes = excluded.scopes, \
               revoked_at = NULL",
        )
        .bind(new_id())
        .bind(user_id)
        .bind(client_id)
        .bind(text)
        .bind(now_unix())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Issues a one-time authorization code valid for `ttl_secs`.
    pub async fn create_oauth_code(
        &self,
        grant: &CodeGrant,
        ttl_secs: i64,
    ) -> Result<SecretString, StoreError> {
        let code = prefixed_secret(CODE_PREFIX)?;
        let now = now_unix();
        sqlx::query(
            "INSERT INTO oauth_codes (code_hash, client_id, user_id, redirect_uri, \
               code_challenge, scopes, resource, family_id, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(hash_secret(code.expose_secret()))
        .bind(&grant.client_id)
        .bind(&grant.user_id)
        .bind(&grant.redirect_uri)
        .bind(&grant.code_challenge)
        .bind(join_scopes(&grant.scopes)?)
        .bind(&grant.resource)
        .bind(&grant.family_id)
        .bind(now)
        .bind(now.saturating_add(ttl_secs))
        .execute(&self.pool)
        .await
        .map_err(super::user_fk(&grant.user_id))?;
        Ok(code)
    }

    /// Uses a code once. A second use revokes every token issued for it.
    pub async fn redeem_oauth_code(&self, code: &str) -> Result<CodeRedemption, StoreError> {
        let hash = hash_secret(code);
        let now = now_unix();
        let row = sqlx::query(
            "UPDATE oauth_codes SET used_at = $1 WHERE code_hash = $2 AND used_at IS NULL \
             RETURNING client_id, user_id, redirect_uri, code_challenge, scopes, resource, \
               family_id, expires_at",
        )
        .bind(now)
        .bind(&hash)
        .fetch_optional(&self.pool)
        .await?;
        if let Some(row) = row {
            let expires_at: i64 = row.try_get("expires_at")?;
            if now >= expires_at {
                return Ok(CodeRedemption::Expired);
            }
            let scopes: String = row.try_get("scopes")?;
            return Ok(CodeRedemption::Redeemed(CodeGrant {
                client_id: row.try_get("client_id")?,
                user_id: row.try_get("user_id")?,
                redirect_uri: row.try_get("redirect_uri")?,
                code_challenge: row.try_get("code_challenge")?,
                scopes: scopes_of(&scopes),
                resource: row.try_get("resource")?,
                family_id: row.try_get("family_id")?,
            }));
        }
        let family: Option<String> =
            sqlx::query_scalar("SELECT family_id FROM oauth_codes WHERE code_hash = $1")
                .bind(&hash)
                .fetch_optional(&self.pool)
                .await?;
        match family {
            Some(family_id) => Ok(CodeRedemption::Replayed {
                revoked: self.revoke_oauth_family(&family_id).await?,
                family_id,
            }),
            None => Ok(CodeRedemption::Unknown),
        }
    }

    /// Mints an access token and a refresh token for a grant.
    pub async fn issue_oauth_tokens(
        &self,
        grant: &TokenGrant<'_>,
    ) -> Result<IssuedTokens, StoreError> {
        let access = prefixed_secret(ACCESS_TOKEN_PREFIX)?;
        let refresh = prefixed_secret(REFRESH_TOKEN_PREFIX)?;
        let now = now_unix();
        let scopes = join_scopes(grant.scopes)?;
        let access_expires_at = now.saturating_add(grant.access_ttl_secs);
        let mut tx = self.pool.begin().await?;
        for (token, kind, expires_at) in [
            (&access, "access", access_expires_at),
            (
                &refresh,
                "refresh",
                now.saturating_add(grant.refresh_ttl_secs),
            ),
        ] {
            sqlx::query(
                "INSERT INTO oauth_tokens (token_hash, kind, family_id, client_id, user_id, \
                   scopes, resource, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(hash_secret(token.expose_secret()))
            .bind(kind)
            .bind(grant.family_id)
            .bind(grant.client_id)
            .bind(grant.user_id)
            .bind(&scopes)
            .bind(grant.resource)
            .bind(now)
            .bind(expires_at)
            .execute(&mut *tx)
            .await
            .map_err(super::user_fk(grant.user_id))?;
        }
        tx.commit().await?;
        Ok(IssuedTokens {
            access_token: access,
            refresh_token: refresh,
            access_expires_at,
            family_id: grant.family_id.to_owned(),
        })
    }

    /// Checks an access token: known, an access token, not revoked or expired, user enabled.
    pub async fn verify_oauth_access_token(
        &self,
        token: &str,
    ) -> Result<Result<VerifiedAccessToken, OauthTokenRejection>, StoreError> {
        if !token.starts_with(ACCESS_TOKEN_PREFIX) {
            return Ok(Err(OauthTokenRejection::Unknown));
        }
        let Some(row) = sqlx::query(
            "SELECT family_id, client_id, user_id, scopes, resource, expires_at, revoked_at \
             FROM oauth_tokens WHERE token_hash = $1 AND kind = 'access'",
        )
        .bind(hash_secret(token))
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(Err(OauthTokenRejection::Unknown));
        };
        let revoked_at: Option<i64> = row.try_get("revoked_at")?;
        let expires_at: i64 = row.try_get("expires_at")?;
        if revoked_at.is_some() {
            return Ok(Err(OauthTokenRejection::Revoked));
        }
        if now_unix() >= expires_at {
            return Ok(Err(OauthTokenRejection::Expired));
        }
        let user_id: String = row.try_get("user_id")?;
        let Some(user) = self.get_user(&user_id).await? else {
            return Ok(Err(OauthTokenRejection::Unknown));
        };
        if user.disabled {
            return Ok(Err(OauthTokenRejection::UserDisabled));
        }
        let scopes: String = row.try_get("scopes")?;
        Ok(Ok(VerifiedAccessToken {
            user,
            client_id: row.try_get("client_id")?,
            scopes: scopes_of(&scopes),
            resource: row.try_get("resource")?,
            family_id: row.try_get("family_id")?,
            expires_at,
        }))
    }

    /// Uses a refresh token once (rotation). Presented again — by anyone — it revokes its whole
    /// family and answers [`OauthTokenRejection::Reused`].
    pub async fn rotate_oauth_refresh_token(
        &self,
        token: &str,
        client_id: &str,
    ) -> Result<Result<RotatedGrant, RefreshRefused>, StoreError> {
        if !token.starts_with(REFRESH_TOKEN_PREFIX) {
            return Ok(Err(OauthTokenRejection::Unknown.into()));
        }
        let hash = hash_secret(token);
        let now = now_unix();
        let row = sqlx::query(
            "UPDATE oauth_tokens SET used_at = $1 \
             WHERE token_hash = $2 AND kind = 'refresh' AND client_id = $3 \
               AND used_at IS NULL AND revoked_at IS NULL AND expires_at > $1 \
             RETURNING family_id, user_id, scopes, resource",
        )
        .bind(now)
        .bind(&hash)
        .bind(client_id)
        .fetch_optional(&self.pool)
        .await?;
        if let Some(row) = row {
            let user_id: String = row.try_get("user_id")?;
            match self.get_user(&user_id).await? {
                Some(user) if !user.disabled => {}
                Some(_) => return Ok(Err(OauthTokenRejection::UserDisabled.into())),
                None => return Ok(Err(OauthTokenRejection::Unknown.into())),
            }
            let scopes: String = row.try_get("scopes")?;
            return Ok(Ok(RotatedGrant {
                family_id: row.try_get("family_id")?,
                user_id,
                scopes: scopes_of(&scopes),
                resource: row.try_get("resource")?,
            }));
        }
        let Some(row) = sqlx::query(
            "SELECT family_id, client_id, used_at, revoked_at, expires_at FROM oauth_tokens \
             WHERE token_hash = $1 AND kind = 'refresh'",
        )
        .bind(&hash)
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(Err(OauthTokenRejection::Unknown.into()));
        };
        let owner: String = row.try_get("client_id")?;
        if owner != client_id {
            return Ok(Err(OauthTokenRejection::WrongClient.into()));
        }
        let used_at: Option<i64> = row.try_get("used_at")?;
        let revoked_at: Option<i64> = row.try_get("revoked_at")?;
        if used_at.is_some() {
            let family_id: String = row.try_get("family_id")?;
            self.revoke_oauth_family(&family_id).await?;
            return Ok(Err(RefreshRefused {
                reason: OauthTokenRejection::Reused,
                revoked_family: Some(family_id),
            }));
        }
        if revoked_at.is_some() {
            return Ok(Err(OauthTokenRejection::Revoked.into()));
        }
        Ok(Err(OauthTokenRejection::Expired.into()))
    }

    /// Revokes every token of a family; returns how many were still live.
    pub async fn revoke_oauth_family(&self, family_id: &str) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE oauth_tokens SET revoked_at = $1 WHERE family_id = $2 AND revoked_at IS NULL",
        )
        .bind(now_unix())
        .bind(family_id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// RFC 7009: revokes `token` if `client_id` holds it — a refresh token with its whole
    /// family, an access token alone. Returns the family touched, if any.
    pub async fn revoke_oauth_token(
        &self,
        token: &str,
        client_id: &str,
    ) -> Result<Option<String>, StoreError> {
        let Some(row) = sqlx::query(
            "SELECT kind, family_id FROM oauth_tokens WHERE token_hash = $1 AND client_id = $2",
        )
        .bind(hash_secret(token))
        .bind(client_id)
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        let kind: String = row.try_get("kind")?;
        let family_id: String = row.try_get("family_id")?;
        if kind == "refresh" {
            self.revoke_oauth_family(&family_id).await?;
        } else {
            sqlx::query(
                "UPDATE oauth_tokens SET revoked_at = $1 \
                 WHERE token_hash = $2 AND revoked_at IS NULL",
            )
            .bind(now_unix())
            .bind(hash_secret(token))
            .execute(&self.pool)
            .await?;
        }
        Ok(Some(family_id))
    }

    /// Deletes codes and tokens past their expiry (a day after, for codes, so a late replay is
    /// still recognised as one).
    pub async fn purge_expired_oauth(&self) -> Result<u64, StoreError> {
        let now = now_unix();
        let codes = sqlx::query("DELETE FROM oauth_codes WHERE expires_at <= $1")
            .bind(now - 86_400)
            .execute(&self.pool)
            .await?;
        let tokens = sqlx::query("DELETE FROM oauth_tokens WHERE expires_at <= $1")
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(codes.rows_affected() + tokens.rows_affected())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::UserLogin;
    use crate::store::test_db::{TestDb, both_backends};

    async fn store_with_user(db: &TestDb) -> (Store, String) {
        let store = db.open().await;
        let user = store
            .upsert_user(&UserLogin {
                issuer: "https://idp.test",
                subject: "alice",
                email: Some("alice@example.com"),
                display_name: None,
                role_if_new: crate::Role::User,
            })
            .await
            .unwrap();
        (store, user.id)
    }

    fn grant(client_id: &str, user_id: &str) -> CodeGrant {
        CodeGrant {
            client_id: client_id.into(),
            user_id: user_id.into(),
            redirect_uri: "http://127.0.0.1:9/cb".into(),
            code_challenge: "challenge".into(),
            scopes: vec!["mcp".into()],
            resource: "http://127.0.0.1:8080/mcp".into(),
            family_id: new_id(),
        }
    }

    fn tokens_for<'a>(g: &'a CodeGrant) -> TokenGrant<'a> {
        TokenGrant {
            family_id: &g.family_id,
            client_id: &g.client_id,
            user_id: &g.user_id,
            scopes: &g.scopes,
            resource: &g.resource,
            access_ttl_secs: 3600,
            refresh_ttl_secs: 86_400,
        }
    }

    async fn registered_client_secret_is_checked_and_stored_hashed(db: TestDb) {
        let (store, _) = store_with_user(&db).await;
        let new = store
            .register_oauth_client(r#"{"client_name":"x"}"#, true)
            .await
            .unwrap();
        let secret = new.client_secret.unwrap();
        assert!(secret.expose_secret().starts_with(CLIENT_SECRET_PREFIX));
        let id = &new.client.client_id;
        assert!(
            store
                .check_oauth_client_secret(id, secret.expose_secret())
                .await
                .unwrap()
        );
        assert!(!store.check_oauth_client_secret(id, "nope").await.unwrap());
        let public = store.register_oauth_client("{}", false).await.unwrap();
        assert!(public.client_secret.is_none());
        assert!(
            !store
                .check_oauth_client_secret(&public.client.client_id, "")
                .await
                .unwrap()
        );
        let stored: String =
            sqlx::query_scalar("SELECT secret_hash FROM oauth_clients WHERE client_id = $1")
                .bind(id)
                .fetch_one(&store.pool)
                .await
                .unwrap();
        assert_ne!(stored, secret.expose_secret());
    }

    async fn a_code_is_redeemed_once_and_a_replay_revokes_its_tokens(db: TestDb) {
        let (store, user) = store_with_user(&db).await;
        let client = store.register_oauth_client("{}", false).await.unwrap();
        let g = grant(&client.client.client_id, &user);
        let code = store.create_oauth_code(&g, 60).await.unwrap();
        let CodeRedemption::Redeemed(got) =
            store.redeem_oauth_code(code.expose_secret()).await.unwrap()
        else {
            panic!("first use must redeem");
        };
        assert_eq!(got, g);
        let issued = store.issue_oauth_tokens(&tokens_for(&got)).await.unwrap();
        let access = issued.access_token.expose_secret();
        assert!(
            store
                .verify_oauth_access_token(access)
                .await
                .unwrap()
                .is_ok()
        );
        let CodeRedemption::Replayed { revoked, .. } =
            store.redeem_oauth_code(code.expose_secret()).await.unwrap()
        else {
            panic!("second use must be a replay");
        };
        assert_eq!(revoked, 2);
        assert_eq!(
            store
                .verify_oauth_access_token(access)
                .await
                .unwrap()
                .unwrap_err(),
            OauthTokenRejection::Revoked
        );
        assert!(matches!(
            store.redeem_oauth_code("tsr_code_unknown").await.unwrap(),
            CodeRedemption::Unknown
        ));
    }

    async fn an_expired_code_is_refused(db: TestDb) {
        let (store, user) = store_with_user(&db).await;
        let client = store.register_oauth_client("{}", false).await.unwrap();
        let code = store
            .create_oauth_code(&grant(&client.client.client_id, &user), -1)
            .await
            .unwrap();
        assert!(matches!(
            store.redeem_oauth_code(code.expose_secret()).await.unwrap(),
            CodeRedemption::Expired
        ));
    }

    async fn refresh_rotation_and_reuse_revokes_the_family(db: TestDb) {
        let (store, user) = store_with_user(&db).await;
        let client = store.register_oauth_client("{}", false).await.unwrap();
        let cid = client.client.client_id.clone();
        let g = grant(&cid, &user);
        let first = store.issue_oauth_tokens(&tokens_for(&g)).await.unwrap();
        let rt1 = first.refresh_token.expose_secret();
        // Another client cannot use it.
        assert_eq!(
            store
                .rotate_oauth_refresh_token(rt1, "other")
                .await
                .unwrap()
                .unwrap_err(),
            OauthTokenRejection::WrongClient
        );
        let rotated = store
            .rotate_oauth_refresh_token(rt1, &cid)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(rotated.family_id, g.family_id);
        let second = store.issue_oauth_tokens(&tokens_for(&g)).await.unwrap();
        // rt1 again: reuse, the family (including the second pair) is revoked.
        assert_eq!(
            store
                .rotate_oauth_refresh_token(rt1, &cid)
                .await
                .unwrap()
                .unwrap_err(),
            OauthTokenRejection::Reused
        );
        assert_eq!(
            store
                .verify_oauth_access_token(second.access_token.expose_secret())
                .await
                .unwrap()
                .unwrap_err(),
            OauthTokenRejection::Revoked
        );
        assert_eq!(
            store
                .rotate_oauth_refresh_token(second.refresh_token.expose_secret(), &cid)
                .await
                .unwrap()
                .unwrap_err(),
            OauthTokenRejection::Revoked
        );
    }

    async fn consent_is_remembered_per_user_and_client(db: TestDb) {
        let (store, user) = store_with_user(&db).await;
        store
            .upsert_metadata_client("https://app.example/client.json", "{}")
            .await
            .unwrap();
        let cid = "https://app.example/client.json";
        assert_eq!(store.oauth_consent(&user, cid).await.unwrap(), None);
        store
            .record_oauth_consent(&user, cid, &["a".into()])
            .await
            .unwrap();
        store
            .record_oauth_consent(&user, cid, &["b".into(), "a".into()])
            .await
            .unwrap();
        assert_eq!(
            store.oauth_consent(&user, cid).await.unwrap(),
            Some(vec!["a".to_string(), "b".to_string()])
        );
        let client = store.oauth_client(cid).await.unwrap().unwrap();
        assert_eq!(client.source, OauthClientSource::MetadataDocument);
        assert!(!client.confidential);
    }

    async fn revoking_a_refresh_token_revokes_its_family_and_an_access_token_alone(db: TestDb) {
        let (store, user) = store_with_user(&db).await;
        let client = store.register_oauth_client("{}", false).await.unwrap();
        let cid = client.client.client_id.clone();
        let g = grant(&cid, &user);
        let a = store.issue_oauth_tokens(&tokens_for(&g)).await.unwrap();
        assert!(
            store
                .revoke_oauth_token(a.access_token.expose_secret(), "someone-else")
                .await
                .unwrap()
                .is_none()
        );
        store
            .revoke_oauth_token(a.access_token.expose_secret(), &cid)
            .await
            .unwrap();
        assert!(
            store
                .rotate_oauth_refresh_token(a.refresh_token.expose_secret(), &cid)
                .await
                .unwrap()
                .is_ok()
        );
        let b = store.issue_oauth_tokens(&tokens_for(&g)).await.unwrap();
        store
            .revoke_oauth_token(b.refresh_token.expose_secret(), &cid)
            .await
            .unwrap();
        assert_eq!(
            store
                .verify_oauth_access_token(b.access_token.expose_secret())
                .await
                .unwrap()
                .unwrap_err(),
            OauthTokenRejection::Revoked
        );
    }

    /// `ON CONFLICT … DO UPDATE … WHERE`: a metadata document refreshes its own row, never a
    /// registered client's (the upsert is then a no-op, not an error, on both backends).
    async fn a_metadata_document_never_takes_over_a_registered_client(db: TestDb) {
        let (store, _) = store_with_user(&db).await;
        let cid = "https://app.example/client.json";
        store
            .upsert_metadata_client(cid, r#"{"v":1}"#)
            .await
            .unwrap();
        store
            .upsert_metadata_client(cid, r#"{"v":2}"#)
            .await
            .unwrap();
        let doc = store.oauth_client(cid).await.unwrap().unwrap();
        assert_eq!(doc.metadata, r#"{"v":2}"#);
        assert_eq!(doc.source, OauthClientSource::MetadataDocument);

        let registered = store
            .register_oauth_client(r#"{"client_name":"r"}"#, true)
            .await
            .unwrap();
        let rid = &registered.client.client_id;
        store
            .upsert_metadata_client(rid, r#"{"client_name":"evil"}"#)
            .await
            .unwrap();
        let kept = store.oauth_client(rid).await.unwrap().unwrap();
        assert_eq!(kept.metadata, r#"{"client_name":"r"}"#);
        assert_eq!(kept.source, OauthClientSource::Registered);
        assert!(kept.confidential);
        assert_eq!(kept.updated_at, registered.client.updated_at);
        assert!(store.oauth_client("nope").await.unwrap().is_none());
    }

    /// Two replicas presenting the same code, or the same refresh token, at the same moment:
    /// the conditional `UPDATE … RETURNING` lets exactly one through; the other is a replay.
    async fn codes_and_refresh_tokens_are_single_use_across_replicas(db: TestDb) {
        let (a, user) = store_with_user(&db).await;
        let b = db.open().await;
        let client = a.register_oauth_client("{}", false).await.unwrap();
        let cid = client.client.client_id.clone();
        let g = grant(&cid, &user);

        let code = a.create_oauth_code(&g, 60).await.unwrap();
        let (ra, rb) = tokio::join!(
            a.redeem_oauth_code(code.expose_secret()),
            b.redeem_oauth_code(code.expose_secret())
        );
        let outcomes = [ra.unwrap(), rb.unwrap()];
        let redeemed = outcomes
            .iter()
            .filter(|r| matches!(r, CodeRedemption::Redeemed(_)))
            .count();
        let replayed = outcomes
            .iter()
            .filter(|r| matches!(r, CodeRedemption::Replayed { .. }))
            .count();
        assert_eq!((redeemed, replayed), (1, 1), "{outcomes:?}");

        let issued = a.issue_oauth_tokens(&tokens_for(&g)).await.unwrap();
        let rt = issued.refresh_token.expose_secret();
        let (ra, rb) = tokio::join!(
            a.rotate_oauth_refresh_token(rt, &cid),
            b.rotate_oauth_refresh_token(rt, &cid)
        );
        let outcomes = [ra.unwrap(), rb.unwrap()];
        assert_eq!(
            outcomes.iter().filter(|r| r.is_ok()).count(),
            1,
            "{outcomes:?}"
        );
        assert!(
            outcomes
                .iter()
                .any(|r| matches!(r, Err(e) if e.reason == OauthTokenRejection::Reused)),
            "{outcomes:?}"
        );
        // The reuse revoked the family, on both replicas.
        for store in [&a, &b] {
            assert_eq!(
                store
                    .verify_oauth_access_token(issued.access_token.expose_secret())
                    .await
                    .unwrap()
                    .unwrap_err(),
                OauthTokenRejection::Revoked
            );
        }
    }

    /// Migration 0004 over a version-3 database: a client stored before it reads as a public,
    /// registered client (the new NOT NULL columns take their defaults), and consent is one row
    /// per (user, client) from then on (the new unique index `ON CONFLICT` relies on).
    async fn version_three_clients_survive_migration_four(db: TestDb) {
        use sqlx::SqlSafeStr as _;
        use sqlx::migrate::{Migration, MigrationType, Migrator};
        super::super::install_drivers();
        let pool = sqlx::Pool::<sqlx::Any>::connect(&db.any_url())
            .await
            .unwrap();
        let v3 = Migrator::with_migrations(
            super::super::MIGRATIONS[..3]
                .iter()
                .map(|&(v, d, sql)| {
                    Migration::new(
                        v,
                        d.into(),
                        MigrationType::Simple,
                        sql.into_sql_str(),
                        false,
                    )
                })
                .collect(),
        );
        v3.run(&pool).await.unwrap();
        sqlx::query(
            "INSERT INTO oauth_clients (client_id, metadata, created_at) VALUES ('old', '{}', 7)",
        )
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;

        let (store, user) = store_with_user(&db).await;
        let old = store.oauth_client("old").await.unwrap().unwrap();
        assert_eq!(old.source, OauthClientSource::Registered);
        assert!(!old.confidential);
        assert_eq!((old.created_at, old.updated_at), (7, 0));
        assert!(!store.check_oauth_client_secret("old", "").await.unwrap());

        store
            .record_oauth_consent(&user, "old", &["a".into()])
            .await
            .unwrap();
        store
            .record_oauth_consent(&user, "old", &["b".into()])
            .await
            .unwrap();
        let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM oauth_grants")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(rows, 1);
        let duplicate = sqlx::query(
            "INSERT INTO oauth_grants (id, user_id, client_id, scopes, created_at) \
             VALUES ('dup', $1, 'old', '', 1)",
        )
        .bind(&user)
        .execute(&store.pool)
        .await;
        assert!(duplicate.is_err(), "one consent row per (user, client)");
    }

    both_backends!(
        registered_client_secret_is_checked_and_stored_hashed,
        a_code_is_redeemed_once_and_a_replay_revokes_its_tokens,
        an_expired_code_is_refused,
        refresh_rotation_and_reuse_revokes_the_family,
        consent_is_remembered_per_user_and_client,
        revoking_a_refresh_token_revokes_its_family_and_an_access_token_alone,
        a_metadata_document_never_takes_over_a_registered_client,
        codes_and_refresh_tokens_are_single_use_across_replicas,
        version_three_clients_survive_migration_four,
    );
}
