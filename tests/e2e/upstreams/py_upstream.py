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
  roots()             asks the calling client for roots/list; returns the URIs (JSON).
  emit_logs(message)  sends notifications/message at debug, info and warning (only those
                      at or above the level the session set with logging/setLevel).
  logging_level()     the level this session set with logging/setLevel ("unset" if none).
  add_dynamic_tool(name) / remove_dynamic_tool(name)
                      registers / removes a tool `name` (answers "dynamic <name>") and
                      sends notifications/tools/list_changed.
  touch_resource(uri) sends notifications/resources/updated for uri to every session of
                      this process that subscribed to it; returns how many.

$PY_UPSTREAM_SETLEVEL_DELAY (seconds) delays the answer to logging/setLevel.

Prompt greet(name, style); resource e2e://notes/main; template e2e://topics/{topic};
completion/complete for greet's `name` (Alice, Albert, Bob) and the template's `topic`
(python, perl, rust). Capabilities: tools/resources/prompts listChanged, resources
subscribe, logging, completions.

State is kept in files under $PY_UPSTREAM_STATE_DIR (default: a temp dir), so it is
correct even if the gateway were to run several copies of this process.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from pathlib import Path

import json
import weakref
from typing import Any

import anyio
from mcp import types
from mcp.server.fastmcp import Context, FastMCP
from mcp.server.lowlevel.server import NotificationOptions
from pydantic import AnyUrl

STATE_DIR = Path(os.environ.get("PY_UPSTREAM_STATE_DIR") or tempfile.mkdtemp(prefix="py-upstream-"))
STATE_DIR.mkdir(parents=True, exist_ok=True)


class E2EFastMCP(FastMCP):
    """FastMCP whose dynamic tools live in STATE_DIR, so every process of one server
    (the gateway's discovery child and each client's child) agrees on the tool list."""

    async def list_tools(self) -> list[types.Tool]:
        _sync_dynamic_tools()
        return await super().list_tools()

    async def call_tool(self, name: str, arguments: dict[str, Any]) -> Any:
        _sync_dynamic_tools()
        return await super().call_tool(name, arguments)


mcp = E2EFastMCP("tessera-e2e-py-upstream")
_base_capabilities = mcp._mcp_server.get_capabilities


def _capabilities(notification_options: NotificationOptions, experimental: dict[str, Any]) -> types.ServerCapabilities:
    caps = _base_capabilities(NotificationOptions(prompts_changed=True, resources_changed=True, tools_changed=True), experimental)
    if caps.resources is not None:
        caps.resources.subscribe = True
    return caps


mcp._mcp_server.get_capabilities = _capabilities  # type: ignore[method-assign]


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


# ------------------------------------------------------------------ roots


@mcp.tool()
async def roots(ctx: Context) -> str:
    """The calling client's roots (roots/list), as a JSON list of URIs."""
    res = await ctx.session.list_roots()
    return json.dumps([str(r.uri) for r in res.roots])


# ---------------------------------------------------------------- logging

LEVELS = ["debug", "info", "notice", "warning", "error", "critical", "alert", "emergency"]
_session_level: "weakref.WeakKeyDictionary[Any, str]" = weakref.WeakKeyDictionary()


SETLEVEL_DELAY = float(os.environ.get("PY_UPSTREAM_SETLEVEL_DELAY") or 0)


@mcp._mcp_server.set_logging_level()
async def _set_level(level: types.LoggingLevel) -> None:
    if SETLEVEL_DELAY:  # a slow upstream: the level takes effect when the reply is sent
        await anyio.sleep(SETLEVEL_DELAY)
    _session_level[mcp._mcp_server.request_context.session] = level


@mcp.tool()
def logging_level(ctx: Context) -> str:
    """The level this session set with logging/setLevel."""
    return _session_level.get(ctx.session, "unset")


@mcp.tool()
async def emit_logs(message: str, ctx: Context) -> str:
    """Log `<level>: message` at debug, info and warning (filtered by the session's level)."""
    floor = LEVELS.index(_session_level.get(ctx.session, "debug"))
    sent = []
    for level in ("debug", "info", "warning"):
        if LEVELS.index(level) >= floor:
            await ctx.log(level, f"{level}: {message}", logger_name="py-upstream")
            sent.append(level)
    return ",".join(sent)


