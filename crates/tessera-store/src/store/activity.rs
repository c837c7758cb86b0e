//! The broker's audit trail: one secret-free row per acquire, refresh, inject, connect step,
//! policy denial or disconnect. The table has no column that can hold a token.

use sqlx::Row as _;

use super::{Store, UnixTime, new_id};
use crate::error::StoreError;

/// Reasons longer than this many bytes are cut (at a character boundary) before storing.
pub const MAX_REASON_LEN: usize = 256;

macro_rules! vocabulary {
    ($(#[$doc:meta])* $name:ident, $what:literal { $($(#[$vdoc:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant),+
        }

        impl $name {
            /// The stored name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            fn parse(s: &str) -> Result<Self, StoreError> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(StoreError::Corrupt { what: $what, value: s.to_owned() }),
                }
            }
        }
    };
}

vocabulary! {
    /// How the broker obtains credentials for the server.
    ActivityMethod, "activity.method" {
        /// RFC 8693 token exchange.
        TokenExchange => "token_exchange",
        /// Entra ID on-behalf-of.
        EntraObo => "entra_obo",
        /// The user's connect flow.
        Connect => "connect",
    }
}

vocabulary! {
    /// What happened.
    ActivityAction, "activity.action" {
        /// A new credential was obtained.
        Acquire => "acquire",
        /// A credential was refreshed.
        Refresh => "refresh",
        /// A credential was injected into a request.
        Inject => "inject",
        /// A connect flow was started.
        ConnectStart => "connect_start",
        /// A connect flow's callback completed.
        ConnectFinish => "connect_finish",
        /// The user (or provider) denied consent.
        ConnectDeny => "connect_deny",
        /// The policy refused the user this server.
        PolicyDeny => "policy_deny",
        /// The user's credential was removed.
        Disconnect => "disconnect",
    }
}

vocabulary! {
    /// How it ended.
    ActivityOutcome, "activity.outcome" {
        /// It worked.
        Success => "success",
        /// It failed.
        Failure => "failure",
        /// It was refused (policy or consent).
        Denied => "denied",
    }
}

/// One audit record to write. No field can hold a token: `reason` is a coarse, fixed-vocabulary
/// text chosen by the caller (e.g. an RFC 6749 error code), never a response body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActivityRecord {
    /// When it happened (unix seconds).
    pub ts: UnixTime,
    /// The user, if known.
    pub user_id: Option<String>,
    /// The upstream server's name.
    pub server: String,
    /// The request id of the MCP or HTTP request that caused it.
    pub request_id: Option<String>,
    /// The broker method.
    pub method: ActivityMethod,
    /// What happened.
    pub action: ActivityAction,
    /// How it ended.
    pub outcome: ActivityOutcome,
    /// A coarse, secret-free reason (cut to [`MAX_REASON_LEN`] bytes).
    pub reason: Option<String>,
    /// How long it took.
    pub duration_ms: Option<i64>,
}

/// A stored audit record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActivityEntry {
    /// The record's id (UUIDv7, so ids sort by time).
    pub id: String,
    /// The record.
    pub record: ActivityRecord,
}

/// Which audit records to list: newest first, at most `limit`.
#[derive(Clone, Copy, Debug, Default)]
pub struct ActivityFilter<'a> {
    /// Only this user's records.
    pub user_id: Option<&'a str>,
    /// Only this server's records.
    pub server: Option<&'a str>,
    /// At most this many (0 = 100).
    pub limit: u32,
}

fn cut(reason: &str) -> &str {
    if reason.len() <= MAX_REASON_LEN {
        return reason;
    }
    let mut end = MAX_REASON_LEN;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

impl Store {
    /// Writes one audit record; returns its id.
    pub async fn record_activity(&self, record: &ActivityRecord) -> Result<String, StoreError> {
        let id = new_id();
        sqlx::query(
            "INSERT INTO activity (id, ts, user_id, server, request_id, method, action, outcome, \
               reason, duration_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&id)
        .bind(record.ts)
        .bind(record.user_id.as_deref())
        .bind(&record.server)
        .bind(record.request_id.as_deref())
        .bind(record.method.as_str())
        .bind(record.action.as_str())
        .bind(record.outcome.as_str())
        .bind(record.reason.as_deref().map(cut))
        .bind(record.duration_ms)
        .execute(&self.pool)
        .await?;
        Ok(id)
    }

    /// Audit records matching `filter`, newest first.
    pub async fn list_activity(
        &self,
        filter: &ActivityFilter<'_>,
    ) -> Result<Vec<ActivityEntry>, StoreError> {
        let limit = if filter.limit == 0 { 100 } else { filter.limit };
        let rows = sqlx::query(
            "SELECT id, ts, user_id, server, request_id, method, action, outcome, reason, \
               duration_ms \
             FROM activity \
             WHERE (CAST($1 AS TEXT) IS NULL OR user_id = $1) \
               AND (CAST($2 AS TEXT) IS NULL OR server = $2) \
             ORDER BY ts DESC, id DESC LIMIT $3",
        )
        .bind(filter.user_id)
        .bind(filter.server)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let method: String = row.try_get("method")?;
                let action: String = row.try_get("action")?;
                let outcome: String = row.try_get("outcome")?;
                Ok(ActivityEntry {
                    id: row.try_get("id")?,
                    record: ActivityRecord {
                        ts: row.try_get("ts")?,
                        user_id: row.try_get("user_id")?,
                        server: row.try_get("server")?,
                        request_id: row.try_get("request_id")?,
                        method: ActivityMethod::parse(&method)?,
                        action: ActivityAction::parse(&action)?,
                        outcome: ActivityOutcome::parse(&outcome)?,
                        reason: row.try_get("reason")?,
                        duration_ms: row.try_get("duration_ms")?,
                    },
                })
            })
            .collect()
    }
}
