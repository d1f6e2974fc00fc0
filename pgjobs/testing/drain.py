"""Draining the queue in a test: every due run, one at a time, in this process, with the
workers' own claim and finish statement."""

from __future__ import annotations

import asyncio
import random
from typing import Any

from pgjobs.db import connection_options
from pgjobs.errors import PgJobsError
from pgjobs.execution import RunExecution
from pgjobs.registry import Registry
from pgjobs.store import ClaimedRun, Outcome, WorkerStore

DRAIN_LEASE = 3600.0
"""Seconds a run claimed by a drain stays its own. A drain does not heartbeat; no reaper runs in
a test unless the test starts a worker, and this keeps a slow job from being reaped by one."""

DEFAULT_MAX_RUNS = 1000
"""Runs one drain executes at most before it takes the queue for one that never empties."""


class Drain:
    """One drain on ``store`` (whose worker id has the registry's jobs registered): its
    claims, the pools its jobs get (on ``dsn``), the runs it ran. ``queues``: the queues it
    serves, else every queue holding queued runs."""

    def __init__(
        self, store: WorkerStore, registry: Registry, dsn: str, queues: list[str] | None = None
    ) -> None:
        self.store = store
        self.registry = registry
        self.dsn = dsn
        self.queues = queues
        self.async_pool: Any = None
        self.sync_pool: Any = None

    async def run(self, include_delayed: bool, max_runs: int) -> list[int]:
        """Run due runs until none is left; the ids of those run, in order. Raises
        :class:`PgJobsError` when one more is due after ``max_runs``."""
        ran: list[int] = []
        outcomes: list[Outcome] = []
        while True:
            if outcomes:
                # Recorded before the next claim, not with it: a claim's snapshot would still see
                # the lock or slot that the run it records held, and pass over the runs waiting
                # for it (a worker claims again for them; a drain keeps the queue's order).
                await self.store.finish_and_claim_runs(outcomes, queues=[], limit=0, lease=0)
                outcomes = []
            queues = await self._queues()
            if include_delayed and queues:
                await self.store.conn.execute(
                    self.store.q["testing_make_delayed_runs_due"], {"queues": queues}
                )
            # One at a time: runs start in claim order, and a test reads them in that order.
            batch = await self.store.finish_and_claim_runs(
                [], queues=queues, limit=1, lease=DRAIN_LEASE
            )
            if not batch.started:
                return ran
            if len(ran) >= max_runs:
                ids = [claimed.id for claimed in batch.started]
                await self.store.hand_back_runs(ids, "the drain reached its max_runs")
                raise PgJobsError(
                    f"drain ran {max_runs} runs and the queue is still not empty: a job that "
                    "enqueues itself forever? (pass a larger max_runs if not)"
                )
            for claimed in batch.started:
                ran.append(claimed.id)
                outcomes.append(await self._execute(claimed))

    async def _execute(self, claimed: ClaimedRun) -> Outcome:
        """The run, as a worker's dispatch executes it, with the retry delay its job gives."""
        definition = self.registry.definitions[claimed.job]
        execution = RunExecution(
            definition,
            claimed,
            worker_id=self.store.worker_id,
            pool=await self._pool(definition.is_async),
            executor=None,
            schema=self.store.q.schema,
            dependencies=claimed.dependencies,
        )
        task = asyncio.ensure_future(execution.execute())
        execution.task = task
        outcome = await task
        if outcome.status in ("failed", "timed_out") and claimed.attempt < claimed.max_attempts:
            outcome.retry_delay = definition.retry_backoff.delay(claimed.attempt, random.random())
        return outcome

    async def _queues(self) -> list[str]:
        if self.queues is not None:
            return self.queues
        rows = await self.store.conn.execute(self.store.q["testing_queued_queues"])
        return [queue for (queue,) in await rows.fetchall()]

    async def _pool(self, is_async: bool) -> Any:
        """``ctx.db_pool``: async for async jobs, sync for sync ones, each opened when first
        needed."""
        from psycopg_pool import AsyncConnectionPool, ConnectionPool

        kwargs = connection_options()
        name = f"pgjobs-{self.store.worker_id}"
        if is_async:
            if self.async_pool is None:
                self.async_pool = AsyncConnectionPool(
                    self.dsn, min_size=1, max_size=4, open=False, name=name, kwargs=kwargs
                )
                await self.async_pool.open()
            return self.async_pool
        if self.sync_pool is None:
            self.sync_pool = ConnectionPool(
                self.dsn, min_size=1, max_size=4, open=True, name=name, kwargs=kwargs
            )
        return self.sync_pool

    async def close(self) -> None:
        """Close the pools."""
        if self.async_pool is not None:
            await self.async_pool.close()
        if self.sync_pool is not None:
            await asyncio.to_thread(self.sync_pool.close, 1)
