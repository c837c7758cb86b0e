//! The two cookies Tessera sets — the short-lived login cookie and the session cookie — and how
//! their names and attributes are chosen.
//!
//! The rule: cookies are `__Host-tessera_login` / `__Host-tessera_session` with `Secure;
//! HttpOnly; SameSite=Lax; Path=/` (no `Domain`), unless the gateway's base URL (`public_url`,
//! else `http://<listen>`) is plain `http` on a loopback host (`localhost`, `127.0.0.0/8`,
//! `::1`): then they are `tessera_login` / `tessera_session` without `Secure` (a browser neither
//! stores a `Secure` cookie from, nor sends it to, a plain-http origin; `__Host-` requires
//! `Secure`). A plain-http base URL on any other host is refused at start-up.

use std::fmt::Write as _;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, header};
use url::{Host, Url};

const LOGIN: &str = "tessera_login";
const SESSION: &str = "tessera_session";
const HOST_PREFIX: &str = "__Host-";

/// Cookie names and the `Secure` attribute, fixed at start-up from the base URL.
#[derive(Debug, Clone)]
pub struct CookiePolicy {
    secure: bool,
    login: String,
    session: String,
}

/// Why the base URL cannot carry sign-in cookies.
#[derive(Debug, thiserror::Error)]
#[error(
    "sign-in needs an https public_url (got {0}): session cookies are Secure; plain http is allowed only on a loopback host"
)]
pub struct InsecureBaseUrl(pub String);

impl CookiePolicy {
    /// The policy for a gateway reached at `base`.
    pub fn for_base_url(base: &Url) -> Result<Self, InsecureBaseUrl> {
        let secure = match base.scheme() {
            "https" => true,
            "http" if is_loopback(base) => false,
            _ => return Err(InsecureBaseUrl(base.to_string())),
        };
        let prefix = if secure { HOST_PREFIX } else { "" };
        Ok(CookiePolicy {
            secure,
            login: format!("{prefix}{LOGIN}"),
            session: format!("{prefix}{SESSION}"),
        })
    }

    pub fn login_name(&self) -> &str {
        &self.login
    }

    pub fn session_name(&self) -> &str {
        &self.session
    }

    /// `Set-Cookie` for a cookie named `name` with `value`, living `max_age`.
    pub fn set(&self, name: &str, value: &str, max_age: Duration) -> Option<HeaderValue> {
        self.header(name, value, max_age.as_secs())
    }

    /// `Set-Cookie` that deletes the cookie `name`.
    pub fn clear(&self, name: &str) -> Option<HeaderValue> {
        self.header(name, "", 0)
    }

    fn header(&self, name: &str, value: &str, max_age: u64) -> Option<HeaderValue> {
        let mut text = format!("{name}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Lax");
        if self.secure {
            text.push_str("; Secure");
        }
        let mut v = HeaderValue::from_str(&text).ok()?;
        v.set_sensitive(true);
        Some(v)
    }

    /// The value of cookie `name` in the request's `Cookie` headers, if present and non-empty.
    pub fn get<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// `<base>/<path>` with exactly one slash between them (`base` may carry a path prefix).
pub fn join(base: &Url, path: &str) -> String {
    let mut s = base.as_str().trim_end_matches('/').to_owned();
    let _ = write!(s, "/{}", path.trim_start_matches('/'));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(url: &str) -> CookiePolicy {
        CookiePolicy::for_base_url(&Url::parse(url).unwrap()).unwrap()
    }

    #[test]
    fn https_cookies_are_host_prefixed_secure_httponly_lax() {
        let p = policy("https://mcp.example.com");
        assert_eq!(p.session_name(), "__Host-tessera_session");
        assert_eq!(p.login_name(), "__Host-tessera_login");
        let v = p
            .set(p.session_name(), "abc", Duration::from_secs(3600))
            .unwrap();
        assert_eq!(
            v.to_str().unwrap(),
            "__Host-tessera_session=abc; Path=/; Max-Age=3600; HttpOnly; SameSite=Lax; Secure"
        );
        assert!(v.is_sensitive());
        assert!(!v.to_str().unwrap().contains("Domain"));
    }

    #[test]
    fn plain_http_on_loopback_drops_secure_and_the_prefix() {
        for url in [
            "http://127.0.0.1:8080",
            "http://localhost:1",
            "http://[::1]:9",
        ] {
            let p = policy(url);
            assert_eq!(p.session_name(), "tessera_session");
            let v = p
                .set(p.login_name(), "x", Duration::from_secs(600))
                .unwrap();
            assert_eq!(
                v.to_str().unwrap(),
                "tessera_login=x; Path=/; Max-Age=600; HttpOnly; SameSite=Lax"
            );
        }
    }

    #[test]
    fn plain_http_elsewhere_is_refused() {
        let err =
            CookiePolicy::for_base_url(&Url::parse("http://mcp.example.com").unwrap()).unwrap_err();
        assert!(err.to_string().contains("https public_url"));
    }

    #[test]
    fn clearing_sets_max_age_zero() {
        let p = policy("https://x.example");
        let v = p.clear(p.session_name()).unwrap();
        assert!(
            v.to_str()
                .unwrap()
                .starts_with("__Host-tessera_session=; Path=/; Max-Age=0;")
        );
    }

    #[test]
    fn reads_a_cookie_among_others() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; tessera_session=s1"),
        );
        h.append(header::COOKIE, HeaderValue::from_static("b=2"));
        assert_eq!(CookiePolicy::get(&h, "tessera_session"), Some("s1"));
        assert_eq!(CookiePolicy::get(&h, "b"), Some("2"));
        assert_eq!(CookiePolicy::get(&h, "tessera_login"), None);
        h.append(header::COOKIE, HeaderValue::from_static("tessera_login="));
        assert_eq!(CookiePolicy::get(&h, "tessera_login"), None);
    }

    #[test]
    fn join_keeps_a_path_prefix() {
        let u = Url::parse("https://x.example/tessera/").unwrap();
        assert_eq!(
            join(&u, "/auth/callback"),
            "https://x.example/tessera/auth/callback"
        );
        let u = Url::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!(
            join(&u, "/auth/callback"),
            "http://127.0.0.1:8080/auth/callback"
        );
    }
}
