//! `tessera-search-bench`: what a `retrieve_tools` search costs through the gateway, side by side with the
//! direct proxied path in the same run.
//!
//! Starts `tessera-upstream corpus` (the 12 servers of `tests/data/tool-corpus.json`, 539 tools, server `S` at
//! `/S/mcp`) and `tessera serve` with `"auth": "none"`, those 12 servers and `"tools_limit": 5`; waits until
//! `/readyz` reports every server ready with its tools. Then one MCP session at `/mcp/call` (the search tools)
//! and one at `/mcp/all` (every tool), and:
//!
//! 1. the top-5 hit rate of the 97 queries of `tests/data/tool-queries.json` through the gateway (the first of
//!    these searches builds the search index of every catalogue, and is reported on its own);
//! 2. for `--warmup` unmeasured and then `--duration` measured, one request at a time (latency, not
//!    throughput), round robin in each of the 24 orders in turn: `retrieve_tools` (limit 5, cycling through the queries) at `/mcp/call`; a direct
//!    `tools/call` of `github__get_issue` at `/mcp/all`; the same call through `call_tool` at `/mcp/call`; and
//!    `tools/list` at `/mcp/all`, every page (what an agent would otherwise load into its context).
//!
//! Every answer is checked; any failed request ends the run with an error. The child processes are stopped at
//! the end (SIGTERM, then SIGKILL) and killed on error.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail, ensure};
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tessera_bench::child::ChildProc;
use tessera_bench::gateway::{GatewaySetup, sibling_binary, start_tessera};
use tessera_bench::load::{self, Session};
use tessera_bench::upstream::corpus::Corpus;
use tessera_bench::{parse_duration, procfs};
use tokio::process::Command;

const QUERIES_JSON: &str = include_str!("../../../../tests/data/tool-queries.json");
const START_TIMEOUT: Duration = Duration::from_secs(15);
const STOP_GRACE: Duration = Duration::from_secs(5);
/// `tools_limit` of the gateway, and the `limit` of every search.
const LIMIT: usize = 5;
/// The corpus tool called directly (through `/mcp/all`) and through `call_tool`.
const DIRECT_TOOL: &str = "github__get_issue";
const DIRECT_TEXT: &str = "github get_issue: done";

#[derive(Clone, Copy, ValueEnum)]
enum Output {
    Text,
    Json,
}

#[derive(Parser)]
#[command(
    version,
    about = "retrieve_tools vs a direct tools/call vs tools/list through the gateway: latency and bytes"
)]
struct Cli {
    /// Measured time.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Unmeasured warm-up before it.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    warmup: Duration,
    /// The gateway binary (falls back to `tessera` beside this binary when the path does not exist).
    #[arg(long, default_value = "target/release/tessera")]
    tessera: PathBuf,
    /// Keep the gateway's temporary directory (config, log, data) and print where it is.
    #[arg(long)]
    keep: bool,
    #[arg(long, value_enum, default_value = "text")]
    output: Output,
}

#[derive(Deserialize)]
struct Query {
    query: String,
    expected: String,
}

/// Latency and answer size of one kind of request.
#[derive(Serialize)]
struct OpStats {
    op: &'static str,
    endpoint: &'static str,
    requests: u64,
    p50_us: f64,
    p90_us: f64,
    p99_us: f64,
    max_us: f64,
    mean_us: f64,
    /// Mean HTTP response body bytes per request (all pages together for `tools/list`).
    mean_bytes: f64,
    #[serde(skip)]
    histogram: Histogram<u64>,
    #[serde(skip)]
    bytes: u64,
}

impl OpStats {
    fn new(op: &'static str, endpoint: &'static str) -> Result<Self> {
        Ok(Self {
            op,
            endpoint,
            requests: 0,
            p50_us: 0.0,
            p90_us: 0.0,
            p99_us: 0.0,
            max_us: 0.0,
            mean_us: 0.0,
            mean_bytes: 0.0,
            histogram: load::new_histogram()?,
            bytes: 0,
        })
    }

