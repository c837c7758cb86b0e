//! `tessera serve`: load the configuration, open the store, build the routes, serve.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use tessera_config::{AuthMode, Config};

pub(crate) async fn run(config_path: PathBuf, listen: Option<String>) -> anyhow::Result<()> {
    let mut config = tessera_config::load_file(&config_path).map_err(|errors| {
        let lines: Vec<String> = errors.0.iter().map(|p| format!("  {p}")).collect();
        anyhow::anyhow!(
            "invalid configuration {}:\n{}",
            config_path.display(),
            lines.join("\n")
        )
    })?;
    for key in &config.ignored {
        tracing::warn!(key = %key, "configuration key accepted for compatibility but not used");
    }
    if let Some(listen) = listen {
        config.listen = listen;
    }
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data_dir {}", config.data_dir.display()))?;
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    let (extra, api) = api_routes(&config, addr).await?;
    // With identity: one user directory and one audit queue for the broker and the activity log.
    let shared = api.as_ref().map(|api| {
        (
            Arc::new(crate::users::UserDirectory::new(api.store().clone())),
            tessera_broker::Auditor::spawn(
                api.store().clone(),
                tessera_broker::DEFAULT_AUDIT_QUEUE,
            ),
        )
    });
    // Configured brokered servers need it; with a sealing key it also serves the personal
    // servers users add with an `auth_broker` at run time.
    let broker = match (&api, &shared) {
        (Some(api), Some((users, auditor)))
            if config.servers.iter().any(|s| s.auth_broker.is_some())
                || api.store().keyring_handle().is_some() =>
        {
            let base = base_url(&config, addr)?;
            Some(
                crate::broker_setup::build(&config, api, &base, users.clone(), auditor.clone())
                    .context("cannot set up the credential broker")?,
            )
        }
        _ => None,
    };
    let gateway = tessera_proxy::Gateway::new(config).context("cannot build the HTTP client")?;
    if let Some((users, _)) = &shared {
        // Personal servers, switched-off shared servers and disabled users on the MCP path.
        gateway.set_user_directory(users.clone());
    }
    if let Some(api) = &api {
        crate::settings::attach(api, &gateway);
    }
    if let Some(api) = &api {
        gateway.set_pat_verifier(Arc::new(crate::pat_bridge::StorePatVerifier {
            store: api.store().clone(),
            api: api.clone(),
        }));
        // Session ids carry their sealed state, so another replica can resume a session.
        if let Some(keyring) = api.store().keyring_handle() {
            gateway.set_session_sealer(Arc::new(crate::session_seal::KeyringSessionSealer {
                keyring,
            }));
        }
    }
    if let (Some(api), Some((_, auditor))) = (&api, &shared) {
        api.set_auditor(auditor.clone());
    }
    if let Some((users, auditor)) = shared {
        gateway.set_observer(Arc::new(crate::activity::ActivityLog { users, auditor }));
    }
    // Replicas sharing a PostgreSQL store: apply the changes the others publish.
    if let Some(api) = &api {
        crate::broker_setup::follow_replicas(api, &gateway, broker.clone()).await;
    }
    if let Some(broker) = broker {
        crate::broker_setup::attach(&gateway, broker);
    }
    tracing::info!(mcp = %format!("http://{addr}/mcp"), sse = %format!("http://{addr}/sse"), servers = gateway.servers.len(), "tessera listening");
    // Long-lived activity streams must end for graceful shutdown to finish.
    let streams = api.clone();
    let shutdown = async move {
        shutdown_signal().await;
        if let Some(api) = streams {
            api.close_streams();
        }
    };
    let api_at_exit = api.clone();
    tessera_proxy::serve(gateway, listener, extra, shutdown).await?;
    if let Some(api) = api_at_exit {
        tessera_api::replicas::forget_report(&api).await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// Sign-in and the REST API (and the store behind them) when identity is configured; nothing
/// (and a warning) otherwise.
async fn api_routes(
    config: &Config,
    addr: std::net::SocketAddr,
) -> anyhow::Result<(axum::Router, Option<Arc<tessera_api::ApiState>>)> {
    let auth = match &config.auth {
        AuthMode::Oidc(auth) => auth,
        AuthMode::None { explicit: true } => {
            tracing::warn!("auth is \"none\": /mcp is unauthenticated (single-user, local use)");
            return Ok((axum::Router::new(), None));
        }
        AuthMode::None { explicit: false } => {
            tracing::warn!(
                "no identity configured (no `auth`): /mcp is unauthenticated; set `auth` to an identity provider, or `\"auth\": \"none\"` to confirm single-user local use"
            );
            return Ok((axum::Router::new(), None));
        }
    };
    let mut store =
        tessera_store::Store::connect(secrecy::ExposeSecret::expose_secret(&config.storage.url()))
            .await
            .context("cannot open the store")?;
    let brokered = config.servers.iter().any(|s| s.auth_broker.is_some());
    if auth.store_idp_tokens || brokered {
        let why = if brokered {
            "mcpServers with auth_broker keep per-user credentials sealed, so a sealing key is needed (set TESSERA_SEALING_KEY to 32 random bytes, base64)"
        } else {
            "auth.store_idp_tokens is on, so a sealing key is needed (set TESSERA_SEALING_KEY to 32 random bytes, base64)"
        };
        let keyring = tessera_store::Keyring::from_env().context(why)?;
        store = store.with_keyring(Arc::new(keyring));
    } else if let Ok(keyring) = tessera_store::Keyring::from_env() {
        // Not needed for credentials, but when given it lets sign-ins, consent pages and MCP
        // sessions move between replicas (their state is sealed rather than kept in memory).
        store = store.with_keyring(Arc::new(keyring));
    }
    let base_url = base_url(config, addr)?;
    let state = tessera_api::ApiState::new(auth, &base_url, store.clone())
        .context("cannot set up browser sign-in")?;
    state.set_servers(tessera_api::servers::ServerView::list(&config.servers));
    state.set_user_servers_config(config.user_servers.clone(), config.tool_separator.clone());
    state.set_activity_retention(tessera_api::activity::Retention {
        max_age_days: u32::try_from(config.activity_retention_days).unwrap_or(u32::MAX),
        max_records: u64::try_from(config.activity_max_records).unwrap_or(u64::MAX),
    });
    tracing::info!(login = %format!("{}auth/login", with_slash(&base_url)), "browser sign-in enabled");
    Ok((tessera_api::router(state.clone()), Some(state)))
}

/// How browsers reach the gateway: `public_url`, else `http://<listen address>`.
fn base_url(config: &Config, addr: std::net::SocketAddr) -> anyhow::Result<url::Url> {
    match &config.public_url {
        Some(url) => Ok(url.clone()),
        None => url::Url::parse(&format!("http://{addr}"))
            .with_context(|| format!("cannot make a base URL from the listen address {addr}")),
    }
}

fn with_slash(url: &url::Url) -> String {
    let s = url.as_str();
    if s.ends_with('/') {
        s.to_owned()
    } else {
        format!("{s}/")
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("shutting down: finishing in-flight calls");
}
