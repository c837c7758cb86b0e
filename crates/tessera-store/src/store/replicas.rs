//! What each replica last reported of its live MCP client sessions (several replicas on one
//! PostgreSQL database), so that an admin's list on any replica shows them all.

use sqlx::Row as _;

use super::{Store, UnixTime, now_unix};
use crate::error::StoreError;

/// One replica's last report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaSessions {
    /// The replica's id ([`Store::replica_id`]).
    pub replica: String,
    /// When it reported.
    pub seen_at: UnixTime,
    /// Its sessions as it reported them: a JSON array of the admin list's rows.
    pub sessions: String,
}

impl Store {
    /// Replaces `replica`'s report with `sessions` (a JSON array), stamped now.
    pub async fn report_replica_sessions(
        &self,
        replica: &str,
        sessions: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO replica_sessions (replica, seen_at, sessions) VALUES ($1, $2, $3) \
             ON CONFLICT (replica) DO UPDATE SET seen_at = excluded.seen_at, sessions = excluded.sessions",
        )
        .bind(replica)
        .bind(now_unix())
        .bind(sessions)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The reports of every replica but `except` made at or after `since`, by replica id.
    pub async fn replica_sessions(
        &self,
        except: &str,
        since: UnixTime,
    ) -> Result<Vec<ReplicaSessions>, StoreError> {
        let rows = sqlx::query(
            "SELECT replica, seen_at, sessions FROM replica_sessions \
             WHERE replica <> $1 AND seen_at >= $2 ORDER BY replica",
        )
        .bind(except)
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(ReplicaSessions {
                    replica: row.try_get("replica")?,
                    seen_at: row.try_get("seen_at")?,
                    sessions: row.try_get("sessions")?,
                })
            })
            .collect()
    }

    /// Removes `replica`'s report: it is shutting down. Returns whether there was one.
    pub async fn forget_replica_sessions(&self, replica: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM replica_sessions WHERE replica = $1")
            .bind(replica)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Removes the reports made before `before`: replicas that stopped without saying so.
    /// Returns how many.
    pub async fn purge_replica_sessions(&self, before: UnixTime) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM replica_sessions WHERE seen_at < $1")
            .bind(before)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}
