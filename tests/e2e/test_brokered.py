"""Brokered MCP traffic end to end (issue #6): each user's calls reach protected upstreams with a
credential obtained for that user — RFC 8693 token exchange, Entra-style on-behalf-of, and a
per-user OAuth connect flow started from inside the MCP client (URL elicitation, -32042) — and
the user's own token stays at the gateway.

Real peers only: the test OpenID provider (tests/testbed/idp), three protected upstreams
(upstreams/protected_upstream.py: JWT via the provider's JWKS, expected audience = its own URL,
every request's headers recorded), an unbrokered stdio upstream (`demo`), and `tessera serve`.
Callers are the official Python MCP SDK with a bearer token from the provider (code + PKCE),
browsers are httpx cookie jars driving the provider's forms.

Tests run in file order and share one gateway; the users are split so that order does not
change what a test sees: alice, bob (identity, catalogue, connect), carol (not allowed), dave
(refresh, revocation), erin (50 concurrent first calls), frank (connect refresh).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from brokered import (
    JWT_BEARER,
    TOKEN_EXCHANGE,
    Client,
    Upstream,
    activity,
    call,
    caller_token,
    complete_connect,
    connect_server,
    connect_url_pattern,
    gateway_auth,
    grants,
    inbound,
    inbound_tokens_found_upstream,
    list_all_tools,
    new_secrets,
    obo_server,
    provider_config,
    sdk_client,
    sign_in_browser,
    start_protected_upstream,
    tool_names,
    tx_server,
    url_elicitation_of,
    wait_gateway_listening,
    whoami,
)
from conftest import (
    SEP,
    TESSERA_BIN,
    Gateway,
    ProcessRegistry,
    await_until,
    free_port,
    spawn,
    start_gateway,
    stdio_lossless,
    wait_until,
)
from idp import IdP  # noqa: E402 - brokered puts tests/testbed on sys.path

pytestmark = pytest.mark.anyio

TX, OBO, CONNECT, DEMO = "whoami_tx", "whoami_obo", "whoami_connect", "demo"
SKEW = 60  # Tessera refreshes an upstream credential expiring within this many seconds


@dataclass
class Env:
    idp: IdP
    gw: Gateway
    reg: ProcessRegistry
    tmp: Path
    ups: dict[str, Upstream]
    signin_secret: str
    tokens: dict[str, str] = field(default_factory=dict)
    connected: set[str] = field(default_factory=set)

    def token(self, user: str) -> str:
        if user not in self.tokens:
            self.tokens[user] = caller_token(self.idp, self.gw, user, self.signin_secret)
        return self.tokens[user]

    @property
    def data_dir(self) -> Path:
        return self.tmp / "gw" / "data"


@dataclass
class Peers:
    idp: IdP
    ups: dict[str, Upstream]
    port: int  # Tessera's, chosen first: the provider's redirect URIs name it
    signin_secret: str
    broker_secrets: dict[str, str]
    tmp: Path


@pytest.fixture(scope="module")
def peers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Peers]:
    """The provider and the protected upstreams (no gateway)."""
    tmp = tmp_path_factory.mktemp("brokered")
    logs = tmp / "logs"
    port = free_port()
    signin_secret, broker_secrets, sealing_key = new_secrets()
    reg = ProcessRegistry()
    old_key = os.environ.get("TESSERA_SEALING_KEY")
    os.environ["TESSERA_SEALING_KEY"] = sealing_key
    try:
        with IdP(config=provider_config(port, signin_secret, broker_secrets, [CONNECT]), log_dir=logs) as idp:
            ups = {name: start_protected_upstream(reg, idp.issuer, logs, name) for name in (TX, OBO, CONNECT)}
            yield Peers(idp, ups, port, signin_secret, broker_secrets, tmp)
    finally:
        reg.stop_all()
        if old_key is None:
            os.environ.pop("TESSERA_SEALING_KEY", None)
        else:
            os.environ["TESSERA_SEALING_KEY"] = old_key


@pytest.fixture(scope="module")
def env(peers: Peers) -> Iterator[Env]:
    """Tessera in front of the three brokered servers and `demo`, with every caller's token."""
    idp, ups, port, tmp = peers.idp, peers.ups, peers.port, peers.tmp
    reg = ProcessRegistry()
    try:
        allowed = [f"{u}@example.com" for u in ("alice", "bob", "dave", "erin", "frank")]
        servers = {
            TX: tx_server(idp, ups[TX], peers.broker_secrets["broker-tx"], allowed),
            OBO: obo_server(idp, ups[OBO], peers.broker_secrets["broker-obo"], allowed),
            CONNECT: connect_server(idp, ups[CONNECT], peers.broker_secrets["broker-connect"], allowed),
            DEMO: stdio_lossless(),
        }
        extra = {"auth": gateway_auth(idp, port, peers.signin_secret), "public_url": f"http://127.0.0.1:{port}"}
        gw = start_gateway(reg, tmp / "gw", servers, extra=extra, wait_ready=False, port=port)
        wait_gateway_listening(gw, [DEMO])
        e = Env(idp, gw, reg, tmp, ups, peers.signin_secret)
        for user in ("alice", "bob", "carol", "dave", "erin", "frank"):
            e.token(user)  # every caller's token now, at the provider's default lifetime
        yield e
    finally:
        reg.stop_all()


