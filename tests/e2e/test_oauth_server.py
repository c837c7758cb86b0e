"""Tessera as the OAuth 2.1 authorization server of MCP clients (issue #8): clients discover
Tessera from its protected-resource metadata, register (RFC 7591) or name a client ID metadata
document, send the user to Tessera's /oauth/authorize, where Tessera signs the user in at the
organisation's provider (the test OpenID provider, tests/testbed/idp) and asks for consent, and
get Tessera's own opaque tokens; a brokered call then reaches the upstream with a token
exchanged from the *provider's* token Tessera kept for that user — so the upstream sees the
right person.

Real peers only: the test provider, a protected upstream behind `token_exchange`
(upstreams/protected_upstream.py; `whoami` returns the token's subject), `tessera serve`.
Clients: the official Python MCP SDK's OAuth client, the MCP Inspector CLI (npm
@modelcontextprotocol/inspector, which runs the OAuth flow itself and prints the URL for the
user), and raw httpx for the rejections. The browser is an httpx cookie jar that signs in at
the provider's forms and answers Tessera's consent page (oauth_as.Browser).

Users: alice and bob (SDK), carol (client ID metadata document), dave (Inspector), erin
(rejections), frank (consent), each test registering clients of its own, so that the order of
the tests does not change what a test sees.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from brokered import (
    Upstream,
    gateway_auth,
    grants,
    inbound,
    new_secrets,
    provider_config,
    start_protected_upstream,
    tx_server,
    wait_gateway_listening,
    whoami,
)
from conftest import SEP, Gateway, ProcessRegistry, free_port, start_gateway, stdio_lossless, wait_until
from idp import IdP  # noqa: E402 - brokered puts tests/testbed on sys.path
from oauth_as import (
    ACCESS_PREFIX,
    REDIRECT_URI,
    SCOPE,
    Browser,
    ConsentPage,
    DocumentServer,
    Landing,
    RegisteredClient,
    as_metadata,
    authorize_and_exchange,
    challenge,
    exchange_code,
    inspector_cli,
    mcp_initialize,
    mcp_status,
    new_request,
    oauth_error,
    page_text,
    refresh,
    register,
    register_client,
    revoke,
    sdk_oauth,
    sdk_session,
    token_request,
    tokens_of,
)

pytestmark = pytest.mark.anyio

TX, DEMO = "whoami_tx", "demo"
USERS = ("alice", "bob", "carol", "dave", "erin", "frank")


@dataclass
class Env:
    idp: IdP
    gw: Gateway
    up: Upstream
    tmp: Path

    @property
    def base(self) -> str:
        return self.gw.base

    def browser(self, user: str) -> Browser:
        return Browser(self.gw, self.idp, user)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    """The provider, a token-exchange upstream, and Tessera with `auth.authorization_server`."""
    tmp = tmp_path_factory.mktemp("oauth-server")
    logs = tmp / "logs"
    port = free_port()  # Tessera's, chosen first: the provider's redirect URIs name it
    signin_secret, broker_secrets, sealing_key = new_secrets()
    reg = ProcessRegistry()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TESSERA_SEALING_KEY", sealing_key)
        try:
            with IdP(config=provider_config(port, signin_secret, broker_secrets, []), log_dir=logs) as idp:
                up = start_protected_upstream(reg, idp.issuer, logs, TX)
                auth = gateway_auth(idp, port, signin_secret)  # store_idp_tokens: true
                auth["authorization_server"] = {
                    "access_token_ttl": "10m",
                    "refresh_token_ttl": "1d",
                    # This module registers more clients from 127.0.0.1, in less than a minute,
                    # than the default burst (20); the limit has a test and a gateway of its own.
                    "registration_rate_limit": False,
                }
                servers = {
                    TX: tx_server(idp, up, broker_secrets["broker-tx"], [f"{u}@example.com" for u in USERS]),
                    DEMO: stdio_lossless(),
                }
                extra = {"auth": auth, "public_url": f"http://127.0.0.1:{port}"}
                gw = start_gateway(reg, tmp / "gw", servers, extra=extra, wait_ready=False, port=port)
                wait_gateway_listening(gw, [DEMO])
                yield Env(idp, gw, up, tmp)
        finally:
            reg.stop_all()


def no_redirect(resp: httpx.Response, what: str) -> None:
    """An error about the client or its redirect URI is shown to the user, never redirected."""
    assert resp.status_code == 400, f"{what}: expected a 400 page, got {resp.status_code} {resp.headers.get('location')} {resp.text[:300]}"
    assert "location" not in resp.headers, f"{what}: redirected to {resp.headers['location']}"


def redirected_error(resp: httpx.Response, env: Env, redirect_uri: str, state: str, error: str) -> dict[str, str]:
    """An error sent back to the client's redirect URI, with its state and Tessera's iss."""
    assert resp.status_code in (302, 303), f"expected a redirect with error={error}, got {resp.status_code} {resp.text[:300]}"
    location = resp.headers["location"]
    assert location.split("?")[0] == redirect_uri, location
    q = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
    assert q.get("error") == error, location
    assert q.get("state") == state and q.get("iss") == env.base, location
    assert "code" not in q, location
    return q


# ------------------------------------------------------------------- metadata


def test_metadata_documents_name_tessera(env: Env) -> None:
    base = env.base
    docs = {}
    for path in ("/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"):
        r = as_metadata(env.gw, path)
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/json"), f"{path}: {r.status_code} {r.text[:300]}"
        docs[path] = doc = r.json()
        assert doc["issuer"] == base, f"{path}: issuer {doc['issuer']!r} is not the gateway's base URL"
        assert doc["authorization_endpoint"] == f"{base}/oauth/authorize"
        assert doc["token_endpoint"] == f"{base}/oauth/token"
        assert doc["registration_endpoint"] == f"{base}/oauth/register"
        assert doc["revocation_endpoint"] == f"{base}/oauth/revoke"
        assert doc["response_types_supported"] == ["code"]
        assert set(doc["grant_types_supported"]) == {"authorization_code", "refresh_token"}
        assert doc["code_challenge_methods_supported"] == ["S256"], "only S256: no plain PKCE"
        assert set(doc["token_endpoint_auth_methods_supported"]) == {"none", "client_secret_basic", "client_secret_post"}
        assert doc["client_id_metadata_document_supported"] is True
        assert doc["authorization_response_iss_parameter_supported"] is True
        assert SCOPE in doc["scopes_supported"], doc["scopes_supported"]
    assert docs["/.well-known/oauth-authorization-server"]["issuer"] == docs["/.well-known/openid-configuration"]["issuer"]

    prm_url = f"{base}/.well-known/oauth-protected-resource/mcp"
    prm = httpx.get(prm_url, timeout=10).json()
    assert prm["resource"] == env.gw.mcp_url
    assert prm["authorization_servers"] == [base], f"the protected resource must name Tessera, not the provider: {prm}"
    # An MCP client starts from a 401 on /mcp, whose challenge names that document.
    r = mcp_initialize(env.gw, None)
    assert r.status_code == 401 and f'resource_metadata="{prm_url}"' in challenge(r), challenge(r)


def test_registration_answers_per_rfc_7591(env: Env) -> None:
    public = register_client(env.gw, "public client", auth_method="none")
    assert public.client_secret is None and public.auth_method == "none", public.raw
    basic = register_client(env.gw, "confidential client", auth_method=None)
    assert basic.client_secret and basic.auth_method == "client_secret_basic", (
        "a registration without token_endpoint_auth_method gets RFC 7591's default, echoed in the answer "
        f"(the Python SDK decides how to authenticate from it): {basic.raw | {'client_secret': '…'}}")
    post = register_client(env.gw, "post client", auth_method="client_secret_post")
    assert post.client_secret and post.auth_method == "client_secret_post"
    assert basic.raw["redirect_uris"] == [REDIRECT_URI] and basic.raw["client_name"] == "confidential client"
    assert len({public.client_id, basic.client_id, post.client_id}) == 3

    for body, why in [
        ({"client_name": "no redirect"}, "redirect_uris missing"),
        ({"redirect_uris": []}, "redirect_uris empty"),
        ({"redirect_uris": ["not a url"]}, "redirect URI not a URL"),
        ({"redirect_uris": [REDIRECT_URI + "#frag"]}, "redirect URI with a fragment"),
        ({"redirect_uris": ["http://app.example.com/cb"]}, "plain http off loopback"),
        ({"redirect_uris": ["javascript:alert(1)"]}, "script URL"),
        ({"redirect_uris": [REDIRECT_URI], "token_endpoint_auth_method": "private_key_jwt"}, "unsupported auth method"),
        ({"redirect_uris": [REDIRECT_URI], "grant_types": ["client_credentials"]}, "unsupported grant type"),
        ([REDIRECT_URI], "not a JSON object"),
    ]:
        r = register(env.gw, body)
        assert r.status_code == 400, f"{why}: {r.status_code} {r.text[:300]}"
        assert r.json().get("error") in ("invalid_redirect_uri", "invalid_client_metadata"), f"{why}: {r.text[:300]}"
        assert "client_id" not in r.json(), f"{why}: {r.text[:300]}"


def test_registration_is_limited_per_address(env: Env, registry: ProcessRegistry, tmp_path: Path) -> None:
    """Open registration lets anyone add a row to the store, so each client address has a token
    bucket (`registration_rate_limit`): with a burst of 3, the 4th registration in a row from
    127.0.0.1 is refused with 429, a Retry-After and no new client. A gateway of its own, since
    the module's registers more clients than that (it only has to start: nobody signs in)."""
    port = free_port()
    _, _, sealing_key = new_secrets()
    auth = gateway_auth(env.idp, port, "unused: nobody signs in at this gateway")
    auth["authorization_server"] = {"registration_rate_limit": {"per_minute": 1, "burst": 3}}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TESSERA_SEALING_KEY", sealing_key)
        gw = start_gateway(
            registry,
            tmp_path / "gw",
            {DEMO: stdio_lossless()},
            extra={"auth": auth, "public_url": f"http://127.0.0.1:{port}"},
            wait_ready=False,
            port=port,
        )
    wait_gateway_listening(gw, [DEMO])
    for i in range(3):
        register_client(gw, f"within the burst {i}")
    r = register(gw, {"redirect_uris": [REDIRECT_URI], "token_endpoint_auth_method": "none", "client_name": "one too many"})
    assert r.status_code == 429, f"{r.status_code} {r.text[:400]}"
    retry = int(r.headers["retry-after"])
    assert 1 <= retry <= 60, retry  # one registration a minute: the next is at most a minute away
    assert r.headers["cache-control"] == "no-store"
    body = r.json()
    assert body["error"] == "temporarily_unavailable", body
    assert f"retry after {retry} s" in body["error_description"], body
    assert "client_id" not in body


