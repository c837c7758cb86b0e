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
//! - `GET /api/v1/user/credentials` → `{"credentials": [CredentialStatus…]}` by server name:
//!   every brokered server the caller may use (a server whose allow-lists exclude the caller is
//!   not listed), with `status` `connected` / `expired` / `not_connected` / `unavailable`,
//!   `mode`, `scopes`, `token_type`, `audience`, `obtained_via`, `expires_at` / `updated_at`
//!   (RFC 3339), `refreshable`, and `connect_path` for an `oauth_connect` server that is not
//!   connected or expired. Never a token (nothing is opened to list).
//! - `DELETE /api/v1/user/credentials/{server}` → RFC 7009 revocation at the upstream
//!   ([`Connector::disconnect`]), then the record is deleted and dropped from the resolver's
//!   cache; 200 `{"message", "server", "revoked", "revocation_error"}` (an allow-listed code or
//!   null); 404 when the caller has no credential for it.
//!
//! `{server}` is the server that name means for the caller: their own personal server with an
//! `auth_broker` (found by (caller, name) in the store, so nobody else's), else a configured
//! brokered server ([`server_for`]).
//!
//! A browser without a session is sent to `/auth/login?return_to=<this path>` first. The redirect
//! URI comes from the configured public URL (the connector's), never from request headers.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{Html, IntoResponse, Response};
use tessera_broker::{
    BrokerError, BrokeredServer, ConfigPolicy, Connector, Elicitations, Policy as _, Requester,
    Resolver, callback_error_code,
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

/// The brokered server `name` means for `user_id`: their personal server of that name (its
/// `auth_broker` opened from the store and registered with the connector, so its callback
/// completes even in a process that has not seen it yet), else the configured one.
pub(crate) async fn server_for(
    state: &ApiState,
    broker: &BrokerRoutes,
    user_id: &str,
    name: &str,
) -> Result<Option<BrokeredServer>, ApiError> {
    if let Some(server) = crate::user_servers::personal_brokered(state, user_id, name).await? {
        broker.connector.register(&server);
        return Ok(Some(server));
    }
    Ok(broker.server(name).cloned())
}

/// The broker and the `oauth_connect` server the path names for the caller.
async fn connect_server<'a>(
    state: &'a ApiState,
    caller: &Caller,
    name: &str,
) -> Result<(&'a BrokerRoutes, BrokeredServer), ApiError> {
    let not_found = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("Brokered server {name:?} not found"),
        )
    };
    let broker = state.broker.get().ok_or_else(not_found)?;
    let server = server_for(state, broker, &caller.user_id, name)
        .await?
        .ok_or_else(not_found)?;
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
    let (broker, server) = connect_server(state, caller, name).await?;
    let server = &server;
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
    let (broker, server) = connect_server(state, caller, name).await?;
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

/// The end of a connect flow: a small page for a user who came from their MCP client (they can
/// close it) with a link to the Connections page of the UI, which shows the same result.
/// `data-outcome` is `connected` or the allow-listed error code.
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
    let back = match outcome {
        Ok(()) => format!(
            "/?credential_connected=1&amp;credential_server={}",
            escape(&url_encode(server))
        ),
        Err(code) => format!(
            "/?credential_error={}&amp;credential_server={}",
            escape(&url_encode(code)),
            escape(&url_encode(server))
        ),
    };
    let body = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title></head>\
         <body><main id=\"result\" data-outcome=\"{data}\" data-server=\"{name}\">\
         <h1>{title}</h1><p>{text}</p>\
         <p><a id=\"back\" href=\"{back}\">Back to Tessera</a></p></main></body></html>\n"
    );
    let mut r = (status, Html(body)).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn url_encode(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// The caller as the broker's policy sees them (user id, IdP subject, email).
pub(crate) struct Who {
    user_id: String,
    subject: Option<String>,
    email: Option<String>,
}

impl Who {
    pub(crate) async fn load(state: &ApiState, caller: &Caller) -> Result<Self, ApiError> {
        let user = state
            .store
            .get_user(&caller.user_id)
            .await
            .map_err(|e| ApiError::internal("Failed to read user", &e))?;
        Ok(Who {
            user_id: caller.user_id.clone(),
            subject: user.map(|u| u.subject),
            email: caller.email.clone(),
        })
    }

    fn requester(&self) -> Requester<'_> {
        Requester {
            user_id: &self.user_id,
            email: self.email.as_deref(),
            subject: self.subject.as_deref(),
            ..Requester::default()
        }
    }

    fn allows(&self, server: &BrokeredServer) -> bool {
        ConfigPolicy.allows(&self.requester(), server)
    }

    /// Whether the brokered server `name` lets this user in (true when it is not brokered or
    /// the broker is not wired).
    pub(crate) fn may_use(&self, state: &ApiState, name: &str) -> bool {
        match state.broker.get().and_then(|b| b.servers.get(name)) {
            Some(server) => self.allows(server),
            None => true,
        }
    }
}

