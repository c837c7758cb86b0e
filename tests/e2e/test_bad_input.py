"""Bad input on the /mcp front end, spoken in raw HTTP (httpx) so nothing in a client
library can hide what the gateway answers."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest

from conftest import EV, SEP, Gateway

pytestmark = pytest.mark.anyio

PROTOCOL = "2025-06-18"
ACCEPT = "application/json, text/event-stream"


def messages(r: httpx.Response) -> list[dict[str, Any]]:
    """JSON-RPC messages in a response body, whether plain JSON or an SSE stream."""
    ctype = r.headers.get("content-type", "")
    if "text/event-stream" in ctype:
        out = []
        for event in r.text.replace("\r\n", "\n").split("\n\n"):
            data = "\n".join(line[5:].lstrip() for line in event.split("\n") if line.startswith("data:"))
            if data.strip():
                out.append(json.loads(data))
        return out
    if not r.content.strip():
        return []
    body = r.json()
    return body if isinstance(body, list) else [body]


class RawSession:
    def __init__(self, client: httpx.AsyncClient, url: str) -> None:
        self.client = client
        self.url = url
        self.session_id: str | None = None
        self.next_id = 1

    def headers(self, session_id: str | None = None) -> dict[str, str]:
        h = {"Accept": ACCEPT, "Content-Type": "application/json", "MCP-Protocol-Version": PROTOCOL}
        sid = session_id or self.session_id
        if sid:
            h["Mcp-Session-Id"] = sid
        return h

    async def post(self, body: bytes | dict[str, Any], session_id: str | None = None) -> httpx.Response:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return await self.client.post(self.url, content=content, headers=self.headers(session_id))

    async def request(self, method: str, params: dict[str, Any] | None = None) -> tuple[httpx.Response, dict[str, Any]]:
        rid = self.next_id
        self.next_id += 1
        msg: dict[str, Any] = {"jsonrpc": "2.0", "id": rid, "method": method}
        if params is not None:
            msg["params"] = params
        r = await self.post(msg)
        replies = [m for m in messages(r) if m.get("id") == rid]
        assert replies, f"no reply to {method} (HTTP {r.status_code}): {r.text[:500]}"
        return r, replies[0]

    async def initialize(self) -> None:
        r, reply = await self.request(
            "initialize",
            {"protocolVersion": PROTOCOL, "capabilities": {}, "clientInfo": {"name": "raw-e2e", "version": "0"}},
        )
        assert r.status_code == 200, r.text
        assert "result" in reply, reply
        self.session_id = r.headers.get("mcp-session-id")
        r = await self.post({"jsonrpc": "2.0", "method": "notifications/initialized"})
        assert r.status_code in (200, 202), (r.status_code, r.text)


@pytest.fixture
async def raw(gateway: Gateway) -> Any:
    async with httpx.AsyncClient(timeout=httpx.Timeout(20.0)) as client:
        s = RawSession(client, gateway.mcp_url)
        await s.initialize()
        yield s


async def test_malformed_json_is_parse_error(raw: RawSession) -> None:
    r = await raw.post(b'{"jsonrpc": "2.0", "id": 99, "method": "tools/list", ')
    assert r.status_code < 500, (r.status_code, r.text)
    msgs = messages(r)
    assert msgs, f"no JSON-RPC error body (HTTP {r.status_code}): {r.text!r}"
    assert msgs[0].get("error", {}).get("code") == -32700, msgs
    assert msgs[0].get("id") is None, msgs


async def test_unknown_method_is_method_not_found(raw: RawSession) -> None:
    _, reply = await raw.request("tessera/no_such_method", {})
    assert reply.get("error", {}).get("code") == -32601, reply


async def test_unknown_tool_is_invalid_params(raw: RawSession) -> None:
    name = f"nosuchserver{SEP}tool-{uuid.uuid4().hex[:6]}"
    _, reply = await raw.request("tools/call", {"name": name, "arguments": {}})
    err = reply.get("error")
    assert err, f"expected a JSON-RPC error, got {reply}"
    assert err["code"] == -32602, err
    assert name in err["message"], err


async def test_session_still_works_after_errors(raw: RawSession) -> None:
    await raw.post(b"not json at all")
    await raw.request("tessera/no_such_method")
    _, reply = await raw.request("tools/call", {"name": f"{EV['stdio']}{SEP}echo", "arguments": {"message": "ok"}})
    assert reply.get("result", {}).get("content", [{}])[0].get("text") == "Echo: ok", reply


async def test_wrong_session_id_is_404(raw: RawSession) -> None:
    r = await raw.post({"jsonrpc": "2.0", "id": 7, "method": "tools/list"}, session_id=f"wrong-{uuid.uuid4()}")
    assert r.status_code == 404, (r.status_code, r.text)
