//! Connect links handed to MCP clients through URL elicitation: each link names the user it was
//! made for, so the connect page can refuse another signed-in user (the MCP specification's
//! phishing rule for URL elicitation). 10-minute TTL.
//!
//! With a keyring ([`Elicitations::sealed`]) the link's id *is* its state, sealed (`s.<sealed
//! user, server, time>`), so the link works on whichever replica the browser reaches; without
//! one, links live in this process's memory, bounded.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use secrecy::ExposeSecret as _;
use serde::{Deserialize, Serialize};
use tessera_store::{Aad, Keyring, UnixTime, now_unix};

use crate::connector::Connector;
use crate::error::BrokerError;
use crate::resolver::BrokeredServer;
use crate::token::random_token;

/// How long an elicitation link stays valid.
pub const ELICITATION_TTL: Duration = Duration::from_secs(600);
/// Links kept at most (the oldest go first).
pub const MAX_ELICITATIONS: usize = 10_000;

#[derive(Debug)]
struct Entry {
    user_id: String,
    server: String,
    created: Instant,
}

/// The registry of elicitation links.
#[derive(Debug)]
pub struct Elicitations {
    entries: Mutex<HashMap<String, Entry>>,
    ttl: Duration,
    capacity: usize,
    keyring: Option<Arc<Keyring>>,
}

/// A link's state when sealed into its id.
#[derive(Serialize, Deserialize)]
struct SealedLink {
    u: String,
    s: String,
    t: UnixTime,
    /// Makes every link distinct.
    n: String,
}

const SEALED_PREFIX: &str = "s.";

fn link_aad() -> Aad {
    Aad::new("connect-link")
}

impl Default for Elicitations {
    fn default() -> Self {
        Self::new(ELICITATION_TTL, MAX_ELICITATIONS)
    }
}

