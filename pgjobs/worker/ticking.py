"""Ticking: turning the due ticks of this worker's schedules into runs, exactly once each.

Due jobs are locked with ``SKIP LOCKED``, so one worker materialises each tick; the tick's runs
and the job's new watermark commit together, and the unique (job, tick) key makes a tick's run
exist once whatever happens to the connection.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pgjobs.store import ClaimedRun
from pgjobs.tick import TickPlan, plan_ticks
from pgjobs.worker.dispatch import Dispatch
from pgjobs.worker.settings import TICK_BATCH


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
        assert self.store is not None
        store = self.store
        locked_any = False
        inserted_all = 0
        while True:
            claimed: list[ClaimedRun] = []
            async with store.conn.transaction():
                due = await store.lock_due_jobs(TICK_BATCH)
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
                if inserted and not self._stopping:
                    # Its own ticks first, in its free slots and the reserve kept for ticks,
                    # whatever bulk work waits in the queue; then what else it has room for.
                    room = self._claim_room()
                    mine = inserted[: room + self._tick_room()]
                    batch = await store.finish_and_claim_runs(
                        [],
                        queues=self.queues,
                        limit=max(0, room - len(mine)),
                        lease=self.settings.lease,
                        ticks=mine,
                    )
                    claimed = batch.started
            self._dispatch(claimed)  # committed: now they may run
            locked_any = True
            if len(due) < TICK_BATCH:
                return True, inserted_all
