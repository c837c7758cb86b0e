//! Key rotation: re-seal every sealed column under the keyring's active key.
//!
//! Row by row, each row one UPDATE that only applies if the row still holds the values read
//! (so a concurrent write is never overwritten with older tokens). Rows already sealed entirely
//! under the active key id are skipped, so an interrupted rotation can simply be run again.

use secrecy::ExposeSecret as _;
use sqlx::Row as _;

use super::Store;
use super::credentials::{access_aad, refresh_aad, verifier_aad};
use crate::error::StoreError;
use crate::seal::{Aad, IdpTokenKind, Keyring, SealError};

/// A row that could not be opened with the keyring (left as it is).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnreadableRow {
    /// The table.
    pub table: &'static str,
    /// The row's key (user id, server key or state hash; never a secret).
    pub row: String,
    /// Why it did not open.
    pub reason: String,
}

/// What [`Store::reseal_all`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResealReport {
    /// Rows looked at.
    pub total: u64,
    /// Rows re-sealed under the active key.
    pub resealed: u64,
    /// Rows already under the active key, or changed concurrently (then written by the store's
    /// own keyring), left as they are.
    pub skipped: u64,
    /// Rows that did not open with this keyring, left as they are.
    pub unreadable: Vec<UnreadableRow>,
}

impl ResealReport {
    /// True when every row is readable (the old keys may be retired).
    pub fn complete(&self) -> bool {
        self.unreadable.is_empty()
    }
}

/// The re-sealed value, or `None` if it is already under the active key.
fn reseal(keyring: &Keyring, sealed: &str, aad: &Aad) -> Result<Option<String>, SealError> {
    if Keyring::kid_of(sealed)? == keyring.active_kid() {
        return Ok(None);
    }
    let plain = keyring.open(sealed, aad)?;
    keyring.seal(plain.expose_secret(), aad).map(Some)
}

fn reseal_opt(
    keyring: &Keyring,
    sealed: Option<&str>,
    aad: &Aad,
) -> Result<Option<String>, SealError> {
    match sealed {
        Some(s) => reseal(keyring, s, aad),
        None => Ok(None),
    }
}

enum Step {
    Resealed,
    Skipped,
}

impl Store {
    /// Re-seals every sealed column (credentials, idp_tokens, connect_flows, user_servers) under `keyring`'s
    /// active key, calling `progress(done, total)` after each row. Safe to interrupt and run
    /// again; rows that do not open are reported, not fatal.
    pub async fn reseal_all(
        &self,
        keyring: &Keyring,
        mut progress: impl FnMut(u64, u64),
    ) -> Result<ResealReport, StoreError> {
        let creds: Vec<(String, String)> =
            sqlx::query_as("SELECT user_id, server_key FROM credentials ORDER BY 1, 2")
                .fetch_all(&self.pool)
                .await?;
        let idps: Vec<String> = sqlx::query_scalar("SELECT user_id FROM idp_tokens ORDER BY 1")
            .fetch_all(&self.pool)
            .await?;
        let flows: Vec<String> =
            sqlx::query_scalar("SELECT state_hash FROM connect_flows ORDER BY 1")
                .fetch_all(&self.pool)
                .await?;
        let servers: Vec<(String, String)> = sqlx::query_as(
            "SELECT user_id, id FROM user_servers WHERE headers_sealed IS NOT NULL ORDER BY 1, 2",
        )
        .fetch_all(&self.pool)
        .await?;
        let total = u64::try_from(creds.len() + idps.len() + flows.len() + servers.len())
            .unwrap_or(u64::MAX);
        let mut report = ResealReport {
            total,
            ..ResealReport::default()
        };
        let mut done = 0u64;
        let mut tally = |report: &mut ResealReport,
                         table: &'static str,
                         row: String,
                         result: Result<Step, StoreError>|
         -> Result<(), StoreError> {
            match result {
                Ok(Step::Resealed) => report.resealed += 1,
                Ok(Step::Skipped) => report.skipped += 1,
                Err(StoreError::Seal(e)) => report.unreadable.push(UnreadableRow {
                    table,
                    row,
                    reason: e.to_string(),
                }),
                Err(e) => return Err(e),
            }
            done += 1;
            progress(done, total);
            Ok(())
        };
        for (user_id, key) in creds {
            let result = self.reseal_credential(keyring, &user_id, &key).await;
            tally(
                &mut report,
                "credentials",
                format!("{user_id}/{key}"),
                result,
            )?;
        }
        for user_id in idps {
            let result = self.reseal_idp(keyring, &user_id).await;
            tally(&mut report, "idp_tokens", user_id, result)?;
        }
        for state_hash in flows {
            let result = self.reseal_flow(keyring, &state_hash).await;
            tally(&mut report, "connect_flows", state_hash, result)?;
        }
        for (user_id, id) in servers {
            let result = self.reseal_user_server(keyring, &user_id, &id).await;
            tally(
                &mut report,
                "user_servers",
                format!("{user_id}/{id}"),
                result,
            )?;
        }
        Ok(report)
    }

