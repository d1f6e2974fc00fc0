"""Ticking: turning the due ticks of this worker's schedules into runs, exactly once each.

Due jobs (their own schedules) and due runtime schedules are locked with ``SKIP LOCKED``, so one
worker materialises each tick; the tick's runs and the new watermark commit together, and the
unique (job, schedule, tick) key makes a tick's run exist once whatever happens to the
connection. A job's own schedule is ticked only by workers whose code has it (a rolling deploy);
a runtime schedule, whose cron is in its row, by any worker that registers its job.
"""

from __future__ import annotations

import logging
from datetime import datetime
from functools import lru_cache
from typing import Any

from pgjobs.errors import ConfigError
from pgjobs.limits import concurrency_key_of
from pgjobs.schedule import CronSchedule
from pgjobs.store import ClaimedRun, DueSchedule, ScheduleTick, ScheduleWatermark
from pgjobs.tick import TickPlan, plan_ticks
from pgjobs.worker.dispatch import Dispatch
from pgjobs.worker.settings import TICK_BATCH, TICK_FIRST_BATCH

log = logging.getLogger("pgjobs.worker")


class Ticking(Dispatch):
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
        """
        jobs_locked, jobs_inserted = await self._tick_jobs()
        schedules_locked, schedules_inserted = await self._tick_schedules()
        return jobs_locked or schedules_locked, jobs_inserted + schedules_inserted

    async def _tick_jobs(self) -> tuple[bool, int]:
        """The ticks of the jobs' own schedules (see :meth:`_tick`)."""
        assert self.store is not None
        store = self.store
        locked_any = False
        inserted_all = 0
        batch = TICK_FIRST_BATCH
        while True:
            claimed: list[ClaimedRun] = []
            async with store.conn.transaction():
                due = await store.lock_due_jobs(batch, oftenest_first=batch == TICK_FIRST_BATCH)
                if not due:
                    return locked_any, inserted_all
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
                inserted_all += len(inserted)
                claimed = await self._claim_ticks(inserted)
            self._dispatch(claimed)  # committed: now they may run
            locked_any = True
            if len(due) < batch:
                return True, inserted_all
            batch = TICK_BATCH

    async def _tick_schedules(self) -> tuple[bool, int]:
        """The ticks of runtime schedules (see :meth:`_tick`)."""
        assert self.store is not None
        store = self.store
        locked_any = False
        inserted_all = 0
        batch = TICK_FIRST_BATCH
        while True:
            async with store.conn.transaction():
                due_schedules = await store.lock_due_schedules(
                    batch, oftenest_first=batch == TICK_FIRST_BATCH
                )
                if not due_schedules:
                    return locked_any, inserted_all
                schedule_ticks, schedule_marks = self._plan_schedules(due_schedules)
                inserted = await store.insert_schedule_ticks(schedule_ticks, schedule_marks)
                inserted_all += len(inserted)
                claimed = await self._claim_ticks(inserted)
            self._dispatch(claimed)
            locked_any = True
            if len(due_schedules) < batch:
                return True, inserted_all
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
