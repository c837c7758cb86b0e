//! `tessera-upstream http [--listen 127.0.0.1:0]` or `tessera-upstream stdio`: a fast MCP server for benchmarks.

use std::io::Write;
use std::net::SocketAddr;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    version,
    about = "A fast upstream MCP server (tools: echo, payload, lossless)"
)]
struct Cli {
    #[command(subcommand)]
    transport: Transport,
}

#[derive(Subcommand)]
enum Transport {
    /// Streamable HTTP at /mcp; prints `listening on http://ADDR/mcp` once bound.
    Http {
        /// Address to bind (port 0 picks a free port).
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
    },
    /// Newline-delimited JSON-RPC on stdin/stdout.
    Stdio,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().transport {
        Transport::Stdio => {
            tessera_bench::upstream::stdio::serve(
                std::io::stdin().lock(),
                std::io::stdout().lock(),
            )?;
        }
        Transport::Http { listen } => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(tessera_bench::upstream::http::serve(listen, |addr| {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "listening on http://{addr}/mcp");
                let _ = out.flush();
            }))?;
        }
    }
    Ok(())
}
