"""Jobs that report progress, for tests/test_progress.py's real worker processes.

``p-steps`` (async) and ``p-steps-sync`` report ``payload["steps"]`` of ``payload["total"]``, wait
until the file ``payload["release"]`` exists (the test looks at the run meanwhile), then report
the total and end. ``p-flood`` reports ``payload["calls"]`` times in a tight loop, spread over
``payload["seconds"]``. ``p-hostile`` reports messages no column takes as they are;
``p-args`` reports with the arguments of its payload.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from pgjobs import Extension, Job, JobContext, JobResult

WAIT_AT_MOST = 60.0


class Steps(Job):
    name = "p-steps"
    overlap = "allow"

    async def execute(self, ctx: JobContext) -> JobResult:
        payload: dict[str, Any] = ctx.payload or {}
        ctx.progress(payload["steps"], payload["total"], f"step {payload['steps']}")
        deadline = time.monotonic() + WAIT_AT_MOST
        while not Path(payload["release"]).exists() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        ctx.progress(payload["total"], payload["total"], "all done")
        return JobResult.success("stepped")


class StepsSync(Job):
    name = "p-steps-sync"
    overlap = "allow"

    def execute(self, ctx: JobContext) -> JobResult:
        payload: dict[str, Any] = ctx.payload or {}
        ctx.progress(payload["steps"], payload["total"], f"step {payload['steps']}")
        deadline = time.monotonic() + WAIT_AT_MOST
        while not Path(payload["release"]).exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        ctx.progress(payload["total"], payload["total"], "all done")
        return JobResult.success("stepped")


class Flood(Job):
    name = "p-flood"
    overlap = "allow"

    def execute(self, ctx: JobContext) -> JobResult:
        payload: dict[str, Any] = ctx.payload or {}
        calls, seconds = int(payload["calls"]), float(payload["seconds"])
        chunk = 1000
        pause = seconds / (calls / chunk)
        for i in range(1, calls + 1):
            ctx.progress(i, calls, f"item {i}")
            if i % chunk == 0:
                time.sleep(pause)
        return JobResult.success(f"reported {calls} times")


class FloodAsync(Job):
    name = "p-flood-async"
    overlap = "allow"

    async def execute(self, ctx: JobContext) -> JobResult:
        calls = int((ctx.payload or {})["calls"])
        for i in range(1, calls + 1):
            ctx.progress(i, calls)
            if i % 1000 == 0:
                await asyncio.sleep(0)
        return JobResult.success(f"reported {calls} times")


class Hostile(Job):
    name = "p-hostile"
    overlap = "allow"

    def execute(self, ctx: JobContext) -> JobResult:
        ctx.progress(1, 3, "x" * 10_000_000)
        ctx.progress(2, 3, "\x00" * 5_000_000)
        ctx.progress(3, 3, "nul\x00lone \ud800" + "x" * 10_000_000)
        return JobResult.success("survived")


class Args(Job):
    name = "p-args"
    overlap = "allow"

    def execute(self, ctx: JobContext) -> JobResult:
        args: list[Any] = (ctx.payload or {})["args"]
        ctx.progress(*args)
        return JobResult.success("accepted")


class ProgressExtension(Extension):
    name = "p"

    def jobs(self) -> list[Job]:
        return [Steps(), StepsSync(), Flood(), FloodAsync(), Hostile(), Args()]


extension = ProgressExtension()
