//! MCP streamable HTTP (2025-06-18 / 2025-11-25) at `/mcp`, JSON responses only, no standalone GET stream.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::serve::ListenerExt;
use http::header::{ALLOW, CONTENT_TYPE};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use tokio::net::TcpListener;

use super::{Message, parse, respond};

/// `Mcp-Session-Id`.
pub const SESSION_HEADER: HeaderName = HeaderName::from_static("mcp-session-id");
const APPLICATION_JSON: HeaderValue = HeaderValue::from_static("application/json");

/// Largest request body accepted (64 MiB).
const BODY_LIMIT: usize = 64 << 20;

/// The live session ids. The lock is never held across an `.await`.
#[derive(Default)]
pub struct Sessions {
    ids: RwLock<HashSet<Box<str>>>,
}

impl Sessions {
    fn insert(&self, id: &str) {
        self.ids
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.into());
    }

    fn contains(&self, id: &str) -> bool {
        self.ids
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(id)
    }

    fn remove(&self, id: &str) -> bool {
        self.ids
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id)
    }

    /// How many sessions are open.
    pub fn len(&self) -> usize {
        self.ids.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether no session is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The axum router serving `/mcp`.
pub fn router(sessions: Arc<Sessions>) -> Router {
    Router::new()
        .route(
            "/mcp",
            post(handle_post).get(handle_get).delete(handle_delete),
        )
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(sessions)
}

/// Binds `addr` (TCP_NODELAY on every accepted socket), reports the bound address through `on_bound`, then serves.
pub async fn serve(addr: SocketAddr, on_bound: impl FnOnce(SocketAddr)) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    on_bound(listener.local_addr()?);
    let listener = listener.tap_io(|tcp| {
        // A socket that refuses TCP_NODELAY still works, only slower; nothing to report per connection.
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, router(Arc::new(Sessions::default()))).await
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    (status, [(CONTENT_TYPE, APPLICATION_JSON)], body).into_response()
}

fn session_error(status: StatusCode, message: &str) -> Response {
    json_response(
        status,
        super::error_reply(None, super::INVALID_REQUEST, message),
    )
}

/// Checks the `Mcp-Session-Id` header: `Err` is the 400 (missing) or 404 (unknown session) response.
fn check_session<'h>(
    sessions: &Sessions,
    headers: &'h HeaderMap,
) -> Result<&'h str, Box<Response>> {
    let Some(id) = headers.get(SESSION_HEADER).and_then(|v| v.to_str().ok()) else {
        return Err(Box::new(session_error(
            StatusCode::BAD_REQUEST,
            "missing Mcp-Session-Id header",
        )));
    };
    if sessions.contains(id) {
        Ok(id)
    } else {
        Err(Box::new(session_error(
            StatusCode::NOT_FOUND,
            "unknown session",
        )))
    }
}

async fn handle_post(
    State(sessions): State<Arc<Sessions>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match parse(&body) {
        Message::Invalid(reply) => json_response(StatusCode::BAD_REQUEST, reply),
        Message::Request { id, method, params } if method == "initialize" => {
            let session = uuid::Uuid::new_v4().simple().to_string();
            let Ok(header) = HeaderValue::from_str(&session) else {
                return json_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    super::error_reply(Some(id), -32603, "session id is not a header value"),
                );
            };
            sessions.insert(&session);
            let reply = respond(id, &method, params);
            (
                StatusCode::OK,
                [(CONTENT_TYPE, APPLICATION_JSON), (SESSION_HEADER, header)],
                reply,
            )
                .into_response()
        }
        message => {
            if let Err(response) = check_session(&sessions, &headers) {
                return *response;
            }
            match message {
                Message::Request { id, method, params } => {
                    json_response(StatusCode::OK, respond(id, &method, params))
                }
                _ => StatusCode::ACCEPTED.into_response(),
            }
        }
    }
}

async fn handle_get() -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        [(ALLOW, HeaderValue::from_static("POST, DELETE"))],
    )
        .into_response()
}

async fn handle_delete(State(sessions): State<Arc<Sessions>>, headers: HeaderMap) -> Response {
    match check_session(&sessions, &headers) {
        Ok(id) => {
            sessions.remove(id);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(response) => *response,
    }
}
