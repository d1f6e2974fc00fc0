"""The ``reports`` extension: jobs that use Django's database connection."""

from __future__ import annotations

from django.db import connection

from pgjobs import Extension, Job, JobContext, JobResult


class CountRunsJob(Job):
    """Counts the succeeded runs, through Django's connection."""

    name = "reports-count-runs"
    description = "Count the succeeded runs with Django's database connection"

    def execute(self, ctx: JobContext) -> JobResult:
        # A plain def runs in one of the worker's threads, where Django's ORM and connections
        # work as in a view. No request cycle closes this thread's connection: close it here.
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT count(*) FROM pgjobs.runs WHERE status = 'succeeded'")
                (count,) = cursor.fetchone()
        finally:
            connection.close()
        return JobResult.success(f"{count} run(s) succeeded").with_data(succeeded=count)


class ReportsExtension(Extension):
    name = "reports"

    def jobs(self) -> list[Job]:
        return [CountRunsJob()]


#: What settings.PGJOBS["EXTENSIONS"] names: "reports.jobs:extension".
extension = ReportsExtension()
