//! The `github` sign-in preset: GitHub is OAuth 2.0, not OpenID Connect — no discovery, no ID
//! token, no PKCE. The user is read from `GET /user` (numeric `id` as subject, `name` else
//! `login`) and the email from `GET /user/emails` (the primary verified one, else any verified
//! one; none → the sign-in is refused). Token errors are reduced to their error code; no GitHub
//! response body reaches a response or a log line.

use axum::http::StatusCode;
use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;
use url::Url;

use crate::error::ApiError;
use crate::oidc::error_code;

/// Largest response accepted from GitHub.
const MAX_RESPONSE: usize = 1 << 20;

/// GitHub's endpoints; replaceable for tests (GitHub Enterprise has others too).
#[derive(Debug, Clone)]
pub struct GithubEndpoints {
    pub authorize: Url,
    pub token: Url,
    /// The REST API root (`https://api.github.com/`): `user` and `user/emails` are joined to it.
    pub api: Url,
}

impl Default for GithubEndpoints {
    fn default() -> Self {
        #[allow(clippy::expect_used)]
        let parse = |s: &str| Url::parse(s).expect("a constant URL");
        GithubEndpoints {
            authorize: parse("https://github.com/login/oauth/authorize"),
            token: parse("https://github.com/login/oauth/access_token"),
            api: parse("https://api.github.com/"),
        }
    }
}

/// The authorization URL: `client_id`, `redirect_uri`, `response_type=code`, `scope`, `state`.
pub(crate) fn authorize_url(
    endpoints: &GithubEndpoints,
    client_id: &str,
    redirect_uri: &str,
    scopes: &[String],
    state: &str,
) -> Url {
    let mut url = endpoints.authorize.clone();
    url.query_pairs_mut()
        .append_pair("client_id", client_id)
        .append_pair("redirect_uri", redirect_uri)
        .append_pair("response_type", "code")
        .append_pair("scope", &scopes.join(" "))
        .append_pair("state", state);
    url
}

/// What the token endpoint answered (Debug redacts the tokens).
#[derive(Debug)]
pub(crate) struct GithubTokens {
    pub access_token: SecretString,
    pub refresh_token: Option<SecretString>,
    pub expires_in: Option<u64>,
    pub scopes: Vec<String>,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: Option<String>,
    refresh_token: Option<String>,
    expires_in: Option<u64>,
    scope: Option<String>,
    error: Option<String>,
}

async fn read_capped(mut response: reqwest::Response) -> Result<Vec<u8>, ApiError> {
    let mut bytes = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if bytes.len() + chunk.len() > MAX_RESPONSE {
                    return Err(ApiError::bad_gateway("GitHub's response is too large"));
                }
                bytes.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(bytes),
            Err(e) => {
                tracing::warn!(error = %e, "reading a GitHub response failed");
                return Err(ApiError::bad_gateway("GitHub's response could not be read"));
            }
        }
    }
}

/// Exchanges the authorization code (form POST, `Accept: application/json`). GitHub reports
/// errors as 200 with `{"error": …}`: either way only the error code is kept.
pub(crate) async fn exchange_code(
    http: &reqwest::Client,
    endpoints: &GithubEndpoints,
    client_id: &str,
    client_secret: Option<&SecretString>,
    redirect_uri: &str,
    code: &str,
) -> Result<GithubTokens, ApiError> {
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", redirect_uri),
        ("client_id", client_id),
    ];
    if let Some(s) = client_secret {
        form.push(("client_secret", s.expose_secret()));
    }
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    let response = http
        .post(endpoints.token.clone())
        .header(reqwest::header::ACCEPT, "application/json")
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .body(body)
        .send()
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "token request to GitHub failed");
            ApiError::bad_gateway("GitHub's token endpoint is unreachable")
        })?;
    let status = response.status();
    let bytes = read_capped(response).await?;
    let answer: Option<TokenAnswer> = serde_json::from_slice(&bytes).ok();
    let reject = |code: String| {
        let status = if code == "bad_verification_code" || code == "invalid_grant" {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::BAD_GATEWAY
        };
        ApiError::new(status, format!("GitHub rejected the code exchange: {code}"))
    };
    match answer {
        Some(TokenAnswer {
            error: Some(code), ..
        }) => Err(reject(error_code(&code))),
        Some(TokenAnswer {
            access_token: Some(token),
            refresh_token,
            expires_in,
            scope,
            ..
        }) if status.is_success() && !token.is_empty() => Ok(GithubTokens {
            access_token: SecretString::from(token),
            refresh_token: refresh_token
                .filter(|t| !t.is_empty())
                .map(SecretString::from),
            expires_in,
            scopes: scope
                .unwrap_or_default()
                .split([',', ' '])
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
        }),
        _ if !status.is_success() => Err(reject(format!("status_{}", status.as_u16()))),
        _ => Err(ApiError::bad_gateway(
            "GitHub's token response is unreadable",
        )),
    }
}

