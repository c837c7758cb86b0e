//! Unit tests for loading and validation. Error lists are snapshot-tested (insta).

use std::time::Duration;

use secrecy::ExposeSecret;
use url::Url;

use crate::*;

fn env(name: &str) -> Option<String> {
    match name {
        "GITHUB_TOKEN" => Some("ghp_TOPSECRET_123".to_string()),
        "API_HOST" => Some("api.example.com".to_string()),
        "BROKER_SECRET" => Some("broker-TOPSECRET".to_string()),
        "BAD_URL" => Some("::not a url TOPSECRET::".to_string()),
        _ => None,
    }
}

fn load(text: &str) -> Result<Config, ConfigErrors> {
    load_str(text, &env)
}

#[track_caller]
fn ok(text: &str) -> Config {
    match load(text) {
        Ok(config) => config,
        Err(e) => panic!("expected a valid config, got:\n{e}"),
    }
}

#[track_caller]
fn errors(text: &str) -> ConfigErrors {
    match load(text) {
        Ok(config) => panic!("expected problems, got {config:?}"),
        Err(e) => e,
    }
}

#[track_caller]
fn error_text(text: &str) -> String {
    errors(text).to_string()
}

/// A directory that exists wherever the tests run.
fn existing_dir() -> String {
    env!("CARGO_MANIFEST_DIR").to_string()
}

/// A file that exists wherever the tests run.
fn existing_file() -> String {
    format!("{}/Cargo.toml", env!("CARGO_MANIFEST_DIR"))
}

fn secrets(pairs: &[(String, secrecy::SecretString)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.clone(), v.expose_secret().to_string()))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// defaults and top level