impl Elicitations {
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            ttl,
            capacity: capacity.max(1),
            keyring: None,
        }
    }

    /// Links whose ids carry their sealed state: valid on every replica sharing `keyring`.
    pub fn sealed(keyring: Arc<Keyring>) -> Self {
        Self {
            keyring: Some(keyring),
            ..Self::default()
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A new link for `user_id` to connect `server`: `(id, url)` with
    /// `url = connector.connect_url(server) + "?elicitation=<id>"`.
    pub fn create(
        &self,
        connector: &Connector,
        user_id: &str,
        server: &BrokeredServer,
    ) -> Result<(String, String), BrokerError> {
        if let Some(keyring) = &self.keyring {
            let link = SealedLink {
                u: user_id.to_owned(),
                s: server.name().to_owned(),
                t: now_unix(),
                n: random_token(8)?,
            };
            let plain = serde_json::to_vec(&link)
                .map_err(|_| BrokerError::Store("cannot encode a connect link"))?;
            let sealed = keyring
                .seal(&plain, &link_aad())
                .map_err(|_| BrokerError::Store("cannot seal a connect link"))?;
            let id = format!("{SEALED_PREFIX}{sealed}");
            let url = format!("{}?elicitation={id}", connector.connect_url(server));
            return Ok((id, url));
        }
        let id = random_token(16)?;
        let url = format!("{}?elicitation={id}", connector.connect_url(server));
        let mut entries = self.lock();
        let now = Instant::now();
        if entries.len() >= self.capacity {
            entries.retain(|_, e| now.duration_since(e.created) < self.ttl);
        }
        while entries.len() >= self.capacity {
            let Some(oldest) = entries
                .iter()
                .min_by_key(|(_, e)| e.created)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            entries.remove(&oldest);
        }
        entries.insert(
            id.clone(),
            Entry {
                user_id: user_id.to_owned(),
                server: server.name().to_owned(),
                created: now,
            },
        );
        Ok((id, url))
    }

    /// `(user_id, server name)` of a live link.
    pub fn get(&self, id: &str) -> Option<(String, String)> {
        if let Some(sealed) = id.strip_prefix(SEALED_PREFIX) {
            let plain = self.keyring.as_ref()?.open(sealed, &link_aad()).ok()?;
            let link: SealedLink = serde_json::from_slice(plain.expose_secret()).ok()?;
            let age = u64::try_from(now_unix().saturating_sub(link.t)).ok()?;
            return (Duration::from_secs(age) < self.ttl).then_some((link.u, link.s));
        }
        let entries = self.lock();
        let e = entries.get(id)?;
        (e.created.elapsed() < self.ttl).then(|| (e.user_id.clone(), e.server.clone()))
    }

    /// Forget a link (e.g. once its flow completed).
    pub fn remove(&self, id: &str) {
        self.lock().remove(id);
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(name: &str) -> BrokeredServer {
        let cfg = tessera_config::AuthBrokerConfig {
            mode: tessera_config::BrokerMode::OauthConnect,
            token_endpoint: None,
            authorization_endpoint: None,
            resource: None,
            scopes: vec![],
            client_id: None,
            client_secret: None,
            header: "Authorization".into(),
            header_format: "Bearer {token}".into(),
            audience: None,
            subject_token_type: Default::default(),
            client_auth: Default::default(),
            private_key_file: None,
            revocation_endpoint: None,
            issuer: None,
            allowed_users: vec![],
            allowed_emails: vec![],
            allowed_groups: vec![],
        };
        BrokeredServer::from_parts(name, "https://example.test/mcp", cfg).unwrap()
    }

    async fn connector() -> (tempfile::TempDir, Connector) {
        let dir = tempfile::tempdir().unwrap();
        let store = tessera_store::Store::open(dir.path()).await.unwrap();
        let c = Connector::new(
            store,
            reqwest::Client::new(),
            url::Url::parse("https://gw.example.test/").unwrap(),
            None,
        );
        (dir, c)
    }

    #[tokio::test]
    async fn links_name_their_user_expire_and_stay_bounded() {
        let (_dir, c) = connector().await;
        let gh = server("git hub");
        let e = Elicitations::new(Duration::from_millis(200), 2);
        let (id, url) = e.create(&c, "u1", &gh).unwrap();
        assert_eq!(
            url,
            format!(
                "https://gw.example.test/api/v1/user/credentials/git%20hub/connect?elicitation={id}"
            )
        );
        assert!(id.len() >= 22);
        assert_eq!(e.get(&id), Some(("u1".to_owned(), "git hub".to_owned())));
        let (id2, _) = e.create(&c, "u2", &gh).unwrap();
        let (id3, _) = e.create(&c, "u3", &gh).unwrap();
        assert_eq!(e.len(), 2, "bounded: the oldest went first");
        assert_eq!(e.get(&id), None);
        assert!(e.get(&id2).is_some() && e.get(&id3).is_some());
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(e.get(&id3), None, "expired");
        e.remove(&id2);
        assert_eq!(e.len(), 1);
    }

    #[tokio::test]
    async fn sealed_links_work_on_another_replica_with_the_key_only() {
        let (_dir, c) = connector().await;
        let gh = server("git hub");
        let ring = |b| {
            Arc::new(
                Keyring::new(
                    tessera_store::SealingKey::from_bytes(&[b; 32]).unwrap(),
                    vec![],
                )
                .unwrap(),
            )
        };
        let a = Elicitations::sealed(ring(1));
        let b = Elicitations::sealed(ring(1));
        let (id, url) = a.create(&c, "alice@example.test", &gh).unwrap();
        assert!(id.starts_with("s.") && url.ends_with(&id));
        // Not a two-letter id: random base64url held "u1" by chance once in CI. '@' is outside
        // the alphabet, and "alice" turns up by chance about once in 10^7 links.
        assert!(
            !id.contains("alice") && !id.contains('@'),
            "the user is not readable in the link"
        );
        assert_eq!(
            b.get(&id),
            Some(("alice@example.test".to_owned(), "git hub".to_owned()))
        );
        assert_eq!(a.len(), 0, "nothing kept in memory");
        assert_eq!(Elicitations::sealed(ring(2)).get(&id), None);
        assert_eq!(Elicitations::default().get(&id), None);
        let short = Elicitations {
            ttl: Duration::ZERO,
            ..Elicitations::sealed(ring(1))
        };
        assert_eq!(short.get(&id), None, "expired");
    }
}
