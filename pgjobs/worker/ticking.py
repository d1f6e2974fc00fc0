"""Ticking: turning the due ticks of this worker's schedules into runs, exactly once each.

Due jobs (their own schedules) and due runtime schedules are locked with ``SKIP LOCKED``, so one
worker materialises each tick; the tick's runs and the new watermark commit together, and the
unique (job, schedule, tick) key makes a tick's run exist once whatever happens to the
connection. A job's own schedule is ticked only by workers whose code has it (a rolling deploy);
a runtime schedule, whose cron is in its row, by any worker that registers its job.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property, lru_cache
from typing import Any

from pgjobs.errors import ConfigError
from pgjobs.limits import concurrency_key_of
from pgjobs.schedule import CronSchedule
from pgjobs.store import ClaimedRun, DueSchedule, ScheduleTick, ScheduleWatermark
from pgjobs.tick import TickPlan, plan_ticks
from pgjobs.worker.dispatch import Dispatch
from pgjobs.worker.settings import REAP_AFTER_TICKS, TICK_BATCH, TICK_FIRST_BATCH

log = logging.getLogger("pgjobs.worker")


@dataclass
class _Round:
    """One round of ticking: whether it locked any due row, how many runs it inserted, when
    (database time) its first transaction began, and whether it looked at runs' statistics."""

    locked: bool = False
    inserted: int = 0
    began: datetime | None = None
    statistics_checked: bool = False


