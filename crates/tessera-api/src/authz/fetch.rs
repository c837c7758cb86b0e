//! Fetching a client ID metadata document without becoming a proxy into the internal network
//! (SSRF). The rules:
//!
//! - `https` only, except `http` to a loopback host (`127.0.0.0/8`, `::1`, `localhost`) for
//!   clients on the same machine (and tests);
//! - no user info, no fragment, a path other than `/` (SEP-991);
//! - never to a private, link-local, shared (CGNAT), unique-local, unspecified, multicast,
//!   broadcast or documentation address: literal hosts are checked before any connection,
//!   names by the resolver (every address the name resolves to must pass, so a name cannot
//!   point one record at the metadata service), and redirects (at most 3) by the same rules;
//!   a name other than `localhost` that resolves to loopback is refused too;
//! - 5 s for the whole request, 64 KiB for the body, JSON only.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use url::{Host, Url};

/// Time limit of one fetch, connection and body included.
pub(crate) const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest accepted document.
pub(crate) const MAX_DOCUMENT: usize = 64 * 1024;
const MAX_REDIRECTS: usize = 3;

/// Why the HTTP client could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot build the HTTP client for client metadata documents: {0}")]
pub struct FetchSetupError(reqwest::Error);

/// Why a document was not fetched; the text is shown to the user on the error page.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FetchError {
    #[error("{0}")]
    NotAllowed(String),
    #[error("the client metadata document could not be fetched ({0})")]
    Failed(String),
}

/// Whether `url` may be fetched (before any network traffic).
pub(crate) fn check_url(url: &Url) -> Result<(), FetchError> {
    let deny = |why: &str| Err(FetchError::NotAllowed(why.to_owned()));
    if !url.username().is_empty() || url.password().is_some() {
        return deny("a client_id URL must not carry user info");
    }
    if url.fragment().is_some() {
        return deny("a client_id URL must not have a fragment");
    }
    let loopback = match url.host() {
        None => return deny("a client_id URL needs a host"),
        Some(Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(Host::Ipv4(ip)) => {
            check_ip(IpAddr::V4(ip))?;
            ip.is_loopback()
        }
        Some(Host::Ipv6(ip)) => {
            check_ip(IpAddr::V6(ip))?;
            ip.is_loopback()
        }
    };
    match url.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        _ => deny("a client_id URL must use https (http only on a loopback host)"),
    }
}

/// Whether a connection to `ip` is allowed. Loopback is (the URL rules limit it to loopback
/// hosts); the other internal ranges ([`tessera_config::network::is_internal`]) are not.
pub(crate) fn check_ip(ip: IpAddr) -> Result<(), FetchError> {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    if tessera_config::network::is_internal(ip) && !ip.is_loopback() {
        Err(FetchError::NotAllowed(format!(
            "the client_id URL points at a private or reserved address ({ip}), which is not allowed"
        )))
    } else {
        Ok(())
    }
}

/// The resolver of the fetch client: every address a name resolves to must pass [`check_ip`],
/// and only `localhost` may resolve to loopback.
struct GuardedResolver;

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let localhost = host.eq_ignore_ascii_case("localhost");
            for addr in &addrs {
                check_ip(addr.ip())?;
                if addr.ip().is_loopback() && !localhost {
                    return Err(Box::new(FetchError::NotAllowed(format!(
                        "the client_id host resolves to a loopback address ({})",
                        addr.ip()
                    )))
                        as Box<dyn std::error::Error + Send + Sync>);
                }
            }
            if addrs.is_empty() {
                return Err("the client_id host has no address".into());
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The HTTP client for metadata documents: guarded resolver, checked redirects, time limit.
pub(crate) fn client() -> Result<reqwest::Client, FetchSetupError> {
    reqwest::Client::builder()
        .dns_resolver(Arc::new(GuardedResolver))
        .redirect(reqwest::redirect::Policy::custom(|attempt| {
            if attempt.previous().len() >= MAX_REDIRECTS {
                attempt.error("too many redirects")
            } else if let Err(e) = check_url(attempt.url()) {
                attempt.error(e)
            } else {
                attempt.follow()
            }
        }))
        .timeout(FETCH_TIMEOUT)
        .connect_timeout(FETCH_TIMEOUT)
        .no_proxy()
        .build()
        .map_err(FetchSetupError)
}

/// Fetches `url` as JSON within the limits.
pub(crate) async fn fetch_json(
    http: &reqwest::Client,
    url: &Url,
) -> Result<serde_json::Value, FetchError> {
    check_url(url)?;
    let response = http
        .get(url.clone())
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| match find_not_allowed(&e) {
            Some(not_allowed) => not_allowed,
            None if e.is_timeout() => FetchError::Failed("timed out".into()),
            None => FetchError::Failed("connection failed".into()),
        })?;
    if !response.status().is_success() {
        return Err(FetchError::Failed(format!("HTTP {}", response.status())));
    }
    if response
        .content_length()
        .is_some_and(|n| n > MAX_DOCUMENT as u64)
    {
        return Err(FetchError::Failed("document too large".into()));
    }
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| FetchError::Failed("read failed".into()))?;
        if body.len() + chunk.len() > MAX_DOCUMENT {
            return Err(FetchError::Failed("document too large".into()));
        }
        body.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&body).map_err(|_| FetchError::Failed("not JSON".into()))
}

