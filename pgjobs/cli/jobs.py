"""``pgjobs jobs``: what the jobs are, when they run, how they did, and the runtime pause switch.

Every command here reads the database alone; with ``--app`` (or ``PGJOBS_APP``) ``list``, ``show``
and ``next`` also show the jobs the code defines that no worker has registered yet. ``status``,
``pause`` and ``resume`` live here; the others each in the module :data:`jobs` names, imported
when used, so ``pgjobs jobs status`` loads neither the registry nor the cron parser.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import click

from pgjobs.cli import LazyGroup, output
from pgjobs.cli.options import Database, database_options, json_option, open_database

SHORT_STATUS = {
    "succeeded": "ok",
    "failed": "fail",
    "timed_out": "timeout",
    "cancelled": "cancel",
    "skipped": "skip",
    "abandoned": "lost",
}


@click.group(
    name="jobs",
    cls=LazyGroup,
    lazy_commands={
        "list": "pgjobs.cli.jobs_list:list_jobs",
        "history": "pgjobs.cli.runs:history",
        "run": "pgjobs.cli.jobs_run:run",
        "show": "pgjobs.cli.jobs_show:show",
        "next": "pgjobs.cli.jobs_show:next_fires",
    },
)
def jobs() -> None:
    """The registered jobs: list, show, run, status, history, pause, resume, next."""


def held(row: dict[str, Any]) -> str | None:
    """``job paused`` or ``queue paused`` when a pause holds the job's runs (its own first, as
    run_waits says), else None."""
    if row["paused"]:
        return "job paused"
    return "queue paused" if row.get("queue_paused") else None


# -- status -------------------------------------------------------------------------------------


@jobs.command("status")
@click.argument("name", required=False)
@json_option
@database_options
def status(name: str | None, as_json: bool, dsn: str, schema: str) -> None:
    """Per job: last and next run, running now, recent outcomes, 24 h counts and durations."""
    with open_database(dsn, schema) as db:
        if name is not None:
            db.require_job(name)
        rows = db.all("job_status", job=name, recent=5)
        now = db.now()
    for row in rows:
        row["held"] = held(row)
    if as_json:
        output.emit_json(rows)
        return
    t = output.table(
        "JOB", "LAST RUN", "NEXT RUN", "RUNNING", "QUEUED", "RECENT", "24H OK", "24H FAILED",
        "P50", "P95",
    )  # fmt: skip
    for row in rows:
        last = "-"
        if row["last_status"]:
            last = (
                f"{output.status(row['last_status'])} "
                f"{output.relative(row['last_finished_at'], now)}"
            )
        t.add_row(
            output.text(row["name"]),
            last,
            _next_run(row, now),
            str(row["running_now"]),
            str(row["queued_now"]),
            " ".join(SHORT_STATUS.get(s, s) for s in row["recent"]) or "-",
            str(row["succeeded_24h"]),
            str(row["failed_24h"]),
            output.duration(row["p50_seconds_24h"]),
            output.duration(row["p95_seconds_24h"]),
        )
    output.print_table(t, "no jobs registered")
    if name is not None and rows and rows[0]["last_message"]:
        output.echo(f"last message: {output.truncate(rows[0]['last_message'], 160)}")


def _next_run(row: dict[str, Any], now: datetime) -> str:
    """When the job runs next: ``paused`` or ``paused (queue)`` while a pause holds its runs."""
    reason = row["held"]
    if reason is not None:
        return "paused" if reason == "job paused" else "paused (queue)"
    return output.relative(row["next_fire_at"], now)


# -- pause and resume ---------------------------------------------------------------------------


@jobs.command("pause")
@click.argument("name")
@database_options
def pause(name: str, dsn: str, schema: str) -> None:
    """Hold a job (kept in Postgres, for every worker) until resumed: no ticks, and its queued
    runs of every trigger wait; running runs finish."""
    row = _switch(name, "pause_job", dsn, schema)
    if row is None:
        output.echo(f"job {name} was already paused")
        return
    output.echo(
        f"job {name} paused: no ticks, and its queued runs of every trigger (schedule, manual, "
        f"enqueue, retry) wait until `pgjobs jobs resume {name}`; running runs finish "
        f"({row['queued']} queued, {row['running']} running)"
    )


@jobs.command("resume")
@click.argument("name")
@database_options
def resume(name: str, dsn: str, schema: str) -> None:
    """Release a paused job: its queued runs can start and its schedule ticks again; missed
    ticks follow its misfire policy."""
    row = _switch(name, "resume_job", dsn, schema)
    if row is None:
        output.echo(f"job {name} was not paused")
        return
    queued, held, queue = row["queued"], row["held"], row["queue"]
    free = f"{queued - held} of its {queued}" if held else f"its {queued}"
    line = f"job {name} resumed: {free} queued run(s) can start again"
    if held:
        paused = row["held_queues"]
        command = f"pgjobs queues resume {paused[0] if len(paused) == 1 else 'QUEUE'}"
        which = f"queue {paused[0]}" if len(paused) == 1 else f"queues {', '.join(paused)}"
        line += f"; {held} wait for the pause of {which}: `{command}`"
    elif row["queue_paused"]:
        line += f"; its queue {queue} is paused: its runs wait until `pgjobs queues resume {queue}`"
    if row["schedule"]:
        line += f"; ticks it missed follow its misfire policy ({row['misfire']})"
    output.echo(line)


def _switch(name: str, query: str, dsn: str, schema: str) -> dict[str, Any] | None:
    """Pause or resume job ``name`` with ``query``, guarded by the state it changes: its row, or
    None when it was in the other state already; an unknown job is an error."""
    with open_database(dsn, schema) as db:
        _db_job(db, name)
        with db.conn.transaction():
            row = db.one(query, job=name)
            if row is not None:
                db.notify("job")
    return row


def _db_job(db: Database, name: str) -> dict[str, Any]:
    row = db.one("get_job", job=name)
    if row is None:
        raise db.unknown_job(name)
    return row
