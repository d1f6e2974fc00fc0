"""A worker inside an application: :func:`run_worker`, for ASGI lifespans and commands.

``async with run_worker(app, dsn) as worker:`` runs the very :class:`~pgjobs.worker.Worker` that
``pgjobs worker`` runs, as a task on the application's event loop: the same registry (extensions,
entry points, the profile, the built-in extension), the same settings under the same names, the
same guarantees. The block is entered once the schema is checked and the worker is registered
and claiming; leaving it stops the worker as SIGTERM does (no more claims, running runs get the
grace period, what cannot finish goes back to the queue) and raises what made the worker crash,
if it did.

No signal handler is installed: the application owns its signals and stops the worker by
leaving the block (or with :meth:`RunningWorker.stop`). A worker that dies while the application
serves is logged at once; the application goes on (``worker.alive`` turns False, for a health
check), and the error is raised by :meth:`RunningWorker.wait` and when the block is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Literal, TypeAlias

import psycopg

from pgjobs.backoff import Backoff
from pgjobs.builtin import BuiltinExtension
from pgjobs.db import (
    PREPARE_THRESHOLD_ENV,
    first_line,
    invalid_dsn_error,
    parse_prepare_threshold,
    redact,
    resolve_dsn,
    resolve_schema,
)
from pgjobs.discovery import entry_point_extensions, load_app, resolve_extensions, unique_extensions
from pgjobs.errors import ConfigError, DatabaseError, PgJobsError
from pgjobs.job import Extension
from pgjobs.metrics import METRICS_HOST, WorkerMetrics
from pgjobs.profile import load_profile
from pgjobs.registry import Registry, load_registry
from pgjobs.worker.loop import CLOSE_TIMEOUT, Worker
from pgjobs.worker.settings import WorkerSettings

log = logging.getLogger("pgjobs.worker")

AppItem: TypeAlias = Extension | type[Extension] | str
"""An extension, an extension class, or an app spec ``module:attr`` as ``--app`` takes it."""

App: TypeAlias = Registry | AppItem | Iterable[AppItem] | None
"""What :func:`run_worker` runs: a built registry, extensions or app specs (one or a list), or
None for what the CLI finds without ``--app`` (``PGJOBS_APP``, the profile's ``app:``)."""

CHECK_CONNECT_TIMEOUT = 5
"""Seconds one attempt to reach the database at start may take."""


class RunningWorker:
    """A worker started by :func:`run_worker`, running as a task on this event loop."""

    def __init__(self, worker: Worker, task: asyncio.Task[None], started: asyncio.Event) -> None:
        #: The worker itself: its ``settings``, ``registry`` and ``metrics`` (Prometheus).
        self.worker = worker
        self._task = task
        self._started = started
        #: Set when run_worker stops the worker: its end is then no surprise.
        self._leaving = False
        self._cancelled_here = False
        task.add_done_callback(self._ended)

    @property
    def id(self) -> str:
        """The worker's id, as ``pgjobs.workers`` and the runs it claims record it."""
        return self.worker.id

    @property
    def alive(self) -> bool:
        """True until the worker has stopped, whether asked to or by a crash."""
        return not self._task.done()

    @property
    def error(self) -> BaseException | None:
        """What ended the worker, if a crash did; None while it runs and after a clean stop."""
        if not self._task.done():
            return None
        if self._task.cancelled():
            if self._cancelled_here:
                return None
            return PgJobsError(f"worker {self.id} was cancelled by the application")
        return self._task.exception()

    def stop(self) -> None:
        """Ask the worker to stop, as SIGTERM does: it claims nothing more, running runs get
        ``grace`` seconds to finish, then are cancelled and handed back to the queue. Returns at
        once; :meth:`wait` waits for the end."""
        self.worker.request_stop()

    async def wait(self) -> None:
        """Wait until the worker has stopped; raise what made it crash, if anything did.
        Cancelling this wait leaves the worker running."""
        await asyncio.wait([self._task])
        self._raise_error()

    def _raise_error(self) -> None:
        error = self.error
        if error is not None:
            raise error

    def _ended(self, task: asyncio.Task[None]) -> None:
        error = self.error
        # A worker that fails to start raises to run_worker's caller instead.
        if error is not None and self._started.is_set() and not self._leaving:
            log.error(
                "worker %s crashed (%s): the application goes on without it",
                self.id,
                first_line(error),
                exc_info=error,
            )

    async def _shut_down(self) -> None:
        """Stop the worker as SIGTERM does and wait for it; if it cannot stop (a database out of
        reach), cancel it after its grace and a few statement deadlines: the runs it still holds
        go to the reaper of another worker when their leases expire."""
        self._leaving = True
        if self._task.done():
            return
        self.worker.request_stop()
        settings = self.worker.settings
        limit = settings.grace + 2 * settings.statement_deadline + 2 * CLOSE_TIMEOUT
        try:
            done, _ = await asyncio.wait([self._task], timeout=limit)
        except asyncio.CancelledError:
            self._cancel()
            raise
        if not done:
            log.warning(
                "worker %s did not stop within %.0fs; cancelling it (the runs it holds return "
                "to the queue when their leases expire)",
                self.id,
                limit,
            )
            self._cancel()
            await asyncio.wait([self._task], timeout=CLOSE_TIMEOUT)

    def _cancel(self) -> None:
        self._cancelled_here = True
        self._task.cancel()


@contextlib.asynccontextmanager
async def run_worker(
    app: App,
    dsn: str | None = None,
    *,
    profile: str | None = None,
    schema: str | None = None,
    concurrency: int = 10,
    prefetch: int | None = None,
    queues: str | Sequence[str] = ("default",),
    grace: float = 30.0,
    lease: float = 30.0,
    poll_interval: float = 5.0,
    listen: bool = True,
    listen_dsn: str | None = None,
    prepare_threshold: int | Literal["auto"] | None = "auto",
    misfire_grace: float = 5.0,
    db_timeout: float | None = None,
    worker_id: str | None = None,
    scheduler: bool = True,
    entry_points: bool = True,
    metrics_port: int | None = None,
    metrics_host: str = METRICS_HOST,
    start_timeout: float | None = None,
) -> AsyncIterator[RunningWorker]:
    """Run a worker on this event loop for the duration of the ``async with`` block.

    ``app``: a :class:`~pgjobs.registry.Registry`, an :class:`~pgjobs.job.Extension` (instance
    or class), an app spec ``"module:attr"`` as ``--app`` takes it, or a list of these; None
    finds the extensions as ``pgjobs worker`` does without ``--app``. Extensions of installed
    packages' entry points (unless ``entry_points=False``) and the built-in extension are added
    as the CLI adds them, and ``profile`` (else ``PGJOBS_PROFILE``) applies; a built registry is
    run as it is. ``dsn`` and ``schema`` fall back to ``PGJOBS_DSN`` and ``PGJOBS_SCHEMA``.
    The other options are ``pgjobs worker``'s, under the same names (``worker_id`` is ``--id``,
    ``listen=False`` is ``--no-listen``); ``scheduler=False`` serves the queue without ticking
    schedules. Of the CLI's environment variables, only ``PGJOBS_DSN``, ``PGJOBS_SCHEMA``,
    ``PGJOBS_PROFILE``, ``PGJOBS_APP`` (for ``app=None``) and ``PGJOBS_PREPARE_THRESHOLD`` are
    read: the application passes the rest.

    Before the block is entered: bad input raises one clear :class:`~pgjobs.errors.ConfigError`
    (an app spec that does not import, a bad profile or DSN), a schema that is not migrated a
    :class:`~pgjobs.errors.SchemaError`; while the database cannot be reached the start waits
    and retries, logging each attempt, for at most ``start_timeout`` seconds if given (then
    :class:`~pgjobs.errors.DatabaseError`). The block is entered once the worker's jobs and
    row are registered and it claims.

    Leaving the block stops the worker as SIGTERM stops ``pgjobs worker`` and waits for it: no
    more claims, running runs get ``grace`` seconds, the rest is cancelled and handed back to
    the queue. If the worker crashed meanwhile, its error is raised here (unless the block
    raised one of its own). No signal handler is installed.
    """
    registry = build_registry(app, profile, entry_points=entry_points)
    settings = worker_settings(
        dsn,
        schema=schema,
        concurrency=concurrency,
        prefetch=prefetch,
        queues=queues,
        grace=grace,
        lease=lease,
        poll_interval=poll_interval,
        listen=listen,
        listen_dsn=listen_dsn,
        prepare_threshold=prepare_threshold,
        misfire_grace=misfire_grace,
        db_timeout=db_timeout,
        worker_id=worker_id,
        scheduler=scheduler and registry.scheduler_enabled,
    )
    worker = Worker(registry, settings, WorkerMetrics())
    if metrics_port is not None:
        worker.metrics.serve_for_worker(metrics_port, metrics_host)
    try:
        running = await _start(worker, start_timeout)
        try:
            yield running
        finally:
            await running._shut_down()
        running._raise_error()
    finally:
        worker.metrics.stop_http()


async def _start(worker: Worker, start_timeout: float | None) -> RunningWorker:
    """Check the database, start the worker's task and return once it is registered."""
    started = asyncio.Event()
    running: RunningWorker | None = None
    deadline = asyncio.timeout(start_timeout)
    try:
        async with deadline:
            await _check_database(worker.settings)
            task = asyncio.create_task(worker.run(started), name=f"pgjobs-worker-{worker.id}")
            running = RunningWorker(worker, task, started)
            waiting = asyncio.create_task(started.wait())
            try:
                await asyncio.wait([waiting, task], return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiting.cancel()
    except TimeoutError:
        if running is not None:
            await running._shut_down()
        if not deadline.expired():
            raise
        raise DatabaseError(
            f"worker {worker.id} did not start within {start_timeout:g}s (the log says why: "
            "the database out of reach, or refusing the worker's registration)"
        ) from None
    except BaseException:
        if running is not None:
            await running._shut_down()
        raise
    assert running is not None
    if not started.is_set():
        running._leaving = True
        running._raise_error()
        raise PgJobsError(f"worker {worker.id} stopped before it started")
    return running


async def _check_database(settings: WorkerSettings) -> None:
    """Wait for the database as ``pgjobs worker`` does (a line per failed attempt), then check
    that its schema is the one this pgjobs needs. The attempts run in a thread, so that the
    application's loop goes on serving meanwhile."""
    backoff = Backoff(0.2, settings.backoff_max)
    while True:
        try:
            await asyncio.to_thread(_check_database_once, settings)
        except psycopg.OperationalError as exc:
            delay = backoff.next_delay()
            log.warning(
                "worker: database unavailable (attempt %d: %s); retrying in %.1fs",
                backoff.attempt,
                redact(first_line(exc), settings.dsn),
                delay,
            )
            await asyncio.sleep(delay)
        else:
            if backoff.attempt:
                log.info("worker: database reachable after %d failed attempt(s)", backoff.attempt)
            return


def _check_database_once(settings: WorkerSettings) -> None:
    from pgjobs.migrations import check_schema

    try:
        conn = psycopg.connect(
            settings.dsn,
            autocommit=True,
            connect_timeout=CHECK_CONNECT_TIMEOUT,
            prepare_threshold=settings.prepare_after,
        )
    except psycopg.ProgrammingError as exc:
        raise invalid_dsn_error(settings.dsn, exc) from exc
    with conn:
        check_schema(conn, settings.schema)


def build_registry(app: App, profile: str | None = None, *, entry_points: bool = True) -> Registry:
    """The registry :func:`run_worker` runs for ``app`` (see there), found and checked as
    ``pgjobs worker`` finds and checks its own; a one-line :class:`ConfigError` (or
    :class:`~pgjobs.errors.RegistrationError`, :class:`~pgjobs.errors.ProfileError`) if not."""
    if isinstance(app, Registry):
        if profile is not None:
            raise ConfigError(
                "profile= cannot apply to a registry already built: pass the extensions (or an "
                "app spec) with the profile, or build the registry with it"
            )
        return app
    if app is None:
        return load_registry(None, profile, entry_points=entry_points)
    items: list[object] = [app]
    if not isinstance(app, str | Extension | type) and isinstance(app, Iterable):
        items = list(app)
    extensions: list[Extension] = []
    for item in items:
        if isinstance(item, str):
            extensions.extend(load_app(item))
        else:
            extensions.extend(resolve_extensions(item, "run_worker's app", call=False))
    if entry_points:
        extensions.extend(entry_point_extensions())
    path = profile or os.environ.get("PGJOBS_PROFILE") or None
    loaded = load_profile(path) if path else None
    return Registry.build(unique_extensions([*extensions, BuiltinExtension()]), loaded)


def worker_settings(
    dsn: str | None = None,
    *,
    schema: str | None = None,
    concurrency: int = 10,
    prefetch: int | None = None,
    queues: str | Sequence[str] = ("default",),
    grace: float = 30.0,
    lease: float = 30.0,
    poll_interval: float = 5.0,
    listen: bool = True,
    listen_dsn: str | None = None,
    prepare_threshold: int | Literal["auto"] | None = "auto",
    misfire_grace: float = 5.0,
    db_timeout: float | None = None,
    worker_id: str | None = None,
    scheduler: bool = True,
) -> WorkerSettings:
    """:class:`WorkerSettings` from :func:`run_worker`'s options, each checked as the CLI
    checks its own: a one-line :class:`ConfigError` names the first that is wrong."""
    _at_least("concurrency", concurrency, 1, whole=True)
    if prefetch is not None:
        _at_least("prefetch", prefetch, 0, whole=True)
    _at_least("grace", grace, 0)
    _at_least("lease", lease, 0.5)
    _at_least("poll_interval", poll_interval, 0.05)
    _at_least("misfire_grace", misfire_grace, 0)
    if db_timeout is not None:
        _at_least("db_timeout", db_timeout, 0.5)
    if listen_dsn and not listen:
        raise ConfigError("listen_dsn and listen=False contradict each other: choose one")
    if prepare_threshold == "auto" and os.environ.get(PREPARE_THRESHOLD_ENV, "").strip():
        prepare_threshold = parse_prepare_threshold(os.environ[PREPARE_THRESHOLD_ENV])
    elif prepare_threshold not in ("auto", None):
        _at_least("prepare_threshold", prepare_threshold, 0, whole=True)
    return WorkerSettings(
        dsn=checked_dsn(resolve_dsn(dsn)),
        schema=resolve_schema(schema),
        concurrency=concurrency,
        prefetch=prefetch,
        queues=_queue_names(queues),
        grace=grace,
        lease=lease,
        poll_interval=poll_interval,
        listen=listen,
        listen_dsn=checked_dsn(listen_dsn) if listen_dsn else None,
        prepare_threshold=prepare_threshold,
        worker_id=worker_id or None,
        misfire_grace=misfire_grace,
        db_timeout=db_timeout,
        scheduler=scheduler,
    )


def _at_least(name: str, value: object, minimum: float, *, whole: bool = False) -> None:
    number = isinstance(value, int) if whole else isinstance(value, int | float)
    if isinstance(value, bool) or not number:
        kind = "a whole number" if whole else "a number of seconds"
        raise ConfigError(f"{name} must be {kind}, got {value!r}")
    assert isinstance(value, int | float)
    if not value >= minimum:  # NaN too
        raise ConfigError(f"{name} must be at least {minimum:g}, got {value!r}")


def _queue_names(queues: str | Sequence[str]) -> tuple[str, ...]:
    names = (queues,) if isinstance(queues, str) else tuple(queues)
    if not names:
        raise ConfigError("queues is empty: name at least one queue (default: default)")
    for name in names:
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"queues: {name!r} is not a queue name")
    return names


def checked_dsn(dsn: str) -> str:
    """``dsn`` if libpq can parse it, else a one-line :class:`ConfigError` without its password."""
    try:
        psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        raise invalid_dsn_error(dsn, exc) from exc
    return dsn
