"""idle load: 4 idle workers (20 jobs registered, none due: they fire once a year) for 60 s
(quick: 10 s): statements per second per worker.

Counted with ``pg_stat_statements`` (calls in the benchmark database) when the server preloads it;
otherwise with ``pg_stat_database`` (``xact_commit + xact_rollback`` of the benchmark database,
read from another database so the reads do not count): the worker runs its statements in
autocommit, so a transaction is a statement, except in the few places it groups them in one.
PostgreSQL flushes an idle backend's counters with a delay of up to ~10 s, so the window opens
12 s after the workers registered: by then the start-up's statements (registering 20 jobs) are
counted, and the delay is the same at both ends of the window.
"""

from __future__ import annotations

import time
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from benchmarks.databases import fresh_database
from benchmarks.harness import Bench
from benchmarks.processes import pgjobs_worker, processes, wait_registered

WORKERS = 4
SETTLE = 12.0  # > PostgreSQL's 10 s flush of an idle backend's statistics

_STATEMENTS = """
SELECT coalesce(sum(calls), 0)::bigint FROM pg_stat_statements
WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND query NOT LIKE '%%pg_stat_statements%%'
"""

_TRANSACTIONS = """
SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s
"""


def run(bench: Bench, peers: object = None) -> dict[str, Any]:
    seconds = bench.pick(60.0, 10.0)
    with psycopg.connect(bench.admin_dsn, autocommit=True) as admin:
        preload = admin.execute("SHOW shared_preload_libraries").fetchone()
        statements = preload is not None and "pg_stat_statements" in str(preload[0])
        with fresh_database(bench.admin_dsn, "idle") as dsn:
            dbname = str(conninfo_to_dict(dsn)["dbname"])
            if statements:
                with psycopg.connect(dsn, autocommit=True) as conn:
                    conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")

            def counter() -> int:
                if statements:
                    with psycopg.connect(dsn, autocommit=True) as conn:
                        row = conn.execute(_STATEMENTS).fetchone()
                else:
                    admin.execute("SELECT pg_stat_clear_snapshot()")
                    row = admin.execute(_TRANSACTIONS, [dbname]).fetchone()
                return int(row[0]) if row else 0

            with processes() as started:
                for i in range(WORKERS):
                    name = f"idle-{i + 1}-{time.monotonic_ns()}"
                    started.append(pgjobs_worker(dsn, bench.log_dir, name, "idle"))
                wait_registered(dsn, started)
                time.sleep(SETTLE)
                before, began = counter(), time.monotonic()
                time.sleep(seconds)
                after, elapsed = counter(), time.monotonic() - began
                for p in started:
                    p.check_alive()

    source = (
        "pg_stat_statements calls" if statements else "pg_stat_database xact_commit+xact_rollback"
    )
    per_worker = (after - before) / elapsed / WORKERS
    recorder = bench.at("idle", f"{WORKERS} idle workers, {seconds:.0f}s", "pgjobs")
    recorder.add("statements/s per worker", per_worker, "1/s", note=source)
    return {
        "workers": WORKERS,
        "seconds": elapsed,
        "source": source,
        "count": after - before,
        "statements_per_s_per_worker": per_worker,
    }
