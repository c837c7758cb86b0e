"""Per-(user, server) upstream sessions of brokered servers (issue #6): the per-user cap answers
with a clear error naming the setting (and leaves other users alone), and an idle session is
ended at the upstream with an HTTP DELETE that carries the user's own credential, after which
the next call opens a new one.

Own provider, protected upstream and gateway, with `max_upstream_sessions_per_user: 2` and
`upstream_idle_timeout: 1s`.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from brokered import (
    Upstream,
    call,
    caller_token,
    gateway_auth,
    new_secrets,
    provider_config,
    sdk_client,
    start_protected_upstream,
    tx_server,
    wait_gateway_listening,
    whoami,
)
from conftest import SEP, Gateway, ProcessRegistry, free_port, start_gateway, stdio_lossless
from idp import IdP  # noqa: E402 - brokered puts tests/testbed on sys.path

pytestmark = pytest.mark.anyio

TX, DEMO = "tx_capped", "demo"
PER_USER = 2


@dataclass
class Env:
    idp: IdP
    gw: Gateway
    up: Upstream
    alice: str
    bob: str


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("brokered-sessions")
    logs = tmp / "logs"
    port = free_port()
    signin_secret, broker_secrets, sealing_key = new_secrets()
    reg = ProcessRegistry()
    old_key = os.environ.get("TESSERA_SEALING_KEY")
    os.environ["TESSERA_SEALING_KEY"] = sealing_key
    try:
        with IdP(config=provider_config(port, signin_secret, broker_secrets, []), log_dir=logs) as idp:
            up = start_protected_upstream(reg, idp.issuer, logs, "sessions")
            allowed = ["alice@example.com", "bob@example.com"]
            servers = {TX: tx_server(idp, up, broker_secrets["broker-tx"], allowed), DEMO: stdio_lossless()}
            extra = {
                "auth": gateway_auth(idp, port, signin_secret),
                "public_url": f"http://127.0.0.1:{port}",
                "max_upstream_sessions_per_user": PER_USER,
                "upstream_idle_timeout": "1s",
            }
            gw = start_gateway(reg, tmp / "gw", servers, extra=extra, wait_ready=False, port=port)
            wait_gateway_listening(gw, [DEMO])
            yield Env(idp, gw, up, caller_token(idp, gw, "alice", signin_secret), caller_token(idp, gw, "bob", signin_secret))
    finally:
        reg.stop_all()
        if old_key is None:
            os.environ.pop("TESSERA_SEALING_KEY", None)
        else:
            os.environ["TESSERA_SEALING_KEY"] = old_key


def bearer_subject(headers: dict[str, str]) -> str | None:
    """The `sub` of the JWT in a recorded request's Authorization header (not verified: the
    upstream did that), or None."""
    value = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
    if not value.lower().startswith("bearer "):
        return None
    try:
        payload = value.split()[1].split(".")[1]
        return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["sub"]
    except (IndexError, ValueError, KeyError):
        return None


async def test_the_per_user_cap_refuses_clearly_and_spares_other_users(env: Env) -> None:
    async with contextlib.AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(sdk_client(env.gw, env.alice)) for _ in range(PER_USER + 1)]
        for client in clients[:PER_USER]:
            assert (await whoami(client, TX))["sub"] == "alice"
        out = await call(clients[PER_USER], f"{TX}{SEP}whoami")
        assert out.kind != "ok", f"a session beyond the per-user cap was opened: {out.describe()}"
        assert "max_upstream_sessions_per_user" in out.text + str(out.data), f"the error does not name the setting: {out.describe()}"
        async with sdk_client(env.gw, env.bob) as bob:
            assert (await whoami(bob, TX))["sub"] == "bob", "another user was refused by alice's cap"
        out = await call(clients[PER_USER], f"{DEMO}{SEP}echo", {"message": "still here"})
        assert out.kind == "ok" and out.text == "still here", f"the capped session lost its unbrokered servers: {out.describe()}"


async def test_an_idle_session_is_deleted_at_the_upstream_with_the_users_credential(env: Env) -> None:
    async with sdk_client(env.gw, env.alice) as alice:
        seen = len(env.up.recorded())
        assert (await whoami(alice, TX))["sub"] == "alice"
        deadline = time.monotonic() + 20
        deletes: list[dict[str, Any]] = []
        while not deletes:
            assert time.monotonic() < deadline, "no DELETE reached the upstream after upstream_idle_timeout (1s)"
            deletes = [r for r in env.up.recorded()[seen:] if r["method"] == "DELETE"]
            if not deletes:
                await _pause()
        assert all(bearer_subject(d["headers"]) == "alice" for d in deletes), f"a DELETE without alice's credential: {deletes}"
        # The client session is still open: the next call opens a new upstream session.
        assert (await whoami(alice, TX))["sub"] == "alice"


async def _pause() -> None:
    """Yield to the event loop between polls of the upstream's record (polling, not a sleep used
    as synchronisation: the loop ends on the observed DELETE or the deadline)."""
    import anyio

    await anyio.sleep(0.1)


async def test_metrics_show_the_broker_at_work(env: Env) -> None:
    import httpx

    async with sdk_client(env.gw, env.alice) as alice:
        for _ in range(3):
            assert (await whoami(alice, TX))["sub"] == "alice"
        text = httpx.get(f"{env.gw.base}/metrics", timeout=10).text
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    assert values.get("tessera_broker_cache_hits_total", 0) >= 3, "calls with a cached credential are not counted as hits"
    assert values.get('tessera_broker_acquisitions_total{mode="token_exchange",outcome="success"}', 0) >= 1, text
    assert values.get('tessera_broker_acquisition_seconds_bucket{le="+Inf"}', 0) >= 1, text
    assert "tessera_brokered_upstream_sessions" in values, text
    assert "tessera_audit_dropped_total" in values, text


async def test_tool_calls_are_in_the_activity_log_without_arguments(env: Env) -> None:
    secret_argument = "do-not-store-this-argument"
    async with sdk_client(env.gw, env.alice) as alice:
        out = await call(alice, f"{DEMO}{SEP}echo", {"message": secret_argument})
        assert out.kind == "ok", out.describe()
        assert (await whoami(alice, TX))["sub"] == "alice"
    deadline = time.monotonic() + 10
    while True:
        rows = tool_call_rows(env.gw)
        tools = {(r["server"], r.get("tool")) for r in rows if r["outcome"] == "success"}
        if {(DEMO, "echo"), (TX, "whoami")} <= tools:
            break
        assert time.monotonic() < deadline, f"tool calls missing from the activity log: {rows}"
        await _pause()
    for r in rows:
        assert r["user_id"], f"a tool call without its user: {r}"
        assert r["request_id"], f"a tool call without a request id: {r}"
        assert r["method"] == "mcp", r
        assert r["outcome"] == "success" or r["reason"], f"a failed call without a reason: {r}"
        assert secret_argument not in json.dumps(r), "an argument was stored"


def tool_call_rows(gw: Gateway) -> list[dict[str, Any]]:
    """Every tool_call row of the gateway's activity table, all columns."""
    import sqlite3

    db = Path(json.loads(gw.config_path.read_text())["data_dir"]) / "tessera.db"
    if not db.exists():
        return []
    con = sqlite3.connect(str(db), timeout=10)
    try:
        con.row_factory = sqlite3.Row
        return [dict(r) for r in con.execute("SELECT * FROM activity WHERE action = 'tool_call' ORDER BY ts")]
    finally:
        con.close()


async def test_a_users_catalogue_is_dropped_when_their_sessions_end(env: Env) -> None:
    import httpx

    def catalogs() -> float:
        for line in httpx.get(f"{env.gw.base}/metrics", timeout=10).text.splitlines():
            if line.startswith("tessera_brokered_user_catalogs "):
                return float(line.split()[1])
        raise AssertionError("tessera_brokered_user_catalogs missing from /metrics")

    async with sdk_client(env.gw, env.bob) as bob:
        await bob.session.list_tools()
        assert catalogs() >= 1, "bob's catalogue of the brokered server was not cached"
    # bob's only session ended (the SDK sends DELETE): the reaper (every second here) drops it.
    deadline = time.monotonic() + 15
    while catalogs() > 0:
        assert time.monotonic() < deadline, "per-user catalogues outlived their users' sessions"
        await _pause()
