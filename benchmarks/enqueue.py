"""enqueue: one enqueue per transaction, and ``enqueue_many`` of 20,000 runs in one.

Single: one process, one connection, a loop of ``enqueue_sync`` in a transaction of its own
(BEGIN, the insert, COMMIT) for ~5 s (quick: 2 s); its rate is set against pgbench's TPS, a
transaction of about the same weight. Many: one ``enqueue_many_sync`` of 20,000 runs (quick:
2,000), timed to its commit. No worker runs meanwhile.
"""

from __future__ import annotations

import time
from typing import Any

import psycopg

from benchmarks.databases import fresh_database
from benchmarks.harness import Bench
from benchmarks.processes import register_jobs
from benchmarks.queueing import enqueue_many, enqueue_one

JOB = "bench-noop"


def run(bench: Bench, peers: object = None) -> dict[str, Any]:
    seconds = bench.pick(5.0, 2.0)
    many = bench.pick(20_000, 2_000)
    with fresh_database(bench.admin_dsn, "enqueue") as dsn:
        register_jobs(dsn, bench.log_dir, "drain")
        with psycopg.connect(dsn, autocommit=True) as conn:
            enqueue_one(conn, JOB)  # warm up: connection, catalog caches, prepared plans
            count = 0
            began = time.perf_counter()
            deadline = began + seconds
            while time.perf_counter() < deadline:
                enqueue_one(conn, JOB)
                count += 1
            single_elapsed = time.perf_counter() - began

            began = time.perf_counter()
            enqueue_many(conn, JOB, many)
            many_elapsed = time.perf_counter() - began

    single_rate = count / single_elapsed
    many_rate = many / many_elapsed
    one = bench.at("enqueue", "1 per transaction", "pgjobs")
    one.add("jobs/s", single_rate, "jobs/s", "rate", note="enqueue_sync")
    batch = bench.at("enqueue", f"enqueue_many {many:,}", "pgjobs")
    batch.add("jobs/s", many_rate, "jobs/s", "rate", note="enqueue_many_sync")
    return {
        "single": {
            "api": "enqueue_sync",
            "jobs": count,
            "seconds": single_elapsed,
            "jobs_per_s": single_rate,
        },
        "many": {
            "api": "enqueue_many_sync",
            "jobs": many,
            "seconds": many_elapsed,
            "jobs_per_s": many_rate,
        },
    }