#[test]
fn activity_retention_keys_are_read_and_checked() {
    let c = ok(r#"{"activity_retention_days": 7, "activity_max_records": 0}"#);
    assert_eq!(c.activity_retention_days, 7);
    assert_eq!(c.activity_max_records, 0);
    assert!(c.ignored.is_empty(), "{:?}", c.ignored);
    let text = error_text(r#"{"activity_retention_days": -1, "activity_max_records": "many"}"#);
    assert!(text.contains("activity_retention_days"), "{text}");
    assert!(text.contains("activity_max_records"), "{text}");
    assert!(error_text(r#"{"activity_retention_days": 99999}"#).contains("too large"));
}

#[test]
fn empty_file_and_empty_object_are_defaults() {
    for text in ["", "  \n", "{}", "\u{feff}{}", r#"{"mcpServers": null}"#] {
        let c = ok(text);
        assert_eq!(c.listen, "127.0.0.1:8080");
        assert_eq!(c.public_url, None);
        assert_eq!(c.data_dir, std::path::PathBuf::from("./data"));
        assert_eq!(c.tool_separator, "__");
        assert_eq!(c.call_tool_timeout, Duration::from_secs(120));
        assert_eq!(c.init_timeout, Duration::from_secs(30));
        assert_eq!(c.list_page_size, 100);
        assert_eq!(c.activity_retention_days, 30);
        assert_eq!(c.activity_max_records, 100_000);
        assert!(c.allowed_origins.is_empty());
        assert!(c.servers.is_empty());
        assert!(c.ignored.is_empty());
    }
}

#[test]
fn top_level_keys_are_read() {
    let c = ok(r#"{
        "$schema": "https://example.com/tessera.schema.json",
        "listen": "0.0.0.0:9000",
        "public_url": "https://mcp.example.com",
        "data_dir": "/var/lib/tessera",
        "tool_separator": "--",
        "call_tool_timeout": "2m30s",
        "init_timeout": "1.5m",
        "list_page_size": 0,
        "allowed_origins": ["https://App.Example.com/", "http://localhost:3000"]
    }"#);
    assert_eq!(c.listen, "0.0.0.0:9000");
    assert_eq!(
        c.public_url.as_ref().map(|u| u.as_str()),
        Some("https://mcp.example.com/")
    );
    assert_eq!(c.data_dir, std::path::PathBuf::from("/var/lib/tessera"));
    assert_eq!(c.tool_separator, "--");
    assert_eq!(c.call_tool_timeout, Duration::from_secs(150));
    assert_eq!(c.init_timeout, Duration::from_secs(90));
    assert_eq!(c.list_page_size, 0);
    assert_eq!(
        c.allowed_origins,
        ["https://app.example.com", "http://localhost:3000"]
    );
    assert!(c.ignored.is_empty(), "$schema is accepted silently");
}

#[test]
fn go_style_listen_address_means_all_interfaces() {
    assert_eq!(ok(r#"{"listen": ":8080"}"#).listen, "0.0.0.0:8080");
    assert_eq!(ok(r#"{"listen": "[::1]:8080"}"#).listen, "[::1]:8080");
}

#[test]
fn bad_top_level_values_are_reported_with_fixes() {
    insta::assert_snapshot!(error_text(
        r#"{
        "listen": "localhost:8080",
        "public_url": "ftp://example.com",
        "data_dir": "",
        "storage": "mysql://db/tessera",
        "tool_separator": "a b",
        "call_tool_timeout": "soon",
        "init_timeout": "0s",
        "list_page_size": -1,
        "allowed_origins": ["https://example.com/path", "*", 3]
    }"#
    ));
}

#[test]
fn storage_defaults_to_sqlite_in_data_dir_and_accepts_postgres() {
    let url = |c: &Config| c.storage.url().expose_secret().to_owned();
    assert_eq!(url(&ok("{}")), "sqlite://./data/tessera.db");
    assert_eq!(
        url(&ok(r#"{"data_dir": "/var/lib/tessera"}"#)),
        "sqlite:///var/lib/tessera/tessera.db"
    );
    assert_eq!(
        url(&ok(r#"{"storage": "sqlite:///srv/t.db"}"#)),
        "sqlite:///srv/t.db"
    );
    let pg = ok(r#"{"storage": "postgres://tessera:hunter2@db.internal:5432/tessera"}"#);
    assert!(matches!(pg.storage, crate::Storage::Postgres(_)));
    assert_eq!(
        url(&pg),
        "postgres://tessera:hunter2@db.internal:5432/tessera"
    );
    assert!(!format!("{pg:?}").contains("hunter2"));
    for (bad, why) in [
        (r#"{"storage": "sqlite://"}"#, "needs a file path"),
        (
            r#"{"storage": "sqlite:///x.db?mode=ro"}"#,
            "takes no parameters",
        ),
        (r#"{"storage": "postgres:///tessera"}"#, "no host"),
        (r#"{"storage": "postgres://u:hunter2@db"}"#, "no database"),
        (r#"{"storage": "tessera.db"}"#, "not a URL"),
    ] {
        let text = error_text(bad);
        assert!(
            text.starts_with("storage: ") && text.contains(why),
            "{bad}: {text}"
        );
        assert!(!text.contains("hunter2"), "{text}");
    }
}

#[test]
fn wrong_types_are_reported() {
    insta::assert_snapshot!(error_text(
        r#"{
        "listen": 8080,
        "list_page_size": "100",
        "call_tool_timeout": 30,
        "allowed_origins": "https://example.com",
        "mcpServers": "github"
    }"#
    ));
}

#[test]
fn top_level_must_be_an_object() {
    insta::assert_snapshot!(error_text("[1, 2]"), @"(root): must be a JSON object such as {\"mcpServers\": {}}, not an array");
}

#[test]
fn malformed_json_is_one_problem_with_line_and_column() {
    let e = errors("{\n  \"listen\": \"127.0.0.1:8080\",\n}\n");
    assert_eq!(e.0.len(), 1);
    insta::assert_snapshot!(e.to_string(), @"<file>: invalid JSON at line 3, column 1: trailing comma (fix the syntax; JSON allows no comments and no trailing commas)");
}

// ---------------------------------------------------------------------------------------------
// mcpServers shapes

const ARRAY_FORM: &str = r#"{
    "mcpServers": [
        {"name": "demo", "command": "./bin/upstream", "args": ["stdio", "--quiet"],
         "env": {"LOG": "debug", "TOKEN": "${GITHUB_TOKEN}"}},
        {"name": "github", "url": "https://${API_HOST}/mcp", "protocol": "http",
         "headers": {"Authorization": "Bearer ${GITHUB_TOKEN}"}, "timeout": "45s"},
        {"name": "legacy", "url": "http://127.0.0.1:9000/sse", "protocol": "sse", "enabled": false,
         "init_timeout": "5s"}
    ]
}"#;

const MAP_FORM: &str = r#"{
    "mcpServers": {
        "demo": {"command": "./bin/upstream", "args": ["stdio", "--quiet"],
                 "env": {"LOG": "debug", "TOKEN": "${GITHUB_TOKEN}"}},
        "github": {"name": "github", "url": "https://${API_HOST}/mcp", "type": "streamable-http",
                   "headers": {"Authorization": "Bearer ${GITHUB_TOKEN}"}, "timeout": "45s"},
        "legacy": {"url": "http://127.0.0.1:9000/sse", "type": "sse", "enabled": false,
                   "init_timeout": "5s"}
    }
}"#;

/// Everything in a Config, secrets exposed, for comparisons.
fn flatten(c: &Config) -> String {
    let mut out = format!("{c:?}\n");
    for s in &c.servers {
        match &s.transport {
            Transport::Stdio { env, .. } => {
                out.push_str(&format!("{} env {:?}\n", s.name, secrets(env)))
            }
            Transport::Http { headers, .. } => {
                out.push_str(&format!("{} headers {:?}\n", s.name, secrets(headers)));
            }
        }
        if let Some(b) = &s.auth_broker {
            out.push_str(&format!(
                "{} client_secret {:?}\n",
                s.name,
                b.client_secret
                    .as_ref()
                    .map(|s| s.expose_secret().to_string())
            ));
        }
    }
    out
}

#[test]
fn array_and_map_forms_parse_to_the_same_config() {
    let array = ok(ARRAY_FORM);
    let map = ok(MAP_FORM);
    assert_eq!(flatten(&array), flatten(&map));

    let names: Vec<&str> = map.servers.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["demo", "github", "legacy"], "file order is kept");

    let demo = map.server("demo").unwrap();
    assert!(demo.enabled);
    match &demo.transport {
        Transport::Stdio {
            command,
            args,
            env,
            working_dir,
        } => {
            assert_eq!(command, "./bin/upstream");
            assert_eq!(args, &["stdio", "--quiet"]);
            assert_eq!(
                secrets(env),
                [
                    ("LOG".to_string(), "debug".to_string()),
                    ("TOKEN".to_string(), "ghp_TOPSECRET_123".to_string())
                ]
            );
            assert_eq!(working_dir, &None);
        }
        other => panic!("{other:?}"),
    }

    let github = map.server("github").unwrap();
    assert_eq!(github.call_timeout, Some(Duration::from_secs(45)));
    assert_eq!(github.init_timeout, None);
    match &github.transport {
        Transport::Http {
            url,
            protocol,
            headers,
        } => {
            assert_eq!(url.as_str(), "https://api.example.com/mcp");
            assert_eq!(*protocol, HttpProtocol::StreamableHttp);
            assert_eq!(
                secrets(headers),
                [(
                    "Authorization".to_string(),
                    "Bearer ghp_TOPSECRET_123".to_string()
                )]
            );
        }
        other => panic!("{other:?}"),
    }

    let legacy = map.server("legacy").unwrap();
    assert!(!legacy.enabled, "disabled servers are kept");
    assert_eq!(legacy.init_timeout, Some(Duration::from_secs(5)));
    assert!(matches!(
        legacy.transport,
        Transport::Http {
            protocol: HttpProtocol::Sse,
            ..
        }
    ));
    assert!(map.server("nope").is_none());
}

#[test]
fn claude_desktop_style_file_loads() {
    let c = ok(r#"{"mcpServers": {
        "filesystem": {"command": "npx", "args": ["-y", "@modelcontextprotocol/server-filesystem", "/tmp"]},
        "remote": {"type": "streamableHttp", "url": "https://example.com/mcp"}
    }}"#);
    assert_eq!(c.servers.len(), 2);
    assert!(matches!(
        c.servers[1].transport,
        Transport::Http {
            protocol: HttpProtocol::StreamableHttp,
            ..
        }
    ));
}

#[test]
fn protocol_is_inferred_from_command_or_url() {
    let c = ok(r#"{"mcpServers": [
        {"name": "a", "command": "run-me"},
        {"name": "b", "url": "https://example.com/mcp"},
        {"name": "c", "url": "https://example.com/mcp", "protocol": "auto"},
        {"name": "d", "url": "https://example.com/mcp", "protocol": ""},
        {"name": "e", "command": "run-me", "protocol": "stdio", "url": ""}
    ]}"#);
    assert!(matches!(c.servers[0].transport, Transport::Stdio { .. }));
    for s in &c.servers[1..4] {
        assert!(
            matches!(
                s.transport,
                Transport::Http {
                    protocol: HttpProtocol::Auto,
                    ..
                }
            ),
            "{s:?}"
        );
    }
    assert!(matches!(c.servers[4].transport, Transport::Stdio { .. }));
}

#[test]
fn transport_problems_are_reported() {
    insta::assert_snapshot!(error_text(
        r#"{"mcpServers": [
        {"name": "both", "command": "x", "url": "https://example.com"},
        {"name": "neither"},
        {"name": "stdio-no-command", "protocol": "stdio"},
        {"name": "http-no-url", "protocol": "http"},
        {"name": "sse-no-url", "protocol": "sse", "command": "x"},
        {"name": "typo", "protocol": "htp", "url": "https://example.com"},
        {"name": "bad-type", "type": "websocket", "url": "https://example.com"},
        {"name": "disagree", "protocol": "sse", "type": "stdio", "url": "https://example.com"},
        {"name": "bad-url", "url": "example.com/mcp"},
        {"name": "bad-scheme", "url": "ws://example.com/mcp"},
        {"name": "stray", "command": "x", "protocol": "stdio", "url": "https://example.com", "headers": {"X-A": "b"}},
        {"name": "stray2", "url": "https://example.com", "args": ["a"], "env": {"A": "b"}, "working_dir": "/"}
    ]}"#
    ));
}

#[test]
fn working_dir_must_exist() {
    let dir = existing_dir();
    let c = ok(&format!(
        r#"{{"mcpServers": {{"a": {{"command": "x", "working_dir": "{dir}"}}}}}}"#
    ));
    match &c.servers[0].transport {
        Transport::Stdio { working_dir, .. } => {
            assert_eq!(working_dir.as_deref(), Some(std::path::Path::new(&dir)));
        }
        other => panic!("{other:?}"),
    }
    let file = existing_file();
    let e = errors(&format!(
        r#"{{"mcpServers": {{"a": {{"command": "x", "working_dir": "/nonexistent/tessera-test"}},
                            "b": {{"command": "x", "working_dir": "{file}"}}}}}}"#
    ));
    assert_eq!(
        e.paths(),
        ["mcpServers.a.working_dir", "mcpServers.b.working_dir"]
    );
    assert!(e.0[0].message.contains("does not exist"), "{e}");
    assert!(e.0[1].message.contains("is not a directory"), "{e}");
}

#[test]
fn server_timeouts_must_be_positive_durations() {
    insta::assert_snapshot!(error_text(
        r#"{"mcpServers": {"a": {"command": "x", "timeout": "0s", "init_timeout": "fast", "enabled": "yes"}}}"#
    ));
}

// ---------------------------------------------------------------------------------------------
// names

#[test]
fn server_name_rules() {
    insta::assert_snapshot!(error_text(
        r#"{"mcpServers": [
        {"url": "https://example.com"},
        {"name": "", "url": "https://example.com"},
        {"name": "a:b", "url": "https://example.com"},
        {"name": "a b", "url": "https://example.com"},
        {"name": "git__hub", "url": "https://example.com"},
        {"name": "ok", "url": "https://example.com"},
        {"name": "ok", "url": "https://example.com"},
        {"name": 7, "url": "https://example.com"}
    ]}"#
    ));
}

#[test]
fn map_form_name_rules() {
    insta::assert_snapshot!(error_text(
        r#"{"mcpServers": {
        "a b": {"url": "https://example.com"},
        "x": {"name": "y", "url": "https://example.com"},
        "dup": {"url": "https://example.com"},
        "dup": {"command": "x"},
        "ok": 3
    }}"#
    ));
}

