//! Personal access tokens: verification for every front end (with a short in-memory cache) and
//! the REST handlers that create, list and revoke them.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use secrecy::ExposeSecret;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tessera_identity::{AgentScope, Identity, Permission, TokenKind, UserKey};
use tessera_store::{
    PAT_PREFIX, PatRejection, PersonalAccessToken, Role, Store, StoreError, UnixTime,
};

use crate::ApiState;
use crate::caller::{Caller, CallerKind};
use crate::error::ApiError;

/// How long a verified token is reused without asking the database. Revocation through this
/// process takes effect at once ([`forget`]); through another process, within this time.
pub const CACHE_TTL: Duration = Duration::from_secs(30);
const CACHE_MAX: usize = 10_000;
/// `expires_in` when the request names none.
const DEFAULT_EXPIRY: Duration = Duration::from_secs(30 * 24 * 3600);
/// Longest lifetime a token may be given.
const MAX_EXPIRY: Duration = Duration::from_secs(366 * 24 * 3600);

/// The user a personal access token speaks for. Carries no secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserIdentity {
    /// Tessera's user id (`users.id`).
    pub user_id: String,
    /// The identity provider's issuer and subject for this user.
    pub issuer: String,
    pub subject: String,
    /// Lower-cased.
    pub email: Option<String>,
    pub display_name: Option<String>,
    pub role: Role,
    /// The token's id (for audit and revocation), never the token.
    pub pat_id: String,
    /// Unix seconds; `None` = no expiry.
    pub expires_at: Option<UnixTime>,
    /// The token's limits when it is an agent token (some servers, or fewer than all three
    /// permissions); `None` = everything its user may do. The binary copies it into the MCP
    /// `Identity`, where every MCP request is checked against it.
    pub agent: Option<Arc<AgentScope>>,
}

/// The [`AgentScope`] of a stored token, or `None` when it may reach every server with every
/// permission.
pub fn agent_scope(pat: &PersonalAccessToken) -> Option<Arc<AgentScope>> {
    let mut permissions: Vec<Permission> = pat
        .permissions
        .iter()
        .filter_map(|p| Permission::parse(p))
        .collect();
    permissions.sort();
    permissions.dedup();
    if !permissions.contains(&Permission::Read) {
        // Stored tokens always hold read; a row that does not is read-only rather than open.
        permissions.insert(0, Permission::Read);
    }
    if pat.allowed_servers.is_none() && permissions.len() == Permission::ALL.len() {
        return None;
    }
    Some(Arc::new(AgentScope {
        servers: pat.allowed_servers.clone(),
        permissions,
    }))
}

/// Why a token was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum PatError {
    /// Unknown, expired, revoked, or its user is disabled: the caller's fault (401).
    #[error("personal access token rejected: {0}")]
    Rejected(PatRejection),
    /// The database failed (500/503).
    #[error("cannot check the personal access token: {0}")]
    Store(StoreError),
}

struct Cached {
    identity: UserIdentity,
    /// The MCP caller this token proves, built once per cache entry: a cached `/mcp` check is an
    /// `Arc` clone, not a new `Identity` per request.
    mcp: Arc<Identity>,
    until: Instant,
}

static CACHE: LazyLock<Mutex<HashMap<[u8; 32], Cached>>> = LazyLock::new(Default::default);

fn cache_key(token: &str) -> [u8; 32] {
    let mut key = [0u8; 32];
    key.copy_from_slice(&Sha256::digest(token.as_bytes()));
    key
}

fn lock() -> std::sync::MutexGuard<'static, HashMap<[u8; 32], Cached>> {
    CACHE.lock().unwrap_or_else(|p| p.into_inner())
}

/// Checks a `tsr_pat_…` token and returns the user it speaks for.
///
/// Answers from an in-memory cache (keyed by the token's SHA-256, for [`CACHE_TTL`] and never
/// past the token's expiry) so that `/mcp` does not hit the database on every call. Rejections
/// are not cached.
pub async fn verify(store: &Store, token: &str) -> Result<UserIdentity, PatError> {
    verified(store, token, |c| c.identity.clone()).await
}

/// [`verify`] for the MCP front ends: the token's MCP [`Identity`] (its user, the token's
/// [`AgentScope`]), shared by every request of the cache entry.
pub async fn verify_for_mcp(store: &Store, token: &str) -> Result<Arc<Identity>, PatError> {
    verified(store, token, |c| c.mcp.clone()).await
}

