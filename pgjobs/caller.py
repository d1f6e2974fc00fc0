"""The caller's connection: what the APIs that write in application code's own transaction (the
enqueue API, the schedules API) share.

Application code passes a psycopg connection, or a SQLAlchemy connection or session using the
psycopg driver (``postgresql+psycopg://``); :func:`sync_connection` and :func:`async_connection`
find the psycopg connection under it, beginning the SQLAlchemy transaction if none is open, and
never commit, roll back or change its autocommit mode. SQLAlchemy is imported only when such an
object is passed. An API's statements are a plan (a generator of statements, sent each one's
rows) that :func:`drive_sync` and :func:`drive_async` run, so that the sync and async functions
share every decision.

The caller's connection is the caller's: its settings are never changed here. Behind a
transaction pooler that cannot carry prepared statements (PgBouncer before 1.21), the caller
opens it with ``prepare_threshold=None`` (SQLAlchemy: ``connect_args={"prepare_threshold":
None}``), as psycopg documents; the statements of these APIs need nothing else of the session.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias, TypeVar

import psycopg
from psycopg import pq
from psycopg.rows import tuple_row

from pgjobs.errors import ConfigError

T = TypeVar("T")

Row: TypeAlias = tuple[Any, ...]
Statement: TypeAlias = tuple[str, Mapping[str, Any] | None]
Plan: TypeAlias = Generator[Statement, list[Row], T]
"""Statements to run in order: each yield is sent the statement's rows (none for a statement
that returns none) or, when it failed, thrown its :class:`psycopg.Error`; returns the result."""


@dataclass(frozen=True)
class Api:
    """How an API is named in the errors about the connection it was given."""

    sync_name: str  # "enqueue_sync"
    async_name: str  # "enqueue"
    sync_call: str  # "`pgjobs.enqueue_sync(...)` / `enqueue_many_sync(...)`"
    async_call: str  # "`await pgjobs.enqueue(...)` / `enqueue_many(...)`"
    activity: str  # "enqueueing": what joins the caller's transaction


def sync_connection(conn: object, api: Api) -> psycopg.Connection[Any]:
    """The psycopg connection under ``conn``, with its SQLAlchemy transaction begun.

    Raises :class:`ConfigError` for an async connection or one of another kind.
    """
    if isinstance(conn, psycopg.Connection):
        return conn
    if _is_sqlalchemy(conn):
        from sqlalchemy.engine import Connection
        from sqlalchemy.orm import Session, scoped_session

        if isinstance(conn, scoped_session):
            conn = conn()
        if isinstance(conn, Session):
            conn = conn.connection()
        if isinstance(conn, Connection):
            if not conn.in_transaction():
                conn.begin()
            driver = conn.connection.driver_connection
            if isinstance(driver, psycopg.Connection):
                return driver
            raise _not_psycopg(api, conn.dialect.name, conn.dialect.driver)
    if isinstance(conn, psycopg.AsyncConnection) or _is_sqlalchemy_async(conn):
        raise ConfigError(f"{_kind(conn)} is async: use {api.async_call}")
    raise ConfigError(
        f"{api.sync_name} needs a psycopg Connection or a SQLAlchemy Connection or Session "
        f"({api.activity} joins their transaction), got {_kind(conn)}"
    )


async def async_connection(conn: object, api: Api) -> psycopg.AsyncConnection[Any]:
    """The psycopg async connection under ``conn``, with its SQLAlchemy transaction begun.

    Raises :class:`ConfigError` for a sync connection or one of another kind.
    """
    if isinstance(conn, psycopg.AsyncConnection):
        return conn
    if _is_sqlalchemy_async(conn):
        from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_scoped_session

        if isinstance(conn, async_scoped_session):
            conn = conn()
        if isinstance(conn, AsyncSession):
            conn = await conn.connection()
        if isinstance(conn, AsyncConnection):
            if not conn.in_transaction():
                await conn.begin()
            raw = await conn.get_raw_connection()
            driver = raw.driver_connection
            if isinstance(driver, psycopg.AsyncConnection):
                return driver
            raise _not_psycopg(api, conn.dialect.name, conn.dialect.driver)
    if isinstance(conn, psycopg.Connection) or _is_sqlalchemy(conn):
        raise ConfigError(f"{_kind(conn)} is sync: use {api.sync_call}")
    raise ConfigError(
        f"{api.async_name} needs a psycopg AsyncConnection or a SQLAlchemy AsyncConnection or "
        f"AsyncSession ({api.activity} joins their transaction), got {_kind(conn)}"
    )


def _has_rows(cur: psycopg.Cursor[Any] | psycopg.AsyncCursor[Any]) -> bool:
    """Whether the statement returned rows (a look at the result's status: ``description``
    would build a column object per column for nothing, on every enqueue)."""
    result = cur.pgresult
    return result is not None and result.status == pq.ExecStatus.TUPLES_OK


def drive_sync(conn: psycopg.Connection[Any], plan: Plan[T]) -> T:
    """Run ``plan``'s statements on ``conn`` and return its result."""
    try:
        query, params = next(plan)
        while True:
            try:
                with conn.cursor(row_factory=tuple_row) as cur:
                    cur.execute(query, params)
                    rows = cur.fetchall() if _has_rows(cur) else []
            except psycopg.Error as err:
                query, params = plan.throw(err)
            else:
                query, params = plan.send(rows)
    except StopIteration as done:
        result: T = done.value
        return result


async def drive_async(conn: psycopg.AsyncConnection[Any], plan: Plan[T]) -> T:
    """Run ``plan``'s statements on ``conn`` and return its result."""
    try:
        query, params = next(plan)
        while True:
            try:
                async with conn.cursor(row_factory=tuple_row) as cur:
                    await cur.execute(query, params)
                    rows = await cur.fetchall() if _has_rows(cur) else []
            except psycopg.Error as err:
                query, params = plan.throw(err)
            else:
                query, params = plan.send(rows)
    except StopIteration as done:
        result: T = done.value
        return result


def in_transaction(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> bool:
    """Whether a statement on ``conn`` runs in a transaction of the caller's (one that is open,
    or that the statement begins, the connection not being in autocommit mode)."""
    idle = conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    return not (conn.autocommit and idle)


def _is_sqlalchemy(conn: object) -> bool:
    return type(conn).__module__.split(".", 1)[0] == "sqlalchemy"


def _is_sqlalchemy_async(conn: object) -> bool:
    return type(conn).__module__.startswith("sqlalchemy.ext.asyncio")


def _not_psycopg(api: Api, dialect: str, driver: str) -> ConfigError:
    return ConfigError(
        f"{api.activity} needs SQLAlchemy's psycopg driver (postgresql+psycopg://), "
        f"not {dialect}+{driver}"
    )


def _kind(value: object) -> str:
    return type(value).__name__
