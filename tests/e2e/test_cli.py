"""The `tessera` CLI against a running gateway (issue #7): `credential list|status|connect|rm`,
`activity list|watch`, `users list`, run as the built binary with a personal access token.

Real peers only: the test OpenID provider, two protected upstreams (token exchange and
oauth_connect; every request's headers recorded) and `tessera serve`. alice is a user with a
PAT, carol an admin (admin_emails) with a PAT; the PATs are created through
`POST /api/v1/user/tokens` from a signed-in browser.

Exit codes under test: 0 done, 1 refused / not found, 2 usage, 3 unauthenticated, 4 unreachable.
Every CLI output of the module is scanned at the end for the PATs and for every bearer token
the upstreams saw (the credentials the gateway obtained for alice).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from brokered import (
    Upstream,
    call,
    caller_token,
    complete_connect,
    connect_server,
    gateway_auth,
    inbound,
    new_secrets,
    provider_config,
    sdk_client,
    sign_in_browser,
    start_protected_upstream,
    tx_server,
    wait_gateway_listening,
    whoami,
)
from conftest import SEP, TESSERA_BIN, Gateway, ProcessRegistry, free_port, start_gateway
from idp import IdP  # noqa: E402 - brokered puts tests/testbed on sys.path

pytestmark = pytest.mark.anyio

TX, CONNECT = "whoami_tx", "whoami_connect"
AUTH_MESSAGE = "authentication required: provide a personal access token via --token or TESSERA_TOKEN"
BOGUS_PAT = "tsr_pat_" + "A" * 43

# Every CLI run's stdout + stderr, scanned for secrets at the end of the module.
OUTPUTS: list[str] = []


@dataclass
class Env:
    idp: IdP
    gw: Gateway
    ups: dict[str, Upstream]
    signin_secret: str
    pats: dict[str, str] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)

    def token(self, user: str) -> str:
        """The user's MCP access token at the provider (for SDK calls)."""
        if user not in self.tokens:
            self.tokens[user] = caller_token(self.idp, self.gw, user, self.signin_secret)
        return self.tokens[user]

    def pat(self, user: str) -> str:
        """A personal access token of `user`, created from a signed-in browser."""
        if user not in self.pats:
            browser = sign_in_browser(self.gw, user)
            try:
                r = browser.post(f"{self.gw.base}/api/v1/user/tokens", json={"name": f"cli-{user}", "expires_in": "1d"})
                assert r.status_code == 201, f"creating {user}'s PAT: {r.status_code} {r.text[:300]}"
                self.pats[user] = inbound(r.json()["token"])
            finally:
                browser.close()
        return self.pats[user]


def tessera(*args: str, token: str | None = None, server: str | None = None, env: Env | None = None,
            extra_env: dict[str, str] | None = None, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Runs the built binary; the token goes through TESSERA_TOKEN (never argv), the URL through
    --url (every group takes it; `activity` uses --server as a filter)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("TESSERA_")}
    environ.pop("DISPLAY", None)
    environ.pop("WAYLAND_DISPLAY", None)
    if token is not None:
        environ["TESSERA_TOKEN"] = token
    environ.update(extra_env or {})
    argv = [str(TESSERA_BIN), *args]
    if server is not None or env is not None:
        argv += ["--url", server or env.gw.base]  # type: ignore[union-attr]
    out = subprocess.run(argv, env=environ, capture_output=True, text=True, timeout=timeout)
    OUTPUTS.append(out.stdout + out.stderr)
    return out


def ok(out: subprocess.CompletedProcess[str]) -> str:
    assert out.returncode == 0, f"exit {out.returncode}\nstdout: {out.stdout}\nstderr: {out.stderr}"
    return out.stdout


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("cli")
    logs = tmp / "logs"
    port = free_port()
    signin_secret, broker_secrets, sealing_key = new_secrets()
    reg = ProcessRegistry()
    old_key = os.environ.get("TESSERA_SEALING_KEY")
    os.environ["TESSERA_SEALING_KEY"] = sealing_key
    try:
        with IdP(config=provider_config(port, signin_secret, broker_secrets, [CONNECT]), log_dir=logs) as idp:
            ups = {name: start_protected_upstream(reg, idp.issuer, logs, name) for name in (TX, CONNECT)}
            allowed = [f"{u}@example.com" for u in ("alice", "carol")]
            servers = {
                TX: tx_server(idp, ups[TX], broker_secrets["broker-tx"], allowed),
                CONNECT: connect_server(idp, ups[CONNECT], broker_secrets["broker-connect"], allowed),
            }
            auth = {**gateway_auth(idp, port, signin_secret), "admin_emails": ["carol@example.com"]}
            extra = {"auth": auth, "public_url": f"http://127.0.0.1:{port}"}
            gw = start_gateway(reg, tmp / "gw", servers, extra=extra, wait_ready=False, port=port)
            wait_gateway_listening(gw, [])
            yield Env(idp, gw, ups, signin_secret)
    finally:
        reg.stop_all()
        if old_key is None:
            os.environ.pop("TESSERA_SEALING_KEY", None)
        else:
            os.environ["TESSERA_SEALING_KEY"] = old_key


