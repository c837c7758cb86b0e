"""Browser sign-in through Tessera against the real test OpenID provider, and personal access
tokens: the happy paths, login CSRF / state / replay / open-redirect rejections, logout, and a
final scan that no response and no gateway log line carries a secret the test saw."""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import httpx
import pytest

from conftest import JWT_LIKE, REPO, TESSERA_BIN, Gateway, ProcessRegistry, free_port, start_gateway, wait_gateway_ready, register_secret

sys.path.insert(0, str(REPO / "tests" / "testbed"))
from idp import USERS, IdP, browser_login  # noqa: E402

CLIENT_ID = "tessera"
LOGIN_COOKIE = "tessera_login"  # plain http on 127.0.0.1: no __Host- prefix, no Secure
SESSION_COOKIE = "tessera_session"


@dataclass
class Env:
    idp: IdP
    gw: Gateway
    client_secret: str
    sealing_key: str
    responses: list[httpx.Response] = field(default_factory=list)
    secrets: dict[str, str] = field(default_factory=dict)

    def client(self) -> httpx.Client:
        """A 'browser' for the gateway: cookie jar, no redirect following, every response kept."""

        def keep(r: httpx.Response) -> None:
            r.read()
            self.responses.append(r)

        return httpx.Client(base_url=self.gw.base, timeout=10, event_hooks={"response": [keep]})

    def remember(self, what: str, value: str) -> None:
        assert value
        register_secret(value)
        self.secrets[f"{what}#{len(self.secrets)}"] = value


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("signin")
    port = free_port()
    client_secret = "cs-" + secrets.token_urlsafe(24)
    sealing_key = base64.b64encode(secrets.token_bytes(32)).decode()
    config = {
        "clients": [
            {
                "client_id": CLIENT_ID,
                "client_secret": client_secret,
                "redirect_uris": [f"http://127.0.0.1:{port}/auth/callback"],
                "grant_types": ["authorization_code", "refresh_token"],
                "response_types": ["code"],
                "token_endpoint_auth_method": "client_secret_basic",
            }
        ],
        "auto_consent": True,
    }
    reg = ProcessRegistry()
    old_key = os.environ.get("TESSERA_SEALING_KEY")
    os.environ["TESSERA_SEALING_KEY"] = sealing_key
    try:
        with IdP(config=config, log_dir=tmp / "logs") as idp:
            auth = {
                "issuer": idp.issuer,
                "client_id": CLIENT_ID,
                "client_secret": client_secret,
                "scopes": ["openid", "email", "profile"],
                "admin_emails": ["ALICE@example.com"],
                "store_idp_tokens": True,
                "session_ttl": "1h",
            }
            gw = start_gateway(reg, tmp, {}, extra={"listen": f"127.0.0.1:{port}", "auth": auth}, wait_ready=False)
            gw.port = port
            wait_gateway_ready(gw)
            e = Env(idp, gw, client_secret, sealing_key)
            e.remember("client_secret", client_secret)
            e.remember("sealing_key", sealing_key)
            yield e
    finally:
        reg.stop_all()
        if old_key is None:
            os.environ.pop("TESSERA_SEALING_KEY", None)
        else:
            os.environ["TESSERA_SEALING_KEY"] = old_key


def start_login(env: Env, c: httpx.Client, return_to: str | None = None) -> str:
    """GET /auth/login; returns the provider's authorize URL (login cookie now in c)."""
    r = c.get("/auth/login", params={"return_to": return_to} if return_to is not None else None)
    assert r.status_code == 302, r.text
    assert c.cookies.get(LOGIN_COOKIE), r.headers
    set_cookie = r.headers["set-cookie"]
    assert "HttpOnly" in set_cookie and "SameSite=Lax" in set_cookie and "Path=/" in set_cookie
    url = r.headers["location"]
    q = parse_qs(urlsplit(url).query)
    assert url.startswith(env.idp.issuer)
    assert q["code_challenge_method"] == ["S256"] and q["code_challenge"][0]
    assert q["state"][0] and q["nonce"][0]
    assert q["redirect_uri"] == [f"{env.gw.base}/auth/callback"]
    return url


