"""Jobs of the chaos scenarios (tests/chaos.py), run by real workers with
``--app tests.worker_apps.chaos:extension``.

Every execution inserts a row into ``public.chaos_effects`` through ``ctx.db_pool`` before doing
its work, so the harness can count executions per run and per tick and see extra ones. The
harness creates that table (:data:`EFFECTS_DDL`).

``PGJOBS_CHAOS_GATE`` names a directory: the process then marks itself ready there and waits for
a shared lock on its ``gate`` file, which the harness holds exclusively until it releases every
waiting worker at the same instant (a start storm). This happens on import, before the worker
touches the database.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
from pathlib import Path

from pgjobs import Extension, Job, JobContext, JobResult, RetryBackoff

EFFECTS_DDL = """
CREATE TABLE IF NOT EXISTS public.chaos_effects (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id      bigint NOT NULL,
    job         text NOT NULL,
    attempt     integer NOT NULL,
    worker_id   text NOT NULL,
    executed_at timestamptz NOT NULL DEFAULT clock_timestamp()
)
"""

WORK = "chaos-work"
TICK = "chaos-tick"
SLOW = "chaos-slow"


async def _record(ctx: JobContext) -> None:
    async with ctx.db_pool.connection() as conn:
        await conn.execute(
            "INSERT INTO public.chaos_effects (run_id, job, attempt, worker_id)"
            " VALUES (%s, %s, %s, %s)",
            (ctx.run_id, ctx.job_name, ctx.attempt, ctx.worker_id),
        )


class Work(Job):
    """Enqueued work: records its execution, then works for 60 ms. Retried generously, quickly."""

    name = WORK
    overlap = "allow"
    timeout = 10  # a query stuck on a half-open connection ends here, and the run is retried
    max_attempts = 25
    retry_backoff = RetryBackoff(base_seconds=0.2, factor=2.0, max_seconds=2.0, jitter=0.5)

    async def execute(self, ctx: JobContext) -> JobResult:
        await _record(ctx)
        await asyncio.sleep(0.06)
        return JobResult.success("worked")


class Tick(Job):
    """Every second; a tick must execute once, whatever happens to the database."""

    name = TICK
    schedule = "* * * * * *"
    overlap = "allow"
    timeout = 10

    async def execute(self, ctx: JobContext) -> JobResult:
        await _record(ctx)
        return JobResult.success("ticked")


class Slow(Job):
    """Every second, 2.5 s long, one at a time across all workers: most ticks are skipped."""

    name = SLOW
    schedule = "* * * * * *"
    overlap = "skip"
    timeout = 10

    async def execute(self, ctx: JobContext) -> JobResult:
        await _record(ctx)
        await asyncio.sleep(2.5)
        return JobResult.success("slow")


class ChaosExtension(Extension):
    name = "chaos"

    def jobs(self) -> list[Job]:
        return [Work(), Tick(), Slow()]


def _wait_at_gate(gate_dir: str) -> None:
    directory = Path(gate_dir)
    with (directory / "gate").open("rb") as gate:
        (directory / f"ready-{os.getpid()}").touch()
        fcntl.flock(gate, fcntl.LOCK_SH)


if os.environ.get("PGJOBS_CHAOS_GATE"):
    _wait_at_gate(os.environ["PGJOBS_CHAOS_GATE"])

extension = ChaosExtension()
