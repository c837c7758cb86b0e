"""/metrics (issue #7): the exposition parses with the Prometheus text-format parser
(prometheus_client's), and the counters move as MCP traffic flows through the gateway."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import SEP, ProcessRegistry, mcp_client, start_gateway, stdio_lossless, text_of

pytestmark = pytest.mark.anyio


def scrape(base: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics by (name, sorted labels); fails if the text does not parse."""
    r = httpx.get(f"{base}/metrics", timeout=10)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain"), r.headers["content-type"]
    samples = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


async def test_metrics_parse_and_move_with_traffic(registry: ProcessRegistry, tmp_path: Path) -> None:
    gw = start_gateway(registry, tmp_path, {"demo": stdio_lossless()}, extra={"auth": "none"})
    before = scrape(gw.base)
    calls = 5
    async with mcp_client(gw) as session:
        await session.list_tools()
        for i in range(calls):
            result = await session.call_tool(f"demo{SEP}echo", {"message": f"m{i}"})
            assert text_of(result) == f"m{i}"
        during = scrape(gw.base)
        assert during[("tessera_client_sessions", ())] >= 1
        assert during[("tessera_upstream_sessions", ())] >= 2, "the discovery and the client's upstream sessions are alive"
    after = scrape(gw.base)

    def moved(name: str, labels: dict[str, str] | None = None) -> float:
        key = (name, tuple(sorted((labels or {}).items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert moved("tessera_mcp_messages_total", {"method": "tools/call"}) == calls
    assert moved("tessera_mcp_messages_total", {"method": "tools/list"}) >= 1
    assert moved("tessera_mcp_messages_total", {"method": "initialize"}) == 1
    assert moved("tessera_upstream_calls_total", {"server": "demo"}) == calls
    assert moved("tessera_upstream_request_duration_seconds_count", {"server": "demo"}) == calls
    assert moved("tessera_upstream_request_duration_seconds_bucket", {"server": "demo", "le": "+Inf"}) == calls
    assert moved("tessera_upstream_request_duration_seconds_sum", {"server": "demo"}) > 0
    assert moved("tessera_upstream_errors_total", {"server": "demo"}) == 0
    assert after[("tessera_upstream_up", (("server", "demo"),))] == 1
