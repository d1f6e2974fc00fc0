"""A large ``pgjobs.runs`` history, and the worker's named queries bound as the worker binds them.

Shared by the scale measure (claim latency with a million finished runs) and the query-plan test
(``tests/test_query_plans.py``). Rows are loaded with ``INSERT … SELECT generate_series``: what
matters here is the shape of the tables the queries read, not how the rows got there.
"""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from pgjobs.named_queries import Queries

WORKER = "bench-worker"
LEASE = 30.0
_PLACEHOLDER = re.compile(r"%\((\w+)\)s")
_NO_DEFAULT: Any = object()

_ADD_JOBS = """
INSERT INTO pgjobs.jobs (name, extension, schedule, overlap, next_fire_at)
SELECT name, 'bench', %(schedule)s, 'allow',
       CASE WHEN %(schedule)s::text IS NULL THEN NULL
            ELSE now() + (ord %% 3600) * interval '1 second' + interval '1 second' END
FROM unnest(%(names)s::text[]) WITH ORDINALITY AS j(name, ord)
ON CONFLICT (name) DO NOTHING
"""

# The benchmark's worker, registering the same jobs as a worker's code would.
_REGISTER = """
WITH me AS (
    INSERT INTO pgjobs.workers (id, host, pid, version, queues, concurrency, expires_at)
    VALUES (%(worker)s, 'bench', 0, 'bench', ARRAY['default'], 10, now() + interval '1 hour')
    ON CONFLICT (id) DO UPDATE SET expires_at = excluded.expires_at
    RETURNING id
)
INSERT INTO pgjobs.worker_jobs (worker_id, job, schedule, timezone)
SELECT me.id, name, %(schedule)s, 'UTC' FROM me, unnest(%(names)s::text[]) AS name
ON CONFLICT (worker_id, job) DO NOTHING
"""

_FINISHED = """
INSERT INTO pgjobs.runs
    (job, trigger, scheduled_for, status, worker_id, created_at, started_at, finished_at,
     duration_seconds, message)
SELECT (%(jobs)s::text[])[1 + i %% cardinality(%(jobs)s::text[])],
       CASE WHEN i %% 2 = 0 THEN 'schedule' ELSE 'enqueue' END,
       t, CASE i %% 20 WHEN 0 THEN 'failed' WHEN 1 THEN 'skipped' ELSE 'succeeded' END,
       'bench-history', t, t, t + interval '5 ms', 0.005, 'done'
FROM generate_series(1, %(count)s) AS i,
     LATERAL (SELECT now() - interval '1 minute' - i * interval '1 second') AS s(t)
"""

_QUEUED = """
INSERT INTO pgjobs.runs (job, trigger, scheduled_for)
SELECT (%(jobs)s::text[])[1 + i %% cardinality(%(jobs)s::text[])], 'enqueue',
       now() - interval '1 second' - (i %% 60) * interval '1 second'
FROM generate_series(1, %(count)s) AS i
"""


def job_names(count: int) -> list[str]:
    return [f"bench-history-{i:05d}" for i in range(count)]


def add_jobs(conn: psycopg.Connection[Any], names: list[str], schedule: str | None) -> None:
    """Rows of ``pgjobs.jobs`` (overlap allowed) as a worker registering them would leave them;
    scheduled ones fire within the next hour, none is due."""
    conn.execute(_ADD_JOBS, {"names": names, "schedule": schedule})
    conn.execute(_REGISTER, {"worker": WORKER, "names": names, "schedule": schedule})


def add_finished_runs(conn: psycopg.Connection[Any], jobs: list[str], count: int) -> None:
    """``count`` finished runs (mostly succeeded, some failed or skipped) of ``jobs``."""
    conn.execute(_FINISHED, {"jobs": jobs, "count": count})


def add_queued_runs(conn: psycopg.Connection[Any], jobs: list[str], count: int) -> None:
    """``count`` queued runs of ``jobs``, all due."""
    conn.execute(_QUEUED, {"jobs": jobs, "count": count})


def vacuum_analyze(conn: psycopg.Connection[Any]) -> None:
    conn.execute("VACUUM ANALYZE pgjobs.runs")
    conn.execute("VACUUM ANALYZE pgjobs.jobs")


CLAIM_QUERIES = ("claim_runs", "finish_and_claim_runs")


def claim_query(queries: Queries) -> tuple[str, str]:
    """(name, text) of the worker's claim statement: ``claim_runs``, or the statement that
    finishes the previous batch and claims the next one in a single round trip."""
    for name in CLAIM_QUERIES:
        if name in queries:
            return name, queries[name]
    raise KeyError(f"no claim query: none of {', '.join(CLAIM_QUERIES)} is defined")


