"""The worker's guarantees, proven with real worker processes against a real Postgres and checked
with SQL: exactly-once ticks, no overlap, leases and reaping, shutdown, reconnects, misfires."""

from __future__ import annotations

import itertools
import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.workers import Workers, assert_each_tick_once, rows, scalar, wait_until, worker_pool


@pytest.fixture
def workers(dsn: str, tmp_path: Path) -> Iterator[Workers]:
    with worker_pool(dsn, tmp_path) as pool:
        yield pool


def enqueue_raw(
    dsn: str, job: str, payload: dict[str, object] | None = None, max_attempts: int = 1
) -> int:
    """Queue a run with plain SQL, as any client of the table could."""
    return int(
        scalar(
            dsn,
            "INSERT INTO pgjobs.runs (job, trigger, payload, max_attempts) "
            "VALUES (%s, 'enqueue', %s, %s) RETURNING id",
            job,
            json.dumps(payload) if payload is not None else None,
            max_attempts,
        )
    )


def run_row(dsn: str, run_id: int) -> dict[str, object]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute("SELECT * FROM pgjobs.runs WHERE id = %s", (run_id,))
        names = [c.name for c in cur.description or []]
        row = cur.fetchone()
        assert row is not None
        return dict(zip(names, row, strict=True))


def wait_status(dsn: str, run_id: int, statuses: set[str], timeout: float) -> dict[str, object]:
    def done() -> dict[str, object] | None:
        row = run_row(dsn, run_id)
        return row if row["status"] in statuses else None

    return wait_until(done, timeout, f"run {run_id} to reach {statuses}")


def wait_succeeded_after(dsn: str, after: object, count: int, timeout: float, what: str) -> None:
    """Until ``count`` runs scheduled after ``after`` (a database time) have succeeded."""
    wait_until(
        lambda: (
            scalar(
                dsn,
                "SELECT count(*) FROM pgjobs.runs WHERE status = 'succeeded' "
                "AND scheduled_for > %s",
                after,
            )
            >= count
        ),
        timeout,
        what,
    )


def test_a_tick_runs_once_with_eight_workers(dsn: str, workers: Workers) -> None:
    workers.run_until_succeeded(["t-tick"], replicas=8, succeeded=32, timeout=90)

    assert_each_tick_once(dsn, "t-tick", at_least=30)
    assert scalar(dsn, "SELECT count(DISTINCT worker_id) FROM pgjobs.runs") >= 2


def test_a_skip_job_never_overlaps_and_records_skipped_ticks(dsn: str, workers: Workers) -> None:
    workers.run_until_succeeded(["t-slow-skip"], replicas=4, succeeded=3, timeout=30)

    ran = rows(
        dsn,
        "SELECT id, started_at, finished_at FROM pgjobs.runs "
        "WHERE status = 'succeeded' ORDER BY started_at",
    )
    for (_, _, end), (nxt, start, _) in itertools.pairwise(ran):
        assert start >= end, f"run {nxt} started before the previous run finished"
    skipped = rows(dsn, "SELECT message FROM pgjobs.runs WHERE status = 'skipped'")
    assert len(skipped) >= 4
    holders = {str(r[0]) for r in ran}
    assert all(m.startswith("skipped: lock held by run ") for (m,) in skipped)
    assert any(m.split()[5] in holders for (m,) in skipped), skipped
    assert scalar(dsn, "SELECT count(*) FROM pgjobs.run_locks") == 0


