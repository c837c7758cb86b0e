//! `tessera-upstream http [--listen 127.0.0.1:0]` or `tessera-upstream stdio`: a fast MCP server for benchmarks.
//! `tessera-upstream corpus [--listen 127.0.0.1:0] [--file tool-corpus.json]`: every server of the tool corpus,
//! server `S` at `/S/mcp`.

use std::io::Write;
use std::net::SocketAddr;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    version,
    about = "A fast upstream MCP server (tools: echo, payload, lossless), or the servers of the tool corpus"
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
    /// Every server of the tool corpus over streamable HTTP, server S at /S/mcp; prints `listening on
    /// http://ADDR` once bound.
    Corpus {
        /// Address to bind (port 0 picks a free port).
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// A corpus file (`{"servers": {name: [tool, ...]}}`); default: tests/data/tool-corpus.json, compiled in.
        #[arg(long)]
        file: Option<std::path::PathBuf>,
    },
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
        Transport::Corpus { listen, file } => {
            let corpus = match file {
                Some(path) => tessera_bench::upstream::corpus::Corpus::parse(
                    &std::fs::read_to_string(&path)
                        .with_context(|| format!("reading {}", path.display()))?,
                )?,
                None => tessera_bench::upstream::corpus::Corpus::builtin()?,
            };
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(tessera_bench::upstream::corpus::serve(
                listen,
                corpus,
                |addr| {
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "listening on http://{addr}");
                    let _ = out.flush();
                },
            ))?;
        }
    }
    Ok(())
}
