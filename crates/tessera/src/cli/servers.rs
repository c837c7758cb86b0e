//! `tessera server list|add|update|rm|enable|disable`: the caller's servers on a running gateway
//! (`/api/v1/user/servers`): shared ones (with the caller's own switch) and personal HTTP ones.
//!
//! The gateway's URL is `--gateway` (or `TESSERA_URL`) in this group, since `--url` is the
//! personal server's URL. Header values are sent once and never printed (the gateway never
//! returns them).

use clap::{Args, Subcommand};
use serde_json::{Map, Value, json};

use super::table::{self, col};
use super::{Api, Failure, Outcome, OutputFormat, Remote, print_json, segment};

/// [`Remote`] for `tessera server`, whose `--url` is the personal server's URL.
#[derive(Args, Clone, Debug)]
pub(crate) struct GatewayRemote {
    /// The gateway's base URL (`--url` is the personal server's URL in this group).
    #[arg(
        long = "gateway",
        env = "TESSERA_URL",
        global = true,
        default_value = "http://127.0.0.1:8080",
        value_name = "URL"
    )]
    pub(crate) gateway: String,
    /// A personal access token (`tsr_pat_…`); sent as `Authorization: Bearer`, never printed.
    #[arg(
        long,
        env = "TESSERA_TOKEN",
        global = true,
        hide_env_values = true,
        value_name = "PAT"
    )]
    pub(crate) token: Option<String>,
    /// Output format: `table` for people, `json` for scripts.
    #[arg(
        long,
        short,
        value_enum,
        env = "TESSERA_OUTPUT",
        default_value_t = OutputFormat::Table,
        global = true
    )]
    pub(crate) output: OutputFormat,
}

impl From<GatewayRemote> for Remote {
    fn from(r: GatewayRemote) -> Remote {
        Remote {
            server: r.gateway,
            token: r.token,
            output: r.output,
        }
    }
}

#[derive(Args, Debug)]
#[command(after_help = super::EXIT_CODES)]
pub(crate) struct ServerArgs {
    #[command(flatten)]
    pub(crate) remote: GatewayRemote,
    #[command(subcommand)]
    pub(crate) command: ServerCommand,
}

#[derive(Subcommand, Debug, PartialEq, Eq)]
pub(crate) enum ServerCommand {
    /// List your servers: the shared ones (with your switch) and your personal ones.
    #[command(after_help = super::EXIT_CODES)]
    List,
    /// Add a personal HTTP server.
    #[command(after_help = super::EXIT_CODES)]
    Add {
        /// 1 to 64 characters of A-Z, a-z, 0-9, `_`, `.`, `-`.
        name: String,
        /// The server's URL (http or https, a public address).
        #[arg(long)]
        url: String,
        /// `streamable-http` (default), `sse` or `http`.
        #[arg(long)]
        protocol: Option<String>,
        /// A header sent upstream, `Name=value` (repeatable); the value is never shown again.
        #[arg(long = "header", value_name = "NAME=VALUE")]
        headers: Vec<String>,
        /// Add it switched off.
        #[arg(long)]
        disabled: bool,
        /// An `auth_broker` block (mode `oauth_connect`) as a JSON file, `-` for stdin: you then
        /// connect your own account at the server's authorization server (`tessera credential
        /// connect NAME`). Its `client_secret` is stored sealed and never shown again.
        #[arg(long, value_name = "FILE")]
        auth_broker: Option<String>,
    },
    /// Change a personal server (only what is given changes; `--header` replaces all headers,
    /// `--clear-headers` removes them).
    #[command(after_help = super::EXIT_CODES)]
    Update {
        name: String,
        #[arg(long)]
        url: Option<String>,
        #[arg(long)]
        protocol: Option<String>,
        #[arg(long = "header", value_name = "NAME=VALUE")]
        headers: Vec<String>,
        #[arg(long, conflicts_with = "headers")]
        clear_headers: bool,
    },
    /// Delete a personal server.
    #[command(after_help = super::EXIT_CODES, visible_alias = "remove")]
    Rm { name: String },
    /// Switch a server on for you (a shared one: your own switch).
    #[command(after_help = super::EXIT_CODES)]
    Enable { name: String },
    /// Switch a server off for you.
    #[command(after_help = super::EXIT_CODES)]
    Disable { name: String },
    /// Your servers' live state on the gateway: ready, down (and why), switched off, how many
    /// tools you see and your upstream sessions open to each.
    #[command(after_help = super::EXIT_CODES)]
    Status,
}

