//! `tessera activity list|watch`: the activity log (`GET /api/v1/activity`, following the
//! cursor; `GET /api/v1/activity/stream`, server-sent events). Users see their own records,
//! admins everyone's.

use clap::{Args, Subcommand};
use futures::StreamExt as _;
use serde_json::{Value, json};

use super::table::{self, col};
use super::{Api, Failure, Outcome, OutputFormat, Remote, UrlRemote, check_status, print_json};

#[derive(Args, Debug)]
#[command(after_help = super::EXIT_CODES)]
pub(crate) struct ActivityArgs {
    #[command(flatten)]
    pub(crate) remote: UrlRemote,
    #[command(subcommand)]
    pub(crate) command: ActivityCommand,
}

/// Filters shared by `list` and `watch`.
#[derive(Args, Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Filters {
    /// Only this user's records: a user id, or `me` (others' records are for admins).
    #[arg(long)]
    pub(crate) user: Option<String>,
    /// Only this upstream server's records.
    #[arg(long)]
    pub(crate) server: Option<String>,
    /// Only records of this type: `tool_call`, `acquire`, `refresh`, `inject`, `connect_start`,
    /// `connect_finish`, `connect_deny`, `policy_deny`, `disconnect`, and the authorization
    /// server's `client_approve`, `client_deny`, `token_issue`, `token_refresh`, `token_revoke`,
    /// `grant_revoke`.
    #[arg(long = "type", value_name = "TYPE")]
    pub(crate) kind: Option<String>,
    /// Only records with this outcome (`success`, `failure`, `denied`).
    #[arg(long)]
    pub(crate) outcome: Option<String>,
}

#[derive(Subcommand, Debug, PartialEq, Eq)]
pub(crate) enum ActivityCommand {
    /// List activity records, newest first, following pages up to --limit.
    #[command(after_help = super::EXIT_CODES)]
    List {
        #[command(flatten)]
        filters: Filters,
        /// Only records at or after this time (RFC 3339, e.g. 2026-11-26T10:00:00Z, or unix seconds).
        #[arg(long)]
        since: Option<String>,
        /// Only records up to this time (RFC 3339 or unix seconds).
        #[arg(long)]
        until: Option<String>,
        /// At most this many records in all.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        limit: u32,
    },
    /// Follow new records as they happen (one line each) until Ctrl-C.
    #[command(after_help = super::EXIT_CODES)]
    Watch {
        #[command(flatten)]
        filters: Filters,
    },
}

/// One page's size at most (the server may cap it lower; the cursor carries on).
const PAGE: u32 = 100;

/// The query of one `GET /api/v1/activity` page.
pub(crate) fn list_query(
    filters: &Filters,
    since: Option<&str>,
    until: Option<&str>,
    limit: u32,
    cursor: Option<&str>,
) -> Vec<(&'static str, String)> {
    let mut q = filter_query(filters);
    for (k, v) in [("since", since), ("until", until), ("cursor", cursor)] {
        if let Some(v) = v {
            q.push((k, v.to_owned()));
        }
    }
    q.push(("limit", limit.to_string()));
    q
}

fn filter_query(f: &Filters) -> Vec<(&'static str, String)> {
    [
        ("user", &f.user),
        ("server", &f.server),
        ("type", &f.kind),
        ("outcome", &f.outcome),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.as_ref().map(|v| (k, v.clone())))
    .collect()
}

/// `path?k=v&…`, percent-encoded (just `path` without pairs).
pub(crate) fn with_query(path: &str, pairs: &[(&'static str, String)]) -> String {
    if pairs.is_empty() {
        return path.to_owned();
    }
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        q.append_pair(k, v);
    }
    format!("{path}?{}", q.finish())
}

/// The records of one page, whichever key the server uses for them.
pub(crate) fn records(body: &Value) -> Vec<Value> {
    ["activities", "records", "items"]
        .iter()
        .find_map(|k| body[*k].as_array())
        .cloned()
        .unwrap_or_default()
}

/// The cursor of the next page, if any.
pub(crate) fn next_cursor(body: &Value) -> Option<String> {
    ["next_cursor", "cursor", "next"]
        .iter()
        .find_map(|k| body[*k].as_str().filter(|c| !c.is_empty()))
        .map(str::to_owned)
}

/// The first present, non-null field among `keys`.
fn field<'a>(r: &'a Value, keys: &[&str]) -> &'a Value {
    keys.iter()
        .map(|k| &r[*k])
        .find(|v| !v.is_null())
        .unwrap_or(&Value::Null)
}