/// The [`FetchError::NotAllowed`] somewhere in a reqwest error's sources (resolver, redirect).
fn find_not_allowed(e: &reqwest::Error) -> Option<FetchError> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(f) = s.downcast_ref::<FetchError>() {
            return Some(f.clone());
        }
        source = s.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn internal_addresses_are_refused_before_any_connection() {
        for bad in [
            "https://10.0.0.5/client.json",
            "https://172.16.3.4/c",
            "https://192.168.1.10/c.json",
            "https://169.254.169.254/latest/meta-data",
            "https://100.64.0.1/c",
            "https://0.0.0.0/c",
            "https://[fd00::1]/c",
            "https://[fe80::1]/c",
            "https://[::ffff:10.0.0.1]/c",
            "https://[::]/c",
        ] {
            let e = check_url(&url(bad)).unwrap_err();
            assert!(
                matches!(&e, FetchError::NotAllowed(m) if m.contains("not allowed")),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn http_only_on_loopback_and_no_user_info() {
        assert!(check_url(&url("http://127.0.0.1:8000/client.json")).is_ok());
        assert!(check_url(&url("http://localhost:8000/client.json")).is_ok());
        assert!(check_url(&url("http://[::1]:8000/client.json")).is_ok());
        assert!(check_url(&url("https://app.example.com/oauth/client.json")).is_ok());
        assert!(check_url(&url("http://app.example.com/client.json")).is_err());
        assert!(check_url(&url("https://u:p@app.example.com/client.json")).is_err());
        assert!(check_url(&url("https://app.example.com/c#x")).is_err());
        assert!(check_url(&url("ftp://app.example.com/c")).is_err());
    }

    #[tokio::test]
    async fn a_name_resolving_to_loopback_is_refused_by_the_resolver() {
        use reqwest::dns::Resolve as _;
        // "localhost" may; any other name resolving to loopback may not. `127.0.0.1.nip.io`-style
        // names need DNS; a name from /etc/hosts other than localhost is not portable either,
        // so check the resolver directly with localhost (allowed).
        let ok = GuardedResolver
            .resolve("localhost".parse().unwrap())
            .await
            .map(|addrs| addrs.count());
        assert!(ok.is_ok_and(|n| n > 0));
    }

    #[tokio::test]
    async fn a_redirect_to_an_internal_address_is_not_followed() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            let _ = s
                .write_all(
                    b"HTTP/1.1 302 Found\r\nLocation: http://169.254.169.254/latest\r\nContent-Length: 0\r\n\r\n",
                )
                .await;
        });
        let http = client().unwrap();
        let e = fetch_json(&http, &url(&format!("http://127.0.0.1:{port}/client.json")))
            .await
            .unwrap_err();
        assert!(matches!(e, FetchError::NotAllowed(_)), "{e:?}");
    }

    #[tokio::test]
    async fn an_oversized_document_is_refused() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            let body = vec![b' '; MAX_DOCUMENT + 10];
            let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n";
            let _ = s.write_all(head.as_bytes()).await;
            let _ = s.write_all(&body).await;
        });
        let http = client().unwrap();
        let e = fetch_json(&http, &url(&format!("http://127.0.0.1:{port}/c.json")))
            .await
            .unwrap_err();
        assert_eq!(e, FetchError::Failed("document too large".into()));
    }
}
