"""Debian's PgBouncer in front of the test server, in transaction pooling, for the tests that prove
pgjobs works behind one.

:class:`PgBouncer` writes its own ini file, auth file, log file and pid file in a temporary
directory and serves every database of the server (a ``*`` entry) on a free port of 127.0.0.1, so
each test's own database is reached through it by the same name. Clients are trusted (the server
checks nothing more for the test DSN either); the server's own password, if the admin DSN has one,
is in the connection string PgBouncer uses. PgBouncer refuses to run as root: when the tests run
as root it runs as the ``postgres`` OS user, who then owns the directory.

The server is never touched: stopping PgBouncer closes only its own connections.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tests.pgcluster import free_port

PGBOUNCER = Path(os.environ.get("PGJOBS_PGBOUNCER", "/usr/sbin/pgbouncer"))
RUN_AS = "postgres"
"""The OS user PgBouncer runs as when the tests run as root."""

POOL_SIZE = 20
"""Server connections per database and user: fewer than the clients of the tests, so that
server sessions are shared between clients, as in production."""


def available() -> str | None:
    """None if PgBouncer can be started here, else why not (for ``pytest.skip``)."""
    if not PGBOUNCER.is_file():
        return f"{PGBOUNCER} is not installed (apt-get install pgbouncer)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(RUN_AS)
        except KeyError:
            return f"running as root and there is no {RUN_AS} OS user to run PgBouncer as"
    return None


class PgBouncer:
    """One PgBouncer process in transaction pooling in front of the server of ``server_dsn``.

    :meth:`start` returns once it accepts connections; :meth:`cleanup` stops it and removes its
    directory. :meth:`dsn` turns the DSN of any database of the server into the same database
    through PgBouncer.
    """

    def __init__(
        self, server_dsn: str, *, pool_mode: str = "transaction", pool_size: int = POOL_SIZE
    ) -> None:
        reason = available()
        if reason is not None:
            raise RuntimeError(f"cannot start PgBouncer: {reason}")
        server = conninfo_to_dict(server_dsn)
        self.user = str(server.get("user") or os.environ.get("PGUSER") or "postgres")
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="pgjobs-pgbouncer-"))
        self.log_path = self.dir / "pgbouncer.log"
        self.ini_path = self.dir / "pgbouncer.ini"
        backend = {
            "host": server.get("host") or os.environ.get("PGHOST") or "127.0.0.1",
            "port": server.get("port") or os.environ.get("PGPORT") or "5432",
            "password": server.get("password"),
        }
        target = " ".join(f"{key}={value}" for key, value in backend.items() if value)
        settings = {
            "listen_addr": "127.0.0.1",
            "listen_port": str(self.port),
            "unix_socket_dir": "",
            "auth_type": "trust",
            "auth_file": str(self.dir / "userlist.txt"),
            "admin_users": self.user,
            "pool_mode": pool_mode,
            "default_pool_size": str(pool_size),
            # As docs/operations.md advises: a transaction whose client went silent is ended.
            "idle_transaction_timeout": "10",
            # Idle server sessions are taken in turn, not the last one used first: a client's
            # next transaction lands in another session even on a quiet machine, as it does
            # under load in production.
            "server_round_robin": "1",
            "max_client_conn": "500",
            # psycopg sends neither, but other clients of a test may.
            "ignore_startup_parameters": "extra_float_digits,options",
            "logfile": str(self.log_path),
            "pidfile": str(self.dir / "pgbouncer.pid"),
            "log_connections": "0",
            "log_disconnections": "0",
        }
        self.ini_path.write_text(
            f"[databases]\n* = {target}\n\n[pgbouncer]\n"
            + "".join(f"{key} = {value}\n" for key, value in settings.items())
        )
        (self.dir / "userlist.txt").write_text(f'"{self.user}" ""\n')
        self._as = pwd.getpwnam(RUN_AS) if os.geteuid() == 0 else None
        if self._as is not None:
            for path in (self.dir, *self.dir.iterdir()):
                os.chown(path, self._as.pw_uid, self._as.pw_gid)
        self.proc: subprocess.Popen[bytes] | None = None

    # -- addresses ----------------------------------------------------------------------------

    def dsn(self, database_dsn: str) -> str:
        """The database of ``database_dsn`` (a DSN of the server), through PgBouncer."""
        return make_conninfo(
            database_dsn, host="127.0.0.1", port=str(self.port), user=self.user, password=None
        )

    def warm(self, database_dsn: str, sessions: int = 3) -> str:
        """Open ``sessions`` server sessions to the database at once, so that its pool takes
        turns between them from the first statement on; its DSN through PgBouncer."""
        through = self.dsn(database_dsn)
        conns = [psycopg.connect(through, prepare_threshold=None) for _ in range(sessions)]
        try:
            for conn in conns:
                conn.execute("SELECT 1")  # a transaction: the session stays with this client
            for conn in conns:
                conn.commit()  # back to the pool (a client gone mid-transaction closes it)
        finally:
            for conn in conns:
                conn.close()
        return through

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self, timeout: float = 20) -> None:
        """Start PgBouncer and return once it accepts connections (its admin console answers)."""
        # Popen's user/group (not runuser): the child is PgBouncer itself, so its pid is ours
        # to signal and to wait for.
        owner: dict[str, Any] = (
            {"user": self._as.pw_uid, "group": self._as.pw_gid, "extra_groups": []}
            if self._as is not None
            else {}
        )
        self.proc = subprocess.Popen(
            [str(PGBOUNCER), "-q", str(self.ini_path)],
            cwd=self.dir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            **owner,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"PgBouncer exited {self.proc.returncode}:\n{self.log()}")
            try:
                self.show("VERSION")
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self, timeout: float = 10) -> None:
        """SIGTERM (PgBouncer's immediate shutdown: its connections are closed), then SIGKILL."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout)

    def cleanup(self) -> None:
        """Stop PgBouncer and remove its directory."""
        with suppress(OSError, subprocess.SubprocessError):
            self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- looking inside -----------------------------------------------------------------------

    def show(self, what: str) -> list[dict[str, Any]]:
        """``SHOW <what>`` on PgBouncer's admin console (``POOLS``, ``CLIENTS``, ``SERVERS``…)."""
        admin = make_conninfo(
            f"host=127.0.0.1 port={self.port} dbname=pgbouncer user={self.user}",
            connect_timeout=2,
        )
        # The admin console speaks only the simple query protocol: a client-side cursor.
        with (
            psycopg.connect(admin, autocommit=True, cursor_factory=psycopg.ClientCursor) as conn,
            conn.cursor(row_factory=psycopg.rows.dict_row) as cur,
        ):
            cur.execute(f"SHOW {what}")
            return cur.fetchall()

    def log(self, tail: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except OSError:
            return ""


@contextmanager
def pgbouncer(server_dsn: str, **options: Any) -> Iterator[PgBouncer]:
    """A started PgBouncer in front of ``server_dsn``'s server, always stopped and removed."""
    bouncer = PgBouncer(server_dsn, **options)
    try:
        bouncer.start()
        yield bouncer
    finally:
        bouncer.cleanup()
