"""Claiming and ticking stay index scans with a long history: a plan check, not a timing.

The history is 200,000 finished runs plus 20,000 queued ones (a burst waiting), spread over a
worker's 50 jobs or over 10,000, and 5,000 scheduled jobs of which none is due, all analysed.
Claiming must read runs only through the queue's partial indexes (and the primary key), never the
history, and no statement may cost enough for PostgreSQL to JIT-compile it at every execution.
The worker's claim statement and ``lock_due_jobs`` are prepared with their parameters bound as
the worker binds them, and their plans are read with ``EXPLAIN (FORMAT JSON)`` both as a custom
plan and as the generic plan PostgreSQL may switch to after a prepared statement's fifth
execution (psycopg prepares a statement on its fifth execution). The statements inside the
functions those statements call are read with auto_explain, as generic plans.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from psycopg import sql

from benchmarks import history
from pgjobs.worker import connection
from pgjobs.worker.connection import open_loop_connection
from pgjobs.worker.settings import WorkerSettings

FINISHED = 200_000
QUEUED = 20_000
SCHEDULED = 5_000
SCHEDULE = "0 * * * * *"
PLANS = (("custom plan", False), ("generic plan", True))
# The indexes claiming may read on runs: the queue's own partial indexes (queued, running or
# blocked runs) and the primary key.
QUEUE_INDEXES = {
    "runs_claim_idx",
    "runs_blocked_idx",
    "runs_delayed_idx",
    "runs_worker_idx",
    "runs_lease_idx",
    "runs_slot_idx",
    "runs_pkey",
}

Loaded = tuple[psycopg.Connection[Any], list[str]]


def _load(dsn: str, queue_jobs: list[str], scheduled: list[str]) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        history.add_jobs(conn, queue_jobs, None)
        history.add_jobs(conn, scheduled, SCHEDULE)
        _add_runtime_schedules(conn, scheduled)
        history.add_finished_runs(conn, queue_jobs, FINISHED)
        history.add_queued_runs(conn, queue_jobs, QUEUED)
        history.vacuum_analyze(conn)


def _add_runtime_schedules(conn: psycopg.Connection[Any], jobs: list[str]) -> None:
    """A runtime schedule of each of ``jobs``, ticked already: none is due within the hour."""
    conn.execute(
        "INSERT INTO pgjobs.schedules (job, name, cron, next_fire_at, last_tick_at)"
        " SELECT j, 'hourly', '0 0 * * * *', now() + make_interval(secs => 60 + i %% 3000),"
        "        now() - interval '1 hour'"
        " FROM unnest(%(jobs)s::text[]) WITH ORDINALITY AS t(j, i)",
        {"jobs": jobs},
    )


# Loaded once per module: the tests only read plans, with every statement rolled back.
@pytest.fixture(scope="module", params=[50, 10_000], ids=["50 jobs", "10000 jobs"])
def _queue_history(
    fresh_database: Callable[[], AbstractContextManager[str]], request: pytest.FixtureRequest
) -> Iterator[tuple[str, list[str]]]:
    jobs = history.job_names(request.param)
    with fresh_database() as dsn:
        _load(dsn, jobs, [])
        yield dsn, jobs


@pytest.fixture(scope="module")
def _scheduled_history(
    fresh_database: Callable[[], AbstractContextManager[str]],
) -> Iterator[tuple[str, list[str]]]:
    scheduled = [f"bench-scheduled-{i:05d}" for i in range(SCHEDULED)]
    with fresh_database() as dsn:
        _load(dsn, history.job_names(50), scheduled)
        yield dsn, scheduled


@pytest.fixture
def queue_history(_queue_history: tuple[str, list[str]]) -> Iterator[Loaded]:
    """A large history spread over the jobs of a worker (50, or 10,000 as in the scale
    benchmark); a connection of the test's own and those jobs."""
    dsn, jobs = _queue_history
    with psycopg.connect(dsn, autocommit=True) as conn:
        yield conn, jobs


@pytest.fixture
def scheduled_history(_scheduled_history: tuple[str, list[str]]) -> Iterator[Loaded]:
    """A large history and 5,000 scheduled jobs, none due; a connection and those jobs."""
    dsn, scheduled = _scheduled_history
    with psycopg.connect(dsn, autocommit=True) as conn:
        yield conn, scheduled


def _nodes(plan: dict[str, Any]) -> list[tuple[str, str | None, str | None]]:
    return [
        (n["Node Type"], n.get("Relation Name"), n.get("Index Name"))
        for n in history.plan_nodes(plan)
    ]


def _seq_scans_on(plan: dict[str, Any], table: str) -> list[tuple[str, str | None, str | None]]:
    return [n for n in _nodes(plan) if n[0] == "Seq Scan" and n[1] == table]


