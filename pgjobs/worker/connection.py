"""The worker's links to the database: how they are opened, how a dead one is recognised, and
the pools its jobs use.

Three kinds of connection, all with TCP keepalives, a bounded connect and the worker's prepare
threshold (none behind a transaction pooler):

- the loop's own connection (every statement of the loop, one at a time);
- the LISTEN connection (wake-ups), on ``--listen-dsn`` when the others go through a pooler;
- the jobs' pools, async and sync (``ctx.db_pool``).

Behind a transaction pooler (:attr:`WorkerSettings.pooled`) no connection keeps anything in its
server session: no prepared statement, no ``SET``; every statement is a transaction of its own or
inside an explicit one, and the only locks beyond a transaction are rows (run locks, slots).

A connection that dies is replaced, never repaired. Which errors mean "the connection is gone"
(the worker reconnects and carries on) and which belong to one statement (a run's outcome the
database refused) is decided here, once.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from pgjobs.worker.settings import WorkerSettings

log = logging.getLogger("pgjobs.worker")

CONNECT_TIMEOUT = 5
"""Seconds libpq may take to open a connection (a black-holed host answers nothing)."""

POOL_RECONNECT_TIMEOUT = 5.0
"""A pool stops retrying a failed connection after this long and opens one on the next demand,
instead of backing off ever longer while the server is down (psycopg_pool's default is 5 min,
with delays doubling up to a minute and more)."""

# SQLSTATEs that mean the server went away or is not serving yet: connection exceptions (08),
# admin/crash shutdown and "cannot connect now" (57P01-57P03), too many connections (53300).
_CONNECTION_STATES = (
    "57P01",
    "57P02",
    "57P03",
    "53300",
    # A prepared statement the server session does not have, or has already: the session is
    # not the one psycopg prepared it on (a transaction pooler). A new connection starts clean.
    "26000",
    "42P05",
)

# Transient conflicts between workers: deadlock, serialization failure, lock not available.
_RETRY_STATES = ("40P01", "40001", "55P03")


def connection_kwargs(settings: WorkerSettings) -> dict[str, Any]:
    """libpq parameters for every connection of a worker: a bounded connect, TCP keepalives
    that find a dead peer within about 20 s of silence, and a bound on unacknowledged data; and
    psycopg's prepare threshold (:attr:`WorkerSettings.prepare_after`)."""
    return {
        "prepare_threshold": settings.prepare_after,
        "connect_timeout": CONNECT_TIMEOUT,
        "keepalives": 1,
        "keepalives_idle": 10,
        "keepalives_interval": 3,
        "keepalives_count": 3,
        "tcp_user_timeout": int(settings.statement_deadline * 1000),
    }


def is_connection_error(exc: BaseException, conn: psycopg.AsyncConnection[Any] | None) -> bool:
    """Whether ``exc`` means the loop's connection is gone (reconnect), rather than an error of
    one statement on a connection that still works."""
    if isinstance(exc, TimeoutError | psycopg.InterfaceError):
        return True
    if not isinstance(exc, psycopg.Error):
        return False  # refused before it was sent (a value the driver cannot dump)
    if conn is None or conn.closed or conn.broken:
        return True
    sqlstate = getattr(exc, "sqlstate", None) or ""
    return sqlstate.startswith("08") or sqlstate in _CONNECTION_STATES


def is_transient_conflict(exc: BaseException) -> bool:
    """A deadlock or serialization failure: the same statement may simply be tried again."""
    return (getattr(exc, "sqlstate", None) or "") in _RETRY_STATES