const STATUS_FIELDS: &[&str] = &[
    "name",
    "ownership",
    "enabled",
    "protocol",
    "brokered",
    "connected",
    "state",
    "error",
    "tool_count",
    "upstream_sessions",
];

/// `GET /api/v1/user/diagnostics`'s rows, cut down to [`STATUS_FIELDS`].
pub(crate) fn status_rows(body: &Value) -> Vec<Value> {
    table::pick_each(body, "servers", STATUS_FIELDS)
}

pub(crate) fn render_status(list: &[Value]) -> String {
    let columns = [
        col("NAME", 24),
        col("OWNER", 9),
        col("STATE", 14),
        col("TOOLS", 6),
        col("SESSIONS", 8),
        col("ERROR", 48),
    ];
    table::render_each(list, "No servers.", &columns, |s| {
        vec![
            table::cell(&s["name"]),
            table::cell(&s["ownership"]),
            table::cell(&s["state"]),
            table::cell(&s["tool_count"]),
            table::cell(&s["upstream_sessions"]),
            table::cell(&s["error"]),
        ]
    })
}

const PATH: &str = "/api/v1/user/servers";

/// `Name=value` pairs as a JSON object; a pair without `=` or with an empty name is a usage
/// error that names the header, never its value.
pub(crate) fn headers(pairs: &[String]) -> Result<Map<String, Value>, Failure> {
    let mut out = Map::new();
    for pair in pairs {
        match pair.split_once('=') {
            Some((name, value)) if !name.trim().is_empty() => {
                out.insert(name.trim().to_owned(), value.into());
            }
            _ => {
                let name = pair.split('=').next().unwrap_or_default();
                return Err(Failure::Usage(format!(
                    "--header {name:?}: expected NAME=VALUE"
                )));
            }
        }
    }
    Ok(out)
}

/// The `auth_broker` block of `--auth-broker FILE` (`-` = stdin), parsed as JSON here so that a
/// typo is a usage error before anything is sent.
fn read_auth_broker(file: &str) -> Result<Value, Failure> {
    let text = if file == "-" {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
            .map_err(|e| Failure::Usage(format!("--auth-broker -: cannot read stdin: {e}")))?;
        text
    } else {
        std::fs::read_to_string(file)
            .map_err(|e| Failure::Usage(format!("--auth-broker {file:?}: {e}")))?
    };
    let value: Value = serde_json::from_str(&text).map_err(|e| {
        // serde_json's message names a line and column, never the content.
        Failure::Usage(format!("--auth-broker {file:?} is not JSON: {e}"))
    })?;
    if !value.is_object() {
        return Err(Failure::Usage(format!(
            "--auth-broker {file:?} must hold a JSON object (the auth_broker block)"
        )));
    }
    Ok(value)
}

/// What is shown of a server: no field that could carry a secret is ever in the answer, and the
/// output is still built from these fields only.
const SHOWN: &[&str] = &[
    "name",
    "ownership",
    "transport",
    "protocol",
    "url",
    "command",
    "header_names",
    "brokered",
    "enabled",
    "user_enabled",
    "created_at",
    "updated_at",
];

fn pick(server: &Value) -> Value {
    let mut out = Map::new();
    for key in SHOWN {
        if let Some(v) = server.get(*key).filter(|v| !v.is_null()) {
            out.insert((*key).to_owned(), v.clone());
        }
    }
    Value::Object(out)
}

