"""Judging every-second schedules: which ticks of a window ran, how often, and how late.

A tick counts when it lies in the window ``[start, end)``; the window starts after every replica
is up and ends a couple of seconds before the workers stop, so each of its ticks had its chance.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from benchmarks.harness import Execution, percentile


@dataclass(frozen=True)
class TickReport:
    jobs: int
    window_s: float
    expected: int
    ran: int
    duplicates: int
    missing: int
    lag_p50_ms: float | None
    lag_p99_ms: float | None
    lag_max_ms: float | None

    def as_dict(self) -> dict[str, float | int | None]:
        return dict(self.__dict__)


def resolve_ticks(executions: Iterable[Execution]) -> list[tuple[str, float, float]]:
    """(job, tick, started) per execution whose tick is known.

    Where a system reports only the tick it scheduled next (``next_tick``), an execution ran for
    the ``next_tick`` of the job's previous execution; a job's first execution is then dropped.
    """
    resolved: list[tuple[str, float, float]] = []
    previous: dict[str, Execution] = {}
    for ex in sorted(executions, key=lambda e: (e.job, e.entered)):
        tick = ex.tick
        if tick is None:
            before = previous.get(ex.job)
            tick = before.next_tick if before is not None else None
        previous[ex.job] = ex
        if tick is not None:
            resolved.append((ex.job, tick, ex.entered))
    return resolved


def judge(
    runs: Iterable[tuple[str, float, float]], jobs: list[str], start: float, end: float
) -> TickReport:
    """Duplicates (ticks that ran more than once), missing ticks and lag (ms) over the window."""
    ticks = range(math.ceil(start), math.ceil(end))
    counts: Counter[tuple[str, int]] = Counter()
    lags: list[float] = []
    for job, tick, started in runs:
        if start <= tick < end:
            counts[(job, round(tick))] += 1
            lags.append((started - tick) * 1000.0)
    expected = len(jobs) * len(ticks)
    missing = sum(1 for job in jobs for t in ticks if counts[(job, t)] == 0)
    return TickReport(
        jobs=len(jobs),
        window_s=end - start,
        expected=expected,
        ran=expected - missing,
        duplicates=sum(1 for c in counts.values() if c > 1),
        missing=missing,
        lag_p50_ms=percentile(lags, 0.50),
        lag_p99_ms=percentile(lags, 0.99),
        lag_max_ms=max(lags) if lags else None,
    )
