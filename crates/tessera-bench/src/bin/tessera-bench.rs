//! `tessera-bench`: runs the whole benchmark back to back on one upstream and prints the ratios.
//!
//! Starts `tessera-upstream http`, `tessera-bare-hop` in front of it and the Tessera gateway (unless
//! `--skip-tessera`), then for each of direct, bare hop and Tessera: a flat-out run and a fixed-rate run, with the
//! CPU per call of the proxy and of the upstream. Finally the gateway's RSS with `--idle-sessions` idle client
//! sessions. Every child process is stopped at the end, and killed if anything fails.
//!
//! Unless `--skip-brokered`, a second gateway runs with OIDC `auth` against an in-process mini identity
//! provider ([`tessera_bench::idp`]) and four entries for the same upstream: `bench` (unbrokered) and
//! `brokered`, `brokered2`, `brokered3` (`auth_broker` token exchange at the mini IdP). Two more modes are
//! measured with one caller JWT per session (`user-<i>`): **tessera-oidc** (the unbrokered entry) and
//! **tessera-brokered** (cache hit: every session's credential is obtained during the warm-up). Then the
//! cache-miss cost (first call of `--miss-users` new users, one after another) and the gateway's RSS with
//! `--memory-users` users each holding an idle upstream session on each of the three brokered servers.
//!
//! `--brokered-storage sqlite,postgres` runs that brokered part once per store, one after the other, each
//! with its own gateway and mini IdP: `sqlite` in the gateway's data directory (the default), `postgres` on a
//! throwaway cluster started for the run ([`tessera_test_pg::Cluster`]; its server processes' CPU is
//! sampled beside the gateway's). The report then compares the stores.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine as _;
use clap::{Parser, ValueEnum};
use futures::StreamExt as _;
use serde::Serialize;
use tessera_bench::child::ChildProc;
use tessera_bench::gateway::{GatewaySetup, TempDir, sibling_binary, start_tessera};
use tessera_bench::idp::MiniIdp;
use tessera_bench::load::{self, LoadConfig, LoadReport, Session};
use tessera_bench::{parse_duration, procfs};
use tessera_test_pg::Cluster;
use tokio::process::Command;

const START_TIMEOUT: Duration = Duration::from_secs(15);
const STOP_GRACE: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, ValueEnum)]
enum Output {
    Text,
    Json,
}

/// Where the brokered gateway keeps its state.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum Storage {
    /// `sqlite://<data_dir>/tessera.db` (the gateway's default).
    Sqlite,
    /// A fresh database on a throwaway PostgreSQL cluster started for the run.
    Postgres,
}

impl Storage {
    fn name(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        }
    }
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
    /// Skip the brokered part (mini IdP, OIDC gateway, tessera-oidc and tessera-brokered modes).
    #[arg(long)]
    skip_brokered: bool,
    /// New users whose first brokered call is timed one after another (cache-miss cost).
    #[arg(long, default_value_t = 200)]
    miss_users: usize,
    /// Users each holding an idle upstream session on each of the 3 brokered servers (memory).
    #[arg(long, default_value_t = 1000)]
    memory_users: usize,
    /// Stores of the brokered gateway, comma-separated: the brokered part runs once for each, in this
    /// order (`postgres` starts a throwaway PostgreSQL cluster; needs its server binaries).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "sqlite")]
    brokered_storage: Vec<Storage>,
    /// Keep the gateways' temporary directories (config, log, data) and print where they are.
    #[arg(long)]
    keep: bool,
    /// Artificial delay of the mini IdP's token endpoint.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    token_delay: Duration,
    #[arg(long, value_enum, default_value = "text")]
    output: Output,
    /// Also write the JSON report to this file.
    #[arg(long)]
    json_file: Option<PathBuf>,
}

#[derive(Serialize)]
struct ModeResult {
    mode: &'static str,
    /// The gateway's store (tessera-oidc and tessera-brokered only).
    storage: Option<Storage>,
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
    /// Of the proxy's CPU: its SQLite worker threads (`sqlx-sqlite-worker`), Tessera on SQLite only.
    proxy_sqlite_cpu_us_per_call: Option<f64>,
    /// CPU µs per call of the PostgreSQL server (postmaster and all its processes) in the flat-out run;
    /// PostgreSQL storage only.
    database_cpu_us_per_call: Option<f64>,
    /// CPU µs per call of the upstream in the flat-out run.
    upstream_cpu_us_per_call: Option<f64>,
    /// CPU µs per call of the load generator itself (this process) in the flat-out run.
    load_cpu_us_per_call: Option<f64>,
    /// tessera-brokered only: flat-out calls/s ÷ tessera-oidc's (same gateway, same callers, unbrokered entry).
    ratio_vs_unbrokered: Option<f64>,
    /// tessera-brokered only: fixed-rate p50/p99 minus tessera-oidc's.
    added_p50_vs_unbrokered_us: Option<f64>,
    added_p99_vs_unbrokered_us: Option<f64>,
    /// tessera-brokered only: token-endpoint requests at the mini IdP during the flat-out run
    /// (warm-up included) and during the fixed-rate run.
    token_requests_flat_out: Option<u64>,
    token_requests_fixed_rate: Option<u64>,
}

/// Latency summary in µs.
#[derive(Serialize, Default)]
struct Summary {
    n: usize,
    p50_us: f64,
    p90_us: f64,
    p99_us: f64,
    max_us: f64,
}

