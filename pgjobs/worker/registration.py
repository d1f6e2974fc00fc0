"""Registration: the jobs' rows and the worker's own row, written at start (and again when a
reaper took the worker for dead).

Workers that start at the same instant upsert the same jobs. Each takes the rows' locks in one
order (by name) and writes them in that order, so none waits for a lock another holds while
holding one it wants; a deadlock or serialization failure that still happens (another writer of
``jobs`` in another order) is retried.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
from dataclasses import asdict
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from pgjobs import __version__
from pgjobs.db import first_line
from pgjobs.profile import ProfileSchedule
from pgjobs.registry import JobDefinition
from pgjobs.worker.connection import is_transient_conflict
from pgjobs.worker.core import WorkerCore

log = logging.getLogger("pgjobs.worker")

REGISTRATION_ATTEMPTS = 10


class Registration(WorkerCore):
    async def _sync_jobs(self) -> None:
        """Upsert every registered job's effective definition (code < profile; pause is kept),
        with the rate limits of its jobs and of the queues it serves, retrying transient
        conflicts with other workers starting at the same time."""
        for attempt in range(1, REGISTRATION_ATTEMPTS + 1):
            try:
                await self._sync_jobs_once()
                return
            except psycopg.errors.Error as exc:
                if not is_transient_conflict(exc) or attempt == REGISTRATION_ATTEMPTS:
                    raise
                delay = random.uniform(0.01, 0.05 * attempt)
                log.info(
                    "registering jobs met another worker (%s); retrying in %.2fs",
                    first_line(exc),
                    delay,
                )
                await asyncio.sleep(delay)

    async def _sync_jobs_once(self) -> None:
        assert self.store is not None
        store = self.store
        definitions = sorted(self.registry.definitions.values(), key=lambda d: d.name)
        async with store.conn.transaction():
            await store.mark_registering()
            db_now, existing = await store.lock_registered_jobs(sorted(self.job_names))
            rows = []
            for d in definitions:
                old = existing.get(d.name)
                reset = (
                    old is None or old["schedule"] != d.schedule or old["timezone"] != d.timezone
                )
                reset = reset or (old is not None and old["next_fire_at"] is None)
                cron = d.cron
                rows.append(
                    job_row(d, next_fire_at=cron.next_after(db_now) if cron else None, reset=reset)
                )
            await store.upsert_jobs(rows)
            await store.sync_profile_schedules(
                [d.name for d in definitions],
                [profile_schedule_row(d.name, s) for d in definitions for s in d.schedules],
            )
            await store.sync_rate_limits("job", {d.name: d.rate_limit for d in definitions})
            queue_settings = self.registry.queue_settings
            await store.sync_rate_limits(
                "queue",
                {
                    q: queue_settings[q].rate_limit if q in queue_settings else None
                    for q in self.queues
                },
            )

    async def _register(self) -> None:
        """The worker's row and its registered jobs, which its claims and ticks read."""
        assert self.store is not None
        registered_at = await self.store.register_worker(
            host=socket.gethostname(),
            pid=os.getpid(),
            version=__version__,
            queues=self.queues,
            concurrency=self.settings.concurrency,
            jobs=self.registered,
            ttl=self.settings.lease,
        )
        if self._registered_at is None:
            self._registered_at = registered_at


def job_row(d: JobDefinition, *, next_fire_at: datetime | None, reset: bool) -> dict[str, Any]:
    """The ``upsert_job`` parameters of one job definition."""
    return {
        "name": d.name,
        "extension": d.extension,
        "description": d.description,
        "schedule": d.schedule,
        "schedule_source": d.schedule_source,
        "timezone": d.timezone,
        "enabled": d.enabled,
        "tags": list(d.tags),
        "timeout_seconds": d.timeout,
        "max_attempts": d.max_attempts,
        "retry_backoff": Jsonb(asdict(d.retry_backoff)),
        "overlap": d.overlap,
        "misfire": d.misfire,
        "backfill_cap": d.backfill_cap,
        "priority": d.priority,
        "queue": d.queue,
        "parameters": Jsonb(dict(d.parameters)),
        "max_concurrency": d.max_concurrency,
        "concurrency_key": d.concurrency_key_label,
        "rate_limit": str(d.rate_limit) if d.rate_limit else None,
        "next_fire_at": next_fire_at,
        "reset_next_fire": reset,
    }


def profile_schedule_row(job: str, s: ProfileSchedule) -> dict[str, Any]:
    """The ``schedules`` row of a further schedule the profile gives ``job``."""
    return {
        "job": job,
        "name": s.name,
        "cron": s.schedule,
        "timezone": s.timezone,
        "payload": s.payload,
        "parameters": s.parameters,
        "enabled": s.enabled,
        "misfire": s.misfire,
        "overlap": s.overlap,
    }
