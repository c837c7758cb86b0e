"""Personal servers with an `auth_broker` (mode oauth_connect) on live MCP traffic.

Real peers only: the test OpenID provider (tests/testbed/idp) for sign-in and as the upstream's
authorization server (a confidential client, `broker-connect`, whose redirect URI is Tessera's
callback for the personal server's name); a protected upstream (upstreams/protected_upstream.py)
that accepts only tokens issued for it and answers `whoami` with the token's claims; `tessera
serve` with SQLite and a sealing key but no brokered server in its configuration (the broker
exists for the personal servers users add at run time). Callers are the official Python MCP SDK
with personal access tokens made through the REST API of a browser session.

alice adds `crm` (her own server) with an oauth_connect block; her client gets the connect
link as a URL elicitation; she connects in a browser; her call then reaches the upstream with
a token issued for alice. bob sees nothing of it, cannot use its connect link, and his own
`crm` (same name, same URL) has its own credential. Deleting the server removes it and its
credential. The client secret is never echoed.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from brokered import (
    SignedInUsers,
    Upstream,
    activity,
    call,
    complete_connect,
    gateway_auth,
    inbound,
    new_secrets,
    provider_config,
    sdk_client,
    sign_in_browser,
    start_protected_upstream,
    tool_names,
    url_elicitation_of,
    whoami,
)
from conftest import SEP, TESSERA_BIN, Gateway, ProcessRegistry, await_until, free_port, start_gateway
from idp import IdP  # noqa: E402 - brokered puts tests/testbed on sys.path

pytestmark = pytest.mark.anyio

SERVER = "crm"


@dataclass
class Env(SignedInUsers):
    idp: IdP
    gw: Gateway
    protected: Upstream
    connect_secret: str
    data_dir: Path
    browsers: dict[str, httpx.Client] = field(default_factory=dict)
    pats: dict[str, str] = field(default_factory=dict)

    def block(self, **override: Any) -> dict[str, Any]:
        """An oauth_connect block for the protected upstream at the test provider."""
        block = {
            "mode": "oauth_connect",
            "authorization_endpoint": self.idp.discovery["authorization_endpoint"],
            "token_endpoint": self.idp.token_endpoint,
            "client_id": "broker-connect",
            "client_secret": self.connect_secret,
            "client_auth": "client_secret_basic",
            "resource": self.protected.url,
            "scopes": ["openid", "mcp"],
        }
        block.update(override)
        return block

    def credential_rows(self) -> list[tuple[str, str]]:
        """(subject, server_key) of every stored credential."""
        con = sqlite3.connect(str(self.data_dir / "tessera.db"), timeout=10)
        try:
            return con.execute("SELECT u.subject, c.server_key FROM credentials c JOIN users u ON u.id = c.user_id").fetchall()
        finally:
            con.close()


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("personal_broker")
    logs = tmp / "logs"
    port = free_port()
    signin_secret, broker_secrets, sealing_key = new_secrets()
    reg = ProcessRegistry()
    old_key = os.environ.get("TESSERA_SEALING_KEY")
    os.environ["TESSERA_SEALING_KEY"] = sealing_key
    browsers: dict[str, httpx.Client] = {}
    try:
        with IdP(config=provider_config(port, signin_secret, broker_secrets, [SERVER]), log_dir=logs) as idp:
            protected = start_protected_upstream(reg, idp.issuer, logs, "personal")
            extra = {
                "auth": gateway_auth(idp, port, signin_secret),
                "public_url": f"http://127.0.0.1:{port}",
                # The upstream and the provider listen on loopback: allowed for exactly 127.0.0.1.
                "user_server_allowed_networks": ["127.0.0.1/32"],
            }
            # No brokered server in the configuration: the broker exists for personal ones.
            gw = start_gateway(reg, tmp / "gw", {}, extra=extra, port=port)
            yield Env(idp, gw, protected, broker_secrets["broker-connect"], tmp / "gw" / "data", browsers)
    finally:
        for b in browsers.values():
            b.close()
        reg.stop_all()
        if old_key is None:
            os.environ.pop("TESSERA_SEALING_KEY", None)
        else:
            os.environ["TESSERA_SEALING_KEY"] = old_key


@contextlib.contextmanager
def personal_server(env: Env, user: str, name: str = SERVER, **body: Any) -> Iterator[dict[str, Any]]:
    with env.rest(user) as rest:
        r = rest.post("/api/v1/user/servers", json={"name": name, "url": env.protected.url, "auth_broker": env.block(), **body})
        assert r.status_code == 201, r.text
        try:
            yield r.json()
        finally:
            rest.delete(f"/api/v1/user/servers/{name}")


# ------------------------------------------------------------------------------ REST


def test_the_client_secret_is_never_echoed(env: Env) -> None:
    with env.rest("carol") as rest, personal_server(env, "carol", "secretive") as created:
        assert created["brokered"] is True and created["ownership"] == "personal", created
        answers = [
            json.dumps(created),
            rest.get("/api/v1/user/servers/secretive").text,
            rest.get("/api/v1/user/servers").text,
            rest.get("/api/v1/user/credentials").text,
        ]
        for text in answers:
            assert env.connect_secret not in text, "the client secret was echoed"
        listed = rest.get("/api/v1/user/credentials").json()["credentials"]
        mine = [c for c in listed if c["server"] == "secretive"]
        assert mine and mine[0]["status"] == "not_connected" and mine[0]["mode"] == "oauth_connect", listed
        assert mine[0]["connect_path"] == "/api/v1/user/credentials/secretive/connect", mine
    # Nothing readable at rest either.
    db = (env.data_dir / "tessera.db").read_bytes()
    assert env.connect_secret.encode() not in db


def test_personal_auth_broker_refusals(env: Env) -> None:
    with env.rest("carol") as rest:
        def post(block: dict[str, Any]) -> httpx.Response:
            return rest.post("/api/v1/user/servers", json={"name": "refused", "url": env.protected.url, "auth_broker": block})

        r = post(env.block(mode="token_exchange"))
        assert r.status_code == 400 and "oauth_connect" in r.json()["message"], r.text
        r = post(env.block(mode="entra_obo"))
        assert r.status_code == 400 and "oauth_connect" in r.json()["message"], r.text
        r = post(env.block(client_auth="private_key_jwt", private_key_file="/etc/passwd"))
        assert r.status_code == 400 and "private_key_jwt" in r.json()["message"], r.text
        # The configuration's own rules and messages, with the field's path.
        r = post(env.block(token_endpoint="ftp://127.0.0.1/token"))
        assert r.status_code == 400 and "auth_broker.token_endpoint" in r.json()["message"], r.text
        # No interpolation from the gateway's environment.
        r = post(env.block(client_secret="${TESSERA_SEALING_KEY}"))
        assert r.status_code == 400 and "auth_broker.client_secret" in r.json()["message"], r.text
        assert os.environ["TESSERA_SEALING_KEY"] not in r.text
        # The token endpoint is fetched by the gateway: internal addresses are refused.
        r = post(env.block(token_endpoint="http://127.0.0.2:9/token"))
        assert r.status_code == 400 and "auth_broker.token_endpoint" in r.json()["message"], r.text
        # A static header may not set the header the broker sends.
        r = rest.post("/api/v1/user/servers", json={"name": "refused", "url": env.protected.url, "auth_broker": env.block(),
                                                    "headers": {"authorization": "Bearer x"}})
        assert r.status_code == 400 and "auth_broker" in r.json()["message"], r.text
        for text in (r.text,):
            assert env.connect_secret not in text
        assert rest.get("/api/v1/user/servers/refused").status_code == 404
    # The block cannot be changed (nor added) later.
    with env.rest("carol") as rest, personal_server(env, "carol", "fixed"):
        r = rest.put("/api/v1/user/servers/fixed", json={"auth_broker": env.block(client_id="other")})
        assert r.status_code == 400 and "delete the server and add it again" in r.json()["message"], r.text


# ------------------------------------------------------------------------------ MCP


async def test_alice_connects_her_personal_server_and_bob_cannot_touch_it(env: Env) -> None:
    alice_rest = env.rest("alice")
    r = alice_rest.post("/api/v1/user/servers", json={"name": SERVER, "url": env.protected.url, "protocol": "http", "auth_broker": env.block()})
    assert r.status_code == 201, r.text
    assert env.connect_secret not in r.text

    # Not connected yet: the stand-in tool, and the connect link as a URL elicitation.
    async with sdk_client(env.gw, env.pat("alice")) as client:
        before = await tool_names(client)
        assert f"{SERVER}{SEP}connect" in before, sorted(before)
        e = url_elicitation_of(await call(client, f"{SERVER}{SEP}whoami"), env.gw, SERVER)
        assert env.protected.stats()["authorized"] == 0, "an upstream request left without alice's credential"

        # bob may not use alice's connect link.
        r = await anyio.to_thread.run_sync(lambda: env.browser("bob").get(e.url))
        assert r.status_code in (403, 404), f"bob opened alice's connect link: {r.status_code} {r.text[:300]}"

        # alice connects in her browser.
        r = await anyio.to_thread.run_sync(complete_connect, env.browser("alice"), env.idp, e.url, "alice")
        assert r.status_code == 200 and 'data-outcome="connected"' in r.text, f"{r.status_code} {r.text[:400]}"
        await await_until(lambda: e.id in client.elicitation_completions(), 20,
                          f"notifications/elicitation/complete for {e.id}")

        w = await whoami(client, SERVER)
        assert w["sub"] == "alice" and w["client_id"] == "broker-connect" and w["aud"] == env.protected.url, w
        after = await tool_names(client)
        assert {f"{SERVER}{SEP}whoami", f"{SERVER}{SEP}hello_alice"} <= after, sorted(after)
        assert f"{SERVER}{SEP}connect" not in after

    listed = alice_rest.get("/api/v1/user/credentials").json()["credentials"]
    assert [c["status"] for c in listed if c["server"] == SERVER] == ["connected"], listed
    assert any(r["subject"] == "alice" and r["method"] == "connect" and r["outcome"] == "success"
               for r in activity(env.data_dir, SERVER)), activity(env.data_dir, SERVER)

    # bob: nothing of alice's server, on MCP or REST.
    with env.rest("bob") as bob_rest:
        async with sdk_client(env.gw, env.pat("bob")) as bob:
            names = await tool_names(bob)
            assert not any(n.startswith(f"{SERVER}{SEP}") for n in names), sorted(names)
            out = await call(bob, f"{SERVER}{SEP}whoami")
            assert out.kind != "ok" and "alice" not in out.text, out.describe()
        assert bob_rest.get(f"/api/v1/user/servers/{SERVER}").status_code == 404
        assert all(c["server"] != SERVER for c in bob_rest.get("/api/v1/user/credentials").json()["credentials"])
        assert bob_rest.delete(f"/api/v1/user/credentials/{SERVER}").status_code == 404
        r = env.browser("bob").get(f"{env.gw.base}/api/v1/user/credentials/{SERVER}/connect")
        assert r.status_code == 404, r.status_code

        # bob's own crm (same name, same URL): his own credential, not alice's.
        r = bob_rest.post("/api/v1/user/servers", json={"name": SERVER, "url": env.protected.url, "auth_broker": env.block()})
        assert r.status_code == 201, r.text
        try:
            async with sdk_client(env.gw, env.pat("bob")) as bob:
                url_elicitation_of(await call(bob, f"{SERVER}{SEP}whoami"), env.gw, SERVER)
            async with sdk_client(env.gw, env.pat("alice")) as client:
                assert (await whoami(client, SERVER))["sub"] == "alice"
        finally:
            assert bob_rest.delete(f"/api/v1/user/servers/{SERVER}").status_code == 200
    assert env.protected.stats()["subjects"].keys() == {"alice"}, env.protected.stats()

    # alice deletes it: gone from her tools, her credentials, and the store.
    keys_before = [k for s, k in env.credential_rows() if s == "alice"]
    assert len(keys_before) == 1 and keys_before[0].startswith(f"{SERVER}_"), keys_before
    assert alice_rest.delete(f"/api/v1/user/servers/{SERVER}").status_code == 200
    async with sdk_client(env.gw, env.pat("alice")) as client:
        names = await tool_names(client)
        assert not any(n.startswith(f"{SERVER}{SEP}") for n in names), sorted(names)
        out = await call(client, f"{SERVER}{SEP}whoami")
        assert out.kind != "ok", out.describe()
    assert all(c["server"] != SERVER for c in alice_rest.get("/api/v1/user/credentials").json()["credentials"])
    assert [k for s, k in env.credential_rows() if s == "alice"] == []
    alice_rest.close()


def test_the_cli_adds_a_personal_brokered_server_from_a_file(env: Env, tmp_path: Path) -> None:
    """`tessera server add NAME --url URL --auth-broker FILE`: the block goes to the gateway as
    JSON, the server is listed as brokered, and no output (table or JSON) shows the secret."""
    import subprocess

    block_file = tmp_path / "crm-broker.json"
    block_file.write_text(json.dumps(env.block()))
    cli_env = {**os.environ, "TESSERA_URL": env.gw.base, "TESSERA_TOKEN": env.pat("erin")}
    added = subprocess.run([str(TESSERA_BIN), "server", "add", "cli-crm", "--url", env.protected.url, "--auth-broker", str(block_file)],
                           env=cli_env, capture_output=True, text=True, timeout=30)
    try:
        assert added.returncode == 0, added.stderr
        listed = subprocess.run([str(TESSERA_BIN), "server", "list", "--output", "json"], env=cli_env, capture_output=True, text=True, timeout=30)
        assert listed.returncode == 0, listed.stderr
        mine = [s for s in json.loads(listed.stdout)["servers"] if s["name"] == "cli-crm" and s["ownership"] == "personal"]
        assert mine and mine[0].get("brokered") is True, listed.stdout
        for out in (added.stdout, added.stderr, listed.stdout, listed.stderr):
            assert env.connect_secret not in out, "the CLI printed the client secret"
        # Not JSON: a usage error (exit 2) that does not echo the file's content.
        bad = tmp_path / "bad.json"
        bad.write_text('{"client_secret": "' + env.connect_secret + '"')
        refused = subprocess.run([str(TESSERA_BIN), "server", "add", "cli-bad", "--url", env.protected.url, "--auth-broker", str(bad)],
                                 env=cli_env, capture_output=True, text=True, timeout=30)
        assert refused.returncode == 2 and env.connect_secret not in refused.stderr + refused.stdout, refused.stderr
    finally:
        with env.rest("erin") as rest:
            rest.delete("/api/v1/user/servers/cli-crm")
