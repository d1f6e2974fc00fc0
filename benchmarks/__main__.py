"""``python -m benchmarks [--peers] [--quick] [--only drain,enqueue,…] [--json out.json]
[--dsn ADMIN_DSN]``: measure pgbench, then each selected measure, print a table, write JSON.

Without ``--dsn`` (or ``PGJOBS_BENCH_DSN``) the run starts a throwaway PostgreSQL of its own,
with the server's default settings and autovacuum on, as a production server runs: the figures
include what autovacuum costs and saves. ``--dsn`` runs on an existing server instead."""

from __future__ import annotations

import argparse
import compileall
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from benchmarks import (
    baseline,
    cli,
    databases,
    drain,
    enqueue,
    idle,
    latency,
    limits,
    memory,
    peers,
    report,
    scale,
    schedule_lag,
    workflows,
)
from benchmarks.cluster import pg_cluster
from benchmarks.harness import ROOT, Bench

Measure = Callable[[Bench, list[peers.Peer]], dict[str, Any]]

MEASURES: dict[str, Measure] = {
    "drain": drain.run,
    "enqueue": enqueue.run,
    "lag": schedule_lag.run,
    "idle": idle.run,
    "scale": scale.run,
    "memory": memory.run,
    "limits": limits.run,
    "workflows": workflows.run,
    "latency": latency.run,
    "cli": cli.run,
}
ALIASES = {"schedule_lag": "lag", "schedule-lag": "lag"}
SHARED_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
DEFAULT_JSON = ROOT / "benchmarks" / "results" / "latest.json"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="pgjobs benchmarks; every figure also as a ratio to pgbench on the server.",
    )
    parser.add_argument(
        "--peers",
        action="store_true",
        help="also run pgqueuer and procrastinate (installed into benchmarks/.peers-venv)",
    )
    parser.add_argument("--quick", action="store_true", help="small N, short runs: a smoke test")
    parser.add_argument(
        "--only",
        default="",
        help=f"comma-separated measures to run (default all): {', '.join(MEASURES)}",
    )
    parser.add_argument(
        "--json", type=Path, default=DEFAULT_JSON, help=f"results file (default {DEFAULT_JSON})"
    )
    parser.add_argument(
        "--dsn",
        default=os.environ.get("PGJOBS_BENCH_DSN") or None,
        help="admin DSN of an existing server to run on (it creates and drops databases), e.g. "
        f"{SHARED_DSN!r}; default $PGJOBS_BENCH_DSN, else a throwaway cluster with "
        "PostgreSQL's default settings (autovacuum on)",
    )
    args = parser.parse_args(argv)
    selected = [ALIASES.get(n.strip(), n.strip()) for n in args.only.split(",") if n.strip()]
    unknown = [n for n in selected if n not in MEASURES]
    if unknown:
        parser.error(f"unknown measure(s) {', '.join(unknown)}; choose from {', '.join(MEASURES)}")
    args.measures = selected or list(MEASURES)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with _server(args.dsn) as (admin_dsn, server):
        return run(args, admin_dsn, server)


@contextmanager
def _server(dsn: str | None) -> Iterator[tuple[str, str]]:
    """The admin DSN to run on, and what it is: the one given, or a throwaway cluster's."""
    if dsn:
        yield dsn, "an existing server (--dsn)"
        return
    _say("server: starting a throwaway cluster (initdb, PostgreSQL's defaults, autovacuum on) …")
    with pg_cluster(migrate=False) as made:
        _say(f"server: port {made.port}, {made.dir}")
        yield made.dsn, "a throwaway cluster with PostgreSQL's default settings"


def run(args: argparse.Namespace, admin_dsn: str, server: str) -> int:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    log_dir = ROOT / "benchmarks" / "results" / "logs" / f"{stamp}-{os.getpid()}"
    log_dir.mkdir(parents=True, exist_ok=True)
    bench = Bench(admin_dsn, args.quick, log_dir, peers=args.peers)
    failed = False

    _say(f"pgjobs benchmarks{' (quick)' if args.quick else ''}: {', '.join(args.measures)}")
    _say(f"worker logs: {log_dir}")
    # As installing a wheel does: the processes the measures start read bytecode, even where the
    # environment forbids writing it (PYTHONDONTWRITEBYTECODE) and pgjobs is an editable install.
    compileall.compile_dir(str(ROOT / "pgjobs"), quiet=1)
    for name in databases.drop_stale_databases(admin_dsn):
        _say(f"dropped {name}, left behind by an earlier run")

    meta = _meta(args, admin_dsn, server)
    _say("baseline: pgbench …")
    try:
        bench.baseline = baseline.measure(bench)
        _say(f"baseline: {bench.baseline.tps:,.0f} tps")
    except Exception as exc:
        failed = True
        _say(f"baseline: failed, no ratios this run: {exc}")

    peer_info: dict[str, Any] = {}
    running_peers: list[peers.Peer] = []
    if args.peers:
        _say("peers: installing into benchmarks/.peers-venv …")
        env, what = peers.install(log_dir)
        _say(f"peers: {what}")
        peer_info["install"] = what
        if env is not None:
            running_peers = [cls(env) for cls in peers.PEERS]
            peer_info["versions"] = env.versions

    measures: dict[str, Any] = {}
    for name in args.measures:
        _say(f"{name}: running …")
        began = time.monotonic()
        try:
            measures[name] = MEASURES[name](bench, running_peers)
        except Exception as exc:
            failed = True
            measures[name] = {"error": f"{type(exc).__name__}: {exc}"}
            _say(f"{name}: FAILED: {type(exc).__name__}: {exc}")
            traceback.print_exc(file=sys.stderr)
            continue
        _say(f"{name}: done in {time.monotonic() - began:.0f}s")

    meta["finished_at"] = datetime.now(UTC).isoformat()
    report.write_json(bench, args.json, meta, measures, peer_info)
    print(f"server: {server}; autovacuum {meta['autovacuum']}")
    print(report.table(bench))
    print(f"\nresults: {args.json}")
    return 1 if failed else 0


def _meta(args: argparse.Namespace, admin_dsn: str, server: str) -> dict[str, Any]:
    import pgjobs

    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        row = conn.execute("SHOW server_version").fetchone()
        autovacuum = conn.execute("SHOW autovacuum").fetchone()
    return {
        "server": server,
        "autovacuum": autovacuum[0] if autovacuum else None,
        "started_at": datetime.now(UTC).isoformat(),
        "quick": args.quick,
        "peers": args.peers,
        "measures": args.measures,
        "pgjobs_version": pgjobs.__version__,
        "python": platform.python_version(),
        "server_version": row[0] if row else None,
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
    }


def _say(message: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
