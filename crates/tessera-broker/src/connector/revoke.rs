//! Disconnect: RFC 7009 revocation of a user's stored credential at the upstream authorization
//! server, then removal of the record.
//!
//! The revocation endpoint is `auth_broker.revocation_endpoint`, else the `revocation_endpoint`
//! of the issuer's RFC 8414 metadata (`auth_broker.issuer`). The refresh token is revoked first
//! (`token_type_hint=refresh_token`: RFC 7009 §2.1 says revoking it may also revoke its access
//! tokens), then the access token (`token_type_hint=access_token`), each with the client
//! authentication the server's token requests use. **The record is deleted whatever revocation
//! did**: a user who disconnects must not keep a credential in Tessera because the provider was
//! down. The outcome is audited (`disconnect`, success or failure with an allow-listed reason)
//! and announced as [`ConnectOutcome::Disconnected`].

use std::time::Instant;

use secrecy::{ExposeSecret as _, SecretString};
use tessera_config::{BrokerMode, ClientAuth};
use tessera_store::{ActivityRecord, StoreError as DbError};
use url::{Url, form_urlencoded};

use super::{ConnectOutcome, Connector, elapsed_ms};
use crate::audit::{ActivityAction, ActivityMethod, ActivityOutcome};
use crate::error::BrokerError;
use crate::resolver::BrokeredServer;
use crate::token::{client_assertion, read_capped};

const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// The error codes a revocation endpoint may answer with (RFC 7009 §2.2.1, RFC 6749 §5.2)
/// pass through; anything else is `server_error`.
pub fn revocation_code(code: &str) -> &'static str {
    match code {
        "invalid_request" => "invalid_request",
        "invalid_client" => "invalid_client",
        "unauthorized_client" => "unauthorized_client",
        "unsupported_token_type" => "unsupported_token_type",
        "temporarily_unavailable" => "temporarily_unavailable",
        _ => "server_error",
    }
}

/// What a disconnect did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disconnected {
    /// A credential was stored (and is now deleted).
    pub had_credential: bool,
    /// Every stored token was revoked at the authorization server.
    pub revoked: bool,
    /// Why revocation did not happen or failed: an allow-listed code (`no_revocation_endpoint`,
    /// `discovery_failed`, `unreachable`, `timeout`, `unreadable_record`, or the server's RFC
    /// 6749 / 7009 error code such as `invalid_client`, `unsupported_token_type`,
    /// `server_error`). `None` when revoked or when nothing was stored.
    pub revocation_error: Option<&'static str>,
}

fn method_of(mode: BrokerMode) -> ActivityMethod {
    match mode {
        BrokerMode::TokenExchange => ActivityMethod::TokenExchange,
        BrokerMode::EntraObo => ActivityMethod::EntraObo,
        BrokerMode::OauthConnect => ActivityMethod::Connect,
    }
}

