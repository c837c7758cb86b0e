//! RFC 7591 dynamic client registration: `POST /oauth/register`.
//!
//! Open registration (MCP clients register themselves on first use). A client asking for
//! `token_endpoint_auth_method: none` is public (PKCE is its proof); any other gets a secret,
//! returned once and stored hashed.
//!
//! Because anyone may register, and each registration is a row in the store, registrations are
//! limited per client address ([`RegistrationLimiter`], `registration_rate_limit`): a token
//! bucket per IPv4 address or IPv6 /64 ([`crate::peer::limit_key`]).

use std::net::{IpAddr, Ipv4Addr};
use std::num::NonZeroU32;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock as _, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use secrecy::ExposeSecret as _;
use serde_json::{Value, json};
use tessera_config::RateLimit;
use tessera_store::OauthClientSource;

use super::clients::{self, AuthMethod};
use crate::ApiState;
use crate::peer::{PeerAddr, limit_key};

/// Largest registration request.
const MAX_BODY: usize = 16 * 1024;

/// Per-address token buckets for `/oauth/register` (`registration_rate_limit`).
pub(crate) struct RegistrationLimiter {
    /// `None`: the limit is turned off.
    buckets: Option<RateLimiter<IpAddr, DefaultKeyedStateStore<IpAddr>, DefaultClock>>,
}

impl RegistrationLimiter {
    pub(crate) fn new(limit: Option<RateLimit>) -> Self {
        let buckets = limit.map(|l| {
            // The configuration refuses 0 for either; MIN is only a type-level fallback.
            let per_minute = NonZeroU32::new(l.per_minute).unwrap_or(NonZeroU32::MIN);
            let burst = NonZeroU32::new(l.burst).unwrap_or(NonZeroU32::MIN);
            RateLimiter::keyed(Quota::per_minute(per_minute).allow_burst(burst))
        });
        RegistrationLimiter { buckets }
    }

    /// Takes a token from `peer`'s bucket, or says in how many whole seconds (at least 1) one
    /// will be there. Without a peer address (a router not served by `tessera_proxy::serve`)
    /// all such requests share one bucket, so the limit still bounds them.
    pub(crate) fn check(&self, peer: Option<IpAddr>) -> Result<(), u64> {
        let Some(buckets) = &self.buckets else {
            return Ok(());
        };
        let key = peer.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), limit_key);
        buckets.check_key(&key).map_err(|not_until| {
            let wait = not_until.wait_time_from(buckets.clock().now());
            // Rounded up: retrying after the rounded-down time would only be refused again.
            (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
        })
    }

    /// Forgets the addresses whose bucket has filled up again (they are no different from an
    /// address never seen), so the map does not keep every address that ever registered.
    pub(crate) fn purge(&self) {
        if let Some(buckets) = &self.buckets {
            buckets.retain_recent();
            buckets.shrink_to_fit();
        }
    }

    #[cfg(test)]
    pub(crate) fn tracked(&self) -> usize {
        self.buckets.as_ref().map_or(0, RateLimiter::len)
    }
}

/// `429 Too Many Requests` for an address over its registration limit.
fn too_many(retry_after: u64) -> Response {
    let mut r = (
        StatusCode::TOO_MANY_REQUESTS,
        Json(json!({
            "error": "temporarily_unavailable",
            "error_description": format!(
                "too many registrations from this address; retry after {retry_after} s"
            ),
        })),
    )
        .into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
    r
}

