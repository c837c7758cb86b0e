"""The test identity provider (tests/testbed/idp) on its own: discovery, registration,
code + PKCE login through the HTML forms, JWT access tokens for a resource (RFC 8707),
refresh, introspection, revocation, RFC 8693 token exchange, Entra-style OBO, key rotation.

One provider for the whole module; each test uses its own clients/tokens.
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "testbed"))

from idp import (  # noqa: E402
    JWT_BEARER,
    TOKEN_EXCHANGE,
    TT_ACCESS_TOKEN,
    TT_ID_TOKEN,
    IdP,
    LoginFailed,
    browser_login,
    mcp_oauth_provider,
    pkce_pair,
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


MCP_RESOURCE = f"http://127.0.0.1:{_free_port()}/mcp"  # stands in for Tessera's /mcp
OPAQUE_RESOURCE = f"http://127.0.0.1:{_free_port()}/opaque"
REDIRECT = "http://127.0.0.1:9/callback"  # never requested
TESSERA = {"client_id": "tessera", "client_secret": "tessera-secret"}
BROKER = {"client_id": "broker", "client_secret": "broker-secret"}


@pytest.fixture(scope="module")
def idp(tmp_path_factory: pytest.TempPathFactory) -> Any:
    config = {
        "clients": [
            {
                **TESSERA,
                "redirect_uris": [REDIRECT],
                "grant_types": ["authorization_code", "refresh_token", TOKEN_EXCHANGE, JWT_BEARER],
                "response_types": ["code"],
                "resources": [MCP_RESOURCE],
            },
            {
                **BROKER,
                "redirect_uris": [REDIRECT],
                "grant_types": ["authorization_code", TOKEN_EXCHANGE, JWT_BEARER],
                "response_types": ["code"],
                "token_endpoint_auth_method": "client_secret_post",
            },
        ],
        "opaque_resources": [OPAQUE_RESOURCE],
    }
    with IdP(config, log_dir=tmp_path_factory.mktemp("idp")) as provider:
        yield provider


def verify(idp: IdP, token: str, audience: str) -> dict[str, Any]:
    """Verify a JWT against the provider's JWKS (fetched now) like a resource server would."""
    kid = jwt.get_unverified_header(token)["kid"]
    keys = {k["kid"]: k for k in idp.jwks()["keys"]}
    key = jwt.PyJWK(keys[kid]).key
    return jwt.decode(token, key, algorithms=["RS256"], audience=audience, issuer=idp.issuer)


def alice_tokens(idp: IdP, resource: str | None = MCP_RESOURCE, user: str = "alice") -> dict[str, Any]:
    return idp.login(TESSERA["client_id"], REDIRECT, user, client_secret=TESSERA["client_secret"], resource=resource)


def oauth_error(r: httpx.Response) -> str:
    assert r.status_code in (400, 401), (r.status_code, r.text)
    return r.json()["error"]


# ------------------------------------------------------------------ metadata


def test_discovery_lists_the_endpoints(idp: IdP) -> None:
    d = idp.discovery
    assert d["issuer"] == idp.issuer
    for ep in ("authorization_endpoint", "token_endpoint", "jwks_uri", "registration_endpoint", "introspection_endpoint", "revocation_endpoint", "userinfo_endpoint"):
        assert d[ep].startswith(idp.issuer + "/"), ep
    assert d["code_challenge_methods_supported"] == ["S256"]
    assert {TOKEN_EXCHANGE, JWT_BEARER, "authorization_code", "refresh_token"} <= set(d["grant_types_supported"])
    # RFC 8414 metadata at its own well-known URL (MCP clients look there first)
    as_meta = httpx.get(idp.url("/.well-known/oauth-authorization-server"), timeout=5).json()
    assert as_meta["issuer"] == idp.issuer and as_meta["token_endpoint"] == d["token_endpoint"]
    jwks = idp.jwks()["keys"]
    assert jwks and all(k["kty"] == "RSA" and "d" not in k for k in jwks)


def test_dynamic_registration_is_open(idp: IdP) -> None:
    client = idp.register_client(["http://localhost:33333/callback"], client_name="mcp-client")
    assert client["client_id"] and client["token_endpoint_auth_method"] == "none"
    confidential = idp.register_client([REDIRECT], token_endpoint_auth_method="client_secret_post")
    assert confidential["client_secret"]


# --------------------------------------------------------------------- login


