//! Handler tests of personal servers, shared-server switches, agent tokens and the admin
//! routes, through the router (bearer PATs as callers).

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt as _;
use secrecy::{ExposeSecret as _, SecretString};
use tessera_config::{AuthConfig, HttpProtocol, ServerConfig, Transport, UserServersConfig};
use tessera_identity::Permission;
use tessera_store::{Keyring, Role, SealingKey, Store, UserLogin};
use tower::ServiceExt as _;
use url::Url;

use crate::servers::ServerView;
use crate::{ApiState, UserEvents};

#[derive(Default)]
struct Recorder {
    events: Mutex<Vec<String>>,
}

impl Recorder {
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.events.lock().unwrap())
    }
}

impl UserEvents for Recorder {
    fn servers_changed<'a>(&'a self, user_id: &'a str) -> crate::events::EventFuture<'a> {
        self.events
            .lock()
            .unwrap()
            .push(format!("servers:{user_id}"));
        Box::pin(async {})
    }
    fn disabled_changed<'a>(
        &'a self,
        user_id: &'a str,
        disabled: bool,
    ) -> crate::events::EventFuture<'a> {
        self.events
            .lock()
            .unwrap()
            .push(format!("disabled:{user_id}:{disabled}"));
        Box::pin(async {})
    }
    fn gateway_status(&self) -> serde_json::Value {
        serde_json::json!({
            "mcp_sessions": 3,
            "upstreams": [{"name": "github", "state": "ready", "error": null, "tools": 12}],
        })
    }
    fn mcp_sessions(&self) -> Vec<serde_json::Value> {
        vec![serde_json::json!({
            "handle": "ab".repeat(32),
            "issuer": "https://idp.example.test",
            "subject": "alice",
            "email": "token-email@example.test",
            "via": "jwt",
            "client_name": "inspector",
        })]
    }
    fn user_diagnostics(&self, issuer: &str, subject: &str) -> Vec<serde_json::Value> {
        self.events
            .lock()
            .unwrap()
            .push(format!("diagnostics:{issuer}:{subject}"));
        vec![
            serde_json::json!({"name": "GitHub", "state": "ready", "error": null,
                "tool_count": 12, "upstream_sessions": 1}),
            serde_json::json!({"name": "atlassian", "state": "down",
                "error": "connection refused", "tool_count": null, "upstream_sessions": 0}),
            serde_json::json!({"name": "notes", "state": "ready", "error": null,
                "tool_count": 4, "upstream_sessions": 2}),
        ]
    }
    fn restart_server<'a>(
        &'a self,
        name: &'a str,
    ) -> crate::events::EventFuture<'a, Option<usize>> {
        self.events.lock().unwrap().push(format!("restart:{name}"));
        let ended = (name == "GitHub").then_some(2);
        Box::pin(async move { ended })
    }
    fn end_mcp_session<'a>(&'a self, handle: &'a str) -> crate::events::EventFuture<'a, bool> {
        self.events
            .lock()
            .unwrap()
            .push(format!("end-mcp:{handle}"));
        let here = handle == "ab".repeat(32);
        Box::pin(async move { here })
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    state: Arc<ApiState>,
    app: Router,
    events: Arc<Recorder>,
    /// (user id, bearer token)
    alice: (String, String),
    bob: (String, String),
    admin: (String, String),
}

fn shared(name: &str) -> ServerConfig {
    ServerConfig {
        name: name.into(),
        enabled: true,
        transport: Transport::Http {
            url: "https://shared.example.test/mcp".parse().unwrap(),
            protocol: HttpProtocol::StreamableHttp,
            headers: vec![("X-Api-Key".into(), SecretString::from("shared-secret"))],
        },
        call_timeout: None,
        init_timeout: None,
        auth_broker: None,
    }
}

async fn fixture_with(keyring: bool) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let base = Url::parse("http://127.0.0.1:9").unwrap();
    let mut auth = AuthConfig::oidc(
        "http://127.0.0.1:9/idp",
        "tessera",
        base.join("/mcp").unwrap(),
    );
    auth.authorization_server = Some(tessera_config::AuthorizationServerConfig::default());
    let mut store = Store::open(dir.path()).await.unwrap();
    if keyring {
        let key = SealingKey::from_bytes(&[7u8; 32]).unwrap();
        store = store.with_keyring(Arc::new(Keyring::new(key, vec![]).unwrap()));
    }
    let state = ApiState::new(&auth, &base, store).unwrap();
    state.set_servers(ServerView::list(&[shared("GitHub"), shared("atlassian")]));
    state.set_user_servers_config(
        UserServersConfig {
            max_per_user: 3,
            allowed_networks: Vec::new(),
        },
        "__".into(),
    );
    let events = Arc::new(Recorder::default());
    state.set_user_events(events.clone());
    let mut users = Vec::new();
    for (subject, role) in [
        ("alice", Role::User),
        ("bob", Role::User),
        ("root", Role::Admin),
    ] {
        let user = state
            .store
            .upsert_user(&UserLogin {
                issuer: "https://idp.example.test",
                subject,
                email: Some(&format!("{subject}@example.test")),
                display_name: None,
                role_if_new: role,
            })
            .await
            .unwrap();
        let pat = state
            .store
            .create_pat(&user.id, "test", &[] as &[&str], None)
            .await
            .unwrap();
        users.push((user.id, pat.token.expose_secret().to_owned()));
    }
    let admin = users.pop().unwrap();
    let bob = users.pop().unwrap();
    let alice = users.pop().unwrap();
    let app = crate::router(state.clone());
    Fixture {
        _dir: dir,
        state,
        app,
        events,
        alice,
        bob,
        admin,
    }
}

