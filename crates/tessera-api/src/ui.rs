//! The web UI: `GET /` (one HTML page) and its assets under `/ui/`, compiled into the binary
//! (`include_str!`), so users need no build step and the page needs nothing from elsewhere at
//! run time. The page is plain HTML with one vanilla script that talks to the REST API with the
//! session cookie; it signs in through `/auth/login`.
//!
//! Every answer carries `Content-Security-Policy: default-src 'self'; frame-ancestors 'none'`
//! (there is no inline script or style), `X-Content-Type-Options: nosniff` and
//! `Referrer-Policy: no-referrer`.

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

const INDEX_HTML: &str = include_str!("../ui/index.html");
const APP_JS: &str = include_str!("../ui/app.js");
const APP_CSS: &str = include_str!("../ui/app.css");
const FAVICON_SVG: &str = include_str!("../ui/favicon.svg");

/// The page's Content-Security-Policy: its own origin only, never framed.
pub const CSP: &str =
    "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// The UI's routes (no state): `/`, `/ui/app.js`, `/ui/app.css`, `/ui/favicon.svg`.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/ui/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/ui/app.css",
            get(|| async { asset("text/css; charset=utf-8", APP_CSS) }),
        )
        .route(
            "/ui/favicon.svg",
            get(|| async { asset("image/svg+xml", FAVICON_SVG) }),
        )
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut r = (StatusCode::OK, body).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // The files change only with the binary; revalidation is cheap and never serves a stale
    // script next to a new page.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use http::Request;
    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;

    use super::*;

    async fn get(path: &str) -> Response {
        router::<()>()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn the_page_and_its_assets_are_served_with_the_policy() {
        for (path, ty) in [
            ("/", "text/html"),
            ("/ui/app.js", "text/javascript"),
            ("/ui/app.css", "text/css"),
            ("/ui/favicon.svg", "image/svg+xml"),
        ] {
            let r = get(path).await;
            assert_eq!(r.status(), StatusCode::OK, "{path}");
            let h = r.headers();
            assert!(h[header::CONTENT_TYPE].to_str().unwrap().starts_with(ty));
            assert_eq!(h[header::CONTENT_SECURITY_POLICY], CSP);
            assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        }
        assert_eq!(get("/ui/missing.js").await.status(), StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn the_page_has_no_inline_script_or_style_and_loads_nothing_from_elsewhere() {
        let body = get("/")
            .await
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes();
        let html = std::str::from_utf8(&body).unwrap();
        for tag in html.split("<script").skip(1) {
            let open = tag.split('>').next().unwrap();
            assert!(
                open.contains("src=\"/ui/"),
                "inline or foreign script: <script{open}>"
            );
            assert!(
                tag[open.len() + 1..].starts_with("</script>"),
                "script with a body"
            );
        }
        assert!(!html.contains("<style"), "inline style element");
        assert!(!html.contains(" style=\""), "inline style attribute");
        let handler = html.split(" on").skip(1).find(|rest| {
            let name: String = rest.chars().take_while(char::is_ascii_lowercase).collect();
            !name.is_empty() && rest[name.len()..].starts_with('=')
        });
        assert!(
            handler.is_none(),
            "inline event handler attribute: on{handler:?}"
        );
        assert!(
            !html.contains("http://") && !html.contains("https://"),
            "external URL"
        );
        for asset in [APP_JS, APP_CSS] {
            assert!(!asset.contains("http://") && !asset.contains("https://"));
            assert!(!asset.contains(".innerHTML"), "HTML built from strings");
        }
    }
}
