"""Start-up of the sign-in wiring: a missing sealing key stops the gateway with the keyring's
message; a config without identity starts with a warning and serves no sign-in routes."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from conftest import ProcessRegistry, start_gateway


def test_store_idp_tokens_without_a_sealing_key_stops_start_up(
    registry: ProcessRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ("TESSERA_SEALING_KEY", "TESSERA_SEALING_KEYS_OLD", "MCPPROXY_CRED_KEY", "TESSERA_SEALING_KEY_FILE"):
        monkeypatch.delenv(var, raising=False)
    auth = {"issuer": "http://127.0.0.1:9", "client_id": "tessera", "client_secret": "s", "store_idp_tokens": True}
    gw = start_gateway(registry, tmp_path, {}, extra={"auth": auth}, wait_ready=False)
    assert gw.proc.popen.wait(timeout=30) != 0
    log = gw.proc.log.read_text()
    assert "sealing key" in log and "TESSERA_SEALING_KEY" in log, log


def test_no_identity_warns_and_has_no_sign_in_routes(registry: ProcessRegistry, tmp_path: Path) -> None:
    gw = start_gateway(registry, tmp_path, {})
    assert "/mcp is unauthenticated" in gw.proc.log.read_text()
    assert httpx.get(f"{gw.base}/auth/login", timeout=5).status_code == 404
    assert httpx.get(f"{gw.base}/api/v1/me", timeout=5).status_code == 404
