//! `tessera token create|list|revoke|regenerate`: personal access tokens over the REST API
//! (`/api/v1/user/tokens`), through the shared remote client ([`crate::cli`]).

use clap::{Args, Subcommand};
use serde_json::Value;

use crate::cli::table::{self, col};
use crate::cli::{Api, Outcome, OutputFormat, Remote, print_json, segment};

#[derive(Args)]
#[command(after_help = crate::cli::EXIT_CODES)]
pub(crate) struct TokenArgs {
    #[command(flatten)]
    remote: Remote,
    #[command(subcommand)]
    command: TokenCommand,
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token; it is printed once (the only output that ever carries one).
    Create {
        #[arg(long)]
        name: String,
        /// Lifetime, e.g. `30d`, `12h` (default 30d, at most 366d).
        #[arg(long)]
        expires: Option<String>,
        /// Limit the token to this server (repeat for several; default: every server you may use).
        #[arg(long = "allow-server", value_name = "SERVER")]
        allow_servers: Vec<String>,
        /// What it may call: read, write, destructive (repeat or comma-separate; must include
        /// read; default: all three). Tools are classed by their MCP annotations.
        #[arg(long = "permission", value_name = "PERMISSION", value_delimiter = ',')]
        permissions: Vec<String>,
    },
    /// List your tokens (never the tokens themselves).
    List,
    /// Revoke a token by id.
    Revoke { id: String },
    /// Replace a token by a new one with the same name, servers, permissions and lifetime (the
    /// old one stops working at once); the new one is printed once.
    Regenerate { id: String },
}

const PATH: &str = "/api/v1/user/tokens";

pub(crate) async fn run(args: TokenArgs) -> Outcome {
    let api = Api::new(&args.remote)?;
    let body = match &args.command {
        TokenCommand::Create {
            name,
            expires,
            allow_servers,
            permissions,
        } => {
            let mut body = serde_json::json!({ "name": name });
            if let Some(e) = expires {
                body["expires_in"] = e.clone().into();
            }
            if !allow_servers.is_empty() {
                body["allowed_servers"] = allow_servers.clone().into();
            }
            if !permissions.is_empty() {
                body["permissions"] = permissions.clone().into();
            }
            api.json(api.request(reqwest::Method::POST, PATH).json(&body))
                .await?
        }
        TokenCommand::List => api.get(PATH).await?,
        TokenCommand::Revoke { id } => api.delete(&format!("{PATH}/{}", segment(id))).await?,
        TokenCommand::Regenerate { id } => {
            let path = format!("{PATH}/{}/regenerate", segment(id));
            api.json(api.request(reqwest::Method::POST, &path)).await?
        }
    };
    if args.remote.output == OutputFormat::Json {
        print_json(&body);
        return Ok(());
    }
    let text = |v: &Value| table::cell(v);
    match args.command {
        TokenCommand::Create { .. } | TokenCommand::Regenerate { .. } => {
            if let Some(old) = body["replaces"].as_str() {
                println!("replaces:   {old} (revoked)");
            }
            println!("id:         {}", text(&body["id"]));
            println!("name:       {}", text(&body["name"]));
            println!("expires_at: {}", text(&body["expires_at"]));
            println!("servers:    {}", scope_servers(&body));
            println!("permissions: {}", scope_permissions(&body));
            println!("token:      {}", text(&body["token"]));
            println!("(the token is shown only this once)");
        }
        TokenCommand::List => print!("{}", render_list(&body)),
        TokenCommand::Revoke { id } => println!("revoked {id}"),
    }
    Ok(())
}

/// `allowed_servers` as shown: `all`, or the names.
fn scope_servers(token: &Value) -> String {
    match token["allowed_servers"].as_array() {
        Some(names) => names
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(","),
        None => "all".to_owned(),
    }
}

fn scope_permissions(token: &Value) -> String {
    token["permissions"]
        .as_array()
        .map(|p| {
            p.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_else(|| "read,write,destructive".to_owned())
}

fn render_list(body: &Value) -> String {
    let columns = [
        col("ID", 38),
        col("NAME", 24),
        col("PREFIX", 14),
        col("EXPIRES", 25),
        col("STATUS", 8),
        col("SERVERS", 20),
        col("PERMISSIONS", 22),
    ];
    let rows: Vec<Vec<String>> = body["tokens"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            let status = if t["revoked"].as_bool() == Some(true) {
                "revoked"
            } else {
                "active"
            };
            vec![
                table::cell(&t["id"]),
                table::cell(&t["name"]),
                table::cell(&t["prefix"]),
                table::cell(&t["expires_at"]),
                status.to_owned(),
                scope_servers(t),
                scope_permissions(t),
            ]
        })
        .collect();
    table::render(&columns, &rows)
}
