"""``pgjobs jobs``: what the jobs are, when they run, how they did, and the runtime pause switch.

Every command here reads the database alone; with ``--app`` (or ``PGJOBS_APP``) ``list``, ``show``
and ``next`` also show the jobs the code defines that no worker has registered yet. ``jobs run``
lives in :mod:`pgjobs.cli.jobs_run`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import click

from pgjobs.cli import jobs_schedules, output
from pgjobs.cli.jobs_run import run
from pgjobs.cli.jobs_show import (
    code_only_row,
    describe,
    held,
    limits,
    next_fires,
    registered,
    show,
    state,
)
from pgjobs.cli.options import (
    Database,
    code_options,
    database_options,
    json_option,
    open_database,
    optional_registry,
)
from pgjobs.cli.runs import fetch_runs, print_runs, run_filter_options
from pgjobs.metrics import NO_EXTRA_SCHEDULES, count_extra_schedules

LIST_JSON_KEYS = (
    "name",
    "extension",
    "description",
    "schedule",
    "schedule_description",
    "schedule_source",
    "timezone",
    "enabled",
    "paused",
    "paused_at",
    "tags",
    "registered",
    "in_database",
    "next_fire_at",
    "last_status",
    "last_finished_at",
    "running_now",
    "queued_now",
    "queue",
    "queue_paused",
    "held",
    "max_concurrency",
    "concurrency_key",
    "rate_limit",
    "more_schedules",
    "schedules_in_error",
)

SHORT_STATUS = {
    "succeeded": "ok",
    "failed": "fail",
    "timed_out": "timeout",
    "cancelled": "cancel",
    "skipped": "skip",
    "abandoned": "lost",
}


@click.group(name="jobs")
def jobs() -> None:
    """The registered jobs: list, show, run, status, history, pause, resume, next."""


for command in (run, show, next_fires):
    jobs.add_command(command)


# -- list ---------------------------------------------------------------------------------------


@jobs.command("list")
@click.option("--tag", help="Only jobs carrying this tag.")
@json_option
@code_options
@database_options
def list_jobs(
    tag: str | None, as_json: bool, app: str | None, profile: str | None, dsn: str, schema: str
) -> None:
    """Every job: schedule (``+N``: its schedules besides its own), state, whether a live worker
    registered it, next run."""
    code = optional_registry(app, profile)
    with open_database(dsn, schema) as db:
        now = db.now()
        rows = [{**row, "in_database": True} for row in db.all("list_jobs", tag=tag)]
        schedules = count_extra_schedules(db.all("schedule_states", job=None))
    known = {row["name"] for row in rows}
    if code is not None:
        for d in code.with_tag(tag) if tag else code:
            if d.name not in known:
                rows.append(code_only_row(d, now))
        rows.sort(key=lambda row: row["name"])
    for row in rows:
        row["schedule_description"] = describe(row["schedule"], row["timezone"])
        row["held"] = held(row)
        row.update(schedules.get(row["name"], NO_EXTRA_SCHEDULES))
    if as_json:
        output.emit_json([output.pick(row, LIST_JSON_KEYS) for row in rows])
        return
    t = output.table(
        "JOB", "EXTENSION", "SCHEDULE", "STATE", "REGISTERED", "NEXT RUN", "LAST", "QUEUE",
        "LIMITS",
    )  # fmt: skip
    for row in rows:
        schedule = "on demand"
        if row["schedule"]:
            schedule = f"{row['schedule']} ({row['schedule_description']})"
        t.add_row(
            output.text(row["name"]),
            output.text(row["extension"]),
            jobs_schedules.summary(schedule, row),
            state(row),
            registered(row),
            output.relative(row["next_fire_at"], now),
            output.status(row["last_status"]) if row["last_status"] else "-",
            output.text(row["queue"]),
            output.text(limits(row)),
        )
    output.print_table(t, f"no jobs with tag {tag!r}" if tag else "no jobs registered")


# -- status and history -------------------------------------------------------------------------


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


@jobs.command("history")
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
