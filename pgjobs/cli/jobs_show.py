"""``pgjobs jobs show`` and ``pgjobs jobs next``: one job's definition and its fire times.

The database has what the workers use (written by the last worker that registered the job); with
``--app`` the loaded code and profile are shown next to it, and jobs no worker registered yet can
be looked at too.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import click

from pgjobs.cli import output
from pgjobs.cli.options import (
    code_options,
    database_options,
    json_option,
    open_database,
    optional_registry,
)
from pgjobs.errors import ConfigError
from pgjobs.registry import JobDefinition
from pgjobs.schedule import CronSchedule


def code_only_row(d: JobDefinition, now: datetime) -> dict[str, Any]:
    """A job the loaded code defines but no worker registered, shaped like a ``list_jobs`` row."""
    cron = d.cron
    return {
        "name": d.name,
        "extension": d.extension,
        "description": d.description,
        "schedule": d.schedule,
        "schedule_source": d.schedule_source,
        "timezone": d.timezone,
        "enabled": d.enabled,
        "paused": False,
        "paused_at": None,
        "tags": list(d.tags),
        "registered": False,
        "in_database": False,
        "next_fire_at": cron.next_after(now) if cron is not None and d.enabled else None,
        "last_status": None,
        "last_finished_at": None,
        "running_now": 0,
        "queued_now": 0,
    }


def describe(schedule: str | None, timezone: str) -> str | None:
    """The schedule in words (``daily at 02:30``), or None for an on-demand job."""
    if schedule is None:
        return None
    try:
        return CronSchedule.parse(schedule, timezone).describe()
    except ConfigError:
        return schedule


def state(row: dict[str, Any]) -> str:
    """``enabled``, ``disabled``, ``paused`` or ``disabled, paused``."""
    words = ["enabled" if row["enabled"] else "disabled"]
    if row["paused"]:
        words = ["paused"] if row["enabled"] else [*words, "paused"]
    return ", ".join(words)


def registered(row: dict[str, Any]) -> str:
    """Whether a live worker registered the job, or only the loaded code defines it."""
    if not row["in_database"]:
        return "code only"
    return "yes" if row["registered"] else "no live worker"


# -- show ---------------------------------------------------------------------------------------


@click.command("show")
@click.argument("name")
@json_option
@code_options
@database_options
def show(
    name: str, as_json: bool, app: str | None, profile: str | None, dsn: str, schema: str
) -> None:
    """One job's definition, where its schedule came from, its policies and next fire times."""
    code = optional_registry(app, profile)
    definition = code.definitions.get(name) if code is not None else None
    with open_database(dsn, schema) as db:
        now = db.now()
        row = db.one("get_job", job=name)
        if row is None and definition is None:
            raise db.unknown_job(name, code=code)
    job = _show_row(row, definition, now)
    fires = _fire_times(job["schedule"], job["timezone"], now, 5)
    if as_json:
        output.emit_json({**job, "next_fire_times": fires})
        return
    fields: list[tuple[str, Any]] = [
        ("job", job["name"]),
        ("extension", job["extension"]),
        ("description", job["description"] or None),
        ("schedule", _schedule_text(job)),
        ("schedule from", _schedule_origin(job, definition)),
        ("state", state(job)),
        ("paused since", output.timestamp(job["paused_at"], now)),
        ("tags", ", ".join(job["tags"]) or None),
        ("timeout", output.duration(job["timeout_seconds"]) if job["timeout_seconds"] else "none"),
        (
            "attempts",
            f"{job['max_attempts']} (backoff {output.compact_json(job['retry_backoff'])})",
        ),
        ("overlap", job["overlap"]),
        ("misfire", _misfire(job)),
        ("queue", f"{job['queue']} (priority {job['priority']})"),
        ("parameters", output.compact_json(job["parameters"]) if job["parameters"] else None),
        ("registered", _registration(job, now)),
        ("last tick", output.timestamp(job["last_tick_at"], now)),
        ("next tick", output.timestamp(job["next_fire_at"], now)),
    ]
    output.print_fields(fields)
    if fires:
        click.echo(f"\nnext {len(fires)} fire times ({job['timezone']}):")
        for fire in fires:
            click.echo(f"  {fire['local']}")


