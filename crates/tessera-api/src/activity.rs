//! The activity log over REST: broker steps and MCP tool calls, secret-free by construction
//! (the table has no column that can hold a token, an argument or a result).
//!
//! - `GET /api/v1/activity?user=&server=&type=&outcome=&since=&until=&limit=&cursor=` →
//!   `{"activities": [Activity…], "next_cursor": <opaque> | null}`, newest first. `type` is an
//!   action (`tool_call`, `acquire`, `refresh`, `inject`, `connect_start`, `connect_finish`,
//!   `connect_deny`, `policy_deny`, `disconnect`, and — method `authorization_server`, `server`
//!   being the OAuth client's id — `client_approve`, `client_deny`, `token_issue`,
//!   `token_refresh`, `token_revoke`, `grant_revoke`); `outcome` is `success` / `failure` /
//!   `denied`; `since` / `until` are RFC 3339 or unix seconds (inclusive); `limit` 1..=500,
//!   default 50. The cursor is opaque (base64url of the last row's `(ts, id)`).
//! - `GET /api/v1/activity/stream` (same filters but the time window and cursor) →
//!   `text/event-stream` of new records, one `activity` event each (`id:` = the record id, so
//!   `Last-Event-ID` resumes). **Implementation: the handler polls the store every 500 ms for
//!   rows with an id above the last one sent** (ids are UUIDv7 made at insert time, so they
//!   grow in insert order even when an audit record's own timestamp is older); a keep-alive
//!   comment every 15 s; the stream ends when the server shuts down
//!   ([`crate::ApiState::close_streams`]). Polling keeps the writer (the broker's `Auditor`) unchanged and works
//!   for records written by any process sharing the database.
//! - `GET /api/v1/activity/export` (same filters; `limit` up to 50 000, default 10 000) →
//!   `application/x-ndjson`, one Activity per line, newest first.
//!
//! Visibility: a user sees their own records only (`user` naming anyone else → 403); an admin
//! sees everyone's, or one user's with `user`.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures::StreamExt as _;
use tessera_store::{
    ActivityAction, ActivityEntry, ActivityFilter, ActivityOutcome, Role, UnixTime,
};

use crate::ApiState;
use crate::caller::Caller;
use crate::error::ApiError;
use crate::pat::rfc3339;

/// Activity retention: records older than `max_age_days` and beyond the newest `max_records`
/// are purged by the API's periodic purge. The reference's `activity_retention_days` and
/// `activity_max_records`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// 0 = no age limit.
    pub max_age_days: u32,
    /// 0 = no count limit.
    pub max_records: u64,
}

/// `activity_retention_days` when the configuration names none.
pub const DEFAULT_RETENTION_DAYS: u32 = 30;
/// `activity_max_records` when the configuration names none.
pub const DEFAULT_MAX_RECORDS: u64 = 100_000;

impl Default for Retention {
    fn default() -> Self {
        Retention {
            max_age_days: DEFAULT_RETENTION_DAYS,
            max_records: DEFAULT_MAX_RECORDS,
        }
    }
}

/// One retention pass (part of [`crate::purge_once`]); failures are logged. Returns how many
/// records were deleted.
pub async fn purge(state: &ApiState) -> u64 {
    let r = *state
        .retention
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let age = (r.max_age_days > 0).then(|| i64::from(r.max_age_days) * 86_400);
    let count = (r.max_records > 0).then_some(r.max_records);
    match state.store.purge_activity(age, count).await {
        Ok(n) => {
            if n > 0 {
                tracing::debug!(records = n, "purged old activity records");
            }
            n
        }
        Err(e) => {
            tracing::warn!(error = %e, "purging activity records failed");
            0
        }
    }
}

/// Page size when `limit` is not given, and its bounds.
const DEFAULT_LIMIT: u32 = 50;
const MAX_LIMIT: u32 = 500;
const EXPORT_DEFAULT: u32 = 10_000;
const EXPORT_MAX: u32 = 50_000;
/// How often the stream asks the store for new rows.
pub const STREAM_POLL: Duration = Duration::from_millis(500);

/// The parsed query, owned (the store's filter borrows from it).
#[derive(Debug, Default)]
struct Query {
    user: Option<String>,
    server: Option<String>,
    action: Option<ActivityAction>,
    outcome: Option<ActivityOutcome>,
    since: Option<UnixTime>,
    until: Option<UnixTime>,
    limit: Option<u32>,
    cursor: Option<(UnixTime, String)>,
}

fn time_param(name: &str, value: &str) -> Result<UnixTime, ApiError> {
    if let Ok(n) = value.parse::<i64>() {
        return Ok(n);
    }
    humantime::parse_rfc3339_weak(value)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .and_then(|d| i64::try_from(d.as_secs()).ok())
        .ok_or_else(|| {
            ApiError::bad_request(format!("{name} must be an RFC 3339 time or unix seconds"))
        })
}

