"""Scale-out end to end (issue #9): two `tessera serve` replicas, A and B, on one PostgreSQL
database behave as one gateway.

Real peers only: a throwaway PostgreSQL cluster (tests/e2e/pg.py: initdb + pg_ctl in a temporary
directory, as `nobody` when run as root, on a free 127.0.0.1 port, removed afterwards), the test
OpenID provider (tests/testbed/idp), two protected upstreams (upstreams/protected_upstream.py), and
two `tessera serve` processes with the same configuration — the same `storage` URL, sealing key,
`auth`, `public_url` and brokered servers (one RFC 8693 token-exchange server, one `oauth_connect`
server) — except `listen`. Callers are the official Python MCP SDK with a bearer token from the
provider, a hand-written streamable-HTTP client where the test must choose the replica of each
request itself (test 5), and httpx cookie jars as browsers driving the provider's forms.

**One public URL, the test plays the load balancer.** A real deployment puts one `public_url` in
front of every replica, and that is what both replicas get here: `http://127.0.0.1:<front>`, a
port reserved for the purpose on which nothing listens. Everything derived from it is shared —
the redirect URIs registered at the provider (`<front>/auth/callback`, `<front>/api/v1/user/
credentials/<server>/callback`: only those, so a replica that built a redirect URI from its own
listen address would be refused by the provider), the connect links handed to MCP clients, the
Origin that cookie-authenticated writes must carry, and the audience (`auth.resource`) of the
callers' tokens. Every browser request the test makes is addressed explicitly to one replica:
the URL the provider (or a replica) redirects to names `<front>`, and the test sends it to A or
to B — the decision a load balancer would make (`at(replica, url)`). Because nothing listens on
`<front>`, a step that went anywhere without the test choosing the replica would fail loudly.
This is what makes "start on A, finish on B" exact: A builds the provider redirect with the
shared redirect URI, and the provider's redirect back is delivered to B, which completes the flow
it finds in the database with the same redirect URI — the one a real user behind a load balancer
would follow. (Giving each replica its own `public_url` instead would make A's flow call back to
A, and registering per-replica redirect URIs would hide a replica that used the wrong one.)
MCP clients connect to a replica's own `/mcp` directly (the Origin-less SDK needs no front).

What each test proves (users are split so that order does not change what a test sees):
1. alice — a browser session made on A is accepted by B (`GET /api/v1/me` on B with A's cookie
   names the same user); a PAT created on A works on B; an MCP client with a bearer token calls a
   brokered tool through A and through B and the upstream sees alice both times.
2. bob — a connect started on A (A's connect link, A's redirect to the provider, the pending flow
   in PostgreSQL) is finished on B (the provider's callback delivered to B); afterwards A serves
   bob's calls with the connected credential.
3. bob — disconnect on B (`DELETE /api/v1/user/credentials/<server>` on B) and A's next call asks
   to connect (URL elicitation, -32042) within the stated bound: the change travels over
   PostgreSQL LISTEN/NOTIFY, so well under 2 s; asserted < 5 s and printed.
4. dave — 2 × 25 concurrent calls (25 through A, 25 through B, released together) while dave's
   token-exchange credential needs refreshing → exactly one grant at the provider.
6. frank — an admin disables frank on A: frank's open MCP session on B refuses its next request
   once the change has travelled (UserChanged over LISTEN/NOTIFY; asserted < 5 s and printed),
   a new session on B is refused; enabled again on A, B serves him. Before that, a personal
   server frank adds on A is routed for him on B.
7. bob, carol — A's admin list shows bob's MCP session living on B (from B's report, marked
   with B's replica id), and A's dashboard B's upstreams as B sees them; an admin on A ends it (202, gone on B, resumed on neither, then gone
   from A's list), and restarts a server: carol's upstream session to it on B ends within the bound
   and her next call on B opens a new one.
5. erin — SIGKILL of A in the middle of a run of calls: the client that was using A continues on
   B with the same `Mcp-Session-Id` (B resumes A's session from the id's sealed state), every call
   completes (on A before the kill, or retried on B), B keeps serving, and the activity table in
   PostgreSQL holds a record of every completed call — except, by the stated bound, calls A
   answered within its last write batch (50 ms linger) before the SIGKILL. If B answers A's session id with 404, only
   that expectation is marked xfail ("session resumption not landed yet") — after every other
   assertion of the test has passed with a new session on B.

No fixed sleeps: every wait polls a condition with a deadline. Measured times are printed (run
with `-s` or `-rP` to see them).

    tests/e2e/.venv/bin/python -m pytest -q tests/e2e/test_replicas.py
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
import httpx
import pytest

from brokered import (
    JWT_BEARER,
    LOGIN_COOKIE,
    PASSWORDS,
    SESSION_COOKIE,
    SIGNIN_CLIENT,
    TOKEN_EXCHANGE,
    TOKEN_REDIRECT,
    URL_ELICITATION_REQUIRED,
    Outcome,
    Upstream,
    call,
    connect_server,
    gateway_auth,
    grants,
    inbound,
    new_secrets,
    provider_config,
    sdk_client,
    start_protected_upstream,
    tx_server,
    wait_gateway_listening,
    whoami,
)
from conftest import (
    SEP,
    Gateway,
    ProcessRegistry,
    await_until,
    free_port,
    register_secret,
    start_gateway,
    tail,
    wait_until,
)
from idp import IdP, browser_login  # noqa: E402 - brokered puts tests/testbed on sys.path
from pg import Cluster

pytestmark = pytest.mark.anyio

TX, CONNECT = "rep_tx", "rep_connect"
USERS = ("alice", "bob", "carol", "dave", "erin", "frank")
ADMIN = "alice"  # auth.admin_emails: disables and enables frank in test 6
SKEW = 60  # Tessera refreshes an upstream credential expiring within this many seconds
DATABASE = "tessera"
PROPAGATION_BOUND = 5.0  # seconds; LISTEN/NOTIFY should make it well under 2 s
REPORT_BOUND = 15.0  # seconds; each replica reports its MCP sessions every 5 s
MCP_VERSION = "2025-06-18"


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def pg() -> Iterator[Cluster]:
    """A throwaway PostgreSQL cluster with one empty database, stopped and removed at teardown."""
    cluster = Cluster.start()
    try:
        cluster.create_database(DATABASE)
        yield cluster
    finally:
        cluster.stop()


@dataclass
class Env:
    idp: IdP
    pg: Cluster
    front: str  # the shared public_url
    a: Gateway
    b: Gateway
    ups: dict[str, Upstream]
    signin_secret: str
    tokens: dict[str, str] = field(default_factory=dict)
    connected: set[str] = field(default_factory=set)

    def token(self, user: str) -> str:
        """A real access token for `user` addressed to the shared `<front>/mcp`."""
        if user not in self.tokens:
            tokens = self.idp.login(SIGNIN_CLIENT, TOKEN_REDIRECT, user, password=PASSWORDS[user],
                                    client_secret=self.signin_secret, resource=f"{self.front}/mcp",
                                    scope="openid email profile")
            for key in ("refresh_token", "id_token"):
                register_secret(tokens.get(key, ""))
            self.tokens[user] = inbound(tokens["access_token"])
        return self.tokens[user]

    def sql(self, query: str) -> list[list[str]]:
        return self.pg.query(DATABASE, query)

    def user_id(self, subject: str) -> str:
        rows = self.sql(f"SELECT id FROM users WHERE subject = '{subject}'")
        assert len(rows) == 1, f"users rows for {subject}: {rows}"
        return rows[0][0]


def replica_provider_config(front_port: int, signin_secret: str, broker_secrets: dict[str, str]) -> dict[str, Any]:
    """brokered.provider_config with the redirect URIs of the shared public URL only: the
    sign-in client accepts `<front>/auth/callback`, the connect client
    `<front>/api/v1/user/credentials/<server>/callback` — never a replica's own address."""
    config = provider_config(front_port, signin_secret, broker_secrets, [CONNECT])
    front = f"http://127.0.0.1:{front_port}"
    by_id = {c["client_id"]: c for c in config["clients"]}
    assert f"{front}/auth/callback" in by_id[SIGNIN_CLIENT]["redirect_uris"]
    assert by_id["broker-connect"]["redirect_uris"] == [f"{front}/api/v1/user/credentials/{CONNECT}/callback"]
    return config


