"""pgjobs.wait / wait_sync and `jobs run --queue-it --wait`: a caller waits for a run's end.

The workers are real processes running this module's own extension (``--app
tests.test_wait:extension``): a job that naps and a job that fails until a given attempt.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

import pgjobs
from pgjobs import Extension, Job, JobContext, JobResult, RetryBackoff, migrations
from pgjobs.errors import ConfigError, SchemaError, UnknownRunError, WaitTimeout
from tests.cli import invoke
from tests.workers import Workers, scalar, wait_until, worker_pool

Conn = psycopg.Connection[tuple[Any, ...]]
APP = "tests.test_wait:extension"


class Nap(Job):
    """Naps ``payload["seconds"]`` on its first attempt, ``payload["then"]`` on the others."""

    name = "wait-nap"
    overlap = "allow"
    max_attempts = 2

    async def execute(self, ctx: JobContext) -> JobResult:
        payload = ctx.payload or {}
        seconds = payload.get("seconds", 0) if ctx.attempt == 1 else payload.get("then", 0)
        await asyncio.sleep(float(seconds))
        return JobResult.success(f"napped {seconds}s").with_data(attempt=ctx.attempt)


class Flaky(Job):
    """Fails until attempt ``payload["succeed_on"]``."""

    name = "wait-flaky"
    overlap = "allow"
    max_attempts = 3
    retry_backoff = RetryBackoff(base_seconds=0.05, factor=1.0, max_seconds=1, jitter=0.0)

    async def execute(self, ctx: JobContext) -> JobResult:
        if ctx.attempt < int((ctx.payload or {}).get("succeed_on", 1)):
            raise RuntimeError(f"flaky on attempt {ctx.attempt}")
        return JobResult.success(f"succeeded on attempt {ctx.attempt}").with_data(n=ctx.attempt)


class WaitExtension(Extension):
    name = "wait"

    def jobs(self) -> list[Job]:
        return [Nap(), Flaky()]


extension = WaitExtension()


@pytest.fixture
def workers(dsn: str, tmp_path: Path) -> Iterator[Workers]:
    with worker_pool(dsn, tmp_path) as pool:
        yield pool


def start_worker(workers: Workers, *args: str) -> None:
    workers.wait_registered(workers.start([], *args, app=APP))


def queued_run(conn: Conn, job: str = "wait-nap", status: str = "queued") -> int:
    """A run put in the table by hand (no worker needed), in ``status``."""
    row = conn.execute(
        "INSERT INTO pgjobs.runs (job, trigger, status, finished_at) "
        "VALUES (%s, 'enqueue', %s, CASE WHEN %s NOT IN ('queued', 'running') THEN now() END) "
        "RETURNING id",
        (job, status, status),
    ).fetchone()
    assert row is not None
    return int(row[0])


def since_finished(conn: Conn, run_id: int) -> float:
    """Seconds from the run's end (database clock) to now."""
    return float(
        scalar_on(
            conn,
            "SELECT extract(epoch FROM clock_timestamp() - finished_at) "
            "FROM pgjobs.runs WHERE id = %s",
            run_id,
        )
    )


def scalar_on(conn: Conn, query: str, *params: Any) -> Any:
    row = conn.execute(query, params or None).fetchone()
    return None if row is None else row[0]


def chain(conn: Conn, run_id: int) -> list[tuple[int, str, int, bool]]:
    """The run and its retries: (id, status, attempt, awaited), first attempt first."""
    return conn.execute(
        "WITH RECURSIVE c AS (SELECT * FROM pgjobs.runs WHERE id = %s "
        "UNION ALL SELECT r.* FROM pgjobs.runs r JOIN c ON r.retry_of = c.id) "
        "SELECT id, status, attempt, awaited FROM c ORDER BY id",
        (run_id,),
    ).fetchall()


# -- the outcome --------------------------------------------------------------------------------


