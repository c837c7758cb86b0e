"""The user's provider tokens (sealed at sign-in) are refreshed at the real test OpenID provider
when near expiry, once for concurrent callers (single flight), and a provider session that
cannot be refreshed any more gives a clear "sign in again" 401; no token reaches the log."""

from __future__ import annotations

import base64
import os
import re
import secrets
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from conftest import JWT_LIKE, REPO, Gateway, ProcessRegistry, free_port, start_gateway, wait_gateway_ready

sys.path.insert(0, str(REPO / "tests" / "testbed"))
from idp import USERS, IdP, browser_login  # noqa: E402

CLIENT_ID = "tessera"
SESSION_COOKIE = "tessera_session"
SKEW = 60  # Tessera refreshes an access token expiring within this many seconds
REAUTH = {
    "error": "Unauthorized",
    "message": "your identity provider session has ended: sign in again at /auth/login",
    "status_code": 401,
    "reauth_url": "/auth/login",
}


@dataclass
class Env:
    idp: IdP
    gw: Gateway
    client_secret: str
    sealing_key: str


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("subject-token")
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
                "store_idp_tokens": True,
                "session_ttl": "1h",
            }
            gw = start_gateway(reg, tmp, {}, extra={"listen": f"127.0.0.1:{port}", "auth": auth}, wait_ready=False)
            gw.port = port
            wait_gateway_ready(gw)
            yield Env(idp, gw, client_secret, sealing_key)
    finally:
        reg.stop_all()
        if old_key is None:
            os.environ.pop("TESSERA_SEALING_KEY", None)
        else:
            os.environ["TESSERA_SEALING_KEY"] = old_key


def sign_in(env: Env, user: str) -> httpx.Client:
    c = httpx.Client(base_url=env.gw.base, timeout=30)
    r = c.get("/auth/login")
    assert r.status_code == 302, r.text
    callback = browser_login(r.headers["location"], user, USERS[user]["password"])
    assert parse_qs(urlsplit(callback).query).get("code"), callback
    r = c.get(callback)
    assert r.status_code == 302, r.text
    assert c.cookies.get(SESSION_COOKIE)
    return c


def refresh_grants(env: Env) -> dict[str, int]:
    g = env.idp.stats().get("grants", {}).get("refresh_token", {})
    return {"success": g.get("success", 0), "error": g.get("error", 0)}


def wait_until_near_expiry(expires_at: int, limit: float = 30.0) -> None:
    """Bounded poll: returns once `expires_at` is within Tessera's skew (with a second of margin
    for clock rounding)."""
    deadline = time.monotonic() + limit
    while time.time() < expires_at - SKEW + 1:
        assert time.monotonic() < deadline, "the access token never came near expiry"
        time.sleep(0.2)


def test_near_expiry_token_is_refreshed_once_for_racing_requests(env: Env) -> None:
    env.idp.settings(access_token_ttl=SKEW + 3)  # near expiry three seconds after sign-in
    c = sign_in(env, "alice")
    env.idp.settings(access_token_ttl=600)  # the refreshed token lives long
    env.idp.reset_stats()

    r = c.get("/api/v1/user/idp-token")
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"status", "expires_at"} and body["status"] == "valid"
    first_expiry = body["expires_at"]
    assert SKEW < first_expiry - time.time() <= SKEW + 4
    assert refresh_grants(env) == {"success": 0, "error": 0}, "a fresh token is not refreshed"

    wait_until_near_expiry(first_expiry)
    cookie = c.cookies.get(SESSION_COOKIE)
    barrier = threading.Barrier(5)
    results: list[httpx.Response] = []
    lock = threading.Lock()

    def call() -> None:
        with httpx.Client(base_url=env.gw.base, timeout=30, cookies={SESSION_COOKIE: cookie}) as h:
            barrier.wait()
            resp = h.get("/api/v1/user/idp-token")
            with lock:
                results.append(resp)

    threads = [threading.Thread(target=call) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(results) == 5
    for resp in results:
        assert resp.status_code == 200, resp.text
        assert resp.json()["status"] == "valid"
        assert resp.json()["expires_at"] > time.time() + 500, "every caller sees the refreshed token"
    assert refresh_grants(env) == {"success": 1, "error": 0}, "one refresh for five racing callers"

    # Fresh now: no further refresh.
    assert c.get("/api/v1/user/idp-token").status_code == 200
    assert refresh_grants(env) == {"success": 1, "error": 0}


def test_revoked_provider_session_asks_to_sign_in_again(env: Env) -> None:
    env.idp.settings(access_token_ttl=SKEW + 2)
    c = sign_in(env, "alice")
    env.idp.settings(access_token_ttl=600)
    body = c.get("/api/v1/user/idp-token").json()
    assert body["status"] == "valid"
    assert env.idp.revoke_grants("alice") >= 1
    env.idp.reset_stats()
    wait_until_near_expiry(body["expires_at"])

    r = c.get("/api/v1/user/idp-token")
    assert r.status_code == 401, r.text
    assert r.json() == REAUTH
    assert r.headers.get("cache-control") == "no-store"
    assert refresh_grants(env) == {"success": 0, "error": 1}
    # Still signed in to Tessera: the signal is about the provider session, not a downgrade.
    assert c.get("/api/v1/me").status_code == 200
    # Signing in again gives a usable provider session.
    c2 = sign_in(env, "alice")
    assert c2.get("/api/v1/user/idp-token").json()["status"] == "valid"


def test_an_anonymous_caller_gets_the_usual_401(env: Env) -> None:
    r = httpx.get(f"{env.gw.base}/api/v1/user/idp-token", timeout=10)
    assert r.status_code == 401
    assert "reauth_url" not in r.json()  # not signed in to Tessera at all: the usual 401


def test_zz_gateway_log_has_no_token(env: Env) -> None:
    log = Path(env.gw.proc.log).read_text(errors="replace")
    assert "refreshed the user's identity provider tokens" in log
    assert env.client_secret not in log and env.sealing_key not in log
    assert not JWT_LIKE.search(log), "something JWT-like (an ID token) in the gateway log"
    # The provider's opaque access and refresh tokens are 43+ base64url characters.
    long_runs = re.findall(r"(?<![A-Za-z0-9_-])[A-Za-z0-9_-]{40,}(?![A-Za-z0-9_-])", log)
    assert not long_runs, f"token-like strings in the gateway log: {[s[:6] + '…' for s in long_runs]}"
