//! The built `tessera` binary's remote commands against a small fake gateway (axum on a free
//! port) that answers the REST API's shapes: tables, JSON, cursor following, SSE, and the exit
//! codes 0 / 1 / 2 / 3 / 4. The full gateway is exercised by tests/e2e/test_cli.py.

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Path, RawQuery};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use serde_json::{Value, json};

const GOOD: &str = "tsr_pat_good-token-for-the-fake-gateway";
const SECRET: &str = "upstream-access-token-that-must-never-print";

fn error(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(json!({"error": status.canonical_reason(), "message": message, "status_code": status.as_u16()})),
    )
        .into_response()
}

/// The 401 answer unless the request carries the good token.
fn unauthorized(h: &HeaderMap) -> Option<Response> {
    let ok = h
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bearer {GOOD}"));
    if ok {
        None
    } else {
        Some(error(
            StatusCode::UNAUTHORIZED,
            "Authentication required. Provide a valid session cookie or Bearer token.",
        ))
    }
}

fn record(n: u32) -> Value {
    json!({"id": format!("r{n}"), "timestamp": format!("2026-11-26T10:00:0{n}Z"), "user_id": "u-alice",
           "server": "gh", "tool": "search", "type": "tool_call", "method": "mcp", "outcome": "success",
           "reason": null, "duration_ms": n, "request_id": format!("q{n}")})
}

async fn credentials(h: HeaderMap) -> Response {
    if let Some(r) = unauthorized(&h) {
        return r;
    }
    Json(json!({"credentials": [
        {"server": "gh", "mode": "oauth_connect", "status": "not_connected",
         "connect_path": "/api/v1/user/credentials/gh/connect"},
        {"server": "Jira", "mode": "token_exchange", "status": "connected",
         "expires_at": "2026-11-26T18:00:00Z", "scopes": ["read"], "access_token": SECRET},
    ]}))
    .into_response()
}

async fn disconnect(h: HeaderMap, Path(server): Path<String>) -> Response {
    if let Some(r) = unauthorized(&h) {
        return r;
    }
    if server != "Jira" {
        return error(
            StatusCode::NOT_FOUND,
            &format!("No credential for {server:?}"),
        );
    }
    Json(
        json!({"message": "Disconnected credential for \"Jira\"", "server": "Jira",
                "revoked": false, "revocation_error": "temporarily_unavailable"}),
    )
    .into_response()
}

/// Three records, two per page: page one names cursor `c2`.
async fn activity(h: HeaderMap, RawQuery(q): RawQuery) -> Response {
    if let Some(r) = unauthorized(&h) {
        return r;
    }
    let q = q.unwrap_or_default();
    let limit: usize = url::form_urlencoded::parse(q.as_bytes())
        .find(|(k, _)| k == "limit")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(50);
    let second = q.contains("cursor=c2");
    let all: Vec<Value> = if second {
        vec![record(3)]
    } else {
        vec![record(1), record(2)]
    };
    let page: Vec<Value> = all.into_iter().take(limit.min(2)).collect();
    let next = (!second && page.len() == 2).then_some("c2");
    Json(json!({"activities": page, "next_cursor": next})).into_response()
}

async fn stream(h: HeaderMap) -> Response {
    if let Some(r) = unauthorized(&h) {
        return r;
    }
    let events = format!(
        ": keep-alive\n\nevent: activity\nid: r1\ndata: {}\n\nevent: activity\ndata: {}\n\n",
        record(1),
        record(2)
    );
    let body = futures::stream::once(async move { Ok::<_, std::convert::Infallible>(events) })
        .chain(futures::stream::pending());
    (
        [("content-type", "text/event-stream")],
        axum::body::Body::from_stream(body),
    )
        .into_response()
}

async fn users(h: HeaderMap) -> Response {
    if let Some(r) = unauthorized(&h) {
        return r;
    }
    error(StatusCode::FORBIDDEN, "This requires the admin role")
}

use futures::StreamExt as _;

