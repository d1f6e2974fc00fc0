"""The bundled example extension (``examples/``): valid in code, overridden by its profile, and
both of its jobs succeed in a real worker process."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

import pgjobs
from pgjobs.registry import Registry, load_registry
from tests.workers import ROOT, rows, scalar, wait_until

EXAMPLES = ROOT / "examples"
APP = "my_extension:extension"


@pytest.fixture
def examples_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(EXAMPLES))


def test_the_example_jobs_are_valid_in_code(examples_on_path: None) -> None:
    registry = load_registry(APP, None, entry_points=False)

    assert _example_jobs(registry) == ["my-extension-cleanup", "my-extension-report"]
    cleanup, report = registry.get("my-extension-cleanup"), registry.get("my-extension-report")
    assert (cleanup.schedule, cleanup.schedule_source, cleanup.is_async) == (
        "0 0 * * * *",
        "code",
        True,
    )
    assert (report.schedule, report.schedule_source, report.is_async) == (
        "0 */15 * * * *",
        "code",
        False,
    )


def test_the_example_profile_overrides_the_schedules(examples_on_path: None) -> None:
    registry = load_registry(APP, str(EXAMPLES / "profile.yaml"), entry_points=False)

    cleanup, report = registry.get("my-extension-cleanup"), registry.get("my-extension-report")
    assert (cleanup.schedule, cleanup.schedule_source, cleanup.code_schedule) == (
        "*/5 * * * * *",
        "profile",
        "0 0 * * * *",
    )
    assert (report.schedule, report.schedule_source, report.code_schedule) == (
        "*/7 * * * * *",
        "profile",
        "0 */15 * * * *",
    )
    assert cleanup.parameters == {"retention_days": "30", "seed_expired": "3"}
    assert report.parameters == {"window": "10m"}


def test_the_example_profile_names_its_app(examples_on_path: None) -> None:
    registry = load_registry(None, str(EXAMPLES / "profile.yaml"), entry_points=False)

    assert _example_jobs(registry) == ["my-extension-cleanup", "my-extension-report"]


def _example_jobs(registry: Registry) -> list[str]:
    return [d.name for d in registry if d.extension == "my-extension"]


@pytest.fixture
def example_worker(tmp_path: Path, dsn: str) -> Iterator[subprocess.Popen[bytes]]:
    """A worker running the example extension with the profile written to ``tmp_path``."""
    log_path = tmp_path / "worker.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGJOBS_")}
    env["PYTHONPATH"] = str(EXAMPLES)
    command = [
        sys.executable, "-m", "pgjobs", "worker", "--dsn", dsn, "--app", APP,
        "--profile", str(tmp_path / "profile.yaml"), "--poll-interval", "0.5", "--grace", "5",
    ]  # fmt: skip
    with log_path.open("wb") as log:
        proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield proc
    except BaseException:
        print(log_path.read_text(errors="replace"))
        raise
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _profile(tmp_path: Path, cleanup: str, report: str) -> None:
    (tmp_path / "profile.yaml").write_text(
        "scheduler:\n"
        "  jobs:\n"
        f"    - {{job: my-extension-cleanup, {cleanup}}}\n"
        f"    - {{job: my-extension-report, {report}}}\n"
    )


def _execute(dsn: str, statements: str, *params: object) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(statements, params or None)


def _first_finished_run(dsn: str, job: str, trigger: str = "schedule") -> tuple[object, ...]:
    def finished() -> list[tuple[object, ...]]:
        return rows(
            dsn,
            "SELECT status, message, data, items_processed, items_failed, error_message"
            " FROM pgjobs.runs WHERE job = %s AND trigger = %s"
            " AND status NOT IN ('queued', 'running') ORDER BY id LIMIT 1",
            job,
            trigger,
        )

    return wait_until(finished, 20, f"a finished run of {job}", interval=0.2)[0]


def test_the_cleanup_job_deletes_expired_items(
    tmp_path: Path, dsn: str, request: pytest.FixtureRequest
) -> None:
    _profile(
        tmp_path,
        cleanup='schedule: "* * * * * *", parameters: {retention_days: 30}',
        report="enabled: false",
    )
    _execute(
        dsn,
        "CREATE TABLE my_items (id bigserial PRIMARY KEY, created_at timestamptz NOT NULL"
        " DEFAULT now()); INSERT INTO my_items (created_at) SELECT now() - interval '31 days'"
        " FROM generate_series(1, 5); INSERT INTO my_items DEFAULT VALUES",
    )
    request.getfixturevalue("example_worker")

    status, message, data, *_ = _first_finished_run(dsn, "my-extension-cleanup")

    assert (status, message, data) == ("succeeded", "Deleted 5 items", {"deleted": 5})
    assert scalar(dsn, "SELECT count(*) FROM my_items") == 1


def test_the_cleanup_job_creates_its_table_and_seeds_expired_items(
    tmp_path: Path, dsn: str, request: pytest.FixtureRequest
) -> None:
    _profile(
        tmp_path,
        cleanup='schedule: "* * * * * *", parameters: {seed_expired: 4}',
        report="enabled: false",
    )
    request.getfixturevalue("example_worker")

    status, message, data, *_ = _first_finished_run(dsn, "my-extension-cleanup")

    assert (status, message, data) == ("succeeded", "Deleted 4 items", {"deleted": 4})


def test_the_report_job_counts_finished_runs_with_stats(
    tmp_path: Path, dsn: str, request: pytest.FixtureRequest
) -> None:
    _profile(
        tmp_path,
        cleanup="enabled: false",
        report='schedule: "* * * * * *", parameters: {window: 1h}',
    )
    # Runs of another job: 3 succeeded and 2 failed in the window, 1 failed before it.
    _execute(
        dsn,
        "INSERT INTO pgjobs.runs (job, trigger, status, scheduled_for)"
        " SELECT 'other-job', 'manual', s, now() - interval '5 minutes'"
        " FROM unnest(ARRAY['succeeded', 'succeeded', 'succeeded', 'failed', 'failed']) s;"
        " INSERT INTO pgjobs.runs (job, trigger, status, scheduled_for)"
        " VALUES ('other-job', 'manual', 'failed', now() - interval '2 hours')",
    )
    request.getfixturevalue("example_worker")

    status, message, data, processed, failed, error = _first_finished_run(
        dsn, "my-extension-report"
    )

    assert (status, error) == ("succeeded", None)
    assert message == "runs in the last 1h: 5, failed: 2"
    assert data == {"window": "1h", "by_status": {"failed": 2, "succeeded": 3}}
    assert (processed, failed) == (5, 2)


def test_an_enqueued_report_takes_its_window_from_the_payload(
    tmp_path: Path, dsn: str, request: pytest.FixtureRequest
) -> None:
    _profile(tmp_path, cleanup="enabled: false", report="parameters: {window: 1h}")
    _execute(
        dsn,
        "INSERT INTO pgjobs.runs (job, trigger, status, scheduled_for)"
        " VALUES ('other-job', 'manual', 'succeeded', now() - interval '2 hours')",
    )
    request.getfixturevalue("example_worker")
    wait_until(
        lambda: scalar(dsn, "SELECT count(*) FROM pgjobs.jobs WHERE name = 'my-extension-report'"),
        20,
        "the report job to be registered",
    )
    with psycopg.connect(dsn) as conn:
        pgjobs.enqueue_sync(conn, "my-extension-report", {"window": "3h"})

    status, message, data, processed, failed, _ = _first_finished_run(
        dsn, "my-extension-report", "enqueue"
    )

    assert (status, message) == ("succeeded", "runs in the last 3h: 1, failed: 0")
    assert data == {"window": "3h", "by_status": {"succeeded": 1}}
    assert (processed, failed) == (1, 0)