async fn fixture() -> Fixture {
    fixture_with(true).await
}

impl Fixture {
    async fn call(
        &self,
        method: Method,
        uri: &str,
        who: Option<&(String, String)>,
        body: Option<serde_json::Value>,
    ) -> (StatusCode, serde_json::Value, String) {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some((_, token)) = who {
            req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let req = match body {
            Some(b) => req
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(b.to_string())),
            None => req.body(Body::empty()),
        }
        .unwrap();
        let r = self.app.clone().oneshot(req).await.unwrap();
        let status = r.status();
        let bytes = r.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
        (status, json, text)
    }

    async fn add(
        &self,
        who: &(String, String),
        body: serde_json::Value,
    ) -> (StatusCode, serde_json::Value, String) {
        self.call(Method::POST, "/api/v1/user/servers", Some(who), Some(body))
            .await
    }
}

const PUBLIC: &str = "https://93.184.216.34/mcp";

/// A valid personal `oauth_connect` block with `over` merged in.
fn connect_block(over: serde_json::Value) -> serde_json::Value {
    let mut block = serde_json::json!({
        "mode": "oauth_connect",
        "authorization_endpoint": "https://93.184.216.34/authorize",
        "token_endpoint": "https://93.184.216.34/token",
        "client_id": "mine",
        "client_secret": "s3cret-of-the-client",
        "scopes": ["read"],
    });
    for (k, v) in over.as_object().unwrap() {
        block[k] = v.clone();
    }
    block
}

#[test]
fn a_personal_auth_broker_gets_the_configurations_rules_without_interpolation() {
    let url = url::Url::parse(PUBLIC).unwrap();
    let ok = crate::user_servers::personal_auth_broker(&url, &connect_block(serde_json::json!({})))
        .unwrap();
    assert_eq!(ok.mode, tessera_config::BrokerMode::OauthConnect);
    assert_eq!(ok.client_id.as_deref(), Some("mine"));
    assert_eq!(ok.scopes, ["read"]);
    // `${VAR}` is never read from the gateway's environment.
    let e = crate::user_servers::personal_auth_broker(
        &url,
        &connect_block(serde_json::json!({"client_secret": "${PATH}"})),
    )
    .unwrap_err();
    assert!(
        e.message.contains("auth_broker.client_secret"),
        "{}",
        e.message
    );
    assert!(!e.message.contains("/usr"), "{}", e.message);
    // The configuration's messages, with the field's path.
    let e = crate::user_servers::personal_auth_broker(
        &url,
        &connect_block(serde_json::json!({"token_endpoint": "ftp://x.example/token"})),
    )
    .unwrap_err();
    assert!(
        e.message
            .starts_with("Invalid auth_broker: auth_broker.token_endpoint"),
        "{}",
        e.message
    );
    assert!(!e.message.contains("s3cret"), "{}", e.message);
    for mode in ["token_exchange", "entra_obo"] {
        let e = crate::user_servers::personal_auth_broker(
            &url,
            &connect_block(serde_json::json!({"mode": mode})),
        )
        .unwrap_err();
        assert!(
            e.message.contains("only \"oauth_connect\""),
            "{}",
            e.message
        );
    }
}

