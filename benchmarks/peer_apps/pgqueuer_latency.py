"""pgqueuer's side of the latency measure; runs with the peers' virtualenv.

- ``python -m benchmarks.peer_apps.pgqueuer_latency worker BATCH MAX_CONCURRENT``: the worker as
  the drain starts it (``pgqueuer.run``, on uvloop when it is installed) with one entrypoint,
  ``latency``, which appends ``key entered`` (its payload, then ``time.time()`` on entry) to
  ``<BENCH_ENTRY_FILE>.<pid>``.
- ``python -m benchmarks.peer_apps.pgqueuer_latency install``: create pgqueuer's tables.
- ``python -m benchmarks.peer_apps.pgqueuer_latency enqueue KEY``: enqueue one run keyed KEY.
- ``python -m benchmarks.peer_apps.pgqueuer_latency client COUNT OUT``: enqueue COUNT runs keyed
  0 … COUNT-1 with ``Queries.enqueue``, one statement each (its own transaction), 15 to 25 ms
  apart, and write ``key before after`` to OUT: ``time.time()`` before the call and once it
  returned, its commit done.

``BENCH_DSN`` is a postgresql:// URL (asyncpg takes no key=value DSN).
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import cache
from typing import TextIO

import asyncpg
import pgqueuer
from pgqueuer import PgQueuer
from pgqueuer.db import AsyncpgDriver
from pgqueuer.models import Job
from pgqueuer.queries import Queries


@cache
def _entry_file() -> TextIO:
    return open(f"{os.environ['BENCH_ENTRY_FILE']}.{os.getpid()}", "a", buffering=1)


@asynccontextmanager
async def create() -> AsyncIterator[PgQueuer]:
    conn = await asyncpg.connect(os.environ["BENCH_DSN"])
    pgq = PgQueuer(AsyncpgDriver(conn))

    @pgq.entrypoint("latency")
    async def latency(job: Job) -> None:
        entered = time.time()
        key = job.payload.decode() if job.payload else "-"
        _entry_file().write(f"{key} {entered!r}\n")

    try:
        yield pgq
    finally:
        await conn.close()


async def _queries() -> Queries:
    return Queries(AsyncpgDriver(await asyncpg.connect(os.environ["BENCH_DSN"])))


async def _install() -> None:
    await (await _queries()).install()


async def _enqueue(key: str) -> None:
    await (await _queries()).enqueue("latency", key.encode())


async def _client(count: int, out: str) -> None:
    queries = await _queries()
    rng = random.Random(count)
    lines = []
    for i in range(count):
        await asyncio.sleep(rng.uniform(0.015, 0.025))
        before = time.time()
        await queries.enqueue("latency", str(i).encode())
        after = time.time()
        lines.append(f"{i} {before!r} {after!r}\n")
    with open(out, "w") as file:
        file.writelines(lines)


def _worker(batch_size: int, max_concurrent_tasks: int) -> None:
    runner = pgqueuer.run(create, batch_size=batch_size, max_concurrent_tasks=max_concurrent_tasks)
    try:
        import uvloop
    except ImportError:
        asyncio.run(runner)
    else:
        uvloop.run(runner)


if __name__ == "__main__":
    command = sys.argv[1]
    if command == "worker":
        _worker(int(sys.argv[2]), int(sys.argv[3]))
    elif command == "install":
        asyncio.run(_install())
    elif command == "enqueue":
        asyncio.run(_enqueue(sys.argv[2]))
    elif command == "client":
        asyncio.run(_client(int(sys.argv[2]), sys.argv[3]))
    else:
        raise SystemExit(f"unknown command {command!r}")
