//! Streamable HTTP client transport (MCP 2025-03-26 and later).
//!
//! Each message is a POST; the answer is `202`, one JSON message, or an SSE stream that carries
//! the response and anything related to the request. A broken SSE stream is resumed with a GET
//! carrying `Last-Event-ID`. A standalone GET stream brings messages unrelated to any request.

use super::UpstreamSession;
use super::client::{HttpClient, body_text};
use crate::credentials::{BrokeredHeader, UpstreamAuth};
use crate::error::UpstreamError;
use bytes::Bytes;
use futures::StreamExt;
use http::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::Full;
use hyper::body::Incoming;
use secrecy::{ExposeSecret, SecretString};
use sse_stream::SseStream;
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const MCP_SESSION_ID: HeaderName = HeaderName::from_static("mcp-session-id");
const MCP_PROTOCOL_VERSION: HeaderName = HeaderName::from_static("mcp-protocol-version");
const LAST_EVENT_ID: HeaderName = HeaderName::from_static("last-event-id");
const ACCEPT_BOTH: HeaderValue = HeaderValue::from_static("application/json, text/event-stream");
const ACCEPT_SSE: HeaderValue = HeaderValue::from_static("text/event-stream");
const JSON: HeaderValue = HeaderValue::from_static("application/json");
/// How often a broken response stream is resumed before the call is failed.
const RESUME_ATTEMPTS: u32 = 3;

pub struct HttpTransport {
    client: HttpClient,
    uri: Uri,
    /// Configured static headers plus, once known, the session id and protocol version:
    /// rebuilt only when those change, cloned per request.
    headers: RwLock<HeaderMap>,
    /// A brokered server: the user's credential, looked up for every request.
    auth: Option<Arc<UpstreamAuth>>,
    stop: CancellationToken,
}

/// Builds the configured static headers once; values are secrets until they become header values.
pub fn static_headers(headers: &[(String, SecretString)]) -> Result<HeaderMap, UpstreamError> {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| UpstreamError::Config(format!("invalid header name {name:?}")))?;
        let mut value = HeaderValue::from_str(value.expose_secret())
            .map_err(|_| UpstreamError::Config(format!("invalid value for header {name}")))?;
        value.set_sensitive(true);
        map.insert(name, value);
    }
    Ok(map)
}

pub fn to_uri(url: &url::Url) -> Result<Uri, UpstreamError> {
    url.as_str()
        .parse::<Uri>()
        .map_err(|_| UpstreamError::Config("upstream URL is not a valid HTTP URI".into()))
}

impl HttpTransport {
    pub fn new(
        client: HttpClient,
        url: &url::Url,
        headers: &[(String, SecretString)],
        auth: Option<Arc<UpstreamAuth>>,
    ) -> Result<Self, UpstreamError> {
        Ok(HttpTransport {
            client,
            auth,
            uri: to_uri(url)?,
            headers: RwLock::new({
                // Prepared for the common case (a POST): cloned per request, nothing inserted.
                let mut h = static_headers(headers)?;
                h.insert(ACCEPT, ACCEPT_BOTH);
                h.insert(CONTENT_TYPE, JSON);
                h
            }),
            stop: CancellationToken::new(),
        })
    }

    pub fn set_protocol_version(&self, version: &str) {
        if let (Ok(mut h), Ok(value)) = (self.headers.write(), HeaderValue::from_str(version)) {
            h.insert(MCP_PROTOCOL_VERSION, value);
        }
    }

    fn has_session(&self) -> bool {
        self.headers
            .read()
            .map(|h| h.contains_key(MCP_SESSION_ID))
            .unwrap_or(false)
    }

    fn request(
        &self,
        method: Method,
        accept: HeaderValue,
        body: Bytes,
        extra: Option<(HeaderName, HeaderValue)>,
        credential: Option<&BrokeredHeader>,
    ) -> Result<Request<Full<Bytes>>, UpstreamError> {
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = method;
        *req.uri_mut() = self.uri.clone();
        let mut headers = self.headers.read().map(|h| h.clone()).unwrap_or_default();
        if accept != ACCEPT_BOTH {
            headers.insert(ACCEPT, accept);
        }
        if req.method() != Method::POST {
            headers.remove(CONTENT_TYPE);
        }
        if let Some((name, value)) = extra {
            headers.insert(name, value);
        }
        if let Some(c) = credential {
            headers.insert(c.name.clone(), c.value.clone());
        }
        *req.headers_mut() = headers;
        Ok(req)
    }

    /// The user's credential for the next request (brokered servers), else nothing.
    async fn credential(&self) -> Result<Option<BrokeredHeader>, UpstreamError> {
        match &self.auth {
            Some(auth) => auth
                .header()
                .await
                .map(Some)
                .map_err(UpstreamError::Credential),
            None => Ok(None),
        }
    }

