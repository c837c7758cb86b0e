//! Builds the credential broker from the configuration and attaches it to the gateway: the
//! resolver (cache, sealed store, token exchange / OBO, connect refresh, policy, audit), the
//! connect flows and their elicitations, and the task that turns finished connect flows into
//! MCP notifications.

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
    let elicitations = Arc::new(Elicitations::default());
    api.set_broker(tessera_api::credentials::BrokerRoutes {
        resolver: resolver.clone(),
        connector: connector.clone(),
        elicitations: elicitations.clone(),
        servers: servers.clone(),
    });
    tracing::info!(servers = servers.len(), "credential broker enabled");
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
            if let Some(server) = broker.servers.get(&event.server) {
                broker
                    .resolver
                    .forget_user_server(&event.user_id, server.key());
            }
            let Some(gateway) = gateway.upgrade() else {
                return;
            };
            if let Some(user) = broker.user_key(&event.user_id) {
                gateway.credential_changed(&user, &event.server);
            }
        }
    });
}
