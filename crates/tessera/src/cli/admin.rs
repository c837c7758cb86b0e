//! `tessera admin users|disable|enable|sessions|revoke-session|mcp-sessions|end-mcp-session|
//! restart-server|dashboard`: a running gateway's admin routes (`/api/v1/admin/…`, admins only). Browser
//! session ids are the gateway's stored ids (a hash of the cookie), never a cookie; MCP sessions
//! are named by their handle (a hash of the session id), never the id.

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::table::{self, col, pick, pick_each};
use super::{Api, Failure, Outcome, OutputFormat, Remote, print_json, segment};

#[derive(Args, Debug)]
#[command(after_help = super::EXIT_CODES)]
pub(crate) struct AdminArgs {
    #[command(flatten)]
    pub(crate) remote: Remote,
    #[command(subcommand)]
    pub(crate) command: AdminCommand,
}

#[derive(Subcommand, Debug, PartialEq, Eq)]
pub(crate) enum AdminCommand {
    /// List users (as `tessera users list`).
    #[command(after_help = super::EXIT_CODES)]
    Users,
    /// Disable a user: their sessions end and their tokens stop working.
    #[command(after_help = super::EXIT_CODES)]
    Disable { id: String },
    /// Enable a user again.
    #[command(after_help = super::EXIT_CODES)]
    Enable { id: String },
    /// Every user's browser sessions, newest first.
    #[command(after_help = super::EXIT_CODES)]
    Sessions,
    /// End one browser session (its id from `sessions`).
    #[command(after_help = super::EXIT_CODES)]
    RevokeSession { id: String },
    /// The live MCP client sessions of the gateway replica that answers, most recently active
    /// first.
    #[command(after_help = super::EXIT_CODES)]
    McpSessions,
    /// End one MCP client session and its upstream sessions, on every replica (its handle from
    /// `mcp-sessions`). Its client's next request gets 404 and it starts a new session.
    #[command(after_help = super::EXIT_CODES)]
    EndMcpSession { handle: String },
    /// Reconnect a shared upstream server on every replica: a new discovery session, and every
    /// client's upstream session to it ended (the next call opens a new one).
    #[command(after_help = super::EXIT_CODES)]
    RestartServer { name: String },
    /// Figures of the last 24 hours and the upstreams' state.
    #[command(after_help = super::EXIT_CODES)]
    Dashboard,
}

const MCP_SESSION_FIELDS: &[&str] = &[
    "handle",
    "replica",
    "user_id",
    "user_email",
    "display_name",
    "via",
    "agent",
    "client_id",
    "client_name",
    "client_version",
    "protocol_version",
    "front_end",
    "routing",
    "opened_at",
    "last_active_at",
    "upstreams",
    "calls_in_flight",
];

const SESSION_FIELDS: &[&str] = &[
    "id",
    "user_id",
    "user_email",
    "created_at",
    "expires_at",
    "user_agent",
    "ip",
    "expired",
];

const DASHBOARD_FIELDS: &[&str] = &[
    "total_users",
    "active_users_24h",
    "disabled_users",
    "active_sessions",
    "mcp_sessions",
    "tool_calls_24h",
    "error_rate_24h",
    "upstreams",
    "replicas",
    "recent_users",
];

/// How a row names its user: the email, else the store's id.
fn user_of(row: &Value) -> &Value {
    if row["user_email"].is_null() {
        &row["user_id"]
    } else {
        &row["user_email"]
    }
}

pub(crate) fn sessions(body: &Value) -> Vec<Value> {
    pick_each(body, "sessions", SESSION_FIELDS)
}

pub(crate) fn render_sessions(list: &[Value]) -> String {
    let columns = [
        col("ID", 64),
        col("USER", 32),
        col("STARTED", 25),
        col("EXPIRES", 25),
        col("STATUS", 8),
        col("ADDRESS", 16),
    ];
    table::render_each(list, "No sessions.", &columns, |s| {
        vec![
            table::cell(&s["id"]),
            table::cell(user_of(s)),
            table::cell(&s["created_at"]),
            table::cell(&s["expires_at"]),
            if s["expired"].as_bool() == Some(true) {
                "expired"
            } else {
                "active"
            }
            .to_owned(),
            table::cell(&s["ip"]),
        ]
    })
}

pub(crate) fn mcp_sessions(body: &Value) -> Vec<Value> {
    pick_each(body, "sessions", MCP_SESSION_FIELDS)
}

