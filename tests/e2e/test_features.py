"""MCP features through the gateway, for every upstream transport (streamable HTTP,
SSE, stdio) on both front ends (/mcp streamable HTTP and legacy /sse).

Upstream: @modelcontextprotocol/server-everything (see package.json for the pinned
version); cancellation uses the Python upstream in upstreams/py_upstream.py.
"""

from __future__ import annotations

import uuid
from typing import Any

import anyio
import pytest
from mcp import types
from mcp.shared.exceptions import McpError
from pydantic import AnyUrl

from conftest import EV, LIST_PAGE_SIZE, LOSSLESS, PY, SEP, Gateway, await_until, mcp_client, text_of

pytestmark = pytest.mark.anyio

UPSTREAMS = ["streamable-http", "sse", "stdio"]
FRONTS = ["mcp", "sse"]

# Tools server-everything always registers, plus those registered only when the client
# (here: the gateway) declares the sampling / elicitation capabilities.
EVERYTHING_TOOLS = {
    "echo",
    "get-sum",
    "trigger-long-running-operation",
    "get-tiny-image",
    "get-structured-content",
}
EVERYTHING_CONDITIONAL_TOOLS = {"trigger-sampling-request", "trigger-elicitation-request"}
PY_TOOLS = {
    "block",
    "has_started",
    "was_cancelled",
    "pid",
    "whoami",
    "roots",
    "logging_level",
    "emit_logs",
    "add_dynamic_tool",
    "remove_dynamic_tool",
    "touch_resource",
}


def tool(server: str, name: str) -> str:
    return f"{server}{SEP}{name}"


async def all_tools(session: Any) -> tuple[list[types.Tool], int]:
    tools: list[types.Tool] = []
    pages = 0
    cursor = None
    while True:
        res = await session.list_tools(cursor=cursor)
        pages += 1
        assert len(res.tools) <= LIST_PAGE_SIZE, f"page {pages} has {len(res.tools)} tools, page size is {LIST_PAGE_SIZE}"
        tools.extend(res.tools)
        cursor = res.nextCursor
        if not cursor:
            return tools, pages
        assert pages < 100, "tools/list pagination does not terminate"


async def all_resources(session: Any) -> list[types.Resource]:
    out: list[types.Resource] = []
    cursor = None
    for _ in range(100):
        res = await session.list_resources(cursor=cursor)
        out.extend(res.resources)
        cursor = res.nextCursor
        if not cursor:
            return out
    raise AssertionError("resources/list pagination does not terminate")


async def all_templates(session: Any) -> list[types.ResourceTemplate]:
    out: list[types.ResourceTemplate] = []
    cursor = None
    for _ in range(100):
        res = await session.list_resource_templates(cursor=cursor)
        out.extend(res.resourceTemplates)
        cursor = res.nextCursor
        if not cursor:
            return out
    raise AssertionError("resources/templates/list pagination does not terminate")


async def all_prompts(session: Any) -> list[types.Prompt]:
    out: list[types.Prompt] = []
    cursor = None
    for _ in range(100):
        res = await session.list_prompts(cursor=cursor)
        out.extend(res.prompts)
        cursor = res.nextCursor
        if not cursor:
            return out
    raise AssertionError("prompts/list pagination does not terminate")


# ------------------------------------------------------------------------ basics


@pytest.mark.parametrize("front", FRONTS)
@pytest.mark.parametrize("upstream", UPSTREAMS)
async def test_list_tools_paginated(gateway: Gateway, upstream: str, front: str) -> None:
    async with mcp_client(gateway, front) as s:
        tools, pages = await all_tools(s)
    names = [t.name for t in tools]
    assert len(names) == len(set(names)), f"duplicate tools across pages: {sorted(n for n in names if names.count(n) > 1)}"
    assert pages > 1, f"{len(names)} tools with list_page_size={LIST_PAGE_SIZE} should need several pages"
    for server in gateway.servers:
        assert any(n.startswith(server + SEP) for n in names), f"no tool of {server!r} in {names}"
    ev, py = EV[upstream], PY[upstream]
    expected = {tool(ev, t) for t in EVERYTHING_TOOLS | EVERYTHING_CONDITIONAL_TOOLS} | {tool(py, t) for t in PY_TOOLS}
    missing = expected - set(names)
    assert not missing, f"missing tools: {sorted(missing)}; got {sorted(names)}"
    assert all(SEP in n for n in names), f"unprefixed tool names: {[n for n in names if SEP not in n]}"


