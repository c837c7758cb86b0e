"""A stdio upstream sees its configured environment and a minimal inherited one, never the
gateway's own variables (which hold sealing keys and client secrets)."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import SEP, ProcessRegistry, mcp_client, start_gateway, stdio_everything, text_of

pytestmark = pytest.mark.anyio


async def test_stdio_child_gets_only_its_configured_environment(
    registry: ProcessRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TESSERA_TEST_GATEWAY_SECRET", "gateway-only-value-5f2c")
    server = stdio_everything()
    server["env"] = {"VISIBLE_TO_CHILD": "configured-value-9a1e"}
    gw = start_gateway(registry, tmp_path, {"ev": server})
    async with mcp_client(gw, "mcp") as s:
        text = text_of(await s.call_tool(f"ev{SEP}get-env", {}))
    assert "VISIBLE_TO_CHILD" in text and "configured-value-9a1e" in text, text
    assert "PATH" in text, text
    assert "TESSERA_TEST_GATEWAY_SECRET" not in text, text
    assert "gateway-only-value-5f2c" not in text, text
