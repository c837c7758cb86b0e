//! Users' own settings on the MCP path: the gateway's [`tessera_proxy::users::UserDirectory`]
//! over the store (personal servers, switched-off shared servers, the disabled flag), and the
//! API's [`tessera_api::UserEvents`], which applies a change made through the REST API here
//! and tells the other replicas.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};

use secrecy::ExposeSecret as _;
use tessera_broker::BrokeredServer;
use tessera_config::{HttpProtocol, ServerConfig, Transport};
use tessera_identity::UserKey;
use tessera_proxy::Gateway;
use tessera_proxy::users::UserSettings;
use tessera_store::{Change, Store};

use crate::users::UserDirectory;

impl tessera_proxy::users::UserDirectory for UserDirectory {
    fn load<'a>(
        &'a self,
        user: &'a UserKey,
    ) -> Pin<Box<dyn Future<Output = Result<UserSettings, String>> + Send + 'a>> {
        Box::pin(async move { load(self, user).await })
    }
}

async fn load(directory: &UserDirectory, user: &UserKey) -> Result<UserSettings, String> {
    let store = directory.store();
    let Some(row) = store
        .find_user_by_identity(&user.issuer, &user.subject)
        .await
        .map_err(|e| e.to_string())?
    else {
        // Never signed in and never called a brokered server: nothing of theirs is stored.
        return Ok(UserSettings::default());
    };
    let mut settings = UserSettings {
        disabled: row.disabled,
        ..UserSettings::default()
    };
    if row.disabled {
        directory.set_personal(&row.id, user, HashMap::new());
        return Ok(settings);
    }
    let mut brokered = HashMap::new();
    settings.shared_off = store
        .server_preferences(&row.id)
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter(|(_, enabled)| !enabled)
        .map(|(server, _)| server)
        .collect();
    // One query for every enabled server with its secrets opened.
    for opened in store
        .open_user_servers(&row.id)
        .await
        .map_err(|e| e.to_string())?
    {
        let server = opened.server;
        let headers = match opened.headers {
            Ok(headers) => headers,
            Err(e) => {
                // Its headers do not open (e.g. the sealing key was removed): this server is
                // not routed rather than called without them; the others are unaffected.
                tracing::warn!(server = %server.name, error = %e, "a personal server's headers cannot be opened; skipped");
                continue;
            }
        };
        let Ok(url) = url::Url::parse(&server.url) else {
            tracing::warn!(server = %server.name, "a personal server's stored URL does not parse; skipped");
            continue;
        };
        let protocol = match server.protocol.as_str() {
            "sse" => HttpProtocol::Sse,
            "http" => HttpProtocol::Auto,
            _ => HttpProtocol::StreamableHttp,
        };
        // A brokered one: its block opened and checked by the same rules as when it was added,
        // and kept for the broker (by name, for this user only).
        let block = match opened.auth_broker {
            Ok(block) => block,
            Err(e) => {
                // E.g. the sealing key was removed: this server is unusable, the others are not.
                tracing::warn!(server = %server.name, error = %e, "a personal server's auth_broker cannot be opened; skipped");
                continue;
            }
        };
        let auth_broker = match block {
            None => None,
            Some(block) => {
                let parsed = serde_json::from_str::<serde_json::Value>(block.expose_secret())
                    .map_err(|_| "stored auth_broker does not parse".to_owned())
                    .and_then(|value| {
                        tessera_api::user_servers::personal_auth_broker(&url, &value)
                            .map_err(|e| e.message)
                    })
                    .and_then(|config| {
                        BrokeredServer::personal(&server.name, &server.url, &server.id, config)
                            .map_err(|e| e.to_string())
                    });
                match parsed {
                    Ok(b) => {
                        let config = b.config().clone();
                        brokered.insert(server.name.clone(), b);
                        Some(config)
                    }
                    Err(e) => {
                        tracing::warn!(server = %server.name, error = %e, "a personal server's auth_broker is not usable; skipped");
                        continue;
                    }
                }
            }
        };
        settings.personal.push(ServerConfig {
            name: server.name,
            enabled: true,
            transport: Transport::Http {
                url,
                protocol,
                headers,
            },
            call_timeout: None,
            init_timeout: None,
            auth_broker,
        });
    }
    directory.set_personal(&row.id, user, brokered);
    Ok(settings)
}