def idp_callback(env: Env, authorize_url: str, user: str) -> str:
    callback = browser_login(authorize_url, user, USERS[user]["password"])
    code = parse_qs(urlsplit(callback).query).get("code", [""])[0]
    env.remember("authorization_code", code)
    return callback


def sign_in(env: Env, user: str, return_to: str | None = None) -> tuple[httpx.Client, httpx.Response]:
    c = env.client()
    callback = idp_callback(env, start_login(env, c, return_to), user)
    r = c.get(callback)
    assert r.status_code == 302, r.text
    session = c.cookies.get(SESSION_COOKIE)
    assert session, r.headers
    env.remember("session_cookie", session)
    assert any(h.startswith(f"{SESSION_COOKIE}=") and "Max-Age=3600" in h and "HttpOnly" in h for h in r.headers.get_list("set-cookie"))
    assert not c.cookies.get(LOGIN_COOKIE), "the login cookie is cleared after the callback"
    return c, r


def with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    q = {k: v[0] for k, v in parse_qs(parts.query).items()}
    q.update(changes)
    return urlunsplit(parts._replace(query=urlencode(q)))


def test_alice_signs_in_as_admin_and_returns_to_her_page(env: Env) -> None:
    c, r = sign_in(env, "alice", return_to="/ui/servers?tab=mine")
    assert r.headers["location"] == "/ui/servers?tab=mine"
    me = c.get("/api/v1/me")
    assert me.status_code == 200, me.text
    body = me.json()
    assert body["email"] == "alice@example.com"
    assert body["role"] == "admin"
    assert body["auth"] == "session"
    assert body["id"] and body["display_name"]
    assert set(body) == {"id", "email", "display_name", "role", "auth"}


def test_bob_signs_in_as_user(env: Env) -> None:
    c, r = sign_in(env, "bob")
    assert r.headers["location"] == "/"
    body = c.get("/api/v1/me").json()
    assert (body["email"], body["role"]) == ("bob@example.com", "user")


def test_signing_in_again_keeps_the_same_user(env: Env) -> None:
    a1, _ = sign_in(env, "alice")
    a2, _ = sign_in(env, "alice")
    assert a1.get("/api/v1/me").json()["id"] == a2.get("/api/v1/me").json()["id"]


def test_state_mismatch_is_rejected(env: Env) -> None:
    c = env.client()
    callback = idp_callback(env, start_login(env, c), "alice")
    r = c.get(with_query(callback, state="forged-" + secrets.token_urlsafe(8)))
    assert r.status_code == 400
    assert r.json()["status_code"] == 400 and "state mismatch" in r.json()["message"]
    assert not c.cookies.get(SESSION_COOKIE)


def test_nonce_mismatch_is_rejected(env: Env) -> None:
    """The authorize request is tampered with on its way to the provider (another nonce, same
    state): the provider signs an ID token with that nonce, and Tessera refuses it."""
    c = env.client()
    authorize = with_query(start_login(env, c), nonce="forged-" + secrets.token_urlsafe(8))
    r = c.get(idp_callback(env, authorize, "alice"))
    assert r.status_code in (400, 401), r.text
    assert not c.cookies.get(SESSION_COOKIE), "no session from an ID token with a foreign nonce"
    assert c.get("/api/v1/me").status_code == 401


def test_callback_without_login_cookie_is_rejected_as_login_csrf(env: Env) -> None:
    # The attacker's own sign-in, delivered to a victim browser that never started one.
    attacker = env.client()
    callback = idp_callback(env, start_login(env, attacker), "bob")
    victim = env.client()
    r = victim.get(callback)
    assert r.status_code == 400
    assert "login CSRF" in r.json()["message"]
    assert not victim.cookies.get(SESSION_COOKIE)


def test_callback_with_another_browsers_login_cookie_is_rejected(env: Env) -> None:
    attacker = env.client()
    callback = idp_callback(env, start_login(env, attacker), "bob")
    victim = env.client()
    start_login(env, victim)  # the victim has a sign-in of their own in progress
    r = victim.get(callback)
    assert r.status_code == 400
    assert "state mismatch" in r.json()["message"]


