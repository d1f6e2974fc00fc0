"""cold start: a steady enqueue rate from the first second, on workers idle over an empty queue.

The workers (``bench-noop``, W processes x C) start on a fresh database and idle for a few
seconds: their claim statement is prepared, and its generic plan made, while ``runs`` is empty.
Then :class:`~benchmarks.load.SteadyLoad` enqueues ``rate`` runs a second for ``seconds``. Per
second of the load, by the run's ``created_at`` (the database clock, from the load's start): the
lag ``started_at - created_at`` p50/p99/max of the runs enqueued in that second; the claim
statement's mean time (``pg_stat_statements``, the cluster preloads it); what the planner knows
of ``runs`` (``pg_class.relpages``) beside its real size; and the statistics events (ANALYZE by
a worker, autoanalyze, autovacuum) from ``pg_stat_user_tables``.

With ``explain``, ``auto_explain`` logs a sample of the statements' plans with the plan the
backend really used (a worker's cached generic plan, not a fresh one): each second then also
says how many of the sampled claim plans read ``runs`` with a sequential scan.
"""

from __future__ import annotations

import contextlib
import re
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

import psycopg

from benchmarks.databases import fresh_database
from benchmarks.harness import percentile, wait_until
from benchmarks.load import LoadReport, SteadyLoad
from benchmarks.processes import pgjobs_worker, processes, wait_registered
from benchmarks.queueing import queue_empty

JOB = "bench-noop"
IDLE = 3.0  # seconds the workers idle on the empty queue before the load starts
RAMP = 30.0  # the first seconds of the load, set against the rest (the steady state)
DRAIN_AFTER = 60.0  # seconds the backlog left when the load ends may take to start

#: The claim statement, as pg_stat_statements and auto_explain show it.
CLAIM_MARK = "picked_work AS ("

_STATISTICS = """
SELECT clock_timestamp(), c.relpages, pg_relation_size(c.oid)::bigint / 8192,
       s.analyze_count, s.autoanalyze_count, s.autovacuum_count,
       (SELECT coalesce(sum(calls), 0)::bigint FROM pg_stat_statements WHERE query LIKE %(claim)s),
       (SELECT coalesce(sum(total_exec_time), 0)::float8 FROM pg_stat_statements
        WHERE query LIKE %(claim)s)
FROM pg_class c JOIN pg_stat_user_tables s ON s.relid = c.oid
WHERE c.oid = 'pgjobs.runs'::regclass
"""

_PER_SECOND = """
SELECT floor(extract(epoch FROM r.created_at - %(t0)s))::int AS second, count(*),
       count(r.started_at),
       percentile_cont(0.5) WITHIN GROUP (ORDER BY l.lag),
       percentile_cont(0.99) WITHIN GROUP (ORDER BY l.lag),
       max(l.lag)
FROM pgjobs.runs r
CROSS JOIN LATERAL (SELECT extract(epoch FROM r.started_at - r.created_at) AS lag) l
WHERE r.job = %(job)s AND r.created_at >= %(t0)s
GROUP BY 1 ORDER BY 1
"""

_LAGS = """
SELECT extract(epoch FROM r.created_at - %(t0)s)::float8,
       extract(epoch FROM r.started_at - r.created_at)::float8
FROM pgjobs.runs r
WHERE r.job = %(job)s AND r.created_at >= %(t0)s AND r.started_at IS NOT NULL
"""

#: What the server adds for ``explain``: plans of a sample of statements, as executed.
EXPLAIN_SETTINGS = {
    "auto_explain.log_min_duration": "0",
    "auto_explain.sample_rate": "0.02",
    "auto_explain.log_nested_statements": "off",
}


class Statistics(NamedTuple):
    """``runs`` and the claim statement at one moment."""

    at: datetime
    relpages: int  # what the planner knows (pg_class)
    pages: int  # the table's real size
    analyzes: int  # by hand: a worker's
    autoanalyzes: int
    autovacuums: int
    claims: int
    claims_ms: float  # their total time


