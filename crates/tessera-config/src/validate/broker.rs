//! The `auth_broker` block (REFERENCE.md §2.1, with stricter checks).

use secrecy::ExposeSecret;
use url::Url;

use super::{BROKER_NOT_HTTP, Cx, Kind, Schema, is_header_value, suggestion};
use crate::json::Node;
use crate::path;
use crate::{AuthBrokerConfig, BrokerMode, ClientAuth, SubjectTokenType, defaults, keys};

impl Cx<'_> {
    pub(super) fn broker(
        &mut self,
        p: &str,
        node: &Node,
        kind: Option<Kind>,
    ) -> Option<AuthBrokerConfig> {
        if kind == Some(Kind::Stdio) {
            self.err(
                p,
                format!("{BROKER_NOT_HTTP} (remove auth_broker, or use an HTTP server)"),
            );
            return None;
        }
        let Node::Object(entries) = node else {
            self.wrong_type(
                p,
                node,
                "an object",
                "{\"mode\": \"token_exchange\", \"token_endpoint\": \"https://login.example.com/token\"}",
            );
            return None;
        };
        let f = self.object(
            p,
            entries,
            &Schema {
                known: keys::BROKER,
                silent: &[],
                reference: &[],
                reference_prefixes: &[],
            },
        );
        let at = |k: &str| path::key(p, k);

        const MODES: &[&str] = &["token_exchange", "entra_obo", "oauth_connect"];
        let mode = match f.get("mode") {
            None => {
                self.err(
                    &at("mode"),
                    "is required (one of token_exchange, entra_obo, oauth_connect)",
                );
                None
            }
            Some(node) => self
                .text(&at("mode"), node, "\"token_exchange\"")
                .and_then(|t| match t.value.as_str() {
                    "token_exchange" => Some(BrokerMode::TokenExchange),
                    "entra_obo" => Some(BrokerMode::EntraObo),
                    "oauth_connect" => Some(BrokerMode::OauthConnect),
                    other => {
                        let message = format!(
                            "invalid mode {} (must be token_exchange, entra_obo, or oauth_connect){}",
                            t.shown(),
                            suggestion(other, MODES)
                        );
                        self.err(&at("mode"), message);
                        None
                    }
                }),
        };

        let endpoint = |cx: &mut Self, key: &str| -> Option<Url> {
            let node = f.get(key)?;
            let text =
                cx.nonempty_text(&at(key), node, "\"https://login.example.com/oauth2/token\"")?;
            cx.endpoint_url(&at(key), &text)
        };
        let issuer_present = f.present("issuer");
        let issuer = endpoint(self, "issuer");
        if let Some(url) = &issuer
            && url.query().is_some()
        {
            self.err(
                &at("issuer"),
                "must not contain a query (an issuer is scheme, host and optional path; RFC 8414)",
            );
        }
        let token_endpoint = endpoint(self, "token_endpoint");
        if !f.present("token_endpoint") && !issuer_present {
            self.err(
                &at("token_endpoint"),
                "is required (set the authorization server's token URL, or set \"issuer\" to discover it via RFC 8414 metadata)",
            );
        }
        let authorization_endpoint = endpoint(self, "authorization_endpoint");
        if mode == Some(BrokerMode::OauthConnect)
            && !f.present("authorization_endpoint")
            && !issuer_present
        {
            self.err(
                &at("authorization_endpoint"),
                "is required for mode \"oauth_connect\" (set the authorization server's authorize URL, or set \"issuer\" to discover it via RFC 8414 metadata)",
            );
        }
        let revocation_endpoint = endpoint(self, "revocation_endpoint");

        let resource = f.get("resource").and_then(|n| {
            let text = self.nonempty_text(&at("resource"), n, "\"https://api.example.com/mcp\"")?;
            match Url::parse(&text.value) {
                Ok(url) if url.fragment().is_none() => Some(text.value),
                _ => {
                    self.err(
                        &at("resource"),
                        format!(
                            "{} is not an absolute URI without a fragment (RFC 8707; e.g. \"https://api.example.com/mcp\")",
                            text.shown()
                        ),
                    );
                    None
                }
            }
        });

        let scopes: Vec<String> = f
            .get("scopes")
            .and_then(|n| self.string_list(&at("scopes"), n, "[\"repo\", \"read:user\"]"))
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .filter_map(|(i, t)| {
                let scope_path = path::index(&at("scopes"), i);
                if t.value.is_empty() {
                    self.err(&scope_path, "must not be empty (remove it)");
                    None
                } else if t.value.chars().any(char::is_whitespace) {
                    self.err(
                        &scope_path,
                        format!(
                            "scope {} contains whitespace (list each scope as its own array element)",
                            t.shown()
                        ),
                    );
                    None
                } else {
                    Some(t.value)
                }
            })
            .collect();

        let client_id = f
            .get("client_id")
            .and_then(|n| self.nonempty_text(&at("client_id"), n, "\"tessera-gateway\""))
            .map(|t| t.value);
        let client_secret = f
            .get("client_secret")
            .and_then(|n| self.secret(&at("client_secret"), n))
            .filter(|s| !s.expose_secret().is_empty());

        let header = match f.get("header") {
            None => Some(defaults::BROKER_HEADER.to_string()),
            Some(n) => self
                .nonempty_text(&at("header"), n, "\"Authorization\"")
                .filter(|t| self.check_header_name(&at("header"), &t.value))
                .map(|t| t.value),
        };
        let header_format = match f.get("header_format") {
            None => Some(defaults::BROKER_HEADER_FORMAT.to_string()),
            Some(n) => self
                .text(&at("header_format"), n, "\"Bearer {token}\"")
                .and_then(|t| {
                    if !t.value.contains("{token}") {
                        self.err(
                            &at("header_format"),
                            format!(
                                "{} does not contain {{token}} (it is replaced by the access token, e.g. \"Bearer {{token}}\")",
                                t.shown()
                            ),
                        );
                        None
                    } else if !is_header_value(&t.value) {
                        self.err(
                            &at("header_format"),
                            "contains a line break or control character (remove it)",
                        );
                        None
                    } else {
                        Some(t.value)
                    }
                }),
        };
        let audience = f
            .get("audience")
            .and_then(|n| self.nonempty_text(&at("audience"), n, "\"api://upstream\""))
            .map(|t| t.value);

        const TOKEN_TYPES: &[&str] = &["access_token", "id_token"];
        let subject_token_type = match f.get("subject_token_type") {
            None => Some(SubjectTokenType::default()),
            Some(n) => self
                .text(&at("subject_token_type"), n, "\"access_token\"")
                .and_then(|t| match t.value.as_str() {
                    "access_token" => Some(SubjectTokenType::AccessToken),
                    "id_token" => Some(SubjectTokenType::IdToken),
                    other => {
                        let message = format!(
                            "invalid subject_token_type {} (must be access_token or id_token){}",
                            t.shown(),
                            suggestion(other, TOKEN_TYPES)
                        );
                        self.err(&at("subject_token_type"), message);
                        None
                    }
                }),
        };

        const CLIENT_AUTHS: &[&str] = &[
            "client_secret_post",
            "client_secret_basic",
            "private_key_jwt",
        ];
        let client_auth = match f.get("client_auth") {
            None => Some(ClientAuth::default()),
            Some(n) => self
                .text(&at("client_auth"), n, "\"client_secret_post\"")
                .and_then(|t| match t.value.as_str() {
                    "client_secret_post" => Some(ClientAuth::ClientSecretPost),
                    "client_secret_basic" => Some(ClientAuth::ClientSecretBasic),
                    "private_key_jwt" => Some(ClientAuth::PrivateKeyJwt),
                    other => {
                        let message = format!(
                            "invalid client_auth {} (must be client_secret_post, client_secret_basic, or private_key_jwt){}",
                            t.shown(),
                            suggestion(other, CLIENT_AUTHS)
                        );
                        self.err(&at("client_auth"), message);
                        None
                    }
                }),
        };

        let private_key_file = if f.present("private_key_file")
            && matches!(client_auth, Some(ClientAuth::PrivateKeyJwt))
        {
            f.get("private_key_file")
                .and_then(|n| {
                    self.text(
                        &at("private_key_file"),
                        n,
                        "\"/etc/tessera/broker-key.pem\"",
                    )
                })
                .and_then(|t| self.existing_path(&at("private_key_file"), &t, false))
        } else {
            None
        };

        let allow_list = |cx: &mut Self, key: &str, example: &str, email: bool| -> Vec<String> {
            let Some(node) = f.get(key) else {
                return Vec::new();
            };
            let list_path = at(key);
            cx.string_list(&list_path, node, example)
                .unwrap_or_default()
                .into_iter()
                .enumerate()
                .filter_map(|(i, t)| {
                    let item = path::index(&list_path, i);
                    let value = t.value.trim();
                    if value.is_empty() {
                        cx.err(&item, "must not be empty (remove it)");
                        return None;
                    }
                    if email && !is_allowed_email(value) {
                        cx.err(
                            &item,
                            format!(
                                "{} is not an email address or \"*@domain\" (write e.g. \"alice@example.com\" or \"*@example.com\")",
                                t.shown()
                            ),
                        );
                        return None;
                    }
                    Some(value.to_owned())
                })
                .collect()
        };
        let allowed_users = allow_list(self, "allowed_users", "[\"alice\"]", false);
        let allowed_emails = allow_list(self, "allowed_emails", "[\"*@example.com\"]", true);
        let allowed_groups = allow_list(self, "allowed_groups", "[\"engineering\"]", false);

        // Rules across keys.
        match client_auth {
            Some(ClientAuth::PrivateKeyJwt) if !f.present("private_key_file") => self.err(
                &at("private_key_file"),
                "is required when client_auth is \"private_key_jwt\" (set it to the PEM file holding the client's private key)",
            ),
            Some(ClientAuth::ClientSecretPost | ClientAuth::ClientSecretBasic)
                if f.present("private_key_file") =>
            {
                self.err(
                    &at("private_key_file"),
                    "is only used when client_auth is \"private_key_jwt\" (set client_auth to \"private_key_jwt\" or remove it)",
                );
            }
            Some(auth @ (ClientAuth::ClientSecretPost | ClientAuth::ClientSecretBasic)) => {
                let mode_name = match mode {
                    Some(BrokerMode::TokenExchange) => Some("token_exchange"),
                    Some(BrokerMode::EntraObo) => Some("entra_obo"),
                    _ => None,
                };
                if let Some(mode_name) = mode_name
                    && !f.present("client_secret")
                {
                    let auth_name = match auth {
                        ClientAuth::ClientSecretBasic => "client_secret_basic",
                        _ => "client_secret_post",
                    };
                    self.err(
                        &at("client_secret"),
                        format!(
                            "is required for mode \"{mode_name}\" with client_auth \"{auth_name}\" (set it, e.g. \"${{BROKER_CLIENT_SECRET}}\", or use client_auth \"private_key_jwt\"; only mode \"oauth_connect\" can do without it)"
                        ),
                    );
                }
            }
            _ => {}
        }

        Some(AuthBrokerConfig {
            mode: mode?,
            token_endpoint,
            authorization_endpoint,
            resource,
            scopes,
            client_id,
            client_secret,
            header: header?,
            header_format: header_format?,
            audience,
            subject_token_type: subject_token_type?,
            client_auth: client_auth?,
            private_key_file,
            revocation_endpoint,
            issuer,
            allowed_users,
            allowed_emails,
            allowed_groups,
        })
    }
}

/// `local@domain` (one `@`, both sides non-empty, no whitespace) or `*@domain`.
fn is_allowed_email(value: &str) -> bool {
    let Some((local, domain)) = value.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.is_empty()
        && !domain.contains('@')
        && !domain.starts_with('.')
        && !domain.contains('*')
        && (local == "*" || !local.contains('*'))
        && !value.chars().any(char::is_whitespace)
}
