//! Builds the credential broker from the configuration and attaches it to the gateway: the
//! resolver (cache, sealed store, token exchange / OBO, connect refresh, policy, audit), the
//! connect flows and their elicitations, the task that turns finished connect flows into MCP
//! notifications, and the one that applies what other replicas sharing the store publish.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tessera_api::ApiState;
use tessera_api::subject_token::BrokerSubjects;
use tessera_broker::{
    Auditor, BrokeredServer, ConfigPolicy, ConnectOutcome, Connector, Discovery, Elicitations,
    Resolver, StoreCredentials, TokenExchanger,
};
use tessera_config::Config;
use tessera_store::Change;
use tokio::sync::broadcast::error::RecvError;

use crate::broker_bridge::BrokerBridge;
use crate::users::UserDirectory;

/// Token endpoints and authorization servers are asked rarely (results cached), so one plain
/// reqwest client with a whole-request bound serves them all.
const AUTHORIZATION_SERVER_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) fn build(
    config: &Config,
    api: &Arc<ApiState>,
    base_url: &url::Url,
    users: Arc<UserDirectory>,
    auditor: Auditor,
) -> anyhow::Result<Arc<BrokerBridge>> {
    let store = api.store().clone();
    let http = reqwest::Client::builder()
        .timeout(AUTHORIZATION_SERVER_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .context("HTTP client for authorization servers")?;
    let mut servers = HashMap::new();
    for server in config
        .servers
        .iter()
        .filter(|s| s.enabled && s.auth_broker.is_some())
    {
        let brokered = BrokeredServer::new(server)
            .with_context(|| format!("mcpServers entry {:?}", server.name))?;
        servers.insert(server.name.clone(), brokered);
    }
    let discovery = Discovery::new();
    let connector = Arc::new(
        Connector::builder(store.clone(), http.clone(), base_url.clone())
            .personal_http(personal_authorization_client(config)?)
            .auditor(auditor.clone())
            .discovery(discovery.clone())
            .servers(servers.values())
            .build(),
    );
    let exchanger = TokenExchanger::new(http).with_discovery(discovery);
    let resolver = Resolver::builder(
        exchanger,
        Arc::new(StoreCredentials::new(store.clone())),
        Arc::new(BrokerSubjects(api.clone())),
    )
    .auditor(auditor.clone())
    .connector(connector.clone())
    .policy(Arc::new(ConfigPolicy))
    .build();
    // Connect links carry their sealed state, so the browser may reach any replica.
    let elicitations = Arc::new(match store.keyring_handle() {
        Some(keyring) => Elicitations::sealed(keyring),
        None => Elicitations::default(),
    });
    api.set_broker(tessera_api::credentials::BrokerRoutes {
        resolver: resolver.clone(),
        connector: connector.clone(),
        elicitations: elicitations.clone(),
        servers: servers.clone(),
    });
    tracing::info!(
        servers = servers.len(),
        "credential broker enabled (configured servers, and users' personal servers with auth_broker)"
    );
    Ok(Arc::new(BrokerBridge::new(
        resolver,
        servers,
        Some(connector),
        elicitations,
        Some(auditor),
        users,
    )))
}

/// Hands the broker to the gateway and follows connect flows and disconnects: the user's cached
/// credential is dropped, their catalogue rediscovered, their clients told (list_changed, and
/// `notifications/elicitation/complete` for the elicitations that asked for this connection).
pub(crate) fn attach(gateway: &Arc<tessera_proxy::Gateway>, broker: Arc<BrokerBridge>) {
    gateway.set_broker(broker.clone());
    let Some(connector) = broker.connector.clone() else {
        return;
    };
    let mut events = connector.subscribe();
    let gateway = Arc::downgrade(gateway);
    tokio::spawn(async move {
        loop {
            let event = match events.recv().await {
                Ok(event) => event,
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!(
                        missed,
                        "connect events missed; affected users see changes on their next list"
                    );
                    continue;
                }
                Err(RecvError::Closed) => return,
            };
            // Connected or disconnected: the user's view of the server changes.
            if !matches!(
                event.outcome,
                ConnectOutcome::Connected | ConnectOutcome::Disconnected
            ) {
                continue;
            }
            let Some(gateway) = gateway.upgrade() else {
                return;
            };
            credential_changed(&broker, &gateway, &event.user_id, &event.server, None);
        }
    });
}

/// A user connected or disconnected `server`, on this replica (a `ConnectEvent`) or on another
/// (a `Change::Credential`, which names the server's key as well): the cached credential is
/// dropped (the next call reads the store), the user's catalogue of the server forgotten, and
/// the user's sessions on this replica told — `list_changed`, and
/// `notifications/elicitation/complete` for the elicitations that asked for this connection.
fn credential_changed(
    broker: &BrokerBridge,
    gateway: &tessera_proxy::Gateway,
    user_id: &str,
    server: &str,
    server_key: Option<&str>,
) {
    let local_key = broker
        .server_for(user_id, server)
        .map(|s| s.key().to_owned());
    if let Some(key) = &local_key {
        broker.resolver.forget_user_server(user_id, key);
    }
    if let Some(key) = server_key.filter(|k| Some(*k) != local_key.as_deref()) {
        broker.resolver.forget_user_server(user_id, key);
    }
    if let Some(user) = broker.user_key(user_id) {
        gateway.credential_changed(&user, server);
    }
}