pub(crate) fn render_mcp_sessions(list: &[Value]) -> String {
    let columns = [
        col("HANDLE", 64),
        col("USER", 32),
        col("CLIENT", 24),
        col("VIA", 22),
        col("LAST ACTIVE", 25),
        col("UPSTREAMS", 32),
        col("REPLICA", 8),
    ];
    table::render_each(list, "No MCP sessions.", &columns, |s| {
        let client = match (s["client_name"].as_str(), s["client_version"].as_str()) {
            (Some(name), Some(version)) => format!("{name} {version}"),
            (Some(name), None) => name.to_owned(),
            _ => "-".to_owned(),
        };
        vec![
            table::cell(&s["handle"]),
            table::cell(user_of(s)),
            client,
            table::cell(&s["via"]),
            table::cell(&s["last_active_at"]),
            table::list(&s["upstreams"]),
            // A prefix tells replicas apart; --output json has the whole id.
            s["replica"]
                .as_str()
                .map_or_else(|| "-".to_owned(), |r| r.chars().take(8).collect()),
        ]
    })
}

pub(crate) fn render_dashboard(d: &Value) -> String {
    let mut out = String::new();
    let rate = d["error_rate_24h"]
        .as_f64()
        .map_or_else(|| "-".to_owned(), |r| format!("{:.1} %", r * 100.0));
    for (label, value) in [
        ("users", table::cell(&d["total_users"])),
        ("active users (24 h)", table::cell(&d["active_users_24h"])),
        ("disabled users", table::cell(&d["disabled_users"])),
        ("browser sessions", table::cell(&d["active_sessions"])),
        ("MCP sessions", table::cell(&d["mcp_sessions"])),
        ("tool calls (24 h)", table::cell(&d["tool_calls_24h"])),
        ("error rate (24 h)", rate),
    ] {
        out.push_str(&format!("{label:<22}{value}\n"));
    }
    // Several replicas: the upstream table below is the answering one's view; --output json
    // has every replica's.
    if let Some(replicas) = d["replicas"].as_array().filter(|r| r.len() > 1) {
        out.push_str(&format!("{:<22}{}\n", "replicas reporting", replicas.len()));
    }
    let upstreams: Vec<Vec<String>> = d["upstreams"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|u| {
            vec![
                table::cell(&u["name"]),
                table::cell(&u["state"]),
                table::cell(&u["tools"]),
                table::cell(&u["error"]),
            ]
        })
        .collect();
    if !upstreams.is_empty() {
        out.push('\n');
        out.push_str(&table::render(
            &[
                col("UPSTREAM", 24),
                col("STATE", 12),
                col("TOOLS", 6),
                col("ERROR", 48),
            ],
            &upstreams,
        ));
    }
    out
}

fn admin_only(f: Failure) -> Failure {
    match f {
        Failure::Refused(m) if m.starts_with("permission denied") => {
            Failure::Refused("permission denied: this needs an admin account".to_owned())
        }
        other => other,
    }
}

