"""The store's housekeeping statements, on a real database."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import psycopg
import pytest

from pgjobs.errors import PgJobsError
from pgjobs.named_queries import Queries, _load_query_texts
from pgjobs.store import Outcome, WorkerStore
from tests.cli import add_worker

T = TypeVar("T")


def as_worker(dsn: str, use: Callable[[WorkerStore], Awaitable[T]]) -> T:
    """``use`` the store of worker ``w`` on a connection of its own, and its result."""

    async def go() -> T:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            return await use(WorkerStore(conn, Queries(), "w"))

    return asyncio.run(go())


def refresh(dsn: str) -> bool:
    """A reap pass, and the ANALYZE it asks for; whether it asked."""

    async def go(store: WorkerStore) -> bool:
        stale = (await store.reap_expired_leases()).statistics_stale
        return stale and await store.analyze_runs()

    return as_worker(dsn, go)


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


def finish(dsn: str, run_ids: list[int], defer: list[int]) -> tuple[set[int], set[int]]:
    """Worker ``w`` records each run as succeeded, claiming nothing: (finished, deferred)."""

    async def go(store: WorkerStore) -> tuple[set[int], set[int]]:
        outcomes = [Outcome(run_id, "succeeded", 0.01) for run_id in run_ids]
        batch = await store.finish_and_claim_runs(
            outcomes, queues=[], limit=0, lease=0, defer=defer
        )
        return set(batch.finished), set(batch.deferred)

    return as_worker(dsn, go)


def test_an_outcome_that_may_wait_is_left_for_later_while_another_transaction_holds_its_row(
    conn: psycopg.Connection[tuple[object, ...]], dsn: str
) -> None:
    held, free, gone = (
        row[0]
        for row in conn.execute(
            "INSERT INTO pgjobs.runs (job, trigger, status, worker_id, started_at)"
            " SELECT 'j', 'enqueue', 'running', w, now() FROM unnest(ARRAY['w', 'w', 'v']) AS w"
            " RETURNING id"
        ).fetchall()
    )
    with psycopg.connect(dsn) as holder:
        holder.execute("SELECT 1 FROM pgjobs.runs WHERE id = ANY (%s) FOR UPDATE", ([held, gone],))
        # The run no longer this worker's is neither recorded nor said to wait: it is not ours.
        assert finish(dsn, [held, free, gone], [held, free, gone]) == ({free}, {held})
        status = "SELECT status FROM pgjobs.runs WHERE id = %s"
        assert conn.execute(status, (held,)).fetchone() == ("running",)
        assert conn.execute(status, (free,)).fetchone() == ("succeeded",)
    assert finish(dsn, [held], [held]) == ({held}, set())
    assert conn.execute(status, (held,)).fetchone() == ("succeeded",)


def test_an_outcome_that_may_not_wait_is_recorded_once_the_row_is_let_go(
    conn: psycopg.Connection[tuple[object, ...]], dsn: str
) -> None:
    (held,) = conn.execute(
        "INSERT INTO pgjobs.runs (job, trigger, status, worker_id, started_at)"
        " VALUES ('j', 'enqueue', 'running', 'w', now()) RETURNING id"
    ).fetchone() or (0,)
    with psycopg.connect(dsn) as holder:
        holder.execute("SELECT 1 FROM pgjobs.runs WHERE id = %s FOR UPDATE", (held,))
        recording = asyncio.run(_finish_in_background(dsn, held, holder))
    assert recording == ({held}, set())
    assert conn.execute("SELECT status FROM pgjobs.runs WHERE id = %s", (held,)).fetchone() == (
        "succeeded",
    )


async def _finish_in_background(
    dsn: str, run_id: int, holder: psycopg.Connection[tuple[object, ...]]
) -> tuple[set[int], set[int]]:
    """Record ``run_id`` (not deferrable) while ``holder`` holds its row: the statement waits
    on the row's lock (seen in pg_locks) until the holder commits, then records it."""
    task = asyncio.get_running_loop().run_in_executor(None, finish, dsn, [run_id], [])
    waited = False
    # Looked at from a connection of its own: a transaction reads pg_stat_activity only once.
    with psycopg.connect(dsn, autocommit=True) as watcher:
        for _ in range(200):
            row = watcher.execute(
                "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
                " WHERE NOT l.granted AND a.datname = current_database() AND a.query LIKE %s",
                ("-- One statement, one commit per loop iteration%",),
            ).fetchone()
            if row and row[0]:
                waited = True
                break
            await asyncio.sleep(0.02)
    assert waited, "the statement did not wait for the row"
    holder.commit()
    return await task


