"""Helpers for the tests of Tessera as the OAuth 2.1 authorization server of MCP clients
(issue #8, tests/e2e/test_oauth_server.py): the raw flow over HTTP (registration, an
authorization request, a browser that signs in at the test provider and answers Tessera's
consent page, the token endpoint, revocation), the official Python SDK's OAuth client driven
by that browser, a tiny server for client ID metadata documents, and the MCP Inspector CLI.

A "browser" is an httpx cookie jar that never follows redirects by itself: every step is
looked at, so a test can tell whether a consent page was shown and where each redirect went.
It stops at the client's redirect URI without requesting it (nothing listens there), like a
native client that only reads the code off its loopback callback.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import httpx

from brokered import PASSWORDS, Client, inbound
from conftest import E2E_DIR, NODE, Abort, Gateway, Proc, ProcessRegistry, free_port, register_secret, require_file, spawn, wait_until
from idp import IdP, browser_login, pkce_pair  # noqa: F401 - brokered puts tests/testbed on sys.path

# Where the test's clients say they want the answer. Nothing listens there: the browser stops
# at the redirect and hands its query to the client.
REDIRECT_URI = "http://127.0.0.1:9/oauth/callback"
ACCESS_PREFIX = "tsr_at_"
REFRESH_PREFIX = "tsr_rt_"
DECISION_PATH = "/oauth/authorize/decision"
SCOPE = "mcp"  # what Tessera grants when auth.scopes_required is empty

INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "oauth-e2e", "version": "1"}},
}
MCP_HEADERS = {"accept": "application/json, text/event-stream", "content-type": "application/json"}


# ----------------------------------------------------------------- endpoints


def endpoint(gw: Gateway, path: str) -> str:
    return f"{gw.base}{path}"


def as_metadata(gw: Gateway, path: str = "/.well-known/oauth-authorization-server") -> httpx.Response:
    return httpx.get(endpoint(gw, path), timeout=10)


def mcp_initialize(gw: Gateway, access_token: str | None) -> httpx.Response:
    """POST initialize to /mcp with `Authorization: Bearer <access_token>` (none when None)."""
    headers = dict(MCP_HEADERS)
    if access_token is not None:
        headers["authorization"] = f"Bearer {access_token}"
    return httpx.post(gw.mcp_url, json=INIT, headers=headers, timeout=15)


def mcp_status(gw: Gateway, access_token: str) -> int:
    return mcp_initialize(gw, access_token).status_code


# -------------------------------------------------------------- registration


@dataclass
class RegisteredClient:
    client_id: str
    redirect_uri: str
    auth_method: str
    client_secret: str | None = None
    raw: dict[str, Any] = field(default_factory=dict)


def register(gw: Gateway, body: Any) -> httpx.Response:
    """POST /oauth/register with a JSON body (any JSON value, for the malformed cases)."""
    return httpx.post(endpoint(gw, "/oauth/register"), json=body, timeout=10)


def register_client(
    gw: Gateway,
    name: str,
    *,
    redirect_uris: list[str] | None = None,
    auth_method: str | None = "none",
    **metadata: Any,
) -> RegisteredClient:
    """An RFC 7591 registration that must succeed (201). auth_method None leaves
    token_endpoint_auth_method out (RFC 7591's default, client_secret_basic, applies)."""
    body: dict[str, Any] = {
        "redirect_uris": redirect_uris or [REDIRECT_URI],
        "client_name": name,
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        **metadata,
    }
    if auth_method is not None:
        body["token_endpoint_auth_method"] = auth_method
    r = register(gw, body)
    assert r.status_code == 201, f"registration of {name!r}: {r.status_code} {r.text[:400]}"
    doc = r.json()
    assert isinstance(doc.get("client_id"), str) and doc["client_id"], doc
    secret = doc.get("client_secret")
    if secret:
        register_secret(secret)
    return RegisteredClient(
        client_id=doc["client_id"],
        redirect_uri=body["redirect_uris"][0],
        auth_method=doc.get("token_endpoint_auth_method", auth_method or "client_secret_basic"),
        client_secret=secret,
        raw=doc,
    )


# ------------------------------------------------------- authorization request


@dataclass
class AuthRequest:
    """One authorization request of a client: its PKCE pair and state, and the URL for it."""

    gw: Gateway
    client_id: str
    redirect_uri: str
    verifier: str
    challenge: str
    state: str
    scope: str | None = SCOPE
    resource: str | None = None  # defaults to Tessera's /mcp URL

    def params(self, **overrides: str | None) -> dict[str, str]:
        """The query; an override of None leaves that parameter out."""
        p: dict[str, str | None] = {
            "response_type": "code",
            "client_id": self.client_id,
            "redirect_uri": self.redirect_uri,
            "code_challenge": self.challenge,
            "code_challenge_method": "S256",
            "state": self.state,
            "scope": self.scope,
            "resource": self.resource if self.resource is not None else self.gw.mcp_url,
        }
        p.update(overrides)
        return {k: v for k, v in p.items() if v is not None}

    def url(self, **overrides: str | None) -> str:
        return f"{endpoint(self.gw, '/oauth/authorize')}?{urlencode(self.params(**overrides))}"


def new_request(gw: Gateway, client: RegisteredClient | str, redirect_uri: str | None = None, **kw: Any) -> AuthRequest:
    """A fresh request (new PKCE pair, new state) for a registered client or a client_id."""
    verifier, challenge = pkce_pair()
    client_id = client if isinstance(client, str) else client.client_id
    uri = redirect_uri or (REDIRECT_URI if isinstance(client, str) else client.redirect_uri)
    return AuthRequest(gw, client_id, uri, verifier, challenge, secrets.token_urlsafe(16), **kw)


# ------------------------------------------------------------------- browser


class _Forms(HTMLParser):
    """Every <form> of a page: action, method, named inputs, submit buttons (name, value)."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict[str, Any]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append({"action": a.get("action", ""), "method": a.get("method", "get").lower(), "inputs": {}, "buttons": []})
        elif tag in ("input", "button") and self.forms:
            kind = a.get("type", "submit" if tag == "button" else "text").lower()
            if kind == "submit":
                self.forms[-1]["buttons"].append((a.get("name", ""), a.get("value", "")))
            elif a.get("name"):
                self.forms[-1]["inputs"][a["name"]] = a.get("value", "")


def page_text(resp: httpx.Response) -> str:
    """A page's text without tags, whitespace collapsed (entities left as they are)."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", resp.text)).strip()


@dataclass
class ConsentPage:
    """Tessera's consent page and its form."""

    response: httpx.Response
    action: str
    method: str
    inputs: dict[str, str]
    buttons: list[tuple[str, str]]

    @classmethod
    def parse(cls, resp: httpx.Response) -> ConsentPage | None:
        if resp.status_code != 200 or "html" not in resp.headers.get("content-type", ""):
            return None
        parser = _Forms()
        parser.feed(resp.text)
        for form in parser.forms:
            if urlsplit(form["action"]).path == DECISION_PATH:
                return cls(resp, form["action"], form["method"], form["inputs"], form["buttons"])
        return None

    @property
    def text(self) -> str:
        return page_text(self.response)

    @property
    def action_url(self) -> str:
        return urljoin(str(self.response.url), self.action)

    def form_data(self, decision: str) -> dict[str, str]:
        data = dict(self.inputs)
        button = next((b for b in self.buttons if b[1] == decision), None)
        assert button is not None, f"no {decision!r} button on the consent page: {self.buttons}"
        data[button[0]] = button[1]
        return data


@dataclass
class Landing:
    """Where a browser's authorization ended: the redirect to the client's redirect URI (not
    requested), with every consent page it answered on the way."""

    location: str
    consent_pages: list[ConsentPage]
    trace: list[str]

    @property
    def params(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(urlsplit(self.location).query).items()}

    @property
    def code(self) -> str | None:
        return self.params.get("code")

    @property
    def error(self) -> str | None:
        return self.params.get("error")

    @property
    def state(self) -> str | None:
        return self.params.get("state")

    @property
    def iss(self) -> str | None:
        return self.params.get("iss")


class Browser:
    """A user's browser: Tessera's and the provider's cookies, no automatic redirects."""

    def __init__(self, gw: Gateway, idp: IdP, user: str) -> None:
        self.gw, self.idp, self.user = gw, idp, user
        self.http = httpx.Client(timeout=30)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def post_decision(self, page: ConsentPage, decision: str, *, headers: dict[str, str] | None = None,
                      data: dict[str, str] | None = None) -> httpx.Response:
        """Submit the consent form as a browser on Tessera's page would (same-origin POST)."""
        sent = {"origin": self.gw.base, "sec-fetch-site": "same-origin", "referer": str(page.response.url)}
        sent.update(headers or {})
        assert page.method == "post", f"the consent form is not a POST form: {page.method}"
        return self.http.post(page.action_url, data=data if data is not None else page.form_data(decision), headers=sent)

    def authorize(self, url: str, redirect_uri: str, decision: str | None = "approve", max_steps: int = 30) -> Landing | ConsentPage:
        """Open `url` (an authorization request at Tessera) and go on like a user: Tessera's
        sign-in at the provider (login and the provider's own consent), then Tessera's consent
        page answered with `decision`, until a redirect to `redirect_uri`. With decision None it
        stops at the first consent page and returns it."""
        pages: list[ConsentPage] = []
        trace: list[str] = []
        resp = self.http.get(url)
        for _ in range(max_steps):
            trace.append(f"{resp.request.method} {resp.request.url} -> {resp.status_code}")
            if resp.is_redirect:
                location = urljoin(str(resp.url), resp.headers["location"])
                if location.split("?")[0] == redirect_uri.split("?")[0]:
                    return Landing(location, pages, trace)
                if location.startswith(self.idp.issuer + "/"):
                    # The provider's pages; browser_login returns the redirect leaving it
                    # (Tessera's /auth/callback), not requested yet.
                    back = browser_login(location, self.user, PASSWORDS[self.user], client=self.http)
                    trace.append(f"provider sign-in as {self.user} -> {back.split('?')[0]}")
                    resp = self.http.get(back)
                    continue
                resp = self.http.get(location)
                continue
            page = ConsentPage.parse(resp)
            if page is not None:
                pages.append(page)
                if decision is None:
                    return page
                resp = self.post_decision(page, decision)
                continue
            raise AssertionError(
                f"the authorization stopped at {resp.request.method} {resp.url}: {resp.status_code} {page_text(resp)[:400]}\n"
                + "\n".join(trace))
        raise AssertionError("no redirect to the client within %d steps:\n%s" % (max_steps, "\n".join(trace)))

    def approve(self, url: str, redirect_uri: str) -> Landing:
        landing = self.authorize(url, redirect_uri, "approve")
        assert isinstance(landing, Landing)
        if landing.code:
            register_secret(landing.code)
        return landing


# -------------------------------------------------------------- token endpoint


def token_request(gw: Gateway, data: dict[str, str], client: RegisteredClient | None = None) -> httpx.Response:
    """POST /oauth/token, authenticating as `client` the way it registered (secret in Basic
    or in the body; a public client only names itself). Without a client, `data` as it is."""
    body = dict(data)
    auth = None
    if client is not None:
        if client.auth_method == "client_secret_basic" and client.client_secret:
            auth = (client.client_id, client.client_secret)
        else:
            body.setdefault("client_id", client.client_id)
            if client.auth_method == "client_secret_post" and client.client_secret:
                body["client_secret"] = client.client_secret
    return httpx.post(endpoint(gw, "/oauth/token"), data=body, auth=auth, timeout=15)


def exchange_code(gw: Gateway, client: RegisteredClient, req: AuthRequest, code: str, **overrides: str | None) -> httpx.Response:
    """grant_type=authorization_code for `code` of `req` (overrides: None leaves a field out)."""
    data: dict[str, str | None] = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": req.redirect_uri,
        "code_verifier": req.verifier,
        "resource": gw.mcp_url,
    }
    data.update(overrides)
    return token_request(gw, {k: v for k, v in data.items() if v is not None}, client)


