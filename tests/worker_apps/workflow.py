"""Jobs that the workflow tests (tests/test_workflow_runs.py) run in real worker processes: steps
of a graph of runs that say what they saw of the runs they waited for.

Each step records its execution in ``workflow_executions`` (the test creates the table), sleeps
``payload["seconds"]`` (``payload["first_seconds"]`` on its first attempt, when given), raises
when ``payload["fail"]`` is true, and returns as its data its ``payload["value"]`` and what
``ctx.dependencies`` held: ``[run_id, job, status]`` of each, and each one's message and value.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pgjobs import Extension, Job, JobContext, JobResult


class Step(Job):
    name = "w-step"
    overlap = "allow"

    async def execute(self, ctx: JobContext) -> JobResult:
        payload: dict[str, Any] = ctx.payload or {}
        async with ctx.db_pool.connection() as conn:
            await conn.execute(
                "INSERT INTO workflow_executions (run_id, attempt, worker_id) VALUES (%s, %s, %s)",
                [ctx.run_id, ctx.attempt, ctx.worker_id],
            )
        seconds = payload.get("seconds", 0)
        if ctx.attempt == 1 and "first_seconds" in payload:
            seconds = payload["first_seconds"]
        await asyncio.sleep(float(seconds))
        if payload.get("fail"):
            raise RuntimeError("this step fails")
        return JobResult.success(f"step {payload.get('value')}").with_data(
            value=payload.get("value"),
            dependencies=[[d.run_id, d.job, d.status] for d in ctx.dependencies],
            messages=[d.message for d in ctx.dependencies],
            inputs=[d.data.get("value") for d in ctx.dependencies],
        )


class RetriedStep(Step):
    """A step retried once when its worker dies (or it fails)."""

    name = "w-retried"
    max_attempts = 2


class WorkflowExtension(Extension):
    name = "w"

    def jobs(self) -> list[Job]:
        return [Step(), RetriedStep()]


extension = WorkflowExtension()
