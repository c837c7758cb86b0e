"""A small MCP upstream (official Python SDK, FastMCP) for behaviour
server-everything lacks. Runs over stdio (default), or over HTTP:
`py_upstream.py sse PORT` (GET /sse) or `py_upstream.py streamable-http PORT` (/mcp).

Tools:
  block(key)          blocks until the request is cancelled (or 120 s pass);
                      records "started" and, on cancellation, "cancelled" for key.
  has_started(key)    "true" once block(key) is running.
  was_cancelled(key)  "true" once block(key) saw its cancellation.
  pid()               this process's id (lets a test kill the upstream mid-call).
  whoami()            a constant string, for "other server still works" checks.

State is kept in files under $PY_UPSTREAM_STATE_DIR (default: a temp dir), so it is
correct even if the gateway were to run several copies of this process.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from pathlib import Path

import anyio
from mcp.server.fastmcp import FastMCP

STATE_DIR = Path(os.environ.get("PY_UPSTREAM_STATE_DIR") or tempfile.mkdtemp(prefix="py-upstream-"))
STATE_DIR.mkdir(parents=True, exist_ok=True)

mcp = FastMCP("tessera-e2e-py-upstream")


def _marker(key: str, what: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", key)
    return STATE_DIR / f"{safe}.{what}"


@mcp.tool()
async def block(key: str) -> str:
    """Block until this request is cancelled; record the cancellation."""
    _marker(key, "started").write_text("1")
    try:
        await anyio.sleep(120)
    except anyio.get_cancelled_exc_class():
        _marker(key, "cancelled").write_text("1")
        raise
    return f"block {key} finished without cancellation"


@mcp.tool()
def has_started(key: str) -> str:
    """'true' once block(key) has started."""
    return "true" if _marker(key, "started").exists() else "false"


@mcp.tool()
def was_cancelled(key: str) -> str:
    """'true' once block(key) has seen its cancellation."""
    return "true" if _marker(key, "cancelled").exists() else "false"


@mcp.tool()
def pid() -> str:
    """The process id of this upstream."""
    return str(os.getpid())


@mcp.tool()
def whoami() -> str:
    """A constant answer."""
    return "py-upstream"


if __name__ == "__main__":
    # usage: py_upstream.py [stdio | sse PORT | streamable-http PORT]
    transport = sys.argv[1] if len(sys.argv) > 1 else "stdio"
    if transport != "stdio":
        mcp.settings.host = "127.0.0.1"
        mcp.settings.port = int(sys.argv[2])
        mcp.settings.log_level = "WARNING"
    mcp.run(transport)
