//! Users' own settings on the MCP path: the gateway's [`tessera_proxy::users::UserDirectory`]
//! over the store (personal servers, switched-off shared servers, the disabled flag), and the
//! API's [`tessera_api::UserEvents`], which applies a change made through the REST API here
//! and tells the other replicas.

use std::future::Future;
use std::pin::Pin;

use tessera_config::{HttpProtocol, ServerConfig, Transport};
use tessera_identity::UserKey;
use tessera_proxy::Gateway;
use tessera_proxy::users::UserSettings;
use tessera_store::Store;

use crate::users::UserDirectory;

impl tessera_proxy::users::UserDirectory for UserDirectory {
    fn load<'a>(
        &'a self,
        user: &'a UserKey,
    ) -> Pin<Box<dyn Future<Output = Result<UserSettings, String>> + Send + 'a>> {
        Box::pin(async move { load(self.store(), user).await })
    }
}

async fn load(store: &Store, user: &UserKey) -> Result<UserSettings, String> {
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
        return Ok(settings);
    }
    settings.shared_off = store
        .server_preferences(&row.id)
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter(|(_, enabled)| !enabled)
        .map(|(server, _)| server)
        .collect();
    for server in store
        .list_user_servers(&row.id)
        .await
        .map_err(|e| e.to_string())?
    {
        if !server.enabled {
            continue;
        }
        let headers = store
            .user_server_headers(&server)
            .await
            .map_err(|e| e.to_string())?;
        let Ok(url) = url::Url::parse(&server.url) else {
            tracing::warn!(server = %server.name, "a personal server's stored URL does not parse; skipped");
            continue;
        };
        let protocol = match server.protocol.as_str() {
            "sse" => HttpProtocol::Sse,
            "http" => HttpProtocol::Auto,
            _ => HttpProtocol::StreamableHttp,
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
            auth_broker: None,
        });
    }
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
