"""Worker processes of the benchmarks: real ``pgjobs worker`` processes (and the peers' workers),
each with its log in the run's log folder, all stopped when the measure ends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from benchmarks.databases import scalar
from benchmarks.harness import ROOT, wait_until


class Process:
    """One child process; stdout and stderr go to ``<log_dir>/<name>.log``."""

    def __init__(
        self, argv: Sequence[str], log_dir: Path, name: str, env: dict[str, str] | None = None
    ) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("ab")
        full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
        for inherited in ("PGJOBS_PROFILE", "PGJOBS_APP", "VIRTUAL_ENV"):
            full_env.pop(inherited, None)
        self.proc = subprocess.Popen(
            list(argv), cwd=ROOT, env=full_env, stdout=self._log, stderr=subprocess.STDOUT
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def check_alive(self) -> None:
        if not self.alive():
            raise RuntimeError(
                f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}"
            )

    def rss_kib(self) -> int:
        """Resident set size (VmRSS) in KiB, from /proc."""
        return _status_field(self.pid, "VmRSS")

    def hwm_kib(self) -> int:
        """Peak resident set size (VmHWM) in KiB, from /proc."""
        return _status_field(self.pid, "VmHWM")

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, then SIGKILL if it is still running after ``timeout`` seconds."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()

    def log_tail(self, chars: int = 3000) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-chars:]


@contextmanager
def processes() -> Iterator[list[Process]]:
    """A list to start processes into; every one is stopped when the block ends."""
    started: list[Process] = []
    try:
        yield started
    finally:
        # Signal all first so they shut down in parallel, then wait for each.
        for proc in started:
            if proc.alive():
                proc.proc.send_signal(signal.SIGTERM)
        for proc in started:
            proc.stop()


def pgjobs_worker(
    dsn: str,
    log_dir: Path,
    name: str,
    app: str,
    *,
    concurrency: int = 10,
    env: dict[str, str] | None = None,
    options: Sequence[str] = (),
) -> Process:
    """``python -m pgjobs worker`` with the benchmark extension ``benchmarks.apps:<app>``, and
    further ``options`` of the command (``--profile FILE``)."""
    argv = [
        sys.executable,
        "-m",
        "pgjobs",
        "worker",
        "--app",
        f"benchmarks.apps:{app}",
        "--dsn",
        dsn,
        "--id",
        name,
        "--concurrency",
        str(concurrency),
        "--grace",
        "5",
        *options,
    ]
    return Process(argv, log_dir, name, env)


# A worker registers its own row first, then its jobs (with their tick watermarks) in one
# transaction: it is ready when its row is there and every job it lists is.
_REGISTERED = """
SELECT count(*) FROM pgjobs.workers w
WHERE w.id = ANY(%s) AND w.state = 'running'
  AND EXISTS (SELECT 1 FROM pgjobs.worker_jobs wj WHERE wj.worker_id = w.id)
  AND NOT EXISTS (
      SELECT 1 FROM pgjobs.worker_jobs wj
      WHERE wj.worker_id = w.id
        AND NOT EXISTS (SELECT 1 FROM pgjobs.jobs j WHERE j.name = wj.job))
"""


def wait_registered(dsn: str, procs: Sequence[Process], timeout: float = 60.0) -> None:
    """Until every pgjobs worker in ``procs`` has registered itself and its jobs."""
    names = [p.name for p in procs]

    def ready() -> bool:
        for p in procs:
            p.check_alive()
        return int(scalar(dsn, _REGISTERED, [names])) == len(names)

    wait_until(ready, timeout, f"workers {', '.join(names)} to register", interval=0.2)


def register_jobs(dsn: str, log_dir: Path, app: str, env: dict[str, str] | None = None) -> None:
    """Register the jobs of ``benchmarks.apps:<app>`` by starting one worker and stopping it."""
    with processes() as started:
        worker = pgjobs_worker(dsn, log_dir, f"register-{app}-{time.monotonic_ns()}", app, env=env)
        started.append(worker)
        wait_registered(dsn, [worker])


def _status_field(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1])
    raise RuntimeError(f"no {key} in /proc/{pid}/status")
