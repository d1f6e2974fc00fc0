"""Putting runs in the queue the way users do: pgjobs' enqueue API, each call in a transaction of
its own; and seeing when the queue is empty again."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg

import pgjobs

_EMPTY = """
SELECT NOT EXISTS (SELECT 1 FROM pgjobs.runs WHERE status = 'queued')
   AND NOT EXISTS (SELECT 1 FROM pgjobs.runs WHERE status = 'running')
"""


def enqueue_many(
    conn: psycopg.Connection[Any],
    job: str,
    count: int,
    payload: Callable[[int], Any] | None = None,
) -> None:
    """``enqueue_many_sync`` of ``count`` runs of ``job``, committed on return; run ``i`` (from
    0) has the payload ``payload(i)``, or none."""
    requests = [{"job": job, "payload": payload(i) if payload else None} for i in range(count)]
    with conn.transaction():
        pgjobs.enqueue_many_sync(conn, requests)


_PLAIN_INSERT = "INSERT INTO pgjobs.runs (job, trigger) VALUES (%s, 'enqueue')"


def insert_plain(conn: psycopg.Connection[Any], job: str) -> None:
    """The floor of a single enqueue from Python: a plain ``INSERT`` of one queued run (the runs
    table's trigger and indexes included) through psycopg alone, prepared, on an autocommit
    connection; no pgjobs code on the client."""
    conn.execute(_PLAIN_INSERT, (job,), prepare=True)


def enqueue_in_transaction(conn: psycopg.Connection[Any], job: str) -> None:
    """``enqueue_sync`` of one run of ``job`` between ``BEGIN`` and ``COMMIT``."""
    with conn.transaction():
        pgjobs.enqueue_sync(conn, job)


def enqueue_autocommit(conn: psycopg.Connection[Any], job: str) -> None:
    """``enqueue_sync`` of one run of ``job`` on an autocommit connection: its own transaction."""
    pgjobs.enqueue_sync(conn, job)


def queue_empty(conn: psycopg.Connection[Any]) -> bool:
    """True when no run is queued or running (two probes of the partial indexes, no count)."""
    row = conn.execute(_EMPTY).fetchone()
    return bool(row and row[0])
