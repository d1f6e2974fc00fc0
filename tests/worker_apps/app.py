"""Jobs that the worker tests run in real worker processes.

``PGJOBS_TEST_JOBS`` (comma-separated) picks which of them a worker registers, so each test's
workers tick only the schedules it is about. ``PGJOBS_TEST_SCHEDULE`` overrides the schedule of
the scheduled ones.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
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


class BrokenStr(Exception):
    """An exception whose ``str()`` raises."""

    def __str__(self) -> str:
        raise ValueError("str() of the exception")


class NoNotes(Exception):
    """An exception whose traceback cannot be formatted (its notes raise)."""

    @property
    def __notes__(self) -> list[str]:
        raise RuntimeError("notes exploded")


class HostileResult(JobResult):
    """A result whose message cannot be read."""

    def __getattribute__(self, name: str) -> Any:
        if name == "message":
            raise SystemExit("message")
        return super().__getattribute__(name)

    def __repr__(self) -> str:
        return "<HostileResult>"


def _log_nul(ctx: JobContext) -> JobResult:
    ctx.log.info("line with a NUL \x00 in it")
    return JobResult.failure("logged a NUL")


def _raise(
    exc: Callable[[], BaseException],
) -> Callable[[JobContext], JobResult]:
    def job(ctx: JobContext) -> JobResult:
        raise exc()

    return job


HUGE = 300_000_000

# What a hostile job does, by the "kind" in its payload: each once stopped its worker.
HOSTILE: dict[str, Callable[[JobContext], Any]] = {
    "nul-message": lambda ctx: JobResult.failure("read \x00 from the socket"),
    "nul-success": lambda ctx: JobResult.success("read \x00 from the socket"),
    "nul-data": lambda ctx: JobResult.failure("bad data").with_data(**{"k\x00": "v\x00"}),
    "nul-exception": _raise(lambda: RuntimeError("boom \x00")),
    "nul-log": _log_nul,
    "bytes-message": lambda ctx: JobResult.failure(b"raw \xff bytes"),  # type: ignore[arg-type]
    "object-message": lambda ctx: JobResult.failure(object()),  # type: ignore[arg-type]
    "stats-str": lambda ctx: JobResult.success().with_stats("x"),  # type: ignore[arg-type]
    "stats-huge": lambda ctx: JobResult.success().with_stats(10**30),
    "stats-unchecked": lambda ctx: JobResult(ok=True, processed=10**30),
    "nan-data": lambda ctx: JobResult.success().with_data(x=float("nan")),
    "huge": lambda ctx: JobResult.failure("x" * HUGE).with_data(blob="y" * HUGE),
    "broken-str": _raise(lambda: BrokenStr("payload")),
    "broken-traceback": _raise(lambda: NoNotes("no notes")),
    "hostile-result": lambda ctx: HostileResult(ok=True, message="hidden"),
    "keyboard-interrupt": _raise(lambda: KeyboardInterrupt()),
    "system-exit": _raise(lambda: SystemExit(3)),
    "cancelled-error": _raise(lambda: asyncio.CancelledError()),
}


class Hostile(Job):
    """Does what ``HOSTILE[payload["kind"]]`` does, on the event loop."""

    name = "t-hostile"
    overlap = "allow"

    async def execute(self, ctx: JobContext) -> JobResult:
        return HOSTILE[(ctx.payload or {})["kind"]](ctx)  # type: ignore[no-any-return]


class HostileSync(Job):
    """Does what ``HOSTILE[payload["kind"]]`` does, in a thread."""

    name = "t-hostile-sync"
    overlap = "allow"

    def execute(self, ctx: JobContext) -> JobResult:
        return HOSTILE[(ctx.payload or {})["kind"]](ctx)  # type: ignore[no-any-return]


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
    Hostile,
    HostileSync,
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