async def open_loop_connection(
    settings: WorkerSettings, worker_id: str
) -> psycopg.AsyncConnection[Any]:
    """The loop's own connection, autocommit, without JIT and with generic plans unless behind
    a pooler."""
    conn = await psycopg.AsyncConnection.connect(
        settings.dsn,
        autocommit=True,
        application_name=f"pgjobs-worker {worker_id}",
        **connection_kwargs(settings),
    )
    if settings.pooled:
        # A session setting would stick to a server connection other clients share: the
        # pooler's connect_query or the role's defaults must turn JIT off (docs/operations.md).
        await _warn_if_jit(conn)
        return conn
    # The claim's estimated cost grows with the queue: past jit_above_cost (100,000 by default,
    # a queue of some 30,000 runs) PostgreSQL compiles its ~600 expressions on every execution,
    # about half a second of the worker's loop per claim for a statement that runs in a few
    # milliseconds. And the worker's statements are written to plan well for any parameters,
    # and planning the claim took longer than running it: a prepared statement keeps its
    # generic plan (without prepared statements the setting does nothing).
    #
    # A transaction of the loop (a tick, the registration) whose connection goes silent between
    # its statements (a partition, a frozen host, a half-open connection that nothing closes)
    # would leave its backend idle in the transaction for good, holding the due jobs' rows and
    # the queued runs its claim walked: no other worker could tick those jobs or claim those
    # runs. The server ends such a transaction after the loop's statement deadline.
    await conn.execute(
        "SELECT set_config('jit', 'off', false), "
        "set_config('plan_cache_mode', 'force_generic_plan', false), "
        "set_config('idle_in_transaction_session_timeout', %s, false)",
        (str(idle_in_transaction_ms(settings)),),
    )
    return conn


def idle_in_transaction_ms(settings: WorkerSettings) -> int:
    """How long the server lets a transaction of the loop's connection wait for its next
    statement before it ends the session: the loop's statement deadline. The loop sends a
    transaction's statements one after the other, with no more than the planning of a batch of
    ticks between them."""
    return int(settings.statement_deadline * 1000)


_jit_warned = False


async def _warn_if_jit(conn: psycopg.AsyncConnection[Any]) -> None:
    """Say once per process when JIT is on for a pooled worker's sessions."""
    global _jit_warned
    if _jit_warned:
        return
    row = await (await conn.execute("SELECT current_setting('jit')::bool")).fetchone()
    if row and row[0]:
        _jit_warned = True
        log.warning(
            "jit is on in this worker's sessions, which go through a pooler: once the queue is "
            "deep, each claim spends about half a second compiling; turn it off in the "
            "pooler's connect_query or with ALTER ROLE ... SET jit = off (docs/operations.md)"
        )


async def open_listen_connection(
    settings: WorkerSettings, worker_id: str
) -> psycopg.AsyncConnection[Any]:
    """The LISTEN connection: on ``listen_dsn`` if the worker has one (a NOTIFY reaches only the
    session that listens, which a transaction pooler does not keep), else on ``dsn``."""
    return await psycopg.AsyncConnection.connect(
        settings.listen_dsn or settings.dsn,
        autocommit=True,
        application_name=f"pgjobs-listen {worker_id}",
        **connection_kwargs(settings),
    )


def async_jobs_pool(settings: WorkerSettings, worker_id: str) -> AsyncConnectionPool:
    """The pool of async jobs (``ctx.db_pool``); opened by the caller."""
    deadline = settings.statement_deadline

    async def check(conn: psycopg.AsyncConnection[Any]) -> None:
        # A connection handed to a job works: a half-open one is dropped within the deadline.
        async with asyncio.timeout(deadline):
            await AsyncConnectionPool.check_connection(conn)

    return AsyncConnectionPool(
        settings.dsn,
        min_size=1,
        max_size=max(2, settings.concurrency),
        open=False,
        check=check,
        kwargs=connection_kwargs(settings),
        reconnect_timeout=POOL_RECONNECT_TIMEOUT,
        name=f"pgjobs-jobs-{worker_id}",
    )


def sync_jobs_pool(settings: WorkerSettings, worker_id: str) -> ConnectionPool:
    """The pool of sync jobs (``ctx.db_pool``), opened at once (without waiting)."""
    pool = ConnectionPool(
        settings.dsn,
        min_size=1,
        max_size=max(2, settings.concurrency),
        open=False,
        check=ConnectionPool.check_connection,
        kwargs=connection_kwargs(settings),
        reconnect_timeout=POOL_RECONNECT_TIMEOUT,
        name=f"pgjobs-sync-jobs-{worker_id}",
    )
    pool.open(wait=False)
    return pool
