"""limits: what a queue control costs a drain, as the ratio to an unlimited drain next to it.

The same N runs (20,000; quick: 500) of a no-op job, enqueued in one ``enqueue_many``, are drained
by W = 2 worker processes of concurrency C = 10 (the drain measure's ``W=2 C=10``), each drain in
a fresh database whose workers load one job: ``bench-noop`` (unlimited), or that job with one
control (``benchmarks/apps.py``):

- ``max_concurrency = 50``;
- ``concurrency_key = "tenant"`` with one run at a time per key, the runs' payloads
  ``{"tenant": i % 1000}`` (a key's runs stand 1,000 apart in the queue; the unlimited drains
  next to these have the same payloads);
- ``rate_limit = "1000000/s"``, far above any drain rate.

Each case runs 3 pairs (quick: 1) of a limited drain and an unlimited one, the pair's order
alternating, so that both sides see the same state of a shared machine; reported are the median
rate of each side and the median of the pairs' ratios (limited / unlimited), with the target.

Read from ``pgjobs.runs`` after each drain: the rate (N / first ``started_at`` → last
``finished_at``), the share of the runs the busiest worker ran, and whether the limit held. A run
counts as running from its ``started_at`` to its ``finished_at``, the moment its outcome was
recorded and its slot freed: never shorter than it executed, so the most running at once
(overall, and within one concurrency key) bounds the most executing at once. The rate limit is
held to what its bucket allows in any second: a full bucket and a second's refill
(``burst + rate``).

Where a cost comes from: the worker's claim statement (10 runs of the N queued, nothing to finish,
each execution rolled back; median of 50, as the scale measure times it) before the workers start,
and how many runs a worker transaction moved (``pg_stat_database`` transactions of the drain's
database while its workers ran, start-up and shutdown included, less the benchmark's own polls).

And what the database does per run, without the drain's noise: on one connection per side, the
worker's statement in its steady state, recording the ends of the 20 runs it claimed last time
and claiming 20 more, committed, as the workers run it (generic plans). The limited side and an
unlimited one take turns, statement by statement (STEADY rounds, quick: 100); reported is the
median of the rounds' ratios (limited / unlimited), after a fifth of them as warm-up.

Knobs, to look at one control closely:

- ``BENCH_LIMITS_CASES``: the cases to run, by the start of their names, separated by commas
  (``max_concurrency,rate_limit``); default all.
- ``BENCH_LIMITS_PAIRS``: how many pairs of drains each case runs (default 3; quick: 1).
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from benchmarks import apps, history
from benchmarks.databases import admin, fresh_database
from benchmarks.harness import Bench, wait_until
from benchmarks.processes import pgjobs_worker, processes, register_jobs
from benchmarks.queueing import enqueue_many, queue_empty
from pgjobs import Job
from pgjobs.limits import parse_rate_limit

WORKERS = 2
CONCURRENCY = 10
KEYS = 1_000
CLAIM_LIMIT = 10
CLAIM_REPEAT = 50
UNLIMITED = "drain"
STEADY = 600
STEADY_BATCH = 20


@dataclass(frozen=True)
class Case:
    """A job with one control (the workload ``benchmarks.apps:<app>``) and its target ratio."""

    name: str
    app: str
    target: float
    payload: Callable[[int], Any] | None = None

    @property
    def job(self) -> type[Job]:
        job: type[Job] = getattr(apps, self.app).job
        return job


CASES = (
    Case("max_concurrency=50", "limited_50", 0.9),
    Case(f"concurrency_key, {KEYS:,} keys x 1", "keyed", 0.8, lambda i: {"tenant": i % KEYS}),
    Case("rate_limit=1000000/s", "rated", 0.9),
)

# Runs running at once: +1 at each start, -1 at each finish, a finish first where a start has
# the same instant (a slot handed on, not shared); overall and within each concurrency key.
_DRAINED = """
WITH done AS (
    SELECT started_at, finished_at, coalesce(concurrency_key, '') AS key, worker_id
    FROM pgjobs.runs WHERE status = 'succeeded'
), edges AS (
    SELECT key, started_at AS at, 1 AS delta FROM done
    UNION ALL
    SELECT key, finished_at, -1 FROM done
), running AS (
    SELECT sum(delta) OVER (ORDER BY at, delta ROWS UNBOUNDED PRECEDING) AS overall,
           sum(delta) OVER (PARTITION BY key ORDER BY at, delta ROWS UNBOUNDED PRECEDING) AS in_key
    FROM edges
), per_second AS (
    SELECT count(*) OVER (ORDER BY started_at
                          RANGE BETWEEN CURRENT ROW AND interval '1 second' FOLLOWING) AS started
    FROM done
)
SELECT (SELECT count(*) FROM done),
       (SELECT extract(epoch FROM max(finished_at) - min(started_at))::float8 FROM done),
       (SELECT max(overall) FROM running),
       (SELECT max(in_key) FROM running),
       (SELECT count(DISTINCT key) FROM done),
       (SELECT max(started) FROM per_second),
       (SELECT max(n) FROM (SELECT count(*) AS n FROM done GROUP BY worker_id) w)