def _history_reads(plan: dict[str, Any]) -> list[tuple[str, str | None, str | None]]:
    """Nodes that read runs other than through the queue's indexes."""
    runs_indexes = [n for n in _nodes(plan) if n[2] and n[2].startswith("runs_")]
    return _seq_scans_on(plan, "runs") + [n for n in runs_indexes if n[2] not in QUEUE_INDEXES]


def _jit_compiled(conn: psycopg.Connection[Any], plan: dict[str, Any]) -> bool:
    """Whether PostgreSQL's default settings JIT-compile this plan at every execution: a few
    milliseconds of work would take seconds (a set-returning function whose bounds are not
    constants is costed at 1,000 rows, enough for a claim statement to cross the line)."""
    row = conn.execute("SELECT current_setting('jit_above_cost')::float8").fetchone()
    assert row is not None
    return bool(row[0] >= 0 and plan["Total Cost"] > row[0])


def test_claiming_reads_the_queued_index_not_the_history(queue_history: Loaded) -> None:
    conn, jobs = queue_history
    name, query = history.claim_query(history.queries())
    params = history.claim_params(query, jobs)
    for mode, generic in PLANS:
        plan = history.explain(conn, query, params, generic=generic)
        shown = json.dumps(plan, indent=1)
        claim_scans = [n for n in _nodes(plan) if n[1] == "runs" and n[2] == "runs_claim_idx"]
        assert claim_scans, f"{name} ({mode}) does not use runs_claim_idx:\n{shown}"
        reads = _history_reads(plan)
        assert not reads, f"{name} ({mode}) reads the history ({reads}):\n{shown}"
        if len(jobs) > 1000:  # then a scan of jobs per claim would cost more than the claim
            assert not _seq_scans_on(plan, "jobs"), f"{name} ({mode}) scans jobs:\n{shown}"
        assert not _jit_compiled(conn, plan), f"{name} ({mode}) is JIT-compiled:\n{shown}"


@pytest.mark.parametrize("name", ["lock_due_jobs", "lock_due_jobs_oftenest_first"])
def test_ticking_reads_the_next_fire_index(scheduled_history: Loaded, name: str) -> None:
    conn, _ = scheduled_history
    query = history.queries()[name]
    params = history.tick_params(query)
    for mode, generic in PLANS:
        plan = history.explain(conn, query, params, generic=generic)
        shown = json.dumps(plan, indent=1)
        assert not _seq_scans_on(plan, "runs"), f"{name} ({mode}) scans runs:\n{shown}"
        assert not _seq_scans_on(plan, "jobs"), f"{name} ({mode}) scans all of jobs:\n{shown}"
        used = [n for n in _nodes(plan) if n[2] == "jobs_next_fire_at_idx"]
        assert used, f"{name} ({mode}) does not use jobs_next_fire_at_idx:\n{shown}"


@pytest.mark.parametrize("name", ["lock_due_schedules", "lock_due_schedules_oftenest_first"])
def test_ticking_runtime_schedules_reads_the_due_index(
    scheduled_history: Loaded, name: str
) -> None:
    conn, _ = scheduled_history
    query = history.queries()[name]
    params = history.tick_params(query)
    for mode, generic in PLANS:
        plan = history.explain(conn, query, params, generic=generic)
        shown = json.dumps(plan, indent=1)
        assert not _seq_scans_on(plan, "schedules"), f"{name} ({mode}) scans schedules:\n{shown}"
        assert not _seq_scans_on(plan, "jobs"), f"{name} ({mode}) scans all of jobs:\n{shown}"
        used = [n for n in _nodes(plan) if n[2] == "schedules_due_idx"]
        assert used, f"{name} ({mode}) does not use schedules_due_idx:\n{shown}"


# The worker's other statements on runs, with what it binds to them. The worker runs every
# statement as a generic plan (plan_cache_mode), so each must probe runs by index whatever the
# parameters: none may read the history.
WORKER_STATEMENTS = {
    "heartbeat": {"held": [1, 2, 3], "since": datetime.now(UTC), "ttl": 30.0, "lease": 30.0},
    "reap_expired_leases": {"limit": 500},
    "hand_back_runs": {"ids": [1, 2, 3], "message": "handed back"},
    "insert_ticks_advance_watermarks": {
        "tick_jobs": ["bench-history-00001"],
        "tick_times": [datetime.now(UTC)],
        "names": ["bench-history-00001"],
        "next_fire_ats": [None],
        "last_ticks": [None],
    },
}


@pytest.mark.parametrize("name", sorted(WORKER_STATEMENTS))
def test_the_workers_other_statements_do_not_read_the_history(
    queue_history: Loaded, name: str
) -> None:
    conn, _ = queue_history
    query = history.queries()[name]
    params = history.worker_params(query, {"worker": history.WORKER, **WORKER_STATEMENTS[name]})
    plan = history.explain(conn, query, params, generic=True)
    reads = _history_reads(plan)
    assert not reads, f"{name} (generic plan) reads the history ({reads}):\n{json.dumps(plan)}"
    assert not _jit_compiled(conn, plan), f"{name} (generic plan) is JIT-compiled"


