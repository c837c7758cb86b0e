//! Who a `client_id` is: a client registered here (RFC 7591, in the store), or — when the id is
//! an https URL — a client ID metadata document (MCP 2025-11-25, SEP-991) fetched from that URL
//! ([`super::fetch`]), checked, cached for [`DOCUMENT_CACHE`] and recorded in the store so codes,
//! consent and tokens can refer to it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use tessera_store::{OauthClientSource, Store};
use url::Url;

use super::fetch::{self, FetchError, FetchSetupError};

/// How long a fetched metadata document is reused.
pub(crate) const DOCUMENT_CACHE: Duration = Duration::from_secs(300);
const CACHE_MAX: usize = 1024;
/// At most this many redirect URIs per client.
const MAX_REDIRECT_URIS: usize = 16;
const MAX_URI_LEN: usize = 2048;
const MAX_NAME_LEN: usize = 200;

/// How a client authenticates at the token endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AuthMethod {
    None,
    ClientSecretBasic,
    ClientSecretPost,
}

impl AuthMethod {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::ClientSecretBasic => "client_secret_basic",
            Self::ClientSecretPost => "client_secret_post",
        }
    }
}

/// A client as the authorization server needs it.
#[derive(Clone, Debug)]
pub(crate) struct ClientInfo {
    pub(crate) client_id: String,
    /// What the consent page calls it.
    pub(crate) name: String,
    pub(crate) redirect_uris: Vec<String>,
    pub(crate) auth_method: AuthMethod,
}

/// Why a client is not accepted (shown on the error page; never redirected).
#[derive(Debug, thiserror::Error)]
pub(crate) enum ClientError {
    #[error("unknown client_id")]
    Unknown,
    #[error("client metadata documents are not accepted by this server")]
    DocumentsDisabled,
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error("invalid client metadata: {0}")]
    Invalid(String),
    #[error("storage error")]
    Store(#[from] tessera_store::StoreError),
}

/// The client registry's in-memory part.
pub(crate) struct Clients {
    http: reqwest::Client,
    documents: bool,
    cache: Mutex<HashMap<String, (Arc<ClientInfo>, Instant)>>,
}

/// Whether `client_id` names a metadata document rather than a registration.
pub(crate) fn is_document_url(client_id: &str) -> bool {
    client_id.starts_with("https://") || client_id.starts_with("http://")
}

