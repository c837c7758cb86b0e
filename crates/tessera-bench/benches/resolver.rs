//! `Resolver::resolve` on a warm cache: the per-call cost of a brokered credential on the hot path.
//!
//! The credential store is pre-filled (no token endpoint is called), one resolve per user warms the
//! cache, and each measured resolve is polled once with a no-op waker: a hit completes on its first
//! poll without touching the runtime, so the number is the resolver's own work (read lock, two hash
//! lookups, expiry check, `Arc` clone).

use std::future::Future;
use std::hint::black_box;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime};

use criterion::{Criterion, criterion_group, criterion_main};
use futures::future::BoxFuture;
use secrecy::SecretString;
use tessera_broker::{
    BrokeredServer, CredentialSource, MemoryCredentialStore, Resolver, StoredCredential,
    SubjectTokenError, SubjectTokenSource, TokenExchanger,
};
use tessera_config::{AuthBrokerConfig, BrokerMode, ClientAuth, SubjectTokenType};

/// Never asked: every user's credential is already stored.
struct NoSubjects;

impl SubjectTokenSource for NoSubjects {
    fn subject_token<'a>(
        &'a self,
        _user: &'a str,
        _kind: SubjectTokenType,
    ) -> BoxFuture<'a, Result<SecretString, SubjectTokenError>> {
        Box::pin(async { Err(SubjectTokenError::Unavailable) })
    }
}

fn server() -> BrokeredServer {
    let config = AuthBrokerConfig {
        mode: BrokerMode::TokenExchange,
        token_endpoint: Some("http://127.0.0.1:9/token".parse().expect("url")),
        authorization_endpoint: None,
        resource: None,
        scopes: vec!["read".into()],
        client_id: Some("tessera".into()),
        client_secret: Some(SecretString::from("secret")),
        header: "Authorization".into(),
        header_format: "Bearer {token}".into(),
        audience: Some("upstream".into()),
        subject_token_type: SubjectTokenType::AccessToken,
        client_auth: ClientAuth::default(),
        private_key_file: None,
        revocation_endpoint: None,
        issuer: None,
        allowed_users: Vec::new(),
        allowed_emails: Vec::new(),
        allowed_groups: Vec::new(),
    };
    BrokeredServer::from_parts("upstream", "http://127.0.0.1:9/mcp", config).expect("server")
}

fn user(i: usize) -> String {
    format!("0199a6c2-0000-7000-8000-{i:012}")
}

/// A resolver whose cache holds `users` users' credentials for `server`.
fn warm_resolver(rt: &tokio::runtime::Runtime, server: &BrokeredServer, users: usize) -> Resolver {
    let store = Arc::new(MemoryCredentialStore::new());
    let now = SystemTime::now();
    for i in 0..users {
        store.insert(
            &user(i),
            server.key(),
            StoredCredential {
                access_token: SecretString::from(format!("upstream-access-token-{i:08}")),
                refresh_token: None,
                token_type: "Bearer".into(),
                expires_at: Some(now + Duration::from_secs(3600)),
                scopes: vec!["read".into()],
                source: CredentialSource::Exchange,
                obtained_at: now,
                audience: None,
            },
        );
    }
    let resolver = Resolver::builder(
        TokenExchanger::new(reqwest::Client::new()),
        store.clone(),
        Arc::new(NoSubjects),
    )
    .build();
    rt.block_on(async {
        for i in 0..users {
            resolver
                .resolve(&tessera_broker::Requester::new(&user(i)), server)
                .await
                .expect("warm-up resolve");
        }
    });
    assert_eq!(
        store.loads(),
        users,
        "one store load per user while warming"
    );
    resolver
}

/// Polls a cache-hit resolve once; a hit is always ready.
fn hit(resolver: &Resolver, user: &str, server: &BrokeredServer, cx: &mut Context<'_>) {
    let who = tessera_broker::Requester::new(user);
    let fut = std::pin::pin!(resolver.resolve(&who, server));
    match fut.poll(cx) {
        Poll::Ready(Ok(credential)) => {
            black_box(credential);
        }
        Poll::Ready(Err(e)) => panic!("resolve failed: {e}"),
        Poll::Pending => panic!("a cache hit must complete on its first poll"),
    }
}

fn cache_hit(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let server = server();
    let mut cx = Context::from_waker(Waker::noop());
    let mut group = c.benchmark_group("resolver_cache_hit");

    let one = warm_resolver(&rt, &server, 1);
    let alice = user(0);
    group.bench_function("1_user", |b| {
        b.iter(|| hit(&one, black_box(&alice), &server, &mut cx));
    });

    const USERS: usize = 10_000;
    let many = warm_resolver(&rt, &server, USERS);
    let users: Vec<String> = (0..USERS).map(user).collect();
    let mut next = 0usize;
    group.bench_function("10k_users_round_robin", |b| {
        b.iter(|| {
            next = (next + 7919) % USERS;
            hit(&many, black_box(&users[next]), &server, &mut cx);
        });
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = cache_hit
}
criterion_main!(benches);
