"""The jobs of a registry on a test's database: run one now, drain the queue, read what was
enqueued."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import socket
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from pgjobs.db import connection_error, connection_options, resolve_schema
from pgjobs.errors import PgJobsError, UnknownJobError
from pgjobs.job import Extension, Job
from pgjobs.named_queries import Queries
from pgjobs.registry import JobDefinition, Registry
from pgjobs.store import WorkerStore
from pgjobs.testing.drain import DEFAULT_MAX_RUNS, DRAIN_LEASE, Drain

T = TypeVar("T")


@dataclass(frozen=True)
class Run:
    """One row of the runs table, as a test reads it: what was asked for and how it ended."""

    id: int
    job: str
    trigger: str
    status: str
    attempt: int
    max_attempts: int
    retry_of: int | None
    payload: Any
    parameters: dict[str, str] | None
    queue: str
    priority: int
    dedup_key: str | None
    scheduled_for: datetime
    started_at: datetime | None
    finished_at: datetime | None
    duration_seconds: float | None
    message: str | None
    data: dict[str, Any] | None
    items_processed: int | None
    items_failed: int | None
    error_type: str | None
    error_message: str | None
    error_traceback: str | None
    logs: str | None
    worker_id: str | None

    @property
    def ok(self) -> bool:
        """True when the run succeeded."""
        return self.status == "succeeded"

    @property
    def error(self) -> str | None:
        """``"Type: message"`` of a run that raised, else None."""
        if self.error_type is None:
            return None
        return f"{self.error_type}: {self.error_message}" if self.error_message else self.error_type

    def describe(self) -> str:
        """One line: id, job, payload, status, and the message or error."""
        detail = self.error or self.message
        return (
            f"run {self.id} {self.job} (attempt {self.attempt}, payload {self.payload!r}) "
            f"{self.status}" + (f": {detail}" if detail else "")
        )


JobRef = str | type[Job] | Job
"""A job: its name, or its :class:`~pgjobs.Job` class or instance."""


class JobHarness:
    """The jobs of ``registry`` on the database ``dsn`` (migrated), for tests.

    Call :meth:`register` first (the pytest fixture does): it writes the jobs' rows, as a
    worker's start does, so application code may enqueue them. A job is named by its name, its
    class or an instance; a class or instance the registry lacks is checked and used as an
    extension named after its prefix would register it (by :meth:`run_job`; :meth:`drain` runs
    only the registry's jobs, as a worker does).
    """

    def __init__(self, dsn: str, registry: Registry | None = None, *, schema: str | None = None):
        self.dsn = dsn
        self.registry = registry if registry is not None else Registry([])
        self.schema = resolve_schema(schema)
        self.queries = Queries(self.schema)
        self.worker_id = f"testing-{socket.gethostname()}-{os.getpid()}"

    # -- setting up --------------------------------------------------------------------------

    def register(self) -> None:
        """Write the registry's jobs (and this harness's worker row) into the database."""
        _run_sync(self.register_async(), "register")

    async def register_async(self) -> None:
        """:meth:`register`, awaited."""
        async with await self._connect() as conn:
            await self._register(WorkerStore(conn, self.queries, self.worker_id))

    def connect(self) -> psycopg.Connection[Any]:
        """A new autocommit connection to the test's database (close it, or use ``with``)."""
        return psycopg.connect(self.dsn, autocommit=True)

    # -- running one job ---------------------------------------------------------------------

    def run_job(
        self,
        job: JobRef,
        payload: Any = None,
        parameters: Mapping[str, str] | None = None,
        *,
        force: bool = False,
    ) -> Run:
        """Run ``job`` now, in this process, as ``pgjobs jobs run`` does, and return its run.

        The run is recorded as a ``manual`` run: the job gets its context (``payload``, a JSON
        object or the job's payload type, and ``parameters`` over the profile's), a connection
        pool on the test's database (async for ``async def execute``, else sync), its timeout,
        and takes its lock when it forbids overlap (:class:`~pgjobs.LockHeldError` when another
        run holds it, unless ``force``).
        A job that raises is a ``failed`` run, not an exception here: look at ``run.status``
        and ``run.error``. A payload or parameters that an enqueue would refuse raise
        :class:`~pgjobs.ConfigError` before anything runs.
        """
        from pgjobs.enqueue import check_run_input
        from pgjobs.manual import RunSettings, run_in_process

        _refuse_running_loop("run_job")
        definition = self.definition(job)
        payload_type = getattr(definition.job, "payload_type", None)
        if payload_type is not None:
            from pgjobs.payloads import dump_payload

            payload = dump_payload(definition.name, payload_type, payload)
        check_run_input(payload, parameters)  # as an enqueue would refuse them
        settings = RunSettings(
            payload=dict(payload) if payload is not None else None,
            parameters=dict(parameters or {}),
            force=force,
        )
        result = run_in_process(definition, settings, dsn=self.dsn, schema=self.schema)
        return self.run(result.outcome.run_id)

    async def run_job_async(
        self,
        job: JobRef,
        payload: Any = None,
        parameters: Mapping[str, str] | None = None,
        *,
        force: bool = False,
    ) -> Run:
        """:meth:`run_job` from async code: the job runs on an event loop of its own, in a
        thread, so the caller's loop is free meanwhile."""
        return await asyncio.to_thread(self.run_job, job, payload, parameters, force=force)

    def definition(self, job: JobRef) -> JobDefinition:
        """The definition ``job`` runs with: the registry's (with the profile's overrides), an
        instance given standing in for the registry's own."""
        if isinstance(job, str):
            return self.registry.get(job)
        instance = job() if isinstance(job, type) else job
        if not isinstance(instance, Job):
            raise TypeError(f"expected a job name, Job class or Job instance, got {job!r}")
        name = getattr(instance, "name", None)
        if isinstance(name, str) and name in self.registry:
            known = self.registry.get(name)
            if isinstance(job, type) or known.job is instance:
                return known
            return dataclasses.replace(known, job=instance)
        return _standalone_definition(instance)

    # -- the queue ---------------------------------------------------------------------------

    def drain(
        self,
        *,
        queues: Sequence[str] | None = None,
        include_delayed: bool = False,
        max_runs: int = DEFAULT_MAX_RUNS,
    ) -> list[Run]:
        """Run every due queued run, one at a time, until none is left; return them, in the
        order they ran.

        Runs are claimed and recorded with the workers' own statement, in claim order
        (priority, then due time), so pauses, run locks and limits hold as in production. Runs
        that the jobs enqueue, and retries, run in the same drain once due; with
        ``include_delayed``, delayed runs (a later ``run_at``, a retry waiting for its back-off)
        are made due and run at once. ``queues``: only these (default: every queue). Raises
        :class:`~pgjobs.PgJobsError` after ``max_runs`` runs, as the queue then never empties.
        """
        return _run_sync(
            self.drain_async(queues=queues, include_delayed=include_delayed, max_runs=max_runs),
            "drain",
        )

    async def drain_async(
        self,
        *,
        queues: Sequence[str] | None = None,
        include_delayed: bool = False,
        max_runs: int = DEFAULT_MAX_RUNS,
    ) -> list[Run]:
        """:meth:`drain`, awaited: async jobs run on the caller's event loop."""
        async with await self._connect() as conn:
            store = WorkerStore(conn, self.queries, self.worker_id)
            await self._register(store)
            served = list(queues) if queues is not None else None
            drain = Drain(store, self.registry, self.dsn, served)
            try:
                ran = await drain.run(include_delayed, max_runs)
            finally:
                await drain.close()
        found = {run.id: run for run in await asyncio.to_thread(self.runs, ids=ran)}
        return [found[run_id] for run_id in ran]

    def runs(
        self,
        job: JobRef | None = None,
        *,
        payload: Any = None,
        status: str | Sequence[str] | None = None,
        trigger: str | Sequence[str] | None = None,
        ids: Sequence[int] | None = None,
    ) -> list[Run]:
        """The runs of the test's database, oldest first, filtered by job, status, trigger, ids,
        and a ``payload`` they contain (the run's payload may hold more fields)."""
        params = {
            "ids": list(ids) if ids is not None else None,
            "job": self._name(job) if job is not None else None,
            "triggers": [trigger] if isinstance(trigger, str) else _list(trigger),
            "statuses": [status] if isinstance(status, str) else _list(status),
            "payload": Jsonb(_json_object(payload)) if payload is not None else None,
        }
        with self.connect() as conn, conn.cursor(row_factory=dict_row) as cur:
            return [Run(**row) for row in cur.execute(self.queries["testing_runs"], params)]

    def run(self, run_id: int) -> Run:
        """The run ``run_id``, as it is now."""
        found = self.runs(ids=[run_id])
        if not found:
            raise PgJobsError(f"run {run_id} does not exist")
        return found[0]

    def enqueued_runs(
        self,
        job: JobRef | None = None,
        *,
        payload: Any = None,
        status: str | Sequence[str] | None = None,
    ) -> list[Run]:
        """The runs application code enqueued (trigger ``enqueue``), whatever became of them
        since unless ``status`` says, oldest first; ``payload`` as in :meth:`runs`."""
        return self.runs(job, payload=payload, status=status, trigger="enqueue")

    def assert_enqueued(
        self,
        job: JobRef,
        payload: Any = None,
        *,
        count: int | None = None,
        status: str | Sequence[str] | None = None,
    ) -> list[Run]:
        """Assert that ``job`` was enqueued (exactly ``count`` times, if given), with a payload
        that contains ``payload``; return the matching runs. The failure lists what was
        enqueued instead."""
        found = self.enqueued_runs(job, payload=payload, status=status)
        if (count is None and found) or len(found) == count:
            return found
        name = self._name(job)
        wanted = f"{count} run(s)" if count is not None else "a run"
        if payload is not None:
            wanted += f" with a payload containing {_json_object(payload)!r}"
        if status is not None:
            wanted += f" with status {status!r}"
        enqueued = self.enqueued_runs()
        listing = "\n".join(f"  {run.describe()}" for run in enqueued) or "  nothing"
        raise AssertionError(
            f"expected {wanted} of {name!r} enqueued, found {len(found)}; enqueued:\n{listing}"
        )

    def assert_not_enqueued(self, job: JobRef, payload: Any = None) -> None:
        """Assert that no run of ``job`` (with a payload containing ``payload``) was enqueued."""
        self.assert_enqueued(job, payload, count=0)

    # -- inside ------------------------------------------------------------------------------

    def _name(self, job: JobRef) -> str:
        if isinstance(job, str):
            return job
        name = getattr(job, "name", None)
        if not isinstance(name, str):
            raise TypeError(f"expected a job name, Job class or Job instance, got {job!r}")
        return name

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        try:
            return await psycopg.AsyncConnection.connect(
                self.dsn, autocommit=True, connect_timeout=10, **connection_options()
            )
        except psycopg.OperationalError as exc:
            raise connection_error(self.dsn, exc) from exc

    async def _register(self, store: WorkerStore) -> None:
        """The jobs' rows, as a worker's start writes them, then this harness's worker row
        and registered jobs, which the claim reads."""
        from pgjobs import __version__
        from pgjobs.store import RegisteredJob
        from pgjobs.worker.registration import job_row

        definitions = sorted(self.registry, key=lambda d: d.name)
        async with store.conn.transaction():
            await store.mark_registering()
            db_now, existing = await store.lock_registered_jobs([d.name for d in definitions])
            rows = []
            for d in definitions:
                old = existing.get(d.name)
                reset = old is None or (old["schedule"], old["timezone"]) != (
                    d.schedule,
                    d.timezone,
                )
                cron = d.cron
                next_fire = cron.next_after(db_now) if cron else None
                rows.append(job_row(d, next_fire_at=next_fire, reset=reset))
            await store.upsert_jobs(rows)
        await store.register_worker(
            host=socket.gethostname(),
            pid=os.getpid(),
            version=__version__,
            queues=sorted({d.queue for d in definitions}),
            concurrency=1,
            # No schedule: a drain runs the queue, it does not tick.
            jobs=[RegisteredJob(d.name, None, d.timezone) for d in definitions],
            ttl=DRAIN_LEASE,
        )


