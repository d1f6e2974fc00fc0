"""``pgjobs schedules``: every schedule of every job, and the schedules added at runtime.

A job's own schedule (from its code or the profile) is listed as the schedule named ``default``;
it is changed there, and paused with ``pgjobs jobs pause``. Further schedules are added, paused,
resumed and removed here (those the profile lists only paused and resumed), through the schedules
API (:mod:`pgjobs.schedules`, the SQL functions ``pgjobs.schedule``, ``unschedule`` and
``alter_schedule``); workers hear of each change at once.
What a worker could not use of a schedule (a cron value out of range) shows in its ``error``.
"""

from __future__ import annotations

import shlex
from datetime import datetime
from typing import Any

import click

from pgjobs.cli import output
from pgjobs.cli.options import (
    Database,
    database_options,
    json_option,
    open_database,
    params_option,
    parse_parameters,
    parse_payload,
)
from pgjobs.errors import ConfigError, PgJobsError
from pgjobs.job import MISFIRE_POLICIES, OVERLAP_POLICIES
from pgjobs.registry import suggest
from pgjobs.schedule import CronSchedule
from pgjobs.schedules import alter_schedule_sync, schedule_sync, unschedule_sync

SCHEDULE_JSON_KEYS = (
    "job",
    "name",
    "cron",
    "timezone",
    "origin",
    "state",
    "enabled",
    "paused",
    "job_paused",
    "misfire",
    "overlap",
    "next_fire_at",
    "last_tick_at",
    "error",
    "payload",
    "parameters",
    "created_at",
    "updated_at",
)

DEFAULT = "default"
"""The name of a job's own schedule, from its code or profile."""


@click.group(name="schedules")
def schedules() -> None:
    """Every schedule of every job; add, pause, resume and remove schedules at runtime."""


@schedules.command("list")
@click.option("--job", help="Only this job's schedules.")
@json_option
@database_options
def list_schedules(job: str | None, as_json: bool, dsn: str, schema: str) -> None:
    """Every schedule: each job's own (named default) and those added at runtime, with its
    state, next fire time, last tick and the error that keeps a worker from ticking it."""
    with open_database(dsn, schema) as db:
        if job is not None:
            db.require_job(job)
        rows = db.all("schedule_states", job=job)
        now = db.now()
    if as_json:
        output.emit_json([output.pick(row, SCHEDULE_JSON_KEYS) for row in rows])
        return
    t = output.table(
        "JOB", "SCHEDULE", "CRON", "TIMEZONE", "ORIGIN", "STATE", "NEXT FIRE", "LAST TICK",
        "ERROR",
    )  # fmt: skip
    for row in rows:
        t.add_row(
            output.text(row["job"]),
            output.text(row["name"]),
            output.text(row["cron"]),
            output.text(row["timezone"]),
            output.text(row["origin"]),
            row["state"],
            _next_fire(row, now),
            output.relative(row["last_tick_at"], now),
            output.text(output.truncate(row["error"])),
        )
    empty = "no schedules" + (f" for job {job}" if job else "")
    output.print_table(t, empty + ": `pgjobs schedules add JOB CRON` adds one")


def _next_fire(row: dict[str, Any], now: datetime) -> str:
    if row["state"] != "ticking":
        return "-"
    if row["next_fire_at"] is None:
        return "not yet worked out"
    return output.relative(row["next_fire_at"], now)


@schedules.command("show")
@click.argument("job")
@click.argument("name")
@json_option
@database_options
def show(job: str, name: str, as_json: bool, dsn: str, schema: str) -> None:
    """One schedule in full, with the payload and parameters its runs get."""
    with open_database(dsn, schema) as db:
        row = _schedule(db, job, name)
        now = db.now()
    if as_json:
        output.emit_json(output.pick(row, SCHEDULE_JSON_KEYS))
        return
    output.print_fields(
        [
            ("job", row["job"]),
            ("schedule", row["name"]),
            ("cron", f"{row['cron']} ({_describe(row['cron'], row['timezone'])})"),
            ("timezone", row["timezone"]),
            ("origin", row["origin"]),
            ("state", row["state"]),
            ("misfire", row["misfire"]),
            ("overlap", row["overlap"]),
            ("next fire", output.timestamp(row["next_fire_at"], now) or _next_fire(row, now)),
            ("last tick", output.timestamp(row["last_tick_at"], now) or "-"),
            ("error", row["error"]),
            ("payload", None if row["payload"] is None else output.compact_json(row["payload"])),
            (
                "parameters",
                None if row["parameters"] is None else output.compact_json(row["parameters"]),
            ),
            ("created", output.timestamp(row["created_at"], now)),
            ("updated", output.timestamp(row["updated_at"], now)),
        ]
    )


