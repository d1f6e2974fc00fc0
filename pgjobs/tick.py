"""Where a tick becomes a run: which due ticks of a job to materialise, under its misfire policy.

Pure arithmetic on the database clock's "now"; the worker runs it inside the transaction that
locks the job's row, inserts the runs and advances the watermark (see ``WorkerStore``).

Every tick at or after the watermark either becomes a run or is dropped by the misfire policy;
none is lost in between. A plan holds at most ``max_ticks`` ticks: when more are due, the
watermark stops after the last one planned, the job stays due, and the next plan (the worker's
next tick, at once) goes on from there.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from pgjobs.schedule import CronSchedule

_EPSILON = timedelta(microseconds=1)

#: The most ticks one plan materialises (one transaction's inserts).
MAX_TICKS = 10_000
#: The latest due tick is still on time while it is no later than this share of the gap to the
#: tick after it (up to ``SCALED_GRACE_MAX``), however small the configured grace: a blip at
#: the instant a daily or hourly job is due does not make it a missed tick.
SCALED_GRACE_SHARE = 0.01
SCALED_GRACE_MAX = timedelta(minutes=15)


@dataclass(frozen=True)
class TickPlan:
    """The ticks to insert as runs, and the job's new watermark.

    The watermark is the first tick after now, or, when more ticks were due than one plan
    holds, the first tick after the last one planned (then still due).
    """

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
    max_ticks: int = MAX_TICKS,
) -> TickPlan:
    """Decide which due ticks (``next_fire_at <= tick <= now``) become runs.

    A tick no older than ``misfire_grace`` seconds is on time and always runs; so is the latest
    due tick while it is no later than 1% of the gap to the next tick (15 minutes at most). Older
    ones were missed (every worker down, the job paused): ``coalesce`` runs the latest missed
    tick once, ``skip`` runs none of them, ``backfill`` runs each of them, the latest
    ``backfill_cap`` at most. At most ``max_ticks`` ticks are planned, the earliest first; the
    watermark then stops after the last of them, so the next plan takes the rest.
    """
    if max_ticks < 1:
        raise ValueError(f"max_ticks must be >= 1, got {max_ticks}")
    following = cron.next_after(now)
    grace_start = now - timedelta(seconds=misfire_grace)
    if next_fire_at < grace_start:
        grace_start = _scaled_grace_start(cron, now, grace_start, following)
    keep_missed = {"backfill": backfill_cap, "coalesce": 1}.get(misfire, 0)
    missed: list[datetime] = []
    if keep_missed and next_fire_at < grace_start:
        latest = cron.previous_fire_times(grace_start - _EPSILON, keep_missed)
        missed = [t for t in latest if t >= next_fire_at]
    ticks = missed[:max_ticks]
    full = len(ticks) < len(missed)
    if not full:
        room = max_ticks - len(ticks)
        start = max(next_fire_at, grace_start) - _EPSILON
        on_time = cron.fire_times_between(start, now, limit=room + 1)
        full = len(on_time) > room
        ticks += on_time[:room]
    return TickPlan(ticks=ticks, next_fire_at=cron.next_after(ticks[-1]) if full else following)


def _scaled_grace_start(
    cron: CronSchedule, now: datetime, grace_start: datetime, following: datetime
) -> datetime:
    """``grace_start``, moved back to the latest due tick if that one is on time by the
    schedule's own interval (see ``SCALED_GRACE_SHARE``)."""
    latest = cron.previous_fire_times(now, 1)
    if not latest or latest[0] >= grace_start:
        return grace_start
    allowed = min((following - latest[0]) * SCALED_GRACE_SHARE, SCALED_GRACE_MAX)
    return latest[0] if now - latest[0] <= allowed else grace_start
