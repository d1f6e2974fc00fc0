"""Dispatch: claiming runs, starting them in free slots (or holding them, prefetched), and
recording how they ended.

Outcomes stay in memory until the statement that records them commits, so none is lost while
the database is away; the guard on state and owner makes a repeated write a no-op. An outcome the
database refuses (a data error, not a lost connection) belongs to its run alone: the batch is
recorded run by run, and a refused outcome is replaced by a plain ``failed`` one that says why.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
from collections import deque

import psycopg

from pgjobs.db import first_line
from pgjobs.execution import RunExecution
from pgjobs.outcomes import failed_outcome
from pgjobs.store import Batch, ClaimedRun, Outcome
from pgjobs.worker.connection import is_connection_error, sync_jobs_pool
from pgjobs.worker.core import Prefetched, Running
from pgjobs.worker.progress import Progress
from pgjobs.worker.settings import PREFETCH_WHEN_SHORTER, REAP_AFTER_CLAIMS

log = logging.getLogger("pgjobs.worker")


class Dispatch(Progress):
    #: Runs claimed since the last reap (see REAP_AFTER_CLAIMS).
    _claimed_since_reap = 0

    def _worth_a_statement(self) -> bool:
        """Whether a finished run or a wake-up is worth a statement now. While prefetched runs
        wait here, finished runs are recorded in batches: when half the prefetched runs have
        started, or a whole concurrency's worth of outcomes is waiting."""
        if not self._prefetched or self._stopping:
            return True
        return (
            len(self._prefetched) <= self.settings.prefetch_limit // 2
            or len(self._outcomes) >= self.settings.concurrency
        )

    def _claim_room(self) -> int:
        """How many runs the next claim may take: the free slots, plus, while recent runs were
        short, ``prefetch_limit`` more that wait here for a slot. Prefetched runs start as soon
        as a run ends, without a round trip, so the next statement runs while they execute."""
        if self._stopping:
            return 0
        room = self.settings.concurrency - len(self._running)
        recent = self._recent_duration
        if recent is not None and recent < PREFETCH_WHEN_SHORTER:
            room += self.settings.prefetch_limit
        return max(0, room - len(self._prefetched))

    async def _finish_and_claim(self, free: int) -> Batch:
        """Record every finished run's outcome and claim up to ``free`` runs, in one statement.
        While the worker runs, an outcome whose run's row another transaction holds is left for
        a later statement rather than waited for (see _deferrable)."""
        assert self.store is not None
        outcomes, self._outcomes = self._outcomes, []
        deferrable = self._deferrable(outcomes)
        try:
            await self._record_last_progress(outcomes, deferrable)
            batch = await self.store.finish_and_claim_runs(
                outcomes,
                queues=self.queues,
                limit=free,
                lease=self.settings.lease,
                listening=self._listening,
                defer=deferrable,
            )
        except (psycopg.Error, TypeError, ValueError) as exc:
            self._outcomes[:0] = outcomes  # write them with the next statement
            if not outcomes or is_connection_error(exc, self.store.conn):
                raise
            # The database refused one of the outcomes: record them one at a time.
            await self._record_outcomes_one_by_one()
            return await self._finish_and_claim(free)
        except BaseException:
            self._outcomes[:0] = outcomes
            raise
        if batch.deferred:
            self._outcomes[:0] = [o for o in outcomes if o.run_id in batch.deferred]
            outcomes = [o for o in outcomes if o.run_id not in batch.deferred]
        limited = sum(1 for o in outcomes if o.run_id in self._limited_ended)
        self._limited_ended.difference_update(o.run_id for o in outcomes)
        self._log_recorded(outcomes, batch)
        self._claimed_since_reap += len(batch.started)
        if self._claimed_since_reap >= REAP_AFTER_CLAIMS:
            self._timers.next_reap = 0.0
        self._dispatch(batch.started)
        if limited:
            await self._on_slots_freed(limited, batch, free)
        return batch

    def _retry_deferred(self, batch: Batch, now: float) -> None:
        """After a statement that left outcomes for later, record them again soon: at once
        when another run ends, else after DEFER_FIRST, doubling while their rows stay held."""
        if not batch.deferred:
            self._defer_backoff.reset()
            return
        wait = self._defer_backoff.next_delay()
        self._timers.next_claim = min(self._timers.next_claim, now + wait)

    async def _on_slots_freed(self, freed: int, batch: Batch, free: int) -> None:
        """The statement recorded the end of ``freed`` limited runs and so freed their slots.
        If it took fewer limited runs again, runs may wait for those slots, which its walk of
        the queue still saw taken (its snapshot precedes its own changes). With a slot free
        here, claim again at once. A worker that took none of them, its room filled with other
        work, or that stops wakes the other workers to take them (one that took some is busy
        with such runs, and its next statement takes the rest)."""
        assert self.store is not None
        if self._stopping:
            await self.store.notify("slot")
            return
        retaken = sum(1 for run in batch.started if run.limited)
        if retaken >= freed:
            return
        if len(batch.started) < free and self._slot_free():
            self._timers.next_claim = 0.0
            self._wake.set()
        elif retaken == 0:
            await self.store.notify("slot")

    async def _record_outcomes_one_by_one(self) -> None:
        """Record each waiting outcome alone; one the database refuses becomes ``failed``."""
        assert self.store is not None
        while self._outcomes:
            outcome = self._outcomes[0]
            try:
                batch = await self.store.finish_and_claim_runs(
                    [outcome], queues=[], limit=0, lease=0
                )
            except (psycopg.Error, TypeError, ValueError) as exc:
                if is_connection_error(exc, self.store.conn):
                    raise
                log.error(
                    "the database refused the outcome of run %d (%s); recording it as failed",
                    outcome.run_id,
                    first_line(exc),
                )
                replacement = failed_outcome(
                    outcome.run_id,
                    f"the database refused this run's outcome: {first_line(exc)}",
                    duration=outcome.duration,
                )
                replacement.retry_delay = outcome.retry_delay
                replacement.start_delay = outcome.start_delay
                batch = await self.store.finish_and_claim_runs(
                    [replacement], queues=[], limit=0, lease=0
                )
            self._outcomes.pop(0)
            self._log_recorded([outcome], batch)

    def _log_recorded(self, outcomes: list[Outcome], batch: Batch) -> None:
        for outcome in outcomes:
            if outcome.run_id not in batch.finished:
                # Reaped while this worker could not heartbeat, or recorded already: by a
                # statement whose reply was lost with the connection (a failover) and that is
                # sent again, which the guard on state and owner makes a no-op.
                log.warning(
                    "run %d finished as %s but was no longer ours (reaped, or recorded already"
                    " by a statement whose reply was lost); this outcome is discarded",
                    outcome.run_id,
                    outcome.status,
                )
            elif outcome.run_id in batch.retried:
                log.info(
                    "run %d %s; retry queued as run %d in %.1fs",
                    outcome.run_id,
                    outcome.status,
                    batch.retried[outcome.run_id],
                    outcome.retry_delay or 0.0,
                )
        self.metrics.retried(len(batch.retried))

    def _slot_free(self) -> bool:
        """Whether a claimed run would start here now, rather than wait prefetched."""
        return not self._prefetched and len(self._running) < self.settings.concurrency

    def _tick_room(self) -> int:
        """How many of the slots kept for ticks (``tick_reserve``, beyond the concurrency) are
        free."""
        busy = len(self._running) - self.settings.concurrency
        return max(0, self.settings.tick_slots - max(0, busy))

    def _dispatch(self, claimed: list[ClaimedRun]) -> None:
        """Start claimed runs in the free slots, ticks also in the reserve kept for them; the
        others wait here, prefetched."""
        self.metrics.claimed(len(claimed))
        now = time.monotonic()
        for run in claimed:
            if len(self._running) < self.settings.concurrency or (
                run.trigger == "schedule" and self._tick_room()
            ):
                self._start(run)
            else:
                self._prefetched.append(Prefetched(run, now))

    async def _hand_back_prefetched(self, reason: str) -> None:
        """Return the prefetched runs to the queue (same rows, no attempt used)."""
        assert self.store is not None
        held, self._prefetched = self._prefetched, deque()
        self._recent_duration = None  # prefetch again only once a run has ended
        try:
            count = await self.store.hand_back_runs(
                [h.run.id for h in held], f"prefetched by worker {self.id}, handed back: {reason}"
            )
        except BaseException:
            self._prefetched.extendleft(reversed(held))
            raise
        log.info("handed %d prefetched run(s) back to the queue: %s", count, reason)

    def _start(self, run: ClaimedRun, start_delay: float = 0.0) -> None:
        definition = self.registry.definitions[run.job]
        if definition.is_async:
            pool: object = self.async_pool
        else:
            # Opened with the first sync run: many workers never need it.
            if self.sync_pool is None:
                self.sync_pool = sync_jobs_pool(self.settings, self.id)
            pool = self.sync_pool
        execution = RunExecution(
            definition,
            run,
            worker_id=self.id,
            pool=pool,
            executor=self._executor,
            schema=self.settings.schema,
            progress=self.progress.report,
            dependencies=run.dependencies,
        )
        task = asyncio.create_task(execution.execute())
        execution.task = task
        self._running[run.id] = Running(run, execution, task, start_delay=start_delay)
        lag = (run.started_at - run.scheduled_for).total_seconds() + start_delay
        self.metrics.run_started(run.job, lag)
        task.add_done_callback(functools.partial(self._on_done, run.id))

    def _on_done(self, run_id: int, _task: object = None) -> None:
        entry = self._running.pop(run_id, None)
        if entry is None:
            return
        if (
            self._prefetched
            and not self._stopping
            and len(self._running) < self.settings.concurrency
        ):
            held = self._prefetched.popleft()
            self._start(held.run, start_delay=time.monotonic() - held.claimed)
        task = entry.task
        if entry.handed_back or task.cancelled():
            self.metrics.run_released(entry.run.job)
            return
        try:
            outcome = task.result()
        except Exception as exc:  # execute() returns an outcome for anything a job does
            outcome = failed_outcome(run_id, f"the run's outcome could not be made: {exc!r:.500}")
        if entry.run.limited:
            self._limited_ended.add(run_id)
        self.metrics.run_finished(entry.run.job, outcome.status, outcome.duration)
        recent = self._recent_duration
        self._recent_duration = (
            outcome.duration if recent is None else 0.8 * recent + 0.2 * outcome.duration
        )
        definition = self.registry.definitions[entry.run.job]
        if outcome.status in ("failed", "timed_out") and entry.run.attempt < entry.run.max_attempts:
            delay = definition.retry_backoff.delay(entry.run.attempt, random.random())
            outcome.retry_delay = delay
        if entry.start_delay:
            outcome.start_delay = entry.start_delay
        self._outcomes.append(outcome)
        self._wake.set()
