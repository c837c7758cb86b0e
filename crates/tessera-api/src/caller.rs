//! Who is calling the REST API: a browser session (cookie) or a personal access token (Bearer).

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use tessera_store::{Role, UnixTime};

use crate::ApiState;
use crate::cookies::CookiePolicy;
use crate::error::ApiError;
use crate::pat::{self, PatError};

/// How the caller proved who they are.
#[derive(Debug, Clone)]
pub enum CallerKind {
    Session,
    PersonalAccessToken {
        id: String,
        expires_at: Option<UnixTime>,
        /// The token's limits (an agent token); a token it makes gets no more than these.
        agent: Option<Arc<tessera_identity::AgentScope>>,
    },
}

/// The signed-in user of one REST request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user_id: String,
    pub email: Option<String>,
    pub display_name: Option<String>,
    pub role: Role,
    pub kind: CallerKind,
}

impl FromRequestParts<Arc<ApiState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<ApiState>,
    ) -> Result<Self, Self::Rejection> {
        if let Some(auth) = parts.headers.get(header::AUTHORIZATION) {
            let token = auth
                .to_str()
                .ok()
                .and_then(|v| {
                    let (scheme, rest) = v.split_once(' ')?;
                    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
                })
                .ok_or_else(ApiError::unauthorized)?;
            return match pat::verify(&state.store, token).await {
                Ok(id) => Ok(Caller {
                    user_id: id.user_id,
                    email: id.email,
                    display_name: id.display_name,
                    role: id.role,
                    kind: CallerKind::PersonalAccessToken {
                        id: id.pat_id,
                        expires_at: id.expires_at,
                        agent: id.agent,
                    },
                }),
                Err(PatError::Rejected(why)) => Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    format!("Invalid bearer token: {why}"),
                )),
                Err(e @ PatError::Store(_)) => Err(ApiError::internal("Failed to check token", &e)),
            };
        }
        let Some(cookie) = CookiePolicy::get(&parts.headers, state.cookies.session_name()) else {
            return Err(ApiError::unauthorized());
        };
        // A cookie is ambient authority: a mutating call must come from our own pages.
        if !crate::csrf::allows(&parts.method, &parts.headers, &state.origin) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "Cross-origin request refused: a cookie-authenticated POST or DELETE must come from this gateway's own pages (same-origin Origin or Sec-Fetch-Site)",
            ));
        }
        let session = state
            .store
            .get_session(cookie)
            .await
            .map_err(|e| ApiError::internal("Failed to read session", &e))?
            .ok_or_else(ApiError::unauthorized)?;
        let user = state
            .store
            .get_user(&session.user_id)
            .await
            .map_err(|e| ApiError::internal("Failed to read user", &e))?
            .filter(|u| !u.disabled)
            .ok_or_else(ApiError::unauthorized)?;
        Ok(Caller {
            user_id: user.id,
            email: user.email,
            display_name: user.display_name,
            role: user.role,
            kind: CallerKind::Session,
        })
    }
}
