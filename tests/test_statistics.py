"""The planner's statistics of ``runs``: refreshed as soon as the table outgrows them, not on
every change of a busy table.

A worker's claim statement is prepared once and runs on a cached generic plan, made with the
statistics of the moment. Made while ``runs`` was empty it reads the whole table on every claim,
and keeps doing so until an ANALYZE invalidates it: autovacuum visits a database once a minute
(``autovacuum_naptime``), the worker's reaper every lease. A queue that grows from empty would
wait that long; so a worker that has claimed 1,000 runs since its last reap reaps again at once,
and the reap analyses ``runs`` when it holds more than twice the rows the statistics say.

Autovacuum is turned off for ``runs`` in these databases, so that only the worker analyses it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

import pgjobs
from tests.test_store import refresh
from tests.workers import Workers, scalar, wait_until, worker_pool

# It measures latencies: it runs alone, after the tests that share the machine (see Makefile).
pytestmark = pytest.mark.serial

_ANALYZED = "SELECT analyze_count FROM pg_stat_user_tables WHERE relid = 'pgjobs.runs'::regclass"


@pytest.fixture
def quiet_dsn(dsn: str) -> str:
    """The test's database, with no autovacuum on ``runs``."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("ALTER TABLE pgjobs.runs SET (autovacuum_enabled = false)")
    return dsn


@pytest.fixture
def workers(quiet_dsn: str, tmp_path: Path) -> Iterator[Workers]:
    with worker_pool(quiet_dsn, tmp_path) as pool:
        yield pool


def _insert(conn: psycopg.Connection[tuple[object, ...]], count: int) -> None:
    conn.execute(
        "INSERT INTO pgjobs.runs (job, trigger) SELECT 'j', 'enqueue' FROM generate_series(1, %s)",
        [count],
    )
    conn.execute("SELECT pg_stat_force_next_flush()")  # counted before the reap reads them


def test_runs_are_analysed_when_they_outgrow_the_statistics_but_not_for_every_change(
    quiet_dsn: str,
) -> None:
    with psycopg.connect(quiet_dsn, autocommit=True) as conn:
        _insert(conn, 5000)
        assert refresh(quiet_dsn) is True  # never analysed

        conn.execute("UPDATE pgjobs.runs SET status = 'running' WHERE id % 2 = 0")
        conn.execute("SELECT pg_stat_force_next_flush()")
        assert refresh(quiet_dsn) is False  # changed a lot, but analysed a moment ago

        _insert(conn, 6000)
        assert refresh(quiet_dsn) is True  # 11,000 rows, twice the 5,000 the planner knows of


def test_a_queue_that_grows_from_empty_is_analysed_long_before_the_next_reap(
    quiet_dsn: str, workers: Workers
) -> None:
    # A lease of a minute: the reaper's own turn comes a minute after the start. A poll every
    # 0.1 s: the worker prepares its claim statement, on the empty table, within a second.
    worker = workers.start(
        [], "--lease", "60", "--poll-interval", "0.1", app="benchmarks.apps:drain"
    )
    workers.wait_registered(worker)
    wait_until(lambda: scalar(quiet_dsn, _ANALYZED) >= 1, 10, "the first reap's ANALYZE")
    time.sleep(1.0)
    analysed_empty = scalar(quiet_dsn, _ANALYZED)

    with psycopg.connect(quiet_dsn, autocommit=True) as conn, conn.transaction():
        pgjobs.enqueue_many_sync(conn, [{"job": "bench-noop"}] * 5000)

    wait_until(
        lambda: scalar(quiet_dsn, _ANALYZED) > analysed_empty,
        15,
        "the worker to analyse runs once it claimed 1,000 of the 5,000",
        interval=0.2,
    )