async fn verified<T>(
    store: &Store,
    token: &str,
    pick: impl Fn(&Cached) -> T,
) -> Result<T, PatError> {
    if !token.starts_with(PAT_PREFIX) {
        return Err(PatError::Rejected(PatRejection::Unknown));
    }
    let key = cache_key(token);
    let now = Instant::now();
    if let Some(hit) = lock().get(&key).filter(|c| c.until > now) {
        return Ok(pick(hit));
    }
    let verified = store.verify_pat(token).await.map_err(|e| match e {
        StoreError::PatRejected(why) => PatError::Rejected(why),
        other => PatError::Store(other),
    })?;
    let agent = agent_scope(&verified.pat);
    let identity = UserIdentity {
        user_id: verified.user.id,
        issuer: verified.user.issuer,
        subject: verified.user.subject,
        email: verified.user.email,
        display_name: verified.user.display_name,
        role: verified.user.role,
        pat_id: verified.pat.id,
        expires_at: verified.pat.expires_at,
        agent,
    };
    let mut ttl = CACHE_TTL;
    if let Some(at) = identity.expires_at {
        let left = u64::try_from(at - tessera_store::now_unix()).unwrap_or(0);
        ttl = ttl.min(Duration::from_secs(left));
    }
    let entry = Cached {
        mcp: Arc::new(mcp_identity(&identity, token)),
        identity,
        until: now + ttl,
    };
    let out = pick(&entry);
    let mut cache = lock();
    if cache.len() >= CACHE_MAX {
        cache.retain(|_, c| c.until > now);
        if cache.len() >= CACHE_MAX {
            cache.clear();
        }
    }
    cache.insert(key, entry);
    Ok(out)
}

/// The MCP caller a personal access token proves: its user, the token's scope, the token itself
/// (a `SecretString`, never logged).
fn mcp_identity(user: &UserIdentity, token: &str) -> Identity {
    Identity {
        user: UserKey {
            issuer: user.issuer.clone(),
            subject: user.subject.clone(),
        },
        display_name: user
            .display_name
            .clone()
            .or_else(|| user.email.clone())
            .unwrap_or_else(|| user.subject.clone()),
        email: user.email.clone(),
        role: match user.role {
            Role::Admin => tessera_identity::Role::Admin,
            Role::User => tessera_identity::Role::User,
        },
        token_kind: TokenKind::PersonalAccessToken,
        client_id: None,
        scopes: Vec::new(),
        groups: Vec::new(),
        expires_at: user
            .expires_at
            .and_then(|s| u64::try_from(s).ok())
            .map(|s| UNIX_EPOCH + Duration::from_secs(s)),
        token: secrecy::SecretString::from(token.to_owned()),
        agent: user.agent.clone(),
    }
}

/// Drops the cached verification of the token with this id (after revocation).
pub fn forget(pat_id: &str) {
    lock().retain(|_, c| c.identity.pat_id != pat_id);
}

/// Drops every cached verification (changes from other replicas may have been missed).
pub fn forget_all() {
    lock().clear();
}

/// Drops every cached token of this user (after the user is disabled or demoted).
pub fn forget_user(user_id: &str) {
    lock().retain(|_, c| c.identity.user_id != user_id);
}

// ------------------------------------------------------------------------------------ REST

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateRequest {
    name: String,
    /// A duration such as `30d`, `12h`; default 30 days, at most 366 days.
    expires_in: Option<String>,
    /// The servers the token may reach (each one the caller can use); absent = all.
    allowed_servers: Option<Vec<String>>,
    /// A subset of `read`, `write`, `destructive` holding `read`; absent = all three.
    permissions: Option<Vec<String>>,
}

pub(crate) fn rfc3339(at: Option<UnixTime>) -> serde_json::Value {
    match at.and_then(|s| u64::try_from(s).ok()) {
        Some(s) => humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(s))
            .to_string()
            .into(),
        None => serde_json::Value::Null,
    }
}

fn token_json(p: &PersonalAccessToken) -> serde_json::Value {
    serde_json::json!({
        "id": p.id,
        "name": p.name,
        "prefix": p.prefix,
        "created_at": rfc3339(Some(p.created_at)),
        "expires_at": rfc3339(p.expires_at),
        "last_used_at": rfc3339(p.last_used_at),
        "revoked_at": rfc3339(p.revoked_at),
        "revoked": p.revoked_at.is_some(),
        "allowed_servers": p.allowed_servers,
        "permissions": p.permissions,
    })
}

