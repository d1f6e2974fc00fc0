"""Many workers against one database: 50 worker processes at concurrency 1, against 4 workers
with the same number of slots, under the same steady stream of enqueues.

``python -m benchmarks.fleet [--rate 1000] [--seconds 30] [--fleet 50] [--few 4]`` runs both on a
throwaway PostgreSQL with default settings, one after the other on the same server, and prints
for each:

- connections held, and idle statements per second per worker (before the load);
- worker statements per run (``pg_stat_statements`` calls, the enqueues left out);
- NOTIFYs per run: to every listener (the schema's channel) and to one worker (its own channel),
  and the deliveries they make; PostgreSQL signals every listening backend of the database for
  each notifying commit, whichever channel;
- CPU seconds per 1,000 runs, of the worker processes and of the database's backends;
- enqueue → start latency p50 / p99.

The enqueues come from pgbench (``SELECT pgjobs.enqueue('bench-noop')``, 4 clients, ``-R``), so
the producer's own CPU stays out of the Python figures.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from benchmarks.baseline import pgbench_path
from benchmarks.cluster import pg_cluster
from benchmarks.databases import fresh_database
from benchmarks.harness import ROOT, percentile
from benchmarks.processes import Process, pgjobs_worker, processes, wait_registered

SETTLE = 12.0  # > PostgreSQL's 10 s flush of an idle backend's statistics
_HZ = os.sysconf("SC_CLK_TCK")


@dataclass
class Fleet:
    workers: int
    concurrency: int
    runs: int
    rate: float
    connections: int
    idle_per_worker: float
    statements_per_run: float
    broadcasts: int
    targeted: int
    listeners: int
    worker_cpu: float
    backend_cpu: float
    lag_p50: float
    lag_p99: float

    @property
    def deliveries_per_run(self) -> float:
        return (self.broadcasts * self.listeners + self.targeted) / self.runs

    def lines(self) -> list[str]:
        per = 1000 / self.runs
        return [
            f"{self.workers} workers x {self.concurrency}: {self.runs:,} runs "
            f"({self.rate:,.0f} enqueues/s); {self.connections} connections, idle "
            f"{self.idle_per_worker:.2f} statements/s per worker",
            f"  worker statements per run {self.statements_per_run:.2f}; NOTIFYs per run: "
            f"{self.broadcasts / self.runs:.2f} to all {self.listeners} listeners, "
            f"{self.targeted / self.runs:.2f} to one worker; deliveries per run "
            f"{self.deliveries_per_run:.1f}",
            f"  CPU per 1,000 runs: workers {self.worker_cpu * per:.2f} s, database "
            f"{self.backend_cpu * per:.2f} s; enqueue -> start p50 {self.lag_p50:.1f} ms, "
            f"p99 {self.lag_p99:.1f} ms",
        ]


def _cpu(pid: int) -> float:
    """User + system CPU seconds of a process, from /proc (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _HZ


def _transactions(admin: psycopg.Connection[Any], dbname: str) -> int:
    admin.execute("SELECT pg_stat_clear_snapshot()")
    row = admin.execute(
        "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s", [dbname]
    ).fetchone()
    return int(row[0]) if row else 0


def measure(
    admin_dsn: str, log_dir: Path, workers: int, concurrency: int, rate: int, seconds: int
) -> Fleet:
    with fresh_database(admin_dsn, f"fleet{workers}") as dsn, processes() as started:
        dbname = str(psycopg.conninfo.conninfo_to_dict(dsn)["dbname"])
        admin = psycopg.connect(admin_dsn, autocommit=True)
        stats = psycopg.connect(dsn, autocommit=True)
        stats.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        for i in range(workers):
            name = f"fleet-{workers}-{i}-{time.monotonic_ns()}"
            started.append(pgjobs_worker(dsn, log_dir, name, "drain", concurrency=concurrency))
        wait_registered(dsn, started, timeout=300)
        time.sleep(SETTLE)
        connections = admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", [dbname]
        ).fetchone()
        before = _transactions(admin, dbname)
        time.sleep(10)
        idle = (_transactions(admin, dbname) - before) / 10
        probe = psycopg.connect(dsn, autocommit=True)
        channels = _listen(probe, started)
        backends = [
            r[0]
            for r in admin.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", [dbname])
        ]
        cpu0 = sum(map(_cpu, backends)), sum(_cpu(p.pid) for p in started)
        stats.execute("SELECT pg_stat_statements_reset()")
        began = time.monotonic()
        script = log_dir / "fleet-enqueue.sql"
        script.write_text("SELECT pgjobs.enqueue('bench-noop');\n")
        argv = [pgbench_path(), "-n", "-c", "4", "-j", "2", "-R", str(rate), "-T", str(seconds)]
        load = subprocess.Popen(
            [*argv, "-f", str(script), dsn], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
        )
        broadcasts = targeted = 0
        while load.poll() is None:
            for notify in probe.notifies(timeout=0.5):
                if notify.channel == "pgjobs":
                    broadcasts += 1
                elif notify.channel in channels:
                    targeted += 1
        elapsed = time.monotonic() - began
        cpu1 = sum(map(_cpu, backends)), sum(_cpu(p.pid) for p in started)
        time.sleep(3)
        statements = _worker_statements(stats)
        runs = int(probe.execute("SELECT count(*) FROM pgjobs.runs").fetchone()[0])  # type: ignore[index]
        lags = [row[0] for row in probe.execute(_LAGS)]
        return Fleet(
            workers=workers,
            concurrency=concurrency,
            runs=runs,
            rate=runs / elapsed,
            connections=int(connections[0]) if connections else 0,
            idle_per_worker=idle / workers,
            statements_per_run=statements / runs,
            broadcasts=broadcasts,
            targeted=targeted,
            listeners=workers,
            worker_cpu=cpu1[1] - cpu0[1],
            backend_cpu=cpu1[0] - cpu0[0],
            lag_p50=percentile(lags, 0.5) or 0.0,
            lag_p99=percentile(lags, 0.99) or 0.0,
        )