    fn record(&mut self, took: Duration, bytes: usize) {
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX).max(1);
        self.histogram.saturating_record(micros);
        self.requests += 1;
        self.bytes += bytes as u64;
    }

    fn finish(&mut self) {
        let h = &self.histogram;
        if h.is_empty() {
            return;
        }
        self.p50_us = h.value_at_quantile(0.5) as f64;
        self.p90_us = h.value_at_quantile(0.9) as f64;
        self.p99_us = h.value_at_quantile(0.99) as f64;
        self.max_us = h.max() as f64;
        self.mean_us = h.mean();
        self.mean_bytes = self.bytes as f64 / self.requests as f64;
    }
}

#[derive(Serialize)]
struct HitRate {
    queries: usize,
    hits: usize,
    /// Hits at rank 1.
    top1: usize,
    rate: f64,
    /// The queries whose expected tool was not among the results: (query, expected, returned names).
    misses: Vec<(String, String, Vec<String>)>,
}

#[derive(Serialize)]
struct Ratios {
    /// `retrieve_tools` p50 ÷ direct `tools/call` p50.
    retrieve_p50_over_direct_p50: f64,
    /// `call_tool` p50 ÷ direct `tools/call` p50.
    call_tool_p50_over_direct_p50: f64,
    /// `tools/list` (all pages) bytes ÷ mean `retrieve_tools` answer bytes.
    list_bytes_over_retrieve_bytes: f64,
}

#[derive(Serialize)]
struct Report {
    unix_time: u64,
    cpus: usize,
    duration_s: f64,
    warmup_s: f64,
    servers: usize,
    tools: usize,
    limit: usize,
    /// The first `retrieve_tools` of the run (builds every catalogue's index), in µs.
    first_search_us: f64,
    /// The second one, in µs.
    second_search_us: f64,
    hit_rate: HitRate,
    /// Pages of one `tools/list` at `/mcp/all`.
    list_pages: usize,
    ops: Vec<OpStats>,
    ratios: Ratios,
    /// The gateway's RSS after the run.
    gateway_rss_kib: Option<u64>,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let report = runtime.block_on(bench(&cli))?;
    match cli.output {
        Output::Text => print!("{}", to_markdown(&report)),
        Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
    }
    Ok(())
}

async fn bench(cli: &Cli) -> Result<Report> {
    let corpus = Corpus::builtin()?;
    let servers = corpus.server_names();
    let tools = corpus.tool_count();
    let queries: Vec<Query> =
        serde_json::from_str(QUERIES_JSON).context("parsing tests/data/tool-queries.json")?;
    ensure!(!queries.is_empty(), "no queries");

    let mut cmd = Command::new(sibling_binary("tessera-upstream")?);
    cmd.args(["corpus", "--listen", "127.0.0.1:0"]);
    let (upstream, upstream_base) =
        ChildProc::spawn_listening("tessera-upstream corpus", cmd, START_TIMEOUT).await?;

    let config = |port: u16, data_dir: &std::path::Path| {
        let entries: Vec<Value> = servers
            .iter()
            .map(|s| {
                json!({"name": s, "url": format!("{upstream_base}/{s}/mcp"), "protocol": "streamable-http"})
            })
            .collect();
        json!({
            "listen": format!("127.0.0.1:{port}"),
            "data_dir": data_dir,
            "auth": "none",
            "tools_limit": LIMIT,
            "mcpServers": entries,
        })
    };
    let started = start_tessera(
        &cli.tessera,
        GatewaySetup {
            config: &config,
            env: Vec::new(),
        },
    )
    .await;
    let (mut gateway, mut dir, mcp_url) = match started {
        Ok(g) => g,
        Err(e) => {
            let _ = upstream.stop(STOP_GRACE).await;
            return Err(e);
        }
    };
    let base = mcp_url.trim_end_matches("/mcp").to_owned();
    let outcome = measure(cli, &base, &servers, tools, &queries, gateway.pid()).await;
    let outcome = match outcome {
        Ok(r) => gateway.ensure_running().map(|()| r),
        Err(e) => Err(e),
    };
    if outcome.is_err() || cli.keep {
        dir.keep = true;
    }
    let stopped = gateway.stop(STOP_GRACE).await;
    let stopped_upstream = upstream.stop(STOP_GRACE).await;
    drop(dir);
    let report = outcome?;
    stopped?;
    stopped_upstream?;
    Ok(report)
}