/// `GET /api/v1/user/credentials`.
pub(crate) async fn list(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
) -> Result<Response, ApiError> {
    let Some(broker) = state.broker.get() else {
        return Ok(no_store(Json(serde_json::json!({ "credentials": [] }))));
    };
    let who = Who::load(&state, &caller).await?;
    let stored = match state.store.list_credentials(&caller.user_id).await {
        Ok(rows) => Some(
            rows.into_iter()
                .map(|r| (r.server_key.clone(), r))
                .collect::<HashMap<_, _>>(),
        ),
        Err(e) => {
            tracing::warn!(error = %e, "listing credentials failed");
            None
        }
    };
    let now = tessera_store::now_unix();
    let mut servers: Vec<BrokeredServer> = broker
        .servers
        .values()
        .filter(|s| who.allows(s))
        .cloned()
        .collect();
    // The caller's own brokered servers (nobody else's).
    let personal = state
        .store
        .list_user_servers(&caller.user_id)
        .await
        .map_err(|e| ApiError::internal("Failed to list servers", &e))?;
    for row in personal.iter().filter(|s| s.brokered) {
        match crate::user_servers::brokered_of(&state, row).await {
            Ok(Some(server)) => {
                servers.retain(|s| s.name() != server.name());
                servers.push(server);
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(server = %row.name, error = %e.message, "a personal server's auth_broker cannot be opened");
            }
        }
    }
    servers.sort_by(|a, b| a.name().cmp(b.name()));
    let credentials: Vec<serde_json::Value> = servers
        .into_iter()
        .map(|server| {
            let mode = server.mode();
            let mut entry = serde_json::json!({
                "server": server.name(),
                "mode": crate::servers::mode_name(mode),
            });
            let status = match &stored {
                None => "unavailable",
                Some(rows) => match rows.get(server.key()) {
                    None => "not_connected",
                    Some(row) => {
                        let expired = row.expires_at.is_some_and(|at| at <= now);
                        entry["scopes"] = row.scopes.clone().into();
                        entry["token_type"] = row.token_type.clone().into();
                        entry["audience"] = row.audience.clone().into();
                        entry["obtained_via"] = row.source.as_str().into();
                        entry["expires_at"] = crate::pat::rfc3339(row.expires_at);
                        entry["updated_at"] = crate::pat::rfc3339(Some(row.updated_at));
                        entry["refreshable"] = row.has_refresh_token.into();
                        if expired { "expired" } else { "connected" }
                    }
                },
            };
            entry["status"] = status.into();
            if mode == BrokerMode::OauthConnect && matches!(status, "not_connected" | "expired") {
                entry["connect_path"] = format!(
                    "/api/v1/user/credentials/{}/connect",
                    url::form_urlencoded::byte_serialize(server.name().as_bytes())
                        .collect::<String>()
                        .replace('+', "%20")
                )
                .into();
            }
            entry
        })
        .collect();
    Ok(no_store(Json(
        serde_json::json!({ "credentials": credentials }),
    )))
}

