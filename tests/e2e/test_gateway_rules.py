"""Gateway rules that need their own configuration or kill things: per-server call
timeout, restart of a stdio upstream that died, Origin and MCP-Protocol-Version checks
over real HTTP.
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from mcp.shared.exceptions import McpError

from conftest import (
    SEP,
    Gateway,
    ProcessRegistry,
    await_until,
    http_server,
    mcp_client,
    start_gateway,
    start_py_upstream,
    stdio_py,
    text_of,
    wait_until,
)

pytestmark = pytest.mark.anyio

PROTOCOL = "2025-06-18"
ACCEPT = "application/json, text/event-stream"
TIMEOUT_S = 2.0
ALLOWED_ORIGIN = "https://ok.example"
PUBLIC_URL = "https://mcp.example.com"


SETLEVEL_DELAY = 0.5


def slow_setlevel(server: dict[str, Any]) -> dict[str, Any]:
    return {**server, "env": {**server.get("env", {}), "PY_UPSTREAM_SETLEVEL_DELAY": str(SETLEVEL_DELAY)}}


@pytest.fixture(scope="module")
def timeout_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A gateway whose Python upstreams (stdio and streamable HTTP) have "timeout": "2s",
    with allowed_origins and public_url set. The stdio one answers logging/setLevel
    after SETLEVEL_DELAY seconds."""
    reg = ProcessRegistry()
    try:
        tmp = tmp_path_factory.mktemp("timeout-gateway")
        state = tmp / "py-state"
        _, url = start_py_upstream(reg, "streamable-http", tmp / "logs", state)
        servers = {
            "slowstdio": {**slow_setlevel(stdio_py(state)), "timeout": f"{TIMEOUT_S:g}s"},
            "slowhttp": {**http_server(url, "streamable-http"), "timeout": f"{TIMEOUT_S:g}s"},
        }
        yield start_gateway(reg, tmp, servers, extra={"allowed_origins": [ALLOWED_ORIGIN], "public_url": PUBLIC_URL})
    finally:
        reg.stop_all()


# ------------------------------------------------------------------ per-server timeout


@pytest.mark.parametrize("front", ["mcp", "sse"])
async def test_per_server_timeout(timeout_gateway: Gateway, front: str) -> None:
    """A call to a server with "timeout": "2s" that never answers fails with -32002
    naming the server after about 2 s, and the upstream is sent notifications/cancelled.
    Both servers (stdio and streamable HTTP) are called at the same time."""
    outcome: dict[str, Any] = {}
    keys = {server: f"{server}-{front}-{uuid.uuid4().hex[:8]}" for server in ("slowstdio", "slowhttp")}

    async with mcp_client(timeout_gateway, front) as s:

        async def slow_call(server: str) -> None:
            started = time.monotonic()
            try:
                res = await s.call_tool(f"{server}{SEP}block", {"key": keys[server]})
                outcome[server] = (time.monotonic() - started, res)
            except McpError as exc:
                outcome[server] = (time.monotonic() - started, exc)

        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                for server in keys:
                    tg.start_soon(slow_call, server)

        for server, (elapsed, result) in outcome.items():
            assert isinstance(result, McpError), f"{server}: expected a timeout error, got {result}"
            assert result.error.code == -32002, f"{server}: {result.error}"
            assert server in result.error.message, f"{server}: message does not name the server: {result.error.message!r}"
            assert TIMEOUT_S - 0.2 <= elapsed <= TIMEOUT_S + 3, f"{server}: failed after {elapsed:.2f}s, timeout is {TIMEOUT_S}s"

        for server, key in keys.items():

            async def cancelled(server: str = server, key: str = key) -> bool:
                return text_of(await s.call_tool(f"{server}{SEP}was_cancelled", {"key": key})) == "true"

            await await_until(cancelled, 10, f"{server} to receive notifications/cancelled", interval=0.1)

        # The session and the servers still work.
        for server in keys:
            assert text_of(await s.call_tool(f"{server}{SEP}whoami", {})) == "py-upstream"


# ------------------------------------------------------------------ logging/setLevel


@pytest.mark.parametrize("front", ["mcp", "sse"])
async def test_set_level_in_effect_when_answered(timeout_gateway: Gateway, front: str) -> None:
    """Once logging/setLevel is answered, the client's open upstream sessions have the new
    level: a request sent after the answer must not overtake it (upstream slow to answer)."""
    async with mcp_client(timeout_gateway, front) as s:
        assert text_of(await s.call_tool(f"slowstdio{SEP}logging_level", {})) == "unset"
        started = time.monotonic()
        await s.set_logging_level("error")
        answered = time.monotonic() - started
        level = text_of(await s.call_tool(f"slowstdio{SEP}logging_level", {}))
        assert level == "error", (
            f"level after logging/setLevel was answered ({answered:.2f}s, upstream takes {SETLEVEL_DELAY}s): {level!r}"
        )


# ------------------------------------------------------------------ stdio restart