impl Summary {
    fn of(mut v: Vec<f64>) -> Self {
        if v.is_empty() {
            return Self::default();
        }
        v.sort_by(f64::total_cmp);
        let q = |p: f64| v[((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1];
        Self {
            n: v.len(),
            p50_us: q(0.5),
            p90_us: q(0.9),
            p99_us: q(0.99),
            max_us: v[v.len() - 1],
        }
    }
}

/// First calls of new users, one after another.
#[derive(Serialize)]
struct CacheMiss {
    users: usize,
    /// First call of a new user in a new session: user record, token exchange at the mini IdP,
    /// credential sealed and stored, upstream session opened, call.
    new_user_first_call: Summary,
    /// The same users again, credential cached: first call of a new session (upstream session opened).
    cached_user_first_call: Summary,
    /// The second call of that session: the steady-state cache hit.
    cached_user_second_call: Summary,
    /// Token-endpoint requests at the mini IdP during the new users' calls (should equal `users`).
    token_requests_new_users: u64,
    /// … and during the cached users' calls (should be 0).
    token_requests_cached_users: u64,
    errors: u64,
    error_samples: Vec<String>,
}

/// RSS with many users each holding idle brokered upstream sessions.
#[derive(Serialize)]
struct BrokeredMemory {
    users: usize,
    servers: usize,
    /// Client sessions opened whose three calls succeeded.
    users_ok: usize,
    /// `tessera_brokered_upstream_sessions` from `/metrics` before and while holding, if readable.
    upstream_sessions_before: Option<u64>,
    upstream_sessions_holding: Option<u64>,
    /// Open file descriptors of the gateway before and while holding.
    fds_before: Option<usize>,
    fds_holding: Option<usize>,
    rss_before_kib: u64,
    /// After phase 1 (each user's session open, one unbrokered call).
    rss_unbrokered_kib: u64,
    /// After phase 2 (plus one call on each brokered server).
    rss_after_kib: u64,
    /// (after − before) ÷ (users × servers): everything the gateway keeps per idle (user, server)
    /// session, the user's client session, cached credential and identity included.
    kib_per_user_server: f64,
    /// Phase 1 alone, per user: client session + validated identity.
    kib_per_user_unbrokered: f64,
    /// Phase 2 alone, per (user, server): upstream session, cached credential, broker's user maps.
    kib_per_user_server_brokered_only: f64,
    token_requests: u64,
    seconds_to_open: f64,
    errors: u64,
    error_samples: Vec<String>,
}

#[derive(Serialize)]
struct Memory {
    sessions: usize,
    opened: usize,
    rss_before_kib: u64,
    rss_after_kib: u64,
    kib_per_session: f64,
    /// After one `bench__echo` call in each of the open sessions.
    rss_after_call_kib: u64,
    kib_per_session_after_call: f64,
    errors: Vec<String>,
}

/// The brokered part on one store (the modes are in [`BenchReport::modes`], with their `storage`).
#[derive(Serialize)]
struct BrokeredRun {
    storage: Storage,
    cache_miss: CacheMiss,
    memory: BrokeredMemory,
    /// The OIDC gateway's broker and audit counters from `/metrics` after the brokered runs.
    broker_metrics: Vec<String>,
}

#[derive(Serialize)]
struct TargetCheck {
    name: String,
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
    /// One per `--brokered-storage`, in order.
    brokered: Vec<BrokeredRun>,
    targets: Vec<TargetCheck>,
    tessera_skipped: bool,
}

/// The processes under test; dropping it kills whatever is still running.
struct Processes {
    upstream: ChildProc,
    hop: ChildProc,
    gateway: Option<(ChildProc, TempDir)>,
    /// The gateway with OIDC `auth` and brokered servers.
    brokered: Option<(ChildProc, TempDir)>,
}

impl Processes {
    fn ensure_running(&mut self) -> Result<()> {
        self.upstream.ensure_running()?;
        self.hop.ensure_running()?;
        for (gw, dir) in [&mut self.gateway, &mut self.brokered]
            .into_iter()
            .flatten()
        {
            gw.ensure_running()
                .with_context(|| format!("see {}", dir.path.join("tessera.log").display()))?;
        }
        Ok(())
    }

    fn keep_logs(&mut self) {
        for (_, dir) in [&mut self.gateway, &mut self.brokered]
            .into_iter()
            .flatten()
        {
            dir.keep = true;
        }
    }

    async fn stop(self) -> Result<()> {
        let mut result = Ok(());
        if let Some((gw, _dir)) = self.brokered {
            result = result.and(gw.stop(STOP_GRACE).await);
        }
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
    if let Some(path) = &cli.json_file {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    match cli.output {
        Output::Text => print!("{}", to_markdown(&report)),
        Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
    }
    let errors: u64 = report
        .modes
        .iter()
        .map(|m| m.flat_out.errors + m.fixed_rate.errors)
        .sum::<u64>()
        + report
            .brokered
            .iter()
            .map(|b| b.cache_miss.errors + b.memory.errors)
            .sum::<u64>();
    if errors > 0 {
        bail!("{errors} calls failed (see the error samples above)");
    }
    Ok(())
}

/// The brokered gateway's servers: one unbrokered, three brokered (all the same upstream).
const BROKERED_SERVERS: [&str; 3] = ["brokered", "brokered2", "brokered3"];

fn plain_config(upstream_url: &str) -> impl Fn(u16, &Path) -> serde_json::Value + '_ {
    move |port, data_dir| {
        serde_json::json!({
            "listen": format!("127.0.0.1:{port}"),
            "data_dir": data_dir,
            "mcpServers": [{"name": "bench", "url": upstream_url, "protocol": "streamable-http"}],
        })
    }
}

/// OIDC `auth` against the mini IdP (callers' JWTs name `http://127.0.0.1:<port>/mcp` in `aud`),
/// `bench` unbrokered and the three brokered servers exchanging the caller's token at the mini IdP;
/// `storage` (a `postgres://` URL) instead of the default SQLite file in the data directory.
fn brokered_config<'a>(
    upstream_url: &'a str,
    issuer: &'a str,
    storage: Option<&'a str>,
) -> impl Fn(u16, &Path) -> serde_json::Value + 'a {
    move |port, data_dir| {
        let mut servers = vec![serde_json::json!(
            {"name": "bench", "url": upstream_url, "protocol": "streamable-http"}
        )];
        for name in BROKERED_SERVERS {
            servers.push(serde_json::json!({
                "name": name,
                "url": upstream_url,
                "protocol": "streamable-http",
                "auth_broker": {
                    "mode": "token_exchange",
                    "token_endpoint": format!("{issuer}/token"),
                    "client_id": "tessera",
                    "client_secret": "bench-secret",
                    "audience": "bench",
                },
            }));
        }
        let mut config = serde_json::json!({
            "listen": format!("127.0.0.1:{port}"),
            "data_dir": data_dir,
            "auth": {
                "issuer": issuer,
                "client_id": "tessera",
                "client_secret": "bench-secret",
                "resource": format!("http://127.0.0.1:{port}/mcp"),
            },
            "mcpServers": servers,
        });
        if let (Some(url), Some(object)) = (storage, config.as_object_mut()) {
            object.insert("storage".to_owned(), url.into());
        }
        config
    }
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
        brokered: None,
    };
    let mut gateway_url = None;
    if !cli.skip_tessera {
        let config = plain_config(&upstream_url);
        let (gw, dir, url) = start_tessera(
            &cli.tessera,
            GatewaySetup {
                config: &config,
                env: Vec::new(),
            },
        )
        .await?;
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
    if outcome.is_err() || cli.keep {
        procs.keep_logs();
    }
    let stopped = procs.stop().await;
    let report = outcome?;
    stopped?;
    Ok(report)
}

/// One mode to measure.
struct PlannedMode<'a> {
    mode: &'static str,
    /// The gateway's store (brokered gateway only).
    storage: Option<Storage>,
    url: String,
    tool: &'static str,
    /// The proxy (bare hop or gateway), whose CPU is sampled.
    proxy_pid: Option<u32>,
    /// Caller JWTs, one per session (round robin); empty = anonymous.
    bearers: Vec<String>,
    /// The mini IdP, whose `/token` requests are counted (brokered gateway only).
    idp: Option<&'a MiniIdp>,
    /// PostgreSQL's postmaster: the CPU of the server's processes is sampled.
    database_pid: Option<u32>,
}

