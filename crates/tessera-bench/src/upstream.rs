//! A fast upstream MCP server: hand-written JSON-RPC on `serde_json`, no SDK.
//!
//! [`parse`] classifies one JSON-RPC message without building a `serde_json::Value`; [`respond`] answers a request.
//! The transports ([`http`] and [`stdio`]) add sessions (HTTP only) and framing around these two functions.
//! [`corpus`] serves the servers of the tool corpus instead (tool-search benchmark).
//!
//! Tools: `echo` (`{"message": string}` → the message as text), `payload` (`{"size": integer}` → that many bytes of
//! text) and `lossless` (a result full of fields that are not in the MCP schema, echoing back the arguments and
//! `params._meta` it received, so a test can check that a proxy forwards unknown fields both ways).

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::json;
use serde_json::value::RawValue;

pub mod corpus;
pub mod http;
pub mod stdio;

/// Protocol versions this server accepts from a client's `initialize`; any other is answered with [`LATEST_VERSION`].
pub const SUPPORTED_VERSIONS: [&str; 4] = ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"];
/// The version offered when the client asks for one this server does not know.
pub const LATEST_VERSION: &str = "2025-11-25";

/// JSON-RPC error codes.
pub const PARSE_ERROR: i64 = -32700;
pub const INVALID_REQUEST: i64 = -32600;
pub const METHOD_NOT_FOUND: i64 = -32601;
pub const INVALID_PARAMS: i64 = -32602;

/// Largest text the `payload` tool produces (64 MiB).
pub const MAX_PAYLOAD: u64 = 64 << 20;

const INTERNAL_ERROR_REPLY: &[u8] =
    br#"{"jsonrpc":"2.0","id":null,"error":{"code":-32603,"message":"internal error"}}"#;

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    method: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    params: Option<&'a RawValue>,
}

/// One incoming JSON-RPC message, borrowed from the request body.
pub enum Message<'a> {
    /// A request: it must be answered.
    Request {
        id: &'a RawValue,
        method: Cow<'a, str>,
        params: Option<&'a RawValue>,
    },
    /// A notification (a method without an id): accepted, never answered.
    Notification { method: Cow<'a, str> },
    /// A response or error from the client (no method): accepted, never answered.
    Response,
    /// Malformed JSON (`-32700`) or not a JSON-RPC message (`-32600`): the error reply to send.
    Invalid(Vec<u8>),
}

/// Classifies one JSON-RPC message.
pub fn parse(body: &[u8]) -> Message<'_> {
    match serde_json::from_slice::<Envelope<'_>>(body) {
        Ok(Envelope {
            id: Some(id),
            method: Some(method),
            params,
        }) => Message::Request { id, method, params },
        Ok(Envelope {
            id: None,
            method: Some(method),
            ..
        }) => Message::Notification { method },
        Ok(Envelope { method: None, .. }) => Message::Response,
        Err(e) => {
            let (code, message) = match e.classify() {
                serde_json::error::Category::Data => (INVALID_REQUEST, "invalid request"),
                _ => (PARSE_ERROR, "parse error"),
            };
            Message::Invalid(error_reply(None, code, message))
        }
    }
}

#[derive(Serialize)]
struct Reply<'a, R> {
    jsonrpc: &'static str,
    id: &'a RawValue,
    result: R,
}

#[derive(Serialize)]
struct ErrorReply<'a> {
    jsonrpc: &'static str,
    id: Option<&'a RawValue>,
    error: ErrorObject<'a>,
}

#[derive(Serialize)]
struct ErrorObject<'a> {
    code: i64,
    message: &'a str,
}

#[derive(Serialize)]
struct TextResult<'a> {
    content: [Text<'a>; 1],
}

#[derive(Serialize)]
struct Text<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    text: &'a str,
}

#[derive(Serialize)]
struct LosslessResult<'a> {
    content: [LosslessText; 1],
    #[serde(rename = "structuredContent")]
    structured_content: LosslessEcho<'a>,
    x_unknown: Kept,
    #[serde(rename = "_meta")]
    meta: VendorMeta,
}

