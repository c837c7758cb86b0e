//! The HTTP client of the HTTP upstreams: hyper-util's pooled client over rustls (aws-lc-rs,
//! platform certificate verifier), TCP_NODELAY on every connection. There are two: one for the
//! configured servers, and one for users' personal servers whose resolver refuses internal
//! addresses ([`HttpClient::guarded`]): a personal server's name is checked at the moment it is
//! resolved for a connection, so a DNS answer that changes after the check (rebinding) cannot
//! reach the gateway's own network.
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
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::rt::TokioExecutor;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tessera_config::UserServersConfig;

/// Largest JSON body accepted from an upstream in one response.
pub const MAX_JSON_BODY: usize = 16 * 1024 * 1024;

#[derive(Clone)]
pub struct HttpClient {
    inner: Client<HttpsConnector<HttpConnector<CheckedResolver>>, Full<Bytes>>,
}

/// Resolves host names with the system resolver (as hyper-util's `GaiResolver`); with a policy,
/// refuses a name any of whose addresses the policy does not allow. (Literal IP hosts never
/// reach a resolver: the personal-server check before connecting covers them.)
#[derive(Clone, Default)]
pub struct CheckedResolver {
    policy: Option<Arc<UserServersConfig>>,
}

impl tower_service::Service<Name> for CheckedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = name.as_str();
            let Some(policy) = policy else {
                return Ok(tokio::net::lookup_host((host, 0))
                    .await?
                    .collect::<Vec<_>>()
                    .into_iter());
            };
            match policy.resolve_allowed(host, 0).await {
                Ok(addrs) => Ok(addrs.into_iter()),
                Err(e @ tessera_config::network::HostRefused::Internal(_)) => Err(
                    std::io::Error::new(std::io::ErrorKind::PermissionDenied, e.to_string()),
                ),
                Err(e) => Err(std::io::Error::other(e.to_string())),
            }
        })
    }
}

impl HttpClient {
    /// The client of the configured servers (any address).
    pub fn new() -> Result<Self, UpstreamError> {
        Self::build(CheckedResolver::default())
    }

    /// The client of personal servers: every name it connects to must resolve to addresses
    /// `policy` allows, checked when the connection is made.
    pub fn guarded(policy: UserServersConfig) -> Result<Self, UpstreamError> {
        Self::build(CheckedResolver {
            policy: Some(Arc::new(policy)),
        })
    }

    fn build(resolver: CheckedResolver) -> Result<Self, UpstreamError> {
        let mut http = HttpConnector::new_with_resolver(resolver);
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;
    use tower_service::Service;

    fn name(host: &str) -> Name {
        Name::from_str(host).unwrap()
    }

    #[tokio::test]
    async fn the_guarded_resolver_refuses_internal_addresses_when_it_resolves() {
        // The configured servers' client resolves anything.
        let mut open = CheckedResolver::default();
        assert!(open.call(name("localhost")).await.unwrap().next().is_some());
        // The personal servers' client refuses a name resolving to loopback…
        let mut guarded = CheckedResolver {
            policy: Some(Arc::new(UserServersConfig::default())),
        };
        let e = guarded.call(name("localhost")).await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied);
        assert!(
            e.to_string().contains("user_server_allowed_networks"),
            "{e}"
        );
        // …unless an admin allowed the network.
        let mut allowed = CheckedResolver {
            policy: Some(Arc::new(UserServersConfig {
                max_per_user: 1,
                allowed_networks: vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()],
            })),
        };
        assert!(allowed.call(name("localhost")).await.is_ok());
    }
}
