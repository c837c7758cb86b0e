//! Against the real test provider (tests/testbed/idp, oidc-provider with RFC 8693 and OBO grants):
//! exchange and OBO issue upstream tokens for the signed-in user; single flight is counted at the
//! provider; users never share a credential.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use futures::future::BoxFuture;
use secrecy::SecretString;
use serde_json::{Value, json};
use tessera_broker::{
    BrokerError, BrokeredServer, MemoryCredentialStore, OAuthErrorCode, Resolver,
    SubjectTokenError, SubjectTokenSource, TokenExchanger,
};
use tessera_config::{AuthBrokerConfig, BrokerMode, ClientAuth, SubjectTokenType};
use tokio::io::{AsyncBufReadExt, BufReader};

const GATEWAY_RESOURCE: &str = "http://127.0.0.1:8080/mcp";
const UPSTREAM_RESOURCE: &str = "http://127.0.0.1:9999/upstream/mcp";
const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// The provider process; killed on drop.
struct Provider {
    _child: tokio::process::Child,
    _dir: tempfile::TempDir,
    issuer: String,
    http: reqwest::Client,
}

impl Provider {
    async fn start() -> Self {
        let idp = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/testbed/idp");
        assert!(
            idp.join("node_modules").is_dir(),
            "the test provider's dependencies are missing: run `npm ci --prefix tests/testbed/idp` \
             (scripts/test-all does) before `cargo test -p tessera-broker`"
        );
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("idp.json");
        let client = |id: &str, auth: &str| {
            json!({
                "client_id": id, "client_secret": "s3cret/+&=",
                "redirect_uris": ["http://127.0.0.1:8080/auth/callback"],
                "grant_types": ["authorization_code", "refresh_token", TOKEN_EXCHANGE, JWT_BEARER],
                "response_types": ["code"], "token_endpoint_auth_method": auth
            })
        };
        let body = json!({
            "clients": [client("tessera", "client_secret_basic"), client("tessera-post", "client_secret_post")],
            "audiences": ["api://upstream"],
        });
        std::fs::write(&config, body.to_string()).unwrap();
        let mut child = tokio::process::Command::new("node")
            .arg(idp.join("server.mjs"))
            .args(["--port", "0", "--config"])
            .arg(&config)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start node (is Node.js installed?)");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("test provider did not print its ready line within 30 s")
            .unwrap()
            .expect("test provider exited before it was ready");
        let issuer = line
            .strip_prefix("listening on ")
            .expect("unexpected ready line")
            .trim()
            .to_owned();
        Self {
            _child: child,
            _dir: dir,
            issuer,
            http: reqwest::Client::new(),
        }
    }

    /// A JWT access token of this provider, as the gateway would hold it after `user` signed in.
    async fn subject_token(&self, user: &str) -> SecretString {
        let claims = json!({"claims": {"sub": user, "aud": GATEWAY_RESOURCE, "client_id": "tessera", "scope": "read"}});
        let answer: Value = self
            .http
            .post(format!("{}/__test/mint", self.issuer))
            .json(&claims)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        SecretString::from(answer["token"].as_str().unwrap().to_owned())
    }

    async fn grants(&self, grant_type: &str) -> (u64, u64) {
        let stats: Value = self
            .http
            .get(format!("{}/__test/stats", self.issuer))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let g = &stats["grants"][grant_type];
        (
            g["success"].as_u64().unwrap_or(0),
            g["error"].as_u64().unwrap_or(0),
        )
    }

    fn broker(&self, mode: BrokerMode, client_id: &str, auth: ClientAuth) -> AuthBrokerConfig {
        AuthBrokerConfig {
            mode,
            token_endpoint: Some(format!("{}/token", self.issuer).parse().unwrap()),
            authorization_endpoint: None,
            resource: (mode == BrokerMode::TokenExchange).then(|| UPSTREAM_RESOURCE.to_owned()),
            scopes: match mode {
                BrokerMode::EntraObo => vec!["api://upstream/files.read".into()],
                _ => vec!["read".into()],
            },
            client_id: Some(client_id.into()),
            client_secret: Some(SecretString::from("s3cret/+&=")),
            header: "Authorization".into(),
            header_format: "Bearer {token}".into(),
            audience: None,
            subject_token_type: SubjectTokenType::AccessToken,
            client_auth: auth,
            private_key_file: None,
            revocation_endpoint: None,
            issuer: None,
            allowed_users: Vec::new(),
            allowed_emails: Vec::new(),
            allowed_groups: Vec::new(),
        }
    }
}

/// The users' current subject tokens.
struct Subjects(HashMap<String, SecretString>);

impl SubjectTokenSource for Subjects {
    fn subject_token<'a>(
        &'a self,
        user: &'a str,
        _kind: SubjectTokenType,
    ) -> BoxFuture<'a, Result<SecretString, SubjectTokenError>> {
        let token = self
            .0
            .get(user)
            .cloned()
            .ok_or(SubjectTokenError::SignInAgain);
        Box::pin(async move { token })
    }
}

async fn resolver_for(provider: &Provider, users: &[&str]) -> Resolver {
    let mut subjects = HashMap::new();
    for user in users {
        subjects.insert((*user).to_owned(), provider.subject_token(user).await);
    }
    Resolver::builder(
        TokenExchanger::new(reqwest::Client::new()),
        Arc::new(MemoryCredentialStore::new()),
        Arc::new(Subjects(subjects)),
    )
    .build()
}

