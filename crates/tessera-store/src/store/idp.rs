//! The user's identity-provider tokens, sealed at rest with AAD `idp_token|<user_id>|<kind>`.

use secrecy::SecretString;
use sqlx::Row as _;

use super::{Store, UnixTime, join_scopes, now_unix, split_scopes, user_fk};
use crate::error::StoreError;
use crate::seal::{Aad, IdpTokenKind};

/// A user's tokens from their identity provider (the subject tokens for token exchange).
#[derive(Debug)]
pub struct IdpTokens {
    /// The access token.
    pub access_token: SecretString,
    /// The refresh token, if the provider issued one.
    pub refresh_token: Option<SecretString>,
    /// The ID token, if any.
    pub id_token: Option<SecretString>,
    /// When the access token expires; `None` = unknown.
    pub expires_at: Option<UnixTime>,
    /// The scopes the provider granted.
    pub scopes: Vec<String>,
}

/// [`IdpTokens`] as read back, with the time they were stored.
#[derive(Debug)]
pub struct StoredIdpTokens {
    /// The tokens, opened.
    pub tokens: IdpTokens,
    /// When they were last stored.
    pub updated_at: UnixTime,
}

impl Store {
    /// Seals and stores a user's provider tokens, replacing any before.
    pub async fn put_idp_tokens(
        &self,
        user_id: &str,
        tokens: &IdpTokens,
    ) -> Result<(), StoreError> {
        let keyring = self.keyring()?;
        let seal =
            |kind, secret: &SecretString| keyring.seal_str(secret, &Aad::idp_token(user_id, kind));
        let access = seal(IdpTokenKind::Access, &tokens.access_token)?;
        let refresh = tokens
            .refresh_token
            .as_ref()
            .map(|t| seal(IdpTokenKind::Refresh, t))
            .transpose()?;
        let id = tokens
            .id_token
            .as_ref()
            .map(|t| seal(IdpTokenKind::Id, t))
            .transpose()?;
        sqlx::query(
            "INSERT INTO idp_tokens (user_id, access_token_sealed, refresh_token_sealed, \
               id_token_sealed, expires_at, scopes, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (user_id) DO UPDATE SET \
               access_token_sealed = excluded.access_token_sealed, \
               refresh_token_sealed = excluded.refresh_token_sealed, \
               id_token_sealed = excluded.id_token_sealed, \
               expires_at = excluded.expires_at, scopes = excluded.scopes, \
               updated_at = excluded.updated_at",
        )
        .bind(user_id)
        .bind(access)
        .bind(refresh)
        .bind(id)
        .bind(tokens.expires_at)
        .bind(join_scopes(&tokens.scopes)?)
        .bind(now_unix())
        .execute(&self.pool)
        .await
        .map_err(user_fk(user_id))?;
        Ok(())
    }

    /// Reads and opens a user's provider tokens. A row that does not open for this user (copied
    /// from another user, altered, or sealed with a key no longer in the keyring) is an error,
    /// never `None`: the caller must ask the user to sign in again.
    pub async fn get_idp_tokens(
        &self,
        user_id: &str,
    ) -> Result<Option<StoredIdpTokens>, StoreError> {
        let keyring = self.keyring()?;
        let Some(row) = sqlx::query(
            "SELECT access_token_sealed, refresh_token_sealed, id_token_sealed, expires_at, \
               scopes, updated_at \
             FROM idp_tokens WHERE user_id = $1",
        )
        .bind(user_id)
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        let open = |kind, sealed: &str| keyring.open_string(sealed, &Aad::idp_token(user_id, kind));
        let access: String = row.try_get("access_token_sealed")?;
        let refresh: Option<String> = row.try_get("refresh_token_sealed")?;
        let id: Option<String> = row.try_get("id_token_sealed")?;
        let scopes: String = row.try_get("scopes")?;
        Ok(Some(StoredIdpTokens {
            tokens: IdpTokens {
                access_token: open(IdpTokenKind::Access, &access)?,
                refresh_token: refresh
                    .map(|s| open(IdpTokenKind::Refresh, &s))
                    .transpose()?,
                id_token: id.map(|s| open(IdpTokenKind::Id, &s)).transpose()?,
                expires_at: row.try_get("expires_at")?,
                scopes: split_scopes(&scopes),
            },
            updated_at: row.try_get("updated_at")?,
        }))
    }

    /// Forgets a user's provider tokens (sign-out everywhere, or the provider revoked them).
    pub async fn delete_idp_tokens(&self, user_id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM idp_tokens WHERE user_id = $1")
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }
}