/// Numbered requests on one session.
struct Client {
    session: Session,
    next_id: u64,
}

impl Client {
    async fn open(http: &reqwest::Client, url: &str) -> Result<Self> {
        let url = reqwest::Url::parse(url)?;
        let session = Session::open(http, &url)
            .await
            .map_err(|e| anyhow!("{url}: {e}"))?;
        Ok(Self {
            session,
            next_id: 1,
        })
    }

    /// Sends `method` with `params`; returns the `result` (a JSON-RPC error fails) and the body bytes.
    async fn request(&mut self, method: &str, params: Value) -> Result<(Value, usize)> {
        let id = self.next_id;
        self.next_id += 1;
        let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let (reply, bytes) = self
            .session
            .request(id, body.to_string().into_bytes())
            .await
            .map_err(|e| anyhow!("{method}: {e}"))?;
        match reply.get("result") {
            Some(result) => Ok((result.clone(), bytes)),
            None => bail!("{method}: {reply}"),
        }
    }

    /// `retrieve_tools {query, limit}`: the returned tool names and the body bytes.
    async fn retrieve(&mut self, query: &str, tools: usize) -> Result<(Vec<String>, usize)> {
        let (result, bytes) = self
            .request(
                "tools/call",
                json!({"name": "retrieve_tools", "arguments": {"query": query, "limit": LIMIT}}),
            )
            .await?;
        let context = || format!("retrieve_tools {query:?}: {result}");
        ensure!(
            result.get("isError") != Some(&Value::Bool(true)),
            "{}",
            context()
        );
        let structured = result
            .get("structuredContent")
            .ok_or_else(|| anyhow!("no structuredContent: {}", context()))?;
        ensure!(
            structured.get("searched").and_then(Value::as_u64) == Some(tools as u64),
            "searched is not {tools}: {}",
            context()
        );
        let found: Vec<String> = structured
            .get("tools")
            .and_then(Value::as_array)
            .ok_or_else(|| anyhow!("no tools: {}", context()))?
            .iter()
            .map(|t| t.get("name").and_then(Value::as_str).map(str::to_owned))
            .collect::<Option<_>>()
            .ok_or_else(|| anyhow!("a tool without a name: {}", context()))?;
        ensure!(
            !found.is_empty() && found.len() <= LIMIT,
            "{} tools: {}",
            found.len(),
            context()
        );
        let text: Value = result
            .pointer("/content/0/text")
            .and_then(Value::as_str)
            .and_then(|t| serde_json::from_str(t).ok())
            .ok_or_else(|| anyhow!("content[0].text is not JSON: {}", context()))?;
        ensure!(
            &text == structured,
            "text and structuredContent differ: {}",
            context()
        );
        Ok((found, bytes))
    }

    /// A `tools/call` of [`DIRECT_TOOL`], directly or wrapped in `call_tool`.
    async fn call(&mut self, wrapped: bool) -> Result<usize> {
        let arguments = json!({"owner": "octo-org", "repo": "hello-world", "issue_number": 42});
        let params = if wrapped {
            json!({"name": "call_tool", "arguments": {"name": DIRECT_TOOL, "arguments": arguments}})
        } else {
            json!({"name": DIRECT_TOOL, "arguments": arguments})
        };
        let (result, bytes) = self.request("tools/call", params).await?;
        ensure!(
            result.pointer("/content/0/text").and_then(Value::as_str) == Some(DIRECT_TEXT)
                && result.get("isError") != Some(&Value::Bool(true)),
            "tools/call {DIRECT_TOOL} (call_tool: {wrapped}): {result}"
        );
        Ok(bytes)
    }

    /// `tools/list`, every page: (tool names, pages, total body bytes).
    async fn list_all(&mut self) -> Result<(Vec<String>, usize, usize)> {
        let mut names = Vec::new();
        let mut pages = 0;
        let mut total = 0;
        let mut cursor: Option<String> = None;
        loop {
            let params = match &cursor {
                Some(c) => json!({"cursor": c}),
                None => json!({}),
            };
            let (result, bytes) = self.request("tools/list", params).await?;
            pages += 1;
            total += bytes;
            for tool in result
                .get("tools")
                .and_then(Value::as_array)
                .ok_or_else(|| anyhow!("tools/list: no tools array"))?
            {
                names.push(
                    tool.get("name")
                        .and_then(Value::as_str)
                        .ok_or_else(|| anyhow!("tools/list: a tool without a name"))?
                        .to_owned(),
                );
            }
            match result.get("nextCursor").and_then(Value::as_str) {
                Some(c) => cursor = Some(c.to_owned()),
                None => return Ok((names, pages, total)),
            }
            ensure!(pages < 10_000, "tools/list: more than 10,000 pages");
        }
    }
}

