//! The one HTTP client for every HTTP upstream: hyper-util's pooled client over rustls
//! (aws-lc-rs, platform certificate verifier), TCP_NODELAY on every connection.
//!
//! hyper directly rather than reqwest: on the proxied hot path reqwest's per-request work (URL
//! conversion, connector clones, extra boxing) cost more CPU than the whole bare HTTP hop.

use crate::error::UpstreamError;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::time::Duration;

/// Largest JSON body accepted from an upstream in one response.
pub const MAX_JSON_BODY: usize = 16 * 1024 * 1024;

#[derive(Clone)]
pub struct HttpClient {
    inner: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl HttpClient {
    pub fn new() -> Result<Self, UpstreamError> {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.enforce_http(false);
        http.set_connect_timeout(Some(Duration::from_secs(10)));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .try_with_platform_verifier()
            .map_err(|e| UpstreamError::Config(format!("TLS set-up failed: {e}")))?
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let inner = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(256)
            .build(https);
        Ok(HttpClient { inner })
    }

    pub async fn send(
        &self,
        request: Request<Full<Bytes>>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        self.inner
            .request(request)
            .await
            .map_err(|e| UpstreamError::Connect(describe(&e)))
    }
}

/// Reads a whole (bounded) body as text.
pub async fn body_text(body: Incoming) -> Result<String, UpstreamError> {
    let bytes = Limited::new(body, MAX_JSON_BODY)
        .collect()
        .await
        .map_err(|e| UpstreamError::Protocol(format!("reading the response failed: {e}")))?
        .to_bytes();
    String::from_utf8(bytes.into())
        .map_err(|_| UpstreamError::Protocol("response is not UTF-8".into()))
}

/// The innermost cause: hyper-util's outer error only says "client error (Connect)".
fn describe(e: &hyper_util::client::legacy::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    text
}
