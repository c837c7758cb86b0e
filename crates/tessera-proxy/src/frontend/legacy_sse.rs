//! Legacy HTTP+SSE front end (MCP 2024-11-05) for old clients: `GET /sse` opens the session and
//! its only stream, whose first `endpoint` event names `/message?sessionId=…`; every message to
//! the client, responses included, travels down that stream.

use super::{authenticate, check_origin, rpc_error_response};
use crate::gateway::Gateway;
use crate::jsonrpc::{self, Envelope};
use crate::router::{self, Reply};
use crate::session::FrontEnd;
use crate::upstream::Outbound;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use std::convert::Infallible;
use std::sync::{Arc, Weak};
use std::time::Duration;

/// Ends the session when the client's stream goes away.
struct StreamGuard {
    gateway: Weak<Gateway>,
    session: String,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if let Some(gw) = self.gateway.upgrade() {
            let id = std::mem::take(&mut self.session);
            tokio::spawn(async move {
                gw.end_session(&id).await;
            });
        }
    }
}

pub async fn open(State(gw): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    if let Err(r) = check_origin(&gw, &headers) {
        return r;
    }
    let caller = match authenticate(&gw, &headers).await {
        Ok(caller) => caller,
        Err(r) => return r,
    };
    let session = gw.create_session(FrontEnd::LegacySse, caller);
    let Some(rx) = session.attach_stream(256) else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "stream already attached").into_response();
    };
    let prefix = gw
        .config
        .public_url
        .as_ref()
        .map(|u| u.path().trim_end_matches('/').to_owned())
        .unwrap_or_default();
    let endpoint = format!("{prefix}/message?sessionId={}", session.id);
    let guard = StreamGuard {
        gateway: Arc::downgrade(&gw),
        session: session.id.clone(),
    };
    let first = futures::stream::once(async move {
        Ok::<_, Infallible>(Event::default().event("endpoint").data(endpoint))
    });
    let stop = gw.shutdown.clone();
    let rest = futures::stream::unfold((rx, guard), move |(mut rx, guard)| {
        let stop = stop.clone();
        async move {
            let text = tokio::select! {
                _ = stop.cancelled() => return None,
                t = rx.recv() => t?,
            };
            Some((
                Ok::<_, Infallible>(Event::default().event("message").data(text)),
                (rx, guard),
            ))
        }
    });
    use futures::StreamExt;
    Sse::new(first.chain(rest))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

#[derive(serde::Deserialize)]
pub struct MessageQuery {
    #[serde(rename = "sessionId")]
    session_id: Option<String>,
}

pub async fn message(
    State(gw): State<Arc<Gateway>>,
    Query(q): Query<MessageQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = check_origin(&gw, &headers) {
        return r;
    }
    let Some(id) = q.session_id else {
        return (
            StatusCode::BAD_REQUEST,
            "Bad Request: sessionId query parameter is required",
        )
            .into_response();
    };
    let caller = match authenticate(&gw, &headers).await {
        Ok(caller) => caller,
        Err(r) => return r,
    };
    let Some(session) = gw.session(&id, &caller) else {
        return (
            StatusCode::NOT_FOUND,
            "Not Found: unknown or expired session",
        )
            .into_response();
    };
    let Ok(text) = std::str::from_utf8(&body) else {
        return rpc_error_response(
            StatusCode::BAD_REQUEST,
            jsonrpc::PARSE_ERROR,
            "Parse error: body is not UTF-8",
        );
    };
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
    match router::message(&gw, &session, env).await {
        None => {}
        Some(Reply::Now(text)) => session.send_standalone(text),
        Some(Reply::Call(mut call)) => {
            let session = session.clone();
            tokio::spawn(async move {
                while let Some(message) = call.next().await {
                    match message {
                        Outbound::Message(text) => session.send_standalone(text),
                        Outbound::Final(text) => {
                            session.send_standalone(text);
                            break;
                        }
                    }
                }
            });
        }
    }
    (StatusCode::ACCEPTED, "Accepted").into_response()
}