def refresh(gw: Gateway, client: RegisteredClient, refresh_token: str, **extra: str) -> httpx.Response:
    return token_request(gw, {"grant_type": "refresh_token", "refresh_token": refresh_token, **extra}, client)


def revoke(gw: Gateway, client: RegisteredClient, token: str, hint: str | None = None) -> httpx.Response:
    data = {"token": token}
    if hint:
        data["token_type_hint"] = hint
    body = dict(data)
    auth = None
    if client.auth_method == "client_secret_basic" and client.client_secret:
        auth = (client.client_id, client.client_secret)
    else:
        body["client_id"] = client.client_id
        if client.auth_method == "client_secret_post" and client.client_secret:
            body["client_secret"] = client.client_secret
    return httpx.post(endpoint(gw, "/oauth/revoke"), data=body, auth=auth, timeout=15)


def tokens_of(resp: httpx.Response) -> dict[str, Any]:
    """A successful token response, checked against the spec; its tokens become known
    secrets (never in a log) and inbound credentials (never at an upstream)."""
    assert resp.status_code == 200, f"token endpoint: {resp.status_code} {resp.text[:400]}"
    assert "no-store" in resp.headers.get("cache-control", ""), resp.headers
    body = resp.json()
    inbound(body.get("access_token", ""))
    inbound(body.get("refresh_token", ""))
    assert body.get("token_type", "").lower() == "bearer", body
    assert body["access_token"].startswith(ACCESS_PREFIX), f"access token is not Tessera's opaque kind: {body['access_token'][:10]}…"
    assert body["refresh_token"].startswith(REFRESH_PREFIX), f"refresh token is not Tessera's opaque kind: {body['refresh_token'][:10]}…"
    assert isinstance(body.get("expires_in"), int) and body["expires_in"] > 0, body.get("expires_in")
    assert isinstance(body.get("scope"), str), body
    return body