# ------------------------------------------------------------ the Python SDK


async def test_python_sdk_client_completes_the_flow_and_the_upstream_sees_each_user(env: Env) -> None:
    """Discovery, registration, sign-in at the provider, consent, token — all by the SDK with
    a browser playing the user — then a brokered call whose upstream sees alice, and one with a
    second client for bob that sees bob. A revoked token makes the SDK authorize again, and the
    client alice approved is not asked again."""
    for user, auth_method in (("alice", None), ("bob", "none")):
        provider, storage, record = sdk_oauth(env.gw, env.idp, user, f"sdk client of {user}", auth_method=auth_method)
        try:
            await sdk_user_flow(env, user, auth_method, provider, storage, record)
        finally:
            record.browser.close()
    assert {"alice", "bob"} <= set(env.up.stats()["subjects"])


async def sdk_user_flow(env: Env, user: str, auth_method: str | None, provider: Any, storage: Any, record: Any) -> None:
    """One user's SDK client: the flow, the brokered call, what the SDK stored."""
    async with sdk_session(env.gw, provider) as client:
        w = await whoami(client, TX)
        # A second call on the same session needs no new authorization.
        assert (await whoami(client, TX))["sub"] == user
    assert len(record.auth_urls) == 1, f"{user}: the SDK was sent to authorize {len(record.auth_urls)} times"
    url = record.auth_urls[0]
    assert url.startswith(f"{env.base}/oauth/authorize?"), f"the SDK was not sent to Tessera: {url}"
    q = parse_qs(urlsplit(url).query)
    assert q["resource"] == [env.gw.mcp_url] and q["code_challenge_method"] == ["S256"], q
    landing = record.landings[0]
    assert len(landing.consent_pages) == 1, f"{user}: consent pages shown: {len(landing.consent_pages)}\n" + "\n".join(landing.trace)
    page = landing.consent_pages[0].text
    assert f"sdk client of {user}" in page and REDIRECT_URI in page and SCOPE in page, page[:500]
    assert landing.iss == env.base, f"RFC 9207 iss: {landing.location}"
    info, tokens = storage.info, storage.tokens
    assert info is not None and not info.client_id.startswith("http"), "the SDK registered itself at Tessera"
    if auth_method is None:
        assert info.client_secret and info.token_endpoint_auth_method == "client_secret_basic", info
    else:
        assert info.client_secret is None and info.token_endpoint_auth_method == "none", info
    assert tokens is not None and tokens.access_token.startswith(ACCESS_PREFIX), "Tessera's own token, not the provider's"
    assert tokens.refresh_token and tokens.refresh_token.startswith("tsr_rt_")
    assert w["sub"] == user, f"{user}'s call reached the upstream as {w['sub']}"
    assert w["aud"] == env.up.url and w["client_id"] == "broker-tx" and w["act"] == {"sub": "broker-tx"}, w

    if user == "alice":
        # Revoked at Tessera: the next connection gets a 401, the SDK authorizes again, and
        # alice, having approved this client, is not shown a consent page again.
        assert revoke_sdk_token(env, info, tokens.access_token).status_code == 200
        assert mcp_status(env.gw, tokens.access_token) == 401
        async with sdk_session(env.gw, provider) as client:
            assert (await whoami(client, TX))["sub"] == "alice"
        assert len(record.auth_urls) == 2, "the SDK did not authorize again after its token was revoked"
        again = record.landings[1]
        assert again.code and not again.consent_pages, "a client alice approved was asked again:\n" + "\n".join(again.trace)
        assert storage.tokens.access_token != tokens.access_token