def children_running(parent: int, needle: str) -> list[int]:
    """PIDs of live processes whose parent is `parent` and whose command line holds needle."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                rest = f.read().rsplit(")", 1)[1].split()
            state, ppid = rest[0], int(rest[1])
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent and state != "Z" and needle in cmdline:
            out.append(int(entry))
    return out


async def test_stdio_upstream_restarted_after_exit(registry: ProcessRegistry, tmp_path: Path) -> None:
    """The gateway's discovery child of a stdio server is killed: /readyz shows the
    server down with an error, then ready again (restarted with backoff), and calls work."""
    gw = start_gateway(registry, tmp_path, {"py": stdio_py(tmp_path / "py-state")})
    children = wait_until(lambda: children_running(gw.proc.pid, "py_upstream.py"), 10, "the stdio child of tessera")
    assert len(children) == 1, f"expected one discovery child before any client session, got {children}"
    victim = children[0]
    os.kill(victim, signal.SIGKILL)

    states: list[str] = []

    def state_is(want: str) -> dict[str, Any] | None:
        up = gw.readyz()["upstreams"]["py"]
        if not states or states[-1] != up["state"]:
            states.append(up["state"])
        return up if up["state"] == want else None

    down = wait_until(lambda: state_is("down"), 10, "/readyz to show the killed stdio server down", interval=0.02)
    assert down.get("error"), f"down without an error: {down}"
    wait_until(lambda: state_is("ready"), 20, f"/readyz to show the server ready again (states: {states})", interval=0.05)
    assert "down" in states, states

    new_children = children_running(gw.proc.pid, "py_upstream.py")
    assert new_children and victim not in new_children, f"no new discovery child: {new_children}"
    async with mcp_client(gw, "mcp") as s:
        assert text_of(await s.call_tool(f"py{SEP}whoami", {})) == "py-upstream"
        names = {t.name for t in (await s.list_tools()).tools}
        assert f"py{SEP}whoami" in names, names


# ----------------------------------------------------------- Origin, protocol version


def init_body() -> bytes:
    return json.dumps(
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {"protocolVersion": PROTOCOL, "capabilities": {}, "clientInfo": {"name": "origin-e2e", "version": "0"}},
        }
    ).encode()


def post_headers(origin: str | None = None, **extra: str) -> dict[str, str]:
    h = {"Accept": ACCEPT, "Content-Type": "application/json"}
    if origin is not None:
        h["Origin"] = origin
    h.update(extra)
    return h


async def sse_status(client: httpx.AsyncClient, url: str, origin: str | None) -> tuple[int, str]:
    """Status of GET /sse (the stream is closed at once when it opens)."""
    headers = {"Accept": "text/event-stream"}
    if origin is not None:
        headers["Origin"] = origin
    async with client.stream("GET", url, headers=headers) as r:
        body = (await r.aread()).decode(errors="replace") if r.status_code != 200 else ""
        return r.status_code, body


@pytest.mark.parametrize("origin", ["https://evil.example", "http://localhost.evil.example", "null"])
async def test_foreign_origin_is_403(gateway: Gateway, origin: str) -> None:
    async with httpx.AsyncClient(timeout=10) as c:
        r = await c.post(gateway.mcp_url, content=init_body(), headers=post_headers(origin))
        assert r.status_code == 403, (r.status_code, r.text[:300])
        status, body = await sse_status(c, gateway.sse_url, origin)
        assert status == 403, (status, body[:300])


@pytest.mark.parametrize("origin", ["http://localhost:1234", "http://127.0.0.1:8080", None])
async def test_loopback_or_no_origin_passes(gateway: Gateway, origin: str | None) -> None:
    async with httpx.AsyncClient(timeout=10) as c:
        r = await c.post(gateway.mcp_url, content=init_body(), headers=post_headers(origin))
        assert r.status_code == 200, (r.status_code, r.text[:300])
        sid = r.headers.get("mcp-session-id")
        if sid:
            await c.delete(gateway.mcp_url, headers={"Mcp-Session-Id": sid, **({"Origin": origin} if origin else {})})
        status, body = await sse_status(c, gateway.sse_url, origin)
        assert status == 200, (status, body[:300])


@pytest.mark.parametrize(
    ("origin", "expected"),
    [(ALLOWED_ORIGIN, 200), (PUBLIC_URL, 200), ("http://localhost:9", 200), ("https://evil.example", 403), ("https://ok.example:8443", 403)],
)
async def test_allowed_origins_and_public_url(timeout_gateway: Gateway, origin: str, expected: int) -> None:
    async with httpx.AsyncClient(timeout=10) as c:
        r = await c.post(timeout_gateway.mcp_url, content=init_body(), headers=post_headers(origin))
        assert r.status_code == expected, (r.status_code, r.text[:300])
        status, body = await sse_status(c, timeout_gateway.sse_url, origin)
        assert status == expected, (status, body[:300])


async def test_unsupported_protocol_version_is_400(gateway: Gateway) -> None:
    async with httpx.AsyncClient(timeout=10) as c:
        r = await c.post(gateway.mcp_url, content=init_body(), headers=post_headers())
        assert r.status_code == 200, r.text[:300]
        sid = r.headers["mcp-session-id"]
        headers = post_headers(**{"Mcp-Session-Id": sid, "MCP-Protocol-Version": PROTOCOL})
        r = await c.post(gateway.mcp_url, content=json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}), headers=headers)
        assert r.status_code in (200, 202), (r.status_code, r.text[:300])
        ping = json.dumps({"jsonrpc": "2.0", "id": 2, "method": "ping"})
        r = await c.post(gateway.mcp_url, content=ping, headers={**headers, "MCP-Protocol-Version": "1999-01-01"})
        assert r.status_code == 400, (r.status_code, r.text[:300])
        assert "1999-01-01" in r.text or "Protocol" in r.text, r.text[:300]
        # The same session with a supported version still works.
        r = await c.post(gateway.mcp_url, content=ping, headers=headers)
        assert r.status_code == 200, (r.status_code, r.text[:300])
        await c.delete(gateway.mcp_url, headers={"Mcp-Session-Id": sid})