def assert_not_ok_naming(out: Any, server: str, what: str) -> None:
    assert out.kind != "ok", f"{what}: the call succeeded: {out.describe()}"
    assert server in out.text or server in json.dumps(out.data or {}), f"{what}: the error does not name {server}: {out.describe()}"


async def connect_user(env: Env, user: str) -> None:
    """Connect `user` to the oauth_connect server (elicitation → browser consent → complete)."""
    if user in env.connected:
        return
    async with sdk_client(env.gw, env.token(user)) as client:
        out = await call(client, f"{CONNECT}{SEP}whoami")
        if out.kind == "ok":
            env.connected.add(user)
            return
        e = url_elicitation_of(out, env.gw, CONNECT)
        browser = await anyio.to_thread.run_sync(sign_in_browser, env.gw, user)
        try:
            r = await anyio.to_thread.run_sync(complete_connect, browser, env.idp, e.url, user)
            assert r.status_code < 400, f"Tessera's connect callback: {r.status_code} {r.text[:300]}"
        finally:
            browser.close()
        await await_until(lambda: e.id in client.elicitation_completions(), 20, "notifications/elicitation/complete")
    env.connected.add(user)


# ------------------------------------------------------------------ the test peers


def test_protected_upstream_refuses_what_it_should(peers: Peers, tmp_path: Path) -> None:
    """Guards every other assertion: the upstream really refuses missing, foreign-audience and
    revoked tokens, accepts a token for its own audience, and records headers."""
    reg = ProcessRegistry()
    try:
        up = start_protected_upstream(reg, peers.idp.issuer, tmp_path, "selftest")
        init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
                "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
        hdrs = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
        r = httpx.post(up.url, json=init, headers=hdrs, timeout=10)
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer "), r.text
        foreign = peers.idp.mint({"sub": "alice", "aud": f"http://127.0.0.1:{peers.port}/mcp", "client_id": "tessera"})
        r = httpx.post(up.url, json=init, headers={**hdrs, "authorization": f"Bearer {foreign}"}, timeout=10)
        assert r.status_code == 401 and 'error="invalid_token"' in r.headers["www-authenticate"], r.text
        own = peers.idp.mint({"sub": "alice", "aud": up.url, "client_id": "broker-tx"})
        r = httpx.post(up.url, json=init, headers={**hdrs, "authorization": f"Bearer {own}"}, timeout=10)
        assert r.status_code == 200, r.text
        assert up.revoke() >= 1
        r = httpx.post(up.url, json=init, headers={**hdrs, "authorization": f"Bearer {own}"}, timeout=10)
        assert r.status_code == 401, "a revoked token is refused"
        s = up.stats()
        assert (s["requests"], s["authorized"], s["rejected"], s["no_credential"]) == (4, 1, 2, 1), s
        assert s["subjects"] == {"alice": 1}
        assert any(own in rec["headers"].get("authorization", "") for rec in up.recorded()), "headers are recorded"
    finally:
        reg.stop_all()


# ------------------------------------------------------- identity per user, policy