"""

_TRANSACTIONS = """
SELECT d.xact_commit + d.xact_rollback,
       (SELECT count(*) FROM pg_stat_activity a WHERE a.datname = d.datname)
FROM pg_stat_database d WHERE d.datname = %s
"""


@dataclass(frozen=True)
class Drained:
    """One drain of ``jobs`` runs of ``job`` and what ``pgjobs.runs`` and the statistics say."""

    job: str
    jobs: int
    succeeded: int
    seconds: float
    most_running: int
    most_running_in_key: int
    keys: int
    most_started_in_1s: int
    busiest_worker_ran: int
    claim_ms: float
    worker_transactions: int

    @property
    def jobs_per_s(self) -> float:
        return self.succeeded / self.seconds if self.seconds else 0.0

    @property
    def busiest_worker_share(self) -> float:
        """The share of the runs that the busiest worker ran, in %."""
        return 100.0 * self.busiest_worker_ran / self.succeeded if self.succeeded else 0.0

    @property
    def runs_per_transaction(self) -> float:
        return self.succeeded / self.worker_transactions if self.worker_transactions else 0.0


def run(bench: Bench, peers: object = None) -> dict[str, Any]:
    jobs = bench.pick(20_000, 500)
    pairs = int(os.environ.get("BENCH_LIMITS_PAIRS") or bench.pick(3, 1))
    settings = f"W={WORKERS} C={CONCURRENCY}"
    cases = []
    for case in _chosen_cases(os.environ.get("BENCH_LIMITS_CASES", "")):
        limited: list[Drained] = []
        unlimited: list[Drained] = []
        for pair in range(pairs):
            # Alternate which side runs first, so that neither always finds the machine warmer.
            for side in (case.app, UNLIMITED) if pair % 2 == 0 else (UNLIMITED, case.app):
                drained = _drain(bench, side, jobs, case.payload)
                (limited if side == case.app else unlimited).append(drained)
        recorded = _record(bench, case, settings, limited, unlimited)
        recorded["statement_ratio"] = _steady_ratio(bench, case, bench.pick(STEADY, 100))
        bench.at("limits", case.name, "pgjobs").add(
            f"statement, finish {STEADY_BATCH} + claim {STEADY_BATCH}",
            recorded["statement_ratio"],
            "x",
            note="of the unlimited statement; one connection each, median of the rounds' ratios",
        )
        cases.append(recorded)
    return {"jobs": jobs, "workers": WORKERS, "concurrency": CONCURRENCY, "cases": cases}


def _chosen_cases(spec: str) -> list[Case]:
    """The cases whose names start with one of ``spec``'s comma-separated words, or all."""
    wanted = [w.strip() for w in spec.split(",") if w.strip()]
    return [c for c in CASES if not wanted or any(c.name.startswith(w) for w in wanted)]


