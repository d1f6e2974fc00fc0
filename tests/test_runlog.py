"""Run logs: ``ctx.log`` lines carry the run's fields, are printed as text or JSON, and the last
lines of each run (bounded) are kept with the run in ``runs.logs``.

The jobs of :class:`ObsExtension` and :func:`run_jobs` (an in-process worker that executes queued
runs to the end) also give the dashboard and metrics tests their real runs.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg

from pgjobs import Extension, Job, JobContext, JobResult, RetryBackoff
from pgjobs.execution import run_logger
from pgjobs.registry import Registry
from pgjobs.runlog import (
    MAX_BYTES,
    MAX_LINES,
    JsonFormatter,
    RunLogCapture,
    TextFormatter,
    capture_run_logs,
    configure_logging,
)
from pgjobs.worker import Worker, WorkerSettings

XSS = "<script>document.title='pwned';window.__pwned=true</script>"

# -- jobs that log ------------------------------------------------------------------------------


class Cleanup(Job):
    name = "obs-cleanup"
    description = "Delete expired sessions"
    schedule = "0 */5 * * * *"

    async def execute(self, ctx: JobContext) -> JobResult:
        ctx.log.info("scanning sessions", extra={"table": "sessions"})
        ctx.log.info("deleted expired sessions", extra={"deleted": 42})
        return JobResult.success("Deleted 42 expired sessions").with_data(deleted=42).with_stats(42)


class Report(Job):
    name = "obs-report"
    description = "Nightly sales report"
    schedule = "0 30 2 * * *"
    timezone = "Europe/Berlin"
    max_attempts = 2
    retry_backoff = RetryBackoff(base_seconds=0.05, jitter=0.0)

    async def execute(self, ctx: JobContext) -> JobResult:
        ctx.log.info("fetching orders", extra={"since": "yesterday"})
        ctx.log.warning("upstream slow, attempt %d", ctx.attempt)
        raise RuntimeError("upstream API returned 503")


class Sync(Job):
    name = "obs-sync"
    description = "Mirror the product catalogue"
    schedule = "@hourly"

    def execute(self, ctx: JobContext) -> JobResult:
        ctx.log.info("sync started in a thread")
        return JobResult.success("Synced 1,204 products").with_stats(1204, 3)


class Chatty(Job):
    name = "obs-chatty"
    description = "Logs more than a run keeps"

    async def execute(self, ctx: JobContext) -> JobResult:
        for i in range(MAX_LINES + 50):
            ctx.log.info("line %d", i)
        return JobResult.success("chatted")


class Echo(Job):
    name = "obs-echo"
    description = "Says what its payload says"
    overlap = "allow"

    async def execute(self, ctx: JobContext) -> JobResult:
        message = str((ctx.payload or {}).get("message", "echo"))
        ctx.log.info(message)
        return JobResult.success(message).with_data(echo=message)


class ObsExtension(Extension):
    name = "obs"

    def jobs(self) -> list[Job]:
        return [Cleanup(), Report(), Sync(), Chatty(), Echo()]


extension = ObsExtension()


def enqueue(dsn: str, job: str, payload: dict[str, Any] | None = None, attempts: int = 1) -> int:
    """Queue a run with plain SQL, as any client could."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "INSERT INTO pgjobs.runs (job, trigger, payload, max_attempts) "
            "VALUES (%s, 'enqueue', %s, %s) RETURNING id",
            (job, json.dumps(payload) if payload is not None else None, attempts),
        ).fetchone()
    assert row is not None
    return int(row[0])


@contextmanager
def running_worker(dsn: str, worker_id: str = "obs-worker") -> Iterator[Worker]:
    """A worker for :data:`extension`'s jobs, running in this process until the block ends."""
    settings = WorkerSettings(
        dsn=dsn, worker_id=worker_id, poll_interval=0.2, lease=10, grace=2, misfire_grace=1
    )
    worker = Worker(Registry.build([extension]), settings)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(
        target=loop.run_until_complete, args=(worker.run(),), name="obs-worker", daemon=True
    )
    thread.start()
    try:
        yield worker
    finally:
        loop.call_soon_threadsafe(worker.request_stop)
        thread.join(20)
        loop.close()


def run_jobs(
    dsn: str, runs: list[tuple[str, dict[str, Any] | None, int]], timeout: float = 20
) -> None:
    """Queue ``(job, payload, attempts)`` runs and execute them (and their retries) to the end."""
    ids = [enqueue(dsn, job, payload, attempts) for job, payload, attempts in runs]
    with running_worker(dsn), psycopg.connect(dsn, autocommit=True) as conn:
        deadline = time.monotonic() + timeout
        while True:
            row = conn.execute(
                "SELECT count(*) FILTER (WHERE status IN ('queued', 'running')),"
                " count(*) FILTER (WHERE id = ANY(%s) AND status NOT IN ('queued', 'running'))"
                " FROM pgjobs.runs",
                (ids,),
            ).fetchone()
            assert row is not None
            if row[0] == 0 and row[1] == len(ids):
                return
            assert time.monotonic() < deadline, "runs did not finish in time"
            time.sleep(0.05)


# -- the capture --------------------------------------------------------------------------------


def test_a_capture_keeps_only_its_own_runs_lines() -> None:
    mine, other = run_logger("obs-a", 1, 1, "w"), run_logger("obs-b", 2, 1, "w")
    with capture_run_logs(1) as capture:
        mine.info("one")
        other.info("not mine")
        logging.getLogger("pgjobs.job.obs-a").info("no run id")
        mine.warning("two", extra={"rows": 3})

    text = capture.text()
    assert text is not None
    lines = text.splitlines()
    assert [line.split(" ", 1)[1] for line in lines] == ["INFO one", "WARNING two rows=3"]
    mine.info("after the capture")
    assert capture.text() == text


