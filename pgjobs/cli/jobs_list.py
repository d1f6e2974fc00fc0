"""``pgjobs jobs list``: every job at a glance.

It reads the database alone; with ``--app`` (or ``PGJOBS_APP``) it also shows the jobs the code
defines that no worker has registered yet.
"""

from __future__ import annotations

import click

from pgjobs.cli import jobs_schedules, output
from pgjobs.cli.jobs import held
from pgjobs.cli.jobs_show import code_only_row, describe, limits, registered, state
from pgjobs.cli.options import (
    code_options,
    database_options,
    json_option,
    open_database,
    optional_registry,
)
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


@click.command("list")
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