#[tokio::test]
async fn personal_servers_are_created_listed_changed_and_deleted() {
    let f = fixture().await;
    let (status, body, text) = f
        .add(
            &f.alice,
            serde_json::json!({
                "name": "notes",
                "url": "https://93.184.216.34/mcp?api_key=query-secret",
                "headers": {"Authorization": "Bearer header-secret"},
            }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{text}");
    assert_eq!(body["name"], "notes");
    assert_eq!(body["url"], "https://93.184.216.34/mcp");
    assert_eq!(body["protocol"], "streamable-http");
    assert_eq!(body["header_names"], serde_json::json!(["Authorization"]));
    assert_eq!(body["enabled"], true);
    assert_eq!(body["ownership"], "personal");
    assert!(!text.contains("header-secret") && !text.contains("query-secret"));
    assert_eq!(f.events.take(), [format!("servers:{}", f.alice.0)]);

    let (status, list, text) = f
        .call(Method::GET, "/api/v1/user/servers", Some(&f.alice), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(!text.contains("secret"), "{text}");
    let shared = list["shared"].as_array().unwrap();
    assert_eq!(shared.len(), 2);
    assert_eq!(shared[0]["name"], "GitHub");
    assert_eq!(shared[0]["ownership"], "shared");
    assert_eq!(shared[0]["user_enabled"], true);
    assert_eq!(list["personal"].as_array().unwrap().len(), 1);
    assert_eq!(list["personal"][0]["name"], "notes");
    // Bob sees none of Alice's.
    let (_, bobs, _) = f
        .call(Method::GET, "/api/v1/user/servers", Some(&f.bob), None)
        .await;
    assert!(bobs["personal"].as_array().unwrap().is_empty());
    let (status, _, _) = f
        .call(
            Method::GET,
            "/api/v1/user/servers/notes",
            Some(&f.bob),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, one, _) = f
        .call(
            Method::GET,
            "/api/v1/user/servers/notes",
            Some(&f.alice),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(one["ownership"], "personal");

    let (status, updated, text) = f
        .call(
            Method::PUT,
            "/api/v1/user/servers/notes",
            Some(&f.alice),
            Some(serde_json::json!({
                "url": "https://93.184.216.35/sse",
                "protocol": "sse",
                "headers": {"X-Key": "other-secret"},
            })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(updated["url"], "https://93.184.216.35/sse");
    assert_eq!(updated["protocol"], "sse");
    assert_eq!(updated["header_names"], serde_json::json!(["X-Key"]));
    assert!(!text.contains("other-secret"));
    let stored = f
        .state
        .store
        .get_user_server(&f.alice.0, "notes")
        .await
        .unwrap()
        .unwrap();
    let headers = f.state.store.user_server_headers(&stored).await.unwrap();
    assert_eq!(headers[0].1.expose_secret(), "other-secret");

    let (status, toggled, _) = f
        .call(
            Method::POST,
            "/api/v1/user/servers/notes/enable",
            Some(&f.alice),
            Some(serde_json::json!({"enabled": false})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(toggled["enabled"], false);

    let (status, body, _) = f
        .call(
            Method::DELETE,
            "/api/v1/user/servers/notes",
            Some(&f.alice),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["message"], "Server \"notes\" deleted");
    let (status, body, _) = f
        .call(
            Method::DELETE,
            "/api/v1/user/servers/notes",
            Some(&f.alice),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["message"], "Server \"notes\" not found");
    assert_eq!(
        f.events.take(),
        vec![format!("servers:{}", f.alice.0); 3],
        "update, enable, delete"
    );

    // Without a caller: 401.
    let (status, _, _) = f
        .call(Method::GET, "/api/v1/user/servers", None, None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn personal_servers_refuse_what_they_cannot_be() {
    let f = fixture().await;
    let refused = |status: StatusCode, fragment: &'static str| {
        move |(s, body, text): (StatusCode, serde_json::Value, String)| {
            assert_eq!(s, status, "{text}");
            let message = body["message"].as_str().unwrap();
            assert!(message.contains(fragment), "{message:?} lacks {fragment:?}");
        }
    };
    let add = |body: serde_json::Value| f.add(&f.alice, body);

    refused(StatusCode::BAD_REQUEST, "Personal servers are HTTP only")(
        add(serde_json::json!({"name": "x", "command": "npx", "args": ["-y"]})).await,
    );
    refused(
        StatusCode::BAD_REQUEST,
        "Invalid auth_broker: auth_broker.mode",
    )(add(serde_json::json!({"name": "x", "url": PUBLIC, "auth_broker": {}})).await);
    refused(StatusCode::BAD_REQUEST, "only \"oauth_connect\"")(
        add(serde_json::json!({"name": "x", "url": PUBLIC,
            "auth_broker": connect_block(serde_json::json!({"mode": "token_exchange"}))}))
        .await,
    );
    refused(StatusCode::BAD_REQUEST, "private_key_jwt")(
        add(serde_json::json!({"name": "x", "url": PUBLIC,
            "auth_broker": connect_block(serde_json::json!({"client_auth": "private_key_jwt",
                "private_key_file": "/etc/hostname"}))}))
        .await,
    );
    // The endpoints the gateway fetches are held to the personal servers' network rule.
    refused(StatusCode::BAD_REQUEST, "auth_broker.token_endpoint")(
        add(serde_json::json!({"name": "x", "url": PUBLIC,
            "auth_broker": connect_block(serde_json::json!({"token_endpoint": "http://127.0.0.1:9/token"}))}))
        .await,
    );
    // A valid block, but this gateway has no broker wired: 503 saying why.
    refused(StatusCode::SERVICE_UNAVAILABLE, "sealing key")(
        add(serde_json::json!({"name": "x", "url": PUBLIC, "auth_broker": connect_block(serde_json::json!({}))}))
            .await,
    );
    refused(StatusCode::BAD_REQUEST, "Server name is required")(
        add(serde_json::json!({"name": " ", "url": PUBLIC})).await,
    );
    for bad in ["a b", "x/y", &"n".repeat(65)] {
        refused(StatusCode::BAD_REQUEST, "Invalid server name")(
            add(serde_json::json!({"name": bad, "url": PUBLIC})).await,
        );
    }
    refused(StatusCode::BAD_REQUEST, "separator")(
        add(serde_json::json!({"name": "a__b", "url": PUBLIC})).await,
    );
    refused(
        StatusCode::CONFLICT,
        "Server name \"github\" conflicts with a shared server",
    )(add(serde_json::json!({"name": "github", "url": PUBLIC})).await);
    // SSRF: private, link-local (cloud metadata), loopback.
    for url in [
        "http://10.0.0.5/mcp",
        "http://169.254.169.254/latest/meta-data",
        "http://127.0.0.1:8080/mcp",
        "http://[::1]/mcp",
        "http://[::ffff:10.0.0.5]/mcp",
    ] {
        refused(
            StatusCode::BAD_REQUEST,
            "personal servers may only reach public",
        )(add(serde_json::json!({"name": "x", "url": url})).await);
    }
    refused(StatusCode::BAD_REQUEST, "user info")(
        add(serde_json::json!({"name": "x", "url": "https://u:p@93.184.216.34/"})).await,
    );
    refused(StatusCode::BAD_REQUEST, "http or https")(
        add(serde_json::json!({"name": "x", "url": "ftp://93.184.216.34/"})).await,
    );
    refused(StatusCode::BAD_REQUEST, "Invalid url")(
        add(serde_json::json!({"name": "x", "url": "not a url"})).await,
    );
    refused(StatusCode::BAD_REQUEST, "Invalid protocol")(
        add(serde_json::json!({"name": "x", "url": PUBLIC, "protocol": "stdio"})).await,
    );
    for (name, value, fragment) in [
        ("Host", "x", "the gateway sets it"),
        ("content-length", "1", "the gateway sets it"),
        ("Mcp-Session-Id", "1", "the gateway sets it"),
        ("Bad Name", "x", "Invalid header name"),
        ("X-Empty", "", "empty value"),
        ("X-Newline", "a\r\nInjected: 1", "cannot be sent"),
    ] {
        let (s, body, text) = add(serde_json::json!({
            "name": "x", "url": PUBLIC, "headers": {name: value},
        }))
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{name}: {text}");
        assert!(
            body["message"].as_str().unwrap().contains(fragment),
            "{text}"
        );
        if !value.is_empty() && value != "x" && value != "1" {
            assert!(
                !text.contains("Injected"),
                "a value is never echoed: {text}"
            );
        }
    }
    assert!(f.events.take().is_empty(), "nothing was written");

    // Duplicate, quota (3).
    for name in ["a", "b", "c"] {
        let (s, _, text) = add(serde_json::json!({"name": name, "url": PUBLIC})).await;
        assert_eq!(s, StatusCode::CREATED, "{text}");
    }
    refused(StatusCode::CONFLICT, "Server \"a\" already exists")(
        add(serde_json::json!({"name": "a", "url": PUBLIC})).await,
    );
    refused(StatusCode::FORBIDDEN, "max_user_servers = 3")(
        add(serde_json::json!({"name": "d", "url": PUBLIC})).await,
    );

    // Shared servers are read-only; unknown ones are 404.
    let (s, shared, _) = f
        .call(
            Method::GET,
            "/api/v1/user/servers/github",
            Some(&f.alice),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(shared["name"], "GitHub");
    assert_eq!(shared["ownership"], "shared");
    refused(StatusCode::FORBIDDEN, "Cannot update a shared server")(
        f.call(
            Method::PUT,
            "/api/v1/user/servers/GitHub",
            Some(&f.alice),
            Some(serde_json::json!({"url": PUBLIC})),
        )
        .await,
    );
    refused(StatusCode::FORBIDDEN, "Cannot delete a shared server")(
        f.call(
            Method::DELETE,
            "/api/v1/user/servers/github",
            Some(&f.alice),
            None,
        )
        .await,
    );
    refused(StatusCode::NOT_FOUND, "Server \"nope\" not found")(
        f.call(
            Method::PUT,
            "/api/v1/user/servers/nope",
            Some(&f.alice),
            Some(serde_json::json!({"enabled": false})),
        )
        .await,
    );
    refused(
        StatusCode::BAD_REQUEST,
        "personal servers may only reach public",
    )(
        f.call(
            Method::PUT,
            "/api/v1/user/servers/a",
            Some(&f.alice),
            Some(serde_json::json!({"url": "http://169.254.169.254/"})),
        )
        .await,
    );
    refused(StatusCode::BAD_REQUEST, "HTTP only")(
        f.call(
            Method::PUT,
            "/api/v1/user/servers/a",
            Some(&f.alice),
            Some(serde_json::json!({"command": "sh"})),
        )
        .await,
    );
    refused(StatusCode::NOT_FOUND, "not found")(
        f.call(
            Method::POST,
            "/api/v1/user/servers/nope/enable",
            Some(&f.alice),
            Some(serde_json::json!({"enabled": true})),
        )
        .await,
    );
}

#[tokio::test]
async fn loopback_is_allowed_only_when_an_admin_allows_its_network() {
    let f = fixture().await;
    let body = serde_json::json!({"name": "local", "url": "http://127.0.0.1:8080/mcp"});
    let (s, _, _) = f.add(&f.alice, body.clone()).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    f.state.set_user_servers_config(
        UserServersConfig {
            max_per_user: 3,
            allowed_networks: vec!["127.0.0.0/8".parse().unwrap()],
        },
        "__".into(),
    );
    let (s, _, text) = f.add(&f.alice, body).await;
    assert_eq!(s, StatusCode::CREATED, "{text}");
    // Other internal networks stay refused.
    let (s, _, _) = f
        .add(
            &f.alice,
            serde_json::json!({"name": "other", "url": "http://10.0.0.5/"}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    // max_user_servers = 0 turns personal servers off.
    f.state
        .set_user_servers_config(UserServersConfig::default(), "-".into());
    let (s, body, _) = f
        .add(&f.alice, serde_json::json!({"name": "a-b", "url": PUBLIC}))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "the separator is configurable");
    assert!(body["message"].as_str().unwrap().contains("\"-\""));
    f.state.set_user_servers_config(
        UserServersConfig {
            max_per_user: 0,
            allowed_networks: Vec::new(),
        },
        "__".into(),
    );
    let (s, body, _) = f
        .add(&f.alice, serde_json::json!({"name": "z", "url": PUBLIC}))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("max_user_servers")
    );
}

#[tokio::test]
async fn headers_without_a_sealing_key_are_refused_plainly() {
    let f = fixture_with(false).await;
    let (s, body, _) = f
        .add(
            &f.alice,
            serde_json::json!({"name": "x", "url": PUBLIC, "headers": {"X-Key": "v"}}),
        )
        .await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body["message"].as_str().unwrap().contains("sealing key"));
    let (s, _, _) = f
        .add(&f.alice, serde_json::json!({"name": "x", "url": PUBLIC}))
        .await;
    assert_eq!(s, StatusCode::CREATED);
}

#[tokio::test]
async fn a_shared_server_can_be_switched_off_for_one_user() {
    let f = fixture().await;
    let (s, body, _) = f
        .call(
            Method::POST,
            "/api/v1/user/servers/github/enable",
            Some(&f.alice),
            Some(serde_json::json!({"enabled": false})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body["name"], "GitHub");
    assert_eq!(body["ownership"], "shared");
    assert_eq!(body["user_enabled"], false);
    assert_eq!(f.events.take(), [format!("servers:{}", f.alice.0)]);
    assert_eq!(
        f.state.store.server_preferences(&f.alice.0).await.unwrap(),
        [("GitHub".to_owned(), false)]
    );
    let (_, list, _) = f
        .call(Method::GET, "/api/v1/user/servers", Some(&f.alice), None)
        .await;
    assert_eq!(list["shared"][0]["user_enabled"], false);
    assert_eq!(list["shared"][1]["user_enabled"], true);
    let (_, one, _) = f
        .call(
            Method::GET,
            "/api/v1/user/servers/GitHub",
            Some(&f.alice),
            None,
        )
        .await;
    assert_eq!(one["user_enabled"], false);
    // Bob's switch is his own.
    let (_, list, _) = f
        .call(Method::GET, "/api/v1/user/servers", Some(&f.bob), None)
        .await;
    assert_eq!(list["shared"][0]["user_enabled"], true);
    let (s, _, _) = f
        .call(
            Method::POST,
            "/api/v1/user/servers/github/enable",
            Some(&f.alice),
            Some(serde_json::json!({})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "enabled is required");
}

#[tokio::test]
async fn agent_tokens_carry_their_scope() {
    let f = fixture().await;
    let (s, _, _) = f
        .add(
            &f.alice,
            serde_json::json!({"name": "notes", "url": PUBLIC}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let create = |body: serde_json::Value| {
        f.call(
            Method::POST,
            "/api/v1/user/tokens",
            Some(&f.alice),
            Some(body),
        )
    };
    let (s, token, text) = create(serde_json::json!({
        "name": "agent",
        "allowed_servers": ["GitHub", "notes", "notes"],
        "permissions": ["write", "read"],
    }))
    .await;
    assert_eq!(s, StatusCode::CREATED, "{text}");
    assert_eq!(
        token["allowed_servers"],
        serde_json::json!(["GitHub", "notes"])
    );
    assert_eq!(token["permissions"], serde_json::json!(["read", "write"]));
    let secret = token["token"].as_str().unwrap().to_owned();
    let identity = crate::pat::verify(&f.state.store, &secret).await.unwrap();
    let scope = identity.agent.unwrap();
    assert_eq!(
        scope.servers.as_deref(),
        Some(&["GitHub".to_owned(), "notes".to_owned()][..])
    );
    assert_eq!(scope.permissions, [Permission::Read, Permission::Write]);
    assert!(scope.allows_server("notes") && !scope.allows_server("atlassian"));
    assert!(!scope.allows(Permission::Destructive));

    // Listed with its scope.
    let (_, list, _) = f
        .call(Method::GET, "/api/v1/user/tokens", Some(&f.alice), None)
        .await;
    let listed = list["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "agent")
        .unwrap();
    assert_eq!(listed["permissions"], serde_json::json!(["read", "write"]));
    assert!(listed.get("token").is_none());

    // Defaults: every server, every permission — no scope.
    let (s, full, _) = create(serde_json::json!({"name": "full"})).await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(full["allowed_servers"], serde_json::Value::Null);
    assert_eq!(
        full["permissions"],
        serde_json::json!(["read", "write", "destructive"])
    );
    let identity = crate::pat::verify(&f.state.store, full["token"].as_str().unwrap())
        .await
        .unwrap();
    assert!(identity.agent.is_none());
    // Read-only on all servers is a scope.
    let (_, ro, _) = create(serde_json::json!({"name": "ro", "permissions": ["read"]})).await;
    let identity = crate::pat::verify(&f.state.store, ro["token"].as_str().unwrap())
        .await
        .unwrap();
    let scope = identity.agent.unwrap();
    assert!(scope.servers.is_none());
    assert_eq!(scope.permissions, [Permission::Read]);

    for (body, fragment) in [
        (
            serde_json::json!({"name": "x", "permissions": ["write"]}),
            "Invalid permissions",
        ),
        (
            serde_json::json!({"name": "x", "permissions": ["read", "admin"]}),
            "Invalid permissions",
        ),
        (
            serde_json::json!({"name": "x", "permissions": []}),
            "Invalid permissions",
        ),
        (
            serde_json::json!({"name": "x", "allowed_servers": ["bobs-server"]}),
            "not a server you can use",
        ),
        (
            serde_json::json!({"name": "x", "allowed_servers": []}),
            "at least one server",
        ),
    ] {
        let (s, err, text) = create(body).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{text}");
        assert!(
            err["message"].as_str().unwrap().contains(fragment),
            "{text}"
        );
    }
    // Bob cannot name Alice's personal server.
    let (s, _, _) = f
        .call(
            Method::POST,
            "/api/v1/user/tokens",
            Some(&f.bob),
            Some(serde_json::json!({"name": "x", "allowed_servers": ["notes"]})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    // A scoped token cannot make a broader one; by default it passes its scope on.
    let scoped = (f.alice.0.clone(), secret);
    let (s, _, _) = f
        .call(
            Method::POST,
            "/api/v1/user/tokens",
            Some(&scoped),
            Some(serde_json::json!({"name": "wider", "permissions": ["read", "destructive"]})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _, _) = f
        .call(
            Method::POST,
            "/api/v1/user/tokens",
            Some(&scoped),
            Some(serde_json::json!({"name": "wider", "allowed_servers": ["atlassian"]})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, child, _) = f
        .call(
            Method::POST,
            "/api/v1/user/tokens",
            Some(&scoped),
            Some(serde_json::json!({"name": "child"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(
        child["allowed_servers"],
        serde_json::json!(["GitHub", "notes"])
    );
    assert_eq!(child["permissions"], serde_json::json!(["read", "write"]));
}

#[tokio::test]
async fn admin_routes_are_for_admins_only() {
    let f = fixture().await;
    let target = format!("/api/v1/admin/users/{}/disable", f.bob.0);
    let enable = format!("/api/v1/admin/users/{}/enable", f.bob.0);
    for (method, uri) in [
        (Method::GET, "/api/v1/admin/users"),
        (Method::POST, target.as_str()),
        (Method::POST, enable.as_str()),
        (Method::GET, "/api/v1/admin/sessions"),
        (Method::DELETE, "/api/v1/admin/sessions/x"),
        (Method::GET, "/api/v1/admin/dashboard"),
        (Method::GET, "/api/v1/admin/mcp-sessions"),
        (Method::DELETE, "/api/v1/admin/mcp-sessions/x"),
    ] {
        let (s, _, _) = f.call(method.clone(), uri, Some(&f.alice), None).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{method} {uri}");
        let (s, _, _) = f.call(method.clone(), uri, None, None).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{method} {uri}");
    }
    assert!(f.events.take().is_empty());
}

#[tokio::test]
async fn an_admin_disables_and_enables_a_user() {
    let f = fixture().await;
    let session = f
        .state
        .store
        .create_session(
            &f.bob.0,
            std::time::Duration::from_secs(3600),
            Some("firefox"),
            None,
        )
        .await
        .unwrap();
    // Bob's token works (and is now cached).
    let (s, _, _) = f.call(Method::GET, "/api/v1/me", Some(&f.bob), None).await;
    assert_eq!(s, StatusCode::OK);

    let (s, body, _) = f
        .call(
            Method::POST,
            &format!("/api/v1/admin/users/{}/disable", f.bob.0),
            Some(&f.admin),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body["message"], "User disabled");
    assert_eq!(f.events.take(), [format!("disabled:{}:true", f.bob.0)]);
    // At once: the cached check is gone, the session too.
    let (s, _, _) = f.call(Method::GET, "/api/v1/me", Some(&f.bob), None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(
        f.state
            .store
            .get_session(session.cookie_value.expose_secret())
            .await
            .unwrap()
            .is_none()
    );
    let (_, users, _) = f
        .call(Method::GET, "/api/v1/admin/users", Some(&f.admin), None)
        .await;
    let bob = users["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["id"] == f.bob.0.as_str())
        .unwrap();
    assert_eq!(bob["disabled"], true);

    let (s, body, _) = f
        .call(
            Method::POST,
            &format!("/api/v1/admin/users/{}/enable", f.bob.0),
            Some(&f.admin),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body["message"], "User enabled");
    assert_eq!(f.events.take(), [format!("disabled:{}:false", f.bob.0)]);
    let (s, _, _) = f.call(Method::GET, "/api/v1/me", Some(&f.bob), None).await;
    assert_eq!(s, StatusCode::OK);

    let (s, body, _) = f
        .call(
            Method::POST,
            &format!("/api/v1/admin/users/{}/disable", f.admin.0),
            Some(&f.admin),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(body["message"].as_str().unwrap().contains("yourself"));
    let (s, body, _) = f
        .call(
            Method::POST,
            "/api/v1/admin/users/nobody/disable",
            Some(&f.admin),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(body["message"], "User not found");
    assert!(f.events.take().is_empty());
}

#[tokio::test]
async fn an_admin_lists_and_revokes_sessions_and_reads_the_dashboard() {
    let f = fixture().await;
    let a = f
        .state
        .store
        .create_session(
            &f.alice.0,
            std::time::Duration::from_secs(3600),
            Some("firefox"),
            Some("192.0.2.1"),
        )
        .await
        .unwrap();
    f.state
        .store
        .create_session(&f.bob.0, std::time::Duration::ZERO, None, None)
        .await
        .unwrap();
    let (s, list, text) = f
        .call(Method::GET, "/api/v1/admin/sessions", Some(&f.admin), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(!text.contains(a.cookie_value.expose_secret()));
    let sessions = list["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 2);
    let alices = sessions
        .iter()
        .find(|s| s["user_id"] == f.alice.0.as_str())
        .unwrap();
    assert_eq!(alices["user_email"], "alice@example.test");
    assert_eq!(alices["user_agent"], "firefox");
    assert_eq!(alices["ip"], "192.0.2.1");
    assert_eq!(alices["expired"], false);
    let bobs = sessions
        .iter()
        .find(|s| s["user_id"] == f.bob.0.as_str())
        .unwrap();
    assert_eq!(bobs["expired"], true);

    let (s, dash, text) = f
        .call(Method::GET, "/api/v1/admin/dashboard", Some(&f.admin), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{text}");
    assert_eq!(dash["total_users"], 3);
    assert_eq!(dash["disabled_users"], 0);
    assert_eq!(dash["active_sessions"], 1);
    assert_eq!(dash["tool_calls_24h"], 0);
    assert_eq!(dash["error_rate_24h"], 0.0);
    assert_eq!(dash["mcp_sessions"], 3);
    assert_eq!(dash["upstreams"][0]["name"], "github");
    assert_eq!(dash["recent_users"].as_array().unwrap().len(), 3);

    let uri = format!("/api/v1/admin/sessions/{}", alices["id"].as_str().unwrap());
    let (s, _, _) = f.call(Method::DELETE, &uri, Some(&f.admin), None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, body, _) = f.call(Method::DELETE, &uri, Some(&f.admin), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(body["message"], "Session not found");
    assert!(
        f.state
            .store
            .get_session(a.cookie_value.expose_secret())
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn an_admin_lists_and_ends_mcp_sessions_by_handle() {
    let f = fixture().await;
    let (s, list, text) = f
        .call(
            Method::GET,
            "/api/v1/admin/mcp-sessions",
            Some(&f.admin),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{text}");
    assert_eq!(
        list["replica"],
        serde_json::Value::Null,
        "SQLite: one replica"
    );
    let sessions = list["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 1);
    let one = &sessions[0];
    // Joined with the store: the user's id and stored email, not the token's issuer/subject.
    assert_eq!(one["user_id"], f.alice.0.as_str());
    assert_eq!(one["user_email"], "alice@example.test");
    assert_eq!(one["client_name"], "inspector");
    assert!(one.get("issuer").is_none() && one.get("subject").is_none());

    let handle = "ab".repeat(32);
    let uri = format!("/api/v1/admin/mcp-sessions/{handle}");
    let (s, body, _) = f.call(Method::DELETE, &uri, Some(&f.admin), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body["message"], "MCP session ended");
    assert_eq!(f.events.take(), [format!("end-mcp:{handle}")]);

    // Not open here, and no other replica to tell: 404.
    let other = format!("/api/v1/admin/mcp-sessions/{}", "cd".repeat(32));
    let (s, body, _) = f.call(Method::DELETE, &other, Some(&f.admin), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(body["message"], "MCP session not found");
    f.events.take();

    // A session id (or anything but a handle) is refused before the gateway is asked.
    for bad in [
        "0123456789abcdef0123456789abcdef",
        &"AB".repeat(32),
        &"zz".repeat(32),
    ] {
        let uri = format!("/api/v1/admin/mcp-sessions/{bad}");
        let (s, body, _) = f.call(Method::DELETE, &uri, Some(&f.admin), None).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("64 lowercase hex")
        );
    }
    assert!(f.events.take().is_empty());
}

#[tokio::test]
async fn diagnostics_show_each_server_as_the_caller_sees_it_now() {
    let f = fixture().await;
    let (s, _, text) = f
        .add(
            &f.alice,
            serde_json::json!({"name": "notes", "url": PUBLIC}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{text}");
    let (s, _, text) = f
        .add(
            &f.alice,
            serde_json::json!({"name": "idle", "url": PUBLIC, "enabled": false}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{text}");
    let (s, _, _) = f
        .call(
            Method::POST,
            "/api/v1/user/servers/atlassian/enable",
            Some(&f.alice),
            Some(serde_json::json!({"enabled": false})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    f.events.take();

    let (s, body, text) = f
        .call(
            Method::GET,
            "/api/v1/user/diagnostics",
            Some(&f.alice),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{text}");
    assert_eq!(
        f.events.take(),
        ["diagnostics:https://idp.example.test:alice"],
        "asked the gateway for this caller's view"
    );
    let servers = body["servers"].as_array().unwrap();
    let by_name = |n: &str| servers.iter().find(|s| s["name"] == n).unwrap().clone();
    let github = by_name("GitHub");
    assert_eq!(github["ownership"], "shared");
    assert_eq!(github["state"], "ready");
    assert_eq!(github["connected"], true);
    assert_eq!(github["tool_count"], 12);
    assert_eq!(github["upstream_sessions"], 1);
    // Switched off by alice: not its live state, and no figures.
    let atlassian = by_name("atlassian");
    assert_eq!(atlassian["state"], "switched_off");
    assert_eq!(atlassian["enabled"], false);
    assert_eq!(atlassian["connected"], false);
    assert_eq!(atlassian["error"], serde_json::Value::Null);
    let notes = by_name("notes");
    assert_eq!(notes["ownership"], "personal");
    assert_eq!(
        (notes["state"].as_str(), notes["tool_count"].as_u64()),
        (Some("ready"), Some(4))
    );
    let idle = by_name("idle");
    assert_eq!(
        (idle["state"].as_str(), idle["connected"].as_bool()),
        (Some("disabled"), Some(false))
    );
    assert_eq!(servers.len(), 4);
    assert!(!text.contains("shared-secret"));

    // Bob has no personal servers; the shared ones are live for him too.
    let (_, body, _) = f
        .call(Method::GET, "/api/v1/user/diagnostics", Some(&f.bob), None)
        .await;
    let names: Vec<&str> = body["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["GitHub", "atlassian"]);
    let (s, _, _) = f
        .call(Method::GET, "/api/v1/user/diagnostics", None, None)
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn regenerating_a_token_rotates_it_with_the_same_limits() {
    let f = fixture().await;
    let (s, created, text) = f
        .call(
            Method::POST,
            "/api/v1/user/tokens",
            Some(&f.alice),
            Some(
                serde_json::json!({"name": "ci", "allowed_servers": ["GitHub"],
                "permissions": ["read"], "expires_in": "2h"}),
            ),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{text}");
    let id = created["id"].as_str().unwrap().to_owned();
    let scoped = (
        f.alice.0.clone(),
        created["token"].as_str().unwrap().to_owned(),
    );
    // Used once, so its check is cached: regenerating must drop it.
    let (s, _, _) = f.call(Method::GET, "/api/v1/me", Some(&scoped), None).await;
    assert_eq!(s, StatusCode::OK);

    let uri = format!("/api/v1/user/tokens/{id}/regenerate");
    let (s, _, _) = f.call(Method::POST, &uri, Some(&f.bob), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "bob regenerated alice's token");
    let (s, new, text) = f.call(Method::POST, &uri, Some(&f.alice), None).await;
    assert_eq!(s, StatusCode::CREATED, "{text}");
    assert_eq!(new["replaces"], id.as_str());
    assert_eq!(new["name"], "ci");
    assert_eq!(new["allowed_servers"], serde_json::json!(["GitHub"]));
    assert_eq!(new["permissions"], serde_json::json!(["read"]));
    let new_token = new["token"].as_str().unwrap().to_owned();
    assert_ne!(new_token, scoped.1);
    let (s, _, _) = f.call(Method::GET, "/api/v1/me", Some(&scoped), None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "the old token still works");
    let rotated = (f.alice.0.clone(), new_token);
    let (s, _, _) = f
        .call(Method::GET, "/api/v1/me", Some(&rotated), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, _) = f.call(Method::POST, &uri, Some(&f.alice), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "a revoked token was regenerated");

    // The scoped token may not regenerate alice's full token, only one no broader than itself.
    let (_, listed, _) = f
        .call(Method::GET, "/api/v1/user/tokens", Some(&f.alice), None)
        .await;
    let full_id = listed["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "test")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (s, body, _) = f
        .call(
            Method::POST,
            &format!("/api/v1/user/tokens/{full_id}/regenerate"),
            Some(&rotated),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(body["message"].as_str().unwrap().contains("broader"));
    let (s, again, _) = f
        .call(
            Method::POST,
            &format!(
                "/api/v1/user/tokens/{}/regenerate",
                new["id"].as_str().unwrap()
            ),
            Some(&rotated),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(again["permissions"], serde_json::json!(["read"]));
}

#[tokio::test]
async fn an_admin_restarts_a_shared_server() {
    let f = fixture().await;
    let (s, _, _) = f
        .call(
            Method::POST,
            "/api/v1/admin/servers/GitHub/restart",
            Some(&f.alice),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(
        f.events.take().is_empty(),
        "a non-admin's restart reached the gateway"
    );
    let (s, body, text) = f
        .call(
            Method::POST,
            "/api/v1/admin/servers/GitHub/restart",
            Some(&f.admin),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{text}");
    assert_eq!(
        body,
        serde_json::json!({"server": "GitHub", "action": "restart", "success": true,
            "upstream_sessions_ended": 2})
    );
    assert_eq!(f.events.take(), ["restart:GitHub"]);
    let (s, body, _) = f
        .call(
            Method::POST,
            "/api/v1/admin/servers/nope/restart",
            Some(&f.admin),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(body["message"], "Server \"nope\" not found");
}