def test_replayed_callback_is_rejected(env: Env) -> None:
    c = env.client()
    callback = idp_callback(env, start_login(env, c), "alice")
    login_id = c.cookies.get(LOGIN_COOKIE)
    assert c.get(callback).status_code == 302
    replay = env.client()
    r = replay.get(callback, headers={"cookie": f"{LOGIN_COOKIE}={login_id}"})
    assert r.status_code == 400
    assert "already completed" in r.json()["message"]
    assert not replay.cookies.get(SESSION_COOKIE)


def test_provider_error_is_reported_by_code_only(env: Env) -> None:
    c = env.client()
    url = start_login(env, c)
    state = parse_qs(urlsplit(url).query)["state"][0]
    r = c.get("/auth/callback", params={"state": state, "error": "access_denied", "error_description": "<b>secret body</b>"})
    assert r.status_code == 400
    assert r.json()["message"].endswith("access_denied")
    assert "secret body" not in r.text


@pytest.mark.parametrize(
    "target",
    ["https://evil.example", "//evil.example", "/\\evil.example", "/\t/evil.example", "javascript:alert(1)"],
)
def test_open_redirect_attempts_end_at_root(env: Env, target: str) -> None:
    _, r = sign_in(env, "bob", return_to=target)
    assert r.headers["location"] == "/"


def test_logout_ends_the_session(env: Env) -> None:
    c, _ = sign_in(env, "bob")
    session = c.cookies.get(SESSION_COOKIE)
    assert c.get("/api/v1/me").status_code == 200
    r = c.post("/auth/logout")
    assert r.status_code == 200 and r.json() == {"status": "logged_out"}
    assert any(h.startswith(f"{SESSION_COOKIE}=;") and "Max-Age=0" in h for h in r.headers.get_list("set-cookie"))
    assert not c.cookies.get(SESSION_COOKIE)
    # The old cookie value no longer works either (the session is gone server-side).
    r = env.client().get("/api/v1/me", headers={"cookie": f"{SESSION_COOKIE}={session}"})
    assert r.status_code == 401
    assert r.json() == {
        "error": "Unauthorized",
        "message": "Authentication required. Provide a valid session cookie or Bearer token.",
        "status_code": 401,
    }


def cli(env: Env, token: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(TESSERA_BIN), "token", *args, "--server", env.gw.base, "--output", "json"],
        env={**os.environ, "TESSERA_TOKEN": token},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_personal_access_token_lifecycle(env: Env) -> None:
    c, _ = sign_in(env, "alice")
    r = c.post("/api/v1/user/tokens", json={"name": "ci agent", "expires_in": "7d"})
    assert r.status_code == 201, r.text
    created = r.json()
    token = created["token"]
    env.remember("pat", token)
    assert token.startswith("tsr_pat_")
    assert created["name"] == "ci agent" and created["expires_at"] and created["id"]

    bearer = env.client()
    me = bearer.get("/api/v1/me", headers={"authorization": f"Bearer {token}"})
    assert me.status_code == 200, me.text
    assert (me.json()["email"], me.json()["role"], me.json()["auth"]) == ("alice@example.com", "admin", "personal_access_token")

    listed = c.get("/api/v1/user/tokens")
    assert listed.status_code == 200
    mine = [t for t in listed.json()["tokens"] if t["id"] == created["id"]]
    assert len(mine) == 1 and "token" not in mine[0] and not mine[0]["revoked"]
    assert token not in listed.text

    # The CLI, authenticated by the token itself: create a second one, list, revoke it.
    out = cli(env, token, "create", "--name", "from-cli", "--expires", "1d")
    assert out.returncode == 0, out.stderr
    second = json.loads(out.stdout)
    env.remember("pat", second["token"])
    out = cli(env, token, "list")
    assert out.returncode == 0, out.stderr
    names = {t["name"] for t in json.loads(out.stdout)["tokens"]}
    assert {"ci agent", "from-cli"} <= names
    assert second["token"] not in out.stdout
    out = cli(env, token, "revoke", second["id"])
    assert out.returncode == 0, out.stderr
    assert bearer.get("/api/v1/me", headers={"authorization": f"Bearer {second['token']}"}).status_code == 401

    r = c.delete(f"/api/v1/user/tokens/{created['id']}")
    assert r.status_code == 200, r.text
    after = bearer.get("/api/v1/me", headers={"authorization": f"Bearer {token}"})
    assert after.status_code == 401
    assert "revoked" in after.json()["message"]
    assert c.delete("/api/v1/user/tokens/no-such-id").status_code == 404


