"""Where a tick becomes a run: which due ticks of a job to materialise, under its misfire policy.

Pure arithmetic on the database clock's "now"; the worker runs it inside the transaction that
locks the job's row, inserts the runs and advances the watermark (see ``WorkerStore``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from pgjobs.schedule import CronSchedule

_EPSILON = timedelta(microseconds=1)


@dataclass(frozen=True)
class TickPlan:
    """The ticks to insert as runs, and the job's new watermark (its next tick after now)."""

    ticks: list[datetime]
    next_fire_at: datetime


def plan_ticks(
    cron: CronSchedule,
    *,
    next_fire_at: datetime,
    now: datetime,
    misfire: str,
    backfill_cap: int,
    misfire_grace: float,
) -> TickPlan:
    """Decide which due ticks (``next_fire_at <= tick <= now``) become runs.

    A tick no older than ``misfire_grace`` seconds is on time and always runs. Older ones were
    missed (every worker down, the job paused): ``coalesce`` runs the latest missed tick once,
    ``skip`` runs none of them, ``backfill`` runs each of them, the latest ``backfill_cap`` at
    most.
    """
    grace_start = now - timedelta(seconds=misfire_grace)
    on_time = cron.fire_times_between(max(next_fire_at, grace_start) - _EPSILON, now, limit=10_000)
    keep_missed = {"backfill": backfill_cap, "coalesce": 1}.get(misfire, 0)
    missed: list[datetime] = []
    if keep_missed and next_fire_at < grace_start:
        latest = cron.previous_fire_times(grace_start - _EPSILON, keep_missed)
        missed = [t for t in latest if t >= next_fire_at]
    ticks = missed + on_time
    return TickPlan(ticks=ticks, next_fire_at=cron.next_after(now))
