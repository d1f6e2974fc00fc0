"""What the dashboard reads and changes, through the named queries of ``dashboard.sql``.

A few connections serve the server's request threads (:class:`Connections`). Every action is one
guarded statement followed by a NOTIFY on the pgjobs channel, so listening workers see it at once.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from pgjobs.db import connection_options
from pgjobs.metrics import WAIT_REASONS, count_waits
from pgjobs.named_queries import Queries

Row = dict[str, Any]

OUTCOMES_PER_JOB = 12
"""How many of each job's last finished runs the jobs page shows as squares."""

BUSIEST_KEYS = 5
"""Concurrency keys a job's page names with their running runs, the busiest first."""

SHOWN_NEIGHBOURS = 50
"""How many dependencies, and how many dependants, a run's page lists (the rest are counted)."""

CONNECT_TIMEOUT = 3
"""Seconds a request waits for a new connection before its page says the database is down."""


class DatabaseUnavailable(Exception):
    """No connection to the database could be had for a request (down, or every one busy)."""


class Connections:
    """At most ``size`` connections for the request threads, made when a request needs one.

    Unlike a pool that reconnects in the background with a growing delay, this one connects on
    the request's own thread: while the database is down a page fails at once (the server is
    refused at once) and the first request after it is back connects again. An idle connection
    is checked with an empty statement before it is lent, so one left broken by a restart is
    replaced rather than failing a page.
    """

    def __init__(self, dsn: str, size: int = 4, wait: float = 5.0) -> None:
        self.dsn = dsn
        self.wait = wait
        self.options = connection_options()
        self._slots = threading.BoundedSemaphore(size)
        self._idle: list[psycopg.Connection[Row]] = []
        self._lock = threading.Lock()
        self._closed = False

    def _take(self) -> psycopg.Connection[Row]:
        while True:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                return psycopg.connect(
                    self.dsn,
                    autocommit=True,
                    row_factory=dict_row,
                    connect_timeout=CONNECT_TIMEOUT,
                    application_name="pgjobs-dashboard",
                    **self.options,
                )
            try:
                conn.execute("")
                return conn
            except psycopg.Error:
                conn.close()

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Row]]:
        """A connection for one request; :class:`DatabaseUnavailable` if none can be had."""
        if self._closed or not self._slots.acquire(timeout=self.wait):
            raise DatabaseUnavailable("every database connection is busy")
        try:
            try:
                conn = self._take()
            except psycopg.OperationalError as exc:
                raise DatabaseUnavailable(str(exc)) from exc
            try:
                yield conn
            finally:
                with self._lock:
                    keep = (
                        not (self._closed or conn.closed or conn.broken)
                        and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
                    )
                    if keep:
                        self._idle.append(conn)
                if not keep:
                    conn.close()
        finally:
            self._slots.release()

    def close(self) -> None:
        """Close the idle connections; those in use close when their request ends."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


class DashboardStore:
    """The dashboard's reads and actions on one database and schema."""

    def __init__(self, dsn: str, schema: str = "pgjobs", *, max_connections: int = 4) -> None:
        self.queries = Queries(schema)
        self.connections = Connections(dsn, max_connections)

    def open(self) -> None:
        """Nothing to do: connections are made when a request needs one."""

    def close(self) -> None:
        """Close every connection."""
        self.connections.close()

    def _all(self, name: str, params: dict[str, Any] | None = None) -> list[Row]:
        with self.connections.connection() as conn:
            return conn.execute(self.queries[name], params).fetchall()

    def _one(self, name: str, params: dict[str, Any] | None = None) -> Row | None:
        with self.connections.connection() as conn:
            return conn.execute(self.queries[name], params).fetchone()

    # -- reads -----------------------------------------------------------------------------

    def summary(self) -> Row:
        """``db_now``, ``workers_alive``, ``queued_due``, ``running``, ``failed_24h``,
        ``queues_paused``, ``schedules_in_error``."""
        row = self._one("dashboard_summary")
        assert row is not None
        return row

    def jobs(self) -> list[Row]:
        """Every job: the ``job_status`` columns plus definition details and recent outcomes."""
        return self._all("dashboard_jobs", {"outcomes": OUTCOMES_PER_JOB})

    def job(self, name: str) -> Row | None:
        """One job's definition with what holds its runs back now (``job_controls``), its
        queued runs counted by what they wait for (``waits``: ``waiting_runs`` rows) and its
        schedules (``schedules``: ``schedule_states`` rows); None if there is no such job."""
        with self.connections.connection() as conn:
            job = conn.execute(self.queries["get_job"], {"job": name}).fetchone()
            if job is None:
                return None
            controls = conn.execute(
                self.queries["job_controls"], {"job": name, "keys": BUSIEST_KEYS}
            ).fetchone()
            waits = conn.execute(self.queries["waiting_runs"], {"job": name}).fetchall()
            schedules = conn.execute(self.queries["schedule_states"], {"job": name}).fetchall()
        return {**job, **(controls or {}), "waits": waits, "schedules": schedules}

    def schedules(self) -> list[Row]:
        """Every schedule of every job with what it is doing (``schedule_states`` rows)."""
        return self._all("schedule_states", {"job": None})

    def paused_queues(self) -> list[Row]:
        """The paused queues: ``name``, ``paused_at`` and how many runs they hold."""
        return self._all("dashboard_paused_queues")

    def timeline(self, since: datetime, job: str | None = None, limit: int = 3000) -> list[Row]:
        """Runs that ran, ended or were skipped since ``since``, newest first, at most ``limit``."""
        return self._all("dashboard_timeline", {"since": since, "job": job, "limit": limit})

    def runs(
        self, job: str | None = None, status: str | None = None, limit: int = 100, offset: int = 0
    ) -> list[Row]:
        """Recent runs from ``run_history``, newest first, ``offset`` rows in."""
        return self._all(
            "dashboard_runs", {"job": job, "status": status, "limit": limit, "offset": offset}
        )

    def run(self, run_id: int) -> Row | None:
        """One run with everything it recorded, or None; with its ``dependencies`` and
        ``dependants`` (at most :data:`SHOWN_NEIGHBOURS` of each, ``id``, ``job``, ``status``,
        ``blocked_by``, ``any_outcome``) and how many of each it has (``dependencies_total``,
        ``dependants_total``)."""
        with self.connections.connection() as conn:
            run = conn.execute(self.queries["dashboard_run"], {"id": run_id}).fetchone()
            if run is None:
                return None
            neighbours = conn.execute(
                self.queries["run_dependency_lists"], {"id": run_id, "limit": SHOWN_NEIGHBOURS}
            ).fetchone()
        return {**run, **(neighbours or {})}

    def workers(self, limit: int = 200) -> list[Row]:
        """Worker rows, live ones first, each with the runs it is executing."""
        return self._all("dashboard_workers", {"limit": limit})

    def queues(self) -> list[Row]:
        """Per queue: its pause and rate limit, due, delayed and running runs, age of the oldest
        due run, the live workers serving it, and ``waiting``: its queued runs by reason."""
        with self.connections.connection() as conn:
            queues = conn.execute(self.queries["metrics_queues"]).fetchall()
            waits = conn.execute(self.queries["waiting_runs"], {"job": None}).fetchall()
        waiting = count_waits(waits, "queue")
        for queue in queues:
            queue["waiting"] = waiting.get(queue["queue"], dict.fromkeys(WAIT_REASONS, 0))
        return queues

    # -- actions ---------------------------------------------------------------------------

    def _act(self, name: str, params: dict[str, Any]) -> Row | None:
        with self.connections.connection() as conn, conn.transaction():
            row = conn.execute(self.queries[name], params).fetchone()
            if row is not None:
                conn.execute(
                    self.queries["notify"],
                    {"channel": self.queries.channel, "message": "dashboard"},
                )
            return row

    def run_now(self, job: str) -> int | None:
        """Queue a manual run of ``job``; its id, or None if there is no such job."""
        row = self._act("dashboard_run_now", {"job": job})
        return None if row is None else int(row["id"])

    def set_paused(self, job: str, paused: bool) -> bool:
        """Pause or resume ``job``; False if there is no such job."""
        return self._act("dashboard_set_paused", {"job": job, "paused": paused}) is not None

    def set_queue_paused(self, queue: str, paused: bool) -> bool:
        """Pause or resume ``queue`` (a queue nothing uses yet may be paused); False if it was
        paused, or not paused, already."""
        return self._act("pause_queue" if paused else "resume_queue", {"queue": queue}) is not None

    def retry(self, run_id: int) -> int | None:
        """Queue a new attempt of a run that did not succeed; its id, or None if not possible."""
        row = self._act("dashboard_retry_run", {"id": run_id})
        return None if row is None else int(row["id"])

    def cancel(self, run_id: int) -> str | None:
        """Cancel a queued run or ask a running one to stop; its status after, or None."""
        row = self._act("dashboard_cancel_run", {"id": run_id})
        return None if row is None else str(row["status"])
