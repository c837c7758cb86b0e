"""MCP authorization on /mcp and /sse with a real OpenID provider (tests/testbed/idp): RFC 9728
discovery, the official MCP SDK's OAuth client signing in with no Tessera-specific code, the
rejections of bad tokens, and sessions bound to the user who opened them."""

from __future__ import annotations

import base64
import json
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import anyio
import httpx
import pytest

from conftest import SEP, Gateway, ProcessRegistry, free_port, register_secret, start_gateway, stdio_lossless, text_of

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "testbed"))
from idp import IdP, mcp_oauth_provider  # noqa: E402

pytestmark = pytest.mark.anyio

INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
}
ACCEPT = {"accept": "application/json, text/event-stream", "content-type": "application/json"}


class Env:
    def __init__(self, idp: IdP, gw: Gateway) -> None:
        self.idp = idp
        self.gw = gw
        self.resource = gw.mcp_url

    def token_for(self, user: str) -> str:
        """A real access token for `user`, issued by the provider for Tessera's resource."""
        tokens = self.idp.login("tessera", "http://127.0.0.1:9/callback", user, client_secret="tessera-secret", resource=self.resource, scope="openid email profile")
        for key in ("access_token", "refresh_token", "id_token"):
            register_secret(tokens.get(key, ""))
        return tokens["access_token"]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("mcp-auth")
    port = free_port()
    resource = f"http://127.0.0.1:{port}/mcp"
    clients = [{
        "client_id": "tessera",
        "client_secret": "tessera-secret",
        "redirect_uris": ["http://127.0.0.1:9/callback"],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "resources": [resource],
    }]
    reg = ProcessRegistry()
    register_secret("tessera-secret")
    with IdP({"clients": clients}, log_dir=tmp / "idp") as idp:
        try:
            auth = {"issuer": idp.issuer, "client_id": "tessera", "client_secret": "tessera-secret", "resource": resource}
            gw = start_gateway(reg, tmp / "gw", {"demo": stdio_lossless()}, extra={"auth": auth, "public_url": f"http://127.0.0.1:{port}"}, port=port)
            yield Env(idp, gw)
        finally:
            reg.stop_all()


def post(env: Env, body: dict[str, Any], token: str | None = None, session: str | None = None) -> httpx.Response:
    headers = dict(ACCEPT)
    if token:
        headers["authorization"] = f"Bearer {token}"
    if session:
        headers["mcp-session-id"] = session
    return httpx.post(env.gw.mcp_url, json=body, headers=headers, timeout=10)


def challenge(resp: httpx.Response) -> str:
    return resp.headers.get("www-authenticate", "")


def test_unauthenticated_request_gets_401_naming_the_metadata(env: Env) -> None:
    resp = post(env, INIT)
    assert resp.status_code == 401
    metadata_url = f"{env.gw.base}/.well-known/oauth-protected-resource/mcp"
    assert challenge(resp).startswith("Bearer ") and f'resource_metadata="{metadata_url}"' in challenge(resp), challenge(resp)
    doc = httpx.get(metadata_url, timeout=10).json()
    assert doc["resource"] == env.resource
    assert doc["authorization_servers"] == [env.idp.issuer]
    root = httpx.get(f"{env.gw.base}/.well-known/oauth-protected-resource", timeout=10)
    assert root.status_code == 200 and root.json()["resource"] == env.resource
    # The legacy SSE front end is protected the same way.
    assert httpx.get(env.gw.sse_url, timeout=10).status_code == 401


def test_valid_token_opens_a_session_and_the_log_names_the_user(env: Env) -> None:
    token = env.token_for("alice")
    resp = post(env, INIT, token)
    assert resp.status_code == 200, resp.text
    sid = resp.headers["mcp-session-id"]
    call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": f"demo{SEP}echo", "arguments": {"message": "hi"}}}
    resp = post(env, call, token, sid)
    assert resp.json()["result"]["content"][0]["text"] == "hi"
    assert "alice@example.com" in env.gw.log_tail(200)
    assert token not in env.gw.log_tail(2000), "a token reached the log"


