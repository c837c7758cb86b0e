//! The user's connect flow for `oauth_connect` upstreams (REFERENCE.md §2.9, with §3 C fixed):
//!
//! - `GET /api/v1/user/credentials/{server}/connect[?elicitation=<id>]` → 302 to the upstream's
//!   authorization URL ([`tessera_broker::Connector::start`]: PKCE, persisted single-use state).
//!   A link made for an MCP URL elicitation names its user: another signed-in user gets 403 (the
//!   MCP specification's phishing rule).
//! - `GET /api/v1/user/credentials/{server}/callback?state&code|error` → completes or denies the
//!   flow for the signed-in user (who must be the user who started it) and shows a small result
//!   page.
//!
//! A browser without a session is sent to `/auth/login?return_to=<this path>` first. The redirect
//! URI comes from the configured public URL (the connector's), never from request headers.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{Html, IntoResponse, Response};
use tessera_broker::{
    BrokerError, BrokeredServer, Connector, Elicitations, Resolver, callback_error_code,
};
use tessera_config::BrokerMode;

use crate::ApiState;
use crate::caller::Caller;
use crate::error::ApiError;

/// What the connect routes need from the broker; handed to [`ApiState::set_broker`] by the
/// binary.
pub struct BrokerRoutes {
    pub connector: Arc<Connector>,
    pub resolver: Resolver,
    pub elicitations: Arc<Elicitations>,
    /// Brokered servers by configured name.
    pub servers: HashMap<String, BrokeredServer>,
}

impl std::fmt::Debug for BrokerRoutes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerRoutes")
            .field("servers", &self.servers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl BrokerRoutes {
    /// Exact name first, then case-insensitive (the reference matches case-insensitively).
    fn server(&self, name: &str) -> Option<&BrokeredServer> {
        let name = name.trim();
        self.servers.get(name).or_else(|| {
            self.servers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v)
        })
    }
}

/// The caller's `X-Request-Id` when it is a plain token (`[A-Za-z0-9_-]{1,256}`), else `fallback`.
fn request_id(headers: &http::HeaderMap, fallback: Option<String>) -> Option<String> {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 256
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        })
        .map(str::to_owned)
        .or(fallback)
}

fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn found(location: &str) -> Response {
    let mut r = (StatusCode::FOUND, "Redirecting\n").into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// 401 for a browser → the sign-in page, back here afterwards.
fn sign_in_first(uri: &Uri, e: ApiError) -> Response {
    if e.status != StatusCode::UNAUTHORIZED {
        return e.into_response();
    }
    let here = uri
        .path_and_query()
        .map_or_else(|| uri.path().to_owned(), |p| p.as_str().to_owned());
    let back: String = url::form_urlencoded::byte_serialize(here.as_bytes()).collect();
    found(&format!("/auth/login?return_to={back}"))
}

/// The broker and the `oauth_connect` server the path names.
fn connect_server<'a>(
    state: &'a ApiState,
    name: &str,
) -> Result<(&'a BrokerRoutes, &'a BrokeredServer), ApiError> {
    let broker = state.broker.get().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("Brokered server {name:?} not found"),
        )
    })?;
    let server = broker.server(name).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("Brokered server {name:?} not found"),
        )
    })?;
    if server.mode() != BrokerMode::OauthConnect {
        return Err(ApiError::bad_request(format!(
            "Server {:?} does not use the OAuth connect flow",
            server.name()
        )));
    }
    Ok((broker, server))
}

