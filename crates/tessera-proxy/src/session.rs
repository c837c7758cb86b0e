//! A client session: one MCP client connected to the gateway, with its own upstream session per
//! server (opened on first use), the map of its in-flight calls, the requests upstreams sent it
//! that await its answer, and its server-to-client stream.

use crate::FastMap as HashMap;
use crate::caller::Caller;
use crate::catalog::{self};
use crate::credentials::{CredentialFailure, IdentityCell, UpstreamAuth};
use crate::error::UpstreamError;
use crate::gateway::Gateway;
use crate::jsonrpc::{self, Envelope, RawObject};
use crate::upstream::{Connect, Downstream, Outbound, UpstreamSession};
use serde_json::value::RawValue;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use tessera_identity::Identity;
use tokio::sync::{OnceCell, mpsc};

/// Messages kept for a client that has no server-to-client stream open yet.
const BACKLOG: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrontEnd {
    /// Streamable HTTP (2025-03-26 and later) at `/mcp`.
    Streamable,
    /// Legacy HTTP+SSE (2024-11-05) at `/sse`: every message to the client goes down the stream.
    LegacySse,
}

/// What `initialize` established.
#[derive(Debug)]
pub struct Negotiated {
    pub protocol_version: String,
    /// The client's own initialize params (capabilities, clientInfo, anything else), replayed to
    /// each upstream so it sees the real client.
    pub client_params: RawObject,
}

type UpstreamCell = Arc<OnceCell<Arc<UpstreamSession>>>;
/// A request an upstream made, waiting for the client's answer.
struct ServerRequest {
    upstream: Weak<UpstreamSession>,
    /// Its id at the upstream.
    id: Box<RawValue>,
    /// `params._meta.progressToken` (JSON text): the client's progress for it goes back there.
    progress_token: Option<String>,
}

#[derive(Default)]
struct Standalone {
    tx: Option<mpsc::Sender<String>>,
    backlog: VecDeque<String>,
}

pub struct ClientSession {
    pub id: String,
    pub front_end: FrontEnd,
    pub caller: Caller,
    /// What this session's `tools/list` offers: every tool, or the search tools.
    pub routing: tessera_config::RoutingMode,
    gateway: Weak<Gateway>,
    negotiated: OnceLock<Negotiated>,
    upstreams: Mutex<HashMap<String, UpstreamCell>>,
    /// Client request id (JSON text) → the upstream call serving it.
    calls_in_flight: AtomicUsize,
    /// Gateway-assigned id (JSON text) → the upstream request it stands for.
    server_requests: Mutex<HashMap<String, ServerRequest>>,
    next_server_request: AtomicU64,
    standalone: Mutex<Standalone>,
    log_level: Mutex<Option<Box<RawValue>>>,
    /// Milliseconds since the gateway started, at the last message from the client.
    last_active: AtomicU64,
    /// The caller's latest identity (renewed tokens replace the first one); `None` if anonymous.
    identity: Option<IdentityCell>,
    /// URL-mode elicitations sent to this client, waiting for a connection: (server, id).
    elicitations: Mutex<Vec<(String, String)>>,
    /// When the session was opened (or resumed) here, for the admin's list.
    pub opened_at: std::time::SystemTime,
    me: Weak<ClientSession>,
}

/// A fresh random session id (122 random bits, hex).
pub fn new_session_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

impl ClientSession {
    pub fn new(gateway: Weak<Gateway>, front_end: FrontEnd, caller: Caller) -> Arc<Self> {
        Self::with_id(
            gateway,
            front_end,
            caller,
            new_session_id(),
            tessera_config::RoutingMode::Direct,
        )
    }