/// Checks `/readyz`: every corpus server ready with its tools.
async fn check_ready(
    http: &reqwest::Client,
    base: &str,
    servers: &[String],
    tools: usize,
) -> Result<()> {
    let body: Value = http
        .get(format!("{base}/readyz"))
        .send()
        .await?
        .json()
        .await
        .context("/readyz")?;
    let mut listed = 0;
    for s in servers {
        let u = body
            .pointer(&format!("/upstreams/{s}"))
            .ok_or_else(|| anyhow!("/readyz does not name {s}: {body}"))?;
        ensure!(
            u.get("state").and_then(Value::as_str) == Some("ready"),
            "{s} is not ready: {u}"
        );
        listed += u.get("tools").and_then(Value::as_u64).unwrap_or(0) as usize;
    }
    ensure!(
        listed == tools,
        "/readyz counts {listed} tools, the corpus has {tools}: {body}"
    );
    Ok(())
}

async fn measure(
    cli: &Cli,
    base: &str,
    servers: &[String],
    tools: usize,
    queries: &[Query],
    gateway_pid: u32,
) -> Result<Report> {
    let http = load::http_client(2)?;
    check_ready(&http, base, servers, tools).await?;
    let mut search = Client::open(&http, &format!("{base}/mcp/call")).await?;
    let mut all = Client::open(&http, &format!("{base}/mcp/all")).await?;

    let (offered, _, _) = search.list_all().await?;
    ensure!(
        offered == ["retrieve_tools", "call_tool"],
        "/mcp/call offers {offered:?}"
    );

    // The hit rate; the first search builds the index of every catalogue.
    let mut hits = HitRate {
        queries: queries.len(),
        hits: 0,
        top1: 0,
        rate: 0.0,
        misses: Vec::new(),
    };
    let mut first_search_us = 0.0;
    let mut second_search_us = 0.0;
    for (i, q) in queries.iter().enumerate() {
        let t = Instant::now();
        let (found, _) = search.retrieve(&q.query, tools).await?;
        let took = t.elapsed().as_secs_f64() * 1e6;
        match i {
            0 => first_search_us = took,
            1 => second_search_us = took,
            _ => {}
        }
        match found.iter().position(|n| *n == q.expected) {
            Some(rank) => {
                hits.hits += 1;
                if rank == 0 {
                    hits.top1 += 1;
                }
            }
            None => hits
                .misses
                .push((q.query.clone(), q.expected.clone(), found)),
        }
    }
    hits.rate = hits.hits as f64 / hits.queries as f64;

    let (names, list_pages, _) = all.list_all().await?;
    let unique: HashSet<&String> = names.iter().collect();
    ensure!(
        names.len() == tools && unique.len() == tools,
        "/mcp/all lists {} tools ({} distinct), the corpus has {tools}",
        names.len(),
        unique.len()
    );

    let mut retrieve = OpStats::new("retrieve_tools (limit 5)", "/mcp/call")?;
    let mut direct = OpStats::new("tools/call github__get_issue (direct)", "/mcp/all")?;
    let mut wrapped = OpStats::new("call_tool → github__get_issue", "/mcp/call")?;
    let mut list = OpStats::new("tools/list, every page", "/mcp/all")?;
    let start = Instant::now();
    let window_start = start + cli.warmup;
    let window_end = window_start + cli.duration;
    let orders: Vec<[usize; 4]> = (0..256)
        .map(|n| [n & 3, (n >> 2) & 3, (n >> 4) & 3, n >> 6])
        .filter(|o| (0..4).all(|op| o.contains(&op)))
        .collect();
    let mut i = 0usize;
    loop {
        let measured = Instant::now() >= window_start;
        if Instant::now() >= window_end {
            break;
        }
        let q = &queries[i % queries.len()];
        // The four requests in each of the 24 orders in turn, so that each follows each of the others equally
        // often (a call right after another call finds the upstream's threads awake; one after a search or a
        // list does not).
        for op in orders[i % orders.len()] {
            let t = Instant::now();
            let (stats, bytes) = match op {
                0 => (&mut retrieve, search.retrieve(&q.query, tools).await?.1),
                1 => (&mut direct, all.call(false).await?),
                2 => (&mut wrapped, search.call(true).await?),
                _ => {
                    let (names, _, bytes) = all.list_all().await?;
                    ensure!(names.len() == tools, "tools/list: {} tools", names.len());
                    (&mut list, bytes)
                }
            };
            if measured {
                stats.record(t.elapsed(), bytes);
            }
        }
        i += 1;
    }
    let gateway_rss_kib = procfs::rss_kib(gateway_pid).ok();
    for s in [&search, &all] {
        s.session.close().await.map_err(|e| anyhow!(e))?;
    }
    let mut ops = vec![retrieve, direct, wrapped, list];
    for op in &mut ops {
        op.finish();
        ensure!(
            op.requests > 0,
            "no {} completed in the measured window",
            op.op
        );
    }
    let ratios = Ratios {
        retrieve_p50_over_direct_p50: ops[0].p50_us / ops[1].p50_us,
        call_tool_p50_over_direct_p50: ops[2].p50_us / ops[1].p50_us,
        list_bytes_over_retrieve_bytes: ops[3].mean_bytes / ops[0].mean_bytes,
    };
    Ok(Report {
        unix_time: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        duration_s: cli.duration.as_secs_f64(),
        warmup_s: cli.warmup.as_secs_f64(),
        servers: servers.len(),
        tools,
        limit: LIMIT,
        first_search_us,
        second_search_us,
        hit_rate: hits,
        list_pages,
        ops,
        ratios,
        gateway_rss_kib,
    })
}

