//! Browser sign-in sessions, looked up by the SHA-256 of the cookie value.

use std::time::Duration;

use secrecy::SecretString;
use sqlx::Row as _;
use sqlx::any::AnyRow;

use super::{Store, UnixTime, expires_at, hash_secret, now_unix, random_secret, user_fk};
use crate::error::StoreError;

/// A browser session as stored. Its id is the hash of the cookie value, not the value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    /// Hex SHA-256 of the cookie value.
    pub id_hash: String,
    /// The signed-in user.
    pub user_id: String,
    /// When the session began.
    pub created_at: UnixTime,
    /// When it ends (a session is expired once `now >= expires_at`).
    pub expires_at: UnixTime,
    /// The browser's `User-Agent`, for the user's session list.
    pub user_agent: Option<String>,
    /// The client address at sign-in.
    pub ip: Option<String>,
}

/// A new session and its cookie value, which exists only here: the store keeps its hash.
#[derive(Debug)]
pub struct NewSession {
    /// The value to put in the cookie (43 characters of base64url).
    pub cookie_value: SecretString,
    /// The stored session.
    pub session: Session,
}

/// A browser session with its user's email, for the admin's list of every session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionInfo {
    /// The stored id: hex SHA-256 of the cookie value (never the cookie).
    pub id: String,
    /// The signed-in user.
    pub user_id: String,
    /// The user's email, if known.
    pub user_email: Option<String>,
    /// When the session began.
    pub created_at: UnixTime,
    /// When it ends.
    pub expires_at: UnixTime,
    /// The browser's `User-Agent`.
    pub user_agent: Option<String>,
    /// The client address at sign-in.
    pub ip: Option<String>,
}

fn session_from_row(row: &AnyRow) -> Result<Session, StoreError> {
    Ok(Session {
        id_hash: row.try_get("id")?,
        user_id: row.try_get("user_id")?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        user_agent: row.try_get("user_agent")?,
        ip: row.try_get("ip")?,
    })
}

impl Store {
    /// Starts a session for `user_id` lasting `ttl`; returns the cookie value once.
    pub async fn create_session(
        &self,
        user_id: &str,
        ttl: Duration,
        user_agent: Option<&str>,
        ip: Option<&str>,
    ) -> Result<NewSession, StoreError> {
        let cookie_value = random_secret()?;
        let session = Session {
            id_hash: hash_secret(secrecy::ExposeSecret::expose_secret(&cookie_value)),
            user_id: user_id.to_owned(),
            created_at: now_unix(),
            expires_at: expires_at(ttl),
            user_agent: user_agent.map(str::to_owned),
            ip: ip.map(str::to_owned),
        };
        sqlx::query(
            "INSERT INTO sessions (id, user_id, created_at, expires_at, user_agent, ip) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&session.id_hash)
        .bind(&session.user_id)
        .bind(session.created_at)
        .bind(session.expires_at)
        .bind(&session.user_agent)
        .bind(&session.ip)
        .execute(&self.pool)
        .await
        .map_err(user_fk(user_id))?;
        Ok(NewSession {
            cookie_value,
            session,
        })
    }

    /// The unexpired session whose cookie value this is; `None` for unknown or expired.
    pub async fn get_session(&self, cookie_value: &str) -> Result<Option<Session>, StoreError> {
        sqlx::query(
            "SELECT id, user_id, created_at, expires_at, user_agent, ip \
             FROM sessions WHERE id = $1 AND expires_at > $2",
        )
        .bind(hash_secret(cookie_value))
        .bind(now_unix())
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(session_from_row)
        .transpose()
    }

    /// Ends the session with this cookie value (sign-out). Returns whether one existed.
    pub async fn delete_session(&self, cookie_value: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM sessions WHERE id = $1")
            .bind(hash_secret(cookie_value))
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Ends every session of a user. Returns how many there were.
    pub async fn delete_user_sessions(&self, user_id: &str) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM sessions WHERE user_id = $1")
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    /// Every user's browser sessions (expired ones not yet purged included), newest first.
    pub async fn list_all_sessions(&self) -> Result<Vec<SessionInfo>, StoreError> {
        sqlx::query(
            "SELECT s.id, s.user_id, u.email, s.created_at, s.expires_at, s.user_agent, s.ip \
             FROM sessions s JOIN users u ON u.id = s.user_id \
             ORDER BY s.created_at DESC, s.id",
        )
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|row| {
            Ok(SessionInfo {
                id: row.try_get("id")?,
                user_id: row.try_get("user_id")?,
                user_email: row.try_get("email")?,
                created_at: row.try_get("created_at")?,
                expires_at: row.try_get("expires_at")?,
                user_agent: row.try_get("user_agent")?,
                ip: row.try_get("ip")?,
            })
        })
        .collect()
    }

    /// Ends the session with this stored id (the cookie's hash, as [`SessionInfo::id`] — never
    /// the cookie value). Returns whether one existed.
    pub async fn delete_session_by_id(&self, id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM sessions WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Deletes expired sessions. Returns how many.
    pub async fn purge_expired_sessions(&self) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM sessions WHERE expires_at <= $1")
            .bind(now_unix())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}
