//! `tessera credential list|status|connect|rm`: the caller's brokered upstream credentials
//! (`GET/DELETE /api/v1/user/credentials…`). Only token-free fields are ever printed.

use clap::{Args, Subcommand};
use serde_json::{Map, Value, json};

use super::table::{self, col};
use super::{Api, Failure, Outcome, OutputFormat, Remote, print_json, segment};

#[derive(Args, Debug)]
#[command(after_help = super::EXIT_CODES)]
pub(crate) struct CredentialArgs {
    #[command(flatten)]
    pub(crate) remote: Remote,
    #[command(subcommand)]
    pub(crate) command: CredentialCommand,
}

#[derive(Subcommand, Debug, PartialEq, Eq)]
pub(crate) enum CredentialCommand {
    /// List every brokered server you may use: mode, status, expiry (never a token).
    #[command(after_help = super::EXIT_CODES)]
    List,
    /// Show one brokered server's credential (name matched case-insensitively).
    #[command(after_help = super::EXIT_CODES)]
    Status {
        #[arg(value_name = "SERVER")]
        name: String,
    },
    /// Print the URL that connects your account to an `oauth_connect` server; `--open` also
    /// opens it in a browser when a display is available.
    #[command(after_help = super::EXIT_CODES)]
    Connect {
        #[arg(value_name = "SERVER")]
        name: String,
        /// Open the URL in a browser too (never fails when none can be started).
        #[arg(long)]
        open: bool,
    },
    /// Disconnect: the gateway revokes the credential at the upstream (when it can) and deletes it.
    #[command(visible_aliases = ["remove", "disconnect"], after_help = super::EXIT_CODES)]
    Rm {
        #[arg(value_name = "SERVER")]
        name: String,
    },
}

/// The fields of a credential status that may be shown; anything else the server adds is dropped.
const SHOWN: &[&str] = &[
    "server",
    "mode",
    "status",
    "expires_at",
    "scopes",
    "audience",
    "obtained_via",
    "updated_at",
    "refreshable",
    "token_type",
    "connect_path",
];

/// A credential status reduced to [`SHOWN`] fields.
pub(crate) fn token_free(v: &Value) -> Value {
    let mut out = Map::new();
    for key in SHOWN {
        if let Some(x) = v.get(*key).filter(|x| !x.is_null()) {
            out.insert((*key).to_owned(), x.clone());
        }
    }
    Value::Object(out)
}

/// The list in a body of `GET /api/v1/user/credentials`, token-free, sorted by server.
pub(crate) fn credentials(body: &Value) -> Vec<Value> {
    let mut list: Vec<Value> = body["credentials"]
        .as_array()
        .into_iter()
        .flatten()
        .map(token_free)
        .collect();
    list.sort_by_key(|c| c["server"].as_str().unwrap_or("").to_lowercase());
    list
}

pub(crate) const EMPTY: &str = "No brokered upstreams configured.";

/// The `list` table: `SERVER MODE STATUS EXPIRES`, ` *` after a status that needs a connect,
/// and a footer saying how.
pub(crate) fn render_list(list: &[Value]) -> String {
    if list.is_empty() {
        return format!("{EMPTY}\n");
    }
    let columns = [
        col("SERVER", 24),
        col("MODE", 16),
        col("STATUS", 17),
        col("EXPIRES", 25),
    ];
    let mut needs_connect = false;
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|c| {
            let mut status = table::cell(&c["status"]);
            if c.get("connect_path").is_some() {
                needs_connect = true;
                status.push_str(" *");
            }
            vec![
                table::cell(&c["server"]),
                table::cell(&c["mode"]),
                status,
                table::cell(&c["expires_at"]),
            ]
        })
        .collect();
    let mut out = table::render(&columns, &rows);
    if needs_connect {
        out.push_str("\n* not connected or expired: run `tessera credential connect <server>`\n");
    }
    out
}

/// `status` as `key: value` lines.
pub(crate) fn render_status(c: &Value, base: &str) -> String {
    let mut out = String::new();
    for key in [
        "server",
        "mode",
        "status",
        "expires_at",
        "scopes",
        "audience",
        "obtained_via",
        "updated_at",
    ] {
        if let Some(v) = c.get(key) {
            out.push_str(&format!("{:<13} {}\n", format!("{key}:"), table::cell(v)));
        }
    }
    if let Some(path) = c["connect_path"].as_str() {
        out.push_str(&format!("{:<13} {base}{path}\n", "connect:"));
    }
    out
}

/// The connect URL of `server` under `base` (no HTTP call).
pub(crate) fn connect_url(base: &str, server: &str) -> String {
    format!("{base}/api/v1/user/credentials/{}/connect", segment(server))
}

/// `rm`'s human answer: the server's message and what happened at the upstream.
pub(crate) fn render_removed(body: &Value) -> String {
    let message = body["message"].as_str().unwrap_or("Disconnected");
    let revocation = match (body["revoked"].as_bool(), body["revocation_error"].as_str()) {
        (Some(true), _) => "revoked at the upstream".to_owned(),
        (_, Some(e)) if !e.is_empty() => format!("upstream revocation failed: {e}"),
        _ => "not revoked at the upstream (nothing to revoke or no revocation endpoint)".to_owned(),
    };
    format!("{message}\n{revocation}\n")
}

