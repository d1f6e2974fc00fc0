"""What the soak reads while it runs, every few seconds: the ``runs`` table and its indexes, its
tuples and (auto)vacuums, the worker statements' counters, the workers' memory, and the runs of
the last slice of time with their lags.

Runs are read in slices of ``created_at`` (the BRIN index finds them) once they are ``SETTLE``
seconds old, so nearly all have started, and before the soak's short retention prunes them.
A run not started by then is counted with the lag it had so far, a lower bound, and as late.
"""

from __future__ import annotations

import time
from array import array
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg

from benchmarks.processes import Process

INTERVAL = 5.0
SETTLE = 5.0

#: Fragments that name the worker statements in pg_stat_statements.
STATEMENTS = {
    "claim": "%picked_work AS (%",
    "reap": "%expired AS (%",
    "analyze": "ANALYZE %runs%",
}

_TABLE = """
SELECT clock_timestamp(), pg_relation_size(c.oid)::bigint, pg_indexes_size(c.oid)::bigint,
       c.relpages, s.n_live_tup, s.n_dead_tup, s.autovacuum_count, s.autoanalyze_count,
       s.analyze_count,
       (SELECT count(*) FROM pgjobs.runs r WHERE r.status = 'queued' AND r.scheduled_for <= now())
FROM pg_class c JOIN pg_stat_user_tables s ON s.relid = c.oid
WHERE c.oid = 'pgjobs.runs'::regclass
"""

_INDEXES = """
SELECT i.indexrelid::regclass::text, pg_relation_size(i.indexrelid)::bigint
FROM pg_index i WHERE i.indrelid = 'pgjobs.runs'::regclass ORDER BY 1
"""

_STATEMENTS = """
SELECT coalesce(sum(calls), 0)::bigint, coalesce(sum(total_exec_time), 0)::float8
FROM pg_stat_statements WHERE query LIKE %s
"""

# Lags in seconds: a queued run's from its enqueue, a tick's from its scheduled time.
_SLICE = """
SELECT r.job, r.status,
       extract(epoch FROM r.created_at)::float8,
       extract(epoch FROM coalesce(r.started_at, clock_timestamp()) - r.created_at)::float8,
       extract(epoch FROM coalesce(r.started_at, clock_timestamp()) - r.scheduled_for)::float8,
       r.started_at IS NOT NULL
FROM pgjobs.runs r
WHERE r.created_at >= %(since)s AND r.created_at < %(until)s AND r.trigger <> 'retry'
"""

_PRUNES = """
SELECT extract(epoch FROM r.finished_at)::float8, r.status, coalesce(r.items_processed, 0),
       coalesce(r.duration_seconds, 0)
FROM pgjobs.runs r
WHERE r.job = 'pgjobs-prune-runs' AND r.finished_at >= %(since)s AND r.finished_at < %(until)s
"""


@dataclass
class Sample:
    """The server and the workers at one moment (``at``: epoch seconds, the database clock)."""

    at: float
    table_bytes: int
    index_bytes: int
    planner_pages: int
    live: int
    dead: int
    autovacuums: int
    autoanalyzes: int
    analyzes: int  # by hand: a worker's
    queued: int  # due and waiting
    statements: dict[str, tuple[int, float]]  # name: (calls, total ms)
    rss_kib: list[int]
    indexes: dict[str, int] = field(default_factory=dict)  # each index of runs: bytes


class Lags:
    """Runs' lags in seconds by their creation time (epoch seconds), in arrays: a half-hour soak
    reads millions of runs."""

    def __init__(self) -> None:
        self.created = array("d")
        self.seconds = array("d")
        self.started = array("b")

    def add(self, created: float, seconds: float, started: bool) -> None:
        self.created.append(created)
        self.seconds.append(seconds)
        self.started.append(started)

    def between(
        self, start: float, end: float, *, from_second: float = 0.0
    ) -> tuple[list[float], int]:
        """The lags of the runs created in ``[start, end)`` (at ``from_second`` of a minute or
        later), and how many of them had not started when read (their lag so far is among the
        lags)."""
        lags = []
        late = 0
        for created, seconds, started in zip(self.created, self.seconds, self.started, strict=True):
            if start <= created < end and created % 60 >= from_second:
                lags.append(seconds)
                late += not started
        return lags, late


