//! Decides what happens to each client message: answered by the gateway (initialize, ping,
//! merged lists), routed to one upstream (tools/call, prompts/get, resources/read, ...), or
//! handled as a notification/response (cancellation, answers to upstream requests).

use crate::catalog::{self, ListKind};
use crate::error::UpstreamError;
use crate::gateway::{Denied, Gateway, ServerEntry};
use crate::jsonrpc::{self, Envelope, Kind, RawObject, UpstreamFault};
use crate::session::{ClientSession, Negotiated};
use crate::upstream::{LATEST_VERSION, Outbound, SUPPORTED_VERSIONS, UpstreamSession};
use serde_json::value::RawValue;
use std::sync::Arc;
use tessera_config::RoutingMode;
use tessera_identity::Permission;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// The gateway's answer to one client request.
pub enum Reply {
    /// Known at once.
    Now(String),
    /// Being served by an upstream; related messages then the response arrive through the handle.
    Call(CallHandle),
}

/// A client request in flight at an upstream.
pub struct CallHandle {
    rx: mpsc::Receiver<Outbound>,
    upstream: Arc<UpstreamSession>,
    upstream_id: u64,
    deadline: Instant,
    client_id: Box<RawValue>,
    session: Arc<ClientSession>,
    /// The upstream's entry, for its `/metrics` counters.
    entry: Arc<ServerEntry>,
    done: bool,
    started: Instant,
    /// A `tools/call` of a signed-in user: recorded when it ends.
    observation: Option<crate::observe::Pending>,
}

impl CallHandle {
    pub(crate) fn observe(&mut self, pending: crate::observe::Pending) {
        self.observation = Some(pending);
    }

    /// Records how the call ended (metrics; activity for observed tool calls).
    fn record(&mut self, final_text: Option<&str>, timed_out: bool) {
        use crate::observe::CallOutcome;
        use std::sync::atomic::Ordering::Relaxed;
        self.entry.stats.latency.observe(self.started.elapsed());
        if let Some(text) = final_text
            && jsonrpc::is_error_response(text, &self.client_id)
        {
            self.entry.stats.errors.fetch_add(1, Relaxed);
        }
        if let Some(pending) = self.observation.take() {
            let outcome = match (final_text, timed_out) {
                (_, true) => CallOutcome::Timeout,
                (Some(text), false) => crate::observe::outcome_of(text),
                (None, false) => CallOutcome::Cancelled,
            };
            pending.finish(outcome);
        }
    }

    /// The next message for the client; `Outbound::Final` is the last. `None` means the call
    /// ended without a response for the client: it cancelled the request (every failure path
    /// of an upstream session sends a `Final` error before it lets go of the call).
    pub async fn next(&mut self) -> Option<Outbound> {
        if self.done {
            return None;
        }
        // A JSON-answered call already has its response queued: no timer needed.
        let received = match self.rx.try_recv() {
            Ok(message) => Ok(Some(message)),
            Err(mpsc::error::TryRecvError::Disconnected) => Ok(None),
            Err(mpsc::error::TryRecvError::Empty) => {
                tokio::time::timeout_at(self.deadline, self.rx.recv()).await
            }
        };
        match received {
            Ok(Some(Outbound::Final(text))) => {
                self.finish();
                self.record(Some(&text), false);
                Some(Outbound::Final(text))
            }
            Ok(Some(message)) => Some(message),
            Ok(None) => {
                self.finish();
                self.record(None, false);
                None
            }
            Err(_) => {
                self.finish();
                self.record(None, true);
                self.entry
                    .stats
                    .timeouts
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                self.upstream
                    .cancel(self.upstream_id, "timed out at the gateway")
                    .await;
                let fault = UpstreamFault::Timeout(self.upstream.call_timeout);
                Some(Outbound::Final(jsonrpc::upstream_error(
                    &self.client_id,
                    &self.upstream.server.name,
                    fault,
                )))
            }
        }
    }

    fn finish(&mut self) {
        self.done = true;
        self.session.call_ended();
    }
}

impl Drop for CallHandle {
    fn drop(&mut self) {
        if !self.done {
            // The client went away before the answer: nobody can receive it any more.
            self.upstream.forget(self.upstream_id);
            self.session.call_ended();
            self.record(None, false);
        }
    }
}

