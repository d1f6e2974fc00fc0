"""workflows: what waiting for other runs costs a drain, and how soon a fan-in starts.

Chains: N = 20,000 runs of the no-op job (quick: 500) arranged as 200 chains of 100 runs (quick:
50 chains of 10), each run ``after`` the one before it in its chain, all enqueued with
``enqueue_many`` before the workers start; against the same N runs enqueued independent. Both are
drained by W = 2 worker processes of concurrency C = 10 (the drain measure's ``W=2 C=10``), each
drain in a fresh database. At most one run of a chain can run at a time, so 200 chains keep far
more runs queued than the 20 slots take: what the chains cost is the work of the queue (the
edges, the release or hand-off of each next run by the statement that records its predecessor's
end, the workers' load of ``ctx.dependencies``), not a lack of runnable runs. 3 pairs (quick:
1), the pair's order alternating; reported are the median rate of each side and the median of the
pairs' ratios (chains / independent) with the target (>= 0.7). The rate is N divided by the first
``started_at`` to the last ``finished_at``, read from ``pgjobs.runs``.

Fan-in: 10,000 runs (quick: 500) and one run ``after`` all of them, enqueued in one
``enqueue_many`` and drained by the same workers; the figure is the time from the last of the
10,000 runs' ``finished_at`` to the fan-in's ``started_at``: the release, the wake-up and the
claim, and the fan-in's load of its 10,000 dependencies. 3 fan-ins (quick: 1), the median.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import psycopg

import pgjobs
from benchmarks.databases import fresh_database
from benchmarks.harness import Bench, wait_until
from benchmarks.processes import pgjobs_worker, processes, register_jobs

WORKERS = 2
CONCURRENCY = 10
JOB = "bench-noop"
TARGET = 0.7
#: Requests per ``enqueue_many`` call (whole chains), all in one transaction.
ENQUEUE_BATCH = 2_000

_DRAINED = """
SELECT NOT EXISTS (SELECT 1 FROM pgjobs.runs WHERE status = 'queued')
   AND NOT EXISTS (SELECT 1 FROM pgjobs.runs WHERE status = 'running')
   AND NOT EXISTS (SELECT 1 FROM pgjobs.runs WHERE status = 'blocked')
"""

_TIMING = """
SELECT count(*) FILTER (WHERE status = 'succeeded'),
       extract(epoch FROM max(finished_at) - min(started_at))::float8
FROM pgjobs.runs
"""

_FAN_IN = """
SELECT extract(epoch FROM (SELECT started_at FROM pgjobs.runs WHERE id = %(fan_in)s)
                          - (SELECT max(finished_at) FROM pgjobs.runs WHERE id <> %(fan_in)s))
           ::float8,
       (SELECT status FROM pgjobs.runs WHERE id = %(fan_in)s)