@dataclass
class Second:
    """One second of the load, by the runs enqueued in it and the statistics sampled in it."""

    second: int
    enqueued: int = 0
    started: int = 0
    lag_p50_ms: float | None = None
    lag_p99_ms: float | None = None
    lag_max_ms: float | None = None
    claim_ms: float | None = None  # mean of the claim statements that ended in this second
    claims: int = 0
    relpages: int | None = None  # what the planner knows (pg_class)
    pages: int | None = None  # the table's real size
    events: list[str] = field(default_factory=list)
    seq_scan_plans: int | None = None  # sampled claim plans that read runs sequentially
    sampled_plans: int | None = None


@dataclass
class ColdStart:
    workers: int
    concurrency: int
    rate: float
    seconds: float
    load: LoadReport
    per_second: list[Second]
    ramp: dict[str, float | None]
    steady: dict[str, float | None]

    def as_dict(self) -> dict[str, Any]:
        return {
            **{k: v for k, v in asdict(self).items() if k not in ("load",)},
            "load": {**asdict(self.load), "achieved": self.load.achieved},
        }


def run(
    admin_dsn: str,
    log_dir: Path,
    *,
    rate: float,
    seconds: float,
    workers: int = 2,
    concurrency: int = 10,
    server_log: Path | None = None,
) -> ColdStart:
    """The cold start on a fresh database of the server at ``admin_dsn`` (which preloads
    pg_stat_statements); ``server_log``: the server's log, when auto_explain writes to it."""
    with fresh_database(admin_dsn, "coldstart") as dsn:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        with processes() as started, psycopg.connect(dsn, autocommit=True) as conn:
            for i in range(workers):
                name = f"coldstart-{i + 1}-{time.monotonic_ns()}"
                started.append(pgjobs_worker(dsn, log_dir, name, "drain", concurrency=concurrency))
            wait_registered(dsn, started)
            time.sleep(IDLE)
            log_offset = server_log.stat().st_size if server_log else 0
            with SteadyLoad(dsn, JOB, rate, seconds=seconds) as load:
                t0 = _db_now(conn)
                load.start()
                samples = _sample(conn, started, seconds + 2)
                report = load.stop()
            with contextlib.suppress(TimeoutError):  # a backlog's runs start, to be counted
                wait_until(lambda: queue_empty(conn), DRAIN_AFTER, "the backlog to drain", 0.5)
            seconds_rows = conn.execute(_PER_SECOND, {"t0": t0, "job": JOB}).fetchall()
            lags = conn.execute(_LAGS, {"t0": t0, "job": JOB}).fetchall()
    per_second = _per_second(t0, seconds_rows, samples)
    if server_log is not None:
        _add_plans(per_second, server_log, log_offset, t0)
    return ColdStart(
        workers,
        concurrency,
        rate,
        seconds,
        report,
        per_second,
        _summary([lag for at, lag in lags if at < RAMP]),
        _summary([lag for at, lag in lags if at >= RAMP]),
    )


def _db_now(conn: psycopg.Connection[Any]) -> datetime:
    row = conn.execute("SELECT clock_timestamp()").fetchone()
    assert row is not None
    now: datetime = row[0]
    return now


def _sample(conn: psycopg.Connection[Any], started: list[Any], seconds: float) -> list[Statistics]:
    """The statistics of runs, once a second."""
    samples = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for p in started:
            p.check_alive()
        row = conn.execute(_STATISTICS, {"claim": f"%{CLAIM_MARK}%"}).fetchone()
        assert row is not None
        samples.append(Statistics(*row))
        time.sleep(max(0.0, 1.0 - (time.monotonic() % 1.0)))
    return samples


