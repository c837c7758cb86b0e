//! Streamable HTTP front end at `/mcp` (MCP 2025-03-26, 2025-06-18, 2025-11-25).
//!
//! POST carries one JSON-RPC message. A request is answered with `application/json` when the
//! answer is the only message, and upgraded to `text/event-stream` as soon as something related
//! (progress, a sampling or elicitation request) must reach the client first — the choice is
//! made lazily, before any header is written. GET opens the session's server-to-client stream;
//! DELETE ends the session.

use super::{
    accepts, authenticate, check_origin, json_response, refuse_unread, rpc_error_response,
};
use crate::caller::Caller;
use crate::gateway::Gateway;
use crate::jsonrpc::{self, Envelope, Kind};
use crate::router::{self, CallHandle, Reply};
use crate::session::FrontEnd;
use crate::upstream::{Outbound, SUPPORTED_VERSIONS};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tessera_config::RoutingMode;

pub const SESSION_HEADER: &str = "mcp-session-id";
pub const VERSION_HEADER: &str = "mcp-protocol-version";

fn plain(status: StatusCode, message: &str) -> Response {
    (status, message.to_owned()).into_response()
}

/// Largest JSON-RPC message accepted from a client.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// POST, GET and DELETE of one streamable HTTP endpoint whose sessions use `routing`.
pub fn routes(routing: RoutingMode) -> axum::routing::MethodRouter<Arc<Gateway>> {
    axum::routing::post(move |gw, request| post(gw, request, routing))
        .get(move |gw, headers| get(gw, headers, routing))
        .delete(move |gw, headers| delete(gw, headers, routing))
}

// Takes the whole request rather than `HeaderMap` + `Bytes` extractors: the `HeaderMap`
// extractor clones every header, which was measurable per proxied call.
pub async fn post(
    State(gw): State<Arc<Gateway>>,
    request: axum::extract::Request,
    routing: RoutingMode,
) -> Response {
    let (parts, body) = request.into_parts();
    let headers = parts.headers;
    if let Err(r) = check_origin(&gw, &headers) {
        return refuse_unread(body, r).await;
    }
    let caller = match authenticate(&gw, &headers).await {
        Ok(caller) => caller,
        Err(r) => return refuse_unread(body, r).await,
    };
    let body: Bytes = match axum::body::to_bytes(body, MAX_MESSAGE_BYTES).await {
        Ok(b) => b,
        Err(_) => {
            return plain(
                StatusCode::PAYLOAD_TOO_LARGE,
                "Payload Too Large: a message is limited to 4 MiB (or the body could not be read)",
            );
        }
    };
    let wants_json = accepts(&headers, "application/json");
    let wants_sse = accepts(&headers, "text/event-stream");
    if !wants_json && !wants_sse {
        return plain(
            StatusCode::NOT_ACCEPTABLE,
            "Not Acceptable: Accept must include application/json and text/event-stream",
        );
    }
    let Ok(text) = std::str::from_utf8(&body) else {
        return rpc_error_response(
            StatusCode::BAD_REQUEST,
            jsonrpc::PARSE_ERROR,
            "Parse error: body is not UTF-8",
        );
    };
    if text.trim_start().starts_with('[') {
        return rpc_error_response(
            StatusCode::BAD_REQUEST,
            jsonrpc::INVALID_REQUEST,
            "JSON-RPC batches are not supported: send one message per POST",
        );
    }
    let env = match Envelope::parse(text) {
        Ok(env) => env,
        Err(e) => {
            return rpc_error_response(
                StatusCode::BAD_REQUEST,
                jsonrpc::PARSE_ERROR,
                &format!("Parse error: {e}"),
            );
        }
    };

    if matches!(env.kind(), Kind::Request) && env.method() == "initialize" {
        let id = crate::resume::session_id(
            crate::session::new_session_id(),
            gw.session_sealer(),
            &caller,
            env.params_str(),
        );
        let session = gw.create_session_with_id(FrontEnd::Streamable, caller, id, routing);
        gw.count_request("initialize");
        let reply = router::request(&gw, &session, env).await;
        let text = match reply {
            Reply::Now(text) => text,
            Reply::Call(_) => String::new(),
        };
        if !session.is_initialized() {
            gw.end_session(&session.id).await;
            return json_response(StatusCode::OK, text);
        }
        let mut response = json_response(StatusCode::OK, text);
        if let Ok(v) = HeaderValue::from_str(&session.id) {
            response.headers_mut().insert(SESSION_HEADER, v);
        }
        return response;
    }

    let session = match session_of(&gw, &headers, &caller, routing) {
        Ok(s) => s,
        Err(r) => return r,
    };
    match router::message(&gw, &session, env).await {
        None => StatusCode::ACCEPTED.into_response(),
        Some(Reply::Now(text)) => json_response(StatusCode::OK, text),
        Some(Reply::Call(call)) => answer_call(call, wants_json, wants_sse, &session).await,
    }
}