#[test]
fn separator_check_follows_the_configured_separator() {
    // "__" is fine in a name when the separator is something else.
    let c = ok(
        r#"{"tool_separator": ".", "mcpServers": {"git__hub": {"url": "https://example.com"}}}"#,
    );
    assert_eq!(c.servers[0].name, "git__hub");
    let e = errors(
        r#"{"tool_separator": ".", "mcpServers": {"git.hub": {"url": "https://example.com"}}}"#,
    );
    assert_eq!(e.paths(), ["mcpServers[\"git.hub\"]"]);
}

// ---------------------------------------------------------------------------------------------
// unknown and reference keys

#[test]
fn reference_config_loads_and_lists_ignored_keys() {
    // The §5.2 example of REFERENCE.md, inside a file with the reference's usual top-level keys.
    let c = ok(r#"{
        "listen": "127.0.0.1:8080",
        "data_dir": "/home/u/.mcpproxy",
        "api_key": "abc",
        "require_mcp_auth": false,
        "enable_socket": true,
        "routing_mode": "retrieve_tools",
        "tools_limit": 15,
        "call_tool_timeout": "2m",
        "code_execution_future_knob": 1,
        "logging": {"level": "info"},
        "tls": {"enabled": false},
        "server_edition": {"enabled": true, "admin_emails": ["Admin@Example.com"],
            "oauth": {"provider": "Google", "client_id": "1234.apps.googleusercontent.com",
                      "client_secret": "${BROKER_SECRET}", "allowed_domains": ["Example.com"]},
            "session_ttl": "12h", "bearer_token_ttl": "24h", "max_user_servers": 20,
            "store_idp_tokens": true},
        "teams": {"enabled": false},
        "mcpServers": [
            { "name": "github-enterprise", "url": "https://ghe.example.com/mcp", "protocol": "streamable-http",
              "shared": true,
              "oauth": null,
              "created": "2025-01-01T00:00:00Z",
              "auth_broker": { "mode": "oauth_connect",
                "authorization_endpoint": "https://ghe.example.com/login/oauth/authorize",
                "token_endpoint": "https://ghe.example.com/login/oauth/access_token",
                "client_id": "Iv1.0123", "client_secret": "…", "scopes": ["repo","read:user"],
                "resource": "https://ghe.example.com/mcp" } }
        ]
    }"#);
    insta::assert_debug_snapshot!(c.ignored);
    // server_edition is mapped onto `auth` (REFERENCE.md §1.2).
    let auth = c.auth.oidc().expect("server_edition gives an identity");
    assert_eq!(auth.provider, AuthProvider::Google);
    assert_eq!(auth.issuer, "https://accounts.google.com");
    assert_eq!(auth.client_id, "1234.apps.googleusercontent.com");
    assert_eq!(auth.admin_emails, ["admin@example.com"]);
    assert_eq!(auth.allowed_domains, ["example.com"]);
    assert_eq!(auth.session_ttl, Duration::from_secs(12 * 3600));
    assert!(auth.store_idp_tokens);
    assert_eq!(auth.resource.as_str(), "http://127.0.0.1:8080/mcp");
    let broker = c.servers[0].auth_broker.as_ref().unwrap();
    assert_eq!(broker.mode, BrokerMode::OauthConnect);
    assert_eq!(broker.scopes, ["repo", "read:user"]);
    assert_eq!(broker.header, "Authorization");
    assert_eq!(broker.header_format, "Bearer {token}");
    assert_eq!(broker.client_auth, ClientAuth::ClientSecretPost);
    assert_eq!(broker.subject_token_type, SubjectTokenType::AccessToken);
    assert_eq!(
        broker.resource.as_deref(),
        Some("https://ghe.example.com/mcp")
    );
}