    /// Sends a request built by `build` with the current credential. A brokered server's 401
    /// drops that credential and the request is sent once more with a re-acquired one; a
    /// second 401 is [`UpstreamError::CredentialRejected`]. Never sent without a credential.
    async fn send_authorized(
        &self,
        build: impl Fn(Option<&BrokeredHeader>) -> Result<Request<Full<Bytes>>, UpstreamError>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let credential = self.credential().await?;
        let response = self.client.send(build(credential.as_ref())?).await?;
        let (Some(auth), Some(sent)) = (&self.auth, credential) else {
            return Ok(response);
        };
        if response.status() != StatusCode::UNAUTHORIZED {
            return Ok(response);
        }
        let fresh = auth
            .after_rejection(&sent.value)
            .await
            .map_err(UpstreamError::Credential)?;
        let response = self.client.send(build(Some(&fresh))?).await?;
        if response.status() == StatusCode::UNAUTHORIZED {
            return Err(UpstreamError::CredentialRejected);
        }
        Ok(response)
    }

    pub async fn post(
        &self,
        session: &Arc<UpstreamSession>,
        text: String,
        related: Option<u64>,
    ) -> Result<(), UpstreamError> {
        let body = Bytes::from(text);
        let response = self
            .send_authorized(|c| self.request(Method::POST, ACCEPT_BOTH, body.clone(), None, c))
            .await?;
        let status = response.status();
        if status == StatusCode::NOT_FOUND && self.has_session() {
            session.fail_all("upstream session expired (404)");
            return Err(UpstreamError::SessionExpired);
        }
        if !status.is_success() {
            return Err(UpstreamError::Status(status.as_u16()));
        }
        if !self.has_session()
            && let (Some(sid), Ok(mut h)) = (
                response.headers().get(MCP_SESSION_ID).map(detached),
                self.headers.write(),
            )
        {
            h.insert(MCP_SESSION_ID, sid);
        }
        if status == StatusCode::ACCEPTED || status == StatusCode::NO_CONTENT {
            return Ok(());
        }
        if is_event_stream(&response) {
            let weak = Arc::downgrade(session);
            let stop = self.stop.clone();
            tokio::spawn(async move {
                let last_id = read_events(&weak, response.into_body(), related, &stop).await;
                resume_if_needed(weak, related, last_id, stop).await;
            });
            return Ok(());
        }
        let body = body_text(response.into_body()).await?;
        dispatch_body(session, &body, related);
        Ok(())
    }

    /// Opens the GET stream for server-initiated messages; a 405 means the server has none.
    /// The returned receiver resolves once the server has answered the first GET (whatever
    /// the answer) or the stream task has ended.
    pub fn open_standalone_stream(
        self: &Arc<Self>,
        session: Weak<UpstreamSession>,
        name: String,
    ) -> tokio::sync::oneshot::Receiver<()> {
        let (answered_tx, answered) = tokio::sync::oneshot::channel();
        let me = self.clone();
        tokio::spawn(async move {
            let mut answered_tx = Some(answered_tx);
            let mut last_id: Option<HeaderValue> = None;
            let mut failures = 0u32;
            while !me.stop.is_cancelled() {
                let extra = last_id.clone().map(|id| (LAST_EVENT_ID, id));
                let send = me.send_authorized(|c| {
                    me.request(Method::GET, ACCEPT_SSE, Bytes::new(), extra.clone(), c)
                });
                let response = tokio::select! {
                    _ = me.stop.cancelled() => return,
                    r = send => r,
                };
                if let Some(tx) = answered_tx.take() {
                    let _ = tx.send(());
                }
                match response {
                    Ok(r) if r.status().is_success() => {
                        failures = 0;
                        if let Some(id) = read_events(&session, r.into_body(), None, &me.stop).await
                        {
                            last_id = HeaderValue::from_str(&id).ok();
                        }
                    }
                    Ok(r) if r.status() == StatusCode::METHOD_NOT_ALLOWED => return,
                    Ok(r) if r.status() == StatusCode::NOT_FOUND => {
                        if let Some(s) = session.upgrade() {
                            s.fail_all("upstream session expired (404)");
                        }
                        return;
                    }
                    Ok(r) => {
                        tracing::debug!(server = %name, status = r.status().as_u16(), "standalone stream refused");
                        failures += 1;
                    }
                    Err(e) => {
                        tracing::debug!(server = %name, error = %e, "standalone stream failed");
                        failures += 1;
                    }
                }
                if session.upgrade().is_none_or(|s| s.is_closed()) || failures > 5 {
                    return;
                }
                let backoff = Duration::from_millis(200 * 2u64.pow(failures.min(5)));
                tokio::select! {
                    _ = me.stop.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
            }
        });
        answered
    }

    /// Ends the session at the server (DELETE, best effort) and stops the streams.
    pub async fn close(&self) {
        self.stop.cancel();
        if self.has_session() {
            // A brokered session is ended with the user's credential too (from the cache when
            // it is there); a credential that cannot be had means no DELETE, never one without.
            let delete = self.send_authorized(|c| {
                self.request(Method::DELETE, ACCEPT_BOTH, Bytes::new(), None, c)
            });
            let _ = tokio::time::timeout(Duration::from_secs(2), delete).await;
        }
    }

    async fn resume(&self, last_event_id: &str) -> Option<Response<Incoming>> {
        let id = HeaderValue::from_str(last_event_id).ok()?;
        self.send_authorized(|c| {
            self.request(
                Method::GET,
                ACCEPT_SSE,
                Bytes::new(),
                Some((LAST_EVENT_ID, id.clone())),
                c,
            )
        })
        .await
        .ok()
    }
}

/// A copy of `value` in its own allocation. hyper's header values are slices of the
/// connection's read buffer: one kept for a session's lifetime (`.clone()` shares it) would keep
/// that whole buffer — 8 KiB or more — alive per upstream session.
fn detached(value: &HeaderValue) -> HeaderValue {
    let mut copy = HeaderValue::from_bytes(value.as_bytes()).unwrap_or_else(|_| value.clone());
    copy.set_sensitive(value.is_sensitive());
    copy
}

pub fn is_event_stream<B>(response: &Response<B>) -> bool {
    response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("text/event-stream")
        })
}