@pytest.fixture(scope="module")
def env(pg: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("replicas")
    logs = tmp / "logs"
    front_port = free_port()  # reserved for the shared public URL; nothing listens on it
    front = f"http://127.0.0.1:{front_port}"
    signin_secret, broker_secrets, sealing_key = new_secrets()
    storage = pg.url(DATABASE)
    reg = ProcessRegistry()
    old_key = os.environ.get("TESSERA_SEALING_KEY")
    os.environ["TESSERA_SEALING_KEY"] = sealing_key  # the same key on both replicas
    try:
        with IdP(config=replica_provider_config(front_port, signin_secret, broker_secrets), log_dir=logs) as idp:
            ups = {name: start_protected_upstream(reg, idp.issuer, logs, name) for name in (TX, CONNECT)}
            allowed = [f"{u}@example.com" for u in USERS]
            connect = connect_server(idp, ups[CONNECT], broker_secrets["broker-connect"], allowed)
            connect["auth_broker"]["issuer"] = idp.issuer  # revocation endpoint from the metadata
            servers = {
                TX: tx_server(idp, ups[TX], broker_secrets["broker-tx"], allowed),
                CONNECT: connect,
            }
            extra = {
                "storage": storage,
                "public_url": front,
                "auth": {**gateway_auth(idp, front_port, signin_secret), "admin_emails": [f"{ADMIN}@example.com"]},
                # Test 6's personal server is a loopback test upstream.
                "user_server_allowed_networks": ["127.0.0.1/32"],
            }
            # Both at once: they migrate the empty database together (advisory lock).
            a = start_gateway(reg, tmp / "a", servers, extra=extra, wait_ready=False)
            b = start_gateway(reg, tmp / "b", servers, extra=extra, wait_ready=False)
            for gw in (a, b):
                wait_gateway_listening(gw, [])
            for name, gw in (("A", a), ("B", b)):
                assert not (gw.config_path.parent / "data" / "tessera.db").exists(), f"replica {name} opened SQLite, not PostgreSQL"
            e = Env(idp, pg, front, a, b, ups, signin_secret)
            for user in USERS:
                e.token(user)  # every caller's token now, at the provider's default lifetime
            yield e
    finally:
        reg.stop_all()
        if old_key is None:
            os.environ.pop("TESSERA_SEALING_KEY", None)
        else:
            os.environ["TESSERA_SEALING_KEY"] = old_key


# ------------------------------------------------------------------- helpers


def at(env: Env, replica: Gateway, url: str) -> str:
    """`url` (on the shared public URL) delivered to `replica`: the load balancer's choice."""
    assert url.startswith(env.front + "/"), f"expected a URL on the shared public URL {env.front}: {url}"
    return replica.base + url[len(env.front):]


def sign_in_on(env: Env, replica: Gateway, user: str) -> httpx.Client:
    """A browser signed in to Tessera as `user`, /auth/login and /auth/callback both on `replica`."""
    c = httpx.Client(timeout=30)
    r = c.get(f"{replica.base}/auth/login")
    assert r.status_code == 302, f"/auth/login: {r.status_code} {r.text[:300]}"
    if c.cookies.get(LOGIN_COOKIE):
        inbound(c.cookies.get(LOGIN_COOKIE))
    redirect_uri = parse_qs(urlsplit(r.headers["location"]).query).get("redirect_uri", [""])[0]
    assert redirect_uri == f"{env.front}/auth/callback", f"the sign-in redirect URI is not built from the shared public_url: {redirect_uri}"
    callback = browser_login(r.headers["location"], user, PASSWORDS[user], client=c)
    r = c.get(at(env, replica, callback))
    assert r.status_code in (302, 303), f"/auth/callback: {r.status_code} {r.text[:300]}"
    cookie = c.cookies.get(SESSION_COOKIE)
    assert cookie, f"no {SESSION_COOKIE} cookie after sign-in"
    inbound(cookie)
    return c


def connect_link(env: Env, out: Outcome) -> tuple[str, str]:
    """(elicitation id, URL) of a -32042 answer naming Tessera's connect page for CONNECT."""
    assert out.kind == "rpc_error" and out.code == URL_ELICITATION_REQUIRED, (
        f"expected JSON-RPC error {URL_ELICITATION_REQUIRED} (connect first), got {out.describe()}")
    e = out.data["elicitations"][0]
    assert e.get("mode") == "url" and e["url"].startswith(f"{env.front}/api/v1/user/credentials/{CONNECT}/connect"), e
    return e["elicitationId"], e["url"]


def connect_flows(env: Env, user_id: str) -> int:
    return int(env.sql(f"SELECT count(*) FROM connect_flows WHERE user_id = '{user_id}'")[0][0])


async def connect_on(env: Env, user: str, start: Gateway, finish: Gateway) -> None:
    """Connect `user` to CONNECT: the connect link from an MCP client on `start`, opened on
    `start` (which redirects to the provider), the provider's callback delivered to `finish`."""
    async with sdk_client(start, env.token(user)) as client:
        out = await call(client, f"{CONNECT}{SEP}whoami")
        if out.kind == "ok":
            env.connected.add(user)
            return
        _, url = connect_link(env, out)
        browser = await anyio.to_thread.run_sync(sign_in_on, env, start, user)
        try:
            r = await anyio.to_thread.run_sync(lambda: browser.get(at(env, start, url)))
            assert r.status_code in (302, 303), f"connect page on the starting replica: {r.status_code} {r.text[:300]}"
            location = r.headers["location"]
            assert location.startswith(env.idp.discovery["authorization_endpoint"]), location
            callback = await anyio.to_thread.run_sync(lambda: browser_login(location, user, PASSWORDS[user], client=browser))
            r = await anyio.to_thread.run_sync(lambda: browser.get(at(env, finish, callback)))
            assert r.status_code < 400, f"connect callback on the finishing replica: {r.status_code} {r.text[:300]}"
        finally:
            browser.close()
    env.connected.add(user)


def subjects(up: Upstream) -> dict[str, int]:
    return up.stats()["subjects"]


def all_grants(idp: IdP) -> dict[str, dict[str, int]]:
    return {gt: grants(idp, gt) for gt in (TOKEN_EXCHANGE, JWT_BEARER, "authorization_code", "refresh_token")}


# ------------------------------------------------------------------ 1. sign in


async def test_sign_in_on_a_is_used_on_b(env: Env) -> None:
    browser = await anyio.to_thread.run_sync(sign_in_on, env, env.a, "alice")
    try:
        cookie = browser.cookies.get(SESSION_COOKIE)
        me_a = browser.get(f"{env.a.base}/api/v1/me")
        assert me_a.status_code == 200, me_a.text
        # B, with nothing but the cookie A set: the session is in the shared database.
        with httpx.Client(timeout=30) as other:
            assert other.get(f"{env.b.base}/api/v1/me").status_code == 401, "B answered /api/v1/me without a session"
            me_b = other.get(f"{env.b.base}/api/v1/me", cookies={SESSION_COOKIE: cookie})
        assert me_b.status_code == 200, f"B refused the session cookie A set: {me_b.status_code} {me_b.text[:300]}"
        assert me_b.json()["id"] == me_a.json()["id"] and me_b.json()["email"] == "alice@example.com", (me_a.json(), me_b.json())

        # A personal access token made on A (cookie-authenticated, so with the public Origin).
        r = browser.post(f"{env.a.base}/api/v1/user/tokens", json={"name": "e2e-replicas", "expires_in": "1d"},
                         headers={"origin": env.front})
        assert r.status_code == 201, r.text
        pat = inbound(r.json()["token"])
    finally:
        browser.close()

    before = subjects(env.ups[TX]).get("alice", 0)
    async with sdk_client(env.a, env.token("alice")) as on_a, sdk_client(env.b, env.token("alice")) as on_b:
        wa = await whoami(on_a, TX)
        wb = await whoami(on_b, TX)
    for w in (wa, wb):
        assert w["sub"] == "alice" and w["aud"] == env.ups[TX].url and w["client_id"] == "broker-tx", w
    async with sdk_client(env.b, pat) as pat_on_b:
        wp = await whoami(pat_on_b, TX)
    assert wp["sub"] == "alice", f"the PAT made on A reached the upstream through B as {wp['sub']}"
    assert subjects(env.ups[TX]).get("alice", 0) - before >= 3, subjects(env.ups[TX])


# ------------------------------------------------------------ 2. connect A → B


async def test_connect_started_on_a_finishes_on_b(env: Env) -> None:
    user = "bob"
    async with sdk_client(env.a, env.token(user)) as client:
        listed = {t.name for t in (await client.session.list_tools()).tools}  # A caches bob's not-connected catalogue
        assert f"{CONNECT}{SEP}connect" in listed, sorted(listed)
        elicitation_id, url = connect_link(env, await call(client, f"{CONNECT}{SEP}whoami"))
        browser = await anyio.to_thread.run_sync(sign_in_on, env, env.a, user)
        try:
            bob = env.user_id(user)
            assert connect_flows(env, bob) == 0
            # Started on A: A's connect page redirects to the provider and persists the flow.
            r = await anyio.to_thread.run_sync(lambda: browser.get(at(env, env.a, url)))
            assert r.status_code in (302, 303), f"connect page on A: {r.status_code} {r.text[:300]}"
            location = r.headers["location"]
            assert location.startswith(env.idp.discovery["authorization_endpoint"]), location
            redirect_uri = parse_qs(urlsplit(location).query)["redirect_uri"][0]
            assert redirect_uri == f"{env.front}/api/v1/user/credentials/{CONNECT}/callback", redirect_uri
            assert connect_flows(env, bob) == 1, "A did not keep the pending flow in PostgreSQL"
            callback = await anyio.to_thread.run_sync(lambda: browser_login(location, user, PASSWORDS[user], client=browser))
            # Finished on B.
            r = await anyio.to_thread.run_sync(lambda: browser.get(at(env, env.b, callback)))
            assert r.status_code < 400, f"the connect callback on B: {r.status_code} {r.text[:300]}"
        finally:
            browser.close()
        assert connect_flows(env, bob) == 0, "the flow was not taken (single use)"
        rows = env.sql(f"SELECT source FROM credentials WHERE user_id = '{bob}' AND server_key LIKE '{CONNECT}%'")
        assert rows == [["connect"]], f"bob's connected credential in PostgreSQL: {rows}"

        # A serves bob's calls with the credential B obtained — on the same client session.
        w = await whoami(client, CONNECT)
        assert w["sub"] == user and w["client_id"] == "broker-connect" and w["aud"] == env.ups[CONNECT].url, w
        # Not asserted (cross-replica connect events are not part of this test), printed: whether
        # A's client session was told the elicitation completed, and whether A, which listed the
        # not-connected catalogue before, now lists the server's real tools.
        tools = {t.name for t in (await client.session.list_tools()).tools}
        print(f"\n[replicas] connect A→B: elicitation/complete on A's session: {elicitation_id in client.elicitation_completions()}; "
              f"A lists {CONNECT}{SEP}whoami: {f'{CONNECT}{SEP}whoami' in tools} (tools: {sorted(t for t in tools if t.startswith(CONNECT))})")
    async with sdk_client(env.a, env.token(user)) as fresh:
        assert (await whoami(fresh, CONNECT))["sub"] == user
    env.connected.add(user)


# -------------------------------------------------------- 3. disconnect on B


async def test_disconnect_on_b_reaches_a_within_the_bound(env: Env) -> None:
    user = "bob"
    if user not in env.connected:
        await connect_on(env, user, start=env.a, finish=env.b)
    async with sdk_client(env.a, env.token(user)) as on_a:
        assert (await whoami(on_a, CONNECT))["sub"] == user, "A serves bob's connected credential (its cache is warm)"
        browser = await anyio.to_thread.run_sync(sign_in_on, env, env.b, user)
        try:
            r = await anyio.to_thread.run_sync(lambda: browser.delete(f"{env.b.base}/api/v1/user/credentials/{CONNECT}",
                                                                      headers={"origin": env.front}))
            t0 = time.monotonic()
        finally:
            browser.close()
        assert r.status_code == 200, f"DELETE on B: {r.status_code} {r.text[:300]}"

        served_after: list[float] = []
        last: list[Outcome] = []

        async def stopped_serving() -> bool:
            out = await call(on_a, f"{CONNECT}{SEP}whoami")
            last[:] = [out]
            if out.kind == "ok":
                served_after.append(time.monotonic() - t0)
                return False
            return True

        elapsed: float | None = None
        with contextlib.suppress(TimeoutError):
            await await_until(stopped_serving, 15, "A to stop serving bob's disconnected credential", interval=0.02)
            elapsed = time.monotonic() - t0
    # Outside the client's task group, for a readable failure.
    if elapsed is None:
        pytest.fail(f"A still served bob's disconnected credential 15 s after the disconnect on B "
                    f"({len(served_after)} calls served); last answer: {last[0].describe() if last else None}", pytrace=False)
    connect_link(env, last[0])  # A's first answer that is not a success asks bob to connect
    async with sdk_client(env.b, env.token(user)) as on_b:
        connect_link(env, await call(on_b, f"{CONNECT}{SEP}whoami"))  # B itself, of course
    env.connected.discard(user)
    print(f"\n[replicas] disconnect on B → A asks to connect after {elapsed * 1000:.0f} ms "
          f"(A served {len(served_after)} calls with the old credential meanwhile, last at "
          f"{(served_after[-1] * 1000 if served_after else 0):.0f} ms)")
    assert elapsed < PROPAGATION_BOUND, f"the disconnect took {elapsed:.2f}s to reach A (bound {PROPAGATION_BOUND}s)"


# ------------------------------------------------- 4. one refresh for 2 x 25


async def test_fifty_concurrent_calls_on_two_replicas_refresh_once(env: Env) -> None:
    user = "dave"
    env.idp.settings(access_token_ttl=SKEW + 1)  # each new token is inside the refresh window 1 s after issue
    try:
        async with sdk_client(env.a, env.token(user)) as warm_a, sdk_client(env.b, env.token(user)) as warm_b:
            w_a = await whoami(warm_a, TX)
            w_b = await whoami(warm_b, TX)  # B: from the store (or a refresh of its own: not counted)
        expiring = max(w_a["exp"], w_b["exp"])
        await await_until(lambda: time.time() > expiring - SKEW + 1, 10, "dave's credential to come within the refresh window")
        env.idp.settings(access_token_ttl=600)  # the refreshed credential will not need another
        before = all_grants(env.idp)

        results: list[tuple[str, dict[str, Any]]] = []
        go = anyio.Event()
        ready = 0

        async def session(name: str, gw: Gateway) -> None:
            nonlocal ready
            async with sdk_client(gw, env.token(user)) as client:
                ready += 1
                await go.wait()
                async with anyio.create_task_group() as tg:
                    for _ in range(5):
                        async def one() -> None:
                            results.append((name, await whoami(client, TX)))
                        tg.start_soon(one)

        t0 = time.monotonic()
        async with anyio.create_task_group() as tg:
            for name, gw in (("A", env.a), ("B", env.b)):
                for _ in range(5):
                    tg.start_soon(session, name, gw)
            await await_until(lambda: ready == 10, 30, "dave's 10 client sessions (5 on A, 5 on B) to be initialized")
            t0 = time.monotonic()
            go.set()  # 2 x 5 sessions x 5 calls, all at once
        burst = time.monotonic() - t0
    finally:
        env.idp.settings(access_token_ttl=600)
    after = all_grants(env.idp)
    delta = {gt: {k: after[gt][k] - before[gt][k] for k in ("success", "error")} for gt in after}
    per_replica = {n: sum(1 for r, _ in results if r == n) for n in ("A", "B")}
    jtis = {n: sorted({w["jti"] for r, w in results if r == n}) for n in ("A", "B")}
    print(f"\n[replicas] 2 x 25 concurrent calls in {burst * 1000:.0f} ms; grants at the provider: {delta}; "
          f"distinct upstream tokens A={len(jtis['A'])} B={len(jtis['B'])}")
    assert per_replica == {"A": 25, "B": 25}, per_replica
    assert all(w["sub"] == user for _, w in results), [w["sub"] for _, w in results]
    assert all(w["jti"] not in (w_a["jti"], w_b["jti"]) for _, w in results), "a call used the credential that needed refreshing"
    assert delta[TOKEN_EXCHANGE] == {"success": 1, "error": 0}, f"token exchanges for one refresh across two replicas: {delta}"
    others = {gt: d for gt, d in delta.items() if gt != TOKEN_EXCHANGE and d != {"success": 0, "error": 0}}
    assert not others, f"other grants during the refresh: {others}"


# ---------------------------------------------------------- 5. kill A mid-run


class RawMcp:
    """One logical MCP client over streamable HTTP that the test steers between replicas: JSON-RPC
    POSTs with a bearer token and the session id, answers read as JSON or SSE."""

    def __init__(self, http: httpx.AsyncClient, token: str) -> None:
        self.http = http
        self.headers = {
            "authorization": f"Bearer {token}",
            "accept": "application/json, text/event-stream",
            "content-type": "application/json",
        }

    async def initialize(self, base: str) -> str:
        msg = {"jsonrpc": "2.0", "id": 0, "method": "initialize",
               "params": {"protocolVersion": MCP_VERSION, "capabilities": {}, "clientInfo": {"name": "e2e-replicas", "version": "1"}}}
        r = await self.http.post(f"{base}/mcp", json=msg, headers=self.headers)
        assert r.status_code == 200, f"initialize at {base}: {r.status_code} {r.text[:300]}"
        sid = r.headers["mcp-session-id"]
        r = await self.http.post(f"{base}/mcp", json={"jsonrpc": "2.0", "method": "notifications/initialized"},
                                 headers={**self.headers, "mcp-session-id": sid, "mcp-protocol-version": MCP_VERSION})
        assert r.status_code == 202, f"notifications/initialized at {base}: {r.status_code} {r.text[:300]}"
        return sid

    async def post(self, base: str, sid: str, msg: dict[str, Any]) -> httpx.Response:
        return await self.http.post(f"{base}/mcp", json=msg,
                                    headers={**self.headers, "mcp-session-id": sid, "mcp-protocol-version": MCP_VERSION})

    @staticmethod
    def answer(r: httpx.Response, rpc_id: int) -> dict[str, Any]:
        if r.headers.get("content-type", "").startswith("text/event-stream"):
            for block in r.text.split("\n\n"):
                data = "\n".join(line[5:].lstrip() for line in block.splitlines() if line.startswith("data:"))
                if data:
                    msg = json.loads(data)
                    if msg.get("id") == rpc_id:
                        return msg
            raise AssertionError(f"no answer to {rpc_id} in the event stream: {r.text[:300]}")
        return r.json()


# ------------------------------------------------ 6. user settings across replicas
# (before test 5, which kills A)


async def test_user_changes_on_a_reach_b(env: Env) -> None:
    """frank adds a personal server on A and uses it on B; an admin disables him on A and his
    open session on B refuses its next request within the bound; enabled on A, B serves him."""
    async with httpx.AsyncClient(timeout=30) as http:
        frank = RawMcp(http, env.token("frank"))
        sid = await frank.initialize(env.b.base)
        r = await frank.post(env.b.base, sid, {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                                               "params": {"name": f"{TX}{SEP}whoami", "arguments": {}}})
        assert r.status_code == 200 and '"isError":true' not in r.text, r.text[:300]

        # A personal server added on A (frank's own token for the CONNECT upstream as a static
        # header) is routed for frank on B.
        admin_browser = await anyio.to_thread.run_sync(sign_in_on, env, env.a, ADMIN)
        frank_browser = await anyio.to_thread.run_sync(sign_in_on, env, env.a, "frank")
        try:
            up = env.ups[CONNECT]
            own = register_secret(env.idp.mint({"sub": "frank-own", "aud": up.url, "client_id": "frank"}))
            r = frank_browser.post(f"{env.a.base}/api/v1/user/servers", headers={"origin": env.front},
                                   json={"name": "franks", "url": up.url, "headers": {"Authorization": f"Bearer {own}"}})
            if r.status_code == 400 and "resolves to" in r.text:
                pytest.fail(f"the personal server's loopback URL was refused: {r.text}")
            assert r.status_code == 201, r.text
            sid2 = await frank.initialize(env.b.base)

            async def franks_on_b() -> bool:
                r = await frank.post(env.b.base, sid2, {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                                                        "params": {"name": f"franks{SEP}whoami", "arguments": {}}})
                return r.status_code == 200 and "frank-own" in r.text
            await await_until(franks_on_b, PROPAGATION_BOUND, "frank's personal server added on A to be routed on B")

            frank_id = env.user_id("frank")
            started = time.monotonic()
            r = admin_browser.post(f"{env.a.base}/api/v1/admin/users/{frank_id}/disable", headers={"origin": env.front})
            assert r.status_code == 200, r.text

            async def refused_on_b() -> bool:
                r = await frank.post(env.b.base, sid, {"jsonrpc": "2.0", "id": 3, "method": "tools/call",
                                                       "params": {"name": f"{TX}{SEP}whoami", "arguments": {}}})
                return r.status_code in (403, 404)
            await await_until(refused_on_b, PROPAGATION_BOUND, "B to refuse the disabled user's open session")
            print(f"\ndisabled on A → refused on B after {(time.monotonic() - started) * 1000:.0f} ms")
            msg = {"jsonrpc": "2.0", "id": 0, "method": "initialize",
                   "params": {"protocolVersion": MCP_VERSION, "capabilities": {}, "clientInfo": {"name": "e2e", "version": "1"}}}
            r = await http.post(f"{env.b.base}/mcp", json=msg, headers=frank.headers)
            assert r.status_code == 403, f"a new session of a disabled user on B: {r.status_code} {r.text[:200]}"

            r = admin_browser.post(f"{env.a.base}/api/v1/admin/users/{frank_id}/enable", headers={"origin": env.front})
            assert r.status_code == 200, r.text

            async def served_on_b() -> bool:
                r = await http.post(f"{env.b.base}/mcp", json=msg, headers=frank.headers)
                return r.status_code == 200
            await await_until(served_on_b, PROPAGATION_BOUND, "B to serve the re-enabled user")
        finally:
            frank_browser.delete(f"{env.a.base}/api/v1/user/servers/franks", headers={"origin": env.front})
            admin_browser.close()
            frank_browser.close()


async def test_an_admin_on_a_ends_an_mcp_session_that_lives_on_b(env: Env) -> None:
    """A lists B's MCP sessions as B last reported them (marked with B's replica id); ending one
    on A that lives on B (202) makes B drop it within the bound, neither replica resumes it from
    its sealed id, and it leaves A's list with B's next report."""
    async with httpx.AsyncClient(timeout=30) as http:
        bob = RawMcp(http, env.token("bob"))
        sid = await bob.initialize(env.b.base)
        call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": f"{TX}{SEP}whoami", "arguments": {}}}
        r = await bob.post(env.b.base, sid, call)
        assert r.status_code == 200 and '"isError":true' not in r.text, r.text[:300]
        handle = hashlib.sha256(sid.encode()).hexdigest()
        admin = await anyio.to_thread.run_sync(sign_in_on, env, env.a, ADMIN)

        def rows_on_a() -> dict[str, dict[str, Any]]:
            return {s["handle"]: s for s in admin.get(f"{env.a.base}/api/v1/admin/mcp-sessions").json()["sessions"]}

        try:
            on_b = admin.get(f"{env.b.base}/api/v1/admin/mcp-sessions").json()
            assert on_b["replica"] and on_b["replicas"][0]["replica"] == on_b["replica"], on_b
            mine = next(s for s in on_b["sessions"] if s["handle"] == handle)
            assert mine["replica"] == on_b["replica"] and mine["user_id"], mine
            listed_at = time.monotonic()
            row = wait_until(lambda: rows_on_a().get(handle), REPORT_BOUND, "A to list the session that lives on B")
            print(f"\nB's session listed on A after {(time.monotonic() - listed_at) * 1000:.0f} ms")
            assert row["replica"] == on_b["replica"] and row["user_id"] == mine["user_id"], row
            assert row["upstreams"] == [TX], row
            listed = admin.get(f"{env.a.base}/api/v1/admin/mcp-sessions").json()
            assert listed["replica"] != on_b["replica"], listed
            assert on_b["replica"] in {r["replica"] for r in listed["replicas"]}, listed
            dashboard = admin.get(f"{env.a.base}/api/v1/admin/dashboard").json()
            assert dashboard["mcp_sessions"] >= 1, dashboard
            assert dashboard["replicas"][0]["replica"] == listed["replica"], dashboard["replicas"]
            b_seen_from_a = next(r for r in dashboard["replicas"] if r["replica"] == on_b["replica"])
            b_itself = admin.get(f"{env.b.base}/api/v1/admin/dashboard").json()["upstreams"]
            assert {u["name"]: u["state"] for u in b_seen_from_a["upstreams"]} == \
                {u["name"]: u["state"] for u in b_itself}, (b_seen_from_a, b_itself)
            assert TX in {u["name"] for u in b_itself}, b_itself
            started = time.monotonic()
            r = admin.delete(f"{env.a.base}/api/v1/admin/mcp-sessions/{handle}", headers={"origin": env.front})
            assert r.status_code == 202, r.text

            async def ended_on_b() -> bool:
                return (await bob.post(env.b.base, sid, call)).status_code == 404
            await await_until(ended_on_b, PROPAGATION_BOUND, "B to end the session an admin ended on A")
            print(f"\nended on A → gone on B after {(time.monotonic() - started) * 1000:.0f} ms")
            r = await bob.post(env.a.base, sid, call)
            assert r.status_code == 404, f"A resumed the ended session: {r.status_code} {r.text[:200]}"
            r = await bob.post(env.b.base, sid, call)
            assert r.status_code == 404, f"B resumed the ended session: {r.status_code} {r.text[:200]}"
            wait_until(lambda: handle not in rows_on_a(), REPORT_BOUND, "the ended session to leave A's list")
        finally:
            admin.close()


async def test_an_admin_on_a_restarts_a_server_and_b_ends_its_upstream_sessions(env: Env) -> None:
    """An admin's restart of a server on A reaches B: carol's upstream session to it on B ends
    within the bound (B's own list shows it), and her next call on B opens a new one."""
    async with httpx.AsyncClient(timeout=30) as http:
        carol = RawMcp(http, env.token("carol"))
        sid = await carol.initialize(env.b.base)
        call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": f"{TX}{SEP}whoami", "arguments": {}}}
        r = await carol.post(env.b.base, sid, call)
        assert r.status_code == 200 and '"isError":true' not in r.text, r.text[:300]
        handle = hashlib.sha256(sid.encode()).hexdigest()
        admin = await anyio.to_thread.run_sync(sign_in_on, env, env.a, ADMIN)

        def upstreams_on_b() -> list[str]:
            listed = admin.get(f"{env.b.base}/api/v1/admin/mcp-sessions").json()["sessions"]
            return next(s["upstreams"] for s in listed if s["handle"] == handle)

        try:
            assert upstreams_on_b() == [TX]
            started = time.monotonic()
            r = admin.post(f"{env.a.base}/api/v1/admin/servers/{TX}/restart", headers={"origin": env.front})
            assert r.status_code == 200, r.text
            assert r.json()["upstream_sessions_ended"] == 0, "A ended upstream sessions it does not hold"
            wait_until(lambda: upstreams_on_b() == [], PROPAGATION_BOUND, "B to end carol's upstream session")
            print(f"\nrestarted on A → carol's upstream session on B ended after {(time.monotonic() - started) * 1000:.0f} ms")
            r = await carol.post(env.b.base, sid, {**call, "id": 2})
            assert r.status_code == 200 and '"isError":true' not in r.text, r.text[:300]
            seen = json.loads(RawMcp.answer(r, 2)["result"]["content"][0]["text"])
            assert seen["sub"] == "carol", seen
            assert upstreams_on_b() == [TX], "the next call did not open a new upstream session"
        finally:
            admin.close()


@dataclass
class Done:
    rpc_id: int
    replica: str
    sid: str
    at: float  # time.monotonic() when the answer arrived
    attempts: list[str]


# A hard kill may lose the tool-call records of A's last write batch: the 50 ms linger plus the
# time of one batch write on a busy 2-core machine.
KILL_LOSS_BOUND_S = 0.25


async def test_kill_a_mid_run_b_keeps_serving_and_nothing_is_lost(env: Env) -> None:
    user, total, workers, kill_after = "erin", 160, 4, 40
    tool = f"{TX}{SEP}echo"
    token = env.token(user)
    done: dict[int, Done] = {}
    state: dict[str, Any] = {"replica": "A", "killed_at": None, "resume_404": None}
    bases = {"A": env.a.base, "B": env.b.base}
    switch = anyio.Lock()

    async with httpx.AsyncClient(timeout=30) as http, sdk_client(env.b, token) as bystander:
        assert (await whoami(bystander, TX))["sub"] == user, "a client of B, before the kill"
        client = RawMcp(http, token)
        state["sid"] = await client.initialize(env.a.base)
        a_sid = state["sid"]

        async def fail_over(seen_replica: str) -> None:
            async with switch:
                if state["replica"] == seen_replica == "A":
                    state["replica"] = "B"  # the same session id goes to B

        async def new_session_on_b(old_sid: str) -> None:
            async with switch:
                if state["sid"] == old_sid:
                    state["sid"] = await client.initialize(env.b.base)

        async def one(n: int) -> None:
            rpc_id = 1_000_000 + n
            msg = {"jsonrpc": "2.0", "id": rpc_id, "method": "tools/call", "params": {"name": tool, "arguments": {"message": f"{user}-{n}"}}}
            attempts: list[str] = []
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                replica, sid = state["replica"], state["sid"]
                attempts.append(replica)
                try:
                    r = await client.post(bases[replica], sid, msg)
                except httpx.TransportError:
                    await fail_over(replica)
                    continue
                if r.status_code == 404 and replica == "B" and sid == a_sid:
                    if state["resume_404"] is None:
                        state["resume_404"] = r.text[:200]
                    await new_session_on_b(sid)
                    continue
                assert r.status_code == 200, f"call {n} on {replica}: {r.status_code} {r.text[:300]}"
                answer = RawMcp.answer(r, rpc_id)
                assert "result" in answer and not answer["result"].get("isError"), f"call {n} on {replica}: {answer}"
                text = answer["result"]["content"][0]["text"]
                assert text == f"{user}-{n}", f"call {n} answered {text!r}"
                done[rpc_id] = Done(rpc_id, replica, sid, time.monotonic(), attempts)
                if replica == "A" and state["killed_at"] is None and sum(1 for d in done.values() if d.replica == "A") >= kill_after:
                    # In the middle of the run: the other workers' calls are in flight on A.
                    env.a.proc.popen.send_signal(signal.SIGKILL)
                    state["killed_at"] = time.monotonic()
                return
            raise AssertionError(f"call {n} did not complete within 60 s (attempts: {attempts})")

        next_n = 0

        async def worker() -> None:
            nonlocal next_n
            while next_n < total:
                n = next_n
                next_n += 1
                await one(n)

        t0 = time.monotonic()
        async with anyio.create_task_group() as tg:
            for _ in range(workers):
                tg.start_soon(worker)
        run = time.monotonic() - t0
        assert state["killed_at"] is not None, "the run ended before A was killed"
        await anyio.to_thread.run_sync(lambda: env.a.proc.popen.wait(timeout=10))
        assert env.a.proc.popen.returncode == -signal.SIGKILL, f"A was not killed: {env.a.proc.popen.returncode}"
        assert (await whoami(bystander, TX))["sub"] == user, "B's own client, after A's death"
    assert env.b.proc.alive(), f"B died with A:\n{tail(env.b.proc.log)}"
    assert env.b.readyz().get("ready"), env.b.readyz()

    killed_at = state["killed_at"]
    on_a = [d for d in done.values() if d.replica == "A"]
    on_b = [d for d in done.values() if d.replica == "B"]
    retried = [d for d in on_b if "A" in d.attempts]
    print(f"\n[replicas] kill A mid-run: {total} calls in {run:.2f}s, {len(on_a)} on A, {len(on_b)} on B "
          f"({len(retried)} retried on B after failing on A); B resumed A's session: {state['resume_404'] is None}")
    assert len(done) == total, f"{total - len(done)} calls did not complete"
    assert len(on_a) >= kill_after and on_b, (len(on_a), len(on_b))

    # Every completed call has its activity record in PostgreSQL (request_id = <session>:<id>).
    erin = env.user_id(user)
    expected = {f"{d.sid}:{d.rpc_id}": d for d in done.values()}
    found: set[str] = set()

    def recorded() -> bool:
        rows = env.sql("SELECT request_id FROM activity WHERE action = 'tool_call' AND outcome = 'success' "
                       f"AND server = '{TX}' AND user_id = '{erin}'")
        found.update(r[0] for r in rows)
        return set(expected) <= found

    with contextlib.suppress(TimeoutError):
        wait_until(recorded, 15, "an activity record of every completed call", interval=0.2)
    missing = sorted(set(expected) - found, key=lambda k: expected[k].rpc_id)
    # The stated bound (docs/deployment.md): tool-call records linger up to 50 ms in memory to
    # be written in batches, so a hard kill may lose the records of calls A answered just before
    # it — never older ones, and never a credential event (those are written at once).
    lost_in_bound = [k for k in missing if expected[k].replica == "A" and killed_at - expected[k].at <= KILL_LOSS_BOUND_S]
    print(f"[replicas] activity records lost with A's last batch: {len(lost_in_bound)} "
          f"(calls answered on A within {1000 * KILL_LOSS_BOUND_S:.0f} ms before the kill)")
    missing = [k for k in missing if k not in lost_in_bound]
    assert not missing, (
        f"{len(missing)} of {len(expected)} completed calls have no activity record: "
        + ", ".join(f"id {expected[k].rpc_id} on {expected[k].replica}"
                    + (f" answered {1000 * (killed_at - expected[k].at):.0f} ms before the kill" if expected[k].replica == "A" else "")
                    for k in missing[:20]))

    if state["resume_404"] is not None:
        pytest.xfail(f"session resumption not landed yet: B answered A's session id with 404 ({state['resume_404']!r}); "
                     "everything else held with a new session on B")
    assert all(d.sid == a_sid for d in done.values()), "the client kept A's session id on B"

