//! `tessera-load --url URL [...]`: MCP load generator; `--idle-sessions N` holds N idle sessions instead.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, ValueEnum};
use tessera_bench::load::{self, LoadConfig};
use tessera_bench::parse_duration;
use tokio::io::AsyncReadExt;

#[derive(Clone, Copy, ValueEnum)]
enum Output {
    Text,
    Json,
}

#[derive(Parser)]
#[command(version, about = "MCP streamable-HTTP load generator")]
struct Cli {
    /// MCP streamable-HTTP endpoint, e.g. http://127.0.0.1:8080/mcp.
    #[arg(long)]
    url: String,
    /// Concurrent sessions, each with its own initialize and one call in flight.
    #[arg(long, default_value_t = 16)]
    sessions: usize,
    /// Measured time.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Unmeasured warm-up before it.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    warmup: Duration,
    /// Total calls per second over all sessions (fixed schedule); flat out when absent.
    #[arg(long)]
    rate: Option<f64>,
    /// Tool to call with {"message": ...}.
    #[arg(long, default_value = "echo")]
    tool: String,
    /// Message size in bytes.
    #[arg(long, default_value_t = 100)]
    payload: usize,
    #[arg(long, value_enum, default_value = "text")]
    output: Output,
    /// Also report the CPU µs per call of this process (repeatable).
    #[arg(long = "cpu-pid")]
    cpu_pids: Vec<u32>,
    /// Instead of load: open N sessions, print "holding N sessions", wait for stdin to close (or --hold), DELETE them.
    #[arg(long)]
    idle_sessions: Option<usize>,
    /// With --idle-sessions: stop holding after this long even if stdin stays open.
    #[arg(long, value_parser = parse_duration)]
    hold: Option<Duration>,
    /// Send `Authorization: Bearer TOKEN` (repeatable: session i uses token i mod n).
    #[arg(long = "token")]
    tokens: Vec<String>,
    /// Bearer tokens, one per line (added to --token; session i uses token i mod n).
    #[arg(long)]
    bearer_file: Option<std::path::PathBuf>,
}

impl Cli {
    fn bearers(&self) -> Result<Vec<String>> {
        let mut tokens = self.tokens.clone();
        if let Some(path) = &self.bearer_file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            tokens.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(str::to_owned),
            );
        }
        Ok(tokens)
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match cli.idle_sessions {
            Some(n) => hold(&cli, n).await,
            None => run(&cli).await,
        }
    })
}

async fn run(cli: &Cli) -> Result<()> {
    let cfg = LoadConfig {
        url: cli.url.clone(),
        sessions: cli.sessions,
        duration: cli.duration,
        warmup: cli.warmup,
        rate: cli.rate,
        tool: cli.tool.clone(),
        payload: cli.payload,
        cpu_pids: cli
            .cpu_pids
            .iter()
            .map(|p| (format!("pid {p}"), *p))
            .collect(),
        cpu_threads: Vec::new(),
        cpu_families: Vec::new(),
        bearers: cli.bearers()?,
    };
    let report = load::run(&cfg).await?;
    match cli.output {
        Output::Text => print!("{}", report.to_text()),
        Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
    }
    if report.errors > 0 {
        bail!("{} calls failed", report.errors);
    }
    Ok(())
}

async fn hold(cli: &Cli, n: usize) -> Result<()> {
    let url =
        reqwest::Url::parse(&cli.url).with_context(|| format!("invalid URL {:?}", cli.url))?;
    let client = load::http_client(64)?;
    let (sessions, errors) = load::open_sessions_as(&client, &url, n, &cli.bearers()?, 32).await;
    for e in errors.iter().take(load::MAX_ERROR_SAMPLES) {
        eprintln!("error: {e}");
    }
    println!("holding {} sessions", sessions.len());
    let stdin_closed = async {
        let mut stdin = tokio::io::stdin();
        let mut buf = [0u8; 256];
        while matches!(stdin.read(&mut buf).await, Ok(n) if n > 0) {}
    };
    match cli.hold {
        Some(d) => {
            let _ = tokio::time::timeout(d, stdin_closed).await;
        }
        None => stdin_closed.await,
    }
    let close_errors = load::close_sessions(sessions, 32).await;
    for e in close_errors.iter().take(load::MAX_ERROR_SAMPLES) {
        eprintln!("error: {e}");
    }
    if !errors.is_empty() || !close_errors.is_empty() {
        bail!(
            "{} sessions failed to open, {} to close",
            errors.len(),
            close_errors.len()
        );
    }
    Ok(())
}
