"""Wake-ups with real worker processes against a real Postgres: a statement queueing due runs
wakes as many waiting workers as the runs need, each on its own channel, rather than every
listener; and no wake-up is lost when enqueues race workers on their way to waiting.

The workers poll every 30 s: a run that starts within a second or two was woken by a NOTIFY.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgjobs import EnqueueRequest, enqueue_many_sync, enqueue_sync
from pgjobs.registry import load_registry
from pgjobs.worker import Worker, WorkerSettings
from tests.workers import (
    WorkerProcess,
    Workers,
    add_waiting_worker,
    scalar,
    wait_until,
    worker_pool,
)

# It measures latencies: it runs alone, after the tests that share the machine (see Makefile).
pytestmark = pytest.mark.serial

NOTIFY_ONLY = ("--lease", "30", "--poll-interval", "30", "--concurrency", "1")


@pytest.fixture
def workers(dsn: str, tmp_path: Path) -> Iterator[Workers]:
    with worker_pool(dsn, tmp_path) as pool:
        yield pool


def start_waiting(workers: Workers, count: int, *args: str) -> list[WorkerProcess]:
    """``count`` idle workers, once each has registered and says it waits."""
    procs = [workers.start(["t-sleep"], *NOTIFY_ONLY, *args) for _ in range(count)]
    workers.wait_registered(*procs)
    ids = [p.id for p in procs]
    wait_until(
        lambda: (
            scalar(
                workers.dsn,
                "SELECT count(*) FROM pgjobs.workers WHERE id = ANY(%s) AND waiting > 0",
                ids,
            )
            == count
        ),
        20,
        "every worker to say it waits",
    )
    return procs


def wait_started(dsn: str, ids: list[int], timeout: float) -> None:
    wait_until(
        lambda: (
            scalar(
                dsn,
                "SELECT count(*) FROM pgjobs.runs WHERE id = ANY(%s) AND started_at IS NOT NULL",
                ids,
            )
            == len(ids)
        ),
        timeout,
        f"runs {ids} to start",
    )


# -- the trigger alone, with worker rows written by hand ------------------------------------------


def add_workers(dsn: str, waiting: list[int]) -> list[str]:
    """Worker rows serving t-sleep on queue default, the i-th with ``waiting[i]`` free slots,
    waiting since i seconds from now."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO pgjobs.jobs (name, extension) VALUES ('t-sleep', 't')"
            " ON CONFLICT DO NOTHING"
        )
    ids = [f"hand-{i}" for i in range(len(waiting))]
    for i, (worker, slots) in enumerate(zip(ids, waiting, strict=True)):
        add_waiting_worker(dsn, "t-sleep", worker, slots=slots, order=i)
    return ids


def heard_after(dsn: str, worker_ids: list[str], action: Callable[[], None]) -> list[str]:
    """The channels NOTIFYed while ``action`` ran: the schema's, or a worker's (by its id)."""
    with psycopg.connect(dsn, autocommit=True) as listener:
        names = {"pgjobs": "pgjobs"}
        for worker in worker_ids:
            channel = scalar(dsn, "SELECT pgjobs.wake_channel('pgjobs', %s)", worker)
            names[str(channel)] = worker
        for channel in names:
            listener.execute(f'LISTEN "{channel}"')
        action()
        return sorted(names[n.channel] for n in listener.notifies(timeout=0.3))


def queue_runs(dsn: str, count: int, **fields: Any) -> None:
    with psycopg.connect(dsn) as conn:
        enqueue_many_sync(conn, [EnqueueRequest("t-sleep", **fields) for _ in range(count)])


def test_queued_runs_wake_the_longest_waiting_workers_until_their_slots_cover_the_runs(
    dsn: str,
) -> None:
    ids = add_workers(dsn, [2, 1, 3, 0])
    assert heard_after(dsn, ids, lambda: queue_runs(dsn, 3)) == ["hand-0", "hand-1"]
    assert scalar(dsn, "SELECT array_agg(waiting ORDER BY id) FROM pgjobs.workers") == [0, 0, 3, 0]
    # One waiting worker left, with 3 slots, for 5 runs: it alone is told. The others are busy:
    # each claims again when it records its next end, and settles before it sleeps.
    assert heard_after(dsn, ids, lambda: queue_runs(dsn, 5)) == ["hand-2"]
    # Nobody waits: nobody is told, and the commit serialises with no other.
    assert heard_after(dsn, ids, lambda: queue_runs(dsn, 1)) == []


