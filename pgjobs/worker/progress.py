"""Progress: what running jobs report with ``ctx.progress(done, total, message)``, written on their
runs a few times a second at most.

A job may report as often as it likes, from the event loop or from a thread of the executor:
:class:`ProgressReports` keeps only the latest report of each run (checked by ``ctx.progress``)
in memory and never touches the database. The worker's loop writes what is pending every
:data:`PROGRESS_INTERVAL` seconds, for all its runs in one statement (``record_progress``), and
before the statement that records runs' ends, so a run's last report is on its row when it ends.
The statement is guarded by state and owner: a report that arrives once its run ended (a sync job
still running after its timeout), or once the run is no longer this worker's, changes nothing.

Progress is best effort. A report that cannot be written because the connection was lost waits
for the next one (unless a newer one replaced it); one the database refuses is dropped with a
warning. Neither costs a run its outcome.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Collection
from typing import Any

import psycopg

from pgjobs.job import ProgressReport
from pgjobs.store import Outcome
from pgjobs.worker.connection import is_connection_error
from pgjobs.worker.core import WorkerCore

log = logging.getLogger("pgjobs.worker")

PROGRESS_INTERVAL = 0.5
"""Seconds between two writes of the pending progress reports (one statement for all runs)."""


class ProgressReports:
    """The latest progress report of each run, until the loop writes them. Safe from any thread.

    :meth:`report` is where the ``ctx.progress`` of every run of the worker sends its checked
    report (a :data:`~pgjobs.job.ProgressSink`): a dict assignment under a lock, however often it
    is called.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[int, ProgressReport] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def report(self, run_id: int, done: int, total: int | None, message: str | None) -> None:
        """Keep ``run_id``'s report, replacing any it made since the last write. The values come
        checked: ``ctx.progress`` checks them wherever the run runs
        (:func:`pgjobs.job.progress_report`)."""
        with self._lock:
            self._pending[run_id] = ProgressReport(run_id, done, total, message)

    def take_runs(self, run_ids: Collection[int]) -> list[ProgressReport]:
        """The waiting reports of ``run_ids``, by run id; the others keep waiting."""
        with self._lock:
            taken = [self._pending.pop(i) for i in run_ids if i in self._pending]
        return sorted(taken, key=lambda r: r.run_id)

    def take(self, owned: Collection[int]) -> list[ProgressReport]:
        """Every waiting report of the runs in ``owned``, by run id; the others (of runs that
        ended here already, or were handed back) are dropped: nothing would store them."""
        with self._lock:
            pending, self._pending = self._pending, {}
        return sorted((r for r in pending.values() if r.run_id in owned), key=lambda r: r.run_id)

    def put_back(self, reports: list[ProgressReport]) -> None:
        """Reports that could not be written wait for the next write, unless newer ones came."""
        with self._lock:
            for report in reports:
                self._pending.setdefault(report.run_id, report)


class Progress(WorkerCore):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: The runs' progress reports until the loop writes them; ``report`` is their ctx.progress.
        self.progress = ProgressReports()

    async def _record_progress(self) -> None:
        """Write the waiting progress reports of the runs this worker holds, in one statement."""
        owned = set(self._running)
        owned.update(o.run_id for o in self._outcomes)
        await self._write_progress(self.progress.take(owned))

    async def _record_last_progress(
        self, outcomes: Collection[Outcome], deferrable: Collection[int]
    ) -> None:
        """Before the ends of ``outcomes`` are recorded: their runs' last reports, which the
        guard on state would refuse once they are (a job reports before it returns, so its last
        report is here before its outcome). The other runs' reports wait for their time: a run
        that reports keeps to its pace, however many others end meanwhile. A report of a run of
        ``deferrable`` whose row is held waits for the next write, as its outcome does."""
        if len(self.progress):
            reports = self.progress.take_runs([o.run_id for o in outcomes])
            await self._write_progress(reports, skip=deferrable)

    async def _write_progress(
        self, reports: list[ProgressReport], skip: Collection[int] | None = None
    ) -> None:
        """One statement for ``reports``. A report of a run of ``skip`` (by default, all)
        whose row another transaction holds is not waited for but kept for the next write. A
        lost connection puts them back and raises (the loop reconnects); a statement the
        database refuses drops them: progress is best effort, and never worth a run's
        outcome."""
        if not reports:
            return
        assert self.store is not None
        ids = [r.run_id for r in reports]
        try:
            cur = await self.store.conn.execute(
                self.queries["record_progress"],
                {
                    "worker": self.id,
                    "skip": ids if skip is None else list(skip),
                    "ids": ids,
                    "done": [r.done for r in reports],
                    "total": [r.total for r in reports],
                    "message": [r.message for r in reports],
                },
            )
            held = {row[0] for row in await cur.fetchall()}
            if held:
                self.progress.put_back([r for r in reports if r.run_id in held])
        except (psycopg.Error, TypeError, ValueError) as exc:
            if is_connection_error(exc, self.store.conn):
                self.progress.put_back(reports)
                raise
            log.warning(
                "could not record the progress of %d run(s), dropped: %s", len(reports), exc
            )
