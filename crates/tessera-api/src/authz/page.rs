//! The authorization server's two HTML pages — consent and error — rendered on the server with
//! every value escaped, no script, and headers that forbid framing (clickjacking a consent
//! button is the classic confused-deputy attack; MCP security best practices).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// No script, no framing, styles only from Tessera. No `form-action`: browsers apply it to the
/// redirect that follows the consent POST, which goes to the client's redirect URI.
const CSP: &str =
    "default-src 'none'; style-src 'self'; img-src 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Escapes text for HTML element content and double-quoted attributes.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn html(status: StatusCode, title: &str, body: &str) -> Response {
    let page = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · Tessera</title><link rel=\"stylesheet\" href=\"/ui/app.css\"></head>\
         <body><main class=\"oauth\">{body}</main></body></html>\n",
        escape(title)
    );
    let mut r = (status, page).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// An error that must not be sent to the client's redirect URI (unknown client, unregistered
/// redirect URI, a refused metadata document).
pub(crate) fn error(status: StatusCode, reason: &str) -> Response {
    html(
        status,
        "Authorization failed",
        &format!(
            "<h1>Authorization failed</h1><p class=\"error\">{}</p>\
             <p>Tell the application's developer, or try again from the application.</p>",
            escape(reason)
        ),
    )
}

/// What the consent page shows.
pub(crate) struct Consent<'a> {
    pub(crate) client_name: &'a str,
    pub(crate) client_id: &'a str,
    pub(crate) redirect_uri: &'a str,
    pub(crate) scopes: &'a [String],
    pub(crate) user: &'a str,
    pub(crate) request_id: &'a str,
    pub(crate) csrf: &'a str,
}

/// The consent page: who asks, where the answer goes, for what; approve or deny.
pub(crate) fn consent(c: &Consent<'_>) -> Response {
    let scopes: String = c
        .scopes
        .iter()
        .map(|s| format!("<li><code>{}</code></li>", escape(s)))
        .collect();
    let id_line = if c.client_name == c.client_id {
        String::new()
    } else {
        format!(
            "<dt>Client ID</dt><dd><code>{}</code></dd>",
            escape(c.client_id)
        )
    };
    let body = format!(
        "<h1>Allow {name} to use Tessera as you?</h1>\
         <p>Signed in as <strong>{user}</strong>. {name} asks to call your MCP servers through \
         Tessera on your behalf. Approve only if you started this from {name}.</p>\
         <dl><dt>Application</dt><dd>{name}</dd>{id_line}\
         <dt>Answer goes to</dt><dd><code>{redirect}</code></dd>\
         <dt>Access</dt><dd><ul>{scopes}</ul></dd></dl>\
         <form method=\"post\" action=\"/oauth/authorize/decision\">\
         <input type=\"hidden\" name=\"request\" value=\"{request}\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <button type=\"submit\" name=\"decision\" value=\"approve\">Approve</button> \
         <button type=\"submit\" name=\"decision\" value=\"deny\">Deny</button>\
         </form>",
        name = escape(c.client_name),
        user = escape(c.user),
        redirect = escape(c.redirect_uri),
        request = escape(c.request_id),
        csrf = escape(c.csrf),
    );
    html(StatusCode::OK, "Authorize application", &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped_and_framing_is_forbidden() {
        let r = consent(&Consent {
            client_name: "<script>alert(1)</script>",
            client_id: "https://evil.example/c.json",
            redirect_uri: "http://127.0.0.1/cb?a=\"b\"",
            scopes: &["mcp".into()],
            user: "alice@example.com",
            request_id: "r",
            csrf: "c",
        });
        let h = r.headers();
        assert!(
            h[header::CONTENT_SECURITY_POLICY]
                .to_str()
                .unwrap()
                .contains("frame-ancestors 'none'")
        );
        assert_eq!(h[header::X_FRAME_OPTIONS], "DENY");
        assert_eq!(
            escape("<a href=\"x\">'&"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;"
        );
    }
}