impl PlannedMode<'_> {
    fn plain(mode: &'static str, url: String, tool: &'static str, proxy_pid: Option<u32>) -> Self {
        Self {
            mode,
            storage: None,
            url,
            tool,
            proxy_pid,
            bearers: Vec::new(),
            idp: None,
            database_pid: None,
        }
    }
}

/// `mode`, or `mode (store)` for the brokered gateway's modes.
fn mode_label(mode: &str, storage: Option<Storage>) -> String {
    format!("{mode}{}", store_suffix(storage))
}

/// The mini IdP and the OIDC gateway's `/mcp`.
struct Brokered {
    idp: MiniIdp,
    url: String,
}

/// Caller JWTs `<prefix>-0` … `<prefix>-<n-1>` for the OIDC gateway (RSA signing is ≈1 ms each: done
/// in batches, yielding between them so that the in-process IdP keeps answering).
async fn mint(b: &Brokered, prefix: &str, n: usize) -> Result<Vec<String>> {
    let aud = b.url.clone();
    let mut tokens = Vec::with_capacity(n);
    for chunk in (0..n).collect::<Vec<_>>().chunks(50) {
        tokens.extend(b.idp.mint_users(prefix, chunk[0], chunk.len(), &aud)?);
        tokio::task::yield_now().await;
    }
    Ok(tokens)
}

/// A flat-out run and a fixed-rate run of one mode.
async fn run_mode(cli: &Cli, procs: &mut Processes, p: PlannedMode<'_>) -> Result<ModeResult> {
    let label = mode_label(p.mode, p.storage);
    let mut cpu_pids = vec![
        ("upstream".to_owned(), procs.upstream.pid()),
        ("load generator".to_owned(), std::process::id()),
    ];
    if let Some(pid) = p.proxy_pid {
        cpu_pids.push(("proxy".to_owned(), pid));
    }
    let on_sqlite = p.storage.is_none_or(|s| s == Storage::Sqlite);
    let mut cfg = LoadConfig {
        url: p.url.clone(),
        sessions: cli.sessions,
        duration: cli.duration,
        warmup: cli.warmup,
        rate: None,
        tool: p.tool.to_owned(),
        payload: cli.payload,
        cpu_pids,
        cpu_threads: match p.proxy_pid {
            Some(pid) if p.mode.starts_with("tessera") && on_sqlite => {
                vec![("proxy sqlite".to_owned(), pid, "sqlx-sqlite".to_owned())]
            }
            _ => Vec::new(),
        },
        cpu_families: p
            .database_pid
            .map(|pid| vec![("database".to_owned(), pid)])
            .unwrap_or_default(),
        bearers: p.bearers,
    };
    let token_requests = || p.idp.map(MiniIdp::token_requests);
    let before = token_requests();
    eprintln!(
        "{label}: flat out for {:?} (+{:?} warm-up)…",
        cli.duration, cli.warmup
    );
    let flat_out = load::run(&cfg)
        .await
        .with_context(|| format!("{label}: flat-out run"))?;
    procs.ensure_running()?;
    let after_flat = token_requests();
    cfg.rate = Some(cli.rate);
    eprintln!("{label}: {} calls/s for {:?}…", cli.rate, cli.duration);
    let fixed_rate = load::run(&cfg)
        .await
        .with_context(|| format!("{label}: fixed-rate run"))?;
    procs.ensure_running()?;
    let after_fixed = token_requests();
    let brokered_mode = p.mode == "tessera-brokered";
    let delta = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (Some(a), Some(b)) if brokered_mode => Some(b - a),
        _ => None,
    };
    for (run, report) in [("flat out", &flat_out), ("fixed rate", &fixed_rate)] {
        for e in &report.error_samples {
            eprintln!("{label} {run}: error: {e}");
        }
    }
    Ok(ModeResult {
        mode: p.mode,
        storage: p.storage,
        url: p.url,
        tool: p.tool.to_owned(),
        proxy_cpu_us_per_call: flat_out.cpu_of("proxy"),
        proxy_sqlite_cpu_us_per_call: flat_out.cpu_of("proxy sqlite"),
        database_cpu_us_per_call: flat_out.cpu_of("database"),
        upstream_cpu_us_per_call: flat_out.cpu_of("upstream"),
        load_cpu_us_per_call: flat_out.cpu_of("load generator"),
        flat_out,
        fixed_rate,
        ratio_vs_direct: None,
        ratio_vs_bare_hop: None,
        added_p50_us: None,
        added_p99_us: None,
        ratio_vs_unbrokered: None,
        added_p50_vs_unbrokered_us: None,
        added_p99_vs_unbrokered_us: None,
        token_requests_flat_out: delta(before, after_flat),
        token_requests_fixed_rate: delta(after_flat, after_fixed),
    })
}

