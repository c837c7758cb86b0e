"""Failure handling: an upstream dying mid-call, and graceful shutdown on SIGTERM.

Each test runs its own gateway (and its own upstreams), because it kills things.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from mcp.shared.exceptions import McpError

from conftest import (
    SEP,
    ProcessRegistry,
    await_until,
    http_server,
    mcp_client,
    port_accepts,
    start_everything,
    start_gateway,
    stdio_everything,
    stdio_py,
    text_of,
    wait_until,
)

pytestmark = pytest.mark.anyio


def pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie still answers kill(0); treat it as gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1].startswith("Z")
    except (OSError, IndexError):
        return True


async def expect_call_fails(call: Any, what: str) -> str:
    """Run call(); it must end, within a bound, with a JSON-RPC error that says why."""
    with anyio.fail_after(30):
        try:
            res = await call()
        except McpError as exc:
            assert exc.error.message.strip(), f"{what}: JSON-RPC error without a reason: {exc.error}"
            return exc.error.message
    raise AssertionError(f"{what}: expected a JSON-RPC error, got a result: isError={res.isError} {text_of(res)!r}")


@pytest.mark.parametrize("front", ["mcp", "sse"])
async def test_http_upstream_killed_mid_call(registry: ProcessRegistry, tmp_path: Path, front: str) -> None:
    ev_proc, ev_url = start_everything(registry, "streamableHttp", tmp_path / "logs")
    gw = start_gateway(
        registry,
        tmp_path,
        {"victim": http_server(ev_url, "streamable-http"), "survivor": stdio_everything()},
    )
    progressed = anyio.Event()

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        progressed.set()

    async with mcp_client(gw, front) as s:
        reason: list[str] = []

        async def long_call() -> None:
            reason.append(
                await expect_call_fails(
                    lambda: s.call_tool(
                        f"victim{SEP}trigger-long-running-operation",
                        {"duration": 60, "steps": 120},
                        progress_callback=on_progress,
                    ),
                    "call to killed streamable-HTTP upstream",
                )
            )

        async with anyio.create_task_group() as tg:
            tg.start_soon(long_call)
            with anyio.fail_after(20):
                await progressed.wait()  # the call is running on the upstream
            ev_proc.popen.kill()
        assert reason and reason[0], "the interrupted call got no reason"

        res = await s.call_tool(f"survivor{SEP}echo", {"message": "alive"})
        assert text_of(res) == "Echo: alive"


@pytest.mark.parametrize("front", ["mcp", "sse"])
async def test_stdio_upstream_killed_mid_call(registry: ProcessRegistry, tmp_path: Path, front: str) -> None:
    state = tmp_path / "py-state"
    gw = start_gateway(registry, tmp_path, {"victim": stdio_py(state), "survivor": stdio_everything()})
    key = uuid.uuid4().hex[:8]
    async with mcp_client(gw, front) as s:
        upstream_pid = int(text_of(await s.call_tool(f"victim{SEP}pid", {})))
        reason: list[str] = []

        async def long_call() -> None:
            reason.append(
                await expect_call_fails(
                    lambda: s.call_tool(f"victim{SEP}block", {"key": key}),
                    "call to killed stdio upstream",
                )
            )

        async def started() -> bool:
            return text_of(await s.call_tool(f"victim{SEP}has_started", {"key": key})) == "true"

        async with anyio.create_task_group() as tg:
            tg.start_soon(long_call)
            await await_until(started, 20, "the blocking call to start", interval=0.1)
            os.kill(upstream_pid, signal.SIGKILL)
        assert reason and reason[0], "the interrupted call got no reason"

        res = await s.call_tool(f"survivor{SEP}echo", {"message": "alive"})
        assert text_of(res) == "Echo: alive"

    # The gateway reports the dead upstream on /readyz (it may already be reconnecting).
    body = httpx.get(f"{gw.base}/readyz", timeout=5).json()
    assert body["upstreams"]["survivor"]["state"] == "ready", body


async def test_sigterm_graceful_shutdown(registry: ProcessRegistry, tmp_path: Path) -> None:
    gw = start_gateway(registry, tmp_path, {"py": stdio_py(tmp_path / "py-state"), "ev": stdio_everything()})
    async with mcp_client(gw, "mcp") as s:
        child = int(text_of(await s.call_tool(f"py{SEP}pid", {})))
    gw.proc.popen.send_signal(signal.SIGTERM)
    started = time.monotonic()
    try:
        code = gw.proc.popen.wait(timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail(f"tessera did not exit within 20s of SIGTERM\n{gw.log_tail()}")
    assert code == 0, f"exit code {code} after SIGTERM\n{gw.log_tail()}"
    assert not port_accepts(gw.port), "still listening after exit"
    wait_until(lambda: pid_gone(child), 10, f"stdio upstream {child} to exit with the gateway")
    assert time.monotonic() - started < 20