async def test_alice_and_bob_concurrently_get_their_own_identity(env: Env) -> None:
    async def as_user(user: str, seen: dict[str, list[dict[str, Any]]]) -> None:
        async with sdk_client(env.gw, env.token(user)) as client:
            for _ in range(3):
                async with anyio.create_task_group() as tg:
                    for server in (TX, OBO):
                        async def one(server: str = server) -> None:
                            seen.setdefault(server, []).append(await whoami(client, server))
                        tg.start_soon(one)

    results: dict[str, dict[str, list[dict[str, Any]]]] = {"alice": {}, "bob": {}}
    async with anyio.create_task_group() as tg:
        for user in results:
            tg.start_soon(as_user, user, results[user])

    for user, seen in results.items():
        assert len(seen[TX]) == 3 and len(seen[OBO]) == 3
        for w in seen[TX]:
            assert w["sub"] == user, f"{user} on {TX} reached the upstream as {w['sub']}"
            assert w["aud"] == env.ups[TX].url and w["client_id"] == "broker-tx", w
            assert w["act"] == {"sub": "broker-tx"}, f"an exchanged token names the gateway as actor: {w}"
        for w in seen[OBO]:
            assert w["sub"] == user, f"{user} on {OBO} reached the upstream as {w['sub']}"
            assert w["aud"] == env.ups[OBO].url and w["azp"] == "broker-obo", w
    for server in (TX, OBO):
        subjects = env.ups[server].stats()["subjects"]
        assert {"alice", "bob"} <= set(subjects), subjects


async def test_carol_is_denied_by_policy_before_any_token_request(env: Env) -> None:
    before = {gt: grants(env.idp, gt) for gt in (TOKEN_EXCHANGE, JWT_BEARER)}
    up_before = {s: env.ups[s].stats()["requests"] for s in (TX, OBO)}
    async with sdk_client(env.gw, env.token("carol")) as client:
        for server in (TX, OBO):
            out = await call(client, f"{server}{SEP}whoami")
            assert_not_ok_naming(out, server, f"carol on {server}")
        demo = await call(client, f"{DEMO}{SEP}echo", {"message": "carol"})
        assert demo.kind == "ok" and demo.text == "carol", f"carol's unbrokered call: {demo.describe()}"
    after = {gt: grants(env.idp, gt) for gt in (TOKEN_EXCHANGE, JWT_BEARER)}
    assert after == before, f"a token request was made for a user the policy denies: {before} -> {after}"
    for s in (TX, OBO):
        st = env.ups[s].stats()
        assert st["requests"] == up_before[s], f"{s} saw a request during carol's denied calls"
        assert "carol" not in st["subjects"]


# ------------------------------------------------------------------- catalogue


async def test_per_user_catalogue(env: Env) -> None:
    """Brokered servers are listed as each user sees them (the upstream lists a tool named after
    the caller); a user not connected to the oauth_connect server sees only `<server>__connect`."""
    async with sdk_client(env.gw, env.token("alice")) as alice, sdk_client(env.gw, env.token("bob")) as bob:
        a, b = await tool_names(alice), await tool_names(bob)
        listed = await list_all_tools(bob)
    for server in (TX, OBO):
        assert {f"{server}{SEP}whoami", f"{server}{SEP}echo", f"{server}{SEP}hello_alice"} <= a, f"alice's tools: {sorted(a)}"
        assert f"{server}{SEP}hello_bob" not in a, "alice's catalogue was discovered with bob's credential"
        assert {f"{server}{SEP}whoami", f"{server}{SEP}hello_bob"} <= b, f"bob's tools: {sorted(b)}"
        assert f"{server}{SEP}hello_alice" not in b, "bob's catalogue was discovered with alice's credential"
    assert f"{DEMO}{SEP}echo" in a and f"{DEMO}{SEP}echo" in b
    bob_connect = sorted(n for n in b if n.startswith(f"{CONNECT}{SEP}"))
    assert bob_connect == [f"{CONNECT}{SEP}connect"], f"bob (not connected) should see only {CONNECT}{SEP}connect: {bob_connect}"
    desc = (listed.get(f"{CONNECT}{SEP}connect").description or "") if f"{CONNECT}{SEP}connect" in listed else ""
    assert "connect" in desc.lower(), f"the connect tool's description should tell the user to call it to connect: {desc!r}"


