"""`tessera config validate` and `tessera serve` on the broken configs of
crates/tessera-config/tests/broken/*.json.

Each broken config has a sibling `<name>.paths` that lists, one per line and in order,
the JSON paths of the problems `config validate` must report, one line per problem,
as `<json path>: <message>`; `<file>` stands for the config's own path.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from conftest import REPO, TESSERA_BIN, port_accepts, require_file, tail

BROKEN_DIR = REPO / "crates" / "tessera-config" / "tests" / "broken"
BROKEN = sorted(BROKEN_DIR.glob("*.json"))


def expected_paths(config: Path) -> list[str]:
    paths_file = config.with_suffix(".paths")
    assert paths_file.exists(), f"{paths_file} is missing"
    return [line.strip() for line in paths_file.read_text().splitlines() if line.strip() and not line.startswith("#")]


def broken_params() -> list:
    if not BROKEN:
        return [pytest.param(None, id="no-broken-configs")]
    return [pytest.param(p, id=p.stem) for p in BROKEN]


def listen_port(config: Path) -> int | None:
    """The port a (broken) config asks to listen on, if it can be made out."""
    try:
        listen = json.loads(config.read_text()).get("listen")
    except (ValueError, AttributeError):
        match = re.search(r'"listen"\s*:\s*"[^"]*:(\d+)"', config.read_text(errors="replace"))
        return int(match.group(1)) if match else None
    if isinstance(listen, str) and re.fullmatch(r".+:\d+", listen):
        port = int(listen.rsplit(":", 1)[1])
        return port or None
    return None


def clean_env() -> dict[str, str]:
    """The environment without TESSERA_TEST_SURELY_UNSET_* (see broken/README.md)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("TESSERA_TEST_SURELY_UNSET_")}


@pytest.mark.parametrize("config", broken_params())
def test_config_validate_reports_paths(config: Path | None) -> None:
    assert config is not None, f"no broken configs found in {BROKEN_DIR}"
    require_file(TESSERA_BIN, "build it with `cargo build --release --workspace`")
    # `<file>` stands for the path the file was loaded from (as given on the command line).
    want = [path.replace("<file>", str(config)) for path in expected_paths(config)]
    assert want, f"{config.with_suffix('.paths')} lists no paths"
    p = subprocess.run(
        [str(TESSERA_BIN), "config", "validate", str(config)], capture_output=True, text=True, timeout=30, env=clean_env()
    )
    shown = f"stdout:\n{p.stdout}\nstderr:\n{p.stderr}"
    assert p.returncode == 1, f"exit code {p.returncode}, expected 1\n{shown}"
    lines = [line for line in p.stdout.splitlines() if line.strip()]
    assert len(lines) == len(want), f"expected one line per problem ({len(want)}), got {len(lines)}\n{shown}"
    for line, path in zip(lines, want):
        assert line.startswith(f"{path}: ") and line[len(path) + 2 :].strip(), (
            f"expected '{path}: <message>', got {line!r}\n{shown}"
        )


@pytest.mark.parametrize("config", broken_params())
def test_serve_refuses_broken_config(config: Path | None, tmp_path: Path) -> None:
    assert config is not None, f"no broken configs found in {BROKEN_DIR}"
    require_file(TESSERA_BIN, "build it with `cargo build --release --workspace`")
    port = listen_port(config)
    already_taken = port is not None and port_accepts(port)
    log = tmp_path / "serve.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            [str(TESSERA_BIN), "serve", "--config", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=fh,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
            env=clean_env(),
        )
    try:
        deadline = time.monotonic() + 20
        while proc.poll() is None:
            if port is not None and not already_taken:
                assert not port_accepts(port), f"tessera serve is listening on {port} with a broken config"
            if time.monotonic() > deadline:
                pytest.fail(f"tessera serve still running 20s after start with broken config {config.name}\n{tail(log)}")
            time.sleep(0.05)  # bounded poll of the process state
        assert proc.returncode != 0, f"tessera serve exited 0 on broken config {config.name}\n{tail(log)}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
