"""Jobs that the queue-control tests (tests/test_queue_controls.py) run in real worker processes:
jobs with concurrency and rate limits, jobs that ignore or heed a cancel, bulk work and a tick.

``PGJOBS_TEST_JOBS`` (comma-separated) picks which of them a worker registers, as in
``tests.worker_apps.app``. Most of them sleep ``payload["seconds"]`` (else their own default).
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from pgjobs import Extension, Job, JobContext, JobResult


def _sleeper(name: str, seconds: float, **definition: Any) -> type[Job]:
    """An async job that sleeps ``payload["seconds"]`` (default ``seconds``), defined by
    ``definition`` (overlap ``allow`` unless it says otherwise)."""

    async def execute(self: Job, ctx: JobContext) -> JobResult:
        await asyncio.sleep(float((ctx.payload or {}).get("seconds", seconds)))
        return JobResult.success("slept")

    attrs = {"name": name, "overlap": "allow", **definition, "execute": execute}
    return type(name.title().replace("-", ""), (Job,), attrs)


class IgnoresCancel(Job):
    """Sleeps a minute and never looks at ``ctx.cancelled``: only the worker can stop it."""

    name = "c-ignores-cancel"
    overlap = "allow"

    async def execute(self, ctx: JobContext) -> JobResult:
        await asyncio.sleep(60)
        return JobResult.success("slept through the cancel")


class HeedsCancel(Job):
    """A sync job that works in 10 ms steps for up to a minute and returns once cancelled."""

    name = "c-heeds-cancel"
    overlap = "allow"

    def execute(self, ctx: JobContext) -> JobResult:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not ctx.cancelled:
            time.sleep(0.01)
        return JobResult.success("stopped when cancelled" if ctx.cancelled else "ran a minute")


ALL: list[type[Job]] = [
    # At most 5 at once across all workers.
    _sleeper("c-limited", 0.05, max_concurrency=5),
    # One at a time per tenant (the payload's "tenant" field).
    _sleeper("c-per-tenant", 0.05, concurrency_key="tenant", max_concurrency=1),
    # 20 starts a second (a bucket of 20).
    _sleeper("c-rated", 0, rate_limit="20/s"),
    # Limits that never hold a run back, so every claim of many workers goes through them.
    _sleeper("c-rated-fast", 0, rate_limit="1000000/s", max_concurrency=1000),
    # Unlimited.
    _sleeper("c-sleep", 0.05),
    # Bulk work: many short runs.
    _sleeper("c-bulk", 0.005),
    # Every second, one at a time (overlap skip, as scheduled jobs usually are).
    _sleeper("c-every-second", 0, schedule="* * * * * *", overlap="skip"),
    # One at a time, short.
    _sleeper("c-one-short", 0.3, max_concurrency=1),
    # Jobs whose queued runs are held: one at a time and long; one start an hour.
    _sleeper("c-one-at-a-time", 60, max_concurrency=1),
    _sleeper("c-hourly", 0, rate_limit="1/h"),
    _sleeper("c-paused", 0),
    IgnoresCancel,
    HeedsCancel,
]


class ControlsExtension(Extension):
    name = "c"

    def jobs(self) -> list[Job]:
        wanted = {n for n in os.environ.get("PGJOBS_TEST_JOBS", "").split(",") if n}
        return [cls() for cls in ALL if not wanted or cls.name in wanted]


extension = ControlsExtension()
