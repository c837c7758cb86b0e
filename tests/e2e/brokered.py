"""Helpers for the brokered-traffic tests (issue #6) and the demo (scripts/demo-brokered):
the protected upstream, the test provider's clients and users, Tessera's brokered config,
callers' tokens, SDK clients with a bearer token, a browser signed in to Tessera, the
oauth_connect flow, and the store's activity records."""

from __future__ import annotations

import base64
import contextlib
import json
import re
import secrets
import sqlite3
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from conftest import (
    INBOUND_CREDENTIALS,
    UPSTREAM_HEADER_RECORDS,
    PYTHON,
    SEP,
    Gateway,
    Proc,
    ProcessRegistry,
    REPO,
    STARTUP_TIMEOUT,
    register_secret,
    spawn,
    tail,
    wait_for_port,
    wait_until,
    Abort,
    port_accepts,
    free_port,
)

sys.path.insert(0, str(REPO / "tests" / "testbed"))
from idp import IdP, browser_login  # noqa: E402

PROTECTED_UPSTREAM = Path(__file__).resolve().parent / "upstreams" / "protected_upstream.py"

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
URL_ELICITATION_REQUIRED = -32042

# Users of the test provider: alice and bob are built in; the rest come from its --config.
PASSWORDS = {u: f"{u}-pw" for u in ("alice", "bob", "carol", "dave", "erin", "frank")}
EXTRA_USERS = [
    {"username": u, "password": f"{u}-pw", "email": f"{u}@example.com", "name": u.title(), "groups": []}
    for u in ("carol", "dave", "erin", "frank")
]
SIGNIN_CLIENT = "tessera"
TOKEN_REDIRECT = "http://127.0.0.1:9/callback"  # where the test's own code + PKCE logins land
SESSION_COOKIE = "tessera_session"
LOGIN_COOKIE = "tessera_login"

# Everything a client sent to Tessera as its own credential: none of it may reach an upstream
# (conftest scans every header record for these once the suite is done).
INBOUND = INBOUND_CREDENTIALS


def inbound(value: str) -> str:
    """Remember a credential a client sent to Tessera (IdP token, PAT, cookie); also kept out of logs."""
    if value:
        INBOUND.add(value)
        register_secret(value)
    return value


# ------------------------------------------------------------------ upstreams


@dataclass
class Upstream:
    proc: Proc
    port: int
    record: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stats(self) -> dict[str, Any]:
        r = httpx.get(f"{self.base}/__test/stats", timeout=10)
        r.raise_for_status()
        return r.json()

    def revoke(self) -> int:
        return httpx.post(f"{self.base}/__test/revoke", timeout=10).json()["revoked"]

    def reject_all(self, on: bool) -> None:
        httpx.post(f"{self.base}/__test/reject-all", json={"on": on}, timeout=10).raise_for_status()

    def recorded(self) -> list[dict[str, Any]]:
        if not self.record.exists():
            return []
        return [json.loads(line) for line in self.record.read_text().splitlines() if line.strip()]


RECORD_FILES = UPSTREAM_HEADER_RECORDS


def start_protected_upstream(reg: ProcessRegistry, issuer: str, log_dir: Path, name: str, audience: str | None = None) -> Upstream:
    """protected_upstream.py on a free port, validating tokens of `issuer` for its own /mcp URL
    (or `audience`), recording every request's headers under log_dir."""
    port = free_port()
    record = log_dir / f"headers-{name}-{secrets.token_hex(3)}.jsonl"
    RECORD_FILES.append(record)
    argv = [PYTHON, str(PROTECTED_UPSTREAM), "--port", str(port), "--issuer", issuer,
            "--audience", audience or f"http://127.0.0.1:{port}/mcp", "--record", str(record), "--name", name]
    proc = reg.add(spawn(f"protected-{name}", argv, log_dir))
    wait_for_port(proc, port)
    return Upstream(proc, port, record)


def inbound_tokens_found_upstream() -> list[str]:
    """Every (file, header) of any recorded upstream request that carries an inbound credential."""
    problems = []
    for path in RECORD_FILES:
        if not path.exists():
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            for secret in INBOUND:
                if secret in line:
                    rec = json.loads(line)
                    where = [k for k, v in rec["headers"].items() if secret in v] or ["(elsewhere in the request line)"]
                    problems.append(f"{path.name}:{n}: {rec['method']} {rec['path']} header {where} carries an inbound credential ({secret[:8]}…)")
    return problems


# ------------------------------------------------------------------- provider


