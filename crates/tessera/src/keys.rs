//! `tessera keys rotate`: re-seal every sealed value in the store under the active key.

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use tessera_store::seal::{ENV_KEY, ENV_OLD_KEYS};
use tessera_store::{Keyring, ResealReport, Store};

use crate::Output;

/// Unreadable rows listed in the text output (the JSON output lists them all).
const SHOWN_UNREADABLE: usize = 10;

#[derive(Args)]
pub(crate) struct KeysArgs {
    #[command(subcommand)]
    command: KeysCommand,
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Re-seal every stored secret (upstream credentials, provider tokens, pending connect flows)
    /// under the active sealing key. Safe to interrupt and run again.
    ///
    /// Keys come from TESSERA_SEALING_KEY (active) and TESSERA_SEALING_KEYS_OLD (older keys,
    /// comma-separated), or from --keys-file (one key per line, the first is active). Keep the
    /// old keys configured until this reports every row readable.
    Rotate {
        /// The gateway's data directory (the one holding tessera.db).
        #[arg(long, required_unless_present = "storage")]
        data_dir: Option<PathBuf>,
        /// The gateway's `storage` URL instead (sqlite://<path> or postgres://…; the
        /// password may come from PGPASSWORD).
        #[arg(long, conflicts_with = "data_dir")]
        storage: Option<String>,
        /// A key file instead of the environment: one `<base64>` or `<kid>:<base64>` per line,
        /// the first is the active key.
        #[arg(long)]
        keys_file: Option<PathBuf>,
        #[arg(long, short, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
}

pub(crate) fn run(args: KeysArgs) -> ExitCode {
    match args.command {
        KeysCommand::Rotate {
            data_dir,
            storage,
            keys_file,
            output,
        } => {
            // clap requires one of the two.
            let url = storage.unwrap_or_else(|| {
                let db = data_dir.unwrap_or_default().join(tessera_store::DB_FILE);
                format!("sqlite://{}", db.display())
            });
            let report = crate::block_on_value(rotate(&url, keys_file.as_deref()));
            match report {
                Ok((report, active_kid)) => print_report(&report, &active_kid, output),
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

async fn rotate(url: &str, keys_file: Option<&Path>) -> anyhow::Result<(ResealReport, String)> {
    let keyring = match keys_file {
        Some(path) => Keyring::from_file(path)?,
        None => Keyring::from_env().with_context(|| {
            format!("no sealing keys: set {ENV_KEY} (the new active key) and {ENV_OLD_KEYS} (the keys being retired), or pass --keys-file")
        })?,
    };
    if let tessera_store::Backend::Sqlite { path } = tessera_store::parse_url(url)?
        && !path.is_file()
    {
        // Store::connect would create an empty database: a mistyped path must not "succeed".
        bail!(
            "no store at {}: pass the gateway's data_dir with --data-dir (or its storage URL with --storage)",
            path.display()
        );
    }
    let keyring = Arc::new(keyring);
    let store = Store::connect(url)
        .await
        .with_context(|| format!("cannot open the store {}", tessera_store::redact(url)))?
        .with_keyring(keyring.clone());
    let bar = if std::io::stderr().is_terminal() {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template("re-sealing {bar:40} {pos}/{len} rows ({eta} left)")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let result = store
        .reseal_all(&keyring, |done, total| {
            bar.set_length(total);
            bar.set_position(done);
        })
        .await;
    bar.finish_and_clear();
    store.close().await;
    let report = result.context("re-sealing stopped (safe to run again)")?;
    Ok((report, keyring.active_kid().to_owned()))
}

fn print_report(report: &ResealReport, active_kid: &str, output: Output) -> ExitCode {
    let unreadable = report.unreadable.len();
    if output == Output::Json {
        let rows: Vec<_> = report
            .unreadable
            .iter()
            .map(|u| serde_json::json!({ "table": u.table, "row": u.row, "reason": u.reason }))
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "complete": report.complete(),
                "active_kid": active_kid,
                "total": report.total,
                "resealed": report.resealed,
                "already_current": report.skipped,
                "unreadable": rows,
            })
        );
    } else {
        println!(
            "resealed {}, already current {}, unreadable {unreadable} (active key id {active_kid})",
            report.resealed, report.skipped
        );
    }
    if report.complete() {
        return ExitCode::SUCCESS;
    }
    if output == Output::Text {
        for u in report.unreadable.iter().take(SHOWN_UNREADABLE) {
            eprintln!("unreadable: {} {}: {}", u.table, u.row, u.reason);
        }
        if unreadable > SHOWN_UNREADABLE {
            eprintln!("… and {} more", unreadable - SHOWN_UNREADABLE);
        }
    }
    eprintln!(
        "error: rotation incomplete: {unreadable} row(s) did not open with the configured keys (a missing old key?). \
         Add the key that sealed them to {ENV_OLD_KEYS} (or as a later line of --keys-file) and run `tessera keys rotate` again; \
         keep the old keys configured until it exits 0."
    );
    ExitCode::FAILURE
}