"""


def run(bench: Bench, peers: object = None) -> dict[str, Any]:
    chains, length = bench.pick((200, 100), (50, 10))
    runs = chains * length
    pairs = bench.pick(3, 1)
    settings = f"W={WORKERS} C={CONCURRENCY}"
    chained: list[float] = []
    independent: list[float] = []
    for pair in range(pairs):
        # Alternate which side runs first, so that neither always finds the machine warmer.
        for side in ("chains", "independent") if pair % 2 == 0 else ("independent", "chains"):
            if side == "chains":
                chained.append(_drain(bench, _chain_requests(chains, length), "chains"))
            else:
                independent.append(_drain(bench, [[{"job": JOB}] * runs], "independent"))
    ratios = [a / b for a, b in zip(chained, independent, strict=True)]
    ratio = statistics.median(ratios)
    case = f"{chains} chains x {length}"
    recorder = bench.at("workflows", case, "pgjobs")
    of = f"median of {pairs}" if pairs > 1 else "1 drain"
    recorder.add("jobs/s", statistics.median(chained), "jobs/s", "rate", note=f"{of}, {settings}")
    recorder.add(
        "jobs/s independent",
        statistics.median(independent),
        "jobs/s",
        "rate",
        note=f"{of}, the same {runs:,} runs without dependencies, each next to one of these",
    )
    shown = " ".join(f"{r:.2f}" for r in ratios)
    recorder.add("ratio", ratio, "x", note=f"target >= {TARGET:g}; pairs {shown}")

    fan_out = bench.pick(10_000, 500)
    gaps = [_fan_in(bench, fan_out) for _ in range(bench.pick(3, 1))]
    bench.at("workflows", f"fan-in after {fan_out:,}", "pgjobs").add(
        "last fan-out finish -> fan-in start",
        statistics.median(gaps) * 1000,
        "ms",
        "duration",
        note=f"{settings}; " + " ".join(f"{g * 1000:.1f}" for g in gaps) + " ms",
    )
    return {
        "workers": WORKERS,
        "concurrency": CONCURRENCY,
        "chains": chains,
        "length": length,
        "runs": runs,
        "chains_jobs_per_s": chained,
        "independent_jobs_per_s": independent,
        "ratios": ratios,
        "ratio": ratio,
        "target": TARGET,
        "fan_out": fan_out,
        "fan_in_seconds": gaps,
    }


def _chain_requests(chains: int, length: int) -> list[list[dict[str, Any]]]:
    """The calls of ``enqueue_many``: whole chains, about ENQUEUE_BATCH runs a call; each run
    after the one before it in its chain (keys are local to a call)."""
    per_call = max(1, ENQUEUE_BATCH // length)
    calls = []
    for first in range(0, chains, per_call):
        calls.append(
            [
                {"job": JOB, "key": f"{c}.{i}", "after": [f"{c}.{i - 1}"] if i else []}
                for c in range(first, min(chains, first + per_call))
                for i in range(length)
            ]
        )
    return calls


def _drain(bench: Bench, calls: list[list[dict[str, Any]]], label: str) -> float:
    """Enqueue ``calls`` in one transaction into a fresh database, drain them; the rate."""
    runs = sum(len(c) for c in calls)
    with fresh_database(bench.admin_dsn, f"workflows_{label}") as dsn:
        register_jobs(dsn, bench.log_dir, "drain")
        with psycopg.connect(dsn, autocommit=True) as conn:
            with conn.transaction():
                for requests in calls:
                    pgjobs.enqueue_many_sync(conn, requests)
            conn.execute("ANALYZE pgjobs.runs")
            _drain_with_workers(bench, dsn, conn, label, runs)
            row = conn.execute(_TIMING).fetchone()
    assert row is not None
    succeeded, seconds = int(row[0]), float(row[1] or 0.0)
    if succeeded != runs:
        raise RuntimeError(f"{label}: {succeeded} of {runs} runs succeeded")
    return succeeded / seconds if seconds else 0.0


def _fan_in(bench: Bench, fan_out: int) -> float:
    """Seconds from the last of ``fan_out`` runs' finish to the start of the run after them."""
    requests: list[dict[str, Any]] = [{"job": JOB, "key": f"out{i}"} for i in range(fan_out)]
    requests.append({"job": JOB, "after": [f"out{i}" for i in range(fan_out)]})
    with fresh_database(bench.admin_dsn, "workflows_fan_in") as dsn:
        register_jobs(dsn, bench.log_dir, "drain")
        with psycopg.connect(dsn, autocommit=True) as conn:
            with conn.transaction():
                fan_in = pgjobs.enqueue_many_sync(conn, requests)[-1]
            conn.execute("ANALYZE pgjobs.runs")
            _drain_with_workers(bench, dsn, conn, "fan-in", fan_out + 1)
            row = conn.execute(_FAN_IN, {"fan_in": fan_in}).fetchone()
    assert row is not None
    if row[1] != "succeeded":
        raise RuntimeError(f"the fan-in run ended {row[1]}")
    return float(row[0])


def _drain_with_workers(
    bench: Bench, dsn: str, conn: psycopg.Connection[Any], label: str, runs: int
) -> None:
    with processes() as started:
        for i in range(WORKERS):
            name = f"workflows-{label}-{i + 1}-{time.monotonic_ns()}"
            started.append(
                pgjobs_worker(dsn, bench.log_dir, name, "drain", concurrency=CONCURRENCY)
            )

        def drained() -> bool:
            for p in started:
                p.check_alive()
            row = conn.execute(_DRAINED).fetchone()
            return bool(row and row[0])

        wait_until(drained, 120 + runs / 100, f"workers to drain {runs} runs ({label})", 0.2)