def worker_params(
    query: str, values: Mapping[str, Any], *, others: Any = _NO_DEFAULT
) -> dict[str, Any]:
    """The parameters a named query takes, in the order of their first use, from ``values``.

    A parameter ``values`` lacks gets ``others`` if given; else it is an error here (the query
    changed and so must its caller) rather than a KeyError deep in psycopg.
    """
    names = dict.fromkeys(_PLACEHOLDER.findall(query))
    missing = [n for n in names if n not in values]
    if missing and others is _NO_DEFAULT:
        raise KeyError(f"no value for parameter(s) {', '.join(missing)} of the query")
    return {n: values.get(n, others) for n in names}


def claim_params(
    query: str,
    jobs: list[str],
    limit: int = 10,
    finished: Sequence[int] = (),
    deferrable: Sequence[int] | None = None,
) -> dict[str, Any]:
    """What a worker binds to its claim statement: its id, its jobs and queues, its free slots
    and its lease, and the outcomes of the runs it ``finished`` (each succeeded; none by
    default). It is not listening: a claim that comes short does not mark it waiting. Like the
    worker's loop, it leaves for later the outcome of a run of ``deferrable`` (by default, any
    that ``finished``) whose row another transaction holds."""
    outcomes = [{"run_id": run, "status": "succeeded", "duration": 0.001} for run in finished]
    values = {
        "worker": WORKER,
        "jobs": jobs,
        "queues": ["default"],
        "limit": limit,
        "lease": LEASE,
        "listening": False,
        "defer": list(finished if deferrable is None else deferrable),
        "outcomes": Jsonb(outcomes),
    }
    return worker_params(query, values, others=[])


def tick_params(query: str) -> dict[str, Any]:
    """What the worker binds to ``lock_due_jobs``: its id (its scheduled jobs are registered
    in ``worker_jobs`` by :func:`add_jobs`) and its tick batch."""
    from pgjobs import worker

    return worker_params(query, {"worker": WORKER, "limit": worker.TICK_BATCH})


@contextmanager
def rolled_back(conn: psycopg.Connection[Any]) -> Iterator[None]:
    """A transaction that is always rolled back: the query's effects are measured, then undone."""
    tx = conn.transaction(force_rollback=True)
    with tx:
        yield


def time_query(
    conn: psycopg.Connection[Any], query: str, params: Mapping[str, Any], repeat: int
) -> float:
    """Median seconds of ``repeat`` executions of ``query``, each in a transaction rolled back.

    Five executions come first untimed: psycopg prepares a statement on its fifth execution, as it
    does in the worker, so the timed ones run prepared.
    """
    samples = []
    for i in range(5 + repeat):
        with rolled_back(conn):
            began = time.perf_counter()
            conn.execute(query, params).fetchall()
            elapsed = time.perf_counter() - began
        if i >= 5:
            samples.append(elapsed)
    return statistics.median(samples)


def explain(
    conn: psycopg.Connection[Any], query: str, params: Mapping[str, Any], *, generic: bool
) -> dict[str, Any]:
    """The JSON plan of ``query`` prepared with ``params`` bound as psycopg binds them (their
    types included), as a custom plan or as the generic plan PostgreSQL may switch to once the
    statement has been executed five times."""
    with rolled_back(conn):
        conn.execute(query, params, prepare=True)
        row = conn.execute(
            "SELECT name, parameter_types::text[] FROM pg_prepared_statements"
            " WHERE from_sql = false ORDER BY prepare_time DESC LIMIT 1"
        ).fetchone()
        assert row is not None, "psycopg did not prepare the statement"
        name, types = row
        values = list(params.values())
        args = sql.SQL(", ").join(
            sql.SQL("{}::{}").format(sql.Literal(v), sql.SQL(t))
            for v, t in zip(values, types, strict=True)
        )
        mode = "force_generic_plan" if generic else "force_custom_plan"
        conn.execute(sql.SQL("SET LOCAL plan_cache_mode = {}").format(sql.Literal(mode)))
        call: sql.Composable = sql.Identifier(name)
        if values:
            call = sql.SQL("{}({})").format(call, args)
        plan = conn.execute(sql.SQL("EXPLAIN (FORMAT JSON) EXECUTE {}").format(call)).fetchone()
    assert plan is not None
    return dict(plan[0][0]["Plan"])


def plan_nodes(plan: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    """Every node of a JSON plan, depth first."""
    yield plan
    for child in plan.get("Plans", ()):
        yield from plan_nodes(child)


def queries() -> Queries:
    return Queries("pgjobs")