def _b64(obj: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def _rejections(env: Env) -> dict[str, str]:
    good = {"sub": "alice", "email": "alice@example.com", "aud": env.resource, "scope": "openid"}
    valid = env.idp.mint(good)
    head, body, sig = valid.split(".")
    flipped = sig[:-4] + ("AAAA" if sig[-4:] != "AAAA" else "BBBB")
    return {
        "expired": env.idp.mint({**good, "exp": 1_000_000_000, "iat": 999_999_000}),
        "wrong audience": env.idp.mint({**good, "aud": "http://127.0.0.1:1/other"}),
        "wrong issuer": env.idp.mint({**good, "iss": "http://127.0.0.1:1"}),
        "bad signature": f"{head}.{body}.{flipped}",
        "alg none": f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{body}.",
        "not a token": "garbage",
        "unknown personal access token": "tsr_pat_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    }


@pytest.mark.parametrize("case", ["expired", "wrong audience", "wrong issuer", "bad signature", "alg none", "not a token", "unknown personal access token"])
def test_bad_tokens_are_401_invalid_token(env: Env, case: str) -> None:
    token = _rejections(env)[case]
    resp = post(env, INIT, token)
    assert resp.status_code == 401, f"{case}: {resp.status_code} {resp.text}"
    assert 'error="invalid_token"' in challenge(resp), f"{case}: {challenge(resp)}"
    assert token not in resp.text and token not in challenge(resp)


def test_a_token_minted_correctly_is_accepted(env: Env) -> None:
    """Guards the rejection test: the same minting with the right claims passes."""
    token = env.idp.mint({"sub": "alice", "email": "alice@example.com", "aud": env.resource, "scope": "openid"})
    assert post(env, INIT, token).status_code == 200


def test_another_users_session_is_not_found(env: Env) -> None:
    alice, bob = env.token_for("alice"), env.token_for("bob")
    sid = post(env, INIT, alice).headers["mcp-session-id"]
    ping = {"jsonrpc": "2.0", "id": 3, "method": "ping"}
    assert post(env, ping, alice, sid).status_code == 200
    assert post(env, ping, bob, sid).status_code == 404
    bob_delete = httpx.delete(env.gw.mcp_url, headers={"authorization": f"Bearer {bob}", "mcp-session-id": sid}, timeout=10)
    assert bob_delete.status_code == 404
    assert post(env, ping, alice, sid).status_code == 200, "bob could not end alice's session"


async def test_mcp_sdk_oauth_client_signs_in_through_tessera(env: Env) -> None:
    from mcp import ClientSession
    from mcp.client.streamable_http import streamablehttp_client

    auth, storage = mcp_oauth_provider(env.resource, "bob", "bob-pw")
    async with streamablehttp_client(env.resource, auth=auth) as (read, write, _):
        async with ClientSession(read, write) as session:
            await session.initialize()
            result = await session.call_tool(f"demo{SEP}echo", {"message": "from the sdk"})
    assert text_of(result) == "from the sdk"
    assert storage.info is not None, "the SDK registered itself at the provider"
    assert storage.tokens is not None and "bob@example.com" in env.gw.log_tail(300)


async def test_sdk_refreshes_an_expired_access_token(env: Env) -> None:
    """With a 3-second access-token lifetime, the SDK's next connection after expiry refreshes
    at the provider and Tessera accepts the new token (the old one is refused by then)."""
    from mcp import ClientSession
    from mcp.client.streamable_http import streamablehttp_client

    # One provider object for both connections: it remembers when its token expires.
    auth, storage = mcp_oauth_provider(env.resource, "alice", "alice-pw", "sdk-refresh")

    async def call(message: str) -> str:
        async with streamablehttp_client(env.resource, auth=auth) as (read, write, _):
            async with ClientSession(read, write) as session:
                await session.initialize()
                return text_of(await session.call_tool(f"demo{SEP}echo", {"message": message}))

    before = env.idp.settings()["access_token_ttl"]
    env.idp.settings(access_token_ttl=3)
    try:
        assert await call("first") == "first"
        assert storage.tokens is not None and storage.tokens.refresh_token
        first_token = storage.tokens.access_token
        # Wait (bounded) until the first token's `exp` has passed: what triggers the refresh is
        # the passage of time itself. (Tessera allows 60 s of clock skew, so it is not asked.)
        exp = json.loads(base64.urlsafe_b64decode(first_token.split(".")[1] + "=="))["exp"]
        for _ in range(200):
            if time.time() > exp + 1:
                break
            await anyio.sleep(0.05)
        else:
            pytest.fail("the short-lived access token never expired")
        env.idp.reset_stats()
        assert await call("second") == "second"
        assert storage.tokens.access_token != first_token, "the SDK did not get a new access token"
        grants = env.idp.stats()["grants"]
        assert grants.get("refresh_token", {}).get("success", 0) >= 1, grants
    finally:
        env.idp.settings(access_token_ttl=before)