def revoke_sdk_token(env: Env, info: Any, token: str) -> httpx.Response:
    client = RegisteredClient(info.client_id, REDIRECT_URI, info.token_endpoint_auth_method or "none", info.client_secret)
    return revoke(env.gw, client, token)


async def test_python_sdk_with_a_client_id_metadata_document(env: Env) -> None:
    """The client is known by the URL of its metadata document (SEP-991): Tessera fetches it,
    shows its name on the consent page, and issues tokens to it as a public client.

    The SDK only accepts an https `client_metadata_url`; a test can serve only http on
    loopback, so the SDK is given the URL as its (pre-registered) client_id instead — the
    requests it then makes are the same ones it makes for a metadata document."""
    with DocumentServer() as docs:
        url = docs.publish("/oauth/client.json", "Metadata Document Client")
        info = {"client_id": url, "token_endpoint_auth_method": "none", "redirect_uris": [REDIRECT_URI]}
        provider, storage, record = sdk_oauth(env.gw, env.idp, "carol", "ignored", client_info=info)
        async with sdk_session(env.gw, provider) as client:
            w = await whoami(client, TX)
        assert w["sub"] == "carol", w
        assert docs.count("/oauth/client.json") >= 1, f"Tessera never fetched the document: {docs.hits}"
        assert parse_qs(urlsplit(record.auth_urls[0]).query)["client_id"] == [url]
        [page] = record.landings[0].consent_pages
        assert "Metadata Document Client" in page.text and url in page.text and REDIRECT_URI in page.text, page.text[:500]
        assert storage.tokens is not None and storage.tokens.access_token.startswith(ACCESS_PREFIX)


