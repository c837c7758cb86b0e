//! `GET /api/v1/openapi.json`: the hand-written OpenAPI 3.1 document of the sign-in routes and
//! the REST API (`openapi.json` beside this file), served as is, without authentication.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

/// The document, as served.
pub const DOCUMENT: &str = include_str!("openapi.json");

/// `GET /api/v1/openapi.json`.
pub(crate) async fn document() -> Response {
    let mut r = DOCUMENT.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use axum::body::Body;
    use http::{Method, Request, StatusCode};
    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;

    use super::*;

    const METHODS: &[&str] = &["get", "post", "put", "patch", "delete"];

    fn doc() -> serde_json::Value {
        serde_json::from_str(DOCUMENT).unwrap()
    }

    /// `(METHOD, path)` of every operation in the document.
    fn documented() -> BTreeSet<(String, String)> {
        let doc = doc();
        let mut out = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, _) in item.as_object().unwrap() {
                assert!(METHODS.contains(&method.as_str()), "{path}: {method}");
                out.insert((method.to_uppercase(), path.clone()));
            }
        }
        out
    }

    /// `(METHOD, path)` of every route in [`crate::router`], read from its source: each
    /// `.route("<path>", <method>(…).<method>(…))`.
    fn served() -> BTreeSet<(String, String)> {
        let mut out = BTreeSet::new();
        for (src, marker) in [
            (include_str!("lib.rs"), "pub fn router("),
            (include_str!("authz/mod.rs"), "pub(crate) fn router("),
        ] {
            routes_of(src, marker, &mut out);
        }
        assert!(!out.is_empty());
        out
    }

    fn routes_of(src: &str, marker: &str, out: &mut BTreeSet<(String, String)>) {
        let body = src
            .split(marker)
            .nth(1)
            .and_then(|s| s.split("\n}\n").next())
            .unwrap();
        for call in body.split(".route(").skip(1) {
            let path = call.split('"').nth(1).unwrap().to_owned();
            let rest = call.split_once(',').unwrap().1;
            let mut depth = 0usize;
            let mut handlers = String::new();
            for c in rest.chars() {
                match c {
                    '(' => depth += 1,
                    ')' if depth == 0 => break,
                    ')' => depth -= 1,
                    _ if depth == 0 => handlers.push(c),
                    _ => {}
                }
            }
            for m in handlers.split('.') {
                let m = m.trim().trim_end_matches(',').trim();
                assert!(METHODS.contains(&m), "route {path}: unexpected {m:?}");
                out.insert((m.to_uppercase(), path.clone()));
            }
        }
    }

    #[test]
    fn the_document_is_openapi_3_1_with_the_error_shape_and_both_security_schemes() {
        let doc = doc();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1."));
        let error = &doc["components"]["schemas"]["Error"];
        let required: BTreeSet<&str> = error["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(
            required,
            BTreeSet::from(["error", "message", "status_code"])
        );
        let schemes = &doc["components"]["securitySchemes"];
        assert_eq!(schemes["session"]["in"], "cookie");
        assert_eq!(schemes["session"]["name"], "__Host-tessera_session");
        assert_eq!(schemes["bearer"]["scheme"], "bearer");
        // Every $ref resolves.
        let text = DOCUMENT;
        for r in text.split("\"$ref\": \"#/").skip(1) {
            let pointer = r.split('"').next().unwrap();
            assert!(
                doc.pointer(&format!("/{pointer}")).is_some(),
                "dangling $ref {pointer}"
            );
        }
    }

    #[test]
    fn every_served_route_is_documented_and_every_documented_route_is_served() {
        assert_eq!(served(), documented());
    }

    #[tokio::test]
    async fn every_documented_operation_reaches_a_handler_and_the_document_is_served() {
        let dir = tempfile::tempdir().unwrap();
        let state = crate::tests::test_state(dir.path()).await;
        let app = crate::router(state);
        for (method, path) in documented() {
            let uri = path.replace("{id}", "nope");
            let req = Request::builder()
                .method(Method::from_bytes(method.as_bytes()).unwrap())
                .uri(&uri)
                .body(Body::empty())
                .unwrap();
            let r = app.clone().oneshot(req).await.unwrap();
            let status = r.status();
            let bytes = r.into_body().collect().await.unwrap().to_bytes();
            // The router's own 404/405 have no body; every handler answers with one.
            assert!(
                status != StatusCode::METHOD_NOT_ALLOWED && !bytes.is_empty(),
                "{method} {uri}: {status}"
            );
        }
        let r = app
            .oneshot(
                Request::get("/api/v1/openapi.json")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
        let bytes = r.into_body().collect().await.unwrap().to_bytes();
        let served: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(served, doc());
    }
}