    /// A session under a given id (a sealed id, or one resumed from another replica).
    pub fn with_id(
        gateway: Weak<Gateway>,
        front_end: FrontEnd,
        caller: Caller,
        id: String,
        routing: tessera_config::RoutingMode,
    ) -> Arc<Self> {
        Arc::new_cyclic(|me| ClientSession {
            id,
            front_end,
            routing,
            identity: caller.identity().cloned().map(IdentityCell::new),
            caller,
            gateway,
            negotiated: OnceLock::new(),
            upstreams: Mutex::new(HashMap::default()),
            calls_in_flight: AtomicUsize::new(0),
            server_requests: Mutex::new(HashMap::default()),
            next_server_request: AtomicU64::new(1),
            standalone: Mutex::new(Standalone::default()),
            log_level: Mutex::new(None),
            last_active: AtomicU64::new(0),
            elicitations: Mutex::new(Vec::new()),
            opened_at: std::time::SystemTime::now(),
            me: me.clone(),
        })
    }

    /// Records client activity at `now_ms` (milliseconds since the gateway started).
    pub fn touch(&self, now_ms: u64) {
        self.last_active.store(now_ms, Ordering::Relaxed);
    }

    /// Milliseconds since the gateway started, at the last message from the client.
    pub fn last_active_ms(&self) -> u64 {
        self.last_active.load(Ordering::Relaxed)
    }

    /// Client requests being served now.
    pub fn calls_in_flight(&self) -> usize {
        self.calls_in_flight.load(Ordering::Relaxed)
    }

    /// Whether the session has been idle since before `cutoff_ms`: no message, no open stream,
    /// no call in flight.
    pub fn idle_since(&self, cutoff_ms: u64) -> bool {
        let streaming = self
            .standalone
            .lock()
            .map(|s| s.tx.as_ref().is_some_and(|tx| !tx.is_closed()))
            .unwrap_or(false);
        let busy = self.calls_in_flight.load(Ordering::Relaxed) > 0;
        self.last_active.load(Ordering::Relaxed) < cutoff_ms && !streaming && !busy
    }

    /// The caller's current identity (with the latest token the client presented).
    pub fn identity(&self) -> Option<Arc<Identity>> {
        self.identity.as_ref().map(IdentityCell::get)
    }

    /// A later request of the same principal proved `caller`: keep its (possibly renewed) token.
    pub fn renew_caller(&self, caller: &Caller) {
        if let (Some(cell), Some(identity)) = (&self.identity, caller.identity()) {
            cell.update(identity);
        }
    }

    /// Remembers a URL-mode elicitation sent to this client for connecting `server`.
    pub fn add_elicitation(&self, server: &str, id: String) {
        if let Ok(mut e) = self.elicitations.lock() {
            // Bounded: a client that never completes cannot grow this without limit.
            if e.len() >= 32 {
                e.remove(0);
            }
            e.push((server.to_owned(), id));
        }
    }

    /// The elicitation ids waiting for `server`, forgotten once taken.
    pub fn take_elicitations(&self, server: &str) -> Vec<String> {
        let Ok(mut e) = self.elicitations.lock() else {
            return Vec::new();
        };
        let (taken, kept): (Vec<_>, Vec<_>) = e.drain(..).partition(|(s, _)| s == server);
        *e = kept;
        taken.into_iter().map(|(_, id)| id).collect()
    }

    /// Whether the client declared URL-mode elicitation (MCP 2025-11-25:
    /// `capabilities.elicitation.url`).
    pub fn supports_url_elicitation(&self) -> bool {
        let Some(n) = self.negotiated() else {
            return false;
        };
        let Some(caps) = n.client_params.get("capabilities") else {
            return false;
        };
        #[derive(serde::Deserialize)]
        struct Caps {
            elicitation: Option<Elicitation>,
        }
        #[derive(serde::Deserialize)]
        struct Elicitation {
            url: Option<serde::de::IgnoredAny>,
        }
        serde_json::from_str::<Caps>(caps.get())
            .ok()
            .and_then(|c| c.elicitation)
            .is_some_and(|e| e.url.is_some())
    }

