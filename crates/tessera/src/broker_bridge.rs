//! Lets the MCP data path obtain per-user credentials: the proxy only knows the
//! `CredentialBroker` seam; this adapter answers it with the broker's resolver (cache, store,
//! token exchange, connect flows), maps MCP identities to the store's users, and writes the
//! per-call `inject` audit record.

use std::collections::HashMap;
use std::sync::Arc;

use futures::future::BoxFuture;
use http::HeaderValue;
use tessera_broker::{
    ActivityAction, ActivityMethod, ActivityOutcome, Auditor, BrokerError, BrokeredServer,
    Connector, Elicitations, Requester, ResolvedCredential, Resolver,
};
use tessera_config::BrokerMode;
use tessera_identity::{Identity, TokenKind, UserKey};

use crate::users::UserDirectory;
use tessera_proxy::credentials::{
    BrokeredHeader, CredentialBroker, CredentialFailure, InjectOutcome,
};

pub(crate) struct BrokerBridge {
    pub(crate) resolver: Resolver,
    pub(crate) servers: HashMap<String, BrokeredServer>,
    pub(crate) connector: Option<Arc<Connector>>,
    pub(crate) elicitations: Arc<Elicitations>,
    pub(crate) auditor: Option<Auditor>,
    /// MCP identity → the store's user (a map lookup after the user's first call).
    users: Arc<UserDirectory>,
}

fn header(credential: &ResolvedCredential) -> BrokeredHeader {
    BrokeredHeader {
        name: credential.header_name.clone(),
        value: credential.header_value.clone(),
    }
}

/// The broker's error as the user may see it (the broker's errors carry no secret).
fn failure(e: BrokerError) -> CredentialFailure {
    match e {
        BrokerError::NotConnected { connect_url, .. } => {
            CredentialFailure::NotConnected { connect_url }
        }
        BrokerError::PolicyDenied { .. } => CredentialFailure::Denied,
        BrokerError::SignInAgain => CredentialFailure::SignInAgain,
        BrokerError::Unauthenticated => CredentialFailure::Unauthenticated,
        other => {
            let text = other.to_string();
            CredentialFailure::Unavailable(
                text.strip_prefix("broker: ").unwrap_or(&text).to_owned(),
            )
        }
    }
}

impl BrokerBridge {
    pub(crate) fn new(
        resolver: Resolver,
        servers: HashMap<String, BrokeredServer>,
        connector: Option<Arc<Connector>>,
        elicitations: Arc<Elicitations>,
        auditor: Option<Auditor>,
        users: Arc<UserDirectory>,
    ) -> Self {
        Self {
            resolver,
            servers,
            connector,
            elicitations,
            auditor,
            users,
        }
    }

    fn known_user(&self, who: &Identity) -> Option<Arc<str>> {
        self.users.known(who)
    }

    async fn user_id(&self, who: &Identity) -> Result<Arc<str>, CredentialFailure> {
        self.users.user_id(who).await.ok_or_else(|| {
            CredentialFailure::Unavailable("the user directory is unavailable".into())
        })
    }

    /// `f` of the brokered server `name` means for `user_id`: their personal one (only ever
    /// theirs), else the configured one — the order of `Gateway::entry_for`. No store, no await.
    pub(crate) fn with_server<T>(
        &self,
        user_id: Option<&str>,
        name: &str,
        f: impl FnOnce(&BrokeredServer) -> T,
    ) -> Option<T> {
        if let Some(user_id) = user_id
            && let Some(personal) = self
                .users
                .with_personal(user_id, name, BrokeredServer::clone)
        {
            // A clone is a few reference counts; `f` then runs outside the directory's lock.
            return Some(f(&personal));
        }
        self.servers.get(name).map(f)
    }

    /// The brokered server `name` means for `user_id` (see [`Self::with_server`]), cloned.
    pub(crate) fn server_for(&self, user_id: &str, name: &str) -> Option<BrokeredServer> {
        self.with_server(Some(user_id), name, BrokeredServer::clone)
    }

    /// The MCP identity of a store user seen on the MCP path in this process, if any.
    pub(crate) fn user_key(&self, user_id: &str) -> Option<UserKey> {
        self.users.user_key(user_id)
    }

