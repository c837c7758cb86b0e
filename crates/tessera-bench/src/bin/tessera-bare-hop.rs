//! `tessera-bare-hop --target http://127.0.0.1:PORT [--listen 127.0.0.1:0]`: the thinnest HTTP pass-through proxy.

use std::io::Write;
use std::net::SocketAddr;

use anyhow::anyhow;
use clap::Parser;
use tessera_bench::barehop::{Target, serve};

#[derive(Parser)]
#[command(
    version,
    about = "Forwards every HTTP request unchanged to --target (benchmark floor)"
)]
struct Cli {
    /// Upstream base URL, e.g. http://127.0.0.1:8080 (request paths are kept).
    #[arg(long)]
    target: String,
    /// Address to bind (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let target = Target::parse(&cli.target).map_err(|e| anyhow!(e))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(serve(cli.listen, target, |addr| {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "listening on http://{addr}");
        let _ = out.flush();
    }))?;
    Ok(())
}
