"""The brokered-traffic demo behind scripts/demo-brokered (issue #6).

    demo_brokered.py [up]                      start the test provider, a protected upstream and
                                               Tessera (all on free 127.0.0.1 ports); print what
                                               to run; stop everything by PID on Ctrl-C
    demo_brokered.py call USER --gateway URL --issuer URL
                                               sign USER in at the provider (its own forms), then
                                               call whoami through Tessera on both brokered servers

Tessera serves two brokered views of the same protected upstream: `whoami_tx` (RFC 8693 token
exchange) and `whoami_obo` (Entra-style on-behalf-of). The upstream accepts only tokens issued
for its own URL, so the caller's token (issued for Tessera) would be refused there: what it
reports is the credential Tessera obtained for that caller.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import signal
import sys
import tempfile
from pathlib import Path

E2E = Path(__file__).resolve().parent
sys.path.insert(0, str(E2E))
sys.path.insert(0, str(E2E.parents[0] / "testbed"))

DEMO_CLIENT = "demo-cli"  # a public client of the provider: callers' own tokens for Tessera
REDIRECT = "http://127.0.0.1:9/callback"
SERVERS = ("whoami_tx", "whoami_obo")


def up() -> int:
    from brokered import PASSWORDS, gateway_auth, obo_server, provider_config, start_protected_upstream, tx_server, wait_gateway_listening
    from conftest import ProcessRegistry, free_port, start_gateway, stdio_lossless
    from idp import IdP

    work = Path(tempfile.mkdtemp(prefix="tessera-demo-brokered-"))
    port = free_port()
    signin_secret = secrets.token_urlsafe(24)
    broker_secrets = {c: secrets.token_urlsafe(24) for c in ("broker-tx", "broker-obo", "broker-connect")}
    os.environ["TESSERA_SEALING_KEY"] = base64.b64encode(secrets.token_bytes(32)).decode()
    config = provider_config(port, signin_secret, broker_secrets, [])
    config["clients"].append({
        "client_id": DEMO_CLIENT,
        "redirect_uris": [REDIRECT],
        "grant_types": ["authorization_code"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
    })
    config["auto_consent"] = True

    def stop(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)  # also when started in the background (SIGINT ignored)
    reg = ProcessRegistry()
    try:
        with IdP(config=config, log_dir=work / "logs") as idp:
            upstream = start_protected_upstream(reg, idp.issuer, work / "logs", "demo")
            allowed = [f"{u}@example.com" for u in ("alice", "bob")]
            servers = {
                "whoami_tx": tx_server(idp, upstream, broker_secrets["broker-tx"], allowed),
                "whoami_obo": obo_server(idp, upstream, broker_secrets["broker-obo"], allowed),
                "demo": stdio_lossless(),
            }
            extra = {"auth": gateway_auth(idp, port, signin_secret), "public_url": f"http://127.0.0.1:{port}"}
            gw = start_gateway(reg, work / "gw", servers, extra=extra, wait_ready=False, port=port)
            wait_gateway_listening(gw, ["demo"])
            me = "scripts/demo-brokered"
            print(f"""
Tessera            {gw.mcp_url}   (config {gw.config_path})
test provider      {idp.issuer}   (users: {', '.join(f'{u}/{PASSWORDS[u]}' for u in ('alice', 'bob'))})
protected upstream {upstream.url}   (accepts only tokens whose aud is this URL)
logs               {work / 'logs'}, {work / 'gw' / 'logs'}

In another terminal, call whoami through Tessera as each user:

  {me} call alice --gateway {gw.base} --issuer {idp.issuer}
  {me} call bob   --gateway {gw.base} --issuer {idp.issuer}

Each signs in at the provider, sends its own token to Tessera only, and prints what the upstream
saw: the user's own subject, in a token Tessera obtained for that user (token exchange: client_id
broker-tx, act broker-tx; on-behalf-of: azp broker-obo). carol (carol/carol-pw) can sign in
but is not in the servers' allowed_emails: her calls are refused before any token request:

  {me} call carol --gateway {gw.base} --issuer {idp.issuer}

Ctrl-C stops everything.""", flush=True)
            while gw.proc.alive() and upstream.proc.alive() and idp.alive():
                try:
                    gw.proc.popen.wait(timeout=1)
                except Exception:  # noqa: BLE001 - subprocess.TimeoutExpired: still running
                    pass
            print("a demo process exited; stopping", file=sys.stderr)
            return 1
    except KeyboardInterrupt:
        print("\nstopping", file=sys.stderr)
        return 0
    finally:
        reg.stop_all()


def call(user: str, gateway: str, issuer: str, password: str | None) -> int:
    import anyio
    import httpx
    from mcp import ClientSession, McpError
    from mcp.client.streamable_http import streamablehttp_client

    from brokered import PASSWORDS
    from idp import browser_login, pkce_pair
    from urllib.parse import urlencode, parse_qs, urlsplit

    discovery = httpx.get(f"{issuer}/.well-known/openid-configuration", timeout=10).json()
    verifier, challenge = pkce_pair()
    url = discovery["authorization_endpoint"] + "?" + urlencode({
        "response_type": "code", "client_id": DEMO_CLIENT, "redirect_uri": REDIRECT, "scope": "openid email profile",
        "state": secrets.token_urlsafe(8), "code_challenge": challenge, "code_challenge_method": "S256", "resource": f"{gateway}/mcp",
    })
    landed = browser_login(url, user, password or PASSWORDS.get(user, f"{user}-pw"))
    code = parse_qs(urlsplit(landed).query)["code"][0]
    r = httpx.post(discovery["token_endpoint"], data={"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
                                                       "code_verifier": verifier, "client_id": DEMO_CLIENT}, timeout=10)
    r.raise_for_status()
    token = r.json()["access_token"]

    async def run() -> int:
        rc = 0
        async with streamablehttp_client(f"{gateway}/mcp", headers={"Authorization": f"Bearer {token}"}) as (read, write, _):
            async with ClientSession(read, write) as session:
                await session.initialize()
                for server in SERVERS:
                    try:
                        result = await session.call_tool(f"{server}__whoami", {})
                    except McpError as exc:
                        print(f"{user} -> {server}: error {exc.error.code}: {exc.error.message}")
                        rc = 1
                        continue
                    text = "".join(getattr(b, "text", "") for b in result.content)
                    if result.isError:
                        print(f"{user} -> {server}: error: {text}")
                        rc = 1
                        continue
                    w = json.loads(text)
                    shown = {k: w[k] for k in ("sub", "client_id", "azp", "act", "aud") if w.get(k) is not None}
                    print(f"{user} -> {server}: upstream saw {json.dumps(shown)}")
        return rc

    return anyio.run(run)


def main() -> int:
    p = argparse.ArgumentParser(prog="scripts/demo-brokered", description="Tessera brokered-traffic demo")
    sub = p.add_subparsers(dest="cmd")
    sub.add_parser("up", help="start the provider, a protected upstream and Tessera (default)")
    c = sub.add_parser("call", help="call whoami through Tessera as USER")
    c.add_argument("user")
    c.add_argument("--gateway", required=True, help="Tessera's base URL, e.g. http://127.0.0.1:8080")
    c.add_argument("--issuer", required=True, help="the test provider's URL")
    c.add_argument("--password", help="default: <user>-pw")
    args = p.parse_args()
    if args.cmd == "call":
        return call(args.user, args.gateway.rstrip("/"), args.issuer.rstrip("/"), args.password)
    return up()


if __name__ == "__main__":
    sys.exit(main())
