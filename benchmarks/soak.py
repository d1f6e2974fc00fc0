"""``python -m benchmarks.soak [--minutes 30] [--cold-start]`` (or ``make soak``): pgjobs under a
production-like load for half an hour, on a throwaway PostgreSQL with its default settings and
autovacuum on; see benchmarks/README.md.

The soak measures the drain rate of W workers x C first, then runs half of it as steady enqueues
beside 20 jobs firing every second and 2,000 schedules firing every minute, with the built-in
pruning on a short retention, and prints per window how the queue, the table and the workers
hold up, each figure beside its target. ``--cold-start`` runs the ramp-up alone: a steady rate
from the first second on workers idle over an empty queue, second by second.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import psycopg

from benchmarks import apps, coldstart, drain, windows
from benchmarks.cluster import pg_cluster
from benchmarks.databases import fresh_database
from benchmarks.harness import ROOT, Bench
from benchmarks.load import SteadyLoad
from benchmarks.processes import pgjobs_worker, processes, wait_registered
from benchmarks.sampler import INTERVAL, SETTLE, Sampler, every

RESULTS = ROOT / "benchmarks" / "results"
JOB = apps.Noop.name

#: The built-in pruning's schedule and retention: a soak of 10 minutes or more ("long", windows
#: of 5 minutes), a shorter one (windows of 1 minute). Off second 0, where the minute's
#: schedules fire.
PRUNING = {"long": ("2m", "30 * * * * *"), "short": ("20s", "5/10 * * * * *")}

#: The load starts at this second of a minute, after the burst of the minute's ticks.
START_SECOND = 10.0

PROFILE = """\
scheduler:
  jobs:
    - job: pgjobs-prune-runs
      schedule: "{schedule}"
      parameters:
        older_than: {older_than}
