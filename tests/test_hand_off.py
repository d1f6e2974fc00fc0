"""The hand-off of workflows, in SQL: the worker's statement that records a run's success starts
the runs that waited for it at once, on that worker, when the worker may take them; otherwise
they are queued for any worker, as before. Asserted on what the statement returns and on the rows.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest

from benchmarks import history
from pgjobs import EnqueueRequest, enqueue_many_sync

Conn = psycopg.Connection[tuple[Any, ...]]

JOB = "h.step"


@pytest.fixture
def chain(conn: Conn) -> tuple[int, int]:
    """(first, second): ``second`` waits for ``first``, which runs on the benchmark worker."""
    history.add_jobs(conn, [JOB, "h.other"], None)
    first, second = enqueue_many_sync(
        conn, [EnqueueRequest(JOB, key="first"), EnqueueRequest(JOB, key="second", after=["first"])]
    )
    assert [run for run, _ in statement(conn, 1)] == [first]
    return first, second


def statement(conn: Conn, limit: int, finished: tuple[int, ...] = ()) -> list[tuple[int, Any]]:
    """The worker's statement, recording ``finished`` as succeeded and claiming up to ``limit``
    runs: (id, dependencies) of the runs it started."""
    _, query = history.claim_query(history.queries())
    params = history.claim_params(query, [], limit, finished)
    rows = conn.execute(query, params).fetchall()
    return [(row[1], row[15]) for row in rows if row[0] == "started"]


def state(conn: Conn, run: int) -> tuple[Any, ...]:
    row = conn.execute(
        "SELECT status, worker_id, lease_expires_at IS NOT NULL FROM pgjobs.runs WHERE id = %s",
        [run],
    ).fetchone()
    assert row is not None
    return tuple(row)


def test_a_run_whose_dependency_succeeded_starts_in_the_statement_that_recorded_it(
    conn: Conn, chain: tuple[int, int]
) -> None:
    first, second = chain
    queued_before = conn.execute(
        "INSERT INTO pgjobs.runs (job, trigger) VALUES ('h.other', 'enqueue') RETURNING id"
    ).fetchone()
    assert queued_before is not None

    started = statement(conn, 1, finished=(first,))

    # The dependant, not the run queued before it: the room was one run.
    assert [run for run, _ in started] == [second]
    assert started[0][1] == [[first, JOB, "succeeded", None, None]]  # ctx.dependencies
    assert state(conn, second) == ("running", history.WORKER, True)
    assert state(conn, queued_before[0]) == ("queued", None, False)


def test_the_rest_of_the_room_claims_from_the_queue(conn: Conn, chain: tuple[int, int]) -> None:
    first, second = chain
    other = conn.execute(
        "INSERT INTO pgjobs.runs (job, trigger) VALUES ('h.other', 'enqueue') RETURNING id"
    ).fetchone()
    assert other is not None

    assert sorted(run for run, _ in statement(conn, 5, finished=(first,))) == [second, other[0]]


@pytest.mark.parametrize(
    "hold",
    [
        "UPDATE pgjobs.jobs SET paused = true WHERE name = 'h.step'",
        "INSERT INTO pgjobs.queues (name, paused) VALUES ('default', true)",
        "UPDATE pgjobs.jobs SET max_concurrency = 5 WHERE name = 'h.step'",
        "UPDATE pgjobs.jobs SET overlap = 'skip' WHERE name = 'h.step'",
        "DELETE FROM pgjobs.worker_jobs WHERE job = 'h.step'",
        "UPDATE pgjobs.runs SET scheduled_for = now() + interval '1 hour' WHERE status = 'blocked'",
        "INSERT INTO pgjobs.runs (job, trigger, priority) VALUES ('h.other', 'enqueue', -1)",
    ],
    ids=[
        "job paused",
        "queue paused",
        "concurrency limit",
        "overlap skip",
        "job not served",
        "not due",
        "a higher priority waits",
    ],
)
def test_a_run_the_worker_may_not_start_now_is_queued(
    conn: Conn, chain: tuple[int, int], hold: str
) -> None:
    first, second = chain
    conn.execute(hold)

    started = statement(conn, 5, finished=(first,))

    assert second not in [run for run, _ in started]
    assert state(conn, second) == ("queued", None, False)


def test_without_room_the_dependant_is_queued_for_any_worker(
    conn: Conn, chain: tuple[int, int]
) -> None:
    first, second = chain

    assert statement(conn, 0, finished=(first,)) == []
    assert state(conn, second) == ("queued", None, False)


def test_a_failed_dependency_still_cancels_its_dependants(conn: Conn) -> None:
    history.add_jobs(conn, [JOB], None)
    first, second = enqueue_many_sync(
        conn, [EnqueueRequest(JOB, key="first"), EnqueueRequest(JOB, key="second", after=["first"])]
    )
    statement(conn, 1)
    outcome = [{"run_id": first, "status": "failed", "duration": 0.001}]
    _, query = history.claim_query(history.queries())
    params = history.claim_params(query, [], 5) | {"outcomes": psycopg.types.json.Jsonb(outcome)}
    conn.execute(query, params)

    assert state(conn, second)[0] == "cancelled"


def test_hand_off_counts_down_a_run_of_two_dependencies_once_per_end(conn: Conn) -> None:
    history.add_jobs(conn, [JOB], None)
    a, b, joined = enqueue_many_sync(
        conn,
        [
            EnqueueRequest(JOB, key="a"),
            EnqueueRequest(JOB, key="b"),
            EnqueueRequest(JOB, key="joined", after=["a", "b"]),
        ],
    )
    assert sorted(run for run, _ in statement(conn, 2)) == [a, b]

    assert statement(conn, 5, finished=(a,)) == []
    assert state(conn, joined)[0] == "blocked"
    assert [run for run, _ in statement(conn, 5, finished=(b,))] == [joined]


def test_a_handed_off_run_whose_reply_was_lost_goes_back_to_the_queue(
    conn: Conn, chain: tuple[int, int]
) -> None:
    # The statement committed, its reply never reached the worker: the worker's next heartbeat
    # finds a run it does not hold, claimed since it registered, and queues it again.
    first, second = chain
    since = conn.execute("SELECT now() - interval '1 minute'").fetchone()
    assert since is not None
    statement(conn, 1, finished=(first,))
    query = history.queries()["heartbeat"]
    values = {"worker": history.WORKER, "ttl": 30.0, "lease": 30.0, "held": [], "since": since[0]}
    rows = conn.execute(query, history.worker_params(query, values)).fetchall()

    assert rows[0][-1] == 1  # handed back
    status = conn.execute("SELECT status, attempt FROM pgjobs.runs WHERE id = %s", [second])
    assert status.fetchone() == ("queued", 1)


def test_two_ends_at_the_same_instant_start_their_common_dependant_once(
    dsn: str, conn: Conn
) -> None:
    # Two workers record the two dependencies' ends at one instant, each with room: the second
    # to count the dependant down waits for the first's row lock and re-reads it. It starts the
    # dependant if its snapshot already saw it reach 0, and queues it otherwise (both snapshots
    # saw the other end still open): never twice, never lost.
    history.add_jobs(conn, [JOB], None)
    rounds = 15
    graphs = []
    for _ in range(rounds):
        graphs.append(
            enqueue_many_sync(
                conn,
                [
                    EnqueueRequest(JOB, key="x"),
                    EnqueueRequest(JOB, key="y"),
                    EnqueueRequest(JOB, key="z", after=["x", "y"]),
                ],
            )
        )
    assert sorted(run for run, _ in statement(conn, 2 * rounds)) == sorted(
        i for x, y, _ in graphs for i in (x, y)
    )

    def end(run: int, barrier: threading.Barrier) -> list[int]:
        with psycopg.connect(dsn, autocommit=True) as own:
            own.execute("SELECT 1")
            barrier.wait(timeout=10)
            return [started for started, _ in statement(own, 2, finished=(run,))]

    starts: list[int] = []
    with ThreadPoolExecutor(2) as pool:
        for x, y, _ in graphs:
            barrier = threading.Barrier(2)
            for started in pool.map(end, [x, y], [barrier, barrier]):
                starts.extend(started)

    dependants = [z for _, _, z in graphs]
    assert len(starts) == len(set(starts))  # none started twice
    queued = [z for z in dependants if state(conn, z)[0] == "queued"]
    assert sorted(starts + queued) == dependants
    for z in starts:
        assert state(conn, z) == ("running", history.WORKER, True)
    assert sorted(run for run, _ in statement(conn, rounds)) == queued  # a claim takes the rest
