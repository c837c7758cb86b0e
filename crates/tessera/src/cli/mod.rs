//! Commands against a running gateway's REST API: `tessera
//! credential|activity|users|token|server|admin`.
//!
//! One client ([`Api`]) for all of them: base URL and personal access token from flags or the
//! environment ([`Remote`]), 15 s per call, and one mapping from what went wrong to an exit
//! code ([`Failure`]):
//!
//! | code | meaning |
//! |---|---|
//! | 0 | done |
//! | 1 | the gateway refused (403, 404, 4xx/5xx) or answered something unusable |
//! | 2 | usage error (bad flags or arguments; clap's own code) |
//! | 3 | unauthenticated: no token, or the gateway answered 401 |
//! | 4 | the gateway could not be reached (connection refused, DNS, TLS, 15 s timeout) |
//!
//! **Nothing printed carries a token**: the PAT is only ever written into the `Authorization`
//! header (clap hides its env value in `--help`), error messages use the server's `message` or
//! the status text, and the tables and JSON outputs are built from token-free fields.

pub(crate) mod activity;
pub(crate) mod admin;
pub(crate) mod credential;
pub(crate) mod servers;
pub(crate) mod table;
pub(crate) mod users;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, ValueEnum};
use serde_json::Value;

/// Per-call limit (connect, send, whole body), as the reference.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// The exit-code section of every remote command's `--help`.
pub(crate) const EXIT_CODES: &str = "\
Exit codes:
  0  done
  1  the gateway refused the request (forbidden, not found, other errors)
  2  usage error (unknown flag, missing argument)
  3  authentication required: no token, or the token was not accepted (401)
  4  the gateway could not be reached (connection refused, DNS, TLS, 15 s timeout)";

pub(crate) const AUTH_REQUIRED: &str =
    "authentication required: provide a personal access token via --token or TESSERA_TOKEN";

/// How results are printed.
#[derive(Clone, Copy, Debug, Default, ValueEnum, PartialEq, Eq)]
pub(crate) enum OutputFormat {
    /// Aligned columns for people.
    #[default]
    #[value(alias = "text")]
    Table,
    /// One JSON document for scripts.
    Json,
}

/// Where the gateway is and who is asking; shared by every remote command (global flags).
#[derive(Args, Clone, Debug)]
pub(crate) struct Remote {
    /// The gateway's base URL.
    #[arg(
        long = "server",
        visible_alias = "url",
        env = "TESSERA_URL",
        global = true,
        default_value = "http://127.0.0.1:8080",
        value_name = "URL"
    )]
    pub(crate) server: String,
    /// A personal access token (`tsr_pat_…`); sent as `Authorization: Bearer`, never printed.
    #[arg(
        long,
        env = "TESSERA_TOKEN",
        global = true,
        hide_env_values = true,
        value_name = "PAT"
    )]
    pub(crate) token: Option<String>,
    /// Output format: `table` for people, `json` for scripts.
    #[arg(
        long,
        short,
        value_enum,
        env = "TESSERA_OUTPUT",
        default_value_t = OutputFormat::Table,
        global = true
    )]
    pub(crate) output: OutputFormat,
}

/// [`Remote`] for `tessera activity`, whose `--server` filters by upstream server: the gateway's
/// URL is `--url` (or `TESSERA_URL`) only.
#[derive(Args, Clone, Debug)]
pub(crate) struct UrlRemote {
    /// The gateway's base URL (`--server` filters by upstream server in this group).
    #[arg(
        long = "url",
        env = "TESSERA_URL",
        global = true,
        default_value = "http://127.0.0.1:8080",
        value_name = "URL"
    )]
    pub(crate) url: String,
    /// A personal access token (`tsr_pat_…`); sent as `Authorization: Bearer`, never printed.
    #[arg(
        long,
        env = "TESSERA_TOKEN",
        global = true,
        hide_env_values = true,
        value_name = "PAT"
    )]
    pub(crate) token: Option<String>,
    /// Output format: `table` for people, `json` for scripts.
    #[arg(
        long,
        short,
        value_enum,
        env = "TESSERA_OUTPUT",
        default_value_t = OutputFormat::Table,
        global = true
    )]
    pub(crate) output: OutputFormat,
}

impl From<UrlRemote> for Remote {
    fn from(r: UrlRemote) -> Remote {
        Remote {
            server: r.url,
            token: r.token,
            output: r.output,
        }
    }
}

/// Why a remote command failed; each maps to one exit code.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The gateway answered with a refusal or something unusable (exit 1).
    Refused(String),
    /// A usage problem found after parsing (exit 2).
    Usage(String),
    /// No token, or 401 (exit 3).
    Unauthenticated,
    /// Not reachable (exit 4).
    Unreachable(String),
}

impl Failure {
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            Failure::Refused(_) => 1,
            Failure::Usage(_) => 2,
            Failure::Unauthenticated => 3,
            Failure::Unreachable(_) => 4,
        }
    }

    pub(crate) fn message(&self) -> String {
        match self {
            Failure::Refused(m) | Failure::Usage(m) | Failure::Unreachable(m) => m.clone(),
            Failure::Unauthenticated => AUTH_REQUIRED.to_owned(),
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message())
    }
}

