"""Jobs for tests/test_run_tasks.py: what one run leaves behind for the next on the same worker.

``r-mark`` sets a context variable (``MARK``) to its run id and leaves it set, sleeping
``payload["seconds"]`` first (default 0.05); ``r-read`` returns the variable's value as its
message (``unset`` when nothing set it in its context); ``r-raise-first`` raises before its first
await; ``r-slow`` awaits for ``payload["seconds"]`` (default 30).
"""

from __future__ import annotations

import asyncio
import contextvars

from pgjobs import Extension, Job, JobContext, JobResult

MARK: contextvars.ContextVar[str] = contextvars.ContextVar("pgjobs_test_mark", default="unset")


class Mark(Job):
    name = "r-mark"
    overlap = "allow"

    async def execute(self, ctx: JobContext) -> JobResult:
        await asyncio.sleep(float((ctx.payload or {}).get("seconds", 0.05)))
        MARK.set(f"set by run {ctx.run_id}")
        return JobResult.success("marked")


class Read(Job):
    name = "r-read"
    overlap = "allow"

    async def execute(self, ctx: JobContext) -> JobResult:
        return JobResult.success(MARK.get())


class RaiseFirst(Job):
    name = "r-raise-first"
    overlap = "allow"
    max_attempts = 1

    async def execute(self, ctx: JobContext) -> JobResult:
        raise LookupError("raised before any await")


class Slow(Job):
    name = "r-slow"
    overlap = "allow"
    max_attempts = 1

    async def execute(self, ctx: JobContext) -> JobResult:
        await asyncio.sleep(float((ctx.payload or {}).get("seconds", 30)))
        return JobResult.success("slept")


class RunsExtension(Extension):
    name = "r"

    def jobs(self) -> list[Job]:
        return [Mark(), Read(), RaiseFirst(), Slow()]


extension = RunsExtension()
