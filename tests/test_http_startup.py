"""The dashboard and the metrics exporter against a database that is down: at start they wait
with back-off (one line per attempt), then serve; an outage later makes pages answer 503 and
scrapes report the database down, and both recover when it is back. Against a throwaway cluster
(tests/pgcluster.py) that the tests stop, crash and start."""

from __future__ import annotations

import logging
import random
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from pgjobs.backoff import Backoff, wait_for_database
from tests.pgcluster import PgCluster, available, free_port, pg_cluster
from tests.workers import ROOT, wait_until

needs_cluster = pytest.mark.skipif(available() is not None, reason=available() or "")


# -- Backoff ------------------------------------------------------------------------------------


def test_delays_double_from_half_a_second_up_to_the_cap() -> None:
    backoff = Backoff(jitter=0)

    delays = [backoff.next_delay() for _ in range(8)]

    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]
    assert backoff.attempt == 8
    backoff.reset()
    assert backoff.attempt == 0 and backoff.next_delay() == 0.5


def test_jitter_moves_each_delay_by_at_most_its_fraction() -> None:
    backoff = Backoff(1.0, 4.0, jitter=0.2, rng=random.Random(7))

    delays = [backoff.next_delay() for _ in range(200)]

    for attempt, delay in enumerate(delays, 1):
        nominal = min(4.0, 2.0 ** (attempt - 1))
        assert nominal * 0.8 <= delay <= nominal * 1.2
    assert len({round(d, 6) for d in delays[10:]}) > 100  # not all the same: jittered


def test_a_first_delay_above_the_cap_is_the_cap() -> None:
    backoff = Backoff(0.2, 0.1, jitter=0)
    assert [backoff.next_delay() for _ in range(3)] == [0.1, 0.1, 0.1]


def test_a_long_outage_does_not_overflow_the_delay() -> None:
    backoff = Backoff(jitter=0)
    for _ in range(5000):
        delay = backoff.next_delay()
    assert delay == 10.0


@pytest.mark.parametrize(
    "args", [{"initial": 0}, {"cap": 0}, {"factor": 0.5}, {"jitter": 1.0}, {"jitter": -0.1}]
)
def test_a_backoff_that_would_not_back_off_is_refused(args: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="Backoff needs"):
        Backoff(**args)


# -- wait_for_database --------------------------------------------------------------------------


@pytest.fixture
def stopped_cluster() -> Iterator[PgCluster]:
    """A migrated cluster, stopped: the database is down."""
    with pg_cluster() as cluster:
        cluster.stop("fast")
        yield cluster


@needs_cluster
def test_waiting_logs_each_attempt_and_returns_a_connection_once_the_server_is_up(
    stopped_cluster: PgCluster, caplog: pytest.LogCaptureFixture
) -> None:
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        if len(slept) == 3:
            stopped_cluster.start()

    caplog.set_level(logging.INFO, "pgjobs.test")
    with wait_for_database(
        stopped_cluster.dsn,
        what="the test",
        log=logging.getLogger("pgjobs.test"),
        backoff=Backoff(jitter=0),
        sleep=sleep,
    ) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)

    assert slept == [0.5, 1.0, 2.0]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 3
    for attempt, (line, delay) in enumerate(zip(warnings, ("0.5", "1.0", "2.0"), strict=True), 1):
        assert line.startswith(f"the test: database unavailable (attempt {attempt}: ")
        assert line.endswith(f"); retrying in {delay}s") and "\n" not in line
    assert "the test: database reachable after 3 failed attempt(s)" in caplog.messages


def test_an_invalid_dsn_is_not_retried() -> None:
    with pytest.raises(psycopg.ProgrammingError):
        wait_for_database(
            "not a dsn at all", what="t", log=logging.getLogger("t"), sleep=pytest.fail
        )


# -- the processes ------------------------------------------------------------------------------


class Served:
    """A ``pgjobs`` command serving HTTP on a port we chose, its stderr in a file."""

    def __init__(self, tmp_path: Path, *args: str) -> None:
        self.port = free_port()
        self.log_path = tmp_path / "stderr.log"
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pgjobs", *args, "--port", str(self.port)],
            cwd=ROOT,
            stderr=self._log,
            stdout=subprocess.DEVNULL,
        )

    def log(self) -> str:
        return self.log_path.read_text()

    def get(self, path: str) -> tuple[int, str] | None:
        """Status and body, or None if nothing answers on the port."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=10) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()
        except (urllib.error.URLError, ConnectionError):
            return None

    def status(self, path: str) -> int | None:
        reply = self.get(path)
        return None if reply is None else reply[0]

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[type[Served]]:
    started: list[Served] = []

    class Tracked(Served):
        def __init__(self, *args: str) -> None:
            super().__init__(tmp_path, *args)
            started.append(self)

    yield Tracked
    for served in started:
        served.stop()


def attempts_logged(served: Served, what: str) -> int:
    return served.log().count(f"{what}: database unavailable (attempt ")


@needs_cluster
def test_the_dashboard_waits_for_the_database_serves_and_survives_a_crash(
    stopped_cluster: PgCluster, serve: type[Served]
) -> None:
    dashboard = serve("dashboard", "--dsn", stopped_cluster.dsn)

    wait_until(lambda: attempts_logged(dashboard, "pgjobs dashboard") >= 2, 10, "two attempts")
    assert dashboard.alive() and dashboard.get("/") is None  # waiting, not serving yet
    stopped_cluster.start()
    wait_until(lambda: dashboard.status("/") == 200, 15, "the dashboard to serve")
    assert "pgjobs dashboard on http://127.0.0.1:" in dashboard.log()

    stopped_cluster.stop("immediate")
    reply = dashboard.get("/runs")
    assert reply is not None and reply[0] == 503, reply
    assert "the database is not answering" in reply[1]
    assert str(stopped_cluster.port) not in reply[1]  # no host or port on the page
    assert dashboard.alive()

    stopped_cluster.start()
    wait_until(lambda: dashboard.status("/runs") == 200, 15, "the dashboard to recover")
    assert dashboard.alive() and "Traceback" not in dashboard.log(), dashboard.log()


def up(served: Served) -> float | None:
    reply = served.get("/metrics")
    if reply is None or reply[0] != 200:
        return None
    for line in reply[1].splitlines():
        if line.startswith("pgjobs_up "):
            return float(line.split()[1])
    return None


@needs_cluster
def test_the_exporter_waits_for_the_database_serves_and_reports_a_crash(
    stopped_cluster: PgCluster, serve: type[Served]
) -> None:
    exporter = serve("metrics", "--dsn", stopped_cluster.dsn)

    wait_until(lambda: attempts_logged(exporter, "pgjobs metrics") >= 2, 10, "two attempts")
    assert exporter.alive() and exporter.get("/metrics") is None
    stopped_cluster.start()
    wait_until(lambda: up(exporter) == 1, 15, "the exporter to report the database up")
    assert "pgjobs metrics on http://127.0.0.1:" in exporter.log()

    stopped_cluster.stop("immediate")
    assert up(exporter) == 0 and exporter.alive()

    stopped_cluster.start()
    wait_until(lambda: up(exporter) == 1, 15, "the exporter to report the database up again")
    assert exporter.alive() and "Traceback" not in exporter.log(), exporter.log()