pub(crate) type Outcome = Result<(), Failure>;

/// Runs a remote command to an exit code, printing a failure as `error: …` on stderr.
pub(crate) fn exit(fut: impl Future<Output = Outcome>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(fut) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("error: {failure}");
            ExitCode::from(failure.exit_code())
        }
    }
}

/// A client of one gateway's REST API, authenticated by a personal access token.
pub(crate) struct Api {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Api {
    /// Checks that there is a token (else [`Failure::Unauthenticated`]) and a usable URL.
    pub(crate) fn new(remote: &Remote) -> Result<Api, Failure> {
        let token = remote
            .token
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(Failure::Unauthenticated)?
            .to_owned();
        let base = base_url(&remote.server)?;
        let http = reqwest::Client::builder()
            .connect_timeout(CALL_TIMEOUT)
            .user_agent(concat!("tessera-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Failure::Refused(format!("cannot build an HTTP client: {e}")))?;
        Ok(Api { base, token, http })
    }

    /// The base URL without a trailing slash.
    pub(crate) fn base(&self) -> &str {
        &self.base
    }

    /// A request to `path` (which starts with `/`), bearer-authenticated.
    pub(crate) fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
    }

    /// Sends `request` (with the 15 s limit) and returns its JSON body on a 2xx answer.
    pub(crate) async fn json(&self, request: reqwest::RequestBuilder) -> Result<Value, Failure> {
        let response = request
            .timeout(CALL_TIMEOUT)
            .send()
            .await
            .map_err(|e| self.transport(&e))?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| self.transport(&e))?;
        let body: Option<Value> = serde_json::from_slice(&bytes).ok();
        check_status(status, body.as_ref())?;
        body.ok_or_else(|| {
            Failure::Refused(format!(
                "{} answered {status} with a body that is not JSON",
                self.base
            ))
        })
    }

    pub(crate) async fn get(&self, path: &str) -> Result<Value, Failure> {
        self.json(self.request(reqwest::Method::GET, path)).await
    }

    pub(crate) async fn delete(&self, path: &str) -> Result<Value, Failure> {
        self.json(self.request(reqwest::Method::DELETE, path)).await
    }

    /// Maps a transport error: every one of them means the gateway was not reached (or did not
    /// answer in time) — exit 4.
    pub(crate) fn transport(&self, e: &reqwest::Error) -> Failure {
        let what = if e.is_timeout() {
            format!("no answer within {} s", CALL_TIMEOUT.as_secs())
        } else if e.is_connect() {
            "connection failed".to_owned()
        } else {
            "the connection broke".to_owned()
        };
        // reqwest's Display names the URL (never the Authorization header).
        Failure::Unreachable(format!("cannot reach the gateway at {}: {what}", self.base))
    }
}

/// Normalises `--server`: an http(s) URL, no trailing slash.
pub(crate) fn base_url(server: &str) -> Result<String, Failure> {
    let trimmed = server.trim().trim_end_matches('/');
    match url::Url::parse(trimmed) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
            Ok(trimmed.to_owned())
        }
        _ => Err(Failure::Usage(format!(
            "--server/TESSERA_URL must be an http:// or https:// URL, got {server:?}"
        ))),
    }
}

/// Turns a non-2xx answer into a failure: 401 → unauthenticated, everything else → refused
/// with the server's uniform error `message` (or the status text).
pub(crate) fn check_status(
    status: reqwest::StatusCode,
    body: Option<&Value>,
) -> Result<(), Failure> {
    if status.is_success() {
        return Ok(());
    }
    if status == reqwest::StatusCode::UNAUTHORIZED {
        return Err(Failure::Unauthenticated);
    }
    let message = body
        .and_then(|b| b["message"].as_str())
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("request failed"));
    let text = match status {
        reqwest::StatusCode::FORBIDDEN => format!("permission denied ({status}): {message}"),
        reqwest::StatusCode::NOT_FOUND => format!("not found ({status}): {message}"),
        _ => format!("the gateway refused the request ({status}): {message}"),
    };
    Err(Failure::Refused(text))
}

