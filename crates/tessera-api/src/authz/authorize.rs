//! `GET /oauth/authorize` and the consent decision `POST /oauth/authorize/decision`.
//!
//! Order of checks (RFC 6749 §4.1.2.1): the client and its redirect URI first — a problem with
//! either is shown on a page, never redirected (that would make Tessera an open redirector);
//! every later problem goes back to the redirect URI as `error=…` with `state` and `iss`
//! (RFC 9207). Then the user: not signed in → Tessera's own sign-in at the provider, which
//! returns here. Then consent: a client the user approved before (for these scopes) gets its
//! code at once; otherwise a consent page, whose answer must come from the same browser
//! session (session cookie + a one-time CSRF value bound to the pending request) and from
//! Tessera's own page (`Origin` / `Sec-Fetch-Site`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};
use tessera_store::{Keyring, UnixTime, now_unix};

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use secrecy::ExposeSecret as _;
use subtle::ConstantTimeEq as _;
use tessera_store::{ActivityAction, ActivityOutcome, CodeGrant, User};
use url::Url;

use super::clients::ClientError;
use super::{AuthorizationServer, page};
use crate::ApiState;
use crate::cookies::CookiePolicy;
use crate::sealed_state;
use crate::subject_token::{SubjectKind, SubjectTokenError};

/// How long a consent page may be answered.
pub(crate) const CONSENT_TTL: Duration = Duration::from_secs(600);
/// At most this many consent pages open at once.
const MAX_PENDING: usize = 10_000;

/// One authorization request, checked.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct AuthorizationRequest {
    pub(crate) client_id: String,
    pub(crate) client_name: String,
    pub(crate) redirect_uri: String,
    pub(crate) state: Option<String>,
    pub(crate) code_challenge: String,
    pub(crate) scopes: Vec<String>,
}

struct PendingAuthorization {
    csrf: String,
    user_id: String,
    request: AuthorizationRequest,
    created: Instant,
}

/// A consent page's state as sealed into its form.
#[derive(Serialize, Deserialize)]
struct SealedAuthorization {
    id: String,
    csrf: String,
    user_id: String,
    request: AuthorizationRequest,
    created: UnixTime,
}

const PURPOSE: &str = "pending-consent";

/// Consent pages shown and not yet answered. With a keyring the page's state is sealed into its
/// form (`request`), so the answer may reach any replica; single use is kept per replica by the
/// ids answered, and across replicas the answer is harmless to repeat (the same user, the same
/// browser session, the same request). Without a keyring it stays in this process's memory.
pub(crate) struct PendingAuthorizations {
    map: Mutex<HashMap<String, PendingAuthorization>>,
    keyring: Option<Arc<Keyring>>,
    answered: sealed_state::Spent,
}

impl PendingAuthorizations {
    pub(crate) fn new(keyring: Option<Arc<Keyring>>) -> Self {
        PendingAuthorizations {
            map: Mutex::new(HashMap::new()),
            keyring,
            answered: sealed_state::Spent::new(CONSENT_TTL),
        }
    }

    /// Records a consent page; returns the value of its form's `request` field.
    fn start(&self, pending: PendingAuthorization) -> Option<String> {
        let id = random_id();
        if let Some(keyring) = &self.keyring {
            let sealed = SealedAuthorization {
                id,
                csrf: pending.csrf,
                user_id: pending.user_id,
                request: pending.request,
                created: now_unix(),
            };
            return sealed_state::seal(keyring, PURPOSE, &sealed);
        }
        self.insert(id.clone(), pending).then_some(id)
    }

    /// The consent page a form's `request` names or holds, once.
    fn finish(&self, request: &str) -> Option<PendingAuthorization> {
        if !sealed_state::is_sealed(request) {
            return self.take(request);
        }
        let s: SealedAuthorization = sealed_state::open(self.keyring.as_ref()?, PURPOSE, request)?;
        let age = sealed_state::age_within(s.created, CONSENT_TTL)?;
        if !self.answered.first_use(s.id) {
            return None;
        }
        Some(PendingAuthorization {
            csrf: s.csrf,
            user_id: s.user_id,
            request: s.request,
            created: Instant::now() - age,
        })
    }