/// Handles a client request.
pub async fn request(gw: &Arc<Gateway>, session: &Arc<ClientSession>, env: Envelope) -> Reply {
    let Some(id) = env.id.as_deref() else {
        return Reply::Now(jsonrpc::error(
            None,
            jsonrpc::INVALID_REQUEST,
            "request without id",
            None,
        ));
    };
    let method = env.method();
    if method == "initialize" {
        return Reply::Now(initialize(session, id, env.params_str()));
    }
    if !session.is_initialized() {
        return Reply::Now(jsonrpc::error(
            Some(id),
            jsonrpc::INVALID_REQUEST,
            "session not initialized: send initialize first",
            None,
        ));
    }
    match method {
        "ping" => Reply::Now(jsonrpc::response(id, Some(&jsonrpc::raw("{}")), None)),
        "tools/list" | "prompts/list" | "resources/list" | "resources/templates/list" => {
            let kind = ListKind::from_method(method).unwrap_or(ListKind::Tools);
            Reply::Now(list(gw, session, kind, id, env.params.as_deref()).await)
        }
        "tools/call" => {
            let started = std::time::Instant::now();
            if session.routing == RoutingMode::RetrieveTools {
                match crate::search::search_mode_call(gw, session, env.params_str(), id).await {
                    crate::search::SearchModeCall::Answered(reply) => return reply,
                    crate::search::SearchModeCall::Unwrapped(params) => {
                        let reply = route_params(gw, session, method, &params, id).await;
                        return crate::observe::tool_call(gw, session, &params, id, started, reply);
                    }
                    crate::search::SearchModeCall::Direct => {}
                }
            }
            let reply = route_by_name(gw, session, &env, id).await;
            crate::observe::tool_call(gw, session, env.params_str(), id, started, reply)
        }
        "prompts/get" => route_by_name(gw, session, &env, id).await,
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
            route_by_uri(gw, session, &env, id).await
        }
        "completion/complete" => route_completion(gw, session, &env, id).await,
        "logging/setLevel" => {
            let params = env.params.clone().unwrap_or_else(|| jsonrpc::raw("{}"));
            session.set_log_level(params.clone());
            // Answer only once every open upstream session has applied the level, so that the
            // client's next request cannot overtake it. (Sessions opened later get it on connect.)
            let applied = session.open_upstreams().into_iter().map(|upstream| {
                let params = params.clone();
                async move {
                    if let Err(e) = upstream.request("logging/setLevel", Some(params)).await {
                        tracing::debug!(server = %upstream.server.name, error = %e, "upstream did not take logging/setLevel");
                    }
                }
            });
            futures::future::join_all(applied).await;
            Reply::Now(jsonrpc::response(id, Some(&jsonrpc::raw("{}")), None))
        }
        other => Reply::Now(jsonrpc::error(
            Some(id),
            jsonrpc::METHOD_NOT_FOUND,
            &format!("method not found: {other}"),
            None,
        )),
    }
}

/// Handles a client notification.
pub async fn notification(session: &Arc<ClientSession>, env: Envelope) {
    match env.method() {
        "notifications/cancelled" => {
            let Ok(params) = RawObject::parse(env.params_str()) else {
                return;
            };
            let Some(request_id) = params.get("requestId") else {
                return;
            };
            let reason = params
                .get_str("reason")
                .unwrap_or_else(|| "cancelled by the client".into());
            session
                .cancel_call(&jsonrpc::id_key(request_id), &reason)
                .await;
        }
        "notifications/roots/list_changed" => {
            let text = jsonrpc::notification(env.method(), env.params.as_deref());
            for upstream in session.open_upstreams() {
                let _ = upstream.send_raw(text.clone()).await;
            }
        }
        "notifications/progress" => {
            let text = jsonrpc::notification(env.method(), env.params.as_deref());
            session.forward_progress(&env, text).await;
        }
        // `initialized` and anything else: nothing to do at the gateway.
        _ => {}
    }
}

/// Handles any client message; returns the reply for requests. Each message gets a tracing
/// span (debug level, so it costs nothing unless enabled) naming its session and method.
pub async fn message(
    gw: &Arc<Gateway>,
    session: &Arc<ClientSession>,
    env: Envelope,
) -> Option<Reply> {
    use tracing::Instrument;
    let span = tracing::debug_span!("mcp", session = %crate::live::LogId(&session.id), caller = session.caller.label(), method = env.method.as_deref().unwrap_or("-"));
    handle(gw, session, env).instrument(span).await
}

