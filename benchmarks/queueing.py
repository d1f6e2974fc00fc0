"""Putting runs in the queue: pgjobs' enqueue API, or plain SQL where this pgjobs has no such API.

The benchmarks measure the API users call. Until the installed pgjobs has it, they fall back to
the statement the API amounts to (one multi-row ``INSERT … SELECT FROM unnest``) and say so in the
results (``enqueue_api``).
"""

from __future__ import annotations

from typing import Any

import psycopg

import pgjobs

_INSERT_MANY = """
INSERT INTO pgjobs.runs (job, trigger, payload)
SELECT job, 'enqueue', payload
FROM unnest(%(jobs)s::text[], %(payloads)s::jsonb[]) AS r(job, payload)
"""

_EMPTY = """
SELECT NOT EXISTS (SELECT 1 FROM pgjobs.runs WHERE status = 'queued')
   AND NOT EXISTS (SELECT 1 FROM pgjobs.runs WHERE status = 'running')
"""

_INSERT_ONE = "INSERT INTO pgjobs.runs (job, trigger) VALUES (%s, 'enqueue')"


def api_name(many: bool) -> str:
    """Which way the benchmarks enqueue with this pgjobs."""
    if many:
        return "pgjobs.enqueue_many_sync" if _api("enqueue_many_sync") else "INSERT … unnest"
    return "pgjobs.enqueue_sync" if _api("enqueue_sync") else "INSERT … VALUES"


def enqueue_many(conn: psycopg.Connection[Any], job: str, count: int) -> None:
    """Enqueue ``count`` runs of ``job`` (no payload) in one transaction, committed on return."""
    many = _api("enqueue_many_sync")
    with conn.transaction():
        if many is not None:
            many(conn, [{"job": job, "payload": None} for _ in range(count)])
        else:
            conn.execute(_INSERT_MANY, {"jobs": [job] * count, "payloads": [None] * count})


def enqueue_one(conn: psycopg.Connection[Any], job: str) -> None:
    """Enqueue one run of ``job`` in a transaction of its own."""
    one = _api("enqueue_sync")
    with conn.transaction():
        if one is not None:
            one(conn, job)
        else:
            conn.execute(_INSERT_ONE, [job])


def _api(name: str) -> Any:
    return getattr(pgjobs, name, None)


def queue_empty(conn: psycopg.Connection[Any]) -> bool:
    """True when no run is queued or running (two probes of the partial indexes, no count)."""
    row = conn.execute(_EMPTY).fetchone()
    return bool(row and row[0])
