//! Child processes that are always stopped: killed on drop, or stopped politely with [`ChildProc::stop`].

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A running child process. Dropping it kills the process (SIGKILL); [`ChildProc::stop`] sends SIGTERM first.
pub struct ChildProc {
    name: String,
    pid: u32,
    child: Child,
}

impl ChildProc {
    /// Spawns `cmd` with `kill_on_drop`.
    pub fn spawn(name: &str, mut cmd: Command) -> Result<Self> {
        cmd.kill_on_drop(true);
        let child = cmd.spawn().with_context(|| format!("starting {name}"))?;
        let pid = child.id().ok_or_else(|| anyhow!("{name} exited at once"))?;
        Ok(Self {
            name: name.to_owned(),
            pid,
            child,
        })
    }

    /// Spawns `cmd` with stdout piped and waits (at most `timeout`) for its `listening on URL` line; returns the
    /// process and the URL. The rest of stdout is drained in the background.
    pub async fn spawn_listening(
        name: &str,
        mut cmd: Command,
        timeout: Duration,
    ) -> Result<(Self, String)> {
        cmd.stdout(Stdio::piped());
        let mut proc = Self::spawn(name, cmd)?;
        let stdout = proc
            .child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("{name}: no stdout pipe"))?;
        let mut lines = BufReader::new(stdout).lines();
        let url = tokio::time::timeout(timeout, async {
            while let Some(line) = lines.next_line().await? {
                if let Some(url) = line.strip_prefix("listening on ") {
                    return Ok(url.trim().to_owned());
                }
            }
            Err(anyhow!(
                "{name} closed stdout before printing `listening on`"
            ))
        })
        .await
        .map_err(|_| anyhow!("{name} did not print `listening on` within {timeout:?}"))??;
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok((proc, url))
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The name given at spawn time.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL; always reaps the process.
    pub async fn stop(mut self, grace: Duration) -> Result<()> {
        if !self.is_running() {
            return Ok(());
        }
        let pid = libc::pid_t::try_from(self.pid).context("pid out of range")?;
        // SAFETY: kill(2) with a pid we spawned and have not reaped yet (try_wait above saw it running), so the
        // pid cannot have been reused by another process.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        if tokio::time::timeout(grace, self.child.wait())
            .await
            .is_err()
        {
            self.child
                .kill()
                .await
                .with_context(|| format!("killing {}", self.name))?;
        }
        Ok(())
    }

    /// Fails if the process has exited (for example, the gateway crashed mid-run).
    pub fn ensure_running(&mut self) -> Result<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => bail!("{} (pid {}) exited: {status}", self.name, self.pid),
            Err(e) => bail!("{} (pid {}): {e}", self.name, self.pid),
        }
    }
}