/// `GET /api/v1/user/credentials/{server}/connect[?elicitation=<id>]`.
pub(crate) async fn connect(
    State(state): State<Arc<ApiState>>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
    uri: Uri,
    headers: http::HeaderMap,
    caller: Result<Caller, ApiError>,
) -> Response {
    let caller = match caller {
        Ok(c) => c,
        Err(e) => return sign_in_first(&uri, e),
    };
    let rid = request_id(&headers, query_param(query.as_deref(), "elicitation"));
    match start(&state, &name, query.as_deref(), &caller, rid.as_deref()).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn start(
    state: &ApiState,
    name: &str,
    query: Option<&str>,
    caller: &Caller,
    rid: Option<&str>,
) -> Result<Response, ApiError> {
    let (broker, server) = connect_server(state, name)?;
    if let Some(id) = query_param(query, "elicitation") {
        match broker.elicitations.get(&id) {
            None => {
                return Err(ApiError::bad_request(
                    "This connect link has expired; ask your MCP client for a new one",
                ));
            }
            Some((user_id, _)) if user_id != caller.user_id => {
                tracing::warn!(server = %server.name(), "connect link opened by another user than it was made for");
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "this connect link was made for another user",
                ));
            }
            Some((_, for_server)) if for_server != server.name() => {
                return Err(ApiError::bad_request(
                    "This connect link was made for another server",
                ));
            }
            Some(_) => {}
        }
    }
    match broker
        .connector
        .start_traced(&caller.user_id, server, rid)
        .await
    {
        Ok(url) => Ok(found(url.as_str())),
        Err(e) => Err(match e {
            BrokerError::Store("too many pending connect flows") => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "Too many connect flows in progress; finish or wait for one to expire",
            ),
            BrokerError::Store("sealing disabled") => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "Credential broker is not enabled (no sealing key)",
            ),
            BrokerError::Discovery { .. } | BrokerError::Unreachable | BrokerError::Timeout => {
                ApiError::bad_gateway("The upstream authorization server could not be reached")
            }
            other => ApiError::internal("Failed to initiate connect flow", &other),
        }),
    }
}