def _worker_statements(stats: psycopg.Connection[Any]) -> int:
    """Statements run since the reset, but for the enqueues and the measure's own."""
    row = stats.execute(
        "SELECT coalesce(sum(calls), 0)::bigint FROM pg_stat_statements"
        " WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
        " AND query NOT LIKE '%%pg_stat_statements%%' AND query NOT LIKE '%%pgjobs.enqueue(%%'"
        " AND query NOT LIKE '%%wake_channel%%' AND query NOT LIKE 'LISTEN%%'"
    ).fetchone()
    return int(row[0]) if row else 0


_LAGS = """
SELECT (extract(epoch FROM started_at - created_at) * 1000)::float8
FROM pgjobs.runs WHERE started_at IS NOT NULL
"""


def _listen(probe: psycopg.Connection[Any], workers: list[Process]) -> set[str]:
    """LISTEN on the schema's channel and on every worker's own; the workers' channels."""
    probe.execute('LISTEN "pgjobs"')
    channels = set()
    for proc in workers:
        row = probe.execute("SELECT pgjobs.wake_channel('pgjobs', %s)", [proc.name]).fetchone()
        assert row is not None
        channels.add(str(row[0]))
        probe.execute(f'LISTEN "{row[0]}"')
    return channels


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fleet", description=__doc__)
    parser.add_argument("--rate", type=int, default=1000, help="enqueues per second")
    parser.add_argument("--seconds", type=int, default=30, help="length of the load")
    parser.add_argument("--fleet", type=int, default=50, help="workers at concurrency 1")
    parser.add_argument("--few", type=int, default=4, help="workers sharing as many slots")
    args = parser.parse_args(argv)
    log_dir = ROOT / "benchmarks" / "results" / "logs" / f"fleet-{time.strftime('%Y%m%d-%H%M%S')}"
    log_dir.mkdir(parents=True, exist_ok=True)
    slots = -(-args.fleet // args.few)
    with pg_cluster(
        migrate=False,
        settings={"max_connections": "400", "shared_preload_libraries": "'pg_stat_statements'"},
    ) as cluster:
        for workers, concurrency in ((args.fleet, 1), (args.few, slots)):
            fleet = measure(cluster.dsn, log_dir, workers, concurrency, args.rate, args.seconds)
            print("\n".join(fleet.lines()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
