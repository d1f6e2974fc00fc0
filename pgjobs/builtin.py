"""The built-in extension ``pgjobs``: the jobs every installation gets.

:func:`~pgjobs.registry.load_registry` adds it to whatever extensions it finds, so every worker
registers these jobs and the profile can override them like any other, e.g.::

    scheduler:
      jobs:
        - job: pgjobs-prune-runs
          schedule: "0 30 4 * * *"
          parameters: {older_than: 90d}
        # or: enabled: false
"""

from __future__ import annotations

from pgjobs.db import resolve_schema
from pgjobs.errors import ConfigError
from pgjobs.job import Extension, Job, JobContext, JobResult
from pgjobs.retention import DEFAULT_BATCH, parse_duration, prune_runs

#: How long finished runs are kept when the profile does not say.
DEFAULT_RETENTION = "30d"


class PruneRuns(Job):
    """Delete finished runs older than ``older_than`` (default 30d), daily at 03:17 UTC.

    Parameters (strings, from the profile or ``jobs run -p``): ``older_than`` (a duration such
    as ``90d``), ``batch`` (rows per transaction) and ``schema`` (default ``PGJOBS_SCHEMA``,
    else ``pgjobs``). Queued and running runs and each job's latest finished run are kept; see
    :func:`~pgjobs.retention.prune_runs`.
    """

    name = "pgjobs-prune-runs"
    description = (
        "Delete finished runs older than the retention (default 30d), keeping each job's latest run"
    )
    schedule = "0 17 3 * * *"
    timezone = "UTC"
    tags = ("pgjobs", "maintenance")
    overlap = "skip"

    def execute(self, ctx: JobContext) -> JobResult:
        text = ctx.parameters.get("older_than", DEFAULT_RETENTION)
        older_than = parse_duration(text)
        batch = _positive_int("batch", ctx.parameters.get("batch", str(DEFAULT_BATCH)))
        schema = resolve_schema(ctx.parameters.get("schema") or ctx.schema)
        with ctx.db_pool.connection() as conn:
            deleted = prune_runs(conn, schema, older_than, batch=batch, stop=lambda: ctx.cancelled)
        stopped = " (stopped early)" if ctx.cancelled else ""
        return (
            JobResult.success(f"pruned {deleted} finished runs older than {text}{stopped}")
            .with_stats(processed=deleted)
            .with_data(older_than=text, deleted=deleted)
        )


class BuiltinExtension(Extension):
    """The extension named ``pgjobs``, holding the jobs pgjobs itself provides."""

    name = "pgjobs"

    def jobs(self) -> list[Job]:
        return [PruneRuns()]


def _positive_int(name: str, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(f"parameter {name} must be a positive integer, got {text!r}")
    return value