/// A throwaway PostgreSQL cluster with one fresh database: (cluster, database URL, postmaster PID).
async fn start_postgres() -> Result<(Arc<Cluster>, String, u32)> {
    // `Cluster` is test tooling: it panics (after printing PostgreSQL's output) when something fails.
    let cluster = tokio::task::spawn_blocking(Cluster::start)
        .await
        .map_err(|e| anyhow!("starting a PostgreSQL cluster failed: {e}"))?;
    let cluster = Arc::new(cluster);
    let database = tokio::spawn({
        let cluster = Arc::clone(&cluster);
        async move { cluster.database().await }
    })
    .await
    .map_err(|e| anyhow!("creating a database on the PostgreSQL cluster failed: {e}"))?;
    // The postmaster is started as `postgres -D <data> -p <port> …`; its children rename themselves.
    let port = cluster.port().to_string();
    let pid = procfs::find_process(|args| {
        args.first().is_some_and(|a| a.ends_with("postgres"))
            && args.windows(2).any(|w| w[0] == "-p" && w[1] == port)
    })
    .context("listing /proc")?
    .ok_or_else(|| anyhow!("PostgreSQL's postmaster (port {port}) not found in /proc"))?;
    Ok((cluster, database, pid))
}

/// The brokered part on one store: a mini IdP and a gateway with OIDC `auth` and brokered servers (its
/// store on a throwaway PostgreSQL cluster for `postgres`); modes tessera-oidc and tessera-brokered
/// (appended to `modes`), the cache-miss cost and the memory per brokered session. The gateway and the
/// cluster are stopped afterwards.
async fn measure_brokered(
    cli: &Cli,
    procs: &mut Processes,
    upstream_url: &str,
    storage: Storage,
    modes: &mut Vec<ModeResult>,
) -> Result<BrokeredRun> {
    let postgres = match storage {
        Storage::Sqlite => None,
        Storage::Postgres => {
            eprintln!("postgres: starting a throwaway cluster…");
            Some(start_postgres().await?)
        }
    };
    let database_url = postgres.as_ref().map(|(_, url, _)| url.clone());
    let database_pid = postgres.as_ref().map(|(_, _, pid)| *pid);
    let idp = MiniIdp::start("127.0.0.1:0".parse()?, cli.token_delay).await?;
    let issuer = idp.issuer().to_owned();
    let config = brokered_config(upstream_url, &issuer, database_url.as_deref());
    let sealing_key =
        base64::engine::general_purpose::STANDARD.encode(tessera_bench::idp::random_bytes::<32>()?);
    let (gw, dir, url) = start_tessera(
        &cli.tessera,
        GatewaySetup {
            config: &config,
            env: vec![("TESSERA_SEALING_KEY", sealing_key)],
        },
    )
    .await?;
    let pid = gw.pid();
    procs.brokered = Some((gw, dir));
    let b = Brokered { idp, url };

    // One user per session: user-0 … user-<sessions-1>.
    let callers = mint(&b, "user", cli.sessions).await?;
    for (mode, tool) in [
        ("tessera-oidc", "bench__echo"),
        ("tessera-brokered", "brokered__echo"),
    ] {
        let planned = PlannedMode {
            mode,
            storage: Some(storage),
            url: b.url.clone(),
            tool,
            proxy_pid: Some(pid),
            bearers: callers.clone(),
            idp: Some(&b.idp),
            database_pid,
        };
        modes.push(run_mode(cli, procs, planned).await?);
    }

    let label = mode_label("tessera-brokered", Some(storage));
    let broker_metrics = broker_counters(&b.url).await;
    eprintln!(
        "{label}: first calls of {} new users, one at a time…",
        cli.miss_users
    );
    let cache_miss = measure_misses(cli, &b).await?;
    procs.ensure_running()?;
    eprintln!(
        "{label}: {} users × {} brokered servers holding idle upstream sessions…",
        cli.memory_users,
        BROKERED_SERVERS.len()
    );
    let memory = measure_brokered_memory(cli, &b, pid).await?;
    procs.ensure_running()?;

    if let Some((gw, mut dir)) = procs.brokered.take() {
        let stopped = gw.stop(STOP_GRACE).await;
        dir.keep = cli.keep || stopped.is_err();
        stopped?;
    }
    if let Some((cluster, _, _)) = postgres {
        // Stopping the cluster waits for `pg_ctl stop`.
        let _ = tokio::task::spawn_blocking(move || drop(cluster)).await;
    }
    Ok(BrokeredRun {
        storage,
        cache_miss,
        memory,
        broker_metrics,
    })
}

