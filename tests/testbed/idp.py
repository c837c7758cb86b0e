"""The test OpenID Connect provider (tests/testbed/idp/server.mjs) driven from Python.

    import sys; sys.path.insert(0, str(REPO / "tests" / "testbed"))
    from idp import IdP, browser_login, pkce_pair

    with IdP(config={"clients": [...]}, log_dir=tmp_path) as idp:
        url = idp.authorize_url(client_id, redirect_uri, challenge, resource="http://127.0.0.1:8123/mcp")
        redirect = browser_login(url, "alice", "alice-pw")     # the client's redirect_uri?code=...&state=...
        tokens = idp.exchange_code(redirect, client_id, redirect_uri, verifier, client_secret=...)

The provider is started with Popen, is ready when it prints its one ready line (bounded wait,
no sleeps), and is stopped by its PID (SIGTERM, then SIGKILL, then its process group).
Users: alice / alice-pw (alice@example.com, groups ["admins"]), bob / bob-pw (bob@example.com).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import queue
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import httpx

IDP_DIR = Path(__file__).resolve().parent / "idp"
SERVER_JS = IDP_DIR / "server.mjs"
NODE = shutil.which("node") or "node"
READY = re.compile(r"^listening on (http://127\.0\.0\.1:(\d+))$")

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
TT_ACCESS_TOKEN = "urn:ietf:params:oauth:token-type:access_token"
TT_ID_TOKEN = "urn:ietf:params:oauth:token-type:id_token"

USERS = {
    "alice": {"password": "alice-pw", "email": "alice@example.com", "groups": ["admins"]},
    "bob": {"password": "bob-pw", "email": "bob@example.com", "groups": []},
}


class IdPError(Exception):
    """The provider failed to start, or answered a browser step with an error page."""


class LoginFailed(IdPError):
    """The login form was shown again with an error (wrong username or password)."""


def pkce_pair() -> tuple[str, str]:
    """(code_verifier, S256 code_challenge)."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def _die_with_parent() -> None:
    os.setsid()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class IdP:
    """The provider process. A context manager; `close()` stops it by PID."""

    def __init__(
        self,
        config: dict[str, Any] | None = None,
        *,
        access_token_ttl: int | None = None,
        default_resource: str | None = None,
        log_dir: Path | str | None = None,
        startup_timeout: float = 30.0,
    ) -> None:
        if not (IDP_DIR / "node_modules" / "oidc-provider").is_dir():
            raise IdPError(f"{IDP_DIR}/node_modules is missing: run `npm ci --prefix tests/testbed/idp` (scripts/test-all does)")
        self.log_dir = Path(log_dir) if log_dir else Path(tempfile.mkdtemp(prefix="idp-"))
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.log = self.log_dir / f"idp-{secrets.token_hex(3)}.log"
        argv = [NODE, str(SERVER_JS), "--port", "0"]
        if config:
            cfg = self.log_dir / f"idp-config-{secrets.token_hex(3)}.json"
            cfg.write_text(json.dumps(config, indent=2))
            argv += ["--config", str(cfg)]
        if access_token_ttl is not None:
            argv += ["--access-token-ttl", str(access_token_ttl)]
        if default_resource is not None:
            argv += ["--default-resource", default_resource]
        self._logfh = open(self.log, "ab")  # noqa: SIM115 - closed in close()
        self.popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._logfh,
            cwd=str(IDP_DIR),
            preexec_fn=_die_with_parent,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._pump = threading.Thread(target=self._read_stdout, daemon=True)
        self._pump.start()
        self.issuer = ""
        self.port = 0
        self._discovery: dict[str, Any] | None = None
        try:
            self._wait_ready(startup_timeout)
        except BaseException:
            self.close()
            raise
        self.http = httpx.Client(base_url=self.issuer, timeout=10)

    # ----------------------------------------------------------- process

    def _read_stdout(self) -> None:
        assert self.popen.stdout is not None
        for raw in self.popen.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            self._lines.put(line)
            with contextlib.suppress(ValueError, OSError):
                self._logfh.write(f"[stdout] {line}\n".encode())
                self._logfh.flush()
        self._lines.put(None)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise IdPError(f"IdP printed no ready line within {timeout}s\n{self.log_tail()}")
            try:
                line = self._lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                self.popen.wait(timeout=5)
                raise IdPError(f"IdP exited with {self.popen.returncode} before it was ready\n{self.log_tail()}")
            m = READY.match(line)
            if m:
                self.issuer, self.port = m.group(1), int(m.group(2))
                return

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "<no log>"

    def close(self) -> None:
        if hasattr(self, "http"):
            self.http.close()
        p = self.popen
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    p.kill()
                p.wait(timeout=5)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(p.pid, signal.SIGKILL)
        self._pump.join(timeout=5)
        with contextlib.suppress(OSError):
            self._logfh.close()

    def __enter__(self) -> IdP:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------- metadata

    def url(self, path: str) -> str:
        return self.issuer + path

    @property
    def discovery(self) -> dict[str, Any]:
        if self._discovery is None:
            r = self.http.get("/.well-known/openid-configuration")
            r.raise_for_status()
            self._discovery = r.json()
        return self._discovery

    @property
    def token_endpoint(self) -> str:
        return self.discovery["token_endpoint"]

    def jwks(self) -> dict[str, Any]:
        r = self.http.get("/jwks")
        r.raise_for_status()
        return r.json()

    # ------------------------------------------------------------ client

    def register_client(self, redirect_uris: list[str], **metadata: Any) -> dict[str, Any]:
        """Dynamic client registration (open). Defaults: public client (auth none), code + refresh."""
        body = {
            "redirect_uris": redirect_uris,
            "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            **metadata,
        }
        r = self.http.post(self.discovery["registration_endpoint"], json=body)
        if r.status_code != 201:
            raise IdPError(f"registration failed: {r.status_code} {r.text}")
        return r.json()

    def authorize_url(
        self,
        client_id: str,
        redirect_uri: str,
        code_challenge: str,
        *,
        scope: str = "openid email profile offline_access",
        resource: str | list[str] | None = None,
        state: str | None = None,
        nonce: str | None = None,
        **extra: str,
    ) -> str:
        params: list[tuple[str, str]] = [
            ("response_type", "code"),
            ("client_id", client_id),
            ("redirect_uri", redirect_uri),
            ("scope", scope),
            ("state", state or secrets.token_urlsafe(16)),
            ("code_challenge", code_challenge),
            ("code_challenge_method", "S256"),
        ]
        if nonce:
            params.append(("nonce", nonce))
        if "offline_access" in scope.split() and "prompt" not in extra:
            params.append(("prompt", "consent"))  # OIDC honours offline_access only with prompt=consent
        for r in [resource] if isinstance(resource, str) else resource or []:
            params.append(("resource", r))
        params += list(extra.items())
        return f"{self.discovery['authorization_endpoint']}?{urlencode(params)}"

    def token(self, data: dict[str, Any], client_id: str, client_secret: str | None = None) -> httpx.Response:
        """POST the token endpoint; client_secret_basic when a secret is given, else client_id in the body."""
        if client_secret is None:
            return self.http.post(self.token_endpoint, data={**data, "client_id": client_id})
        return self.http.post(self.token_endpoint, data=data, auth=(client_id, client_secret))

    def exchange_code(
        self,
        redirect_url: str,
        client_id: str,
        redirect_uri: str,
        code_verifier: str,
        *,
        client_secret: str | None = None,
        resource: str | None = None,
    ) -> dict[str, Any]:
        q = parse_qs(urlsplit(redirect_url).query)
        if "code" not in q:
            raise IdPError(f"no code in {redirect_url}")
        data = {"grant_type": "authorization_code", "code": q["code"][0], "redirect_uri": redirect_uri, "code_verifier": code_verifier}
        if resource:
            data["resource"] = resource
        r = self.token(data, client_id, client_secret)
        if r.status_code != 200:
            raise IdPError(f"code exchange failed: {r.status_code} {r.text}")
        return r.json()

    def login(
        self,
        client_id: str,
        redirect_uri: str,
        username: str = "alice",
        *,
        password: str | None = None,
        client_secret: str | None = None,
        resource: str | None = None,
        scope: str = "openid email profile offline_access",
    ) -> dict[str, Any]:
        """The whole code + PKCE flow for a user; returns the token response."""
        verifier, challenge = pkce_pair()
        url = self.authorize_url(client_id, redirect_uri, challenge, scope=scope, resource=resource)
        redirect = browser_login(url, username, password if password is not None else USERS[username]["password"])
        return self.exchange_code(redirect, client_id, redirect_uri, verifier, client_secret=client_secret)

    # ----------------------------------------------------- test controls

    def _admin(self, method: str, path: str, **kw: Any) -> Any:
        r = self.http.request(method, f"/__test/{path}", **kw)
        if r.status_code != 200:
            raise IdPError(f"{method} /__test/{path}: {r.status_code} {r.text}")
        return r.json()

    def rotate_keys(self, drop_old: bool = False) -> dict[str, Any]:
        """Add a new signing key (it signs from now on); drop_old removes the others from the JWKS."""
        return self._admin("POST", "rotate-keys", params={"drop_old": "1"} if drop_old else None)

    def stats(self) -> dict[str, Any]:
        """{"requests": {"POST /token": n, ...}, "grants": {grant_type: {"success": n, "error": n}}}"""
        return self._admin("GET", "stats")

    def reset_stats(self) -> None:
        self._admin("POST", "stats/reset")

    def settings(self, **patch: Any) -> dict[str, Any]:
        """Read or change access_token_ttl, rotate_refresh_tokens, auto_consent, default_resource."""
        if patch:
            return self._admin("POST", "settings", json=patch)
        return self._admin("GET", "settings")

    def revoke_grants(self, sub: str) -> int:
        """Drop every grant (with its refresh/access tokens) and session of a user."""
        return self._admin("POST", "revoke-grants", params={"sub": sub})["revoked"]

    def mint(self, claims: dict[str, Any], *, header: dict[str, Any] | None = None, ttl: int | None = None, kid: str | None = None) -> str:
        """A JWT signed by the provider's key (iss/iat/exp/jti filled in unless given)."""
        body: dict[str, Any] = {"claims": claims}
        if header:
            body["header"] = header
        if ttl is not None:
            body["ttl"] = ttl
        if kid:
            body["kid"] = kid
        return self._admin("POST", "mint", json=body)["token"]


