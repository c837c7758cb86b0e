//! Several replicas on one PostgreSQL database: each reports its live MCP client sessions to
//! the store every [`REPORT_INTERVAL`], so that an admin's list (and the dashboard's count) on
//! any replica shows every replica's sessions — the others' as of their last report.

use std::sync::Arc;
use std::time::Duration;

use tessera_store::now_unix;

use crate::ApiState;

/// How often a replica reports its sessions.
pub const REPORT_INTERVAL: Duration = Duration::from_secs(5);

/// A report older than this is left out (its replica stopped, or cannot reach the store).
const FRESH_FOR_SECS: i64 = 3 * REPORT_INTERVAL.as_secs() as i64;

/// A report older than this is deleted by the periodic purge.
const PURGE_AFTER_SECS: i64 = 3600;

/// Reports this replica's sessions every `every` until the state is dropped; nothing is started
/// on a single replica (SQLite) or without a Tokio runtime.
pub fn spawn_reports(
    state: &Arc<ApiState>,
    every: Duration,
) -> Option<tokio::task::JoinHandle<()>> {
    let replica = state.store.replica_id()?.to_owned();
    let handle = tokio::runtime::Handle::try_current().ok()?;
    let weak = Arc::downgrade(state);
    Some(handle.spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(state) = weak.upgrade() else { break };
            let sessions = serde_json::Value::Array(state.events().mcp_sessions()).to_string();
            if let Err(e) = state
                .store
                .report_replica_sessions(&replica, &sessions)
                .await
            {
                tracing::warn!(error = %e, "reporting this replica's MCP sessions failed");
            }
        }
    }))
}

/// Removes this replica's report (it is shutting down); failures are logged.
pub async fn forget_report(state: &ApiState) {
    let Some(replica) = state.store.replica_id() else {
        return;
    };
    if let Err(e) = state.store.forget_replica_sessions(replica).await {
        tracing::warn!(error = %e, "removing this replica's MCP session report failed");
    }
}

/// Deletes the reports of replicas that stopped without removing theirs.
pub(crate) async fn purge(state: &ApiState) {
    if state.store.replica_id().is_none() {
        return;
    }
    if let Err(e) = state
        .store
        .purge_replica_sessions(now_unix() - PURGE_AFTER_SECS)
        .await
    {
        tracing::warn!(error = %e, "purging old replica session reports failed");
    }
}

/// The other replicas' fresh reports: (replica, when it reported, its session rows, each with
/// `replica` set). Empty on a single replica. A report that does not parse is skipped.
pub(crate) async fn others(
    state: &ApiState,
) -> Result<Vec<(String, i64, Vec<serde_json::Value>)>, tessera_store::StoreError> {
    let Some(me) = state.store.replica_id() else {
        return Ok(Vec::new());
    };
    let reports = state
        .store
        .replica_sessions(me, now_unix() - FRESH_FOR_SECS)
        .await?;
    Ok(reports
        .into_iter()
        .filter_map(|r| {
            let mut rows: Vec<serde_json::Value> = match serde_json::from_str(&r.sessions) {
                Ok(rows) => rows,
                Err(e) => {
                    tracing::warn!(replica = %r.replica, error = %e, "a replica's session report does not parse");
                    return None;
                }
            };
            for row in &mut rows {
                if let Some(o) = row.as_object_mut() {
                    o.insert("replica".into(), r.replica.clone().into());
                }
            }
            Some((r.replica, r.seen_at, rows))
        })
        .collect())
}
