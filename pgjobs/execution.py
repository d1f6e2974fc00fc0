"""Executing one run: build its context, call the job under its timeout, turn the end into an
:class:`~pgjobs.store.Outcome`.

Async jobs run on the worker's event loop and are cancelled on timeout. Sync jobs run in a
thread of the worker's executor; Python cannot stop a thread, so on timeout the run is recorded
as ``timed_out`` at once, the job's cancel signal is set, and the thread runs on until the job
returns (its late result is discarded). Long sync jobs should check ``ctx.cancelled``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import traceback
from collections.abc import MutableMapping
from concurrent.futures import Executor
from typing import Any

from pgjobs.job import CancelSignal, JobContext, JobResult
from pgjobs.registry import JobDefinition
from pgjobs.runlog import JOB_LOGGER, cached_logger, capture_run_logs
from pgjobs.store import ClaimedRun, Outcome

_MAX_TRACEBACK = 16_000


class RunLogAdapter(logging.LoggerAdapter[logging.Logger]):
    """A logger bound to one run: every record carries run id, job, attempt and worker, merged
    with the ``extra`` a call passes."""

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        kwargs["extra"] = {**(self.extra or {}), **kwargs.get("extra", {})}
        return msg, kwargs


def run_logger(job: str, run_id: int, attempt: int, worker_id: str) -> RunLogAdapter:
    """The ``ctx.log`` of one run."""
    return RunLogAdapter(
        cached_logger(f"{JOB_LOGGER}.{job}"),
        {"run_id": run_id, "job": job, "attempt": attempt, "worker_id": worker_id},
    )


class RunExecution:
    """One run of one job: ``await execute()`` always returns an :class:`Outcome`."""

    def __init__(
        self,
        definition: JobDefinition,
        run: ClaimedRun,
        *,
        worker_id: str,
        pool: Any,
        executor: Executor | None,
        parameters: dict[str, str] | None = None,
        schema: str = "pgjobs",
    ) -> None:
        self.definition = definition
        self.run = run
        self.signal = CancelSignal()
        params = {**definition.parameters, **(run.parameters or {}), **(parameters or {})}
        self.context = JobContext(
            db_pool=pool,
            run_id=run.id,
            job_name=run.job,
            scheduled_for=run.scheduled_for,
            attempt=run.attempt,
            trigger=run.trigger,  # type: ignore[arg-type]
            payload=run.payload,
            worker_id=worker_id,
            log=run_logger(run.job, run.id, run.attempt, worker_id),
            cancel=self.signal,
            parameters=params,
            config=dict(definition.config),
            schema=schema,
        )
        self._executor = executor
        #: The task that awaits :meth:`execute` (set by whoever creates it, else found when the
        #: job starts): what an operator's cancel cancels while an async job runs.
        self.task: asyncio.Task[Any] | None = None
        self._in_job = False

    def cancel(self, reason: str) -> None:
        """Ask the job to stop: set its signal; an async job is also cancelled at its next await."""
        self.signal.set(reason)
        if self._in_job and self.task is not None and reason != "worker shutting down":
            self.task.cancel()

    async def execute(self) -> Outcome:
        """Run the job; the outcome carries the last lines it logged through ``ctx.log``.

        An async job runs in the task that awaits this, not in a task of its own: one task per
        run is all a no-op job should cost.
        """
        with capture_run_logs(self.run.id) as captured:
            outcome = await self._execute()
        outcome.logs = captured.text()
        return outcome

    async def _execute(self) -> Outcome:
        started = time.perf_counter()
        timeout = self.definition.timeout
        timer: asyncio.Timeout | None = None
        try:
            if timeout is None:
                result = await self._call()
            else:
                async with asyncio.timeout(timeout) as timer:
                    result = await self._call()
        except TimeoutError as exc:
            if timer is None or not timer.expired():  # raised by the job itself
                return self._failed(exc, started)
            self.signal.set("timed out")
            return self._outcome(
                "timed_out",
                started,
                message=f"timed out after {timeout:g}s",
                error_type="TimeoutError",
                error_message=f"run exceeded its timeout of {timeout:g}s",
            )
        except asyncio.CancelledError:
            if self.signal.is_set and self.signal.reason != "worker shutting down":
                return self._outcome("cancelled", started, message=self.signal.reason)
            raise
        except Exception as exc:
            return self._failed(exc, started)
        return self._from_result(result, started)

    def _failed(self, exc: BaseException, started: float) -> Outcome:
        return self._outcome(
            "failed",
            started,
            message=f"{type(exc).__name__}: {exc}",
            error_type=type(exc).__qualname__,
            error_message=str(exc),
            error_traceback="".join(traceback.format_exception(exc))[-_MAX_TRACEBACK:],
        )

    async def _call(self) -> Any:
        job = self.definition.job
        if self.definition.is_async:
            if self.task is None:
                self.task = asyncio.current_task()
            self._in_job = True
            try:
                return await job.execute(self.context)  # type: ignore[attr-defined]
            finally:
                self._in_job = False
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, job.execute, self.context)  # type: ignore[attr-defined]

    def _from_result(self, result: Any, started: float) -> Outcome:
        if result is None:
            result = JobResult.success()
        if not isinstance(result, JobResult):
            return self._outcome(
                "failed",
                started,
                message=f"execute returned {type(result).__name__}, not JobResult",
                error_type="TypeError",
                error_message=f"execute must return a JobResult, got {result!r:.200}",
            )
        data = dict(result.data)
        try:
            if data:
                json.dumps(data, allow_nan=False)  # jsonb takes neither NaN nor Infinity
        except (TypeError, ValueError) as exc:
            return self._outcome(
                "failed",
                started,
                message=result.message,
                error_type="TypeError",
                error_message=f"result data is not JSON-serialisable: {exc}",
            )
        if self.signal.is_set and self.signal.reason == "cancelled by operator":
            status = "cancelled"
        else:
            status = "succeeded" if result.ok else "failed"
        return self._outcome(
            status,
            started,
            message=result.message,
            data=data,
            processed=result.processed,
            failed=result.failed,
        )

    def _outcome(self, status: str, started: float, **fields: Any) -> Outcome:
        return Outcome(
            run_id=self.run.id, status=status, duration=time.perf_counter() - started, **fields
        )