@dataclass
class Prune:
    finished: float
    status: str
    deleted: int
    seconds: float


@dataclass
class Observations:
    """Everything read during the soak."""

    samples: list[Sample] = field(default_factory=list)
    lags: dict[str, Lags] = field(default_factory=dict)  # kind of run: lags
    skipped: list[float] = field(default_factory=list)  # creation times of skipped ticks
    prunes: list[Prune] = field(default_factory=list)


def kind_of(job: str) -> str | None:
    """Which figure a run of ``job`` counts in: ``queue`` (the steady enqueues), ``second``
    (ticks of the every-second jobs), ``minute`` (ticks of the every-minute schedules)."""
    if job == "bench-noop":
        return "queue"
    if job.startswith("bench-second-"):
        return "second"
    if job.startswith("bench-minute-") or job == "bench-runtime":
        return "minute"
    return None


class Sampler:
    """Reads the soak's database (on a connection of its own) and its worker processes."""

    def __init__(self, dsn: str, workers: list[Process]) -> None:
        self.conn = psycopg.connect(dsn, autocommit=True)
        self.workers = workers
        self.seen = Observations()
        self._until: datetime | None = None  # runs created before this were read
        self._pruned_until: datetime | None = None

    def __enter__(self) -> Sampler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.conn.close()

    def now(self) -> datetime:
        row = self.conn.execute("SELECT clock_timestamp()").fetchone()
        assert row is not None
        result: datetime = row[0]
        return result

    def start(self, at: datetime) -> None:
        """Read runs created from ``at`` on."""
        self._until = self._pruned_until = at

    def sample(self, *, settle: float = SETTLE) -> Sample:
        """One sample, and the runs created since the last one up to ``settle`` seconds ago."""
        for worker in self.workers:
            worker.check_alive()
        row = self.conn.execute(_TABLE).fetchone()
        assert row is not None
        at, table, indexes, relpages, live, dead, autovacuums, autoanalyzes, analyzes, queued = row
        statements = {}
        for name, pattern in STATEMENTS.items():
            counted = self.conn.execute(_STATEMENTS, [pattern]).fetchone()
            assert counted is not None
            statements[name] = (int(counted[0]), float(counted[1]))
        sample = Sample(
            at.timestamp(), table, indexes, relpages, live, dead, autovacuums, autoanalyzes,
            analyzes, queued, statements, [w.rss_kib() for w in self.workers],
            {name.removeprefix("pgjobs."): size for name, size in self.conn.execute(_INDEXES)},
        )  # fmt: skip
        self.seen.samples.append(sample)
        self._read_runs(at, settle)
        return sample

    def _read_runs(self, now: datetime, settle: float) -> None:
        from datetime import timedelta

        assert self._until is not None and self._pruned_until is not None
        until = now - timedelta(seconds=settle)
        if until > self._until:
            rows = self.conn.execute(_SLICE, {"since": self._until, "until": until}).fetchall()
            for job, status, created, queue_lag, tick_lag, started in rows:
                kind = kind_of(job)
                if kind is None:
                    continue
                if status == "skipped":
                    self.seen.skipped.append(created)
                    continue
                lag = queue_lag if kind == "queue" else tick_lag
                self.seen.lags.setdefault(kind, Lags()).add(created, lag, started)
            self._until = until
        rows = self.conn.execute(_PRUNES, {"since": self._pruned_until, "until": now}).fetchall()
        self.seen.prunes.extend(Prune(*r) for r in rows)
        self._pruned_until = now


def every(interval: float, deadline: float, step: Any) -> None:
    """Call ``step()`` every ``interval`` seconds (monotonic) until ``deadline``."""
    next_at = time.monotonic()
    while True:
        next_at += interval
        if next_at > deadline:
            time.sleep(max(0.0, deadline - time.monotonic()))
            return
        time.sleep(max(0.0, next_at - time.monotonic()))
        step()