/// Finds the session a request names; checks the protocol version header.
fn session_of(
    gw: &Arc<Gateway>,
    headers: &HeaderMap,
    caller: &Caller,
    routing: RoutingMode,
) -> Result<Arc<crate::session::ClientSession>, Response> {
    let Some(id) = headers.get(SESSION_HEADER).and_then(|v| v.to_str().ok()) else {
        return Err(plain(
            StatusCode::BAD_REQUEST,
            "Bad Request: Mcp-Session-Id header is required",
        ));
    };
    let Some(session) = gw.session_or_resume(id, caller, routing) else {
        return Err(plain(
            StatusCode::NOT_FOUND,
            "Not Found: unknown or expired session; initialize a new one",
        ));
    };
    if let Some(v) = headers.get(VERSION_HEADER) {
        let v = v.to_str().unwrap_or("");
        if !SUPPORTED_VERSIONS.contains(&v) {
            return Err(plain(
                StatusCode::BAD_REQUEST,
                &format!("Bad Request: unsupported MCP-Protocol-Version {v:?}"),
            ));
        }
    }
    Ok(session)
}

async fn answer_call(
    mut call: CallHandle,
    wants_json: bool,
    wants_sse: bool,
    session: &Arc<crate::session::ClientSession>,
) -> Response {
    let first = call.next().await;
    match first {
        Some(Outbound::Final(text)) if wants_json => json_response(StatusCode::OK, text),
        None => {
            // Cancelled by the client: no response is due.
            StatusCode::ACCEPTED.into_response()
        }
        Some(first) if wants_sse => sse_response(first, call),
        Some(first) => {
            // The client takes only JSON: related messages go to its GET stream instead.
            let mut next = Some(first);
            while let Some(message) = next {
                match message {
                    Outbound::Final(text) => return json_response(StatusCode::OK, text),
                    Outbound::Message(text) => session.send_standalone(text),
                }
                next = call.next().await;
            }
            StatusCode::ACCEPTED.into_response()
        }
    }
}

fn sse_response(first: Outbound, call: CallHandle) -> Response {
    let stream = futures::stream::unfold((Some(first), Some(call)), |(pending, call)| async move {
        let mut call = call?;
        let message = match pending {
            Some(m) => m,
            None => call.next().await?,
        };
        match message {
            Outbound::Final(text) => Some((
                Ok::<_, Infallible>(Event::default().event("message").data(text)),
                (None, None),
            )),
            Outbound::Message(text) => Some((
                Ok(Event::default().event("message").data(text)),
                (None, Some(call)),
            )),
        }
    });
    Sse::new(stream).into_response()
}

pub async fn get(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    routing: RoutingMode,
) -> Response {
    if let Err(r) = check_origin(&gw, &headers) {
        return r;
    }
    let caller = match authenticate(&gw, &headers).await {
        Ok(caller) => caller,
        Err(r) => return r,
    };
    if !accepts(&headers, "text/event-stream") {
        return plain(
            StatusCode::NOT_ACCEPTABLE,
            "Not Acceptable: GET needs Accept: text/event-stream",
        );
    }
    let session = match session_of(&gw, &headers, &caller, routing) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let Some(rx) = session.attach_stream(64) else {
        return plain(
            StatusCode::CONFLICT,
            "Conflict: this session already has a stream open",
        );
    };
    let stop = gw.shutdown.clone();
    let stream = futures::stream::unfold(rx, move |mut rx| {
        let stop = stop.clone();
        async move {
            let text = tokio::select! {
                _ = stop.cancelled() => return None,
                t = rx.recv() => t?,
            };
            Some((
                Ok::<_, Infallible>(Event::default().event("message").data(text)),
                rx,
            ))
        }
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

pub async fn delete(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    routing: RoutingMode,
) -> Response {
    if let Err(r) = check_origin(&gw, &headers) {
        return r;
    }
    let caller = match authenticate(&gw, &headers).await {
        Ok(caller) => caller,
        Err(r) => return r,
    };
    let session = match session_of(&gw, &headers, &caller, routing) {
        Ok(s) => s,
        Err(r) => return r,
    };
    if gw.delete_session(&session.id).await {
        StatusCode::NO_CONTENT.into_response()
    } else {
        plain(StatusCode::NOT_FOUND, "Not Found: unknown session")
    }
}