async def alice_calls_tx(env: Env) -> None:
    async with sdk_client(env.gw, env.token("alice")) as client:
        w = await whoami(client, TX)
        assert w["sub"] == "alice", w


def credentials(env: Env, user: str = "alice") -> dict[str, dict[str, Any]]:
    body = json.loads(ok(tessera("credential", "list", "--output", "json", token=env.pat(user), env=env)))
    return {c["server"]: c for c in body["credentials"]}


# ------------------------------------------------------------------ credential


async def test_credential_list_shows_statuses_and_never_a_token(env: Env) -> None:
    await alice_calls_tx(env)
    listed = credentials(env)
    assert set(listed) == {TX, CONNECT}, listed
    assert listed[TX]["status"] == "connected" and listed[TX]["mode"] == "token_exchange", listed[TX]
    assert listed[CONNECT]["status"] == "not_connected", listed[CONNECT]
    assert listed[CONNECT]["connect_path"] == f"/api/v1/user/credentials/{CONNECT}/connect"

    table = ok(tessera("credential", "list", token=env.pat("alice"), env=env))
    lines = table.splitlines()
    assert lines[0].split() == ["SERVER", "MODE", "STATUS", "EXPIRES"], table
    rows = {line.split()[0]: line for line in lines[1:] if line and line.split()[0] in (TX, CONNECT)}
    assert "connected" in rows[TX].split() and not rows[TX].rstrip().endswith("*"), table
    assert "not_connected *" in rows[CONNECT], table
    assert "tessera credential connect <server>" in table, "the footer says how to connect"

    seen = {h["headers"].get("authorization", "") for h in env.ups[TX].recorded()}
    upstream_tokens = {a.split(" ", 1)[1] for a in seen if a.startswith("Bearer ")}
    assert upstream_tokens, "the upstream saw alice's brokered token"
    for text in (table, json.dumps(listed)):
        for secret in upstream_tokens | {env.pat("alice")}:
            assert secret not in text, "a token appeared in `credential list`"


def test_credential_status_matches_the_name_case_insensitively(env: Env) -> None:
    out = ok(tessera("credential", "status", TX.upper(), token=env.pat("alice"), env=env))
    assert f"server:       {TX}" in out and "status:" in out, out
    one = json.loads(ok(tessera("credential", "status", CONNECT, "-o", "json", token=env.pat("alice"), env=env)))
    assert one["server"] == CONNECT and one["status"] in ("not_connected", "connected"), one
    missing = tessera("credential", "status", "nope", token=env.pat("alice"), env=env)
    assert missing.returncode == 1 and 'brokered server "nope" not found' in missing.stderr, missing


def test_connect_prints_the_url_and_open_never_fails_without_a_display(env: Env) -> None:
    expected = f"{env.gw.base}/api/v1/user/credentials/{CONNECT}/connect"
    assert ok(tessera("credential", "connect", CONNECT, env=env)).strip() == expected
    out = tessera("credential", "connect", CONNECT, "--open", env=env)
    assert ok(out).strip() == expected and "open the URL above yourself" in out.stderr
    body = json.loads(ok(tessera("credential", "connect", CONNECT, "--output", "json", env=env)))
    assert body == {"server": CONNECT, "connect_url": expected}


def test_the_printed_url_connects_and_rm_disconnects(env: Env) -> None:
    url = ok(tessera("credential", "connect", CONNECT, env=env)).strip()
    browser = sign_in_browser(env.gw, "alice")
    try:
        r = complete_connect(browser, env.idp, url, "alice")
        assert r.status_code < 400, f"connect callback: {r.status_code} {r.text[:300]}"
    finally:
        browser.close()
    assert credentials(env)[CONNECT]["status"] == "connected"

    out = tessera("credential", "rm", CONNECT, token=env.pat("alice"), env=env)
    text = ok(out)
    assert CONNECT in text.splitlines()[0], text
    assert "upstream" in text.splitlines()[1], "the second line says what the upstream's revocation did"
    after = credentials(env)[CONNECT]
    assert after["status"] == "not_connected" and after.get("connect_path"), after

    for alias in ("remove", "disconnect"):
        again = tessera("credential", alias, CONNECT, token=env.pat("alice"), env=env)
        assert again.returncode == 1, f"`{alias}` is an alias of rm; nothing is left to remove: {again}"
        assert "not found" in again.stderr and CONNECT in again.stderr, again.stderr


# ------------------------------------------------------------------- activity