class Ticking(Dispatch):
    @cached_property
    def _one_cadence(self) -> bool:
        """Whether this worker's scheduled jobs all share one schedule and timezone. Jobs due at
        one instant then all tick equally often, so a round's first batch needs no sort by
        how often they tick (``lock_due_jobs_oftenest_first`` reads every due job to sort
        them): the order of the index serves, and 10,000 jobs due at once cost no sort."""
        schedules = {
            (d.schedule, d.timezone)
            for d in self.registry.definitions.values()
            if d.schedule is not None
        }
        return len(schedules) <= 1

    async def _tick(self) -> tuple[bool, int]:
        """Materialise every due tick of our jobs: lock, insert runs, advance watermarks. Returns
        whether any due job could be locked (False: none is due, or another worker is ticking
        them) and how many runs were inserted.

        The worker that makes the ticks' runs claims them in the same transaction, ahead of
        whatever waits in the queue, in its free slots and in the reserve it keeps for ticks
        (``tick_reserve``): they start as soon as it commits, without a NOTIFY and another
        worker's claim in between, and a burst of enqueued work does not delay them. Other
        workers get the rest through the NOTIFY. If the commit's reply is lost, the runs it
        claimed are handed back by the next heartbeat.

        Once a round has inserted many runs, it refreshes runs' planner statistics if they are
        far behind (see :meth:`_refresh_statistics`), without waiting for the round's end.
        """
        result = _Round()
        await self._tick_jobs(result)
        await self._tick_schedules(result)
        return result.locked, result.inserted

    async def _refresh_statistics(self, result: _Round) -> None:
        """ANALYZE runs once a round has committed ``REAP_AFTER_TICKS`` runs or more, if its
        statistics are far behind them and nobody analysed it since the round began.

        Every worker's cached claim plan is made again after an ANALYZE; until then, a plan made
        for a near-empty table reads the whole queue several times per claim, and 10,000 ticks
        took seconds more to start. The server's own counters learn of the inserts only when the
        inserting backends report them, too late for the reaper's check. Once a round: a replica
        that finds the table analysed since its round began, or being analysed, leaves it; the
        reaper refreshes the statistics again if the rest of the ticks leave them far behind."""
        assert self.store is not None
        if result.statistics_checked or result.inserted < REAP_AFTER_TICKS:
            return
        assert result.began is not None
        result.statistics_checked = True
        if not await self.store.runs_statistics_behind_ticks(result.inserted, result.began):
            return
        if await self.store.analyze_runs():
            log.info(
                "refreshed the planner statistics of %s.runs after a tick of %d runs",
                self.settings.schema,
                result.inserted,
            )

    async def _tick_jobs(self, result: _Round) -> None:
        """The ticks of the jobs' own schedules (see :meth:`_tick`)."""
        assert self.store is not None
        store = self.store
        batch = TICK_FIRST_BATCH
        while True:
            claimed: list[ClaimedRun] = []
            async with store.conn.transaction():
                due = await store.lock_due_jobs(
                    batch, oftenest_first=batch == TICK_FIRST_BATCH and not self._one_cadence
                )
                if not due:
                    return
                if result.began is None:
                    result.began = due[0].db_now
                ticks: list[tuple[str, datetime]] = []
                watermarks: list[tuple[str, datetime | None, datetime | None]] = []
                # Jobs on the same schedule, due together, share one plan: with thousands of jobs
                # firing each minute, the cron arithmetic is done once, not per job.
                plans: dict[tuple[Any, ...], TickPlan] = {}
                for job in due:
                    key = (
                        job.schedule,
                        job.timezone,
                        job.next_fire_at,
                        job.db_now,
                        job.misfire,
                        job.backfill_cap,
                    )
                    plan = plans.get(key)
                    if plan is None:
                        cron = self.registry.definitions[job.name].cron
                        assert cron is not None  # lock_due_jobs returns our own schedules only
                        plan = plans[key] = plan_ticks(
                            cron,
                            next_fire_at=job.next_fire_at,
                            now=job.db_now,
                            misfire=job.misfire,
                            backfill_cap=job.backfill_cap,
                            misfire_grace=self.settings.misfire_grace,
                        )
                    ticks.extend((job.name, t) for t in plan.ticks)
                    watermarks.append(
                        (job.name, plan.next_fire_at, plan.ticks[-1] if plan.ticks else None)
                    )
                inserted = await store.insert_ticks_advance_watermarks(ticks, watermarks)
                result.inserted += len(inserted)
                claimed = await self._claim_ticks(inserted)
            self._dispatch(claimed)  # committed: now they may run
            result.locked = True
            await self._refresh_statistics(result)
            if len(due) < batch:
                return
            batch = TICK_BATCH

    async def _tick_schedules(self, result: _Round) -> None:
        """The ticks of runtime schedules (see :meth:`_tick`)."""
        assert self.store is not None
        store = self.store
        batch = TICK_FIRST_BATCH
        while True:
            async with store.conn.transaction():
                due_schedules = await store.lock_due_schedules(
                    batch, oftenest_first=batch == TICK_FIRST_BATCH
                )
                if not due_schedules:
                    return
                if result.began is None:
                    result.began = due_schedules[0].db_now
                schedule_ticks, schedule_marks = self._plan_schedules(due_schedules)
                inserted = await store.insert_schedule_ticks(schedule_ticks, schedule_marks)
                result.inserted += len(inserted)
                claimed = await self._claim_ticks(inserted)
            self._dispatch(claimed)
            result.locked = True
            await self._refresh_statistics(result)
            if len(due_schedules) < batch:
                return
            batch = TICK_BATCH

    async def _claim_ticks(self, inserted: list[int]) -> list[ClaimedRun]:
        """Claim the runs of the ticks just inserted, in the tick's transaction: its own ticks
        first, in its free slots and the reserve kept for ticks, whatever bulk work waits in the
        queue; then what else it has room for."""
        assert self.store is not None
        if not inserted or self._stopping:
            return []
        room = self._claim_room()
        mine = inserted[: room + self._tick_room()]
        batch = await self.store.finish_and_claim_runs(
            [],
            queues=self.queues,
            limit=max(0, room - len(mine)),
            lease=self.settings.lease,
            ticks=mine,
        )
        return batch.started

    def _plan_schedules(
        self, due: list[DueSchedule]
    ) -> tuple[list[ScheduleTick], list[ScheduleWatermark]]:
        """The ticks of due runtime schedules, and their new watermarks. A schedule's first tick
        is the first after it was last changed. One whose cron or timezone this worker cannot
        use gets the error instead, and ticks no more until it is changed."""
        ticks: list[ScheduleTick] = []
        marks: list[ScheduleWatermark] = []
        for s in due:
            try:
                cron = runtime_cron(s.cron, s.timezone)
            except ConfigError as exc:
                log.warning("schedule %r of job %s stops: %s", s.name, s.job, exc)
                marks.append(ScheduleWatermark(s.job, s.name, None, None, str(exc)))
                continue
            start = s.next_fire_at if s.next_fire_at is not None else cron.next_after(s.updated_at)
            plan = plan_ticks(
                cron,
                next_fire_at=start,
                now=s.db_now,
                misfire=s.misfire,
                backfill_cap=s.backfill_cap,
                misfire_grace=self.settings.misfire_grace,
            )
            key = self._schedule_key(s)
            ticks.extend(ScheduleTick(s.job, s.name, t, key) for t in plan.ticks)
            last = plan.ticks[-1] if plan.ticks else None
            marks.append(ScheduleWatermark(s.job, s.name, plan.next_fire_at, last))
        return ticks, marks

    def _schedule_key(self, s: DueSchedule) -> str | None:
        """The concurrency key of a runtime schedule's runs, from its payload, as enqueue would
        compute it; none when the job's own code fails to."""
        definition = self.registry.definitions.get(s.job)
        if definition is None or definition.concurrency_key is None:
            return None
        try:
            return concurrency_key_of(definition.concurrency_key, s.payload)
        except Exception as exc:  # the job's own code: its failure is the job's, not the tick's
            log.warning("schedule %r of job %s: its concurrency key failed: %s", s.name, s.job, exc)
            return None


@lru_cache(maxsize=1024)
def runtime_cron(expression: str, timezone: str) -> CronSchedule:
    """A runtime schedule's cron, parsed once per worker (raises ConfigError or CronError)."""
    return CronSchedule.parse(expression, timezone)
