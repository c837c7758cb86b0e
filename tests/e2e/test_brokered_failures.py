"""Brokered traffic when the authorization server misbehaves (issue #6): slow past the timeout,
refusing with invalid_grant, down. Each gives the caller a clear error naming the server and
the reason, the upstream never sees a request without a credential, and another user (with a
cached credential, or a fresh one) and an unbrokered server keep working.

Own provider and gateway (the last test kills the provider). One brokered server per failure,
all in front of the same protected upstream, so no test inherits another's cached credential.
alice is the user whose acquisitions fail; bob is the bystander.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from brokered import (
    TOKEN_EXCHANGE,
    Upstream,
    call,
    caller_token,
    gateway_auth,
    grants,
    inbound_tokens_found_upstream,
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

SLOW, BAD, DOWN, DEMO = "tx_slow", "tx_bad", "tx_down", "demo"
SERVER_TIMEOUT = 5  # seconds: tx_slow's per-server call timeout
SLOW_PROVIDER_MS = 45_000  # longer than the server timeout and the broker's own 30 s exchange timeout


@dataclass
class Env:
    idp: IdP
    gw: Gateway
    up: Upstream
    alice: str
    bob: str


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("brokered-failures")
    logs = tmp / "logs"
    port = free_port()
    signin_secret, broker_secrets, sealing_key = new_secrets()
    reg = ProcessRegistry()
    old_key = os.environ.get("TESSERA_SEALING_KEY")
    os.environ["TESSERA_SEALING_KEY"] = sealing_key
    try:
        with IdP(config=provider_config(port, signin_secret, broker_secrets, []), log_dir=logs) as idp:
            up = start_protected_upstream(reg, idp.issuer, logs, "failures")
            allowed = ["alice@example.com", "bob@example.com"]
            secret = broker_secrets["broker-tx"]
            servers = {
                SLOW: tx_server(idp, up, secret, allowed, timeout=f"{SERVER_TIMEOUT}s"),
                BAD: tx_server(idp, up, secret, allowed),
                DOWN: tx_server(idp, up, secret, allowed),
                DEMO: stdio_lossless(),
            }
            extra = {"auth": gateway_auth(idp, port, signin_secret), "public_url": f"http://127.0.0.1:{port}"}
            gw = start_gateway(reg, tmp / "gw", servers, extra=extra, wait_ready=False, port=port)
            wait_gateway_listening(gw, [DEMO])
            alice = caller_token(idp, gw, "alice", signin_secret)
            bob = caller_token(idp, gw, "bob", signin_secret)
            yield Env(idp, gw, up, alice, bob)
    finally:
        reg.stop_all()
        if old_key is None:
            os.environ.pop("TESSERA_SEALING_KEY", None)
        else:
            os.environ["TESSERA_SEALING_KEY"] = old_key


def assert_clear_error(out: object, server: str, reasons: tuple[str, ...], what: str) -> None:
    text = (out.text + " " + str(out.data or "")).lower()  # type: ignore[attr-defined]
    assert out.kind != "ok", f"{what}: the call succeeded: {out.describe()}"  # type: ignore[attr-defined]
    assert server in text, f"{what}: the error does not name {server}: {out.describe()}"  # type: ignore[attr-defined]
    assert any(r in text for r in reasons), f"{what}: the error gives no reason (one of {reasons}): {out.describe()}"  # type: ignore[attr-defined]


async def bystanders_still_work(env: Env, server: str) -> None:
    """bob's cached credential on `server` still works, and both users' unbrokered calls do."""
    async with sdk_client(env.gw, env.bob) as bob:
        assert (await whoami(bob, server))["sub"] == "bob"
        out = await call(bob, f"{DEMO}{SEP}echo", {"message": "bob"})
        assert out.kind == "ok" and out.text == "bob", out.describe()
    async with sdk_client(env.gw, env.alice) as alice:
        out = await call(alice, f"{DEMO}{SEP}echo", {"message": "alice"})
        assert out.kind == "ok" and out.text == "alice", out.describe()


def assert_upstream_never_saw_alice(env: Env) -> None:
    s = env.up.stats()
    assert s["no_credential"] == 0, f"the upstream received {s['no_credential']} request(s) without a credential"
    assert "alice" not in s["subjects"], f"alice reached the upstream although her acquisition failed: {s['subjects']}"


async def warm_bob(env: Env, server: str) -> None:
    async with sdk_client(env.gw, env.bob) as bob:
        assert (await whoami(bob, server))["sub"] == "bob"


@pytest.mark.timeout(180)  # waits out the broker's exchange timeout (30 s) at least once
async def test_provider_slow_past_the_timeout(env: Env) -> None:
    await warm_bob(env, SLOW)
    env.idp.settings(token_delay_ms=SLOW_PROVIDER_MS)
    try:
        async with sdk_client(env.gw, env.alice) as alice:
            started = time.monotonic()
            out = await call(alice, f"{SLOW}{SEP}whoami")
            took = time.monotonic() - started
        assert_clear_error(out, SLOW, ("timed out", "timeout", "deadline"), "a provider slower than the timeout")
        assert took < 40, f"the error took {took:.1f}s: the acquisition is not bounded by a timeout"
        # docs/ARCHITECTURE.md: every client call is bounded by its deadline (per-server `timeout`)
        # from opening the client's upstream session — which, brokered, starts with the credential.
        assert took < SERVER_TIMEOUT + 5, f"the error took {took:.1f}s: {SLOW}'s call timeout ({SERVER_TIMEOUT}s) does not bound the credential acquisition"
        await bystanders_still_work(env, SLOW)
    finally:
        env.idp.settings(token_delay_ms=0)
    assert_upstream_never_saw_alice(env)


async def test_provider_refuses_with_invalid_grant(env: Env) -> None:
    await warm_bob(env, BAD)
    env.idp.settings(grant_error={"error": "invalid_grant", "sub": "alice"})
    try:
        before = grants(env.idp, TOKEN_EXCHANGE)
        async with sdk_client(env.gw, env.alice) as alice:
            out = await call(alice, f"{BAD}{SEP}whoami")
        assert_clear_error(out, BAD, ("invalid_grant",), "a provider answering invalid_grant")
        after = grants(env.idp, TOKEN_EXCHANGE)
        assert after["error"] - before["error"] >= 1, "the provider was not asked"
        await bystanders_still_work(env, BAD)
        async with sdk_client(env.gw, env.bob) as bob:  # a fresh acquisition for bob still works too
            assert (await whoami(bob, DOWN))["sub"] == "bob"
    finally:
        env.idp.settings(grant_error=None)
    assert_upstream_never_saw_alice(env)


async def test_zz_provider_down(env: Env) -> None:
    """Last: kills the provider (bob's credential for tx_down was cached by the previous test)."""
    async with sdk_client(env.gw, env.bob) as bob:
        assert (await whoami(bob, DOWN))["sub"] == "bob"
    env.idp.close()
    assert not env.idp.alive()
    async with sdk_client(env.gw, env.alice) as alice:
        started = time.monotonic()
        out = await call(alice, f"{DOWN}{SEP}whoami")
        took = time.monotonic() - started
    assert_clear_error(out, DOWN, ("unreachable", "connect", "refused", "unavailable", "could not reach", "error sending request"),
                       "a provider that is down")
    assert took < 40, f"the error took {took:.1f}s"
    await bystanders_still_work(env, DOWN)
    assert_upstream_never_saw_alice(env)


def test_zzz_no_inbound_credential_reached_the_upstream(env: Env) -> None:
    assert env.up.recorded(), "the upstream recorded no request"
    problems = inbound_tokens_found_upstream()
    assert not problems, "\n".join(problems[:20])