def test_a_heartbeat_does_not_wait_for_a_held_row_and_still_owns_its_run(
    conn: psycopg.Connection[tuple[object, ...]], dsn: str
) -> None:
    held, free = (
        row[0]
        for row in conn.execute(
            "INSERT INTO pgjobs.runs (job, trigger, status, worker_id, started_at,"
            " lease_expires_at) SELECT 'j', 'enqueue', 'running', 'w', now(), now()"
            " FROM generate_series(1, 2) RETURNING id"
        ).fetchall()
    )

    async def heartbeat(store: WorkerStore) -> frozenset[int]:
        beat = await store.heartbeat(held=[held, free], since=None, ttl=30, lease=30)
        return beat.owned

    def beat() -> frozenset[int]:
        return as_worker(dsn, heartbeat)

    lease = "SELECT lease_expires_at > now() + interval '20 s' FROM pgjobs.runs WHERE id = %s"
    with psycopg.connect(dsn) as holder:
        holder.execute("SELECT 1 FROM pgjobs.runs WHERE id = %s FOR UPDATE", (held,))
        assert beat() == {held, free}
        assert conn.execute(lease, (free,)).fetchone() == (True,)
        assert conn.execute(lease, (held,)).fetchone() == (False,)
    assert beat() == {held, free}
    assert conn.execute(lease, (held,)).fetchone() == (True,)


def wakeup_in(dsn: str) -> float | None:
    """Seconds until worker ``w`` should look again, from a claim statement that claims nothing."""

    async def go(store: WorkerStore) -> float | None:
        batch = await store.finish_and_claim_runs([], queues=["default"], limit=0, lease=0)
        return batch.wakeup_in

    return as_worker(dsn, go)


def test_a_new_schedule_is_due_at_once_and_a_paused_jobs_schedule_wakes_nobody(
    conn: psycopg.Connection[tuple[object, ...]], dsn: str
) -> None:
    conn.execute("INSERT INTO pgjobs.jobs (name, extension) VALUES ('t', 'x')")
    add_worker(conn, "w", ["t"])
    assert wakeup_in(dsn) is None
    # No worker has worked out its first tick yet: the tick is what does, at once.
    conn.execute("SELECT pgjobs.schedule('t', '0 3 * * *', name => 'nightly')")
    assert conn.execute("SELECT next_fire_at FROM pgjobs.schedules").fetchone() == (None,)
    due = wakeup_in(dsn)
    assert due is not None and due <= 0
    # Worked out and overdue, its job paused: no tick would be made, so no look is called for
    # (else a worker would look again and again).
    conn.execute("UPDATE pgjobs.schedules SET next_fire_at = now() - interval '1 minute'")
    conn.execute("UPDATE pgjobs.jobs SET paused = true WHERE name = 't'")
    assert wakeup_in(dsn) is None
    conn.execute("UPDATE pgjobs.jobs SET paused = false WHERE name = 't'")
    due = wakeup_in(dsn)
    assert due is not None and due <= 0


def test_every_named_query_renders_for_another_schema() -> None:
    # Queries are rendered when first asked for: render each here, so that a placeholder typo in
    # any .sql file fails a test rather than the first worker or command to use that query.
    queries = Queries("tenant_jobs")
    for name in _load_query_texts():
        assert "{schema}" not in queries[name], name
    assert '"tenant_jobs".runs' in queries["finish_and_claim_runs"]
    assert "finish_and_claim_runs" in queries and "no_such_query" not in queries
    with pytest.raises(PgJobsError, match="no query named 'no_such_query'"):
        queries["no_such_query"]
