"""The no-op jobs the benchmark workers load, one extension per workload.

``--app benchmarks.apps:<name>`` picks the workload; environment variables set its size:

- ``drain``: one on-demand job, ``bench-noop`` (overlap allowed, as queue-style jobs are).
- ``latency``: ``bench-latency``, a no-op that appends ``key entered`` (its payload's ``key``,
  then ``time.time()`` on entry) to ``<BENCH_ENTRY_FILE>.<pid>``: the latency measure.
- ``limited_50``, ``keyed``, ``rated``: ``bench-noop`` with one queue control each (the limits
  measure): ``bench-limited-50`` (``max_concurrency = 50``), ``bench-keyed`` (one run at a time
  per payload field ``tenant``), ``bench-rated`` (``rate_limit = "1000000/s"``). Each workload
  registers its job alone: a rate bucket anywhere makes every claim look for empty buckets.
- ``every_second``: ``BENCH_JOBS`` (default 20) jobs firing every second, ``bench-second-NN``.
  With ``BENCH_TICKS_FILE`` set, each run appends ``job tick entered`` (epoch seconds) to
  ``<BENCH_TICKS_FILE>.<pid>``, so lag is also measured to the moment the job's code runs.
- ``idle``: ``BENCH_JOBS`` (default 20) jobs that fire once a year: registered, never due.
- ``scale``: ``BENCH_JOBS`` (default 10,000) jobs firing every minute (``BENCH_SCHEDULE``
  overrides the schedule), ``bench-minute-NNNNN``.
- ``soak``: the soak's mix: ``bench-noop`` (the steady enqueues), 20 jobs firing every second
  (``bench-second-NN``), 1,000 jobs firing every minute at second 0 (``bench-minute-NNNNN``) and
  ``bench-runtime``, on-demand, whose 1,000 runtime schedules the soak adds with
  ``pgjobs.schedule`` (``SOAK_RUNTIME_SCHEDULES``), all firing at second 0 too.

Each job is its own :class:`Job` subclass, generated here: a job's name is a class attribute.
"""

from __future__ import annotations

import os
import time
from functools import cache
from typing import Any, TextIO

from pgjobs import Extension, Job, JobContext, JobResult


class Noop(Job):
    name = "bench-noop"
    description = "Does nothing: measures the queue, not the job"
    overlap = "allow"

    async def execute(self, ctx: JobContext) -> JobResult:
        return JobResult.success()


class Limited50(Noop):
    name = "bench-limited-50"
    max_concurrency = 50


class Keyed(Noop):
    name = "bench-keyed"
    concurrency_key = "tenant"
    max_concurrency = 1


class Rated(Noop):
    name = "bench-rated"
    rate_limit = "1000000/s"


class Latency(Noop):
    name = "bench-latency"
    description = "Notes the moment its code is entered: the latency measure"

    async def execute(self, ctx: JobContext) -> JobResult:
        entered = time.time()
        _entry_file().write(f"{ctx.payload['key']} {entered!r}\n")
        return JobResult.success()


@cache
def _entry_file() -> TextIO:
    return open(f"{os.environ['BENCH_ENTRY_FILE']}.{os.getpid()}", "a", buffering=1)


class RuntimeScheduled(Noop):
    name = "bench-runtime"
    description = "Does nothing, on the runtime schedules the soak adds"


def _count(default: int) -> int:
    return int(os.environ.get("BENCH_JOBS", default))


def _scheduled_jobs(prefix: str, schedule: str, count: int, width: int) -> list[Job]:
    ticks_file = os.environ.get("BENCH_TICKS_FILE")
    out = open(f"{ticks_file}.{os.getpid()}", "a", buffering=1) if ticks_file else None  # noqa: SIM115

    async def execute(self: Job, ctx: JobContext) -> JobResult:
        if out is not None:
            entered = time.time()
            out.write(f"{ctx.job_name} {ctx.scheduled_for.timestamp()!r} {entered!r}\n")
        return JobResult.success()

    jobs: list[Job] = []
    for i in range(count):
        attrs: dict[str, Any] = {
            "name": f"bench-{prefix}-{i:0{width}d}",
            "schedule": schedule,
            "execute": execute,
        }
        jobs.append(type(f"Bench{prefix.title()}{i}", (Job,), attrs)())
    return jobs


class _Bench(Extension):
    name = "bench"


class Drain(_Bench):
    """One on-demand job: ``bench-noop``, or the job class given."""

    def __init__(self, job: type[Job] = Noop) -> None:
        self.job = job

    def jobs(self) -> list[Job]:
        return [self.job()]


class EverySecond(_Bench):
    def jobs(self) -> list[Job]:
        return _scheduled_jobs("second", "* * * * * *", _count(20), 2)


class Idle(_Bench):
    def jobs(self) -> list[Job]:
        return _scheduled_jobs("yearly", "0 0 0 1 1 *", _count(20), 2)


class Scale(_Bench):
    def jobs(self) -> list[Job]:
        schedule = os.environ.get("BENCH_SCHEDULE", "0 * * * * *")
        return _scheduled_jobs("minute", schedule, _count(10_000), 5)


SOAK_SECOND_JOBS = 20
SOAK_MINUTE_JOBS = 1_000
SOAK_RUNTIME_SCHEDULES = 1_000


class Soak(_Bench):
    def jobs(self) -> list[Job]:
        return [
            Noop(),
            *_scheduled_jobs("second", "* * * * * *", SOAK_SECOND_JOBS, 2),
            *_scheduled_jobs("minute", "0 * * * * *", SOAK_MINUTE_JOBS, 5),
            RuntimeScheduled(),
        ]


drain = Drain()
limited_50 = Drain(Limited50)
keyed = Drain(Keyed)
rated = Drain(Rated)
latency = Drain(Latency)
every_second = EverySecond()
idle = Idle()
scale = Scale()
soak = Soak()
