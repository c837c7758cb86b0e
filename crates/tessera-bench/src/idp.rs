//! A mini identity provider and token endpoint for the brokered benchmark.
//!
//! * `GET /.well-known/openid-configuration` (and `/.well-known/oauth-authorization-server`):
//!   issuer, `jwks_uri`, `token_endpoint`, `authorization_endpoint` and the fields an OpenID
//!   Connect client insists on;
//! * `GET /jwks`: one RS256 key (RSA 2048, generated at start, `kid` `bench-1`);
//! * [`MiniIdp::mint`]: caller JWTs (`sub`, `aud`, `email`, `exp` = now + 1 h) signed with that key;
//! * `POST /token`: the RFC 8693 token-exchange grant (`subject_token` required), answered with an
//!   opaque random access token (`expires_in` 3600) after an optional artificial delay; every
//!   request is counted ([`MiniIdp::token_requests`], also `GET /stats`). Any other grant → 400
//!   `unsupported_grant_type`. Client authentication is not checked (the benchmark measures the
//!   gateway, not the provider).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow};
use aws_lc_rs::rsa::{KeyPair, KeySize, PublicKeyComponents};
use aws_lc_rs::signature::{KeyPair as _, RSA_PKCS1_SHA256};
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

/// The `kid` of the signing key.
pub const KEY_ID: &str = "bench-1";
/// RFC 8693 grant type.
pub const GRANT_TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const TT_ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
/// Lifetime of minted caller tokens and of issued upstream tokens.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

struct Shared {
    issuer: String,
    key: KeyPair,
    jwks: Value,
    delay: Duration,
    token_requests: AtomicU64,
    exchanges: AtomicU64,
}

/// A running mini identity provider (served on the current tokio runtime; stops when dropped).
pub struct MiniIdp {
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MiniIdp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Random bytes from the system's generator.
pub fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut out = [0u8; N];
    aws_lc_rs::rand::fill(&mut out).map_err(|_| anyhow!("the system random generator failed"))?;
    Ok(out)
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl MiniIdp {
    /// Binds `listen` (e.g. `127.0.0.1:0`), generates the key and serves. `delay` is added to every
    /// `/token` answer.
    pub async fn start(listen: SocketAddr, delay: Duration) -> Result<Self> {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("mini IdP: binding {listen}"))?;
        let addr = listener.local_addr()?;
        let issuer = format!("http://{addr}");
        let key = tokio::task::spawn_blocking(|| KeyPair::generate(KeySize::Rsa2048))
            .await?
            .map_err(|_| anyhow!("mini IdP: RSA key generation failed"))?;
        let public = PublicKeyComponents::<Vec<u8>>::from(key.public_key());
        let jwks = json!({"keys": [{
            "kty": "RSA",
            "use": "sig",
            "alg": "RS256",
            "kid": KEY_ID,
            "n": URL_SAFE_NO_PAD.encode(&public.n),
            "e": URL_SAFE_NO_PAD.encode(&public.e),
        }]});
        let shared = Arc::new(Shared {
            issuer,
            key,
            jwks,
            delay,
            token_requests: AtomicU64::new(0),
            exchanges: AtomicU64::new(0),
        });
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/.well-known/oauth-authorization-server", get(discovery))
            .route("/jwks", get(serve_jwks))
            .route("/token", post(token))
            .route("/stats", get(stats))
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                eprintln!("mini IdP stopped: {e}");
            }
        });
        Ok(Self { shared, task })
    }

    /// `http://127.0.0.1:PORT` (no trailing slash): the issuer, and the base of every endpoint.
    pub fn issuer(&self) -> &str {
        &self.shared.issuer
    }

    /// The token endpoint.
    pub fn token_endpoint(&self) -> String {
        format!("{}/token", self.shared.issuer)
    }

    /// Requests received at `/token` so far (whatever their outcome).
    pub fn token_requests(&self) -> u64 {
        self.shared.token_requests.load(Ordering::Relaxed)
    }

    /// Token-exchange grants answered with a token so far.
    pub fn exchanges(&self) -> u64 {
        self.shared.exchanges.load(Ordering::Relaxed)
    }

    /// A caller JWT (RS256) for `sub`, addressed to `aud`, valid for an hour; `email` is
    /// `<sub>@bench.example`.
    pub fn mint(&self, sub: &str, aud: &str) -> Result<String> {
        let now = now_secs();
        let claims = json!({
            "iss": self.shared.issuer,
            "sub": sub,
            "aud": aud,
            "iat": now,
            "nbf": now,
            "exp": now + TOKEN_LIFETIME.as_secs(),
            "email": format!("{sub}@bench.example"),
            "email_verified": true,
            "name": sub,
            "scope": "openid email profile",
            "client_id": "tessera",
        });
        let header = json!({"alg": "RS256", "typ": "JWT", "kid": KEY_ID});
        let mut token = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header)?);
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims)?));
        let mut signature = vec![0u8; self.shared.key.public_modulus_len()];
        self.shared
            .key
            .sign(
                &RSA_PKCS1_SHA256,
                &aws_lc_rs::rand::SystemRandom::new(),
                token.as_bytes(),
                &mut signature,
            )
            .map_err(|_| anyhow!("mini IdP: signing failed"))?;
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(&signature));
        Ok(token)
    }

    /// Caller JWTs for `user-<first>` … `user-<first + n - 1>` (`prefix` replaces `user`).
    pub fn mint_users(
        &self,
        prefix: &str,
        first: usize,
        n: usize,
        aud: &str,
    ) -> Result<Vec<String>> {
        (first..first + n)
            .map(|i| self.mint(&format!("{prefix}-{i}"), aud))
            .collect()
    }
}

