"""Liveness: the heartbeat that keeps this worker's runs its own, and the reaper that frees the
runs of workers that died.

The heartbeat extends the leases of exactly the runs this process holds in memory, and
reconciles what the database says the worker owns with what it runs:

- a held run the database no longer gives to this worker (reaped while it could not heartbeat)
  is cancelled here, since another worker may run it now;
- a run the database gives to this worker but that it does not hold (a claim whose reply was
  lost with the connection) goes back to the queue;
- nothing else is kept alive: a run nobody executes loses its lease and is reaped.
"""

from __future__ import annotations

import logging
import time
from collections import deque

from pgjobs.store import Outcome
from pgjobs.worker.core import Prefetched
from pgjobs.worker.dispatch import Dispatch
from pgjobs.worker.registration import Registration

log = logging.getLogger("pgjobs.worker")


class Liveness(Registration, Dispatch):
    #: No reaping before this ``time.monotonic()``: see :meth:`_hold_reaping`.
    _reap_not_before = 0.0
    #: Where the next sweep of blocked runs goes on (the last blocked run the previous read).
    _settle_after = 0

    def _hold_reaping(self) -> None:
        """This worker's connection came back after it could not reach the database: reap
        nothing for a lease. What cut it off may have cut off every worker, and their leases ran
        out meanwhile. After a restart the reaper itself counts leases from the server's start,
        but a standby promoted by a failover started long before: the first worker back would
        take the runs of the others, which reconnect within a back-off and heartbeat first
        thing. (A worker cut off alone loses nothing by waiting: the others reap meanwhile.)"""
        self._reap_not_before = time.monotonic() + self.settings.lease
        self._timers.next_reap = max(self._timers.next_reap, self._reap_not_before)

    async def _heartbeat(self) -> None:
        assert self.store is not None
        beat = await self.store.heartbeat(
            held=self.held_run_ids(),
            since=self._registered_at,
            ttl=self.settings.lease,
            lease=self.settings.lease,
        )
        if beat.handed_back:
            log.warning(
                "handed back %d run(s) this worker was given by a claim whose reply was lost",
                beat.handed_back,
            )
        if beat.registered_jobs == 0 and self.registered:
            log.warning("worker %s was taken for dead; registering its jobs again", self.id)
            await self._register()
        kept: deque[Prefetched] = deque()
        for h in self._prefetched:
            if h.run.id in beat.cancel_requested:
                # Never started: recorded as cancelled without running.
                self._outcomes.append(Outcome(h.run.id, "cancelled", 0.0, "cancelled by operator"))
            elif h.run.id in beat.owned:
                kept.append(h)  # a run no longer ours (reaped) is dropped
        self._prefetched = kept
        for run_id, entry in list(self._running.items()):
            if run_id in beat.cancel_requested:
                entry.execution.cancel("cancelled by operator")
            elif run_id not in beat.owned and not entry.task.done():
                # Reaped while we could not heartbeat: someone else may run it now.
                entry.execution.cancel("lease lost")

    async def _reap(self) -> None:
        assert self.store is not None
        if time.monotonic() < self._reap_not_before:
            return  # brought forward (a burst of claims or ticks) while reaping is held
        self._claimed_since_reap = 0
        reaped = await self.store.reap_expired_leases()
        if reaped.statistics_stale:
            if await self.store.analyze_runs():
                log.info("refreshed the planner statistics of %s.runs", self.settings.schema)
            else:
                log.debug("the planner statistics of %s.runs are behind", self.settings.schema)
        self.metrics.reaped(reaped.reaped)
        self.metrics.retried(reaped.retried)
        if reaped.reaped or reaped.dead_workers:
            log.warning(
                "reaped %d run(s) with expired leases (%d retried), %d dead worker(s)",
                reaped.reaped,
                reaped.retried,
                reaped.dead_workers,
            )
        # The safety net of workflows: a blocked run whose release was missed (its enqueue
        # committed after its dependency's end began) is settled within a lease.
        settled = await self.store.settle_blocked(after_id=self._settle_after)
        self._settle_after = settled.last_id
        if settled.settled:
            log.info("settled %d blocked run(s) whose dependencies had ended", settled.settled)