/// The GitHub account behind an access token.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct GithubUser {
    /// The numeric account id, as text: stable across renames.
    pub subject: String,
    /// The primary verified email (lower-cased), else any verified one.
    pub email: String,
    /// `name`, else `login`.
    pub display_name: Option<String>,
}

#[derive(Deserialize)]
struct UserAnswer {
    id: u64,
    login: Option<String>,
    name: Option<String>,
}

#[derive(Deserialize)]
struct EmailAnswer {
    email: String,
    #[serde(default)]
    primary: bool,
    #[serde(default)]
    verified: bool,
}

async fn api_get<T: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    url: Url,
    token: &SecretString,
    what: &str,
) -> Result<T, ApiError> {
    let response = http
        .get(url)
        .bearer_auth(token.expose_secret())
        .header(reqwest::header::ACCEPT, "application/vnd.github+json")
        .header(reqwest::header::USER_AGENT, "tessera")
        .send()
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "GitHub API request failed");
            ApiError::bad_gateway(format!("GitHub's {what} endpoint is unreachable"))
        })?;
    let status = response.status();
    let bytes = read_capped(response).await?;
    if !status.is_success() {
        return Err(ApiError::bad_gateway(format!(
            "GitHub's {what} endpoint answered status {}",
            status.as_u16()
        )));
    }
    serde_json::from_slice(&bytes)
        .map_err(|_| ApiError::bad_gateway(format!("GitHub's {what} answer is unreadable")))
}

/// Reads the account (`/user`) and its email (`/user/emails`).
pub(crate) async fn user(
    http: &reqwest::Client,
    endpoints: &GithubEndpoints,
    token: &SecretString,
) -> Result<GithubUser, ApiError> {
    let join = |p: &str| {
        endpoints
            .api
            .join(p)
            .map_err(|e| ApiError::internal("invalid GitHub API URL", &e))
    };
    let account: UserAnswer = api_get(http, join("user")?, token, "user").await?;
    let emails: Vec<EmailAnswer> = api_get(http, join("user/emails")?, token, "emails").await?;
    let email = emails
        .iter()
        .find(|e| e.primary && e.verified)
        .or_else(|| emails.iter().find(|e| e.verified))
        .map(|e| e.email.trim().to_lowercase())
        .filter(|e| !e.is_empty())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::FORBIDDEN,
                "Sign-in refused: the GitHub account has no verified email address (verify one at https://github.com/settings/emails and sign in again)",
            )
        })?;
    let display_name = account
        .name
        .filter(|n| !n.trim().is_empty())
        .or(account.login);
    Ok(GithubUser {
        subject: account.id.to_string(),
        email,
        display_name,
    })
}

