//! Identity: the top-level `auth` key, and the reference's `server_edition` block (legacy alias
//! `teams`, REFERENCE.md §1.2) mapped onto the same [`AuthConfig`].

use std::net::SocketAddr;

use secrecy::{ExposeSecret, SecretString};
use url::Url;

use super::{Cx, Fields, Schema, Text, suggestion};
use crate::json::Node;
use crate::path::{self, quote};
use crate::{
    AdminClaim, AuthConfig, AuthMode, AuthProvider, AuthorizationServerConfig, JwtAlgorithm,
    RateLimit, defaults, keys,
};

const PROVIDERS: &[&str] = &["oidc", "google", "github", "microsoft"];
const PRESETS: &[&str] = &["google", "github", "microsoft"];

/// What the top-level walk learnt about identity.
pub(super) struct Identity {
    pub(super) mode: AuthMode,
    pub(super) credential_encryption_key: Option<SecretString>,
    /// Identity was asked for (an `auth` object, an enabled `server_edition`), even if it had
    /// problems: brokered servers are then not reported as lacking one.
    pub(super) intended: bool,
}

/// What `server_edition` holds.
enum Edition {
    Absent,
    Disabled,
    Invalid,
    Enabled(Box<AuthConfig>, Option<SecretString>),
}

impl Cx<'_> {
    /// `auth`, `server_edition` and `teams` of the top-level object. `public_url` and `listen`
    /// are the already-checked values (for the default `resource`); `brokers` are the JSON paths
    /// of every `auth_broker` block.
    pub(super) fn identity(
        &mut self,
        f: &Fields<'_>,
        public_url: Option<&Url>,
        listen: &str,
        brokers: &[String],
    ) -> Identity {
        let default_resource = default_resource(public_url, listen);
        let edition = self.edition(f, default_resource.as_ref());
        let auth = f.get("auth");

        let mut out = Identity {
            mode: AuthMode::None { explicit: false },
            credential_encryption_key: None,
            intended: false,
        };
        match auth {
            None => {}
            Some(Node::String(s)) if s == "none" => {
                out.mode = AuthMode::None { explicit: true };
            }
            Some(Node::Object(entries)) => {
                out.intended = true;
                if let Some(config) = self.auth_object("auth", entries, default_resource.as_ref()) {
                    out.mode = AuthMode::Oidc(Box::new(config));
                }
            }
            Some(Node::String(s)) => {
                let message = format!(
                    "invalid value {} (write \"none\" for single-user local use without sign-in, or an object naming the identity provider, e.g. {{\"issuer\": \"https://idp.example.com\", \"client_id\": \"tessera\"}}){}",
                    quote(s),
                    suggestion(s, &["none"])
                );
                self.err("auth", message);
                out.intended = true;
            }
            Some(other) => {
                self.wrong_type(
                    "auth",
                    other,
                    "\"none\" or an object",
                    "{\"issuer\": \"https://idp.example.com\", \"client_id\": \"tessera\"}",
                );
                out.intended = true;
            }
        }

        let edition_key = if f.get("server_edition").is_some() {
            "server_edition"
        } else {
            "teams"
        };
        if matches!(edition, Edition::Invalid | Edition::Enabled(..)) && auth.is_some() {
            self.err(
                edition_key,
                format!(
                    "both \"auth\" and an enabled {edition_key} configure identity (keep one: move the provider settings into \"auth\" and remove {edition_key}, or remove \"auth\")"
                ),
            );
        }
        match edition {
            Edition::Absent | Edition::Disabled => {}
            Edition::Invalid => out.intended = true,
            Edition::Enabled(config, key) => {
                out.intended = true;
                if auth.is_none() {
                    out.credential_encryption_key = key;
                    out.mode = AuthMode::Oidc(config);
                }
            }
        }

        if !out.intended {
            let message = match out.mode {
                AuthMode::None { explicit: true } => {
                    "brokered servers need an identity: configure auth (\"auth\": \"none\" runs without users; replace it with an \"auth\" object naming your identity provider, or remove auth_broker)"
                }
                _ => {
                    "brokered servers need an identity: configure auth (add an \"auth\" object naming your identity provider, e.g. {\"issuer\": \"https://idp.example.com\", \"client_id\": \"tessera\"}, or remove auth_broker)"
                }
            };
            for p in brokers {
                self.err(p, message);
            }
        }
        out
    }

    /// `server_edition`, or `teams` when there is no `server_edition` (the reference's rule).
    fn edition(&mut self, f: &Fields<'_>, default_resource: Option<&Url>) -> Edition {
        let (key, node) = match (f.get("server_edition"), f.get("teams")) {
            (Some(node), teams) => {
                if teams.is_some() {
                    // The reference decodes `teams` only when `server_edition` is absent.
                    self.ignored.push("teams".to_string());
                }
                ("server_edition", node)
            }
            (None, Some(node)) => ("teams", node),
            (None, None) => return Edition::Absent,
        };
        let Node::Object(entries) = node else {
            self.wrong_type(
                key,
                node,
                "an object",
                "{\"enabled\": true, \"admin_emails\": [\"admin@example.com\"], \"oauth\": {\"provider\": \"google\", \"client_id\": \"…\", \"client_secret\": \"${GOOGLE_CLIENT_SECRET}\"}}",
            );
            return Edition::Invalid;
        };
        let enabled = entries.iter().find(|(k, _)| k == "enabled").map(|(_, n)| n);
        match enabled {
            None | Some(Node::Null) | Some(Node::Bool(false)) => {
                // Like the reference: nothing in a disabled block is read or checked.
                self.ignored.push(key.to_string());
                return Edition::Disabled;
            }
            Some(Node::Bool(true)) => {}
            Some(other) => {
                self.wrong_type(&path::key(key, "enabled"), other, "true or false", "true");
                return Edition::Invalid;
            }
        }
        let f = self.object(
            key,
            entries,
            &Schema {
                known: keys::SERVER_EDITION,
                silent: &[],
                reference: keys::SERVER_EDITION_REFERENCE,
                reference_prefixes: &[],
            },
        );
        let at = |k: &str| path::key(key, k);
        let before = self.problems.len();

        let admin_emails = f
            .get("admin_emails")
            .and_then(|n| self.emails(&at("admin_emails"), n));
        if matches!(&admin_emails, Some(list) if list.is_empty()) || f.get("admin_emails").is_none()
        {
            self.err(
                &at("admin_emails"),
                "must contain at least one admin email (list the administrators, e.g. [\"admin@example.com\"])",
            );
        }
        let session_ttl = f
            .get("session_ttl")
            .and_then(|n| self.duration(&at("session_ttl"), n))
            .unwrap_or(defaults::AUTH_SESSION_TTL);
        let store_idp_tokens = f
            .get("store_idp_tokens")
            .and_then(|n| self.boolean(&at("store_idp_tokens"), n))
            .unwrap_or(defaults::AUTH_STORE_IDP_TOKENS);
        let credential_encryption_key = f
            .get("credential_encryption_key")
            .and_then(|n| self.secret(&at("credential_encryption_key"), n))
            .filter(|s| !s.expose_secret().is_empty());

        let oauth = match f.get("oauth") {
            None => {
                self.err(
                    &at("oauth"),
                    format!(
                        "configuration is required when {key} is enabled (add {{\"provider\": \"google\", \"client_id\": \"…\", \"client_secret\": \"${{CLIENT_SECRET}}\"}}, or use Tessera's \"auth\" object)"
                    ),
                );
                None
            }
            Some(Node::Object(entries)) => Some(entries),
            Some(other) => {
                self.wrong_type(
                    &at("oauth"),
                    other,
                    "an object",
                    "{\"provider\": \"google\", \"client_id\": \"…\", \"client_secret\": \"${CLIENT_SECRET}\"}",
                );
                None
            }
        };
        let mut config = None;
        if let Some(entries) = oauth {
            let op = at("oauth");
            let of = self.object(
                &op,
                entries,
                &Schema {
                    known: keys::SERVER_EDITION_OAUTH,
                    silent: &[],
                    reference: &[],
                    reference_prefixes: &[],
                },
            );
            let oat = |k: &str| path::key(&op, k);
            let provider_name = match of.get("provider") {
                None => {
                    self.err(
                        &oat("provider"),
                        "is required (one of: google, github, microsoft)",
                    );
                    None
                }
                Some(n) => self.text(&oat("provider"), n, "\"google\"").and_then(|t| {
                    let lower = t.value.to_ascii_lowercase();
                    if PRESETS.contains(&lower.as_str()) {
                        Some(lower)
                    } else {
                        let message = format!(
                            "must be one of: google, github, microsoft (got: {}){}",
                            t.value,
                            suggestion(&lower, PRESETS)
                        );
                        self.err(&oat("provider"), message);
                        None
                    }
                }),
            };
            let client_id = self.required_text(
                &of,
                &oat("client_id"),
                "client_id",
                "\"1234.apps.googleusercontent.com\"",
            );
            let client_secret = match of.get("client_secret") {
                None => {
                    self.err(
                        &oat("client_secret"),
                        "is required (set it from the environment, e.g. \"${OAUTH_CLIENT_SECRET}\")",
                    );
                    None
                }
                Some(n) => self.secret(&oat("client_secret"), n).filter(|s| {
                    let empty = s.expose_secret().is_empty();
                    if empty {
                        self.err(
                            &oat("client_secret"),
                            "must not be empty (set it from the environment, e.g. \"${OAUTH_CLIENT_SECRET}\")",
                        );
                    }
                    !empty
                }),
            };
            let tenant = self.tenant(&of, &oat("tenant_id"), provider_name.as_deref());
            let allowed_domains = of
                .get("allowed_domains")
                .and_then(|n| self.domains(&oat("allowed_domains"), n))
                .unwrap_or_default();
            let resource = self.resource(key, None, default_resource, key);

            if let (Some(provider_name), Some(client_id), Some(resource)) =
                (provider_name, client_id, resource)
            {
                let provider = preset(&provider_name, tenant);
                let mut c = AuthConfig::oidc(preset_issuer(&provider), client_id, resource);
                c.scopes = preset_scopes(&provider);
                c.provider = provider;
                c.client_secret = client_secret;
                c.admin_emails = admin_emails.unwrap_or_default();
                c.allowed_domains = allowed_domains;
                c.session_ttl = session_ttl;
                c.store_idp_tokens = store_idp_tokens;
                config = Some(c);
            }
        }
        match config {
            Some(c) if self.problems.len() == before => {
                Edition::Enabled(Box::new(c), credential_encryption_key)
            }
            _ => Edition::Invalid,
        }
    }

    /// The `auth` object.
    fn auth_object(
        &mut self,
        p: &str,
        entries: &[(String, Node)],
        default_resource: Option<&Url>,
    ) -> Option<AuthConfig> {
        let f = self.object(
            p,
            entries,
            &Schema {
                known: keys::AUTH,
                silent: &[],
                reference: &[],
                reference_prefixes: &[],
            },
        );
        let at = |k: &str| path::key(p, k);
        let before = self.problems.len();

        let provider_name = match f.get("provider") {
            None => Some(defaults::AUTH_PROVIDER.to_string()),
            Some(n) => self.text(&at("provider"), n, "\"oidc\"").and_then(|t| {
                if PROVIDERS.contains(&t.value.as_str()) {
                    Some(t.value)
                } else {
                    let message = format!(
                        "invalid provider {} (must be oidc, google, github, or microsoft){}",
                        t.shown(),
                        suggestion(&t.value, PROVIDERS)
                    );
                    self.err(&at("provider"), message);
                    None
                }
            }),
        };
        let tenant = self.tenant(&f, &at("tenant_id"), provider_name.as_deref());
        let provider = provider_name.as_deref().map(|n| preset(n, tenant));

        let issuer = match f.get("issuer") {
            Some(n) => self
                .nonempty_text(&at("issuer"), n, "\"https://idp.example.com\"")
                .and_then(|t| self.issuer(&at("issuer"), &t)),
            None => {
                if provider == Some(AuthProvider::Oidc) {
                    self.err(
                        &at("issuer"),
                        "is required for provider \"oidc\" (set the identity provider's issuer URL, e.g. \"https://idp.example.com\"; or set provider to google, github or microsoft)",
                    );
                }
                provider.as_ref().map(preset_issuer)
            }
        };
        let client_id = self.required_text(&f, &at("client_id"), "client_id", "\"tessera\"");
        let client_secret = f
            .get("client_secret")
            .and_then(|n| self.secret(&at("client_secret"), n))
            .filter(|s| !s.expose_secret().is_empty());
        let scopes = match f.get("scopes") {
            Some(n) => self.scopes(&at("scopes"), n),
            None => provider.as_ref().map(preset_scopes),
        };
        let resource = self.resource(p, f.get("resource"), default_resource, "auth");
        let audiences = match f.get("audience") {
            None => Some(Vec::new()),
            Some(Node::String(_)) => f
                .get("audience")
                .and_then(|n| self.nonempty_text(&at("audience"), n, "\"api://tessera\""))
                .map(|t| vec![t.value]),
            Some(n) => self
                .string_list(&at("audience"), n, "[\"api://tessera\"]")
                .map(|v| {
                    v.into_iter()
                        .map(|t| t.value)
                        .filter(|v| !v.is_empty())
                        .collect()
                }),
        };
        let algorithms = match f.get("algorithms") {
            None => Some(defaults::AUTH_ALGORITHMS.to_vec()),
            Some(n) => self.algorithms(&at("algorithms"), n),
        };
        let introspection_endpoint = f.get("introspection_endpoint").and_then(|n| {
            let text = self.nonempty_text(
                &at("introspection_endpoint"),
                n,
                "\"https://idp.example.com/oauth2/introspect\"",
            )?;
            self.endpoint_url(&at("introspection_endpoint"), &text)
        });
        if f.present("introspection_endpoint") && !f.present("client_secret") {
            self.err(
                &at("client_secret"),
                "is required with introspection_endpoint (Tessera authenticates to it with client_id and client_secret; set it, e.g. \"${IDP_CLIENT_SECRET}\")",
            );
        }
        let introspection_cache = f
            .get("introspection_cache")
            .map(|n| self.duration(&at("introspection_cache"), n))
            .unwrap_or(Some(defaults::AUTH_INTROSPECTION_CACHE));
        let jwks_cache = f
            .get("jwks_cache")
            .map(|n| self.duration(&at("jwks_cache"), n))
            .unwrap_or(Some(defaults::AUTH_JWKS_CACHE));
        let scopes_required = match f.get("scopes_required") {
            Some(n) => self.scopes(&at("scopes_required"), n),
            None => Some(Vec::new()),
        };
        let admin_emails = match f.get("admin_emails") {
            Some(n) => self.emails(&at("admin_emails"), n),
            None => Some(Vec::new()),
        };
        let admin_claim = match f.get("admin_claim") {
            Some(n) => self.admin_claim(&at("admin_claim"), n).map(Some),
            None => Some(None),
        };
        let allowed_domains = match f.get("allowed_domains") {
            Some(n) => self.domains(&at("allowed_domains"), n),
            None => Some(Vec::new()),
        };
        let authorization_server = match f.get("authorization_server") {
            None => Some(None),
            Some(n) => self.authorization_server(&at("authorization_server"), n),
        };
        // The authorization server keeps the provider's tokens: they are the subject tokens of
        // its users' brokered calls.
        let as_enabled = matches!(authorization_server, Some(Some(_)));
        let store_idp_tokens = match f.get("store_idp_tokens") {
            Some(n) => self.boolean(&at("store_idp_tokens"), n),
            None => Some(as_enabled || defaults::AUTH_STORE_IDP_TOKENS),
        };
        if as_enabled && store_idp_tokens == Some(false) {
            self.err(
                &at("store_idp_tokens"),
                "must not be false with authorization_server (Tessera keeps the provider's tokens from the sign-in as the subject tokens of brokered calls; remove the key or set it to true)",
            );
        }
        // Entra on-behalf-of only accepts a token issued to Tessera's own application: a
        // Microsoft Graph scope (the reference's `User.Read`) yields a Graph-audience token that
        // OBO rejects (REFERENCE.md §3 B8).
        let scopes = match (&provider, f.present("scopes"), store_idp_tokens) {
            (Some(AuthProvider::Microsoft { .. }), false, Some(true)) => {
                client_id.as_ref().map(|id| microsoft_obo_scopes(id))
            }
            (Some(AuthProvider::Microsoft { .. }), true, Some(true)) => {
                if let Some(list) = &scopes
                    && !list.iter().any(|s| s.starts_with("api://"))
                {
                    self.err(
                        &at("scopes"),
                        "must name Tessera's own API for provider \"microsoft\" with store_idp_tokens (a Microsoft Graph token such as User.Read's is refused by on-behalf-of; use [\"openid\", \"email\", \"profile\", \"offline_access\", \"api://<client_id>/.default\"])",
                    );
                }
                scopes
            }
            _ => scopes,
        };
        let session_ttl = f
            .get("session_ttl")
            .map(|n| self.duration(&at("session_ttl"), n))
            .unwrap_or(Some(defaults::AUTH_SESSION_TTL));

        if self.problems.len() != before {
            return None;
        }
        Some(AuthConfig {
            provider: provider?,
            issuer: issuer?,
            client_id: client_id?,
            client_secret,
            scopes: scopes?,
            resource: resource?,
            audiences: audiences?,
            algorithms: algorithms?,
            introspection_endpoint,
            introspection_cache: introspection_cache?,
            jwks_cache: jwks_cache?,
            scopes_required: scopes_required?,
            admin_emails: admin_emails?,
            admin_claim: admin_claim?,
            allowed_domains: allowed_domains?,
            store_idp_tokens: store_idp_tokens?,
            session_ttl: session_ttl?,
            authorization_server: authorization_server?,
        })
    }

    /// `auth.authorization_server`: `true`, `false`, or an object of settings.
    fn authorization_server(
        &mut self,
        p: &str,
        node: &Node,
    ) -> Option<Option<AuthorizationServerConfig>> {
        let entries = match node {
            Node::Bool(true) => return Some(Some(AuthorizationServerConfig::default())),
            Node::Bool(false) => return Some(None),
            Node::Object(entries) => entries,
            other => {
                self.wrong_type(
                    p,
                    other,
                    "an object or true",
                    "{\"access_token_ttl\": \"1h\"}",
                );
                return None;
            }
        };
        let f = self.object(
            p,
            entries,
            &Schema {
                known: keys::AUTHORIZATION_SERVER,
                silent: &[],
                reference: &[],
                reference_prefixes: &[],
            },
        );
        let at = |k: &str| path::key(p, k);
        let before = self.problems.len();
        let defaults = AuthorizationServerConfig::default();
        let duration = |cx: &mut Self, key: &str, default| match f.get(key) {
            Some(n) => cx.duration(&at(key), n),
            None => Some(default),
        };
        let access_token_ttl = duration(self, "access_token_ttl", defaults.access_token_ttl);
        let refresh_token_ttl = duration(self, "refresh_token_ttl", defaults.refresh_token_ttl);
        let code_ttl = duration(self, "code_ttl", defaults.code_ttl);
        let flag = |cx: &mut Self, key: &str, default| match f.get(key) {
            Some(n) => cx.boolean(&at(key), n),
            None => Some(default),
        };
        let dynamic_registration =
            flag(self, "dynamic_registration", defaults.dynamic_registration);
        let client_metadata_documents = flag(
            self,
            "client_metadata_documents",
            defaults.client_metadata_documents,
        );
        let registration_rate_limit = match f.get("registration_rate_limit") {
            Some(n) => self.rate_limit(&at("registration_rate_limit"), n),
            None => Some(defaults.registration_rate_limit),
        };
        if let (Some(access), Some(refresh)) = (access_token_ttl, refresh_token_ttl)
            && refresh < access
        {
            self.err(
                &at("refresh_token_ttl"),
                "must not be shorter than access_token_ttl (a refresh token renews access tokens; e.g. \"30d\")",
            );
        }
        if self.problems.len() != before {
            return None;
        }
        Some(Some(AuthorizationServerConfig {
            access_token_ttl: access_token_ttl?,
            refresh_token_ttl: refresh_token_ttl?,
            code_ttl: code_ttl?,
            dynamic_registration: dynamic_registration?,
            client_metadata_documents: client_metadata_documents?,
            registration_rate_limit: registration_rate_limit?,
        }))
    }

    /// A token bucket: `{"per_minute": 10, "burst": 20}` (either key may be left to its
    /// default), `true` for the defaults, or `false` for no limit.
    fn rate_limit(&mut self, p: &str, node: &Node) -> Option<Option<RateLimit>> {
        const EXAMPLE: &str = "{\"per_minute\": 10, \"burst\": 20}, or false for no limit";
        let entries = match node {
            Node::Bool(true) => return Some(Some(RateLimit::default())),
            Node::Bool(false) => return Some(None),
            Node::Object(entries) => entries,
            other => {
                self.wrong_type(p, other, "an object, true or false", EXAMPLE);
                return None;
            }
        };
        let f = self.object(
            p,
            entries,
            &Schema {
                known: keys::RATE_LIMIT,
                silent: &[],
                reference: &[],
                reference_prefixes: &[],
            },
        );
        let defaults = RateLimit::default();
        let count = |cx: &mut Self, key: &str, default: u32| {
            let Some(n) = f.get(key) else {
                return Some(default);
            };
            let at = path::key(p, key);
            let hint = format!("e.g. {default}; registration_rate_limit: false for no limit");
            let n = cx.whole_number(&at, n, &hint)?;
            match u32::try_from(n) {
                Ok(0) => {
                    cx.err(&at, format!("must be at least 1 ({hint})"));
                    None
                }
                Ok(n) => Some(n),
                Err(_) => {
                    cx.err(&at, format!("is too large ({hint})"));
                    None
                }
            }
        };
        let per_minute = count(self, "per_minute", defaults.per_minute);
        let burst = count(self, "burst", defaults.burst);
        Some(Some(RateLimit {
            per_minute: per_minute?,
            burst: burst?,
        }))
    }

    /// A required, non-empty string key.
    fn required_text(
        &mut self,
        f: &Fields<'_>,
        p: &str,
        key: &str,
        example: &str,
    ) -> Option<String> {
        match f.get(key) {
            None => {
                self.err(
                    p,
                    format!(
                        "is required (set Tessera's client id registered at the identity provider, e.g. {example})"
                    ),
                );
                None
            }
            Some(n) => self.nonempty_text(p, n, example).map(|t| t.value),
        }
    }

    /// `tenant_id`: microsoft only; default `common`.
    fn tenant(&mut self, f: &Fields<'_>, p: &str, provider: Option<&str>) -> String {
        let Some(node) = f.get("tenant_id") else {
            return defaults::AUTH_TENANT_ID.to_string();
        };
        let Some(text) = self.nonempty_text(p, node, "\"common\"") else {
            return defaults::AUTH_TENANT_ID.to_string();
        };
        if provider.is_some_and(|p| p != "microsoft") {
            self.err(
                p,
                "is only used with provider \"microsoft\" (remove it, or set provider to \"microsoft\")",
            );
        } else if !text
            .value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.'))
        {
            self.err(
                p,
                format!(
                    "invalid tenant {} (write a tenant GUID, a domain such as \"contoso.onmicrosoft.com\", or common, organizations, consumers)",
                    text.shown()
                ),
            );
        }
        text.value
    }

    /// An issuer: https (http for loopback), no query or fragment. Kept as written.
    fn issuer(&mut self, p: &str, text: &Text) -> Option<String> {
        let url = self.endpoint_url(p, text)?;
        if url.query().is_some() {
            self.err(
                p,
                "must not contain a query (an issuer is scheme, host and optional path; OpenID Connect Discovery §3)",
            );
            return None;
        }
        Some(text.value.trim().to_string())
    }

    /// `resource`, or its default; `key` names the block for the message.
    fn resource(
        &mut self,
        p: &str,
        node: Option<&Node>,
        default: Option<&Url>,
        key: &str,
    ) -> Option<Url> {
        let rp = path::key(p, "resource");
        let Some(node) = node else {
            // A broken public_url is reported already.
            if default.is_none() && !self.problems.iter().any(|x| x.path == "public_url") {
                if key == "auth" {
                    self.err(
                        &rp,
                        "cannot be derived: public_url is not set and listen is not a loopback address (set public_url to the gateway's external base URL, e.g. \"https://mcp.example.com\", or set auth.resource to the absolute URL of /mcp)",
                    );
                } else {
                    self.err(
                        "public_url",
                        format!(
                            "is required when {key} is enabled and listen is not a loopback address (set it to the gateway's external base URL, e.g. \"https://mcp.example.com\"; /mcp is the resource tokens must name)"
                        ),
                    );
                }
            }
            return default.cloned();
        };
        let text = self.nonempty_text(&rp, node, "\"https://mcp.example.com/mcp\"")?;
        let url = match Url::parse(text.value.trim()) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => url,
            _ => {
                self.err(
                    &rp,
                    format!(
                        "{} is not an absolute http(s) URL (write the URL clients use for /mcp, e.g. \"https://mcp.example.com/mcp\")",
                        text.shown()
                    ),
                );
                return None;
            }
        };
        if url.fragment().is_some() || url.query().is_some() {
            self.err(
                &rp,
                "must not contain a query or fragment (RFC 8707; e.g. \"https://mcp.example.com/mcp\")",
            );
            return None;
        }
        Some(url)
    }

    /// An array of scopes: non-empty, no whitespace.
    fn scopes(&mut self, p: &str, node: &Node) -> Option<Vec<String>> {
        let list = self.string_list(p, node, "[\"openid\", \"email\", \"profile\"]")?;
        let mut out = Vec::with_capacity(list.len());
        let mut ok = true;
        for (i, t) in list.into_iter().enumerate() {
            let sp = path::index(p, i);
            if t.value.is_empty() {
                self.err(&sp, "must not be empty (remove it)");
                ok = false;
            } else if t
                .value
                .chars()
                .any(|c| c.is_whitespace() || c == '"' || c == '\\')
            {
                self.err(
                    &sp,
                    format!(
                        "scope {} contains whitespace or a quote (list each scope as its own array element)",
                        t.shown()
                    ),
                );
                ok = false;
            } else if !out.contains(&t.value) {
                out.push(t.value);
            }
        }
        ok.then_some(out)
    }

    /// `algorithms`: asymmetric JWS algorithms only.
    fn algorithms(&mut self, p: &str, node: &Node) -> Option<Vec<JwtAlgorithm>> {
        let list = self.string_list(p, node, "[\"RS256\", \"ES256\"]")?;
        if list.is_empty() {
            self.err(
                p,
                "must name at least one algorithm (e.g. [\"RS256\", \"ES256\"], or remove the key for that default)",
            );
            return None;
        }
        let names: Vec<&str> = JwtAlgorithm::ALL.iter().map(|a| a.name()).collect();
        let mut out = Vec::with_capacity(list.len());
        let mut ok = true;
        for (i, t) in list.into_iter().enumerate() {
            let ap = path::index(p, i);
            if let Some(alg) = JwtAlgorithm::from_name(&t.value) {
                if !out.contains(&alg) {
                    out.push(alg);
                }
                continue;
            }
            ok = false;
            let upper = t.value.to_ascii_uppercase();
            let message = if upper == "NONE" {
                "\"none\" means an unsigned token and is never accepted (remove it; use RS256 or ES256)".to_string()
            } else if upper.starts_with("HS") {
                format!(
                    "{} is a shared-secret (HMAC) algorithm and is not accepted: anyone holding the secret could mint tokens, and it opens algorithm-confusion attacks with public keys (remove it; use RS256 or ES256)",
                    t.shown()
                )
            } else {
                format!(
                    "unsupported algorithm {} (use one of {}){}",
                    t.shown(),
                    names.join(", "),
                    suggestion(&t.value, &names)
                )
            };
            self.err(&ap, message);
        }
        ok.then_some(out)
    }

    /// Email addresses, lower-cased.
    fn emails(&mut self, p: &str, node: &Node) -> Option<Vec<String>> {
        let list = self.string_list(p, node, "[\"admin@example.com\"]")?;
        let mut out = Vec::with_capacity(list.len());
        let mut ok = true;
        for (i, t) in list.into_iter().enumerate() {
            let email = t.value.trim().to_lowercase();
            let valid = match email.split_once('@') {
                Some((local, domain)) => {
                    !local.is_empty()
                        && !domain.is_empty()
                        && !domain.contains('@')
                        && !email.chars().any(char::is_whitespace)
                }
                None => false,
            };
            if valid {
                if !out.contains(&email) {
                    out.push(email);
                }
            } else {
                self.err(
                    &path::index(p, i),
                    format!(
                        "{} is not an email address (write it as \"name@example.com\")",
                        t.shown()
                    ),
                );
                ok = false;
            }
        }
        ok.then_some(out)
    }

    /// Email domains, lower-cased.
    fn domains(&mut self, p: &str, node: &Node) -> Option<Vec<String>> {
        let list = self.string_list(p, node, "[\"example.com\"]")?;
        let mut out = Vec::with_capacity(list.len());
        let mut ok = true;
        for (i, t) in list.into_iter().enumerate() {
            let domain = t.value.trim().to_lowercase();
            if domain.is_empty()
                || domain.contains('@')
                || domain.chars().any(|c| c.is_whitespace() || c == '/')
            {
                self.err(
                    &path::index(p, i),
                    format!(
                        "{} is not a domain (write the part after \"@\", e.g. \"example.com\")",
                        t.shown()
                    ),
                );
                ok = false;
            } else if !out.contains(&domain) {
                out.push(domain);
            }
        }
        ok.then_some(out)
    }

    fn admin_claim(&mut self, p: &str, node: &Node) -> Option<AdminClaim> {
        let Node::Object(entries) = node else {
            self.wrong_type(
                p,
                node,
                "an object",
                "{\"claim\": \"groups\", \"value\": \"admins\"}",
            );
            return None;
        };
        let f = self.object(
            p,
            entries,
            &Schema {
                known: keys::ADMIN_CLAIM,
                silent: &[],
                reference: &[],
                reference_prefixes: &[],
            },
        );
        let get = |cx: &mut Self, key: &str, example: &str| -> Option<String> {
            let kp = path::key(p, key);
            match f.get(key) {
                None => {
                    cx.err(&kp, format!("is required (e.g. {example})"));
                    None
                }
                Some(n) => cx.nonempty_text(&kp, n, example).map(|t| t.value),
            }
        };
        let claim = get(self, "claim", "\"groups\"");
        let value = get(self, "value", "\"admins\"");
        Some(AdminClaim {
            claim: claim?,
            value: value?,
        })
    }
}

