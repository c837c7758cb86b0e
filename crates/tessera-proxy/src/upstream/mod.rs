//! Upstream sessions: one MCP session from Tessera to one upstream server, over one of three
//! transports (streamable HTTP, legacy HTTP+SSE, stdio child process).
//!
//! A session multiplexes calls by gateway-assigned integer ids. Every message the upstream
//! sends is handed to [`UpstreamSession::dispatch`]: responses complete their pending call,
//! progress goes to the call that owns the progress token, and everything the upstream
//! originates (sampling, elicitation, roots, list changes, log messages) goes to the session's
//! [`Downstream`] — the client session that owns it, or the gateway's discovery loop.

pub mod client;
pub mod http;
pub mod sse;
pub mod stdio;

use crate::FastMap as HashMap;
use crate::error::UpstreamError;
use crate::jsonrpc::{self, Envelope, Kind, RawObject};
use serde_json::value::RawValue;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tessera_config::{HttpProtocol, ServerConfig, Transport as TransportConfig};
use tokio::sync::{mpsc, oneshot};

/// How long a new upstream session waits for the server to answer its GET stream before the
/// first request goes out anyway.
const STANDALONE_STREAM_WAIT: Duration = Duration::from_secs(1);

/// Upstream sessions alive in this process (client and discovery sessions), for `/metrics`.
pub static LIVE_SESSIONS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Protocol versions Tessera speaks, newest first.
pub const SUPPORTED_VERSIONS: &[&str] = &["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"];
pub const LATEST_VERSION: &str = "2025-11-25";

/// A message on its way to a client: related to one request, or that request's final response.
#[derive(Debug)]
pub enum Outbound {
    Message(String),
    Final(String),
}

/// Receives what an upstream originates. Implemented by client sessions and by discovery.
pub trait Downstream: Send + Sync {
    /// A request from the upstream (sampling, elicitation, roots/list, ping, ...).
    /// `related` is the stream of the client call it belongs to, when known.
    fn upstream_request(
        &self,
        from: &Arc<UpstreamSession>,
        id: Box<RawValue>,
        message: &Envelope,
        related: Option<mpsc::Sender<Outbound>>,
    );
    /// A notification other than progress for a known call.
    fn upstream_notification(
        &self,
        from: &Arc<UpstreamSession>,
        message: &Envelope,
        raw: &str,
        related: Option<mpsc::Sender<Outbound>>,
    );
    /// The session ended (process exit, stream closed, session expired).
    fn upstream_closed(&self, from: &Arc<UpstreamSession>, reason: &str);
}

enum Waiter {
    /// A client's call: the response is rewritten to the client's id and sent down `tx`.
    Client {
        tx: mpsc::Sender<Outbound>,
        client_id: Box<RawValue>,
        progress_token: Option<String>,
    },
    /// The gateway's own request (initialize, list): the whole envelope goes back.
    Internal(oneshot::Sender<Result<Envelope, UpstreamError>>),
}

enum Transport {
    Http(Arc<http::HttpTransport>),
    Sse(Box<sse::SseTransport>),
    Stdio(stdio::StdioTransport),
}

/// What the upstream said about itself in `initialize`.
#[derive(Debug, Clone, Default)]
pub struct UpstreamInfo {
    pub protocol_version: String,
    pub capabilities: serde_json::Value,
}

pub struct UpstreamSession {
    pub server: Arc<ServerConfig>,
    transport: Transport,
    pending: Mutex<HashMap<u64, Waiter>>,
    next_id: AtomicU64,
    downstream: Weak<dyn Downstream>,
    closed: AtomicBool,
    info: Mutex<UpstreamInfo>,
    pub call_timeout: Duration,
    opened: std::time::Instant,
    /// Milliseconds after `opened` of the last client call (idle eviction of brokered sessions).
    last_call_ms: AtomicU64,
    /// Held for the session's lifetime (a brokered session's place under the caps).
    guard: std::sync::OnceLock<Box<dyn std::any::Any + Send + Sync>>,
}