    fn insert(&self, id: String, pending: PendingAuthorization) -> bool {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_PENDING {
            map.retain(|_, p| p.created.elapsed() < CONSENT_TTL);
            if map.len() >= MAX_PENDING {
                return false;
            }
        }
        map.insert(id, pending);
        true
    }

    fn take(&self, id: &str) -> Option<PendingAuthorization> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(id).filter(|p| p.created.elapsed() < CONSENT_TTL)
    }

    pub(crate) fn purge_expired(&self) -> usize {
        self.answered.purge();
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let before = map.len();
        map.retain(|_, p| p.created.elapsed() < CONSENT_TTL);
        before - map.len()
    }
}

fn random_id() -> String {
    openidconnect::CsrfToken::new_random().secret().clone()
}

/// A 302 to `location`, not cached.
fn redirect(location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(value) => {
            let mut r = StatusCode::FOUND.into_response();
            r.headers_mut().insert(header::LOCATION, value);
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        Err(_) => page::error(StatusCode::BAD_REQUEST, "the redirect URI is not usable"),
    }
}

/// The redirect URI with `params`, `state` and `iss` added to its query.
fn answer(
    server: &AuthorizationServer,
    redirect_uri: &str,
    state: Option<&str>,
    params: &[(&str, &str)],
) -> Response {
    let Ok(mut url) = Url::parse(redirect_uri) else {
        return page::error(StatusCode::BAD_REQUEST, "the redirect URI is not usable");
    };
    {
        let mut q = url.query_pairs_mut();
        for (k, v) in params {
            q.append_pair(k, v);
        }
        if let Some(state) = state {
            q.append_pair("state", state);
        }
        q.append_pair("iss", &server.issuer);
    }
    redirect(url.as_str())
}

fn error_answer(
    server: &AuthorizationServer,
    redirect_uri: &str,
    state: Option<&str>,
    code: &str,
    description: &str,
) -> Response {
    answer(
        server,
        redirect_uri,
        state,
        &[("error", code), ("error_description", description)],
    )
}

/// The signed-in, enabled user of this browser, if any.
pub(crate) async fn session_user(state: &ApiState, headers: &HeaderMap) -> Option<User> {
    let cookie = CookiePolicy::get(headers, state.cookies.session_name())?;
    let session = state.store.get_session(cookie).await.ok()??;
    state
        .store
        .get_user(&session.user_id)
        .await
        .ok()?
        .filter(|u| !u.disabled)
}

