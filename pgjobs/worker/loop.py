"""The worker loop: heartbeat, tick, reap, claim, execute, finish, sleep.

One :class:`Worker` is one process's loop. Any number run side by side on any number of hosts;
they coordinate only through the database (row locks with ``SKIP LOCKED``, the unique tick key,
run locks with leases), never through each other. All of the worker's own statements go through
one connection, in this loop; jobs get their own pools.

The loop never ends on a database error. A lost connection (or one silent for longer than
``db_timeout``) is closed and opened again with back-off; the first statement after that is the
heartbeat, which reconciles what the database says the worker owns with what it runs. An error
of one statement is logged and the iteration is tried again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import socket
import time

import psycopg

from pgjobs import __version__
from pgjobs.db import first_line, redact
from pgjobs.worker.connection import (
    async_jobs_pool,
    is_connection_error,
    open_loop_connection,
)
from pgjobs.worker.core import Running
from pgjobs.worker.liveness import Liveness
from pgjobs.worker.progress import PROGRESS_INTERVAL
from pgjobs.worker.settings import PREFETCH_HOLD, REAP_AFTER_TICKS, TICK_RETRY
from pgjobs.worker.ticking import Ticking
from pgjobs.worker.wakeups import Wakeups

log = logging.getLogger("pgjobs.worker")

CLOSE_TIMEOUT = 2.0
"""Seconds a stopping worker waits for cancelled jobs and for its pools to close."""


class Worker(Ticking, Liveness, Wakeups):
    """One worker process's loop over the queue and the schedules of ``registry``'s jobs."""

    _listener: asyncio.Task[None] | None = None
    _pool_check: asyncio.Task[None] | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Stop claiming; running jobs get ``settings.grace`` seconds to finish."""
        if not self._stopping:
            log.info(
                "worker %s stopping: waiting up to %.0fs for %d running run(s)",
                self.id,
                self.settings.grace,
                len(self._running),
            )
            self._stopping = True
            self._stop_requested_at = time.monotonic()
        self._wake.set()

    async def run(self, started: asyncio.Event | None = None) -> None:
        """Run until :meth:`request_stop`; then finish or hand back running runs and return.

        ``started`` is set once the worker's jobs and row are registered and it begins to claim.
        """
        try:
            if not await self._open():
                return
            if started is not None:
                started.set()
            woken = True
            while True:
                self._wake.clear()
                try:
                    async with asyncio.timeout(self.settings.statement_deadline):
                        await self._connect_if_needed()
                        if self._stopping and await self._drain_for_shutdown():
                            break
                        timeout = await self._iterate(woken)
                    self._backoff.reset()
                except (psycopg.Error, TimeoutError) as exc:
                    timeout = await self._on_error(exc)
                    if self._stopping and self.store is None and self._stop_without_database():
                        break
                except Exception:
                    # A defect, not a fault of the database: say where, and keep serving.
                    log.exception("unexpected error in the worker loop; going on")
                    timeout = self._backoff.next_delay()
                woken = await self._sleep(timeout)
        finally:
            await self._close()

    async def _open(self) -> bool:
        """Connect, register the jobs and the worker, start listening. While the database is
        unreachable, or registration meets a transient conflict, wait and try again; False if a
        stop was asked for meanwhile."""
        self.async_pool = async_jobs_pool(self.settings, self.id)
        await self.async_pool.open(wait=False)
        while True:
            try:
                async with asyncio.timeout(self.settings.statement_deadline * 2):
                    await self._connect_if_needed()
                    # Jobs first: once a worker's row says it is running, the jobs it runs
                    # exist, and an application may enqueue them.
                    await self._sync_jobs()
                    await self._register()
                break
            except (psycopg.Error, TimeoutError) as exc:
                delay = self._backoff.next_delay()
                log.warning(
                    "worker %s cannot start yet (attempt %d: %s); retrying in %.1fs",
                    self.id,
                    self._backoff.attempt,
                    self._reason(exc),
                    delay,
                )
                await self._drop_connection()
                if await self._sleep(delay) and self._stopping:
                    return False
        self._backoff.reset()
        self.metrics.worker_info(
            worker_id=self.id,
            host=socket.gethostname(),
            pid=os.getpid(),
            version=__version__,
            queues=self.queues,
            concurrency=self.settings.concurrency,
        )
        if self.settings.listen:
            self._listener = asyncio.create_task(self._listen(), name="pgjobs-listen")
        log.info(
            "worker %s started: %d job(s), queues %s, concurrency %d",
            self.id,
            len(self.job_names),
            ",".join(self.queues),
            self.settings.concurrency,
        )
        return True

    async def _close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
        if self.store is not None:
            try:
                async with asyncio.timeout(self.settings.statement_deadline):
                    await self.store.deregister_worker()
            except (psycopg.Error, TimeoutError) as exc:
                log.warning("could not mark worker %s stopped: %s", self.id, self._reason(exc))
            await self.store.conn.close()
        # Closing a pool waits for its connections; one left half-open by a job that was
        # cancelled mid-query can take psycopg seconds to give up. Exiting matters more.
        if self.async_pool is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CLOSE_TIMEOUT):
                    await self.async_pool.close(timeout=1)
        if self.sync_pool is not None:
            self.sync_pool.close(timeout=1)
        self._executor.shutdown(wait=False, cancel_futures=True)
        log.info("worker %s stopped", self.id)

    # -- the loop's connection -------------------------------------------------------------

    async def _connect_if_needed(self) -> None:
        from pgjobs.store import WorkerStore

        if self.store is not None and not self.store.conn.closed:
            return
        conn = await open_loop_connection(self.settings, self.id)
        self.store = WorkerStore(conn, self.queries, self.id)
        if self._backoff.attempt:
            log.info("database connection restored")
            self._refresh_pools()
            self._hold_reaping()

    async def _drop_connection(self) -> None:
        if self.store is not None:
            await self.store.conn.close()
            self.store = None

    async def _on_error(self, exc: BaseException) -> float:
        """An iteration failed: reconnect after a lost connection, else log and go on. Returns
        how long to wait before the next iteration."""
        self._timers.next_claim = 0.0
        conn = self.store.conn if self.store is not None else None
        delay = self._backoff.next_delay()
        if is_connection_error(exc, conn):
            log.warning(
                "database connection lost (%s); reconnecting in %.1fs", self._reason(exc), delay
            )
            await self._drop_connection()
            # The first statement on the new connection is the heartbeat: it extends this
            # worker's leases and reconciles what it owns before anything else.
            self._timers.next_heartbeat = 0.0
        else:
            log.error("database error (%s); trying again in %.1fs", self._reason(exc), delay)
        return delay

    def _reason(self, exc: BaseException) -> str:
        """The first line of a database error, without the DSN's password."""
        return redact(first_line(exc), self.settings.dsn)

    def _refresh_pools(self) -> None:
        """After an outage, have the jobs' pools replace their broken connections now, rather
        than when their own back-off comes round."""
        if self.async_pool is not None:
            self._pool_check = asyncio.create_task(
                self.async_pool.check(), name="pgjobs-check-async-pool"
            )
        if self.sync_pool is not None:
            self._executor.submit(self.sync_pool.check)

    # -- one iteration ---------------------------------------------------------------------

    async def _iterate(self, woken: bool) -> float:
        """Do what is due; return how long to sleep at most before the next iteration.

        ``woken``: a NOTIFY arrived, a run finished or a stop was asked for. Only then, or when
        the poll interval or a known due time has come, does the worker look at the queue; a
        wake-up for a heartbeat or a reap alone costs no claim statement, nor does a NOTIFY to
        a worker with no room and no outcome to record.
        """
        assert self.store is not None
        now = time.monotonic()
        timers = self._timers
        # A look at the ticks called for from here on (a schedule changed) may come after the
        # tick below read the schedules: it must survive this iteration.
        looks = self._tick_looks
        if now >= timers.next_heartbeat:
            await self._heartbeat()
            timers.next_heartbeat = now + self.settings.heartbeat_interval
        locked_due = True
        if self.settings.scheduler and not self._stopping and now >= timers.next_tick:
            locked_due, inserted = await self._tick()
            timers.next_claim = 0.0  # the tick's runs are claimable now
            if inserted >= REAP_AFTER_TICKS:
                # So many new runs can leave runs' planner statistics far behind, and every
                # worker's cached claim plan with them (made for a near-empty queue, it sorts the
                # whole queue per claim); the reaper refreshes them when they are.
                timers.next_reap = now
        if now >= timers.next_reap:
            await self._reap()
            timers.next_reap = now + self.settings.reap_every
        if now >= timers.next_progress:
            await self._record_progress()  # no statement when no run reported anything
            timers.next_progress = now + PROGRESS_INTERVAL
        if self._prefetched and now - self._prefetched[0].claimed >= PREFETCH_HOLD:
            await self._hand_back_prefetched(f"no free slot within {PREFETCH_HOLD:g}s")
        if now >= timers.next_claim or (
            (self._outcomes or (woken and self._claim_room())) and self._worth_a_statement()
        ):
            free = self._claim_room()
            batch = await self._finish_and_claim(free)
            # Tick again when the next tick is due by the database clock. Schedule changes and
            # resumes arrive as NOTIFYs; without LISTEN, look again every poll interval too.
            due_in = math.inf if batch.wakeup_in is None else max(0.0, batch.wakeup_in) + 0.001
            if not locked_due and batch.wakeup_in is not None and batch.wakeup_in <= 0:
                # Due ticks this worker could not lock: another worker is making them, and its
                # commit's NOTIFY says when they are in. Look again later, not in a spin that
                # takes the CPU the other worker needs.
                due_in = TICK_RETRY
            if not self.settings.listen:
                due_in = min(due_in, self.settings.poll_interval)
            # Unless a look at the ticks was called for since the iteration began (a schedule
            # changed): the tick, and the claim's reply, may predate the change.
            timers.next_tick = now + due_in if self._tick_looks == looks else 0.0
            timers.next_claim = now + min(due_in, self.settings.poll_interval)
            if free and len(batch.started) == free and self._slot_free():
                # The queue may hold more and a slot is free: look again at once. (Room to
                # prefetch only waits for the next run to end: claimed at once, each statement
                # would carry the few outcomes recorded meanwhile.)
                timers.next_claim = now
            await self._settle(free, batch)
            self._retry_deferred(batch, now)
        if self._stopping:
            return 0.1
        due = min(timers.next_claim, timers.next_tick, timers.next_heartbeat, timers.next_reap)
        if self._running:
            # Jobs report progress from threads too, without waking the loop: look every
            # PROGRESS_INTERVAL while a run executes (a look that finds none costs no statement).
            due = min(due, timers.next_progress)
        if self._prefetched:
            due = min(due, self._prefetched[0].claimed + PREFETCH_HOLD)
        return max(0.0, due - now)

    # -- shutdown --------------------------------------------------------------------------

    async def _drain_for_shutdown(self) -> bool:
        """While stopping: record outcomes; past the grace, cancel and hand back. True when done."""
        assert self.store is not None and self._stop_requested_at is not None
        if self._prefetched:
            await self._hand_back_prefetched("worker shutting down")
        await self._finish_and_claim(0)
        if not self._running:
            return True
        if time.monotonic() - self._stop_requested_at < self.settings.grace:
            if time.monotonic() >= self._timers.next_heartbeat:
                await self._heartbeat()
                self._timers.next_heartbeat = time.monotonic() + self.settings.heartbeat_interval
            return False
        entries = self._cancel_running()
        ids = [e.run.id for e in entries]
        count = await self.store.hand_back_runs(
            ids, f"handed back by worker {self.id} at shutdown after {self.settings.grace:g}s"
        )
        log.warning("grace period over: handed %d run(s) back to the queue", count)
        # A cancelled job stuck in a query on a dead connection may take psycopg seconds to
        # let go; its run is handed back already, so wait only a moment.
        await asyncio.wait([e.task for e in entries], timeout=CLOSE_TIMEOUT)
        self._running.clear()
        return True

    def _cancel_running(self) -> list[Running]:
        """Cancel every executing run, its outcome unwanted; the entries, still to be awaited."""
        entries = list(self._running.values())
        for entry in entries:
            entry.handed_back = True
            entry.execution.cancel("worker shutting down")
            entry.task.cancel()
        return entries

    def _stop_without_database(self) -> bool:
        """Stopping, with the database out of reach: whether to stop now. At once when nothing
        waits to be recorded; else once the grace is over, leaving the runs it held to the other
        workers' reapers (their leases end; each is retried if attempts remain)."""
        assert self._stop_requested_at is not None
        held = len(self._outcomes) + len(self._running) + len(self._prefetched)
        if not held:
            return True
        if time.monotonic() - self._stop_requested_at < self.settings.grace:
            return False
        self._cancel_running()
        self._running.clear()
        log.warning(
            "stopping without the database: %d run(s) held here are left to the reaper once"
            " their leases end (%d outcome(s) not recorded)",
            held,
            len(self._outcomes),
        )
        return True
