//! Legacy HTTP+SSE client transport (MCP 2024-11-05): one long GET stream carries every
//! server message; its first `endpoint` event names the URL that client messages are POSTed to.

use super::UpstreamSession;
use super::http::static_headers;
use crate::error::UpstreamError;
use futures::StreamExt;
use http::header::{ACCEPT, CONTENT_TYPE, HeaderMap};
use secrecy::SecretString;
use sse_stream::SseByteStream;
use std::sync::{Arc, OnceLock, Weak};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

pub struct SseTransport {
    client: reqwest::Client,
    headers: HeaderMap,
    endpoint: Arc<OnceLock<url::Url>>,
    stop: CancellationToken,
}

impl SseTransport {
    pub fn new(
        client: reqwest::Client,
        headers: &[(String, SecretString)],
    ) -> Result<Self, UpstreamError> {
        Ok(SseTransport {
            client,
            headers: static_headers(headers)?,
            endpoint: Arc::new(OnceLock::new()),
            stop: CancellationToken::new(),
        })
    }

    /// Opens the event stream and waits for the `endpoint` event.
    pub async fn open(
        &self,
        url: url::Url,
        session: Weak<UpstreamSession>,
    ) -> Result<(), UpstreamError> {
        let response = self
            .client
            .get(url.clone())
            .headers(self.headers.clone())
            .header(ACCEPT, "text/event-stream")
            .send()
            .await
            .map_err(UpstreamError::from_reqwest)?;
        if !response.status().is_success() {
            return Err(UpstreamError::Status(response.status().as_u16()));
        }
        let (ready_tx, ready_rx) = oneshot::channel::<Result<(), UpstreamError>>();
        let endpoint = self.endpoint.clone();
        let stop = self.stop.clone();
        tokio::spawn(async move {
            let mut ready_tx = Some(ready_tx);
            let mut events = SseByteStream::new(response.bytes_stream());
            let reason = loop {
                let next = tokio::select! {
                    _ = stop.cancelled() => break "closed by gateway".to_owned(),
                    n = events.next() => n,
                };
                match next {
                    Some(Ok(event)) => match (event.event.as_deref(), event.data) {
                        (Some("endpoint"), Some(data)) => {
                            let target = url.join(data.trim()).map_err(|e| {
                                UpstreamError::Protocol(format!("bad endpoint event: {e}"))
                            });
                            let outcome = match target {
                                Ok(t) if t.origin() == url.origin() => {
                                    let _ = endpoint.set(t);
                                    Ok(())
                                }
                                Ok(_) => Err(UpstreamError::Protocol(
                                    "endpoint event names another origin".into(),
                                )),
                                Err(e) => Err(e),
                            };
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
        let response = self
            .client
            .post(endpoint.clone())
            .headers(self.headers.clone())
            .header(CONTENT_TYPE, "application/json")
            .body(text)
            .send()
            .await
            .map_err(UpstreamError::from_reqwest)?;
        if !response.status().is_success() {
            return Err(UpstreamError::Status(response.status().as_u16()));
        }
        Ok(())
    }

    pub fn close(&self) {
        self.stop.cancel();
    }
}
