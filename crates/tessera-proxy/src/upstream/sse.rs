//! Legacy HTTP+SSE client transport (MCP 2024-11-05): one long GET stream carries every
//! server message; its first `endpoint` event names the URL that client messages are POSTed to.

use super::UpstreamSession;
use super::client::HttpClient;
use super::http::{is_event_stream, static_headers, to_uri};
use crate::credentials::UpstreamAuth;
use crate::error::UpstreamError;
use bytes::Bytes;
use futures::StreamExt;
use http::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderValue};
use http::{Method, Request, Uri};
use http_body_util::Full;
use secrecy::SecretString;
use sse_stream::SseStream;
use std::sync::{Arc, OnceLock, Weak};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

pub struct SseTransport {
    client: HttpClient,
    headers: HeaderMap,
    /// A brokered server: the user's credential, looked up for every request (no 401 retry on
    /// this legacy transport: a refusal fails the call).
    auth: Option<Arc<UpstreamAuth>>,
    endpoint: Arc<OnceLock<Uri>>,
    stop: CancellationToken,
}

impl SseTransport {
    pub fn new(
        client: HttpClient,
        headers: &[(String, SecretString)],
        auth: Option<Arc<UpstreamAuth>>,
    ) -> Result<Self, UpstreamError> {
        Ok(SseTransport {
            client,
            headers: static_headers(headers)?,
            auth,
            endpoint: Arc::new(OnceLock::new()),
            stop: CancellationToken::new(),
        })
    }

    async fn request(
        &self,
        method: Method,
        uri: Uri,
        body: Bytes,
    ) -> Result<Request<Full<Bytes>>, UpstreamError> {
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = method;
        *req.uri_mut() = uri;
        *req.headers_mut() = self.headers.clone();
        if let Some(auth) = &self.auth {
            let credential = auth.header().await.map_err(UpstreamError::Credential)?;
            req.headers_mut().insert(credential.name, credential.value);
        }
        Ok(req)
    }

    /// Opens the event stream and waits for the `endpoint` event.
    pub async fn open(
        &self,
        url: url::Url,
        session: Weak<UpstreamSession>,
    ) -> Result<(), UpstreamError> {
        let mut req = self
            .request(Method::GET, to_uri(&url)?, Bytes::new())
            .await?;
        req.headers_mut()
            .insert(ACCEPT, HeaderValue::from_static("text/event-stream"));
        let response = self.client.send(req).await?;
        if !response.status().is_success() {
            return Err(UpstreamError::Status(response.status().as_u16()));
        }
        if !is_event_stream(&response) {
            return Err(UpstreamError::Protocol(
                "GET did not answer with text/event-stream".into(),
            ));
        }
        let (ready_tx, ready_rx) = oneshot::channel::<Result<(), UpstreamError>>();
        let endpoint = self.endpoint.clone();
        let stop = self.stop.clone();
        tokio::spawn(async move {
            let mut ready_tx = Some(ready_tx);
            let mut events = SseStream::new(response.into_body());
            let reason = loop {
                let next = tokio::select! {
                    _ = stop.cancelled() => break "closed by gateway".to_owned(),
                    n = events.next() => n,
                };
                match next {
                    Some(Ok(event)) => match (event.event.as_deref(), event.data) {
                        (Some("endpoint"), Some(data)) => {
                            let outcome = resolve_endpoint(&url, data.trim()).map(|uri| {
                                let _ = endpoint.set(uri);
                            });
                            if let Some(tx) = ready_tx.take() {
                                let _ = tx.send(outcome);
                            }
                        }
                        (None | Some("message"), Some(data)) if !data.trim().is_empty() => {
                            let Some(s) = session.upgrade() else {
                                break "session dropped".to_owned();
                            };
                            s.dispatch(&data, None);
                        }
                        _ => {}
                    },
                    Some(Err(e)) => break format!("SSE stream broke: {e}"),
                    None => break "SSE stream closed by upstream".to_owned(),
                }
            };
            if let Some(tx) = ready_tx.take() {
                let _ = tx.send(Err(UpstreamError::Protocol(format!(
                    "no endpoint event ({reason})"
                ))));
            }
            if let Some(s) = session.upgrade() {
                s.fail_all(&reason);
            }
        });
        ready_rx
            .await
            .map_err(|_| UpstreamError::Closed("SSE reader ended".into()))?
    }

    pub async fn post(&self, text: String) -> Result<(), UpstreamError> {
        let Some(endpoint) = self.endpoint.get() else {
            return Err(UpstreamError::Closed("no endpoint yet".into()));
        };
        let mut req = self
            .request(Method::POST, endpoint.clone(), Bytes::from(text))
            .await?;
        req.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let response = self.client.send(req).await?;
        if !response.status().is_success() {
            return Err(UpstreamError::Status(response.status().as_u16()));
        }
        Ok(())
    }

    pub fn close(&self) {
        self.stop.cancel();
    }
}

/// The `endpoint` event's URL, resolved against the stream's URL; it must stay on that origin
/// (a server must not redirect the client's messages, and its secrets, elsewhere).
fn resolve_endpoint(base: &url::Url, data: &str) -> Result<Uri, UpstreamError> {
    let target = base
        .join(data)
        .map_err(|e| UpstreamError::Protocol(format!("bad endpoint event: {e}")))?;
    if target.origin() != base.origin() {
        return Err(UpstreamError::Protocol(
            "endpoint event names another origin".into(),
        ));
    }
    to_uri(&target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_resolves_relative_and_refuses_other_origins() {
        let base = url::Url::parse("http://127.0.0.1:9000/sse").unwrap();
        assert_eq!(
            resolve_endpoint(&base, "/messages?sessionId=abc")
                .unwrap()
                .to_string(),
            "http://127.0.0.1:9000/messages?sessionId=abc"
        );
        assert!(resolve_endpoint(&base, "http://evil.example/messages").is_err());
    }
}
