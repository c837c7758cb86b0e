//! What each upstream offers (tools, prompts, resources, resource templates), already
//! namespaced for clients, and the merged, paginated lists built from it.

use crate::FastSet as HashSet;
use crate::jsonrpc::{RawObject, to_raw};
use serde_json::value::RawValue;
use tessera_identity::Permission;

/// URI scheme that namespaces an upstream's resources: `tessera://<server>/<original uri>`.
pub const RESOURCE_SCHEME: &str = "tessera://";

#[derive(Debug, Default)]
pub struct ServerCatalog {
    pub tools: Vec<Box<RawValue>>,
    /// Each tool's original name → its position in `tools`.
    pub tool_names: crate::FastMap<String, usize>,
    /// `tools[i]`'s permission class (scoped tokens filter lists with it).
    pub tool_permissions: Vec<Permission>,
    /// The server's name as clients see it (the prefix of its tools' names).
    pub server: String,
    /// The separator between server and tool name.
    pub separator: String,
    /// The BM25 index of `tools` for `retrieve_tools`, built on the first search.
    pub search: std::sync::OnceLock<tessera_search::ToolIndex>,
    pub prompts: Vec<Box<RawValue>>,
    pub prompt_names: HashSet<String>,
    pub resources: Vec<Box<RawValue>>,
    pub templates: Vec<Box<RawValue>>,
    /// A brokered server the user has not connected: only the `<server>__connect` tool.
    pub connect_placeholder: bool,
}

/// Which list a request is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    Tools,
    Prompts,
    Resources,
    Templates,
}

impl ListKind {
    pub fn from_method(method: &str) -> Option<Self> {
        match method {
            "tools/list" => Some(ListKind::Tools),
            "prompts/list" => Some(ListKind::Prompts),
            "resources/list" => Some(ListKind::Resources),
            "resources/templates/list" => Some(ListKind::Templates),
            _ => None,
        }
    }

    pub fn method(self) -> &'static str {
        match self {
            ListKind::Tools => "tools/list",
            ListKind::Prompts => "prompts/list",
            ListKind::Resources => "resources/list",
            ListKind::Templates => "resources/templates/list",
        }
    }

    /// The key of the array in the list result.
    pub fn field(self) -> &'static str {
        match self {
            ListKind::Tools => "tools",
            ListKind::Prompts => "prompts",
            ListKind::Resources => "resources",
            ListKind::Templates => "resourceTemplates",
        }
    }

    /// The capability an upstream must advertise for the list to exist.
    pub fn capability(self) -> &'static str {
        match self {
            ListKind::Tools => "tools",
            ListKind::Prompts => "prompts",
            ListKind::Resources | ListKind::Templates => "resources",
        }
    }

    pub fn changed_notification(self) -> &'static str {
        match self {
            ListKind::Tools => "notifications/tools/list_changed",
            ListKind::Prompts => "notifications/prompts/list_changed",
            ListKind::Resources | ListKind::Templates => "notifications/resources/list_changed",
        }
    }
}

impl ServerCatalog {
    /// What calling the tool of this original name may do, if the upstream listed it.
    pub fn tool_permission(&self, name: &str) -> Option<Permission> {
        self.tool_names
            .get(name)
            .and_then(|&i| self.tool_permissions.get(i))
            .copied()
    }

    /// Whether the upstream listed a tool (`what` = "tool") or prompt of this original name.
    pub fn knows(&self, what: &str, name: &str) -> bool {
        if what == "tool" {
            self.tool_names.contains_key(name)
        } else {
            self.prompt_names.contains(name)
        }
    }

    pub fn items(&self, kind: ListKind) -> &[Box<RawValue>] {
        match kind {
            ListKind::Tools => &self.tools,
            ListKind::Prompts => &self.prompts,
            ListKind::Resources => &self.resources,
            ListKind::Templates => &self.templates,
        }
    }

    /// Namespaces and stores the items an upstream listed. Items the gateway cannot read
    /// (no name/uri) are skipped with a warning: a client could not call them anyway.
    pub fn set(
        &mut self,
        kind: ListKind,
        server: &str,
        separator: &str,
        items: Vec<Box<RawValue>>,
    ) {
        let mut out = Vec::with_capacity(items.len());
        let mut names = HashSet::default();
        let mut tool_names = crate::FastMap::default();
        let mut permissions = Vec::new();
        for item in items {
            let Ok(mut obj) = RawObject::parse(item.get()) else {
                tracing::warn!(
                    server,
                    "upstream listed a non-object in {}; skipped",
                    kind.method()
                );
                continue;
            };
            let key = match kind {
                ListKind::Tools | ListKind::Prompts => "name",
                ListKind::Resources => "uri",
                ListKind::Templates => "uriTemplate",
            };
            let Some(original) = obj.get_str(key) else {
                tracing::warn!(
                    server,
                    "upstream listed an entry without {key} in {}; skipped",
                    kind.method()
                );
                continue;
            };
            let exposed = match kind {
                ListKind::Tools | ListKind::Prompts => format!("{server}{separator}{original}"),
                ListKind::Resources | ListKind::Templates => namespace_uri(server, &original),
            };
            obj.set_str(key, &exposed);
            if kind == ListKind::Tools {
                tool_names.insert(original, out.len());
                permissions.push(tool_permission(&obj));
            } else {
                names.insert(original);
            }
            out.push(obj.to_raw());
        }
        match kind {
            ListKind::Tools => {
                self.server = server.to_owned();
                self.separator = separator.to_owned();
                self.tools = out;
                self.tool_names = tool_names;
                self.tool_permissions = permissions;
                self.search = std::sync::OnceLock::new();
            }
            ListKind::Prompts => {
                self.prompts = out;
                self.prompt_names = names;
            }
            ListKind::Resources => self.resources = out,
            ListKind::Templates => self.templates = out,
        }
    }
}

