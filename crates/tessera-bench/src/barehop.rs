//! The benchmark's floor: an HTTP/1.1 pass-through proxy with no MCP logic.
//!
//! Every request (method, path, headers, streaming body) goes to the target through one pooled hyper-util client;
//! the response is streamed back unchanged. Only the URI's scheme/authority and the `Host` header are rewritten.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Request, Response, StatusCode, Uri};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

type Body = Either<Incoming, Full<Bytes>>;

/// Where to forward, parsed once.
pub struct Target {
    scheme: Scheme,
    authority: Authority,
    host: HeaderValue,
}

impl Target {
    /// Parses `http://host:port` (a path, if any, is ignored: request paths are kept as they are).
    pub fn parse(url: &str) -> Result<Self, String> {
        let uri: Uri = url
            .parse()
            .map_err(|e| format!("invalid target {url:?}: {e}"))?;
        let scheme = uri.scheme().cloned().unwrap_or(Scheme::HTTP);
        if scheme != Scheme::HTTP {
            return Err(format!("target {url:?}: only http:// is supported"));
        }
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| format!("target {url:?} has no host"))?;
        let host = HeaderValue::from_str(authority.as_str())
            .map_err(|e| format!("target {url:?}: {e}"))?;
        Ok(Self {
            scheme,
            authority,
            host,
        })
    }
}

struct Hop {
    target: Target,
    client: Client<HttpConnector, Incoming>,
}

impl Hop {
    async fn forward(&self, mut req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
        let mut parts = std::mem::take(req.uri_mut()).into_parts();
        parts.scheme = Some(self.target.scheme.clone());
        parts.authority = Some(self.target.authority.clone());
        if parts.path_and_query.is_none() {
            parts.path_and_query = Some(PathAndQuery::from_static("/"));
        }
        match Uri::from_parts(parts) {
            Ok(uri) => *req.uri_mut() = uri,
            Err(_) => return Ok(plain(StatusCode::BAD_REQUEST, "bad request URI")),
        }
        req.headers_mut()
            .insert(http::header::HOST, self.target.host.clone());
        match self.client.request(req).await {
            Ok(resp) => Ok(resp.map(Either::Left)),
            Err(e) => {
                eprintln!("tessera-bare-hop: upstream error: {e}");
                Ok(plain(StatusCode::BAD_GATEWAY, "upstream unreachable"))
            }
        }
    }
}

fn plain(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut resp = Response::new(Either::Right(Full::new(Bytes::from_static(
        text.as_bytes(),
    ))));
    *resp.status_mut() = status;
    resp
}

/// Binds `addr`, reports the bound address through `on_bound`, and forwards every request to `target` until the
/// process ends.
pub async fn serve(
    addr: SocketAddr,
    target: Target,
    on_bound: impl FnOnce(SocketAddr),
) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    on_bound(listener.local_addr()?);
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client = Client::builder(TokioExecutor::new()).build(connector);
    let hop = Arc::new(Hop { target, client });
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: report, back off briefly, keep serving.
                eprintln!("tessera-bare-hop: accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let hop = Arc::clone(&hop);
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let hop = Arc::clone(&hop);
                async move { hop.forward(req).await }
            });
            // A client that goes away mid-request is normal under load; nothing to do.
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