async fn discovery(State(s): State<Arc<Shared>>) -> Json<Value> {
    let base = &s.issuer;
    Json(json!({
        "issuer": base,
        "authorization_endpoint": format!("{base}/authorize"),
        "token_endpoint": format!("{base}/token"),
        "jwks_uri": format!("{base}/jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "grant_types_supported": [GRANT_TOKEN_EXCHANGE],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "code_challenge_methods_supported": ["S256"],
    }))
}

async fn serve_jwks(State(s): State<Arc<Shared>>) -> Json<Value> {
    Json(s.jwks.clone())
}

async fn stats(State(s): State<Arc<Shared>>) -> Json<Value> {
    Json(json!({
        "token_requests": s.token_requests.load(Ordering::Relaxed),
        "exchanges": s.exchanges.load(Ordering::Relaxed),
    }))
}

fn oauth_error(code: &str, description: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": code, "error_description": description})),
    )
        .into_response()
}

async fn token(State(s): State<Arc<Shared>>, body: axum::body::Bytes) -> Response {
    s.token_requests.fetch_add(1, Ordering::Relaxed);
    let mut grant = None;
    let mut subject = None;
    for (k, v) in url::form_urlencoded::parse(&body) {
        match &*k {
            "grant_type" => grant = Some(v.into_owned()),
            "subject_token" => subject = Some(v.into_owned()),
            _ => {}
        }
    }
    if grant.as_deref() != Some(GRANT_TOKEN_EXCHANGE) {
        return oauth_error("unsupported_grant_type", "only token exchange");
    }
    if subject.is_none_or(|t| t.is_empty()) {
        return oauth_error("invalid_request", "subject_token is required");
    }
    if !s.delay.is_zero() {
        tokio::time::sleep(s.delay).await;
    }
    let token = match random_bytes::<32>() {
        Ok(b) => URL_SAFE_NO_PAD.encode(b),
        Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    };
    s.exchanges.fetch_add(1, Ordering::Relaxed);
    Json(json!({
        "access_token": token,
        "issued_token_type": TT_ACCESS_TOKEN,
        "token_type": "Bearer",
        "expires_in": TOKEN_LIFETIME.as_secs(),
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tokens_verify_against_the_jwks_and_exchange_is_counted() {
        let idp = MiniIdp::start("127.0.0.1:0".parse().unwrap(), Duration::ZERO)
            .await
            .unwrap();
        let jwt = idp.mint("user-1", "http://127.0.0.1:9/mcp").unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let claims: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(claims["sub"], "user-1");

        let client = reqwest::Client::new();
        let jwks: Value = client
            .get(format!("{}/jwks", idp.issuer()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let key = &jwks["keys"][0];
        let n = URL_SAFE_NO_PAD.decode(key["n"].as_str().unwrap()).unwrap();
        let e = URL_SAFE_NO_PAD.decode(key["e"].as_str().unwrap()).unwrap();
        let public = PublicKeyComponents {
            n: &n[..],
            e: &e[..],
        };
        let signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        let signed = format!("{}.{}", parts[0], parts[1]);
        public
            .verify(
                &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256,
                signed.as_bytes(),
                &signature,
            )
            .expect("signature verifies with the published key");

        let form = format!(
            "grant_type={}&subject_token={jwt}&audience=bench",
            url::form_urlencoded::byte_serialize(GRANT_TOKEN_EXCHANGE.as_bytes())
                .collect::<String>()
        );
        let answer: Value = client
            .post(idp.token_endpoint())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(answer["expires_in"], 3600);
        assert!(answer["access_token"].as_str().unwrap().len() >= 40);
        let refused = client
            .post(idp.token_endpoint())
            .body("grant_type=client_credentials")
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 400);
        assert_eq!((idp.token_requests(), idp.exchanges()), (2, 1));
    }
}