    /// Ends per-user upstream sessions (brokered and personal servers: each counts against the
    /// session caps) with no call for `idle` (HTTP DELETE at the upstream).
    pub async fn evict_idle_upstreams(&self, idle: std::time::Duration) {
        // A personal server has no mark of its own in its configuration: the caller's view says
        // which names are theirs (taken before the map's lock; no copy of the names).
        let view = match (self.gateway(), self.caller.identity()) {
            (Some(gw), Some(identity)) => gw.user_view(&identity.user),
            _ => None,
        };
        let personal = |name: &str| view.as_ref().is_some_and(|v| v.personal(name).is_some());
        let idle_sessions: Vec<Arc<UpstreamSession>> = {
            let Ok(mut map) = self.upstreams.lock() else {
                return;
            };
            let mut out = Vec::new();
            map.retain(|name, cell| match cell.get() {
                Some(s)
                    if (s.server.auth_broker.is_some() || personal(name)) && s.idle_for(idle) =>
                {
                    out.push(s.clone());
                    false
                }
                _ => true,
            });
            out
        };
        for s in idle_sessions {
            tracing::info!(session = %crate::live::LogId(&self.id), server = %s.server.name, "ending idle per-user upstream session");
            s.close("idle").await;
        }
    }

    pub fn negotiate(&self, n: Negotiated) -> bool {
        self.negotiated.set(n).is_ok()
    }

    pub fn negotiated(&self) -> Option<&Negotiated> {
        self.negotiated.get()
    }

    pub fn is_initialized(&self) -> bool {
        self.negotiated.get().is_some()
    }

    pub fn gateway(&self) -> Option<Arc<Gateway>> {
        self.gateway.upgrade()
    }

    /// This client's session with `server`, opened on first use. Concurrent first calls share
    /// one connection attempt; a failed or closed session is replaced on the next call.
    pub async fn upstream(&self, server: &str) -> Result<Arc<UpstreamSession>, UpstreamError> {
        for _ in 0..2 {
            let cell = {
                let mut map = self
                    .upstreams
                    .lock()
                    .map_err(|_| UpstreamError::Closed("lock poisoned".into()))?;
                match map.get(server) {
                    Some(cell) => cell.clone(),
                    None => map.entry(server.to_owned()).or_default().clone(),
                }
            };
            if let Some(s) = cell.get() {
                if !s.is_closed() {
                    return Ok(s.clone());
                }
                self.drop_upstream(server, &cell);
                continue;
            }
            let result = cell.get_or_try_init(|| self.connect(server)).await;
            match result {
                Ok(s) if !s.is_closed() => return Ok(s.clone()),
                Ok(_) => self.drop_upstream(server, &cell),
                Err(e) => {
                    self.drop_upstream(server, &cell);
                    return Err(e);
                }
            }
        }
        Err(UpstreamError::Closed(
            "upstream session closed while opening".into(),
        ))
    }

    fn drop_upstream(&self, server: &str, cell: &UpstreamCell) {
        if let Ok(mut map) = self.upstreams.lock()
            && map.get(server).is_some_and(|c| Arc::ptr_eq(c, cell))
        {
            map.remove(server);
        }
    }

