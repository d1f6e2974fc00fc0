"""``my-extension-report``: count the finished runs of the last window per status.

A plain ``def execute`` runs in a worker thread, with a sync connection pool.
"""

from __future__ import annotations

from pgjobs import Job, JobContext, JobResult

#: Statuses that count as failures in the report's stats.
FAILED_STATUSES = frozenset({"failed", "timed_out", "abandoned"})


class ReportJob(Job):
    """Counts the finished runs of the last ``window`` per status.

    ``window`` is a Postgres interval (``1h``, ``10m``). It comes from the run's payload
    (``{"window": "1h"}``, when enqueued), else from the ``window`` parameter of the profile,
    else it is one hour.
    """

    name = "my-extension-report"
    description = "Report the finished runs of the last window per status"
    schedule = "0 */15 * * * *"  # every 15 minutes
    tags = ("reports",)

    def execute(self, ctx: JobContext) -> JobResult:
        window = str((ctx.payload or {}).get("window") or ctx.parameters.get("window", "1h"))
        with ctx.db_pool.connection() as conn:
            rows = conn.execute(
                "SELECT status, count(*) FROM pgjobs.run_history"
                " WHERE scheduled_for > now() - %s::interval"
                " AND status NOT IN ('queued', 'running')"
                " GROUP BY status ORDER BY status",
                [window],
            ).fetchall()
        by_status = {str(status): int(count) for status, count in rows}
        processed = sum(by_status.values())
        failed = sum(n for status, n in by_status.items() if status in FAILED_STATUSES)
        return (
            JobResult.success(f"runs in the last {window}: {processed}, failed: {failed}")
            .with_data(window=window, by_status=by_status)
            .with_stats(processed=processed, failed=failed)
        )