pub(crate) async fn run(args: CredentialArgs) -> Outcome {
    let out = args.remote.output;
    if let CredentialCommand::Connect { name: server, open } = &args.command {
        let base = super::base_url(&args.remote.server)?;
        let url = connect_url(&base, server);
        match out {
            OutputFormat::Json => print_json(&json!({ "server": server, "connect_url": url })),
            OutputFormat::Table => println!("{url}"),
        }
        if *open {
            open_browser(&url);
        }
        return Ok(());
    }
    let api = Api::new(&args.remote)?;
    match args.command {
        CredentialCommand::List => {
            let list = credentials(&api.get("/api/v1/user/credentials").await?);
            match out {
                OutputFormat::Json => print_json(&json!({ "credentials": list })),
                OutputFormat::Table => print!("{}", render_list(&list)),
            }
        }
        CredentialCommand::Status { name: server } => {
            let list = credentials(&api.get("/api/v1/user/credentials").await?);
            let wanted = server.trim().to_lowercase();
            let Some(c) = list.iter().find(|c| {
                c["server"]
                    .as_str()
                    .is_some_and(|s| s.to_lowercase() == wanted)
            }) else {
                return Err(Failure::Refused(format!(
                    "brokered server \"{server}\" not found"
                )));
            };
            match out {
                OutputFormat::Json => print_json(c),
                OutputFormat::Table => print!("{}", render_status(c, api.base())),
            }
        }
        CredentialCommand::Rm { name: server } => {
            let body = api
                .delete(&format!("/api/v1/user/credentials/{}", segment(&server)))
                .await?;
            match out {
                OutputFormat::Json => {
                    let mut shown = Map::new();
                    for key in ["message", "revoked", "revocation_error"] {
                        if let Some(v) = body.get(key) {
                            shown.insert(key.to_owned(), v.clone());
                        }
                    }
                    shown.insert("server".into(), server.into());
                    print_json(&Value::Object(shown));
                }
                OutputFormat::Table => print!("{}", render_removed(&body)),
            }
        }
        CredentialCommand::Connect { .. } => {} // answered above, without a call
    }
    Ok(())
}

/// Opens `url` in the desktop's browser, if there is a display; says so on stderr otherwise.
/// Never fails the command.
fn open_browser(url: &str) {
    let opener = if cfg!(target_os = "macos") {
        Some("open")
    } else if cfg!(windows) {
        None
    } else if std::env::var_os("DISPLAY").is_some() || std::env::var_os("WAYLAND_DISPLAY").is_some()
    {
        Some("xdg-open")
    } else {
        None
    };
    let started = opener.is_some_and(|program| {
        std::process::Command::new(program)
            .arg(url)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .is_ok()
    });
    if !started {
        eprintln!("no browser could be opened here: open the URL above yourself");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Value {
        json!({"credentials": [
            {"server": "whoami_tx", "mode": "token_exchange", "status": "connected",
             "expires_at": "2026-11-26T17:00:00Z", "scopes": ["mcp"], "access_token": "SECRET-A"},
            {"server": "Whoami_connect", "mode": "oauth_connect", "status": "not_connected",
             "connect_path": "/api/v1/user/credentials/Whoami_connect/connect", "refresh_token": "SECRET-R"},
        ]})
    }

    #[test]
    fn list_table_has_the_columns_a_marker_and_a_footer() {
        let text = render_list(&credentials(&sample()));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "SERVER          MODE            STATUS           EXPIRES"
        );
        assert_eq!(
            lines[1],
            "Whoami_connect  oauth_connect   not_connected *  -"
        );
        assert_eq!(
            lines[2],
            "whoami_tx       token_exchange  connected        2026-11-26T17:00:00Z"
        );
        assert!(
            text.contains("tessera credential connect <server>"),
            "{text}"
        );
    }

    #[test]
    fn no_field_outside_the_allow_list_survives() {
        let list = credentials(&sample());
        let all = serde_json::to_string(&list).unwrap() + &render_list(&list);
        assert!(!all.contains("SECRET"), "{all}");
        assert!(
            render_status(&list[0], "http://h")
                .contains("connect:      http://h/api/v1/user/credentials/Whoami_connect/connect")
        );
    }

    #[test]
    fn an_empty_list_says_so() {
        assert_eq!(
            render_list(&credentials(&json!({"credentials": []}))),
            "No brokered upstreams configured.\n"
        );
    }

    #[test]
    fn connect_url_escapes_the_name() {
        assert_eq!(
            connect_url("http://h:1", "a b"),
            "http://h:1/api/v1/user/credentials/a%20b/connect"
        );
    }

    #[test]
    fn removal_reports_the_upstream_revocation() {
        let ok = render_removed(
            &json!({"message": "Disconnected credential for \"x\"", "revoked": true, "revocation_error": null}),
        );
        assert_eq!(
            ok,
            "Disconnected credential for \"x\"\nrevoked at the upstream\n"
        );
        let failed = render_removed(
            &json!({"message": "m", "revoked": false, "revocation_error": "upstream answered 503"}),
        );
        assert!(failed.contains("upstream revocation failed: upstream answered 503"));
    }
}