/// A path segment, percent-encoded (server names are config keys, but may hold anything).
pub(crate) fn segment(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// Prints `value` as one line of JSON.
pub(crate) fn print_json(value: &Value) {
    println!("{value}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::StatusCode;

    #[test]
    fn a_401_is_unauthenticated_with_exit_3_and_names_the_flag_and_variable() {
        let f = check_status(StatusCode::UNAUTHORIZED, None).unwrap_err();
        assert_eq!(f.exit_code(), 3);
        assert_eq!(
            f.message(),
            "authentication required: provide a personal access token via --token or TESSERA_TOKEN"
        );
    }

    #[test]
    fn refusals_exit_1_and_carry_the_servers_message() {
        let body =
            serde_json::json!({"error": "Forbidden", "message": "admin only", "status_code": 403});
        let f = check_status(StatusCode::FORBIDDEN, Some(&body)).unwrap_err();
        assert_eq!(f.exit_code(), 1);
        assert!(f.message().contains("admin only"), "{f}");
        let f = check_status(StatusCode::NOT_FOUND, None).unwrap_err();
        assert_eq!(f.exit_code(), 1);
        assert!(f.message().contains("Not Found"), "{f}");
        assert!(check_status(StatusCode::OK, None).is_ok());
    }

    #[test]
    fn base_urls_are_checked_and_trimmed() {
        assert_eq!(base_url("http://h:1/").unwrap(), "http://h:1");
        assert_eq!(base_url("https://h/x/").unwrap(), "https://h/x");
        assert_eq!(base_url("h:1").unwrap_err().exit_code(), 2);
        assert_eq!(base_url("ftp://h").unwrap_err().exit_code(), 2);
    }

    #[test]
    fn no_token_is_unauthenticated_before_any_call() {
        let remote = Remote {
            server: "http://127.0.0.1:9".into(),
            token: Some("  ".into()),
            output: OutputFormat::Table,
        };
        assert_eq!(Api::new(&remote).err(), Some(Failure::Unauthenticated));
    }

    #[test]
    fn segments_are_percent_encoded() {
        assert_eq!(segment("a b/c"), "a%20b%2Fc");
        assert_eq!(segment("whoami_connect"), "whoami_connect");
    }
}

#[cfg(test)]
mod parse_tests {
    use clap::Parser as _;

    use super::OutputFormat;
    use super::activity::{ActivityCommand, Filters};
    use super::credential::CredentialCommand;
    use crate::{Cli, Command};

    fn parse(args: &[&str]) -> Result<Command, clap::Error> {
        Cli::try_parse_from(std::iter::once("tessera").chain(args.iter().copied()))
            .map(|c| c.command)
    }

    #[test]
    fn rm_has_two_aliases() {
        for verb in ["rm", "remove", "disconnect"] {
            let Ok(Command::Credential(a)) = parse(&["credential", verb, "gh"]) else {
                panic!("{verb} does not parse");
            };
            assert_eq!(a.command, CredentialCommand::Rm { name: "gh".into() });
        }
    }

    #[test]
    fn url_token_and_output_are_global_and_url_is_an_alias_of_server() {
        let Ok(Command::Credential(a)) = parse(&[
            "credential",
            "status",
            "gh",
            "--url",
            "http://gw:1",
            "--token",
            "t",
            "-o",
            "json",
        ]) else {
            panic!("does not parse");
        };
        assert_eq!(a.remote.server, "http://gw:1");
        assert_eq!(a.remote.token.as_deref(), Some("t"));
        assert_eq!(a.remote.output, OutputFormat::Json);
        assert_eq!(a.command, CredentialCommand::Status { name: "gh".into() });
        let Ok(Command::Credential(a)) = parse(&[
            "credential",
            "--server",
            "http://gw:2",
            "connect",
            "x",
            "--open",
        ]) else {
            panic!("does not parse");
        };
        assert_eq!(a.remote.server, "http://gw:2");
        assert_eq!(
            a.command,
            CredentialCommand::Connect {
                name: "x".into(),
                open: true
            }
        );
    }

    #[test]
    fn text_is_an_alias_of_table_and_unknown_formats_are_usage_errors() {
        let Ok(Command::Users(a)) = parse(&["users", "list", "--output", "text"]) else {
            panic!("does not parse");
        };
        assert_eq!(a.remote.output, OutputFormat::Table);
        let e = parse(&["users", "list", "--output", "yaml"]).err().unwrap();
        assert_eq!(e.exit_code(), 2);
    }

    #[test]
    fn activity_server_is_a_filter_and_the_gateway_is_url() {
        let Ok(Command::Activity(a)) = parse(&[
            "activity",
            "list",
            "--url",
            "http://gw:3",
            "--server",
            "gh",
            "--type",
            "tool_call",
            "--outcome",
            "failure",
            "--user",
            "me",
            "--since",
            "2026-01-01T00:00:00Z",
            "--limit",
            "5",
        ]) else {
            panic!("does not parse");
        };
        assert_eq!(a.remote.url, "http://gw:3");
        assert_eq!(
            a.command,
            ActivityCommand::List {
                filters: Filters {
                    user: Some("me".into()),
                    server: Some("gh".into()),
                    kind: Some("tool_call".into()),
                    outcome: Some("failure".into()),
                },
                since: Some("2026-01-01T00:00:00Z".into()),
                until: None,
                limit: 5,
            }
        );
    }

    #[test]
    fn bad_arguments_exit_2() {
        for args in [
            &["credential", "status"][..],
            &["credential", "frobnicate"],
            &["activity", "list", "--limit", "0"],
            &["users"],
        ] {
            let e = parse(args)
                .err()
                .unwrap_or_else(|| panic!("{args:?} parsed"));
            assert_eq!(e.exit_code(), 2, "{args:?}");
        }
    }
}