/// An RFC 7591 §3.2.2 error.
pub(crate) fn registration_error(code: &str, description: &str) -> Response {
    let mut r = (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": code, "error_description": description})),
    )
        .into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// `POST /oauth/register`.
pub(crate) async fn register(
    State(state): State<Arc<ApiState>>,
    PeerAddr(peer): PeerAddr,
    body: Bytes,
) -> Response {
    let Some(server) = &state.authz else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if !server.config.dynamic_registration {
        return registration_error(
            "invalid_client_metadata",
            "dynamic registration is disabled here; use a client ID metadata document",
        );
    }
    // Every attempt counts, valid or not: the limit is on what one address may ask of us.
    if let Err(retry_after) = server.registrations.check(peer) {
        // Debug only: at warn, a client hammering the endpoint would flood the log too.
        tracing::debug!(
            peer = ?peer,
            retry_after,
            "client registration refused: over the per-address limit"
        );
        return too_many(retry_after);
    }
    if body.len() > MAX_BODY {
        return registration_error("invalid_client_metadata", "registration request too large");
    }
    let Ok(doc) = serde_json::from_slice::<Value>(&body) else {
        return registration_error("invalid_client_metadata", "the body must be a JSON object");
    };
    // The id is not known yet; the metadata does not depend on it for a registration.
    let (info, stored) = match clients::parse(&doc, "", OauthClientSource::Registered) {
        Ok(parsed) => parsed,
        Err(why) if why.contains("redirect") => {
            return registration_error("invalid_redirect_uri", &why);
        }
        Err(why) => return registration_error("invalid_client_metadata", &why),
    };
    let confidential = info.auth_method != AuthMethod::None;
    let new = match state
        .store
        .register_oauth_client(&stored.to_string(), confidential)
        .await
    {
        Ok(new) => new,
        Err(e) => {
            tracing::error!(error = %e, "registering an OAuth client failed");
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(json!({"error": "server_error"})),
            )
                .into_response();
        }
    };
    tracing::info!(
        client_id = %new.client.client_id,
        auth_method = info.auth_method.as_str(),
        "registered an OAuth client"
    );
    let mut answer = stored;
    answer["client_id"] = Value::from(new.client.client_id.clone());
    answer["client_id_issued_at"] = Value::from(new.client.created_at);
    if let Some(secret) = &new.client_secret {
        answer["client_secret"] = Value::from(secret.expose_secret());
        answer["client_secret_expires_at"] = Value::from(0);
    }
    let mut r = (StatusCode::CREATED, Json(answer)).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use axum::Router;
    use axum::body::Body;
    use axum::extract::ConnectInfo;
    use http::Request;
    use http_body_util::BodyExt as _;
    use tessera_config::{AuthConfig, AuthorizationServerConfig};
    use tessera_store::Store;
    use tower::ServiceExt as _;
    use url::Url;

    use super::*;

    /// The API's router with the authorization server, registrations limited to `limit`.
    async fn fixture(limit: Option<RateLimit>) -> (tempfile::TempDir, Arc<ApiState>, Router) {
        let dir = tempfile::tempdir().unwrap();
        let base = Url::parse("http://127.0.0.1:9").unwrap();
        let mut auth = AuthConfig::oidc(
            "http://127.0.0.1:9/idp",
            "tessera",
            base.join("/mcp").unwrap(),
        );
        auth.authorization_server = Some(AuthorizationServerConfig {
            registration_rate_limit: limit,
            ..AuthorizationServerConfig::default()
        });
        let store = Store::open(dir.path()).await.unwrap();
        let state = ApiState::new(&auth, &base, store).unwrap();
        let app = crate::router(state.clone());
        (dir, state, app)
    }

    /// `POST /oauth/register` from `peer` (as `tessera_proxy::serve` records it; `None`: no
    /// connect info, as a router driven by `oneshot` has).
    async fn register_from(app: &Router, peer: Option<&str>) -> (StatusCode, Value, Response) {
        let body = json!({
            "redirect_uris": ["http://127.0.0.1:33418/callback"],
            "token_endpoint_auth_method": "none",
            "client_name": "test client",
        });
        let mut req = Request::post("/oauth/register")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .unwrap();
        if let Some(peer) = peer {
            let addr = SocketAddr::new(peer.parse().unwrap(), 50_000);
            req.extensions_mut().insert(ConnectInfo(addr));
        }
        let r = app.clone().oneshot(req).await.unwrap();
        let (parts, body) = r.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let status = parts.status;
        (status, json, Response::from_parts(parts, Body::empty()))
    }

    const LIMIT: RateLimit = RateLimit {
        per_minute: 1,
        burst: 3,
    };

    #[tokio::test]
    async fn the_registration_after_the_burst_gets_429_with_retry_after_and_other_addresses_do_not()
    {
        let (_dir, state, app) = fixture(Some(LIMIT)).await;
        for _ in 0..3 {
            let (status, json, _) = register_from(&app, Some("192.0.2.10")).await;
            assert_eq!(status, StatusCode::CREATED, "{json}");
        }
        let (status, json, r) = register_from(&app, Some("192.0.2.10")).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{json}");
        assert_eq!(json["error"], "temporarily_unavailable");
        let retry: u64 = r.headers()[header::RETRY_AFTER]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        // One token a minute: the next one is at most a minute away.
        assert!((1..=60).contains(&retry), "{retry}");
        assert!(
            json["error_description"]
                .as_str()
                .unwrap()
                .contains(&format!("retry after {retry} s")),
            "{json}"
        );
        assert_eq!(r.headers()[header::CACHE_CONTROL], "no-store");
        // The same host seen as an IPv4-mapped IPv6 address is the same bucket.
        let (status, _, _) = register_from(&app, Some("::ffff:192.0.2.10")).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        // Another address has its own bucket.
        let (status, json, _) = register_from(&app, Some("192.0.2.11")).await;
        assert_eq!(status, StatusCode::CREATED, "{json}");
        let id = json["client_id"].as_str().unwrap();
        assert!(state.store.oauth_client(id).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn an_ipv6_host_counts_under_its_64() {
        let (_dir, _state, app) = fixture(Some(LIMIT)).await;
        for peer in ["2001:db8:7:1::1", "2001:db8:7:1::2", "2001:db8:7:1:abcd::3"] {
            let (status, json, _) = register_from(&app, Some(peer)).await;
            assert_eq!(status, StatusCode::CREATED, "{peer}: {json}");
        }
        // A fourth address in the same /64 is the same host.
        let (status, _, _) = register_from(&app, Some("2001:db8:7:1:ffff:ffff:ffff:ffff")).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        // The next /64 is another.
        let (status, json, _) = register_from(&app, Some("2001:db8:7:2::1")).await;
        assert_eq!(status, StatusCode::CREATED, "{json}");
    }

    #[tokio::test]
    async fn without_connect_info_requests_share_one_bucket_and_off_means_no_limit() {
        let (_dir, _state, app) = fixture(Some(LIMIT)).await;
        for _ in 0..3 {
            assert_eq!(register_from(&app, None).await.0, StatusCode::CREATED);
        }
        assert_eq!(
            register_from(&app, None).await.0,
            StatusCode::TOO_MANY_REQUESTS
        );
        let (_dir, _state, unlimited) = fixture(None).await;
        for _ in 0..25 {
            assert_eq!(
                register_from(&unlimited, Some("192.0.2.10")).await.0,
                StatusCode::CREATED
            );
        }
    }

    #[test]
    fn the_purge_forgets_addresses_whose_bucket_is_full_again() {
        // 60 000 a minute: a bucket refills within a millisecond.
        let limiter = RegistrationLimiter::new(Some(RateLimit {
            per_minute: 60_000,
            burst: 1,
        }));
        limiter.check(Some("192.0.2.1".parse().unwrap())).unwrap();
        limiter.check(Some("192.0.2.2".parse().unwrap())).unwrap();
        assert_eq!(limiter.tracked(), 2);
        std::thread::sleep(std::time::Duration::from_millis(20));
        limiter.purge();
        assert_eq!(limiter.tracked(), 0);
        // A slow bucket that is still being refilled is kept.
        let slow = RegistrationLimiter::new(Some(LIMIT));
        slow.check(Some("192.0.2.1".parse().unwrap())).unwrap();
        slow.purge();
        assert_eq!(slow.tracked(), 1);
    }
}
