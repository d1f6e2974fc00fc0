"""Jobs that the worker tests run in real worker processes.

``PGJOBS_TEST_JOBS`` (comma-separated) picks which of them a worker registers, so each test's
workers tick only the schedules it is about. ``PGJOBS_TEST_SCHEDULE`` overrides the schedule of
the scheduled ones.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from pgjobs import Extension, Job, JobContext, JobResult, RetryBackoff

EVERY_SECOND = os.environ.get("PGJOBS_TEST_SCHEDULE", "* * * * * *")


class Tick(Job):
    name = "t-tick"
    schedule = EVERY_SECOND
    overlap = "allow"

    async def execute(self, ctx: JobContext) -> JobResult:
        return JobResult.success("tick")


class SlowSkip(Job):
    name = "t-slow-skip"
    schedule = EVERY_SECOND
    overlap = "skip"

    async def execute(self, ctx: JobContext) -> JobResult:
        await asyncio.sleep(2.5)
        return JobResult.success("slow")


class Sleep(Job):
    """Sleeps ``payload["seconds"]``; retried once if its worker dies."""

    name = "t-sleep"
    max_attempts = 2
    overlap = "allow"

    async def execute(self, ctx: JobContext) -> JobResult:
        seconds = float((ctx.payload or {}).get("seconds", 1))
        await asyncio.sleep(seconds)
        return JobResult.success(f"slept {seconds}s").with_data(attempt=ctx.attempt)


class SleepSync(Job):
    name = "t-sleep-sync"
    overlap = "allow"
    timeout = 0.5

    def execute(self, ctx: JobContext) -> JobResult:
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and not ctx.cancelled:
            time.sleep(0.05)
        return JobResult.success("stopped" if ctx.cancelled else "ran to the end")


class Timeout(Job):
    name = "t-timeout"
    timeout = 0.5

    async def execute(self, ctx: JobContext) -> JobResult:
        await asyncio.sleep(10)
        return JobResult.success("unreachable")


class Fail(Job):
    name = "t-fail"
    max_attempts = 3
    retry_backoff = RetryBackoff(base_seconds=0.2, factor=2.0, max_seconds=5, jitter=0.0)

    async def execute(self, ctx: JobContext) -> JobResult:
        raise RuntimeError(f"boom on attempt {ctx.attempt}")


class SyncDb(Job):
    name = "t-sync-db"

    def execute(self, ctx: JobContext) -> JobResult:
        with ctx.db_pool.connection() as conn:
            value = conn.execute("SELECT 40 + 2").fetchone()[0]
        return JobResult.success("sync pool").with_data(value=value)


class AsyncDb(Job):
    name = "t-async-db"

    async def execute(self, ctx: JobContext) -> JobResult:
        async with ctx.db_pool.connection() as conn:
            cur = await conn.execute("SELECT 40 + 2")
            row = await cur.fetchone()
        return JobResult.success("async pool").with_data(value=row[0]).with_stats(1, 0)


class Echo(Job):
    name = "t-echo"
    overlap = "allow"

    async def execute(self, ctx: JobContext) -> JobResult:
        return JobResult.success("echo").with_data(
            payload=ctx.payload, parameters=ctx.parameters, trigger=ctx.trigger
        )


def _misfire_job(policy: str) -> type[Job]:
    attrs: dict[str, Any] = {
        "name": f"t-misfire-{policy}",
        "schedule": EVERY_SECOND,
        "misfire": policy,
        "overlap": "allow",
        "backfill_cap": int(os.environ.get("PGJOBS_TEST_BACKFILL_CAP", "100")),
    }

    async def execute(self: Job, ctx: JobContext) -> JobResult:
        return JobResult.success(policy)

    attrs["execute"] = execute
    return type(f"Misfire{policy.title()}", (Job,), attrs)


ALL: list[type[Job]] = [
    Tick,
    SlowSkip,
    Sleep,
    SleepSync,
    Timeout,
    Fail,
    SyncDb,
    AsyncDb,
    Echo,
    _misfire_job("coalesce"),
    _misfire_job("skip"),
    _misfire_job("backfill"),
]


class TestExtension(Extension):
    name = "t"

    def jobs(self) -> list[Job]:
        wanted = {n for n in os.environ.get("PGJOBS_TEST_JOBS", "").split(",") if n}
        return [cls() for cls in ALL if not wanted or cls.name in wanted]


extension = TestExtension()