# ---------------------------------------------------------------- oauth_connect


async def test_client_without_url_elicitation_gets_the_connect_url_as_a_tool_error(env: Env) -> None:
    pattern = connect_url_pattern(env.gw, CONNECT)
    async with sdk_client(env.gw, env.token("bob"), url_elicitation=False) as client:
        for tool in (f"{CONNECT}{SEP}connect", f"{CONNECT}{SEP}whoami"):
            out = await call(client, tool)
            assert out.kind == "tool_error", f"{tool} without URL elicitation: expected isError result, got {out.describe()}"
            assert pattern.search(out.text), f"{tool}: the connect URL is not in the text: {out.text!r}"


async def test_another_browser_user_cannot_open_alices_connect_url(env: Env) -> None:
    async with sdk_client(env.gw, env.token("alice")) as client:
        e = url_elicitation_of(await call(client, f"{CONNECT}{SEP}connect"), env.gw, CONNECT)
    authorize = env.idp.discovery["authorization_endpoint"]
    bob = sign_in_browser(env.gw, "bob")
    auth_requests = env.idp.stats()["requests"].get("GET /auth", 0)  # after bob's own sign-in there
    try:
        r = bob.get(e.url)
        assert r.status_code == 403, f"bob opening alice's connect URL: {r.status_code} {r.headers.get('location', '')} {r.text[:200]}"
    finally:
        bob.close()
    with httpx.Client(timeout=10) as anonymous:
        r = anonymous.get(e.url)
        assert not (r.is_redirect and r.headers.get("location", "").startswith(authorize)), "a browser not signed in was sent to the provider"
    assert env.idp.stats()["requests"].get("GET /auth", 0) == auth_requests, "the provider's authorize endpoint was reached"


async def test_consent_denied_fails_cleanly_and_is_audited(env: Env) -> None:
    async with sdk_client(env.gw, env.token("bob")) as client:
        e = url_elicitation_of(await call(client, f"{CONNECT}{SEP}whoami"), env.gw, CONNECT)
        browser = await anyio.to_thread.run_sync(sign_in_browser, env.gw, "bob")
        try:
            r = await anyio.to_thread.run_sync(lambda: complete_connect(browser, env.idp, e.url, "bob", consent="deny"))
        finally:
            browser.close()
        assert r.status_code < 500, f"Tessera's callback after a denied consent: {r.status_code} {r.text[:300]}"
        again = await call(client, f"{CONNECT}{SEP}whoami")
        assert again.kind != "ok", f"bob denied consent, yet the call succeeded: {again.describe()}"
        if again.kind == "rpc_error":
            url_elicitation_of(again, env.gw, CONNECT)  # still "connect first", well formed
    assert "bob" not in env.ups[CONNECT].stats()["subjects"]

    def denied() -> list[dict[str, Any]]:
        return [r for r in activity(env.data_dir, CONNECT) if r["subject"] == "bob" and (r["outcome"] == "denied" or r["action"] == "connect_deny")]

    rows = wait_until(denied, 15, "an activity record of bob's denied consent")
    assert rows[0]["method"] == "connect", rows


async def test_oauth_connect_from_inside_the_client(env: Env) -> None:
    async with sdk_client(env.gw, env.token("alice")) as client:
        before = await tool_names(client)
        assert f"{CONNECT}{SEP}connect" in before, f"alice is not connected yet: {sorted(before)}"
        e = url_elicitation_of(await call(client, f"{CONNECT}{SEP}whoami"), env.gw, CONNECT)
        assert e.message.strip(), "the elicitation explains what the URL is for"

        browser = await anyio.to_thread.run_sync(sign_in_browser, env.gw, "alice")
        try:
            r = await anyio.to_thread.run_sync(complete_connect, browser, env.idp, e.url, "alice")
        finally:
            browser.close()
        assert r.status_code < 400, f"Tessera's connect callback: {r.status_code} {r.text[:300]}"

        await await_until(lambda: e.id in client.elicitation_completions(), 20,
                          f"notifications/elicitation/complete for {e.id} on the client session that got -32042")
        w = await whoami(client, CONNECT)
        assert w["sub"] == "alice" and w["client_id"] == "broker-connect" and w["aud"] == env.ups[CONNECT].url, w
        after = await tool_names(client)
    env.connected.add("alice")
    assert {f"{CONNECT}{SEP}whoami", f"{CONNECT}{SEP}hello_alice"} <= after, f"alice's tools after connecting: {sorted(after)}"
    assert f"{CONNECT}{SEP}connect" not in after