fn to_markdown(r: &Report) -> String {
    let mut s = format!(
        "Tool search through the gateway: {} servers, {} tools, limit {}, {} CPUs, {:.0} s measured after {:.0} s \
         warm-up, one request at a time\n\n",
        r.servers, r.tools, r.limit, r.cpus, r.duration_s, r.warmup_s
    );
    s.push_str(
        "| request | endpoint | requests | p50 µs | p90 µs | p99 µs | max µs | mean bytes |\n",
    );
    s.push_str("|---|---|---|---|---|---|---|---|\n");
    for op in &r.ops {
        s.push_str(&format!(
            "| {} | `{}` | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} |\n",
            op.op,
            op.endpoint,
            op.requests,
            op.p50_us,
            op.p90_us,
            op.p99_us,
            op.max_us,
            op.mean_bytes
        ));
    }
    s.push_str(&format!(
        "\nretrieve_tools p50 ÷ direct tools/call p50: {:.2}×\ncall_tool p50 ÷ direct tools/call p50: {:.2}×\n\
         tools/list bytes ({} pages) ÷ retrieve_tools answer bytes: {:.1}×\n",
        r.ratios.retrieve_p50_over_direct_p50,
        r.ratios.call_tool_p50_over_direct_p50,
        r.list_pages,
        r.ratios.list_bytes_over_retrieve_bytes,
    ));
    s.push_str(&format!(
        "first search (builds every catalogue's index): {:.0} µs; second: {:.0} µs\n",
        r.first_search_us, r.second_search_us
    ));
    s.push_str(&format!(
        "top-{} hit rate: {}/{} = {:.1} % (rank 1: {})\n",
        r.limit,
        r.hit_rate.hits,
        r.hit_rate.queries,
        r.hit_rate.rate * 100.0,
        r.hit_rate.top1
    ));
    for (query, expected, found) in &r.hit_rate.misses {
        s.push_str(&format!(
            "  miss: {query:?} expected {expected}, got {found:?}\n"
        ));
    }
    if let Some(kib) = r.gateway_rss_kib {
        s.push_str(&format!(
            "gateway RSS after the run: {:.1} MiB\n",
            kib as f64 / 1024.0
        ));
    }
    s
}
