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

The 4-client autocommit case, the headline, also runs in three rounds, each between two runs of
pgbench -N of the same length on a scratch database of the same server: each round's rate is set
against the mean of the pgbench runs right before and after it, and the median of the three
ratios is reported with each round's figures.

The floor of that headline: the same 4 clients, each running a plain prepared ``INSERT`` of one
queued run through psycopg alone (no pgjobs code on the client; the runs table, its trigger and
its indexes as for an enqueue), between two runs of pgbench -N, reported as its own ratio and as
the share of it that ``enqueue_sync`` reaches. What separates the floor from pgbench is the
Python client and the table; what separates the headline from the floor is pgjobs' client code
and its enqueue statement.
"""

from __future__ import annotations

import multiprocessing
import queue
import statistics
import time
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from typing import Any

import psycopg

from benchmarks.baseline import CLIENTS, pgbench_beside
from benchmarks.databases import fresh_database
from benchmarks.harness import Bench
from benchmarks.processes import register_jobs
from benchmarks.queueing import (
    enqueue_autocommit,
    enqueue_in_transaction,
    enqueue_many,
    insert_plain,
)

JOB = "bench-noop"
WARM_UP = 10  # enqueues per client before timing: connection, catalog caches, prepared plan
ROUNDS = 3  # rounds of the 4-client autocommit case, each between two pgbench runs
_START_TIMEOUT = 120.0  # seconds for every client to connect and warm up


def run(bench: Bench, peers: object = None) -> dict[str, Any]:
    seconds = bench.pick(10.0, 2.0)
    many = bench.pick(20_000, 2_000)
    single: list[dict[str, Any]] = []
    with fresh_database(bench.admin_dsn, "enqueue") as dsn:
        register_jobs(dsn, bench.log_dir, "drain")
        for clients, explicit in ((CLIENTS, False), (CLIENTS, True), (1, False)):
            if (clients, explicit) == (CLIENTS, False):
                rate, beside = _beside_pgbench(bench, dsn, seconds)
                jobs, elapsed = int(rate * seconds), seconds
            else:
                jobs, elapsed = enqueue_from_clients(dsn, clients, seconds, explicit=explicit)
                rate, beside = jobs / elapsed, None
            how = "BEGIN/COMMIT" if explicit else "autocommit"
            case = f"single, {clients} client{'s' if clients > 1 else ''}, {how}"
            recorder = bench.at("enqueue", case, "pgjobs")
            recorder.add("jobs/s", rate, "jobs/s", "rate", note="enqueue_sync, 1 per transaction")
            if beside is not None:
                recorder.add("x pgbench beside", beside["ratio"], "x", note=beside["note"])
            single.append(
                {
                    "api": "enqueue_sync",
                    "clients": clients,
                    "transaction": how,
                    "jobs": jobs,
                    "seconds": elapsed,
                    "jobs_per_s": rate,
                    **({"beside_pgbench": beside} if beside is not None else {}),
                }
            )

        plain = _plain_floor(bench, dsn, seconds)
        headline = single[0]["jobs_per_s"]
        floor = bench.at("enqueue", f"single, {CLIENTS} clients, plain psycopg INSERT", "pgjobs")
        floor.add("jobs/s", plain["jobs_per_s"], "jobs/s", "rate", note="no pgjobs client code")
        floor.add("x pgbench beside", plain["ratio"], "x", note=plain["note"])
        floor.add(
            "enqueue_sync / plain INSERT",
            headline / plain["jobs_per_s"],
            "x",
            note="the 4-client autocommit headline against this floor",
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
        "plain_insert": plain,
        "many": {
            "api": "enqueue_many_sync",
            "jobs": many,
            "seconds": many_elapsed,
            "jobs_per_s": many_rate,
        },
    }


def _beside_pgbench(bench: Bench, dsn: str, seconds: float) -> tuple[float, dict[str, Any]]:
    """The 4-client autocommit rate, in ``ROUNDS`` rounds, each between two pgbench runs of the
    same length: (the median rate; each round's ratio to the mean of the pgbench runs around it,
    and their median)."""
    rounds = []
    with pgbench_beside(bench) as pgbench:
        tps = [pgbench(seconds)]
        for _ in range(ROUNDS):
            jobs, elapsed = enqueue_from_clients(dsn, CLIENTS, seconds, explicit=False)
            tps.append(pgbench(seconds))
            rate = jobs / elapsed
            rounds.append(
                {
                    "jobs_per_s": rate,
                    "pgbench_before": tps[-2],
                    "pgbench_after": tps[-1],
                    "ratio": rate / ((tps[-2] + tps[-1]) / 2),
                }
            )
    ratio = statistics.median(r["ratio"] for r in rounds)
    shown = ", ".join(
        f"{r['jobs_per_s']:,.0f} vs {r['pgbench_before']:,.0f}/{r['pgbench_after']:,.0f} tps"
        f" ({r['ratio']:.2f})"
        for r in rounds
    )
    note = f"median of {ROUNDS} rounds, each between pgbench runs: {shown}; target >= 0.9"
    return statistics.median(r["jobs_per_s"] for r in rounds), {
        "ratio": ratio,
        "rounds": rounds,
        "note": note,
    }


def _plain_floor(bench: Bench, dsn: str, seconds: float) -> dict[str, Any]:
    """The 4 clients' rate of plain INSERTs, between two pgbench runs of the same length."""
    with pgbench_beside(bench) as pgbench:
        before = pgbench(seconds)
        jobs, elapsed = enqueue_from_clients(dsn, CLIENTS, seconds, explicit=False, plain=True)
        after = pgbench(seconds)
    rate = jobs / elapsed
    ratio = rate / ((before + after) / 2)
    note = f"{rate:,.0f} vs {before:,.0f}/{after:,.0f} tps, pgbench -N right before and after"
    return {"jobs_per_s": rate, "pgbench_before": before, "pgbench_after": after,
            "ratio": ratio, "note": note}  # fmt: skip


def enqueue_from_clients(
    dsn: str, clients: int, seconds: float, *, explicit: bool, plain: bool = False
) -> tuple[int, float]:
    """``clients`` processes each enqueue one run per transaction for ``seconds``, all starting
    together, each call in ``BEGIN`` … ``COMMIT`` if ``explicit``, or as a plain INSERT through
    psycopg alone if ``plain``; (runs enqueued in all, seconds from the first start to the last
    finish)."""
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no inherited sockets
    start = context.Barrier(clients)
    results = context.Queue()
    children = [
        context.Process(
            target=_client, args=(dsn, seconds, explicit, plain, start, results), daemon=True
        )
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


def _client(
    dsn: str, seconds: float, explicit: bool, plain: bool, start: Barrier, results: Queue[Any]
) -> None:
    """One client: warm up, wait for the others, then enqueue until ``seconds`` have passed."""
    if plain:
        enqueue_one = insert_plain
    else:
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