impl Clients {
    pub(crate) fn new(documents: bool) -> Result<Self, FetchSetupError> {
        Ok(Clients {
            http: fetch::client()?,
            documents,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The client `client_id`, fetching its metadata document when it is a URL.
    pub(crate) async fn resolve(
        &self,
        store: &Store,
        client_id: &str,
    ) -> Result<Arc<ClientInfo>, ClientError> {
        if !is_document_url(client_id) {
            let client = store
                .oauth_client(client_id)
                .await?
                .filter(|c| c.source == OauthClientSource::Registered)
                .ok_or(ClientError::Unknown)?;
            let doc: Value = serde_json::from_str(&client.metadata)
                .map_err(|_| ClientError::Invalid("stored metadata unreadable".into()))?;
            let (info, _) = parse(&doc, client_id, OauthClientSource::Registered)
                .map_err(ClientError::Invalid)?;
            return Ok(Arc::new(info));
        }
        if !self.documents {
            return Err(ClientError::DocumentsDisabled);
        }
        if let Some(hit) = self.cached(client_id) {
            return Ok(hit);
        }
        let url = Url::parse(client_id)
            .map_err(|_| ClientError::Invalid("client_id is not a valid URL".into()))?;
        fetch::check_url(&url)?;
        if url.path() == "/" || url.path().is_empty() {
            return Err(ClientError::Invalid(
                "a client_id URL must have a path (e.g. https://app.example.com/oauth/client.json)"
                    .into(),
            ));
        }
        let doc = fetch::fetch_json(&self.http, &url).await?;
        let (info, normalised) = parse(&doc, client_id, OauthClientSource::MetadataDocument)
            .map_err(ClientError::Invalid)?;
        if info.auth_method != AuthMethod::None {
            return Err(ClientError::Invalid(
                "token_endpoint_auth_method must be \"none\" for a metadata document client".into(),
            ));
        }
        store
            .upsert_metadata_client(client_id, &normalised.to_string())
            .await?;
        let info = Arc::new(info);
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= CACHE_MAX {
            cache.retain(|_, (_, at)| at.elapsed() < DOCUMENT_CACHE);
        }
        cache.insert(client_id.to_owned(), (info.clone(), Instant::now()));
        Ok(info)
    }

    fn cached(&self, client_id: &str) -> Option<Arc<ClientInfo>> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache
            .get(client_id)
            .filter(|(_, at)| at.elapsed() < DOCUMENT_CACHE)
            .map(|(info, _)| info.clone())
    }
}

/// Checks client metadata (a registration request or a fetched document) and returns the
/// client and the metadata to store (only the fields Tessera understands).
pub(crate) fn parse(
    doc: &Value,
    client_id: &str,
    source: OauthClientSource,
) -> Result<(ClientInfo, Value), String> {
    let Some(obj) = doc.as_object() else {
        return Err("client metadata must be a JSON object".into());
    };
    if source == OauthClientSource::MetadataDocument
        && obj.get("client_id").and_then(Value::as_str) != Some(client_id)
    {
        return Err("the document's client_id must equal its URL".into());
    }
    let redirect_uris = redirect_uris(obj)?;
    let auth_method = match obj.get("token_endpoint_auth_method") {
        None => match source {
            // RFC 7591 §2's default; a metadata document has no secret to use.
            OauthClientSource::Registered => AuthMethod::ClientSecretBasic,
            OauthClientSource::MetadataDocument => AuthMethod::None,
        },
        Some(Value::String(m)) => match m.as_str() {
            "none" => AuthMethod::None,
            "client_secret_basic" => AuthMethod::ClientSecretBasic,
            "client_secret_post" => AuthMethod::ClientSecretPost,
            other => {
                return Err(format!(
                    "token_endpoint_auth_method {other:?} is not supported (none, client_secret_basic, client_secret_post)"
                ));
            }
        },
        Some(_) => return Err("token_endpoint_auth_method must be a string".into()),
    };
    for (key, allowed) in [
        ("grant_types", &["authorization_code", "refresh_token"][..]),
        ("response_types", &["code"][..]),
    ] {
        if let Some(v) = obj.get(key) {
            let list = v
                .as_array()
                .ok_or_else(|| format!("{key} must be an array of strings"))?;
            for item in list {
                let item = item
                    .as_str()
                    .ok_or_else(|| format!("{key} must be an array of strings"))?;
                if !allowed.contains(&item) {
                    return Err(format!(
                        "{key} {item:?} is not supported (supported: {})",
                        allowed.join(", ")
                    ));
                }
            }
        }
    }
    let text = |key: &str| -> Result<Option<String>, String> {
        match obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.len() <= MAX_NAME_LEN.max(MAX_URI_LEN) => {
                Ok(Some(s.clone()))
            }
            Some(_) => Err(format!("{key} must be a string")),
        }
    };
    let client_name = text("client_name")?;
    let client_uri = text("client_uri")?;
    let scope = text("scope")?;
    let name = client_name
        .as_deref()
        .map(|n| n.chars().take(MAX_NAME_LEN).collect::<String>())
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(|| client_id.to_owned());
    let mut stored = Map::new();
    stored.insert("redirect_uris".into(), json!(redirect_uris));
    stored.insert(
        "token_endpoint_auth_method".into(),
        json!(auth_method.as_str()),
    );
    stored.insert(
        "grant_types".into(),
        obj.get("grant_types")
            .cloned()
            .unwrap_or_else(|| json!(["authorization_code"])),
    );
    stored.insert("response_types".into(), json!(["code"]));
    for (key, value) in [
        ("client_name", client_name),
        ("client_uri", client_uri),
        ("scope", scope),
    ] {
        if let Some(v) = value {
            stored.insert(key.into(), Value::String(v));
        }
    }
    if source == OauthClientSource::MetadataDocument {
        stored.insert("client_id".into(), json!(client_id));
    }
    Ok((
        ClientInfo {
            client_id: client_id.to_owned(),
            name,
            redirect_uris,
            auth_method,
        },
        Value::Object(stored),
    ))
}

fn redirect_uris(obj: &Map<String, Value>) -> Result<Vec<String>, String> {
    let list = obj
        .get("redirect_uris")
        .and_then(Value::as_array)
        .filter(|l| !l.is_empty())
        .ok_or("redirect_uris is required: a non-empty array of URLs")?;
    if list.len() > MAX_REDIRECT_URIS {
        return Err(format!("at most {MAX_REDIRECT_URIS} redirect_uris"));
    }
    list.iter()
        .map(|v| {
            let uri = v.as_str().ok_or("redirect_uris must be strings")?;
            check_redirect_uri(uri)?;
            Ok(uri.to_owned())
        })
        .collect()
}

/// A redirect URI may be https, http on a loopback host (RFC 8252 §7.3), or a native app's
/// private-use scheme (RFC 8252 §7.1); never a fragment, never a script or data URL.
pub(crate) fn check_redirect_uri(uri: &str) -> Result<(), String> {
    if uri.len() > MAX_URI_LEN {
        return Err("redirect URI too long".into());
    }
    let url =
        Url::parse(uri).map_err(|_| format!("redirect URI {uri:?} is not an absolute URL"))?;
    if url.fragment().is_some() {
        return Err(format!("redirect URI {uri:?} must not have a fragment"));
    }
    let loopback = matches!(url.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
    match url.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        "http" => Err(format!(
            "redirect URI {uri:?} must use https (http only on a loopback host)"
        )),
        "javascript" | "data" | "file" | "vbscript" | "blob" | "about" => {
            Err(format!("redirect URI scheme of {uri:?} is not allowed"))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_metadata_is_checked_and_normalised() {
        let (info, stored) = parse(
            &json!({"redirect_uris": ["http://127.0.0.1:3000/cb"], "client_name": "Inspector",
                    "token_endpoint_auth_method": "none", "logo_uri": "https://x/y.png"}),
            "c1",
            OauthClientSource::Registered,
        )
        .unwrap();
        assert_eq!(info.name, "Inspector");
        assert_eq!(info.auth_method, AuthMethod::None);
        assert!(stored.get("logo_uri").is_none());
        for (bad, why) in [
            (json!({}), "redirect_uris is required"),
            (json!({"redirect_uris": []}), "redirect_uris is required"),
            (
                json!({"redirect_uris": ["http://evil.example/cb"]}),
                "must use https",
            ),
            (json!({"redirect_uris": ["https://a/cb#x"]}), "fragment"),
            (
                json!({"redirect_uris": ["javascript:alert(1)"]}),
                "not allowed",
            ),
            (
                json!({"redirect_uris": ["https://a/cb"], "token_endpoint_auth_method": "private_key_jwt"}),
                "not supported",
            ),
            (
                json!({"redirect_uris": ["https://a/cb"], "grant_types": ["implicit"]}),
                "not supported",
            ),
        ] {
            let e = parse(&bad, "c1", OauthClientSource::Registered).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn a_document_must_name_itself_and_defaults_to_a_public_client() {
        let url = "https://app.example.com/client.json";
        let (info, _) = parse(
            &json!({"client_id": url, "redirect_uris": ["cursor://anysphere/cb"]}),
            url,
            OauthClientSource::MetadataDocument,
        )
        .unwrap();
        assert_eq!(info.auth_method, AuthMethod::None);
        assert_eq!(info.name, url);
        let e = parse(
            &json!({"client_id": "https://other.example/c.json", "redirect_uris": ["https://a/cb"]}),
            url,
            OauthClientSource::MetadataDocument,
        )
        .unwrap_err();
        assert!(e.contains("must equal its URL"), "{e}");
    }
}
