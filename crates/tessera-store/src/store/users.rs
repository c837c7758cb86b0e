//! Users: one row per (issuer, subject) identity.

use std::fmt;
use std::str::FromStr;

use sqlx::Row as _;
use sqlx::any::AnyRow;

use super::{Store, UnixTime, new_id, now_unix};
use crate::error::StoreError;

/// What a user may do in Tessera.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Manages the gateway.
    Admin,
    /// Uses it.
    User,
}

impl Role {
    /// `admin` or `user`, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::User => "user",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "admin" => Ok(Role::Admin),
            "user" => Ok(Role::User),
            other => Err(StoreError::Corrupt {
                what: "users.role",
                value: other.to_owned(),
            }),
        }
    }
}

/// A user, identified by the (issuer, subject) pair their identity provider vouches for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    /// Tessera's id for the user (UUIDv7).
    pub id: String,
    /// The identity provider's issuer (`iss`).
    pub issuer: String,
    /// The provider's stable id for the user (`sub`).
    pub subject: String,
    /// Lower-cased and trimmed; not unique (two providers may vouch for one address).
    pub email: Option<String>,
    /// Name to show.
    pub display_name: Option<String>,
    /// What the user may do.
    pub role: Role,
    /// A disabled user cannot sign in or use tokens.
    pub disabled: bool,
    /// When the row was created.
    pub created_at: UnixTime,
    /// The last sign-in.
    pub last_login_at: Option<UnixTime>,
}

/// Figures for the admin dashboard ([`Store::dashboard_counts`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DashboardCounts {
    /// Every user.
    pub total_users: u64,
    /// Users who are disabled.
    pub disabled_users: u64,
    /// Unexpired browser sessions.
    pub active_sessions: u64,
    /// Tool calls recorded since the given time.
    pub tool_calls: u64,
    /// Of those, the ones whose outcome is not success.
    pub tool_errors: u64,
    /// Distinct users with any activity since the given time.
    pub active_users: u64,
}

/// A sign-in to record with [`Store::upsert_user`].
#[derive(Clone, Debug)]
pub struct UserLogin<'a> {
    /// The provider's issuer.
    pub issuer: &'a str,
    /// The provider's subject.
    pub subject: &'a str,
    /// The email the provider reports (lower-cased by the store).
    pub email: Option<&'a str>,
    /// The name the provider reports.
    pub display_name: Option<&'a str>,
    /// The role given when the user is new; an existing user's role is kept (see
    /// [`Store::set_role`]).
    pub role_if_new: Role,
}

pub(super) fn user_from_row(row: &AnyRow) -> Result<User, StoreError> {
    let role: String = row.try_get("role")?;
    let disabled: i32 = row.try_get("disabled")?;
    Ok(User {
        id: row.try_get("id")?,
        issuer: row.try_get("issuer")?,
        subject: row.try_get("subject")?,
        email: row.try_get("email")?,
        display_name: row.try_get("display_name")?,
        role: role.parse()?,
        disabled: disabled != 0,
        created_at: row.try_get("created_at")?,
        last_login_at: row.try_get("last_login_at")?,
    })
}

fn clean(value: Option<&str>) -> Option<&str> {
    value.map(str::trim).filter(|v| !v.is_empty())
}

impl Store {
    /// Records a sign-in: creates the user for (issuer, subject) on first sign-in, otherwise
    /// updates email, display name and last login. Returns the user as stored.
    pub async fn upsert_user(&self, login: &UserLogin<'_>) -> Result<User, StoreError> {
        let email = clean(login.email).map(str::to_lowercase);
        let now = now_unix();
        let row = sqlx::query(UPSERT_USER)
            .bind(new_id())
            .bind(login.issuer)
            .bind(login.subject)
            .bind(email)
            .bind(clean(login.display_name))
            .bind(login.role_if_new.as_str())
            .bind(now)
            .fetch_one(&self.pool)
            .await?;
        user_from_row(&row)
    }

    /// The user with this id, if any.
    pub async fn get_user(&self, id: &str) -> Result<Option<User>, StoreError> {
        sqlx::query(SELECT_USER_BY_ID)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(user_from_row)
            .transpose()
    }