def _nested_plans(conn: psycopg.Connection[Any], statement: str) -> list[dict[str, Any]]:
    """The plans of the statements that ``statement``'s functions run, as the loop's session
    runs them (generic plans), read with auto_explain at NOTICE level."""
    plans: list[dict[str, Any]] = []

    def heard(diag: psycopg.errors.Diagnostic) -> None:
        text = diag.message_primary or ""
        if text.startswith("duration:") and "{" in text:
            plans.append(json.loads(text[text.index("{") :])["Plan"])

    conn.add_notice_handler(heard)
    for setting in (
        "LOAD 'auto_explain'",
        "SET auto_explain.log_min_duration = 0",
        "SET auto_explain.log_nested_statements = on",
        "SET auto_explain.log_format = 'json'",
        "SET auto_explain.log_level = 'notice'",
        "SET plan_cache_mode = force_generic_plan",
    ):
        conn.execute(setting)
    conn.execute(statement)
    conn.execute("LOAD 'auto_explain'; SET auto_explain.log_min_duration = -1")
    return plans


def test_a_run_ending_reads_the_edges_of_its_own_dependants_only(
    conn: psycopg.Connection[Any],
) -> None:
    # 5,000 runs, each with one blocked dependant: the edges of chains, just enqueued (not yet
    # analysed: the planner takes every ended run for many edges, and would read them all).
    conn.execute(
        "INSERT INTO pgjobs.jobs (name, extension) VALUES ('p-chain', 'p');"
        "INSERT INTO pgjobs.runs (id, job, trigger, status, blocked_by) OVERRIDING SYSTEM VALUE"
        " SELECT i, 'p-chain', 'enqueue', CASE WHEN i % 2 = 1 THEN 'succeeded' ELSE 'blocked' END,"
        "        CASE WHEN i % 2 = 0 THEN 1 END"
        " FROM generate_series(1, 10000) i;"
        "INSERT INTO pgjobs.run_dependencies (run_id, depends_on)"
        " SELECT i + 1, i FROM generate_series(1, 9999, 2) i;"
        "ANALYZE pgjobs.runs"
    )
    plans = _nested_plans(
        conn,
        "SELECT pgjobs.release_dependants(ARRAY[1, 3]::bigint[], ARRAY['succeeded', 'failed'])",
    )

    assert plans, "auto_explain reported no plan"
    scans = [n for plan in plans for n in _seq_scans_on(plan, "run_dependencies")]
    assert not scans, f"release_dependants reads every edge: {json.dumps(plans)}"
    statuses = conn.execute("SELECT id, status FROM pgjobs.runs WHERE id IN (2, 4) ORDER BY id")
    assert statuses.fetchall() == [(2, "queued"), (4, "cancelled")]


# -- the loop's session -------------------------------------------------------------------------


def _jit_on_by_default(dsn: str) -> None:
    """New sessions of the test's database get ``jit = on``, PostgreSQL's default, whatever
    the server's configuration says."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("ALTER DATABASE {} SET jit = on").format(sql.Identifier(conn.info.dbname))
        )


def _loop_session(settings: WorkerSettings) -> tuple[str, str]:
    """``jit`` and ``plan_cache_mode`` in a worker loop's session opened with ``settings``."""

    async def show() -> tuple[str, str]:
        conn = await open_loop_connection(settings, "w-plans")
        try:
            cur = await conn.execute(
                "SELECT current_setting('jit'), current_setting('plan_cache_mode')"
            )
            row = await cur.fetchone()
            assert row is not None
            return row[0], row[1]
        finally:
            await conn.close()

    return asyncio.run(show())


def test_the_loop_session_never_jit_compiles_and_keeps_generic_plans(dsn: str) -> None:
    # Costs are estimates: a claim of a deep queue, or one planned with statistics made while
    # the queue was deep, crosses jit_above_cost whatever the test above found, and compiling
    # it takes half a second per execution. The loop's session does not JIT at all.
    _jit_on_by_default(dsn)
    assert _loop_session(WorkerSettings(dsn=dsn)) == ("off", "force_generic_plan")


def test_a_pooled_loop_session_is_left_alone_and_says_when_jit_is_on(
    dsn: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    _jit_on_by_default(dsn)
    monkeypatch.setattr(connection, "_jit_warned", False)
    with caplog.at_level(logging.WARNING, logger="pgjobs.worker"):
        assert _loop_session(WorkerSettings(dsn=dsn, listen=False)) == ("on", "auto")
        assert _loop_session(WorkerSettings(dsn=dsn, listen=False)) == ("on", "auto")
    warnings = [r.getMessage() for r in caplog.records if "jit is on" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert "ALTER ROLE ... SET jit = off" in warnings[0]
