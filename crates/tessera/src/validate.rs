//! `tessera config validate`.

use std::process::ExitCode;

use crate::Output;

pub(crate) fn run(file: &std::path::Path, output: Output) -> ExitCode {
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
