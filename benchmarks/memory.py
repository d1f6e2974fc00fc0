"""memory: one worker's resident memory (VmRSS from /proc) idle after start, and after it ran
100,000 no-op runs (quick: 2,000); the growth in percent, and the peak (VmHWM)."""

from __future__ import annotations

import time
from typing import Any

import psycopg

from benchmarks.databases import fresh_database
from benchmarks.harness import Bench, wait_until
from benchmarks.processes import pgjobs_worker, processes, wait_registered
from benchmarks.queueing import enqueue_many, queue_empty

JOB = "bench-noop"
SETTLE = 2.0


def run(bench: Bench, peers: object = None) -> dict[str, Any]:
    jobs = bench.pick(100_000, 2_000)
    with fresh_database(bench.admin_dsn, "memory") as dsn, processes() as started:
        worker = pgjobs_worker(dsn, bench.log_dir, f"memory-{time.monotonic_ns()}", "drain")
        started.append(worker)
        wait_registered(dsn, started)
        time.sleep(SETTLE)
        idle_kib = worker.rss_kib()
        with psycopg.connect(dsn, autocommit=True) as conn:
            enqueue_many(conn, JOB, jobs)

            def drained() -> bool:
                worker.check_alive()
                return queue_empty(conn)

            wait_until(drained, 120 + jobs / 100, f"the worker to run {jobs} runs", 0.5)
        time.sleep(SETTLE)
        after_kib = worker.rss_kib()
        peak_kib = worker.hwm_kib()

    growth = (after_kib - idle_kib) * 100.0 / idle_kib
    recorder = bench.at("memory", f"1 worker, {jobs:,} runs", "pgjobs")
    recorder.add("RSS idle", idle_kib / 1024, "MiB")
    recorder.add("RSS after", after_kib / 1024, "MiB")
    recorder.add("RSS growth", growth, "%")
    recorder.add("RSS peak", peak_kib / 1024, "MiB")
    return {
        "jobs": jobs,
        "rss_idle_mib": idle_kib / 1024,
        "rss_after_mib": after_kib / 1024,
        "rss_peak_mib": peak_kib / 1024,
        "growth_percent": growth,
    }