async fn handle(gw: &Arc<Gateway>, session: &Arc<ClientSession>, env: Envelope) -> Option<Reply> {
    if env.jsonrpc.as_deref() != Some("2.0") {
        let message = "jsonrpc must be \"2.0\"";
        return Some(Reply::Now(jsonrpc::error(
            env.id.as_deref(),
            jsonrpc::INVALID_REQUEST,
            message,
            None,
        )));
    }
    match env.kind() {
        Kind::Request => {
            gw.count_request(env.method());
            Some(request(gw, session, env).await)
        }
        Kind::Notification => {
            gw.count_request("notifications");
            notification(session, env).await;
            None
        }
        Kind::Response => {
            gw.count_request("responses");
            session.answer_server_request(&env).await;
            None
        }
        Kind::Invalid => Some(Reply::Now(jsonrpc::error(
            env.id.as_deref(),
            jsonrpc::INVALID_REQUEST,
            "not a JSON-RPC 2.0 request, notification or response",
            None,
        ))),
    }
}

/// The protocol version answered to a client that asked for its `protocolVersion`.
fn negotiated_version(client_params: &RawObject) -> String {
    let requested = client_params.get_str("protocolVersion").unwrap_or_default();
    if SUPPORTED_VERSIONS.contains(&requested.as_str()) {
        requested
    } else {
        LATEST_VERSION.to_owned()
    }
}

/// Negotiates a resumed session from the client's original `initialize` params, exactly as
/// `initialize` did on the replica that opened it.
pub(crate) fn negotiate(session: &Arc<ClientSession>, params: &str) -> bool {
    let Ok(client_params) = RawObject::parse(params) else {
        return false;
    };
    session.negotiate(Negotiated {
        protocol_version: negotiated_version(&client_params),
        client_params,
    })
}

fn initialize(session: &Arc<ClientSession>, id: &RawValue, params: &str) -> String {
    let Ok(client_params) = RawObject::parse(params) else {
        return jsonrpc::error(
            Some(id),
            jsonrpc::INVALID_PARAMS,
            "initialize params must be an object",
            None,
        );
    };
    let version = negotiated_version(&client_params);
    if !session.negotiate(Negotiated {
        protocol_version: version.clone(),
        client_params,
    }) {
        return jsonrpc::error(
            Some(id),
            jsonrpc::INVALID_REQUEST,
            "session already initialized",
            None,
        );
    }
    let result = serde_json::json!({
        "protocolVersion": version,
        "capabilities": {
            "tools": { "listChanged": true },
            "prompts": { "listChanged": true },
            "resources": { "subscribe": true, "listChanged": true },
            "logging": {},
            "completions": {}
        },
        "serverInfo": { "name": "tessera", "title": "Tessera MCP gateway", "version": env!("CARGO_PKG_VERSION") }
    });
    jsonrpc::result(id, &result)
}

async fn list(
    gw: &Arc<Gateway>,
    session: &Arc<ClientSession>,
    kind: ListKind,
    id: &RawValue,
    params: Option<&RawValue>,
) -> String {
    let cursor = params
        .and_then(|p| RawObject::parse(p.get()).ok())
        .and_then(|p| p.get_str("cursor"));
    let offset = match catalog::parse_cursor(cursor.as_deref()) {
        Ok(o) => o,
        Err(e) => return jsonrpc::error(Some(id), jsonrpc::INVALID_PARAMS, &e, None),
    };
    if kind == ListKind::Tools && session.routing == RoutingMode::RetrieveTools {
        return crate::search::tools_list(id);
    }
    let catalogs = visible_catalogs(gw, session, kind).await;
    // A scoped agent token sees only the tools it may call.
    let scope = session.caller.identity().and_then(|i| i.agent.clone());
    let items: Vec<&RawValue> = catalogs
        .iter()
        .flat_map(|c| {
            let permitted = |i: &usize| {
                kind != ListKind::Tools
                    || scope.as_ref().is_none_or(|a| {
                        a.allows(
                            c.tool_permissions
                                .get(*i)
                                .copied()
                                .unwrap_or(Permission::Destructive),
                        )
                    })
            };
            c.items(kind)
                .iter()
                .enumerate()
                .filter(move |(i, _)| permitted(i))
                .map(|(_, b)| b.as_ref())
        })
        .collect();
    let page = catalog::page(kind, &items, offset, gw.config.list_page_size);
    jsonrpc::response(id, Some(&page), None)
}