@pytest.mark.parametrize("front", FRONTS)
@pytest.mark.parametrize("upstream", UPSTREAMS)
async def test_call_tool(gateway: Gateway, upstream: str, front: str) -> None:
    ev = EV[upstream]
    msg = f"hello {upstream} via {front} {uuid.uuid4().hex[:8]}"
    async with mcp_client(gateway, front) as s:
        res = await s.call_tool(tool(ev, "echo"), {"message": msg})
        assert not res.isError, text_of(res)
        assert text_of(res) == f"Echo: {msg}"
        res = await s.call_tool(tool(ev, "get-sum"), {"a": 19, "b": 23})
        assert not res.isError, text_of(res)
        assert "42" in text_of(res)
        res = await s.call_tool(tool(PY[upstream], "whoami"), {})
        assert text_of(res) == "py-upstream"


@pytest.mark.parametrize("front", FRONTS)
@pytest.mark.parametrize("upstream", UPSTREAMS)
async def test_read_resource(gateway: Gateway, upstream: str, front: str) -> None:
    ev = EV[upstream]
    prefix = f"tessera://{ev}/"
    async with mcp_client(gateway, front) as s:
        resources = await all_resources(s)
        mine = [r for r in resources if str(r.uri).startswith(prefix + "demo://resource/static/document/")]
        assert mine, f"no static document resource of {ev} in {[str(r.uri) for r in resources]}"
        doc = mine[0]
        res = await s.read_resource(doc.uri)
        assert res.contents, "empty resources/read result"
        assert getattr(res.contents[0], "text", ""), f"static document {doc.uri} has no text"

        templates = await all_templates(s)
        tmpl = {t.uriTemplate for t in templates}
        want = prefix + "demo://resource/dynamic/text/{resourceId}"
        assert want in tmpl, f"{want} not in {sorted(tmpl)}"

        res = await s.read_resource(AnyUrl(prefix + "demo://resource/dynamic/text/7"))
        assert res.contents
        assert res.contents[0].text.startswith("Resource 7: This is a plaintext resource"), res.contents[0]


@pytest.mark.parametrize("front", FRONTS)
@pytest.mark.parametrize("upstream", UPSTREAMS)
async def test_get_prompt(gateway: Gateway, upstream: str, front: str) -> None:
    ev = EV[upstream]
    async with mcp_client(gateway, front) as s:
        names = {p.name for p in await all_prompts(s)}
        assert {tool(ev, "simple-prompt"), tool(ev, "args-prompt")} <= names, sorted(names)
        res = await s.get_prompt(tool(ev, "simple-prompt"))
        assert text_of(res) == "This is a simple prompt without arguments."
        res = await s.get_prompt(tool(ev, "args-prompt"), {"city": "Lyon", "state": "ARA"})
        assert text_of(res) == "What's weather in Lyon, ARA?"


# --------------------------------------------------------- server -> client flows


@pytest.mark.parametrize("front", FRONTS)
@pytest.mark.parametrize("upstream", UPSTREAMS)
async def test_progress_notifications(gateway: Gateway, upstream: str, front: str) -> None:
    seen: list[tuple[float, float | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total))

    async with mcp_client(gateway, front) as s:
        res = await s.call_tool(
            tool(EV[upstream], "trigger-long-running-operation"),
            {"duration": 0.6, "steps": 3},
            progress_callback=on_progress,
        )
    assert not res.isError, text_of(res)
    assert "Long running operation completed" in text_of(res)
    assert seen == [(1, 3), (2, 3), (3, 3)], f"progress notifications received: {seen}"