/// A record's time: RFC 3339 strings as they are, unix seconds (or milliseconds) converted.
pub(crate) fn time_of(r: &Value) -> String {
    match field(r, &["timestamp", "ts", "time", "created_at"]) {
        Value::Number(n) => match n.as_i64() {
            Some(ms) if ms > 100_000_000_000 => rfc3339(ms / 1000),
            Some(s) => rfc3339(s),
            None => n.to_string(),
        },
        v => table::cell(v),
    }
}

/// `unix` seconds as `YYYY-MM-DDTHH:MM:SSZ` (UTC; proleptic Gregorian, days-from-civil inverse).
pub(crate) fn rfc3339(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// The cells of one record: TIME USER SERVER TYPE/ACTION OUTCOME REASON DURATION.
pub(crate) fn row(r: &Value) -> Vec<String> {
    let kind = table::cell(field(r, &["type", "action"]));
    let detail = table::cell(field(r, &["tool", "method"]));
    let duration = match field(r, &["duration_ms"]) {
        Value::Number(n) => format!("{n}ms"),
        _ => "-".to_owned(),
    };
    vec![
        time_of(r),
        table::cell(field(r, &["user_email", "email", "user_id", "user"])),
        table::cell(field(r, &["server"])),
        if detail == "-" {
            kind
        } else {
            format!("{kind}/{detail}")
        },
        table::cell(field(r, &["outcome"])),
        table::cell(field(r, &["reason"])),
        duration,
    ]
}

const COLUMNS: [table::Column; 7] = [
    col("TIME", 20),
    col("USER", 36),
    col("SERVER", 24),
    col("TYPE/ACTION", 36),
    col("OUTCOME", 8),
    col("REASON", 32),
    col("DURATION", 10),
];

pub(crate) fn render_list(records: &[Value]) -> String {
    if records.is_empty() {
        return "No activity.\n".to_owned();
    }
    let rows: Vec<Vec<String>> = records.iter().map(row).collect();
    table::render(&COLUMNS, &rows)
}

/// One streamed record as a line: the columns separated by two spaces, no header.
pub(crate) fn render_line(r: &Value) -> String {
    row(r).join("  ")
}

pub(crate) async fn run(args: ActivityArgs) -> Outcome {
    let remote = Remote::from(args.remote);
    let api = Api::new(&remote)?;
    let out = remote.output;
    match args.command {
        ActivityCommand::List {
            filters,
            since,
            until,
            limit,
        } => {
            let mut all: Vec<Value> = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let want = (limit as usize - all.len()).min(PAGE as usize) as u32;
                let query = list_query(
                    &filters,
                    since.as_deref(),
                    until.as_deref(),
                    want,
                    cursor.as_deref(),
                );
                let body = api.get(&with_query("/api/v1/activity", &query)).await?;
                let page = records(&body);
                let empty = page.is_empty();
                all.extend(page);
                cursor = next_cursor(&body);
                if all.len() >= limit as usize || cursor.is_none() || empty {
                    break;
                }
            }
            all.truncate(limit as usize);
            match out {
                OutputFormat::Json => {
                    print_json(&json!({ "activities": all, "next_cursor": cursor }))
                }
                OutputFormat::Table => print!("{}", render_list(&all)),
            }
            Ok(())
        }
        ActivityCommand::Watch { filters } => {
            tokio::select! {
                r = watch(&api, &filters, out) => r,
                _ = tokio::signal::ctrl_c() => Ok(()),
            }
        }
    }
}

/// Follows the SSE stream; each `data:` event that is a JSON record becomes one line.
async fn watch(api: &Api, filters: &Filters, out: OutputFormat) -> Outcome {
    let response = tokio::time::timeout(
        super::CALL_TIMEOUT,
        api.request(
            reqwest::Method::GET,
            &with_query("/api/v1/activity/stream", &filter_query(filters)),
        )
        .header(reqwest::header::ACCEPT, "text/event-stream")
        .send(),
    )
    .await
    .map_err(|_| {
        Failure::Unreachable(format!(
            "cannot reach the gateway at {}: no answer within {} s",
            api.base(),
            super::CALL_TIMEOUT.as_secs()
        ))
    })?
    .map_err(|e| api.transport(&e))?;
    let status = response.status();
    if let Err(bare) = check_status(status, None) {
        let body: Option<Value> = response.json().await.ok();
        return Err(check_status(status, body.as_ref()).err().unwrap_or(bare));
    }
    if out == OutputFormat::Table {
        eprintln!(
            "watching {}/api/v1/activity/stream (Ctrl-C to stop)",
            api.base()
        );
    }
    let mut parser = SseParser::default();
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| api.transport(&e))?;
        for data in parser.push(&chunk) {
            let Ok(record) = serde_json::from_str::<Value>(&data) else {
                continue; // keep-alives and non-JSON events
            };
            if !record.is_object() {
                continue;
            }
            match out {
                OutputFormat::Json => print_json(&record),
                OutputFormat::Table => println!("{}", render_line(&record)),
            }
        }
    }
    Err(Failure::Refused(
        "the gateway closed the activity stream".into(),
    ))
}

