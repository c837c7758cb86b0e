//! Personal access tokens: `tsr_pat_` + 32 random bytes (base64url), stored as a SHA-256 hash.

use secrecy::{ExposeSecret, SecretString};
use sqlx::Row as _;
use sqlx::any::AnyRow;
use subtle::ConstantTimeEq as _;

use super::users::User;
use super::{
    Store, UnixTime, hash_secret, join_scopes, new_id, now_unix, random_secret, split_scopes,
    user_fk,
};
use crate::error::{PatRejection, StoreError};

/// Every personal access token starts with this.
pub const PAT_PREFIX: &str = "tsr_pat_";
/// How many characters of a token are kept for display (the prefix and 4 more).
const DISPLAY_LEN: usize = PAT_PREFIX.len() + 4;
/// `last_used_at` is written at most this often per token, so verification rarely writes.
const LAST_USED_GRANULARITY: i64 = 60;

/// A personal access token as stored (without the token).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PersonalAccessToken {
    /// The token's id (UUIDv7), used to list and revoke it.
    pub id: String,
    /// The owner.
    pub user_id: String,
    /// The owner's label for it.
    pub name: String,
    /// The first characters of the token, to recognise it (`tsr_pat_AbCd`).
    pub prefix: String,
    /// What it may be used for.
    pub scopes: Vec<String>,
    /// When it was created.
    pub created_at: UnixTime,
    /// When it stops working; `None` = never.
    pub expires_at: Option<UnixTime>,
    /// When it was last accepted (to the minute).
    pub last_used_at: Option<UnixTime>,
    /// When it was revoked.
    pub revoked_at: Option<UnixTime>,
    /// The servers it may reach; `None` = every server its user may use.
    pub allowed_servers: Option<Vec<String>>,
    /// What it may do with tools: a subset of `read`, `write`, `destructive` (always `read`).
    pub permissions: Vec<String>,
}

/// The permissions of a token made by [`Store::create_pat`]: everything its user may do.
pub const ALL_PERMISSIONS: [&str; 3] = ["read", "write", "destructive"];

fn split_list(stored: &str) -> Vec<String> {
    stored
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Joins names for a comma-separated column; a name with a comma (or empty) is refused.
fn join_list<S: AsRef<str>>(items: &[S]) -> Result<String, StoreError> {
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let item = item.as_ref();
        if item.is_empty() || item.contains(',') || item.chars().any(char::is_whitespace) {
            return Err(StoreError::InvalidScope(item.to_owned()));
        }
        out.push(item);
    }
    Ok(out.join(","))
}

/// A new token: the only time its plaintext exists outside the caller.
#[derive(Debug)]
pub struct NewPat {
    /// The token to show to the user once.
    pub token: SecretString,
    /// The stored record.
    pub pat: PersonalAccessToken,
}

/// An accepted token and its owner.
#[derive(Clone, Debug)]
pub struct VerifiedPat {
    /// The token's record.
    pub pat: PersonalAccessToken,
    /// Its owner (not disabled).
    pub user: User,
}

/// `SELECT <the columns pat_from_row reads> FROM personal_access_tokens <rest>`.
macro_rules! select_pats {
    ($rest:literal) => {
        concat!(
            "SELECT id, user_id, name, prefix, scopes, created_at, expires_at, last_used_at, ",
            "revoked_at, allowed_servers, permissions FROM personal_access_tokens ",
            $rest
        )
    };
}

fn pat_from_row(row: &AnyRow) -> Result<PersonalAccessToken, StoreError> {
    let scopes: String = row.try_get("scopes")?;
    let allowed: Option<String> = row.try_get("allowed_servers")?;
    let permissions: String = row.try_get("permissions")?;
    Ok(PersonalAccessToken {
        id: row.try_get("id")?,
        user_id: row.try_get("user_id")?,
        name: row.try_get("name")?,
        prefix: row.try_get("prefix")?,
        scopes: split_scopes(&scopes),
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        last_used_at: row.try_get("last_used_at")?,
        revoked_at: row.try_get("revoked_at")?,
        allowed_servers: allowed.as_deref().map(split_list),
        permissions: split_list(&permissions),
    })
}

/// A token about to be inserted: its record, plaintext and the stored forms of its lists.
struct NewRow {
    pat: NewPat,
    hash: String,
    scopes: String,
    allowed: Option<String>,
    permissions: String,
}

