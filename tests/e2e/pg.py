"""A throwaway PostgreSQL cluster for the end-to-end tests (issue #9: several replicas on one
database), mirroring the choices of `crates/tessera-test-pg/src/lib.rs`:

- binaries from `TESSERA_TEST_PG_BIN`, else the newest `/usr/lib/postgresql/<major>/bin` (Debian's
  `postgresql` package, which scripts/test-all installs when absent), else `initdb`/`pg_ctl` on PATH;
- `initdb` with trust authentication, superuser `tessera`, UTF8, no locale, no fsync;
- `pg_ctl -w start` with `-c listen_addresses=127.0.0.1 -p <free port> -k <the cluster's own
  directory>` (unix socket there, never in /var/run), fsync and synchronous commit off; a few ports
  are tried, since a probed free port can be taken before the server binds it;
- PostgreSQL refuses to run as root: when the tests run as root the directory is handed to the
  unprivileged user `nobody` (or `TESSERA_TEST_PG_USER`) and every PostgreSQL command runs with
  that user's uid and gid and no supplementary groups;
- teardown — on a failure too — is `pg_ctl stop -m immediate`, then SIGKILL to the postmaster's PID
  if that failed, then the directory is removed.

The cluster's directory is made with `tempfile.mkdtemp` in the system's temporary directory, not
in pytest's `tmp_path`: pytest creates its base directory (`/tmp/pytest-of-<user>`) with mode 0700,
so when the tests run as root the unprivileged PostgreSQL user could not reach a data directory
inside it. The directory is removed at teardown like pytest's would be.

    with Cluster.start() as pg:
        url = pg.create_database("tessera")     # postgres://tessera@127.0.0.1:<port>/tessera
        rows = pg.query("tessera", "SELECT 1")  # [["1"]], through psql
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Any

SUPERUSER = "tessera"
START_TIMEOUT = 60  # seconds (pg_ctl -t); a busy 2-core box
PORT_ATTEMPTS = 5


class PgError(Exception):
    """A PostgreSQL command failed; carries its output."""


def find_bin() -> Path:
    """The directory holding initdb, pg_ctl, createdb and psql."""
    env = os.environ.get("TESSERA_TEST_PG_BIN")
    if env:
        return Path(env)
    versions: list[tuple[int, Path]] = []
    root = Path("/usr/lib/postgresql")
    if root.is_dir():
        for entry in root.iterdir():
            if entry.name.isdigit() and (entry / "bin" / "initdb").exists():
                versions.append((int(entry.name), entry / "bin"))
    if versions:
        return max(versions)[1]
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return Path(os.path.realpath(initdb)).parent
    raise PgError(
        "PostgreSQL's initdb and pg_ctl were not found (install Debian's `postgresql` package — "
        "scripts/test-all does — or set TESSERA_TEST_PG_BIN to their directory)"
    )


def _unprivileged_user() -> tuple[int, int]:
    name = os.environ.get("TESSERA_TEST_PG_USER", "nobody")
    try:
        entry = pwd.getpwnam(name)
    except KeyError as exc:
        raise PgError(f"running as root: user {name} (to run PostgreSQL) not found") from exc
    return entry.pw_uid, entry.pw_gid


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class Cluster:
    """A running throwaway cluster; `stop()` (or leaving the `with` block) stops and deletes it."""

    def __init__(self, bin_dir: Path, dir_: Path, run_as: tuple[int, int] | None) -> None:
        self.bin = bin_dir
        self.dir = dir_
        self.data = dir_ / "data"
        self.log = dir_ / "postgres.log"
        self.run_as = run_as
        self.port = 0
        self.pid: int | None = None
        self._stopped = False

    # ------------------------------------------------------------------ life cycle

    @classmethod
    def start(cls) -> Cluster:
        bin_dir = find_bin()
        dir_ = Path(tempfile.mkdtemp(prefix="tessera-e2e-pg-"))
        run_as = None
        if os.geteuid() == 0:
            run_as = _unprivileged_user()
            os.chown(dir_, run_as[0], run_as[1])
        cluster = cls(bin_dir, dir_, run_as)
        try:
            cluster._initdb()
            cluster._start()
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def _initdb(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", SUPERUSER, "--auth=trust", "--encoding=UTF8",
                  "--no-locale", "--no-sync")

    def _start(self) -> None:
        last = ""
        for _ in range(PORT_ATTEMPTS):
            self.port = _free_port()
            options = (
                f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off "
                "-c full_page_writes=off -c synchronous_commit=off -c max_connections=200"
            )
            try:
                self._run("pg_ctl", "start", "-w", "-t", str(START_TIMEOUT), "-D", str(self.data),
                          "-l", str(self.log), "-o", options)
            except PgError as exc:
                last = f"{exc}\n{self.log_tail()}"
                continue
            self.pid = self._read_pid()
            return
        raise PgError(f"PostgreSQL did not start:\n{last}")

    def stop(self) -> None:
        """`pg_ctl stop -m immediate`, SIGKILL to the postmaster if that fails, remove the
        directory. Idempotent; never raises."""
        if self._stopped:
            return
        self._stopped = True
        if self.pid is not None or (self.data / "postmaster.pid").exists():
            try:
                self._run("pg_ctl", "stop", "-w", "-t", "20", "-m", "immediate", "-D", str(self.data))
            except Exception:  # noqa: BLE001 - fall back to the PID
                pid = self.pid or self._read_pid()
                if pid:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ use

    def url(self, db: str) -> str:
        """The URL of database `db` as the superuser, over TCP on 127.0.0.1."""
        return f"postgres://{SUPERUSER}@127.0.0.1:{self.port}/{db}"

    def create_database(self, name: str) -> str:
        if not _IDENT.match(name):
            raise ValueError(f"not a plain database name: {name!r}")
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER, name)
        return self.url(name)

    def query(self, db: str, sql: str, timeout: float = 30) -> list[list[str]]:
        """Rows of `sql` (psql -At, fields split on a unit separator), as text; NULL is ''."""
        out = self._run("psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", str(self.port),
                        "-U", SUPERUSER, "-d", db, "-A", "-t", "-F", "\x1f", "-c", sql, timeout=timeout)
        return [line.split("\x1f") for line in out.splitlines() if line]

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "<no PostgreSQL log>"

    # ------------------------------------------------------------------ helpers

    def _read_pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().splitlines()[0].strip())
        except (OSError, ValueError, IndexError):
            return None

    def _run(self, program: str, *args: str, timeout: float = START_TIMEOUT + 30) -> str:
        env = {k: v for k, v in os.environ.items() if k not in ("PGDATA", "PGHOST", "PGPORT", "PGUSER", "PGDATABASE",
                                                              "PGPASSWORD", "PGSERVICE", "PGOPTIONS")}
        env["HOME"] = str(self.dir)
        env["LC_ALL"] = "C"
        kw: dict[str, Any] = {}
        if self.run_as:
            kw.update(user=self.run_as[0], group=self.run_as[1], extra_groups=[])
        try:
            proc = subprocess.run([str(self.bin / program), *args], cwd=str(self.dir), env=env, stdin=subprocess.DEVNULL,
                                  capture_output=True, text=True, timeout=timeout, check=False, **kw)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise PgError(f"{program}: {exc}") from exc
        if proc.returncode != 0:
            raise PgError(f"{program} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
        return proc.stdout
