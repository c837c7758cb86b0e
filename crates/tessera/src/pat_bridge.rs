//! Lets the MCP front ends accept Tessera's own tokens — personal access tokens (`tsr_pat_…`)
//! and the access tokens of its authorization server (`tsr_at_…`): the data path only knows the
//! `PatVerifier` seam; this adapter answers it with the API crate's cached verifications.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use secrecy::SecretString;
use tessera_api::ApiState;
use tessera_api::authz::AccessTokenError;
use tessera_api::pat::{self, PatError};
use tessera_identity::{AuthError, Identity, InvalidToken, Role, TokenKind, UserKey};
use tessera_proxy::caller::PatVerifier;
use tessera_store::{ACCESS_TOKEN_PREFIX, OauthTokenRejection, PatRejection, Store};

pub(crate) struct StorePatVerifier {
    pub(crate) store: Store,
    pub(crate) api: Arc<ApiState>,
}

impl PatVerifier for StorePatVerifier {
    fn verify<'a>(
        &'a self,
        token: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<Arc<Identity>, AuthError>> + Send + 'a>> {
        Box::pin(async move {
            if token.starts_with(ACCESS_TOKEN_PREFIX) {
                return match self.api.verify_access_token(token).await {
                    Ok(t) => Ok(t.identity.clone()),
                    Err(AccessTokenError::Rejected(OauthTokenRejection::Expired)) => {
                        Err(AuthError::InvalidToken(InvalidToken::Expired))
                    }
                    Err(AccessTokenError::InsufficientScope(required)) => {
                        Err(AuthError::InsufficientScope { required })
                    }
                    Err(AccessTokenError::SignInAgain) => {
                        Err(AuthError::InvalidToken(InvalidToken::SignInAgain))
                    }
                    Err(AccessTokenError::Rejected(_) | AccessTokenError::Disabled) => {
                        Err(AuthError::InvalidToken(InvalidToken::Inactive))
                    }
                    Err(AccessTokenError::Store(e)) => {
                        Err(AuthError::Unavailable(format!("token store: {e}")))
                    }
                };
            }
            match pat::verify(&self.store, token).await {
                Ok(user) => Ok(Arc::new(Identity {
                    user: UserKey {
                        issuer: user.issuer,
                        subject: user.subject.clone(),
                    },
                    display_name: user
                        .display_name
                        .clone()
                        .or_else(|| user.email.clone())
                        .unwrap_or(user.subject),
                    email: user.email,
                    role: match user.role {
                        tessera_store::Role::Admin => Role::Admin,
                        tessera_store::Role::User => Role::User,
                    },
                    token_kind: TokenKind::PersonalAccessToken,
                    client_id: None,
                    scopes: Vec::new(),
                    groups: Vec::new(),
                    expires_at: user
                        .expires_at
                        .and_then(|s| u64::try_from(s).ok())
                        .map(|s| UNIX_EPOCH + Duration::from_secs(s)),
                    token: SecretString::from(token.to_owned()),
                    agent: user.agent,
                })),
                Err(PatError::Rejected(PatRejection::Expired)) => {
                    Err(AuthError::InvalidToken(InvalidToken::Expired))
                }
                Err(PatError::Rejected(_)) => Err(AuthError::InvalidToken(InvalidToken::Inactive)),
                Err(PatError::Store(e)) => Err(AuthError::Unavailable(format!("token store: {e}"))),
            }
        })
    }
}
