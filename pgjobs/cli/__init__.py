"""The ``pgjobs`` command line. Each command group lives in its own module of this package."""

from __future__ import annotations

import sys
from typing import Any

import click

from pgjobs.errors import PgJobsError


class PgJobsGroup(click.Group):
    """Turns every :class:`PgJobsError` into one line on stderr and its exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except PgJobsError as exc:
            if ctx.find_root().params.get("debug"):
                raise
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)


@click.group(cls=PgJobsGroup)
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.version_option(package_name="pgjobs")
def main(debug: bool) -> None:
    """pgjobs: a Postgres-native cron scheduler and job queue."""


def _register() -> None:
    from pgjobs.cli import check, dashboard, db, demo, jobs, metrics, runs, worker, workers

    for command in (
        db.db,
        worker.worker,
        jobs.jobs,
        runs.runs,
        workers.workers,
        check.check,
        demo.demo,
        dashboard.dashboard,
        metrics.metrics,
    ):
        main.add_command(command)


_register()
