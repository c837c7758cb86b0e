//! The address of the client at the other end of the TCP connection.
//!
//! `tessera_proxy::serve` serves with `into_make_service_with_connect_info::<SocketAddr>()`, so
//! every request it handles carries [`ConnectInfo<SocketAddr>`] in its extensions. A router
//! driven another way (tower's `oneshot` in tests, an embedder) has none: [`PeerAddr`] is then
//! `None` instead of axum's `ConnectInfo` extractor failing the request with a 500.
//!
//! **`X-Forwarded-For` and `Forwarded` are never read**: there is no trusted-proxy setting,
//! so anyone could write any address there (and so escape a per-address limit or put a false
//! address on a session). Behind a reverse proxy the peer is the proxy.

use std::convert::Infallible;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use http::request::Parts;

/// The connection's peer address, in canonical form (an IPv4-mapped IPv6 address, as a
/// dual-stack listener reports an IPv4 client, is the IPv4 address); `None` when the request
/// did not come through a server that records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for PeerAddr {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(PeerAddr(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(addr)| addr.ip().to_canonical()),
        ))
    }
}

/// The key a per-address limit counts `ip` under: an IPv4 address itself, an IPv6 address's
/// /64 prefix (one host is normally given a whole /64, so counting single IPv6 addresses would
/// let it make 2⁶⁴ times the limit), an IPv4-mapped IPv6 address as its IPv4 address.
pub(crate) fn limit_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !(u128::from(u64::MAX));
            IpAddr::V6(Ipv6Addr::from(prefix))
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> String {
        limit_key(s.parse().unwrap()).to_string()
    }

    #[test]
    fn an_ipv6_address_counts_under_its_64_and_a_mapped_ipv4_address_as_itself() {
        assert_eq!(key("192.0.2.7"), "192.0.2.7");
        assert_eq!(key("::ffff:192.0.2.7"), "192.0.2.7");
        assert_eq!(key("2001:db8:1:2:aaaa:bbbb:cccc:dddd"), "2001:db8:1:2::");
        assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2:ffff::9"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("::1"), "::");
    }

    #[tokio::test]
    async fn the_peer_is_read_from_connect_info_and_is_none_without_it() {
        let peer = |req: http::Request<()>| async move {
            let (mut parts, ()) = req.into_parts();
            let Ok(p) = PeerAddr::from_request_parts(&mut parts, &()).await;
            p.0
        };
        assert_eq!(peer(http::Request::new(())).await, None);
        let mut req = http::Request::new(());
        req.extensions_mut().insert(ConnectInfo(SocketAddr::from((
            "::ffff:127.0.0.1".parse::<IpAddr>().unwrap(),
            4000,
        ))));
        assert_eq!(peer(req).await, Some("127.0.0.1".parse().unwrap()));
    }
}