pub(crate) fn servers(body: &Value) -> Vec<Value> {
    ["shared", "personal"]
        .iter()
        .flat_map(|k| body[*k].as_array().into_iter().flatten())
        .map(pick)
        .collect()
}

pub(crate) fn render(list: &[Value]) -> String {
    if list.is_empty() {
        return "No servers.\n".to_owned();
    }
    let columns = [
        col("NAME", 24),
        col("OWNER", 9),
        col("PROTOCOL", 16),
        col("URL", 48),
        col("HEADERS", 24),
        col("STATUS", 8),
    ];
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|s| {
            let on =
                s["enabled"].as_bool() != Some(false) && s["user_enabled"].as_bool() != Some(false);
            let url = if s["url"].is_null() {
                &s["command"]
            } else {
                &s["url"]
            };
            let protocol = if s["protocol"].is_null() {
                &s["transport"]
            } else {
                &s["protocol"]
            };
            vec![
                table::cell(&s["name"]),
                table::cell(&s["ownership"]),
                table::cell(protocol),
                table::cell(url),
                table::list(&s["header_names"]),
                if on { "on" } else { "off" }.to_owned(),
            ]
        })
        .collect();
    table::render(&columns, &rows)
}

pub(crate) async fn run(args: ServerArgs) -> Outcome {
    let remote: Remote = args.remote.into();
    let api = Api::new(&remote)?;
    let one = |name: &str| format!("{PATH}/{}", segment(name));
    let body = match &args.command {
        ServerCommand::Status => {
            let list = status_rows(&api.get("/api/v1/user/diagnostics").await?);
            match remote.output {
                OutputFormat::Json => print_json(&json!({ "servers": list })),
                OutputFormat::Table => print!("{}", render_status(&list)),
            }
            return Ok(());
        }
        ServerCommand::List => api.get(PATH).await?,
        ServerCommand::Add {
            name,
            url,
            protocol,
            headers: pairs,
            disabled,
            auth_broker,
        } => {
            let mut body = json!({ "name": name, "url": url, "enabled": !disabled });
            if let Some(file) = auth_broker {
                body["auth_broker"] = read_auth_broker(file)?;
            }
            if let Some(p) = protocol {
                body["protocol"] = p.clone().into();
            }
            if !pairs.is_empty() {
                body["headers"] = Value::Object(headers(pairs)?);
            }
            api.json(api.request(reqwest::Method::POST, PATH).json(&body))
                .await?
        }
        ServerCommand::Update {
            name,
            url,
            protocol,
            headers: pairs,
            clear_headers,
        } => {
            let mut body = json!({});
            if let Some(u) = url {
                body["url"] = u.clone().into();
            }
            if let Some(p) = protocol {
                body["protocol"] = p.clone().into();
            }
            if !pairs.is_empty() {
                body["headers"] = Value::Object(headers(pairs)?);
            } else if *clear_headers {
                body["headers"] = json!({});
            }
            api.json(api.request(reqwest::Method::PUT, &one(name)).json(&body))
                .await?
        }
        ServerCommand::Rm { name } => api.delete(&one(name)).await?,
        ServerCommand::Enable { name } | ServerCommand::Disable { name } => {
            let enabled = matches!(args.command, ServerCommand::Enable { .. });
            let path = format!("{}/enable", one(name));
            api.json(
                api.request(reqwest::Method::POST, &path)
                    .json(&json!({ "enabled": enabled })),
            )
            .await?
        }
    };
    let list = match &args.command {
        ServerCommand::List => servers(&body),
        ServerCommand::Rm { .. } => Vec::new(),
        _ => vec![pick(&body)],
    };
    match (remote.output, &args.command) {
        (OutputFormat::Json, ServerCommand::List) => print_json(&json!({ "servers": list })),
        (OutputFormat::Json, ServerCommand::Rm { .. }) => {
            print_json(&json!({ "message": body["message"] }));
        }
        (OutputFormat::Json, _) => print_json(&list[0]),
        (OutputFormat::Table, ServerCommand::Rm { .. }) => {
            println!("{}", table::cell(&body["message"]));
        }
        (OutputFormat::Table, _) => print!("{}", render(&list)),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_shows_state_tools_sessions_and_the_error() {
        let body = json!({"servers": [
            {"name": "github", "ownership": "shared", "state": "ready", "tool_count": 12,
             "upstream_sessions": 1, "error": null, "secret": "NO"},
            {"name": "jira", "ownership": "shared", "state": "down", "tool_count": null,
             "upstream_sessions": 0, "error": "connection refused"}]});
        let list = status_rows(&body);
        assert!(!serde_json::to_string(&list).unwrap().contains("NO"));
        let text = render_status(&list);
        let rows: Vec<Vec<&str>> = text
            .lines()
            .skip(1)
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(rows[0], ["github", "shared", "ready", "12", "1", "-"]);
        assert_eq!(
            rows[1],
            ["jira", "shared", "down", "-", "0", "connection", "refused"]
        );
    }

    #[test]
    fn an_auth_broker_file_must_be_a_json_object() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("b.json");
        std::fs::write(&good, r#"{"mode":"oauth_connect","client_id":"c"}"#).unwrap();
        let v = read_auth_broker(good.to_str().unwrap()).unwrap();
        assert_eq!(v["mode"], "oauth_connect");
        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, "[1]").unwrap();
        assert!(
            matches!(read_auth_broker(bad.to_str().unwrap()), Err(Failure::Usage(m)) if m.contains("object"))
        );
        let secret = dir.path().join("s.json");
        std::fs::write(&secret, "{\"client_secret\": \"s3cr3t-value\"").unwrap();
        let err = read_auth_broker(secret.to_str().unwrap()).unwrap_err();
        assert!(matches!(&err, Failure::Usage(m) if !m.contains("s3cr3t-value")));
        assert!(matches!(
            read_auth_broker("/nonexistent/x.json"),
            Err(Failure::Usage(_))
        ));
    }

    #[test]
    fn headers_parse_and_a_bad_one_is_named_without_its_value() {
        let h = headers(&["Authorization=Bearer a=b".into(), " X-Key =v".into()]).unwrap();
        assert_eq!(h["Authorization"], "Bearer a=b");
        assert_eq!(h["X-Key"], "v");
        let err = headers(&["novalue".into()]).unwrap_err();
        assert!(matches!(&err, Failure::Usage(m) if m.contains("novalue")));
        let err = headers(&["=s3cret".into()]).unwrap_err();
        assert!(!err.message().contains("s3cret"));
    }

    #[test]
    fn the_list_shows_both_kinds_and_only_known_fields() {
        let body = json!({
            "shared": [{"name": "github", "ownership": "shared", "transport": "streamable-http",
                "url": "https://gh.example/mcp", "header_names": ["X-Key"], "enabled": true,
                "user_enabled": false, "secret": "SHOULD-NOT-SHOW"}],
            "personal": [{"name": "notes", "ownership": "personal", "protocol": "sse",
                "url": "https://n.example/sse", "header_names": [], "enabled": true}],
        });
        let list = servers(&body);
        assert!(
            !serde_json::to_string(&list)
                .unwrap()
                .contains("SHOULD-NOT-SHOW")
        );
        let text = render(&list);
        let rows: Vec<Vec<&str>> = text
            .lines()
            .skip(1)
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(
            rows[0],
            [
                "github",
                "shared",
                "streamable-http",
                "https://gh.example/mcp",
                "X-Key",
                "off"
            ]
        );
        assert_eq!(
            rows[1],
            [
                "notes",
                "personal",
                "sse",
                "https://n.example/sse",
                "-",
                "on"
            ]
        );
    }
}
