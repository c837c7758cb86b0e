"""Server-edition parity (issue #10) on live MCP traffic: personal upstreams, per-user switches
for shared servers, scoped agent tokens, admin controls, and tool search.

Real peers only: the test OpenID provider (tests/testbed/idp) for sign-in; twelve shared
upstreams on the official Python SDK serving a 539-tool catalogue (upstreams/corpus_upstream.py,
tests/data/tool-corpus.json: github, slack, jira, kubernetes, …, one process, one MCP server per
path); the project's Python test upstream (upstreams/py_upstream.py) as alice's personal server;
a protected upstream (upstreams/protected_upstream.py) that records every request's headers, for
a personal server's static header; `tessera serve` with SQLite. Callers are the official Python
MCP SDK with personal access tokens made through the REST API of a browser session.

Users: alice and bob (ordinary), carol (disabled and enabled again), dave (admin via
auth.admin_emails). Tests share one gateway; each uses its own users or undoes what it changes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from brokered import (
    SignedInUsers,
    Upstream,
    caller_token,
    gateway_auth,
    inbound,
    new_secrets,
    provider_config,
    sign_in_browser,
    start_protected_upstream,
)
from conftest import (
    PYTHON,
    REPO,
    SEP,
    TESSERA_BIN,
    Gateway,
    ProcessRegistry,
    await_until,
    free_port,
    register_secret,
    spawn,
    start_gateway,
    start_py_upstream,
    text_of,
    wait_for_port,
    wait_until,
)
from idp import IdP  # noqa: E402 - brokered puts tests/testbed on sys.path

pytestmark = pytest.mark.anyio

CORPUS = json.loads((REPO / "tests" / "data" / "tool-corpus.json").read_text())
QUERIES = json.loads((REPO / "tests" / "data" / "tool-queries.json").read_text())
CORPUS_UPSTREAM = Path(__file__).resolve().parent / "upstreams" / "corpus_upstream.py"
MAX_USER_SERVERS = 2


@dataclass
class Env(SignedInUsers):
    idp: IdP
    gw: Gateway
    reg: ProcessRegistry
    tmp: Path
    personal_url: str
    protected: Upstream
    signin_secret: str
    browsers: dict[str, httpx.Client] = field(default_factory=dict)
    pats: dict[str, str] = field(default_factory=dict)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("server_edition")
    logs = tmp / "logs"
    port = free_port()
    signin_secret, broker_secrets, sealing_key = new_secrets()
    reg = ProcessRegistry()
    old_key = os.environ.get("TESSERA_SEALING_KEY")
    os.environ["TESSERA_SEALING_KEY"] = sealing_key
    browsers: dict[str, httpx.Client] = {}
    try:
        with IdP(config=provider_config(port, signin_secret, broker_secrets, []), log_dir=logs) as idp:
            corpus_port = free_port()
            corpus = reg.add(spawn("corpus-upstream", [PYTHON, str(CORPUS_UPSTREAM), "all", "streamable-http", str(corpus_port)], logs))
            wait_for_port(corpus, corpus_port)
            _, personal_url = start_py_upstream(reg, "streamable-http", logs, tmp / "py-state")
            protected = start_protected_upstream(reg, idp.issuer, logs, "protected")
            servers = {
                name: {"url": f"http://127.0.0.1:{corpus_port}/{name}/mcp", "protocol": "streamable-http"}
                for name in CORPUS["servers"]
            }
            auth = gateway_auth(idp, port, signin_secret)
            auth["admin_emails"] = ["dave@example.com"]
            extra = {
                "auth": auth,
                "public_url": f"http://127.0.0.1:{port}",
                "max_user_servers": MAX_USER_SERVERS,
                # The test upstreams listen on loopback, which personal servers may not reach
                # unless an admin allows it: allowed here for exactly 127.0.0.1.
                "user_server_allowed_networks": ["127.0.0.1/32"],
                "tools_limit": 5,
                # Personal servers' upstream sessions end after 1 s without a call.
                "upstream_idle_timeout": "1s",
            }
            gw = start_gateway(reg, tmp / "gw", servers, extra=extra, port=port)
            e = Env(idp, gw, reg, tmp, personal_url, protected, signin_secret, browsers)
            yield e
    finally:
        for b in browsers.values():
            b.close()
        reg.stop_all()
        if old_key is None:
            os.environ.pop("TESSERA_SEALING_KEY", None)
        else:
            os.environ["TESSERA_SEALING_KEY"] = old_key


@dataclass
class Client:
    session: Any
    notifications: list[Any] = field(default_factory=list)


@contextlib.asynccontextmanager
async def mcp(gw: Gateway, bearer: str, path: str = "/mcp") -> AsyncIterator[Client]:
    from mcp import ClientSession, types
    from mcp.client.streamable_http import streamablehttp_client

    holder = Client(session=None)

    async def on_message(message: Any) -> None:
        if isinstance(message, types.ServerNotification):
            holder.notifications.append(message.root)

    async with streamablehttp_client(f"{gw.base}{path}", headers={"Authorization": f"Bearer {bearer}"}, timeout=30) as (read, write, _):
        async with ClientSession(read, write, message_handler=on_message) as session:
            await session.initialize()
            holder.session = session
            yield holder


async def tool_names(client: Client) -> set[str]:
    names: set[str] = set()
    cursor = None
    while True:
        result = await client.session.list_tools(cursor=cursor) if cursor else await client.session.list_tools()
        names.update(t.name for t in result.tools)
        cursor = result.nextCursor
        if not cursor:
            return names


async def call(client: Client, tool: str, args: dict[str, Any] | None = None) -> tuple[str, str]:
    """(kind, text): kind is ok, tool_error or rpc_error."""
    from mcp import McpError

    try:
        result = await client.session.call_tool(tool, args or {})
    except McpError as exc:
        return "rpc_error", exc.error.message
    except Exception as exc:  # the transport failed (e.g. the session is gone)
        return "exception", repr(exc)
    return ("tool_error" if result.isError else "ok"), text_of(result)


def corpus_tool(server: str, *, read_only: bool | None = None, destructive: bool | None = None) -> str:
    """The exposed name of a corpus tool of `server` with these annotations."""
    for tool in CORPUS["servers"][server]:
        ann = tool.get("annotations") or {}
        if read_only is not None and bool(ann.get("readOnlyHint")) != read_only:
            continue
        if destructive is not None and ann.get("destructiveHint") is not destructive:
            continue
        return f"{server}{SEP}{tool['name']}"
    raise AssertionError(f"no {server} tool with read_only={read_only} destructive={destructive}")


# ------------------------------------------------------------------ personal upstreams


async def test_personal_upstream_is_routed_for_its_owner_only(env: Env) -> None:
    alice, bob = env.rest("alice"), env.rest("bob")
    r = alice.post("/api/v1/user/servers", json={"name": "mine", "url": env.personal_url})
    assert r.status_code == 201, r.text
    assert r.json()["ownership"] == "personal"
    try:
        async with mcp(env.gw, env.pat("alice")) as a:
            names = await tool_names(a)
            assert f"mine{SEP}whoami" in names, sorted(n for n in names if n.startswith("mine"))
            kind, text = await call(a, f"mine{SEP}whoami")
            assert kind == "ok", text
        async with mcp(env.gw, env.pat("bob")) as b:
            names = await tool_names(b)
            assert not any(n.startswith(f"mine{SEP}") for n in names), "bob sees alice's personal server"
            kind, text = await call(b, f"mine{SEP}whoami")
            assert kind != "ok" and "unknown tool" in text, (kind, text)
        assert bob.get("/api/v1/user/servers/mine").status_code == 404
        listed = bob.get("/api/v1/user/servers").json()
        assert all(s["name"] != "mine" for s in listed["personal"]), listed
    finally:
        assert alice.delete("/api/v1/user/servers/mine").status_code == 200
    # Gone from alice's MCP view too.
    async with mcp(env.gw, env.pat("alice")) as a:
        assert not any(n.startswith(f"mine{SEP}") for n in await tool_names(a))


async def test_diagnostics_show_live_state_per_user(env: Env) -> None:
    """GET /api/v1/user/diagnostics: alice's personal server is ready with its tool count and
    her open upstream session while she uses it; a shared server shows the corpus' tool count;
    the server bob switched off is `switched_off` for him and `ready` for alice."""
    alice, bob = env.rest("alice"), env.rest("bob")
    r = alice.post("/api/v1/user/servers", json={"name": "diag", "url": env.personal_url})
    assert r.status_code == 201, r.text
    assert bob.post("/api/v1/user/servers/sentry/enable", json={"enabled": False}).status_code == 200
    try:
        before = {s["name"]: s for s in alice.get("/api/v1/user/diagnostics").json()["servers"]}
        assert before["diag"]["ownership"] == "personal" and before["diag"]["connected"] is False, before["diag"]
        async with mcp(env.gw, env.pat("alice")) as a:
            kind, text = await call(a, f"diag{SEP}whoami")
            assert kind == "ok", text
            r = alice.get("/api/v1/user/diagnostics")
            assert r.status_code == 200, r.text
            live = {s["name"]: s for s in r.json()["servers"]}
            diag = live["diag"]
            assert diag["state"] == "ready" and diag["connected"] is True, diag
            assert diag["tool_count"] and diag["tool_count"] > 3, diag
            assert diag["upstream_sessions"] >= 1, diag
            jira = live["jira"]
            assert (jira["state"], jira["tool_count"]) == ("ready", len(CORPUS["servers"]["jira"])), jira
            assert live["sentry"]["state"] == "ready", live["sentry"]
        bobs = {s["name"]: s for s in bob.get("/api/v1/user/diagnostics").json()["servers"]}
        assert bobs["sentry"]["state"] == "switched_off" and bobs["sentry"]["connected"] is False, bobs["sentry"]
        assert "diag" not in bobs, "bob sees alice's personal server"
    finally:
        bob.post("/api/v1/user/servers/sentry/enable", json={"enabled": True})
        assert alice.delete("/api/v1/user/servers/diag").status_code == 200


def per_user_upstream_sessions(env: Env) -> int:
    text = httpx.get(f"{env.gw.base}/metrics", timeout=5).text
    line = next(l for l in text.splitlines() if l.startswith("tessera_brokered_upstream_sessions "))
    return int(float(line.split()[1]))


async def test_an_idle_personal_upstream_session_ends_and_comes_back(env: Env) -> None:
    """A personal server's upstream session counts against the per-user caps and ends after
    upstream_idle_timeout without a call, while the client session stays; the next call opens
    a new one."""
    alice = env.rest("alice")
    assert alice.post("/api/v1/user/servers", json={"name": "idle", "url": env.personal_url}).status_code == 201
    try:
        async with mcp(env.gw, env.pat("alice")) as a:
            kind, text = await call(a, f"idle{SEP}whoami")
            assert kind == "ok", text
            assert per_user_upstream_sessions(env) >= 1
            await await_until(lambda: per_user_upstream_sessions(env) == 0, 15, "the idle personal upstream session to end")
            kind, text = await call(a, f"idle{SEP}whoami")
            assert kind == "ok", text
    finally:
        alice.delete("/api/v1/user/servers/idle")


async def test_personal_upstream_refusals_and_quota(env: Env) -> None:
    erin = env.rest("erin")
    for url in ("http://10.0.0.5/mcp", "http://169.254.169.254/latest/mcp", "http://[fe80::1]/mcp", "http://127.0.0.2:9/mcp"):
        r = erin.post("/api/v1/user/servers", json={"name": "ssrf", "url": url})
        assert r.status_code == 400, f"{url}: {r.status_code} {r.text}"
        assert "private" in r.text or "link-local" in r.text or "loopback" in r.text, r.text
    r = erin.post("/api/v1/user/servers", json={"name": "local", "command": "sh", "args": ["-c", "id"]})
    assert r.status_code == 400 and "HTTP only" in r.text, r.text
    r = erin.post("/api/v1/user/servers", json={"name": "GitHub", "url": env.personal_url})
    assert r.status_code == 409 and "conflicts with a shared server" in r.text, r.text
    made = []
    try:
        for i in range(MAX_USER_SERVERS):
            r = erin.post("/api/v1/user/servers", json={"name": f"p{i}", "url": env.personal_url})
            assert r.status_code == 201, r.text
            made.append(f"p{i}")
        r = erin.post("/api/v1/user/servers", json={"name": "one-too-many", "url": env.personal_url})
        assert r.status_code == 403 and "max_user_servers" in r.text, r.text
    finally:
        for name in made:
            erin.delete(f"/api/v1/user/servers/{name}")


async def test_a_personal_servers_sealed_header_reaches_the_upstream(env: Env) -> None:
    """frank's personal server carries his own static Authorization header: it is sent to the
    upstream on every request and never shown again."""
    frank = env.rest("frank")
    token = register_secret(env.idp.mint({"sub": "frank-upstream", "aud": env.protected.url, "client_id": "frank-own"}))
    r = frank.post("/api/v1/user/servers", json={"name": "own", "url": env.protected.url, "headers": {"Authorization": f"Bearer {token}"}})
    assert r.status_code == 201, r.text
    try:
        assert token not in r.text and token not in frank.get("/api/v1/user/servers").text
        async with mcp(env.gw, env.pat("frank")) as f:
            kind, text = await call(f, f"own{SEP}whoami")
            assert kind == "ok", text
            assert json.loads(text)["sub"] == "frank-upstream", text
    finally:
        frank.delete("/api/v1/user/servers/own")


# ------------------------------------------------------------------ per-user switches


async def test_bob_switches_a_shared_server_off_for_himself_only(env: Env) -> None:
    bob = env.rest("bob")
    tool = corpus_tool("sentry", read_only=True)
    r = bob.post("/api/v1/user/servers/sentry/enable", json={"enabled": False})
    assert r.status_code == 200 and r.json()["user_enabled"] is False, r.text
    try:
        async with mcp(env.gw, env.pat("bob")) as b:
            assert not any(n.startswith(f"sentry{SEP}") for n in await tool_names(b))
            kind, text = await call(b, tool)
            assert kind != "ok" and "switched off" in text, (kind, text)
        async with mcp(env.gw, env.pat("alice")) as a:
            assert tool in await tool_names(a)
            kind, text = await call(a, tool)
            assert kind == "ok" and "sentry." in text, (kind, text)
    finally:
        assert bob.post("/api/v1/user/servers/sentry/enable", json={"enabled": True}).status_code == 200
    async with mcp(env.gw, env.pat("bob")) as b:
        assert tool in await tool_names(b)


async def test_a_switch_reaches_an_open_session_with_list_changed(env: Env) -> None:
    bob = env.rest("bob")
    async with mcp(env.gw, env.pat("bob")) as b:
        assert f"{corpus_tool('notion', read_only=True)}" in await tool_names(b)
        before = len(b.notifications)
        assert bob.post("/api/v1/user/servers/notion/enable", json={"enabled": False}).status_code == 200
        try:
            await await_until(
                lambda: any(getattr(n, "method", "") == "notifications/tools/list_changed" for n in b.notifications[before:]),
                10,
                "tools/list_changed after switching a server off",
            )
            assert not any(n.startswith(f"notion{SEP}") for n in await tool_names(b))
        finally:
            bob.post("/api/v1/user/servers/notion/enable", json={"enabled": True})


# ------------------------------------------------------------------ scoped agent tokens


async def test_a_read_only_token_for_one_server(env: Env) -> None:
    token = env.pat("alice", allowed_servers=["github"], permissions=["read"])
    read_tool = corpus_tool("github", read_only=True)
    destructive_tool = corpus_tool("github", destructive=True)
    other_server_tool = corpus_tool("slack", read_only=True)
    async with mcp(env.gw, token) as a:
        names = await tool_names(a)
        assert read_tool in names
        assert all(n.startswith(f"github{SEP}") for n in names), sorted(names)[:10]
        assert destructive_tool not in names
        kind, text = await call(a, read_tool)
        assert kind == "ok" and "github." in text, (kind, text)
        kind, text = await call(a, destructive_tool)
        assert kind != "ok" and "destructive" in text and "read" in text, (kind, text)
        kind, text = await call(a, other_server_tool)
        assert kind != "ok" and "may not use server 'slack'" in text, (kind, text)
    # The refusals are in the activity log under alice, with the upstream never called.
    r = env.rest("alice").get("/api/v1/activity", params={"limit": 50})
    assert r.status_code == 200, r.text


def test_token_scopes_are_validated(env: Env) -> None:
    b = env.browser("alice")
    r = b.post(f"{env.gw.base}/api/v1/user/tokens", json={"name": "x", "permissions": ["write"]})
    assert r.status_code == 400 and "read" in r.text, r.text
    r = b.post(f"{env.gw.base}/api/v1/user/tokens", json={"name": "x", "permissions": ["read", "admin"]})
    assert r.status_code == 400, r.text
    r = b.post(f"{env.gw.base}/api/v1/user/tokens", json={"name": "x", "allowed_servers": ["nope"]})
    assert r.status_code == 400 and "nope" in r.text, r.text


# ------------------------------------------------------------------ admin controls


class RawSession:
    """An MCP session over plain HTTP: each request's status is visible (the SDK turns a 403
    into a transport crash)."""

    def __init__(self, gw: Gateway, bearer: str) -> None:
        self.http = httpx.Client(base_url=gw.base, timeout=30, headers={
            "Authorization": f"Bearer {bearer}", "Accept": "application/json, text/event-stream"})
        self.session_id: str | None = None
        self.next_id = 1

    def post(self, method: str, params: dict[str, Any] | None = None, *, notify: bool = False) -> httpx.Response:
        body: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "params": params or {}}
        if not notify:
            body["id"] = self.next_id
            self.next_id += 1
        headers = {"Mcp-Session-Id": self.session_id} if self.session_id else {}
        return self.http.post("/mcp", json=body, headers=headers)

    def open(self, client: str = "raw") -> httpx.Response:
        r = self.post("initialize", {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": client, "version": "1"}})
        if r.status_code == 200:
            self.session_id = r.headers["mcp-session-id"]
            self.post("notifications/initialized", notify=True)
        return r

    def call_tool(self, name: str) -> httpx.Response:
        return self.post("tools/call", {"name": name, "arguments": {}})


def test_regenerating_a_scoped_token_rotates_it_on_the_mcp_path(env: Env) -> None:
    """`tessera token regenerate ID`: the new token has the old one's servers and permissions
    (a read tool works, a destructive one is refused) and the old one is refused on /mcp at
    once — in a new session and in the session it had open."""
    r = env.rest("alice").post("/api/v1/user/tokens", json={
        "name": "rotate-me", "allowed_servers": ["github"], "permissions": ["read"]})
    assert r.status_code == 201, r.text
    old, token_id = inbound(r.json()["token"]), r.json()["id"]
    read_tool = corpus_tool("github", read_only=True)
    open_session = RawSession(env.gw, old)
    assert open_session.open().status_code == 200
    r = open_session.call_tool(read_tool)
    assert r.status_code == 200 and "github." in r.text, r.text

    cli_env = {**os.environ, "TESSERA_URL": env.gw.base, "TESSERA_TOKEN": env.pat("alice")}
    out = subprocess.run([str(TESSERA_BIN), "token", "regenerate", token_id, "--output", "json"],
                         env=cli_env, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    body = json.loads(out.stdout)
    new = inbound(body["token"])
    assert new != old and body["replaces"] == token_id and body["name"] == "rotate-me", body
    assert (body["allowed_servers"], body["permissions"]) == (["github"], ["read"]), body

    assert open_session.call_tool(read_tool).status_code == 401, "the old token's open session still works"
    assert RawSession(env.gw, old).open().status_code == 401, "the old token opens new sessions"
    rotated = RawSession(env.gw, new)
    assert rotated.open().status_code == 200
    r = rotated.call_tool(read_tool)
    assert r.status_code == 200 and "github." in r.text, r.text
    r = rotated.call_tool(corpus_tool("github", destructive=True))
    assert r.status_code == 200 and "destructive" in r.text and '"isError":true' in r.text, r.text


def test_disabling_a_user_ends_their_session_within_one_request(env: Env) -> None:
    """carol's open MCP session (a provider token, which the provider keeps honouring) fails on
    its very next request once an admin disables her; new sessions are refused, with a PAT
    too; enabled again, she is back."""
    admin = env.rest("dave")
    carol_pat = env.pat("carol")
    me = env.rest("carol").get("/api/v1/me").json()
    carol_jwt = caller_token(env.idp, env.gw, "carol", env.signin_secret)
    tool = corpus_tool("jira", read_only=True)
    open_session = RawSession(env.gw, carol_jwt)
    assert open_session.open().status_code == 200
    r = open_session.call_tool(tool)
    assert r.status_code == 200 and "jira." in r.text, r.text
    r = admin.post(f"/api/v1/admin/users/{me['id']}/disable")
    assert r.status_code == 200, r.text
    # The very next request of the open session is refused.
    r = open_session.call_tool(tool)
    assert r.status_code in (403, 404), f"the disabled user's open session still works: {r.status_code} {r.text}"
    for bearer in (carol_jwt, carol_pat):
        r = RawSession(env.gw, bearer).open()
        assert r.status_code in (401, 403), f"{r.status_code} {r.text}"
    assert admin.post(f"/api/v1/admin/users/{me['id']}/enable").status_code == 200
    for bearer in (carol_jwt, carol_pat):
        again = RawSession(env.gw, bearer)
        assert again.open().status_code == 200
        r = again.call_tool(tool)
        assert r.status_code == 200 and "jira." in r.text, r.text


def test_admin_routes_are_admin_only_and_the_dashboard_has_real_figures(env: Env) -> None:
    assert env.rest("alice").get("/api/v1/admin/dashboard").status_code == 403
    assert env.rest("alice").get("/api/v1/admin/sessions").status_code == 403
    admin = env.rest("dave")
    d = admin.get("/api/v1/admin/dashboard").json()
    assert d["tool_calls_24h"] > 0, d
    assert 0 <= d["error_rate_24h"] <= 1, d
    assert d["active_users_24h"] >= 2, d
    states = {u["name"]: u["state"] for u in d["upstreams"]}
    assert states.get("github") == "ready", states
    sessions = admin.get("/api/v1/admin/sessions").json()["sessions"]
    assert any(s["user_email"] == "alice@example.com" for s in sessions), sessions
    # Every session here began with a browser sign-in over loopback: each records the TCP peer's
    # address (X-Forwarded-For is never trusted).
    assert all(s["ip"] == "127.0.0.1" for s in sessions), sessions
    # Revoking alice's browser session ends it.
    mine = [s for s in sessions if s["user_email"] == "erin@example.com"]
    if mine:
        assert admin.delete(f"/api/v1/admin/sessions/{mine[0]['id']}").status_code == 200
        r = env.browser("erin").get(f"{env.gw.base}/api/v1/me")
        assert r.status_code == 401, r.text
        env.browsers.pop("erin").close()


def test_an_admin_lists_live_mcp_sessions_and_ends_one(env: Env) -> None:
    """The admin sees alice's two open MCP sessions (client, upstreams, never a session id)
    and ends one: its next request gets 404 and it is not resumed from its sealed id; her
    other session goes on; bob may do neither."""
    alice_jwt = caller_token(env.idp, env.gw, "alice", env.signin_secret)
    tool = corpus_tool("jira", read_only=True)
    kick, keep = RawSession(env.gw, alice_jwt), RawSession(env.gw, alice_jwt)
    assert kick.open("e2e-kick").status_code == 200 and keep.open("e2e-keep").status_code == 200
    assert kick.session_id and "." in kick.session_id, "a sealed (resumable) session id was expected"
    r = kick.call_tool(tool)
    assert r.status_code == 200 and "jira." in r.text, r.text

    admin = env.rest("dave")
    r = admin.get("/api/v1/admin/mcp-sessions")
    assert r.status_code == 200, r.text
    assert kick.session_id not in r.text and keep.session_id not in r.text
    listed = {s["client_name"]: s for s in r.json()["sessions"]}
    mine = listed["e2e-kick"]
    assert mine["handle"] == hashlib.sha256(kick.session_id.encode()).hexdigest()
    assert mine["user_email"] == "alice@example.com" and mine["user_id"], mine
    assert mine["via"] == "jwt" and mine["agent"] is False, mine
    assert mine["front_end"] == "streamable_http" and mine["protocol_version"] == "2025-06-18", mine
    assert mine["upstreams"] == ["jira"], mine
    assert "e2e-keep" in listed

    bob = env.rest("bob")
    assert bob.get("/api/v1/admin/mcp-sessions").status_code == 403
    assert bob.delete(f"/api/v1/admin/mcp-sessions/{mine['handle']}").status_code == 403
    assert kick.call_tool(tool).status_code == 200, "bob's refused request ended the session"

    r = admin.delete(f"/api/v1/admin/mcp-sessions/{mine['handle']}")
    assert r.status_code == 200 and r.json()["message"] == "MCP session ended", r.text
    r = kick.call_tool(tool)
    assert r.status_code == 404, f"the ended session answered (resumed?): {r.status_code} {r.text[:200]}"
    r = keep.call_tool(tool)
    assert r.status_code == 200 and "jira." in r.text, r.text
    after = {s["handle"] for s in admin.get("/api/v1/admin/mcp-sessions").json()["sessions"]}
    assert mine["handle"] not in after and listed["e2e-keep"]["handle"] in after
    assert admin.delete(f"/api/v1/admin/mcp-sessions/{mine['handle']}").status_code == 404
    assert admin.delete(f"/api/v1/admin/mcp-sessions/{kick.session_id}").status_code == 400


def discovery_connects(env: Env, server: str) -> int:
    text = httpx.get(f"{env.gw.base}/metrics", timeout=5).text
    prefix = f'tessera_upstream_discovery_connects_total{{server="{server}"}} '
    return int(next(l for l in text.splitlines() if l.startswith(prefix)).split()[1])


def test_an_admin_restarts_a_shared_server(env: Env) -> None:
    """POST /api/v1/admin/servers/jira/restart: the gateway opens a new discovery session to
    jira, alice's open session loses its jira upstream session (the admin's list shows it) and
    her next call opens a new one; an unknown server is 404, bob is refused."""
    tool = corpus_tool("jira", read_only=True)
    alice = RawSession(env.gw, caller_token(env.idp, env.gw, "alice", env.signin_secret))
    assert alice.open("e2e-restart").status_code == 200
    r = alice.call_tool(tool)
    assert r.status_code == 200 and "jira." in r.text, r.text
    admin = env.rest("dave")

    def upstreams_of_alices_session() -> list[str]:
        listed = admin.get("/api/v1/admin/mcp-sessions").json()["sessions"]
        return next(s["upstreams"] for s in listed if s["client_name"] == "e2e-restart")

    assert upstreams_of_alices_session() == ["jira"]
    before = discovery_connects(env, "jira")
    assert env.rest("bob").post("/api/v1/admin/servers/jira/restart").status_code == 403
    r = admin.post("/api/v1/admin/servers/jira/restart")
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["server"], body["action"], body["success"]) == ("jira", "restart", True), body
    assert body["upstream_sessions_ended"] >= 1, body
    assert upstreams_of_alices_session() == [], "alice's jira upstream session outlived the restart"
    wait_until(lambda: discovery_connects(env, "jira") > before, 10, "a new discovery session to jira")
    wait_until(lambda: httpx.get(f"{env.gw.base}/readyz", timeout=5).json()["upstreams"]["jira"]["state"] == "ready",
               10, "jira ready again")
    r = alice.call_tool(tool)
    assert r.status_code == 200 and "jira." in r.text, r.text
    assert upstreams_of_alices_session() == ["jira"]
    assert admin.post("/api/v1/admin/servers/nope/restart").status_code == 404


# ------------------------------------------------------------------ tool search


async def test_tool_search_finds_the_expected_tool_in_the_top_5(env: Env) -> None:
    total = sum(len(v) for v in CORPUS["servers"].values())
    assert total >= 500 and len(CORPUS["servers"]) >= 6
    hits = top1 = 0
    misses: list[str] = []
    async with mcp(env.gw, env.pat("alice"), path="/mcp/call") as a:
        assert await tool_names(a) == {"retrieve_tools", "call_tool"}
        for q in QUERIES:
            kind, text = await call(a, "retrieve_tools", {"query": q["query"], "limit": 5})
            assert kind == "ok", text
            found = [t["name"] for t in json.loads(text)["tools"]]
            assert json.loads(text)["searched"] >= total
            if q["expected"] in found:
                hits += 1
                top1 += found[0] == q["expected"]
            else:
                misses.append(f"{q['query']!r}: expected {q['expected']}, got {found}")
        rate = hits / len(QUERIES)
        print(f"\ntool search over {total} tools from {len(CORPUS['servers'])} upstreams: top-5 {hits}/{len(QUERIES)} = {rate:.1%}, top-1 {top1}/{len(QUERIES)}")
        for m in misses:
            print("  miss:", m)
        assert rate >= 0.9, f"top-5 hit rate {rate:.1%} < 90%"
        # call_tool reaches the tool found.
        kind, text = await call(a, "call_tool", {"name": QUERIES[0]["expected"], "arguments": {}})
        assert kind == "ok" and QUERIES[0]["expected"].replace(SEP, ".") in text, (kind, text)


async def test_a_search_never_reveals_a_tool_the_caller_cannot_call(env: Env) -> None:
    bob = env.rest("bob")
    assert bob.post("/api/v1/user/servers/kubernetes/enable", json={"enabled": False}).status_code == 200
    try:
        async with mcp(env.gw, env.pat("bob"), path="/mcp/call") as b:
            kind, text = await call(b, "retrieve_tools", {"query": "restart the pods of the payments deployment", "limit": 20})
            names = [t["name"] for t in json.loads(text)["tools"]]
            assert not any(n.startswith(f"kubernetes{SEP}") for n in names), names
            kind, text = await call(b, "call_tool", {"name": "kubernetes__kubectl_rollout_restart", "arguments": {}})
            assert kind != "ok" and "switched off" in text, (kind, text)
    finally:
        bob.post("/api/v1/user/servers/kubernetes/enable", json={"enabled": True})
    token = env.pat("alice", allowed_servers=["github", "slack"], permissions=["read"])
    async with mcp(env.gw, token, path="/mcp/call") as a:
        kind, text = await call(a, "retrieve_tools", {"query": "delete the repository", "limit": 50})
        tools = json.loads(text)["tools"]
        assert tools, "a read-only token still finds read tools"
        for t in tools:
            assert t["name"].split(SEP)[0] in ("github", "slack"), t["name"]
            assert (t.get("annotations") or {}).get("readOnlyHint") is True, t


async def test_the_search_index_follows_list_changed_and_connection_changes(env: Env) -> None:
    """A tool an upstream adds (tools/list_changed) is found by the next search and called
    through call_tool; once removed, or once its server is gone, no search shows it."""
    alice = env.rest("alice")
    r = alice.post("/api/v1/user/servers", json={"name": "finder", "url": env.personal_url})
    assert r.status_code == 201, r.text
    tool = f"quokka_{os.urandom(4).hex()}"
    exposed = f"finder{SEP}{tool}"

    async def found(a: Client, query: str) -> list[str]:
        kind, text = await call(a, "retrieve_tools", {"query": query, "limit": 5})
        assert kind == "ok", text
        return [t["name"] for t in json.loads(text)["tools"]]

    def list_changed(a: Client) -> int:
        return sum(1 for n in a.notifications if getattr(n, "method", "") == "notifications/tools/list_changed")

    try:
        async with mcp(env.gw, env.pat("alice"), path="/mcp/call") as a:
            assert exposed not in await found(a, "quokka")
            assert f"finder{SEP}whoami" in await found(a, "whoami"), "the personal server's tools are not searched"
            seen = list_changed(a)
            kind, text = await call(a, "call_tool", {"name": f"finder{SEP}add_dynamic_tool", "arguments": {"name": tool}})
            assert kind == "ok", text
            await await_until(lambda: list_changed(a) > seen, 10, "tools/list_changed after the upstream added a tool")
            hits = await found(a, "quokka")
            assert hits[:1] == [exposed], f"the added tool is not the top hit: {hits}"
            kind, text = await call(a, "call_tool", {"name": exposed, "arguments": {}})
            assert kind == "ok" and text == f"dynamic {tool}", (kind, text)

            seen = list_changed(a)
            kind, text = await call(a, "call_tool", {"name": f"finder{SEP}remove_dynamic_tool", "arguments": {"name": tool}})
            assert kind == "ok", text
            await await_until(lambda: list_changed(a) > seen, 10, "tools/list_changed after the upstream removed it")
            assert exposed not in await found(a, "quokka"), "a removed tool is still found"
    finally:
        assert alice.delete("/api/v1/user/servers/finder").status_code == 200
    async with mcp(env.gw, env.pat("alice"), path="/mcp/call") as a:
        assert not any(n.startswith(f"finder{SEP}") for n in await found(a, "whoami")), "a deleted server's tools are still found"
