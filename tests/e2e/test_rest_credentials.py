"""The REST half of issue #7 end to end: credentials, disconnect with RFC 7009 revocation,
servers, users and the activity log, over a real `tessera serve` in front of the test provider
(tests/testbed/idp) and protected upstreams (upstreams/protected_upstream.py).

Users: alice and bob (ordinary users, both allowed on both brokered servers), carol (admin via
`auth.admin_emails`, allowed on the oauth_connect server only). Browsers are httpx cookie jars
signed in through the provider's forms; MCP callers are the official Python SDK with a bearer
token from the provider.

What each test proves:
- test_each_user_sees_only_the_servers_they_may_use: the credentials list is per user and
  policy-filtered (carol is not shown the server whose allow-list excludes her), statuses and
  `connect_path` before connecting, 401 JSON without a session.
- test_alice_connects_and_bob_can_neither_connect_nor_call_back_for_her: bob opening alice's
  connect link → 403, bob finishing alice's flow → 403, bob's DELETE → 404; alice's record is
  unchanged throughout; the status moves connected → expired (provider issues short-lived
  tokens) → connected (the next MCP call refreshes with the refresh token).
- test_disconnect_revokes_at_the_provider_and_the_next_call_asks_to_connect: a cross-origin
  cookie DELETE is refused (403, nothing changed); the same-origin DELETE revokes at the
  provider's revocation endpoint (discovered from `issuer`, counted at /__test/stats), reports
  `revoked`, and the next MCP call answers with the connect elicitation again.
- test_activity_is_per_user_and_admins_see_everything: list / export visibility (bob asking for
  alice's records → 403), an admin sees both users' records and filters by user; cursor pages;
  the SSE stream delivers a new tool call.
- test_admin_users_and_servers: /api/v1/admin/users is admin-only; /api/v1/user/servers lists the
  configured servers with secrets redacted and policy-filtered (WAITS for the binary's
  `ApiState::set_servers` wiring: it fails with an empty list until then).
- test_no_response_body_carried_a_secret: every REST response body of this file is scanned for
  every token, cookie, client secret and key the suite used, and for anything JWT-shaped.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import anyio
import httpx
import pytest

from brokered import (
    Upstream,
    call,
    caller_token,
    complete_connect,
    connect_server,
    gateway_auth,
    inbound,
    new_secrets,
    provider_config,
    sdk_client,
    sign_in_browser,
    start_protected_upstream,
    tx_server,
    url_elicitation_of,
    wait_gateway_listening,
    whoami,
)
from conftest import (
    INBOUND_CREDENTIALS,
    JWT_LIKE,
    SEP,
    USED_SECRETS,
    Gateway,
    ProcessRegistry,
    await_until,
    free_port,
    start_gateway,
    wait_until,
)
from idp import IdP  # noqa: E402 - brokered puts tests/testbed on sys.path

pytestmark = pytest.mark.anyio

CONNECT, TX = "rest_connect", "rest_tx"
REVOCATION = "POST /token/revocation"

# Every REST response of this file: (what, status, body). Scanned at the end.
BODIES: list[tuple[str, int, str]] = []


@dataclass
class Env:
    idp: IdP
    gw: Gateway
    ups: dict[str, Upstream]
    signin_secret: str
    tokens: dict[str, str] = field(default_factory=dict)
    browsers: dict[str, httpx.Client] = field(default_factory=dict)
    ids: dict[str, str] = field(default_factory=dict)

    def token(self, user: str) -> str:
        if user not in self.tokens:
            self.tokens[user] = caller_token(self.idp, self.gw, user, self.signin_secret)
        return self.tokens[user]

    def browser(self, user: str) -> httpx.Client:
        if user not in self.browsers:
            self.browsers[user] = sign_in_browser(self.gw, user)
            me = self.api(user, "GET", "/api/v1/me")
            assert me.status_code == 200, me.text
            self.ids[user] = me.json()["id"]
        return self.browsers[user]

    def api(self, user: str | None, method: str, path: str, *, origin: str | None = "self", **kw: Any) -> httpx.Response:
        """A REST call as `user`'s browser (None: no session). Mutating calls carry the
        gateway's own Origin unless `origin` says otherwise (None: no Origin header)."""
        client = self.browser(user) if user else httpx.Client(timeout=30)
        headers = dict(kw.pop("headers", {}))
        if method in ("POST", "DELETE") and origin is not None:
            headers["origin"] = self.gw.base if origin == "self" else origin
        r = client.request(method, f"{self.gw.base}{path}", headers=headers, **kw)
        BODIES.append((f"{user} {method} {path}", r.status_code, r.text))
        return r

    def credentials(self, user: str) -> dict[str, dict[str, Any]]:
        r = self.api(user, "GET", "/api/v1/user/credentials")
        assert r.status_code == 200, r.text
        return {c["server"]: c for c in r.json()["credentials"]}


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("rest")
    logs = tmp / "logs"
    port = free_port()
    signin_secret, broker_secrets, sealing_key = new_secrets()
    reg = ProcessRegistry()
    old_key = os.environ.get("TESSERA_SEALING_KEY")
    os.environ["TESSERA_SEALING_KEY"] = sealing_key
    try:
        with IdP(config=provider_config(port, signin_secret, broker_secrets, [CONNECT]), log_dir=logs) as idp:
            ups = {name: start_protected_upstream(reg, idp.issuer, logs, name) for name in (CONNECT, TX)}
            connect = connect_server(idp, ups[CONNECT], broker_secrets["broker-connect"],
                                     [f"{u}@example.com" for u in ("alice", "bob", "carol")])
            # No revocation_endpoint: Tessera finds it in the provider's metadata.
            connect["auth_broker"]["issuer"] = idp.issuer
            servers = {
                CONNECT: connect,
                TX: tx_server(idp, ups[TX], broker_secrets["broker-tx"], ["alice@example.com", "bob@example.com"]),
            }
            auth = {**gateway_auth(idp, port, signin_secret), "admin_emails": ["carol@example.com"]}
            extra = {"auth": auth, "public_url": f"http://127.0.0.1:{port}"}
            gw = start_gateway(reg, tmp / "gw", servers, extra=extra, wait_ready=False, port=port)
            wait_gateway_listening(gw, [])
            e = Env(idp, gw, ups, signin_secret)
            for user in ("alice", "bob", "carol"):
                e.token(user)  # now, at the provider's default lifetime (a later test shortens it)
            yield e
            for b in e.browsers.values():
                b.close()
    finally:
        reg.stop_all()
        if old_key is None:
            os.environ.pop("TESSERA_SEALING_KEY", None)
        else:
            os.environ["TESSERA_SEALING_KEY"] = old_key


