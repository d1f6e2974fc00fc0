"""Retention: pruning the history of finished runs.

:func:`prune_runs` is what ``pgjobs runs prune`` and the built-in job ``pgjobs-prune-runs`` call.
It never deletes a queued or running run, nor the latest finished run of a job (so every job
keeps its last outcome in ``job_status``), and it deletes in short batches, each its own
transaction, so pruning millions of rows never holds locks for long.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import psycopg

from pgjobs.errors import ConfigError
from pgjobs.named_queries import Queries

DEFAULT_BATCH = 10_000

_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_duration(text: str) -> timedelta:
    """``30d``, ``12h``, ``90m``, ``45s``, ``2w`` as a timedelta.

    Raises :class:`ConfigError` with a one-line message for anything else.
    """
    match = _DURATION.match(text) if isinstance(text, str) else None
    if match is None:
        raise ConfigError(f"invalid duration {text!r}: use a number followed by s, m, h, d or w")
    try:
        return timedelta(**{_UNITS[match[2]]: int(match[1])})
    except OverflowError:
        raise ConfigError(f"invalid duration {text!r}: too long") from None


def prune_runs(
    conn: psycopg.Connection[Any],
    schema: str,
    older_than: timedelta,
    *,
    dry_run: bool = False,
    batch: int = DEFAULT_BATCH,
    stop: Callable[[], bool] | None = None,
) -> int:
    """Delete finished runs created more than ``older_than`` ago; return how many went.

    Guarantees: runs that are queued or running are never deleted, and the latest finished run
    of each job stays however old it is. The cutoff is fixed on the database clock when the
    prune starts. Runs are deleted oldest first, at most ``batch`` per transaction: each batch
    commits on its own unless ``conn`` is already inside a transaction (then they are
    savepoints, and the caller's commit decides). Rows another transaction has locked are left
    for the next prune. ``stop``, checked between batches, ends the prune early.

    With ``dry_run``, nothing is deleted and the number that would be is returned.
    """
    if older_than < timedelta(0):
        raise ConfigError(f"older_than must not be negative, got {older_than}")
    if batch < 1:
        raise ConfigError(f"batch must be at least 1, got {batch}")
    queries = Queries(schema)
    # Every statement runs in a transaction block of its own, so that on a connection outside
    # a transaction each batch commits (a statement outside a block would open one for good).
    with conn.transaction():
        cutoff = _scalar(conn, queries["prune_cutoff"], {"older_than": older_than})
        if dry_run:
            return int(_scalar(conn, queries["count_prunable_runs"], {"cutoff": cutoff}))
    total = 0
    while stop is None or not stop():
        with conn.transaction():
            deleted = int(
                _scalar(conn, queries["prune_runs_batch"], {"cutoff": cutoff, "batch": batch})
            )
        total += deleted
        if deleted < batch:
            break
    return total


def _scalar(conn: psycopg.Connection[Any], query: str, params: dict[str, Any]) -> Any:
    with conn.cursor(row_factory=psycopg.rows.tuple_row) as cur:
        row = cur.execute(query, params).fetchone()
    assert row is not None
    return row[0]