/// `POST /api/v1/user/tokens` → 201 `{id, name, token, prefix, expires_at}`; the token is shown
/// here once and never again.
pub(crate) async fn create(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    body: Result<Json<CreateRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(req) = body
        .map_err(|e| ApiError::bad_request(format!("Invalid request body: {}", e.body_text())))?;
    let name = req.name.trim();
    if name.is_empty() || name.len() > 100 || name.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "Token name is required (1 to 100 characters, no control characters)",
        ));
    }
    let lifetime = match req.expires_in.as_deref() {
        None => DEFAULT_EXPIRY,
        Some(text) => humantime::parse_duration(text.trim()).map_err(|e| {
            ApiError::bad_request(format!(
                "Invalid expires_in {text:?}: {e} (use e.g. 30d or 12h)"
            ))
        })?,
    };
    if lifetime.is_zero() || lifetime > MAX_EXPIRY {
        return Err(ApiError::bad_request(
            "expires_in must be more than 0 and at most 366d",
        ));
    }
    let expires_at = expiry(lifetime, &caller);
    let parent = match &caller.kind {
        CallerKind::PersonalAccessToken { agent, .. } => agent.clone(),
        CallerKind::Session => None,
    };
    let permissions = check_permissions(req.permissions.as_deref(), parent.as_deref())?;
    let allowed = check_servers(&state, &caller, req.allowed_servers, parent.as_deref()).await?;
    let created = state
        .store
        .create_agent_pat(
            &caller.user_id,
            name,
            allowed.as_deref(),
            &permissions,
            Some(expires_at),
        )
        .await
        .map_err(|e| ApiError::internal("Failed to create token", &e))?;
    tracing::info!(user = %caller.user_id, pat = %created.pat.id, "personal access token created");
    Ok(created_response(&created, None))
}

/// When a token made now to live `lifetime` expires. A token cannot outlive the token that
/// made it: a leaked short-lived token must not mint (or regenerate) a long-lived one.
fn expiry(lifetime: Duration, caller: &Caller) -> UnixTime {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let at = i64::try_from(now.saturating_add(lifetime.as_secs())).unwrap_or(i64::MAX);
    match caller.kind {
        CallerKind::PersonalAccessToken {
            expires_at: Some(parent),
            ..
        } => at.min(parent),
        _ => at,
    }
}

/// 201 with a new token: the only answer that ever shows it (`no-store`); `replaces` names the
/// token a regeneration revoked.
fn created_response(created: &tessera_store::NewPat, replaces: Option<&str>) -> Response {
    let mut body = token_json(&created.pat);
    body["token"] = created.token.expose_secret().into();
    if let Some(old) = replaces {
        body["replaces"] = old.into();
    }
    let mut response = (StatusCode::CREATED, Json(body)).into_response();
    response.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    response
}

/// The permissions of a new token: given (a subset of read, write, destructive that holds
/// read) or all three — never more than a scoped parent token's.
fn check_permissions(
    given: Option<&[String]>,
    parent: Option<&AgentScope>,
) -> Result<Vec<&'static str>, ApiError> {
    let invalid = |why: String| ApiError::bad_request(format!("Invalid permissions: {why}"));
    let mut permissions: Vec<Permission> = match given {
        None => match parent {
            Some(p) => p.permissions.clone(),
            None => Permission::ALL.to_vec(),
        },
        Some(names) => names
            .iter()
            .map(|n| {
                Permission::parse(n.trim())
                    .ok_or_else(|| invalid(format!("{n:?} is not one of read, write, destructive")))
            })
            .collect::<Result<_, _>>()?,
    };
    permissions.sort();
    permissions.dedup();
    if !permissions.contains(&Permission::Read) {
        return Err(invalid("they must include \"read\"".into()));
    }
    if let Some(parent) = parent
        && let Some(extra) = permissions.iter().find(|p| !parent.allows(**p))
    {
        return Err(invalid(format!(
            "{:?} is more than the token making this request may do",
            extra.as_str()
        )));
    }
    Ok(permissions.iter().map(|p| p.as_str()).collect())
}

