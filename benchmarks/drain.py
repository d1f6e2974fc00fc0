"""drain: N no-op runs enqueued beforehand, drained by W worker processes of concurrency C.

The rate is N divided by the time from the first run's ``started_at`` to the last run's
``finished_at`` (both read from ``pgjobs.runs``), so worker start-up is not counted. With
``--peers``, pgqueuer and procrastinate drain the same N from their own fresh databases.

Three environment variables make a repeated measure of one case cheap:

- ``BENCH_DRAIN_CASES``: the cases to run, ``WxC`` separated by commas (``1x100``); default all.
- ``BENCH_DRAIN_PEERS``: the peers to run beside pgjobs, by name (``pgqueuer``); default all
  that ``--peers`` installed.
- ``BENCH_DRAIN_REPEAT``: how many times each case runs, pgjobs then each peer, one after the
  other (default 1); each round's speed-up is recorded, and their median.
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import asdict
from typing import Any

import psycopg

from benchmarks.databases import fresh_database
from benchmarks.harness import Bench, DrainResult, short, wait_until
from benchmarks.peers import Peer
from benchmarks.processes import pgjobs_worker, processes, register_jobs
from benchmarks.queueing import enqueue_many, queue_empty

CASES = ((1, 10), (2, 10), (1, 100))
JOB = "bench-noop"

_TIMING = """
SELECT count(*) FILTER (WHERE status = 'succeeded'),
       extract(epoch FROM max(finished_at) - min(started_at))::float8
FROM pgjobs.runs
"""


def run(bench: Bench, peers: list[Peer]) -> dict[str, Any]:
    jobs = bench.pick(20_000, 500)
    chosen = _chosen_cases(os.environ.get("BENCH_DRAIN_CASES", ""))
    wanted = {n.strip() for n in os.environ.get("BENCH_DRAIN_PEERS", "").split(",") if n.strip()}
    if wanted:
        peers = [p for p in peers if p.name in wanted]
    repeat = max(1, int(os.environ.get("BENCH_DRAIN_REPEAT", "1")))
    cases: list[dict[str, Any]] = []
    for workers, concurrency in chosen:
        case = f"W={workers} C={concurrency}"
        speedups: dict[str, list[float]] = {}
        for _ in range(repeat):
            results = [drain_pgjobs(bench, workers, concurrency, jobs)]
            for peer in peers:
                try:
                    results.append(peer.drain(bench, workers, concurrency, jobs))
                except Exception as exc:  # a peer failing is reported, not fatal
                    recorder = bench.at("drain", case, peer.label())
                    recorder.add("jobs/s", None, "jobs/s", note=short(exc))
                    cases.append({"case": case, "system": peer.label(), "error": str(exc)})
            for result in results:
                recorder = bench.at("drain", case, result.system)
                recorder.add("jobs/s", result.jobs_per_s, "jobs/s", "rate", note=result.settings)
                cases.append({"case": case, **_as_dict(result)})
            ours = results[0].jobs_per_s
            for theirs in results[1:]:
                if ours and theirs.jobs_per_s:
                    speedup = ours / theirs.jobs_per_s
                    speedups.setdefault(theirs.system, []).append(speedup)
                    recorder = bench.at("drain", case, f"pgjobs / {theirs.system}")
                    recorder.add("speed-up", speedup, "x")
        if repeat > 1:
            for system, ratios in speedups.items():
                spread = ", ".join(f"{r:.2f}" for r in ratios)
                recorder = bench.at("drain", case, f"pgjobs / {system}, median")
                recorder.add("speed-up", statistics.median(ratios), "x", note=spread)
    return {"jobs": jobs, "cases": cases}


def _chosen_cases(spec: str) -> tuple[tuple[int, int], ...]:
    """The cases ``BENCH_DRAIN_CASES`` names (``1x100,2x10``), or all of :data:`CASES`."""
    if not spec.strip():
        return CASES
    chosen = []
    for item in spec.split(","):
        workers, _, concurrency = item.strip().lower().partition("x")
        chosen.append((int(workers), int(concurrency)))
    return tuple(chosen)


def _as_dict(result: DrainResult) -> dict[str, Any]:
    return {**asdict(result), "jobs_per_s": result.jobs_per_s}


def drain_pgjobs(bench: Bench, workers: int, concurrency: int, jobs: int) -> DrainResult:
    label = f"drain_w{workers}_c{concurrency}"
    with fresh_database(bench.admin_dsn, label) as dsn:
        register_jobs(dsn, bench.log_dir, "drain")
        with psycopg.connect(dsn, autocommit=True) as conn:
            enqueue_many(conn, JOB, jobs)
            conn.execute("ANALYZE pgjobs.runs")
            with processes() as started:
                for i in range(workers):
                    name = f"{label}-{i + 1}-{time.monotonic_ns()}"
                    started.append(
                        pgjobs_worker(dsn, bench.log_dir, name, "drain", concurrency=concurrency)
                    )

                def drained() -> bool:
                    for p in started:
                        p.check_alive()
                    return queue_empty(conn)

                wait_until(drained, 120 + jobs / 100, f"pgjobs to drain {jobs} runs", 0.2)
            row = conn.execute(_TIMING).fetchone()
    assert row is not None
    return DrainResult(
        "pgjobs", workers, concurrency, jobs, int(row[0]), row[1], f"--concurrency {concurrency}"
    )
