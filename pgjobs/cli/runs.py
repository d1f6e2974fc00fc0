"""``pgjobs runs``: list, show, retry, cancel and prune runs.

Reads come from the ``run_history`` view; changes are guarded by the state they expect, so a
cancel or retry that races a worker either applies cleanly or is refused with one line.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import click

from pgjobs.cli import output
from pgjobs.cli.options import (
    Database,
    F,
    database_options,
    duration_callback,
    json_option,
    open_database,
    queue_callback,
)
from pgjobs.cli.runs_graph import fetch_neighbours, graph, neighbour_fields, neighbours_json
from pgjobs.errors import ConfigError, PgJobsError
from pgjobs.job import RUN_STATUSES
from pgjobs.metrics import WAIT_REASONS

RETRYABLE = ("failed", "timed_out", "abandoned", "cancelled")

#: ``runs prune --older-than`` below this deletes recent history, so it needs ``--yes``.
PRUNE_MINIMUM = timedelta(days=1)

RUN_JSON_KEYS = (
    "id",
    "job",
    "trigger",
    "status",
    "attempt",
    "retry_of",
    "scheduled_for",
    "created_at",
    "started_at",
    "finished_at",
    "duration_seconds",
    "lag_seconds",
    "worker_id",
    "host",
    "pid",
    "queue",
    "priority",
    "message",
    "data",
    "items_processed",
    "items_failed",
    "error_type",
    "error_message",
    "payload",
    "parameters",
    "cancel_requested_at",
    "progress_done",
    "progress_total",
    "progress_message",
    "progress_at",
)

WAIT_JSON_KEYS = (
    "id",
    "job",
    "queue",
    "trigger",
    "priority",
    "scheduled_for",
    "concurrency_key",
    "waiting_for",
    "detail",
    "waiting_seconds",
)


# -- `jobs history`, and what it shares with `runs list` ----------------------------------------


def fetch_runs(
    db: Database,
    *,
    job: str | None,
    status: str | None,
    since: timedelta | None,
    limit: int,
) -> list[dict[str, Any]]:
    """Runs newest first, filtered; an unknown ``job`` is an error with the nearest names."""
    if job is not None:
        db.require_job(job)
    return db.all(
        "list_runs",
        job=job,
        status=status,
        since=since.total_seconds() if since is not None else None,
        limit=limit,
    )


def print_runs(rows: list[dict[str, Any]], now: datetime, *, as_json: bool) -> None:
    """Runs as a table for people or as JSON for scripts."""
    if as_json:
        output.emit_json([output.pick(row, RUN_JSON_KEYS) for row in rows])
        return
    t = output.table(
        "ID", "JOB", "TRIGGER", "STATUS", "ATTEMPT", "SCHEDULED", "DURATION", "WORKER", "MESSAGE"
    )
    for row in rows:
        t.add_row(
            str(row["id"]),
            output.text(row["job"]),
            row["trigger"],
            output.status(row["status"]),
            str(row["attempt"]),
            output.relative(row["scheduled_for"], now),
            output.duration(row["duration_seconds"]),
            output.text(row["worker_id"] or ""),
            output.text(output.truncate(row["error_message"] or row["message"])),
        )
    output.print_table(t, "no runs")


def run_filter_options(limit: int) -> Callable[[F], F]:
    """``--job``, ``--status`` and ``-n/--limit`` for the listings of runs."""

    def decorate(command: F) -> F:
        command = click.option(
            "-n",
            "--limit",
            type=click.IntRange(min=1),
            default=limit,
            show_default=True,
            help="Show at most this many runs.",
        )(command)
        command = click.option(
            "--status", type=click.Choice(RUN_STATUSES), help="Only runs in this state."
        )(command)
        return click.option("--job", help="Only runs of this job.")(command)

    return decorate


@click.command("history")
@run_filter_options(limit=20)
@json_option
@database_options
def history(
    job: str | None, status: str | None, limit: int, as_json: bool, dsn: str, schema: str
) -> None:
    """Past runs, newest first (the run_history view)."""
    with open_database(dsn, schema) as db:
        rows = fetch_runs(db, job=job, status=status, since=None, limit=limit)
        print_runs(rows, db.now(), as_json=as_json)


# -- commands -----------------------------------------------------------------------------------


@click.group(name="runs")
def runs() -> None:
    """Inspect and steer runs: list, show, graph, waits, retry, cancel, prune."""


runs.add_command(graph)


@runs.command("list")
@run_filter_options(limit=50)
@click.option(
    "--since",
    callback=duration_callback,
    help="Only runs created within this long (30s, 15m, 1h, 7d, 2w).",
)
@json_option
@database_options
def list_runs(
    job: str | None,
    status: str | None,
    limit: int,
    since: timedelta | None,
    as_json: bool,
    dsn: str,
    schema: str,
) -> None:
    """Runs, newest first: queued, running and finished."""
    with open_database(dsn, schema) as db:
        rows = fetch_runs(db, job=job, status=status, since=since, limit=limit)
        print_runs(rows, db.now(), as_json=as_json)
    if not as_json and any(row["status"] == "queued" for row in rows):
        click.echo("\nwhat the queued runs wait for: pgjobs runs waits")


@runs.command("waits")
@click.option("--job", help="Only runs of this job.")
@click.option("--queue", callback=queue_callback, help="Only runs in this queue.")
@click.option("--reason", type=click.Choice(WAIT_REASONS), help="Only runs waiting for this.")
@click.option("--newest", is_flag=True, help="Newest first (default: the longest waiting first).")
@click.option(
    "-n",
    "--limit",
    type=click.IntRange(min=1),
    default=50,
    show_default=True,
    help="Show at most this many runs.",
)
@json_option
@database_options
def waits(
    job: str | None,
    queue: str | None,
    reason: str | None,
    newest: bool,
    limit: int,
    as_json: bool,
    dsn: str,
    schema: str,
) -> None:
    """Queued runs and what each waits for: its time, a pause (of its job or its queue), its
    job's concurrency limit, a rate limit, or a worker (the run_waits view)."""
    with open_database(dsn, schema) as db:
        if job is not None:
            db.require_job(job)
        rows = fetch_waits(db, job=job, queue=queue, reason=reason, newest=newest, limit=limit)
    if as_json:
        output.emit_json([output.pick(row, WAIT_JSON_KEYS) for row in rows])
        return
    t = output.table("ID", "JOB", "QUEUE", "TRIGGER", "WAITING FOR", "DETAIL", "WAITED")
    for row in rows:
        t.add_row(
            str(row["id"]),
            output.text(row["job"]),
            output.text(row["queue"]),
            row["trigger"],
            row["waiting_for"],
            output.text(row["detail"] or ""),
            _waited(row["waiting_seconds"]),
        )
    filtered = any(value is not None for value in (job, queue, reason))
    output.print_table(t, "no queued runs match" if filtered else "no queued runs")


