//! Tessera identity: who is calling `/mcp`.
//!
//! Tessera is an OAuth 2.1 protected resource in the sense of the MCP authorization spec
//! (2025-06-18 / 2025-11-25), with the configured OpenID provider as its authorization server:
//!
//! - [`TokenValidator`] checks `Authorization: Bearer` tokens — JWTs against the provider's JWKS
//!   (discovered, cached, following key rollover), opaque tokens through RFC 7662 introspection —
//!   and yields an [`Identity`] or an [`AuthError`] that says who is at fault.
//! - [`ProtectedResource`] serves the RFC 9728 metadata document and builds the
//!   `WWW-Authenticate` challenges and the 401/403/503 responses.
//! - [`require_identity`] is an axum middleware that puts an `Arc<Identity>` into the request's
//!   extensions, or answers with the challenge. **There is no anonymous fallback**: an absent,
//!   invalid, expired or foreign token never reaches the router.
//!
//! The validated inbound token travels inside the [`Identity`] (as a `SecretString`; `Debug`
//! redacts it) because it is the user's subject token for the credential broker.

mod error;
mod identity;
mod metadata;
mod validator;

pub use error::{AuthError, InvalidToken};
pub use identity::{AgentScope, Identity, Permission, Role, TokenKind, UserKey};
pub use metadata::{
    McpAuth, ProtectedResource, ROOT_METADATA_PATH, bearer_token, protected_resource_metadata,
    require_identity,
};
pub use validator::TokenValidator;