def test_a_run_due_later_wakes_everyone_and_no_waiting_worker_alone(dsn: str) -> None:
    """Every worker reckons its next wake-up from the delayed runs; nobody can take it now."""
    ids = add_workers(dsn, [1, 1])
    later = datetime.now(UTC) + timedelta(minutes=5)
    assert heard_after(dsn, ids, lambda: queue_runs(dsn, 1, run_at=later)) == ["pgjobs"]
    assert scalar(dsn, "SELECT sum(waiting) FROM pgjobs.workers") == 2


def test_a_snapshot_transaction_wakes_everyone(dsn: str) -> None:
    """A repeatable-read transaction looks at the workers as they were when it began, not after
    it took its queue's lock: it may have missed a worker that went idle since."""
    ids = add_workers(dsn, [0])

    def queue_in_repeatable_read() -> None:
        with psycopg.connect(dsn) as conn:
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            enqueue_sync(conn, "t-sleep")

    assert heard_after(dsn, ids, queue_in_repeatable_read) == ["pgjobs"]


def test_a_waiting_worker_whose_row_another_statement_holds_is_still_woken(dsn: str) -> None:
    """A waiting worker's heartbeat updates its row: an enqueue at that instant cannot take the
    worker's mark (SKIP LOCKED), and the heartbeat, unlike a claim, does not settle after. The
    enqueue tells every listener instead, so the worker still claims the run at once."""
    ids = add_workers(dsn, [2, 1])
    with psycopg.connect(dsn) as heartbeat:
        heartbeat.execute("UPDATE pgjobs.workers SET heartbeat_at = now() WHERE id = 'hand-0'")
        assert heard_after(dsn, ids, lambda: queue_runs(dsn, 1)) == ["pgjobs"]
    # The worker it skipped is still marked waiting; the next enqueue tells it alone.
    assert scalar(dsn, "SELECT array_agg(waiting ORDER BY id) FROM pgjobs.workers") == [2, 1]
    assert heard_after(dsn, ids, lambda: queue_runs(dsn, 1)) == ["hand-0"]


def settle(dsn: str, worker: str, queues: list[str]) -> str:
    return str(scalar(dsn, "SELECT pgjobs.settle_idle(%s, %s)", worker, queues))


def test_a_worker_settling_while_an_enqueue_is_open_looks_again_until_it_commits(
    dsn: str,
) -> None:
    """The race a lost wake-up would come from: the worker's claim came short and is writing its
    mark when a run is queued, so the queueing statement does not see the mark and tells nobody.
    Until that transaction ends, the worker's settle finds its queue's lock held ('busy'); once it
    has committed, the settle's own look finds the run ('queued')."""
    [worker] = add_workers(dsn, [1])
    assert settle(dsn, worker, ["default"]) == "idle"
    with psycopg.connect(dsn) as claim, psycopg.connect(dsn) as producer:
        claim.execute("SELECT 1 FROM pgjobs.workers WHERE id = %s FOR UPDATE", [worker])
        heard = heard_after(dsn, [worker], lambda: enqueue_sync(producer, "t-sleep"))
        assert heard == []
        assert settle(dsn, worker, ["other", "default"]) == "busy"
        # A worker of another queue is not held up by it.
        assert settle(dsn, worker, ["other"]) == "idle"
        claim.rollback()
        assert settle(dsn, worker, ["default"]) == "busy"
        producer.commit()
    assert settle(dsn, worker, ["default"]) == "queued"
    # A run of a job this worker does not serve, or of a paused job, is not its business.
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE pgjobs.jobs SET paused = true WHERE name = 't-sleep'")
    assert settle(dsn, worker, ["default"]) == "idle"
    assert settle(dsn, "hand-none", ["default"]) == "idle"


def test_an_expired_worker_is_not_told(dsn: str) -> None:
    ids = add_workers(dsn, [1])
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE pgjobs.workers SET expires_at = now() - interval '1 second'")
    assert heard_after(dsn, ids, lambda: queue_runs(dsn, 1)) == []


# -- real workers --------------------------------------------------------------------------------