def fetch_waits(
    db: Database,
    *,
    limit: int,
    job: str | None = None,
    queue: str | None = None,
    reason: str | None = None,
    run_id: int | None = None,
    newest: bool = False,
) -> list[dict[str, Any]]:
    """Queued runs with what each waits for (``run_waits``), the longest waiting first."""
    return db.all(
        "list_run_waits",
        job=job,
        queue=queue,
        reason=reason,
        id=run_id,
        newest=newest,
        limit=limit,
    )


def _waited(seconds: float) -> str:
    """How long a run has waited, or when a run not due yet is due."""
    if seconds < 0:
        return f"due in {output.duration(-seconds)}"
    return output.duration(seconds)


@runs.command("show")
@click.argument("run_id", metavar="ID", type=int)
@json_option
@database_options
def show(run_id: int, as_json: bool, dsn: str, schema: str) -> None:
    """Everything stored about one run, its error's traceback, its dependencies and its
    dependants included."""
    with open_database(dsn, schema) as db:
        row = _get_run(db, run_id)
        waiting = row["status"] in ("queued", "blocked")
        waits = fetch_waits(db, run_id=run_id, limit=1) if waiting else []
        wait = waits[0] if waits else None
        neighbours = fetch_neighbours(db, run_id)
        now = db.now()
    if as_json:
        output.emit_json(
            {
                **output.pick(row, RUN_JSON_KEYS),
                "max_attempts": row["max_attempts"],
                "dedup_key": row["dedup_key"],
                "heartbeat_at": row["heartbeat_at"],
                "lease_expires_at": row["lease_expires_at"],
                "error_traceback": row["error_traceback"],
                "logs": row["logs"],
                "retried_by": row["retried_by"],
                "waiting_for": wait["waiting_for"] if wait else None,
                "waiting_detail": wait["detail"] if wait else None,
                "blocked_by": row["blocked_by"],
                **neighbours_json(neighbours),
            }
        )
        return
    worker = row["worker_id"]
    if worker and row["host"]:
        worker = f"{worker} (host {row['host']}, pid {row['pid']})"
    retries = ", ".join(str(i) for i in row["retried_by"]) or None
    output.print_fields(
        [
            ("run", str(row["id"])),
            ("job", row["job"]),
            ("status", output.status(row["status"])),
            ("waiting for", _wait_text(wait)),
            ("trigger", row["trigger"]),
            ("attempt", f"{row['attempt']} of {row['max_attempts']}"),
            ("retry of", str(row["retry_of"]) if row["retry_of"] else None),
            ("retried by", retries),
            *neighbour_fields(run_id, neighbours),
            ("queue", f"{row['queue']} (priority {row['priority']})"),
            ("scheduled for", output.timestamp(row["scheduled_for"], now)),
            ("created", output.timestamp(row["created_at"], now)),
            ("started", output.timestamp(row["started_at"], now)),
            ("finished", output.timestamp(row["finished_at"], now)),
            ("duration", _maybe(row["duration_seconds"], output.duration)),
            ("lag", _maybe(row["lag_seconds"], output.duration)),
            ("worker", worker),
            ("lease until", output.timestamp(row["lease_expires_at"], now)),
            ("progress", _progress(row, now)),
            ("cancel requested", output.timestamp(row["cancel_requested_at"], now)),
            ("payload", _maybe(row["payload"], output.compact_json)),
            ("parameters", _maybe(row["parameters"], output.compact_json)),
            ("message", row["message"]),
            ("data", _maybe(row["data"], output.compact_json)),
            ("items", _items(row)),
            ("error", _error(row)),
        ]
    )
    if row["error_traceback"]:
        output.echo("\n" + row["error_traceback"].rstrip())
    if row["logs"]:
        output.echo("\nlogs (the run's last lines):\n" + row["logs"].rstrip())