async fn fake_gateway() -> String {
    let app = Router::new()
        .route("/api/v1/user/credentials", get(credentials))
        .route("/api/v1/user/credentials/{server}", delete(disconnect))
        .route("/api/v1/activity", get(activity))
        .route("/api/v1/activity/stream", get(stream))
        .route("/api/v1/admin/users", get(users));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

fn tessera(url: &str, token: Option<&str>, args: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tessera"));
    c.args(args).arg("--url").arg(url);
    for (k, _) in std::env::vars() {
        if k.starts_with("TESSERA_") || k == "DISPLAY" || k == "WAYLAND_DISPLAY" {
            c.env_remove(k);
        }
    }
    if let Some(t) = token {
        c.env("TESSERA_TOKEN", t);
    }
    let out = c.output().unwrap();
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        !all.contains(GOOD) && !all.contains(SECRET),
        "a token was printed: {all}"
    );
    out
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credential_commands_render_tables_json_and_exit_codes() {
    let url = fake_gateway().await;
    let run = |token: Option<&'static str>, args: &'static [&'static str]| {
        let url = url.clone();
        tokio::task::spawn_blocking(move || tessera(&url, token, args))
    };

    let o = run(Some(GOOD), &["credential", "list"]).await.unwrap();
    assert_eq!(code(&o), 0, "{}", text(&o.stderr));
    let table = text(&o.stdout);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["SERVER", "MODE", "STATUS", "EXPIRES"]
    );
    assert!(
        lines[1].starts_with("gh ") && lines[1].contains("not_connected *"),
        "{table}"
    );
    assert!(
        lines[2].starts_with("Jira ") && lines[2].contains("connected") && !lines[2].contains('*'),
        "{table}"
    );
    assert!(
        table.contains("tessera credential connect <server>"),
        "{table}"
    );

    let o = run(Some(GOOD), &["credential", "list", "-o", "json"])
        .await
        .unwrap();
    let body: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(body["credentials"].as_array().unwrap().len(), 2);
    assert!(body["credentials"][1].get("access_token").is_none());

    let o = run(Some(GOOD), &["credential", "status", "jira"])
        .await
        .unwrap();
    assert_eq!(code(&o), 0, "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).contains("status:       connected"),
        "{}",
        text(&o.stdout)
    );
    let o = run(Some(GOOD), &["credential", "status", "GH"])
        .await
        .unwrap();
    assert!(text(&o.stdout).contains(&format!(
        "connect:      {url}/api/v1/user/credentials/gh/connect"
    )));
    let o = run(Some(GOOD), &["credential", "status", "nope"])
        .await
        .unwrap();
    assert_eq!(code(&o), 1);
    assert!(text(&o.stderr).contains("brokered server \"nope\" not found"));

    let o = run(None, &["credential", "connect", "gh"]).await.unwrap();
    assert_eq!(code(&o), 0, "connect needs no token and makes no call");
    assert_eq!(
        text(&o.stdout).trim(),
        format!("{url}/api/v1/user/credentials/gh/connect")
    );

    let o = run(Some(GOOD), &["credential", "disconnect", "Jira"])
        .await
        .unwrap();
    assert_eq!(code(&o), 0, "{}", text(&o.stderr));
    assert_eq!(
        text(&o.stdout),
        "Disconnected credential for \"Jira\"\nupstream revocation failed: temporarily_unavailable\n"
    );
    let o = run(Some(GOOD), &["credential", "rm", "gh"]).await.unwrap();
    assert_eq!(code(&o), 1);
    assert!(
        text(&o.stderr).contains("not found (404 Not Found): No credential for \"gh\""),
        "{}",
        text(&o.stderr)
    );

    for token in [Some("tsr_pat_wrong"), None] {
        let o = run(token, &["credential", "list"]).await.unwrap();
        assert_eq!(code(&o), 3);
        assert_eq!(
            text(&o.stderr).trim(),
            "error: authentication required: provide a personal access token via --token or TESSERA_TOKEN"
        );
        assert!(o.stdout.is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activity_follows_the_cursor_up_to_the_limit_and_watch_streams_lines() {
    let url = fake_gateway().await;
    let u = url.clone();
    let o = tokio::task::spawn_blocking(move || {
        tessera(&u, Some(GOOD), &["activity", "list", "-o", "json"])
    })
    .await
    .unwrap();
    assert_eq!(code(&o), 0, "{}", text(&o.stderr));
    let body: Value = serde_json::from_slice(&o.stdout).unwrap();
    let ids: Vec<&str> = body["activities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["r1", "r2", "r3"], "both pages");

    let u = url.clone();
    let o = tokio::task::spawn_blocking(move || {
        tessera(&u, Some(GOOD), &["activity", "list", "--limit", "1"])
    })
    .await
    .unwrap();
    let table = text(&o.stdout);
    assert_eq!(table.lines().count(), 2, "header + one row: {table}");
    assert!(
        table.lines().nth(1).unwrap().contains("tool_call/search"),
        "{table}"
    );

    // watch: two records arrive as two lines; SIGINT ends it with 0.
    let mut child = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["activity", "watch", "-o", "json", "--url", &url])
        .env("TESSERA_TOKEN", GOOD)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let lines = tokio::task::spawn_blocking(move || {
        use std::io::BufRead as _;
        std::io::BufReader::new(stdout)
            .lines()
            .take(2)
            .map(Result::unwrap)
            .collect::<Vec<_>>()
    });
    let lines = tokio::time::timeout(Duration::from_secs(20), lines)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&lines[0]).unwrap()["id"],
        "r1"
    );
    assert_eq!(
        serde_json::from_str::<Value>(&lines[1]).unwrap()["id"],
        "r2"
    );
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0), "Ctrl-C ends watch with 0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_list_as_a_non_admin_and_an_unreachable_gateway() {
    let url = fake_gateway().await;
    let u = url.clone();
    let o = tokio::task::spawn_blocking(move || tessera(&u, Some(GOOD), &["users", "list"]))
        .await
        .unwrap();
    assert_eq!(code(&o), 1);
    assert_eq!(
        text(&o.stderr).trim(),
        "error: permission denied: listing users needs an admin account"
    );

    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    for args in [
        &["credential", "list"][..],
        &["activity", "list"],
        &["activity", "watch"],
        &["users", "list"],
    ] {
        let d = dead.clone();
        let o = tokio::task::spawn_blocking(move || tessera(&d, Some(GOOD), args))
            .await
            .unwrap();
        assert_eq!(code(&o), 4, "{args:?}: {}", text(&o.stderr));
        assert!(text(&o.stderr).contains(&format!("cannot reach the gateway at {dead}")));
    }
    let o =
        tokio::task::spawn_blocking(|| tessera("not a url", Some(GOOD), &["credential", "list"]))
            .await
            .unwrap();
    assert_eq!(code(&o), 2);
}
