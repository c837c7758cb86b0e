"""A protected MCP upstream (official Python SDK, FastMCP, streamable HTTP at /mcp) for the
brokered-traffic tests: every request must carry `Authorization: Bearer <JWT>` signed by the
test provider (JWKS), issued by it and addressed to the expected audience.

    protected_upstream.py --port PORT --issuer http://127.0.0.1:IDP --audience URL
                          [--jwks-url URL] [--record FILE] [--name NAME]

Missing or invalid credential → 401 with `WWW-Authenticate: Bearer ...` (error="invalid_token"
when one was sent). Nothing reaches the MCP server without a valid token.

Tools (per caller: the list depends on the token of the tools/list request):
  whoami()         JSON {sub, client_id, azp, aud, act, scope, jti, exp} of the request's token.
  echo(message)    the message.
  hello_<sub>()    one tool named after the caller's subject ("hello <sub>"); lets a test see
                   that a catalogue was discovered with that user's credential.

Test controls (JSON, no credential needed):
  GET  /__test/stats       {requests, authorized, rejected, no_credential,
                            subjects: {sub: n}, tokens: {sub: [jti, ...]}, revoked: n, reject_all}
  POST /__test/revoke      every token seen so far is refused from now on → {revoked: n}
  POST /__test/reject-all  body {"on": true|false}: refuse every token (401) while on
  POST /__test/reset       zero the counters (revocations stay)

--record FILE appends one JSON line per request (test controls excepted) BEFORE the credential
check: {"method", "path", "headers": {name: value}}; the suite searches it for inbound tokens.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import jwt
import uvicorn
from mcp import types
from mcp.server.fastmcp import Context, FastMCP


class State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests = 0
        self.authorized = 0
        self.rejected = 0
        self.no_credential = 0
        self.subjects: Counter[str] = Counter()
        self.tokens: dict[str, list[str]] = {}
        self.seen: set[str] = set()
        self.revoked: set[str] = set()
        self.reject_all = False

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "requests": self.requests,
                "authorized": self.authorized,
                "rejected": self.rejected,
                "no_credential": self.no_credential,
                "subjects": dict(self.subjects),
                "tokens": {k: list(v) for k, v in self.tokens.items()},
                "revoked": len(self.revoked),
                "reject_all": self.reject_all,
            }

    def reset(self) -> None:
        with self.lock:
            self.requests = self.authorized = self.rejected = self.no_credential = 0
            self.subjects.clear()
            self.tokens.clear()


STATE = State()
ARGS: argparse.Namespace
JWKS: jwt.PyJWKClient


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _claims_unverified(token: str) -> dict[str, Any]:
    return jwt.decode(token, options={"verify_signature": False})


def _bearer(headers: dict[str, str]) -> str | None:
    value = headers.get("authorization", "")
    if value[:7].lower() == "bearer ":
        return value[7:].strip()
    return None


def _validate(token: str) -> dict[str, Any]:
    key = JWKS.get_signing_key_from_jwt(token)
    return jwt.decode(
        token,
        key.key,
        algorithms=["RS256"],
        audience=ARGS.audience,
        issuer=ARGS.issuer,
        options={"require": ["exp", "iss", "aud", "sub"]},
    )


# --------------------------------------------------------------------- MCP server


def _request_token(server: FastMCP) -> str:
    request = server._mcp_server.request_context.request  # the Starlette request of this message
    token = _bearer({k.lower(): v for k, v in request.headers.items()}) if request is not None else None
    if not token:
        raise RuntimeError("no bearer token on this request")
    return token


class ProtectedMCP(FastMCP):
    async def list_tools(self) -> list[types.Tool]:
        tools = await super().list_tools()
        sub = _claims_unverified(_request_token(self)).get("sub", "unknown")
        tools.append(types.Tool(name=f"hello_{sub}", description=f"Say hello to {sub} (listed only for {sub}).", inputSchema={"type": "object", "properties": {}}))
        return tools

    async def call_tool(self, name: str, arguments: dict[str, Any]) -> Any:
        if name.startswith("hello_"):
            sub = _claims_unverified(_request_token(self)).get("sub")
            if name != f"hello_{sub}":
                raise ValueError(f"{name} is not a tool of {sub}")
            return [types.TextContent(type="text", text=f"hello {sub}")]
        return await super().call_tool(name, arguments)


mcp = ProtectedMCP("tessera-e2e-protected-upstream", json_response=True)


@mcp.tool()
def whoami(ctx: Context) -> str:
    """The subject, client and audience of the bearer token this request carried (JSON)."""
    claims = _claims_unverified(_request_token(mcp))
    keys = ("sub", "client_id", "azp", "aud", "act", "scope", "scp", "jti", "exp", "iss")
    return json.dumps({k: claims.get(k) for k in keys} | {"server": ARGS.name})


@mcp.tool()
def echo(message: str) -> str:
    """Echo the message."""
    return message


# ------------------------------------------------------------------ HTTP guard


async def _send_json(send: Any, status: int, body: Any, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    raw = json.dumps(body).encode()
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode()), *(headers or [])],
    })
    await send({"type": "http.response.body", "body": raw})


async def _read_body(receive: Any) -> bytes:
    body = b""
    while True:
        msg = await receive()
        body += msg.get("body", b"")
        if not msg.get("more_body"):
            return body


class Guard:
    """ASGI middleware: test controls, header recording, bearer validation."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path: str = scope["path"]
        method: str = scope["method"]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if path.startswith("/__test/"):
            return await self.control(method, path, receive, send)

        if ARGS.record:
            line = json.dumps({"method": method, "path": path, "headers": headers})
            with STATE.lock, open(ARGS.record, "a") as fh:
                fh.write(line + "\n")

        resource_metadata = f'resource_metadata="http://127.0.0.1:{ARGS.port}/.well-known/oauth-protected-resource"'
        token = _bearer(headers)
        with STATE.lock:
            STATE.requests += 1
            if token is None:
                STATE.no_credential += 1
        if token is None:
            challenge = f"Bearer {resource_metadata}"
            return await _send_json(send, 401, {"error": "unauthorized", "error_description": "bearer token required"}, [(b"www-authenticate", challenge.encode())])

        reason = None
        digest = _digest(token)
        try:
            claims = _validate(token)
        except Exception as exc:  # noqa: BLE001 - any validation failure is a 401
            claims = {}
            reason = f"invalid token: {type(exc).__name__}"
        with STATE.lock:
            if reason is None and (STATE.reject_all or digest in STATE.revoked):
                reason = "token revoked"
            if reason is None:
                STATE.authorized += 1
                STATE.seen.add(digest)
                sub = str(claims.get("sub"))
                STATE.subjects[sub] += 1
                jtis = STATE.tokens.setdefault(sub, [])
                if claims.get("jti") not in jtis:
                    jtis.append(str(claims.get("jti")))
            else:
                STATE.rejected += 1
        if reason is not None:
            challenge = f'Bearer error="invalid_token", error_description="{reason}", {resource_metadata}'
            return await _send_json(send, 401, {"error": "invalid_token", "error_description": reason}, [(b"www-authenticate", challenge.encode())])
        return await self.app(scope, receive, send)

    async def control(self, method: str, path: str, receive: Any, send: Any) -> None:
        route = f"{method} {path}"
        body = await _read_body(receive)
        if route == "GET /__test/stats":
            return await _send_json(send, 200, STATE.snapshot())
        if route == "POST /__test/revoke":
            with STATE.lock:
                STATE.revoked |= STATE.seen
                n = len(STATE.revoked)
            return await _send_json(send, 200, {"revoked": n})
        if route == "POST /__test/reject-all":
            on = bool(json.loads(body or b"{}").get("on", True))
            with STATE.lock:
                STATE.reject_all = on
            return await _send_json(send, 200, {"reject_all": on})
        if route == "POST /__test/reset":
            STATE.reset()
            return await _send_json(send, 200, STATE.snapshot())
        return await _send_json(send, 404, {"error": f"no test route {route}"})


def main() -> None:
    global ARGS, JWKS
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--issuer", required=True, help="expected iss (the test provider's URL)")
    p.add_argument("--audience", required=True, help="expected aud (usually this server's /mcp URL)")
    p.add_argument("--jwks-url", help="default: <issuer>/jwks")
    p.add_argument("--record", type=Path, help="append every request's headers to this file (JSON lines)")
    p.add_argument("--name", default="protected", help="echoed in whoami as `server`")
    ARGS = p.parse_args()
    JWKS = jwt.PyJWKClient(ARGS.jwks_url or f"{ARGS.issuer}/jwks", cache_keys=True, lifespan=30)
    mcp.settings.host = "127.0.0.1"
    mcp.settings.port = ARGS.port
    app = Guard(mcp.streamable_http_app())
    uvicorn.run(app, host="127.0.0.1", port=ARGS.port, log_level="warning")


if __name__ == "__main__":
    main()