def provider_config(gw_port: int, signin_secret: str, broker_secrets: dict[str, str], connect_servers: list[str]) -> dict[str, Any]:
    """The provider's clients: Tessera's sign-in client (also issues callers' tokens for /mcp),
    and one confidential client per broker mode."""
    gw = f"http://127.0.0.1:{gw_port}"
    return {
        "users": EXTRA_USERS,
        "clients": [
            {
                "client_id": SIGNIN_CLIENT,
                "client_secret": signin_secret,
                "redirect_uris": [f"{gw}/auth/callback", TOKEN_REDIRECT],
                "grant_types": ["authorization_code", "refresh_token"],
                "response_types": ["code"],
                "token_endpoint_auth_method": "client_secret_basic",
            },
            {
                "client_id": "broker-tx",
                "client_secret": broker_secrets["broker-tx"],
                "redirect_uris": [TOKEN_REDIRECT],
                "grant_types": [TOKEN_EXCHANGE],
                "response_types": [],
                "token_endpoint_auth_method": "client_secret_basic",
            },
            {
                "client_id": "broker-obo",
                "client_secret": broker_secrets["broker-obo"],
                "redirect_uris": [TOKEN_REDIRECT],
                "grant_types": [JWT_BEARER],
                "response_types": [],
                "token_endpoint_auth_method": "client_secret_post",
            },
            {
                "client_id": "broker-connect",
                "client_secret": broker_secrets["broker-connect"],
                "redirect_uris": [f"{gw}/api/v1/user/credentials/{s}/callback" for s in connect_servers],
                "grant_types": ["authorization_code", "refresh_token"],
                "response_types": ["code"],
                "token_endpoint_auth_method": "client_secret_basic",
            },
        ],
    }


def new_secrets() -> tuple[str, dict[str, str], str]:
    """(sign-in client secret, broker client secrets, sealing key), all registered as secrets."""
    signin = register_secret("cs-" + secrets.token_urlsafe(24))
    broker = {c: register_secret(f"{c}-" + secrets.token_urlsafe(24)) for c in ("broker-tx", "broker-obo", "broker-connect")}
    key = register_secret(base64.b64encode(secrets.token_bytes(32)).decode())
    return signin, broker, key


def tx_server(idp: IdP, up: Upstream, secret: str, allowed: list[str], **extra: Any) -> dict[str, Any]:
    return {
        "url": up.url,
        "protocol": "http",
        **extra,
        "auth_broker": {
            "mode": "token_exchange",
            "token_endpoint": idp.token_endpoint,
            "client_id": "broker-tx",
            "client_secret": secret,
            "client_auth": "client_secret_basic",
            "resource": up.url,
            "subject_token_type": "access_token",
            "header": "Authorization",
            "header_format": "Bearer {token}",
            "allowed_emails": allowed,
        },
    }


def obo_server(idp: IdP, up: Upstream, secret: str, allowed: list[str], **extra: Any) -> dict[str, Any]:
    return {
        "url": up.url,
        "protocol": "http",
        **extra,
        "auth_broker": {
            "mode": "entra_obo",
            "token_endpoint": idp.token_endpoint,
            "client_id": "broker-obo",
            "client_secret": secret,
            "client_auth": "client_secret_post",
            "scopes": [f"{up.url}/.default"],
            "allowed_emails": allowed,
        },
    }


def connect_server(idp: IdP, up: Upstream, secret: str, allowed: list[str], **extra: Any) -> dict[str, Any]:
    return {
        "url": up.url,
        "protocol": "http",
        **extra,
        "auth_broker": {
            "mode": "oauth_connect",
            "authorization_endpoint": idp.discovery["authorization_endpoint"],
            "token_endpoint": idp.token_endpoint,
            "client_id": "broker-connect",
            "client_secret": secret,
            "client_auth": "client_secret_basic",
            "resource": up.url,
            "scopes": ["openid", "mcp"],
            "allowed_emails": allowed,
        },
    }


def gateway_auth(idp: IdP, gw_port: int, signin_secret: str) -> dict[str, Any]:
    return {
        "issuer": idp.issuer,
        "client_id": SIGNIN_CLIENT,
        "client_secret": signin_secret,
        "resource": f"http://127.0.0.1:{gw_port}/mcp",
        "scopes": ["openid", "email", "profile"],
        "store_idp_tokens": True,
    }


def wait_gateway_listening(gw: Gateway, unbrokered: list[str], timeout: float = STARTUP_TIMEOUT) -> None:
    """Port open and every unbrokered upstream ready in /readyz (brokered servers have no shared
    session to be ready with, so their state is not waited for)."""
    import pytest

    last: dict[str, Any] = {}

    def ready() -> bool:
        nonlocal last
        if not gw.proc.alive():
            raise Abort(f"tessera exited with {gw.proc.popen.returncode}")
        if not port_accepts(gw.port):
            return False
        last = gw.readyz()
        ups = last.get("upstreams", {})
        return all(ups.get(name, {}).get("state") == "ready" for name in unbrokered)

    try:
        wait_until(ready, timeout, "tessera to listen with its unbrokered upstreams ready", interval=0.1)
    except Exception as exc:
        pytest.fail(f"{exc}\nlast /readyz: {json.dumps(last)}\n--- tessera log ({gw.proc.log}) ---\n{tail(gw.proc.log, 80)}", pytrace=False)


