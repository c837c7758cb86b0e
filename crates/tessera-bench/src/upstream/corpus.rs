//! Every server of the tool corpus (`tests/data/tool-corpus.json`: `{"servers": {name: [tool, …]}}`) over
//! streamable HTTP from one process, server `S` at `/S/mcp`: `tools/list` answers that server's tools verbatim
//! (one page, serialised once at start), `tools/call` of one of its tools a short text. No sessions (no
//! `Mcp-Session-Id`), JSON responses only — the upstream of the tool-search benchmark, which must cost next to
//! nothing.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::serve::ListenerExt;
use http::header::{ALLOW, CONTENT_TYPE};
use http::{HeaderValue, StatusCode};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::net::TcpListener;

use super::{INVALID_PARAMS, METHOD_NOT_FOUND, Message, error_reply, negotiate_version, parse};

/// The corpus of the repository, compiled in.
pub const CORPUS_JSON: &str = include_str!("../../../../tests/data/tool-corpus.json");

const APPLICATION_JSON: HeaderValue = HeaderValue::from_static("application/json");
const BODY_LIMIT: usize = 1 << 20;

/// One corpus server, ready to answer.
struct Server {
    name: String,
    /// `{"tools":[…]}`, the tools verbatim.
    tools_list: Box<RawValue>,
    tool_names: Vec<String>,
}

/// The servers of a corpus by name.
pub struct Corpus {
    servers: HashMap<String, Server>,
}

#[derive(Deserialize)]
struct CorpusFile {
    servers: serde_json::Map<String, serde_json::Value>,
}

#[derive(Deserialize)]
struct NamedTool {
    name: String,
}

#[derive(Deserialize)]
struct CallParams<'a> {
    #[serde(borrow)]
    name: std::borrow::Cow<'a, str>,
}

impl Corpus {
    /// Parses a corpus file's text.
    pub fn parse(text: &str) -> Result<Self> {
        let file: CorpusFile = serde_json::from_str(text).context("parsing the tool corpus")?;
        let mut servers = HashMap::new();
        for (name, tools) in file.servers {
            let names: Vec<NamedTool> = serde_json::from_value(tools.clone())
                .with_context(|| format!("corpus server {name}: tools need a name"))?;
            let tools_list =
                serde_json::value::to_raw_value(&serde_json::json!({ "tools": tools }))?;
            servers.insert(
                name.clone(),
                Server {
                    name,
                    tools_list,
                    tool_names: names.into_iter().map(|t| t.name).collect(),
                },
            );
        }
        if servers.is_empty() {
            bail!("the tool corpus has no servers");
        }
        Ok(Self { servers })
    }

    /// The compiled-in corpus of the repository.
    pub fn builtin() -> Result<Self> {
        Self::parse(CORPUS_JSON)
    }

    /// The server names, sorted.
    pub fn server_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.servers.keys().cloned().collect();
        names.sort();
        names
    }

    /// How many tools all servers have together.
    pub fn tool_count(&self) -> usize {
        self.servers.values().map(|s| s.tool_names.len()).sum()
    }

    fn respond(
        &self,
        server: &Server,
        id: &RawValue,
        method: &str,
        params: Option<&RawValue>,
    ) -> Vec<u8> {
        match method {
            "initialize" => reply(
                id,
                &serde_json::json!({
                    "protocolVersion": negotiate_version(params),
                    "capabilities": {"tools": {"listChanged": false}},
                    "serverInfo": {"name": format!("corpus-{}", server.name), "version": env!("CARGO_PKG_VERSION")},
                }),
            ),
            "tools/list" => reply(id, &server.tools_list),
            "tools/call" => {
                let name = params
                    .and_then(|p| serde_json::from_str::<CallParams<'_>>(p.get()).ok())
                    .map(|p| p.name.into_owned());
                match name {
                    Some(name) if server.tool_names.contains(&name) => reply(
                        id,
                        &serde_json::json!({
                            "content": [{"type": "text", "text": format!("{} {name}: done", server.name)}],
                        }),
                    ),
                    _ => error_reply(Some(id), INVALID_PARAMS, "unknown tool"),
                }
            }
            "ping" => reply(id, &serde_json::json!({})),
            _ => error_reply(Some(id), METHOD_NOT_FOUND, "method not found"),
        }
    }
}

fn reply<R: serde::Serialize + ?Sized>(id: &RawValue, result: &R) -> Vec<u8> {
    #[derive(serde::Serialize)]
    struct Reply<'a, R: ?Sized> {
        jsonrpc: &'static str,
        id: &'a RawValue,
        result: &'a R,
    }
    serde_json::to_vec(&Reply {
        jsonrpc: "2.0",
        id,
        result,
    })
    .unwrap_or_else(|_| error_reply(Some(id), -32603, "internal error"))
}

/// The axum router serving `/{server}/mcp` for every server of `corpus`.
pub fn router(corpus: Arc<Corpus>) -> Router {
    Router::new()
        .route(
            "/{server}/mcp",
            post(handle_post).get(not_allowed).delete(not_allowed),
        )
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(corpus)
}

/// Binds `addr` (TCP_NODELAY on every accepted socket), reports the bound address through `on_bound`, then serves.
pub async fn serve(
    addr: SocketAddr,
    corpus: Corpus,
    on_bound: impl FnOnce(SocketAddr),
) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    on_bound(listener.local_addr()?);
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, router(Arc::new(corpus))).await
}

async fn handle_post(
    State(corpus): State<Arc<Corpus>>,
    Path(server): Path<String>,
    body: Bytes,
) -> Response {
    let Some(server) = corpus.servers.get(&server) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    match parse(&body) {
        Message::Invalid(reply) => json_response(StatusCode::BAD_REQUEST, reply),
        Message::Request { id, method, params } => {
            json_response(StatusCode::OK, corpus.respond(server, id, &method, params))
        }
        _ => StatusCode::ACCEPTED.into_response(),
    }
}

async fn not_allowed() -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        [(ALLOW, HeaderValue::from_static("POST"))],
    )
        .into_response()
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    (status, [(CONTENT_TYPE, APPLICATION_JSON)], body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_corpus_answers_lists_and_calls() {
        let corpus = Corpus::builtin().unwrap();
        assert_eq!(corpus.server_names().len(), 12);
        assert_eq!(corpus.tool_count(), 539);
        let github = &corpus.servers["github"];
        let id = RawValue::from_string("1".into()).unwrap();
        let list: serde_json::Value =
            serde_json::from_slice(&corpus.respond(github, &id, "tools/list", None)).unwrap();
        assert_eq!(list["result"]["tools"].as_array().unwrap().len(), 88);
        let params =
            RawValue::from_string(r#"{"name":"get_issue","arguments":{}}"#.into()).unwrap();
        let call: serde_json::Value =
            serde_json::from_slice(&corpus.respond(github, &id, "tools/call", Some(&params)))
                .unwrap();
        assert_eq!(
            call["result"]["content"][0]["text"],
            "github get_issue: done"
        );
        let params = RawValue::from_string(r#"{"name":"nope"}"#.into()).unwrap();
        let call: serde_json::Value =
            serde_json::from_slice(&corpus.respond(github, &id, "tools/call", Some(&params)))
                .unwrap();
        assert_eq!(call["error"]["code"], INVALID_PARAMS);
    }
}