def test_a_run_queued_to_waiting_workers_wakes_one_of_them_alone(
    dsn: str, workers: Workers
) -> None:
    procs = start_waiting(workers, 5)
    channels = {
        str(scalar(dsn, "SELECT pgjobs.wake_channel('pgjobs', %s)", p.id)): p.id for p in procs
    }
    with psycopg.connect(dsn, autocommit=True) as listener, psycopg.connect(dsn) as producer:
        listener.execute('LISTEN "pgjobs"')
        for channel in channels:
            listener.execute(f'LISTEN "{channel}"')
        woken: list[str] = []
        for _ in range(6):
            run_id = enqueue_sync(producer, "t-sleep", {"seconds": 0.01})
            producer.commit()
            wait_started(dsn, [run_id], 5)
            heard = [n.channel for n in listener.notifies(timeout=0.5)]
            # One worker was told, on its own channel; nobody else was.
            assert len(heard) == 1 and heard[0] in channels, heard
            woken.append(channels[heard[0]])
            # It ran the run, and waits again.
            assert (
                scalar(dsn, "SELECT worker_id FROM pgjobs.runs WHERE id = %s", run_id)
                == (woken[-1])
            )
            wait_until(
                lambda: scalar(dsn, "SELECT count(*) FROM pgjobs.workers WHERE waiting > 0") == 5,
                5,
                "the worker to wait again",
            )
        # Longest waiting first: the wake-ups go round the workers.
        assert len(set(woken)) == 5, woken

        # More due runs than the waiting workers have room for (a free slot, and room to
        # prefetch one): every waiting worker is told, nobody else; each claims again as it
        # records its runs' ends, until the queue is empty.
        room = int(scalar(dsn, "SELECT sum(waiting) FROM pgjobs.workers"))
        many = enqueue_many_sync(
            producer, [EnqueueRequest("t-sleep", {"seconds": 0.01}) for _ in range(room + 3)]
        )
        producer.commit()
        wait_started(dsn, many, 10)
        heard = [n.channel for n in listener.notifies(timeout=0.5)]
        assert sorted(heard) == sorted(channels), heard


def test_a_worker_without_listen_never_says_it_waits(dsn: str, workers: Workers) -> None:
    quiet = workers.start(["t-sleep"], "--no-listen", "--poll-interval", "0.2")
    listening = workers.start(["t-sleep"], *NOTIFY_ONLY)
    workers.wait_registered(quiet, listening)
    wait_until(
        lambda: scalar(dsn, "SELECT waiting FROM pgjobs.workers WHERE id = %s", listening.id) > 0,
        20,
        "the listening worker to wait",
    )
    # The polling worker has claimed (and come short) many times by now.
    time.sleep(1)
    assert scalar(dsn, "SELECT waiting FROM pgjobs.workers WHERE id = %s", quiet.id) == 0


