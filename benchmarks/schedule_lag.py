"""schedule lag: 4 worker replicas, 20 jobs firing every second, for 60 s (quick: 8 s).

For pgjobs, from ``pgjobs.runs``: ticks that ran more than once (duplicates), ticks of the window
with no run that started (missing; ``skipped`` runs are counted apart) and the lag
``started_at - scheduled_for`` (p50/p99/max). The jobs also note the moment their code runs, so the
lag is given a second time to that moment: the one definition the peers can be measured by too.
"""

from __future__ import annotations

import time
from typing import Any

import psycopg

from benchmarks.databases import fresh_database
from benchmarks.harness import Bench, Recorder, read_executions, short
from benchmarks.peers import Peer
from benchmarks.processes import pgjobs_worker, processes, wait_registered
from benchmarks.ticks import TickReport, judge, resolve_ticks

REPLICAS = 4
JOBS = 20

_RUNS = """
SELECT job, extract(epoch FROM scheduled_for)::float8, extract(epoch FROM started_at)::float8,
       status
FROM pgjobs.runs
WHERE trigger = 'schedule'
"""


def run(bench: Bench, peers: list[Peer]) -> dict[str, Any]:
    seconds = bench.pick(60, 8)
    case = f"{REPLICAS} replicas, {JOBS} jobs/s, {seconds}s"
    out: dict[str, Any] = {"replicas": REPLICAS, "jobs": JOBS, "seconds": seconds, "systems": {}}

    by_db, by_entry, skipped = _pgjobs(bench, seconds)
    recorder = bench.at("schedule lag", case, "pgjobs")
    _record(recorder, by_db, "started_at", counts=True)
    _record(recorder, by_entry, "job entry", counts=False)
    recorder.add("skipped ticks", skipped, "ticks")
    out["systems"]["pgjobs"] = {
        "started_at": by_db.as_dict(),
        "job_entry": by_entry.as_dict(),
        "skipped": skipped,
    }

    for peer in peers:
        peer_recorder = bench.at("schedule lag", case, peer.label())
        try:
            executions, start, end = peer.schedule(bench, REPLICAS, JOBS, seconds)
            names = [f"bench_second_{i:02d}" for i in range(JOBS)]
            report = judge(resolve_ticks(executions), names, start, end)
        except Exception as exc:  # a peer failing is reported, not fatal
            peer_recorder.add("missing ticks", None, "ticks", note=short(exc))
            out["systems"][peer.label()] = {"error": str(exc)}
            continue
        _record(peer_recorder, report, "job entry", counts=True)
        out["systems"][peer.label()] = {"job_entry": report.as_dict()}
    return out


def _pgjobs(bench: Bench, seconds: float) -> tuple[TickReport, TickReport, int]:
    ticks_file = bench.log_dir / f"lag-pgjobs-{time.monotonic_ns()}.ticks"
    env = {"BENCH_JOBS": str(JOBS), "BENCH_TICKS_FILE": str(ticks_file)}
    names = [f"bench-second-{i:02d}" for i in range(JOBS)]
    with fresh_database(bench.admin_dsn, "lag") as dsn:
        with processes() as started:
            for i in range(REPLICAS):
                name = f"lag-{i + 1}-{time.monotonic_ns()}"
                started.append(pgjobs_worker(dsn, bench.log_dir, name, "every_second", env=env))
            wait_registered(dsn, started)
            start = float(int(time.time()) + 2)
            end = start + seconds
            time.sleep(max(0.0, end + 2 - time.time()))
            for p in started:
                p.check_alive()
        with psycopg.connect(dsn, autocommit=True) as conn:
            rows = conn.execute(_RUNS).fetchall()
    ran = [(job, tick, started_at) for job, tick, started_at, _ in rows if started_at is not None]
    skipped = sum(1 for _, tick, _, status in rows if status == "skipped" and start <= tick < end)
    by_db = judge(ran, names, start, end)
    by_entry = judge(resolve_ticks(read_executions(ticks_file)), names, start, end)
    return by_db, by_entry, skipped


def _record(recorder: Recorder, report: TickReport, lag_to: str, *, counts: bool) -> None:
    if counts:
        recorder.add("duplicate ticks", report.duplicates, "ticks")
        recorder.add("missing ticks", report.missing, "ticks", note=f"of {report.expected}")
    for metric, value in (
        ("p50", report.lag_p50_ms),
        ("p99", report.lag_p99_ms),
        ("max", report.lag_max_ms),
    ):
        recorder.add(f"lag {metric} (to {lag_to})", value, "ms", "duration")