# ------------------------------------------------------------------- browser


class _Forms(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict[str, Any]] = []
        self.error: str | None = None
        self._in_error = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append({"action": a.get("action", ""), "method": a.get("method", "get").lower(), "inputs": {}, "buttons": [], "fields": []})
        elif tag in ("input", "button") and self.forms:
            form = self.forms[-1]
            kind = a.get("type", "submit" if tag == "button" else "text").lower()
            if kind == "submit":
                form["buttons"].append((a.get("name", ""), a.get("value", "")))
            elif a.get("name"):
                form["inputs"][a["name"]] = a.get("value", "")
                form["fields"].append((a["name"], kind))
        if a.get("id") == "error" or "error" in a.get("class", "").split():
            self._in_error = True
            self.error = ""

    def handle_data(self, data: str) -> None:
        if self._in_error:
            self.error = (self.error or "") + data

    def handle_endtag(self, tag: str) -> None:
        self._in_error = False


def browser_login(
    authorize_url: str,
    username: str,
    password: str,
    *,
    consent: str = "approve",
    client: httpx.Client | None = None,
    max_steps: int = 20,
) -> str:
    """Drive the provider like a browser: follow its redirects, submit the login form and the
    consent form (consent="approve" or "deny"), keep cookies. Returns the URL of the redirect
    to the client's redirect_uri (code or error in its query) without requesting it.

    Raises LoginFailed when the login form comes back with an error, IdPError on an error page.
    Pass `client` to keep an existing cookie jar (e.g. a second login in the same "browser").
    """
    parts = urlsplit(authorize_url)
    origin = f"{parts.scheme}://{parts.netloc}"
    redirect_uri = parse_qs(parts.query).get("redirect_uri", [None])[0]
    own = client is None
    c = client or httpx.Client(timeout=10)
    try:
        resp = c.get(authorize_url)
        submitted_login = False
        for _ in range(max_steps):
            if resp.is_redirect:
                location = urljoin(str(resp.url), resp.headers["location"])
                loc = urlsplit(location)
                if (redirect_uri and location.split("?")[0] == redirect_uri.split("?")[0]) or f"{loc.scheme}://{loc.netloc}" != origin:
                    return location
                resp = c.get(location)
                continue
            if resp.status_code != 200:
                raise IdPError(f"{resp.request.method} {resp.url} -> {resp.status_code}: {_text(resp)}")
            parser = _Forms()
            parser.feed(resp.text)
            if not parser.forms:
                raise IdPError(f"no form at {resp.url}: {_text(resp)}")
            form = parser.forms[0]
            data = dict(form["inputs"])
            if any(kind == "password" for _, kind in form["fields"]):
                if submitted_login and parser.error:
                    raise LoginFailed(parser.error.strip())
                user_field = next(name for name, kind in form["fields"] if kind in ("text", "email"))
                pw_field = next(name for name, kind in form["fields"] if kind == "password")
                data[user_field], data[pw_field] = username, password
                button = next((b for b in form["buttons"] if b[1] in ("login", "")), form["buttons"][0] if form["buttons"] else None)
                submitted_login = True
            else:
                button = next((b for b in form["buttons"] if b[1] == consent), None)
                if button is None:
                    raise IdPError(f"no {consent!r} button at {resp.url}: {_text(resp)}")
            if button and button[0]:
                data[button[0]] = button[1]
            action = urljoin(str(resp.url), form["action"] or str(resp.url))
            resp = c.post(action, data=data) if form["method"] == "post" else c.get(action, params=data)
        raise IdPError(f"browser_login did not reach the redirect_uri within {max_steps} steps (last: {resp.url})")
    finally:
        if own:
            c.close()


