"""The worker loop: tick, claim, execute, finish, reap, sleep.

One :class:`Worker` is one process's loop. Any number run side by side on any number of hosts;
they coordinate only through the database (row locks with ``SKIP LOCKED``, the unique tick key,
run locks with leases), never through each other. All of the worker's own statements go through
one connection, in this loop; jobs get their own pools.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import os
import random
import socket
import time
import uuid
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from pgjobs import __version__
from pgjobs.errors import PgJobsError
from pgjobs.execution import RunExecution
from pgjobs.metrics import WorkerMetrics
from pgjobs.registry import JobDefinition, Registry
from pgjobs.store import Batch, ClaimedRun, Outcome, Queries, RegisteredJob, WorkerStore
from pgjobs.tick import TickPlan, plan_ticks

log = logging.getLogger("pgjobs.worker")

TICK_BATCH = 1000

REAP_AFTER_TICKS = 1000
"""A tick that inserts this many runs brings the next reap (and its statistics check) forward."""

TICK_RETRY = 0.1
"""Seconds before looking again at due ticks another worker had locked (its NOTIFY comes first)."""

PREFETCH_WHEN_SHORTER = 0.05
"""Prefetch only while recent runs took less than this many seconds on average."""

PREFETCH_HOLD = 1.0
"""A prefetched run not started within this many seconds goes back to the queue."""


@dataclass
class WorkerSettings:
    """How one worker runs. Every duration is in seconds.

    ``lease``: how long a claimed run stays ours without a heartbeat; a worker that dies loses
    its runs to the reaper after at most ``lease`` + ``reap_interval`` (default: ``lease``).
    Heartbeats come every ``lease / 3``. ``poll_interval`` caps every sleep, so polling alone
    runs everything when ``listen`` is off (PgBouncer in transaction mode). ``misfire_grace``:
    a tick older than this when it is materialised counts as missed and follows the job's
    misfire policy.
    """

    dsn: str = ""
    schema: str = "pgjobs"
    concurrency: int = 10
    queues: tuple[str, ...] = ("default",)
    grace: float = 30.0
    lease: float = 30.0
    poll_interval: float = 5.0
    listen: bool = True
    worker_id: str | None = None
    misfire_grace: float = 5.0
    scheduler: bool = True
    reap_interval: float | None = None
    backoff_max: float = 10.0
    prefetch: int | None = None

    @property
    def prefetch_limit(self) -> int:
        """How many claimed runs may wait for a free slot (default: ``concurrency``)."""
        return self.concurrency if self.prefetch is None else self.prefetch

    @property
    def heartbeat_interval(self) -> float:
        return self.lease / 3

    @property
    def reap_every(self) -> float:
        return self.reap_interval if self.reap_interval is not None else self.lease


@dataclass
class _Running:
    run: ClaimedRun
    execution: RunExecution
    task: asyncio.Task[Outcome]
    handed_back: bool = False
    start_delay: float = 0.0  # seconds it waited here after its claim (prefetched)


@dataclass
class _Prefetched:
    run: ClaimedRun
    claimed: float  # time.monotonic()


@dataclass
class _Timers:
    next_tick: float = 0.0
    next_claim: float = 0.0
    next_heartbeat: float = 0.0
    next_reap: float = 0.0
    failures: int = 0


class Worker:
    """One worker process's loop over the queue and the schedules of ``registry``'s jobs."""

    def __init__(
        self, registry: Registry, settings: WorkerSettings, metrics: WorkerMetrics | None = None
    ) -> None:
        if settings.concurrency < 1:
            raise PgJobsError("concurrency must be at least 1")
        self.registry = registry
        self.settings = settings
        self.id = (
            settings.worker_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        )
        self.queries = Queries(settings.schema)
        self.job_names = registry.names()
        self.registered = [
            RegisteredJob(d.name, d.schedule if d.enabled else None, d.timezone)
            for d in registry.definitions.values()
        ]
        self.queues = list(settings.queues)
        self.store: WorkerStore | None = None
        self.async_pool: AsyncConnectionPool | None = None
        self.sync_pool: ConnectionPool | None = None
        self._executor = ThreadPoolExecutor(
            max_workers=settings.concurrency, thread_name_prefix="pgjobs-run"
        )
        self._running: dict[int, _Running] = {}
        # Runs claimed ahead of a free slot, oldest first (see _claim_room).
        self._prefetched: deque[_Prefetched] = deque()
        self._recent_duration: float | None = None
        self._outcomes: list[Outcome] = []
        self._wake = asyncio.Event()
        self._stopping = False
        self._stop_requested_at: float | None = None
        self._listener: asyncio.Task[None] | None = None
        self._timers = _Timers()
        #: What this worker did, for Prometheus (served by ``pgjobs worker --metrics-port``).
        self.metrics = metrics if metrics is not None else WorkerMetrics()

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

    async def run(self) -> None:
        """Run until :meth:`request_stop`; then finish or hand back running runs and return."""
        await self._open()
        woken = True
        try:
            while True:
                self._wake.clear()
                try:
                    await self._connect_if_needed()
                    if self._stopping and await self._drain_for_shutdown():
                        break
                    timeout = await self._iterate(woken)
                    self._timers.failures = 0
                except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                    timeout = await self._on_connection_lost(exc)
                    self._timers.next_claim = 0.0
                woken = await self._sleep(timeout)
        finally:
            await self._close()

    async def _open(self) -> None:
        dsn = self.settings.dsn
        self.async_pool = AsyncConnectionPool(
            dsn,
            min_size=1,
            max_size=max(2, self.settings.concurrency),
            open=False,
            check=AsyncConnectionPool.check_connection,
            name=f"pgjobs-jobs-{self.id}",
        )
        await self.async_pool.open(wait=False)
        await self._connect_if_needed()
        assert self.store is not None
        # Jobs first: once a worker's row says it is running, the jobs it runs exist, and an
        # application may enqueue them.
        await self._sync_jobs()
        await self._register()
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

    async def _register(self) -> None:
        """The worker's row and its registered jobs, which its claims and ticks read."""
        assert self.store is not None
        await self.store.register_worker(
            host=socket.gethostname(),
            pid=os.getpid(),
            version=__version__,
            queues=self.queues,
            concurrency=self.settings.concurrency,
            jobs=self.registered,
            ttl=self._worker_ttl,
        )

    async def _close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
        if self.store is not None:
            try:
                await self.store.deregister_worker()
            except psycopg.Error as exc:
                log.warning("could not mark worker %s stopped: %s", self.id, exc)
            await self.store.conn.close()
        if self.async_pool is not None:
            await self.async_pool.close()
        if self.sync_pool is not None:
            self.sync_pool.close(timeout=1)
        self._executor.shutdown(wait=False, cancel_futures=True)
        log.info("worker %s stopped", self.id)

    @property
    def _worker_ttl(self) -> float:
        return self.settings.lease

    async def _connect_if_needed(self) -> None:
        if self.store is not None and not self.store.conn.closed:
            return
        conn = await psycopg.AsyncConnection.connect(
            self.settings.dsn, autocommit=True, application_name=f"pgjobs-worker {self.id}"
        )
        if self.settings.listen:
            # The worker's statements are written to plan well for any parameters, and planning
            # the claim took longer than running it. Not through PgBouncer (--no-listen), where
            # a session setting would stick to a server connection other clients share.
            await conn.execute("SET plan_cache_mode = force_generic_plan")
        self.store = WorkerStore(conn, self.queries, self.id)

    async def _on_connection_lost(self, exc: Exception) -> float:
        self._timers.failures += 1
        delay = min(self.settings.backoff_max, 0.2 * 2.0 ** (self._timers.failures - 1))
        log.warning(
            "database connection lost (%s); reconnecting in %.1fs",
            str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__,
            delay,
        )
        if self.store is not None:
            await self.store.conn.close()
            self.store = None
        return delay

    # -- registration ----------------------------------------------------------------------

    async def _sync_jobs(self) -> None:
        """Upsert every registered job's effective definition (code < profile; pause is kept)."""
        assert self.store is not None
        store = self.store
        async with store.conn.transaction():
            db_now, existing = await store.lock_registered_jobs(self.job_names)
            rows = []
            for d in self.registry.definitions.values():
                old = existing.get(d.name)
                reset = (
                    old is None or old["schedule"] != d.schedule or old["timezone"] != d.timezone
                )
                reset = reset or (old is not None and old["next_fire_at"] is None)
                cron = d.cron
                rows.append(
                    _job_row(d, next_fire_at=cron.next_after(db_now) if cron else None, reset=reset)
                )
            await store.upsert_jobs(rows)

    # -- one iteration ---------------------------------------------------------------------

    async def _iterate(self, woken: bool) -> float:
        """Do what is due; return how long to sleep at most before the next iteration.

        ``woken``: a NOTIFY arrived, a run finished or a stop was asked for. Only then, or when
        the poll interval or a known due time has come, does the worker look at the queue; a
        wake-up for a heartbeat or a reap alone costs no claim statement.
        """
        assert self.store is not None
        now = time.monotonic()
        timers = self._timers
        locked_due = True
        if self.settings.scheduler and not self._stopping and now >= timers.next_tick:
            locked_due, inserted = await self._tick()
            timers.next_claim = 0.0  # the tick's runs are claimable now
            if inserted >= REAP_AFTER_TICKS:
                # So many new runs can leave runs' planner statistics far behind, and every
                # worker's cached claim plan with them (made for a near-empty queue, it sorts the
                # whole queue per claim); the reaper refreshes them when they are.
                timers.next_reap = now
        if now >= timers.next_heartbeat:
            await self._heartbeat()
            timers.next_heartbeat = now + self.settings.heartbeat_interval
        if now >= timers.next_reap:
            await self._reap()
            timers.next_reap = now + self.settings.reap_every
        if self._prefetched and now - self._prefetched[0].claimed >= PREFETCH_HOLD:
            await self._hand_back_prefetched(f"no free slot within {PREFETCH_HOLD:g}s")
        if now >= timers.next_claim or ((woken or self._outcomes) and self._worth_a_statement()):
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
            timers.next_tick = now + due_in
            timers.next_claim = now + min(due_in, self.settings.poll_interval)
            if free and len(batch.started) == free and not self._prefetched:
                timers.next_claim = now  # the queue may hold more: look again at once
        if self._stopping:
            return 0.1
        due = min(timers.next_claim, timers.next_tick, timers.next_heartbeat, timers.next_reap)
        if self._prefetched:
            due = min(due, self._prefetched[0].claimed + PREFETCH_HOLD)
        return max(0.0, due - now)

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

    async def _tick(self) -> tuple[bool, int]:
        """Materialise every due tick of our jobs: lock, insert runs, advance watermarks. Returns
        whether any due job could be locked (False: none is due, or another worker is ticking
        them) and how many runs were inserted.

        The worker that makes the ticks' runs claims what it has room for in the same
        transaction: they start as soon as it commits, without a NOTIFY and another worker's
        claim in between. Other workers get the rest through the NOTIFY.
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
                inserted_all += inserted
                room = self._claim_room()
                if inserted and room:
                    batch = await store.finish_and_claim_runs(
                        [], queues=self.queues, limit=room, lease=self.settings.lease
                    )
                    claimed = batch.started
            self._dispatch(claimed)  # committed: now they may run
            locked_any = True
            if len(due) < TICK_BATCH:
                return True, inserted_all

    async def _finish_and_claim(self, free: int) -> Batch:
        """Record every finished run's outcome and claim up to ``free`` runs, in one statement.

        Outcomes stay in memory until the statement commits, so none is lost while the
        database is away; the guard on state and owner makes a repeated write a no-op.
        """
        assert self.store is not None
        outcomes, self._outcomes = self._outcomes, []
        try:
            batch = await self.store.finish_and_claim_runs(
                outcomes,
                queues=self.queues,
                limit=free,
                lease=self.settings.lease,
            )
        except BaseException:
            self._outcomes[:0] = outcomes  # write them with the next statement
            raise
        for outcome in outcomes:
            if outcome.run_id not in batch.finished:
                log.warning(
                    "run %d finished as %s but was no longer ours (reaped); not recorded",
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
        self._dispatch(batch.started)
        return batch

    def _dispatch(self, claimed: list[ClaimedRun]) -> None:
        """Start claimed runs in the free slots; the others wait here, prefetched."""
        self.metrics.claimed(len(claimed))
        now = time.monotonic()
        for run in claimed:
            if len(self._running) < self.settings.concurrency:
                self._start(run)
            else:
                self._prefetched.append(_Prefetched(run, now))

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

    async def _reap(self) -> None:
        assert self.store is not None
        reaped = await self.store.reap_expired_leases()
        if reaped.statistics_stale and await self.store.analyze_runs():
            log.info("refreshed the planner statistics of %s.runs", self.settings.schema)
        self.metrics.reaped(reaped.reaped)
        self.metrics.retried(reaped.retried)
        if reaped.reaped or reaped.dead_workers:
            log.warning(
                "reaped %d run(s) with expired leases (%d retried), %d dead worker(s)",
                reaped.reaped,
                reaped.retried,
                reaped.dead_workers,
            )

    def _sync_jobs_pool(self) -> ConnectionPool:
        """The pool of sync jobs, opened with the first sync run (many workers never need it)."""
        if self.sync_pool is None:
            self.sync_pool = ConnectionPool(
                self.settings.dsn,
                min_size=1,
                max_size=max(2, self.settings.concurrency),
                open=False,
                check=ConnectionPool.check_connection,
                name=f"pgjobs-sync-jobs-{self.id}",
            )
            self.sync_pool.open(wait=False)
        return self.sync_pool

    def _start(self, run: ClaimedRun, start_delay: float = 0.0) -> None:
        definition = self.registry.definitions[run.job]
        pool = self.async_pool if definition.is_async else self._sync_jobs_pool()
        execution = RunExecution(
            definition,
            run,
            worker_id=self.id,
            pool=pool,
            executor=self._executor,
            schema=self.settings.schema,
        )
        task = asyncio.create_task(execution.execute())
        execution.task = task
        self._running[run.id] = _Running(run, execution, task, start_delay=start_delay)
        lag = (run.started_at - run.scheduled_for).total_seconds() + start_delay
        self.metrics.run_started(run.job, lag)
        task.add_done_callback(functools.partial(self._on_done, run.id))

    def _on_done(self, run_id: int, _task: object = None) -> None:
        entry = self._running.pop(run_id, None)
        if entry is None:
            return
        if self._prefetched and not self._stopping:
            held = self._prefetched.popleft()
            self._start(held.run, start_delay=time.monotonic() - held.claimed)
        task = entry.task
        if entry.handed_back or task.cancelled():
            self.metrics.run_released(entry.run.job)
            return
        outcome = task.result()
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

    async def _heartbeat(self) -> None:
        assert self.store is not None
        beat = await self.store.heartbeat(ttl=self._worker_ttl, lease=self.settings.lease)
        if beat.registered_jobs == 0 and self.registered:
            log.warning("worker %s was taken for dead; registering its jobs again", self.id)
            await self._register()
        kept: deque[_Prefetched] = deque()
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

    # -- sleeping and waking ---------------------------------------------------------------

    async def _sleep(self, timeout: float) -> bool:
        """Sleep up to ``timeout`` seconds; True if something woke us before that."""
        if self._wake.is_set():
            return True
        if timeout > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
        return self._wake.is_set()

    async def _listen(self) -> None:
        """Turn NOTIFYs on the pgjobs channel into wake-ups; reconnect when the link drops."""
        failures = 0
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self.settings.dsn,
                    autocommit=True,
                    application_name=f"pgjobs-listen {self.id}",
                ) as conn:
                    await conn.execute(f'LISTEN "{self.queries.channel}"')
                    failures = 0
                    self._timers.next_tick = 0.0  # catch up on what we may have missed
                    self._wake.set()
                    async for _ in conn.notifies():
                        self._timers.next_tick = 0.0  # a schedule may have changed: look
                        self._wake.set()
            except asyncio.CancelledError:
                raise
            except psycopg.Error as exc:
                failures += 1
                log.debug("listen connection lost: %s", exc)
                await asyncio.sleep(min(self.settings.backoff_max, 0.2 * 2**failures))

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
        entries = list(self._running.values())
        for entry in entries:
            entry.handed_back = True
            entry.execution.cancel("worker shutting down")
            entry.task.cancel()
        ids = [e.run.id for e in entries]
        count = await self.store.hand_back_runs(
            ids, f"handed back by worker {self.id} at shutdown after {self.settings.grace:g}s"
        )
        log.warning("grace period over: handed %d run(s) back to the queue", count)
        await asyncio.gather(*(e.task for e in entries), return_exceptions=True)
        self._running.clear()
        return True


def _job_row(d: JobDefinition, *, next_fire_at: datetime | None, reset: bool) -> dict[str, Any]:
    return {
        "name": d.name,
        "extension": d.extension,
        "description": d.description,
        "schedule": d.schedule,
        "schedule_source": d.schedule_source,
        "timezone": d.timezone,
        "enabled": d.enabled,
        "tags": list(d.tags),
        "timeout_seconds": d.timeout,
        "max_attempts": d.max_attempts,
        "retry_backoff": Jsonb(asdict(d.retry_backoff)),
        "overlap": d.overlap,
        "misfire": d.misfire,
        "backfill_cap": d.backfill_cap,
        "priority": d.priority,
        "queue": d.queue,
        "parameters": Jsonb(dict(d.parameters)),
        "next_fire_at": next_fire_at,
        "reset_next_fire": reset,
    }