# -------------------------------------------------------------------- callers


def caller_token(idp: IdP, gw: Gateway, user: str, signin_secret: str) -> str:
    """A real access token for `user` addressed to Tessera's /mcp (code + PKCE at the provider)."""
    tokens = idp.login(SIGNIN_CLIENT, TOKEN_REDIRECT, user, password=PASSWORDS[user], client_secret=signin_secret,
                       resource=gw.mcp_url, scope="openid email profile")
    for key in ("refresh_token", "id_token"):
        register_secret(tokens.get(key, ""))
    return inbound(tokens["access_token"])


@dataclass
class Client:
    """An initialized SDK session plus what the server sent it outside of answers."""

    session: Any
    notifications: list[Any] = field(default_factory=list)

    def elicitation_completions(self) -> list[str]:
        return [n.params.elicitationId for n in self.notifications if getattr(n, "method", "") == "notifications/elicitation/complete"]


@contextlib.asynccontextmanager
async def sdk_client(gw: Gateway, bearer: str, *, url_elicitation: bool = True) -> AsyncIterator[Client]:
    """The official SDK over Tessera's /mcp with `Authorization: Bearer <bearer>`. With
    url_elicitation, it declares the elicitation capability (form + url) and records every
    server notification (notifications/elicitation/complete among them)."""
    from mcp import ClientSession, types
    from mcp.client.streamable_http import streamablehttp_client

    holder = Client(session=None)

    async def on_message(message: Any) -> None:
        if isinstance(message, types.ServerNotification):
            holder.notifications.append(message.root)

    async def on_elicit(context: Any, params: Any) -> Any:
        return types.ElicitResult(action="decline")

    kwargs: dict[str, Any] = {"message_handler": on_message}
    if url_elicitation:
        kwargs["elicitation_callback"] = on_elicit
    async with streamablehttp_client(gw.mcp_url, headers={"Authorization": f"Bearer {bearer}"}, timeout=30, sse_read_timeout=120) as (read, write, _):
        async with ClientSession(read, write, **kwargs) as session:
            await session.initialize()
            holder.session = session
            yield holder


@dataclass
class Outcome:
    kind: str  # "ok", "tool_error" (isError result) or "rpc_error" (JSON-RPC error)
    text: str
    code: int | None = None
    data: Any = None

    def describe(self) -> str:
        return f"{self.kind}{'' if self.code is None else f' {self.code}'}: {self.text[:400]}" + (f" data={json.dumps(self.data)[:400]}" if self.data is not None else "")


async def call(client: Client, tool: str, args: dict[str, Any] | None = None) -> Outcome:
    """tools/call through the SDK, reduced to what came back (no exception for errors)."""
    from mcp import McpError

    from conftest import text_of

    try:
        result = await client.session.call_tool(tool, args or {})
    except McpError as exc:
        return Outcome("rpc_error", exc.error.message, exc.error.code, exc.error.data)
    return Outcome("tool_error" if result.isError else "ok", text_of(result))


async def whoami(client: Client, server: str) -> dict[str, Any]:
    out = await call(client, f"{server}{SEP}whoami")
    assert out.kind == "ok", f"{server}{SEP}whoami failed: {out.describe()}"
    return json.loads(out.text)


async def list_all_tools(client: Client) -> dict[str, Any]:
    """Every tool of every page of tools/list, by name."""
    tools: dict[str, Any] = {}
    cursor = None
    while True:
        result = await client.session.list_tools(cursor=cursor) if cursor else await client.session.list_tools()
        tools.update({t.name: t for t in result.tools})
        cursor = result.nextCursor
        if not cursor:
            return tools


async def tool_names(client: Client) -> set[str]:
    return set(await list_all_tools(client))


# -------------------------------------------------------------------- browser


def sign_in_browser(gw: Gateway, user: str) -> httpx.Client:
    """A browser (cookie jar) signed in to Tessera as `user` through /auth/login at the provider."""
    c = httpx.Client(timeout=30)
    r = c.get(f"{gw.base}/auth/login")
    assert r.status_code == 302, f"/auth/login: {r.status_code} {r.text[:300]}"
    for name in (LOGIN_COOKIE,):
        if c.cookies.get(name):
            inbound(c.cookies.get(name))
    callback = browser_login(r.headers["location"], user, PASSWORDS[user], client=c)
    assert parse_qs(urlsplit(callback).query).get("code"), callback
    r = c.get(callback)
    assert r.status_code in (302, 303), f"/auth/callback: {r.status_code} {r.text[:300]}"
    cookie = c.cookies.get(SESSION_COOKIE)
    assert cookie, f"no {SESSION_COOKIE} cookie after sign-in"
    inbound(cookie)
    return c