async def test_a_personal_access_token_caller_uses_the_connected_credential(env: Env) -> None:
    await connect_user(env, "alice")
    browser = sign_in_browser(env.gw, "alice")
    try:
        r = browser.post(f"{env.gw.base}/api/v1/user/tokens", json={"name": "e2e-brokered", "expires_in": "1d"})
        assert r.status_code == 201, r.text
        pat = inbound(r.json()["token"])
    finally:
        browser.close()
    async with sdk_client(env.gw, pat) as client:
        w = await whoami(client, CONNECT)
    assert w["sub"] == "alice", w


# ------------------------------------------------------- lifetime and revocation


async def test_short_lived_upstream_tokens_are_refreshed_without_the_client_noticing(env: Env) -> None:
    tx_before = grants(env.idp, TOKEN_EXCHANGE)
    rejected_before = env.ups[TX].stats()["rejected"]
    env.idp.settings(access_token_ttl=SKEW + 1)
    try:
        async with sdk_client(env.gw, env.token("dave")) as client:
            w1 = await whoami(client, TX)
            await await_until(lambda: time.time() > w1["exp"] - SKEW + 1, 10, "dave's first upstream token to come within the refresh window")
            w2 = await whoami(client, TX)
            assert w2["sub"] == "dave" and w2["jti"] != w1["jti"], "a token inside the refresh window was injected again instead of a new one"
            env.idp.settings(access_token_ttl=600)
            await await_until(lambda: time.time() > w2["exp"] - SKEW + 1, 10, "dave's second upstream token to come within the refresh window")
            w3 = await whoami(client, TX)
            mid = grants(env.idp, TOKEN_EXCHANGE)
            w4 = await whoami(client, TX)
            assert w3["jti"] not in (w1["jti"], w2["jti"]) and w3["exp"] - time.time() > 500, "the long-lived token replaced the short one"
            assert w4["jti"] == w3["jti"], "a fresh credential is reused from the cache"
            assert grants(env.idp, TOKEN_EXCHANGE) == mid, "a cache hit made a token request"
    finally:
        env.idp.settings(access_token_ttl=600)
    tx_after = grants(env.idp, TOKEN_EXCHANGE)
    assert tx_after["success"] - tx_before["success"] >= 3 and tx_after["error"] == tx_before["error"], (tx_before, tx_after)
    assert env.ups[TX].stats()["rejected"] == rejected_before, "the upstream refused a token: it was not refreshed in time"


async def test_connected_credential_is_refreshed_with_its_refresh_token(env: Env) -> None:
    """frank connects while the provider issues 61-second tokens: each is inside Tessera's refresh
    window a second after it is issued, so the next call after that refreshes it (refresh_token
    grant) — no new consent, the client notices nothing."""
    env.idp.settings(access_token_ttl=SKEW + 1)
    try:
        await connect_user(env, "frank")
        interactions = env.idp.stats()["requests"].get("GET /interaction/:uid", 0)
        refresh_before = grants(env.idp, "refresh_token")
        async with sdk_client(env.gw, env.token("frank")) as client:
            w1 = await whoami(client, CONNECT)
            await await_until(lambda: time.time() > w1["exp"] - SKEW + 1, 10, "frank's connected token to come within the refresh window")
            w2 = await whoami(client, CONNECT)
    finally:
        env.idp.settings(access_token_ttl=600)
    assert w2["sub"] == "frank" and w2["jti"] != w1["jti"], "the connected credential was not refreshed"
    refresh_after = grants(env.idp, "refresh_token")
    assert refresh_after["success"] > refresh_before["success"], f"no refresh_token grant: {refresh_before} -> {refresh_after}"
    assert env.idp.stats()["requests"].get("GET /interaction/:uid", 0) == interactions, "refreshing asked the user again"


