//! The connect flow, refresh, policy, private_key_jwt and RFC 8414 discovery against the real
//! test provider (tests/testbed/idp: oidc-provider, scripted login and consent).
//!
//! REFERENCE.md §4.1–§4.6, each behaviour → our test (`file::test`; `store::` is
//! crates/tessera-store/src/store/broker_tests.rs, `cf::` is this file):
//!
//!
//! §4.1 credential store
//!
//! - ExpiryHelpers → resolver::valid_stored_credential_is_used_without_exchange,
//!   resolver::near_expiry_stored_credential_is_exchanged_again (60 s margin),
//!   cf::connect_near_expiry_refreshes_keeping_or_rotating_the_refresh_token
//! - EncryptDecryptRoundtrip, NonceUniqueness → store::credential_round_trips_and_is_sealed_at_rest,
//!   store_audit::store_credentials_persist_sealed_and_a_fresh_resolver_finds_them
//! - PerUserIsolation, SubjectToken → store::list_is_per_user_metadata_without_secrets,
//!   store::a_credential_copied_to_another_user_or_server_does_not_open
//! - DeleteAndNotFound → store::delete_and_not_found
//! - MissingKeyDisabled, InvalidKey, KeyChangedNotConnected, ResolveMasterKey → tessera-store
//!   seal tests (keyring: no key → sealing disabled, bad key refused, other key does not open) and
//!   store::reseal_all_moves_every_sealed_column_to_the_active_key
//!
//! §4.2 token exchanger
//!
//! - RFC8693HappyPath → exchanger::rfc8693_request_carries_every_parameter_and_post_client_auth,
//!   real_provider::token_exchange_returns_an_upstream_token_carrying_alices_subject
//! - EntraOBOMode → exchanger::entra_obo_sends_jwt_bearer_assertion_with_basic_client_auth,
//!   real_provider::entra_obo_returns_an_upstream_token_carrying_alices_subject
//! - ErrorSanitizedAndNotCached → exchanger::invalid_grant_surfaces_code_without_description,
//!   exchanger::unknown_error_code_is_not_echoed, resolver::no_static_fallback_on_exchange_failure
//! - MissingSubjectToken → resolver::expired_sign_in_asks_to_sign_in_again (no request made)
//! - (ours) private_key_jwt → exchanger::private_key_jwt_sends_a_signed_client_assertion,
//!   exchanger::private_key_jwt_without_a_key_file_is_refused_before_any_request,
//!   cf::private_key_jwt_is_accepted_by_the_provider
//! - (ours) RFC 8414 → cf::rfc8414_discovery_finds_the_endpoints,
//!   cf::discovery_refuses_metadata_of_another_issuer
//!
//! §4.3 OAuth connector
//!
//! - BuildAuthorizationURL, _UniquePerFlow → cf::authorization_url_has_pkce_and_a_fresh_state_per_flow
//! - Complete_StoresEncryptedToken → cf::connect_flow_with_consent_stores_alices_token
//! - Complete_InvalidState, Complete_StateIsOneTime → cf::a_state_works_once_and_unknown_states_are_refused
//! - Complete_ExpiredState → cf::an_expired_flow_cannot_complete
//! - Deny_StoresNothing → cf::consent_denied_is_a_denied_outcome_with_an_audit_row
//! - Refresh → cf::connect_near_expiry_refreshes_keeping_or_rotating_the_refresh_token
//! - Refresh_NoRefreshToken / refresh refused → cf::reacquire_without_a_usable_refresh_token_asks_to_connect_again
//! - Complete_TokenEndpointError, _NoBodyLeak, AllowlistedCode →
//!   cf::a_refused_code_exchange_stores_nothing_and_leaks_nothing (+ the exchanger tests above:
//!   the same `token_request` code)
//! - NewOAuthConnector_Validation → cf::start_requires_client_id_and_an_authorization_endpoint
//! - (ours, §3 C11) restart → cf::a_restart_between_authorize_and_callback_still_completes;
//!   (§3 C12) user binding → cf::bob_cannot_complete_alices_flow; client_secret_basic →
//!   cf::client_secret_basic_connect_works
//!
//! §4.4 resolver
//!
//! - ValidCachedCredential → resolver::valid_stored_credential_is_used_without_exchange,
//!   resolver::no_cache_exchanges_once_stores_and_then_hits_memory_without_storage
//! - NearExpiryRefresh_TokenExchange → resolver::near_expiry_stored_credential_is_exchanged_again
//! - NearExpiryRefresh_ConnectFlow → cf::connect_near_expiry_refreshes_keeping_or_rotating_the_refresh_token
//! - NoCache_TokenExchange, NoCache_EntraOBO → real_provider::token_exchange_…, real_provider::entra_obo_…
//! - ConnectUnconnected_ReturnsActionableConnectURL → cf::not_connected_carries_tesseras_connect_url
//! - Unauthenticated_Rejected → resolver::empty_user_is_unauthenticated_and_calls_nothing
//! - StoreDisabled_DegradesGracefully → resolver::store_failure_is_an_error_not_a_fallback
//! - NoBrokerConfig_Rejected → resolver::server_without_broker_or_on_stdio_is_rejected
//! - NoStaticFallback_OnExchangeFailure → resolver::no_static_fallback_on_exchange_failure
//! - PolicyHook_DeniesInjection → cf::policy_denial_is_audited_and_asks_the_provider_nothing
//! - SingleFlight_CoalescesConcurrentAcquisitions → resolver::concurrent_resolves_make_one_token_request,
//!   real_provider::hundred_concurrent_resolves_make_one_grant_and_users_never_share
//! - SingleFlight_DetachesCallerCancellation → resolver::cancelled_first_caller_does_not_fail_the_others
//!   (+ resolver::waiting_caller_is_bounded_by_acquire_timeout, §3 B10)
//! - TokenExchange_NearExpiry_NoDoubleExchangeOnFailure → resolver::concurrent_failure_is_shared_not_retried_per_caller
//! - ConnectFlow_RefreshFails_ReturnsReconnectError → cf::reacquire_without_a_usable_refresh_token_asks_to_connect_again
//! - CrossUserIsolation → resolver::users_never_share_a_credential,
//!   resolver::another_users_valid_credential_is_never_returned, cf::bob_cannot_complete_alices_flow,
//!   cf::connect_flow_with_consent_stores_alices_token (bob stays not connected)
//!
//! §4.5 injector
//!
//! - InjectFor_ProducesBrokeredAuth, TwoUsers_TwoTokens → resolver::users_never_share_a_credential,
//!   real_provider::hundred_concurrent_resolves_make_one_grant_and_users_never_share
//! - ConnectionKey_StableAndDistinct → lib::tests::server_key_is_name_and_sixteen_hex_of_sha256,
//!   store::server_key_is_the_references
//! - RejectsStdio, NotConfigured → resolver::server_without_broker_or_on_stdio_is_rejected
//! - RejectsAnonymous → resolver::empty_user_is_unauthenticated_and_calls_nothing
//!
//! §4.6 audit
//!
//! - CacheHit, FreshTokenExchange, EntraOBO_MethodMapping, ExchangeFailure_NoSecret →
//!   store_audit::audit_records_success_and_failure_without_secrets
//! - NearExpiry_EmitsRefreshSuccess → store_audit::stale_stored_credential_is_audited_as_refresh,
//!   cf::connect_near_expiry_refreshes_keeping_or_rotating_the_refresh_token (request id kept)
//! - PolicyDenied → cf::policy_denial_is_audited_and_asks_the_provider_nothing (`policy_deny` /
//!   `denied`, request id, no token request)
//! - NotConnected → cf::not_connected_carries_tesseras_connect_url
//! - StoreDisabled → store_audit::store_failure_and_not_connected_are_audited_as_failures
//! - Unauthenticated_NoEvent → resolver::empty_user_is_unauthenticated_and_calls_nothing (checked
//!   before the policy and the auditor)
//! - AuditConnect CompleteSuccess / CompleteTokenFailure / InvalidState / Deny →
//!   cf::connect_flow_with_consent_stores_alices_token, cf::a_refused_code_exchange_stores_nothing_and_leaks_nothing,
//!   cf::a_state_works_once_and_unknown_states_are_refused, cf::consent_denied_is_a_denied_outcome_with_an_audit_row
//! - Drops counted, never blocking → store_audit::a_full_queue_drops_and_counts_without_blocking

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures::future::BoxFuture;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use tessera_broker::{
    Auditor, BrokerError, BrokeredServer, ConnectOutcome, Connector, Requester, Resolver,
    StoreCredentials, SubjectTokenError, SubjectTokenSource, TokenExchanger,
};
use tessera_config::{AuthBrokerConfig, BrokerMode, ClientAuth, SubjectTokenType};
use tessera_store::{
    ActivityAction, ActivityEntry, ActivityFilter, ActivityOutcome, Keyring, Role, SealingKey,
    Store, UserLogin,
};
use tokio::io::{AsyncBufReadExt, BufReader};
use url::Url;

