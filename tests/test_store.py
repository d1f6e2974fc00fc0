"""The store's housekeeping statements, on a real database."""

from __future__ import annotations

import asyncio

import psycopg

from pgjobs.store import Queries, WorkerStore


def refresh(dsn: str) -> bool:
    """A reap pass, and the ANALYZE it asks for; whether it asked."""

    async def go() -> bool:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            store = WorkerStore(conn, Queries(), "w")
            stale = (await store.reap_expired_leases()).statistics_stale
            return stale and await store.analyze_runs()

    return asyncio.run(go())


def test_statistics_of_runs_are_refreshed_when_missing_and_then_left_alone(
    conn: psycopg.Connection[tuple[object, ...]], dsn: str
) -> None:
    conn.execute(
        "INSERT INTO pgjobs.runs (job, trigger) SELECT 'j', 'enqueue' FROM generate_series(1, 5000)"
    )
    assert conn.execute(
        "SELECT reltuples FROM pg_class WHERE oid = 'pgjobs.runs'::regclass"
    ).fetchone() == (-1,)

    assert refresh(dsn) is True
    assert conn.execute(
        "SELECT reltuples FROM pg_class WHERE oid = 'pgjobs.runs'::regclass"
    ).fetchone() == (5000,)
    assert refresh(dsn) is False
