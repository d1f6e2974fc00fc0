"""``pgjobs jobs show`` and ``pgjobs jobs next``: one job's definition and its fire times.

The database has what the workers use (written by the last worker that registered the job); with
``--app`` the loaded code and profile are shown next to it, and jobs no worker registered yet can
be looked at too.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import click

from pgjobs.cli import output
from pgjobs.cli.jobs import held
from pgjobs.cli.jobs_schedules import SCHEDULE_JSON_KEYS, print_schedules
from pgjobs.cli.options import (
    Database,
    code_options,
    database_options,
    json_option,
    open_database,
    optional_registry,
)
from pgjobs.errors import ConfigError
from pgjobs.limits import CALLABLE_PREFIX, concurrency_limit, declared_limit, key_display
from pgjobs.metrics import WAIT_REASONS, count_waits
from pgjobs.registry import JobDefinition
from pgjobs.schedule import CronSchedule

BUSIEST_KEYS = 3
"""Concurrency keys ``jobs show`` names with their running runs, the busiest first."""

WAIT_WORDS = {
    "scheduled": "not due yet",
    "job paused": "on the job's pause",
    "queue paused": "on the queue's pause",
    "concurrency": "on concurrency",
    "rate limit": "on rate limit",
    "worker": "for a worker",
}
"""How ``jobs show`` says what a number of queued runs wait for (run_waits' reasons)."""


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
        "queue": d.queue,
        "queue_paused": False,
        "overlap": d.overlap,
        "max_concurrency": d.max_concurrency,
        "concurrency_key": d.concurrency_key_label,
        "rate_limit": str(d.rate_limit) if d.rate_limit is not None else None,
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
    """``enabled``, ``disabled``, ``paused``, ``paused (queue)`` (its queue's pause holds it),
    or ``disabled, paused``."""
    words = ["enabled" if row["enabled"] else "disabled"]
    pause = {"job paused": "paused", "queue paused": "paused (queue)", None: None}[held(row)]
    if pause is not None:
        words = [pause] if row["enabled"] else [*words, pause]
    return ", ".join(words)


def limits(row: dict[str, Any]) -> str:
    """The limits a job declares, compactly: ``max 5 per tenant, 100/m``; ``-`` for none."""
    parts = []
    declared = declared_limit(row)
    if declared is not None:
        key = row["concurrency_key"]
        per = "" if key is None else f" per {key_display(key)}"
        parts.append(f"max {declared}{per}")
    if row["rate_limit"]:
        parts.append(str(row["rate_limit"]))
    return ", ".join(parts) or "-"


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
    """One job's definition, where its schedule came from, its policies, next fire times, and
    every schedule of it (its own, the profile's further ones, those added at runtime) with what
    each is doing."""
    code = optional_registry(app, profile)
    definition = code.definitions.get(name) if code is not None else None
    with open_database(dsn, schema) as db:
        now = db.now()
        row = db.one("get_job", job=name)
        if row is None and definition is None:
            raise db.unknown_job(name, code=code)
        controls = _controls(db, name) if row is not None else _NO_CONTROLS
        waits = db.all("waiting_runs", job=name) if row is not None else []
        schedules = db.all("schedule_states", job=name) if row is not None else []
    job = {**_show_row(row, definition, now), **controls}
    job["schedules"] = [output.pick(s, SCHEDULE_JSON_KEYS) for s in schedules]
    job["concurrency_limit"] = concurrency_limit(job)
    job["waiting"] = count_waits(waits, "job").get(name, dict.fromkeys(WAIT_REASONS, 0))
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
        ("queue", _queue_text(job, now)),
        ("concurrency", _concurrency_text(job)),
        ("concurrency key", _key_text(job["concurrency_key"])),
        ("rate limit", _rate_text(job["rate_limit"], job["job_tokens"])),
        ("running", _running_text(job)),
        ("waiting", _waiting_text(waits)),
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
    print_schedules(schedules, now)


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


_NO_CONTROLS: dict[str, Any] = {
    "queue_paused_at": None,
    "queue_rate_limit": None,
    "running_keys": 0,
    "running_by_key": [],
    "job_tokens": None,
    "queue_tokens": None,
}
"""What ``job_controls`` says of a job only the loaded code defines."""


def _controls(db: Database, name: str) -> dict[str, Any]:
    row = db.one("job_controls", job=name, keys=BUSIEST_KEYS)
    return {**_NO_CONTROLS, **(row or {})}


def _queue_text(job: dict[str, Any], now: datetime) -> str:
    text = f"{job['queue']} (priority {job['priority']})"
    if job["queue_paused"]:
        since = output.timestamp(job["queue_paused_at"], now)
        text += f"; paused since {since}: `pgjobs queues resume {job['queue']}`"
    if job["queue_rate_limit"]:
        text += (
            f"; the queue's rate limit: {_rate_text(job['queue_rate_limit'], job['queue_tokens'])}"
        )
    return text


def _concurrency_text(job: dict[str, Any]) -> str:
    limit = job["concurrency_limit"]
    if limit is None:
        return "no limit (overlap allow)"
    if declared_limit(job) is None:
        return "1 run at a time (overlap skip)"
    per = " per concurrency key" if job["concurrency_key"] else ""
    return f"at most {limit} run(s) at a time{per}, across all workers"


def _key_text(key: str | None) -> str | None:
    if key is None:
        return None
    if key.startswith(CALLABLE_PREFIX):
        return f"computed by {key.removeprefix(CALLABLE_PREFIX)} from the payload when enqueued"
    return f"the payload's field {key!r}"


def _rate_text(rate: str | None, tokens: float | None) -> str | None:
    if not rate:
        return None
    if tokens is None:  # no claim took a token yet: the bucket is full
        return str(rate)
    return f"{rate} ({math.floor(tokens)} may start now)"


def _running_text(job: dict[str, Any]) -> str:
    running, limit = job["running_now"], job["concurrency_limit"]
    if limit is None:
        return str(running)
    if not job["concurrency_key"]:
        return f"{running} of {limit} allowed"
    busiest = ", ".join(
        f"{'(no key)' if k['key'] is None else k['key']} {k['running']} of {limit}"
        for k in job["running_by_key"]
    )
    keys = job["running_keys"]
    more = (
        f" (+{keys - len(job['running_by_key'])} more)" if keys > len(job["running_by_key"]) else ""
    )
    return f"{running} in {keys} key(s), at most {limit} per key" + (
        f"; busiest: {busiest}{more}" if busiest else ""
    )


def _waiting_text(waits: list[dict[str, Any]]) -> str:
    """``12 on concurrency (5 of 5 running), 3 on rate limit (...)``; ``none``."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in waits:
        groups.setdefault(row["waiting_for"], []).append(row)
    parts = []
    for reason in WAIT_REASONS:
        rows = groups.get(reason, [])
        if not rows:
            continue
        details = {row["detail"] for row in rows}
        detail = details.pop() if len(details) == 1 else None
        if detail is None and reason == "concurrency":
            detail = f"across {sum(row['keys'] for row in rows)} keys"
        runs = sum(row["runs"] for row in rows)
        parts.append(f"{runs} {WAIT_WORDS[reason]}" + (f" ({detail})" if detail else ""))
    return ", ".join(parts) or "none"


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