/// The payload of the JWT in a `Bearer <jwt>` header value.
fn claims(credential: &tessera_broker::ResolvedCredential) -> Value {
    let value = credential.header_value.to_str().unwrap();
    let jwt = value.strip_prefix("Bearer ").unwrap();
    let payload = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

#[tokio::test]
async fn token_exchange_returns_an_upstream_token_carrying_alices_subject() {
    let provider = Provider::start().await;
    let resolver = resolver_for(&provider, &["alice"]).await;
    let server = BrokeredServer::from_parts(
        "files",
        UPSTREAM_RESOURCE,
        provider.broker(
            BrokerMode::TokenExchange,
            "tessera",
            ClientAuth::ClientSecretBasic,
        ),
    )
    .unwrap();
    let credential = resolver
        .resolve(&tessera_broker::Requester::new("alice"), &server)
        .await
        .unwrap();
    let c = claims(&credential);
    assert_eq!(c["sub"], "alice");
    assert_eq!(c["aud"], UPSTREAM_RESOURCE);
    assert_eq!(c["act"]["sub"], "tessera");
    assert_eq!(provider.grants(TOKEN_EXCHANGE).await, (1, 0));
}

#[tokio::test]
async fn token_exchange_with_client_secret_post() {
    let provider = Provider::start().await;
    let resolver = resolver_for(&provider, &["alice"]).await;
    let server = BrokeredServer::from_parts(
        "files",
        UPSTREAM_RESOURCE,
        provider.broker(
            BrokerMode::TokenExchange,
            "tessera-post",
            ClientAuth::ClientSecretPost,
        ),
    )
    .unwrap();
    let c = claims(
        &resolver
            .resolve(&tessera_broker::Requester::new("alice"), &server)
            .await
            .unwrap(),
    );
    assert_eq!(
        (c["sub"].as_str(), c["act"]["sub"].as_str()),
        (Some("alice"), Some("tessera-post"))
    );
}

#[tokio::test]
async fn entra_obo_returns_an_upstream_token_carrying_alices_subject() {
    let provider = Provider::start().await;
    let resolver = resolver_for(&provider, &["alice"]).await;
    let server = BrokeredServer::from_parts(
        "files",
        "https://files.example/mcp",
        provider.broker(
            BrokerMode::EntraObo,
            "tessera",
            ClientAuth::ClientSecretBasic,
        ),
    )
    .unwrap();
    let c = claims(
        &resolver
            .resolve(&tessera_broker::Requester::new("alice"), &server)
            .await
            .unwrap(),
    );
    assert_eq!(c["sub"], "alice");
    assert_eq!(c["aud"], "api://upstream");
    assert_eq!(c["azp"], "tessera");
    assert_eq!(c["scp"], "files.read");
    assert_eq!(provider.grants(JWT_BEARER).await, (1, 0));
}

#[tokio::test]
async fn hundred_concurrent_resolves_make_one_grant_and_users_never_share() {
    let provider = Provider::start().await;
    let resolver = resolver_for(&provider, &["alice", "bob"]).await;
    let server = BrokeredServer::from_parts(
        "files",
        UPSTREAM_RESOURCE,
        provider.broker(
            BrokerMode::TokenExchange,
            "tessera",
            ClientAuth::ClientSecretBasic,
        ),
    )
    .unwrap();
    let results = futures::future::join_all((0..100).map(|_| async {
        resolver
            .resolve(&tessera_broker::Requester::new("alice"), &server)
            .await
    }))
    .await;
    let first = results[0].as_ref().unwrap().header_value.clone();
    for r in &results {
        assert_eq!(r.as_ref().unwrap().header_value, first);
    }
    assert_eq!(
        provider.grants(TOKEN_EXCHANGE).await,
        (1, 0),
        "exactly one token-exchange grant at the provider"
    );

    // Alice and bob, concurrently: two grants, two subjects.
    let bobs = futures::future::join_all((0..50).map(|_| async {
        resolver
            .resolve(&tessera_broker::Requester::new("bob"), &server)
            .await
    }))
    .await;
    let bob = bobs[0].as_ref().unwrap();
    assert_eq!(claims(bob)["sub"], "bob");
    assert_eq!(claims(results[0].as_ref().unwrap())["sub"], "alice");
    assert_ne!(bob.header_value, first);
    for r in &bobs {
        assert_eq!(r.as_ref().unwrap().header_value, bob.header_value);
    }
    assert_eq!(provider.grants(TOKEN_EXCHANGE).await, (2, 0));
}

#[tokio::test]
async fn provider_refusal_is_reduced_to_its_code() {
    let provider = Provider::start().await;
    // `mallory` is not a user of the provider: invalid_grant.
    let resolver = resolver_for(&provider, &["mallory"]).await;
    let server = BrokeredServer::from_parts(
        "files",
        UPSTREAM_RESOURCE,
        provider.broker(
            BrokerMode::TokenExchange,
            "tessera",
            ClientAuth::ClientSecretBasic,
        ),
    )
    .unwrap();
    let err = resolver
        .resolve(&tessera_broker::Requester::new("mallory"), &server)
        .await
        .unwrap_err();
    assert_eq!(
        err,
        BrokerError::Rejected {
            status: 400,
            code: OAuthErrorCode::InvalidGrant
        }
    );
    assert!(
        !err.to_string().contains("known user"),
        "description must not surface: {err}"
    );

    // A wrong client secret: invalid_client.
    let mut cfg = provider.broker(
        BrokerMode::TokenExchange,
        "tessera",
        ClientAuth::ClientSecretBasic,
    );
    cfg.client_secret = Some(SecretString::from("wrong"));
    let resolver = resolver_for(&provider, &["alice"]).await;
    let server = BrokeredServer::from_parts("files", UPSTREAM_RESOURCE, cfg).unwrap();
    let err = resolver
        .resolve(&tessera_broker::Requester::new("alice"), &server)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            BrokerError::Rejected {
                code: OAuthErrorCode::InvalidClient,
                ..
            }
        ),
        "{err:?}"
    );
}
