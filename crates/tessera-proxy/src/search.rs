//! The `retrieve_tools` routing mode (`routing_mode: "retrieve_tools"`, or `/mcp/call`): the
//! client's `tools/list` holds two tools instead of every tool of every server —
//! `retrieve_tools` (BM25 over the names, descriptions and argument names of the tools *this
//! caller* may call) and `call_tool` (calls one of them by its `<server>__<tool>` name). An
//! agent's context then holds only what it searched for.
//!
//! Decisions:
//! - The index is part of each server catalogue ([`crate::catalog::ServerCatalog::search_index`],
//!   built on the first search and replaced with the catalogue), so it follows `list_changed`
//!   and connection changes without bookkeeping, and a brokered or personal server's per-user
//!   catalogue has its own index. A search ranks over the union of the caller's visible
//!   catalogues with exact BM25 statistics ([`tessera_search::search`]).
//! - A search never reveals a tool the caller cannot call: it runs over the same catalogues as
//!   the caller's direct `tools/list` (switched-off servers, other users' personal servers and
//!   servers outside a scoped token are not in them), and a scoped token's hits are filtered by
//!   its permissions.
//! - `call_tool` is unwrapped into an ordinary `tools/call` before routing, so every rule of a
//!   direct call (policy, credentials, permissions, activity log) applies unchanged.

use std::sync::Arc;

use serde_json::json;
use serde_json::value::RawValue;
use tessera_identity::Permission;

use crate::catalog::ListKind;
use crate::gateway::Gateway;
use crate::jsonrpc::{self, RawObject};
use crate::router::Reply;
use crate::session::ClientSession;

pub const RETRIEVE_TOOLS: &str = "retrieve_tools";
pub const CALL_TOOL: &str = "call_tool";

/// The most results one search may ask for.
const MAX_LIMIT: usize = 100;

/// `tools/list` in this mode.
pub(crate) fn tools_list(id: &RawValue) -> String {
    let tools = json!({ "tools": [
        {
            "name": RETRIEVE_TOOLS,
            "title": "Find tools",
            "description": "Search every tool available to you on every connected MCP server. Describe what you want to do in a few words (e.g. \"open a pull request\", \"restart a deployment\"); the best matches come back with their names, descriptions and input schemas. Then call one with call_tool.",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "query": { "type": "string", "description": "What you want to do, in natural language or keywords." },
                    "limit": { "type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "description": "How many tools to return (default set by the gateway)." }
                },
                "required": ["query"]
            },
            "annotations": { "readOnlyHint": true, "openWorldHint": false }
        },
        {
            "name": CALL_TOOL,
            "title": "Call a tool",
            "description": "Call a tool that retrieve_tools found, by its exact name (<server>__<tool>), with arguments that match its input schema.",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "name": { "type": "string", "description": "The tool's name as retrieve_tools returned it." },
                    "arguments": { "type": "object", "description": "The tool's arguments." }
                },
                "required": ["name"]
            },
            "annotations": { "openWorldHint": true }
        }
    ]});
    jsonrpc::result(id, &tools)
}

/// What a `tools/call` means in this mode.
pub(crate) enum SearchModeCall {
    /// `retrieve_tools`, or a malformed `call_tool`: answered here.
    Answered(Reply),
    /// `call_tool`: the params of the `tools/call` it stands for.
    Unwrapped(String),
    /// Any other name: routed as a direct call.
    Direct,
}

pub(crate) async fn search_mode_call(
    gw: &Arc<Gateway>,
    session: &Arc<ClientSession>,
    params: &str,
    id: &RawValue,
) -> SearchModeCall {
    let Ok(obj) = RawObject::parse(params) else {
        return SearchModeCall::Direct;
    };
    match obj.get_str("name").as_deref() {
        Some(RETRIEVE_TOOLS) => {
            SearchModeCall::Answered(Reply::Now(retrieve_tools(gw, session, &obj, id).await))
        }
        Some(CALL_TOOL) => match unwrap_call(&obj, gw.config.tool_separator.as_str()) {
            Ok(params) => SearchModeCall::Unwrapped(params),
            Err(message) => SearchModeCall::Answered(Reply::Now(jsonrpc::error(
                Some(id),
                jsonrpc::INVALID_PARAMS,
                &message,
                None,
            ))),
        },
        _ => SearchModeCall::Direct,
    }
}

