"""Wake-ups: LISTEN/NOTIFY on the pgjobs channel, and sleeping until the next due time.

A worker LISTENs on a connection of its own, on ``--listen-dsn`` when it has one: behind a
transaction pooler the session that LISTENs must be a direct one, or NOTIFYs go astray.

The LISTEN connection is checked with a statement whenever it has been quiet for a lease: a
half-open connection (a partition, a frozen host) would otherwise wait for NOTIFYs forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from pgjobs.backoff import Backoff
from pgjobs.db import first_line, redact
from pgjobs.store import Batch
from pgjobs.worker.connection import open_listen_connection
from pgjobs.worker.core import WorkerCore
from pgjobs.worker.settings import RECONNECT_FIRST, SETTLE_FIRST, SETTLE_MAX

log = logging.getLogger("pgjobs.worker")


class Wakeups(WorkerCore):
    async def _sleep(self, timeout: float) -> bool:
        """Sleep up to ``timeout`` seconds; True if something woke us before that."""
        if self._wake.is_set():
            return True
        if timeout > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
        return self._wake.is_set()

    async def _settle(self, room: int, batch: Batch) -> None:
        """After ``batch``, a claim for ``room`` runs: when the claim came short on a listening
        worker, it marked the worker waiting, and an enqueue that looked at the workers before
        that mark committed sent no NOTIFY (sql/0015_quiet_enqueue.up.sql). So before the worker
        sleeps, it settles: while such an enqueue is still open it looks again a moment later;
        once none is, it claims once more if a run came meanwhile. Settled, it sleeps until a
        NOTIFY, a run's end or its poll interval: every later enqueue sees the mark and wakes
        it.

        What counts is whether the claim was made listening, not whether the worker listens
        now: a claim made before the LISTEN was up marked nothing, and settling after it would
        leave the next claim, the first to mark, unsettled."""
        assert self.store is not None
        listening = batch.listening and self._listening
        if batch.started or not room or not listening or self._stopping:
            self._settled = False
            return
        if self._settled:  # a poll that found nothing new: the mark has not changed
            return
        verdict = await self.store.settle_idle(self.queues)
        timers = self._timers
        if verdict == "busy":
            timers.next_claim = time.monotonic() + self._settle_delay
            self._settle_delay = min(self._settle_delay * 2, SETTLE_MAX)
            return
        self._settle_delay = SETTLE_FIRST
        self._settled = True
        if verdict == "queued":
            # Claimed with a snapshot that follows every enqueue the tries found closed: if that
            # claim comes short too, nothing is missed.
            timers.next_claim = 0.0

    def _on_notify(self, payload: str) -> None:
        """A NOTIFY wakes the loop. ``run`` (runs were queued, for this worker alone or for all)
        and ``slot`` (a limited run ended) call for a claim, whose reply also says when the next
        tick is due; anything else (a job or a queue paused or resumed, a schedule changed) for a
        look at the ticks too. ``cancel:<id>``: an operator cancelled a run; if this worker holds
        it, the heartbeat that tells its job comes now rather than at its time."""
        kind, _, ref = payload.partition(":")
        if kind == "cancel":
            if ref.isdigit() and int(ref) in self.held_run_ids():
                self._timers.next_heartbeat = 0.0
                self._wake.set()
            return
        if kind not in ("run", "slot"):
            self._look_at_ticks()  # a schedule may have changed
        # A wake-up on this worker's channel took its mark off (notify_runs_inserted): the claim
        # it calls for marks it anew, and settles again.
        self._settled = False
        self._wake.set()

    async def _listen(self) -> None:
        """Turn NOTIFYs on the pgjobs channel into wake-ups; reconnect when the link drops."""
        backoff = Backoff(RECONNECT_FIRST, self.settings.backoff_max)
        deadline = self.settings.statement_deadline
        while True:
            try:
                async with asyncio.timeout(deadline):
                    conn = await open_listen_connection(self.settings, self.id)
                async with conn:
                    async with asyncio.timeout(deadline):
                        await conn.execute(f'LISTEN "{self.queries.channel}"')
                        cur = await conn.execute(
                            self.queries["wake_channel"],
                            {"channel": self.queries.channel, "worker": self.id},
                        )
                        row = await cur.fetchone()
                        assert row is not None
                        await conn.execute(f'LISTEN "{row[0]}"')
                    # From now on a claim that comes short marks this worker waiting (see
                    # notify_runs_inserted): it hears the wake-up meant for it alone.
                    self._listening = True
                    self._settled = False
                    if backoff.attempt:
                        log.info("listening for wake-ups again")
                    backoff.reset()
                    self._look_at_ticks()  # catch up on what we may have missed
                    self._wake.set()
                    while True:
                        async for notify in conn.notifies(timeout=self.settings.lease):
                            self._on_notify(notify.payload)
                        async with asyncio.timeout(deadline):  # quiet for a lease: still there?
                            await conn.execute("SELECT 1")
            except asyncio.CancelledError:
                self._listening = False
                raise
            except Exception as exc:  # any failure of the link: reconnect
                self._listening = False
                where = self.settings.listen_dsn or self.settings.dsn
                log.debug("listen connection lost: %s", redact(first_line(exc), where))
                await asyncio.sleep(backoff.next_delay())
