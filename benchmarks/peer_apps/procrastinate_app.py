"""procrastinate's side of the workloads; runs with the peers' virtualenv.

- ``procrastinate --app benchmarks.peer_apps.procrastinate_app.app worker``: a worker with the
  no-op task ``noop`` and, with ``BENCH_JOBS`` > 0, that many periodic tasks firing every second
  (``bench_second_NN``), each appending ``job tick entered`` to ``<BENCH_TICKS_FILE>.<pid>``
  (procrastinate passes the tick to a periodic task as ``timestamp``).
- ``python -m benchmarks.peer_apps.procrastinate_app install``: apply procrastinate's schema.
- ``python -m benchmarks.peer_apps.procrastinate_app enqueue N``: defer N no-op jobs in one batch.

``BENCH_DSN`` is the database's DSN.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from typing import Any

from procrastinate import App, PsycopgConnector

app = App(connector=PsycopgConnector(conninfo=os.environ.get("BENCH_DSN", "")))


@app.task(name="noop")
async def noop() -> None:
    return None


def _scheduled(name: str, out: Any) -> Any:
    async def tick(timestamp: int) -> None:
        entered = time.time()
        if out is not None:
            out.write(f"{name} {float(timestamp)!r} {entered!r}\n")

    tick.__name__ = name
    return tick


def _register_periodic() -> None:
    count = int(os.environ.get("BENCH_JOBS", "0"))
    ticks_file = os.environ.get("BENCH_TICKS_FILE")
    out = open(f"{ticks_file}.{os.getpid()}", "a", buffering=1) if ticks_file else None  # noqa: SIM115
    for i in range(count):
        name = f"bench_second_{i:02d}"
        task = app.task(name=name)(_scheduled(name, out))
        app.periodic(cron="* * * * * *", periodic_id=name)(task)


_register_periodic()


async def _install() -> None:
    async with app.open_async():
        await app.schema_manager.apply_schema_async()


async def _enqueue(count: int) -> None:
    async with app.open_async():
        await noop.batch_defer_async(*({} for _ in range(count)))


if __name__ == "__main__":
    command = sys.argv[1]
    if command == "install":
        asyncio.run(_install())
    elif command == "enqueue":
        asyncio.run(_enqueue(int(sys.argv[2])))
    else:
        raise SystemExit(f"unknown command {command!r}")