def _standalone_definition(job: Job) -> JobDefinition:
    """The definition of a job no extension of the registry registers: checked as the
    extension named after its prefix (``my-extension`` for ``my-extension-cleanup``) would."""
    name = getattr(job, "name", None)
    name = name if isinstance(name, str) else ""
    prefix = name.rpartition("-")[0]
    if not prefix:
        raise UnknownJobError(
            f"job {name or type(job).__name__!r} is not registered and its name has no "
            "extension prefix ('my-extension-...'): register its extension for the test"
        )

    class _Standalone(Extension):
        name = prefix

        def jobs(self) -> list[Job]:
            return [job]

    return Registry.build([_Standalone()]).get(name)


def _json_object(payload: object) -> dict[str, Any]:
    """A payload to look for: a mapping, or a typed payload (dataclass, pydantic model) as the
    JSON object a run of it stores."""
    if not isinstance(payload, Mapping):
        from pgjobs.payloads import plain_payload

        payload = plain_payload(payload)
    if not isinstance(payload, Mapping):
        raise TypeError(f"a payload to look for is a JSON object, got {payload!r}")
    return dict(payload)


def _list(values: Sequence[str] | None) -> list[str] | None:
    return list(values) if values is not None else None


def _refuse_running_loop(method: str) -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise PgJobsError(
        f"{method}() was called inside a running event loop: await {method}_async() instead"
    )


def _run_sync(coroutine: Coroutine[Any, Any, T], method: str) -> T:
    try:
        _refuse_running_loop(method)
    except PgJobsError:
        coroutine.close()
        raise
    return asyncio.run(coroutine)
