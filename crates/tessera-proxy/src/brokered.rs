//! Brokered servers on the MCP path: each call's credential step (fail closed, audited), what a
//! user without a credential is told, and each user's own catalogue.
//!
//! Decisions (see docs/ARCHITECTURE.md):
//! - A brokered server has no shared discovery session: the gateway holds no credential of its
//!   own for it. A user's lists show it as discovered with *their* credential, cached per user
//!   until `list_changed`, a credential change or a disconnect.
//! - A user who has not connected an `oauth_connect` server sees one tool, `<server>__connect`.
//!   Calling it (or any of the server's tools) answers with a URL-mode elicitation (`-32042`)
//!   when the client declared `elicitation.url`, else with a tool error whose text holds the
//!   connect URL. After connecting, the lists change (`list_changed`) to the server's tools.
//! - A user whom policy refuses sees nothing of the server.

use std::sync::Arc;

use serde_json::json;
use serde_json::value::RawValue;

use crate::catalog::{ListKind, ServerCatalog};
use crate::credentials::{CredentialFailure, InjectOutcome};
use crate::error::UpstreamError;
use crate::gateway::{Gateway, ServerEntry};
use crate::jsonrpc;
use crate::router::Reply;
use crate::session::ClientSession;

/// The name of the tool that stands in for an `oauth_connect` server the user has not connected.
pub(crate) const CONNECT_TOOL: &str = "connect";

/// The request id audit records carry: unique per client session and request.
fn request_id(session: &ClientSession, id: &RawValue) -> String {
    format!("{}:{}", session.id, id.get())
}

/// Makes sure the caller has a credential for `server` before anything is sent (from the cache:
/// no await, no database). Records the per-call `inject` event. On failure the reply says why.
pub(crate) async fn credential_step(
    session: &Arc<ClientSession>,
    server: &str,
    method: &str,
    id: &RawValue,
    deadline: tokio::time::Instant,
) -> Result<(), Reply> {
    let Some(identity) = session.identity() else {
        return Err(failure_reply(
            session,
            server,
            method,
            id,
            &CredentialFailure::Unauthenticated,
        ));
    };
    let Some(broker) = session.gateway().and_then(|g| g.broker().cloned()) else {
        let failure = CredentialFailure::Unavailable("no credential broker is configured".into());
        return Err(failure_reply(session, server, method, id, &failure));
    };
    // The request id is built only when something records it: a cache hit on a tools/call
    // (recorded by the activity log instead) allocates nothing here.
    let mut rid = None;
    let result = match broker.cached(&identity, server) {
        Some(header) => Ok(header),
        // Bounded by the call's deadline; the acquisition itself goes on (others may wait for
        // it) under the broker's own timeouts.
        None => tokio::time::timeout_at(
            deadline,
            broker.acquire(
                &identity,
                server,
                Some(rid.insert(request_id(session, id)).as_str()),
            ),
        )
        .await
        .unwrap_or_else(|_| {
            Err(CredentialFailure::Unavailable(
                "timed out obtaining your credential from the authorization server".into(),
            ))
        }),
    };
    match result {
        Ok(_) => {
            // A tools/call gets its own activity record when the activity log is on (action
            // tool_call, the same request id, user, server and outcome): that record stands for
            // the injection, so a successful call costs one audit row, not two. Failures, and
            // other brokered requests, get an `inject` record.
            let recorded_as_tool_call =
                method == "tools/call" && session.gateway().is_some_and(|g| g.observer().is_some());
            if !recorded_as_tool_call {
                let rid = rid.get_or_insert_with(|| request_id(session, id));
                broker.audit_inject(&identity, server, Some(rid), InjectOutcome::Injected);
            }
            Ok(())
        }
        Err(failure) => {
            let rid = rid.get_or_insert_with(|| request_id(session, id));
            broker.audit_inject(
                &identity,
                server,
                Some(rid),
                InjectOutcome::Failed(&failure),
            );
            Err(failure_reply(session, server, method, id, &failure))
        }
    }
}

