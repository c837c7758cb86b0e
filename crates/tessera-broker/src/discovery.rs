//! RFC 8414 authorization server metadata: when `auth_broker.issuer` is set and an endpoint is
//! not, it is read from `{issuer}/.well-known/oauth-authorization-server` (falling back to
//! `/.well-known/openid-configuration`). The metadata's `issuer` must equal the configured one.
//! Successful lookups are cached per issuer for the life of the [`Discovery`].

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::Deserialize;
use tessera_config::AuthBrokerConfig;
use url::Url;

use crate::error::BrokerError;
use crate::token::read_capped;

/// The endpoints a server's grants use, explicit or discovered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    pub token: Url,
    pub authorization: Option<Url>,
    pub revocation: Option<Url>,
}

#[derive(Debug, Clone, Deserialize)]
struct Metadata {
    issuer: Option<String>,
    token_endpoint: Option<String>,
    authorization_endpoint: Option<String>,
    revocation_endpoint: Option<String>,
}

fn url_of(s: &Option<String>) -> Option<Url> {
    s.as_deref().and_then(|s| Url::parse(s).ok())
}

/// A cache of discovered metadata by issuer. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Discovery {
    cache: Arc<RwLock<HashMap<String, Arc<Metadata>>>>,
}

/// The well-known URL for `suffix` under `issuer` (RFC 8414 §3: inserted between host and path).
fn well_known(issuer: &Url, suffix: &str) -> Url {
    let mut url = issuer.clone();
    let path = issuer.path().trim_end_matches('/');
    url.set_path(&format!("/.well-known/{suffix}{path}"));
    url.set_query(None);
    url
}

/// The OpenID form: appended to the issuer's path.
fn openid_well_known(issuer: &Url) -> Url {
    let mut url = issuer.clone();
    let path = issuer.path().trim_end_matches('/');
    url.set_path(&format!("{path}/.well-known/openid-configuration"));
    url.set_query(None);
    url
}

fn same_issuer(a: &str, b: &Url) -> bool {
    a.trim_end_matches('/') == b.as_str().trim_end_matches('/')
}

impl Discovery {
    pub fn new() -> Self {
        Self::default()
    }

    /// The endpoints for `cfg`: explicit ones win; missing ones come from the issuer's metadata.
    /// The token endpoint is required (a missing one is [`BrokerError::MissingField`], or the
    /// discovery error); the authorization endpoint too when `need_authorization` (connect).
    /// The metadata is fetched only when a required endpoint is not configured (or it is
    /// cached already), so an unreachable issuer never delays explicitly configured grants.
    pub async fn endpoints(
        &self,
        http: &reqwest::Client,
        timeout: Duration,
        cfg: &AuthBrokerConfig,
        need_authorization: bool,
    ) -> Result<Endpoints, BrokerError> {
        let cached = cfg.issuer.as_ref().is_some_and(|i| {
            self.cache
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .contains_key(i.as_str())
        });
        let needs = cached
            || cfg.token_endpoint.is_none()
            || (need_authorization && cfg.authorization_endpoint.is_none());
        let meta = match (&cfg.issuer, needs) {
            (Some(issuer), true) => Some(self.metadata(http, timeout, issuer).await),
            _ => None,
        };
        // An explicit token endpoint does not need the metadata: a discovery failure only
        // matters when something required is missing.
        let discovered = |pick: fn(&Metadata) -> Option<Url>| -> Result<Option<Url>, BrokerError> {
            match &meta {
                None => Ok(None),
                Some(Ok(m)) => Ok(pick(m)),
                Some(Err(e)) => Err(e.clone()),
            }
        };
        let token = match &cfg.token_endpoint {
            Some(t) => t.clone(),
            None => discovered(|m| url_of(&m.token_endpoint))?
                .ok_or(BrokerError::MissingField("token_endpoint"))?,
        };
        let authorization = match &cfg.authorization_endpoint {
            Some(a) => Some(a.clone()),
            None if need_authorization => Some(
                discovered(|m| url_of(&m.authorization_endpoint))?
                    .ok_or(BrokerError::MissingField("authorization_endpoint"))?,
            ),
            None => discovered(|m| url_of(&m.authorization_endpoint))
                .ok()
                .flatten(),
        };
        let revocation = match &cfg.revocation_endpoint {
            Some(r) => Some(r.clone()),
            None => discovered(|m| url_of(&m.revocation_endpoint))
                .ok()
                .flatten(),
        };
        Ok(Endpoints {
            token,
            authorization,
            revocation,
        })
    }

    async fn metadata(
        &self,
        http: &reqwest::Client,
        timeout: Duration,
        issuer: &Url,
    ) -> Result<Arc<Metadata>, BrokerError> {
        let key = issuer.as_str().to_owned();
        if let Some(hit) = self
            .cache
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&key)
        {
            return Ok(hit.clone());
        }
        let mut last = BrokerError::Discovery {
            issuer: key.clone(),
            why: "unreachable",
        };
        for url in [
            well_known(issuer, "oauth-authorization-server"),
            openid_well_known(issuer),
        ] {
            let request = http
                .get(url)
                .header(http::header::ACCEPT, "application/json");
            let answer = tokio::time::timeout(timeout, read_capped(request)).await;
            let (status, bytes) = match answer {
                Ok(Ok(answer)) => answer,
                Ok(Err(_)) | Err(_) => continue,
            };
            let Some(bytes) = bytes.filter(|_| status == 200) else {
                last = BrokerError::Discovery {
                    issuer: key.clone(),
                    why: "no metadata",
                };
                continue;
            };
            let Ok(meta) = serde_json::from_slice::<Metadata>(&bytes) else {
                last = BrokerError::Discovery {
                    issuer: key.clone(),
                    why: "malformed metadata",
                };
                continue;
            };
            if !meta
                .issuer
                .as_deref()
                .is_some_and(|i| same_issuer(i, issuer))
            {
                // RFC 8414 §3.3: metadata naming another issuer must not be used.
                last = BrokerError::Discovery {
                    issuer: key.clone(),
                    why: "issuer mismatch",
                };
                continue;
            }
            let meta = Arc::new(meta);
            self.cache
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(key, meta.clone());
            return Ok(meta);
        }
        tracing::warn!(issuer = %issuer, error = %last, "authorization server discovery failed");
        Err(last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_known_urls_follow_rfc_8414() {
        let root = Url::parse("https://as.example.com").unwrap();
        assert_eq!(
            well_known(&root, "oauth-authorization-server").as_str(),
            "https://as.example.com/.well-known/oauth-authorization-server"
        );
        let tenant = Url::parse("https://as.example.com/tenant/v2.0").unwrap();
        assert_eq!(
            well_known(&tenant, "oauth-authorization-server").as_str(),
            "https://as.example.com/.well-known/oauth-authorization-server/tenant/v2.0"
        );
        assert_eq!(
            openid_well_known(&tenant).as_str(),
            "https://as.example.com/tenant/v2.0/.well-known/openid-configuration"
        );
    }
}