/// A PKCE code challenge: 43–128 characters of the unreserved set (RFC 7636 §4.2).
fn valid_challenge(c: &str) -> bool {
    (43..=128).contains(&c.len())
        && c.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// The granted scopes: the requested ones Tessera grants (all of them when none are asked).
fn granted_scopes(server: &AuthorizationServer, requested: Option<&str>) -> Vec<String> {
    match requested.map(str::split_whitespace) {
        None => server.scopes.clone(),
        Some(words) => {
            let asked: Vec<&str> = words.collect();
            if asked.is_empty() {
                return server.scopes.clone();
            }
            server
                .scopes
                .iter()
                .filter(|s| asked.contains(&s.as_str()))
                .cloned()
                .collect()
        }
    }
}

/// Whether a `resource` parameter names Tessera (`/mcp`), ignoring a trailing slash.
pub(crate) fn is_our_resource(server: &AuthorizationServer, resource: &str) -> bool {
    resource.trim_end_matches('/') == server.resource.trim_end_matches('/')
}

/// `GET /oauth/authorize`.
pub(crate) async fn authorize(
    State(state): State<Arc<ApiState>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let Some(server) = &state.authz else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let query = query.unwrap_or_default();
    let mut params: HashMap<String, String> = HashMap::new();
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        if params.insert(k.to_string(), v.into_owned()).is_some() {
            return page::error(
                StatusCode::BAD_REQUEST,
                &format!("the parameter {k:?} is given more than once"),
            );
        }
    }
    let get = |k: &str| params.get(k).map(String::as_str).filter(|v| !v.is_empty());

    // 1. The client and its redirect URI: problems are shown, never redirected.
    let Some(client_id) = get("client_id") else {
        return page::error(StatusCode::BAD_REQUEST, "client_id is missing");
    };
    let client = match server.clients.resolve(&state.store, client_id).await {
        Ok(client) => client,
        Err(ClientError::Store(e)) => {
            tracing::error!(error = %e, "reading an OAuth client failed");
            return page::error(StatusCode::INTERNAL_SERVER_ERROR, "storage error");
        }
        Err(e) => {
            tracing::info!(reason = %e, "authorization request refused: client");
            return page::error(StatusCode::BAD_REQUEST, &e.to_string());
        }
    };
    let redirect_uri = match get("redirect_uri") {
        Some(uri) if client.redirect_uris.iter().any(|r| r == uri) => uri.to_owned(),
        Some(_) => {
            return page::error(
                StatusCode::BAD_REQUEST,
                "redirect_uri is not registered for this client (it must match a registered URI exactly)",
            );
        }
        None if client.redirect_uris.len() == 1 => client.redirect_uris[0].clone(),
        None => {
            return page::error(
                StatusCode::BAD_REQUEST,
                "redirect_uri is required: the client registered more than one",
            );
        }
    };

    // 2. The rest of the request: problems go back to the client.
    let client_state = get("state");
    let fail = |code: &str, description: &str| {
        error_answer(server, &redirect_uri, client_state, code, description)
    };
    match get("response_type") {
        Some("code") => {}
        None => return fail("invalid_request", "response_type is missing"),
        Some(_) => {
            return fail(
                "unsupported_response_type",
                "only response_type=code is supported",
            );
        }
    }
    match (get("code_challenge"), get("code_challenge_method")) {
        (Some(c), Some("S256")) if valid_challenge(c) => {}
        (Some(_), Some("S256")) => return fail("invalid_request", "code_challenge is malformed"),
        _ => {
            return fail(
                "invalid_request",
                "PKCE is required: code_challenge with code_challenge_method=S256",
            );
        }
    }
    if let Some(resource) = get("resource")
        && !is_our_resource(server, resource)
    {
        return fail(
            "invalid_target",
            "this server issues tokens only for its own resource (its /mcp URL)",
        );
    }
    let scopes = granted_scopes(server, get("scope"));
    if scopes.is_empty() {
        return fail("invalid_scope", "none of the requested scopes is offered");
    }
    let request = AuthorizationRequest {
        client_id: client.client_id.clone(),
        client_name: client.name.clone(),
        redirect_uri: redirect_uri.clone(),
        state: client_state.map(str::to_owned),
        code_challenge: get("code_challenge").unwrap_or_default().to_owned(),
        scopes,
    };

    // 3. The user: sign in at the provider first, then come back here. A Tessera session
    //    whose provider sign-in can no longer be renewed counts as none: the tokens issued
    //    now would be refused at once (and the client would loop between here and /token).
    let sign_in = || {
        let back = format!("/oauth/authorize?{query}");
        let target: String = url::form_urlencoded::byte_serialize(back.as_bytes()).collect();
        redirect(&format!("/auth/login?return_to={target}"))
    };
    let Some(user) = session_user(&state, &headers).await else {
        return sign_in();
    };
    if let Err(SubjectTokenError::ReauthRequired) = state
        .subject_tokens
        .current(&user.id, SubjectKind::AccessToken)
        .await
    {
        tracing::info!(user = %user.id, "authorization: the provider sign-in has ended; signing in again");
        return sign_in();
    }

    // 4. Consent given before for these scopes: no page.
    match state
        .store
        .oauth_consent(&user.id, &request.client_id)
        .await
    {
        Ok(Some(approved)) if request.scopes.iter().all(|s| approved.contains(s)) => {
            return issue_code(&state, server, &user, &request).await;
        }
        Ok(_) => {}
        Err(e) => {
            tracing::error!(error = %e, "reading consent failed");
            return page::error(StatusCode::INTERNAL_SERVER_ERROR, "storage error");
        }
    }
    let csrf = random_id();
    let who = user
        .email
        .clone()
        .or_else(|| user.display_name.clone())
        .unwrap_or_else(|| user.subject.clone());
    let pending = PendingAuthorization {
        csrf: csrf.clone(),
        user_id: user.id.clone(),
        request: request.clone(),
        created: Instant::now(),
    };
    let Some(request_id) = server.pending.start(pending) else {
        return page::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many authorizations in progress; try again in a few minutes",
        );
    };
    page::consent(&page::Consent {
        client_name: &request.client_name,
        client_id: &request.client_id,
        redirect_uri: &request.redirect_uri,
        scopes: &request.scopes,
        user: &who,
        request_id: &request_id,
        csrf: &csrf,
    })
}