const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const PUBLIC_BASE: &str = "http://127.0.0.1:8080";
const UPSTREAM_RESOURCE: &str = "http://127.0.0.1:9999/upstream/mcp";
const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const SECRET: &str = "connect-s3cret";

fn keys() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/keys")
}

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
            "run `npm ci --prefix tests/testbed/idp` first"
        );
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("idp.json");
        let jwk: Value =
            serde_json::from_slice(&std::fs::read(keys().join("rsa.pub.jwk.json")).unwrap())
                .unwrap();
        let redirect = format!("{PUBLIC_BASE}/api/v1/user/credentials/upstream/callback");
        let body = json!({
            "clients": [
                {"client_id": "connect", "client_secret": SECRET,
                 "redirect_uris": [redirect], "response_types": ["code"],
                 "grant_types": ["authorization_code", "refresh_token"],
                 "token_endpoint_auth_method": "client_secret_post"},
                {"client_id": "connect-basic", "client_secret": SECRET,
                 "redirect_uris": [redirect], "response_types": ["code"],
                 "grant_types": ["authorization_code", "refresh_token"],
                 "token_endpoint_auth_method": "client_secret_basic"},
                {"client_id": "tessera-jwt", "redirect_uris": ["http://127.0.0.1:8080/auth/callback"],
                 "response_types": ["code"],
                 "grant_types": ["authorization_code", "refresh_token", TOKEN_EXCHANGE],
                 "token_endpoint_auth_method": "private_key_jwt",
                 "jwks": {"keys": [jwk]}},
                {"client_id": "tessera", "client_secret": SECRET,
                 "redirect_uris": ["http://127.0.0.1:8080/auth/callback"], "response_types": ["code"],
                 "grant_types": ["authorization_code", "refresh_token", TOKEN_EXCHANGE],
                 "token_endpoint_auth_method": "client_secret_post"}
            ],
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
            .expect("start node");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let issuer = line
            .strip_prefix("listening on ")
            .unwrap()
            .trim()
            .to_owned();
        Self {
            _child: child,
            _dir: dir,
            issuer,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
        }
    }

    async fn settings(&self, patch: Value) {
        let r = self
            .http
            .post(format!("{}/__test/settings", self.issuer))
            .json(&patch)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }

    async fn stats(&self) -> Value {
        self.http
            .get(format!("{}/__test/stats", self.issuer))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn token_requests(&self) -> u64 {
        self.stats().await["requests"]["POST /token"]
            .as_u64()
            .unwrap_or(0)
    }

    async fn grants(&self, grant: &str) -> (u64, u64) {
        let s = self.stats().await;
        let g = &s["grants"][grant];
        (
            g["success"].as_u64().unwrap_or(0),
            g["error"].as_u64().unwrap_or(0),
        )
    }

    async fn subject_token(&self, user: &str) -> SecretString {
        let claims = json!({"claims": {"sub": user, "aud": "http://127.0.0.1:8080/mcp", "client_id": "tessera", "scope": "read"}});
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

    fn connect_config(&self, client_id: &str, auth: ClientAuth) -> AuthBrokerConfig {
        AuthBrokerConfig {
            mode: BrokerMode::OauthConnect,
            token_endpoint: Some(format!("{}/token", self.issuer).parse().unwrap()),
            authorization_endpoint: Some(format!("{}/auth", self.issuer).parse().unwrap()),
            resource: Some(UPSTREAM_RESOURCE.into()),
            scopes: vec!["read".into()],
            client_id: Some(client_id.into()),
            client_secret: Some(SecretString::from(SECRET)),
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

    fn connect_server(&self) -> BrokeredServer {
        BrokeredServer::from_parts(
            "upstream",
            UPSTREAM_RESOURCE,
            self.connect_config("connect", ClientAuth::ClientSecretPost),
        )
        .unwrap()
    }

    /// Drives the provider like a browser (cookies, login form, consent form) until it
    /// redirects to `redirect_uri`; returns that URL (code or error in its query).
    async fn browse(&self, authorize: &Url, user: &str, consent: &str) -> Url {
        let redirect_uri = authorize
            .query_pairs()
            .find(|(k, _)| k == "redirect_uri")
            .unwrap()
            .1
            .into_owned();
        let mut jar: HashMap<String, String> = HashMap::new();
        let mut next = (authorize.clone(), None::<Vec<(String, String)>>);
        for _ in 0..20 {
            let (url, form) = next.clone();
            let cookie = jar
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("; ");
            let req = match &form {
                None => self.http.get(url.clone()),
                Some(f) => self
                    .http
                    .post(url.clone())
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(
                        url::form_urlencoded::Serializer::new(String::new())
                            .extend_pairs(f.iter())
                            .finish(),
                    ),
            };
            let r = req.header("cookie", cookie).send().await.unwrap();
            for c in r.headers().get_all("set-cookie") {
                let c = c.to_str().unwrap();
                let pair = c.split(';').next().unwrap();
                if let Some((k, v)) = pair.split_once('=') {
                    if v.is_empty() || c.to_ascii_lowercase().contains("expires=thu, 01 jan 1970") {
                        jar.remove(k.trim());
                    } else {
                        jar.insert(k.trim().to_owned(), v.to_owned());
                    }
                }
            }
            if r.status().is_redirection() {
                let location = url.join(r.headers()["location"].to_str().unwrap()).unwrap();
                if location.as_str().starts_with(&redirect_uri) {
                    return location;
                }
                next = (location, None);
                continue;
            }
            let status = r.status();
            let html = r.text().await.unwrap();
            assert_eq!(status, 200, "{html}");
            let action = html
                .split("action=\"")
                .nth(1)
                .and_then(|s| s.split('"').next())
                .unwrap_or_else(|| panic!("no form: {html}"));
            let action = url.join(action).unwrap();
            let uid = html
                .split("name=\"uid\" value=\"")
                .nth(1)
                .and_then(|s| s.split('"').next())
                .unwrap_or_default()
                .to_owned();
            let fields = if html.contains("type=\"password\"") {
                vec![
                    ("uid".to_owned(), uid),
                    ("username".to_owned(), user.to_owned()),
                    ("password".to_owned(), format!("{user}-pw")),
                    ("action".to_owned(), "login".to_owned()),
                ]
            } else {
                vec![
                    ("uid".to_owned(), uid),
                    ("decision".to_owned(), consent.to_owned()),
                ]
            };
            next = (action, Some(fields));
        }
        panic!("the provider never redirected back");
    }
}

fn param(url: &Url, name: &str) -> Option<String> {
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn claims(value: &str) -> Value {
    let jwt = value.strip_prefix("Bearer ").unwrap();
    let payload = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

async fn open_store(dir: &Path) -> Store {
    let key = SealingKey::parse(&SecretString::from(KEY), "test").unwrap();
    Store::open(dir)
        .await
        .unwrap()
        .with_keyring(Arc::new(Keyring::new(key, vec![]).unwrap()))
}

async fn user(store: &Store, subject: &str) -> String {
    let email = format!("{subject}@example.com");
    store
        .upsert_user(&UserLogin {
            issuer: "https://idp.example.test",
            subject,
            email: Some(&email),
            display_name: None,
            role_if_new: Role::User,
        })
        .await
        .unwrap()
        .id
}

struct NoSubjects;

impl SubjectTokenSource for NoSubjects {
    fn subject_token<'a>(
        &'a self,
        _: &'a str,
        _: SubjectTokenType,
    ) -> BoxFuture<'a, Result<SecretString, SubjectTokenError>> {
        Box::pin(async { Err(SubjectTokenError::SignInAgain) })
    }
}

struct Setup {
    _dir: tempfile::TempDir,
    store: Store,
    auditor: Auditor,
    connector: Arc<Connector>,
    resolver: Resolver,
    server: BrokeredServer,
    alice: String,
    bob: String,
}

async fn setup(provider: &Provider) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path()).await;
    let auditor = Auditor::spawn(store.clone(), 1024);
    let server = provider.connect_server();
    let connector = Arc::new(
        Connector::builder(
            store.clone(),
            reqwest::Client::new(),
            Url::parse(PUBLIC_BASE).unwrap(),
        )
        .auditor(auditor.clone())
        .servers([&server])
        .build(),
    );
    let resolver = Resolver::builder(
        TokenExchanger::new(reqwest::Client::new()),
        Arc::new(StoreCredentials::new(store.clone())),
        Arc::new(NoSubjects),
    )
    .auditor(auditor.clone())
    .connector(connector.clone())
    .build();
    let alice = user(&store, "alice").await;
    let bob = user(&store, "bob").await;
    Setup {
        _dir: dir,
        store,
        auditor,
        connector,
        resolver,
        server,
        alice,
        bob,
    }
}

/// The audit rows once `n` are written (the writer is asynchronous), oldest first.
async fn rows(store: &Store, n: usize) -> Vec<ActivityEntry> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut rows = store
            .list_activity(&ActivityFilter::default())
            .await
            .unwrap();
        if rows.len() >= n || Instant::now() > deadline {
            rows.reverse();
            return rows;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn assert_secret_free(rows: &[ActivityEntry], secrets: &[&str]) {
    let text = format!("{rows:?}");
    for s in secrets {
        assert!(!s.is_empty());
        assert!(!text.contains(s), "audit rows contain a secret");
    }
}

/// Start → browser (login + consent) → complete. Returns the stored access token.
async fn connect(provider: &Provider, s: &Setup, who: &str) -> SecretString {
    let authorize = s.connector.start(who, &s.server).await.unwrap();
    let subject = if who == s.alice { "alice" } else { "bob" };
    let back = provider.browse(&authorize, subject, "approve").await;
    assert_eq!(param(&back, "state"), param(&authorize, "state"));
    let done = s
        .connector
        .complete(
            &param(&back, "state").unwrap(),
            &param(&back, "code").unwrap(),
            who,
        )
        .await
        .unwrap();
    assert_eq!(done.user_id, who);
    assert_eq!(done.server_name, "upstream");
    s.store
        .get_credential(who, s.server.key())
        .await
        .unwrap()
        .unwrap()
        .access_token
}

#[tokio::test]
async fn connect_flow_with_consent_stores_alices_token() {
    let provider = Provider::start().await;
    let s = setup(&provider).await;
    let mut events = s.connector.subscribe();
    let alice = Requester::new(&s.alice);

    let token = connect(&provider, &s, &s.alice).await;
    let event = events.recv().await.unwrap();
    assert_eq!(event.user_id, s.alice);
    assert_eq!(event.server, "upstream");
    assert_eq!(event.outcome, ConnectOutcome::Connected);

    let stored = s
        .store
        .get_credential(&s.alice, s.server.key())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.source, tessera_store::CredentialSource::Connect);
    assert!(stored.refresh_token.is_some());
    assert!(stored.expires_at.is_some());
    assert_eq!(stored.audience.as_deref(), Some(UPSTREAM_RESOURCE));

    let got = s.resolver.resolve(&alice, &s.server).await.unwrap();
    let c = claims(got.header_value.to_str().unwrap());
    assert_eq!(c["sub"], "alice");
    assert_eq!(c["aud"], UPSTREAM_RESOURCE);
    assert_eq!(
        got.header_value.to_str().unwrap(),
        format!("Bearer {}", token.expose_secret())
    );
    // Bob has no credential of his own and never gets Alice's.
    let bob = Requester::new(&s.bob);
    assert!(matches!(
        s.resolver.resolve(&bob, &s.server).await,
        Err(BrokerError::NotConnected { .. })
    ));

    let rows = rows(&s.store, 3).await;
    let actions: Vec<_> = rows
        .iter()
        .map(|r| (r.record.action, r.record.outcome))
        .collect();
    assert!(actions.contains(&(ActivityAction::ConnectStart, ActivityOutcome::Success)));
    assert!(actions.contains(&(ActivityAction::ConnectFinish, ActivityOutcome::Success)));
    let refresh = stored.refresh_token.unwrap();
    assert_secret_free(
        &rows,
        &[token.expose_secret(), refresh.expose_secret(), SECRET],
    );
    assert_eq!(s.auditor.dropped(), 0);
}

#[tokio::test]
async fn authorization_url_has_pkce_and_a_fresh_state_per_flow() {
    let provider = Provider::start().await;
    let s = setup(&provider).await;
    let a = s.connector.start(&s.alice, &s.server).await.unwrap();
    let b = s.connector.start(&s.alice, &s.server).await.unwrap();
    assert!(
        a.as_str()
            .starts_with(&format!("{}/auth?", provider.issuer))
    );
    for (k, v) in [
        ("response_type", "code"),
        ("client_id", "connect"),
        ("code_challenge_method", "S256"),
        ("scope", "read"),
        ("resource", UPSTREAM_RESOURCE),
        (
            "redirect_uri",
            "http://127.0.0.1:8080/api/v1/user/credentials/upstream/callback",
        ),
    ] {
        assert_eq!(param(&a, k).as_deref(), Some(v), "{k}");
    }
    assert!(param(&a, "state").unwrap().len() >= 43, "256-bit state");
    assert_ne!(param(&a, "state"), param(&b, "state"));
    assert_ne!(param(&a, "code_challenge"), param(&b, "code_challenge"));
    assert_eq!(
        s.connector.connect_url(&s.server),
        "http://127.0.0.1:8080/api/v1/user/credentials/upstream/connect"
    );
}

#[tokio::test]
async fn consent_denied_is_a_denied_outcome_with_an_audit_row() {
    let provider = Provider::start().await;
    let s = setup(&provider).await;
    let mut events = s.connector.subscribe();
    let authorize = s
        .connector
        .start_traced(&s.alice, &s.server, Some("req-connect-1"))
        .await
        .unwrap();
    let back = provider.browse(&authorize, "alice", "deny").await;
    assert_eq!(param(&back, "error").as_deref(), Some("access_denied"));
    let state = param(&back, "state").unwrap();
    let done = s
        .connector
        .deny_traced(&state, "access_denied", &s.alice, Some("req-connect-2"))
        .await
        .unwrap();
    assert_eq!(done.server_name, "upstream");
    assert_eq!(events.recv().await.unwrap().outcome, ConnectOutcome::Denied);
    // Nothing stored, no token request, the flow is used up.
    assert!(
        s.store
            .get_credential(&s.alice, s.server.key())
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(provider.token_requests().await, 0);
    assert_eq!(
        s.connector.complete(&state, "code", &s.alice).await,
        Err(BrokerError::UnknownState)
    );
    let rows = rows(&s.store, 3).await;
    let deny = rows
        .iter()
        .find(|r| r.record.action == ActivityAction::ConnectDeny)
        .unwrap();
    assert_eq!(deny.record.outcome, ActivityOutcome::Denied);
    assert_eq!(deny.record.reason.as_deref(), Some("access_denied"));
    assert_eq!(deny.record.user_id.as_deref(), Some(s.alice.as_str()));
    assert_eq!(deny.record.server, "upstream");
    assert_eq!(deny.record.request_id.as_deref(), Some("req-connect-2"));
    let start = rows
        .iter()
        .find(|r| r.record.action == ActivityAction::ConnectStart)
        .unwrap();
    assert_eq!(start.record.request_id.as_deref(), Some("req-connect-1"));
}

#[tokio::test]
async fn a_state_works_once_and_unknown_states_are_refused() {
    let provider = Provider::start().await;
    let s = setup(&provider).await;
    assert_eq!(
        s.connector.complete("never-issued", "code", &s.alice).await,
        Err(BrokerError::UnknownState)
    );
    let authorize = s.connector.start(&s.alice, &s.server).await.unwrap();
    let back = provider.browse(&authorize, "alice", "approve").await;
    let (state, code) = (
        param(&back, "state").unwrap(),
        param(&back, "code").unwrap(),
    );
    s.connector.complete(&state, &code, &s.alice).await.unwrap();
    assert_eq!(
        s.connector.complete(&state, &code, &s.alice).await,
        Err(BrokerError::UnknownState)
    );
    let rows = rows(&s.store, 4).await;
    let unknown: Vec<_> = rows
        .iter()
        .filter(|r| r.record.reason.as_deref() == Some("unknown_state"))
        .collect();
    assert_eq!(unknown.len(), 2);
    assert!(
        unknown
            .iter()
            .all(|r| r.record.outcome == ActivityOutcome::Failure
                && r.record.action == ActivityAction::ConnectFinish)
    );
}

#[tokio::test]
async fn an_expired_flow_cannot_complete() {
    let provider = Provider::start().await;
    let s = setup(&provider).await;
    let short = Connector::builder(
        s.store.clone(),
        reqwest::Client::new(),
        Url::parse(PUBLIC_BASE).unwrap(),
    )
    .flow_ttl(Duration::from_secs(1))
    .build();
    let authorize = short.start(&s.alice, &s.server).await.unwrap();
    let back = provider.browse(&authorize, "alice", "approve").await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(
        short
            .complete(
                &param(&back, "state").unwrap(),
                &param(&back, "code").unwrap(),
                &s.alice
            )
            .await,
        Err(BrokerError::UnknownState)
    );
    assert!(
        s.store
            .get_credential(&s.alice, s.server.key())
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(provider.token_requests().await, 0);
}

#[tokio::test]
async fn bob_cannot_complete_alices_flow() {
    let provider = Provider::start().await;
    let s = setup(&provider).await;
    let mut events = s.connector.subscribe();
    let authorize = s.connector.start(&s.alice, &s.server).await.unwrap();
    let back = provider.browse(&authorize, "alice", "approve").await;
    let (state, code) = (
        param(&back, "state").unwrap(),
        param(&back, "code").unwrap(),
    );
    assert_eq!(
        s.connector.complete(&state, &code, &s.bob).await,
        Err(BrokerError::ConnectUserMismatch)
    );
    assert_eq!(events.recv().await.unwrap().outcome, ConnectOutcome::Failed);
    // The code was never redeemed, nothing is stored for anyone, and the flow is used up.
    assert_eq!(provider.token_requests().await, 0);
    assert!(
        s.store
            .get_credential(&s.alice, s.server.key())
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        s.store
            .get_credential(&s.bob, s.server.key())
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        s.connector.complete(&state, &code, &s.alice).await,
        Err(BrokerError::UnknownState)
    );
    let rows = rows(&s.store, 2).await;
    assert!(
        rows.iter()
            .any(|r| r.record.reason.as_deref() == Some("user_mismatch")
                && r.record.user_id.as_deref() == Some(s.alice.as_str()))
    );
}

#[tokio::test]
async fn a_restart_between_authorize_and_callback_still_completes() {
    let provider = Provider::start().await;
    let dir = tempfile::tempdir().unwrap();
    let server = provider.connect_server();
    let (alice, authorize) = {
        let store = open_store(dir.path()).await;
        let alice = user(&store, "alice").await;
        let connector = Connector::new(
            store.clone(),
            reqwest::Client::new(),
            Url::parse(PUBLIC_BASE).unwrap(),
            None,
        );
        let authorize = connector.start(&alice, &server).await.unwrap();
        store.close().await;
        (alice, authorize)
    };
    let back = provider.browse(&authorize, "alice", "approve").await;
    // A new process: new Store and Connector over the same data directory.
    let store = open_store(dir.path()).await;
    let connector = Connector::builder(
        store.clone(),
        reqwest::Client::new(),
        Url::parse(PUBLIC_BASE).unwrap(),
    )
    .servers([&server])
    .build();
    let done = connector
        .complete(
            &param(&back, "state").unwrap(),
            &param(&back, "code").unwrap(),
            &alice,
        )
        .await
        .unwrap();
    assert_eq!(done.user_id, alice);
    assert!(
        store
            .get_credential(&alice, server.key())
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test]
async fn connect_near_expiry_refreshes_keeping_or_rotating_the_refresh_token() {
    let provider = Provider::start().await;
    // Access tokens live 30 s: always within the 60 s refresh margin.
    provider
        .settings(json!({"access_token_ttl": 30, "rotate_refresh_tokens": true}))
        .await;
    let s = setup(&provider).await;
    let alice = Requester {
        request_id: Some("req-refresh-1"),
        ..Requester::new(&s.alice)
    };
    let first = connect(&provider, &s, &s.alice).await;
    let before = s
        .store
        .get_credential(&s.alice, s.server.key())
        .await
        .unwrap()
        .unwrap();

    // Rotating provider: a new refresh token is stored.
    let got = s.resolver.resolve(&alice, &s.server).await.unwrap();
    assert_eq!(provider.grants("refresh_token").await, (1, 0));
    assert_ne!(
        got.header_value.to_str().unwrap(),
        format!("Bearer {}", first.expose_secret())
    );
    assert_eq!(claims(got.header_value.to_str().unwrap())["sub"], "alice");
    let rotated = s
        .store
        .get_credential(&s.alice, s.server.key())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rotated.source, tessera_store::CredentialSource::Refresh);
    assert_ne!(
        rotated.refresh_token.as_ref().unwrap().expose_secret(),
        before.refresh_token.as_ref().unwrap().expose_secret()
    );

    // Non-rotating provider: the response has no refresh token; the old one is kept.
    provider
        .settings(json!({"rotate_refresh_tokens": false}))
        .await;
    s.resolver.resolve(&alice, &s.server).await.unwrap();
    assert_eq!(provider.grants("refresh_token").await, (2, 0));
    let kept = s
        .store
        .get_credential(&s.alice, s.server.key())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        kept.refresh_token.as_ref().unwrap().expose_secret(),
        rotated.refresh_token.as_ref().unwrap().expose_secret()
    );
    // It still works.
    s.resolver.resolve(&alice, &s.server).await.unwrap();
    assert_eq!(provider.grants("refresh_token").await, (3, 0));

    let rows = rows(&s.store, 5).await;
    let refreshes: Vec<_> = rows
        .iter()
        .filter(|r| r.record.action == ActivityAction::Refresh)
        .collect();
    assert_eq!(refreshes.len(), 3);
    assert!(
        refreshes
            .iter()
            .all(|r| r.record.outcome == ActivityOutcome::Success
                && r.record.request_id.as_deref() == Some("req-refresh-1"))
    );
    assert_secret_free(
        &rows,
        &[
            kept.access_token.expose_secret(),
            kept.refresh_token.as_ref().unwrap().expose_secret(),
        ],
    );
}

#[tokio::test]
async fn reacquire_without_a_usable_refresh_token_asks_to_connect_again() {
    let provider = Provider::start().await;
    let s = setup(&provider).await;
    let alice = Requester::new(&s.alice);
    connect(&provider, &s, &s.alice).await;
    let held = s.resolver.resolve(&alice, &s.server).await.unwrap();

    // The upstream refused the token: a refresh-token grant, ignoring the stored access token.
    let fresh = s
        .resolver
        .reacquire(&alice, &s.server, &held.header_value)
        .await
        .unwrap();
    assert_ne!(fresh.header_value, held.header_value);
    assert_eq!(provider.grants("refresh_token").await, (1, 0));
    // A second caller holding the old value gets the new one without another grant.
    let again = s
        .resolver
        .reacquire(&alice, &s.server, &held.header_value)
        .await
        .unwrap();
    assert_eq!(again.header_value, fresh.header_value);
    assert_eq!(provider.grants("refresh_token").await, (1, 0));

    // The provider ends alice's grants: the refresh fails → connect again, at Tessera's page.
    let r = provider
        .http
        .post(format!(
            "{}/__test/revoke-grants?sub=alice",
            provider.issuer
        ))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    match s
        .resolver
        .reacquire(&alice, &s.server, &fresh.header_value)
        .await
    {
        Err(BrokerError::NotConnected {
            server,
            connect_url,
        }) => {
            assert_eq!(server, "upstream");
            assert_eq!(
                connect_url,
                "http://127.0.0.1:8080/api/v1/user/credentials/upstream/connect"
            );
            assert!(!connect_url.contains(&provider.issuer));
        }
        other => panic!("{other:?}"),
    }
    let rows = rows(&s.store, 5).await;
    assert!(
        rows.iter()
            .any(|r| r.record.action == ActivityAction::Refresh
                && r.record.outcome == ActivityOutcome::Failure
                && r.record.reason.as_deref() == Some("invalid_grant"))
    );
}

#[tokio::test]
async fn not_connected_carries_tesseras_connect_url() {
    let provider = Provider::start().await;
    let s = setup(&provider).await;
    let err = s
        .resolver
        .resolve(&Requester::new(&s.alice), &s.server)
        .await
        .unwrap_err();
    assert_eq!(
        err,
        BrokerError::NotConnected {
            server: "upstream".into(),
            connect_url: "http://127.0.0.1:8080/api/v1/user/credentials/upstream/connect".into()
        }
    );
    assert!(
        err.to_string()
            .contains("/api/v1/user/credentials/upstream/connect")
    );
    // No flow is created by a failed resolve (the reference made one each time).
    assert_eq!(provider.stats().await["requests"]["GET /auth"], Value::Null);
    let rows = rows(&s.store, 1).await;
    assert_eq!(rows[0].record.reason.as_deref(), Some("not_connected"));
    assert_eq!(
        rows[0].record.method,
        tessera_store::ActivityMethod::Connect
    );
}

#[tokio::test]
async fn a_refused_code_exchange_stores_nothing_and_leaks_nothing() {
    let provider = Provider::start().await;
    let s = setup(&provider).await;
    let authorize = s.connector.start(&s.alice, &s.server).await.unwrap();
    let back = provider.browse(&authorize, "alice", "approve").await;
    let err = s
        .connector
        .complete(&param(&back, "state").unwrap(), "forged-code", &s.alice)
        .await
        .unwrap_err();
    assert_eq!(
        err,
        BrokerError::Rejected {
            status: 400,
            code: tessera_broker::OAuthErrorCode::InvalidGrant
        }
    );
    assert!(!err.to_string().contains("forged-code"));
    assert!(
        s.store
            .get_credential(&s.alice, s.server.key())
            .await
            .unwrap()
            .is_none()
    );
    let rows = rows(&s.store, 2).await;
    let finish = rows
        .iter()
        .find(|r| r.record.action == ActivityAction::ConnectFinish)
        .unwrap();
    assert_eq!(finish.record.outcome, ActivityOutcome::Failure);
    assert_eq!(finish.record.reason.as_deref(), Some("invalid_grant"));
}

#[tokio::test]
async fn start_requires_client_id_and_an_authorization_endpoint() {
    let provider = Provider::start().await;
    let s = setup(&provider).await;
    let mut cfg = provider.connect_config("connect", ClientAuth::ClientSecretPost);
    cfg.client_id = None;
    let no_client = BrokeredServer::from_parts("upstream", UPSTREAM_RESOURCE, cfg).unwrap();
    assert_eq!(
        s.connector.start(&s.alice, &no_client).await,
        Err(BrokerError::MissingField("client_id"))
    );
    let mut cfg = provider.connect_config("connect", ClientAuth::ClientSecretPost);
    cfg.authorization_endpoint = None;
    let no_authorize = BrokeredServer::from_parts("upstream", UPSTREAM_RESOURCE, cfg).unwrap();
    assert_eq!(
        s.connector.start(&s.alice, &no_authorize).await,
        Err(BrokerError::MissingField("authorization_endpoint"))
    );
}

#[tokio::test]
async fn client_secret_basic_connect_works() {
    let provider = Provider::start().await;
    let s = setup(&provider).await;
    let server = BrokeredServer::from_parts(
        "upstream",
        UPSTREAM_RESOURCE,
        provider.connect_config("connect-basic", ClientAuth::ClientSecretBasic),
    )
    .unwrap();
    let authorize = s.connector.start(&s.alice, &server).await.unwrap();
    let back = provider.browse(&authorize, "alice", "approve").await;
    s.connector
        .complete(
            &param(&back, "state").unwrap(),
            &param(&back, "code").unwrap(),
            &s.alice,
        )
        .await
        .unwrap();
    assert_eq!(provider.grants("authorization_code").await, (1, 0));
}

#[tokio::test]
async fn policy_denial_is_audited_and_asks_the_provider_nothing() {
    let provider = Provider::start().await;
    let s = setup(&provider).await;
    let mut cfg = provider.connect_config("tessera", ClientAuth::ClientSecretPost);
    cfg.mode = BrokerMode::TokenExchange;
    cfg.allowed_emails = vec!["*@corp.example".into()];
    cfg.allowed_groups = vec!["admins".into()];
    let server = BrokeredServer::from_parts("files", UPSTREAM_RESOURCE, cfg).unwrap();
    let subject = provider.subject_token("alice").await;
    let groups = vec!["staff".to_owned()];
    let outsider = Requester {
        user_id: &s.alice,
        email: Some("alice@example.com"),
        groups: &groups,
        request_id: Some("req-policy-7"),
        subject_token: Some(&subject),
        subject: Some("alice"),
    };
    assert_eq!(
        s.resolver.resolve(&outsider, &server).await.unwrap_err(),
        BrokerError::PolicyDenied {
            server: "files".into()
        }
    );
    let held = http::HeaderValue::from_static("Bearer x");
    assert!(matches!(
        s.resolver.reacquire(&outsider, &server, &held).await,
        Err(BrokerError::PolicyDenied { .. })
    ));
    assert_eq!(provider.token_requests().await, 0);
    let rows = rows(&s.store, 2).await;
    assert_eq!(rows.len(), 2);
    for r in &rows {
        assert_eq!(r.record.action, ActivityAction::PolicyDeny);
        assert_eq!(r.record.outcome, ActivityOutcome::Denied);
        assert_eq!(r.record.request_id.as_deref(), Some("req-policy-7"));
        assert_eq!(r.record.user_id.as_deref(), Some(s.alice.as_str()));
    }
    assert_secret_free(&rows, &[subject.expose_secret()]);

    // A member of an allowed group passes, and the inbound token is the subject token.
    let admins = vec!["admins".to_owned()];
    let member = Requester {
        groups: &admins,
        ..outsider
    };
    let got = s.resolver.resolve(&member, &server).await.unwrap();
    assert_eq!(claims(got.header_value.to_str().unwrap())["sub"], "alice");
    assert_eq!(provider.grants(TOKEN_EXCHANGE).await, (1, 0));
}

#[tokio::test]
async fn private_key_jwt_is_accepted_by_the_provider() {
    let provider = Provider::start().await;
    let mut cfg = provider.connect_config("tessera-jwt", ClientAuth::PrivateKeyJwt);
    cfg.mode = BrokerMode::TokenExchange;
    cfg.client_secret = None;
    cfg.private_key_file = Some(keys().join("rsa.pem"));
    let ex = TokenExchanger::new(reqwest::Client::new());
    let issued = ex
        .exchange("files", &cfg, &provider.subject_token("alice").await)
        .await
        .unwrap();
    let c = claims(&format!("Bearer {}", issued.access_token.expose_secret()));
    assert_eq!(c["sub"], "alice");
    assert_eq!(c["act"]["sub"], "tessera-jwt");
    // A key the provider does not know is refused as invalid_client.
    cfg.private_key_file = Some(keys().join("ec.pem"));
    assert_eq!(
        ex.exchange("files", &cfg, &provider.subject_token("alice").await)
            .await
            .unwrap_err(),
        BrokerError::Rejected {
            status: 401,
            code: tessera_broker::OAuthErrorCode::InvalidClient
        }
    );
}

#[tokio::test]
async fn rfc8414_discovery_finds_the_endpoints() {
    let provider = Provider::start().await;
    let s = setup(&provider).await;
    // Token exchange with only the issuer.
    let mut cfg = provider.connect_config("tessera", ClientAuth::ClientSecretPost);
    cfg.mode = BrokerMode::TokenExchange;
    cfg.token_endpoint = None;
    cfg.authorization_endpoint = None;
    cfg.issuer = Some(provider.issuer.parse().unwrap());
    let ex = TokenExchanger::new(reqwest::Client::new());
    let subject = provider.subject_token("alice").await;
    ex.exchange("files", &cfg, &subject).await.unwrap();
    ex.exchange("files", &cfg, &subject).await.unwrap();
    let stats = provider.stats().await;
    assert_eq!(
        stats["requests"]["GET /.well-known/oauth-authorization-server"].as_u64(),
        Some(1),
        "metadata fetched once, then cached: {stats}"
    );
    let endpoints = ex
        .discovery()
        .endpoints(&reqwest::Client::new(), Duration::from_secs(5), &cfg, false)
        .await
        .unwrap();
    assert_eq!(
        endpoints.token.as_str(),
        format!("{}/token", provider.issuer)
    );
    assert!(endpoints.revocation.is_some());

    // The connect flow with only the issuer.
    let mut cfg = provider.connect_config("connect", ClientAuth::ClientSecretPost);
    cfg.token_endpoint = None;
    cfg.authorization_endpoint = None;
    cfg.issuer = Some(provider.issuer.parse().unwrap());
    let server = BrokeredServer::from_parts("upstream", UPSTREAM_RESOURCE, cfg).unwrap();
    let authorize = s.connector.start(&s.alice, &server).await.unwrap();
    assert!(
        authorize
            .as_str()
            .starts_with(&format!("{}/auth?", provider.issuer))
    );
    let back = provider.browse(&authorize, "alice", "approve").await;
    s.connector
        .complete(
            &param(&back, "state").unwrap(),
            &param(&back, "code").unwrap(),
            &s.alice,
        )
        .await
        .unwrap();

    // An issuer with no metadata is a clear error, not a panic.
    let mut cfg = provider.connect_config("tessera", ClientAuth::ClientSecretPost);
    cfg.mode = BrokerMode::TokenExchange;
    cfg.token_endpoint = None;
    cfg.issuer = Some(format!("{}/nowhere", provider.issuer).parse().unwrap());
    assert!(matches!(
        ex.exchange("files", &cfg, &subject).await,
        Err(BrokerError::Discovery { .. })
    ));
}

#[tokio::test]
async fn discovery_refuses_metadata_of_another_issuer() {
    use wiremock::matchers::method;
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let mock = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "issuer": "https://evil.example", "token_endpoint": "https://evil.example/token"
        })))
        .mount(&mock)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .expect(0)
        .mount(&mock)
        .await;
    let provider_cfg = AuthBrokerConfig {
        mode: BrokerMode::TokenExchange,
        token_endpoint: None,
        authorization_endpoint: None,
        resource: None,
        scopes: vec![],
        client_id: Some("c".into()),
        client_secret: Some(SecretString::from("s")),
        header: "Authorization".into(),
        header_format: "Bearer {token}".into(),
        audience: Some("api://upstream".into()),
        subject_token_type: SubjectTokenType::AccessToken,
        client_auth: ClientAuth::ClientSecretPost,
        private_key_file: None,
        revocation_endpoint: None,
        issuer: Some(mock.uri().parse().unwrap()),
        allowed_users: vec![],
        allowed_emails: vec![],
        allowed_groups: vec![],
    };
    let err = TokenExchanger::new(reqwest::Client::new())
        .exchange("files", &provider_cfg, &SecretString::from("subject"))
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "discovery_failed");
    assert!(err.to_string().contains("issuer mismatch"), "{err}");
}
