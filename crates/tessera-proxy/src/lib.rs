//! Tessera's MCP data path.
//!
//! A proxied call flows one way: front end ([`frontend`]) → caller context ([`caller`]) →
//! [`router`] → the client's upstream session ([`upstream`]) and back. Messages stay JSON
//! ([`jsonrpc`]): only the envelope and the one field the gateway rewrites are ever parsed.

mod brokered;
pub mod caller;
pub mod catalog;
pub mod credentials;
pub mod error;
pub mod frontend;
pub mod gateway;
pub mod jsonrpc;
pub mod live;
pub mod observe;
pub mod resume;
pub mod router;
pub mod search;
pub mod session;
pub mod upstream;
pub mod users;

pub use gateway::Gateway;

/// Hash maps on the data path use foldhash (seeded per map): SipHash was ~4% of the gateway's
/// instructions per proxied call.
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
pub(crate) type FastSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

use std::future::Future;
use std::sync::Arc;

/// Serves the gateway on `listener` until `shutdown` resolves, then lets in-flight requests
/// finish and stops every upstream session (and child process). `extra` carries the routes of
/// other concerns (sign-in, REST API) mounted beside the MCP front ends.
pub async fn serve(
    gateway: Arc<Gateway>,
    listener: tokio::net::TcpListener,
    extra: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    gateway.start();
    let app = frontend::router(gateway.clone()).merge(extra);
    // Without TCP_NODELAY, small responses wait for the peer's delayed ACK (~40 ms per call).
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let stopping = gateway.shutdown.clone();
    // With the peer's address in each request's extensions (`ConnectInfo<SocketAddr>`): the
    // API limits open client registration per address and records it on browser sessions.
    let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
    let served = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown.await;
        // Long-lived streams (GET /mcp, /sse) would hold graceful shutdown open forever.
        stopping.cancel();
    });
    let result = served.await;
    gateway.stop().await;
    result
}
