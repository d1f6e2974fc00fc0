"""procrastinate's side of the latency measure; runs with the peers' virtualenv.

- ``procrastinate --app benchmarks.peer_apps.procrastinate_latency.app worker``: a worker with
  one task, ``latency``, which appends ``key entered`` (its ``key`` argument, then
  ``time.time()`` on entry) to ``<BENCH_ENTRY_FILE>.<pid>``.
- ``python -m benchmarks.peer_apps.procrastinate_latency install``: apply procrastinate's schema.
- ``python -m benchmarks.peer_apps.procrastinate_latency enqueue KEY``: defer one run keyed KEY.
- ``python -m benchmarks.peer_apps.procrastinate_latency client COUNT OUT``: defer COUNT runs
  keyed 0 … COUNT-1 with ``defer_async``, one statement each on the connector's autocommit pool
  (its own transaction), 15 to 25 ms apart, and write ``key before after`` to OUT:
  ``time.time()`` before the call and once it returned, its commit done.

``BENCH_DSN`` is the database's DSN.
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
import time
from functools import cache
from typing import TextIO

from procrastinate import App, PsycopgConnector

app = App(connector=PsycopgConnector(conninfo=os.environ.get("BENCH_DSN", "")))


@cache
def _entry_file() -> TextIO:
    return open(f"{os.environ['BENCH_ENTRY_FILE']}.{os.getpid()}", "a", buffering=1)


@app.task(name="latency")
async def latency(key: str) -> None:
    entered = time.time()
    _entry_file().write(f"{key} {entered!r}\n")


async def _install() -> None:
    async with app.open_async():
        await app.schema_manager.apply_schema_async()


async def _enqueue(key: str) -> None:
    async with app.open_async():
        await latency.defer_async(key=key)


async def _client(count: int, out: str) -> None:
    rng = random.Random(count)
    lines = []
    async with app.open_async():
        for i in range(count):
            await asyncio.sleep(rng.uniform(0.015, 0.025))
            before = time.time()
            await latency.defer_async(key=str(i))
            after = time.time()
            lines.append(f"{i} {before!r} {after!r}\n")
    with open(out, "w") as file:
        file.writelines(lines)


if __name__ == "__main__":
    command = sys.argv[1]
    if command == "install":
        asyncio.run(_install())
    elif command == "enqueue":
        asyncio.run(_enqueue(sys.argv[2]))
    elif command == "client":
        asyncio.run(_client(int(sys.argv[2]), sys.argv[3]))
    else:
        raise SystemExit(f"unknown command {command!r}")