def oauth_error(resp: httpx.Response, status: int, error: str) -> dict[str, Any]:
    """An RFC 6749 §5.2 error answer with `status` and `error`."""
    assert resp.status_code == status, f"expected {status} {error}, got {resp.status_code}: {resp.text[:400]}"
    body = resp.json()
    assert body.get("error") == error, f"expected error={error}, got {body}"
    return body


def authorize_and_exchange(gw: Gateway, browser: Browser, client: RegisteredClient, **req_kw: Any) -> tuple[AuthRequest, dict[str, Any]]:
    """The whole raw flow for `browser`'s user: authorization (consent approved if asked),
    then the code exchanged; returns the request and the token response."""
    req = new_request(gw, client, **req_kw)
    landing = browser.approve(req.url(), req.redirect_uri)
    assert landing.code, f"no code: {landing.location}"
    assert landing.state == req.state, landing.location
    return req, tokens_of(exchange_code(gw, client, req, landing.code))


def challenge(resp: httpx.Response) -> str:
    return resp.headers.get("www-authenticate", "")


# ---------------------------------------------------- client metadata documents


class DocumentServer:
    """Client ID metadata documents on 127.0.0.1 (http: Tessera allows it on loopback only).
    `documents` maps a path to a JSON document, or to ("redirect", location); every request's
    path is recorded in `hits`."""

    def __init__(self) -> None:
        self.documents: dict[str, Any] = {}
        self.hits: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                path = self.path.split("?")[0]
                outer.hits.append(path)
                doc = outer.documents.get(path)
                if doc is None:
                    self.send_response(404)
                    self.send_header("content-length", "0")
                    self.end_headers()
                    return
                if isinstance(doc, tuple) and doc[0] == "redirect":
                    self.send_response(302)
                    self.send_header("location", doc[1])
                    self.send_header("content-length", "0")
                    self.end_headers()
                    return
                raw = json.dumps(doc).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="cimd-server", daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def publish(self, path: str, name: str, redirect_uris: list[str] | None = None, **extra: Any) -> str:
        """A valid document at `path` (client_id = its own URL); returns the URL."""
        url = self.url(path)
        self.documents[path] = {
            "client_id": url,
            "client_name": name,
            "redirect_uris": redirect_uris or [REDIRECT_URI],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "none",
            **extra,
        }
        return url

    def count(self, path: str) -> int:
        return sum(1 for h in self.hits if h == path)

    def __enter__(self) -> DocumentServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