def _per_second(
    t0: datetime, rows: list[tuple[Any, ...]], samples: list[Statistics]
) -> list[Second]:
    by_second: dict[int, Second] = {}
    for second, count, started, p50, p99, peak in rows:
        by_second[second] = Second(second, count, started, _ms(p50), _ms(p99), _ms(peak))
    previous: Statistics | None = None
    for sample in samples:
        second = int((sample.at - t0).total_seconds())
        entry = by_second.setdefault(second, Second(second))
        entry.relpages, entry.pages = sample.relpages, sample.pages
        if previous is None:
            if sample.analyzes or sample.autoanalyzes or sample.autovacuums:
                entry.events.append(
                    f"before the load: ANALYZE x{sample.analyzes}, autoanalyze "
                    f"x{sample.autoanalyzes}, autovacuum x{sample.autovacuums}"
                )
        else:
            calls = sample.claims - previous.claims
            if calls:
                entry.claims = calls
                entry.claim_ms = (sample.claims_ms - previous.claims_ms) / calls
            for event in ("analyzes", "autoanalyzes", "autovacuums"):
                if getattr(sample, event) > getattr(previous, event):
                    entry.events.append(_EVENTS[event])
        previous = sample
    return [by_second[s] for s in sorted(by_second)]


_EVENTS = {"analyzes": "ANALYZE", "autoanalyzes": "autoanalyze", "autovacuums": "autovacuum"}


def _summary(lags: list[float]) -> dict[str, float | None]:
    return {
        "runs": float(len(lags)),
        "p50_ms": _ms(percentile(lags, 0.5)),
        "p99_ms": _ms(percentile(lags, 0.99)),
        "max_ms": _ms(max(lags) if lags else None),
    }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else float(seconds) * 1000.0


_PLAN_HEADER = re.compile(r"^(\S+ \S+) \S+ \[\d+\] (?:\S+ )?LOG:  duration: [0-9.]+ ms  plan:")


def _add_plans(per_second: list[Second], log: Path, offset: int, t0: datetime) -> None:
    """Count, per second, the sampled claim plans in the server log and those among them that
    read runs with a sequential scan."""
    by_second = {s.second: s for s in per_second}
    with log.open(errors="replace") as f:
        f.seek(offset)
        text = f.read()
    for chunk in re.split(r"\n(?=\S+ \S+ \S+ \[\d+\])", text):
        header = _PLAN_HEADER.match(chunk)
        if header is None or CLAIM_MARK not in chunk:
            continue
        at = datetime.fromisoformat(header.group(1)).replace(tzinfo=t0.tzinfo)
        entry = by_second.get(int((at - t0).total_seconds()))
        if entry is None:
            continue
        entry.sampled_plans = (entry.sampled_plans or 0) + 1
        if re.search(r"Seq Scan on runs ", chunk):
            entry.seq_scan_plans = (entry.seq_scan_plans or 0) + 1


def table(result: ColdStart) -> str:
    """The per-second table and the ramp-up set against the steady state."""
    explain = any(s.sampled_plans is not None for s in result.per_second)
    head = ["second", "enqueued", "lag p50", "lag p99", "lag max", "claims", "claim ms",
            "pages (planner)"]  # fmt: skip
    if explain:
        head.append("seq-scan plans")
    head.append("statistics")
    rows = [head]
    for s in result.per_second:
        row = [
            str(s.second),
            f"{s.enqueued:,}",
            _fmt_ms(s.lag_p50_ms),
            _fmt_ms(s.lag_p99_ms),
            _fmt_ms(s.lag_max_ms),
            f"{s.claims:,}",
            "" if s.claim_ms is None else f"{s.claim_ms:.2f}",
            "" if s.pages is None else f"{s.pages:,} ({s.relpages:,})",
        ]
        if explain:
            row.append(f"{s.seq_scan_plans or 0}/{s.sampled_plans}" if s.sampled_plans else "")
        row.append(", ".join(s.events))
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.append("")
    for label, part in (
        (f"ramp-up (first {RAMP:.0f} s)", result.ramp),
        ("steady state", result.steady),
    ):
        lines.append(
            f"{label}: {part['runs']:,.0f} runs, lag p50 {_fmt_ms(part['p50_ms'])}, "
            f"p99 {_fmt_ms(part['p99_ms'])}, max {_fmt_ms(part['max_ms'])}"
        )
    load = result.load
    lines.append(
        f"load: {load.enqueued:,} runs in {load.seconds:.1f} s ({load.achieved:,.0f}/s of "
        f"{load.rate:,.0f}/s asked; a client was at most {load.behind:,} runs behind)"
    )
    return "\n".join(lines)


def _fmt_ms(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value / 1000:.2f} s" if value >= 1000 else f"{value:.1f} ms"