/// The reply for a call that failed for want of a credential after it reached the transport
/// (opening the user's session, or the upstream refusing the credential twice).
pub(crate) fn upstream_failure(
    session: &Arc<ClientSession>,
    server: &str,
    method: &str,
    id: &RawValue,
    error: &UpstreamError,
) -> Reply {
    let broker = session.gateway().and_then(|g| g.broker().cloned());
    let rid = request_id(session, id);
    match error {
        UpstreamError::Credential(failure) => {
            if let (Some(broker), Some(identity)) = (&broker, session.identity()) {
                broker.audit_inject(
                    &identity,
                    server,
                    Some(&rid),
                    InjectOutcome::Failed(failure),
                );
            }
            failure_reply(session, server, method, id, failure)
        }
        _ => {
            if let (Some(broker), Some(identity)) = (&broker, session.identity()) {
                broker.audit_inject(
                    &identity,
                    server,
                    Some(&rid),
                    InjectOutcome::UpstreamRejected,
                );
            }
            let text = format!(
                "upstream server '{server}' rejected your credential (HTTP 401), also after it was renewed; ask its administrator whether your account has access"
            );
            error_reply(method, id, server, "upstream_rejected_credential", &text)
        }
    }
}

/// A tool error for `tools/call` (the model sees it), a JSON-RPC error for anything else.
fn error_reply(method: &str, id: &RawValue, server: &str, reason: &str, text: &str) -> Reply {
    if method == "tools/call" {
        Reply::Now(jsonrpc::result(
            id,
            &json!({ "content": [{ "type": "text", "text": text }], "isError": true }),
        ))
    } else {
        Reply::Now(jsonrpc::error(
            Some(id),
            jsonrpc::UPSTREAM_UNAVAILABLE,
            text,
            Some(json!({ "server": server, "reason": reason })),
        ))
    }
}

/// What the client is told when there is no credential. A missing connection becomes a URL-mode
/// elicitation for clients that declared one; otherwise the text carries the connect URL.
fn failure_reply(
    session: &Arc<ClientSession>,
    server: &str,
    method: &str,
    id: &RawValue,
    failure: &CredentialFailure,
) -> Reply {
    if let CredentialFailure::NotConnected { connect_url } = failure {
        if session.supports_url_elicitation()
            && let Some(identity) = session.identity()
            && let Some(broker) = session.gateway().and_then(|g| g.broker().cloned())
            && let Some((elicitation_id, url)) = broker.connect_elicitation(&identity, server)
        {
            session.add_elicitation(server, elicitation_id.clone());
            let message = format!(
                "Connect your account for '{server}': open the link, sign in and approve access, then try again."
            );
            return Reply::Now(jsonrpc::error(
                Some(id),
                jsonrpc::URL_ELICITATION_REQUIRED,
                &format!("upstream server '{server}' needs you to connect your account first"),
                Some(json!({
                    "elicitations": [{
                        "mode": "url",
                        "elicitationId": elicitation_id,
                        "url": url,
                        "message": message,
                    }]
                })),
            ));
        }
        let text = format!(
            "upstream server '{server}' is not connected for your account. Open {connect_url} in a browser signed in to Tessera to connect it, then try again."
        );
        return error_reply(method, id, server, "not_connected", &text);
    }
    let text = format!("upstream server '{server}': {failure}");
    error_reply(method, id, server, failure.reason(), &text)
}

/// Routing of a tool or prompt name on a brokered server. `None`: forward it (the credential
/// step in `forward` still applies).
pub(crate) async fn route_name(
    session: &Arc<ClientSession>,
    entry: &Arc<ServerEntry>,
    what: &str,
    name: &str,
    exposed: &str,
    id: &RawValue,
) -> Option<Reply> {
    let server = entry.config.name.as_str();
    let identity = session.identity()?;
    let catalog = entry.user_catalog(&identity.user);
    let is_connect_tool = what == "tool"
        && name == CONNECT_TOOL
        && catalog
            .as_ref()
            .is_none_or(|c| c.connect_placeholder || !c.tool_names.contains_key(name));
    if is_connect_tool {
        let method = "tools/call";
        let deadline = tokio::time::Instant::now() + entry.call_timeout;
        return Some(
            match credential_step(session, server, method, id, deadline).await {
                Ok(()) => {
                    entry.forget_user_catalog(&identity.user);
                    Reply::Now(jsonrpc::result(
                        id,
                        &json!({ "content": [{ "type": "text", "text": format!("Your account for '{server}' is connected; its tools are listed now.") }] }),
                    ))
                }
                Err(reply) => reply,
            },
        );
    }
    let catalog = catalog?;
    if catalog.connect_placeholder {
        return None; // the credential step answers with the way to connect
    }
    if catalog.knows(what, name) {
        return None;
    }
    Some(crate::router::unknown(id, what, exposed))
}