impl NewRow {
    fn build<S: AsRef<str>>(
        user_id: &str,
        name: &str,
        scopes: &[S],
        allowed_servers: Option<&[String]>,
        permissions: &[&str],
        expires_at: Option<UnixTime>,
    ) -> Result<Self, StoreError> {
        let scopes_text = join_scopes(scopes)?;
        let allowed_text = allowed_servers.map(join_list).transpose()?;
        let permissions_text = join_list(permissions)?;
        let token = SecretString::from(format!("{PAT_PREFIX}{}", random_secret()?.expose_secret()));
        let plain = token.expose_secret();
        let pat = PersonalAccessToken {
            id: new_id(),
            user_id: user_id.to_owned(),
            name: name.trim().to_owned(),
            prefix: plain[..DISPLAY_LEN].to_owned(),
            scopes: split_scopes(&scopes_text),
            created_at: now_unix(),
            expires_at,
            last_used_at: None,
            revoked_at: None,
            allowed_servers: allowed_text.as_deref().map(split_list),
            permissions: split_list(&permissions_text),
        };
        Ok(NewRow {
            hash: hash_secret(plain),
            pat: NewPat { token, pat },
            scopes: scopes_text,
            allowed: allowed_text,
            permissions: permissions_text,
        })
    }

    async fn insert<'e, E>(&self, executor: E) -> Result<(), sqlx::Error>
    where
        E: sqlx::Executor<'e, Database = sqlx::Any>,
    {
        let pat = &self.pat.pat;
        sqlx::query(
            "INSERT INTO personal_access_tokens (id, user_id, name, token_hash, prefix, scopes, \
               created_at, expires_at, allowed_servers, permissions) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&pat.id)
        .bind(&pat.user_id)
        .bind(&pat.name)
        .bind(&self.hash)
        .bind(&pat.prefix)
        .bind(&self.scopes)
        .bind(pat.created_at)
        .bind(pat.expires_at)
        .bind(&self.allowed)
        .bind(&self.permissions)
        .execute(executor)
        .await
        .map(|_| ())
    }
}

impl Store {
    /// Creates a token for `user_id` with every permission on every server. The plaintext is
    /// in the result and nowhere else.
    pub async fn create_pat<S: AsRef<str>>(
        &self,
        user_id: &str,
        name: &str,
        scopes: &[S],
        expires_at: Option<UnixTime>,
    ) -> Result<NewPat, StoreError> {
        self.insert_pat(user_id, name, scopes, None, &ALL_PERMISSIONS, expires_at)
            .await
    }

    /// Creates an agent token: limited to `allowed_servers` (`None` = every server its user may
    /// use) and to `permissions` (names of `read`, `write`, `destructive`; the caller checks
    /// them). The plaintext is in the result and nowhere else.
    pub async fn create_agent_pat(
        &self,
        user_id: &str,
        name: &str,
        allowed_servers: Option<&[String]>,
        permissions: &[&str],
        expires_at: Option<UnixTime>,
    ) -> Result<NewPat, StoreError> {
        self.insert_pat(
            user_id,
            name,
            &[] as &[&str],
            allowed_servers,
            permissions,
            expires_at,
        )
        .await
    }

    async fn insert_pat<S: AsRef<str>>(
        &self,
        user_id: &str,
        name: &str,
        scopes: &[S],
        allowed_servers: Option<&[String]>,
        permissions: &[&str],
        expires_at: Option<UnixTime>,
    ) -> Result<NewPat, StoreError> {
        let new = NewRow::build(
            user_id,
            name,
            scopes,
            allowed_servers,
            permissions,
            expires_at,
        )?;
        new.insert(&self.pool).await.map_err(user_fk(user_id))?;
        Ok(new.pat)
    }