impl Connector {
    /// The revocation endpoint for `server`: configured, else discovered from its issuer.
    async fn revocation_endpoint(&self, server: &BrokeredServer) -> Result<Url, &'static str> {
        let cfg = server.config();
        if let Some(url) = &cfg.revocation_endpoint {
            return Ok(url.clone());
        }
        if cfg.issuer.is_none() {
            return Err("no_revocation_endpoint");
        }
        // `Discovery::endpoints` reads the metadata only when a required endpoint is missing:
        // ask as if the token endpoint were not configured, so the metadata is fetched (once,
        // then cached) and its revocation endpoint is seen.
        let mut probe = cfg.clone();
        probe.token_endpoint = None;
        match self
            .discovery
            .endpoints(self.http_for(server), self.timeout, &probe, false)
            .await
        {
            Ok(endpoints) => endpoints.revocation.ok_or("no_revocation_endpoint"),
            Err(e) => Err(e.reason()),
        }
    }

    /// One RFC 7009 request, with the client authentication the server's token requests use.
    /// HTTP 200 is success whatever the body (RFC 7009 §2.2: also for a token the server no
    /// longer knows); anything else fails with an allow-listed code ([`revocation_code`]).
    async fn revoke_one(
        &self,
        server: &BrokeredServer,
        endpoint: &Url,
        token: &SecretString,
        hint: &str,
    ) -> Result<(), &'static str> {
        let cfg = server.config();
        // (The serializer is not `Send`: finish it before any await.)
        let (form, basic) = {
            let mut form = form_urlencoded::Serializer::new(String::new());
            form.append_pair("token", token.expose_secret());
            form.append_pair("token_type_hint", hint);
            let mut basic = None;
            match cfg.client_auth {
                ClientAuth::ClientSecretPost => {
                    if let Some(id) = cfg.client_id.as_deref() {
                        form.append_pair("client_id", id);
                    }
                    if let Some(secret) = cfg.client_secret.as_ref() {
                        form.append_pair("client_secret", secret.expose_secret());
                    }
                }
                ClientAuth::ClientSecretBasic => {
                    let (Some(id), Some(secret)) =
                        (cfg.client_id.as_deref(), cfg.client_secret.as_ref())
                    else {
                        return Err("misconfigured");
                    };
                    // RFC 6749 §2.3.1: form-urlencoded before Basic encoding.
                    let id: String = form_urlencoded::byte_serialize(id.as_bytes()).collect();
                    let secret: String =
                        form_urlencoded::byte_serialize(secret.expose_secret().as_bytes())
                            .collect();
                    basic = Some((id, secret));
                }
                ClientAuth::PrivateKeyJwt => {
                    let assertion = client_assertion(cfg, endpoint).map_err(|e| e.reason())?;
                    if let Some(id) = cfg.client_id.as_deref() {
                        form.append_pair("client_id", id);
                    }
                    form.append_pair("client_assertion_type", ASSERTION_TYPE);
                    form.append_pair("client_assertion", &assertion);
                }
            }
            (form.finish(), basic)
        };
        let mut request = self
            .http_for(server)
            .post(endpoint.clone())
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(http::header::ACCEPT, "application/json")
            .body(form);
        if let Some((id, secret)) = basic {
            request = request.basic_auth(id, Some(secret));
        }
        let (status, body) = tokio::time::timeout(self.timeout, read_capped(request))
            .await
            .map_err(|_| "timeout")?
            .map_err(|e| e.reason())?;
        if status == 200 {
            return Ok(());
        }
        let code = body
            .as_deref()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok())
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(revocation_code));
        let code = code.unwrap_or(if status == 503 {
            "temporarily_unavailable"
        } else {
            "server_error"
        });
        tracing::debug!(server = %server.name(), status, code, hint, "revocation refused");
        Err(code)
    }

    /// Disconnects `user_id` from `server`: revokes the stored refresh and access tokens at the
    /// authorization server (RFC 7009), deletes the record, audits `disconnect` and announces
    /// [`ConnectOutcome::Disconnected`]. The record is deleted even when revocation fails (the
    /// result says so). Nothing stored → nothing revoked, audited or announced.
    /// Errors only when the store cannot be read or written.
    pub async fn disconnect(
        &self,
        user_id: &str,
        server: &BrokeredServer,
        rid: Option<&str>,
    ) -> Result<Disconnected, BrokerError> {
        let started = Instant::now();
        let stored = match self.store.get_credential(user_id, server.key()).await {
            Ok(Some(c)) => Ok(Some(c)),
            Ok(None) => Ok(None),
            // A record that no longer opens (key rotated away, tampered) cannot be revoked,
            // but it is still removed.
            Err(DbError::Seal(_) | DbError::SealingDisabled) => Err("unreadable_record"),
            Err(_) => return Err(BrokerError::Store("unavailable")),
        };
        let had_credential = !matches!(stored, Ok(None));
        if !had_credential {
            return Ok(Disconnected {
                had_credential: false,
                revoked: false,
                revocation_error: None,
            });
        }
        let revocation = match stored {
            Ok(Some(credential)) => match self.revocation_endpoint(server).await {
                Ok(endpoint) => {
                    let refresh = match &credential.refresh_token {
                        Some(refresh) => Some(
                            self.revoke_one(server, &endpoint, refresh, "refresh_token")
                                .await,
                        ),
                        None => None,
                    };
                    let access = self
                        .revoke_one(server, &endpoint, &credential.access_token, "access_token")
                        .await;
                    match (refresh, access) {
                        // A server that cannot revoke self-contained (JWT) access tokens says
                        // unsupported_token_type (RFC 7009 §2.2.1); revoking the refresh token
                        // revoked the grant, and the access token lapses at its expiry.
                        (Some(Ok(())), Err("unsupported_token_type")) => Ok(()),
                        (Some(Err(e)), _) => Err(e),
                        (_, access) => access,
                    }
                }
                Err(e) => Err(e),
            },
            Ok(None) => Ok(()),
            Err(e) => Err(e),
        };
        self.store
            .delete_credential(user_id, server.key())
            .await
            .map_err(|_| BrokerError::Store("unavailable"))?;
        let revocation_error = revocation.err();
        if let Some(auditor) = &self.auditor {
            auditor.record(ActivityRecord {
                ts: tessera_store::now_unix(),
                user_id: Some(user_id.to_owned()),
                server: server.name().to_owned(),
                tool: None,
                request_id: rid.map(str::to_owned),
                method: method_of(server.mode()),
                action: ActivityAction::Disconnect,
                outcome: if revocation_error.is_none() {
                    ActivityOutcome::Success
                } else {
                    ActivityOutcome::Failure
                },
                reason: revocation_error.map(|e| format!("revocation failed: {e}")),
                duration_ms: elapsed_ms(started),
            });
        }
        self.announce(user_id, server.name(), ConnectOutcome::Disconnected);
        self.publish_change(user_id, server, false).await;
        match revocation_error {
            None => {
                tracing::info!(server = %server.name(), "user disconnected an upstream account; tokens revoked")
            }
            Some(e) => {
                tracing::warn!(server = %server.name(), reason = e, "user disconnected an upstream account; revocation failed, local record deleted")
            }
        }
        Ok(Disconnected {
            had_credential: true,
            revoked: revocation_error.is_none(),
            revocation_error,
        })
    }
}
