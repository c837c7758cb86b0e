//! MCP load generator over streamable HTTP.
//!
//! Each session does its own `initialize` + `notifications/initialized`, then calls one tool in a loop: flat out
//! (one call in flight per session) or on a fixed schedule (`rate` calls/s in total, spread evenly over the
//! sessions). With a schedule, latency is measured from the *scheduled* send time whenever the previous call of
//! the session made this one late, so a stall is not hidden (coordinated omission); when the session was idle it is
//! measured from the actual send, so the timer's own granularity (1 ms in tokio) is not counted against the server.
//!
//! Every reply is checked: HTTP 200, JSON or SSE body, matching `id`, `result.content[0].text` equal to the sent
//! message. Anything else is an error.

use std::borrow::Cow;
use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use futures::StreamExt;
use hdrhistogram::Histogram;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use serde::Serialize;
use serde_json::Value;
use tokio::time::Instant;

use crate::procfs;

/// `Mcp-Session-Id`.
pub const SESSION_HEADER: HeaderName = HeaderName::from_static("mcp-session-id");
/// `MCP-Protocol-Version`.
pub const PROTOCOL_HEADER: HeaderName = HeaderName::from_static("mcp-protocol-version");
const ACCEPT_BOTH: HeaderValue = HeaderValue::from_static("application/json, text/event-stream");
const APPLICATION_JSON: HeaderValue = HeaderValue::from_static("application/json");
/// The protocol version this client asks for.
pub const CLIENT_PROTOCOL_VERSION: &str = "2025-11-25";
/// How many error messages a report keeps.
pub const MAX_ERROR_SAMPLES: usize = 5;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// What a CPU sample of a pid covers.
enum Sampled {
    Process,
    /// The threads whose name starts with this prefix.
    Threads(String),
    /// The process and its children.
    Family,
}

/// What to run.
#[derive(Clone, Debug)]
pub struct LoadConfig {
    /// The MCP streamable-HTTP endpoint.
    pub url: String,
    /// Concurrent sessions (one call in flight each).
    pub sessions: usize,
    /// Measured time.
    pub duration: Duration,
    /// Unmeasured time before it (session set-up happens here).
    pub warmup: Duration,
    /// Total calls per second; `None` = flat out.
    pub rate: Option<f64>,
    /// Tool to call with `{"message": ...}`.
    pub tool: String,
    /// Message size in bytes.
    pub payload: usize,
    /// Processes whose CPU time is sampled at the start and end of the measured window: (name, pid).
    pub cpu_pids: Vec<(String, u32)>,
    /// Threads sampled the same way: (name, pid, thread-name prefix), e.g. a gateway's SQLite worker.
    pub cpu_threads: Vec<(String, u32, String)>,
    /// Processes sampled together with their children ([`procfs::family_cpu_micros`]), e.g. a
    /// PostgreSQL server (its postmaster): (name, pid).
    pub cpu_families: Vec<(String, u32)>,
    /// Bearer tokens sent as `Authorization: Bearer <token>`: session `i` uses `bearers[i % len]`;
    /// empty = no `Authorization` header.
    pub bearers: Vec<String>,
}

/// CPU used by one process during the measured window.
#[derive(Clone, Debug, Serialize)]
pub struct CpuUse {
    pub name: String,
    pub pid: u32,
    /// CPU time (user + system) divided by the calls completed in the window.
    pub cpu_us_per_call: f64,
    /// CPU time as a share of one core over the window.
    pub cpu_percent: f64,
}

/// The outcome of a run.
#[derive(Clone, Debug, Serialize)]
pub struct LoadReport {
    pub url: String,
    pub tool: String,
    pub sessions: usize,
    pub payload_bytes: usize,
    /// Target rate; `None` = flat out.
    pub rate: Option<f64>,
    /// Successful calls completed in the measured window.
    pub calls: u64,
    pub seconds: f64,
    pub calls_per_s: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
    pub mean_us: f64,
    /// Failed calls and session set-ups over the whole run, warm-up included.
    pub errors: u64,
    pub error_samples: Vec<String>,
    pub cpu: Vec<CpuUse>,
}

impl LoadReport {
    /// CPU µs per call of the process called `name`, if it was sampled.
    pub fn cpu_of(&self, name: &str) -> Option<f64> {
        self.cpu
            .iter()
            .find(|c| c.name == name)
            .map(|c| c.cpu_us_per_call)
    }

