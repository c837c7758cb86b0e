//! Lets the MCP front ends accept Tessera's own tokens — personal access tokens (`tsr_pat_…`)
//! and the access tokens of its authorization server (`tsr_at_…`): the data path only knows the
//! `PatVerifier` seam; this adapter answers it with the API crate's cached verifications.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tessera_api::ApiState;
use tessera_api::authz::AccessTokenError;
use tessera_api::pat::{self, PatError};
use tessera_identity::{AuthError, Identity, InvalidToken};
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
            match pat::verify_for_mcp(&self.store, token).await {
                Ok(identity) => Ok(identity),
                Err(PatError::Rejected(PatRejection::Expired)) => {
                    Err(AuthError::InvalidToken(InvalidToken::Expired))
                }
                Err(PatError::Rejected(_)) => Err(AuthError::InvalidToken(InvalidToken::Inactive)),
                Err(PatError::Store(e)) => Err(AuthError::Unavailable(format!("token store: {e}"))),
            }
        })
    }
}