def _record(
    bench: Bench, case: Case, settings: str, limited: list[Drained], unlimited: list[Drained]
) -> dict[str, Any]:
    ratios = [a.jobs_per_s / b.jobs_per_s for a, b in zip(limited, unlimited, strict=True)]
    check = _check(case.job)
    most = max(check.of(d) for d in limited)
    held = most <= check.bound
    figures = {
        "ratio": statistics.median(ratios),
        "ratios": ratios,
        "held": held,
        "check": check.metric,
        "most": most,
        "unlimited_most": max(check.of(d) for d in unlimited),
        "limit": check.bound,
    }
    for name in ("jobs_per_s", "busiest_worker_share", "claim_ms", "runs_per_transaction"):
        figures[name] = statistics.median(getattr(d, name) for d in limited)
        figures[f"unlimited_{name}"] = statistics.median(getattr(d, name) for d in unlimited)

    keys = f"; {min(d.keys for d in limited):,} keys" if case.job.concurrency_key else ""
    recorder = bench.at("limits", case.name, "pgjobs")
    of = f"median of {len(limited)}" if len(limited) > 1 else "1 drain"
    busiest = "busiest worker ran {:.0f} %"
    recorder.add(
        "jobs/s",
        figures["jobs_per_s"],
        "jobs/s",
        "rate",
        note=f"{of}, {settings}; {busiest.format(figures['busiest_worker_share'])}",
    )
    recorder.add(
        "jobs/s unlimited",
        figures["unlimited_jobs_per_s"],
        "jobs/s",
        "rate",
        note=f"{of}, each next to one of these; "
        f"{busiest.format(figures['unlimited_busiest_worker_share'])}",
    )
    pairs = " ".join(f"{r:.2f}" for r in ratios)
    recorder.add("ratio", figures["ratio"], "x", note=f"target >= {case.target:g}; pairs {pairs}")
    recorder.add(
        check.metric,
        most,
        "",
        note=f"limit {check.bound:,}: {'held' if held else 'EXCEEDED'}; "
        f"unlimited {figures['unlimited_most']:,}{keys}",
    )
    recorder.add(
        f"claim {CLAIM_LIMIT} of {limited[0].jobs:,} queued",
        figures["claim_ms"],
        "ms",
        "duration",
        note=f"unlimited {figures['unlimited_claim_ms']:.2f} ms",
    )
    recorder.add(
        "runs per worker transaction",
        figures["runs_per_transaction"],
        "",
        note=f"unlimited {figures['unlimited_runs_per_transaction']:.1f}",
    )
    return {
        "case": case.name,
        "job": case.job.name,
        "target": case.target,
        **figures,
        "limited": [_as_dict(d) for d in limited],
        "unlimited": [_as_dict(d) for d in unlimited],
    }


@dataclass(frozen=True)
class Check:
    """What says a job's limit held in a drain (``of``), and the most it may be (``bound``)."""

    metric: str
    bound: int
    of: Callable[[Drained], int]


def _check(job: type[Job]) -> Check:
    if job.rate_limit is not None:
        bucket = parse_rate_limit(job.rate_limit)
        # A full bucket, then a second's refill.
        bound = int(bucket.burst + bucket.rate)
        return Check("most started in 1 s", bound, lambda d: d.most_started_in_1s)
    assert job.max_concurrency is not None
    if job.concurrency_key is not None:
        return Check(
            "most running at once in a key", job.max_concurrency, lambda d: d.most_running_in_key
        )
    return Check("most running at once", job.max_concurrency, lambda d: d.most_running)


def _as_dict(d: Drained) -> dict[str, Any]:
    return {
        **asdict(d),
        "jobs_per_s": d.jobs_per_s,
        "busiest_worker_share": d.busiest_worker_share,
        "runs_per_transaction": d.runs_per_transaction,
    }


def _drain(bench: Bench, app: str, jobs: int, payload: Callable[[int], Any] | None) -> Drained:
    job = getattr(apps, app).job.name
    with fresh_database(bench.admin_dsn, f"limits_{app}") as dsn, admin(bench.admin_dsn) as stats:
        dbname = str(conninfo_to_dict(dsn)["dbname"])
        register_jobs(dsn, bench.log_dir, app)
        with psycopg.connect(dsn, autocommit=True) as conn:
            enqueue_many(conn, job, jobs, payload)
            conn.execute("ANALYZE pgjobs.runs")
            claim_s = _claim_latency(conn, job)
            # The timed claims' slots and tokens, rolled back, are no drain's to clean up.
            conn.execute("VACUUM pgjobs.run_locks, pgjobs.rate_buckets")
        before = _transactions(stats, dbname)
        polls = 0
        with processes() as started, psycopg.connect(dsn, autocommit=True) as conn:
            for i in range(WORKERS):
                name = f"limits-{app}-{i + 1}-{time.monotonic_ns()}"
                started.append(
                    pgjobs_worker(dsn, bench.log_dir, name, app, concurrency=CONCURRENCY)
                )

            def drained() -> bool:
                nonlocal polls
                for p in started:
                    p.check_alive()
                polls += 1
                return queue_empty(conn)

            wait_until(drained, 120 + jobs / 100, f"{app} workers to drain {jobs} runs", 0.2)
        after = _transactions(stats, dbname)
        with psycopg.connect(dsn, autocommit=True) as conn:
            row = conn.execute(_DRAINED).fetchone()
    assert row is not None
    return Drained(
        job,
        jobs,
        int(row[0]),
        float(row[1] or 0.0),
        int(row[2] or 0),
        int(row[3] or 0),
        int(row[4]),
        int(row[5] or 0),
        int(row[6] or 0),
        claim_s * 1000,
        after - before - polls,
    )


