"""Runtime schedules ticked by real workers: added, altered and removed from SQL while they run,
each tick once, next to the job's own schedule at the same second.

``t-tick`` (overlap ``allow``) ticks every second by its own schedule; the tests add runtime
schedules to it with ``pgjobs.schedule()`` and read the runs back with SQL.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

import pgjobs
from tests.workers import rows, scalar, wait_until, worker_pool

TICKS = """
SELECT coalesce(schedule, 'default'), count(*), count(DISTINCT scheduled_for),
       min(scheduled_for), max(scheduled_for)
FROM pgjobs.runs
WHERE job = 't-tick' AND trigger = 'schedule'
GROUP BY 1
ORDER BY 1
"""


def ticks_of(dsn: str, schedule: str) -> list[datetime]:
    found = rows(
        dsn,
        "SELECT scheduled_for FROM pgjobs.runs WHERE job = 't-tick' AND trigger = 'schedule'"
        " AND schedule = %s ORDER BY 1",
        schedule,
    )
    return [row[0] for row in found]


def latest_tick(dsn: str, schedule: str) -> Any:
    return scalar(
        dsn,
        "SELECT max(scheduled_for) FROM pgjobs.runs WHERE job = 't-tick' AND schedule = %s",
        schedule,
    )


def test_schedules_added_altered_and_removed_from_sql_while_four_workers_run(
    dsn: str, tmp_path: Path
) -> None:
    with worker_pool(dsn, tmp_path) as workers:
        procs = [workers.start(["t-tick"]) for _ in range(4)]
        workers.wait_registered(*procs)
        with psycopg.connect(dsn, autocommit=True) as conn:
            for i in range(50):
                conn.execute(
                    "SELECT pgjobs.schedule('t-tick', '* * * * * *', name => %s)", [f"s{i:02}"]
                )
            wait_until(
                lambda: (
                    scalar(
                        dsn, "SELECT count(DISTINCT schedule) FROM pgjobs.runs WHERE job = 't-tick'"
                    )
                    == 50
                ),
                10,
                "every runtime schedule to tick",
            )
            row = conn.execute(
                "SELECT now(), pgjobs.unschedule('t-tick', 's00'),"
                " pgjobs.alter_schedule('t-tick', 's01', cron => '*/2 * * * * *')"
            ).fetchone()
            assert row is not None
            changed_at: datetime = row[0]
            assert row[1] is True
        # Four seconds of ticks after the change.
        wait_until(
            lambda: (latest_tick(dsn, "s49") or changed_at) >= changed_at + timedelta(seconds=4),
            15,
            "ticks after the change",
        )
        for p in procs:
            assert p.stop() == 0, p.log()

    found = {name: counts for name, *counts in rows(dsn, TICKS)}
    assert set(found) == {"default", *(f"s{i:02}" for i in range(50))}
    for name, (runs, distinct, first, last) in found.items():
        if name in ("s00", "s01"):
            continue
        # Every second from its first tick to its last, each once.
        assert runs == distinct == int((last - first).total_seconds()) + 1, name
    # Removed: no tick after the second it was removed in.
    assert ticks_of(dsn, "s00")[-1] <= changed_at + timedelta(seconds=1)
    # Altered: every second until the change, then even seconds from its next tick on.
    after = [t for t in ticks_of(dsn, "s01") if t > changed_at + timedelta(seconds=1)]
    assert len(after) >= 1
    assert all(t.second % 2 == 0 for t in after), after
    assert not scalar(dsn, "SELECT count(*) FROM pgjobs.runs WHERE status = 'failed'")


def test_a_cron_the_workers_cannot_use_is_reported_on_its_schedule(
    dsn: str, tmp_path: Path
) -> None:
    with worker_pool(dsn, tmp_path) as workers:
        workers.wait_registered(workers.start(["t-tick"]))
        with psycopg.connect(dsn, autocommit=True) as conn:
            # The database checks the expression's shape; second 99 is the workers' to refuse.
            conn.execute("SELECT pgjobs.schedule('t-tick', '99 * * * * *', name => 'bad')")
            error = wait_until(
                lambda: scalar(
                    dsn, "SELECT error FROM pgjobs.schedules WHERE job = 't-tick' AND name = 'bad'"
                ),
                10,
                "the workers to report the schedule's error",
            )
            assert "99" in error
            assert ticks_of(dsn, "bad") == []
            # Changed by hand, it is adopted: the error is cleared and it ticks.
            conn.execute(
                "UPDATE pgjobs.schedules SET cron = '* * * * * *' WHERE job = 't-tick'"
                " AND name = 'bad'"
            )
        wait_until(lambda: ticks_of(dsn, "bad"), 10, "the corrected schedule to tick")
        assert scalar(dsn, "SELECT error FROM pgjobs.schedules WHERE name = 'bad'") is None


def test_a_profile_schedule_ticks_is_kept_from_hand_edits_and_goes_with_the_profile(
    dsn: str, tmp_path: Path
) -> None:
    profile = tmp_path / "profile.yaml"
    profile.write_text(
        "scheduler:\n  jobs:\n    - job: t-tick\n      schedules:\n"
        "        eu: {schedule: '* * * * * *', payload: {region: eu}}\n"
    )
    with worker_pool(dsn, tmp_path) as workers:
        worker = workers.start(["t-tick"], "--profile", str(profile))
        workers.wait_registered(worker)
        wait_until(lambda: ticks_of(dsn, "eu"), 10, "the profile's schedule to tick")
        assert rows(dsn, "SELECT DISTINCT payload FROM pgjobs.runs WHERE schedule = 'eu'") == [
            ({"region": "eu"},)
        ]
        assert rows(dsn, "SELECT origin FROM pgjobs.schedules WHERE name = 'eu'") == [("profile",)]
        with psycopg.connect(dsn, autocommit=True) as conn:
            for statement in (
                "UPDATE pgjobs.schedules SET cron = '@daily' WHERE name = 'eu'",
                "DELETE FROM pgjobs.schedules WHERE name = 'eu'",
                "SELECT pgjobs.unschedule('t-tick', 'eu')",
                "SELECT pgjobs.schedule('t-tick', '@daily', name => 'eu')",
            ):
                with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match="profile"):
                    conn.execute(statement)
            # Its pause is the one thing kept at runtime.
            conn.execute("SELECT pgjobs.alter_schedule('t-tick', 'eu', paused => true)")
        assert rows(dsn, "SELECT cron, paused FROM pgjobs.schedules WHERE name = 'eu'") == [
            ("* * * * * *", True)
        ]
        assert worker.stop() == 0, worker.log()

        profile.write_text("scheduler:\n  jobs:\n    - job: t-tick\n")
        worker = workers.start(["t-tick"], "--profile", str(profile), name="w2")
        workers.wait_registered(worker)
        assert scalar(dsn, "SELECT count(*) FROM pgjobs.schedules") == 0
        assert worker.stop() == 0, worker.log()


@pytest.mark.serial  # times a delay
def test_a_new_schedule_reaches_a_sleeping_worker_by_notify(dsn: str, tmp_path: Path) -> None:
    # t-sleep has no schedule of its own, and the worker polls every 30 s: only the NOTIFY of
    # the new schedule can wake it for the first tick.
    with worker_pool(dsn, tmp_path) as workers:
        worker = workers.start(["t-sleep"], "--poll-interval", "30")
        workers.wait_registered(worker)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(
                "SELECT pgjobs.schedule('t-sleep', '* * * * * *', name => 'soon',"
                " payload => '{\"seconds\": 0}')"
            )
        wait_until(
            lambda: scalar(dsn, "SELECT count(*) FROM pgjobs.runs WHERE status = 'succeeded'"),
            5,
            "the new schedule's first run",
        )
        # Its first tick was made as it came: the second after the schedule was added.
        lag = scalar(
            dsn,
            "SELECT extract(epoch FROM min(r.created_at - r.scheduled_for)) FROM pgjobs.runs r",
        )
        assert lag < 1.0
        first = scalar(dsn, "SELECT min(scheduled_for) FROM pgjobs.runs")
        added = scalar(dsn, "SELECT created_at FROM pgjobs.schedules WHERE name = 'soon'")
        assert added < first <= added + timedelta(seconds=1)


def test_a_schedule_may_have_its_own_overlap_policy(dsn: str, tmp_path: Path) -> None:
    # t-slow-skip forbids overlap (its runs take 2.5 s, its own schedule ticks every second): its
    # schedule `free` allows it, so its ticks run alongside. t-sleep allows overlap: its schedule
    # `guarded` forbids it, so its ticks skip while one runs, and enqueued runs of t-sleep never
    # wait for the lock those ticks hold.
    with worker_pool(dsn, tmp_path) as workers:
        procs = [workers.start(["t-slow-skip", "t-sleep"], "--concurrency", "20") for _ in range(2)]
        workers.wait_registered(*procs)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(
                "SELECT pgjobs.schedule('t-slow-skip', '* * * * * *', name => 'free',"
                " overlap => 'allow')"
            )
            conn.execute(
                "SELECT pgjobs.schedule('t-sleep', '* * * * * *', name => 'guarded',"
                " overlap => 'skip', payload => '{\"seconds\": 2.5}')"
            )
            wait_until(
                lambda: scalar(
                    dsn,
                    "SELECT count(*) FROM pgjobs.runs WHERE schedule = 'guarded'"
                    " AND status = 'skipped'",
                ),
                15,
                "a guarded tick to be skipped",
            )
            # While a guarded tick holds t-sleep's lock (it has 1.5 s or more to go), enqueued
            # runs start at once.
            holder = wait_until(
                lambda: scalar(
                    dsn,
                    "SELECT l.run_id FROM pgjobs.run_locks l JOIN pgjobs.runs r ON r.id = l.run_id"
                    " WHERE l.job = 't-sleep' AND r.status = 'running'"
                    " AND r.started_at > now() - interval '1 second'",
                ),
                10,
                "a guarded tick to hold the lock",
            )
            enqueued = [
                pgjobs.enqueue_sync(conn, "t-sleep", payload={"seconds": 0}) for _ in range(3)
            ]
            wait_until(
                lambda: (
                    scalar(
                        dsn,
                        "SELECT count(*) FROM pgjobs.runs WHERE id = ANY(%s)"
                        " AND status = 'succeeded'",
                        enqueued,
                    )
                    == 3
                ),
                10,
                "the enqueued runs to run beside the guarded tick",
            )
            assert scalar(
                dsn,
                "SELECT max(e.started_at) < coalesce(h.finished_at, 'infinity')"
                " FROM pgjobs.runs e, pgjobs.runs h"
                " WHERE e.id = ANY(%s) AND h.id = %s GROUP BY h.finished_at",
                enqueued,
                holder,
            )
            wait_until(
                lambda: (
                    scalar(
                        dsn,
                        "SELECT count(*) FROM pgjobs.runs WHERE schedule = 'free'"
                        " AND status = 'succeeded'",
                    )
                    >= 3
                ),
                15,
                "free ticks to run",
            )
        for p in procs:
            assert p.stop() == 0, p.log()

    by_status = dict(
        rows(
            dsn,
            "SELECT coalesce(schedule, job) || ':' || status, count(*) FROM pgjobs.runs"
            " WHERE trigger = 'schedule' GROUP BY 1",
        )
    )
    assert "free:skipped" not in by_status, by_status
    assert by_status.get("t-slow-skip:skipped", 0) >= 1, by_status
    assert by_status.get("guarded:skipped", 0) >= 1, by_status
    # A free tick ran while a run of the job's own schedule was running.
    assert scalar(
        dsn,
        "SELECT count(*) FROM pgjobs.runs f JOIN pgjobs.runs o ON o.job = f.job"
        " AND o.schedule IS NULL AND o.status = 'succeeded'"
        " WHERE f.schedule = 'free' AND f.status = 'succeeded'"
        " AND f.started_at > o.started_at AND f.started_at < o.finished_at",
    )
