//! HTTP-level rules of the streamable HTTP and legacy SSE front ends, checked against the real
//! axum router of a gateway with no upstreams (the MCP traffic itself is covered end to end in
//! tests/e2e with the official SDKs).

use axum::body::Body;
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use std::sync::Arc;
use tessera_proxy::Gateway;
use tessera_proxy::frontend::router;
use tower::ServiceExt;

const ACCEPT_BOTH: &str = "application/json, text/event-stream";

fn gateway(config: &str) -> Arc<Gateway> {
    let config = tessera_config::load_str(config, &|_| None).expect("test config is valid");
    Gateway::new(config).expect("HTTP client builds")
}

fn post() -> http::request::Builder {
    Request::builder()
        .method(Method::POST)
        .uri("/mcp")
        .header("content-type", "application/json")
        .header("accept", ACCEPT_BOTH)
}

async fn send(gw: &Arc<Gateway>, req: Request<Body>) -> (StatusCode, http::HeaderMap, String) {
    let resp = router(gw.clone())
        .oneshot(req)
        .await
        .expect("router is infallible");
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

const INIT: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;

async fn initialize(gw: &Arc<Gateway>) -> String {
    let (status, headers, body) = send(gw, post().body(Body::from(INIT)).unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    headers
        .get("mcp-session-id")
        .expect("session id issued")
        .to_str()
        .unwrap()
        .to_owned()
}

fn in_session(sid: &str, body: &'static str) -> Request<Body> {
    post()
        .header("mcp-session-id", sid)
        .body(Body::from(body))
        .unwrap()
}

#[tokio::test]
async fn initialize_negotiates_the_clients_version_and_issues_a_session() {
    let gw = gateway("{}");
    let (status, headers, body) = send(&gw, post().body(Body::from(INIT)).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers.contains_key("mcp-session-id"));
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["result"]["protocolVersion"], "2025-06-18");
    assert_eq!(v["result"]["serverInfo"]["name"], "tessera");
}

#[tokio::test]
async fn an_unknown_protocol_version_gets_the_latest() {
    let gw = gateway("{}");
    let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"1999-01-01","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;
    let (_, _, body) = send(&gw, post().body(Body::from(init)).unwrap()).await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["result"]["protocolVersion"], "2025-11-25");
}

