//! `tessera-load` against the upstream, directly and through the bare hop.

use std::time::Duration;

use serde_json::Value;
use tessera_bench::child::ChildProc;
use tokio::process::Command;

const START: Duration = Duration::from_secs(20);

async fn start_upstream() -> (ChildProc, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tessera-upstream"));
    cmd.args(["http", "--listen", "127.0.0.1:0"]);
    ChildProc::spawn_listening("tessera-upstream", cmd, START)
        .await
        .unwrap()
}

async fn run_load(url: &str, extra: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_tessera-load"))
        .args([
            "--url",
            url,
            "--duration",
            "1s",
            "--warmup",
            "200ms",
            "--sessions",
            "4",
            "--output",
            "json",
        ])
        .args(extra)
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "tessera-load failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&stdout).unwrap()
}

#[tokio::test]
async fn load_against_the_upstream_reports_no_errors() {
    let (_up, url) = start_upstream().await;
    let report = run_load(&url, &[]).await;
    assert_eq!(report["errors"], 0, "{report}");
    assert!(report["calls"].as_u64().unwrap() > 100, "{report}");
    assert!(report["p50_us"].as_f64().unwrap() > 0.0);

    let report = run_load(&url, &["--rate", "200", "--payload", "5000"]).await;
    assert_eq!(report["errors"], 0, "{report}");
    let calls = report["calls"].as_u64().unwrap();
    assert!((120..=260).contains(&calls), "{report}");
}

#[tokio::test]
async fn load_through_the_bare_hop_reports_no_errors() {
    let (up, url) = start_upstream().await;
    let base = url.trim_end_matches("/mcp");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tessera-bare-hop"));
    cmd.args(["--listen", "127.0.0.1:0", "--target", base]);
    let (hop, hop_url) = ChildProc::spawn_listening("tessera-bare-hop", cmd, START)
        .await
        .unwrap();
    let report = run_load(
        &format!("{hop_url}/mcp"),
        &["--cpu-pid", &hop.pid().to_string()],
    )
    .await;
    assert_eq!(report["errors"], 0, "{report}");
    assert!(report["calls"].as_u64().unwrap() > 100, "{report}");
    assert_eq!(report["cpu"][0]["pid"], hop.pid());
    hop.stop(Duration::from_secs(5)).await.unwrap();
    up.stop(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test]
async fn idle_sessions_are_held_until_stdin_closes_then_deleted() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let (_up, url) = start_upstream().await;
    let mut child = Command::new(env!("CARGO_BIN_EXE_tessera-load"))
        .args(["--url", &url, "--idle-sessions", "50"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(START, lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(line, "holding 50 sessions");
    drop(child.stdin.take());
    let status = tokio::time::timeout(START, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
}