class SignedInUsers:
    """Browsers signed in to Tessera, and personal access tokens made through them, one per
    user (and scope), for a test environment with `gw`, `browsers` and `pats` attributes."""

    gw: Gateway
    browsers: dict[str, httpx.Client]
    pats: dict[str, str]

    def browser(self, user: str) -> httpx.Client:
        if user not in self.browsers:
            self.browsers[user] = sign_in_browser(self.gw, user)
        return self.browsers[user]

    def pat(self, user: str, **scope: Any) -> str:
        """A personal access token of `user` (full, or scoped by `scope`), made through REST."""
        key = user + json.dumps(scope, sort_keys=True)
        if key not in self.pats:
            r = self.browser(user).post(f"{self.gw.base}/api/v1/user/tokens", json={"name": f"e2e {len(self.pats)}", **scope})
            assert r.status_code == 201, f"token create: {r.status_code} {r.text}"
            self.pats[key] = inbound(r.json()["token"])
        return self.pats[key]

    def rest(self, user: str) -> httpx.Client:
        """A REST client of `user` with their (full) personal access token."""
        return httpx.Client(base_url=self.gw.base, headers={"Authorization": f"Bearer {self.pat(user)}"}, timeout=30)


@dataclass
class Elicitation:
    id: str
    url: str
    message: str
    raw: dict[str, Any]


def url_elicitation_of(out: Outcome, gw: Gateway, server: str) -> Elicitation:
    """The one URL-mode elicitation of a -32042 error, checked against the spec's shape."""
    assert out.kind == "rpc_error" and out.code == URL_ELICITATION_REQUIRED, (
        f"expected JSON-RPC error {URL_ELICITATION_REQUIRED} (URLElicitationRequiredError) for {server}, got {out.describe()}")
    assert isinstance(out.data, dict) and isinstance(out.data.get("elicitations"), list) and out.data["elicitations"], (
        f"-32042 without data.elicitations: {out.describe()}")
    e = out.data["elicitations"][0]
    assert e.get("mode") == "url", f"elicitation mode is not url: {e}"
    for key in ("elicitationId", "message", "url"):
        assert isinstance(e.get(key), str) and e[key], f"elicitation lacks {key}: {e}"
    assert e["url"].startswith(f"{gw.base}/api/v1/user/credentials/{server}/connect"), f"not Tessera's connect page for {server}: {e['url']}"
    return Elicitation(e["elicitationId"], e["url"], e["message"], e)


def connect_url_pattern(gw: Gateway, server: str) -> re.Pattern[str]:
    return re.compile(re.escape(f"{gw.base}/api/v1/user/credentials/{server}/connect") + r"\S*")


def complete_connect(browser: httpx.Client, idp: IdP, connect_url: str, user: str, consent: str = "approve") -> httpx.Response:
    """Open Tessera's connect page in the signed-in browser, follow it to the provider, consent
    (or deny) as `user`, and land on Tessera's callback. Returns the callback's response."""
    r = browser.get(connect_url)
    assert r.status_code in (302, 303), f"connect page: {r.status_code} {r.text[:300]}"
    location = r.headers["location"]
    assert location.startswith(idp.discovery["authorization_endpoint"]), f"connect page redirected elsewhere: {location}"
    callback = browser_login(location, user, PASSWORDS[user], consent=consent, client=browser)
    assert "/api/v1/user/credentials/" in callback and callback.split("?")[0].endswith("/callback"), f"provider redirected to {callback}"
    return browser.get(callback)


# ---------------------------------------------------------------------- store


def activity(data_dir: Path, server: str) -> list[dict[str, Any]]:
    """Rows of the store's activity table for `server`, with the user's subject."""
    db = data_dir / "tessera.db"
    if not db.exists():
        return []
    con = sqlite3.connect(str(db), timeout=10)
    try:
        con.row_factory = sqlite3.Row
        rows = con.execute(
            "SELECT a.action, a.outcome, a.reason, a.method, u.subject FROM activity a LEFT JOIN users u ON u.id = a.user_id "
            "WHERE a.server = ? ORDER BY a.ts",
            (server,),
        ).fetchall()
        return [dict(r) for r in rows]
    finally:
        con.close()


def grants(idp: IdP, grant_type: str) -> dict[str, int]:
    g = idp.stats().get("grants", {}).get(grant_type, {})
    return {"success": g.get("success", 0), "error": g.get("error", 0)}


def broker_grants(idp: IdP) -> dict[str, dict[str, int]]:
    return {gt: grants(idp, gt) for gt in (TOKEN_EXCHANGE, JWT_BEARER, "authorization_code", "refresh_token")}