    async fn reseal_credential(
        &self,
        keyring: &Keyring,
        user_id: &str,
        key: &str,
    ) -> Result<Step, StoreError> {
        let Some(row) = sqlx::query(
            "SELECT access_token_sealed, refresh_token_sealed FROM credentials \
             WHERE user_id = $1 AND server_key = $2",
        )
        .bind(user_id)
        .bind(key)
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(Step::Skipped);
        };
        let access: String = row.try_get("access_token_sealed")?;
        let refresh: Option<String> = row.try_get("refresh_token_sealed")?;
        let new_access = reseal(keyring, &access, &access_aad(user_id, key))?;
        let new_refresh = reseal_opt(keyring, refresh.as_deref(), &refresh_aad(user_id, key))?;
        if new_access.is_none() && new_refresh.is_none() {
            return Ok(Step::Skipped);
        }
        let done = sqlx::query(
            "UPDATE credentials SET access_token_sealed = $1, refresh_token_sealed = $2 \
             WHERE user_id = $3 AND server_key = $4 AND access_token_sealed = $5 \
               AND refresh_token_sealed IS NOT DISTINCT FROM $6",
        )
        .bind(new_access.as_deref().unwrap_or(&access))
        .bind(new_refresh.as_deref().or(refresh.as_deref()))
        .bind(user_id)
        .bind(key)
        .bind(&access)
        .bind(refresh.as_deref())
        .execute(&self.pool)
        .await?;
        Ok(if done.rows_affected() > 0 {
            Step::Resealed
        } else {
            Step::Skipped
        })
    }

    async fn reseal_idp(&self, keyring: &Keyring, user_id: &str) -> Result<Step, StoreError> {
        let Some(row) = sqlx::query(
            "SELECT access_token_sealed, refresh_token_sealed, id_token_sealed FROM idp_tokens \
             WHERE user_id = $1",
        )
        .bind(user_id)
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(Step::Skipped);
        };
        let access: String = row.try_get("access_token_sealed")?;
        let refresh: Option<String> = row.try_get("refresh_token_sealed")?;
        let id: Option<String> = row.try_get("id_token_sealed")?;
        let aad = |kind| Aad::idp_token(user_id, kind);
        let new_access = reseal(keyring, &access, &aad(IdpTokenKind::Access))?;
        let new_refresh = reseal_opt(keyring, refresh.as_deref(), &aad(IdpTokenKind::Refresh))?;
        let new_id = reseal_opt(keyring, id.as_deref(), &aad(IdpTokenKind::Id))?;
        if new_access.is_none() && new_refresh.is_none() && new_id.is_none() {
            return Ok(Step::Skipped);
        }
        let done = sqlx::query(
            "UPDATE idp_tokens SET access_token_sealed = $1, refresh_token_sealed = $2, \
               id_token_sealed = $3 \
             WHERE user_id = $4 AND access_token_sealed = $5 \
               AND refresh_token_sealed IS NOT DISTINCT FROM $6 \
               AND id_token_sealed IS NOT DISTINCT FROM $7",
        )
        .bind(new_access.as_deref().unwrap_or(&access))
        .bind(new_refresh.as_deref().or(refresh.as_deref()))
        .bind(new_id.as_deref().or(id.as_deref()))
        .bind(user_id)
        .bind(&access)
        .bind(refresh.as_deref())
        .bind(id.as_deref())
        .execute(&self.pool)
        .await?;
        Ok(if done.rows_affected() > 0 {
            Step::Resealed
        } else {
            Step::Skipped
        })
    }

    async fn reseal_user_server(
        &self,
        keyring: &Keyring,
        user_id: &str,
        id: &str,
    ) -> Result<Step, StoreError> {
        let sealed: Option<Option<String>> = sqlx::query_scalar(
            "SELECT headers_sealed FROM user_servers WHERE id = $1 AND user_id = $2",
        )
        .bind(id)
        .bind(user_id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(Some(sealed)) = sealed else {
            return Ok(Step::Skipped);
        };
        let Some(new) = reseal(keyring, &sealed, &Aad::user_server(user_id, id))? else {
            return Ok(Step::Skipped);
        };
        let done = sqlx::query(
            "UPDATE user_servers SET headers_sealed = $1 WHERE id = $2 AND headers_sealed = $3",
        )
        .bind(new)
        .bind(id)
        .bind(&sealed)
        .execute(&self.pool)
        .await?;
        Ok(if done.rows_affected() > 0 {
            Step::Resealed
        } else {
            Step::Skipped
        })
    }

    async fn reseal_flow(&self, keyring: &Keyring, state_hash: &str) -> Result<Step, StoreError> {
        let Some(row) = sqlx::query(
            "SELECT user_id, server_key, code_verifier_sealed FROM connect_flows \
             WHERE state_hash = $1",
        )
        .bind(state_hash)
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(Step::Skipped);
        };
        let user_id: String = row.try_get("user_id")?;
        let key: String = row.try_get("server_key")?;
        let sealed: String = row.try_get("code_verifier_sealed")?;
        let Some(new) = reseal(keyring, &sealed, &verifier_aad(state_hash, &user_id, &key))? else {
            return Ok(Step::Skipped);
        };
        let done = sqlx::query(
            "UPDATE connect_flows SET code_verifier_sealed = $1 \
             WHERE state_hash = $2 AND code_verifier_sealed = $3",
        )
        .bind(new)
        .bind(state_hash)
        .bind(&sealed)
        .execute(&self.pool)
        .await?;
        Ok(if done.rows_affected() > 0 {
            Step::Resealed
        } else {
            Step::Skipped
        })
    }
}
