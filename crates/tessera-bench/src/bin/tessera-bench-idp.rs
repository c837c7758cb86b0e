//! `tessera-bench-idp`: the benchmark's mini identity provider on its own.
//!
//! Serves OpenID discovery, `/jwks` (an RS256 key generated at start), `/token` (RFC 8693 token
//! exchange → opaque token, `expires_in` 3600, counted at `/stats`), prints `listening on
//! http://127.0.0.1:PORT`, and with `--users N --audience AUD --tokens-out FILE` writes N caller
//! JWTs (sub `user-0` … `user-<N-1>`, one per line) for `tessera-load --bearer-file FILE`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use tessera_bench::idp::MiniIdp;
use tessera_bench::parse_duration;

#[derive(Parser)]
#[command(
    version,
    about = "Mini OIDC provider + RFC 8693 token endpoint for benchmarks"
)]
struct Cli {
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Added to every /token answer.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    token_delay: Duration,
    /// Caller tokens to mint (with --tokens-out).
    #[arg(long, default_value_t = 0)]
    users: usize,
    /// `aud` of the minted tokens: Tessera's `auth.resource`, e.g. http://127.0.0.1:8080/mcp.
    #[arg(long, default_value = "http://127.0.0.1:8080/mcp")]
    audience: String,
    /// Subject prefix: subjects are `<prefix>-<i>`.
    #[arg(long, default_value = "user")]
    prefix: String,
    /// Where to write the minted tokens, one per line.
    #[arg(long)]
    tokens_out: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let idp = MiniIdp::start(cli.listen, cli.token_delay).await?;
    if let Some(path) = &cli.tokens_out {
        let tokens = idp.mint_users(&cli.prefix, 0, cli.users, &cli.audience)?;
        std::fs::write(path, tokens.join("\n") + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    println!("listening on {}", idp.issuer());
    tokio::signal::ctrl_c().await?;
    eprintln!("{} token requests", idp.token_requests());
    Ok(())
}
