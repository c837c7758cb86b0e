//! The streamable HTTP upstream transport against a scripted upstream: session ids, SSE
//! responses, resumption of a broken response stream with `Last-Event-ID`, an upstream that
//! forgets the session (404), and the GET stream being open before the first request.

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use http::Request;
use http_body_util::BodyExt;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tessera_proxy::Gateway;
use tessera_proxy::frontend::router;
use tower::ServiceExt;

/// What the scripted upstream saw.
#[derive(Default)]
struct Script {
    /// Last-Event-ID values of GET requests.
    resumed_from: Mutex<Vec<String>>,
    /// tools/call requests (id, name).
    calls: Mutex<Vec<(u64, String)>>,
    /// When set, every request with a session id gets 404 (the upstream restarted).
    forget_sessions: AtomicBool,
    sessions: AtomicUsize,
    /// 0: no GET stream (405). Otherwise the GET stream is answered after this many ms.
    stream_delay_ms: AtomicU64,
    /// Sessions whose GET stream has been answered.
    streams_open: Mutex<HashSet<String>>,
    /// For each tools/call: whether its session's GET stream was open when it arrived.
    call_found_stream: Mutex<Vec<bool>>,
}

fn sse(events: &str) -> Response {
    ([("content-type", "text/event-stream")], events.to_owned()).into_response()
}

async fn upstream_post(
    State(script): State<Arc<Script>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let msg: serde_json::Value = serde_json::from_str(&body).expect("gateway sends JSON");
    if headers.contains_key("mcp-session-id") && script.forget_sessions.load(Ordering::SeqCst) {
        return StatusCode::NOT_FOUND.into_response();
    }
    let id = msg.get("id").cloned();
    match msg["method"].as_str() {
        Some("initialize") => {
            let n = script.sessions.fetch_add(1, Ordering::SeqCst);
            let result = serde_json::json!({"jsonrpc":"2.0","id":id,"result":{"protocolVersion":"2025-06-18","capabilities":{"tools":{}},"serverInfo":{"name":"scripted","version":"1"}}});
            ([("mcp-session-id", format!("s{n}"))], axum::Json(result)).into_response()
        }
        Some("tools/list") => {
            let tools = serde_json::json!({"jsonrpc":"2.0","id":id,"result":{"tools":[{"name":"slow","inputSchema":{"type":"object"}}]}});
            axum::Json(tools).into_response()
        }
        Some("tools/call") => {
            let call_id = id
                .as_ref()
                .and_then(|v| v.as_u64())
                .expect("gateway ids are integers");
            script.calls.lock().unwrap().push((
                call_id,
                msg["params"]["name"].as_str().unwrap_or("").to_owned(),
            ));
            let sid = headers
                .get("mcp-session-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            let found = script.streams_open.lock().unwrap().contains(sid);
            script.call_found_stream.lock().unwrap().push(found);
            // Progress with an event id, then the stream breaks before the response.
            let token = msg["params"]["_meta"]["progressToken"].clone();
            let progress = serde_json::json!({"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":token,"progress":1,"total":2}});
            sse(&format!("id: ev-{call_id}-1\ndata: {progress}\n\n"))
        }
        _ => StatusCode::ACCEPTED.into_response(),
    }
}

async fn upstream_get(State(script): State<Arc<Script>>, headers: HeaderMap) -> Response {
    let Some(last) = headers.get("last-event-id").and_then(|v| v.to_str().ok()) else {
        let delay = script.stream_delay_ms.load(Ordering::SeqCst);
        if delay == 0 {
            return StatusCode::METHOD_NOT_ALLOWED.into_response();
        }
        // A server slow to answer the GET stream; once answered it stays open, quiet.
        tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
        let sid = headers
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        script.streams_open.lock().unwrap().insert(sid.to_owned());
        let quiet = futures::stream::pending::<Result<bytes::Bytes, std::io::Error>>();
        return (
            [("content-type", "text/event-stream")],
            Body::from_stream(quiet),
        )
            .into_response();
    };
    script.resumed_from.lock().unwrap().push(last.to_owned());
    // ev-<call id>-1 → replay the rest of that call's stream: its response.
    let call_id: u64 = last
        .split('-')
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let response = serde_json::json!({"jsonrpc":"2.0","id":call_id,"result":{"content":[{"type":"text","text":"resumed"}],"x_after_resume":true}});
    sse(&format!("id: ev-{call_id}-2\ndata: {response}\n\n"))
}

async fn start_upstream(script: Arc<Script>) -> String {
    let app = Router::new()
        .route("/mcp", post(upstream_post).get(upstream_get))
        .with_state(script);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/mcp")
}

