//! `tessera admin users|disable|enable|sessions|revoke-session|dashboard`: a running gateway's
//! admin routes (`/api/v1/admin/…`, admins only). Session ids are the gateway's stored ids (a
//! hash of the cookie), never a cookie.

use clap::{Args, Subcommand};
use serde_json::{Map, Value, json};

use super::table::{self, col};
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
    /// Figures of the last 24 hours and the upstreams' state.
    #[command(after_help = super::EXIT_CODES)]
    Dashboard,
}

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
    "recent_users",
];

fn pick(v: &Value, fields: &[&str]) -> Value {
    let mut out = Map::new();
    for key in fields {
        if let Some(x) = v.get(*key) {
            out.insert((*key).to_owned(), x.clone());
        }
    }
    Value::Object(out)
}

pub(crate) fn sessions(body: &Value) -> Vec<Value> {
    body["sessions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| pick(s, SESSION_FIELDS))
        .collect()
}

pub(crate) fn render_sessions(list: &[Value]) -> String {
    if list.is_empty() {
        return "No sessions.\n".to_owned();
    }
    let columns = [
        col("ID", 64),
        col("USER", 32),
        col("STARTED", 25),
        col("EXPIRES", 25),
        col("STATUS", 8),
        col("ADDRESS", 16),
    ];
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|s| {
            let user = if s["user_email"].is_null() {
                &s["user_id"]
            } else {
                &s["user_email"]
            };
            vec![
                table::cell(&s["id"]),
                table::cell(user),
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
        .collect();
    table::render(&columns, &rows)
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
        let dash = json!({"total_users": 3, "error_rate_24h": 0.25, "tool_calls_24h": 8,
            "upstreams": [{"name": "github", "state": "ready", "tools": 12, "error": null}]});
        let text = render_dashboard(&pick(&dash, DASHBOARD_FIELDS));
        assert!(text.contains("25.0 %"), "{text}");
        assert!(text.contains("github"), "{text}");
    }
}
