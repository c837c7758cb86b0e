//! `tessera token create|list|revoke`: personal access tokens over the REST API.

use anyhow::{Context, bail};
use clap::{Args, Subcommand};

use crate::Output;

#[derive(Args)]
pub(crate) struct TokenArgs {
    /// The gateway's base URL.
    #[arg(
        long,
        env = "TESSERA_URL",
        global = true,
        default_value = "http://127.0.0.1:8080"
    )]
    server: String,
    /// A personal access token (`tsr_pat_…`) of the user whose tokens to manage.
    #[arg(long, env = "TESSERA_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    #[arg(long, short, value_enum, default_value_t = Output::Text, global = true)]
    output: Output,
    #[command(subcommand)]
    command: TokenCommand,
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token; it is printed once.
    Create {
        #[arg(long)]
        name: String,
        /// Lifetime, e.g. `30d`, `12h` (default 30d, at most 366d).
        #[arg(long)]
        expires: Option<String>,
    },
    /// List your tokens (never the tokens themselves).
    List,
    /// Revoke a token by id.
    Revoke { id: String },
}

pub(crate) async fn run(args: TokenArgs) -> anyhow::Result<()> {
    let Some(token) = args.token.as_deref().filter(|t| !t.is_empty()) else {
        bail!("no token: pass --token or set TESSERA_TOKEN to a personal access token");
    };
    let base = args.server.trim_end_matches('/');
    let url = format!("{base}/api/v1/user/tokens");
    let http = reqwest::Client::new();
    let request = match &args.command {
        TokenCommand::Create { name, expires } => {
            let mut body = serde_json::json!({ "name": name });
            if let Some(e) = expires {
                body["expires_in"] = e.clone().into();
            }
            http.post(&url).json(&body)
        }
        TokenCommand::List => http.get(&url),
        TokenCommand::Revoke { id } => http.delete(format!("{url}/{id}")),
    };
    let response = request
        .bearer_auth(token)
        .send()
        .await
        .with_context(|| format!("cannot reach {base}"))?;
    let status = response.status();
    let body: serde_json::Value = response
        .json()
        .await
        .with_context(|| format!("{base} answered {status} with a body that is not JSON"))?;
    if !status.is_success() {
        let message = body["message"].as_str().unwrap_or("request failed");
        bail!("{status}: {message}");
    }
    if args.output == Output::Json {
        println!("{body}");
        return Ok(());
    }
    let text = |v: &serde_json::Value| v.as_str().unwrap_or("-").to_owned();
    match args.command {
        TokenCommand::Create { .. } => {
            println!("id:         {}", text(&body["id"]));
            println!("name:       {}", text(&body["name"]));
            println!("expires_at: {}", text(&body["expires_at"]));
            println!("token:      {}", text(&body["token"]));
            println!("(the token is shown only this once)");
        }
        TokenCommand::List => {
            println!(
                "{:<38} {:<24} {:<14} {:<22} STATUS",
                "ID", "NAME", "PREFIX", "EXPIRES"
            );
            for t in body["tokens"].as_array().into_iter().flatten() {
                let status = if t["revoked"].as_bool() == Some(true) {
                    "revoked"
                } else {
                    "active"
                };
                println!(
                    "{:<38} {:<24} {:<14} {:<22} {status}",
                    text(&t["id"]),
                    text(&t["name"]),
                    text(&t["prefix"]),
                    text(&t["expires_at"])
                );
            }
        }
        TokenCommand::Revoke { id } => println!("revoked {id}"),
    }
    Ok(())
}