/// Every catalogue of one kind `session`'s caller may see: shared servers (minus those they
/// switched off or their token excludes), then their brokered and personal servers.
pub(crate) async fn visible_catalogs(
    gw: &Arc<Gateway>,
    session: &Arc<ClientSession>,
    kind: ListKind,
) -> Vec<Arc<catalog::ServerCatalog>> {
    let mut catalogs = gw.merged_for(&session.caller, kind);
    catalogs.extend(
        crate::brokered::user_catalogs(gw, session)
            .await
            .into_iter()
            .filter(|c| !c.items(kind).is_empty()),
    );
    catalogs
}

/// The reply for a server the caller may not reach by that name.
fn denied(
    id: &RawValue,
    method: &str,
    what: &str,
    exposed: &str,
    server: &str,
    why: Denied,
    session: &ClientSession,
) -> Reply {
    let text = match why {
        Denied::Unknown => return unknown(id, what, exposed),
        Denied::SwitchedOff => format!(
            "server '{server}' is switched off for your account; switch it on again in Tessera (Servers, or POST /api/v1/user/servers/{server}/enable)"
        ),
        Denied::OutsideToken => {
            let allowed = session
                .caller
                .identity()
                .and_then(|i| i.agent.as_ref())
                .and_then(|a| a.servers.as_ref())
                .map(|s| s.join(", "))
                .unwrap_or_default();
            format!("this agent token may not use server '{server}' (it is limited to: {allowed})")
        }
    };
    refusal(method, id, server, why_reason(why), &text)
}

fn why_reason(why: Denied) -> &'static str {
    match why {
        Denied::Unknown => "unknown",
        Denied::SwitchedOff => "switched_off",
        Denied::OutsideToken => "token_server_not_allowed",
    }
}

/// A refusal: a tool error for `tools/call` (the model sees it), a JSON-RPC error otherwise.
pub(crate) fn refusal(
    method: &str,
    id: &RawValue,
    server: &str,
    reason: &str,
    text: &str,
) -> Reply {
    if method == "tools/call" {
        Reply::Now(jsonrpc::result(
            id,
            &serde_json::json!({ "content": [{ "type": "text", "text": text }], "isError": true }),
        ))
    } else {
        Reply::Now(jsonrpc::error(
            Some(id),
            jsonrpc::INVALID_PARAMS,
            text,
            Some(serde_json::json!({ "server": server, "reason": reason })),
        ))
    }
}

/// The error a client gets for a name or URI the gateway cannot route.
pub(crate) fn unknown(id: &RawValue, what: &str, name: &str) -> Reply {
    let data = serde_json::json!({ "name": name });
    Reply::Now(jsonrpc::error(
        Some(id),
        jsonrpc::INVALID_PARAMS,
        &format!("unknown {what}: {name}"),
        Some(data),
    ))
}

async fn route_by_name(
    gw: &Arc<Gateway>,
    session: &Arc<ClientSession>,
    env: &Envelope,
    id: &RawValue,
) -> Reply {
    route_params(gw, session, env.method(), env.params_str(), id).await
}

/// Routes a `tools/call` or `prompts/get` with these params (JSON text).
pub(crate) async fn route_params(
    gw: &Arc<Gateway>,
    session: &Arc<ClientSession>,
    method: &str,
    params: &str,
    id: &RawValue,
) -> Reply {
    let Ok(mut params) = RawObject::parse(params) else {
        return Reply::Now(jsonrpc::error(
            Some(id),
            jsonrpc::INVALID_PARAMS,
            "params must be an object",
            None,
        ));
    };
    let Some(exposed) = params.get_str("name") else {
        return Reply::Now(jsonrpc::error(
            Some(id),
            jsonrpc::INVALID_PARAMS,
            "params.name is required",
            None,
        ));
    };
    route_name(gw, session, method, &mut params, &exposed, id).await
}