#[test]
fn unknown_keys_get_a_did_you_mean() {
    insta::assert_snapshot!(error_text(
        r#"{"auth": {"issuer": "https://idp.example.com", "client_id": "tessera"}, 
        "lisen": "127.0.0.1:8080",
        "servers": [],
        "callToolTimeout": "1m",
        "frobnicate": true,
        "mcpServers": {"a": {
            "urll": "https://example.com", "url": "https://example.com",
            "disabled": true, "sharedd": true, "colour": "blue",
            "auth_broker": {"mode": "token_exchange", "token_endpont": "https://as.example.com/token",
                            "token_endpoint": "https://as.example.com/token", "client_secret": "x"}
        }}
    }"#
    ));
}

#[test]
fn duplicate_keys_are_reported() {
    let e = errors(r#"{"listen": "127.0.0.1:1", "listen": "127.0.0.1:2"}"#);
    insta::assert_snapshot!(e.to_string(), @r#"listen: duplicate key "listen" (JSON objects must not repeat a key; keep one)"#);
}

#[test]
fn all_problems_are_collected_in_one_pass() {
    let e = errors(
        r#"{"auth": {"issuer": "https://idp.example.com", "client_id": "tessera"}, 
        "listen": "nope",
        "mcpServers": [
            {"name": "a", "protocol": "stdio"},
            {"name": "b", "url": "https://example.com", "timeout": "-1s",
             "auth_broker": {"mode": "magic"}},
            {"name": "c", "command": "x", "auth_broker": {"mode": "token_exchange"}}
        ]
    }"#,
    );
    insta::assert_snapshot!(e.to_string());
    assert!(e.0.len() >= 5, "{e}");
    assert_eq!(
        e.to_string().lines().count(),
        e.0.len(),
        "one line per problem"
    );
}

// ---------------------------------------------------------------------------------------------
// secrets and interpolation

#[test]
fn debug_output_never_contains_secrets() {
    let c = ok(
        r#"{"auth": {"issuer": "https://idp.example.com", "client_id": "tessera"}, "mcpServers": {
        "h": {"url": "https://example.com", "headers": {"Authorization": "Bearer literal-TOPSECRET"}},
        "s": {"command": "x", "env": {"TOKEN": "${GITHUB_TOKEN}"}},
        "b": {"url": "https://example.com", "auth_broker": {"mode": "token_exchange",
              "token_endpoint": "https://as.example.com/token", "client_secret": "${BROKER_SECRET}"}}
    }}"#,
    );
    let debug = format!("{c:?} {c:#?}");
    assert!(!debug.contains("TOPSECRET"), "{debug}");
    // …while the values are there for whoever exposes them.
    assert!(flatten(&c).contains("Bearer literal-TOPSECRET"));
    assert!(flatten(&c).contains("broker-TOPSECRET"));
}

#[test]
fn interpolation_replaces_variables_and_keeps_escapes() {
    let c = ok(
        r#"{"data_dir": "/srv/${API_HOST}/$${HOME}", "mcpServers": {"a": {
        "command": "run", "args": ["--host=${API_HOST}", "$${NOT_EXPANDED}"]}}}"#,
    );
    assert_eq!(
        c.data_dir,
        std::path::PathBuf::from("/srv/api.example.com/${HOME}")
    );
    match &c.servers[0].transport {
        Transport::Stdio { args, .. } => {
            assert_eq!(args, &["--host=api.example.com", "${NOT_EXPANDED}"])
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn unset_variables_are_reported_with_path_and_name() {
    insta::assert_snapshot!(error_text(
        r#"{"mcpServers": [
        {"name": "gh", "url": "https://${MISSING_HOST}/mcp",
         "headers": {"Authorization": "Bearer ${MISSING_TOKEN}", "X-Two": "${A_1} ${B_2}"}},
        {"name": "bad", "command": "x", "args": ["${not-a-name}", "${UNCLOSED"]}
    ]}"#
    ));
}

#[test]
fn problems_never_echo_resolved_values() {
    // The URL resolves to garbage containing a secret: the message shows the text as written.
    let e = errors(
        r#"{"mcpServers": {"a": {"url": "${BAD_URL}"},
        "b": {"url": "https://example.com", "headers": {"X-Key": 12}},
        "c": {"url": "https://example.com", "protocol": "${API_HOST}"}}}"#,
    );
    let text = e.to_string();
    assert!(!text.contains("TOPSECRET"), "{text}");
    assert!(!text.contains("api.example.com"), "{text}");
    insta::assert_snapshot!(text);
}

#[test]
fn header_names_and_values_are_checked() {
    insta::assert_snapshot!(error_text(
        r#"{"mcpServers": {"a": {"url": "https://example.com", "headers": {
        "Bad Header": "x", "Host": "evil", "X-Ok": "line\nbreak", "x-ok": "again", "X-Fine": null}}}}"#
    ));
}

// ---------------------------------------------------------------------------------------------
// auth_broker

