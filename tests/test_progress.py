"""A run's progress: ``ctx.progress(done, total, message)`` from async and sync jobs in a real
worker, seen in SQL while the run runs and kept when it ends; a flood of reports costs a few
writes a second; hostile messages are stored clean; bad arguments fail the run; ``runs show``,
the dashboard's run page and ``run_history`` show it."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

import pgjobs
from pgjobs.job import MAX_BIGINT, MESSAGE_MAX, ProgressReport, clean_message, progress_report
from pgjobs.named_queries import Queries
from pgjobs.worker.progress import PROGRESS_INTERVAL, ProgressReports
from tests.cli import invoke
from tests.test_dashboard import call, serving
from tests.workers import WorkerProcess, Workers, rows, scalar, wait_until, worker_pool

APP = "tests.worker_apps.progress:extension"

# Every write of a run's progress, as the database saw it: one row per run per statement.
COUNT_WRITES = """
CREATE TABLE public.progress_writes (
    run_id bigint, done bigint, at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE FUNCTION public.log_progress_write() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.progress_writes (run_id, done) VALUES (NEW.id, NEW.progress_done);
    RETURN NEW;
END $$;
CREATE TRIGGER log_progress_write AFTER UPDATE OF progress_at ON pgjobs.runs FOR EACH ROW
    WHEN (OLD.progress_at IS DISTINCT FROM NEW.progress_at)
    EXECUTE FUNCTION public.log_progress_write();
"""


@pytest.fixture
def workers(dsn: str, tmp_path: Path) -> Iterator[Workers]:
    with worker_pool(dsn, tmp_path) as pool:
        yield pool


def start(workers: Workers, *args: str) -> WorkerProcess:
    proc = workers.start([], *args, app=APP)
    workers.wait_registered(proc)
    return proc


def enqueue(dsn: str, job: str, payload: dict[str, Any]) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return pgjobs.enqueue_sync(conn, job, payload)


def run_row(dsn: str, run_id: int) -> dict[str, Any]:
    with psycopg.connect(dsn, row_factory=psycopg.rows.dict_row) as conn:
        row = conn.execute("SELECT * FROM pgjobs.run_history WHERE id = %s", [run_id]).fetchone()
    assert row is not None
    return row


def wait_ended(dsn: str, *run_ids: int, timeout: float = 30) -> None:
    wait_until(
        lambda: (
            scalar(
                dsn,
                "SELECT count(*) FROM pgjobs.runs WHERE id = ANY(%s) AND finished_at IS NOT NULL",
                list(run_ids),
            )
            == len(run_ids)
        ),
        timeout,
        f"runs {run_ids} to end",
    )


# -- in a real worker ---------------------------------------------------------------------------


def test_progress_of_async_and_sync_jobs_is_seen_while_they_run_and_kept_when_they_end(
    dsn: str, workers: Workers, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    start(workers)
    async_run = enqueue(dsn, "p-steps", {"steps": 3, "total": 10, "release": str(release)})
    sync_run = enqueue(dsn, "p-steps-sync", {"steps": 7, "total": 20, "release": str(release)})

    def reported() -> bool:
        return bool(
            scalar(
                dsn,
                "SELECT count(*) = 2 FROM pgjobs.run_history"
                " WHERE id = ANY(%s) AND status = 'running' AND progress_at IS NOT NULL",
                [async_run, sync_run],
            )
        )

    wait_until(reported, 15, "both runs to report progress while running")
    running = {run_id: run_row(dsn, run_id) for run_id in (async_run, sync_run)}
    assert [
        (r["progress_done"], r["progress_total"], r["progress_message"]) for r in running.values()
    ] == [(3, 10, "step 3"), (7, 20, "step 7")]
    assert running[async_run]["progress_at"] >= running[async_run]["started_at"]

    shown = invoke(dsn, "runs", "show", str(async_run))
    assert shown.exit_code == 0, shown.output
    assert re.search(r"^progress\s+3 of 10 \(30%\) — step 3, (now|\d+s ago)$", shown.stdout, re.M)
    as_json = invoke(dsn, "runs", "show", str(sync_run), "--json")
    assert '"progress_done": 7' in as_json.stdout and '"progress_total": 20' in as_json.stdout

    with serving(dsn) as server:
        page = call(server, f"/runs/{async_run}").text
    assert '<progress value="3" max="10">' in page
    assert "3 of 10 (30%) — step 3" in page

    release.touch()
    wait_ended(dsn, async_run, sync_run)
    # The last report, made just before each job returned, is on its ended run.
    for run_id, total in ((async_run, 10), (sync_run, 20)):
        ended = run_row(dsn, run_id)
        assert ended["status"] == "succeeded", ended
        assert (ended["progress_done"], ended["progress_total"]) == (total, total)
        assert ended["progress_message"] == "all done"
    shown = invoke(dsn, "runs", "show", str(sync_run))
    assert re.search(r"^progress\s+20 of 20 \(100%\) — all done, ", shown.stdout, re.M)


def test_a_hundred_thousand_reports_cost_a_few_writes_a_second_and_the_worker_stays_well(
    dsn: str, workers: Workers, tmp_path: Path
) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(COUNT_WRITES)
    proc = start(workers)
    flood = enqueue(dsn, "p-flood", {"calls": 100_000, "seconds": 2.0})
    flood_async = enqueue(dsn, "p-flood-async", {"calls": 100_000})
    wait_ended(dsn, flood, flood_async, timeout=60)

    for run_id in (flood, flood_async):
        ended = run_row(dsn, run_id)
        assert ended["status"] == "succeeded", ended
        assert (ended["progress_done"], ended["progress_total"]) == (100_000, 100_000)
        writes = rows(
            dsn, "SELECT done FROM public.progress_writes WHERE run_id = %s ORDER BY at", run_id
        )
        # One write per interval while it ran, plus the first and the one before its end (and
        # one for a loop that came late to an interval and early to the next).
        allowed = ended["duration_seconds"] / PROGRESS_INTERVAL + 3
        assert 1 <= len(writes) <= allowed, (len(writes), ended["duration_seconds"])
        assert writes[-1] == (100_000,)
        assert [w[0] for w in writes] == sorted(w[0] for w in writes)  # latest report wins
    # The sync job ran for two seconds: its progress was written while it ran, not only at its end.
    assert scalar(dsn, "SELECT count(*) FROM public.progress_writes WHERE run_id = %s", flood) >= 2

    release = tmp_path / "release"
    release.touch()
    after = enqueue(dsn, "p-steps", {"steps": 1, "total": 1, "release": str(release)})
    wait_ended(dsn, after)
    assert run_row(dsn, after)["status"] == "succeeded"
    assert scalar(
        dsn,
        "SELECT state = 'running' AND heartbeat_at > now() - interval '5 seconds'"
        " FROM pgjobs.workers WHERE id = %s",
        proc.id,
    )
    assert "Traceback" not in proc.log() and "unexpected error" not in proc.log()


def test_hostile_messages_are_stored_cut_and_clean_and_the_run_succeeds(
    dsn: str, workers: Workers
) -> None:
    proc = start(workers)
    run_id = enqueue(dsn, "p-hostile", {})
    wait_ended(dsn, run_id)

    ended = run_row(dsn, run_id)
    assert ended["status"] == "succeeded", ended
    assert (ended["progress_done"], ended["progress_total"]) == (3, 3)
    message = ended["progress_message"]
    assert message.startswith("nullone \ufffdxxx") and message.endswith("…")
    assert len(message) == MESSAGE_MAX
    assert "Traceback" not in proc.log()


BAD_ARGUMENTS = [
    ([-1], "ValueError", f"progress: done must be from 0 to {MAX_BIGINT}, got -1"),
    ([1, -5], "ValueError", f"progress: total must be from 0 to {MAX_BIGINT}, got -5"),
    ([2**63], "ValueError", f"progress: done must be from 0 to {MAX_BIGINT}, got {2**63}"),
    (["3"], "TypeError", "progress: done must be an int, got str"),
    ([True], "TypeError", "progress: done must be an int, got bool"),
    ([1, 2.5], "TypeError", "progress: total must be an int, got float"),
    ([1, 2, 42], "TypeError", "progress: message must be a str or None, got int"),
]


def test_bad_arguments_fail_the_run_with_one_clear_error(dsn: str, workers: Workers) -> None:
    start(workers)
    bad = [
        (enqueue(dsn, "p-args", {"args": args}), kind, text) for args, kind, text in BAD_ARGUMENTS
    ]
    good = enqueue(dsn, "p-args", {"args": [0, None, None]})
    wait_ended(dsn, good, *(run_id for run_id, _, _ in bad))

    for run_id, kind, text in bad:
        ended = run_row(dsn, run_id)
        assert (ended["status"], ended["error_type"], ended["error_message"]) == (
            "failed",
            kind,
            text,
        )
        assert ended["progress_at"] is None
    accepted = run_row(dsn, good)
    assert accepted["status"] == "succeeded"
    assert (accepted["progress_done"], accepted["progress_total"]) == (0, None)


# -- the statement and the view ------------------------------------------------------------------


def test_record_progress_writes_only_running_runs_of_its_own_worker(
    conn: psycopg.Connection[Any],
) -> None:
    ids = [
        conn.execute(
            "INSERT INTO pgjobs.runs (job, trigger, status, worker_id) VALUES ('p-x', 'enqueue',"
            " %s, %s) RETURNING id",
            [status, worker],
        ).fetchone()[0]  # type: ignore[index]
        for status, worker in (("running", "w1"), ("succeeded", "w1"), ("running", "w2"))
    ]
    conn.execute(
        Queries()["record_progress"],
        {
            "worker": "w1",
            "skip": ids,
            "ids": ids,
            "done": [5, 5, 5],
            "total": [None, 9, 9],
            "message": ["mine", "ended", "another's"],
        },
    )
    stored = conn.execute(
        "SELECT progress_done, progress_total, progress_message FROM pgjobs.runs"
        " WHERE id = ANY(%s) ORDER BY id",
        [ids],
    ).fetchall()
    assert stored == [(5, None, "mine"), (None, None, None), (None, None, None)]


def test_record_progress_leaves_a_held_row_of_skip_for_later_and_waits_for_the_others(
    conn: psycopg.Connection[Any], dsn: str
) -> None:
    held, free = (
        conn.execute(
            "INSERT INTO pgjobs.runs (job, trigger, status, worker_id) VALUES ('p-x', 'enqueue',"
            " 'running', 'w1') RETURNING id"
        ).fetchone()[0]  # type: ignore[index]
        for _ in range(2)
    )
    query = Queries()["record_progress"]

    def record(skip: list[int]) -> list[int]:
        with psycopg.connect(dsn, autocommit=True) as worker:
            returned = worker.execute(
                query,
                {
                    "worker": "w1",
                    "skip": skip,
                    "ids": [held, free],
                    "done": [3, 4],
                    "total": [10, 10],
                    "message": [None, None],
                },
            ).fetchall()
            return [row[0] for row in returned]

    def done(run_id: int) -> object:
        return conn.execute(
            "SELECT progress_done FROM pgjobs.runs WHERE id = %s", [run_id]
        ).fetchone()[0]  # type: ignore[index]

    with psycopg.connect(dsn) as holder:
        holder.execute("SELECT 1 FROM pgjobs.runs WHERE id = %s FOR UPDATE", [held])
        assert record([held, free]) == [held]
        assert (done(held), done(free)) == (None, 4)
        # Not of `skip`, the held row is waited for (here, until the waiter's lock times out).
        with (
            psycopg.connect(dsn, autocommit=True) as worker,
            pytest.raises(psycopg.errors.LockNotAvailable),
        ):
            worker.execute("SET lock_timeout = '200ms'")
            worker.execute(
                query,
                {
                    "worker": "w1",
                    "skip": [],
                    "ids": [held],
                    "done": [3],
                    "total": [10],
                    "message": [None],
                },
            )
    assert record([held, free]) == []
    assert done(held) == 3


def test_run_history_has_the_progress_columns(conn: psycopg.Connection[Any]) -> None:
    cur = conn.execute("SELECT * FROM pgjobs.run_history LIMIT 0")
    assert [c.name for c in cur.description or []][-4:] == [
        "progress_done",
        "progress_total",
        "progress_message",
        "progress_at",
    ]


# -- the reports in memory ------------------------------------------------------------------------


def test_reports_keep_the_latest_of_each_run_from_many_threads() -> None:
    reports = ProgressReports()

    def report(run_id: int) -> None:
        for done in range(1, 5001):
            reports.report(run_id, done, 5000, None)

    threads = [threading.Thread(target=report, args=(run_id,)) for run_id in range(1, 9)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert len(reports) == 8
    taken = reports.take(owned={1, 2, 3})
    assert taken == [ProgressReport(i, 5000, 5000, None) for i in (1, 2, 3)]
    assert len(reports) == 0  # the reports of runs not owned any more are dropped


def test_reports_put_back_after_a_lost_connection_yield_to_newer_ones() -> None:
    reports = ProgressReports()
    reports.report(1, 1, None, "old")
    reports.report(2, 1, None, "old")
    taken = reports.take(owned={1, 2})
    reports.report(1, 2, None, "newer")
    reports.put_back(taken)
    assert reports.take(owned={1, 2}) == [
        ProgressReport(1, 2, None, "newer"),
        ProgressReport(2, 1, None, "old"),
    ]


@pytest.mark.parametrize(
    ("message", "stored"),
    [
        (None, None),
        ("copying", "copying"),
        ("a\x00b\x00", "ab"),
        ("lone \ud800 surrogate", "lone \ufffd surrogate"),
        ("x" * MESSAGE_MAX, "x" * MESSAGE_MAX),
        ("x" * (MESSAGE_MAX + 1), "x" * (MESSAGE_MAX - 1) + "…"),
        ("\x00" * 10_000_000, "…"),
        ("é" * 10_000_000, "é" * (MESSAGE_MAX - 1) + "…"),
    ],
)
def test_messages_are_cut_and_cleaned(message: str | None, stored: str | None) -> None:
    assert clean_message(message) == stored


def test_a_str_subclass_is_stored_as_plain_text_without_running_its_methods() -> None:
    class Loud(str):
        def __str__(self) -> str:
            raise RuntimeError("never called")

    assert type(progress_report(1, 1, None, Loud("quiet")).message) is str
