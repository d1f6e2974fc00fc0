"""``pgjobs demo``: on an embedded PostgreSQL it starts, runs the example jobs, and Ctrl-C stops
everything it started."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pgjobs.embedded import EmbeddedPostgres, process_alive
from pgjobs.errors import PgJobsError
from tests.workers import ROOT, scalar, wait_until

# Its stop is timed: it runs alone, after the tests that share the machine (see Makefile).
pytestmark = pytest.mark.serial


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGJOBS_")}
    env["PYTHONPATH"] = str(ROOT)
    env["PYTHONUNBUFFERED"] = "1"
    # A demo that hangs is sent SIGABRT, and then prints where each of its threads stood.
    env["PYTHONFAULTHANDLER"] = "1"
    return env


class Demo:
    """One ``python -m pgjobs demo`` process, its output going to a file."""

    def __init__(self, cwd: Path, *args: str) -> None:
        self.cwd = cwd
        self.out_path = cwd / f"demo-{time.monotonic_ns()}.out"
        with self.out_path.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pgjobs", "demo", *args],
                cwd=cwd,
                env=_env(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def output(self) -> str:
        return self.out_path.read_text(errors="replace")

    def wait_for(self, pattern: str, timeout: float = 30) -> re.Match[str]:
        """The first match of ``pattern`` (a line) in the output, once the demo has printed it."""

        def printed() -> re.Match[str] | None:
            if self.proc.poll() is not None:
                raise AssertionError(f"demo exited {self.proc.returncode}:\n{self.output()}")
            return re.search(pattern, self.output(), re.MULTILINE)

        return wait_until(printed, timeout, f"the demo to print {pattern!r}", interval=0.1)

    def wait(self, timeout: float) -> int:
        """The demo's exit code; if it is still running after ``timeout``, its threads' stacks
        (faulthandler, at SIGABRT) and the embedded server's log end go into the failure."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGABRT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)
            log = self.cwd / ".pgjobs-demo" / "pgdata" / "log"
            server_log = log.read_text(errors="replace")[-4000:] if log.is_file() else "(none)"
            raise AssertionError(
                f"the demo ran {timeout:.0f}s past the stop:\n{self.output()}\n"
                f"server log:\n{server_log}"
            ) from None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def demos(tmp_path: Path) -> Iterator[list[Demo]]:
    started: list[Demo] = []
    try:
        yield started
    except BaseException:
        for demo in started:
            print(demo.output())
        raise
    finally:
        for demo in started:
            demo.kill()
        # Whatever the outcome, leave no server running in the test's folder.
        server = EmbeddedPostgres(tmp_path / ".pgjobs-demo" / "pgdata")
        if server.pid is not None:
            server.start()
            server.stop()


def _children(pid: int) -> set[int]:
    """The pids of the live processes whose parent is ``pid``."""
    found: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[-1].split()[1]) == pid and process_alive(int(entry.name)):
            found.add(int(entry.name))
    return found


def _processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes that contain ``text`` (a server's data directory)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline and process_alive(int(entry.name)):
            found.append(f"{entry.name}: {cmdline}")
    return found


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads processes from /proc")
@pytest.mark.timeout(90)
def test_the_demo_runs_jobs_on_an_embedded_postgres_and_ctrl_c_stops_everything(
    tmp_path: Path, demos: list[Demo]
) -> None:
    demo = Demo(tmp_path)
    demos.append(demo)
    dsn = demo.wait_for(r"^database: (postgresql://\S+)$").group(1)
    demo.wait_for(r"^enqueued run \d+ of my-extension-report")
    data_dir = tmp_path / ".pgjobs-demo" / "pgdata"
    assert f"host={data_dir}" in dsn

    wait_until(
        lambda: (
            (scalar(dsn, "SELECT count(*) FROM pgjobs.runs WHERE status = 'succeeded'") or 0) >= 2
        ),
        30,
        "two succeeded runs",
        interval=0.2,
    )
    assert scalar(
        dsn,
        "SELECT status FROM pgjobs.runs WHERE job = 'my-extension-report' AND trigger = 'enqueue'",
    ) in ("queued", "running", "succeeded")
    workers = _children(demo.proc.pid)
    assert len(workers) == 2, workers
    postmaster = EmbeddedPostgres(data_dir).pid
    assert postmaster is not None
    backends = _children(postmaster)
    assert backends

    # A second demo in the same folder refuses: one server, one owner.
    second = Demo(tmp_path)
    demos.append(second)
    assert second.wait(30) == 1
    assert "in use by pid" in second.output().strip().splitlines()[-1]

    demo.proc.send_signal(signal.SIGINT)
    assert demo.wait(30) == 0
    assert demo.output().rstrip().endswith("demo stopped")
    for pid in workers | {postmaster} | backends:
        assert not process_alive(pid), f"process {pid} outlived the demo"
    assert _processes_mentioning(str(data_dir)) == []


@pytest.mark.timeout(60)
def test_the_demo_runs_on_a_given_database_for_a_given_duration(
    tmp_path: Path, dsn: str, demos: list[Demo]
) -> None:
    demo = Demo(tmp_path, "--dsn", dsn, "--workers", "1", "--duration", "3")
    demos.append(demo)

    assert demo.wait(40) == 0
    output = demo.output()
    assert "embedded" not in output
    assert re.search(r"run \d+ my-extension-report \(enqueue, .*\) succeeded", output), output
    assert scalar(dsn, "SELECT count(*) FROM pgjobs.workers WHERE state = 'running'") == 0


def test_the_embedded_postgres_without_pgserver_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pgserver", None)

    with pytest.raises(PgJobsError, match=r"pip install 'pgjobs\[embedded\]'"):
        EmbeddedPostgres(tmp_path / "pgdata").start()