def _text(resp: httpx.Response) -> str:
    text = re.sub(r"<[^>]+>", " ", resp.text)
    return re.sub(r"\s+", " ", text).strip()[:500]


# ------------------------------------------------------------- MCP SDK client


def mcp_oauth_provider(resource: str, username: str, password: str, client_name: str = "sdk-client") -> tuple[Any, Any]:
    """The official MCP SDK's OAuthClientProvider for `resource`, signing `username` in through
    the provider's forms (browser_login) when it is sent there; tokens kept in memory.
    Returns (provider, storage); `storage.tokens` / `storage.info` show what the SDK got."""
    import anyio
    from mcp.client.auth import OAuthClientProvider, TokenStorage
    from mcp.shared.auth import OAuthClientInformationFull, OAuthClientMetadata, OAuthToken

    class Memory(TokenStorage):
        tokens: OAuthToken | None = None
        info: OAuthClientInformationFull | None = None

        async def get_tokens(self) -> OAuthToken | None:
            return self.tokens

        async def set_tokens(self, tokens: OAuthToken) -> None:
            self.tokens = tokens

        async def get_client_info(self) -> OAuthClientInformationFull | None:
            return self.info

        async def set_client_info(self, info: OAuthClientInformationFull) -> None:
            self.info = info

    landed: dict[str, str] = {}

    async def redirect_handler(url: str) -> None:
        landed["url"] = await anyio.to_thread.run_sync(browser_login, url, username, password)

    async def callback_handler() -> tuple[str, str | None]:
        q = parse_qs(urlsplit(landed["url"]).query)
        return q["code"][0], q.get("state", [None])[0]

    storage = Memory()
    metadata = OAuthClientMetadata(redirect_uris=["http://127.0.0.1:9/callback"], client_name=client_name)  # type: ignore[list-item]
    return OAuthClientProvider(resource, metadata, storage, redirect_handler, callback_handler), storage