@runs.command("retry")
@click.argument("run_id", metavar="ID", type=int)
@database_options
def retry(run_id: int, dsn: str, schema: str) -> None:
    """Queue a failed, timed-out, abandoned or cancelled run again, as a new attempt."""
    with open_database(dsn, schema) as db:
        row = _get_run(db, run_id)
        if row["status"] not in RETRYABLE:
            raise PgJobsError(
                f"run {run_id} is {row['status']}: only {', '.join(RETRYABLE[:-1])} or "
                f"{RETRYABLE[-1]} runs can be retried"
            )
        if row["retried_by"]:
            latest = row["retried_by"][-1]
            raise PgJobsError(
                f"run {run_id} was already retried as run {latest}; see `pgjobs runs show {latest}`"
            )
        new = db.one("retry_run", id=run_id)
        if new is None:  # its state changed between the two statements
            raise PgJobsError(f"run {run_id} cannot be retried any more; it changed meanwhile")
    output.echo(
        f"run {run_id} ({row['job']}) queued again as run {new['id']} (attempt {new['attempt']})"
    )


@runs.command("cancel")
@click.argument("run_id", metavar="ID", type=int)
@database_options
def cancel(run_id: int, dsn: str, schema: str) -> None:
    """Cancel a run: a queued run leaves the queue, a running one is stopped by its worker."""
    with open_database(dsn, schema) as db:
        row = _get_run(db, run_id)
        if db.one("cancel_queued_run", id=run_id) is not None:
            output.echo(f"run {run_id} ({row['job']}) cancelled before it started")
            return
        with db.conn.transaction():
            running = db.one("request_run_cancel", id=run_id)
            if running is not None:
                db.notify("cancel")
        if running is None:
            status = _get_run(db, run_id)["status"]
            raise PgJobsError(f"run {run_id} has already finished ({status}); nothing to cancel")
    output.echo(
        f"cancellation of run {run_id} ({row['job']}) requested; worker {running['worker_id']} "
        "stops the job at its next heartbeat"
    )


