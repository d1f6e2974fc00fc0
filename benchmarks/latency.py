"""latency: how soon a spawned worker runs its first job, and how soon a run enqueued into an
idle worker is entered; pgjobs, and with ``--peers`` pgqueuer and procrastinate, by one
definition for all three.

- **Worker start to ready.** One no-op run is enqueued into a fresh, otherwise empty database,
  then one worker process (concurrency 10, each system's worker as the drain starts it) is
  spawned. The figure is the time from just before the spawn to the moment the job's code is
  entered (``time.time()``, which the job appends to a file). 5 times (quick: 2), each in a fresh
  database: the median and the max.
- **Enqueue → job entered, idle worker.** The last of those workers stays, idle on the empty
  queue, for 1 s after its first run. Then a client enqueues 5 untimed runs and 300 timed ones
  (quick: 30), one per transaction (an autocommit call: the statement is its own transaction),
  one at a time, 15 to 25 ms apart. A run's latency is the moment the job's code was entered
  minus the moment the client's enqueue call returned, its commit done: p50, p99 and max. Worker
  and client are on the same machine, so their clocks agree.

Each system uses its normal enqueue API (pgjobs ``enqueue_sync``, pgqueuer ``Queries.enqueue``,
procrastinate ``defer_async``) and its default wake-ups: all three LISTEN for new runs.
"""

from __future__ import annotations

import copy
import random
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psycopg

import pgjobs
from benchmarks.databases import fresh_database
from benchmarks.harness import Bench, percentile, short, wait_until
from benchmarks.peers import Peer
from benchmarks.processes import Process, pgjobs_worker, processes, register_jobs

CONCURRENCY = 10
WARMUP = 5
SETTLE_S = 1.0
JOB = "bench-latency"
START_CASE = "worker start to ready, 1 x 10"
ENQUEUE_CASE = "enqueue -> job entered, idle worker 1 x 10"


@dataclass
class Result:
    """One system's figures: each start in ms, and each timed run's latency in ms."""

    system: str
    starts_ms: list[float]
    latencies_ms: list[float]
    calls_ms: list[float]

    def as_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "start_median_ms": statistics.median(self.starts_ms),
            "start_max_ms": max(self.starts_ms),
            "latency_p50_ms": percentile(self.latencies_ms, 0.5),
            "latency_p99_ms": percentile(self.latencies_ms, 0.99),
            "latency_max_ms": max(self.latencies_ms),
            "enqueue_call_p50_ms": percentile(self.calls_ms, 0.5),
        }


class Side:
    """What one system does differently: its database, its worker, its enqueues. This class is
    pgjobs' side; :class:`PeerSide` is a peer's."""

    label = "pgjobs"
    slug = "pgjobs"

    @contextmanager
    def database(self, bench: Bench) -> Iterator[str]:
        with fresh_database(bench.admin_dsn, "latency") as dsn:
            register_jobs(dsn, bench.log_dir, "latency")
            yield dsn

    def enqueue(self, dsn: str, key: str) -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            pgjobs.enqueue_sync(conn, JOB, {"key": key})

    def worker(self, dsn: str, bench: Bench, name: str, entries: Path) -> Process:
        env = {"BENCH_ENTRY_FILE": str(entries)}
        return pgjobs_worker(dsn, bench.log_dir, name, "latency", concurrency=CONCURRENCY, env=env)

    def client(self, dsn: str, bench: Bench, count: int) -> list[tuple[str, float, float]]:
        calls = []
        with psycopg.connect(dsn, autocommit=True) as conn:
            for i, pause in enumerate(_pauses(count)):
                time.sleep(pause)
                before = time.time()
                pgjobs.enqueue_sync(conn, JOB, {"key": str(i)})
                calls.append((str(i), before, time.time()))
        return calls


class PeerSide(Side):
    """A peer on its latency app, ``benchmarks/peer_apps/<peer>_latency.py``, in place of the
    drain's: the same worker command, settings and virtualenv."""

    def __init__(self, peer: Peer) -> None:
        self.peer = copy.copy(peer)
        self.peer.module = f"benchmarks.peer_apps.{peer.name}_latency"
        self.label = peer.label()
        self.slug = peer.name

    @contextmanager
    def database(self, bench: Bench) -> Iterator[str]:
        with fresh_database(bench.admin_dsn, f"{self.slug}_latency", migrate=False) as dsn:
            self.peer._command(dsn, "install")
            yield dsn

    def enqueue(self, dsn: str, key: str) -> None:
        self.peer._command(dsn, "enqueue", key)

    def worker(self, dsn: str, bench: Bench, name: str, entries: Path) -> Process:
        env = {"BENCH_ENTRY_FILE": str(entries)}
        return self.peer._worker(dsn, bench, name, CONCURRENCY, env)

    def client(self, dsn: str, bench: Bench, count: int) -> list[tuple[str, float, float]]:
        out = bench.log_dir / f"latency-{self.slug}-client-{time.monotonic_ns()}.calls"
        self.peer._command(dsn, "client", str(count), str(out))
        calls = []
        for line in out.read_text().splitlines():
            key, before, after = line.split()
            calls.append((key, float(before), float(after)))
        return calls