fn encode_cursor(ts: UnixTime, id: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{ts}:{id}"))
}

fn decode_cursor(cursor: &str) -> Option<(UnixTime, String)> {
    let raw = URL_SAFE_NO_PAD.decode(cursor).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (ts, id) = text.split_once(':')?;
    if id.is_empty() || id.len() > 64 {
        return None;
    }
    Some((ts.parse().ok()?, id.to_owned()))
}

impl Query {
    fn parse(raw: Option<&str>) -> Result<Self, ApiError> {
        let mut q = Query::default();
        for (k, v) in url::form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
            let v = v.trim();
            if v.is_empty() {
                continue;
            }
            match &*k {
                "user" => q.user = Some(v.to_owned()),
                "server" => q.server = Some(v.to_owned()),
                "type" => {
                    q.action = Some(ActivityAction::from_name(v).ok_or_else(|| {
                        ApiError::bad_request(format!("Unknown activity type {v:?}"))
                    })?);
                }
                "outcome" => {
                    q.outcome =
                        Some(ActivityOutcome::from_name(v).ok_or_else(|| {
                            ApiError::bad_request(format!("Unknown outcome {v:?}"))
                        })?);
                }
                "since" => q.since = Some(time_param("since", v)?),
                "until" => q.until = Some(time_param("until", v)?),
                "limit" => {
                    q.limit = Some(v.parse::<u32>().ok().filter(|n| *n > 0).ok_or_else(|| {
                        ApiError::bad_request("limit must be a positive integer")
                    })?);
                }
                "cursor" => {
                    q.cursor = Some(
                        decode_cursor(v).ok_or_else(|| ApiError::bad_request("Invalid cursor"))?,
                    );
                }
                _ => {}
            }
        }
        Ok(q)
    }

    /// Applies visibility: a user may only ask for their own records.
    fn visible_to(mut self, caller: &Caller) -> Result<Self, ApiError> {
        if caller.role == Role::Admin {
            return Ok(self);
        }
        match &self.user {
            Some(u) if *u != caller.user_id && u != "me" => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "Only admins can see another user's activity",
            )),
            _ => {
                self.user = Some(caller.user_id.clone());
                Ok(self)
            }
        }
    }

    fn filter<'a>(&'a self, caller: &'a Caller, limit: u32) -> ActivityFilter<'a> {
        let user = match self.user.as_deref() {
            Some("me") => Some(caller.user_id.as_str()),
            other => other,
        };
        ActivityFilter {
            user_id: user,
            server: self.server.as_deref(),
            action: self.action,
            outcome: self.outcome,
            since: self.since,
            until: self.until,
            before: self.cursor.as_ref().map(|(ts, id)| (*ts, id.as_str())),
            limit,
        }
    }
}

/// The JSON of one record.
pub(crate) fn entry_json(e: &ActivityEntry) -> serde_json::Value {
    let r = &e.record;
    serde_json::json!({
        "id": e.id,
        "timestamp": rfc3339(Some(r.ts)),
        "user_id": r.user_id,
        "server": r.server,
        "tool": r.tool,
        "type": r.action.as_str(),
        "method": r.method.as_str(),
        "outcome": r.outcome.as_str(),
        "reason": r.reason,
        "duration_ms": r.duration_ms,
        "request_id": r.request_id,
    })
}

fn store_failed(e: &dyn std::fmt::Display) -> ApiError {
    ApiError::internal("Failed to read activity", e)
}

/// `GET /api/v1/activity`.
pub(crate) async fn list(
    State(state): State<Arc<ApiState>>,
    RawQuery(raw): RawQuery,
    caller: Caller,
) -> Result<Response, ApiError> {
    let q = Query::parse(raw.as_deref())?.visible_to(&caller)?;
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT).min(MAX_LIMIT);
    let rows = state
        .store
        .list_activity(&q.filter(&caller, limit))
        .await
        .map_err(|e| store_failed(&e))?;
    let next = (rows.len() == limit as usize)
        .then(|| rows.last().map(|e| encode_cursor(e.record.ts, &e.id)))
        .flatten();
    let body = serde_json::json!({
        "activities": rows.iter().map(entry_json).collect::<Vec<_>>(),
        "next_cursor": next,
    });
    let mut r = Json(body).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}

