//! `tessera-upstream stdio`: the same JSON-RPC handling over newline-delimited JSON.

use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

#[tokio::test]
async fn stdio_answers_requests_in_order_and_ignores_notifications() {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tessera-upstream"));
    cmd.arg("stdio")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    cmd.kill_on_drop(true);
    let mut child = cmd.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();

    let input = [
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2024-11-05"}}).to_string(),
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}).to_string(),
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}).to_string(),
        json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "echo", "arguments": {"message": "hi"}}}).to_string(),
        json!({"jsonrpc": "2.0", "id": "four", "method": "tools/call",
               "params": {"name": "lossless", "arguments": {"k": [1]}, "_meta": {"x_m": 1}}}).to_string(),
        json!({"jsonrpc": "2.0", "id": 5, "method": "nope"}).to_string(),
        "{broken".to_owned(),
    ];
    for line in &input {
        stdin.write_all(line.as_bytes()).await.unwrap();
        stdin.write_all(b"\n").await.unwrap();
    }
    drop(stdin);

    let mut replies = Vec::new();
    while let Some(line) = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .unwrap()
        .unwrap()
    {
        replies.push(serde_json::from_str::<Value>(&line).unwrap());
    }
    assert_eq!(replies.len(), 6, "{replies:?}");
    assert_eq!(replies[0]["result"]["protocolVersion"], "2024-11-05");
    assert_eq!(replies[1]["result"]["tools"][2]["x_tool_extra"], "kept");
    assert_eq!(replies[2]["result"]["content"][0]["text"], "hi");
    assert_eq!(replies[3]["id"], "four");
    assert_eq!(replies[3]["result"]["x_unknown"]["kept"], true);
    assert_eq!(
        replies[3]["result"]["structuredContent"],
        json!({"arguments": {"k": [1]}, "_meta": {"x_m": 1}})
    );
    assert_eq!(replies[4]["error"]["code"], -32601);
    assert_eq!(replies[5]["error"]["code"], -32700);

    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
}
