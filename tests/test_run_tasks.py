"""A run's task: what a job's code sets in its context stays with it (the prefetched run started
at its end does not see it), an exception before the first await is the run's failure, and a run
cut off at shutdown goes back to the queue. Real worker processes, checked with SQL."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.test_worker import enqueue_raw, run_row, wait_status
from tests.workers import Workers, rows, scalar, wait_until, worker_pool

APP = "tests.worker_apps.runs:extension"


@pytest.fixture
def workers(dsn: str, tmp_path: Path) -> Iterator[Workers]:
    with worker_pool(dsn, tmp_path) as pool:
        yield pool


def test_a_run_started_at_the_end_of_another_does_not_see_its_context(
    dsn: str, workers: Workers
) -> None:
    w = workers.start(["r-mark", "r-read"], "--concurrency", "1", app=APP)
    workers.wait_registered(w)
    for _ in range(5):  # short runs: the worker prefetches from now on (PREFETCH_WHEN_SHORTER)
        enqueue_raw(dsn, "r-read")
    wait_until(
        lambda: scalar(dsn, "SELECT count(*) FROM pgjobs.runs WHERE status = 'succeeded'") == 5,
        15,
        "the warm-up runs to succeed",
    )
    with psycopg.connect(dsn) as conn:  # one transaction: one claim takes the mark and a read
        ids = [
            row[0]
            for row in conn.execute(
                "INSERT INTO pgjobs.runs (job, trigger, priority) "
                "VALUES ('r-mark', 'enqueue', 1), ('r-read', 'enqueue', 2),"
                " ('r-read', 'enqueue', 3) RETURNING id"
            ).fetchall()
        ]
    for run_id in ids:
        wait_status(dsn, run_id, {"succeeded"}, 15)
    # With one slot and runs that were short, the claim took the mark and the first read: the
    # read waited, prefetched, for the mark's slot, and the mark's task started it as it ended.
    messages = rows(dsn, "SELECT message FROM pgjobs.runs WHERE id = ANY(%s)", ids[1:])
    assert messages == [("unset",), ("unset",)], w.log()
    assert w.stop() == 0, w.log()


def test_an_exception_before_the_first_await_is_the_runs_failure(
    dsn: str, workers: Workers
) -> None:
    w = workers.start(["r-raise-first"], app=APP)
    workers.wait_registered(w)
    run = wait_status(dsn, enqueue_raw(dsn, "r-raise-first"), {"failed"}, 15)
    assert run["error_type"] == "LookupError"
    assert run["error_message"] == "raised before any await"
    assert "raise LookupError" in str(run["error_traceback"])
    assert w.stop() == 0, w.log()


def test_a_run_cut_off_at_shutdown_goes_back_to_the_queue_and_its_slot_is_released(
    dsn: str, workers: Workers
) -> None:
    w = workers.start(["r-slow"], "--grace", "0.5", app=APP)
    workers.wait_registered(w)
    run_id = enqueue_raw(dsn, "r-slow", {"seconds": 30})
    wait_status(dsn, run_id, {"running"}, 15)
    w.proc.send_signal(signal.SIGTERM)
    assert w.proc.wait(15) == 0, w.log()
    assert run_row(dsn, run_id)["status"] == "queued"
    assert "grace period over: handed 1 run(s) back to the queue" in w.log()
    assert "Traceback" not in w.log(), w.log()
