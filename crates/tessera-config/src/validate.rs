//! The walker: checks a parsed [`Node`] tree key by key, collects every problem with its JSON
//! path, and builds the [`Config`] when there are none.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use url::{Host, Url};

use crate::interpolate::interpolate;
use crate::json::{Node, Number};
use crate::path::{self, ROOT, quote};
use crate::suggest::did_you_mean;
mod auth;
mod broker;

use crate::{
    Config, ConfigErrors, HttpProtocol, Problem, ServerConfig, Transport, defaults, duration, keys,
};

/// The reference's message for an `auth_broker` on a non-HTTP server (REFERENCE.md §2.1).
const BROKER_NOT_HTTP: &str = "auth_broker is only supported on HTTP-family upstreams (http, sse, streamable-http); brokering for stdio/non-HTTP upstreams is unsupported in this phase";

/// Headers Tessera sets itself; configuring them would break the transport.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
    "mcp-session-id",
    "mcp-protocol-version",
];

pub(crate) fn config(
    root: &Node,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigErrors> {
    let mut cx = Cx {
        env,
        problems: Vec::new(),
        ignored: Vec::new(),
        brokers: Vec::new(),
    };
    let config = cx.root(root);
    match config {
        Some(mut config) if cx.problems.is_empty() => {
            config.ignored = cx.ignored;
            Ok(config)
        }
        _ => {
            if cx.problems.is_empty() {
                cx.err(
                    ROOT,
                    "internal error: the configuration could not be built (please report this)",
                );
            }
            Err(ConfigErrors(cx.problems))
        }
    }
}

/// A string value after interpolation, with the text as written (for messages: the written text
/// may name `${VAR}`s, but never holds what they resolved to).
struct Text {
    value: String,
    raw: String,
}

impl Text {
    fn shown(&self) -> String {
        quote(&self.raw)
    }
}

/// The keys of one object, after the key checks.
struct Fields<'n> {
    entries: Vec<(&'n str, &'n Node)>,
}

impl<'n> Fields<'n> {
    /// The value of `key`; `null` counts as absent.
    fn get(&self, key: &str) -> Option<&'n Node> {
        self.entries
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, n)| *n)
            .filter(|n| !matches!(n, Node::Null))
    }

    /// Whether `key` has a value other than `null` or `""`.
    fn present(&self, key: &str) -> bool {
        match self.get(key) {
            Some(Node::String(s)) => !s.is_empty(),
            Some(_) => true,
            None => false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Stdio,
    Http(HttpProtocol),
}

/// What `protocol` / `type` ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Choice {
    Auto,
    Explicit(Kind, String),
    Invalid,
}

/// Which keys an object may hold.
struct Schema<'a> {
    known: &'a [&'a str],
    silent: &'a [&'a str],
    reference: &'a [&'a str],
    reference_prefixes: &'a [&'a str],
}

struct Cx<'e> {
    env: &'e dyn Fn(&str) -> Option<String>,
    problems: Vec<Problem>,
    ignored: Vec<String>,
    /// JSON paths of the `auth_broker` blocks met so far.
    brokers: Vec<String>,
}

