//! Admin-only routes (403 for everyone else, 401 without a caller):
//!
//! - `GET /api/v1/admin/users`
//! - `POST /api/v1/admin/users/{id}/disable`, `…/enable`: disabling ends the user's browser
//!   sessions (store), drops this replica's cached checks of their tokens (PATs and the
//!   authorization server's access tokens, so the next request asks the store, which refuses a
//!   disabled user) and tells the gateway ([`crate::UserEvents::disabled_changed`]), which ends
//!   their MCP sessions.
//! - `GET /api/v1/admin/sessions`, `DELETE /api/v1/admin/sessions/{id}`: every user's browser
//!   sessions; `id` is the stored id (the cookie's SHA-256), never a cookie.
//! - `GET /api/v1/admin/mcp-sessions`, `DELETE /api/v1/admin/mcp-sessions/{handle}`: the live MCP
//!   client sessions — the answering replica's as they are now, every other replica's as it last
//!   reported them ([`crate::replicas`], at most a few seconds old) — and ending one (on every
//!   replica). A session is named by its handle, the SHA-256 of its id: the id is what a client
//!   presents and is never shown.
//! - `POST /api/v1/admin/servers/{name}/restart`: a shared upstream server reconnected (its
//!   discovery session and every client's upstream session to it), on every replica.
//! - `GET /api/v1/admin/dashboard`: figures from the store (last 24 hours) and the gateway (every
//!   replica's, the others' as last reported).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use tessera_store::{Role, StoreError, now_unix};

use crate::ApiState;
use crate::caller::Caller;
use crate::error::ApiError;
use crate::pat::rfc3339;

/// 403 unless the caller is an admin.
pub(crate) fn require_admin(caller: &Caller) -> Result<(), ApiError> {
    if caller.role == Role::Admin {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "This requires the admin role",
        ))
    }
}

/// `GET /api/v1/admin/users` → `{"users": [{id, email, display_name, role, disabled,
/// created_at, last_login_at}…]}`, oldest first.
pub(crate) async fn users(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
) -> Result<Json<serde_json::Value>, ApiError> {
    require_admin(&caller)?;
    let users = state
        .store
        .list_users()
        .await
        .map_err(|e| ApiError::internal("Failed to list users", &e))?;
    let users: Vec<serde_json::Value> = users
        .iter()
        .map(|u| {
            serde_json::json!({
                "id": u.id,
                "email": u.email,
                "display_name": u.display_name,
                "role": u.role.as_str(),
                "disabled": u.disabled,
                "created_at": rfc3339(Some(u.created_at)),
                "last_login_at": rfc3339(u.last_login_at),
            })
        })
        .collect();
    Ok(Json(serde_json::json!({ "users": users })))
}

/// `POST /api/v1/admin/users/{id}/disable` → `{"message": "User disabled"}`.
pub(crate) async fn disable(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    require_admin(&caller)?;
    if id == caller.user_id {
        return Err(ApiError::bad_request(
            "You cannot disable yourself; ask another admin",
        ));
    }
    set_disabled(&state, &caller, &id, true).await?;
    Ok(Json(serde_json::json!({ "message": "User disabled" })))
}

/// `POST /api/v1/admin/users/{id}/enable` → `{"message": "User enabled"}` (the sessions that
/// disabling ended stay ended).
pub(crate) async fn enable(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    require_admin(&caller)?;
    set_disabled(&state, &caller, &id, false).await?;
    Ok(Json(serde_json::json!({ "message": "User enabled" })))
}

async fn set_disabled(
    state: &ApiState,
    caller: &Caller,
    id: &str,
    disabled: bool,
) -> Result<(), ApiError> {
    match state.store.set_disabled(id, disabled).await {
        Ok(()) => {}
        Err(StoreError::UserNotFound(_)) => {
            return Err(ApiError::new(StatusCode::NOT_FOUND, "User not found"));
        }
        Err(e) => return Err(ApiError::internal("Failed to update the user", &e)),
    }
    crate::pat::forget_user(id);
    crate::authz::verify::forget_user(state, id);
    tracing::info!(admin = %caller.user_id, user = %id, disabled, "user disabled flag changed");
    state.events().disabled_changed(id, disabled).await;
    Ok(())
}