def test_client_metadata_documents_that_are_refused(env: Env) -> None:
    """A document whose client_id is not its URL, a redirect URI the document does not list,
    a document that is not there: a page, no redirect."""
    with DocumentServer() as docs, env.browser("carol") as b:
        good = docs.publish("/good.json", "Good Client")
        liar = docs.url("/liar.json")
        docs.documents["/liar.json"] = {**docs.documents["/good.json"], "client_id": good}
        missing = docs.url("/missing.json")
        for client_id, redirect_uri, why in [
            (liar, REDIRECT_URI, "client_id of the document is not its URL"),
            (good, REDIRECT_URI + "x", "redirect URI not in the document"),
            (missing, REDIRECT_URI, "no document at the URL (404)"),
        ]:
            req = new_request(env.gw, client_id, redirect_uri=redirect_uri)
            no_redirect(b.http.get(req.url()), why)


def test_client_metadata_document_at_a_private_address_is_refused_without_a_fetch(env: Env) -> None:
    """SSRF: a client_id URL at a private, link-local or unspecified address is refused before
    any connection, and so is a document that redirects there.

    The first checks use addresses that end up on this machine (0.0.0.0 connects to the local
    host), where a fetch would be seen by the test's own document server; only once those are
    refused without a fetch are the private ranges named in the issue tried."""
    with DocumentServer() as docs, httpx.Client(timeout=15) as c:
        docs.publish("/client.json", "Local Client")
        docs.publish("/after-hop.json", "Hop Client")
        docs.documents["/hop.json"] = ("redirect", f"http://0.0.0.0:{docs.port}/after-hop.json")
        for client_id in (f"http://0.0.0.0:{docs.port}/client.json", f"https://0.0.0.0:{docs.port}/client.json"):
            r = c.get(new_request(env.gw, client_id).url())
            no_redirect(r, client_id)
            assert "not allowed" in page_text(r) or "private" in page_text(r), page_text(r)[:300]
        assert docs.hits == [], f"Tessera fetched a document at 0.0.0.0: {docs.hits}"

        r = c.get(new_request(env.gw, docs.url("/hop.json")).url())
        no_redirect(r, "a document redirecting to 0.0.0.0")
        assert "/after-hop.json" not in docs.hits, f"Tessera followed a redirect to 0.0.0.0: {docs.hits}"

        for client_id in ("https://10.0.0.5/client.json", "https://169.254.169.254/x", "https://192.168.1.10/c.json"):
            r = c.get(new_request(env.gw, client_id).url())
            no_redirect(r, client_id)
            text = page_text(r).lower()
            assert "private" in text or "not allowed" in text, f"{client_id}: the page does not say why: {text[:300]}"


# ------------------------------------------------------------- the Inspector


