//! The activity log of MCP tool calls: the proxy's `CallObserver`, answered by queueing one
//! secret-free record per finished `tools/call` of a signed-in user on the audit queue (never
//! blocking the call; a full queue drops and counts).

use std::sync::Arc;

use tessera_broker::{ActivityAction, ActivityMethod, ActivityOutcome, Auditor};
use tessera_proxy::observe::{CallObserver, CallOutcome, ToolCall};
use tessera_store::ActivityRecord;

use crate::users::UserDirectory;

pub(crate) struct ActivityLog {
    pub(crate) users: Arc<UserDirectory>,
    pub(crate) auditor: Auditor,
}

fn record(user_id: &str, call: &ToolCall<'_>) -> ActivityRecord {
    let (outcome, reason) = match call.outcome {
        CallOutcome::Success => (ActivityOutcome::Success, None),
        other => (ActivityOutcome::Failure, Some(other.as_str().to_owned())),
    };
    ActivityRecord {
        ts: tessera_store::now_unix(),
        user_id: Some(user_id.to_owned()),
        server: call.server.to_owned(),
        request_id: Some(call.request_id.to_owned()),
        method: ActivityMethod::Mcp,
        action: ActivityAction::ToolCall,
        outcome,
        reason,
        duration_ms: Some(i64::try_from(call.duration.as_millis()).unwrap_or(i64::MAX)),
        tool: Some(call.tool.to_owned()),
    }
}

impl CallObserver for ActivityLog {
    fn tool_call(&self, call: &ToolCall<'_>) {
        if let Some(user_id) = self.users.known(call.identity) {
            self.auditor.record(record(&user_id, call));
            return;
        }
        // A user's first call in this process: find (or create) their row off the call path.
        let users = self.users.clone();
        let auditor = self.auditor.clone();
        let identity = call.identity.clone();
        let mut pending = record("", call);
        tokio::spawn(async move {
            if let Some(user_id) = users.user_id(&identity).await {
                pending.user_id = Some(user_id.to_string());
                auditor.record(pending);
            }
        });
    }
}
