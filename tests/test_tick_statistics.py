"""A tick that makes many runs refreshes runs' planner statistics at once: until an ANALYZE,
every worker's cached claim plan, made while the table was near empty, reads the whole queue per
claim. The worker knows how many runs it made; the server's counters learn of them late."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import psycopg
import pytest

from pgjobs.named_queries import Queries
from pgjobs.registry import Registry, load_registry
from pgjobs.worker import Worker, WorkerSettings
from tests.workers import Workers, rows, scalar, wait_until, worker_pool

JOB = "t-misfire-backfill"


@pytest.fixture
def workers(dsn: str, tmp_path: Path) -> Iterator[Workers]:
    with worker_pool(dsn, tmp_path) as pool:
        yield pool


def test_a_tick_of_many_runs_analyses_runs_before_the_round_ends(
    dsn: str, workers: Workers
) -> None:
    # 1,500 on-time ticks of one job, due at once (a 1-hour grace): one tick transaction inserts
    # them all. Its queue is elsewhere, so the runs stay queued and only the statistics matter.
    args = ("--misfire-grace", "3600", "--queue", "elsewhere")
    first = workers.start([JOB], *args)
    workers.wait_registered(first)
    assert first.stop() == 0
    began = scalar(dsn, "SELECT now()")
    scalar(
        dsn,
        "UPDATE pgjobs.jobs SET next_fire_at = date_trunc('second', now()) - interval '1500 s' "
        "WHERE name = %s RETURNING name",
        JOB,
    )
    second = workers.start([JOB], *args)
    workers.wait_registered(second)
    wait_until(
        lambda: "after a tick of" in second.log(), 30, "the worker to refresh the statistics"
    )
    assert second.stop() == 0

    reltuples, analysed = rows(
        dsn,
        "SELECT c.reltuples, greatest(s.last_analyze, s.last_autoanalyze) FROM pg_class c "
        "JOIN pg_stat_user_tables s ON s.relid = c.oid WHERE c.oid = 'pgjobs.runs'::regclass",
    )[0]
    assert analysed > began
    assert reltuples >= 1500  # the statistics count the tick's runs
    assert "refreshed the planner statistics of pgjobs.runs after a tick of 1" in second.log()


def test_statistics_are_behind_a_tick_until_an_analyze_after_its_round_began(
    conn: psycopg.Connection,
) -> None:
    queries = Queries("pgjobs")

    def behind(inserted: int, since: datetime) -> bool:
        row = conn.execute(
            queries["runs_statistics_behind_ticks"], {"inserted": inserted, "since": since}
        ).fetchone()
        assert row is not None
        return bool(row[0])

    conn.execute("ANALYZE pgjobs.runs")  # an empty table
    later = conn.execute("SELECT clock_timestamp() + interval '1 hour'").fetchone()[0]
    assert behind(1500, later)  # 1,500 runs against statistics of none
    assert not behind(900, later)  # too few to matter
    earlier = conn.execute("SELECT clock_timestamp() - interval '1 hour'").fetchone()[0]
    assert not behind(1500, earlier)  # analysed since the round began: by another replica

    conn.execute(
        "INSERT INTO pgjobs.jobs (name, extension) VALUES ('s-job', 's');"
        "INSERT INTO pgjobs.runs (job, trigger, status, scheduled_for) "
        "SELECT 's-job', 'enqueue', 'succeeded', now() FROM generate_series(1, 20000)"
    )
    conn.execute("ANALYZE pgjobs.runs")
    assert not behind(1500, later)  # a tenth of the table's runs: the plans still hold
    assert behind(5000, later)


def _worker(registry: Registry) -> Worker:
    return Worker(registry, WorkerSettings(dsn="postgresql://unused"))


def test_jobs_on_one_schedule_need_no_sort_for_the_first_batch() -> None:
    # Due at one instant, jobs on one schedule tick equally often: index order is oftenest
    # first. Jobs on different schedules are sorted (lock_due_jobs_oftenest_first).
    registry = load_registry("tests.worker_apps.app:extension", entry_points=False)
    scheduled = [d.schedule for d in registry.definitions.values() if d.schedule]
    assert len(set(scheduled)) > 1
    assert _worker(registry)._one_cadence is False
    common = max(set(scheduled), key=scheduled.count)
    one = Registry([d for d in registry.definitions.values() if d.schedule in (common, None)])
    assert len(one.definitions) > 1
    assert _worker(one)._one_cadence is True
    assert _worker(Registry([]))._one_cadence is True