/// `GET /api/v1/admin/sessions` → `{"sessions": [{id, user_id, user_email, created_at,
/// expires_at, user_agent, ip, expired}…]}`, newest first.
pub(crate) async fn sessions(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
) -> Result<Json<serde_json::Value>, ApiError> {
    require_admin(&caller)?;
    let now = now_unix();
    let sessions: Vec<serde_json::Value> = state
        .store
        .list_all_sessions()
        .await
        .map_err(|e| ApiError::internal("Failed to list sessions", &e))?
        .iter()
        .map(|s| {
            serde_json::json!({
                "id": s.id,
                "user_id": s.user_id,
                "user_email": s.user_email,
                "created_at": rfc3339(Some(s.created_at)),
                "expires_at": rfc3339(Some(s.expires_at)),
                "user_agent": s.user_agent,
                "ip": s.ip,
                "expired": now >= s.expires_at,
            })
        })
        .collect();
    Ok(Json(serde_json::json!({ "sessions": sessions })))
}

/// `DELETE /api/v1/admin/sessions/{id}` → `{"message": "Session revoked"}`; 404 for none.
pub(crate) async fn revoke_session(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    require_admin(&caller)?;
    let deleted = state
        .store
        .delete_session_by_id(&id)
        .await
        .map_err(|e| ApiError::internal("Failed to revoke the session", &e))?;
    if !deleted {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "Session not found"));
    }
    tracing::info!(admin = %caller.user_id, "browser session revoked by an admin");
    Ok(Json(serde_json::json!({ "message": "Session revoked" })))
}

/// `GET /api/v1/admin/mcp-sessions` → `{"replica": id or null, "replicas": [{replica,
/// reported_at, sessions}…], "sessions": [{handle, replica, user_id, user_email, display_name,
/// via, agent, client_id, client_name, client_version, protocol_version, front_end, routing,
/// opened_at, last_active_at, upstreams, calls_in_flight}…]}`: this replica's sessions as they
/// are and the other replicas' as last reported (several replicas on PostgreSQL), most recently
/// active first. `user_id` is the store's id of the session's user (`null` for an anonymous
/// session or a user not in the store).
pub(crate) async fn mcp_sessions(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
) -> Result<Json<serde_json::Value>, ApiError> {
    require_admin(&caller)?;
    let me = state.store.replica_id();
    let mut live = state.events().mcp_sessions();
    for row in &mut live {
        if let Some(o) = row.as_object_mut() {
            o.insert("replica".into(), me.into());
        }
    }
    let mut replicas = vec![serde_json::json!({
        "replica": me,
        "reported_at": rfc3339(Some(now_unix())),
        "sessions": live.len(),
    })];
    let others = crate::replicas::others(&state)
        .await
        .map_err(|e| ApiError::internal("Failed to read the other replicas' sessions", &e))?;
    for other in others {
        replicas.push(serde_json::json!({
            "replica": other.replica,
            "reported_at": rfc3339(Some(other.reported_at)),
            "sessions": other.sessions.len(),
        }));
        live.extend(other.sessions);
    }
    // Most recently active first, across replicas (RFC 3339 in UTC sorts as text).
    live.sort_by(|a, b| {
        let at = |v: &serde_json::Value| v["last_active_at"].as_str().unwrap_or("").to_owned();
        at(b).cmp(&at(a))
    });
    let users = state
        .store
        .list_users()
        .await
        .map_err(|e| ApiError::internal("Failed to list users", &e))?;
    let by_subject: std::collections::HashMap<(&str, &str), &tessera_store::User> = users
        .iter()
        .map(|u| ((u.issuer.as_str(), u.subject.as_str()), u))
        .collect();
    let sessions: Vec<serde_json::Value> = live
        .into_iter()
        .map(|mut s| {
            let user = match (s["issuer"].as_str(), s["subject"].as_str()) {
                (Some(iss), Some(sub)) => by_subject.get(&(iss, sub)).copied(),
                _ => None,
            };
            if let Some(o) = s.as_object_mut() {
                o.remove("issuer");
                o.remove("subject");
                let email = o.remove("email").unwrap_or(serde_json::Value::Null);
                o.insert("user_id".into(), user.map(|u| u.id.clone()).into());
                o.insert(
                    "user_email".into(),
                    user.and_then(|u| u.email.clone()).map_or(email, Into::into),
                );
                o.insert(
                    "display_name".into(),
                    user.and_then(|u| u.display_name.clone()).into(),
                );
            }
            s
        })
        .collect();
    Ok(Json(serde_json::json!({
        "replica": me,
        "replicas": replicas,
        "sessions": sessions,
    })))
}