@pytest.mark.serial
def test_wait_returns_the_outcome_when_the_notify_of_its_end_arrives(
    conn: Conn, dsn: str, workers: Workers
) -> None:
    start_worker(workers)
    run_id = pgjobs.enqueue_sync(conn, "wait-nap", {"seconds": 1.0})

    with psycopg.connect(dsn, autocommit=True) as waiter:
        finished = pgjobs.wait_sync(waiter, run_id, timeout=30)
        # Woken by the NOTIFY of the end, not by a read: those come every LISTEN_RECHECK (5 s).
        latency = since_finished(conn, run_id)

    assert latency < 0.5, latency
    assert finished.ok and finished.status == "succeeded"
    assert (finished.run_id, finished.final_run_id, finished.attempt) == (run_id, run_id, 1)
    assert finished.job == "wait-nap" and finished.message == "napped 1.0s"
    assert finished.data == {"attempt": 1} and finished.worker_id == "w1"
    assert finished.duration_seconds is not None and finished.duration_seconds >= 1.0
    assert chain(conn, run_id) == [(run_id, "succeeded", 1, True)]


def test_async_wait_follows_the_retries_to_the_attempt_that_succeeds(
    conn: Conn, dsn: str, workers: Workers
) -> None:
    start_worker(workers)
    run_id = pgjobs.enqueue_sync(conn, "wait-flaky", {"succeed_on": 3})

    async def waiting() -> pgjobs.FinishedRun:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as waiter:
            return await pgjobs.wait(waiter, run_id, timeout=30)

    finished = asyncio.run(waiting())

    attempts = chain(conn, run_id)
    assert [(status, attempt) for _, status, attempt, _ in attempts] == [
        ("failed", 1),
        ("failed", 2),
        ("succeeded", 3),
    ]
    # Each retry was inserted awaited, as the attempt it retries.
    assert all(awaited for *_, awaited in attempts)
    assert finished.status == "succeeded" and finished.attempt == 3
    assert (finished.run_id, finished.final_run_id) == (run_id, attempts[-1][0])
    assert finished.message == "succeeded on attempt 3" and finished.data == {"n": 3}


def test_wait_returns_the_failure_of_the_last_attempt(
    conn: Conn, dsn: str, workers: Workers
) -> None:
    start_worker(workers)
    run_id = pgjobs.enqueue_sync(conn, "wait-flaky", {"succeed_on": 99})

    finished = pgjobs.wait_sync(dsn, run_id, timeout=30)

    assert not finished.ok and finished.status == "failed" and finished.attempt == 3
    assert finished.final_run_id == chain(conn, run_id)[-1][0] != run_id
    assert finished.error_type == "RuntimeError"
    assert finished.error_message == "flaky on attempt 3"