    /// A few lines for people.
    pub fn to_text(&self) -> String {
        let mode = match self.rate {
            Some(r) => format!("{r} calls/s"),
            None => "flat out".to_owned(),
        };
        let mut s = format!(
            "url        {}\nload       tool {} with a {}-byte message, {} sessions, {mode}\n\
             calls      {} in {:.2} s = {:.1} calls/s\n\
             latency    p50 {:.0} µs, p90 {:.0} µs, p99 {:.0} µs, max {:.0} µs, mean {:.0} µs\n\
             errors     {}\n",
            self.url,
            self.tool,
            self.payload_bytes,
            self.sessions,
            self.calls,
            self.seconds,
            self.calls_per_s,
            self.p50_us,
            self.p90_us,
            self.p99_us,
            self.max_us,
            self.mean_us,
            self.errors,
        );
        for e in &self.error_samples {
            s.push_str(&format!("  error: {e}\n"));
        }
        for c in &self.cpu {
            s.push_str(&format!(
                "cpu        {} (pid {}): {:.1} µs/call, {:.0}% of a core\n",
                c.name, c.pid, c.cpu_us_per_call, c.cpu_percent
            ));
        }
        s
    }
}

/// The HTTP client for a run: one pool for all sessions, TCP_NODELAY, no proxy, HTTP/1.1.
pub fn http_client(pool: usize) -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .pool_max_idle_per_host(pool.max(1))
        .tcp_nodelay(true)
        .no_proxy()
        .http1_only()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .context("building the HTTP client")
}

/// One MCP session.
pub struct Session {
    client: reqwest::Client,
    url: reqwest::Url,
    session_id: Option<HeaderValue>,
    protocol: Option<HeaderValue>,
    /// `Bearer <token>`, sent on every request of the session.
    authorization: Option<HeaderValue>,
}

/// The body of a `tools/call` of `tool` with `{"message": message}` and JSON-RPC id `id`.
pub fn call_body(id: u64, tool: &str, message: &str) -> Vec<u8> {
    serde_json::json!({
        "jsonrpc": "2.0",
        "id": id,
        "method": "tools/call",
        "params": {"name": tool, "arguments": {"message": message}},
    })
    .to_string()
    .into_bytes()
}

impl Session {
    /// `initialize` (returns the `Mcp-Session-Id`, if the server gives one) then `notifications/initialized`.
    pub async fn open(client: &reqwest::Client, url: &reqwest::Url) -> Result<Self, String> {
        Self::open_as(client, url, None).await
    }