/// Reloads `user_id`'s settings in `gateway` if they have anything here.
pub(crate) async fn reload(gateway: &Gateway, store: &Store, user_id: &str) {
    let user = match store.get_user(user_id).await {
        Ok(Some(u)) => u,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(error = %e, "reading a changed user failed");
            return;
        }
    };
    let key = UserKey {
        issuer: user.issuer,
        subject: user.subject,
    };
    gateway.reload_user(&key).await;
}

/// Applies the REST API's user changes to this replica's gateway, then tells the other
/// replicas. The REST answer waits for it: when an admin's "disable" returns, the user's
/// sessions here have ended.
pub(crate) struct GatewayUserEvents {
    pub(crate) gateway: Weak<Gateway>,
    pub(crate) store: Store,
}

impl GatewayUserEvents {
    async fn changed(&self, user_id: &str) {
        if let Some(gateway) = self.gateway.upgrade() {
            reload(&gateway, &self.store, user_id).await;
        }
        let change = Change::UserChanged {
            user_id: user_id.to_owned(),
        };
        if let Err(e) = self.store.publish(&change).await {
            // The other replicas catch up on their next resync or when the user's settings
            // are next loaded there.
            tracing::warn!(error = %e, "publishing a user change to the other replicas failed");
        }
    }
}

impl tessera_api::UserEvents for GatewayUserEvents {
    fn servers_changed<'a>(&'a self, user_id: &'a str) -> tessera_api::events::EventFuture<'a> {
        Box::pin(self.changed(user_id))
    }

    fn disabled_changed<'a>(
        &'a self,
        user_id: &'a str,
        _disabled: bool,
    ) -> tessera_api::events::EventFuture<'a> {
        Box::pin(self.changed(user_id))
    }

    fn gateway_status(&self) -> serde_json::Value {
        let Some(gateway) = self.gateway.upgrade() else {
            return serde_json::json!({ "mcp_sessions": 0, "upstreams": [] });
        };
        let (_, readiness) = gateway.readiness();
        let upstreams: Vec<serde_json::Value> = readiness["upstreams"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(name, v)| {
                        serde_json::json!({
                            "name": name,
                            "state": v["state"],
                            "error": v["error"],
                            "tools": v["tools"],
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        serde_json::json!({ "mcp_sessions": gateway.session_count(), "upstreams": upstreams })
    }

    fn mcp_sessions(&self) -> Vec<serde_json::Value> {
        let Some(gateway) = self.gateway.upgrade() else {
            return Vec::new();
        };
        gateway
            .live_sessions()
            .iter()
            .filter_map(|s| serde_json::to_value(s).ok())
            .collect()
    }

    fn user_diagnostics(&self, issuer: &str, subject: &str) -> Vec<serde_json::Value> {
        let Some(gateway) = self.gateway.upgrade() else {
            return Vec::new();
        };
        let user = UserKey {
            issuer: issuer.to_owned(),
            subject: subject.to_owned(),
        };
        gateway
            .diagnostics_for(&user)
            .iter()
            .filter_map(|d| serde_json::to_value(d).ok())
            .collect()
    }

    fn restart_server<'a>(
        &'a self,
        name: &'a str,
    ) -> tessera_api::events::EventFuture<'a, Option<usize>> {
        Box::pin(async move {
            let gateway = self.gateway.upgrade()?;
            let ended = gateway.restart_server(name).await?;
            let change = Change::ServerRestarted {
                server: name.to_owned(),
            };
            if let Err(e) = self.store.publish(&change).await {
                tracing::warn!(error = %e, "publishing a server restart to the other replicas failed");
            }
            Some(ended)
        })
    }

    fn end_mcp_session<'a>(
        &'a self,
        handle: &'a str,
    ) -> tessera_api::events::EventFuture<'a, bool> {
        Box::pin(async move {
            let here = match self.gateway.upgrade() {
                Some(gateway) => gateway.end_session_by_handle(handle).await,
                None => false,
            };
            let change = Change::McpSessionEnded {
                handle: handle.to_owned(),
            };
            if let Err(e) = self.store.publish(&change).await {
                tracing::warn!(error = %e, "publishing an ended MCP session to the other replicas failed");
            }
            here
        })
    }
}

/// Wires the REST API's user changes to `gateway` (personal servers, switches, disabling).
pub(crate) fn attach(api: &tessera_api::ApiState, gateway: &Arc<Gateway>) {
    api.set_user_events(Arc::new(GatewayUserEvents {
        gateway: Arc::downgrade(gateway),
        store: api.store().clone(),
    }));
}