def test_no_wake_up_is_lost_when_enqueues_race_workers_going_idle(
    dsn: str, workers: Workers
) -> None:
    """Bursts of runs, queued while the workers finish the previous burst's runs and are on
    their way to waiting, some from transactions that stay open meanwhile. With polls 30 s apart,
    a lost wake-up leaves a run queued past the burst's deadline."""
    start_waiting(workers, 4)
    rng = random.Random(7)

    def producer(ids: list[int], count: int, hold: float) -> None:
        with psycopg.connect(dsn) as conn:
            for _ in range(count):
                ids.append(enqueue_sync(conn, "t-sleep", {"seconds": rng.choice((0, 0.005, 0.02))}))
                time.sleep(hold)
            conn.commit()

    lags: list[float] = []
    for burst in range(15):
        ids: list[int] = []
        threads = [
            threading.Thread(target=producer, args=(ids, rng.randint(1, 3), rng.random() * 0.03))
            for _ in range(rng.randint(1, 3))
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        began = time.monotonic()
        try:
            wait_started(dsn, ids, 5)
        except AssertionError:
            raise AssertionError(f"burst {burst}: a run waited for a poll: no wake-up") from None
        lags.append(time.monotonic() - began)
        time.sleep(rng.random() * 0.03)
    print(f"\nburst start: max {max(lags) * 1000:.0f} ms after the last commit")


def test_runs_queued_to_busy_workers_send_no_notify_and_start_as_slots_free(
    dsn: str, workers: Workers
) -> None:
    """Every worker of the queue is busy: the enqueues tell nobody (not the idle worker of
    another queue either), and each run starts as soon as a slot frees, not at a poll."""
    busy = [workers.start(["t-sleep"], *NOTIFY_ONLY) for _ in range(2)]
    other = workers.start(["t-sleep"], *NOTIFY_ONLY, "--queue", "other")
    workers.wait_registered(*busy, other)
    channels = [str(scalar(dsn, "SELECT pgjobs.wake_channel('pgjobs', %s)", p.id)) for p in busy]
    with psycopg.connect(dsn, autocommit=True) as producer:
        holders = [enqueue_sync(producer, "t-sleep", {"seconds": 1.0}) for _ in busy]
        wait_started(dsn, holders, 5)
        wait_until(
            lambda: scalar(dsn, "SELECT count(*) FROM pgjobs.workers WHERE waiting > 0") == 1,
            5,
            "the busy workers to stop waiting, the other to wait",
        )
        with psycopg.connect(dsn, autocommit=True) as listener:
            listener.execute('LISTEN "pgjobs"')
            for channel in [
                *channels,
                scalar(dsn, "SELECT pgjobs.wake_channel('pgjobs', %s)", other.id),
            ]:
                listener.execute(f'LISTEN "{channel}"')
            queued = [enqueue_sync(producer, "t-sleep", {"seconds": 0}) for _ in range(6)]
            assert [n.channel for n in listener.notifies(timeout=0.3)] == []
        wait_started(dsn, queued, 3)
    gaps = scalar(
        dsn,
        "SELECT max(extract(epoch FROM q.started_at - h.finished_at)) FROM pgjobs.runs q,"
        " (SELECT min(finished_at) AS finished_at FROM pgjobs.runs WHERE id = ANY(%s)) h"
        " WHERE q.id = ANY(%s)",
        holders,
        queued,
    )
    assert gaps is not None and float(gaps) < 0.5, gaps
    assert scalar(dsn, "SELECT count(*) FROM pgjobs.runs WHERE worker_id = %s", other.id) == 0


# -- a worker's own steps, in the order of a race --------------------------------------------------


def test_the_first_claim_to_mark_a_worker_waiting_settles_though_an_earlier_one_did(
    dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker's start: a claim runs while its LISTEN comes up, so it marks nothing, and the
    settle after it finds no enqueue open. The next claim is the first to mark the worker
    waiting, and an enqueue that looked at the workers before that mark sent no NOTIFY: the
    worker settles after that claim too, and claims the run at once rather than at its poll, 30 s
    away. The worker's loop runs here, one iteration at a time, against the real database; a
    lock holds its claim while the LISTEN comes up."""
    monkeypatch.setenv("PGJOBS_TEST_JOBS", "t-echo")  # no schedule: nothing due before the poll
    registry = load_registry("tests.worker_apps.app:extension", entry_points=False)
    settings = WorkerSettings(
        dsn=dsn, worker_id="w-start", poll_interval=30, lease=30, listen=False, scheduler=False
    )
    worker = Worker(registry, settings)

    async def claim_held_while_the_listen_comes_up(test: psycopg.AsyncConnection[Any]) -> None:
        async with test.transaction():
            # Only the claim reads run_dependencies: it waits for this lock, and nothing else.
            await test.execute("LOCK TABLE pgjobs.run_dependencies IN ACCESS EXCLUSIVE MODE")
            claim = asyncio.create_task(worker._iterate(True))
            held = (
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND application_name = 'pgjobs-worker w-start' AND wait_event_type = 'Lock'"
            )
            while await (await test.execute(held)).fetchone() != (1,):
                await asyncio.sleep(0.01)
            worker._listening = True  # what the LISTEN task does once it is up
        await claim

    async def start_racing_an_enqueue() -> str:
        assert await worker._open()
        try:
            await worker._iterate(True)  # heartbeat, reap, a first claim
            async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as test:
                await claim_held_while_the_listen_comes_up(test)
                async with test.transaction():  # an enqueue open across the next claim
                    await test.execute(
                        "INSERT INTO pgjobs.runs (job, trigger) VALUES ('t-echo', 'enqueue')"
                    )
                    await worker._iterate(True)  # woken by the LISTEN task: marks, settles
                # Unwoken from here (no NOTIFY came): the loop's own times.
                for _ in range(20):
                    delay = await worker._iterate(False)
                    if delay > 1:
                        break
                    await asyncio.sleep(delay)
                row = await (
                    await test.execute("SELECT status FROM pgjobs.runs WHERE job = 't-echo'")
                ).fetchone()
            assert row is not None
            return str(row[0])
        finally:
            worker.request_stop()
            await worker._close()

    assert asyncio.run(start_racing_an_enqueue()) != "queued"
