//! `tessera-upstream http`: sessions, tools and JSON-RPC errors over streamable HTTP.

use std::time::Duration;

use serde_json::{Value, json};
use tessera_bench::child::ChildProc;
use tokio::process::Command;

const START: Duration = Duration::from_secs(20);

async fn start_upstream() -> (ChildProc, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tessera-upstream"));
    cmd.args(["http", "--listen", "127.0.0.1:0"]);
    let (proc, url) = ChildProc::spawn_listening("tessera-upstream", cmd, START)
        .await
        .unwrap();
    assert!(
        url.starts_with("http://127.0.0.1:") && url.ends_with("/mcp"),
        "{url}"
    );
    (proc, url)
}

struct Client {
    http: reqwest::Client,
    url: String,
}

impl Client {
    fn new(url: &str) -> Self {
        Self {
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
            url: url.to_owned(),
        }
    }

    async fn post(
        &self,
        session: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        let mut rb = self
            .http
            .post(&self.url)
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .body(body);
        if let Some(s) = session {
            rb = rb
                .header("mcp-session-id", s)
                .header("mcp-protocol-version", "2025-11-25");
        }
        rb.send().await.unwrap()
    }

    async fn initialize(&self, version: &str) -> (String, Value) {
        let resp = self
            .post(
                None,
                json!({"jsonrpc": "2.0", "id": 0, "method": "initialize",
                       "params": {"protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}})
                .to_string(),
            )
            .await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "application/json");
        let session = resp.headers()["mcp-session-id"]
            .to_str()
            .unwrap()
            .to_owned();
        (session, resp.json().await.unwrap())
    }

    async fn request(&self, session: &str, id: u64, method: &str, params: Value) -> Value {
        let resp = self
            .post(
                Some(session),
                json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string(),
            )
            .await;
        assert_eq!(resp.status(), 200);
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["id"], id);
        v
    }
}

#[tokio::test]
async fn initialize_negotiates_the_version_and_creates_a_session() {
    let (_up, url) = start_upstream().await;
    let c = Client::new(&url);
    let (s1, v) = c.initialize("2025-06-18").await;
    assert_eq!(v["result"]["protocolVersion"], "2025-06-18");
    assert_eq!(v["result"]["serverInfo"]["name"], "tessera-upstream");
    let (s2, v) = c.initialize("2099-01-01").await;
    assert_eq!(v["result"]["protocolVersion"], "2025-11-25");
    assert_ne!(s1, s2);

    let resp = c
        .post(
            Some(&s1),
            r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        )
        .await;
    assert_eq!(resp.status(), 202);
    let resp = c
        .post(Some(&s1), r#"{"jsonrpc":"2.0","id":9,"result":{}}"#)
        .await;
    assert_eq!(resp.status(), 202);
    assert_eq!(
        c.request(&s1, 1, "ping", json!({})).await["result"],
        json!({})
    );
}

#[tokio::test]
async fn requests_need_a_known_session_and_delete_ends_it() {
    let (_up, url) = start_upstream().await;
    let c = Client::new(&url);
    let ping = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
    assert_eq!(c.post(None, ping).await.status(), 400);
    assert_eq!(c.post(Some("not-a-session"), ping).await.status(), 404);

    let (session, _) = c.initialize("2025-11-25").await;
    assert_eq!(c.post(Some(&session), ping).await.status(), 200);
    let del = c
        .http
        .delete(&url)
        .header("mcp-session-id", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), 204);
    assert_eq!(c.post(Some(&session), ping).await.status(), 404);

    let get = c
        .http
        .get(&url)
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 405);
}

#[tokio::test]
async fn tools_list_echo_and_payload() {
    let (_up, url) = start_upstream().await;
    let c = Client::new(&url);
    let (s, _) = c.initialize("2025-11-25").await;

    let list = c.request(&s, 1, "tools/list", json!({})).await;
    let tools = list["result"]["tools"].as_array().unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["echo", "payload", "lossless"]);
    assert!(tools.iter().all(|t| t["inputSchema"]["type"] == "object"));
    assert_eq!(tools[2]["x_tool_extra"], "kept");

    let echo = c
        .request(
            &s,
            2,
            "tools/call",
            json!({"name": "echo", "arguments": {"message": "héllo \"q\""}}),
        )
        .await;
    assert_eq!(
        echo["result"],
        json!({"content": [{"type": "text", "text": "héllo \"q\""}]})
    );

    let payload = c
        .request(
            &s,
            3,
            "tools/call",
            json!({"name": "payload", "arguments": {"size": 12345}}),
        )
        .await;
    assert_eq!(
        payload["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .len(),
        12345
    );

    let bad = c
        .request(
            &s,
            4,
            "tools/call",
            json!({"name": "echo", "arguments": {}}),
        )
        .await;
    assert_eq!(bad["error"]["code"], -32602);
}

#[tokio::test]
async fn lossless_returns_unknown_fields_and_echoes_what_it_received() {
    let (_up, url) = start_upstream().await;
    let c = Client::new(&url);
    let (s, _) = c.initialize("2025-11-25").await;
    let args = json!({"a": 1, "x_client_field": {"nested": [1, 2]}});
    let meta = json!({"progressToken": "p1", "x_client/meta": true});
    let v = c
        .request(
            &s,
            7,
            "tools/call",
            json!({"name": "lossless", "arguments": args, "_meta": meta}),
        )
        .await;
    let r = &v["result"];
    assert_eq!(r["x_unknown"], json!({"kept": true}));
    assert_eq!(r["content"][0]["x_extra"], 1);
    assert_eq!(r["_meta"], json!({"x_vendor/meta": "abc"}));
    assert_eq!(r["structuredContent"]["arguments"], args);
    assert_eq!(r["structuredContent"]["_meta"], meta);
}

#[tokio::test]
async fn unknown_method_and_malformed_json_are_json_rpc_errors() {
    let (_up, url) = start_upstream().await;
    let c = Client::new(&url);
    let (s, _) = c.initialize("2025-11-25").await;
    let v = c.request(&s, 5, "no/such/method", json!({})).await;
    assert_eq!(v["error"]["code"], -32601);

    let resp = c.post(Some(&s), "{this is not json").await;
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], -32700);
    assert_eq!(v["id"], Value::Null);
}