#[derive(Serialize)]
struct LosslessText {
    #[serde(rename = "type")]
    kind: &'static str,
    text: &'static str,
    x_extra: u32,
}

#[derive(Serialize)]
struct LosslessEcho<'a> {
    arguments: Option<&'a RawValue>,
    #[serde(rename = "_meta")]
    meta: Option<&'a RawValue>,
}

#[derive(Serialize)]
struct Kept {
    kept: bool,
}

#[derive(Serialize)]
struct VendorMeta {
    #[serde(rename = "x_vendor/meta")]
    vendor: &'static str,
}

#[derive(Deserialize)]
struct CallParams<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(borrow, default)]
    arguments: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "_meta")]
    meta: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct EchoArgs<'a> {
    #[serde(borrow)]
    message: Cow<'a, str>,
}

#[derive(Deserialize)]
struct PayloadArgs {
    size: u64,
}

#[derive(Deserialize)]
struct InitializeParams<'a> {
    #[serde(borrow, default, rename = "protocolVersion")]
    protocol_version: Option<Cow<'a, str>>,
}

fn to_bytes<T: Serialize>(value: &T, capacity: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(capacity);
    match serde_json::to_writer(&mut out, value) {
        Ok(()) => out,
        // Only maps with non-string keys fail to serialise; none of the types above has one.
        Err(_) => INTERNAL_ERROR_REPLY.to_vec(),
    }
}

fn result_reply<R: Serialize>(id: &RawValue, result: &R, capacity: usize) -> Vec<u8> {
    to_bytes(
        &Reply {
            jsonrpc: "2.0",
            id,
            result,
        },
        capacity,
    )
}

/// Serialises a JSON-RPC error; `id: None` becomes `"id": null`.
pub fn error_reply(id: Option<&RawValue>, code: i64, message: &str) -> Vec<u8> {
    to_bytes(
        &ErrorReply {
            jsonrpc: "2.0",
            id,
            error: ErrorObject { code, message },
        },
        96 + message.len(),
    )
}

/// The protocol version to answer an `initialize` with.
pub fn negotiate_version(params: Option<&RawValue>) -> &'static str {
    let asked = params
        .and_then(|p| serde_json::from_str::<InitializeParams<'_>>(p.get()).ok())
        .and_then(|p| p.protocol_version);
    match asked {
        Some(v) => SUPPORTED_VERSIONS
            .iter()
            .find(|s| **s == v)
            .copied()
            .unwrap_or(LATEST_VERSION),
        None => LATEST_VERSION,
    }
}

/// Answers one request.
pub fn respond(id: &RawValue, method: &str, params: Option<&RawValue>) -> Vec<u8> {
    match method {
        "tools/call" => call_tool(id, params),
        "initialize" => {
            let version = negotiate_version(params);
            let result = json!({
                "protocolVersion": version,
                "capabilities": {"tools": {"listChanged": false}},
                "serverInfo": {"name": "tessera-upstream", "version": env!("CARGO_PKG_VERSION")},
            });
            result_reply(id, &result, 256)
        }
        "tools/list" => result_reply(id, &tools_list(), 1024),
        "ping" => result_reply(id, &json!({}), 64),
        _ => error_reply(Some(id), METHOD_NOT_FOUND, "method not found"),
    }
}