# ---------------------------------------------------- dynamic tools (list_changed)

_DYN_DIR = STATE_DIR / "dynamic-tools"
_DYN_DIR.mkdir(parents=True, exist_ok=True)
_dynamic: set[str] = set()


def _dynamic_tool(name: str) -> Any:
    def dyn() -> str:
        return f"dynamic {name}"

    return dyn


def _sync_dynamic_tools() -> None:
    wanted = {p.name for p in _DYN_DIR.iterdir()}
    for name in wanted - _dynamic:
        mcp.add_tool(_dynamic_tool(name), name=name, description="added at runtime")
        _dynamic.add(name)
    for name in _dynamic - wanted:
        mcp.remove_tool(name)
        _dynamic.discard(name)


@mcp.tool()
async def add_dynamic_tool(name: str, ctx: Context) -> str:
    """Register tool `name` and send notifications/tools/list_changed."""
    (_DYN_DIR / re.sub(r"[^A-Za-z0-9_-]", "_", name)).write_text("1")
    _sync_dynamic_tools()
    await ctx.session.send_tool_list_changed()
    return f"added {name}"


@mcp.tool()
async def remove_dynamic_tool(name: str, ctx: Context) -> str:
    """Remove tool `name` and send notifications/tools/list_changed."""
    (_DYN_DIR / re.sub(r"[^A-Za-z0-9_-]", "_", name)).unlink(missing_ok=True)
    _sync_dynamic_tools()
    await ctx.session.send_tool_list_changed()
    return f"removed {name}"


# ------------------------------------------------- resources, subscriptions

NOTES_URI = "e2e://notes/main"
_subscribers: dict[str, "weakref.WeakSet[Any]"] = {}


@mcp.resource(NOTES_URI)
def notes() -> str:
    """A static note."""
    return "notes of the py upstream"


@mcp.resource("e2e://topics/{topic}")
def topic(topic: str) -> str:
    """A note about a topic."""
    return f"about {topic}"


@mcp._mcp_server.subscribe_resource()
async def _subscribe(uri: AnyUrl) -> None:
    _subscribers.setdefault(str(uri), weakref.WeakSet()).add(mcp._mcp_server.request_context.session)


@mcp._mcp_server.unsubscribe_resource()
async def _unsubscribe(uri: AnyUrl) -> None:
    _subscribers.get(str(uri), weakref.WeakSet()).discard(mcp._mcp_server.request_context.session)


@mcp.tool()
async def touch_resource(uri: str) -> str:
    """Send notifications/resources/updated to the sessions subscribed to uri."""
    sessions = list(_subscribers.get(uri, ()))
    for session in sessions:
        await session.send_resource_updated(AnyUrl(uri))
    return str(len(sessions))


# ------------------------------------------------------- prompts, completion


@mcp.prompt()
def greet(name: str, style: str = "plain") -> str:
    """A greeting."""
    return f"Hello {name} ({style})"


NAMES = ["Alice", "Albert", "Bob"]
TOPICS = ["python", "perl", "rust"]


@mcp.completion()
async def _complete(ref: Any, argument: types.CompletionArgument, context: Any) -> types.Completion | None:
    if isinstance(ref, types.PromptReference) and ref.name == "greet" and argument.name == "name":
        pool = NAMES
    elif isinstance(ref, types.ResourceTemplateReference) and ref.uri == "e2e://topics/{topic}" and argument.name == "topic":
        pool = TOPICS
    else:
        return None
    values = [v for v in pool if v.lower().startswith(argument.value.lower())]
    return types.Completion(values=values, total=len(values), hasMore=False)


if __name__ == "__main__":
    # usage: py_upstream.py [stdio | sse PORT | streamable-http PORT]
    transport = sys.argv[1] if len(sys.argv) > 1 else "stdio"
    if transport != "stdio":
        mcp.settings.host = "127.0.0.1"
        mcp.settings.port = int(sys.argv[2])
        mcp.settings.log_level = "WARNING"
    mcp.run(transport)
