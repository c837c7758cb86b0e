//! The `tessera` binary: command-line interface and wiring only.

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;

// glibc malloc was ~13% of the gateway's CPU per proxied call (small, short-lived buffers on
// several threads); mimalloc's thread-local free lists cut that.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "tessera",
    version,
    about = "A multi-user gateway for the Model Context Protocol"
)]
struct Cli {
    /// Log line format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Output {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// Configuration file (JSON).
        #[arg(long, short)]
        config: PathBuf,
        /// Listen address, overriding `listen` in the file.
        #[arg(long)]
        listen: Option<String>,
    },
    /// Work with configuration files.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Check a configuration file; prints one line per problem and exits 1 if there are any.
    Validate {
        file: PathBuf,
        #[arg(long, short, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Command::Config {
            command: ConfigCommand::Validate { file, output },
        } => validate(&file, output),
        Command::Serve { config, listen } => {
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("error: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(serve(config, listen)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn validate(file: &std::path::Path, output: Output) -> ExitCode {
    match tessera_config::load_file(file) {
        Ok(config) => {
            if output == Output::Json {
                println!(
                    "{}",
                    serde_json::json!({ "valid": true, "problems": [], "ignored": config.ignored })
                );
            } else {
                println!(
                    "{}: valid ({} servers)",
                    file.display(),
                    config.servers.len()
                );
                for key in &config.ignored {
                    println!("note: {key} is accepted for compatibility but not used by Tessera");
                }
            }
            ExitCode::SUCCESS
        }
        Err(errors) => {
            if output == Output::Json {
                let problems: Vec<_> = errors
                    .0
                    .iter()
                    .map(|p| serde_json::json!({ "path": p.path, "message": p.message }))
                    .collect();
                println!(
                    "{}",
                    serde_json::json!({ "valid": false, "problems": problems })
                );
            } else {
                for p in &errors.0 {
                    println!("{p}");
                }
            }
            ExitCode::FAILURE
        }
    }
}

async fn serve(config_path: PathBuf, listen: Option<String>) -> anyhow::Result<()> {
    let mut config = tessera_config::load_file(&config_path).map_err(|errors| {
        let lines: Vec<String> = errors.0.iter().map(|p| format!("  {p}")).collect();
        anyhow::anyhow!(
            "invalid configuration {}:\n{}",
            config_path.display(),
            lines.join("\n")
        )
    })?;
    for key in &config.ignored {
        tracing::warn!(key = %key, "configuration key accepted for compatibility but not used");
    }
    if let Some(listen) = listen {
        config.listen = listen;
    }
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data_dir {}", config.data_dir.display()))?;
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    let gateway = tessera_proxy::Gateway::new(config).context("cannot build the HTTP client")?;
    tracing::info!(mcp = %format!("http://{addr}/mcp"), sse = %format!("http://{addr}/sse"), servers = gateway.servers.len(), "tessera listening");
    let extra = axum::Router::new();
    tessera_proxy::serve(gateway, listener, extra, shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("shutting down: finishing in-flight calls");
}