@schedules.command("add")
@click.argument("job")
@click.argument("cron")
@click.option("--name", help="The schedule's name, unique for the job (default: the cron text).")
@click.option("--timezone", default="UTC", show_default=True, help="IANA zone the cron reads in.")
@click.option("--payload", metavar="JSON", help="A JSON object each run gets as ctx.payload.")
@params_option("A parameter for each run (repeatable); overrides the profile's parameters.")
@click.option(
    "--misfire",
    type=click.Choice(MISFIRE_POLICIES),
    help="What to do with ticks missed while no worker ran (default: the job's policy).",
)
@click.option(
    "--overlap",
    type=click.Choice(OVERLAP_POLICIES),
    help="skip: a tick that finds a run of the job holding its lock is skipped; allow: its runs"
    " never wait (default: the job's policy).",
)
@click.option("--disabled", is_flag=True, help="Store the schedule without ticking it.")
@database_options
def add(
    job: str,
    cron: str,
    name: str | None,
    timezone: str,
    payload: str | None,
    params: tuple[str, ...],
    misfire: str | None,
    overlap: str | None,
    disabled: bool,
    dsn: str,
    schema: str,
) -> None:
    """Add a schedule to a job, or replace its runtime schedule of that name (pg_cron's
    cron.schedule). Workers tick it from its first fire time after now."""
    parsed = CronSchedule.parse(cron, timezone)
    payload_value = parse_payload(payload)
    parameters = parse_parameters(params) if params else None
    with open_database(dsn, schema) as db:
        named = name or cron.strip()[:100]
        before = any(row["name"] == named for row in db.all("schedule_states", job=job))
        added = schedule_sync(
            db.conn,
            job,
            cron,
            name=name,
            timezone=timezone,
            payload=payload_value,
            parameters=parameters,
            misfire=misfire,
            overlap=overlap,
            enabled=not disabled,
            schema=schema,
        )
        now = db.now()
    what = "replaced" if before else "added"
    line = f"schedule {_quoted(added)} of job {job} {what}: {cron.strip()} ({parsed.describe()})"
    if disabled:
        line += "; disabled: it does not tick until added again without --disabled"
    else:
        line += f"; first tick at {output.timestamp(parsed.next_after(now), now)}"
    output.echo(line)


@schedules.command("rm")
@click.argument("job")
@click.argument("name")
@database_options
def remove(job: str, name: str, dsn: str, schema: str) -> None:
    """Remove a runtime schedule: it ticks no more; runs it already queued stay."""
    _refuse_default(job, name)
    with open_database(dsn, schema) as db:
        if not unschedule_sync(db.conn, job, name, schema=schema):
            raise _missing(db, job, name)
    output.echo(
        f"schedule {_quoted(name)} of job {job} removed: it ticks no more "
        "(runs it already queued stay)"
    )


@schedules.command("pause")
@click.argument("job")
@click.argument("name")
@database_options
def pause(job: str, name: str, dsn: str, schema: str) -> None:
    """Hold a runtime schedule's ticks until resumed (kept in Postgres, for every worker)."""
    row = _switch(job, name, True, dsn, schema)
    if row is None:
        output.echo(f"schedule {_quoted(name)} of job {job} was already paused")
        return
    output.echo(
        f"schedule {_quoted(name)} of job {job} paused: no ticks until "
        f"`pgjobs schedules resume {shlex.quote(job)} {shlex.quote(name)}`"
    )


@schedules.command("resume")
@click.argument("job")
@click.argument("name")
@database_options
def resume(job: str, name: str, dsn: str, schema: str) -> None:
    """Let a paused runtime schedule tick again."""
    row = _switch(job, name, False, dsn, schema)
    if row is None:
        output.echo(f"schedule {_quoted(name)} of job {job} was not paused")
        return
    line = f"schedule {_quoted(name)} of job {job} resumed: it ticks again"
    if row["job_paused"]:
        line += f"; its job is paused: no ticks until `pgjobs jobs resume {shlex.quote(job)}`"
    elif not row["enabled"]:
        line += "; it is disabled: add it again without --disabled to tick it"
    output.echo(line)


# -- helpers ------------------------------------------------------------------------------------


def _switch(job: str, name: str, paused: bool, dsn: str, schema: str) -> dict[str, Any] | None:
    """Pause or resume a runtime schedule: its row, or None when it was in that state already."""
    _refuse_default(job, name)
    with open_database(dsn, schema) as db, db.conn.transaction():
        row = _schedule(db, job, name)
        if row["paused"] == paused:
            return None
        alter_schedule_sync(db.conn, job, name, paused=paused, schema=schema)
    return row


def _schedule(db: Database, job: str, name: str) -> dict[str, Any]:
    for row in db.all("schedule_states", job=job):
        if row["name"] == name:
            return row
    raise _missing(db, job, name)


def _missing(db: Database, job: str, name: str) -> PgJobsError:
    """The error for a schedule a job does not have, or for a job nothing knows."""
    db.require_job(job)
    names = [row["name"] for row in db.all("schedule_states", job=job)]
    if not names:
        return ConfigError(
            f"job {job} has no schedules: `pgjobs schedules add {shlex.quote(job)} CRON` adds one"
        )
    return ConfigError(
        f"job {job} has no schedule named {_quoted(name)}; {suggest(name, names, 'schedules')}"
    )


def _refuse_default(job: str, name: str) -> None:
    if name == DEFAULT:
        raise ConfigError(
            f"the schedule named default is job {job}'s own, from its code or profile: change it "
            f"there, or pause the job with `pgjobs jobs pause {shlex.quote(job)}`"
        )


def _describe(cron: str, timezone: str) -> str:
    try:
        return CronSchedule.parse(cron, timezone).describe()
    except ConfigError as err:
        return str(err)


def _quoted(name: str) -> str:
    """A schedule's name as a shell word: a cron text as name is quoted."""
    return shlex.quote(name)