async def test_activity_list_shows_alices_rows(env: Env) -> None:
    await alice_calls_tx(env)
    body = json.loads(ok(tessera("activity", "list", "--server", TX, "--limit", "20", "-o", "json",
                                 token=env.pat("alice"), env=env)))
    records = body["activities"]
    assert records and all(r["server"] == TX for r in records), body
    assert len(records) <= 20
    one = json.loads(ok(tessera("activity", "list", "--limit", "1", "-o", "json", token=env.pat("alice"), env=env)))
    assert len(one["activities"]) == 1, one

    table = ok(tessera("activity", "list", "--server", TX, token=env.pat("alice"), env=env))
    header = table.splitlines()[0].split()
    assert header == ["TIME", "USER", "SERVER", "TYPE/ACTION", "OUTCOME", "REASON", "DURATION"], table
    assert any(TX in line for line in table.splitlines()[1:]), table


async def test_activity_watch_prints_a_line_per_new_record_until_interrupted(env: Env) -> None:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("TESSERA_")}
    environ["TESSERA_TOKEN"] = env.pat("alice")
    proc = subprocess.Popen([str(TESSERA_BIN), "activity", "watch", "--url", env.gw.base, "--server", TX, "-o", "json"],
                            env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    try:
        deadline = time.monotonic() + 30
        while not lines and time.monotonic() < deadline:
            await alice_calls_tx(env)
            for _ in range(20):
                if lines or proc.poll() is not None:
                    break
                time.sleep(0.1)
            assert proc.poll() is None, f"watch exited {proc.returncode}: {proc.stderr.read()}"  # type: ignore[union-attr]
        assert lines, "no record arrived on the stream within 30 s"
        record = json.loads(lines[0])
        assert record["server"] == TX, record
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            rc = proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        reader.join(timeout=5)
        OUTPUTS.append("".join(lines) + (proc.stderr.read() if proc.stderr else ""))
    assert rc == 0, f"Ctrl-C ends watch with exit 0, got {rc}"


# ---------------------------------------------------------------------- users


def test_users_list_is_for_admins(env: Env) -> None:
    out = tessera("users", "list", token=env.pat("alice"), env=env)
    assert out.returncode == 1, out
    assert "permission denied: listing users needs an admin account" in out.stderr, out.stderr
    assert out.stdout == ""

    body = json.loads(ok(tessera("users", "list", "-o", "json", token=env.pat("carol"), env=env)))
    emails = {u.get("email") for u in body["users"]}
    assert {"alice@example.com", "carol@example.com"} <= emails, emails
    table = ok(tessera("users", "list", token=env.pat("carol"), env=env))
    assert table.splitlines()[0].split()[:4] == ["ID", "EMAIL", "NAME", "ROLE"], table


# ----------------------------------------------------------------- exit codes


@pytest.mark.parametrize("argv", [
    ("credential", "list"), ("credential", "status", TX), ("credential", "rm", TX),
    ("activity", "list"), ("users", "list"), ("token", "list"),
])
def test_a_wrong_or_missing_token_exits_3(env: Env, argv: tuple[str, ...]) -> None:
    for token in (BOGUS_PAT, None):
        out = tessera(*argv, token=token, env=env)
        assert out.returncode == 3, f"{argv} with {'a wrong' if token else 'no'} token: exit {out.returncode} {out.stderr}"
        assert AUTH_MESSAGE in out.stderr and out.stdout == "", out
        assert BOGUS_PAT not in out.stdout + out.stderr


def test_an_unreachable_gateway_exits_4(env: Env) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    for argv in (("credential", "list"), ("activity", "list"), ("users", "list")):
        out = tessera(*argv, token=env.pat("alice"), server=dead)
        assert out.returncode == 4, f"{argv}: exit {out.returncode} {out.stderr}"
        assert "cannot reach the gateway" in out.stderr and dead in out.stderr, out.stderr
    out = tessera("credential", "list", token=env.pat("alice"), extra_env={"TESSERA_URL": dead})
    assert out.returncode == 4, "TESSERA_URL is honoured"


def test_usage_errors_exit_2_and_help_documents_the_exit_codes(env: Env) -> None:
    assert tessera("credential", "frobnicate").returncode == 2
    assert tessera("credential", "status").returncode == 2, "a missing argument"
    assert tessera("activity", "list", "--limit", "0").returncode == 2
    assert tessera("credential", "list", "--output", "yaml").returncode == 2
    for group in ("credential", "activity", "users", "token"):
        help_text = ok(tessera(group, "--help"))
        assert "Exit codes:" in help_text and "3  authentication required" in help_text, help_text
        assert "TESSERA_TOKEN" in help_text and "TESSERA_URL" in help_text


def test_no_cli_output_carried_a_token(env: Env) -> None:
    """Runs last: every output of the module, against every PAT and every upstream bearer token."""
    secrets = set(env.pats.values()) | {BOGUS_PAT}
    for up in env.ups.values():
        for rec in up.recorded():
            auth = rec["headers"].get("authorization", "")
            if auth.startswith("Bearer "):
                secrets.add(auth.split(" ", 1)[1])
    assert OUTPUTS, "the module ran the CLI"
    leaks = [(i, s[:10]) for i, out in enumerate(OUTPUTS) for s in secrets if s and s in out]
    assert not leaks, f"CLI outputs carried tokens: {leaks}"