#[test]
fn auth_broker_fields_are_read_with_defaults() {
    let key = existing_file();
    let c = ok(&format!(
        r#"{{"auth": {{"issuer": "https://idp.example.com", "client_id": "tessera"}}, "mcpServers": {{
        "te": {{"url": "https://example.com/mcp", "auth_broker": {{"mode": "token_exchange",
               "token_endpoint": "https://as.example.com/token", "client_id": "gw",
               "client_secret": "${{BROKER_SECRET}}", "audience": "api://up",
               "subject_token_type": "id_token", "client_auth": "client_secret_basic",
               "revocation_endpoint": "https://as.example.com/revoke",
               "header": "X-Upstream-Token", "header_format": "{{token}}"}}}},
        "obo": {{"url": "https://example.com/mcp", "auth_broker": {{"mode": "entra_obo",
               "issuer": "https://login.microsoftonline.com/tenant/v2.0",
               "client_auth": "private_key_jwt", "private_key_file": "{key}"}}}},
        "local": {{"url": "http://127.0.0.1:9/mcp", "auth_broker": {{"mode": "oauth_connect",
               "token_endpoint": "http://localhost:8081/token",
               "authorization_endpoint": "http://[::1]:8081/authorize"}}}}
    }}}}"#
    ));
    let te = c.server("te").and_then(|s| s.auth_broker.as_ref()).unwrap();
    assert_eq!(te.mode, BrokerMode::TokenExchange);
    assert_eq!(
        te.token_endpoint.as_ref().unwrap().as_str(),
        "https://as.example.com/token"
    );
    assert_eq!(te.client_id.as_deref(), Some("gw"));
    assert_eq!(
        te.client_secret.as_ref().unwrap().expose_secret(),
        "broker-TOPSECRET"
    );
    assert_eq!(te.audience.as_deref(), Some("api://up"));
    assert_eq!(te.subject_token_type, SubjectTokenType::IdToken);
    assert_eq!(te.client_auth, ClientAuth::ClientSecretBasic);
    assert_eq!(te.header, "X-Upstream-Token");
    assert_eq!(te.header_format, "{token}");
    assert!(te.revocation_endpoint.is_some());

    let obo = c
        .server("obo")
        .and_then(|s| s.auth_broker.as_ref())
        .unwrap();
    assert_eq!(obo.mode, BrokerMode::EntraObo);
    assert_eq!(
        obo.token_endpoint, None,
        "discovered from the issuer at run time"
    );
    assert_eq!(obo.client_auth, ClientAuth::PrivateKeyJwt);
    assert_eq!(
        obo.private_key_file.as_deref(),
        Some(std::path::Path::new(&key))
    );

    let local = c
        .server("local")
        .and_then(|s| s.auth_broker.as_ref())
        .unwrap();
    assert_eq!(local.mode, BrokerMode::OauthConnect);
    assert_eq!(local.client_secret.as_ref().map(|_| ()), None);
}

#[test]
fn auth_broker_on_stdio_server_uses_the_reference_message() {
    let e = errors(
        r#"{"auth": {"issuer": "https://idp.example.com", "client_id": "tessera"}, "mcpServers": [{"name": "s", "command": "x",
        "auth_broker": {"mode": "oauth_connect"}}]}"#,
    );
    insta::assert_snapshot!(e.to_string(), @"mcpServers[0].auth_broker: auth_broker is only supported on HTTP-family upstreams (http, sse, streamable-http); brokering for stdio/non-HTTP upstreams is unsupported in this phase (remove auth_broker, or use an HTTP server)");
}

#[test]
fn auth_broker_mode_and_endpoint_rules() {
    insta::assert_snapshot!(error_text(
        r#"{"auth": {"issuer": "https://idp.example.com", "client_id": "tessera"}, "mcpServers": [
        {"name": "no-mode", "url": "https://example.com", "auth_broker": {"token_endpoint": "https://as.example.com/t"}},
        {"name": "bad-mode", "url": "https://example.com", "auth_broker": {"mode": "token_exchnage", "token_endpoint": "https://as.example.com/t", "client_secret": "s"}},
        {"name": "no-endpoints", "url": "https://example.com", "auth_broker": {"mode": "oauth_connect"}},
        {"name": "http-endpoint", "url": "https://example.com", "auth_broker": {"mode": "oauth_connect",
            "token_endpoint": "http://as.example.com/t", "authorization_endpoint": "https://as.example.com/a#frag",
            "revocation_endpoint": "not a url", "issuer": "https://as.example.com/?q=1"}},
        {"name": "not-object", "url": "https://example.com", "auth_broker": "token_exchange"}
    ]}"#
    ));
}

#[test]
fn auth_broker_header_and_client_auth_rules() {
    insta::assert_snapshot!(error_text(
        r#"{"auth": {"issuer": "https://idp.example.com", "client_id": "tessera"}, "mcpServers": [
        {"name": "fmt", "url": "https://example.com", "auth_broker": {"mode": "oauth_connect", "issuer": "https://as.example.com",
            "header": "Bad Header", "header_format": "Bearer TOKEN", "scopes": ["repo read:user", ""],
            "resource": "not a uri", "subject_token_type": "jwt", "client_auth": "basic"}},
        {"name": "jwt-no-key", "url": "https://example.com", "auth_broker": {"mode": "entra_obo", "issuer": "https://as.example.com",
            "client_auth": "private_key_jwt"}},
        {"name": "jwt-missing-key", "url": "https://example.com", "auth_broker": {"mode": "entra_obo", "issuer": "https://as.example.com",
            "client_auth": "private_key_jwt", "private_key_file": "/nonexistent/key.pem"}},
        {"name": "key-unused", "url": "https://example.com", "auth_broker": {"mode": "oauth_connect", "issuer": "https://as.example.com",
            "private_key_file": "/nonexistent/key.pem"}},
        {"name": "no-secret", "url": "https://example.com", "auth_broker": {"mode": "token_exchange", "issuer": "https://as.example.com",
            "client_auth": "client_secret_basic"}},
        {"name": "no-secret-ok", "url": "https://example.com", "auth_broker": {"mode": "oauth_connect", "issuer": "https://as.example.com"}},
        {"name": "static-auth", "url": "https://example.com", "headers": {"authorization": "Bearer shared"},
            "auth_broker": {"mode": "oauth_connect", "issuer": "https://as.example.com"}}
    ]}"#
    ));
}

