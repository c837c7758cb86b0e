//! What each replica last reported of itself — its live MCP client sessions and its upstreams'
//! state — when several replicas share one PostgreSQL database, so that an admin's list and
//! dashboard on any replica cover them all.

use sqlx::Row as _;

use super::{Store, UnixTime, now_unix};
use crate::error::StoreError;

/// One replica's last report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaReport {
    /// The replica's id ([`Store::replica_id`]).
    pub replica: String,
    /// When it reported.
    pub reported_at: UnixTime,
    /// Its MCP client sessions: a JSON array of the admin list's rows.
    pub sessions: String,
    /// Its upstreams' state: a JSON array of `{name, state, error, tools}`.
    pub upstreams: String,
}

impl Store {
    /// Replaces `replica`'s report with `sessions` and `upstreams` (JSON arrays), stamped now.
    pub async fn report_replica(
        &self,
        replica: &str,
        sessions: &str,
        upstreams: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO replica_reports (replica, reported_at, sessions, upstreams) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (replica) DO UPDATE SET \
             reported_at = excluded.reported_at, sessions = excluded.sessions, \
             upstreams = excluded.upstreams",
        )
        .bind(replica)
        .bind(now_unix())
        .bind(sessions)
        .bind(upstreams)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The reports of every replica but `except` made at or after `since`, by replica id.
    pub async fn replica_reports(
        &self,
        except: &str,
        since: UnixTime,
    ) -> Result<Vec<ReplicaReport>, StoreError> {
        let rows = sqlx::query(
            "SELECT replica, reported_at, sessions, upstreams FROM replica_reports \
             WHERE replica <> $1 AND reported_at >= $2 ORDER BY replica",
        )
        .bind(except)
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(ReplicaReport {
                    replica: row.try_get("replica")?,
                    reported_at: row.try_get("reported_at")?,
                    sessions: row.try_get("sessions")?,
                    upstreams: row.try_get("upstreams")?,
                })
            })
            .collect()
    }

    /// Removes `replica`'s report: it is shutting down. Returns whether there was one.
    pub async fn forget_replica_report(&self, replica: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM replica_reports WHERE replica = $1")
            .bind(replica)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Removes the reports made before `before`: replicas that stopped without saying so.
    /// Returns how many.
    pub async fn purge_replica_reports(&self, before: UnixTime) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM replica_reports WHERE reported_at < $1")
            .bind(before)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}
