"""The REST API's OpenAPI 3.1 document, fetched from a running gateway with identity configured:
served without authentication, version 3.1.x, and naming exactly the routes the gateway answers."""

from __future__ import annotations

import base64
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from conftest import REPO, Gateway, ProcessRegistry, free_port, start_gateway, wait_gateway_ready

sys.path.insert(0, str(REPO / "tests" / "testbed"))
from idp import IdP  # noqa: E402

CLIENT_ID = "tessera"

EXPECTED = {
    ("get", "/api/v1/openapi.json"),
    ("get", "/api/v1/me"),
    ("get", "/api/v1/user/tokens"),
    ("post", "/api/v1/user/tokens"),
    ("delete", "/api/v1/user/tokens/{id}"),
    ("get", "/api/v1/user/idp-token"),
    ("get", "/api/v1/user/servers"),
    ("post", "/api/v1/user/servers"),
    ("get", "/api/v1/user/servers/{name}"),
    ("put", "/api/v1/user/servers/{name}"),
    ("delete", "/api/v1/user/servers/{name}"),
    ("post", "/api/v1/user/servers/{name}/enable"),
    ("get", "/api/v1/user/credentials"),
    ("delete", "/api/v1/user/credentials/{server}"),
    ("get", "/api/v1/user/credentials/{server}/connect"),
    ("get", "/api/v1/user/credentials/{server}/callback"),
    ("get", "/api/v1/admin/users"),
    ("post", "/api/v1/admin/users/{id}/disable"),
    ("post", "/api/v1/admin/users/{id}/enable"),
    ("get", "/api/v1/admin/sessions"),
    ("delete", "/api/v1/admin/sessions/{id}"),
    ("get", "/api/v1/admin/mcp-sessions"),
    ("get", "/api/v1/user/diagnostics"),
    ("post", "/api/v1/admin/servers/{name}/restart"),
    ("post", "/api/v1/user/tokens/{id}/regenerate"),
    ("delete", "/api/v1/admin/mcp-sessions/{handle}"),
    ("get", "/api/v1/admin/dashboard"),
    ("get", "/api/v1/activity"),
    ("get", "/api/v1/activity/stream"),
    ("get", "/api/v1/activity/export"),
    ("get", "/auth/login"),
    ("get", "/auth/callback"),
    ("post", "/auth/logout"),
    # Tessera's authorization server (auth.authorization_server, on in this gateway).
    ("get", "/.well-known/oauth-authorization-server"),
    ("get", "/.well-known/openid-configuration"),
    ("post", "/oauth/register"),
    ("get", "/oauth/authorize"),
    ("post", "/oauth/authorize/decision"),
    ("post", "/oauth/token"),
    ("post", "/oauth/revoke"),
}


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    tmp: Path = tmp_path_factory.mktemp("openapi")
    port = free_port()
    client_secret = "cs-" + secrets.token_urlsafe(24)
    config = {
        "clients": [
            {
                "client_id": CLIENT_ID,
                "client_secret": client_secret,
                "redirect_uris": [f"http://127.0.0.1:{port}/auth/callback"],
                "grant_types": ["authorization_code"],
                "response_types": ["code"],
                "token_endpoint_auth_method": "client_secret_basic",
            }
        ],
        "auto_consent": True,
    }
    reg = ProcessRegistry()
    try:
        with IdP(config=config, log_dir=tmp / "logs") as idp, pytest.MonkeyPatch.context() as mp:
            # The authorization server keeps provider tokens sealed: it needs a key.
            mp.setenv("TESSERA_SEALING_KEY", base64.b64encode(secrets.token_bytes(32)).decode())
            auth = {"issuer": idp.issuer, "client_id": CLIENT_ID, "client_secret": client_secret, "authorization_server": {}}
            g = start_gateway(reg, tmp, {}, extra={"listen": f"127.0.0.1:{port}", "auth": auth}, wait_ready=False)
            g.port = port
            wait_gateway_ready(g)
            yield g
    finally:
        reg.stop_all()


def fetch(gw: Gateway) -> dict:
    r = httpx.get(f"{gw.base}/api/v1/openapi.json", timeout=10)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    return r.json()


def test_the_document_is_openapi_3_1_and_needs_no_authentication(gw: Gateway) -> None:
    doc = fetch(gw)
    assert doc["openapi"].startswith("3.1."), doc["openapi"]
    assert doc["info"]["title"]
    schemes = doc["components"]["securitySchemes"]
    assert schemes["session"] == schemes["session"] | {"type": "apiKey", "in": "cookie"}
    assert schemes["bearer"] == schemes["bearer"] | {"type": "http", "scheme": "bearer"}
    assert set(doc["components"]["schemas"]["Error"]["required"]) == {"error", "message", "status_code"}


def test_the_document_names_exactly_the_api_routes(gw: Gateway) -> None:
    doc = fetch(gw)
    ops = {(m, p) for p, item in doc["paths"].items() for m in item}
    assert ops == EXPECTED


def test_every_documented_operation_is_answered_by_the_gateway(gw: Gateway) -> None:
    doc = fetch(gw)
    with httpx.Client(base_url=gw.base, timeout=10) as c:
        for path, item in doc["paths"].items():
            for method, op in item.items():
                r = c.request(method.upper(), path.replace("{id}", "nope"))
                assert r.status_code != 405, (method, path)
                assert str(r.status_code) in op["responses"], (method, path, r.status_code, r.text)
                if "oauth" in op.get("tags", []):
                    # RFC 6749 errors (JSON) or pages (HTML) there, not the REST error shape.
                    if r.status_code >= 400 and r.headers["content-type"].startswith("application/json"):
                        assert "error" in r.json(), (method, path, r.text)
                    continue
                if r.status_code >= 400:
                    body = r.json()
                    assert set(body) >= {"error", "message", "status_code"}, (method, path, body)
                    assert body["status_code"] == r.status_code
