"""scale: many schedules, and claiming with a long history.

Ticks: 10,000 jobs firing every minute (quick: 500 jobs every 15 s) on 4 worker replicas. For one
tick after all replicas are up: the time from the tick until all its runs are materialised —
seen committed by a poller (every 20 ms), and by ``max(created_at)`` — and until all have started
(``max(started_at)``), with the rate at which they started. Runs that have not all started
after 10 minutes (quick: 2) are reported as the share that had. The start rate is set against the
drain rate of one worker of concurrency 10 (``drain`` W=1 C=10, 20,000 runs; quick: 500),
measured right before and right after the ticks in the same run: the ratio to their mean, and to
each. Per replica, how many of the tick's runs it started and in what span, for where the time
goes.

Claim latency: the median of 50 executions of the worker's claim statement (10 runs each, each
rolled back so all see the same 1,000 queued runs), on an empty history and after 1,000,000
finished runs (quick: 50,000) were added with ``INSERT … SELECT generate_series`` and ``VACUUM
ANALYZE``; the ratio of the two.
"""

from __future__ import annotations

import contextlib
import math
import time
from datetime import UTC, datetime
from typing import Any

import psycopg

from benchmarks import history
from benchmarks.databases import fresh_database
from benchmarks.drain import drain_pgjobs
from benchmarks.harness import Bench, wait_until
from benchmarks.processes import pgjobs_worker, processes, wait_registered

REPLICAS = 4
DRAIN_WORKERS = 1
DRAIN_CONCURRENCY = 10
CLAIM_QUEUED = 1_000
CLAIM_LIMIT = 10
CLAIM_REPEAT = 50

_SEEN = """
SELECT count(*), clock_timestamp()
FROM pgjobs.runs WHERE trigger = 'schedule' AND scheduled_for = %s
"""

_STARTED = """
SELECT count(started_at) FROM pgjobs.runs WHERE trigger = 'schedule' AND scheduled_for = %s
"""

_TIMES = """
SELECT count(*), count(started_at),
       extract(epoch FROM max(created_at) - %(tick)s)::float8,
       extract(epoch FROM max(started_at) - %(tick)s)::float8,
       extract(epoch FROM max(started_at) - min(started_at))::float8
FROM pgjobs.runs WHERE trigger = 'schedule' AND scheduled_for = %(tick)s
"""

_PER_REPLICA = """
SELECT worker_id, count(*) FILTER (WHERE started_at IS NOT NULL),
       count(*) FILTER (WHERE status = 'skipped'),
       extract(epoch FROM min(started_at) - %(tick)s)::float8,
       extract(epoch FROM max(started_at) - %(tick)s)::float8
FROM pgjobs.runs WHERE trigger = 'schedule' AND scheduled_for = %(tick)s
GROUP BY worker_id ORDER BY worker_id
"""


def run(bench: Bench, peers: object = None) -> dict[str, Any]:
    return {"ticks": _ticks_against_drain(bench), "claim_latency": _claim_latency(bench)}


def _ticks_against_drain(bench: Bench) -> dict[str, Any]:
    """The ticks, between two drains of one worker of concurrency 10: the start rate as a share
    of the drain rate, measured minutes apart on the same server (the machine's speed drifts)."""
    drained = bench.pick(20_000, 500)
    before = drain_pgjobs(bench, DRAIN_WORKERS, DRAIN_CONCURRENCY, drained).jobs_per_s
    ticks = _ticks(bench)
    after = drain_pgjobs(bench, DRAIN_WORKERS, DRAIN_CONCURRENCY, drained).jobs_per_s
    rate = ticks["start_rate_jobs_per_s"]
    drains = [d for d in (before, after) if d]
    mean = sum(drains) / len(drains) if drains else None
    ratio = rate / mean if rate and mean else None
    recorder = bench.at("scale", ticks["case"], "pgjobs")
    case = f"W={DRAIN_WORKERS} C={DRAIN_CONCURRENCY}"
    recorder.add(f"drain {case} before", before, "jobs/s", "rate", note=f"{drained:,} runs")
    recorder.add(f"drain {case} after", after, "jobs/s", "rate", note=f"{drained:,} runs")
    recorder.add(
        "start rate / drain",
        ratio,
        "x",
        note="to the mean of the drains before and after; target >= 0.9; "
        + " / ".join("n/a" if not (rate and d) else f"{rate / d:.2f}" for d in (before, after))
        + " to each",
    )
    return {
        **ticks,
        "drain": {
            "workers": DRAIN_WORKERS,
            "concurrency": DRAIN_CONCURRENCY,
            "jobs": drained,
            "before_jobs_per_s": before,
            "after_jobs_per_s": after,
        },
        "start_rate_to_drain": ratio,
    }