async def test_revoked_upstream_token_is_reacquired_once(env: Env) -> None:
    up = env.ups[TX]
    async with sdk_client(env.gw, env.token("dave")) as client:
        w1 = await whoami(client, TX)
        assert up.revoke() >= 1
        before, rejected = grants(env.idp, TOKEN_EXCHANGE), up.stats()["rejected"]
        w2 = await whoami(client, TX)
        assert w2["sub"] == "dave" and w2["jti"] != w1["jti"], w2
        after = grants(env.idp, TOKEN_EXCHANGE)
        assert after["success"] - before["success"] == 1, f"one re-acquisition after the upstream's 401: {before} -> {after}"
        assert up.stats()["rejected"] > rejected, "the upstream never refused the revoked token"

        up.reject_all(True)
        try:
            before = grants(env.idp, TOKEN_EXCHANGE)
            out = await call(client, f"{TX}{SEP}whoami")
            assert_not_ok_naming(out, TX, "an upstream refusing every credential")
            assert any(k in out.text.lower() for k in ("401", "unauthorized", "rejected", "refused")), f"no reason in {out.describe()}"
            after = grants(env.idp, TOKEN_EXCHANGE)
            assert after["success"] - before["success"] <= 1, f"more than one re-acquisition for one call: {before} -> {after}"
        finally:
            up.reject_all(False)
        w3 = await whoami(client, TX)
        assert w3["sub"] == "dave"


# ------------------------------------------------------------- single flight, restart


async def test_fifty_concurrent_first_calls_make_one_token_exchange(env: Env) -> None:
    before = grants(env.idp, TOKEN_EXCHANGE)
    subjects: list[str] = []
    go = anyio.Event()
    initialized = 0

    async def session() -> None:
        nonlocal initialized
        async with sdk_client(env.gw, env.token("erin")) as client:
            initialized += 1
            await go.wait()
            async with anyio.create_task_group() as tg:
                for _ in range(10):
                    async def one() -> None:
                        subjects.append((await whoami(client, TX))["sub"])
                    tg.start_soon(one)

    async with anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(session)
        await await_until(lambda: initialized == 5, 30, "erin's 5 client sessions to be initialized")
        go.set()  # 5 sessions x 10 calls, all at once
    after = grants(env.idp, TOKEN_EXCHANGE)
    assert subjects == ["erin"] * 50
    assert (after["success"] - before["success"], after["error"] - before["error"]) == (1, 0), f"token exchanges for 50 first calls: {before} -> {after}"


async def test_restart_keeps_connected_credentials(env: Env) -> None:
    await connect_user(env, "alice")
    interactions = env.idp.stats()["requests"].get("GET /interaction/:uid", 0)
    codes = grants(env.idp, "authorization_code")
    gw = env.gw
    gw.proc.stop()
    proc = env.reg.add(spawn("tessera", [str(TESSERA_BIN), "serve", "--config", str(gw.config_path), "--log-format", "text"],
                             env.tmp / "gw" / "logs", env={"RUST_LOG": os.environ.get("RUST_LOG", "info")}, cwd=env.tmp / "gw"))
    env.gw = Gateway(proc, gw.port, gw.config_path, gw.servers)
    wait_gateway_listening(env.gw, [DEMO])
    async with sdk_client(env.gw, env.token("alice")) as client:
        names = await tool_names(client)
        w = await whoami(client, CONNECT)
        tx = await whoami(client, TX)
    assert w["sub"] == "alice" and tx["sub"] == "alice"
    assert f"{CONNECT}{SEP}whoami" in names and f"{CONNECT}{SEP}connect" not in names, sorted(names)
    assert env.idp.stats()["requests"].get("GET /interaction/:uid", 0) == interactions, "the restart asked alice to consent again"
    assert grants(env.idp, "authorization_code") == codes, "the restart needed a new authorization code"


# ------------------------------------------------------------------- the whole run


def test_zz_no_inbound_credential_reached_an_upstream(env: Env) -> None:
    assert len(env.tokens) >= 5
    recorded = sum(len(up.recorded()) for up in env.ups.values())
    assert recorded > 0, "the upstreams recorded no request"
    problems = inbound_tokens_found_upstream()
    assert not problems, "\n".join(problems[:20])
    for name, up in env.ups.items():
        assert up.stats()["no_credential"] == 0, f"{name} received a request without a credential"
