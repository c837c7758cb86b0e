//! What the gateway tells operators about calls: a latency histogram per upstream for
//! `/metrics`, and one activity record per `tools/call` of a signed-in user through the
//! [`CallObserver`] seam (the binary writes them to the store's activity log).
//!
//! Invariant: **an activity record never holds arguments or results** — who, which server and
//! tool, when, how long, the outcome and a coarse reason.

use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use serde_json::value::RawValue;
use tessera_identity::Identity;

use crate::gateway::Gateway;
use crate::jsonrpc::{Envelope, RawObject};
use crate::router::Reply;
use crate::session::ClientSession;

/// How one tool call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallOutcome {
    /// A result without `isError`.
    Success,
    /// A result with `isError: true` (the tool ran and failed, or the gateway explained why
    /// it could not run it, e.g. a missing connection).
    ToolError,
    /// A JSON-RPC error (from the upstream or the gateway).
    Error,
    /// No answer within the call's deadline.
    Timeout,
    /// The client cancelled or went away before the answer.
    Cancelled,
}

impl CallOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::ToolError => "tool_error",
            Self::Error => "error",
            Self::Timeout => "timeout",
            Self::Cancelled => "cancelled",
        }
    }
}

/// One finished `tools/call` of a signed-in user.
#[derive(Debug)]
pub struct ToolCall<'a> {
    pub identity: &'a Identity,
    pub server: &'a str,
    pub tool: &'a str,
    /// `<client session id>:<JSON-RPC id>`, the same id the credential audit records carry.
    pub request_id: &'a str,
    pub duration: Duration,
    pub outcome: CallOutcome,
}

/// Receives every finished `tools/call` of a signed-in user. Must not block.
pub trait CallObserver: Send + Sync + 'static {
    fn tool_call(&self, call: &ToolCall<'_>);
}

/// A call being observed until its final message.
pub(crate) struct Pending {
    observer: Arc<dyn CallObserver>,
    identity: Arc<Identity>,
    server: String,
    tool: String,
    request_id: String,
    started: Instant,
}

impl Pending {
    pub(crate) fn finish(&self, outcome: CallOutcome) {
        self.observer.tool_call(&ToolCall {
            identity: &self.identity,
            server: &self.server,
            tool: &self.tool,
            request_id: &self.request_id,
            duration: self.started.elapsed(),
            outcome,
        });
    }
}

/// The outcome a final response text stands for.
pub(crate) fn outcome_of(text: &str) -> CallOutcome {
    let Ok(env) = Envelope::parse(text) else {
        return CallOutcome::Error;
    };
    if env.error.is_some() {
        return CallOutcome::Error;
    }
    let is_error = env
        .result
        .as_deref()
        .and_then(|r| RawObject::parse(r.get()).ok())
        .and_then(|r| r.get("isError").map(|v| v.get().trim() == "true"))
        .unwrap_or(false);
    if is_error {
        CallOutcome::ToolError
    } else {
        CallOutcome::Success
    }
}

/// Observes a `tools/call` reply when an observer is set and the caller is a user: a reply known
/// now is recorded at once, a routed call when its final message arrives.
pub(crate) fn tool_call(
    gw: &Gateway,
    session: &ClientSession,
    params: &str,
    id: &RawValue,
    started: Instant,
    reply: Reply,
) -> Reply {
    let (Some(observer), Some(identity)) = (gw.observer(), session.identity()) else {
        return reply;
    };
    let exposed = RawObject::parse(params)
        .ok()
        .and_then(|p| p.get_str("name"))
        .unwrap_or_default();
    let (server, tool) = exposed
        .split_once(gw.config.tool_separator.as_str())
        .unwrap_or((exposed.as_str(), ""));
    let pending = Pending {
        observer: observer.clone(),
        identity,
        server: server.to_owned(),
        tool: tool.to_owned(),
        request_id: format!("{}:{}", session.id, id.get()),
        started,
    };
    match reply {
        Reply::Now(text) => {
            pending.finish(outcome_of(&text));
            Reply::Now(text)
        }
        Reply::Call(mut handle) => {
            handle.observe(pending);
            Reply::Call(handle)
        }
    }
}

/// Upper bounds (seconds) of the call latency histogram.
const BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// A Prometheus histogram of relaxed atomics (one increment per observation).
#[derive(Default)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS.len() + 1],
    sum_us: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, took: Duration) {
        let secs = took.as_secs_f64();
        let i = BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BUCKETS.len());
        self.counts[i].fetch_add(1, Relaxed);
        self.sum_us
            .fetch_add(u64::try_from(took.as_micros()).unwrap_or(u64::MAX), Relaxed);
    }

    /// Writes the `_bucket`, `_sum` and `_count` lines of `name` with `labels` (`k="v"`).
    pub fn render(&self, name: &str, labels: &str, out: &mut String) {
        let mut cumulative = 0u64;
        for (i, bound) in BUCKETS.iter().enumerate() {
            cumulative += self.counts[i].load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {cumulative}");
        }
        cumulative += self.counts[BUCKETS.len()].load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {cumulative}");
        let _ = writeln!(
            out,
            "{name}_sum{{{labels}}} {}",
            self.sum_us.load(Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count{{{labels}}} {cumulative}");
    }
}

/// The MCP methods counted by name at `/metrics`; anything else counts as `other`.
pub(crate) const METHODS: [&str; 16] = [
    "initialize",
    "ping",
    "tools/list",
    "tools/call",
    "prompts/list",
    "prompts/get",
    "resources/list",
    "resources/templates/list",
    "resources/read",
    "resources/subscribe",
    "resources/unsubscribe",
    "completion/complete",
    "logging/setLevel",
    "notifications",
    "responses",
    "other",
];

pub(crate) fn method_index(method: &str) -> usize {
    METHODS
        .iter()
        .position(|m| *m == method)
        .unwrap_or(METHODS.len() - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_are_read_from_the_final_message() {
        assert_eq!(
            outcome_of(r#"{"jsonrpc":"2.0","id":1,"result":{"content":[]}}"#),
            CallOutcome::Success
        );
        assert_eq!(
            outcome_of(
                r#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"\"isError\":true"}],"isError":true}}"#
            ),
            CallOutcome::ToolError
        );
        assert_eq!(
            outcome_of(
                r#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"\"isError\":true"}]}}"#
            ),
            CallOutcome::Success
        );
        assert_eq!(
            outcome_of(r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32001,"message":"x"}}"#),
            CallOutcome::Error
        );
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(500));
        h.observe(Duration::from_millis(20));
        h.observe(Duration::from_secs(60));
        let mut out = String::new();
        h.render("x_seconds", "server=\"a\"", &mut out);
        assert!(
            out.contains("x_seconds_bucket{server=\"a\",le=\"0.001\"} 1"),
            "{out}"
        );
        assert!(
            out.contains("x_seconds_bucket{server=\"a\",le=\"0.025\"} 2"),
            "{out}"
        );
        assert!(
            out.contains("x_seconds_bucket{server=\"a\",le=\"30\"} 2"),
            "{out}"
        );
        assert!(
            out.contains("x_seconds_bucket{server=\"a\",le=\"+Inf\"} 3"),
            "{out}"
        );
        assert!(out.contains("x_seconds_count{server=\"a\"} 3"), "{out}");
    }
}
