"""A FastAPI application that runs a pgjobs worker in its own process, for its lifespan.

From the ``examples/`` directory, with ``pip install fastapi uvicorn``::

    PGJOBS_DSN=postgresql://app@db.internal/app uvicorn fastapi_app:app

The worker starts with the application and stops with it: uvicorn's SIGTERM ends the lifespan,
which gives running jobs their grace period and hands back what cannot finish. The same code
runs on Starlette (``Starlette(lifespan=lifespan)``).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import psycopg
from fastapi import FastAPI, Request, Response

import pgjobs


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, pgjobs.RunningWorker]]:
    # PGJOBS_DSN gives the database; the application keeps its own signal handlers.
    async with pgjobs.run_worker("my_extension:extension", concurrency=4, grace=20) as worker:
        yield {"pgjobs_worker": worker}  # request.state.pgjobs_worker


app = FastAPI(lifespan=lifespan)


@app.post("/reports")
async def queue_report(window: str = "1h") -> dict[str, int]:
    """Queue a report run; the worker of this process (or any other) executes it."""
    async with await psycopg.AsyncConnection.connect(os.environ["PGJOBS_DSN"]) as conn:
        run_id = await pgjobs.enqueue(conn, "my-extension-report", {"window": window})
    return {"run_id": run_id}  # committed when the connection's block ends


@app.get("/health")
async def health(request: Request, response: Response) -> dict[str, str]:
    """``running``, or 503 once the worker has crashed (its error is in the log)."""
    worker: pgjobs.RunningWorker = request.state.pgjobs_worker
    if worker.alive:
        return {"worker": "running"}
    response.status_code = 503
    return {"worker": "stopped"}
