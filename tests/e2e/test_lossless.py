"""Unknown fields pass through the gateway unchanged, in both directions.

tessera-upstream's `lossless` tool returns unknown fields at the top level of its
result (`x_unknown`), on its text content block (`x_extra`) and in `_meta`
(`x_vendor/meta`), and echoes the `arguments` and `params._meta` it received in
`structuredContent`; its tools/list entry carries `x_tool_extra`.

The reference is the same upstream spoken to directly (no gateway): what the client
gets through Tessera must equal what it gets from the upstream itself.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from mcp import ClientSession, types
from mcp.client.stdio import StdioServerParameters, stdio_client
from pydantic import BaseModel, ConfigDict

from conftest import LOSSLESS, SEP, UPSTREAM_BIN, Gateway, mcp_client

pytestmark = pytest.mark.anyio

TOOL = "lossless"


class Raw(BaseModel):
    """A result type that keeps every field exactly as received."""

    model_config = ConfigDict(extra="allow")

    def data(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


def call_request(name: str, arguments: dict[str, Any], meta: dict[str, Any]) -> types.ClientRequest:
    params = types.CallToolRequestParams.model_validate({"name": name, "arguments": arguments, "_meta": meta})
    return types.ClientRequest(types.CallToolRequest(params=params))


async def raw_call(session: ClientSession, name: str, arguments: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    res = await session.send_request(call_request(name, arguments, meta), Raw)
    return res.data()


async def raw_tools(session: ClientSession) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    cursor = None
    for _ in range(100):
        params = types.PaginatedRequestParams(cursor=cursor) if cursor else None
        res = (await session.send_request(types.ClientRequest(types.ListToolsRequest(params=params)), Raw)).data()
        out.extend(res["tools"])
        cursor = res.get("nextCursor")
        if not cursor:
            return out
    raise AssertionError("tools/list pagination does not terminate")


def find(obj: Any, pred: Any) -> bool:
    """True if pred holds for obj or any value nested in it."""
    if pred(obj):
        return True
    if isinstance(obj, dict):
        return any(find(v, pred) for v in obj.values())
    if isinstance(obj, list):
        return any(find(v, pred) for v in obj)
    return False


def payload() -> tuple[dict[str, Any], dict[str, Any]]:
    tag = uuid.uuid4().hex[:8]
    arguments = {
        "x_arg_unknown": {"nested": [1, 2.5, "three", None, True], "tag": tag},
        "x_arg_unicode": "ünïcødé ✓ \u2028",
        "x_arg_big": 12345678901234567,
    }
    meta = {"x_client/meta": {"tag": tag, "list": [1, {"a": "b"}]}, "x_plain": "v"}
    return arguments, meta


async def direct_reference(arguments: dict[str, Any], meta: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    params = StdioServerParameters(command=str(UPSTREAM_BIN), args=["stdio"])
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as s:
            await s.initialize()
            result = await raw_call(s, TOOL, arguments, meta)
            tools = await raw_tools(s)
    tool = next(t for t in tools if t["name"] == TOOL)
    return result, tool


@pytest.mark.parametrize("front", ["mcp", "sse"])
async def test_unknown_fields_pass_through(gateway: Gateway, front: str) -> None:
    arguments, meta = payload()
    want_result, want_tool = await direct_reference(arguments, meta)
    # Sanity-check the reference itself, so a change in tessera-upstream is noticed.
    assert "x_unknown" in want_result, want_result
    assert any("x_extra" in c for c in want_result.get("content", [])), want_result
    assert want_result.get("_meta", {}).get("x_vendor/meta") == "abc", want_result
    assert "x_tool_extra" in want_tool, want_tool

    name = f"{LOSSLESS}{SEP}{TOOL}"
    async with mcp_client(gateway, front) as s:
        got_result = await raw_call(s, name, arguments, meta)
        tools = await raw_tools(s)

    # Result: top-level unknown field, content block unknown field, _meta unknown key.
    assert got_result.get("x_unknown") == want_result["x_unknown"], got_result
    assert got_result.get("content") == want_result["content"], got_result
    assert got_result.get("_meta", {}).get("x_vendor/meta") == "abc", got_result

    # What the upstream received: unknown arguments and unknown _meta keys, unchanged.
    sc = got_result.get("structuredContent") or {}
    assert find(sc, lambda x: x == arguments), f"arguments sent {arguments!r} not echoed unchanged in {sc!r}"
    assert find(sc, lambda x: isinstance(x, dict) and all(x.get(k) == v for k, v in meta.items())), (
        f"_meta sent {meta!r} not echoed unchanged in {sc!r}"
    )

    # Whole result identical to the direct one.
    assert got_result == want_result

    # tools/list: the unknown field on the tool definition survives, as does the rest.
    mine = [t for t in tools if t["name"] == name]
    assert len(mine) == 1, [t["name"] for t in tools]
    got_tool = dict(mine[0])
    assert got_tool.get("x_tool_extra") == want_tool["x_tool_extra"], got_tool
    got_tool["name"] = TOOL
    assert got_tool == want_tool
