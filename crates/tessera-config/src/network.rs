//! Which network addresses a user-supplied upstream URL may reach (personal servers). Users
//! choose these URLs, so the gateway must not become their way into its own network (SSRF):
//! loopback, private, link-local, shared (CGNAT), unique-local and reserved ranges are refused
//! unless an admin lists them in `user_server_allowed_networks`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub use ipnet::IpNet;

/// Whether `ip` is internal to some network (not a public unicast address). IPv4-mapped IPv6
/// addresses are judged as the IPv4 address they carry.
pub fn is_internal(ip: IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    match ip {
        IpAddr::V4(v4) => internal_v4(v4),
        IpAddr::V6(v6) => internal_v6(v6),
    }
}

fn internal_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT), RFC 6598
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking, RFC 2544
        || a >= 240 // reserved
}

fn internal_v6(ip: Ipv6Addr) -> bool {
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || ip.is_unique_local()
        || ip.is_unicast_link_local()
        || (ip.segments()[0] == 0x2001 && ip.segments()[1] == 0x0db8) // documentation
        || (ip.segments()[0] == 0x0064 && ip.segments()[1] == 0xff9b) // NAT64 may reach internal v4
}

/// Personal upstream servers: how many a user may add, and which internal networks they may
/// point at (`max_user_servers`, `user_server_allowed_networks`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserServersConfig {
    /// At most this many personal servers per user (`max_user_servers`, default 20; 0 turns
    /// personal servers off).
    pub max_per_user: usize,
    /// Internal networks personal servers may reach anyway (CIDR, e.g. `10.20.0.0/16`).
    pub allowed_networks: Vec<IpNet>,
}

impl Default for UserServersConfig {
    fn default() -> Self {
        UserServersConfig {
            max_per_user: crate::defaults::MAX_USER_SERVERS,
            allowed_networks: Vec::new(),
        }
    }
}

impl UserServersConfig {
    /// Whether a personal server may connect to `ip`.
    pub fn address_allowed(&self, ip: IpAddr) -> bool {
        let mapped = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        !is_internal(mapped) || self.allowed_networks.iter().any(|n| n.contains(&mapped))
    }

    /// Checks every address `host:port` resolves to; the error says which address is refused
    /// and how an admin allows it.
    pub async fn check_host(&self, host: &str, port: u16) -> Result<(), String> {
        self.resolve_allowed(host, port)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// The addresses `host:port` resolves to (a literal IP is itself), if the policy allows
    /// every one of them. The one check behind the pre-connect check ([`Self::check_host`]) and
    /// the resolvers of the clients that reach personal servers and their authorization
    /// servers, which run it when a connection is made (so a DNS answer that changes after
    /// the first check gets nowhere).
    pub async fn resolve_allowed(
        &self,
        host: &str,
        port: u16,
    ) -> Result<Vec<std::net::SocketAddr>, HostRefused> {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let addrs: Vec<std::net::SocketAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![std::net::SocketAddr::new(ip, port)],
            Err(_) => tokio::net::lookup_host((host, port))
                .await
                .map_err(|e| HostRefused::Unresolved(format!("cannot resolve {host}: {e}")))?
                .collect(),
        };
        if addrs.is_empty() {
            return Err(HostRefused::Unresolved(format!(
                "{host} resolves to no address"
            )));
        }
        if let Some(refused) = addrs.iter().find(|a| !self.address_allowed(a.ip())) {
            return Err(HostRefused::Internal(format!(
                "{host} resolves to {}, a private, loopback, link-local or reserved address; personal servers may only reach public addresses (they may not reach this one unless an admin allows its network with user_server_allowed_networks)",
                refused.ip()
            )));
        }
        Ok(addrs)
    }
}

/// Why [`UserServersConfig::resolve_allowed`] gives no address (the message names the host,
/// the refused address and how an admin allows its network).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostRefused {
    #[error("{0}")]
    Unresolved(String),
    #[error("{0}")]
    Internal(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_ranges_are_refused_unless_allowed() {
        let policy = UserServersConfig::default();
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
        ] {
            assert!(!policy.address_allowed(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["93.184.216.34", "2606:2800:220:1::1", "1.1.1.1"] {
            assert!(policy.address_allowed(ip.parse().unwrap()), "{ip}");
        }
        let allowed = UserServersConfig {
            max_per_user: 1,
            allowed_networks: vec!["127.0.0.0/8".parse().unwrap()],
        };
        assert!(allowed.address_allowed("127.0.0.1".parse().unwrap()));
        assert!(allowed.address_allowed("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!allowed.address_allowed("169.254.169.254".parse().unwrap()));
    }

    #[tokio::test]
    async fn check_host_names_the_refused_address() {
        let policy = UserServersConfig::default();
        let e = policy.check_host("169.254.169.254", 80).await.unwrap_err();
        assert!(e.contains("169.254.169.254") && e.contains("user_server_allowed_networks"));
        let e = policy.check_host("localhost", 80).await.unwrap_err();
        assert!(e.contains("localhost"), "{e}");
        assert!(policy.check_host("[2606:2800:220:1::1]", 443).await.is_ok());
    }
}
