"""Fixtures for the Tessera end-to-end tests.

Every process a fixture starts is stopped by its PID at teardown (SIGTERM, then
SIGKILL after a bounded wait, then SIGKILL to its process group so that stdio
upstreams spawned by the gateway cannot outlive a failed test).

Synchronisation never sleeps for a fixed time: it waits for a port to accept, for
/readyz to report every upstream "ready", or for a condition polled with a deadline.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

E2E_DIR = Path(__file__).resolve().parent
# A JWT's header and payload: "eyJ" then base64url, a dot, more base64url, a dot. A bare "eyJ"
# is not enough: random base64url values (PKCE challenges, state, nonces) contain it about once
# in 260,000 positions, which made a check on bare "eyJ" fail now and then.
JWT_LIKE = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.")

REPO = E2E_DIR.parents[1]
TARGET_DIR = Path(os.environ.get("CARGO_TARGET_DIR") or REPO / "target")
TESSERA_BIN = TARGET_DIR / "release" / "tessera"
UPSTREAM_BIN = TARGET_DIR / "release" / "tessera-upstream"
EVERYTHING_JS = E2E_DIR / "node_modules" / "@modelcontextprotocol" / "server-everything" / "dist" / "index.js"
PY_UPSTREAM = E2E_DIR / "upstreams" / "py_upstream.py"
PYTHON = sys.executable
NODE = shutil.which("node") or "node"

# Names of the upstream servers in the shared gateway.
EV = {"streamable-http": "evhttp", "sse": "evsse", "stdio": "evstdio"}
PY = {"streamable-http": "pyhttp", "sse": "pysse", "stdio": "pystdio"}
LOSSLESS = "lossless"
SEP = "__"
LIST_PAGE_SIZE = 7

STARTUP_TIMEOUT = 60.0  # seconds; node + cargo-built binaries on a 2-core box


# --------------------------------------------------------------------------- utils


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_accepts(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class Abort(Exception):
    """Raised by a polled condition to stop waiting at once (e.g. the process died)."""


def wait_until(cond: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll cond() until it returns a truthy value; fail after timeout seconds."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            value = cond()
            if value:
                return value
        except Abort:
            raise
        except Exception as exc:  # noqa: BLE001 - reported on timeout
            last_exc = exc
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}" + (f" (last error: {last_exc!r})" if last_exc else ""))
        time.sleep(interval)


async def await_until(cond: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """Async version of wait_until; cond may be a coroutine function."""
    import anyio
    import inspect

    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            value = cond()
            if inspect.isawaitable(value):
                value = await value
            if value:
                return value
        except Abort:
            raise
        except Exception as exc:  # noqa: BLE001
            last_exc = exc
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}" + (f" (last error: {last_exc!r})" if last_exc else ""))
        await anyio.sleep(interval)


def tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "<no log>"
    return "\n".join(text.splitlines()[-lines:])


@dataclass
class Proc:
    """A child process whose output goes to a log file; stopped by PID."""

    name: str
    popen: subprocess.Popen
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, grace: float = 10.0) -> int | None:
        p = self.popen
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    p.kill()
                p.wait(timeout=grace)
        # Sweep anything left in the child's own process group (e.g. stdio upstreams).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(p.pid, signal.SIGKILL)
        return p.returncode


def _die_with_parent() -> None:
    """preexec_fn: start a new session and ask the kernel to SIGKILL the child if the
    test runner dies (e.g. killed from outside), so no process outlives the run."""
    os.setsid()
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


# Every gateway log of the run, and the secrets tests used: scanned once the whole suite is done.
GATEWAY_LOGS: list[Path] = []
USED_SECRETS: set[str] = set()


# Credentials clients sent to Tessera (IdP access tokens, PATs, session cookies) and the files in
# which upstreams recorded every request's headers (tests/e2e/brokered.py): scanned once the whole
# suite is done — no recorded request may carry one of those credentials.
INBOUND_CREDENTIALS: set[str] = set()
UPSTREAM_HEADER_RECORDS: list[Path] = []


def register_secret(value: str) -> str:
    """Remember a token, secret or key a test used; no gateway log line may contain it."""
    if value:
        USED_SECRETS.add(value)
    return value


def spawn(name: str, argv: list[str], log_dir: Path, env: dict[str, str] | None = None, cwd: Path | None = None) -> Proc:
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{name}-{uuid.uuid4().hex[:6]}.log"
    if name == "tessera":
        GATEWAY_LOGS.append(log)
    fh = open(log, "wb")  # noqa: SIM115 - closed by the OS when the child exits
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    popen = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=fh,
        stderr=subprocess.STDOUT,
        env=full_env,
        cwd=str(cwd) if cwd else None,
        preexec_fn=_die_with_parent,  # own process group: teardown can sweep it by id
    )
    fh.close()
    return Proc(name, popen, log)


class ProcessRegistry:
    """Collects processes so a fixture can stop all of them, whatever happens."""

    def __init__(self) -> None:
        self.procs: list[Proc] = []

    def add(self, proc: Proc) -> Proc:
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            with contextlib.suppress(Exception):
                proc.stop()
        self.procs.clear()


# ------------------------------------------------------------------- upstreams


def require_file(path: Path, hint: str) -> None:
    if not path.exists():
        pytest.fail(f"{path} is missing: {hint}", pytrace=False)


def start_everything(reg: ProcessRegistry, transport: str, log_dir: Path) -> tuple[Proc, str]:
    """server-everything over 'streamableHttp' or 'sse' on a free port; returns (proc, url)."""
    require_file(EVERYTHING_JS, "run `npm ci --prefix tests/e2e` (scripts/test-all does)")
    port = free_port()
    proc = reg.add(spawn(f"everything-{transport}", [NODE, str(EVERYTHING_JS), transport], log_dir, env={"PORT": str(port)}))
    wait_for_port(proc, port)
    path = "/mcp" if transport == "streamableHttp" else "/sse"
    return proc, f"http://127.0.0.1:{port}{path}"


def start_py_upstream(reg: ProcessRegistry, transport: str, log_dir: Path, state_dir: Path) -> tuple[Proc, str]:
    """The Python upstream over 'streamable-http' or 'sse' on a free port; returns (proc, url)."""
    port = free_port()
    proc = reg.add(
        spawn(
            f"py-upstream-{transport}",
            [PYTHON, str(PY_UPSTREAM), transport, str(port)],
            log_dir,
            env={"PY_UPSTREAM_STATE_DIR": str(state_dir)},
        )
    )
    wait_for_port(proc, port)
    path = "/mcp" if transport == "streamable-http" else "/sse"
    return proc, f"http://127.0.0.1:{port}{path}"


def wait_for_port(proc: Proc, port: int) -> None:
    def ready() -> bool:
        if not proc.alive():
            raise Abort(f"{proc.name} exited with {proc.popen.returncode}")
        return port_accepts(port)

    try:
        wait_until(ready, STARTUP_TIMEOUT, f"{proc.name} to listen on {port}")
    except Exception as exc:
        pytest.fail(f"{exc}\n--- {proc.name} log ---\n{tail(proc.log)}", pytrace=False)


def stdio_everything() -> dict[str, Any]:
    require_file(EVERYTHING_JS, "run `npm ci --prefix tests/e2e` (scripts/test-all does)")
    return {"command": NODE, "args": [str(EVERYTHING_JS), "stdio"]}


def stdio_py(state_dir: Path) -> dict[str, Any]:
    return {"command": PYTHON, "args": [str(PY_UPSTREAM)], "env": {"PY_UPSTREAM_STATE_DIR": str(state_dir)}}


def stdio_lossless() -> dict[str, Any]:
    require_file(UPSTREAM_BIN, "build it with `cargo build --release --workspace`")
    return {"command": str(UPSTREAM_BIN), "args": ["stdio"]}


def http_server(url: str, protocol: str) -> dict[str, Any]:
    return {"url": url, "protocol": protocol}


# --------------------------------------------------------------------- gateway


@dataclass
class Gateway:
    proc: Proc
    port: int
    config_path: Path
    servers: list[str] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def mcp_url(self) -> str:
        return f"{self.base}/mcp"

    @property
    def sse_url(self) -> str:
        return f"{self.base}/sse"

    def url(self, front: str) -> str:
        return self.mcp_url if front == "mcp" else self.sse_url

    def readyz(self) -> dict[str, Any]:
        r = httpx.get(f"{self.base}/readyz", timeout=5)
        return r.json()

    def log_tail(self, lines: int = 60) -> str:
        return tail(self.proc.log, lines)


def start_gateway(
    reg: ProcessRegistry,
    tmp: Path,
    servers: dict[str, dict[str, Any]],
    extra: dict[str, Any] | None = None,
    wait_ready: bool = True,
    port: int | None = None,
) -> Gateway:
    require_file(TESSERA_BIN, "build it with `cargo build --release --workspace`")
    port = port or free_port()
    tmp.mkdir(parents=True, exist_ok=True)
    config = {
        "listen": f"127.0.0.1:{port}",
        "data_dir": str(tmp / "data"),
        "tool_separator": SEP,
        "call_tool_timeout": "30s",
        "list_page_size": LIST_PAGE_SIZE,
        "mcpServers": servers,
    }
    if extra:
        config.update(extra)
    config_path = tmp / "tessera.json"
    config_path.write_text(json.dumps(config, indent=2))
    proc = reg.add(
        spawn(
            "tessera",
            [str(TESSERA_BIN), "serve", "--config", str(config_path), "--log-format", "text"],
            tmp / "logs",
            env={"RUST_LOG": os.environ.get("RUST_LOG", "info")},
            cwd=tmp,
        )
    )
    gw = Gateway(proc, port, config_path, list(servers))
    if wait_ready:
        wait_gateway_ready(gw)
    return gw


def wait_gateway_ready(gw: Gateway, timeout: float = STARTUP_TIMEOUT) -> None:
    last: dict[str, Any] = {}

    def ready() -> bool:
        nonlocal last
        if not gw.proc.alive():
            raise Abort(f"tessera exited with {gw.proc.popen.returncode}")
        if not port_accepts(gw.port):
            return False
        last = gw.readyz()
        ups = last.get("upstreams", {})
        return all(ups.get(name, {}).get("state") == "ready" for name in gw.servers) and bool(last.get("ready"))

    try:
        wait_until(ready, timeout, "tessera /readyz to report every upstream ready", interval=0.1)
    except Exception as exc:
        pytest.fail(
            f"{exc}\nlast /readyz: {json.dumps(last)}\n--- tessera log ({gw.proc.log}) ---\n{gw.log_tail()}",
            pytrace=False,
        )


# -------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session", autouse=True)
def no_secret_in_any_gateway_log() -> Iterator[None]:
    """After the whole suite: no line any gateway logged carries a JWT, a personal access token,
    or a secret a test registered (client secrets, sealing keys, tokens)."""
    yield
    pat_like = re.compile(r"tsr_pat_[A-Za-z0-9_-]{16,}")
    problems = []
    for log in GATEWAY_LOGS:
        if not log.exists():
            continue
        for n, line in enumerate(log.read_text(errors="replace").splitlines(), 1):
            if JWT_LIKE.search(line) or pat_like.search(line) or any(s in line for s in USED_SECRETS):
                problems.append(f"{log}:{n}: {line[:200]}")
    assert not problems, "secrets in gateway logs:\n" + "\n".join(problems[:20])


@pytest.fixture(scope="session", autouse=True)
def no_inbound_credential_reached_an_upstream() -> Iterator[None]:
    """After the whole suite: no request any header-recording upstream saw carries a credential
    a client sent to Tessera."""
    yield
    problems = []
    for path in UPSTREAM_HEADER_RECORDS:
        if not path.exists():
            continue
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            hits = [s for s in INBOUND_CREDENTIALS if s in line]
            if hits:
                problems.append(f"{path}:{n}: carries an inbound credential ({hits[0][:8]}…)")
    assert not problems, "inbound credentials reached an upstream:\n" + "\n".join(problems[:20])


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def registry() -> Iterator[ProcessRegistry]:
    reg = ProcessRegistry()
    try:
        yield reg
    finally:
        reg.stop_all()


@pytest.fixture(scope="session")
def session_registry() -> Iterator[ProcessRegistry]:
    reg = ProcessRegistry()
    try:
        yield reg
    finally:
        reg.stop_all()


@pytest.fixture(scope="session")
def py_state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("py-upstream-state")


@pytest.fixture(scope="session")
def gateway(session_registry: ProcessRegistry, tmp_path_factory: pytest.TempPathFactory, py_state_dir: Path) -> Gateway:
    """One gateway in front of every kind of upstream:

    server-everything over streamable HTTP, SSE and stdio; the Python upstream over
    the same three transports; tessera-upstream (lossless) over stdio.
    """
    global _GATEWAY_FAILURE
    if _GATEWAY_FAILURE is not None:  # pytest retries a failed session fixture per test: fail fast
        pytest.fail(f"(shared gateway failed to start earlier)\n{_GATEWAY_FAILURE}", pytrace=False)
    try:
        return _start_shared_gateway(session_registry, tmp_path_factory, py_state_dir)
    except (Exception, pytest.fail.Exception) as exc:
        _GATEWAY_FAILURE = str(exc)
        session_registry.stop_all()
        raise


_GATEWAY_FAILURE: str | None = None


def _start_shared_gateway(
    session_registry: ProcessRegistry, tmp_path_factory: pytest.TempPathFactory, py_state_dir: Path
) -> Gateway:
    tmp = tmp_path_factory.mktemp("gateway")
    logs = tmp / "logs"
    _, ev_http = start_everything(session_registry, "streamableHttp", logs)
    _, ev_sse = start_everything(session_registry, "sse", logs)
    _, py_http = start_py_upstream(session_registry, "streamable-http", logs, py_state_dir)
    _, py_sse = start_py_upstream(session_registry, "sse", logs, py_state_dir)
    servers = {
        EV["streamable-http"]: http_server(ev_http, "streamable-http"),
        EV["sse"]: http_server(ev_sse, "sse"),
        EV["stdio"]: stdio_everything(),
        PY["streamable-http"]: http_server(py_http, "streamable-http"),
        PY["sse"]: http_server(py_sse, "sse"),
        PY["stdio"]: stdio_py(py_state_dir),
        LOSSLESS: stdio_lossless(),
    }
    return start_gateway(session_registry, tmp, servers)


# ---------------------------------------------------------------------- client


@contextlib.asynccontextmanager
async def mcp_client(url_or_gw: Any, front: str = "mcp", **session_kwargs: Any) -> AsyncIterator[Any]:
    """An initialized mcp.ClientSession to the gateway's /mcp or /sse front end
    (or, given a URL string, to that URL with the transport named by front)."""
    from mcp import ClientSession
    from mcp.client.sse import sse_client
    from mcp.client.streamable_http import streamablehttp_client

    url = url_or_gw if isinstance(url_or_gw, str) else url_or_gw.url(front)
    if front == "mcp":
        transport = streamablehttp_client(url, timeout=10, sse_read_timeout=60)
    else:
        transport = sse_client(url, timeout=10, sse_read_timeout=60)
    async with transport as streams:
        read, write = streams[0], streams[1]
        async with ClientSession(read, write, **session_kwargs) as session:
            await session.initialize()
            yield session


def text_of(result: Any) -> str:
    """All text content of a CallToolResult / GetPromptResult joined by newlines."""
    parts = []
    for block in getattr(result, "content", None) or []:
        if getattr(block, "type", None) == "text":
            parts.append(block.text)
    for msg in getattr(result, "messages", None) or []:
        c = msg.content
        if getattr(c, "type", None) == "text":
            parts.append(c.text)
    return "\n".join(parts)
