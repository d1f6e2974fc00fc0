"""Workflows in the database: runs that wait for other runs (``after``, ``after_any``).

A graph is inserted at once by the enqueue API, its runs ``blocked`` behind their dependencies;
the worker's real finish statement, the reaper, the sweep and the operator's cancel release or
cancel the runs that wait, exactly once whatever the number of connections ending dependencies
at the same instant; refused graphs insert nothing and leave the caller's transaction usable.
(Real worker processes running a graph: tests/test_workflow_runs.py.)
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner
from psycopg.types.json import Jsonb

import pgjobs
from benchmarks import history
from pgjobs import EnqueueRequest, UnknownRunError, WorkflowError
from pgjobs.cli import main
from pgjobs.named_queries import Queries
from pgjobs.store import WorkerStore
from tests.cli import add_worker

Conn = psycopg.Connection[tuple[Any, ...]]
Q = Queries()
JOB = "wf-step"
RETRIED = "wf-retried"


@pytest.fixture
def jobs(conn: Conn) -> None:
    """Two jobs registered for the benchmark worker (as a worker's code would leave them):
    one attempt, and two attempts."""
    history.add_jobs(conn, [JOB, RETRIED], None)
    conn.execute("UPDATE pgjobs.jobs SET max_attempts = 2 WHERE name = %s", [RETRIED])


def enqueue(conn: Conn, *requests: EnqueueRequest | Mapping[str, Any]) -> list[int]:
    return pgjobs.enqueue_many_sync(conn, requests)


def state(conn: Conn, *ids: int) -> list[tuple[str, int | None]]:
    """(status, blocked_by) of each run of ``ids``."""
    found = dict(
        (row[0], (row[1], row[2]))
        for row in conn.execute(
            "SELECT id, status, blocked_by FROM pgjobs.runs WHERE id = ANY (%s)", [list(ids)]
        )
    )
    return [found[i] for i in ids]


def edges(conn: Conn) -> list[tuple[int, int, bool]]:
    return conn.execute(
        "SELECT run_id, depends_on, any_outcome FROM pgjobs.run_dependencies ORDER BY 1, 2"
    ).fetchall()


def run_count(conn: Conn) -> int:
    row = conn.execute("SELECT count(*) FROM pgjobs.runs").fetchone()
    assert row is not None
    return int(row[0])


def finish_statement(conn: Conn, outcomes: Sequence[Mapping[str, Any]], limit: int = 0) -> Any:
    """The worker's finish-and-claim statement, as the benchmark worker: its rows."""
    query = Q["finish_and_claim_runs"]
    values = {
        "worker": history.WORKER,
        "queues": ["default"],
        "limit": limit,
        "lease": history.LEASE,
        "listening": False,
        "defer": [],
        "outcomes": Jsonb([{"duration": 0.01, **o} for o in outcomes]),
        "ticks": [],
    }
    return conn.execute(query, history.worker_params(query, values)).fetchall()


def claim(conn: Conn, limit: int = 10) -> list[int]:
    """Runs the benchmark worker claims now: their ids."""
    return sorted(row[1] for row in finish_statement(conn, [], limit) if row[0] == "started")


def finish(conn: Conn, run_id: int, status: str = "succeeded", **outcome: Any) -> None:
    rows = finish_statement(conn, [{"run_id": run_id, "status": status, **outcome}])
    assert ("finished", run_id) in [(row[0], row[1]) for row in rows]


def run_to_end(conn: Conn, run_id: int, status: str = "succeeded", **outcome: Any) -> None:
    """Claim ``run_id`` with the real claim (unless claimed already) and record its end."""
    if state(conn, run_id) != [("running", None)]:
        assert run_id in claim(conn)
    finish(conn, run_id, status, **outcome)


# -- enqueueing a graph -------------------------------------------------------------------------


@pytest.mark.usefixtures("jobs")
def test_a_graph_is_inserted_at_once_with_its_runs_blocked_behind_their_dependencies(
    dsn: str,
) -> None:
    with psycopg.connect(dsn) as conn:
        ids = enqueue(
            conn,
            EnqueueRequest(JOB, {"n": 1}, key="resize-1"),
            EnqueueRequest(JOB, {"n": 2}, key="resize-2"),
            {"job": JOB, "key": "album", "after": ["resize-1", "resize-2"]},
            EnqueueRequest(JOB, key="mail", after_any=["album"]),
        )
        # Nothing is visible before the caller commits.
        with psycopg.connect(dsn) as other:
            assert run_count(other) == 0
        conn.commit()
        a, b, album, mail = ids
        assert ids == sorted(ids)
        assert state(conn, *ids) == [
            ("queued", None),
            ("queued", None),
            ("blocked", 2),
            ("blocked", 1),
        ]
        assert edges(conn) == [(album, a, False), (album, b, False), (mail, album, True)]
        waits = conn.execute(
            "SELECT id, waiting_for, detail FROM pgjobs.run_waits ORDER BY id"
        ).fetchall()
    assert waits[2:] == [
        (album, "dependencies", f"runs {a} ({JOB}) queued, {b} ({JOB}) queued"),
        (mail, "dependencies", f"runs {album} ({JOB}) blocked"),
    ]
    assert [w[1] for w in waits[:2]] == ["worker", "worker"]


@pytest.mark.usefixtures("jobs")
def test_a_run_after_existing_runs_counts_only_those_not_yet_satisfied(conn: Conn) -> None:
    done, failed, pending = enqueue(conn, {"job": JOB}, {"job": JOB}, {"job": JOB})
    run_to_end(conn, done)
    run_to_end(conn, failed, "failed", error_type="RuntimeError", error_message="boom")

    waits = pgjobs.enqueue_sync(conn, JOB, after=[done, pending])
    ready = pgjobs.enqueue_sync(conn, JOB, after=[done], after_any=[failed])
    doomed = pgjobs.enqueue_sync(conn, JOB, after=[failed, pending])

    assert state(conn, waits, ready, doomed) == [("blocked", 1), ("queued", 0), ("cancelled", 2)]
    row = conn.execute(
        "SELECT error_type, error_message, message, finished_at IS NOT NULL"
        " FROM pgjobs.runs WHERE id = %s",
        [doomed],
    ).fetchone()
    assert row == (
        "DependencyFailed",
        f"dependency run {failed} ({JOB}) ended failed",
        "cancelled: a dependency failed",
        True,
    )
    assert ready in claim(conn)


@pytest.mark.usefixtures("jobs")
def test_an_id_whose_run_was_retried_stands_for_its_latest_attempt(conn: Conn) -> None:
    (first,) = enqueue(conn, {"job": RETRIED})
    assert first in claim(conn)
    rows = finish_statement(conn, [{"run_id": first, "status": "failed", "retry_delay": 0}])
    (retry,) = [row[1] for row in rows if row[0] == "retried"]

    dependant = pgjobs.enqueue_sync(conn, JOB, after=[first, retry])

    assert edges(conn) == [(dependant, retry, False)]
    assert state(conn, dependant) == [("blocked", 1)]


@pytest.mark.usefixtures("jobs")
def test_in_graph_dependants_of_a_run_inserted_cancelled_are_cancelled_or_released(
    conn: Conn,
) -> None:
    (failed,) = enqueue(conn, {"job": JOB})
    run_to_end(conn, failed, "failed")

    doomed, after_doomed, any_doomed = enqueue(
        conn,
        {"job": JOB, "key": "doomed", "after": [failed]},
        {"job": JOB, "after": ["doomed"]},
        {"job": JOB, "after_any": ["doomed"]},
    )

    assert state(conn, doomed, after_doomed, any_doomed) == [
        ("cancelled", 1),
        ("cancelled", 1),
        ("queued", 0),
    ]


REFUSED: list[tuple[str, list[dict[str, Any]], str]] = [
    (
        "cycle",
        [
            {"job": JOB, "key": "a", "after": ["c"]},
            {"job": JOB, "key": "b", "after": ["a"]},
            {"job": JOB, "key": "c", "after": ["b"]},
        ],
        "enqueue_many: a cycle: 'a' -> 'c' -> 'b' -> 'a'",
    ),
    (
        "dangling key",
        [{"job": JOB, "key": "a"}, {"job": JOB, "after": ["a", "resize-9"]}],
        "enqueue_many: request 1 depends on key 'resize-9', which no request has",
    ),
    (
        "duplicate key",
        [{"job": JOB, "key": "a"}, {"job": JOB, "key": "a"}],
        "enqueue_many: key 'a' is given by requests 0 and 1",
    ),
    (
        "self reference",
        [{"job": JOB, "key": "a", "after_any": ["a"]}],
        "enqueue_many: request 0 depends on itself (key 'a')",
    ),
    (
        "dedup_key",
        [{"job": JOB, "key": "a"}, {"job": JOB, "after": ["a"], "dedup_key": "once"}],
        "enqueue_many: request 1: a dedup_key cannot be used in a call with dependencies",
    ),
    (
        "not a list",
        [{"job": JOB, "key": "a"}, {"job": JOB, "after": "a"}],
        "enqueue_many: request 1: after must be a list of run ids or keys, got 'a'",
    ),
    (
        "not an id",
        [{"job": JOB, "after": [1.5]}],
        "enqueue_many: request 0: after holds 1.5: a run id",
    ),
]


@pytest.mark.usefixtures("jobs")
@pytest.mark.parametrize(
    ("requests", "message"), [r[1:] for r in REFUSED], ids=[r[0] for r in REFUSED]
)
def test_a_graph_that_cannot_run_is_refused_before_any_statement(
    dsn: str, requests: list[dict[str, Any]], message: str
) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute("SELECT 1")  # the caller's transaction is open
        with pytest.raises(WorkflowError) as refused:
            enqueue(conn, *requests)
        assert str(refused.value).startswith(message)
        assert "\n" not in str(refused.value)
        assert isinstance(refused.value, pgjobs.ConfigError)
        # Usable, and nothing was inserted.
        assert run_count(conn) == 0
        conn.commit()


@pytest.mark.usefixtures("jobs")
def test_an_unknown_run_id_is_refused_without_aborting_the_transaction(dsn: str) -> None:
    with psycopg.connect(dsn) as conn:
        (kept,) = enqueue(conn, {"job": JOB})
        with pytest.raises(UnknownRunError, match=r"^cannot enqueue after run 999999: no run"):
            enqueue(conn, {"job": JOB, "key": "a"}, {"job": JOB, "after": ["a", 999999]})
        with pytest.raises(UnknownRunError, match="999998"):
            pgjobs.enqueue_sync(conn, JOB, after_any=[999998])
        assert conn.execute("SELECT array_agg(id) FROM pgjobs.runs").fetchone() == ([kept],)
        conn.commit()
    with psycopg.connect(dsn) as conn:
        assert run_count(conn) == 1
        assert edges(conn) == []


@pytest.mark.usefixtures("jobs")
def test_a_key_names_a_request_of_enqueue_many_only(conn: Conn) -> None:
    with pytest.raises(WorkflowError, match="keys name requests of one enqueue_many call"):
        pgjobs.enqueue_sync(conn, JOB, after=["a"])  # type: ignore[list-item]
    assert run_count(conn) == 0


@pytest.mark.usefixtures("jobs")
def test_the_async_api_and_sqlalchemy_insert_graphs_too(dsn: str) -> None:
    from sqlalchemy import create_engine

    async def scenario() -> list[int]:
        async with await psycopg.AsyncConnection.connect(dsn) as conn:
            first = await pgjobs.enqueue(conn, JOB)
            ids = await pgjobs.enqueue_many(
                conn, [{"job": JOB, "key": "x", "after": [first]}, {"job": JOB, "after": ["x"]}]
            )
            await conn.commit()
            return [first, *ids]

    first, x, y = asyncio.run(scenario())
    engine = create_engine("postgresql+psycopg://", creator=lambda: psycopg.connect(dsn))
    with engine.connect() as sa:
        z = pgjobs.enqueue_sync(sa, JOB, after=[y])
        sa.commit()
    engine.dispose()
    with psycopg.connect(dsn) as conn:
        assert state(conn, first, x, y, z) == [
            ("queued", None),
            ("blocked", 1),
            ("blocked", 1),
            ("blocked", 1),
        ]
        assert edges(conn) == [(x, first, False), (y, x, False), (z, y, False)]


# -- releasing ----------------------------------------------------------------------------------


@pytest.mark.usefixtures("jobs")
def test_the_end_of_a_dependency_releases_its_dependant_which_is_then_claimed(
    conn: Conn,
) -> None:
    a, b, c = enqueue(
        conn,
        {"job": JOB, "key": "a"},
        {"job": JOB, "key": "b", "after": ["a"]},
        {"job": JOB, "after": ["a", "b"]},
    )
    assert claim(conn) == [a]  # the blocked runs are not claimed

    finish(conn, a)

    assert state(conn, b, c) == [("queued", 0), ("blocked", 1)]
    assert claim(conn) == [b]
    finish(conn, b)
    assert claim(conn) == [c]


@pytest.mark.usefixtures("jobs")
def test_the_claim_says_which_runs_have_dependencies(dsn: str, conn: Conn) -> None:
    a, b = enqueue(conn, {"job": JOB, "key": "a"}, {"job": JOB, "after": ["a"]})

    async def claim_and_finish() -> list[tuple[int, bool]]:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as aconn:
            store = WorkerStore(aconn, Q, history.WORKER)
            first = await store.finish_and_claim_runs([], queues=["default"], limit=5, lease=30)
            ok, _ = await store.finish_run_if_running(pgjobs.store.Outcome(a, "succeeded", 0.01))
            assert ok
            second = await store.finish_and_claim_runs([], queues=["default"], limit=5, lease=30)
            return [(r.id, r.has_dependencies) for r in [*first.started, *second.started]]

    assert asyncio.run(claim_and_finish()) == [(a, False), (b, True)]


@pytest.mark.usefixtures("jobs")
def test_the_finish_statement_reads_the_edges_by_index_only(conn: Conn) -> None:
    """What ending runs costs for workflows: a probe of run_dependencies' index per ended run,
    and one per statement, whatever the number of edges (20,000 here)."""
    conn.execute(
        "INSERT INTO pgjobs.runs (job, trigger, status) SELECT %s, 'enqueue', 'succeeded'"
        " FROM generate_series(1, 20000)",
        [JOB],
    )
    conn.execute(
        "INSERT INTO pgjobs.run_dependencies (run_id, depends_on)"
        " SELECT id, id - 1 FROM pgjobs.runs WHERE id > 1"
    )
    conn.execute("ANALYZE pgjobs.runs")
    conn.execute("ANALYZE pgjobs.run_dependencies")
    query = Q["finish_and_claim_runs"]
    params = history.claim_params(query, [JOB], finished=[5, 6])
    for generic in (False, True):
        plan = history.explain(conn, query, params, generic=generic)
        reads = [
            node["Node Type"]
            for node in history.plan_nodes(plan)
            if node.get("Relation Name") == "run_dependencies"
        ]
        assert reads, plan
        assert set(reads) <= {"ModifyTable", "Index Scan", "Index Only Scan"}, (generic, reads)


@pytest.mark.usefixtures("jobs")
def test_a_release_wakes_idle_workers_and_the_finishing_worker_claims_again_at_once(
    dsn: str, conn: Conn
) -> None:
    # Busy workers are not sent a NOTIFY (it would serialise the commit with every other): the
    # finishing worker's next claim is at once (its wakeup is now) and a busy worker claims
    # again when it records its next end. A worker that waits idle is woken.
    a, b = enqueue(conn, {"job": JOB, "key": "a"}, {"job": JOB, "after": ["a"]})
    c, d = enqueue(conn, {"job": JOB, "key": "c"}, {"job": JOB, "after": ["c"]})
    assert claim(conn, 2) == [a, c]
    with psycopg.connect(dsn, autocommit=True) as listener:
        listener.execute("LISTEN pgjobs")
        rows = finish_statement(conn, [{"run_id": a, "status": "succeeded"}])
        wakeup = [row[11] for row in rows if row[0] == "wakeup"]
        assert wakeup and wakeup[0] is not None and wakeup[0] <= 0.5
        assert list(listener.notifies(timeout=0.5, stop_after=1)) == []

        add_worker(conn, "w-idle", [JOB])
        conn.execute("UPDATE pgjobs.workers SET waiting = 4 WHERE id = 'w-idle'")
        finish_statement(conn, [{"run_id": c, "status": "succeeded"}])
        notices = [n.payload for n in listener.notifies(timeout=2, stop_after=1)]
    assert notices == ["run"]
    assert claim(conn, 2) == [b, d]


@pytest.mark.usefixtures("jobs")
def test_two_dependencies_ended_at_the_same_instant_release_their_dependant_once(
    dsn: str, conn: Conn
) -> None:
    rounds = 15
    graphs = [
        enqueue(
            conn,
            {"job": JOB, "key": "x"},
            {"job": JOB, "key": "y"},
            {"job": JOB, "after": ["x", "y"]},
        )
        for _ in range(rounds)
    ]
    claimed = claim(conn, 2 * rounds)
    assert claimed == sorted(i for x, y, _ in graphs for i in (x, y))

    def end(run_id: int, barrier: threading.Barrier) -> None:
        with psycopg.connect(dsn, autocommit=True) as own:
            own.execute("SELECT 1")
            barrier.wait(timeout=10)
            finish(own, run_id)

    with ThreadPoolExecutor(2) as pool:
        for x, y, _ in graphs:
            barrier = threading.Barrier(2)
            list(pool.map(end, [x, y], [barrier, barrier]))

    dependants = [z for _, _, z in graphs]
    assert state(conn, *dependants) == [("queued", 0)] * rounds
    assert claim(conn, 2 * rounds) == dependants


@pytest.mark.usefixtures("jobs")
def test_a_failure_cancels_exactly_its_transitive_dependants_while_after_any_ones_run(
    conn: Conn,
) -> None:
    ids = enqueue(
        conn,
        {"job": JOB, "key": "fails"},
        {"job": JOB, "key": "ok"},
        {"job": JOB, "key": "child", "after": ["fails"]},
        {"job": JOB, "key": "grandchild", "after": ["child", "ok"]},
        {"job": JOB, "key": "cleanup", "after_any": ["fails"]},
        {"job": JOB, "key": "report", "after_any": ["grandchild"]},
        {"job": JOB, "key": "unrelated", "after": ["ok"]},
    )
    fails, ok, child, grandchild, cleanup, report, unrelated = ids
    assert claim(conn) == [fails, ok]

    finish(conn, fails, "failed", error_type="RuntimeError", error_message="boom")

    assert state(conn, *ids) == [
        ("failed", None),
        ("running", None),
        ("cancelled", 1),
        ("cancelled", 2),
        ("queued", 0),
        ("queued", 0),
        ("blocked", 1),
    ]
    messages = conn.execute(
        "SELECT error_type, error_message, message FROM pgjobs.runs WHERE id = ANY (%s)"
        " ORDER BY id",
        [[child, grandchild]],
    ).fetchall()
    assert messages == [
        (
            "DependencyFailed",
            f"dependency run {fails} ({JOB}) ended failed",
            "cancelled: a dependency failed",
        ),
        (
            "DependencyFailed",
            f"dependency run {child} ({JOB}) ended cancelled",
            "cancelled: a dependency failed",
        ),
    ]
    finish(conn, ok)
    assert state(conn, unrelated) == [("queued", 0)]
    assert claim(conn) == [cleanup, report, unrelated]


@pytest.mark.usefixtures("jobs")
def test_a_retry_takes_the_edges_and_the_dependant_waits_for_the_last_attempt(
    conn: Conn,
) -> None:
    flaky, after, any_ = enqueue(
        conn,
        {"job": RETRIED, "key": "flaky"},
        {"job": JOB, "after": ["flaky"]},
        {"job": JOB, "after_any": ["flaky"]},
    )
    assert claim(conn) == [flaky]

    rows = finish_statement(conn, [{"run_id": flaky, "status": "failed", "retry_delay": 0}])

    (retry,) = [row[1] for row in rows if row[0] == "retried"]
    assert edges(conn) == [(after, retry, False), (any_, retry, True)]
    assert state(conn, after, any_) == [("blocked", 1), ("blocked", 1)]
    assert claim(conn) == [retry]
    finish(conn, retry, "failed", retry_delay=0)  # the last attempt: no retry follows
    assert state(conn, after, any_) == [("cancelled", 1), ("queued", 0)]
    assert conn.execute(
        "SELECT error_message FROM pgjobs.runs WHERE id = %s", [after]
    ).fetchone() == (f"dependency run {retry} ({RETRIED}) ended failed",)


@pytest.mark.usefixtures("jobs")
def test_a_skipped_tick_releases_the_runs_that_run_after_any_outcome(conn: Conn) -> None:
    conn.execute("UPDATE pgjobs.jobs SET overlap = 'skip' WHERE name = %s", [JOB])
    holder = conn.execute(
        "INSERT INTO pgjobs.runs (job, trigger, status, worker_id, started_at)"
        " VALUES (%s, 'enqueue', 'running', 'w-other', now()) RETURNING id",
        [JOB],
    ).fetchone()
    assert holder is not None
    conn.execute(
        "INSERT INTO pgjobs.run_locks (job, run_id, worker_id, lease_expires_at)"
        " VALUES (%s, %s, 'w-other', now() + interval '1 minute')",
        [JOB, holder[0]],
    )
    tick = conn.execute(
        "INSERT INTO pgjobs.runs (job, trigger) VALUES (%s, 'schedule') RETURNING id", [JOB]
    ).fetchone()
    assert tick is not None
    after, any_ = enqueue(
        conn, {"job": RETRIED, "after": [tick[0]]}, {"job": RETRIED, "after_any": [tick[0]]}
    )

    claim(conn)

    assert state(conn, tick[0], after, any_) == [
        ("skipped", None),
        ("cancelled", 1),
        ("queued", 0),
    ]


# -- reaping and the safety net -----------------------------------------------------------------


def reap(dsn: str) -> pgjobs.store.Reaped:
    async def go() -> pgjobs.store.Reaped:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            return await WorkerStore(conn, Q, "w-reaper").reap_expired_leases()

    return asyncio.run(go())


def settle(dsn: str, after_id: int = 0, batch: int = 1000) -> pgjobs.store.Settled:
    async def go() -> pgjobs.store.Settled:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            store = WorkerStore(conn, Q, "w-reaper")
            return await store.settle_blocked(after_id=after_id, batch=batch)

    return asyncio.run(go())


def expire(conn: Conn, *ids: int) -> None:
    conn.execute(
        "UPDATE pgjobs.runs SET lease_expires_at = now() - interval '1 minute',"
        " heartbeat_at = now() - interval '2 minutes' WHERE id = ANY (%s)",
        [list(ids)],
    )


@pytest.mark.usefixtures("jobs")
def test_a_run_reaped_for_good_releases_or_cancels_and_a_retried_one_moves_its_edges(
    dsn: str, conn: Conn
) -> None:
    lost, flaky, after_lost, any_lost, after_flaky = enqueue(
        conn,
        {"job": JOB, "key": "lost"},
        {"job": RETRIED, "key": "flaky"},
        {"job": JOB, "after": ["lost"]},
        {"job": JOB, "after_any": ["lost"]},
        {"job": JOB, "after": ["flaky"]},
    )
    assert claim(conn) == [lost, flaky]
    expire(conn, lost, flaky)

    reaped = reap(dsn)

    assert (reaped.reaped, reaped.retried, reaped.released) == (2, 1, 1)
    assert state(conn, after_lost, any_lost, after_flaky) == [
        ("cancelled", 1),
        ("queued", 0),
        ("blocked", 1),
    ]
    (retry,) = conn.execute("SELECT id FROM pgjobs.runs WHERE retry_of = %s", [flaky]).fetchone()
    assert [e for e in edges(conn) if e[0] == after_flaky] == [(after_flaky, retry, False)]
    assert conn.execute(
        "SELECT error_message FROM pgjobs.runs WHERE id = %s", [after_lost]
    ).fetchone() == (f"dependency run {lost} ({JOB}) ended abandoned",)


@pytest.mark.usefixtures("jobs")
def test_the_sweep_settles_blocked_runs_whose_release_was_missed(dsn: str, conn: Conn) -> None:
    def ended(status: str) -> int:
        row = conn.execute(
            "INSERT INTO pgjobs.runs (job, trigger, status, finished_at)"
            " VALUES (%s, 'enqueue', %s, now() - interval '1 minute') RETURNING id",
            [JOB, status],
        ).fetchone()
        assert row is not None
        return int(row[0])

    def blocked(count: int, *deps: tuple[int, bool]) -> int:
        row = conn.execute(
            "INSERT INTO pgjobs.runs (job, trigger, status, blocked_by)"
            " VALUES (%s, 'enqueue', 'blocked', %s) RETURNING id",
            [JOB, count],
        ).fetchone()
        assert row is not None
        for dep, any_outcome in deps:
            conn.execute(
                "INSERT INTO pgjobs.run_dependencies VALUES (%s, %s, %s)",
                [row[0], dep, any_outcome],
            )
        return int(row[0])

    succeeded, failed = ended("succeeded"), ended("failed")
    (pending,) = enqueue(conn, {"job": JOB})
    missed = blocked(1, (succeeded, False))  # its release was missed
    doomed = blocked(2, (failed, False), (pending, False))
    after_doomed = blocked(1, (doomed, False))
    any_failed = blocked(1, (failed, True))
    waiting = blocked(2, (succeeded, False), (pending, False))
    fresh = ended("succeeded")
    conn.execute("UPDATE pgjobs.runs SET finished_at = now() WHERE id = %s", [fresh])
    too_fresh = blocked(1, (fresh, False))  # its own release may still be under way

    assert conn.execute(
        "SELECT waiting_for, detail FROM pgjobs.run_waits WHERE id = %s", [missed]
    ).fetchone() == ("dependencies", "its dependencies have ended: settled by the next sweep")
    # A sweep reads at most `batch` blocked runs, and the next goes on after them: missed,
    # doomed and after_doomed (cancelled in turn with doomed), then the three others.
    first = settle(dsn, batch=3)
    assert (first.settled, first.last_id) == (2, after_doomed)
    second = settle(dsn, after_id=first.last_id, batch=3)
    assert (second.settled, second.last_id) == (1, too_fresh)
    third = settle(dsn, after_id=second.last_id, batch=3)
    assert (third.settled, third.last_id) == (0, 0)  # the end of the list: start over

    assert state(conn, missed, doomed, after_doomed, any_failed, waiting, too_fresh) == [
        ("queued", 0),
        ("cancelled", 2),
        ("cancelled", 1),
        ("queued", 0),
        ("blocked", 2),
        ("blocked", 1),
    ]
    assert conn.execute(
        "SELECT error_message FROM pgjobs.runs WHERE id = %s", [doomed]
    ).fetchone() == (f"dependency run {failed} ({JOB}) ended failed",)
    assert settle(dsn).settled == 0


@pytest.mark.usefixtures("jobs")
def test_an_enqueue_that_commits_after_its_dependency_ended_is_settled_by_the_sweep(
    dsn: str, conn: Conn
) -> None:
    """The race the sweep exists for, played for real: the enqueue's statement sees its
    dependency running, the finish statement does not see the enqueue's uncommitted edge."""
    (first,) = enqueue(conn, {"job": RETRIED})
    (dep,) = enqueue(conn, {"job": JOB})
    assert claim(conn) == [first, dep]
    with psycopg.connect(dsn) as late:
        dependant = pgjobs.enqueue_sync(late, JOB, after=[dep, first])
        finish(conn, dep)
        rows = finish_statement(conn, [{"run_id": first, "status": "failed", "retry_delay": 0}])
        late.commit()
    (retry,) = [row[1] for row in rows if row[0] == "retried"]
    assert state(conn, dependant) == [("blocked", 2)]
    assert edges(conn) == [(dependant, first, False), (dependant, dep, False)]
    conn.execute("UPDATE pgjobs.runs SET finished_at = finished_at - interval '1 minute'")

    assert settle(dsn).settled == 0  # its retry is still to run: the edge moves to it
    assert sorted(edges(conn)) == [(dependant, dep, False), (dependant, retry, False)]
    assert claim(conn) == [retry]
    finish(conn, retry)  # sees the moved edge: counts the dependant down
    assert state(conn, dependant) == [("blocked", 1)]
    conn.execute("UPDATE pgjobs.runs SET finished_at = finished_at - interval '1 minute'")
    assert settle(dsn).settled == 1
    assert state(conn, dependant) == [("queued", 0)]


# -- the operator -------------------------------------------------------------------------------


@pytest.mark.usefixtures("jobs")
def test_cancelling_a_blocked_run_from_the_cli_cancels_its_dependants_transitively(
    dsn: str, conn: Conn
) -> None:
    root, middle, leaf, cleanup = enqueue(
        conn,
        {"job": JOB, "key": "root"},
        {"job": JOB, "key": "middle", "after": ["root"]},
        {"job": JOB, "after": ["middle"]},
        {"job": JOB, "after_any": ["middle"]},
    )

    result = CliRunner().invoke(main, ["runs", "cancel", str(middle), "--dsn", dsn])

    assert result.exit_code == 0, result.output
    assert state(conn, root, middle, leaf, cleanup) == [
        ("queued", None),
        ("cancelled", 1),
        ("cancelled", 1),
        ("queued", 0),
    ]
    assert conn.execute(
        "SELECT error_message FROM pgjobs.runs WHERE id = %s", [leaf]
    ).fetchone() == (f"dependency run {middle} ({JOB}) ended cancelled",)


@pytest.mark.usefixtures("jobs")
def test_cancelling_a_queued_run_from_the_dashboard_cancels_its_dependants(conn: Conn) -> None:
    root, child = enqueue(conn, {"job": JOB, "key": "root"}, {"job": JOB, "after": ["root"]})

    row = conn.execute(Q["dashboard_cancel_run"], {"id": root}).fetchone()

    assert row is not None and row[0] == "cancelled"
    assert state(conn, root, child) == [("cancelled", None), ("cancelled", 1)]
