"""What one worker holds in memory: its settings, its store, and the runs it executes.

Each concern of the worker (registration, ticking, dispatch, liveness, wake-ups, the loop) is a
class of its own module built on :class:`WorkerCore`; :class:`~pgjobs.worker.Worker` is their
union. What the database says this worker owns is reconciled against what is here, by the
heartbeat (see :mod:`pgjobs.worker.liveness`).
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime

from psycopg_pool import AsyncConnectionPool, ConnectionPool

from pgjobs.backoff import Backoff
from pgjobs.errors import PgJobsError
from pgjobs.execution import RunExecution
from pgjobs.metrics import WorkerMetrics
from pgjobs.named_queries import Queries
from pgjobs.registry import Registry
from pgjobs.store import ClaimedRun, Outcome, RegisteredJob, WorkerStore
from pgjobs.worker.settings import DEFER_FIRST, RECONNECT_FIRST, SETTLE_FIRST, WorkerSettings


@dataclass
class Running:
    """A run whose job executes in this process now."""

    run: ClaimedRun
    execution: RunExecution
    task: asyncio.Task[Outcome]
    handed_back: bool = False
    start_delay: float = 0.0  # seconds it waited here after its claim (prefetched)


@dataclass
class Prefetched:
    """A run claimed ahead of a free slot, waiting here to start."""

    run: ClaimedRun
    claimed: float  # time.monotonic()


@dataclass
class Timers:
    next_tick: float = 0.0
    next_claim: float = 0.0
    next_heartbeat: float = 0.0
    next_reap: float = 0.0
    next_progress: float = 0.0


class WorkerCore:
    """The state every part of the worker shares."""

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
            max_workers=settings.concurrency + settings.tick_slots, thread_name_prefix="pgjobs-run"
        )
        self._running: dict[int, Running] = {}
        # Runs claimed ahead of a free slot, oldest first (see Dispatch._claim_room).
        self._prefetched: deque[Prefetched] = deque()
        self._recent_duration: float | None = None
        self._outcomes: list[Outcome] = []
        #: Limited runs (see ClaimedRun.limited) ended, their outcomes not yet recorded.
        self._limited_ended: set[int] = set()
        #: Waits before recording again outcomes left for later (see Dispatch._retry_deferred).
        self._defer_backoff = Backoff(DEFER_FIRST, settings.poll_interval, jitter=0.0)
        self._wake = asyncio.Event()
        #: Whether the LISTEN connection is up: only then may a claim mark this worker waiting.
        self._listening = False
        #: Whether every enqueue since this worker's claim marked it waiting sees the mark (see
        #: Wakeups._settle); False again once anything wakes it or it starts a run.
        self._settled = False
        #: The wait before looking again while an enqueue into its queues is still open.
        self._settle_delay = SETTLE_FIRST
        self._stopping = False
        self._stop_requested_at: float | None = None
        self._timers = Timers()
        #: Calls for a look at the ticks so far (see _look_at_ticks).
        self._tick_looks = 0
        #: Waits between attempts to reach the database, at start and after a lost connection.
        self._backoff = Backoff(RECONNECT_FIRST, settings.backoff_max)
        #: When this process first registered, by the database clock: runs claimed under this
        #: worker's id before it were claimed by an earlier process with the same id.
        self._registered_at: datetime | None = None
        #: What this worker did, for Prometheus (served by ``pgjobs worker --metrics-port``).
        self.metrics = metrics if metrics is not None else WorkerMetrics()

    def _look_at_ticks(self) -> None:
        """Look at the ticks at the next iteration, whatever a statement in flight now says of
        the next one: it may have read the schedules before the change that calls for the look."""
        self._timers.next_tick = 0.0
        self._tick_looks += 1

    def _deferrable(self, outcomes: list[Outcome]) -> list[int]:
        """The runs whose outcomes (and last progress reports) may wait for a later statement
        while another transaction holds their rows: none while stopping, nor a limited run's
        (its slot or run lock would stay taken)."""
        if self._stopping:
            return []
        return [o.run_id for o in outcomes if o.run_id not in self._limited_ended]

    def held_run_ids(self) -> list[int]:
        """Every run this process holds: executing, prefetched, or ended with its outcome not
        yet recorded. The heartbeat extends exactly these leases."""
        held = list(self._running)
        held.extend(p.run.id for p in self._prefetched)
        held.extend(o.run_id for o in self._outcomes)
        return held
