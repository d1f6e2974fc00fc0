"""A throwaway high-availability PostgreSQL 15 cluster that a test owns: Patroni and etcd.

One etcd member (the DCS) and two Patroni nodes, each running a PostgreSQL 15 of its own, all on
free ports of 127.0.0.1 in one temporary directory. Patroni bootstraps the first node, clones the
second from it and keeps them in **synchronous replication** (``synchronous_mode``): a commit is
acknowledged only once the sync standby has flushed it, and only that standby may be promoted.
``master_start_timeout: 0`` makes Patroni fail over at once when the primary's postmaster dies
(rather than restart it in place), and ``loop_wait: 1`` makes each node look every second, so a
killed primary is replaced within a few seconds. The old primary comes back as a replica
(``pg_rewind`` if it must) and becomes the sync standby again.

Clients reach whichever node is the primary with a multi-host DSN and
``target_session_attrs=read-write`` (:attr:`HaCluster.dsn`); :attr:`HaNode.dsn` names one
node. PostgreSQL refuses to run as root, so when the tests run as root, Patroni and etcd run as
the ``postgres`` OS user (``runuser``), as in :mod:`tests.pgcluster`. The shared server of the
test suite is never touched: every process here is started by this module, on its own ports, and
:meth:`HaCluster.cleanup` ends each one by its pid and removes the directory.

Requires Debian's ``patroni`` and ``etcd-server`` packages (``available()`` says what is missing).
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import psycopg

from pgjobs import migrations
from tests.pgcluster import PG_BIN, free_port
from tests.pgcluster import available as pg_available

SCOPE = "pgjobs-ha"

# The cluster-wide settings Patroni keeps in etcd. ttl, loop_wait and retry_timeout follow
# Patroni's rule loop_wait + 2 * retry_timeout <= ttl (and its minimum ttl of 20).
_DCS = {
    "ttl": 20,
    "loop_wait": 1,
    "retry_timeout": 5,
    "master_start_timeout": 0,
    "synchronous_mode": True,
    "synchronous_node_count": 1,
    "maximum_lag_on_failover": 1048576,
    "postgresql": {
        "use_pg_rewind": True,
        "use_slots": True,
        "parameters": {
            "synchronous_commit": "on",
            "wal_level": "replica",
            "wal_log_hints": "on",
            "hot_standby": "on",
            "max_wal_senders": 10,
            "max_replication_slots": 10,
            "wal_keep_size": "256MB",
            "fsync": "on",
            "shared_buffers": "32MB",
            # 3 workers (loop, LISTEN, pools of up to -c 10), producers, the harness.
            "max_connections": 300,
            "log_min_messages": "warning",
            "log_line_prefix": "%m [%p] %a ",
        },
    },
}


def available() -> str | None:
    """None if an HA cluster can be made here, else why not (for ``pytest.skip``)."""
    reason = pg_available()
    if reason is not None:
        return reason
    for program in ("patroni", "etcd"):
        if shutil.which(program) is None:
            return f"{program} is not installed (apt-get install patroni etcd-server)"
    return None


@dataclass
class HaNode:
    """One Patroni node: its PostgreSQL's port and data directory, its REST API's port."""

    name: str
    port: int
    rest_port: int
    dir: Path

    @property
    def data(self) -> Path:
        return self.dir / "data"

    @property
    def config(self) -> Path:
        return self.dir / "patroni.yml"

    @property
    def log_path(self) -> Path:
        return self.dir / "patroni.log"

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def rest(self, path: str, timeout: float = 1.0) -> int:
        """The HTTP status of ``GET path`` on the node's REST API (0: no answer). ``/primary``
        answers 200 on the leader, ``/sync`` on the synchronous standby."""
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.rest_port}{path}", timeout=timeout
            ) as reply:
                return int(reply.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)
        except OSError:
            return 0

    def postmaster_pid(self) -> int | None:
        """The pid in ``postmaster.pid``, if the file is there."""
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, IndexError, ValueError):
            return None

    def log(self, tail: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except OSError:
            return ""


class HaCluster:
    """etcd and two Patroni nodes in a temporary directory; :meth:`cleanup` ends and removes
    them."""

    def __init__(self, base_dir: Path | None = None) -> None:
        reason = available()
        if reason is not None:
            raise RuntimeError(f"cannot make an HA cluster: {reason}")
        self.dir = Path(tempfile.mkdtemp(prefix="pgjobs-ha-", dir=base_dir))
        self._as_postgres = os.geteuid() == 0
        self.etcd_port = free_port()
        self.etcd_peer_port = free_port()
        self.nodes = [
            HaNode(f"node{i}", free_port(), free_port(), self.dir / f"node{i}") for i in (1, 2)
        ]
        self._procs: list[subprocess.Popen[bytes]] = []
        self._patroni: dict[str, subprocess.Popen[bytes]] = {}
        for node in self.nodes:
            node.dir.mkdir()
            (node.dir / "sock").mkdir()
            node.config.write_text(json.dumps(self._patroni_config(node), indent=2))
        (self.dir / "etcd").mkdir()
        if self._as_postgres:
            user = pwd.getpwnam("postgres")
            for path in [self.dir, *self.dir.rglob("*")]:
                os.chown(path, user.pw_uid, user.pw_gid)
            self.dir.chmod(0o755)
        (self.dir / "etcd").chmod(0o700)

    # -- addresses ----------------------------------------------------------------------------

    @property
    def dsn(self) -> str:
        """Every node, in order; libpq connects to the first that accepts writes."""
        hosts = ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)
        return f"postgresql://postgres@{hosts}/postgres?target_session_attrs=read-write"

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self, timeout: float = 120) -> None:
        """etcd, then both Patroni nodes; returns once one is the primary and the other its
        synchronous standby."""
        self._start_etcd()
        for node in self.nodes:
            # One wins the race to bootstrap the cluster; the other waits for it, then clones it.
            self._start_patroni(node)
        self.wait_replicated(timeout)

    def wait_replicated(self, timeout: float = 120) -> HaNode:
        """Until a primary serves writes and the other node is its synchronous standby; returns
        the primary."""
        self._wait(
            lambda: self.leader() is not None and self.sync_standby() is not None,
            timeout,
            "a primary with a synchronous standby",
        )
        self.wait_ready(timeout)
        leader = self.leader()
        assert leader is not None
        return leader

    def wait_ready(self, timeout: float = 60) -> None:
        """Until the multi-host DSN reaches a node that accepts writes."""

        def writable() -> bool:
            try:
                with psycopg.connect(self.dsn, connect_timeout=2, autocommit=True) as conn:
                    conn.execute("SELECT 1")
                    return True
            except psycopg.OperationalError:
                return False

        self._wait(writable, timeout, "a node that accepts writes")

    def leader(self) -> HaNode | None:
        """The node whose Patroni says it is the primary."""
        return next((n for n in self.nodes if n.rest("/primary") == 200), None)

    def sync_standby(self) -> HaNode | None:
        return next((n for n in self.nodes if n.rest("/sync") == 200), None)

    def writable_node(self) -> HaNode | None:
        """The node the multi-host DSN reaches now, if any."""
        try:
            with psycopg.connect(self.dsn, connect_timeout=2, autocommit=True) as conn:
                port = int(conn.info.port)
        except psycopg.OperationalError:
            return None
        return next((n for n in self.nodes if n.port == port), None)

    def kill_postmaster(self, node: HaNode) -> int:
        """SIGKILL the node's postmaster (its backends exit when they notice); Patroni then
        fails over. Returns the pid killed."""
        pid = node.postmaster_pid()
        if pid is None:
            raise RuntimeError(f"{node.name} has no postmaster.pid")
        os.kill(pid, signal.SIGKILL)
        return pid

    def kill_patroni(self, node: HaNode) -> None:
        """SIGKILL the node's Patroni: nobody renews or releases its leader key, which expires
        after ``ttl``. With :meth:`kill_postmaster` after it, the node's host is lost."""
        _kill_group(self._patroni.pop(node.name))

    def revive(self, node: HaNode) -> None:
        """Start the Patroni of a node whose Patroni was killed: it rejoins as a replica."""
        if node.name not in self._patroni:
            self._start_patroni(node)

    def migrate(self) -> None:
        """pgjobs' schema at the head revision, in the primary's ``postgres`` database."""
        migrations.upgrade(self.dsn)

    def cleanup(self) -> None:
        """End Patroni first (so nothing fails over or restarts), then each PostgreSQL, then
        etcd, each by its own pid; remove the directory."""
        for proc in self._patroni.values():
            _kill_group(proc)
        for node in self.nodes:
            if node.postmaster_pid() is not None:
                stop = ("stop", "-m", "immediate", "-t", "20")
                self._run("pg_ctl", "-D", str(node.data), "-w", "-s", *stop)
        for proc in self._procs:
            _kill_group(proc)
        shutil.rmtree(self.dir, ignore_errors=True)

    def logs(self, tail: int = 3000) -> str:
        """The end of each node's Patroni log, where its PostgreSQL logs too."""
        return "\n".join(f"--- patroni {n.name} ---\n{n.log(tail)}" for n in self.nodes)

    # -- the processes ------------------------------------------------------------------------

    def _start_etcd(self) -> None:
        peer = f"http://127.0.0.1:{self.etcd_peer_port}"
        client = f"http://127.0.0.1:{self.etcd_port}"
        self._spawn(
            "etcd",
            [
                "etcd", "--name", "etcd1", "--data-dir", str(self.dir / "etcd" / "data"),
                "--listen-client-urls", client, "--advertise-client-urls", client,
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                "--initial-cluster", f"etcd1={peer}", "--initial-cluster-state", "new",
                "--log-level", "warn",
            ],
        )  # fmt: skip

        def answers() -> bool:
            try:
                with urllib.request.urlopen(f"{client}/health", timeout=1) as reply:
                    return bool(reply.status == 200)
            except OSError:
                return False

        self._wait(answers, 30, "etcd to answer")

    def _start_patroni(self, node: HaNode) -> None:
        self._patroni[node.name] = self._spawn(
            f"patroni-{node.name}", ["patroni", str(node.config)], log=node.log_path
        )

    def _spawn(
        self, name: str, command: list[str], log: Path | None = None
    ) -> subprocess.Popen[bytes]:
        log = log or self.dir / f"{name}.log"
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        with log.open("ab") as out:
            proc = subprocess.Popen(
                command,
                cwd=self.dir,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own group: cleanup ends it and its children
            )
        self._procs.append(proc)
        if self._as_postgres:
            user = pwd.getpwnam("postgres")
            with suppress(OSError):
                os.chown(log, user.pw_uid, user.pw_gid)
        return proc

    def _run(self, program: str, *args: str) -> None:
        """One of PostgreSQL's programs, as the ``postgres`` OS user when we are root; its
        failure (a server already gone) is ignored."""
        command = [str(PG_BIN / program), *args]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, capture_output=True, check=False, timeout=60)

    def _patroni_config(self, node: HaNode) -> dict[str, object]:
        # JSON is YAML: Patroni reads this file as it is.
        trust = [
            "local all all trust",
            "host all all 127.0.0.1/32 trust",
            "host replication all 127.0.0.1/32 trust",
        ]
        return {
            "scope": SCOPE,
            "namespace": f"/{self.dir.name}/",
            "name": node.name,
            "log": {"level": "INFO"},
            "restapi": {
                "listen": f"127.0.0.1:{node.rest_port}",
                "connect_address": f"127.0.0.1:{node.rest_port}",
            },
            "etcd3": {"hosts": f"127.0.0.1:{self.etcd_port}"},
            "bootstrap": {
                "dcs": _DCS,
                "initdb": [{"encoding": "UTF8"}, {"username": "postgres"}, "data-checksums"],
                "pg_hba": trust,
            },
            "postgresql": {
                "listen": f"127.0.0.1:{node.port}",
                "connect_address": f"127.0.0.1:{node.port}",
                "data_dir": str(node.data),
                "bin_dir": str(PG_BIN),
                "pgpass": str(node.dir / "pgpass"),
                "authentication": {
                    "superuser": {"username": "postgres"},
                    "replication": {"username": "replicator", "password": "replicator"},
                    "rewind": {"username": "postgres"},
                },
                "parameters": {"unix_socket_directories": str(node.dir / "sock")},
                # pg_basebackup's default spread checkpoint makes a clone wait seconds for nothing.
                "basebackup": [{"checkpoint": "fast"}],
                "pg_hba": trust,
            },
            "tags": {"nofailover": False, "noloadbalance": False, "clonefrom": False},
        }

    def _wait(self, predicate: Callable[[], object], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            for name, proc in self._patroni.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited {proc.returncode}:\n{self.logs()}")
            if time.monotonic() > deadline:
                logs = self.logs()
                raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}:\n{logs}")
            time.sleep(0.1)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process group a spawned process leads (the group is its own)."""
    if proc.poll() is None:
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    with suppress(subprocess.TimeoutExpired):
        proc.wait(10)


@contextmanager
def ha_cluster(base_dir: Path | None = None, *, migrate: bool = True) -> Iterator[HaCluster]:
    """A started (and by default migrated) HA cluster, always ended and removed afterwards."""
    cluster = HaCluster(base_dir)
    try:
        cluster.start()
        if migrate:
            cluster.migrate()
        yield cluster
    finally:
        cluster.cleanup()