/// `call_tool {name, arguments}` → the params of `tools/call {name, arguments, _meta}`. Also
/// takes the reference's spellings: `args` (object) or `args_json` (a JSON text), and a
/// `server:tool` name.
fn unwrap_call(params: &RawObject, separator: &str) -> Result<String, String> {
    let arguments = params
        .get("arguments")
        .and_then(|a| RawObject::parse(a.get()).ok())
        .unwrap_or_default();
    let Some(name) = arguments.get_str("name") else {
        return Err(
            "call_tool needs arguments.name: the tool's name as retrieve_tools returned it".into(),
        );
    };
    let name = match name.split_once(separator) {
        Some(_) => name,
        None => match name.split_once(':') {
            Some((server, tool)) => format!("{server}{separator}{tool}"),
            None => {
                return Err(format!(
                    "call_tool: {name:?} is not a tool name (<server>{separator}<tool>); use retrieve_tools to find one"
                ));
            }
        },
    };
    let inner = if let Some(a) = arguments.get("arguments") {
        a.to_owned()
    } else if let Some(a) = arguments.get("args") {
        a.to_owned()
    } else if let Some(text) = arguments.get_str("args_json") {
        RawValue::from_string(text).map_err(|e| format!("call_tool: args_json is not JSON: {e}"))?
    } else {
        jsonrpc::raw("{}")
    };
    if !inner.get().trim_start().starts_with('{') {
        return Err("call_tool: arguments must be an object".into());
    }
    let mut out = RawObject::default();
    out.set_str("name", &name);
    out.set("arguments", inner);
    // Progress and other request metadata belong to the call the client made.
    if let Some(meta) = params.get("_meta") {
        out.set("_meta", meta.to_owned());
    }
    Ok(out.to_raw().get().to_owned())
}

/// `retrieve_tools {query, limit}` → the best matches among the tools the caller may call.
async fn retrieve_tools(
    gw: &Arc<Gateway>,
    session: &Arc<ClientSession>,
    params: &RawObject,
    id: &RawValue,
) -> String {
    #[derive(serde::Deserialize, Default)]
    struct Args {
        query: Option<String>,
        limit: Option<i64>,
    }
    let args: Args = params
        .get("arguments")
        .and_then(|a| serde_json::from_str(a.get()).ok())
        .unwrap_or_default();
    let Some(query) = args.query.filter(|q| !q.trim().is_empty()) else {
        return jsonrpc::error(
            Some(id),
            jsonrpc::INVALID_PARAMS,
            "retrieve_tools needs arguments.query: what you want to do, in a few words",
            None,
        );
    };
    let limit = args
        .limit
        .and_then(|l| usize::try_from(l).ok())
        .unwrap_or(gw.config.tools_limit)
        .clamp(1, MAX_LIMIT);
    let catalogs = crate::router::visible_catalogs(gw, session, ListKind::Tools).await;
    let found = rank(session, &catalogs, &query, limit);
    let total: usize = catalogs.iter().map(|c| c.tools.len()).sum();
    let result = json!({ "query": query, "tools": found, "searched": total });
    let text = serde_json::to_string(&result).unwrap_or_default();
    jsonrpc::result(
        id,
        &json!({ "content": [{ "type": "text", "text": text }], "structuredContent": result }),
    )
}

/// The best `limit` tools for `query` over `catalogs`, each a tool object of the catalogue
/// (exposed name, description, input schema, annotations) plus its `score`.
fn rank(
    session: &ClientSession,
    catalogs: &[Arc<crate::catalog::ServerCatalog>],
    query: &str,
    limit: usize,
) -> Vec<serde_json::Value> {
    let indexes: Vec<&tessera_search::ToolIndex> =
        catalogs.iter().map(|c| c.search_index()).collect();
    let scope = session.caller.identity().and_then(|i| i.agent.clone());
    // A scoped token never sees a tool it may not call: ask for enough hits to fill `limit`
    // after filtering.
    let asked = if scope.is_some() {
        indexes.iter().map(|i| i.len()).sum()
    } else {
        limit
    };
    tessera_search::search(&indexes, query, asked)
        .into_iter()
        .filter(|hit| {
            scope.as_ref().is_none_or(|a| {
                a.allows(
                    catalogs[hit.index]
                        .tool_permissions
                        .get(hit.doc as usize)
                        .copied()
                        .unwrap_or(Permission::Destructive),
                )
            })
        })
        .take(limit)
        .filter_map(|hit| {
            let tool = catalogs[hit.index].tools.get(hit.doc as usize)?;
            let mut value: serde_json::Value = serde_json::from_str(tool.get()).ok()?;
            if let Some(obj) = value.as_object_mut() {
                obj.insert("score".into(), json!((hit.score * 1000.0).round() / 1000.0));
            }
            Some(value)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_tool_unwraps_every_spelling() {
        let p = RawObject::parse(
            r#"{"name":"call_tool","arguments":{"name":"gh__create_issue","arguments":{"title":"x"}},"_meta":{"progressToken":7}}"#,
        )
        .unwrap();
        assert_eq!(
            unwrap_call(&p, "__").unwrap(),
            r#"{"name":"gh__create_issue","arguments":{"title":"x"},"_meta":{"progressToken":7}}"#
        );
        let p = RawObject::parse(
            r#"{"name":"call_tool","arguments":{"name":"gh:create_issue","args_json":"{\"a\":1}"}}"#,
        )
        .unwrap();
        assert_eq!(
            unwrap_call(&p, "__").unwrap(),
            r#"{"name":"gh__create_issue","arguments":{"a":1}}"#
        );
        let p = RawObject::parse(r#"{"name":"call_tool","arguments":{"name":"nothing"}}"#).unwrap();
        assert!(
            unwrap_call(&p, "__")
                .unwrap_err()
                .contains("retrieve_tools")
        );
        let p =
            RawObject::parse(r#"{"name":"call_tool","arguments":{"name":"a__b","arguments":[1]}}"#)
                .unwrap();
        assert!(unwrap_call(&p, "__").unwrap_err().contains("object"));
    }
}
