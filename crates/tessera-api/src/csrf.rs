//! CSRF protection for cookie-authenticated mutating calls (POST, PUT, PATCH, DELETE).
//!
//! The rule (the same as Go's `net/http.CrossOriginProtection`): a request is refused with 403
//! when the browser says it is cross-origin — `Sec-Fetch-Site` present and neither
//! `same-origin` nor `none`, or else an `Origin` header that is not the gateway's own origin
//! (`public_url`, else `http://<listen>`). A request with neither header did not come from a
//! browser page (every current browser sends `Origin` on a cross-origin `fetch()` or form POST,
//! and `Sec-Fetch-Site` on every request), so it carries no ambient-authority risk and passes.
//! A plain HTML page on the gateway satisfies the rule with an ordinary same-origin `fetch()`:
//! the browser adds `Origin` and `Sec-Fetch-Site: same-origin` itself; no token to thread
//! through. The session cookie is also `SameSite=Lax`, so a cross-site POST does not carry it
//! in the first place; this check is the second wall.
//!
//! Bearer (personal access token) callers are exempt: a browser never attaches a bearer token
//! on its own.

use http::{HeaderMap, Method};

/// Whether a cookie-authenticated request with `method` and `headers` may proceed, for a
/// gateway whose origin is `origin` (`scheme://host[:port]`, no trailing slash).
pub fn allows(method: &Method, headers: &HeaderMap, origin: &str) -> bool {
    if matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    ) {
        return true;
    }
    if let Some(site) = headers.get("sec-fetch-site") {
        return matches!(site.to_str(), Ok("same-origin" | "none"));
    }
    match headers.get(http::header::ORIGIN) {
        None => true,
        Some(v) => v
            .to_str()
            .is_ok_and(|v| v.trim_end_matches('/').eq_ignore_ascii_case(origin)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORIGIN: &str = "https://gw.example.test";

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn safe_methods_always_pass() {
        let h = headers(&[
            ("origin", "https://evil.test"),
            ("sec-fetch-site", "cross-site"),
        ]);
        assert!(allows(&Method::GET, &h, ORIGIN));
    }

    #[test]
    fn same_origin_browsers_pass_and_cross_origin_ones_do_not() {
        for (pairs, ok) in [
            (&[("sec-fetch-site", "same-origin")][..], true),
            (&[("sec-fetch-site", "none")][..], true),
            (&[("sec-fetch-site", "same-site")][..], false),
            (&[("sec-fetch-site", "cross-site")][..], false),
            (
                &[("sec-fetch-site", "cross-site"), ("origin", ORIGIN)][..],
                false,
            ),
            (&[("origin", ORIGIN)][..], true),
            (&[("origin", "https://gw.example.test/")][..], true),
            (&[("origin", "https://evil.test")][..], false),
            (&[("origin", "null")][..], false),
            (&[("origin", "http://gw.example.test")][..], false),
            (&[][..], true),
        ] {
            assert_eq!(
                allows(&Method::POST, &headers(pairs), ORIGIN),
                ok,
                "{pairs:?}"
            );
            assert_eq!(allows(&Method::DELETE, &headers(pairs), ORIGIN), ok);
        }
    }
}