@pytest.mark.parametrize("told", ["by argument", "by PGJOBS_NO_LISTEN"])
def test_polling_without_listen_follows_the_retries_and_marks_nothing(
    conn: Conn, dsn: str, workers: Workers, told: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    start_worker(workers)
    run_id = pgjobs.enqueue_sync(conn, "wait-flaky", {"succeed_on": 2})

    if told == "by argument":
        finished = pgjobs.wait_sync(dsn, run_id, timeout=30, listen=False)
    else:
        monkeypatch.setenv("PGJOBS_NO_LISTEN", "1")
        finished = pgjobs.wait_sync(dsn, run_id, timeout=30)

    assert finished.status == "succeeded" and finished.attempt == 2
    assert [awaited for *_, awaited in chain(conn, run_id)] == [False, False]


def test_a_session_that_may_not_listen_or_mark_polls(conn: Conn, dsn: str) -> None:
    run_id = queued_run(conn)
    read_only = psycopg.conninfo.make_conninfo(dsn, options="-c default_transaction_read_only=on")
    result: list[pgjobs.FinishedRun] = []
    waiter = threading.Thread(
        target=lambda: result.append(pgjobs.wait_sync(read_only, run_id, timeout=20))
    )
    waiter.start()
    # Its first reads came and went: it polls, never having marked the run.
    wait_until(
        lambda: scalar(
            dsn,
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND query LIKE %s",
            "-- What `jobs run --wait` follows%",  # run_progress
        ),
        10,
        "the waiter's first read",
    )
    conn.execute(
        "UPDATE pgjobs.runs SET status = 'succeeded', finished_at = now() WHERE id = %s", (run_id,)
    )
    waiter.join(10)

    [finished] = result
    assert finished.status == "succeeded"
    assert scalar_on(conn, "SELECT awaited FROM pgjobs.runs WHERE id = %s", run_id) is False


def test_a_run_abandoned_by_a_killed_worker_is_followed_to_its_retry(
    conn: Conn, dsn: str, workers: Workers
) -> None:
    doomed = workers.start([], app=APP, name="doomed")
    workers.wait_registered(doomed)
    run_id = pgjobs.enqueue_sync(conn, "wait-nap", {"seconds": 60, "then": 0})
    wait_until(
        lambda: scalar(dsn, "SELECT status FROM pgjobs.runs WHERE id = %s", run_id) == "running",
        10,
        "the nap to start",
    )
    result: list[pgjobs.FinishedRun] = []
    waiter = threading.Thread(
        target=lambda: result.append(pgjobs.wait_sync(dsn, run_id, timeout=40))
    )
    waiter.start()
    wait_until(
        lambda: scalar(dsn, "SELECT awaited FROM pgjobs.runs WHERE id = %s", run_id), 10, "the mark"
    )
    doomed.kill()
    start_worker(workers)  # its reaper finds the lease expired, its loop runs the retry

    waiter.join(45)

    [finished] = result
    assert [(status, attempt) for _, status, attempt, _ in chain(conn, run_id)] == [
        ("abandoned", 1),
        ("succeeded", 2),
    ]
    assert finished.status == "succeeded" and finished.attempt == 2 and finished.worker_id == "w2"


@pytest.mark.serial
def test_a_cancel_of_a_queued_run_wakes_its_waiter(conn: Conn, dsn: str) -> None:
    run_id = queued_run(conn)
    result: list[pgjobs.FinishedRun] = []
    waiter = threading.Thread(
        target=lambda: result.append(pgjobs.wait_sync(dsn, run_id, timeout=20))
    )
    waiter.start()
    wait_until(
        lambda: scalar(dsn, "SELECT awaited FROM pgjobs.runs WHERE id = %s", run_id), 10, "the mark"
    )

    cancelled = invoke(dsn, "runs", "cancel", str(run_id))
    waiter.join(10)

    assert cancelled.exit_code == 0, cancelled.output
    [finished] = result
    assert finished.status == "cancelled"
    assert since_finished(conn, run_id) < 0.5


# -- at once, never, or not at all --------------------------------------------------------------


@pytest.mark.serial
@pytest.mark.parametrize("listen", [True, False])
def test_a_run_that_ended_already_is_returned_at_once(conn: Conn, dsn: str, listen: bool) -> None:
    run_id = queued_run(conn, status="succeeded")

    started = time.monotonic()
    finished = pgjobs.wait_sync(dsn, run_id, timeout=10, listen=listen)

    assert time.monotonic() - started < 0.5
    assert finished.status == "succeeded" and finished.final_run_id == run_id
    # An ended run is not marked: nothing is left to notify.
    assert scalar_on(conn, "SELECT awaited FROM pgjobs.runs WHERE id = %s", run_id) is False


@pytest.mark.serial
def test_a_timeout_raises_and_leaves_the_run_as_it_was(conn: Conn, dsn: str) -> None:
    run_id = queued_run(conn)

    started = time.monotonic()
    with pytest.raises(WaitTimeout) as timed_out:
        pgjobs.wait_sync(dsn, run_id, timeout=0.3)
    elapsed = time.monotonic() - started

    assert 0.3 <= elapsed < 2.0
    assert str(timed_out.value) == (
        f"run {run_id} is still queued after 0.3s of waiting; "
        f"the run goes on, see `pgjobs runs show {run_id}`"
    )
    assert isinstance(timed_out.value, pgjobs.PgJobsError) and timed_out.value.exit_code == 124
    assert (timed_out.value.run_id, timed_out.value.status) == (run_id, "queued")
    assert scalar_on(conn, "SELECT status FROM pgjobs.runs WHERE id = %s", run_id) == "queued"


def test_an_unknown_run_or_a_bad_argument_is_one_clear_error(conn: Conn, dsn: str) -> None:
    with pytest.raises(UnknownRunError, match=r"^no run with id 999$"):
        pgjobs.wait_sync(dsn, 999)
    with pytest.raises(UnknownRunError, match=r"^no run with id 999$"):
        pgjobs.wait_sync(dsn, 999, listen=False)
    for run_id in ("1", True, 0, 2**63):
        with pytest.raises(ConfigError, match=r"^run_id must be a run's id"):
            pgjobs.wait_sync(dsn, run_id)  # type: ignore[arg-type]
    for timeout in (-1, float("nan"), "5"):
        with pytest.raises(ConfigError, match=r"^timeout must be a number of seconds"):
            pgjobs.wait_sync(dsn, 1, timeout=timeout)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"it is async, use `await pgjobs.wait"):

        async def wrong() -> None:
            async with await psycopg.AsyncConnection.connect(dsn) as aconn:
                pgjobs.wait_sync(aconn, 1)  # type: ignore[arg-type]

        asyncio.run(wrong())
    with pytest.raises(pgjobs.DatabaseError, match=r"^cannot connect to"):
        pgjobs.wait_sync("postgresql://nobody@127.0.0.1:1/none", 1)


