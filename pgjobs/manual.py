"""Manual runs: a job run on an operator's request, recorded as a ``manual`` run.

:func:`run_in_process` executes the job in the calling process, as ``pgjobs jobs run`` does by
default. The run row is inserted as ``running`` and owned by this process (worker id
``cli-<host>-<pid>``, with a lease it heartbeats while the job runs), so workers and operators see
it like any other run: it takes the job's run lock when the job forbids overlap, an operator can
cancel it with ``pgjobs runs cancel``, and its outcome is written by the same guarded finish
statement the workers use. :func:`queue_run` hands the run to the workers instead, and
:func:`pgjobs.wait.follow_sync` watches a queued run until it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any, NoReturn

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from pgjobs.db import connection_error, connection_options, resolve_dsn
from pgjobs.errors import LockHeldError
from pgjobs.execution import RunExecution
from pgjobs.limits import concurrency_key_of
from pgjobs.named_queries import Queries
from pgjobs.registry import JobDefinition
from pgjobs.store import ClaimedRun, Outcome, WorkerStore

DEFAULT_LEASE = 30.0
"""Seconds a manual run stays owned by the CLI without a heartbeat (heartbeats every third)."""


def cli_worker_id() -> str:
    """The worker id that manual runs executed by this process carry: ``cli-<host>-<pid>``."""
    return f"cli-{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True)
class RunSettings:
    """What a manual run is given: its payload, its parameters (over the profile's) and whether
    it may ignore the job's run lock."""

    payload: dict[str, Any] | None = None
    parameters: dict[str, str] = field(default_factory=dict)
    force: bool = False
    lease: float = DEFAULT_LEASE


@dataclass(frozen=True)
class ManualResult:
    """How a manual run ended. ``recorded`` is False if the run was reaped while it ran (its
    lease expired), in which case the outcome could not be stored."""

    job: str
    outcome: Outcome
    recorded: bool = True

    @property
    def ok(self) -> bool:
        """True when the run succeeded."""
        return self.outcome.status == "succeeded"


def run_in_process(
    definition: JobDefinition, settings: RunSettings, *, dsn: str, schema: str
) -> ManualResult:
    """Execute ``definition`` here as a ``manual`` run and record its outcome.

    Raises :class:`LockHeldError` (naming the run and worker that hold the lock) when the job
    forbids overlap and another run holds its lock, unless ``settings.force``. Async jobs run on
    an event loop with an ``AsyncConnectionPool``; sync jobs in a thread with a ``ConnectionPool``.
    Ctrl-C cancels the job and records the run as ``cancelled``.
    """
    return asyncio.run(_run(definition, settings, resolve_dsn(dsn), schema))


async def _run(
    definition: JobDefinition, settings: RunSettings, dsn: str, schema: str
) -> ManualResult:
    worker_id = cli_worker_id()
    options = connection_options()
    try:
        conn = await psycopg.AsyncConnection.connect(
            dsn,
            autocommit=True,
            application_name=f"pgjobs {worker_id}",
            connect_timeout=10,
            **options,
        )
    except psycopg.OperationalError as exc:
        raise connection_error(dsn, exc) from exc
    async with conn:
        store = WorkerStore(conn, Queries(schema), worker_id)
        pool = await _open_pool(definition, dsn, worker_id)
        try:
            run = await _start(store, definition, settings)
            execution = RunExecution(definition, run, worker_id=worker_id, pool=pool, executor=None)
            outcome = await _execute(store, execution, settings.lease)
        finally:
            if isinstance(pool, AsyncConnectionPool):
                await pool.close()
            else:
                pool.close(timeout=1)
        recorded, _ = await store.finish_run_if_running(outcome)
        return ManualResult(definition.name, outcome, recorded)


async def _start(
    store: WorkerStore, definition: JobDefinition, settings: RunSettings
) -> ClaimedRun:
    """Insert the running manual run and take a slot of its job (or of its key) when the job is
    limited, in one transaction."""
    key = (
        concurrency_key_of(definition.concurrency_key, settings.payload)
        if definition.concurrency_key is not None
        else None
    )
    async with store.conn.transaction():
        cur = store.conn.cursor(row_factory=dict_row)
        await cur.execute(
            store.q["start_manual_run"],
            {
                "job": definition.name,
                "max_attempts": definition.max_attempts,
                "payload": Jsonb(settings.payload) if settings.payload is not None else None,
                "parameters": Jsonb(settings.parameters) if settings.parameters else None,
                "priority": definition.priority,
                "queue": definition.queue,
                "concurrency_key": key,
                "worker": store.worker_id,
                "lease": settings.lease,
            },
        )
        row = await cur.fetchone()
        assert row is not None
        run = ClaimedRun(**row)
        limited = definition.max_concurrency is not None or definition.concurrency_key is not None
        if limited and not settings.force:
            await _take_slot(store, run, key or "", definition.max_concurrency or 1)
        elif definition.overlap == "skip" and not settings.force:
            await _take_run_lock(store, run, settings.lease)
    return run


async def _take_run_lock(store: WorkerStore, run: ClaimedRun, lease: float) -> None:
    """The lock of a job that forbids overlap, as a worker's claim takes it, or LockHeldError."""
    params = {"job": run.job, "run_id": run.id, "worker": store.worker_id, "lease": lease}
    if await (await store.conn.execute(store.q["take_run_lock"], params)).fetchone():
        return
    cur = store.conn.cursor(row_factory=dict_row)
    await cur.execute(store.q["run_lock_holder"], {"job": run.job})
    _refuse(run, "does not allow overlapping runs and its lock is held by", await cur.fetchone())


async def _take_slot(store: WorkerStore, run: ClaimedRun, key: str, slots: int) -> None:
    """A slot of the run's concurrency group, as a worker's claim takes one, or LockHeldError."""
    group = {"job": run.job, "lock_key": key}
    cur = await store.conn.execute(store.q["try_slot"], {**group, "slots": slots})
    tried = await cur.fetchone()
    if tried is not None:
        held = {"run_id": run.id, "slot": tried[0]}
        if await (await store.conn.execute(store.q["hold_slot"], held)).fetchone():
            return
    cur = store.conn.cursor(row_factory=dict_row)
    await cur.execute(store.q["slot_holder"], group)
    for_key = f" for key {key!r}" if key else ""
    _refuse(run, f"has its {slots} slot(s){for_key} taken, one by", await cur.fetchone())


def _refuse(run: ClaimedRun, limit: str, holder: dict[str, Any] | None) -> NoReturn:
    who = f"run {holder['run_id']} on worker {holder['worker_id']}" if holder else "another run"
    # Raising rolls the transaction back: the refused run leaves no row behind.
    raise LockHeldError(
        f"job {run.job!r} {limit} {who}; wait for it to finish or pass --force to run anyway"
    )


async def _open_pool(
    definition: JobDefinition, dsn: str, worker_id: str
) -> AsyncConnectionPool | ConnectionPool:
    """The pool the job gets as ``ctx.db_pool``: async for async jobs, sync for sync ones."""
    name = f"pgjobs-manual-{worker_id}"
    options = connection_options()
    if definition.is_async:
        pool = AsyncConnectionPool(
            dsn, min_size=1, max_size=4, open=False, name=name, kwargs=options
        )
        await pool.open()
        return pool
    return ConnectionPool(dsn, min_size=1, max_size=4, open=True, name=name, kwargs=options)


async def _execute(store: WorkerStore, execution: RunExecution, lease: float) -> Outcome:
    """Run the job, heartbeating its lease; an operator's cancel or Ctrl-C cancels the job."""
    run_id = execution.run.id
    started = time.perf_counter()
    task = asyncio.create_task(execution.execute(), name=f"pgjobs-manual-{run_id}")
    execution.task = task
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=lease / 3)
            if done:
                return task.result()
            beat = await store.heartbeat(held=[run_id], since=None, ttl=lease, lease=lease)
            if run_id in beat.cancel_requested:
                execution.cancel("cancelled by operator")
            elif run_id not in beat.owned:
                execution.cancel("lease lost")
    except asyncio.CancelledError:
        # Ctrl-C: asyncio.run cancels us; stop the job and record the run as cancelled.
        execution.cancel("interrupted")
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        outcome = Outcome(
            run_id=run_id,
            status="cancelled",
            duration=time.perf_counter() - started,
            message="interrupted in the command line",
        )
        with contextlib.suppress(psycopg.Error):
            await store.finish_run_if_running(outcome)
        raise


# -- queued manual runs -------------------------------------------------------------------------


@dataclass(frozen=True)
class QueueTarget:
    """Where a queued manual run goes and how the workers run it (from the job's definition)."""

    job: str
    max_attempts: int = 1
    priority: int = 0
    queue: str = "default"


def queue_run(
    conn: psycopg.Connection[Any],
    queries: Queries,
    target: QueueTarget,
    settings: RunSettings,
) -> int:
    """Insert a queued ``manual`` run for the workers and return its id.

    The insert trigger wakes listening workers when the statement commits (``conn`` is expected in
    autocommit). The workers respect the run lock: the run waits in the queue while it is held.
    """
    row = conn.execute(
        queries["queue_manual_run"],
        {
            "job": target.job,
            "max_attempts": target.max_attempts,
            "payload": Jsonb(settings.payload) if settings.payload is not None else None,
            "parameters": Jsonb(settings.parameters) if settings.parameters else None,
            "priority": target.priority,
            "queue": target.queue,
        },
    ).fetchone()
    assert row is not None
    return int(row[0])