/// What calling a tool may do, from its `annotations` (`readOnlyHint`, `destructiveHint`); a
/// tool without annotations counts as destructive (the MCP defaults).
fn tool_permission(tool: &RawObject) -> Permission {
    #[derive(serde::Deserialize)]
    struct Hints {
        #[serde(rename = "readOnlyHint")]
        read_only: Option<bool>,
        #[serde(rename = "destructiveHint")]
        destructive: Option<bool>,
    }
    let hints = tool
        .get("annotations")
        .and_then(|a| serde_json::from_str::<Hints>(a.get()).ok());
    match hints {
        Some(h) => Permission::of_tool(h.read_only, h.destructive),
        None => Permission::Destructive,
    }
}

impl ServerCatalog {
    /// The search index of this catalogue's tools (built once, on first use).
    pub fn search_index(&self) -> &tessera_search::ToolIndex {
        self.search.get_or_init(|| {
            let parsed: Vec<serde_json::Value> = self
                .tools
                .iter()
                .map(|t| serde_json::from_str(t.get()).unwrap_or(serde_json::Value::Null))
                .collect();
            let prefix = format!("{}{}", self.server, self.separator);
            // The tool's own name is indexed as its name; the server's once per tool.
            let texts = parsed.iter().map(|tool| {
                let mut text = tessera_search::ToolText::from_tool_json(tool);
                text.name = text.name.strip_prefix(&prefix).unwrap_or(text.name);
                text
            });
            tessera_search::ToolIndex::build_for_server(&self.server, texts)
        })
    }
}

pub fn namespace_uri(server: &str, uri: &str) -> String {
    format!("{RESOURCE_SCHEME}{server}/{uri}")
}

/// Splits `tessera://<server>/<original uri>` into server and original URI.
pub fn split_uri(uri: &str) -> Option<(&str, &str)> {
    let rest = uri.strip_prefix(RESOURCE_SCHEME)?;
    let (server, original) = rest.split_once('/')?;
    (!server.is_empty() && !original.is_empty()).then_some((server, original))
}

/// One page of a merged list: `items` from `offset`, at most `page_size` (0 = all).
pub fn page(kind: ListKind, items: &[&RawValue], offset: usize, page_size: usize) -> Box<RawValue> {
    let end = if page_size == 0 {
        items.len()
    } else {
        (offset + page_size).min(items.len())
    };
    let start = offset.min(end);
    let mut obj = RawObject::default();
    obj.set(kind.field(), to_raw(&&items[start..end]));
    if end < items.len() {
        obj.set_str("nextCursor", &end.to_string());
    }
    obj.to_raw()
}

/// Reads a cursor that [`page`] produced; anything else is the client's error.
pub fn parse_cursor(cursor: Option<&str>) -> Result<usize, String> {
    match cursor {
        None => Ok(0),
        Some(c) => c
            .parse::<usize>()
            .map_err(|_| format!("invalid cursor {c:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jsonrpc::raw;

    #[test]
    fn tools_are_prefixed_and_keep_unknown_fields() {
        let mut c = ServerCatalog::default();
        c.set(
            ListKind::Tools,
            "s1",
            "__",
            vec![raw(
                r#"{"name":"echo","inputSchema":{},"x_tool_extra":"kept"}"#,
            )],
        );
        assert_eq!(
            c.tools[0].get(),
            r#"{"name":"s1__echo","inputSchema":{},"x_tool_extra":"kept"}"#
        );
        assert!(c.tool_names.contains_key("echo"));
        assert_eq!(c.tool_permissions, [Permission::Destructive]);
    }

    #[test]
    fn resource_uris_round_trip() {
        let ns = namespace_uri("everything", "test://static/resource/1");
        assert_eq!(ns, "tessera://everything/test://static/resource/1");
        assert_eq!(
            split_uri(&ns),
            Some(("everything", "test://static/resource/1"))
        );
        assert_eq!(split_uri("file:///x"), None);
    }

    #[test]
    fn pages_carry_a_cursor_until_the_end() {
        let items: Vec<Box<RawValue>> = (0..5)
            .map(|i| raw(&format!("{{\"name\":\"t{i}\"}}")))
            .collect();
        let refs: Vec<&RawValue> = items.iter().map(|b| b.as_ref()).collect();
        let first = page(ListKind::Tools, &refs, 0, 2);
        assert_eq!(
            first.get(),
            r#"{"tools":[{"name":"t0"},{"name":"t1"}],"nextCursor":"2"}"#
        );
        let last = page(ListKind::Tools, &refs, 4, 2);
        assert_eq!(last.get(), r#"{"tools":[{"name":"t4"}]}"#);
        assert!(parse_cursor(Some("zz")).is_err());
    }
}
