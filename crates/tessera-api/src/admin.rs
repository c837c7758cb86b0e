//! Admin-only routes: `GET /api/v1/admin/users`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use tessera_store::Role;

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