pub(crate) async fn run(args: AdminArgs) -> Outcome {
    let api = Api::new(&args.remote)?;
    let json_out = args.remote.output == OutputFormat::Json;
    match &args.command {
        AdminCommand::Users => {
            let body = api.get("/api/v1/admin/users").await.map_err(admin_only)?;
            let list = super::users::users(&body);
            if json_out {
                print_json(&json!({ "users": list }));
            } else {
                print!("{}", super::users::render(&list));
            }
        }
        AdminCommand::Disable { id } | AdminCommand::Enable { id } => {
            let verb = if matches!(args.command, AdminCommand::Disable { .. }) {
                "disable"
            } else {
                "enable"
            };
            let path = format!("/api/v1/admin/users/{}/{verb}", segment(id));
            let body = api
                .json(api.request(reqwest::Method::POST, &path))
                .await
                .map_err(admin_only)?;
            if json_out {
                print_json(&json!({ "message": body["message"] }));
            } else {
                println!("{}", table::cell(&body["message"]));
            }
        }
        AdminCommand::Sessions => {
            let body = api
                .get("/api/v1/admin/sessions")
                .await
                .map_err(admin_only)?;
            let list = sessions(&body);
            if json_out {
                print_json(&json!({ "sessions": list }));
            } else {
                print!("{}", render_sessions(&list));
            }
        }
        AdminCommand::RevokeSession { id } => {
            let body = api
                .delete(&format!("/api/v1/admin/sessions/{}", segment(id)))
                .await
                .map_err(admin_only)?;
            if json_out {
                print_json(&json!({ "message": body["message"] }));
            } else {
                println!("{}", table::cell(&body["message"]));
            }
        }
        AdminCommand::McpSessions => {
            let body = api
                .get("/api/v1/admin/mcp-sessions")
                .await
                .map_err(admin_only)?;
            let list = mcp_sessions(&body);
            if json_out {
                print_json(&json!({ "replica": body["replica"], "sessions": list }));
            } else {
                print!("{}", render_mcp_sessions(&list));
            }
        }
        AdminCommand::EndMcpSession { handle } => {
            let body = api
                .delete(&format!("/api/v1/admin/mcp-sessions/{}", segment(handle)))
                .await
                .map_err(admin_only)?;
            if json_out {
                print_json(&json!({ "message": body["message"] }));
            } else {
                println!("{}", table::cell(&body["message"]));
            }
        }
        AdminCommand::RestartServer { name } => {
            let path = format!("/api/v1/admin/servers/{}/restart", segment(name));
            let body = api
                .json(api.request(reqwest::Method::POST, &path))
                .await
                .map_err(admin_only)?;
            if json_out {
                print_json(&pick(
                    &body,
                    &["server", "action", "success", "upstream_sessions_ended"],
                ));
            } else {
                println!(
                    "restarted {} ({} client upstream session(s) ended here)",
                    table::cell(&body["server"]),
                    table::cell(&body["upstream_sessions_ended"])
                );
            }
        }
        AdminCommand::Dashboard => {
            let body = api
                .get("/api/v1/admin/dashboard")
                .await
                .map_err(admin_only)?;
            let figures = pick(&body, DASHBOARD_FIELDS);
            if json_out {
                print_json(&figures);
            } else {
                print!("{}", render_dashboard(&figures));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_and_the_dashboard_show_known_fields_only() {
        let body = json!({"sessions": [{"id": "abc", "user_id": "u1", "user_email": "a@example.com",
            "created_at": "2025-01-01T00:00:00Z", "expires_at": "2025-01-02T00:00:00Z",
            "ip": "192.0.2.1", "expired": false, "cookie": "SECRET"}]});
        let list = sessions(&body);
        assert!(!serde_json::to_string(&list).unwrap().contains("SECRET"));
        let text = render_sessions(&list);
        let row: Vec<&str> = text.lines().nth(1).unwrap().split_whitespace().collect();
        assert_eq!(
            row,
            [
                "abc",
                "a@example.com",
                "2025-01-01T00:00:00Z",
                "2025-01-02T00:00:00Z",
                "active",
                "192.0.2.1"
            ]
        );
        let body = json!({"replica": null, "sessions": [{"handle": "ab12", "user_id": "u1",
            "user_email": "a@example.com", "client_name": "claude-code", "client_version": "2.1",
            "via": "oauth_access_token", "last_active_at": "2025-01-01T00:00:00Z",
            "upstreams": ["github", "slack"], "id": "SESSION-ID",
            "replica": "0123456789abcdef"}]});
        let list = mcp_sessions(&body);
        assert!(!serde_json::to_string(&list).unwrap().contains("SESSION-ID"));
        let text = render_mcp_sessions(&list);
        let row: Vec<&str> = text.lines().nth(1).unwrap().split_whitespace().collect();
        assert_eq!(
            row,
            [
                "ab12",
                "a@example.com",
                "claude-code",
                "2.1",
                "oauth_access_token",
                "2025-01-01T00:00:00Z",
                "github,slack",
                "01234567"
            ]
        );
        assert_eq!(list[0]["replica"], "0123456789abcdef");
        assert_eq!(render_mcp_sessions(&[]), "No MCP sessions.\n");
        let dash = json!({"total_users": 3, "error_rate_24h": 0.25, "tool_calls_24h": 8,
            "upstreams": [{"name": "github", "state": "ready", "tools": 12, "error": null}]});
        let text = render_dashboard(&pick(&dash, DASHBOARD_FIELDS));
        assert!(text.contains("25.0 %"), "{text}");
        assert!(text.contains("github"), "{text}");
        assert!(!text.contains("replicas reporting"), "one replica: {text}");
        let dash = json!({"replicas": [{"replica": "a"}, {"replica": "b", "upstreams": []}]});
        let picked = pick(&dash, DASHBOARD_FIELDS);
        assert_eq!(picked["replicas"][1]["replica"], "b");
        let text = render_dashboard(&picked);
        assert!(text.contains("replicas reporting    2"), "{text}");
    }
}
