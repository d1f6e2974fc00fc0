"""The peers: pgqueuer and procrastinate, run through the same workloads in the same run.

``--peers`` installs them with pip into their own virtualenv (``benchmarks/.peers-venv``), so
their dependencies never meet pgjobs'. Each peer gets a fresh database of its own for each case.
How pgjobs' settings map onto theirs is in benchmarks/README.md ("Peers"); in short:

- drain, W workers x concurrency C: W worker processes each; procrastinate ``--concurrency C``;
  pgqueuer ``--max-concurrent-tasks C --batch-size C/2`` (it requires a cap of at least twice
  the batch, so C/2 is the largest batch a cap of C allows).
- schedule lag: 4 worker processes each registering 20 schedules firing every second
  (pgqueuer ``@pgq.schedule``, procrastinate ``@app.periodic``), at their default settings
  (procrastinate with ``--concurrency 10``, pgjobs' default).

A peer that cannot be installed or run is reported with the reason and the run goes on.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
from psycopg.conninfo import conninfo_to_dict

from benchmarks.databases import fresh_database
from benchmarks.harness import ROOT, Bench, DrainResult, Execution, read_executions, wait_until
from benchmarks.processes import Process, processes

VENV = ROOT / "benchmarks" / ".peers-venv"
PEERS_PACKAGES = ("pgqueuer", "procrastinate")
REQUIREMENTS = ("pgqueuer==1.6.0", "procrastinate==3.10.0", "asyncpg", "psycopg[binary]")


@dataclass(frozen=True)
class PeerEnv:
    """The peers' virtualenv and the peer versions installed in it."""

    bin: Path
    versions: dict[str, str]

    @property
    def python(self) -> str:
        return str(self.bin / "python")