def test_mcp_inspector_cli_completes_the_flow_and_calls_a_brokered_tool(env: Env, registry: ProcessRegistry, tmp_path: Path) -> None:
    """The MCP Inspector CLI (npm @modelcontextprotocol/inspector, --cli) runs the flow itself:
    discovery, dynamic registration, PKCE, its loopback callback, the token; the test only
    plays the user's browser on the URL it prints. Then tools/call of the brokered whoami."""
    with inspector_cli(registry, tmp_path / "inspector", env.gw.mcp_url,
                       "--method", "tools/call", "--tool-name", f"{TX}{SEP}whoami") as run:
        url = run.authorization_url()
        assert url.startswith(f"{env.base}/oauth/authorize?"), f"the Inspector was not sent to Tessera: {url}"
        q = parse_qs(urlsplit(url).query)
        assert q["redirect_uri"] == [run.callback_url] and q["code_challenge_method"] == ["S256"], q
        assert q.get("resource") == [env.gw.mcp_url], f"the Inspector's request names another resource: {q.get('resource')}"
        assert q["client_id"][0] and not q["client_id"][0].startswith("http"), "the Inspector registered itself (RFC 7591)"
        with env.browser("dave") as b:
            landing = b.approve(url, run.callback_url)
            assert len(landing.consent_pages) == 1 and landing.iss == env.base, landing.location
            done = httpx.get(landing.location, timeout=30)  # the Inspector's loopback callback
            assert done.status_code == 200, f"the Inspector's callback: {done.status_code} {done.text[:300]}"
        code = run.wait()
        assert code == 0, f"the Inspector exited with {code}:\n{run.log()[-3000:]}"
        assert "Authorization complete" in run.log(), run.log()[-3000:]
        result = run.result()
    result = result.get("result", result)  # --output writes the result itself; stdout wraps it
    assert result.get("isError") is not True, result
    w = json.loads(result["content"][0]["text"])
    assert w["sub"] == "dave" and w["aud"] == env.up.url, w


def test_mcp_inspector_cli_lists_tools_with_a_token_from_the_flow(env: Env, registry: ProcessRegistry, tmp_path: Path) -> None:
    """A token from Tessera's flow given to the Inspector CLI as a header works as well (the
    way a client that got its token elsewhere uses it)."""
    client = register_client(env.gw, "token for the inspector")
    with env.browser("dave") as b:
        _, tokens = authorize_and_exchange(env.gw, b, client)
    with inspector_cli(registry, tmp_path / "inspector", env.gw.mcp_url, "--method", "tools/list",
                       "--header", f"Authorization: Bearer {tokens['access_token']}") as run:
        code = run.wait()
        assert code == 0, f"the Inspector exited with {code}:\n{run.log()[-3000:]}"
        result = run.result()
    tools = {t["name"] for t in (result.get("result", result))["tools"]}
    assert f"{TX}{SEP}whoami" in tools and f"{DEMO}{SEP}echo" in tools, sorted(tools)


# -------------------------------------------------------------- rejections


def test_replayed_code_is_refused_and_its_tokens_are_revoked(env: Env) -> None:
    client = register_client(env.gw, "replay")
    with env.browser("erin") as b:
        req = new_request(env.gw, client)
        landing = b.approve(req.url(), req.redirect_uri)
    tokens = tokens_of(exchange_code(env.gw, client, req, landing.code))
    assert mcp_status(env.gw, tokens["access_token"]) == 200
    body = oauth_error(exchange_code(env.gw, client, req, landing.code), 400, "invalid_grant")
    assert body.get("error_description"), body
    r = mcp_initialize(env.gw, tokens["access_token"])
    assert r.status_code == 401 and challenge(r).startswith("Bearer "), "the tokens of a replayed code still work"
    oauth_error(refresh(env.gw, client, tokens["refresh_token"]), 400, "invalid_grant")


def test_pkce_mismatch_is_refused(env: Env) -> None:
    client = register_client(env.gw, "pkce")
    with env.browser("erin") as b:
        req = new_request(env.gw, client)
        landing = b.approve(req.url(), req.redirect_uri)
        other = new_request(env.gw, client)
        oauth_error(exchange_code(env.gw, client, req, landing.code, code_verifier=other.verifier), 400, "invalid_grant")
        # Without a verifier at all.
        req2 = new_request(env.gw, client)
        landing2 = b.approve(req2.url(), req2.redirect_uri)
        r = exchange_code(env.gw, client, req2, landing2.code, code_verifier=None)
        assert r.status_code == 400 and r.json()["error"] in ("invalid_request", "invalid_grant"), r.text
        # PKCE is required at /authorize too, and only S256.
        for overrides, why in [({"code_challenge": None, "code_challenge_method": None}, "no PKCE"),
                               ({"code_challenge_method": "plain"}, "plain PKCE"),
                               ({"code_challenge_method": None}, "no method")]:
            req3 = new_request(env.gw, client)
            redirected_error(b.http.get(req3.url(**overrides)), env, client.redirect_uri, req3.state, "invalid_request")


def test_redirect_uri_off_by_one_character_is_refused(env: Env) -> None:
    client = register_client(env.gw, "redirect", redirect_uris=[REDIRECT_URI, "http://127.0.0.1:9/other"])
    near = [REDIRECT_URI[:-1], REDIRECT_URI + "/", REDIRECT_URI[:-1] + "K", REDIRECT_URI.replace("127.0.0.1:9", "127.0.0.1:8")]
    with env.browser("erin") as b:
        for wrong in near:
            no_redirect(b.http.get(new_request(env.gw, client, redirect_uri=wrong).url()), f"authorize with redirect_uri {wrong}")
        req = new_request(env.gw, client)
        landing = b.approve(req.url(), req.redirect_uri)
    body = oauth_error(exchange_code(env.gw, client, req, landing.code, redirect_uri=REDIRECT_URI[:-1] + "K"), 400, "invalid_grant")
    assert "redirect" in body.get("error_description", ""), body


