"""Client-facing MCP features through the shared gateway that need a per-client upstream
session or a server -> client message: roots, tools/list_changed, logging, resource
subscriptions, completion, and sampling with two clients at once.

Upstream: upstreams/py_upstream.py over streamable HTTP, SSE and stdio (and
server-everything over stdio for the two-client sampling test); both front ends.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import anyio
import pytest
from mcp import types
from pydantic import AnyUrl

from conftest import EV, PY, SEP, Gateway, await_until, mcp_client, text_of

pytestmark = pytest.mark.anyio

UPSTREAMS = ["streamable-http", "sse", "stdio"]
FRONTS = ["mcp", "sse"]
NOTIFY_TIMEOUT = 10.0  # seconds to wait for a notification the gateway must deliver


def tool(server: str, name: str) -> str:
    return f"{server}{SEP}{name}"


async def tool_names(session: Any) -> set[str]:
    names: set[str] = set()
    cursor = None
    for _ in range(100):
        res = await session.list_tools(cursor=cursor)
        names.update(t.name for t in res.tools)
        cursor = res.nextCursor
        if not cursor:
            return names
    raise AssertionError("tools/list pagination does not terminate")


async def listed(session: Any, name: str) -> bool:
    return name in await tool_names(session)


async def unlisted(session: Any, name: str) -> bool:
    return name not in await tool_names(session)


class Inbox:
    """A message_handler that keeps every server notification a client receives."""

    def __init__(self) -> None:
        self.notifications: list[types.ServerNotification] = []

    async def __call__(self, message: Any) -> None:
        if isinstance(message, types.ServerNotification):
            self.notifications.append(message)

    def of(self, kind: type) -> list[Any]:
        return [n.root for n in self.notifications if isinstance(n.root, kind)]


# ------------------------------------------------------------------------- roots


def roots_callback(uris: list[str]) -> Any:
    async def list_roots(context: Any) -> types.ListRootsResult:
        return types.ListRootsResult(roots=[types.Root(uri=AnyUrl(u), name=u.rsplit("/", 1)[-1]) for u in uris])

    return list_roots


@pytest.mark.parametrize("front", FRONTS)
@pytest.mark.parametrize("upstream", UPSTREAMS)
async def test_roots_are_the_calling_clients(gateway: Gateway, upstream: str, front: str) -> None:
    """roots/list from the upstream reaches the client whose call raised it; two clients
    with different roots calling at the same time each get their own."""
    token = uuid.uuid4().hex[:8]
    roots_a = [f"file:///work/a-{token}", f"file:///work/shared-{token}"]
    roots_b = [f"file:///work/b-{token}"]
    results: dict[str, list[str]] = {}

    async with (
        mcp_client(gateway, front, list_roots_callback=roots_callback(roots_a)) as a,
        mcp_client(gateway, front, list_roots_callback=roots_callback(roots_b)) as b,
    ):

        async def call(name: str, session: Any) -> None:
            res = await session.call_tool(tool(PY[upstream], "roots"), {})
            assert not res.isError, text_of(res)
            results[name] = json.loads(text_of(res))

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                tg.start_soon(call, "a", a)
                tg.start_soon(call, "b", b)
            # and once more, one after the other
            await call("a2", a)
    assert results["a"] == roots_a, results
    assert results["b"] == roots_b, results
    assert results["a2"] == roots_a, results


# ------------------------------------------------------------- tools/list_changed


@pytest.mark.parametrize("front", FRONTS)
@pytest.mark.parametrize("upstream", UPSTREAMS)
async def test_tools_list_changed_reaches_every_client(gateway: Gateway, upstream: str, front: str) -> None:
    """An upstream adds a tool and sends tools/list_changed: the gateway re-lists it,
    every client session gets the notification, and tools/list shows the new tool;
    likewise when the tool is removed again."""
    py = PY[upstream]
    name = f"dyn_{upstream.replace('-', '_')}_{front}_{uuid.uuid4().hex[:8]}"
    inbox_a, inbox_b = Inbox(), Inbox()
    async with (
        mcp_client(gateway, front, message_handler=inbox_a) as a,
        mcp_client(gateway, "sse" if front == "mcp" else "mcp", message_handler=inbox_b) as b,
    ):
        # A round trip on each session first, so that each has its stream to the gateway open.
        assert tool(py, name) not in await tool_names(a)
        assert tool(py, name) not in await tool_names(b)

        # The notification and the new list are awaited separately: a list_changed the shared
        # gateway sends for another reason (another server's re-listing, a previous case's
        # removal) may arrive first, and must not be taken for the one under test.
        seen = [len(inbox.of(types.ToolListChangedNotification)) for inbox in (inbox_a, inbox_b)]
        res = await a.call_tool(tool(py, "add_dynamic_tool"), {"name": name})
        assert not res.isError, text_of(res)
        for who, inbox, before in (("caller", inbox_a, seen[0]), ("other client", inbox_b, seen[1])):
            await await_until(
                lambda inbox=inbox, before=before: len(inbox.of(types.ToolListChangedNotification)) > before,
                NOTIFY_TIMEOUT,
                f"notifications/tools/list_changed at the {who}",
            )
        for who, session in (("the caller", a), ("the other client", b)):
            await await_until(
                lambda session=session: listed(session, tool(py, name)),
                NOTIFY_TIMEOUT,
                f"the new tool listed to {who} after list_changed",
            )
        res = await b.call_tool(tool(py, name), {})
        assert text_of(res) == f"dynamic {name}", res

        seen_a = len(inbox_a.of(types.ToolListChangedNotification))
        res = await a.call_tool(tool(py, "remove_dynamic_tool"), {"name": name})
        assert not res.isError, text_of(res)
        await await_until(
            lambda: len(inbox_a.of(types.ToolListChangedNotification)) > seen_a,
            NOTIFY_TIMEOUT,
            "notifications/tools/list_changed after the removal",
        )
        await await_until(
            lambda: unlisted(a, tool(py, name)),
            NOTIFY_TIMEOUT,
            "the removed tool gone from tools/list",
        )


# ------------------------------------------------------------------------ logging


@pytest.mark.parametrize("front", FRONTS)
@pytest.mark.parametrize("upstream", UPSTREAMS)
async def test_logging_set_level_and_messages(gateway: Gateway, upstream: str, front: str) -> None:
    py = PY[upstream]
    token = uuid.uuid4().hex[:8]
    logs: list[types.LoggingMessageNotificationParams] = []

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        logs.append(params)

    async with mcp_client(gateway, front, logging_callback=on_log) as s:
        await s.set_logging_level("debug")
        res = await s.call_tool(tool(py, "logging_level"), {})
        assert text_of(res) == "debug", f"upstream session did not get logging/setLevel: {text_of(res)!r}"
        res = await s.call_tool(tool(py, "emit_logs"), {"message": token})
        assert text_of(res) == "debug,info,warning", text_of(res)
        await await_until(
            lambda: {(m.level, m.data) for m in logs} >= {("debug", f"debug: {token}"), ("info", f"info: {token}")},
            NOTIFY_TIMEOUT,
            "the upstream's log messages at the client",
        )

        # A higher level is forwarded too; the upstream then stops sending debug/info.
        # (Polled: that the level is in effect as soon as the reply arrives is checked by
        # test_gateway_rules.py::test_set_level_in_effect_when_answered.)
        await s.set_logging_level("warning")

        async def level_is_warning() -> bool:
            return text_of(await s.call_tool(tool(py, "logging_level"), {})) == "warning"

        await await_until(level_is_warning, NOTIFY_TIMEOUT, "logging/setLevel warning to reach the open upstream session")
        token2 = uuid.uuid4().hex[:8]
        res = await s.call_tool(tool(py, "emit_logs"), {"message": token2})
        assert text_of(res) == "warning", text_of(res)
        await await_until(
            lambda: any(m.data == f"warning: {token2}" for m in logs), NOTIFY_TIMEOUT, "the warning at the client"
        )
    assert all(m.logger == "py-upstream" for m in logs if token in str(m.data) or token2 in str(m.data)), logs
    assert not any(m.data in (f"debug: {token2}", f"info: {token2}") for m in logs), logs


# ------------------------------------------------------- resources/subscribe + updated


@pytest.mark.parametrize("front", FRONTS)
@pytest.mark.parametrize("upstream", UPSTREAMS)
async def test_resource_subscribe_and_updated(gateway: Gateway, upstream: str, front: str) -> None:
    py = PY[upstream]
    original = "e2e://notes/main"
    namespaced = f"tessera://{py}/{original}"
    inbox = Inbox()
    async with mcp_client(gateway, front, message_handler=inbox) as s:
        res = await s.read_resource(AnyUrl(namespaced))
        assert res.contents and res.contents[0].text == "notes of the py upstream", res
        await s.subscribe_resource(AnyUrl(namespaced))
        res = await s.call_tool(tool(py, "touch_resource"), {"uri": original})
        assert text_of(res) == "1", f"the upstream has {text_of(res)} subscriber(s) for {original}, expected this client's"
        updated = await await_until(
            lambda: inbox.of(types.ResourceUpdatedNotification),
            NOTIFY_TIMEOUT,
            "notifications/resources/updated at the client",
        )
        assert [str(n.params.uri) for n in updated] == [namespaced]

        await s.unsubscribe_resource(AnyUrl(namespaced))
        res = await s.call_tool(tool(py, "touch_resource"), {"uri": original})
        assert text_of(res) == "0", "unsubscribe did not reach the upstream"


# ------------------------------------------------------------------- completion


@pytest.mark.parametrize("front", FRONTS)
@pytest.mark.parametrize("upstream", UPSTREAMS)
async def test_completion(gateway: Gateway, upstream: str, front: str) -> None:
    py = PY[upstream]
    async with mcp_client(gateway, front) as s:
        res = await s.complete(types.PromptReference(type="ref/prompt", name=tool(py, "greet")), {"name": "name", "value": "Al"})
        assert res.completion.values == ["Alice", "Albert"], res
        res = await s.complete(
            types.ResourceTemplateReference(type="ref/resource", uri=f"tessera://{py}/e2e://topics/{{topic}}"),
            {"name": "topic", "value": "p"},
        )
        assert res.completion.values == ["python", "perl"], res
        res = await s.complete(types.PromptReference(type="ref/prompt", name=tool(py, "greet")), {"name": "name", "value": "zz"})
        assert res.completion.values == [], res


# --------------------------------------------------- sampling with two clients at once


def sampling_callback(label: str, calls: list[str]) -> Any:
    async def sampling(context: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        calls.append(params.messages[0].content.text)
        return types.CreateMessageResult(
            role="assistant",
            content=types.TextContent(type="text", text=f"answer-from-{label}"),
            model=f"model-{label}",
            stopReason="endTurn",
        )

    return sampling


@pytest.mark.parametrize("fronts", [("mcp", "mcp"), ("sse", "sse"), ("mcp", "sse")])
async def test_sampling_goes_to_the_calling_client(gateway: Gateway, fronts: tuple[str, str]) -> None:
    """Two clients on the same stdio server: a sampling request raised by A's call goes to
    A's callback only, and concurrent calls each reach their own client."""
    ev = EV["stdio"]
    calls_a: list[str] = []
    calls_b: list[str] = []
    token = uuid.uuid4().hex[:8]
    async with (
        mcp_client(gateway, fronts[0], sampling_callback=sampling_callback("a", calls_a)) as a,
        mcp_client(gateway, fronts[1], sampling_callback=sampling_callback("b", calls_b)) as b,
    ):
        # B has an upstream session of its own on the server before A's call.
        assert text_of(await b.call_tool(tool(ev, "echo"), {"message": "b"})) == "Echo: b"

        res = await a.call_tool(tool(ev, "trigger-sampling-request"), {"prompt": f"only-a-{token}", "maxTokens": 20})
        assert not res.isError, text_of(res)
        assert "answer-from-a" in text_of(res), text_of(res)
        assert len(calls_a) == 1 and f"only-a-{token}" in calls_a[0], calls_a
        assert calls_b == [], f"B's sampling callback was called for A's request: {calls_b}"

        out: dict[str, str] = {}

        async def call(label: str, session: Any) -> None:
            r = await session.call_tool(tool(ev, "trigger-sampling-request"), {"prompt": f"{label}-{token}", "maxTokens": 20})
            out[label] = text_of(r)

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                tg.start_soon(call, "a", a)
                tg.start_soon(call, "b", b)
    assert "answer-from-a" in out["a"] and "answer-from-b" not in out["a"], out
    assert "answer-from-b" in out["b"] and "answer-from-a" not in out["b"], out
    assert len(calls_a) == 2 and f"a-{token}" in calls_a[1], calls_a
    assert calls_b == [f"b-{token}"] or (len(calls_b) == 1 and f"b-{token}" in calls_b[0]), calls_b
