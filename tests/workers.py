"""Real worker processes for the tests: start ``python -m pgjobs worker`` against a test database,
stop or kill them, and wait for conditions in the database (polling with a deadline)."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import psycopg

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_APP = "tests.worker_apps.app:extension"
T = TypeVar("T")


class WorkerProcess:
    """One ``pgjobs worker`` process; its log goes to a file read back on failure."""

    def __init__(
        self,
        dsn: str,
        jobs: list[str],
        log_dir: Path,
        *args: str,
        env: dict[str, str] | None = None,
        name: str = "w",
        app: str = DEFAULT_APP,
    ) -> None:
        self.log_path = log_dir / f"{name}-{time.monotonic_ns()}.log"
        full_env = {
            **os.environ,
            "PGJOBS_TEST_JOBS": ",".join(jobs),
            "PYTHONPATH": str(ROOT),
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
        full_env.pop("PGJOBS_PROFILE", None)
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pgjobs",
                "worker",
                "--dsn",
                dsn,
                "--app",
                app,
                "--id",
                name,
                *args,
            ],
            cwd=ROOT,
            env=full_env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.id = name

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout)

    def stop(self, timeout: float = 20) -> int:
        self.signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"worker {self.id} ignored SIGTERM:\n{self.log()}") from None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-6000:]


class Workers:
    """Starts workers for one test and makes sure none outlives it."""

    def __init__(self, dsn: str, log_dir: Path) -> None:
        self.dsn = dsn
        self.log_dir = log_dir
        self.started: list[WorkerProcess] = []

    def start(
        self,
        jobs: list[str],
        *args: str,
        name: str | None = None,
        env: dict[str, str] | None = None,
        app: str = DEFAULT_APP,
    ) -> WorkerProcess:
        name = name or f"w{len(self.started) + 1}"
        defaults = ("--lease", "3", "--poll-interval", "1", "--grace", "5")
        proc = WorkerProcess(
            self.dsn, jobs, self.log_dir, *defaults, *args, env=env, name=name, app=app
        )
        self.started.append(proc)
        return proc

    def wait_registered(self, *procs: WorkerProcess, timeout: float = 20) -> None:
        """Until each process has registered its row (it is then ticking and claiming)."""
        ids = [p.id for p in procs]

        def ready() -> bool:
            for p in procs:
                if p.proc.poll() is not None:
                    raise AssertionError(f"worker {p.id} exited {p.proc.returncode}:\n{p.log()}")
            return scalar(
                self.dsn,
                "SELECT count(*) FROM pgjobs.workers WHERE id = ANY(%s) AND state = 'running'",
                ids,
            ) == len(ids)

        wait_until(ready, timeout, f"workers {ids} to register")

    def run_until_succeeded(
        self, jobs: list[str], *, replicas: int, succeeded: int, timeout: float
    ) -> None:
        """Start ``replicas`` workers, wait for ``succeeded`` succeeded runs, then stop each one
        with SIGTERM and check it exited 0."""
        procs = [self.start(jobs) for _ in range(replicas)]
        self.wait_registered(*procs)
        wait_until(
            lambda: (
                scalar(self.dsn, "SELECT count(*) FROM pgjobs.runs WHERE status = 'succeeded'")
                >= succeeded
            ),
            timeout,
            f"{succeeded} runs to succeed",
        )
        for p in procs:
            assert p.stop() == 0, p.log()

    def logs(self) -> str:
        return "\n".join(f"--- {p.id} ---\n{p.log()}" for p in self.started)

    def kill_all(self) -> None:
        for p in self.started:
            p.kill()


def wait_until(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.05) -> T:
    """Poll ``predicate`` until it returns a truthy value; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def scalar(dsn: str, query: str, *params: Any) -> Any:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(query, params or None).fetchone()
        return None if row is None else row[0]


def rows(dsn: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(query, params or None).fetchall()


def assert_each_tick_once(dsn: str, job: str, at_least: int) -> None:
    """Every tick of ``job`` ran once and succeeded, at least ``at_least`` of them in a row one
    second apart (the first and last may be cut by the workers' start and stop)."""
    ticks = rows(
        dsn,
        "SELECT scheduled_for, count(*), bool_and(status = 'succeeded') "
        "FROM pgjobs.runs WHERE job = %s GROUP BY 1 ORDER BY 1",
        job,
    )
    assert all(count == 1 for _, count, _ in ticks), "a tick ran twice"
    inner = ticks[1:-1]
    assert len(inner) >= at_least
    assert all(ok for _, _, ok in inner)
    gaps = [b.timestamp() - a.timestamp() for (a, _, _), (b, _, _) in itertools.pairwise(inner)]
    assert all(g == 1.0 for g in gaps), f"missing ticks: gaps {sorted(set(gaps))}"


@contextmanager
def worker_pool(dsn: str, log_dir: Path) -> Iterator[Workers]:
    workers = Workers(dsn, log_dir)
    try:
        yield workers
    finally:
        workers.kill_all()
        print(workers.logs())  # pytest shows it when the test failed


def add_waiting_worker(
    dsn: str, job: str, worker: str = "hand-waiting", *, slots: int = 1, order: int = 0
) -> str:
    """A worker row, written by hand, that serves ``job`` on the queue ``default`` and says it
    waits with ``slots`` free slots (0: busy), its wait begun ``order`` seconds from now (the
    longest waiting is woken first): the next due run of ``job`` wakes it on the channel
    returned."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO pgjobs.workers (id, host, pid, version, queues, concurrency, expires_at,"
            " waiting, waiting_since)"
            " VALUES (%s, 'h', %s, 'v', '{default}', 1, now() + interval '1 hour', %s,"
            " now() + make_interval(secs => %s))",
            [worker, order + 1, slots, order],
        )
        conn.execute(
            "INSERT INTO pgjobs.worker_jobs (worker_id, job, timezone) VALUES (%s, %s, 'UTC')",
            [worker, job],
        )
    return str(scalar(dsn, "SELECT pgjobs.wake_channel('pgjobs', %s)", worker))
