//! `tessera-bench`: runs the whole benchmark back to back on one upstream and prints the ratios.
//!
//! Starts `tessera-upstream http`, `tessera-bare-hop` in front of it and the Tessera gateway (unless
//! `--skip-tessera`), then for each of direct, bare hop and Tessera: a flat-out run and a fixed-rate run, with the
//! CPU per call of the proxy and of the upstream. Finally the gateway's RSS with `--idle-sessions` idle client
//! sessions. Every child process is stopped at the end, and killed if anything fails.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use clap::{Parser, ValueEnum};
use serde::Serialize;
use tessera_bench::child::ChildProc;
use tessera_bench::load::{self, LoadConfig, LoadReport};
use tessera_bench::{parse_duration, procfs};
use tokio::process::Command;

const START_TIMEOUT: Duration = Duration::from_secs(15);
const READY_TRIES: u32 = 150;
const READY_INTERVAL: Duration = Duration::from_millis(100);
const STOP_GRACE: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, ValueEnum)]
enum Output {
    Text,
    Json,
}

#[derive(Parser)]
#[command(
    version,
    about = "Direct vs bare hop vs Tessera: throughput, latency, CPU per call, memory"
)]
struct Cli {
    /// Measured time of each run.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Unmeasured warm-up before each run.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    warmup: Duration,
    /// Concurrent MCP sessions per run.
    #[arg(long, default_value_t = 16)]
    sessions: usize,
    /// Calls/s of the fixed-rate runs.
    #[arg(long, default_value_t = 500.0)]
    rate: f64,
    /// Message size in bytes.
    #[arg(long, default_value_t = 100)]
    payload: usize,
    /// The gateway binary (falls back to `tessera` beside this binary when the path does not exist).
    #[arg(long, default_value = "target/release/tessera")]
    tessera: PathBuf,
    /// Benchmark only direct and bare hop.
    #[arg(long)]
    skip_tessera: bool,
    /// Idle client sessions opened through Tessera for the memory measurement.
    #[arg(long, default_value_t = 1000)]
    idle_sessions: usize,
    #[arg(long, value_enum, default_value = "text")]
    output: Output,
}

#[derive(Serialize)]
struct ModeResult {
    mode: &'static str,
    url: String,
    tool: String,
    flat_out: LoadReport,
    fixed_rate: LoadReport,
    ratio_vs_direct: Option<f64>,
    ratio_vs_bare_hop: Option<f64>,
    /// Fixed-rate p50/p99 minus direct's.
    added_p50_us: Option<f64>,
    added_p99_us: Option<f64>,
    /// CPU µs per call of the proxy process (bare hop or Tessera) in the flat-out run.
    proxy_cpu_us_per_call: Option<f64>,
    /// CPU µs per call of the upstream in the flat-out run.
    upstream_cpu_us_per_call: Option<f64>,
    /// CPU µs per call of the load generator itself (this process) in the flat-out run.
    load_cpu_us_per_call: Option<f64>,
}

#[derive(Serialize)]
struct Memory {
    sessions: usize,
    opened: usize,
    rss_before_kib: u64,
    rss_after_kib: u64,
    kib_per_session: f64,
    errors: Vec<String>,
}

#[derive(Serialize)]
struct TargetCheck {
    name: &'static str,
    target: String,
    value: String,
    pass: bool,
}

#[derive(Serialize)]
struct BenchReport {
    unix_time: u64,
    cpus: usize,
    duration_s: f64,
    warmup_s: f64,
    sessions: usize,
    rate: f64,
    payload_bytes: usize,
    modes: Vec<ModeResult>,
    memory: Option<Memory>,
    targets: Vec<TargetCheck>,
    tessera_skipped: bool,
}

/// Removes its directory on drop, unless `keep` was set (after a failure, so the gateway's log can be read).
struct TempDir {
    path: PathBuf,
    keep: bool,
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

/// The processes under test; dropping it kills whatever is still running.
struct Processes {
    upstream: ChildProc,
    hop: ChildProc,
    gateway: Option<(ChildProc, TempDir)>,
}

impl Processes {
    fn ensure_running(&mut self) -> Result<()> {
        self.upstream.ensure_running()?;
        self.hop.ensure_running()?;
        if let Some((gw, dir)) = &mut self.gateway {
            gw.ensure_running()
                .with_context(|| format!("see {}", dir.path.join("tessera.log").display()))?;
        }
        Ok(())
    }

