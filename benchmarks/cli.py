"""cli: how long ``pgjobs jobs status`` takes, whole process, against what any command built on
Python, click and psycopg pays before its first line of its own.

Each round times, taking turns, ``ROUNDS`` (quick: 1) x ``TIMES`` (quick: 4) runs of:

- ``python -c pass``: the interpreter starting and exiting;
- ``python -c "import click, psycopg"``: the floor of a click command that reads PostgreSQL
  with psycopg;
- ``python -m pgjobs jobs status`` on a migrated database with ten jobs, 1,000 runs that ended
  and 100 queued (every job's last run and the counts of the queue).

Reported: the median of each round (the first two runs of a round warm the page cache and are
left out), the median of the rounds, and the share of the command's time that the floor is.
The package's modules are compiled to bytecode before any measure runs
(``benchmarks/__main__.py``), as an install from a wheel does.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from typing import Any

import psycopg

from benchmarks import history
from benchmarks.databases import fresh_database
from benchmarks.harness import ROOT, Bench

ROUNDS = 3
TIMES = 12
WARM = 2
JOBS = [f"bench-cli-{i}" for i in range(10)]

COMMANDS = {
    "python -c pass": ["-c", "pass"],
    "import click, psycopg": ["-c", "import click, psycopg"],
    "pgjobs jobs status": ["-m", "pgjobs", "jobs", "status"],
}


def run(bench: Bench, peers: object = None) -> dict[str, Any]:
    rounds = bench.pick(ROUNDS, 1)
    times = bench.pick(TIMES, WARM + 2)
    with fresh_database(bench.admin_dsn, "cli") as dsn:
        _seed(dsn)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PGJOBS_")}
        env.update(PGJOBS_DSN=dsn, PYTHONPATH=str(ROOT))
        medians: dict[str, list[float]] = {name: [] for name in COMMANDS}
        for _ in range(rounds):
            taken: dict[str, list[float]] = {name: [] for name in COMMANDS}
            for _ in range(times):
                for name, args in COMMANDS.items():
                    taken[name].append(_time([sys.executable, *args], env))
            for name, seconds in taken.items():
                medians[name].append(statistics.median(seconds[WARM:]) * 1000)

    figures = {name: statistics.median(values) for name, values in medians.items()}
    status, floor = figures["pgjobs jobs status"], figures["import click, psycopg"]
    recorder = bench.at("cli", "pgjobs jobs status, whole process", "pgjobs")
    rounds_note = "rounds " + ", ".join(f"{m:.0f}" for m in medians["pgjobs jobs status"])
    recorder.add("wall time", status, "ms", note=f"median of {rounds} round(s); {rounds_note}")
    recorder.add("python -c pass", figures["python -c pass"], "ms", note="the same rounds")
    recorder.add("import click, psycopg", floor, "ms", note="the floor of such a command")
    recorder.add("floor / command", floor / status, "x", note="the share the floor is")
    return {"milliseconds": figures, "rounds": medians}


def _time(argv: list[str], env: dict[str, str]) -> float:
    began = time.perf_counter()
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, check=False)
    took = time.perf_counter() - began
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[1:])} exited {done.returncode}: {done.stderr!r:.300}")
    return took


def _seed(dsn: str) -> None:
    """Ten jobs as workers register them, with runs that ended and runs still queued."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        history.add_jobs(conn, JOBS, None)
        history.add_finished_runs(conn, JOBS, 1000)
        history.add_queued_runs(conn, JOBS, 100)