#[test]
fn problem_display_is_path_colon_message() {
    let p = Problem {
        path: "mcpServers[2].auth_broker.token_endpoint".to_string(),
        message: "is required".to_string(),
    };
    assert_eq!(
        p.to_string(),
        "mcpServers[2].auth_broker.token_endpoint: is required"
    );
    let e = ConfigErrors(vec![p.clone(), p]);
    assert_eq!(e.to_string().lines().count(), 2);
    let _: &dyn std::error::Error = &e;
}

// ---------------------------------------------------------------------------------------------
// auth, server_edition

#[test]
fn auth_absent_or_none_means_no_identity() {
    assert!(matches!(ok("{}").auth, AuthMode::None { explicit: false }));
    assert!(matches!(
        ok(r#"{"auth": "none"}"#).auth,
        AuthMode::None { explicit: true }
    ));
    // A disabled server_edition is no identity either.
    let c = ok(r#"{"server_edition": {"enabled": false, "oauth": 3}}"#);
    assert!(matches!(c.auth, AuthMode::None { explicit: false }));
    assert_eq!(c.ignored, ["server_edition"]);
}

#[test]
fn auth_object_gets_defaults() {
    let c = ok(r#"{"public_url": "https://mcp.example.com/base/",
        "auth": {"issuer": "https://idp.example.com", "client_id": "tessera"}}"#);
    let a = c.auth.oidc().unwrap();
    assert_eq!(a.provider, AuthProvider::Oidc);
    assert_eq!(a.issuer, "https://idp.example.com");
    assert_eq!(a.resource.as_str(), "https://mcp.example.com/base/mcp");
    assert_eq!(a.scopes, ["openid", "email", "profile"]);
    assert_eq!(a.algorithms, [JwtAlgorithm::RS256, JwtAlgorithm::ES256]);
    assert_eq!(a.introspection_cache, Duration::from_secs(30));
    assert_eq!(a.jwks_cache, Duration::from_secs(600));
    assert_eq!(a.session_ttl, Duration::from_secs(86400));
    assert!(a.client_secret.is_none());
    assert!(a.audiences.is_empty() && a.scopes_required.is_empty());
    assert!(!a.store_idp_tokens);
    // Without public_url, a loopback listen address gives the resource.
    let c = ok(r#"{"listen": "127.0.0.1:9999",
        "auth": {"issuer": "http://127.0.0.1:4000", "client_id": "tessera"}}"#);
    assert_eq!(
        c.auth.oidc().unwrap().resource.as_str(),
        "http://127.0.0.1:9999/mcp"
    );
}

#[test]
fn auth_object_keys_are_read() {
    let c = ok(r#"{"auth": {
        "provider": "microsoft", "tenant_id": "contoso.onmicrosoft.com",
        "client_id": "app", "client_secret": "${BROKER_SECRET}",
        "scopes": ["openid", "api://tessera/mcp"], "resource": "https://mcp.example.com/mcp",
        "audience": "api://tessera", "algorithms": ["RS256", "PS256", "RS256"],
        "introspection_endpoint": "https://idp.example.com/introspect",
        "introspection_cache": "1m", "jwks_cache": "1h", "scopes_required": ["mcp"],
        "admin_emails": ["Boss@Example.COM"], "admin_claim": {"claim": "roles", "value": "Tessera.Admin"},
        "allowed_domains": ["Example.com"], "store_idp_tokens": true, "session_ttl": "8h"
    }, "mcpServers": {"up": {"url": "https://up.example.com/mcp",
        "auth_broker": {"mode": "entra_obo", "issuer": "https://login.microsoftonline.com/x/v2.0",
                        "client_secret": "s"}}}}"#);
    let a = c.auth.oidc().unwrap();
    assert_eq!(
        a.provider,
        AuthProvider::Microsoft {
            tenant_id: "contoso.onmicrosoft.com".into()
        }
    );
    assert!(!a.provider.is_multi_tenant());
    assert_eq!(
        a.issuer,
        "https://login.microsoftonline.com/contoso.onmicrosoft.com/v2.0"
    );
    assert_eq!(
        a.client_secret.as_ref().unwrap().expose_secret(),
        "broker-TOPSECRET"
    );
    assert_eq!(a.audiences, ["api://tessera"]);
    assert_eq!(a.algorithms, [JwtAlgorithm::RS256, JwtAlgorithm::PS256]);
    assert_eq!(
        a.introspection_endpoint.as_ref().map(Url::as_str),
        Some("https://idp.example.com/introspect")
    );
    assert_eq!(a.introspection_cache, Duration::from_secs(60));
    assert_eq!(a.jwks_cache, Duration::from_secs(3600));
    assert_eq!(a.admin_emails, ["boss@example.com"]);
    assert_eq!(
        a.admin_claim,
        Some(AdminClaim {
            claim: "roles".into(),
            value: "Tessera.Admin".into()
        })
    );
    assert_eq!(a.allowed_domains, ["example.com"]);
    assert!(a.store_idp_tokens);
    assert!(!format!("{c:?}").contains("TOPSECRET"));
}

#[test]
fn auth_problems_are_reported_with_fixes() {
    insta::assert_snapshot!(error_text(
        r#"{"listen": "0.0.0.0:8080", "auth": {
        "client_secret": "", "provider": "google", "tenant_id": "x",
        "algorithms": ["none", "HS256", "RS265", "ES256"], "audience": 7,
        "introspection_endpoint": "http://idp.example.com/introspect",
        "introspection_cache": "0s", "scopes_required": ["a b"],
        "admin_emails": ["nobody"], "admin_claim": {"claim": "groups"},
        "allowed_domains": ["@example.com"], "session_ttl": "forever", "colour": 1
    }}"#
    ));
    insta::assert_snapshot!(error_text(
        r#"{"public_url": "https://mcp.example.com", "auth": {"resource": "mcp", "issuer": "https://idp.example.com/?x=1"}}"#
    ));
    insta::assert_snapshot!(error_text(r#"{"auth": "off"}"#), @r#"auth: invalid value "off" (write "none" for single-user local use without sign-in, or an object naming the identity provider, e.g. {"issuer": "https://idp.example.com", "client_id": "tessera"})"#);
    insta::assert_snapshot!(error_text(
        r#"{"auth": {"client_id": "x", "algorithms": []}}"#
    ));
}

#[test]
fn brokered_servers_need_an_identity() {
    let servers = r#""mcpServers": [{"name": "up", "url": "https://up.example.com/mcp",
        "auth_broker": {"mode": "oauth_connect", "issuer": "https://as.example.com"}}]"#;
    insta::assert_snapshot!(error_text(&format!(r#"{{"auth": "none", {servers}}}"#)), @r#"mcpServers[0].auth_broker: brokered servers need an identity: configure auth ("auth": "none" runs without users; replace it with an "auth" object naming your identity provider, or remove auth_broker)"#);
    insta::assert_snapshot!(error_text(&format!(r#"{{{servers}}}"#)), @r#"mcpServers[0].auth_broker: brokered servers need an identity: configure auth (add an "auth" object naming your identity provider, e.g. {"issuer": "https://idp.example.com", "client_id": "tessera"}, or remove auth_broker)"#);
    // A broken auth object is reported, not the brokers.
    let e = errors(&format!(r#"{{"auth": {{"issuer": "x"}}, {servers}}}"#));
    assert!(e.paths().iter().all(|p| p.starts_with("auth.")), "{e}");
}

#[test]
fn server_edition_uses_the_reference_rules() {
    insta::assert_snapshot!(error_text(
        r#"{"server_edition": {"enabled": true, "workspace_idle_timeout": "30m"}}"#
    ));
    insta::assert_snapshot!(error_text(
        r#"{"server_edition": {"enabled": true, "admin_emails": [], "oauth": {"provider": "okta"}}}"#
    ));
    insta::assert_snapshot!(error_text(
        r#"{"listen": "0.0.0.0:1", "auth": {"issuer": "https://idp.example.com", "client_id": "x", "resource": "https://a.example.com/mcp"},
            "server_edition": {"enabled": true, "admin_emails": ["a@example.com"],
            "oauth": {"provider": "github", "client_id": "x", "client_secret": "y", "tenant_id": "t"}}}"#
    ));
}

#[test]
fn teams_is_the_legacy_alias_of_server_edition() {
    let c = ok(
        r#"{"public_url": "https://mcp.example.com", "teams": {"enabled": true,
        "admin_emails": ["a@example.com"], "credential_encryption_key": "${BROKER_SECRET}",
        "oauth": {"provider": "microsoft", "client_id": "x", "client_secret": "y"}}}"#,
    );
    let a = c.auth.oidc().unwrap();
    assert!(a.provider.is_multi_tenant());
    assert_eq!(a.issuer, "https://login.microsoftonline.com/common/v2.0");
    assert_eq!(a.scopes, ["openid", "email", "profile", "User.Read"]);
    assert_eq!(a.resource.as_str(), "https://mcp.example.com/mcp");
    assert_eq!(
        c.credential_encryption_key
            .as_ref()
            .unwrap()
            .expose_secret(),
        "broker-TOPSECRET"
    );
}

#[test]
fn auth_broker_policy_allow_lists_are_read() {
    let c = ok(
        r#"{"auth": {"issuer": "https://idp.example.com", "client_id": "tessera"},
        "mcpServers": {"gh": {"url": "https://example.com/mcp", "auth_broker": {"mode": "oauth_connect",
            "issuer": "https://as.example.com", "allowed_users": ["u1"],
            "allowed_emails": ["Alice@Example.com", "*@corp.example.com"], "allowed_groups": ["eng"]}},
          "open": {"url": "https://example.com/mcp2", "auth_broker": {"mode": "oauth_connect",
            "issuer": "https://as.example.com"}}}}"#,
    );
    let gh = c.server("gh").and_then(|s| s.auth_broker.as_ref()).unwrap();
    assert_eq!(gh.allowed_users, ["u1"]);
    assert_eq!(
        gh.allowed_emails,
        ["Alice@Example.com", "*@corp.example.com"]
    );
    assert_eq!(gh.allowed_groups, ["eng"]);
    let open = c
        .server("open")
        .and_then(|s| s.auth_broker.as_ref())
        .unwrap();
    assert!(
        open.allowed_users.is_empty()
            && open.allowed_emails.is_empty()
            && open.allowed_groups.is_empty()
    );
}

#[test]
fn authorization_server_implies_kept_provider_tokens_and_has_defaults() {
    let config = ok(
        r#"{"auth": {"issuer": "https://idp.example.com", "client_id": "tessera",
        "authorization_server": {}}}"#,
    );
    let a = config.auth.oidc().unwrap();
    assert!(a.store_idp_tokens);
    assert_eq!(
        a.authorization_server,
        Some(crate::AuthorizationServerConfig::default())
    );
    let config = ok(
        r#"{"auth": {"issuer": "https://idp.example.com", "client_id": "tessera",
        "authorization_server": {"access_token_ttl": "5m", "dynamic_registration": false}}}"#,
    );
    let s = config
        .auth
        .oidc()
        .unwrap()
        .authorization_server
        .clone()
        .unwrap();
    assert_eq!(s.access_token_ttl, Duration::from_secs(300));
    assert!(!s.dynamic_registration);
    assert!(s.client_metadata_documents);
    let off = ok(
        r#"{"auth": {"issuer": "https://idp.example.com", "client_id": "tessera",
        "authorization_server": false}}"#,
    );
    assert!(off.auth.oidc().unwrap().authorization_server.is_none());
}