@pytest.mark.serial  # times a delay
def test_a_killed_workers_run_is_abandoned_and_retried_elsewhere(
    dsn: str, workers: Workers
) -> None:
    a = workers.start(["t-sleep"], "--lease", "2", name="a")
    workers.wait_registered(a)
    run_id = enqueue_raw(dsn, "t-sleep", {"seconds": 2}, max_attempts=2)
    wait_status(dsn, run_id, {"running"}, 20)
    b = workers.start(["t-sleep"], "--lease", "2", name="b")
    workers.wait_registered(b)
    killed_at = time.monotonic()
    a.signal(signal.SIGKILL)
    a.wait(10)

    abandoned = wait_status(dsn, run_id, {"abandoned"}, 2 + 1 + 3)
    assert time.monotonic() - killed_at <= 2 + 1 + 3
    assert abandoned["worker_id"] == "a" and abandoned["error_type"] == "LeaseExpired"
    retry_id = wait_until(
        lambda: scalar(dsn, "SELECT id FROM pgjobs.runs WHERE retry_of = %s", run_id),
        10,
        "the retry",
    )
    retry = wait_status(dsn, retry_id, {"succeeded", "failed", "abandoned"}, 20)
    assert retry["status"] == "succeeded" and retry["worker_id"] == "b" and retry["attempt"] == 2
    assert rows(dsn, "SELECT status, count(*) FROM pgjobs.runs GROUP BY 1 ORDER BY 1") == [
        ("abandoned", 1),
        ("succeeded", 1),
    ]
    assert b.stop() == 0


def test_sigterm_lets_a_running_job_finish_within_the_grace(dsn: str, workers: Workers) -> None:
    w = workers.start(["t-sleep"], "--grace", "10")
    workers.wait_registered(w)
    run_id = enqueue_raw(dsn, "t-sleep", {"seconds": 1.5})
    wait_status(dsn, run_id, {"running"}, 20)
    w.signal(signal.SIGTERM)
    assert w.wait(20) == 0, w.log()
    assert run_row(dsn, run_id)["status"] == "succeeded"
    assert scalar(dsn, "SELECT state FROM pgjobs.workers WHERE id = %s", w.id) == "stopped"


def test_sigterm_past_the_grace_hands_the_run_to_another_worker(dsn: str, workers: Workers) -> None:
    a = workers.start(["t-sleep"], "--grace", "0.5", name="a")
    workers.wait_registered(a)
    # Long enough to outlast b's start on a busy machine: the run must still be a's at SIGTERM.
    run_id = enqueue_raw(dsn, "t-sleep", {"seconds": 8})
    wait_status(dsn, run_id, {"running"}, 20)
    b = workers.start(["t-sleep"], name="b")
    workers.wait_registered(b)
    assert run_row(dsn, run_id)["status"] == "running", "the run ended before the SIGTERM"
    a.signal(signal.SIGTERM)
    assert a.wait(20) == 0, a.log()
    done = wait_status(dsn, run_id, {"succeeded", "failed"}, 30)
    assert done["status"] == "succeeded" and done["worker_id"] == "b"
    assert "handed 1 run(s) back to the queue" in a.log()
    assert scalar(dsn, "SELECT count(*) FROM pgjobs.runs") == 1
    assert b.stop() == 0