/// `public_url` + `/mcp`, or `http://<listen>/mcp` when `listen` is a loopback address.
fn default_resource(public_url: Option<&Url>, listen: &str) -> Option<Url> {
    if let Some(base) = public_url {
        let mut url = base.clone();
        let path = format!(
            "{}{}",
            base.path().trim_end_matches('/'),
            defaults::AUTH_RESOURCE_PATH
        );
        url.set_path(&path);
        url.set_query(None);
        url.set_fragment(None);
        return Some(url);
    }
    let addr: SocketAddr = listen.parse().ok()?;
    if !addr.ip().is_loopback() {
        return None;
    }
    Url::parse(&format!("http://{addr}{}", defaults::AUTH_RESOURCE_PATH)).ok()
}

fn preset(name: &str, tenant_id: String) -> AuthProvider {
    match name {
        "google" => AuthProvider::Google,
        "github" => AuthProvider::Github,
        "microsoft" => AuthProvider::Microsoft { tenant_id },
        _ => AuthProvider::Oidc,
    }
}

/// The issuer a preset implies (the `oidc` provider has none; its caller reports that).
fn preset_issuer(provider: &AuthProvider) -> String {
    match provider {
        AuthProvider::Google => "https://accounts.google.com".to_string(),
        AuthProvider::Github => "https://github.com/login/oauth".to_string(),
        AuthProvider::Microsoft { tenant_id } => {
            format!("https://login.microsoftonline.com/{tenant_id}/v2.0")
        }
        AuthProvider::Oidc => String::new(),
    }
}

/// The `microsoft` preset's scopes when the sign-in token is kept for on-behalf-of: a token for
/// Tessera's own API (`api://<client_id>`), with a refresh token.
fn microsoft_obo_scopes(client_id: &str) -> Vec<String> {
    ["openid", "email", "profile", "offline_access"]
        .iter()
        .map(|s| s.to_string())
        .chain(std::iter::once(format!("api://{client_id}/.default")))
        .collect()
}

fn preset_scopes(provider: &AuthProvider) -> Vec<String> {
    let list = match provider {
        AuthProvider::Github => defaults::AUTH_SCOPES_GITHUB,
        AuthProvider::Microsoft { .. } => defaults::AUTH_SCOPES_MICROSOFT,
        AuthProvider::Oidc | AuthProvider::Google => defaults::AUTH_SCOPES,
    };
    list.iter().map(|s| s.to_string()).collect()
}
