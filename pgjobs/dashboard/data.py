"""What the dashboard reads and changes, through the named queries of ``dashboard.sql``.

One small connection pool serves the server's request threads. Every action is one guarded
statement followed by a NOTIFY on the pgjobs channel, so listening workers see it at once.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from pgjobs.store import Queries

Row = dict[str, Any]

OUTCOMES_PER_JOB = 12
"""How many of each job's last finished runs the jobs page shows as squares."""


class DashboardStore:
    """The dashboard's reads and actions on one database and schema."""

    def __init__(self, dsn: str, schema: str = "pgjobs", *, max_connections: int = 4) -> None:
        self.queries = Queries(schema)
        self.pool: ConnectionPool[psycopg.Connection[Row]] = ConnectionPool(
            dsn,
            min_size=1,
            max_size=max_connections,
            open=False,
            timeout=5,
            kwargs={"autocommit": True, "row_factory": dict_row},
            connection_class=psycopg.Connection[Row],
            name="pgjobs-dashboard",
        )

    def open(self) -> None:
        """Open the pool (connections are made in the background)."""
        self.pool.open(wait=False)

    def close(self) -> None:
        """Close every connection."""
        self.pool.close(timeout=2)

    def _all(self, name: str, params: dict[str, Any] | None = None) -> list[Row]:
        with self.pool.connection() as conn:
            return conn.execute(self.queries[name], params).fetchall()

    def _one(self, name: str, params: dict[str, Any] | None = None) -> Row | None:
        with self.pool.connection() as conn:
            return conn.execute(self.queries[name], params).fetchone()

    # -- reads -----------------------------------------------------------------------------

    def summary(self) -> Row:
        """``db_now``, ``workers_alive``, ``queued_due``, ``running``, ``failed_24h``."""
        row = self._one("dashboard_summary")
        assert row is not None
        return row

    def jobs(self) -> list[Row]:
        """Every job: the ``job_status`` columns plus definition details and recent outcomes."""
        return self._all("dashboard_jobs", {"outcomes": OUTCOMES_PER_JOB})

    def timeline(self, since: datetime, job: str | None = None, limit: int = 3000) -> list[Row]:
        """Runs that ran, ended or were skipped since ``since``, newest first, at most ``limit``."""
        return self._all("dashboard_timeline", {"since": since, "job": job, "limit": limit})

    def runs(
        self, job: str | None = None, status: str | None = None, limit: int = 100
    ) -> list[Row]:
        """Recent runs from ``run_history``, newest first."""
        return self._all("dashboard_runs", {"job": job, "status": status, "limit": limit})

    def run(self, run_id: int) -> Row | None:
        """One run with everything it recorded, or None."""
        return self._one("dashboard_run", {"id": run_id})

    def workers(self, limit: int = 200) -> list[Row]:
        """Worker rows, live ones first, each with the runs it is executing."""
        return self._all("dashboard_workers", {"limit": limit})

    def queues(self) -> list[Row]:
        """Per queue: due, delayed and running runs, age of the oldest due run."""
        return self._all("metrics_queues")

    # -- actions ---------------------------------------------------------------------------

    def _act(self, name: str, params: dict[str, Any]) -> Row | None:
        with self.pool.connection() as conn, conn.transaction():
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

    def retry(self, run_id: int) -> int | None:
        """Queue a new attempt of a run that did not succeed; its id, or None if not possible."""
        row = self._act("dashboard_retry_run", {"id": run_id})
        return None if row is None else int(row["id"])

    def cancel(self, run_id: int) -> str | None:
        """Cancel a queued run or ask a running one to stop; its status after, or None."""
        row = self._act("dashboard_cancel_run", {"id": run_id})
        return None if row is None else str(row["status"])