def _ticks(bench: Bench) -> dict[str, Any]:
    jobs = bench.pick(10_000, 500)
    period = bench.pick(60, 15)
    patience = bench.pick(600.0, 120.0)
    schedule = "0 * * * * *" if period == 60 else f"*/{period} * * * * *"
    env = {"BENCH_JOBS": str(jobs), "BENCH_SCHEDULE": schedule}
    case = f"{jobs:,} jobs '{schedule}', {REPLICAS} replicas"
    seen: dict[str, float] = {}
    with fresh_database(bench.admin_dsn, "scale") as dsn, processes() as started:
        for i in range(REPLICAS):
            name = f"scale-{i + 1}-{time.monotonic_ns()}"
            started.append(pgjobs_worker(dsn, bench.log_dir, name, "scale", env=env))
        began = time.monotonic()
        wait_registered(dsn, started, timeout=600)
        registration = time.monotonic() - began
        with psycopg.connect(dsn, autocommit=True) as conn:
            now = _db_epoch(conn)
            # The first tick at least 3 s away, so every replica is in its loop when it comes.
            tick_epoch = math.ceil((now + 3) / period) * period
            tick = datetime.fromtimestamp(tick_epoch, UTC)
            time.sleep(max(0.0, tick_epoch - _db_epoch(conn) - 0.5))

            def materialised() -> bool:
                for p in started:
                    p.check_alive()
                row = conn.execute(_SEEN, [tick]).fetchone()
                assert row is not None
                count, at = row
                if count >= jobs:
                    seen["materialised"] = at.timestamp() - tick_epoch
                return bool(count >= jobs)

            def every_run_started() -> bool:
                for p in started:
                    p.check_alive()
                row = conn.execute(_STARTED, [tick]).fetchone()
                return bool(row and row[0] >= jobs)

            # Materialisation is timed by this poller, so it polls every 20 ms; the starts are
            # timed by started_at, so a slower poll only notices the end, and steals less of the
            # CPU the replicas are using (counting 10,000 rows 50 times a second would).
            # Past the patience, the share that started in time is reported.
            with contextlib.suppress(TimeoutError):
                wait_until(materialised, patience, f"{jobs} ticks to be materialised", 0.02)
                wait_until(every_run_started, patience, f"{jobs} ticks to start", 0.25)
            row = conn.execute(_TIMES, {"tick": tick}).fetchone()
            replicas = conn.execute(_PER_REPLICA, {"tick": tick}).fetchall()
    assert row is not None
    count, started_count, created_s, started_s, spread_s = row
    start_rate = started_count / spread_s if spread_s else None
    late = f"{started_count:,} of {jobs:,} started within {patience:.0f}s"
    recorder = bench.at("scale", case, "pgjobs")
    recorder.add(
        "materialised (seen committed)",
        seen.get("materialised"),
        "s",
        "duration",
        note="" if "materialised" in seen else f"{count:,} of {jobs:,} within {patience:.0f}s",
    )
    recorder.add("materialised (max created_at)", created_s, "s", "duration")
    all_started = started_count >= jobs
    recorder.add(
        "all started (max started_at)",
        started_s if all_started else None,
        "s",
        "duration",
        note="" if all_started else late,
    )
    recorder.add("start rate", start_rate, "jobs/s", "rate")
    per_replica = [
        {"worker": w, "started": n, "skipped": skipped, "first_s": first, "last_s": last}
        for w, n, skipped, first, last in replicas
    ]
    recorder.add(
        "replicas that started runs",
        sum(1 for r in per_replica if r["started"]),
        "",
        note=" ".join(
            f"{r['started']:,} ({r['first_s'] or 0:.2f}-{r['last_s'] or 0:.2f}s)"
            for r in per_replica
        ),
    )
    return {
        "case": case,
        "jobs": jobs,
        "schedule": schedule,
        "replicas": REPLICAS,
        "registration_s": registration,
        "tick": tick.isoformat(),
        "runs": count,
        "started": started_count,
        "patience_s": patience,
        "materialised_seen_s": seen.get("materialised"),
        "materialised_created_at_s": created_s,
        "started_s": started_s if all_started else None,
        "start_rate_jobs_per_s": start_rate,
        "per_replica": per_replica,
    }


def _claim_latency(bench: Bench) -> dict[str, Any]:
    finished = bench.pick(1_000_000, 50_000)
    jobs = history.job_names(20)
    name, query = history.claim_query(history.queries())
    params = history.claim_params(query, jobs, CLAIM_LIMIT)
    case = f"claim {CLAIM_LIMIT} of {CLAIM_QUEUED:,} queued"
    with (
        fresh_database(bench.admin_dsn, "claim") as dsn,
        psycopg.connect(dsn, autocommit=True) as conn,
    ):
        history.add_jobs(conn, jobs, None)
        history.add_queued_runs(conn, jobs, CLAIM_QUEUED)
        history.vacuum_analyze(conn)
        empty = history.time_query(conn, query, params, CLAIM_REPEAT)
        began = time.monotonic()
        history.add_finished_runs(conn, jobs, finished)
        history.vacuum_analyze(conn)
        load_s = time.monotonic() - began
        loaded = history.time_query(conn, query, params, CLAIM_REPEAT)
    recorder = bench.at("scale", case, "pgjobs")
    recorder.add("claim, empty history", empty * 1000, "ms", "duration", note=name)
    recorder.add(f"claim, {finished:,} finished", loaded * 1000, "ms", "duration", note=name)
    recorder.add("claim latency ratio", loaded / empty, "x")
    return {
        "query": name,
        "queued": CLAIM_QUEUED,
        "limit": CLAIM_LIMIT,
        "repeat": CLAIM_REPEAT,
        "finished": finished,
        "load_s": load_s,
        "empty_ms": empty * 1000,
        "loaded_ms": loaded * 1000,
        "ratio": loaded / empty,
    }


def _db_epoch(conn: psycopg.Connection[Any]) -> float:
    row = conn.execute("SELECT extract(epoch FROM clock_timestamp())::float8").fetchone()
    assert row is not None
    return float(row[0])