/// Everything needed to open an upstream session.
pub struct Connect<'a> {
    pub server: Arc<ServerConfig>,
    pub http: &'a client::HttpClient,
    pub downstream: Weak<dyn Downstream>,
    /// The `initialize` params to send: the client's own (capabilities, clientInfo) for a
    /// client's session, the gateway's for discovery. `protocolVersion` is set by Tessera.
    pub init_params: RawObject,
    pub protocol_version: &'a str,
    pub init_timeout: Duration,
    pub call_timeout: Duration,
    /// A brokered server: the user whose credential every request carries.
    pub auth: Option<Arc<crate::credentials::UpstreamAuth>>,
}

impl UpstreamSession {
    /// Opens the transport and runs the `initialize` handshake.
    pub async fn connect(c: Connect<'_>) -> Result<Arc<Self>, UpstreamError> {
        let session = match &c.server.transport {
            TransportConfig::Stdio { .. } => {
                let (transport, io) = stdio::StdioTransport::spawn(&c.server)?;
                let session = Self::new(&c, Transport::Stdio(transport));
                io.start(Arc::downgrade(&session));
                session
            }
            TransportConfig::Http {
                url,
                protocol,
                headers,
            } => match protocol {
                HttpProtocol::StreamableHttp => Self::new(
                    &c,
                    Transport::Http(Arc::new(http::HttpTransport::new(
                        c.http.clone(),
                        url,
                        headers,
                        c.auth.clone(),
                    )?)),
                ),
                HttpProtocol::Sse => Self::open_sse(&c, url, headers).await?,
                HttpProtocol::Auto => {
                    // Streamable HTTP first (the current transport); fall back to legacy SSE when
                    // the server refuses the POST with a 4xx, as 2024-11-05 servers do.
                    let attempt = Self::new(
                        &c,
                        Transport::Http(Arc::new(http::HttpTransport::new(
                            c.http.clone(),
                            url,
                            headers,
                            c.auth.clone(),
                        )?)),
                    );
                    match attempt.initialize_within(&c).await {
                        Ok(()) => return Ok(attempt),
                        Err(UpstreamError::Status(code)) if (400..500).contains(&code) => {
                            tracing::info!(server = %c.server.name, status = code, "streamable HTTP refused; trying legacy SSE");
                            Self::open_sse(&c, url, headers).await?
                        }
                        Err(e) => return Err(e),
                    }
                }
            },
        };
        session.initialize_within(&c).await?;
        Ok(session)
    }

    fn new(c: &Connect<'_>, transport: Transport) -> Arc<Self> {
        LIVE_SESSIONS.fetch_add(1, Ordering::Relaxed);
        Arc::new(UpstreamSession {
            server: c.server.clone(),
            transport,
            pending: Mutex::new(HashMap::default()),
            next_id: AtomicU64::new(1),
            downstream: c.downstream.clone(),
            closed: AtomicBool::new(false),
            info: Mutex::new(UpstreamInfo::default()),
            call_timeout: c.call_timeout,
            opened: std::time::Instant::now(),
            last_call_ms: AtomicU64::new(0),
            guard: std::sync::OnceLock::new(),
        })
    }