/// Routes a tool call or prompt get whose params are `params` and whose exposed name
/// (`<server>__<name>`) is `exposed`.
pub(crate) async fn route_name(
    gw: &Arc<Gateway>,
    session: &Arc<ClientSession>,
    method: &str,
    params: &mut RawObject,
    exposed: &str,
    id: &RawValue,
) -> Reply {
    let what = if method == "tools/call" {
        "tool"
    } else {
        "prompt"
    };
    let Some((server, name)) = exposed.split_once(gw.config.tool_separator.as_str()) else {
        return unknown(id, what, exposed);
    };
    let entry = match gw.entry_for(&session.caller, server) {
        Ok(entry) => entry,
        Err(why) => return denied(id, method, what, exposed, server, why, session),
    };
    if entry.per_user() {
        if entry.brokered {
            if let Some(reply) =
                crate::brokered::route_name(session, &entry, what, name, exposed, id).await
            {
                return reply;
            }
        } else if let Some(reply) =
            crate::brokered::route_personal(gw, session, &entry, what, name, exposed, id).await
        {
            return reply;
        }
        if let Some(reply) = check_permission(session, &entry, what, name, exposed, id) {
            return reply;
        }
        params.set_str("name", name);
        return forward(&entry, session, method, params, id).await;
    }
    if !entry.catalog().knows(what, name) {
        let (health, error) = entry.health();
        if health != crate::gateway::Health::Ready {
            let reason = error.unwrap_or_else(|| "not connected yet".into());
            return Reply::Now(jsonrpc::upstream_error(
                id,
                server,
                UpstreamFault::Unavailable(&reason),
            ));
        }
        return unknown(id, what, exposed);
    }
    if let Some(reply) = check_permission(session, &entry, what, name, exposed, id) {
        return reply;
    }
    if let Some(identity) = session.caller.identity() {
        // Who called what (never a token or the arguments); the activity log has every tool call.
        tracing::debug!(user = session.caller.label(), subject = %identity.user.subject, server, method, name, "routed");
    }
    params.set_str("name", name);
    forward(&entry, session, method, params, id).await
}

/// A scoped agent token calls only tools of the classes it holds: read-only tools need
/// `read`, other non-destructive tools `write`, everything else (and tools without
/// annotations) `destructive`. `None`: allowed.
fn check_permission(
    session: &ClientSession,
    entry: &Arc<ServerEntry>,
    what: &str,
    name: &str,
    exposed: &str,
    id: &RawValue,
) -> Option<Reply> {
    let scope = session.caller.identity()?.agent.clone()?;
    if what != "tool" {
        return None; // prompts only read
    }
    let catalog = if entry.per_user() {
        session
            .caller
            .identity()
            .and_then(|i| entry.user_catalog(&i.user))
    } else {
        Some(entry.catalog())
    };
    let needed = catalog
        .and_then(|c| c.tool_permission(name))
        .unwrap_or(Permission::Destructive);
    if scope.allows(needed) {
        return None;
    }
    let text = format!(
        "this agent token may not call '{exposed}': the tool is {} (by its annotations) and the token's permissions are {}",
        needed.as_str(),
        scope.permission_names()
    );
    Some(refusal(
        "tools/call",
        id,
        &entry.config.name,
        "token_permission",
        &text,
    ))
}

async fn route_by_uri(
    gw: &Arc<Gateway>,
    session: &Arc<ClientSession>,
    env: &Envelope,
    id: &RawValue,
) -> Reply {
    let Ok(mut params) = RawObject::parse(env.params_str()) else {
        return Reply::Now(jsonrpc::error(
            Some(id),
            jsonrpc::INVALID_PARAMS,
            "params must be an object",
            None,
        ));
    };
    let Some(uri) = params.get_str("uri") else {
        return Reply::Now(jsonrpc::error(
            Some(id),
            jsonrpc::INVALID_PARAMS,
            "params.uri is required",
            None,
        ));
    };
    let Some((server, original)) = catalog::split_uri(&uri) else {
        return unknown(id, "resource", &uri);
    };
    let entry = match gw.entry_for(&session.caller, server) {
        Ok(entry) => entry,
        Err(why) => return denied(id, env.method(), "resource", &uri, server, why, session),
    };
    params.set_str("uri", original);
    forward(&entry, session, env.method(), &params, id).await
}

