"""What the worker owns is what it runs: reconciliation after a lost reply, outcomes the database
refuses, the reaper's account of an expired lease, and start-up while the database is down.

Real worker processes; the database faults run against a throwaway cluster the test owns.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from pgjobs.worker.connection import open_loop_connection
from pgjobs.worker.settings import WorkerSettings
from tests.pgcluster import PgCluster, available, pg_cluster
from tests.test_worker import enqueue_raw, run_row, wait_status
from tests.workers import Workers, rows, scalar, wait_until, worker_pool


@pytest.fixture
def workers(dsn: str, tmp_path: Path) -> Iterator[Workers]:
    with worker_pool(dsn, tmp_path) as pool:
        yield pool


def running_run(dsn: str, worker: str, *, started: str, lease: str) -> int:
    """A ``t-echo`` run the database gives to ``worker``, started and leased at the given SQL
    times, with two attempts (as a claim leaves it, whoever made the claim)."""
    return int(
        scalar(
            dsn,
            "INSERT INTO pgjobs.runs (job, trigger, status, worker_id, started_at, heartbeat_at, "
            f"lease_expires_at, max_attempts) VALUES ('t-echo', 'enqueue', 'running', %s, "
            f"{started}, {started}, {lease}, 2) RETURNING id",
            worker,
        )
    )


def test_a_run_claimed_by_a_lost_reply_goes_back_to_the_queue_and_runs(
    dsn: str, workers: Workers
) -> None:
    w = workers.start(["t-echo"], "--lease", "1.5")
    workers.wait_registered(w)
    # What a claim whose reply was lost with the connection leaves behind: a run the database
    # gives to this live worker, which never heard of it.
    run_id = running_run(dsn, "w1", started="now()", lease="now() + interval '1 hour'")
    row = wait_status(dsn, run_id, {"succeeded"}, 15)
    assert row["attempt"] == 1, "handed back without using an attempt"
    assert scalar(dsn, "SELECT count(*) FROM pgjobs.runs WHERE retry_of = %s", run_id) == 0
    assert "reply was lost" in w.log()
    assert w.stop() == 0, w.log()


def test_a_limited_run_claimed_by_a_lost_reply_gives_back_its_slot(
    dsn: str, workers: Workers
) -> None:
    # One run at a time: the lost claim took the job's only slot. Were the slot kept when the run
    # is handed back, neither run could start while the first stayed queued.
    w = workers.start(["c-one-short"], "--lease", "1.5", app="tests.worker_apps.controls:extension")
    workers.wait_registered(w)
    run_id = int(
        scalar(
            dsn,
            "INSERT INTO pgjobs.runs (job, trigger, status, worker_id, started_at, heartbeat_at, "
            "lease_expires_at, slot) VALUES ('c-one-short', 'enqueue', 'running', 'w1', now(), "
            "now(), now() + interval '1 hour', 1) RETURNING id",
        )
    )
    other = enqueue_raw(dsn, "c-one-short", None)
    for run in (run_id, other):
        assert wait_status(dsn, run, {"succeeded"}, 15)["attempt"] == 1
    assert "reply was lost" in w.log()
    # Each ran in the slot: the lost claim's run gave it back when it went back to the queue.
    assert scalar(dsn, "SELECT array_agg(slot) FROM pgjobs.runs") == [1, 1]
    assert w.stop() == 0, w.log()


def test_a_run_of_an_earlier_process_with_the_same_id_is_left_to_the_reaper(
    dsn: str, workers: Workers
) -> None:
    w = workers.start(["t-echo"], "--lease", "1.5")
    workers.wait_registered(w)
    # Claimed under the id 'w1' just before this process registered: that process died with
    # it. (Just before: the reaper counts a lease from the server's start at the earliest, and
    # the test's server may have started a moment ago.)
    run_id = running_run(
        dsn,
        "w1",
        started="(SELECT started_at FROM pgjobs.workers WHERE id = 'w1') - interval '10 ms'",
        lease="now() + interval '2 seconds'",
    )
    row = wait_status(dsn, run_id, {"abandoned"}, 15)
    assert str(row["error_message"]).startswith("lease expired at 20"), row["error_message"]
    assert "on worker w1" in str(row["error_message"])
    retry = wait_until(
        lambda: scalar(dsn, "SELECT id FROM pgjobs.runs WHERE retry_of = %s", run_id), 10, "retry"
    )
    wait_status(dsn, retry, {"succeeded"}, 15)
    assert w.stop() == 0, w.log()


def test_the_reaper_says_when_and_on_which_worker_a_lease_expired(
    dsn: str, workers: Workers
) -> None:
    victim = workers.start(["t-sleep"], "--lease", "1.5", name="victim")
    reaper = workers.start(["t-sleep"], "--lease", "1.5", name="reaper")
    workers.wait_registered(victim, reaper)
    scalar(dsn, "DELETE FROM pgjobs.worker_jobs WHERE worker_id = 'reaper' RETURNING 1")
    run_id = enqueue_raw(dsn, "t-sleep", {"seconds": 30})
    wait_until(lambda: run_row(dsn, run_id)["worker_id"] == "victim", 10, "the victim's claim")
    victim.signal(signal.SIGKILL)
    row = wait_status(dsn, run_id, {"abandoned"}, 20)
    message = str(row["error_message"])
    assert "%s" not in message
    assert message.startswith("lease expired at 20") and message.endswith("on worker victim")


def test_an_outcome_the_database_refuses_fails_its_run_alone(dsn: str, workers: Workers) -> None:
    # A rule of the database that no outcome of pgjobs' own can foresee.
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "ALTER TABLE pgjobs.runs ADD CONSTRAINT no_refused_payload "
            "CHECK (status <> 'succeeded' OR data IS NULL "
            "OR (data -> 'payload' ->> 'refuse') IS NULL)"
        )
    w = workers.start(["t-echo"], "--prefetch", "0")
    workers.wait_registered(w)
    bad = enqueue_raw(dsn, "t-echo", {"refuse": "yes"})
    good = [enqueue_raw(dsn, "t-echo", {"n": i}) for i in range(20)]
    refused = wait_status(dsn, bad, {"failed"}, 20)
    assert "refused this run's outcome" in str(refused["error_message"])
    for run_id in good:
        wait_status(dsn, run_id, {"succeeded"}, 20)
    # The worker is alive and still claiming.
    later = enqueue_raw(dsn, "t-echo", {"n": "later"})
    wait_status(dsn, later, {"succeeded"}, 10)
    assert w.stop() == 0, w.log()


def test_an_outcome_whose_row_another_transaction_holds_waits_and_the_worker_goes_on(
    dsn: str, workers: Workers
) -> None:
    # Another worker's claim holds, to its end, the row of a run this one has just started (its
    # walk of the queue fails the recheck and keeps the lock). Here a transaction of the test's
    # holds it much longer: the worker leaves that outcome for later and keeps claiming.
    w = workers.start(["t-sleep", "t-echo"], "--prefetch", "0", "--concurrency", "4")
    workers.wait_registered(w)
    held = enqueue_raw(dsn, "t-sleep", {"seconds": 0.2})
    wait_status(dsn, held, {"running"}, 10)
    with psycopg.connect(dsn) as holder:
        holder.execute("SELECT 1 FROM pgjobs.runs WHERE id = %s FOR UPDATE", (held,))
        # The run ends while its row is held (it sleeps 0.2 s), and its worker's next statements
        # must not wait for the row: the runs queued after it still go through.
        wait_until(
            lambda: scalar(
                dsn,
                "SELECT clock_timestamp() - started_at > interval '0.6 s' FROM pgjobs.runs"
                " WHERE id = %s",
                held,
            ),
            5,
            "the held run to have ended in its worker",
        )
        others = [enqueue_raw(dsn, "t-echo", {"n": i}) for i in range(10)]
        for run_id in others:
            wait_status(dsn, run_id, {"succeeded"}, 10)
        holder.rollback()
    row = wait_status(dsn, held, {"succeeded"}, 5)
    assert row["worker_id"] == "w1"
    assert "no longer ours" not in w.log()
    assert w.stop() == 0, w.log()


def test_a_transaction_of_the_loop_left_open_by_a_silent_connection_is_ended_by_the_server(
    dsn: str,
) -> None:
    # A tick's transaction holds the due jobs' rows and the queued runs its claim walked. When
    # its connection goes silent between two statements (here: the client stops sending), the
    # server ends it after the loop's statement deadline, and other workers get the rows back.
    run_id = enqueue_raw(dsn, "t-echo")
    settings = WorkerSettings(dsn=dsn, db_timeout=1.0)

    def lockable() -> bool:
        with psycopg.connect(dsn) as other:
            try:
                other.execute(
                    "SELECT 1 FROM pgjobs.runs WHERE id = %s FOR UPDATE NOWAIT", (run_id,)
                )
            except psycopg.errors.LockNotAvailable:
                return False
            return True

    async def go() -> None:
        conn = await open_loop_connection(settings, "w-silent")
        try:
            await conn.execute("BEGIN")
            await conn.execute("SELECT 1 FROM pgjobs.runs WHERE id = %s FOR UPDATE", (run_id,))
            assert not lockable()
            # The client sends nothing more: only the server can end the transaction.
            wait_until(lockable, 10, "the server to end the silent transaction")
            assert conn.closed or conn.broken or await _fails(conn)
        finally:
            await conn.close()

    asyncio.run(go())


async def _fails(conn: psycopg.AsyncConnection[object]) -> bool:
    """Whether the next statement on ``conn`` is refused, its session ended by the server."""
    try:
        await conn.execute("SELECT 1")
    except (psycopg.errors.IdleInTransactionSessionTimeout, psycopg.OperationalError):
        return True
    return False


# -- faults of the database itself ---------------------------------------------------------------

needs_cluster = pytest.mark.skipif(available() is not None, reason=available() or "")


@pytest.fixture
def cluster() -> Iterator[PgCluster]:
    with pg_cluster() as c:
        yield c


@needs_cluster
def test_a_worker_started_while_the_database_is_down_waits_then_starts(
    cluster: PgCluster, tmp_path: Path
) -> None:
    with worker_pool(cluster.dsn, tmp_path) as pool:
        cluster.stop("immediate")
        w = pool.start(["t-echo"], "--lease", "3")
        wait_until(lambda: w.log().count("database unavailable") >= 2, 20, "two attempts logged")
        assert w.proc.poll() is None, w.log()
        cluster.start()
        pool.wait_registered(w, timeout=20)
        run_id = enqueue_raw(cluster.dsn, "t-echo", {"n": 1})
        wait_status(cluster.dsn, run_id, {"succeeded"}, 15)
        assert "Traceback" not in w.log()
        assert w.stop() == 0, w.log()


@needs_cluster
def test_a_worker_asked_to_stop_while_the_database_is_down_stops(
    cluster: PgCluster, tmp_path: Path
) -> None:
    with worker_pool(cluster.dsn, tmp_path) as pool:
        idle = pool.start(["t-echo"], "--grace", "2")
        busy = pool.start(["t-sleep"], "--grace", "2", name="busy")
        pool.wait_registered(idle, busy)
        run_id = enqueue_raw(cluster.dsn, "t-sleep", {"seconds": 60})
        wait_status(cluster.dsn, run_id, {"running"}, 15)
        cluster.stop("immediate")
        wait_until(lambda: "connection lost" in busy.log(), 20, "the workers to see it gone")
        # Nothing to record: the idle one stops at once. The busy one holds a run whose end it
        # cannot record: it stops after its grace, the run left to a reaper.
        began = time.monotonic()
        assert idle.stop(timeout=15) == 0, idle.log()
        assert busy.stop(timeout=15) == 0, busy.log()
        assert time.monotonic() - began < 12
        assert "left to the reaper" in busy.log()
        assert "Traceback" not in idle.log() + busy.log()


@needs_cluster
def test_a_crash_longer_than_the_lease_does_not_reap_live_workers_runs(
    cluster: PgCluster, tmp_path: Path
) -> None:
    with worker_pool(cluster.dsn, tmp_path) as pool:
        procs = [pool.start(["t-sleep"], "--lease", "2") for _ in range(2)]
        pool.wait_registered(*procs)
        ids = [enqueue_raw(cluster.dsn, "t-sleep", {"seconds": 6}) for _ in range(4)]
        wait_until(
            lambda: (
                scalar(cluster.dsn, "SELECT count(*) FROM pgjobs.runs WHERE status = 'running'")
                == 4
            ),
            15,
            "four runs running",
        )
        cluster.stop("immediate")
        time.sleep(3)  # the outage outlasts the 2 s lease
        up = time.monotonic()
        cluster.start()
        for run_id in ids:
            row = wait_status(cluster.dsn, run_id, {"succeeded", "abandoned"}, 30)
            assert row["status"] == "succeeded", row
        assert time.monotonic() - up < 15
        assert rows(cluster.dsn, "SELECT id FROM pgjobs.runs WHERE status = 'abandoned'") == []
        for p in procs:
            assert p.proc.poll() is None, p.log()
            assert "Traceback" not in p.log()
            assert p.stop() == 0, p.log()
