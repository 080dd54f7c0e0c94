"""A private PostgreSQL server for the registry tests (STACK.md: CI starts with nothing
running, the fixtures start what they need).

``postgres_url`` (session): ``VN_EID_TEST_POSTGRES_URL`` when set (a server someone runs,
whose user may create databases), else a throwaway cluster from Debian's PostgreSQL
binaries: initdb'd in a temporary directory owned by the ``postgres`` user (initdb and
postgres refuse to run as root; as any other user they run as that user), listening on a
free port on 127.0.0.1 only, its unix socket in the same directory.
``postgres_db`` (function): a new empty database on that server for one test, dropped after.
Both yield ``postgresql+psycopg://`` URLs. Registered for every test module by
``pytest_plugins`` in ``tests/conftest.py``.

Speed over durability, for the test cluster only: ``initdb --no-sync`` and ``fsync=off``,
``synchronous_commit=off``, ``full_page_writes=off``. The registry's durability comes from
SQLite's settings (``central.db.engine``: WAL, synchronous=FULL, tested there) and from a
production server's own configuration, never from this cluster.

Nothing outlives the test run, even a killed one: the cluster's shell runs in its own
session with a watcher reading a pipe whose write end only this process holds. When this
process closes it (stop) or dies in any way (SIGKILL included), the watcher sees end of
file and keeps sending SIGINT (fast shutdown) to the process group until the shell is
done; the shell removes the data directory once postgres has exited, the watcher the rest.
(Not PR_SET_PDEATHSIG: it fires when the parent *thread* exits, not the process.)
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from sqlalchemy.engine import URL, make_url

ENV_URL = "VN_EID_TEST_POSTGRES_URL"
PG_BINDIR = Path(os.environ.get("VN_EID_PG_BINDIR", "/usr/lib/postgresql/15/bin"))
SERVICE_USER = "postgres"

# $1 base directory, $2 binaries, $3 port. stdin is the lifeline pipe.
_SCRIPT = r"""
base=$1 bin=$2 port=$3
touch "$base/alive"
exec 3<&0 </dev/null
trap '' INT TERM HUP
(
    cat <&3 >/dev/null
    while [ -e "$base/alive" ]; do kill -INT 0; sleep 0.1; done
    rm -rf "$base"
) &
exec 3<&-
if "$bin/initdb" -D "$base/data" --no-sync -A trust -U postgres -E UTF8 --locale=C.UTF-8 \
        >"$base/initdb.log" 2>&1; then
    "$bin/postgres" -D "$base/data" -p "$port" \
        -c listen_addresses=127.0.0.1 -c unix_socket_directories="$base" \
        -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
        -c max_connections=200 -c shared_buffers=64MB -c log_min_messages=warning \
        >"$base/postgres.log" 2>&1 &
    wait $!
fi
status=$?
rm -rf "$base/data"
rm -f "$base/alive"
exit $status
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def postgres_unavailable() -> str | None:
    """Why this machine cannot start a test cluster, or None."""
    if not (PG_BINDIR / "initdb").exists() or not (PG_BINDIR / "postgres").exists():
        return (
            f"PostgreSQL server binaries not found in {PG_BINDIR} "
            f"(apt install postgresql-15, or set {ENV_URL} to a server)"
        )
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(SERVICE_USER)
        except KeyError:
            return f"running as root and there is no {SERVICE_USER!r} user to run PostgreSQL as"
    return None


class PgCluster:
    """A throwaway PostgreSQL cluster; ``start()``, ``url``, ``stop()``."""

    def __init__(self, bindir: Path = PG_BINDIR) -> None:
        self.bindir = bindir
        self.base: Path | None = None
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._lifeline: int | None = None

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def start(self, timeout: float = 30.0) -> None:
        if self._process is not None:
            raise RuntimeError("this cluster is already started")
        failures = []
        for _attempt in range(3):
            error = self._try_start(timeout)
            if error is None:
                return
            failures.append(error)
        raise RuntimeError("PostgreSQL did not start:\n" + "\n---\n".join(failures))

    def _try_start(self, timeout: float) -> str | None:
        # /tmp, not $TMPDIR: the postgres user must reach it, and the unix socket's path
        # must stay under 108 bytes.
        base = Path(
            tempfile.mkdtemp(prefix="vn-eid-pg-", dir="/tmp" if Path("/tmp").is_dir() else None)
        )
        user: int | None = None
        group: int | None = None
        extra_groups: list[int] | None = None
        if os.geteuid() == 0:
            account = pwd.getpwnam(SERVICE_USER)
            os.chown(base, account.pw_uid, account.pw_gid)
            user, group, extra_groups = account.pw_uid, account.pw_gid, []
        self.base, self.port = base, _free_port()
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": str(base), "TZ": "UTC"}
        lifeline_in, lifeline = os.pipe()
        try:
            process = subprocess.Popen(
                ["sh", "-c", _SCRIPT, "pgkit", str(base), str(self.bindir), str(self.port)],
                stdin=lifeline_in,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=env,
                cwd=base,
                start_new_session=True,
                user=user,
                group=group,
                extra_groups=extra_groups,
            )
        except BaseException:
            os.close(lifeline)
            shutil.rmtree(base, ignore_errors=True)
            raise
        finally:
            os.close(lifeline_in)
        self._process, self._lifeline = process, lifeline
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                break
            try:
                psycopg.connect(self._dsn(), connect_timeout=2).close()
                return None
            except psycopg.OperationalError:
                time.sleep(0.02)
        logs = "\n".join(
            f"{name}: {(base / name).read_text(errors='replace')[-2000:]}"
            for name in ("initdb.log", "postgres.log")
            if (base / name).exists()
        )
        self.stop()
        return f"port {self.port}: {logs or 'no log'}"

    def _dsn(self, dbname: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={dbname}"

    def stop(self, timeout: float = 20.0) -> None:
        """Fast shutdown, wait, remove the directory (idempotent)."""
        process, self._process = self._process, None
        lifeline, self._lifeline = self._lifeline, None
        if lifeline is not None:
            os.close(lifeline)
        if process is not None:
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(5)
        if self.base is not None:
            # The watcher removes it too; whichever comes second finds nothing to do.
            shutil.rmtree(self.base, ignore_errors=True)


def create_database(server_url: str, template: str | None = None) -> str:
    """A new database (``t_<random>``) on the server at ``server_url``; its URL."""
    url = make_url(server_url)
    name = f"t_{uuid.uuid4().hex[:16]}"
    statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template is not None:
        statement += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
    with psycopg.connect(_libpq(url), autocommit=True) as admin:
        admin.execute(statement)
    return url.set(database=name).render_as_string(hide_password=False)


def drop_database(database_url: str) -> None:
    url = make_url(database_url)
    assert url.database is not None
    with psycopg.connect(_libpq(url.set(database="postgres")), autocommit=True) as admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(url.database))
        )


def _libpq(url: URL) -> str:
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL server for this test session: its maintenance database's URL."""
    given = os.environ.get(ENV_URL)
    if given:
        yield given
        return
    reason = postgres_unavailable()
    if reason is not None:
        pytest.skip(reason)
    cluster = PgCluster()
    cluster.start()
    try:
        yield cluster.url
    finally:
        cluster.stop()


@pytest.fixture
def postgres_db(postgres_url: str) -> Iterator[str]:
    """A fresh, empty database for one test (dropped afterwards, connections and all)."""
    url = create_database(postgres_url)
    try:
        yield url
    finally:
        drop_database(url)