    async fn connect(&self, server: &str) -> Result<Arc<UpstreamSession>, UpstreamError> {
        let gw = self
            .gateway()
            .ok_or_else(|| UpstreamError::Closed("gateway stopped".into()))?;
        let entry = gw
            .entry_for(&self.caller, server)
            .map_err(|_| UpstreamError::Config(format!("unknown server {server}")))?;
        // A personal server's URL was checked when it was added; its name may resolve
        // elsewhere since, so every connection checks again (SSRF): here for a clear error and
        // for literal addresses, and in the guarded client's resolver when the connection is
        // made (no window between check and use).
        if entry.owner.is_some()
            && let tessera_config::Transport::Http { url, .. } = &entry.config.transport
        {
            let host = url.host_str().unwrap_or_default();
            let port = url.port_or_known_default().unwrap_or(443);
            gw.config
                .user_servers
                .check_host(host, port)
                .await
                .map_err(UpstreamError::Config)?;
        }
        let negotiated = self
            .negotiated()
            .ok_or_else(|| UpstreamError::Protocol("client session not initialized".into()))?;
        let downstream: Weak<dyn Downstream> = self.me.clone();
        // A brokered server: this user's own session, under the caps, with their credential on
        // every request. Never opened for an anonymous caller or without a broker.
        let (auth, slot) = if entry.brokered {
            let identity = self.identity.clone().ok_or(UpstreamError::Credential(
                CredentialFailure::Unauthenticated,
            ))?;
            let broker = gw.broker().cloned().ok_or_else(|| {
                UpstreamError::Credential(CredentialFailure::Unavailable(
                    "the credential broker is not configured".into(),
                ))
            })?;
            let slot = gw
                .take_session_slot(&identity.get().user)
                .map_err(UpstreamError::Capacity)?;
            let auth = Arc::new(UpstreamAuth {
                broker,
                identity,
                server: Arc::from(server),
            });
            (Some(auth), Some(slot))
        } else if let Some(owner) = &entry.owner {
            // A personal server: the owner's own session, under the same caps.
            let slot = gw
                .take_session_slot(owner)
                .map_err(UpstreamError::Capacity)?;
            (None, Some(slot))
        } else {
            (None, None)
        };
        let session = UpstreamSession::connect(Connect {
            server: entry.config.clone(),
            // A personal server's connections resolve through the guarded client.
            http: if entry.owner.is_some() {
                &gw.personal_http
            } else {
                &gw.http
            },
            downstream,
            init_params: negotiated.client_params.clone(),
            protocol_version: &negotiated.protocol_version,
            init_timeout: entry.init_timeout,
            call_timeout: entry.call_timeout,
            auth,
        })
        .await?;
        if let Some(slot) = slot {
            session.hold(Box::new(slot));
        }
        let level = self.log_level.lock().ok().and_then(|l| l.clone());
        if let Some(level) = level {
            let _ = session.request("logging/setLevel", Some(level)).await;
        }
        Ok(session)
    }

    /// Ends this client's session with `server` (its configuration went away or changed, or an
    /// admin restarted it); the next call opens a new one. Whether one was open.
    pub async fn close_upstream(&self, server: &str) -> bool {
        let cell = self
            .upstreams
            .lock()
            .ok()
            .and_then(|mut m| m.remove(server));
        match cell.as_ref().and_then(|c| c.get()) {
            Some(session) => {
                session.close("server removed or changed").await;
                true
            }
            None => false,
        }
    }

    /// The upstream sessions open now.
    pub fn open_upstreams(&self) -> Vec<Arc<UpstreamSession>> {
        self.upstreams
            .lock()
            .map(|m| m.values().filter_map(|c| c.get().cloned()).collect())
            .unwrap_or_default()
    }

    pub fn set_log_level(&self, params: Box<RawValue>) {
        if let Ok(mut l) = self.log_level.lock() {
            *l = Some(params);
        }
    }

    pub fn call_started(&self) {
        self.calls_in_flight.fetch_add(1, Ordering::Relaxed);
    }