    /// [`Session::open`] sending `Authorization: Bearer <bearer>` on every request, when given.
    pub async fn open_as(
        client: &reqwest::Client,
        url: &reqwest::Url,
        bearer: Option<&str>,
    ) -> Result<Self, String> {
        let authorization = match bearer {
            Some(token) => Some(
                HeaderValue::from_str(&format!("Bearer {token}"))
                    .map_err(|_| "the bearer token is not a header value".to_owned())?,
            ),
            None => None,
        };
        let mut session = Self {
            client: client.clone(),
            url: url.clone(),
            session_id: None,
            protocol: None,
            authorization,
        };
        let init = serde_json::json!({
            "jsonrpc": "2.0",
            "id": 0,
            "method": "initialize",
            "params": {
                "protocolVersion": CLIENT_PROTOCOL_VERSION,
                "capabilities": {},
                "clientInfo": {"name": "tessera-load", "version": env!("CARGO_PKG_VERSION")},
            },
        });
        let resp = session
            .post(init.to_string().into_bytes())
            .send()
            .await
            .map_err(|e| format!("initialize: {}", error_chain(&e)))?;
        session.session_id = resp.headers().get(SESSION_HEADER).cloned();
        let (status, sse, body) = read(resp).await.map_err(|e| format!("initialize: {e}"))?;
        if status != StatusCode::OK {
            return Err(format!("initialize: HTTP {status}: {}", snippet(&body)));
        }
        let reply = reply_with_id(&body, sse, 0).map_err(|e| format!("initialize: {e}"))?;
        let version = reply
            .pointer("/result/protocolVersion")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                format!(
                    "initialize: no result.protocolVersion in {}",
                    snippet(&body)
                )
            })?;
        session.protocol = Some(
            HeaderValue::from_str(version)
                .map_err(|_| format!("initialize: bad protocolVersion {version:?}"))?,
        );

        let resp = session
            .post(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#.to_vec())
            .send()
            .await
            .map_err(|e| format!("notifications/initialized: {}", error_chain(&e)))?;
        let (status, _, body) = read(resp)
            .await
            .map_err(|e| format!("notifications/initialized: {e}"))?;
        if !status.is_success() {
            return Err(format!(
                "notifications/initialized: HTTP {status}: {}",
                snippet(&body)
            ));
        }
        Ok(session)
    }

    fn post(&self, body: Vec<u8>) -> reqwest::RequestBuilder {
        let mut rb = self
            .client
            .post(self.url.clone())
            .header(ACCEPT, ACCEPT_BOTH)
            .header(CONTENT_TYPE, APPLICATION_JSON)
            .body(body);
        if let Some(id) = &self.session_id {
            rb = rb.header(SESSION_HEADER, id.clone());
        }
        if let Some(v) = &self.protocol {
            rb = rb.header(PROTOCOL_HEADER, v.clone());
        }
        if let Some(v) = &self.authorization {
            rb = rb.header(AUTHORIZATION, v.clone());
        }
        rb
    }

    /// Calls `tool` with `{"message": message}` and checks that the text comes back.
    pub async fn call_tool(&self, id: u64, tool: &str, message: &str) -> Result<(), String> {
        self.call(id, call_body(id, tool, message), message).await
    }

    /// Sends one request body with JSON-RPC `id`; returns the message answering it (HTTP 200 required; the
    /// message may be a JSON-RPC error) and the size of the HTTP response body in bytes.
    pub async fn request(&self, id: u64, body: Vec<u8>) -> Result<(Value, usize), String> {
        let resp = self
            .post(body)
            .send()
            .await
            .map_err(|e| format!("request {id}: {}", error_chain(&e)))?;
        let (status, sse, body) = read(resp).await.map_err(|e| format!("request {id}: {e}"))?;
        if status != StatusCode::OK {
            return Err(format!("request {id}: HTTP {status}: {}", snippet(&body)));
        }
        let reply = reply_with_id(&body, sse, id).map_err(|e| format!("request {id}: {e}"))?;
        Ok((reply, body.len()))
    }

    /// Sends one request body with JSON-RPC `id` and checks that `result.content[0].text == expected`.
    pub async fn call(&self, id: u64, body: Vec<u8>, expected: &str) -> Result<(), String> {
        let resp = self
            .post(body)
            .send()
            .await
            .map_err(|e| format!("call {id}: {}", error_chain(&e)))?;
        let (status, sse, body) = read(resp).await.map_err(|e| format!("call {id}: {e}"))?;
        if status != StatusCode::OK {
            return Err(format!("call {id}: HTTP {status}: {}", snippet(&body)));
        }
        let reply = reply_with_id(&body, sse, id).map_err(|e| format!("call {id}: {e}"))?;
        match reply
            .pointer("/result/content/0/text")
            .and_then(Value::as_str)
        {
            Some(text) if text == expected => Ok(()),
            Some(text) => Err(format!(
                "call {id}: text differs (got {} bytes, sent {})",
                text.len(),
                expected.len()
            )),
            None => Err(format!(
                "call {id}: no result.content[0].text in {}",
                snippet(&body)
            )),
        }
    }

    /// `DELETE` the session (a 405 — server does not allow it — is not an error).
    pub async fn close(&self) -> Result<(), String> {
        let Some(id) = &self.session_id else {
            return Ok(());
        };
        let mut rb = self
            .client
            .delete(self.url.clone())
            .header(SESSION_HEADER, id.clone());
        if let Some(v) = &self.authorization {
            rb = rb.header(AUTHORIZATION, v.clone());
        }
        let resp = rb
            .send()
            .await
            .map_err(|e| format!("DELETE session: {}", error_chain(&e)))?;
        let status = resp.status();
        if status.is_success() || status == StatusCode::METHOD_NOT_ALLOWED {
            Ok(())
        } else {
            Err(format!("DELETE session: HTTP {status}"))
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

async fn read(resp: reqwest::Response) -> Result<(StatusCode, bool, bytes::Bytes), String> {
    let status = resp.status();
    let sse = is_sse(resp.headers());
    let body = resp
        .bytes()
        .await
        .map_err(|e| format!("reading body: {}", error_chain(&e)))?;
    Ok((status, sse, body))
}

fn is_sse(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("text/event-stream"))
}

fn snippet(body: &[u8]) -> String {
    let s = String::from_utf8_lossy(&body[..body.len().min(200)]);
    if body.len() > 200 {
        format!("{s}…")
    } else {
        s.into_owned()
    }
}

/// The `data` payloads of the events in an SSE body.
pub fn sse_data(body: &[u8]) -> Vec<Cow<'_, [u8]>> {
    let mut events = Vec::new();
    let mut current: Option<Cow<'_, [u8]>> = None;
    for line in body.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            events.extend(current.take());
            continue;
        }
        if let Some(data) = line.strip_prefix(b"data:") {
            let data = data.strip_prefix(b" ").unwrap_or(data);
            current = Some(match current.take() {
                None => Cow::Borrowed(data),
                Some(prev) => {
                    let mut joined = prev.into_owned();
                    joined.push(b'\n');
                    joined.extend_from_slice(data);
                    Cow::Owned(joined)
                }
            });
        }
    }
    events.extend(current);
    events
}

