//! Several replicas on one PostgreSQL database: each reports its live MCP client sessions and
//! its upstreams' state to the store every [`REPORT_INTERVAL`], so that an admin's session list
//! and dashboard on any replica cover every replica — the others as of their last report.

use std::sync::Arc;
use std::time::Duration;

use tessera_store::{UnixTime, now_unix};

use crate::ApiState;

/// How often a replica reports.
pub const REPORT_INTERVAL: Duration = Duration::from_secs(5);

/// A report older than this is left out (its replica stopped, or cannot reach the store).
const FRESH_FOR_SECS: i64 = 3 * REPORT_INTERVAL.as_secs() as i64;

/// A report older than this is deleted by the periodic purge.
const PURGE_AFTER_SECS: i64 = 3600;

/// Another replica as it last reported.
pub(crate) struct OtherReplica {
    pub replica: String,
    pub reported_at: UnixTime,
    /// The admin list's rows, each with `replica` set.
    pub sessions: Vec<serde_json::Value>,
    /// `{name, state, error, tools}` per upstream.
    pub upstreams: Vec<serde_json::Value>,
}

/// Reports this replica every `every` ([`crate::spawn_every`]); nothing is started on a single
/// replica (SQLite) or without a Tokio runtime.
pub fn spawn_reports(
    state: &Arc<ApiState>,
    every: Duration,
) -> Option<tokio::task::JoinHandle<()>> {
    let replica: Arc<str> = state.store.replica_id()?.into();
    crate::spawn_every(state, every, move |state| {
        let replica = replica.clone();
        async move {
            let events = state.events();
            let sessions = serde_json::Value::Array(events.mcp_sessions()).to_string();
            let upstreams = events
                .gateway_status()
                .get("upstreams")
                .cloned()
                .unwrap_or_else(|| serde_json::json!([]))
                .to_string();
            if let Err(e) = state
                .store
                .report_replica(&replica, &sessions, &upstreams)
                .await
            {
                tracing::warn!(error = %e, "reporting this replica's sessions and upstreams failed");
            }
        }
    })
}

/// Removes this replica's report (it is shutting down); failures are logged.
pub async fn forget_report(state: &ApiState) {
    let Some(replica) = state.store.replica_id() else {
        return;
    };
    if let Err(e) = state.store.forget_replica_report(replica).await {
        tracing::warn!(error = %e, "removing this replica's report failed");
    }
}

/// Deletes the reports of replicas that stopped without removing theirs.
pub(crate) async fn purge(state: &ApiState) {
    if state.store.replica_id().is_none() {
        return;
    }
    if let Err(e) = state
        .store
        .purge_replica_reports(now_unix() - PURGE_AFTER_SECS)
        .await
    {
        tracing::warn!(error = %e, "purging old replica reports failed");
    }
}

/// The other replicas' fresh reports, by replica id. Empty on a single replica. A report that
/// does not parse is skipped (logged).
pub(crate) async fn others(
    state: &ApiState,
) -> Result<Vec<OtherReplica>, tessera_store::StoreError> {
    let Some(me) = state.store.replica_id() else {
        return Ok(Vec::new());
    };
    let reports = state
        .store
        .replica_reports(me, now_unix() - FRESH_FOR_SECS)
        .await?;
    Ok(reports
        .into_iter()
        .filter_map(|r| {
            let parsed = serde_json::from_str::<Vec<serde_json::Value>>(&r.sessions)
                .and_then(|s| Ok((s, serde_json::from_str::<Vec<serde_json::Value>>(&r.upstreams)?)));
            let (mut sessions, upstreams) = match parsed {
                Ok(parsed) => parsed,
                Err(e) => {
                    tracing::warn!(replica = %r.replica, error = %e, "a replica's report does not parse");
                    return None;
                }
            };
            for row in &mut sessions {
                if let Some(o) = row.as_object_mut() {
                    o.insert("replica".into(), r.replica.clone().into());
                }
            }
            Some(OtherReplica {
                replica: r.replica,
                reported_at: r.reported_at,
                sessions,
                upstreams,
            })
        })
        .collect())
}
