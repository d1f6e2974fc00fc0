"""A throwaway PostgreSQL cluster: ``initdb`` in a temporary directory, started on a free port,
stopped and removed afterwards.

The benchmarks run on one by default (``python -m benchmarks`` without ``--dsn``), with
PostgreSQL's default settings, autovacuum on, as a production server starts: only the listen
address, the port, the socket directory and ``max_connections`` are set, plus whatever the
caller names (the soak preloads ``pg_stat_statements``). The tests use the same class with their
own settings (``tests/pgcluster.py``) to restart, crash and stop a server of their own.

``initdb`` and ``pg_ctl`` come from ``PGJOBS_PG_BIN`` (default ``/usr/lib/postgresql/15/bin``):
trust authentication for user ``postgres``, TCP on 127.0.0.1, the unix socket inside the
directory. PostgreSQL refuses to run as root, so as root the cluster's programs run as the
``postgres`` OS user (``runuser``), who then owns the directory.

No other server is ever touched: every command here names this cluster's data directory.
"""

from __future__ import annotations

import os
import pwd
import random
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path

import psycopg

PG_BIN = Path(os.environ.get("PGJOBS_PG_BIN", "/usr/lib/postgresql/15/bin"))

#: What every cluster sets: reachable on 127.0.0.1 only, and room for many worker processes
#: (each has its own connection, a LISTEN connection and a pool of up to its concurrency).
BASE_SETTINGS: dict[str, str] = {
    "listen_addresses": "'127.0.0.1'",
    "max_connections": "300",
}


def available() -> str | None:
    """None if a cluster can be made here, else why not (for ``pytest.skip``)."""
    for program in ("initdb", "pg_ctl", "postgres"):
        if not (PG_BIN / program).is_file():
            return f"{PG_BIN / program} is not installed"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no postgres OS user to run PostgreSQL as"
        if shutil.which("runuser") is None:
            return "running as root and runuser is missing"
    return None


def free_port() -> int:
    """A port of 127.0.0.1 that is free now, for a server about to be started on it.

    Drawn below the kernel's range of ephemeral ports, so that no outgoing connection (a client
    of another server) is given it as its local port before the server binds it, and never the
    same twice in one process (a cluster asks for several before starting anything)."""
    for _ in range(1000):
        port = _PORTS.randrange(*FREE_PORTS)
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free port of 127.0.0.1 in {FREE_PORTS[0]}-{FREE_PORTS[1] - 1}")


FREE_PORTS = (20000, 32000)
"""Where :func:`free_port` draws from: below Linux's default ephemeral range (32768-60999)."""

_PORTS = random.SystemRandom()
_handed_out: set[int] = set()


class PgCluster:
    """One PostgreSQL cluster in a temporary directory; :meth:`cleanup` stops and removes it.

    ``settings`` are written to ``postgresql.auto.conf`` over :data:`BASE_SETTINGS` (values as
    the file spells them: ``"'32MB'"``, ``"on"``).
    """

    def __init__(
        self, base_dir: Path | None = None, settings: Mapping[str, str] | None = None
    ) -> None:
        reason = available()
        if reason is not None:
            raise RuntimeError(f"cannot make a PostgreSQL cluster: {reason}")
        self.dir = Path(tempfile.mkdtemp(prefix="pgjobs-cluster-", dir=base_dir))
        self.data = self.dir / "data"
        self.socket_dir = self.dir / "sock"
        self.log_path = self.dir / "postgres.log"
        self.port = free_port()
        self.settings = {**BASE_SETTINGS, **(settings or {})}
        self._as_postgres = os.geteuid() == 0
        self.socket_dir.mkdir()
        if self._as_postgres:
            user = pwd.getpwnam("postgres")
            for path in (self.dir, self.socket_dir):
                os.chown(path, user.pw_uid, user.pw_gid)
            self.dir.chmod(0o755)
        self._run(
            "initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
            "--no-sync", "--no-instructions",
        )  # fmt: skip
        conf = "".join(f"{key} = {value}\n" for key, value in self.settings.items())
        conf += f"port = {self.port}\nunix_socket_directories = '{self.socket_dir}'\n"
        with (self.data / "postgresql.auto.conf").open("a") as f:
            f.write(conf)
        if self._as_postgres:
            self.log_path.touch()
            user = pwd.getpwnam("postgres")
            os.chown(self.log_path, user.pw_uid, user.pw_gid)

    # -- addresses ----------------------------------------------------------------------------

    @property
    def dsn(self) -> str:
        """TCP DSN of the cluster's ``postgres`` database (an admin DSN: user ``postgres``)."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def dsn_via(self, port: int) -> str:
        """The same database reached through another port (a proxy in front of the cluster)."""
        return f"postgresql://postgres@127.0.0.1:{port}/postgres"

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self, timeout: float = 60) -> None:
        """Start the server and return once it accepts connections."""
        self._pg_ctl("start", "-l", str(self.log_path), "-t", str(int(timeout)))
        self.wait_ready(timeout)

    def stop(self, mode: str = "fast", timeout: float = 60) -> None:
        """``fast``: roll back and disconnect clients; ``immediate``: a crash (no checkpoint,
        recovery at the next start)."""
        if mode not in ("smart", "fast", "immediate"):
            raise ValueError(f"unknown stop mode {mode!r}")
        self._pg_ctl("stop", "-m", mode, "-t", str(int(timeout)))

    def restart(self, mode: str = "fast", timeout: float = 60) -> None:
        if mode not in ("smart", "fast", "immediate"):
            raise ValueError(f"unknown stop mode {mode!r}")
        self._pg_ctl("restart", "-m", mode, "-l", str(self.log_path), "-t", str(int(timeout)))
        self.wait_ready(timeout)

    @property
    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self.dsn, connect_timeout=2, autocommit=True) as conn:
                    conn.execute("SELECT 1")
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def terminate_all_backends(self) -> int:
        """``pg_terminate_backend`` of every client backend but our own; how many were hit."""
        with psycopg.connect(self.dsn, autocommit=True, connect_timeout=5) as conn:
            row = conn.execute(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
            ).fetchone()
        return int(row[0]) if row else 0

    def migrate(self) -> None:
        """pgjobs' schema at the head revision, in the ``postgres`` database."""
        from pgjobs import migrations  # not at the top: benchmarks imports nothing there

        migrations.upgrade(self.dsn)

    def cleanup(self) -> None:
        """Stop the server (immediately: nothing in it is worth a checkpoint) and remove it."""
        if self.running:
            with suppress(subprocess.CalledProcessError):
                self.stop("immediate", timeout=30)
        shutil.rmtree(self.dir, ignore_errors=True)

    def log(self, tail: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except OSError:
            return ""

    # -- running PostgreSQL's programs ----------------------------------------------------------

    def _pg_ctl(self, *args: str) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-w", "-s", *args)

    def _run(self, program: str, *args: str) -> None:
        command = [str(PG_BIN / program), *args]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise subprocess.CalledProcessError(
                result.returncode,
                command,
                result.stdout,
                f"{result.stderr}\n--- server log ---\n{self.log()}",
            )


@contextmanager
def pg_cluster(
    base_dir: Path | None = None,
    *,
    migrate: bool = True,
    settings: Mapping[str, str] | None = None,
) -> Iterator[PgCluster]:
    """A started (and by default migrated) cluster, always stopped and removed afterwards."""
    cluster = PgCluster(base_dir, settings)
    try:
        cluster.start()
        if migrate:
            cluster.migrate()
        yield cluster
    finally:
        cluster.cleanup()