def _steady_ratio(bench: Bench, case: Case, rounds: int) -> float:
    """The worker's statement for ``case``'s job against the same for an unlimited job, in the
    steady state of a drain: each round records the outcomes of the runs the side claimed last
    time and claims ``STEADY_BATCH`` more, one side after the other."""
    _, query = history.claim_query(history.queries())
    sides = (case.app, UNLIMITED)
    times: dict[str, list[float]] = {side: [] for side in sides}
    with contextlib.ExitStack() as stack:
        runs = STEADY_BATCH * (rounds + 1)
        conns = {side: _steady_side(bench, stack, side, runs, case.payload) for side in sides}
        claimed: dict[str, list[int]] = {side: [] for side in sides}
        # As the worker does, a run whose end frees a slot or a run lock waits for its row.
        deferrable: dict[str, list[int]] = {side: [] for side in sides}
        for _ in range(rounds):
            for side in sides:
                job = getattr(apps, side).job.name
                params = history.claim_params(
                    query, [job], STEADY_BATCH, claimed[side], deferrable[side]
                )
                began = time.perf_counter()
                found = conns[side].execute(query, params).fetchall()
                times[side].append(time.perf_counter() - began)
                started = [row for row in found if row[0] == "started"]
                claimed[side] = [row[1] for row in started]
                deferrable[side] = [row[1] for row in started if not row[12]]
    warm = rounds // 5
    return statistics.median(
        a / b for a, b in zip(times[case.app][warm:], times[UNLIMITED][warm:], strict=True)
    )


def _steady_side(
    bench: Bench,
    stack: contextlib.ExitStack,
    app: str,
    runs: int,
    payload: Callable[[int], Any] | None,
) -> psycopg.Connection[Any]:
    """A fresh database with ``app``'s job registered and ``runs`` queued runs of it; a
    connection to it that claims as a worker does."""
    job = getattr(apps, app).job.name
    dsn = stack.enter_context(fresh_database(bench.admin_dsn, f"steady_{app}"))
    register_jobs(dsn, bench.log_dir, app)
    conn = stack.enter_context(psycopg.connect(dsn, autocommit=True))
    history.add_jobs(conn, [job], None)
    enqueue_many(conn, job, runs, payload)
    conn.execute("ANALYZE pgjobs.runs")
    conn.execute("SET plan_cache_mode = force_generic_plan")
    return conn


def _claim_latency(conn: psycopg.Connection[Any], job: str) -> float:
    """Median seconds of the worker's claim statement for ``job``'s queued runs."""
    _, query = history.claim_query(history.queries())
    with conn.transaction(force_rollback=True):
        history.add_jobs(conn, [job], None)
        return history.time_query(
            conn, query, history.claim_params(query, [job], CLAIM_LIMIT), CLAIM_REPEAT
        )


def _transactions(stats: psycopg.Connection[Any], dbname: str) -> int:
    """Transactions of database ``dbname`` so far, once no session is left in it: a backend's
    counts reach ``pg_stat_database`` when it exits, before it leaves ``pg_stat_activity``."""

    def settled() -> list[int]:
        stats.execute("SELECT pg_stat_clear_snapshot()")
        row = stats.execute(_TRANSACTIONS, [dbname]).fetchone()
        assert row is not None
        return [int(row[0])] if row[1] == 0 else []

    return wait_until(settled, 30, f"the sessions of {dbname} to end", 0.05)[0]