fn dispatch_body(session: &Arc<UpstreamSession>, body: &str, related: Option<u64>) {
    let trimmed = body.trim_start();
    if trimmed.starts_with('[') {
        match serde_json::from_str::<Vec<Box<serde_json::value::RawValue>>>(trimmed) {
            Ok(items) => items
                .iter()
                .for_each(|m| session.dispatch(m.get(), related)),
            Err(e) => {
                tracing::warn!(server = %session.server.name, error = %e, "malformed JSON batch from upstream")
            }
        }
    } else if !trimmed.is_empty() {
        session.dispatch(trimmed, related);
    }
}

/// Reads one SSE response, dispatching each `message` event. Returns the last event id seen.
async fn read_events(
    session: &Weak<UpstreamSession>,
    body: Incoming,
    related: Option<u64>,
    stop: &CancellationToken,
) -> Option<String> {
    let mut events = SseStream::new(body);
    let mut last_id = None;
    loop {
        let next = tokio::select! {
            _ = stop.cancelled() => return last_id,
            n = events.next() => n,
        };
        match next {
            Some(Ok(event)) => {
                if let Some(id) = event.id {
                    last_id = Some(id);
                }
                let is_message = event.event.as_deref().is_none_or(|e| e == "message");
                if let (true, Some(data)) = (is_message, event.data) {
                    if data.trim().is_empty() {
                        continue; // priming event
                    }
                    let Some(s) = session.upgrade() else {
                        return last_id;
                    };
                    s.dispatch(&data, related);
                }
            }
            Some(Err(e)) => {
                tracing::debug!(error = %e, "upstream SSE stream broke");
                return last_id;
            }
            None => return last_id,
        }
    }
}

/// A response stream ended; if its call is still waiting, resume with `Last-Event-ID`.
async fn resume_if_needed(
    session: Weak<UpstreamSession>,
    related: Option<u64>,
    mut last_id: Option<String>,
    stop: CancellationToken,
) {
    let Some(call) = related else { return };
    for _ in 0..RESUME_ATTEMPTS {
        let Some(s) = session.upgrade() else { return };
        if !s.is_waiting(call) {
            return;
        }
        let Some(id) = last_id.clone() else { break };
        let Some(transport) = s.http_transport().cloned() else {
            break;
        };
        drop(s);
        match transport.resume(&id).await {
            Some(r) if r.status().is_success() => {
                if let Some(newer) = read_events(&session, r.into_body(), related, &stop).await {
                    last_id = Some(newer);
                }
            }
            _ => break,
        }
    }
    if let Some(s) = session.upgrade() {
        s.fail_call(call, "upstream closed the response stream before answering");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_header_value_does_not_share_the_read_buffer() {
        let read_buffer = Bytes::from(vec![b'a'; 8192]);
        let inside = read_buffer.as_ptr_range();
        let parsed = HeaderValue::from_maybe_shared(read_buffer.slice(100..132)).unwrap();
        assert!(
            inside.contains(&parsed.as_bytes().as_ptr()),
            "premise: a parsed header value is a slice of the buffer"
        );
        let kept = detached(&parsed);
        assert_eq!(kept, parsed);
        assert!(
            !inside.contains(&kept.as_bytes().as_ptr()),
            "the kept session id would hold the whole 8 KiB buffer"
        );
    }
}