fn call_tool(id: &RawValue, params: Option<&RawValue>) -> Vec<u8> {
    let Some(params) = params.and_then(|p| serde_json::from_str::<CallParams<'_>>(p.get()).ok())
    else {
        return error_reply(
            Some(id),
            INVALID_PARAMS,
            "tools/call needs params with a name",
        );
    };
    let arguments = params.arguments.map(RawValue::get).unwrap_or("{}");
    match &*params.name {
        "echo" => match serde_json::from_str::<EchoArgs<'_>>(arguments) {
            Ok(args) => text_reply(id, &args.message),
            Err(_) => error_reply(Some(id), INVALID_PARAMS, "echo needs {\"message\": string}"),
        },
        "payload" => match serde_json::from_str::<PayloadArgs>(arguments) {
            Ok(args) if args.size <= MAX_PAYLOAD => {
                let size = usize::try_from(args.size).unwrap_or(0);
                text_reply(id, &"x".repeat(size))
            }
            Ok(_) => error_reply(Some(id), INVALID_PARAMS, "payload size is above 64 MiB"),
            Err(_) => error_reply(
                Some(id),
                INVALID_PARAMS,
                "payload needs {\"size\": integer}",
            ),
        },
        "lossless" => {
            let result = LosslessResult {
                content: [LosslessText {
                    kind: "text",
                    text: "lossless",
                    x_extra: 1,
                }],
                structured_content: LosslessEcho {
                    arguments: params.arguments,
                    meta: params.meta,
                },
                x_unknown: Kept { kept: true },
                meta: VendorMeta { vendor: "abc" },
            };
            result_reply(id, &result, 256 + arguments.len())
        }
        _ => error_reply(Some(id), INVALID_PARAMS, "unknown tool"),
    }
}

fn text_reply(id: &RawValue, text: &str) -> Vec<u8> {
    let result = TextResult {
        content: [Text { kind: "text", text }],
    };
    result_reply(id, &result, 80 + id.get().len() + text.len())
}

/// The `tools/list` result.
pub fn tools_list() -> serde_json::Value {
    json!({
        "tools": [
            {
                "name": "echo",
                "description": "Returns the message it is given as text.",
                "inputSchema": {
                    "type": "object",
                    "properties": {"message": {"type": "string"}},
                    "required": ["message"],
                },
            },
            {
                "name": "payload",
                "description": "Returns a text of the given number of bytes.",
                "inputSchema": {
                    "type": "object",
                    "properties": {"size": {"type": "integer", "minimum": 0, "maximum": MAX_PAYLOAD}},
                    "required": ["size"],
                },
            },
            {
                "name": "lossless",
                "description": "Returns fields outside the MCP schema and echoes the arguments and _meta it received.",
                "inputSchema": {"type": "object", "additionalProperties": true},
                "x_tool_extra": "kept",
            },
        ]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(body: &str) -> serde_json::Value {
        match parse(body.as_bytes()) {
            Message::Request { id, method, params } => {
                serde_json::from_slice(&respond(id, &method, params)).unwrap()
            }
            Message::Invalid(bytes) => serde_json::from_slice(&bytes).unwrap(),
            _ => panic!("no reply for {body}"),
        }
    }

    #[test]
    fn echo_returns_the_message_with_the_request_id() {
        let v = reply(
            r#"{"jsonrpc":"2.0","id":"a\"b","method":"tools/call","params":{"name":"echo","arguments":{"message":"hi \u00e9"}}}"#,
        );
        assert_eq!(v["id"], "a\"b");
        assert_eq!(v["result"]["content"][0]["text"], "hi é");
    }

    #[test]
    fn initialize_negotiates_a_known_version_or_the_latest() {
        let v = reply(
            r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-03-26"}}"#,
        );
        assert_eq!(v["result"]["protocolVersion"], "2025-03-26");
        let v = reply(
            r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"1999-01-01"}}"#,
        );
        assert_eq!(v["result"]["protocolVersion"], LATEST_VERSION);
    }

    #[test]
    fn malformed_and_non_object_messages_get_errors() {
        assert_eq!(reply("{nope")["error"]["code"], PARSE_ERROR);
        assert_eq!(reply("42")["error"]["code"], INVALID_REQUEST);
        assert!(matches!(
            parse(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#),
            Message::Notification { .. }
        ));
        assert!(matches!(
            parse(br#"{"jsonrpc":"2.0","id":3,"result":{}}"#),
            Message::Response
        ));
    }

    #[test]
    fn payload_returns_the_requested_size() {
        let v = reply(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"payload","arguments":{"size":1000}}}"#,
        );
        assert_eq!(
            v["result"]["content"][0]["text"].as_str().unwrap().len(),
            1000
        );
    }
}
