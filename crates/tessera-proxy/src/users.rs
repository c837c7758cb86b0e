//! What the gateway knows about each signed-in user beyond their token: whether an admin
//! disabled them, the shared servers they switched off for themselves, and their own
//! (personal) upstream servers.
//!
//! The data path knows no SQL: the binary implements [`UserDirectory`] over the store. A
//! user's [`UserView`] is loaded once, when their first request arrives, and kept in memory
//! while they have a session (the idle reaper drops it afterwards); a change made through the
//! REST API or by another replica replaces it ([`crate::Gateway::reload_user`]). So a routed
//! call reads the view with one short read lock and no database round trip.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tessera_config::ServerConfig;
use tessera_identity::UserKey;

use crate::gateway::ServerEntry;
use crate::{FastMap, FastSet};

/// A user's settings as the store holds them.
#[derive(Debug, Default, Clone)]
pub struct UserSettings {
    /// An admin disabled the user: every MCP request is refused.
    pub disabled: bool,
    /// Shared (configured) servers the user switched off for themselves.
    pub shared_off: Vec<String>,
    /// The user's own upstream servers (HTTP only; headers already unsealed), enabled or not.
    pub personal: Vec<ServerConfig>,
}

/// Loads a user's settings (the binary implements it over the store).
pub trait UserDirectory: Send + Sync {
    fn load<'a>(
        &'a self,
        user: &'a UserKey,
    ) -> Pin<Box<dyn Future<Output = Result<UserSettings, String>> + Send + 'a>>;
}

/// A user's settings, ready for routing.
#[derive(Default)]
pub struct UserView {
    pub disabled: bool,
    shared_off: FastSet<String>,
    /// Enabled personal servers, by name.
    personal: FastMap<String, Arc<ServerEntry>>,
    /// The same, in name order (lists are stable).
    personal_order: Vec<Arc<ServerEntry>>,
}

impl std::fmt::Debug for UserView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserView")
            .field("disabled", &self.disabled)
            .field("shared_off", &self.shared_off)
            .field("personal", &self.personal.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl UserView {
    /// Builds the view; `previous` lends its entries for personal servers whose configuration
    /// did not change, so their discovered catalogue survives an unrelated edit.
    pub(crate) fn build(
        settings: UserSettings,
        owner: &UserKey,
        defaults: &tessera_config::Config,
        previous: Option<&UserView>,
    ) -> Self {
        let mut personal = FastMap::default();
        let mut personal_order = Vec::new();
        let mut configs = settings.personal;
        configs.sort_by(|a, b| a.name.cmp(&b.name));
        for config in configs.into_iter().filter(|c| c.enabled) {
            let reused = previous
                .and_then(|p| p.personal.get(&config.name))
                .filter(|e| same_server(&e.config, &config))
                .cloned();
            let entry =
                reused.unwrap_or_else(|| ServerEntry::personal(config, owner.clone(), defaults));
            personal.insert(entry.config.name.clone(), entry.clone());
            personal_order.push(entry);
        }
        UserView {
            disabled: settings.disabled,
            shared_off: settings.shared_off.into_iter().collect(),
            personal,
            personal_order,
        }
    }

    /// Whether the user switched the shared server `name` off.
    pub fn switched_off(&self, name: &str) -> bool {
        self.shared_off.contains(name)
    }

    /// The user's enabled personal server `name`.
    pub fn personal(&self, name: &str) -> Option<&Arc<ServerEntry>> {
        self.personal.get(name)
    }

    /// The user's enabled personal servers, in name order.
    pub fn personal_servers(&self) -> &[Arc<ServerEntry>] {
        &self.personal_order
    }

    /// Personal servers of `self` that `newer` no longer has in the same shape (removed,
    /// disabled or reconfigured): their upstream sessions must end.
    pub(crate) fn gone_in(&self, newer: &UserView) -> Vec<String> {
        self.personal
            .iter()
            .filter(|(name, entry)| {
                newer
                    .personal
                    .get(*name)
                    .is_none_or(|n| !Arc::ptr_eq(n, entry))
            })
            .map(|(name, _)| name.clone())
            .collect()
    }
}

/// Whether two personal server configurations connect the same way (URL, protocol, headers).
fn same_server(a: &ServerConfig, b: &ServerConfig) -> bool {
    use secrecy::ExposeSecret;
    use tessera_config::Transport;
    match (&a.transport, &b.transport) {
        (
            Transport::Http {
                url: ua,
                protocol: pa,
                headers: ha,
            },
            Transport::Http {
                url: ub,
                protocol: pb,
                headers: hb,
            },
        ) => {
            ua == ub
                && pa == pb
                && ha.len() == hb.len()
                && ha.iter().zip(hb).all(|((na, va), (nb, vb))| {
                    na == nb && va.expose_secret() == vb.expose_secret()
                })
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;
    use tessera_config::{HttpProtocol, Transport};

    fn personal(name: &str, url: &str, header: &str, enabled: bool) -> ServerConfig {
        ServerConfig {
            name: name.into(),
            enabled,
            transport: Transport::Http {
                url: url.parse().unwrap(),
                protocol: HttpProtocol::StreamableHttp,
                headers: vec![("X-Key".into(), SecretString::from(header.to_owned()))],
            },
            call_timeout: None,
            init_timeout: None,
            auth_broker: None,
        }
    }

    #[test]
    fn a_view_keeps_unchanged_servers_and_names_the_changed_ones() {
        let owner = UserKey {
            issuer: "i".into(),
            subject: "alice".into(),
        };
        let defaults = tessera_config::Config::default();
        let first = UserView::build(
            UserSettings {
                disabled: false,
                shared_off: vec!["github".into()],
                personal: vec![
                    personal("b", "https://b.example/mcp", "k1", true),
                    personal("a", "https://a.example/mcp", "k1", true),
                    personal("off", "https://c.example/mcp", "k1", false),
                ],
            },
            &owner,
            &defaults,
            None,
        );
        assert!(first.switched_off("github") && !first.switched_off("slack"));
        let names: Vec<&str> = first
            .personal_servers()
            .iter()
            .map(|e| e.config.name.as_str())
            .collect();
        assert_eq!(names, ["a", "b"], "name order, disabled ones left out");
        assert_eq!(first.personal("a").unwrap().owner.as_ref(), Some(&owner));
        assert!(first.personal("a").unwrap().per_user());
        // b's header changes, a stays: a's entry (and its catalogue) is kept, b's is new.
        let second = UserView::build(
            UserSettings {
                disabled: false,
                shared_off: vec![],
                personal: vec![
                    personal("a", "https://a.example/mcp", "k1", true),
                    personal("b", "https://b.example/mcp", "k2", true),
                ],
            },
            &owner,
            &defaults,
            Some(&first),
        );
        assert!(Arc::ptr_eq(
            first.personal("a").unwrap(),
            second.personal("a").unwrap()
        ));
        assert_eq!(first.gone_in(&second), ["b"]);
        assert!(second.gone_in(&second).is_empty());
    }
}