/// The servers a new token may reach: each one the caller can use (a shared server its policy
/// lets the caller in to, or one of the caller's personal servers), or `None` for all — never
/// more than a scoped parent token's.
async fn check_servers(
    state: &ApiState,
    caller: &Caller,
    given: Option<Vec<String>>,
    parent: Option<&AgentScope>,
) -> Result<Option<Vec<String>>, ApiError> {
    let parent_servers = parent.and_then(|p| p.servers.clone());
    let Some(names) = given else {
        return Ok(parent_servers);
    };
    if names.is_empty() {
        return Err(ApiError::bad_request(
            "allowed_servers must name at least one server (leave it out for all servers)",
        ));
    }
    let shared = crate::servers::visible(state, caller).await?;
    let personal = state
        .store
        .list_user_servers(&caller.user_id)
        .await
        .map_err(|e| ApiError::internal("Failed to list servers", &e))?;
    let mut out: Vec<String> = Vec::with_capacity(names.len());
    for name in names {
        let name = name.trim().to_owned();
        let known =
            shared.iter().any(|s| s.name == name) || personal.iter().any(|s| s.name == name);
        if !known {
            return Err(ApiError::bad_request(format!(
                "Invalid allowed_servers: {name:?} is not a server you can use"
            )));
        }
        if let Some(limit) = &parent_servers
            && !limit.contains(&name)
        {
            return Err(ApiError::bad_request(format!(
                "Invalid allowed_servers: {name:?} is beyond the token making this request"
            )));
        }
        if !out.contains(&name) {
            out.push(name);
        }
    }
    Ok(Some(out))
}

/// `POST /api/v1/user/tokens/{id}/regenerate` → 201 with a new token (shown once) of the same
/// name, servers, permissions and lifetime; the old one is revoked in the same transaction
/// (rotating a token that may have leaked, without re-entering its limits). 404 for a token
/// that is not the caller's or is already revoked. A scoped agent token may only regenerate a
/// token no broader than itself, and the new one does not outlive it.
pub(crate) async fn regenerate(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let not_found = || ApiError::new(StatusCode::NOT_FOUND, format!("Token {id:?} not found"));
    let old = state
        .store
        .list_pats(&caller.user_id)
        .await
        .map_err(|e| ApiError::internal("Failed to list tokens", &e))?
        .into_iter()
        .find(|p| p.id == id && p.revoked_at.is_none())
        .ok_or_else(not_found)?;
    if let CallerKind::PersonalAccessToken {
        agent: Some(parent),
        ..
    } = &caller.kind
    {
        let broader_permissions = old
            .permissions
            .iter()
            .any(|p| Permission::parse(p).is_none_or(|p| !parent.allows(p)));
        let broader_servers = match (&parent.servers, &old.allowed_servers) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(limit), Some(servers)) => servers.iter().any(|s| !limit.contains(s)),
        };
        if broader_permissions || broader_servers {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "This token may not regenerate a token broader than itself",
            ));
        }
    }
    let lifetime = old
        .expires_at
        .map(|at| at.saturating_sub(old.created_at))
        .and_then(|secs| u64::try_from(secs).ok())
        .map_or(DEFAULT_EXPIRY, Duration::from_secs)
        .clamp(Duration::from_secs(1), MAX_EXPIRY);
    let expires_at = expiry(lifetime, &caller);
    let (created, old) = match state
        .store
        .regenerate_pat(&caller.user_id, &id, Some(expires_at))
        .await
    {
        Ok(done) => done,
        Err(StoreError::PatNotFound { .. }) => return Err(not_found()),
        Err(e) => return Err(ApiError::internal("Failed to regenerate token", &e)),
    };
    forget(&old.id);
    tracing::info!(user = %caller.user_id, old = %old.id, pat = %created.pat.id, "personal access token regenerated");
    Ok(created_response(&created, Some(&old.id)))
}

/// `GET /api/v1/user/tokens` → `{"tokens": [...]}` without the tokens themselves.
pub(crate) async fn list(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
) -> Result<Json<serde_json::Value>, ApiError> {
    let pats = state
        .store
        .list_pats(&caller.user_id)
        .await
        .map_err(|e| ApiError::internal("Failed to list tokens", &e))?;
    let tokens: Vec<_> = pats.iter().map(token_json).collect();
    Ok(Json(serde_json::json!({ "tokens": tokens })))
}

/// `DELETE /api/v1/user/tokens/{id}`: revokes one of the caller's tokens.
pub(crate) async fn revoke(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    match state.store.revoke_pat(&caller.user_id, &id).await {
        Ok(()) => {
            forget(&id);
            tracing::info!(user = %caller.user_id, pat = %id, "personal access token revoked");
            Ok(Json(serde_json::json!({ "id": id, "revoked": true })))
        }
        Err(StoreError::PatNotFound { .. }) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("Token {id:?} not found"),
        )),
        Err(e) => Err(ApiError::internal("Failed to revoke token", &e)),
    }
}