/// The JSON-RPC message answering request `id`, from a JSON body or the events of an SSE body.
pub fn reply_with_id(body: &[u8], sse: bool, id: u64) -> Result<Value, String> {
    if sse {
        for data in sse_data(body) {
            if let Ok(v) = serde_json::from_slice::<Value>(&data)
                && v.get("id").and_then(Value::as_u64) == Some(id)
            {
                return Ok(v);
            }
        }
        return Err(format!("no SSE event answers id {id}: {}", snippet(body)));
    }
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| format!("invalid JSON ({e}): {}", snippet(body)))?;
    if v.get("id").and_then(Value::as_u64) != Some(id) {
        return Err(format!(
            "reply id {} is not {id}",
            v.get("id").unwrap_or(&Value::Null)
        ));
    }
    Ok(v)
}

/// The message of `len` bytes sent to the echo tool.
pub fn message_of(len: usize) -> String {
    (0..len)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect()
}

struct Plan {
    url: reqwest::Url,
    client: reqwest::Client,
    /// `,"method":"tools/call","params":{...}}`: everything after the id.
    tail: Vec<u8>,
    message: String,
    /// Start of the measured window.
    window_start: Instant,
    window_end: Instant,
    /// Per-session interval between sends; `None` = flat out.
    interval: Option<Duration>,
    start: Instant,
    rate: Option<f64>,
    bearers: Vec<String>,
}

struct WorkerResult {
    histogram: Histogram<u64>,
    calls: u64,
    errors: u64,
    samples: Vec<String>,
}

impl WorkerResult {
    fn error(&mut self, e: String) {
        self.errors += 1;
        if self.samples.len() < MAX_ERROR_SAMPLES {
            self.samples.push(e);
        }
    }
}

/// A latency histogram in microseconds, 1 µs to 1 hour, 3 significant digits.
pub fn new_histogram() -> Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).context("creating a histogram")
}

