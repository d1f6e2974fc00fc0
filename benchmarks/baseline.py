"""The baseline: pgbench's write transaction on the same server, measured first in every run.

``pgbench -i`` initialises a scratch database (scale 1), then ``pgbench -N -c 4 -j 2 -T 10`` runs
the simple-update transaction (three writes and a select, without the contended branch and teller
updates) from 4 clients; its TPS and average latency are what pgjobs' figures are divided by.
"""

from __future__ import annotations

import glob
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from benchmarks.databases import fresh_database
from benchmarks.harness import Baseline, Bench

CLIENTS = 4
THREADS = 2

_TPS = re.compile(r"^tps = ([0-9.]+) \((?:without|excluding) initial connection", re.MULTILINE)
_LATENCY = re.compile(r"^latency average = ([0-9.]+) ms", re.MULTILINE)


def pgbench_path() -> str:
    """pgbench from PATH, else from the newest PostgreSQL installed under /usr/lib/postgresql."""
    found = shutil.which("pgbench")
    if found:
        return found
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pgbench"))
    if candidates:
        return candidates[-1]
    raise RuntimeError("pgbench not found: install the PostgreSQL client tools (postgresql-15)")


def parse(output: str) -> tuple[float, float]:
    """(TPS without connection time, average latency in ms) from pgbench's report."""
    tps = _TPS.search(output)
    latency = _LATENCY.search(output)
    if tps is None or latency is None:
        raise RuntimeError(f"unexpected pgbench output:\n{output[-2000:]}")
    return float(tps.group(1)), float(latency.group(1))


def measure(bench: Bench) -> Baseline:
    seconds = bench.pick(10, 3)
    pgbench = pgbench_path()
    with fresh_database(bench.admin_dsn, "pgbench", migrate=False) as dsn:
        _run([pgbench, "-i", "-q", "-s", "1", dsn], timeout=300)
        argv = [pgbench, "-N", "-c", str(CLIENTS), "-j", str(THREADS), "-T", str(seconds), dsn]
        output = _run(argv, timeout=seconds + 120)
    tps, latency = parse(output)
    return Baseline(tps, latency, CLIENTS, THREADS, seconds)


@contextmanager
def pgbench_beside(bench: Bench) -> Iterator[Callable[[float], float]]:
    """pgbench's TPS on demand, for a baseline taken right next to the measure it divides (the
    machine's rate drifts by a third within a day): a scratch database initialised once, and a
    function that runs ``pgbench -N`` for the seconds given and returns its TPS."""
    pgbench = pgbench_path()
    with fresh_database(bench.admin_dsn, "pgbench_beside", migrate=False) as dsn:
        _run([pgbench, "-i", "-q", "-s", "1", dsn], timeout=300)

        def tps(seconds: float) -> float:
            length = str(max(1, round(seconds)))
            argv = [pgbench, "-N", "-c", str(CLIENTS), "-j", str(THREADS), "-T", length, dsn]
            return parse(_run(argv, timeout=seconds + 120))[0]

        yield tps


def _run(argv: list[str], timeout: float) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv[:2])} failed ({done.returncode}):\n{done.stderr[-2000:]}"
        )
    return done.stdout + done.stderr