def test_tokens_need_a_signed_in_caller(env: Env) -> None:
    anon = env.client()
    assert anon.get("/api/v1/user/tokens").status_code == 401
    assert anon.post("/api/v1/user/tokens", json={"name": "x"}).status_code == 401
    r = anon.get("/api/v1/me", headers={"authorization": "Bearer tsr_pat_" + "A" * 43})
    assert r.status_code == 401
    r = anon.get("/api/v1/me", headers={"authorization": "Bearer eyJhbGciOiJub25lIn0.e30."})
    assert r.status_code == 401


def test_bob_cannot_revoke_alices_token(env: Env) -> None:
    alice, _ = sign_in(env, "alice")
    created = alice.post("/api/v1/user/tokens", json={"name": "alice's"}).json()
    env.remember("pat", created["token"])
    bob, _ = sign_in(env, "bob")
    assert bob.delete(f"/api/v1/user/tokens/{created['id']}").status_code == 404
    assert created["id"] not in bob.get("/api/v1/user/tokens").text
    me = env.client().get("/api/v1/me", headers={"authorization": f"Bearer {created['token']}"})
    assert me.status_code == 200


def test_personal_access_token_opens_mcp_sessions_until_revoked(env: Env) -> None:
    """A headless agent uses a PAT as its bearer token on /mcp: it carries alice's identity, and
    after revocation it is refused at once (401 with the RFC 9728 challenge)."""
    c, _ = sign_in(env, "alice")
    created = c.post("/api/v1/user/tokens", json={"name": "mcp agent"}).json()
    token = created["token"]
    env.remember("pat", token)
    agent = env.client()
    headers = {"authorization": f"Bearer {token}", "accept": "application/json, text/event-stream"}
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "agent", "version": "1"}}}
    r = agent.post("/mcp", json=init, headers=headers)
    assert r.status_code == 200, r.text
    sid = r.headers["mcp-session-id"]
    r = agent.post("/mcp", json={"jsonrpc": "2.0", "id": 2, "method": "ping"}, headers={**headers, "mcp-session-id": sid})
    assert r.status_code == 200 and r.json()["result"] == {}
    assert c.delete(f"/api/v1/user/tokens/{created['id']}").status_code in (200, 204)
    r = agent.post("/mcp", json={"jsonrpc": "2.0", "id": 3, "method": "ping"}, headers={**headers, "mcp-session-id": sid})
    assert r.status_code == 401, r.text
    assert 'error="invalid_token"' in r.headers.get("www-authenticate", "")


def test_zz_no_secret_in_any_response_or_log_line(env: Env) -> None:
    """Runs last in this module: every response the tests received and every line the gateway
    logged are free of the PATs, session cookies, authorization codes, the client secret and the
    sealing key used above, and of any JWT (the provider's ID and access tokens)."""
    assert env.responses and env.secrets
    log = Path(env.gw.proc.log).read_text(errors="replace")
    assert "signed in" in log
    texts = [("gateway log", log)]
    for r in env.responses:
        headers = "\n".join(f"{k}: {v}" for k, v in r.headers.items() if k.lower() != "set-cookie")
        texts.append((f"{r.request.method} {r.request.url}", headers + "\n" + r.text))
    for what, value in env.secrets.items():
        kind = what.split("#")[0]
        for where, text in texts:
            if kind == "pat" and "/api/v1/user/tokens" in where and where.startswith("POST"):
                continue  # the creation response shows the token once, by design
            assert value not in text, f"{kind} found in {where}"
    for where, text in texts:
        assert not JWT_LIKE.search(text), f"something JWT-like in {where}"