#[test]
fn authorization_server_problems_name_the_key_and_the_fix() {
    let text = error_text(
        r#"{"auth": {"issuer": "https://idp.example.com", "client_id": "tessera",
        "store_idp_tokens": false,
        "authorization_server": {"access_token_ttl": "2h", "refresh_token_ttl": "1h", "pkce": 1}}}"#,
    );
    assert!(
        text.contains("auth.authorization_server.pkce: unknown key"),
        "{text}"
    );
    assert!(
        text.contains("auth.authorization_server.refresh_token_ttl: must not be shorter"),
        "{text}"
    );
    let text = error_text(
        r#"{"auth": {"issuer": "https://idp.example.com", "client_id": "tessera",
        "store_idp_tokens": false, "authorization_server": true}}"#,
    );
    assert!(
        text.contains("auth.store_idp_tokens: must not be false with authorization_server"),
        "{text}"
    );
    let text = error_text(
        r#"{"auth": {"issuer": "https://idp.example.com", "client_id": "tessera",
        "authorization_server": "yes"}}"#,
    );
    assert!(
        text.contains("auth.authorization_server: must be an object or true"),
        "{text}"
    );
}

#[test]
fn registration_rate_limit_defaults_on_and_can_be_set_or_turned_off() {
    let limit = |text: &str| {
        ok(text)
            .auth
            .oidc()
            .unwrap()
            .authorization_server
            .clone()
            .unwrap()
            .registration_rate_limit
    };
    let base = |v: &str| {
        format!(
            r#"{{"auth": {{"issuer": "https://idp.example.com", "client_id": "tessera",
            "authorization_server": {v}}}}}"#
        )
    };
    let defaults = Some(crate::RateLimit {
        per_minute: 10,
        burst: 20,
    });
    assert_eq!(limit(&base("{}")), defaults);
    assert_eq!(limit(&base("true")), defaults);
    assert_eq!(
        limit(&base(r#"{"registration_rate_limit": true}"#)),
        defaults
    );
    assert_eq!(
        limit(&base(
            r#"{"registration_rate_limit": {"per_minute": 2, "burst": 3}}"#
        )),
        Some(crate::RateLimit {
            per_minute: 2,
            burst: 3
        })
    );
    // A key left out keeps its default.
    assert_eq!(
        limit(&base(r#"{"registration_rate_limit": {"burst": 5}}"#)),
        Some(crate::RateLimit {
            per_minute: 10,
            burst: 5
        })
    );
    assert_eq!(limit(&base(r#"{"registration_rate_limit": false}"#)), None);
}

#[test]
fn registration_rate_limit_problems_name_the_key_and_the_fix() {
    let text = |v: &str| {
        error_text(&format!(
            r#"{{"auth": {{"issuer": "https://idp.example.com", "client_id": "tessera",
            "authorization_server": {{"registration_rate_limit": {v}}}}}}}"#
        ))
    };
    let t = text(r#"{"per_minute": 0}"#);
    assert!(
        t.contains(
            "auth.authorization_server.registration_rate_limit.per_minute: must be at least 1 \
             (e.g. 10; registration_rate_limit: false for no limit)"
        ),
        "{t}"
    );
    let t = text(r#"{"burst": -3}"#);
    assert!(
        t.contains("auth.authorization_server.registration_rate_limit.burst: must not be negative"),
        "{t}"
    );
    let t = text(r#"{"per_minute": "10/min"}"#);
    assert!(
        t.contains(
            "auth.authorization_server.registration_rate_limit.per_minute: must be a number, not a string"
        ),
        "{t}"
    );
    let t = text(r#"{"per_minute": 99999999999}"#);
    assert!(
        t.contains("registration_rate_limit.per_minute: is too large"),
        "{t}"
    );
    let t = text(r#"{"per_second": 1}"#);
    assert!(
        t.contains("auth.authorization_server.registration_rate_limit.per_second: unknown key"),
        "{t}"
    );
    let t = text("10");
    assert!(
        t.contains(
            "auth.authorization_server.registration_rate_limit: must be an object, true or false, not a number"
        ),
        "{t}"
    );
}

#[test]
fn microsoft_keeping_tokens_asks_for_tessera_s_own_api_not_graph() {
    let config = ok(
        r#"{"auth": {"provider": "microsoft", "tenant_id": "contoso.onmicrosoft.com",
        "client_id": "11111111-2222-3333-4444-555555555555", "store_idp_tokens": true}}"#,
    );
    let scopes = &config.auth.oidc().unwrap().scopes;
    assert!(scopes.contains(&"api://11111111-2222-3333-4444-555555555555/.default".to_string()));
    assert!(!scopes.iter().any(|s| s == "User.Read"), "{scopes:?}");
    let text = error_text(
        r#"{"auth": {"provider": "microsoft", "tenant_id": "contoso.onmicrosoft.com",
        "client_id": "x", "store_idp_tokens": true, "scopes": ["openid", "User.Read"]}}"#,
    );
    assert!(
        text.contains("auth.scopes: must name Tessera's own API"),
        "{text}"
    );
    // Without kept tokens the reference's Graph scopes stay the default.
    let config = ok(
        r#"{"auth": {"provider": "microsoft", "tenant_id": "contoso.onmicrosoft.com",
        "client_id": "x"}}"#,
    );
    assert!(
        config
            .auth
            .oidc()
            .unwrap()
            .scopes
            .iter()
            .any(|s| s == "User.Read")
    );
}

// ---------------------------------------------------------------------------------------------
// routing_mode, tools_limit, personal servers

#[test]
fn routing_mode_tools_limit_and_personal_server_keys() {
    let c = ok(
        r#"{"routing_mode": "retrieve_tools", "tools_limit": 7, "max_user_servers": 3,
                   "user_server_allowed_networks": ["127.0.0.1", "10.20.0.0/16"]}"#,
    );
    assert_eq!(c.routing_mode, crate::RoutingMode::RetrieveTools);
    assert_eq!(c.tools_limit, 7);
    assert_eq!(c.user_servers.max_per_user, 3);
    assert!(c.user_servers.address_allowed("10.20.3.4".parse().unwrap()));
    assert!(c.user_servers.address_allowed("127.0.0.1".parse().unwrap()));
    assert!(!c.user_servers.address_allowed("127.0.0.2".parse().unwrap()));
    let d = ok("{}");
    assert_eq!(d.routing_mode, crate::RoutingMode::Direct);
    assert_eq!(d.user_servers.max_per_user, 20);
    // The reference's server_edition.max_user_servers is read too.
    let e = ok(r#"{"server_edition": {"enabled": false, "max_user_servers": 4}}"#);
    assert_eq!(e.user_servers.max_per_user, 4);
    let text = error_text(
        r#"{"routing_mode": "code_execution", "tools_limit": 0,
            "user_server_allowed_networks": ["10.0.0.0/33"]}"#,
    );
    assert!(
        text.contains("routing_mode: unknown routing mode \"code_execution\""),
        "{text}"
    );
    assert!(
        text.contains("tools_limit: must be from 1 to 100"),
        "{text}"
    );
    assert!(
        text.contains("user_server_allowed_networks[0]: \"10.0.0.0/33\" is not a network"),
        "{text}"
    );
}