def poll_status(env: Env, user: str, server: str, want: str, timeout: float) -> dict[str, Any]:
    return wait_until(lambda: (c := env.credentials(user).get(server)) and c["status"] == want and c,
                      timeout, f"{user}'s {server} credential to be {want}", interval=0.2)


def test_each_user_sees_only_the_servers_they_may_use(env: Env) -> None:
    r = env.api(None, "GET", "/api/v1/user/credentials")
    assert r.status_code == 401
    assert set(r.json()) == {"error", "message", "status_code"} and r.json()["status_code"] == 401

    alice = env.credentials("alice")
    assert set(alice) == {CONNECT, TX}, alice
    assert alice[CONNECT]["status"] == "not_connected" and alice[CONNECT]["mode"] == "oauth_connect"
    assert alice[CONNECT]["connect_path"] == f"/api/v1/user/credentials/{CONNECT}/connect"
    assert alice[TX]["mode"] == "token_exchange" and "connect_path" not in alice[TX]

    carol = env.credentials("carol")
    assert set(carol) == {CONNECT}, f"carol is not allowed on {TX} and must not see it: {carol}"


async def test_alice_connects_and_bob_can_neither_connect_nor_call_back_for_her(env: Env) -> None:
    # Short-lived upstream tokens while alice connects, so her status can be seen expiring.
    env.idp.settings(access_token_ttl=8)
    try:
        async with sdk_client(env.gw, env.token("alice")) as client:
            out = await call(client, f"{CONNECT}{SEP}whoami")
            e = url_elicitation_of(out, env.gw, CONNECT)

            # Bob cannot use alice's connect link.
            r = await anyio.to_thread.run_sync(lambda: env.browser("bob").get(e.url))
            BODIES.append(("bob GET alice's connect link", r.status_code, r.text))
            assert r.status_code == 403, f"bob opened alice's connect link: {r.status_code} {r.text[:200]}"

            browser = env.browser("alice")
            r = await anyio.to_thread.run_sync(complete_connect, browser, env.idp, e.url, "alice")
            BODIES.append(("alice connect callback", r.status_code, r.text))
            assert r.status_code == 200 and 'data-outcome="connected"' in r.text, r.text[:300]
            await await_until(lambda: e.id in client.elicitation_completions(), 20, "notifications/elicitation/complete")
        connected = await anyio.to_thread.run_sync(poll_status, env, "alice", CONNECT, "connected", 8)
    finally:
        env.idp.settings(access_token_ttl=600)
    assert connected["obtained_via"] in ("connect", "refresh") and connected["refreshable"] is True
    assert connected["expires_at"] and "connect_path" not in connected
    assert env.credentials("bob")[CONNECT]["status"] == "not_connected", "bob sees alice's connection"

    # Bob cannot finish a flow alice started.
    r = env.api("alice", "GET", f"/api/v1/user/credentials/{CONNECT}/connect", follow_redirects=False)
    assert r.status_code == 302, r.text
    state = parse_qs(urlsplit(r.headers["location"]).query)["state"][0]
    inbound(state)
    r = env.api("bob", "GET", f"/api/v1/user/credentials/{CONNECT}/callback?state={quote(state)}&code=stolen")
    assert r.status_code == 403 and 'data-outcome="user_mismatch"' in r.text, r.text[:300]

    # Bob cannot delete for alice (he deletes only his own: nothing there).
    before = env.credentials("alice")[CONNECT]
    r = env.api("bob", "DELETE", f"/api/v1/user/credentials/{CONNECT}")
    assert r.status_code == 404, r.text
    after = env.credentials("alice")[CONNECT]
    assert after["updated_at"] == before["updated_at"] and after["status"] in ("connected", "expired"), (before, after)

    # connected → expired (no call refreshes it while alice is idle) → connected after a call.
    await anyio.to_thread.run_sync(poll_status, env, "alice", CONNECT, "expired", 30)
    async with sdk_client(env.gw, env.token("alice")) as client:
        w = await whoami(client, CONNECT)
        assert w["sub"] == "alice"
    refreshed = await anyio.to_thread.run_sync(poll_status, env, "alice", CONNECT, "connected", 20)
    assert refreshed["updated_at"] >= before["updated_at"]


