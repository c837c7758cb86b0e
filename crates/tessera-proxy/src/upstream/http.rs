//! Streamable HTTP client transport (MCP 2025-03-26 and later).
//!
//! Each message is a POST; the answer is `202`, one JSON message, or an SSE stream that carries
//! the response and anything related to the request. A broken SSE stream is resumed with a GET
//! carrying `Last-Event-ID`. A standalone GET stream brings messages unrelated to any request.

use super::UpstreamSession;
use crate::error::UpstreamError;
use futures::StreamExt;
use http::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use sse_stream::SseByteStream;
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const MCP_SESSION_ID: &str = "mcp-session-id";
const MCP_PROTOCOL_VERSION: &str = "mcp-protocol-version";
const LAST_EVENT_ID: &str = "last-event-id";
/// How often a broken response stream is resumed before the call is failed.
const RESUME_ATTEMPTS: u32 = 3;

pub struct HttpTransport {
    client: reqwest::Client,
    url: url::Url,
    headers: HeaderMap,
    session_id: RwLock<Option<HeaderValue>>,
    protocol_version: RwLock<Option<HeaderValue>>,
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

impl HttpTransport {
    pub fn new(
        client: reqwest::Client,
        url: url::Url,
        headers: &[(String, SecretString)],
    ) -> Result<Self, UpstreamError> {
        Ok(HttpTransport {
            client,
            url,
            headers: static_headers(headers)?,
            session_id: RwLock::new(None),
            protocol_version: RwLock::new(None),
            stop: CancellationToken::new(),
        })
    }

    pub fn set_protocol_version(&self, version: &str) {
        if let (Ok(mut slot), Ok(value)) = (
            self.protocol_version.write(),
            HeaderValue::from_str(version),
        ) {
            *slot = Some(value);
        }
    }

    fn session_headers(&self, builder: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        let mut builder = builder.headers(self.headers.clone());
        if let Some(sid) = self.session_id.read().ok().and_then(|s| s.clone()) {
            builder = builder.header(MCP_SESSION_ID, sid);
        }
        if let Some(pv) = self.protocol_version.read().ok().and_then(|s| s.clone()) {
            builder = builder.header(MCP_PROTOCOL_VERSION, pv);
        }
        builder
    }

    fn has_session(&self) -> bool {
        self.session_id.read().map(|s| s.is_some()).unwrap_or(false)
    }

    pub async fn post(
        &self,
        session: &Arc<UpstreamSession>,
        text: String,
        related: Option<u64>,
    ) -> Result<(), UpstreamError> {
        let request = self
            .session_headers(self.client.post(self.url.clone()))
            .header(ACCEPT, "application/json, text/event-stream")
            .header(CONTENT_TYPE, "application/json")
            .body(text);
        let response = request.send().await.map_err(UpstreamError::from_reqwest)?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_FOUND && self.has_session() {
            session.fail_all("upstream session expired (404)");
            return Err(UpstreamError::SessionExpired);
        }
        if !status.is_success() {
            return Err(UpstreamError::Status(status.as_u16()));
        }
        if !self.has_session()
            && let Some(sid) = response.headers().get(MCP_SESSION_ID)
            && let Ok(mut slot) = self.session_id.write()
        {
            *slot = Some(sid.clone());
        }
        if status == reqwest::StatusCode::ACCEPTED || status == reqwest::StatusCode::NO_CONTENT {
            return Ok(());
        }
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        if content_type.starts_with("text/event-stream") {
            let weak = Arc::downgrade(session);
            let stop = self.stop.clone();
            tokio::spawn(async move {
                let last_id = read_events(&weak, response, related, &stop).await;
                resume_if_needed(weak, related, last_id, stop).await;
            });
            return Ok(());
        }
        let body = response.text().await.map_err(UpstreamError::from_reqwest)?;
        dispatch_body(session, &body, related);
        Ok(())
    }

    /// Opens the GET stream for server-initiated messages; a 405 means the server has none.
    pub fn open_standalone_stream(&self, session: Weak<UpstreamSession>) {
        let client = self.client.clone();
        let url = self.url.clone();
        let stop = self.stop.clone();
        let Some(strong) = session.upgrade() else {
            return;
        };
        let builder_headers = {
            let mut h = self.headers.clone();
            if let Some(sid) = self.session_id.read().ok().and_then(|s| s.clone()) {
                h.insert(MCP_SESSION_ID, sid);
            }
            if let Some(pv) = self.protocol_version.read().ok().and_then(|s| s.clone()) {
                h.insert(MCP_PROTOCOL_VERSION, pv);
            }
            h
        };
        let name = strong.server.name.clone();
        drop(strong);
        tokio::spawn(async move {
            let mut last_id: Option<String> = None;
            let mut failures = 0u32;
            while !stop.is_cancelled() {
                let mut req = client
                    .get(url.clone())
                    .headers(builder_headers.clone())
                    .header(ACCEPT, "text/event-stream");
                if let Some(id) = &last_id {
                    req = req.header(LAST_EVENT_ID, id.as_str());
                }
                let response = tokio::select! {
                    _ = stop.cancelled() => return,
                    r = req.send() => r,
                };
                match response {
                    Ok(r) if r.status().is_success() => {
                        failures = 0;
                        if let Some(id) = read_events(&session, r, None, &stop).await {
                            last_id = Some(id);
                        }
                    }
                    Ok(r) if r.status() == reqwest::StatusCode::METHOD_NOT_ALLOWED => return,
                    Ok(r) if r.status() == reqwest::StatusCode::NOT_FOUND => {
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
                        tracing::debug!(server = %name, error = %e.without_url(), "standalone stream failed");
                        failures += 1;
                    }
                }
                if session.upgrade().is_none_or(|s| s.is_closed()) || failures > 5 {
                    return;
                }
                let backoff = Duration::from_millis(200 * 2u64.pow(failures.min(5)));
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
            }
        });
    }

    /// Ends the session at the server (DELETE, best effort) and stops the streams.
    pub async fn close(&self) {
        self.stop.cancel();
        if self.has_session() {
            let req = self.session_headers(self.client.delete(self.url.clone()));
            let _ = tokio::time::timeout(Duration::from_secs(2), req.send()).await;
        }
    }
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
    response: reqwest::Response,
    related: Option<u64>,
    stop: &CancellationToken,
) -> Option<String> {
    let mut events = SseByteStream::new(response.bytes_stream());
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
        let Some(req) = s.resume_request(&id) else {
            break;
        };
        drop(s);
        match req.send().await {
            Ok(r) if r.status().is_success() => {
                if let Some(newer) = read_events(&session, r, related, &stop).await {
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

impl UpstreamSession {
    fn resume_request(&self, last_event_id: &str) -> Option<reqwest::RequestBuilder> {
        match &self.transport {
            super::Transport::Http(t) => Some(
                t.session_headers(t.client.get(t.url.clone()))
                    .header(ACCEPT, "text/event-stream")
                    .header(LAST_EVENT_ID, last_event_id),
            ),
            _ => None,
        }
    }
}