def test_code_pkce_login_gives_a_jwt_for_the_resource(idp: IdP) -> None:
    client = idp.register_client([REDIRECT])  # a public MCP client, as the SDKs register
    tokens = idp.login(client["client_id"], REDIRECT, "alice", resource=MCP_RESOURCE, scope="openid email profile offline_access mcp")
    assert tokens["token_type"] == "Bearer" and tokens["refresh_token"]
    assert jwt.get_unverified_header(tokens["access_token"])["alg"] == "RS256"
    claims = verify(idp, tokens["access_token"], MCP_RESOURCE)
    assert claims["aud"] == MCP_RESOURCE and claims["sub"] == "alice"
    assert claims["email"] == "alice@example.com" and claims["groups"] == ["admins"]
    assert "mcp" in claims["scope"].split()
    assert claims["client_id"] == client["client_id"]
    id_claims = verify(idp, tokens["id_token"], client["client_id"])
    assert id_claims["email"] == "alice@example.com" and id_claims["email_verified"] is True and id_claims["name"]


def test_refresh_gives_a_new_access_token(idp: IdP) -> None:
    tokens = alice_tokens(idp)
    r = idp.token({"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}, TESSERA["client_id"], TESSERA["client_secret"])
    assert r.status_code == 200, r.text
    new = r.json()
    assert new["access_token"] != tokens["access_token"]
    claims = verify(idp, new["access_token"], MCP_RESOURCE)
    assert claims["sub"] == "alice" and claims["email"] == "alice@example.com"
    assert new["refresh_token"] != tokens["refresh_token"]  # rotation is on by default


def test_wrong_password_is_refused(idp: IdP) -> None:
    _, challenge = pkce_pair()
    url = idp.authorize_url(TESSERA["client_id"], REDIRECT, challenge, resource=MCP_RESOURCE)
    with pytest.raises(LoginFailed, match="Invalid username or password"):
        browser_login(url, "alice", "bob-pw")
    with pytest.raises(LoginFailed):
        browser_login(url, "mallory", "x")


def test_pkce_is_required_and_checked(idp: IdP) -> None:
    url = idp.authorize_url(TESSERA["client_id"], REDIRECT, "x" * 43).replace("code_challenge=", "cc_removed=")
    r = httpx.get(url, timeout=5)
    assert r.is_redirect and "error=invalid_request" in r.headers["location"]
    _, challenge = pkce_pair()
    redirect = browser_login(idp.authorize_url(TESSERA["client_id"], REDIRECT, challenge, resource=MCP_RESOURCE), "bob", "bob-pw")
    code = parse_qs(urlsplit(redirect).query)["code"][0]
    r = idp.token({"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "code_verifier": pkce_pair()[0]}, TESSERA["client_id"], TESSERA["client_secret"])
    assert oauth_error(r) == "invalid_grant"


def test_consent_denied_redirects_with_access_denied(idp: IdP) -> None:
    _, challenge = pkce_pair()
    url = idp.authorize_url(TESSERA["client_id"], REDIRECT, challenge, resource=MCP_RESOURCE, state="s123")
    redirect = browser_login(url, "bob", "bob-pw", consent="deny")
    q = parse_qs(urlsplit(redirect).query)
    assert redirect.startswith(REDIRECT) and q["error"] == ["access_denied"] and q["state"] == ["s123"]


def test_foreign_resource_is_refused(idp: IdP) -> None:
    _, challenge = pkce_pair()
    url = idp.authorize_url(TESSERA["client_id"], REDIRECT, challenge, resource="https://evil.example.com/mcp")
    r = httpx.get(url, timeout=5)
    assert r.is_redirect and "error=invalid_target" in r.headers["location"]


# ---------------------------------------------------- introspection, revocation


def test_introspection_and_revocation(idp: IdP) -> None:
    tokens = alice_tokens(idp, resource=OPAQUE_RESOURCE)
    at = tokens["access_token"]
    assert at.count(".") != 2  # opaque for this resource
    auth = (BROKER["client_id"], BROKER["client_secret"])
    r = httpx.post(idp.discovery["introspection_endpoint"], data={"token": at}, auth=auth, timeout=5)
    body = r.json()
    assert body["active"] is True and body["sub"] == "alice" and body["aud"] == OPAQUE_RESOURCE
    assert body["email"] == "alice@example.com" and body["iss"] == idp.issuer
    r = httpx.post(idp.discovery["revocation_endpoint"], data={"token": at}, auth=(TESSERA["client_id"], TESSERA["client_secret"]), timeout=5)
    assert r.status_code == 200
    r = httpx.post(idp.discovery["introspection_endpoint"], data={"token": at}, auth=auth, timeout=5)
    assert r.json() == {"active": False}


def test_revoke_grants_makes_refresh_fail(idp: IdP) -> None:
    tokens = alice_tokens(idp, user="bob")
    assert idp.revoke_grants("bob") >= 1
    r = idp.token({"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}, TESSERA["client_id"], TESSERA["client_secret"])
    assert oauth_error(r) == "invalid_grant"


def test_access_token_ttl_is_settable(idp: IdP) -> None:
    before = idp.settings()["access_token_ttl"]
    idp.settings(access_token_ttl=5)
    try:
        tokens = alice_tokens(idp)
        assert tokens["expires_in"] == 5
        claims = verify(idp, tokens["access_token"], MCP_RESOURCE)
        assert claims["exp"] - claims["iat"] == 5
    finally:
        idp.settings(access_token_ttl=before)


# ------------------------------------------------------------ token exchange


def exchange(idp: IdP, client: dict[str, str], **params: str) -> httpx.Response:
    data = {"grant_type": TOKEN_EXCHANGE, "subject_token_type": TT_ACCESS_TOKEN, **params}
    return idp.token(data, client["client_id"], client["client_secret"])


def test_token_exchange_for_an_upstream_audience(idp: IdP) -> None:
    tokens = alice_tokens(idp)
    idp.reset_stats()
    r = exchange(idp, BROKER, subject_token=tokens["access_token"], audience="api://upstream", scope="files.read")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["issued_token_type"] == TT_ACCESS_TOKEN and body["token_type"] == "Bearer" and body["expires_in"] > 0
    claims = verify(idp, body["access_token"], "api://upstream")
    assert claims["sub"] == "alice" and claims["email"] == "alice@example.com"
    assert claims["act"] == {"sub": "broker"} and claims["scope"] == "files.read"
    assert idp.stats()["grants"][TOKEN_EXCHANGE]["success"] == 1

    # an ID token as the subject; resource instead of audience; opaque subject token
    upstream = f"http://127.0.0.1:{_free_port()}/mcp"
    r = exchange(idp, TESSERA, subject_token=tokens["id_token"], subject_token_type=TT_ID_TOKEN, resource=upstream)
    assert r.status_code == 200, r.text
    assert verify(idp, r.json()["access_token"], upstream)["sub"] == "alice"
    opaque = alice_tokens(idp, resource=None)["access_token"]
    r = exchange(idp, BROKER, subject_token=opaque, audience="api://upstream")
    assert r.status_code == 200, r.text
    assert verify(idp, r.json()["access_token"], "api://upstream")["sub"] == "alice"


def test_token_exchange_errors(idp: IdP) -> None:
    tokens = alice_tokens(idp)
    at = tokens["access_token"]
    assert oauth_error(exchange(idp, BROKER, subject_token="garbage", audience="api://upstream")) == "invalid_grant"
    assert oauth_error(exchange(idp, BROKER, subject_token=at, audience="https://evil.example.com")) == "invalid_target"
    assert oauth_error(exchange(idp, BROKER, subject_token=at)) == "invalid_target"
    assert oauth_error(exchange(idp, BROKER, subject_token=at, audience="api://upstream", scope="forbidden")) == "invalid_scope"
    # the ID token is not an access token
    assert oauth_error(exchange(idp, BROKER, subject_token=tokens["id_token"], audience="api://upstream")) == "invalid_grant"
    # expired subject token (signed by the provider's own key)
    expired = idp.mint({"sub": "alice", "aud": MCP_RESOURCE, "exp": 1000, "iat": 900})
    assert oauth_error(exchange(idp, BROKER, subject_token=expired, audience="api://upstream")) == "invalid_grant"
    # wrong client secret
    r = exchange(idp, {"client_id": "broker", "client_secret": "nope"}, subject_token=at, audience="api://upstream")
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    # a public client may not exchange
    public = idp.register_client([REDIRECT], grant_types=["authorization_code", TOKEN_EXCHANGE])
    r = idp.token({"grant_type": TOKEN_EXCHANGE, "subject_token_type": TT_ACCESS_TOKEN, "subject_token": at, "audience": "api://upstream"}, public["client_id"])
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"


# ----------------------------------------------------------------------- OBO


def obo(idp: IdP, client: dict[str, str], **params: str) -> httpx.Response:
    data = {"grant_type": JWT_BEARER, "requested_token_use": "on_behalf_of", **params}
    return idp.token(data, client["client_id"], client["client_secret"])


def test_on_behalf_of(idp: IdP) -> None:
    at = alice_tokens(idp)["access_token"]  # aud = Tessera's resource, which the tessera client owns
    r = obo(idp, TESSERA, assertion=at, scope="api://upstream/files.read api://upstream/files.write offline_access")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] > 0
    claims = verify(idp, body["access_token"], "api://upstream")
    assert claims["sub"] == "alice" and claims["azp"] == "tessera" and claims["scp"] == "files.read files.write"
    r = obo(idp, TESSERA, assertion=at, scope="api://upstream/.default")
    assert r.status_code == 200 and verify(idp, r.json()["access_token"], "api://upstream")["sub"] == "alice"
    # errors
    # the assertion's audience must be the calling client's id or one of its resources
    other = idp.mint({"sub": "alice", "aud": f"http://127.0.0.1:{_free_port()}/mcp"})
    assert oauth_error(obo(idp, TESSERA, assertion=other, scope="api://upstream/.default")) == "invalid_grant"
    for_broker = idp.mint({"sub": "alice", "aud": "broker"})
    assert obo(idp, BROKER, assertion=for_broker, scope="api://upstream/.default").status_code == 200
    assert oauth_error(obo(idp, BROKER, assertion=idp.mint({"sub": "alice", "aud": "api://upstream"}), scope="api://upstream/.default")) == "invalid_grant"
    assert oauth_error(obo(idp, TESSERA, assertion=at, scope="files.read")) == "invalid_scope"
    assert oauth_error(obo(idp, TESSERA, assertion=at, scope="https://evil.example.com/.default")) == "invalid_target"
    r = idp.token({"grant_type": JWT_BEARER, "assertion": at, "scope": "api://upstream/.default"}, TESSERA["client_id"], TESSERA["client_secret"])
    assert oauth_error(r) == "invalid_request"


# ------------------------------------------------------------- key rotation


def test_key_rotation_adds_a_signing_key(idp: IdP) -> None:
    old_token = alice_tokens(idp)["access_token"]
    old_kid = jwt.get_unverified_header(old_token)["kid"]
    before = {k["kid"] for k in idp.jwks()["keys"]}
    rotated = idp.rotate_keys()
    after = {k["kid"] for k in idp.jwks()["keys"]}
    assert after == before | {rotated["kid"]} and rotated["kid"] not in before
    tokens = alice_tokens(idp)  # sessions, clients and grants survive the rotation
    assert jwt.get_unverified_header(tokens["access_token"])["kid"] == rotated["kid"]
    assert jwt.get_unverified_header(tokens["id_token"])["kid"] == rotated["kid"]
    assert verify(idp, tokens["access_token"], MCP_RESOURCE)["sub"] == "alice"
    assert verify(idp, old_token, MCP_RESOURCE)["sub"] == "alice"  # the old key is still published
    assert old_kid in after
    # a token signed with the old key still works as a subject token
    r = exchange(idp, BROKER, subject_token=old_token, audience="api://upstream")
    assert r.status_code == 200, r.text


# ------------------------------------------------- a stock MCP OAuth client


def test_mcp_sdk_oauth_client_signs_in(idp: IdP) -> None:
    """The Python MCP SDK's OAuthClientProvider discovers the provider from a resource server's
    metadata, registers itself, logs alice in through the forms and calls a tool with the JWT."""
    import threading
    import time

    import anyio
    import uvicorn
    from mcp import ClientSession
    from mcp.client.streamable_http import streamablehttp_client
    from mcp.server.auth.middleware.auth_context import get_access_token
    from mcp.server.auth.provider import AccessToken
    from mcp.server.auth.settings import AuthSettings
    from mcp.server.fastmcp import FastMCP

    port = _free_port()
    resource = f"http://127.0.0.1:{port}/mcp"

    class Verifier:
        async def verify_token(self, token: str) -> AccessToken | None:
            try:
                c = verify(idp, token, resource)
            except Exception:  # noqa: BLE001 - any failure is "not valid"
                return None
            return AccessToken(token=token, client_id=c["client_id"], scopes=c.get("scope", "").split(), expires_at=c["exp"], resource=c["aud"], subject=c["sub"], claims=c)

    server_app = FastMCP(
        "rs",
        host="127.0.0.1",
        port=port,
        token_verifier=Verifier(),
        auth=AuthSettings(issuer_url=idp.issuer, resource_server_url=resource, required_scopes=["mcp"], validate_token_resource=True),
    )

    @server_app.tool()
    def whoami() -> str:
        tok = get_access_token()
        assert tok is not None and tok.claims is not None
        return f"{tok.subject} {tok.claims['email']}"

    server = uvicorn.Server(uvicorn.Config(server_app.streamable_http_app(), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "resource server did not start"
        time.sleep(0.02)

    auth, storage = mcp_oauth_provider(resource, "alice", "alice-pw")

    async def call() -> str:
        async with streamablehttp_client(resource, auth=auth) as (read, write, _):
            async with ClientSession(read, write) as session:
                await session.initialize()
                result = await session.call_tool("whoami", {})
                return result.content[0].text  # type: ignore[union-attr]

    try:
        assert anyio.run(call) == "alice alice@example.com"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    assert storage.info is not None and storage.tokens is not None and storage.tokens.refresh_token
    assert verify(idp, storage.tokens.access_token, resource)["aud"] == resource
