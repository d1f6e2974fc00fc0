"""What each schedule of a job is doing, as ``jobs list`` and ``jobs show`` say it.

The rows are the ``schedule_states`` query's (the ``all_schedules`` view): a job's own schedule,
named ``default``, from its code or profile, and its further schedules (listed in the profile,
or added at runtime). Each has a
``state``: ``ticking``, ``paused`` (its own pause), ``job paused``, ``disabled``, or ``error``
(a worker could not use its cron or timezone, and it ticks no more until they change).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pgjobs.cli import output

Row = dict[str, Any]

SCHEDULE_JSON_KEYS = (
    "name",
    "cron",
    "timezone",
    "origin",
    "state",
    "error",
    "enabled",
    "paused",
    "job_paused",
    "misfire",
    "payload",
    "parameters",
    "next_fire_at",
    "last_tick_at",
    "created_at",
    "updated_at",
)
"""A schedule in ``jobs show --json`` (``schedules``)."""


def summary(schedule: str, row: Row) -> output.Markup:
    """``jobs list``'s schedule cell: the job's own ``schedule`` text, ``+N`` further schedules,
    and how many of its schedules are in error, in red on a terminal."""
    text = output.text(schedule)
    if row["more_schedules"]:
        text += f" +{row['more_schedules']}"
    if row["schedules_in_error"]:
        text += f" [red]({row['schedules_in_error']} in error)[/red]"
    return output.Markup(text)


def state_text(row: Row) -> str:
    """The schedule's state in words; an error with the worker's reason."""
    if row["state"] == "error":
        return f"error: {row['error']}"
    return str(row["state"])


def print_schedules(schedules: list[Row], now: datetime) -> None:
    """The ``Schedules`` part of ``jobs show``: one line per schedule, the job's own first."""
    if not schedules:
        return
    t = output.table(
        "NAME", "CRON", "TIMEZONE", "ORIGIN", "STATE", "NEXT FIRE", "LAST TICK", title="Schedules"
    )
    for row in schedules:
        state = output.text(state_text(row))
        t.add_row(
            output.text(row["name"]),
            output.text(row["cron"]),
            output.text(row["timezone"]),
            row["origin"],
            output.Markup(f"[red]{state}[/red]") if row["state"] == "error" else state,
            _next_fire(row, now),
            output.relative(row["last_tick_at"], now),
        )
    output.echo("")
    output.render(t)


def _next_fire(row: Row, now: datetime) -> str:
    if row["state"] != "ticking":
        return "-"
    if row["next_fire_at"] is None:  # new or changed: no worker has worked out its next tick
        return "not yet worked out"
    return output.relative(row["next_fire_at"], now)