#[cfg(test)]
mod tests {
    use wiremock::matchers::{body_string_contains, header, method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    use super::*;

    fn endpoints(server: &MockServer) -> GithubEndpoints {
        let base = Url::parse(&server.uri()).unwrap();
        GithubEndpoints {
            authorize: base.join("/login/oauth/authorize").unwrap(),
            token: base.join("/login/oauth/access_token").unwrap(),
            api: base.join("/api/").unwrap(),
        }
    }

    async fn mount_user(server: &MockServer, emails: serde_json::Value) {
        Mock::given(method("GET"))
            .and(path("/api/user"))
            .and(header("authorization", "Bearer gho_abc"))
            .respond_with(ResponseTemplate::new(200).set_body_json(
                serde_json::json!({"id": 583231, "login": "octocat", "name": null, "email": null}),
            ))
            .mount(server)
            .await;
        Mock::given(method("GET"))
            .and(path("/api/user/emails"))
            .and(header("authorization", "Bearer gho_abc"))
            .respond_with(ResponseTemplate::new(200).set_body_json(emails))
            .mount(server)
            .await;
    }

    #[test]
    fn the_authorize_url_has_state_and_scopes_and_no_pkce() {
        let url = authorize_url(
            &GithubEndpoints::default(),
            "Iv1.x",
            "https://gw.example/auth/callback",
            &["user:email".into(), "read:user".into()],
            "st",
        );
        assert!(
            url.as_str()
                .starts_with("https://github.com/login/oauth/authorize?")
        );
        let q: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
        assert_eq!(q["client_id"], "Iv1.x");
        assert_eq!(q["scope"], "user:email read:user");
        assert_eq!(q["state"], "st");
        assert_eq!(q["response_type"], "code");
        assert!(!q.contains_key("code_challenge") && !q.contains_key("nonce"));
    }

    #[tokio::test]
    async fn the_primary_verified_email_and_the_numeric_id_are_chosen() {
        let server = MockServer::start().await;
        mount_user(
            &server,
            serde_json::json!([
                {"email": "old@example.com", "primary": false, "verified": true},
                {"email": "Unverified@example.com", "primary": false, "verified": false},
                {"email": "Octo@Example.com", "primary": true, "verified": true},
            ]),
        )
        .await;
        let u = user(
            &reqwest::Client::new(),
            &endpoints(&server),
            &SecretString::from("gho_abc"),
        )
        .await
        .unwrap();
        assert_eq!(
            u,
            GithubUser {
                subject: "583231".into(),
                email: "octo@example.com".into(),
                display_name: Some("octocat".into()),
            }
        );
    }

    #[tokio::test]
    async fn a_verified_email_is_used_when_the_primary_one_is_not_verified() {
        let server = MockServer::start().await;
        mount_user(
            &server,
            serde_json::json!([
                {"email": "primary@example.com", "primary": true, "verified": false},
                {"email": "second@example.com", "primary": false, "verified": true},
            ]),
        )
        .await;
        let u = user(
            &reqwest::Client::new(),
            &endpoints(&server),
            &SecretString::from("gho_abc"),
        )
        .await
        .unwrap();
        assert_eq!(u.email, "second@example.com");
    }

    #[tokio::test]
    async fn no_verified_email_refuses_the_sign_in_clearly() {
        let server = MockServer::start().await;
        mount_user(
            &server,
            serde_json::json!([{"email": "a@example.com", "primary": true, "verified": false}]),
        )
        .await;
        let e = user(
            &reqwest::Client::new(),
            &endpoints(&server),
            &SecretString::from("gho_abc"),
        )
        .await
        .unwrap_err();
        assert_eq!(e.status, StatusCode::FORBIDDEN);
        assert!(e.message.contains("no verified email"), "{}", e.message);
    }

    #[tokio::test]
    async fn the_code_is_exchanged_with_accept_json() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/login/oauth/access_token"))
            .and(header("accept", "application/json"))
            .and(body_string_contains("code=the-code"))
            .and(body_string_contains("client_secret=shh"))
            .respond_with(ResponseTemplate::new(200).set_body_json(
                serde_json::json!({"access_token": "gho_abc", "token_type": "bearer", "scope": "read:user,user:email"}),
            ))
            .mount(&server)
            .await;
        let t = exchange_code(
            &reqwest::Client::new(),
            &endpoints(&server),
            "Iv1.x",
            Some(&SecretString::from("shh")),
            "https://gw.example/auth/callback",
            "the-code",
        )
        .await
        .unwrap();
        assert_eq!(t.access_token.expose_secret(), "gho_abc");
        assert_eq!(t.scopes, ["read:user", "user:email"]);
        assert!(t.refresh_token.is_none() && t.expires_in.is_none());
    }

    #[tokio::test]
    async fn a_token_error_is_reduced_to_its_code() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/login/oauth/access_token"))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "error": "bad_verification_code",
                "error_description": "The code passed is incorrect or expired. <secret-ish>",
                "error_uri": "https://docs.github.com/…"
            })))
            .mount(&server)
            .await;
        let e = exchange_code(
            &reqwest::Client::new(),
            &endpoints(&server),
            "Iv1.x",
            None,
            "https://gw.example/auth/callback",
            "c",
        )
        .await
        .unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            e.message,
            "GitHub rejected the code exchange: bad_verification_code"
        );

        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(500).set_body_string("internal <details>"))
            .mount(&server)
            .await;
        let e = exchange_code(
            &reqwest::Client::new(),
            &endpoints(&server),
            "Iv1.x",
            None,
            "https://gw.example/auth/callback",
            "c",
        )
        .await
        .unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_GATEWAY);
        assert!(!e.message.contains("details"), "{}", e.message);
    }
}
