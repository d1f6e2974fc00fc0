"""Waiting for a run's end: :func:`wait` (async) and :func:`wait_sync`.

Code that queued a run (``pgjobs.enqueue``, ``jobs run --queue-it``) waits for it to end and gets
its outcome: the last attempt's when the run was retried (each retry is a new run whose
``retry_of`` is the attempt before). The wait LISTENs on the schema's awaited channel, then marks
the run ``awaited`` (migration 0012): every change of an awaited run's status notifies that channel
with the run's id, and a retry of an awaited run is inserted awaited. Runs nobody waits for notify
nothing.

A NOTIFY is a wake-up, never the only way to learn of the end: while listening, the wait reads
the run again every :data:`LISTEN_RECHECK` seconds anyway, so a notification lost (behind a
transaction pooler, whose server sessions change hands) costs that much and never the outcome.
Without LISTEN it polls, every :data:`POLL_FIRST` seconds at first, backing off to
:data:`POLL_CAP`: when told ``listen=False``, or by default when ``PGJOBS_NO_LISTEN`` is set (as
for the workers behind a transaction pooler), or when the server refuses the LISTEN or the mark (a
standby, a role that may only read).

The wait's decisions are one plan (:func:`_follow`), a generator of steps that a sync and an async
driver carry out on the connection, as :mod:`pgjobs.caller` does for statements.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import time
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any, TypeAlias

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from pgjobs.db import connection_error, connection_options, first_line, resolve_schema
from pgjobs.errors import (
    ConfigError,
    DatabaseError,
    PgJobsError,
    SchemaError,
    UnknownRunError,
    WaitTimeout,
)
from pgjobs.migrations import upgrade_command
from pgjobs.named_queries import Queries

FINISHED = frozenset({"succeeded", "failed", "timed_out", "cancelled", "skipped", "abandoned"})
"""The statuses a run ends in (``queued`` and ``running`` are the others)."""

LISTEN_RECHECK = 5.0
"""Seconds between two reads of a run while a NOTIFY is expected: the cost of a lost one."""

POLL_FIRST = 0.05
"""Seconds between the first reads of a run when polling; doubling from there."""

POLL_CAP = 1.0
"""The longest wait between two reads of a run when polling."""

NO_LISTEN_ENV = "PGJOBS_NO_LISTEN"
"""Set (``1``, ``true``, ``yes``, ``on``), the waits that are not told ``listen`` poll."""

_MAX_ID = 2**63

_channels: dict[str, str] = {}
"""The awaited channel of each schema (the database's awaited_channel() says it, once)."""


@dataclass(frozen=True)
class FinishedRun:
    """How a run ended: the outcome of its last attempt.

    ``run_id`` is the run waited for; ``final_run_id`` its last attempt, the same run unless it
    was retried (``attempt`` then says which attempt it is). ``ok``: it succeeded.
    """

    run_id: int
    final_run_id: int
    job: str
    status: str
    attempt: int
    worker_id: str | None
    started_at: datetime | None
    finished_at: datetime | None
    duration_seconds: float | None
    message: str | None
    data: dict[str, Any] | None
    items_processed: int | None
    items_failed: int | None
    error_type: str | None
    error_message: str | None

    @property
    def ok(self) -> bool:
        """True when the last attempt succeeded."""
        return self.status == "succeeded"


async def wait(
    conn: psycopg.AsyncConnection[Any] | str,
    run_id: int,
    *,
    timeout: float | None = None,
    schema: str | None = None,
    listen: bool | None = None,
) -> FinishedRun:
    """Wait until run ``run_id`` has ended, following its retries, and return how it ended.

    ``conn`` is a psycopg ``AsyncConnection`` outside a transaction (the wait commits its own
    statements; one that is not in autocommit mode is put in it for the wait and given back as
    it was), or a DSN, on which the wait opens a connection of its own. ``timeout`` (seconds,
    None: no limit) bounds the whole wait: :class:`WaitTimeout` is raised when it runs out and
    the run is left as it is. A run that has ended already is returned at once. ``listen=False``
    polls instead of LISTENing (a transaction pooler such as PgBouncer between here and the
    database); None: LISTEN unless ``PGJOBS_NO_LISTEN`` is set. ``schema`` defaults to
    ``PGJOBS_SCHEMA``, else ``pgjobs``.

    One wait at a time on a connection: it LISTENs and reads the notifications on it.
    Raises :class:`UnknownRunError` when no run has the id, :class:`ConfigError` for a bad
    argument or a connection in a transaction, :class:`DatabaseError` when the database fails.
    """
    queries, plan = _start(run_id, timeout, schema, listen)
    try:
        async with _async_connection(conn, "wait") as usable:
            return await _drive_async(usable, queries, plan)
    except psycopg.Error as exc:
        raise _database_error(queries.schema, run_id, exc) from exc


def wait_sync(
    conn: psycopg.Connection[Any] | str,
    run_id: int,
    *,
    timeout: float | None = None,
    schema: str | None = None,
    listen: bool | None = None,
) -> FinishedRun:
    """:func:`wait` for sync code: ``conn`` is a psycopg ``Connection`` or a DSN. Same arguments,
    same guarantees."""
    queries, plan = _start(run_id, timeout, schema, listen)
    try:
        with _sync_connection(conn, "wait_sync") as usable:
            return _drive_sync(usable, queries, plan)
    except psycopg.Error as exc:
        raise _database_error(queries.schema, run_id, exc) from exc


def follow_sync(
    conn: psycopg.Connection[Any],
    queries: Queries,
    run_id: int,
    on_change: Callable[[dict[str, Any]], None],
    *,
    timeout: float | None = None,
    listen: bool = True,
) -> FinishedRun:
    """:func:`wait_sync` on an open autocommit connection that calls ``on_change`` with the row
    of the run followed (``run_progress``) each time it or its status changes."""
    plan = _follow(queries, _checked_id(run_id), _checked_timeout(timeout), listen, on_change)
    return _drive_sync(conn, queries, plan)


# -- the plan ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Read:
    """Run the named query; sent back its rows, as dicts."""

    query: str
    params: dict[str, Any]


@dataclass(frozen=True)
class _Listen:
    """LISTEN on ``channel``; sent back nothing, or thrown the server's refusal."""

    channel: str


@dataclass(frozen=True)
class _Pause:
    """Sleep up to ``seconds``, less if the awaited channel tells of run ``run_id``."""

    seconds: float
    run_id: int


_Step: TypeAlias = _Read | _Listen | _Pause
_Plan: TypeAlias = Generator[_Step, Any, FinishedRun]


def _follow(
    queries: Queries,
    run_id: int,
    timeout: float | None,
    listen: bool,
    on_change: Callable[[dict[str, Any]], None] | None,
) -> _Plan:
    deadline = None if timeout is None else time.monotonic() + timeout
    listening = listen
    if listening:
        try:
            channel = _channels.get(queries.schema)
            if channel is None:
                rows = yield _Read("awaited_channel", {"schema": queries.schema})
                channel = _channels.setdefault(queries.schema, rows[0]["awaited_channel"])
            yield _Listen(channel)
        except psycopg.Error as exc:
            listening = _refused(exc)
    current = run_id
    shown: tuple[int, str] | None = None
    while True:
        if listening:
            try:
                # No row: no such run, which the read below says.
                yield _Read("mark_run_awaited", {"id": current, "schema": queries.schema})
            except psycopg.Error as exc:
                listening = _refused(exc)
        delay = POLL_FIRST
        while True:
            # A snapshot taken after the mark committed: it shows any change made before the
            # mark, and any change made after it notifies.
            rows = yield _Read("run_progress", {"id": current})
            if not rows:
                if current == run_id:
                    raise UnknownRunError(f"no run with id {run_id}")
                raise DatabaseError(f"run {current} (retry of run {run_id}) disappeared")
            row = rows[0]
            if (current, row["status"]) != shown:
                shown = (current, row["status"])
                delay = POLL_FIRST
                if on_change is not None:
                    on_change(row)
            if row["status"] in FINISHED:
                break
            pause = LISTEN_RECHECK if listening else delay
            delay = min(delay * 2, POLL_CAP)
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    assert timeout is not None
                    raise WaitTimeout(
                        f"run {current} is still {row['status']} after {timeout:g}s of waiting; "
                        f"the run goes on, see `pgjobs runs show {current}`",
                        run_id=current,
                        status=row["status"],
                    )
                pause = min(pause, left)
            yield _Pause(pause, current)
        if row["retry_id"] is None:
            return _finished(run_id, row)
        current = int(row["retry_id"])


def _refused(exc: psycopg.Error) -> bool:
    """False (poll from now on) when the server refuses a LISTEN or a mark: a standby or a
    read-only transaction (25xxx), a feature a pooler does not carry (0A000), a role that may
    only read (42501). Re-raises anything else."""
    state = exc.sqlstate or ""
    if state.startswith(("25", "0A")) or state == "42501":
        return False
    raise exc


def _finished(run_id: int, row: dict[str, Any]) -> FinishedRun:
    return FinishedRun(
        run_id=run_id,
        final_run_id=row["id"],
        job=row["job"],
        status=row["status"],
        attempt=row["attempt"],
        worker_id=row["worker_id"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        duration_seconds=row["duration_seconds"],
        message=row["message"],
        data=row["data"],
        items_processed=row["items_processed"],
        items_failed=row["items_failed"],
        error_type=row["error_type"],
        error_message=row["error_message"],
    )


# -- arguments and connections ----------------------------------------------------------------


def _start(
    run_id: object, timeout: object, schema: str | None, listen: bool | None
) -> tuple[Queries, _Plan]:
    queries = _queries(resolve_schema(schema))
    listening = listens_by_default() if listen is None else bool(listen)
    plan = _follow(queries, _checked_id(run_id), _checked_timeout(timeout), listening, None)
    return queries, plan


def listens_by_default() -> bool:
    """Whether a wait LISTENs when not told: unless ``PGJOBS_NO_LISTEN`` is set."""
    value = os.environ.get(NO_LISTEN_ENV, "").strip().lower()
    return value not in ("1", "true", "yes", "on", "y", "t")


@cache
def _queries(schema: str) -> Queries:
    return Queries(schema)


def _checked_id(run_id: object) -> int:
    if isinstance(run_id, bool) or not isinstance(run_id, int) or not 0 < run_id < _MAX_ID:
        raise ConfigError(f"run_id must be a run's id (a positive integer), got {run_id!r}")
    return run_id


def _checked_timeout(timeout: object) -> float | None:
    if timeout is None:
        return None
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or not math.isfinite(timeout)
        or timeout < 0
    ):
        raise ConfigError(
            f"timeout must be a number of seconds (0 or more) or None, got {timeout!r}"
        )
    return float(timeout)


def _check_idle(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any], api: str) -> None:
    if conn.closed:
        raise ConfigError(f"{api} was given a closed connection")
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        raise ConfigError(
            f"{api} needs a connection outside a transaction: commit first (the workers see a "
            "run only once the transaction that queued it has committed)"
        )