def test_unknown_client_is_refused(env: Env) -> None:
    with httpx.Client(timeout=15) as c:
        no_redirect(c.get(new_request(env.gw, "no-such-client").url()), "authorize for an unknown client")
        no_redirect(c.get(new_request(env.gw, "").url()), "authorize without client_id")
    r = token_request(env.gw, {"grant_type": "authorization_code", "code": "nope", "redirect_uri": REDIRECT_URI,
                               "code_verifier": "v" * 43, "client_id": "no-such-client"})
    oauth_error(r, 401, "invalid_client")
    # A registered confidential client with a wrong secret is no better.
    client = register_client(env.gw, "secret", auth_method="client_secret_basic")
    wrong = RegisteredClient(client.client_id, client.redirect_uri, client.auth_method, client.client_secret + "x")
    oauth_error(token_request(env.gw, {"grant_type": "refresh_token", "refresh_token": "tsr_rt_nope"}, wrong), 401, "invalid_client")


def test_refresh_token_reuse_revokes_the_whole_family(env: Env) -> None:
    client = register_client(env.gw, "rotation")
    with env.browser("erin") as b:
        _, t0 = authorize_and_exchange(env.gw, b, client)
    assert mcp_status(env.gw, t0["access_token"]) == 200
    t1 = tokens_of(refresh(env.gw, client, t0["refresh_token"]))
    assert t1["refresh_token"] != t0["refresh_token"] and t1["access_token"] != t0["access_token"], "refresh did not rotate"
    assert mcp_status(env.gw, t1["access_token"]) == 200
    t2 = tokens_of(refresh(env.gw, client, t1["refresh_token"]))
    assert mcp_status(env.gw, t2["access_token"]) == 200

    # t1's refresh token again: a reuse. The whole family is gone, the newest tokens included.
    oauth_error(refresh(env.gw, client, t1["refresh_token"]), 400, "invalid_grant")
    for name, tok in (("newest", t2), ("previous", t1), ("first", t0)):
        r = mcp_initialize(env.gw, tok["access_token"])
        assert r.status_code == 401, f"the {name} access token of a reused family still works: {r.status_code}"
        assert challenge(r).startswith("Bearer ") and "resource_metadata=" in challenge(r), challenge(r)
    oauth_error(refresh(env.gw, client, t2["refresh_token"]), 400, "invalid_grant")

    # Another family of the same user and client is untouched.
    with env.browser("erin") as b:
        _, other = authorize_and_exchange(env.gw, b, client)
    assert mcp_status(env.gw, other["access_token"]) == 200


def test_credential_events_reach_the_activity_log_without_secrets(env: Env) -> None:
    """Every credential operation of the authorization server is audited (method
    authorization_server, server = the client's id): consent, issue, refresh, reuse → the grant
    revoked, revocation; no code, token or secret in any row."""
    client = register_client(env.gw, "audited")
    with env.browser("erin") as b:
        _, t0 = authorize_and_exchange(env.gw, b, client)
    t1 = tokens_of(refresh(env.gw, client, t0["refresh_token"]))
    oauth_error(refresh(env.gw, client, t0["refresh_token"]), 400, "invalid_grant")
    with env.browser("erin") as b:
        _, t2 = authorize_and_exchange(env.gw, b, client)
    assert revoke(env.gw, client, t2["refresh_token"]).status_code == 200
    db = env.tmp / "gw" / "data" / "tessera.db"
    secrets_seen = {t0["access_token"], t0["refresh_token"], t1["access_token"], t1["refresh_token"], t2["access_token"], t2["refresh_token"]}
    rows: list[tuple[Any, ...]] = []

    def recorded() -> bool:
        con = sqlite3.connect(str(db), timeout=10)
        try:
            rows[:] = con.execute(
                "SELECT action, outcome, reason, user_id, method, server, tool, request_id FROM activity "
                "WHERE server = ? ORDER BY ts, id",
                (client.client_id,),
            ).fetchall()
        finally:
            con.close()
        actions = [r[0] for r in rows]
        return all(a in actions for a in ("client_approve", "token_issue", "token_refresh", "grant_revoke", "token_revoke"))

    wait_until(recorded, 10, "the authorization server's events in the activity log")
    assert {r[4] for r in rows} == {"authorization_server"}, rows
    reuse = [r for r in rows if r[0] == "grant_revoke"]
    assert reuse and reuse[0][1] == "denied" and reuse[0][2] == "refresh_token_reused", reuse
    assert all(r[3] for r in rows if r[0] in ("client_approve", "token_issue", "token_refresh")), "user named"
    text = repr(rows)
    for secret in secrets_seen:
        assert secret not in text, "a token reached the activity log"