/// Routing of a tool or prompt name on the caller's personal server: known to its catalogue
/// (discovered through the caller's session first if need be). `None`: forward it.
pub(crate) async fn route_personal(
    gw: &Arc<Gateway>,
    session: &Arc<ClientSession>,
    entry: &Arc<ServerEntry>,
    what: &str,
    name: &str,
    exposed: &str,
    id: &RawValue,
) -> Option<Reply> {
    let identity = session.identity()?;
    let catalog = match entry.user_catalog(&identity.user) {
        Some(c) => c,
        None => match discover_for_user(gw, session, entry).await {
            Some(c) => c,
            None => {
                return Some(Reply::Now(jsonrpc::upstream_error(
                    id,
                    &entry.config.name,
                    jsonrpc::UpstreamFault::Unavailable("your server could not be listed"),
                )));
            }
        },
    };
    if catalog.knows(what, name) {
        return None;
    }
    Some(crate::router::unknown(id, what, exposed))
}

/// The catalogue of an `oauth_connect` server for a user who has not connected it.
fn connect_catalog(server: &str, separator: &str) -> ServerCatalog {
    let tool = json!({
        "name": CONNECT_TOOL,
        "title": format!("Connect {server}"),
        "description": format!(
            "Your account for the '{server}' server is not connected, so its tools are hidden. Call this tool to get a link that connects it (you sign in at '{server}' and approve access); its tools then appear here."
        ),
        "inputSchema": { "type": "object", "properties": {} },
        "annotations": { "readOnlyHint": true, "openWorldHint": true }
    });
    let mut catalog = ServerCatalog {
        connect_placeholder: true,
        ..ServerCatalog::default()
    };
    catalog.set(
        ListKind::Tools,
        server,
        separator,
        vec![jsonrpc::to_raw(&tool)],
    );
    catalog
}

/// The caller's catalogues of every brokered server, discovered with their own credential on
/// first use (in parallel) and cached per user.
pub(crate) async fn user_catalogs(
    gw: &Arc<Gateway>,
    session: &Arc<ClientSession>,
) -> Vec<Arc<ServerCatalog>> {
    let Some(identity) = session.identity() else {
        return Vec::new();
    };
    let identity = &identity;
    let entries = gw.per_user_entries(&session.caller);
    let lookups = entries.iter().map(|entry| async move {
        if let Some(catalog) = entry.user_catalog(&identity.user) {
            return Some(catalog);
        }
        discover_for_user(gw, session, entry).await
    });
    futures::future::join_all(lookups)
        .await
        .into_iter()
        .flatten()
        .collect()
}

async fn discover_for_user(
    gw: &Arc<Gateway>,
    session: &Arc<ClientSession>,
    entry: &Arc<ServerEntry>,
) -> Option<Arc<ServerCatalog>> {
    let identity = session.identity()?;
    let server = entry.config.name.as_str();
    let separator = gw.config.tool_separator.as_str();
    // A slow authorization server must not hold the user's whole list for long.
    let bound = entry.init_timeout.min(entry.call_timeout);
    let catalog = match tokio::time::timeout(bound, session.upstream(server)).await {
        Ok(Ok(upstream)) => {
            match tokio::time::timeout(
                bound,
                crate::gateway::discover(&upstream, server, separator),
            )
            .await
            {
                Ok(Ok(catalog)) => catalog,
                Ok(Err(e)) => {
                    tracing::warn!(server, user = session.caller.label(), error = %e, "listing a brokered server for a user failed");
                    return None;
                }
                Err(_) => {
                    tracing::warn!(
                        server,
                        user = session.caller.label(),
                        "listing a brokered server for a user timed out"
                    );
                    return None;
                }
            }
        }
        Ok(Err(UpstreamError::Credential(CredentialFailure::NotConnected { .. }))) => {
            connect_catalog(server, separator)
        }
        // Policy refuses this user: the server does not exist for them.
        Ok(Err(UpstreamError::Credential(CredentialFailure::Denied))) => ServerCatalog::default(),
        Ok(Err(e)) => {
            tracing::warn!(server, user = session.caller.label(), error = %e, "brokered server unavailable for a user");
            return None;
        }
        Err(_) => {
            tracing::warn!(
                server,
                user = session.caller.label(),
                "opening a brokered server for a user timed out"
            );
            return None;
        }
    };
    let catalog = Arc::new(catalog);
    entry.set_user_catalog(&identity.user, catalog.clone());
    Some(catalog)
}
