"""Executing one run: build its context, call the job under its timeout, turn the end into an
:class:`~pgjobs.store.Outcome`.

Async jobs run on the worker's event loop and are cancelled on timeout. Sync jobs run in a
thread of the worker's executor; Python cannot stop a thread, so on timeout the run is recorded
as ``timed_out`` at once, the job's cancel signal is set, and the thread runs on until the job
returns (its late result is discarded). Long sync jobs should check ``ctx.cancelled``.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import MutableMapping
from concurrent.futures import Executor
from typing import Any

from pgjobs import tracing
from pgjobs.errors import PayloadError
from pgjobs.job import CancelSignal, Dependency, JobContext, ProgressSink
from pgjobs.outcomes import exception_outcome, result_outcome, safe_outcome, with_logs
from pgjobs.payloads import load_payload
from pgjobs.registry import JobDefinition
from pgjobs.runlog import JOB_LOGGER, cached_logger, capture_run_logs
from pgjobs.store import ClaimedRun, Outcome

CANCEL_GRACE = 0.5
"""Seconds an async job has, once cancelled by an operator, to notice ``ctx.cancelled`` and
return before it is cancelled at its next await."""


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
    """One run of one job: ``await execute()`` always returns an :class:`Outcome`.

    ``dependencies`` become the run's ``ctx.dependencies``: the claim that took a run with any
    returns what they ended with.
    """

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
        progress: ProgressSink | None = None,
        dependencies: list[Dependency] | None = None,
    ) -> None:
        self.definition = definition
        self.run = run
        self.signal = CancelSignal()
        params = {**definition.parameters, **(run.parameters or {}), **(parameters or {})}
        payload: Any = run.payload
        #: Why the stored payload does not match the job's payload type: the run then fails
        #: with it, and the job is not called.
        self.payload_error: PayloadError | None = None
        payload_type = definition.job.payload_type
        if payload_type is not None:
            try:
                payload = load_payload(run.job, payload_type, payload)
            except PayloadError as err:
                self.payload_error = err
        self.context: JobContext[Any] = JobContext(
            db_pool=pool,
            run_id=run.id,
            job_name=run.job,
            scheduled_for=run.scheduled_for,
            attempt=run.attempt,
            trigger=run.trigger,  # type: ignore[arg-type]
            payload=payload,
            worker_id=worker_id,
            log=run_logger(run.job, run.id, run.attempt, worker_id),
            cancel=self.signal,
            parameters=params,
            config=dict(definition.config),
            schema=schema,
            progress_sink=progress,
            dependencies=dependencies if dependencies is not None else [],
        )
        self._executor = executor
        #: The task that awaits :meth:`execute` (set by whoever creates it, else found when the
        #: job starts): what an operator's cancel cancels while an async job runs.
        self.task: asyncio.Task[Any] | None = None
        self._in_job = False

    def cancel(self, reason: str) -> None:
        """Ask the job to stop: set its signal (``ctx.cancelled``); an async job still running
        :data:`CANCEL_GRACE` seconds later is cancelled at its next await."""
        self.signal.set(reason)
        if self._in_job and self.task is not None and reason != "worker shutting down":
            asyncio.get_running_loop().call_later(CANCEL_GRACE, self._cancel_task)

    def _cancel_task(self) -> None:
        if self._in_job and self.task is not None and not self.task.done():
            self.task.cancel()

    async def execute(self) -> Outcome:
        """Run the job; the outcome carries the last lines it logged through ``ctx.log``.

        An async job runs in the task that awaits this, not in a task of its own: one task per
        run is all a no-op job should cost. Whatever the job does or hands back, this returns an
        outcome the database accepts (see :mod:`pgjobs.outcomes`); only the worker's own
        cancellation at shutdown propagates. With tracing (:mod:`pgjobs.tracing`), the run's span
        is current while the job runs.
        """
        span = None
        if tracing.AVAILABLE:
            queue = self.definition.queue
            span = tracing.run_span(self.run, queue=queue, worker_id=self.context.worker_id)
        try:
            with capture_run_logs(self.run.id) as captured:
                outcome = await self._execute()
        except BaseException:  # the worker's own cancellation: the run goes back to the queue
            if span is not None:
                span.interrupted()
            raise
        outcome = with_logs(outcome, captured.text())
        if span is not None:
            span.finished(outcome)
        return outcome

    async def _execute(self) -> Outcome:
        if self.payload_error is not None:
            return safe_outcome(
                self.run.id,
                "failed",
                0.0,
                message=str(self.payload_error),
                error_type="PayloadError",
                error_message=str(self.payload_error),
            )
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
            return safe_outcome(
                self.run.id,
                "timed_out",
                time.perf_counter() - started,
                message=f"timed out after {timeout:g}s",
                error_type="TimeoutError",
                error_message=f"run exceeded its timeout of {timeout:g}s",
            )
        except asyncio.CancelledError as exc:
            if self.signal.is_set and self.signal.reason != "worker shutting down":
                return safe_outcome(
                    self.run.id,
                    "cancelled",
                    time.perf_counter() - started,
                    message=self.signal.reason,
                )
            task = asyncio.current_task()
            if self.signal.is_set or (task is not None and task.cancelling()):
                raise  # the worker cancels this run: it hands it back
            return self._failed(exc, started)  # raised by the job, nobody cancelled it
        except BaseException as exc:  # SystemExit or KeyboardInterrupt of a job too
            return self._failed(exc, started)
        cancelled = self.signal.is_set and self.signal.reason == "cancelled by operator"
        return result_outcome(
            self.run.id, result, time.perf_counter() - started, cancelled=cancelled
        )

    def _failed(self, exc: BaseException, started: float) -> Outcome:
        return exception_outcome(self.run.id, exc, time.perf_counter() - started)

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
        # In the run's context (its span, for one): a thread of the executor has none of its own.
        call = contextvars.copy_context().run
        return await loop.run_in_executor(self._executor, call, job.execute, self.context)  # type: ignore[attr-defined]