/// `GET /api/v1/user/credentials/{server}/callback?state&code|error`.
pub(crate) async fn callback(
    State(state): State<Arc<ApiState>>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
    uri: Uri,
    headers: http::HeaderMap,
    caller: Result<Caller, ApiError>,
) -> Response {
    let caller = match caller {
        Ok(c) => c,
        Err(e) => return sign_in_first(&uri, e),
    };
    let rid = request_id(&headers, None);
    match finish(&state, &name, query.as_deref(), &caller, rid.as_deref()).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn finish(
    state: &ApiState,
    name: &str,
    query: Option<&str>,
    caller: &Caller,
    rid: Option<&str>,
) -> Result<Response, ApiError> {
    let (broker, server) = connect_server(state, name)?;
    let flow_state = query_param(query, "state")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::bad_request("Missing state"))?;
    if let Some(error) = query_param(query, "error") {
        let code = callback_error_code(&error);
        if let Err(e) = broker
            .connector
            .deny_traced(&flow_state, code, &caller.user_id, rid)
            .await
        {
            tracing::info!(server = %server.name(), reason = e.reason(), "connect denial for an unusable flow");
        }
        return Ok(result_page(server.name(), Err(code)));
    }
    let code = query_param(query, "code")
        .filter(|c| !c.is_empty())
        .ok_or_else(|| ApiError::bad_request("Missing code or error"))?;
    match broker
        .connector
        .complete_traced(&flow_state, &code, &caller.user_id, rid)
        .await
    {
        Ok(done) => {
            broker
                .resolver
                .forget_user_server(&done.user_id, server.key());
            Ok(result_page(server.name(), Ok(())))
        }
        Err(e) => {
            let label = match e {
                BrokerError::ConnectUserMismatch => "user_mismatch",
                BrokerError::UnknownState => "invalid_state",
                _ => "connect_failed",
            };
            tracing::info!(server = %server.name(), reason = e.reason(), "connect flow failed");
            Ok(result_page(server.name(), Err(label)))
        }
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// The end of a connect flow: a small page (there is no UI at `/` yet). `data-outcome` is
/// `connected` or the allow-listed error code.
fn result_page(server: &str, outcome: Result<(), &str>) -> Response {
    let name = escape(server);
    let (status, title, text, data) = match outcome {
        Ok(()) => (
            StatusCode::OK,
            "Connected",
            format!(
                "Your account for <b>{name}</b> is connected. You can close this window and return to your MCP client."
            ),
            "connected".to_owned(),
        ),
        Err(code) => (
            if code == "user_mismatch" {
                StatusCode::FORBIDDEN
            } else {
                StatusCode::OK
            },
            "Not connected",
            format!(
                "<b>{name}</b> was not connected (<code id=\"error\">{}</code>).",
                escape(code)
            ),
            escape(code),
        ),
    };
    let body = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title></head>\
         <body><main id=\"result\" data-outcome=\"{data}\" data-server=\"{name}\">\
         <h1>{title}</h1><p>{text}</p></main></body></html>\n"
    );
    let mut r = (status, Html(body)).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::body::Body;
    use http::Request;
    use http_body_util::BodyExt as _;
    use secrecy::{ExposeSecret as _, SecretString};
    use tessera_broker::{Requester, TokenExchanger};
    use tessera_config::{AuthBrokerConfig, AuthConfig, ClientAuth, SubjectTokenType};
    use tessera_store::{Keyring, Role, SealingKey, Store, UserLogin};
    use tower::ServiceExt as _;
    use url::Url;
    use wiremock::matchers::{body_string_contains, method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    use super::*;

    const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    struct NoSubjects;
    impl tessera_broker::SubjectTokenSource for NoSubjects {
        fn subject_token<'a>(
            &'a self,
            _: &'a str,
            _: SubjectTokenType,
        ) -> futures::future::BoxFuture<'a, Result<SecretString, tessera_broker::SubjectTokenError>>
        {
            Box::pin(async { Err(tessera_broker::SubjectTokenError::Unavailable) })
        }
    }

    fn broker_config(mode: BrokerMode, as_uri: &str) -> AuthBrokerConfig {
        AuthBrokerConfig {
            mode,
            token_endpoint: Some(format!("{as_uri}/token").parse().unwrap()),
            authorization_endpoint: Some(format!("{as_uri}/authorize").parse().unwrap()),
            resource: None,
            scopes: vec!["repo".into()],
            client_id: Some("tessera".into()),
            client_secret: Some(SecretString::from("connect-secret")),
            header: "Authorization".into(),
            header_format: "Bearer {token}".into(),
            audience: None,
            subject_token_type: SubjectTokenType::AccessToken,
            client_auth: ClientAuth::ClientSecretPost,
            private_key_file: None,
            revocation_endpoint: None,
            issuer: None,
            allowed_users: Vec::new(),
            allowed_emails: Vec::new(),
            allowed_groups: Vec::new(),
        }
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        state: Arc<ApiState>,
        app: axum::Router,
        alice: (String, String),
        bob: (String, String),
        resolver: Resolver,
        server: BrokeredServer,
    }

    async fn signed_in(store: &Store, subject: &str) -> (String, String) {
        let user = store
            .upsert_user(&UserLogin {
                issuer: "https://idp.example.test",
                subject,
                email: None,
                display_name: None,
                role_if_new: Role::User,
            })
            .await
            .unwrap();
        let session = store
            .create_session(&user.id, Duration::from_secs(3600), None, None)
            .await
            .unwrap();
        (user.id, session.cookie_value.expose_secret().to_owned())
    }

    async fn fixture(as_uri: &str) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let base = Url::parse("http://127.0.0.1:9").unwrap();
        let auth = AuthConfig::oidc(
            "http://127.0.0.1:9/idp",
            "tessera",
            base.join("/mcp").unwrap(),
        );
        let key = SealingKey::parse(&SecretString::from(KEY), "test").unwrap();
        let store = Store::open(dir.path())
            .await
            .unwrap()
            .with_keyring(Arc::new(Keyring::new(key, vec![]).unwrap()));
        let state = ApiState::new(&auth, &base, store.clone()).unwrap();
        let alice = signed_in(&store, "alice").await;
        let bob = signed_in(&store, "bob").await;
        let server = BrokeredServer::from_parts(
            "GitHub Enterprise",
            "https://ghe.example.test/mcp",
            broker_config(BrokerMode::OauthConnect, as_uri),
        )
        .unwrap();
        let exchange = BrokeredServer::from_parts(
            "files",
            "https://files.example.test/mcp",
            broker_config(BrokerMode::TokenExchange, as_uri),
        )
        .unwrap();
        let connector = Arc::new(
            Connector::builder(store.clone(), reqwest::Client::new(), base.clone())
                .servers([&server])
                .build(),
        );
        let resolver = Resolver::builder(
            TokenExchanger::new(reqwest::Client::new()),
            Arc::new(tessera_broker::StoreCredentials::new(store.clone())),
            Arc::new(NoSubjects),
        )
        .connector(connector.clone())
        .build();
        let servers = HashMap::from([
            (server.name().to_owned(), server.clone()),
            (exchange.name().to_owned(), exchange),
        ]);
        assert!(state.set_broker(BrokerRoutes {
            connector,
            resolver: resolver.clone(),
            elicitations: Arc::new(Elicitations::default()),
            servers,
        }));
        let app = crate::router(state.clone());
        Fixture {
            _dir: dir,
            state,
            app,
            alice,
            bob,
            resolver,
            server,
        }
    }

    impl Fixture {
        async fn get(
            &self,
            uri: &str,
            who: Option<&(String, String)>,
        ) -> (StatusCode, Option<String>, String) {
            let mut req = Request::get(uri);
            if let Some((_, cookie)) = who {
                req = req.header(
                    header::COOKIE,
                    format!("{}={cookie}", self.state.cookies.session_name()),
                );
            }
            let r = self
                .app
                .clone()
                .oneshot(req.body(Body::empty()).unwrap())
                .await
                .unwrap();
            let status = r.status();
            let location = r
                .headers()
                .get(header::LOCATION)
                .map(|v| v.to_str().unwrap().to_owned());
            let body = r.into_body().collect().await.unwrap().to_bytes();
            (
                status,
                location,
                String::from_utf8_lossy(&body).into_owned(),
            )
        }

        async fn start(&self, who: &(String, String)) -> Url {
            let (status, location, _) = self
                .get(
                    "/api/v1/user/credentials/GitHub%20Enterprise/connect",
                    Some(who),
                )
                .await;
            assert_eq!(status, StatusCode::FOUND);
            Url::parse(&location.unwrap()).unwrap()
        }
    }

    fn param(url: &Url, name: &str) -> String {
        url.query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    }

    #[tokio::test]
    async fn a_browser_without_session_is_sent_to_sign_in_and_back() {
        let f = fixture("http://127.0.0.1:9").await;
        for uri in [
            "/api/v1/user/credentials/GitHub%20Enterprise/connect?elicitation=x",
            "/api/v1/user/credentials/GitHub%20Enterprise/callback?state=s&code=c",
        ] {
            let (status, location, _) = f.get(uri, None).await;
            assert_eq!(status, StatusCode::FOUND, "{uri}");
            let location = location.unwrap();
            let back = location.strip_prefix("/auth/login?return_to=").unwrap();
            let back: String = url::form_urlencoded::parse(format!("x={back}").as_bytes())
                .next()
                .unwrap()
                .1
                .into_owned();
            assert_eq!(back, uri);
        }
    }

    #[tokio::test]
    async fn unknown_server_is_404_and_a_non_connect_server_is_400() {
        let f = fixture("http://127.0.0.1:9").await;
        let (status, _, _) = f
            .get("/api/v1/user/credentials/nope/connect", Some(&f.alice))
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _, body) = f
            .get("/api/v1/user/credentials/files/connect", Some(&f.alice))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(
            body.contains("does not use the OAuth connect flow"),
            "{body}"
        );
    }

    #[tokio::test]
    async fn connect_redirects_to_the_upstream_with_pkce_and_the_configured_redirect_uri() {
        let f = fixture("https://as.example.test").await;
        let url = f.start(&f.alice).await;
        assert_eq!(
            url.origin().ascii_serialization(),
            "https://as.example.test"
        );
        assert_eq!(url.path(), "/authorize");
        assert_eq!(param(&url, "response_type"), "code");
        assert_eq!(param(&url, "client_id"), "tessera");
        assert_eq!(param(&url, "code_challenge_method"), "S256");
        assert_eq!(param(&url, "code_challenge").len(), 43);
        assert!(param(&url, "state").len() >= 22, "128 bits or more");
        assert_eq!(param(&url, "scope"), "repo");
        assert_eq!(
            param(&url, "redirect_uri"),
            "http://127.0.0.1:9/api/v1/user/credentials/GitHub%20Enterprise/callback"
        );
        assert!(!url.as_str().contains("connect-secret"));
    }

    #[tokio::test]
    async fn an_elicitation_link_only_works_for_its_user() {
        let f = fixture("https://as.example.test").await;
        let broker = f.state.broker.get().unwrap();
        let (id, url) = broker
            .elicitations
            .create(&broker.connector, &f.alice.0, &f.server)
            .unwrap();
        let path = Url::parse(&url).unwrap();
        let uri = format!("{}?{}", path.path(), path.query().unwrap());
        assert!(uri.ends_with(&format!("?elicitation={id}")));
        let (status, _, body) = f.get(&uri, Some(&f.bob)).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(body.contains("this connect link was made for another user"));
        let (status, location, _) = f.get(&uri, Some(&f.alice)).await;
        assert_eq!(status, StatusCode::FOUND);
        assert!(
            location
                .unwrap()
                .starts_with("https://as.example.test/authorize?")
        );
        let (status, _, _) = f
            .get(
                "/api/v1/user/credentials/GitHub%20Enterprise/connect?elicitation=unknown",
                Some(&f.alice),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn callback_completes_for_the_starting_user_only_and_refreshes_the_cache() {
        let as_server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/token"))
            .and(body_string_contains("grant_type=authorization_code"))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "access_token": "alice-upstream-token", "token_type": "Bearer",
                "expires_in": 3600, "refresh_token": "alice-refresh"
            })))
            .mount(&as_server)
            .await;
        let f = fixture(&as_server.uri()).await;

        // Bob cannot finish Alice's flow; the flow is used up.
        let url = f.start(&f.alice).await;
        let state = param(&url, "state");
        let cb =
            format!("/api/v1/user/credentials/GitHub%20Enterprise/callback?state={state}&code=abc");
        let (status, _, body) = f.get(&cb, Some(&f.bob)).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(body.contains("data-outcome=\"user_mismatch\""), "{body}");
        let (_, _, body) = f.get(&cb, Some(&f.alice)).await;
        assert!(body.contains("data-outcome=\"invalid_state\""), "{body}");
        assert!(as_server.received_requests().await.unwrap().is_empty());

        // Before connecting: not connected, with Tessera's own connect URL.
        let alice = Requester::new(&f.alice.0);
        match f.resolver.resolve(&alice, &f.server).await {
            Err(BrokerError::NotConnected { connect_url, .. }) => assert_eq!(
                connect_url,
                "http://127.0.0.1:9/api/v1/user/credentials/GitHub%20Enterprise/connect"
            ),
            other => panic!("{other:?}"),
        }

        let url = f.start(&f.alice).await;
        let state = param(&url, "state");
        let (status, _, body) = f
            .get(
                &format!(
                    "/api/v1/user/credentials/GitHub%20Enterprise/callback?state={state}&code=abc"
                ),
                Some(&f.alice),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("data-outcome=\"connected\""), "{body}");
        assert!(!body.contains("alice-upstream-token"));
        let got = f.resolver.resolve(&alice, &f.server).await.unwrap();
        assert_eq!(got.header_value, "Bearer alice-upstream-token");
    }

    #[tokio::test]
    async fn a_denied_consent_shows_the_allow_listed_code_and_uses_up_the_flow() {
        let f = fixture("https://as.example.test").await;
        let url = f.start(&f.alice).await;
        let state = param(&url, "state");
        let (status, _, body) = f
            .get(
                &format!("/api/v1/user/credentials/GitHub%20Enterprise/callback?state={state}&error=access_denied&error_description=%3Cscript%3E"),
                Some(&f.alice),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("data-outcome=\"access_denied\""), "{body}");
        assert!(!body.contains("<script>"));
        let url = f.start(&f.alice).await;
        let state = param(&url, "state");
        let (_, _, body) = f
            .get(
                &format!("/api/v1/user/credentials/GitHub%20Enterprise/callback?state={state}&error=%3Cb%3Eevil"),
                Some(&f.alice),
            )
            .await;
        assert!(
            body.contains("data-outcome=\"authorization_denied\""),
            "{body}"
        );
        let (_, _, body) = f
            .get(
                &format!(
                    "/api/v1/user/credentials/GitHub%20Enterprise/callback?state={state}&code=late"
                ),
                Some(&f.alice),
            )
            .await;
        assert!(body.contains("data-outcome=\"invalid_state\""), "{body}");
    }
}