@contextlib.contextmanager
def _sync_connection(conn: object, api: str) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection to wait on: a new one for a DSN, else ``conn`` put in
    autocommit mode for the wait and given back as it was."""
    if isinstance(conn, str):
        try:
            own = psycopg.Connection.connect(
                conn, autocommit=True, connect_timeout=10, **connection_options()
            )
        except psycopg.Error as exc:
            raise connection_error(conn, exc) from exc
        with own:
            yield own
        return
    if not isinstance(conn, psycopg.Connection):
        raise _not_a_connection(conn, api, "psycopg Connection")
    _check_idle(conn, api)
    was = conn.autocommit
    conn.autocommit = True
    try:
        yield conn
    finally:
        if not was and not conn.closed:
            with contextlib.suppress(psycopg.Error):
                conn.autocommit = False


@contextlib.asynccontextmanager
async def _async_connection(conn: object, api: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """:func:`_sync_connection` for :func:`wait`."""
    if isinstance(conn, str):
        try:
            own = await psycopg.AsyncConnection.connect(
                conn, autocommit=True, connect_timeout=10, **connection_options()
            )
        except psycopg.Error as exc:
            raise connection_error(conn, exc) from exc
        async with own:
            yield own
        return
    if not isinstance(conn, psycopg.AsyncConnection):
        raise _not_a_connection(conn, api, "psycopg AsyncConnection")
    _check_idle(conn, api)
    was = conn.autocommit
    await conn.set_autocommit(True)
    try:
        yield conn
    finally:
        if not was and not conn.closed:
            with contextlib.suppress(psycopg.Error):
                await conn.set_autocommit(False)


def _not_a_connection(conn: object, api: str, wanted: str) -> ConfigError:
    hint = ""
    if isinstance(conn, psycopg.AsyncConnection):
        hint = ": it is async, use `await pgjobs.wait(...)`"
    elif isinstance(conn, psycopg.Connection):
        hint = ": it is sync, use `pgjobs.wait_sync(...)`"
    return ConfigError(f"{api} needs a {wanted} or a DSN, got {type(conn).__name__}{hint}")


def _database_error(schema: str, run_id: int, exc: psycopg.Error) -> PgJobsError:
    if exc.sqlstate in ("42883", "42703"):  # awaited_channel() or runs.awaited missing
        return SchemaError(
            f"the pgjobs schema is older than this code (no runs.awaited): run "
            f"`{upgrade_command(schema)}`"
        )
    return DatabaseError(f"database error while waiting for run {run_id}: {first_line(exc)}")


# -- the drivers ------------------------------------------------------------------------------


@cache
def _listen_query(channel: str) -> sql.Composed:
    return sql.SQL("LISTEN {}").format(sql.Identifier(channel))


@cache
def _unlisten_query(channel: str) -> sql.Composed:
    return sql.SQL("UNLISTEN {}").format(sql.Identifier(channel))


def _drive_sync(conn: psycopg.Connection[Any], queries: Queries, plan: _Plan) -> FinishedRun:
    channel: str | None = None
    try:
        step = next(plan)
        while True:
            result: Any = None
            try:
                if isinstance(step, _Read):
                    with conn.cursor(row_factory=dict_row) as cur:
                        cur.execute(queries[step.query], step.params)
                        result = cur.fetchall()
                elif isinstance(step, _Listen):
                    conn.execute(_listen_query(step.channel))
                    channel = step.channel
                elif channel is None:
                    time.sleep(step.seconds)
                else:
                    wanted = str(step.run_id)
                    for notify in conn.notifies(timeout=step.seconds):
                        if notify.channel == channel and notify.payload == wanted:
                            break
            except psycopg.Error as exc:
                if conn.broken or conn.closed:
                    raise
                step = plan.throw(exc)
                continue
            step = plan.send(result)
    except StopIteration as done:
        finished: FinishedRun = done.value
        return finished
    finally:
        if channel is not None and not (conn.broken or conn.closed):
            with contextlib.suppress(psycopg.Error):
                conn.execute(_unlisten_query(channel))


async def _drive_async(
    conn: psycopg.AsyncConnection[Any], queries: Queries, plan: _Plan
) -> FinishedRun:
    channel: str | None = None
    try:
        step = next(plan)
        while True:
            result: Any = None
            try:
                if isinstance(step, _Read):
                    async with conn.cursor(row_factory=dict_row) as cur:
                        await cur.execute(queries[step.query], step.params)
                        result = await cur.fetchall()
                elif isinstance(step, _Listen):
                    await conn.execute(_listen_query(step.channel))
                    channel = step.channel
                elif channel is None:
                    await asyncio.sleep(step.seconds)
                else:
                    wanted = str(step.run_id)
                    notifies = conn.notifies(timeout=step.seconds)
                    try:
                        async for notify in notifies:
                            if notify.channel == channel and notify.payload == wanted:
                                break
                    finally:
                        await notifies.aclose()
            except psycopg.Error as exc:
                if conn.broken or conn.closed:
                    raise
                step = plan.throw(exc)
                continue
            step = plan.send(result)
    except StopIteration as done:
        finished: FinishedRun = done.value
        return finished
    finally:
        if channel is not None and not (conn.broken or conn.closed):
            with contextlib.suppress(psycopg.Error):
                await conn.execute(_unlisten_query(channel))
