"""Claiming and ticking stay index scans with a long history: a plan check, not a timing.

The history is 200,000 finished runs plus a few hundred queued ones, and 5,000 scheduled jobs of
which none is due, all analysed. The worker's claim statement and ``lock_due_jobs`` are prepared
with their parameters bound as the worker binds them, and their plans are read with ``EXPLAIN
(FORMAT JSON)`` both as a custom plan and as the generic plan PostgreSQL may switch to after a
prepared statement's fifth execution (psycopg prepares a statement on its fifth execution).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from benchmarks import history

FINISHED = 200_000
QUEUED = 300
SCHEDULED = 5_000
SCHEDULE = "0 * * * * *"
PLANS = (("custom plan", False), ("generic plan", True))


@pytest.fixture
def loaded(dsn: str) -> Iterator[tuple[psycopg.Connection[Any], list[str], list[str]]]:
    """A connection to a database with a large history; the queue's jobs; the scheduled jobs."""
    queue_jobs = history.job_names(50)
    scheduled = [f"bench-scheduled-{i:05d}" for i in range(SCHEDULED)]
    with psycopg.connect(dsn, autocommit=True) as conn:
        history.add_jobs(conn, queue_jobs, None)
        history.add_jobs(conn, scheduled, SCHEDULE)
        history.add_finished_runs(conn, queue_jobs, FINISHED)
        history.add_queued_runs(conn, queue_jobs, QUEUED)
        history.vacuum_analyze(conn)
        yield conn, queue_jobs, scheduled


def _nodes(plan: dict[str, Any]) -> list[tuple[str, str | None, str | None]]:
    return [
        (n["Node Type"], n.get("Relation Name"), n.get("Index Name"))
        for n in history.plan_nodes(plan)
    ]


def _seq_scans_on(plan: dict[str, Any], table: str) -> list[tuple[str, str | None, str | None]]:
    return [n for n in _nodes(plan) if n[0] == "Seq Scan" and n[1] == table]


def test_claiming_reads_the_queued_index_not_the_history(
    loaded: tuple[psycopg.Connection[Any], list[str], list[str]],
) -> None:
    conn, queue_jobs, _ = loaded
    name, query = history.claim_query(history.queries())
    params = history.claim_params(query, queue_jobs)
    for mode, generic in PLANS:
        plan = history.explain(conn, query, params, generic=generic)
        shown = json.dumps(plan, indent=1)
        assert not _seq_scans_on(plan, "runs"), f"{name} ({mode}) scans all of runs:\n{shown}"
        claim_scans = [n for n in _nodes(plan) if n[1] == "runs" and n[2] == "runs_claim_idx"]
        assert claim_scans, f"{name} ({mode}) does not use runs_claim_idx:\n{shown}"


def test_ticking_reads_the_next_fire_index(
    loaded: tuple[psycopg.Connection[Any], list[str], list[str]],
) -> None:
    conn, _, scheduled = loaded
    query = history.queries()["lock_due_jobs"]
    params = history.tick_params(query, [(name, SCHEDULE, "UTC") for name in scheduled])
    for mode, generic in PLANS:
        plan = history.explain(conn, query, params, generic=generic)
        shown = json.dumps(plan, indent=1)
        assert not _seq_scans_on(plan, "runs"), f"lock_due_jobs ({mode}) scans runs:\n{shown}"
        assert not _seq_scans_on(plan, "jobs"), (
            f"lock_due_jobs ({mode}) scans all of jobs:\n{shown}"
        )
        used = [n for n in _nodes(plan) if n[2] == "jobs_next_fire_at_idx"]
        assert used, f"lock_due_jobs ({mode}) does not use jobs_next_fire_at_idx:\n{shown}"
