"""Prefetching: while runs are short, a worker claims up to ``--prefetch`` runs beyond its free
slots and starts them as slots free up. Real worker processes, checked with SQL."""

from __future__ import annotations

import itertools
import signal
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest

from tests.test_worker import enqueue_raw, run_row, wait_status
from tests.workers import WorkerProcess, Workers, rows, scalar, wait_until, worker_pool

# It measures latencies: it runs alone, after the tests that share the machine (see Makefile).
pytestmark = pytest.mark.serial


@pytest.fixture
def workers(dsn: str, tmp_path: Path) -> Iterator[Workers]:
    with worker_pool(dsn, tmp_path) as pool:
        yield pool


def _short_runs_succeed(dsn: str, count: int, seconds: float) -> None:
    for _ in range(count):
        enqueue_raw(dsn, "t-sleep", {"seconds": seconds})
    wait_until(
        lambda: scalar(dsn, "SELECT count(*) FROM pgjobs.runs WHERE status <> 'succeeded'") == 0,
        30,
        f"{count} short runs to succeed",
    )


def _long_run_with_one_prefetched(dsn: str, worker: WorkerProcess) -> tuple[int, int]:
    """With ``worker`` (concurrency 1) warmed up by short runs: a long run and a short one queued
    together; returns both once the worker holds both, the short one claimed ahead of a slot."""
    _short_runs_succeed(dsn, 5, 0.01)
    with psycopg.connect(dsn) as conn:  # one transaction: one NOTIFY, one claim takes both
        long_run, short_run = conn.execute(
            "INSERT INTO pgjobs.runs (job, trigger, payload, priority) "
            "VALUES ('t-sleep', 'enqueue', %s, 1), ('t-sleep', 'enqueue', %s, 2) RETURNING id",
            ['{"seconds": 4}', '{"seconds": 0.01}'],
        ).fetchall()
    wait_until(
        lambda: (
            scalar(
                dsn,
                "SELECT count(*) FROM pgjobs.runs WHERE id = ANY(%s) AND status = 'running' "
                "AND worker_id = %s",
                [long_run[0], short_run[0]],
                worker.id,
            )
            == 2
        ),
        10,
        "the long run to start and the short one to be prefetched",
    )
    return long_run[0], short_run[0]


def test_prefetched_runs_record_when_they_really_started(dsn: str, workers: Workers) -> None:
    w = workers.start(["t-sleep"], "--concurrency", "1")
    workers.wait_registered(w)
    _short_runs_succeed(dsn, 30, 0.04)
    done = rows(
        dsn,
        "SELECT started_at, duration_seconds FROM pgjobs.runs WHERE status = 'succeeded' "
        "ORDER BY started_at",
    )
    assert len(done) == 30
    # One slot: each run started after the one before it ended. A prefetched run's started_at is
    # when its slot freed, not when it was claimed (during the previous run, 40 ms earlier). Its
    # start is the claim's clock plus the delay the worker measured from the claim's reply, so
    # it may read up to the reply's latency early: 25 ms of it are allowed, for a loaded machine.
    for (start, duration), (next_start, _) in itertools.pairwise(done):
        assert next_start >= start + timedelta(seconds=duration) - timedelta(milliseconds=25)
    assert w.stop() == 0, w.log()


def test_a_prefetched_run_goes_back_to_the_queue_when_no_slot_frees(
    dsn: str, workers: Workers
) -> None:
    a = workers.start(["t-sleep"], "--concurrency", "1", name="a")
    workers.wait_registered(a)
    long_run, short_run = _long_run_with_one_prefetched(dsn, a)
    b = workers.start(["t-sleep"], name="b")
    workers.wait_registered(b)
    short = wait_status(dsn, short_run, {"succeeded"}, 10)
    # Handed back after a second behind the long run, and run by the idle worker meanwhile.
    assert short["worker_id"] == "b"
    assert "handed 1 prefetched run(s) back to the queue: no free slot within 1s" in a.log()
    assert run_row(dsn, long_run)["status"] == "running"
    assert wait_status(dsn, long_run, {"succeeded"}, 10)["worker_id"] == "a"
    assert a.stop() == 0 and b.stop() == 0


def test_a_stopping_worker_hands_back_its_prefetched_runs_at_once(
    dsn: str, workers: Workers
) -> None:
    w = workers.start(["t-sleep"], "--concurrency", "1", "--grace", "10")
    workers.wait_registered(w)
    long_run, short_run = _long_run_with_one_prefetched(dsn, w)
    w.signal(signal.SIGTERM)
    short = wait_status(dsn, short_run, {"queued"}, 5)
    assert short["worker_id"] is None and short["started_at"] is None
    assert short["message"] == f"prefetched by worker {w.id}, handed back: worker shutting down"
    assert w.wait(20) == 0, w.log()
    assert run_row(dsn, long_run)["status"] == "succeeded"
    assert run_row(dsn, short_run)["status"] == "queued"