async fn worker(plan: Arc<Plan>, index: usize, mut result: WorkerResult) -> WorkerResult {
    let bearer = match plan.bearers.len() {
        0 => None,
        n => Some(plan.bearers[index % n].as_str()),
    };
    let session = match Session::open_as(&plan.client, &plan.url, bearer).await {
        Ok(s) => s,
        Err(e) => {
            result.error(e);
            return result;
        }
    };
    let mut next = match plan.rate {
        Some(rate) => plan.start + Duration::from_secs_f64(index as f64 / rate),
        None => plan.start,
    };
    let mut id: u64 = 1;
    loop {
        let now = Instant::now();
        let measured_from = match plan.interval {
            None => now,
            Some(interval) => {
                let scheduled = next;
                next += interval;
                if scheduled >= plan.window_end {
                    break;
                }
                if scheduled > now {
                    tokio::time::sleep_until(scheduled).await;
                    Instant::now()
                } else {
                    scheduled
                }
            }
        };
        if now >= plan.window_end {
            break;
        }
        let mut body = Vec::with_capacity(32 + plan.tail.len());
        body.extend_from_slice(br#"{"jsonrpc":"2.0","id":"#);
        let _ = write!(body, "{id}");
        body.extend_from_slice(&plan.tail);
        let outcome = session.call(id, body, &plan.message).await;
        let done = Instant::now();
        match outcome {
            Ok(()) if done >= plan.window_start && done <= plan.window_end => {
                let micros = u64::try_from((done - measured_from).as_micros()).unwrap_or(u64::MAX);
                result.histogram.saturating_record(micros.max(1));
                result.calls += 1;
            }
            Ok(()) => {}
            Err(e) => result.error(e),
        }
        id += 1;
    }
    if let Err(e) = session.close().await {
        result.error(e);
    }
    result
}

/// Runs the load described by `cfg`.
pub async fn run(cfg: &LoadConfig) -> Result<LoadReport> {
    anyhow::ensure!(cfg.sessions > 0, "--sessions must be at least 1");
    if let Some(rate) = cfg.rate {
        anyhow::ensure!(
            rate > 0.0 && rate.is_finite(),
            "--rate must be a positive number"
        );
    }
    let url =
        reqwest::Url::parse(&cfg.url).with_context(|| format!("invalid URL {:?}", cfg.url))?;
    let client = http_client(cfg.sessions)?;
    let message = message_of(cfg.payload);
    let tail = format!(
        r#","method":"tools/call","params":{{"name":{},"arguments":{{"message":{}}}}}}}"#,
        serde_json::to_string(&cfg.tool)?,
        serde_json::to_string(&message)?,
    );
    let start = Instant::now();
    let window_start = start + cfg.warmup;
    let window_end = window_start + cfg.duration;
    let plan = Arc::new(Plan {
        url,
        client,
        tail: tail.into_bytes(),
        message,
        window_start,
        window_end,
        interval: cfg
            .rate
            .map(|r| Duration::from_secs_f64(cfg.sessions as f64 / r)),
        start,
        rate: cfg.rate,
        bearers: cfg.bearers.clone(),
    });

    let mut pids: Vec<(String, u32, Sampled)> = cfg
        .cpu_pids
        .iter()
        .map(|(name, pid)| (name.clone(), *pid, Sampled::Process))
        .collect();
    pids.extend(
        cfg.cpu_threads
            .iter()
            .map(|(name, pid, prefix)| (name.clone(), *pid, Sampled::Threads(prefix.clone()))),
    );
    pids.extend(
        cfg.cpu_families
            .iter()
            .map(|(name, pid)| (name.clone(), *pid, Sampled::Family)),
    );
    let sample = |pids: &[(String, u32, Sampled)]| -> Vec<Option<f64>> {
        pids.iter()
            .map(|(_, pid, what)| match what {
                Sampled::Process => procfs::cpu_micros(*pid).ok(),
                Sampled::Threads(prefix) => procfs::threads_cpu_micros(*pid, prefix).ok(),
                Sampled::Family => procfs::family_cpu_micros(*pid).ok(),
            })
            .collect()
    };
    let sampler = tokio::spawn(async move {
        tokio::time::sleep_until(window_start).await;
        let before = sample(&pids);
        tokio::time::sleep_until(window_end).await;
        let elapsed = window_start.elapsed().as_secs_f64();
        let after = sample(&pids);
        let pids: Vec<(String, u32)> = pids.into_iter().map(|(n, p, _)| (n, p)).collect();
        (pids, before, after, elapsed)
    });

    let mut workers = Vec::with_capacity(cfg.sessions);
    for index in 0..cfg.sessions {
        let result = WorkerResult {
            histogram: new_histogram()?,
            calls: 0,
            errors: 0,
            samples: Vec::new(),
        };
        workers.push(tokio::spawn(worker(Arc::clone(&plan), index, result)));
    }
    let mut total = WorkerResult {
        histogram: new_histogram()?,
        calls: 0,
        errors: 0,
        samples: Vec::new(),
    };
    for w in workers {
        let r = w.await.context("a load worker panicked")?;
        total
            .histogram
            .add(&r.histogram)
            .context("merging histograms")?;
        total.calls += r.calls;
        total.errors += r.errors;
        for s in r.samples {
            if total.samples.len() < MAX_ERROR_SAMPLES {
                total.samples.push(s);
            }
        }
    }
    let (pids, before, after, cpu_seconds) = sampler.await.context("the CPU sampler panicked")?;
    let seconds = cfg.duration.as_secs_f64();
    let cpu = pids
        .into_iter()
        .zip(before.into_iter().zip(after))
        .filter_map(|((name, pid), (b, a))| {
            let used = a? - b?;
            Some(CpuUse {
                name,
                pid,
                cpu_us_per_call: if total.calls > 0 {
                    used / total.calls as f64
                } else {
                    0.0
                },
                cpu_percent: used / 1e6 / cpu_seconds * 100.0,
            })
        })
        .collect();
    let h = &total.histogram;
    let q = |quantile: f64| {
        if h.is_empty() {
            0.0
        } else {
            h.value_at_quantile(quantile) as f64
        }
    };
    Ok(LoadReport {
        url: cfg.url.clone(),
        tool: cfg.tool.clone(),
        sessions: cfg.sessions,
        payload_bytes: cfg.payload,
        rate: cfg.rate,
        calls: total.calls,
        seconds,
        calls_per_s: total.calls as f64 / seconds,
        p50_us: q(0.5),
        p90_us: q(0.9),
        p99_us: q(0.99),
        max_us: if h.is_empty() { 0.0 } else { h.max() as f64 },
        mean_us: if h.is_empty() { 0.0 } else { h.mean() },
        errors: total.errors,
        error_samples: total.samples,
        cpu,
    })
}

/// Opens `n` sessions, at most `concurrency` at a time. Returns the open ones and the errors.
pub async fn open_sessions(
    client: &reqwest::Client,
    url: &reqwest::Url,
    n: usize,
    concurrency: usize,
) -> (Vec<Session>, Vec<String>) {
    open_sessions_as(client, url, n, &[], concurrency).await
}

/// [`open_sessions`] where session `i` sends `Authorization: Bearer <bearers[i % len]>` (none when
/// `bearers` is empty).
pub async fn open_sessions_as(
    client: &reqwest::Client,
    url: &reqwest::Url,
    n: usize,
    bearers: &[String],
    concurrency: usize,
) -> (Vec<Session>, Vec<String>) {
    let results: Vec<Result<Session, String>> = futures::stream::iter(0..n)
        .map(|i| {
            let bearer = (!bearers.is_empty()).then(|| bearers[i % bearers.len()].as_str());
            Session::open_as(client, url, bearer)
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let mut sessions = Vec::with_capacity(n);
    let mut errors = Vec::new();
    for r in results {
        match r {
            Ok(s) => sessions.push(s),
            Err(e) => errors.push(e),
        }
    }
    (sessions, errors)
}

/// DELETEs `sessions`, at most `concurrency` at a time; returns the errors.
pub async fn close_sessions(sessions: Vec<Session>, concurrency: usize) -> Vec<String> {
    futures::stream::iter(sessions)
        .map(|s| async move { s.close().await })
        .buffer_unordered(concurrency.max(1))
        .filter_map(|r| async move { r.err() })
        .collect()
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_events_are_split_and_multi_line_data_joined() {
        let body =
            b"event: message\r\ndata: {\"a\":\r\ndata: 1}\r\n\r\n: comment\n\ndata: {\"id\":7}\n";
        let events = sse_data(body);
        assert_eq!(events.len(), 2);
        assert_eq!(&*events[0], b"{\"a\":\n1}");
        assert_eq!(&*events[1], b"{\"id\":7}");
    }

    #[test]
    fn reply_is_found_by_id_in_json_and_sse() {
        assert!(reply_with_id(br#"{"jsonrpc":"2.0","id":3,"result":{}}"#, false, 3).is_ok());
        assert!(reply_with_id(br#"{"jsonrpc":"2.0","id":4,"result":{}}"#, false, 3).is_err());
        let sse =
            b"data: {\"method\":\"notifications/progress\"}\n\ndata: {\"id\":3,\"result\":{}}\n\n";
        assert!(reply_with_id(sse, true, 3).is_ok());
        assert!(reply_with_id(sse, true, 5).is_err());
    }

    #[test]
    fn message_has_the_requested_length() {
        assert_eq!(message_of(100).len(), 100);
        assert_eq!(message_of(0), "");
    }
}