def test_a_schema_older_than_the_code_says_which_command_fixes_it(empty_dsn: str) -> None:
    migrations.upgrade(empty_dsn, revision="0011")

    with pytest.raises(SchemaError, match=r"older than this code .* run `pgjobs db upgrade`$"):
        pgjobs.wait_sync(empty_dsn, 1)


def test_a_connection_in_a_transaction_is_refused_and_one_out_of_it_is_given_back_as_it_was(
    conn: Conn, dsn: str
) -> None:
    run_id = queued_run(conn, status="failed")
    with psycopg.connect(dsn) as caller:  # not autocommit
        caller.execute("SELECT 1")
        with pytest.raises(ConfigError, match=r"needs a connection outside a transaction"):
            pgjobs.wait_sync(caller, run_id)
        caller.rollback()

        assert pgjobs.wait_sync(caller, run_id).status == "failed"

        assert caller.autocommit is False
        assert caller.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        # Nothing left listening on the caller's session.
        assert caller.execute("SELECT count(*) FROM pg_listening_channels()").fetchone() == (0,)


# -- the cost for everyone else -----------------------------------------------------------------


def test_the_runs_nobody_waits_for_notify_nothing(conn: Conn, dsn: str, workers: Workers) -> None:
    start_worker(workers)
    channel = scalar_on(conn, "SELECT pgjobs.awaited_channel('pgjobs')")
    with psycopg.connect(dsn, autocommit=True) as listener:
        listener.execute(psycopg.sql.SQL("LISTEN {}").format(psycopg.sql.Identifier(channel)))
        ids = [pgjobs.enqueue_sync(conn, "wait-flaky", {"succeed_on": 2}) for _ in range(5)]
        wait_until(
            lambda: (
                scalar(dsn, "SELECT count(*) FROM pgjobs.runs WHERE status = 'succeeded'")
                == len(ids)
            ),
            30,
            "the runs and their retries to end",
        )
        # Runs of a job no worker registers: nobody claims them while the test changes them.
        by_hand = queued_run(conn, job="wait-unregistered")
        conn.execute("UPDATE pgjobs.runs SET status = 'cancelled' WHERE id = %s", (by_hand,))

        assert list(listener.notifies(timeout=0.5)) == []

        # The same change of an awaited run notifies, once, with its id.
        awaited = queued_run(conn, job="wait-unregistered")
        conn.execute("UPDATE pgjobs.runs SET awaited = true WHERE id = %s", (awaited,))
        conn.execute("UPDATE pgjobs.runs SET status = 'cancelled' WHERE id = %s", (awaited,))
        assert [(n.channel, n.payload) for n in listener.notifies(timeout=0.5)] == [
            (channel, str(awaited))
        ]