def test_refresh_token_bound_to_its_client(env: Env) -> None:
    owner = register_client(env.gw, "owner")
    thief = register_client(env.gw, "thief")
    with env.browser("erin") as b:
        _, t = authorize_and_exchange(env.gw, b, owner)
    oauth_error(refresh(env.gw, thief, t["refresh_token"]), 400, "invalid_grant")


def test_token_for_another_resource_is_refused(env: Env) -> None:
    client = register_client(env.gw, "resource")
    other = "http://127.0.0.1:1/mcp"
    with env.browser("erin") as b:
        req = new_request(env.gw, client)
        redirected_error(b.http.get(req.url(resource=other)), env, client.redirect_uri, req.state, "invalid_target")
        landing = b.approve(req.url(), req.redirect_uri)
        oauth_error(exchange_code(env.gw, client, req, landing.code, resource=other), 400, "invalid_target")
        _, tokens = authorize_and_exchange(env.gw, b, client)
    oauth_error(refresh(env.gw, client, tokens["refresh_token"], resource=other), 400, "invalid_target")
    oauth_error(refresh(env.gw, client, tokens["refresh_token"], resource=f"{env.base}/api"), 400, "invalid_target")


def test_revoked_tokens_stop_working(env: Env) -> None:
    """RFC 7009: 200 for any token, known or not; a revoked token is refused at once."""
    client = register_client(env.gw, "revocation", auth_method="client_secret_post")
    with env.browser("erin") as b:
        _, t = authorize_and_exchange(env.gw, b, client)
    assert mcp_status(env.gw, t["access_token"]) == 200
    assert revoke(env.gw, client, t["access_token"], "access_token").status_code == 200
    assert mcp_status(env.gw, t["access_token"]) == 401
    assert revoke(env.gw, client, t["refresh_token"]).status_code == 200
    oauth_error(refresh(env.gw, client, t["refresh_token"]), 400, "invalid_grant")
    assert revoke(env.gw, client, "tsr_at_" + "x" * 40).status_code == 200, "an unknown token is not an error (RFC 7009 §2.2)"
    # A made-up token of Tessera's shape is refused like any unknown one.
    r = mcp_initialize(env.gw, inbound("tsr_at_" + "A" * 43))
    assert r.status_code == 401 and challenge(r).startswith("Bearer "), r.status_code




# ------------------------------------------------------------------ consent


def test_consent_page_is_not_frameable_and_answers_only_this_browser(env: Env) -> None:
    client = register_client(env.gw, "Consent <Check> & Co")
    with env.browser("frank") as b, env.browser("frank") as other_browser:
        req = new_request(env.gw, client)
        page = b.authorize(req.url(), req.redirect_uri, decision=None)
        assert isinstance(page, ConsentPage), page
        h = page.response.headers
        assert "frame-ancestors 'none'" in h.get("content-security-policy", ""), h
        assert h.get("x-frame-options", "").upper() == "DENY", h
        assert "no-store" in h.get("cache-control", ""), h
        assert "Consent &lt;Check&gt; &amp; Co" in page.response.text, "the client name is shown, escaped"
        assert REDIRECT_URI in page.text and SCOPE in page.text
        assert set(page.inputs) >= {"request", "csrf"} and {v for _, v in page.buttons} >= {"approve", "deny"}

        # Cross-site: refused (the session cookie would not even travel with SameSite=Lax).
        r = b.post_decision(page, "approve", headers={"origin": "https://evil.example", "sec-fetch-site": "cross-site"})
        assert r.status_code == 403 and "location" not in r.headers, f"cross-site decision: {r.status_code} {r.headers.get('location')}"
        # Another browser with the page's hidden fields but not the session: no code.
        r = other_browser.post_decision(page, "approve")
        assert r.status_code >= 400 and "code=" not in r.headers.get("location", ""), f"decision without the session: {r.status_code} {r.headers.get('location')}"
        # The real answer still works.
        r = b.post_decision(page, "approve")
        assert r.status_code in (302, 303), r.text[:300]
        landing = Landing(r.headers["location"], [page], [])
        assert landing.code and landing.state == req.state and landing.iss == env.base, landing.location
        # The page cannot be answered twice.
        r = b.post_decision(page, "approve")
        assert r.status_code >= 400 and "code=" not in r.headers.get("location", ""), r.headers.get("location")

        # A forged CSRF value on a fresh page: refused.
        req2 = new_request(env.gw, register_client(env.gw, "csrf"))
        page2 = b.authorize(req2.url(), req2.redirect_uri, decision=None)
        assert isinstance(page2, ConsentPage)
        forged = {**page2.form_data("approve"), "csrf": "forged"}
        r = b.post_decision(page2, "approve", data=forged)
        assert r.status_code == 403 and "location" not in r.headers, f"forged csrf: {r.status_code} {r.headers.get('location')}"


