//! Connect links handed to MCP clients through URL elicitation: each link names the user it was
//! made for, so the connect page can refuse another signed-in user (the MCP specification's
//! phishing rule for URL elicitation). In memory, bounded, 10-minute TTL.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

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