/// Replicas sharing a PostgreSQL store: applies the changes the others publish
/// (`Store::subscribe`; nothing to follow on SQLite). A connect or disconnect elsewhere is
/// handled exactly as one here ([`credential_changed`]); a revocation at Tessera's
/// authorization server evicts its tokens from the verification cache; after the listener
/// reconnects (`Change::Resync`), the resolver's cache and the verification cache are dropped.
///
/// The bound: **immediate while the listener is connected; after a reconnect every cache is
/// dropped** (and the verification cache expires within 30 s regardless).
pub(crate) async fn follow_replicas(
    api: &Arc<ApiState>,
    gateway: &Arc<tessera_proxy::Gateway>,
    broker: Option<Arc<BrokerBridge>>,
) {
    let Some(mut changes) = api.store().subscribe().await else {
        return;
    };
    tracing::info!(
        replica = api.store().replica_id().unwrap_or_default(),
        "following the other replicas' changes (PostgreSQL LISTEN/NOTIFY)"
    );
    let api = api.clone();
    let gateway = Arc::downgrade(gateway);
    tokio::spawn(async move {
        while let Some(change) = changes.recv().await {
            let Some(gateway) = gateway.upgrade() else {
                return;
            };
            match (&change, &broker) {
                (
                    Change::Credential {
                        user_id,
                        server,
                        server_key,
                        ..
                    },
                    Some(broker),
                ) => {
                    tracing::debug!(server = %server, "credential changed on another replica");
                    credential_changed(broker, &gateway, user_id, server, Some(server_key));
                }
                (Change::UserChanged { user_id }, _) => {
                    // Disabled or re-enabled elsewhere: this replica's token checks of that
                    // user go too (the access-token cache is handled by apply_change).
                    tessera_api::pat::forget_user(user_id);
                    crate::settings::reload(&gateway, api.store(), user_id).await;
                }
                (Change::McpSessionEnded { handle }, _) => {
                    gateway.end_session_by_handle(handle).await;
                }
                (Change::ServerRestarted { server }, _) => {
                    gateway.restart_server(server).await;
                }
                (Change::Resync, broker) => {
                    // Messages were lost while the listener was away: drop every cache built
                    // from the store.
                    if let Some(broker) = broker {
                        broker.resolver.forget_all();
                    }
                    gateway.forget_all_user_catalogs();
                    tessera_api::pat::forget_all();
                    for user in gateway.loaded_users() {
                        gateway.reload_user(&user).await;
                    }
                }
                _ => {}
            }
            tessera_api::authz::verify::apply_change(&api, &change);
        }
    });
}

/// Resolves the names of personal servers' authorization servers (a user's choice of
/// endpoints) and refuses any that resolves to an address `user_server_allowed_networks` does
/// not allow — when the request is made, so a name that changes after it was checked (DNS
/// rebinding) gets nowhere. (Literal addresses were checked when the server was added.)
struct PersonalServerResolver {
    policy: Arc<tessera_config::UserServersConfig>,
}

impl reqwest::dns::Resolve for PersonalServerResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        let policy = self.policy.clone();
        Box::pin(async move {
            let addrs = policy.resolve_allowed(&host, 0).await?;
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The HTTP client for personal servers' authorization servers: guarded resolver, no
/// redirects, the same time limit.
fn personal_authorization_client(config: &Config) -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(AUTHORIZATION_SERVER_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .dns_resolver(Arc::new(PersonalServerResolver {
            policy: Arc::new(config.user_servers.clone()),
        }))
        .build()
        .context("HTTP client for personal servers' authorization servers")
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::dns::Resolve as _;
    use std::str::FromStr as _;

    #[tokio::test]
    async fn personal_authorization_servers_resolve_only_to_allowed_addresses() {
        let refusing = PersonalServerResolver {
            policy: Arc::new(tessera_config::UserServersConfig::default()),
        };
        let name = reqwest::dns::Name::from_str("localhost").unwrap();
        let e = match refusing.resolve(name).await {
            Ok(_) => panic!("localhost resolved for a personal server"),
            Err(e) => e.to_string(),
        };
        assert!(e.contains("may not reach"), "{e}");
        let allowing = PersonalServerResolver {
            policy: Arc::new(tessera_config::UserServersConfig {
                max_per_user: 1,
                allowed_networks: vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()],
            }),
        };
        let name = reqwest::dns::Name::from_str("localhost").unwrap();
        assert!(allowing.resolve(name).await.is_ok());
    }
}