async fn route_completion(
    gw: &Arc<Gateway>,
    session: &Arc<ClientSession>,
    env: &Envelope,
    id: &RawValue,
) -> Reply {
    let Ok(mut params) = RawObject::parse(env.params_str()) else {
        return Reply::Now(jsonrpc::error(
            Some(id),
            jsonrpc::INVALID_PARAMS,
            "params must be an object",
            None,
        ));
    };
    let Some(mut reference) = params
        .get("ref")
        .and_then(|r| RawObject::parse(r.get()).ok())
    else {
        return Reply::Now(jsonrpc::error(
            Some(id),
            jsonrpc::INVALID_PARAMS,
            "params.ref is required",
            None,
        ));
    };
    let server = match reference.get_str("type").as_deref() {
        Some("ref/prompt") => {
            let Some(name) = reference.get_str("name") else {
                return unknown(id, "prompt", "");
            };
            let Some((server, prompt)) = name.split_once(gw.config.tool_separator.as_str()) else {
                return unknown(id, "prompt", &name);
            };
            reference.set_str("name", prompt);
            server.to_owned()
        }
        Some("ref/resource") => {
            let Some(uri) = reference.get_str("uri") else {
                return unknown(id, "resource", "");
            };
            let Some((server, original)) = catalog::split_uri(&uri) else {
                return unknown(id, "resource", &uri);
            };
            reference.set_str("uri", original);
            server.to_owned()
        }
        _ => {
            return Reply::Now(jsonrpc::error(
                Some(id),
                jsonrpc::INVALID_PARAMS,
                "params.ref.type must be ref/prompt or ref/resource",
                None,
            ));
        }
    };
    let entry = match gw.entry_for(&session.caller, &server) {
        Ok(entry) => entry,
        Err(why) => return denied(id, env.method(), "server", &server, &server, why, session),
    };
    params.set("ref", reference.to_raw());
    forward(&entry, session, env.method(), &params, id).await
}

/// Sends a (rewritten) request to the client's session with `server`.
async fn forward(
    entry: &Arc<ServerEntry>,
    session: &Arc<ClientSession>,
    method: &str,
    params: &RawObject,
    id: &RawValue,
) -> Reply {
    use std::sync::atomic::Ordering::Relaxed;
    let server = entry.config.name.as_str();
    let stats = &entry.stats;
    stats.calls.fetch_add(1, Relaxed);
    // The call's deadline covers obtaining the credential and opening the client's upstream
    // session too.
    let limit = entry.call_timeout;
    let routed_at = Instant::now();
    let deadline = routed_at + limit;
    // A brokered server: this user's credential first (fail closed, audited per call).
    if entry.brokered
        && let Err(reply) =
            crate::brokered::credential_step(session, server, method, id, deadline).await
    {
        return reply;
    }
    let upstream = match tokio::time::timeout_at(deadline, session.upstream(server)).await {
        Ok(Ok(u)) => u,
        Ok(Err(e @ (UpstreamError::Credential(_) | UpstreamError::CredentialRejected))) => {
            stats.unavailable.fetch_add(1, Relaxed);
            return crate::brokered::upstream_failure(session, server, method, id, &e);
        }
        Ok(Err(e)) => {
            stats.unavailable.fetch_add(1, Relaxed);
            return Reply::Now(jsonrpc::upstream_error(
                id,
                server,
                UpstreamFault::Unavailable(&e.to_string()),
            ));
        }
        Err(_) => {
            stats.timeouts.fetch_add(1, Relaxed);
            return Reply::Now(jsonrpc::upstream_error(
                id,
                server,
                UpstreamFault::Timeout(limit),
            ));
        }
    };
    let progress_token = params
        .get("_meta")
        .and_then(|m| RawObject::parse(m.get()).ok())
        .and_then(|m| m.get("progressToken").map(|t| t.get().to_owned()));
    let (tx, rx) = mpsc::channel(32);
    let started = upstream
        .start_call(
            method,
            Some(params),
            id.to_owned(),
            progress_token,
            tx,
            deadline,
        )
        .await;
    match started {
        Ok(upstream_id) => {
            session.call_started();
            Reply::Call(CallHandle {
                rx,
                deadline,
                upstream,
                upstream_id,
                client_id: id.to_owned(),
                session: session.clone(),
                entry: entry.clone(),
                done: false,
                started: routed_at,
                observation: None,
            })
        }
        Err(UpstreamError::Timeout(limit)) => {
            stats.timeouts.fetch_add(1, Relaxed);
            Reply::Now(jsonrpc::upstream_error(
                id,
                server,
                UpstreamFault::Timeout(limit),
            ))
        }
        Err(e @ (UpstreamError::Credential(_) | UpstreamError::CredentialRejected)) => {
            stats.unavailable.fetch_add(1, Relaxed);
            crate::brokered::upstream_failure(session, server, method, id, &e)
        }
        Err(e) => {
            stats.unavailable.fetch_add(1, Relaxed);
            Reply::Now(jsonrpc::upstream_error(
                id,
                server,
                UpstreamFault::Failed(&e.to_string()),
            ))
        }
    }
}
