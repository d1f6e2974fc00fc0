"""Tests of the example extension, written with pgjobs' pytest fixtures.

From ``examples/``: ``python -m pytest tests``. ``PGJOBS_TEST_DSN`` names a server that may
create databases; without it, an embedded one starts (``pip install 'pgjobs[embedded]'``).
"""

from __future__ import annotations

import psycopg
from my_extension.jobs import CleanupJob, ReportJob

import pgjobs
from pgjobs.testing import JobHarness


def test_cleanup_deletes_expired_items(pgjobs_harness: JobHarness) -> None:
    run = pgjobs_harness.run_job(CleanupJob, parameters={"seed_expired": "3"})

    assert run.status == "succeeded", run.error
    assert run.message == "Deleted 3 items"
    assert run.data == {"deleted": 3}


def test_cleanup_keeps_recent_items(
    pgjobs_harness: JobHarness, pgjobs_conn: psycopg.Connection
) -> None:
    pgjobs_harness.run_job(CleanupJob)  # creates my_items
    pgjobs_conn.execute("INSERT INTO my_items (created_at) VALUES (now() - interval '29 days')")

    run = pgjobs_harness.run_job(CleanupJob, parameters={"retention_days": "30"})

    assert run.data == {"deleted": 0}
    assert pgjobs_conn.execute("SELECT count(*) FROM my_items").fetchone() == (1,)


def test_an_enqueued_report_counts_the_runs_before_it(
    pgjobs_harness: JobHarness, pgjobs_dsn: str
) -> None:
    pgjobs_harness.run_job(CleanupJob)  # one finished run for the report to count
    with psycopg.connect(pgjobs_dsn) as conn:  # the application's code and transaction
        pgjobs.enqueue_sync(conn, "my-extension-report", {"window": "1h"})

    pgjobs_harness.assert_enqueued(ReportJob, {"window": "1h"})
    [report] = pgjobs_harness.drain()

    assert report.status == "succeeded", report.error
    assert report.data == {"window": "1h", "by_status": {"succeeded": 1}}
    assert (report.items_processed, report.items_failed) == (1, 0)