def test_refusing_consent_returns_access_denied(env: Env) -> None:
    client = register_client(env.gw, "denied")
    with env.browser("frank") as b:
        req = new_request(env.gw, client)
        landing = b.authorize(req.url(), req.redirect_uri, decision="deny")
        assert isinstance(landing, Landing) and len(landing.consent_pages) == 1
        assert landing.error == "access_denied" and landing.code is None, landing.location
        assert landing.state == req.state and landing.iss == env.base, landing.location
        # A refusal is not remembered as an approval: the next request asks again.
        req2 = new_request(env.gw, client)
        page = b.authorize(req2.url(), req2.redirect_uri, decision=None)
        assert isinstance(page, ConsentPage), "after a refusal the client got a code without asking"


def test_a_client_approved_before_is_not_asked_again(env: Env) -> None:
    client = register_client(env.gw, "remembered")
    with env.browser("frank") as b:
        req = new_request(env.gw, client)
        first = b.approve(req.url(), req.redirect_uri)
        assert len(first.consent_pages) == 1 and first.code
        # Same browser, signed in: the authorization answers at once with a code.
        req2 = new_request(env.gw, client)
        r = b.http.get(req2.url())
        assert r.status_code in (302, 303), f"expected an immediate redirect with a code, got {r.status_code} {page_text(r)[:300]}"
        q = parse_qs(urlsplit(r.headers["location"]).query)
        assert r.headers["location"].startswith(client.redirect_uri) and q.get("code") and q.get("state") == [req2.state], r.headers["location"]
        tokens_of(exchange_code(env.gw, client, req2, q["code"][0]))
    # A new browser (a new Tessera session) of the same user: sign-in, then no consent page.
    with env.browser("frank") as b2:
        req3 = new_request(env.gw, client)
        again = b2.approve(req3.url(), req3.redirect_uri)
        assert again.code and not again.consent_pages, "frank was asked again for a client he approved:\n" + "\n".join(again.trace)
    # Another user has approved nothing.
    with env.browser("erin") as b3:
        req4 = new_request(env.gw, client)
        assert isinstance(b3.authorize(req4.url(), req4.redirect_uri, decision=None), ConsentPage)


# ------------------------------------------------ the provider's sign-in ends

PROVIDER_SKEW = 60  # Tessera renews a provider token expiring within this many seconds (subject_token::REFRESH_SKEW)


def test_the_provider_sign_in_is_renewed_and_when_it_cannot_be_the_client_must_sign_in_again(env: Env) -> None:
    """Behind each Tessera token is the user's sign-in at the provider. Tessera renews the
    provider's tokens ahead of expiry, so the Tessera token keeps working; once the provider
    refuses (its grants revoked), /mcp answers 401 with a Bearer challenge — never a call on a
    stale token — and the refresh grant says invalid_grant. The client's new authorization must
    then work: Tessera has to send the user to the provider again rather than hand out a code
    for a user it can no longer act for.

    The provider's tokens live PROVIDER_SKEW + 10 s here, so Tessera renews them every ~10 s."""
    before = env.idp.settings()["access_token_ttl"]
    env.idp.settings(access_token_ttl=PROVIDER_SKEW + 10)
    client = register_client(env.gw, "provider session")
    try:
        with env.browser("bob") as b:
            _, t = authorize_and_exchange(env.gw, b, client)
            renewed = grants(env.idp, "refresh_token")["success"]
            wait_until(lambda: mcp_status(env.gw, t["access_token"]) == 200 and grants(env.idp, "refresh_token")["success"] > renewed,
                       PROVIDER_SKEW, "Tessera to renew bob's provider tokens ahead of expiry", interval=0.5)
            assert mcp_status(env.gw, t["access_token"]) == 200, "the token stopped working although the provider renewed"

            assert env.idp.revoke_grants("bob") >= 1
            r = wait_until(lambda: (lambda r: r if r.status_code == 401 else None)(mcp_initialize(env.gw, t["access_token"])),
                           PROVIDER_SKEW, "Tessera to refuse a token whose provider sign-in cannot be renewed", interval=0.5)
            assert challenge(r).startswith("Bearer ") and "resource_metadata=" in challenge(r), challenge(r)
            oauth_error(refresh(env.gw, client, t["refresh_token"]), 400, "invalid_grant")

            env.idp.settings(access_token_ttl=before)
            # The client authorizes again, in the same browser (its Tessera session may still be
            # alive): the result must be a token that works, not another invalid_grant.
            req = new_request(env.gw, client)
            landing = b.approve(req.url(), req.redirect_uri)
            assert landing.code, landing.location
            r = exchange_code(env.gw, client, req, landing.code)
            assert r.status_code == 200, (
                "re-authorizing after the provider sign-in ended does not recover (a code without a new sign-in at the "
                f"provider?): {r.status_code} {r.text[:300]}\n" + "\n".join(landing.trace))
            t2 = tokens_of(r)
            assert mcp_status(env.gw, t2["access_token"]) == 200
    finally:
        env.idp.settings(access_token_ttl=before)