# ------------------------------------------------------------ the Python SDK


@dataclass
class SdkRecord:
    """What the SDK's OAuth client did: the authorization URLs it opened and where each ended."""

    browser: Browser
    auth_urls: list[str] = field(default_factory=list)
    landings: list[Landing] = field(default_factory=list)


def sdk_oauth(
    gw: Gateway,
    idp: IdP,
    user: str,
    client_name: str,
    *,
    auth_method: str | None = None,
    client_info: dict[str, Any] | None = None,
    browser: Browser | None = None,
) -> tuple[Any, Any, SdkRecord]:
    """The official SDK's OAuthClientProvider for Tessera's /mcp; its redirect handler is a
    browser of `user` that signs in and approves Tessera's consent page, its callback handler
    hands the SDK the code and state from the redirect. `client_info` pre-loads the SDK's
    storage with a client (e.g. a metadata-document URL as client_id), so it does not register.
    Returns (provider, storage, record); storage.tokens / storage.info show what the SDK got;
    close record.browser when done."""
    import anyio
    from mcp.client.auth import OAuthClientProvider
    from mcp.shared.auth import OAuthClientInformationFull, OAuthClientMetadata, OAuthToken

    class Memory:
        def __init__(self) -> None:
            self.tokens: OAuthToken | None = None
            self.info: OAuthClientInformationFull | None = (
                OAuthClientInformationFull.model_validate(client_info) if client_info else None)

        async def get_tokens(self) -> OAuthToken | None:
            return self.tokens

        async def set_tokens(self, tokens: OAuthToken) -> None:
            inbound(tokens.access_token)
            inbound(tokens.refresh_token or "")
            self.tokens = tokens

        async def get_client_info(self) -> OAuthClientInformationFull | None:
            return self.info

        async def set_client_info(self, info: OAuthClientInformationFull) -> None:
            register_secret(info.client_secret or "")
            self.info = info

    record = SdkRecord(browser or Browser(gw, idp, user))

    async def redirect_handler(url: str) -> None:
        record.auth_urls.append(url)
        landing = await anyio.to_thread.run_sync(record.browser.approve, url, REDIRECT_URI)
        record.landings.append(landing)

    async def callback_handler() -> tuple[str, str | None]:
        landing = record.landings[-1]
        assert landing.code, f"the authorization ended without a code: {landing.location}"
        return landing.code, landing.state

    metadata: dict[str, Any] = {"redirect_uris": [REDIRECT_URI], "client_name": client_name}
    if auth_method is not None:
        metadata["token_endpoint_auth_method"] = auth_method
    storage = Memory()
    provider = OAuthClientProvider(gw.mcp_url, OAuthClientMetadata.model_validate(metadata), storage, redirect_handler, callback_handler, timeout=120)
    return provider, storage, record