"""

#: The soak's server: PostgreSQL's defaults (autovacuum on), with pg_stat_statements loaded for
#: the claim statement's time.
SERVER_SETTINGS = {"shared_preload_libraries": "'pg_stat_statements'"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.soak",
        description="pgjobs soak on a throwaway PostgreSQL (defaults, autovacuum on).",
    )
    parser.add_argument("--minutes", type=float, default=30.0, help="soak length (default 30)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument(
        "--concurrency", type=int, default=10, help="concurrency of each worker (default 10)"
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=None,
        help="steady enqueues/s (default: half the measured drain rate; --cold-start: 3000)",
    )
    parser.add_argument(
        "--cold-start",
        action="store_true",
        help="only the ramp-up from an empty queue, second by second (--seconds long)",
    )
    parser.add_argument(
        "--seconds", type=float, default=60.0, help="--cold-start: load length (default 60)"
    )
    parser.add_argument(
        "--explain",
        action="store_true",
        help="--cold-start: sample the workers' claim plans with auto_explain",
    )
    parser.add_argument("--json", type=Path, default=None, help="results file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM ends the soak as Ctrl-C does: the windows measured so far are printed, and the
    # workers, the load and the throwaway cluster are stopped.
    signal.signal(signal.SIGTERM, _interrupt)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    log_dir = RESULTS / "logs" / f"soak-{stamp}-{os.getpid()}"
    log_dir.mkdir(parents=True, exist_ok=True)
    settings = dict(SERVER_SETTINGS)
    if args.cold_start and args.explain:
        settings["shared_preload_libraries"] = "'pg_stat_statements,auto_explain'"
        settings.update(coldstart.EXPLAIN_SETTINGS)
    _say(f"worker logs: {log_dir}")
    with pg_cluster(migrate=False, settings=settings) as cluster:
        _say(f"server: throwaway cluster on port {cluster.port} ({cluster.dir})")
        if args.cold_start:
            rate = args.rate or 3000.0
            _say(
                f"cold start: {args.workers} workers x {args.concurrency}, {rate:,.0f} "
                f"enqueues/s for {args.seconds:.0f} s from an empty queue …"
            )
            result = coldstart.run(
                cluster.dsn,
                log_dir,
                rate=rate,
                seconds=args.seconds,
                workers=args.workers,
                concurrency=args.concurrency,
                server_log=cluster.log_path if args.explain else None,
            )
            print(coldstart.table(result))
            document: dict[str, Any] = {"cold_start": result.as_dict()}
            default_json = RESULTS / "coldstart-latest.json"
        else:
            document = soak(cluster.dsn, log_dir, args)
            default_json = RESULTS / "soak-latest.json"
    path = args.json or default_json
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")
    print(f"\nresults: {path}")
    failed = [v for v in document.get("verdicts", []) if v["passed"] is False]
    if document.get("interrupted"):
        return 130
    return 1 if failed else 0


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def soak(admin_dsn: str, log_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Measure the drain rate, then soak; print the windows and the targets; the results."""
    seconds = args.minutes * 60
    long = args.minutes >= 10
    length = 300.0 if long else 60.0
    retention, prune_every = PRUNING["long" if long else "short"]
    drain_jobs = 20_000 if long else 10_000

    _say(f"drain: {drain_jobs:,} runs, {args.workers} workers x {args.concurrency} …")
    bench = Bench(admin_dsn, quick=False, log_dir=log_dir)
    drained = drain.drain_pgjobs(bench, args.workers, args.concurrency, drain_jobs)
    max_rate = drained.jobs_per_s or 0.0
    rate = args.rate or max_rate / 2
    if not args.rate:
        share = "half"
    elif max_rate:
        share = f"--rate, {rate / max_rate:.0%} of"
    else:
        share = "--rate, against"
    _say(f"drain: {max_rate:,.0f} runs/s; steady enqueues at {rate:,.0f}/s")
    case = (
        f"soak: {args.workers} workers x {args.concurrency}, {args.minutes:g} min in windows of "
        f"{length / 60:g} min; {rate:,.0f} enqueues/s ({share} the {max_rate:,.0f}/s drained), "
        f"{apps.SOAK_SECOND_JOBS} jobs every second, "
        f"{apps.SOAK_MINUTE_JOBS + apps.SOAK_RUNTIME_SCHEDULES:,} schedules every minute at "
        f"second 0 ({apps.SOAK_MINUTE_JOBS:,} jobs' own, {apps.SOAK_RUNTIME_SCHEDULES:,} runtime); "
        f"pruning '{prune_every}' at older_than {retention}"
    )

    with fresh_database(admin_dsn, "soak") as dsn, processes() as started:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        profile = log_dir / "soak-profile.yaml"
        profile.write_text(PROFILE.format(schedule=prune_every, older_than=retention))
        for i in range(args.workers):
            name = f"soak-{i + 1}-{time.monotonic_ns()}"
            started.append(
                pgjobs_worker(
                    dsn,
                    log_dir,
                    name,
                    "soak",
                    concurrency=args.concurrency,
                    options=["--profile", str(profile)],
                )
            )
        wait_registered(dsn, started, timeout=600)
        _say(f"workers registered {1 + apps.SOAK_SECOND_JOBS + apps.SOAK_MINUTE_JOBS:,} jobs")
        _add_runtime_schedules(dsn)
        _say(f"{apps.SOAK_RUNTIME_SCHEDULES:,} runtime schedules added")
        with Sampler(dsn, started) as sampler, SteadyLoad(dsn, JOB, rate) as load:
            _wait_for_second(dsn, START_SECOND)
            t0 = sampler.now()
            sampler.start(t0)
            load.start()
            epoch = t0.timestamp()
            _say(case)
            began = time.monotonic()
            deadline = began + seconds
            reported = [0]

            def step() -> None:
                sample = sampler.sample()
                while (reported[0] + 1) * length <= sample.at - epoch - SETTLE:
                    start = reported[0] * length
                    _say(_progress(windows.window(sampler.seen, epoch, start, start + length)))
                    reported[0] += 1

            interrupted = False
            try:
                every(INTERVAL, deadline, step)
            except KeyboardInterrupt:
                # What was measured is reported: the whole windows, and the part of the last.
                interrupted = True
                seconds = time.monotonic() - began
                _say(f"interrupted after {seconds / 60:.1f} min: stopping the load and the workers")
            load_report = load.stop()
            time.sleep(SETTLE)
            sampler.sample()

    found = windows.windows(sampler.seen, epoch, seconds, length)
    ramp = windows.ramp_up(sampler.seen, epoch, seconds)
    verdicts = windows.verdicts(found, ramp)
    print(case + (f" (interrupted after {seconds / 60:.1f} min)" if interrupted else ""))
    print(
        f"load: {load_report.enqueued:,} runs in {load_report.seconds:,.0f} s "
        f"({load_report.achieved:,.0f}/s; a client was at most {load_report.behind:,} runs behind)"
    )
    print()
    print(windows.table(found, ramp, verdicts))
    return {
        "case": case,
        "minutes": args.minutes,
        "workers": args.workers,
        "concurrency": args.concurrency,
        "drain": {"jobs": drain_jobs, "jobs_per_s": max_rate},
        "rate": rate,
        "retention": retention,
        "prune_schedule": prune_every,
        "load": {**asdict(load_report), "achieved": load_report.achieved},
        "windows": windows.as_dicts(found),
        "ramp": ramp,
        "verdicts": [asdict(v) for v in verdicts],
        "interrupted": interrupted,
    }


_ADD_SCHEDULES = """
SELECT count(pgjobs.schedule(%(job)s, '0 * * * * *', name => format('soak-%%s', i)))
FROM generate_series(1, %(count)s) AS i
"""


def _wait_for_second(dsn: str, second: float) -> None:
    """Until the database clock is at ``second`` of a minute: the load then starts between two
    of the minute's bursts, and its first seconds measure the ramp-up alone."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT extract(second FROM clock_timestamp())::float8").fetchone()
    assert row is not None
    time.sleep((second - row[0]) % 60)


def _add_runtime_schedules(dsn: str) -> None:
    """The soak's runtime schedules, added with the SQL function pgjobs.schedule()."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            _ADD_SCHEDULES,
            {"job": apps.RuntimeScheduled.name, "count": apps.SOAK_RUNTIME_SCHEDULES},
        )


def _progress(w: windows.Window) -> str:
    def ms(value: float | None) -> str:
        return "n/a" if value is None else f"{value:,.1f} ms"

    return (
        f"{w.start_s / 60:g}-{w.end_s / 60:g} min: claim p99 {ms(w.claim_p99_ms)}, schedule lag "
        f"p99 {ms(w.second_p99_ms)}, runs {w.table_mb or 0:,.1f} MiB + indexes "
        f"{w.index_mb or 0:,.1f} MiB, dead {w.dead or 0:,}, RSS {w.rss_mib or 0:.1f} MiB"
    )


def _say(message: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