@runs.command("prune")
@click.option(
    "--older-than",
    required=True,
    callback=duration_callback,
    help="Delete finished runs older than this (e.g. 30d, 2w).",
)
@click.option("--dry-run", is_flag=True, help="Only count what would be deleted.")
@click.option(
    "--yes", is_flag=True, help="Confirm an --older-than under 1d (it deletes recent history)."
)
@database_options
def prune(older_than: timedelta, dry_run: bool, yes: bool, dsn: str, schema: str) -> None:
    """Delete old finished runs; queued, running and each job's latest run are always kept."""
    from pgjobs.retention import prune_runs

    if older_than < PRUNE_MINIMUM and not (yes or dry_run):
        raise ConfigError(
            f"--older-than {output.span(older_than.total_seconds())} deletes the history of "
            "the last day too: pass --yes to confirm (or --dry-run to count it)"
        )

    with open_database(dsn, schema) as db:
        count = prune_runs(db.conn, db.queries.schema, older_than, dry_run=dry_run)
    age = output.span(older_than.total_seconds())
    if dry_run:
        click.echo(f"would delete {count} run(s) older than {age}")
    else:
        click.echo(f"deleted {count} run(s) older than {age}")


def _get_run(db: Database, run_id: int) -> dict[str, Any]:
    row = db.one("get_run", id=run_id)
    if row is None:
        raise PgJobsError(f"no run with id {run_id}")
    return row


def _wait_text(wait: dict[str, Any] | None) -> str | None:
    if wait is None:
        return None
    return f"{wait['waiting_for']} ({wait['detail']})" if wait["detail"] else wait["waiting_for"]


def _maybe(value: Any, render: Any) -> str | None:
    return None if value is None else str(render(value))


def _items(row: dict[str, Any]) -> str | None:
    if row["items_processed"] is None and row["items_failed"] is None:
        return None
    return f"{row['items_processed'] or 0} processed, {row['items_failed'] or 0} failed"


def _progress(row: dict[str, Any], now: datetime) -> str | None:
    """The last progress the run's job reported: ``30 of 120 (25%) — copying, 2s ago``. None
    when it reported none since it started (a run handed back keeps its earlier attempt's)."""
    at, started = row["progress_at"], row["started_at"]
    if at is None or (started is not None and at < started):
        return None
    done, total = row["progress_done"], row["progress_total"]
    shown = str(done) if total is None else f"{done} of {total}"
    if total:
        shown += f" ({done * 100 // total}%)"
    if row["progress_message"]:
        shown += f" — {row['progress_message']}"
    return f"{shown}, {output.relative(at, now)}"


def _error(row: dict[str, Any]) -> str | None:
    if not row["error_type"] and not row["error_message"]:
        return None
    return f"{row['error_type'] or 'error'}: {row['error_message'] or ''}".rstrip(": ")