    async fn stop(self) -> Result<()> {
        let mut result = Ok(());
        if let Some((gw, _dir)) = self.gateway {
            result = result.and(gw.stop(STOP_GRACE).await);
        }
        result = result.and(self.hop.stop(STOP_GRACE).await);
        result.and(self.upstream.stop(STOP_GRACE).await)
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(bench(&cli))?;
    match cli.output {
        Output::Text => print!("{}", to_markdown(&report)),
        Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
    }
    let errors: u64 = report
        .modes
        .iter()
        .map(|m| m.flat_out.errors + m.fixed_rate.errors)
        .sum();
    if errors > 0 {
        bail!("{errors} calls failed (see the error samples above)");
    }
    Ok(())
}

fn sibling_binary(name: &str) -> Result<PathBuf> {
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

fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

async fn start_tessera(path: &Path, upstream_url: &str) -> Result<(ChildProc, TempDir, String)> {
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
    let config = serde_json::json!({
        "listen": format!("127.0.0.1:{port}"),
        "data_dir": data_dir,
        "mcpServers": [{"name": "bench", "url": upstream_url, "protocol": "streamable-http"}],
    });
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

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

async fn bench(cli: &Cli) -> Result<BenchReport> {
    let mut cmd = Command::new(sibling_binary("tessera-upstream")?);
    cmd.args(["http", "--listen", "127.0.0.1:0"]);
    let (upstream, upstream_url) =
        ChildProc::spawn_listening("tessera-upstream", cmd, START_TIMEOUT).await?;
    let upstream_base = upstream_url.trim_end_matches("/mcp").to_owned();

    let mut cmd = Command::new(sibling_binary("tessera-bare-hop")?);
    cmd.args(["--listen", "127.0.0.1:0", "--target", &upstream_base]);
    let (hop, hop_url) = ChildProc::spawn_listening("tessera-bare-hop", cmd, START_TIMEOUT).await?;

    let mut procs = Processes {
        upstream,
        hop,
        gateway: None,
    };
    let mut gateway_url = None;
    if !cli.skip_tessera {
        let (gw, dir, url) = start_tessera(&cli.tessera, &upstream_url).await?;
        procs.gateway = Some((gw, dir));
        gateway_url = Some(url);
    }

    let outcome = measure(
        cli,
        &mut procs,
        &upstream_url,
        &hop_url,
        gateway_url.as_deref(),
    )
    .await;
    if let (Err(_), Some((_, dir))) = (&outcome, &mut procs.gateway) {
        dir.keep = true;
    }
    let stopped = procs.stop().await;
    let report = outcome?;
    stopped?;
    Ok(report)
}

async fn measure(
    cli: &Cli,
    procs: &mut Processes,
    upstream_url: &str,
    hop_url: &str,
    gateway_url: Option<&str>,
) -> Result<BenchReport> {
    let upstream_pid = procs.upstream.pid();
    let mut plan: Vec<(&'static str, String, &'static str, Option<u32>)> = vec![
        ("direct", upstream_url.to_owned(), "echo", None),
        (
            "bare hop",
            format!("{hop_url}/mcp"),
            "echo",
            Some(procs.hop.pid()),
        ),
    ];
    if let (Some(url), Some((gw, _))) = (gateway_url, &procs.gateway) {
        plan.push(("tessera", url.to_owned(), "bench__echo", Some(gw.pid())));
    }

    let mut modes: Vec<ModeResult> = Vec::new();
    for (mode, url, tool, proxy_pid) in plan {
        let mut cpu_pids = vec![
            ("upstream".to_owned(), upstream_pid),
            ("load generator".to_owned(), std::process::id()),
        ];
        if let Some(pid) = proxy_pid {
            cpu_pids.push(("proxy".to_owned(), pid));
        }
        let mut cfg = LoadConfig {
            url: url.clone(),
            sessions: cli.sessions,
            duration: cli.duration,
            warmup: cli.warmup,
            rate: None,
            tool: tool.to_owned(),
            payload: cli.payload,
            cpu_pids,
        };
        eprintln!(
            "{mode}: flat out for {:?} (+{:?} warm-up)…",
            cli.duration, cli.warmup
        );
        let flat_out = load::run(&cfg)
            .await
            .with_context(|| format!("{mode}: flat-out run"))?;
        procs.ensure_running()?;
        cfg.rate = Some(cli.rate);
        eprintln!("{mode}: {} calls/s for {:?}…", cli.rate, cli.duration);
        let fixed_rate = load::run(&cfg)
            .await
            .with_context(|| format!("{mode}: fixed-rate run"))?;
        procs.ensure_running()?;
        for (run, report) in [("flat out", &flat_out), ("fixed rate", &fixed_rate)] {
            for e in &report.error_samples {
                eprintln!("{mode} {run}: error: {e}");
            }
        }
        modes.push(ModeResult {
            mode,
            url,
            tool: tool.to_owned(),
            proxy_cpu_us_per_call: flat_out.cpu_of("proxy"),
            upstream_cpu_us_per_call: flat_out.cpu_of("upstream"),
            load_cpu_us_per_call: flat_out.cpu_of("load generator"),
            flat_out,
            fixed_rate,
            ratio_vs_direct: None,
            ratio_vs_bare_hop: None,
            added_p50_us: None,
            added_p99_us: None,
        });
    }
    let direct = modes.first().map(|m| {
        (
            m.flat_out.calls_per_s,
            m.fixed_rate.p50_us,
            m.fixed_rate.p99_us,
        )
    });
    let hop = modes.get(1).map(|m| m.flat_out.calls_per_s);
    for m in &mut modes {
        if let Some((calls, p50, p99)) = direct {
            m.ratio_vs_direct = ratio(m.flat_out.calls_per_s, calls);
            m.added_p50_us = Some(m.fixed_rate.p50_us - p50);
            m.added_p99_us = Some(m.fixed_rate.p99_us - p99);
        }
        m.ratio_vs_bare_hop = hop.and_then(|h| ratio(m.flat_out.calls_per_s, h));
    }

    let mut memory = None;
    if let (Some(url), Some((gw, _))) = (gateway_url, &procs.gateway) {
        eprintln!("tessera: opening {} idle sessions…", cli.idle_sessions);
        let pid = gw.pid();
        let rss_before_kib = procfs::rss_kib(pid)?;
        let client = load::http_client(64)?;
        let url = reqwest::Url::parse(url)?;
        let (sessions, mut errors) =
            load::open_sessions(&client, &url, cli.idle_sessions, 32).await;
        let rss_after_kib = procfs::rss_kib(pid)?;
        let opened = sessions.len();
        errors.extend(load::close_sessions(sessions, 32).await);
        errors.truncate(load::MAX_ERROR_SAMPLES);
        memory = Some(Memory {
            sessions: cli.idle_sessions,
            opened,
            rss_before_kib,
            rss_after_kib,
            kib_per_session: (rss_after_kib as f64 - rss_before_kib as f64) / opened.max(1) as f64,
            errors,
        });
        procs.ensure_running()?;
    }

    let targets = check_targets(&modes, memory.as_ref());
    Ok(BenchReport {
        unix_time: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        cpus: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        duration_s: cli.duration.as_secs_f64(),
        warmup_s: cli.warmup.as_secs_f64(),
        sessions: cli.sessions,
        rate: cli.rate,
        payload_bytes: cli.payload,
        modes,
        memory,
        targets,
        tessera_skipped: gateway_url.is_none(),
    })
}

fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0).then(|| a / b)
}

fn check_targets(modes: &[ModeResult], memory: Option<&Memory>) -> Vec<TargetCheck> {
    let Some(t) = modes.iter().find(|m| m.mode == "tessera") else {
        return Vec::new();
    };
    let mut checks = Vec::new();
    if let Some(r) = t.ratio_vs_bare_hop {
        checks.push(TargetCheck {
            name: "flat-out throughput vs bare hop",
            target: "≥ 0.85×".into(),
            value: format!("{r:.2}×"),
            pass: r >= 0.85,
        });
    }
    if let Some(cpu) = t.proxy_cpu_us_per_call {
        checks.push(TargetCheck {
            name: "gateway CPU per call, flat out",
            target: "≤ 35 µs".into(),
            value: format!("{cpu:.1} µs"),
            pass: cpu <= 35.0,
        });
    }
    if let (Some(p50), Some(p99)) = (t.added_p50_us, t.added_p99_us) {
        checks.push(TargetCheck {
            name: "added p50 latency at the fixed rate",
            target: "≤ 150 µs".into(),
            value: format!("{p50:.0} µs"),
            pass: p50 <= 150.0,
        });
        checks.push(TargetCheck {
            name: "added p99 latency at the fixed rate",
            target: "≤ 600 µs".into(),
            value: format!("{p99:.0} µs"),
            pass: p99 <= 600.0,
        });
    }
    if let Some(m) = memory {
        let mib = m.rss_after_kib as f64 / 1024.0;
        checks.push(TargetCheck {
            name: "RSS with idle client sessions",
            target: format!("≤ 50 MiB with {}", m.sessions),
            value: format!("{mib:.1} MiB ({} open)", m.opened),
            pass: mib <= 50.0 && m.opened == m.sessions,
        });
    }
    checks
}

fn opt(v: Option<f64>, digits: usize, suffix: &str) -> String {
    match v {
        Some(v) => format!("{v:.digits$}{suffix}"),
        None => "–".to_owned(),
    }
}

fn to_markdown(r: &BenchReport) -> String {
    let mut s = format!(
        "{} sessions, {}-byte echo, {} s measured after {} s warm-up per run, {} CPUs\n\n",
        r.sessions, r.payload_bytes, r.duration_s, r.warmup_s, r.cpus
    );
    s.push_str(&format!(
        "| mode | calls/s | vs direct | vs bare hop | p50 µs | p90 µs | p99 µs | max µs | added p50 @{0}/s | added p99 @{0}/s | proxy CPU µs/call | upstream CPU µs/call | load gen CPU µs/call | errors |\n",
        r.rate
    ));
    s.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for m in &r.modes {
        let f = &m.flat_out;
        s.push_str(&format!(
            "| {} | {:.0} | {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {} | {} | {} | {} | {} | {} |\n",
            m.mode,
            f.calls_per_s,
            opt(m.ratio_vs_direct, 2, "×"),
            opt(m.ratio_vs_bare_hop, 2, "×"),
            f.p50_us,
            f.p90_us,
            f.p99_us,
            f.max_us,
            opt(m.added_p50_us, 0, " µs"),
            opt(m.added_p99_us, 0, " µs"),
            opt(m.proxy_cpu_us_per_call, 1, ""),
            opt(m.upstream_cpu_us_per_call, 1, ""),
            opt(m.load_cpu_us_per_call, 1, ""),
            f.errors + m.fixed_rate.errors,
        ));
    }
    if r.tessera_skipped {
        s.push_str("| tessera | pending (--skip-tessera) | | | | | | | | | | | | |\n");
    }
    s.push_str(&format!(
        "\nFixed rate, {} calls/s:\n\n| mode | calls/s | p50 µs | p90 µs | p99 µs | max µs |\n|---|---|---|---|---|---|\n",
        r.rate
    ));
    for m in &r.modes {
        let f = &m.fixed_rate;
        s.push_str(&format!(
            "| {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} |\n",
            m.mode, f.calls_per_s, f.p50_us, f.p90_us, f.p99_us, f.max_us
        ));
    }
    if let Some(m) = &r.memory {
        s.push_str(&format!(
            "\nTessera RSS: {:.1} MiB before, {:.1} MiB with {} idle sessions open ({:.1} KiB per session)\n",
            m.rss_before_kib as f64 / 1024.0,
            m.rss_after_kib as f64 / 1024.0,
            m.opened,
            m.kib_per_session
        ));
        for e in &m.errors {
            s.push_str(&format!("  session error: {e}\n"));
        }
    }
    if !r.targets.is_empty() {
        s.push_str("\n| target | goal | measured | |\n|---|---|---|---|\n");
        for t in &r.targets {
            s.push_str(&format!(
                "| {} | {} | {} | {} |\n",
                t.name,
                t.target,
                t.value,
                if t.pass { "pass" } else { "FAIL" }
            ));
        }
    }
    s
}
