//! stdio client transport: the upstream is a child process speaking newline-delimited JSON-RPC
//! on stdin/stdout. Its stderr goes to the log under the server's name. Stopping it follows the
//! MCP shutdown sequence: close stdin, then SIGTERM to its process group, then SIGKILL.

use super::UpstreamSession;
use crate::error::UpstreamError;
use secrecy::ExposeSecret;
use std::process::Stdio;
use std::sync::Weak;
use std::time::Duration;
use tessera_config::{ServerConfig, Transport};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Variables a stdio child inherits from the gateway's environment.
const INHERITED_ENV: &[&str] = &[
    "HOME", "LOGNAME", "PATH", "SHELL", "TERM", "USER", "LANG", "LC_ALL", "TMPDIR", "TZ",
];

/// Time a child gets to exit after stdin closes, and again after SIGTERM.
const GRACE: Duration = Duration::from_secs(2);
/// Longest line accepted from a child (a larger one is a protocol error, not an OOM).
const MAX_LINE: usize = 64 * 1024 * 1024;

pub struct StdioTransport {
    tx: mpsc::Sender<String>,
    stop: CancellationToken,
    exited: CancellationToken,
}

/// The child's pipes, handed to tasks once the session exists.
pub struct StdioIo {
    child: Child,
    stdin: ChildStdin,
    stdout: ChildStdout,
    stderr: ChildStderr,
    rx: mpsc::Receiver<String>,
    stop: CancellationToken,
    exited: CancellationToken,
    name: String,
}

impl StdioTransport {
    pub fn spawn(server: &ServerConfig) -> Result<(Self, StdioIo), UpstreamError> {
        let Transport::Stdio {
            command,
            args,
            env,
            working_dir,
        } = &server.transport
        else {
            return Err(UpstreamError::Config("not a stdio server".into()));
        };
        let mut cmd = tokio::process::Command::new(command);
        // The child gets a minimal inherited environment plus its configured `env` — never the
        // gateway's own (which holds sealing keys and client secrets). Same default set as the
        // MCP SDKs' stdio clients.
        cmd.env_clear()
            .envs(
                INHERITED_ENV
                    .iter()
                    .filter_map(|k| std::env::var_os(k).map(|v| (k, v))),
            )
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v.expose_secret())))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            // Its own process group, so that stopping it also stops what it started (npx, uv, ...).
            .process_group(0);
        if let Some(dir) = working_dir {
            cmd.current_dir(dir);
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| UpstreamError::Spawn(format!("{command}: {e}")))?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(UpstreamError::Spawn("child pipes missing".into()));
        };
        let (tx, rx) = mpsc::channel(256);
        let stop = CancellationToken::new();
        let exited = CancellationToken::new();
        let io = StdioIo {
            child,
            stdin,
            stdout,
            stderr,
            rx,
            stop: stop.clone(),
            exited: exited.clone(),
            name: server.name.clone(),
        };
        Ok((StdioTransport { tx, stop, exited }, io))
    }

    pub async fn send(&self, line: String) -> Result<(), UpstreamError> {
        self.tx
            .send(line)
            .await
            .map_err(|_| UpstreamError::Closed("process stdin closed".into()))
    }

    /// Stops the child and waits (bounded) until it is gone.
    pub async fn close(&self) {
        self.stop.cancel();
        let _ = tokio::time::timeout(GRACE * 3, self.exited.cancelled()).await;
    }
}

impl StdioIo {
    pub fn start(self, session: Weak<UpstreamSession>) {
        let StdioIo {
            mut child,
            mut stdin,
            stdout,
            stderr,
            mut rx,
            stop,
            exited,
            name,
        } = self;

        let writer_stop = stop.clone();
        let writer = tokio::spawn(async move {
            loop {
                let line = tokio::select! {
                    _ = writer_stop.cancelled() => break,
                    l = rx.recv() => l,
                };
                let Some(mut line) = line else { break };
                line.push('\n');
                if stdin.write_all(line.as_bytes()).await.is_err() || stdin.flush().await.is_err() {
                    break;
                }
            }
            // Dropping stdin closes the pipe: the first step of a graceful stop.
        });

        let reader_session = session.clone();
        let reader_name = name.clone();
        let reader = tokio::spawn(async move {
            let mut lines = BufReader::new(stdout);
            let mut buf = String::new();
            loop {
                buf.clear();
                match lines.read_line(&mut buf).await {
                    Ok(0) => break,
                    Ok(n) if n > MAX_LINE => {
                        tracing::warn!(server = %reader_name, "line too long from upstream; dropped");
                    }
                    Ok(_) => {
                        let text = buf.trim();
                        if text.is_empty() {
                            continue;
                        }
                        let Some(s) = reader_session.upgrade() else {
                            break;
                        };
                        s.dispatch(text, None);
                    }
                    Err(e) => {
                        tracing::warn!(server = %reader_name, error = %e, "reading upstream stdout failed");
                        break;
                    }
                }
            }
        });

        let stderr_name = name.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::info!(target: "tessera::upstream::stderr", server = %stderr_name, "{line}");
            }
        });

        tokio::spawn(async move {
            let status = tokio::select! {
                s = child.wait() => s,
                _ = stop.cancelled() => {
                    let _ = writer.await;
                    match tokio::time::timeout(GRACE, child.wait()).await {
                        Ok(s) => s,
                        Err(_) => {
                            signal_group(&child, libc::SIGTERM);
                            match tokio::time::timeout(GRACE, child.wait()).await {
                                Ok(s) => s,
                                Err(_) => {
                                    signal_group(&child, libc::SIGKILL);
                                    child.wait().await
                                }
                            }
                        }
                    }
                }
            };
            // Let the reader hand over the last lines (often the very response a call waits for).
            let _ = tokio::time::timeout(GRACE, reader).await;
            let reason = match status {
                Ok(s) => format!("process exited ({s})"),
                Err(e) => format!("process wait failed: {e}"),
            };
            if let Some(s) = session.upgrade() {
                s.fail_all(&reason);
            }
            exited.cancel();
        });
    }
}

fn signal_group(child: &Child, signal: libc::c_int) {
    if let Some(pid) = child.id() {
        // SAFETY: kill(2) with a negative pid signals the process group we created for the child.
        unsafe {
            libc::kill(-(pid as libc::pid_t), signal);
        }
    }
}