async fn measure(
    cli: &Cli,
    procs: &mut Processes,
    upstream_url: &str,
    hop_url: &str,
    gateway_url: Option<&str>,
) -> Result<BenchReport> {
    let mut plan = vec![
        PlannedMode::plain("direct", upstream_url.to_owned(), "echo", None),
        PlannedMode::plain(
            "bare hop",
            format!("{hop_url}/mcp"),
            "echo",
            Some(procs.hop.pid()),
        ),
    ];
    if let (Some(url), Some((gw, _))) = (gateway_url, &procs.gateway) {
        plan.push(PlannedMode::plain(
            "tessera",
            url.to_owned(),
            "bench__echo",
            Some(gw.pid()),
        ));
    }
    let mut modes: Vec<ModeResult> = Vec::new();
    for planned in plan {
        modes.push(run_mode(cli, procs, planned).await?);
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
        let message = load::message_of(cli.payload);
        let calls: Vec<Result<(), String>> = futures::stream::iter(sessions.iter())
            .map(|s| s.call_tool(1, "bench__echo", &message))
            .buffer_unordered(32)
            .collect()
            .await;
        errors.extend(calls.into_iter().filter_map(Result::err));
        tokio::time::sleep(Duration::from_millis(500)).await;
        let rss_after_call_kib = procfs::rss_kib(pid)?;
        errors.extend(load::close_sessions(sessions, 32).await);
        errors.truncate(load::MAX_ERROR_SAMPLES);
        memory = Some(Memory {
            sessions: cli.idle_sessions,
            opened,
            rss_before_kib,
            rss_after_kib,
            kib_per_session: (rss_after_kib as f64 - rss_before_kib as f64) / opened.max(1) as f64,
            rss_after_call_kib,
            kib_per_session_after_call: (rss_after_call_kib as f64 - rss_before_kib as f64)
                / opened.max(1) as f64,
            errors,
        });
        procs.ensure_running()?;
    }

    let mut brokered = Vec::new();
    if gateway_url.is_some() && !cli.skip_brokered {
        let mut storages: Vec<Storage> = Vec::new();
        for s in &cli.brokered_storage {
            if !storages.contains(s) {
                storages.push(*s);
            }
        }
        for storage in storages {
            brokered.push(measure_brokered(cli, procs, upstream_url, storage, &mut modes).await?);
        }
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
    // Brokered ÷ unbrokered on the same gateway (same store).
    let unbrokered: Vec<(Option<Storage>, f64, f64, f64)> = modes
        .iter()
        .filter(|m| m.mode == "tessera-oidc")
        .map(|m| {
            (
                m.storage,
                m.flat_out.calls_per_s,
                m.fixed_rate.p50_us,
                m.fixed_rate.p99_us,
            )
        })
        .collect();
    for m in modes.iter_mut().filter(|m| m.mode == "tessera-brokered") {
        if let Some(&(_, calls, p50, p99)) = unbrokered.iter().find(|u| u.0 == m.storage) {
            m.ratio_vs_unbrokered = ratio(m.flat_out.calls_per_s, calls);
            m.added_p50_vs_unbrokered_us = Some(m.fixed_rate.p50_us - p50);
            m.added_p99_vs_unbrokered_us = Some(m.fixed_rate.p99_us - p99);
        }
    }

    let targets = check_targets(&modes, memory.as_ref(), &brokered);
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
        brokered,
        targets,
        tessera_skipped: gateway_url.is_none(),
    })
}

fn micros_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e6
}

/// New users one after another: open a session (not timed), time the first brokered call (a
/// credential miss); then the same users again in new sessions: the first call (credential cached,
/// upstream session opened) and the second (steady-state hit).
async fn measure_misses(cli: &Cli, b: &Brokered) -> Result<CacheMiss> {
    let tokens = mint(b, "miss-user", cli.miss_users).await?;
    let client = load::http_client(4)?;
    let url = reqwest::Url::parse(&b.url)?;
    let message = load::message_of(cli.payload);
    let tool = "brokered__echo";
    let mut errors = 0u64;
    let mut samples = Vec::new();
    let mut error = |e: String| {
        errors += 1;
        if samples.len() < load::MAX_ERROR_SAMPLES {
            samples.push(e);
        }
    };

    let before = b.idp.token_requests();
    let mut new_user = Vec::with_capacity(tokens.len());
    for token in &tokens {
        let session = match Session::open_as(&client, &url, Some(token)).await {
            Ok(s) => s,
            Err(e) => {
                error(e);
                continue;
            }
        };
        let t = Instant::now();
        match session.call_tool(1, tool, &message).await {
            Ok(()) => new_user.push(micros_since(t)),
            Err(e) => error(e),
        }
        if let Err(e) = session.close().await {
            error(e);
        }
    }
    let middle = b.idp.token_requests();

    let mut first = Vec::with_capacity(tokens.len());
    let mut second = Vec::with_capacity(tokens.len());
    for token in &tokens {
        let session = match Session::open_as(&client, &url, Some(token)).await {
            Ok(s) => s,
            Err(e) => {
                error(e);
                continue;
            }
        };
        let t = Instant::now();
        match session.call_tool(1, tool, &message).await {
            Ok(()) => first.push(micros_since(t)),
            Err(e) => error(e),
        }
        let t = Instant::now();
        match session.call_tool(2, tool, &message).await {
            Ok(()) => second.push(micros_since(t)),
            Err(e) => error(e),
        }
        if let Err(e) = session.close().await {
            error(e);
        }
    }
    let after = b.idp.token_requests();
    Ok(CacheMiss {
        users: tokens.len(),
        new_user_first_call: Summary::of(new_user),
        cached_user_first_call: Summary::of(first),
        cached_user_second_call: Summary::of(second),
        token_requests_new_users: middle - before,
        token_requests_cached_users: after - middle,
        errors,
        error_samples: samples,
    })
}

/// The broker's cache, acquisition and audit counters from the gateway's `/metrics` (empty if
/// unreadable or absent).
async fn broker_counters(mcp_url: &str) -> Vec<String> {
    let Ok(client) = load::http_client(1) else {
        return Vec::new();
    };
    let Some(text) = metrics_text(&client, mcp_url).await else {
        return Vec::new();
    };
    text.lines()
        .filter(|l| {
            l.starts_with("tessera_broker_cache")
                || l.starts_with("tessera_broker_acquisitions_total")
                || l.starts_with("tessera_broker_coalesced")
                || l.starts_with("tessera_audit_")
                || l.starts_with("tessera_brokered_upstream_sessions")
        })
        .map(str::to_owned)
        .collect()
}

async fn metrics_text(client: &reqwest::Client, mcp_url: &str) -> Option<String> {
    let base = mcp_url.strip_suffix("/mcp")?;
    client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .ok()?
        .error_for_status()
        .ok()?
        .text()
        .await
        .ok()
}

/// `tessera_brokered_upstream_sessions` from the gateway's `/metrics`, if it can be read.
async fn brokered_sessions_gauge(client: &reqwest::Client, mcp_url: &str) -> Option<u64> {
    let base = mcp_url.strip_suffix("/mcp")?;
    let text = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .ok()?
        .error_for_status()
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("tessera_brokered_upstream_sessions "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
}

/// Open file descriptors of `pid` (sockets included).
fn open_fds(pid: u32) -> Option<usize> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()
        .map(|d| d.count())
}

