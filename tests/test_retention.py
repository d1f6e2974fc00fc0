"""Retention against a real Postgres: what a prune deletes and what it must keep, dry runs,
batches that commit on their own, durations, and the built-in job pgjobs-prune-runs."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

import pgjobs
from pgjobs import CancelSignal, ConfigError, JobContext
from pgjobs.builtin import PruneRuns
from pgjobs.registry import load_registry
from pgjobs.retention import parse_duration, prune_runs
from tests.workers import Workers, rows, scalar, wait_until, worker_pool

OLD = "now() - interval '40 days'"
RECENT = "now() - interval '1 day'"

# (name, job, status, created) in id order: the history a prune is run against.
HISTORY = [
    ("a1", "x-a", "succeeded", OLD),
    ("a2", "x-a", "failed", OLD),
    ("a3", "x-a", "succeeded", OLD),  # latest finished run of x-a: kept
    ("a4", "x-a", "queued", OLD),  # queued: kept
    ("a5", "x-a", "running", OLD),  # running: kept
    ("b1", "x-b", "succeeded", OLD),  # the only run of x-b: kept
    ("c1", "x-c", "timed_out", OLD),
    ("c2", "x-c", "succeeded", RECENT),  # recent: kept
    ("d1", "x-d", "skipped", OLD),
    ("d2", "x-d", "abandoned", OLD),  # latest finished run of x-d (d3 is queued): kept
    ("d3", "x-d", "queued", RECENT),
]
PRUNED = {"a1", "a2", "c1", "d1"}


@pytest.fixture
def history(conn: psycopg.Connection[Any]) -> dict[str, int]:
    """The runs of :data:`HISTORY`, by name."""
    ids = {}
    for name, job, status, created in HISTORY:
        row = conn.execute(
            f"INSERT INTO pgjobs.runs (job, trigger, status, created_at, message) "
            f"VALUES (%s, 'enqueue', %s, {created}, %s) RETURNING id",
            [job, status, name],
        ).fetchone()
        assert row is not None
        ids[name] = row[0]
    return ids


def remaining(dsn: str) -> set[str]:
    return {message for (message,) in rows(dsn, "SELECT message FROM pgjobs.runs")}


# -- prune_runs ---------------------------------------------------------------------------------


@pytest.mark.usefixtures("history")
def test_prune_keeps_queued_running_and_each_jobs_latest_run_and_deletes_the_rest(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    assert prune_runs(conn, "pgjobs", timedelta(days=30)) == len(PRUNED)
    assert remaining(dsn) == {name for name, *_ in HISTORY} - PRUNED
    assert prune_runs(conn, "pgjobs", timedelta(days=30)) == 0


@pytest.mark.usefixtures("history")
def test_a_dry_run_counts_and_deletes_nothing(dsn: str, conn: psycopg.Connection[Any]) -> None:
    assert prune_runs(conn, "pgjobs", timedelta(days=30), dry_run=True) == len(PRUNED)
    assert len(remaining(dsn)) == len(HISTORY)


@pytest.mark.usefixtures("history")
def test_the_cutoff_is_older_than_ago(dsn: str, conn: psycopg.Connection[Any]) -> None:
    assert prune_runs(conn, "pgjobs", timedelta(days=41)) == 0
    # Down to a few hours, the recent c2 is older than the cutoff, yet the latest run of x-c.
    assert prune_runs(conn, "pgjobs", timedelta(hours=12)) == len(PRUNED)
    assert "c2" in remaining(dsn)


@pytest.mark.usefixtures("history")
def test_each_batch_commits_on_its_own(dsn: str) -> None:
    with psycopg.connect(dsn) as conn:  # not autocommit, no transaction open
        assert prune_runs(conn, "pgjobs", timedelta(days=30), batch=1) == len(PRUNED)
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        assert remaining(dsn) == {name for name, *_ in HISTORY} - PRUNED


@pytest.mark.usefixtures("history")
def test_a_prune_inside_the_callers_transaction_is_undone_by_its_rollback(dsn: str) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute("SELECT 1")  # a transaction is open
        assert prune_runs(conn, "pgjobs", timedelta(days=30), batch=2) == len(PRUNED)
        conn.rollback()
    assert len(remaining(dsn)) == len(HISTORY)


@pytest.mark.usefixtures("history")
def test_stop_ends_a_prune_between_batches(conn: psycopg.Connection[Any]) -> None:
    calls = []

    def stop() -> bool:
        calls.append(1)
        return len(calls) > 2

    assert prune_runs(conn, "pgjobs", timedelta(days=30), batch=1, stop=stop) == 2


def test_negative_ages_and_empty_batches_are_refused(conn: psycopg.Connection[Any]) -> None:
    with pytest.raises(ConfigError, match="older_than must not be negative"):
        prune_runs(conn, "pgjobs", timedelta(days=-1))
    with pytest.raises(ConfigError, match="batch must be at least 1, got 0"):
        prune_runs(conn, "pgjobs", timedelta(days=1), batch=0)


# -- durations ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30d", timedelta(days=30)),
        ("12h", timedelta(hours=12)),
        ("90m", timedelta(minutes=90)),
        ("45s", timedelta(seconds=45)),
        ("2w", timedelta(weeks=2)),
        (" 0s ", timedelta(0)),
    ],
)
def test_parse_duration_reads_a_number_and_a_unit(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["1x", "", "d", "30", "-1d", "1.5h", "1h30m", "30 days"])
def test_parse_duration_refuses_anything_else_in_one_line(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_duration(text)
    assert str(info.value) == (
        f"invalid duration {text!r}: use a number followed by s, m, h, d or w"
    )


def test_a_duration_too_long_for_a_timedelta_is_refused() -> None:
    with pytest.raises(ConfigError, match="too long"):
        parse_duration("99999999999w")


# -- the built-in job ---------------------------------------------------------------------------


def test_load_registry_registers_the_builtin_prune_job() -> None:
    registry = load_registry("tests.worker_apps.app:extension", entry_points=False)
    prune = registry.get("pgjobs-prune-runs")
    assert prune.extension == "pgjobs"
    assert (prune.schedule, prune.timezone, prune.enabled) == ("0 17 3 * * *", "UTC", True)
    assert not prune.is_async
    assert registry.names()[-1] == "pgjobs-prune-runs"
    assert "pgjobs-prune-runs" not in load_registry(
        "tests.worker_apps.app:extension", entry_points=False, builtin=False
    )


def test_the_profile_can_disable_and_reparameterise_the_builtin_job(tmp_path: Path) -> None:
    profile = tmp_path / "profile.yaml"
    profile.write_text(
        "scheduler:\n"
        "  jobs:\n"
        "    - job: pgjobs-prune-runs\n"
        "      enabled: false\n"
        "      schedule: '0 30 4 * * *'\n"
        "      parameters: {older_than: 90d}\n"
    )
    prune = load_registry("tests.worker_apps.app:extension", str(profile), entry_points=False).get(
        "pgjobs-prune-runs"
    )
    assert prune.enabled is False
    assert prune.schedule == "0 30 4 * * *"
    assert prune.parameters == {"older_than": "90d"}


@pytest.fixture
def workers(dsn: str, tmp_path: Path) -> Iterator[Workers]:
    with worker_pool(dsn, tmp_path) as pool:
        yield pool


@pytest.mark.usefixtures("history")
def test_a_worker_runs_the_builtin_job_with_the_profiles_retention(
    dsn: str, workers: Workers, tmp_path: Path
) -> None:
    profile = tmp_path / "profile.yaml"
    # The old runs of HISTORY are 40 days old: older than the profile's 39 days.
    profile.write_text(
        "scheduler:\n  jobs:\n    - job: pgjobs-prune-runs\n      parameters: {older_than: 39d}\n"
    )
    workers.wait_registered(workers.start(["t-echo"], "--profile", str(profile)))
    with psycopg.connect(dsn) as conn:
        run_id = pgjobs.enqueue_sync(conn, "pgjobs-prune-runs")
        conn.commit()

    def finished() -> Any:
        status = scalar(dsn, "SELECT status FROM pgjobs.runs WHERE id = %s", run_id)
        return status if status not in ("queued", "running") else None

    assert wait_until(finished, 20, "the prune run to finish") == "succeeded", workers.logs()
    message, processed, data = rows(
        dsn, "SELECT message, items_processed, data FROM pgjobs.runs WHERE id = %s", run_id
    )[0]
    assert message == f"pruned {len(PRUNED)} finished runs older than 39d"
    assert processed == len(PRUNED)
    assert data == {"older_than": "39d", "deleted": len(PRUNED)}
    assert remaining(dsn) == ({name for name, *_ in HISTORY} - PRUNED) | {message}


def test_the_builtin_job_refuses_a_bad_retention() -> None:
    ctx = JobContext(
        db_pool=None,
        run_id=1,
        job_name="pgjobs-prune-runs",
        scheduled_for=datetime.now(UTC),
        attempt=1,
        trigger="manual",
        payload=None,
        worker_id="here",
        log=logging.LoggerAdapter(logging.getLogger("test")),
        cancel=CancelSignal(),
        parameters={"older_than": "a month"},
    )
    with pytest.raises(ConfigError, match="invalid duration 'a month'"):
        PruneRuns().execute(ctx)