async def test_disconnect_revokes_at_the_provider_and_the_next_call_asks_to_connect(env: Env) -> None:
    assert env.credentials("alice")[CONNECT]["status"] == "connected"
    for origin, extra in (("https://evil.example", {}), (None, {"sec-fetch-site": "cross-site"})):
        r = env.api("alice", "DELETE", f"/api/v1/user/credentials/{CONNECT}", origin=origin, headers=extra)
        assert r.status_code == 403, f"cross-origin cookie DELETE: {r.status_code} {r.text}"
        assert r.json()["status_code"] == 403
    assert env.credentials("alice")[CONNECT]["status"] == "connected", "a refused DELETE changed something"

    revocations = env.idp.stats()["requests"].get(REVOCATION, 0)
    r = env.api("alice", "DELETE", f"/api/v1/user/credentials/{CONNECT}", headers={"sec-fetch-site": "same-origin"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["revoked"] is True and body["revocation_error"] is None, body
    assert env.idp.stats()["requests"].get(REVOCATION, 0) - revocations == 2, "refresh and access token revoked at the provider"

    listed = env.credentials("alice")[CONNECT]
    assert listed["status"] == "not_connected" and listed["connect_path"], listed
    async with sdk_client(env.gw, env.token("alice")) as client:
        out = await call(client, f"{CONNECT}{SEP}whoami")
        url_elicitation_of(out, env.gw, CONNECT)

    # The disconnect is audited for alice with its outcome.
    # Audit records are written asynchronously (batched): poll with a deadline.
    rows = wait_until(lambda: env.api("alice", "GET", "/api/v1/activity?type=disconnect").json()["activities"],
                      10, "the disconnect record in alice's activity")
    assert rows[0]["outcome"] == "success" and rows[0]["server"] == CONNECT, rows


async def test_activity_is_per_user_and_admins_see_everything(env: Env) -> None:
    async with sdk_client(env.gw, env.token("bob")) as client:
        assert (await whoami(client, TX))["sub"] == "bob"
    for user in ("alice", "bob", "carol"):
        env.browser(user)
    alice_id, bob_id = env.ids["alice"], env.ids["bob"]

    def rows_of(user: str, query: str = "") -> list[dict[str, Any]]:
        r = env.api(user, "GET", f"/api/v1/activity{query}")
        assert r.status_code == 200, r.text
        return r.json()["activities"]

    mine = wait_until(lambda: (rows := rows_of("alice")) and any(r["type"] == "tool_call" for r in rows) and rows,
                      10, "alice's tool calls in her activity")
    assert {r["user_id"] for r in mine} == {alice_id}, "alice sees someone else's records"
    assert {"connect_finish", "disconnect", "tool_call"} <= {r["type"] for r in mine}, mine
    assert all(r["tool"] for r in mine if r["type"] == "tool_call")

    r = env.api("bob", "GET", f"/api/v1/activity?user={alice_id}")
    assert r.status_code == 403, r.text
    r = env.api("bob", "GET", f"/api/v1/activity/export?user={alice_id}")
    assert r.status_code == 403, r.text
    r = env.api("bob", "GET", "/api/v1/activity/stream?user=" + alice_id)
    assert r.status_code == 403, r.text
    bobs = wait_until(lambda: rows_of("bob"), 10, "bob's records")
    assert {r["user_id"] for r in bobs} == {bob_id}

    everyone = rows_of("carol", "?limit=500")
    assert {alice_id, bob_id} <= {r["user_id"] for r in everyone}, "the admin does not see everyone"
    assert {r["user_id"] for r in rows_of("carol", f"?user={alice_id}&limit=500")} == {alice_id}

    # Cursor pages: the same records as one big page, newest first, no repeats.
    pages: list[str] = []
    query = f"?user={alice_id}&limit=2"
    while True:
        r = env.api("carol", "GET", f"/api/v1/activity{query}").json()
        pages += [row["id"] for row in r["activities"]]
        if not r["next_cursor"]:
            break
        query = f"?user={alice_id}&limit=2&cursor={r['next_cursor']}"
    assert pages == [row["id"] for row in rows_of("carol", f"?user={alice_id}&limit=500")]

    r = env.api("alice", "GET", "/api/v1/activity/export")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in r.text.splitlines() if line]
    assert lines and {line["user_id"] for line in lines} == {alice_id}

    # The live stream: a new tool call of alice arrives as an `activity` event.
    received: list[str] = []
    opened = threading.Event()
    stop = threading.Event()

    def follow() -> None:
        with env.browser("alice").stream("GET", f"{env.gw.base}/api/v1/activity/stream", timeout=30) as s:
            assert s.status_code == 200 and s.headers["content-type"].startswith("text/event-stream")
            opened.set()
            for line in s.iter_lines():
                received.append(line)
                if stop.is_set() or any('"tool_call"' in x for x in received):
                    return

    t = threading.Thread(target=follow, daemon=True)
    t.start()
    assert opened.wait(10), "the activity stream did not open"
    async with sdk_client(env.gw, env.token("alice")) as client:
        out = await call(client, f"{TX}{SEP}whoami")
        assert out.kind == "ok", out.describe()
    await anyio.to_thread.run_sync(lambda: t.join(20))
    stop.set()
    text = "\n".join(received)
    BODIES.append(("alice activity stream", 200, text))
    assert "event: activity" in text and '"tool_call"' in text, text[-500:]
    assert bob_id not in text


def test_admin_users_and_servers(env: Env) -> None:
    r = env.api("alice", "GET", "/api/v1/admin/users")
    assert r.status_code == 403 and r.json()["status_code"] == 403
    r = env.api("carol", "GET", "/api/v1/admin/users")
    assert r.status_code == 200, r.text
    users = {u["email"]: u for u in r.json()["users"]}
    assert users["carol@example.com"]["role"] == "admin" and users["alice@example.com"]["role"] == "user"
    assert all(u["created_at"] and not u["disabled"] for u in users.values())

    r = env.api("alice", "GET", "/api/v1/user/servers")
    assert r.status_code == 200, r.text
    servers = {s["name"]: s for s in r.json()["shared"]}
    assert set(servers) == {CONNECT, TX}, f"the configured servers (needs ApiState::set_servers in the binary): {servers}"
    assert servers[CONNECT]["brokered"] == "oauth_connect" and servers[CONNECT]["url"] == env.ups[CONNECT].url
    carol = {s["name"] for s in env.api("carol", "GET", "/api/v1/user/servers").json()["shared"]}
    assert carol == {CONNECT}, f"carol may not use {TX}: {carol}"


def test_no_response_body_carried_a_secret(env: Env) -> None:
    assert BODIES, "no REST response was recorded"
    secrets = {s for s in USED_SECRETS | INBOUND_CREDENTIALS if len(s) >= 8}
    secrets |= set(env.tokens.values())
    problems = []
    for what, status, body in BODIES:
        if JWT_LIKE.search(body):
            problems.append(f"{what} ({status}): a JWT-shaped string")
        for s in secrets:
            if s in body:
                problems.append(f"{what} ({status}): carries a secret ({s[:6]}…)")
    assert not problems, "\n".join(problems[:20])