@pytest.mark.serial
def test_a_queued_run_the_mark_held_while_a_claim_passed_it_over_is_claimed_at_once(
    conn: Conn, dsn: str, workers: Workers
) -> None:
    # A worker that polls only every 30 s: only a wake-up gets the run claimed in time.
    start_worker(workers, "--lease", "30", "--poll-interval", "30")
    conn.execute("UPDATE pgjobs.jobs SET paused = true WHERE name = 'wait-nap'")
    run_id = pgjobs.enqueue_sync(conn, "wait-nap", {"seconds": 0})
    with psycopg.connect(dsn) as holder:
        # The row held, as the mark holds it for an instant, while the worker's claim (woken by
        # the resume) passes it over.
        holder.execute("SELECT 1 FROM pgjobs.runs WHERE id = %s FOR UPDATE", (run_id,))
        resumed = scalar_on(
            conn,
            "UPDATE pgjobs.jobs SET paused = false WHERE name = 'wait-nap' "
            "RETURNING clock_timestamp()",
        )
        wait_until(
            lambda: scalar(
                dsn,
                "SELECT state = 'idle' AND query LIKE %s AND state_change > %s "
                "FROM pg_stat_activity WHERE application_name = 'pgjobs-worker w1' "
                "AND datname = current_database()",
                "-- One statement, one commit per loop iteration%",  # finish_and_claim_runs
                resumed,
            ),
            10,
            "a claim after the resume",
        )
        holder.rollback()
    assert scalar_on(conn, "SELECT status FROM pgjobs.runs WHERE id = %s", run_id) == "queued"

    started = time.monotonic()
    finished = pgjobs.wait_sync(dsn, run_id, timeout=10)

    assert finished.status == "succeeded"
    assert time.monotonic() - started < 2.0


# -- the command line ---------------------------------------------------------------------------


def test_jobs_run_queue_it_wait_follows_the_run_and_its_retry(
    conn: Conn, dsn: str, workers: Workers
) -> None:
    start_worker(workers)

    args = ("jobs", "run", "wait-flaky", "--queue-it", "--wait", "--timeout", "30")
    followed = invoke(dsn, *args, "--payload", '{"succeed_on": 2}')

    assert followed.exit_code == 0, followed.output
    [(first, *_), (second, *_)] = chain(conn, 1)
    lines = followed.stdout.splitlines()
    assert f"wait-flaky: run {first} queued" in lines
    assert f"wait-flaky: run {first} running on worker w1" in lines
    assert any(line.startswith(f"wait-flaky: run {first} failed in") for line in lines)
    assert any(line.endswith(f"; retried as run {second}") for line in lines)
    assert any(line.startswith(f"wait-flaky: run {second} succeeded in") for line in lines)
    assert "  message: succeeded on attempt 2" in lines

    polled = invoke(dsn, *args, "--no-listen", "--json", "--payload", '{"succeed_on": 1}')

    assert polled.exit_code == 0, polled.output
    [final] = json.loads(polled.stdout)
    assert final["status"] == "succeeded" and final["attempt"] == 1
    assert not scalar_on(conn, "SELECT awaited FROM pgjobs.runs WHERE id = %s", final["run_id"])