    fn requester<'a>(
        who: &'a Identity,
        user_id: &'a str,
        request_id: Option<&'a str>,
    ) -> Requester<'a> {
        // The caller's own IdP token can be exchanged; a PAT or a browser session cannot (the
        // resolver then asks for the user's stored provider token).
        let inbound_idp_token = matches!(who.token_kind, TokenKind::Jwt | TokenKind::Introspected);
        Requester {
            user_id,
            email: who.email.as_deref(),
            groups: &who.groups,
            request_id,
            subject_token: inbound_idp_token.then_some(&who.token),
            subject: Some(&who.user.subject),
        }
    }
}

impl CredentialBroker for BrokerBridge {
    fn cached(&self, who: &Identity, server: &str) -> Option<BrokeredHeader> {
        let user_id = self.known_user(who)?;
        self.with_server(Some(&user_id), server, |server| {
            self.resolver.cached(&user_id, server).map(|c| header(&c))
        })?
    }

    fn acquire<'a>(
        &'a self,
        who: &'a Identity,
        server: &'a str,
        request_id: Option<&'a str>,
    ) -> BoxFuture<'a, Result<BrokeredHeader, CredentialFailure>> {
        Box::pin(async move {
            let user_id = self.user_id(who).await?;
            let brokered = self.server_for(&user_id, server).ok_or_else(|| {
                CredentialFailure::Unavailable("the server has no auth_broker".into())
            })?;
            let requester = Self::requester(who, &user_id, request_id);
            self.resolver
                .resolve(&requester, &brokered)
                .await
                .map(|c| header(&c))
                .map_err(failure)
        })
    }

    fn rejected<'a>(
        &'a self,
        who: &'a Identity,
        server: &'a str,
        rejected: &'a HeaderValue,
    ) -> BoxFuture<'a, Result<BrokeredHeader, CredentialFailure>> {
        Box::pin(async move {
            let user_id = self.user_id(who).await?;
            let brokered = self.server_for(&user_id, server).ok_or_else(|| {
                CredentialFailure::Unavailable("the server has no auth_broker".into())
            })?;
            let requester = Self::requester(who, &user_id, None);
            self.resolver
                .reacquire(&requester, &brokered, rejected)
                .await
                .map(|c| header(&c))
                .map_err(failure)
        })
    }

    fn connect_elicitation(&self, who: &Identity, server: &str) -> Option<(String, String)> {
        let user_id = self.known_user(who)?;
        let server = self.server_for(&user_id, server)?;
        let connector = self.connector.as_ref()?;
        self.elicitations.create(connector, &user_id, &server).ok()
    }

    fn audit_inject(
        &self,
        who: &Identity,
        server: &str,
        request_id: Option<&str>,
        outcome: InjectOutcome<'_>,
    ) {
        let user_id = self.known_user(who);
        let (Some(auditor), Some(mode)) = (
            &self.auditor,
            self.with_server(user_id.as_deref(), server, BrokeredServer::mode),
        ) else {
            return;
        };
        let (outcome, reason) = match outcome {
            InjectOutcome::Injected => (ActivityOutcome::Success, None),
            InjectOutcome::Failed(CredentialFailure::Denied) => {
                (ActivityOutcome::Denied, Some("policy"))
            }
            InjectOutcome::Failed(failure) => (ActivityOutcome::Failure, Some(failure.reason())),
            InjectOutcome::UpstreamRejected => (
                ActivityOutcome::Failure,
                Some("upstream_rejected_credential"),
            ),
        };
        let method = match mode {
            BrokerMode::TokenExchange => ActivityMethod::TokenExchange,
            BrokerMode::EntraObo => ActivityMethod::EntraObo,
            BrokerMode::OauthConnect => ActivityMethod::Connect,
        };
        auditor.record(tessera_store::ActivityRecord {
            ts: tessera_store::now_unix(),
            user_id: user_id.map(|u| u.to_string()),
            server: server.to_owned(),
            tool: None,
            request_id: request_id.map(str::to_owned),
            method,
            action: ActivityAction::Inject,
            outcome,
            reason: reason.map(str::to_owned),
            duration_ms: None,
        });
    }

    fn metrics(&self, out: &mut String) {
        use std::fmt::Write;
        self.resolver.render_metrics(out);
        if let Some(auditor) = &self.auditor {
            let _ = writeln!(
                out,
                "# HELP tessera_audit_dropped_total Audit records dropped because the queue was full.\n# TYPE tessera_audit_dropped_total counter\ntessera_audit_dropped_total {}",
                auditor.dropped()
            );
            let _ = writeln!(
                out,
                "# HELP tessera_audit_write_failures_total Audit records the store could not write.\n# TYPE tessera_audit_write_failures_total counter\ntessera_audit_write_failures_total {}",
                auditor.write_failures()
            );
        }
    }
}