async fn gateway_for(url: &str) -> Arc<Gateway> {
    let config = format!(
        r#"{{"mcpServers":[{{"name":"up","url":"{url}","protocol":"streamable-http","timeout":"5s"}}]}}"#
    );
    let gw = Gateway::new(tessera_config::load_str(&config, &|_| None).unwrap()).unwrap();
    gw.start();
    // Discovery lists the upstream's tools; wait (bounded) until it is ready.
    for _ in 0..200 {
        if gw.readiness().0 {
            return gw;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("upstream never became ready: {:?}", gw.readiness().1);
}

async fn rpc(
    gw: &Arc<Gateway>,
    sid: Option<&str>,
    body: serde_json::Value,
) -> (StatusCode, HeaderMap, String) {
    let mut req = Request::post("/mcp")
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream");
    if let Some(sid) = sid {
        req = req.header("mcp-session-id", sid);
    }
    let resp = router(gw.clone())
        .oneshot(req.body(Body::from(body.to_string())).unwrap())
        .await
        .unwrap();
    let (status, headers) = (resp.status(), resp.headers().clone());
    let text = String::from_utf8(
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    (status, headers, text)
}

async fn client_session(gw: &Arc<Gateway>) -> String {
    let init = serde_json::json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}});
    let (_, headers, _) = rpc(gw, None, init).await;
    headers["mcp-session-id"].to_str().unwrap().to_owned()
}

/// The `data:` payloads of an SSE body, parsed.
fn events(body: &str) -> Vec<serde_json::Value> {
    body.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| serde_json::from_str(d.trim()).unwrap())
        .collect()
}

#[tokio::test]
async fn a_broken_response_stream_is_resumed_with_last_event_id() {
    let script = Arc::new(Script::default());
    let gw = gateway_for(&start_upstream(script.clone()).await).await;
    let sid = client_session(&gw).await;
    let call = serde_json::json!({"jsonrpc":"2.0","id":"c1","method":"tools/call","params":{"name":"up__slow","arguments":{},"_meta":{"progressToken":"p1"}}});
    let (status, headers, body) = rpc(&gw, Some(&sid), call).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        headers["content-type"], "text/event-stream",
        "progress came first, so the answer is a stream"
    );
    let events = events(&body);
    assert_eq!(events.len(), 2, "{body}");
    assert_eq!(events[0]["method"], "notifications/progress");
    assert_eq!(events[0]["params"]["progressToken"], "p1");
    assert_eq!(
        events[1]["id"], "c1",
        "the response carries the client's id"
    );
    assert_eq!(events[1]["result"]["content"][0]["text"], "resumed");
    assert_eq!(events[1]["result"]["x_after_resume"], true);
    let (upstream_id, name) = script.calls.lock().unwrap()[0].clone();
    assert_eq!(name, "slow", "the gateway strips its namespace");
    assert_eq!(
        *script.resumed_from.lock().unwrap(),
        vec![format!("ev-{upstream_id}-1")]
    );
}

#[tokio::test]
async fn an_upstream_that_forgets_the_session_fails_the_call_and_the_next_call_reconnects() {
    let script = Arc::new(Script::default());
    let gw = gateway_for(&start_upstream(script.clone()).await).await;
    let sid = client_session(&gw).await;
    let ping_upstream = |id: &str| serde_json::json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":"up__slow","arguments":{}}});
    let (_, _, body) = rpc(&gw, Some(&sid), ping_upstream("a")).await;
    assert!(body.contains("resumed"), "first call works: {body}");

    script.forget_sessions.store(true, Ordering::SeqCst);
    let (_, _, body) = rpc(&gw, Some(&sid), ping_upstream("b")).await;
    let v: serde_json::Value =
        serde_json::from_str(&body).unwrap_or_else(|_| events(&body).pop().unwrap());
    assert_eq!(v["id"], "b");
    assert_eq!(v["error"]["code"], -32001, "{body}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("'up'"),
        "{body}"
    );

    script.forget_sessions.store(false, Ordering::SeqCst);
    let before = script.sessions.load(Ordering::SeqCst);
    let (_, _, body) = rpc(&gw, Some(&sid), ping_upstream("c")).await;
    assert!(
        body.contains("resumed"),
        "the next call opens a new upstream session: {body}"
    );
    assert_eq!(script.sessions.load(Ordering::SeqCst), before + 1);
}

#[tokio::test]
async fn the_first_request_waits_until_the_upstream_has_answered_the_get_stream() {
    // What a server sends outside a request (tools/list_changed after a tool call) goes down
    // the GET stream, and a server with no stream open yet drops it: the gateway's first
    // request of a new upstream session must not overtake the stream.
    let script = Arc::new(Script::default());
    script.stream_delay_ms.store(300, Ordering::SeqCst);
    let gw = gateway_for(&start_upstream(script.clone()).await).await;
    let sid = client_session(&gw).await;
    let call = serde_json::json!({"jsonrpc":"2.0","id":"c1","method":"tools/call","params":{"name":"up__slow","arguments":{}}});
    let (_, _, body) = rpc(&gw, Some(&sid), call).await;
    assert!(body.contains("resumed"), "the call works: {body}");
    assert_eq!(
        *script.call_found_stream.lock().unwrap(),
        vec![true],
        "the tool call reached the upstream before its GET stream was open"
    );
}