#[tokio::test]
async fn requests_without_a_session_id_are_400_and_with_an_unknown_one_404() {
    let gw = gateway("{}");
    let ping = r#"{"jsonrpc":"2.0","id":2,"method":"ping"}"#;
    let (status, _, _) = send(&gw, post().body(Body::from(ping)).unwrap()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _, _) = send(&gw, in_session("no-such-session", ping)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn ping_and_notifications_in_a_session() {
    let gw = gateway("{}");
    let sid = initialize(&gw).await;
    let (status, _, _) = send(
        &gw,
        in_session(
            &sid,
            r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, headers, body) = send(
        &gw,
        in_session(&sid, r#"{"jsonrpc":"2.0","id":"p","method":"ping"}"#),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers.get("content-type").unwrap(), "application/json");
    assert_eq!(body, r#"{"jsonrpc":"2.0","id":"p","result":{}}"#);
}

#[tokio::test]
async fn an_unsupported_protocol_version_header_is_400() {
    let gw = gateway("{}");
    let sid = initialize(&gw).await;
    let body = r#"{"jsonrpc":"2.0","id":2,"method":"ping"}"#;
    let req = post()
        .header("mcp-session-id", &sid)
        .header("mcp-protocol-version", "2023-01-01")
        .body(Body::from(body))
        .unwrap();
    let (status, _, text) = send(&gw, req).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(text.contains("MCP-Protocol-Version"), "{text}");
    let req = post()
        .header("mcp-session-id", &sid)
        .header("mcp-protocol-version", "2025-06-18")
        .body(Body::from(body))
        .unwrap();
    assert_eq!(send(&gw, req).await.0, StatusCode::OK);
}

#[tokio::test]
async fn a_foreign_origin_is_refused_and_loopback_and_configured_origins_pass() {
    let gw = gateway(
        r#"{"public_url":"https://mcp.example.com","allowed_origins":["https://app.example.org"]}"#,
    );
    for (origin, expected) in [
        ("https://evil.example.net", StatusCode::FORBIDDEN),
        ("http://localhost:6274", StatusCode::OK),
        ("http://127.0.0.1:3000", StatusCode::OK),
        ("https://mcp.example.com", StatusCode::OK),
        ("https://app.example.org", StatusCode::OK),
        ("null", StatusCode::FORBIDDEN),
    ] {
        let req = post()
            .header("origin", origin)
            .body(Body::from(INIT))
            .unwrap();
        assert_eq!(send(&gw, req).await.0, expected, "origin {origin}");
    }
}

#[tokio::test]
async fn malformed_json_batches_and_bad_envelopes_are_rejected() {
    let gw = gateway("{}");
    let (status, _, body) = send(&gw, post().body(Body::from("{\"jsonrpc\":")).unwrap()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("-32700"), "{body}");
    let batch = "[{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}]";
    let (status, _, body) = send(&gw, post().body(Body::from(batch)).unwrap()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("-32600"), "{body}");
    let sid = initialize(&gw).await;
    let (_, _, body) = send(
        &gw,
        in_session(&sid, r#"{"jsonrpc":"1.0","id":5,"method":"ping"}"#),
    )
    .await;
    assert!(body.contains("-32600"), "{body}");
}

#[tokio::test]
async fn an_accept_header_without_json_or_sse_is_406() {
    let gw = gateway("{}");
    let req = Request::builder()
        .method(Method::POST)
        .uri("/mcp")
        .header("accept", "text/html")
        .body(Body::from(INIT))
        .unwrap();
    assert_eq!(send(&gw, req).await.0, StatusCode::NOT_ACCEPTABLE);
}

#[tokio::test]
async fn delete_ends_the_session() {
    let gw = gateway("{}");
    let sid = initialize(&gw).await;
    let del = || {
        Request::builder()
            .method(Method::DELETE)
            .uri("/mcp")
            .header("mcp-session-id", &sid)
            .body(Body::empty())
            .unwrap()
    };
    assert_eq!(send(&gw, del()).await.0, StatusCode::NO_CONTENT);
    assert_eq!(send(&gw, del()).await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        send(
            &gw,
            in_session(&sid, r#"{"jsonrpc":"2.0","id":2,"method":"ping"}"#)
        )
        .await
        .0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn only_one_get_stream_per_session() {
    let gw = gateway("{}");
    let sid = initialize(&gw).await;
    let get = || {
        Request::builder()
            .method(Method::GET)
            .uri("/mcp")
            .header("mcp-session-id", &sid)
            .header("accept", "text/event-stream")
            .body(Body::empty())
            .unwrap()
    };
    let app = router(gw.clone());
    let first = app.clone().oneshot(get()).await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(
        first.headers().get("content-type").unwrap(),
        "text/event-stream"
    );
    let second = app.oneshot(get()).await.unwrap();
    assert_eq!(second.status(), StatusCode::CONFLICT);
    drop(first);
}

#[tokio::test]
async fn unknown_methods_and_tools_are_jsonrpc_errors() {
    let gw = gateway("{}");
    let sid = initialize(&gw).await;
    let (_, _, body) = send(
        &gw,
        in_session(&sid, r#"{"jsonrpc":"2.0","id":3,"method":"nope/nothing"}"#),
    )
    .await;
    assert!(body.contains("-32601"), "{body}");
    let (_, _, body) = send(&gw, in_session(&sid, r#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"ghost__tool","arguments":{}}}"#)).await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["code"], -32602);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("ghost__tool")
    );
    let (_, _, body) = send(
        &gw,
        in_session(
            &sid,
            r#"{"jsonrpc":"2.0","id":5,"method":"tools/list","params":{"cursor":"not-a-cursor"}}"#,
        ),
    )
    .await;
    assert!(body.contains("-32602"), "{body}");
}

#[tokio::test]
async fn legacy_sse_message_endpoint_needs_a_known_session() {
    let gw = gateway("{}");
    let req = Request::builder()
        .method(Method::POST)
        .uri("/message?sessionId=nope")
        .header("content-type", "application/json")
        .body(Body::from(INIT))
        .unwrap();
    assert_eq!(send(&gw, req).await.0, StatusCode::NOT_FOUND);
    let req = Request::builder()
        .method(Method::POST)
        .uri("/message")
        .header("content-type", "application/json")
        .body(Body::from(INIT))
        .unwrap();
    assert_eq!(send(&gw, req).await.0, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn readyz_is_ok_with_no_upstreams_and_lists_disabled_ones() {
    let gw = gateway(r#"{"mcpServers":{"off":{"command":"true","enabled":false}}}"#);
    let req = Request::builder()
        .uri("/readyz")
        .body(Body::empty())
        .unwrap();
    let (status, _, body) = send(&gw, req).await;
    assert_eq!(status, StatusCode::OK);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["upstreams"]["off"]["state"], "disabled");
}

#[tokio::test]
async fn browser_clients_get_cors_headers_and_can_read_the_session_id() {
    let gw = gateway("{}");
    let preflight = Request::builder()
        .method(Method::OPTIONS)
        .uri("/mcp")
        .header("origin", "http://localhost:6274")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "content-type, mcp-protocol-version, authorization",
        )
        .body(Body::empty())
        .unwrap();
    let (status, headers, _) = send(&gw, preflight).await;
    assert!(status.is_success(), "{status}");
    assert_eq!(
        headers["access-control-allow-origin"],
        "http://localhost:6274"
    );
    let req = post()
        .header("origin", "http://localhost:6274")
        .body(Body::from(INIT))
        .unwrap();
    let (status, headers, _) = send(&gw, req).await;
    assert_eq!(status, StatusCode::OK);
    let exposed = headers["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(
        exposed.contains("mcp-session-id") && exposed.contains("www-authenticate"),
        "{exposed}"
    );
}

#[tokio::test]
async fn metrics_count_sessions_routed_calls_and_auth_rejections() {
    let gw = gateway(
        r#"{"mcpServers":{"gone":{"url":"http://127.0.0.1:9/mcp","protocol":"streamable-http","timeout":"2s"}}}"#,
    );
    let sid = initialize(&gw).await;
    let text = |gw: &Arc<Gateway>| gw.metrics();
    assert!(
        text(&gw).contains("tessera_client_sessions 1"),
        "{}",
        text(&gw)
    );
    assert!(text(&gw).contains("tessera_upstream_calls_total{server=\"gone\"} 0"));
    // A resource read is routed by URI even though the (unreachable) server listed nothing:
    // one call, answered by the gateway as unavailable.
    let (_, _, body) = send(&gw, in_session(&sid, r#"{"jsonrpc":"2.0","id":4,"method":"resources/read","params":{"uri":"tessera://gone/x://y"}}"#)).await;
    assert!(body.contains("-32001"), "{body}");
    assert!(
        text(&gw).contains("tessera_upstream_calls_total{server=\"gone\"} 1"),
        "{}",
        text(&gw)
    );
    assert!(
        text(&gw)
            .contains("tessera_upstream_failures_total{server=\"gone\",reason=\"unavailable\"} 1"),
        "{}",
        text(&gw)
    );
    let req = Request::builder()
        .uri("/metrics")
        .body(Body::empty())
        .unwrap();
    let (status, headers, body) = send(&gw, req).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    assert!(body.contains("# TYPE tessera_upstream_calls_total counter"));
}

#[tokio::test]
async fn a_refusal_reads_the_body_first_or_says_the_connection_closes() {
    // hyper keeps a connection after an answer only if the request's body was read; a refusal
    // given before reading it must either read it or say `Connection: close`, or a client
    // reusing the connection sees it drop without an answer.
    let gw = gateway(r#"{"public_url":"https://mcp.example.com"}"#);
    let refused = || post().header("origin", "https://evil.example.net");

    let (status, headers, _) = send(&gw, refused().body(Body::from(INIT)).unwrap()).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        headers.get("connection").is_none(),
        "a body that arrives is read and the connection kept: {headers:?}"
    );

    // A body that never finishes: the refusal comes (after the bounded wait) and says close.
    let stalled = futures::StreamExt::chain(
        futures::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from_static(
            b"{\"jsonrpc\"",
        ))]),
        futures::stream::pending(),
    );
    let (status, headers, _) = send(&gw, refused().body(Body::from_stream(stalled)).unwrap()).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        headers.get("connection").map(|v| v.to_str().unwrap()),
        Some("close"),
        "{headers:?}"
    );
}