    /// Replaces one of `user_id`'s live tokens with a new one of the same name, servers,
    /// permissions and scopes that expires at `expires_at`, in one transaction: the old token
    /// is revoked exactly when the new one exists, and of two concurrent regenerations one
    /// wins and the other finds the token revoked ([`StoreError::PatNotFound`], as for a token
    /// that is not the user's). Returns the new token (its plaintext, once) and the old record.
    pub async fn regenerate_pat(
        &self,
        user_id: &str,
        pat_id: &str,
        expires_at: Option<UnixTime>,
    ) -> Result<(NewPat, PersonalAccessToken), StoreError> {
        let not_found = || StoreError::PatNotFound {
            id: pat_id.to_owned(),
            user_id: user_id.to_owned(),
        };
        let mut tx = self.pool.begin().await?;
        let revoked = sqlx::query(
            "UPDATE personal_access_tokens SET revoked_at = $1 \
             WHERE id = $2 AND user_id = $3 AND revoked_at IS NULL",
        )
        .bind(now_unix())
        .bind(pat_id)
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
        if revoked.rows_affected() == 0 {
            return Err(not_found());
        }
        let row = sqlx::query(select_pats!("WHERE id = $1 AND user_id = $2"))
            .bind(pat_id)
            .bind(user_id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(not_found)?;
        let old = pat_from_row(&row)?;
        let permissions: Vec<&str> = old.permissions.iter().map(String::as_str).collect();
        let new = NewRow::build(
            user_id,
            &old.name,
            &old.scopes,
            old.allowed_servers.as_deref(),
            &permissions,
            expires_at,
        )?;
        new.insert(&mut *tx).await?;
        tx.commit().await?;
        Ok((new.pat, old))
    }

    /// Checks a presented token: known, not revoked, not expired, owner not disabled. Records
    /// the use. Rejections are [`StoreError::PatRejected`].
    pub async fn verify_pat(&self, token: &str) -> Result<VerifiedPat, StoreError> {
        let reject = |why| Err(StoreError::PatRejected(why));
        if !token.starts_with(PAT_PREFIX) {
            return reject(PatRejection::Unknown);
        }
        let hash = hash_secret(token);
        let Some(row) = sqlx::query(
            "SELECT id, user_id, name, token_hash, prefix, scopes, created_at, expires_at, \
               last_used_at, revoked_at, allowed_servers, permissions \
             FROM personal_access_tokens WHERE token_hash = $1",
        )
        .bind(&hash)
        .fetch_optional(&self.pool)
        .await?
        else {
            return reject(PatRejection::Unknown);
        };
        let stored: String = row.try_get("token_hash")?;
        if !bool::from(stored.as_bytes().ct_eq(hash.as_bytes())) {
            return reject(PatRejection::Unknown);
        }
        let mut pat = pat_from_row(&row)?;
        let now = now_unix();
        if pat.revoked_at.is_some() {
            return reject(PatRejection::Revoked);
        }
        if pat.expires_at.is_some_and(|at| now >= at) {
            return reject(PatRejection::Expired);
        }
        let Some(user) = self.get_user(&pat.user_id).await? else {
            return reject(PatRejection::Unknown);
        };
        if user.disabled {
            return reject(PatRejection::UserDisabled);
        }
        if pat
            .last_used_at
            .is_none_or(|at| now - at >= LAST_USED_GRANULARITY)
        {
            sqlx::query("UPDATE personal_access_tokens SET last_used_at = $1 WHERE id = $2")
                .bind(now)
                .bind(&pat.id)
                .execute(&self.pool)
                .await?;
            pat.last_used_at = Some(now);
        }
        Ok(VerifiedPat { pat, user })
    }

    /// A user's tokens, newest first, including revoked and expired ones.
    pub async fn list_pats(&self, user_id: &str) -> Result<Vec<PersonalAccessToken>, StoreError> {
        sqlx::query(select_pats!(
            "WHERE user_id = $1 ORDER BY created_at DESC, id DESC"
        ))
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(pat_from_row)
        .collect()
    }

    /// Revokes one of `user_id`'s tokens (idempotent). Another user's token id is
    /// [`StoreError::PatNotFound`].
    pub async fn revoke_pat(&self, user_id: &str, pat_id: &str) -> Result<(), StoreError> {
        let done = sqlx::query(
            "UPDATE personal_access_tokens SET revoked_at = COALESCE(revoked_at, $1) \
             WHERE id = $2 AND user_id = $3",
        )
        .bind(now_unix())
        .bind(pat_id)
        .bind(user_id)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::PatNotFound {
                id: pat_id.to_owned(),
                user_id: user_id.to_owned(),
            });
        }
        Ok(())
    }
}
