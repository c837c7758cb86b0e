//! MCP front ends and operational endpoints, mounted on one axum router.

// Handlers return early with a ready `Response` as the error value; boxing it would only add an
// allocation on the error path for no benefit.
#![allow(clippy::result_large_err)]

pub mod legacy_sse;
pub mod streamable;

use crate::caller::{Caller, TESSERA_TOKEN_PREFIX};
use crate::gateway::Gateway;
use crate::jsonrpc;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use std::sync::Arc;
use tessera_config::RoutingMode;
use tessera_identity::{AuthError, InvalidToken};

pub fn router(gw: Arc<Gateway>) -> Router {
    let metadata = gw.auth.as_ref().map(|a| a.resource.clone());
    let configured = gw.config.routing_mode;
    let router = Router::new()
        // `/mcp` serves `routing_mode`; `/mcp/all` every tool, `/mcp/call` the search tools
        // (the reference's endpoints).
        .route("/mcp", streamable::routes(configured))
        .route("/mcp/all", streamable::routes(RoutingMode::Direct))
        .route("/mcp/call", streamable::routes(RoutingMode::RetrieveTools))
        .route("/sse", get(legacy_sse::open))
        .route("/message", post(legacy_sse::message))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(gw)
        .layer(axum::middleware::from_fn(cors));
    match metadata {
        // RFC 9728 protected-resource metadata, served without authentication.
        Some(resource) => router.merge(resource.router()),
        None => router,
    }
}

/// CORS for browser-based MCP clients (MCP Inspector): the browser may read the session id and
/// the authorization challenge. Which origins may call at all is decided by the Origin check in
/// each handler (403), so the preflight mirrors the request's origin. Requests without `Origin`
/// (every non-browser client, i.e. the hot path) pass through untouched: no header is added.
async fn cors(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    use axum::http::Method;
    let Some(origin) = req.headers().get(header::ORIGIN).cloned() else {
        return next.run(req).await;
    };
    let preflight = req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut response = if preflight {
        let mut r = StatusCode::NO_CONTENT.into_response();
        let h = r.headers_mut();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, DELETE"),
        );
        if let Some(asked) = req.headers().get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
            h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked.clone());
        }
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
        r
    } else {
        next.run(req).await
    };
    let h = response.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("mcp-session-id, www-authenticate, mcp-protocol-version"),
    );
    h.append(header::VARY, HeaderValue::from_static("origin"));
    response
}

/// Who is calling: the user proven by the request's bearer token, or `Anonymous` when the
/// gateway runs without identity. Any failure is answered (401 with the RFC 9728 challenge,
/// 403, or 503 when the provider cannot be asked) — never a fallback to a weaker identity.
pub(crate) async fn authenticate(gw: &Gateway, headers: &HeaderMap) -> Result<Caller, Response> {
    let Some(auth) = &gw.auth else {
        return Ok(Caller::Anonymous);
    };
    let verdict = match tessera_identity::bearer_token(headers) {
        Ok(token) if token.starts_with(TESSERA_TOKEN_PREFIX) => match gw.pat_verifier() {
            Some(verifier) => verifier.verify(token).await,
            None => Err(AuthError::InvalidToken(InvalidToken::Malformed)),
        },
        Ok(token) => auth.validator.validate(token).await,
        Err(e) => Err(e),
    };
    match verdict {
        Ok(identity) => match gw.admit(&identity).await {
            Ok(()) => Ok(Caller::User(identity)),
            Err(e @ crate::gateway::AdmitError::Disabled) => {
                tracing::debug!(user = %identity.display_name, "MCP request of a disabled user refused");
                Err(rpc_error_response(
                    StatusCode::FORBIDDEN,
                    jsonrpc::INVALID_REQUEST,
                    &format!("Forbidden: {e}"),
                ))
            }
            Err(e) => {
                tracing::warn!(error = %e, "MCP request refused: user settings unavailable");
                Err(rpc_error_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    jsonrpc::INTERNAL_ERROR,
                    &format!("Service Unavailable: {e}"),
                ))
            }
        },
        Err(error) => {
            gw.auth_rejections
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::debug!(reason = %error, "MCP request refused");
            Err(auth.resource.reject(&error))
        }
    }
}

async fn healthz() -> &'static str {
    "ok"
}

async fn metrics(State(gw): State<Arc<Gateway>>) -> Response {
    let mut r = gw.metrics().into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    r
}

async fn readyz(State(gw): State<Arc<Gateway>>) -> Response {
    let (ready, body) = gw.readiness();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

pub(crate) fn json_response(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

pub(crate) fn rpc_error_response(status: StatusCode, code: i64, message: &str) -> Response {
    json_response(status, jsonrpc::error(None, code, message, None))
}

/// Whether the Accept header admits `mime` (`*/*` and a missing header admit everything).
pub(crate) fn accepts(headers: &HeaderMap, mime: &str) -> bool {
    let mut any = false;
    for value in headers.get_all(header::ACCEPT) {
        any = true;
        let Ok(v) = value.to_str() else { continue };
        for part in v.split(',') {
            let m = part.split(';').next().unwrap_or("").trim();
            if m.eq_ignore_ascii_case(mime) || m == "*/*" {
                return true;
            }
        }
    }
    !any
}

/// DNS-rebinding defence: a browser page may only reach the gateway from an allowed origin —
/// loopback origins, the origin of `public_url`, and `allowed_origins`. Requests without an
/// Origin header (non-browser clients) pass.
/// A refusal answered before the request's body was read. hyper keeps the connection open only
/// if the unread body is already in its buffer; otherwise it closes the connection after the
/// answer without saying so, and a client that reuses the connection at that moment sees it
/// drop with no answer at all (httpx: "Server disconnected without sending a response"). So the
/// body is read first — at most [`REFUSAL_DRAIN_BYTES`] within [`REFUSAL_DRAIN_TIME`] — and when
/// it cannot be, the answer says `Connection: close`.
pub(crate) async fn refuse_unread(body: axum::body::Body, mut refusal: Response) -> Response {
    let drained = tokio::time::timeout(
        REFUSAL_DRAIN_TIME,
        axum::body::to_bytes(body, REFUSAL_DRAIN_BYTES),
    )
    .await;
    if !matches!(drained, Ok(Ok(_))) {
        refusal
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    refusal
}

/// How much of a refused request's body is read so that its connection can be kept.
const REFUSAL_DRAIN_BYTES: usize = 64 * 1024;
/// How long a refused request's body may take to arrive before its connection is closed.
const REFUSAL_DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(1);

pub(crate) fn check_origin(gw: &Gateway, headers: &HeaderMap) -> Result<(), Response> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or("");
    if origin_allowed(gw, origin) {
        Ok(())
    } else {
        Err((
            StatusCode::FORBIDDEN,
            format!("Forbidden: Origin {origin:?} is not allowed (add it to allowed_origins)"),
        )
            .into_response())
    }
}

fn origin_allowed(gw: &Gateway, origin: &str) -> bool {
    let Ok(url) = url::Url::parse(origin) else {
        return false;
    };
    let loopback = matches!(url.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
    if loopback && matches!(url.scheme(), "http" | "https") {
        return true;
    }
    let normalised = url.origin().ascii_serialization();
    if gw
        .config
        .public_url
        .as_ref()
        .is_some_and(|p| p.origin().ascii_serialization() == normalised)
    {
        return true;
    }
    gw.config
        .allowed_origins
        .iter()
        .any(|a| a.trim_end_matches('/') == normalised)
}