    async fn open_sse(
        c: &Connect<'_>,
        url: &url::Url,
        headers: &[(String, secrecy::SecretString)],
    ) -> Result<Arc<Self>, UpstreamError> {
        let session = Self::new(
            c,
            Transport::Sse(Box::new(sse::SseTransport::new(
                c.http.clone(),
                headers,
                c.auth.clone(),
            )?)),
        );
        if let Transport::Sse(t) = &session.transport {
            let opened = tokio::time::timeout(
                c.init_timeout,
                t.open(url.clone(), Arc::downgrade(&session)),
            )
            .await;
            match opened {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    session.close("SSE stream failed").await;
                    return Err(e);
                }
                Err(_) => {
                    session.close("SSE endpoint timed out").await;
                    return Err(UpstreamError::Timeout(c.init_timeout));
                }
            }
        }
        Ok(session)
    }

    /// `initialize` bounded by the init timeout; on failure the session is closed.
    async fn initialize_within(self: &Arc<Self>, c: &Connect<'_>) -> Result<(), UpstreamError> {
        let outcome = match tokio::time::timeout(c.init_timeout, self.initialize(c)).await {
            Ok(r) => r,
            Err(_) => Err(UpstreamError::Timeout(c.init_timeout)),
        };
        if let Err(e) = &outcome {
            self.close(&format!("initialize failed: {e}")).await;
        }
        outcome
    }

    async fn initialize(self: &Arc<Self>, c: &Connect<'_>) -> Result<(), UpstreamError> {
        let mut params = c.init_params.clone();
        params.set_str("protocolVersion", c.protocol_version);
        let reply = self.request("initialize", Some(params.to_raw())).await?;
        #[derive(serde::Deserialize)]
        struct InitResult {
            #[serde(rename = "protocolVersion")]
            protocol_version: String,
            #[serde(default)]
            capabilities: serde_json::Value,
        }
        let init: InitResult = serde_json::from_str(reply.get())
            .map_err(|e| UpstreamError::Protocol(format!("bad initialize result: {e}")))?;
        if !SUPPORTED_VERSIONS.contains(&init.protocol_version.as_str()) {
            return Err(UpstreamError::Protocol(format!(
                "unsupported protocol version {:?}",
                init.protocol_version
            )));
        }
        if let Transport::Http(t) = &self.transport {
            t.set_protocol_version(&init.protocol_version);
        }
        if let Ok(mut info) = self.info.lock() {
            *info = UpstreamInfo {
                protocol_version: init.protocol_version,
                capabilities: init.capabilities,
            };
        }
        self.notify("notifications/initialized", None).await?;
        if let Transport::Http(t) = &self.transport {
            let answered = t.open_standalone_stream(Arc::downgrade(self), self.server.name.clone());
            // A server sends what is unrelated to a request (tools/list_changed after a tool
            // call, say) down the GET stream, and drops it while no stream is open (the Python
            // SDK's server does). So the first request waits until the server has answered the
            // GET — one round trip per upstream session, not per call — bounded for a server
            // that holds its answer back until its first event.
            if tokio::time::timeout(STANDALONE_STREAM_WAIT, answered)
                .await
                .is_err()
            {
                tracing::debug!(server = %self.server.name, "the upstream has not answered the GET stream yet; going on without it");
            }
        }
        Ok(())
    }

    pub(crate) fn http_transport(&self) -> Option<&Arc<http::HttpTransport>> {
        match &self.transport {
            Transport::Http(t) => Some(t),
            _ => None,
        }
    }

    pub fn info(&self) -> UpstreamInfo {
        self.info.lock().map(|i| i.clone()).unwrap_or_default()
    }

    /// Keeps `guard` alive as long as the session.
    pub fn hold(&self, guard: Box<dyn std::any::Any + Send + Sync>) {
        let _ = self.guard.set(guard);
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether no client call has started for `idle` and none is in flight.
    pub fn idle_for(&self, idle: Duration) -> bool {
        let quiet = self
            .elapsed_ms()
            .saturating_sub(self.last_call_ms.load(Ordering::Relaxed));
        let busy = self
            .pending
            .lock()
            .map(|p| p.values().any(|w| matches!(w, Waiter::Client { .. })))
            .unwrap_or(true);
        !busy && u128::from(quiet) >= idle.as_millis()
    }

    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    fn insert_waiter(&self, id: u64, waiter: Waiter) -> Result<(), UpstreamError> {
        let mut pending = self
            .pending
            .lock()
            .map_err(|_| UpstreamError::Closed("lock poisoned".into()))?;
        // Checked under the lock so that `fail_all` cannot miss a waiter inserted concurrently.
        if self.is_closed() {
            return Err(UpstreamError::Closed("session closed".into()));
        }
        pending.insert(id, waiter);
        Ok(())
    }

    fn take_waiter(&self, id: u64) -> Option<Waiter> {
        self.pending.lock().ok().and_then(|mut p| p.remove(&id))
    }

    /// The gateway's own request; waits for the result.
    pub async fn request(
        self: &Arc<Self>,
        method: &str,
        params: Option<Box<RawValue>>,
    ) -> Result<Box<RawValue>, UpstreamError> {
        let id = self.next_id();
        let (tx, rx) = oneshot::channel();
        self.insert_waiter(id, Waiter::Internal(tx))?;
        let text = jsonrpc::request(&id, method, params.as_deref());
        if let Err(e) = self.send(text, Some(id)).await {
            self.take_waiter(id);
            return Err(e);
        }
        let timeout = self.call_timeout;
        let reply = match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(reply)) => reply?,
            Ok(Err(_)) => return Err(UpstreamError::Closed("session ended".into())),
            Err(_) => {
                self.take_waiter(id);
                return Err(UpstreamError::Timeout(timeout));
            }
        };
        if let Some(err) = reply.error {
            return Err(UpstreamError::Rpc(summarise_rpc_error(err.get())));
        }
        reply
            .result
            .ok_or_else(|| UpstreamError::Protocol("response without result".into()))
    }

    /// Starts a client's call. Its related messages and final response arrive on `tx`.
    /// Returns the upstream-side id (for cancellation). Sending is bounded by `deadline` too:
    /// an HTTP upstream may hold the POST open until it answers.
    pub async fn start_call<P: serde::Serialize + ?Sized>(
        self: &Arc<Self>,
        method: &str,
        params: Option<&P>,
        client_id: Box<RawValue>,
        progress_token: Option<String>,
        tx: mpsc::Sender<Outbound>,
        deadline: tokio::time::Instant,
    ) -> Result<u64, UpstreamError> {
        self.last_call_ms
            .store(self.elapsed_ms(), Ordering::Relaxed);
        let id = self.next_id();
        self.insert_waiter(
            id,
            Waiter::Client {
                tx,
                client_id,
                progress_token,
            },
        )?;
        let text = jsonrpc::request(&id, method, params);
        match tokio::time::timeout_at(deadline, self.send(text, Some(id))).await {
            Ok(Ok(())) => Ok(id),
            Ok(Err(e)) => {
                self.take_waiter(id);
                Err(e)
            }
            Err(_) => {
                self.cancel(id, "timed out at the gateway").await;
                Err(UpstreamError::Timeout(self.call_timeout))
            }
        }
    }

    /// Gives up on a call: forgets it and tells the upstream (`notifications/cancelled`).
    pub async fn cancel(self: &Arc<Self>, id: u64, reason: &str) {
        if self.take_waiter(id).is_some() && !self.is_closed() {
            let params = jsonrpc::to_raw(&serde_json::json!({ "requestId": id, "reason": reason }));
            let _ = self.notify("notifications/cancelled", Some(params)).await;
        }
    }

    /// The upstream id of the client call whose client-side id is `client_key` (JSON text).
    pub fn find_client_call(&self, client_key: &str) -> Option<u64> {
        let pending = self.pending.lock().ok()?;
        pending.iter().find_map(|(id, w)| match w {
            Waiter::Client { client_id, .. } if client_id.get().trim() == client_key => Some(*id),
            _ => None,
        })
    }

    /// Forgets a call without telling the upstream (the client went away).
    pub fn forget(&self, id: u64) {
        self.take_waiter(id);
    }

    pub async fn notify(
        self: &Arc<Self>,
        method: &str,
        params: Option<Box<RawValue>>,
    ) -> Result<(), UpstreamError> {
        self.send(jsonrpc::notification(method, params.as_deref()), None)
            .await
    }

    /// Sends a client's answer to a request the upstream made.
    pub async fn respond(
        self: &Arc<Self>,
        upstream_id: &RawValue,
        result: Option<&RawValue>,
        error: Option<&RawValue>,
    ) -> Result<(), UpstreamError> {
        self.send(jsonrpc::response(upstream_id, result, error), None)
            .await
    }

    /// Forwards an arbitrary notification text as is (e.g. roots/list_changed).
    pub async fn send_raw(self: &Arc<Self>, text: String) -> Result<(), UpstreamError> {
        self.send(text, None).await
    }

    async fn send(
        self: &Arc<Self>,
        text: String,
        related: Option<u64>,
    ) -> Result<(), UpstreamError> {
        if self.is_closed() {
            return Err(UpstreamError::Closed("session closed".into()));
        }
        match &self.transport {
            Transport::Http(t) => t.post(self, text, related).await,
            Transport::Sse(t) => t.post(text).await,
            Transport::Stdio(t) => t.send(text).await,
        }
    }

    /// Routes one message from the upstream. `related` is the call whose HTTP response stream
    /// carried it, when the transport knows.
    pub fn dispatch(self: &Arc<Self>, text: &str, related: Option<u64>) {
        let env = match Envelope::parse(text) {
            Ok(env) => env,
            Err(e) => {
                tracing::warn!(server = %self.server.name, error = %e, "upstream sent a message that is not JSON-RPC; dropped");
                return;
            }
        };
        match env.kind() {
            Kind::Response => self.complete(env),
            Kind::Notification => {
                if env.method() == "notifications/progress"
                    && let Some(tx) = self.progress_target(&env)
                {
                    let _ = tx.try_send(Outbound::Message(text.to_owned()));
                    return;
                }
                let related_tx = related
                    .and_then(|id| self.client_tx(id))
                    .or_else(|| self.sole_client_tx());
                if let Some(down) = self.downstream.upgrade() {
                    down.upstream_notification(self, &env, text, related_tx);
                }
            }
            Kind::Request => {
                let related_tx = related
                    .and_then(|id| self.client_tx(id))
                    .or_else(|| self.sole_client_tx());
                let Some(id) = env.id.as_ref().map(|i| i.to_owned()) else {
                    return;
                };
                match self.downstream.upgrade() {
                    Some(down) => down.upstream_request(self, id, &env, related_tx),
                    None => {
                        let me = self.clone();
                        tokio::spawn(async move {
                            let err = jsonrpc::error(
                                Some(&id),
                                jsonrpc::METHOD_NOT_FOUND,
                                "no client session to answer",
                                None,
                            );
                            let _ = me.send_raw(err).await;
                        });
                    }
                }
            }
            Kind::Invalid => {
                tracing::warn!(server = %self.server.name, "upstream sent an invalid JSON-RPC message; dropped");
            }
        }
    }

    fn complete(&self, env: Envelope) {
        let Some(id) = env.id.as_ref().and_then(|i| i.get().parse::<u64>().ok()) else {
            tracing::warn!(server = %self.server.name, "upstream response with an id Tessera never sent; dropped");
            return;
        };
        match self.take_waiter(id) {
            Some(Waiter::Client { tx, client_id, .. }) => {
                let text =
                    jsonrpc::response(&client_id, env.result.as_deref(), env.error.as_deref());
                send_final(tx, text);
            }
            Some(Waiter::Internal(tx)) => {
                let _ = tx.send(Ok(env));
            }
            None => {}
        }
    }

    fn progress_target(&self, env: &Envelope) -> Option<mpsc::Sender<Outbound>> {
        let params = RawObject::parse(env.params_str()).ok()?;
        let token = params.get("progressToken")?.get().to_owned();
        let pending = self.pending.lock().ok()?;
        pending.values().find_map(|w| match w {
            Waiter::Client {
                tx,
                progress_token: Some(t),
                ..
            } if *t == token => Some(tx.clone()),
            _ => None,
        })
    }

    fn client_tx(&self, id: u64) -> Option<mpsc::Sender<Outbound>> {
        match self.pending.lock().ok()?.get(&id)? {
            Waiter::Client { tx, .. } => Some(tx.clone()),
            Waiter::Internal(_) => None,
        }
    }

    /// With exactly one client call in flight, an unattributed upstream request belongs to it
    /// (stdio and legacy SSE carry no per-call stream).
    fn sole_client_tx(&self) -> Option<mpsc::Sender<Outbound>> {
        let pending = self.pending.lock().ok()?;
        let mut clients = pending.values().filter_map(|w| match w {
            Waiter::Client { tx, .. } => Some(tx),
            Waiter::Internal(_) => None,
        });
        match (clients.next(), clients.next()) {
            (Some(tx), None) => Some(tx.clone()),
            _ => None,
        }
    }

    /// Whether a call is still waiting for its response.
    pub fn is_waiting(&self, id: u64) -> bool {
        self.pending
            .lock()
            .map(|p| p.contains_key(&id))
            .unwrap_or(false)
    }

    /// Ends one call with an upstream-failure error.
    pub fn fail_call(&self, id: u64, reason: &str) {
        if let Some(waiter) = self.take_waiter(id) {
            self.fail_waiter(waiter, reason);
        }
    }

    /// Answers a waiter that will get no response from the upstream.
    fn fail_waiter(&self, waiter: Waiter, reason: &str) {
        match waiter {
            Waiter::Client { tx, client_id, .. } => {
                let text = jsonrpc::upstream_error(
                    &client_id,
                    &self.server.name,
                    jsonrpc::UpstreamFault::Failed(reason),
                );
                send_final(tx, text);
            }
            Waiter::Internal(tx) => {
                let _ = tx.send(Err(UpstreamError::Closed(reason.to_owned())));
            }
        }
    }

    /// Ends every pending call with `reason` and marks the session closed. Idempotent.
    pub fn fail_all(self: &Arc<Self>, reason: &str) {
        let drained: Vec<(u64, Waiter)> = match self.pending.lock() {
            Ok(mut p) => {
                if self.closed.swap(true, Ordering::AcqRel) {
                    return;
                }
                p.drain().collect()
            }
            Err(_) => return,
        };
        tracing::info!(server = %self.server.name, reason, "upstream session ended");
        for (_, waiter) in drained {
            self.fail_waiter(waiter, reason);
        }
        if let Some(down) = self.downstream.upgrade() {
            down.upstream_closed(self, reason);
        }
    }

    /// Ends the session: tells the upstream (HTTP DELETE / stop the child) and fails pending calls.
    pub async fn close(self: &Arc<Self>, reason: &str) {
        self.fail_all(reason);
        match &self.transport {
            Transport::Http(t) => t.close().await,
            Transport::Sse(t) => t.close(),
            Transport::Stdio(t) => t.close().await,
        }
    }
}

impl Drop for UpstreamSession {
    fn drop(&mut self) {
        LIVE_SESSIONS.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Delivers a call's last message. It must arrive even when related messages fill the channel
/// (a client that sees no response would wait forever); a closed channel means the client left.
fn send_final(tx: mpsc::Sender<Outbound>, text: String) {
    if let Err(mpsc::error::TrySendError::Full(message)) = tx.try_send(Outbound::Final(text)) {
        tokio::spawn(async move {
            let _ = tx.send(message).await;
        });
    }
}

/// An upstream JSON-RPC error reduced to code and message for logs and gateway errors.
fn summarise_rpc_error(raw: &str) -> String {
    #[derive(serde::Deserialize)]
    struct E {
        code: Option<i64>,
        message: Option<String>,
    }
    match serde_json::from_str::<E>(raw) {
        Ok(e) => format!(
            "{} ({})",
            e.message.unwrap_or_default(),
            e.code.unwrap_or_default()
        ),
        Err(_) => "malformed error".into(),
    }
}