def test_a_capture_keeps_the_last_200_lines_and_says_how_many_were_dropped() -> None:
    log = run_logger("obs-a", 7, 1, "w")
    with capture_run_logs(7) as capture:
        for i in range(MAX_LINES + 25):
            log.info("line %d", i)

    lines = (capture.text() or "").splitlines()
    assert lines[0] == "[25 earlier line(s) dropped]"
    assert len(lines) == MAX_LINES + 1
    assert lines[1].endswith("line 25") and lines[-1].endswith(f"line {MAX_LINES + 24}")


def test_a_capture_keeps_at_most_64_kb() -> None:
    capture = RunLogCapture(1)
    record = logging.LogRecord("pgjobs.job.x", logging.INFO, "", 0, "%s", ("x" * 1000,), None)
    record.run_id = 1
    for _ in range(100):
        capture.handle(record)
    huge = logging.LogRecord("pgjobs.job.x", logging.INFO, "", 0, "%s", ("y" * 100_000,), None)
    huge.run_id = 1
    capture.handle(huge)

    text = capture.text() or ""
    assert len(text.encode()) <= MAX_BYTES + 64
    assert text.splitlines()[-1].endswith("…[truncated]")
    assert capture.dropped == 100


def test_a_run_that_logged_nothing_keeps_no_logs() -> None:
    with capture_run_logs(99) as capture:
        pass
    assert capture.text() is None


def test_lines_logged_from_a_sync_jobs_thread_are_captured() -> None:
    log = run_logger("obs-a", 5, 1, "w")
    with capture_run_logs(5) as capture:
        thread = threading.Thread(target=lambda: [log.info("from %d", i) for i in range(50)])
        thread.start()
        thread.join()
    assert len((capture.text() or "").splitlines()) == 50


def test_an_exception_logged_by_a_run_keeps_its_traceback() -> None:
    log = run_logger("obs-a", 3, 1, "w")
    with capture_run_logs(3) as capture:
        try:
            raise ValueError("bad row 17")
        except ValueError:
            log.exception("import failed")
    text = capture.text() or ""
    assert "ERROR import failed" in text and "ValueError: bad row 17" in text


# -- console formats ----------------------------------------------------------------------------


def _record(**extra: Any) -> logging.LogRecord:
    record = logging.LogRecord("pgjobs.job.obs-a", logging.INFO, "", 0, "deleted %d", (3,), None)
    for key, value in {
        "run_id": 12,
        "job": "obs-a",
        "attempt": 2,
        "worker_id": "w1",
        **extra,
    }.items():
        setattr(record, key, value)
    return record


def test_text_lines_carry_the_run_fields_and_the_extras() -> None:
    line = TextFormatter().format(_record(table="user sessions"))

    assert line.endswith(
        "INFO pgjobs.job.obs-a: deleted 3 run_id=12 job=obs-a attempt=2 worker_id=w1 "
        'table="user sessions"'
    )


def test_json_lines_carry_the_run_fields_and_the_extras() -> None:
    entry = json.loads(JsonFormatter().format(_record(deleted=3, when=time)))

    assert entry["message"] == "deleted 3" and entry["level"] == "INFO"
    assert (entry["run_id"], entry["job"], entry["attempt"], entry["worker_id"]) == (
        12,
        "obs-a",
        2,
        "w1",
    )
    assert entry["deleted"] == 3 and entry["when"].startswith("<module 'time'")
    assert entry["ts"].endswith("Z")


def test_the_console_shows_warnings_while_the_run_still_keeps_its_info_lines() -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, logging.getLogger("pgjobs.job").level)
    try:
        configure_logging("WARNING", "json", stream)
        log = run_logger("obs-a", 4, 1, "w")
        with capture_run_logs(4) as capture:
            log.info("kept with the run")
            log.warning("shown on the console")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        logging.getLogger("pgjobs.job").setLevel(saved[2])

    printed = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [p["message"] for p in printed] == ["shown on the console"]
    assert printed[0]["run_id"] == 4
    assert "kept with the run" in (capture.text() or "")


# -- with a worker ------------------------------------------------------------------------------


def test_a_worker_keeps_a_runs_last_lines_with_the_run(dsn: str) -> None:
    run_jobs(dsn, [("obs-report", None, 2), ("obs-chatty", None, 1), ("obs-sync", None, 1)])

    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT job, attempt, status, logs, error_traceback FROM pgjobs.runs ORDER BY id"
        ).fetchall()
    by_job = {(job, attempt): (status, logs, tb) for job, attempt, status, logs, tb in rows}

    status, logs, traceback = by_job[("obs-report", 2)]
    assert status == "failed"
    assert "INFO fetching orders since=yesterday" in logs
    assert "WARNING upstream slow, attempt 2" in logs
    assert "RuntimeError: upstream API returned 503" in traceback
    assert "attempt 1" in by_job[("obs-report", 1)][1]
    chatty = by_job[("obs-chatty", 1)][1].splitlines()
    assert chatty[0] == "[50 earlier line(s) dropped]" and len(chatty) == MAX_LINES + 1
    assert "sync started in a thread" in by_job[("obs-sync", 1)][1]


def test_run_logs_are_queryable_with_sql(dsn: str) -> None:
    run_jobs(dsn, [("obs-cleanup", None, 1)])
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT id FROM pgjobs.runs WHERE job = 'obs-cleanup' AND logs LIKE %s",
            ("%deleted expired sessions deleted=42%",),
        ).fetchone()
    assert row is not None
