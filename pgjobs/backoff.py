"""Back-off between attempts to reach the database, and waiting for it at start.

A process that starts while PostgreSQL is down, restarting or refusing connections must not exit
with a traceback: it waits, says so once per attempt, and goes on when the server answers.
:class:`Backoff` says how long to wait before the next attempt (exponential, capped, jittered so
that many processes restarted together do not knock in step); :func:`wait_for_database` uses it
to wait for a first connection.

This module needs only the standard library, psycopg and :mod:`pgjobs.db` (for a readable and
redacted reason), so any layer (the CLI, the dashboard, the metrics exporter, the worker) can use
it.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping
from typing import Any

import psycopg

from pgjobs.db import connection_options, first_line, redact

INITIAL_DELAY = 0.5
"""Seconds before the second attempt."""

MAX_DELAY = 10.0
"""No wait between two attempts is longer than this (plus jitter)."""


class Backoff:
    """Delays that grow from ``initial`` by ``factor`` per attempt up to ``cap`` seconds.

    Each :meth:`next_delay` counts one attempt and returns the wait before the next one:
    ``initial * factor ** (attempt - 1)``, capped at ``cap``, then moved by up to ``jitter``
    (a fraction) either way; it is never negative and never more than ``cap * (1 + jitter)``.
    :meth:`reset` starts again from ``initial`` after a success. An ``initial`` above ``cap``
    is taken as ``cap``. Not thread-safe: one per loop.
    """

    def __init__(
        self,
        initial: float = INITIAL_DELAY,
        cap: float = MAX_DELAY,
        *,
        factor: float = 2.0,
        jitter: float = 0.1,
        rng: random.Random | None = None,
    ) -> None:
        if initial <= 0 or cap <= 0 or factor < 1 or not 0 <= jitter < 1:
            raise ValueError(
                "Backoff needs initial > 0, cap > 0, factor >= 1 and 0 <= jitter < 1, got "
                f"initial={initial}, cap={cap}, factor={factor}, jitter={jitter}"
            )
        self.initial = min(initial, cap)
        self.cap = cap
        self.factor = factor
        self.jitter = jitter
        self.attempt = 0
        """How many attempts :meth:`next_delay` has counted since the last :meth:`reset`."""
        self._random = rng or random.Random()

    def next_delay(self) -> float:
        """Count one (failed) attempt; the seconds to wait before the next one."""
        self.attempt += 1
        # min() before the power would overflow: attempts go on for as long as the outage.
        exponent = min(self.attempt - 1, 64)
        delay = min(self.cap, self.initial * self.factor**exponent)
        return max(0.0, delay * (1 + self._random.uniform(-self.jitter, self.jitter)))

    def reset(self) -> None:
        """Start again from ``initial`` (after an attempt succeeded)."""
        self.attempt = 0


def wait_for_database(
    dsn: str,
    *,
    what: str,
    log: logging.Logger | logging.LoggerAdapter[Any],
    check: Callable[[psycopg.Connection[Any]], object] | None = None,
    backoff: Backoff | None = None,
    connect_timeout: int = 5,
    options: Mapping[str, Any] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> psycopg.Connection[Any]:
    """Connect to ``dsn``, retrying with ``backoff`` for as long as the server cannot be reached.

    Every failed attempt logs one warning on ``log`` that names ``what`` is waiting, the reason
    and the wait before the next attempt; the first success after failures logs one info line.
    Returns the open (autocommit) connection, for the caller to use and close. ``check``, if
    given, is called with the new connection first (to check the schema, say); a connection
    failure inside it counts as a failed attempt, anything else it raises is raised.

    Only connection failures (:class:`psycopg.OperationalError`: server down, starting up,
    refusing connections, unreachable, too many clients) are retried; an invalid DSN raises
    :class:`psycopg.ProgrammingError` at once. Ctrl-C (KeyboardInterrupt) ends the wait.
    ``options`` are psycopg's connection keywords (default: :func:`pgjobs.db.connection_options`).
    """
    delays = backoff or Backoff()
    keywords = connection_options() if options is None else dict(options)
    while True:
        conn: psycopg.Connection[Any] | None = None
        try:
            conn = psycopg.connect(
                dsn, autocommit=True, connect_timeout=connect_timeout, **keywords
            )
            if check is not None:
                check(conn)
        except psycopg.OperationalError as exc:
            if conn is not None:
                conn.close()
            delay = delays.next_delay()
            log.warning(
                "%s: database unavailable (attempt %d: %s); retrying in %.1fs",
                what,
                delays.attempt,
                redact(first_line(exc), dsn),
                delay,
            )
            sleep(delay)
            continue
        except BaseException:
            if conn is not None:
                conn.close()
            raise
        if delays.attempt:
            log.info("%s: database reachable after %d failed attempt(s)", what, delays.attempt)
        delays.reset()
        return conn