def _show_row(
    row: dict[str, Any] | None, definition: JobDefinition | None, now: datetime
) -> dict[str, Any]:
    """The job as the database has it (what workers use), else as the loaded code defines it."""
    if row is not None:
        job = {k: v for k, v in row.items() if k not in ("registered",)}
        job.update(in_database=True, registered=bool(row["registered"]))
        if not (job["schedule"] and job["enabled"] and not job["paused"]):
            job["next_fire_at"] = None
    else:
        assert definition is not None
        job = {
            **code_only_row(definition, now),
            "timeout_seconds": definition.timeout,
            "max_attempts": definition.max_attempts,
            "retry_backoff": vars(definition.retry_backoff),
            "overlap": definition.overlap,
            "misfire": definition.misfire,
            "backfill_cap": definition.backfill_cap,
            "priority": definition.priority,
            "queue": definition.queue,
            "parameters": dict(definition.parameters),
            "last_tick_at": None,
            "registered_by": None,
            "registered_at": None,
            "updated_at": None,
        }
    job["schedule_description"] = describe(job["schedule"], job["timezone"])
    if definition is not None:
        job["code"] = {
            "schedule": definition.code_schedule,
            "effective_schedule": definition.schedule,
            "schedule_source": definition.schedule_source,
            "timezone": definition.timezone,
            "profile_overrides": list(definition.overrides),
        }
    return job


def _schedule_text(job: dict[str, Any]) -> str:
    if not job["schedule"]:
        return "none (on demand only)"
    return f"{job['schedule']} ({job['schedule_description']})"


def _schedule_origin(job: dict[str, Any], definition: JobDefinition | None) -> str:
    origin = str(job["schedule_source"])
    if definition is None:
        return origin
    lines = [origin]
    if definition.schedule_source == "profile":
        lines.append(f"code says {definition.code_schedule or 'on demand'}, the profile overrides")
    if job["in_database"] and (definition.schedule, definition.timezone) != (
        job["schedule"],
        job["timezone"],
    ):
        lines.append(
            f"the loaded code and profile say {definition.schedule or 'on demand'} "
            f"({definition.timezone}); workers use the database's until one registers that"
        )
    return "; ".join(lines)


def _misfire(job: dict[str, Any]) -> str:
    if job["misfire"] == "backfill":
        return f"backfill (at most {job['backfill_cap']} missed ticks)"
    return str(job["misfire"])


def _registration(job: dict[str, Any], now: datetime) -> str:
    if not job["in_database"]:
        return "no: defined by the loaded code, no worker registered it yet"
    live = "a live worker runs it" if job["registered"] else "no live worker runs it"
    return f"by {job['registered_by']} {output.relative(job['registered_at'], now)}; {live}"


def _fire_times(schedule: str | None, timezone: str, now: datetime, n: int) -> list[dict[str, Any]]:
    if not schedule:
        return []
    zone = ZoneInfo(timezone)
    return [
        {
            "at": fire.isoformat(),
            "local": fire.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S %Z (%z)"),
            "local_iso": fire.astimezone(zone).isoformat(),
            "in_seconds": (fire - now).total_seconds(),
        }
        for fire in CronSchedule.parse(schedule, timezone).fire_times(now, n)
    ]


# -- next ---------------------------------------------------------------------------------------


@click.command("next")
@click.argument("name")
@click.option("-n", "count", type=click.IntRange(1, 1000), default=5, show_default=True)
@json_option
@code_options
@database_options
def next_fires(
    name: str,
    count: int,
    as_json: bool,
    app: str | None,
    profile: str | None,
    dsn: str,
    schema: str,
) -> None:
    """The job's next fire times, in its own timezone."""
    code = optional_registry(app, profile)
    with open_database(dsn, schema) as db:
        now = db.now()
        row = db.one("get_job", job=name)
        if row is None and (code is None or name not in code):
            raise db.unknown_job(name, code=code)
    job = _show_row(row, code.definitions.get(name) if code else None, now)
    fires = _fire_times(job["schedule"], job["timezone"], now, count)
    if as_json:
        output.emit_json(
            {
                "job": name,
                "schedule": job["schedule"],
                "timezone": job["timezone"],
                "enabled": job["enabled"],
                "paused": job["paused"],
                "next_fire_times": fires,
            }
        )
        return
    if not fires:
        click.echo(f"{name} has no schedule: it runs only on demand")
        return
    output.echo(f"{name}: {_schedule_text(job)}, next {len(fires)} in {job['timezone']}:")
    for fire in fires:
        click.echo(f"  {fire['local']}  {output.relative(datetime.fromisoformat(fire['at']), now)}")
    if job["paused"] or not job["enabled"]:
        click.echo(f"(it is {state(job)}: no ticks run until it is resumed and enabled)")