impl Cx<'_> {
    fn err(&mut self, path: &str, message: impl Into<String>) {
        self.problems.push(Problem {
            path: path.to_string(),
            message: message.into(),
        });
    }

    fn wrong_type(&mut self, path: &str, node: &Node, expected: &str, example: &str) {
        self.err(
            path,
            format!("must be {expected}, not {} (e.g. {example})", node.kind()),
        );
    }

    /// Checks the keys of an object: duplicates and unknown keys are problems, keys the reference
    /// writes but Tessera does not use go to `ignored`.
    fn object<'n>(
        &mut self,
        path: &str,
        entries: &'n [(String, Node)],
        schema: &Schema<'_>,
    ) -> Fields<'n> {
        let mut seen = HashSet::new();
        let mut fields = Vec::new();
        for (key, value) in entries {
            let key_path = path::key(path, key);
            if !seen.insert(key.as_str()) {
                self.err(
                    &key_path,
                    format!(
                        "duplicate key {} (JSON objects must not repeat a key; keep one)",
                        quote(key)
                    ),
                );
            } else if schema.known.contains(&key.as_str()) {
                fields.push((key.as_str(), value));
            } else if schema.silent.contains(&key.as_str()) {
            } else if schema.reference.contains(&key.as_str())
                || schema.reference_prefixes.iter().any(|p| key.starts_with(p))
            {
                self.ignored.push(key_path);
            } else {
                let message = unknown_key_message(key, schema);
                self.err(&key_path, message);
            }
        }
        Fields { entries: fields }
    }

    /// A string, interpolated.
    fn text(&mut self, path: &str, node: &Node, example: &str) -> Option<Text> {
        let Node::String(raw) = node else {
            self.wrong_type(path, node, "a string", example);
            return None;
        };
        match interpolate(raw, self.env) {
            Ok(value) => Some(Text {
                value,
                raw: raw.clone(),
            }),
            Err(errors) => {
                for e in errors {
                    self.err(path, e.message());
                }
                None
            }
        }
    }

    /// A string that must not be empty.
    fn nonempty_text(&mut self, path: &str, node: &Node, example: &str) -> Option<Text> {
        let text = self.text(path, node, example)?;
        if text.value.trim().is_empty() {
            self.err(path, format!("must not be empty (e.g. {example})"));
            return None;
        }
        Some(text)
    }

    /// A secret string, interpolated. Neither the value nor its type's content is ever echoed.
    fn secret(&mut self, path: &str, node: &Node) -> Option<SecretString> {
        let Node::String(raw) = node else {
            self.err(
                path,
                format!(
                    "must be a string, not {} (put the value in quotes)",
                    node.kind()
                ),
            );
            return None;
        };
        match interpolate(raw, self.env) {
            Ok(value) => Some(SecretString::from(value)),
            Err(errors) => {
                for e in errors {
                    self.err(path, e.message());
                }
                None
            }
        }
    }

    fn boolean(&mut self, path: &str, node: &Node) -> Option<bool> {
        match node {
            Node::Bool(b) => Some(*b),
            other => {
                self.wrong_type(path, other, "true or false", "true");
                None
            }
        }
    }

    /// A duration string greater than zero.
    fn duration(&mut self, path: &str, node: &Node) -> Option<Duration> {
        const EXAMPLE: &str = "\"30s\", \"2m\" or \"1h30m\"";
        let text = self.text(path, node, EXAMPLE)?;
        if text.value.trim_start().starts_with('-') {
            self.err(path, format!("must not be negative (e.g. {EXAMPLE})"));
            return None;
        }
        match duration::parse(&text.value) {
            Some(d) if d.is_zero() => {
                self.err(path, format!("must be greater than zero (e.g. {EXAMPLE})"));
                None
            }
            Some(d) => Some(d),
            None => {
                self.err(
                    path,
                    format!(
                        "invalid duration {} (write a number with a unit, e.g. {EXAMPLE})",
                        text.shown()
                    ),
                );
                None
            }
        }
    }

    /// An array of strings, each interpolated.
    fn string_list(&mut self, path: &str, node: &Node, example: &str) -> Option<Vec<Text>> {
        let Node::Array(items) = node else {
            self.wrong_type(path, node, "an array of strings", example);
            return None;
        };
        let mut out = Vec::with_capacity(items.len());
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            match self.text(&path::index(path, i), item, "\"value\"") {
                Some(t) => out.push(t),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    /// An `http://` or `https://` URL.
    fn http_url(&mut self, path: &str, text: &Text) -> Option<Url> {
        let url = match Url::parse(text.value.trim()) {
            Ok(url) => url,
            Err(e) => {
                self.err(
                    path,
                    format!(
                        "invalid URL {}: {e} (write an absolute http:// or https:// URL, e.g. \"https://example.com/mcp\")",
                        text.shown()
                    ),
                );
                return None;
            }
        };
        if !matches!(url.scheme(), "http" | "https") {
            self.err(
                path,
                format!(
                    "unsupported URL scheme {} (use http:// or https://)",
                    quote(url.scheme())
                ),
            );
            return None;
        }
        Some(url)
    }

    /// `storage`: `sqlite://<path>` or `postgres://user@host:port/database`. Messages never
    /// show the value (a PostgreSQL URL may carry a password).
    fn storage(&mut self, node: &Node) -> Option<crate::Storage> {
        const PATH: &str = "storage";
        const FIX: &str = "write \"sqlite:///var/lib/tessera/tessera.db\" or \"postgres://tessera@db.internal:5432/tessera\" ; a password from the environment: \"postgres://tessera:${PGPASSWORD}@db.internal/tessera\"";
        let text = self.nonempty_text(
            PATH,
            node,
            "\"postgres://tessera@db.internal:5432/tessera\"",
        )?;
        let value = text.value.trim();
        let Some((scheme, rest)) = value.split_once(':') else {
            self.err(PATH, format!("not a URL ({FIX})"));
            return None;
        };
        match scheme {
            "sqlite" => {
                let file = rest.strip_prefix("//").unwrap_or(rest);
                if file.is_empty() || file.ends_with('/') {
                    self.err(PATH, format!("a sqlite URL needs a file path ({FIX})"));
                    return None;
                }
                if file.contains('?') {
                    self.err(PATH, format!("a sqlite URL takes no parameters ({FIX})"));
                    return None;
                }
                Some(crate::Storage::Sqlite(PathBuf::from(file)))
            }
            "postgres" | "postgresql" => {
                let url = match Url::parse(value) {
                    Ok(url) => url,
                    Err(e) => {
                        self.err(PATH, format!("invalid PostgreSQL URL: {e} ({FIX})"));
                        return None;
                    }
                };
                if url.host_str().is_none_or(str::is_empty) {
                    self.err(PATH, format!("the PostgreSQL URL names no host ({FIX})"));
                    return None;
                }
                if url.path().trim_start_matches('/').is_empty() {
                    self.err(
                        PATH,
                        format!("the PostgreSQL URL names no database ({FIX})"),
                    );
                    return None;
                }
                Some(crate::Storage::Postgres(SecretString::from(
                    value.to_owned(),
                )))
            }
            _ => {
                self.err(
                    PATH,
                    format!("unsupported scheme {} ({FIX})", quote(scheme)),
                );
                None
            }
        }
    }

    /// An authorization-server URL: https, or http for loopback hosts only; no fragment.
    fn endpoint_url(&mut self, path: &str, text: &Text) -> Option<Url> {
        let url = match Url::parse(text.value.trim()) {
            Ok(url) => url,
            Err(e) => {
                self.err(
                    path,
                    format!(
                        "invalid URL {}: {e} (write an absolute https:// URL, e.g. \"https://login.example.com/oauth/token\")",
                        text.shown()
                    ),
                );
                return None;
            }
        };
        let loopback = match url.host() {
            Some(Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
            Some(Host::Ipv4(ip)) => ip.is_loopback(),
            Some(Host::Ipv6(ip)) => ip.is_loopback(),
            None => false,
        };
        match url.scheme() {
            "https" => {}
            "http" if loopback => {}
            scheme => {
                self.err(
                    path,
                    format!(
                        "must use https, not {} (http:// is allowed only for loopback hosts: 127.0.0.1, ::1, localhost)",
                        quote(scheme)
                    ),
                );
                return None;
            }
        }
        if url.fragment().is_some() {
            self.err(path, "must not contain a fragment (remove the \"#…\" part)");
            return None;
        }
        Some(url)
    }

    fn existing_path(&mut self, path: &str, text: &Text, want_dir: bool) -> Option<PathBuf> {
        let p = PathBuf::from(&text.value);
        let (noun, fix) = if want_dir {
            ("directory", "create it or fix the path")
        } else {
            ("file", "fix the path")
        };
        match std::fs::metadata(&p) {
            Ok(meta) if meta.is_dir() == want_dir => Some(p),
            Ok(_) => {
                self.err(path, format!("{} is not a {noun} ({fix})", text.shown()));
                None
            }
            Err(_) => {
                self.err(
                    path,
                    format!("{noun} {} does not exist ({fix})", text.shown()),
                );
                None
            }
        }
    }

    // ---------------------------------------------------------------------------------------
    // top level

    fn root(&mut self, root: &Node) -> Option<Config> {
        let Node::Object(entries) = root else {
            self.err(
                ROOT,
                format!(
                    "must be a JSON object such as {{\"mcpServers\": {{}}}}, not {}",
                    root.kind()
                ),
            );
            return None;
        };
        let f = self.object(
            "",
            entries,
            &Schema {
                known: keys::TOP,
                silent: keys::TOP_SILENT,
                reference: keys::TOP_REFERENCE,
                reference_prefixes: keys::TOP_REFERENCE_PREFIXES,
            },
        );
        let mut config = Config::default();

        if let Some(node) = f.get("listen")
            && let Some(text) = self.nonempty_text("listen", node, "\"127.0.0.1:8080\"")
            && let Some(listen) = self.listen("listen", &text)
        {
            config.listen = listen;
        }
        if let Some(node) = f.get("public_url")
            && let Some(text) =
                self.nonempty_text("public_url", node, "\"https://mcp.example.com\"")
        {
            config.public_url = self.http_url("public_url", &text);
        }
        if let Some(node) = f.get("data_dir")
            && let Some(text) = self.nonempty_text("data_dir", node, "\"./data\"")
        {
            config.data_dir = PathBuf::from(text.value);
        }
        config.storage = match f.get("storage") {
            Some(node) => self.storage(node).unwrap_or(config.storage),
            None => crate::Storage::Sqlite(config.data_dir.join(defaults::DB_FILE)),
        };
        let mut separator_ok = true;
        if let Some(node) = f.get("tool_separator") {
            match self.nonempty_text("tool_separator", node, "\"__\"") {
                Some(text) if text.value.chars().any(char::is_whitespace) => {
                    self.err(
                        "tool_separator",
                        "must not contain whitespace (e.g. \"__\")",
                    );
                    separator_ok = false;
                }
                Some(text) => config.tool_separator = text.value,
                None => separator_ok = false,
            }
        }
        if let Some(node) = f.get("call_tool_timeout")
            && let Some(d) = self.duration("call_tool_timeout", node)
        {
            config.call_tool_timeout = d;
        }
        if let Some(node) = f.get("init_timeout")
            && let Some(d) = self.duration("init_timeout", node)
        {
            config.init_timeout = d;
        }
        if let Some(node) = f.get("session_idle_timeout")
            && let Some(d) = self.duration("session_idle_timeout", node)
        {
            config.session_idle_timeout = d;
        }
        if let Some(node) = f.get("upstream_idle_timeout")
            && let Some(d) = self.duration("upstream_idle_timeout", node)
        {
            config.upstream_idle_timeout = d;
        }
        for (key, slot) in [
            (
                "max_upstream_sessions_per_user",
                &mut config.max_upstream_sessions_per_user,
            ),
            ("max_upstream_sessions", &mut config.max_upstream_sessions),
        ] {
            if let Some(node) = f.get(key)
                && let Some(n) = self.whole_number(key, node, "e.g. 64")
            {
                if n == 0 {
                    self.err(key, "must be at least 1 (e.g. 64)".to_owned());
                } else {
                    *slot = n;
                }
            }
        }
        if let Some(node) = f.get("activity_retention_days")
            && let Some(n) = self.whole_number(
                "activity_retention_days",
                node,
                "e.g. 30; 0 keeps records of any age",
            )
        {
            if n > 36_500 {
                self.err(
                    "activity_retention_days",
                    "is too large (at most 36500 days; 0 keeps records of any age)".to_owned(),
                );
            } else {
                config.activity_retention_days = n;
            }
        }
        if let Some(node) = f.get("activity_max_records")
            && let Some(n) = self.whole_number(
                "activity_max_records",
                node,
                "e.g. 100000; 0 keeps any number",
            )
        {
            config.activity_max_records = n;
        }
        if let Some(node) = f.get("list_page_size")
            && let Some(n) = self.page_size("list_page_size", node)
        {
            config.list_page_size = n;
        }
        if let Some(node) = f.get("allowed_origins") {
            config.allowed_origins = self.origins("allowed_origins", node);
        }
        if let Some(node) = f.get("routing_mode")
            && let Some(text) = self.text("routing_mode", node, "\"direct\"")
        {
            match text.value.trim() {
                "direct" => config.routing_mode = crate::RoutingMode::Direct,
                "retrieve_tools" => config.routing_mode = crate::RoutingMode::RetrieveTools,
                other => self.err(
                    "routing_mode",
                    format!(
                        "unknown routing mode {other:?}: use \"direct\" (every tool as <server>__<tool>) or \"retrieve_tools\" (search); Tessera has no code_execution mode"
                    ),
                ),
            }
        }
        if let Some(node) = f.get("tools_limit")
            && let Some(n) = self.whole_number("tools_limit", node, "e.g. 15")
        {
            if (1..=100).contains(&n) {
                config.tools_limit = n;
            } else {
                self.err("tools_limit", "must be from 1 to 100 (e.g. 15)".to_owned());
            }
        }
        // The reference keeps `max_user_servers` in `server_edition`; the top-level key wins.
        let edition_max = ["server_edition", "teams"]
            .iter()
            .find_map(|k| match f.get(k) {
                Some(Node::Object(o)) => o
                    .iter()
                    .find(|(key, _)| key == "max_user_servers")
                    .map(|(_, v)| (format!("{k}.max_user_servers"), v)),
                _ => None,
            });
        let max_user_servers = f
            .get("max_user_servers")
            .map(|n| ("max_user_servers".to_owned(), n))
            .or(edition_max);
        if let Some((path, node)) = max_user_servers
            && let Some(n) = self.whole_number(&path, node, "e.g. 20; 0 turns personal servers off")
        {
            config.user_servers.max_per_user = n;
        }
        if let Some(node) = f.get("user_server_allowed_networks") {
            config.user_servers.allowed_networks =
                self.networks("user_server_allowed_networks", node);
        }
        let separator = separator_ok.then(|| config.tool_separator.clone());
        config.servers = self.servers(f.get("mcpServers"), separator.as_deref());
        let brokers = std::mem::take(&mut self.brokers);
        let identity = self.identity(&f, config.public_url.as_ref(), &config.listen, &brokers);
        config.auth = identity.mode;
        config.credential_encryption_key = identity.credential_encryption_key;
        Some(config)
    }

    fn listen(&mut self, path: &str, text: &Text) -> Option<String> {
        let value = text.value.trim();
        // Go's ":8080" (all interfaces), as the reference accepts it.
        let addr = if value.starts_with(':') {
            format!("0.0.0.0{value}")
        } else {
            value.to_string()
        };
        if addr.parse::<SocketAddr>().is_ok() {
            Some(addr)
        } else {
            self.err(
                path,
                format!(
                    "invalid listen address {} (write IP:port, e.g. \"127.0.0.1:8080\" or \"[::1]:8080\"; host names are not accepted)",
                    text.shown()
                ),
            );
            None
        }
    }

    fn page_size(&mut self, path: &str, node: &Node) -> Option<usize> {
        self.whole_number(path, node, "e.g. 100; 0 turns pagination off")
    }

    /// A non-negative whole number; `hint` says what a good value is.
    fn whole_number(&mut self, path: &str, node: &Node, hint: &str) -> Option<usize> {
        match node {
            Node::Number(Number::Unsigned(n)) => match usize::try_from(*n) {
                Ok(n) => Some(n),
                Err(_) => {
                    self.err(path, format!("is too large ({hint})"));
                    None
                }
            },
            Node::Number(Number::Negative(_)) => {
                self.err(path, format!("must not be negative ({hint})"));
                None
            }
            Node::Number(Number::Float(_)) => {
                self.err(path, format!("must be a whole number ({hint})"));
                None
            }
            other => {
                self.err(
                    path,
                    format!("must be a number, not {} ({hint})", other.kind()),
                );
                None
            }
        }
    }

    /// CIDR networks (`10.0.0.0/8`, `fd00::/8`); a bare address is one host.
    fn networks(&mut self, path: &str, node: &Node) -> Vec<crate::network::IpNet> {
        let Node::Array(items) = node else {
            self.wrong_type(path, node, "an array of strings", "[\"10.20.0.0/16\"]");
            return Vec::new();
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let item_path = path::index(path, i);
            let Some(text) = self.text(&item_path, item, "\"10.20.0.0/16\"") else {
                continue;
            };
            let value = text.value.trim();
            let parsed = value.parse::<crate::network::IpNet>().or_else(|_| {
                value
                    .parse::<std::net::IpAddr>()
                    .map(crate::network::IpNet::from)
            });
            match parsed {
                Ok(net) => out.push(net.trunc()),
                Err(_) => self.err(
                    &item_path,
                    format!(
                        "{} is not a network: write an address or CIDR block (e.g. \"10.20.0.0/16\" or \"127.0.0.1\")",
                        text.shown()
                    ),
                ),
            }
        }
        out
    }

    fn origins(&mut self, path: &str, node: &Node) -> Vec<String> {
        let Node::Array(items) = node else {
            self.wrong_type(
                path,
                node,
                "an array of strings",
                "[\"https://app.example.com\"]",
            );
            return Vec::new();
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let item_path = path::index(path, i);
            let Some(text) = self.text(&item_path, item, "\"https://app.example.com\"") else {
                continue;
            };
            match Url::parse(text.value.trim()) {
                Ok(url)
                    if matches!(url.scheme(), "http" | "https")
                        && url.host().is_some()
                        && url.path() == "/"
                        && url.query().is_none()
                        && url.fragment().is_none()
                        && url.username().is_empty()
                        && url.password().is_none() =>
                {
                    out.push(url.origin().ascii_serialization());
                }
                _ => self.err(
                    &item_path,
                    format!(
                        "{} is not an origin (write scheme, host and optional port, without a path, e.g. \"https://app.example.com\")",
                        text.shown()
                    ),
                ),
            }
        }
        out
    }

    // ---------------------------------------------------------------------------------------
    // mcpServers

    fn servers(&mut self, node: Option<&Node>, separator: Option<&str>) -> Vec<ServerConfig> {
        const PATH: &str = "mcpServers";
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        match node {
            None => {}
            Some(Node::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    let server_path = path::index(PATH, i);
                    if let Node::Object(entries) = item {
                        if let Some(s) = self.server(&server_path, entries, None, separator, &mut seen)
                        {
                            out.push(s);
                        }
                    } else {
                        self.wrong_type(
                            &server_path,
                            item,
                            "a server object",
                            "{\"name\": \"github\", \"url\": \"https://api.githubcopilot.com/mcp/\"}",
                        );
                    }
                }
            }
            Some(Node::Object(entries)) => {
                for (name, item) in entries {
                    let server_path = path::key(PATH, name);
                    if let Node::Object(fields) = item {
                        if let Some(s) =
                            self.server(&server_path, fields, Some(name), separator, &mut seen)
                        {
                            out.push(s);
                        }
                    } else {
                        self.wrong_type(
                            &server_path,
                            item,
                            "a server object",
                            "{\"command\": \"npx\", \"args\": [\"-y\", \"some-mcp-server\"]}",
                        );
                    }
                }
            }
            Some(other) => self.err(
                PATH,
                format!(
                    "must be an array of server objects or an object mapping names to servers, not {} (e.g. {{\"github\": {{\"url\": \"https://api.githubcopilot.com/mcp/\"}}}})",
                    other.kind()
                ),
            ),
        }
        out
    }

    /// One server. `key` is the map key in the `{"name": {...}}` form.
    fn server(
        &mut self,
        p: &str,
        entries: &[(String, Node)],
        key: Option<&str>,
        separator: Option<&str>,
        seen: &mut HashSet<String>,
    ) -> Option<ServerConfig> {
        let f = self.object(
            p,
            entries,
            &Schema {
                known: keys::SERVER,
                silent: &[],
                reference: keys::SERVER_REFERENCE,
                reference_prefixes: &[],
            },
        );
        let at = |k: &str| path::key(p, k);

        // name
        let name_field = at("name");
        let (name, name_path) = match key {
            None => {
                let name = match f.get("name") {
                    None => {
                        self.err(
                            &name_field,
                            "server name is required (add \"name\": \"my-server\")",
                        );
                        None
                    }
                    Some(node) => self
                        .text(&name_field, node, "\"github\"")
                        .filter(|t| self.check_name(&name_field, &t.value, separator))
                        .map(|t| t.value),
                };
                (name, name_field)
            }
            Some(key) => {
                if let Some(node) = f.get("name")
                    && let Some(text) = self.text(&name_field, node, "\"github\"")
                    && text.value != key
                {
                    self.err(
                        &name_field,
                        format!(
                            "name {} does not match its key {} (remove \"name\" or make the two equal)",
                            text.shown(),
                            quote(key)
                        ),
                    );
                }
                let name = self.check_name(p, key, separator).then(|| key.to_string());
                (name, p.to_string())
            }
        };
        if let Some(name) = &name
            && !seen.insert(name.clone())
        {
            self.err(
                &name_path,
                format!(
                    "duplicate server name {} (each server needs a unique name; rename or remove one)",
                    quote(name)
                ),
            );
        }

        // simple fields
        let enabled = match f.get("enabled") {
            Some(node) => self.boolean(&at("enabled"), node),
            None => Some(defaults::SERVER_ENABLED),
        };
        let call_timeout = f
            .get("timeout")
            .and_then(|n| self.duration(&at("timeout"), n));
        let init_timeout = f
            .get("init_timeout")
            .and_then(|n| self.duration(&at("init_timeout"), n));

        // transport
        let choice = self.protocol(p, &f);
        let url_present = f.present("url");
        let command_present = f.present("command");
        let url = if url_present {
            f.get("url")
                .and_then(|n| self.text(&at("url"), n, "\"https://example.com/mcp\""))
                .and_then(|t| self.http_url(&at("url"), &t))
        } else {
            None
        };
        let command = if command_present {
            f.get("command")
                .and_then(|n| self.nonempty_text(&at("command"), n, "\"npx\""))
                .map(|t| t.value)
        } else {
            None
        };
        let args: Vec<String> = f
            .get("args")
            .and_then(|n| self.string_list(&at("args"), n, "[\"-y\", \"some-mcp-server\"]"))
            .map(|v| v.into_iter().map(|t| t.value).collect())
            .unwrap_or_default();
        let env = f
            .get("env")
            .and_then(|n| self.env_map(&at("env"), n))
            .unwrap_or_default();
        let working_dir = if f.present("working_dir") {
            f.get("working_dir")
                .and_then(|n| self.text(&at("working_dir"), n, "\"/srv/mcp\""))
                .and_then(|t| self.existing_path(&at("working_dir"), &t, true))
        } else {
            None
        };
        let headers = f
            .get("headers")
            .and_then(|n| self.header_map(&at("headers"), n))
            .unwrap_or_default();

        let kind = match choice {
            Choice::Invalid => None,
            Choice::Explicit(Kind::Stdio, _) => {
                if !command_present {
                    self.err(
                        &at("command"),
                        "command is required for stdio protocol (set \"command\" to the program to run)",
                    );
                }
                Some(Kind::Stdio)
            }
            Choice::Explicit(kind @ Kind::Http(_), label) => {
                if !url_present {
                    self.err(
                        &at("url"),
                        format!(
                            "url is required for {label} protocol (set \"url\" to the server's MCP endpoint, e.g. \"https://example.com/mcp\")"
                        ),
                    );
                }
                Some(kind)
            }
            Choice::Auto => match (command_present, url_present) {
                (true, true) => {
                    self.err(
                        p,
                        "both \"command\" and \"url\" are set (set \"protocol\" to \"stdio\" or \"http\" to choose, or remove one)",
                    );
                    None
                }
                (true, false) => Some(Kind::Stdio),
                (false, true) => Some(Kind::Http(HttpProtocol::Auto)),
                (false, false) => {
                    self.err(
                        p,
                        "neither \"command\" nor \"url\" is set (set \"command\" for a stdio server or \"url\" for an HTTP server)",
                    );
                    None
                }
            },
        };

        // keys that belong to the other kind of transport
        match kind {
            Some(Kind::Stdio) => {
                let fix = "set \"protocol\" to \"http\"";
                if url_present {
                    self.err(
                        &at("url"),
                        format!("url is only used by HTTP servers (remove it, or {fix})"),
                    );
                }
                if !headers.is_empty() {
                    self.err(
                        &at("headers"),
                        format!("headers are only used by HTTP servers (remove them, or {fix})"),
                    );
                }
            }
            Some(Kind::Http(_)) => {
                let fix = "set \"protocol\" to \"stdio\"";
                if command_present {
                    self.err(
                        &at("command"),
                        format!("command is only used by stdio servers (remove it, or {fix})"),
                    );
                }
                if !args.is_empty() {
                    self.err(
                        &at("args"),
                        format!("args are only used by stdio servers (remove them, or {fix})"),
                    );
                }
                if !env.is_empty() {
                    self.err(
                        &at("env"),
                        format!("env is only used by stdio servers (remove it, or {fix})"),
                    );
                }
                if f.present("working_dir") {
                    self.err(
                        &at("working_dir"),
                        format!("working_dir is only used by stdio servers (remove it, or {fix})"),
                    );
                }
            }
            None => {}
        }

        if f.get("auth_broker").is_some() {
            self.brokers.push(at("auth_broker"));
        }
        let auth_broker = f
            .get("auth_broker")
            .map(|n| self.broker(&at("auth_broker"), n, kind));
        if let Some(Some(broker)) = &auth_broker
            && let Some((header, _)) = headers
                .iter()
                .find(|(h, _)| h.eq_ignore_ascii_case(&broker.header))
        {
            self.err(
                &path::key(&at("headers"), header),
                format!(
                    "header {} is also injected per user by auth_broker (remove it from headers; a static value would be sent to every user)",
                    quote(header)
                ),
            );
        }

        let transport = match kind? {
            Kind::Stdio => Transport::Stdio {
                command: command?,
                args,
                env,
                working_dir,
            },
            Kind::Http(protocol) => Transport::Http {
                url: url?,
                protocol,
                headers,
            },
        };
        Some(ServerConfig {
            name: name?,
            enabled: enabled?,
            transport,
            call_timeout,
            init_timeout,
            auth_broker: auth_broker.flatten(),
        })
    }

    /// Checks a server name; records a problem and returns false if it is not usable.
    fn check_name(&mut self, path: &str, name: &str, separator: Option<&str>) -> bool {
        if name.is_empty() {
            self.err(
                path,
                "server name is required (it must not be empty; use letters, digits, \"_\", \".\" and \"-\")",
            );
            return false;
        }
        if name.contains(':') {
            self.err(
                path,
                format!(
                    "server name {} must not contain ':' (reserved as the server:tool / server:prompt routing separator); rename it",
                    quote(name)
                ),
            );
            return false;
        }
        let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
        if !name.chars().all(valid) {
            let fixed: String = name
                .chars()
                .map(|c| if valid(c) { c } else { '-' })
                .collect();
            self.err(
                path,
                format!(
                    "server name {} may only contain letters, digits, \"_\", \".\" and \"-\" (rename it, e.g. {})",
                    quote(name),
                    quote(&fixed)
                ),
            );
            return false;
        }
        if let Some(sep) = separator
            && name.contains(sep)
        {
            self.err(
                path,
                format!(
                    "server name {} must not contain the tool separator {} (it splits \"<server>{sep}<tool>\"; rename the server or change tool_separator)",
                    quote(name),
                    quote(sep)
                ),
            );
            return false;
        }
        true
    }

    /// `protocol` and its client-style alias `type`.
    fn protocol(&mut self, p: &str, f: &Fields<'_>) -> Choice {
        const PROTOCOLS: &[&str] = &["stdio", "http", "streamable-http", "sse", "auto"];
        const TYPES: &[&str] = &["stdio", "http", "streamable-http", "streamableHttp", "sse"];
        let protocol_path = path::key(p, "protocol");
        let type_path = path::key(p, "type");

        let protocol = f.get("protocol").map(|node| {
            let Some(text) = self.text(&protocol_path, node, "\"streamable-http\"") else {
                return Choice::Invalid;
            };
            match text.value.as_str() {
                "" | "auto" => Choice::Auto,
                "stdio" => Choice::Explicit(Kind::Stdio, text.value),
                "http" | "streamable-http" => {
                    Choice::Explicit(Kind::Http(HttpProtocol::StreamableHttp), text.value)
                }
                "sse" => Choice::Explicit(Kind::Http(HttpProtocol::Sse), text.value),
                other => {
                    let message = format!(
                        "invalid protocol {}: must be one of stdio, http, streamable-http, sse, auto{}",
                        text.shown(),
                        suggestion(other, PROTOCOLS)
                    );
                    self.err(&protocol_path, message);
                    Choice::Invalid
                }
            }
        });
        let ty = f.get("type").map(|node| {
            let Some(text) = self.text(&type_path, node, "\"stdio\"") else {
                return Choice::Invalid;
            };
            match text.value.as_str() {
                "stdio" => Choice::Explicit(Kind::Stdio, text.value),
                "http" | "streamable-http" | "streamableHttp" => {
                    Choice::Explicit(Kind::Http(HttpProtocol::StreamableHttp), text.value)
                }
                "sse" => Choice::Explicit(Kind::Http(HttpProtocol::Sse), text.value),
                other => {
                    let message = format!(
                        "invalid type {}: must be one of stdio, http, streamable-http, streamableHttp, sse (or use \"protocol\"){}",
                        text.shown(),
                        suggestion(other, TYPES)
                    );
                    self.err(&type_path, message);
                    Choice::Invalid
                }
            }
        });
        match (protocol, ty) {
            (Some(Choice::Invalid), _) | (_, Some(Choice::Invalid)) => Choice::Invalid,
            (None, None) => Choice::Auto,
            (Some(c), None) | (None, Some(c)) | (Some(Choice::Auto), Some(c)) => c,
            (Some(Choice::Explicit(a, pa)), Some(Choice::Explicit(b, tb))) => {
                if a == b {
                    Choice::Explicit(a, pa)
                } else {
                    self.err(
                        &type_path,
                        format!(
                            "type {} disagrees with protocol {} (remove one of them)",
                            quote(&tb),
                            quote(&pa)
                        ),
                    );
                    Choice::Invalid
                }
            }
            (Some(c @ Choice::Explicit(..)), Some(Choice::Auto)) => c,
        }
    }

    fn env_map(&mut self, path: &str, node: &Node) -> Option<Vec<(String, SecretString)>> {
        let Node::Object(entries) = node else {
            self.wrong_type(
                path,
                node,
                "an object of strings",
                "{\"LOG_LEVEL\": \"info\"}",
            );
            return None;
        };
        let mut seen = HashSet::new();
        let mut out = Vec::with_capacity(entries.len());
        for (name, value) in entries {
            let item_path = path::key(path, name);
            if !seen.insert(name.as_str()) {
                self.err(
                    &item_path,
                    format!("duplicate variable {} (keep one)", quote(name)),
                );
                continue;
            }
            if name.is_empty() || name.contains('=') || name.contains('\0') {
                self.err(
                    &item_path,
                    format!(
                        "invalid environment variable name {} (it must be non-empty and contain no \"=\")",
                        quote(name)
                    ),
                );
                continue;
            }
            if matches!(value, Node::Null) {
                continue;
            }
            if let Some(secret) = self.secret(&item_path, value) {
                out.push((name.clone(), secret));
            }
        }
        Some(out)
    }

    fn header_map(&mut self, path: &str, node: &Node) -> Option<Vec<(String, SecretString)>> {
        let Node::Object(entries) = node else {
            self.wrong_type(
                path,
                node,
                "an object of strings",
                "{\"Authorization\": \"Bearer ${TOKEN}\"}",
            );
            return None;
        };
        let mut seen = HashSet::new();
        let mut out = Vec::with_capacity(entries.len());
        for (name, value) in entries {
            let item_path = path::key(path, name);
            if !seen.insert(name.to_ascii_lowercase()) {
                self.err(
                    &item_path,
                    format!(
                        "duplicate header {} (header names are case-insensitive; keep one)",
                        quote(name)
                    ),
                );
                continue;
            }
            if !self.check_header_name(&item_path, name) {
                continue;
            }
            if matches!(value, Node::Null) {
                continue;
            }
            let Some(secret) = self.secret(&item_path, value) else {
                continue;
            };
            if !is_header_value(secret.expose_secret()) {
                self.err(
                    &item_path,
                    "header value contains a line break or control character (remove it)",
                );
                continue;
            }
            out.push((name.clone(), secret));
        }
        Some(out)
    }

    fn check_header_name(&mut self, path: &str, name: &str) -> bool {
        if !is_header_name(name) {
            self.err(
                path,
                format!(
                    "{} is not a valid HTTP header name (use letters, digits and \"-\", e.g. \"X-Api-Key\")",
                    quote(name)
                ),
            );
            return false;
        }
        if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
            self.err(
                path,
                format!(
                    "header {} is set by Tessera itself and cannot be configured (remove it)",
                    quote(name)
                ),
            );
            return false;
        }
        true
    }
}

/// `; did you mean "x"?` or nothing.
fn suggestion(input: &str, candidates: &[&str]) -> String {
    did_you_mean(input, candidates)
        .map(|c| format!("; did you mean {}?", quote(c)))
        .unwrap_or_default()
}

fn unknown_key_message(key: &str, schema: &Schema<'_>) -> String {
    if schema.known.contains(&"enabled") && key.eq_ignore_ascii_case("disabled") {
        return "unknown key \"disabled\" (write \"enabled\": false instead)".to_string();
    }
    let candidates: Vec<&str> = schema
        .known
        .iter()
        .chain(schema.reference.iter())
        .copied()
        .collect();
    match did_you_mean(key, &candidates) {
        Some(c) => format!(
            "unknown key {}; did you mean {}? (remove it or fix the spelling)",
            quote(key),
            quote(c)
        ),
        None => format!(
            "unknown key {} (remove it; keys allowed here: {})",
            quote(key),
            schema.known.join(", ")
        ),
    }
}

/// RFC 9110 token.
fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// No control characters other than tab.
fn is_header_value(value: &str) -> bool {
    value.chars().all(|c| c == '\t' || !c.is_control())
}