/// Issues a code for `request` and sends the browser back to the client with it.
async fn issue_code(
    state: &ApiState,
    server: &AuthorizationServer,
    user: &User,
    request: &AuthorizationRequest,
) -> Response {
    let grant = CodeGrant {
        client_id: request.client_id.clone(),
        user_id: user.id.clone(),
        redirect_uri: request.redirect_uri.clone(),
        code_challenge: request.code_challenge.clone(),
        scopes: request.scopes.clone(),
        resource: server.resource.clone(),
        family_id: random_id(),
    };
    let ttl = AuthorizationServer::secs(server.config.code_ttl);
    match state.store.create_oauth_code(&grant, ttl).await {
        Ok(code) => {
            tracing::info!(user = %user.id, client_id = %request.client_id, "authorization code issued");
            answer(
                server,
                &request.redirect_uri,
                request.state.as_deref(),
                &[("code", code.expose_secret())],
            )
        }
        Err(e) => {
            tracing::error!(error = %e, "storing an authorization code failed");
            error_answer(
                server,
                &request.redirect_uri,
                request.state.as_deref(),
                "server_error",
                "storage error",
            )
        }
    }
}

/// The consent form's fields.
#[derive(Default)]
struct Decision {
    request: String,
    csrf: String,
    decision: String,
}

impl Decision {
    fn parse(body: &[u8]) -> Self {
        let mut d = Decision::default();
        for (k, v) in url::form_urlencoded::parse(body) {
            match &*k {
                "request" => d.request = v.into_owned(),
                "csrf" => d.csrf = v.into_owned(),
                "decision" => d.decision = v.into_owned(),
                _ => {}
            }
        }
        d
    }
}

/// `POST /oauth/authorize/decision`: the consent page's answer.
pub(crate) async fn decision(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form = Decision::parse(&body);
    let Some(server) = &state.authz else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if !crate::csrf::allows(&Method::POST, &headers, &state.origin) {
        return page::error(
            StatusCode::FORBIDDEN,
            "cross-site request refused: answer the consent page on Tessera itself",
        );
    }
    let Some(user) = session_user(&state, &headers).await else {
        return page::error(
            StatusCode::UNAUTHORIZED,
            "your Tessera session has ended; start again from the application",
        );
    };
    let Some(pending) = server.pending.finish(&form.request) else {
        return page::error(
            StatusCode::BAD_REQUEST,
            "this authorization request has expired or was already answered; start again from the application",
        );
    };
    let csrf_ok: bool = pending.csrf.as_bytes().ct_eq(form.csrf.as_bytes()).into();
    if !csrf_ok || pending.user_id != user.id {
        tracing::warn!(user = %user.id, "consent answer refused: not the page shown to this user");
        return page::error(
            StatusCode::FORBIDDEN,
            "this consent page was not shown to you in this browser",
        );
    }
    let request = pending.request;
    match form.decision.as_str() {
        "approve" => {
            if let Err(e) = state
                .store
                .record_oauth_consent(&user.id, &request.client_id, &request.scopes)
                .await
            {
                tracing::error!(error = %e, "recording consent failed");
                return page::error(StatusCode::INTERNAL_SERVER_ERROR, "storage error");
            }
            tracing::info!(user = %user.id, client_id = %request.client_id, "client approved");
            super::audit(
                &state,
                Some(&user.id),
                &request.client_id,
                ActivityAction::ClientApprove,
                ActivityOutcome::Success,
                None,
            );
            issue_code(&state, server, &user, &request).await
        }
        _ => {
            tracing::info!(user = %user.id, client_id = %request.client_id, "client denied");
            super::audit(
                &state,
                Some(&user.id),
                &request.client_id,
                ActivityAction::ClientDeny,
                ActivityOutcome::Denied,
                Some("access_denied"),
            );
            error_answer(
                server,
                &request.redirect_uri,
                request.state.as_deref(),
                "access_denied",
                "the user denied the request",
            )
        }
    }
}