def test_workers_reconnect_after_their_connections_are_killed(dsn: str, workers: Workers) -> None:
    procs = [workers.start(["t-tick"]) for _ in range(2)]
    workers.wait_registered(*procs)
    wait_until(lambda: scalar(dsn, "SELECT count(*) FROM pgjobs.runs") >= 2, 20, "ticks")
    killed = scalar(
        dsn,
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    assert killed >= 2
    after = scalar(dsn, "SELECT now()")
    wait_succeeded_after(dsn, after, 3, 30, "ticks to resume")
    assert all(p.proc.poll() is None for p in procs)
    for p in procs:
        assert p.stop() == 0, p.log()
    assert (
        scalar(
            dsn,
            "SELECT count(*) FROM (SELECT scheduled_for FROM pgjobs.runs "
            "GROUP BY 1 HAVING count(*) > 1) d",
        )
        == 0
    )


@pytest.mark.parametrize(
    ("policy", "cap", "expected"),
    [
        ("coalesce", 100, 1),
        ("skip", 100, 0),
        ("backfill", 100, None),
        ("backfill", 4, 4),
    ],
)
def test_missed_ticks_follow_the_misfire_policy(
    dsn: str, workers: Workers, policy: str, cap: int, expected: int | None
) -> None:
    job = f"t-misfire-{policy}"
    env = {"PGJOBS_TEST_BACKFILL_CAP": str(cap)}
    first = workers.start([job], "--misfire-grace", "0.5", env=env)
    workers.wait_registered(first)
    wait_until(
        lambda: scalar(dsn, "SELECT count(*) FROM pgjobs.runs WHERE status = 'succeeded'"),
        20,
        "a first tick",
    )
    assert first.stop() == 0
    stopped_after = scalar(dsn, "SELECT max(scheduled_for) FROM pgjobs.runs")
    wait_until(
        lambda: scalar(dsn, "SELECT now() > %s + interval '6.6 seconds'", stopped_after),
        20,
        "six ticks to pass with no worker",
    )
    second = workers.start([job], "--misfire-grace", "0.5", env=env)
    workers.wait_registered(second)
    restarted_at = wait_until(
        lambda: scalar(
            dsn, "SELECT min(created_at) FROM pgjobs.runs WHERE scheduled_for > %s", stopped_after
        ),
        20,
        "the first tick after the restart",
    )
    wait_until(
        lambda: scalar(dsn, "SELECT count(*) FROM pgjobs.runs WHERE status = 'queued'") == 0,
        20,
        "the queue to drain",
    )
    assert second.stop() == 0
    missed_ticks = int((restarted_at.timestamp() - 0.5) - stopped_after.timestamp())
    in_window = scalar(
        dsn,
        "SELECT count(*) FROM pgjobs.runs WHERE scheduled_for > %s "
        "AND scheduled_for < %s - interval '0.5 seconds'",
        stopped_after,
        restarted_at,
    )
    assert missed_ticks >= 6
    assert in_window == (missed_ticks if expected is None else expected)


@pytest.mark.serial  # times a delay
def test_a_timed_out_job_is_recorded_as_timed_out(dsn: str, workers: Workers) -> None:
    w = workers.start(["t-timeout", "t-sleep-sync"])
    workers.wait_registered(w)
    async_run = enqueue_raw(dsn, "t-timeout")
    sync_run = enqueue_raw(dsn, "t-sleep-sync")
    for run_id in (async_run, sync_run):
        row = wait_status(dsn, run_id, {"timed_out", "succeeded", "failed"}, 20)
        assert row["status"] == "timed_out"
        assert row["error_type"] == "TimeoutError"
        assert 0.45 <= float(row["duration_seconds"]) < 2.0  # type: ignore[arg-type]
    assert w.stop() == 0, w.log()


@pytest.mark.serial  # times a delay
def test_a_failing_job_is_retried_with_backoff_until_attempts_run_out(
    dsn: str, workers: Workers
) -> None:
    w = workers.start(["t-fail"])
    workers.wait_registered(w)
    first = enqueue_raw(dsn, "t-fail", max_attempts=3)
    wait_until(
        lambda: scalar(dsn, "SELECT count(*) FROM pgjobs.runs WHERE status = 'failed'") == 3,
        30,
        "three failed attempts",
    )
    attempts = rows(
        dsn,
        "SELECT id, attempt, retry_of, trigger, error_type, error_message, "
        "error_traceback, created_at, scheduled_for, finished_at "
        "FROM pgjobs.runs ORDER BY attempt",
    )
    assert [a[1] for a in attempts] == [1, 2, 3]
    assert attempts[0][0] == first and attempts[1][2] == first and attempts[2][2] == attempts[1][0]
    assert [a[3] for a in attempts] == ["enqueue", "retry", "retry"]
    assert all(a[4] == "RuntimeError" for a in attempts)
    assert attempts[2][5] == "boom on attempt 3"
    assert "Traceback" in attempts[0][6] and "boom on attempt 1" in attempts[0][6]
    # backoff 0.2 s then 0.4 s (no jitter), measured from the failure to the retry's due time
    waits = [(attempts[i + 1][8] - attempts[i][9]).total_seconds() for i in range(2)]
    assert 0.15 <= waits[0] <= 0.35 and 0.35 <= waits[1] <= 0.6, waits
    assert scalar(dsn, "SELECT count(*) FROM pgjobs.runs WHERE status = 'queued'") == 0
    assert w.stop() == 0


def test_jobs_use_the_workers_pools_and_see_payload_and_parameters(
    dsn: str, workers: Workers
) -> None:
    w = workers.start(["t-sync-db", "t-async-db", "t-echo"])
    workers.wait_registered(w)
    sync_run = enqueue_raw(dsn, "t-sync-db")
    async_run = enqueue_raw(dsn, "t-async-db")
    echo_run = int(
        scalar(
            dsn,
            "INSERT INTO pgjobs.runs (job, trigger, payload, parameters) "
            "VALUES ('t-echo', 'manual', '{\"n\": 7}', '{\"mode\": \"fast\"}') RETURNING id",
        )
    )
    sync_row = wait_status(dsn, sync_run, {"succeeded", "failed"}, 20)
    assert sync_row["status"] == "succeeded" and sync_row["data"] == {"value": 42}
    async_row = wait_status(dsn, async_run, {"succeeded", "failed"}, 20)
    assert async_row["status"] == "succeeded" and async_row["data"] == {"value": 42}
    assert async_row["items_processed"] == 1 and async_row["items_failed"] == 0
    echo = wait_status(dsn, echo_run, {"succeeded", "failed"}, 20)
    assert echo["data"] == {
        "payload": {"n": 7},
        "parameters": {"mode": "fast"},
        "trigger": "manual",
    }
    assert w.stop() == 0


def test_a_late_finisher_cannot_overwrite_a_reaped_run(dsn: str, workers: Workers) -> None:
    w = workers.start(["t-sleep"], "--lease", "3")
    workers.wait_registered(w)
    run_id = enqueue_raw(dsn, "t-sleep", {"seconds": 2})
    wait_status(dsn, run_id, {"running"}, 20)
    # Another worker's reaper found the lease expired while the job was still running.
    scalar(
        dsn,
        "UPDATE pgjobs.runs SET status = 'abandoned', finished_at = now(), "
        "error_type = 'LeaseExpired' WHERE id = %s RETURNING id",
        run_id,
    )
    wait_until(lambda: "no longer ours" in w.log(), 20, "the worker to try to finish")
    row = run_row(dsn, run_id)
    assert row["status"] == "abandoned" and row["message"] is None
    assert w.stop() == 0


@pytest.mark.serial  # times a delay
def test_without_listen_an_enqueued_run_starts_within_the_poll_interval(
    dsn: str, workers: Workers
) -> None:
    w = workers.start(["t-echo"], "--no-listen", "--poll-interval", "0.5")
    workers.wait_registered(w)
    time.sleep(0.6)  # let the worker fall asleep on its poll timer
    run_id = enqueue_raw(dsn, "t-echo")
    row = wait_status(dsn, run_id, {"succeeded", "failed"}, 5)
    lag = (row["started_at"] - row["created_at"]).total_seconds()  # type: ignore[operator]
    assert row["status"] == "succeeded" and lag <= 0.5 + 0.3, lag
    assert (
        scalar(
            dsn,
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND query ILIKE 'LISTEN%%'",
        )
        == 0
    )
    assert w.stop() == 0


def test_a_job_no_live_worker_registers_stops_ticking_and_shows_so(
    dsn: str, workers: Workers
) -> None:
    old = workers.start(["t-tick"], name="old")
    workers.wait_registered(old)
    wait_until(lambda: scalar(dsn, "SELECT count(*) FROM pgjobs.runs"), 20, "a first tick")
    assert scalar(dsn, "SELECT registered FROM pgjobs.job_status WHERE name = 't-tick'") is True
    assert old.stop() == 0
    new = workers.start(["t-echo"], name="new")  # the new code no longer has t-tick
    workers.wait_registered(new)
    stopped_at = scalar(dsn, "SELECT now()")
    wait_until(
        lambda: scalar(dsn, "SELECT now() > %s + interval '2.5 seconds'", stopped_at),
        10,
        "a few ticks of time",
    )
    assert scalar(dsn, "SELECT count(*) FROM pgjobs.runs WHERE created_at > %s", stopped_at) == 0
    status = rows(dsn, "SELECT name, registered FROM pgjobs.job_status ORDER BY name")
    assert ("t-tick", False) in status and ("t-echo", True) in status
    assert scalar(dsn, "SELECT count(*) FROM pgjobs.jobs WHERE name = 't-tick'") == 1
    assert new.stop() == 0


def test_a_rolling_deploy_with_a_changed_schedule_does_not_flap(dsn: str, workers: Workers) -> None:
    old = workers.start(["t-tick"], name="old")
    workers.wait_registered(old)
    new = workers.start(["t-tick"], name="new", env={"PGJOBS_TEST_SCHEDULE": "*/2 * * * * *"})
    workers.wait_registered(new)
    deployed_at = scalar(dsn, "SELECT now()")
    assert scalar(dsn, "SELECT schedule FROM pgjobs.jobs WHERE name = 't-tick'") == "*/2 * * * * *"
    wait_succeeded_after(dsn, deployed_at, 4, 20, "four ticks")
    seconds = [
        t.second
        for (t,) in rows(
            dsn, "SELECT scheduled_for FROM pgjobs.runs WHERE scheduled_for > %s", deployed_at
        )
    ]
    assert all(s % 2 == 0 for s in seconds), f"the old schedule ticked: {seconds}"
    assert scalar(dsn, "SELECT schedule FROM pgjobs.jobs WHERE name = 't-tick'") == "*/2 * * * * *"
    for p in (old, new):
        assert p.stop() == 0, p.log()


def test_a_worker_taken_for_dead_registers_again_and_a_stopped_one_leaves_nothing(
    dsn: str, workers: Workers
) -> None:
    w = workers.start(["t-tick"], "--lease", "1.5")
    workers.wait_registered(w)
    # A worker that died: its heartbeat expired, its registrations are still there (one
    # statement: a reap between two would see the worker without them).
    scalar(
        dsn,
        "WITH w AS (INSERT INTO pgjobs.workers (id, host, pid, version, queues, concurrency, "
        "expires_at) VALUES ('gone', 'h', 1, 'v', '{default}', 1, now()) RETURNING id) "
        "INSERT INTO pgjobs.worker_jobs (worker_id, job) SELECT id, 't-tick' FROM w RETURNING job",
    )
    wait_until(
        lambda: scalar(dsn, "SELECT state FROM pgjobs.workers WHERE id = 'gone'") == "dead",
        10,
        "the reaper to mark the dead worker",
    )
    assert scalar(dsn, "SELECT count(*) FROM pgjobs.worker_jobs WHERE worker_id = 'gone'") == 0
    # What a reaper does to a worker that was only late (a long network blip).
    scalar(
        dsn,
        "WITH dead AS (UPDATE pgjobs.workers SET state = 'dead' WHERE id = %s "
        "RETURNING id) DELETE FROM pgjobs.worker_jobs wj USING dead "
        "WHERE wj.worker_id = dead.id RETURNING wj.job",
        w.id,
    )
    revived_at = scalar(dsn, "SELECT now()")
    wait_succeeded_after(dsn, revived_at, 2, 15, "ticks after the worker registered again")
    assert scalar(dsn, "SELECT state FROM pgjobs.workers WHERE id = %s", w.id) == "running"
    assert scalar(dsn, "SELECT count(*) FROM pgjobs.worker_jobs WHERE worker_id = %s", w.id) >= 1
    assert "registering its jobs again" in w.log()
    assert w.stop() == 0, w.log()
    assert scalar(dsn, "SELECT count(*) FROM pgjobs.worker_jobs") == 0
    assert scalar(dsn, "SELECT state FROM pgjobs.workers WHERE id = %s", w.id) == "stopped"
