//! The activity log: one secret-free row per broker step (acquire, refresh, inject, connect
//! step, policy denial, disconnect) and per MCP tool call (method `mcp`, action `tool_call`,
//! with the tool's name). The table has no column that can hold a token, an argument or a
//! result.
//!
//! Listing is newest first, ordered by `(ts, id)`; a page ends with the `(ts, id)` of its last
//! row, which the next page starts strictly below ([`ActivityFilter::before`]). Following new
//! rows goes by id ([`Store::activity_after`]): ids are UUIDv7 made at insert time, so they
//! grow in insert order. Retention: [`Store::purge_activity`] by age and by row count.

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

            /// Every stored name, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The value for a stored name.
            pub fn from_name(s: &str) -> Option<Self> {
                match s {
                    $($text => Some($name::$variant),)+
                    _ => None,
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
        /// An MCP request of a user (a tool call), not a broker step.
        Mcp => "mcp",
        /// Tessera's own authorization server (`server` holds the OAuth client's id).
        AuthorizationServer => "authorization_server",
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
        /// An MCP `tools/call` (method [`ActivityMethod::Mcp`]; the tool in
        /// [`ActivityRecord::tool`]).
        ToolCall => "tool_call",
        /// A user approved an OAuth client of Tessera's authorization server.
        ClientApprove => "client_approve",
        /// A user denied an OAuth client.
        ClientDeny => "client_deny",
        /// Tokens were issued for an authorization code.
        TokenIssue => "token_issue",
        /// A refresh token was exchanged (rotated).
        TokenRefresh => "token_refresh",
        /// A client revoked a token (RFC 7009).
        TokenRevoke => "token_revoke",
        /// A grant's tokens were revoked: a code replayed or a refresh token reused.
        GrantRevoke => "grant_revoke",
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
    /// The tool's name (upstream's own, without the server prefix) for a tool call.
    pub tool: Option<String>,
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

/// Which activity records to list: newest first, at most `limit`.
#[derive(Clone, Copy, Debug, Default)]
pub struct ActivityFilter<'a> {
    /// Only this user's records.
    pub user_id: Option<&'a str>,
    /// Only this server's records.
    pub server: Option<&'a str>,
    /// Only records with this action (the REST API's `type`).
    pub action: Option<ActivityAction>,
    /// Only records with this outcome.
    pub outcome: Option<ActivityOutcome>,
    /// Only records at or after this time (unix seconds).
    pub since: Option<UnixTime>,
    /// Only records at or before this time (unix seconds).
    pub until: Option<UnixTime>,
    /// Only records strictly older than this `(ts, id)` (the previous page's last row).
    pub before: Option<(UnixTime, &'a str)>,
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

/// Rows per INSERT statement in [`Store::record_activities`] (11 bound values each).
pub const ACTIVITY_BATCH_ROWS: usize = 64;

impl Store {
    /// Writes one audit record; returns its id.
    pub async fn record_activity(&self, record: &ActivityRecord) -> Result<String, StoreError> {
        let id = new_id();
        sqlx::query(
            "INSERT INTO activity (id, ts, user_id, server, tool, request_id, method, action, \
               outcome, reason, duration_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(&id)
        .bind(record.ts)
        .bind(record.user_id.as_deref())
        .bind(&record.server)
        .bind(record.tool.as_deref().map(cut))
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

    /// Writes many audit records in one transaction, at most [`ACTIVITY_BATCH_ROWS`] rows per
    /// statement: the audit writer's path, where one commit per record would cost more than
    /// the proxied call it describes.
    pub async fn record_activities(&self, records: &[ActivityRecord]) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        for chunk in records.chunks(ACTIVITY_BATCH_ROWS) {
            // `$n` placeholders, numbered here: sqlx's QueryBuilder writes `?` for the Any
            // driver, which PostgreSQL does not accept.
            let sql = insert_activity_sql(chunk.len());
            let mut insert = sqlx::query(sqlx::AssertSqlSafe(sql));
            for record in chunk {
                insert = insert
                    .bind(new_id())
                    .bind(record.ts)
                    .bind(record.user_id.clone())
                    .bind(record.server.clone())
                    .bind(record.tool.as_deref().map(|t| cut(t).to_owned()))
                    .bind(record.request_id.clone())
                    .bind(record.method.as_str())
                    .bind(record.action.as_str())
                    .bind(record.outcome.as_str())
                    .bind(record.reason.as_deref().map(|r| cut(r).to_owned()))
                    .bind(record.duration_ms);
            }
            insert.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Records matching `filter`, newest first (by `(ts, id)`).
    pub async fn list_activity(
        &self,
        filter: &ActivityFilter<'_>,
    ) -> Result<Vec<ActivityEntry>, StoreError> {
        let limit = if filter.limit == 0 { 100 } else { filter.limit };
        let (before_ts, before_id) = match filter.before {
            Some((ts, id)) => (Some(ts), Some(id)),
            None => (None, None),
        };
        let rows = sqlx::query(
            "SELECT id, ts, user_id, server, tool, request_id, method, action, outcome, reason, \
               duration_ms \
             FROM activity \
             WHERE (CAST($1 AS TEXT) IS NULL OR user_id = $1) \
               AND (CAST($2 AS TEXT) IS NULL OR server = $2) \
               AND (CAST($3 AS TEXT) IS NULL OR action = $3) \
               AND (CAST($4 AS TEXT) IS NULL OR outcome = $4) \
               AND (CAST($5 AS BIGINT) IS NULL OR ts >= $5) \
               AND (CAST($6 AS BIGINT) IS NULL OR ts <= $6) \
               AND (CAST($7 AS BIGINT) IS NULL OR ts < $7 OR (ts = $7 AND id < $8)) \
             ORDER BY ts DESC, id DESC LIMIT $9",
        )
        .bind(filter.user_id)
        .bind(filter.server)
        .bind(filter.action.map(ActivityAction::as_str))
        .bind(filter.outcome.map(ActivityOutcome::as_str))
        .bind(filter.since)
        .bind(filter.until)
        .bind(before_ts)
        .bind(before_id)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(entry_from_row).collect()
    }

    /// Records inserted after the record `after_id` (all records when `None`), oldest first,
    /// at most `limit` (0 = 100), matching `filter` (its `before`, `since`, `until` and `limit`
    /// are not used). For following the log live.
    pub async fn activity_after(
        &self,
        after_id: Option<&str>,
        filter: &ActivityFilter<'_>,
        limit: u32,
    ) -> Result<Vec<ActivityEntry>, StoreError> {
        let limit = if limit == 0 { 100 } else { limit };
        let rows = sqlx::query(
            "SELECT id, ts, user_id, server, tool, request_id, method, action, outcome, reason, \
               duration_ms \
             FROM activity \
             WHERE (CAST($1 AS TEXT) IS NULL OR id > $1) \
               AND (CAST($2 AS TEXT) IS NULL OR user_id = $2) \
               AND (CAST($3 AS TEXT) IS NULL OR server = $3) \
               AND (CAST($4 AS TEXT) IS NULL OR action = $4) \
               AND (CAST($5 AS TEXT) IS NULL OR outcome = $5) \
             ORDER BY id ASC LIMIT $6",
        )
        .bind(after_id)
        .bind(filter.user_id)
        .bind(filter.server)
        .bind(filter.action.map(ActivityAction::as_str))
        .bind(filter.outcome.map(ActivityOutcome::as_str))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(entry_from_row).collect()
    }

    /// The id of the newest inserted record, if any (where a live follower starts).
    pub async fn latest_activity_id(&self) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar("SELECT MAX(id) FROM activity")
            .fetch_one(&self.pool)
            .await?)
    }

    /// Retention: deletes records older than `max_age_secs` (when given), then the oldest
    /// records beyond the newest `max_records` (when given). Returns how many were deleted.
    pub async fn purge_activity(
        &self,
        max_age_secs: Option<i64>,
        max_records: Option<u64>,
    ) -> Result<u64, StoreError> {
        let mut deleted = 0;
        if let Some(age) = max_age_secs {
            let cutoff = super::now_unix().saturating_sub(age);
            deleted += sqlx::query("DELETE FROM activity WHERE ts < $1")
                .bind(cutoff)
                .execute(&self.pool)
                .await?
                .rows_affected();
        }
        if let Some(max) = max_records {
            let keep = i64::try_from(max).unwrap_or(i64::MAX);
            // The newest `keep` rows by (ts, id) stay; the boundary row is the keep-th newest.
            let boundary = sqlx::query(
                "SELECT ts, id FROM activity ORDER BY ts DESC, id DESC LIMIT 1 OFFSET $1",
            )
            .bind(keep)
            .fetch_optional(&self.pool)
            .await?;
            if let Some(row) = boundary {
                let ts: i64 = row.try_get("ts")?;
                let id: String = row.try_get("id")?;
                deleted +=
                    sqlx::query("DELETE FROM activity WHERE ts < $1 OR (ts = $1 AND id <= $2)")
                        .bind(ts)
                        .bind(id)
                        .execute(&self.pool)
                        .await?
                        .rows_affected();
            }
        }
        Ok(deleted)
    }
}

/// `INSERT INTO activity … VALUES ($1, …, $11), ($12, …)` for `rows` rows.
fn insert_activity_sql(rows: usize) -> String {
    const COLUMNS: usize = 11;
    let mut sql = String::from(
        "INSERT INTO activity (id, ts, user_id, server, tool, request_id, method, action, \
           outcome, reason, duration_ms) VALUES ",
    );
    for row in 0..rows {
        if row > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for column in 0..COLUMNS {
            if column > 0 {
                sql.push_str(", ");
            }
            sql.push('$');
            sql.push_str(&(row * COLUMNS + column + 1).to_string());
        }
        sql.push(')');
    }
    sql
}

fn entry_from_row(row: &sqlx::any::AnyRow) -> Result<ActivityEntry, StoreError> {
    let method: String = row.try_get("method")?;
    let action: String = row.try_get("action")?;
    let outcome: String = row.try_get("outcome")?;
    Ok(ActivityEntry {
        id: row.try_get("id")?,
        record: ActivityRecord {
            ts: row.try_get("ts")?,
            user_id: row.try_get("user_id")?,
            server: row.try_get("server")?,
            tool: row.try_get("tool")?,
            request_id: row.try_get("request_id")?,
            method: ActivityMethod::parse(&method)?,
            action: ActivityAction::parse(&action)?,
            outcome: ActivityOutcome::parse(&outcome)?,
            reason: row.try_get("reason")?,
            duration_ms: row.try_get("duration_ms")?,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_db::{TestDb, both_backends};

    fn tool_call(ts: i64, user: &str, tool: &str, outcome: ActivityOutcome) -> ActivityRecord {
        ActivityRecord {
            ts,
            user_id: Some(user.to_owned()),
            server: "files".to_owned(),
            tool: Some(tool.to_owned()),
            request_id: Some(format!("rq-{ts}")),
            method: ActivityMethod::Mcp,
            action: ActivityAction::ToolCall,
            outcome,
            reason: (outcome != ActivityOutcome::Success).then(|| "upstream_error".to_owned()),
            duration_ms: Some(7),
        }
    }

    async fn a_batch_spanning_several_statements_is_written_whole(db: TestDb) {
        let store = db.open().await;
        let n = ACTIVITY_BATCH_ROWS * 2 + 5;
        let records: Vec<ActivityRecord> = (0..n)
            .map(|i| tool_call(1_000 + i as i64, "alice", "echo", ActivityOutcome::Success))
            .collect();
        store.record_activities(&records).await.unwrap();
        store.record_activities(&[]).await.unwrap();
        let listed = store
            .list_activity(&ActivityFilter {
                user_id: Some("alice"),
                limit: 1000,
                ..ActivityFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(listed.len(), n);
        assert_eq!(listed[0].record, records[n - 1]);
        let ids: std::collections::HashSet<&str> = listed.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids.len(), n, "every row gets its own id");
    }

    async fn tool_calls_are_stored_with_their_tool_and_filtered(db: TestDb) {
        let store = db.open().await;
        let now = crate::now_unix();
        store
            .record_activity(&tool_call(
                now - 10,
                "alice",
                "read",
                ActivityOutcome::Success,
            ))
            .await
            .unwrap();
        store
            .record_activity(&tool_call(
                now - 5,
                "bob",
                "write",
                ActivityOutcome::Failure,
            ))
            .await
            .unwrap();
        let all = store
            .list_activity(&ActivityFilter::default())
            .await
            .unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].record.tool.as_deref(), Some("write"), "newest first");
        assert_eq!(all[0].record.method, ActivityMethod::Mcp);
        assert_eq!(all[0].record.action, ActivityAction::ToolCall);
        let failures = store
            .list_activity(&ActivityFilter {
                outcome: Some(ActivityOutcome::Failure),
                ..ActivityFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(failures.len(), 1);
        assert_eq!(failures[0].record.user_id.as_deref(), Some("bob"));
        let windowed = store
            .list_activity(&ActivityFilter {
                since: Some(now - 7),
                until: Some(now),
                action: Some(ActivityAction::ToolCall),
                ..ActivityFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(windowed.len(), 1);
        let none = store
            .list_activity(&ActivityFilter {
                action: Some(ActivityAction::Disconnect),
                ..ActivityFilter::default()
            })
            .await
            .unwrap();
        assert!(none.is_empty());
    }

    async fn pages_follow_the_cursor_without_gaps_or_repeats(db: TestDb) {
        let store = db.open().await;
        let now = crate::now_unix();
        // Several rows share a timestamp: the id breaks the tie.
        for i in 0..7 {
            store
                .record_activity(&tool_call(
                    now - i / 3,
                    "alice",
                    "t",
                    ActivityOutcome::Success,
                ))
                .await
                .unwrap();
        }
        let mut seen = Vec::new();
        let mut before: Option<(i64, String)> = None;
        loop {
            let page = store
                .list_activity(&ActivityFilter {
                    before: before.as_ref().map(|(ts, id)| (*ts, id.as_str())),
                    limit: 3,
                    ..ActivityFilter::default()
                })
                .await
                .unwrap();
            if page.is_empty() {
                break;
            }
            let last = page.last().unwrap();
            before = Some((last.record.ts, last.id.clone()));
            seen.extend(page.into_iter().map(|e| (e.record.ts, e.id)));
        }
        assert_eq!(seen.len(), 7);
        let mut sorted = seen.clone();
        sorted.sort_by(|a, b| b.cmp(a));
        sorted.dedup();
        assert_eq!(seen, sorted, "strictly newest first, no repeats");
    }

    async fn following_by_id_sees_only_newer_records(db: TestDb) {
        let store = db.open().await;
        assert_eq!(store.latest_activity_id().await.unwrap(), None);
        let now = crate::now_unix();
        let first = store
            .record_activity(&tool_call(now, "alice", "a", ActivityOutcome::Success))
            .await
            .unwrap();
        assert_eq!(
            store.latest_activity_id().await.unwrap().as_deref(),
            Some(first.as_str())
        );
        // An older timestamp inserted later is still "new" to a follower.
        store
            .record_activity(&tool_call(now - 100, "bob", "b", ActivityOutcome::Success))
            .await
            .unwrap();
        store
            .record_activity(&tool_call(now, "alice", "c", ActivityOutcome::Success))
            .await
            .unwrap();
        let newer = store
            .activity_after(Some(&first), &ActivityFilter::default(), 0)
            .await
            .unwrap();
        let tools: Vec<_> = newer
            .iter()
            .map(|e| e.record.tool.clone().unwrap())
            .collect();
        assert_eq!(tools, ["b", "c"]);
        let alice = store
            .activity_after(
                Some(&first),
                &ActivityFilter {
                    user_id: Some("alice"),
                    ..ActivityFilter::default()
                },
                0,
            )
            .await
            .unwrap();
        assert_eq!(alice.len(), 1);
    }

    async fn retention_purges_by_age_then_by_count(db: TestDb) {
        let store = db.open().await;
        let now = crate::now_unix();
        for age in [0, 1, 2, 3, 40 * 86_400, 50 * 86_400] {
            store
                .record_activity(&tool_call(
                    now - age,
                    "alice",
                    "t",
                    ActivityOutcome::Success,
                ))
                .await
                .unwrap();
        }
        assert_eq!(
            store.purge_activity(Some(30 * 86_400), None).await.unwrap(),
            2
        );
        assert_eq!(store.purge_activity(None, Some(3)).await.unwrap(), 1);
        let left = store
            .list_activity(&ActivityFilter::default())
            .await
            .unwrap();
        let ages: Vec<_> = left.iter().map(|e| now - e.record.ts).collect();
        assert_eq!(ages, [0, 1, 2], "the newest are kept");
        assert_eq!(
            store
                .purge_activity(Some(30 * 86_400), Some(3))
                .await
                .unwrap(),
            0
        );
    }

    async fn version_two_rows_survive_the_rebuild(db: TestDb) {
        use sqlx::SqlSafeStr as _;
        use sqlx::migrate::{Migration, MigrationType, Migrator};
        super::super::install_drivers();
        let pool = sqlx::Pool::<sqlx::Any>::connect(&db.any_url())
            .await
            .unwrap();
        let v2 = Migrator::with_migrations(
            super::super::MIGRATIONS[..2]
                .iter()
                .map(|&(v, d, sql)| {
                    Migration::new(
                        v,
                        d.into(),
                        MigrationType::Simple,
                        sql.into_sql_str(),
                        false,
                    )
                })
                .collect(),
        );
        v2.run(&pool).await.unwrap();
        sqlx::query(
            "INSERT INTO activity (id, ts, user_id, server, request_id, method, action, \
               outcome, reason, duration_ms) \
             VALUES ('0190', 5, 'alice', 'gh', 'rq', 'connect', 'disconnect', 'failure', \
               'unreachable', 3)",
        )
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;

        let store = db.open().await;
        let rows = store
            .list_activity(&ActivityFilter::default())
            .await
            .unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].id, "0190");
        assert_eq!(rows[0].record.tool, None);
        assert_eq!(rows[0].record.action, ActivityAction::Disconnect);
        assert_eq!(rows[0].record.reason.as_deref(), Some("unreachable"));
        // The CHECK constraints still refuse unknown names.
        let bad = sqlx::query(
            "INSERT INTO activity (id, ts, server, method, action, outcome) \
             VALUES ('x', 1, 's', 'bogus', 'tool_call', 'success')",
        )
        .execute(&store.pool)
        .await;
        assert!(bad.is_err());
        for m in ActivityMethod::ALL {
            assert_eq!(ActivityMethod::from_name(m.as_str()), Some(*m));
        }
        assert_eq!(ActivityAction::from_name("nope"), None);
    }

    /// The CHECK constraints of the latest migration admit every name the code can write.
    async fn every_method_and_action_can_be_stored(db: TestDb) {
        let store = db.open().await;
        let now = crate::now_unix();
        for method in ActivityMethod::ALL {
            for action in ActivityAction::ALL {
                store
                    .record_activity(&ActivityRecord {
                        ts: now,
                        user_id: None,
                        server: "s".into(),
                        tool: None,
                        request_id: None,
                        method: *method,
                        action: *action,
                        outcome: ActivityOutcome::Success,
                        reason: None,
                        duration_ms: None,
                    })
                    .await
                    .unwrap_or_else(|e| panic!("{method:?}/{action:?}: {e}"));
            }
        }
    }

    both_backends!(
        every_method_and_action_can_be_stored,
        a_batch_spanning_several_statements_is_written_whole,
        tool_calls_are_stored_with_their_tool_and_filtered,
        pages_follow_the_cursor_without_gaps_or_repeats,
        following_by_id_sees_only_newer_records,
        retention_purges_by_age_then_by_count,
        version_two_rows_survive_the_rebuild,
    );
}
