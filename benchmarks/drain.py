"""drain: N no-op runs enqueued beforehand, drained by W worker processes of concurrency C.

The rate is N divided by the time from the first run's ``started_at`` to the last run's
``finished_at`` (both read from ``pgjobs.runs``), so worker start-up is not counted. With
``--peers``, pgqueuer and procrastinate drain the same N from their own fresh databases.
"""

from __future__ import annotations

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
    cases: list[dict[str, Any]] = []
    for workers, concurrency in CASES:
        case = f"W={workers} C={concurrency}"
        results = [drain_pgjobs(bench, workers, concurrency, jobs)]
        for peer in peers:
            try:
                results.append(peer.drain(bench, workers, concurrency, jobs))
            except Exception as exc:  # a peer failing is reported, not fatal
                bench.at("drain", case, peer.label()).add("jobs/s", None, "jobs/s", note=short(exc))
                cases.append({"case": case, "system": peer.label(), "error": str(exc)})
        for result in results:
            recorder = bench.at("drain", case, result.system)
            recorder.add("jobs/s", result.jobs_per_s, "jobs/s", "rate", note=result.settings)
            cases.append({"case": case, **_as_dict(result)})
        ours = results[0].jobs_per_s
        for theirs in results[1:]:
            if ours and theirs.jobs_per_s:
                recorder = bench.at("drain", case, f"pgjobs / {theirs.system}")
                recorder.add("speed-up", ours / theirs.jobs_per_s, "x")
    return {"jobs": jobs, "cases": cases}


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