fn no_store(body: impl IntoResponse) -> Response {
    let mut r = body.into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// `DELETE /api/v1/user/credentials/{server}`.
pub(crate) async fn disconnect(
    State(state): State<Arc<ApiState>>,
    Path(name): Path<String>,
    headers: http::HeaderMap,
    caller: Caller,
) -> Result<Response, ApiError> {
    let not_found = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("Brokered server {name:?} not found"),
        )
    };
    let broker = state.broker.get().ok_or_else(not_found)?;
    let server = server_for(&state, broker, &caller.user_id, &name)
        .await?
        .ok_or_else(not_found)?;
    let server = &server;
    let who = Who::load(&state, &caller).await?;
    if !who.allows(server) {
        return Err(not_found());
    }
    let rid = request_id(&headers, None);
    let done = broker
        .connector
        .disconnect(&caller.user_id, server, rid.as_deref())
        .await
        .map_err(|e| ApiError::internal("Failed to disconnect credential", &e))?;
    broker
        .resolver
        .forget_user_server(&caller.user_id, server.key());
    if !done.had_credential {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("No credential for {:?}", server.name()),
        ));
    }
    Ok(no_store(Json(serde_json::json!({
        "message": format!("Disconnected credential for {:?}", server.name()),
        "server": server.name(),
        "revoked": done.revoked,
        "revocation_error": done.revocation_error,
    }))))
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
            revocation_endpoint: Some(format!("{as_uri}/revoke").parse().unwrap()),
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
        carol: (String, String),
        resolver: Resolver,
        server: BrokeredServer,
    }

    async fn signed_in(store: &Store, subject: &str) -> (String, String) {
        signed_in_as(store, subject, Role::User).await
    }

    async fn signed_in_as(store: &Store, subject: &str, role: Role) -> (String, String) {
        let email = format!("{subject}@example.test");
        let user = store
            .upsert_user(&UserLogin {
                issuer: "https://idp.example.test",
                subject,
                email: Some(&email),
                display_name: None,
                role_if_new: role,
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
        let carol = signed_in_as(&store, "carol", Role::Admin).await;
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
                .auditor(tessera_broker::Auditor::spawn(store.clone(), 64))
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
        let mut only_carol = broker_config(BrokerMode::OauthConnect, as_uri);
        only_carol.allowed_emails = vec!["carol@example.test".into()];
        let private =
            BrokeredServer::from_parts("private", "https://private.example.test/mcp", only_carol)
                .unwrap();
        let servers = HashMap::from([
            (server.name().to_owned(), server.clone()),
            (exchange.name().to_owned(), exchange),
            (private.name().to_owned(), private),
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
            carol,
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
        assert!(
            body.contains("href=\"/?credential_connected=1&amp;credential_server="),
            "the result page links back to the UI: {body}"
        );
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
    // ---- The REST half of issue 7: listing, disconnect, CSRF, servers, users, activity. ----

    const ALICE_ACCESS: &str = "alice-stored-access-token";
    const ALICE_REFRESH: &str = "alice-stored-refresh-token";

    impl Fixture {
        async fn send(
            &self,
            method: &str,
            uri: &str,
            who: Option<&(String, String)>,
            headers: &[(&str, &str)],
        ) -> (StatusCode, String) {
            let mut req = Request::builder().method(method).uri(uri);
            if let Some((_, cookie)) = who {
                req = req.header(
                    header::COOKIE,
                    format!("{}={cookie}", self.state.cookies.session_name()),
                );
            }
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            let r = self
                .app
                .clone()
                .oneshot(req.body(Body::empty()).unwrap())
                .await
                .unwrap();
            let status = r.status();
            let body = r.into_body().collect().await.unwrap().to_bytes();
            (status, String::from_utf8_lossy(&body).into_owned())
        }

        async fn json(&self, uri: &str, who: &(String, String)) -> serde_json::Value {
            let (status, body) = self.send("GET", uri, Some(who), &[]).await;
            assert_eq!(status, StatusCode::OK, "{uri}: {body}");
            serde_json::from_str(&body).unwrap()
        }

        async fn store_alice(&self, expires_at: Option<i64>) {
            self.state
                .store
                .put_credential(&tessera_store::CredentialRecord {
                    user_id: self.alice.0.clone(),
                    server_key: self.server.key().to_owned(),
                    access_token: SecretString::from(ALICE_ACCESS),
                    refresh_token: Some(SecretString::from(ALICE_REFRESH)),
                    expires_at,
                    scopes: vec!["repo".into()],
                    token_type: "Bearer".into(),
                    source: tessera_store::CredentialSource::Connect,
                    audience: None,
                })
                .await
                .unwrap();
        }
    }

    fn status_of<'a>(list: &'a serde_json::Value, server: &str) -> Option<&'a serde_json::Value> {
        list["credentials"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["server"] == server)
    }

    #[tokio::test]
    async fn credentials_list_statuses_per_user_without_tokens_and_policy_filtered() {
        let f = fixture("https://as.example.test").await;
        let now = tessera_store::now_unix();
        let list = f.json("/api/v1/user/credentials", &f.alice).await;
        let gh = status_of(&list, "GitHub Enterprise").unwrap();
        assert_eq!(gh["status"], "not_connected");
        assert_eq!(gh["mode"], "oauth_connect");
        assert_eq!(
            gh["connect_path"],
            "/api/v1/user/credentials/GitHub%20Enterprise/connect"
        );
        let files = status_of(&list, "files").unwrap();
        assert_eq!(files["mode"], "token_exchange");
        assert!(files.get("connect_path").is_none(), "not a connect server");
        assert!(
            status_of(&list, "private").is_none(),
            "a server whose allow-list excludes alice is not listed"
        );
        let names: Vec<_> = list["credentials"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["server"].as_str().unwrap().to_owned())
            .collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted, "sorted by name");
        let carol = f.json("/api/v1/user/credentials", &f.carol).await;
        assert!(status_of(&carol, "private").is_some());

        f.store_alice(Some(now + 3600)).await;
        let (status, body) = f
            .send("GET", "/api/v1/user/credentials", Some(&f.alice), &[])
            .await;
        assert_eq!(status, StatusCode::OK);
        assert!(!body.contains(ALICE_ACCESS) && !body.contains(ALICE_REFRESH));
        let list: serde_json::Value = serde_json::from_str(&body).unwrap();
        let gh = status_of(&list, "GitHub Enterprise").unwrap();
        assert_eq!(gh["status"], "connected");
        assert_eq!(gh["scopes"], serde_json::json!(["repo"]));
        assert_eq!(gh["obtained_via"], "connect");
        assert_eq!(gh["refreshable"], true);
        assert!(gh["expires_at"].as_str().unwrap().ends_with('Z'));
        assert!(gh.get("connect_path").is_none());

        // Bob sees his own status, not Alice's.
        let bob = f.json("/api/v1/user/credentials", &f.bob).await;
        assert_eq!(
            status_of(&bob, "GitHub Enterprise").unwrap()["status"],
            "not_connected"
        );

        f.store_alice(Some(now - 5)).await;
        let list = f.json("/api/v1/user/credentials", &f.alice).await;
        let gh = status_of(&list, "GitHub Enterprise").unwrap();
        assert_eq!(gh["status"], "expired");
        assert!(gh["connect_path"].is_string());

        let (status, _) = f.send("GET", "/api/v1/user/credentials", None, &[]).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn disconnect_revokes_at_the_upstream_deletes_and_forgets_only_the_callers_credential() {
        let as_server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/revoke"))
            .respond_with(ResponseTemplate::new(200))
            .mount(&as_server)
            .await;
        let f = fixture(&as_server.uri()).await;
        f.store_alice(None).await;
        let uri = "/api/v1/user/credentials/GitHub%20Enterprise";

        // Bob has nothing to delete there; Alice's record stays.
        let (status, _) = f.send("DELETE", uri, Some(&f.bob), &[]).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(as_server.received_requests().await.unwrap().is_empty());
        // A server Alice may not use is as unknown to her as a missing one.
        let (status, _) = f
            .send(
                "DELETE",
                "/api/v1/user/credentials/private",
                Some(&f.alice),
                &[],
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);

        // Cross-origin cookie requests are refused before anything happens.
        for headers in [
            &[("origin", "https://evil.example")][..],
            &[("sec-fetch-site", "cross-site")][..],
            &[("origin", "null")][..],
        ] {
            let (status, body) = f.send("DELETE", uri, Some(&f.alice), headers).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{headers:?}");
            assert!(body.contains("\"status_code\":403"), "{body}");
        }
        assert!(
            f.state
                .store
                .get_credential(&f.alice.0, f.server.key())
                .await
                .unwrap()
                .is_some()
        );

        let (status, body) = f
            .send(
                "DELETE",
                uri,
                Some(&f.alice),
                &[
                    ("origin", "http://127.0.0.1:9"),
                    ("sec-fetch-site", "same-origin"),
                    ("x-request-id", "rq-disconnect"),
                ],
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(!body.contains(ALICE_ACCESS) && !body.contains(ALICE_REFRESH));
        let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(answer["revoked"], true);
        assert_eq!(answer["revocation_error"], serde_json::Value::Null);
        let revokes = as_server.received_requests().await.unwrap();
        assert_eq!(revokes.len(), 2, "refresh token, then access token");
        assert!(
            String::from_utf8_lossy(&revokes[0].body).contains("token_type_hint=refresh_token")
        );
        assert!(
            f.state
                .store
                .get_credential(&f.alice.0, f.server.key())
                .await
                .unwrap()
                .is_none()
        );
        // The resolver asks to connect again.
        let alice = Requester::new(&f.alice.0);
        assert!(matches!(
            f.resolver.resolve(&alice, &f.server).await,
            Err(BrokerError::NotConnected { .. })
        ));
        // The disconnect is in Alice's activity, with the request id.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let list = f.json("/api/v1/activity?type=disconnect", &f.alice).await;
            if let Some(row) = list["activities"].as_array().unwrap().first() {
                assert_eq!(row["outcome"], "success");
                assert_eq!(row["request_id"], "rq-disconnect");
                break;
            }
            assert!(std::time::Instant::now() < deadline, "no disconnect record");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Again: nothing left.
        let (status, _) = f.send("DELETE", uri, Some(&f.alice), &[]).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn a_failed_revocation_is_reported_and_the_record_is_still_gone() {
        let as_server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/revoke"))
            .respond_with(ResponseTemplate::new(503).set_body_string(format!(
                "{{\"error\":\"temporarily_unavailable\",\"echo\":\"{ALICE_ACCESS}\"}}"
            )))
            .mount(&as_server)
            .await;
        let f = fixture(&as_server.uri()).await;
        f.store_alice(None).await;
        let (status, body) = f
            .send(
                "DELETE",
                "/api/v1/user/credentials/GitHub%20Enterprise",
                Some(&f.alice),
                &[],
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(!body.contains(ALICE_ACCESS));
        let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(answer["revoked"], false);
        assert_eq!(answer["revocation_error"], "temporarily_unavailable");
        assert!(
            f.state
                .store
                .get_credential(&f.alice.0, f.server.key())
                .await
                .unwrap()
                .is_none()
        );
    }

    #[tokio::test]
    async fn bearer_callers_are_exempt_from_the_origin_check_and_post_needs_it_too() {
        let as_server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(200))
            .mount(&as_server)
            .await;
        let f = fixture(&as_server.uri()).await;
        f.store_alice(None).await;
        let pat = f
            .state
            .store
            .create_pat(&f.alice.0, "ci", &[] as &[&str], None)
            .await
            .unwrap();
        let bearer = format!("Bearer {}", pat.token.expose_secret());
        let (status, body) = f
            .send(
                "DELETE",
                "/api/v1/user/credentials/GitHub%20Enterprise",
                None,
                &[
                    ("authorization", &bearer),
                    ("origin", "https://evil.example"),
                ],
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(!body.contains(pat.token.expose_secret()));
        // POST with a cookie from another origin (token creation) is refused as well.
        let (status, _) = f
            .send(
                "POST",
                "/api/v1/user/tokens",
                Some(&f.alice),
                &[("origin", "https://evil.example")],
            )
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    }

    #[tokio::test]
    async fn servers_are_listed_redacted_and_policy_filtered() {
        let f = fixture("https://as.example.test").await;
        let cfg = |name: &str, broker: Option<tessera_config::AuthBrokerConfig>| {
            tessera_config::ServerConfig {
                name: name.into(),
                enabled: true,
                transport: tessera_config::Transport::Http {
                    url: format!(
                        "https://{}.example.test/mcp?key=url-secret",
                        name.replace(' ', "-").to_lowercase()
                    )
                    .parse()
                    .unwrap(),
                    protocol: tessera_config::HttpProtocol::Auto,
                    headers: vec![("X-Key".into(), SecretString::from("header-secret"))],
                },
                call_timeout: None,
                init_timeout: None,
                auth_broker: broker,
            }
        };
        let mut private = broker_config(BrokerMode::OauthConnect, "https://as.example.test");
        private.allowed_emails = vec!["carol@example.test".into()];
        f.state.set_servers(crate::servers::ServerView::list(&[
            cfg("plain", None),
            cfg(
                "GitHub Enterprise",
                Some(broker_config(
                    BrokerMode::OauthConnect,
                    "https://as.example.test",
                )),
            ),
            cfg("private", Some(private)),
        ]));
        let (status, body) = f
            .send("GET", "/api/v1/user/servers", Some(&f.alice), &[])
            .await;
        assert_eq!(status, StatusCode::OK);
        for secret in ["url-secret", "header-secret", "connect-secret"] {
            assert!(!body.contains(secret), "{secret}: {body}");
        }
        let list: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(list["personal"].as_array().unwrap().is_empty());
        let names: Vec<_> = list["shared"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(names, ["plain", "GitHub Enterprise"]);
        assert_eq!(list["shared"][1]["brokered"], "oauth_connect");
        assert_eq!(list["shared"][1]["ownership"], "shared");
        assert_eq!(
            list["shared"][0]["header_names"],
            serde_json::json!(["X-Key"])
        );
        let carol = f.json("/api/v1/user/servers", &f.carol).await;
        assert_eq!(carol["shared"].as_array().unwrap().len(), 3);
    }

    #[tokio::test]
    async fn only_admins_list_users() {
        let f = fixture("https://as.example.test").await;
        let (status, body) = f
            .send("GET", "/api/v1/admin/users", Some(&f.alice), &[])
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(body.contains("\"status_code\":403"));
        let users = f.json("/api/v1/admin/users", &f.carol).await;
        let users = users["users"].as_array().unwrap();
        assert_eq!(users.len(), 3);
        let carol = users
            .iter()
            .find(|u| u["id"] == f.carol.0.as_str())
            .unwrap();
        assert_eq!(carol["role"], "admin");
        assert_eq!(carol["email"], "carol@example.test");
        assert_eq!(carol["disabled"], false);
        assert!(carol["created_at"].is_string() && carol["last_login_at"].is_string());
    }

    fn call(
        user: &str,
        ts: i64,
        tool: &str,
        outcome: tessera_store::ActivityOutcome,
    ) -> tessera_store::ActivityRecord {
        tessera_store::ActivityRecord {
            ts,
            user_id: Some(user.to_owned()),
            server: "files".into(),
            tool: Some(tool.into()),
            request_id: Some(format!("rq-{tool}")),
            method: tessera_store::ActivityMethod::Mcp,
            action: tessera_store::ActivityAction::ToolCall,
            outcome,
            reason: None,
            duration_ms: Some(3),
        }
    }

    #[tokio::test]
    async fn activity_is_per_user_for_users_and_everything_for_admins_with_cursor_pages() {
        use tessera_store::ActivityOutcome as O;
        let f = fixture("https://as.example.test").await;
        let now = tessera_store::now_unix();
        for i in 0..5 {
            f.state
                .store
                .record_activity(&call(
                    &f.alice.0,
                    now - 10 + i,
                    &format!("a{i}"),
                    O::Success,
                ))
                .await
                .unwrap();
        }
        f.state
            .store
            .record_activity(&call(&f.bob.0, now, "b0", O::Failure))
            .await
            .unwrap();

        let alice = f.json("/api/v1/activity", &f.alice).await;
        let rows = alice["activities"].as_array().unwrap();
        assert_eq!(rows.len(), 5);
        assert!(rows.iter().all(|r| r["user_id"] == f.alice.0.as_str()));
        assert_eq!(rows[0]["tool"], "a4", "newest first");
        assert_eq!(rows[0]["type"], "tool_call");
        assert_eq!(alice["next_cursor"], serde_json::Value::Null);

        // Bob cannot ask for Alice's records; naming himself is fine.
        let (status, _) = f
            .send(
                "GET",
                &format!("/api/v1/activity?user={}", f.alice.0),
                Some(&f.bob),
                &[],
            )
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let (status, _) = f
            .send(
                "GET",
                &format!("/api/v1/activity/export?user={}", f.alice.0),
                Some(&f.bob),
                &[],
            )
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let bob = f
            .json(&format!("/api/v1/activity?user={}", f.bob.0), &f.bob)
            .await;
        assert_eq!(bob["activities"].as_array().unwrap().len(), 1);

        // The admin sees everyone, filters, and pages with the cursor.
        let all = f.json("/api/v1/activity", &f.carol).await;
        assert_eq!(all["activities"].as_array().unwrap().len(), 6);
        let failures = f.json("/api/v1/activity?outcome=failure", &f.carol).await;
        assert_eq!(failures["activities"][0]["user_id"], f.bob.0.as_str());
        let mut seen = Vec::new();
        let mut uri = format!("/api/v1/activity?user={}&limit=2", f.alice.0);
        loop {
            let page = f.json(&uri, &f.carol).await;
            for r in page["activities"].as_array().unwrap() {
                seen.push(r["tool"].as_str().unwrap().to_owned());
            }
            match page["next_cursor"].as_str() {
                Some(c) => uri = format!("/api/v1/activity?user={}&limit=2&cursor={c}", f.alice.0),
                None => break,
            }
        }
        assert_eq!(seen, ["a4", "a3", "a2", "a1", "a0"]);
        let since = f
            .json(&format!("/api/v1/activity?since={}", now - 7), &f.carol)
            .await;
        assert_eq!(
            since["activities"].as_array().unwrap().len(),
            3,
            "a3, a4 and b0"
        );
        let (status, body) = f
            .send("GET", "/api/v1/activity?type=bogus", Some(&f.carol), &[])
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        let (status, _) = f
            .send("GET", "/api/v1/activity?cursor=%21%21", Some(&f.carol), &[])
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);

        // Export: NDJSON with the same visibility.
        let (status, body) = f
            .send("GET", "/api/v1/activity/export", Some(&f.alice), &[])
            .await;
        assert_eq!(status, StatusCode::OK);
        let lines: Vec<serde_json::Value> = body
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 5);
        let (_, body) = f
            .send(
                "GET",
                "/api/v1/activity/export?limit=600",
                Some(&f.carol),
                &[],
            )
            .await;
        assert_eq!(body.lines().count(), 6);
    }

    #[tokio::test]
    async fn the_stream_sends_only_new_visible_records() {
        use tessera_store::ActivityOutcome as O;
        let f = fixture("https://as.example.test").await;
        let now = tessera_store::now_unix();
        f.state
            .store
            .record_activity(&call(&f.alice.0, now, "before", O::Success))
            .await
            .unwrap();
        let req = Request::get("/api/v1/activity/stream")
            .header(
                header::COOKIE,
                format!("{}={}", f.state.cookies.session_name(), f.alice.1),
            )
            .body(Body::empty())
            .unwrap();
        let r = f.app.clone().oneshot(req).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[header::CONTENT_TYPE], "text/event-stream");
        let mut body = r.into_body();
        f.state
            .store
            .record_activity(&call(&f.bob.0, now, "bobs", O::Success))
            .await
            .unwrap();
        f.state
            .store
            .record_activity(&call(&f.alice.0, now, "after", O::Success))
            .await
            .unwrap();
        let mut text = String::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !text.contains("\"after\"") {
            assert!(std::time::Instant::now() < deadline, "no event: {text}");
            let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            if let Ok(data) = frame.into_data() {
                text.push_str(&String::from_utf8_lossy(&data));
            }
        }
        assert!(text.contains("event: activity"), "{text}");
        assert!(!text.contains("\"before\""), "only new records");
        assert!(!text.contains("bobs"), "only the caller's records");

        // Shutdown ends the stream (graceful shutdown would otherwise wait for it).
        f.state.close_streams();
        let end = tokio::time::timeout(Duration::from_secs(5), async {
            while let Some(frame) = body.frame().await {
                frame.unwrap();
            }
        })
        .await;
        assert!(end.is_ok(), "the stream did not end after close_streams");
    }

    #[tokio::test]
    async fn the_purge_applies_activity_retention() {
        use tessera_store::ActivityOutcome as O;
        let f = fixture("https://as.example.test").await;
        let now = tessera_store::now_unix();
        for (i, age) in [0, 1, 2, 40 * 86_400].into_iter().enumerate() {
            f.state
                .store
                .record_activity(&call(&f.alice.0, now - age, &format!("t{i}"), O::Success))
                .await
                .unwrap();
        }
        assert_eq!(
            crate::activity::purge(&f.state).await,
            1,
            "30 days by default"
        );
        f.state.set_activity_retention(crate::activity::Retention {
            max_age_days: 0,
            max_records: 2,
        });
        crate::purge_once(&f.state).await;
        let left = f.json("/api/v1/activity", &f.alice).await;
        let tools: Vec<_> = left["activities"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["tool"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(tools, ["t0", "t1"]);
    }
}