/// `--memory-users` new users, 32 at a time. Phase 1: each opens a session and calls the unbrokered
/// `bench__echo` (client session, validated identity; no broker state). Phase 2: in the same sessions,
/// one call on each brokered server, so that the per-(user, server) upstream sessions (and the
/// cached credentials) exist. RSS is read before, after phase 1 and after phase 2 while everything is
/// held; then the sessions are DELETEd.
async fn measure_brokered_memory(cli: &Cli, b: &Brokered, pid: u32) -> Result<BrokeredMemory> {
    let tokens = mint(b, "mem-user", cli.memory_users).await?;
    let client = load::http_client(64)?;
    let url = reqwest::Url::parse(&b.url)?;
    let message = load::message_of(cli.payload);
    let sessions_before = brokered_sessions_gauge(&client, &b.url).await;
    let token_requests_before = b.idp.token_requests();
    let fds_before = open_fds(pid);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before_kib = procfs::rss_kib(pid)?;
    let mut errors = 0u64;
    let mut samples = Vec::new();
    let mut error = |e: String| {
        errors += 1;
        if samples.len() < load::MAX_ERROR_SAMPLES {
            samples.push(e);
        }
    };

    let opened: Vec<Result<Session, String>> = futures::stream::iter(tokens.iter())
        .map(|token| {
            let (client, url, message) = (&client, &url, &message);
            async move {
                let session = Session::open_as(client, url, Some(token)).await?;
                if let Err(e) = session.call_tool(1, "bench__echo", message).await {
                    let _ = session.close().await;
                    return Err(e);
                }
                Ok(session)
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    let mut sessions = Vec::new();
    for r in opened {
        match r {
            Ok(s) => sessions.push(s),
            Err(e) => error(e),
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_unbrokered_kib = procfs::rss_kib(pid)?;

    let started = Instant::now();
    let brokered: Vec<Result<(), String>> = futures::stream::iter(sessions.iter())
        .map(|session| {
            let message = &message;
            async move {
                for (i, server) in BROKERED_SERVERS.iter().enumerate() {
                    let tool = format!("{server}__echo");
                    session.call_tool(i as u64 + 2, &tool, message).await?;
                }
                Ok(())
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    let seconds_to_open = started.elapsed().as_secs_f64();
    let mut users_ok = 0;
    for r in brokered {
        match r {
            Ok(()) => users_ok += 1,
            Err(e) => error(e),
        }
    }
    // Let the audit queue and the store settle before reading RSS.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_after_kib = procfs::rss_kib(pid)?;
    let fds_holding = open_fds(pid);
    let sessions_holding = brokered_sessions_gauge(&client, &b.url).await;
    let token_requests = b.idp.token_requests() - token_requests_before;
    for e in load::close_sessions(sessions, 32).await {
        error(e);
    }
    let pairs = (users_ok * BROKERED_SERVERS.len()).max(1) as f64;
    Ok(BrokeredMemory {
        users: tokens.len(),
        servers: BROKERED_SERVERS.len(),
        users_ok,
        upstream_sessions_before: sessions_before,
        upstream_sessions_holding: sessions_holding,
        fds_before,
        fds_holding,
        rss_before_kib,
        rss_unbrokered_kib,
        rss_after_kib,
        kib_per_user_server: (rss_after_kib as f64 - rss_before_kib as f64) / pairs,
        kib_per_user_unbrokered: (rss_unbrokered_kib as f64 - rss_before_kib as f64)
            / users_ok.max(1) as f64,
        kib_per_user_server_brokered_only: (rss_after_kib as f64 - rss_unbrokered_kib as f64)
            / pairs,
        token_requests,
        seconds_to_open,
        errors,
        error_samples: samples,
    })
}

fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0).then(|| a / b)
}

fn check_targets(
    modes: &[ModeResult],
    memory: Option<&Memory>,
    brokered: &[BrokeredRun],
) -> Vec<TargetCheck> {
    let mut checks = Vec::new();
    for m in modes.iter().filter(|m| m.mode == "tessera-brokered") {
        if let Some(r) = m.ratio_vs_unbrokered {
            checks.push(TargetCheck {
                name: format!(
                    "brokered (cache hit) flat-out throughput vs unbrokered{}",
                    store_suffix(m.storage)
                ),
                target: "≥ 0.95×".into(),
                value: format!("{r:.3}×"),
                pass: r >= 0.95,
            });
        }
    }
    for b in brokered {
        let suffix = store_suffix(Some(b.storage));
        let m = &b.memory;
        checks.push(TargetCheck {
            name: format!("gateway memory per idle brokered (user, server) session{suffix}"),
            target: "≤ 20 KiB".into(),
            value: format!(
                "{:.1} KiB ({} × {} held)",
                m.kib_per_user_server, m.users_ok, m.servers
            ),
            pass: m.kib_per_user_server <= 20.0 && m.users_ok == m.users,
        });
        let m = &b.cache_miss;
        checks.push(TargetCheck {
            name: format!("token requests for new users (one each), none for cached ones{suffix}"),
            target: format!("{} + 0", m.users),
            value: format!(
                "{} + {}",
                m.token_requests_new_users, m.token_requests_cached_users
            ),
            pass: m.token_requests_new_users == m.users as u64
                && m.token_requests_cached_users == 0
                && m.errors == 0,
        });
    }
    let Some(t) = modes.iter().find(|m| m.mode == "tessera") else {
        return checks;
    };
    if let Some(r) = t.ratio_vs_bare_hop {
        checks.push(TargetCheck {
            name: "flat-out throughput vs bare hop".into(),
            target: "≥ 0.85×".into(),
            value: format!("{r:.2}×"),
            pass: r >= 0.85,
        });
    }
    if let Some(cpu) = t.proxy_cpu_us_per_call {
        checks.push(TargetCheck {
            name: "gateway CPU per call, flat out".into(),
            target: "≤ 35 µs".into(),
            value: format!("{cpu:.1} µs"),
            pass: cpu <= 35.0,
        });
    }
    if let (Some(p50), Some(p99)) = (t.added_p50_us, t.added_p99_us) {
        checks.push(TargetCheck {
            name: "added p50 latency at the fixed rate".into(),
            target: "≤ 150 µs".into(),
            value: format!("{p50:.0} µs"),
            pass: p50 <= 150.0,
        });
        checks.push(TargetCheck {
            name: "added p99 latency at the fixed rate".into(),
            target: "≤ 600 µs".into(),
            value: format!("{p99:.0} µs"),
            pass: p99 <= 600.0,
        });
    }
    if let Some(m) = memory {
        let mib = m.rss_after_kib as f64 / 1024.0;
        checks.push(TargetCheck {
            name: "RSS with idle client sessions".into(),
            target: format!("≤ 50 MiB with {}", m.sessions),
            value: format!("{mib:.1} MiB ({} open)", m.opened),
            pass: mib <= 50.0 && m.opened == m.sessions,
        });
    }
    checks
}

/// ` (sqlite)` / ` (postgres)`, or nothing.
fn store_suffix(storage: Option<Storage>) -> String {
    storage.map_or_else(String::new, |s| format!(" ({})", s.name()))
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
            mode_label(m.mode, m.storage),
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
            mode_label(m.mode, m.storage),
            f.calls_per_s,
            f.p50_us,
            f.p90_us,
            f.p99_us,
            f.max_us
        ));
    }
    if let Some(m) = &r.memory {
        s.push_str(&format!(
            "\nTessera RSS: {:.1} MiB before, {:.1} MiB with {} idle sessions open ({:.1} KiB per session), \
             {:.1} MiB after one call in each ({:.1} KiB per session)\n",
            m.rss_before_kib as f64 / 1024.0,
            m.rss_after_kib as f64 / 1024.0,
            m.opened,
            m.kib_per_session,
            m.rss_after_call_kib as f64 / 1024.0,
            m.kib_per_session_after_call,
        ));
        for e in &m.errors {
            s.push_str(&format!("  session error: {e}\n"));
        }
    }
    for run in &r.brokered {
        brokered_markdown(&mut s, r, run);
    }
    if !r.brokered.is_empty() {
        stores_markdown(&mut s, r);
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

/// `a ÷ b` when both are known.
fn div(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => ratio(a, b),
        _ => None,
    }
}

/// The brokered part on one store: brokered vs unbrokered, broker counters, cache miss, memory.
fn brokered_markdown(s: &mut String, r: &BenchReport, run: &BrokeredRun) {
    let store = run.storage.name();
    let find = |mode: &str| {
        r.modes
            .iter()
            .find(|m| m.mode == mode && m.storage == Some(run.storage))
    };
    if let (Some(u), Some(b)) = (find("tessera-oidc"), find("tessera-brokered")) {
        s.push_str(&format!(
            "\nBrokered (cache hit) vs unbrokered, same gateway (OIDC auth, store: {store}) and callers (one user per session):\n\n\
             | | tessera-oidc (unbrokered) | tessera-brokered (cache hit) | brokered ÷ unbrokered |\n|---|---|---|---|\n",
        ));
        s.push_str(&format!(
            "| calls/s flat out | {:.0} | {:.0} | {} |\n",
            u.flat_out.calls_per_s,
            b.flat_out.calls_per_s,
            opt(b.ratio_vs_unbrokered, 3, "×")
        ));
        s.push_str(&format!(
            "| gateway CPU µs/call | {} | {} | {} |\n",
            opt(u.proxy_cpu_us_per_call, 1, ""),
            opt(b.proxy_cpu_us_per_call, 1, ""),
            opt(
                div(b.proxy_cpu_us_per_call, u.proxy_cpu_us_per_call),
                2,
                "×"
            )
        ));
        match run.storage {
            Storage::Sqlite => s.push_str(&format!(
                "| of which SQLite worker threads | {} | {} | |\n",
                opt(u.proxy_sqlite_cpu_us_per_call, 1, ""),
                opt(b.proxy_sqlite_cpu_us_per_call, 1, ""),
            )),
            Storage::Postgres => s.push_str(&format!(
                "| PostgreSQL server CPU µs/call (all its processes) | {} | {} | |\n",
                opt(u.database_cpu_us_per_call, 1, ""),
                opt(b.database_cpu_us_per_call, 1, ""),
            )),
        }
        s.push_str(&format!(
            "| p50 / p99 at {} calls/s, µs | {:.0} / {:.0} | {:.0} / {:.0} | {} / {} added |\n",
            r.rate,
            u.fixed_rate.p50_us,
            u.fixed_rate.p99_us,
            b.fixed_rate.p50_us,
            b.fixed_rate.p99_us,
            opt(b.added_p50_vs_unbrokered_us, 0, " µs"),
            opt(b.added_p99_vs_unbrokered_us, 0, " µs"),
        ));
        s.push_str(&format!(
            "| added p50 / p99 vs direct at {} calls/s | {} / {} | {} / {} | |\n",
            r.rate,
            opt(u.added_p50_us, 0, " µs"),
            opt(u.added_p99_us, 0, " µs"),
            opt(b.added_p50_us, 0, " µs"),
            opt(b.added_p99_us, 0, " µs"),
        ));
        s.push_str(&format!(
            "\nToken requests at the mini IdP during the brokered runs: flat out (warm-up included) {}, fixed rate {}\n",
            b.token_requests_flat_out
                .map_or_else(|| "–".to_owned(), |n| n.to_string()),
            b.token_requests_fixed_rate
                .map_or_else(|| "–".to_owned(), |n| n.to_string()),
        ));
    }
    if !run.broker_metrics.is_empty() {
        s.push_str(&format!(
            "\nBroker and audit counters after the brokered runs ({store}, `/metrics`):\n\n```\n"
        ));
        for l in &run.broker_metrics {
            s.push_str(l);
            s.push('\n');
        }
        s.push_str("```\n");
    }
    let c = &run.cache_miss;
    s.push_str(&format!(
        "\nCache miss ({store}), {} new users one after another (µs):\n\n| call | n | p50 | p90 | p99 | max |\n|---|---|---|---|---|---|\n",
        c.users
    ));
    for (name, x) in [
        (
            "new user, first call (token exchange)",
            &c.new_user_first_call,
        ),
        (
            "cached user, first call of a new session",
            &c.cached_user_first_call,
        ),
        ("cached user, second call", &c.cached_user_second_call),
    ] {
        s.push_str(&format!(
            "| {name} | {} | {:.0} | {:.0} | {:.0} | {:.0} |\n",
            x.n, x.p50_us, x.p90_us, x.p99_us, x.max_us
        ));
    }
    s.push_str(&format!(
        "\nToken requests at the mini IdP: {} for the new users, {} for the cached ones; {} errors\n",
        c.token_requests_new_users, c.token_requests_cached_users, c.errors
    ));
    for e in &c.error_samples {
        s.push_str(&format!("  error: {e}\n"));
    }
    let m = &run.memory;
    s.push_str(&format!(
        "\nBrokered memory ({store}): {} users × {} servers ({} users held all three; brokered calls took {:.1} s): RSS {:.1} MiB → \
         {:.1} MiB with each user's session open after one unbrokered call ({:.1} KiB per user) → {:.1} MiB after one call on \
         each brokered server ({:.1} KiB per (user, server) for this step); all in: {:.1} KiB per (user, server); \
         open fds {} → {}; brokered upstream sessions (/metrics) {} → {}; {} token requests; {} errors\n",
        m.users,
        m.servers,
        m.users_ok,
        m.seconds_to_open,
        m.rss_before_kib as f64 / 1024.0,
        m.rss_unbrokered_kib as f64 / 1024.0,
        m.kib_per_user_unbrokered,
        m.rss_after_kib as f64 / 1024.0,
        m.kib_per_user_server_brokered_only,
        m.kib_per_user_server,
        m.fds_before.map_or_else(|| "?".to_owned(), |n| n.to_string()),
        m.fds_holding.map_or_else(|| "?".to_owned(), |n| n.to_string()),
        m.upstream_sessions_before
            .map_or_else(|| "?".to_owned(), |n| n.to_string()),
        m.upstream_sessions_holding
            .map_or_else(|| "?".to_owned(), |n| n.to_string()),
        m.token_requests,
        m.errors
    ));
    for e in &m.error_samples {
        s.push_str(&format!("  error: {e}\n"));
    }
}

/// One row of the comparison of stores.
struct StoreRow {
    unbrokered: Option<f64>,
    brokered: Option<f64>,
    ratio_vs_unbrokered: Option<f64>,
    gateway_cpu: Option<f64>,
    /// PostgreSQL's server processes (the SQLite threads are inside the gateway).
    server_cpu: Option<f64>,
    total_cpu: Option<f64>,
    miss_p50: f64,
    miss_p90: f64,
    /// New user's first call − cached user's first call, p50.
    miss_cost_p50: f64,
}

/// The brokered part side by side for each store, and PostgreSQL ÷ SQLite when both ran.
fn stores_markdown(s: &mut String, r: &BenchReport) {
    let rows: Vec<(Storage, StoreRow)> = r
        .brokered
        .iter()
        .map(|run| {
            let find = |mode: &str| {
                r.modes
                    .iter()
                    .find(|m| m.mode == mode && m.storage == Some(run.storage))
            };
            let (u, b) = (find("tessera-oidc"), find("tessera-brokered"));
            let gateway_cpu = b.and_then(|b| b.proxy_cpu_us_per_call);
            let server_cpu = b.and_then(|b| b.database_cpu_us_per_call);
            let c = &run.cache_miss;
            (
                run.storage,
                StoreRow {
                    unbrokered: u.map(|u| u.flat_out.calls_per_s),
                    brokered: b.map(|b| b.flat_out.calls_per_s),
                    ratio_vs_unbrokered: b.and_then(|b| b.ratio_vs_unbrokered),
                    gateway_cpu,
                    server_cpu,
                    total_cpu: gateway_cpu.map(|g| g + server_cpu.unwrap_or(0.0)),
                    miss_p50: c.new_user_first_call.p50_us,
                    miss_p90: c.new_user_first_call.p90_us,
                    miss_cost_p50: c.new_user_first_call.p50_us - c.cached_user_first_call.p50_us,
                },
            )
        })
        .collect();
    s.push_str(&format!(
        "\nBrokered calls by store (flat out, {} callers; the gateway's CPU includes its SQLite threads; \
         cache miss = a new user's first call):\n\n\
         | store | unbrokered calls/s | brokered cache-hit calls/s | ÷ unbrokered (same run) | gateway CPU µs/call \
         | + PostgreSQL server CPU µs/call | = CPU µs/call | cache miss p50 / p90 µs | miss − cached first call, p50 µs |\n\
         |---|---|---|---|---|---|---|---|---|\n",
        r.sessions
    ));
    for (storage, row) in &rows {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {:.0} / {:.0} | {:.0} |\n",
            storage.name(),
            opt(row.unbrokered, 0, ""),
            opt(row.brokered, 0, ""),
            opt(row.ratio_vs_unbrokered, 3, "×"),
            opt(row.gateway_cpu, 1, ""),
            opt(row.server_cpu, 1, ""),
            opt(row.total_cpu, 1, ""),
            row.miss_p50,
            row.miss_p90,
            row.miss_cost_p50,
        ));
    }
    let of = |storage: Storage| rows.iter().find(|(s, _)| *s == storage).map(|(_, r)| r);
    if let (Some(pg), Some(lite)) = (of(Storage::Postgres), of(Storage::Sqlite)) {
        s.push_str(&format!(
            "| postgres ÷ sqlite | {} | {} | {} | {} | | {} | {} / {} | {} |\n",
            opt(div(pg.unbrokered, lite.unbrokered), 3, "×"),
            opt(div(pg.brokered, lite.brokered), 3, "×"),
            opt(
                div(pg.ratio_vs_unbrokered, lite.ratio_vs_unbrokered),
                3,
                "×"
            ),
            opt(div(pg.gateway_cpu, lite.gateway_cpu), 2, "×"),
            opt(div(pg.total_cpu, lite.total_cpu), 2, "×"),
            opt(ratio(pg.miss_p50, lite.miss_p50), 2, "×"),
            opt(ratio(pg.miss_p90, lite.miss_p90), 2, "×"),
            opt(ratio(pg.miss_cost_p50, lite.miss_cost_p50), 2, "×"),
        ));
    }
}