def install(log_dir: Path) -> tuple[PeerEnv | None, str]:
    """Create (or reuse) the peers' virtualenv and pip-install the peers: (env, what happened)."""
    log = log_dir / "peers-install.log"
    try:
        if not (VENV / "bin" / "python").exists():
            _run([sys.executable, "-m", "venv", str(VENV)], log)
        pip = [str(VENV / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check"]
        _run([*pip, "--quiet", *REQUIREMENTS], log)
        script = "import importlib.metadata as m, json; print(json.dumps({n: m.version(n) for n in"
        script += f" {list(PEERS_PACKAGES)!r}}}))"
        out = subprocess.run(
            [str(VENV / "bin" / "python"), "-c", script], capture_output=True, text=True, check=True
        )
        versions: dict[str, str] = json.loads(out.stdout)
    except (subprocess.CalledProcessError, OSError) as exc:
        tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
        return None, f"could not install the peers ({exc}); see {log}\n{tail}"
    return PeerEnv(VENV / "bin", versions), "installed " + ", ".join(
        f"{k} {v}" for k, v in versions.items()
    )


def _run(argv: list[str], log: Path) -> None:
    with log.open("ab") as out:
        subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, check=True, timeout=900)


def url(dsn: str) -> str:
    """A key=value DSN as a postgresql:// URL, for drivers that take only URLs (asyncpg)."""
    info = conninfo_to_dict(dsn)
    user = quote(str(info.get("user", "")), safe="")
    password = info.get("password")
    auth = f"{user}:{quote(str(password), safe='')}@" if password else (f"{user}@" if user else "")
    host = info.get("host", "localhost")
    port = info.get("port", "5432")
    return f"postgresql://{auth}{host}:{port}/{quote(str(info.get('dbname', '')), safe='')}"


class Peer:
    """One peer's side of the drain and schedule-lag workloads."""

    name: str
    module: str

    def __init__(self, env: PeerEnv) -> None:
        self.env = env
        self.version = env.versions.get(self.name, "?")

    def label(self) -> str:
        return f"{self.name} {self.version}"

    # -- what each peer says differently ---------------------------------------------------

    def worker_argv(self, concurrency: int | None) -> list[str]:
        raise NotImplementedError

    def drain_settings(self, concurrency: int) -> str:
        raise NotImplementedError

    def drained(self, conn: psycopg.Connection[Any]) -> bool:
        raise NotImplementedError

    def drain_timing(self, conn: psycopg.Connection[Any]) -> tuple[int, float | None]:
        """(succeeded jobs, seconds from the first start to the last finish)."""
        raise NotImplementedError

    def dsn_for_env(self, dsn: str) -> str:
        return dsn

    # -- the workloads ---------------------------------------------------------------------

    def _command(self, dsn: str, *args: str) -> None:
        env = {"BENCH_DSN": self.dsn_for_env(dsn)}
        done = subprocess.run(
            [self.env.python, "-m", self.module, *args],
            cwd=ROOT,
            env={**_base_env(), **env},
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{self.name} {args[0]} failed:\n{done.stderr[-2000:]}")

    def _worker(
        self, dsn: str, bench: Bench, name: str, concurrency: int | None, env: dict[str, str]
    ) -> Process:
        full_env = {
            **env,
            "BENCH_DSN": self.dsn_for_env(dsn),
            "PATH": f"{self.env.bin}:/usr/bin:/bin",
        }
        return Process(self.worker_argv(concurrency), bench.log_dir, name, full_env)

    def drain(self, bench: Bench, workers: int, concurrency: int, jobs: int) -> DrainResult:
        label = f"{self.name}_drain_w{workers}_c{concurrency}"
        with fresh_database(bench.admin_dsn, label, migrate=False) as dsn:
            self._command(dsn, "install")
            self._command(dsn, "enqueue", str(jobs))
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("ANALYZE")
                with processes() as started:
                    for i in range(workers):
                        name = f"{label}-{i + 1}-{time.monotonic_ns()}"
                        started.append(self._worker(dsn, bench, name, concurrency, {}))

                    def done() -> bool:
                        for p in started:
                            p.check_alive()
                        return self.drained(conn)

                    wait_until(done, 120 + jobs / 100, f"{self.name} to drain {jobs} jobs", 0.2)
                succeeded, seconds = self.drain_timing(conn)
        return DrainResult(
            self.label(),
            workers,
            concurrency,
            jobs,
            succeeded,
            seconds,
            self.drain_settings(concurrency),
        )

    def schedule(
        self, bench: Bench, replicas: int, jobs: int, seconds: float
    ) -> tuple[list[Execution], float, float]:
        """Run ``replicas`` workers with ``jobs`` every-second schedules; return the executions
        and the window (epoch seconds) whose ticks count."""
        label = f"{self.name}_lag"
        ticks = bench.log_dir / f"{label}-{time.monotonic_ns()}.ticks"
        env = {"BENCH_JOBS": str(jobs), "BENCH_TICKS_FILE": str(ticks)}
        with fresh_database(bench.admin_dsn, label, migrate=False) as dsn, processes() as started:
            self._command(dsn, "install")
            for i in range(replicas):
                name = f"{label}-{i + 1}-{time.monotonic_ns()}"
                started.append(self._worker(dsn, bench, name, 10, env))
            time.sleep(3)  # start-up: imports, connections, first registration
            for p in started:
                p.check_alive()
            start = float(int(time.time()) + 1)
            end = start + seconds
            time.sleep(max(0.0, end + 2 - time.time()))
            for p in started:
                p.check_alive()
        return read_executions(ticks), start, end


class Pgqueuer(Peer):
    name = "pgqueuer"
    module = "benchmarks.peer_apps.pgqueuer_app"

    def dsn_for_env(self, dsn: str) -> str:
        return url(dsn)

    def worker_argv(self, concurrency: int | None) -> list[str]:
        argv = [self.env.python, "-m", self.module, "worker"]
        if concurrency is not None:
            argv += [str(max(1, concurrency // 2)), str(concurrency)]
        return argv

    def drain_settings(self, concurrency: int) -> str:
        return f"--max-concurrent-tasks {concurrency} --batch-size {max(1, concurrency // 2)}"

    def drained(self, conn: psycopg.Connection[Any]) -> bool:
        # pgqueuer deletes a job when it is done and logs its end in the same statement.
        return _true(conn, "SELECT NOT EXISTS (SELECT 1 FROM pgqueuer)")

    def drain_timing(self, conn: psycopg.Connection[Any]) -> tuple[int, float | None]:
        return _timing(
            conn,
            "SELECT count(*) FILTER (WHERE status = 'successful'),"
            " extract(epoch FROM max(created) FILTER (WHERE status = 'successful')"
            "   - min(created) FILTER (WHERE status = 'picked'))::float8"
            " FROM pgqueuer_log",
        )


class Procrastinate(Peer):
    name = "procrastinate"
    module = "benchmarks.peer_apps.procrastinate_app"

    def worker_argv(self, concurrency: int | None) -> list[str]:
        argv = [str(self.env.bin / "procrastinate"), "--app", f"{self.module}.app", "worker"]
        if concurrency is not None:
            argv += ["--concurrency", str(concurrency)]
        return argv

    def drain_settings(self, concurrency: int) -> str:
        return f"--concurrency {concurrency}"

    def drained(self, conn: psycopg.Connection[Any]) -> bool:
        return _true(
            conn,
            "SELECT NOT EXISTS (SELECT 1 FROM procrastinate_jobs"
            " WHERE status IN ('todo', 'doing'))",
        )

    def drain_timing(self, conn: psycopg.Connection[Any]) -> tuple[int, float | None]:
        return _timing(
            conn,
            "SELECT (SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'),"
            " extract(epoch FROM max(at) FILTER (WHERE type = 'succeeded')"
            "   - min(at) FILTER (WHERE type = 'started'))::float8"
            " FROM procrastinate_events",
        )


PEERS: tuple[type[Peer], ...] = (Pgqueuer, Procrastinate)


def _true(conn: psycopg.Connection[Any], query: str) -> bool:
    row = conn.execute(query).fetchone()
    return bool(row and row[0])


def _timing(conn: psycopg.Connection[Any], query: str) -> tuple[int, float | None]:
    row = conn.execute(query).fetchone()
    assert row is not None
    return int(row[0]), row[1]


def _base_env() -> dict[str, str]:
    return {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HOME": str(Path.home())}