@contextlib.asynccontextmanager
async def sdk_session(gw: Gateway, provider: Any) -> AsyncIterator[Client]:
    """An initialized SDK session over Tessera's /mcp, authorized by `provider`."""
    from mcp import ClientSession
    from mcp.client.streamable_http import streamablehttp_client

    async with streamablehttp_client(gw.mcp_url, auth=provider, timeout=30, sse_read_timeout=120) as (read, write, _):
        async with ClientSession(read, write) as session:
            await session.initialize()
            yield Client(session=session)


# ------------------------------------------------------- the MCP Inspector CLI

INSPECTOR = E2E_DIR / "node_modules" / "@modelcontextprotocol" / "inspector" / "clients" / "launcher" / "build" / "index.js"
NAVIGATE = re.compile(r"Please navigate to: (\S+)")


@dataclass
class InspectorRun:
    proc: Proc
    callback_url: str
    output: Path

    def log(self) -> str:
        try:
            return self.proc.log.read_text(errors="replace")
        except OSError:
            return ""

    def authorization_url(self, timeout: float = 60) -> str:
        """The URL the CLI asks the user to open (it prints it on stderr)."""
        def found() -> str | None:
            m = NAVIGATE.search(self.log())
            if m:
                return m.group(1)
            if not self.proc.alive():
                raise Abort(f"the inspector exited with {self.proc.popen.returncode} before asking for a sign-in:\n{self.log()[-3000:]}")
            return None

        return wait_until(found, timeout, "the MCP Inspector CLI to print its authorization URL", interval=0.1)

    def wait(self, timeout: float = 60) -> int:
        wait_until(lambda: not self.proc.alive(), timeout, "the MCP Inspector CLI to finish", interval=0.1)
        return self.proc.popen.returncode

    def result(self) -> Any:
        return json.loads(self.output.read_text())


@contextlib.contextmanager
def inspector_cli(reg: ProcessRegistry, work: Path, server_url: str, *method_args: str) -> Iterator[InspectorRun]:
    """`mcp-inspector --cli <server_url> <method_args…>` with OAuth: its loopback callback on a
    free port, its state under `work` (HOME), secrets in memory only, the result written to a
    file. It cannot open a browser here: BROWSER is a no-op and MCP_AUTO_OPEN_ENABLED lets it
    run without a terminal; the test reads the URL it prints and plays the browser."""
    require_file(INSPECTOR, "run `npm ci --prefix tests/e2e` (scripts/test-all does)")
    work.mkdir(parents=True, exist_ok=True)
    home = work / "home"
    home.mkdir(exist_ok=True)
    callback = f"http://127.0.0.1:{free_port()}/oauth/callback"
    output = work / "result.json"
    argv = [NODE, str(INSPECTOR), "--cli", *method_args, "--format", "json", "--output", str(output),
            "--callback-url", callback, server_url]
    env = {
        "HOME": str(home),
        "MCP_AUTO_OPEN_ENABLED": "true",  # no TTY here; without it the CLI refuses interactive OAuth
        "BROWSER": "true",  # xdg-open's browser: a no-op
        "MCP_INSPECTOR_SECRET_STORE": "memory",
        "NO_COLOR": "1",
    }
    proc = reg.add(spawn("inspector", argv, work / "logs", env=env, cwd=work))
    try:
        yield InspectorRun(proc, callback, output)
    finally:
        proc.stop()