/// A minimal server-sent-events reader: gathers `data:` lines and yields each event's data at
/// the blank line that ends it; comments (`:`) and other fields are skipped.
#[derive(Default)]
pub(crate) struct SseParser {
    buffer: Vec<u8>,
    data: Vec<String>,
}

impl SseParser {
    pub(crate) fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        self.buffer.extend_from_slice(bytes);
        let mut events = Vec::new();
        while let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
            let raw: Vec<u8> = self.buffer.drain(..=end).collect();
            let line = String::from_utf8_lossy(&raw);
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                if !self.data.is_empty() {
                    events.push(self.data.join("\n"));
                    self.data.clear();
                }
            } else if let Some(rest) = line.strip_prefix("data:") {
                self.data
                    .push(rest.strip_prefix(' ').unwrap_or(rest).to_owned());
            }
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_converts_unix_seconds() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_795_651_200), "2026-11-26T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(
            time_of(&json!({"ts": 1_795_651_261_000_i64})),
            "2026-11-26T00:01:01Z"
        );
        assert_eq!(
            time_of(&json!({"ts": "2026-11-26T10:00:00Z"})),
            "2026-11-26T10:00:00Z"
        );
    }

    #[test]
    fn the_table_has_the_seven_columns() {
        let r = json!({"id": "0192", "timestamp": "1970-01-01T00:00:00Z", "user_id": "u-alice",
                       "server": "whoami_tx", "tool": null, "type": "acquire", "method": "token_exchange",
                       "outcome": "success", "reason": null, "duration_ms": 12, "request_id": "r1"});
        let text = render_list(std::slice::from_ref(&r));
        let mut lines = text.lines();
        let words = |l: Option<&str>| {
            l.unwrap()
                .split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            words(lines.next()),
            [
                "TIME",
                "USER",
                "SERVER",
                "TYPE/ACTION",
                "OUTCOME",
                "REASON",
                "DURATION"
            ]
        );
        assert_eq!(
            words(lines.next()),
            [
                "1970-01-01T00:00:00Z",
                "u-alice",
                "whoami_tx",
                "acquire/token_exchange",
                "success",
                "-",
                "12ms"
            ]
        );
        assert_eq!(render_line(&r).split("  ").count(), 7);
        assert_eq!(render_list(&[]), "No activity.\n");
        let call =
            json!({"timestamp": "t", "type": "tool_call", "tool": "whoami", "method": "mcp"});
        assert_eq!(row(&call)[3], "tool_call/whoami");
        assert_eq!(row(&json!({"type": "disconnect"}))[3], "disconnect");
    }

    #[test]
    fn the_query_carries_only_given_filters() {
        let f = Filters {
            server: Some("s".into()),
            kind: Some("tool_call".into()),
            ..Default::default()
        };
        let q = list_query(&f, Some("2026-01-01T00:00:00Z"), None, 20, Some("c1"));
        assert_eq!(
            q,
            vec![
                ("server", "s".to_owned()),
                ("type", "tool_call".to_owned()),
                ("since", "2026-01-01T00:00:00Z".to_owned()),
                ("cursor", "c1".to_owned()),
                ("limit", "20".to_owned()),
            ]
        );
    }

    #[test]
    fn queries_are_encoded() {
        assert_eq!(with_query("/p", &[]), "/p");
        assert_eq!(
            with_query(
                "/p",
                &[
                    ("since", "2026-01-01T00:00:00+01:00".into()),
                    ("user", "a b".into())
                ]
            ),
            "/p?since=2026-01-01T00%3A00%3A00%2B01%3A00&user=a+b"
        );
    }

    #[test]
    fn pages_and_cursors_are_read() {
        let body = json!({"activities": [{"id": "1"}], "next_cursor": "abc"});
        assert_eq!(records(&body).len(), 1);
        assert_eq!(next_cursor(&body).as_deref(), Some("abc"));
        assert_eq!(
            next_cursor(&json!({"activities": [], "next_cursor": null})),
            None
        );
    }

    #[test]
    fn sse_events_split_across_chunks_are_joined() {
        let mut p = SseParser::default();
        assert!(
            p.push(b": keep-alive\n\nevent: activity\ndata: {\"a\"")
                .is_empty()
        );
        assert_eq!(
            p.push(b":1}\r\n\r\ndata: x\n"),
            vec!["{\"a\":1}".to_owned()]
        );
        assert_eq!(p.push(b"\n"), vec!["x".to_owned()]);
    }
}
