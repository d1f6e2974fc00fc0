"""enqueue: one enqueue per transaction, and ``enqueue_many`` of 20,000 runs in one.

Single: as many client processes as pgbench's baseline has clients (4), each with a connection
of its own, each calling ``enqueue_sync`` in a loop, one call per transaction, for 10 s (quick:
2 s); their total rate is set against pgbench's TPS from the same number of clients. Two ways:
on an autocommit connection, where the call is its transaction (one round trip: how an
application enqueues outside a transaction of its own), and inside ``BEGIN`` … ``COMMIT`` (three
round trips: how it enqueues as part of its own work). Then the autocommit way from one client.
Processes, not threads, so that the clients' Python code runs in parallel as pgbench's clients
do. Each client enqueues a few runs first (psycopg prepares the statement on its fifth
execution), and all start their timed loop together. Many: one ``enqueue_many_sync`` of 20,000
runs (quick: 2,000), timed to its commit. No worker runs meanwhile.
"""

from __future__ import annotations

import multiprocessing
import queue
import time
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from typing import Any

import psycopg

from benchmarks.baseline import CLIENTS
from benchmarks.databases import fresh_database
from benchmarks.harness import Bench
from benchmarks.processes import register_jobs
from benchmarks.queueing import enqueue_autocommit, enqueue_in_transaction, enqueue_many

JOB = "bench-noop"
WARM_UP = 10  # enqueues per client before timing: connection, catalog caches, prepared plan
_START_TIMEOUT = 120.0  # seconds for every client to connect and warm up


def run(bench: Bench, peers: object = None) -> dict[str, Any]:
    seconds = bench.pick(10.0, 2.0)
    many = bench.pick(20_000, 2_000)
    single: list[dict[str, Any]] = []
    with fresh_database(bench.admin_dsn, "enqueue") as dsn:
        register_jobs(dsn, bench.log_dir, "drain")
        for clients, explicit in ((CLIENTS, False), (CLIENTS, True), (1, False)):
            jobs, elapsed = enqueue_from_clients(dsn, clients, seconds, explicit=explicit)
            rate = jobs / elapsed
            how = "BEGIN/COMMIT" if explicit else "autocommit"
            case = f"single, {clients} client{'s' if clients > 1 else ''}, {how}"
            recorder = bench.at("enqueue", case, "pgjobs")
            recorder.add("jobs/s", rate, "jobs/s", "rate", note="enqueue_sync, 1 per transaction")
            single.append(
                {
                    "api": "enqueue_sync",
                    "clients": clients,
                    "transaction": how,
                    "jobs": jobs,
                    "seconds": elapsed,
                    "jobs_per_s": rate,
                }
            )

        with psycopg.connect(dsn, autocommit=True) as conn:
            began = time.perf_counter()
            enqueue_many(conn, JOB, many)
            many_elapsed = time.perf_counter() - began

    many_rate = many / many_elapsed
    batch = bench.at("enqueue", f"enqueue_many {many:,}", "pgjobs")
    batch.add("jobs/s", many_rate, "jobs/s", "rate", note="enqueue_many_sync")
    return {
        "single": single,
        "many": {
            "api": "enqueue_many_sync",
            "jobs": many,
            "seconds": many_elapsed,
            "jobs_per_s": many_rate,
        },
    }


def enqueue_from_clients(
    dsn: str, clients: int, seconds: float, *, explicit: bool
) -> tuple[int, float]:
    """``clients`` processes each enqueue one run per transaction for ``seconds``, all starting
    together, each call in ``BEGIN`` … ``COMMIT`` if ``explicit``; (runs enqueued in all, seconds
    from the first start to the last finish)."""
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no inherited sockets
    start = context.Barrier(clients)
    results = context.Queue()
    children = [
        context.Process(target=_client, args=(dsn, seconds, explicit, start, results), daemon=True)
        for _ in range(clients)
    ]
    for child in children:
        child.start()
    try:
        reports = [_report(results, children, _START_TIMEOUT + seconds) for _ in children]
    finally:
        for child in children:
            if child.is_alive():
                child.terminate()
            child.join(10)
    jobs = sum(count for count, _, _ in reports)
    elapsed = max(ended for _, _, ended in reports) - min(began for _, began, _ in reports)
    return jobs, elapsed


def _report(results: Queue[Any], children: list[Any], timeout: float) -> tuple[int, float, float]:
    try:
        report = results.get(timeout=timeout)
    except queue.Empty:
        codes = [child.exitcode for child in children]
        raise RuntimeError(f"enqueue clients did not report (exit codes {codes})") from None
    if isinstance(report, str):
        raise RuntimeError(f"an enqueue client failed: {report}")
    count, began, ended = report
    return int(count), float(began), float(ended)


def _client(dsn: str, seconds: float, explicit: bool, start: Barrier, results: Queue[Any]) -> None:
    """One client: warm up, wait for the others, then enqueue until ``seconds`` have passed."""
    enqueue_one = enqueue_in_transaction if explicit else enqueue_autocommit
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            for _ in range(WARM_UP):
                enqueue_one(conn, JOB)
            start.wait(_START_TIMEOUT)
            count = 0
            began = time.monotonic()  # CLOCK_MONOTONIC: comparable across processes
            deadline = began + seconds
            while time.monotonic() < deadline:
                enqueue_one(conn, JOB)
                count += 1
            results.put((count, began, time.monotonic()))
    except Exception as exc:
        results.put(f"{type(exc).__name__}: {exc}")
        start.abort()
