"""pgqueuer's side of the workloads; runs with the peers' virtualenv.

- ``python -m benchmarks.peer_apps.pgqueuer_app worker [BATCH MAX_CONCURRENT]``: what
  ``pgq run benchmarks.peer_apps.pgqueuer_app:create`` does (``pgqueuer.run``, on uvloop when it
  is installed), without the ``pgq`` command line: a worker with the no-op entrypoint
  ``noop`` and, with ``BENCH_JOBS`` > 0, that many schedules firing every second
  (``bench_second_NN``), each appending ``job - entered next_run`` to
  ``<BENCH_TICKS_FILE>.<pid>``: pgqueuer does not tell a scheduled function which tick it runs
  for, only the next one it set, so the harness takes each execution's tick from the previous
  execution's ``next_run``.
- ``python -m benchmarks.peer_apps.pgqueuer_app install``: create pgqueuer's tables.
- ``python -m benchmarks.peer_apps.pgqueuer_app enqueue N``: enqueue N no-op jobs in one batch.

``BENCH_DSN`` is a postgresql:// URL (asyncpg takes no key=value DSN).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pgqueuer
from pgqueuer import PgQueuer
from pgqueuer.db import AsyncpgDriver
from pgqueuer.models import Job, Schedule
from pgqueuer.queries import Queries


async def _driver() -> AsyncpgDriver:
    return AsyncpgDriver(await asyncpg.connect(os.environ["BENCH_DSN"]))


@asynccontextmanager
async def create() -> AsyncIterator[PgQueuer]:
    conn = await asyncpg.connect(os.environ["BENCH_DSN"])
    pgq = PgQueuer(AsyncpgDriver(conn))

    @pgq.entrypoint("noop")
    async def noop(job: Job) -> None:
        return None

    count = int(os.environ.get("BENCH_JOBS", "0"))
    ticks_file = os.environ.get("BENCH_TICKS_FILE")
    out = open(f"{ticks_file}.{os.getpid()}", "a", buffering=1) if ticks_file else None  # noqa: SIM115

    def scheduled(name: str) -> Any:
        async def tick(schedule: Schedule) -> None:
            entered = time.time()
            if out is not None:
                out.write(f"{name} - {entered!r} {schedule.next_run.timestamp()!r}\n")

        return tick

    for i in range(count):
        name = f"bench_second_{i:02d}"
        pgq.schedule(name, "* * * * * *")(scheduled(name))
    try:
        yield pgq
    finally:
        await conn.close()


async def _install() -> None:
    driver = await _driver()
    await Queries(driver).install()


async def _enqueue(count: int) -> None:
    driver = await _driver()
    await Queries(driver).enqueue(["noop"] * count, [None] * count, [0] * count)


def _worker(args: list[str]) -> None:
    options: dict[str, Any] = {}
    if args:
        options = {"batch_size": int(args[0]), "max_concurrent_tasks": int(args[1])}
    runner = pgqueuer.run(create, **options)
    try:
        import uvloop
    except ImportError:
        asyncio.run(runner)
    else:
        uvloop.run(runner)


if __name__ == "__main__":
    command = sys.argv[1]
    if command == "worker":
        _worker(sys.argv[2:])
    elif command == "install":
        asyncio.run(_install())
    elif command == "enqueue":
        asyncio.run(_enqueue(int(sys.argv[2])))
    else:
        raise SystemExit(f"unknown command {command!r}")
