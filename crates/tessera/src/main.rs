//! The `tessera` binary: command-line interface and wiring only.

mod activity;
mod broker_bridge;
mod broker_setup;
mod cli;
mod keys;
mod pat_bridge;
mod serve;
mod session_seal;
mod settings;
mod token;
mod users;
mod validate;

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
pub(crate) enum Output {
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
    /// Manage your personal access tokens on a running gateway.
    Token(token::TokenArgs),
    /// Your brokered upstream credentials on a running gateway: list, status, connect, rm.
    Credential(cli::credential::CredentialArgs),
    /// The activity log of a running gateway: list, watch.
    Activity(cli::activity::ActivityArgs),
    /// Users of a running gateway (admins only).
    Users(cli::users::UsersArgs),
    /// Your servers on a running gateway: list, add, update, rm, enable, disable.
    Server(cli::servers::ServerArgs),
    /// Admin routes of a running gateway: users, disable, enable, sessions, revoke-session, dashboard.
    Admin(cli::admin::AdminArgs),
    /// Manage sealing keys.
    Keys(keys::KeysArgs),
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
        } => validate::run(&file, output),
        Command::Serve { config, listen } => block_on(serve::run(config, listen)),
        Command::Token(args) => cli::exit(token::run(args)),
        Command::Credential(args) => cli::exit(cli::credential::run(args)),
        Command::Activity(args) => cli::exit(cli::activity::run(args)),
        Command::Users(args) => cli::exit(cli::users::run(args)),
        Command::Server(args) => cli::exit(cli::servers::run(args)),
        Command::Admin(args) => cli::exit(cli::admin::run(args)),
        Command::Keys(args) => keys::run(args),
    }
}

fn block_on(fut: impl Future<Output = anyhow::Result<()>>) -> ExitCode {
    match block_on_value(fut) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs `fut` on a new multi-threaded runtime.
pub(crate) fn block_on_value<T>(fut: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    let runtime = tokio::runtime::Runtime::new()
        .map_err(|e| anyhow::anyhow!("cannot start the async runtime: {e}"))?;
    runtime.block_on(fut)
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
