//! Starting the gateway under test: a temporary config and data directory, `tessera serve`, and waiting for
//! `/readyz`.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use tokio::process::Command;

use crate::child::ChildProc;
use crate::load;

/// How often `/readyz` is asked before giving up, and how long apart.
pub const READY_TRIES: u32 = 150;
pub const READY_INTERVAL: Duration = Duration::from_millis(100);

/// Removes its directory on drop, unless `keep` was set (after a failure, so the gateway's log can be read).
pub struct TempDir {
    /// The directory.
    pub path: PathBuf,
    /// Keep it on drop.
    pub keep: bool,
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if self.keep {
            eprintln!("kept {} for inspection", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// `name` in the directory of the running binary (the helper binaries are built side by side).
pub fn sibling_binary(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating this binary")?;
    let dir = exe
        .parent()
        .ok_or_else(|| anyhow!("{} has no parent directory", exe.display()))?;
    let path = dir.join(name);
    if !path.exists() {
        bail!(
            "{} not found: build it with `cargo build --release -p tessera-bench`",
            path.display()
        );
    }
    Ok(path)
}

/// A free TCP port on 127.0.0.1 (bound and released; the gateway binds it again).
pub fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

/// What the gateway is started with.
pub struct GatewaySetup<'a> {
    /// Builds the config from (listen port, data dir).
    pub config: &'a dyn Fn(u16, &Path) -> serde_json::Value,
    /// Extra environment variables.
    pub env: Vec<(&'static str, String)>,
}

/// Writes the config into a new temporary directory (with `data/` and `tessera.log`), runs `PATH serve --config
/// FILE` (`tessera` beside this binary when `path` does not exist) and waits for `GET /readyz` → 200 (every
/// enabled upstream ready). Returns the process, the directory and the `/mcp` URL.
pub async fn start_tessera(
    path: &Path,
    setup: GatewaySetup<'_>,
) -> Result<(ChildProc, TempDir, String)> {
    let path = if path.exists() {
        path.to_path_buf()
    } else {
        sibling_binary("tessera").with_context(|| {
            format!(
                "the gateway binary {} does not exist (or use --skip-tessera)",
                path.display()
            )
        })?
    };
    let mut dir = TempDir {
        path: std::env::temp_dir().join(format!("tessera-bench-{}", uuid::Uuid::new_v4().simple())),
        keep: false,
    };
    let data_dir = dir.path.join("data");
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let port = free_port()?;
    let config = (setup.config)(port, &data_dir);
    let config_path = dir.path.join("config.json");
    std::fs::write(&config_path, serde_json::to_vec_pretty(&config)?)
        .with_context(|| format!("writing {}", config_path.display()))?;
    let log_path = dir.path.join("tessera.log");
    let log =
        File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
    let mut cmd = Command::new(&path);
    cmd.arg("serve")
        .arg("--config")
        .arg(&config_path)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    for (k, v) in &setup.env {
        cmd.env(k, v);
    }
    let mut gateway = ChildProc::spawn("tessera", cmd)?;

    let base = format!("http://127.0.0.1:{port}");
    let client = load::http_client(1)?;
    let mut last = String::from("no answer yet");
    for _ in 0..READY_TRIES {
        if let Err(e) = gateway.ensure_running() {
            dir.keep = true;
            bail!("{e}; log: {}\n{}", log_path.display(), log_tail(&log_path));
        }
        match client.get(format!("{base}/readyz")).send().await {
            Ok(r) if r.status().is_success() => return Ok((gateway, dir, format!("{base}/mcp"))),
            Ok(r) => last = format!("HTTP {}", r.status()),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(READY_INTERVAL).await;
    }
    dir.keep = true;
    bail!(
        "tessera did not become ready at {base}/readyz ({last}); log: {}\n{}",
        log_path.display(),
        log_tail(&log_path)
    )
}

/// The last 20 lines of a log file.
pub fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