/// `DELETE /api/v1/admin/mcp-sessions/{handle}` → 200 `{"message": "MCP session ended"}` when it
/// was open on this replica; with replicas (PostgreSQL), 202 when it was not (the others are
/// told to end it); 404 on a single replica that does not hold it; 400 for a malformed handle.
/// Either way no replica resumes it afterwards: its client's next request gets 404 and the
/// client starts a new session, as MCP prescribes.
pub(crate) async fn end_mcp_session(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Path(handle): Path<String>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    require_admin(&caller)?;
    if handle.len() != 64
        || !handle
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(ApiError::bad_request(
            "A session handle is 64 lowercase hex characters, as GET /api/v1/admin/mcp-sessions lists it",
        ));
    }
    let here = state.events().end_mcp_session(&handle).await;
    tracing::info!(admin = %caller.user_id, session = handle.get(..16).unwrap_or(&handle), here, "MCP session ended by an admin");
    if here {
        Ok((
            StatusCode::OK,
            Json(serde_json::json!({ "message": "MCP session ended" })),
        ))
    } else if state.store.replica_id().is_some() {
        Ok((
            StatusCode::ACCEPTED,
            Json(serde_json::json!({
                "message": "The session is not open on this replica; the other replicas were told to end it",
            })),
        ))
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "MCP session not found",
        ))
    }
}

/// `POST /api/v1/admin/servers/{name}/restart` → `{"server", "action": "restart", "success":
/// true, "upstream_sessions_ended"}` (the reference's shape): a shared upstream server's
/// discovery session is replaced at once and every client's upstream session to it ends (the
/// next call opens a new one), on this replica and the others; 404 for no such server.
pub(crate) async fn restart_server(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    require_admin(&caller)?;
    let Some(ended) = state.events().restart_server(&name).await else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("Server {name:?} not found"),
        ));
    };
    tracing::info!(admin = %caller.user_id, server = %name, "upstream server restarted by an admin");
    Ok(Json(serde_json::json!({
        "server": name,
        "action": "restart",
        "success": true,
        "upstream_sessions_ended": ended,
    })))
}

/// `GET /api/v1/admin/dashboard` → `{total_users, active_users_24h, disabled_users,
/// active_sessions, mcp_sessions, tool_calls_24h, error_rate_24h, upstreams, replicas,
/// recent_users}`. `upstreams` is this replica's view; `replicas` has this one first, then every
/// other replica as it last reported (`{replica, reported_at, mcp_sessions, upstreams}`), and
/// `mcp_sessions` counts them all.
pub(crate) async fn dashboard(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
) -> Result<Json<serde_json::Value>, ApiError> {
    require_admin(&caller)?;
    let counts = state
        .store
        .dashboard_counts(now_unix() - 24 * 3600)
        .await
        .map_err(|e| ApiError::internal("Failed to count", &e))?;
    let mut users = state
        .store
        .list_users()
        .await
        .map_err(|e| ApiError::internal("Failed to list users", &e))?;
    users.sort_by_key(|u| std::cmp::Reverse(u.last_login_at));
    let recent: Vec<serde_json::Value> = users
        .iter()
        .filter(|u| u.last_login_at.is_some())
        .take(5)
        .map(|u| {
            serde_json::json!({
                "id": u.id,
                "email": u.email,
                "last_login_at": rfc3339(u.last_login_at),
            })
        })
        .collect();
    let error_rate = if counts.tool_calls == 0 {
        0.0
    } else {
        #[allow(clippy::cast_precision_loss)]
        let rate = counts.tool_errors as f64 / counts.tool_calls as f64;
        rate
    };
    let gateway = state.events().gateway_status();
    let upstreams = gateway
        .get("upstreams")
        .cloned()
        .unwrap_or_else(|| serde_json::json!([]));
    let others = crate::replicas::others(&state)
        .await
        .map_err(|e| ApiError::internal("Failed to read the other replicas' reports", &e))?;
    // Every replica's sessions: this one's live count, the others' as last reported.
    let mcp_sessions = gateway
        .get("mcp_sessions")
        .and_then(serde_json::Value::as_u64)
        .map(|here| here + others.iter().map(|o| o.sessions.len() as u64).sum::<u64>());
    let mut replicas = vec![serde_json::json!({
        "replica": state.store.replica_id(),
        "reported_at": rfc3339(Some(now_unix())),
        "mcp_sessions": gateway.get("mcp_sessions"),
        "upstreams": upstreams,
    })];
    replicas.extend(others.into_iter().map(|o| {
        serde_json::json!({
            "replica": o.replica,
            "reported_at": rfc3339(Some(o.reported_at)),
            "mcp_sessions": o.sessions.len(),
            "upstreams": o.upstreams,
        })
    }));
    Ok(Json(serde_json::json!({
        "total_users": counts.total_users,
        "active_users_24h": counts.active_users,
        "disabled_users": counts.disabled_users,
        "active_sessions": counts.active_sessions,
        "mcp_sessions": mcp_sessions,
        "tool_calls_24h": counts.tool_calls,
        "error_rate_24h": error_rate,
        "upstreams": upstreams,
        "replicas": replicas,
        "recent_users": recent,
    })))
}