    pub fn call_ended(&self) {
        self.calls_in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    /// The client cancelled one of its requests: tell the upstream serving it. (Found by scanning
    /// the few calls in flight, so that the hot path keeps no per-call index.)
    pub async fn cancel_call(&self, client_key: &str, reason: &str) {
        for upstream in self.open_upstreams() {
            if let Some(id) = upstream.find_client_call(client_key) {
                upstream.cancel(id, reason).await;
                return;
            }
        }
    }

    /// The client answered a request an upstream made: route the answer back under the
    /// upstream's own id.
    pub async fn answer_server_request(&self, env: &Envelope) {
        let Some(id) = env.id.as_deref() else { return };
        let entry = self
            .server_requests
            .lock()
            .ok()
            .and_then(|mut m| m.remove(&jsonrpc::id_key(id)));
        let Some(request) = entry else {
            tracing::debug!(session = %crate::live::LogId(&self.id), "response to an unknown server request; dropped");
            return;
        };
        if let Some(upstream) = request.upstream.upgrade()
            && let Err(e) = upstream
                .respond(&request.id, env.result.as_deref(), env.error.as_deref())
                .await
        {
            tracing::warn!(server = %upstream.server.name, error = %e, "could not deliver the client's answer upstream");
        }
    }

    /// The client reports progress on a request an upstream made (it carried a progress token):
    /// the notification goes, unchanged, to that upstream.
    pub async fn forward_progress(&self, env: &Envelope, raw: String) {
        let Some(token) = RawObject::parse(env.params_str())
            .ok()
            .and_then(|p| p.get("progressToken").map(|t| t.get().to_owned()))
        else {
            return;
        };
        let upstream = self.server_requests.lock().ok().and_then(|m| {
            m.values()
                .find(|r| r.progress_token.as_deref() == Some(token.as_str()))
                .and_then(|r| r.upstream.upgrade())
        });
        if let Some(upstream) = upstream {
            let _ = upstream.send_raw(raw).await;
        }
    }

    /// Queues a message on the server-to-client stream (GET stream or legacy SSE stream); kept in
    /// a bounded backlog while no stream is open.
    pub fn send_standalone(&self, text: String) {
        let Ok(mut s) = self.standalone.lock() else {
            return;
        };
        if let Some(tx) = &s.tx {
            match tx.try_send(text) {
                Ok(()) => return,
                Err(mpsc::error::TrySendError::Full(text)) => {
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        let _ = tx.send(text).await;
                    });
                    return;
                }
                Err(mpsc::error::TrySendError::Closed(text)) => {
                    s.tx = None;
                    s.backlog.push_back(text);
                }
            }
        } else {
            s.backlog.push_back(text);
        }
        if s.backlog.len() > BACKLOG {
            s.backlog.pop_front();
            tracing::warn!(session = %crate::live::LogId(&self.id), "client has no stream open; oldest queued message dropped");
        }
    }

    /// Attaches a server-to-client stream. Fails if one is already open (streamable HTTP allows one).
    pub fn attach_stream(&self, capacity: usize) -> Option<mpsc::Receiver<String>> {
        let mut s = self.standalone.lock().ok()?;
        if s.tx.as_ref().is_some_and(|tx| !tx.is_closed()) {
            return None;
        }
        let (tx, rx) = mpsc::channel(capacity.max(BACKLOG + 16));
        while let Some(m) = s.backlog.pop_front() {
            let _ = tx.try_send(m);
        }
        s.tx = Some(tx);
        Some(rx)
    }

    /// Ends the session's upstream sessions.
    pub async fn close(&self) {
        let cells: Vec<UpstreamCell> = self
            .upstreams
            .lock()
            .map(|mut m| m.drain().map(|(_, c)| c).collect())
            .unwrap_or_default();
        let closes = cells
            .iter()
            .filter_map(|c| c.get())
            .map(|s| s.close("client session ended"));
        futures::future::join_all(closes).await;
        if let Ok(mut s) = self.standalone.lock() {
            s.tx = None;
        }
    }

    fn deliver(&self, text: String, related: Option<mpsc::Sender<Outbound>>) {
        if self.front_end == FrontEnd::Streamable
            && let Some(tx) = related
        {
            match tx.try_send(Outbound::Message(text)) {
                Ok(()) => return,
                Err(mpsc::error::TrySendError::Full(Outbound::Message(text))) => {
                    tokio::spawn(async move {
                        let _ = tx.send(Outbound::Message(text)).await;
                    });
                    return;
                }
                Err(e) => {
                    // The request's stream is gone; use the session stream instead.
                    let (Outbound::Message(text) | Outbound::Final(text)) = e.into_inner();
                    self.send_standalone(text);
                    return;
                }
            }
        }
        self.send_standalone(text);
    }
}