def run(bench: Bench, peers: list[Peer]) -> dict[str, Any]:
    starts = bench.pick(5, 2)
    runs = bench.pick(300, 30)
    out: dict[str, Any] = {
        "starts": starts,
        "runs": runs,
        "warmup": WARMUP,
        "concurrency": CONCURRENCY,
        "systems": {},
    }
    ours = measure(bench, Side(), starts, runs)
    _record(bench, ours)
    out["systems"]["pgjobs"] = ours.as_dict()
    for peer in peers:
        side = PeerSide(peer)
        try:
            theirs = measure(bench, side, starts, runs)
        except Exception as exc:  # a peer failing is reported, not fatal
            bench.at("latency", START_CASE, side.label).add("median", None, "ms", note=short(exc))
            out["systems"][side.label] = {"error": str(exc)}
            continue
        _record(bench, theirs)
        out["systems"][side.label] = theirs.as_dict()
        out["systems"][side.label]["pgjobs_ratios"] = _record_ratios(bench, ours, theirs)
    return out


def measure(bench: Bench, side: Side, starts: int, runs: int) -> Result:
    """``starts`` worker start-ups, each in a fresh database; the last one's worker then serves
    ``runs`` timed enqueues (after :data:`WARMUP` untimed ones)."""
    result = Result(side.label, [], [], [])
    for n in range(starts):
        timed = runs if n == starts - 1 else 0
        start, latencies, calls = _session(bench, side, timed)
        result.starts_ms.append(start * 1000.0)
        result.latencies_ms += [s * 1000.0 for s in latencies]
        result.calls_ms += [s * 1000.0 for s in calls]
    return result


def _session(bench: Bench, side: Side, runs: int) -> tuple[float, list[float], list[float]]:
    """One fresh database and one worker: (spawn → first job entered in s, the latencies of
    ``runs`` timed enqueues in s, their enqueue calls' durations in s)."""
    name = f"latency-{side.slug}-{time.monotonic_ns()}"
    entries = bench.log_dir / f"{name}.entries"
    latencies: list[float] = []
    durations: list[float] = []
    with side.database(bench) as dsn, processes() as started:
        side.enqueue(dsn, "start")
        spawned = time.time()
        started.append(side.worker(dsn, bench, name, entries))
        entered = _entered(entries, {"start"}, started, 60.0)
        if runs:
            time.sleep(SETTLE_S)
            calls = side.client(dsn, bench, WARMUP + runs)
            seen = _entered(entries, {key for key, _, _ in calls}, started, 30.0)
            for key, before, after in calls[WARMUP:]:
                latencies.append(seen[key] - after)
                durations.append(after - before)
    return entered["start"] - spawned, latencies, durations


def _entered(
    entries: Path, keys: set[str], procs: list[Process], timeout: float
) -> dict[str, float]:
    """The moments the runs ``keys`` were entered, from the workers' entry files, once all were."""
    found: dict[str, float] = {}

    def all_entered() -> bool:
        for p in procs:
            p.check_alive()
        found.update(_read_entries(entries))
        return keys <= found.keys()

    try:
        wait_until(all_entered, timeout, f"{len(keys)} runs to be entered", interval=0.05)
    except TimeoutError as exc:
        missing = len(keys - found.keys())
        raise TimeoutError(f"{exc}: {missing} were not") from None
    return found


def _read_entries(entries: Path) -> dict[str, float]:
    found = {}
    for path in entries.parent.glob(f"{entries.name}.*"):
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) == 2:  # a line being written is skipped until it is whole
                found[parts[0]] = float(parts[1])
    return found


def _pauses(count: int) -> list[float]:
    """The pause before each enqueue: 15 to 25 ms, the same sequence for every system."""
    rng = random.Random(count)
    return [rng.uniform(0.015, 0.025) for _ in range(count)]


def _record(bench: Bench, result: Result) -> None:
    figures = result.as_dict()
    spread = ", ".join(f"{s:,.0f}" for s in result.starts_ms)
    recorder = bench.at("latency", START_CASE, result.system)
    recorder.add("median", figures["start_median_ms"], "ms", note=f"ms: {spread}")
    recorder.add("max", figures["start_max_ms"], "ms")
    recorder = bench.at("latency", ENQUEUE_CASE, result.system)
    count = len(result.latencies_ms)
    call = figures["enqueue_call_p50_ms"]
    note = f"{count} runs; enqueue call p50 {call:.2f} ms"
    recorder.add("p50", figures["latency_p50_ms"], "ms", "duration", note=note)
    recorder.add("p99", figures["latency_p99_ms"], "ms", "duration")
    recorder.add("max", figures["latency_max_ms"], "ms", "duration")


def _record_ratios(bench: Bench, ours: Result, theirs: Result) -> dict[str, float]:
    """pgjobs' figures divided by the peer's (below 1: pgjobs is quicker)."""
    a, b = ours.as_dict(), theirs.as_dict()
    system = f"pgjobs / {theirs.system}"
    ratios = {
        "start_median": a["start_median_ms"] / b["start_median_ms"],
        "latency_p50": a["latency_p50_ms"] / b["latency_p50_ms"],
        "latency_p99": a["latency_p99_ms"] / b["latency_p99_ms"],
    }
    bench.at("latency", START_CASE, system).add("median ratio", ratios["start_median"], "x")
    recorder = bench.at("latency", ENQUEUE_CASE, system)
    recorder.add("p50 ratio", ratios["latency_p50"], "x")
    recorder.add("p99 ratio", ratios["latency_p99"], "x")
    return ratios