@pytest.mark.parametrize("front", FRONTS)
@pytest.mark.parametrize("upstream", UPSTREAMS)
async def test_sampling(gateway: Gateway, upstream: str, front: str) -> None:
    token = uuid.uuid4().hex
    requests: list[types.CreateMessageRequestParams] = []

    async def sampling(context: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        requests.append(params)
        return types.CreateMessageResult(
            role="assistant",
            content=types.TextContent(type="text", text=f"sampled-{token}"),
            model="e2e-model",
            stopReason="endTurn",
        )

    async with mcp_client(gateway, front, sampling_callback=sampling) as s:
        res = await s.call_tool(tool(EV[upstream], "trigger-sampling-request"), {"prompt": f"prompt-{token}", "maxTokens": 50})
    assert not res.isError, text_of(res)
    assert len(requests) == 1, f"sampling callback called {len(requests)} times"
    assert f"prompt-{token}" in requests[0].messages[0].content.text
    assert f"sampled-{token}" in text_of(res), text_of(res)
    assert "e2e-model" in text_of(res), text_of(res)


@pytest.mark.parametrize("front", FRONTS)
@pytest.mark.parametrize("upstream", UPSTREAMS)
async def test_elicitation(gateway: Gateway, upstream: str, front: str) -> None:
    name = f"Ada {uuid.uuid4().hex[:8]}"
    requests: list[Any] = []

    async def elicitation(context: Any, params: Any) -> types.ElicitResult:
        requests.append(params)
        return types.ElicitResult(action="accept", content={"name": name, "check": True, "integer": 7})

    async with mcp_client(gateway, front, elicitation_callback=elicitation) as s:
        res = await s.call_tool(tool(EV[upstream], "trigger-elicitation-request"), {})
    assert not res.isError, text_of(res)
    assert len(requests) == 1, f"elicitation callback called {len(requests)} times"
    assert "name" in requests[0].requestedSchema["properties"]
    out = text_of(res)
    assert f"- Name: {name}" in out, out
    assert "- Favorite Integer: 7" in out, out


# ------------------------------------------------------------------ cancellation


@pytest.mark.parametrize("front", FRONTS)
@pytest.mark.parametrize("upstream", UPSTREAMS)
async def test_cancel_long_call(gateway: Gateway, upstream: str, front: str) -> None:
    py = PY[upstream]
    key = f"{upstream}-{front}-{uuid.uuid4().hex[:8]}"
    request_id: list[int] = []
    outcome: list[Any] = []

    async with mcp_client(gateway, front) as s:

        async def blocking_call() -> None:
            # send_request takes the id synchronously, before its first await
            request_id.append(s._request_id)
            try:
                outcome.append(await s.call_tool(tool(py, "block"), {"key": key}))
            except McpError as exc:
                outcome.append(exc)

        async def started() -> bool:
            return text_of(await s.call_tool(tool(py, "has_started"), {"key": key})) == "true"

        async def cancelled() -> bool:
            return text_of(await s.call_tool(tool(py, "was_cancelled"), {"key": key})) == "true"

        async with anyio.create_task_group() as tg:
            tg.start_soon(blocking_call)
            await await_until(started, 20, "the upstream to start the blocking call", interval=0.1)
            assert not await cancelled()
            await s.send_notification(
                types.ClientNotification(
                    types.CancelledNotification(
                        params=types.CancelledNotificationParams(requestId=request_id[0], reason="e2e: user cancelled")
                    )
                )
            )
            await await_until(cancelled, 20, "the upstream to see the cancellation", interval=0.1)
            tg.cancel_scope.cancel()  # the cancelled request may never be answered (spec)
    # If the gateway did answer the cancelled request, it must not be a success.
    for o in outcome:
        assert isinstance(o, McpError) or getattr(o, "isError", False), f"cancelled call returned a result: {o}"


# ------------------------------------------------------------------------ errors


@pytest.mark.parametrize("front", FRONTS)
@pytest.mark.parametrize("kind", ["unknown-server", "unprefixed"])
async def test_unknown_tool_is_jsonrpc_error(gateway: Gateway, front: str, kind: str) -> None:
    suffix = uuid.uuid4().hex[:6]
    name = f"nosuchserver{SEP}tool-{suffix}" if kind == "unknown-server" else f"no-such-tool-{suffix}"
    async with mcp_client(gateway, front) as s:
        with pytest.raises(McpError) as info:
            await s.call_tool(name, {})
        assert info.value.error.code == -32602, info.value.error
        assert name in info.value.error.message, f"error message does not name the tool: {info.value.error.message!r}"
        # the session is still usable
        res = await s.call_tool(tool(EV["stdio"], "echo"), {"message": "still here"})
        assert text_of(res) == "Echo: still here"


@pytest.mark.parametrize("front", FRONTS)
async def test_unknown_tool_of_known_server_is_clear_error(gateway: Gateway, front: str) -> None:
    name = f"{EV['stdio']}{SEP}no-such-tool-{uuid.uuid4().hex[:6]}"
    async with mcp_client(gateway, front) as s:
        try:
            res = await s.call_tool(name, {})
        except McpError as exc:
            assert exc.error.code == -32602, exc.error
            assert "no-such-tool" in exc.error.message, exc.error.message
        else:
            # Forwarded to the upstream, which answers with a tool error: acceptable too.
            assert res.isError, f"unknown tool {name} returned a successful result: {res}"
            assert "no-such-tool" in text_of(res), text_of(res)


async def test_health_and_ready(gateway: Gateway) -> None:
    import httpx

    async with httpx.AsyncClient(timeout=10) as c:
        r = await c.get(f"{gateway.base}/healthz")
        assert r.status_code == 200
        r = await c.get(f"{gateway.base}/readyz")
        assert r.status_code == 200
        body = r.json()
    assert body["ready"] is True
    assert set(body["upstreams"]) == set(gateway.servers)
    assert all(u["state"] == "ready" for u in body["upstreams"].values()), body
    assert LOSSLESS in body["upstreams"]