impl Downstream for ClientSession {
    fn upstream_request(
        &self,
        from: &Arc<UpstreamSession>,
        id: Box<RawValue>,
        message: &Envelope,
        related: Option<mpsc::Sender<Outbound>>,
    ) {
        if message.method() == "ping" {
            let from = from.clone();
            tokio::spawn(async move {
                let _ = from.respond(&id, Some(&jsonrpc::raw("{}")), None).await;
            });
            return;
        }
        let gateway_id = self.next_server_request.fetch_add(1, Ordering::Relaxed);
        let gateway_id_text = format!("\"tessera-{gateway_id}\"");
        let progress_token = RawObject::parse(message.params_str())
            .ok()
            .and_then(|p| p.get("_meta").and_then(|m| RawObject::parse(m.get()).ok()))
            .and_then(|m| m.get("progressToken").map(|t| t.get().to_owned()));
        if let Ok(mut m) = self.server_requests.lock() {
            m.insert(
                gateway_id_text.clone(),
                ServerRequest {
                    upstream: Arc::downgrade(from),
                    id,
                    progress_token,
                },
            );
        }
        let text = jsonrpc::request(
            &jsonrpc::raw(&gateway_id_text),
            message.method(),
            message.params.as_deref(),
        );
        self.deliver(text, related);
    }

    fn upstream_notification(
        &self,
        from: &Arc<UpstreamSession>,
        message: &Envelope,
        raw: &str,
        related: Option<mpsc::Sender<Outbound>>,
    ) {
        let method = message.method();
        if method.ends_with("/list_changed") {
            let Some(gw) = self.gateway() else { return };
            let Ok(entry) = gw.entry_for(&self.caller, &from.server.name) else {
                return;
            };
            match self.caller.identity() {
                // This user's catalogue of a brokered or personal server: rediscovered on
                // their next list; each of their clients is told.
                Some(identity) if entry.per_user() => {
                    entry.forget_user_catalog(&identity.user);
                    let text = jsonrpc::notification(method, None);
                    for session in gw.sessions_of(&identity.user) {
                        if session.is_initialized() {
                            session.send_standalone(text.clone());
                        }
                    }
                }
                // The gateway re-lists and tells every client once the catalog has changed.
                _ => entry.request_refresh(),
            }
            return;
        }
        let text = match method {
            "notifications/resources/updated" => {
                let Ok(mut params) = RawObject::parse(message.params_str()) else {
                    return;
                };
                let Some(uri) = params.get_str("uri") else {
                    return;
                };
                params.set_str("uri", &catalog::namespace_uri(&from.server.name, &uri));
                jsonrpc::notification(method, Some(&params.to_raw()))
            }
            "notifications/cancelled" => {
                // The upstream withdrew a request it made to the client: use the gateway's id.
                let Ok(mut params) = RawObject::parse(message.params_str()) else {
                    return;
                };
                let Some(upstream_id) = params.get("requestId").map(|v| v.get().to_owned()) else {
                    return;
                };
                let found = self.server_requests.lock().ok().and_then(|mut m| {
                    let key = m
                        .iter()
                        .find(|(_, r)| {
                            r.id.get() == upstream_id
                                && r.upstream.upgrade().is_some_and(|s| Arc::ptr_eq(&s, from))
                        })
                        .map(|(k, _)| k.clone())?;
                    m.remove(&key);
                    Some(key)
                });
                let Some(gateway_id) = found else { return };
                params.set("requestId", jsonrpc::raw(&gateway_id));
                jsonrpc::notification(method, Some(&params.to_raw()))
            }
            _ => raw.to_owned(),
        };
        self.deliver(text, related);
    }

    fn upstream_closed(&self, from: &Arc<UpstreamSession>, reason: &str) {
        tracing::debug!(session = %crate::live::LogId(&self.id), server = %from.server.name, reason, "upstream session closed");
        if let Ok(mut map) = self.upstreams.lock() {
            let name = &from.server.name;
            if map
                .get(name)
                .and_then(|c| c.get())
                .is_some_and(|s| Arc::ptr_eq(s, from))
            {
                map.remove(name);
            }
        }
    }
}