    /// The user with this (issuer, subject) identity, if any.
    pub async fn find_user_by_identity(
        &self,
        issuer: &str,
        subject: &str,
    ) -> Result<Option<User>, StoreError> {
        sqlx::query(SELECT_USER_BY_IDENTITY)
            .bind(issuer)
            .bind(subject)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(user_from_row)
            .transpose()
    }

    /// Every user, oldest first.
    pub async fn list_users(&self) -> Result<Vec<User>, StoreError> {
        sqlx::query(
            "SELECT id, issuer, subject, email, display_name, role, disabled, created_at, \
               last_login_at FROM users ORDER BY created_at, id",
        )
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(user_from_row)
        .collect()
    }

    /// Sets a user's role.
    pub async fn set_role(&self, id: &str, role: Role) -> Result<(), StoreError> {
        let done = sqlx::query("UPDATE users SET role = $1 WHERE id = $2")
            .bind(role.as_str())
            .bind(id)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::UserNotFound(id.to_owned()));
        }
        Ok(())
    }

    /// Counts for the admin dashboard; activity figures are those since `since`.
    pub async fn dashboard_counts(&self, since: UnixTime) -> Result<DashboardCounts, StoreError> {
        let row = sqlx::query(
            "SELECT \
               (SELECT COUNT(*) FROM users) AS total_users, \
               (SELECT COUNT(*) FROM users WHERE disabled <> 0) AS disabled_users, \
               (SELECT COUNT(*) FROM sessions WHERE expires_at > $1) AS active_sessions, \
               (SELECT COUNT(*) FROM activity WHERE action = 'tool_call' AND ts >= $2) \
                 AS tool_calls, \
               (SELECT COUNT(*) FROM activity WHERE action = 'tool_call' AND ts >= $2 \
                 AND outcome <> 'success') AS tool_errors, \
               (SELECT COUNT(DISTINCT user_id) FROM activity WHERE ts >= $2 \
                 AND user_id IS NOT NULL) AS active_users",
        )
        .bind(now_unix())
        .bind(since)
        .fetch_one(&self.pool)
        .await?;
        let count = |column: &str| -> Result<u64, StoreError> {
            let n: i64 = row.try_get(column)?;
            Ok(u64::try_from(n).unwrap_or(0))
        };
        Ok(DashboardCounts {
            total_users: count("total_users")?,
            disabled_users: count("disabled_users")?,
            active_sessions: count("active_sessions")?,
            tool_calls: count("tool_calls")?,
            tool_errors: count("tool_errors")?,
            active_users: count("active_users")?,
        })
    }

    /// Disables or re-enables a user. Disabling also ends the user's browser sessions.
    pub async fn set_disabled(&self, id: &str, disabled: bool) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query("UPDATE users SET disabled = $1 WHERE id = $2")
            .bind(i32::from(disabled))
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::UserNotFound(id.to_owned()));
        }
        if disabled {
            sqlx::query("DELETE FROM sessions WHERE user_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

// `sqlx::query` takes a `&'static str` (SqlSafeStr): every statement is a literal.
const UPSERT_USER: &str = "INSERT INTO users \
       (id, issuer, subject, email, display_name, role, disabled, created_at, last_login_at) \
     VALUES ($1, $2, $3, $4, $5, $6, 0, $7, $7) \
     ON CONFLICT (issuer, subject) DO UPDATE SET email = excluded.email, \
       display_name = excluded.display_name, last_login_at = excluded.last_login_at \
     RETURNING id, issuer, subject, email, display_name, role, disabled, created_at, last_login_at";

const SELECT_USER_BY_ID: &str = "SELECT \
       id, issuer, subject, email, display_name, role, disabled, created_at, last_login_at \
     FROM users WHERE id = $1";

const SELECT_USER_BY_IDENTITY: &str = "SELECT \
       id, issuer, subject, email, display_name, role, disabled, created_at, last_login_at \
     FROM users WHERE issuer = $1 AND subject = $2";