/// `GET /api/v1/activity/export`.
pub(crate) async fn export(
    State(state): State<Arc<ApiState>>,
    RawQuery(raw): RawQuery,
    caller: Caller,
) -> Result<Response, ApiError> {
    let q = Query::parse(raw.as_deref())?.visible_to(&caller)?;
    let total = q.limit.unwrap_or(EXPORT_DEFAULT).min(EXPORT_MAX);
    // Pages of MAX_LIMIT rows, streamed as they are read.
    struct Cursor {
        state: Arc<ApiState>,
        q: Query,
        caller: Caller,
        left: u32,
    }
    let start = Cursor {
        state,
        q,
        caller,
        left: total,
    };
    let body = futures::stream::unfold(Some(start), |cursor| async move {
        let mut c = cursor?;
        if c.left == 0 {
            return None;
        }
        let page = c.left.min(MAX_LIMIT);
        let rows = match c
            .state
            .store
            .list_activity(&c.q.filter(&c.caller, page))
            .await
        {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(error = %e, "activity export stopped: store failed");
                return None;
            }
        };
        if rows.is_empty() {
            return None;
        }
        let mut out = String::new();
        for e in &rows {
            out.push_str(&entry_json(e).to_string());
            out.push('\n');
        }
        let full = rows.len() == page as usize;
        c.left -= u32::try_from(rows.len()).unwrap_or(page);
        if let Some(last) = rows.last() {
            c.q.cursor = Some((last.record.ts, last.id.clone()));
        }
        let next = full.then_some(c);
        Some((Ok::<_, std::convert::Infallible>(out), next))
    });
    let mut r = Body::from_stream(body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}

/// `GET /api/v1/activity/stream`.
pub(crate) async fn stream(
    State(state): State<Arc<ApiState>>,
    RawQuery(raw): RawQuery,
    headers: http::HeaderMap,
    caller: Caller,
) -> Result<Response, ApiError> {
    let q = Query::parse(raw.as_deref())?.visible_to(&caller)?;
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 64)
        .map(str::to_owned);
    let last = match resume {
        Some(id) => Some(id),
        None => state
            .store
            .latest_activity_id()
            .await
            .map_err(|e| store_failed(&e))?,
    };
    struct Follow {
        state: Arc<ApiState>,
        q: Query,
        caller: Caller,
        last: Option<String>,
        pending: std::collections::VecDeque<ActivityEntry>,
        first: bool,
        closing: tokio::sync::watch::Receiver<bool>,
    }
    let closing = state.closing.subscribe();
    let follow = Follow {
        state,
        q,
        caller,
        last,
        pending: Default::default(),
        first: true,
        closing,
    };
    let events = futures::stream::unfold(follow, |mut f| async move {
        loop {
            if let Some(e) = f.pending.pop_front() {
                let event = Event::default()
                    .event("activity")
                    .id(e.id.clone())
                    .data(entry_json(&e).to_string());
                return Some((Ok::<_, std::convert::Infallible>(event), f));
            }
            if *f.closing.borrow() {
                return None;
            }
            if !f.first {
                tokio::select! {
                    () = tokio::time::sleep(STREAM_POLL) => {}
                    _ = f.closing.wait_for(|closing| *closing) => return None,
                }
            }
            f.first = false;
            match f
                .state
                .store
                .activity_after(f.last.as_deref(), &f.q.filter(&f.caller, 0), 100)
                .await
            {
                Ok(rows) => {
                    if let Some(last) = rows.last() {
                        f.last = Some(last.id.clone());
                    }
                    f.pending.extend(rows);
                }
                Err(e) => tracing::warn!(error = %e, "activity stream: store failed"),
            }
        }
    });
    let mut r = Sse::new(events.boxed())
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let c = encode_cursor(1_700_000_000, "0190abcd-0000-7000-8000-000000000000");
        assert_eq!(
            decode_cursor(&c),
            Some((
                1_700_000_000,
                "0190abcd-0000-7000-8000-000000000000".to_owned()
            ))
        );
        assert_eq!(decode_cursor("not base64!"), None);
        assert_eq!(decode_cursor(&URL_SAFE_NO_PAD.encode("x:y")), None);
    }

    #[test]
    fn query_parsing_refuses_unknown_names_and_bad_times() {
        assert!(Query::parse(Some("type=bogus")).is_err());
        assert!(Query::parse(Some("outcome=meh")).is_err());
        assert!(Query::parse(Some("since=yesterday")).is_err());
        assert!(Query::parse(Some("limit=0")).is_err());
        let q = Query::parse(Some(
            "type=tool_call&outcome=failure&since=2026-01-01T00:00:00Z&until=1800000000&server=gh",
        ))
        .unwrap();
        assert_eq!(q.action, Some(ActivityAction::ToolCall));
        assert_eq!(q.outcome, Some(ActivityOutcome::Failure));
        assert_eq!(q.since, Some(1_767_225_600));
        assert_eq!(q.until, Some(1_800_000_000));
        assert_eq!(q.server.as_deref(), Some("gh"));
    }
}
